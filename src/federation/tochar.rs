//! `to_char(timestamp | timestamptz | date, format)` as Postgres writes it.
//!
//! Registered in place of DataFusion's `to_char`, whose format strings are
//! chrono's. The format is Postgres's template (`YYYY-MM`, `FMMonth`,
//! `"Q"Q`, `DDth`, …), read once per statement; a timestamptz is written
//! in the session's time zone. What Postgres would write in a locale
//! (`TM`) is written as in the C locale, as Postgres does there. Patterns
//! this module does not write (time zone names and offsets, `SP`, `FX`, a
//! backslash) and years before 1 are refused with 0A000 rather than
//! answered differently; so is `to_char` of anything but these three
//! types.

use std::any::Any;
use std::sync::Arc;

use chrono::{DateTime, Datelike, NaiveDateTime, Timelike};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use datafusion::common::{Result, ScalarValue, exec_err, not_impl_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// One piece of a template.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Field {
        field: Field,
        /// `FM`: no padding.
        fill: bool,
        /// `TH` (upper) or `th` (lower): an ordinal suffix.
        ordinal: Option<bool>,
    },
}

/// The case a name is written in.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Case {
    Upper,
    Title,
    Lower,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Field {
    Hour12,
    Hour24,
    Minute,
    Second,
    Millis,
    Micros,
    Fraction(u32),
    SecondsOfDay,
    Meridiem { upper: bool, dots: bool },
    YearComma,
    Year(u32),
    IsoYear(u32),
    Era { upper: bool, dots: bool },
    MonthName(Case),
    MonthAbbrev(Case),
    Month,
    DayName(Case),
    DayAbbrev(Case),
    DayOfYear,
    IsoDayOfYear,
    Day,
    DayOfWeek,
    IsoDayOfWeek,
    WeekOfMonth,
    WeekOfYear,
    IsoWeek,
    Century,
    Julian,
    Quarter,
    Roman(bool),
}

impl Field {
    fn numeric(self) -> bool {
        !matches!(
            self,
            Field::Meridiem { .. }
                | Field::Era { .. }
                | Field::MonthName(_)
                | Field::MonthAbbrev(_)
                | Field::DayName(_)
                | Field::DayAbbrev(_)
                | Field::Roman(_)
        )
    }
}

