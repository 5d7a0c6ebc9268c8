//! One pass of the mover for one table, following the boundary contract:
//!
//! 1. in one Postgres transaction, holding the table's advisory lock,
//!    `DELETE … WHERE time < W RETURNING *` streamed out with binary COPY;
//! 2. the rows written as Parquet, sorted by time, partitioned per the
//!    definition, zstd-compressed;
//! 3. an Iceberg snapshot committed that records W and a batch id;
//! 4. only then the Postgres transaction committed.
//!
//! A crash before 4 rolls the delete back: the rows are then in Postgres and
//! (if 3 happened) in Iceberg; readers return them once by matching keys,
//! and the next pass deletes them without writing them a second time.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use datafusion::arrow::array::BooleanArray;
use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::compute::{SortOptions, filter_record_batch, sort_to_indices, take};
use datafusion::arrow::datatypes::{Schema as ArrowSchema, SchemaRef};
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use futures::StreamExt;
use iceberg::arrow::{RecordBatchPartitionSplitter, schema_to_arrow_schema};
use iceberg::spec::{DataFile, DataFileFormat};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::partitioning::PartitioningWriter;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;

use super::verify::{RowHasher, Tally, encode_checksums};
use super::{TieredTable, TieringError};
use crate::backend::target::BackendTarget;
use crate::catalog::quote_ident;
use crate::lake::{BATCH_KEY, CHECKSUMS_KEY, Lake, WATERMARK_KEY, watermark};
use crate::pgtypes::PgType;

