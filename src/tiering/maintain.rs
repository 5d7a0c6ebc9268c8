//! Lake maintenance for one tiered table, under the mover's advisory lock
//! so no pass runs meanwhile. In order:
//!
//! - **Retention** takes out of the lake every partition that ends at or
//!   before now minus the table's `cold_retention` (whole partitions).
//! - **Compaction** rewrites each partition's small files (under half of
//!   the target size) into files of up to the target size, sorted by time.
//! - **Expiry** drops snapshots older than `snapshot_age` beyond the
//!   newest `keep_snapshots`, and removes what they alone named: the data
//!   files retention and compaction took out, old manifest lists and
//!   manifests (in a local warehouse and in S3 alike).
//! - **Orphans** are files under the table's location that neither the
//!   current metadata, its metadata log, nor any remaining snapshot
//!   (manifest list, manifests, data files) refers to: the files of
//!   passes that crashed before their Iceberg commit, and any that an
//!   interrupted expiry left.
//!   Only files older than `orphan_age` are removed, so files a writer
//!   outside thermocline is still producing are left alone.
//!
//! Retention and compaction each commit one snapshot (see
//! [`super::rewrite`]); orphans are looked for in a local warehouse only:
//! with the lake in S3, orphan removal is left to the bucket's own tools.
//!
//! Removing a file nothing refers to cannot change what any read returns,
//! and each commit happens whole or not at all, so a maintenance run
//! stopped at any point leaves a consistent lake.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};

use super::{TieredTable, TieringError};
use crate::backend::target::BackendTarget;
use crate::lake::Lake;

/// What a maintenance run may remove.
#[derive(Debug, Clone)]
pub struct MaintainOptions {
    /// Snapshots younger than this are kept.
    pub snapshot_age: Duration,
    /// The newest snapshots kept whatever their age (at least 1).
    pub keep_snapshots: usize,
    /// Unreferenced files younger than this are kept.
    pub orphan_age: Duration,
    /// Compaction's target file size in bytes; 0 turns compaction off.
    pub target_file_size: u64,
    /// Report, remove nothing.
    pub dry_run: bool,
}

impl Default for MaintainOptions {
    fn default() -> Self {
        Self {
            snapshot_age: Duration::from_secs(7 * 86_400),
            keep_snapshots: 10,
            orphan_age: Duration::from_secs(3_600),
            target_file_size: 128 * 1024 * 1024,
            dry_run: false,
        }
    }
}

/// What one run did.
#[derive(Debug, Clone, Default)]
pub struct MaintainReport {
    pub table: String,
    pub snapshots_before: usize,
    pub snapshots_expired: usize,
    /// Files only the expired snapshots named, removed with them.
    pub expired_files: usize,
    pub orphans_removed: usize,
    pub orphan_bytes: u64,
    /// Unreferenced files left because they are younger than `orphan_age`.
    pub orphans_young: usize,
    pub retention: super::rewrite::RetentionReport,
    pub compaction: super::rewrite::CompactReport,
}

