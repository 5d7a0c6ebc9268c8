//! Array columns, answered as Postgres answers them.
//!
//! The executor holds a one-dimensional array as an Arrow list. Most of
//! what a statement does with one (elements, `cardinality`, `array_agg`,
//! `unnest` in the select list, equality, grouping, ORDER BY) means the
//! same in both; what does not is planned Postgres's way here or refused:
//!
//! - `@>`, `<@` and `&&` follow Postgres: a NULL element matches nothing
//!   (the executor's `array_has_all` matches NULL with NULL);
//! - `x = ANY(a)` is NULL, not false, when no element equals `x` and one
//!   is NULL (the difference shows under `NOT`);
//! - a string literal beside an array (`tags @> '{a,b}'`) is read as an
//!   array, as Postgres reads it;
//! - `array_length` of an empty array is NULL (the executor's is 0);
//! - a subscript must be a literal that is not negative (the executor
//!   counts a negative one from the end, Postgres answers NULL), and
//!   slices are refused;
//! - arrays compared by size (`<`, `BETWEEN`, `min`, `max`) are refused:
//!   the executor weighs a NULL element otherwise.

use std::any::Any;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, StringArray};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Float32Type, Float64Type};
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::utils::SingleRowListArrayBuilder;
use datafusion::common::{DFSchema, Result, exec_err, plan_err};
use datafusion::logical_expr::expr::{AggregateFunction, ScalarFunction};
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::type_coercion::binary::comparison_coercion;
use datafusion::logical_expr::{
    Between, BinaryExpr, ColumnarValue, Expr, ExprSchemable, LogicalPlan, Operator,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::sql::sqlparser::ast::{
    self, AccessExpr, BinaryOperator, Subscript, Value, visit_expressions, visit_expressions_mut,
};

use super::scan::ScanColumn;
use crate::catalog::quote_ident;
use crate::pgtypes::PgType;

/// The type of `e` when it is an array (an Arrow list).
fn list_type(e: &Expr, schema: &DFSchema) -> Option<DataType> {
    e.get_type(schema).ok().filter(|t| element(t).is_some())
}

fn listy(e: &Expr, schema: &DFSchema) -> bool {
    list_type(e, schema).is_some()
}

/// A string literal beside an array (`tags @> '{a,b}'`) read as an array
/// of the same type, as Postgres reads it; anything else as it is.
fn literal_list(e: Expr, t: &DataType) -> Result<Expr> {
    let text = match &e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)),
            _,
        ) => s.clone(),
        _ => return Ok(e),
    };
    let Some(items) = crate::pgtypes::array_items(&text) else {
        return super::json::data_error("22P02", &format!("malformed array literal: \"{text}\""));
    };
    let strings: ArrayRef = Arc::new(StringArray::from(items));
    let element = element(t).cloned().unwrap_or(DataType::Utf8);
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    let Ok(values) = cast_with_options(&strings, &element, &options) else {
        return super::json::data_error(
            "22P02",
            &format!("invalid input syntax for an array of {element}: \"{text}\""),
        );
    };
    Ok(Expr::Literal(
        ScalarValue::List(Arc::new(
            SingleRowListArrayBuilder::new(values).build_list_array(),
        )),
        None,
    ))
}

/// Plans `@>`, `<@` and `&&` over arrays as [`ArrayMatch`].
#[derive(Debug)]
pub(crate) struct ArrayPlanner;

