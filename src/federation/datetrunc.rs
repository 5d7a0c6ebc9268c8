//! `date_trunc` over many timestamps, one calendar computation per bucket.
//!
//! DataFusion's `date_trunc` works out the calendar for every value: for a
//! unit of an hour or more in a time zone, or of a week or more without
//! one, a conversion to local time and back for each row. Over the cold
//! tier's millions of rows that was half of a monthly aggregate's time.
//! Values read from the lake come sorted by time, so consecutive values
//! mostly share their bucket: this version works out a bucket's start and
//! end once, with DataFusion's own function, and gives every value inside
//! them that start. Its results are DataFusion's, value for value.
//!
//! A bucket `[start, end)` is taken only when `date_trunc(start) = start`
//! and `date_trunc(end - 1) = start`. `date_trunc` never decreases as its
//! argument grows (DataFusion relies on that too, to keep sort orders
//! through it), so every value in between truncates to `start`. When a
//! check fails, as it can around a daylight-saving change, the batch is
//! computed value by value as before.

use std::any::Any;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, PrimitiveArray};
use datafusion::arrow::datatypes::{
    ArrowTimestampType, DataType, FieldRef, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
    sort_properties::{ExprProperties, SortProperties},
};

/// Batches shorter than this are left to DataFusion's function.
const MIN_ROWS: usize = 64;

/// `date_trunc`, registered in place of DataFusion's under the same name.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct BucketedDateTrunc {
    inner: datafusion::functions::datetime::date_trunc::DateTruncFunc,
}

impl BucketedDateTrunc {
    pub(crate) fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            inner: Default::default(),
        })
    }
}

/// The unit a call names, when it is a string literal.
fn unit_of(args: &ScalarFunctionArgs) -> Option<&str> {
    match &args.args[0] {
        ColumnarValue::Scalar(
            ScalarValue::Utf8(Some(u))
            | ScalarValue::Utf8View(Some(u))
            | ScalarValue::LargeUtf8(Some(u)),
        ) => Some(u),
        _ => None,
    }
}

/// `date_trunc('hour', t)` of a timestamp with a time zone, as Postgres
/// computes it: the local hour's start at the value's own UTC offset.
/// Postgres looks the zone up again only for days and longer units, so in
/// the hour a fall-back change repeats, the second 01:45 truncates to the
/// second 01:00 (DataFusion would give the first). The result is `t` less
/// its local minutes and seconds; an offset is looked up once per hour
/// that starts and ends at the same offset.
fn hour_keeping_offset(args: &ScalarFunctionArgs) -> Result<Option<ColumnarValue>> {
    if !unit_of(args).is_some_and(|u| u.eq_ignore_ascii_case("hour")) {
        return Ok(None);
    }
    let (values, scalar) = match &args.args[1] {
        ColumnarValue::Array(a) => (a.clone(), false),
        ColumnarValue::Scalar(v) => (v.to_array()?, true),
    };
    let DataType::Timestamp(tu, Some(zone)) = values.data_type().clone() else {
        return Ok(None);
    };
    let out = match tu {
        TimeUnit::Second => hours::<TimestampSecondType>(&values, &zone, 1)?,
        TimeUnit::Millisecond => hours::<TimestampMillisecondType>(&values, &zone, 1_000)?,
        TimeUnit::Microsecond => hours::<TimestampMicrosecondType>(&values, &zone, 1_000_000)?,
        TimeUnit::Nanosecond => hours::<TimestampNanosecondType>(&values, &zone, 1_000_000_000)?,
    };
    let Some(out) = out else {
        return Ok(None);
    };
    Ok(Some(if scalar {
        ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
    } else {
        ColumnarValue::Array(out)
    }))
}

/// The hour starts of `values` (`per_second` units a second) in `zone`.
fn hours<T: ArrowTimestampType>(
    values: &ArrayRef,
    zone: &Arc<str>,
    per_second: i64,
) -> Result<Option<ArrayRef>> {
    use chrono::{Offset, TimeZone};
    let (Some(values), Ok(tz)) = (
        values.as_any().downcast_ref::<PrimitiveArray<T>>(),
        zone.parse::<datafusion::arrow::array::timezone::Tz>(),
    ) else {
        return Ok(None);
    };
    let hour = 3600 * per_second;
    let offset = |v: i64| -> Option<i64> {
        let secs = v.div_euclid(per_second);
        let utc = chrono::DateTime::from_timestamp(secs, 0)?.naive_utc();
        Some(i64::from(tz.offset_from_utc_datetime(&utc).fix().local_minus_utc()) * per_second)
    };
    let mut out = Vec::with_capacity(values.len());
    let (mut start, mut end) = (0i64, i64::MIN);
    for (i, &v) in values.values().iter().enumerate() {
        if values.is_null(i) {
            out.push(0);
            continue;
        }
        if !(start <= v && v < end) {
            let Some(off) = offset(v) else {
                return Ok(None);
            };
            let s = v - (v + off).rem_euclid(hour);
            if offset(s) == Some(off) && offset(s + hour - 1) == Some(off) {
                (start, end) = (s, s + hour);
            } else {
                (start, end) = (0, i64::MIN);
                out.push(s);
                continue;
            }
        }
        out.push(start);
    }
    Ok(Some(Arc::new(
        PrimitiveArray::<T>::new(out.into(), values.nulls().cloned()).with_timezone(zone.clone()),
    )))
}

