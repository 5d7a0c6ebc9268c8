//! Postgres types as thermocline carries them: which Postgres types a tiered
//! table may hold, their Arrow form, Postgres's binary format decoded into
//! Arrow arrays, and Arrow values written back in Postgres's text format.
//!
//! Every conversion is exact or refused: a value that cannot be carried
//! without change is an error, never an approximation.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Offset, TimeZone, Timelike, Utc};
use datafusion::arrow::array::{
    Array, ArrayBuilder, BinaryArray, BinaryBuilder, BooleanArray, BooleanBuilder, Date32Array,
    Date32Builder, Decimal128Array, Decimal128Builder, FixedSizeBinaryArray,
    FixedSizeBinaryBuilder, Float32Array, Float32Builder, Float64Array, Float64Builder, Int16Array,
    Int16Builder, Int32Array, Int32Builder, Int64Array, Int64Builder, LargeStringArray,
    StringArray, StringBuilder, StringViewArray, Time64MicrosecondArray, Time64MicrosecondBuilder,
    TimestampMicrosecondArray, TimestampMicrosecondBuilder, TimestampMillisecondArray,
    TimestampNanosecondArray, TimestampSecondArray, UInt32Array, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, TimeUnit};

/// Microseconds between 1970-01-01 and 2000-01-01, Postgres's epoch.
pub const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;
/// Days between 1970-01-01 and 2000-01-01.
pub const PG_EPOCH_OFFSET_DAYS: i32 = 10_957;

/// Type OIDs (`pg_type.oid`), as Postgres numbers them.
pub mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;
    pub const NAME: u32 = 19;
}

