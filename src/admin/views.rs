//! The system views: `thermocline.sessions`, `thermocline.statements`,
//! `thermocline.tiers` and `thermocline.cache`, answered from thermocline's
//! own figures.
//!
//! A statement naming one is rewritten before it goes to Postgres: each
//! view becomes a derived table of typed `VALUES` holding what thermocline
//! knows now. Postgres then plans, describes and encodes it like any other
//! statement, so filters, joins, ORDER BY, aggregates, both protocols,
//! text and binary results and every client work on the views as on a
//! table.

use std::ops::ControlFlow;
use std::time::SystemTime;

use datafusion::sql::sqlparser::ast::{
    Ident, ObjectName, Query, Statement, TableAlias, TableFactor, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::activity::mask_literals;
use super::metrics::METRICS;
use crate::federation::link::quote_literal as literal;
use crate::server::Shared;

/// A system view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum View {
    Sessions,
    Statements,
    Tiers,
    Cache,
}

impl View {
    fn named(name: &str) -> Option<View> {
        match name {
            "sessions" => Some(View::Sessions),
            "statements" => Some(View::Statements),
            "tiers" => Some(View::Tiers),
            "cache" => Some(View::Cache),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            View::Sessions => "sessions",
            View::Statements => "statements",
            View::Tiers => "tiers",
            View::Cache => "cache",
        }
    }

    /// Column names and Postgres types.
    fn columns(self) -> &'static [(&'static str, &'static str)] {
        match self {
            View::Sessions => &[
                ("conn_id", "bigint"),
                ("backend_pid", "integer"),
                ("user_name", "text"),
                ("database", "text"),
                ("application_name", "text"),
                ("client_addr", "text"),
                ("tls", "boolean"),
                ("connected_at", "timestamptz"),
                ("state", "text"),
                ("statement_start", "timestamptz"),
                ("route", "text"),
                ("statement", "text"),
            ],
            View::Statements => &[
                ("conn_id", "bigint"),
                ("user_name", "text"),
                ("database", "text"),
                ("started_at", "timestamptz"),
                ("duration_ms", "double precision"),
                ("route", "text"),
                ("sqlstate", "text"),
                ("statement", "text"),
            ],
            View::Tiers => &[
                ("table_name", "text"),
                ("time_column", "text"),
                ("hot_window", "interval"),
                ("lake_table", "text"),
                ("watermark", "timestamptz"),
                ("hot_rows", "bigint"),
                ("cold_rows", "bigint"),
                ("cold_files", "bigint"),
                ("snapshot_id", "bigint"),
                ("last_move", "timestamptz"),
                ("passes", "bigint"),
                ("failures", "bigint"),
                ("last_run", "timestamptz"),
                ("state", "text"),
                ("last_error", "text"),
            ],
            View::Cache => &[
                ("kind", "text"),
                ("source", "text"),
                ("user_name", "text"),
                ("statement", "text"),
                ("rows", "bigint"),
                ("bytes", "bigint"),
                ("hits", "bigint"),
                ("created_at", "timestamptz"),
                ("compute_ms", "double precision"),
            ],
        }
    }
}

/// A cheap check, before any parsing: can the statement name a system view?
pub(crate) fn may_name_view(sql: &str) -> bool {
    sql.contains("thermocline") || sql.contains("THERMOCLINE") || sql.contains("Thermocline")
}

/// A parsed statement that reads system views.
pub(crate) struct ViewQuery {
    statements: Vec<Statement>,
    views: Vec<View>,
}

/// The system views a statement reads, or `None` when it reads none (or
/// does not parse: Postgres then reports it).
pub(crate) fn find(sql: &str) -> Option<ViewQuery> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let mut views = Vec::new();
    for s in &statements {
        let _ = datafusion::sql::sqlparser::ast::visit_relations(s, |n: &ObjectName| {
            if let Some(v) = view_of(n)
                && !views.contains(&v)
            {
                views.push(v);
            }
            ControlFlow::<()>::Continue(())
        });
    }
    (!views.is_empty()).then_some(ViewQuery { statements, views })
}

fn view_of(name: &ObjectName) -> Option<View> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| match p.as_ident() {
            Some(i) if i.quote_style.is_some() => i.value.clone(),
            Some(i) => i.value.to_lowercase(),
            None => String::new(),
        })
        .collect();
    match parts.as_slice() {
        [schema, view] if schema == "thermocline" => View::named(view),
        _ => None,
    }
}

