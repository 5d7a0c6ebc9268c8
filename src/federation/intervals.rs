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
//! - `extract(epoch from …)` takes a year as 365.25 days;
//! - a day added to a `timestamptz` is a day in the session's time zone
//!   (the executor's, in UTC).
//!
//! Comparisons and ORDER BY of intervals (columns, or computed, as
//! `now() - at > interval '1 day'`) are planned by Postgres's length, and
//! `sum`, `avg`, `min`, `max` and `extract(epoch from …)` of them as
//! Postgres computes them ([`as_postgres`], [`columns_as_postgres`]).
//! Groups of interval columns (GROUP BY, DISTINCT) are formed by length
//! ([`grouped_by_length`]), and an interval column added to or taken from
//! a timestamp in a session in UTC is computed as Postgres computes it.
//! Anything else that reads the value of an interval column (computes
//! with it otherwise) is refused with 0A000.

use std::any::Any;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Decimal128Array};
use datafusion::arrow::datatypes::{
    DataType, Decimal128Type, DurationMicrosecondType, DurationMillisecondType,
    DurationNanosecondType, DurationSecondType, Field, FieldRef, Int64Type, IntervalDayTimeType,
    IntervalMonthDayNano, IntervalMonthDayNanoType, IntervalUnit, IntervalYearMonthType, TimeUnit,
};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, Result, ScalarValue, exec_err};
use datafusion::logical_expr::expr::{
    AggregateFunction, ScalarFunction, WindowFunction, WindowFunctionDefinition,
};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Between, BinaryExpr, ColumnarValue, Distinct,
    Expr, ExprSchemable, LogicalPlan, Operator, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
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

/// `extract(epoch from i)` of intervals as Postgres gives it: seconds, in
/// a numeric of 6 decimals, a year taken as 365.25 days and the other
/// months as 30 days each.
pub(crate) fn epochs(values: &ArrayRef) -> Result<Decimal128Array> {
    if let DataType::Duration(_) = values.data_type() {
        return Ok(lengths(values)?
            .iter()
            .map(|v| v.map(|nanos| nanos / 1000))
            .collect::<Decimal128Array>()
            .with_precision_and_scale(38, 6)?);
    }
    let values = datafusion::arrow::compute::cast(values, &INTERVAL)?;
    let out: Decimal128Array = values
        .as_primitive::<IntervalMonthDayNanoType>()
        .iter()
        .map(|v| {
            v.map(|v| {
                let months = i128::from(v.months);
                // In quarter days: 1461 a year, 120 a month, 4 a day.
                let quarter_days =
                    1461 * (months / 12) + 120 * (months % 12) + 4 * i128::from(v.days);
                quarter_days * 21_600 * 1_000_000 + i128::from(v.nanoseconds / 1000)
            })
        })
        .collect();
    Ok(out.with_precision_and_scale(38, 6)?)
}

/// The aggregate to plan for a window's `min` or `max` of an interval.
fn window_kind(w: &WindowFunction, schema: &DFSchema) -> Option<Kind> {
    match &w.fun {
        WindowFunctionDefinition::AggregateUDF(f)
            if !w.params.distinct
                && w.params.args.len() == 1
                && w.params.args[0]
                    .get_type(schema)
                    .is_ok_and(|t| t == INTERVAL) =>
        {
            Kind::of(f.name())
        }
        _ => None,
    }
}

fn length(e: Expr) -> Expr {
    let udf = ScalarUDF::new_from_impl(Length {
        signature: Signature::any(1, Volatility::Immutable),
    });
    Expr::ScalarFunction(ScalarFunction::new_udf(Arc::new(udf), vec![e]))
}

