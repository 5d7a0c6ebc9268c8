//! What an incremental refresh recomputes: the time buckets of a view
//! from the earliest time whose rows may have changed.

use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, DuplicateTreatment, Expr, FunctionArg, FunctionArgExpr, FunctionArguments,
    GroupByExpr, SelectItem, SetExpr, Statement, TableFactor, Value, visit_relations,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

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

/// What each of a view's parts covers: an hour or a day of its time
/// column, in the view's time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Grain {
    Hour,
    Day,
}

impl Grain {
    /// Hours for a view with no group key but its bucket, as its parts
    /// are few however short: a refresh then recomputes only the hours
    /// written. Days otherwise, as a view's parts are a part per group.
    fn for_keys(keys: usize) -> Self {
        if keys == 0 { Grain::Hour } else { Grain::Day }
    }

    /// The grain recorded with a view's definition; a view kept in parts
    /// before the grain was recorded has days.
    pub fn recorded(text: Option<&str>) -> Self {
        match text {
            Some("hour") => Grain::Hour,
            _ => Grain::Day,
        }
    }

    /// Its unit, as `date_trunc` names it.
    pub fn unit(self) -> &'static str {
        match self {
            Grain::Hour => "hour",
            Grain::Day => "day",
        }
    }

    fn step(self) -> &'static str {
        match self {
            Grain::Hour => "1 hour",
            Grain::Day => "1 day",
        }
    }

    /// The fewest microseconds a part holds (a day of a change to
    /// daylight saving time has 23 hours).
    fn shortest(self) -> i64 {
        match self {
            Grain::Hour => 3_600_000_000,
            Grain::Day => 23 * 3_600_000_000,
        }
    }
}

