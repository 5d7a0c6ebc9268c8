//! Table providers for a federated statement: a tiered table is its hot
//! rows (a binary cursor on the session's connection) plus its cold rows
//! (an Iceberg scan), split at the watermark W of the Iceberg snapshot
//! read; any other table is a cursor alone.
//!
//! Order matters for the boundary contract: the cursor (and so the
//! Postgres snapshot) is opened before the Iceberg table is loaded. Hot
//! rows older than W are stragglers and are returned only when the cold
//! tier does not hold their key.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use iceberg::table::Table;
use tokio::sync::Mutex;

use super::cold::{ColdTierUnavailable, cold_keys_at, cold_partition, row_key};
use super::link::{LinkError, PgLink, data_row_fields};
use super::pushdown::to_pg_sql;
use super::recipe::{Buckets, HotRecipe};
use crate::catalog::quote_ident;
use crate::pgtypes::PgType;
use crate::tiering::TieredTable;

/// Rows fetched from a cursor per round trip.
const FETCH_ROWS: usize = 8192;

/// The session's connection, shared by the scans of one statement.
pub(crate) type SharedLink = Arc<Mutex<PgLink>>;

/// What the scans of one statement share.
#[derive(Debug)]
pub(crate) struct ScanContext {
    pub link: SharedLink,
    /// Cursors opened, to close when the statement ends.
    pub cursors: std::sync::Mutex<Vec<String>>,
    next_cursor: AtomicU32,
    /// The session's time zone, given to timestamptz columns.
    pub time_zone: Arc<str>,
    /// For EXPLAIN: what each scan sent to Postgres and read from Iceberg.
    pub trace: std::sync::Mutex<Vec<String>>,
    /// Inside an extended-protocol exchange: hot scans are named portals
    /// (no Sync may be sent), not cursors.
    pub extended: bool,
    /// Statements and portals opened in extended mode, to close at the end.
    pub portals: std::sync::Mutex<Vec<(String, String)>>,
    /// The tiered scans planned, for the cache of cold partial results.
    pub leaves: std::sync::Mutex<Vec<Arc<super::cache::TieredLeaf>>>,
    /// Every query of the statement on the connection sees one snapshot
    /// (its own REPEATABLE READ transaction): hot queries may then run
    /// after the lake was read.
    pub fixed_snapshot: bool,
    /// The lake's part of each scan begins to be read as the scan is
    /// planned (a read whose cold parts no cache may answer, and that is
    /// run, not explained).
    pub read_cold_early: std::sync::atomic::AtomicBool,
    /// Each plain hot scan's cursor is declared as the scan is planned, in
    /// a transaction of the statement's own (a read that is run, not
    /// explained): Postgres plans it while the executor plans the rest.
    pub declare_hot_early: std::sync::atomic::AtomicBool,
    /// For each table read, a query reading the same columns and no rows:
    /// a cached answer is given only to a role that may run them.
    pub reads: std::sync::Mutex<Vec<String>>,
    /// For EXPLAIN: each lake table scanned and the filters that prune it.
    pub lake_scans: std::sync::Mutex<Vec<(Table, Vec<Expr>)>>,
    /// A column read holds strings whose collation is not byte order.
    pub collated: std::sync::atomic::AtomicBool,
    /// The names of the interval columns of the tables read (see
    /// `intervals::columns_as_postgres`).
    pub interval_columns: std::sync::Mutex<Vec<String>>,
    /// The columns of the tables read that the executor cannot carry:
    /// table, column and type, for the error of a statement using one.
    pub left_out: std::sync::Mutex<Vec<(String, String, String)>>,
    /// The numeric columns without a precision of the plain tables read
    /// (table and column): read as Postgres writes them, as text, which
    /// the statement may return but not compute with
    /// (see `planning::numeric_text_refusal`).
    pub numeric_text: std::sync::Mutex<Vec<(String, String)>>,
    /// How many rows each scan may produce, where known (see `joins`).
    pub estimates: super::joins::Estimates,
    /// Where the statement's names resolve, when the session told as it
    /// described the statement (see `names`).
    pub resolved: std::sync::Mutex<Option<super::names::Resolved>>,
    /// The columns of the statement's relations, being read (see `ahead`).
    pub(super) columns_ahead: std::sync::Mutex<Option<super::planning::ColumnsAhead>>,
    /// The lake tables the statement may read, being loaded (see `ahead`),
    /// by lake table name.
    lakes_ahead: std::sync::Mutex<Vec<(String, LakeLoad)>>,
}

