//! Computed numeric results as Postgres writes them.
//!
//! A numeric value in Postgres carries its own display scale: `amount * 2`
//! has its column's (2), `coalesce(sum(amount), 0)` has the sum's where
//! there is one and none for the 0. The executor's decimals keep one scale
//! for a whole column. So a computed numeric output column, when it is
//! built from numeric columns, whole numbers and literals with `+`, `-`,
//! `*` and `coalesce` (also under sum, min and max), is written as
//! Postgres would write each value: the plan computes, beside the value,
//! the scale Postgres would give it (the larger of two terms', the sum of
//! two factors', the first non-null argument's), and a last projection
//! writes the value at that scale as numeric text. A division as a result
//! column, alone or rounded, is Postgres's quotient (at the scale its
//! `select_div_scale` picks). `extract(epoch …)`, `floor(x / k)` and
//! `round` are Postgres's own. Anything else computed in numeric is
//! refused.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Decimal128Type};
use datafusion::common::{Column, ExprSchema, Result, ScalarValue, exec_err};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, LogicalPlan, Operator, Projection, ScalarFunctionArgs, when,
};
use datafusion::sql::sqlparser::ast;

pub(crate) const NAME: &str = "thermocline_numeric";
/// `extract(epoch from t)`: Postgres's numeric, 6 decimals for a
/// timestamp or an interval, none for a date.
pub(crate) const EPOCH: &str = "thermocline_epoch";
/// `floor(x / k)` for a whole number k > 0: the floor of Postgres's
/// rounded quotient.
pub(crate) const FLOOR_DIV: &str = "thermocline_floor_div";

/// Rewrites `extract(epoch from t)` and `floor(x / k)` (k a whole number
/// above zero) into this module's functions; true when it rewrote any.
pub(crate) fn rewrite(statements: &mut Vec<ast::Statement>) -> bool {
    use ast::{CeilFloorKind, DateTimeField};
    use std::ops::ControlFlow;
    let mut changed = false;
    let _ = ast::visit_expressions_mut(statements, |e: &mut ast::Expr| {
        let call = match e {
            ast::Expr::Extract {
                field: DateTimeField::Epoch,
                expr,
                ..
            } => Some(format!("{EPOCH}({expr})")),
            ast::Expr::Floor {
                expr,
                field: CeilFloorKind::DateTimeField(DateTimeField::NoDateTime),
            } => by_whole_number(expr).map(|(x, k)| format!("{FLOOR_DIV}({x}, {k})")),
            ast::Expr::Function(f)
                if f.name.0.len() == 1
                    && f.name.to_string().eq_ignore_ascii_case("round")
                    && round_form(f) =>
            {
                let mut g = f.clone();
                g.name = ast::ObjectName::from(vec![ast::Ident::new(ROUND)]);
                Some(g.to_string())
            }
            _ => None,
        };
        if let Some(call) = call
            && let Some(parsed) = super::exactness::parse_expr(&call)
        {
            *e = parsed;
            changed = true;
        }
        ControlFlow::<()>::Continue(())
    });
    changed
}