/// Rows decoded before they are sorted and written: bounds the mover's
/// memory. `THERMOCLINE_MOVER_CHUNK_ROWS` lowers it (crash tests use it to
/// stop a pass between two chunks).
fn chunk_rows() -> usize {
    std::env::var("THERMOCLINE_MOVER_CHUNK_ROWS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(256 * 1024)
}

/// What one pass did.
#[derive(Debug, Clone)]
pub struct MoveReport {
    pub table: String,
    /// Rows deleted from Postgres.
    pub rows_deleted: u64,
    /// Rows written to Iceberg (fewer when some were already there).
    pub rows_written: u64,
    pub files: usize,
    /// The watermark now in force, microseconds since 1970.
    pub watermark: i64,
    /// The Iceberg snapshot committed, if any.
    pub snapshot_id: Option<i64>,
    /// Rows older than the previous watermark: written to Postgres after
    /// their time had already moved to the lake (late rows).
    pub late_rows: u64,
}

/// Takes the table's advisory lock for the rest of `tx`: one mover (or
/// maintenance run) per table across every thermocline. False when
/// another holds it.
pub(crate) async fn lock_table(
    tx: &tokio_postgres::Transaction<'_>,
    t: &TieredTable,
    database: &str,
) -> Result<bool, TieringError> {
    let lock_name = format!("thermocline.mover:{database}.{}", t.def.qualified());
    Ok(tx
        .query_one(
            "SELECT pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtextextended($1, 0))",
            &[&lock_name],
        )
        .await?
        .get(0))
}

/// Where a pass stops, for crash tests: the mover exits the process at
/// this step when `THERMOCLINE_MOVER_STOP_AT` names it.
pub(crate) fn stop_point(step: &str) {
    if std::env::var("THERMOCLINE_MOVER_STOP_AT").is_ok_and(|s| s == step) {
        tracing::warn!(
            step,
            "stopping the mover here as THERMOCLINE_MOVER_STOP_AT asks"
        );
        std::process::exit(137);
    }
}

/// Moves the rows of `t` older than its hot window. Returns `None` when
/// another mover holds the table.
pub async fn run_once(
    target: &BackendTarget,
    lake: &Lake,
    t: &TieredTable,
    database: &str,
    dry_run: bool,
) -> Result<Option<MoveReport>, TieringError> {
    run_until(target, lake, t, database, dry_run, None).await
}

/// As [`run_once`], with the watermark raised no further than `until`
/// (microseconds since 1970): a backfill moves a long history a slice at a
/// time, each slice a pass of its own.
pub async fn run_until(
    target: &BackendTarget,
    lake: &Lake,
    t: &TieredTable,
    database: &str,
    dry_run: bool,
    until: Option<i64>,
) -> Result<Option<MoveReport>, TieringError> {
    let mut client = super::service_connection(target, database).await?;
    // The table as Postgres has it now: columns may have been added since
    // the definitions were loaded.
    let fresh = super::describe(&client, &t.def, database).await?;
    let t = &fresh;
    let table = lake.ensure_table(t).await?;
    let tx = client.transaction().await?;
    if !lock_table(&tx, t, database).await? {
        return Ok(None);
    }
    let table = evolve(lake, table, t).await?;
    let time = t.time_column();
    let now_w = window_start(&tx, t).await?;
    let now_w = until.map_or(now_w, |u| u.min(now_w));
    let previous = watermark(&table);
    let w = previous.map_or(now_w, |p| p.max(now_w));
    let literal = time_literal(time.pg_type, w);
    let columns: Vec<String> = t.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let verb = if dry_run { "SELECT" } else { "DELETE" };
    let copy = if dry_run {
        select_copy(t, w)
    } else {
        format!(
            "COPY (DELETE FROM {} WHERE {} < {literal} RETURNING {}) TO STDOUT (FORMAT binary)",
            t.def.qualified(),
            quote_ident(&time.name),
            columns.join(", ")
        )
    };
    tracing::debug!(table = %t.def.qualified(), verb, watermark = w, "moving rows");
    let stream = tx.copy_out(copy.as_str()).await?;
    stop_point("after-delete");

    let target_schema = Arc::new(schema_to_arrow_schema(table.metadata().current_schema())?);
    let chunk_limit = chunk_rows();
    let mut decoder = CopyDecoder::new(t);
    let mut writer = FileWriter::new(&table)?;
    let mut rows_deleted = 0u64;
    let mut rows_written = 0u64;
    let mut late_rows = 0u64;
    futures::pin_mut!(stream);
    while let Some(chunk) = stream.next().await {
        decoder.push(&chunk?)?;
        if decoder.rows >= chunk_limit {
            let batch = decoder.finish()?;
            rows_deleted += batch.num_rows() as u64;
            late_rows += count_late(t, &batch, previous);
            let batch = drop_already_moved(&table, t, batch, previous).await?;
            rows_written += batch.num_rows() as u64;
            writer.write(t, &target_schema, batch).await?;
            stop_point("mid-write");
        }
    }
    let batch = decoder.finish()?;
    rows_deleted += batch.num_rows() as u64;
    late_rows += count_late(t, &batch, previous);
    let batch = drop_already_moved(&table, t, batch, previous).await?;
    rows_written += batch.num_rows() as u64;
    writer.write(t, &target_schema, batch).await?;
    // Running totals: what the lake held before this pass, plus the pass.
    let checksums = super::verify::recorded_checksums(&table).map(|mut totals| {
        for (p, tally) in std::mem::take(&mut writer.checksums) {
            totals.entry(p).or_default().add(tally);
        }
        totals
    });
    let files = writer.close().await?;
    let file_count = files.len();
    stop_point("before-iceberg-commit");
    if dry_run {
        tx.rollback().await?;
        return Ok(Some(MoveReport {
            table: t.def.qualified(),
            rows_deleted,
            rows_written,
            files: file_count,
            watermark: w,
            snapshot_id: None,
            late_rows,
        }));
    }
    let mut snapshot_id = None;
    // A pass that moved nothing commits nothing: the watermark stays, and
    // the lake gains no empty snapshot every interval.
    if rows_deleted > 0 {
        let batch_id = uuid::Uuid::now_v7().to_string();
        let txn = Transaction::new(&table);
        let txn = txn
            .fast_append()
            .add_data_files(files)
            .set_snapshot_properties(
                [
                    (WATERMARK_KEY.to_string(), w.to_string()),
                    (BATCH_KEY.to_string(), batch_id),
                ]
                .into_iter()
                .chain(checksums.map(|c| (CHECKSUMS_KEY.to_string(), encode_checksums(&c))))
                .collect::<HashMap<_, _>>(),
            )
            .apply(txn)?;
        let committed = txn.commit(lake.catalog()).await?;
        snapshot_id = committed.metadata().current_snapshot_id();
        stop_point("after-iceberg-commit");
    }
    tx.commit().await?;
    Ok(Some(MoveReport {
        table: t.def.qualified(),
        rows_deleted,
        rows_written,
        files: file_count,
        watermark: w,
        snapshot_id,
        late_rows,
    }))
}

/// The start of `t`'s hot window now, by Postgres's clock: microseconds
/// since 1970 (whole seconds; midnight for a date column).
pub(crate) async fn window_start(
    c: &impl tokio_postgres::GenericClient,
    t: &TieredTable,
) -> Result<i64, TieringError> {
    ago(c, t, t.def.hot_window).await
}

/// `now() - span` by Postgres's clock, in the form of `t`'s time column:
/// microseconds since 1970 (whole seconds; midnight for a date column).
pub(crate) async fn ago(
    c: &impl tokio_postgres::GenericClient,
    t: &TieredTable,
    span: std::time::Duration,
) -> Result<i64, TieringError> {
    let window_secs = span.as_secs() as i64;
    let sql = match t.time_column().pg_type {
        PgType::Date => {
            "SELECT ((current_date - ($1::int8 / 86400)::int4) - date '1970-01-01')::int8 * 86400000000"
        }
        PgType::Timestamp => {
            "SELECT floor(extract(epoch FROM localtimestamp - make_interval(secs => $1::int8)))::int8 * 1000000"
        }
        _ => {
            "SELECT floor(extract(epoch FROM now() - make_interval(secs => $1::int8)))::int8 * 1000000"
        }
    };
    Ok(c.query_one(sql, &[&window_secs]).await?.get(0))
}

/// Brings the lake's schema in line with Postgres's before a pass, field
/// by field, matched by Postgres column number (see
/// [`crate::lake::field_of`]):
/// - a column added in Postgres is added to the lake (older rows read NULL);
/// - a renamed column keeps its field, under the new name;
/// - a column dropped in Postgres leaves the lake's current schema (older
///   data files keep its values; no read asks for them);
/// - a type widened the way Iceberg can follow (int → bigint, real →
///   double precision, a numeric's precision raised at the same scale)
///   widens the field; a varchar's length is Postgres's alone.
///
/// Any other type change is refused: the pass stops with
/// [`TieringError::SchemaChange`].
async fn evolve(lake: &Lake, table: Table, t: &TieredTable) -> Result<Table, TieringError> {
    let Some(schema) = evolved_schema(table.metadata(), t)? else {
        return Ok(table);
    };
    let columns = |s: &iceberg::spec::Schema| -> Vec<String> {
        s.as_struct()
            .fields()
            .iter()
            .map(|f| format!("{} {}", f.name, f.field_type))
            .collect()
    };
    let (before, after) = (columns(table.metadata().current_schema()), columns(&schema));
    let table = crate::lake::set_schema(lake, &table, schema).await?;
    tracing::info!(
        table = %t.def.qualified(),
        before = ?before,
        after = ?after,
        "the lake's columns follow Postgres's"
    );
    Ok(table)
}

/// The lake schema that holds Postgres's columns as they are now, in
/// their order, or `None` when the current one does.
pub(crate) fn evolved_schema(
    metadata: &iceberg::spec::TableMetadata,
    t: &TieredTable,
) -> Result<Option<iceberg::spec::Schema>, TieringError> {
    use iceberg::spec::{NestedField, Type};
    let current = metadata.current_schema();
    let change = |change: String| TieringError::SchemaChange {
        table: t.def.qualified(),
        change,
    };
    // A lake written before fields recorded column numbers: each field is
    // matched by name, once, and gets its number recorded below.
    for f in current.as_struct().fields() {
        if crate::lake::field_attnum(f).is_none() && !t.columns.iter().any(|c| c.name == f.name) {
            return Err(change(format!(
                "column {:?} was dropped or renamed in Postgres before the lake recorded column numbers; only added columns are followed for it",
                f.name
            )));
        }
    }
    let mut next_id = metadata.last_column_id();
    let mut fields = Vec::with_capacity(t.columns.len());
    for c in &t.columns {
        let field = match crate::lake::field_of(current, c.attnum, &c.name) {
            Some(f) => {
                let nested_id = crate::lake::first_nested_id(f.field_type.as_ref());
                let want = crate::lake::iceberg_type(c.pg_type, nested_id)?;
                let field_type = match (f.field_type.as_ref(), &want) {
                    (a, b) if a == b => want.clone(),
                    (Type::Primitive(a), Type::Primitive(b)) if widens(a, b) => want.clone(),
                    (a, _) => {
                        return Err(change(format!(
                            "column {:?} changed type in Postgres (the lake holds {a}, it would need {want}); the lake follows int to bigint, real to double precision and a numeric's precision raised at the same scale",
                            c.name
                        )));
                    }
                };
                if f.required && c.not_null {
                    NestedField::required(f.id, &c.name, field_type)
                } else {
                    NestedField::optional(f.id, &c.name, field_type)
                }
                .with_doc(crate::lake::attnum_doc(c.attnum))
            }
            None => {
                next_id += 1;
                let id = next_id;
                let want = crate::lake::iceberg_type(c.pg_type, next_id + 1)?;
                next_id += crate::lake::nested_fields(c.pg_type);
                NestedField::optional(id, &c.name, want).with_doc(crate::lake::attnum_doc(c.attnum))
            }
        };
        fields.push(std::sync::Arc::new(field));
    }
    if fields.as_slice() == current.as_struct().fields() {
        return Ok(None);
    }
    let id = metadata
        .schemas_iter()
        .map(|s| s.schema_id())
        .max()
        .unwrap_or(0)
        + 1;
    Ok(Some(
        iceberg::spec::Schema::builder()
            .with_schema_id(id)
            .with_fields(fields)
            .build()?,
    ))
}

/// Whether Iceberg can read values written as `from` as `to`.
fn widens(from: &iceberg::spec::PrimitiveType, to: &iceberg::spec::PrimitiveType) -> bool {
    use iceberg::spec::PrimitiveType as P;
    match (from, to) {
        (P::Int, P::Long) | (P::Float, P::Double) => true,
        (
            P::Decimal {
                precision: p1,
                scale: s1,
            },
            P::Decimal {
                precision: p2,
                scale: s2,
            },
        ) => s1 == s2 && p2 >= p1,
        _ => false,
    }
}

/// A binary COPY of the rows of `t` older than `w`, left in place.
pub(crate) fn select_copy(t: &TieredTable, w: i64) -> String {
    let time = t.time_column();
    let columns: Vec<String> = t.columns.iter().map(|c| quote_ident(&c.name)).collect();
    format!(
        "COPY (SELECT {} FROM {} WHERE {} < {}) TO STDOUT (FORMAT binary)",
        columns.join(", "),
        t.def.qualified(),
        quote_ident(&time.name),
        time_literal(time.pg_type, w)
    )
}

/// Decodes a whole binary COPY of all of `t`'s columns into batches.
pub(crate) async fn decode_copy(
    t: &TieredTable,
    stream: tokio_postgres::CopyOutStream,
) -> Result<Vec<RecordBatch>, TieringError> {
    let mut decoder = CopyDecoder::new(t);
    let mut out = Vec::new();
    futures::pin_mut!(stream);
    while let Some(chunk) = stream.next().await {
        decoder.push(&chunk?)?;
        if decoder.rows >= chunk_rows() {
            out.push(decoder.finish()?);
        }
    }
    out.push(decoder.finish()?);
    Ok(out)
}

/// A SQL literal for a watermark against a time column of type `t`.
pub fn time_literal(t: PgType, w_us: i64) -> String {
    let dt = chrono::DateTime::<chrono::Utc>::from_timestamp_micros(w_us).unwrap_or_default();
    match t {
        PgType::Date => format!("'{}'::date", dt.format("%Y-%m-%d")),
        PgType::Timestamp => format!("'{}'::timestamp", dt.format("%Y-%m-%d %H:%M:%S%.6f")),
        _ => format!("'{}+00'::timestamptz", dt.format("%Y-%m-%d %H:%M:%S%.6f")),
    }
}

/// The time column's value in microseconds since 1970 (dates at midnight).
pub fn time_micros(array: &ArrayRef, row: usize) -> Option<i64> {
    use datafusion::arrow::array::{Array, Date32Array, TimestampMicrosecondArray};
    if array.is_null(row) {
        return None;
    }
    if let Some(a) = array.as_any().downcast_ref::<TimestampMicrosecondArray>() {
        return Some(a.value(row));
    }
    if let Some(a) = array.as_any().downcast_ref::<Date32Array>() {
        return Some(a.value(row) as i64 * 86_400_000_000);
    }
    None
}

/// Rows of `batch` older than the previous watermark.
fn count_late(t: &TieredTable, batch: &RecordBatch, previous: Option<i64>) -> u64 {
    let Some(previous) = previous else {
        return 0;
    };
    let time = batch.column(t.time_index);
    (0..batch.num_rows())
        .filter(|&r| time_micros(time, r).is_some_and(|v| v < previous))
        .count() as u64
}

/// Rows older than the previous watermark may have been written by a pass
/// whose Postgres commit never happened: drop those whose key the cold tier
/// already holds.
async fn drop_already_moved(
    table: &Table,
    t: &TieredTable,
    batch: RecordBatch,
    previous: Option<i64>,
) -> Result<RecordBatch, TieringError> {
    let Some(previous) = previous else {
        return Ok(batch);
    };
    let time = batch.column(t.time_index);
    let old: Vec<usize> = (0..batch.num_rows())
        .filter(|&r| time_micros(time, r).is_some_and(|v| v < previous))
        .collect();
    if old.is_empty() {
        return Ok(batch);
    }
    let keys = crate::federation::cold_keys(table, t, &batch, &old).await?;
    if keys.is_empty() {
        return Ok(batch);
    }
    let keep: BooleanArray = (0..batch.num_rows())
        .map(|r| Some(!keys.contains(&crate::federation::row_key(&batch, &t.key, r))))
        .collect();
    tracing::info!(
        table = %t.def.qualified(),
        rows = keys.len(),
        "rows already in the cold tier were not written again"
    );
    filter_record_batch(&batch, &keep).map_err(|e| TieringError::Data(e.to_string()))
}

/// Decodes binary COPY output into Arrow arrays of each column's [`PgType`].
struct CopyDecoder<'a> {
    t: &'a TieredTable,
    buf: BytesMut,
    header_done: bool,
    builders: Vec<Box<dyn datafusion::arrow::array::ArrayBuilder>>,
    rows: usize,
}

