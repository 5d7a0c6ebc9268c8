//! JSON operators over the lake. The cold tier keeps a json or jsonb value
//! as the text Postgres prints for it (jsonb in its normal form), and
//! `->`, `->>`, `#>`, `#>>`, `@>`, `<@`, `?`, `?|` and `?&` work on that
//! text as Postgres's operators work on the values: a value taken out of a
//! document is the exact slice Postgres prints for it, and one taken out
//! as text is unescaped.
//!
//! The executor sees json columns as strings; the field's metadata says
//! which are json and which jsonb, and [`JsonPlanner`] plans the operators
//! over them (and over values taken out of them) as [`JsonOp`] calls.

use std::any::Any;
use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanBuilder, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int64Type};
use datafusion::common::{DFSchema, Result, exec_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, Operator, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::sql::sqlparser::ast::{self, BinaryOperator};

/// Field metadata naming a value's Postgres type where the executor's
/// type does not tell it: json, jsonb, enum, an average's numeric text.
pub(crate) const PG_TYPE: &str = "thermocline.pg_type";

/// The field metadata saying a value is of Postgres type `name`.
pub(crate) fn pg_type(name: &str) -> std::collections::HashMap<String, String> {
    [(PG_TYPE.to_string(), name.to_string())].into()
}

/// A UDF's result field, typed json or jsonb when `json` says so.
fn result_field(name: &str, data_type: DataType, json: Option<bool>) -> FieldRef {
    let field = Field::new(name, data_type, true);
    Arc::new(match json {
        Some(jsonb) => field.with_metadata(pg_type(if jsonb { "jsonb" } else { "json" })),
        None => field,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    /// `->`: a member or element, as json.
    Get,
    /// `->>`: a member or element, as text.
    GetText,
    /// `#>`: the value at a path, as json.
    Path,
    /// `#>>`: the value at a path, as text.
    PathText,
    /// `@>` (and `<@`, arguments swapped).
    Contains,
    /// `?`
    Exists,
    /// `?|`
    ExistsAny,
    /// `?&`
    ExistsAll,
}

/// One of the operators, over json (`jsonb` false) or jsonb values.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct JsonOp {
    op: Op,
    jsonb: bool,
    name: String,
    signature: Signature,
}

/// An error in a value, with the SQLSTATE Postgres gives it.
#[derive(Debug)]
pub(crate) struct DataError {
    pub code: &'static str,
    pub message: String,
}

impl std::fmt::Display for DataError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DataError {}

pub(crate) fn data_error<T>(code: &'static str, message: &str) -> Result<T> {
    Err(datafusion::common::DataFusionError::External(Box::new(
        DataError {
            code,
            message: message.to_string(),
        },
    )))
}

/// The JSON functions over the lake, by their Postgres names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Fun {
    /// `json_typeof`, `jsonb_typeof`
    TypeOf,
    /// `json_array_length`, `jsonb_array_length`
    ArrayLength,
    /// `json_extract_path`, `jsonb_extract_path` (as `#>`)
    ExtractPath,
    /// `json_extract_path_text`, `jsonb_extract_path_text` (as `#>>`)
    ExtractPathText,
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct JsonFunction {
    fun: Fun,
    jsonb: bool,
    name: String,
    signature: Signature,
}

/// Every JSON function thermocline computes over the lake, for json and
/// jsonb.
pub(crate) fn functions() -> Vec<ScalarUDF> {
    let mut out = Vec::new();
    for jsonb in [false, true] {
        let prefix = if jsonb { "jsonb" } else { "json" };
        for (fun, suffix) in [
            (Fun::TypeOf, "typeof"),
            (Fun::ArrayLength, "array_length"),
            (Fun::ExtractPath, "extract_path"),
            (Fun::ExtractPathText, "extract_path_text"),
        ] {
            let signature = match fun {
                Fun::TypeOf | Fun::ArrayLength => Signature::any(1, Volatility::Immutable),
                _ => Signature::variadic_any(Volatility::Immutable),
            };
            out.push(ScalarUDF::new_from_impl(JsonFunction {
                fun,
                jsonb,
                name: format!("{prefix}_{suffix}"),
                signature,
            }));
        }
    }
    out
}

/// The names of [`functions`], for the check of what the executor may
/// answer.
pub(crate) const FUNCTION_NAMES: &[&str] = &[
    "json_typeof",
    "jsonb_typeof",
    "json_array_length",
    "jsonb_array_length",
    "json_extract_path",
    "jsonb_extract_path",
    "json_extract_path_text",
    "jsonb_extract_path_text",
];

impl ScalarUDFImpl for JsonFunction {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(match self.fun {
            Fun::ArrayLength => DataType::Int32,
            _ => DataType::Utf8,
        })
    }

    fn return_field_from_args(&self, _: ReturnFieldArgs) -> Result<FieldRef> {
        let json = (self.fun == Fun::ExtractPath).then_some(self.jsonb);
        Ok(result_field(self.name(), self.return_type(&[])?, json))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let Some(doc) = args.args.first() else {
            return exec_err!("{} needs a JSON value", self.name);
        };
        let docs = cast(&doc.to_array(n)?, &DataType::Utf8)?;
        let docs = docs.as_string::<i32>();
        let out: ArrayRef = match self.fun {
            Fun::TypeOf => {
                let mut b = StringBuilder::with_capacity(n, n * 6);
                for i in 0..n {
                    if docs.is_null(i) {
                        b.append_null();
                        continue;
                    }
                    let d = docs.value(i).as_bytes();
                    b.append_value(match d.get(ws(d, 0)) {
                        Some(b'{') => "object",
                        Some(b'[') => "array",
                        Some(b'"') => "string",
                        Some(b't' | b'f') => "boolean",
                        Some(b'n') => "null",
                        _ => "number",
                    });
                }
                Arc::new(b.finish())
            }
            Fun::ArrayLength => {
                let mut b = datafusion::arrow::array::Int32Builder::with_capacity(n);
                for i in 0..n {
                    if docs.is_null(i) {
                        b.append_null();
                        continue;
                    }
                    let d = docs.value(i).as_bytes();
                    let start = ws(d, 0);
                    match d.get(start) {
                        Some(b'[') => b.append_value(elements(d, start)?.len() as i32),
                        Some(b'{') => {
                            return data_error("22023", "cannot get array length of a non-array");
                        }
                        _ => return data_error("22023", "cannot get array length of a scalar"),
                    }
                }
                Arc::new(b.finish())
            }
            Fun::ExtractPath | Fun::ExtractPathText => {
                let text = self.fun == Fun::ExtractPathText;
                let steps = args.args[1..]
                    .iter()
                    .map(|a| cast(&a.to_array(n)?, &DataType::Utf8).map_err(Into::into))
                    .collect::<Result<Vec<ArrayRef>>>()?;
                let mut b = StringBuilder::with_capacity(n, n * 8);
                for i in 0..n {
                    if docs.is_null(i) {
                        b.append_null();
                        continue;
                    }
                    let path: Vec<Option<String>> = steps
                        .iter()
                        .map(|s| {
                            let s = s.as_string::<i32>();
                            s.is_valid(i).then(|| s.value(i).to_string())
                        })
                        .collect();
                    append(&mut b, at_path(docs.value(i), &path)?, text)?;
                }
                Arc::new(b.finish())
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

impl JsonOp {
    fn udf(op: Op, jsonb: bool) -> ScalarUDF {
        ScalarUDF::new_from_impl(JsonOp {
            op,
            jsonb,
            name: format!("{}_{op:?}", if jsonb { "jsonb" } else { "json" }).to_lowercase(),
            signature: Signature::any(2, Volatility::Immutable),
        })
    }
}

/// The operator as Postgres SQL over two operands, for filters pushed to
/// the hot scan; `None` when `e` is not one of these operators.
pub(crate) fn pg_sql(
    e: &ScalarFunction,
    sql_of: impl Fn(&Expr) -> Option<String>,
) -> Option<String> {
    let op = e.func.inner().as_any().downcast_ref::<JsonOp>()?;
    let [doc, arg] = e.args.as_slice() else {
        return None;
    };
    let symbol = match op.op {
        Op::Get => "->",
        Op::GetText => "->>",
        Op::Path => "#>",
        Op::PathText => "#>>",
        Op::Contains => "@>",
        Op::Exists => "?",
        Op::ExistsAny => "?|",
        Op::ExistsAll => "?&",
    };
    Some(format!("({} {symbol} {})", sql_of(doc)?, sql_of(arg)?))
}

impl ScalarUDFImpl for JsonOp {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(match self.op {
            Op::Get | Op::GetText | Op::Path | Op::PathText => DataType::Utf8,
            _ => DataType::Boolean,
        })
    }

    /// A value taken out as json keeps its type in the field's metadata, so
    /// operators and checks over it (through subqueries and aliases too)
    /// know it for json or jsonb.
    fn return_field_from_args(&self, _: ReturnFieldArgs) -> Result<FieldRef> {
        let json = matches!(self.op, Op::Get | Op::Path).then_some(self.jsonb);
        Ok(result_field(self.name(), self.return_type(&[])?, json))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let [doc, arg] = args.args.as_slice() else {
            return exec_err!("{} takes two arguments", self.name);
        };
        let docs = cast(&doc.to_array(n)?, &DataType::Utf8)?;
        let docs = docs.as_string::<i32>();
        let arg = arg.to_array(n)?;
        let out: ArrayRef = match self.op {
            Op::Get | Op::GetText => {
                let text = self.op == Op::GetText;
                let mut b = StringBuilder::with_capacity(n, n * 8);
                if arg.data_type().is_integer() {
                    let idx = cast(&arg, &DataType::Int64)?;
                    let idx = idx.as_primitive::<Int64Type>();
                    for i in 0..n {
                        let v = (docs.is_valid(i) && idx.is_valid(i))
                            .then(|| element(docs.value(i), idx.value(i), self.jsonb))
                            .transpose()?
                            .flatten();
                        append(&mut b, v, text)?;
                    }
                } else {
                    let keys = cast(&arg, &DataType::Utf8)?;
                    let keys = keys.as_string::<i32>();
                    for i in 0..n {
                        let v = (docs.is_valid(i) && keys.is_valid(i))
                            .then(|| member(docs.value(i), keys.value(i)))
                            .transpose()?
                            .flatten();
                        append(&mut b, v, text)?;
                    }
                }
                Arc::new(b.finish())
            }
            Op::Path | Op::PathText => {
                let text = self.op == Op::PathText;
                let paths = cast(&arg, &DataType::Utf8)?;
                let paths = paths.as_string::<i32>();
                let mut b = StringBuilder::with_capacity(n, n * 8);
                for i in 0..n {
                    let v = if docs.is_valid(i) && paths.is_valid(i) {
                        at_path(docs.value(i), &text_array(paths.value(i))?)?
                    } else {
                        None
                    };
                    append(&mut b, v, text)?;
                }
                Arc::new(b.finish())
            }
            Op::Contains => {
                let right = cast(&arg, &DataType::Utf8)?;
                let right = right.as_string::<i32>();
                let mut b = BooleanBuilder::with_capacity(n);
                for i in 0..n {
                    if docs.is_valid(i) && right.is_valid(i) {
                        let l = node(docs.value(i), value_span(docs.value(i))?)?;
                        let r = node(right.value(i), value_span(right.value(i))?)?;
                        b.append_value(contains_top(&l, &r));
                    } else {
                        b.append_null();
                    }
                }
                Arc::new(b.finish())
            }
            Op::Exists => {
                let keys = cast(&arg, &DataType::Utf8)?;
                let keys = keys.as_string::<i32>();
                let mut b = BooleanBuilder::with_capacity(n);
                for i in 0..n {
                    if docs.is_valid(i) && keys.is_valid(i) {
                        b.append_value(exists(docs.value(i), &[keys.value(i)], false)?);
                    } else {
                        b.append_null();
                    }
                }
                Arc::new(b.finish())
            }
            Op::ExistsAny | Op::ExistsAll => {
                let all = self.op == Op::ExistsAll;
                let lists = match arg.data_type() {
                    DataType::List(_) => arg.as_list::<i32>().clone(),
                    other => return exec_err!("{} expects a text array, not {other}", self.name),
                };
                let mut b = BooleanBuilder::with_capacity(n);
                for i in 0..n {
                    if docs.is_valid(i) && lists.is_valid(i) {
                        let keys = cast(&lists.value(i), &DataType::Utf8)?;
                        let keys = keys.as_string::<i32>();
                        let keys: Vec<&str> = keys.iter().flatten().collect();
                        b.append_value(exists(docs.value(i), &keys, all)?);
                    } else {
                        b.append_null();
                    }
                }
                Arc::new(b.finish())
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// Appends a value taken out of a document: as json, or as text (a string
/// unescaped, a JSON null as SQL NULL).
fn append(b: &mut StringBuilder, value: Option<&str>, text: bool) -> Result<()> {
    match value {
        None => b.append_null(),
        Some(v) if !text => b.append_value(v),
        Some(v) => match as_text(v)? {
            Some(t) => b.append_value(t),
            None => b.append_null(),
        },
    }
    Ok(())
}

fn invalid<T>() -> Result<T> {
    exec_err!("invalid JSON value in the cold tier")
}

fn ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The end of the string whose opening quote is at `i`, past its closing
/// quote.
fn string_end(b: &[u8], i: usize) -> Result<usize> {
    if b.get(i) != Some(&b'"') {
        return invalid();
    }
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Ok(j + 1),
            _ => j += 1,
        }
    }
    invalid()
}

/// The end of the value that starts at `i`.
fn value_end(b: &[u8], i: usize) -> Result<usize> {
    match b.get(i) {
        Some(b'"') => string_end(b, i),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            invalid()
        }
        Some(_) => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                j += 1;
            }
            Ok(j)
        }
        None => invalid(),
    }
}

/// The span of a whole document's value, without surrounding whitespace.
fn value_span(doc: &str) -> Result<Range<usize>> {
    let b = doc.as_bytes();
    let start = ws(b, 0);
    Ok(start..value_end(b, start)?)
}

/// The members of the object at `i`: each key's span (quotes included)
/// and its value's span.
fn members(b: &[u8], i: usize) -> Result<Vec<(Range<usize>, Range<usize>)>> {
    let mut out = Vec::new();
    let mut j = ws(b, i + 1);
    if b.get(j) == Some(&b'}') {
        return Ok(out);
    }
    loop {
        let key_end = string_end(b, j)?;
        let key = j..key_end;
        j = ws(b, key_end);
        if b.get(j) != Some(&b':') {
            return invalid();
        }
        j = ws(b, j + 1);
        let end = value_end(b, j)?;
        out.push((key, j..end));
        j = ws(b, end);
        match b.get(j) {
            Some(b',') => j = ws(b, j + 1),
            Some(b'}') => return Ok(out),
            _ => return invalid(),
        }
    }
}

/// The spans of the elements of the array at `i`.
fn elements(b: &[u8], i: usize) -> Result<Vec<Range<usize>>> {
    let mut out = Vec::new();
    let mut j = ws(b, i + 1);
    if b.get(j) == Some(&b']') {
        return Ok(out);
    }
    loop {
        let end = value_end(b, j)?;
        out.push(j..end);
        j = ws(b, end);
        match b.get(j) {
            Some(b',') => j = ws(b, j + 1),
            Some(b']') => return Ok(out),
            _ => return invalid(),
        }
    }
}

/// A JSON string's contents (`raw` without its quotes), unescaped.
fn unescape(raw: &str) -> Result<Cow<'_, str>> {
    if !raw.contains('\\') {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    let hex4 = |chars: &mut std::str::Chars| -> Result<u32> {
        let h: String = chars.by_ref().take(4).collect();
        match u32::from_str_radix(&h, 16) {
            Ok(v) if h.len() == 4 => Ok(v),
            _ => invalid(),
        }
    };
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some('/') => out.push('/'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('u') => {
                let mut code = hex4(&mut chars)?;
                if (0xd800..0xdc00).contains(&code) {
                    if chars.next() != Some('\\') || chars.next() != Some('u') {
                        return invalid();
                    }
                    let low = hex4(&mut chars)?;
                    if !(0xdc00..0xe000).contains(&low) {
                        return invalid();
                    }
                    code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
                }
                if code == 0 {
                    return exec_err!(
                        "unsupported Unicode escape sequence \\u0000 in a JSON value"
                    );
                }
                match char::from_u32(code) {
                    Some(c) => out.push(c),
                    None => return invalid(),
                }
            }
            _ => return invalid(),
        }
    }
    Ok(Cow::Owned(out))
}

/// A value as text, as `->>` gives it: a string unescaped, null as NULL,
/// anything else as printed.
fn as_text(value: &str) -> Result<Option<Cow<'_, str>>> {
    Ok(match value.as_bytes().first() {
        Some(b'"') => Some(unescape(&value[1..value.len() - 1])?),
        Some(b'n') => None,
        _ => Some(Cow::Borrowed(value)),
    })
}

/// The value of the object member `key` (the last one of that name, as
/// Postgres finds it in json that repeats a key); `None` unless `value`
/// is an object holding it.
fn member<'a>(value: &'a str, key: &str) -> Result<Option<&'a str>> {
    let b = value.as_bytes();
    let start = ws(b, 0);
    if b.get(start) != Some(&b'{') {
        return Ok(None);
    }
    let mut found = None;
    for (k, v) in members(b, start)? {
        if unescape(&value[k.start + 1..k.end - 1])? == key {
            found = Some(&value[v]);
        }
    }
    Ok(found)
}