/// `x / k`, parenthesized or not, for a whole number k above zero.
fn by_whole_number(e: &ast::Expr) -> Option<(&ast::Expr, &str)> {
    match e {
        ast::Expr::Nested(inner) => by_whole_number(inner),
        ast::Expr::BinaryOp {
            left,
            op: ast::BinaryOperator::Divide,
            right,
        } => match right.as_ref() {
            ast::Expr::Value(v) => match &v.value {
                ast::Value::Number(k, _)
                    if k.bytes().all(|b| b.is_ascii_digit())
                        && k.parse::<u64>()
                            .is_ok_and(|k| k > 0 && k <= i64::MAX as u64) =>
                {
                    Some((left, k.as_str()))
                }
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

/// `round(x[, n])`: Postgres's for numeric (half away from zero, `n`
/// decimals, none when `n` is negative or not given) and for float8 (half
/// to even).
pub(crate) const ROUND: &str = "thermocline_round";

/// The `n` of `round(x, n)` as written: a whole number, maybe negative.
fn round_places(e: &ast::Expr) -> Option<i64> {
    match e {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::Number(n, _) if n.bytes().all(|b| b.is_ascii_digit()) => n.parse().ok(),
            _ => None,
        },
        ast::Expr::UnaryOp {
            op: ast::UnaryOperator::Minus,
            expr,
        } => round_places(expr).map(|n| -n),
        ast::Expr::Nested(inner) => round_places(inner),
        _ => None,
    }
}

/// Whether a call of `round` is one [`ROUND`] answers: one argument, or a
/// second that is a whole number from -30 to 30.
pub(crate) fn round_form(f: &ast::Function) -> bool {
    let ast::FunctionArguments::List(list) = &f.args else {
        return false;
    };
    if f.filter.is_some() || f.over.is_some() {
        return false;
    }
    match list.args.as_slice() {
        [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(_))] => true,
        [
            ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(_)),
            ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(n)),
        ] => round_places(n).is_some_and(|n| (-30..=30).contains(&n)),
        _ => false,
    }
}

/// The result type of `round`, which depends on its `n`.
pub(crate) fn round_type(
    name: &str,
    args: &datafusion::logical_expr::ReturnFieldArgs,
) -> Option<DataType> {
    if name != ROUND {
        return None;
    }
    let first = args.arg_fields.first()?.data_type().clone();
    let places = match args.scalar_arguments.get(1) {
        None => None,
        Some(Some(v)) => Some(match v {
            ScalarValue::Int64(Some(n)) => *n,
            other => other.cast_to(&DataType::Int64).ok().and_then(|v| match v {
                ScalarValue::Int64(Some(n)) => Some(n),
                _ => None,
            })?,
        }),
        Some(None) => return Some(DataType::Null),
    };
    Some(match (&first, places) {
        // A decimal, or an average written as numeric text.
        (DataType::Decimal128(..) | DataType::Utf8, n) => {
            DataType::Decimal128(38, n.unwrap_or(0).max(0) as i8)
        }
        (t, Some(n)) if t.is_integer() => DataType::Decimal128(38, n.max(0) as i8),
        _ => DataType::Float64,
    })
}

fn round(args: ScalarFunctionArgs) -> Result<ColumnarValue> {
    use datafusion::arrow::array::{Decimal128Array, Float64Array};
    let n = args.number_rows;
    let target = args.return_field.data_type().clone();
    let values = args.args[0].to_array(n)?;
    let places = match args.args.get(1) {
        None => 0,
        Some(ColumnarValue::Scalar(v)) => match v.cast_to(&DataType::Int64)? {
            ScalarValue::Int64(Some(p)) => p,
            _ => return exec_err!("{ROUND} takes a whole number of places"),
        },
        Some(_) => return exec_err!("{ROUND} takes a constant number of places"),
    };
    let out: ArrayRef = match target {
        DataType::Decimal128(_, to) => {
            // Each value with its scale: a decimal's, or its own for an
            // average written as text.
            let scaled: Vec<Option<(i128, i64)>> = match values.data_type() {
                DataType::Utf8 => values
                    .as_string::<i32>()
                    .iter()
                    .map(|t| match t {
                        None => Some(None),
                        Some(t) => numeric_text(t).map(Some),
                    })
                    .collect::<Option<_>>()
                    .ok_or_else(overflow)?,
                DataType::Decimal128(_, s) => values
                    .as_primitive::<Decimal128Type>()
                    .iter()
                    .map(|v| v.map(|v| (v, *s as i64)))
                    .collect(),
                _ => cast(&values, &DataType::Decimal128(38, 0))?
                    .as_primitive::<Decimal128Type>()
                    .iter()
                    .map(|v| v.map(|v| (v, 0)))
                    .collect(),
            };
            let out = scaled
                .into_iter()
                .map(|v| {
                    v.map(|(v, from)| {
                        round_decimal(v, from, places, to as i64).ok_or_else(overflow)
                    })
                    .transpose()
                })
                .collect::<Result<Vec<Option<i128>>>>()?;
            Arc::new(Decimal128Array::from(out).with_precision_and_scale(38, to)?)
        }
        _ => {
            let values = cast(&values, &DataType::Float64)?;
            let values: &Float64Array = values.as_primitive();
            Arc::new(
                values
                    .iter()
                    .map(|v| v.map(f64::round_ties_even))
                    .collect::<Float64Array>(),
            )
        }
    };
    Ok(ColumnarValue::Array(out))
}

