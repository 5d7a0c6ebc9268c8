//! `thermocline tier verify`: checks, partition by partition, that the lake
//! holds what the mover wrote and that no row is invisible or counted twice.
//!
//! For every partition of the lake's current snapshot it reads every data
//! file and compares:
//! - the rows read with the row counts the manifests record;
//! - a checksum of the rows read with the checksum the mover recorded in
//!   the snapshot's summary (per partition, the count and an
//!   order-independent sum of the hashes of every row it ever wrote);
//! - each row's time with its file's partition (a row in the wrong
//!   partition would be pruned away) and with the watermark W (a cold row
//!   at or after W would never be read).
//!
//! On the Postgres side it counts, per partition, the rows older than W
//! still in Postgres (stragglers) and how many of them the lake holds too;
//! those are read once and deleted by the next pass, so they are reported,
//! not counted as mismatches.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use iceberg::spec::{Literal, ManifestStatus, PrimitiveLiteral, Struct};
use iceberg::table::Table;

use super::{TieredTable, TieringError};
use crate::backend::target::BackendTarget;
use crate::catalog::PartitionBy;
use crate::lake::{CHECKSUMS_KEY, Lake, watermark};

/// Rows and an order-independent checksum of a set of rows.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub rows: u64,
    pub sum: u64,
}

impl Tally {
    pub fn add(&mut self, other: Tally) {
        self.rows += other.rows;
        self.sum = self.sum.wrapping_add(other.sum);
    }

    /// Takes `other`'s rows out of this tally.
    pub fn remove(&mut self, other: Tally) {
        self.rows = self.rows.saturating_sub(other.rows);
        self.sum = self.sum.wrapping_sub(other.sum);
    }
}

/// Per-partition checksums, as kept in a snapshot summary (running totals):
/// `partition=rows:sum;…` with the partition's transform value.
pub fn encode_checksums(sums: &BTreeMap<i64, Tally>) -> String {
    sums.iter()
        .map(|(p, t)| format!("{p}={}:{:x}", t.rows, t.sum))
        .collect::<Vec<_>>()
        .join(";")
}

fn decode_checksums(text: &str) -> Option<BTreeMap<i64, Tally>> {
    let mut out = BTreeMap::new();
    for part in text.split(';').filter(|p| !p.is_empty()) {
        let (p, rest) = part.split_once('=')?;
        let (rows, sum) = rest.split_once(':')?;
        out.insert(
            p.parse().ok()?,
            Tally {
                rows: rows.parse().ok()?,
                sum: u64::from_str_radix(sum, 16).ok()?,
            },
        );
    }
    Some(out)
}

/// The partition transform's value of a partition tuple (`None` for a
/// tuple that is not one integer, as the mover never writes).
pub fn partition_value(s: &Struct) -> Option<i64> {
    match s.fields() {
        [Some(Literal::Primitive(PrimitiveLiteral::Int(v)))] => Some(*v as i64),
        [Some(Literal::Primitive(PrimitiveLiteral::Long(v)))] => Some(*v),
        _ => None,
    }
}

/// The partition transform of a time (microseconds since 1970, as stored):
/// hours, days, months or years since 1970, as Iceberg defines them.
pub fn transform(by: PartitionBy, micros: i64) -> i64 {
    use chrono::Datelike;
    let t = chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default();
    match by {
        PartitionBy::Hour => micros.div_euclid(3_600_000_000),
        PartitionBy::Day => micros.div_euclid(86_400_000_000),
        PartitionBy::Month => (t.year() as i64 - 1970) * 12 + t.month0() as i64,
        PartitionBy::Year => t.year() as i64 - 1970,
    }
}