/// A lake table being loaded: its current snapshot, or why it could not be
/// loaded.
type LakeLoad = futures::future::Shared<
    futures::future::BoxFuture<'static, std::result::Result<Option<Table>, String>>,
>;

fn lake_name(t: &TieredTable) -> String {
    format!("{}.{}", t.def.lake_namespace, t.def.lake_table)
}

/// Names of thermocline's own statements and portals, unique per process
/// so that one left behind by a failed statement never collides.
static NEXT_PORTAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl ScanContext {
    /// The context of one statement over `link`, in the session's zone
    /// `tz`; `extended`: inside a client's extended-protocol exchange;
    /// `fixed_snapshot`: in a REPEATABLE READ transaction of its own.
    pub(crate) fn start(
        link: PgLink,
        tz: chrono_tz::Tz,
        extended: bool,
        fixed_snapshot: bool,
    ) -> (SharedLink, Arc<Self>) {
        let shared = Arc::new(Mutex::new(link));
        let mut ctx = Self::new(shared.clone(), crate::pgtypes::executor_zone(tz));
        ctx.extended = extended;
        ctx.fixed_snapshot = fixed_snapshot;
        (shared, Arc::new(ctx))
    }

    pub(crate) fn new(link: SharedLink, time_zone: &str) -> Self {
        Self {
            link,
            cursors: Default::default(),
            next_cursor: AtomicU32::new(1),
            time_zone: time_zone.into(),
            trace: Default::default(),
            extended: false,
            portals: Default::default(),
            leaves: Default::default(),
            fixed_snapshot: false,
            read_cold_early: Default::default(),
            declare_hot_early: Default::default(),
            reads: Default::default(),
            lake_scans: Default::default(),
            collated: Default::default(),
            interval_columns: Default::default(),
            left_out: Default::default(),
            numeric_text: Default::default(),
            estimates: Default::default(),
            resolved: Default::default(),
            columns_ahead: Default::default(),
            lakes_ahead: Default::default(),
        }
    }

    /// Begins loading `t`'s lake table, once per statement; its scans then
    /// read that snapshot. Only where the statement's hot snapshot is
    /// already taken.
    pub(super) fn load_lake_ahead(&self, t: &Arc<TieredTable>, lake: &crate::lake::Lake) {
        use futures::FutureExt;
        let Ok(mut ahead) = self.lakes_ahead.lock() else {
            return;
        };
        let name = lake_name(t);
        if ahead.iter().any(|(n, _)| *n == name) {
            return;
        }
        let (t, lake) = (t.clone(), lake.clone());
        let load = tokio::spawn(async move { lake.load(&t).await.map_err(|e| e.to_string()) });
        let load = load
            .map(|joined| joined.unwrap_or_else(|e| Err(e.to_string())))
            .boxed()
            .shared();
        ahead.push((name, load));
    }

    /// `t`'s lake table as loaded ahead, or loaded now.
    async fn lake_table(
        &self,
        t: &TieredTable,
        lake: &crate::lake::Lake,
    ) -> std::result::Result<Option<Table>, String> {
        let name = lake_name(t);
        let ahead = self.lakes_ahead.lock().ok().and_then(|a| {
            a.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, load)| load.clone())
        });
        match ahead {
            Some(load) => load.await,
            None => lake.load(t).await.map_err(|e| e.to_string()),
        }
    }
}

impl std::fmt::Debug for PgLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgLink")
    }
}

/// A column as a scan carries it.
#[derive(Debug, Clone)]
pub(crate) struct ScanColumn {
    pub name: String,
    pub pg_type: PgType,
    /// An enum's labels, in their order.
    pub labels: Option<Arc<Vec<String>>>,
}

/// The Arrow type a column has inside the executor: Postgres's, with
/// timestamptz in the session's zone so that date_trunc and friends
/// follow the session as Postgres's do.
fn exec_type(t: PgType, tz: &str) -> DataType {
    match t {
        PgType::Timestamptz => DataType::Timestamp(TimeUnit::Microsecond, Some(tz.into())),
        other => other.arrow(),
    }
}