fn overflow() -> datafusion::common::DataFusionError {
    datafusion::common::DataFusionError::External(Box::new(super::json::DataError {
        code: "22003",
        message: "numeric field overflow".into(),
    }))
}

/// A number written in decimal (`-12.50`) as an integer and its scale;
/// `None` past 38 digits.
fn numeric_text(text: &str) -> Option<(i128, i64)> {
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let digits: i128 = format!("{int}{frac}").parse().ok()?;
    Some((if negative { -digits } else { digits }, frac.len() as i64))
}

/// `v` (at scale `from`) rounded half away from zero to `places` decimals
/// (tens, hundreds… when negative), at scale `to`.
fn round_decimal(v: i128, from: i64, places: i64, to: i64) -> Option<i128> {
    let pow = |k: i64| 10i128.checked_pow(u32::try_from(k).ok()?);
    let kept = if places >= from {
        v.checked_mul(pow(places - from)?)?
    } else {
        let p = pow(from - places)?;
        let (q, r) = (v / p, v % p);
        if r.unsigned_abs() * 2 >= p.unsigned_abs() {
            q + v.signum()
        } else {
            q
        }
    };
    // `kept` counts units of 10^-places; the result counts 10^-to.
    if to >= places {
        kept.checked_mul(pow(to - places)?)
    } else {
        Some(kept / pow(places - to)?)
    }
}

/// Numeric text (an average, a quotient) read back as a decimal with
/// [`VALUE_SCALE`] decimals, to order and compare it.
pub(crate) const VALUE: &str = "thermocline_numeric_value";
const VALUE_SCALE: i8 = 24;

fn value(args: ScalarFunctionArgs) -> Result<ColumnarValue> {
    use datafusion::arrow::array::Decimal128Array;
    let n = args.number_rows;
    let [text] = args.args.as_slice() else {
        return exec_err!("{VALUE} takes a number as text");
    };
    let text = cast(&text.to_array(n)?, &DataType::Utf8)?;
    let too_wide = || {
        datafusion::common::DataFusionError::External(Box::new(super::json::DataError {
            code: "0A000",
            message: "ordering or comparing an average or quotient this large or this small is not supported yet in reads of the history of a tiered table".into(),
        }))
    };
    let out = text
        .as_string::<i32>()
        .iter()
        .map(|t| {
            t.map(|t| {
                let (v, scale) = numeric_text(t).ok_or_else(too_wide)?;
                let scale = i8::try_from(scale).map_err(|_| too_wide())?;
                let (v, to) = rescale(v, scale, VALUE_SCALE as i64);
                if to != VALUE_SCALE || v.unsigned_abs() >= 10u128.pow(38) {
                    return Err(too_wide());
                }
                Ok(v)
            })
            .transpose()
        })
        .collect::<Result<Vec<Option<i128>>>>()?;
    Ok(ColumnarValue::Array(Arc::new(
        Decimal128Array::from(out).with_precision_and_scale(38, VALUE_SCALE)?,
    )))
}

/// `a / b` in numeric: Postgres's quotient, written as numeric text.
pub(crate) const DIV: &str = "thermocline_div";

