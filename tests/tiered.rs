//! Tiered tables, differentially: the same rows are loaded into an oracle
//! database (every row in Postgres) and into a tiered database, whose aged
//! rows the mover takes to Iceberg; every query must answer the same
//! through thermocline as the oracle does directly — rows, column names,
//! and SQLSTATEs.

mod common;

use std::path::Path;

use common::tiered::{
    Answer, BothProtocols, Setup, ask, define_tier, hot_count, in_both, move_every_table,
    move_late_rows_and_verify, move_rows, oracle_now, same_answers, serve, setup, tier_new_table,
    tiers, verify_orders,
};
use common::{Proxy, ServeProcess, admin, assert_same_transcript, client, pg, transcript, value};
use tokio_postgres::SimpleQueryMessage;

const QUERIES: &[&str] = &[
    "SELECT count(*) FROM orders",
    "SELECT count(*), sum(amount), min(created_at), max(created_at), min(day), max(day) FROM orders",
    "SELECT id, created_at, amount, status, note, score, day, flag FROM orders WHERE id % 97 = 0 ORDER BY id",
    "SELECT * FROM orders WHERE id = 42",
    "SELECT * FROM orders WHERE id IN (7, 1500, 2399)",
    "SELECT status, count(*), sum(amount), max(amount) FROM orders GROUP BY status ORDER BY status",
    "SELECT status, count(*) FILTER (WHERE flag), sum(amount) FILTER (WHERE NOT flag) FROM orders GROUP BY status ORDER BY status",
    "SELECT date_trunc('month', created_at) AS month, count(*) FROM orders GROUP BY 1 ORDER BY 1",
    "SELECT c.region, count(*), sum(o.amount) FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY c.region ORDER BY 1",
    "SELECT id, amount FROM orders WHERE created_at < now() - interval '200 days' AND amount > 50 ORDER BY id LIMIT 20",
    "SELECT id, score FROM orders WHERE customer_id IN (1, 2, 3) AND score IS NOT NULL ORDER BY id DESC LIMIT 30",
    "SELECT count(*) FROM orders WHERE note IS NULL OR flag",
    "-- a dashboard's comment\nSELECT max(amount) FROM \"public\".\"orders\" WHERE status = 'shipped'",
    "WITH big AS (SELECT * FROM orders WHERE amount > 90) SELECT count(*), min(id) FROM big",
    "SELECT count(*) FROM orders WHERE day BETWEEN '2025-06-01' AND '2025-12-31'",
    "SELECT id FROM orders WHERE id > 2390 UNION ALL SELECT id FROM customers ORDER BY 1",
    "SELECT nosuch FROM orders",
    "SELECT count(*) FROM orders WHERE amount / 0 > 1",
    "SELECT count(*) FROM orders WHERE created_at > now() - interval '10 days'",
    // Rows the tests insert take now() in each database: their times differ
    // by a few microseconds, so these leave the time column out.
    "SELECT id, amount FROM orders ORDER BY created_at DESC, id LIMIT 5",
    "SELECT id, day FROM orders WHERE status = 'paid' AND amount > 20 ORDER BY created_at DESC, id LIMIT 7 OFFSET 2",
    "SELECT id FROM orders ORDER BY created_at DESC, id LIMIT 300",
    "SELECT id, created_at FROM orders ORDER BY created_at, id LIMIT 4",
    "SELECT id, amount FROM orders ORDER BY amount DESC NULLS LAST, id LIMIT 6",
    "SELECT id, score FROM orders ORDER BY score NULLS FIRST, id DESC LIMIT 9",
    "SELECT id, day FROM orders WHERE flag ORDER BY day DESC, id LIMIT 3",
    // Output columns of the same name, as Postgres allows.
    "SELECT id, id, amount AS a, status AS a FROM orders WHERE id % 200 = 0 ORDER BY id",
    "SELECT count(*), count(*), sum(amount) FROM orders",
    "SELECT o.id, id FROM orders o WHERE id < 5 ORDER BY 1",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_equal_the_oracle_across_both_tiers() {
    let mut s = setup().await;
    let before = hot_count(&s.tiered).await;
    let moved = move_rows(&s).await;
    assert!(
        moved > 2000,
        "most rows are older than 30 days: moved {moved}"
    );
    assert_eq!(hot_count(&s.tiered).await, before - moved as i64);

    let proxy = serve(&s).await;
    // With no cache of cold partial results, the lake's part of a scan is
    // read as the scan is planned.
    s.config.cache_memory = 0;
    let uncached = serve(&s).await;
    same_answers(&s, &proxy, QUERIES).await;
    same_answers(&s, &uncached, QUERIES).await;

    // A late row older than the window lands in Postgres: it is a straggler,
    // returned once; so is a row newer than the window.
    in_both(
        &s,
        "INSERT INTO orders VALUES (100001, now() - interval '400 days', 3, 12.34, 'late', NULL, 0.5, current_date - 400, true);
                 INSERT INTO orders VALUES (100002, now() - interval '1 day', 4, 1.00, 'new', 'fresh', NULL, current_date - 1, false);",
    )
    .await;
    same_answers(&s, &proxy, QUERIES).await;
    same_answers(&s, &uncached, QUERIES).await;

    // Another pass moves the straggler; answers stay the same.
    assert_eq!(move_rows(&s).await, 1);
    same_answers(&s, &proxy, QUERIES).await;
    same_answers(&s, &uncached, QUERIES).await;
}

/// The setup with its old rows moved to the lake, thermocline serving it,
/// and a client of the oracle and one through thermocline.
async fn moved_and_served() -> (Setup, Proxy, tokio_postgres::Client, tokio_postgres::Client) {
    let s = setup().await;
    move_rows(&s).await;
    let proxy = serve(&s).await;
    let direct = client(pg().port(), "postgres", &s.oracle).await;
    let through = client(proxy.port(), "postgres", &s.tiered).await;
    (s, proxy, direct, through)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_time_zone_shapes_answers() {
    let (_s, _proxy, direct, through) = moved_and_served().await;
    for zone in [
        "America/New_York",
        "Asia/Kolkata",
        "UTC",
        "America/Los_Angeles",
        "Pacific/Kiritimati",
    ] {
        let set = format!("SET TimeZone = '{zone}'");
        direct.batch_execute(&set).await.unwrap();
        through.batch_execute(&set).await.unwrap();
        for sql in [
            "SELECT min(created_at), max(created_at) FROM orders",
            "SELECT date_trunc('day', created_at) AS d, count(*) FROM orders GROUP BY 1 ORDER BY 1 LIMIT 40",
            "SELECT id, created_at FROM orders WHERE id % 400 = 0 ORDER BY id",
            // Grafana's epoch shapes: an epoch is the same in every zone.
            "SELECT floor(extract(epoch from created_at)/86400)*86400 AS \"time\", count(*) FROM orders GROUP BY 1 ORDER BY 1 LIMIT 40",
            "SELECT id, extract(epoch from created_at), extract(epoch from day) FROM orders WHERE id % 97 = 0 ORDER BY id",
            // Superset's time filter: the text is read in the session's zone.
            "SELECT count(*), min(created_at) FROM orders WHERE created_at >= TO_TIMESTAMP('2025-03-01 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US') AND created_at < TO_TIMESTAMP('2025-03-02 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US')",
            "SELECT TO_TIMESTAMP('2025-03-01 12:00', 'YYYY-MM-DD HH24:MI') AS t, count(*) FROM orders WHERE created_at < TO_TIMESTAMP('2025-03-01 12:00', 'YYYY-MM-DD HH24:MI')",
            // Tableau's cast to timestamp is the wall clock in the session's zone.
            "SELECT DATE_TRUNC( 'MONTH', CAST(\"orders\".\"created_at\" AS TIMESTAMP) ) AS \"tmn:created_at:ok\", SUM(\"orders\".\"amount\") AS \"sum:amount:ok\" FROM \"public\".\"orders\" \"orders\" WHERE (\"orders\".\"created_at\" >= (TIMESTAMP '2025-03-01 00:00:00.000')) GROUP BY 1 ORDER BY 1",
            "SELECT id, CAST(created_at AS TIMESTAMP) AS wall FROM orders WHERE id % 400 = 0 ORDER BY id",
            "SELECT max(created_at::timestamp), min(created_at::date), count(DISTINCT created_at::date) FROM orders",
            "SELECT count(*) FROM orders WHERE day >= current_date - 400",
            "SELECT current_date, count(*) FROM orders WHERE created_at::date < current_date - 300",
            "SELECT CAST(extract(hour from created_at) AS integer) AS h, count(*) FROM orders GROUP BY 1 ORDER BY 1",
            "SELECT CAST(extract(doy from created_at) AS integer) AS d, count(*) FROM orders GROUP BY 1 ORDER BY 1 LIMIT 20",
            "SELECT (created_at AT TIME ZONE 'UTC') AT TIME ZONE 'Asia/Tokyo' AS t FROM orders WHERE id % 500 = 0 ORDER BY id",
            "SELECT count(*) FROM orders WHERE created_at::date = current_date - 100",
            "SELECT count(*) FROM orders WHERE created_at < current_date - 200",
            "SELECT count(*) FROM orders WHERE created_at >= date_trunc('month', now()) - interval '6 months'",
            "SELECT date_trunc('week', created_at)::date AS w, count(*) FROM orders GROUP BY 1 ORDER BY 1 LIMIT 10",
            "SELECT count(*) FROM orders WHERE day = created_at::date",
            "SELECT date_trunc('month', day) AS m, count(*) FROM orders GROUP BY 1 ORDER BY 1",
            "SELECT count(*) FROM orders WHERE created_at::date BETWEEN current_date - 30 AND current_date - 1",
            "SELECT count(*) FROM orders WHERE created_at BETWEEN current_date - 400 AND current_date - 100",
            "SELECT id, day::timestamptz AS a, CAST(day AS timestamp) AS b, created_at::date - 1 AS c FROM orders WHERE id % 500 = 0 ORDER BY id",
            "SELECT max(created_at) - min(created_at) AS span, max(day) - min(day) FROM orders",
            "SELECT id, created_at - day FROM orders WHERE id % 500 = 0 ORDER BY id",
            "SELECT date_trunc('day', created_at) AS d, count(*) FROM orders WHERE created_at >= date_trunc('day', now()) - interval '400 days' GROUP BY 1 ORDER BY 1 LIMIT 5",
            "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24') AS h, extract(epoch from created_at AT TIME ZONE 'Asia/Tokyo') AS e FROM orders WHERE id % 500 = 0 ORDER BY id",
            "SELECT date_trunc('week', created_at) + interval '1 week' AS w, count(*) FROM orders GROUP BY 1 ORDER BY 1 LIMIT 10",
            "SELECT count(*) FROM orders WHERE created_at AT TIME ZONE 'America/Chicago' < '2025-06-01'",
            // Times written as Postgres reads them, in the session's zone.
            "SELECT count(*), min(created_at) FROM orders WHERE created_at >= '2025-03-01 12:00' AND created_at < '03/02/2025 06:30'",
            // to_char writes a timestamptz in the session's zone.
            "SELECT to_char(created_at, 'YYYY-MM-DD HH24:MI') AS t, count(*) FROM orders GROUP BY 1 ORDER BY 1 LIMIT 30",
            "SELECT to_char(created_at, 'IYYY-IW') AS w, count(*) FROM orders GROUP BY 1 ORDER BY 1",
            // A timestamptz's time of day is the session zone's.
            "SELECT id, created_at::time AS t, CAST(created_at AS time) FROM orders WHERE id % 400 = 0 ORDER BY id",
            "SELECT max(created_at::time), min(created_at::time) FROM orders",
            // Bounds the scan applies itself, read in the session's zone.
            "SELECT count(*), min(created_at) FROM orders WHERE created_at >= TIMESTAMP '2025-03-01 00:00:00' AND created_at < TIMESTAMP '2025-09-01 12:00:00'",
            "SELECT count(*) FROM orders WHERE created_at > '2025-05-01'::date AND created_at <= '2025-05-01'::date + 30",
            "SELECT c.region, count(*) FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.created_at < TIMESTAMPTZ '2025-07-01 00:00:00' GROUP BY 1 ORDER BY 1",
        ] {
            assert_eq!(
                ask(&through, sql).await,
                ask(&direct, sql).await,
                "{zone}: {sql}"
            );
        }
    }
}

/// Hot partial aggregates evaluate a date_trunc of the time column as
/// ranges between bucket starts Postgres lists: the buckets must be
/// date_trunc's own in every time zone, across daylight-saving changes
/// (both fall within the last 30 days of November), in zones with
/// half-hour and 45-minute offsets, and for a timestamp column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn date_trunc_buckets_equal_postgres_in_every_zone() {
    let s = setup().await;
    let anchor: String = value(
        &s.oracle,
        "SELECT date_trunc('second', localtimestamp)::text",
    )
    .await;
    in_both(
        &s,
        &format!(
            "CREATE TABLE readings (id bigint PRIMARY KEY, taken_at timestamp NOT NULL, v int NOT NULL);
             INSERT INTO readings SELECT i, '{anchor}'::timestamp - i * interval '3 hours 7 minutes', i % 17
               FROM generate_series(1, 2000) i;"
        ),
    )
    .await;
    // Rows in the hours that fall-back changes repeat, once in each
    // occurrence: Lord Howe (half an hour), New York, Berlin.
    in_both(
        &s,
        "INSERT INTO orders (id, created_at, customer_id, status, day)
         SELECT 100000 + n, t, 1, 'new', (t AT TIME ZONE 'UTC')::date
           FROM unnest(ARRAY['2025-04-05 14:45+00', '2025-04-05 15:15+00',
                             '2025-11-02 05:30+00', '2025-11-02 06:30+00',
                             '2025-10-26 00:30+00', '2025-10-26 01:30+00']::timestamptz[])
                WITH ORDINALITY AS r(t, n)",
    )
    .await;
    // A date time column too, and bounds on each time column that the
    // scan applies itself.
    in_both(
        &s,
        "CREATE TABLE visits (id bigint PRIMARY KEY, on_day date NOT NULL, n int NOT NULL);
         INSERT INTO visits SELECT i, current_date - i, i % 13 FROM generate_series(0, 899) i;",
    )
    .await;
    define_tier(&s, "readings", "taken_at", "day");
    define_tier(&s, "visits", "on_day", "month");
    assert_eq!(move_every_table(&s).await, 3);
    let bound = |sql: &'static str| {
        let oracle = s.oracle.clone();
        async move { value::<String>(&oracle, sql).await }
    };
    let (from_day, to_day) = (
        bound("SELECT (current_date - 400)::text").await,
        bound("SELECT (current_date - 45)::text").await,
    );
    let (from_time, to_time) = (
        bound("SELECT (localtimestamp - interval '150 days 7 hours')::text").await,
        bound("SELECT (localtimestamp - interval '40 days 30 minutes')::text").await,
    );
    let bounded = [
        format!(
            "SELECT count(*), sum(n), min(on_day), max(on_day) FROM visits WHERE on_day >= DATE '{from_day}' AND on_day < DATE '{to_day}'"
        ),
        format!(
            "SELECT count(*), sum(n) FROM visits WHERE on_day > DATE '{from_day}' AND on_day <= DATE '{to_day}'"
        ),
        format!("SELECT count(*) FROM visits WHERE on_day = DATE '{to_day}'"),
        format!(
            "SELECT count(*), sum(v), min(taken_at), max(taken_at) FROM readings WHERE taken_at >= TIMESTAMP '{from_time}' AND taken_at < TIMESTAMP '{to_time}'"
        ),
        format!(
            "SELECT count(*), sum(v) FROM readings WHERE taken_at > TIMESTAMP '{from_time}' AND taken_at <= TIMESTAMP '{to_time}'"
        ),
        format!(
            "SELECT count(*), sum(amount) FROM orders WHERE created_at >= TIMESTAMPTZ '{from_time}+00' AND created_at < TIMESTAMPTZ '{to_time}+00'"
        ),
    ];
    let proxy = serve(&s).await;
    let direct = client(pg().port(), "postgres", &s.oracle).await;
    let through = client(proxy.port(), "postgres", &s.tiered).await;

    let explained = through
        .simple_query(
            "EXPLAIN SELECT date_trunc('day', taken_at) AS d, count(*) FROM readings GROUP BY 1",
        )
        .await
        .unwrap();
    let plan: String = explained
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(|l| format!("{l}\n")),
            _ => None,
        })
        .collect();
    assert!(
        plan.contains("date_trunc('day', taken_at) evaluated as ranges"),
        "{plan}"
    );

    let queries = [
        "SELECT date_trunc('day', created_at) AS d, count(*), sum(amount) FROM orders GROUP BY 1 ORDER BY 1",
        "SELECT date_trunc('week', created_at) AS w, status, count(*), max(score) FROM orders GROUP BY 1, 2 ORDER BY 1, 2",
        "SELECT date_trunc('month', created_at) AS m, count(*) FILTER (WHERE flag), min(amount) FROM orders GROUP BY 1 ORDER BY 1",
        "SELECT date_trunc('quarter', created_at) AS q, date_trunc('year', created_at) AS y, count(*) FROM orders GROUP BY 1, 2 ORDER BY 1, 2",
        "SELECT count(*) FROM orders WHERE date_trunc('day', created_at) IN (SELECT max(date_trunc('day', created_at)) FROM orders)",
        "SELECT date_trunc('hour', created_at) AS h, count(*) FROM orders GROUP BY 1 ORDER BY 1",
        "SELECT date_trunc('day', taken_at) AS d, count(*), sum(v) FROM readings GROUP BY 1 ORDER BY 1",
        "SELECT date_trunc('hour', taken_at) AS h, max(v) FROM readings GROUP BY 1 ORDER BY 1",
        "SELECT date_trunc('month', taken_at) AS m, count(*) FROM readings GROUP BY 1 ORDER BY 1",
    ];
    for zone in [
        "America/New_York",
        "Europe/Berlin",
        "Australia/Lord_Howe",
        "Asia/Kathmandu",
        "America/St_Johns",
        "UTC",
    ] {
        let set = format!("SET TimeZone = '{zone}'");
        direct.batch_execute(&set).await.unwrap();
        through.batch_execute(&set).await.unwrap();
        for sql in queries
            .iter()
            .copied()
            .chain(bounded.iter().map(String::as_str))
        {
            assert_eq!(
                ask(&through, sql).await,
                ask(&direct, sql).await,
                "{zone}: {sql}"
            );
        }
    }
}

/// A prepared statement's hot aggregate is sent after the lake was read
/// (its queries do not share one snapshot). A mover committing in between
/// takes rows out of Postgres that the lake read does not hold: the
/// statement must fail with 40001 rather than miss them, and succeed when
/// run again. Maintenance committing in between (compaction) takes no row
/// out of Postgres: the statement succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_between_the_lake_read_and_a_late_query_gives_40001() {
    let s = setup().await;
    move_rows(&s).await;
    // A second file in one partition, for compaction to rewrite.
    in_both(
        &s,
        "INSERT INTO orders VALUES (100004, now() - interval '300 days', 3, 1.50, 'late', NULL, NULL, current_date - 300, true)",
    )
    .await;
    assert_eq!(move_rows(&s).await, 1);
    let config_file = s._dirs.0.path().join("late.toml.conf");
    let port = write_serve_config(&config_file, s.config.catalog_dir.as_ref().unwrap(), &s);
    let mut server = ServeProcess::start_with_env(
        &config_file,
        Some("info"),
        &[("THERMOCLINE_LATE_QUERY_DELAY_MS", "3000")],
    );
    server.wait_for("thermocline is serving").await;
    let sql = "SELECT count(*), count(id) FROM orders WHERE customer_id > 0";
    let want = async || -> i64 {
        admin(&s.oracle)
            .await
            .query_one(sql, &[])
            .await
            .unwrap()
            .get(0)
    };
    let through = client(port, "postgres", &s.tiered).await;
    let reading = tokio::spawn(async move {
        through
            .query_one(sql, &[])
            .await
            .map(|r| r.get::<_, i64>(0))
    });
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let (target, fed) = tiers(&s).await;
    let maintained = thermocline::tiering::maintain::maintain(
        &target,
        &fed.lake,
        &fed.tables[0],
        &s.tiered,
        &Default::default(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(maintained.compaction.files_written > 0, "{maintained:?}");
    assert_eq!(reading.await.unwrap().unwrap(), want().await);
    // A late row, older than the watermark: the next pass moves it.
    in_both(
        &s,
        "INSERT INTO orders VALUES (100005, now() - interval '400 days', 3, 2.50, 'late', NULL, NULL, current_date - 400, true)",
    )
    .await;
    let through = client(port, "postgres", &s.tiered).await;
    let reading = tokio::spawn(async move {
        let first = through
            .query_one(sql, &[])
            .await
            .map(|r| r.get::<_, i64>(0));
        let again = through
            .query_one(sql, &[])
            .await
            .map(|r| r.get::<_, i64>(0));
        (first, again)
    });
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    assert_eq!(move_rows(&s).await, 1);
    let (first, again) = reading.await.unwrap();
    let err = first.expect_err("the move landed between the lake read and the hot queries");
    assert_eq!(err.code().map(|c| c.code()), Some("40001"), "{err:?}");
    assert_eq!(again.unwrap(), want().await);
    server.stop();
}

/// statement_timeout bounds a federated statement as a whole (the lake and
/// the executor included), as Postgres bounds one holding every row: 57014,
/// the session goes on, and inside a transaction block the transaction is
/// aborted. Both protocols.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_stops_a_federated_statement() {
    let (_s, _proxy, direct, through) = moved_and_served().await;
    // Millions of numeric comparisons: far beyond 50 ms for both.
    let slow = "SELECT count(*) FROM orders a JOIN orders b ON a.amount < b.amount";
    let script = [
        "SET statement_timeout = '50ms'",
        slow,
        "SELECT 1",
        "RESET statement_timeout",
        "SELECT count(*), sum(amount) FROM orders",
        "BEGIN",
        "SET LOCAL statement_timeout = '50ms'",
        slow,
        "SELECT 1",
        "ROLLBACK",
        "SELECT count(*) FROM orders WHERE flag",
    ];
    for sql in script {
        assert_eq!(ask(&through, sql).await, ask(&direct, sql).await, "{sql}");
    }
    for c in [&direct, &through] {
        c.batch_execute("SET statement_timeout = '50ms'")
            .await
            .unwrap();
        let e = c.query(slow, &[]).await.unwrap_err();
        assert_eq!(
            e.as_db_error().map(|d| (d.code().code(), d.message())),
            Some(("57014", "canceling statement due to statement timeout"))
        );
        c.batch_execute("RESET statement_timeout").await.unwrap();
        let n: i64 = c
            .query_one("SELECT count(*) FROM orders", &[])
            .await
            .unwrap()
            .get(0);
        assert!(n > 2000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_see_their_own_writes_and_errors_abort_them() {
    let (_s, _proxy, direct, through) = moved_and_served().await;
    let script = [
        "BEGIN",
        "INSERT INTO orders VALUES (200001, now() - interval '500 days', 1, 5.00, 'txn', NULL, NULL, current_date - 500, NULL)",
        "SELECT count(*), sum(amount) FROM orders",
        "SELECT id, status FROM orders WHERE status = 'txn'",
        "SELECT nosuch FROM orders",
        "SELECT count(*) FROM orders WHERE amount / 0 > 1",
        "SELECT count(*) FROM orders",
        "ROLLBACK",
        "SELECT count(*) FROM orders WHERE status = 'txn'",
    ];
    for sql in script {
        assert_eq!(ask(&through, sql).await, ask(&direct, sql).await, "{sql}");
    }
}

/// The mover killed at each step of a pass — after its delete, between two
/// Parquet chunks, before its Iceberg commit, and between its Iceberg commit
/// and its Postgres commit — while rows keep arriving, recent and late:
/// after every crash each read equals the oracle (no row lost or counted
/// twice), and a final clean pass leaves each row in exactly one tier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mover_killed_at_every_step_loses_and_duplicates_nothing() {
    let s = setup().await;
    let config_file = tier_config(&s);
    let file = config_file.clone();
    let tier_run = move |stop_at: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_thermocline"));
        cmd.args(["tier", "run", "--config"])
            .arg(&file)
            .env("THERMOCLINE_MOVER_CHUNK_ROWS", "500");
        if let Some(step) = stop_at {
            cmd.env("THERMOCLINE_MOVER_STOP_AT", step);
        }
        cmd.output().unwrap()
    };
    let tier_verify = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_thermocline"))
            .args(["tier", "verify", "--config"])
            .arg(&config_file)
            .output()
            .unwrap()
    };
    let proxy = serve(&s).await;
    let mut next_id = 300_000;
    let now = oracle_now(&s).await;
    let mut reads = 0;
    let mut retries = 0;
    for step in [
        "after-iceberg-commit",
        "after-delete",
        "mid-write",
        "before-iceberg-commit",
        "after-iceberg-commit",
    ] {
        // A writer's rows since the last pass: recent ones and late ones
        // (older than the hot window, some older than the watermark).
        in_both(
            &s,
            &format!(
                    "INSERT INTO orders SELECT i, '{now}'::timestamptz - (i % 9) * interval '40 days', 1 + i % 20, i % 97, 'written', NULL, NULL, DATE '2025-01-01', NULL
                       FROM generate_series({next_id}, {}) i",
                    next_id + 29
                ),
        )
        .await;
        next_id += 1000;
        // While the mover runs and is killed, a writer keeps committing
        // rows (recent and late) and a reader keeps counting through
        // thermocline: every count lies between the rows committed before
        // it started and those committed when it ended, with no id twice.
        let base = hot_count(&s.oracle).await;
        let committed = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (committed, stop, dbs) = (
                committed.clone(),
                stop.clone(),
                (s.tiered.clone(), s.oracle.clone()),
            );
            let now = now.clone();
            let first = next_id;
            tokio::spawn(async move {
                let (tiered, oracle) = (admin(&dbs.0).await, admin(&dbs.1).await);
                let mut id = first;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let row = format!(
                        "INSERT INTO orders VALUES ({id}, '{now}'::timestamptz - {} * interval '1 day', 1, 1.00, 'during', NULL, NULL, DATE '2025-01-01', NULL)",
                        [0, 45, 400][(id % 3) as usize]
                    );
                    tiered.batch_execute(&row).await.unwrap();
                    committed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    oracle.batch_execute(&row).await.unwrap();
                    id += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                id
            })
        };
        let reader = {
            let (committed, stop, port, db) = (
                committed.clone(),
                stop.clone(),
                proxy.port(),
                s.tiered.clone(),
            );
            tokio::spawn(async move {
                let through = client(port, "postgres", &db).await;
                let mut seen = Vec::new();
                let mut retried = 0;
                // Prepared statements: their hot aggregates run after the
                // lake is read, so a mover committing in between fails
                // them with 40001 (run again), never with a wrong count.
                let both = "SELECT count(*), count(DISTINCT id) FROM orders";
                let partial = "SELECT count(*), count(id) FROM orders WHERE customer_id > 0";
                let mut i = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let sql = [both, partial][i % 2];
                    i += 1;
                    let low = base + committed.load(std::sync::atomic::Ordering::SeqCst);
                    let row = match through.query_one(sql, &[]).await {
                        Ok(row) => row,
                        Err(e) if e.code().map(|c| c.code()) == Some("40001") => {
                            retried += 1;
                            continue;
                        }
                        Err(e) => panic!("{sql}: {e:?}"),
                    };
                    let high = base + committed.load(std::sync::atomic::Ordering::SeqCst);
                    let (count, other) = (row.get::<_, i64>(0), row.get::<_, i64>(1));
                    seen.push((low, count, if sql == both { other } else { count }, high));
                }
                (seen, retried)
            })
        };
        let out = {
            let run = tier_run.clone();
            tokio::task::spawn_blocking(move || run(Some(step)))
                .await
                .unwrap()
        };
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        next_id = writer.await.unwrap() + 1000;
        let (seen, retried) = reader.await.unwrap();
        retries += retried;
        for (low, count, distinct, high) in seen {
            assert_eq!(count, distinct, "{step}: an id counted twice");
            assert!(
                low <= count && count <= high,
                "{step}: counted {count}, but {low}..={high} rows were committed"
            );
            reads += 1;
        }
        assert_eq!(
            out.status.code(),
            Some(137),
            "{step}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The delete was rolled back: every row is still in Postgres.
        assert_eq!(
            hot_count(&s.tiered).await,
            hot_count(&s.oracle).await,
            "{step}"
        );
        same_answers(&s, &proxy, &QUERIES[..8]).await;
        // The lake holds exactly what was written; rows of an interrupted
        // pass in both tiers are reported, not counted as mismatches.
        let verified = tier_verify();
        assert!(
            verified.status.success(),
            "{step}: {}{}",
            String::from_utf8_lossy(&verified.stdout),
            String::from_utf8_lossy(&verified.stderr)
        );
    }
    assert!(reads >= 5, "the reader counted {reads} times");
    println!(
        "crash test: 5 crashes, {reads} concurrent counts, every one exact ({retries} refused with 40001 as the lake moved)"
    );
    let out = tier_run(None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("written to"), "{report}");
    // Rows the writer dated before the watermark are counted as late.
    let late: u64 = report
        .split("; ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("a late-row count");
    assert!(late > 0, "{report}");
    let verified = tier_verify();
    let printed = String::from_utf8_lossy(&verified.stdout);
    assert!(verified.status.success(), "{printed}");
    assert!(
        printed.contains(" 0 mismatches") && !printed.contains("in both tiers"),
        "{printed}"
    );
    // The clean pass left no aged row in Postgres (how many recent rows the
    // writer added depends on the machine's speed, so they are not counted).
    let aged: i64 = value(
        &s.tiered,
        "SELECT count(*) FROM orders WHERE created_at < now() - interval '31 days'",
    )
    .await;
    assert_eq!(aged, 0);
    same_answers(&s, &proxy, QUERIES).await;
    // Every row is in exactly one tier: the cold tier holds no duplicate
    // key (the federated count of distinct ids equals the oracle's count).
    let through = client(proxy.port(), "postgres", &s.tiered).await;
    let distinct = ask(&through, "SELECT count(DISTINCT id) FROM orders").await;
    let all = ask(
        &client(pg().port(), "postgres", &s.oracle).await,
        "SELECT count(*) FROM orders",
    )
    .await;
    match (distinct, all) {
        (Answer::Rows(_, a), Answer::Rows(_, b)) => assert_eq!(a, b),
        other => panic!("{other:?}"),
    }
    std::fs::remove_file(config_file).ok();
}

