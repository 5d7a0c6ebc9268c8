//! The accept loop and what all sessions share; graceful shutdown.
//!
//! [`run`] serves until `shutdown` resolves, then stops accepting, lets
//! sessions finish what they are running (up to `shutdown_timeout`), and
//! closes the rest with SQLSTATE 57P01.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::backend::target::BackendTarget;
use crate::backend::{ConnectError, UpstreamTls};
use crate::config::Config;
use crate::federation::Federation;
use crate::federation::cache::ColdCache;
use crate::frontend::cancel::CancelKeys;
use crate::frontend::tls::TlsError;
use crate::limits::Limits;
use crate::router::{Router, TieredName};

/// Where the server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// Not accepting; sessions close as soon as they are idle.
    Draining,
    /// The drain timeout passed: every session closes now.
    Closing,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("no Postgres configured (set postgres_url or use embedded_postgres)")]
    NoBackend,
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    UpstreamTls(#[from] ConnectError),
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error(transparent)]
    Tiering(#[from] crate::tiering::TieringError),
    #[error(transparent)]
    Lake(#[from] crate::lake::LakeError),
    #[error(
        "config key `lake.warehouse`: not set, but catalog_dir defines tiered tables (set lake.warehouse or THERMOCLINE_LAKE_WAREHOUSE)"
    )]
    NoWarehouse,
    #[error("cannot set up the executor: {0}")]
    Executor(String),
}

/// What every session of one server shares.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) target: BackendTarget,
    pub(crate) upstream_tls: UpstreamTls,
    pub(crate) client_tls: Option<tokio_rustls::TlsAcceptor>,
    pub(crate) cancel_keys: CancelKeys,
    /// Client sessions past their startup packet, for `max_client_connections`.
    pub(crate) clients: std::sync::atomic::AtomicUsize,
    /// The limits, changed in place by a reload.
    pub(crate) limits: Arc<Limits>,
    /// Cold partial results, kept across reloads.
    pub(crate) cache: Arc<ColdCache>,
    /// Sessions and recent statements, for the system views.
    pub(crate) activity: Arc<crate::admin::activity::Activity>,
    /// Tiered tables and their lake, by database; replaced whole when the
    /// tier definitions are reloaded (SIGHUP). Sessions keep the set they
    /// started with.
    federations: std::sync::RwLock<Arc<HashMap<String, Federation>>>,
    phase: watch::Sender<Phase>,
}

impl Shared {
    /// The routing rules and tiered tables for a session of `database`.
    pub(crate) fn federations(&self) -> Arc<HashMap<String, Federation>> {
        self.federations
            .read()
            .map(|f| f.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    pub(crate) fn for_database(&self, database: &str) -> (Router, Option<Federation>) {
        match self.federations().get(database) {
            Some(f) => (
                Router::new(
                    f.tables
                        .iter()
                        .flat_map(|t| {
                            let table = TieredName {
                                schema: t.def.schema.clone(),
                                table: t.def.table.clone(),
                                time_column: t.def.time_column.clone(),
                                hot_window: t.def.hot_window,
                            };
                            // Views over it: no time column, no fast path.
                            let views = t.views.iter().map(|(schema, name)| TieredName {
                                schema: schema.clone(),
                                table: name.clone(),
                                time_column: String::new(),
                                hot_window: Duration::ZERO,
                            });
                            std::iter::once(table).chain(views)
                        })
                        .collect(),
                ),
                Some(f.clone()),
            ),
            None => (Router::default(), None),
        }
    }

    pub(crate) fn phase(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Sends a CancelRequest to Postgres on a new connection, and returns
    /// once Postgres has closed it (it has then signalled the backend), so
    /// a client that waits for its own cancel connection to close, as
    /// drivers do, knows the cancel has been delivered.
    pub(crate) async fn cancel_backend(&self, pid: i32, secret: i32) {
        use tokio::io::AsyncReadExt;
        let timeout = self.config.connect_timeout;
        match crate::backend::connect(&self.target, &self.upstream_tls, timeout).await {
            Ok(mut link) => {
                let _ = link
                    .write_all(&crate::protocol::startup::cancel_request(pid, secret))
                    .await;
                let _ = link.flush().await;
                let mut rest = [0u8; 64];
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    while let Ok(n) = link.read(&mut rest).await
                        && n > 0
                    {}
                })
                .await;
                let _ = link.shutdown().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, pid, "could not pass a cancel request to Postgres")
            }
        }
    }
}

