//! What an incremental refresh recomputes: the time buckets of a view
//! from the earliest time whose rows may have changed.

use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, DuplicateTreatment, Expr, FunctionArg, FunctionArgExpr, FunctionArguments,
    GroupByExpr, SelectItem, SetExpr, Statement, TableFactor, Value, visit_relations,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::{Definition, time_type};
use crate::federation::hotcache::{self, Snapshot};
use crate::federation::link::{LinkError, PgLink, quote_literal};
use crate::tiering::TieredTable;

/// How a view is refreshed incrementally: by its bucket column, holding
/// `date_trunc(unit, time column)`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Buckets {
    /// The bucket's position among the view's columns.
    pub position: usize,
    pub unit: String,
    /// The time column as the query writes it.
    pub time: Expr,
}

/// The tiered table a query reads, and its buckets when it can be refreshed
/// incrementally.
pub(super) fn analyze<'t>(
    query: &str,
    tables: &'t [Arc<TieredTable>],
) -> Option<(&'t Arc<TieredTable>, Option<Buckets>)> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, query).ok()?;
    let [statement] = statements.as_slice() else {
        return None;
    };
    let mut names = Vec::new();
    let _ = visit_relations(statement, |n| {
        names.push(n.clone());
        std::ops::ControlFlow::<()>::Continue(())
    });
    let last = |n: &datafusion::sql::sqlparser::ast::ObjectName| {
        n.0.last()
            .and_then(|p| p.as_ident())
            .map(|i| i.value.to_lowercase())
    };
    let tiered = names.iter().find_map(|n| {
        let table = last(n)?;
        tables.iter().find(|t| t.def.table == table)
    })?;
    Some((tiered, buckets(statement, tiered, names.len())))
}

fn buckets(statement: &Statement, t: &TieredTable, relations: usize) -> Option<Buckets> {
    let Statement::Query(q) = statement else {
        return None;
    };
    if relations != 1 || q.limit_clause.is_some() || q.fetch.is_some() || q.with.is_some() {
        return None;
    }
    let SetExpr::Select(select) = q.body.as_ref() else {
        return None;
    };
    let [from] = select.from.as_slice() else {
        return None;
    };
    if !from.joins.is_empty() || !matches!(from.relation, TableFactor::Table { .. }) {
        return None;
    }
    let text = statement.to_string().to_lowercase();
    if text.contains(" over ") || text.contains(" over(") {
        return None;
    }
    // A bucket's rows can change without a write when the query reads the
    // clock or chance.
    const MOVING: [&str; 8] = [
        "now(",
        "current_date",
        "current_timestamp",
        "localtimestamp",
        "clock_timestamp",
        "statement_timestamp",
        "transaction_timestamp",
        "random(",
    ];
    if MOVING.iter().any(|m| text.contains(m)) {
        return None;
    }
    let GroupByExpr::Expressions(group, _) = &select.group_by else {
        return None;
    };
    let exprs: Vec<Option<&Expr>> = select
        .projection
        .iter()
        .map(|item| match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => Some(e),
            _ => None,
        })
        .collect();
    for g in group {
        // GROUP BY n names the n-th output column.
        let (expr, position) = match g {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => {
                    let i = n.parse::<usize>().ok()?.checked_sub(1)?;
                    ((*exprs.get(i)?)?, i)
                }
                _ => continue,
            },
            e => match exprs.iter().position(|p| *p == Some(e)) {
                Some(i) => (e, i),
                None => continue,
            },
        };
        if let Some((unit, time)) = date_trunc_of(expr, &t.time_column().name) {
            return Some(Buckets {
                position,
                unit,
                time,
            });
        }
    }
    None
}

/// Units whose buckets are whole days, in any time zone.
const WHOLE_DAYS: [&str; 7] = [
    "week",
    "month",
    "quarter",
    "year",
    "decade",
    "century",
    "millennium",
];

