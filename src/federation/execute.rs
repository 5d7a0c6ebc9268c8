//! Planning and running a federated statement: DataFusion's plan over the
//! session's scans, its rows written as Postgres writes them (or as COPY
//! data), and why a statement failed.

use std::sync::Arc;

use datafusion::common::DataFusionError;
use futures::StreamExt;

use super::link::{self, LinkError};
use super::planning::{self, plan_session, register_tables};
use super::scan::{self, ScanContext};
use super::{
    Federation, Out, arrays, average, cache, casts, cold, collation, constants, copy, enums,
    exactness, intervals, json, literals, numeric, topk,
};
use crate::pgtypes::TextSettings;
use crate::protocol::ErrorFields;

/// Why a federated statement failed.
pub(super) enum Failure {
    Link(LinkError),
    DataFusion(DataFusionError),
    Ours(ErrorFields),
}

impl Failure {
    pub(super) fn encode(&self) -> Vec<u8> {
        match self {
            Failure::Link(LinkError::Postgres(m)) => m.encode(),
            Failure::Link(e) => ErrorFields::error("08006", e.to_string()).encode(),
            Failure::Ours(e) => e.encode(),
            Failure::DataFusion(e) => {
                if let Some(m) = scan::postgres_error(e) {
                    return m.encode();
                }
                let root = e.find_root();
                if let DataFusionError::External(inner) = root {
                    if let Some(e) = inner.downcast_ref::<json::DataError>() {
                        return ErrorFields::error(e.code, e.message.clone()).encode();
                    }
                    if let Some(e) = inner.downcast_ref::<scan::LakeMoved>() {
                        return ErrorFields::error("40001", e.to_string()).encode();
                    }
                    if let Some(e) = inner.downcast_ref::<cold::ColdTierUnavailable>() {
                        // As a foreign-data wrapper reports a server it cannot reach.
                        tracing::warn!(error = %e, "cold tier unavailable");
                        return ErrorFields::error("HV00N", e.to_string()).encode();
                    }
                }
                let (code, message) = match root {
                    DataFusionError::ResourcesExhausted(m) => {
                        ("53200", format!("out of memory: {m}"))
                    }
                    DataFusionError::SchemaError(e, _) => (
                        "0A000",
                        format!(
                            "this statement over the history of a tiered table is not supported yet: {e}"
                        ),
                    ),
                    DataFusionError::NotImplemented(m) | DataFusionError::Plan(m) => (
                        "0A000",
                        format!(
                            "this statement over the history of a tiered table is not supported yet: {m}"
                        ),
                    ),
                    DataFusionError::ArrowError(e, _) => match e.as_ref() {
                        datafusion::arrow::error::ArrowError::DivideByZero => {
                            ("22012", "division by zero".to_string())
                        }
                        // An interval added to a time (see `intervals`).
                        datafusion::arrow::error::ArrowError::ComputeError(m)
                            if m == "Timestamp out of range" =>
                        {
                            ("22008", "timestamp out of range".to_string())
                        }
                        datafusion::arrow::error::ArrowError::CastError(m) => {
                            match invalid_input(m) {
                                Some(m) => ("22P02", m),
                                None => ("22000", m.clone()),
                            }
                        }
                        other => ("22000", other.to_string()),
                    },
                    other => ("XX000", other.to_string()),
                };
                tracing::debug!(error = %e, "federated statement failed");
                ErrorFields::error(code, message).encode()
            }
        }
    }
}

/// Postgres's message for text that does not read as a value of a type,
/// from the executor's (`Cannot cast string 'x' to value of Int32 type`).
fn invalid_input(cast_error: &str) -> Option<String> {
    let rest = cast_error.strip_prefix("Cannot cast string '")?;
    let (value, ty) = rest.rsplit_once("' to value of ")?;
    let ty = match ty.strip_suffix(" type")? {
        "Int16" => "smallint",
        "Int32" => "integer",
        "Int64" => "bigint",
        "Float32" => "real",
        "Float64" => "double precision",
        "Boolean" => "boolean",
        _ => return None,
    };
    Some(format!("invalid input syntax for type {ty}: \"{value}\""))
}