fn div(args: ScalarFunctionArgs) -> Result<ColumnarValue> {
    let n = args.number_rows;
    let [a, b] = args.args.as_slice() else {
        return exec_err!("{DIV} takes two numbers");
    };
    let scaled = |v: &ColumnarValue| -> Result<(ArrayRef, u32)> {
        let v = v.to_array(n)?;
        Ok(match v.data_type() {
            DataType::Decimal128(_, s) => (v.clone(), (*s).max(0) as u32),
            _ => (cast(&v, &DataType::Decimal128(38, 0))?, 0),
        })
    };
    let ((a, sa), (b, sb)) = (scaled(a)?, scaled(b)?);
    let (a, b) = (
        a.as_primitive::<Decimal128Type>(),
        b.as_primitive::<Decimal128Type>(),
    );
    let mut out = StringBuilder::with_capacity(n, n * 24);
    for i in 0..n {
        if a.is_null(i) || b.is_null(i) {
            out.append_null();
            continue;
        }
        let (x, y) = (a.value(i), b.value(i));
        if y == 0 {
            return Err(datafusion::common::DataFusionError::External(Box::new(
                super::json::DataError {
                    code: "22012",
                    message: "division by zero".into(),
                },
            )));
        }
        let x = if y < 0 {
            x.checked_neg().ok_or_else(overflow)?
        } else {
            x
        };
        let text = super::average::quotient(x, sa, y.unsigned_abs(), sb).ok_or_else(overflow)?;
        out.append_value(text);
    }
    let out: ArrayRef = Arc::new(out.finish());
    Ok(ColumnarValue::Array(out))
}

/// A division whose Postgres quotient [`DIV`] writes: `a / b` of exact
/// numbers, alone or rounded; the expression that writes it.
fn exact_division(e: &Expr, input: &LogicalPlan) -> Option<Expr> {
    use datafusion::logical_expr::expr::ScalarFunction;
    let divided = |e: &Expr| match e {
        Expr::BinaryExpr(b)
            if b.op == Operator::Divide && exact(&b.left, input) && exact(&b.right, input) =>
        {
            Some(
                super::average::Average::named(DIV)
                    .call(vec![(*b.left).clone(), (*b.right).clone()]),
            )
        }
        _ => None,
    };
    match e {
        Expr::ScalarFunction(f) if f.func.name() == ROUND => {
            let mut args = f.args.clone();
            args[0] = divided(unalias(&args[0]))?;
            Some(Expr::ScalarFunction(ScalarFunction::new_udf(
                f.func.clone(),
                args,
            )))
        }
        other => divided(other),
    }
}

/// The result type of the functions of this module other than [`NAME`].
pub(crate) fn return_type(name: &str, args: &[DataType]) -> Option<DataType> {
    match name {
        DIV => Some(DataType::Utf8),
        VALUE => Some(DataType::Decimal128(38, VALUE_SCALE)),
        EPOCH => Some(match args.first() {
            Some(DataType::Date32 | DataType::Date64) => DataType::Decimal128(20, 0),
            Some(DataType::Interval(_) | DataType::Duration(_)) => DataType::Decimal128(38, 6),
            _ => DataType::Decimal128(20, 6),
        }),
        FLOOR_DIV => Some(DataType::Decimal128(38, 0)),
        _ => None,
    }
}

/// Runs the function `name` of this module.
pub(crate) fn invoke(name: &str, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
    match name {
        EPOCH => epoch(args),
        FLOOR_DIV => floor_div(args),
        ROUND => round(args),
        DIV => div(args),
        VALUE => value(args),
        _ => at_scale(args),
    }
}