/// How a view is kept in parts: for each day of its time column and each
/// group of the view, the partial state of each aggregate (`count`, `sum`,
/// `min`, `max`). A refresh recomputes the parts of the days written and
/// merges the buckets that hold them from their days' parts, rather than
/// recomputing whole buckets from rows. A bucket is whole days, so the
/// parts hold no bucket: it is the bucket of their day.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Parts {
    /// The parts, computed from the view's rows: `part` (the day), `k1`…
    /// (the view's other group keys), `a1`… (the aggregates' states).
    pub query: String,
    /// The query's FROM and WHERE, and its columns after `part`.
    from: String,
    selection: Option<String>,
    items: Vec<String>,
    /// The time column as the query writes it.
    time: String,
    /// The bucket of a part.
    bucket: String,
    /// The view's columns, from the parts.
    columns: Vec<String>,
    keys: usize,
}

impl Parts {
    /// The parts of the days `days` (their starts, ascending literals),
    /// of the rows `condition` keeps: a query for each day, on the range of
    /// its times. Postgres's date_trunc of a timestamptz works out the
    /// calendar for every row, at more cost than the rest of the query.
    pub fn of_days(&self, days: &[String], condition: &str) -> String {
        let time = &self.time;
        let group = if self.keys == 0 {
            // One row for a day with rows, none for one without.
            " HAVING count(*) > 0".to_string()
        } else {
            let keys: Vec<String> = (2..=self.keys + 1).map(|i| i.to_string()).collect();
            format!(" GROUP BY {}", keys.join(", "))
        };
        let selection = self
            .selection
            .as_ref()
            .map_or(String::new(), |w| format!("({w}) AND "));
        let each: Vec<String> = days
            .iter()
            .enumerate()
            .map(|(i, day)| {
                let next = days
                    .get(i + 1)
                    .map_or(String::new(), |n| format!(" AND {time} < {n}"));
                format!(
                    "SELECT {day} AS part, {} FROM {} WHERE {selection}({condition}) AND {time} >= {day}{next}{group}",
                    self.items.join(", "),
                    self.from,
                )
            })
            .collect();
        each.join(" UNION ALL ")
    }

    /// The view's rows from the parts in `table`, those `condition` (on
    /// `part`) keeps.
    pub fn merge(&self, table: &str, condition: Option<&str>) -> String {
        let mut group = vec![self.bucket.clone()];
        group.extend((1..=self.keys).map(|i| format!("k{i}")));
        format!(
            "SELECT {} FROM {table}{} GROUP BY {}",
            self.columns.join(", "),
            condition.map_or(String::new(), |c| format!(" WHERE {c}")),
            group.join(", ")
        )
    }
}

