//! Array columns, answered as Postgres answers them.
//!
//! The executor holds a one-dimensional array as an Arrow list. Most of
//! what a statement does with one (elements, `= ANY`, `cardinality`,
//! `array_agg`, `unnest`, equality, grouping, ORDER BY) means the same in
//! both; what does not is planned Postgres's way here or refused:
//!
//! - `@>`, `<@` and `&&` follow Postgres: a NULL element matches nothing
//!   (the executor's `array_has_all` matches NULL with NULL);
//! - `array_length` of an empty array is NULL (the executor's is 0);
//! - a subscript must be a literal that is not negative (the executor
//!   counts a negative one from the end, Postgres answers NULL), and
//!   slices are refused;
//! - arrays compared by size (`<`, `BETWEEN`, `min`, `max`) are refused:
//!   the executor weighs a NULL element otherwise.

use std::any::Any;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, GenericListArray, StringArray,
};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Float32Type, Float64Type};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::ScalarValue;
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
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// Whether `t` is an array, as the executor holds one.
pub(crate) fn is_list(t: &DataType) -> bool {
    matches!(t, DataType::List(_) | DataType::LargeList(_))
}

fn listy(e: &Expr, schema: &DFSchema) -> bool {
    e.get_type(schema).is_ok_and(|t| is_list(&t))
}

fn list_type(e: &Expr, schema: &DFSchema) -> Option<DataType> {
    e.get_type(schema).ok().filter(is_list)
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
        // Elements compared by their row encoding, with -0 made 0 (equal
        // in Postgres, as are two NaNs).
        let converter = RowConverter::new(vec![SortField::new(t.clone())])?;
        let rows_of = |l: &GenericListArray<i32>| -> Result<_> {
            let values = positive_zero(l.values())?;
            Ok(converter.convert_columns(&[values])?)
        };
        let (ra, rb) = (rows_of(a)?, rows_of(b)?);
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

/// Float values with -0 written as 0, so that they encode alike.
fn positive_zero(values: &ArrayRef) -> Result<ArrayRef> {
    Ok(match values.data_type() {
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
    })
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
            match Parser::new(&PostgreSqlDialect {})
                .try_with_sql(&rewritten)
                .and_then(|mut p| p.parse_expr())
            {
                Ok(x) => *e = x,
                Err(_) => return ControlFlow::Continue(()),
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
