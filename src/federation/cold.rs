//! The cold side of a tiered table's scan: the Iceberg scan pruned by the
//! watermark and by simple filters, cast to the executor's types; and the
//! key lookups that tell which stragglers the lake already holds.

use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use futures::{StreamExt, TryStreamExt};
use iceberg::table::Table;
use iceberg_datafusion::IcebergStaticTableProvider;
use iceberg_datafusion::physical_plan::IcebergTableScan;

use super::scan::ScanColumn;
use crate::pgtypes::PgType;
use crate::tiering::TieredTable;

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
    let current = table.metadata().current_schema();
    for (&k, &pos) in t.key.iter().zip(key_pos) {
        let c = &t.columns[k];
        let name = &crate::lake::field_of(current, c.attnum, &c.name)
            .ok_or_else(|| {
                TieringError::Data(format!("the lake has no field for key column {:?}", c.name))
            })?
            .name;
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
        let key_columns: Vec<_> = t.key.iter().map(|&k| &t.columns[k]).collect();
        let b = crate::tiering::with_hot_types(&b, &key_columns)?;
        for r in 0..b.num_rows() {
            keys.insert(row_key(&b, &positions, r));
        }
    }
    Ok(keys)
}

/// The cold rows: the Iceberg scan, pruned by the statement's filters and
/// by `time < W`, cast to the executor's types.
#[derive(Debug)]
pub(super) struct ColdPartition {
    /// `schema.table` and the Iceberg table, for errors.
    names: (String, String),
    plan: Arc<dyn ExecutionPlan>,
    /// For each output column, its position in the plan's output; `None`
    /// for a column the lake does not hold yet (added in Postgres since
    /// the last move): it reads NULL.
    out_pos: Vec<Option<usize>>,
    time_pos: usize,
    w: i64,
    out_schema: SchemaRef,
    /// The filters handed to the Iceberg scan for pruning.
    pub pruning: Vec<Expr>,
    /// The filters the Parquet reader tests row by row.
    row_filters: Vec<Expr>,
    /// Bounds on the time column this side applies itself (see
    /// [`exact_time_bound`]): the executor does not test them again.
    bounds: Vec<(Operator, i64)>,
    /// The scan, begun before the plan is run (see [`ColdPartition::begin`]).
    begun: std::sync::Mutex<Option<Begun>>,
}

/// A lake scan begun ahead of its execution.
struct Begun(SendableRecordBatchStream);

impl std::fmt::Debug for Begun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Begun")
    }
}

impl ColdPartition {
    /// Begins reading the lake now, while the rest of the statement is
    /// planned: its first execution takes these rows. Dropped unread
    /// (the plan was not run), the readers stop.
    pub(super) fn begin(&self) {
        if let Some(scan) = self.plan.as_any().downcast_ref::<IcebergTableScan>()
            && let Ok(mut begun) = self.begun.lock()
        {
            *begun = Some(Begun(parallel_scan(scan, &self.row_filters)));
        }
    }
}