impl<'a> CopyDecoder<'a> {
    fn new(t: &'a TieredTable) -> Self {
        Self {
            t,
            buf: BytesMut::new(),
            header_done: false,
            builders: t.columns.iter().map(|c| c.pg_type.builder(1024)).collect(),
            rows: 0,
        }
    }

    fn push(&mut self, chunk: &[u8]) -> Result<(), TieringError> {
        self.buf.extend_from_slice(chunk);
        let bad = |m: &str| TieringError::Data(format!("binary COPY from Postgres: {m}"));
        if !self.header_done {
            if self.buf.len() < 19 {
                return Ok(());
            }
            if &self.buf[..11] != b"PGCOPY\n\xff\r\n\0" {
                return Err(bad("bad signature"));
            }
            let ext = u32::from_be_bytes(self.buf[15..19].try_into().expect("4 bytes")) as usize;
            if self.buf.len() < 19 + ext {
                return Ok(());
            }
            self.buf.advance(19 + ext);
            self.header_done = true;
        }
        loop {
            // Find the end of one tuple without consuming it.
            if self.buf.len() < 2 {
                return Ok(());
            }
            let n = i16::from_be_bytes([self.buf[0], self.buf[1]]);
            if n == -1 {
                self.buf.advance(2);
                return Ok(());
            }
            if n as usize != self.t.columns.len() {
                return Err(bad("unexpected field count"));
            }
            let mut pos = 2;
            let mut spans = Vec::with_capacity(n as usize);
            for _ in 0..n {
                if self.buf.len() < pos + 4 {
                    return Ok(());
                }
                let len = i32::from_be_bytes(self.buf[pos..pos + 4].try_into().expect("4 bytes"));
                pos += 4;
                if len < 0 {
                    spans.push(None);
                } else {
                    let end = pos + len as usize;
                    if self.buf.len() < end {
                        return Ok(());
                    }
                    spans.push(Some((pos, end)));
                    pos = end;
                }
            }
            for ((c, b), span) in self.t.columns.iter().zip(&mut self.builders).zip(spans) {
                c.pg_type
                    .append_binary(b.as_mut(), span.map(|(s, e)| &self.buf[s..e]))
                    .map_err(|e| bad(&format!("column {:?}: {e}", c.name)))?;
            }
            self.rows += 1;
            self.buf.advance(pos);
        }
    }

