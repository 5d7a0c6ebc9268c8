//! Postgres types as thermocline carries them: which Postgres types a tiered
//! table may hold, their Arrow form, Postgres's binary format decoded into
//! Arrow arrays, and Arrow values written back in Postgres's text format.
//!
//! Every conversion is exact or refused: a value that cannot be carried
//! without change is an error, never an approximation.

use datafusion::arrow::array::{
    Array, ArrayBuilder, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder,
    FixedSizeBinaryBuilder, Float32Builder, Float64Builder, Int16Builder, Int32Builder,
    Int64Builder, IntervalMonthDayNanoBuilder, ListBuilder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondArray, TimestampMicrosecondBuilder,
    TimestampMillisecondArray, TimestampNanosecondArray, TimestampSecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, IntervalMonthDayNano, IntervalUnit, TimeUnit};

mod binary;
mod interval;
mod text;

pub use binary::{write_binary, write_numeric_binary};
pub use interval::{IntervalStyle, interval_value, write_interval};
pub use text::{
    DateOutput, DateStyle, TextSettings, executor_zone, resolve_time_zone, write_decimal,
    write_text,
};

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

/// Array types (`pg_type.oid` of `_elem`) whose element the cold tier can
/// hold, with that element's OID.
const ARRAY_TYPES: &[(u32, u32)] = &[
    (1000, oid::BOOL),
    (1001, oid::BYTEA),
    (1003, oid::NAME),
    (1005, oid::INT2),
    (1007, oid::INT4),
    (1009, oid::TEXT),
    (1014, oid::BPCHAR),
    (1015, oid::VARCHAR),
    (1016, oid::INT8),
    (1021, oid::FLOAT4),
    (1022, oid::FLOAT8),
    (1115, oid::TIMESTAMP),
    (1182, oid::DATE),
    (1183, oid::TIME),
    (1185, oid::TIMESTAMPTZ),
    (1231, oid::NUMERIC),
    (199, oid::JSON),
    (2951, oid::UUID),
    (3807, oid::JSONB),
];

/// The element type OID of an array type thermocline carries.
pub fn array_element(array_oid: u32) -> Option<u32> {
    ARRAY_TYPES
        .iter()
        .find(|(a, _)| *a == array_oid)
        .map(|(_, e)| *e)
}

/// A one-dimensional array column: its element type, by OID and the
/// column's typmod (which Postgres applies to each element).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArrayOf {
    element_oid: u32,
    typmod: i32,
}

impl ArrayOf {
    /// The element's type.
    pub fn element(self) -> PgType {
        PgType::from_oid(self.element_oid, self.typmod, "")
            .expect("element type checked when the array type was made")
    }

    /// The element's type OID.
    pub fn element_oid(self) -> u32 {
        self.element_oid
    }
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
    /// A value of an enum type, by its label.
    Enum,
    Bytea,
    Uuid,
    Date,
    Time,
    Timestamp,
    Timestamptz,
    /// months, days and microseconds, each kept as they are (Postgres does
    /// not carry one into another when it stores an interval).
    Interval,
    /// A one-dimensional array whose indexes start at 1 (any other shape
    /// is refused value by value).
    Array(ArrayOf),
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
    #[error(
        "arrays with more than one dimension, or whose indexes do not start at 1, cannot be stored in the cold tier"
    )]
    ArrayShape,
    #[error(
        "interval values whose time part exceeds 2562047 hours cannot be stored in the cold tier"
    )]
    IntervalRange,
}