/// How `query`, refreshed by `buckets`, is kept in parts; `None` when its
/// buckets are not whole days or it computes more than group keys and
/// `count`, `sum`, `min` and `max` of them.
pub(super) fn parts(query: &str, buckets: &Buckets) -> Option<Parts> {
    if !WHOLE_DAYS.contains(&buckets.unit.as_str()) {
        return None;
    }
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, query).ok()?;
    let [Statement::Query(q)] = statements.as_slice() else {
        return None;
    };
    let SetExpr::Select(select) = q.body.as_ref() else {
        return None;
    };
    if select.distinct.is_some()
        || select.having.is_some()
        || select.qualify.is_some()
        || !select.named_window.is_empty()
        || select.into.is_some()
    {
        return None;
    }
    let GroupByExpr::Expressions(group, modifiers) = &select.group_by else {
        return None;
    };
    if !modifiers.is_empty() {
        return None;
    }
    let items: Vec<(&Expr, Option<&str>)> = select
        .projection
        .iter()
        .map(|item| match item {
            SelectItem::UnnamedExpr(e) => Some((e, None)),
            SelectItem::ExprWithAlias { expr, alias } => Some((expr, Some(alias.value.as_str()))),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let bucket_expr = items.get(buckets.position)?.0;
    // The other group keys, as expressions of the table's columns.
    let mut keys: Vec<&Expr> = Vec::new();
    for g in group {
        let key = match g {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => items.get(n.parse::<usize>().ok()?.checked_sub(1)?)?.0,
                _ => return None,
            },
            // A name that may be an output column's: not told apart here.
            Expr::Identifier(i)
                if items
                    .iter()
                    .any(|(e, a)| *a == Some(i.value.as_str()) && *e != g) =>
            {
                return None;
            }
            Expr::Rollup(_) | Expr::Cube(_) | Expr::GroupingSets(_) => return None,
            e => e,
        };
        if key != bucket_expr && !keys.contains(&key) {
            keys.push(key);
        }
    }
    let bucket = format!("date_trunc('{}', part)", buckets.unit);
    let mut states = Vec::new();
    let mut columns = Vec::new();
    for (e, _) in &items {
        if *e == bucket_expr {
            columns.push(bucket.clone());
        } else if let Some(i) = keys.iter().position(|k| k == e) {
            columns.push(format!("k{}", i + 1));
        } else {
            let merge = mergeable(e)?;
            states.push(e.to_string());
            columns.push(format!("{merge}(a{})", states.len()));
        }
    }
    let mut selected: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{k} AS k{}", i + 1))
        .collect();
    selected.extend(
        states
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{s} AS a{}", i + 1)),
    );
    let group: Vec<String> = (1..=keys.len() + 1).map(|i| i.to_string()).collect();
    let from: Vec<String> = select.from.iter().map(|f| f.to_string()).collect();
    let (from, selection) = (
        from.join(", "),
        select.selection.as_ref().map(|w| w.to_string()),
    );
    let query = format!(
        "SELECT date_trunc('day', {}) AS part, {} FROM {from}{} GROUP BY {}",
        buckets.time,
        selected.join(", "),
        selection
            .as_ref()
            .map_or(String::new(), |w| format!(" WHERE {w}")),
        group.join(", ")
    );
    Some(Parts {
        query,
        from,
        selection,
        items: selected,
        time: buckets.time.to_string(),
        bucket,
        columns,
        keys: keys.len(),
    })
}

/// For an aggregate whose partial states merge: the aggregate merging them
/// (`count`'s counts are summed).
fn mergeable(e: &Expr) -> Option<&'static str> {
    let Expr::Function(f) = e else {
        return None;
    };
    if f.over.is_some()
        || !f.within_group.is_empty()
        || f.null_treatment.is_some()
        || !matches!(f.parameters, FunctionArguments::None)
    {
        return None;
    }
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    if !list.clauses.is_empty()
        || list.args.len() != 1
        || matches!(list.duplicate_treatment, Some(DuplicateTreatment::Distinct))
    {
        return None;
    }
    match f.name.0.as_slice() {
        [name] => match name.as_ident()?.value.to_lowercase().as_str() {
            "count" | "sum" => Some("sum"),
            "min" => Some("min"),
            "max" => Some("max"),
            _ => None,
        },
        _ => None,
    }
}

/// `date_trunc('unit', <time column>)`: its unit and column expression.
fn date_trunc_of(e: &Expr, time_column: &str) -> Option<(String, Expr)> {
    let Expr::Function(f) = e else {
        return None;
    };
    let name = f.name.0.last()?.as_ident()?.value.to_lowercase();
    if name != "date_trunc" || f.over.is_some() || f.filter.is_some() {
        return None;
    }
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    let [
        FunctionArg::Unnamed(FunctionArgExpr::Expr(unit)),
        FunctionArg::Unnamed(FunctionArgExpr::Expr(time)),
    ] = list.args.as_slice()
    else {
        return None;
    };
    let unit = match unit {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => s.to_lowercase(),
            _ => return None,
        },
        _ => return None,
    };
    let column = match time {
        Expr::Identifier(i) => i.value.to_lowercase(),
        Expr::CompoundIdentifier(parts) => parts.last()?.value.to_lowercase(),
        _ => return None,
    };
    (column == time_column.to_lowercase()).then(|| (unit, time.clone()))
}

