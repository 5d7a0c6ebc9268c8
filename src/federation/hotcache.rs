//! The hot half of a partial aggregate, kept and brought up to date.
//!
//! The cold half of a statement can be kept because an Iceberg snapshot
//! never changes. The hot half changes with any write to the table, so it
//! is kept with the Postgres snapshot it was computed in, and grouped also
//! by the part of the time axis each row falls in (64 parts from the
//! watermark on). Statement triggers on the tiered table record each write's
//! transaction and the range of times of the rows it inserted, deleted or
//! changed (`thermocline.changes`). A later statement reads the writes its
//! snapshot sees that the kept one did not, has Postgres recompute only the
//! parts they touched, and merges the other parts' kept states with them:
//! the answer is the one a full computation would give in its snapshot.
//!
//! Kept states are used only while all they rely on holds:
//! - the four triggers are present and enabled always (they then fire for
//!   replication and restores too), and unchanged, with their function
//!   (any ALTER or replacement changes their catalog rows' xmin);
//! - the table is as it was: not rewritten, no privilege, policy or
//!   inheritance change (its `pg_class` row and policies' xmin);
//! - the reader's snapshot sees every transaction the kept one saw.
//!
//! Inside a client's transaction they are used too. Under READ COMMITTED
//! each query has its own snapshot, so after the touched parts are
//! computed the writes since the check are read again: kept parts are
//! merged only if none of those touched them (else all parts are computed
//! in one query). What a transaction that has written computes is never
//! kept: it may roll back.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