/// Movers (or replicas) started at the same moment on an empty lake all
/// find one namespace and one table: none fails because another created
/// them first, and every row is moved exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn movers_started_at_once_share_one_lake_table() {
    let s = setup().await;
    let config_file = tier_config(&s);
    let movers: Vec<_> = (0..4)
        .map(|_| {
            std::process::Command::new(env!("CARGO_BIN_EXE_thermocline"))
                .args(["tier", "run", "--config"])
                .arg(&config_file)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for mover in movers {
        let out = mover.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (code, printed) = cli(&config_file, &["tier", "verify"], None);
    assert_eq!(code, Some(0), "{printed}");
    assert!(
        printed.contains(" 0 mismatches") && !printed.contains("in both tiers"),
        "{printed}"
    );
    let proxy = serve(&s).await;
    same_answers(&s, &proxy, QUERIES).await;
    std::fs::remove_file(config_file).ok();
}

/// The config file of `thermocline tier …` commands over the setup's
/// databases and lake, written beside its catalog.
fn tier_config(s: &Setup) -> std::path::PathBuf {
    let path = s
        ._dirs
        .0
        .path()
        .parent()
        .unwrap()
        .join(format!("{}.toml", s.tiered));
    write_config(&path, s);
    path
}

fn write_config(path: &Path, s: &Setup) {
    std::fs::write(
        path,
        format!(
            "postgres_url = \"{}\"\ncatalog_dir = \"{}\"\n[lake]\nwarehouse = \"{}\"\n",
            pg().url(),
            s.config.catalog_dir.as_ref().unwrap().display(),
            s.warehouse().display()
        ),
    )
    .unwrap();
}

/// Writes the config of a `serve` process on a free port, with the tier
/// definitions in `catalog` and the setup's lake; returns the port.
fn write_serve_config(path: &Path, catalog: &Path, s: &Setup) -> u16 {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        path,
        format!(
            "listen = \"127.0.0.1:{port}\"\nadmin_listen = \"off\"\npostgres_url = \"{}\"\ncatalog_dir = \"{}\"\ntier_interval = \"off\"\n[lake]\nwarehouse = \"{}\"\n",
            pg().url(),
            catalog.display(),
            s.warehouse().display()
        ),
    )
    .unwrap();
    port
}

/// Extended-protocol scripts sent byte for byte to the oracle and through
/// thermocline: every reply message must be identical (binary results too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_replies_are_identical() {
    use common::wire::{RawConn, bind, describe, execute, flush, parse, sync};
    let s = setup().await;
    move_rows(&s).await;
    let proxy = serve(&s).await;
    let cols = "id, created_at, amount, status, note, score, day, flag";
    let ts: Vec<u8> = {
        // 2025-06-01 00:00:00+00 in microseconds since 2000-01-01.
        let us: i64 = (1_748_736_000 - 946_684_800) * 1_000_000;
        us.to_be_bytes().to_vec()
    };
    let scripts: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "unnamed, untyped text parameter, binary results",
            vec![
                parse(
                    "",
                    &format!("SELECT {cols} FROM orders WHERE id % $1 = 0 ORDER BY id"),
                    &[],
                ),
                bind("", "", &[0], &[Some(b"97")], &[1]),
                describe(b'P', ""),
                execute("", 0),
                sync(),
            ],
        ),
        (
            "text results",
            vec![
                parse(
                    "",
                    &format!("SELECT {cols} FROM orders WHERE id % $1 = 0 ORDER BY id"),
                    &[],
                ),
                bind("", "", &[0], &[Some(b"131")], &[0]),
                describe(b'P', ""),
                execute("", 0),
                sync(),
            ],
        ),
        (
            "named statement, binary timestamptz parameter, executed twice",
            vec![
                parse(
                    "s1",
                    "SELECT count(*), sum(amount), min(day) FROM orders WHERE created_at < $1",
                    &[1184],
                ),
                describe(b'S', "s1"),
                bind("", "s1", &[1], &[Some(&ts)], &[1]),
                execute("", 0),
                bind("", "s1", &[1], &[None], &[0]),
                execute("", 0),
                sync(),
            ],
        ),
        (
            "a portal read five rows at a time",
            vec![
                parse(
                    "s2",
                    "SELECT id, amount FROM orders WHERE amount > $1 ORDER BY id",
                    &[],
                ),
                bind("p", "s2", &[0], &[Some(b"95.5")], &[1, 0]),
                execute("p", 5),
                execute("p", 5),
                execute("p", 0),
                execute("p", 0),
                sync(),
            ],
        ),
        (
            "Parse and Describe, Flush, then Bind and Execute (asyncpg's order)",
            vec![
                parse(
                    "s3",
                    "SELECT status, count(*) FROM orders WHERE day >= $1 GROUP BY status ORDER BY status",
                    &[],
                ),
                describe(b'S', "s3"),
                flush(),
            ],
        ),
        (
            "…continued",
            vec![
                bind("", "s3", &[0], &[Some(b"2025-01-01")], &[1]),
                execute("", 0),
                sync(),
            ],
        ),
        (
            "an error at Parse skips the federated Execute",
            vec![
                parse("", "SELECT nosuch FROM orders WHERE id = $1", &[]),
                bind("", "", &[0], &[Some(b"1")], &[0]),
                execute("", 0),
                sync(),
            ],
        ),
        (
            "a relayed statement and a federated one in one pipeline",
            vec![
                parse("", "SELECT 1 AS one", &[]),
                bind("", "", &[], &[], &[]),
                execute("", 0),
                parse("", "SELECT max(id) FROM orders WHERE id < $1", &[20]),
                bind("", "", &[1], &[Some(&500i64.to_be_bytes())], &[1]),
                describe(b'P', ""),
                execute("", 0),
                sync(),
            ],
        ),
    ];
    let (mut direct, _) = RawConn::connect(pg().port(), "postgres", &s.oracle).await;
    let (mut through, _) = RawConn::connect(proxy.port(), "postgres", &s.tiered).await;
    same_replies((&mut direct, &mut through), scripts).await;
}

/// Over rows moved and served, with a table made alike on both sides by
/// `side` (its CREATE), [`same_replies`] of `scripts` in new sessions.
async fn same_replies_beside(side: &str, scripts: Vec<(&str, Vec<Vec<u8>>)>) -> Setup {
    use common::wire::RawConn;
    let (s, proxy, direct, through) = moved_and_served().await;
    direct.batch_execute(side).await.unwrap();
    through.batch_execute(side).await.unwrap();
    drop((direct, through));
    let (mut direct, _) = RawConn::connect(pg().port(), "postgres", &s.oracle).await;
    let (mut through, _) = RawConn::connect(proxy.port(), "postgres", &s.tiered).await;
    same_replies((&mut direct, &mut through), scripts).await;
    s
}

/// Sends each script byte for byte to the oracle and through thermocline:
/// every reply message must be identical.
async fn same_replies(
    (direct, through): (&mut common::wire::RawConn, &mut common::wire::RawConn),
    scripts: Vec<(&str, Vec<Vec<u8>>)>,
) {
    use common::wire::normalize;
    for (what, script) in scripts {
        let bytes: Vec<u8> = script.concat();
        direct.send(&bytes).await;
        through.send(&bytes).await;
        // A ReadyForQuery for each Sync and each simple Query.
        let readies = script
            .iter()
            .filter(|m| matches!(m[0], b'S' | b'Q'))
            .count();
        let (want, got) = if readies > 0 {
            (
                direct.until_ready(readies).await,
                through.until_ready(readies).await,
            )
        } else {
            let wait = std::time::Duration::from_millis(500);
            (direct.drain(wait).await, through.drain(wait).await)
        };
        assert!(!want.is_empty(), "{what}: no reply from Postgres");
        let (got, want) = (normalize(&got), normalize(&want));
        if got != want {
            let first = got
                .iter()
                .zip(&want)
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(want.len()));
            panic!(
                "{what}: replies differ at message {first} of {} (Postgres) / {} (thermocline)\n\
                 Postgres:    {:?}\nthermocline: {:?}",
                want.len(),
                got.len(),
                &want[first.saturating_sub(1)..(first + 2).min(want.len())],
                &got[first.saturating_sub(1)..(first + 2).min(got.len())],
            );
        }
    }
}

/// A portal of a federated statement runs as Postgres runs it: a read
/// suspended when its row limit is reached, even by its last row; a write
/// over history run whole at its first Execute, the rows it returns then
/// sent under the row limit with the write's own tag; a portal that has
/// run its command refused another run (nothing written twice); a failed
/// Execute skipping the rest of its exchange; exchanges sent before the
/// ones ahead of them are answered each with its own replies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portals_of_federated_statements_run_as_postgres_runs_them() {
    use common::wire::{bind, execute, parse, query, sync};
    let run = |sql: &str, limits: &[i32]| {
        let mut script = vec![parse("", sql, &[]), bind("p", "", &[], &[], &[0])];
        script.extend(limits.iter().map(|&n| execute("p", n)));
        script.push(sync());
        script
    };
    // An exchange of its own: the unnamed statement and portal, then Sync.
    let unnamed = |sql: &str| {
        vec![
            parse("", sql, &[]),
            bind("", "", &[], &[], &[0]),
            execute("", 0),
            sync(),
        ]
    };
    let scripts: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "a read whose last row meets the limit",
            run("SELECT id FROM orders ORDER BY id LIMIT 4", &[2, 2, 0, 0]),
        ),
        (
            "a read whose rows meet the first limit exactly",
            run("SELECT id FROM orders ORDER BY id LIMIT 3", &[3, 0]),
        ),
        (
            "a read of fewer rows than the limit",
            run("SELECT id FROM orders ORDER BY id LIMIT 3", &[5, 0]),
        ),
        (
            "INSERT … SELECT … RETURNING, two rows at a time",
            run(
                "INSERT INTO side (order_id) SELECT id FROM orders WHERE id % 100 = 0 \
                 ORDER BY id RETURNING id, order_id",
                &[2, 2, 0, 0],
            ),
        ),
        (
            "INSERT … SELECT returning no rows, executed again",
            run(
                "INSERT INTO side (order_id) SELECT id FROM orders WHERE id % 333 = 0",
                &[0, 0],
            ),
        ),
        (
            "after the refused Execute",
            vec![query("SELECT count(*), sum(order_id) FROM side")],
        ),
        (
            "UPDATE … FROM … RETURNING, its rows counted by the Execute that sends them",
            run(
                "UPDATE side s SET n = n + 1 FROM orders o WHERE o.id = s.order_id \
                 RETURNING 'updated'",
                &[3, 3, 0, 0],
            ),
        ),
        (
            "UPDATE … FROM … RETURNING no rows, executed again",
            run(
                "UPDATE side s SET n = n + 1 FROM orders o WHERE o.id = s.order_id \
                 AND o.status = 'nosuch' RETURNING 1",
                &[0, 0],
            ),
        ),
        (
            "a limit the rows meet exactly",
            run(
                "UPDATE side s SET n = n + 1 FROM orders o WHERE o.id = s.order_id \
                 AND s.id = 1 RETURNING s.n",
                &[1, 1],
            ),
        ),
        (
            "what was written",
            vec![query("SELECT id, order_id, n FROM side ORDER BY id")],
        ),
        (
            "a failed Execute, then another before the Sync (skipped)",
            [
                &unnamed("SELECT 1 / (id - id) FROM orders")[..3],
                &unnamed("SELECT count(*) FROM orders")[..],
            ]
            .concat(),
        ),
        (
            "exchanges pipelined: each federated Execute waits for its own Parse and Bind",
            [
                unnamed("SELECT 1"),
                unnamed("SELECT count(*) FROM orders"),
                unnamed("SELECT sum(id) FROM orders"),
            ]
            .concat(),
        ),
        (
            "a failed exchange, and one pipelined after it",
            [
                unnamed("SELECT 1 / (id - id) FROM orders"),
                unnamed("SELECT max(id) FROM orders"),
            ]
            .concat(),
        ),
        (
            "the exchange after it",
            unnamed("SELECT count(*) FROM orders"),
        ),
    ];
    let side = "CREATE TABLE side (id serial PRIMARY KEY, order_id int8, n int8 DEFAULT 0)";
    let s = same_replies_beside(side, scripts).await;
    let written = "SELECT count(*) FROM side";
    let n: i64 = value(&s.tiered, written).await;
    assert_eq!(n, value::<i64>(&s.oracle, written).await);
    assert!(n > 10, "{n} rows written");
}

/// A query string of several statements, one over history, runs in one
/// block as Postgres's implicit block runs: a BEGIN among them makes the
/// statements before it part of the client's transaction; a COMMIT or
/// ROLLBACK ends it with Postgres's warning, the statements after it in a
/// new one; savepoints and AND CHAIN are refused in it; every reply, each
/// transaction status and what was written the same as Postgres's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_control_in_a_query_string_acts_as_in_postgres() {
    use common::wire::query;
    // Each script ends by reading what the table holds.
    let then_side = |sqls: &[&str]| {
        let mut script: Vec<Vec<u8>> = sqls.iter().map(|sql| query(sql)).collect();
        script.push(query("SELECT n FROM side ORDER BY n"));
        script
    };
    let scripts = vec![
        (
            "a BEGIN takes the statements before it into the client's block",
            then_side(&[
                "INSERT INTO side VALUES (1); SELECT count(*) FROM orders; BEGIN; \
                 INSERT INTO side VALUES (2)",
                "ROLLBACK",
            ]),
        ),
        (
            "a COMMIT ends the block, the next statements run in another",
            then_side(&[
                "INSERT INTO side VALUES (3); SELECT count(*) FROM orders; COMMIT; \
                 INSERT INTO side VALUES (4); SELECT 1/0",
            ]),
        ),
        (
            "a ROLLBACK undoes the statements before it",
            then_side(&[
                "INSERT INTO side VALUES (5); SELECT count(*) FROM orders; ROLLBACK; \
                 INSERT INTO side VALUES (6); SELECT sum(amount) FROM orders",
            ]),
        ),
        (
            "savepoints and AND CHAIN are refused, the block undone",
            then_side(&[
                "INSERT INTO side VALUES (7); SELECT count(*) FROM orders; SAVEPOINT a; SELECT 2",
                "SELECT count(*) FROM orders; RELEASE SAVEPOINT a",
                "SELECT count(*) FROM orders; ROLLBACK TO a",
                "INSERT INTO side VALUES (8); SELECT count(*) FROM orders; COMMIT AND CHAIN",
                "SELECT count(*) FROM orders; ABORT AND CHAIN",
            ]),
        ),
        (
            "a BEGIN with an isolation level after a query fails, nothing kept",
            then_side(&[
                "INSERT INTO side VALUES (9); SELECT count(*) FROM orders; \
                 BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT 2",
                "SET application_name = 'x'; BEGIN ISOLATION LEVEL SERIALIZABLE; \
                 SELECT count(*) FROM orders; SHOW transaction_isolation",
                "COMMIT",
                "SET application_name = 'y'; SELECT count(*) FROM orders; SELECT 1/0",
                "SET application_name = 'z'; SELECT count(*) FROM orders; COMMIT; \
                 SET application_name = 'w'; SELECT 1/0",
            ]),
        ),
        (
            "blocks begun and ended in one string",
            then_side(&[
                "BEGIN; SELECT count(*) FROM orders; COMMIT; INSERT INTO side VALUES (10); \
                 BEGIN; SELECT count(*) FROM orders WHERE status = 'paid'",
                "ROLLBACK",
                "SELECT count(*) FROM orders; BEGIN; BEGIN",
                "ROLLBACK",
                "SELECT count(*) FROM orders; END; INSERT INTO side VALUES (11); ABORT",
                "SELECT count(*) FROM orders; BEGIN READ ONLY; INSERT INTO side VALUES (12)",
                "ROLLBACK",
                "SELECT count(*) FROM orders; PREPARE TRANSACTION 'x'",
            ]),
        ),
        (
            "a syntax error anywhere fails the string whole, nothing run",
            then_side(&[
                "INSERT INTO side VALUES (15); SELECT count(*) FROM orders; SELEC 2",
                "INSERT INTO side VALUES (16); SELECT count(*) FROM orders; COMMIT; \
                 INSERT INTO side VALUES (17); SELECT 'unclosed",
                "BEGIN",
                "INSERT INTO side VALUES (18)",
                "SELECT count(*) FROM orders; SELECT 1 FROM",
                "SELECT count(*) FROM orders; SELEC 2",
                "SELECT count(*) FROM orders; SELECT 2",
                "ROLLBACK",
                "BEGIN",
                "INSERT INTO side VALUES (19); SELECT count(*) FROM orders; SELECT 2",
                "COMMIT",
            ]),
        ),
        (
            "the client's block ended by the string, the rest in an implicit one",
            then_side(&[
                "BEGIN",
                "INSERT INTO side VALUES (13); SELECT count(*) FROM orders; COMMIT; \
                 INSERT INTO side VALUES (14); SAVEPOINT a",
            ]),
        ),
    ];
    let s = same_replies_beside("CREATE TABLE side (n int)", scripts).await;
    // Each statement over history was answered over it: the counts read
    // in the scripts are the oracle's, and the hot rows alone are fewer.
    assert!(
        hot_count(&s.tiered).await * 2
            < value::<i64>(&s.oracle, "SELECT count(*) FROM orders").await
    );
}

/// Real drivers — psql, psycopg 3 (text and binary), asyncpg, node-postgres,
/// pgjdbc past its prepare threshold — read the tiered table through
/// thermocline and print what they decoded: the same as from the oracle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_read_both_tiers() {
    let s = setup().await;
    move_rows(&s).await;
    // A table with array and interval columns: each driver decodes them.
    let now = oracle_now(&s).await;
    tier_new_table(
        &s,
        "posts",
        &format!(
            r#"CREATE TABLE posts (id bigint PRIMARY KEY, at timestamptz NOT NULL, tags text[], scores int[],
                 prices numeric(8,2)[], stamps timestamptz[], flags boolean[], took interval);
             INSERT INTO posts SELECT i, '{now}'::timestamptz - i * interval '9 hours',
                 CASE WHEN i % 11 = 0 THEN NULL WHEN i % 13 = 0 THEN '{{}}'
                      ELSE ARRAY['t' || (i % 5), (ARRAY['a b', 'c,d', 'e"f', 'g\h', 'NULL', ''])[1 + i % 6], NULL] END,
                 ARRAY[i % 10, NULL, -i],
                 ARRAY[(i % 100) / 4.0, -0.25]::numeric(8,2)[],
                 ARRAY['{now}'::timestamptz - i * interval '1 minute', NULL],
                 ARRAY[i % 2 = 0, NULL],
                 CASE WHEN i % 17 = 0 THEN NULL
                      ELSE make_interval(months => i % 14, days => i % 3, hours => i, secs => i / 8.0) * (1 - 2 * (i % 4 / 3)) END
               FROM generate_series(1, 300) i;"#
        ),
    )
    .await;
    let proxy = serve(&s).await;
    for client in [
        "psql-tiered",
        "psycopg-tiered",
        "asyncpg-tiered",
        "node-pg-tiered",
        "pgjdbc-tiered",
    ] {
        let want = transcript(client, pg().port(), &s.oracle).await;
        let got = transcript(client, proxy.port(), &s.tiered).await;
        assert!(
            want.lines().count() > 40,
            "{client}: a short transcript:\n{want}"
        );
        // The arrays were read, not refused.
        assert!(want.contains("c,d"), "{client}: no array in:\n{want}");
        // Rows were written from the history: the tags of SELECT … INTO,
        // INSERT, UPDATE and DELETE (psql), the rows inserted and updated
        // (pgjdbc), the row an UPDATE of cold rows returned (psycopg).
        let written: &[&str] = match client {
            "psql-tiered" => &["SELECT 4", "INSERT 0 1", "UPDATE 4", "DELETE 1"],
            "pgjdbc-tiered" => &["20 rows inserted", "1 rows updated"],
            "psycopg-tiered" => &["str:'paid' | str:'old'"],
            _ => &[],
        };
        for w in written {
            assert!(want.contains(w), "{client}: no {w:?} in:\n{want}");
        }
        assert_same_transcript(client, &want, &got);
    }
}