/// `query` with `condition` added to its WHERE clause.
pub(super) fn with_condition(query: &str, condition: &str) -> Option<String> {
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, query).ok()?;
    let Some(Statement::Query(q)) = statements.first_mut() else {
        return None;
    };
    let SetExpr::Select(select) = q.body.as_mut() else {
        return None;
    };
    let condition = crate::federation::exactness::parse_expr(condition)?;
    select.selection = Some(match select.selection.take() {
        Some(existing) => Expr::BinaryOp {
            left: Box::new(Expr::Nested(Box::new(existing))),
            op: BinaryOperator::And,
            right: Box::new(Expr::Nested(Box::new(condition))),
        },
        None => condition,
    });
    Some(statements[0].to_string())
}

/// What a refresh learns of the writes to its tiered table.
#[derive(Debug)]
pub(super) struct Recorded {
    /// The snapshot to keep with this refresh, with the command's own
    /// transaction counted as running; `None` when writes are not
    /// recorded.
    pub snapshot: Option<String>,
    /// What the recorded writes rely on (see [`hotcache::check_sql`]).
    pub signature: String,
    /// The times written since the last refresh (microseconds since 1970,
    /// first and last; `None`: unbounded), when they can be told: the
    /// writes were recorded all along and not pruned since.
    pub written: Option<Vec<(Option<i64>, Option<i64>)>>,
}

/// The writes to `tiered` since the view's last refresh. `warm`:
/// thermocline's own connection to the database, when the command's
/// snapshot is taken already (the view's definition was read in it).
pub(super) async fn recorded(
    link: &mut PgLink,
    d: &Definition,
    tiered: &TieredTable,
    warm: Option<&tokio_postgres::Client>,
) -> Result<Recorded, LinkError> {
    let table = tiered.def.qualified();
    let kept = d.hot_snapshot.as_deref().and_then(Snapshot::parse);
    // What the writes rely on is read on the warm connection, whose
    // catalog caches are warm (a new backend takes milliseconds to read
    // these catalogs), after the command's snapshot was taken: the same as
    // at the last refresh then, it was the same in the snapshot too, as
    // any change to it changes it. Read elsewhere when it changed.
    if let (Some(client), Some(kept), Some(kept_signature)) =
        (warm, &kept, d.hot_signature.as_deref())
        && hotcache::tracked(kept_signature)
        && hotcache::signature_on(client, &table).await.as_deref() == Some(kept_signature)
    {
        let row = link
            .rows(&format!(
                "SELECT pg_current_snapshot()::text, pg_current_xact_id_if_assigned()::text, {}",
                hotcache::written_since_sql(&table, kept)
            ))
            .await?
            .into_iter()
            .next()
            .unwrap_or_default();
        let get = |i: usize| row.get(i).cloned().flatten();
        let snapshot = command_snapshot(get(0), get(1));
        let written = match &snapshot {
            Some(now) if now.sees_all_of(kept) => {
                get(2).and_then(|json| serde_json::from_str(&json).ok())
            }
            _ => None,
        };
        return Ok(Recorded {
            snapshot: snapshot.map(|s| s.text().to_string()),
            signature: kept_signature.to_string(),
            written,
        });
    }
    let now = link.rows(&hotcache::check_sql(&table, None)).await?;
    let row = now.into_iter().next().unwrap_or_default();
    let get = |i: usize| row.get(i).cloned().flatten();
    let signature = get(1).unwrap_or_default();
    let tracked = hotcache::tracked(&signature);
    let snapshot = command_snapshot(get(0), get(3)).filter(|_| tracked);
    let mut written = None;
    if let (Some(now), Some(kept)) = (&snapshot, &kept)
        && d.hot_signature.as_deref() == Some(signature.as_str())
        && now.sees_all_of(kept)
    {
        let answer = link
            .rows(&format!(
                "SELECT {}",
                hotcache::written_since_sql(&table, kept)
            ))
            .await?;
        written = answer
            .first()
            .and_then(|r| r[0].as_deref())
            .and_then(|json| serde_json::from_str(json).ok());
    }
    Ok(Recorded {
        snapshot: snapshot.map(|s| s.text().to_string()),
        signature,
        written,
    })
}