impl From<DataFusionError> for Failure {
    fn from(e: DataFusionError) -> Self {
        Failure::DataFusion(e)
    }
}

impl From<LinkError> for Failure {
    fn from(e: LinkError) -> Self {
        Failure::Link(e)
    }
}

/// What to run and how to answer.
pub(crate) struct Run<'a> {
    pub sql: &'a str,
    /// The columns as Postgres described them.
    pub fields: &'a [link::FieldDescription],
    /// Per column: 0 text, 1 binary.
    pub formats: Vec<i16>,
    /// `$n` values, typed as Postgres inferred them.
    pub params: Vec<datafusion::common::ScalarValue>,
    /// Send RowDescription first (simple protocol).
    pub row_description: bool,
    /// Rows to send now (Execute's row limit); the rest are returned.
    pub limit: Option<usize>,
    /// The session's role, shown with the cache entries it computed.
    pub user: &'a str,
    /// Rows written as the data of this `COPY … TO STDOUT` instead.
    pub copy: Option<&'a copy::CopyTo>,
}

impl<'a> Run<'a> {
    /// A run whose rows are kept, not sent: every column in binary, no
    /// parameters, no row limit.
    pub(crate) fn kept(sql: &'a str, fields: &'a [link::FieldDescription], user: &'a str) -> Self {
        Run {
            sql,
            fields,
            formats: vec![1; fields.len()],
            params: Vec::new(),
            row_description: false,
            limit: None,
            user,
            copy: None,
        }
    }
}

/// Rows a statement produced beyond an Execute's row limit, as DataRow
/// messages, kept for the portal's next Execute.
pub(crate) type Remainder = std::collections::VecDeque<Vec<u8>>;

/// Plans and runs the statement; writes RowDescription (if asked) and
/// DataRows. Returns the rows sent and those held back by the limit.
/// The executor's plan of `sql`, rewritten to mean what Postgres means:
/// dates and times read as Postgres reads them (ISO 8601), averages and
/// enums ordered and compared by value, times cast and truncated in the
/// session's zone, `= ANY` with Postgres's NULLs. What still differs is
/// refused by the caller.
pub(super) async fn executor_plan(
    session: &datafusion::prelude::SessionContext,
    ctx: &Arc<ScanContext>,
    sql: &str,
    text: &TextSettings,
) -> Result<datafusion::prelude::DataFrame, Failure> {
    let interval_columns = planning::interval_columns(ctx);
    let mut df = exactness::plan_sql(session, sql, &interval_columns)
        .await
        .map_err(|e| planning::unreadable(ctx, e, sql))?;
    if let Some(m) = planning::numeric_text_refusal(df.logical_plan(), ctx) {
        return Err(Failure::Ours(ErrorFields::error("0A000", m)));
    }
    let read = literals::read_by_postgres(df.logical_plan().clone(), ctx).await?;
    if read.transformed {
        df = datafusion::prelude::DataFrame::new(session.state(), read.data);
    }
    let zone = ctx.time_zone.clone();
    let in_zone = move |plan| casts::rewrite(plan, &zone);
    // `= ANY` (or `= SOME`) is the only source of what `any_as_postgres`
    // rewrites.
    let reads_intervals = !interval_columns.is_empty();
    let lower = sql.to_ascii_lowercase();
    let any = lower.contains("any") || lower.contains("some");
    // A value becomes text only through a cast, `||` or `concat`.
    let becomes_text = ["text", "char", "cast", "::", "||", "concat"]
        .iter()
        .any(|w| lower.contains(w));
    let rewrites: [&dyn Fn(_) -> _; 6] = [
        &average::in_value_order,
        &|plan| intervals::as_postgres(plan, sql, reads_intervals),
        &enums::in_label_order,
        &in_zone,
        &|plan| {
            if any {
                arrays::any_as_postgres(plan)
            } else {
                Ok(datafusion::common::tree_node::Transformed::no(plan))
            }
        },
        &|plan| {
            if becomes_text {
                casts::as_postgres_text(plan, text)
            } else {
                Ok(datafusion::common::tree_node::Transformed::no(plan))
            }
        },
    ];
    for rewrite in rewrites {
        let t = rewrite(df.logical_plan().clone())?;
        if t.transformed {
            df = datafusion::prelude::DataFrame::new(session.state(), t.data);
        }
    }
    Ok(df)
}