/// EXPLAIN of a federated read shows the SQL sent to Postgres (with the
/// filter pushed down), the Iceberg snapshot and watermark, and the plan;
/// EXPLAIN ANALYZE runs it and counts the rows the oracle counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_route_the_pushed_sql_and_the_watermark() {
    let s = setup().await;
    move_rows(&s).await;
    let proxy = serve(&s).await;
    let through = client(proxy.port(), "postgres", &s.tiered).await;
    let lines = |msgs: Vec<SimpleQueryMessage>| -> Vec<String> {
        msgs.into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .collect()
    };
    let plan = lines(
        through
            .simple_query("EXPLAIN SELECT id FROM orders WHERE status = 'paid' AND id > 100")
            .await
            .unwrap(),
    )
    .join("\n");
    for want in [
        "Federated read",
        "Postgres: SELECT",
        "WHERE (status = 'paid') AND (id > 100)",
        "Iceberg: public.orders snapshot",
        "watermark '",
        "Plan:",
    ] {
        assert!(plan.contains(want), "EXPLAIN lacks {want:?}:\n{plan}");
    }
    let analyzed = lines(
        through
            .simple_query("EXPLAIN ANALYZE SELECT id FROM orders WHERE status = 'paid'")
            .await
            .unwrap(),
    )
    .join("\n");
    let oracle: i64 = value(
        &s.oracle,
        "SELECT count(*) FROM orders WHERE status = 'paid'",
    )
    .await;
    assert!(
        analyzed.contains(&format!("Rows: {oracle} ")),
        "EXPLAIN ANALYZE should count {oracle} rows:\n{analyzed}"
    );
    // A partial aggregate goes to Postgres when its filters mean the same
    // there; an ordering of strings (Postgres's collation) stays here.
    for (sql, pushed) in [
        (
            "EXPLAIN SELECT count(*) FROM orders WHERE note = 'note 5'",
            true,
        ),
        (
            "EXPLAIN SELECT count(*) FROM orders WHERE note > 'note 5'",
            false,
        ),
    ] {
        let plan = lines(through.simple_query(sql).await.unwrap()).join("\n");
        assert_eq!(
            plan.contains("Postgres (partial aggregate):"),
            pushed,
            "{sql}:\n{plan}"
        );
    }
    // Files scanned and pruned: a bound on the time column prunes the
    // lake's monthly partitions; no bound reads them all.
    let mut files = Vec::new();
    for sql in [
        "EXPLAIN SELECT count(*) FROM orders WHERE created_at >= now() - interval '90 days'",
        "EXPLAIN SELECT count(*) FROM orders",
    ] {
        let plan = lines(through.simple_query(sql).await.unwrap());
        let line = plan
            .iter()
            .find(|l| l.contains("Iceberg files of public.orders:"))
            .unwrap_or_else(|| panic!("no file counts in:\n{}", plan.join("\n")))
            .clone();
        let numbers: Vec<usize> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        let [read, total, pruned] = numbers[..] else {
            panic!("{line}");
        };
        assert_eq!(read + pruned, total, "{line}");
        files.push((read, total));
    }
    assert!(
        files[0].0 < files[0].1 && files[1].0 == files[1].1 && files[1].1 > 1,
        "{files:?}"
    );
    // Partitions by name: the months (UTC, as the lake partitions) from 90
    // days ago to the watermark's.
    let plan = lines(
        through
            .simple_query(
                "EXPLAIN SELECT count(*) FROM orders WHERE created_at >= now() - interval '90 days'",
            )
            .await
            .unwrap(),
    );
    let partitions = plan
        .iter()
        .find(|l| l.contains("Iceberg partitions of public.orders:"))
        .unwrap_or_else(|| panic!("no partitions in:\n{}", plan.join("\n")));
    let w_month = plan
        .iter()
        .find_map(|l| l.split("watermark '").nth(1))
        .map(|w| w[..7].to_string())
        .unwrap();
    let from_month: String = value(
        &s.tiered,
        "SELECT to_char((now() - interval '90 days') AT TIME ZONE 'UTC', 'YYYY-MM')",
    )
    .await;
    let months: Vec<String> = admin(&s.tiered)
        .await
        .query(
            "SELECT to_char(g, 'YYYY-MM') FROM generate_series($1::text::date, $2::text::date, interval '1 month') g",
            &[&format!("{from_month}-01"), &format!("{w_month}-01")],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        partitions.contains(&format!(" {} of ", months.len()))
            && partitions.contains(&format!("({})", months.join(", "))),
        "{partitions}: want {months:?}"
    );
    // The latest rows: Postgres returns the hot rows' first k; when they
    // are all at or after the watermark the lake is not read. The oldest
    // rows need the lake.
    for (sql, lake_read) in [
        (
            "EXPLAIN SELECT id FROM orders ORDER BY created_at DESC LIMIT 5",
            false,
        ),
        (
            "EXPLAIN SELECT id FROM orders ORDER BY created_at LIMIT 5",
            true,
        ),
    ] {
        let plan = lines(through.simple_query(sql).await.unwrap()).join("\n");
        assert!(
            plan.contains(
                "Postgres (first 5): SELECT id, created_at FROM public.orders ORDER BY created_at"
            ),
            "{sql}:\n{plan}"
        );
        assert_eq!(
            !plan.contains("Iceberg: not read"),
            lake_read,
            "{sql}:\n{plan}"
        );
        assert_eq!(
            plan.contains("Iceberg files of"),
            lake_read,
            "{sql}:\n{plan}"
        );
    }
    // A join builds its hash table on the smaller table, whichever side
    // the statement names it on, once Postgres has estimates.
    admin(&s.tiered)
        .await
        .batch_execute("ANALYZE orders; ANALYZE customers")
        .await
        .unwrap();
    for sql in [
        "EXPLAIN SELECT c.region, count(*) FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY 1",
        "EXPLAIN SELECT c.region, count(*) FROM customers c JOIN orders o ON c.id = o.customer_id GROUP BY 1",
    ] {
        let plan = lines(through.simple_query(sql).await.unwrap());
        let join = plan
            .iter()
            .position(|l| l.contains("HashJoinExec: mode=CollectLeft"))
            .unwrap_or_else(|| panic!("{sql}: no join built once:\n{}", plan.join("\n")));
        let build = plan[join + 1..]
            .iter()
            .find(|l| l.contains("StreamingTableExec"))
            .unwrap();
        assert!(
            build.contains("projection=[id, region]"),
            "{sql}: built on {build}:\n{}",
            plan.join("\n")
        );
    }
}

/// The differential corpus: BI tools' shapes (tests/tiered_corpus.sql,
/// one statement per line) must answer exactly as the oracle does, through
/// a text client (simple protocol) and a binary one (extended protocol,
/// binary results, compared message by message). Statements thermocline
/// cannot yet run exactly must fail with 0A000, never answer differently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_matches_the_oracle_in_text_and_binary() {
    let s = setup().await;
    move_rows(&s).await;
    // Rows straddling the boundary and a straggler, the same in both databases.
    let now = oracle_now(&s).await;
    in_both(
        &s,
        &format!(
                "INSERT INTO orders VALUES (100001, '{now}'::timestamptz - interval '400 days', 3, 12.34, 'late', NULL, 0.5, '{now}'::date - 400, true);
                 INSERT INTO orders SELECT 100100 + i, '{now}'::timestamptz - interval '30 days' + i * interval '1 minute', 1 + i % 20, i, 'edge', NULL, NULL, '{now}'::date - 30, NULL
                   FROM generate_series(-30, 30) i;
                 ANALYZE;"
            ),
    )
    .await;
    let proxy = serve(&s).await;
    let corpus = include_str!("tiered_corpus.sql");
    let mut both = BothProtocols::connect(&s, &proxy).await;
    let mut failures = Vec::new();
    let mut count = 0;
    for line in corpus.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("--") {
            continue;
        }
        count += 1;
        if let Some(sql) = line.strip_prefix("UNSUPPORTED ") {
            failures.extend(both.not_refused(sql).await);
            continue;
        }
        failures.extend(both.differs(line).await);
    }
    assert!(count >= 100, "the corpus has only {count} statements");
    assert!(
        failures.is_empty(),
        "{} of {count} statements differ from the oracle:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A CancelRequest stops a federated read while DataFusion is working (the
/// client gets 57014, as from Postgres) and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_federated_read_and_the_session_goes_on() {
    let s = setup().await;
    move_rows(&s).await;
    let proxy = serve(&s).await;
    let through = client(proxy.port(), "postgres", &s.tiered).await;
    let token = through.cancel_token();
    let started = std::time::Instant::now();
    let (result, ()) = tokio::join!(
        through.simple_query(
            "SELECT count(*) FROM orders a, orders b, customers c WHERE a.id <> b.id AND c.id <> a.customer_id"
        ),
        async {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            token.cancel_query(tokio_postgres::NoTls).await.unwrap();
        }
    );
    let error = result.expect_err("the statement was cancelled");
    assert_eq!(
        error.as_db_error().map(|e| e.code().code()),
        Some("57014"),
        "{error}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "cancel took {:?}",
        started.elapsed()
    );
    let want = ask(
        &client(pg().port(), "postgres", &s.oracle).await,
        "SELECT count(*) FROM orders",
    )
    .await;
    assert_eq!(ask(&through, "SELECT count(*) FROM orders").await, want);
}

/// Privileges are Postgres's: a role that may not read the table gets
/// 42501 through thermocline too, and no cold row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_select_gets_postgres_error() {
    let s = setup().await;
    move_rows(&s).await;
    let role = format!("reader_{}", std::process::id());
    admin("postgres")
        .await
        .batch_execute(&format!(
            "DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN CREATE ROLE {role} LOGIN; END IF; END$$"
        ))
        .await
        .unwrap();
    in_both(&s, &format!("GRANT SELECT ON customers TO {role}")).await;
    let proxy = serve(&s).await;
    let direct = client(pg().port(), &role, &s.oracle).await;
    let through = client(proxy.port(), &role, &s.tiered).await;
    for sql in [
        "SELECT count(*) FROM orders",
        "SELECT c.name, o.amount FROM customers c JOIN orders o ON o.customer_id = c.id",
        "SELECT count(*) FROM customers",
    ] {
        assert_eq!(ask(&through, sql).await, ask(&direct, sql).await, "{sql}");
    }
    assert_eq!(
        ask(&through, "SELECT count(*) FROM orders").await,
        Answer::Error("42501".into())
    );
}

/// A joined table's numeric without a precision is returned as Postgres
/// writes it, in text and in binary, but computing with it is refused
/// with 0A000 naming it; a column of a type the executor cannot carry (an
/// inet) is named in the 0A000 error of a statement reading it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_the_executor_cannot_carry_are_named_in_the_error() {
    let s = setup().await;
    move_rows(&s).await;
    in_both(
        &s,
        "CREATE TABLE prices (customer_id int PRIMARY KEY, price numeric, addr inet, note text);
         INSERT INTO prices SELECT i, CASE WHEN i % 7 = 0 THEN NULL ELSE i * 1.5 / 4 END, '10.0.0.1',
                                   'note ' || i FROM generate_series(1, 50) i;
         UPDATE prices SET price = 12345678901234567890.123456789 WHERE customer_id = 3;
         UPDATE prices SET price = 'NaN' WHERE customer_id = 5;
         UPDATE prices SET price = -0.000 WHERE customer_id = 6",
    )
    .await;
    let proxy = serve(&s).await;
    let mut both = BothProtocols::connect(&s, &proxy).await;
    for sql in [
        "SELECT o.id, p.note, p.price FROM orders o JOIN prices p ON p.customer_id = o.customer_id \
         ORDER BY o.id LIMIT 40",
        "SELECT o.id, p.* FROM orders o JOIN (SELECT customer_id, price, note FROM prices) p \
         ON p.customer_id = o.customer_id WHERE p.note LIKE 'note 1%' ORDER BY o.id LIMIT 20",
        "SELECT o.id, p.price AS cost FROM orders o JOIN prices p ON p.customer_id = o.customer_id \
         ORDER BY o.id DESC LIMIT 20",
        "SELECT o.id, p.price, p.price IS NULL FROM orders o JOIN prices p ON p.customer_id = o.customer_id \
         WHERE p.price IS NOT NULL OR o.id < 30 ORDER BY o.id LIMIT 60",
        "SELECT o.status, count(p.price), count(*) FROM orders o JOIN prices p ON p.customer_id = o.customer_id \
         GROUP BY 1 ORDER BY 1",
    ] {
        let want = ask(&both.direct, sql).await;
        assert!(
            matches!(&want, Answer::Rows(_, rows) if rows.len() > 2),
            "{sql}: {want:?}"
        );
        if let Some(d) = both.differs(sql).await {
            panic!("{d}");
        }
    }
    for (sql, column, hint) in [
        (
            "SELECT count(*) FROM orders o JOIN prices p ON p.customer_id = o.customer_id WHERE p.price > 10",
            "price",
            Some("numeric(p, s)"),
        ),
        (
            "SELECT sum(o.amount * p.price) FROM orders o JOIN prices p ON p.customer_id = o.customer_id",
            "price",
            Some("numeric(p, s)"),
        ),
        (
            "SELECT o.id, p.price FROM orders o JOIN prices p ON p.customer_id = o.customer_id ORDER BY p.price, o.id",
            "price",
            Some("numeric(p, s)"),
        ),
        (
            "SELECT o.id, p.price AS cost FROM orders o JOIN prices p ON p.customer_id = o.customer_id ORDER BY cost, o.id",
            "price",
            Some("numeric(p, s)"),
        ),
        (
            "SELECT DISTINCT p.price FROM orders o JOIN prices p ON p.customer_id = o.customer_id",
            "price",
            Some("numeric(p, s)"),
        ),
        (
            "SELECT count(DISTINCT p.price) FROM orders o JOIN prices p ON p.customer_id = o.customer_id",
            "price",
            Some("numeric(p, s)"),
        ),
        (
            "SELECT p.price, count(*) FROM orders o JOIN prices p ON p.customer_id = o.customer_id GROUP BY 1",
            "price",
            Some("numeric(p, s)"),
        ),
        (
            "SELECT o.id, p.addr FROM orders o JOIN prices p ON p.customer_id = o.customer_id",
            "addr",
            None,
        ),
    ] {
        assert!(
            matches!(ask(&both.direct, sql).await, Answer::Rows(_, rows) if !rows.is_empty()),
            "{sql}"
        );
        let e = both.through.simple_query(sql).await.unwrap_err();
        let e = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e}"));
        assert_eq!(e.code().code(), "0A000", "{sql}");
        let named = format!("column \"{column}\" of table public.prices");
        assert!(e.message().contains(&named), "{sql}: {}", e.message());
        if let Some(hint) = hint {
            assert!(e.message().contains(hint), "{sql}: {}", e.message());
        }
    }
    let readable = "SELECT o.id, p.note FROM orders o JOIN prices p ON p.customer_id = o.customer_id \
                    ORDER BY o.id LIMIT 5";
    assert_eq!(
        ask(&both.through, readable).await,
        ask(&both.direct, readable).await,
        "the session goes on"
    );
}

/// psql's raw output of one statement (COPY data included), or its error;
/// `options` go first.
async fn psql_output(port: u16, db: &str, options: &[&str], sql: &str) -> Result<Vec<u8>, String> {
    let out = common::libpq_command("psql", port, db)
        .args(options)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .await
        .expect("run psql");
    match out.status.success() {
        true => Ok(out.stdout),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// The data of a COPY … TO STDOUT run by tokio-postgres (which prepares
/// it: the extended protocol).
async fn copied_out(c: &tokio_postgres::Client, sql: &str) -> Vec<u8> {
    let stream = c.copy_out(sql).await.unwrap();
    futures::pin_mut!(stream);
    let mut all = Vec::new();
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        all.extend_from_slice(&chunk.unwrap());
    }
    all
}

/// `COPY … TO STDOUT` of a tiered table, or of a query reading one, writes
/// every row of both tiers as Postgres writes them: text, CSV and binary,
/// with their options; bad options fail with Postgres's errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_to_stdout_writes_the_whole_history() {
    let s = setup().await;
    // Characters COPY escapes, in rows bound for the lake.
    in_both(
        &s,
        r#"UPDATE orders SET note = E'tab\there \\ "q", a\nb\r;' WHERE id = 2000;
           UPDATE orders SET note = '' WHERE id = 2001;
           UPDATE orders SET note = '\.' WHERE id = 2002"#,
    )
    .await;
    move_rows(&s).await;
    let proxy = serve(&s).await;
    let total: i64 = value(&s.oracle, "SELECT count(*) FROM orders").await;
    assert!(hot_count(&s.tiered).await * 2 < total);
    let direct = |sql: &'static str| psql_output(pg().port(), &s.oracle, &[], sql);
    let through = |sql: &'static str| psql_output(proxy.port(), &s.tiered, &[], sql);
    // Ordered: the same bytes.
    for sql in [
        "COPY (SELECT * FROM orders ORDER BY id) TO STDOUT",
        "COPY (SELECT id, note, amount, created_at, day FROM orders ORDER BY id) TO STDOUT \
         WITH (FORMAT csv, HEADER, FORCE_QUOTE (note))",
        "COPY (SELECT * FROM orders ORDER BY id) TO STDOUT (FORMAT binary)",
        "COPY (SELECT o.id, c.name, o.amount, o.note FROM orders o JOIN customers c ON c.id = o.customer_id \
         WHERE o.amount > 50 ORDER BY o.id) TO STDOUT (FORMAT csv, DELIMITER ';', QUOTE '''', NULL 'none')",
        "COPY (SELECT status, count(*), sum(amount) FROM orders GROUP BY status ORDER BY status) \
         TO STDOUT (HEADER, NULL '', DELIMITER ',')",
        "COPY (SELECT note FROM orders WHERE id BETWEEN 1995 AND 2005 ORDER BY id) TO STDOUT (FORMAT csv)",
        "COPY (SELECT * FROM orders WHERE false) TO STDOUT (FORMAT binary)",
        // Spellings Postgres accepts: quoted values, HEADER on/0,
        // FORCE_QUOTE *, the older FORCE QUOTE.
        "COPY (SELECT id, note, amount FROM orders ORDER BY id) TO STDOUT \
         (FORMAT 'csv', HEADER on, FORCE_QUOTE *)",
        "COPY (SELECT id, note FROM orders ORDER BY id) TO STDOUT (FORMAT \"csv\", HEADER 0, NULL 'n/a')",
        "COPY (SELECT id, note, flag FROM orders ORDER BY id) TO STDOUT WITH CSV HEADER FORCE QUOTE *",
        "COPY (SELECT id, note, status FROM orders ORDER BY id) TO STDOUT CSV FORCE QUOTE note, status",
    ] {
        let want = direct(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        let got = through(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert!(
            got == want,
            "{sql}:\nthrough thermocline {} bytes:\n{}\ndirect {} bytes:\n{}",
            got.len(),
            String::from_utf8_lossy(&got[..got.len().min(600)]),
            want.len(),
            String::from_utf8_lossy(&want[..want.len().min(600)])
        );
    }
    // A whole table, in the order each server reads it: the same lines.
    for (sql, header) in [
        ("COPY orders TO STDOUT", false),
        (
            "COPY  public.orders (id, note, day) TO STDOUT csv header delimiter '|'",
            true,
        ),
        ("\\copy orders (note, id) to stdout with csv", false),
    ] {
        let lines = |bytes: Vec<u8>| {
            let text = String::from_utf8(bytes).unwrap();
            let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
            let first = match header {
                true => Some(lines.remove(0)),
                false => None,
            };
            lines.sort();
            (first, lines)
        };
        let want = lines(direct(sql).await.unwrap());
        let got = lines(through(sql).await.unwrap());
        // One line per row, and one more for the note with a line break
        // (quoted in CSV, escaped in text).
        assert!(want.1.len() as i64 >= total, "{sql}");
        assert_eq!(got, want, "{sql}");
    }
    // Postgres's own errors for what it refuses; thermocline's for what it
    // cannot copy.
    let direct = client(pg().port(), "postgres", &s.oracle).await;
    let through = client(proxy.port(), "postgres", &s.tiered).await;
    let code = |r: Result<Vec<SimpleQueryMessage>, tokio_postgres::Error>| match r {
        Ok(_) => "no error".to_string(),
        Err(e) => e.code().map_or(e.to_string(), |c| c.code().to_string()),
    };
    for sql in [
        "COPY orders TO STDOUT (FORMAT bogus)",
        "COPY orders (nosuch) TO STDOUT",
        "COPY orders TO STDOUT (FORMAT csv, FORCE_QUOTE (nosuch))",
        "COPY orders TO STDOUT (FORMAT binary, HEADER)",
        "COPY orders TO STDOUT (FORMAT csv, HEADER match)",
        "COPY orders TO STDOUT (FORMAT text, FORCE_QUOTE *)",
        "COPY (SELECT 1/0 FROM orders) TO STDOUT",
    ] {
        let want = code(direct.simple_query(sql).await);
        assert!(want.len() == 5, "{sql}: {want}");
        assert_eq!(code(through.simple_query(sql).await), want, "{sql}");
    }
    for sql in [
        "COPY orders TO '/tmp/thermocline-copy-test.csv'",
        "COPY orders TO STDOUT (FORMAT csv, ENCODING 'LATIN1')",
    ] {
        assert_eq!(code(through.simple_query(sql).await), "0A000", "{sql}");
    }
    // Over the extended protocol (tokio-postgres prepares the COPY): the
    // same bytes, and Postgres's error for a bad one.
    for sql in [
        "COPY (SELECT * FROM orders ORDER BY id) TO STDOUT (FORMAT binary)",
        "COPY (SELECT id, note FROM orders WHERE id % 7 = 0 ORDER BY id) TO STDOUT (FORMAT csv, HEADER)",
    ] {
        let want = copied_out(&direct, sql).await;
        assert!(want.len() > 1000, "{sql}");
        assert!(copied_out(&through, sql).await == want, "{sql}");
    }
    let e = through
        .copy_out("COPY orders TO STDOUT (FORMAT bogus)")
        .await
        .err()
        .expect("refused");
    assert_eq!(e.code().map(|c| c.code()), Some("22023"), "{e}");
    // The session goes on.
    assert_eq!(
        ask(&through, "SELECT count(*) FROM orders").await,
        ask(&direct, "SELECT count(*) FROM orders").await
    );
}

/// Rows (in order) or the SQLSTATE of one statement over the simple
/// protocol.
async fn in_order(
    c: &tokio_postgres::Client,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, String> {
    match c.simple_query(sql).await {
        Ok(msgs) => Ok(msgs
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                }
                _ => None,
            })
            .collect()),
        Err(e) => Err(e.code().map_or(e.to_string(), |c| c.code().to_string())),
    }
}

/// A cursor declared over a tiered table reads the whole history: FETCH in
/// every direction, MOVE, WITH HOLD, the end of the transaction and the
/// errors are Postgres's; psql's FETCH_COUNT prints what it prints
/// directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_read_the_whole_history() {
    let s = setup().await;
    move_rows(&s).await;
    let proxy = serve(&s).await;
    let total: i64 = value(&s.oracle, "SELECT count(*) FROM orders").await;
    assert!(hot_count(&s.tiered).await * 2 < total);
    let direct = client(pg().port(), "postgres", &s.oracle).await;
    let through = client(proxy.port(), "postgres", &s.tiered).await;
    let script = [
        // Without HOLD, a cursor needs a transaction block.
        "DECLARE early CURSOR FOR SELECT * FROM orders",
        "BEGIN",
        "DECLARE c SCROLL CURSOR FOR SELECT id, created_at, amount, note, score FROM orders ORDER BY id",
        "FETCH 700 FROM c",
        "FETCH FORWARD 1000 FROM c",
        "MOVE 300 IN c",
        "FETCH 5 FROM c",
        "FETCH BACKWARD 3 FROM c",
        "FETCH ABSOLUTE 1500 FROM c",
        "FETCH LAST FROM c",
        "FETCH PRIOR FROM c",
        "FETCH ALL FROM c",
        "FETCH RELATIVE -2400 FROM c",
        "DECLARE c CURSOR FOR SELECT 1 FROM orders",
        "ROLLBACK",
        "BEGIN",
        "DECLARE by_region NO SCROLL CURSOR FOR SELECT c.region, date_trunc('month', o.created_at) AS m, \
         count(*), sum(o.amount) FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY 1, 2 ORDER BY 1, 2",
        "FETCH 40 FROM by_region",
        "FETCH ALL FROM by_region",
        "FETCH BACKWARD 1 FROM by_region",
        "COMMIT",
        // Ended with its transaction.
        "FETCH 1 FROM by_region",
        // WITH HOLD, outside a transaction block; it outlives others.
        "DECLARE \"Held\" CURSOR WITH HOLD FOR SELECT id, status, day FROM orders WHERE amount > 50 ORDER BY day, id",
        "FETCH 10 FROM \"Held\"",
        "BEGIN",
        "FETCH 500 FROM \"Held\"",
        "COMMIT",
        "FETCH ALL FROM \"Held\"",
        "CLOSE \"Held\"",
        "FETCH 1 FROM \"Held\"",
        // Errors abort the transaction as in Postgres.
        "BEGIN",
        "DECLARE bad CURSOR FOR SELECT nosuch FROM orders",
        "FETCH 1 FROM bad",
        "ROLLBACK",
        "SELECT count(*) FROM orders",
    ];
    for sql in script {
        let want = in_order(&direct, sql).await;
        let got = in_order(&through, sql).await;
        assert_eq!(got, want, "{sql}");
    }
    // The whole history came through one cursor.
    through.batch_execute("BEGIN").await.unwrap();
    through
        .batch_execute("DECLARE every CURSOR FOR SELECT id FROM orders")
        .await
        .unwrap();
    let rows = in_order(&through, "FETCH ALL FROM every").await.unwrap();
    assert_eq!(rows.len() as i64, total);
    // FETCH over the extended protocol is Postgres's.
    let fetched = through.query("FETCH 5 FROM every", &[]).await.unwrap();
    assert!(fetched.is_empty());
    through.batch_execute("COMMIT").await.unwrap();
    // Declared over the extended protocol, with a parameter.
    declared_with_a_parameter((&direct, &through), "BEGIN").await;
    assert_eq!(
        in_order(&through, "FETCH ABSOLUTE 1 FROM p")
            .await
            .unwrap()
            .len(),
        1
    );
    for c in [&direct, &through] {
        c.batch_execute("COMMIT").await.unwrap();
    }
    // Its rows were the whole history's.
    let with_3: i64 = value(
        &s.oracle,
        "SELECT count(*) FROM orders WHERE customer_id = 3",
    )
    .await;
    through.batch_execute("BEGIN").await.unwrap();
    through
        .execute(
            "DECLARE q CURSOR FOR SELECT id FROM orders WHERE customer_id = $1",
            &[&3i32],
        )
        .await
        .unwrap();
    let all = through.query("FETCH ALL FROM q", &[]).await.unwrap();
    assert_eq!(all.len() as i64, with_3);
    through.batch_execute("COMMIT").await.unwrap();
    // No table that held a cursor's rows is left: those of cursors without
    // HOLD went at commit, that of the closed cursor WITH HOLD at the next
    // DECLARE.
    let left = in_order(
        &through,
        "SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()",
    )
    .await;
    assert_eq!(left, Ok(vec![vec![Some("0".to_string())]]));
    // psql's FETCH_COUNT reads through a cursor: the same output.
    let sql = "SELECT id, created_at, amount, status, note FROM orders ORDER BY id";
    let fetch_count = ["-v", "FETCH_COUNT=150"];
    let want = psql_output(pg().port(), &s.oracle, &fetch_count, sql)
        .await
        .unwrap();
    let got = psql_output(proxy.port(), &s.tiered, &fetch_count, sql)
        .await
        .unwrap();
    assert!(want.len() > 100_000);
    assert!(got == want, "psql FETCH_COUNT output differs");
}

