//! `avg` as Postgres computes it. Postgres divides the sum by the count in
//! numeric, at a display scale it picks for each value from the two
//! operands (at least 16 significant digits, and no fewer decimals than
//! the sum has); the executor's `avg` keeps one scale for a whole column.
//! So `avg(x)` is planned as `thermocline_avg(sum(x), count(x))`, which
//! writes each value as Postgres's numeric text (a float's average stays
//! a float, its sum divided by its count, as Postgres's is).
//!
//! Those values are text to the executor: ordering or comparing them is
//! refused, not done on their text.

use std::any::Any;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Builder, Int64Array, StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Field, FieldRef};
use datafusion::common::{DFSchema, Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, Operator, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl,
    Signature, Volatility,
};
use datafusion::sql::sqlparser::ast;

use super::json::PG_TYPE;

pub(crate) const NAME: &str = "thermocline_avg";
pub(crate) const NUMERIC_TEXT: &str = "numeric_text";

/// Postgres's numeric division scale (`select_div_scale`).
const MIN_SIG_DIGITS: i64 = 16;
const MAX_DISPLAY_SCALE: i64 = 1000;

/// A function that writes numeric values as Postgres's numeric text:
/// `thermocline_avg(sum, count)`, or `thermocline_numeric(value, scale)`
/// (see `numeric`).
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct Average {
    name: &'static str,
    signature: Signature,
}

impl Average {
    /// Every function of this family: `thermocline_avg(sum, count)` and
    /// those of `numeric`.
    pub(crate) fn all() -> Vec<datafusion::logical_expr::ScalarUDF> {
        use super::numeric::{DIV, EPOCH, FLOOR_DIV, NAME as AT_SCALE, ROUND, VALUE};
        [NAME, AT_SCALE, EPOCH, FLOOR_DIV, ROUND, DIV, VALUE]
            .into_iter()
            .map(Self::named)
            .collect()
    }

    /// The function of this family called `name`.
    pub(crate) fn named(name: &'static str) -> datafusion::logical_expr::ScalarUDF {
        use datafusion::logical_expr::TypeSignature;
        let signature = match name {
            super::numeric::EPOCH | super::numeric::VALUE => {
                Signature::any(1, Volatility::Immutable)
            }
            super::numeric::ROUND => Signature::one_of(
                vec![TypeSignature::Any(1), TypeSignature::Any(2)],
                Volatility::Immutable,
            ),
            _ => Signature::any(2, Volatility::Immutable),
        };
        datafusion::logical_expr::ScalarUDF::new_from_impl(Average { name, signature })
    }
}

