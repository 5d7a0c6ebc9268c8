//! Backfill: adopting a table that already holds years of rows.
//!
//! A plain pass would move the whole history in one Postgres transaction.
//! A backfill moves it in slices instead: the watermark is raised from the
//! oldest rows towards the hot window one step at a time, each step a
//! complete pass of the mover (its own transaction and Iceberg snapshot).
//! Every slice keeps the boundary contract, so reads stay exact while a
//! backfill runs, and a backfill stopped at any point resumes from the
//! lake's watermark: the slices already committed are skipped.

use std::time::{Duration, Instant};

use super::mover::{MoveReport, run_until, time_literal, window_start};
use super::{TieredTable, TieringError};
use crate::backend::target::BackendTarget;
use crate::catalog::quote_ident;
use crate::lake::{Lake, watermark};
use crate::pgtypes::PgType;

/// Slices a backfill may be cut into.
const MAX_SLICES: usize = 100_000;

/// What to backfill.
#[derive(Debug, Clone)]
pub struct BackfillOptions {
    /// Where slicing starts, as Postgres reads a value of the time column;
    /// the oldest row's time when `None`. The first slice also takes every
    /// row older than this.
    pub from: Option<String>,
    /// The last watermark; the start of the hot window when `None`, and
    /// never past it.
    pub to: Option<String>,
    /// The width of a slice, as a Postgres interval.
    pub step: String,
}

/// Where a backfill stands, after each slice.
#[derive(Debug, Clone)]
pub struct Progress {
    pub table: String,
    /// Rows moved so far by this run.
    pub rows: u64,
    /// Rows older than the last watermark in Postgres when the run began.
    pub total: u64,
    pub slices_done: usize,
    pub slices: usize,
    /// The watermark now in force, as a literal of the time column's type.
    pub watermark: String,
    pub elapsed: Duration,
}

impl Progress {
    pub fn rows_per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.rows as f64 / secs
        } else {
            0.0
        }
    }

    /// Seconds left at the rate so far, once there is one.
    pub fn eta_seconds(&self) -> Option<f64> {
        let rate = self.rows_per_second();
        (rate > 0.0).then(|| self.total.saturating_sub(self.rows) as f64 / rate)
    }
}

/// What a backfill did.
#[derive(Debug, Clone)]
pub struct BackfillReport {
    pub rows: u64,
    pub slices_run: usize,
    /// Slices skipped because an earlier run had committed them.
    pub slices_skipped: usize,
    pub watermark: Option<String>,
}

/// Microseconds since 1970 (whole seconds), as the mover keeps watermarks,
/// of the time value `c` (SQL).
fn micros(c: &str) -> String {
    format!("(floor(extract(epoch FROM {c}))::int8 * 1000000)")
}

/// An option's error: Postgres's message about the value given.
fn invalid(what: &str, e: tokio_postgres::Error) -> TieringError {
    TieringError::Data(format!(
        "{what}: {}",
        e.as_db_error()
            .map_or(e.to_string(), |d| d.message().to_string())
    ))
}

/// The value given for option `what`, read by Postgres as a `cast`.
async fn time_of(
    client: &tokio_postgres::Client,
    cast: &str,
    what: &str,
    value: &str,
) -> Result<i64, TieringError> {
    Ok(client
        .query_one(
            &format!("SELECT {}", micros(&format!("$1::text::{cast}"))),
            &[&value],
        )
        .await
        .map_err(|e| invalid(what, e))?
        .get(0))
}

/// Moves `t`'s rows older than `options.to` to the lake, a slice at a
/// time, calling `progress` after each slice.
pub async fn backfill(
    target: &BackendTarget,
    lake: &Lake,
    t: &TieredTable,
    database: &str,
    options: &BackfillOptions,
    mut progress: impl FnMut(&Progress),
) -> Result<BackfillReport, TieringError> {
    let client = super::service_connection(target, database).await?;
    let time = t.time_column();
    let column = quote_ident(&time.name);
    // The time column's type; and how slice ends are generated: as
    // timestamps (with time zone for that type), dates truncated.
    let (cast, series_type, end) = match time.pg_type {
        PgType::Date => ("date", PgType::Timestamp, "g::date"),
        PgType::Timestamp => ("timestamp", PgType::Timestamp, "g"),
        _ => ("timestamptz", PgType::Timestamptz, "g"),
    };
    let table_name = t.def.qualified();
    let window = window_start(&client, t).await?;
    let to = match &options.to {
        Some(v) => time_of(&client, cast, "--to", v).await?.min(window),
        None => window,
    };
    let from: Option<i64> = match &options.from {
        Some(v) => Some(time_of(&client, cast, "--from", v).await?),
        None => client
            .query_one(
                &format!(
                    "SELECT {} FROM (SELECT min({column}) AS t FROM {table_name}) m",
                    micros("m.t")
                ),
                &[],
            )
            .await?
            .get(0),
    };
    let lake_table = lake.ensure_table(t).await?;
    let previous = watermark(&lake_table);
    let Some(from) = from else {
        return Ok(BackfillReport {
            rows: 0,
            slices_run: 0,
            slices_skipped: 0,
            watermark: previous.map(|w| time_literal(time.pg_type, w)),
        });
    };

    // The slices' upper ends: from + step, from + 2 step, … up to `to`,
    // computed by Postgres (months and days as its calendar has them).
    let series = format!(
        "SELECT {} FROM generate_series({}, {}, $1::text::interval) g LIMIT {}",
        micros(end),
        time_literal(series_type, from),
        time_literal(series_type, to),
        MAX_SLICES + 2,
    );
    let rows = client
        .query(&series, &[&options.step])
        .await
        .map_err(|e| invalid("--step", e))?;
    let mut ends: Vec<i64> = rows
        .iter()
        .map(|r| r.get(0))
        .filter(|&e| e > from && e < to)
        .collect();
    if ends.len() > MAX_SLICES {
        return Err(TieringError::Data(format!(
            "--step {:?} cuts the history into more than {MAX_SLICES} slices; take a wider step",
            options.step
        )));
    }
    ends.dedup();
    ends.push(to);
    let slices = ends.len();
    let skipped = ends
        .iter()
        .filter(|&&e| previous.is_some_and(|p| e <= p))
        .count();

    let total: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM {table_name} WHERE {column} < {}",
                time_literal(time.pg_type, to)
            ),
            &[],
        )
        .await?
        .get(0);
    drop(client);

    let started = Instant::now();
    let mut moved = 0u64;
    let mut last: Option<MoveReport> = None;
    for (i, &end) in ends.iter().enumerate().skip(skipped) {
        let report = run_until(target, lake, t, database, false, Some(end))
            .await?
            .ok_or_else(|| {
                TieringError::Data(format!(
                    "{table_name}: another mover holds the table; the backfill stopped after {i} of {slices} slices and resumes where it stopped when run again"
                ))
            })?;
        moved += report.rows_deleted;
        progress(&Progress {
            table: table_name.clone(),
            rows: moved,
            total: total.max(0) as u64,
            slices_done: i + 1,
            slices,
            watermark: time_literal(time.pg_type, report.watermark),
            elapsed: started.elapsed(),
        });
        last = Some(report);
    }
    Ok(BackfillReport {
        rows: moved,
        slices_run: slices - skipped,
        slices_skipped: skipped,
        watermark: last
            .map(|r| r.watermark)
            .or(previous)
            .map(|w| time_literal(time.pg_type, w)),
    })
}
