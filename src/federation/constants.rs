//! Calls the executor cannot compute as Postgres does, evaluated once by
//! Postgres when all their arguments are constants.
//!
//! BI tools write their time filters with Postgres's formatting functions:
//! Superset's `created_at >= TO_TIMESTAMP('2025-01-01 00:00:00.000000',
//! 'YYYY-MM-DD HH24:MI:SS.US')`, `TO_DATE('2025-01-01', 'YYYY-MM-DD')`,
//! `to_char(now() - interval '90 days', 'YYYY-MM')`. Their format strings
//! are Postgres's own, so such a call is sent to Postgres, on the session's
//! connection and in the statement's transaction (its TimeZone, DateStyle
//! and `now()`), and replaced by the value as a typed literal before the
//! statement is planned. A call that reads a column, a parameter or a
//! subquery, or sits inside a CASE (which may never evaluate it), is left
//! as it is (and refused, as before).

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Statement, Value, Visit, VisitMut,
    Visitor, VisitorMut,
};

use super::link::{LinkError, quote_literal};
use super::scan::ScanContext;

/// Functions evaluated by Postgres when their arguments are constants.
const FOLDED: &[&str] = &[
    "to_timestamp",
    "to_date",
    "to_char",
    "make_date",
    "make_timestamp",
    "make_timestamptz",
];

/// Functions that may appear in their arguments: the same value for the
/// whole statement.
const STABLE: &[&str] = &[
    "now",
    "current_date",
    "current_timestamp",
    "localtimestamp",
    "date_trunc",
    "transaction_timestamp",
];

fn name_of(f: &datafusion::sql::sqlparser::ast::Function) -> String {
    f.name
        .0
        .last()
        .map(|p| p.to_string().trim_matches('"').to_lowercase())
        .unwrap_or_default()
}

/// A call to a function of `names` whose arguments are all constant.
fn call_of(e: &Expr, names: &[&str]) -> bool {
    let Expr::Function(f) = e else {
        return false;
    };
    if f.over.is_some() || f.filter.is_some() || !names.contains(&name_of(f).as_str()) {
        return false;
    }
    match &f.args {
        FunctionArguments::None => true,
        FunctionArguments::Subquery(_) => false,
        FunctionArguments::List(list) => {
            list.duplicate_treatment.is_none()
                && list.clauses.is_empty()
                && list.args.iter().all(|a| match a {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) => constant(x),
                    _ => false,
                })
        }
    }
}

/// An expression of literals and stable functions only.
fn constant(e: &Expr) -> bool {
    match e {
        Expr::Value(v) => !matches!(v.value, Value::Placeholder(_)),
        Expr::TypedString { .. } => true,
        Expr::Interval(i) => constant(&i.value),
        Expr::Cast { expr, .. } | Expr::Nested(expr) | Expr::UnaryOp { expr, .. } => constant(expr),
        Expr::BinaryOp { left, right, .. } => constant(left) && constant(right),
        Expr::AtTimeZone {
            timestamp,
            time_zone,
        } => constant(timestamp) && constant(time_zone),
        Expr::Function(_) => call_of(e, FOLDED) || call_of(e, STABLE),
        _ => false,
    }
}

/// Finds the outermost calls to fold, outside any CASE.
#[derive(Default)]
struct Finder {
    found: Vec<String>,
    in_case: usize,
    in_fold: usize,
}

impl Visitor for Finder {
    type Break = ();

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if matches!(e, Expr::Case { .. }) {
            self.in_case += 1;
        } else if call_of(e, FOLDED) {
            if self.in_case == 0 && self.in_fold == 0 {
                let text = e.to_string();
                if !self.found.contains(&text) {
                    self.found.push(text);
                }
            }
            self.in_fold += 1;
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if matches!(e, Expr::Case { .. }) {
            self.in_case -= 1;
        } else if call_of(e, FOLDED) {
            self.in_fold -= 1;
        }
        ControlFlow::Continue(())
    }
}

/// Puts each folded call's value in its place.
struct Replacer<'a>(&'a [(String, Expr)]);

impl VisitorMut for Replacer<'_> {
    type Break = ();

    fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        if let Expr::Function(_) = e {
            let text = e.to_string();
            if let Some((_, value)) = self.0.iter().find(|(t, _)| *t == text) {
                *e = value.clone();
            }
        }
        ControlFlow::Continue(())
    }
}