pub(super) async fn cold_partition(
    state: &dyn Session,
    table: &Table,
    t: &TieredTable,
    read: &[ScanColumn],
    filters: &[Expr],
    w: i64,
    out_schema: SchemaRef,
) -> Result<ColdPartition> {
    let provider = IcebergStaticTableProvider::try_new_from_table(table.clone())
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    let cold_schema = provider.schema();
    // Columns are matched to the lake's fields by Postgres column number:
    // one renamed, retyped or dropped and added again in Postgres since the
    // last move is still read right.
    let metadata = table.metadata();
    let lake_field = |name: &str| {
        let c = t.columns.iter().find(|c| c.name == name)?;
        crate::lake::field_of(metadata.current_schema(), c.attnum, &c.name)
    };
    let found: Vec<Option<usize>> = read
        .iter()
        .map(|c| lake_field(&c.name).and_then(|f| cold_schema.index_of(&f.name).ok()))
        .collect();
    // A filter goes to the scan only over columns the lake holds under the
    // same name and in one type throughout its files.
    let same_in_lake = |name: &str| {
        lake_field(name)
            .is_some_and(|f| f.name == name && crate::lake::never_retyped(metadata, f.id))
    };
    // Asked for in the lake's own order: Iceberg's reader lines a file's
    // columns up with the projection by position when their types agree,
    // so a projection in another order could swap two columns of one type.
    let mut projection: Vec<usize> = found.iter().flatten().copied().collect();
    projection.sort_unstable();
    projection.dedup();
    let out_pos: Vec<Option<usize>> = found
        .iter()
        .map(|f| f.and_then(|i| projection.iter().position(|&p| p == i)))
        .collect();
    let time_pos = read
        .iter()
        .position(|c| c.name == t.time_column().name)
        .and_then(|i| out_pos[i])
        .ok_or_else(|| DataFusionError::Internal("the time column is always read".into()))?;
    // Pruning only: rows are filtered again below and above the scan.
    let mut pushed: Vec<Expr> = Vec::new();
    let time = &t.time_column().name;
    let time_type = t.time_column().pg_type;
    let lake_time = lake_field(time)
        .map(|f| f.name.clone())
        .ok_or_else(|| DataFusionError::Internal("the lake has no time field".into()))?;
    let time_is = |op: Operator, micros: i64| {
        let literal = match time_type {
            PgType::Date => ScalarValue::Date32(Some(micros.div_euclid(86_400_000_000) as i32)),
            PgType::Timestamp => ScalarValue::TimestampMicrosecond(Some(micros), None),
            _ => ScalarValue::TimestampMicrosecond(Some(micros), Some("+00:00".into())),
        };
        Expr::BinaryExpr(BinaryExpr::new(
            Box::new(Expr::Column(datafusion::common::Column::new_unqualified(
                &lake_time,
            ))),
            op,
            Box::new(Expr::Literal(literal, None)),
        ))
    };
    pushed.push(time_is(Operator::Lt, w));
    for f in filters {
        let known = f.column_refs().iter().all(|c| same_in_lake(&c.name));
        if known && is_plain_filter(f) {
            pushed.push(datafusion::logical_expr::expr_rewriter::unnormalize_col(
                f.clone(),
            ));
        } else if let Some((op, micros)) = time_bound(f, t) {
            // A bound on a timestamp time column, in the form of the
            // watermark's own (which Iceberg reads as the same instant).
            pushed.push(time_is(op, micros));
        }
    }
    let names = (
        t.def.qualified(),
        format!("{}.{}", t.def.lake_namespace, t.def.lake_table),
    );
    // Every row in the lake is older than its watermark, so the scan is
    // not asked to test `time < W` row by row (a row filter makes the
    // Parquet reader decode the time column in a pass of its own).
    let plan = provider
        .scan(state, Some(&projection), &pushed[1..], None)
        .await
        .map_err(|e| cold_error(&names, e))?;
    // Bounds on the time column prune partitions, files and row groups;
    // row by row they are tested above the scan anyway, so the Parquet
    // reader is spared a pass over the time column of every group a range
    // covers whole. Other filters (a key, say) stay row filters: the
    // reader then decodes only the pages that may hold matching rows.
    let row_filters = pushed[1..]
        .iter()
        .filter(|e| !e.column_refs().iter().any(|c| c.name == lake_time))
        .cloned()
        .collect();
    let bounds = filters
        .iter()
        .filter_map(|f| exact_time_bound(f, t))
        .collect();
    Ok(ColdPartition {
        names,
        plan,
        out_pos,
        time_pos,
        w,
        out_schema,
        pruning: pushed,
        row_filters,
        bounds,
        begun: Default::default(),
    })
}

/// What a scan with given pruning filters reads of a lake table's current
/// snapshot, for EXPLAIN.
pub(crate) struct LakeReads {
    pub files_read: usize,
    pub files: usize,
    /// The partitions read, named by their time (`2026-10`), in order.
    pub partitions_read: Vec<String>,
    pub partitions: usize,
}