/// The statement with each system view replaced by its rows as of now.
pub(crate) async fn rewrite(q: ViewQuery, shared: &Shared, database: &str) -> String {
    let mut bodies = Vec::with_capacity(q.views.len());
    for v in &q.views {
        let rows = match v {
            View::Sessions => sessions(shared),
            View::Statements => statements(shared),
            View::Tiers => tiers(shared, database).await,
            View::Cache => cache(shared).await,
        };
        bodies.push((*v, rows_query(*v, rows)));
    }
    struct Replace(Vec<(View, Query)>);
    impl VisitorMut for Replace {
        type Break = ();
        fn pre_visit_table_factor(&mut self, f: &mut TableFactor) -> ControlFlow<()> {
            if let TableFactor::Table { name, alias, .. } = f
                && let Some(v) = view_of(name)
                && let Some((_, q)) = self.0.iter().find(|(w, _)| *w == v)
            {
                let alias = alias.clone().unwrap_or_else(|| TableAlias {
                    explicit: true,
                    name: Ident::new(v.name()),
                    columns: Vec::new(),
                });
                *f = TableFactor::Derived {
                    lateral: false,
                    subquery: Box::new(q.clone()),
                    alias: Some(alias),
                    sample: None,
                };
            }
            ControlFlow::Continue(())
        }
    }
    let mut replace = Replace(
        bodies
            .into_iter()
            .filter_map(|(v, sql)| {
                let mut parsed = Parser::parse_sql(&PostgreSqlDialect {}, &sql).ok()?;
                match parsed.pop() {
                    Some(Statement::Query(q)) => Some((v, *q)),
                    _ => None,
                }
            })
            .collect(),
    );
    let mut statements = q.statements;
    let _ = statements.visit(&mut replace);
    statements
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(";\n")
}

/// A cell: an SQL expression of the column's type, or NULL.
type Row = Vec<Option<String>>;

