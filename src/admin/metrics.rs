//! Process-wide counters, served at `/metrics` in Prometheus's text format
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/>).
//!
//! Counting is one relaxed atomic add on the paths it measures; nothing is
//! allocated per statement.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// Upper bounds (seconds) of the statement duration histograms.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

/// Where a statement was answered, as `/metrics` and the system views label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteLabel {
    /// Passed to Postgres as the client sent it.
    Relay = 0,
    /// Read over both tiers by thermocline.
    Federated = 1,
    /// A system view (`thermocline.*`), answered from thermocline's own figures.
    Local = 2,
}

impl RouteLabel {
    const ALL: [RouteLabel; 3] = [RouteLabel::Relay, RouteLabel::Federated, RouteLabel::Local];

    pub fn as_str(self) -> &'static str {
        match self {
            RouteLabel::Relay => "relay",
            RouteLabel::Federated => "federated",
            RouteLabel::Local => "local",
        }
    }
}

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    sum_us: AtomicU64,
    count: AtomicU64,
    errors: AtomicU64,
}

#[derive(Default)]
pub struct Metrics {
    pub connections_current: AtomicI64,
    pub connections_total: AtomicU64,
    pub connections_rejected: AtomicU64,
    /// Sessions closed by `idle_session_timeout`.
    pub idle_timeouts: AtomicU64,
    /// Bytes read from clients and written to them.
    pub bytes_from_clients: AtomicU64,
    pub bytes_to_clients: AtomicU64,
    /// Per route (indexed by `RouteLabel as usize`).
    statements: [Histogram; 3],
    pub slow_statements: AtomicU64,
    /// ErrorResponses sent to clients, by SQLSTATE class.
    error_classes: Mutex<BTreeMap<[u8; 2], u64>>,
    /// Federated statements running now, and waiting for a place.
    pub federated_running: AtomicI64,
    pub federated_queued: AtomicI64,
    pub federated_queue_timeouts: AtomicU64,
    /// The limits in force (name, value), as last set or reloaded.
    limits: Mutex<Vec<(&'static str, f64)>>,
    /// Per tiered table: rows moved, passes, failed passes, watermark.
    tiers: Mutex<BTreeMap<String, TierFigures>>,
    /// The cache of cold partial results, once there is one.
    pub cache: Mutex<Option<std::sync::Arc<crate::federation::cache::ColdCache>>>,
    /// The executor's memory pool, once there is one.
    pub executor_pool:
        Mutex<Option<std::sync::Arc<dyn datafusion::execution::memory_pool::MemoryPool>>>,
}

#[derive(Default, Clone)]
pub struct TierFigures {
    pub rows_moved: u64,
    pub files_written: u64,
    pub passes: u64,
    pub failures: u64,
    pub watermark_us: i64,
    /// When this process last ran a pass over the table, and how it ended.
    pub last_run: Option<std::time::SystemTime>,
    pub last_error: Option<String>,
    /// Rows a pass found already in the lake (from an interrupted pass).
    pub rows_already_moved: u64,
    /// Rows moved that were older than the previous watermark (late rows).
    pub late_rows: u64,
    /// Lake maintenance: snapshots expired, orphan files and bytes removed.
    pub snapshots_expired: u64,
    pub orphans_removed: u64,
    pub orphan_bytes_removed: u64,
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);

impl Metrics {
    /// A statement answered by `route` ended after `took`.
    pub fn statement(&self, route: RouteLabel, took: Duration, failed: bool) {
        let h = &self.statements[route as usize];
        h.count.fetch_add(1, Relaxed);
        if failed {
            h.errors.fetch_add(1, Relaxed);
        }
        h.sum_us.fetch_add(took.as_micros() as u64, Relaxed);
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|le| secs <= *le) {
            h.buckets[i].fetch_add(1, Relaxed);
        }
    }

    /// Statements answered by `route` so far.
    pub fn statements(&self, route: RouteLabel) -> u64 {
        self.statements[route as usize].count.load(Relaxed)
    }

    /// An ErrorResponse with this SQLSTATE went to a client.
    pub fn error_sent(&self, sqlstate: &[u8]) {
        if let [a, b, ..] = sqlstate {
            let mut classes = self.error_classes.lock().unwrap_or_else(|e| e.into_inner());
            *classes.entry([*a, *b]).or_default() += 1;
        }
    }

    /// A pass of the mover over `table` ended: rows and files moved and
    /// the watermark, or why it failed.
    pub fn tier_pass(
        &self,
        table: &str,
        outcome: Result<&crate::tiering::mover::MoveReport, String>,
    ) {
        let mut tiers = self.tiers.lock().unwrap_or_else(|e| e.into_inner());
        let t = tiers.entry(table.to_string()).or_default();
        t.passes += 1;
        t.last_run = Some(std::time::SystemTime::now());
        match outcome {
            Ok(r) => {
                let (rows, written, files, watermark) =
                    (r.rows_deleted, r.rows_written, r.files as u64, r.watermark);
                t.rows_moved += rows;
                t.rows_already_moved += rows.saturating_sub(written);
                t.late_rows += r.late_rows;
                t.files_written += files;
                t.watermark_us = t.watermark_us.max(watermark);
                t.last_error = None;
            }
            Err(e) => {
                t.failures += 1;
                t.last_error = Some(e);
            }
        }
    }