/// Serves clients on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let target = config.postgres.clone().ok_or(ServerError::NoBackend)?;
    let upstream_tls = UpstreamTls::new(&target)?;
    let client_tls = config
        .tls
        .as_ref()
        .map(crate::frontend::tls::acceptor)
        .transpose()?;
    let limits = Arc::new(Limits::new(&config));
    let cache = Arc::new(ColdCache::new(config.cache_memory));
    *crate::admin::metrics::METRICS
        .cache
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(cache.clone());
    let federations = load_tiers_with(&config, &target, &limits, &cache).await?;
    open_catalog_links(&federations);
    let (phase, _) = watch::channel(Phase::Running);
    let shared = Arc::new(Shared {
        config,
        target,
        upstream_tls,
        client_tls,
        cancel_keys: CancelKeys::default(),
        clients: std::sync::atomic::AtomicUsize::new(0),
        limits,
        cache,
        activity: Default::default(),
        federations: std::sync::RwLock::new(Arc::new(federations)),
        phase,
    });
    let mover = shared
        .config
        .tier_interval
        .map(|every| tokio::spawn(mover_loop(shared.clone(), every)));
    let reloader = tokio::spawn(reload_on_sighup(shared.clone()));
    let refresher = match listener.local_addr() {
        Ok(addr) => Some(tokio::spawn(refresh_loop(shared.clone(), addr))),
        Err(_) => None,
    };
    let sessions = TaskTracker::new();
    let conn_ids = AtomicU64::new(1);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let conn_id = conn_ids.fetch_add(1, Ordering::Relaxed);
                    sessions.spawn(crate::frontend::handle(tcp, peer, conn_id, shared.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    sessions.close();
    let open = sessions.len();
    tracing::info!(open_sessions = open, timeout = ?shared.config.shutdown_timeout, "shutting down: draining sessions");
    shared.phase.send_replace(Phase::Draining);
    if tokio::time::timeout(shared.config.shutdown_timeout, sessions.wait())
        .await
        .is_err()
    {
        tracing::info!(
            open_sessions = sessions.len(),
            "drain timeout passed: closing the remaining sessions"
        );
        shared.phase.send_replace(Phase::Closing);
        let _ = tokio::time::timeout(Duration::from_secs(10), sessions.wait()).await;
    }
    if let Some(mover) = mover {
        mover.abort();
    }
    if let Some(refresher) = refresher {
        refresher.abort();
    }
    reloader.abort();
    tracing::info!("stopped");
    Ok(())
}

/// Runs the mover over every tiered table every `every`. A failed pass is
/// logged and retried on the next tick; a pass another replica holds the
/// lock for is skipped.
async fn mover_loop(shared: Arc<Shared>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut maintained = std::time::Instant::now();
    loop {
        tick.tick().await;
        if shared
            .config
            .maintain_interval
            .is_some_and(|m| maintained.elapsed() >= m)
        {
            maintained = std::time::Instant::now();
            maintain_all(&shared).await;
        }
        for (database, federation) in shared.federations().iter() {
            for table in &federation.tables {
                match crate::tiering::mover::run_once(
                    &shared.target,
                    &federation.lake,
                    table,
                    database,
                    false,
                )
                .await
                {
                    Ok(Some(r)) => {
                        crate::admin::metrics::METRICS.tier_pass(&r.table, Ok(&r));
                        tracing::info!(
                        table = %r.table,
                        rows = r.rows_deleted,
                        written = r.rows_written,
                        files = r.files,
                        watermark = r.watermark,
                        "moved rows to the lake"
                        )
                    }
                    Ok(None) => {
                        tracing::debug!(table = %table.def.qualified(), "another mover holds the table")
                    }
                    Err(e) => {
                        crate::admin::metrics::METRICS
                            .tier_pass(&table.def.qualified(), Err(e.to_string()));
                        tracing::warn!(table = %table.def.qualified(), error = %e, "moving rows failed")
                    }
                }
            }
        }
    }
}

/// How often the server looks for materialized views due for refresh.
const REFRESH_CHECK: Duration = Duration::from_secs(2);

/// Refreshes materialized views over tiered tables whose
/// `thermocline.refresh_interval` has passed, in every database with tiered
/// tables, through this server (listening at `addr`).
async fn refresh_loop(shared: Arc<Shared>, addr: std::net::SocketAddr) {
    let addr = if addr.ip().is_unspecified() {
        std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    };
    let mut tick = tokio::time::interval(REFRESH_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One service connection per database, kept between checks.
    let mut services: HashMap<String, tokio_postgres::Client> = HashMap::new();
    let mut pruners: HashMap<String, crate::federation::hotcache::Pruner> = HashMap::new();
    loop {
        tick.tick().await;
        if !matches!(*shared.phase.borrow(), Phase::Running) {
            continue;
        }
        let databases: Vec<String> = shared.federations().keys().cloned().collect();
        services.retain(|db, c| databases.contains(db) && !c.is_closed());
        for database in databases {
            if !services.contains_key(&database) {
                match crate::tiering::service_connection(&shared.target, &database).await {
                    Ok(c) => {
                        services.insert(database.clone(), c);
                    }
                    Err(e) => {
                        tracing::debug!(database, error = %e, "cannot look for materialized views to refresh");
                        continue;
                    }
                }
            }
            let service = &services[&database];
            pruners
                .entry(database.clone())
                .or_default()
                .tick(service)
                .await;
            if let Err(e) = crate::federation::matview::schedule::refresh_due(
                &shared.target,
                service,
                &database,
                addr,
            )
            .await
            {
                tracing::debug!(database, error = %e, "cannot look for materialized views to refresh");
            }
        }
    }
}

/// Lake maintenance over every tiered table, with the default options.
async fn maintain_all(shared: &Shared) {
    let options = crate::tiering::maintain::MaintainOptions::default();
    for (database, federation) in shared.federations().iter() {
        for table in &federation.tables {
            match crate::tiering::maintain::maintain(
                &shared.target,
                &federation.lake,
                table,
                database,
                &options,
            )
            .await
            {
                Ok(Some(r)) => {
                    crate::admin::metrics::METRICS.maintained(
                        &r.table,
                        r.snapshots_expired as u64,
                        r.orphans_removed as u64,
                        r.orphan_bytes,
                    );
                    tracing::info!(
                        table = %r.table,
                        retention_partitions = r.retention.partitions,
                        retention_rows = r.retention.rows,
                        compacted_files = r.compaction.files_rewritten,
                        compacted_into = r.compaction.files_written,
                        snapshots_expired = r.snapshots_expired,
                        expired_files = r.expired_files,
                        orphans_removed = r.orphans_removed,
                        orphan_bytes = r.orphan_bytes,
                        "maintained the lake"
                    )
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(table = %table.def.qualified(), error = %e, "lake maintenance failed")
                }
            }
        }
    }
}

/// On SIGHUP, reads the configuration again (when it came from a file or
/// the environment) and applies what can change while serving: the limits
/// and the log level. Then reads the tier definitions again. New sessions
/// use the new tier set; a set that fails its checks is logged and the old
/// one kept. Open sessions are not interrupted.
async fn reload_on_sighup(shared: Arc<Shared>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hangup.recv().await.is_some() {
        if let Some(source) = &shared.config.source {
            match source.reload() {
                Ok(new) => {
                    shared.limits.apply(&new);
                    if let Err(e) = crate::logging::set_level(&new.log_level) {
                        tracing::error!(error = %e, "log_level not changed");
                    }
                    for key in needs_restart(&shared.config, &new) {
                        tracing::warn!(
                            key,
                            "changed in the config, but takes effect only after a restart"
                        );
                    }
                    tracing::info!(
                        max_client_connections = new.max_client_connections,
                        max_federated_statements = new.max_federated_statements,
                        log_level = %new.log_level,
                        "configuration reloaded"
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, "configuration not reloaded; the previous one stays")
                }
            }
        }
        match load_tiers_with(
            &shared.config,
            &shared.target,
            &shared.limits,
            &shared.cache,
        )
        .await
        {
            Ok(federations) => {
                open_catalog_links(&federations);
                let tables: usize = federations.values().map(|f| f.tables.len()).sum();
                if let Ok(mut f) = shared.federations.write() {
                    *f = Arc::new(federations);
                }
                tracing::info!(tables, "tier definitions reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "tier definitions not reloaded; the previous ones stay")
            }
        }
    }
}

/// Keys whose new value a reload cannot apply.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut check = |key, same: bool| {
        if !same {
            keys.push(key)
        }
    };
    check("listen", old.listen == new.listen);
    check("admin_listen", old.admin_listen == new.admin_listen);
    check(
        "postgres_url",
        new.postgres.is_none() || old.postgres == new.postgres,
    );
    check("log_format", old.log_format == new.log_format);
    check("catalog_dir", old.catalog_dir == new.catalog_dir);
    check("lake", old.lake == new.lake);
    check("tier_interval", old.tier_interval == new.tier_interval);
    check(
        "maintain_interval",
        old.maintain_interval == new.maintain_interval,
    );
    check(
        "executor_memory",
        old.executor_memory == new.executor_memory,
    );
    check("cache_memory", old.cache_memory == new.cache_memory);
    check(
        "max_message_size",
        old.max_message_size == new.max_message_size,
    );
    check(
        "tls",
        old.tls.as_ref().map(|t| (&t.cert, &t.key)) == new.tls.as_ref().map(|t| (&t.cert, &t.key)),
    );
    keys
}

/// Reads the tier definitions of `catalog_dir`, checks each against
/// Postgres and makes sure its Iceberg table exists.
pub async fn load_tiers(
    config: &Config,
    target: &BackendTarget,
) -> Result<HashMap<String, Federation>, ServerError> {
    load_tiers_with(
        config,
        target,
        &Arc::new(Limits::new(config)),
        &Arc::new(ColdCache::new(config.cache_memory)),
    )
    .await
}

/// Opens, in the background, each database's connection for catalog
/// reads: a server's first statements need not open it.
fn open_catalog_links(federations: &HashMap<String, Federation>) {
    for federation in federations.values() {
        federation.catalog.connect();
    }
}

/// [`load_tiers`], for a server whose limits are `limits`.
async fn load_tiers_with(
    config: &Config,
    target: &BackendTarget,
    limits: &Arc<Limits>,
    cache: &Arc<ColdCache>,
) -> Result<HashMap<String, Federation>, ServerError> {
    let mut out: HashMap<String, Federation> = HashMap::new();
    let Some(dir) = &config.catalog_dir else {
        return Ok(out);
    };
    let defs = crate::catalog::load_dir(dir)?;
    if defs.is_empty() {
        return Ok(out);
    }
    let lake_config = config.lake.as_ref().ok_or(ServerError::NoWarehouse)?;
    let lake = crate::lake::Lake::open(lake_config).await?;
    let runtime = executor_runtime(config)?;
    let default_db = default_database(target);
    for def in defs {
        let db = def.database_or(&default_db).to_string();
        let client = crate::tiering::service_connection(target, &db).await?;
        let table = crate::tiering::describe(&client, &def, &db).await?;
        lake.ensure_table(&table).await?;
        if let Err(e) = crate::federation::hotcache::track(&client, &table).await {
            tracing::warn!(
                table = %def.qualified(),
                error = %e.as_db_error().map_or(e.to_string(), |d| d.message().to_string()),
                "writes to the table are not recorded, so the hot part of its aggregates is computed for every statement"
            );
        }
        tracing::info!(table = %def.qualified(), database = %db, file = %def.file.display(), "tiered table");
        out.entry(db.clone())
            .or_insert_with(|| Federation {
                lake: lake.clone(),
                tables: Vec::new(),
                runtime: runtime.clone(),
                limits: limits.clone(),
                cache: cache.clone(),
                byte_ordered_collation: Default::default(),
                catalog: crate::federation::CatalogLink::new(target.clone(), db),
                keeps_views: Default::default(),
                planner: Default::default(),
                search_paths: Default::default(),
            })
            .tables
            .push(std::sync::Arc::new(table));
    }
    Ok(out)
}

/// The executor's memory pool (`executor_memory`, shared by all federated
/// statements; operators spill to temporary files before a statement fails
/// with 53200).
fn executor_runtime(
    config: &Config,
) -> Result<Arc<datafusion::execution::runtime_env::RuntimeEnv>, ServerError> {
    use datafusion::execution::memory_pool::FairSpillPool;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    let pool: Arc<dyn datafusion::execution::memory_pool::MemoryPool> =
        Arc::new(FairSpillPool::new(config.executor_memory as usize));
    *crate::admin::metrics::METRICS
        .executor_pool
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(pool.clone());
    RuntimeEnvBuilder::new()
        .with_memory_pool(pool)
        .build_arc()
        .map_err(|e| ServerError::Executor(e.to_string()))
}

/// The database of `postgres_url`, as libpq would pick it.
pub fn default_database(target: &BackendTarget) -> String {
    target
        .dbname
        .clone()
        .or_else(|| target.user.clone())
        .unwrap_or_else(|| "postgres".into())
}