/// The command's snapshot, from its text and the command's transaction
/// id if it has one: that transaction counted as running, as what it
/// writes is to be read as written since.
fn command_snapshot(text: Option<String>, own: Option<String>) -> Option<Snapshot> {
    let snapshot = Snapshot::parse(&text?)?;
    Some(match own.and_then(|x| x.parse().ok()) {
        Some(own) => snapshot.with_running(own),
        None => snapshot,
    })
}

/// The times (microseconds since 1970, first and last) of the lake
/// partitions whose recorded checksum differs between `before` and `now`;
/// `None` when either is unknown.
pub(super) fn lake_changes(
    before: Option<&str>,
    now: Option<&str>,
    by: crate::catalog::PartitionBy,
) -> Option<Vec<(i64, i64)>> {
    let (before, now) = (parse_checksums(before?), parse_checksums(now?));
    let changed = now
        .iter()
        .filter(|(p, tally)| before.get(p) != Some(tally))
        .map(|(p, _)| *p)
        .chain(before.keys().filter(|p| !now.contains_key(p)).copied());
    Some(
        changed
            .map(|p| {
                let start = crate::tiering::verify::partition_start(by, p);
                let end = crate::tiering::verify::partition_start(by, p + 1);
                (start, end - 1)
            })
            .collect(),
    )
}

/// What a refresh recomputes, as conditions.
#[derive(Debug)]
pub(super) struct Recompute {
    /// On the time column, for the query: the rows recomputed, those of
    /// whole buckets (or of whole days, for a view kept in parts).
    pub on_time: String,
    /// On the view's bucket column: its rows replaced.
    pub on_bucket: String,
    /// For a view kept in parts: on `part`, the parts replaced, and the
    /// parts merged (those of the buckets replaced).
    pub on_part: String,
    pub on_part_bucket: String,
    /// Every row recomputed is at or after the lake's watermark, so
    /// Postgres holds them all.
    pub in_postgres: bool,
    /// For a view kept in parts whose rows Postgres holds: the starts (as
    /// literals, ascending) of the days recomputed.
    pub days: Option<Vec<String>>,
}

