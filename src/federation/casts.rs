//! Casts whose meaning differs between Postgres and the executor.
//!
//! `CAST(created_at AS timestamp)` of a timestamptz is, in Postgres, the
//! wall-clock time in the session's time zone (Tableau writes it around
//! every date column). The executor's cast keeps the UTC clock instead, so
//! such a cast is rewritten to `x AT TIME ZONE` its zone ([`AtTimeZone`])
//! first. A date, time, timestamp, float or interval that becomes text (a
//! cast, `||`, `concat`) is written differently by the two (`T` between
//! date and time, `1e+20`, `Infinity`, the DateStyle), so it is written by
//! Postgres's rules instead ([`PgText`]). A cast to fewer digits of a
//! second (`timestamp(0)`), which Postgres rounds and the executor cuts,
//! is refused with 0A000 rather than answered differently.
//!
//! `x AT TIME ZONE 'zone'` is, in Postgres, the wall clock in that zone of
//! a timestamptz, or the instant at which a timestamp is that zone's wall
//! clock. The executor takes it for a cast that keeps the instant, so it is
//! written as a call of [`AtTimeZone`] first ([`at_time_zone_calls`]).

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
    Between, BinaryExpr, Cast, ColumnarValue, Expr, ExprSchemable, LogicalPlan, Operator,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TryCast, Volatility,
};

/// `x AT TIME ZONE 'zone'` as Postgres computes it, for a named zone.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct AtTimeZone {
    signature: Signature,
    /// The session's zone, which a timestamptz result is shown in.
    session: String,
}

/// The name [`at_time_zone_calls`] writes.
const AT_TIME_ZONE: &str = "thermocline_at_time_zone";

impl AtTimeZone {
    pub(crate) fn udf(session: &str) -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            signature: Signature::any(2, Volatility::Immutable),
            session: session.to_string(),
        })
    }
}