/// How a view is kept in parts: for each hour or day of its time column
/// ([`Grain`]) and each group of the view, the partial state of each
/// aggregate (`count`, `sum`, `min`, `max`). A refresh recomputes the
/// parts written and merges the buckets that hold them from their parts,
/// rather than recomputing whole buckets from rows. A bucket is whole
/// parts, so the parts hold no bucket: it is the bucket of their start.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Parts {
    /// The parts, computed from the view's rows: `part` (its start), `k1`…
    /// (the view's other group keys), `a1`… (the aggregates' states).
    pub query: String,
    pub grain: Grain,
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
    /// The parts starting at the times `ranges` give (literals of their
    /// starts, ascending, and of where each ends), of the rows `condition`
    /// keeps: each part from the rows of its range of times, rather than
    /// from each row's `date_trunc`, which works out the calendar for
    /// every row at more cost than the rest of the query.
    pub fn of_ranges(&self, ranges: &[(String, String)], condition: &str) -> String {
        // A name for the ranges the query's own names do not hold.
        let text = format!(
            "{} {} {} {} {condition}",
            self.from,
            self.items.join(" "),
            self.selection.as_deref().unwrap_or_default(),
            self.time
        )
        .to_lowercase();
        let alias = (0..)
            .map(|i| {
                format!(
                    "thermocline_part{}",
                    if i == 0 { String::new() } else { i.to_string() }
                )
            })
            .find(|a| !text.contains(a.as_str()))
            .unwrap_or_default();
        let values: Vec<String> = ranges.iter().map(|(s, e)| format!("({s}, {e})")).collect();
        let selection = self
            .selection
            .as_ref()
            .map_or(String::new(), |w| format!("({w}) AND "));
        let group: Vec<String> = (1..=self.keys + 1).map(|i| i.to_string()).collect();
        format!(
            "SELECT {alias}.{alias}_start AS part, {} FROM (VALUES {}) {alias}({alias}_start, {alias}_end), {} \
             WHERE {selection}({condition}) AND {time} >= {alias}.{alias}_start AND {time} < {alias}.{alias}_end \
             GROUP BY {}",
            self.items.join(", "),
            values.join(", "),
            self.from,
            group.join(", "),
            time = self.time,
        )
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

/// How `query`, refreshed by `buckets`, is kept in parts of `grain` (of
/// the grain for its keys when `None`); `None` when its buckets are not
/// whole parts or it computes more than group keys and `count`, `sum`,
/// `min` and `max` of them.
pub(super) fn parts(query: &str, buckets: &Buckets, grain: Option<Grain>) -> Option<Parts> {
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
    let grain = grain.unwrap_or(Grain::for_keys(keys.len()));
    let unit = buckets.unit.as_str();
    if !(WHOLE_DAYS.contains(&unit) || grain == Grain::Hour && unit == "day") {
        return None;
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
        "SELECT date_trunc('{}', {}) AS part, {} FROM {from}{} GROUP BY {}",
        grain.unit(),
        buckets.time,
        selected.join(", "),
        selection
            .as_ref()
            .map_or(String::new(), |w| format!(" WHERE {w}")),
        group.join(", ")
    );
    Some(Parts {
        query,
        grain,
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
    /// (see [`Parts::of_ranges`]).
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
        let p = parts(query, &buckets(query), None).unwrap();
        assert_eq!(p.grain, Grain::Day);
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
            p.of_ranges(
                &[("'a'".into(), "'b'".into()), ("'b'".into(), "'c'".into())],
                "c"
            ),
            "SELECT thermocline_part.thermocline_part_start AS part, status AS k1, count(*) AS a1, \
             sum(amount) FILTER (WHERE flag) AS a2, max(score) AS a3 \
             FROM (VALUES ('a', 'b'), ('b', 'c')) thermocline_part(thermocline_part_start, thermocline_part_end), orders \
             WHERE (customer_id > 3) AND (c) AND created_at >= thermocline_part.thermocline_part_start \
             AND created_at < thermocline_part.thermocline_part_end GROUP BY 1, 2"
        );
        // With no other group key: by the hour, and daily views too; the
        // ranges named apart from the query's own names.
        for query in [
            "SELECT date_trunc('month', created_at), count(*), min(thermocline_part) FROM orders GROUP BY 1",
            "SELECT date_trunc('day', created_at), count(*), min(thermocline_part) FROM orders GROUP BY 1",
        ] {
            let p = parts(query, &buckets(query), None).unwrap();
            assert_eq!(p.grain, Grain::Hour, "{query}");
            assert!(
                p.query
                    .starts_with("SELECT date_trunc('hour', created_at) AS part")
            );
            assert!(
                p.of_ranges(&[("'a'".into(), "'b'".into())], "true")
                    .starts_with(
                        "SELECT thermocline_part1.thermocline_part1_start AS part, count(*) AS a1"
                    ),
                "{query}"
            );
        }
        // Kept by the day, as recorded by an earlier version: not a daily
        // view.
        let monthly = "SELECT date_trunc('month', created_at), count(*) FROM orders GROUP BY 1";
        assert_eq!(
            parts(monthly, &buckets(monthly), Some(Grain::Day))
                .unwrap()
                .grain,
            Grain::Day
        );
        let daily = "SELECT date_trunc('day', created_at), count(*) FROM orders GROUP BY 1";
        assert_eq!(parts(daily, &buckets(daily), Some(Grain::Day)), None);
        // Not kept in parts: aggregates whose parts do not merge, buckets
        // shorter than a day, a daily view with other group keys, or rows
        // filtered after grouping.
        for query in [
            "SELECT date_trunc('month', created_at), avg(amount) FROM orders GROUP BY 1",
            "SELECT date_trunc('month', created_at), count(DISTINCT status) FROM orders GROUP BY 1",
            "SELECT date_trunc('month', created_at), upper(status), count(*) FROM orders GROUP BY 1, status",
            "SELECT date_trunc('hour', created_at), count(*) FROM orders GROUP BY 1",
            "SELECT date_trunc('day', created_at), status, count(*) FROM orders GROUP BY 1, 2",
            "SELECT date_trunc('month', created_at), count(*) FROM orders GROUP BY 1 HAVING count(*) > 1",
            "SELECT DISTINCT date_trunc('month', created_at), count(*) FROM orders GROUP BY 1",
            "SELECT date_trunc('month', created_at) AS m, count(*) FROM orders GROUP BY ROLLUP (1)",
        ] {
            assert_eq!(parts(query, &buckets(query), None), None, "{query}");
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