use datafusion::arrow::array::{Array, BooleanArray, Int32Array, RecordBatch};
use datafusion::arrow::compute::{concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;

use super::cache::{ColdCache, HotState, Partial};
use super::link::{data_row_fields, quote_literal};
use super::recipe::Buckets;
use super::scan::{LateCheck, ScanColumn, ScanContext, decode_rows, postgres_error, run_whole};
use crate::pgtypes::PgType;
use crate::tiering::TieredTable;

/// How many parts the time axis from the watermark on is cut into.
pub(crate) const PARTS: i64 = 64;

/// The most rows a kept hot half may hold (by parts, a statement with
/// many groups has up to 64 rows a group).
pub(crate) const MAX_PART_ROWS: u64 = 50_000;

/// How long a kept hot half is used. Recorded changes are kept longer
/// (see [`Pruner`]).
pub(crate) const HOT_TTL: Duration = Duration::from_secs(600);

/// The triggers that record writes, by the statement they follow.
const TRIGGERS: [(&str, &str, &str); 4] = [
    (
        "thermocline_changes_insert",
        "INSERT",
        "REFERENCING NEW TABLE AS new_rows",
    ),
    (
        "thermocline_changes_update",
        "UPDATE",
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
    ),
    (
        "thermocline_changes_delete",
        "DELETE",
        "REFERENCING OLD TABLE AS old_rows",
    ),
    ("thermocline_changes_truncate", "TRUNCATE", ""),
];

const CHANGES_TABLE: &str = "CREATE SCHEMA IF NOT EXISTS thermocline;
CREATE TABLE IF NOT EXISTS thermocline.changes (
    relid oid NOT NULL,
    xid xid8 NOT NULL,
    low bigint,
    high bigint
);
CREATE INDEX IF NOT EXISTS changes_relid_xid ON thermocline.changes (relid, xid);
CREATE TABLE IF NOT EXISTS thermocline.changes_pruned (below xid8 NOT NULL);
GRANT USAGE ON SCHEMA thermocline TO PUBLIC;";

/// The writes to a table recorded since a snapshot, as `[[low, high], …]`,
/// for a session whose role may read the table; NULL for any other, and
/// when writes since then may have been pruned.
const WRITTEN_SINCE: &str = "
    SELECT CASE WHEN has_any_column_privilege(session_user, rel, 'SELECT')
                 AND NOT EXISTS (SELECT FROM thermocline.changes_pruned WHERE below > since) THEN
        coalesce((SELECT json_agg(json_build_array(low, high)) FROM thermocline.changes
                   WHERE relid = rel AND xid >= since AND NOT pg_visible_in_snapshot(xid, snap)),
                 '[]'::json)
    END
";

/// The trigger function: for each transition table, the range of the time
/// column (found by its number, so a rename does not break writes) in
/// microseconds since 1970; NULL where unbounded or unknown. It cannot
/// fail on any value the column holds.
const RECORD_CHANGE: &str = r#"
DECLARE
    col name;
    tr text;
    n bigint;
    lo bigint;
    hi bigint;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        INSERT INTO thermocline.changes (relid, xid) VALUES (TG_RELID, pg_current_xact_id());
        RETURN NULL;
    END IF;
    SELECT attname INTO col FROM pg_attribute
     WHERE attrelid = TG_RELID AND attnum = TG_ARGV[0]::int2 AND NOT attisdropped
       AND atttypid IN ('date'::regtype, 'timestamp'::regtype, 'timestamptz'::regtype);
    FOREACH tr IN ARRAY CASE TG_OP WHEN 'INSERT' THEN ARRAY['new_rows']
                                   WHEN 'DELETE' THEN ARRAY['old_rows']
                                   ELSE ARRAY['old_rows', 'new_rows'] END LOOP
        IF col IS NULL THEN
            EXECUTE format('SELECT count(*), NULL::bigint, NULL::bigint FROM %I', tr)
               INTO n, lo, hi;
        ELSE
            EXECUTE format('SELECT count(*),
                CASE WHEN isfinite(min(%1$I)) THEN (least(greatest(extract(epoch FROM min(%1$I)), -9e12), 9e12) * 1000000)::bigint END,
                CASE WHEN isfinite(max(%1$I)) THEN (least(greatest(extract(epoch FROM max(%1$I)), -9e12), 9e12) * 1000000)::bigint END
                FROM %2$I', col, tr)
               INTO n, lo, hi;
        END IF;
        IF n > 0 THEN
            INSERT INTO thermocline.changes (relid, xid, low, high)
            VALUES (TG_RELID, pg_current_xact_id(), lo, hi);
        END IF;
    END LOOP;
    RETURN NULL;
END
"#;

/// The triggers' names, as a SQL list of literals.
fn trigger_names() -> String {
    TRIGGERS
        .iter()
        .map(|(n, ..)| quote_literal(n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Installs what records writes to `t` (on the service connection), where
/// it is missing or differs. Writes to the table then cost one more row
/// per statement in `thermocline.changes`.
pub(crate) async fn track(
    client: &tokio_postgres::Client,
    t: &TieredTable,
) -> std::result::Result<(), tokio_postgres::Error> {
    let table = t.def.qualified();
    let relation = format!("{}::regclass", quote_literal(&table));
    let attnum = t.time_column().attnum;
    let names = trigger_names();
    let present = client
        .query_one(
            &format!(
                "SELECT (SELECT string_agg(p.prosrc, '' ORDER BY p.proname) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                         WHERE n.nspname = 'thermocline' AND p.proname IN ('record_change', 'written_since')), \
                 (SELECT count(*) FROM pg_trigger WHERE tgrelid = {relation} AND tgname IN ({names}) \
                  AND tgenabled = 'A' AND pg_get_triggerdef(oid) LIKE '%thermocline.record_change(''{attnum}'')'), \
                 to_regclass('thermocline.changes') IS NOT NULL \
                     AND to_regclass('thermocline.changes_pruned') IS NOT NULL"
            ),
            &[],
        )
        .await?;
    let source: Option<String> = present.get(0);
    let triggers: i64 = present.get(1);
    let table_there: bool = present.get(2);
    let functions = format!("{RECORD_CHANGE}{WRITTEN_SINCE}");
    if source.as_deref() == Some(functions.as_str())
        && triggers == TRIGGERS.len() as i64
        && table_there
    {
        return Ok(());
    }
    let mut sql = String::from("BEGIN;\nSET LOCAL lock_timeout = '5s';\n");
    sql.push_str(CHANGES_TABLE);
    if source.as_deref() != Some(functions.as_str()) {
        sql.push_str(&format!(
            "\nCREATE OR REPLACE FUNCTION thermocline.record_change() RETURNS trigger \
             LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS {};\
             \nCREATE OR REPLACE FUNCTION thermocline.written_since(rel regclass, since xid8, snap pg_snapshot) \
             RETURNS json LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS {};",
            quote_literal(RECORD_CHANGE),
            quote_literal(WRITTEN_SINCE)
        ));
    }
    for (name, event, referencing) in TRIGGERS {
        sql.push_str(&format!(
            "\nCREATE OR REPLACE TRIGGER {name} AFTER {event} ON {table} {referencing} \
             FOR EACH STATEMENT EXECUTE FUNCTION thermocline.record_change('{attnum}');\
             \nALTER TABLE {table} ENABLE ALWAYS TRIGGER {name};"
        ));
    }
    sql.push_str("\nCOMMIT;");
    let done = client.batch_execute(&sql).await;
    if done.is_err() {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    done
}

/// The query that reads, in the statement's snapshot, that snapshot, what
/// a kept hot half of `table` relies on, (given the kept half's snapshot)
/// the time ranges written since, and the transaction's id if it has one.
pub(crate) fn check_sql(table: &str, kept: Option<&Snapshot>) -> String {
    let written = match kept {
        Some(s) => written_since_sql(table, s),
        None => "NULL::json".into(),
    };
    format!(
        "SELECT pg_current_snapshot()::text, ({}), {written}, pg_current_xact_id_if_assigned()::text",
        signature_sql(table)
    )
}

/// The call of `thermocline.written_since` for the writes to `table` that
/// snapshot `kept` did not see.
pub(crate) fn written_since_sql(table: &str, kept: &Snapshot) -> String {
    format!(
        "thermocline.written_since({}::regclass, '{}'::xid8, {}::pg_snapshot)",
        quote_literal(table),
        kept.xmin,
        quote_literal(&kept.text)
    )
}

/// The query of what the recorded writes to `table` rely on: the table's
/// kind, children, catalog row and file, the triggers that record its
/// writes, its policies, and the functions the triggers and readers call.
/// Each is read with its row's `xmin`, which any change to it changes.
pub(crate) fn signature_sql(table: &str) -> String {
    let relation = format!("{}::regclass", quote_literal(table));
    let names = trigger_names();
    format!(
        "SELECT c.relkind::text || c.relhassubclass::text || ' ' || c.xmin::text || ' ' || c.relfilenode::text \
          || ' ' || coalesce((SELECT string_agg(t.tgname::text || '=' || t.tgenabled::text || '@' || t.xmin::text, ',' ORDER BY t.tgname) \
                              FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname IN ({names})), '') \
          || ' ' || coalesce((SELECT string_agg(p.xmin::text, ',' ORDER BY p.oid) FROM pg_policy p WHERE p.polrelid = c.oid), '') \
          || ' ' || coalesce((SELECT string_agg(p.xmin::text, ',' ORDER BY p.proname) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                              WHERE n.nspname = 'thermocline' AND p.proname IN ('record_change', 'written_since')), '-') \
          FROM pg_class c WHERE c.oid = {relation}"
    )
}

/// What the recorded writes to `table` rely on (see [`signature_sql`]),
/// read on `client`, a connection of thermocline's own; `None` when it
/// cannot be read there.
pub(crate) async fn signature_on(client: &tokio_postgres::Client, table: &str) -> Option<String> {
    let rows = super::names::rows_in(client, &["pg_catalog".to_string()], &signature_sql(table))
        .await
        .ok()?;
    rows.into_iter().next()?.into_iter().next()?
}

/// Whether a signature (from [`check_sql`]) shows writes to the table
/// recorded: a plain table without children, every trigger enabled always,
/// both functions present.
pub(crate) fn tracked(signature: &str) -> bool {
    let parts: Vec<&str> = signature.split(' ').collect();
    let [kind, _, _, triggers, _, function] = parts.as_slice() else {
        return false;
    };
    let triggers: Vec<&str> = triggers.split(',').collect();
    *kind == "rfalse"
        && function.split(',').filter(|x| *x != "-").count() == 2
        && triggers.len() == TRIGGERS.len()
        && triggers.iter().all(|t| t.contains("=A@"))
}

/// A Postgres snapshot (`pg_snapshot` in text: `xmin:xmax:xip,…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    xmin: u64,
    xmax: u64,
    xip: Vec<u64>,
    text: String,
}

impl Snapshot {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let mut it = text.split(':');
        let xmin = it.next()?.parse().ok()?;
        let xmax = it.next()?.parse().ok()?;
        let xip = match it.next()? {
            "" => Vec::new(),
            list => list
                .split(',')
                .map(|x| x.parse().ok())
                .collect::<Option<Vec<u64>>>()?,
        };
        Some(Self {
            xmin,
            xmax,
            xip,
            text: text.to_string(),
        })
    }

    /// Whether every transaction `earlier` sees as finished, this one sees
    /// as finished too.
    pub(crate) fn sees_all_of(&self, earlier: &Snapshot) -> bool {
        earlier.xmax <= self.xmax
            && self
                .xip
                .iter()
                .all(|x| *x >= earlier.xmax || earlier.xip.contains(x))
    }

    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// This snapshot with `xid` (the reader's own transaction) counted as
    /// running: what that transaction writes, before or after, reads as
    /// written since.
    pub(crate) fn with_running(&self, xid: u64) -> Self {
        if xid >= self.xmax || self.xip.contains(&xid) {
            return self.clone();
        }
        let mut xip = self.xip.clone();
        xip.push(xid);
        xip.sort_unstable();
        let xmin = self.xmin.min(xid);
        let list: Vec<String> = xip.iter().map(u64::to_string).collect();
        Self {
            xmin,
            xmax: self.xmax,
            text: format!("{xmin}:{}:{}", self.xmax, list.join(",")),
            xip,
        }
    }
}

/// The parts of the time axis from the watermark `w` on (microseconds
/// since 1970), `width` each; the last part has no end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grid {
    pub w: i64,
    pub width: i64,
}

impl Grid {
    /// Parts of whole hours (whole days for a date column) that put `now`
    /// and a day after it three quarters of the way along, leaving room
    /// for rows written later.
    pub(crate) fn new(w: i64, now: i64, time_type: PgType) -> Self {
        const HOUR: i64 = 3_600_000_000;
        let unit = if time_type == PgType::Date {
            24 * HOUR
        } else {
            HOUR
        };
        let span = (now.saturating_sub(w)).max(0) + 24 * HOUR;
        let width = (span / (PARTS * 3 / 4)).max(1);
        Self {
            w,
            width: (width + unit - 1) / unit * unit,
        }
    }

    /// The starts of parts 1 to 63.
    pub(crate) fn thresholds(&self) -> impl Iterator<Item = i64> + '_ {
        (1..PARTS).map(|k| self.w + k * self.width)
    }

    fn part(&self, us: i64) -> i64 {
        (us.saturating_sub(self.w))
            .div_euclid(self.width)
            .clamp(0, PARTS - 1)
    }

    /// The parts holding times from `low` to `high` (`None`: unbounded),
    /// when any is at or after the watermark.
    fn touched(&self, low: Option<i64>, high: Option<i64>) -> Option<(i64, i64)> {
        if high.is_some_and(|h| h < self.w) {
            return None;
        }
        Some((
            low.map_or(0, |l| self.part(l)),
            high.map_or(PARTS - 1, |h| self.part(h)),
        ))
    }
}

/// The hot half's aggregate as Postgres runs it, by parts.
#[derive(Debug)]
pub(crate) struct PartsQuery {
    /// `SELECT <groups, states, part> FROM table`
    pub head: String,
    pub wheres: Vec<String>,
    /// ` GROUP BY …`, the part included.
    pub tail: String,
    pub grid: Grid,
    /// The time column as the query names it, and its type.
    pub time: String,
    pub time_type: PgType,
    /// The table, quoted and qualified.
    pub table: String,
    pub buckets: Option<Arc<Buckets>>,
    /// The result's columns, the part last.
    pub columns: Vec<ScanColumn>,
    pub read_schema: SchemaRef,
    /// Without the part.
    pub out_schema: SchemaRef,
}

impl PartsQuery {
    /// The part column's select item, and its type, for a query whose time
    /// column is `time` of `time_type`.
    pub(crate) fn part_column(grid: &Grid, time: &str, time_type: PgType) -> String {
        let thresholds: Vec<String> = grid
            .thresholds()
            .map(|us| crate::tiering::mover::time_literal(time_type, us))
            .collect();
        format!("width_bucket({time}, ARRAY[{}])", thresholds.join(", "))
    }

    /// `columns` and `schema` with the part column added last.
    pub(crate) fn with_part(
        columns: &[ScanColumn],
        schema: &SchemaRef,
    ) -> (Vec<ScanColumn>, SchemaRef) {
        let mut columns = columns.to_vec();
        columns.push(ScanColumn {
            name: "thermocline_part".into(),
            pg_type: PgType::Int4,
            labels: None,
        });
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("thermocline_part", DataType::Int32, true));
        (
            columns,
            Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())),
        )
    }

    /// The query over the parts in `parts` (all when `None`).
    pub(crate) fn sql(&self, parts: Option<&BTreeSet<i64>>) -> String {
        let mut wheres = self.wheres.clone();
        if let Some(parts) = parts {
            wheres.push(self.ranges(parts));
        }
        format!("{} WHERE {}{}", self.head, wheres.join(" AND "), self.tail)
    }

    /// A condition keeping the rows in `parts`, as time ranges (which an
    /// index on the time column answers).
    fn ranges(&self, parts: &BTreeSet<i64>) -> String {
        let mut runs: Vec<(i64, i64)> = Vec::new();
        for &p in parts {
            match runs.last_mut() {
                Some((_, end)) if *end + 1 == p => *end = p,
                _ => runs.push((p, p)),
            }
        }
        let literal = |k: i64| {
            crate::tiering::mover::time_literal(self.time_type, self.grid.w + k * self.grid.width)
        };
        let ranges: Vec<String> = runs
            .iter()
            .map(|&(a, b)| {
                let mut bounds = Vec::new();
                if a > 0 {
                    bounds.push(format!("{} >= {}", self.time, literal(a)));
                }
                if b < PARTS - 1 {
                    bounds.push(format!("{} < {}", self.time, literal(b + 1)));
                }
                if bounds.is_empty() {
                    "true".into()
                } else {
                    bounds.join(" AND ")
                }
            })
            .collect();
        format!("({})", ranges.join(" OR "))
    }
}