/// What a refresh of a view bucketed by `unit` recomputes for the times of
/// `ranges`: the buckets that hold them, or for a view kept in `parts`,
/// the days that hold them and their buckets. `time` is
/// the time column as the query writes it, `column` the view's bucket
/// column; the bucket of no time is recomputed too when the time column
/// may be NULL. `watermark`: the lake's, if anything was moved. `None`
/// when there are no ranges.
#[allow(clippy::too_many_arguments)]
pub(super) async fn recompute(
    link: &mut PgLink,
    ranges: Vec<(Option<i64>, Option<i64>)>,
    unit: &str,
    time: &str,
    tiered: &TieredTable,
    column: &str,
    parts: bool,
    watermark: Option<i64>,
) -> Result<Option<Recompute>, LinkError> {
    let runs = merge(ranges);
    if runs.is_empty() {
        return Ok(None);
    }
    let ty = time_type(tiered);
    let pg_type = tiered.time_column().pg_type;
    let literal = |us: Option<i64>| match us {
        Some(us) => crate::tiering::mover::time_literal(pg_type, us),
        None => format!("NULL::{ty}"),
    };
    let values: Vec<String> = runs
        .iter()
        .map(|(lo, hi)| format!("({}, {})", literal(*lo), literal(*hi)))
        .collect();
    let unit_literal = quote_literal(unit);
    // One bucket on: the interval of the unit (quarters are three months).
    let step = if unit.starts_with('q') {
        "3 months".to_string()
    } else {
        format!("1 {unit}")
    };
    let first = if parts { "'day'" } else { &unit_literal };
    let in_postgres = match watermark {
        Some(w) => format!(
            "coalesce(pg_catalog.date_trunc({first}, lo) >= {}, false)",
            literal(Some(w))
        ),
        None => "true".into(),
    };
    let nullable = !tiered.time_column().not_null;
    // With the days, for a view kept in parts (used when Postgres holds
    // their rows), in the same round trip.
    let days_sql = if parts && !nullable {
        days_sql(&values)
    } else {
        String::new()
    };
    let mut sets = link
        .row_sets(&format!(
            "SELECT pg_catalog.date_trunc({unit_literal}, lo)::text, \
                    (pg_catalog.date_trunc({unit_literal}, hi) + {}::interval)::text, \
                    pg_catalog.date_trunc('day', lo)::text, \
                    (pg_catalog.date_trunc('day', hi) + '1 day'::interval)::text, \
                    pg_catalog.pg_typeof(pg_catalog.date_trunc({unit_literal}, NULL::{ty}))::text, \
                    {in_postgres}::text \
             FROM (VALUES {}) v(lo, hi);{days_sql}",
            quote_literal(&step),
            values.join(", ")
        ))
        .await?
        .into_iter();
    let bounds = sets.next().unwrap_or_default();
    let days = sets.next().and_then(days);
    let bucket = crate::catalog::quote_ident(column);
    // `of` within one of the ranges (the columns at `from` and `from + 1`
    // of `bounds`), or NULL when the time column may be.
    let within = |of: &str, from: usize| {
        let mut any: Vec<String> = bounds
            .iter()
            .map(|r| {
                let ty = r.get(4).cloned().flatten().unwrap_or_default();
                let bound = |i: usize| {
                    r.get(i)
                        .cloned()
                        .flatten()
                        .map(|v| format!("{}::{ty}", quote_literal(&v)))
                };
                let mut c = Vec::new();
                if let Some(s) = bound(from) {
                    c.push(format!("{of} >= {s}"));
                }
                if let Some(e) = bound(from + 1) {
                    c.push(format!("{of} < {e}"));
                }
                if c.is_empty() {
                    "true".to_string()
                } else {
                    format!("({})", c.join(" AND "))
                }
            })
            .collect();
        any.dedup();
        if nullable {
            any.push(format!("{of} IS NULL"));
        }
        any.join(" OR ")
    };
    let in_postgres = bounds
        .iter()
        .all(|r| r.get(5).cloned().flatten().as_deref() == Some("true"));
    Ok(Some(Recompute {
        on_time: within(time, if parts { 2 } else { 0 }),
        on_bucket: within(&bucket, 0),
        on_part: within("part", 2),
        on_part_bucket: within("part", 0),
        in_postgres,
        days: days.filter(|_| in_postgres),
    }))
}

/// The most days a refresh computes the parts of one by one.
const MAX_DAYS: usize = 64;

/// Lists the starts of the days that hold the times of the runs `values`
/// (`(first, last)` literals), for [`days`].
fn days_sql(values: &[String]) -> String {
    let values = values.join(", ");
    format!(
        "SELECT g::text, pg_catalog.pg_typeof(g)::text, \
                (pg_catalog.date_trunc('day', g) = g)::text, \
                (SELECT count(*) FROM (VALUES {values}) v(lo, hi) WHERE lo IS NULL OR hi IS NULL) \
         FROM (SELECT DISTINCT g FROM (VALUES {values}) v(lo, hi), \
                   pg_catalog.generate_series(pg_catalog.date_trunc('day', lo), \
                       pg_catalog.date_trunc('day', hi), '1 day'::interval) g) s \
         ORDER BY g LIMIT {}",
        MAX_DAYS + 1
    )
}

/// The starts of the days [`days_sql`] lists, as literals; `None` when a
/// run is unbounded, they are many, or a start is not date_trunc's own
/// (see [`crate::federation::recipe::Buckets`]).
fn days(rows: Vec<Vec<Option<String>>>) -> Option<Vec<String>> {
    let mut days = Vec::new();
    for r in &rows {
        let get = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
        if get(2) != "true" || get(3) != "0" {
            return None;
        }
        days.push(format!("{}::{}", quote_literal(&get(0)), get(1)));
    }
    (!days.is_empty() && days.len() <= MAX_DAYS).then_some(days)
}

/// The most runs of times a refresh names; more are taken as one, from
/// the first to the last.
const MAX_RUNS: usize = 64;