/// Postgres's keywords, longest first where one begins another. Names
/// (of months, days, eras, halves of the day) are written in the case
/// they are given in; the numbers below them are taken in capitals or in
/// lower case alike.
const KEYWORDS: &[(&str, Field)] = &[
    (
        "A.D.",
        Field::Era {
            upper: true,
            dots: true,
        },
    ),
    (
        "A.M.",
        Field::Meridiem {
            upper: true,
            dots: true,
        },
    ),
    (
        "AD",
        Field::Era {
            upper: true,
            dots: false,
        },
    ),
    (
        "AM",
        Field::Meridiem {
            upper: true,
            dots: false,
        },
    ),
    (
        "B.C.",
        Field::Era {
            upper: true,
            dots: true,
        },
    ),
    (
        "BC",
        Field::Era {
            upper: true,
            dots: false,
        },
    ),
    ("DAY", Field::DayName(Case::Upper)),
    ("DY", Field::DayAbbrev(Case::Upper)),
    ("Day", Field::DayName(Case::Title)),
    ("Dy", Field::DayAbbrev(Case::Title)),
    ("MONTH", Field::MonthName(Case::Upper)),
    ("MON", Field::MonthAbbrev(Case::Upper)),
    ("Month", Field::MonthName(Case::Title)),
    ("Mon", Field::MonthAbbrev(Case::Title)),
    (
        "P.M.",
        Field::Meridiem {
            upper: true,
            dots: true,
        },
    ),
    (
        "PM",
        Field::Meridiem {
            upper: true,
            dots: false,
        },
    ),
    ("RM", Field::Roman(true)),
    (
        "a.d.",
        Field::Era {
            upper: false,
            dots: true,
        },
    ),
    (
        "a.m.",
        Field::Meridiem {
            upper: false,
            dots: true,
        },
    ),
    (
        "ad",
        Field::Era {
            upper: false,
            dots: false,
        },
    ),
    (
        "am",
        Field::Meridiem {
            upper: false,
            dots: false,
        },
    ),
    (
        "b.c.",
        Field::Era {
            upper: false,
            dots: true,
        },
    ),
    (
        "bc",
        Field::Era {
            upper: false,
            dots: false,
        },
    ),
    ("day", Field::DayName(Case::Lower)),
    ("dy", Field::DayAbbrev(Case::Lower)),
    ("month", Field::MonthName(Case::Lower)),
    ("mon", Field::MonthAbbrev(Case::Lower)),
    (
        "p.m.",
        Field::Meridiem {
            upper: false,
            dots: true,
        },
    ),
    (
        "pm",
        Field::Meridiem {
            upper: false,
            dots: false,
        },
    ),
    ("rm", Field::Roman(false)),
    ("CC", Field::Century),
    ("DDD", Field::DayOfYear),
    ("DD", Field::Day),
    ("D", Field::DayOfWeek),
    ("FF1", Field::Fraction(1)),
    ("FF2", Field::Fraction(2)),
    ("FF3", Field::Fraction(3)),
    ("FF4", Field::Fraction(4)),
    ("FF5", Field::Fraction(5)),
    ("FF6", Field::Fraction(6)),
    ("HH24", Field::Hour24),
    ("HH12", Field::Hour12),
    ("HH", Field::Hour12),
    ("IDDD", Field::IsoDayOfYear),
    ("ID", Field::IsoDayOfWeek),
    ("IW", Field::IsoWeek),
    ("IYYY", Field::IsoYear(4)),
    ("IYY", Field::IsoYear(3)),
    ("IY", Field::IsoYear(2)),
    ("I", Field::IsoYear(1)),
    ("J", Field::Julian),
    ("MI", Field::Minute),
    ("MM", Field::Month),
    ("MS", Field::Millis),
    ("Q", Field::Quarter),
    ("SSSSS", Field::SecondsOfDay),
    ("SSSS", Field::SecondsOfDay),
    ("SS", Field::Second),
    ("US", Field::Micros),
    ("WW", Field::WeekOfYear),
    ("W", Field::WeekOfMonth),
    ("Y,YYY", Field::YearComma),
    ("YYYY", Field::Year(4)),
    ("YYY", Field::Year(3)),
    ("YY", Field::Year(2)),
    ("Y", Field::Year(1)),
];

/// The keyword `at` begins with, and its length.
fn keyword(at: &str) -> Option<(usize, Field)> {
    KEYWORDS.iter().find_map(|(k, field)| {
        let lower = field.numeric() && at.get(..k.len()).is_some_and(|p| p == k.to_lowercase());
        (at.starts_with(k) || lower).then_some((k.len(), *field))
    })
}

/// Keywords Postgres knows that are not written here.
const REFUSED: &[&str] = &[
    "TZH", "TZM", "TZ", "tzh", "tzm", "tz", "OF", "of", "FX", "fx", "SP", "sp",
];