/// The hot half of a partial aggregate, from kept parts where they are
/// still exact.
#[derive(Debug, Clone)]
pub(crate) struct HotParts {
    pub ctx: Arc<ScanContext>,
    /// Inside a client's transaction: the check of a query sent after the
    /// lake was read.
    pub late: Option<Arc<LateCheck>>,
    pub cache: Arc<ColdCache>,
    pub key: Arc<str>,
    pub query: Arc<PartsQuery>,
    /// For the cache's listing: the table, the statement, the role.
    pub source: Arc<str>,
    pub statement: Arc<str>,
    pub user: Arc<str>,
}

impl PartitionStream for HotParts {
    fn schema(&self) -> &SchemaRef {
        &self.query.out_schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let this = self.clone();
        Box::pin(RecordBatchStreamAdapter::new(
            self.query.out_schema.clone(),
            futures::stream::once(async move { this.run().await }),
        ))
    }
}

/// What [`check_sql`] answered.
struct Check {
    snapshot: Snapshot,
    signature: String,
    /// The time ranges written since the snapshot asked about; `None` when
    /// not asked or not told.
    written: Option<Vec<(Option<i64>, Option<i64>)>>,
    /// The statement's transaction has an id: it wrote.
    wrote: bool,
}

impl HotParts {
    async fn check(&self, since: Option<&Snapshot>) -> Result<Check> {
        let mut link = self.ctx.link.lock().await;
        let check = run_whole(
            &mut link,
            &check_sql(&self.query.table, since),
            self.ctx.extended,
        )
        .await?;
        let malformed = || DataFusionError::Execution("malformed answer to the cache check".into());
        let row = check
            .iter()
            .find(|m| m.tag == b'D')
            .and_then(|m| data_row_fields(&m.body))
            .ok_or_else(malformed)?;
        let text = |i: usize| {
            row.get(i)
                .copied()
                .flatten()
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        Ok(Check {
            snapshot: text(0)
                .as_deref()
                .and_then(Snapshot::parse)
                .ok_or_else(malformed)?,
            signature: text(1).unwrap_or_default(),
            written: match text(2) {
                Some(json) => Some(serde_json::from_str(&json).map_err(|_| malformed())?),
                None => None,
            },
            wrote: text(3).is_some(),
        })
    }

    /// The parts `written` touches.
    fn touched(&self, written: &[(Option<i64>, Option<i64>)]) -> BTreeSet<i64> {
        let mut parts = BTreeSet::new();
        for (low, high) in written {
            if let Some((a, b)) = self.query.grid.touched(*low, *high) {
                parts.extend(a..=b);
            }
        }
        parts
    }

    /// All parts, computed whole.
    async fn whole(&self) -> Result<Vec<super::link::BackendMessage>> {
        let extended = self.ctx.extended;
        let mut link = self.ctx.link.lock().await;
        let sql = self.query.sql(None);
        let sql = match &self.query.buckets {
            Some(b) => b.apply(&mut link, &sql, extended).await?,
            None => sql,
        };
        run_whole(&mut link, &sql, extended).await
    }

    async fn run(&self) -> Result<RecordBatch> {
        let started = Instant::now();
        let q = &self.query;
        // In the statement's own transaction every query sees one
        // snapshot; in a client's, each its own.
        let own = self.ctx.fixed_snapshot;
        let kept = self
            .cache
            .hot_entry(&self.key)
            .await
            .filter(|p| p.hot.as_ref().is_some_and(|h| h.at.elapsed() < HOT_TTL));
        let kept_state = kept.as_ref().and_then(|p| p.hot.as_ref());
        if let (false, Some(late)) = (own, &self.late) {
            late.delay_for_tests().await;
        }
        let check = match self.check(kept_state.map(|h| &h.snapshot)).await {
            // The function telling the writes since was dropped: no kept
            // half can be brought up to date, and none is kept until it
            // is back (the signature tells it gone).
            Err(e)
                if kept_state.is_some()
                    && postgres_error(&e).and_then(|m| m.field(b'C')).as_deref()
                        == Some("42883") =>
            {
                self.cache.forget_hot_halves().await;
                return Err(e);
            }
            check => check?,
        };
        let tracked = tracked(&check.signature);
        // The parts to compute: all, or those written since the kept
        // half's snapshot (no answer: the role may not read what was
        // written, or it was pruned).
        let mut reuse = match (kept_state, &check.written) {
            (Some(h), Some(written))
                if tracked
                    && h.signature == check.signature
                    && check.snapshot.sees_all_of(&h.snapshot) =>
            {
                Some(self.touched(written))
            }
            _ => None,
        };
        let mut messages = match &reuse {
            None => Some(self.whole().await?),
            Some(parts) if parts.is_empty() => None,
            Some(parts) => {
                let mut link = self.ctx.link.lock().await;
                Some(run_whole(&mut link, &q.sql(Some(parts)), self.ctx.extended).await?)
            }
        };
        // In a client's transaction the parts were computed in a later
        // snapshot than the check's: they are merged with kept ones only
        // if nothing written in between touched those.
        if let (false, Some(parts)) = (own, &reuse) {
            let after = self.check(Some(&check.snapshot)).await?;
            let untouched = after.signature == check.signature
                && after
                    .written
                    .as_ref()
                    .is_some_and(|w| self.touched(w).is_subset(parts));
            if !untouched {
                reuse = None;
                messages = Some(self.whole().await?);
            }
        }
        if let (false, Some(late)) = (own, &self.late) {
            late.ensure().await?;
        }
        let mut batches = Vec::new();
        if let (Some(parts), Some(p)) = (&reuse, &kept) {
            for b in &p.batches {
                batches.push(without_parts(b, parts)?);
            }
        }
        if let Some(m) = messages {
            batches.push(decode_rows(&m, &q.columns, &q.read_schema)?.0);
        }
        let all = concat_batches(&q.read_schema, &batches)?;
        match &reuse {
            Some(_) => self.cache.hits.fetch_add(1, Relaxed),
            None => self.cache.misses.fetch_add(1, Relaxed),
        };
        // Kept with the check's snapshot: what was computed later is
        // counted as written since, and computed again. Never what a
        // transaction that wrote computed (it may roll back).
        if tracked && !check.wrote {
            let bytes = all.get_array_memory_size() as u64;
            self.cache
                .keep_hot(
                    self.key.to_string(),
                    Partial {
                        batches: vec![all.clone()],
                        bytes,
                        rows: all.num_rows() as u64,
                        source: self.source.to_string(),
                        statement: self.statement.to_string(),
                        user: self.user.to_string(),
                        created: SystemTime::now(),
                        compute: started.elapsed(),
                        hits: AtomicU64::new(match (&reuse, &kept) {
                            (Some(_), Some(p)) => p.hits.load(Relaxed) + 1,
                            _ => 0,
                        }),
                        hot: Some(HotState {
                            snapshot: check.snapshot,
                            signature: check.signature,
                            at: Instant::now(),
                        }),
                    },
                )
                .await;
        }
        let keep: Vec<usize> = (0..q.out_schema.fields().len()).collect();
        Ok(all.project(&keep)?.with_schema(q.out_schema.clone())?)
    }
}

/// `batch` without the rows of `parts` (its last column is the part).
fn without_parts(batch: &RecordBatch, parts: &BTreeSet<i64>) -> Result<RecordBatch> {
    let part = batch
        .column(batch.num_columns() - 1)
        .as_any()
        .downcast_ref::<Int32Array>()
        .ok_or_else(|| DataFusionError::Internal("a kept hot half without its parts".into()))?;
    let keep: BooleanArray = (0..part.len())
        .map(|i| Some(part.is_null(i) || !parts.contains(&(part.value(i) as i64))))
        .collect();
    Ok(filter_record_batch(batch, &keep)?)
}

/// Deletes recorded writes nothing can need, on a service connection:
/// those of transactions older than the oldest one running when the
/// longest-kept hot half still in use was computed, and than the snapshot
/// of every materialized view refreshed within [`Pruner::VIEWS`] (or twice
/// its refresh interval). Samples that horizon once a minute. What it
/// deleted below is recorded, so that a reader needing older writes knows
/// they are gone.
#[derive(Debug, Default)]
pub(crate) struct Pruner {
    samples: VecDeque<(Instant, u64)>,
}

impl Pruner {
    const EVERY: Duration = Duration::from_secs(60);
    /// How long after its last refresh a view's next refresh can still
    /// recompute only what was written in between.
    const VIEWS: &str = "1 hour";