/// A column type a tiered table may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgType {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    /// `numeric(precision, scale)`, precision at most 38.
    Numeric(u8, i8),
    /// text, varchar, char(n), name: (the type's OID).
    Text(u32),
    Json,
    Jsonb,
    Bytea,
    Uuid,
    Date,
    Time,
    Timestamp,
    Timestamptz,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TypeError {
    #[error("type {0} cannot be stored in the cold tier")]
    Unsupported(String),
    #[error(
        "numeric without a precision (or with more than 38 digits) cannot be stored in the cold tier exactly; declare it as numeric(p, s) with p <= 38"
    )]
    UnboundedNumeric,
    #[error("invalid {0} value in Postgres's binary format")]
    Malformed(&'static str),
    #[error("{0} values such as infinity cannot be stored in the cold tier")]
    Infinite(&'static str),
}

impl PgType {
    /// The type of a column with this OID and typmod (`atttypmod`).
    pub fn from_oid(type_oid: u32, typmod: i32, type_name: &str) -> Result<Self, TypeError> {
        Ok(match type_oid {
            oid::BOOL => PgType::Bool,
            oid::INT2 => PgType::Int2,
            oid::INT4 => PgType::Int4,
            oid::INT8 => PgType::Int8,
            oid::FLOAT4 => PgType::Float4,
            oid::FLOAT8 => PgType::Float8,
            oid::NUMERIC => {
                if typmod < 4 {
                    return Err(TypeError::UnboundedNumeric);
                }
                let t = typmod - 4;
                let precision = (t >> 16) & 0xffff;
                let scale = ((t & 0x7ff) ^ 1024) - 1024;
                if !(1..=38).contains(&precision) || scale < 0 || scale > precision {
                    return Err(TypeError::UnboundedNumeric);
                }
                PgType::Numeric(precision as u8, scale as i8)
            }
            oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME => PgType::Text(type_oid),
            oid::JSON => PgType::Json,
            oid::JSONB => PgType::Jsonb,
            oid::BYTEA => PgType::Bytea,
            oid::UUID => PgType::Uuid,
            oid::DATE => PgType::Date,
            oid::TIME => PgType::Time,
            oid::TIMESTAMP => PgType::Timestamp,
            oid::TIMESTAMPTZ => PgType::Timestamptz,
            _ => return Err(TypeError::Unsupported(type_name.to_string())),
        })
    }

    /// The Arrow type that holds this type's values exactly. `timestamptz`
    /// is an instant in UTC.
    pub fn arrow(self) -> DataType {
        match self {
            PgType::Bool => DataType::Boolean,
            PgType::Int2 => DataType::Int16,
            PgType::Int4 => DataType::Int32,
            PgType::Int8 => DataType::Int64,
            PgType::Float4 => DataType::Float32,
            PgType::Float8 => DataType::Float64,
            PgType::Numeric(p, s) => DataType::Decimal128(p, s),
            PgType::Text(_) | PgType::Json | PgType::Jsonb => DataType::Utf8,
            PgType::Bytea => DataType::Binary,
            PgType::Uuid => DataType::FixedSizeBinary(16),
            PgType::Date => DataType::Date32,
            PgType::Time => DataType::Time64(TimeUnit::Microsecond),
            PgType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            PgType::Timestamptz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }

    /// A builder for [`PgType::arrow`] arrays.
    pub fn builder(self, capacity: usize) -> Box<dyn ArrayBuilder> {
        match self {
            PgType::Bool => Box::new(BooleanBuilder::with_capacity(capacity)),
            PgType::Int2 => Box::new(Int16Builder::with_capacity(capacity)),
            PgType::Int4 => Box::new(Int32Builder::with_capacity(capacity)),
            PgType::Int8 => Box::new(Int64Builder::with_capacity(capacity)),
            PgType::Float4 => Box::new(Float32Builder::with_capacity(capacity)),
            PgType::Float8 => Box::new(Float64Builder::with_capacity(capacity)),
            PgType::Numeric(p, s) => Box::new(
                Decimal128Builder::with_capacity(capacity)
                    .with_data_type(DataType::Decimal128(p, s)),
            ),
            PgType::Text(_) | PgType::Json | PgType::Jsonb => {
                Box::new(StringBuilder::with_capacity(capacity, capacity * 16))
            }
            PgType::Bytea => Box::new(BinaryBuilder::with_capacity(capacity, capacity * 16)),
            PgType::Uuid => Box::new(FixedSizeBinaryBuilder::with_capacity(capacity, 16)),
            PgType::Date => Box::new(Date32Builder::with_capacity(capacity)),
            PgType::Time => Box::new(Time64MicrosecondBuilder::with_capacity(capacity)),
            PgType::Timestamp => Box::new(TimestampMicrosecondBuilder::with_capacity(capacity)),
            PgType::Timestamptz => {
                Box::new(TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"))
            }
        }
    }

    /// Appends one value in Postgres's binary format (`None`: NULL).
    pub fn append_binary(
        self,
        builder: &mut dyn ArrayBuilder,
        value: Option<&[u8]>,
    ) -> Result<(), TypeError> {
        fn b<T: 'static>(builder: &mut dyn ArrayBuilder) -> &mut T {
            builder
                .as_any_mut()
                .downcast_mut::<T>()
                .expect("builder made by PgType::builder")
        }
        fn fixed<const N: usize>(v: &[u8], what: &'static str) -> Result<[u8; N], TypeError> {
            v.try_into().map_err(|_| TypeError::Malformed(what))
        }
        match self {
            PgType::Bool => b::<BooleanBuilder>(builder).append_option(
                value
                    .map(|v| fixed::<1>(v, "bool").map(|x| x[0] != 0))
                    .transpose()?,
            ),
            PgType::Int2 => b::<Int16Builder>(builder).append_option(
                value
                    .map(|v| fixed::<2>(v, "int2").map(i16::from_be_bytes))
                    .transpose()?,
            ),
            PgType::Int4 => b::<Int32Builder>(builder).append_option(
                value
                    .map(|v| fixed::<4>(v, "int4").map(i32::from_be_bytes))
                    .transpose()?,
            ),
            PgType::Int8 => b::<Int64Builder>(builder).append_option(
                value
                    .map(|v| fixed::<8>(v, "int8").map(i64::from_be_bytes))
                    .transpose()?,
            ),
            PgType::Float4 => b::<Float32Builder>(builder).append_option(
                value
                    .map(|v| fixed::<4>(v, "float4").map(f32::from_be_bytes))
                    .transpose()?,
            ),
            PgType::Float8 => b::<Float64Builder>(builder).append_option(
                value
                    .map(|v| fixed::<8>(v, "float8").map(f64::from_be_bytes))
                    .transpose()?,
            ),
            PgType::Numeric(_, s) => b::<Decimal128Builder>(builder)
                .append_option(value.map(|v| numeric_from_binary(v, s)).transpose()?),
            PgType::Text(_) | PgType::Json => {
                let s = value
                    .map(|v| std::str::from_utf8(v).map_err(|_| TypeError::Malformed("text")))
                    .transpose()?;
                b::<StringBuilder>(builder).append_option(s)
            }
            PgType::Jsonb => {
                let s = value
                    .map(|v| match v.split_first() {
                        Some((1, rest)) => {
                            std::str::from_utf8(rest).map_err(|_| TypeError::Malformed("jsonb"))
                        }
                        _ => Err(TypeError::Malformed("jsonb")),
                    })
                    .transpose()?;
                b::<StringBuilder>(builder).append_option(s)
            }
            PgType::Bytea => b::<BinaryBuilder>(builder).append_option(value),
            PgType::Uuid => {
                let bb = b::<FixedSizeBinaryBuilder>(builder);
                match value {
                    Some(v) if v.len() == 16 => bb
                        .append_value(v)
                        .map_err(|_| TypeError::Malformed("uuid"))?,
                    Some(_) => return Err(TypeError::Malformed("uuid")),
                    None => bb.append_null(),
                }
            }
            PgType::Date => {
                let d = value
                    .map(|v| {
                        let days = i32::from_be_bytes(fixed::<4>(v, "date")?);
                        if days == i32::MAX || days == i32::MIN {
                            return Err(TypeError::Infinite("date"));
                        }
                        Ok(days + PG_EPOCH_OFFSET_DAYS)
                    })
                    .transpose()?;
                b::<Date32Builder>(builder).append_option(d)
            }
            PgType::Time => b::<Time64MicrosecondBuilder>(builder).append_option(
                value
                    .map(|v| fixed::<8>(v, "time").map(i64::from_be_bytes))
                    .transpose()?,
            ),
            PgType::Timestamp | PgType::Timestamptz => {
                let t = value
                    .map(|v| {
                        let us = i64::from_be_bytes(fixed::<8>(v, "timestamp")?);
                        if us == i64::MAX || us == i64::MIN {
                            return Err(TypeError::Infinite("timestamp"));
                        }
                        Ok(us + PG_EPOCH_OFFSET_US)
                    })
                    .transpose()?;
                b::<TimestampMicrosecondBuilder>(builder).append_option(t)
            }
        }
        Ok(())
    }
}

/// A `numeric` in binary format as an integer scaled by 10^`scale`.
pub fn numeric_value(v: &[u8], scale: i8) -> Result<i128, TypeError> {
    numeric_from_binary(v, scale)
}

fn numeric_from_binary(v: &[u8], scale: i8) -> Result<i128, TypeError> {
    const BAD: TypeError = TypeError::Malformed("numeric");
    if v.len() < 8 {
        return Err(BAD);
    }
    let ndigits = i16::from_be_bytes([v[0], v[1]]) as usize;
    let weight = i16::from_be_bytes([v[2], v[3]]) as i32;
    let sign = u16::from_be_bytes([v[4], v[5]]);
    if v.len() != 8 + 2 * ndigits {
        return Err(BAD);
    }
    if sign == 0xC000 {
        return Err(TypeError::Infinite("numeric NaN"));
    }
    if sign == 0xD000 || sign == 0xF000 {
        return Err(TypeError::Infinite("numeric"));
    }
    // value = sum(digit[i] * 10000^(weight - i)); scaled = value * 10^scale.
    let mut acc: i128 = 0;
    let scale = scale as i32;
    for i in 0..ndigits {
        let d = u16::from_be_bytes([v[8 + 2 * i], v[9 + 2 * i]]) as i128;
        let exp10 = 4 * (weight - i as i32) + scale;
        let term = if exp10 >= 0 {
            10i128
                .checked_pow(exp10 as u32)
                .and_then(|p| d.checked_mul(p))
                .ok_or(BAD)?
        } else {
            // Digits below the column's scale are zero for values Postgres
            // stored in numeric(p, s).
            let p = 10i128.checked_pow((-exp10) as u32).ok_or(BAD)?;
            if d % p != 0 {
                return Err(BAD);
            }
            d / p
        };
        acc = acc.checked_add(term).ok_or(BAD)?;
    }
    Ok(if sign == 0x4000 { -acc } else { acc })
}

/// The session settings that shape Postgres's text output.
#[derive(Debug, Clone)]
pub struct TextSettings {
    /// `TimeZone`, resolved.
    pub time_zone: chrono_tz::Tz,
    /// `extra_float_digits` > 0: shortest exact floats (Postgres 12+ default).
    pub extra_float_digits: i32,
}

impl Default for TextSettings {
    fn default() -> Self {
        Self {
            time_zone: chrono_tz::UTC,
            extra_float_digits: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("cannot return a value of type {arrow} as Postgres type {pg_type}")]
    Mismatch { arrow: String, pg_type: u32 },
    #[error("{0} is out of range for Postgres")]
    OutOfRange(&'static str),
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
    if array.is_null(row) {
        return Ok(false);
    }
    let mismatch = || EncodeError::Mismatch {
        arrow: array.data_type().to_string(),
        pg_type,
    };
    let any = array.as_any();
    macro_rules! int {
        ($($t:ty),*) => {{
            $(if let Some(a) = any.downcast_ref::<$t>() {
                let _ = write!(out, "{}", a.value(row));
                return Ok(true);
            })*
        }};
    }
    match pg_type {
        oid::INT2 | oid::INT4 | oid::INT8 | oid::OID => {
            int!(Int16Array, Int32Array, Int64Array, UInt32Array, UInt64Array);
            Err(mismatch())
        }
        oid::NUMERIC => {
            int!(Int16Array, Int32Array, Int64Array, UInt32Array, UInt64Array);
            if let Some(a) = any.downcast_ref::<Decimal128Array>() {
                write_decimal(out, a.value(row), a.scale());
                return Ok(true);
            }
            Err(mismatch())
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
            if let Some(a) = any.downcast_ref::<StringArray>() {
                out.extend_from_slice(a.value(row).as_bytes());
            } else if let Some(a) = any.downcast_ref::<StringViewArray>() {
                out.extend_from_slice(a.value(row).as_bytes());
            } else if let Some(a) = any.downcast_ref::<LargeStringArray>() {
                out.extend_from_slice(a.value(row).as_bytes());
            } else {
                return Err(mismatch());
            }
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
            write_date(out, d);
            Ok(true)
        }
        oid::TIME => {
            let a = any
                .downcast_ref::<Time64MicrosecondArray>()
                .ok_or_else(mismatch)?;
            let us = a.value(row);
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
                write_datetime(out, utc.naive_utc());
            } else {
                let local = settings.time_zone.from_utc_datetime(&utc.naive_utc());
                write_datetime(out, local.naive_local());
                let offset = local.offset().fix().local_minus_utc();
                let sign = if offset < 0 { '-' } else { '+' };
                let o = offset.abs();
                let _ = write!(out, "{sign}{:02}", o / 3600);
                if o % 3600 != 0 {
                    let _ = write!(out, ":{:02}", o / 60 % 60);
                    if o % 60 != 0 {
                        let _ = write!(out, ":{:02}", o % 60);
                    }
                }
            }
            Ok(true)
        }
        _ => Err(mismatch()),
    }
}

/// Writes the value at `row` of `array` in Postgres's binary format for
/// the type `pg_type`, or returns `false` for NULL.
pub fn write_binary(
    out: &mut Vec<u8>,
    array: &dyn Array,
    row: usize,
    pg_type: u32,
) -> Result<bool, EncodeError> {
    if array.is_null(row) {
        return Ok(false);
    }
    let mismatch = || EncodeError::Mismatch {
        arrow: array.data_type().to_string(),
        pg_type,
    };
    let any = array.as_any();
    let int = || -> Option<i128> {
        if let Some(a) = any.downcast_ref::<Int16Array>() {
            return Some(a.value(row) as i128);
        }
        if let Some(a) = any.downcast_ref::<Int32Array>() {
            return Some(a.value(row) as i128);
        }
        if let Some(a) = any.downcast_ref::<Int64Array>() {
            return Some(a.value(row) as i128);
        }
        if let Some(a) = any.downcast_ref::<UInt32Array>() {
            return Some(a.value(row) as i128);
        }
        if let Some(a) = any.downcast_ref::<UInt64Array>() {
            return Some(a.value(row) as i128);
        }
        None
    };
    match pg_type {
        oid::INT2 => {
            let v = i16::try_from(int().ok_or_else(mismatch)?)
                .map_err(|_| EncodeError::OutOfRange("smallint"))?;
            out.extend_from_slice(&v.to_be_bytes());
        }
        oid::INT4 => {
            let v = i32::try_from(int().ok_or_else(mismatch)?)
                .map_err(|_| EncodeError::OutOfRange("integer"))?;
            out.extend_from_slice(&v.to_be_bytes());
        }
        oid::INT8 => {
            let v = i64::try_from(int().ok_or_else(mismatch)?)
                .map_err(|_| EncodeError::OutOfRange("bigint"))?;
            out.extend_from_slice(&v.to_be_bytes());
        }
        oid::OID => {
            let v = u32::try_from(int().ok_or_else(mismatch)?)
                .map_err(|_| EncodeError::OutOfRange("oid"))?;
            out.extend_from_slice(&v.to_be_bytes());
        }
        oid::NUMERIC => {
            let (v, scale) = match any.downcast_ref::<Decimal128Array>() {
                Some(a) => (a.value(row), a.scale()),
                None => (int().ok_or_else(mismatch)?, 0),
            };
            write_numeric_binary(out, v, scale);
        }
        oid::FLOAT8 => {
            let v = if let Some(a) = any.downcast_ref::<Float64Array>() {
                a.value(row)
            } else if let Some(a) = any.downcast_ref::<Float32Array>() {
                a.value(row) as f64
            } else {
                return Err(mismatch());
            };
            out.extend_from_slice(&v.to_be_bytes());
        }
        oid::FLOAT4 => {
            let a = any.downcast_ref::<Float32Array>().ok_or_else(mismatch)?;
            out.extend_from_slice(&a.value(row).to_be_bytes());
        }
        oid::BOOL => {
            let a = any.downcast_ref::<BooleanArray>().ok_or_else(mismatch)?;
            out.push(a.value(row) as u8);
        }
        oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME | oid::JSON | oid::JSONB => {
            if pg_type == oid::JSONB {
                out.push(1);
            }
            if let Some(a) = any.downcast_ref::<StringArray>() {
                out.extend_from_slice(a.value(row).as_bytes());
            } else if let Some(a) = any.downcast_ref::<StringViewArray>() {
                out.extend_from_slice(a.value(row).as_bytes());
            } else if let Some(a) = any.downcast_ref::<LargeStringArray>() {
                out.extend_from_slice(a.value(row).as_bytes());
            } else {
                return Err(mismatch());
            }
        }
        oid::BYTEA => {
            let a = any.downcast_ref::<BinaryArray>().ok_or_else(mismatch)?;
            out.extend_from_slice(a.value(row));
        }
        oid::UUID => {
            let a = any
                .downcast_ref::<FixedSizeBinaryArray>()
                .ok_or_else(mismatch)?;
            out.extend_from_slice(a.value(row));
        }
        oid::DATE => {
            let a = any.downcast_ref::<Date32Array>().ok_or_else(mismatch)?;
            out.extend_from_slice(&(a.value(row) - PG_EPOCH_OFFSET_DAYS).to_be_bytes());
        }
        oid::TIME => {
            let a = any
                .downcast_ref::<Time64MicrosecondArray>()
                .ok_or_else(mismatch)?;
            out.extend_from_slice(&a.value(row).to_be_bytes());
        }
        oid::TIMESTAMP | oid::TIMESTAMPTZ => {
            let us = timestamp_micros(array, row).ok_or_else(mismatch)?;
            out.extend_from_slice(&(us - PG_EPOCH_OFFSET_US).to_be_bytes());
        }
        _ => return Err(mismatch()),
    }
    Ok(true)
}

/// A decimal (`value` scaled by 10^`scale`) in numeric's binary format:
/// base-10000 digits, weight, sign and display scale.
pub fn write_numeric_binary(out: &mut Vec<u8>, value: i128, scale: i8) {
    let (value, scale) = if scale < 0 {
        (value * 10i128.pow((-scale) as u32), 0u32)
    } else {
        (value, scale as u32)
    };
    let negative = value < 0;
    let digits = value.unsigned_abs().to_string();
    let (int_part, frac_part) = if digits.len() > scale as usize {
        digits.split_at(digits.len() - scale as usize)
    } else {
        ("", digits.as_str())
    };
    let frac = format!("{:0>width$}", frac_part, width = scale as usize);
    let int_padded = format!("{}{}", "0".repeat((4 - int_part.len() % 4) % 4), int_part);
    let frac_padded = format!("{}{}", frac, "0".repeat((4 - frac.len() % 4) % 4));
    let mut groups: Vec<u16> = Vec::new();
    for chunk in int_padded
        .as_bytes()
        .chunks(4)
        .chain(frac_padded.as_bytes().chunks(4))
    {
        groups.push(
            std::str::from_utf8(chunk)
                .unwrap_or("0")
                .parse()
                .unwrap_or(0),
        );
    }
    let mut weight = (int_padded.len() / 4) as i32 - 1;
    // Leading zero groups move the weight down; trailing ones are dropped.
    let lead = groups.iter().take_while(|g| **g == 0).count();
    groups.drain(..lead);
    weight -= lead as i32;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    out.extend_from_slice(&(groups.len() as i16).to_be_bytes());
    out.extend_from_slice(&(weight as i16).to_be_bytes());
    out.extend_from_slice(
        &(if negative && !groups.is_empty() {
            0x4000u16
        } else {
            0
        })
        .to_be_bytes(),
    );
    out.extend_from_slice(&(scale as u16).to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
}

/// Microseconds since 1970 of a timestamp array value of any unit.
fn timestamp_micros(array: &dyn Array, row: usize) -> Option<i64> {
    let any = array.as_any();
    if let Some(a) = any.downcast_ref::<TimestampMicrosecondArray>() {
        return Some(a.value(row));
    }
    if let Some(a) = any.downcast_ref::<TimestampNanosecondArray>() {
        return Some(a.value(row).div_euclid(1000));
    }
    if let Some(a) = any.downcast_ref::<TimestampMillisecondArray>() {
        return a.value(row).checked_mul(1000);
    }
    if let Some(a) = any.downcast_ref::<TimestampSecondArray>() {
        return a.value(row).checked_mul(1_000_000);
    }
    None
}

fn write_date(out: &mut Vec<u8>, d: NaiveDate) {
    use std::io::Write;
    let (year, bc) = if d.year() <= 0 {
        (1 - d.year(), true)
    } else {
        (d.year(), false)
    };
    let _ = write!(out, "{year:04}-{:02}-{:02}", d.month(), d.day());
    if bc {
        out.extend_from_slice(b" BC");
    }
}

fn write_datetime(out: &mut Vec<u8>, t: NaiveDateTime) {
    use std::io::Write;
    let d = t.date();
    let (year, bc) = if d.year() <= 0 {
        (1 - d.year(), true)
    } else {
        (d.year(), false)
    };
    let _ = write!(
        out,
        "{year:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        d.month(),
        d.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    write_fraction(out, t.nanosecond() / 1000);
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

    #[test]
    fn numeric_binary_round_trips() {
        for (v, scale) in [
            (12_345_600i128, 4i8),
            (-5, 2),
            (0, 2),
            (7, 0),
            (100_000_000, 0),
            (1, 6),
            (-123_456_789_012, 3),
        ] {
            let mut out = Vec::new();
            write_numeric_binary(&mut out, v, scale);
            assert_eq!(
                numeric_from_binary(&out, scale).unwrap(),
                v,
                "{v} scale {scale}"
            );
            assert_eq!(u16::from_be_bytes([out[6], out[7]]), scale as u16);
        }
        // 1234.5600 as Postgres sends numeric(10,4).
        let mut out = Vec::new();
        write_numeric_binary(&mut out, 12_345_600, 4);
        assert_eq!(out, [0, 2, 0, 0, 0, 0, 0, 4, 0x04, 0xd2, 0x15, 0xe0]);
    }

    #[test]
    fn numeric_binary_decodes_exactly() {
        // 1234.5600 as Postgres sends numeric(10,4): digits [1234, 5600], weight 0, dscale 4.
        let v = [0, 2, 0, 0, 0, 0, 0, 4, 0x04, 0xd2, 0x15, 0xe0];
        assert_eq!(numeric_from_binary(&v, 4).unwrap(), 12_345_600);
        assert_eq!(numeric_from_binary(&v, 2).unwrap(), 123_456);
        // -0.05: digits [500], weight -1, sign negative.
        let v = [0, 1, 0xff, 0xff, 0x40, 0, 0, 2, 0x01, 0xf4];
        assert_eq!(numeric_from_binary(&v, 2).unwrap(), -5);
    }
}