pub(super) async fn execute(
    run: &Run<'_>,
    ctx: &Arc<ScanContext>,
    federation: &Federation,
    text: &TextSettings,
    out: &mut Out<'_>,
) -> Result<(u64, Remainder), Failure> {
    let mut statements = super::sqltext::parse(run.sql);
    // Constant calls to Postgres's formatting functions, as values.
    let folded = match statements.as_deref() {
        Ok([statement]) => constants::fold(statement, ctx).await?,
        _ => None,
    };
    if let Some(f) = &folded {
        statements = super::sqltext::parse(f);
    }
    let (sql, fields) = (folded.as_deref().unwrap_or(run.sql), run.fields);
    let mut normalized = None;
    let mut computed = Vec::new();
    if let Ok([statement]) = statements.as_deref() {
        computed = exactness::check(statement, fields)
            .map_err(|m| Failure::Ours(ErrorFields::error("0A000", m)))?;
        normalized = Some(statement.to_string());
    }
    let session = plan_session(ctx, federation);
    register_tables(sql, ctx, federation, &session).await?;
    // A plain table's numeric without a precision, returned as Postgres
    // wrote it, is exact as it is.
    computed.retain(|&i| !planning::returned_as_text(ctx, &fields[i]));
    let mut df = executor_plan(&session, ctx, sql, text).await?;
    if let Some(what) = json::refusal(df.logical_plan())
        .or_else(|| enums::refusal(df.logical_plan()))
        .or_else(|| average::refusal(df.logical_plan()))
        .or_else(|| casts::refusal(df.logical_plan()))
        .or_else(|| arrays::refusal(df.logical_plan()))
        .or_else(|| {
            intervals::refusal(
                df.logical_plan(),
                !planning::interval_columns(ctx).is_empty(),
                *ctx.time_zone == *crate::pgtypes::executor_zone(chrono_tz::UTC),
            )
        })
        .or_else(|| {
            ctx.collated
                .load(std::sync::atomic::Ordering::Relaxed)
                .then(|| collation::refusal(df.logical_plan()))
                .flatten()
        })
    {
        return Err(Failure::Ours(ErrorFields::error(
            "0A000",
            format!("{what} is not supported yet in reads of the history of a tiered table"),
        )));
    }
    // A plan that aggregates or takes the first rows in an order reads its
    // hot rows otherwise (see `cache` and `topk`): its plain cursors would
    // go unread.
    if !reads_rows_as_they_are(df.logical_plan()) {
        ctx.declare_hot_early
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }
    if !computed.is_empty() {
        let scaled =
            numeric::at_postgres_scale(df.logical_plan().clone(), &computed).map_err(|i| {
                Failure::Ours(ErrorFields::error(
                    "0A000",
                    planning::left_out_among(ctx, fields)
                        .unwrap_or_else(|| exactness::computed_numeric(&fields[i])),
                ))
            })?;
        df = datafusion::prelude::DataFrame::new(session.state(), scaled);
    }
    if !run.params.is_empty() {
        let inferred = df.logical_plan().get_parameter_types()?;
        let mut values = Vec::with_capacity(run.params.len());
        for (i, v) in run.params.iter().enumerate() {
            let v = match inferred.get(&format!("${}", i + 1)) {
                Some(Some(t)) if t != &v.data_type() => v.cast_to(t)?,
                _ => v.clone(),
            };
            values.push(v);
        }
        df = df.with_param_values(values)?;
    }
    let schema = df.schema().inner().clone();
    if schema.fields().len() != fields.len() {
        // A wildcard over a table with columns left out, or a bug.
        return Err(Failure::Ours(match planning::left_out_among(ctx, fields) {
            Some(m) => ErrorFields::error("0A000", m),
            None => ErrorFields::error(
                "XX000",
                "the federated plan does not have the columns Postgres described",
            ),
        }));
    }
    check_numeric_scales(&schema, fields)?;
    let task = planning::task_context(&df, federation);
    let plan = physical_plan(
        df,
        &task,
        ctx,
        federation,
        &cache::Statement {
            sql: normalized.as_deref().unwrap_or(sql),
            params: &run.params,
            output: text,
            user: run.user,
        },
    )
    .await?;
    let mut stream = datafusion::physical_plan::execute_stream(plan, task)?;
    if let Some(c) = run.copy {
        return copy_out(c, &mut stream, fields, text, out).await;
    }
    if run.row_description {
        let mut row_desc = Vec::new();
        put_row_description(&mut row_desc, fields);
        out.buf.extend(row_desc);
    }
    let mut rows = 0u64;
    let mut held = Remainder::new();
    let mut row_buf = Vec::with_capacity(256);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        for r in 0..batch.num_rows() {
            row_buf.clear();
            row_buf.extend_from_slice(&(fields.len() as i16).to_be_bytes());
            for (i, (c, f)) in batch.columns().iter().zip(fields).enumerate() {
                let len_at = row_buf.len();
                row_buf.extend_from_slice(&[0, 0, 0, 0]);
                let written = if run.formats.get(i) == Some(&1) {
                    crate::pgtypes::write_binary(&mut row_buf, c.as_ref(), r, f.type_oid)
                } else {
                    crate::pgtypes::write_text(&mut row_buf, c.as_ref(), r, f.type_oid, text)
                };
                let present = written
                    .map_err(|e| Failure::Ours(ErrorFields::error("0A000", e.to_string())))?;
                let len: i32 = if present {
                    (row_buf.len() - len_at - 4) as i32
                } else {
                    -1
                };
                row_buf[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
            }
            if run.limit.is_some_and(|l| rows as usize >= l) {
                let mut m = Vec::with_capacity(row_buf.len() + 5);
                crate::protocol::put_message(&mut m, b'D', &row_buf);
                held.push_back(m);
            } else {
                out.row(&row_buf);
                rows += 1;
            }
        }
        out.flush_if_full().await;
        if !out.ok {
            break;
        }
    }
    Ok((rows, held))
}

