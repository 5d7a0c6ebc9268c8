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
use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::{
    Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use futures::StreamExt;
use iceberg::table::Table;
use iceberg_datafusion::IcebergStaticTableProvider;
use tokio::sync::Mutex;

use super::link::{LinkError, PgLink, data_row_fields};
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
}

/// Names of thermocline's own statements and portals, unique per process
/// so that one left behind by a failed statement never collides.
static NEXT_PORTAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl ScanContext {
    pub(crate) fn new(link: SharedLink, time_zone: &str) -> Self {
        Self {
            link,
            cursors: Default::default(),
            next_cursor: AtomicU32::new(1),
            time_zone: time_zone.into(),
            trace: Default::default(),
            extended: false,
            portals: Default::default(),
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
            .map(|c| Field::new(&c.name, exec_type(c.pg_type, tz), true))
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
}

impl FederatedTable {
    pub(crate) fn new(
        ctx: Arc<ScanContext>,
        qualified: String,
        columns: Vec<ScanColumn>,
        tiered: Option<(Arc<TieredTable>, crate::lake::Lake)>,
    ) -> Self {
        let schema = schema_of(&columns, &ctx.time_zone);
        Self {
            ctx,
            qualified,
            columns,
            schema,
            tiered,
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
        Ok(filters
            .iter()
            .map(|f| {
                if to_pg_sql(f, &self.columns).is_some() {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
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
                .map(|&i| quote_ident(&self.columns[i].name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut sql = format!("SELECT {list} FROM {}", self.qualified);
        if !wheres.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&wheres.join(" AND "));
        }
        // The cursor (or portal) first: its snapshot is taken now, before
        // the Iceberg snapshot is chosen below.
        let cursor = if self.ctx.extended {
            let n = NEXT_PORTAL.fetch_add(1, Ordering::Relaxed);
            let (statement, portal) = (format!("thermocline_s{n}"), format!("thermocline_p{n}"));
            let mut msgs = Vec::new();
            super::link::frontend::parse(&mut msgs, &statement, &sql);
            super::link::frontend::bind_binary(&mut msgs, &portal, &statement);
            {
                let mut link = self.ctx.link.lock().await;
                link.extended(&msgs, 2).await.map_err(link_error)?;
            }
            self.ctx
                .portals
                .lock()
                .expect("not poisoned")
                .push((statement, portal.clone()));
            Fetch::Portal(portal)
        } else {
            let cursor = format!(
                "thermocline_c{}",
                self.ctx.next_cursor.fetch_add(1, Ordering::Relaxed)
            );
            let mut link = self.ctx.link.lock().await;
            link.simple(&format!(
                "DECLARE {cursor} BINARY NO SCROLL CURSOR FOR {sql}"
            ))
            .await
            .map_err(link_error)?;
            self.ctx
                .cursors
                .lock()
                .expect("not poisoned")
                .push(cursor.clone());
            Fetch::Cursor(cursor)
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
        let mut cold_part: Option<Arc<dyn PartitionStream>> = None;
        let mut split = None;
        if let Some((t, lake)) = &self.tiered {
            let table = lake.load(t).await.map_err(|e| {
                DataFusionError::External(Box::new(ColdTierUnavailable {
                    table: t.def.qualified(),
                    lake_table: format!("{}.{}", t.def.lake_namespace, t.def.lake_table),
                    message: e.to_string(),
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
                cold_part = Some(Arc::new(
                    cold_partition(
                        state,
                        &table,
                        t,
                        &read_columns,
                        filters,
                        w,
                        time_pos,
                        &self.ctx.time_zone,
                        out_schema.clone(),
                    )
                    .await?,
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
        let hot = HotPartition {
            ctx: self.ctx.clone(),
            cursor,
            columns: read_columns,
            read_schema: schema_of(
                &read
                    .iter()
                    .map(|&i| self.columns[i].clone())
                    .collect::<Vec<_>>(),
                &self.ctx.time_zone,
            ),
            out_schema: out_schema.clone(),
            out_pos,
            split: split.map(Arc::new),
        };
        let mut parts: Vec<Arc<dyn PartitionStream>> = vec![Arc::new(hot)];
        parts.extend(cold_part);
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

/// The lake could not be read for a tiered table.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the cold tier of {table} (Iceberg table {lake_table}): {message}")]
pub(crate) struct ColdTierUnavailable {
    pub table: String,
    pub lake_table: String,
    pub message: String,
}

/// An error reading the lake, as the client sees it: naming the tier.
fn cold_error(names: &(String, String), e: DataFusionError) -> DataFusionError {
    match e {
        // A memory limit is not the lake's failure.
        DataFusionError::ResourcesExhausted(_) => e,
        e => DataFusionError::External(Box::new(ColdTierUnavailable {
            table: names.0.clone(),
            lake_table: names.1.clone(),
            message: e.to_string(),
        })),
    }
}

fn link_error(e: LinkError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Where a tiered table's rows divide.
#[derive(Debug)]
struct Split {
    /// The watermark, microseconds since 1970.
    w: i64,
    time_pos: usize,
    key_pos: Vec<usize>,
    table: Table,
    t: Arc<TieredTable>,
}

/// How hot rows are read: a binary cursor (simple protocol) or a named
/// portal executed a batch at a time (extended protocol).
#[derive(Debug, Clone)]
enum Fetch {
    Cursor(String),
    Portal(String),
}

/// The hot rows: FETCHes from a binary cursor, stragglers checked.
#[derive(Debug)]
struct HotPartition {
    ctx: Arc<ScanContext>,
    cursor: Fetch,
    columns: Vec<ScanColumn>,
    read_schema: SchemaRef,
    out_schema: SchemaRef,
    out_pos: Vec<usize>,
    split: Option<Arc<Split>>,
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
            done: false,
        };
        let stream = futures::stream::unfold(state, |mut s| async move {
            if s.done {
                return None;
            }
            let result = async {
                let messages = {
                    let mut link = s.ctx.link.lock().await;
                    match &s.fetch {
                        Fetch::Cursor(c) => link
                            .simple(&format!("FETCH FORWARD {FETCH_ROWS} FROM {c}"))
                            .await
                            .map_err(link_error)?,
                        Fetch::Portal(p) => {
                            let mut msgs = Vec::new();
                            super::link::frontend::execute(&mut msgs, p, FETCH_ROWS as i32);
                            link.extended(&msgs, 1).await.map_err(link_error)?
                        }
                    }
                };
                let mut builders: Vec<_> = s
                    .columns
                    .iter()
                    .map(|c| c.pg_type.builder(FETCH_ROWS))
                    .collect();
                let mut rows = 0usize;
                for m in messages.iter().filter(|m| m.tag == b'D') {
                    let fields = data_row_fields(&m.body)
                        .ok_or_else(|| DataFusionError::Execution("malformed DataRow".into()))?;
                    for ((c, b), v) in s.columns.iter().zip(&mut builders).zip(fields) {
                        c.pg_type
                            .append_binary(b.as_mut(), v)
                            .map_err(|e| DataFusionError::External(Box::new(e)))?;
                    }
                    rows += 1;
                }
                if rows < FETCH_ROWS {
                    s.done = true;
                }
                let arrays = builders
                    .iter_mut()
                    .zip(s.read_schema.fields())
                    .map(|(b, f)| cast(&b.finish(), f.data_type()))
                    .collect::<std::result::Result<Vec<ArrayRef>, _>>()?;
                let batch = RecordBatch::try_new_with_options(
                    s.read_schema.clone(),
                    arrays,
                    &RecordBatchOptions::new().with_row_count(Some(rows)),
                )?;
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

/// A row's key as one comparable string.
pub fn row_key(batch: &RecordBatch, key_pos: &[usize], row: usize) -> String {
    let mut out = String::new();
    for &k in key_pos {
        let v = ScalarValue::try_from_array(batch.column(k).as_ref(), row)
            .map(|v| v.to_string())
            .unwrap_or_default();
        out.push_str(&v);
        out.push('\u{1f}');
    }
    out
}

/// The keys among `rows` of `batch` (whose key columns are at `key_pos`)
/// that the cold tier holds.
pub(crate) async fn cold_keys_at(
    table: &Table,
    t: &TieredTable,
    batch: &RecordBatch,
    key_pos: &[usize],
    rows: &[usize],
) -> std::result::Result<crate::tiering::mover::KeySet, crate::tiering::TieringError> {
    use crate::tiering::TieringError;
    let data = |e: DataFusionError| TieringError::Data(e.to_string());
    let provider = IcebergStaticTableProvider::try_new_from_table(table.clone()).await?;
    let cold_schema = provider.schema();
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_table("cold", Arc::new(provider))
        .map_err(data)?;
    let mut df = ctx.table("cold").await.map_err(data)?;
    let mut selected = Vec::new();
    for (&k, &pos) in t.key.iter().zip(key_pos) {
        let name = &t.columns[k].name;
        let field = cold_schema
            .field_with_name(name)
            .map_err(|e| TieringError::Data(e.to_string()))?;
        let mut values = Vec::with_capacity(rows.len());
        for &r in rows {
            let v = ScalarValue::try_from_array(batch.column(pos).as_ref(), r).map_err(data)?;
            values.push(datafusion::prelude::lit(
                v.cast_to(field.data_type()).map_err(data)?,
            ));
        }
        let column =
            datafusion::prelude::Expr::Column(datafusion::common::Column::new_unqualified(name));
        df = df
            .filter(column.clone().in_list(values, false))
            .map_err(data)?;
        selected.push(column);
    }
    let batches = df
        .select(selected)
        .map_err(data)?
        .collect()
        .await
        .map_err(data)?;
    let mut keys = crate::tiering::mover::KeySet::new();
    let positions: Vec<usize> = (0..t.key.len()).collect();
    for b in batches {
        // Cold key columns back to the hot side's types, so keys compare equal.
        let cols = b
            .columns()
            .iter()
            .zip(&t.key)
            .map(|(c, &k)| cast(c, &t.columns[k].pg_type.arrow()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| TieringError::Data(e.to_string()))?;
        let fields: Vec<Field> = t
            .key
            .iter()
            .map(|&k| Field::new(&t.columns[k].name, t.columns[k].pg_type.arrow(), true))
            .collect();
        let b = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
            .map_err(|e| TieringError::Data(e.to_string()))?;
        for r in 0..b.num_rows() {
            keys.insert(row_key(&b, &positions, r));
        }
    }
    Ok(keys)
}

/// The cold rows: the Iceberg scan, pruned by the statement's filters and
/// by `time < W`, cast to the executor's types.
#[derive(Debug)]
struct ColdPartition {
    /// `schema.table` and the Iceberg table, for errors.
    names: (String, String),
    plan: Arc<dyn ExecutionPlan>,
    /// For each output column, its position in the plan's output.
    out_pos: Vec<usize>,
    time_pos: usize,
    w: i64,
    out_schema: SchemaRef,
}

#[allow(clippy::too_many_arguments)]
async fn cold_partition(
    state: &dyn Session,
    table: &Table,
    t: &TieredTable,
    read: &[ScanColumn],
    filters: &[Expr],
    w: i64,
    time_pos: usize,
    tz: &str,
    out_schema: SchemaRef,
) -> Result<ColdPartition> {
    let provider = IcebergStaticTableProvider::try_new_from_table(table.clone())
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    let cold_schema = provider.schema();
    let projection = read
        .iter()
        .map(|c| cold_schema.index_of(&c.name))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    // Pruning only: rows are filtered again below and above the scan.
    let mut pushed: Vec<Expr> = Vec::new();
    let time = &t.time_column().name;
    let w_literal = match t.time_column().pg_type {
        PgType::Date => ScalarValue::Date32(Some(w.div_euclid(86_400_000_000) as i32)),
        PgType::Timestamp => ScalarValue::TimestampMicrosecond(Some(w), None),
        _ => ScalarValue::TimestampMicrosecond(Some(w), Some("+00:00".into())),
    };
    pushed.push(Expr::BinaryExpr(BinaryExpr::new(
        Box::new(Expr::Column(datafusion::common::Column::new_unqualified(
            time,
        ))),
        Operator::Lt,
        Box::new(Expr::Literal(w_literal, None)),
    )));
    for f in filters {
        if is_plain_filter(f) {
            pushed.push(datafusion::logical_expr::expr_rewriter::unnormalize_col(
                f.clone(),
            ));
        }
    }
    let names = (
        t.def.qualified(),
        format!("{}.{}", t.def.lake_namespace, t.def.lake_table),
    );
    let plan = provider
        .scan(state, Some(&projection), &pushed, None)
        .await
        .map_err(|e| cold_error(&names, e))?;
    let _ = tz;
    Ok(ColdPartition {
        names,
        plan,
        out_pos: (0..out_schema.fields().len()).collect(),
        time_pos,
        w,
        out_schema,
    })
}

/// Filters safe to hand to the Iceberg scan for pruning: comparisons of
/// columns with literals whose types Iceberg reads the same way.
fn is_plain_filter(e: &Expr) -> bool {
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            matches!(op, Operator::And) && is_plain_filter(left) && is_plain_filter(right)
                || matches!(
                    op,
                    Operator::Eq | Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq
                ) && matches!(left.as_ref(), Expr::Column(_))
                    && matches!(right.as_ref(), Expr::Literal(v, _) if matches!(v,
                        ScalarValue::Int32(Some(_)) | ScalarValue::Int64(Some(_)) | ScalarValue::Date32(Some(_))))
        }
        _ => false,
    }
}

impl PartitionStream for ColdPartition {
    fn schema(&self) -> &SchemaRef {
        &self.out_schema
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let schema = self.out_schema.clone();
        let (out_pos, time_pos, w) = (self.out_pos.clone(), self.time_pos, self.w);
        let names = self.names.clone();
        let input = match self.plan.execute(0, ctx) {
            Ok(s) => s,
            Err(e) => {
                let e = cold_error(&names, e);
                return Box::pin(RecordBatchStreamAdapter::new(
                    schema,
                    futures::stream::once(async move { Err(e) }),
                ));
            }
        };
        let out = schema.clone();
        let stream = input.map(move |batch| {
            let batch = batch.map_err(|e| cold_error(&names, e))?;
            let time = batch.column(time_pos);
            let time = cast(time, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
            let keep: BooleanArray = (0..batch.num_rows())
                .map(|r| {
                    Some(
                        !time.is_null(r)
                            && time
                                .as_any()
                                .downcast_ref::<datafusion::arrow::array::TimestampMicrosecondArray>()
                                .is_some_and(|a| a.value(r) < w),
                    )
                })
                .collect();
            let batch = filter_record_batch(&batch, &keep)?;
            let columns = out_pos
                .iter()
                .zip(out.fields())
                .map(|(&p, f)| cast(batch.column(p), f.data_type()))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(RecordBatch::try_new_with_options(
                out.clone(),
                columns,
                &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
            )?)
        });
        Box::pin(RecordBatchStreamAdapter::new(schema, stream))
    }
}

/// A filter as Postgres SQL, for the filters thermocline can write exactly:
/// comparisons, AND/OR/NOT, IS [NOT] NULL, IN lists and BETWEEN over
/// columns and literals. String comparisons other than equality are left
/// to the executor (Postgres would compare under the column's collation).
pub(crate) fn to_pg_sql(e: &Expr, columns: &[ScanColumn]) -> Option<String> {
    match e {
        Expr::Column(c) => columns
            .iter()
            .find(|x| x.name == c.name)
            .map(|x| quote_ident(&x.name)),
        Expr::Literal(v, _) => literal_sql(v),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let op_sql = match op {
                Operator::Eq => "=",
                Operator::NotEq => "<>",
                Operator::Lt => "<",
                Operator::LtEq => "<=",
                Operator::Gt => ">",
                Operator::GtEq => ">=",
                Operator::And => "AND",
                Operator::Or => "OR",
                _ => return None,
            };
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

fn literal_sql(v: &ScalarValue) -> Option<String> {
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

/// Columns of a non-tiered table, for a scan: the ones thermocline can read.
pub(crate) fn scan_columns(rows: &[(String, u32, i32, String)]) -> Vec<ScanColumn> {
    rows.iter()
        .filter_map(|(name, oid, typmod, type_name)| {
            // A column of a type the executor cannot carry exactly (an
            // unbounded numeric, an array, …) is left out: a statement
            // that uses it fails to plan, with 0A000.
            let pg_type = PgType::from_oid(*oid, *typmod, type_name).ok()?;
            Some(ScanColumn {
                name: name.clone(),
                pg_type,
            })
        })
        .collect()
}
