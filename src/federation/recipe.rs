//! How a tiered table's hot rows are read again in parts, once the plan
//! is known: the stragglers alone, a partial aggregate of the rest
//! computed by Postgres (for every row, or by parts of the time axis; its
//! `date_trunc` of the time column evaluated as ranges), or their first
//! rows in an order.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{DataFusionError, Result};
use datafusion::physical_plan::streaming::PartitionStream;

use super::link::{PgLink, data_row_fields};
use super::scan::{Fetch, HotPartition, LateCheck, ScanColumn, ScanContext, Split, run_whole};
use crate::pgtypes::PgType;

/// How a tiered table's hot rows are read, kept to read them again in
/// parts: the stragglers alone, or an aggregate of the rest computed by
/// Postgres.
#[derive(Debug)]
pub(crate) struct HotRecipe {
    pub(super) qualified: String,
    /// The columns read, as a select list.
    pub(super) list: String,
    /// The filters pushed to Postgres.
    pub(super) wheres: Vec<String>,
    /// The time column, quoted, its type, and the watermark as a literal.
    pub(super) time: String,
    pub(super) time_type: PgType,
    pub(super) w: String,
    pub(super) columns: Vec<ScanColumn>,
    pub(super) read_schema: SchemaRef,
    pub(super) out_schema: SchemaRef,
    pub(super) out_pos: Vec<usize>,
    pub(super) split: Arc<Split>,
    /// For queries sent after the lake was read, when the statement's
    /// queries do not share one snapshot.
    pub(super) late: Option<Arc<LateCheck>>,
}