/// Where a partition begins, in microseconds since 1970 (UTC).
pub fn partition_start(by: PartitionBy, value: i64) -> i64 {
    match by {
        PartitionBy::Hour => value * 3_600_000_000,
        PartitionBy::Day => value * 86_400_000_000,
        PartitionBy::Month | PartitionBy::Year => {
            let months = if by == PartitionBy::Month {
                value
            } else {
                value * 12
            };
            let (y, m) = (1970 + months.div_euclid(12), months.rem_euclid(12) + 1);
            chrono::NaiveDate::from_ymd_opt(y as i32, m as u32, 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map_or(0, |t| t.and_utc().timestamp_micros())
        }
    }
}

/// A partition's transform value as people read it.
pub fn partition_label(by: PartitionBy, value: i64) -> String {
    let micros = match by {
        PartitionBy::Hour => value * 3_600_000_000,
        PartitionBy::Day => value * 86_400_000_000,
        PartitionBy::Month => {
            let (y, m) = (1970 + value.div_euclid(12), value.rem_euclid(12) + 1);
            return format!("{y:04}-{m:02}");
        }
        PartitionBy::Year => return format!("{:04}", 1970 + value),
    };
    let t = chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default();
    match by {
        PartitionBy::Hour => t.format("%Y-%m-%dT%H").to_string(),
        _ => t.format("%Y-%m-%d").to_string(),
    }
}

/// How the lake's fields are hashed, so that a checksum recorded when rows
/// were written still holds after the columns changed: each field is
/// seeded with the name it first had, and each value is encoded in the
/// type the field first had whenever it fits there (an int widened to
/// bigint hashes its old values as it did before). Fields are known by
/// their Iceberg field id; a batch field without one is hashed by its own
/// name and type.
#[derive(Debug, Default)]
pub struct RowHasher {
    first: std::collections::HashMap<i32, (String, DataType)>,
}

impl RowHasher {
    pub fn new(metadata: &iceberg::spec::TableMetadata) -> Result<Self, TieringError> {
        let first = fields_by_id(metadata, false)
            .into_iter()
            .map(|(id, f)| {
                Ok((
                    id,
                    (
                        f.name.clone(),
                        iceberg::arrow::type_to_arrow_type(&f.field_type)?,
                    ),
                ))
            })
            .collect::<Result<_, TieringError>>()?;
        Ok(Self { first })
    }

    /// Hashes of each row of `batch`: per non-NULL value, FNV-1a over its
    /// field's seed name and Arrow's row encoding of the value, summed. A
    /// column added later (NULL in older rows) leaves older rows' hashes
    /// unchanged.
    pub fn hashes(&self, batch: &RecordBatch) -> Result<Vec<u64>, TieringError> {
        let data = |e: datafusion::arrow::error::ArrowError| TieringError::Data(e.to_string());
        let fnv = |h: u64, bytes: &[u8]| {
            bytes
                .iter()
                .fold(h, |h, b| (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3))
        };
        let encode = |column: &ArrayRef| {
            let converter = RowConverter::new(vec![SortField::new(column.data_type().clone())])?;
            converter.convert_columns(std::slice::from_ref(column))
        };
        let mut hashes = vec![0u64; batch.num_rows()];
        for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
            let first = field_id(field).and_then(|id| self.first.get(&id));
            let (seed_name, first_type) = match first {
                Some((name, ty)) => (name.as_str(), ty),
                None => (field.name().as_str(), field.data_type()),
            };
            let seed = fnv(0xcbf2_9ce4_8422_2325, seed_name.as_bytes());
            let rows = encode(column).map_err(data)?;
            // Values of a widened field that the first type holds exactly.
            let narrow = if first_type == column.data_type() {
                None
            } else {
                let options = datafusion::arrow::compute::CastOptions {
                    safe: true,
                    ..Default::default()
                };
                let narrow =
                    datafusion::arrow::compute::cast_with_options(column, first_type, &options)
                        .map_err(data)?;
                let back = cast(&narrow, column.data_type()).map_err(data)?;
                let same =
                    datafusion::arrow::compute::kernels::cmp::eq(&back, column).map_err(data)?;
                Some((encode(&narrow).map_err(data)?, narrow, same))
            };
            for (r, h) in hashes.iter_mut().enumerate() {
                if !column.is_valid(r) {
                    continue;
                }
                let value = match &narrow {
                    Some((narrow_rows, narrow, same))
                        if narrow.is_valid(r) && same.is_valid(r) && same.value(r) =>
                    {
                        fnv(seed, narrow_rows.row(r).as_ref())
                    }
                    _ => fnv(seed, rows.row(r).as_ref()),
                };
                *h = h.wrapping_add(value);
            }
        }
        Ok(hashes)
    }

    /// The checksums of `batch`'s rows, per partition of their time column.
    pub fn tally_by_partition(
        &self,
        batch: &RecordBatch,
        time_index: usize,
        by: PartitionBy,
    ) -> Result<BTreeMap<i64, Tally>, TieringError> {
        let hashes = self.hashes(batch)?;
        let time = batch.column(time_index);
        let mut out: BTreeMap<i64, Tally> = BTreeMap::new();
        for (r, h) in hashes.into_iter().enumerate() {
            let p = super::mover::time_micros(time, r).map_or(i64::MIN, |m| transform(by, m));
            out.entry(p).or_default().add(Tally { rows: 1, sum: h });
        }
        Ok(out)
    }
}