/// Reads a template; `Err` names what is not written here.
fn parse(format: &str) -> std::result::Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = format;
    while let Some(c) = rest.chars().next() {
        if c == '"' {
            // Quoted text, up to the next quote.
            let inner = &rest[1..];
            let end = inner.find('"').unwrap_or(inner.len());
            if inner[..end].contains('\\') {
                return Err("a backslash in a to_char format".into());
            }
            text.push_str(&inner[..end]);
            rest = inner.get(end + 1..).unwrap_or("");
            continue;
        }
        if c == '\\' {
            return Err("a backslash in a to_char format".into());
        }
        let mut fill = false;
        let mut at = rest;
        loop {
            if let Some(r) = at.strip_prefix("FM").or_else(|| at.strip_prefix("fm")) {
                fill = true;
                at = r;
            } else if let Some(r) = at.strip_prefix("TM").or_else(|| at.strip_prefix("tm")) {
                at = r;
            } else {
                break;
            }
        }
        if let Some(r) = REFUSED.iter().find(|k| at.starts_with(*k)) {
            return Err(format!("the to_char pattern {r}"));
        }
        match keyword(at) {
            Some((len, field)) => {
                let mut after = &at[len..];
                let ordinal = if let Some(r) = after.strip_prefix("TH") {
                    after = r;
                    Some(true)
                } else if let Some(r) = after.strip_prefix("th") {
                    after = r;
                    Some(false)
                } else {
                    None
                };
                if ordinal.is_some() && !field.numeric() {
                    return Err(format!("an ordinal suffix after {}", &at[..len]));
                }
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Field {
                    field,
                    fill,
                    ordinal,
                });
                rest = after;
            }
            None if at.len() < rest.len() => {
                // A lone prefix writes nothing.
                rest = at;
            }
            None => {
                text.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const ROMAN: [&str; 12] = [
    "I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII",
];

fn cased(name: &str, case: Case) -> String {
    match case {
        Case::Upper => name.to_uppercase(),
        Case::Title => name.to_string(),
        Case::Lower => name.to_lowercase(),
    }
}

/// The ordinal suffix of `n`, as Postgres's `get_th`.
fn suffix(n: i64, upper: bool) -> &'static str {
    let n = n.abs();
    let s = if (11..=13).contains(&(n % 100)) {
        "th"
    } else {
        match n % 10 {
            1 => "st",
            2 => "nd",
            3 => "rd",
            _ => "th",
        }
    };
    if upper {
        match s {
            "st" => "ST",
            "nd" => "ND",
            "rd" => "RD",
            _ => "TH",
        }
    } else {
        s
    }
}

/// Writes `t` (a local date and time, microseconds included) by `pieces`.
fn write(out: &mut String, pieces: &[Piece], t: NaiveDateTime) {
    use std::fmt::Write;
    let micros = t.and_utc().timestamp_subsec_micros();
    let year = t.year();
    let iso = t.iso_week();
    for piece in pieces {
        let (field, fill, ordinal) = match piece {
            Piece::Text(s) => {
                out.push_str(s);
                continue;
            }
            Piece::Field {
                field,
                fill,
                ordinal,
            } => (*field, *fill, *ordinal),
        };
        // A number, padded to `width` unless in fill mode.
        let mut number = |n: i64, width: usize| {
            if fill {
                let _ = write!(out, "{n}");
            } else {
                let _ = write!(out, "{n:0width$}");
            }
            if let Some(upper) = ordinal {
                out.push_str(suffix(n, upper));
            }
        };
        let name = |out: &mut String, s: String, pad: bool| {
            if pad && !fill {
                let _ = write!(out, "{s:<9}");
            } else {
                out.push_str(&s);
            }
        };
        let hour12 = match t.hour() % 12 {
            0 => 12,
            h => h,
        };
        match field {
            Field::Hour12 => number(hour12 as i64, 2),
            Field::Hour24 => number(t.hour() as i64, 2),
            Field::Minute => number(t.minute() as i64, 2),
            Field::Second => number(t.second() as i64, 2),
            Field::Millis => number((micros / 1000) as i64, 3),
            Field::Micros => number(micros as i64, 6),
            Field::Fraction(d) => number((micros / 10u32.pow(6 - d)) as i64, d as usize),
            Field::SecondsOfDay => number(t.num_seconds_from_midnight() as i64, 0),
            Field::Meridiem { upper, dots } => {
                let pm = t.hour() >= 12;
                let s = match (pm, dots) {
                    (false, false) => "AM",
                    (true, false) => "PM",
                    (false, true) => "A.M.",
                    (true, true) => "P.M.",
                };
                out.push_str(&if upper {
                    s.to_string()
                } else {
                    s.to_lowercase()
                });
            }
            Field::Era { upper, dots } => {
                let s = if dots { "A.D." } else { "AD" };
                out.push_str(&if upper {
                    s.to_string()
                } else {
                    s.to_lowercase()
                });
            }
            Field::YearComma => {
                let _ = write!(out, "{},{:03}", year / 1000, year % 1000);
                if let Some(upper) = ordinal {
                    out.push_str(suffix(year as i64, upper));
                }
            }
            Field::Year(4) => number(year as i64, 4),
            Field::Year(n) => number((year % 10i32.pow(n)) as i64, n as usize),
            Field::IsoYear(4) => number(iso.year() as i64, 4),
            Field::IsoYear(n) => number((iso.year() % 10i32.pow(n)) as i64, n as usize),
            Field::MonthName(case) => name(out, cased(MONTHS[t.month0() as usize], case), true),
            Field::MonthAbbrev(case) => {
                name(out, cased(&MONTHS[t.month0() as usize][..3], case), false)
            }
            Field::Month => number(t.month() as i64, 2),
            Field::DayName(case) => name(
                out,
                cased(DAYS[t.weekday().num_days_from_sunday() as usize], case),
                true,
            ),
            Field::DayAbbrev(case) => name(
                out,
                cased(
                    &DAYS[t.weekday().num_days_from_sunday() as usize][..3],
                    case,
                ),
                false,
            ),
            Field::DayOfYear => number(t.ordinal() as i64, 3),
            Field::IsoDayOfYear => number(
                ((iso.week() - 1) * 7 + t.weekday().number_from_monday()) as i64,
                3,
            ),
            Field::Day => number(t.day() as i64, 2),
            Field::DayOfWeek => number(t.weekday().number_from_sunday() as i64, 0),
            Field::IsoDayOfWeek => number(t.weekday().number_from_monday() as i64, 0),
            Field::WeekOfMonth => number(((t.day() - 1) / 7 + 1) as i64, 0),
            Field::WeekOfYear => number(((t.ordinal() - 1) / 7 + 1) as i64, 2),
            Field::IsoWeek => number(iso.week() as i64, 2),
            Field::Century => number(((year + 99) / 100) as i64, 2),
            Field::Julian => number(t.date().num_days_from_ce() as i64 + 1_721_425, 0),
            Field::Quarter => number(((t.month() - 1) / 3 + 1) as i64, 0),
            Field::Roman(upper) => {
                let r = ROMAN[t.month0() as usize];
                let r = if upper {
                    r.to_string()
                } else {
                    r.to_lowercase()
                };
                if fill {
                    out.push_str(&r);
                } else {
                    let _ = write!(out, "{r:<4}");
                }
            }
        }
    }
}

/// `to_char`, registered in place of DataFusion's under the same name.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct ToChar {
    signature: Signature,
    /// The session's time zone, for timestamptz values.
    zone: String,
}