/// `plan` with comparisons and sort keys of intervals made comparisons of
/// their lengths, as Postgres compares them (`'1 day' = '24 hours'`,
/// `'25 hours' > '1 day'`), groups formed by length, and `min`, `max`
/// and `count(DISTINCT)` of them as Postgres takes them. Runs only for a
/// statement that names intervals or `reads_intervals` (a table it reads
/// has an interval column); a difference of times compared with another
/// is compared by length already.
pub(crate) fn as_postgres(
    plan: LogicalPlan,
    sql: &str,
    reads_intervals: bool,
) -> Result<Transformed<LogicalPlan>> {
    if !reads_intervals && !sql.to_ascii_lowercase().contains("interval") {
        return Ok(Transformed::no(plan));
    }
    let grouped = grouped_by_length(plan)?;
    let (plan, regrouped) = (grouped.data, grouped.transformed);
    let typed = |e: &Expr, schema: &DFSchema| e.get_type(schema).is_ok_and(|t| is_length(&t));
    let t = super::exactness::rewrite_plan(
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
                // Distinct by length, as Postgres tells intervals apart.
                Expr::AggregateFunction(AggregateFunction { func, mut params })
                    if func.name() == "count"
                        && params.distinct
                        && params.args.iter().any(|a| typed(a, &schema)) =>
                {
                    params.args = params
                        .args
                        .into_iter()
                        .map(|a| if typed(&a, &schema) { length(a) } else { a })
                        .collect();
                    Transformed::yes(Expr::AggregateFunction(AggregateFunction { func, params }))
                }
                // A window partitioned or ordered by intervals: by length;
                // `min`/`max` over one as above.
                Expr::WindowFunction(mut w)
                    if w.params.partition_by.iter().any(|e| typed(e, &schema))
                        || w.params.order_by.iter().any(|s| typed(&s.expr, &schema))
                        || window_kind(&w, &schema).is_some() =>
                {
                    let p = &mut w.params;
                    for e in p
                        .partition_by
                        .iter_mut()
                        .chain(p.order_by.iter_mut().map(|s| &mut s.expr))
                    {
                        if typed(e, &schema) {
                            *e = length(e.clone());
                        }
                    }
                    if let Some(kind) = window_kind(&w, &schema) {
                        w.fun = WindowFunctionDefinition::AggregateUDF(Arc::new(aggregate(kind)));
                    }
                    Transformed::yes(Expr::WindowFunction(w))
                }
                Expr::AggregateFunction(AggregateFunction { func, mut params })
                    if !params.distinct
                        && params.args.len() == 1
                        && params.args[0]
                            .get_type(&schema)
                            .is_ok_and(|t| t == INTERVAL) =>
                {
                    match Kind::of(func.name()) {
                        Some(kind) => {
                            let args = std::mem::take(&mut params.args);
                            Transformed::yes(Expr::AggregateFunction(AggregateFunction::new_udf(
                                Arc::new(aggregate(kind)),
                                args,
                                params.distinct,
                                params.filter,
                                params.order_by,
                                params.null_treatment,
                            )))
                        }
                        None => Transformed::no(Expr::AggregateFunction(AggregateFunction {
                            func,
                            params,
                        })),
                    }
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
    )?;
    Ok(Transformed::new_transformed(
        t.data,
        t.transformed || regrouped,
    ))
}

/// An interval column read by `e` itself (not through a nested expression).
fn interval_column(e: &Expr, schema: &DFSchema) -> bool {
    matches!(e, Expr::Column(_)) && e.get_type(schema).is_ok_and(|t| is_interval(&t))
}

/// Whether adding an interval to `e` is done as Postgres does it: a
/// timestamp, in a session in UTC (the executor adds days to a
/// `timestamptz` in UTC, Postgres in the session's time zone; a
/// `timestamptz` cast to `timestamp` in another zone is not added to
/// either, yet).
fn shifted_alike(e: &Expr, schema: &DFSchema, utc: bool) -> bool {
    utc && matches!(e.get_type(schema), Ok(DataType::Timestamp(..)))
}

/// What `e` does with the value of an interval column among its direct
/// operands, if anything but return it, count it, test it for NULL, or
/// add it to a time as Postgres does (see [`shifted_alike`]).
fn use_of_value(e: &Expr, schema: &DFSchema, utc: bool) -> Option<&'static str> {
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op, right })
            if matches!(op, Operator::Plus | Operator::Minus)
                && interval_column(right, schema)
                && shifted_alike(left, schema, utc)
                || *op == Operator::Plus
                    && interval_column(left, schema)
                    && shifted_alike(right, schema, utc) =>
        {
            None
        }
        Expr::Column(_) | Expr::Alias(_) | Expr::IsNull(_) | Expr::IsNotNull(_) => None,
        // Lengths to compare, the average of a sum and a count, products,
        // seconds, and the text Postgres writes.
        Expr::ScalarFunction(f)
            if [
                LENGTH,
                MUL,
                DIV,
                super::average::NAME,
                super::numeric::EPOCH,
                super::casts::PG_TEXT,
            ]
            .contains(&f.func.name()) =>
        {
            None
        }
        // Functions that give a row's value as it is.
        Expr::WindowFunction(w)
            if matches!(
                w.fun.name(),
                "lag"
                    | "lead"
                    | "first_value"
                    | "last_value"
                    | "nth_value"
                    | "interval_min"
                    | "interval_max"
            ) =>
        {
            None
        }
        Expr::AggregateFunction(AggregateFunction { func, params })
            if !params.distinct
                && params.order_by.is_empty()
                && (func.name() == "count"
                    || [Kind::Sum, Kind::Min, Kind::Max, Kind::Parts]
                        .iter()
                        .any(|k| k.name() == func.name())) =>
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

