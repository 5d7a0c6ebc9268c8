//! What an incremental refresh recomputes: the time buckets of a view
//! from the earliest time whose rows may have changed.

use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, SelectItem,
    SetExpr, Statement, TableFactor, Value, visit_relations,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::parts::Grain;
use super::{Definition, calendar, time_type};
use crate::federation::hotcache::{self, Snapshot};
use crate::federation::link::{LinkError, PgLink, quote_literal};
use crate::pgtypes::PgType;
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

/// `date_trunc('unit', <time column>)`: its unit and column expression.
pub(super) fn date_trunc_of(e: &Expr, time_column: &str) -> Option<(String, Expr)> {
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
        // Read with the definition, where they were (of the same table).
        let read = d
            .writes_read
            .clone()
            .filter(|_| d.tiered_table.as_deref() == Some(table.as_str()));
        let row = match read {
            Some(row) => row,
            None => link
                .rows(&format!(
                    "SELECT pg_current_snapshot()::text, pg_current_xact_id_if_assigned()::text, {}",
                    hotcache::written_since_sql(&table, kept)
                ))
                .await?
                .into_iter()
                .next()
                .unwrap_or_default(),
        };
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
    /// whole buckets (or of whole parts, for a view kept in parts).
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
    /// For a view kept in parts whose rows Postgres holds: the parts
    /// recomputed, as literals of where each starts (ascending) and ends
    /// (see [`super::parts::Parts::of_ranges`]).
    pub parts: Option<Vec<(String, String)>>,
}

/// What a refresh of a view bucketed by `unit` recomputes for the times of
/// `ranges`: the buckets that hold them, or for a view kept in parts of
/// `grain`, the parts that hold them and their buckets. `time` is
/// the time column as the query writes it, `column` the view's bucket
/// column; the bucket of no time is recomputed too when the time column
/// may be NULL. `watermark`: the lake's, if anything was moved; `zone`:
/// the view's time zone. `None` when there are no ranges.
#[allow(clippy::too_many_arguments)]
pub(super) async fn recompute(
    link: &mut PgLink,
    ranges: Vec<(Option<i64>, Option<i64>)>,
    unit: &str,
    time: &str,
    tiered: &TieredTable,
    column: &str,
    grain: Option<Grain>,
    watermark: Option<i64>,
    zone: &str,
) -> Result<Option<Recompute>, LinkError> {
    let runs = merge(ranges);
    if runs.is_empty() {
        return Ok(None);
    }
    let pg_type = tiered.time_column().pg_type;
    let part = grain.unwrap_or(Grain::Day);
    let nullable = !tiered.time_column().not_null;
    // With the parts, for a view kept in parts (used when Postgres holds
    // their rows): not when a run starts before the watermark (a part's
    // start is at or before its run's), nor when they are too many to
    // list.
    let listed = grain.filter(|g| {
        !nullable
            && runs.iter().all(|(lo, hi)| {
                lo.zip(*hi).is_some() && watermark.is_none_or(|w| lo.is_some_and(|lo| lo >= w))
            })
            && runs
                .iter()
                .map(|(lo, hi)| {
                    (hi.unwrap_or_default() - lo.unwrap_or_default()) / g.shortest() + 2
                })
                .sum::<i64>()
                <= MAX_PARTS as i64
    });
    // Whether Postgres holds a run's rows: the start of its first bucket
    // (or part) is at or after the watermark.
    let first = grain.map_or(unit, |g| g.unit());
    let here = calendar::applies(pg_type, zone)
        .then(|| worked_out(&runs, unit, part, first, listed, pg_type, watermark))
        .flatten();
    let (bounds, parts) = match here {
        Some(found) => found,
        None => {
            let ty = time_type(tiered);
            let literal = |us: Option<i64>| match us {
                Some(us) => crate::tiering::mover::time_literal(pg_type, us),
                None => format!("NULL::{ty}"),
            };
            let values: Vec<String> = runs
                .iter()
                .map(|(lo, hi)| format!("({}, {})", literal(*lo), literal(*hi)))
                .collect();
            let unit_literal = quote_literal(unit);
            // One bucket on: the interval of the unit (quarters are three
            // months).
            let step = if unit.starts_with('q') {
                "3 months".to_string()
            } else {
                format!("1 {unit}")
            };
            let in_postgres = match watermark {
                Some(w) => format!(
                    "coalesce(pg_catalog.date_trunc({}, lo) >= {}, false)",
                    quote_literal(first),
                    literal(Some(w))
                ),
                None => "true".into(),
            };
            // The parts in the same round trip.
            let parts_sql = listed.map_or(String::new(), |g| parts_sql(&values, g));
            let mut sets = link
                .row_sets(&format!(
                    "SELECT pg_catalog.date_trunc({unit_literal}, lo)::text, \
                            (pg_catalog.date_trunc({unit_literal}, hi) + {step}::interval)::text, \
                            pg_catalog.date_trunc({part_unit}, lo)::text, \
                            (pg_catalog.date_trunc({part_unit}, hi) + {part_step}::interval)::text, \
                            pg_catalog.pg_typeof(pg_catalog.date_trunc({unit_literal}, NULL::{ty}))::text, \
                            {in_postgres}::text \
                     FROM (VALUES {values}) v(lo, hi);{parts_sql}",
                    step = quote_literal(&step),
                    part_unit = quote_literal(part.unit()),
                    part_step = quote_literal(part.step()),
                    values = values.join(", ")
                ))
                .await?
                .into_iter();
            let bounds = sets.next().unwrap_or_default();
            (bounds, sets.next().and_then(part_ranges))
        }
    };
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
        on_time: within(time, if grain.is_some() { 2 } else { 0 }),
        on_bucket: within(&bucket, 0),
        on_part: within("part", 2),
        on_part_bucket: within("part", 0),
        in_postgres,
        parts: parts.filter(|_| in_postgres),
    }))
}