/// Every field of every schema the table has had, by id, in the type of
/// the newest schema holding it, named by id (a dropped column's name may
/// have been taken since).
pub(crate) fn every_field(
    metadata: &iceberg::spec::TableMetadata,
) -> Result<SchemaRef, TieringError> {
    let fields = fields_by_id(metadata, true)
        .into_iter()
        .map(|(id, f)| {
            let ty = iceberg::arrow::type_to_arrow_type(&f.field_type)?;
            Ok(Field::new(format!("field {id}"), ty, true).with_metadata(
                [(
                    datafusion::parquet::arrow::PARQUET_FIELD_ID_META_KEY.to_string(),
                    id.to_string(),
                )]
                .into(),
            ))
        })
        .collect::<Result<Vec<_>, TieringError>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// Each field id of the table's history with the field as its oldest
/// schema (or, with `newest`, its newest) has it, in id order.
fn fields_by_id(
    metadata: &iceberg::spec::TableMetadata,
    newest: bool,
) -> BTreeMap<i32, iceberg::spec::NestedFieldRef> {
    let mut schemas: Vec<_> = metadata.schemas_iter().collect();
    schemas.sort_by_key(|s| s.schema_id());
    if newest {
        schemas.reverse();
    }
    let mut fields = BTreeMap::new();
    for f in schemas.iter().flat_map(|s| s.as_struct().fields()) {
        fields.entry(f.id).or_insert_with(|| f.clone());
    }
    fields
}

/// The position in `schema` of the Arrow field carrying Iceberg field `id`.
pub(crate) fn field_position(schema: &Schema, id: i32) -> Option<usize> {
    schema.fields().iter().position(|f| field_id(f) == Some(id))
}

/// The Iceberg field id an Arrow field carries.
pub(crate) fn field_id(field: &Field) -> Option<i32> {
    field
        .metadata()
        .get(datafusion::parquet::arrow::PARQUET_FIELD_ID_META_KEY)?
        .parse()
        .ok()
}

/// One partition's findings.
#[derive(Debug, Default, Clone)]
pub struct PartitionCheck {
    pub label: String,
    pub files: usize,
    /// Rows the manifests record, and rows read from the files.
    pub manifest_rows: u64,
    pub lake: Tally,
    /// What the mover recorded writing, when it did.
    pub recorded: Option<Tally>,
    /// Lake rows whose time belongs to another partition, or is at or after W.
    pub misplaced: u64,
    pub after_watermark: u64,
    /// Rows older than W still in Postgres, and how many the lake holds too.
    pub stragglers: u64,
    pub in_both: u64,
    pub problems: Vec<String>,
}

/// What `tier verify` found for one table.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub table: String,
    pub watermark: Option<i64>,
    pub snapshot_id: Option<i64>,
    pub partitions: Vec<PartitionCheck>,
    /// Problems not tied to one partition.
    pub problems: Vec<String>,
}

impl VerifyReport {
    pub fn mismatches(&self) -> usize {
        self.problems.len()
            + self
                .partitions
                .iter()
                .map(|p| p.problems.len())
                .sum::<usize>()
    }
}