    /// The rows decoded so far, as one batch with the columns' Arrow types.
    fn finish(&mut self) -> Result<RecordBatch, TieringError> {
        let fields: Vec<_> = self
            .t
            .columns
            .iter()
            .map(|c| {
                datafusion::arrow::datatypes::Field::new(&c.name, c.pg_type.arrow(), !c.not_null)
            })
            .collect();
        let arrays: Vec<ArrayRef> = self.builders.iter_mut().map(|b| b.finish()).collect();
        self.rows = 0;
        RecordBatch::try_new(Arc::new(ArrowSchema::new(fields)), arrays)
            .map_err(|e| TieringError::Data(e.to_string()))
    }
}

/// Writes batches as Parquet data files, one fanout writer per pass.
pub(crate) struct FileWriter {
    writer: Option<
        FanoutWriter<
            DataFileWriterBuilder<
                ParquetWriterBuilder,
                DefaultLocationGenerator,
                DefaultFileNameGenerator,
            >,
        >,
    >,
    splitter: RecordBatchPartitionSplitter,
    /// What was written, per partition, for `tier verify`.
    pub(crate) checksums: std::collections::BTreeMap<i64, Tally>,
    hasher: RowHasher,
}

impl FileWriter {
    pub(crate) fn new(table: &Table) -> Result<Self, TieringError> {
        let md = table.metadata();
        let schema = md.current_schema().clone();
        // Row groups of 64k rows: a lookup by key (or a narrow time range)
        // reads one small group instead of a whole file-sized one. Pages of
        // 8k rows, with their index: within the group, the reader
        // decompresses only the pages that hold the rows it looks for.
        // Dictionaries for text only: a reader must decode a column chunk's
        // dictionary before any of its pages, and that of a key or a time
        // column holds nearly every value of the group.
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(3).expect("valid level"),
            ))
            .set_max_row_group_row_count(Some(64 * 1024))
            .set_data_page_row_count_limit(8 * 1024)
            .set_dictionary_enabled(false);
        // Whole numbers, times and decimals of up to 18 digits (stored as
        // whole numbers) in deltas, bit-packed and not compressed: the time
        // column is sorted, keys mostly rise with it, and an amount's delta
        // takes the bits its values do, about what compression would leave.
        // Decompressing was most of the work of a scan over such columns.
        for f in schema.as_struct().fields() {
            use iceberg::spec::PrimitiveType as P;
            let column = datafusion::parquet::schema::types::ColumnPath::from(f.name.as_str());
            let whole = match f.field_type.as_primitive_type() {
                Some(P::String) => {
                    props = props.set_column_dictionary_enabled(column, true);
                    continue;
                }
                Some(P::Decimal { precision, .. }) => *precision <= 18,
                Some(t) => matches!(
                    t,
                    P::Int
                        | P::Long
                        | P::Date
                        | P::Time
                        | P::Timestamp
                        | P::Timestamptz
                        | P::TimestampNs
                        | P::TimestamptzNs
                ),
                None => false,
            };
            if whole {
                props = props
                    .set_column_encoding(
                        column.clone(),
                        datafusion::parquet::basic::Encoding::DELTA_BINARY_PACKED,
                    )
                    .set_column_compression(column, Compression::UNCOMPRESSED);
            }
        }
        let props = props.build();
        let rolling = RollingFileWriterBuilder::new(
            ParquetWriterBuilder::new(props, schema.clone()),
            256 * 1024 * 1024,
            table.file_io().clone(),
            DefaultLocationGenerator::new(md)?,
            DefaultFileNameGenerator::new(
                uuid::Uuid::now_v7().to_string(),
                None,
                DataFileFormat::Parquet,
            ),
        );
        let splitter = RecordBatchPartitionSplitter::try_new_with_computed_values(
            schema,
            md.default_partition_spec().clone(),
        )?;
        Ok(Self {
            writer: Some(FanoutWriter::new(DataFileWriterBuilder::new(rolling))),
            splitter,
            checksums: Default::default(),
            hasher: RowHasher::new(md)?,
        })
    }

    /// Sorts `batch` by time and hands it to the partition writers.
    pub(crate) async fn write(
        &mut self,
        t: &TieredTable,
        target: &SchemaRef,
        batch: RecordBatch,
    ) -> Result<(), TieringError> {
        self.write_at(t.time_index, t.def.partition_by, target, batch)
            .await
    }

    /// As [`FileWriter::write`], the time column at `time_index`.
    pub(crate) async fn write_at(
        &mut self,
        time_index: usize,
        by: crate::catalog::PartitionBy,
        target: &SchemaRef,
        batch: RecordBatch,
    ) -> Result<(), TieringError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let data = |e: datafusion::arrow::error::ArrowError| TieringError::Data(e.to_string());
        let order = sort_to_indices(
            batch.column(time_index),
            Some(SortOptions {
                descending: false,
                nulls_first: true,
            }),
            None,
        )
        .map_err(data)?;
        let columns = batch
            .columns()
            .iter()
            .zip(target.fields())
            .map(|(c, f)| crate::lake::convert(&take(c, &order, None)?, f.data_type()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(data)?;
        let batch = RecordBatch::try_new(target.clone(), columns).map_err(data)?;
        for (p, tally) in self.hasher.tally_by_partition(&batch, time_index, by)? {
            self.checksums.entry(p).or_default().add(tally);
        }
        let writer = self.writer.as_mut().expect("not closed");
        for (key, part) in self.splitter.split(&batch)? {
            writer.write(key, part).await?;
        }
        Ok(())
    }

    pub(crate) async fn close(&mut self) -> Result<Vec<DataFile>, TieringError> {
        match self.writer.take() {
            Some(w) => Ok(w.close().await?),
            None => Ok(Vec::new()),
        }
    }
}