/// A SCROLL cursor declared over the extended protocol with a parameter,
/// in a transaction begun by `begin`, directly and through thermocline:
/// the same rows to FETCH in both directions. The transactions stay open.
async fn declared_with_a_parameter(
    (direct, through): (&tokio_postgres::Client, &tokio_postgres::Client),
    begin: &str,
) {
    for c in [direct, through] {
        c.batch_execute(begin).await.unwrap();
        c.execute(
            "DECLARE p SCROLL CURSOR FOR SELECT id, amount, created_at FROM orders \
             WHERE customer_id = $1 ORDER BY id",
            &[&3i32],
        )
        .await
        .unwrap();
    }
    for sql in [
        "FETCH 20 FROM p",
        "FETCH BACKWARD 5 FROM p",
        "FETCH ALL FROM p",
    ] {
        assert_eq!(
            in_order(through, sql).await,
            in_order(direct, sql).await,
            "{sql}"
        );
    }
}

/// In a read-only transaction (`BEGIN READ ONLY`, or a session whose
/// transactions are read-only by default, as on a standby), where no table
/// can keep a cursor's rows, a cursor over a tiered table still reads the
/// whole history: the same answers to FETCH and MOVE, and the same column
/// types, as Postgres's, over both protocols.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_in_read_only_transactions_read_the_whole_history() {
    let (s, _proxy, direct, through) = moved_and_served().await;
    let total: i64 = value(&s.oracle, "SELECT count(*) FROM orders").await;
    assert!(hot_count(&s.tiered).await * 2 < total);
    let script = [
        "BEGIN READ ONLY",
        "DECLARE c SCROLL CURSOR FOR SELECT id, created_at, amount, status, note, score, day, flag, \
         amount * 2 AS twice, created_at - interval '1 day' AS \"day before\", \
         date_trunc('month', created_at) AS m FROM orders ORDER BY id",
        "FETCH 700 FROM c",
        "MOVE 300 IN c",
        "FETCH BACKWARD 3 FROM c",
        "FETCH ABSOLUTE 1500 FROM c",
        "FETCH LAST FROM c",
        "FETCH ALL FROM c",
        "FETCH RELATIVE -2400 FROM c",
        "DECLARE g NO SCROLL CURSOR FOR SELECT status, count(*), sum(amount), max(score) \
         FROM orders GROUP BY 1 ORDER BY 1",
        "FETCH ALL FROM g",
        "DECLARE none CURSOR FOR SELECT id, note FROM orders WHERE id < 0",
        "FETCH ALL FROM none",
        "SELECT name, is_holdable, is_scrollable FROM pg_cursors ORDER BY name",
        "COMMIT",
        "FETCH 1 FROM c",
        // A cursor's name taken: Postgres's error, and the next DECLARE
        // goes on.
        "BEGIN READ ONLY",
        "DECLARE d CURSOR FOR SELECT id FROM orders",
        "DECLARE d CURSOR FOR SELECT id FROM orders",
        "ROLLBACK",
        "BEGIN READ ONLY",
        "DECLARE d CURSOR FOR SELECT id, note FROM orders ORDER BY id",
        "FETCH 3 FROM d",
        "COMMIT",
        "SET default_transaction_read_only = on",
        "DECLARE held CURSOR WITH HOLD FOR SELECT id, amount, day FROM orders WHERE amount > 50 ORDER BY id",
        "FETCH 10 FROM held",
        "BEGIN",
        "FETCH 500 FROM held",
        "COMMIT",
        "FETCH ALL FROM held",
        "CLOSE held",
        "BEGIN",
        "DECLARE bad CURSOR FOR SELECT nosuch FROM orders",
        "ROLLBACK",
        "RESET default_transaction_read_only",
        "SHOW transaction_read_only",
    ];
    for sql in script {
        let want = in_order(&direct, sql).await;
        let got = in_order(&through, sql).await;
        assert_eq!(got, want, "{sql}");
    }
    // The rows came from both tiers, and no table was made to keep them.
    for c in [&direct, &through] {
        c.batch_execute("BEGIN READ ONLY").await.unwrap();
        c.batch_execute("DECLARE every CURSOR FOR SELECT id FROM orders")
            .await
            .unwrap();
    }
    let rows = in_order(&through, "FETCH ALL FROM every").await.unwrap();
    assert_eq!(rows.len() as i64, total);
    // FETCH described over the extended protocol: the query's columns and
    // types.
    for c in [&direct, &through] {
        c.batch_execute(
            "DECLARE typed CURSOR FOR SELECT id, created_at, amount, note, day, flag, score FROM orders",
        )
        .await
        .unwrap();
    }
    let columns = async |c: &tokio_postgres::Client| {
        let statement = c.prepare("FETCH 3 FROM typed").await.unwrap();
        statement
            .columns()
            .iter()
            .map(|c| (c.name().to_string(), c.type_().name().to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(columns(&through).await, columns(&direct).await);
    for c in [&direct, &through] {
        c.batch_execute("COMMIT").await.unwrap();
    }
    // Declared over the extended protocol, with a parameter.
    declared_with_a_parameter((&direct, &through), "BEGIN READ ONLY").await;
    for c in [&direct, &through] {
        c.batch_execute("COMMIT").await.unwrap();
    }
    // A column no array can hold (an array) is refused, over both
    // protocols, and the transaction fails as after Postgres's errors.
    through.batch_execute("BEGIN READ ONLY").await.unwrap();
    let refused = in_order(
        &through,
        "DECLARE a CURSOR FOR SELECT ARRAY[id] FROM orders",
    )
    .await;
    assert_eq!(refused, Err("0A000".to_string()));
    assert_eq!(
        in_order(&through, "SELECT 1").await,
        Err("25P02".to_string())
    );
    through
        .batch_execute("ROLLBACK; BEGIN READ ONLY")
        .await
        .unwrap();
    let refused = through
        .execute(
            "DECLARE a CURSOR FOR SELECT ARRAY[id] FROM orders WHERE customer_id = $1",
            &[&3i32],
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code().map(|c| c.code()), Some("0A000"));
    assert_eq!(
        in_order(&through, "SELECT 1").await,
        Err("25P02".to_string())
    );
    through.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        in_order(&through, "SELECT count(*) FROM pg_cursors").await,
        Ok(vec![vec![Some("0".to_string())]])
    );
}

/// A query string of several statements, some over a tiered table (`psql
/// -c "…; …"`, a script, psycopg's and Npgsql's multi-statement queries):
/// each is answered in turn over the whole history, outside a transaction
/// block all in one transaction (a failure undoes the earlier ones), and
/// the first failure ends the rest, as Postgres answers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_statements_in_one_query_read_the_whole_history() {
    let (s, proxy, direct, through) = moved_and_served().await;
    let total: i64 = value(&s.oracle, "SELECT count(*) FROM orders").await;
    assert!(hot_count(&s.tiered).await * 2 < total);
    // Every reply but RowDescription, in order, or the SQLSTATE.
    let replies = async |c: &tokio_postgres::Client, sql: &str| match c.simple_query(sql).await {
        Ok(msgs) => Ok(msgs
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(format!(
                    "{:?}",
                    (0..r.len()).map(|i| r.get(i)).collect::<Vec<_>>()
                )),
                SimpleQueryMessage::CommandComplete(n) => Some(format!("complete {n}")),
                _ => None,
            })
            .collect::<Vec<_>>()),
        Err(e) => Err(e.code().map_or(e.to_string(), |c| c.code().to_string())),
    };
    let script = [
        "SELECT count(*) FROM orders; SELECT sum(amount), max(day) FROM orders WHERE customer_id = 3",
        "CREATE TABLE side (n bigint); INSERT INTO side SELECT count(*) FROM orders; TABLE side",
        // Outside a block, one transaction: the INSERT goes with the failure.
        "INSERT INTO side VALUES (1); SELECT count(*) FROM orders; SELECT 1/0; INSERT INTO side VALUES (5)",
        "SELECT n FROM side ORDER BY n",
        "BEGIN; SELECT count(*) FROM orders WHERE status = 'paid'; INSERT INTO side VALUES (2); COMMIT",
        "BEGIN; INSERT INTO side VALUES (3); SELECT count(*) FROM orders; SELECT nosuch FROM orders; SELECT 2",
        "SELECT 1",
        "ROLLBACK",
        "SELECT n FROM side ORDER BY n",
        // Semicolons in strings, quoted names and comments; empty statements.
        "SELECT 1 AS \"a;b\";; -- a comment; with a semicolon\n\
         SELECT count(*) FROM orders WHERE note <> 'x;y' /* ; */ ;",
        "SELECT count(*) FROM orders; SHOW transaction_read_only; SELECT id FROM orders ORDER BY id LIMIT 3",
        "DROP TABLE side; SELECT min(created_at) FROM orders",
        // A setting changed by one statement holds for the next ones, and
        // for the session after.
        "SET TimeZone = 'America/New_York'; SELECT min(created_at), max(created_at) FROM orders; \
         SELECT created_at FROM orders ORDER BY id DESC LIMIT 2",
        "SELECT min(created_at) FROM orders",
        "SET DateStyle = 'German'; SELECT min(day), min(created_at) FROM orders; RESET DateStyle",
        "SELECT min(day) FROM orders; RESET TimeZone; SELECT min(created_at) FROM orders",
    ];
    for sql in script {
        let want = replies(&direct, sql).await;
        let got = replies(&through, sql).await;
        assert_eq!(got, want, "{sql}");
    }
    // A COPY FROM STDIN among them is refused, and nothing runs.
    let copy = "CREATE TEMP TABLE t (n int); COPY t FROM STDIN; SELECT count(*) FROM orders";
    assert_eq!(replies(&through, copy).await, Err("0A000".to_string()));
    assert_eq!(
        replies(
            &through,
            "SELECT count(*) FROM pg_class WHERE relname = 't'"
        )
        .await,
        replies(&direct, "SELECT count(*) FROM pg_class WHERE relname = 't'").await
    );
    // The history was read: the first count is every row's.
    let first = replies(&through, "SELECT 1; SELECT count(*) FROM orders").await;
    assert_eq!(
        first,
        Ok(vec![
            "[Some(\"1\")]".to_string(),
            "complete 1".to_string(),
            format!("[Some(\"{total}\")]"),
            "complete 1".to_string()
        ])
    );
    // psql -c with several statements prints what it prints directly.
    // So do its errors, with their positions in the whole string.
    for sql in [
        "SELECT status, count(*) FROM orders GROUP BY 1 ORDER BY 1; SELECT count(*) FROM customers",
        "SELECT 1 AS a;\nSELECT count(*) FROM orders WHERE nosuch = 1",
        "SELECT 1 AS a; INSERT INTO nosuch SELECT count(*) FROM orders",
    ] {
        let want = psql_output(pg().port(), &s.oracle, &[], sql).await;
        let got = psql_output(proxy.port(), &s.tiered, &[], sql).await;
        assert_eq!(got, want, "{sql}");
    }
}

/// The command tag's row count, or the SQLSTATE, of one statement.
async fn tag_of(c: &tokio_postgres::Client, sql: &str) -> Result<Option<u64>, String> {
    match c.simple_query(sql).await {
        Ok(msgs) => Ok(msgs.iter().find_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })),
        Err(e) => Err(e.code().map_or(e.to_string(), |c| c.code().to_string())),
    }
}

/// The same command count (or SQLSTATE) directly and through
/// thermocline; for a SELECT, run again, the same rows.
async fn same_tags_and_rows(
    (direct, through): (&tokio_postgres::Client, &tokio_postgres::Client),
    sql: &str,
) {
    let want = tag_of(direct, sql).await;
    assert_eq!(tag_of(through, sql).await, want, "{sql}");
    if sql.starts_with("SELECT") {
        assert_eq!(
            in_order(through, sql).await,
            in_order(direct, sql).await,
            "{sql}"
        );
    }
}

/// CREATE TABLE … AS over a tiered table fills the table with the whole
/// history, as Postgres holding every row would; its errors and its
/// transaction are Postgres's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_table_as_holds_the_whole_history() {
    let (s, proxy, direct, through) = moved_and_served().await;
    for sql in [
        "CREATE TABLE monthly AS SELECT date_trunc('month', created_at) AS m, count(*) AS n, \
         sum(amount) AS total FROM orders GROUP BY 1",
        "SELECT * FROM monthly ORDER BY m",
        "CREATE TEMP TABLE paid AS SELECT o.id, o.amount, o.note, c.region FROM orders o \
         JOIN customers c ON c.id = o.customer_id WHERE o.status = 'paid'",
        "SELECT count(*), sum(amount), count(note), min(id), max(id) FROM paid",
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute \
         WHERE attrelid = 'paid'::regclass AND attnum > 0 ORDER BY attnum",
        "CREATE TABLE monthly AS SELECT 1 FROM orders",
        "CREATE TABLE wrong AS SELECT nosuch FROM orders",
        "BEGIN",
        "CREATE TABLE undone AS SELECT id FROM orders",
        "SELECT count(*) FROM undone",
        "ROLLBACK",
        "SELECT count(*) FROM undone",
    ] {
        same_tags_and_rows((&direct, &through), sql).await;
    }
    // The table in the tiered database holds every row's month.
    let total: i64 = value(&s.tiered, "SELECT sum(n)::int8 FROM monthly").await;
    assert_eq!(
        total,
        value::<i64>(&s.oracle, "SELECT count(*) FROM orders").await
    );
    assert!(hot_count(&s.tiered).await * 2 < total);
    // IF NOT EXISTS: made when missing, left as it is (with Postgres's
    // notice and tag) when there.
    for sql in [
        "CREATE TABLE IF NOT EXISTS m2 AS SELECT id, amount FROM orders WHERE status = 'paid'",
        "SELECT count(*), sum(amount) FROM m2",
        "CREATE TABLE IF NOT EXISTS m2 AS SELECT id FROM orders",
        "CREATE TABLE IF NOT EXISTS monthly AS SELECT 1 AS x FROM orders",
        "SELECT count(*), sum(amount) FROM m2",
    ] {
        same_tags_and_rows((&direct, &through), sql).await;
    }
    // psql shows Postgres's notice and tag for a table already there.
    let sql = "CREATE TABLE IF NOT EXISTS m2 AS SELECT id FROM orders";
    let run = |port, db| async move {
        let out = common::libpq_command("psql", port, db)
            .args(["-X", "-c", sql])
            .output()
            .await
            .expect("run psql");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (text(&out.stdout), text(&out.stderr))
    };
    let want = run(pg().port(), &s.oracle).await;
    assert!(want.1.contains("already exists, skipping"), "{want:?}");
    assert_eq!(run(proxy.port(), &s.tiered).await, want);
    // Over the extended protocol, with a parameter.
    for sql in [
        "CREATE TABLE m3 AS SELECT id, note FROM orders WHERE customer_id = $1",
        "SELECT id, amount INTO m4 FROM orders WHERE customer_id = $1",
    ] {
        let want = direct.execute(sql, &[&3i32]).await.unwrap();
        assert_eq!(through.execute(sql, &[&3i32]).await.unwrap(), want, "{sql}");
        assert!(want > 100, "{sql}: {want}");
    }
    for sql in [
        "SELECT count(*), sum(id), count(note) FROM m3",
        "SELECT count(*), sum(id), sum(amount) FROM m4",
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute \
         WHERE attrelid = 'm4'::regclass AND attnum > 0 ORDER BY attnum",
    ] {
        assert_eq!(
            in_order(&through, sql).await,
            in_order(&direct, sql).await,
            "{sql}"
        );
    }
    let e = through
        .execute(
            "CREATE TABLE m3 AS SELECT id FROM orders WHERE id > $1",
            &[&1i64],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("42P07"), "{e}");
}

/// A statement's rows and command counts, or its SQLSTATE.
type Outcome = Result<(Vec<Vec<Option<String>>>, Vec<u64>), String>;