/// Verifies one tiered table.
pub async fn verify(
    target: &BackendTarget,
    lake: &Lake,
    t: &TieredTable,
    database: &str,
) -> Result<VerifyReport, TieringError> {
    let by = t.def.partition_by;
    let mut report = VerifyReport {
        table: t.def.qualified(),
        ..Default::default()
    };
    let Some(table) = lake.load(t).await? else {
        return Ok(report);
    };
    let w = watermark(&table);
    report.watermark = w;
    let metadata = table.metadata();
    let Some(snapshot) = metadata.current_snapshot().cloned() else {
        return Ok(report);
    };
    report.snapshot_id = Some(snapshot.snapshot_id());
    let recorded = recorded_checksums(&table);
    let mut parts: BTreeMap<i64, PartitionCheck> = BTreeMap::new();
    let hasher = RowHasher::new(metadata)?;
    // Files are read with every field the table ever had: one written
    // before a column was dropped still holds it, and the checksum the
    // mover recorded covers its values.
    let target_schema = every_field(metadata)?;
    let current = metadata.current_schema();
    let position = |c: &super::Column| {
        let id = crate::lake::field_of(current, c.attnum, &c.name)?.id;
        field_position(&target_schema, id)
    };
    let time_pos = position(t.time_column()).ok_or_else(|| {
        TieringError::Data(format!(
            "the lake's table has no field for the time column {:?}",
            t.time_column().name
        ))
    })?;
    let key_pos = t
        .key
        .iter()
        .map(|&k| position(&t.columns[k]))
        .collect::<Option<Vec<usize>>>();
    let key_columns: Vec<&super::Column> = t.key.iter().map(|&k| &t.columns[k]).collect();

    // Straggler keys, to find those the lake holds too.
    let stragglers = match w {
        Some(w) => hot_before(target, t, database, w).await?,
        None => Vec::new(),
    };
    let mut straggler_keys: HashSet<String> = HashSet::new();
    for b in &stragglers {
        let positions: Vec<usize> = t.key.clone();
        let time = b.column(t.time_index);
        for r in 0..b.num_rows() {
            straggler_keys.insert(crate::federation::row_key(b, &positions, r));
            let p = super::mover::time_micros(time, r).map_or(i64::MIN, |m| transform(by, m));
            parts.entry(p).or_default().stragglers += 1;
        }
    }

    let list = table.manifest_list_reader(&snapshot).load().await?;
    for manifest_file in list.entries() {
        let manifest = manifest_file.load_manifest(table.file_io()).await?;
        for entry in manifest.entries() {
            if entry.status() == ManifestStatus::Deleted {
                continue;
            }
            let file = entry.data_file();
            let Some(p) = partition_value(file.partition()) else {
                report.problems.push(format!(
                    "data file {} has a partition thermocline does not write",
                    file.file_path()
                ));
                continue;
            };
            let check = parts.entry(p).or_default();
            check.files += 1;
            check.manifest_rows += file.record_count();
            let read = read_file(&table, file.file_path(), &target_schema).await;
            let batches = match read {
                Ok(b) => b,
                Err(e) => {
                    check
                        .problems
                        .push(format!("cannot read {}: {e}", file.file_path()));
                    continue;
                }
            };
            let mut file_rows = 0u64;
            for b in &batches {
                file_rows += b.num_rows() as u64;
                let time = b.column(time_pos);
                for r in 0..b.num_rows() {
                    let Some(m) = super::mover::time_micros(time, r) else {
                        check.misplaced += 1;
                        continue;
                    };
                    if transform(by, m) != p {
                        check.misplaced += 1;
                    }
                    if w.is_some_and(|w| m >= w) {
                        check.after_watermark += 1;
                    }
                }
                if let (false, Some(key_pos)) = (straggler_keys.is_empty(), &key_pos) {
                    let keys = b
                        .project(key_pos)
                        .map_err(|e| TieringError::Data(e.to_string()))?;
                    let hot_typed = super::with_hot_types(&keys, &key_columns)?;
                    let positions: Vec<usize> = (0..key_pos.len()).collect();
                    for r in 0..b.num_rows() {
                        if straggler_keys
                            .contains(&crate::federation::row_key(&hot_typed, &positions, r))
                        {
                            check.in_both += 1;
                        }
                    }
                }
                for h in hasher.hashes(b)? {
                    check.lake.add(Tally { rows: 1, sum: h });
                }
            }
            if file_rows != file.record_count() {
                check.problems.push(format!(
                    "{} holds {file_rows} rows; the manifest records {}",
                    file.file_path(),
                    file.record_count()
                ));
            }
        }
    }
    for (p, check) in parts.iter_mut() {
        check.label = partition_label(by, *p);
        if let Some(recorded) = &recorded {
            let want = recorded.get(p).copied().unwrap_or_default();
            check.recorded = Some(want);
            if want != check.lake {
                check.problems.push(format!(
                    "the lake holds {} rows (checksum {:x}); the mover wrote {} (checksum {:x})",
                    check.lake.rows, check.lake.sum, want.rows, want.sum
                ));
            }
        }
        if check.misplaced > 0 {
            check.problems.push(format!(
                "{} rows lie outside their file's partition",
                check.misplaced
            ));
        }
        if check.after_watermark > 0 {
            check.problems.push(format!(
                "{} rows are at or after the watermark and would never be read",
                check.after_watermark
            ));
        }
    }
    if let Some(recorded) = &recorded {
        for (p, want) in recorded {
            if !parts.contains_key(p) && want.rows > 0 {
                report.problems.push(format!(
                    "partition {}: the mover wrote {} rows; the lake holds none",
                    partition_label(by, *p),
                    want.rows
                ));
            }
        }
    }
    report.partitions = parts.into_values().collect();
    Ok(report)
}

