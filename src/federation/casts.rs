//! Casts whose meaning differs between Postgres and the executor.
//!
//! `CAST(created_at AS timestamp)` of a timestamptz is, in Postgres, the
//! wall-clock time in the session's time zone (Tableau writes it around
//! every date column). The executor's cast keeps the UTC clock instead, so
//! such a cast is rewritten to [`LocalTime`] first. A timestamp, time,
//! float or interval cast to text is written differently by the two (`T`
//! between date and time, `1e+20`, `Infinity`), so it is refused with
//! 0A000 rather than answered differently; so is a cast to fewer digits of
//! a second (`timestamp(0)`), which Postgres rounds and the executor cuts.

use std::any::Any;
use std::sync::Arc;

use chrono::{Offset, TimeZone};
use datafusion::arrow::array::timezone::Tz;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, PrimitiveArray};
use datafusion::arrow::datatypes::{
    ArrowTimestampType, DataType, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, Result, exec_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    Cast, ColumnarValue, Expr, ExprSchemable, LogicalPlan, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, TryCast, Volatility,
};

/// A timestamptz's wall-clock time in its zone, as a timestamp.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct LocalTime {
    signature: Signature,
}

impl LocalTime {
    fn udf() -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(Self {
            signature: Signature::any(1, Volatility::Immutable),
        }))
    }
}

impl ScalarUDFImpl for LocalTime {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        "thermocline_local_time"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [DataType::Timestamp(unit, Some(_))] => Ok(DataType::Timestamp(*unit, None)),
            other => exec_err!("local time of {other:?}"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let values = args.args[0].to_array(args.number_rows)?;
        let DataType::Timestamp(unit, Some(zone)) = values.data_type().clone() else {
            return exec_err!("local time of {}", values.data_type());
        };
        let zone: Tz = zone.parse()?;
        let local: ArrayRef = match unit {
            TimeUnit::Second => Arc::new(shift::<TimestampSecondType>(&values, zone, 1)),
            TimeUnit::Millisecond => {
                Arc::new(shift::<TimestampMillisecondType>(&values, zone, 1_000))
            }
            TimeUnit::Microsecond => {
                Arc::new(shift::<TimestampMicrosecondType>(&values, zone, 1_000_000))
            }
            TimeUnit::Nanosecond => Arc::new(shift::<TimestampNanosecondType>(
                &values,
                zone,
                1_000_000_000,
            )),
        };
        Ok(ColumnarValue::Array(local))
    }
}

/// Each instant of `values` plus its zone's offset from UTC then.
fn shift<T: ArrowTimestampType>(values: &ArrayRef, zone: Tz, per_second: i64) -> PrimitiveArray<T> {
    values.as_primitive::<T>().unary_opt(|v| {
        let seconds = v.div_euclid(per_second);
        let nanos = (v.rem_euclid(per_second) * (1_000_000_000 / per_second)) as u32;
        let utc = chrono::DateTime::from_timestamp(seconds, nanos)?.naive_utc();
        let offset = zone.offset_from_utc_datetime(&utc).fix().local_minus_utc() as i64;
        v.checked_add(offset * per_second)
    })
}

/// Types whose text the executor writes unlike Postgres.
fn written_differently(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Timestamp(..)
            | DataType::Time32(_)
            | DataType::Time64(_)
            | DataType::Float16
            | DataType::Float32
            | DataType::Float64
            | DataType::Interval(_)
            | DataType::Duration(_)
    )
}

/// A cast that drops digits of a second: Postgres rounds them (to the
/// nearest), the executor cuts them off.
fn coarser_clock(from: &DataType, to: &DataType) -> bool {
    let unit = |t: &DataType| match t {
        DataType::Timestamp(u, _) => Some(*u),
        DataType::Time32(u) | DataType::Time64(u) => Some(*u),
        _ => None,
    };
    let rank = |u: TimeUnit| match u {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 1,
        TimeUnit::Microsecond => 2,
        TimeUnit::Nanosecond => 3,
    };
    matches!((unit(from), unit(to)), (Some(f), Some(t)) if rank(t) < rank(f) && rank(t) < 2)
}

fn to_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8)
}

/// `e` with its cast taken at the wall clock, when it is a cast of a
/// timestamptz (given the schemas it reads) to a timestamp.
fn at_wall_clock(e: Expr, schemas: &[&DFSchema], local: &Arc<ScalarUDF>) -> Transformed<Expr> {
    let (inner, to, try_cast) = match &e {
        Expr::Cast(Cast { expr, data_type }) => (expr, data_type, false),
        Expr::TryCast(TryCast { expr, data_type }) => (expr, data_type, true),
        _ => return Transformed::no(e),
    };
    let DataType::Timestamp(_, None) = to else {
        return Transformed::no(e);
    };
    let zoned = schemas
        .iter()
        .any(|s| matches!(inner.get_type(*s), Ok(DataType::Timestamp(_, Some(_)))));
    if !zoned {
        return Transformed::no(e);
    }
    let wall = Expr::ScalarFunction(ScalarFunction::new_udf(
        local.clone(),
        vec![inner.as_ref().clone()],
    ));
    let to = to.clone();
    Transformed::yes(if try_cast {
        Expr::TryCast(TryCast::new(Box::new(wall), to))
    } else {
        Expr::Cast(Cast::new(Box::new(wall), to))
    })
}

/// `plan` with every cast of a timestamptz to a timestamp taken at the
/// wall clock.
pub(crate) fn rewrite(plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    let local = LocalTime::udf();
    super::exactness::rewrite_plan(
        plan,
        |e, schema| {
            let t = e
                .clone()
                .transform_up(|x| Ok(at_wall_clock(x, &[schema], &local)))
                .ok()?;
            t.transformed.then_some(t.data)
        },
        |x, schemas| Ok(at_wall_clock(x, schemas, &local)),
    )
}

/// The first cast to text of a value the executor writes unlike Postgres.
pub(crate) fn refusal(plan: &LogicalPlan) -> Option<String> {
    let mut found = None;
    let _ = plan.apply_with_subqueries(|node| {
        let schema = merged_input_schema(node);
        node.apply_expressions(|e| {
            e.apply(|e| {
                let (inner, to) = match e {
                    Expr::Cast(Cast { expr, data_type }) => (expr, data_type),
                    Expr::TryCast(TryCast { expr, data_type }) => (expr, data_type),
                    _ => return Ok(TreeNodeRecursion::Continue),
                };
                let Ok(from) = inner.get_type(&schema) else {
                    return Ok(TreeNodeRecursion::Continue);
                };
                if to_text(to) && written_differently(&from) {
                    found = Some(format!("a cast of {from} to text"));
                    return Ok(TreeNodeRecursion::Stop);
                }
                if coarser_clock(&from, to) {
                    found = Some("a cast to a timestamp or time of fewer than 6 decimals".into());
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })?;
        Ok(if found.is_some() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
}

/// The schema a node's expressions are evaluated against: its inputs'.
pub(super) fn merged_input_schema(node: &LogicalPlan) -> DFSchema {
    let mut schema = DFSchema::empty();
    for input in node.inputs() {
        schema.merge(input.schema());
    }
    schema
}
