//! Filters written as Postgres SQL for the hot scans: only what thermocline
//! can write exactly (DataFusion re-applies every filter above the scan).

use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};

use super::scan::ScanColumn;
use crate::catalog::quote_ident;

/// A filter as Postgres SQL, for the filters thermocline can write exactly:
/// comparisons, AND/OR/NOT, IS [NOT] NULL, IN lists and BETWEEN over
/// columns, literals and the JSON operators. String comparisons other than equality are left
/// to the executor (Postgres would compare under the column's collation).
pub(crate) fn to_pg_sql(e: &Expr, columns: &[ScanColumn]) -> Option<String> {
    match e {
        Expr::Column(c) => columns
            .iter()
            .find(|x| x.name == c.name)
            .map(|x| quote_ident(&x.name)),
        Expr::Literal(v, _) => literal_sql(v),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let op_sql = operator_sql(op)?;
            let stringy = |x: &Expr| {
                matches!(
                    x,
                    Expr::Literal(
                        ScalarValue::Utf8(_) | ScalarValue::Utf8View(_) | ScalarValue::LargeUtf8(_),
                        _
                    )
                )
            };
            if !matches!(
                op,
                Operator::Eq | Operator::NotEq | Operator::And | Operator::Or
            ) && (stringy(left) || stringy(right))
            {
                return None;
            }
            Some(format!(
                "({} {op_sql} {})",
                to_pg_sql(left, columns)?,
                to_pg_sql(right, columns)?
            ))
        }
        Expr::ScalarFunction(f) => super::json::pg_sql(f, |x| to_pg_sql(x, columns))
            .or_else(|| super::arrays::pg_sql(f, columns)),
        Expr::Not(x) => Some(format!("(NOT {})", to_pg_sql(x, columns)?)),
        Expr::IsNull(x) => Some(format!("({} IS NULL)", to_pg_sql(x, columns)?)),
        Expr::IsNotNull(x) => Some(format!("({} IS NOT NULL)", to_pg_sql(x, columns)?)),
        Expr::InList(InList {
            expr,
            list,
            negated,
        }) => {
            let items = list
                .iter()
                .map(|x| to_pg_sql(x, columns))
                .collect::<Option<Vec<_>>>()?;
            if items.is_empty() {
                return None;
            }
            Some(format!(
                "({} {}IN ({}))",
                to_pg_sql(expr, columns)?,
                if *negated { "NOT " } else { "" },
                items.join(", ")
            ))
        }
        Expr::Between(Between {
            expr,
            negated,
            low,
            high,
        }) => {
            if matches!(low.as_ref(), Expr::Literal(ScalarValue::Utf8(_), _)) {
                return None;
            }
            Some(format!(
                "({} {}BETWEEN {} AND {})",
                to_pg_sql(expr, columns)?,
                if *negated { "NOT " } else { "" },
                to_pg_sql(low, columns)?,
                to_pg_sql(high, columns)?
            ))
        }
        _ => None,
    }
}

/// Comparison and boolean operators, which mean the same in Postgres
/// (strings aside: Postgres orders them by collation).
pub(crate) fn operator_sql(op: &Operator) -> Option<&'static str> {
    Some(match op {
        Operator::Eq => "=",
        Operator::NotEq => "<>",
        Operator::Lt => "<",
        Operator::LtEq => "<=",
        Operator::Gt => ">",
        Operator::GtEq => ">=",
        Operator::And => "AND",
        Operator::Or => "OR",
        Operator::IsDistinctFrom => "IS DISTINCT FROM",
        Operator::IsNotDistinctFrom => "IS NOT DISTINCT FROM",
        _ => return None,
    })
}

pub(crate) fn literal_sql(v: &ScalarValue) -> Option<String> {
    use ScalarValue::*;
    let ts = |us: i64| {
        chrono::DateTime::<chrono::Utc>::from_timestamp_micros(us)
            .map(|d| d.format("%Y-%m-%d %H:%M:%S%.6f").to_string())
    };
    Some(match v {
        Boolean(Some(b)) => b.to_string(),
        Int16(Some(i)) => i.to_string(),
        Int32(Some(i)) => i.to_string(),
        Int64(Some(i)) => i.to_string(),
        Float64(Some(f)) if f.is_finite() => format!("'{f:e}'::float8"),
        Float32(Some(f)) if f.is_finite() => format!("'{f:e}'::float4"),
        Decimal128(Some(x), _, s) => {
            let mut out = Vec::new();
            crate::pgtypes::write_decimal(&mut out, *x, *s);
            format!("{}::numeric", String::from_utf8(out).ok()?)
        }
        Utf8(Some(s)) | Utf8View(Some(s)) | LargeUtf8(Some(s)) => {
            if s.contains('\0') {
                return None;
            }
            super::link::quote_literal(s)
        }
        Date32(Some(d)) => {
            let date = chrono::NaiveDate::from_num_days_from_ce_opt(*d + 719_163)?;
            format!("'{}'::date", date.format("%Y-%m-%d"))
        }
        TimestampMicrosecond(Some(us), tz) => with_zone(ts(*us)?, tz),
        TimestampMillisecond(Some(ms), tz) => with_zone(ts(ms.checked_mul(1000)?)?, tz),
        TimestampSecond(Some(s), tz) => with_zone(ts(s.checked_mul(1_000_000)?)?, tz),
        TimestampNanosecond(Some(ns), tz) if ns % 1000 == 0 => with_zone(ts(ns / 1000)?, tz),
        _ => return None,
    })
}

/// A timestamp literal: an instant for zoned values, wall-clock otherwise.
fn with_zone(text: String, tz: &Option<Arc<str>>) -> String {
    match tz {
        Some(_) => format!("'{text}+00'::timestamptz"),
        None => format!("'{text}'::timestamp"),
    }
}
