//! The cache of cold partial results.
//!
//! The cold tier of a tiered table cannot change under an Iceberg
//! snapshot, so what a statement computes from cold rows alone (the rows
//! its filters keep, or the partial states of its aggregates) stays exact
//! for as long as that snapshot is the table's current one. After DataFusion
//! plans a statement, each tiered scan is split in two below its first
//! aggregate: the hot half runs live on the session's connection, every
//! time; the cold half is answered from the cache when it holds the same
//! computation over the same snapshot. The plan above combines them as it
//! always does: a final aggregate merges partial states, other operators
//! see the rows of both halves.
//!
//! An entry's key holds the statement, its parameters, the session's time
//! zone, the Iceberg table, snapshot and watermark read, and every
//! expression of the cold half; a half with a volatile expression
//! (`random()`) is never cached. Identical statements arriving together
//! compute a missing entry once: the others wait for it.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use datafusion::arrow::array::{RecordBatch, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_expr_common::physical_expr::{PhysicalExpr, is_volatile};
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::{StreamExt, TryStreamExt};

use super::scan::ScanContext;
use moka::future::Cache;
use moka::notification::RemovalCause;

/// Cold partial results, shared by every federated statement of a server
/// and bounded by `cache_memory` bytes.
pub struct ColdCache {
    entries: Cache<String, Arc<Partial>>,
    /// Whole answers, for sessions that accept them up to an age
    /// (`thermocline.result_cache_ttl`).
    results: Cache<String, Arc<CachedResult>>,
    pub result_hits: AtomicU64,
    pub result_misses: AtomicU64,
    /// Keys whose results were too large to keep, not tried again soon.
    too_large: Cache<String, ()>,
    /// The bound, in bytes; 0 turns the cache off.
    capacity: u64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub evictions: Arc<AtomicU64>,
}

/// One cached cold half.
pub(crate) struct Partial {
    pub batches: Vec<RecordBatch>,
    pub bytes: u64,
    pub rows: u64,
    /// `lake table@snapshot`.
    pub source: String,
    /// The statement, its literals masked.
    pub statement: String,
    /// The role whose statement computed it.
    pub user: String,
    pub created: SystemTime,
    /// How long computing it took.
    pub compute: Duration,
    pub hits: AtomicU64,
    /// For a kept hot half: what it was computed under.
    pub hot: Option<HotState>,
}

/// What a kept hot half was computed under (see [`super::hotcache`]).
#[derive(Debug)]
pub(crate) struct HotState {
    pub snapshot: super::hotcache::Snapshot,
    /// What it relies on in Postgres's catalog.
    pub signature: String,
    pub at: Instant,
}

impl fmt::Debug for ColdCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ColdCache")
            .field("capacity", &self.capacity)
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

impl ColdCache {
    pub(crate) fn new(capacity: u64) -> Self {
        let evictions = Arc::new(AtomicU64::new(0));
        let counted = evictions.clone();
        let entries = Cache::builder()
            .max_capacity(capacity)
            .weigher(|key: &String, p: &Arc<Partial>| {
                u32::try_from(p.bytes + key.len() as u64).unwrap_or(u32::MAX)
            })
            .eviction_listener(move |_, _, cause| {
                if cause == RemovalCause::Size {
                    counted.fetch_add(1, Relaxed);
                }
            })
            .build();
        let counted = evictions.clone();
        let results = Cache::builder()
            .max_capacity(capacity / 4)
            .weigher(|key: &String, r: &Arc<CachedResult>| {
                u32::try_from(r.data.len() as u64 + key.len() as u64).unwrap_or(u32::MAX)
            })
            .time_to_live(Duration::from_secs(24 * 3600))
            .eviction_listener(move |_, _, cause| {
                if cause == RemovalCause::Size {
                    counted.fetch_add(1, Relaxed);
                }
            })
            .build();
        let too_large = Cache::builder()
            .max_capacity(10_000)
            .time_to_live(Duration::from_secs(600))
            .build();
        Self {
            entries,
            results,
            result_hits: AtomicU64::new(0),
            result_misses: AtomicU64::new(0),
            too_large,
            capacity,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions,
        }
    }

    /// The largest result one entry may hold: an eighth of the cache.
    fn max_entry(&self) -> u64 {
        self.capacity / 8
    }

    /// Bytes held, as last counted (for metrics, which cannot wait).
    pub(crate) fn weighted_size(&self) -> u64 {
        self.entries.weighted_size()
    }

