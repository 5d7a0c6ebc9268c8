//! Intervals as Postgres writes them: months, days and microseconds, in
//! the text of each IntervalStyle and in the binary format.

use datafusion::arrow::array::{
    Array, DurationMicrosecondArray, DurationMillisecondArray, DurationNanosecondArray,
    DurationSecondArray, IntervalDayTimeArray, IntervalMonthDayNanoArray, IntervalYearMonthArray,
};

const USECS_PER_DAY: i64 = 86_400_000_000;
const USECS_PER_HOUR: i64 = 3_600_000_000;
const USECS_PER_MINUTE: i64 = 60_000_000;
const USECS_PER_SEC: i64 = 1_000_000;

/// The session's `IntervalStyle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IntervalStyle {
    #[default]
    Postgres,
    PostgresVerbose,
    SqlStandard,
    Iso8601,
}

impl IntervalStyle {
    /// The style a `IntervalStyle` setting names (Postgres's own spelling,
    /// as it reports it).
    pub fn from_setting(value: &str) -> Self {
        match value.trim().to_ascii_lowercase().as_str() {
            "postgres_verbose" => IntervalStyle::PostgresVerbose,
            "sql_standard" => IntervalStyle::SqlStandard,
            "iso_8601" => IntervalStyle::Iso8601,
            _ => IntervalStyle::Postgres,
        }
    }
}

/// An interval as Postgres holds it: (months, days, microseconds). A
/// duration (a difference of timestamps) is days and time, as Postgres's
/// timestamp subtraction gives it.
pub fn interval_value(array: &dyn Array, row: usize) -> Option<(i32, i32, i64)> {
    let any = array.as_any();
    let duration = |us: i64| {
        Some((
            0,
            i32::try_from(us / USECS_PER_DAY).ok()?,
            us % USECS_PER_DAY,
        ))
    };
    if let Some(a) = any.downcast_ref::<IntervalMonthDayNanoArray>() {
        let v = a.value(row);
        if v.nanoseconds % 1000 != 0 {
            return None;
        }
        return Some((v.months, v.days, v.nanoseconds / 1000));
    }
    if let Some(a) = any.downcast_ref::<IntervalDayTimeArray>() {
        let v = a.value(row);
        return Some((0, v.days, v.milliseconds as i64 * 1000));
    }
    if let Some(a) = any.downcast_ref::<IntervalYearMonthArray>() {
        return Some((a.value(row), 0, 0));
    }
    if let Some(a) = any.downcast_ref::<DurationMicrosecondArray>() {
        return duration(a.value(row));
    }
    if let Some(a) = any.downcast_ref::<DurationNanosecondArray>() {
        let ns = a.value(row);
        return if ns % 1000 == 0 {
            duration(ns / 1000)
        } else {
            None
        };
    }
    if let Some(a) = any.downcast_ref::<DurationMillisecondArray>() {
        return duration(a.value(row).checked_mul(1000)?);
    }
    if let Some(a) = any.downcast_ref::<DurationSecondArray>() {
        return duration(a.value(row).checked_mul(USECS_PER_SEC)?);
    }
    None
}

/// The fields Postgres prints: years, months, days, hours, minutes,
/// seconds and microseconds, each with the sign of its part.
/// (All in i64: the absolute value of any i32 fits.)
struct Fields {
    year: i64,
    mon: i64,
    mday: i64,
    hour: i64,
    min: i64,
    sec: i64,
    fsec: i64,
}

impl Fields {
    fn of(months: i32, days: i32, micros: i64) -> Self {
        let hour = micros / USECS_PER_HOUR;
        let rest = micros - hour * USECS_PER_HOUR;
        let min = rest / USECS_PER_MINUTE;
        let rest = rest - min * USECS_PER_MINUTE;
        let sec = rest / USECS_PER_SEC;
        Fields {
            year: i64::from(months / 12),
            mon: i64::from(months % 12),
            mday: i64::from(days),
            hour,
            min,
            sec,
            fsec: rest - sec * USECS_PER_SEC,
        }
    }

    fn time_is_zero(&self) -> bool {
        self.hour == 0 && self.min == 0 && self.sec == 0 && self.fsec == 0
    }

    fn time_is_negative(&self) -> bool {
        self.hour < 0 || self.min < 0 || self.sec < 0 || self.fsec < 0
    }
}

/// Seconds without sign, two digits when `pad`, then the fraction with
/// its trailing zeros left off.
fn seconds(out: &mut String, sec: i64, fsec: i64, pad: bool) {
    use std::fmt::Write;
    if pad {
        let _ = write!(out, "{:02}", sec.abs());
    } else {
        let _ = write!(out, "{}", sec.abs());
    }
    if fsec != 0 {
        let digits = format!("{:06}", fsec.abs());
        let _ = write!(out, ".{}", digits.trim_end_matches('0'));
    }
}