impl ScalarUDFImpl for Average {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        if let Some(t) = super::numeric::return_type(self.name, args) {
            return Ok(t);
        }
        Ok(match args.first() {
            Some(DataType::Float32 | DataType::Float64) if self.name == NAME => DataType::Float64,
            Some(DataType::Interval(_) | DataType::Struct(_)) if self.name == NAME => {
                DataType::Interval(datafusion::arrow::datatypes::IntervalUnit::MonthDayNano)
            }
            _ => DataType::Utf8,
        })
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        if let Some(t) = super::numeric::round_type(self.name, &args) {
            return Ok(Arc::new(Field::new(self.name, t, true)));
        }
        let types: Vec<DataType> = args
            .arg_fields
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let t = self.return_type(&types)?;
        let field = Field::new(self.name, t.clone(), true);
        Ok(Arc::new(if t == DataType::Utf8 {
            field.with_metadata(super::json::pg_type(NUMERIC_TEXT))
        } else {
            field
        }))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if self.name != NAME {
            return super::numeric::invoke(self.name, args);
        }
        let n = args.number_rows;
        let [sum, count] = args.args.as_slice() else {
            return exec_err!("{NAME} takes a sum and a count");
        };
        let sums = sum.to_array(n)?;
        let counts = cast(&count.to_array(n)?, &DataType::Int64)?;
        let counts: &Int64Array = counts.as_primitive();
        let out: ArrayRef = match sums.data_type() {
            DataType::Struct(_) => {
                use datafusion::arrow::datatypes::{Int32Type, Int64Type};
                let parts = sums.as_struct();
                let (months, days, micros) = (
                    parts.column(0).as_primitive::<Int32Type>(),
                    parts.column(1).as_primitive::<Int32Type>(),
                    parts.column(2).as_primitive::<Int64Type>(),
                );
                let averages = (0..n)
                    .map(|i| {
                        if parts.is_null(i) || counts.is_null(i) || counts.value(i) <= 0 {
                            Ok(None)
                        } else {
                            let sum = (months.value(i), days.value(i), micros.value(i));
                            super::intervals::divide(sum, counts.value(i)).map(Some)
                        }
                    })
                    .collect::<Result<datafusion::arrow::array::IntervalMonthDayNanoArray>>()?;
                Arc::new(averages)
            }
            DataType::Float32 | DataType::Float64 => {
                let sums = cast(&sums, &DataType::Float64)?;
                let sums = sums.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
                let mut b = Float64Builder::with_capacity(n);
                for i in 0..n {
                    if sums.is_null(i) || counts.is_null(i) || counts.value(i) == 0 {
                        b.append_null();
                    } else {
                        b.append_value(sums.value(i) / counts.value(i) as f64);
                    }
                }
                Arc::new(b.finish())
            }
            other => {
                let (sums, scale) = match other {
                    DataType::Decimal128(_, s) => (sums.clone(), *s),
                    _ => (cast(&sums, &DataType::Decimal128(38, 0))?, 0),
                };
                let sums = sums.as_primitive::<Decimal128Type>();
                let mut b = StringBuilder::with_capacity(n, n * 24);
                for i in 0..n {
                    if sums.is_null(i) || counts.is_null(i) || counts.value(i) <= 0 {
                        b.append_null();
                    } else {
                        b.append_value(divide(
                            sums.value(i),
                            scale.max(0) as u32,
                            counts.value(i) as u64,
                        ));
                    }
                }
                Arc::new(b.finish())
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// The weight and first digit of a number's leading base-10000 digit, as
/// Postgres stores numerics; (0, 0) for zero. `digits`: its decimal
/// digits, the last `scale` of them after the point.
fn leading(digits: &str, scale: usize) -> (i64, u32) {
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return (0, 0);
    }
    let int_len = digits.len() as i64 - scale as i64;
    if int_len > 0 {
        let first = ((int_len - 1) % 4 + 1) as usize;
        return ((int_len - 1) / 4, digits[..first].parse().unwrap_or(0));
    }
    // Only a fraction: `-int_len` zeros after the point, then `digits`.
    let zeros = (-int_len) as usize;
    let group = zeros / 4;
    let padded = format!("{}{}0000", "0".repeat(zeros % 4), digits);
    (-(group as i64) - 1, padded[..4].parse().unwrap_or(0))
}

/// `sum / count` as Postgres's numeric division writes it: `sum` is an
/// integer scaled by 10^`scale`.
pub(crate) fn divide(sum: i128, scale: u32, count: u64) -> String {
    quotient(sum, scale, count as u128, 0).unwrap_or_default()
}

/// `a / b` (integers scaled by 10^`sa` and 10^`sb`) as Postgres's numeric
/// division writes it: at the scale `select_div_scale` picks (at least 16
/// significant digits, no fewer decimals than either operand has),
/// rounded half away from zero. `None` when `b` is zero or too large.
pub(crate) fn quotient(a: i128, sa: u32, b: u128, sb: u32) -> Option<String> {
    if b == 0 || b > u128::MAX / 20 {
        return None;
    }
    let negative = a < 0;
    let digits = a.unsigned_abs().to_string();
    let (weight1, first1) = leading(&digits, sa as usize);
    let (weight2, first2) = leading(&b.to_string(), sb as usize);
    let mut qweight = weight1 - weight2;
    if first1 <= first2 {
        qweight -= 1;
    }
    let rscale = (MIN_SIG_DIGITS - qweight * 4)
        .max(sa as i64)
        .max(sb as i64)
        .clamp(0, MAX_DISPLAY_SCALE) as usize;
    // Long division of a·10^(rscale − sa + sb) by b, rounded half away
    // from zero at the last digit.
    let extra = rscale + sb as usize - sa as usize;
    let mut quotient = String::with_capacity(digits.len() + extra);
    let mut rem: u128 = 0;
    for d in digits
        .bytes()
        .map(|c| (c - b'0') as u128)
        .chain(std::iter::repeat_n(0, extra))
    {
        rem = rem * 10 + d;
        quotient.push((b'0' + (rem / b) as u8) as char);
        rem %= b;
    }
    let mut q: Vec<u8> = quotient.into_bytes();
    if rem >= b - rem {
        let mut i = q.len();
        loop {
            if i == 0 {
                q.insert(0, b'1');
                break;
            }
            i -= 1;
            if q[i] == b'9' {
                q[i] = b'0';
            } else {
                q[i] += 1;
                break;
            }
        }
    }
    let q = String::from_utf8(q).unwrap_or_default();
    let q = q.trim_start_matches('0');
    let q = format!("{}{q}", "0".repeat((rscale + 1).saturating_sub(q.len())));
    let (int, frac) = q.split_at(q.len() - rscale);
    let zero = q.bytes().all(|b| b == b'0');
    let sign = if negative && !zero { "-" } else { "" };
    Some(if rscale == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    })
}

/// Rewrites `avg(x)` (with its DISTINCT, FILTER and OVER) into
/// `thermocline_avg(sum(x), count(x))`; true when it rewrote any.
pub(crate) fn rewrite(statements: &mut Vec<ast::Statement>) -> bool {
    use std::ops::ControlFlow;
    let mut changed = false;
    let _ = ast::visit_expressions_mut(statements, |e: &mut ast::Expr| {
        if let ast::Expr::Function(f) = e
            && f.name.0.len() == 1
            && f.name
                .to_string()
                .trim_matches('"')
                .eq_ignore_ascii_case("avg")
            && matches!(&f.args, ast::FunctionArguments::List(l) if l.args.len() == 1)
        {
            let with_name = |name: &str| {
                let mut g = f.clone();
                g.name = ast::ObjectName::from(vec![ast::Ident::new(name)]);
                ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(ast::Expr::Function(g)))
            };
            let (sum, count) = (with_name("sum"), with_name("count"));
            let mut outer = f.clone();
            outer.name = ast::ObjectName::from(vec![ast::Ident::new(NAME)]);
            outer.filter = None;
            outer.over = None;
            outer.null_treatment = None;
            outer.within_group = Vec::new();
            outer.args = ast::FunctionArguments::List(ast::FunctionArgumentList {
                duplicate_treatment: None,
                args: vec![sum, count],
                clauses: Vec::new(),
            });
            *f = outer;
            changed = true;
        }
        ControlFlow::<()>::Continue(())
    });
    if changed {
        let _ = ast::VisitMut::visit(statements, &mut OrderedByPosition);
    }
    changed
}