impl PgType {
    /// The type of a column: an enum (`pg_type.typtype = 'e'`), or the
    /// type with this OID and typmod.
    pub fn of_column(
        type_oid: u32,
        typmod: i32,
        type_name: &str,
        is_enum: bool,
    ) -> Result<Self, TypeError> {
        if is_enum {
            return Ok(PgType::Enum);
        }
        match array_element(type_oid) {
            Some(element_oid) => {
                Self::from_oid(element_oid, typmod, type_name)?;
                Ok(PgType::Array(ArrayOf {
                    element_oid,
                    typmod,
                }))
            }
            None => Self::from_oid(type_oid, typmod, type_name),
        }
    }

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
            oid::INTERVAL => PgType::Interval,
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
            PgType::Text(_) | PgType::Json | PgType::Jsonb | PgType::Enum => DataType::Utf8,
            PgType::Bytea => DataType::Binary,
            PgType::Uuid => DataType::FixedSizeBinary(16),
            PgType::Date => DataType::Date32,
            PgType::Time => DataType::Time64(TimeUnit::Microsecond),
            PgType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            PgType::Timestamptz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            PgType::Interval => DataType::Interval(IntervalUnit::MonthDayNano),
            PgType::Array(of) => DataType::new_list(of.element().arrow(), true),
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
            PgType::Text(_) | PgType::Json | PgType::Jsonb | PgType::Enum => {
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
            PgType::Interval => Box::new(IntervalMonthDayNanoBuilder::with_capacity(capacity)),
            PgType::Array(of) => {
                let element = of.element();
                Box::new(
                    ListBuilder::with_capacity(element.builder(capacity * 4), capacity)
                        .with_field(Field::new_list_field(element.arrow(), true)),
                )
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
            PgType::Text(_) | PgType::Json | PgType::Enum => {
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
            PgType::Interval => b::<IntervalMonthDayNanoBuilder>(builder)
                .append_option(value.map(interval_from_binary).transpose()?),
            PgType::Array(of) => {
                let list = b::<ListBuilder<Box<dyn ArrayBuilder>>>(builder);
                match value {
                    None => list.append_null(),
                    Some(v) => {
                        append_array(of.element(), list.values().as_mut(), v)?;
                        list.append(true);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Appends the elements of a one-dimensional array whose indexes start
/// at 1, in Postgres's binary format.
/// An interval in Postgres's binary format (microseconds, days, months)
/// as the executor holds it.
pub fn interval_from_binary(v: &[u8]) -> Result<IntervalMonthDayNano, TypeError> {
    let v: [u8; 16] = v.try_into().map_err(|_| TypeError::Malformed("interval"))?;
    let micros = i64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
    let days = i32::from_be_bytes(v[8..12].try_into().expect("4 bytes"));
    let months = i32::from_be_bytes(v[12..].try_into().expect("4 bytes"));
    let nanos = micros.checked_mul(1000).ok_or(TypeError::IntervalRange)?;
    Ok(IntervalMonthDayNano::new(months, days, nanos))
}

/// Bytes written in hex (as `encode(…, 'hex')` writes them).
pub fn from_hex(hex: &str) -> Option<Vec<u8>> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

fn append_array(element: PgType, values: &mut dyn ArrayBuilder, v: &[u8]) -> Result<(), TypeError> {
    let (lower, items) = array_elements(v)?;
    if lower != 1 {
        return Err(TypeError::ArrayShape);
    }
    for item in items {
        element.append_binary(values, item)?;
    }
    Ok(())
}

/// The lower bound and elements (`None`: NULL) of a one-dimensional
/// array in Postgres's binary format (`array_send`): dimensions, flags,
/// element type, then each element's length (-1: NULL) and bytes. An
/// empty array's lower bound is 1.
pub fn array_elements(v: &[u8]) -> Result<(i32, Vec<Option<&[u8]>>), TypeError> {
    const BAD: TypeError = TypeError::Malformed("array");
    let int = |at: usize| -> Result<i32, TypeError> {
        v.get(at..at + 4)
            .map(|b| i32::from_be_bytes(b.try_into().expect("4 bytes")))
            .ok_or(BAD)
    };
    match int(0)? {
        0 => return Ok((1, Vec::new())),
        1 => {}
        _ => return Err(TypeError::ArrayShape),
    }
    let (len, lower) = (int(12)?, int(16)?);
    let mut items = Vec::with_capacity(len.max(0) as usize);
    let mut pos = 20;
    for _ in 0..len {
        let n = int(pos)?;
        pos += 4;
        if n < 0 {
            items.push(None);
        } else {
            items.push(Some(v.get(pos..pos + n as usize).ok_or(BAD)?));
            pos += n as usize;
        }
    }
    if pos != v.len() {
        return Err(BAD);
    }
    Ok((lower, items))
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

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("cannot return a value of type {arrow} as Postgres type {pg_type}")]
    Mismatch { arrow: String, pg_type: u32 },
    #[error("{0} is out of range for Postgres")]
    OutOfRange(&'static str),
}

/// An integer array's value at `row`, whatever its width.
fn int_value(array: &dyn Array, row: usize) -> Option<i128> {
    use datafusion::arrow::array::{Int16Array, Int32Array, Int64Array, UInt32Array, UInt64Array};
    let any = array.as_any();
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
}

/// A string array's value at `row`, whatever its layout.
fn str_value(array: &dyn Array, row: usize) -> Option<&str> {
    use datafusion::arrow::array::{LargeStringArray, StringArray, StringViewArray};
    let any = array.as_any();
    if let Some(a) = any.downcast_ref::<StringArray>() {
        return Some(a.value(row));
    }
    if let Some(a) = any.downcast_ref::<StringViewArray>() {
        return Some(a.value(row));
    }
    any.downcast_ref::<LargeStringArray>().map(|a| a.value(row))
}

/// Microseconds since midnight of a time array value of any unit.
fn time_micros(array: &dyn Array, row: usize) -> Option<i64> {
    use datafusion::arrow::array::{
        Time32MillisecondArray, Time32SecondArray, Time64MicrosecondArray, Time64NanosecondArray,
    };
    let any = array.as_any();
    if let Some(a) = any.downcast_ref::<Time64MicrosecondArray>() {
        return Some(a.value(row));
    }
    if let Some(a) = any.downcast_ref::<Time64NanosecondArray>() {
        return Some(a.value(row).div_euclid(1000));
    }
    if let Some(a) = any.downcast_ref::<Time32MillisecondArray>() {
        return Some(i64::from(a.value(row)) * 1000);
    }
    any.downcast_ref::<Time32SecondArray>()
        .map(|a| i64::from(a.value(row)) * 1_000_000)
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

/// The elements of a one-dimensional array in Postgres's text form
/// (`{a,"b c",NULL}`), each as the text of its value (`None`: NULL);
/// `None` when the text is not such an array.
pub fn array_items(text: &str) -> Option<Vec<Option<String>>> {
    let is_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c');
    let inner = text
        .trim_matches(is_space)
        .strip_prefix('{')?
        .strip_suffix('}')?;
    let mut items = Vec::new();
    let mut chars = inner.chars().peekable();
    if inner.trim_matches(is_space).is_empty() {
        return Some(items);
    }
    loop {
        while chars.peek().is_some_and(|c| is_space(*c)) {
            chars.next();
        }
        let mut item = String::new();
        let mut literal = false;
        if chars.peek() == Some(&'"') {
            chars.next();
            literal = true;
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => item.push(chars.next()?),
                    c => item.push(c),
                }
            }
            while chars.peek().is_some_and(|c| is_space(*c)) {
                chars.next();
            }
        } else {
            // Unquoted: up to the next comma, white space around it dropped.
            let mut kept = 0;
            while let Some(&c) = chars.peek() {
                match c {
                    ',' => break,
                    '{' | '}' | '"' => return None,
                    '\\' => {
                        chars.next();
                        item.push(chars.next()?);
                        literal = true;
                        kept = item.len();
                        continue;
                    }
                    c => item.push(c),
                }
                chars.next();
                if !is_space(c) {
                    kept = item.len();
                }
            }
            item.truncate(kept);
            if item.is_empty() && !literal {
                return None;
            }
        }
        items.push((literal || !item.eq_ignore_ascii_case("NULL")).then_some(item));
        match chars.next() {
            None => return Some(items),
            Some(',') => {}
            Some(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