/// Element `index` of an array, negative indexes counting from its end.
/// A jsonb scalar is an array of itself, as Postgres treats it.
fn element(value: &str, index: i64, jsonb: bool) -> Result<Option<&str>> {
    let b = value.as_bytes();
    let start = ws(b, 0);
    let spans = match b.get(start) {
        Some(b'[') => elements(b, start)?,
        Some(b'{') | None => return Ok(None),
        Some(_) if jsonb => vec![value_span(value)?],
        Some(_) => return Ok(None),
    };
    let len = spans.len() as i64;
    let at = if index < 0 { index + len } else { index };
    Ok((0..len)
        .contains(&at)
        .then(|| &value[spans[at as usize].clone()]))
}

/// The value at `path` (`#>`): object members by name, array elements by
/// a step that reads as an integer.
fn at_path<'a>(value: &'a str, path: &[Option<String>]) -> Result<Option<&'a str>> {
    if path.is_empty() {
        return Ok(Some(value));
    }
    let mut here = value;
    for step in path {
        let Some(step) = step else { return Ok(None) };
        let b = here.as_bytes();
        let next = match b.get(ws(b, 0)) {
            Some(b'{') => member(here, step)?,
            Some(b'[') => match step.trim().parse::<i64>() {
                Ok(i) => element(here, i, false)?,
                Err(_) => None,
            },
            _ => None,
        };
        match next {
            Some(v) => here = v,
            None => return Ok(None),
        }
    }
    Ok(Some(here))
}

