//! Tiered tables for tests: the same rows in an oracle database (every row
//! in Postgres) and a tiered database whose aged rows the mover takes to
//! Iceberg, and the means to compare their answers.

use thermocline::Config;
use thermocline::backend::target::BackendTarget;
use tokio_postgres::SimpleQueryMessage;

use super::wire::{Msg, RawConn, bind, describe, execute, normalize, parse, query, sync};
use super::{Proxy, admin, client, fresh_db, pg, value};

pub const SCHEMA: &str = "
    CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, region text NOT NULL);
    CREATE TABLE orders (
        id bigint PRIMARY KEY,
        created_at timestamptz NOT NULL,
        customer_id int NOT NULL,
        amount numeric(12,2),
        status text NOT NULL,
        note varchar(40),
        score float8,
        day date NOT NULL,
        flag bool
    );
    CREATE VIEW paid_orders AS SELECT id, amount, created_at, customer_id FROM orders WHERE status = 'paid';
    CREATE VIEW paid_by_month AS
        SELECT date_trunc('month', created_at) AS month, count(*) AS n, sum(amount) AS total
        FROM paid_orders GROUP BY 1;";

/// Rows spread over two years before `anchor`, the same in both databases.
pub fn data(anchor: &str) -> String {
    format!(
        "INSERT INTO customers SELECT i, 'customer ' || i, (ARRAY['north','south','east','west'])[1 + i % 4]
           FROM generate_series(1, 20) i;
         INSERT INTO orders
         SELECT i,
                '{anchor}'::timestamptz - (i * interval '7 hours 13 minutes 7.5 seconds'),
                1 + i % 20,
                CASE WHEN i % 11 = 0 THEN NULL ELSE round((i * 37 % 10000) / 100.0, 2) END,
                (ARRAY['new','paid','shipped','returned'])[1 + i % 4],
                CASE WHEN i % 5 = 0 THEN NULL ELSE 'note ' || (i % 13) END,
                CASE WHEN i % 7 = 0 THEN NULL ELSE i * 0.1 END,
                ('{anchor}'::timestamptz - (i * interval '7 hours 13 minutes 7.5 seconds'))::date,
                CASE WHEN i % 3 = 0 THEN NULL ELSE i % 2 = 0 END
           FROM generate_series(1, 2400) i;"
    )
}