/// The per-partition checksums of every row the lake's current snapshot
/// holds, as the mover recorded them (each pass records the running
/// totals, so expiring old snapshots loses nothing); `None` when rows were
/// written without them.
pub fn recorded_checksums(table: &Table) -> Option<BTreeMap<i64, Tally>> {
    let Some(s) = table.metadata().current_snapshot() else {
        return Some(BTreeMap::new());
    };
    let summary = &s.summary().additional_properties;
    match summary.get(CHECKSUMS_KEY) {
        Some(text) => decode_checksums(text),
        None if summary.get("total-records").is_none_or(|n| n == "0") => Some(BTreeMap::new()),
        None => None,
    }
}

/// A data file's rows, with the table's Arrow types.
async fn read_file(
    table: &Table,
    path: &str,
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>, String> {
    read_batches(table, path, schema)
        .await?
        .collect::<Result<Vec<_>, _>>()
}

/// A data file's rows batch by batch, in `schema` (Arrow fields carrying
/// Iceberg field ids): fields are matched by id, whatever their name when
/// the file was written, and a field added since reads NULL.
pub(crate) async fn read_batches(
    table: &Table,
    path: &str,
    schema: &SchemaRef,
) -> Result<impl Iterator<Item = Result<RecordBatch, String>> + Send + use<>, String> {
    let bytes = table
        .file_io()
        .new_input(path)
        .map_err(|e| e.to_string())?
        .read()
        .await
        .map_err(|e| e.to_string())?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| e.to_string())?
        .build()
        .map_err(|e| e.to_string())?;
    let schema = schema.clone();
    Ok(reader.map(move |batch| {
        let batch = batch.map_err(|e| e.to_string())?;
        let file_schema = batch.schema();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for f in schema.fields() {
            let found = field_id(f).and_then(|id| field_position(&file_schema, id));
            let c = match found {
                Some(i) => cast(batch.column(i), f.data_type()).map_err(|e| e.to_string())?,
                None => datafusion::arrow::array::new_null_array(f.data_type(), batch.num_rows()),
            };
            columns.push(c);
        }
        RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())
    }))
}

/// The rows of `t` older than `w` still in Postgres.
async fn hot_before(
    target: &BackendTarget,
    t: &TieredTable,
    database: &str,
    w: i64,
) -> Result<Vec<RecordBatch>, TieringError> {
    let client = super::service_connection(target, database).await?;
    let copy = super::mover::select_copy(t, w);
    let stream = client.copy_out(copy.as_str()).await?;
    super::mover::decode_copy(t, stream).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_round_trip_and_transforms_match_iceberg() {
        let mut sums = BTreeMap::new();
        sums.insert(
            671,
            Tally {
                rows: 3,
                sum: 0xdead,
            },
        );
        sums.insert(-2, Tally { rows: 1, sum: 1 });
        assert_eq!(decode_checksums(&encode_checksums(&sums)), Some(sums));
        // 2025-12-31T23:59:59Z and 1969-12-31T23:00:00Z.
        let late_2025 = 1_767_225_599_000_000;
        assert_eq!(transform(PartitionBy::Month, late_2025), 55 * 12 + 11);
        assert_eq!(transform(PartitionBy::Year, late_2025), 55);
        assert_eq!(transform(PartitionBy::Day, -3_600_000_000), -1);
        assert_eq!(transform(PartitionBy::Hour, -3_600_000_000), -1);
        assert_eq!(partition_label(PartitionBy::Month, 55 * 12 + 11), "2025-12");
        assert_eq!(partition_label(PartitionBy::Day, -1), "1969-12-31");
    }
}
