//! Commits that replace or remove data files: compaction of small files
//! and cold retention. Iceberg 0.10's transactions only append, so each
//! snapshot here is built from Iceberg's manifest and manifest-list
//! writers and committed only if no other commit came first
//! ([`Lake::commit`]): it happens whole or not at all. The files it takes out stay on disk, still named by older
//! snapshots, until snapshot expiry and orphan removal free them, so reads
//! that started before it finish unharmed.
//!
//! Every such snapshot carries the watermark W, the last move's batch id
//! and the per-partition checksums forward: compaction keeps them (the rows are the same),
//! retention drops the partitions it removes, and `tier verify` checks the
//! result like any pass's.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use iceberg::TableUpdate;
use iceberg::spec::{
    DataFile, FormatVersion, MAIN_BRANCH, ManifestEntryRef, ManifestListWriter,
    ManifestWriterBuilder, Operation, PrimitiveLiteral, Snapshot, SnapshotReference,
    SnapshotRetention, Summary,
};
use iceberg::table::Table;

use super::verify::{Tally, encode_checksums, partition_value, recorded_checksums};
use super::{TieredTable, TieringError};
use crate::lake::{BATCH_KEY, CHECKSUMS_KEY, Lake, WATERMARK_KEY, last_move, watermark};

/// Snapshot summary key: the maintenance that wrote the snapshot.
const MAINTENANCE_KEY: &str = "thermocline.maintenance";

/// The data files of the table's current snapshot.
pub(crate) async fn live_files(table: &Table) -> Result<Vec<ManifestEntryRef>, TieringError> {
    let Some(snapshot) = table.metadata().current_snapshot() else {
        return Ok(Vec::new());
    };
    let list = table.manifest_list_reader(snapshot).load().await?;
    let mut out = Vec::new();
    for m in list.entries() {
        let manifest = m.load_manifest(table.file_io()).await?;
        out.extend(manifest.entries().iter().filter(|e| e.is_alive()).cloned());
    }
    Ok(out)
}

/// What a replacement changes.
struct Replacement {
    /// Paths of data files of the current snapshot to take out.
    removed: HashSet<String>,
    added: Vec<DataFile>,
    operation: Operation,
    /// The per-partition checksums of the rows the new snapshot holds.
    checksums: Option<BTreeMap<i64, Tally>>,
    maintenance: &'static str,
}