async fn outcome(c: &tokio_postgres::Client, sql: &str) -> Outcome {
    let msgs = c
        .simple_query(sql)
        .await
        .map_err(|e| e.code().map_or(e.to_string(), |c| c.code().to_string()))?;
    let (mut rows, mut counts) = (Vec::new(), Vec::new());
    for m in &msgs {
        match m {
            SimpleQueryMessage::Row(r) => {
                rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            SimpleQueryMessage::CommandComplete(n) => counts.push(*n),
            _ => {}
        }
    }
    Ok((rows, counts))
}

/// `INSERT … SELECT` and `SELECT … INTO` reading a tiered table write its
/// whole history, as Postgres holding every row would: defaults, serial
/// order, literals typed by their column, ON CONFLICT, RETURNING, errors
/// and transactions are Postgres's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_select_and_select_into_write_the_whole_history() {
    let (s, _proxy, direct, through) = moved_and_served().await;
    same_outcomes(
        (&direct, &through),
        &[
        "CREATE TABLE summary (id serial PRIMARY KEY, month timestamptz, status text, n int8 NOT NULL, \
         total numeric, note text DEFAULT 'none', code int, at date DEFAULT '2020-01-01')",
        "INSERT INTO summary (month, status, n, total) SELECT date_trunc('month', created_at), status, \
         count(*), sum(amount) FROM orders GROUP BY 1, 2 ORDER BY 1, 2",
        "SELECT * FROM summary ORDER BY id",
        "INSERT INTO summary (month, n, note, code) SELECT date_trunc('year', created_at), count(*), \
         NULL, '7' FROM orders GROUP BY 1 ORDER BY 1 RETURNING id, month, n, note, code, at",
        "CREATE TABLE per_customer (customer_id int PRIMARY KEY, n int8)",
        "INSERT INTO per_customer SELECT customer_id, count(*) FROM orders WHERE id % 2 = 0 GROUP BY 1",
        "INSERT INTO per_customer AS p SELECT o.customer_id, count(*) FROM orders o JOIN customers c \
         ON c.id = o.customer_id GROUP BY 1 ORDER BY 1 \
         ON CONFLICT (customer_id) DO UPDATE SET n = p.n + excluded.n RETURNING *",
        "INSERT INTO per_customer SELECT customer_id, count(*) FROM orders GROUP BY 1",
        "WITH late AS (SELECT * FROM orders WHERE status = 'returned') INSERT INTO summary (status, n) \
         SELECT 'returned', count(*) FROM late RETURNING status, n, note",
        "INSERT INTO per_customer SELECT nosuch FROM orders",
        "INSERT INTO per_customer SELECT 'x', 1 FROM orders",
        "BEGIN",
        "INSERT INTO summary (n) SELECT count(*) FROM orders WHERE note IS NULL",
        "SELECT count(*), sum(n) FROM summary",
        "ROLLBACK",
        "SELECT count(*), sum(n) FROM summary",
        "SELECT customer_id, sum(amount) AS total INTO TEMP by_customer FROM orders GROUP BY 1",
        "SELECT * FROM by_customer ORDER BY 1",
        "SELECT id, note INTO TABLE paid_ids FROM orders WHERE status = 'paid'",
        "SELECT count(*), min(id), max(id), count(note) FROM paid_ids",
        "SELECT id INTO paid_ids FROM orders",
        "SELECT count(*) FROM pg_class WHERE relname LIKE 'thermocline%'",
        ],
        false,
    )
    .await;
    // The summary in the tiered database counts every row.
    let total: i64 = value(
        &s.tiered,
        "SELECT sum(n)::int8 FROM summary WHERE status IS NOT NULL AND month IS NOT NULL",
    )
    .await;
    assert_eq!(
        total,
        value::<i64>(&s.oracle, "SELECT count(*) FROM orders").await
    );
    assert!(hot_count(&s.tiered).await * 2 < total);
    // Over the extended protocol, with parameters in the query and in
    // ON CONFLICT, binary results for RETURNING.
    for c in [&direct, &through] {
        let n = c
            .execute(
                "INSERT INTO summary (n, note, code) SELECT count(*), $1, $2 FROM orders \
                 WHERE customer_id > $2",
                &[&"extended", &3i32],
            )
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
    let upsert = "INSERT INTO per_customer SELECT customer_id, count(*) FROM orders \
                  WHERE status = $1 GROUP BY 1 ORDER BY 1 \
                  ON CONFLICT (customer_id) DO UPDATE SET n = excluded.n * $2 RETURNING *";
    let returned = |rows: Vec<tokio_postgres::Row>| -> Vec<(i32, i64)> {
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    };
    let want = returned(direct.query(upsert, &[&"paid", &2i64]).await.unwrap());
    assert_eq!(
        returned(through.query(upsert, &[&"paid", &2i64]).await.unwrap()),
        want
    );
    assert!(want.len() >= 5, "{want:?}");
    same_outcomes(
        (&direct, &through),
        &[
            "SELECT * FROM summary ORDER BY id",
            "SELECT * FROM per_customer ORDER BY 1",
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'thermocline%'",
        ],
        false,
    )
    .await;
    let e = through
        .execute(
            "INSERT INTO per_customer SELECT customer_id, count(*) FROM orders GROUP BY 1",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("23505"), "{e}");
}

/// Runs each statement directly and through thermocline: the same
/// [`outcome`]s. `sorted`: rows compared sorted (the rows a write returns
/// come in the order of Postgres's plan, which differs when it reads kept
/// rows).
async fn same_outcomes(
    (direct, through): (&tokio_postgres::Client, &tokio_postgres::Client),
    sqls: &[&str],
    sorted: bool,
) {
    for sql in sqls {
        let run = |c| async move {
            outcome(c, sql).await.map(|(mut rows, counts)| {
                if sorted {
                    rows.sort();
                }
                (rows, counts)
            })
        };
        let want = run(direct).await;
        assert_eq!(run(through).await, want, "{sql}");
    }
}

/// `UPDATE … FROM`, `DELETE … USING`, `MERGE … USING` and the subqueries
/// of writes to tables that are not tiered read a tiered table's whole
/// history, as Postgres holding every row would: joined tables, grouped
/// and correlated subqueries, CTEs, RETURNING, errors and transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_that_read_a_tiered_table_read_its_whole_history() {
    let (s, _proxy, direct, through) = moved_and_served().await;
    same_outcomes(
        (&direct, &through),
        &[
        "CREATE TABLE totals (customer_id int PRIMARY KEY, total numeric, n int8)",
        "INSERT INTO totals SELECT i, 0, 0 FROM generate_series(1, 25) i",
        "CREATE TABLE ledger (id bigint PRIMARY KEY, customer_id int, amount numeric(12,2), \
         seen int8 DEFAULT 0, tag text)",
        "INSERT INTO ledger (id, customer_id) SELECT i, 1 + i % 20 FROM generate_series(1, 3000, 3) i",
        // A grouped subquery that stands alone.
        "UPDATE totals t SET total = s.total, n = s.n FROM (SELECT customer_id, sum(amount) AS total, \
         count(*) AS n FROM orders GROUP BY 1) s WHERE t.customer_id = s.customer_id",
        "SELECT * FROM totals ORDER BY 1",
        // The tiered table joined, with conditions on its own columns.
        "UPDATE ledger l SET amount = o.amount, tag = o.status FROM orders o \
         WHERE o.id = l.id AND o.created_at < now() - interval '100 days' AND (o.amount > 10 OR l.id < 90) \
         RETURNING l.id, l.amount, l.tag",
        "DELETE FROM ledger l USING orders o WHERE o.id = l.id AND o.status = 'returned' RETURNING l.*",
        // Correlated subqueries.
        "DELETE FROM ledger l WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = l.id AND o.amount IS NOT NULL) \
         AND l.id < 2500 RETURNING id",
        "UPDATE totals t SET n = (SELECT count(*) FROM orders o WHERE o.customer_id = t.customer_id AND o.flag)",
        "UPDATE ledger SET seen = seen + 1 WHERE id IN (SELECT id FROM orders WHERE note = 'note 3')",
        "MERGE INTO totals t USING (SELECT customer_id, count(*) AS n FROM orders WHERE status = 'paid' GROUP BY 1) s \
         ON s.customer_id = t.customer_id WHEN MATCHED AND s.n > 30 THEN UPDATE SET n = s.n \
         WHEN MATCHED THEN DELETE WHEN NOT MATCHED THEN INSERT VALUES (s.customer_id, 0, s.n)",
        "MERGE INTO ledger l USING orders o ON o.id = l.id \
         WHEN MATCHED AND o.created_at < now() - interval '1 year' THEN UPDATE SET tag = 'old ' || o.status \
         WHEN NOT MATCHED AND o.id % 50 = 0 THEN INSERT (id, customer_id, amount, tag) \
         VALUES (o.id, o.customer_id, o.amount, 'new')",
        "WITH w AS (SELECT customer_id, max(created_at) AS last FROM orders GROUP BY 1) \
         UPDATE totals t SET total = -1 FROM w WHERE w.customer_id = t.customer_id \
         AND w.last < now() - interval '1 day'",
        // Source rows a MERGE's ON does not match are inserted; rows an
        // outer join extends with NULLs are kept by IS NULL.
        "MERGE INTO ledger l USING orders o ON o.id = l.id AND o.amount > 50 \
         WHEN MATCHED THEN UPDATE SET tag = 'big' \
         WHEN NOT MATCHED AND o.id % 7 = 0 THEN INSERT (id, tag) VALUES (o.id + 100000, 'small')",
        "SELECT count(*), count(tag), sum(id) FROM ledger",
        "DELETE FROM ledger l USING customers x LEFT JOIN orders o ON o.customer_id = x.id \
         AND o.amount > 99.9 WHERE x.id = l.customer_id AND o.id IS NULL RETURNING l.id",
        // A CTE writing to the tiered table makes it a write to it:
        // Postgres's, over the hot rows.
        "WITH d AS (UPDATE orders SET note = 'cte' WHERE id = 1 RETURNING id) SELECT count(*) FROM d",
        // Postgres's errors.
        "UPDATE totals t SET n = 'x' FROM orders o WHERE o.customer_id = t.customer_id",
        "UPDATE totals t SET nosuch = 1 FROM orders o WHERE o.customer_id = t.customer_id",
        "DELETE FROM ledger WHERE id IN (SELECT nosuch FROM orders)",
        // In a transaction block: undone, and committed.
        "BEGIN",
        "DELETE FROM ledger USING orders o WHERE o.id = ledger.id",
        "SELECT count(*) FROM ledger",
        "ROLLBACK",
        "BEGIN",
        "UPDATE totals t SET total = (SELECT sum(amount) FROM orders o WHERE o.customer_id = t.customer_id)",
        "SELECT sum(total) FROM totals",
        "COMMIT",
        "SELECT * FROM ledger ORDER BY id",
        "SELECT * FROM totals ORDER BY 1",
        "SELECT count(*) FROM pg_class WHERE relname LIKE 'thermocline%'",
        ],
        true,
    )
    .await;
    // The totals in the tiered database sum every row's amount.
    let sum = "SELECT sum(total)::text FROM totals";
    let total: String = value(&s.tiered, sum).await;
    assert_eq!(total, value::<String>(&s.oracle, sum).await);
    assert_eq!(
        total,
        value::<String>(&s.oracle, "SELECT sum(amount)::text FROM orders").await
    );
    let hot: String = value(&s.tiered, "SELECT sum(amount)::text FROM orders").await;
    assert_ne!(total, hot);
    // Prepared, with parameters (binary), in the write and beside the
    // tiered table's own conditions; RETURNING rows in binary.
    let prepared: [(&str, &[&(dyn tokio_postgres::types::ToSql + Sync)]); 5] = [
        (
            "UPDATE ledger l SET tag = o.status || $1, seen = seen + $2 FROM orders o \
             WHERE o.id = l.id AND o.customer_id = $2 AND o.created_at < now() - interval '60 days' \
             RETURNING l.id::text, l.tag, l.seen::text",
            &[&"+", &7i32],
        ),
        (
            "DELETE FROM ledger WHERE id IN (SELECT id FROM orders WHERE status = $1 AND note IS NULL) \
             RETURNING id::text, tag",
            &[&"paid"],
        ),
        (
            "MERGE INTO totals t USING (SELECT customer_id, sum(amount) AS s FROM orders \
             WHERE created_at < $1 GROUP BY 1) s ON s.customer_id = t.customer_id \
             WHEN MATCHED THEN UPDATE SET total = s.s WHEN NOT MATCHED THEN INSERT VALUES (s.customer_id, s.s, 0)",
            &[&std::time::SystemTime::now()],
        ),
        (
            "UPDATE totals t SET n = (SELECT count(*) FROM orders o WHERE o.customer_id = t.customer_id \
             AND o.amount::int > $1) RETURNING customer_id::text, n::text",
            &[&40i32],
        ),
        (
            "UPDATE totals t SET n = 'x' || $1 FROM orders o WHERE o.customer_id = t.customer_id",
            &[&"y"],
        ),
    ];
    for (sql, params) in prepared {
        let run = |c| async move {
            let c: &tokio_postgres::Client = c;
            match c.query(sql, params).await {
                Ok(rows) => {
                    let mut texts: Vec<Vec<Option<String>>> = rows
                        .iter()
                        .map(|r| (0..r.len()).map(|i| r.get(i)).collect())
                        .collect();
                    texts.sort();
                    Ok(texts)
                }
                Err(e) => Err(e.code().map(|c| c.code().to_string())),
            }
        };
        let want = run(&direct).await;
        assert_eq!(run(&through).await, want, "{sql}");
    }
    same_outcomes(
        (&direct, &through),
        &[
            "SELECT * FROM ledger ORDER BY id",
            "SELECT * FROM totals ORDER BY 1",
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'thermocline%'",
        ],
        false,
    )
    .await;
    // EXPLAIN ANALYZE would run the write over the hot rows: refused, and
    // nothing written. EXPLAIN alone shows Postgres's plan.
    let count = "SELECT count(*) FROM ledger";
    let before: i64 = value(&s.tiered, count).await;
    for sql in [
        "EXPLAIN ANALYZE INSERT INTO ledger (id) SELECT id + 100000 FROM orders",
        "EXPLAIN (ANALYZE, COSTS off) DELETE FROM ledger USING orders o WHERE o.id = ledger.id",
    ] {
        assert_eq!(
            outcome(&through, sql).await.map(|_| ()),
            Err("0A000".to_string()),
            "{sql}"
        );
    }
    assert_eq!(value::<i64>(&s.tiered, count).await, before);
    let explained = outcome(
        &through,
        "EXPLAIN DELETE FROM ledger USING orders o WHERE o.id = ledger.id",
    )
    .await
    .unwrap();
    assert!(
        format!("{explained:?}").contains("Delete on ledger"),
        "{explained:?}"
    );
    // In a read-only transaction, Postgres's error for the statement
    // itself, over both protocols.
    let refused = |c, sql: &'static str, params: bool| async move {
        let c: &tokio_postgres::Client = c;
        c.batch_execute("BEGIN READ ONLY").await.unwrap();
        let e = match params {
            false => c.simple_query(sql).await.map(|_| ()),
            true => c.execute(sql, &[&1i32]).await.map(|_| ()),
        }
        .expect_err(sql);
        c.batch_execute("ROLLBACK").await.unwrap();
        let db = e.as_db_error().expect(sql);
        (db.code().code().to_string(), db.message().to_string())
    };
    for (sql, params) in [
        ("INSERT INTO ledger (id) SELECT id FROM orders", false),
        (
            "INSERT INTO ledger (id) SELECT id FROM orders WHERE customer_id = $1",
            true,
        ),
        (
            "UPDATE ledger SET tag = o.status FROM orders o WHERE o.id = ledger.id",
            false,
        ),
        (
            "DELETE FROM ledger WHERE id IN (SELECT id FROM orders)",
            false,
        ),
        ("SELECT id INTO l2 FROM orders", false),
        ("SELECT id INTO l2 FROM orders WHERE customer_id = $1", true),
        ("CREATE TABLE l3 AS SELECT id FROM orders", false),
    ] {
        let want = refused(&direct, sql, params).await;
        assert_eq!(want.0, "25006", "{sql}");
        assert_eq!(refused(&through, sql, params).await, want, "{sql}");
    }
}

/// With the lake unreadable, federated reads fail with an error naming the
/// tier; relayed statements go on; reads work again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_lake_fails_federated_reads_only() {
    let s = setup().await;
    move_rows(&s).await;
    let proxy = serve(&s).await;
    let through = client(proxy.port(), "postgres", &s.tiered).await;
    let warehouse = s.warehouse();
    let (tables, hidden) = (warehouse.join("public"), warehouse.join("public.away"));
    std::fs::rename(&tables, &hidden).unwrap();
    let e = through
        .simple_query("SELECT count(*) FROM orders")
        .await
        .expect_err("the lake is gone");
    let db = e.as_db_error().expect("an error from the server");
    assert_eq!(db.code().code(), "HV00N", "{db:?}");
    assert!(
        db.message().contains("cold tier of public.orders"),
        "{}",
        db.message()
    );
    assert_eq!(
        ask(&through, "SELECT count(*) FROM customers").await,
        Answer::Rows(vec!["count".into()], vec![vec![Some("20".into())]])
    );
    std::fs::rename(&hidden, &tables).unwrap();
    let want = ask(
        &client(pg().port(), "postgres", &s.oracle).await,
        "SELECT count(*) FROM orders",
    )
    .await;
    assert_eq!(ask(&through, "SELECT count(*) FROM orders").await, want);
}

/// A session's first statement over a tiered table also has its backend
/// plan it ahead, in a savepoint, while thermocline plans it: whether
/// that plan succeeds, fails as Postgres plans it, or never begins (the
/// statement does not parse), the statement is answered as Postgres
/// answers it and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_first_statement_is_answered_whatever_its_warm_up_does() {
    // Each first statement goes through a session of its own.
    let (s, proxy, direct, _) = moved_and_served().await;
    let firsts = [
        // A key in the lake, then one in Postgres.
        "SELECT * FROM orders WHERE id = 2000",
        "SELECT * FROM orders WHERE id = 3 -- the comment ends the statement",
        "SELECT status, count(*), sum(amount) FROM orders GROUP BY status ORDER BY status;",
        "SELECT c.region, count(*) FROM orders o JOIN customers c ON c.id = o.customer_id \
         GROUP BY 1 ORDER BY 1",
        // Fails as Postgres plans it (22P02): the warm-up fails first.
        "SELECT * FROM orders WHERE id = 2000 OR ('abc'::text)::int = 1",
        // Fails as Postgres parses it (42703), before the warm-up begins.
        "SELECT * FROM orders WHERE no_such_column = 1",
    ];
    let then = "SELECT count(*), sum(amount), max(created_at) FROM orders WHERE customer_id = 3";
    for first in firsts {
        let through = client(proxy.port(), "postgres", &s.tiered).await;
        let want = ask(&direct, first).await;
        assert_eq!(ask(&through, first).await, want, "first statement: {first}");
        assert_eq!(
            ask(&through, then).await,
            ask(&direct, then).await,
            "the statement after: {first}"
        );
        through.batch_execute("BEGIN").await.unwrap();
        assert_eq!(
            ask(&through, then).await,
            ask(&direct, then).await,
            "in a block after: {first}"
        );
        through.batch_execute("COMMIT").await.unwrap();
    }
}

/// Names resolve as the session resolves them: its search_path, its
/// temporary tables, and views written back with names the session reads
/// the same way. Columns are read on thermocline's catalog connection, and
/// on the session's while that connection is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_resolve_as_the_session_resolves_them() {
    let s = setup().await;
    move_rows(&s).await;
    // sales.customers shadows public.customers for a session whose
    // search_path starts with sales: the view's definition must name
    // public.customers for it.
    in_both(
        &s,
        "CREATE SCHEMA sales;
         CREATE TABLE sales.customers (id int PRIMARY KEY, region text, since date);
         INSERT INTO sales.customers SELECT i, 'sales ' || i, date '2024-01-01' + i FROM generate_series(1, 5) i;
         CREATE VIEW public.orders_by_region AS
             SELECT c.region, count(*) AS n, sum(o.amount) AS total
             FROM public.orders o JOIN public.customers c ON c.id = o.customer_id GROUP BY c.region;",
    )
    .await;
    let proxy = serve(&s).await;
    let direct = client(pg().port(), "postgres", &s.oracle).await;
    let through = client(proxy.port(), "postgres", &s.tiered).await;
    let queries = [
        "SELECT * FROM orders_by_region ORDER BY region",
        "SELECT c.region, count(*) FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY 1 ORDER BY 1",
        "SELECT count(*), sum(amount) FROM orders",
        "SELECT count(*), sum(amount) FROM public.orders",
    ];
    let same = |label: &'static str, direct, through| async move {
        for sql in queries {
            let want = ask(direct, sql).await;
            assert!(matches!(want, Answer::Rows(..)), "{label}: {sql}: {want:?}");
            assert_eq!(ask(through, sql).await, want, "{label}: {sql}");
        }
    };
    let session = "SET search_path = sales, public";
    for c in [&direct, &through] {
        c.batch_execute(session).await.unwrap();
    }
    same("search_path sales, public", &direct, &through).await;
    // The catalog connection read the columns, with the session's path.
    let read_on_catalog_connection = |path: &'static str, label: &'static str| {
        let db = &s.tiered;
        async move {
            let last: String = value(
                db,
                "SELECT query FROM pg_stat_activity WHERE application_name = 'thermocline catalog' AND datname = current_database()",
            )
            .await;
            assert!(
                last.contains("pg_attribute") && last.contains(&format!("'search_path', '{path}'")),
                "{label}: {last}"
            );
        }
    };
    read_on_catalog_connection("pg_catalog, sales, public", "simple protocol").await;
    // New sessions of the same role on the default path: the columns read
    // as they are described, under the path the role had last (where
    // customers is sales.customers), are not taken.
    let direct_default = client(pg().port(), "postgres", &s.oracle).await;
    let through_default = client(proxy.port(), "postgres", &s.tiered).await;
    let join = queries[1];
    assert_eq!(
        ask(&through_default, join).await,
        ask(&direct_default, join).await,
        "default search_path, first statement: {join}"
    );
    same("default search_path", &direct_default, &through_default).await;
    read_on_catalog_connection("pg_catalog, public", "default search_path").await;
    same("search_path sales, public, again", &direct, &through).await;
    // Over the extended protocol too, in a session whose path reads
    // public.customers first.
    let extended = "SELECT c.region, count(*), sum(o.amount)::text FROM orders o \
                    JOIN customers c ON c.id = o.customer_id GROUP BY 1 ORDER BY 1";
    let mut answers = Vec::new();
    for port in [pg().port(), proxy.port()] {
        let db = if port == pg().port() {
            &s.oracle
        } else {
            &s.tiered
        };
        let c = client(port, "postgres", db).await;
        c.batch_execute("SET search_path = public, sales")
            .await
            .unwrap();
        let rows: Vec<(String, i64, Option<String>)> = c
            .query(extended, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        answers.push(rows);
    }
    assert!(answers[0].len() > 1);
    assert_eq!(answers[1], answers[0], "extended protocol: {extended}");
    read_on_catalog_connection("pg_catalog, public, sales", "extended protocol").await;

    // A temporary table comes first (and the session reads the catalogs
    // itself: its temporary schema is its own).
    let temp = "CREATE TEMP TABLE orders (id int, customer_id int, amount numeric(10, 2));
                INSERT INTO orders VALUES (1, 1, 2.5), (2, 3, 4), (3, 3, NULL)";
    for c in [&direct, &through] {
        c.batch_execute(temp).await.unwrap();
    }
    same("a temporary orders", &direct, &through).await;

    // The catalog connection gone: a new session reads the catalogs
    // itself, and the connection comes back.
    let killed: i64 = value(
        &s.tiered,
        "SELECT count(pg_catalog.pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = 'thermocline catalog' AND datname = current_database()",
    )
    .await;
    assert_eq!(killed, 1);
    let direct = client(pg().port(), "postgres", &s.oracle).await;
    let through = client(proxy.port(), "postgres", &s.tiered).await;
    for c in [&direct, &through] {
        c.batch_execute(session).await.unwrap();
    }
    same("catalog connection gone", &direct, &through).await;
    let mut back = 0;
    for _ in 0..100 {
        back = value(
            &s.tiered,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'thermocline catalog' AND datname = current_database()",
        )
        .await;
        if back == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(back, 1_i64, "the catalog connection is open again");
    same("catalog connection back", &direct, &through).await;
}

/// SIGHUP reloads the tier definitions: a table defined after start is read
/// over both tiers by sessions that start after the reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_tier_definitions() {
    let s = setup().await;
    move_rows(&s).await;
    let later = tempfile::tempdir().unwrap();
    let config_file = later.path().join("thermocline.toml");
    std::fs::create_dir(later.path().join("catalog")).unwrap();
    let port = write_serve_config(&config_file, &later.path().join("catalog"), &s);
    let mut server = ServeProcess::start(&config_file, Some("info"));
    server.wait_for("thermocline is serving").await;
    let oracle = ask(
        &client(pg().port(), "postgres", &s.oracle).await,
        "SELECT count(*) FROM orders",
    )
    .await;
    let hot_only = ask(
        &client(port, "postgres", &s.tiered).await,
        "SELECT count(*) FROM orders",
    )
    .await;
    assert_ne!(
        hot_only, oracle,
        "before the reload the table is not tiered"
    );
    std::fs::copy(
        s.config.catalog_dir.as_ref().unwrap().join("orders.toml"),
        later.path().join("catalog/orders.toml"),
    )
    .unwrap();
    server.signal(libc::SIGHUP);
    server.wait_for("tier definitions reloaded").await;
    let whole = ask(
        &client(port, "postgres", &s.tiered).await,
        "SELECT count(*) FROM orders",
    )
    .await;
    assert_eq!(whole, oracle);
    server.stop();
}

/// The lake is open: pyiceberg, another Iceberg implementation, reads the
/// table the mover wrote and finds exactly the rows that left Postgres, and
/// the watermark in the snapshot summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyiceberg_reads_the_lake() {
    let s = setup().await;
    move_rows(&s).await;
    pyiceberg_reads_the_cold_rows(&s).await;
}

/// pyiceberg finds in the lake exactly the rows the oracle holds and the
/// tiered database's Postgres does not (count, sum of ids and amounts),
/// and a watermark.
async fn pyiceberg_reads_the_cold_rows(s: &Setup) {
    let sums =
        "SELECT count(*)::text || ' ' || sum(id)::text || ' ' || sum(amount)::text FROM orders";
    let all: String = admin(&s.oracle)
        .await
        .query_one(sums, &[])
        .await
        .unwrap()
        .get(0);
    let hot: String = admin(&s.tiered)
        .await
        .query_one(sums, &[])
        .await
        .unwrap()
        .get(0);
    let parse = |t: &str| -> (i64, i64, f64) {
        let v: Vec<&str> = t.split(' ').collect();
        (
            v[0].parse().unwrap(),
            v[1].parse().unwrap(),
            v[2].parse().unwrap(),
        )
    };
    let (all, hot) = (parse(&all), parse(&hot));
    let printed = pyiceberg_read(s);
    let v: Vec<&str> = printed.split_whitespace().collect();
    assert_eq!(v[0].parse::<i64>().unwrap(), all.0 - hot.0, "{printed}");
    assert_eq!(v[1].parse::<i64>().unwrap(), all.1 - hot.1, "{printed}");
    let cold_amount: f64 = v[2].parse().unwrap();
    assert!((cold_amount - (all.2 - hot.2)).abs() < 0.005, "{printed}");
    assert!(v[3].parse::<i64>().unwrap() > 0, "watermark in {printed}");
}

/// Federated statements are counted and timed in /metrics' figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_statements_show_in_metrics() {
    use thermocline::admin::metrics::{METRICS, RouteLabel};
    let s = setup().await;
    move_rows(&s).await;
    let proxy = serve(&s).await;
    let before = METRICS.statements(RouteLabel::Federated);
    let through = client(proxy.port(), "postgres", &s.tiered).await;
    ask(&through, "SELECT count(*) FROM orders").await;
    ask(&through, "SELECT nosuch FROM orders").await;
    // A statement is counted as its session finishes with it, just after
    // the client has its answer.
    let mut after = METRICS.statements(RouteLabel::Federated);
    for _ in 0..100 {
        if after >= before + 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        after = METRICS.statements(RouteLabel::Federated);
    }
    assert!(after >= before + 2, "{before} -> {after}");
    let text = METRICS.render();
    assert!(
        text.contains(
            "thermocline_statement_duration_seconds_bucket{route=\"federated\",le=\"+Inf\"}"
        ),
        "{text}"
    );
    assert!(
        text.contains("# TYPE thermocline_statement_errors_total counter"),
        "{text}"
    );
}

/// A statement prepared before the boundary moves returns the right rows
/// after it moves: each Execute reads the lake's current snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_statement_stays_right_when_the_boundary_moves() {
    let s = setup().await;
    let proxy = serve(&s).await;
    let through = client(proxy.port(), "postgres", &s.tiered).await;
    let direct = client(pg().port(), "postgres", &s.oracle).await;
    let sql = "SELECT count(*), sum(amount)::text FROM orders WHERE id > $1";
    let (here, there) = (
        through.prepare(sql).await.unwrap(),
        direct.prepare(sql).await.unwrap(),
    );
    for min in [0i64, 1000] {
        let a = through.query_one(&here, &[&min]).await.unwrap();
        let b = direct.query_one(&there, &[&min]).await.unwrap();
        assert_eq!(
            (a.get::<_, i64>(0), a.get::<_, Option<String>>(1)),
            (b.get::<_, i64>(0), b.get::<_, Option<String>>(1))
        );
    }
    // Rows move to the lake; the same prepared statement, again.
    assert!(move_rows(&s).await > 2000);
    for min in [0i64, 1000, 2300] {
        let a = through.query_one(&here, &[&min]).await.unwrap();
        let b = direct.query_one(&there, &[&min]).await.unwrap();
        assert_eq!(
            (a.get::<_, i64>(0), a.get::<_, Option<String>>(1)),
            (b.get::<_, i64>(0), b.get::<_, Option<String>>(1)),
            "after the move, id > {min}"
        );
    }
}

/// `thermocline.tiers` shows each tiered table's two tiers; its hot and
/// cold row counts add up to what the oracle holds, and its watermark is
/// the one the mover recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tiers_view_adds_up_to_the_oracle() {
    let s = setup().await;
    let moved = move_rows(&s).await;
    let proxy = serve(&s).await;
    let through = client(proxy.port(), "postgres", &s.tiered).await;
    let direct = client(pg().port(), "postgres", &s.oracle).await;
    let all: i64 = direct
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    // Extended protocol, with a parameter, as BI tools ask.
    let row = through
        .query_one(
            "SELECT table_name, time_column, hot_window::text, hot_rows, cold_rows, cold_files, \
                    watermark IS NOT NULL AND watermark <= now() - hot_window, snapshot_id IS NOT NULL, state \
             FROM thermocline.tiers WHERE table_name = $1",
            &[&"public.orders"],
        )
        .await
        .unwrap();
    let (hot, cold): (i64, i64) = (row.get(3), row.get(4));
    assert_eq!(row.get::<_, String>(1), "created_at");
    assert_eq!(row.get::<_, String>(2), "30 days");
    assert_eq!(hot, hot_count(&s.tiered).await);
    assert_eq!(cold, moved as i64);
    assert_eq!(hot + cold, all, "the tiers add up to the oracle's rows");
    assert!(row.get::<_, i64>(5) > 0);
    assert!(row.get::<_, bool>(6), "watermark recorded");
    assert!(row.get::<_, bool>(7), "snapshot recorded");
    // The simple protocol, joined with a real table.
    let joined = ask(
        &through,
        "SELECT t.table_name, c.relname FROM thermocline.tiers t \
         JOIN pg_class c ON c.relname = split_part(t.table_name, '.', 2)",
    )
    .await;
    assert_eq!(
        joined,
        Answer::Rows(
            vec!["table_name".into(), "relname".into()],
            vec![vec![Some("public.orders".into()), Some("orders".into())]]
        )
    );
}