impl ExprPlanner for ArrayPlanner {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> Result<PlannerResult<RawBinaryExpr>> {
        let (all, swap) = match expr.op {
            BinaryOperator::AtArrow => (true, false),
            BinaryOperator::ArrowAt => (true, true),
            BinaryOperator::PGOverlap => (false, false),
            _ => return Ok(PlannerResult::Original(expr)),
        };
        let (left, right) = match (
            list_type(&expr.left, schema),
            list_type(&expr.right, schema),
        ) {
            (None, None) => return Ok(PlannerResult::Original(expr)),
            (Some(t), None) => (expr.left, literal_list(expr.right, &t)?),
            (None, Some(t)) => (literal_list(expr.left, &t)?, expr.right),
            (Some(_), Some(_)) => (expr.left, expr.right),
        };
        let (outer, inner) = if swap { (right, left) } else { (left, right) };
        Ok(PlannerResult::Planned(Expr::ScalarFunction(
            ScalarFunction::new_udf(Arc::new(ArrayMatch::udf(all)), vec![outer, inner]),
        )))
    }
}

/// `a @> b` (`all`: every element of `b` is in `a`) or `a && b` (some
/// element of `b` is), as Postgres's `array_contain_compare` decides: a
/// NULL element of `b` is never found, and fails `@>`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct ArrayMatch {
    all: bool,
    signature: Signature,
}

impl ArrayMatch {
    pub(crate) fn udf(all: bool) -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            all,
            signature: Signature::user_defined(Volatility::Immutable),
        })
    }
}

/// A list's element type.
fn element(t: &DataType) -> Option<&DataType> {
    match t {
        DataType::List(f) | DataType::LargeList(f) => Some(f.data_type()),
        _ => None,
    }
}