pub struct Setup {
    pub oracle: String,
    pub tiered: String,
    pub config: Config,
    pub _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Setup {
    /// The lake's warehouse directory.
    pub fn warehouse(&self) -> std::path::PathBuf {
        self._dirs.1.path().to_path_buf()
    }
}

pub async fn setup() -> Setup {
    let oracle = fresh_db("oracle").await;
    let tiered = fresh_db("tiered").await;
    let anchor: String = value("postgres", "SELECT (date_trunc('second', now()))::text").await;
    for db in [&oracle, &tiered] {
        let c = admin(db).await;
        c.batch_execute(SCHEMA).await.unwrap();
        c.batch_execute(&data(&anchor)).await.unwrap();
    }
    let catalog = tempfile::tempdir().unwrap();
    let warehouse = tempfile::tempdir().unwrap();
    std::fs::write(
        catalog.path().join("orders.toml"),
        format!(
            "table = \"public.orders\"\ntime_column = \"created_at\"\nhot_window = \"30 days\"\n\
             cold_retention = \"730 days\"\npartition_by = \"month\"\ndatabase = \"{tiered}\"\n"
        ),
    )
    .unwrap();
    let mut config = Config::default();
    config.postgres = Some(BackendTarget::parse(&pg().url()).unwrap());
    config.admin_listen = None;
    config.catalog_dir = Some(catalog.path().to_path_buf());
    config.lake = Some(thermocline::lake::LakeConfig {
        warehouse: warehouse.path().display().to_string(),
        ..Default::default()
    });
    config.tier_interval = None;
    Setup {
        oracle,
        tiered,
        config,
        _dirs: (catalog, warehouse),
    }
}

/// thermocline in front of the test Postgres, with the tiered table.
pub async fn serve(s: &Setup) -> Proxy {
    let c = s.config.clone();
    Proxy::start_with(move |config| *config = c).await
}

/// Postgres and the tier definitions of the tiered database, loaded as
/// the server loads them.
pub async fn tiers(s: &Setup) -> (BackendTarget, thermocline::federation::Federation) {
    let target = s.config.postgres.clone().unwrap();
    let mut feds = thermocline::server::load_tiers(&s.config, &target)
        .await
        .unwrap();
    (target, feds.remove(&s.tiered).unwrap())
}

/// One pass of the mover, through the library.
pub async fn move_rows(s: &Setup) -> u64 {
    let (target, fed) = tiers(s).await;
    let report =
        thermocline::tiering::mover::run_once(&target, &fed.lake, &fed.tables[0], &s.tiered, false)
            .await
            .unwrap()
            .expect("no other mover");
    report.rows_deleted
}

/// A tier definition for another table of the tiered database, 30 days hot.
pub fn define_tier(s: &Setup, table: &str, time_column: &str, partition_by: &str) {
    std::fs::write(
        s._dirs.0.path().join(format!("{table}.toml")),
        format!(
            "table = \"public.{table}\"\ntime_column = \"{time_column}\"\nhot_window = \"30 days\"\n\
             partition_by = \"{partition_by}\"\ndatabase = \"{}\"\n",
            s.tiered
        ),
    )
    .unwrap();
}

/// A new table in both databases (`sql` creates and fills it), tiered by
/// its `at` column by month, and a mover pass over every tiered table;
/// how many of its rows stay hot.
pub async fn tier_new_table(s: &Setup, table: &str, sql: &str) -> i64 {
    in_both(s, sql).await;
    define_tier(s, table, "at", "month");
    move_every_table(s).await;
    value(&s.tiered, &format!("SELECT count(*) FROM {table}")).await
}

/// One pass of the mover for every tiered table; how many there are.
pub async fn move_every_table(s: &Setup) -> usize {
    let (target, fed) = tiers(s).await;
    for t in &fed.tables {
        thermocline::tiering::mover::run_once(&target, &fed.lake, t, &s.tiered, false)
            .await
            .unwrap()
            .expect("no other mover");
    }
    fed.tables.len()
}

/// A pass of the mover for every tiered table, which must move the rows
/// of `table` whose id exceeds `above` (late rows, older than the
/// boundary); then `tier verify` of `table` against the checksums
/// recorded when its rows were moved. What went wrong, if anything.
pub async fn move_late_rows_and_verify(s: &Setup, table: &str, above: i64) -> Vec<String> {
    let mut failures = Vec::new();
    move_every_table(s).await;
    let hot_late: i64 = value(
        &s.tiered,
        &format!("SELECT count(*) FROM {table} WHERE id > {above}"),
    )
    .await;
    if hot_late != 0 {
        failures.push(format!("{hot_late} late rows of {table} were not moved"));
    }
    let (target, fed) = tiers(s).await;
    let tiered = fed
        .tables
        .iter()
        .find(|t| t.def.qualified() == format!("public.{table}"))
        .expect("the table is tiered");
    let report = thermocline::tiering::verify::verify(&target, &fed.lake, tiered, &s.tiered)
        .await
        .unwrap();
    if report.mismatches() != 0 || report.partitions.is_empty() {
        failures.push(format!("verify of {table}: {report:?}"));
    }
    failures
}

/// `tier verify` of the orders table, through the library.
pub async fn verify_orders(s: &Setup) -> thermocline::tiering::verify::VerifyReport {
    let (target, fed) = tiers(s).await;
    thermocline::tiering::verify::verify(&target, &fed.lake, &fed.tables[0], &s.tiered)
        .await
        .unwrap()
}

pub async fn hot_count(db: &str) -> i64 {
    value(db, "SELECT count(*) FROM orders").await
}

/// A statement's answer: column names, rows as text, or the SQLSTATE.
#[derive(Debug, PartialEq)]
pub enum Answer {
    Rows(Vec<String>, Vec<Vec<Option<String>>>),
    Error(String),
}

pub async fn ask(c: &tokio_postgres::Client, sql: &str) -> Answer {
    match c.simple_query(sql).await {
        Ok(msgs) => {
            let mut names = Vec::new();
            let mut rows = Vec::new();
            for m in msgs {
                match m {
                    SimpleQueryMessage::RowDescription(cols) => {
                        names = cols.iter().map(|c| c.name().to_string()).collect();
                    }
                    SimpleQueryMessage::Row(r) => {
                        if names.is_empty() {
                            names = r.columns().iter().map(|c| c.name().to_string()).collect();
                        }
                        rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
                    }
                    _ => {}
                }
            }
            if !sql.to_lowercase().contains("order by") {
                rows.sort();
            }
            Answer::Rows(names, rows)
        }
        Err(e) => Answer::Error(
            e.as_db_error()
                .map(|d| d.code().code().to_string())
                .unwrap_or_else(|| e.to_string()),
        ),
    }
}

pub async fn same_answers(s: &Setup, proxy: &Proxy, queries: &[&str]) {
    let direct = client(pg().port(), "postgres", &s.oracle).await;
    let through = client(proxy.port(), "postgres", &s.tiered).await;
    for sql in queries {
        let want = ask(&direct, sql).await;
        let got = ask(&through, sql).await;
        assert_eq!(got, want, "through thermocline vs the oracle for:\n{sql}");
    }
}

pub async fn oracle_now(s: &Setup) -> String {
    value(&s.oracle, "SELECT now()::text").await
}

/// Runs the same statements in the oracle and the tiered database.
pub async fn in_both(s: &Setup, sql: &str) {
    for db in [&s.oracle, &s.tiered] {
        admin(db).await.batch_execute(sql).await.unwrap();
    }
}

/// Statements asked of the oracle directly and of thermocline, over the
/// simple protocol (rows as text) and over the extended one with every
/// result column in binary.
pub struct BothProtocols {
    pub direct: tokio_postgres::Client,
    pub through: tokio_postgres::Client,
    wire_direct: RawConn,
    wire_through: RawConn,
}

impl BothProtocols {
    pub async fn connect(s: &Setup, proxy: &Proxy) -> Self {
        BothProtocols {
            direct: client(pg().port(), "postgres", &s.oracle).await,
            through: client(proxy.port(), "postgres", &s.tiered).await,
            wire_direct: RawConn::connect(pg().port(), "postgres", &s.oracle).await.0,
            wire_through: RawConn::connect(proxy.port(), "postgres", &s.tiered)
                .await
                .0,
        }
    }

