//! Arrow values in Postgres's binary format, as `*send` functions write
//! them: big-endian integers and floats, 2000-based dates and timestamps,
//! numeric as base-10000 digits.

use datafusion::arrow::array::{
    Array, BinaryArray, BooleanArray, Date32Array, Decimal128Array, FixedSizeBinaryArray,
    Float32Array, Float64Array, ListArray,
};

use super::{
    EncodeError, PG_EPOCH_OFFSET_DAYS, PG_EPOCH_OFFSET_US, int_value, oid, str_value,
    timestamp_micros,
};

/// Writes the value at `row` of `array` in Postgres's binary format for
/// the type `pg_type`, or returns `false` for NULL.
pub fn write_binary(
    out: &mut Vec<u8>,
    array: &dyn Array,
    row: usize,
    pg_type: u32,
) -> Result<bool, EncodeError> {
    // An untyped NULL (`SELECT NULL`) has no null buffer: every row is NULL.
    if array.is_null(row) || array.data_type().is_null() {
        return Ok(false);
    }
    let mismatch = || EncodeError::Mismatch {
        arrow: array.data_type().to_string(),
        pg_type,
    };
    let any = array.as_any();
    let int = || int_value(array, row);
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
                None => match int() {
                    Some(v) => (v, 0),
                    // A value as Postgres's numeric text: computed (an
                    // average), or read as text.
                    None => {
                        let text = str_value(array, row).ok_or_else(mismatch)?;
                        write_numeric_text(out, text).ok_or_else(mismatch)?;
                        return Ok(true);
                    }
                },
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
            let v = str_value(array, row).ok_or_else(mismatch)?;
            out.extend_from_slice(v.as_bytes());
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
            let us = super::time_micros(array, row).ok_or_else(mismatch)?;
            out.extend_from_slice(&us.to_be_bytes());
        }
        oid::TIMESTAMP | oid::TIMESTAMPTZ => {
            let us = timestamp_micros(array, row).ok_or_else(mismatch)?;
            out.extend_from_slice(&(us - PG_EPOCH_OFFSET_US).to_be_bytes());
        }
        oid::INTERVAL => {
            let (months, days, micros) = super::interval_value(array, row).ok_or_else(mismatch)?;
            out.extend_from_slice(&micros.to_be_bytes());
            out.extend_from_slice(&days.to_be_bytes());
            out.extend_from_slice(&months.to_be_bytes());
        }
        // An array of a type above; else a type known only to Postgres
        // holding a string here: an enum, whose binary form is its label.
        _ => match super::array_element(pg_type) {
            Some(element) => {
                let list = any.downcast_ref::<ListArray>().ok_or_else(mismatch)?;
                write_array(out, list.value(row).as_ref(), element)?;
            }
            None => {
                let v = str_value(array, row).ok_or_else(mismatch)?;
                out.extend_from_slice(v.as_bytes());
            }
        },
    }
    Ok(true)
}

/// Writes a one-dimensional array as `array_send` does: dimensions (none
/// when empty), whether any element is NULL, the element type, the length
/// and lower bound 1, then each element's length (-1: NULL) and bytes.
fn write_array(out: &mut Vec<u8>, values: &dyn Array, element: u32) -> Result<(), EncodeError> {
    let n = values.len();
    out.extend_from_slice(&i32::from(n > 0).to_be_bytes());
    out.extend_from_slice(&i32::from(values.null_count() > 0).to_be_bytes());
    out.extend_from_slice(&element.to_be_bytes());
    if n > 0 {
        let n = i32::try_from(n).map_err(|_| EncodeError::OutOfRange("array"))?;
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&1i32.to_be_bytes());
    }
    for i in 0..n {
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        let len = if write_binary(out, values, i, element)? {
            i32::try_from(out.len() - at - 4).map_err(|_| EncodeError::OutOfRange("array"))?
        } else {
            -1
        };
        out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }
    Ok(())
}

/// Numeric text as Postgres writes it (`-123.4500`, `NaN`, `Infinity`) in
/// numeric's binary format; `None` when it is not such text.
fn write_numeric_text(out: &mut Vec<u8>, text: &str) -> Option<()> {
    let special = match text {
        "NaN" => Some(0xC000u16),
        "Infinity" => Some(0xD000),
        "-Infinity" => Some(0xF000),
        _ => None,
    };
    if let Some(sign) = special {
        for v in [0u16, 0, sign, 0] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        return Some(());
    }
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || frac.len() > i16::MAX as usize {
        return None;
    }
    write_numeric_digits(out, negative, int, frac);
    Some(())
}

/// A decimal (`value` scaled by 10^`scale`) in numeric's binary format:
/// base-10000 digits, weight, sign and display scale.
pub fn write_numeric_binary(out: &mut Vec<u8>, value: i128, scale: i8) {
    let (value, scale) = if scale < 0 {
        (value * 10i128.pow((-scale) as u32), 0u32)
    } else {
        (value, scale as u32)
    };
    let digits = value.unsigned_abs().to_string();
    let (int_part, frac_part) = if digits.len() > scale as usize {
        digits.split_at(digits.len() - scale as usize)
    } else {
        ("", digits.as_str())
    };
    let frac = format!("{:0>width$}", frac_part, width = scale as usize);
    write_numeric_digits(out, value < 0, int_part, &frac);
}

/// The decimal `int`.`frac` (ASCII digits; `frac`'s length is the
/// display scale) in numeric's binary format.
fn write_numeric_digits(out: &mut Vec<u8>, negative: bool, int_part: &str, frac: &str) {
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
    out.extend_from_slice(&(frac.len() as u16).to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgtypes::numeric_value;

    #[test]
    fn numeric_text_is_written_as_its_value() {
        for (text, v, scale) in [
            ("123.4500", 1_234_500i128, 4i8),
            ("-0.05", -5, 2),
            ("0.00", 0, 2),
            ("7", 7, 0),
            ("100000000", 100_000_000, 0),
            ("0.000001", 1, 6),
            ("-123456789.012", -123_456_789_012, 3),
        ] {
            let (mut from_text, mut from_value) = (Vec::new(), Vec::new());
            write_numeric_text(&mut from_text, text).unwrap();
            write_numeric_binary(&mut from_value, v, scale);
            assert_eq!(from_text, from_value, "{text}");
        }
        let mut nan = Vec::new();
        write_numeric_text(&mut nan, "NaN").unwrap();
        assert_eq!(nan, [0, 0, 0, 0, 0xC0, 0, 0, 0]);
        for bad in ["", "1e5", "1.2.3", "abc", "-"] {
            assert!(write_numeric_text(&mut Vec::new(), bad).is_none(), "{bad}");
        }
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
            assert_eq!(numeric_value(&out, scale).unwrap(), v, "{v} scale {scale}");
            assert_eq!(u16::from_be_bytes([out[6], out[7]]), scale as u16);
        }
        // 1234.5600 as Postgres sends numeric(10,4).
        let mut out = Vec::new();
        write_numeric_binary(&mut out, 12_345_600, 4);
        assert_eq!(out, [0, 2, 0, 0, 0, 0, 0, 4, 0x04, 0xd2, 0x15, 0xe0]);
    }
}