/// Keys as comparable strings, for matching stragglers against cold rows.
pub type KeySet = HashSet<String>;

#[cfg(test)]
mod tests {
    use iceberg::spec::{
        FormatVersion, NestedField, PrimitiveType, Schema, SortOrder, TableMetadata,
        TableMetadataBuilder, Type, UnboundPartitionSpec,
    };

    use super::*;
    use crate::tiering::Column;

    fn table(columns: &[(&str, i16, PgType)]) -> TieredTable {
        let def = crate::catalog::parse(
            std::path::Path::new("orders.toml"),
            "table = \"public.orders\"\ntime_column = \"at\"\nhot_window = \"30 days\"\n",
        )
        .unwrap();
        let columns: Vec<Column> = columns
            .iter()
            .map(|(name, attnum, pg_type)| Column {
                name: name.to_string(),
                attnum: *attnum,
                pg_type: *pg_type,
                not_null: false,
            })
            .collect();
        TieredTable {
            def,
            time_index: columns.iter().position(|c| c.name == "at").unwrap(),
            key: vec![0],
            columns,
            views: Vec::new(),
        }
    }

    /// A lake table with `fields` (name, type, doc), ids 1, 2, … in order.
    fn metadata(fields: &[(&str, PrimitiveType, Option<i16>)]) -> TableMetadata {
        let fields = fields
            .iter()
            .enumerate()
            .map(|(i, (name, ty, attnum))| {
                let f = NestedField::optional(i as i32 + 1, *name, Type::Primitive(ty.clone()));
                match attnum {
                    Some(a) => f.with_doc(crate::lake::attnum_doc(*a)),
                    None => f,
                }
                .into()
            })
            .collect::<Vec<_>>();
        let schema = Schema::builder().with_fields(fields).build().unwrap();
        TableMetadataBuilder::new(
            schema,
            UnboundPartitionSpec::builder().build(),
            SortOrder::unsorted_order(),
            "file:///lake/orders".into(),
            FormatVersion::V2,
            Default::default(),
        )
        .unwrap()
        .build()
        .unwrap()
        .metadata
    }