/// The data files and partitions a scan with `pruning` reads, and those
/// the snapshot holds.
pub(crate) async fn lake_reads(table: &Table, pruning: &[Expr]) -> Option<LakeReads> {
    let files = table
        .metadata()
        .current_snapshot()?
        .summary()
        .additional_properties
        .get("total-data-files")?
        .parse()
        .ok()?;
    let partitions_of = |filter: Option<iceberg::expr::Predicate>| async move {
        let mut scan = table.scan();
        if let Some(p) = filter {
            scan = scan.with_filter(p);
        }
        let tasks: Vec<_> = scan
            .build()
            .ok()?
            .plan_files()
            .await
            .ok()?
            .filter_map(|t| futures::future::ready(t.ok()))
            .collect()
            .await;
        let names: std::collections::BTreeSet<String> = tasks
            .iter()
            .map(|t| {
                t.partition
                    .as_ref()
                    .map_or_else(String::new, |p| partition_name(table, p))
            })
            .collect();
        Some((tasks.len(), names))
    };
    let pruned = iceberg_datafusion::physical_plan::convert_filters_to_predicate(pruning);
    let (files_read, read) = partitions_of(pruned).await?;
    let (_, all) = partitions_of(None).await?;
    Some(LakeReads {
        files_read,
        files,
        partitions_read: read.into_iter().collect(),
        partitions: all.len(),
    })
}

/// A partition named by the time it holds: `2026`, `2026-10`,
/// `2026-10-24` or `2026-10-24-13`, as its transform of the time column.
fn partition_name(table: &Table, partition: &iceberg::spec::Struct) -> String {
    use iceberg::spec::{Literal, PrimitiveLiteral, Transform};
    let transform = table
        .metadata()
        .default_partition_spec()
        .fields()
        .first()
        .map(|f| f.transform);
    let value = match partition.fields().first() {
        Some(Some(Literal::Primitive(PrimitiveLiteral::Int(v)))) => *v as i64,
        Some(Some(Literal::Primitive(PrimitiveLiteral::Long(v)))) => *v,
        other => return format!("{other:?}"),
    };
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
    let named = match transform {
        Some(Transform::Year) => Some(format!("{}", 1970 + value)),
        Some(Transform::Month) => {
            let (y, m) = (1970 + value.div_euclid(12), value.rem_euclid(12) + 1);
            Some(format!("{y}-{m:02}"))
        }
        Some(Transform::Day) => epoch
            .checked_add_signed(chrono::Duration::days(value))
            .map(|d| d.format("%Y-%m-%d").to_string()),
        Some(Transform::Hour) => epoch
            .and_hms_opt(0, 0, 0)
            .and_then(|t| t.checked_add_signed(chrono::Duration::hours(value)))
            .map(|t| t.format("%Y-%m-%d-%H").to_string()),
        _ => None,
    };
    named.unwrap_or_else(|| value.to_string())
}

/// A bound on the time column for pruning: an exact one, or one on a
/// literal in nanoseconds cut to microseconds (a strict bound made
/// inclusive, so that no row it keeps is pruned).
fn time_bound(e: &Expr, t: &TieredTable) -> Option<(Operator, i64)> {
    if let Some(bound) = exact_time_bound(e, t) {
        return Some(bound);
    }
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else {
        return None;
    };
    let (Expr::Column(c), Expr::Literal(ScalarValue::TimestampNanosecond(Some(ns), tz), _)) =
        (left.as_ref(), right.as_ref())
    else {
        return None;
    };
    let pg_type = t.time_column().pg_type;
    if c.name != t.time_column().name
        || pg_type == PgType::Date
        || tz.is_some() != (pg_type == PgType::Timestamptz)
    {
        return None;
    }
    let op = match op {
        Operator::Gt | Operator::GtEq => Operator::GtEq,
        Operator::Lt | Operator::LtEq => Operator::LtEq,
        _ => return None,
    };
    Some((op, ns.div_euclid(1000)))
}