fn schema_of(columns: &[ScanColumn], tz: &str) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| {
                let field = Field::new(&c.name, exec_type(c.pg_type, tz), true);
                match c.pg_type {
                    PgType::Json => field.with_metadata(super::json::pg_type("json")),
                    PgType::Jsonb => field.with_metadata(super::json::pg_type("jsonb")),
                    PgType::Enum => field.with_metadata(super::enums::metadata(
                        c.labels.as_deref().map(Vec::as_slice).unwrap_or_default(),
                    )),
                    _ => field,
                }
            })
            .collect::<Vec<_>>(),
    ))
}

/// A Postgres table read through the session's connection; for a tiered
/// table, united with its cold rows.
#[derive(Debug)]
pub(crate) struct FederatedTable {
    pub ctx: Arc<ScanContext>,
    /// `schema.table`, quoted.
    pub qualified: String,
    pub columns: Vec<ScanColumn>,
    pub schema: SchemaRef,
    /// Set for tiered tables.
    pub tiered: Option<(Arc<TieredTable>, crate::lake::Lake)>,
    /// Postgres's estimate of the rows the table holds (of its hot rows,
    /// for a tiered table), when it has one.
    pub pg_rows: Option<u64>,
}

impl FederatedTable {
    pub(crate) fn new(
        ctx: Arc<ScanContext>,
        qualified: String,
        columns: Vec<ScanColumn>,
        tiered: Option<(Arc<TieredTable>, crate::lake::Lake)>,
        pg_rows: Option<u64>,
    ) -> Self {
        let schema = schema_of(&columns, &ctx.time_zone);
        Self {
            ctx,
            qualified,
            columns,
            schema,
            tiered,
            pg_rows,
        }
    }
}

