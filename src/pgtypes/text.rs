//! Arrow values in Postgres's text output format, shaped by the session's
//! settings (TimeZone, DateStyle, IntervalStyle, extra_float_digits), as
//! `*out` functions print them.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Offset, TimeZone, Timelike, Utc};
use chrono_tz::OffsetName;
use datafusion::arrow::array::{
    Array, BinaryArray, BooleanArray, Date32Array, Decimal128Array, FixedSizeBinaryArray,
    Float32Array, Float64Array, ListArray,
};

use super::{EncodeError, int_value, oid, str_value, timestamp_micros};

/// The session settings that shape Postgres's text output.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TextSettings {
    /// `TimeZone`, resolved.
    pub time_zone: chrono_tz::Tz,
    /// `extra_float_digits` > 0: shortest exact floats (Postgres 12+ default).
    pub extra_float_digits: i32,
    /// `IntervalStyle`.
    pub interval_style: super::IntervalStyle,
    /// `DateStyle`.
    pub date_style: DateStyle,
}

/// The session's `DateStyle`: how dates and times are written, and, for
/// the SQL and Postgres styles, whether the day comes before the month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DateStyle {
    pub style: DateOutput,
    pub day_first: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DateOutput {
    /// `2026-12-06 13:24:00+00`
    #[default]
    Iso,
    /// `12/06/2026 13:24:00 UTC`
    Sql,
    /// `Sun Dec 06 13:24:00 2026 UTC`
    Postgres,
    /// `06.12.2026 13:24:00 UTC`
    German,
}

impl DateStyle {
    /// The style a `DateStyle` setting names, as Postgres reports it
    /// (`ISO, MDY`, `SQL, DMY`, `Postgres, YMD`, `German, DMY`).
    pub fn from_setting(setting: &str) -> Self {
        let mut parts = setting.split(',').map(|p| p.trim().to_ascii_lowercase());
        let style = match parts.next().as_deref() {
            Some("sql") => DateOutput::Sql,
            Some("postgres") => DateOutput::Postgres,
            Some("german") => DateOutput::German,
            _ => DateOutput::Iso,
        };
        DateStyle {
            style,
            day_first: parts.next().as_deref() == Some("dmy"),
        }
    }
}

impl Default for TextSettings {
    fn default() -> Self {
        Self {
            time_zone: chrono_tz::UTC,
            extra_float_digits: 1,
            interval_style: super::IntervalStyle::Postgres,
            date_style: DateStyle::default(),
        }
    }
}