/// A filter comparing a tiered table's time column with a literal of its
/// own type and precision, as `(op, microseconds)`: one the tiered scan
/// applies exactly itself (Postgres to the hot rows, the cold side to the
/// lake's), so the executor need not test it again row by row.
pub(super) fn exact_time_bound(e: &Expr, t: &TieredTable) -> Option<(Operator, i64)> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = e else {
        return None;
    };
    if !matches!(
        op,
        Operator::Eq | Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq
    ) {
        return None;
    }
    let (Expr::Column(c), Expr::Literal(v, _)) = (left.as_ref(), right.as_ref()) else {
        return None;
    };
    if c.name != t.time_column().name {
        return None;
    }
    let pg_type = t.time_column().pg_type;
    let zoned = |tz: &Option<Arc<str>>| tz.is_some() == (pg_type == PgType::Timestamptz);
    let micros = match v {
        ScalarValue::Date32(Some(d)) if pg_type == PgType::Date => i64::from(*d) * 86_400_000_000,
        _ if pg_type == PgType::Date => return None,
        ScalarValue::TimestampMicrosecond(Some(us), tz) if zoned(tz) => *us,
        ScalarValue::TimestampMillisecond(Some(ms), tz) if zoned(tz) => ms.checked_mul(1000)?,
        ScalarValue::TimestampSecond(Some(s), tz) if zoned(tz) => s.checked_mul(1_000_000)?,
        ScalarValue::TimestampNanosecond(Some(ns), tz) if zoned(tz) && ns % 1000 == 0 => ns / 1000,
        _ => return None,
    };
    Some((*op, micros))
}

