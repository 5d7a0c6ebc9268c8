//! EXPLAIN of a federated read, answered by thermocline: the route, the SQL
//! each hot scan sent to Postgres, the Iceberg snapshot and watermark read,
//! and DataFusion's plan (run, with rows and time per operator, for
//! EXPLAIN ANALYZE).

use std::sync::Arc;

use super::scan::ScanContext;
use super::{
    Failure, Federation, Out, link, physical_plan, plan_session, put_row_description,
    register_tables,
};

/// For `EXPLAIN [ANALYZE] <read>`: the read's SQL and whether to run it.
pub(super) fn explain_of(sql: &str) -> Option<(String, bool)> {
    use datafusion::sql::sqlparser::ast::{Statement, UtilityOption};
    let statements = super::sqltext::parse(sql).ok()?;
    let [
        Statement::Explain {
            statement,
            analyze,
            options,
            ..
        },
    ] = statements.as_slice()
    else {
        return None;
    };
    let analyze = *analyze
        || options.iter().flatten().any(|o: &UtilityOption| {
            o.name.value.eq_ignore_ascii_case("analyze")
                && o.arg.as_ref().is_none_or(|a| {
                    !matches!(a.to_string().to_lowercase().as_str(), "false" | "off" | "0")
                })
        });
    Some((statement.to_string(), analyze))
}

/// Answers EXPLAIN of a federated read: the route, what each scan sent to
/// Postgres, the Iceberg snapshot and watermark read, and DataFusion's plan
/// (with rows and time per operator after ANALYZE). One text column, as
/// Postgres's EXPLAIN.
pub(super) async fn explain(
    sql: &str,
    analyze: bool,
    ctx: &Arc<ScanContext>,
    federation: &Federation,
    fields: &[link::FieldDescription],
    (user, text): (&str, &crate::pgtypes::TextSettings),
    out: &mut Out<'_>,
) -> Result<u64, Failure> {
    use datafusion::physical_plan::display::DisplayableExecutionPlan;
    let folded = super::constants::folded(sql, ctx).await?;
    let sql = folded.as_deref().unwrap_or(sql);
    let session = plan_session(ctx, federation);
    register_tables(sql, ctx, federation, &session).await?;
    let df = super::executor_plan(&session, ctx, sql, text).await?;
    let task = super::planning::task_context(&df, federation);
    let statement = super::cache::Statement {
        sql,
        params: &[],
        output: text,
        user,
    };
    let plan = physical_plan(df, &task, ctx, federation, &statement).await?;
    let mut lines = vec![
        "Federated read (thermocline): hot rows from Postgres, history from Iceberg".to_string(),
    ];
    for t in ctx.trace.lock().map(|t| t.clone()).unwrap_or_default() {
        lines.push(format!("  {t}"));
    }
    let lake_scans = ctx.lake_scans.lock().map(|s| s.clone()).unwrap_or_default();
    for (table, pruning) in &lake_scans {
        if let Some(r) = super::cold::lake_reads(table, pruning).await {
            lines.push(format!(
                "  Iceberg files of {}: {} of {} scanned, {} pruned",
                table.identifier(),
                r.files_read,
                r.files,
                r.files.saturating_sub(r.files_read)
            ));
            let read = &r.partitions_read;
            let names = match read.len() {
                0 => String::new(),
                1..=6 => format!(" ({})", read.join(", ")),
                n => format!(" ({} … {})", read[0], read[n - 1]),
            };
            lines.push(format!(
                "  Iceberg partitions of {}: {} of {} scanned{names}, {} pruned",
                table.identifier(),
                read.len(),
                r.partitions,
                r.partitions.saturating_sub(read.len())
            ));
        }
    }
    let shown = if analyze {
        let started = std::time::Instant::now();
        let batches = datafusion::physical_plan::collect(plan.clone(), task).await?;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        lines.push(format!(
            "  Rows: {rows}  Execution time: {:.3} ms",
            started.elapsed().as_secs_f64() * 1000.0
        ));
        DisplayableExecutionPlan::with_metrics(plan.as_ref())
            .indent(true)
            .to_string()
    } else {
        DisplayableExecutionPlan::new(plan.as_ref())
            .indent(true)
            .to_string()
    };
    lines.push("  Plan:".to_string());
    lines.extend(shown.lines().map(|l| format!("    {l}")));
    let mut row_desc = Vec::new();
    put_row_description(&mut row_desc, fields);
    out.buf.extend(row_desc);
    for line in &lines {
        let mut row = Vec::with_capacity(line.len() + 6);
        row.extend_from_slice(&1i16.to_be_bytes());
        row.extend_from_slice(&(line.len() as i32).to_be_bytes());
        row.extend_from_slice(line.as_bytes());
        crate::protocol::put_message(&mut out.buf, b'D', &row);
    }
    Ok(lines.len() as u64)
}