impl ScalarUDFImpl for AtTimeZone {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        AT_TIME_ZONE
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [DataType::Timestamp(unit, Some(_)), _] => Ok(DataType::Timestamp(*unit, None)),
            [DataType::Timestamp(unit, None), _] => Ok(DataType::Timestamp(
                *unit,
                Some(self.session.as_str().into()),
            )),
            [t, _] => datafusion::common::not_impl_err!("AT TIME ZONE of {t}"),
            _ => exec_err!("AT TIME ZONE takes two arguments"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        use datafusion::common::ScalarValue;
        let zone = match &args.args[1] {
            ColumnarValue::Scalar(
                ScalarValue::Utf8(Some(z))
                | ScalarValue::Utf8View(Some(z))
                | ScalarValue::LargeUtf8(Some(z)),
            ) => z.clone(),
            _ => {
                return datafusion::common::not_impl_err!(
                    "AT TIME ZONE of a zone that is not a constant name"
                );
            }
        };
        // Names only: Postgres reads `+05` as five hours west. `+00:00`
        // is the executor's name for UTC.
        let named = match zone.as_str() {
            "+00:00" => Some(chrono_tz::UTC),
            name => crate::pgtypes::resolve_time_zone(name),
        };
        let Some(named) = named else {
            return datafusion::common::not_impl_err!("AT TIME ZONE {zone:?}");
        };
        let zone: Tz = named.name().parse()?;
        let values = args.args[0].to_array(args.number_rows)?;
        let (unit, zoned) = match values.data_type() {
            DataType::Timestamp(unit, tz) => (*unit, tz.is_some()),
            t => return datafusion::common::not_impl_err!("AT TIME ZONE of {t}"),
        };
        let per_second = match unit {
            TimeUnit::Second => 1,
            TimeUnit::Millisecond => 1_000,
            TimeUnit::Microsecond => 1_000_000,
            TimeUnit::Nanosecond => 1_000_000_000,
        };
        let out: ArrayRef = if zoned {
            match unit {
                TimeUnit::Second => {
                    Arc::new(shift::<TimestampSecondType>(&values, zone, per_second))
                }
                TimeUnit::Millisecond => {
                    Arc::new(shift::<TimestampMillisecondType>(&values, zone, per_second))
                }
                TimeUnit::Microsecond => {
                    Arc::new(shift::<TimestampMicrosecondType>(&values, zone, per_second))
                }
                TimeUnit::Nanosecond => {
                    Arc::new(shift::<TimestampNanosecondType>(&values, zone, per_second))
                }
            }
        } else {
            let session: Arc<str> = self.session.as_str().into();
            match unit {
                TimeUnit::Second => Arc::new(
                    unshift::<TimestampSecondType>(&values, zone, per_second)?
                        .with_timezone(session),
                ),
                TimeUnit::Millisecond => Arc::new(
                    unshift::<TimestampMillisecondType>(&values, zone, per_second)?
                        .with_timezone(session),
                ),
                TimeUnit::Microsecond => Arc::new(
                    unshift::<TimestampMicrosecondType>(&values, zone, per_second)?
                        .with_timezone(session),
                ),
                TimeUnit::Nanosecond => Arc::new(
                    unshift::<TimestampNanosecondType>(&values, zone, per_second)?
                        .with_timezone(session),
                ),
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// Each wall clock of `values` as the instant it is in `zone`; a wall
/// clock a change of offset skips or repeats is refused (Postgres picks
/// one by its own rule).
fn unshift<T: ArrowTimestampType>(
    values: &ArrayRef,
    zone: Tz,
    per_second: i64,
) -> Result<PrimitiveArray<T>> {
    values.as_primitive::<T>().try_unary(|v| {
        let seconds = v.div_euclid(per_second);
        let nanos = (v.rem_euclid(per_second) * (1_000_000_000 / per_second)) as u32;
        let Some(wall) = chrono::DateTime::from_timestamp(seconds, nanos).map(|d| d.naive_utc()) else {
            return Err(datafusion::arrow::error::ArrowError::ComputeError("timestamp out of range".into()));
        };
        match zone.from_local_datetime(&wall) {
            chrono::LocalResult::Single(t) => {
                let offset = t.offset().fix().local_minus_utc() as i64;
                Ok(v - offset * per_second)
            }
            _ => Err(datafusion::arrow::error::ArrowError::NotYetImplemented(format!(
                "AT TIME ZONE of {wall}, a wall clock that a change of offset skips or repeats"
            ))),
        }
    }).map_err(Into::into)
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

/// `statements` with every `x AT TIME ZONE 'zone'` written as a call of
/// [`AtTimeZone`]; true when there was one.
pub(crate) fn at_time_zone_calls(
    statements: &mut Vec<datafusion::sql::sqlparser::ast::Statement>,
) -> bool {
    use datafusion::sql::sqlparser::ast::{
        self as ast, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments, Ident,
        ObjectName, ObjectNamePart, visit_expressions_mut,
    };
    let mut changed = false;
    let _ = visit_expressions_mut(statements, |e: &mut ast::Expr| {
        if let ast::Expr::AtTimeZone {
            timestamp,
            time_zone,
        } = e
        {
            let arg = |x: &ast::Expr| FunctionArg::Unnamed(FunctionArgExpr::Expr(x.clone()));
            *e = ast::Expr::Function(ast::Function {
                name: ObjectName(vec![ObjectNamePart::Identifier(Ident::new(AT_TIME_ZONE))]),
                uses_odbc_syntax: false,
                parameters: FunctionArguments::None,
                args: FunctionArguments::List(FunctionArgumentList {
                    duplicate_treatment: None,
                    args: vec![arg(timestamp), arg(time_zone)],
                    clauses: vec![],
                }),
                filter: None,
                null_treatment: None,
                over: None,
                within_group: vec![],
            });
            changed = true;
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    changed
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

/// `e` with its cast taken at the wall clock (`AT TIME ZONE` the value's
/// own zone), when it is a cast of a timestamptz (given the schemas it
/// reads) to a timestamp.
fn at_wall_clock(e: Expr, schemas: &[&DFSchema], at: &Arc<ScalarUDF>) -> Transformed<Expr> {
    let (inner, to, try_cast) = match &e {
        Expr::Cast(Cast { expr, data_type }) => (expr, data_type, false),
        Expr::TryCast(TryCast { expr, data_type }) => (expr, data_type, true),
        _ => return Transformed::no(e),
    };
    let DataType::Timestamp(_, None) = to else {
        return Transformed::no(e);
    };
    let zone = schemas.iter().find_map(|s| match inner.get_type(*s) {
        Ok(DataType::Timestamp(_, Some(zone))) => Some(zone),
        _ => None,
    });
    let Some(zone) = zone else {
        return Transformed::no(e);
    };
    let wall = Expr::ScalarFunction(ScalarFunction::new_udf(
        at.clone(),
        vec![
            inner.as_ref().clone(),
            Expr::Literal(
                datafusion::common::ScalarValue::Utf8(Some(zone.to_string())),
                None,
            ),
        ],
    ));
    let to = to.clone();
    Transformed::yes(if try_cast {
        Expr::TryCast(TryCast::new(Box::new(wall), to))
    } else {
        Expr::Cast(Cast::new(Box::new(wall), to))
    })
}

/// Whether `op` compares its operands (and so reads both as one type).
pub(super) fn compares(op: &Operator) -> bool {
    matches!(
        op,
        Operator::Eq
            | Operator::NotEq
            | Operator::Lt
            | Operator::LtEq
            | Operator::Gt
            | Operator::GtEq
            | Operator::IsDistinctFrom
            | Operator::IsNotDistinctFrom
    )
}

/// A date as the timestamptz `zoned` of its midnight in the session's
/// zone, as Postgres takes it: through a timestamp, which the executor
/// reads in the zone (its cast of a date takes midnight in UTC).
fn midnight(date: Expr, zoned: &DataType) -> Expr {
    let DataType::Timestamp(unit, _) = zoned else {
        return date;
    };
    Expr::Cast(Cast::new(
        Box::new(Expr::Cast(Cast::new(
            Box::new(date),
            DataType::Timestamp(*unit, None),
        ))),
        zoned.clone(),
    ))
}

/// `e` with its dates compared with, subtracted from or cast to a
/// timestamptz, or truncated (`date_trunc('month', day)`, a timestamptz
/// in Postgres), taken at their midnight in the session's zone `zone`.
fn at_local_midnight(e: Expr, schemas: &[&DFSchema], zone: &str) -> Transformed<Expr> {
    let type_of = |x: &Expr| schemas.iter().find_map(|s| x.get_type(*s).ok());
    let zoned = |t: &Option<DataType>| matches!(t, Some(DataType::Timestamp(_, Some(_))));
    let date = |t: &Option<DataType>| matches!(t, Some(DataType::Date32));
    match e {
        Expr::Cast(Cast { expr, data_type })
            if matches!(data_type, DataType::Timestamp(_, Some(_))) && date(&type_of(&expr)) =>
        {
            Transformed::yes(midnight(*expr, &data_type))
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right })
            if compares(&op) || op == Operator::Minus =>
        {
            let (lt, rt) = (type_of(&left), type_of(&right));
            if zoned(&lt) && date(&rt) {
                let right = Box::new(midnight(*right, lt.as_ref().expect("typed")));
                Transformed::yes(Expr::BinaryExpr(BinaryExpr { left, op, right }))
            } else if date(&lt) && zoned(&rt) {
                let left = Box::new(midnight(*left, rt.as_ref().expect("typed")));
                Transformed::yes(Expr::BinaryExpr(BinaryExpr { left, op, right }))
            } else {
                Transformed::no(Expr::BinaryExpr(BinaryExpr { left, op, right }))
            }
        }
        Expr::Between(Between {
            expr,
            negated,
            low,
            high,
        }) => {
            let t = type_of(&expr);
            if zoned(&t) && (date(&type_of(&low)) || date(&type_of(&high))) {
                let to = t.expect("typed");
                let bound = |b: Box<Expr>| {
                    if date(&type_of(&b)) {
                        Box::new(midnight(*b, &to))
                    } else {
                        b
                    }
                };
                Transformed::yes(Expr::Between(Between {
                    expr,
                    negated,
                    low: bound(low),
                    high: bound(high),
                }))
            } else {
                Transformed::no(Expr::Between(Between {
                    expr,
                    negated,
                    low,
                    high,
                }))
            }
        }
        Expr::ScalarFunction(mut f)
            if f.func.name() == "date_trunc" && f.args.len() == 2 && date(&type_of(&f.args[1])) =>
        {
            let day = f.args.remove(1);
            let zoned = DataType::Timestamp(TimeUnit::Microsecond, Some(zone.into()));
            f.args.push(midnight(day, &zoned));
            Transformed::yes(Expr::ScalarFunction(f))
        }
        e => Transformed::no(e),
    }
}

/// `plan` with every cast of a timestamptz to a timestamp taken at the
/// wall clock, and every date compared with, cast to or truncated as a
/// timestamptz at its midnight in the session's zone `zone`.
pub(crate) fn rewrite(plan: LogicalPlan, zone: &str) -> Result<Transformed<LogicalPlan>> {
    let at = Arc::new(AtTimeZone::udf(zone));
    let both = |x: Expr, schemas: &[&DFSchema]| {
        at_wall_clock(x, schemas, &at).transform_data(|x| Ok(at_local_midnight(x, schemas, zone)))
    };
    super::exactness::rewrite_plan(
        plan,
        |e, schema| {
            let t = e.clone().transform_up(|x| both(x, &[schema])).ok()?;
            t.transformed.then_some(t.data)
        },
        |x, schemas| both(x, schemas),
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
                // A cast `as_postgres_text` did not take (it runs only for
                // statements that name one).
                if to_text(to) && written_by_postgres(&from, false).is_some() {
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

/// `pg_text(x)`: a value as Postgres's output function writes it, in the
/// session's settings (DateStyle, TimeZone, IntervalStyle,
/// extra_float_digits). Postgres writes a value so wherever it becomes
/// text: a cast, `||`, `concat`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct PgText {
    signature: Signature,
    settings: crate::pgtypes::TextSettings,
}

pub(crate) const PG_TEXT: &str = "pg_text";

/// The Postgres type whose output function writes values of `t` unlike
/// the executor's cast to text (`concat`: also booleans, which Postgres
/// writes `t` and `f` there but `true` and `false` in a cast or `||`).
fn written_by_postgres(t: &DataType, concat: bool) -> Option<u32> {
    use crate::pgtypes::oid;
    Some(match t {
        DataType::Timestamp(_, Some(_)) => oid::TIMESTAMPTZ,
        DataType::Timestamp(_, None) => oid::TIMESTAMP,
        DataType::Date32 | DataType::Date64 => oid::DATE,
        DataType::Time32(_) | DataType::Time64(_) => oid::TIME,
        DataType::Float32 => oid::FLOAT4,
        DataType::Float64 => oid::FLOAT8,
        DataType::Interval(_) | DataType::Duration(_) => oid::INTERVAL,
        DataType::Boolean if concat => oid::BOOL,
        _ => return None,
    })
}

impl ScalarUDFImpl for PgText {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        PG_TEXT
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let values = args.args[0].to_array(args.number_rows)?;
        let Some(pg_type) = written_by_postgres(values.data_type(), true) else {
            return exec_err!("{PG_TEXT} of {}", values.data_type());
        };
        let mut out = datafusion::arrow::array::StringBuilder::new();
        let mut text = Vec::new();
        for row in 0..values.len() {
            text.clear();
            let written = crate::pgtypes::write_text(
                &mut text,
                values.as_ref(),
                row,
                pg_type,
                &self.settings,
            )
            .map_err(|e| datafusion::common::DataFusionError::Execution(e.to_string()))?;
            if written {
                out.append_value(String::from_utf8_lossy(&text));
            } else {
                out.append_null();
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// `plan` with the values that become text (cast to text, operands of
/// `||`, arguments of `concat`) written as Postgres writes
/// them ([`PgText`]) where the executor would write them otherwise.
pub(crate) fn as_postgres_text(
    plan: LogicalPlan,
    settings: &crate::pgtypes::TextSettings,
) -> Result<Transformed<LogicalPlan>> {
    let udf = Arc::new(ScalarUDF::new_from_impl(PgText {
        signature: Signature::any(1, Volatility::Immutable),
        settings: settings.clone(),
    }));
    let text = |e: Expr| Expr::ScalarFunction(ScalarFunction::new_udf(udf.clone(), vec![e]));
    super::exactness::rewrite_plan(
        plan,
        |_, _| None,
        |x, schemas| {
            let mut schema = DFSchema::empty();
            for s in schemas {
                schema.merge(s);
            }
            let written = |e: &Expr, concat: bool| {
                e.get_type(&schema)
                    .ok()
                    .and_then(|t| written_by_postgres(&t, concat))
                    .is_some()
            };
            Ok(match x {
                Expr::Cast(Cast { expr, data_type })
                    if to_text(&data_type) && written(&expr, false) =>
                {
                    Transformed::yes(text(*expr))
                }
                Expr::TryCast(TryCast { expr, data_type })
                    if to_text(&data_type) && written(&expr, false) =>
                {
                    Transformed::yes(text(*expr))
                }
                // `||` writes booleans as a cast does, `concat` as `t`/`f`.
                Expr::BinaryExpr(BinaryExpr { left, op, right })
                    if op == Operator::StringConcat
                        && (written(&left, false) || written(&right, false)) =>
                {
                    let side =
                        |e: Box<Expr>| Box::new(if written(&e, false) { text(*e) } else { *e });
                    Transformed::yes(Expr::BinaryExpr(BinaryExpr::new(
                        side(left),
                        op,
                        side(right),
                    )))
                }
                Expr::ScalarFunction(mut f)
                    if f.func.name() == "concat" && f.args.iter().any(|a| written(a, true)) =>
                {
                    f.args = f
                        .args
                        .into_iter()
                        .map(|a| if written(&a, true) { text(a) } else { a })
                        .collect();
                    Transformed::yes(Expr::ScalarFunction(f))
                }
                x => Transformed::no(x),
            })
        },
    )
}