/// What a plan node does with whole interval values that is not planned
/// by length (grouping sets, DISTINCT ON, a join on them), if anything.
fn use_by_node(node: &LogicalPlan, schema: &DFSchema) -> Option<&'static str> {
    let typed = |e: &Expr| e.get_type(schema).is_ok_and(|t| is_interval(&t));
    match node {
        LogicalPlan::Aggregate(a) if a.group_expr.iter().any(typed) => {
            Some("grouping sets of an interval column")
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

/// `plan` with groups of interval columns (GROUP BY, DISTINCT) formed by
/// length, as Postgres forms them (`'1 day'` and `'24 hours'` are one
/// group): the aggregate groups by the length, keeps one value of each
/// group (the longest's last seen, as Postgres keeps the first it saw of
/// equals: either is its answer), and a projection gives the groups their
/// names again.
fn grouped_by_length(plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    use datafusion::common::Column;
    use datafusion::logical_expr::{Aggregate, Projection};
    plan.transform_up(|node| {
        let agg = match node {
            LogicalPlan::Aggregate(a) => a,
            LogicalPlan::Distinct(Distinct::All(input))
                if input
                    .schema()
                    .fields()
                    .iter()
                    .any(|f| is_interval(f.data_type())) =>
            {
                // As GROUP BY every column.
                let columns = input.schema().columns().into_iter().map(Expr::Column);
                Aggregate::try_new(input.clone(), columns.collect(), Vec::new())?
            }
            other => return Ok(Transformed::no(other)),
        };
        let input = agg.input.schema().clone();
        let by_value: Vec<usize> = agg
            .group_expr
            .iter()
            .enumerate()
            .filter(|(_, g)| interval_column(g, &input))
            .map(|(i, _)| i)
            .collect();
        if by_value.is_empty() || matches!(agg.group_expr.as_slice(), [Expr::GroupingSet(_)]) {
            return Ok(Transformed::no(LogicalPlan::Aggregate(agg)));
        }
        let group = agg
            .group_expr
            .iter()
            .enumerate()
            .map(|(i, g)| match by_value.contains(&i) {
                true => length(g.clone()).alias(format!("interval_group_{i}")),
                false => g.clone(),
            })
            .collect();
        let kept = by_value.iter().map(|&i| {
            aggregate(Kind::Max)
                .call(vec![agg.group_expr[i].clone()])
                .alias(format!("interval_value_{i}"))
        });
        let aggr: Vec<Expr> = agg.aggr_expr.iter().cloned().chain(kept).collect();
        let (groups, aggregates) = (agg.group_expr.len(), agg.aggr_expr.len());
        let regrouped = Aggregate::try_new(agg.input.clone(), group, aggr)?;
        let new_schema = regrouped.schema.clone();
        let exprs = agg
            .schema
            .iter()
            .enumerate()
            .map(|(i, (qualifier, field))| {
                let from = match by_value.iter().position(|&g| g == i) {
                    Some(k) => groups + aggregates + k,
                    None => i,
                };
                let (q, f) = new_schema.qualified_field(from);
                Expr::Column(Column::new(q.cloned(), f.name()))
                    .alias_qualified(qualifier.cloned(), field.name())
            })
            .collect();
        let projection = Projection::try_new(
            exprs,
            std::sync::Arc::new(LogicalPlan::Aggregate(regrouped)),
        )?;
        Ok(Transformed::yes(LogicalPlan::Projection(projection)))
    })
}

/// The first thing in `plan` that reads inside an interval column's
/// values, as the start of a 0A000 message. `reads_intervals`: a table
/// the plan reads has an interval column; `utc`: the session's time zone
/// is UTC.
pub(crate) fn refusal(plan: &LogicalPlan, reads_intervals: bool, utc: bool) -> Option<String> {
    if !reads_intervals {
        return None;
    }
    let mut found = None;
    let _ = plan.apply_with_subqueries(|node| {
        let schema = super::casts::merged_input_schema(node);
        found = use_by_node(node, &schema);
        if found.is_none() {
            node.apply_expressions(|e| {
                e.apply(|x| {
                    found = use_of_value(x, &schema, utc);
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

/// The aggregates of intervals, as Postgres computes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// Months, days and time each summed (Postgres adds intervals part by
    /// part); out of range is 22008.
    Sum,
    /// The shortest by length; of equal ones, the last seen (as
    /// Postgres's `interval_smaller` keeps).
    Min,
    /// The longest by length; of equal ones, the last seen.
    Max,
    /// The sum's parts, for `avg` (see `average`): months, days and
    /// microseconds, in Postgres's ranges but beyond what the executor's
    /// interval holds.
    Parts,
}

impl Kind {
    /// The aggregate planned in place of the executor's own `min` or
    /// `max` (`sum` of an interval it cannot plan: see
    /// [`columns_as_postgres`]).
    fn of(name: &str) -> Option<Self> {
        match name {
            "min" => Some(Kind::Min),
            "max" => Some(Kind::Max),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Sum => "interval_sum",
            Kind::Min => "interval_min",
            Kind::Max => "interval_max",
            Kind::Parts => "interval_sum_parts",
        }
    }
}

/// `sum`, `min` or `max` of intervals (see [`Kind`]).
#[derive(Debug, PartialEq, Eq, Hash)]
struct IntervalAggregate {
    kind: Kind,
    signature: Signature,
}

fn aggregate(kind: Kind) -> AggregateUDF {
    AggregateUDF::new_from_impl(IntervalAggregate {
        kind,
        signature: Signature::exact(vec![INTERVAL], Volatility::Immutable),
    })
}

/// `sum` of intervals, as `interval_sum` and `interval_sum_parts`: for
/// the planning session.
pub(crate) fn sums() -> [AggregateUDF; 2] {
    [aggregate(Kind::Sum), aggregate(Kind::Parts)]
}

/// The type of [`Kind::Parts`].
fn parts_type() -> DataType {
    DataType::Struct(
        vec![
            Field::new("months", DataType::Int32, false),
            Field::new("days", DataType::Int32, false),
            Field::new("microseconds", DataType::Int64, false),
        ]
        .into(),
    )
}

/// `sql` with `sum(c)` of an interval column `c` (one of `columns`, the
/// names of those the statement's tables hold) written `interval_sum(c)`,
/// and `c * k`, `c / k` written `interval_mul(c, k)`, `interval_div(c,
/// k)`: the executor has none of these to plan. `None` when nothing
/// changed. (A column of another type named as one of those is then
/// refused, not summed otherwise.)
pub(crate) fn columns_as_postgres(sql: &str, columns: &[String]) -> Option<String> {
    use datafusion::sql::sqlparser::ast;

    let lower = sql.to_ascii_lowercase();
    if columns.is_empty() || !["sum", "*", "/"].iter().any(|w| lower.contains(w)) {
        return None;
    }
    let mut statements = super::sqltext::parse(sql).ok()?;
    let named = |i: &ast::Ident| {
        columns.iter().any(|c| match i.quote_style {
            Some(_) => *c == i.value,
            None => c.eq_ignore_ascii_case(&i.value),
        })
    };
    let column = |e: &ast::Expr| match e {
        ast::Expr::Identifier(i) => named(i),
        ast::Expr::CompoundIdentifier(parts) => parts.last().is_some_and(named),
        _ => false,
    };
    // `sum(c)`, an interval column summed.
    let summed = |f: &ast::Function| {
        f.over.is_none()
            && f.name.0.len() == 1
            && f.name.to_string().eq_ignore_ascii_case("sum")
            && matches!(&f.args, ast::FunctionArguments::List(list)
                if list.duplicate_treatment.is_none()
                    && matches!(list.args.as_slice(),
                        [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(arg))] if column(arg)))
    };
    let renamed = |f: &mut ast::Function, kind: Kind| {
        f.name = ast::ObjectName::from(vec![ast::Ident::new(kind.name())]);
    };
    let mut changed = false;
    let _ = ast::visit_expressions_mut(&mut statements, |e: &mut ast::Expr| {
        // `i * k`, `k * i`, `i / k`: as Postgres multiplies intervals.
        if let ast::Expr::BinaryOp { left, op, right } = e
            && matches!(
                op,
                ast::BinaryOperator::Multiply | ast::BinaryOperator::Divide
            )
        {
            let (interval, factor) = if column(left) {
                (left, right)
            } else if column(right) && *op == ast::BinaryOperator::Multiply {
                (right, left)
            } else {
                return std::ops::ControlFlow::Continue(());
            };
            let name = if *op == ast::BinaryOperator::Divide {
                DIV
            } else {
                MUL
            };
            if let Some(call) =
                super::exactness::parse_expr(&format!("{name}({interval}, {factor})"))
            {
                *e = call;
                changed = true;
            }
            return std::ops::ControlFlow::Continue(());
        }
        let ast::Expr::Function(f) = e else {
            return std::ops::ControlFlow::<()>::Continue(());
        };
        if summed(f) {
            renamed(f, Kind::Sum);
            changed = true;
        } else if f.name.to_string() == super::average::NAME
            && let ast::FunctionArguments::List(list) = &mut f.args
            && let Some(ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(ast::Expr::Function(
                sum,
            )))) = list.args.first_mut()
            && (summed(sum) || sum.name.to_string() == Kind::Sum.name())
        {
            // An average's sum, whole: its parts may exceed what the
            // executor's interval holds while their average does not.
            renamed(sum, Kind::Parts);
            changed = true;
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    changed.then(|| {
        statements
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    })
}

const INTERVAL: DataType = DataType::Interval(IntervalUnit::MonthDayNano);

impl AggregateUDFImpl for IntervalAggregate {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        self.kind.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(match self.kind {
            Kind::Parts => parts_type(),
            _ => INTERVAL,
        })
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(match self.kind {
            Kind::Sum | Kind::Parts => vec![
                Arc::new(Field::new(
                    format_state_name(args.name, "months"),
                    DataType::Int64,
                    true,
                )),
                Arc::new(Field::new(
                    format_state_name(args.name, "days"),
                    DataType::Int64,
                    true,
                )),
                Arc::new(Field::new(
                    format_state_name(args.name, "micros"),
                    DataType::Decimal128(38, 0),
                    true,
                )),
            ],
            Kind::Min | Kind::Max => vec![Arc::new(Field::new(
                format_state_name(args.name, "value"),
                INTERVAL,
                true,
            ))],
        })
    }

    fn accumulator(&self, _: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(IntervalAccumulator {
            kind: self.kind,
            sum: None,
            kept: None,
        }))
    }
}

#[derive(Debug)]
struct IntervalAccumulator {
    kind: Kind,
    /// Months, days, microseconds so far (`Sum`).
    sum: Option<(i64, i64, i128)>,
    /// The value kept (`Min`, `Max`).
    kept: Option<IntervalMonthDayNano>,
}

fn interval_length(v: IntervalMonthDayNano) -> i128 {
    (i128::from(v.months) * 30 + i128::from(v.days)) * NANOS_PER_DAY + i128::from(v.nanoseconds)
}

impl IntervalAccumulator {
    fn return_type(&self) -> DataType {
        match self.kind {
            Kind::Parts => parts_type(),
            _ => INTERVAL,
        }
    }

    fn add(&mut self, months: i64, days: i64, micros: i128) {
        let (m, d, t) = self.sum.get_or_insert((0, 0, 0));
        *m += months;
        *d += days;
        *t += micros;
    }

    fn keep(&mut self, v: IntervalMonthDayNano) {
        let replace = match (self.kept, self.kind) {
            (None, _) => true,
            (Some(k), Kind::Max) => interval_length(v) >= interval_length(k),
            (Some(k), _) => interval_length(v) <= interval_length(k),
        };
        if replace {
            self.kept = Some(v);
        }
    }
}

impl Accumulator for IntervalAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let values = values[0].as_primitive::<IntervalMonthDayNanoType>();
        for v in values.iter().flatten() {
            match self.kind {
                Kind::Sum | Kind::Parts => self.add(
                    i64::from(v.months),
                    i64::from(v.days),
                    i128::from(v.nanoseconds / 1000),
                ),
                _ => self.keep(v),
            }
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        match self.kind {
            Kind::Sum | Kind::Parts => {
                let months = states[0].as_primitive::<Int64Type>();
                let days = states[1].as_primitive::<Int64Type>();
                let micros = states[2].as_primitive::<Decimal128Type>();
                for r in 0..months.len() {
                    if months.is_valid(r) {
                        self.add(months.value(r), days.value(r), micros.value(r));
                    }
                }
            }
            _ => self.update_batch(states)?,
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(match self.kind {
            Kind::Sum | Kind::Parts => {
                let (m, d, t) = match self.sum {
                    Some((m, d, t)) => (Some(m), Some(d), Some(t)),
                    None => (None, None, None),
                };
                vec![
                    ScalarValue::Int64(m),
                    ScalarValue::Int64(d),
                    ScalarValue::Decimal128(t, 38, 0),
                ]
            }
            _ => vec![ScalarValue::IntervalMonthDayNano(self.kept)],
        })
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        if matches!(self.kind, Kind::Min | Kind::Max) {
            return Ok(ScalarValue::IntervalMonthDayNano(self.kept));
        }
        let Some((m, d, t)) = self.sum else {
            return ScalarValue::try_from(self.return_type());
        };
        let (Ok(months), Ok(days), Ok(micros)) =
            (i32::try_from(m), i32::try_from(d), i64::try_from(t))
        else {
            return super::json::data_error("22008", "interval out of range");
        };
        if self.kind == Kind::Parts {
            let parts = datafusion::arrow::array::StructArray::try_new(
                match parts_type() {
                    DataType::Struct(fields) => fields,
                    _ => unreachable!("parts_type is a struct"),
                },
                vec![
                    Arc::new(datafusion::arrow::array::Int32Array::from(vec![months])),
                    Arc::new(datafusion::arrow::array::Int32Array::from(vec![days])),
                    Arc::new(datafusion::arrow::array::Int64Array::from(vec![micros])),
                ],
                None,
            )?;
            return Ok(ScalarValue::Struct(Arc::new(parts)));
        }
        Ok(ScalarValue::IntervalMonthDayNano(Some(
            IntervalMonthDayNano::new(months, days, nanos(micros)?),
        )))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }
}

/// A query column that has Postgres read `text` (a SQL literal) as an
/// interval, its syntax being Postgres's own: the hex of its binary form,
/// for [`crate::pgtypes::from_hex`] and
/// [`crate::pgtypes::interval_from_binary`].
pub(crate) fn read_by_postgres(text: &str) -> String {
    format!(
        "pg_catalog.encode(pg_catalog.interval_send({}::interval), 'hex')",
        super::link::quote_literal(text)
    )
}

/// Microseconds as the executor's nanoseconds, where they fit.
fn nanos(micros: i64) -> Result<i64> {
    match micros.checked_mul(1000) {
        Some(n) => Ok(n),
        None => super::json::data_error(
            "0A000",
            &crate::pgtypes::TypeError::IntervalRange.to_string(),
        ),
    }
}

/// Postgres's `interval / float8` (`interval_div`), by which `avg` divides
/// the sum by the count (see [`scale`]).
pub(crate) fn divide(parts: (i32, i32, i64), count: i64) -> Result<IntervalMonthDayNano> {
    scale(parts, count as f64, true)
}

/// Postgres's `interval * float8` and `interval / float8` (`interval_mul`,
/// `interval_div`): months and days multiplied (or divided) and
/// truncated, their fractions carried down (a month as 30 days, a day as
/// 24 hours), each carry rounded to a microsecond, the time rounded half
/// to even. Out of range is 22008, division by zero 22012.
fn scale(
    (months, days, micros): (i32, i32, i64),
    factor: f64,
    divide: bool,
) -> Result<IntervalMonthDayNano> {
    if divide && factor == 0.0 {
        return super::json::data_error("22012", "division by zero");
    }
    let by = |x: f64| if divide { x / factor } else { x * factor };
    let out_of_range = || super::json::data_error("22008", "interval out of range");
    let int32 = |x: f64| (x >= f64::from(i32::MIN) && x < -f64::from(i32::MIN)).then_some(x as i32);
    // `rint`, then TSROUND: to the nearest microsecond.
    let ts_round = |x: f64| (x * 1e6).round_ties_even() / 1e6;
    let (orig_month, orig_day) = (f64::from(months), f64::from(days));
    let (Some(month), Some(mut day)) = (int32(by(orig_month)), int32(by(orig_day))) else {
        return out_of_range();
    };
    let month_days = ts_round((by(orig_month) - f64::from(month)) * 30.0);
    let mut secs = ts_round(
        (by(orig_day) - f64::from(day) + month_days - f64::from(month_days as i32)) * 86_400.0,
    );
    if secs.abs() >= 86_400.0 {
        let whole = (secs / 86_400.0) as i32;
        let Some(d) = day.checked_add(whole) else {
            return out_of_range();
        };
        day = d;
        secs -= f64::from(whole) * 86_400.0;
    }
    let Some(day) = day.checked_add(month_days as i32) else {
        return out_of_range();
    };
    let time = (by(micros as f64) + secs * 1e6).round_ties_even();
    if time.is_nan() || time < -(2f64.powi(63)) || time >= 2f64.powi(63) {
        return out_of_range();
    }
    Ok(IntervalMonthDayNano::new(month, day, nanos(time as i64)?))
}

/// `interval_mul(i, k)` and `interval_div(i, k)`: an interval column
/// multiplied or divided by a number, as Postgres does (see [`scale`]).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Scaled {
    divide: bool,
    signature: Signature,
}

const MUL: &str = "interval_mul";
const DIV: &str = "interval_div";

/// `interval_mul` and `interval_div`: for the planning session.
pub(crate) fn scalings() -> [ScalarUDF; 2] {
    [false, true].map(|divide| {
        ScalarUDF::new_from_impl(Scaled {
            divide,
            signature: Signature::any(2, Volatility::Immutable),
        })
    })
}

impl ScalarUDFImpl for Scaled {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        if self.divide { DIV } else { MUL }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(INTERVAL)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let values = datafusion::arrow::compute::cast(&args.args[0].to_array(n)?, &INTERVAL)?;
        let factors =
            datafusion::arrow::compute::cast(&args.args[1].to_array(n)?, &DataType::Float64)?;
        let values = values.as_primitive::<IntervalMonthDayNanoType>();
        let factors = factors.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        let out = (0..n)
            .map(|i| {
                if values.is_null(i) || factors.is_null(i) {
                    return Ok(None);
                }
                let v = values.value(i);
                scale(
                    (v.months, v.days, v.nanoseconds / 1000),
                    factors.value(i),
                    self.divide,
                )
                .map(Some)
            })
            .collect::<Result<datafusion::arrow::array::IntervalMonthDayNanoArray>>()?;
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}