/// Writes the rows of a `COPY … TO STDOUT` as its data. Returns the rows
/// copied.
pub(super) async fn copy_out(
    c: &copy::CopyTo,
    stream: &mut datafusion::execution::SendableRecordBatchStream,
    fields: &[link::FieldDescription],
    text: &TextSettings,
    out: &mut Out<'_>,
) -> Result<(u64, Remainder), Failure> {
    let mut encoder = copy::Encoder::new(c, fields);
    encoder.begin(&mut out.buf, fields);
    let mut rows = 0u64;
    let mut line = Vec::with_capacity(256);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        for r in 0..batch.num_rows() {
            encoder
                .row(&mut line, batch.columns(), r, fields, text)
                .map_err(|e| Failure::Ours(ErrorFields::error("0A000", e.to_string())))?;
            crate::protocol::put_message(&mut out.buf, b'd', &line);
            rows += 1;
        }
        out.flush_if_full().await;
        if !out.ok {
            break;
        }
    }
    encoder.end(&mut out.buf);
    Ok((rows, Remainder::new()))
}

/// The physical plan of a federated statement: the executor's, with
/// aggregate FILTERs that leave NULL conditions out, hot top-k and partial
/// aggregates computed by Postgres, and cold halves read through the cache
/// of cold partial results. `sql`: the statement as the SQL parser writes
/// it back.
pub(super) async fn physical_plan(
    df: datafusion::prelude::DataFrame,
    task: &Arc<datafusion::execution::TaskContext>,
    ctx: &Arc<ScanContext>,
    federation: &Federation,
    statement: &cache::Statement<'_>,
) -> Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>, DataFusionError> {
    let plan = super::joins::ESTIMATES
        .scope(ctx.estimates.clone(), df.create_physical_plan())
        .await?;
    let plan = exactness::null_filters_exclude(plan)?;
    let plan = topk::rewrite(plan, ctx, task).await?;
    let leaves = ctx.leaves.lock().map(|l| l.clone()).unwrap_or_default();
    cache::rewrite(plan, ctx, &leaves, &federation.cache, statement)
}