    /// (id, name, type, attnum) of each field of a schema.
    fn fields(schema: &Schema) -> Vec<(i32, String, Type, Option<i16>)> {
        schema
            .as_struct()
            .fields()
            .iter()
            .map(|f| {
                (
                    f.id,
                    f.name.clone(),
                    (*f.field_type).clone(),
                    crate::lake::field_attnum(f),
                )
            })
            .collect()
    }

    #[test]
    fn a_lake_without_column_numbers_gets_them_by_name_once() {
        let md = metadata(&[
            ("id", PrimitiveType::Long, None),
            ("at", PrimitiveType::Timestamptz, None),
            ("n", PrimitiveType::Int, None),
        ]);
        let t = table(&[
            ("id", 1, PgType::Int8),
            ("at", 2, PgType::Timestamptz),
            ("n", 4, PgType::Int4),
        ]);
        let schema = evolved_schema(&md, &t).unwrap().expect("docs are added");
        let long = Type::Primitive(PrimitiveType::Long);
        let ts = Type::Primitive(PrimitiveType::Timestamptz);
        let int = Type::Primitive(PrimitiveType::Int);
        assert_eq!(
            fields(&schema),
            vec![
                (1, "id".into(), long, Some(1)),
                (2, "at".into(), ts, Some(2)),
                (3, "n".into(), int, Some(4)),
            ]
        );
        // Renamed before its number was recorded: refused, not guessed.
        let renamed = table(&[
            ("id", 1, PgType::Int8),
            ("at", 2, PgType::Timestamptz),
            ("m", 4, PgType::Int4),
        ]);
        let e = evolved_schema(&md, &renamed).unwrap_err().to_string();
        assert!(e.contains("\"n\"") && e.contains("column numbers"), "{e}");
    }