impl HotRecipe {
    /// `SELECT select FROM table WHERE <pushed filters> AND conditions…`,
    /// then `tail`.
    fn query(&self, select: &str, conditions: &[String], tail: &str) -> String {
        let all: Vec<&str> = self
            .wheres
            .iter()
            .chain(conditions)
            .map(String::as_str)
            .collect();
        let mut sql = format!("SELECT {select} FROM {}", self.qualified);
        if !all.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&all.join(" AND "));
        }
        sql.push_str(tail);
        sql
    }

    /// The hot rows before the watermark, those the lake holds dropped;
    /// with the query that reads them.
    pub(crate) fn stragglers(&self, ctx: &Arc<ScanContext>) -> (Arc<dyn PartitionStream>, String) {
        let sql = self.query(&self.list, &[format!("{} < {}", self.time, self.w)], "");
        (self.rows(ctx, Fetch::Open(sql.clone())), sql)
    }

    /// The scan's columns of the hot rows `fetch` reads, stragglers the
    /// lake holds dropped.
    fn rows(&self, ctx: &Arc<ScanContext>, fetch: Fetch) -> Arc<dyn PartitionStream> {
        Arc::new(HotPartition {
            ctx: ctx.clone(),
            cursor: fetch,
            columns: self.columns.clone(),
            read_schema: self.read_schema.clone(),
            out_schema: self.out_schema.clone(),
            out_pos: self.out_pos.clone(),
            split: Some(self.split.clone()),
            late: self.late.clone(),
        })
    }

    /// What the rows of a hot partial aggregate `agg` pass besides the
    /// pushed filters: at or after the watermark, and the filters between
    /// the aggregate and the scan.
    fn aggregate_conditions(&self, agg: &super::hotagg::HotAggregate) -> Vec<String> {
        let mut conditions = vec![format!("{} >= {}", self.time, self.w)];
        conditions.extend(agg.filters.iter().cloned());
        conditions
    }

    /// The partial aggregate `agg` of the hot rows at or after the
    /// watermark, computed by Postgres; with its query.
    pub(crate) fn aggregate(
        &self,
        ctx: &Arc<ScanContext>,
        agg: &super::hotagg::HotAggregate,
    ) -> (Arc<dyn PartitionStream>, String) {
        let groups = group_positions(agg);
        let group_by = if groups.is_empty() {
            String::new()
        } else {
            format!(" GROUP BY {}", groups.join(", "))
        };
        let sql = self.query(&agg.select, &self.aggregate_conditions(agg), &group_by);
        let (cursor, described) = match self.buckets(agg) {
            Some(b) => {
                let described = format!(
                    "{sql} -- {} evaluated as ranges between the first and last hot rows' buckets",
                    b.calls()
                );
                (Fetch::Buckets(sql.clone(), Arc::new(b)), described)
            }
            None => (Fetch::Whole(sql.clone()), sql),
        };
        let p = HotPartition {
            ctx: ctx.clone(),
            cursor,
            columns: agg.columns.clone(),
            read_schema: agg.schema.clone(),
            out_schema: agg.schema.clone(),
            out_pos: (0..agg.columns.len()).collect(),
            split: None,
            late: self.late.clone(),
        };
        (Arc::new(p), described)
    }

    /// What a query sent after the lake was read checks, when the
    /// statement's queries do not share one snapshot.
    pub(crate) fn late(&self) -> Option<Arc<LateCheck>> {
        self.late.clone()
    }

    /// The partial aggregate `agg` of the hot rows at or after the
    /// watermark, grouped also by the part of the time axis each row falls
    /// in, as [`super::hotcache::HotParts`] keeps it; with its query.
    pub(crate) fn aggregate_parts(
        &self,
        agg: &super::hotagg::HotAggregate,
        now_us: i64,
    ) -> (super::hotcache::PartsQuery, String) {
        use super::hotcache::{Grid, PartsQuery};
        let grid = Grid::new(self.split.w, now_us, self.time_type);
        let part = PartsQuery::part_column(&grid, &self.time, self.time_type);
        let mut group = group_positions(agg);
        group.push((agg.columns.len() + 1).to_string());
        let mut wheres = self.wheres.clone();
        wheres.extend(self.aggregate_conditions(agg));
        let (columns, read_schema) = PartsQuery::with_part(&agg.columns, &agg.schema);
        let query = PartsQuery {
            head: format!("SELECT {}, {part} FROM {}", agg.select, self.qualified),
            wheres,
            tail: format!(" GROUP BY {}", group.join(", ")),
            grid,
            time: self.time.clone(),
            time_type: self.time_type,
            table: self.qualified.clone(),
            buckets: self.buckets(agg).map(Arc::new),
            columns,
            read_schema,
            out_schema: agg.schema.clone(),
        };
        let mut described = query.sql(None);
        if let Some(b) = &query.buckets {
            described.push_str(&format!(
                " -- {} evaluated as ranges between the first and last hot rows' buckets",
                b.calls()
            ));
        }
        described.push_str(&format!(
            " -- kept by parts of {} hours from the watermark on; parts written since are computed again",
            grid.width / 3_600_000_000
        ));
        (query, described)
    }

    /// The hot rows passing `filters`, the first `k` in `order_by`, read
    /// whole (stragglers the lake holds dropped); with the query.
    pub(crate) fn top(
        &self,
        ctx: &Arc<ScanContext>,
        filters: &[String],
        order_by: &str,
        k: usize,
    ) -> (Arc<dyn PartitionStream>, String) {
        let sql = self.query(
            &self.list,
            filters,
            &format!(" ORDER BY {order_by} LIMIT {k}"),
        );
        (self.rows(ctx, Fetch::Whole(sql.clone())), sql)
    }

    /// The table, quoted and qualified.
    pub(crate) fn table(&self) -> &str {
        &self.qualified
    }

    /// The time column, as the hot queries name it.
    pub(crate) fn time_sql(&self) -> &str {
        &self.time
    }

    /// The watermark, microseconds since 1970.
    pub(crate) fn watermark(&self) -> i64 {
        self.split.w
    }

    /// Where the time column is among the scan's output columns.
    pub(crate) fn time_in_output(&self) -> Option<usize> {
        self.out_pos.iter().position(|&p| p == self.split.time_pos)
    }

    /// How `agg`'s `date_trunc` of the time column can be evaluated as
    /// ranges, when it has one.
    fn buckets(&self, agg: &super::hotagg::HotAggregate) -> Option<Buckets> {
        let zoned = match self.time_type {
            PgType::Timestamptz => true,
            PgType::Timestamp => false,
            _ => return None,
        };
        // Units whose next bucket is one step of calendar arithmetic away
        // in every time zone; hours and minutes only without one.
        const UNITS: [(&str, &str); 7] = [
            ("year", "1 year"),
            ("quarter", "3 months"),
            ("month", "1 month"),
            ("week", "7 days"),
            ("day", "1 day"),
            ("hour", "1 hour"),
            ("minute", "1 minute"),
        ];
        let (t, table, w) = (&self.time, &self.qualified, &self.w);
        let units: Vec<Unit> = UNITS
            .iter()
            .filter_map(|(unit, step)| {
                let call = format!("date_trunc('{unit}', {})", self.time);
                let used =
                    agg.select.contains(&call) || agg.filters.iter().any(|f| f.contains(&call));
                (used && (!zoned || !matches!(*unit, "hour" | "minute"))).then(|| Unit {
                    call,
                    bounds: format!(
                        "SELECT g, date_trunc('{unit}', g) = g FROM generate_series(\
                         date_trunc('{unit}', (SELECT min({t}) FROM {table} WHERE {t} >= {w})), \
                         (SELECT max({t}) FROM {table} WHERE {t} >= {w}), interval '{step}') g \
                         LIMIT {}",
                        MAX_BUCKETS + 1
                    ),
                })
            })
            .collect();
        (!units.is_empty()).then(|| Buckets {
            units,
            time: self.time.clone(),
            zoned,
        })
    }
}