fn rows_query(view: View, rows: Vec<Row>) -> String {
    let columns = view.columns();
    let names = columns
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ");
    if rows.is_empty() {
        let nulls = columns
            .iter()
            .map(|(n, t)| format!("NULL::{t} AS {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        return format!("SELECT {nulls} WHERE false");
    }
    let values = rows
        .iter()
        .map(|row| {
            let cells = row
                .iter()
                .zip(columns)
                .map(|(cell, (_, t))| match cell {
                    Some(e) => format!("{e}::{t}"),
                    None => format!("NULL::{t}"),
                })
                .collect::<Vec<_>>()
                .join(", ");
            format!("({cells})")
        })
        .collect::<Vec<_>>()
        .join(", ");
    // As pg_stat_activity does, statement texts of other users' sessions
    // show only to members of pg_read_all_stats (and superusers).
    let select = columns
        .iter()
        .map(|(n, _)| match *n {
            "statement" => "CASE WHEN v.user_name = session_user \
                 OR pg_catalog.pg_has_role(session_user, 'pg_read_all_stats', 'MEMBER') \
                 THEN v.statement END AS statement"
                .to_string(),
            n => format!("v.{n}"),
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("SELECT {select} FROM (VALUES {values}) AS v({names})")
}

fn time(t: SystemTime) -> String {
    let us = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    micros_time(us).unwrap_or_else(|| "NULL".into())
}

fn micros_time(us: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| literal(&t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string()))
}

/// A whole number of days, hours, minutes or seconds, as Postgres reads an interval.
fn interval(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 86_400 == 0 => format!("{} days", s / 86_400),
        s if s % 3_600 == 0 => format!("{} hours", s / 3_600),
        s if s % 60 == 0 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}

fn sessions(shared: &Shared) -> Vec<Row> {
    shared
        .activity
        .sessions()
        .iter()
        .map(|s| {
            let current = s.current();
            let pid = s.backend_pid.load(std::sync::atomic::Ordering::Relaxed);
            vec![
                Some(s.conn_id.to_string()),
                (pid != 0).then(|| pid.to_string()),
                Some(literal(&s.user)),
                Some(literal(&s.database)),
                Some(literal(&s.application_name)),
                Some(literal(&s.client_addr)),
                Some(s.tls.to_string()),
                Some(time(s.connected_at)),
                Some(literal(s.state())),
                current.as_ref().map(|c| time(c.started_at)),
                current.as_ref().map(|c| literal(c.route.as_str())),
                current.as_ref().map(|c| literal(&mask_literals(&c.text))),
            ]
        })
        .collect()
}

fn statements(shared: &Shared) -> Vec<Row> {
    shared
        .activity
        .recent()
        .iter()
        .map(|r| {
            vec![
                Some(r.conn_id.to_string()),
                Some(literal(&r.user)),
                Some(literal(&r.database)),
                Some(time(r.started_at)),
                Some(format!("{}", r.duration.as_secs_f64() * 1e3)),
                Some(literal(r.route.as_str())),
                r.sqlstate.as_deref().map(literal),
                Some(literal(&mask_literals(&r.text))),
            ]
        })
        .collect()
}

async fn tiers(shared: &Shared, database: &str) -> Vec<Row> {
    let federations = shared.federations();
    let Some(federation) = federations.get(database) else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    for t in &federation.tables {
        let qualified = t.def.qualified();
        let figures = METRICS.tier_figures(&qualified).unwrap_or_default();
        let (mut watermark, mut cold_rows, mut cold_files, mut snapshot, mut last_move) =
            (None, None, None, None, None);
        let mut lake_error = None;
        match federation.lake.load(t).await {
            Ok(Some(table)) => {
                watermark = crate::lake::watermark(&table).and_then(micros_time);
                if let Some(s) = table.metadata().current_snapshot() {
                    let summary = &s.summary().additional_properties;
                    cold_rows = summary.get("total-records").cloned();
                    cold_files = summary.get("total-data-files").cloned();
                    snapshot = Some(s.snapshot_id().to_string());
                    last_move = micros_time(s.timestamp_ms() * 1000);
                } else {
                    (cold_rows, cold_files) = (Some("0".into()), Some("0".into()));
                }
            }
            Ok(None) => {}
            Err(e) => lake_error = Some(format!("the lake is unreachable: {e}")),
        }
        let state = if lake_error.is_some() {
            "lake unavailable"
        } else if figures.last_error.is_some() {
            "failing"
        } else if figures.passes == 0 {
            "idle"
        } else {
            "ok"
        };
        rows.push(vec![
            Some(literal(&qualified)),
            Some(literal(&t.def.time_column)),
            Some(literal(&interval(t.def.hot_window))),
            Some(literal(&format!(
                "{}.{}",
                t.def.lake_namespace, t.def.lake_table
            ))),
            watermark,
            Some(format!("(SELECT count(*) FROM {qualified})")),
            cold_rows.map(|n| literal(&n)),
            cold_files.map(|n| literal(&n)),
            snapshot,
            last_move,
            Some(figures.passes.to_string()),
            Some(figures.failures.to_string()),
            figures.last_run.map(time),
            Some(literal(state)),
            lake_error.or(figures.last_error).map(|e| literal(&e)),
        ]);
    }
    rows
}

/// One row per entry of the cache: cold partial results, then whole
/// answers.
async fn cache(shared: &Shared) -> Vec<Row> {
    let results = shared.cache.results().await;
    let results = results.iter().map(|r| {
        vec![
            Some(literal("result")),
            Some(literal(&format!(
                "answer, {:.1} s old",
                r.computed.elapsed().as_secs_f64()
            ))),
            Some(literal(&r.user)),
            Some(literal(&r.statement)),
            Some(r.rows.to_string()),
            Some(r.data.len().to_string()),
            Some(
                r.hits
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .to_string(),
            ),
            Some(time(r.created)),
            Some(format!("{}", r.compute.as_secs_f64() * 1000.0)),
        ]
    });
    shared
        .cache
        .entries()
        .await
        .iter()
        .map(|p| {
            vec![
                Some(literal(if p.hot.is_some() {
                    "hot partial"
                } else {
                    "cold partial"
                })),
                Some(literal(&p.source)),
                Some(literal(&p.user)),
                Some(literal(&p.statement)),
                Some(p.rows.to_string()),
                Some(p.bytes.to_string()),
                Some(
                    p.hits
                        .load(std::sync::atomic::Ordering::Relaxed)
                        .to_string(),
                ),
                Some(time(p.created)),
                Some(format!("{}", p.compute.as_secs_f64() * 1000.0)),
            ]
        })
        .chain(results)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_thermocline_views_are_found() {
        assert!(find("SELECT * FROM thermocline.sessions").is_some());
        assert!(
            find("select 1 from \"thermocline\".statements s join thermocline.tiers t on true")
                .is_some()
        );
        assert!(find("SELECT * FROM thermocline.other").is_none());
        assert!(find("SELECT * FROM sessions").is_none());
        assert!(find("SELECT 'thermocline.sessions'").is_none());
        let q = find("SELECT * FROM thermocline.statements s, thermocline.tiers").unwrap();
        assert_eq!(q.views, vec![View::Statements, View::Tiers]);
    }

    #[test]
    fn empty_views_keep_their_types() {
        assert_eq!(
            rows_query(View::Statements, Vec::new()),
            "SELECT NULL::bigint AS conn_id, NULL::text AS user_name, NULL::text AS database, \
             NULL::timestamptz AS started_at, NULL::double precision AS duration_ms, \
             NULL::text AS route, NULL::text AS sqlstate, NULL::text AS statement WHERE false"
        );
    }
}