/// The literal the executor reads as Postgres's value `json` (the value
/// as `to_jsonb` writes it: ISO 8601 whatever the DateStyle) of type
/// `ty`; `None` for any other type or a value it would not read alike
/// (infinity, years past 9999 or before 1).
fn literal(ty: &str, json: Option<&str>) -> Option<String> {
    let sql_type = match ty {
        "timestamp with time zone" => "TIMESTAMP WITH TIME ZONE",
        "timestamp without time zone" => "TIMESTAMP",
        "date" => "DATE",
        "text" => "TEXT",
        _ => return None,
    };
    let Some(v) = json else {
        return Some(format!("CAST(NULL AS {sql_type})"));
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let date_ok = |d: &str| {
        let p: Vec<&str> = d.split('-').collect();
        p.len() == 3 && p[0].len() == 4 && p[0] != "0000" && p.iter().all(|x| digits(x))
    };
    let time_ok = |t: &str| {
        let (hms, frac) = t.split_once('.').unwrap_or((t, "0"));
        hms.split(':').count() == 3 && hms.split(':').all(digits) && digits(frac)
    };
    let ok = match ty {
        "text" => true,
        "date" => date_ok(v),
        "timestamp without time zone" => v
            .split_once('T')
            .is_some_and(|(d, t)| date_ok(d) && time_ok(t)),
        _ => v.split_once('T').is_some_and(|(d, t)| {
            // An offset of whole minutes: `+05:30`.
            let at = t.rfind(['+', '-']).unwrap_or(0);
            let (clock, offset) = t.split_at(at);
            let offset = offset.trim_start_matches(['+', '-']);
            date_ok(d)
                && time_ok(clock)
                && offset.len() == 5
                && offset.split(':').count() == 2
                && offset.split(':').all(digits)
        }),
    };
    ok.then(|| format!("CAST({} AS {sql_type})", quote_literal(v)))
}

/// `sql` folded as [`fold`] does, when it is one statement.
pub(super) async fn folded(sql: &str, ctx: &ScanContext) -> Result<Option<String>, LinkError> {
    match super::sqltext::parse(sql).as_deref() {
        Ok([statement]) => fold(statement, ctx).await,
        _ => Ok(None),
    }
}

/// `statement` with its constant calls to Postgres's formatting functions
/// replaced by their values, computed by Postgres on the scan's link;
/// `None` when there is none. An error Postgres raises computing one (a
/// malformed date, say) is the statement's.
pub(super) async fn fold(
    statement: &Statement,
    ctx: &ScanContext,
) -> Result<Option<String>, LinkError> {
    let mut finder = Finder::default();
    let _ = statement.visit(&mut finder);
    if finder.found.is_empty() {
        return Ok(None);
    }
    let columns: Vec<String> = finder
        .found
        .iter()
        .map(|e| format!("pg_catalog.pg_typeof({e})::text, pg_catalog.to_jsonb({e}) #>> '{{}}'"))
        .collect();
    let rows = {
        let mut link = ctx.link.lock().await;
        link.rows(&format!("SELECT {}", columns.join(", "))).await?
    };
    let Some(row) = rows.into_iter().next() else {
        return Ok(None);
    };
    let text = |i: usize| row.get(i).cloned().flatten();
    let mut values = Vec::new();
    for (i, call) in finder.found.iter().enumerate() {
        let ty = text(2 * i).unwrap_or_default();
        let Some(sql) = literal(&ty, text(2 * i + 1).as_deref()) else {
            continue;
        };
        let Some(expr) = super::exactness::parse_expr(&sql) else {
            continue;
        };
        values.push((call.clone(), expr));
    }
    if values.is_empty() {
        return Ok(None);
    }
    let mut folded = statement.clone();
    let _ = VisitMut::visit(&mut folded, &mut Replacer(&values));
    Ok(Some(folded.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(sql: &str) -> Vec<String> {
        let statement = crate::federation::sqltext::parse(sql).unwrap().remove(0);
        let mut finder = Finder::default();
        let _ = statement.visit(&mut finder);
        finder.found
    }

    #[test]
    fn only_outermost_constant_calls_outside_case_are_folded() {
        assert_eq!(
            found(
                "SELECT count(*) FROM t WHERE c >= TO_TIMESTAMP('2025-01-01', 'YYYY-MM-DD') \
                 AND c < to_date(to_char(now() - interval '1 day', 'YYYY-MM-DD'), 'YYYY-MM-DD')"
            ),
            vec![
                "TO_TIMESTAMP('2025-01-01', 'YYYY-MM-DD')".to_string(),
                "to_date(to_char(now() - INTERVAL '1 day', 'YYYY-MM-DD'), 'YYYY-MM-DD')"
                    .to_string(),
            ]
        );
        assert!(found("SELECT to_char(c, 'YYYY') FROM t").is_empty());
        assert!(found("SELECT to_date($1, 'YYYY-MM-DD') FROM t").is_empty());
        assert!(found("SELECT to_char(clock_timestamp(), 'SS') FROM t").is_empty());
        assert!(found("SELECT CASE WHEN c > 0 THEN to_date('x', 'YYYY') END FROM t").is_empty());
    }

    #[test]
    fn values_become_literals_only_when_read_alike() {
        assert_eq!(
            literal(
                "timestamp with time zone",
                Some("2025-01-01T00:00:00-08:00")
            )
            .as_deref(),
            Some("CAST('2025-01-01T00:00:00-08:00' AS TIMESTAMP WITH TIME ZONE)")
        );
        assert_eq!(
            literal("date", Some("2025-03-04")).as_deref(),
            Some("CAST('2025-03-04' AS DATE)")
        );
        assert_eq!(
            literal("text", Some("it's")).as_deref(),
            Some("CAST('it''s' AS TEXT)")
        );
        assert_eq!(literal("date", None).as_deref(), Some("CAST(NULL AS DATE)"));
        assert_eq!(literal("date", Some("infinity")), None);
        assert_eq!(
            literal(
                "timestamp with time zone",
                Some("1890-01-01T00:00:00+00:53:28")
            ),
            None
        );
        assert_eq!(
            literal("timestamp without time zone", Some("12025-01-01T00:00:00")),
            None
        );
        assert_eq!(literal("numeric", Some("1")), None);
    }
}