    /// Whether cold partial results are kept at all (`cache_memory`).
    pub(crate) fn keeps_partials(&self) -> bool {
        self.capacity > 0
    }

    pub(crate) fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    /// The entries held now.
    pub(crate) async fn entries(&self) -> Vec<Arc<Partial>> {
        self.entries.run_pending_tasks().await;
        self.entries.iter().map(|(_, v)| v).collect()
    }

    /// The whole answers held now.
    pub(crate) async fn results(&self) -> Vec<Arc<CachedResult>> {
        self.results.run_pending_tasks().await;
        self.results.iter().map(|(_, v)| v).collect()
    }

    /// A whole answer no older than `ttl`.
    pub(crate) async fn result(&self, key: &str, ttl: Duration) -> Option<Arc<CachedResult>> {
        match self.results.get(key).await {
            Some(r) if r.computed.elapsed() <= ttl => {
                self.result_hits.fetch_add(1, Relaxed);
                r.hits.fetch_add(1, Relaxed);
                Some(r)
            }
            _ => {
                self.result_misses.fetch_add(1, Relaxed);
                None
            }
        }
    }

    /// Keeps a whole answer, when it is small enough.
    pub(crate) async fn keep_result(&self, key: String, result: CachedResult) {
        if self.capacity > 0 && (result.data.len() as u64) <= self.max_entry() / 4 {
            self.results.insert(key, Arc::new(result)).await;
        }
    }

    /// A kept hot half.
    pub(crate) async fn hot_entry(&self, key: &str) -> Option<Arc<Partial>> {
        if self.capacity == 0 {
            return None;
        }
        self.entries.get(key).await.filter(|p| p.hot.is_some())
    }

    /// Drops every kept hot half.
    pub(crate) async fn forget_hot_halves(&self) {
        let keys: Vec<Arc<String>> = self
            .entries
            .iter()
            .filter(|(_, p)| p.hot.is_some())
            .map(|(k, _)| k)
            .collect();
        for k in keys {
            self.entries.invalidate(k.as_str()).await;
        }
    }

    /// Keeps a hot half, when it is small enough; a larger one's statement
    /// computes its hot half whole for a while (see [`Self::parts_pay`]).
    pub(crate) async fn keep_hot(&self, key: String, partial: Partial) {
        if self.capacity == 0 {
            return;
        }
        if partial.bytes <= self.max_entry() && partial.rows <= super::hotcache::MAX_PART_ROWS {
            self.entries.insert(key, Arc::new(partial)).await;
        } else {
            self.too_large.insert(key, ()).await;
        }
    }

    /// Whether a statement's hot half is worth keeping by parts: not when
    /// it was too large to keep (many groups make many more rows by parts).
    pub(crate) fn parts_pay(&self, key: &str) -> bool {
        self.capacity > 0 && !self.too_large.contains_key(key)
    }

    /// The largest whole answer kept, in bytes.
    pub(crate) fn max_result(&self) -> usize {
        (self.max_entry() / 4) as usize
    }

    /// The cold half's rows: from the cache, or computed (once, however
    /// many statements ask at the same time) and kept when small enough.
    async fn get_or_compute(
        self: Arc<Self>,
        key: String,
        input: Arc<dyn ExecutionPlan>,
        task: Arc<TaskContext>,
        about: Arc<About>,
    ) -> Result<SendableRecordBatchStream> {
        let schema = input.schema();
        if let Some(p) = self.entries.get(&key).await {
            return Ok(self.hit(&p, &about, schema));
        }
        if self.too_large.contains_key(&key) {
            about.set(Outcome::TooLarge);
            self.misses.fetch_add(1, Relaxed);
            return datafusion::physical_plan::execute_stream(input, task);
        }
        let ran_here = Arc::new(AtomicBool::new(false));
        let compute = {
            let (ran_here, input, task, about, max) = (
                ran_here.clone(),
                input.clone(),
                task.clone(),
                about.clone(),
                self.max_entry(),
            );
            async move {
                ran_here.store(true, Relaxed);
                collect(input, task, &about, max).await
            }
        };
        match self.entries.try_get_with(key.clone(), compute).await {
            Ok(p) if ran_here.load(Relaxed) => {
                about.set(Outcome::Stored);
                self.misses.fetch_add(1, Relaxed);
                Ok(stream_of(&p, schema))
            }
            Ok(p) => Ok(self.hit(&p, &about, schema)),
            Err(e) if ran_here.load(Relaxed) => {
                self.misses.fetch_add(1, Relaxed);
                match &*e {
                    Uncached::TooLarge(rest) => {
                        about.set(Outcome::TooLarge);
                        self.too_large.insert(key, ()).await;
                        let taken = rest.lock().unwrap_or_else(|e| e.into_inner()).take();
                        match taken {
                            Some((done, more)) => Ok(Box::pin(RecordBatchStreamAdapter::new(
                                schema,
                                futures::stream::iter(done.into_iter().map(Ok)).chain(more),
                            ))),
                            None => datafusion::physical_plan::execute_stream(input, task),
                        }
                    }
                    Uncached::Failed(e) => Err(DataFusionError::Shared(e.clone())),
                }
            }
            // Another statement computed it and failed, or kept nothing:
            // compute this statement's own, uncached.
            Err(_) => {
                about.set(Outcome::TooLarge);
                self.misses.fetch_add(1, Relaxed);
                datafusion::physical_plan::execute_stream(input, task)
            }
        }
    }