/// Refuses a numeric column of declared scale that would come out with
/// another scale.
pub(super) fn check_numeric_scales(
    schema: &datafusion::arrow::datatypes::Schema,
    fields: &[link::FieldDescription],
) -> Result<(), Failure> {
    use datafusion::arrow::datatypes::DataType;
    for (f, field) in fields.iter().zip(schema.fields()) {
        if f.type_oid != crate::pgtypes::oid::NUMERIC || f.typmod < 4 {
            continue;
        }
        let declared = ((f.typmod - 4) & 0x7ff) as i8;
        if let DataType::Decimal128(_, scale) = field.data_type()
            && declared != *scale
        {
            return Err(Failure::Ours(ErrorFields::error(
                "0A000",
                format!(
                    "column {:?}: numeric({}) results computed over the history of a tiered table are not supported yet",
                    f.name, declared
                ),
            )));
        }
    }
    Ok(())
}

pub(super) fn put_row_description(out: &mut Vec<u8>, fields: &[link::FieldDescription]) {
    let mut body = Vec::new();
    body.extend_from_slice(&(fields.len() as i16).to_be_bytes());
    for f in fields {
        body.extend_from_slice(f.name.as_bytes());
        body.push(0);
        body.extend_from_slice(&f.table_oid.to_be_bytes());
        body.extend_from_slice(&f.column.to_be_bytes());
        body.extend_from_slice(&f.type_oid.to_be_bytes());
        body.extend_from_slice(&f.type_size.to_be_bytes());
        body.extend_from_slice(&f.typmod.to_be_bytes());
        body.extend_from_slice(&0i16.to_be_bytes());
    }
    crate::protocol::put_message(out, b'T', &body);
}

/// Whether `plan` (its subqueries too) neither aggregates nor limits its
/// rows: its scans' rows are read as they are.
fn reads_rows_as_they_are(plan: &datafusion::logical_expr::LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::logical_expr::{LogicalPlan, Sort};
    let mut plain = true;
    let _ = plan.apply_with_subqueries(|p| {
        if matches!(
            p,
            LogicalPlan::Aggregate(_)
                | LogicalPlan::Distinct(_)
                | LogicalPlan::Limit(_)
                | LogicalPlan::Sort(Sort { fetch: Some(_), .. })
        ) {
            plain = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    plain
}

#[cfg(test)]
mod tests {
    use super::reads_rows_as_they_are;

    #[test]
    fn text_that_is_no_number_reads_as_postgres_says() {
        assert_eq!(
            super::invalid_input("Cannot cast string 'abc' to value of Int32 type").as_deref(),
            Some("invalid input syntax for type integer: \"abc\"")
        );
        assert_eq!(
            super::invalid_input("Cannot cast string 'it's' to value of Float64 type").as_deref(),
            Some("invalid input syntax for type double precision: \"it's\"")
        );
        assert_eq!(
            super::invalid_input("Cannot cast string '1' to value of Decimal128(10, 2) type"),
            None
        );
    }

    #[tokio::test]
    async fn only_plain_reads_declare_their_cursors_early() {
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.sql("CREATE TABLE t (a int, b int)").await.unwrap();
        for (sql, plain) in [
            ("SELECT * FROM t WHERE a = 1", true),
            ("SELECT a FROM t ORDER BY b", true),
            (
                "SELECT * FROM t WHERE a IN (SELECT b FROM t WHERE b > 2)",
                true,
            ),
            ("SELECT count(*) FROM t", false),
            ("SELECT DISTINCT a FROM t", false),
            ("SELECT * FROM t ORDER BY a LIMIT 10", false),
            ("SELECT * FROM t LIMIT 10", false),
            ("SELECT * FROM t WHERE a > (SELECT max(b) FROM t)", false),
        ] {
            let df = ctx.sql(sql).await.unwrap();
            assert_eq!(reads_rows_as_they_are(df.logical_plan()), plain, "{sql}");
        }
    }
}