/// `ORDER BY n` where the n-th output column holds an average (rewritten):
/// ordered by the column's expression instead, which Postgres takes as the
/// same order. (The executor cannot order by the position of a function of
/// two aggregates.)
struct OrderedByPosition;

impl ast::VisitorMut for OrderedByPosition {
    type Break = ();

    fn pre_visit_query(&mut self, q: &mut ast::Query) -> std::ops::ControlFlow<()> {
        let ast::SetExpr::Select(select) = q.body.as_ref() else {
            return std::ops::ControlFlow::Continue(());
        };
        let Some(ast::OrderBy {
            kind: ast::OrderByKind::Expressions(order),
            ..
        }) = &mut q.order_by
        else {
            return std::ops::ControlFlow::Continue(());
        };
        for o in order.iter_mut() {
            let ast::Expr::Value(v) = &o.expr else {
                continue;
            };
            let ast::Value::Number(n, _) = &v.value else {
                continue;
            };
            let Some(i) = n.parse::<usize>().ok().and_then(|n| n.checked_sub(1)) else {
                continue;
            };
            let (ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. }) =
                (match select.projection.get(i) {
                    Some(item) => item,
                    None => continue,
                })
            else {
                continue;
            };
            if calls_average(e) {
                o.expr = e.clone();
            }
        }
        std::ops::ControlFlow::Continue(())
    }
}

/// Whether `e` calls an average, as [`rewrite`] writes it.
fn calls_average(e: &ast::Expr) -> bool {
    ast::visit_expressions(e, |x: &ast::Expr| match x {
        ast::Expr::Function(f) if f.name.to_string() == NAME => std::ops::ControlFlow::Break(()),
        _ => std::ops::ControlFlow::Continue(()),
    })
    .is_break()
}

/// Whether `e` (over inputs of `schemas`) is a numeric average, written
/// as numeric text.
fn is_average(e: &Expr, schemas: &[&DFSchema]) -> bool {
    match e {
        Expr::Column(c) => schemas.iter().any(|s| {
            s.qualified_field_from_column(c).is_ok_and(|(_, f)| {
                f.metadata().get(PG_TYPE).map(String::as_str) == Some(NUMERIC_TEXT)
            })
        }),
        Expr::Alias(a) => is_average(&a.expr, schemas),
        Expr::ScalarFunction(f) => f.func.name() == NAME,
        // A subquery's average, as its one column.
        Expr::ScalarSubquery(s) => averages_out(&s.subquery),
        _ => false,
    }
}