/// With max_federated_statements = 1, a second federated statement waits
/// for the first and fails with 53000 after federated_queue_timeout;
/// relayed statements are not held; once the first ends, the next runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_statements_queue_and_time_out() {
    let mut s = setup().await;
    move_rows(&s).await;
    s.config.max_federated_statements = 1;
    s.config.federated_queue_timeout = std::time::Duration::from_millis(500);
    let proxy = serve(&s).await;
    // Holding a lock on the table keeps the first federated statement
    // running (its Postgres side waits for the lock).
    let locker = admin(&s.tiered).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let first = client(proxy.port(), "postgres", &s.tiered).await;
    let second = client(proxy.port(), "postgres", &s.tiered).await;
    let running = tokio::spawn(async move { ask(&first, "SELECT count(*) FROM orders").await });
    // The first holds the only place once Postgres makes it wait for the lock.
    let watcher = admin("postgres").await;
    for _ in 0..600 {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
                &[&s.tiered],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let started = std::time::Instant::now();
    assert_eq!(
        ask(&second, "SELECT count(*) FROM orders").await,
        Answer::Error("53000".into())
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(450));
    assert_eq!(
        ask(&second, "SELECT 1 AS one").await,
        Answer::Rows(vec!["one".into()], vec![vec![Some("1".into())]])
    );
    locker.batch_execute("COMMIT").await.unwrap();
    let oracle = ask(
        &client(pg().port(), "postgres", &s.oracle).await,
        "SELECT count(*) FROM orders",
    )
    .await;
    assert_eq!(running.await.unwrap(), oracle);
    assert_eq!(ask(&second, "SELECT count(*) FROM orders").await, oracle);
}

/// With a small executor_memory, a statement that needs more than the
/// pool (a hash join whose build side cannot spill) fails with 53200, while a
/// small statement running beside it succeeds, and so does the greedy
/// session's next statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_greedy_statement_gets_53200_while_a_small_one_succeeds() {
    let mut s = setup().await;
    move_rows(&s).await;
    s.config.executor_memory = 64 << 20;
    let proxy = serve(&s).await;
    let greedy = client(proxy.port(), "postgres", &s.tiered).await;
    let small = client(proxy.port(), "postgres", &s.tiered).await;
    let direct = client(pg().port(), "postgres", &s.oracle).await;
    let small_sql =
        "SELECT status, count(*), sum(amount) FROM orders GROUP BY status ORDER BY status";
    let want = ask(&direct, small_sql).await;
    let (big, beside) = tokio::join!(
        ask(
            &greedy,
            "SELECT count(*) FROM \
               (SELECT a.id * 100000 + b.id AS k FROM orders a, orders b) x \
               JOIN (SELECT a.id * 100000 + b.id AS k FROM orders a, orders b) y \
               ON x.k = y.k"
        ),
        async {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            ask(&small, small_sql).await
        }
    );
    assert_eq!(big, Answer::Error("53200".into()));
    assert_eq!(beside, want);
    assert_eq!(ask(&greedy, small_sql).await, want);
}

/// `tier backfill` adopts two years of rows a slice at a time. Killed
/// between a slice's Iceberg commit and its Postgres commit, it resumes
/// where the lake says it stopped; run again when done, it skips every
/// slice. Reads equal the oracle after each step and `tier verify` passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_moves_history_in_slices_and_resumes() {
    let s = setup().await;
    let config_file = s._dirs.0.path().join("backfill.toml.conf");
    write_config(&config_file, &s);
    let to: String = value(&s.oracle, "SELECT (now() - interval '400 days')::text").await;
    let args = [
        "tier",
        "backfill",
        "--table",
        "public.orders",
        "--step",
        "60 days",
        "--to",
        &to,
    ];
    let older_than_to = |db: String| {
        let to = to.clone();
        async move {
            admin(&db)
                .await
                .query_one(
                    "SELECT count(*) FROM orders WHERE created_at < $1::text::timestamptz",
                    &[&to],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    let want = older_than_to(s.oracle.clone()).await;
    assert!(want > 1000, "{want}");

    let (code, printed) = cli(&config_file, &args, Some("after-iceberg-commit"));
    assert_eq!(code, Some(137), "{printed}");
    let proxy = serve(&s).await;
    same_answers(&s, &proxy, QUERIES).await;

    let (code, printed) = cli(&config_file, &args, None);
    assert_eq!(code, Some(0), "{printed}");
    let progress: Vec<&str> = printed
        .lines()
        .filter(|l| l.starts_with("backfill table=public.orders slice="))
        .collect();
    assert!(progress.len() >= 4, "{printed}");
    assert!(
        progress
            .iter()
            .all(|l| l.contains(" rows_per_s=") && l.contains(" eta_s=")),
        "{printed}"
    );
    assert!(
        printed.contains("(1 already done by an earlier run)"),
        "{printed}"
    );
    assert_eq!(older_than_to(s.tiered.clone()).await, 0);
    same_answers(&s, &proxy, QUERIES).await;

    let (code, printed) = cli(&config_file, &args, None);
    assert_eq!(code, Some(0), "{printed}");
    assert!(printed.contains(": 0 rows moved in 0 slices"), "{printed}");

    // Without --to: the rest, up to the hot window.
    let (code, printed) = cli(
        &config_file,
        &[
            "tier", "backfill", "--table", "orders", "--step", "3 months",
        ],
        None,
    );
    assert_eq!(code, Some(0), "{printed}");
    let hot_old: i64 = value(
        &s.tiered,
        "SELECT count(*) FROM orders WHERE created_at < now() - interval '31 days'",
    )
    .await;
    assert_eq!(hot_old, 0);
    same_answers(&s, &proxy, QUERIES).await;
    let (code, printed) = cli(&config_file, &["tier", "verify"], None);
    assert_eq!(code, Some(0), "{printed}");
    assert!(printed.contains(" 0 mismatches"), "{printed}");

    let (code, printed) = cli(
        &config_file,
        &[
            "tier",
            "backfill",
            "--table",
            "orders",
            "--step",
            "sometimes",
        ],
        None,
    );
    assert_eq!(code, Some(1), "{printed}");
    assert!(printed.contains("--step"), "{printed}");
}

/// `tier verify` passes on a lake the mover wrote, and fails, naming the
/// partition, when a data file is swapped for another or cut short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tier_verify_finds_a_corrupted_lake() {
    let s = setup().await;
    move_rows(&s).await;
    let config_file = s._dirs.0.path().join("verify.toml.conf");
    write_config(&config_file, &s);
    let verify = || {
        let (code, printed) = cli(&config_file, &["tier", "verify"], None);
        (code == Some(0), printed)
    };
    let (ok, printed) = verify();
    assert!(ok, "{printed}");
    assert!(printed.contains(" 0 mismatches"), "{printed}");
    // Each month of the lake is a partition checked against the mover's record.
    let months = printed.lines().filter(|l| l.contains(" ok")).count();
    assert!(months >= 20, "{printed}");

    let mut files = parquet_files_of(&s);
    files.sort();
    assert!(files.len() >= 2);
    let (a, b) = (files[0].clone(), files[files.len() - 1].clone());
    let (bytes_a, bytes_b) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    // Two valid files swapped: rows in the wrong partitions, counts off.
    std::fs::write(&a, &bytes_b).unwrap();
    std::fs::write(&b, &bytes_a).unwrap();
    let (ok, printed) = verify();
    assert!(!ok, "a swapped lake must fail:\n{printed}");
    assert!(
        printed.contains("outside their file's partition"),
        "{printed}"
    );
    std::fs::write(&b, &bytes_b).unwrap();
    // A file cut short.
    std::fs::write(&a, &bytes_a[..bytes_a.len() / 2]).unwrap();
    let (ok, printed) = verify();
    assert!(!ok, "a truncated file must fail:\n{printed}");
    assert!(printed.contains("cannot read"), "{printed}");
    std::fs::write(&a, &bytes_a).unwrap();
    let (ok, printed) = verify();
    assert!(ok, "restored: {printed}");
}

/// What pyiceberg, another Iceberg implementation, reads from the lake:
/// `rows sum(id) sum(amount) watermark`.
fn pyiceberg_read(s: &Setup) -> String {
    let tools = tools_dir();
    let lake = s.config.lake.as_ref().unwrap();
    let mut cmd = std::process::Command::new(format!("{tools}/venv/bin/python"));
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/pyiceberg_read.py"
    ));
    if let Some(rest) = &lake.rest {
        cmd.arg(&rest.uri)
            .arg("public.orders")
            .arg(rest.token.as_deref().unwrap_or_default());
    } else if thermocline::lake::is_s3(&lake.warehouse) {
        cmd.arg(&lake.warehouse)
            .arg("public.orders")
            .arg(lake.catalog_db.as_ref().unwrap())
            .args(["s3.endpoint", "s3.access-key-id", "s3.secret-access-key"].map(|k| &lake.s3[k]));
    } else {
        cmd.arg(s.warehouse().canonicalize().unwrap())
            .arg("public.orders");
    }
    let out = cmd
        .output()
        .expect("run pyiceberg (tests/clients/install.sh installs it)");
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{printed}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    printed
}

/// `tier maintain` expires old snapshots and removes the Parquet files of a
/// pass that crashed before its Iceberg commit; killed in the middle of
/// its cleanup it leaves a consistent lake. Afterwards `tier verify`
/// passes, reads equal the oracle, and pyiceberg reads the same rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tier_maintain_expires_snapshots_and_removes_orphans() {
    let s = setup().await;
    let config_file = s._dirs.0.path().join("maintain.conf");
    write_config(&config_file, &s);
    let thermocline = |args: &[&str], stop_at: Option<&str>| cli(&config_file, args, stop_at);
    let parquet_files = || parquet_files_of(&s).len();
    let now = oracle_now(&s).await;
    let late_rows = |first: i64| {
        format!(
            "INSERT INTO orders SELECT i, '{now}'::timestamptz - (40 + i % 300) * interval '1 day', 1, 2.00, 'late', NULL, NULL, DATE '2025-01-01', NULL
               FROM generate_series({first}, {}) i",
            first + 49
        )
    };
    // Four passes, each with late rows to move: four snapshots.
    for pass in 0..4 {
        if pass > 0 {
            in_both(&s, &late_rows(500_000 + pass * 100)).await;
        }
        let (code, printed) = thermocline(&["tier", "run"], None);
        assert_eq!(code, Some(0), "{printed}");
    }
    // A pass that dies before its Iceberg commit leaves its files behind.
    in_both(&s, &late_rows(600_000)).await;
    let before = parquet_files();
    let (code, printed) = thermocline(&["tier", "run"], Some("before-iceberg-commit"));
    assert_eq!(code, Some(137), "{printed}");
    let with_orphans = parquet_files();
    assert!(with_orphans > before, "{before} -> {with_orphans}");

    let maintain = [&MAINTAIN_NOW[..], &["--no-compaction"]].concat();
    // A dry run removes nothing.
    let (code, printed) = thermocline(&[&maintain[..], &["--dry-run"]].concat(), None);
    assert_eq!(code, Some(0), "{printed}");
    assert_eq!(parquet_files(), with_orphans, "{printed}");
    // Killed after its first removal: the lake stays consistent.
    let (code, printed) = thermocline(&maintain, Some("mid-cleanup"));
    assert_eq!(code, Some(137), "{printed}");
    let (code, printed) = thermocline(&["tier", "verify"], None);
    assert_eq!(code, Some(0), "{printed}");
    let proxy = serve(&s).await;
    same_answers(&s, &proxy, QUERIES).await;
    // The whole run.
    let (code, printed) = thermocline(&maintain, None);
    assert_eq!(code, Some(0), "{printed}");
    assert_eq!(
        parquet_files(),
        before,
        "only the crashed pass's files go: {printed}"
    );
    let (code, printed) = thermocline(&["tier", "verify"], None);
    assert_eq!(code, Some(0), "{printed}");
    assert!(printed.contains(" 0 mismatches"), "{printed}");
    same_answers(&s, &proxy, QUERIES).await;
    // One snapshot is left, and it still carries the watermark.
    let lake = thermocline::lake::Lake::open(s.config.lake.as_ref().unwrap())
        .await
        .unwrap();
    let (_, fed) = tiers(&s).await;
    let table = lake.load(&fed.tables[0]).await.unwrap().unwrap();
    assert_eq!(table.metadata().snapshots().count(), 1);
    assert!(thermocline::lake::watermark(&table).is_some());
    // Another Iceberg implementation reads exactly the lake's rows.
    pyiceberg_reads_the_cold_rows(&s).await;
}

/// Columns added, renamed, widened, dropped, and dropped and added again
/// in Postgres (the same DDL applied to the oracle): after each change,
/// reads equal the oracle before the next pass (cold rows are found by
/// column number, whatever the column is called now) and after it (the
/// pass takes the change to the lake by field id); `tier verify` and
/// pyiceberg agree with what the lake holds. A type change Iceberg cannot
/// follow stops the mover with a clear error while reads stay equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_in_postgres_reach_the_lake() {
    let s = setup().await;
    move_rows(&s).await;
    let proxy = serve(&s).await;
    let now = oracle_now(&s).await;
    let config_file = s._dirs.0.path().join("evolve.conf");
    write_config(&config_file, &s);
    let run = |args: &[&str]| {
        let (code, printed) = cli(&config_file, args, None);
        (code == Some(0), printed)
    };
    // After every change: equal before the pass, the pass moves rows,
    // equal after it, and the lake checks out.
    let check = async |queries: &[&str]| {
        same_answers(&s, &proxy, queries).await;
        assert!(move_rows(&s).await > 0);
        same_answers(&s, &proxy, queries).await;
        let (ok, printed) = run(&["tier", "verify"]);
        assert!(ok && printed.contains(" 0 mismatches"), "{printed}");
        pyiceberg_reads_the_cold_rows(&s).await;
    };

    // Added columns: older cold rows read NULL.
    in_both(
        &s,
        &format!(
            "ALTER TABLE orders ADD COLUMN priority int, ADD COLUMN tag text, ADD COLUMN weight real;
             INSERT INTO orders SELECT i, '{now}'::timestamptz - (i % 5) * interval '20 days', 2, 3.00, 'evolved', NULL, NULL, DATE '2025-02-01', true, i % 3, 'tag ' || i, i * 0.25
               FROM generate_series(700000, 700039) i;"
        ),
    )
    .await;
    check(&[
        "SELECT * FROM orders WHERE id % 50 = 0 OR id >= 700000 ORDER BY id",
        "SELECT priority, count(*), count(tag), max(weight), count(weight) FROM orders GROUP BY priority ORDER BY priority",
        "SELECT count(*) FROM orders WHERE priority = 1",
        "SELECT tag, amount FROM orders WHERE tag IS NOT NULL ORDER BY tag",
    ])
    .await;
    same_answers(&s, &proxy, QUERIES).await;

    // Renamed, widened and dropped columns, with values only the wider
    // types hold; a filter on the renamed column must not reach the lake
    // under the old name.
    in_both(
        &s,
        &format!(
            "ALTER TABLE orders RENAME COLUMN status TO state;
             DROP VIEW paid_by_month, paid_orders;
             ALTER TABLE orders ALTER COLUMN customer_id TYPE bigint,
                                ALTER COLUMN weight TYPE double precision,
                                ALTER COLUMN note TYPE varchar(80),
                                ALTER COLUMN amount TYPE numeric(16,2);
             ALTER TABLE orders DROP COLUMN flag;
             CREATE VIEW paid_orders AS SELECT id, amount, created_at, customer_id FROM orders WHERE state = 'paid';
             CREATE VIEW paid_by_month AS
                 SELECT date_trunc('month', created_at) AS month, count(*) AS n, sum(amount) AS total
                 FROM paid_orders GROUP BY 1;
             INSERT INTO orders SELECT i, '{now}'::timestamptz - (i % 7) * interval '15 days', 5000000000 + i, 123456789012.34, 'paid', repeat('n', 70), 0.5, DATE '2025-03-01', i % 2, 'tag ' || i, 0.1 * i
               FROM generate_series(800000, 800019) i;"
        ),
    )
    .await;
    check(&[
        "SELECT * FROM orders WHERE id % 50 = 0 OR id >= 700000 ORDER BY id",
        "SELECT state, count(*), sum(customer_id), sum(amount), max(weight), count(weight) FROM orders GROUP BY state ORDER BY state",
        "SELECT id, customer_id, weight FROM orders WHERE state = 'paid' AND id % 17 = 0 ORDER BY id",
        "SELECT count(*) FROM orders WHERE customer_id > 4000000000",
        "SELECT id, weight FROM orders WHERE weight > 1.0 ORDER BY id",
        "SELECT max(length(note)), count(note) FROM orders",
        "SELECT month, n FROM paid_by_month ORDER BY month",
        "SELECT customer_id, sum(amount) FROM paid_orders GROUP BY 1 ORDER BY 1",
        "SELECT date_trunc('month', created_at) AS m, count(*), sum(amount) FROM orders GROUP BY 1 ORDER BY 1",
    ])
    .await;

    // A column dropped and added again under the same name is a new
    // column: older rows read NULL, not the old values.
    in_both(
        &s,
        &format!(
            "ALTER TABLE orders DROP COLUMN tag;
             ALTER TABLE orders ADD COLUMN tag text;
             INSERT INTO orders (id, created_at, customer_id, amount, state, day, priority, weight, tag)
             SELECT i, '{now}'::timestamptz - (i % 3) * interval '40 days', 7, 1.50, 'readded', DATE '2025-04-01', 0, 2.5, 'new tag ' || i
               FROM generate_series(900000, 900009) i;"
        ),
    )
    .await;
    check(&[
        "SELECT * FROM orders WHERE id % 50 = 0 OR id >= 700000 ORDER BY id",
        "SELECT tag, count(*) FROM orders GROUP BY tag ORDER BY tag",
        "SELECT count(*) FROM orders WHERE tag LIKE 'tag%'",
    ])
    .await;

    // A type change the lake cannot follow stops the mover; reads go on.
    in_both(
        &s,
        &format!(
            "ALTER TABLE orders ALTER COLUMN priority TYPE text;
             INSERT INTO orders (id, created_at, customer_id, amount, state, day, priority)
             SELECT i, '{now}'::timestamptz - interval '90 days', 2, 3.00, 'after retype', DATE '2025-02-01', 'p' || i
               FROM generate_series(950000, 950009) i;"
        ),
    )
    .await;
    let (ok, printed) = run(&["tier", "run"]);
    assert!(!ok, "{printed}");
    assert!(
        printed.contains("\"priority\" changed type") && printed.contains("moving stops"),
        "{printed}"
    );
    same_answers(
        &s,
        &proxy,
        &[
            "SELECT count(*), count(priority), sum(amount) FROM orders",
            "SELECT id, state, priority, tag FROM orders WHERE state = 'after retype' OR id % 97 = 0 ORDER BY id",
            "SELECT priority, count(*) FROM orders GROUP BY priority ORDER BY priority",
        ],
    )
    .await;
    let (ok, printed) = run(&["tier", "verify"]);
    assert!(ok && printed.contains(" 0 mismatches"), "{printed}");

    // Compaction rewrites files written under every schema above into
    // files of the current one; the checksums follow (a dropped column's
    // values leave with the old files).
    let (ok, printed) = run(&["tier", "maintain"]);
    assert!(ok && printed.contains("rewritten as"), "{printed}");
    let (ok, printed) = run(&["tier", "verify"]);
    assert!(ok && printed.contains(" 0 mismatches"), "{printed}");
    same_answers(
        &s,
        &proxy,
        &[
            "SELECT * FROM orders WHERE id % 50 = 0 OR id >= 700000 ORDER BY id",
            "SELECT state, count(*), sum(customer_id), sum(amount), max(weight), count(tag) FROM orders GROUP BY state ORDER BY state",
        ],
    )
    .await;
    pyiceberg_reads_the_cold_rows(&s).await;
}

/// Cold columns come back under their own names whatever order a
/// statement reads them in, also when several have one type (Iceberg's
/// reader lines a file's columns up with the projection by position when
/// their types agree).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_columns_of_one_type_keep_their_values() {
    let s = setup().await;
    let now = oracle_now(&s).await;
    let hot = tier_new_table(
        &s,
        "pairs",
        &format!(
            "CREATE TABLE pairs (id bigint PRIMARY KEY, at timestamptz NOT NULL, ref bigint NOT NULL, a int NOT NULL, b int NOT NULL);
             INSERT INTO pairs SELECT i, '{now}'::timestamptz - i * interval '5 hours', 1000000 + 3 * i, i % 10, 100 + i % 7
               FROM generate_series(1, 600) i;"
        ),
    )
    .await;
    assert!(hot < 600);
    let proxy = serve(&s).await;
    same_answers(
        &s,
        &proxy,
        &[
            "SELECT ref FROM pairs ORDER BY ref",
            "SELECT b, a FROM pairs ORDER BY b, a",
            "SELECT ref, id FROM pairs WHERE ref % 7 = 0 ORDER BY 1",
            "SELECT sum(ref), sum(b), sum(a) FROM pairs",
            "SELECT b, count(*) FROM pairs WHERE a > 4 GROUP BY b ORDER BY b",
        ],
    )
    .await;
}