impl ToChar {
    pub(crate) fn udf(zone: &str) -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            signature: Signature::any(2, Volatility::Stable),
            zone: zone.to_string(),
        })
    }
}

impl ScalarUDFImpl for ToChar {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        "to_char"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [
                DataType::Timestamp(..) | DataType::Date32,
                DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8,
            ] => Ok(DataType::Utf8),
            [t, _] => not_impl_err!("to_char of {t}"),
            _ => exec_err!("to_char takes two arguments"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let format = match &args.args[1] {
            ColumnarValue::Scalar(
                ScalarValue::Utf8(f) | ScalarValue::Utf8View(f) | ScalarValue::LargeUtf8(f),
            ) => f.clone(),
            _ => return not_impl_err!("to_char with a format that is not a constant"),
        };
        let values = args.args[0].to_array(args.number_rows)?;
        let Some(format) = format else {
            return Ok(ColumnarValue::Array(
                datafusion::arrow::array::new_null_array(&DataType::Utf8, values.len()),
            ));
        };
        let pieces = match parse(&format) {
            Ok(p) => p,
            Err(what) => return not_impl_err!("{what}"),
        };
        // The executor's name for UTC is `+00:00`.
        let zone = match self.zone.as_str() {
            "+00:00" => Some(chrono_tz::UTC),
            name => crate::pgtypes::resolve_time_zone(name),
        };
        let local = |micros: i64, zoned: bool| -> Result<NaiveDateTime> {
            let Some(utc) = DateTime::from_timestamp_micros(micros) else {
                return exec_err!("timestamp out of range");
            };
            Ok(match (zoned, zone) {
                (true, Some(tz)) => utc.with_timezone(&tz).naive_local(),
                (true, None) => return not_impl_err!("to_char in time zone {}", self.zone),
                (false, _) => utc.naive_utc(),
            })
        };
        let mut builder = StringBuilder::with_capacity(values.len(), values.len() * format.len());
        let mut line = String::new();
        for i in 0..values.len() {
            if values.is_null(i) {
                builder.append_null();
                continue;
            }
            let t = match values.data_type() {
                DataType::Date32 => {
                    let days = values.as_primitive::<Date32Type>().value(i);
                    local(days as i64 * 86_400_000_000, false)?
                }
                DataType::Timestamp(unit, zone) => {
                    let v = match unit {
                        TimeUnit::Second => {
                            values.as_primitive::<TimestampSecondType>().value(i) * 1_000_000
                        }
                        TimeUnit::Millisecond => {
                            values.as_primitive::<TimestampMillisecondType>().value(i) * 1_000
                        }
                        TimeUnit::Microsecond => {
                            values.as_primitive::<TimestampMicrosecondType>().value(i)
                        }
                        TimeUnit::Nanosecond => {
                            values.as_primitive::<TimestampNanosecondType>().value(i) / 1_000
                        }
                    };
                    local(v, zone.is_some())?
                }
                t => return not_impl_err!("to_char of {t}"),
            };
            if t.year() < 1 {
                return not_impl_err!("to_char of a date before the year 1");
            }
            line.clear();
            write(&mut line, &pieces, t);
            builder.append_value(&line);
        }
        let array: ArrayRef = Arc::new(builder.finish());
        Ok(ColumnarValue::Array(array))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(template: &str, t: &str) -> String {
        let t = NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f").unwrap();
        let mut out = String::new();
        write(&mut out, &parse(template).unwrap(), t);
        out
    }

    // Expected values as Postgres 15 writes them.
    #[test]
    fn templates_are_written_as_postgres_writes_them() {
        let t = "2025-03-02 07:05:09.012345";
        assert_eq!(
            format("YYYY-MM-DD HH24:MI:SS.US", t),
            "2025-03-02 07:05:09.012345"
        );
        assert_eq!(format("Month DD, YYYY", t), "March     02, 2025");
        assert_eq!(format("FMMonth FMDDth, YYYY", t), "March 2nd, 2025");
        assert_eq!(format("Dy, Mon DD HH12:MI AM", t), "Sun, Mar 02 07:05 AM");
        assert_eq!(format("\"Q\"Q IYYY-IW D ID DDD", t), "Q1 2025-09 1 7 061");
        assert_eq!(format("YYYY-MM-DDTHH24", t), "2025-03-02NDH24");
        assert_eq!(
            format("yyyy-mm-dd hh24:mi day dy", t),
            "2025-03-02 07:05 sunday    sun"
        );
        assert_eq!(
            format(
                "IDDD J CC Y,YYY YYY YY Y RM FMRM| SSSS FF3 ms a.m. Day| day W WW",
                t
            ),
            "063 2460737 21 2,025 025 25 5 III  III| 25509 012 012 a.m. Sunday   | sunday    1 09"
        );
    }

    #[test]
    fn what_is_not_written_is_refused() {
        assert!(parse("YYYY TZ").is_err());
        assert!(parse("HH24:MI OF").is_err());
        assert!(parse("\\Y").is_err());
        assert!(parse("MonthTH").is_err());
    }
}