    fn hit(&self, p: &Arc<Partial>, about: &About, schema: SchemaRef) -> SendableRecordBatchStream {
        self.hits.fetch_add(1, Relaxed);
        p.hits.fetch_add(1, Relaxed);
        about.set(Outcome::Hit);
        stream_of(p, schema)
    }
}

fn stream_of(p: &Partial, schema: SchemaRef) -> SendableRecordBatchStream {
    let batches = p.batches.clone();
    Box::pin(RecordBatchStreamAdapter::new(
        schema,
        futures::stream::iter(batches.into_iter().map(Ok)),
    ))
}

/// A whole answer of a federated statement, as DataRow messages in text.
pub(crate) struct CachedResult {
    pub data: Vec<u8>,
    pub rows: u64,
    /// Queries that check, on the reader's connection, that it may read
    /// what the answer was computed from.
    pub checks: Vec<String>,
    pub statement: String,
    pub user: String,
    pub computed: Instant,
    pub created: SystemTime,
    pub compute: Duration,
    pub hits: AtomicU64,
}

/// Why a cold half was not kept.
enum Uncached {
    /// Larger than an entry may be: the batches read so far and the rest
    /// of the stream, for the statement that computed them.
    TooLarge(Mutex<Option<(Vec<RecordBatch>, SendableRecordBatchStream)>>),
    Failed(Arc<DataFusionError>),
}

/// Runs the cold half to its end, unless its result outgrows `max` bytes.
async fn collect(
    input: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
    about: &About,
    max: u64,
) -> std::result::Result<Arc<Partial>, Uncached> {
    let failed = |e| Uncached::Failed(Arc::new(e));
    let started = Instant::now();
    let mut stream = datafusion::physical_plan::execute_stream(input, task).map_err(failed)?;
    let (mut batches, mut bytes, mut rows) = (Vec::new(), 0u64, 0u64);
    while let Some(batch) = stream.next().await {
        // Copied to buffers of their own size: operators hand out batches
        // in buffers sized for thousands of rows.
        let batch = batch
            .and_then(|b| {
                let all = UInt32Array::from_iter_values(0..b.num_rows() as u32);
                Ok(take_record_batch(&b, &all)?)
            })
            .map_err(failed)?;
        bytes += batch.get_array_memory_size() as u64;
        rows += batch.num_rows() as u64;
        batches.push(batch);
        if bytes > max {
            return Err(Uncached::TooLarge(Mutex::new(Some((batches, stream)))));
        }
    }
    Ok(Arc::new(Partial {
        batches,
        bytes,
        rows,
        source: about.source.clone(),
        statement: about.statement.clone(),
        user: about.user.clone(),
        created: SystemTime::now(),
        compute: started.elapsed(),
        hits: AtomicU64::new(0),
        hot: None,
    }))
}

/// What happened to a cold half, for EXPLAIN.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Hit,
    Stored,
    TooLarge,
}

/// A cold half's description and, once it ran, its outcome.
#[derive(Debug)]
struct About {
    source: String,
    statement: String,
    user: String,
    outcome: Mutex<Option<Outcome>>,
}

impl About {
    fn set(&self, o: Outcome) {
        *self.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(o);
    }
}

/// A tiered table's scan as planned: its hot and cold partitions (by
/// address: a hot partition holds the statement's context, which holds
/// this), and what the cold one reads.
#[derive(Debug)]
pub(crate) struct TieredLeaf {
    pub hot: usize,
    pub cold: usize,
    /// `lake table@snapshot`.
    pub source: String,
    /// Everything the cold partition's rows depend on: the lake table's
    /// location, snapshot, watermark, columns and pruning filters.
    pub reads: String,
    /// How to read the hot rows in parts.
    pub recipe: super::recipe::HotRecipe,
}

