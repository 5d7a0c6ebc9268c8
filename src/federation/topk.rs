//! `ORDER BY … LIMIT k` over a tiered table.
//!
//! The executor's top-k reads every row of both tiers. Instead, Postgres
//! computes the hot rows' first k itself (with the statement's filters, and
//! its indexes): the first k of all rows are among those and the cold
//! rows' first k. A hot row dropped as a straggler the lake holds is still
//! counted there, as its lake copy.
//!
//! When the order starts with the time column descending — "the latest
//! rows", which dashboards ask for all the time — and at least k of the
//! hot rows Postgres returns are at or after the watermark W, no cold row
//! (every one is older than W) can be among the first k: the lake is not
//! read at all.
//!
//! The hot rows are read while planning, after the lake: as for hot
//! aggregates, the lake is checked not to have changed meanwhile unless
//! the statement's queries share one snapshot.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use futures::TryStreamExt;
use futures::future::BoxFuture;

use super::cache::{TieredLeaf, leaf_of, replace_leaf};
use super::scan::ScanContext;

/// The largest k read this way: the hot rows are held in memory.
const MAX_K: usize = 10_000;

/// The plan with each top-k over a tiered scan computed as above.
pub(crate) async fn rewrite(
    plan: Arc<dyn ExecutionPlan>,
    ctx: &Arc<ScanContext>,
    task: &Arc<TaskContext>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let leaves = ctx.leaves.lock().map(|l| l.clone()).unwrap_or_default();
    if leaves.is_empty() {
        return Ok(plan);
    }
    node(plan, ctx, &leaves, task).await
}

fn node<'a>(
    plan: Arc<dyn ExecutionPlan>,
    ctx: &'a Arc<ScanContext>,
    leaves: &'a [Arc<TieredLeaf>],
    task: &'a Arc<TaskContext>,
) -> BoxFuture<'a, Result<Arc<dyn ExecutionPlan>>> {
    Box::pin(async move {
        if let Some(sort) = plan.as_any().downcast_ref::<SortExec>()
            && let Some(k) = sort.fetch().filter(|&k| k <= MAX_K)
            && let Some(input) = top(sort, k, ctx, leaves, task).await?
        {
            return plan.clone().with_new_children(vec![input]);
        }
        let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
        if children.is_empty() {
            return Ok(plan);
        }
        let mut rewritten = Vec::with_capacity(children.len());
        for c in children {
            rewritten.push(node(c, ctx, leaves, task).await?);
        }
        plan.with_new_children(rewritten)
    })
}

/// The sort's input reading the hot rows' first `k` (and the cold rows,
/// unless they cannot be among the first `k`); `None` when its input is
/// not a row-by-row chain over a tiered scan whose filters and order
/// Postgres evaluates as the executor does.
async fn top(
    sort: &SortExec,
    k: usize,
    ctx: &Arc<ScanContext>,
    leaves: &[Arc<TieredLeaf>],
    task: &Arc<TaskContext>,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let input = sort.input();
    let Some((columns, filters)) = super::hotagg::chain(input) else {
        return Ok(None);
    };
    let Some((scan, leaf)) = tiered_leaf(input, leaves) else {
        return Ok(None);
    };
    let [_, cold] = scan.partitions().as_slice() else {
        return Ok(None);
    };
    let schema = input.schema();
    let mut order = Vec::new();
    for s in sort.expr().iter() {
        // Postgres orders strings by collation, the executor byte by byte.
        let comparable = s.expr.data_type(&schema).is_ok_and(|t| {
            t.is_numeric()
                || matches!(
                    t,
                    DataType::Boolean
                        | DataType::Date32
                        | DataType::Timestamp(_, _)
                        | DataType::Decimal128(_, _)
                )
        });
        let Some(sql) = super::hotagg::sql_of(&s.expr, &columns, &schema).filter(|_| comparable)
        else {
            return Ok(None);
        };
        order.push(format!(
            "{sql} {} NULLS {}",
            if s.options.descending { "DESC" } else { "ASC" },
            if s.options.nulls_first {
                "FIRST"
            } else {
                "LAST"
            }
        ));
    }
    let recipe = &leaf.recipe;
    let (hot, sql) = recipe.top(ctx, &filters, &order.join(", "), k);
    let batches: Vec<RecordBatch> = hot.execute(task.clone()).try_collect().await?;

    let first = &sort.expr()[0];
    let latest_first = first.options.descending
        && first
            .expr
            .as_any()
            .downcast_ref::<Column>()
            .is_some_and(|c| columns.get(c.index()).map(String::as_str) == Some(recipe.time_sql()));
    let skip_cold = latest_first && at_or_after_watermark(&batches, recipe) >= k;
    if skip_cold && let Ok(mut scans) = ctx.lake_scans.lock() {
        // Its files are not read: EXPLAIN counts none.
        if let Some(at) = scans
            .iter()
            .position(|(t, _)| super::scan::lake_source(t) == leaf.source)
        {
            scans.remove(at);
        }
    }
    if let Ok(mut trace) = ctx.trace.lock() {
        trace.push(format!("Postgres (first {k}): {sql}"));
        if skip_cold {
            trace.push(format!(
                "Iceberg: not read (the hot rows at or after the watermark hold the first {k})"
            ));
        }
    }
    let hot_rows: Arc<dyn PartitionStream> = Arc::new(Rows {
        schema: hot.schema().clone(),
        batches,
    });
    let cold = if skip_cold {
        Arc::new(Rows {
            schema: cold.schema().clone(),
            batches: Vec::new(),
        }) as Arc<dyn PartitionStream>
    } else {
        cold.clone()
    };
    Ok(Some(replace_leaf(input, vec![hot_rows, cold])?))
}

/// How many of the hot rows read are at or after the watermark.
fn at_or_after_watermark(batches: &[RecordBatch], recipe: &super::recipe::HotRecipe) -> usize {
    let Some(pos) = recipe.time_in_output() else {
        return 0;
    };
    batches
        .iter()
        .map(|b| {
            (0..b.num_rows())
                .filter(|&r| {
                    crate::tiering::mover::time_micros(b.column(pos), r)
                        .is_some_and(|v| v >= recipe.watermark())
                })
                .count()
        })
        .sum()
}

/// The tiered scan at the bottom of a chain, and its leaf.
fn tiered_leaf<'p>(
    plan: &'p Arc<dyn ExecutionPlan>,
    leaves: &[Arc<TieredLeaf>],
) -> Option<(&'p StreamingTableExec, Arc<TieredLeaf>)> {
    if let Some(s) = plan.as_any().downcast_ref::<StreamingTableExec>() {
        return Some((s, leaf_of(s, leaves)?));
    }
    match plan.children().as_slice() {
        [child] => tiered_leaf(child, leaves),
        _ => None,
    }
}

/// Rows already read.
#[derive(Debug)]
struct Rows {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
}

impl PartitionStream for Rows {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let batches = self.batches.clone();
        Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::iter(batches.into_iter().map(Ok)),
        ))
    }
}