/// Maintains the lake table of `t`. `None`: a mover holds the table.
pub async fn maintain(
    target: &BackendTarget,
    lake: &Lake,
    t: &TieredTable,
    database: &str,
    options: &MaintainOptions,
) -> Result<Option<MaintainReport>, TieringError> {
    let mut client = super::service_connection(target, database).await?;
    let tx = client.transaction().await?;
    if !super::mover::lock_table(&tx, t, database).await? {
        return Ok(None);
    }
    let mut report = MaintainReport {
        table: t.def.qualified(),
        ..Default::default()
    };
    let Some(mut table) = lake.load(t).await? else {
        return Ok(Some(report));
    };
    if table.metadata().current_snapshot().is_some() {
        let cutoff = super::mover::ago(&tx, t, t.def.cold_retention).await?;
        (table, report.retention) =
            super::rewrite::expire_rows(lake, table, t, cutoff, options.dry_run).await?;
        if options.target_file_size > 0 {
            (table, report.compaction) =
                super::rewrite::compact(lake, table, t, options.target_file_size, options.dry_run)
                    .await?;
        }
    }
    report.snapshots_before = table.metadata().snapshots().count();
    let keep = options.keep_snapshots.max(1);
    if report.snapshots_before > keep && !options.dry_run {
        let cutoff = SystemTime::now()
            .checked_sub(options.snapshot_age)
            .unwrap_or(SystemTime::UNIX_EPOCH)
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let before = referenced_locations(&table).await?;
        let txn = Transaction::new(&table);
        let txn = txn
            .expire_snapshots()
            .expire_older_than_ms(cutoff)
            .retain_last(keep)
            .apply(txn)?;
        table = txn.commit(lake.catalog()).await?;
        report.snapshots_expired = report.snapshots_before - table.metadata().snapshots().count();
        // What only the expired snapshots named goes with them, in a local
        // warehouse and in S3 alike.
        let after = referenced_locations(&table).await?;
        for location in before.difference(&after) {
            match table.file_io().delete(location).await {
                Ok(()) => report.expired_files += 1,
                Err(e) => {
                    tracing::warn!(location, error = %e, "cannot remove a file of an expired snapshot")
                }
            }
        }
    }
    // Iceberg's file IO cannot list a bucket: orphans are looked for in a
    // local warehouse only.
    if crate::lake::is_s3(table.metadata().location()) {
        tx.commit().await?;
        return Ok(Some(report));
    }
    let referenced = referenced_files(&table).await?;
    let root = local_path(table.metadata().location());
    let now = SystemTime::now();
    let files = files_under(&root);
    // Never remove anything when the metadata's paths and the files on
    // disk do not line up (a moved warehouse, say): every file would look
    // unreferenced.
    let matched = files
        .iter()
        .filter(|(p, _, _)| referenced.contains(p))
        .count();
    if matched == 0 && !files.is_empty() && !referenced.is_empty() {
        return Err(TieringError::Data(format!(
            "none of the files under {} is one the table's metadata names; nothing removed",
            root.display()
        )));
    }
    let mut removed_one = false;
    for (path, size, modified) in files {
        if referenced.contains(&path) {
            continue;
        }
        let age = now.duration_since(modified).unwrap_or_default();
        if age < options.orphan_age {
            report.orphans_young += 1;
            continue;
        }
        if !options.dry_run {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove an orphan file");
                continue;
            }
            if !removed_one {
                removed_one = true;
                super::mover::stop_point("mid-cleanup");
            }
        }
        report.orphans_removed += 1;
        report.orphan_bytes += size;
    }
    tx.commit().await?;
    Ok(Some(report))
}

/// Every file the table's metadata refers to, as local paths.
async fn referenced_files(table: &Table) -> Result<HashSet<PathBuf>, TieringError> {
    Ok(referenced_locations(table)
        .await?
        .iter()
        .map(|l| local_path(l))
        .collect())
}

/// Every file the table's metadata refers to: metadata files, and each
/// snapshot's manifest list, manifests and live data files.
async fn referenced_locations(table: &Table) -> Result<HashSet<String>, TieringError> {
    let metadata = table.metadata();
    let mut out = HashSet::new();
    if let Some(current) = table.metadata_location() {
        out.insert(current.to_string());
    }
    for entry in metadata.metadata_log() {
        out.insert(entry.metadata_file.clone());
    }
    for snapshot in metadata.snapshots() {
        out.insert(snapshot.manifest_list().to_string());
        let list = table.manifest_list_reader(snapshot).load().await?;
        for manifest_file in list.entries() {
            out.insert(manifest_file.manifest_path.clone());
            let manifest = manifest_file.load_manifest(table.file_io()).await?;
            // A file a snapshot marks deleted is one of its parent's, kept
            // only while a snapshot that holds it live remains.
            for entry in manifest.entries().iter().filter(|e| e.is_alive()) {
                out.insert(entry.data_file().file_path().to_string());
            }
        }
    }
    Ok(out)
}

/// A location of the local warehouse as a path.
fn local_path(location: &str) -> PathBuf {
    PathBuf::from(
        location
            .strip_prefix("file://")
            .or_else(|| location.strip_prefix("file:"))
            .unwrap_or(location),
    )
}

/// Every file below `root`: path, size, modification time.
fn files_under(root: &Path) -> Vec<(PathBuf, u64, SystemTime)> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                dirs.push(entry.path());
            } else if meta.is_file() {
                let modified = meta.modified().unwrap_or_else(|_| SystemTime::now());
                out.push((entry.path(), meta.len(), modified));
            }
        }
    }
    out
}