/// Writes an interval in Postgres's text format for `style`.
pub fn write_interval(
    out: &mut Vec<u8>,
    months: i32,
    days: i32,
    micros: i64,
    style: IntervalStyle,
) {
    use std::fmt::Write;
    let f = Fields::of(months, days, micros);
    let mut s = String::new();
    match style {
        IntervalStyle::Postgres => {
            let mut is_zero = true;
            let mut is_before = false;
            for (value, unit) in [(f.year, "year"), (f.mon, "mon"), (f.mday, "day")] {
                if value == 0 {
                    continue;
                }
                let _ = write!(
                    s,
                    "{}{}{value} {unit}{}",
                    if is_zero { "" } else { " " },
                    if is_before && value > 0 { "+" } else { "" },
                    if value != 1 { "s" } else { "" }
                );
                is_before = value < 0;
                is_zero = false;
            }
            if is_zero || !f.time_is_zero() {
                let sign = if f.time_is_negative() {
                    "-"
                } else if is_before {
                    "+"
                } else {
                    ""
                };
                let _ = write!(
                    s,
                    "{}{sign}{:02}:{:02}:",
                    if is_zero { "" } else { " " },
                    f.hour.abs(),
                    f.min.abs()
                );
                seconds(&mut s, f.sec, f.fsec, true);
            }
        }
        IntervalStyle::PostgresVerbose => {
            let mut is_zero = true;
            let mut is_before = false;
            s.push('@');
            for (value, unit) in [
                (f.year, "year"),
                (f.mon, "mon"),
                (f.mday, "day"),
                (f.hour, "hour"),
                (f.min, "min"),
            ] {
                if value == 0 {
                    continue;
                }
                let mut value = value;
                if is_zero {
                    is_before = value < 0;
                    value = value.abs();
                } else if is_before {
                    value = -value;
                }
                let _ = write!(s, " {value} {unit}{}", if value == 1 { "" } else { "s" });
                is_zero = false;
            }
            if f.sec != 0 || f.fsec != 0 {
                s.push(' ');
                if f.sec < 0 || (f.sec == 0 && f.fsec < 0) {
                    if is_zero {
                        is_before = true;
                    } else if !is_before {
                        s.push('-');
                    }
                } else if is_before {
                    s.push('-');
                }
                seconds(&mut s, f.sec, f.fsec, false);
                let _ = write!(
                    s,
                    " sec{}",
                    if f.sec.abs() != 1 || f.fsec != 0 {
                        "s"
                    } else {
                        ""
                    }
                );
                is_zero = false;
            }
            if is_zero {
                s.push_str(" 0");
            }
            if is_before {
                s.push_str(" ago");
            }
        }
        IntervalStyle::SqlStandard => {
            let parts = [f.year, f.mon, f.mday, f.hour, f.min, f.sec, f.fsec];
            let has_negative = parts.iter().any(|v| *v < 0);
            let has_positive = parts.iter().any(|v| *v > 0);
            let has_year_month = f.year != 0 || f.mon != 0;
            let has_day_time = f.mday != 0 || !f.time_is_zero();
            let standard = !(has_negative && has_positive) && !(has_year_month && has_day_time);
            if !has_negative && !has_positive {
                s.push('0');
            } else if !standard {
                let year_sign = if f.year < 0 || f.mon < 0 { '-' } else { '+' };
                let day_sign = if f.mday < 0 { '-' } else { '+' };
                let sec_sign = if f.time_is_negative() { '-' } else { '+' };
                let _ = write!(
                    s,
                    "{year_sign}{}-{} {day_sign}{} {sec_sign}{}:{:02}:",
                    f.year.abs(),
                    f.mon.abs(),
                    f.mday.abs(),
                    f.hour.abs(),
                    f.min.abs()
                );
                seconds(&mut s, f.sec, f.fsec, true);
            } else {
                // One sign for the whole value, in front.
                if has_negative {
                    s.push('-');
                }
                if has_year_month {
                    let _ = write!(s, "{}-{}", f.year.abs(), f.mon.abs());
                } else if f.mday != 0 {
                    let _ = write!(s, "{} {}:{:02}:", f.mday.abs(), f.hour.abs(), f.min.abs());
                    seconds(&mut s, f.sec, f.fsec, true);
                } else {
                    let _ = write!(s, "{}:{:02}:", f.hour.abs(), f.min.abs());
                    seconds(&mut s, f.sec, f.fsec, true);
                }
            }
        }
        IntervalStyle::Iso8601 => {
            if f.year == 0 && f.mon == 0 && f.mday == 0 && f.time_is_zero() {
                s.push_str("PT0S");
            } else {
                s.push('P');
                let part = |s: &mut String, v: i64, unit: char| {
                    if v != 0 {
                        let _ = write!(s, "{v}{unit}");
                    }
                };
                part(&mut s, f.year, 'Y');
                part(&mut s, f.mon, 'M');
                part(&mut s, f.mday, 'D');
                if !f.time_is_zero() {
                    s.push('T');
                }
                part(&mut s, f.hour, 'H');
                part(&mut s, f.min, 'M');
                if f.sec != 0 || f.fsec != 0 {
                    if f.sec < 0 || f.fsec < 0 {
                        s.push('-');
                    }
                    seconds(&mut s, f.sec, f.fsec, false);
                    s.push('S');
                }
            }
        }
    }
    out.extend_from_slice(s.as_bytes());
}