    /// The limits now in force, for `thermocline_limit`.
    pub fn set_limits(&self, limits: Vec<(&'static str, f64)>) {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner()) = limits;
    }

    /// A maintenance run over `table` ended.
    pub fn maintained(&self, table: &str, snapshots: u64, orphans: u64, bytes: u64) {
        let mut tiers = self.tiers.lock().unwrap_or_else(|e| e.into_inner());
        let t = tiers.entry(table.to_string()).or_default();
        t.snapshots_expired += snapshots;
        t.orphans_removed += orphans;
        t.orphan_bytes_removed += bytes;
    }

    /// This process's figures for the mover of `table`.
    pub fn tier_figures(&self, table: &str) -> Option<TierFigures> {
        let tiers = self.tiers.lock().unwrap_or_else(|e| e.into_inner());
        tiers.get(table).cloned()
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let executor_memory_in_use = self
            .executor_pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|p| p.reserved());
        let mut out = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, lines: &[(String, String)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in lines {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let one = |v: String| vec![(String::new(), v)];
        metric(
            "thermocline_connections",
            "gauge",
            "Client connections open now.",
            &one(self.connections_current.load(Relaxed).to_string()),
        );
        metric(
            "thermocline_connections_total",
            "counter",
            "Client connections accepted.",
            &one(self.connections_total.load(Relaxed).to_string()),
        );
        metric(
            "thermocline_connections_rejected_total",
            "counter",
            "Client connections refused by max_client_connections (53300).",
            &one(self.connections_rejected.load(Relaxed).to_string()),
        );
        let by_route = |f: &dyn Fn(&Histogram) -> String| -> Vec<(String, String)> {
            RouteLabel::ALL
                .iter()
                .map(|r| {
                    (
                        format!("{{route=\"{}\"}}", r.as_str()),
                        f(&self.statements[*r as usize]),
                    )
                })
                .collect()
        };
        metric(
            "thermocline_statements_total",
            "counter",
            "Statements (a simple query, or an extended-protocol exchange up to Sync) by where they were answered.",
            &by_route(&|h| h.count.load(Relaxed).to_string()),
        );
        metric(
            "thermocline_statement_errors_total",
            "counter",
            "Statements that ended with an error, by where they were answered.",
            &by_route(&|h| h.errors.load(Relaxed).to_string()),
        );
        let mut hist = Vec::new();
        for r in RouteLabel::ALL {
            let h = &self.statements[r as usize];
            let mut cumulative = 0;
            for (le, n) in BUCKETS.iter().zip(&h.buckets) {
                cumulative += n.load(Relaxed);
                hist.push((
                    format!("_bucket{{route=\"{}\",le=\"{le}\"}}", r.as_str()),
                    cumulative.to_string(),
                ));
            }
            let count = h.count.load(Relaxed);
            hist.push((
                format!("_bucket{{route=\"{}\",le=\"+Inf\"}}", r.as_str()),
                count.to_string(),
            ));
            hist.push((
                format!("_sum{{route=\"{}\"}}", r.as_str()),
                format!("{}", h.sum_us.load(Relaxed) as f64 / 1e6),
            ));
            hist.push((
                format!("_count{{route=\"{}\"}}", r.as_str()),
                count.to_string(),
            ));
        }
        metric(
            "thermocline_statement_duration_seconds",
            "histogram",
            "Time from a statement's arrival to its ReadyForQuery, by where it was answered.",
            &hist,
        );
        metric(
            "thermocline_slow_statements_total",
            "counter",
            "Statements slower than slow_statement_threshold (each is logged).",
            &one(self.slow_statements.load(Relaxed).to_string()),
        );
        let classes: Vec<(String, String)> = self
            .error_classes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(c, n)| {
                (
                    format!("{{class=\"{}\"}}", String::from_utf8_lossy(c)),
                    n.to_string(),
                )
            })
            .collect();
        metric(
            "thermocline_errors_total",
            "counter",
            "Errors sent to clients (Postgres's and thermocline's), by SQLSTATE class.",
            &classes,
        );
        metric(
            "thermocline_client_bytes_received_total",
            "counter",
            "Bytes read from clients.",
            &one(self.bytes_from_clients.load(Relaxed).to_string()),
        );
        metric(
            "thermocline_client_bytes_sent_total",
            "counter",
            "Bytes written to clients.",
            &one(self.bytes_to_clients.load(Relaxed).to_string()),
        );
        metric(
            "thermocline_idle_session_timeouts_total",
            "counter",
            "Sessions closed by idle_session_timeout.",
            &one(self.idle_timeouts.load(Relaxed).to_string()),
        );
        let limits: Vec<(String, String)> = self
            .limits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, v)| (format!("{{name=\"{name}\"}}"), v.to_string()))
            .collect();
        metric(
            "thermocline_limit",
            "gauge",
            "The limits in force (0: none); durations in seconds, sizes in bytes. SIGHUP changes them.",
            &limits,
        );
        metric(
            "thermocline_federated_running",
            "gauge",
            "Federated statements running now (at most max_federated_statements).",
            &one(self.federated_running.load(Relaxed).to_string()),
        );
        metric(
            "thermocline_federated_queued",
            "gauge",
            "Federated statements waiting for a place now.",
            &one(self.federated_queued.load(Relaxed).to_string()),
        );
        metric(
            "thermocline_federated_queue_timeouts_total",
            "counter",
            "Federated statements that waited federated_queue_timeout and failed (53000).",
            &one(self.federated_queue_timeouts.load(Relaxed).to_string()),
        );
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(c) = cache {
            let kind = |v: u64| vec![("{kind=\"cold_partial\"}".to_string(), v.to_string())];
            let kinds = |cold: u64, result: u64| {
                vec![
                    ("{kind=\"cold_partial\"}".to_string(), cold.to_string()),
                    ("{kind=\"result\"}".to_string(), result.to_string()),
                ]
            };
            metric(
                "thermocline_cache_hits_total",
                "counter",
                "Cold halves of federated statements answered from the cache, and whole answers given from it (thermocline.result_cache_ttl).",
                &kinds(c.hits.load(Relaxed), c.result_hits.load(Relaxed)),
            );
            metric(
                "thermocline_cache_misses_total",
                "counter",
                "Cold halves computed (kept when small enough), and whole answers computed under a result_cache_ttl.",
                &kinds(c.misses.load(Relaxed), c.result_misses.load(Relaxed)),
            );
            metric(
                "thermocline_cache_evictions_total",
                "counter",
                "Cache entries evicted to stay within cache_memory.",
                &kind(c.evictions.load(Relaxed)),
            );
            metric(
                "thermocline_cache_bytes",
                "gauge",
                "Bytes the cache holds now (at most cache_memory).",
                &kind(c.weighted_size()),
            );
            metric(
                "thermocline_cache_entries",
                "gauge",
                "Entries the cache holds now.",
                &kind(c.entry_count()),
            );
        }
        if let Some(bytes) = executor_memory_in_use {
            metric(
                "thermocline_executor_memory_bytes",
                "gauge",
                "Memory the executor's pool has handed out now.",
                &one(bytes.to_string()),
            );
        }
        let tiers = self.tiers.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let per = |f: &dyn Fn(&TierFigures) -> String| -> Vec<(String, String)> {
            tiers
                .iter()
                .map(|(table, t)| {
                    (
                        format!("{{table=\"{}\"}}", table.replace('"', "\\\"")),
                        f(t),
                    )
                })
                .collect()
        };
        metric(
            "thermocline_tier_rows_moved_total",
            "counter",
            "Rows the mover took from Postgres to the lake.",
            &per(&|t| t.rows_moved.to_string()),
        );
        metric(
            "thermocline_tier_files_written_total",
            "counter",
            "Parquet files the mover wrote.",
            &per(&|t| t.files_written.to_string()),
        );
        metric(
            "thermocline_tier_passes_total",
            "counter",
            "Passes of the mover.",
            &per(&|t| t.passes.to_string()),
        );
        metric(
            "thermocline_tier_failures_total",
            "counter",
            "Passes of the mover that failed.",
            &per(&|t| t.failures.to_string()),
        );
        metric(
            "thermocline_tier_watermark_seconds",
            "gauge",
            "The watermark: rows older than this are in the lake (Unix time).",
            &per(&|t| format!("{}", t.watermark_us as f64 / 1e6)),
        );
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        metric(
            "thermocline_tier_lag_seconds",
            "gauge",
            "Now minus the watermark: how far back Postgres still holds rows (the hot window plus the time since the last pass).",
            &per(&|t| format!("{}", (now_us - t.watermark_us).max(0) as f64 / 1e6)),
        );
        metric(
            "thermocline_tier_rows_already_moved_total",
            "counter",
            "Rows a pass deleted from Postgres without writing them again: the lake held them from an interrupted pass.",
            &per(&|t| t.rows_already_moved.to_string()),
        );
        metric(
            "thermocline_tier_late_rows_total",
            "counter",
            "Rows moved that were older than the previous watermark: written to Postgres after their time had moved to the lake.",
            &per(&|t| t.late_rows.to_string()),
        );
        metric(
            "thermocline_lake_snapshots_expired_total",
            "counter",
            "Lake snapshots expired by maintenance.",
            &per(&|t| t.snapshots_expired.to_string()),
        );
        metric(
            "thermocline_lake_orphan_files_removed_total",
            "counter",
            "Unreferenced lake files removed by maintenance.",
            &per(&|t| t.orphans_removed.to_string()),
        );
        metric(
            "thermocline_lake_orphan_bytes_removed_total",
            "counter",
            "Bytes of unreferenced lake files removed by maintenance.",
            &per(&|t| t.orphan_bytes_removed.to_string()),
        );
        out
    }
}