impl ScalarUDFImpl for ArrayMatch {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        if self.all {
            "array_contains"
        } else {
            "array_overlaps"
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        let [a, b] = args else {
            return plan_err!("{} takes two arrays", self.name());
        };
        let (Some(ea), Some(eb)) = (element(a), element(b)) else {
            return plan_err!("{} takes two arrays, not {a} and {b}", self.name());
        };
        let Some(common) = comparison_coercion(ea, eb) else {
            return plan_err!("cannot compare the elements of {a} and {b}");
        };
        let list = DataType::new_list(common, true);
        Ok(vec![list.clone(), list])
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let [a, b] = args.args.as_slice() else {
            return exec_err!("{} takes two arguments", self.name());
        };
        let (a, b) = (a.to_array(n)?, b.to_array(n)?);
        let (Some(a), Some(b)) = (a.as_list_opt::<i32>(), b.as_list_opt::<i32>()) else {
            return exec_err!("{} takes two arrays", self.name());
        };
        let Some(t) = element(a.data_type()) else {
            return exec_err!("{} takes two arrays", self.name());
        };
        let converter = RowConverter::new(vec![SortField::new(t.clone())])?;
        let (ra, rb) = (
            comparable(&converter, a.values())?,
            comparable(&converter, b.values())?,
        );
        let (va, vb) = (a.values(), b.values());
        let out: BooleanArray = (0..n)
            .map(|i| {
                if a.is_null(i) || b.is_null(i) {
                    return None;
                }
                let (sa, sb) = (a.value_offsets()[i] as usize, b.value_offsets()[i] as usize);
                let outer: Vec<_> = (sa..a.value_offsets()[i + 1] as usize)
                    .filter(|&j| va.is_valid(j))
                    .map(|j| ra.row(j))
                    .collect();
                let mut inner = (sb..b.value_offsets()[i + 1] as usize)
                    .map(|j| vb.is_valid(j) && outer.iter().any(|r| *r == rb.row(j)));
                Some(if self.all {
                    inner.all(|found| found)
                } else {
                    inner.any(|found| found)
                })
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// Values encoded to be compared for equality as Postgres compares them:
/// by their row encoding, with -0 made 0 (equal in Postgres, as are two
/// NaNs).
fn comparable(converter: &RowConverter, values: &ArrayRef) -> Result<Rows> {
    let values: ArrayRef = match values.data_type() {
        DataType::Float64 => Arc::new(
            values
                .as_primitive::<Float64Type>()
                .unary::<_, Float64Type>(|x| if x == 0.0 { 0.0 } else { x }),
        ),
        DataType::Float32 => Arc::new(
            values
                .as_primitive::<Float32Type>()
                .unary::<_, Float32Type>(|x| if x == 0.0 { 0.0 } else { x }),
        ),
        _ => values.clone(),
    };
    Ok(converter.convert_columns(&[values])?)
}

/// Rewrites `array_length(a, d)` to be NULL for an empty array, as
/// Postgres's is; true when it rewrote any.
pub(crate) fn rewrite(statements: &mut Vec<ast::Statement>) -> bool {
    let mut changed = false;
    let _ = visit_expressions_mut(statements, |e: &mut ast::Expr| {
        if let ast::Expr::Function(f) = e
            && f.name.to_string().eq_ignore_ascii_case("array_length")
        {
            let rewritten = format!("nullif(CAST({f} AS integer), 0)");
            match super::exactness::parse_expr(&rewritten) {
                Some(x) => *e = x,
                None => return ControlFlow::Continue(()),
            }
            changed = true;
            // Not into the call just made.
            return ControlFlow::<()>::Continue(());
        }
        ControlFlow::Continue(())
    });
    changed
}

/// The first subscript of a statement that is not a literal at least 0,
/// or is a slice, as a 0A000 message.
pub(crate) fn subscript_refusal(statement: &ast::Statement) -> Option<String> {
    let literal = |e: &ast::Expr| matches!(e, ast::Expr::Value(v) if matches!(&v.value, Value::Number(n, _) if n.parse::<u64>().is_ok()));
    let mut found = None;
    let _ = visit_expressions(statement, |e: &ast::Expr| {
        if let ast::Expr::CompoundFieldAccess { access_chain, .. } = e {
            for a in access_chain {
                let ok = match a {
                    AccessExpr::Subscript(Subscript::Index { index }) => literal(index),
                    // Postgres's binary form of a slice says whether the
                    // array it was cut from had a NULL.
                    AccessExpr::Subscript(Subscript::Slice { .. }) => false,
                    AccessExpr::Dot(_) => true,
                };
                if !ok {
                    found = Some(format!("the array subscript in {e}"));
                    return ControlFlow::Break(());
                }
            }
        }
        ControlFlow::Continue(())
    });
    found
}

/// Why the plan cannot be answered exactly, if it compares arrays by size.
pub(crate) fn refusal(plan: &LogicalPlan) -> Option<String> {
    let listy = |e: &Expr, inputs: &[&DFSchema]| inputs.iter().any(|s| listy(e, s));
    super::exactness::first_refusal(
        plan,
        |_, _| None,
        |x, inputs| match x {
            Expr::BinaryExpr(BinaryExpr { left, op, right })
                if matches!(
                    op,
                    Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq
                ) && (listy(left, inputs) || listy(right, inputs)) =>
            {
                Some("comparing arrays by size".to_string())
            }
            Expr::Between(Between { expr, .. }) if listy(expr, inputs) => {
                Some("BETWEEN over arrays".to_string())
            }
            Expr::AggregateFunction(AggregateFunction { func, params })
                if matches!(func.name(), "min" | "max")
                    && params.args.iter().any(|a| listy(a, inputs)) =>
            {
                Some(format!("{}() of arrays", func.name()))
            }
            Expr::ScalarFunction(f)
                if matches!(f.func.name(), "greatest" | "least")
                    && f.args.iter().any(|a| listy(a, inputs)) =>
            {
                Some(format!("{}() of arrays", f.func.name()))
            }
            _ => None,
        },
    )
}

/// `x = ANY(a)` as Postgres answers it: true when an element equals `x`,
/// else NULL when `x` or an element is NULL (and `a` is not empty), else
/// false. The executor's `array_has` answers false where Postgres answers
/// NULL, which `NOT` turns into a row kept.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct AnyEqual {
    signature: Signature,
}

impl AnyEqual {
    pub(crate) fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            signature: Signature::user_defined(Volatility::Immutable),
        })
    }
}

