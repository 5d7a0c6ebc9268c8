//! The calendar of a view whose buckets have no time zone to them: its
//! time column is a `timestamp`, or the view is computed in UTC. There
//! `date_trunc` and a step of its unit are worked out here as Postgres
//! works them out, and a refresh need not ask Postgres where its buckets
//! begin and end.

use chrono::{DateTime, Datelike, Months, NaiveDate, NaiveDateTime};

use crate::pgtypes::PgType;

/// Names of UTC.
const UTC: [&str; 10] = [
    "UTC",
    "Etc/UTC",
    "UCT",
    "Etc/UCT",
    "GMT",
    "Etc/GMT",
    "Universal",
    "Etc/Universal",
    "Zulu",
    "Etc/Zulu",
];

/// Whether the calendar of a time column of type `ty`, in a view computed
/// in time zone `zone`, is worked out here.
pub(super) fn applies(ty: PgType, zone: &str) -> bool {
    ty == PgType::Timestamp || UTC.iter().any(|z| z.eq_ignore_ascii_case(zone))
}

const SECOND: i64 = 1_000_000;

/// `date_trunc(unit, t)`, times in microseconds since 1970; `None` for a
/// unit not worked out here, or a time outside years 1 to 9999.
pub(super) fn trunc(unit: &str, us: i64) -> Option<i64> {
    let to = |of: i64| Some(us.div_euclid(of) * of);
    let date = naive(us)?.date();
    let (year, month) = (date.year(), date.month());
    let start = match unit {
        "microseconds" => return Some(us),
        "milliseconds" => return to(1_000),
        "second" => return to(SECOND),
        "minute" => return to(60 * SECOND),
        "hour" => return to(3_600 * SECOND),
        "day" => return to(86_400 * SECOND),
        "week" => date - chrono::Days::new(u64::from(date.weekday().num_days_from_monday())),
        "month" => NaiveDate::from_ymd_opt(year, month, 1)?,
        "quarter" => NaiveDate::from_ymd_opt(year, (month - 1) / 3 * 3 + 1, 1)?,
        "year" => NaiveDate::from_ymd_opt(year, 1, 1)?,
        // Postgres's decades start at years divisible by ten, its
        // centuries and millennia at years one past.
        "decade" => NaiveDate::from_ymd_opt(year / 10 * 10, 1, 1)?,
        "century" => NaiveDate::from_ymd_opt((year + 99) / 100 * 100 - 99, 1, 1)?,
        "millennium" => NaiveDate::from_ymd_opt((year + 999) / 1000 * 1000 - 999, 1, 1)?,
        _ => return None,
    };
    micros(start.and_hms_opt(0, 0, 0)?)
}

/// `t + '1 unit'::interval` (a quarter is three months).
pub(super) fn step(unit: &str, us: i64) -> Option<i64> {
    let months = |n: u32| micros(naive(us)?.checked_add_months(Months::new(n))?);
    match unit {
        "microseconds" => us.checked_add(1),
        "milliseconds" => us.checked_add(1_000),
        "second" => us.checked_add(SECOND),
        "minute" => us.checked_add(60 * SECOND),
        "hour" => us.checked_add(3_600 * SECOND),
        "day" => us.checked_add(86_400 * SECOND),
        "week" => us.checked_add(7 * 86_400 * SECOND),
        "month" => months(1),
        "quarter" => months(3),
        "year" => months(12),
        "decade" => months(120),
        "century" => months(1_200),
        "millennium" => months(12_000),
        _ => None,
    }
    .filter(|t| naive(*t).is_some())
}

/// The text of a time, as a literal of a timestamp with time zone (in
/// UTC) when `zoned`, or without.
pub(super) fn text(us: i64, zoned: bool) -> Option<String> {
    let t = naive(us)?;
    let offset = if zoned { "+00" } else { "" };
    Some(format!("{}{offset}", t.format("%Y-%m-%d %H:%M:%S%.6f")))
}

/// A time within years 1 to 9999.
fn naive(us: i64) -> Option<NaiveDateTime> {
    let t = DateTime::from_timestamp_micros(us)?.naive_utc();
    (1..=9999).contains(&t.year()).then_some(t)
}

fn micros(t: NaiveDateTime) -> Option<i64> {
    let us = t.and_utc().timestamp_micros();
    naive(us).map(|_| us)
}