/// Whether every time from `lo` to `hi` meets `bound`.
fn meets_throughout((op, v): (Operator, i64), lo: i64, hi: i64) -> bool {
    match op {
        Operator::Lt => hi < v,
        Operator::LtEq => hi <= v,
        Operator::Gt => lo > v,
        Operator::GtEq => lo >= v,
        _ => lo == v && hi == v,
    }
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
        let bounds = self.bounds.clone();
        let names = self.names.clone();
        let scan = self.plan.as_any().downcast_ref::<IcebergTableScan>();
        let row_filters = self.row_filters.clone();
        let begun = self.begun.lock().ok().and_then(|mut b| b.take());
        let input = match begun.map(|b| Ok(b.0)).unwrap_or_else(|| {
            scan.map_or_else(
                || self.plan.execute(0, ctx),
                |s| Ok(parallel_scan(s, &row_filters)),
            )
        }) {
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
            let time = time
                .as_any()
                .downcast_ref::<datafusion::arrow::array::TimestampMicrosecondArray>()
                .ok_or_else(|| DataFusionError::Internal("time column cast".into()))?;
            // The lake holds rows older than W only: check it, and the
            // bounds this side applies; filter only a batch where they do
            // not hold throughout.
            let meets =
                |lo: i64, hi: i64| hi < w && bounds.iter().all(|&b| meets_throughout(b, lo, hi));
            let range =
                datafusion::arrow::compute::min(time).zip(datafusion::arrow::compute::max(time));
            let batch = if time.null_count() == 0 && range.is_some_and(|(lo, hi)| meets(lo, hi)) {
                batch
            } else {
                let keep: BooleanArray = time
                    .iter()
                    .map(|t| Some(t.is_some_and(|t| meets(t, t))))
                    .collect();
                filter_record_batch(&batch, &keep)?
            };
            let columns = out_pos
                .iter()
                .zip(out.fields())
                .map(|(p, f)| match p {
                    Some(p) => crate::lake::convert(batch.column(*p), f.data_type()),
                    None => Ok(datafusion::arrow::array::new_null_array(
                        f.data_type(),
                        batch.num_rows(),
                    )),
                })
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

/// Takes out of each task the list and struct fields (arrays, intervals)
/// its file lacks, having been written before they were added: Iceberg's
/// reader gives NULL for a missing field of a simple type, but fails on a
/// missing nested one. Only such fields absent from some schema of the table's history are looked for,
/// in the file's footer. True when a task changed (its batches then lack
/// columns, see [`aligned`]).
async fn without_late_nested(
    table: &Table,
    tasks: &mut [iceberg::scan::FileScanTask],
) -> std::result::Result<bool, iceberg::Error> {
    use datafusion::parquet::arrow::async_reader::AsyncFileReader;
    let metadata = table.metadata();
    let late: Vec<i32> = metadata
        .current_schema()
        .as_struct()
        .fields()
        .iter()
        .filter(|f| {
            matches!(
                f.field_type.as_ref(),
                iceberg::spec::Type::List(_) | iceberg::spec::Type::Struct(_)
            )
        })
        .filter(|f| {
            metadata
                .schemas_iter()
                .any(|s| s.field_by_id(f.id).is_none())
        })
        .map(|f| f.id)
        .collect();
    let mut changed = false;
    for task in tasks {
        if !task.project_field_ids.iter().any(|id| late.contains(id)) {
            continue;
        }
        let input = table.file_io().new_input(&task.data_file_path)?;
        let mut file = iceberg::arrow::ArrowFileReader::new(
            iceberg::io::FileMetadata {
                size: task.file_size_in_bytes,
            },
            input.reader().await?,
        );
        let footer = file
            .get_metadata(None)
            .await
            .map_err(|e| iceberg::Error::new(iceberg::ErrorKind::DataInvalid, e.to_string()))?;
        let held: Vec<i32> = footer
            .file_metadata()
            .schema_descr()
            .root_schema()
            .get_fields()
            .iter()
            .filter(|f| f.get_basic_info().has_id())
            .map(|f| f.get_basic_info().id())
            .collect();
        let before = task.project_field_ids.len();
        task.project_field_ids
            .retain(|id| !late.contains(id) || held.contains(id));
        changed |= task.project_field_ids.len() != before;
    }
    Ok(changed)
}

/// `batch` in `schema`'s columns, matched by Iceberg field id (else by
/// name); a column it lacks reads NULL.
fn aligned(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    use crate::tiering::verify::{field_id, field_position};
    let have = batch.schema();
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let at = field_id(f)
                .and_then(|id| field_position(&have, id))
                .or_else(|| have.index_of(f.name()).ok());
            Ok(match at {
                Some(i) => crate::lake::convert(batch.column(i), f.data_type())?,
                None => datafusion::arrow::array::new_null_array(f.data_type(), batch.num_rows()),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

/// The Parquet reader of a loaded table's files: one per loaded table
/// (making one reads the machine's CPU quota, several file reads), for as
/// long as the table stays loaded.
fn reader_of(table: &Table) -> iceberg::Result<iceberg::arrow::ArrowReader> {
    type Readers = Vec<(
        std::sync::Weak<iceberg::spec::TableMetadata>,
        iceberg::arrow::ArrowReader,
    )>;
    static LOADED: std::sync::Mutex<Readers> = std::sync::Mutex::new(Vec::new());
    let metadata = table.metadata_ref();
    let mut readers = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    readers.retain(|(loaded, _)| loaded.strong_count() > 0);
    if let Some((_, reader)) = readers
        .iter()
        .find(|(loaded, _)| std::ptr::eq(loaded.as_ptr(), Arc::as_ptr(&metadata)))
    {
        return Ok(reader.clone());
    }
    let runtime = iceberg::Runtime::try_current()?;
    let reader = iceberg::arrow::ArrowReaderBuilder::new(table.file_io().clone(), runtime)
        .with_data_file_concurrency_limit(1)
        // With a predicate, pages its column index rules out are
        // skipped, not decompressed: a lookup by key reads a page of
        // a row group, not all of it.
        .with_row_selection_enabled(true)
        // A file's footer and page index are read in one request of
        // this size from its end (the reader's default is 512 KiB,
        // a third of a typical file of ours read for a lookup).
        .with_metadata_size_hint(64 << 10)
        .build();
    readers.push((Arc::downgrade(&metadata), reader.clone()));
    Ok(reader)
}

/// Reads an Iceberg scan's data files in as many parallel readers as there
/// are cores, each on a share of the files (by size), into one stream.
/// Decompressing and decoding Parquet is most of a cold scan's work, and
/// Iceberg's own reader does all of it in the task that polls it. Rows
/// come in no particular order, as from Iceberg's reader.
fn parallel_scan(scan: &IcebergTableScan, row_filters: &[Expr]) -> SendableRecordBatchStream {
    // Reading the machine's CPU quota takes several file reads: once.
    static READERS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let readers = *READERS
        .get_or_init(|| std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 8)));
    let schema = scan.schema();
    let (table, snapshot) = (scan.table().clone(), scan.snapshot_id());
    let projection = scan.projection().map(<[String]>::to_vec);
    let predicate = scan.predicates().cloned();
    let row_predicate =
        iceberg_datafusion::physical_plan::convert_filters_to_predicate(row_filters);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2 * readers);
    let external = |e: iceberg::Error| DataFusionError::External(Box::new(e));
    let read_schema = schema.clone();
    tokio::spawn(async move {
        let planned = async {
            let mut builder = match snapshot {
                Some(id) => table.scan().snapshot_id(id),
                None => table.scan(),
            };
            builder = match projection {
                Some(columns) => builder.select(columns),
                None => builder.select_all(),
            };
            if let Some(p) = predicate {
                builder = builder.with_filter(p);
            }
            let tasks: Vec<iceberg::scan::FileScanTask> =
                builder.build()?.plan_files().await?.try_collect().await?;
            Ok::<_, iceberg::Error>(tasks)
        };
        let mut tasks = match planned.await {
            Ok(tasks) => tasks,
            Err(e) => {
                let _ = tx.send(Err(external(e))).await;
                return;
            }
        };
        for task in &mut tasks {
            task.predicate = row_predicate
                .clone()
                .and_then(|p| iceberg::expr::Bind::bind(&p, task.schema.clone(), true).ok());
        }
        let realign = match without_late_nested(&table, &mut tasks).await {
            Ok(changed) => changed,
            Err(e) => {
                let _ = tx.send(Err(external(e))).await;
                return;
            }
        };
        // The largest files first, each to the reader with the fewest bytes.
        let mut shares: Vec<(u64, Vec<iceberg::scan::FileScanTask>)> =
            (0..readers).map(|_| (0, Vec::new())).collect();
        tasks.sort_by_key(|t| std::cmp::Reverse(t.length));
        for task in tasks {
            let share = shares
                .iter_mut()
                .min_by_key(|s| s.0)
                .expect("one reader at least");
            share.0 += task.length;
            share.1.push(task);
        }
        let reader = match reader_of(&table) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(Err(external(e))).await;
                return;
            }
        };
        for (_, share) in shares.into_iter().filter(|s| !s.1.is_empty()) {
            let (tx, reader, schema) = (tx.clone(), reader.clone(), read_schema.clone());
            tokio::spawn(async move {
                let files = futures::stream::iter(share.into_iter().map(Ok)).boxed();
                let mut batches = match reader.read(files) {
                    Ok(r) => r.stream(),
                    Err(e) => {
                        let _ = tx.send(Err(external(e))).await;
                        return;
                    }
                };
                while let Some(batch) = batches.next().await {
                    let batch = match batch.map_err(external) {
                        Ok(b) if realign => aligned(b, &schema),
                        other => other,
                    };
                    // The statement ended (or failed) when no one listens.
                    if tx.send(batch).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let batches = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Box::pin(RecordBatchStreamAdapter::new(schema, batches))
}