impl ScalarUDFImpl for AnyEqual {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        "any_equal"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        let [a, x] = args else {
            return plan_err!("= ANY takes an array and a value");
        };
        let Some(e) = element(a) else {
            return plan_err!("= ANY takes an array, not {a}");
        };
        let Some(common) = comparison_coercion(e, x) else {
            return plan_err!("cannot compare the elements of {a} with {x}");
        };
        Ok(vec![DataType::new_list(common.clone(), true), common])
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let [a, x] = args.args.as_slice() else {
            return exec_err!("= ANY takes two arguments");
        };
        let (a, x) = (a.to_array(n)?, x.to_array(n)?);
        let Some(a) = a.as_list_opt::<i32>() else {
            return exec_err!("= ANY takes an array");
        };
        let converter = RowConverter::new(vec![SortField::new(x.data_type().clone())])?;
        let values = comparable(&converter, a.values())?;
        let needles = comparable(&converter, &x)?;
        let va = a.values();
        let out: BooleanArray = (0..n)
            .map(|i| {
                if a.is_null(i) {
                    return None;
                }
                let range = a.value_offsets()[i] as usize..a.value_offsets()[i + 1] as usize;
                if range.is_empty() {
                    return Some(false);
                }
                if x.is_null(i) {
                    return None;
                }
                let mut unknown = false;
                for j in range {
                    if va.is_null(j) {
                        unknown = true;
                    } else if values.row(j) == needles.row(i) {
                        return Some(true);
                    }
                }
                (!unknown).then_some(false)
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// `plan` with the executor's `array_has` (its plan of `x = ANY(a)`) as
/// [`AnyEqual`], a string literal for `a` (`x = ANY('{1,2}')`) read as an
/// array of `x`'s type.
pub(crate) fn any_as_postgres(plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    let any = Arc::new(AnyEqual::udf());
    let swap = |x: Expr, schemas: &[&DFSchema]| -> Result<Transformed<Expr>> {
        let Expr::ScalarFunction(f) = x else {
            return Ok(Transformed::no(x));
        };
        if f.func.name() != "array_has" {
            return Ok(Transformed::no(Expr::ScalarFunction(f)));
        }
        let mut args = f.args;
        if let [a, x] = args.as_mut_slice()
            && !schemas.iter().any(|s| listy(a, s))
            && let Some(t) = schemas.iter().find_map(|s| x.get_type(*s).ok())
        {
            *a = literal_list(a.clone(), &DataType::new_list(t, true))?;
        }
        Ok(Transformed::yes(Expr::ScalarFunction(
            ScalarFunction::new_udf(any.clone(), args),
        )))
    };
    super::exactness::rewrite_plan(
        plan,
        |e, schema| {
            let t = e.clone().transform_up(|x| swap(x, &[schema])).ok()?;
            t.transformed.then_some(t.data)
        },
        swap,
    )
}

/// An array operator over a column of `columns` as Postgres SQL, for
/// filters pushed to the hot scan: `a @> b`, `a <@ b` (as `b @> a`),
/// `a && b`, `x = ANY(a)` and `column = ANY(literal)` (`id = ANY($1)`), a
/// literal array written as an array of the column's type (the type
/// Postgres resolved the operator to when it described the statement).
pub(crate) fn pg_sql(f: &ScalarFunction, columns: &[ScanColumn]) -> Option<String> {
    let inner = f.func.inner().as_any();
    // A column cast by the executor to the other operand's type is the
    // column as Postgres compares it: Postgres resolved the operator to
    // the column's type when it described the statement.
    fn column<'c>(e: &Expr, columns: &'c [ScanColumn]) -> Option<&'c ScanColumn> {
        match e {
            Expr::Column(c) => columns.iter().find(|x| x.name == c.name),
            Expr::Cast(c) => column(&c.expr, columns),
            _ => None,
        }
    }
    let column = |e: &Expr| column(e, columns);
    // A literal array beside a column is written as an array of the
    // column's type (or, for `= ANY`, of the type of its elements).
    let operand = |e: &Expr, beside: Option<&ScanColumn>| -> Option<String> {
        if let Some(c) = column(e) {
            return Some(quote_ident(&c.name));
        }
        let Expr::Literal(v, _) = e else {
            return None;
        };
        match v {
            ScalarValue::List(l) if l.len() == 1 && !l.is_null(0) => {
                let element = match beside?.pg_type {
                    PgType::Array(of) => type_name(of.element_oid())?,
                    scalar => scalar_name(scalar)?,
                };
                let values = l.value(0);
                let items = (0..values.len())
                    .map(
                        |i| match ScalarValue::try_from_array(values.as_ref(), i).ok()? {
                            v if v.is_null() => Some("NULL".to_string()),
                            v => super::pushdown::literal_sql(&v),
                        },
                    )
                    .collect::<Option<Vec<_>>>()?;
                Some(format!("CAST(ARRAY[{}] AS {element}[])", items.join(", ")))
            }
            v => super::pushdown::literal_sql(v),
        }
    };
    let [first, second] = f.args.as_slice() else {
        return None;
    };
    if let Some(m) = inner.downcast_ref::<ArrayMatch>() {
        let (a, b) = (column(first), column(second));
        if a.is_none() && b.is_none() {
            return None;
        }
        let symbol = if m.all { "@>" } else { "&&" };
        return Some(format!(
            "({} {symbol} {})",
            operand(first, b)?,
            operand(second, a)?
        ));
    }
    if inner.downcast_ref::<AnyEqual>().is_some() {
        // `column = ANY(literal)` only when the executor compares in the
        // column's own type (it is not cast), as Postgres then does.
        let value = match second {
            Expr::Column(_) => column(second),
            _ => None,
        };
        if column(first).is_none() && value.is_none() {
            return None;
        }
        return Some(format!(
            "({} = ANY({}))",
            operand(second, None)?,
            operand(first, value)?
        ));
    }
    None
}

/// The name Postgres knows a column's (not array) type by.
fn scalar_name(t: PgType) -> Option<&'static str> {
    use crate::pgtypes::oid;
    type_name(match t {
        PgType::Bool => oid::BOOL,
        PgType::Int2 => oid::INT2,
        PgType::Int4 => oid::INT4,
        PgType::Int8 => oid::INT8,
        PgType::Float4 => oid::FLOAT4,
        PgType::Float8 => oid::FLOAT8,
        PgType::Numeric(..) => oid::NUMERIC,
        PgType::Text(o) => o,
        PgType::Json => oid::JSON,
        PgType::Jsonb => oid::JSONB,
        PgType::Bytea => oid::BYTEA,
        PgType::Uuid => oid::UUID,
        PgType::Date => oid::DATE,
        PgType::Time => oid::TIME,
        PgType::Timestamp => oid::TIMESTAMP,
        PgType::Timestamptz => oid::TIMESTAMPTZ,
        PgType::Interval => oid::INTERVAL,
        PgType::Enum | PgType::Array(_) => return None,
    })
}

/// The name Postgres knows an element type by.
fn type_name(oid: u32) -> Option<&'static str> {
    use crate::pgtypes::oid::*;
    Some(match oid {
        BOOL => "bool",
        BYTEA => "bytea",
        INT2 => "int2",
        INT4 => "int4",
        INT8 => "int8",
        TEXT => "text",
        VARCHAR => "varchar",
        BPCHAR => "bpchar",
        NAME => "name",
        FLOAT4 => "float4",
        FLOAT8 => "float8",
        NUMERIC => "numeric",
        DATE => "date",
        TIME => "time",
        TIMESTAMP => "timestamp",
        TIMESTAMPTZ => "timestamptz",
        UUID => "uuid",
        JSON => "json",
        JSONB => "jsonb",
        _ => return None,
    })
}
