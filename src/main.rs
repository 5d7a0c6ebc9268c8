//! The `thermocline` command.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use thermocline::backend::embedded::{EmbeddedOptions, EmbeddedPostgres};
use thermocline::backend::target::BackendTarget;
use thermocline::config::Config;
use thermocline::tiering::TieredTable;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A PostgreSQL-wire server that shows each tiered table whole: recent rows
/// from PostgreSQL, history from Apache Iceberg.
#[derive(Parser)]
#[command(name = "thermocline", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve Postgres clients.
    Serve(ServeArgs),
    /// Try it: a private Postgres with a sample `orders` table (two years of
    /// rows, 30 days hot, the rest in a local Iceberg lake) served on
    /// 127.0.0.1:6432.
    Demo {
        /// Rows in the sample orders table.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Address to serve on.
        #[arg(long, default_value = "127.0.0.1:6432")]
        listen: String,
    },
    /// Tiering: move rows older than each table's hot window to the lake,
    /// maintain the lake, verify it.
    Tier {
        #[command(subcommand)]
        action: TierCommand,
    },
    /// Check a config file (and the environment) and exit: 0 if valid, 2 if not.
    CheckConfig {
        /// The TOML config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TierCommand {
    /// One pass of the mover over every tiered table (or one).
    Run {
        /// The TOML config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Only this table (as in its tier definition, e.g. public.orders).
        #[arg(long)]
        table: Option<String>,
        /// Report what would move, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Lake maintenance: take out partitions past the table's
    /// cold_retention, compact small files, expire old snapshots and
    /// remove files nothing refers to (what expiry freed, and the files of
    /// crashed passes).
    Maintain {
        /// The TOML config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Only this table (as in its tier definition, e.g. public.orders).
        #[arg(long)]
        table: Option<String>,
        /// Snapshots younger than this are kept.
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        snapshot_age: std::time::Duration,
        /// The newest snapshots kept whatever their age (at least 1).
        #[arg(long, default_value_t = 10)]
        keep_snapshots: usize,
        /// Unreferenced files younger than this are kept.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        orphan_age: std::time::Duration,
        /// Compaction rewrites a partition's files under half this size
        /// into files of up to this size.
        #[arg(long, default_value = "128MB", value_parser = thermocline::config::parse_size_text)]
        target_file_size: u64,
        /// Leave small files as they are.
        #[arg(long)]
        no_compaction: bool,
        /// Report what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Adopt a table that already holds a long history: move its rows older
    /// than the hot window to the lake a slice at a time (each slice its own
    /// pass), printing progress. Stopped at any point, it resumes where it
    /// stopped when run again.
    Backfill {
        /// The TOML config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The tiered table (as in its tier definition, e.g. public.orders).
        #[arg(long)]
        table: String,
        /// Where slicing starts, a value of the time column (default: the
        /// oldest row). The first slice also takes any older rows.
        #[arg(long)]
        from: Option<String>,
        /// The last watermark (default, and at most: the start of the hot
        /// window).
        #[arg(long)]
        to: Option<String>,
        /// The width of a slice, a Postgres interval.
        #[arg(long, default_value = "1 month")]
        step: String,
    },
    /// Check every partition of the lake against what the mover wrote and
    /// against Postgres; exit 1 on any mismatch.
    Verify {
        /// The TOML config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Only this table (as in its tier definition, e.g. public.orders).
        #[arg(long)]
        table: Option<String>,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The TOML config file (every key can also be set as THERMOCLINE_<KEY>).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Address clients connect to [default: 127.0.0.1:6432].
    #[arg(long)]
    listen: Option<String>,
    /// Address of /health and /ready, or "off" [default: 127.0.0.1:9187].
    #[arg(long)]
    admin_listen: Option<String>,
    /// The Postgres behind thermocline, e.g. postgres://127.0.0.1:5432/postgres?sslmode=disable.
    #[arg(long)]
    postgres_url: Option<String>,
    /// Start a private Postgres from this machine's PostgreSQL binaries.
    #[arg(long)]
    embedded_postgres: bool,
    /// Data directory for --embedded-postgres (default: a temporary one).
    #[arg(long)]
    embedded_postgres_dir: Option<PathBuf>,
}

fn load(
    file: Option<&std::path::Path>,
    flags: Vec<(&'static str, String)>,
) -> Result<Config, ExitCode> {
    Config::load_with_flags(file, flags).map_err(|e| {
        eprintln!("thermocline: {e}");
        ExitCode::from(2)
    })
}

/// The configuration of a `tier` command, which needs a Postgres; logging
/// started.
fn load_for_tier(file: Option<&std::path::Path>, verb: &str) -> Result<Config, ExitCode> {
    let config = load(file, Vec::new())?;
    if config.postgres.is_none() {
        eprintln!("thermocline: `tier {verb}` needs postgres_url (or THERMOCLINE_POSTGRES_URL)");
        return Err(ExitCode::from(2));
    }
    thermocline::logging::init(&config);
    Ok(config)
}

fn main() -> ExitCode {
    // Libraries we read with (Iceberg's reader among them) make errors as
    // a matter of course, and capture a backtrace in each where
    // RUST_BACKTRACE is set: a lake read then costs more than the read.
    // Panics still print theirs; RUST_LIB_BACKTRACE=1 asks for the rest.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: no other thread runs yet.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Demo { rows, listen } => {
            let config = match load(None, vec![("listen", listen)]) {
                Ok(c) => c,
                Err(code) => return code,
            };
            thermocline::logging::init(&config);
            run_to_end(demo(config, rows))
        }
        Command::CheckConfig { config } => match load(config.as_deref(), Vec::new()) {
            Ok(c) => match c.require_backend() {
                Ok(()) => {
                    println!("config is valid");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("thermocline: {e}");
                    ExitCode::from(2)
                }
            },
            Err(code) => code,
        },
        Command::Tier {
            action:
                TierCommand::Run {
                    config,
                    table,
                    dry_run,
                },
        } => match load_for_tier(config.as_deref(), "run") {
            Ok(config) => run_to_end(tier_run(config, table, dry_run)),
            Err(code) => code,
        },
        Command::Tier {
            action:
                TierCommand::Maintain {
                    config,
                    table,
                    snapshot_age,
                    keep_snapshots,
                    orphan_age,
                    target_file_size,
                    no_compaction,
                    dry_run,
                },
        } => match load_for_tier(config.as_deref(), "maintain") {
            Ok(config) => {
                let options = thermocline::tiering::maintain::MaintainOptions {
                    snapshot_age,
                    keep_snapshots,
                    orphan_age,
                    target_file_size: if no_compaction { 0 } else { target_file_size },
                    dry_run,
                };
                run_to_end(tier_maintain(config, table, options))
            }
            Err(code) => code,
        },
        Command::Tier {
            action:
                TierCommand::Backfill {
                    config,
                    table,
                    from,
                    to,
                    step,
                },
        } => match load_for_tier(config.as_deref(), "backfill") {
            Ok(config) => {
                let options = thermocline::tiering::backfill::BackfillOptions { from, to, step };
                run_to_end(tier_backfill(config, table, options))
            }
            Err(code) => code,
        },
        Command::Tier {
            action: TierCommand::Verify { config, table },
        } => match load_for_tier(config.as_deref(), "verify") {
            Ok(config) => run_to_end(tier_verify(config, table)),
            Err(code) => code,
        },
        Command::Serve(args) => {
            let mut flags = Vec::new();
            if let Some(v) = args.listen {
                flags.push(("listen", v));
            }
            if let Some(v) = args.admin_listen {
                flags.push(("admin_listen", v));
            }
            if let Some(v) = args.postgres_url {
                flags.push(("postgres_url", v));
            }
            if args.embedded_postgres {
                flags.push(("embedded_postgres", "true".into()));
            }
            if let Some(v) = args.embedded_postgres_dir {
                flags.push(("embedded_postgres_dir", v.display().to_string()));
            }
            let config = match load(args.config.as_deref(), flags) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if let Err(e) = config.require_backend() {
                eprintln!("thermocline: {e}");
                return ExitCode::from(2);
            }
            thermocline::logging::init(&config);
            run_to_end(serve(config))
        }
    }
}

/// Runs a command on a new runtime; an error is logged and printed, and
/// the process exits 1.
fn run_to_end(command: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("thermocline: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("thermocline: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(mut config: Config) -> anyhow::Result<()> {
    // Kept alive until the server has stopped; dropping it stops Postgres.
    let mut embedded = None;
    if config.embedded_postgres && config.postgres.is_none() {
        let options = EmbeddedOptions {
            data_dir: config.embedded_postgres_dir.clone(),
            ..Default::default()
        };
        let pg = tokio::task::spawn_blocking(move || {
            ensure_postgres_binaries();
            EmbeddedPostgres::start(options)
        })
        .await
        .context("starting embedded Postgres")?
        .context("starting embedded Postgres")?;
        config.postgres = Some(BackendTarget::parse(&pg.url()).context("embedded Postgres URL")?);
        embedded = Some(pg);
    }
    let target = config.postgres.clone().context("no Postgres configured")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (key `listen`)", config.listen))?;
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let admin = match config.admin_listen {
        Some(addr) => {
            let admin_listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (key `admin_listen`)"))?;
            tracing::info!(addr = %admin_listener.local_addr()?, "admin endpoint: /health, /ready");
            let mut stopped = stopping.clone();
            let done = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            Some(tokio::spawn(thermocline::admin::run(
                admin_listener,
                target.clone(),
                stopping.clone(),
                done,
            )))
        }
        None => None,
    };
    tracing::info!(listen = %listener.local_addr()?, postgres = %target, "thermocline is serving");
    let shutdown = async move {
        wait_for_signal().await;
        let _ = stopping_tx.send(true);
    };
    thermocline::run(listener, config, shutdown).await?;
    if let Some(admin) = admin {
        admin.abort();
    }
    drop(embedded);
    Ok(())
}

/// Installs PostgreSQL from the machine's packages when no server binaries
/// are found and this runs as root with apt-get (a fresh Debian machine or
/// container), so `demo` and `serve --embedded-postgres` work there as is.
fn ensure_postgres_binaries() {
    use std::process::Command;
    if thermocline::backend::embedded::find_bin_dir().is_some()
        || unsafe { libc::geteuid() } != 0
        || Command::new("apt-get").arg("--version").output().is_err()
    {
        return;
    }
    eprintln!(
        "thermocline: no PostgreSQL server binaries found; installing Debian's postgresql package"
    );
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "postgresql"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let _ = Command::new("apt-get").args(["update", "-q"]).status();
        install();
    }
}

/// `thermocline demo`: sample data, one pass of the mover, then serve.
async fn demo(mut config: Config, rows: u64) -> anyhow::Result<()> {
    let scratch = tempfile::Builder::new()
        .prefix("thermocline-demo")
        .tempdir()
        .context("creating a temporary directory")?;
    eprintln!("thermocline demo: starting a private Postgres");
    let pg = tokio::task::spawn_blocking(|| {
        ensure_postgres_binaries();
        EmbeddedPostgres::start(EmbeddedOptions::default())
    })
    .await
    .context("starting embedded Postgres")?
    .context("starting embedded Postgres")?;
    let target = BackendTarget::parse(&pg.url()).context("embedded Postgres URL")?;
    let client = thermocline::tiering::service_connection(&target, "postgres").await?;
    eprintln!("thermocline demo: loading {rows} orders over two years");
    client
        .batch_execute(&format!(
            "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, region text NOT NULL);
             INSERT INTO customers
             SELECT i, 'customer ' || i, (ARRAY['north', 'south', 'east', 'west'])[1 + i % 4]
               FROM generate_series(1, 1000) i;
             CREATE TABLE orders (
                 id bigint PRIMARY KEY,
                 created_at timestamptz NOT NULL,
                 customer_id int NOT NULL REFERENCES customers,
                 amount numeric(12,2) NOT NULL,
                 status text NOT NULL
             );
             INSERT INTO orders
             SELECT i, now() - (i::float8 / {rows}) * interval '730 days', 1 + (i * 7919) % 1000,
                    ((i * 37) % 50000) / 100.0 + 1,
                    (ARRAY['new', 'paid', 'shipped', 'returned'])[1 + i % 4]
               FROM generate_series(1, {rows}) i;
             CREATE INDEX ON orders (created_at);
             ANALYZE;"
        ))
        .await
        .context("loading the sample data")?;
    let catalog = scratch.path().join("catalog");
    std::fs::create_dir_all(&catalog)?;
    std::fs::write(
        catalog.join("orders.toml"),
        "table = \"public.orders\"\ntime_column = \"created_at\"\nhot_window = \"30 days\"\npartition_by = \"month\"\n",
    )?;
    config.postgres = Some(target.clone());
    config.catalog_dir = Some(catalog);
    config.lake = Some(thermocline::lake::LakeConfig {
        warehouse: scratch.path().join("lake").display().to_string(),
        ..Default::default()
    });
    config.admin_listen = None;
    let federations = thermocline::server::load_tiers(&config, &target).await?;
    let federation = federations
        .get("postgres")
        .context("the demo table is tiered")?;
    eprintln!("thermocline demo: moving rows older than 30 days to the lake");
    if let Some(r) = thermocline::tiering::mover::run_once(
        &target,
        &federation.lake,
        &federation.tables[0],
        "postgres",
        false,
    )
    .await?
    {
        eprintln!(
            "thermocline demo: {} rows moved to {} Parquet files; {} rows stay in Postgres",
            r.rows_deleted,
            r.files,
            rows.saturating_sub(r.rows_deleted)
        );
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    println!(
        "\nthermocline is serving the demo on {addr}. Connect with:\n\n    psql \"host={} port={} user=postgres dbname=postgres\"\n",
        addr.ip(),
        addr.port()
    );
    println!("Queries worth trying (orders holds two years; only 30 days are in Postgres):\n");
    println!("    SELECT date_trunc('month', created_at) AS month, count(*), sum(amount)");
    println!("      FROM orders GROUP BY 1 ORDER BY 1;");
    println!("    SELECT c.region, count(*), sum(o.amount) FROM orders o");
    println!("      JOIN customers c ON c.id = o.customer_id GROUP BY 1 ORDER BY 1;");
    println!("    EXPLAIN SELECT * FROM orders WHERE id = 4242;\n");
    println!("Stop with Ctrl-C.");
    config.tier_interval = Some(std::time::Duration::from_secs(300));
    thermocline::run(listener, config, wait_for_signal()).await?;
    drop(pg);
    drop(scratch);
    Ok(())
}

/// The tiered tables `only` names (all when `None`), with their database
/// and lake.
fn selected<'a>(
    federations: &'a std::collections::HashMap<String, thermocline::federation::Federation>,
    only: Option<&str>,
) -> anyhow::Result<
    Vec<(
        &'a str,
        &'a thermocline::federation::Federation,
        &'a TieredTable,
    )>,
> {
    if federations.is_empty() {
        anyhow::bail!("no tiered tables: set catalog_dir to a directory of tier definitions");
    }
    let mut out = Vec::new();
    for (database, federation) in federations {
        for table in &federation.tables {
            let name = format!("{}.{}", table.def.schema, table.def.table);
            if only.is_some_and(|o| o != name && o != table.def.table && o != table.def.qualified())
            {
                continue;
            }
            out.push((database.as_str(), federation, table.as_ref()));
        }
    }
    if out.is_empty() {
        anyhow::bail!("no tiered table named {:?}", only.unwrap_or_default());
    }
    Ok(out)
}

async fn tier_run(config: Config, only: Option<String>, dry_run: bool) -> anyhow::Result<()> {
    let (target, federations) = tiers(&config).await?;
    for (database, federation, table) in selected(&federations, only.as_deref())? {
        let name = table.def.qualified();
        let report = thermocline::tiering::mover::run_once(
            &target,
            &federation.lake,
            table,
            database,
            dry_run,
        )
        .await
        .with_context(|| format!("moving {name}"))?;
        match report {
            Some(r) => println!(
                "{}{}: {} rows {} ({} written to {} files; {} late, older than the previous watermark), watermark {}",
                r.table,
                if dry_run { " (dry run)" } else { "" },
                r.rows_deleted,
                if dry_run { "would move" } else { "moved" },
                r.rows_written,
                r.files,
                r.late_rows,
                thermocline::tiering::mover::time_literal(table.time_column().pg_type, r.watermark)
            ),
            None => println!("{name}: skipped, another mover holds it"),
        }
    }
    Ok(())
}

async fn tier_backfill(
    config: Config,
    only: String,
    options: thermocline::tiering::backfill::BackfillOptions,
) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let (target, federations) = tiers(&config).await?;
    let tables = selected(&federations, Some(&only))?;
    let tty = std::io::stderr().is_terminal();
    for (database, federation, table) in tables {
        let name = table.def.qualified();
        let report = thermocline::tiering::backfill::backfill(
            &target,
            &federation.lake,
            table,
            database,
            &options,
            |p| print_progress(p, tty),
        )
        .await
        .with_context(|| format!("backfilling {name}"))?;
        println!(
            "{name}: {} rows moved in {} slices ({} already done by an earlier run), watermark {}",
            report.rows,
            report.slices_run,
            report.slices_skipped,
            report.watermark.as_deref().unwrap_or("none"),
        );
    }
    Ok(())
}

/// A backfill's progress on stderr: a bar redrawn in place on a terminal,
/// one logfmt line per slice otherwise.
fn print_progress(p: &thermocline::tiering::backfill::Progress, tty: bool) {
    use std::io::Write;
    let eta = p
        .eta_seconds()
        .map_or_else(|| "-".to_string(), |s| format!("{s:.0}"));
    let mut err = std::io::stderr().lock();
    if !tty {
        let _ = writeln!(
            err,
            "backfill table={} slice={}/{} watermark={:?} rows={} total={} rows_per_s={:.0} eta_s={eta}",
            p.table,
            p.slices_done,
            p.slices,
            p.watermark,
            p.rows,
            p.total,
            p.rows_per_second(),
        );
        return;
    }
    let done = if p.total > 0 {
        (p.rows as f64 / p.total as f64).min(1.0)
    } else {
        p.slices_done as f64 / p.slices.max(1) as f64
    };
    let filled = (done * 30.0).round() as usize;
    let _ = write!(
        err,
        "\r{} [{}{}] {:>3.0}%  {}/{} rows  {:.0} rows/s  ETA {eta}s  ",
        p.table,
        "#".repeat(filled),
        "-".repeat(30 - filled),
        done * 100.0,
        p.rows,
        p.total,
        p.rows_per_second(),
    );
    if p.slices_done == p.slices {
        let _ = writeln!(err);
    }
}

/// The Postgres target and the tiered tables of `config`, for the tier
/// commands.
async fn tiers(
    config: &Config,
) -> anyhow::Result<(
    thermocline::backend::target::BackendTarget,
    std::collections::HashMap<String, thermocline::federation::Federation>,
)> {
    let target = config.postgres.clone().context("no Postgres configured")?;
    let federations = thermocline::server::load_tiers(config, &target).await?;
    Ok((target, federations))
}

async fn tier_maintain(
    config: Config,
    only: Option<String>,
    options: thermocline::tiering::maintain::MaintainOptions,
) -> anyhow::Result<()> {
    let (target, federations) = tiers(&config).await?;
    for (database, federation, table) in selected(&federations, only.as_deref())? {
        let name = table.def.qualified();
        let report = thermocline::tiering::maintain::maintain(
            &target,
            &federation.lake,
            table,
            database,
            &options,
        )
        .await
        .with_context(|| format!("maintaining {name}"))?;
        let dry = options.dry_run;
        let would = if dry { "would be " } else { "" };
        match report {
            Some(r) => {
                let compaction = if options.target_file_size == 0 {
                    "off".to_string()
                } else {
                    let into = if dry {
                        String::new()
                    } else {
                        format!(" as {} files", r.compaction.files_written)
                    };
                    format!(
                        "{} small files ({} bytes) in {} partitions {would}rewritten{into}",
                        r.compaction.files_rewritten,
                        r.compaction.bytes_rewritten,
                        r.compaction.partitions
                    )
                };
                println!(
                    "{}{}: retention: {} partitions before {} ({} files, {} rows) {would}taken out; \
                     compaction: {compaction}; {} of {} snapshots expired ({} files only they named removed); \
                     {} unreferenced files ({} bytes) {would}removed; {} younger than --orphan-age kept",
                    r.table,
                    if dry { " (dry run)" } else { "" },
                    r.retention.partitions,
                    thermocline::tiering::mover::time_literal(
                        table.time_column().pg_type,
                        r.retention.boundary
                    ),
                    r.retention.files,
                    r.retention.rows,
                    r.snapshots_expired,
                    r.snapshots_before,
                    r.expired_files,
                    r.orphans_removed,
                    r.orphan_bytes,
                    r.orphans_young
                )
            }
            None => println!("{name}: skipped, a mover holds it"),
        }
    }
    Ok(())
}

async fn tier_verify(config: Config, only: Option<String>) -> anyhow::Result<()> {
    let (target, federations) = tiers(&config).await?;
    let mut mismatches = 0;
    for (database, federation, table) in selected(&federations, only.as_deref())? {
        let r = thermocline::tiering::verify::verify(&target, &federation.lake, table, database)
            .await
            .with_context(|| format!("verifying {}", table.def.qualified()))?;
        let watermark = r
            .watermark
            .map_or("none (nothing moved yet)".to_string(), |w| {
                thermocline::tiering::mover::time_literal(table.time_column().pg_type, w)
            });
        println!(
            "{}: watermark {watermark}, snapshot {}",
            r.table,
            r.snapshot_id.map_or("none".into(), |s| s.to_string())
        );
        println!(
            "  {:<14} {:>6} {:>14} {:>12} {:>9} {:>12} {:>8}  status",
            "partition", "files", "manifest rows", "lake rows", "checksum", "stragglers", "in both"
        );
        for p in &r.partitions {
            let checksum = match &p.recorded {
                None => "n/a",
                Some(want) if *want == p.lake => "ok",
                Some(_) => "DIFFERS",
            };
            println!(
                "  {:<14} {:>6} {:>14} {:>12} {:>9} {:>12} {:>8}  {}",
                p.label,
                p.files,
                p.manifest_rows,
                p.lake.rows,
                checksum,
                p.stragglers,
                p.in_both,
                if p.problems.is_empty() {
                    "ok".to_string()
                } else {
                    p.problems.join("; ")
                }
            );
        }
        for problem in &r.problems {
            println!("  {problem}");
        }
        let lake_rows: u64 = r.partitions.iter().map(|p| p.lake.rows).sum();
        let in_both: u64 = r.partitions.iter().map(|p| p.in_both).sum();
        println!(
            "  {} partitions, {lake_rows} rows in the lake, {} mismatches{}",
            r.partitions.len(),
            r.mismatches(),
            if in_both > 0 {
                format!(
                    "; {in_both} rows are in both tiers after an interrupted pass (read once; the next pass removes them from Postgres)"
                )
            } else {
                String::new()
            }
        );
        mismatches += r.mismatches();
    }
    if mismatches > 0 {
        anyhow::bail!("verify found {mismatches} mismatches");
    }
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