/// Writes the value at `row` of `array` in Postgres's text format for the
/// type `pg_type`, or returns `false` for NULL.
pub fn write_text(
    out: &mut Vec<u8>,
    array: &dyn Array,
    row: usize,
    pg_type: u32,
    settings: &TextSettings,
) -> Result<bool, EncodeError> {
    use std::io::Write;
    // An untyped NULL (`SELECT NULL`) has no null buffer: every row is NULL.
    if array.is_null(row) || array.data_type().is_null() {
        return Ok(false);
    }
    let mismatch = || EncodeError::Mismatch {
        arrow: array.data_type().to_string(),
        pg_type,
    };
    let any = array.as_any();
    match pg_type {
        oid::INT2 | oid::INT4 | oid::INT8 | oid::OID => {
            let v = int_value(array, row).ok_or_else(mismatch)?;
            let _ = write!(out, "{v}");
            Ok(true)
        }
        oid::NUMERIC => {
            if let Some(v) = int_value(array, row) {
                let _ = write!(out, "{v}");
                return Ok(true);
            }
            if let Some(a) = any.downcast_ref::<Decimal128Array>() {
                write_decimal(out, a.value(row), a.scale());
                return Ok(true);
            }
            // A value computed as Postgres's numeric text (an average).
            let v = str_value(array, row).ok_or_else(mismatch)?;
            out.extend_from_slice(v.as_bytes());
            Ok(true)
        }
        oid::FLOAT8 => {
            if let Some(a) = any.downcast_ref::<Float64Array>() {
                write_float(out, a.value(row), 15, settings);
                return Ok(true);
            }
            if let Some(a) = any.downcast_ref::<Float32Array>() {
                write_float(out, a.value(row) as f64, 15, settings);
                return Ok(true);
            }
            Err(mismatch())
        }
        oid::FLOAT4 => {
            if let Some(a) = any.downcast_ref::<Float32Array>() {
                write_float4(out, a.value(row), settings);
                return Ok(true);
            }
            Err(mismatch())
        }
        oid::BOOL => {
            let a = any.downcast_ref::<BooleanArray>().ok_or_else(mismatch)?;
            out.push(if a.value(row) { b't' } else { b'f' });
            Ok(true)
        }
        oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME | oid::JSON | oid::JSONB => {
            let v = str_value(array, row).ok_or_else(mismatch)?;
            out.extend_from_slice(v.as_bytes());
            Ok(true)
        }
        oid::BYTEA => {
            let a = any.downcast_ref::<BinaryArray>().ok_or_else(mismatch)?;
            out.extend_from_slice(b"\\x");
            for byte in a.value(row) {
                let _ = write!(out, "{byte:02x}");
            }
            Ok(true)
        }
        oid::UUID => {
            let a = any
                .downcast_ref::<FixedSizeBinaryArray>()
                .ok_or_else(mismatch)?;
            let v = a.value(row);
            for (i, byte) in v.iter().enumerate() {
                if matches!(i, 4 | 6 | 8 | 10) {
                    out.push(b'-');
                }
                let _ = write!(out, "{byte:02x}");
            }
            Ok(true)
        }
        oid::DATE => {
            let a = any.downcast_ref::<Date32Array>().ok_or_else(mismatch)?;
            let d = NaiveDate::from_num_days_from_ce_opt(a.value(row) + 719_163)
                .ok_or(EncodeError::OutOfRange("date"))?;
            write_date(out, d, settings.date_style);
            Ok(true)
        }
        oid::TIME => {
            let us = super::time_micros(array, row).ok_or_else(mismatch)?;
            let secs = us.div_euclid(1_000_000);
            let _ = write!(
                out,
                "{:02}:{:02}:{:02}",
                secs / 3600,
                secs / 60 % 60,
                secs % 60
            );
            write_fraction(out, us.rem_euclid(1_000_000) as u32);
            Ok(true)
        }
        oid::TIMESTAMP | oid::TIMESTAMPTZ => {
            let us = timestamp_micros(array, row).ok_or_else(mismatch)?;
            let utc = DateTime::<Utc>::from_timestamp_micros(us)
                .ok_or(EncodeError::OutOfRange("timestamp"))?;
            if pg_type == oid::TIMESTAMP {
                write_datetime(out, utc.naive_utc(), settings.date_style, None);
            } else {
                let local = settings.time_zone.from_utc_datetime(&utc.naive_utc());
                let offset = local.offset().fix().local_minus_utc();
                // Only the styles other than ISO show the abbreviation.
                let abbreviation = match settings.date_style.style {
                    DateOutput::Iso => None,
                    _ => local.offset().abbreviation(),
                };
                let zone = (offset, abbreviation);
                write_datetime(out, local.naive_local(), settings.date_style, Some(zone));
            }
            Ok(true)
        }
        oid::INTERVAL => {
            let (months, days, micros) = super::interval_value(array, row).ok_or_else(mismatch)?;
            super::write_interval(out, months, days, micros, settings.interval_style);
            Ok(true)
        }
        // An array of a type above; else a type known only to Postgres
        // holding a string here: an enum, written as its label.
        _ => {
            if let Some(element) = super::array_element(pg_type) {
                let list = any.downcast_ref::<ListArray>().ok_or_else(mismatch)?;
                write_array(out, list.value(row).as_ref(), element, settings)?;
                return Ok(true);
            }
            let v = str_value(array, row).ok_or_else(mismatch)?;
            out.extend_from_slice(v.as_bytes());
            Ok(true)
        }
    }
}