/// A step from a bucket's start that lands in the next bucket, never past
/// it: half a bucket more than the longest one, and less than two of the
/// shortest (DST changes make days 23 to 25 hours long). `None` for units
/// DataFusion already truncates by arithmetic.
fn step_micros(unit: &str, zoned: bool) -> Option<i64> {
    const HOUR: i64 = 3_600_000_000;
    const DAY: i64 = 24 * HOUR;
    Some(match unit {
        "day" if zoned => 36 * HOUR,
        "week" => 10 * DAY,
        "month" => 45 * DAY,
        "quarter" => 135 * DAY,
        "year" => 548 * DAY,
        _ => return None,
    })
}

impl ScalarUDFImpl for BucketedDateTrunc {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn output_ordering(&self, input: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(input)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let Some(out) = hour_keeping_offset(&args)? {
            return Ok(out);
        }
        let bucketed = match (unit_of(&args), &args.args[1]) {
            (Some(unit), ColumnarValue::Array(values)) if values.len() >= MIN_ROWS => {
                match values.data_type() {
                    DataType::Timestamp(tu, tz) => {
                        step_micros(&unit.to_lowercase(), tz.is_some()).map(|step| (*tu, step))
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        let Some((tu, step)) = bucketed else {
            return self.inner.invoke_with_args(args);
        };
        let result = match tu {
            TimeUnit::Second => self.bucketed::<TimestampSecondType>(&args, step / 1_000_000)?,
            TimeUnit::Millisecond => {
                self.bucketed::<TimestampMillisecondType>(&args, step / 1_000)?
            }
            TimeUnit::Microsecond => self.bucketed::<TimestampMicrosecondType>(&args, step)?,
            TimeUnit::Nanosecond => {
                self.bucketed::<TimestampNanosecondType>(&args, step * 1_000)?
            }
        };
        match result {
            Some(array) => Ok(ColumnarValue::Array(array)),
            None => self.inner.invoke_with_args(args),
        }
    }
}

impl BucketedDateTrunc {
    /// The truncated values, or `None` where a bucket failed its checks.
    fn bucketed<T: ArrowTimestampType>(
        &self,
        args: &ScalarFunctionArgs,
        step: i64,
    ) -> Result<Option<ArrayRef>> {
        let ColumnarValue::Array(values) = &args.args[1] else {
            return Ok(None);
        };
        let Some(values) = values.as_any().downcast_ref::<PrimitiveArray<T>>() else {
            return Ok(None);
        };
        let tz = match values.data_type() {
            DataType::Timestamp(_, tz) => tz.clone(),
            _ => return Ok(None),
        };
        // date_trunc of a few values, with DataFusion's function.
        let trunc = |points: Vec<i64>| -> Result<Option<Vec<i64>>> {
            let n = points.len();
            let array = PrimitiveArray::<T>::from_iter_values(points).with_timezone_opt(tz.clone());
            let out = self.inner.invoke_with_args(ScalarFunctionArgs {
                args: vec![args.args[0].clone(), ColumnarValue::Array(Arc::new(array))],
                arg_fields: args.arg_fields.clone(),
                number_rows: n,
                return_field: args.return_field.clone(),
                config_options: args.config_options.clone(),
            })?;
            let ColumnarValue::Array(out) = out else {
                return Ok(None);
            };
            Ok(out
                .as_any()
                .downcast_ref::<PrimitiveArray<T>>()
                .filter(|a| a.null_count() == 0)
                .map(|a| a.values().to_vec()))
        };
        // The bucket holding `v`, checked as the module comment says.
        let bucket = |v: i64| -> Result<Option<(i64, i64)>> {
            let Some(&[start]) = trunc(vec![v])?.as_deref() else {
                return Ok(None);
            };
            let Some(&[end]) = trunc(vec![start.saturating_add(step)])?.as_deref() else {
                return Ok(None);
            };
            if !(start <= v && v < end) {
                return Ok(None);
            }
            match trunc(vec![start, end - 1])?.as_deref() {
                Some(&[a, b]) if a == start && b == start => Ok(Some((start, end))),
                _ => Ok(None),
            }
        };
        let mut out = Vec::with_capacity(values.len());
        let (mut start, mut end) = (0i64, i64::MIN);
        for (i, &v) in values.values().iter().enumerate() {
            if values.is_null(i) {
                out.push(0);
                continue;
            }
            if !(start <= v && v < end) {
                match bucket(v)? {
                    Some((s, e)) => (start, end) = (s, e),
                    None => return Ok(None),
                }
            }
            out.push(start);
        }
        let array =
            PrimitiveArray::<T>::new(out.into(), values.nulls().cloned()).with_timezone_opt(tz);
        Ok(Some(Arc::new(array)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Field;

    /// Both functions over the same values, in zones with DST changes,
    /// half-hour offsets and none: equal value for value.
    #[test]
    fn equals_datafusions_date_trunc() {
        let fast = BucketedDateTrunc::udf();
        let slow = datafusion::functions::datetime::date_trunc();
        // Every 7 minutes over two years, with a NULL now and then, and
        // some values out of order.
        let start = 1_700_000_000_000_000i64;
        let mut values: Vec<Option<i64>> = (0..150_000)
            .map(|i| (i % 997 != 0).then_some(start + i * 7 * 60_000_000))
            .collect();
        values.swap(10, 90_000);
        values.swap(5_000, 120_000);
        let (mut taken, mut tried) = (0, 0);
        for tz in [
            None,
            Some("America/New_York"),
            Some("Australia/Lord_Howe"),
            Some("Asia/Kathmandu"),
            Some("UTC"),
        ] {
            let tz: Option<Arc<str>> = tz.map(Arc::from);
            let array = PrimitiveArray::<TimestampMicrosecondType>::from(values.clone())
                .with_timezone_opt(tz.clone());
            let field: FieldRef = Arc::new(Field::new("t", array.data_type().clone(), true));
            for unit in ["hour", "day", "week", "month", "quarter", "year", "minute"] {
                for chunk in [8192, 100_000] {
                    for offset in (0..array.len()).step_by(chunk) {
                        let part = array.slice(offset, chunk.min(array.len() - offset));
                        let args = || ScalarFunctionArgs {
                            args: vec![
                                ColumnarValue::Scalar(ScalarValue::Utf8(Some(unit.into()))),
                                ColumnarValue::Array(Arc::new(part.clone())),
                            ],
                            arg_fields: vec![
                                Arc::new(Field::new("u", DataType::Utf8, false)),
                                field.clone(),
                            ],
                            number_rows: part.len(),
                            return_field: field.clone(),
                            config_options: Default::default(),
                        };
                        let call = |udf: &ScalarUDF| {
                            udf.invoke_with_args(args())
                                .unwrap()
                                .into_array(part.len())
                                .unwrap()
                        };
                        let got = call(&fast);
                        if unit == "hour" && tz.is_some() {
                            // Postgres's rule, value by value: less the
                            // local minutes and seconds at its own offset.
                            let zone: datafusion::arrow::array::timezone::Tz =
                                tz.as_deref().unwrap().parse().unwrap();
                            let got = got
                                .as_any()
                                .downcast_ref::<PrimitiveArray<TimestampMicrosecondType>>()
                                .unwrap();
                            for (i, v) in part
                                .as_any()
                                .downcast_ref::<PrimitiveArray<TimestampMicrosecondType>>()
                                .unwrap()
                                .iter()
                                .enumerate()
                            {
                                use chrono::{Offset, TimeZone};
                                let Some(v) = v else {
                                    assert!(got.is_null(i));
                                    continue;
                                };
                                let utc =
                                    chrono::DateTime::from_timestamp(v.div_euclid(1_000_000), 0)
                                        .unwrap()
                                        .naive_utc();
                                let off = i64::from(
                                    zone.offset_from_utc_datetime(&utc).fix().local_minus_utc(),
                                ) * 1_000_000;
                                assert_eq!(got.value(i), v - (v + off).rem_euclid(3_600_000_000));
                            }
                            continue;
                        }
                        assert_eq!(&got, &call(&slow), "{unit} in {tz:?} at {offset}");
                        let bucketed = fast
                            .inner()
                            .as_any()
                            .downcast_ref::<BucketedDateTrunc>()
                            .unwrap()
                            .bucketed::<TimestampMicrosecondType>(
                                &args(),
                                step_micros(unit, true).unwrap_or(1),
                            )
                            .unwrap();
                        taken += usize::from(bucketed.is_some());
                        tried += 1;
                    }
                }
            }
        }
        // The buckets were used, not only the fallback: all but the
        // batches holding a DST change (and the minutes, left alone).
        assert!(
            taken * 10 > tried * 7,
            "bucketed {taken} of {tried} batches"
        );
    }
}
