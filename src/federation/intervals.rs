//! Interval columns, answered only where the executor means what Postgres
//! means.
//!
//! The executor holds an interval as Postgres stores it: months, days and
//! microseconds, none carried into another. Returned as it is, counted or
//! tested for NULL, an interval column reads the same in both. What looks
//! inside the value does not:
//!
//! - Postgres compares intervals by length, a month taken as 30 days and a
//!   day as 24 hours (`'1 day' = '24 hours'`, and they group together);
//!   the executor compares months first, then days, then time;
//! - `sum`, `avg`, `min` and `max` follow those rules too, and Postgres's
//!   `avg` carries fractions of a month into days;
//! - a day added to a `timestamptz` is a day in the session's time zone.
//!
//! Comparisons and ORDER BY of intervals (columns, or computed, as
//! `now() - at > interval '1 day'`) are planned by Postgres's length
//! ([`by_length`]). Anything else that reads the value of an interval
//! column (groups, aggregates or computes with it) is refused with 0A000.

use std::any::Any;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Decimal128Array};
use datafusion::arrow::datatypes::{
    DataType, DurationMicrosecondType, DurationMillisecondType, DurationNanosecondType,
    DurationSecondType, IntervalDayTimeType, IntervalMonthDayNanoType, IntervalUnit,
    IntervalYearMonthType, TimeUnit,
};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, Result, exec_err};
use datafusion::logical_expr::expr::{AggregateFunction, ScalarFunction};
use datafusion::logical_expr::{
    Between, BinaryExpr, ColumnarValue, Distinct, Expr, ExprSchemable, LogicalPlan, Operator,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

fn is_interval(t: &DataType) -> bool {
    matches!(t, DataType::Interval(_))
}

/// An interval or a difference of times: what Postgres types `interval`.
fn is_length(t: &DataType) -> bool {
    matches!(t, DataType::Interval(_) | DataType::Duration(_))
}

/// The name of [`Length`] in plans.
const LENGTH: &str = "interval_length";

/// An interval's length as Postgres weighs it to compare two (a month as
/// 30 days, a day as 24 hours), in nanoseconds: a `Decimal128(38, 0)`,
/// which holds the longest exactly.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Length {
    signature: Signature,
}

impl ScalarUDFImpl for Length {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        LENGTH
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Decimal128(38, 0))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let values = args.args[0].to_array(args.number_rows)?;
        Ok(ColumnarValue::Array(Arc::new(lengths(&values)?)))
    }
}

const NANOS_PER_DAY: i128 = 86_400_000_000_000;

fn lengths(values: &ArrayRef) -> Result<Decimal128Array> {
    let days_months =
        |months: i32, days: i32| (i128::from(months) * 30 + i128::from(days)) * NANOS_PER_DAY;
    let out: Decimal128Array = match values.data_type() {
        DataType::Interval(IntervalUnit::MonthDayNano) => values
            .as_primitive::<IntervalMonthDayNanoType>()
            .iter()
            .map(|v| v.map(|v| days_months(v.months, v.days) + i128::from(v.nanoseconds)))
            .collect(),
        DataType::Interval(IntervalUnit::DayTime) => values
            .as_primitive::<IntervalDayTimeType>()
            .iter()
            .map(|v| v.map(|v| days_months(0, v.days) + i128::from(v.milliseconds) * 1_000_000))
            .collect(),
        DataType::Interval(IntervalUnit::YearMonth) => values
            .as_primitive::<IntervalYearMonthType>()
            .iter()
            .map(|v| v.map(|m| days_months(m, 0)))
            .collect(),
        DataType::Duration(unit) => {
            let (nanos, a): (i128, Vec<Option<i64>>) = match unit {
                TimeUnit::Second => (
                    1_000_000_000,
                    values.as_primitive::<DurationSecondType>().iter().collect(),
                ),
                TimeUnit::Millisecond => (
                    1_000_000,
                    values
                        .as_primitive::<DurationMillisecondType>()
                        .iter()
                        .collect(),
                ),
                TimeUnit::Microsecond => (
                    1_000,
                    values
                        .as_primitive::<DurationMicrosecondType>()
                        .iter()
                        .collect(),
                ),
                TimeUnit::Nanosecond => (
                    1,
                    values
                        .as_primitive::<DurationNanosecondType>()
                        .iter()
                        .collect(),
                ),
            };
            a.into_iter()
                .map(|v| v.map(|v| i128::from(v) * nanos))
                .collect()
        }
        DataType::Null => std::iter::repeat_n(None::<i128>, values.len()).collect(),
        other => return exec_err!("{LENGTH} of {other}"),
    };
    Ok(out.with_precision_and_scale(38, 0)?)
}

fn length(e: Expr) -> Expr {
    let udf = ScalarUDF::new_from_impl(Length {
        signature: Signature::any(1, Volatility::Immutable),
    });
    Expr::ScalarFunction(ScalarFunction::new_udf(Arc::new(udf), vec![e]))
}

