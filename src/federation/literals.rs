//! Dates and times written as Postgres reads them but the executor does
//! not.
//!
//! A string compared with a date or timestamp column is read as one:
//! Postgres reads `'2025-03-10 12:00'`, `'03/10/2025'` (in the session's
//! DateStyle), `'yesterday'` or `'epoch'`; the executor reads ISO 8601
//! with seconds only. Such a string is sent to Postgres, in the session's
//! TimeZone, DateStyle and transaction, and replaced by its value in ISO
//! 8601 before the statement is planned; a string Postgres rejects is
//! Postgres's error.

use std::collections::HashMap;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::logical_expr::{Between, BinaryExpr, Expr, ExprSchemable, LogicalPlan};

use super::link::{LinkError, quote_literal};
use super::scan::ScanContext;

/// The Postgres type a string compared with `t` is read as.
fn pg_type(t: &DataType) -> Option<&'static str> {
    match t {
        DataType::Timestamp(_, Some(_)) => Some("timestamptz"),
        DataType::Timestamp(_, None) => Some("timestamp"),
        DataType::Date32 => Some("date"),
        DataType::Interval(_) | DataType::Duration(_) => Some("interval"),
        _ => None,
    }
}

/// Whether the executor reads `s` as a value of `pg_type` itself.
fn readable(s: &str, pg_type: &str) -> bool {
    match pg_type {
        // Postgres's interval syntax is its own ('1 mon', '-1 days
        // +02:00', '1-2', 'P1D'): always read by Postgres.
        "interval" => false,
        "date" => chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").is_ok(),
        _ => datafusion::arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(s.trim())
            .is_ok(),
    }
}

fn string(e: &Expr) -> Option<&str> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)),
            _,
        ) => Some(s),
        _ => None,
    }
}

/// The strings of `e` (a comparison, BETWEEN or IN) read as a date or
/// timestamp, with the type each is read as.
fn compared<'e>(e: &'e Expr, schema: &DFSchema) -> Vec<(&'e str, &'static str)> {
    let typed = |x: &Expr| x.get_type(schema).ok().as_ref().and_then(pg_type);
    let mut found = Vec::new();
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) if super::casts::compares(op) => {
            for (a, b) in [(left, right), (right, left)] {
                if let (Some(s), Some(t)) = (string(a), typed(b)) {
                    found.push((s, t));
                }
            }
        }
        Expr::Between(Between {
            expr, low, high, ..
        }) => {
            if let Some(t) = typed(expr) {
                found.extend(
                    [low, high]
                        .into_iter()
                        .filter_map(|x| string(x))
                        .map(|s| (s, t)),
                );
            }
        }
        Expr::InList(l) => {
            if let Some(t) = typed(&l.expr) {
                found.extend(l.list.iter().filter_map(string).map(|s| (s, t)));
            }
        }
        _ => {}
    }
    found
}

/// The strings of `plan` compared with a date or timestamp that the
/// executor cannot read.
fn unreadable(plan: &LogicalPlan) -> Vec<(String, &'static str)> {
    let mut found: Vec<(String, &'static str)> = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        let schema = super::casts::merged_input_schema(node);
        node.apply_expressions(|e| {
            e.apply(|x| {
                for (s, t) in compared(x, &schema) {
                    if !readable(s, t) && !found.iter().any(|(f, ft)| f == s && *ft == t) {
                        found.push((s.to_string(), t));
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })?;
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// `plan` with the strings compared with dates and timestamps that the
/// executor cannot read replaced by Postgres's reading of them (asked on
/// the scan's link).
pub(super) async fn read_by_postgres(
    plan: LogicalPlan,
    ctx: &ScanContext,
) -> std::result::Result<Transformed<LogicalPlan>, super::Failure> {
    let strings = unreadable(&plan);
    if strings.is_empty() {
        return Ok(Transformed::no(plan));
    }
    let columns: Vec<String> = strings
        .iter()
        .map(|(s, t)| match *t {
            // Its parts, from its binary form.
            "interval" => super::intervals::read_by_postgres(s),
            _ => format!("pg_catalog.to_jsonb({}::{t}) #>> '{{}}'", quote_literal(s)),
        })
        .collect();
    let rows = {
        let mut link = ctx.link.lock().await;
        link.rows(&format!("SELECT {}", columns.join(", ")))
            .await
            .map_err(super::Failure::Link)?
    };
    let Some(row) = rows.into_iter().next() else {
        return Err(super::Failure::Link(LinkError::Gone));
    };
    let read: HashMap<(String, &'static str), ScalarValue> = strings
        .into_iter()
        .zip(row)
        .filter_map(|(k, v)| {
            let v = v?;
            let value = match k.1 {
                "interval" => ScalarValue::IntervalMonthDayNano(Some(interval_of_hex(&v)?)),
                _ => ScalarValue::Utf8(Some(v)),
            };
            Some((k, value))
        })
        .collect();
    let replace = |e: Expr, schemas: &[&DFSchema]| -> Result<Transformed<Expr>> {
        // Each comparison's own strings, in place.
        let mut pairs = Vec::new();
        for schema in schemas {
            pairs.extend(compared(&e, schema).into_iter().filter_map(|(s, t)| {
                read.get(&(s.to_string(), t))
                    .map(|v| (s.to_string(), v.clone()))
            }));
        }
        if pairs.is_empty() {
            return Ok(Transformed::no(e));
        }
        e.map_children(|c| {
            Ok(
                match string(&c).and_then(|s| pairs.iter().find(|(p, _)| p == s)) {
                    Some((_, v)) => Transformed::yes(Expr::Literal(v.clone(), None)),
                    None => Transformed::no(c),
                },
            )
        })
    };
    let rewritten =
        super::exactness::rewrite_plan(plan, |_, _| None, |e, schemas| replace(e, schemas))?;
    Ok(rewritten)
}

/// An interval from the hex of Postgres's binary form (`interval_send`).
fn interval_of_hex(hex: &str) -> Option<datafusion::arrow::datatypes::IntervalMonthDayNano> {
    crate::pgtypes::interval_from_binary(&crate::pgtypes::from_hex(hex)?).ok()
}