    /// What thermocline answered instead of refusing `sql` with 0A000;
    /// `None` when it refused it.
    pub async fn not_refused(&self, sql: &str) -> Option<String> {
        let got = ask(&self.through, sql).await;
        if got != Answer::Error("0A000".into()) {
            return Some(format!("{sql}\n  expected 0A000, got {got:?}"));
        }
        // Prepared and executed (the extended protocol) too.
        match self.through.query(sql, &[]).await {
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::FEATURE_NOT_SUPPORTED) => {
                None
            }
            Err(e) => Some(format!("{sql}\n  extended: expected 0A000, got {e}")),
            Ok(rows) => Some(format!(
                "{sql}\n  extended: expected 0A000, got {} rows",
                rows.len()
            )),
        }
    }

    /// Runs `sql` (a SET) on all four connections.
    pub async fn run_everywhere(&mut self, sql: &str) {
        self.direct.batch_execute(sql).await.unwrap();
        self.through.batch_execute(sql).await.unwrap();
        for wire in [&mut self.wire_direct, &mut self.wire_through] {
            wire.send(&query(sql)).await;
            let replies = wire.until_ready(1).await;
            assert!(replies.iter().all(|m| m.tag != b'E'), "{sql}: {replies:?}");
        }
    }

    /// What differs between the two answers to `sql`; `None` when they
    /// are the same in text and in binary.
    /// What the EXPLAIN of `sql` through thermocline lacks of `wants`
    /// (filters in the SQL sent to Postgres, say), each with the plan.
    pub async fn explain_lacks(&self, sql: &str, wants: &[&str]) -> Vec<String> {
        let plan: Vec<String> = self
            .through
            .simple_query(&format!("EXPLAIN {sql}"))
            .await
            .unwrap()
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .collect();
        let plan = plan.join("\n");
        wants
            .iter()
            .filter(|w| !plan.contains(*w))
            .map(|w| format!("EXPLAIN lacks {w:?}:\n{plan}"))
            .collect()
    }