/// A text[] literal's elements (`{a,"b c",NULL}`); `None` for NULL
/// elements.
fn text_array(text: &str) -> Result<Vec<Option<String>>> {
    let t = text.trim();
    let Some(inner) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) else {
        return exec_err!("malformed array literal: \"{text}\"");
    };
    let mut out = Vec::new();
    if inner.trim().is_empty() {
        return Ok(out);
    }
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut item = String::new();
        let mut quoted = false;
        if chars.peek() == Some(&'"') {
            quoted = true;
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => item.extend(chars.next()),
                    Some(c) => item.push(c),
                    None => return exec_err!("malformed array literal: \"{text}\""),
                }
            }
        }
        while let Some(&c) = chars.peek() {
            if c == ',' {
                break;
            }
            chars.next();
            match c {
                '\\' => item.extend(chars.next()),
                c if quoted && c.is_whitespace() => {}
                c => item.push(c),
            }
        }
        if !quoted {
            item = item.trim_end().to_string();
        }
        out.push((quoted || !item.eq_ignore_ascii_case("null")).then_some(item));
        if chars.next().is_none() {
            return Ok(out);
        }
    }
}

/// A JSON value, parsed for containment.
#[derive(Debug)]
enum Node<'a> {
    Null,
    Bool(bool),
    Number(&'a str),
    String(Cow<'a, str>),
    Array(Vec<Node<'a>>),
    Object(Vec<(Cow<'a, str>, Node<'a>)>),
}

fn node(doc: &str, span: Range<usize>) -> Result<Node<'_>> {
    let b = doc.as_bytes();
    Ok(match b.get(span.start) {
        Some(b'{') => Node::Object(
            members(b, span.start)?
                .into_iter()
                .map(|(k, v)| Ok((unescape(&doc[k.start + 1..k.end - 1])?, node(doc, v)?)))
                .collect::<Result<_>>()?,
        ),
        Some(b'[') => Node::Array(
            elements(b, span.start)?
                .into_iter()
                .map(|e| node(doc, e))
                .collect::<Result<_>>()?,
        ),
        Some(b'"') => Node::String(unescape(&doc[span.start + 1..span.end - 1])?),
        Some(b't') => Node::Bool(true),
        Some(b'f') => Node::Bool(false),
        Some(b'n') => Node::Null,
        Some(_) => Node::Number(&doc[span]),
        None => return invalid(),
    })
}

/// A number as (negative, significant digits, exponent), equal for equal
/// values however they are written (`1.50`, `15e-1`).
fn number_key(text: &str) -> (bool, String, i64) {
    let (negative, t) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(at) => (&t[..at], t[at + 1..].parse::<i64>().unwrap_or(0)),
        None => (t, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut digits: String = format!("{int}{frac}").trim_start_matches('0').to_string();
    let mut exp = exp - frac.len() as i64;
    if digits.is_empty() {
        return (false, String::new(), 0);
    }
    while digits.ends_with('0') {
        digits.pop();
        exp += 1;
    }
    (negative, digits, exp)
}

fn scalar_eq(a: &Node, b: &Node) -> bool {
    match (a, b) {
        (Node::Null, Node::Null) => true,
        (Node::Bool(x), Node::Bool(y)) => x == y,
        (Node::String(x), Node::String(y)) => x == y,
        (Node::Number(x), Node::Number(y)) => number_key(x) == number_key(y),
        _ => false,
    }
}

fn is_container(n: &Node) -> bool {
    matches!(n, Node::Array(_) | Node::Object(_))
}

fn same_kind(a: &Node, b: &Node) -> bool {
    matches!(
        (a, b),
        (Node::Array(_), Node::Array(_)) | (Node::Object(_), Node::Object(_))
    )
}

/// jsonb's `@>` below the top level: objects hold every member of the
/// right side, arrays an element matching each of its elements.
fn contains(l: &Node, r: &Node) -> bool {
    let within = |lv: &Node, rv: &Node| {
        if is_container(rv) {
            same_kind(lv, rv) && contains(lv, rv)
        } else {
            scalar_eq(lv, rv)
        }
    };
    match (l, r) {
        (Node::Object(lm), Node::Object(rm)) => rm.iter().all(|(k, rv)| {
            lm.iter()
                .rev()
                .find(|(lk, _)| lk == k)
                .is_some_and(|(_, lv)| within(lv, rv))
        }),
        (Node::Array(le), Node::Array(re)) => {
            re.iter().all(|rv| le.iter().any(|lv| within(lv, rv)))
        }
        _ => false,
    }
}

/// jsonb's `@>`: at the top level an array also contains a scalar that is
/// one of its elements, and a scalar contains an equal scalar.
fn contains_top(l: &Node, r: &Node) -> bool {
    match (l, r) {
        _ if same_kind(l, r) => contains(l, r),
        (Node::Array(le), r) if !is_container(r) => le.iter().any(|lv| scalar_eq(lv, r)),
        (l, r) if !is_container(l) && !is_container(r) => scalar_eq(l, r),
        _ => false,
    }
}

/// jsonb's `?`, `?|` (`all` false) and `?&`: keys of a top-level object,
/// string elements of a top-level array, or the string itself.
fn exists(doc: &str, keys: &[&str], all: bool) -> Result<bool> {
    let b = doc.as_bytes();
    let span = value_span(doc)?;
    let names: Vec<Cow<str>> = match b.get(span.start) {
        Some(b'{') => members(b, span.start)?
            .into_iter()
            .map(|(k, _)| unescape(&doc[k.start + 1..k.end - 1]))
            .collect::<Result<_>>()?,
        Some(b'[') => elements(b, span.start)?
            .into_iter()
            .filter(|e| b[e.start] == b'"')
            .map(|e| unescape(&doc[e.start + 1..e.end - 1]))
            .collect::<Result<_>>()?,
        Some(b'"') => vec![unescape(&doc[span.start + 1..span.end - 1])?],
        _ => Vec::new(),
    };
    let has = |k: &&str| names.iter().any(|n| n == k);
    Ok(if all {
        keys.iter().all(has)
    } else {
        keys.iter().any(has)
    })
}

/// Plans the JSON operators over json and jsonb columns; other uses of the
/// same operators (arrays' `@>`) are left to the executor.
#[derive(Debug)]
pub(crate) struct JsonPlanner;

/// `Some(jsonb)` when `e` is a json (false) or jsonb (true) value.
fn json_kind(e: &Expr, schema: &DFSchema) -> Option<bool> {
    match e {
        Expr::Column(c) => {
            let (_, field) = schema.qualified_field_from_column(c).ok()?;
            match field.metadata().get(PG_TYPE).map(String::as_str) {
                Some("json") => Some(false),
                Some("jsonb") => Some(true),
                _ => None,
            }
        }
        Expr::Alias(a) => json_kind(&a.expr, schema),
        Expr::ScalarFunction(f) => {
            let inner = f.func.inner().as_any();
            if let Some(g) = inner.downcast_ref::<JsonFunction>() {
                return (g.fun == Fun::ExtractPath).then_some(g.jsonb);
            }
            let op = inner.downcast_ref::<JsonOp>()?;
            matches!(op.op, Op::Get | Op::Path).then_some(op.jsonb)
        }
        _ => None,
    }
}

impl ExprPlanner for JsonPlanner {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> Result<PlannerResult<RawBinaryExpr>> {
        let (op, swap) = match expr.op {
            BinaryOperator::Arrow => (Op::Get, false),
            BinaryOperator::LongArrow => (Op::GetText, false),
            BinaryOperator::HashArrow => (Op::Path, false),
            BinaryOperator::HashLongArrow => (Op::PathText, false),
            BinaryOperator::AtArrow => (Op::Contains, false),
            BinaryOperator::ArrowAt => (Op::Contains, true),
            BinaryOperator::Question => (Op::Exists, false),
            BinaryOperator::QuestionPipe => (Op::ExistsAny, false),
            BinaryOperator::QuestionAnd => (Op::ExistsAll, false),
            _ => return Ok(PlannerResult::Original(expr)),
        };
        let (doc, arg) = if swap {
            (expr.right.clone(), expr.left.clone())
        } else {
            (expr.left.clone(), expr.right.clone())
        };
        let kind = match op {
            Op::Contains => json_kind(&doc, schema).or_else(|| json_kind(&arg, schema)),
            _ => json_kind(&doc, schema),
        };
        let Some(jsonb) = kind else {
            return Ok(PlannerResult::Original(expr));
        };
        Ok(PlannerResult::Planned(Expr::ScalarFunction(
            ScalarFunction::new_udf(Arc::new(JsonOp::udf(op, jsonb)), vec![doc, arg]),
        )))
    }
}

/// Why the planned statement cannot be answered exactly, if it orders or
/// compares jsonb values: Postgres orders them by type, then size, then
/// contents, not as their text; and it compares a jsonb value with a
/// literal (or a parameter) as jsonb, after putting that in its normal
/// form, where the executor would compare the texts as written.
pub(crate) fn refusal(plan: &LogicalPlan) -> Option<String> {
    let jsonb =
        |e: &Expr, inputs: &[&DFSchema]| inputs.iter().any(|s| json_kind(e, s) == Some(true));
    super::exactness::first_refusal(
        plan,
        |e, inputs| jsonb(e, inputs).then(|| "ordering by a jsonb value".to_string()),
        |x, inputs| match x {
            Expr::BinaryExpr(b)
                if matches!(
                    b.op,
                    Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq
                ) && (jsonb(&b.left, inputs) || jsonb(&b.right, inputs)) =>
            {
                Some("comparing jsonb values by order".to_string())
            }
            Expr::BinaryExpr(b)
                if is_equality(b.op) && jsonb(&b.left, inputs) != jsonb(&b.right, inputs) =>
            {
                Some("comparing a jsonb value with a literal".to_string())
            }
            Expr::InList(l) if jsonb(&l.expr, inputs) => {
                Some("comparing a jsonb value with a literal".to_string())
            }
            _ => None,
        },
    )
}

fn is_equality(op: Operator) -> bool {
    matches!(
        op,
        Operator::Eq | Operator::NotEq | Operator::IsDistinctFrom | Operator::IsNotDistinctFrom
    )
}

/// Takes casts to json or jsonb off the operands of JSON operators
/// (`payload @> '{"a": 1}'::jsonb`): the executor holds JSON as text, and
/// the operators read any JSON text. True when it took any.
pub(crate) fn strip_operand_casts(statements: &mut Vec<ast::Statement>) -> bool {
    use std::ops::ControlFlow;
    let mut changed = false;
    let is_json_type = |t: &ast::DataType| match t {
        ast::DataType::JSON | ast::DataType::JSONB => true,
        ast::DataType::Custom(name, _) => {
            let n = name.to_string().to_lowercase();
            n == "json" || n == "jsonb"
        }
        _ => false,
    };
    let _ = ast::visit_expressions_mut(statements, |e: &mut ast::Expr| {
        if let ast::Expr::BinaryOp { left, op, right } = e
            && matches!(
                op,
                BinaryOperator::Arrow
                    | BinaryOperator::LongArrow
                    | BinaryOperator::HashArrow
                    | BinaryOperator::HashLongArrow
                    | BinaryOperator::AtArrow
                    | BinaryOperator::ArrowAt
                    | BinaryOperator::Question
                    | BinaryOperator::QuestionPipe
                    | BinaryOperator::QuestionAnd
            )
        {
            for side in [left, right] {
                if let ast::Expr::Cast {
                    expr, data_type, ..
                } = side.as_mut()
                    && is_json_type(data_type)
                {
                    let inner =
                        std::mem::replace(expr.as_mut(), ast::Expr::value(ast::Value::Null));
                    **side = inner;
                    changed = true;
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_elements_and_paths() {
        let doc = r#"{"a" : [1, {"b": "x\ny"}],  "a": [2,  3], "k\"q": null}"#;
        assert_eq!(member(doc, "a").unwrap(), Some("[2,  3]"));
        assert_eq!(member(doc, "k\"q").unwrap(), Some("null"));
        assert_eq!(member(doc, "z").unwrap(), None);
        assert_eq!(element("[1, 2, 3]", -1, false).unwrap(), Some("3"));
        assert_eq!(element("[1, 2, 3]", 3, false).unwrap(), None);
        assert_eq!(element("5", 0, true).unwrap(), Some("5"));
        assert_eq!(element("5", 0, false).unwrap(), None);
        let path = text_array(r#"{a, "1" ,b}"#).unwrap();
        assert_eq!(
            path,
            vec![Some("a".into()), Some("1".into()), Some("b".into())]
        );
        let first = r#"{"a": [1, {"b": "x\ny"}]}"#;
        assert_eq!(at_path(first, &path).unwrap(), Some(r#""x\ny""#));
        assert_eq!(
            as_text(at_path(first, &path).unwrap().unwrap())
                .unwrap()
                .as_deref(),
            Some("x\ny")
        );
        assert_eq!(as_text("null").unwrap(), None);
        assert_eq!(unescape(r"\u00e9\ud83d\ude00").unwrap(), "\u{e9}\u{1f600}");
    }

    #[test]
    fn containment_and_existence() {
        let c = |l: &str, r: &str| {
            contains_top(
                &node(l, value_span(l).unwrap()).unwrap(),
                &node(r, value_span(r).unwrap()).unwrap(),
            )
        };
        assert!(c(r#"["foo", "bar"]"#, r#""foo""#));
        assert!(!c(r#""foo""#, r#"["foo"]"#));
        assert!(c(r#"{"a": 1.0}"#, r#"{"a": 1}"#));
        assert!(c("[1, [2]]", "[[2]]"));
        assert!(!c("[1, [2]]", "[2]"));
        assert!(c("[1, 2, 3]", "[3, 1, 1]"));
        assert!(c(r#"{"a": {"b": 1, "c": 2}}"#, r#"{"a": {"b": 1}}"#));
        assert!(!c(r#"{"foo": {"bar": "baz"}}"#, r#"{"bar": "baz"}"#));
        assert!(c("[0]", "[-0]"));
        assert!(c("[1e2]", "[100.0]"));
        assert!(exists(r#"{"a": "b"}"#, &["a"], false).unwrap());
        assert!(!exists(r#"{"a": "b"}"#, &["b"], false).unwrap());
        assert!(!exists(r#"["a", ["b"]]"#, &["b"], false).unwrap());
        assert!(exists(r#""foo""#, &["foo"], false).unwrap());
        assert!(!exists(r#"{"a": 1}"#, &["x", "a"], true).unwrap());
    }
}