fn epoch(args: ScalarFunctionArgs) -> Result<ColumnarValue> {
    use datafusion::arrow::array::{Date32Array, Decimal128Array};
    use datafusion::arrow::datatypes::TimeUnit;
    let n = args.number_rows;
    let [time] = args.args.as_slice() else {
        return exec_err!("{EPOCH} takes a time");
    };
    let time = time.to_array(n)?;
    let out: Decimal128Array = match time.data_type() {
        DataType::Date32 | DataType::Date64 => {
            let days = cast(&time, &DataType::Date32)?;
            let days: &Date32Array = days.as_primitive();
            days.iter()
                .map(|d| d.map(|d| d as i128 * 86_400))
                .collect::<Decimal128Array>()
                .with_precision_and_scale(20, 0)?
        }
        DataType::Timestamp(..) => {
            let us = cast(&time, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
            let us = us.as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
            us.iter()
                .map(|v| v.map(|v| v as i128))
                .collect::<Decimal128Array>()
                .with_precision_and_scale(20, 6)?
        }
        DataType::Interval(_) | DataType::Duration(_) => super::intervals::epochs(&time)?,
        other => return exec_err!("{EPOCH} of {other}"),
    };
    Ok(ColumnarValue::Array(Arc::new(out)))
}

fn floor_div(args: ScalarFunctionArgs) -> Result<ColumnarValue> {
    use datafusion::arrow::array::Decimal128Array;
    let n = args.number_rows;
    let [value, divisor] = args.args.as_slice() else {
        return exec_err!("{FLOOR_DIV} takes a value and a divisor");
    };
    let k = match divisor {
        ColumnarValue::Scalar(ScalarValue::Int64(Some(k))) if *k > 0 => *k as u64,
        _ => return exec_err!("{FLOOR_DIV} divides by a whole number above zero"),
    };
    let values = value.to_array(n)?;
    let (values, scale) = match values.data_type() {
        DataType::Decimal128(_, s) => (values.clone(), (*s).max(0) as u32),
        _ => (cast(&values, &DataType::Decimal128(38, 0))?, 0),
    };
    let values = values.as_primitive::<Decimal128Type>();
    let out = values
        .iter()
        .map(|v| {
            v.map(|v| floor_of(&super::average::divide(v, scale, k)).ok_or_else(overflow))
                .transpose()
        })
        .collect::<Result<Decimal128Array>>()?
        .with_precision_and_scale(38, 0)?;
    Ok(ColumnarValue::Array(Arc::new(out)))
}

/// The floor of a number written in decimal (`-12.5` → -13).
fn floor_of(text: &str) -> Option<i128> {
    let (v, scale) = numeric_text(text)?;
    Some(v.div_euclid(10i128.checked_pow(u32::try_from(scale).ok()?)?))
}

/// `thermocline_numeric(value, scale)`: each decimal value written at the
/// scale given for its row, as Postgres's numeric text.
pub(crate) fn at_scale(args: ScalarFunctionArgs) -> Result<ColumnarValue> {
    let n = args.number_rows;
    let [value, scale] = args.args.as_slice() else {
        return exec_err!("{NAME} takes a value and a scale");
    };
    let values = value.to_array(n)?;
    let (values, from) = match values.data_type() {
        DataType::Decimal128(_, s) => (values.clone(), *s),
        _ => (cast(&values, &DataType::Decimal128(38, 0))?, 0),
    };
    let values = values.as_primitive::<Decimal128Type>();
    let scales = cast(&scale.to_array(n)?, &DataType::Int64)?;
    let scales: &Int64Array = scales.as_primitive();
    let mut b = StringBuilder::with_capacity(n, n * 16);
    let mut text = Vec::new();
    for i in 0..n {
        if values.is_null(i) {
            b.append_null();
            continue;
        }
        let (v, to) = rescale(values.value(i), from, scales.value(i));
        text.clear();
        crate::pgtypes::write_decimal(&mut text, v, to);
        b.append_value(String::from_utf8_lossy(&text));
    }
    let out: ArrayRef = Arc::new(b.finish());
    Ok(ColumnarValue::Array(out))
}

/// `v` at scale `from`, at scale `to` when that drops only zero digits
/// (otherwise at `from`).
fn rescale(v: i128, from: i8, to: i64) -> (i128, i8) {
    let Ok(to) = i8::try_from(to) else {
        return (v, from);
    };
    if to == from || to < 0 {
        return (v, from);
    }
    if to > from {
        return match 10i128
            .checked_pow((to - from) as u32)
            .and_then(|p| v.checked_mul(p))
        {
            Some(w) => (w, to),
            None => (v, from),
        };
    }
    let p = 10i128.pow((from - to) as u32);
    if v % p == 0 { (v / p, to) } else { (v, from) }
}

/// `plan` with its output columns at `columns` (computed numerics, as
/// Postgres describes them) written at Postgres's scale per value; `Err`
/// names the first that cannot be.
pub(crate) fn at_postgres_scale(
    plan: LogicalPlan,
    columns: &[usize],
) -> Result<LogicalPlan, usize> {
    if columns.is_empty() {
        return Ok(plan);
    }
    // The projection that computes the output, under any sorts and limits.
    let mut above = Vec::new();
    let mut node = plan;
    let projection = loop {
        match node {
            LogicalPlan::Sort(_) | LogicalPlan::Limit(_) => {
                let input = node.inputs()[0].clone();
                above.push(node);
                node = input;
            }
            LogicalPlan::Projection(p) => break p,
            _ => return Err(columns[0]),
        }
    };
    let mut exprs = projection.expr.clone();
    let mut wrapped = Vec::new();
    for &i in columns {
        let Some(e) = exprs.get(i) else {
            return Err(i);
        };
        // A division (or its rounding) is computed as Postgres computes
        // it; alone, its quotient is numeric text, which nothing above may
        // sort.
        if let Some(divided) = exact_division(unalias(e), &projection.input) {
            let (q, f) = projection.schema.qualified_field(i);
            let column = Column::new(q.cloned(), f.name());
            let text =
                !matches!(unalias(&divided), Expr::ScalarFunction(g) if g.func.name() == ROUND);
            if text
                && above.iter().any(|node| {
                    node.expressions()
                        .iter()
                        .any(|x| x.column_refs().contains(&column))
                })
            {
                return Err(i);
            }
            exprs[i] = divided.alias(f.name());
            if text {
                continue;
            }
        }
        let e = &exprs[i];
        let inner = unalias(e);
        // An average is already written per value; its sum must be exact.
        if let Expr::ScalarFunction(f) = inner
            && f.func.name() == super::average::NAME
        {
            if f.args.first().is_some_and(|a| exact(a, &projection.input)) {
                continue;
            }
            return Err(i);
        }
        let decimal = matches!(
            inner.get_type(projection.input.schema()),
            Ok(DataType::Decimal128(..))
        );
        let Some(scale) = decimal
            .then(|| scale_of(inner, &projection.input))
            .flatten()
        else {
            return Err(i);
        };
        exprs.push(scale.alias(format!("thermocline_scale_{i}")));
        wrapped.push(i);
    }
    let outputs = projection.schema.fields().len();
    let mut plan = LogicalPlan::Projection(
        Projection::try_new(exprs, projection.input.clone()).map_err(|_| columns[0])?,
    );
    for node in above.into_iter().rev() {
        plan = node
            .with_new_exprs(node.expressions(), vec![plan])
            .map_err(|_| columns[0])?;
    }
    if wrapped.is_empty() {
        return Ok(plan);
    }
    let schema = plan.schema().clone();
    let mut top = Vec::with_capacity(outputs);
    for j in 0..outputs {
        let (qualifier, field) = schema.qualified_field(j);
        let column = Expr::Column(Column::new(qualifier.cloned(), field.name()));
        top.push(if wrapped.contains(&j) {
            let (sq, sf) = schema
                .qualified_field(outputs + wrapped.iter().position(|w| *w == j).expect("wrapped"));
            let scale = Expr::Column(Column::new(sq.cloned(), sf.name()));
            super::average::Average::named(NAME)
                .call(vec![column, scale])
                .alias(field.name())
        } else {
            column
        });
    }
    Ok(LogicalPlan::Projection(
        Projection::try_new(top, Arc::new(plan)).map_err(|_| columns[0])?,
    ))
}

fn unalias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => unalias(&a.expr),
        other => other,
    }
}