/// `plan` with comparisons and sort keys of intervals made comparisons of
/// their lengths, as Postgres compares them (`'1 day' = '24 hours'`,
/// `'25 hours' > '1 day'`). Runs only for a statement that names
/// intervals or reads an interval column (a difference of times compared
/// with another is compared by length already).
pub(crate) fn by_length(plan: LogicalPlan, sql: &str) -> Result<Transformed<LogicalPlan>> {
    if !sql.to_ascii_lowercase().contains("interval") && !reads_intervals(&plan) {
        return Ok(Transformed::no(plan));
    }
    let typed = |e: &Expr, schema: &DFSchema| e.get_type(schema).is_ok_and(|t| is_length(&t));
    super::exactness::rewrite_plan(
        plan,
        |key, schema| typed(key, schema).then(|| length(key.clone())),
        |x, schemas| {
            let mut schema = DFSchema::empty();
            for s in schemas {
                schema.merge(s);
            }
            Ok(match x {
                Expr::BinaryExpr(b)
                    if matches!(
                        b.op,
                        Operator::Eq
                            | Operator::NotEq
                            | Operator::Lt
                            | Operator::LtEq
                            | Operator::Gt
                            | Operator::GtEq
                            | Operator::IsDistinctFrom
                            | Operator::IsNotDistinctFrom
                    ) && (typed(&b.left, &schema) || typed(&b.right, &schema)) =>
                {
                    Transformed::yes(Expr::BinaryExpr(BinaryExpr::new(
                        Box::new(length(*b.left)),
                        b.op,
                        Box::new(length(*b.right)),
                    )))
                }
                Expr::Between(b) if typed(&b.expr, &schema) => {
                    Transformed::yes(Expr::Between(Between::new(
                        Box::new(length(*b.expr)),
                        b.negated,
                        Box::new(length(*b.low)),
                        Box::new(length(*b.high)),
                    )))
                }
                x => Transformed::no(x),
            })
        },
    )
}

/// An interval column read by `e` itself (not through a nested expression).
fn interval_column(e: &Expr, schema: &DFSchema) -> bool {
    matches!(e, Expr::Column(_)) && e.get_type(schema).is_ok_and(|t| is_interval(&t))
}

/// What `e` does with the value of an interval column among its direct
/// operands, if anything but return it, count it or test it for NULL.
fn use_of_value(e: &Expr, schema: &DFSchema) -> Option<&'static str> {
    match e {
        Expr::Column(_) | Expr::Alias(_) | Expr::IsNull(_) | Expr::IsNotNull(_) => None,
        Expr::ScalarFunction(f) if f.func.name() == LENGTH => None,
        Expr::AggregateFunction(AggregateFunction { func, params })
            if func.name() == "count" && !params.distinct && params.order_by.is_empty() =>
        {
            None
        }
        _ => {
            let mut found = false;
            let _ = e.apply_children(|c| {
                found = interval_column(c, schema);
                Ok(if found {
                    TreeNodeRecursion::Stop
                } else {
                    TreeNodeRecursion::Continue
                })
            });
            found.then_some(match e {
                Expr::AggregateFunction(_) => "an aggregate of an interval column",
                Expr::WindowFunction(_) => "a window over an interval column",
                Expr::BinaryExpr(_) | Expr::Between(_) | Expr::InList(_) => {
                    "comparing or computing with an interval column"
                }
                _ => "an expression over an interval column",
            })
        }
    }
}

/// What a plan node does with whole interval values (grouping, DISTINCT,
/// joining on them), if anything.
fn use_by_node(node: &LogicalPlan, schema: &DFSchema) -> Option<&'static str> {
    let typed = |e: &Expr| e.get_type(schema).is_ok_and(|t| is_interval(&t));
    match node {
        LogicalPlan::Aggregate(a) if a.group_expr.iter().any(typed) => {
            Some("GROUP BY an interval column")
        }
        LogicalPlan::Distinct(Distinct::All(input))
            if input
                .schema()
                .fields()
                .iter()
                .any(|f| is_interval(f.data_type())) =>
        {
            Some("DISTINCT over an interval column")
        }
        LogicalPlan::Distinct(Distinct::On(on)) if on.on_expr.iter().any(typed) => {
            Some("DISTINCT ON an interval column")
        }
        LogicalPlan::Join(j) if j.on.iter().any(|(l, r)| typed(l) || typed(r)) => {
            Some("a join on an interval column")
        }
        _ => None,
    }
}

/// Whether a table the plan reads has an interval column.
fn reads_intervals(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            found = scan
                .source
                .schema()
                .fields()
                .iter()
                .any(|f| is_interval(f.data_type()));
        }
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
}

/// The first thing in `plan` that reads inside an interval column's
/// values, as the start of a 0A000 message.
pub(crate) fn refusal(plan: &LogicalPlan) -> Option<String> {
    if !reads_intervals(plan) {
        return None;
    }
    let mut found = None;
    let _ = plan.apply_with_subqueries(|node| {
        let schema = super::casts::merged_input_schema(node);
        found = use_by_node(node, &schema);
        if found.is_none() {
            node.apply_expressions(|e| {
                e.apply(|x| {
                    found = use_of_value(x, &schema);
                    Ok(if found.is_some() {
                        TreeNodeRecursion::Stop
                    } else {
                        TreeNodeRecursion::Continue
                    })
                })
            })?;
        }
        Ok(if found.is_some() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found.map(str::to_string)
}