/// What [`recompute`] asks Postgres for, worked out here where the
/// calendar has no time zone to it ([`calendar::applies`]): for each run,
/// where its first and after its last bucket start, and its first and
/// after its last part (of `part`), the buckets' type, and whether
/// Postgres holds it (see `first`); and the parts of `listed`, as
/// [`part_ranges`] gives them. `None` where a unit is not worked out here.
#[allow(clippy::type_complexity)]
fn worked_out(
    runs: &[(Option<i64>, Option<i64>)],
    unit: &str,
    part: Grain,
    first: &str,
    listed: Option<Grain>,
    ty: PgType,
    watermark: Option<i64>,
) -> Option<(Vec<Vec<Option<String>>>, Option<Vec<(String, String)>>)> {
    let zoned = ty != PgType::Timestamp;
    let type_name = if zoned {
        "timestamp with time zone"
    } else {
        "timestamp without time zone"
    };
    // A bound's text, or NULL for none.
    let text = |us: Option<Option<i64>>| -> Option<Option<String>> {
        match us {
            None => Some(None),
            Some(us) => Some(Some(calendar::text(us?, zoned)?)),
        }
    };
    let after = |unit: &str, us: i64| calendar::step(unit, calendar::trunc(unit, us)?);
    let mut bounds = Vec::new();
    for (lo, hi) in runs {
        let in_postgres = match (watermark, lo) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(w), Some(lo)) => calendar::trunc(first, *lo)? >= w,
        };
        bounds.push(vec![
            text(lo.map(|lo| calendar::trunc(unit, lo)))?,
            text(hi.map(|hi| after(unit, hi)))?,
            text(lo.map(|lo| calendar::trunc(part.unit(), lo)))?,
            text(hi.map(|hi| after(part.unit(), hi)))?,
            Some(type_name.to_string()),
            Some(in_postgres.to_string()),
        ]);
    }
    let Some(g) = listed else {
        return Some((bounds, None));
    };
    let mut starts = std::collections::BTreeSet::new();
    for (lo, hi) in runs {
        let (Some(lo), Some(hi)) = (lo, hi) else {
            return Some((bounds, None));
        };
        let (mut at, last) = (
            calendar::trunc(g.unit(), *lo)?,
            calendar::trunc(g.unit(), *hi)?,
        );
        while at <= last {
            if starts.len() > MAX_PARTS {
                return Some((bounds, None));
            }
            starts.insert(at);
            at = calendar::step(g.unit(), at)?;
        }
    }
    let starts: Vec<i64> = starts.into_iter().collect();
    let literal = |us: i64| {
        Some(format!(
            "{}::{type_name}",
            quote_literal(&calendar::text(us, zoned)?)
        ))
    };
    let mut ranges = Vec::new();
    for (i, start) in starts.iter().enumerate() {
        let end = match starts.get(i + 1) {
            Some(next) => *next,
            None => calendar::step(g.unit(), *start)?,
        };
        ranges.push((literal(*start)?, literal(end)?));
    }
    let parts = (!ranges.is_empty() && ranges.len() <= MAX_PARTS).then_some(ranges);
    Some((bounds, parts))
}

/// The most parts a refresh lists (see [`Recompute::parts`]): two months'
/// hours.
const MAX_PARTS: usize = 1464;

/// Lists the parts of `grain` that hold the times of the runs `values`
/// (`(first, last)` literals), for [`part_ranges`]: where each starts, its
/// type, whether the start is `date_trunc`'s own, and where the next
/// listed one starts (for the last, a part on).
fn parts_sql(values: &[String], grain: Grain) -> String {
    let values = values.join(", ");
    let (unit, step) = (quote_literal(grain.unit()), quote_literal(grain.step()));
    format!(
        "SELECT g::text, pg_catalog.pg_typeof(g)::text, \
                (pg_catalog.date_trunc({unit}, g) = g)::text, \
                coalesce(pg_catalog.lead(g) OVER (ORDER BY g), g + {step}::interval)::text \
         FROM (SELECT DISTINCT g FROM (VALUES {values}) v(lo, hi), \
                   pg_catalog.generate_series(pg_catalog.date_trunc({unit}, lo), \
                       pg_catalog.date_trunc({unit}, hi), {step}::interval) g) s \
         ORDER BY g LIMIT {}",
        MAX_PARTS + 1
    )
}

/// The ranges of the parts [`parts_sql`] lists, as literals; `None` when
/// they are many or a start is not `date_trunc`'s own (see
/// [`crate::federation::recipe::Buckets`]).
fn part_ranges(rows: Vec<Vec<Option<String>>>) -> Option<Vec<(String, String)>> {
    let mut ranges = Vec::new();
    for r in &rows {
        let get = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
        if get(2) != "true" {
            return None;
        }
        let ty = get(1);
        ranges.push((
            format!("{}::{ty}", quote_literal(&get(0))),
            format!("{}::{ty}", quote_literal(&get(3))),
        ));
    }
    (!ranges.is_empty() && ranges.len() <= MAX_PARTS).then_some(ranges)
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