/// Postgres's display scale of each value of `e` (over `input`), as an
/// expression; `None` when it is not one this module follows.
fn scale_of(e: &Expr, input: &LogicalPlan) -> Option<Expr> {
    let schema = input.schema();
    match e {
        Expr::Alias(a) => scale_of(&a.expr, input),
        Expr::Column(c) => {
            let t = schema.field_from_column(c).ok()?.data_type().clone();
            (column_exact(input, c)).then_some(())?;
            fixed(&t)
        }
        Expr::Literal(v, _) => fixed(&v.data_type()),
        Expr::Negative(x) => scale_of(x, input),
        Expr::Cast(c) if matches!(c.data_type, DataType::Decimal128(..)) => {
            scale_of(&c.expr, input)
        }
        Expr::TryCast(c) if matches!(c.data_type, DataType::Decimal128(..)) => {
            scale_of(&c.expr, input)
        }
        Expr::BinaryExpr(b) => {
            let (l, r) = (scale_of(&b.left, input)?, scale_of(&b.right, input)?);
            match b.op {
                Operator::Plus | Operator::Minus => {
                    Some(when(l.clone().gt_eq(r.clone()), l).otherwise(r).ok()?)
                }
                Operator::Multiply => Some(l + r),
                _ => None,
            }
        }
        Expr::ScalarFunction(f) if [EPOCH, FLOOR_DIV, ROUND].contains(&f.func.name()) => {
            fixed(&e.get_type(schema).ok()?)
        }
        Expr::ScalarFunction(f) if f.func.name() == "abs" && f.args.len() == 1 => {
            scale_of(&f.args[0], input)
        }
        // The value of the argument chosen (the first of equal ones).
        Expr::ScalarFunction(f)
            if matches!(f.func.name(), "greatest" | "least") && !f.args.is_empty() =>
        {
            let mut case = None::<datafusion::logical_expr::conditional_expressions::CaseBuilder>;
            for a in &f.args {
                let s = scale_of(a, input)?;
                let chosen = a.clone().eq(e.clone());
                case = Some(match case {
                    None => when(chosen, s),
                    Some(mut c) => c.when(chosen, s),
                });
            }
            case?
                .otherwise(Expr::Literal(ScalarValue::Int64(Some(0)), None))
                .ok()
        }
        Expr::ScalarFunction(f) if f.func.name() == "coalesce" && !f.args.is_empty() => {
            let mut scales = Vec::new();
            for a in &f.args {
                scales.push((a.clone(), scale_of(a, input)?));
            }
            let (_, last) = scales.pop()?;
            if scales.is_empty() {
                return Some(last);
            }
            let mut case = None::<datafusion::logical_expr::conditional_expressions::CaseBuilder>;
            for (a, s) in scales {
                case = Some(match case {
                    None => when(a.is_not_null(), s),
                    Some(mut c) => c.when(a.is_not_null(), s),
                });
            }
            case?.otherwise(last).ok()
        }
        _ => None,
    }
}

