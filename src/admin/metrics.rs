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

/// Upper bounds (seconds) of the federated-statement duration histogram.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
pub struct Metrics {
    pub connections_current: AtomicI64,
    pub connections_total: AtomicU64,
    pub connections_rejected: AtomicU64,
    pub statements_relayed: AtomicU64,
    pub statements_federated: AtomicU64,
    pub federated_errors: AtomicU64,
    federated_seconds_sum_us: AtomicU64,
    federated_buckets: [AtomicU64; BUCKETS.len()],
    /// Per tiered table: rows moved, passes, failed passes, watermark.
    tiers: Mutex<BTreeMap<String, TierFigures>>,
    /// The executor's memory pool, once there is one.
    pub executor_pool:
        Mutex<Option<std::sync::Arc<dyn datafusion::execution::memory_pool::MemoryPool>>>,
}

#[derive(Default, Clone, Copy)]
struct TierFigures {
    rows_moved: u64,
    files_written: u64,
    passes: u64,
    failures: u64,
    watermark_us: i64,
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);

impl Metrics {
    /// A federated statement ended after `took`.
    pub fn federated(&self, took: Duration, failed: bool) {
        self.statements_federated.fetch_add(1, Relaxed);
        if failed {
            self.federated_errors.fetch_add(1, Relaxed);
        }
        let secs = took.as_secs_f64();
        self.federated_seconds_sum_us
            .fetch_add(took.as_micros() as u64, Relaxed);
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.federated_buckets[i].fetch_add(1, Relaxed);
            }
        }
    }

    /// A pass of the mover over `table` ended.
    pub fn tier_pass(&self, table: &str, moved: Option<(u64, u64, i64)>) {
        let mut tiers = self.tiers.lock().unwrap_or_else(|e| e.into_inner());
        let t = tiers.entry(table.to_string()).or_default();
        t.passes += 1;
        match moved {
            Some((rows, files, watermark)) => {
                t.rows_moved += rows;
                t.files_written += files;
                t.watermark_us = t.watermark_us.max(watermark);
            }
            None => t.failures += 1,
        }
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
        metric(
            "thermocline_statements_total",
            "counter",
            "Statements (simple queries and Parse messages) by where they were answered.",
            &[
                (
                    "{route=\"relay\"}".into(),
                    self.statements_relayed.load(Relaxed).to_string(),
                ),
                (
                    "{route=\"federated\"}".into(),
                    self.statements_federated.load(Relaxed).to_string(),
                ),
            ],
        );
        metric(
            "thermocline_federated_errors_total",
            "counter",
            "Federated statements that ended with an error.",
            &one(self.federated_errors.load(Relaxed).to_string()),
        );
        let mut hist: Vec<(String, String)> = BUCKETS
            .iter()
            .zip(&self.federated_buckets)
            .map(|(le, n)| {
                (
                    format!("_bucket{{le=\"{le}\"}}"),
                    n.load(Relaxed).to_string(),
                )
            })
            .collect();
        let count = self.statements_federated.load(Relaxed);
        hist.push(("_bucket{le=\"+Inf\"}".into(), count.to_string()));
        hist.push((
            "_sum".into(),
            format!(
                "{}",
                self.federated_seconds_sum_us.load(Relaxed) as f64 / 1e6
            ),
        ));
        hist.push(("_count".into(), count.to_string()));
        metric(
            "thermocline_federated_duration_seconds",
            "histogram",
            "Time to answer a federated statement (an Execute, for prepared ones).",
            &hist,
        );
        if let Some(bytes) = executor_memory_in_use {
            metric(
                "thermocline_executor_memory_bytes",
                "gauge",
                "Memory the executor's pool has handed out now.",
                &one(bytes.to_string()),
            );
        }
        let tiers = self.tiers.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let per = |f: fn(&TierFigures) -> String| -> Vec<(String, String)> {
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
            &per(|t| t.rows_moved.to_string()),
        );
        metric(
            "thermocline_tier_files_written_total",
            "counter",
            "Parquet files the mover wrote.",
            &per(|t| t.files_written.to_string()),
        );
        metric(
            "thermocline_tier_passes_total",
            "counter",
            "Passes of the mover.",
            &per(|t| t.passes.to_string()),
        );
        metric(
            "thermocline_tier_failures_total",
            "counter",
            "Passes of the mover that failed.",
            &per(|t| t.failures.to_string()),
        );
        metric(
            "thermocline_tier_watermark_seconds",
            "gauge",
            "The watermark: rows older than this are in the lake (Unix time).",
            &per(|t| format!("{}", t.watermark_us as f64 / 1e6)),
        );
        out
    }
}