/// What a statement's cold halves are keyed by besides their own plan.
pub(crate) struct Statement<'a> {
    pub sql: &'a str,
    pub params: &'a [datafusion::common::ScalarValue],
    /// The session's settings for text (its time zone among them): values
    /// a statement writes as text (`pg_text`) depend on them.
    pub output: &'a crate::pgtypes::TextSettings,
    pub user: &'a str,
}

/// The plan with each tiered scan's cold half, up to and including its
/// partial aggregate, read through the cache; and the hot half of a partial
/// aggregate computed by Postgres where it can be.
pub(crate) fn rewrite(
    plan: Arc<dyn ExecutionPlan>,
    ctx: &Arc<ScanContext>,
    leaves: &[Arc<TieredLeaf>],
    cache: &Arc<ColdCache>,
    statement: &Statement<'_>,
) -> Result<Arc<dyn ExecutionPlan>> {
    if leaves.is_empty() {
        return Ok(plan);
    }
    let prefix = format!(
        "{}\n{:?}\n{:?}",
        statement.sql.trim(),
        statement.params,
        statement.output
    );
    let rewriter = Rewriter {
        ctx,
        leaves,
        cache,
        prefix,
        statement: crate::admin::activity::mask_literals(statement.sql),
        user: statement.user.to_string(),
    };
    rewriter.node(plan)
}

struct Rewriter<'a> {
    ctx: &'a Arc<ScanContext>,
    leaves: &'a [Arc<TieredLeaf>],
    cache: &'a Arc<ColdCache>,
    prefix: String,
    statement: String,
    user: String,
}

/// A row-by-row chain above a tiered scan, split in its hot and cold halves.
struct Halves {
    hot: Arc<dyn ExecutionPlan>,
    cold: Arc<dyn ExecutionPlan>,
    leaf: Arc<TieredLeaf>,
    /// The cold half's key, below the statement's.
    key: String,
}