/// The scale of every value of a column of type `t` whose values all have
/// its type's scale.
fn fixed(t: &DataType) -> Option<Expr> {
    let scale = match t {
        DataType::Decimal128(_, s) => *s as i64,
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => 0,
        _ => return None,
    };
    Some(Expr::Literal(ScalarValue::Int64(Some(scale.max(0))), None))
}

/// Whether every value of `e` (over `input`) has its type's scale.
fn exact(e: &Expr, input: &LogicalPlan) -> bool {
    match e {
        Expr::Alias(a) => exact(&a.expr, input),
        Expr::Column(c) => column_exact(input, c),
        Expr::Literal(..) => true,
        Expr::ScalarFunction(f) if f.func.name() == "abs" => f.args.iter().all(|a| exact(a, input)),
        Expr::ScalarFunction(f) => [EPOCH, FLOOR_DIV, ROUND].contains(&f.func.name()),
        Expr::Negative(x) => exact(x, input),
        Expr::Cast(c) => exact(&c.expr, input),
        Expr::TryCast(c) => exact(&c.expr, input),
        Expr::BinaryExpr(b) => {
            matches!(b.op, Operator::Plus | Operator::Minus | Operator::Multiply)
                && exact(&b.left, input)
                && exact(&b.right, input)
        }
        _ => false,
    }
}