    #[test]
    fn fields_follow_renames_widening_drops_and_new_columns_by_number() {
        let md = metadata(&[
            ("id", PrimitiveType::Long, Some(1)),
            ("at", PrimitiveType::Timestamptz, Some(2)),
            ("n", PrimitiveType::Int, Some(3)),
            ("gone", PrimitiveType::String, Some(4)),
            ("w", PrimitiveType::Float, Some(5)),
        ]);
        let same = table(&[
            ("id", 1, PgType::Int8),
            ("at", 2, PgType::Timestamptz),
            ("n", 3, PgType::Int4),
            ("gone", 4, PgType::Text(25)),
            ("w", 5, PgType::Float4),
        ]);
        assert!(evolved_schema(&md, &same).unwrap().is_none());
        // n renamed and widened, gone dropped and added again (a new
        // number), w widened.
        let t = table(&[
            ("id", 1, PgType::Int8),
            ("at", 2, PgType::Timestamptz),
            ("count", 3, PgType::Int8),
            ("w", 5, PgType::Float8),
            ("gone", 6, PgType::Text(25)),
        ]);
        let schema = evolved_schema(&md, &t).unwrap().unwrap();
        let p = |t| Type::Primitive(t);
        assert_eq!(
            fields(&schema),
            vec![
                (1, "id".into(), p(PrimitiveType::Long), Some(1)),
                (2, "at".into(), p(PrimitiveType::Timestamptz), Some(2)),
                (3, "count".into(), p(PrimitiveType::Long), Some(3)),
                (5, "w".into(), p(PrimitiveType::Double), Some(5)),
                (6, "gone".into(), p(PrimitiveType::String), Some(6)),
            ]
        );
        // A change Iceberg cannot read old files through.
        let retyped = table(&[
            ("id", 1, PgType::Int8),
            ("at", 2, PgType::Timestamptz),
            ("n", 3, PgType::Text(25)),
        ]);
        let e = evolved_schema(&md, &retyped).unwrap_err().to_string();
        assert!(e.contains("\"n\" changed type"), "{e}");
    }
}