/// Writes a one-dimensional array as `array_out` does: `{a,b,NULL}`,
/// quoting an element that is empty, reads as NULL, or holds a brace, a
/// comma, a quote, a backslash or white space.
fn write_array(
    out: &mut Vec<u8>,
    values: &dyn Array,
    element: u32,
    settings: &TextSettings,
) -> Result<(), EncodeError> {
    out.push(b'{');
    let mut item = Vec::new();
    for i in 0..values.len() {
        if i > 0 {
            out.push(b',');
        }
        item.clear();
        if !write_text(&mut item, values, i, element, settings)? {
            out.extend_from_slice(b"NULL");
            continue;
        }
        let quote = item.is_empty()
            || item.eq_ignore_ascii_case(b"NULL")
            || item.iter().any(|b| {
                matches!(
                    b,
                    b'"' | b'\\' | b'{' | b'}' | b',' | b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c
                )
            });
        if !quote {
            out.extend_from_slice(&item);
            continue;
        }
        out.push(b'"');
        for &b in &item {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    }
    out.push(b'}');
    Ok(())
}

/// A year as Postgres writes it: at least four digits, a year before 1
/// counted back from 1 BC.
fn year_of(d: NaiveDate) -> (i32, bool) {
    if d.year() <= 0 {
        (1 - d.year(), true)
    } else {
        (d.year(), false)
    }
}

fn write_date(out: &mut Vec<u8>, d: NaiveDate, ds: DateStyle) {
    write_day(out, d, ds);
    if year_of(d).1 {
        out.extend_from_slice(b" BC");
    }
}

/// A date in the DateStyle, without its era.
fn write_day(out: &mut Vec<u8>, d: NaiveDate, ds: DateStyle) {
    use std::io::Write;
    let year = year_of(d).0;
    let (month, day) = (d.month(), d.day());
    let _ = match ds.style {
        DateOutput::Iso => write!(out, "{year:04}-{month:02}-{day:02}"),
        DateOutput::Sql if ds.day_first => write!(out, "{day:02}/{month:02}/{year:04}"),
        DateOutput::Sql => write!(out, "{month:02}/{day:02}/{year:04}"),
        DateOutput::Postgres if ds.day_first => write!(out, "{day:02}-{month:02}-{year:04}"),
        DateOutput::Postgres => write!(out, "{month:02}-{day:02}-{year:04}"),
        DateOutput::German => write!(out, "{day:02}.{month:02}.{year:04}"),
    };
}

/// A timestamp in the session's DateStyle; with `zone` (its offset from
/// UTC in seconds and the zone's abbreviation then), a timestamptz.
fn write_datetime(
    out: &mut Vec<u8>,
    t: NaiveDateTime,
    ds: DateStyle,
    zone: Option<(i32, Option<&str>)>,
) {
    use std::io::Write;
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let d = t.date();
    let (year, bc) = year_of(d);
    let clock = |out: &mut Vec<u8>| {
        let _ = write!(out, "{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second());
        write_fraction(out, t.nanosecond() / 1000);
    };
    match ds.style {
        DateOutput::Postgres => {
            let (day, month) = (d.day(), MONTHS[d.month0() as usize]);
            let _ = write!(
                out,
                "{} ",
                DAYS[d.weekday().num_days_from_monday() as usize]
            );
            let _ = if ds.day_first {
                write!(out, "{day:02} {month} ")
            } else {
                write!(out, "{month} {day:02} ")
            };
            clock(out);
            let _ = write!(out, " {year:04}");
        }
        _ => {
            write_day(out, d, ds);
            out.push(b' ');
            clock(out);
        }
    }
    if let Some((offset, abbreviation)) = zone {
        let sign = if offset < 0 { '-' } else { '+' };
        let o = offset.abs();
        match (ds.style, abbreviation) {
            (DateOutput::Iso, _) => {
                let _ = write!(out, "{sign}{:02}", o / 3600);
                if o % 3600 != 0 {
                    let _ = write!(out, ":{:02}", o / 60 % 60);
                    if o % 60 != 0 {
                        let _ = write!(out, ":{:02}", o % 60);
                    }
                }
            }
            (_, Some(name)) => {
                let _ = write!(out, " {name}");
            }
            // A zone whose abbreviation is its offset (`+1030`, `-03`),
            // as the time zone database writes it.
            (_, None) => {
                let _ = write!(out, " {sign}{:02}", o / 3600);
                if o % 3600 != 0 {
                    let _ = write!(out, "{:02}", o / 60 % 60);
                }
            }
        }
    }
    if bc {
        out.extend_from_slice(b" BC");
    }
}

/// `.ffffff` with trailing zeros dropped, nothing for whole seconds.
fn write_fraction(out: &mut Vec<u8>, micros: u32) {
    use std::io::Write;
    if micros == 0 {
        return;
    }
    let mut digits = format!("{micros:06}");
    while digits.ends_with('0') {
        digits.pop();
    }
    let _ = write!(out, ".{digits}");
}

/// A decimal integer scaled by 10^scale, with exactly `scale` fraction
/// digits, as Postgres prints numeric.
pub fn write_decimal(out: &mut Vec<u8>, value: i128, scale: i8) {
    use std::io::Write;
    if scale <= 0 {
        let _ = write!(out, "{value}");
        for _ in 0..(-scale) {
            out.push(b'0');
        }
        return;
    }
    let scale = scale as usize;
    let digits = value.unsigned_abs().to_string();
    if value < 0 {
        out.push(b'-');
    }
    if digits.len() <= scale {
        out.push(b'0');
        out.push(b'.');
        out.extend(std::iter::repeat_n(b'0', scale - digits.len()));
        out.extend_from_slice(digits.as_bytes());
    } else {
        let (int, frac) = digits.split_at(digits.len() - scale);
        out.extend_from_slice(int.as_bytes());
        out.push(b'.');
        out.extend_from_slice(frac.as_bytes());
    }
}

/// float8 as Postgres prints it with `extra_float_digits` > 0: the shortest
/// digits that read back exactly, in fixed notation for decimal exponents
/// from -4 to `fixed_limit` - 1, otherwise as `d.ddde±XX`.
fn write_float(out: &mut Vec<u8>, v: f64, fixed_limit: i32, settings: &TextSettings) {
    let _ = settings;
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
        return;
    }
    if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"Infinity" } else { b"-Infinity" });
        return;
    }
    if v == 0.0 {
        out.extend_from_slice(if v.is_sign_negative() { b"-0" } else { b"0" });
        return;
    }
    // Rust's `{:e}` is the shortest round-trip form: "d.ddde-5".
    shortest_to_pg(out, &format!("{v:e}"), fixed_limit);
}