/// Whether every value of column `c` of `plan`'s output has its type's
/// scale: a table's column, or computed from them exactly, through the
/// plan's nodes.
fn column_exact(plan: &LogicalPlan, c: &Column) -> bool {
    let Ok(i) = plan.schema().index_of_column(c) else {
        return false;
    };
    if !matches!(plan.schema().field(i).data_type(), DataType::Decimal128(..)) {
        // Whole numbers and everything that is not a decimal: not scaled.
        return true;
    }
    let by_index = |input: &LogicalPlan| {
        let (q, f) = input.schema().qualified_field(i);
        column_exact(input, &Column::new(q.cloned(), f.name()))
    };
    match plan {
        LogicalPlan::TableScan(_) => true,
        LogicalPlan::Filter(f) => by_index(&f.input),
        LogicalPlan::Sort(s) => by_index(&s.input),
        LogicalPlan::Limit(l) => by_index(&l.input),
        LogicalPlan::SubqueryAlias(s) => by_index(&s.input),
        LogicalPlan::Projection(p) => exact(&p.expr[i], &p.input),
        LogicalPlan::Aggregate(a) => {
            let groups = a.group_expr.len();
            if i < groups {
                return exact(&a.group_expr[i], &a.input);
            }
            match a.aggr_expr.get(i - groups).map(unalias) {
                Some(Expr::AggregateFunction(AggregateFunction { func, params })) => {
                    matches!(func.name(), "sum" | "min" | "max")
                        && params.args.len() == 1
                        && exact(&params.args[0], &a.input)
                }
                _ => false,
            }
        }
        LogicalPlan::Window(w) => {
            let inputs = w.input.schema().fields().len();
            if i < inputs {
                return by_index(&w.input);
            }
            match w.window_expr.get(i - inputs).map(unalias) {
                Some(Expr::WindowFunction(f)) => {
                    let args = &f.params.args;
                    match f.fun.name() {
                        "sum" | "min" | "max" => args.len() == 1 && exact(&args[0], &w.input),
                        // A value of the argument's rows.
                        "first_value" | "last_value" | "nth_value" => {
                            args.first().is_some_and(|a| exact(a, &w.input))
                        }
                        // A default stands where there is no row: written
                        // at its own scale, so only one of the argument's.
                        "lag" | "lead" => {
                            args.first().is_some_and(|a| exact(a, &w.input))
                                && args.get(2).is_none_or(|default| {
                                    exact(default, &w.input)
                                        && scale_of(default, &w.input).is_some_and(|s| {
                                            Some(s) == scale_of(&args[0], &w.input)
                                        })
                                })
                        }
                        _ => false,
                    }
                }
                _ => false,
            }
        }
        LogicalPlan::Join(j) => {
            if j.left.schema().has_column(c) {
                column_exact(&j.left, c)
            } else {
                column_exact(&j.right, c)
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::rescale;

    #[test]
    fn values_drop_only_zero_digits() {
        assert_eq!(rescale(1200, 2, 0), (12, 0));
        assert_eq!(rescale(1234, 2, 0), (1234, 2));
        assert_eq!(rescale(1234, 2, 2), (1234, 2));
        assert_eq!(rescale(-500, 3, 1), (-5, 1));
        assert_eq!(rescale(7, 0, 2), (700, 2));
    }

    #[test]
    fn rounds_half_away_from_zero() {
        use super::round_decimal;
        // 12.345 to 2 places; -12.345; 1250.5 to hundreds; 12.3 to 2.
        assert_eq!(round_decimal(12345, 3, 2, 2), Some(1235));
        assert_eq!(round_decimal(-12345, 3, 2, 2), Some(-1235));
        assert_eq!(round_decimal(12505, 1, -2, 0), Some(1300));
        assert_eq!(round_decimal(123, 1, 2, 2), Some(1230));
        assert_eq!(round_decimal(-25, 1, 0, 0), Some(-3));
        assert_eq!(round_decimal(i128::MAX, 0, 2, 2), None);
        assert_eq!(super::numeric_text("-12.50"), Some((-1250, 2)));
        assert_eq!(super::numeric_text("7"), Some((7, 0)));
    }

    #[test]
    fn floors_of_decimals() {
        use super::floor_of;
        assert_eq!(floor_of("12.5"), Some(12));
        assert_eq!(floor_of("-12.5"), Some(-13));
        assert_eq!(floor_of("-12.000"), Some(-12));
        assert_eq!(floor_of("7"), Some(7));
        assert_eq!(floor_of("-0.0001"), Some(-1));
    }
}