/// Commits a snapshot of `table` without the `removed` files and with the
/// `added` ones. Manifests naming no removed file are kept as they are;
/// the others are written again, their removed files marked deleted.
async fn replace_files(lake: &Lake, table: &Table, r: Replacement) -> Result<Table, TieringError> {
    let metadata = table.metadata();
    let parent = metadata
        .current_snapshot()
        .ok_or_else(|| TieringError::Data("the lake's table has no snapshot".into()))?;
    if metadata.format_version() != FormatVersion::V2 {
        return Err(TieringError::Data(format!(
            "lake tables of Iceberg format {} are not maintained by thermocline",
            metadata.format_version()
        )));
    }
    let snapshot_id = loop {
        let (a, b) = uuid::Uuid::new_v4().as_u64_pair();
        let id = ((a ^ b) >> 1) as i64;
        if id != 0 && metadata.snapshot_by_id(id).is_none() {
            break id;
        }
    };
    let sequence = metadata.next_sequence_number();
    let commit = uuid::Uuid::now_v7();
    let mut written = 0;
    let mut new_manifest = || {
        written += 1;
        let path = format!("{}/metadata/{commit}-m{written}.avro", metadata.location());
        Ok::<_, iceberg::Error>(
            ManifestWriterBuilder::new(
                table.file_io().new_output(path)?,
                Some(snapshot_id),
                metadata.current_schema().clone(),
                metadata.default_partition_spec().as_ref().clone(),
            )
            .build_v2_data(),
        )
    };

    let mut manifests = Vec::new();
    let (mut deleted_files, mut deleted_records, mut removed_size) = (0u64, 0u64, 0u64);
    let list = table.manifest_list_reader(parent).load().await?;
    for m in list.entries() {
        let manifest = m.load_manifest(table.file_io()).await?;
        let touched = manifest
            .entries()
            .iter()
            .any(|e| e.is_alive() && r.removed.contains(e.file_path()));
        if !touched {
            manifests.push(m.clone());
            continue;
        }
        let mut writer = new_manifest()?;
        for e in manifest.entries().iter().filter(|e| e.is_alive()) {
            let sequence_number = e.sequence_number().ok_or_else(|| {
                TieringError::Data(format!("{} has no sequence number", e.file_path()))
            })?;
            if r.removed.contains(e.file_path()) {
                writer.add_delete_file(
                    e.data_file().clone(),
                    sequence_number,
                    e.file_sequence_number,
                )?;
                deleted_files += 1;
                deleted_records += e.record_count();
                removed_size += e.file_size_in_bytes();
            } else {
                writer.add_existing_file(
                    e.data_file().clone(),
                    e.snapshot_id().unwrap_or(m.added_snapshot_id),
                    sequence_number,
                    e.file_sequence_number,
                )?;
            }
        }
        manifests.push(writer.write_manifest_file().await?);
    }
    if deleted_files as usize != r.removed.len() {
        return Err(TieringError::Data(
            "some files to take out are not in the table's current snapshot; nothing committed"
                .into(),
        ));
    }
    let added_files = r.added.len() as u64;
    let added_records: u64 = r.added.iter().map(|f| f.record_count()).sum();
    let added_size: u64 = r.added.iter().map(|f| f.file_size_in_bytes()).sum();
    if !r.added.is_empty() {
        let mut writer = new_manifest()?;
        for f in r.added {
            writer.add_file(f, sequence)?;
        }
        manifests.push(writer.write_manifest_file().await?);
    }
    let list_path = format!(
        "{}/metadata/snap-{snapshot_id}-0-{commit}.avro",
        metadata.location()
    );
    let mut list_writer = ManifestListWriter::v2(
        table.file_io().new_output(&list_path)?.writer().await?,
        snapshot_id,
        Some(parent.snapshot_id()),
        sequence,
    );
    list_writer.add_manifests(manifests.into_iter())?;
    list_writer.close().await?;

    let before = &parent.summary().additional_properties;
    let total = |key: &str| {
        before
            .get(key)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut properties: HashMap<String, String> = [
        (
            "total-records",
            (total("total-records") + added_records).saturating_sub(deleted_records),
        ),
        (
            "total-data-files",
            (total("total-data-files") + added_files).saturating_sub(deleted_files),
        ),
        (
            "total-files-size",
            (total("total-files-size") + added_size).saturating_sub(removed_size),
        ),
        ("total-delete-files", total("total-delete-files")),
        ("total-position-deletes", total("total-position-deletes")),
        ("total-equality-deletes", total("total-equality-deletes")),
        ("added-data-files", added_files),
        ("deleted-data-files", deleted_files),
        ("added-records", added_records),
        ("deleted-records", deleted_records),
        ("added-files-size", added_size),
        ("removed-files-size", removed_size),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if let Some(w) = watermark(table) {
        properties.insert(WATERMARK_KEY.into(), w.to_string());
    }
    if let Some(batch) = last_move(table) {
        properties.insert(BATCH_KEY.into(), batch);
    }
    if let Some(sums) = &r.checksums {
        properties.insert(CHECKSUMS_KEY.into(), encode_checksums(sums));
    }
    properties.insert(MAINTENANCE_KEY.into(), r.maintenance.into());
    let snapshot = Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(Some(parent.snapshot_id()))
        .with_sequence_number(sequence)
        .with_timestamp_ms(chrono::Utc::now().timestamp_millis())
        .with_manifest_list(list_path)
        .with_summary(Summary {
            operation: r.operation,
            additional_properties: properties,
        })
        .with_schema_id(metadata.current_schema_id())
        .build();
    let reference = SnapshotReference::new(
        snapshot.snapshot_id(),
        SnapshotRetention::branch(None, None, None),
    );
    let updates = vec![
        TableUpdate::AddSnapshot { snapshot },
        TableUpdate::SetSnapshotRef {
            ref_name: MAIN_BRANCH.to_string(),
            reference,
        },
    ];
    Ok(lake.commit(table, updates).await?)
}

/// What compaction did (or, in a dry run, would do).
#[derive(Debug, Clone, Default)]
pub struct CompactReport {
    pub partitions: usize,
    pub files_rewritten: usize,
    pub bytes_rewritten: u64,
    pub files_written: usize,
}

/// Rewrites the small files of each partition (under half of
/// `target_size`) into files of up to `target_size`, sorted by time: two
/// or more small files of a partition, taken in time order, are read and
/// written again together. One partition is held open at a time, and its
/// files are read a batch at a time, so memory stays bounded.
pub(crate) async fn compact(
    lake: &Lake,
    table: Table,
    t: &TieredTable,
    target_size: u64,
    dry_run: bool,
) -> Result<(Table, CompactReport), TieringError> {
    let mut report = CompactReport::default();
    let metadata = table.metadata();
    let current = metadata.current_schema();
    let time = t.time_column();
    let time_field = crate::lake::field_of(current, time.attnum, &time.name)
        .ok_or_else(|| TieringError::Data(format!("the lake has no field for {:?}", time.name)))?;
    let time_id = time_field.id;
    let time_index = current
        .as_struct()
        .fields()
        .iter()
        .position(|f| f.id == time_id)
        .expect("the field is in the schema");
    let mut by_partition: BTreeMap<i64, Vec<ManifestEntryRef>> = BTreeMap::new();
    for e in live_files(&table).await? {
        if e.file_size_in_bytes() < target_size / 2
            && let Some(p) = partition_value(e.data_file().partition())
        {
            by_partition.entry(p).or_default().push(e);
        }
    }
    // Per partition, the small files in time order, in groups of up to
    // the target size; a group of one is left as it is.
    let mut groups: Vec<Vec<ManifestEntryRef>> = Vec::new();
    for (_, mut files) in by_partition {
        files.sort_by_key(|e| {
            e.data_file()
                .lower_bounds()
                .get(&time_id)
                .map_or(i64::MIN, |d| match d.literal() {
                    PrimitiveLiteral::Long(v) => *v,
                    PrimitiveLiteral::Int(v) => *v as i64 * 86_400_000_000,
                    _ => i64::MIN,
                })
        });
        let mut group: Vec<ManifestEntryRef> = Vec::new();
        let mut size = 0;
        for f in files {
            if !group.is_empty() && size + f.file_size_in_bytes() > target_size {
                groups.push(std::mem::take(&mut group));
                size = 0;
            }
            size += f.file_size_in_bytes();
            group.push(f);
        }
        groups.push(group);
    }
    groups.retain(|g| g.len() > 1);
    report.partitions = groups
        .iter()
        .filter_map(|g| partition_value(g[0].data_file().partition()))
        .collect::<HashSet<_>>()
        .len();
    report.files_rewritten = groups.iter().map(Vec::len).sum();
    report.bytes_rewritten = groups
        .iter()
        .flatten()
        .map(|e| e.file_size_in_bytes())
        .sum();
    if groups.is_empty() || dry_run {
        return Ok((table, report));
    }

    let target = Arc::new(iceberg::arrow::schema_to_arrow_schema(current)?);
    // Files are read with every field the table ever had: the checksums
    // recorded for their rows cover the values of columns dropped since,
    // which the new files no longer hold.
    let every = super::verify::every_field(metadata)?;
    let keep: Vec<usize> = target
        .fields()
        .iter()
        .map(|f| {
            super::verify::field_id(f)
                .and_then(|id| super::verify::field_position(&every, id))
                .expect("every field of the current schema")
        })
        .collect();
    let hasher = super::verify::RowHasher::new(metadata)?;
    let by = t.def.partition_by;
    let mut removed = HashSet::new();
    let mut added = Vec::new();
    let mut checksums = recorded_checksums(&table);
    let (mut rows_read, mut rows_expected) = (0u64, 0u64);
    let data = |e: datafusion::arrow::error::ArrowError| TieringError::Data(e.to_string());
    for group in &groups {
        let mut writer = super::mover::FileWriter::new(&table)?;
        for e in group {
            let reading = |m: String| TieringError::Data(format!("reading {}: {m}", e.file_path()));
            let batches = super::verify::read_batches(&table, e.file_path(), &every)
                .await
                .map_err(reading)?;
            let p = partition_value(e.data_file().partition());
            for batch in batches {
                let batch = batch.map_err(reading)?;
                rows_read += batch.num_rows() as u64;
                if let (Some(sums), Some(p)) = (checksums.as_mut(), p) {
                    let mut before = Tally::default();
                    for h in hasher.hashes(&batch)? {
                        before.add(Tally { rows: 1, sum: h });
                    }
                    sums.entry(p).or_default().remove(before);
                }
                let columns = keep.iter().map(|&i| batch.column(i).clone()).collect();
                let batch = datafusion::arrow::array::RecordBatch::try_new(target.clone(), columns)
                    .map_err(data)?;
                writer.write_at(time_index, by, &target, batch).await?;
            }
            rows_expected += e.record_count();
            removed.insert(e.file_path().to_string());
        }
        added.extend(writer.close().await?);
        if let Some(sums) = checksums.as_mut() {
            for (p, tally) in std::mem::take(&mut writer.checksums) {
                sums.entry(p).or_default().add(tally);
            }
        }
        super::mover::stop_point("mid-compaction");
    }
    let rows_written: u64 = added.iter().map(|f| f.record_count()).sum();
    if rows_read != rows_expected || rows_written != rows_expected {
        return Err(TieringError::Data(format!(
            "compaction read {rows_read} and wrote {rows_written} rows of files the manifests say hold {rows_expected}; nothing committed"
        )));
    }
    report.files_written = added.len();
    let table = replace_files(
        lake,
        &table,
        Replacement {
            removed,
            added,
            operation: Operation::Replace,
            checksums,
            maintenance: "compaction",
        },
    )
    .await?;
    Ok((table, report))
}

/// What cold retention did (or, in a dry run, would do).
#[derive(Debug, Clone, Default)]
pub struct RetentionReport {
    /// Rows before this time (microseconds since 1970, as the lake stores
    /// the time column) are in the partitions that left the lake.
    pub boundary: i64,
    pub partitions: usize,
    pub files: usize,
    pub rows: u64,
}

/// Takes out of the lake every partition that ends at or before `cutoff`
/// (now minus the table's `cold_retention`): whole partitions only, so
/// rows stay until all of their partition is past retention.
pub(crate) async fn expire_rows(
    lake: &Lake,
    table: Table,
    t: &TieredTable,
    cutoff: i64,
    dry_run: bool,
) -> Result<(Table, RetentionReport), TieringError> {
    let by = t.def.partition_by;
    let first_kept = super::verify::transform(by, cutoff);
    let mut report = RetentionReport {
        boundary: super::verify::partition_start(by, first_kept),
        ..Default::default()
    };
    let mut removed = HashSet::new();
    let mut partitions = HashSet::new();
    for e in live_files(&table).await? {
        let Some(p) = partition_value(e.data_file().partition()) else {
            continue;
        };
        if p < first_kept {
            partitions.insert(p);
            report.files += 1;
            report.rows += e.record_count();
            removed.insert(e.file_path().to_string());
        }
    }
    report.partitions = partitions.len();
    if removed.is_empty() || dry_run {
        return Ok((table, report));
    }
    let checksums = recorded_checksums(&table).map(|mut sums| {
        sums.retain(|p, _| *p >= first_kept);
        sums
    });
    let table = replace_files(
        lake,
        &table,
        Replacement {
            removed,
            added: Vec::new(),
            operation: Operation::Delete,
            checksums,
            maintenance: "retention",
        },
    )
    .await?;
    Ok((table, report))
}