/// `ranges` sorted and merged where they overlap; times outside years 1 to
/// 9999 taken as unbounded.
fn merge(ranges: Vec<(Option<i64>, Option<i64>)>) -> Vec<(Option<i64>, Option<i64>)> {
    const FIRST: i64 = -62_135_596_800_000_000; // 0001-01-01
    const LAST: i64 = 253_402_300_799_999_999; // 9999-12-31 23:59:59.999999
    let mut ranges: Vec<(i64, i64)> = ranges
        .into_iter()
        .map(|(lo, hi)| {
            (
                lo.filter(|l| (FIRST..=LAST).contains(l))
                    .unwrap_or(i64::MIN),
                hi.filter(|h| (FIRST..=LAST).contains(h))
                    .unwrap_or(i64::MAX),
            )
        })
        .collect();
    ranges.sort_unstable();
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for (lo, hi) in ranges {
        match runs.last_mut() {
            Some((_, end)) if lo <= *end => *end = (*end).max(hi),
            _ => runs.push((lo, hi)),
        }
    }
    if runs.len() > MAX_RUNS {
        runs = vec![(
            runs[0].0,
            runs.iter().map(|r| r.1).max().unwrap_or(i64::MAX),
        )];
    }
    runs.into_iter()
        .map(|(lo, hi)| {
            (
                (lo != i64::MIN).then_some(lo),
                (hi != i64::MAX).then_some(hi),
            )
        })
        .collect()
}

/// The times whose rows may have changed since the view's last refresh,
/// where writes were not recorded: from the earliest of the hot rows then
/// and now and of the lake partitions changed (`lake`) on. Empty when
/// nothing changed.
pub(super) async fn changed_since(
    link: &mut PgLink,
    d: &Definition,
    tiered: &TieredTable,
    lake: &[(i64, i64)],
    time: &str,
) -> Result<Vec<(Option<i64>, Option<i64>)>, LinkError> {
    let ty = time_type(tiered);
    let lake = lake
        .iter()
        .map(|(start, _)| *start)
        .min()
        .map_or("NULL".into(), |us| {
            crate::tiering::mover::time_literal(tiered.time_column().pg_type, us)
        });
    let before_hot = d.hot_min.as_ref().map_or("NULL".to_string(), |v| {
        format!("{}::{ty}", quote_literal(v))
    });
    let least = link.rows(&format!(
            "SELECT v IS NULL, CASE WHEN isfinite(v) THEN (extract(epoch FROM v) * 1000000)::bigint END::text \
             FROM (SELECT LEAST((SELECT min({time}) FROM {}), {before_hot}, {lake}) AS v) x",
            tiered.def.qualified()
        ),
    )
    .await?;
    let row = least.into_iter().next().unwrap_or_default();
    if row.first().cloned().flatten().as_deref() != Some("f") {
        return Ok(Vec::new());
    }
    let from = row.get(1).cloned().flatten().and_then(|us| us.parse().ok());
    Ok(vec![(from, None)])
}