    pub async fn differs(&mut self, sql: &str) -> Option<String> {
        let want = ask(&self.direct, sql).await;
        let got = ask(&self.through, sql).await;
        if got != want {
            // The first row that differs, not every row.
            let (want, got) = match (&want, &got) {
                (Answer::Rows(wn, w), Answer::Rows(gn, g)) if wn == gn => {
                    let at = w
                        .iter()
                        .zip(g)
                        .position(|(a, b)| a != b)
                        .unwrap_or(w.len().min(g.len()));
                    (
                        format!("row {at}: {:?} of {}", w.get(at), w.len()),
                        format!("{:?} of {}", g.get(at), g.len()),
                    )
                }
                (_, Answer::Error(code)) => {
                    let message = match self.through.simple_query(sql).await {
                        Err(e) => e.as_db_error().map(|d| d.message().to_string()),
                        Ok(_) => None,
                    };
                    (format!("{want:?}"), format!("{code} {message:?}"))
                }
                _ => (format!("{want:?}"), format!("{got:?}")),
            };
            let short = |t: String| t.chars().take(400).collect::<String>();
            return Some(format!(
                "{sql}\n  text: oracle {}\n        thermocline {}",
                short(want),
                short(got)
            ));
        }
        self.differs_in_binary(sql, &[]).await
    }

    /// What differs between the two answers to `sql` with these parameters
    /// (in text, of the types Postgres infers), asked over the extended
    /// protocol with every result column in binary.
    pub async fn differs_in_binary(&mut self, sql: &str, params: &[&str]) -> Option<String> {
        let params: Vec<Option<&[u8]>> = params.iter().map(|p| Some(p.as_bytes())).collect();
        let script = [
            parse("", sql, &[]),
            bind("", "", &[], &params, &[1]),
            describe(b'P', ""),
            execute("", 0),
            sync(),
        ]
        .concat();
        self.wire_direct.send(&script).await;
        self.wire_through.send(&script).await;
        // Errors compare by severity, SQLSTATE and message: Postgres's also
        // name its own source file and line.
        let essential = |msgs: Vec<Msg>| -> Vec<Msg> {
            normalize(&msgs)
                .into_iter()
                .map(|mut m| {
                    if m.tag == b'E' {
                        m.body = [b'S', b'C', b'M']
                            .iter()
                            .map(|c| m.field(*c).unwrap_or_default())
                            .collect::<Vec<_>>()
                            .join("|")
                            .into_bytes();
                    }
                    m
                })
                .collect()
        };
        let mut want = essential(self.wire_direct.until_ready(1).await);
        let mut got = essential(self.wire_through.until_ready(1).await);
        if !sql.to_lowercase().contains("order by") {
            want.sort_by(|a, b| (a.tag, &a.body).cmp(&(b.tag, &b.body)));
            got.sort_by(|a, b| (a.tag, &a.body).cmp(&(b.tag, &b.body)));
        }
        if got == want {
            return None;
        }
        let at = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0);
        Some(format!(
            "{sql}\n  binary: oracle {:?}\n          thermocline {:?}",
            want.get(at),
            got.get(at)
        ))
    }
}