/// The start of the bucket among `starts` (ascending literals) that `time`
/// falls in, for a time at or after the first start: a binary search
/// written as nested CASEs, a few comparisons a row.
fn search(time: &str, starts: &[String]) -> String {
    if starts.len() == 1 {
        return starts[0].clone();
    }
    let mid = starts.len() / 2;
    format!(
        "CASE WHEN {time} < {} THEN {} ELSE {} END",
        starts[mid],
        search(time, &starts[..mid]),
        search(time, &starts[mid..])
    )
}

/// The positions of a hot partial aggregate's groups, for GROUP BY.
fn group_positions(agg: &super::hotagg::HotAggregate) -> Vec<String> {
    (1..=agg.groups).map(|i| i.to_string()).collect()
}

/// The most buckets a `date_trunc` of the time column is evaluated as
/// ranges for.
const MAX_BUCKETS: usize = 1024;

/// The `date_trunc`s of the time column evaluated as ranges. Postgres's
/// date_trunc of a timestamptz works out the calendar in the session's time
/// zone for every row, which costs more than the rest of a partial
/// aggregate. With the buckets the hot rows fall in known (from the
/// earliest and latest hot row, read from the time column's index), the
/// call becomes a binary search over their starts: a few comparisons a row.
#[derive(Debug)]
pub(crate) struct Buckets {
    /// One for each unit used.
    units: Vec<Unit>,
    time: String,
    zoned: bool,
}

/// A `date_trunc` of the time column by one unit.
#[derive(Debug)]
struct Unit {
    /// The text replaced: `date_trunc('month', created_at)`.
    call: String,
    /// Lists the starts of the buckets from the earliest hot row's to the
    /// latest's, each with whether date_trunc maps it to itself.
    bounds: String,
}

impl Buckets {
    /// The calls evaluated as ranges, for EXPLAIN.
    pub(crate) fn calls(&self) -> String {
        let calls: Vec<&str> = self.units.iter().map(|u| u.call.as_str()).collect();
        calls.join(", ")
    }

    /// `sql` with each call replaced by a search over the bucket starts the
    /// hot rows fall in; a call is left when they are many, unknown, or do
    /// not match date_trunc's own.
    pub(crate) async fn apply(
        &self,
        link: &mut PgLink,
        sql: &str,
        extended: bool,
    ) -> Result<String> {
        let mut sql = sql.to_string();
        for unit in &self.units {
            if let Some(starts) = self.starts(link, unit, extended).await? {
                // Every row the query reads has its time at or after W (so
                // not NULL), and at or after the first start.
                sql = sql.replace(&unit.call, &format!("({})", search(&self.time, &starts)));
            }
        }
        Ok(sql)
    }

    /// The starts of `unit`'s buckets the hot rows fall in, as literals;
    /// `None` when they are many, unknown, or do not match date_trunc's own.
    async fn starts(
        &self,
        link: &mut PgLink,
        unit: &Unit,
        extended: bool,
    ) -> Result<Option<Vec<String>>> {
        let rows = run_whole(link, &unit.bounds, extended).await?;
        let mut starts = Vec::new();
        for m in rows.iter().filter(|m| m.tag == b'D') {
            let fields = data_row_fields(&m.body)
                .ok_or_else(|| DataFusionError::Execution("malformed DataRow".into()))?;
            let (Some(Some(g)), Some(Some(fixed))) = (fields.first(), fields.get(1)) else {
                return Ok(None);
            };
            let (Ok(g), [1]) = (<[u8; 8]>::try_from(*g), *fixed) else {
                return Ok(None);
            };
            // Microseconds since 2000-01-01, to since 1970-01-01.
            let Some(us) = i64::from_be_bytes(g).checked_add(946_684_800_000_000) else {
                return Ok(None);
            };
            let zone = self.zoned.then(|| Arc::from("UTC"));
            let value = datafusion::common::ScalarValue::TimestampMicrosecond(Some(us), zone);
            let Some(literal) = super::pushdown::literal_sql(&value) else {
                return Ok(None);
            };
            starts.push(literal);
        }
        Ok((!starts.is_empty() && starts.len() <= MAX_BUCKETS).then_some(starts))
    }
}