impl Rewriter<'_> {
    fn node(&self, plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
        if let Some(agg) = plan.as_any().downcast_ref::<AggregateExec>()
            && *agg.mode() == AggregateMode::Partial
            && let Some(described) = describe_aggregate(agg)
            && let Some(h) = self.split(agg.input())?
        {
            let pushed = self.hot_aggregate(agg, &h)?;
            if pushed.is_none() && self.cache.capacity == 0 {
                return Ok(plan);
            }
            let hot = match pushed {
                Some(hot) => hot,
                None => plan.clone().with_new_children(vec![h.hot])?,
            };
            let cold = plan.clone().with_new_children(vec![h.cold])?;
            return self.united(hot, cold, &h.leaf, format!("{}\n{described}", h.key));
        }
        if self.cache.capacity > 0
            && let Some(h) = self.split(&plan)?
        {
            return self.united(h.hot, h.cold, &h.leaf, h.key);
        }
        let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
        if children.is_empty() {
            return Ok(plan);
        }
        let rewritten = children
            .into_iter()
            .map(|c| self.node(c))
            .collect::<Result<Vec<_>>>()?;
        plan.with_new_children(rewritten)
    }

    /// The hot half of `agg`: Postgres's partial aggregate of the rows at or
    /// after the watermark, with the executor's of the stragglers; `None`
    /// when an expression does not translate.
    fn hot_aggregate(
        &self,
        agg: &AggregateExec,
        h: &Halves,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(translated) = super::hotagg::translate(agg) else {
            return Ok(None);
        };
        let now = chrono::Utc::now().timestamp_micros();
        let (query, parts_sql) = h.leaf.recipe.aggregate_parts(&translated, now);
        let key = format!(
            "hot\n{}\n{}\n{}\n{:?}\n{}",
            self.prefix,
            h.key,
            query.sql(None),
            query.grid,
            self.user
        );
        let (aggregated, sql) = if self.cache.parts_pay(&key) {
            // Kept, and brought up to date from the writes recorded since.
            let parts: Arc<dyn PartitionStream> = Arc::new(super::hotcache::HotParts {
                ctx: self.ctx.clone(),
                late: h.leaf.recipe.late(),
                cache: self.cache.clone(),
                key: key.into(),
                query: Arc::new(query),
                source: format!("{} (hot)", h.leaf.recipe.table()).into(),
                statement: self.statement.clone().into(),
                user: self.user.clone().into(),
            });
            (parts, parts_sql)
        } else {
            h.leaf.recipe.aggregate(self.ctx, &translated)
        };
        let (stragglers, straggler_sql) = h.leaf.recipe.stragglers(self.ctx);
        if let Ok(mut trace) = self.ctx.trace.lock() {
            trace.push(format!("Postgres (partial aggregate): {sql}"));
            trace.push(format!("Postgres (stragglers): {straggler_sql}"));
        }
        let aggregated: Arc<dyn ExecutionPlan> = Arc::new(StreamingTableExec::try_new(
            translated.schema.clone(),
            vec![aggregated],
            None,
            Vec::<datafusion::physical_expr::LexOrdering>::new(),
            false,
            None,
        )?);
        let stragglers = replace_leaf(agg.input(), vec![stragglers])?;
        let stragglers = Arc::new(agg.clone()).with_new_children(vec![stragglers])?;
        Ok(Some(UnionExec::try_new(vec![aggregated, stragglers])?))
    }

    fn united(
        &self,
        hot: Arc<dyn ExecutionPlan>,
        cold: Arc<dyn ExecutionPlan>,
        leaf: &TieredLeaf,
        key: String,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if self.cache.capacity == 0 {
            return UnionExec::try_new(vec![hot, cold]);
        }
        let cached = Arc::new(ColdCacheExec::new(
            cold,
            format!("{}\n{key}", self.prefix),
            self.cache.clone(),
            Arc::new(About {
                source: leaf.source.clone(),
                statement: self.statement.clone(),
                user: self.user.clone(),
                outcome: Mutex::new(None),
            }),
        ));
        UnionExec::try_new(vec![hot, cached])
    }

    /// `plan` split in its hot and cold halves, when it is a tiered scan
    /// under operators that work row by row.
    fn split(&self, plan: &Arc<dyn ExecutionPlan>) -> Result<Option<Halves>> {
        if let Some(s) = plan.as_any().downcast_ref::<StreamingTableExec>() {
            let (Some(leaf), [hot, cold]) = (leaf_of(s, self.leaves), s.partitions().as_slice())
            else {
                return Ok(None);
            };
            let projection = s.projection().as_ref().map(|p| p.to_vec());
            let half = |p: &Arc<dyn PartitionStream>| -> Result<Arc<dyn ExecutionPlan>> {
                Ok(Arc::new(StreamingTableExec::try_new(
                    s.partition_schema().clone(),
                    vec![p.clone()],
                    projection.as_ref(),
                    s.projected_output_ordering(),
                    s.is_infinite(),
                    s.limit(),
                )?))
            };
            return Ok(Some(Halves {
                hot: half(hot)?,
                cold: half(cold)?,
                leaf: leaf.clone(),
                key: format!(
                    "{} projection {projection:?} limit {:?}",
                    leaf.reads,
                    s.limit()
                ),
            }));
        }
        let Some(described) = describe_row_local(plan) else {
            return Ok(None);
        };
        let children = plan.children();
        let [child] = children.as_slice() else {
            return Ok(None);
        };
        let Some(h) = self.split(child)? else {
            return Ok(None);
        };
        Ok(Some(Halves {
            hot: plan.clone().with_new_children(vec![h.hot])?,
            cold: plan.clone().with_new_children(vec![h.cold])?,
            leaf: h.leaf,
            key: format!("{}\n{described}", h.key),
        }))
    }
}

/// `plan` (row-by-row operators over a tiered scan) over `partition` in
/// place of the scan's partitions.
/// `plan`, a row-by-row chain over a tiered scan, reading `partitions`
/// instead of the scan's.
pub(crate) fn replace_leaf(
    plan: &Arc<dyn ExecutionPlan>,
    partitions: Vec<Arc<dyn PartitionStream>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    if let Some(s) = plan.as_any().downcast_ref::<StreamingTableExec>() {
        let projection = s.projection().as_ref().map(|p| p.to_vec());
        return Ok(Arc::new(StreamingTableExec::try_new(
            s.partition_schema().clone(),
            partitions,
            projection.as_ref(),
            s.projected_output_ordering(),
            s.is_infinite(),
            s.limit(),
        )?));
    }
    let children = plan.children();
    let [child] = children.as_slice() else {
        return Err(DataFusionError::Internal(
            "a tiered scan's chain has one input per operator".into(),
        ));
    };
    plan.clone()
        .with_new_children(vec![replace_leaf(child, partitions)?])
}