#[async_trait]
impl TableProvider for FederatedTable {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Inexact: DataFusion applies every filter again above the scan, so a
        // filter Postgres did not see can never let a wrong row through.
        // Exact only for a bound on a tiered table's time column that
        // Postgres sees: the cold side applies it too (and an executor's
        // filter over millions of lake rows would cost more than reading
        // them).
        Ok(filters
            .iter()
            .map(|f| match to_pg_sql(f, &self.columns) {
                None => TableProviderFilterPushDown::Unsupported,
                Some(_)
                    if self
                        .tiered
                        .as_ref()
                        .is_some_and(|(t, _)| super::cold::exact_time_bound(f, t).is_some()) =>
                {
                    TableProviderFilterPushDown::Exact
                }
                Some(_) => TableProviderFilterPushDown::Inexact,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let output: Vec<usize> = projection
            .cloned()
            .unwrap_or_else(|| (0..self.columns.len()).collect());
        // Columns read: the output, plus time and key for tiered tables.
        let mut read = output.clone();
        if let Some((t, _)) = &self.tiered {
            for i in std::iter::once(t.time_index).chain(t.key.iter().copied()) {
                if !read.contains(&i) {
                    read.push(i);
                }
            }
        }
        let wheres: Vec<String> = filters
            .iter()
            .filter_map(|f| to_pg_sql(f, &self.columns))
            .collect();
        let list = if read.is_empty() {
            "NULL".to_string()
        } else {
            read.iter()
                .map(|&i| {
                    let c = &self.columns[i];
                    match c.pg_type == NUMERIC_TEXT {
                        true => format!("{}::text", quote_ident(&c.name)),
                        false => quote_ident(&c.name),
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        self.ctx
            .reads
            .lock()
            .expect("not poisoned")
            .push(format!("SELECT {list} FROM {} LIMIT 0", self.qualified));
        let mut sql = format!("SELECT {list} FROM {}", self.qualified);
        if !wheres.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&wheres.join(" AND "));
        }
        // The cursor (or portal) first: its snapshot is taken now, before
        // the Iceberg snapshot is chosen below. In a transaction of the
        // statement's own, the snapshot was taken by its first query:
        // the cursor is declared with its first fetch.
        let cursor = if self.ctx.fixed_snapshot && !self.ctx.extended {
            match self.ctx.declare_hot_early.load(Ordering::Relaxed) {
                true => Fetch::Early(Arc::new(Early::declare(&self.ctx, &sql))),
                false => Fetch::Open(sql.clone()),
            }
        } else {
            open(&self.ctx, &sql).await?
        };
        self.ctx
            .trace
            .lock()
            .expect("not poisoned")
            .push(format!("Postgres: {sql}"));

        let out_schema = Arc::new(Schema::new(
            output
                .iter()
                .map(|&i| self.schema.field(i).clone())
                .collect::<Vec<_>>(),
        ));
        let read_columns: Vec<ScanColumn> = read.iter().map(|&i| self.columns[i].clone()).collect();
        // Positions of the output, time and key columns within `read`.
        let out_pos: Vec<usize> = (0..output.len()).collect();
        let mut cold_part: Option<(Arc<dyn PartitionStream>, String, String)> = None;
        let mut split = None;
        if let Some((t, lake)) = &self.tiered {
            let table = self.ctx.lake_table(t, lake).await.map_err(|message| {
                DataFusionError::External(Box::new(ColdTierUnavailable {
                    table: t.def.qualified(),
                    lake_table: lake_name(t),
                    message,
                }))
            })?;
            let w = table.as_ref().and_then(crate::lake::watermark);
            let time_pos = read.iter().position(|&i| i == t.time_index).expect("read");
            let key_pos: Vec<usize> = t
                .key
                .iter()
                .map(|k| read.iter().position(|i| i == k).expect("read"))
                .collect();
            if let (Some(table), Some(w)) = (table, w) {
                self.ctx.trace.lock().expect("not poisoned").push(format!(
                    "Iceberg: {} snapshot {} watermark {}",
                    table.identifier(),
                    table.metadata().current_snapshot_id().unwrap_or_default(),
                    crate::tiering::mover::time_literal(t.time_column().pg_type, w)
                ));
                let cold = cold_partition(
                    state,
                    &table,
                    t,
                    &read_columns,
                    filters,
                    w,
                    out_schema.clone(),
                )
                .await?;
                self.ctx
                    .lake_scans
                    .lock()
                    .expect("not poisoned")
                    .push((table.clone(), cold.pruning.clone()));
                if self.ctx.read_cold_early.load(Ordering::Relaxed) {
                    cold.begin();
                }
                let partition: Arc<dyn PartitionStream> = Arc::new(cold);
                let snapshot = table.metadata().current_snapshot_id().unwrap_or_default();
                let names: Vec<&str> = read_columns.iter().map(|c| c.name.as_str()).collect();
                cold_part = Some((
                    partition,
                    lake_source(&table),
                    format!(
                        "{} snapshot {snapshot} watermark {w} columns {names:?} types {:?} filters {filters:?}",
                        table.metadata().location(),
                        out_schema.fields()
                    ),
                ));
                split = Some(Split {
                    w,
                    time_pos,
                    key_pos,
                    table,
                    t: t.clone(),
                });
            }
        }
        let read_schema = schema_of(
            &read
                .iter()
                .map(|&i| self.columns[i].clone())
                .collect::<Vec<_>>(),
            &self.ctx.time_zone,
        );
        let split = split.map(Arc::new);
        let hot = HotPartition {
            ctx: self.ctx.clone(),
            cursor,
            columns: read_columns.clone(),
            read_schema: read_schema.clone(),
            out_schema: out_schema.clone(),
            out_pos: out_pos.clone(),
            split: split.clone(),
            late: None,
        };
        let hot: Arc<dyn PartitionStream> = Arc::new(hot);
        // At most the table's rows: Postgres's estimate (times two, as it
        // may be stale) and the lake's count.
        let lake_rows = match &split {
            Some(split) => lake_records(&split.table),
            None => Some(0),
        };
        if let (Some(pg), Some(lake)) = (self.pg_rows, lake_rows) {
            self.ctx.estimates.lock().expect("not poisoned").push((
                super::cache::address(&hot),
                pg.saturating_mul(2).saturating_add(lake),
            ));
        }
        let mut parts = vec![hot.clone()];
        if let (Some((cold, source, reads)), Some(split)) = (cold_part, split) {
            parts.push(cold.clone());
            let time = split.t.time_column();
            let late = match (&self.tiered, self.ctx.fixed_snapshot) {
                (Some((t, lake)), false) => Some(Arc::new(LateCheck {
                    lake: lake.clone(),
                    t: t.clone(),
                    location: split.table.metadata_location().map(str::to_string),
                    last_move: crate::lake::last_move(&split.table),
                })),
                _ => None,
            };
            let recipe = HotRecipe {
                qualified: self.qualified.clone(),
                list,
                wheres,
                time: quote_ident(&time.name),
                time_type: time.pg_type,
                w: crate::tiering::mover::time_literal(time.pg_type, split.w),
                columns: read_columns,
                read_schema,
                out_schema: out_schema.clone(),
                out_pos,
                split,
                late,
            };
            self.ctx.leaves.lock().expect("not poisoned").push(Arc::new(
                super::cache::TieredLeaf {
                    hot: super::cache::address(&hot),
                    cold: super::cache::address(&cold),
                    source,
                    reads,
                    recipe,
                },
            ));
        }
        Ok(Arc::new(StreamingTableExec::try_new(
            out_schema,
            parts,
            None,
            Vec::new(),
            false,
            None,
        )?))
    }
}

/// The rows the current snapshot of a lake table holds, by its summary.
fn lake_records(table: &Table) -> Option<u64> {
    table
        .metadata()
        .current_snapshot()?
        .summary()
        .additional_properties
        .get("total-records")?
        .parse()
        .ok()
}

/// `lake table@snapshot`: a tiered scan's cold source, as the cache and
/// EXPLAIN name it.
pub(crate) fn lake_source(table: &Table) -> String {
    format!(
        "{}@{}",
        table.identifier(),
        table.metadata().current_snapshot_id().unwrap_or_default()
    )
}

/// Runs `sql` to its end, rows in binary: Parse, Bind, Execute and Sync;
/// inside a client's extended-protocol exchange (no Sync may be sent), a
/// statement and portal of thermocline's own, closed after.
pub(crate) async fn run_whole(
    link: &mut PgLink,
    sql: &str,
    extended: bool,
) -> Result<Vec<super::link::BackendMessage>> {
    use super::link::frontend;
    let mut msgs = Vec::new();
    if !extended {
        frontend::parse(&mut msgs, "", sql);
        frontend::bind_binary(&mut msgs, "", "");
        frontend::execute(&mut msgs, "", 0);
        return link.extended_sync(&msgs).await.map_err(link_error);
    }
    let name = format!(
        "thermocline_w{}",
        NEXT_PORTAL.fetch_add(1, Ordering::Relaxed)
    );
    frontend::parse(&mut msgs, &name, sql);
    frontend::bind_binary(&mut msgs, &name, &name);
    frontend::execute(&mut msgs, &name, 0);
    frontend::close(&mut msgs, b'P', &name);
    frontend::close(&mut msgs, b'S', &name);
    // ParseComplete, BindComplete, CommandComplete, two CloseCompletes.
    link.extended(&msgs, 5).await.map_err(link_error)
}

/// Checks, for a query sent after the lake was read, that the lake did
/// not change in between. Where a statement's queries do not share one
/// snapshot, a mover could otherwise commit between the lake's read and
/// the query's snapshot, and rows it took from Postgres would be in
/// neither. A mover commits to Postgres only after the lake: while the
/// lake's table is the one read, no such commit can have happened.
#[derive(Debug)]
pub(crate) struct LateCheck {
    lake: crate::lake::Lake,
    t: Arc<TieredTable>,
    /// The metadata file read.
    location: Option<String>,
    /// The last move it records.
    last_move: Option<String>,
}

impl LateCheck {
    /// `THERMOCLINE_LATE_QUERY_DELAY_MS` holds each such query back, so
    /// tests can commit a move in between.
    pub(crate) async fn delay_for_tests(&self) {
        if let Some(ms) = std::env::var("THERMOCLINE_LATE_QUERY_DELAY_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
    }

    pub(crate) async fn ensure(&self) -> Result<()> {
        let now = self
            .lake
            .current_location(&self.t)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        if now == self.location {
            return Ok(());
        }
        // Maintenance (compaction, retention, expiry) commits too, but
        // takes no row out of Postgres: only a move in between matters.
        let current = self
            .lake
            .load(&self.t)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        if current.is_some_and(|c| crate::lake::last_move(&c) == self.last_move) {
            return Ok(());
        }
        Err(DataFusionError::External(Box::new(LakeMoved {
            table: self.t.def.qualified(),
        })))
    }
}

/// The lake changed while a statement read it (40001).
#[derive(Debug, thiserror::Error)]
#[error(
    "could not serialize access: rows of {table} moved to the lake while the statement read it; run the statement again"
)]
pub(crate) struct LakeMoved {
    pub table: String,
}

/// Opens a binary cursor (simple protocol) or a named portal (extended
/// protocol) for `sql` on the statement's connection.
async fn open(ctx: &ScanContext, sql: &str) -> Result<Fetch> {
    if ctx.extended {
        let n = NEXT_PORTAL.fetch_add(1, Ordering::Relaxed);
        let (statement, portal) = (format!("thermocline_s{n}"), format!("thermocline_p{n}"));
        let mut msgs = Vec::new();
        super::link::frontend::parse(&mut msgs, &statement, sql);
        super::link::frontend::bind_binary(&mut msgs, &portal, &statement);
        {
            let mut link = ctx.link.lock().await;
            link.extended(&msgs, 2).await.map_err(link_error)?;
        }
        ctx.portals
            .lock()
            .expect("not poisoned")
            .push((statement, portal.clone()));
        Ok(Fetch::Portal(portal))
    } else {
        let mut link = ctx.link.lock().await;
        let (cursor, _) = declare(ctx, &mut link, sql, false).await?;
        Ok(Fetch::Cursor(cursor))
    }
}

/// Declares a binary cursor for `sql` (simple protocol), and with
/// `fetch_first` fetches its first rows in the same query: the cursor's
/// name and the replies.
async fn declare(
    ctx: &ScanContext,
    link: &mut super::link::PgLink,
    sql: &str,
    fetch_first: bool,
) -> Result<(String, Vec<super::link::BackendMessage>)> {
    let cursor = format!(
        "thermocline_c{}",
        ctx.next_cursor.fetch_add(1, Ordering::Relaxed)
    );
    let mut query = format!("DECLARE {cursor} BINARY NO SCROLL CURSOR FOR {sql}");
    if fetch_first {
        query.push_str(&format!("; FETCH FORWARD {FETCH_ROWS} FROM {cursor}"));
    }
    let messages = link.simple(&query).await.map_err(link_error)?;
    ctx.cursors
        .lock()
        .expect("not poisoned")
        .push(cursor.clone());
    Ok((cursor, messages))
}

fn link_error(e: LinkError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Postgres's error at the root of `e`, if that is what failed it.
pub(crate) fn postgres_error(e: &DataFusionError) -> Option<&super::link::BackendMessage> {
    match e.find_root() {
        DataFusionError::External(inner) => match inner.downcast_ref::<LinkError>() {
            Some(LinkError::Postgres(m)) => Some(m),
            _ => None,
        },
        _ => None,
    }
}

/// Where a tiered table's rows divide.
#[derive(Debug)]
pub(super) struct Split {
    /// The watermark, microseconds since 1970.
    pub(super) w: i64,
    pub(super) time_pos: usize,
    pub(super) key_pos: Vec<usize>,
    pub(super) table: Table,
    pub(super) t: Arc<TieredTable>,
}

/// How hot rows are read: a binary cursor (simple protocol) or a named
/// portal executed a batch at a time (extended protocol).
#[derive(Debug, Clone)]
pub(super) enum Fetch {
    Cursor(String),
    Portal(String),
    /// Opened at the first fetch (only under a snapshot fixed for the whole
    /// statement).
    Open(String),
    /// Being declared since the scan was planned (only under a snapshot
    /// fixed for the whole statement).
    Early(Arc<Early>),
    /// Run to its end at the first fetch, all rows at once (Postgres may
    /// then plan it in parallel, which it never does for a cursor); for
    /// aggregates, under a snapshot fixed for the whole statement.
    Whole(String),
    /// As `Whole`, with a date_trunc of the time column evaluated as
    /// ranges.
    Buckets(String, Arc<Buckets>),
}

/// A cursor declared as its scan is planned, before the plan runs.
#[derive(Debug)]
pub(super) struct Early {
    sql: String,
    /// Taken by the scan's first execution.
    declaring: std::sync::Mutex<Option<tokio::task::JoinHandle<Result<String>>>>,
}

impl Early {
    fn declare(ctx: &Arc<ScanContext>, sql: &str) -> Self {
        let (ctx, query) = (ctx.clone(), sql.to_string());
        let declaring = tokio::spawn(async move {
            let mut link = ctx.link.lock().await;
            declare(&ctx, &mut link, &query, false)
                .await
                .map(|(cursor, _)| cursor)
        });
        Self {
            sql: sql.to_string(),
            declaring: std::sync::Mutex::new(Some(declaring)),
        }
    }

    /// The cursor declared; for an execution after the first, one to
    /// declare as it is fetched.
    async fn cursor(&self) -> Result<Fetch> {
        let declaring = self.declaring.lock().ok().and_then(|mut d| d.take());
        match declaring {
            Some(handle) => match handle.await {
                Ok(declared) => declared.map(Fetch::Cursor),
                Err(e) => Err(DataFusionError::External(Box::new(e))),
            },
            None => Ok(Fetch::Open(self.sql.clone())),
        }
    }
}

/// The hot rows: FETCHes from a binary cursor, stragglers checked.
#[derive(Debug)]
pub(super) struct HotPartition {
    pub(super) ctx: Arc<ScanContext>,
    pub(super) cursor: Fetch,
    pub(super) columns: Vec<ScanColumn>,
    pub(super) read_schema: SchemaRef,
    pub(super) out_schema: SchemaRef,
    pub(super) out_pos: Vec<usize>,
    pub(super) split: Option<Arc<Split>>,
    pub(super) late: Option<Arc<LateCheck>>,
}

impl PartitionStream for HotPartition {
    fn schema(&self) -> &SchemaRef {
        &self.out_schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        struct State {
            ctx: Arc<ScanContext>,
            fetch: Fetch,
            columns: Vec<ScanColumn>,
            read_schema: SchemaRef,
            out_schema: SchemaRef,
            out_pos: Vec<usize>,
            split: Option<Arc<Split>>,
            late: Option<Arc<LateCheck>>,
            done: bool,
        }
        let state = State {
            ctx: self.ctx.clone(),
            fetch: self.cursor.clone(),
            columns: self.columns.clone(),
            read_schema: self.read_schema.clone(),
            out_schema: self.out_schema.clone(),
            out_pos: self.out_pos.clone(),
            split: self.split.clone(),
            late: self.late.clone(),
            done: false,
        };
        let stream = futures::stream::unfold(state, |mut s| async move {
            if s.done {
                return None;
            }
            let result = async {
                // A query sent after the lake was read: its snapshot is
                // taken once it is opened or run.
                let mut sent_late = false;
                if let (Fetch::Open(_) | Fetch::Whole(_) | Fetch::Buckets(..), Some(late)) =
                    (&s.fetch, &s.late)
                {
                    late.delay_for_tests().await;
                }
                if let Fetch::Early(early) = &s.fetch {
                    s.fetch = early.cursor().await?;
                }
                let mut whole = false;
                let extended = s.ctx.extended;
                if let (Fetch::Open(sql), true) = (&s.fetch, extended) {
                    s.fetch = open(&s.ctx, sql).await?;
                    sent_late = true;
                }
                let messages = {
                    let mut link = s.ctx.link.lock().await;
                    match &s.fetch {
                        Fetch::Open(sql) => {
                            let (cursor, messages) = declare(&s.ctx, &mut link, sql, true).await?;
                            s.fetch = Fetch::Cursor(cursor);
                            sent_late = true;
                            messages
                        }
                        Fetch::Cursor(c) => link
                            .simple(&format!("FETCH FORWARD {FETCH_ROWS} FROM {c}"))
                            .await
                            .map_err(link_error)?,
                        Fetch::Early(_) => {
                            return Err(DataFusionError::Internal(
                                "a cursor declared early was fetched before it was taken".into(),
                            ));
                        }
                        Fetch::Portal(p) => {
                            let mut msgs = Vec::new();
                            super::link::frontend::execute(&mut msgs, p, FETCH_ROWS as i32);
                            link.extended(&msgs, 1).await.map_err(link_error)?
                        }
                        Fetch::Whole(sql) => {
                            (whole, sent_late) = (true, true);
                            run_whole(&mut link, sql, extended).await?
                        }
                        Fetch::Buckets(sql, b) => {
                            (whole, sent_late) = (true, true);
                            let sql = b.apply(&mut link, sql, extended).await?;
                            run_whole(&mut link, &sql, extended).await?
                        }
                    }
                };
                if let (true, Some(late)) = (sent_late, &s.late) {
                    late.ensure().await?;
                }
                let (batch, rows) = decode_rows(&messages, &s.columns, &s.read_schema)?;
                if rows < FETCH_ROWS || whole {
                    s.done = true;
                }
                let batch = match &s.split {
                    Some(split) => drop_stragglers_in_cold(split, batch).await?,
                    None => batch,
                };
                project(&batch, &s.out_pos, &s.out_schema)
            }
            .await;
            if result.is_err() {
                s.done = true;
            }
            Some((result, s))
        });
        Box::pin(RecordBatchStreamAdapter::new(
            self.out_schema.clone(),
            stream,
        ))
    }
}

/// The DataRows among `messages` (binary fields of `columns`' types) as
/// one batch of `schema`, with how many rows it holds.
pub(crate) fn decode_rows(
    messages: &[super::link::BackendMessage],
    columns: &[ScanColumn],
    schema: &SchemaRef,
) -> Result<(RecordBatch, usize)> {
    let mut builders: Vec<_> = columns
        .iter()
        .map(|c| c.pg_type.builder(FETCH_ROWS))
        .collect();
    let mut rows = 0usize;
    for m in messages.iter().filter(|m| m.tag == b'D') {
        let fields = data_row_fields(&m.body)
            .ok_or_else(|| DataFusionError::Execution("malformed DataRow".into()))?;
        for ((c, b), v) in columns.iter().zip(&mut builders).zip(fields) {
            c.pg_type
                .append_binary(b.as_mut(), v)
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
        }
        rows += 1;
    }
    let arrays = builders
        .iter_mut()
        .zip(schema.fields())
        .map(|(b, f)| cast(&b.finish(), f.data_type()))
        .collect::<std::result::Result<Vec<ArrayRef>, _>>()?;
    let batch = RecordBatch::try_new_with_options(
        schema.clone(),
        arrays,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )?;
    Ok((batch, rows))
}

fn project(batch: &RecordBatch, positions: &[usize], schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = positions.iter().map(|&p| batch.column(p).clone()).collect();
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

/// Keeps hot rows at or after W, and hot rows before W (stragglers) whose
/// key the cold tier does not hold.
async fn drop_stragglers_in_cold(split: &Split, batch: RecordBatch) -> Result<RecordBatch> {
    let time = batch.column(split.time_pos);
    let old: Vec<usize> = (0..batch.num_rows())
        .filter(|&r| crate::tiering::mover::time_micros(time, r).is_some_and(|v| v < split.w))
        .collect();
    if old.is_empty() {
        return Ok(batch);
    }
    let keys = cold_keys_at(&split.table, &split.t, &batch, &split.key_pos, &old)
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    if keys.is_empty() {
        return Ok(batch);
    }
    let keep: BooleanArray = (0..batch.num_rows())
        .map(|r| Some(!keys.contains(&row_key(&batch, &split.key_pos, r))))
        .collect();
    Ok(filter_record_batch(&batch, &keep)?)
}

/// How a plain table's numeric without a precision is read: as its text.
pub(crate) const NUMERIC_TEXT: PgType = PgType::Text(crate::pgtypes::oid::NUMERIC);

/// Columns of a table, for a scan: the ones thermocline can read, with
/// their Postgres column numbers; and the names of those it cannot, each
/// with its type as Postgres writes it. A `plain` table's numeric without
/// a precision is read as its text (see [`ScanContext::numeric_text`]).
pub(crate) fn scan_columns(
    rows: &[(String, u32, i32, String, i16, Option<Vec<String>>)],
    plain: bool,
) -> (Vec<ScanColumn>, Vec<i16>, Vec<(String, String)>) {
    let (mut columns, mut attnums, mut left_out) = (Vec::new(), Vec::new(), Vec::new());
    for (name, oid, typmod, type_name, attnum, labels) in rows {
        // A column of a type the executor cannot carry exactly (an inet,
        // …) is left out: a statement that uses it fails to plan, with
        // 0A000 (see [`ScanContext::left_out`]).
        let read = match PgType::of_column(*oid, *typmod, type_name, labels.is_some()) {
            Err(crate::pgtypes::TypeError::UnboundedNumeric)
                if plain && *oid == crate::pgtypes::oid::NUMERIC =>
            {
                Ok(NUMERIC_TEXT)
            }
            read => read,
        };
        match read {
            Ok(pg_type) => {
                columns.push(ScanColumn {
                    name: name.clone(),
                    pg_type,
                    labels: labels.clone().map(Arc::new),
                });
                attnums.push(*attnum);
            }
            Err(_) => left_out.push((name.clone(), type_name.clone())),
        }
    }
    (columns, attnums, left_out)
}