fn write_float4(out: &mut Vec<u8>, v: f32, settings: &TextSettings) {
    if v.is_nan() || v.is_infinite() || v == 0.0 {
        return write_float(out, v as f64, 6, settings);
    }
    shortest_to_pg(out, &format!("{v:e}"), 6);
}

fn shortest_to_pg(out: &mut Vec<u8>, sci: &str, fixed_limit: i32) {
    use std::io::Write;
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if neg {
        out.push(b'-');
    }
    if (-4..fixed_limit).contains(&exp) {
        let n = digits.len() as i32;
        if exp < 0 {
            out.extend_from_slice(b"0.");
            out.extend(std::iter::repeat_n(b'0', (-exp - 1) as usize));
            out.extend_from_slice(digits.as_bytes());
        } else if exp + 1 >= n {
            out.extend_from_slice(digits.as_bytes());
            out.extend(std::iter::repeat_n(b'0', (exp + 1 - n) as usize));
        } else {
            let (int, frac) = digits.split_at((exp + 1) as usize);
            let _ = write!(out, "{int}.{frac}");
        }
    } else {
        let (first, rest) = digits.split_at(1);
        out.extend_from_slice(first.as_bytes());
        if !rest.is_empty() {
            let _ = write!(out, ".{rest}");
        }
        let sign = if exp < 0 { '-' } else { '+' };
        let _ = write!(out, "e{sign}{:02}", exp.abs());
    }
}

/// The zone name the executor gives timestamptz values: a fixed `+00:00`
/// for the zones that are UTC (Arrow's fixed offsets are much cheaper to
/// bucket by than named zones), the zone's own name otherwise.
pub fn executor_zone(tz: chrono_tz::Tz) -> &'static str {
    let utc = matches!(
        tz,
        chrono_tz::UTC
            | chrono_tz::Etc::UTC
            | chrono_tz::Etc::UCT
            | chrono_tz::Etc::Universal
            | chrono_tz::Etc::Zulu
            | chrono_tz::Etc::GMT
            | chrono_tz::GMT
            | chrono_tz::Etc::Greenwich
    );
    if utc { "+00:00" } else { tz.name() }
}

/// Resolves a Postgres `TimeZone` setting to a zone, where it names one
/// the IANA database knows (`UTC`, `Europe/Berlin`, `Etc/GMT+5`).
pub fn resolve_time_zone(name: &str) -> Option<chrono_tz::Tz> {
    let name = name.trim();
    if name.eq_ignore_ascii_case("utc") || name.eq_ignore_ascii_case("gmt") || name == "Z" {
        return Some(chrono_tz::UTC);
    }
    name.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float_text(v: f64) -> String {
        let mut out = Vec::new();
        write_float(&mut out, v, 15, &TextSettings::default());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn floats_print_like_postgres() {
        // Expected strings are Postgres 15's float8out with extra_float_digits = 1.
        for (v, want) in [
            (1.5, "1.5"),
            (100.0, "100"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e20, "1e+20"),
            (1.5e-5, "1.5e-05"),
            (0.0001, "0.0001"),
            (123456789012345.0, "123456789012345"),
            (1234567890123456.0, "1.234567890123456e+15"),
            (-2.25, "-2.25"),
        ] {
            assert_eq!(float_text(v), want, "{v}");
        }
    }

    #[test]
    fn decimals_keep_their_scale() {
        let text = |v, s| {
            let mut out = Vec::new();
            write_decimal(&mut out, v, s);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(text(12345, 2), "123.45");
        assert_eq!(text(-5, 2), "-0.05");
        assert_eq!(text(0, 2), "0.00");
        assert_eq!(text(7, 0), "7");
    }
}