/// The tiered scan `s` is, when it is one.
pub(crate) fn leaf_of(
    s: &StreamingTableExec,
    leaves: &[Arc<TieredLeaf>],
) -> Option<Arc<TieredLeaf>> {
    let [hot, cold] = s.partitions().as_slice() else {
        return None;
    };
    leaves
        .iter()
        .find(|l| l.hot == address(hot) && l.cold == address(cold))
        .cloned()
}

/// Where a partition lives, to recognize it in a plan.
pub(crate) fn address(p: &Arc<dyn PartitionStream>) -> usize {
    Arc::as_ptr(p) as *const () as usize
}

/// An operator that works row by row (so it may run on each half apart),
/// described by all its expressions; `None` for any other operator or one
/// with a volatile expression.
fn describe_row_local(plan: &Arc<dyn ExecutionPlan>) -> Option<String> {
    let any = plan.as_any();
    if let Some(f) = any.downcast_ref::<FilterExec>() {
        return stable([f.predicate()])
            .then(|| format!("filter {:?} projection {:?}", f.predicate(), f.projection()));
    }
    if let Some(p) = any.downcast_ref::<ProjectionExec>() {
        return stable(p.expr().iter().map(|e| &e.expr)).then(|| {
            let exprs: Vec<String> = p
                .expr()
                .iter()
                .map(|e| format!("{:?} AS {}", e.expr, e.alias))
                .collect();
            format!("projection {exprs:?}")
        });
    }
    if let Some(r) = any.downcast_ref::<RepartitionExec>() {
        return matches!(r.partitioning(), Partitioning::RoundRobinBatch(_))
            .then(|| "round robin".to_string());
    }
    None
}

/// A partial aggregate, described by all its expressions.
fn describe_aggregate(agg: &AggregateExec) -> Option<String> {
    let group = agg.group_expr();
    let mut exprs: Vec<&Arc<dyn PhysicalExpr>> = group.expr().iter().map(|(e, _)| e).collect();
    let args: Vec<Vec<Arc<dyn PhysicalExpr>>> =
        agg.aggr_expr().iter().map(|a| a.expressions()).collect();
    exprs.extend(args.iter().flatten());
    exprs.extend(agg.filter_expr().iter().flatten());
    if !stable(exprs) {
        return None;
    }
    Some(format!(
        "partial aggregate {group:?} {:?} {:?}",
        agg.aggr_expr(),
        agg.filter_expr()
    ))
}

fn stable<'e>(exprs: impl IntoIterator<Item = &'e Arc<dyn PhysicalExpr>>) -> bool {
    exprs.into_iter().all(|e| !is_volatile(e))
}

/// Reads a cold half through the cache: one partition, its rows from the
/// cache or computed and kept.
#[derive(Debug)]
struct ColdCacheExec {
    input: Arc<dyn ExecutionPlan>,
    key: String,
    cache: Arc<ColdCache>,
    about: Arc<About>,
    properties: Arc<PlanProperties>,
}

impl ColdCacheExec {
    fn new(
        input: Arc<dyn ExecutionPlan>,
        key: String,
        cache: Arc<ColdCache>,
        about: Arc<About>,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(input.schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Self {
            input,
            key,
            cache,
            about,
            properties,
        }
    }
}

impl DisplayAs for ColdCacheExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outcome = *self.about.outcome.lock().unwrap_or_else(|e| e.into_inner());
        let state = match outcome {
            Some(Outcome::Hit) => "hit: answered from the cache",
            Some(Outcome::Stored) => "miss: computed and kept",
            Some(Outcome::TooLarge) => "miss: computed, not kept",
            None if self.cache.entries.contains_key(&self.key) => "cached",
            None => "not cached",
        };
        write!(f, "ColdCacheExec: {}, {state}", self.about.source)
    }
}

impl ExecutionPlan for ColdCacheExec {
    fn name(&self) -> &str {
        "ColdCacheExec"
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = <[_; 1]>::try_from(children)
            .map_err(|_| DataFusionError::Internal("ColdCacheExec has one input".into()))?;
        Ok(Arc::new(ColdCacheExec::new(
            input,
            self.key.clone(),
            self.cache.clone(),
            self.about.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        task: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "ColdCacheExec has one partition, not {partition}"
            )));
        }
        let rows = self.cache.clone().get_or_compute(
            self.key.clone(),
            self.input.clone(),
            task,
            self.about.clone(),
        );
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.input.schema(),
            futures::stream::once(rows).try_flatten(),
        )))
    }
}