/// json and jsonb columns in the lake: whole values, and `->`, `->>`,
/// `#>`, `#>>`, `@>`, `<@`, `?`, `?|` and `?&` over them, in filters,
/// groups and output, equal the oracle's in text and in binary. The
/// documents hold nested values, escapes, repeated json keys, numbers
/// written two ways, NULLs, and a scalar and an array as whole documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_operators_over_the_lake_equal_postgres() {
    let s = setup().await;
    let now = oracle_now(&s).await;
    let hot = tier_new_table(
        &s,
        "events",
        &format!(
            r#"CREATE TABLE events (id bigint PRIMARY KEY, at timestamptz NOT NULL, payload jsonb, raw json);
             INSERT INTO events SELECT i, '{now}'::timestamptz - i * interval '5 hours',
                 jsonb_build_object('kind', (ARRAY['click','view','buy'])[1 + i % 3], 'n', i % 17, 'price', (i % 50) / 4.0,
                                    'tags', CASE WHEN i % 4 = 0 THEN '[]'::jsonb ELSE jsonb_build_array('t' || (i % 5), i % 2 = 0) END,
                                    'user', CASE WHEN i % 6 = 0 THEN NULL ELSE jsonb_build_object('id', i % 9, 'name', 'u"' || (i % 9) || E'
') END)
                 || CASE WHEN i % 10 = 0 THEN '{{"extra": {{"deep": [1, 2, {{"x": "é"}}]}}}}'::jsonb ELSE '{{}}'::jsonb END,
                 CASE WHEN i % 7 = 0 THEN NULL ELSE format('{{"a" : %s,  "s":"vé%s", "a": [%s, 1.50]}}', i % 3, i % 4, i)::json END
               FROM generate_series(1, 600) i;
             UPDATE events SET payload = '"click"' WHERE id = 301;
             UPDATE events SET payload = '["click", "view", 1e2]' WHERE id = 302;
             UPDATE events SET payload = NULL, raw = '[1, "two", {{"three": 3}}]' WHERE id = 303;
             CREATE VIEW purchases AS SELECT id, at, payload->>'kind' AS kind, (payload->>'n')::int AS n
               FROM events WHERE payload @> '{{"kind": "buy"}}';"#
        ),
    )
    .await;
    assert!(hot < 200);
    let proxy = serve(&s).await;
    let mut both = BothProtocols::connect(&s, &proxy).await;
    let mut failures = Vec::new();
    for sql in [
        "SELECT * FROM events ORDER BY id",
        "SELECT id, payload->'kind', payload->>'kind', payload->'tags', payload->'tags'->>0, payload->'tags'-> -1 FROM events ORDER BY id",
        "SELECT payload->>'kind' AS kind, count(*), sum((payload->>'n')::int) FROM events GROUP BY 1 ORDER BY 1",
        r#"SELECT count(*) FROM events WHERE payload @> '{"kind": "buy"}'"#,
        r#"SELECT id FROM events WHERE payload @> '{"kind": "view", "tags": [true]}'::jsonb ORDER BY id"#,
        r#"SELECT count(*) FROM events WHERE '{"kind": "click"}' <@ payload"#,
        r#"SELECT id FROM events WHERE payload @> '"click"' OR payload @> '[100]' ORDER BY id"#,
        r#"SELECT id FROM events WHERE payload @> '{"extra": {"deep": [{"x": "é"}]}}' ORDER BY id"#,
        "SELECT count(*) FROM events WHERE payload ? 'extra'",
        "SELECT count(*) FROM events WHERE payload ? 'click'",
        "SELECT count(*) FROM events WHERE payload ?| array['extra', 'zzz']",
        "SELECT count(*) FROM events WHERE payload ?& array['kind', 'user']",
        "SELECT id, payload #> '{extra,deep,2}', payload #>> '{extra,deep,2,x}', payload #>> '{user,name}', payload #> '{}' FROM events WHERE payload ? 'extra' ORDER BY id",
        "SELECT id, raw->'a', raw->>'s', raw->'a'->1, raw #>> '{a,0}', raw->2, raw->>1 FROM events ORDER BY id",
        "SELECT payload->'user'->>'id' AS u, count(*) FROM events WHERE payload->'user' IS NOT NULL GROUP BY 1 ORDER BY 1",
        "SELECT id, payload FROM events WHERE payload->>'kind' = 'buy' AND (payload->>'n')::int > 10 ORDER BY id",
        "SELECT id, payload->'price', payload->>'price', payload -> 0, payload ->> 2 FROM events WHERE id IN (300, 301, 302, 303, 400) ORDER BY id",
        "SELECT payload->'tags' AS tags, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC, payload->'tags'->>0 LIMIT 5",
        "SELECT jsonb_typeof(payload) AS t, count(*) FROM events GROUP BY 1 ORDER BY 1",
        "SELECT id, jsonb_array_length(payload->'tags'), json_typeof(raw->'a'), json_typeof(raw), jsonb_extract_path_text(payload, 'user', 'name'), \
                jsonb_extract_path(payload, 'extra', 'deep'), json_extract_path_text(raw, 'a', '1'), jsonb_extract_path(payload, 'user')->>'id' \
           FROM events WHERE payload ? 'tags' ORDER BY id",
        "SELECT jsonb_array_length(payload) FROM events WHERE id = 302",
        "SELECT jsonb_array_length(payload) FROM events WHERE id < 300",
        "SELECT jsonb_array_length(payload) FROM events WHERE id = 301",
        "SELECT kind, count(*), sum(n) FROM purchases GROUP BY kind",
        "SELECT id, n FROM purchases WHERE n > 10 ORDER BY id",
    ] {
        failures.extend(both.differs(sql).await);
    }
    // Filters with the operators go to Postgres for the hot rows.
    failures.extend(
        both.explain_lacks(
            r#"SELECT id FROM events WHERE payload @> '{"kind": "buy"}' AND payload->>'kind' = 'buy' AND raw #>> '{a,0}' = '7'"#,
            &[
                r#"(payload @> '{"kind": "buy"}')"#,
                "((payload ->> 'kind') = 'buy')",
                "((raw #>> '{a,0}') = '7')",
            ],
        )
        .await,
    );
    // jsonb orders by type, size and contents, not as text: refused, not
    // answered differently.
    for sql in [
        "SELECT payload FROM events ORDER BY payload LIMIT 3",
        "SELECT t FROM (SELECT payload->'tags' AS t FROM events) s ORDER BY 1 LIMIT 3",
        r#"SELECT count(*) FROM events WHERE payload->'n' > '5'"#,
        r#"SELECT count(*) FROM events WHERE payload->'user' = '{"name":"u\"1\n", "id":1}'"#,
        r#"SELECT count(*) FROM events WHERE payload->'kind' IN ('"buy"', '"view"')"#,
    ] {
        failures.extend(both.not_refused(sql).await);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Enum columns in the lake: values, groups, filters and parameters equal
/// the oracle's, and sorts and comparisons follow the type's order (not
/// the labels'), also after a label is added in the middle of it. `min`,
/// `max` and windows ordered by an enum are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enum_columns_follow_the_type_order_over_the_lake() {
    let s = setup().await;
    let now = oracle_now(&s).await;
    let hot = tier_new_table(
        &s,
        "moods",
        &format!(
            "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'ecstatic');
             CREATE TABLE moods (id bigint PRIMARY KEY, at timestamptz NOT NULL, mood mood NOT NULL, prev mood);
             INSERT INTO moods SELECT i, '{now}'::timestamptz - i * interval '5 hours',
                 (enum_range(NULL::mood))[1 + i % 4],
                 CASE WHEN i % 5 = 0 THEN NULL ELSE (enum_range(NULL::mood))[1 + (i * 7 / 3) % 4] END
               FROM generate_series(1, 600) i;"
        ),
    )
    .await;
    assert!(hot < 200);
    let proxy = serve(&s).await;
    let mut both = BothProtocols::connect(&s, &proxy).await;
    let queries = [
        "SELECT * FROM moods ORDER BY id",
        "SELECT mood, count(*) FROM moods GROUP BY mood ORDER BY mood",
        "SELECT id, mood FROM moods ORDER BY mood DESC, id LIMIT 20",
        "SELECT count(*) FROM moods WHERE mood > 'ok'",
        "SELECT count(*) FROM moods WHERE mood = 'happy' OR prev IN ('sad', 'ecstatic')",
        "SELECT count(*) FROM moods WHERE mood < prev",
        "SELECT mood, prev, count(*) FROM moods GROUP BY 1, 2 ORDER BY 1, 2 NULLS FIRST",
        "SELECT DISTINCT prev FROM moods ORDER BY prev NULLS LAST",
        "SELECT m FROM (SELECT mood AS m FROM moods WHERE id > 300) s ORDER BY m DESC LIMIT 5",
        "SELECT mood::text AS label, count(*) FROM moods GROUP BY 1 ORDER BY 1",
    ];
    let mut failures = Vec::new();
    for sql in queries {
        failures.extend(both.differs(sql).await);
    }
    for (sql, params) in [
        ("SELECT count(*) FROM moods WHERE mood = $1", &["happy"][..]),
        (
            "SELECT id, mood FROM moods WHERE mood >= $1 AND id % 7 = 0 ORDER BY mood, id",
            &["ok"],
        ),
    ] {
        failures.extend(both.differs_in_binary(sql, params).await);
    }
    // A label added between two others: its rows sort there, in both
    // tiers' answers.
    in_both(&s, "ALTER TYPE mood ADD VALUE 'meh' BEFORE 'ok'").await;
    in_both(
        &s,
        &format!(
            "INSERT INTO moods VALUES (5001, '{now}'::timestamptz, 'meh', 'ecstatic'), (5002, '{now}'::timestamptz - interval '1 hour', 'meh', NULL);"
        ),
    )
    .await;
    for sql in queries {
        failures.extend(both.differs(sql).await);
    }
    for sql in [
        "SELECT max(mood) FROM moods",
        "SELECT id, rank() OVER (ORDER BY mood) FROM moods",
    ] {
        failures.extend(both.not_refused(sql).await);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Array columns in the lake: whole arrays (empty, NULL, with NULL
/// elements, with elements that need quoting), elements, and the array
/// operators equal the oracle's in text and in binary; what the executor
/// would answer differently is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn array_columns_over_the_lake_equal_postgres() {
    let s = setup().await;
    let now = oracle_now(&s).await;
    let hot = tier_new_table(
        &s,
        "posts",
        &format!(
            r#"CREATE TABLE posts (id bigint PRIMARY KEY, at timestamptz NOT NULL, tags text[], scores int[],
                 prices numeric(8,2)[], flags boolean[], days date[], stamps timestamptz[], refs uuid[],
                 blobs bytea[], ratios float8[], names varchar(12)[], big bigint[]);
             INSERT INTO posts SELECT i, '{now}'::timestamptz - i * interval '5 hours',
                 CASE WHEN i % 11 = 0 THEN NULL WHEN i % 13 = 0 THEN '{{}}'
                      ELSE ARRAY['t' || (i % 5), (ARRAY['a b', 'c,d', 'e"f', 'g\h', 'NULL', '', '{{x}}', 'é'])[1 + i % 8],
                                 CASE WHEN i % 3 = 0 THEN NULL ELSE 'z' || (i % 4) END] END,
                 CASE WHEN i % 7 = 0 THEN NULL ELSE ARRAY[i % 10, i % 3, NULL, -i] END,
                 ARRAY[(i % 100) / 4.0, 1.5, -0.25]::numeric(8,2)[],
                 ARRAY[i % 2 = 0, NULL, true],
                 ARRAY['{now}'::date - i, '2000-02-29'::date],
                 ARRAY['{now}'::timestamptz - i * interval '1 minute', NULL],
                 ARRAY[md5(i::text)::uuid],
                 ARRAY[decode(lpad(to_hex(i), 4, '0'), 'hex'), ''::bytea],
                 ARRAY[i / 7.0, 1e300, -0.0, 'NaN'::float8, 'Infinity'],
                 ARRAY['n' || i, 'x y'],
                 ARRAY[i * 1000000000000]
               FROM generate_series(1, 600) i;"#
        ),
    )
    .await;
    assert!(hot < 200);
    let proxy = serve(&s).await;
    let mut both = BothProtocols::connect(&s, &proxy).await;
    let mut failures = Vec::new();
    for sql in [
        "SELECT * FROM posts ORDER BY id",
        "SELECT id, tags FROM posts WHERE tags IS NULL OR scores IS NULL ORDER BY id",
        "SELECT id, tags[1], tags[3], scores[2], scores[9], prices[1], stamps[1], refs[1] FROM posts ORDER BY id",
        "SELECT count(*) FROM posts WHERE 't1' = ANY(tags)",
        "SELECT id FROM posts WHERE tags @> ARRAY['t2', 'a b'] ORDER BY id",
        "SELECT id FROM posts WHERE scores && ARRAY[7, 8] ORDER BY id",
        "SELECT id, cardinality(tags), array_length(scores, 1) FROM posts ORDER BY id",
        "SELECT tags[1] AS t, count(*), sum(scores[1]) FROM posts GROUP BY 1 ORDER BY 1",
        "SELECT id, tags FROM posts WHERE tags[2] = 'c,d' ORDER BY id DESC LIMIT 5",
        "SELECT id FROM posts WHERE scores @> ARRAY[NULL::int] OR scores && ARRAY[NULL::int, 3] ORDER BY id",
        "SELECT id FROM posts WHERE tags <@ ARRAY['t1', 'a b', 'z1', 'z2', NULL] ORDER BY id",
        "SELECT id, ARRAY['t1'] <@ tags, tags @> '{}', ratios @> ARRAY[0.0::float8, 'NaN'], scores && ARRAY[4000000000] FROM posts ORDER BY id",
        "SELECT id FROM posts WHERE NULL::text = ANY(tags) OR 5 = ANY(scores) ORDER BY id",
        "SELECT count(*) FROM posts WHERE NOT ('t1' = ANY(tags))",
        "SELECT id, 'z1' = ANY(tags), NULL::int = ANY(scores), 0.0::float8 = ANY(ratios) FROM posts ORDER BY id",
        "SELECT id, tags[0], tags[2], scores[4], scores[5] FROM posts ORDER BY id",
        "SELECT id, cardinality(tags), array_length(tags, 1), array_length(scores, 2) FROM posts ORDER BY id",
        "SELECT id, array_to_string(tags, '|'), array_to_string(scores, ',', '*') FROM posts ORDER BY id",
        "SELECT id, array_position(tags, 'z1'), array_position(scores, 3) FROM posts ORDER BY id",
        "SELECT date_trunc('month', at) AS m, array_agg(id ORDER BY id) FROM posts GROUP BY 1 ORDER BY 1",
        "SELECT array_agg(tags[1] ORDER BY id DESC) FROM posts WHERE id < 40",
        "SELECT id, unnest(tags) FROM posts WHERE id < 30 ORDER BY id",
        "SELECT id, array_cat(tags, ARRAY['q']), array_append(scores, 1), array_prepend(0, scores), array_replace(tags, 'z1', 'Z') FROM posts ORDER BY id",
        "SELECT tags, count(*) FROM posts GROUP BY tags ORDER BY 2 DESC, 1 LIMIT 10",
        "SELECT ratios, count(*) FROM posts GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10",
        "SELECT id, scores FROM posts ORDER BY scores, id LIMIT 30",
        "SELECT id, scores FROM posts ORDER BY scores NULLS FIRST, id LIMIT 30",
        "SELECT id, scores FROM posts ORDER BY scores DESC NULLS LAST, id LIMIT 30",
        "SELECT count(*) FROM posts WHERE scores = ARRAY[1, 1, NULL, -1] OR tags <> ARRAY['t1']",
        "SELECT DISTINCT tags FROM posts ORDER BY 1",
        "SELECT id FROM posts WHERE tags @> '{t1}' ORDER BY id",
        r#"SELECT count(*) FROM posts WHERE scores && '{7, 8}' OR '{"a b", NULL}' <@ tags OR days @> '{2000-02-29}'"#,
        "SELECT count(*) FROM posts WHERE tags @> '{t1'",
        "SELECT count(*) FROM posts WHERE scores @> '{1,x}'",
    ] {
        failures.extend(both.differs(sql).await);
    }
    // Array parameters, in text and (through the client) in binary.
    for (sql, params) in [
        (
            "SELECT count(*) FROM posts WHERE id = ANY($1)",
            &["{1,2,300,599}"][..],
        ),
        (
            "SELECT id FROM posts WHERE tags @> $1 ORDER BY id",
            &[r#"{t1, "a b"}"#],
        ),
        (
            "SELECT id FROM posts WHERE scores && $1::int[] ORDER BY id",
            &["{7,NULL}"],
        ),
        (
            "SELECT id FROM posts WHERE prices @> $1 ORDER BY id",
            &["{1.50,2.5}"],
        ),
    ] {
        failures.extend(both.differs_in_binary(sql, params).await);
    }
    let ids: Vec<i64> = vec![3, 250, 599, 9999];
    let tags: Vec<Option<String>> = vec![Some("t2".into()), None];
    for (sql, param) in [
        (
            "SELECT id FROM posts WHERE id = ANY($1) ORDER BY id",
            &ids as &(dyn tokio_postgres::types::ToSql + Sync),
        ),
        ("SELECT id FROM posts WHERE tags && $1 ORDER BY id", &tags),
    ] {
        let mut answers = Vec::new();
        for c in [&both.direct, &both.through] {
            answers.push(
                c.query(sql, &[param])
                    .await
                    .map(|rows| rows.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>())
                    .map_err(|e| e.to_string()),
            );
        }
        let (want, got) = (&answers[0], &answers[1]);
        if want != got {
            failures.push(format!(
                "{sql} (binary parameters): oracle {want:?}, thermocline {got:?}"
            ));
        }
    }
    // An array column added later, filled in rows the next pass moves
    // (rows older than the boundary, inserted late): the lake's older
    // files lack it, and read NULL for it.
    in_both(
        &s,
        &format!(
            "ALTER TABLE posts ADD COLUMN later numeric(6,1)[];
             INSERT INTO posts (id, at, tags, later)
               SELECT 1000 + i, '{now}'::timestamptz - (100 + i) * interval '1 day', ARRAY['s'], ARRAY[i / 3.0, NULL]
                 FROM generate_series(1, 5) i;"
        ),
    )
    .await;
    // The lake's rows check out against the checksums recorded when they
    // were moved (arrays hashed as they were written).
    failures.extend(move_late_rows_and_verify(&s, "posts", 1000).await);
    for sql in [
        "SELECT id, later, tags FROM posts WHERE id > 990 OR id < 5 ORDER BY id",
        "SELECT count(*), count(later) FROM posts WHERE later @> '{0.3}' OR later IS NULL",
        "SELECT id, unnest(tags), unnest(scores) FROM posts WHERE id < 30 ORDER BY id",
    ] {
        failures.extend(both.differs(sql).await);
    }
    // A two-dimensional array: statements that do not read it are
    // answered; one that returns it fails rather than answer otherwise.
    in_both(
        &s,
        &format!(
            "INSERT INTO posts (id, at, tags) VALUES (2000, '{now}', ARRAY[['a', 'b'], ['c', 'd']])"
        ),
    )
    .await;
    failures.extend(
        both.differs("SELECT count(*), sum(scores[1]) FROM posts")
            .await,
    );
    match ask(&both.through, "SELECT id, tags FROM posts ORDER BY id").await {
        Answer::Error(_) => {}
        other => failures.push(format!("a two-dimensional array was answered: {other:?}")),
    }
    // Filters with the array operators go to Postgres for the hot rows.
    failures.extend(
        both.explain_lacks(
            "SELECT id FROM posts WHERE tags @> '{t1}' AND scores && ARRAY[7, NULL] AND 'z1' = ANY(names) \
               AND ARRAY[1.5] <@ prices AND id = ANY(ARRAY[1, 2, 3000000000])",
            &[
                "(tags @> CAST(ARRAY['t1'] AS text[]))",
                "(scores && CAST(ARRAY[7, NULL] AS int4[]))",
                "('z1' = ANY(names))",
                "(prices @> CAST(ARRAY[1.50::numeric] AS numeric[]))",
                "(id = ANY(CAST(ARRAY[1, 2, 3000000000] AS int8[])))",
            ],
        )
        .await,
    );
    // What the executor would answer differently: refused.
    for sql in [
        "SELECT count(*) FROM posts WHERE scores < ARRAY[1, 1, 5]",
        "SELECT max(scores) FROM posts",
        "SELECT id, tags[-1] FROM posts",
        "SELECT id, scores[id % 3] FROM posts",
        "SELECT id, scores[2:3] FROM posts",
        "SELECT t, count(*) FROM posts, unnest(tags) t GROUP BY t",
        "SELECT array_ndims(tags) FROM posts",
        "SELECT array_remove(scores, NULL) FROM posts",
        "SELECT string_to_array(tags[2], ',') FROM posts",
    ] {
        failures.extend(both.not_refused(sql).await);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Interval columns: moved to the lake as months, days and microseconds,
/// and read back as Postgres writes them, in text in each IntervalStyle
/// and in binary; compared and ordered by length as Postgres does (a
/// month as 30 days); summed, averaged, their least and greatest and
/// their length in seconds taken as Postgres does. Whatever would group or compute with them
/// otherwise is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_columns_over_the_lake_equal_postgres() {
    let s = setup().await;
    let now = oracle_now(&s).await;
    let hot = tier_new_table(
        &s,
        "jobs",
        &format!(
            r#"CREATE TABLE jobs (id bigint PRIMARY KEY, at timestamptz NOT NULL, took interval,
                 budget interval hour to minute NOT NULL, grace interval second(2));
             INSERT INTO jobs SELECT i, '{now}'::timestamptz - i * interval '5 hours',
                 CASE WHEN i % 11 = 0 THEN NULL
                      ELSE (ARRAY[interval '0', '1 day', '24 hours', '1 mon', '30 days', '-1 year +2 mons -3 days 04:05:06.789',
                                  '178000000 years', '-2147483648 days', '2562047 hours', '-00:00:00.000001',
                                  '1 year 2 mons 3 days 04:05:06.5', '-1 days +12:00:00'])[1 + i % 12] END,
                 make_interval(hours => i, mins => i % 60),
                 make_interval(secs => i / 7.0)
               FROM generate_series(1, 600) i;"#
        ),
    )
    .await;
    assert!(hot < 200);
    let proxy = serve(&s).await;
    let mut both = BothProtocols::connect(&s, &proxy).await;
    let mut failures = Vec::new();
    for style in ["postgres", "postgres_verbose", "sql_standard", "iso_8601"] {
        both.run_everywhere(&format!("SET IntervalStyle = {style}"))
            .await;
        for sql in [
            "SELECT * FROM jobs ORDER BY id",
            "SELECT id, took, grace FROM jobs WHERE took IS NULL OR id % 50 = 0 ORDER BY id DESC LIMIT 40",
        ] {
            if let Some(f) = both.differs(sql).await {
                failures.push(format!("IntervalStyle {style}: {f}"));
            }
        }
    }
    both.run_everywhere("RESET IntervalStyle").await;
    for sql in [
        "SELECT count(*), count(took), count(budget) FROM jobs WHERE took IS NOT NULL",
        "SELECT date_trunc('month', at) AS m, count(took) FROM jobs GROUP BY 1 ORDER BY 1",
        "SELECT j.id, j.took, k.took FROM jobs j JOIN jobs k ON k.id = j.id + 1 WHERE j.id % 9 = 0 ORDER BY 1",
        "SELECT id, at - interval '1 day', now() - at > interval '1 day' FROM jobs ORDER BY id",
        "SELECT count(*) FROM jobs WHERE now() - at < interval '7 days'",
        // Compared and ordered by length, a month as 30 days.
        "SELECT count(*) FROM jobs WHERE took > interval '1 day'",
        "SELECT id, took FROM jobs WHERE took = interval '24 hours' OR took <= '-1 mon' ORDER BY id",
        "SELECT id, took FROM jobs ORDER BY took, id",
        "SELECT count(*) FROM jobs j JOIN jobs k ON k.took = j.took",
        // Aggregates as Postgres computes them: sums part by part, averages
        // with fractions of months and days carried down.
        "SELECT sum(budget), avg(budget), min(budget), max(budget), sum(grace), avg(grace), max(grace) FROM jobs",
        "SELECT date_trunc('month', at) AS m, avg(took), min(took), max(took), sum(took), count(took) \
           FROM jobs WHERE id % 12 NOT IN (6, 7, 8) GROUP BY 1 ORDER BY 1",
        "SELECT id % 7 AS k, avg(took) FILTER (WHERE id > 100), avg(grace) FROM jobs WHERE id % 12 <> 6 GROUP BY 1 ORDER BY 1",
        "SELECT id % 37 AS k, avg(took), avg(budget), avg(grace), sum(grace) FROM jobs WHERE id % 12 NOT IN (6, 7) GROUP BY 1 ORDER BY 1",
        "SELECT sum(took) FROM jobs",
        // Grouped by length: '1 day' and '24 hours' are one group (the
        // value shown for such a group is either; left out where shown).
        "SELECT count(*), count(DISTINCT n) FROM (SELECT took, count(*) AS n FROM jobs GROUP BY took) g",
        "SELECT count(*) FROM (SELECT DISTINCT took, budget < interval '5 hours' FROM jobs) d",
        "SELECT took, count(*), sum(grace) FROM jobs WHERE id % 12 NOT IN (2, 4) GROUP BY took ORDER BY took",
        "SELECT date_trunc('month', at) AS m, took, min(id) FROM jobs WHERE id % 12 NOT IN (2, 4) GROUP BY 1, 2 HAVING count(*) > 3 ORDER BY 1, 2",
        "SELECT DISTINCT budget FROM jobs WHERE id < 200 ORDER BY 1 DESC",
        "SELECT count(DISTINCT took), count(DISTINCT budget) FROM jobs",
        // Multiplied and divided as Postgres does: fractions of months and
        // days carried down.
        "SELECT id, took * 2, 1.5 * budget, took / 7, grace * 0.37, budget / 3.3 FROM jobs WHERE id % 12 NOT IN (6, 7, 8) ORDER BY id",
        "SELECT id, took * 3 FROM jobs WHERE id % 12 = 6",
        "SELECT id, took / 0 FROM jobs WHERE id = 1",
        "SELECT id, took::text FROM jobs ORDER BY id",
        "SELECT id, 'took ' || took FROM jobs ORDER BY id",
        "SELECT id, concat(budget, '/', grace) FROM jobs ORDER BY id",
        "SELECT id, row_number() OVER (ORDER BY budget), lag(took) OVER (ORDER BY id), \
                max(took) OVER (PARTITION BY id % 3), rank() OVER (ORDER BY took), \
                min(grace) OVER (PARTITION BY took ORDER BY id) \
           FROM jobs WHERE id % 12 NOT IN (2, 4) ORDER BY id",
        "SELECT took FROM jobs WHERE id % 12 NOT IN (2, 4) UNION SELECT budget FROM jobs ORDER BY 1",
        "SELECT id, extract(epoch FROM took), extract(epoch FROM grace), extract(epoch FROM now() - at) > 0 FROM jobs ORDER BY id",
        "SELECT sum(extract(epoch FROM budget)), max(extract(epoch FROM took)) FROM jobs",
        "SELECT id, took FROM jobs ORDER BY took DESC NULLS LAST, id DESC LIMIT 50",
        "SELECT id FROM jobs WHERE budget BETWEEN interval '10 hours' AND '2 days 30 mins' ORDER BY id",
        "SELECT id, took FROM jobs WHERE took <> interval '0' AND took IS DISTINCT FROM interval '30 days' ORDER BY budget DESC, id LIMIT 30",
    ] {
        failures.extend(both.differs(sql).await);
    }
    // Parameters; an interval in text is read as Postgres reads it.
    for (sql, params) in [
        (
            "SELECT id, took, budget FROM jobs WHERE id = ANY($1) ORDER BY id",
            &["{1,7,300,599}"][..],
        ),
        (
            "SELECT id, took FROM jobs WHERE took > $1 AND budget <= $2 ORDER BY id",
            &["1 day 02:00", "P3DT4H"],
        ),
        (
            "SELECT count(*) FROM jobs WHERE took = $1 OR took < $2 OR grace >= $3",
            &["1 mon", "-1 days +12:00:00", "@ 1 min 10 secs"],
        ),
        (
            "SELECT count(*) FROM jobs WHERE took > $1",
            &["a fortnight"],
        ),
    ] {
        failures.extend(both.differs_in_binary(sql, params).await);
    }
    // An interval column added later, filled in rows the next pass moves:
    // the lake's older files lack it, and read NULL for it.
    in_both(
        &s,
        &format!(
            "ALTER TABLE jobs ADD COLUMN waited interval;
             INSERT INTO jobs (id, at, budget, waited)
               SELECT 1000 + i, '{now}'::timestamptz - (100 + i) * interval '1 day', '1 hour', i * interval '1 mon 1 day 1 sec'
                 FROM generate_series(1, 5) i;"
        ),
    )
    .await;
    failures.extend(move_late_rows_and_verify(&s, "jobs", 1000).await);
    failures.extend(
        both.differs("SELECT id, waited, took FROM jobs WHERE id > 990 OR id < 5 ORDER BY id")
            .await,
    );
    // An interval column added to a time: as Postgres adds it in a
    // session in UTC (the executor adds days in UTC); refused in others.
    both.run_everywhere("SET TimeZone = 'UTC'").await;
    for sql in [
        "SELECT id, at + took, at - budget, grace + at, at::timestamp + took AS local FROM jobs WHERE id % 12 NOT IN (6, 7, 8) ORDER BY id",
        "SELECT count(*) FROM jobs WHERE at + took > timestamptz '2026-06-01' AND id % 12 NOT IN (6, 7)",
    ] {
        failures.extend(both.differs(sql).await);
    }
    both.run_everywhere("SET TimeZone = 'America/New_York'")
        .await;
    for sql in [
        "SELECT at + took FROM jobs",
        "SELECT at::timestamp - took FROM jobs",
    ] {
        failures.extend(both.not_refused(sql).await);
    }
    both.run_everywhere("RESET TimeZone").await;
    // What Postgres groups by length, or answers by its own rules of
    // arithmetic: refused.
    for sql in [
        "SELECT sum(DISTINCT budget) FROM jobs",
        "SELECT id, sum(took) OVER (ORDER BY id) FROM jobs",
        "SELECT took + took FROM jobs",
    ] {
        failures.extend(both.not_refused(sql).await);
    }
    // A time part beyond what the executor holds: statements that do not
    // read it are answered, one that returns it fails.
    in_both(
        &s,
        &format!("INSERT INTO jobs (id, at, took, budget) VALUES (2000, '{now}', '3000000 hours', '1 hour')"),
    )
    .await;
    failures.extend(both.differs("SELECT count(*), max(id) FROM jobs").await);
    match ask(&both.through, "SELECT id, took FROM jobs ORDER BY id").await {
        Answer::Error(_) => {}
        other => failures.push(format!("an interval out of range was answered: {other:?}")),
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Intervals a federated statement computes (differences of times,
/// interval literals) are written as Postgres writes them, in text in
/// each IntervalStyle and in binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intervals_follow_the_session_interval_style() {
    let s = setup().await;
    move_rows(&s).await;
    let proxy = serve(&s).await;
    let mut both = BothProtocols::connect(&s, &proxy).await;
    let mut failures = Vec::new();
    for style in ["postgres", "postgres_verbose", "sql_standard", "iso_8601"] {
        both.run_everywhere(&format!("SET IntervalStyle = {style}"))
            .await;
        for sql in [
            "SELECT status, max(created_at) - min(created_at) AS span FROM orders GROUP BY 1 ORDER BY 1",
            "SELECT id, created_at - date_trunc('month', created_at) FROM orders WHERE id % 97 = 0 ORDER BY id",
            "SELECT id, date_trunc('day', created_at) - created_at FROM orders WHERE id % 101 = 0 ORDER BY id",
            "SELECT id, interval '1 year 2 mons 3 days 04:05:06.5', interval '-1 days -12:00:00', interval '0', \
                    interval '-1 year +2 days -00:00:01.25', interval '1 day -1 hour', interval '-00:00:00.5', \
                    interval '3 mons', interval '-5 days', interval '1 sec', interval '100 hours' \
               FROM orders WHERE id < 4 ORDER BY id",
        ] {
            if let Some(f) = both.differs(sql).await {
                failures.push(format!("IntervalStyle {style}: {f}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Dates and times are written in the session's DateStyle (ISO, SQL,
/// Postgres, German; day or month first) and TimeZone (its abbreviation
/// where the style shows one), as Postgres writes them, from both tiers,
/// also where they become text (a cast, `||`, `concat`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dates_follow_the_session_date_style() {
    let s = setup().await;
    // Dates before year 1, in the lake and in Postgres.
    let now = oracle_now(&s).await;
    in_both(
        &s,
        &format!(
            "INSERT INTO orders (id, created_at, customer_id, status, day)
               VALUES (900001, '{now}'::timestamptz - interval '400 days', 1, 'old', '0044-03-15 BC'),
                      (900002, '{now}', 2, 'new', '0001-01-01 BC')"
        ),
    )
    .await;
    move_rows(&s).await;
    let proxy = serve(&s).await;
    let mut both = BothProtocols::connect(&s, &proxy).await;
    let mut failures = Vec::new();
    for style in [
        "SQL, DMY",
        "SQL, MDY",
        "Postgres, MDY",
        "Postgres, DMY",
        "German",
        "ISO, DMY",
    ] {
        for zone in [
            "UTC",
            "America/New_York",
            "Asia/Kolkata",
            "Etc/GMT+5",
            "Australia/Lord_Howe",
        ] {
            both.run_everywhere(&format!("SET DateStyle = '{style}'"))
                .await;
            both.run_everywhere(&format!("SET TimeZone = '{zone}'"))
                .await;
            for sql in [
                "SELECT id, created_at, day, created_at::timestamp AS local FROM orders WHERE id % 97 = 0 OR id > 900000 ORDER BY id",
                "SELECT date_trunc('month', created_at) AS m, min(day), max(created_at) FROM orders GROUP BY 1 ORDER BY 1",
            ] {
                if let Some(f) = both.differs(sql).await {
                    failures.push(format!("DateStyle {style}, TimeZone {zone}: {f}"));
                }
            }
        }
        // Written as Postgres writes them wherever they become text.
        failures.extend(
            both.differs(
                "SELECT id, day::text, created_at::text, 'at ' || created_at, concat(day, ' ', created_at) \
                   FROM orders WHERE id % 89 = 0 OR id > 900000 ORDER BY id",
            )
            .await,
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Compaction rewrites the small files passes leave in a partition into
/// one, killed part-way it leaves the lake as it was; retention takes out
/// the partitions past `cold_retention` (the oracle deletes the same
/// rows). After each, reads equal the oracle, `tier verify` checks every
/// partition against the checksums the passes recorded, and pyiceberg
/// reads the same rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tier_maintain_compacts_small_files_and_applies_retention() {
    let s = setup().await;
    let config_file = s._dirs.0.path().join("compact.conf");
    write_config(&config_file, &s);
    let thermocline = |args: &[&str], stop_at: Option<&str>| cli(&config_file, args, stop_at);
    let now = oracle_now(&s).await;
    // Five passes, four of them with late rows for old partitions: up to
    // five files in each of those.
    for pass in 0..5 {
        if pass > 0 {
            in_both(
                &s,
                &format!(
                    "INSERT INTO orders SELECT i, '{now}'::timestamptz - (40 + i % 400) * interval '1 day', 1 + i % 20, 2.00, 'late', NULL, i * 0.5, DATE '2025-01-01', i % 2 = 0
                       FROM generate_series({0}, {1}) i",
                    500_000 + pass * 1000,
                    500_000 + pass * 1000 + 199
                ),
            )
            .await;
        }
        let (code, printed) = thermocline(&["tier", "run"], None);
        assert_eq!(code, Some(0), "{printed}");
    }
    let files_per_partition = async || {
        let report = verify_orders(&s).await;
        assert_eq!(report.mismatches(), 0, "{report:?}");
        report
            .partitions
            .iter()
            .map(|p| p.files)
            .collect::<Vec<_>>()
    };
    let before = files_per_partition().await;
    assert!(before.iter().any(|&n| n >= 4), "{before:?}");
    let proxy = serve(&s).await;

    let maintain = MAINTAIN_NOW;
    // Killed after writing its first partition's new file, before the
    // commit: nothing changed for readers.
    let (code, printed) = thermocline(&maintain, Some("mid-compaction"));
    assert_eq!(code, Some(137), "{printed}");
    assert_eq!(files_per_partition().await, before);
    same_answers(&s, &proxy, QUERIES).await;
    // The whole run: one file per partition, and no other file left.
    let (code, printed) = thermocline(&maintain, None);
    assert_eq!(code, Some(0), "{printed}");
    assert!(printed.contains("rewritten as"), "{printed}");
    let after = files_per_partition().await;
    assert_eq!(after.len(), before.len(), "{printed}");
    assert!(after.iter().all(|&n| n == 1), "{after:?} {printed}");
    assert_eq!(parquet_files_of(&s).len(), after.len(), "{printed}");
    same_answers(&s, &proxy, QUERIES).await;
    pyiceberg_reads_the_cold_rows(&s).await;
    // Nothing more to compact.
    let (code, printed) = thermocline(&maintain, None);
    assert_eq!(code, Some(0), "{printed}");
    assert!(printed.contains("compaction: 0 small files"), "{printed}");

    // Retention of 400 days: the partitions that end before now minus 400
    // days leave the lake, and the oracle deletes the same rows.
    let definition = s.config.catalog_dir.as_ref().unwrap().join("orders.toml");
    let text = std::fs::read_to_string(&definition).unwrap();
    std::fs::write(
        &definition,
        text.replace(
            "cold_retention = \"730 days\"",
            "cold_retention = \"400 days\"",
        ),
    )
    .unwrap();
    let (target, fed) = tiers(&s).await;
    let t = &fed.tables[0];
    assert_eq!(t.def.cold_retention.as_secs(), 400 * 86_400);
    let options = thermocline::tiering::maintain::MaintainOptions {
        dry_run: true,
        ..Default::default()
    };
    let dry = thermocline::tiering::maintain::maintain(&target, &fed.lake, t, &s.tiered, &options)
        .await
        .unwrap()
        .unwrap();
    assert!(dry.retention.partitions > 0, "{dry:?}");
    same_answers(&s, &proxy, QUERIES).await;
    let report = thermocline::tiering::maintain::maintain(
        &target,
        &fed.lake,
        t,
        &s.tiered,
        &Default::default(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(report.retention.boundary, dry.retention.boundary);
    assert_eq!(report.retention.rows, dry.retention.rows);
    let boundary = thermocline::tiering::mover::time_literal(
        t.time_column().pg_type,
        report.retention.boundary,
    );
    let deleted = admin(&s.oracle)
        .await
        .execute(
            &format!("DELETE FROM orders WHERE created_at < {boundary}"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(deleted, report.retention.rows, "{report:?}");
    let kept = files_per_partition().await;
    assert_eq!(kept.len(), after.len() - report.retention.partitions);
    same_answers(&s, &proxy, QUERIES).await;
    pyiceberg_reads_the_cold_rows(&s).await;
}

/// The oracle's `now()`, as text: rows written relative to it are the
/// same in both databases.
/// `thermocline ARGS --config FILE`, stopped at `stop_at` if given: its exit
/// code and everything it printed.
/// `tier maintain` keeping one snapshot and no old one, and removing
/// orphans at once.
const MAINTAIN_NOW: [&str; 8] = [
    "tier",
    "maintain",
    "--keep-snapshots",
    "1",
    "--snapshot-age",
    "0s",
    "--orphan-age",
    "0s",
];

fn cli(config_file: &Path, args: &[&str], stop_at: Option<&str>) -> (Option<i32>, String) {
    let env: &[(&str, &str)] = match stop_at {
        Some(step) => &[("THERMOCLINE_MOVER_STOP_AT", step)],
        None => &[],
    };
    cli_env(config_file, args, env)
}

/// [`cli`] with these environment variables set.
fn cli_env(config_file: &Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_thermocline"));
    cmd.args(args)
        .arg("--config")
        .arg(config_file)
        .envs(env.iter().copied());
    let out = cmd.output().unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), printed)
}

/// The Parquet files under the lake's warehouse.
fn parquet_files_of(s: &Setup) -> Vec<std::path::PathBuf> {
    parquet_files_under(&s.warehouse())
}

/// The Parquet files below a directory.
fn parquet_files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                files.push(p);
            }
        }
    }
    files
}

/// Where tests/clients/install.sh puts the tools the tests run.
fn tools_dir() -> String {
    std::env::var("THERMOCLINE_TOOLS").unwrap_or_else(|_| {
        format!(
            "{}/.cache/thermocline-tools",
            std::env::var("HOME").unwrap()
        )
    })
}

/// With the lake out of reach, a read of history (one whose cold part is
/// not cached) fails naming the cold tier, and relayed statements go on.
async fn history_fails_and_the_rest_goes_on(s: &Setup, proxy: &Proxy) {
    let c = client(proxy.port(), "postgres", &s.tiered).await;
    let e = c
        .simple_query("SELECT max(amount) FROM orders WHERE customer_id = 7")
        .await
        .unwrap_err();
    let message = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("cold tier of public.orders"), "{e:?}");
    let relayed: i64 = c
        .query_one("SELECT count(*) FROM customers", &[])
        .await
        .unwrap()
        .get(0);
    let direct: i64 = value(&s.tiered, "SELECT count(*) FROM customers").await;
    assert_eq!(relayed, direct);
}

/// `tier maintain`, keeping one snapshot, compacts the files late rows
/// added: afterwards `tier verify` passes with one file per partition.
/// What the command printed, and the report.
async fn maintain_compacts(
    s: &Setup,
    config_file: &Path,
    env: &[(&str, &str)],
) -> (String, thermocline::tiering::verify::VerifyReport) {
    let args = [
        "tier",
        "maintain",
        "--keep-snapshots",
        "1",
        "--snapshot-age",
        "0s",
    ];
    let (code, printed) = cli_env(config_file, &args, env);
    assert_eq!(code, Some(0), "{printed}");
    assert!(printed.contains("rewritten as"), "{printed}");
    let report = verify_orders(s).await;
    assert_eq!(report.mismatches(), 0, "{report:?}");
    assert!(report.partitions.iter().all(|p| p.files == 1), "{report:?}");
    (printed, report)
}

/// A server a test starts over a temporary directory, listening on a free
/// port of 127.0.0.1; stopped on drop.
struct Service {
    child: std::process::Child,
    root: tempfile::TempDir,
    port: u16,
}

impl Service {
    /// Runs `program` with the arguments `args` gives for the directory
    /// and the port, and waits until it accepts connections.
    fn start(program: &str, args: impl FnOnce(&Path, u16) -> Vec<String>) -> Self {
        let root = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(program)
            .args(args(root.path(), port))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("run {program} (tests/clients/install.sh installs it): {e}")
            });
        for _ in 0..400 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Self { child, root, port }
    }

    fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The Parquet files the server holds.
    fn parquet_files(&self) -> usize {
        parquet_files_under(self.root.path()).len()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An S3-compatible server (s3s-fs) over a temporary directory, with one
/// bucket, `lake`.
struct S3Server {
    service: Service,
}

impl S3Server {
    const KEY: &'static str = "thermocline-test";
    const SECRET: &'static str = "thermocline-test-secret";

    fn start() -> Self {
        let service = Service::start(&format!("{}/s3s/bin/s3s-fs", tools_dir()), |root, port| {
            std::fs::create_dir(root.join("lake")).unwrap();
            vec![
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                port.to_string(),
                "--access-key".into(),
                Self::KEY.into(),
                "--secret-key".into(),
                Self::SECRET.into(),
                root.display().to_string(),
            ]
        });
        Self { service }
    }

    /// The lake's configuration for a warehouse in the bucket.
    fn lake(&self, catalog_db: &Path) -> thermocline::lake::LakeConfig {
        thermocline::lake::LakeConfig {
            warehouse: "s3://lake/warehouse".into(),
            catalog_db: Some(catalog_db.to_path_buf()),
            s3: [
                ("s3.endpoint", self.service.address().as_str()),
                ("s3.region", "us-east-1"),
                ("s3.access-key-id", Self::KEY),
                ("s3.secret-access-key", Self::SECRET),
                ("s3.path-style-access", "true"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            rest: None,
        }
    }
}

/// A lake whose warehouse is in S3 (an S3-compatible server the test
/// starts): the mover writes its files there, reads equal the oracle's,
/// `tier verify` passes, pyiceberg reads the same rows from the bucket.
/// With the server gone, reads of history fail naming the cold tier while
/// relayed statements go on; without a local catalog file the
/// configuration is refused with a message naming `lake.uri`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lake_in_s3_answers_as_a_local_one() {
    let mut s = setup().await;
    let server = S3Server::start();
    let catalog_db = s._dirs.1.path().join("catalog.db");
    let mut without_db = server.lake(&catalog_db);
    without_db.catalog_db = None;
    let e = thermocline::lake::Lake::open(&without_db)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("lake.uri"), "{e}");
    s.config.lake = Some(server.lake(&catalog_db));
    assert!(move_rows(&s).await > 0);
    assert!(
        server.service.parquet_files() > 0,
        "the data files are in the bucket"
    );
    assert!(
        parquet_files_of(&s).is_empty(),
        "and not in the local directory"
    );
    let proxy = serve(&s).await;
    same_answers(&s, &proxy, QUERIES).await;
    pyiceberg_reads_the_cold_rows(&s).await;

    // The command line, configured by file.
    let config_file = s._dirs.0.path().join("s3.conf");
    let lake = s.config.lake.as_ref().unwrap();
    std::fs::write(
        &config_file,
        format!(
            "postgres_url = \"{}\"\ncatalog_dir = \"{}\"\n[lake]\nwarehouse = \"{}\"\nuri = \"{}\"\n\
             s3_endpoint = \"{}\"\ns3_region = \"us-east-1\"\ns3_access_key_id = \"{}\"\n\
             s3_secret_access_key = \"{}\"\ns3_path_style = true\n",
            pg().url(),
            s.config.catalog_dir.as_ref().unwrap().display(),
            lake.warehouse,
            catalog_db.display(),
            server.service.address(),
            S3Server::KEY,
            S3Server::SECRET,
        ),
    )
    .unwrap();
    let (code, printed) = cli(&config_file, &["tier", "verify"], None);
    assert_eq!(code, Some(0), "{printed}");

    // Late rows make a second file in old partitions; maintenance compacts
    // them and, expiring the older snapshots, removes the files they
    // alone named from the bucket.
    let now = oracle_now(&s).await;
    in_both(
        &s,
        &format!(
            "INSERT INTO orders SELECT i, '{now}'::timestamptz - (40 + i % 300) * interval '1 day', 1, 2.00, 'late', NULL, NULL, DATE '2025-01-01', NULL
               FROM generate_series(500000, 500099) i"
        ),
    )
    .await;
    assert!(move_rows(&s).await > 0);
    let files_before = server.service.parquet_files();
    let (printed, report) = maintain_compacts(&s, &config_file, &[]).await;
    assert_eq!(
        server.service.parquet_files(),
        report.partitions.len(),
        "{files_before} files before: {printed}"
    );
    same_answers(&s, &proxy, QUERIES).await;
    pyiceberg_reads_the_cold_rows(&s).await;

    // The server goes away: history cannot be read (by a statement whose
    // cold part is not cached yet), the rest goes on.
    drop(server);
    history_fails_and_the_rest_goes_on(&s, &proxy).await;
}

/// An Iceberg REST catalog (pyiceberg's SQL catalog served over the REST
/// protocol, tests/clients/rest_catalog.py) over a temporary warehouse,
/// answering only requests that carry its bearer token.
struct RestServer {
    service: Service,
}

impl RestServer {
    const TOKEN: &'static str = "thermocline-test-token";
    /// A path prefix of two segments, as catalogs that serve several
    /// warehouses give one.
    const PREFIX: &'static str = "warehouses/lake";

    fn start() -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/rest_catalog.py");
        let service = Service::start(&format!("{}/venv/bin/python", tools_dir()), |root, port| {
            vec![
                script.into(),
                port.to_string(),
                root.display().to_string(),
                Self::PREFIX.into(),
                Self::TOKEN.into(),
            ]
        });
        Self { service }
    }

    fn lake(&self) -> thermocline::lake::LakeConfig {
        thermocline::lake::LakeConfig {
            rest: Some(thermocline::lake::RestConfig {
                uri: self.service.address(),
                token: Some(Self::TOKEN.into()),
            }),
            ..Default::default()
        }
    }
}

/// A lake whose catalog is a REST catalog: the mover commits through it,
/// reads equal the oracle's, `tier verify` passes, pyiceberg's REST client
/// reads the same rows, and the commits thermocline makes whole (a column
/// added to the schema, compaction's replacement of files) go through it
/// too. A wrong token is refused by the catalog and named in
/// the error; with the catalog gone, reads of history fail naming the cold
/// tier while relayed statements go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lake_in_a_rest_catalog_answers_as_a_local_one() {
    let mut s = setup().await;
    let server = RestServer::start();
    s.config.lake = Some(server.lake());
    assert!(move_rows(&s).await > 0);
    assert!(
        server.service.parquet_files() > 0,
        "the files are in its warehouse"
    );
    assert!(parquet_files_of(&s).is_empty(), "and not in the local one");
    let proxy = serve(&s).await;
    same_answers(&s, &proxy, QUERIES).await;
    pyiceberg_reads_the_cold_rows(&s).await;

    // The command line, configured by environment.
    let config_file = s._dirs.0.path().join("rest.conf");
    std::fs::write(
        &config_file,
        format!(
            "postgres_url = \"{}\"\ncatalog_dir = \"{}\"\n[lake]\ncatalog = \"rest\"\n",
            pg().url(),
            s.config.catalog_dir.as_ref().unwrap().display(),
        ),
    )
    .unwrap();
    let uri = server.service.address();
    let env = [
        ("THERMOCLINE_LAKE_URI", uri.as_str()),
        ("THERMOCLINE_LAKE_TOKEN", RestServer::TOKEN),
    ];
    let (code, printed) = cli_env(&config_file, &["tier", "verify"], &env);
    assert_eq!(code, Some(0), "{printed}");
    let (code, printed) = cli_env(
        &config_file,
        &["tier", "verify"],
        &[env[0], ("THERMOCLINE_LAKE_TOKEN", "wrong")],
    );
    assert_ne!(code, Some(0), "{printed}");
    assert!(
        printed.contains("401") || printed.to_lowercase().contains("unauthorized"),
        "{printed}"
    );

    // A column added in Postgres is added to the lake's schema, committed
    // whole through the catalog. Late rows holding it make a second file in
    // old partitions; compaction commits its replacement through the
    // catalog too.
    let now = oracle_now(&s).await;
    in_both(
        &s,
        &format!(
            "ALTER TABLE orders ADD COLUMN extra int;
             INSERT INTO orders SELECT i, '{now}'::timestamptz - (40 + i % 300) * interval '1 day', 1, 2.00, 'late', NULL, NULL, DATE '2025-01-01', NULL, i % 7
               FROM generate_series(500000, 500099) i"
        ),
    )
    .await;
    assert!(move_rows(&s).await > 0);
    let extra = "SELECT id, extra FROM orders WHERE extra IS NOT NULL ORDER BY id";
    same_answers(&s, &proxy, &[extra]).await;
    maintain_compacts(&s, &config_file, &env).await;
    same_answers(&s, &proxy, QUERIES).await;
    same_answers(&s, &proxy, &[extra]).await;
    pyiceberg_reads_the_cold_rows(&s).await;

    // The catalog goes away: history cannot be read, the rest goes on.
    drop(server);
    history_fails_and_the_rest_goes_on(&s, &proxy).await;
}

/// Postgres orders strings by their collation; the executor byte by byte.
/// Over a table with a column whose collation is not byte order (here
/// ICU's English), every statement that orders or compares strings equals
/// the oracle's answer or is refused with 0A000, never answered in byte
/// order; over a table whose strings are byte-ordered (this database's
/// collation is C.UTF-8) the same statements are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strings_are_ordered_by_their_collation() {
    let s = setup().await;
    in_both(
        &s,
        "CREATE TABLE people (id bigint PRIMARY KEY, seen_at timestamptz NOT NULL,
                              name text COLLATE \"en-x-icu\" NOT NULL);
         INSERT INTO people
         SELECT i, now() - i * interval '7 days',
                (ARRAY['alice', 'Bob', 'bob', 'Émile', 'zoë', 'a b', 'ab', 'Zed', '_x', 'Émilie', 'émile', 'Adam'])[1 + i % 12]
           FROM generate_series(1, 100) i;
         INSERT INTO orders (id, created_at, customer_id, status, day)
         SELECT 100000 + id, now() - id * interval '9 days', 1, name, current_date FROM people WHERE id <= 60;",
    )
    .await;
    define_tier(&s, "people", "seen_at", "month");
    assert_eq!(move_every_table(&s).await, 2);
    let proxy = serve(&s).await;
    let direct = client(pg().port(), "postgres", &s.oracle).await;
    let through = client(proxy.port(), "postgres", &s.tiered).await;
    let shapes = [
        "SELECT id, COL FROM TBL ORDER BY COL, id",
        "SELECT min(COL), max(COL) FROM TBL",
        "SELECT COL, count(*) FROM TBL GROUP BY 1 ORDER BY 1",
        "SELECT count(*) FROM TBL WHERE COL > 'b'",
        "SELECT count(*) FROM TBL WHERE COL BETWEEN 'a' AND 'c'",
        "SELECT id, COL FROM TBL ORDER BY COL DESC, id LIMIT 5",
        "SELECT id, rank() OVER (ORDER BY COL) FROM TBL ORDER BY id",
        "SELECT DISTINCT COL FROM TBL ORDER BY COL",
        "SELECT greatest(COL, 'b'), count(*) FROM TBL GROUP BY 1 ORDER BY 1",
    ];
    for shape in shapes {
        let collated = shape.replace("COL", "name").replace("TBL", "people");
        let got = ask(&through, &collated).await;
        if got != Answer::Error("0A000".into()) {
            assert_eq!(got, ask(&direct, &collated).await, "{collated}");
        }
        let byte_ordered = shape.replace("COL", "status").replace("TBL", "orders");
        assert_eq!(
            ask(&through, &byte_ordered).await,
            ask(&direct, &byte_ordered).await,
            "{byte_ordered}"
        );
    }
    // The equality of strings is the same under either: answered.
    for sql in [
        "SELECT count(*) FROM people WHERE name = 'bob'",
        "SELECT name, count(*) FROM people GROUP BY 1 HAVING count(*) > 8",
    ] {
        let mut want = ask(&direct, sql).await;
        let mut got = ask(&through, sql).await;
        for a in [&mut want, &mut got] {
            if let Answer::Rows(_, rows) = a {
                rows.sort();
            }
        }
        assert_eq!(got, want, "{sql}");
    }
}