/// True when the first column of `plan`'s output is a numeric average.
fn averages_out(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Projection(p) => p
            .expr
            .first()
            .is_some_and(|e| is_average(e, &[p.input.schema().as_ref()])),
        // Nodes that pass their input's columns on.
        LogicalPlan::Filter(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Distinct(_) => plan.inputs().first().is_some_and(|i| averages_out(i)),
        other => {
            other.schema().fields().first().is_some_and(|f| {
                f.metadata().get(PG_TYPE).map(String::as_str) == Some(NUMERIC_TEXT)
            })
        }
    }
}

/// The plan with numeric averages ordered and compared by their values:
/// in sorts, window orders, comparisons, BETWEEN and IN, an average is
/// read back from its text as a decimal (exact: Postgres writes at most
/// 24 decimals for averages from 10^-8 up).
pub(crate) fn in_value_order(
    plan: LogicalPlan,
) -> Result<datafusion::common::tree_node::Transformed<LogicalPlan>> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::common::tree_node::{Transformed, TreeNode};
    let mut averages = false;
    let _ = plan.apply_with_subqueries(|node| {
        averages = node.expressions().iter().any(|e| {
            e.exists(|x| Ok(matches!(x, Expr::ScalarFunction(f) if f.func.name() == NAME)))
                .unwrap_or(false)
        });
        Ok(match averages {
            true => TreeNodeRecursion::Stop,
            false => TreeNodeRecursion::Continue,
        })
    });
    if !averages {
        return Ok(Transformed::no(plan));
    }
    let value = |e: Expr| Average::named(super::numeric::VALUE).call(vec![e]);
    super::exactness::rewrite_plan(
        plan,
        |e, schema| is_average(e, &[schema]).then(|| value(e.clone())),
        |x, schemas| {
            let wrap = |e: Box<Expr>| -> (Box<Expr>, bool) {
                if is_average(&e, schemas) {
                    (Box::new(value(*e)), true)
                } else {
                    (e, false)
                }
            };
            match x {
                Expr::BinaryExpr(mut b)
                    if matches!(
                        b.op,
                        Operator::Lt
                            | Operator::LtEq
                            | Operator::Gt
                            | Operator::GtEq
                            | Operator::Eq
                            | Operator::NotEq
                    ) =>
                {
                    let (l, wl) = wrap(b.left);
                    let (r, wr) = wrap(b.right);
                    (b.left, b.right) = (l, r);
                    Ok(Transformed::new_transformed(Expr::BinaryExpr(b), wl || wr))
                }
                Expr::Between(mut b) => {
                    let (e, w) = wrap(b.expr);
                    b.expr = e;
                    Ok(Transformed::new_transformed(Expr::Between(b), w))
                }
                Expr::InList(mut l) => {
                    let (e, w) = wrap(l.expr);
                    l.expr = e;
                    Ok(Transformed::new_transformed(Expr::InList(l), w))
                }
                Expr::WindowFunction(mut w) => {
                    let mut changed = false;
                    for s in w.params.order_by.iter_mut() {
                        if is_average(&s.expr, schemas) {
                            s.expr = value(s.expr.clone());
                            changed = true;
                        }
                    }
                    Ok(Transformed::new_transformed(
                        Expr::WindowFunction(w),
                        changed,
                    ))
                }
                x => Ok(Transformed::no(x)),
            }
        },
    )
}

/// Why the plan cannot be answered exactly, if it still orders or
/// compares numeric averages (text to the executor) after
/// [`in_value_order`].
pub(crate) fn refusal(plan: &LogicalPlan) -> Option<String> {
    super::exactness::first_refusal(
        plan,
        |e, inputs| {
            is_average(e, inputs)
                .then(|| "ordering by avg() of a whole number or numeric".to_string())
        },
        |x, inputs| match x {
            Expr::BinaryExpr(b)
                if !matches!(b.op, Operator::And | Operator::Or)
                    && (is_average(&b.left, inputs) || is_average(&b.right, inputs)) =>
            {
                Some("comparing avg() of a whole number or numeric".to_string())
            }
            Expr::InSubquery(i) if averages_out(&i.subquery.subquery) => {
                Some("comparing avg() of a whole number or numeric".to_string())
            }
            _ => None,
        },
    )
}