    pub(crate) async fn tick(&mut self, client: &tokio_postgres::Client) {
        if self
            .samples
            .back()
            .is_some_and(|(at, _)| at.elapsed() < Self::EVERY)
        {
            return;
        }
        if let Err(e) = self.prune(client).await {
            tracing::debug!(error = %e, "cannot prune recorded writes");
        }
    }

    async fn prune(
        &mut self,
        client: &tokio_postgres::Client,
    ) -> std::result::Result<(), tokio_postgres::Error> {
        let row = client
            .query_one(
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text, \
                 to_regclass('thermocline.changes_pruned') IS NOT NULL, \
                 to_regclass('thermocline.materialized_views') IS NOT NULL",
                &[],
            )
            .await?;
        let Ok(now) = row.get::<_, String>(0).parse::<u64>() else {
            return Ok(());
        };
        self.samples.push_back((Instant::now(), now));
        let (there, views): (bool, bool) = (row.get(1), row.get(2));
        // The newest horizon sampled before any kept half in use anywhere
        // was computed.
        let old = HOT_TTL + Self::EVERY;
        let Some(i) = self.samples.iter().rposition(|(at, _)| at.elapsed() >= old) else {
            return Ok(());
        };
        let mut below = self.samples[i].1;
        self.samples.drain(..i);
        if !there {
            return Ok(());
        }
        if views {
            let kept = client
                .query(
                    &format!(
                        "SELECT hot_snapshot FROM (SELECT to_jsonb(d) ->> 'hot_snapshot' AS hot_snapshot, \
                                d.last_refresh, d.refresh_interval FROM thermocline.materialized_views d) v \
                         WHERE hot_snapshot IS NOT NULL AND last_refresh > now() - \
                               greatest(interval '{}', 2 * coalesce(refresh_interval, interval '0'))",
                        Self::VIEWS
                    ),
                    &[],
                )
                .await?;
            for r in kept {
                if let Some(s) = Snapshot::parse(&r.get::<_, String>(0)) {
                    below = below.min(s.xmin);
                }
            }
        }
        let done = client
            .batch_execute(&format!(
                "BEGIN;
                 INSERT INTO thermocline.changes_pruned VALUES ('{below}');
                 DELETE FROM thermocline.changes_pruned WHERE below < '{below}';
                 DELETE FROM thermocline.changes WHERE xid < '{below}';
                 COMMIT"
            ))
            .await;
        if done.is_err() {
            let _ = client.batch_execute("ROLLBACK").await;
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_sees_all_of_an_earlier_one_only_when_nothing_it_saw_is_running() {
        let s = |t: &str| Snapshot::parse(t).expect("a snapshot");
        assert!(s("10:15:12").sees_all_of(&s("10:14:12")));
        assert!(s("13:20:").sees_all_of(&s("10:14:12")));
        // 11 was finished for the earlier one, running for the later.
        assert!(!s("11:20:11").sees_all_of(&s("12:14:")));
        // The later one's end is before transactions the earlier saw.
        assert!(!s("10:13:").sees_all_of(&s("10:14:")));
        assert!(Snapshot::parse("10:x:").is_none());
    }

    #[test]
    fn writes_touch_the_parts_of_their_times() {
        const H: i64 = 3_600_000_000;
        let g = Grid::new(1000 * H, 1000 * H + 30 * 24 * H, PgType::Timestamptz);
        assert_eq!(g.width % H, 0);
        assert_eq!(g.touched(Some(0), Some(999 * H)), None);
        assert_eq!(g.touched(None, None), Some((0, PARTS - 1)));
        assert_eq!(g.touched(Some(0), Some(1000 * H)), Some((0, 0)));
        let now = g.part(1000 * H + 30 * 24 * H);
        assert!(now < PARTS - 1, "room is left after now: part {now}");
        assert_eq!(
            g.touched(Some(i64::MAX), None),
            Some((PARTS - 1, PARTS - 1))
        );
        let d = Grid::new(0, 30 * 24 * H, PgType::Date);
        assert_eq!(d.width % (24 * H), 0);
    }

    #[test]
    fn only_a_plain_table_with_all_triggers_always_enabled_is_tracked() {
        let triggers = "thermocline_changes_delete=A@5,thermocline_changes_insert=A@5,\
                        thermocline_changes_truncate=A@5,thermocline_changes_update=A@5";
        assert!(tracked(&format!("rfalse 7 16384 {triggers}  9,9")));
        assert!(tracked(&format!("rfalse 7 16384 {triggers} 12,13 9,9")));
        assert!(!tracked(&format!("rfalse 7 16384 {triggers}  -")));
        assert!(!tracked(&format!("rfalse 7 16384 {triggers}  9")));
        assert!(!tracked(&format!("pfalse 7 16384 {triggers}  9,9")));
        assert!(!tracked(&format!("rtrue 7 16384 {triggers}  9,9")));
        assert!(!tracked(&format!(
            "rfalse 7 16384 {}  9,9",
            triggers.replacen("=A@", "=O@", 1)
        )));
        assert!(!tracked("rfalse 7 16384   9,9"));
    }
}
