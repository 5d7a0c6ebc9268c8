//! Which side of a hash join is built. The executor builds the hash table
//! on a join's left input, and knows nothing of the sizes of the tables it
//! reads (their scans report no statistics), so `FROM orders JOIN
//! customers` would hash every order to probe it with a thousand
//! customers. Each scan records how many rows its table holds at most
//! (Postgres's estimate, plus the lake's count for a tiered table); before
//! the executor chooses how to run its joins, a join whose left input may
//! hold more rows than its right is turned around.

use std::sync::{Arc, Mutex};

use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::streaming::StreamingTableExec;

/// A build side of at most this many rows is hashed once, whole, and
/// shared by every partition of the probe side.
const COLLECT_ROWS: u64 = 1 << 20;

/// The most rows each scan of a statement may produce, by the address of
/// its first partition.
pub(crate) type Estimates = Arc<Mutex<Vec<(usize, u64)>>>;

tokio::task_local! {
    /// The estimates of the statement whose plan is being made.
    pub(crate) static ESTIMATES: Estimates;
}

/// Builds a hash join on its smaller input, by the scans' estimates (of
/// the statement planned in [`ESTIMATES`]), and once (not per partition)
/// when that input is small.
#[derive(Debug)]
pub(crate) struct SmallerBuildSide;

impl SmallerBuildSide {
    /// At most how many rows `plan` produces, when known: a scan's
    /// estimate, carried through the operators that never add rows.
    fn rows(&self, plan: &Arc<dyn ExecutionPlan>) -> Option<u64> {
        let any = plan.as_any();
        if let Some(s) = any.downcast_ref::<StreamingTableExec>() {
            let first = super::cache::address(s.partitions().first()?);
            return ESTIMATES
                .try_with(|estimates| {
                    let known = estimates.lock().ok()?;
                    known.iter().find(|(a, _)| *a == first).map(|(_, n)| *n)
                })
                .ok()
                .flatten();
        }
        let passes = any.is::<FilterExec>()
            || any.is::<ProjectionExec>()
            || any.is::<RepartitionExec>()
            || any.is::<CoalescePartitionsExec>();
        match plan.children().as_slice() {
            [child] if passes => self.rows(child),
            _ => None,
        }
    }
}

impl PhysicalOptimizerRule for SmallerBuildSide {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(join) = node.as_any().downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            let (Some(left), Some(right)) = (self.rows(join.left()), self.rows(join.right()))
            else {
                return Ok(Transformed::no(node));
            };
            let swap = left > right && join.join_type().supports_swap() && !join.null_aware;
            let build = if swap { right } else { left };
            let mode = if build <= COLLECT_ROWS {
                PartitionMode::CollectLeft
            } else {
                *join.partition_mode()
            };
            if swap {
                Ok(Transformed::yes(join.swap_inputs(mode)?))
            } else if mode != *join.partition_mode() {
                Ok(Transformed::yes(Arc::new(
                    join.builder().with_partition_mode(mode).build()?,
                )))
            } else {
                Ok(Transformed::no(node))
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "thermocline_smaller_build_side"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