fn parse_checksums(text: &str) -> std::collections::BTreeMap<i64, String> {
    text.split(';')
        .filter_map(|p| p.split_once('='))
        .filter_map(|(p, t)| Some((p.parse().ok()?, t.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_are_added_to_the_where_clause() {
        assert_eq!(
            with_condition(
                "SELECT date_trunc('month', created_at), count(*) FROM orders WHERE status = 'paid' GROUP BY 1",
                "created_at >= '2026-01-01'::timestamptz OR created_at IS NULL"
            )
            .unwrap(),
            "SELECT date_trunc('month', created_at), count(*) FROM orders WHERE (status = 'paid') AND \
             (created_at >= '2026-01-01'::TIMESTAMPTZ OR created_at IS NULL) GROUP BY 1"
        );
    }

    #[test]
    fn views_of_mergeable_aggregates_are_kept_in_parts() {
        let buckets = |query: &str| {
            let statements = Parser::parse_sql(&PostgreSqlDialect {}, query).unwrap();
            let Statement::Query(q) = &statements[0] else {
                unreachable!()
            };
            let SetExpr::Select(select) = q.body.as_ref() else {
                unreachable!()
            };
            let position = select
                .projection
                .iter()
                .position(|p| p.to_string().starts_with("date_trunc"))
                .unwrap();
            let (SelectItem::ExprWithAlias { expr, .. } | SelectItem::UnnamedExpr(expr)) =
                &select.projection[position]
            else {
                unreachable!()
            };
            let (unit, time) = date_trunc_of(expr, "created_at").unwrap();
            Buckets {
                position,
                unit,
                time,
            }
        };
        let query = "SELECT status, date_trunc('month', created_at) AS month, count(*) AS n, \
                     sum(amount) FILTER (WHERE flag) AS total, max(score) \
                     FROM orders WHERE customer_id > 3 GROUP BY 2, status";
        let p = parts(query, &buckets(query)).unwrap();
        assert_eq!(
            p.query,
            "SELECT date_trunc('day', created_at) AS part, status AS k1, count(*) AS a1, \
             sum(amount) FILTER (WHERE flag) AS a2, max(score) AS a3 \
             FROM orders WHERE customer_id > 3 GROUP BY 1, 2"
        );
        assert_eq!(
            p.merge("t", Some("part >= x")),
            "SELECT k1, date_trunc('month', part), sum(a1), sum(a2), max(a3) FROM t \
             WHERE part >= x GROUP BY date_trunc('month', part), k1"
        );
        assert_eq!(
            p.of_days(&["'a'".into(), "'b'".into()], "c"),
            "SELECT 'a' AS part, status AS k1, count(*) AS a1, sum(amount) FILTER (WHERE flag) AS a2, \
             max(score) AS a3 FROM orders WHERE (customer_id > 3) AND (c) AND created_at >= 'a' \
             AND created_at < 'b' GROUP BY 2 UNION ALL \
             SELECT 'b' AS part, status AS k1, count(*) AS a1, sum(amount) FILTER (WHERE flag) AS a2, \
             max(score) AS a3 FROM orders WHERE (customer_id > 3) AND (c) AND created_at >= 'b' GROUP BY 2"
        );
        // Not kept in parts: aggregates whose parts do not merge, buckets
        // shorter than a day, or rows filtered after grouping.
        for query in [
            "SELECT date_trunc('month', created_at), avg(amount) FROM orders GROUP BY 1",
            "SELECT date_trunc('month', created_at), count(DISTINCT status) FROM orders GROUP BY 1",
            "SELECT date_trunc('month', created_at), upper(status), count(*) FROM orders GROUP BY 1, status",
            "SELECT date_trunc('hour', created_at), count(*) FROM orders GROUP BY 1",
            "SELECT date_trunc('day', created_at), count(*) FROM orders GROUP BY 1",
            "SELECT date_trunc('month', created_at), count(*) FROM orders GROUP BY 1 HAVING count(*) > 1",
            "SELECT DISTINCT date_trunc('month', created_at), count(*) FROM orders GROUP BY 1",
            "SELECT date_trunc('month', created_at) AS m, count(*) FROM orders GROUP BY ROLLUP (1)",
        ] {
            assert_eq!(parts(query, &buckets(query)), None, "{query}");
        }
    }

    #[test]
    fn written_times_merge_into_runs() {
        assert_eq!(merge(Vec::new()), Vec::new());
        assert_eq!(
            merge(vec![
                (Some(50), Some(60)),
                (Some(10), Some(20)),
                (Some(15), Some(30))
            ]),
            vec![(Some(10), Some(30)), (Some(50), Some(60))]
        );
        // Unbounded, and beyond what a literal can say.
        assert_eq!(
            merge(vec![(None, Some(5)), (Some(3), Some(i64::MAX / 2))]),
            vec![(None, None)]
        );
        let many: Vec<_> = (0..100).map(|i| (Some(i * 10), Some(i * 10 + 1))).collect();
        assert_eq!(merge(many), vec![(Some(0), Some(991))]);
    }
}
