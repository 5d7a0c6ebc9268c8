//! The cache of cold partial results, differentially: cached answers equal
//! the oracle's (a Postgres holding every row) on every statement, right
//! after hot writes and after the mover commits a new snapshot; identical
//! statements compute once; the cache stays within its bound.

mod common;

use common::tiered::{Answer, ask, in_both, move_rows, same_answers, serve, setup};
use common::{admin, client, pg, value};

/// Aggregates and scans whose cold halves the cache keeps.
const CACHED: &[&str] = &[
    "SELECT count(*) FROM orders",
    "SELECT count(*), sum(amount), count(note), min(created_at), max(created_at), min(day), max(day) FROM orders",
    "SELECT status, count(*), sum(amount), max(amount) FROM orders GROUP BY status ORDER BY status",
    "SELECT date_trunc('month', created_at) AS month, count(*), sum(amount) FROM orders GROUP BY 1 ORDER BY 1",
    "SELECT customer_id, count(DISTINCT status), max(score), sum(amount) FROM orders WHERE amount > 20 GROUP BY 1 ORDER BY 1",
    "SELECT id, created_at, amount, status, note, score, day, flag FROM orders WHERE id % 97 = 0 ORDER BY id",
    "SELECT * FROM orders WHERE id IN (7, 1500, 2399)",
    "SELECT status, count(*) FROM orders WHERE created_at < now() - interval '200 days' GROUP BY 1 ORDER BY 1",
    "SELECT day, count(*) FROM orders WHERE day >= '2025-01-01' GROUP BY 1 HAVING count(*) > 2 ORDER BY 1",
];

/// The rows of `thermocline.cache` of one kind, as (statement, hits).
async fn entries_of(c: &tokio_postgres::Client, kind: &str) -> Vec<(String, i64)> {
    c.query(
        &format!(
            "SELECT statement, hits FROM thermocline.cache WHERE kind = '{kind}' ORDER BY statement"
        ),
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// The cold halves kept, as (statement, hits).
async fn cache_entries(c: &tokio_postgres::Client) -> Vec<(String, i64)> {
    entries_of(c, "cold partial").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_answers_stay_fresh() {
    let s = setup().await;
    move_rows(&s).await;
    let proxy = serve(&s).await;
    // First runs fill the cache; second runs are answered from it.
    same_answers(&s, &proxy, CACHED).await;
    same_answers(&s, &proxy, CACHED).await;
    let through = client(proxy.port(), "postgres", &s.tiered).await;
    let entries = cache_entries(&through).await;
    // A statement reading now() computes another cold half each time (its
    // filter moves); every other one was answered from the cache.
    let fixed: Vec<_> = entries
        .iter()
        .filter(|(s, _)| !s.contains("now()"))
        .collect();
    assert!(
        fixed.len() == CACHED.len() - 1 && fixed.iter().all(|(_, hits)| *hits >= 1),
        "every statement's cold half is cached and was hit: {entries:?}"
    );
    let plan = match ask(&through, &format!("EXPLAIN ANALYZE {}", CACHED[3])).await {
        Answer::Rows(_, rows) => rows
            .into_iter()
            .map(|r| r[0].clone().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n"),
        Answer::Error(e) => panic!("EXPLAIN ANALYZE failed: {e}"),
    };
    assert!(
        plan.contains("ColdCacheExec") && plan.contains("hit: answered from the cache"),
        "EXPLAIN ANALYZE shows the cold half came from the cache:\n{plan}"
    );
    assert!(
        plan.contains("Postgres (partial aggregate): SELECT (date_trunc('month', created_at))")
            && plan.contains("GROUP BY 1")
            && plan.contains("Postgres (stragglers): SELECT"),
        "the hot half's partial aggregate is Postgres's:\n{plan}"
    );

    // A row inserted now, one updated, one deleted, and a late row older
    // than the window (at the same times in both databases): the very next
    // statements see them.
    in_both(
        &s,
        "INSERT INTO orders SELECT 100001, max(created_at) - interval '400 days', 3, 12.34, 'late', NULL, 0.5, max(day) - 400, true FROM orders;
         INSERT INTO orders SELECT 100002, max(created_at) + interval '1 second', 4, 1.00, 'new', 'fresh', NULL, max(day), false FROM orders;
         UPDATE orders SET amount = amount + 1 WHERE id = (SELECT min(id) FROM orders);
         DELETE FROM orders WHERE id = (SELECT min(id) + 1 FROM orders);",
    )
    .await;
    same_answers(&s, &proxy, CACHED).await;

    // The mover commits a new snapshot: still exact.
    assert!(move_rows(&s).await >= 1, "the late row moves");
    same_answers(&s, &proxy, CACHED).await;
    same_answers(&s, &proxy, CACHED).await;

    // Parameters are part of the key: the same prepared statement with
    // other values answers for those values.
    let direct = client(pg().port(), "postgres", &s.oracle).await;
    let sql = "SELECT status, count(*), sum(amount)::text FROM orders WHERE customer_id = $1 GROUP BY 1 ORDER BY 1";
    for round in 0..2 {
        for customer in [1i32, 2, 3, 1] {
            let want: Vec<(String, i64, Option<String>)> = direct
                .query(sql, &[&customer])
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect();
            let got: Vec<(String, i64, Option<String>)> = through
                .query(sql, &[&customer])
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect();
            assert_eq!(got, want, "round {round}, customer_id = {customer}");
        }
    }
}

/// The hot halves kept, as (statement, hits).
async fn hot_entries(c: &tokio_postgres::Client) -> Vec<(String, i64)> {
    entries_of(c, "hot partial").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_halves_are_kept_and_brought_up_to_date_from_recorded_writes() {
    let s = setup().await;
    move_rows(&s).await;
    let proxy = serve(&s).await;
    let aggregates: Vec<&str> = CACHED
        .iter()
        .copied()
        .filter(|q| q.contains("count(") && !q.contains("now()"))
        .collect();
    same_answers(&s, &proxy, &aggregates).await;
    same_answers(&s, &proxy, &aggregates).await;
    let through = client(proxy.port(), "postgres", &s.tiered).await;
    let hot = hot_entries(&through).await;
    assert!(
        hot.len() >= 4 && hot.iter().all(|(_, hits)| *hits >= 1),
        "the hot halves of the aggregates are kept and were used again: {hot:?}"
    );

    // Writes since (to hot rows: ids up to about 100 are the last 30
    // days): the kept halves are brought up to date, not dropped.
    in_both(
        &s,
        "INSERT INTO orders SELECT 100001, max(created_at) - interval '400 days', 3, 12.34, 'late', NULL, 0.5, max(day) - 400, true FROM orders;
         INSERT INTO orders SELECT 100002, max(created_at) + interval '1 second', 4, 1.00, 'new', 'fresh', NULL, max(day), false FROM orders;
         UPDATE orders SET amount = amount + 1, created_at = created_at - interval '5 days' WHERE id = 10;
         DELETE FROM orders WHERE id = 17;",
    )
    .await;
    same_answers(&s, &proxy, &aggregates).await;
    let hot = hot_entries(&through).await;
    assert!(
        hot.len() >= 4 && hot.iter().all(|(_, hits)| *hits >= 2),
        "after writes the kept halves were brought up to date: {hot:?}"
    );
    let recorded: i64 = value(&s.tiered, "SELECT count(*) FROM thermocline.changes").await;
    assert!(
        recorded >= 4,
        "each write statement is recorded: {recorded}"
    );

    // Writes as replication and restores make them (triggers set to fire
    // always record them too).
    in_both(
        &s,
        "SET session_replication_role = replica;
         INSERT INTO orders SELECT 100003, max(created_at) - interval '2 days', 5, 99.99, 'replica', NULL, NULL, max(day) - 2, true FROM orders;
         UPDATE orders SET status = 'replica' WHERE id = 23;
         RESET session_replication_role;",
    )
    .await;
    same_answers(&s, &proxy, &aggregates).await;

    // A write not yet committed is in no answer; once committed, it is in
    // the next one.
    let writer = admin(&s.tiered).await;
    let insert = "INSERT INTO orders SELECT 100004, max(created_at) - interval '1 day', 6, 7.77, 'open', NULL, NULL, max(day) - 1, false FROM orders";
    writer
        .batch_execute(&format!("BEGIN; {insert}"))
        .await
        .unwrap();
    same_answers(&s, &proxy, &aggregates).await;
    writer.batch_execute("COMMIT").await.unwrap();
    admin(&s.oracle).await.batch_execute(insert).await.unwrap();
    same_answers(&s, &proxy, &aggregates).await;

    // A trigger disabled: writes go unrecorded, so nothing kept is used
    // until it fires always again.
    admin(&s.tiered)
        .await
        .batch_execute("ALTER TABLE orders DISABLE TRIGGER thermocline_changes_insert")
        .await
        .unwrap();
    in_both(
        &s,
        "INSERT INTO orders SELECT 100005, max(created_at) - interval '3 hours', 7, 3.21, 'unrecorded', NULL, NULL, max(day), true FROM orders",
    )
    .await;
    same_answers(&s, &proxy, &aggregates).await;
    same_answers(&s, &proxy, &aggregates).await;
    admin(&s.tiered)
        .await
        .batch_execute("ALTER TABLE orders ENABLE ALWAYS TRIGGER thermocline_changes_insert")
        .await
        .unwrap();
    same_answers(&s, &proxy, &aggregates).await;
    in_both(
        &s,
        "INSERT INTO orders SELECT 100006, max(created_at) - interval '4 hours', 8, 4.32, 'recorded', NULL, NULL, max(day), false FROM orders",
    )
    .await;
    same_answers(&s, &proxy, &aggregates).await;

    // A role that may read the table, not thermocline's schema: its own
    // kept halves, brought up to date the same way.
    admin(&s.tiered)
        .await
        .batch_execute(
            "DO $$BEGIN CREATE ROLE reader LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END$$;
             GRANT SELECT ON orders TO reader",
        )
        .await
        .unwrap();
    let reader = client(proxy.port(), "reader", &s.tiered).await;
    let direct = client(pg().port(), "postgres", &s.oracle).await;
    for round in 0..3 {
        if round == 2 {
            in_both(
                &s,
                "INSERT INTO orders SELECT 100007, max(created_at) - interval '6 hours', 9, 5.43, 'reader', NULL, NULL, max(day), true FROM orders",
            )
            .await;
        }
        for sql in &aggregates {
            assert_eq!(
                ask(&reader, sql).await,
                ask(&direct, sql).await,
                "round {round}: {sql}"
            );
        }
    }

    // Inside a client's transaction the kept halves are used too: with
    // writes committed meanwhile by others, and with the transaction's own,
    // which are in its answers and in no kept half once it rolls back.
    let direct_tx = client(pg().port(), "postgres", &s.oracle).await;
    let through_tx = client(proxy.port(), "postgres", &s.tiered).await;
    let in_transaction = |label: &'static str| {
        let (direct_tx, through_tx, aggregates) = (&direct_tx, &through_tx, &aggregates);
        async move {
            for sql in aggregates.iter() {
                assert_eq!(
                    ask(through_tx, sql).await,
                    ask(direct_tx, sql).await,
                    "{label}: {sql}"
                );
            }
        }
    };
    for c in [&direct_tx, &through_tx] {
        c.batch_execute("BEGIN").await.unwrap();
    }
    // (The first computes them again: the GRANT above changed the table.)
    in_transaction("in a transaction").await;
    let hits_before: i64 = hot_entries(&through).await.iter().map(|(_, h)| h).sum();
    in_both(
        &s,
        "INSERT INTO orders SELECT 100008, max(created_at) - interval '8 hours', 10, 6.54, 'meanwhile', NULL, NULL, max(day), true FROM orders",
    )
    .await;
    in_transaction("after another session's write").await;
    for c in [&direct_tx, &through_tx] {
        c.batch_execute(
            "INSERT INTO orders SELECT 100009, max(created_at) - interval '9 hours', 11, 7.65, 'own', NULL, NULL, max(day), false FROM orders",
        )
        .await
        .unwrap();
    }
    in_transaction("after the transaction's own write").await;
    for c in [&direct_tx, &through_tx] {
        c.batch_execute("ROLLBACK").await.unwrap();
    }
    same_answers(&s, &proxy, &aggregates).await;
    let hits_after: i64 = hot_entries(&through).await.iter().map(|(_, h)| h).sum();
    assert!(
        hits_after >= hits_before + 2 * aggregates.len() as i64,
        "kept halves were used inside the transaction: {hits_before} then {hits_after}"
    );
    // In REPEATABLE READ, the transaction's snapshot throughout.
    for c in [&direct_tx, &through_tx] {
        c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            .await
            .unwrap();
    }
    in_transaction("repeatable read").await;
    in_both(
        &s,
        "INSERT INTO orders SELECT 100010, max(created_at) - interval '10 hours', 12, 8.76, 'unseen', NULL, NULL, max(day), true FROM orders",
    )
    .await;
    in_transaction("repeatable read, after another session's write").await;
    for c in [&direct_tx, &through_tx] {
        c.batch_execute("COMMIT").await.unwrap();
    }
    same_answers(&s, &proxy, &aggregates).await;

    // The function that tells the writes since dropped by hand: the
    // statement that finds it gone fails with Postgres's 42883, and every
    // kept half is forgotten, so the next ones are answered; kept again
    // once it is back.
    let function: String = value(
        &s.tiered,
        "SELECT pg_get_functiondef('thermocline.written_since'::regproc)",
    )
    .await;
    same_answers(&s, &proxy, &aggregates).await;
    admin(&s.tiered)
        .await
        .batch_execute("DROP FUNCTION thermocline.written_since")
        .await
        .unwrap();
    assert_eq!(
        ask(&through, aggregates[0]).await,
        Answer::Error("42883".into())
    );
    same_answers(&s, &proxy, &aggregates).await;
    same_answers(&s, &proxy, &aggregates).await;
    admin(&s.tiered)
        .await
        .batch_execute(&function)
        .await
        .unwrap();
    same_answers(&s, &proxy, &aggregates).await;
    same_answers(&s, &proxy, &aggregates).await;
    let hot = hot_entries(&through).await;
    assert!(
        hot.iter().any(|(_, hits)| *hits >= 1),
        "kept and used again once the function is back: {hot:?}"
    );

    // The mover takes rows out of Postgres: still exact.
    move_rows(&s).await;
    same_answers(&s, &proxy, &aggregates).await;
    same_answers(&s, &proxy, &aggregates).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_statements_compute_once() {
    let s = setup().await;
    move_rows(&s).await;
    let proxy = serve(&s).await;
    let sql = "SELECT date_trunc('week', created_at) AS week, status, count(*), sum(amount), max(score) \
               FROM orders GROUP BY 1, 2 ORDER BY 1, 2";
    let want = ask(&client(pg().port(), "postgres", &s.oracle).await, sql).await;
    let mut sessions = Vec::new();
    for _ in 0..32 {
        sessions.push(client(proxy.port(), "postgres", &s.tiered).await);
    }
    let answers = futures::future::join_all(sessions.iter().map(|c| ask(c, sql))).await;
    for (i, got) in answers.into_iter().enumerate() {
        assert_eq!(got, want, "session {i}");
    }
    // One entry, computed once: the 31 others were answered from it.
    let entries = cache_entries(&sessions[0]).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].1, 31, "{entries:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_stays_within_its_bound() {
    let mut s = setup().await;
    move_rows(&s).await;
    let bound = 64 << 10;
    s.config.cache_memory = bound;
    let proxy = serve(&s).await;
    let direct = client(pg().port(), "postgres", &s.oracle).await;
    let through = client(proxy.port(), "postgres", &s.tiered).await;
    // 200 distinct statements whose cold halves together need several
    // times the bound.
    let mut kept_bytes = 0i64;
    for customer in 1..=20 {
        for month in 0..10 {
            let sql = format!(
                "SELECT status, day, count(*), sum(amount) FROM orders \
                 WHERE customer_id = {customer} AND created_at < now() - interval '{month} months' \
                 GROUP BY 1, 2 ORDER BY 1, 2"
            );
            assert_eq!(ask(&through, &sql).await, ask(&direct, &sql).await, "{sql}");
            let row = through
                .query_one(
                    "SELECT coalesce(sum(bytes), 0)::bigint, count(*) FROM thermocline.cache",
                    &[],
                )
                .await
                .unwrap();
            let (bytes, entries): (i64, i64) = (row.get(0), row.get(1));
            assert!(
                bytes <= bound as i64,
                "the cache holds {bytes} bytes in {entries} entries, over its bound of {bound}"
            );
            kept_bytes = kept_bytes.max(bytes);
        }
    }
    let entries: i64 = through
        .query_one("SELECT count(*) FROM thermocline.cache", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        entries > 0 && entries < 200 && kept_bytes > 0,
        "the cache kept some entries and evicted others: {entries} entries"
    );
}

/// The rows of `sql`, of two columns, as pairs.
async fn pairs_of<A, B>(c: &tokio_postgres::Client, sql: &str) -> Vec<(A, B)>
where
    A: for<'a> tokio_postgres::types::FromSql<'a>,
    B: for<'a> tokio_postgres::types::FromSql<'a>,
{
    c.query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Rows of `sql` as text, in the order given.
async fn rows_of(c: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    match ask(c, sql).await {
        Answer::Rows(_, rows) => rows,
        Answer::Error(e) => panic!("{sql}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn materialized_views_hold_the_whole_history() {
    let s = setup().await;
    move_rows(&s).await;
    let proxy = serve(&s).await;
    let direct = client(pg().port(), "postgres", &s.oracle).await;
    let through = client(proxy.port(), "postgres", &s.tiered).await;
    let views = [
        // By month: refreshed incrementally.
        "CREATE MATERIALIZED VIEW by_month AS SELECT date_trunc('month', created_at) AS month, status, \
         count(*) AS n, sum(amount) AS total, max(score) AS top FROM orders WHERE flag IS NOT NULL GROUP BY 1, 2",
        // By status: recomputed whole.
        "CREATE MATERIALIZED VIEW by_status AS SELECT status, count(*) AS n, min(created_at) AS first \
         FROM orders GROUP BY status",
        // By month alone: refreshed incrementally, kept in parts by the
        // hour.
        "CREATE MATERIALIZED VIEW totals AS SELECT date_trunc('month', created_at) AS month, \
         count(*) AS n, sum(amount) AS total, min(score) AS low FROM orders GROUP BY 1",
    ];
    for v in views {
        direct.batch_execute(v).await.unwrap();
        let created = through.simple_query(v).await.unwrap();
        assert!(
            matches!(created.last(), Some(tokio_postgres::SimpleQueryMessage::CommandComplete(n)) if *n > 0),
            "CREATE MATERIALIZED VIEW reports its rows: {v}"
        );
    }
    let compare = |label: &'static str| {
        let (direct, through) = (&direct, &through);
        async move {
            for sql in [
                "SELECT * FROM by_month ORDER BY 1, 2",
                "SELECT * FROM by_status ORDER BY 1",
                "SELECT * FROM totals ORDER BY 1",
            ] {
                assert_eq!(
                    rows_of(through, sql).await,
                    rows_of(direct, sql).await,
                    "{label}: {sql}"
                );
            }
        }
    };
    compare("created").await;
    // The views by month are kept in parts too (counts, sums and maxima
    // per day and status, or per hour); the one by status is not.
    let kept_in_parts: Vec<(String, String)> = pairs_of(
        &through,
        "SELECT view_name, parts_grain FROM thermocline.materialized_views \
             WHERE to_regclass(parts_table) IS NOT NULL ORDER BY 1",
    )
    .await;
    assert_eq!(
        kept_in_parts,
        vec![
            ("by_month".to_string(), "day".to_string()),
            ("totals".to_string(), "hour".to_string())
        ]
    );
    // A real table: catalog tools list it, and it takes indexes.
    let kind: i8 = value(
        &s.tiered,
        "SELECT relkind FROM pg_class WHERE relname = 'by_month'",
    )
    .await;
    assert_eq!(kind as u8, b'r');
    through
        .batch_execute("CREATE INDEX ON by_month (month)")
        .await
        .unwrap();

    // New, changed, removed and late rows; then a refresh.
    let changes = "INSERT INTO orders SELECT 100001, max(created_at) - interval '400 days', 3, 12.34, 'late', NULL, 0.5, max(day) - 400, true FROM orders;
         INSERT INTO orders SELECT 100002, max(created_at) + interval '1 second', 4, 1.00, 'new', 'fresh', NULL, max(day), false FROM orders;
         UPDATE orders SET amount = amount + 1 WHERE id = (SELECT min(id) FROM orders);
         DELETE FROM orders WHERE id = (SELECT min(id) + 1 FROM orders);";
    in_both(&s, changes).await;
    let refresh = |concurrently: bool| {
        let (direct, through) = (&direct, &through);
        async move {
            for v in ["by_month", "by_status", "totals"] {
                direct
                    .batch_execute(&format!("REFRESH MATERIALIZED VIEW {v}"))
                    .await
                    .unwrap();
                let how = if concurrently { "CONCURRENTLY " } else { "" };
                through
                    .batch_execute(&format!("REFRESH MATERIALIZED VIEW {how}{v}"))
                    .await
                    .unwrap();
            }
        }
    };
    refresh(true).await;
    compare("after hot changes").await;
    let kinds: Vec<(String, String)> = pairs_of(
        &through,
        "SELECT view_name, last_refresh_kind FROM thermocline.materialized_views ORDER BY 1",
    )
    .await;
    assert_eq!(
        kinds,
        vec![
            ("by_month".to_string(), "incremental".to_string()),
            ("by_status".to_string(), "full".to_string()),
            ("totals".to_string(), "incremental".to_string())
        ]
    );

    // Writes to hot rows only: Postgres alone holds the days written, and
    // recomputes them.
    in_both(
        &s,
        "INSERT INTO orders SELECT 100006, max(created_at) - interval '1 day', 2, 7.77, 'new', NULL, 0.2, max(day) - 1, true FROM orders;
         INSERT INTO orders SELECT 100021 + i, date_trunc('day', max(created_at)) + i * interval '30 minutes', 2, 1.25, 'new', NULL, 0.3, max(day), true
           FROM orders, generate_series(-1, 1) i GROUP BY i;
         INSERT INTO orders SELECT 100010, date_trunc('day', max(created_at)) - interval '1 microsecond', 2, 2.50, 'new', NULL, 0.3, max(day) - 1, true FROM orders;
         UPDATE orders SET amount = amount + 2, score = 1e6 WHERE id IN (1, 2);",
    )
    .await;
    refresh(false).await;
    compare("after writes to hot rows").await;
    in_both(
        &s,
        "UPDATE orders SET amount = amount + 3 WHERE id IN (1, 100006)",
    )
    .await;
    refresh(false).await;
    compare("after more writes to the same days").await;

    // A late row arrives and the mover takes it to the lake before the next
    // refresh: its month is recomputed all the same.
    in_both(
        &s,
        "INSERT INTO orders SELECT 100003, max(created_at) - interval '300 days', 5, 99.99, 'late', NULL, NULL, max(day) - 300, false FROM orders",
    )
    .await;
    assert!(move_rows(&s).await >= 1);
    refresh(false).await;
    compare("after the mover").await;
    refresh(false).await;
    compare("unchanged").await;

    // Writes are recorded: a refresh recomputes the months written, and
    // only those.
    let recomputed = || async {
        value::<i64>(
            &s.tiered,
            "SELECT last_refresh_rows FROM thermocline.materialized_views WHERE view_name = 'by_month'",
        )
        .await
    };
    let rows_of_month = |id: i64| {
        let direct = &direct;
        async move {
            let sql = format!(
                "SELECT count(*) FROM by_month WHERE month = \
                 (SELECT date_trunc('month', created_at) FROM orders WHERE id = {id})"
            );
            rows_of(direct, &sql).await[0][0].clone().unwrap()
        }
    };
    in_both(
        &s,
        "INSERT INTO orders SELECT 100005, max(created_at) - interval '200 days', 6, 5.55, 'late', NULL, 0.1, max(day) - 200, true FROM orders",
    )
    .await;
    refresh(false).await;
    compare("a month written").await;
    assert_eq!(
        recomputed().await.to_string(),
        rows_of_month(100005).await,
        "only the month written was recomputed"
    );
    // A write the triggers did not record (one disabled), or recorded
    // writes pruned: the refresh does not rely on them.
    admin(&s.tiered)
        .await
        .batch_execute("ALTER TABLE orders DISABLE TRIGGER thermocline_changes_update")
        .await
        .unwrap();
    in_both(
        &s,
        "UPDATE orders SET amount = amount * 2 WHERE id = 100005",
    )
    .await;
    admin(&s.tiered)
        .await
        .batch_execute("ALTER TABLE orders ENABLE ALWAYS TRIGGER thermocline_changes_update")
        .await
        .unwrap();
    refresh(false).await;
    compare("after an unrecorded write").await;
    in_both(
        &s,
        "UPDATE orders SET amount = amount + 1 WHERE id = 100005",
    )
    .await;
    admin(&s.tiered)
        .await
        .batch_execute(
            "DELETE FROM thermocline.changes;
             INSERT INTO thermocline.changes_pruned VALUES (pg_current_xact_id())",
        )
        .await
        .unwrap();
    refresh(false).await;
    compare("after recorded writes were pruned").await;
    // A definitions table made by an earlier version, without the columns
    // that keep each refresh's snapshot: refreshes go on without them.
    admin(&s.tiered)
        .await
        .batch_execute(
            "ALTER TABLE thermocline.materialized_views DROP COLUMN hot_snapshot, DROP COLUMN hot_signature",
        )
        .await
        .unwrap();
    in_both(
        &s,
        "UPDATE orders SET amount = amount + 1 WHERE id IN (1, 100005)",
    )
    .await;
    refresh(false).await;
    compare("with a definitions table of an earlier version").await;

    // In a transaction that rolls back, the refresh is undone too.
    for step in [
        "BEGIN",
        "INSERT INTO orders VALUES (100004, now(), 1, 1.00, 'pending', NULL, NULL, current_date, true)",
        "REFRESH MATERIALIZED VIEW by_status",
    ] {
        through.batch_execute(step).await.unwrap();
    }
    assert_eq!(
        rows_of(&through, "SELECT n FROM by_status WHERE status = 'pending'").await,
        vec![vec![Some("1".to_string())]],
        "the refresh sees the transaction's own writes"
    );
    through.batch_execute("ROLLBACK").await.unwrap();
    compare("rolled back").await;

    // A check on the view's table that fails at COMMIT: the client gets
    // its error, and the view stays as it was.
    admin(&s.tiered)
        .await
        .batch_execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
             $$BEGIN RAISE EXCEPTION 'refused at commit' USING ERRCODE = '23514'; END$$;
             CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON by_status \
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse()",
        )
        .await
        .unwrap();
    in_both(
        &s,
        "INSERT INTO orders VALUES (100007, now(), 1, 1.00, 'pending', NULL, NULL, current_date, true)",
    )
    .await;
    assert_eq!(
        ask(&through, "REFRESH MATERIALIZED VIEW by_status").await,
        Answer::Error("23514".into())
    );
    compare("refused at commit").await;
    admin(&s.tiered)
        .await
        .batch_execute("DROP TRIGGER refuse ON by_status")
        .await
        .unwrap();

    // A role that may read the views but not refresh them gets Postgres's
    // error, and the views stay as they were.
    for db in [&s.oracle, &s.tiered] {
        admin(db)
            .await
            .batch_execute(
                "DO $$BEGIN CREATE ROLE viewer LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END$$;
                 GRANT SELECT ON by_month, by_status TO viewer",
            )
            .await
            .unwrap();
    }
    let refresh_by = |c| async move { ask(c, "REFRESH MATERIALIZED VIEW by_month").await };
    let viewer = client(proxy.port(), "viewer", &s.tiered).await;
    let oracle_viewer = client(pg().port(), "viewer", &s.oracle).await;
    assert_eq!(refresh_by(&viewer).await, refresh_by(&oracle_viewer).await);
    assert_eq!(refresh_by(&viewer).await, Answer::Error("42501".into()));
    compare("refused").await;

    // Dropped: the table and its definition.
    through
        .batch_execute("DROP MATERIALIZED VIEW by_month, by_status, totals")
        .await
        .unwrap();
    let left: i64 = value(
        &s.tiered,
        "SELECT (SELECT count(*) FROM thermocline.materialized_views) + \
                    (SELECT count(*) FROM pg_class WHERE relname IN ('by_month', 'by_status', 'totals') \
                        OR relnamespace = 'thermocline'::regnamespace AND relname LIKE 'parts\\_%')",
    )
    .await;
    assert_eq!(left, 0);

    // A form not understood over a tiered table is refused, not left to
    // Postgres (which would see hot rows only).
    assert_eq!(
        ask(
            &through,
            "CREATE MATERIALIZED VIEW odd TABLESPACE pg_default AS SELECT count(*) FROM orders"
        )
        .await,
        Answer::Error("0A000".into())
    );
    // Prepared (extended protocol), it is refused too.
    let prepared = through
        .execute(
            "CREATE MATERIALIZED VIEW prepared AS SELECT count(*) FROM orders",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(
        prepared.as_db_error().map(|e| e.code().code()),
        Some("0A000"),
        "{prepared}"
    );
    let made: bool = value(&s.tiered, "SELECT to_regclass('prepared') IS NOT NULL").await;
    assert!(!made, "nothing was created");
    // A view's table dropped as a table leaves nothing in the way.
    let recreate =
        "CREATE MATERIALIZED VIEW again AS SELECT status, count(*) AS n FROM orders GROUP BY 1";
    through.batch_execute(recreate).await.unwrap();
    through.batch_execute("DROP TABLE again").await.unwrap();
    through.batch_execute(recreate).await.unwrap();
    direct.batch_execute(recreate).await.unwrap();
    assert_eq!(
        rows_of(&through, "SELECT * FROM again ORDER BY 1").await,
        rows_of(&direct, "SELECT * FROM again ORDER BY 1").await
    );

    // A view over no tiered table stays Postgres's own.
    through
        .batch_execute(
            "CREATE MATERIALIZED VIEW regions AS SELECT region, count(*) FROM customers GROUP BY 1",
        )
        .await
        .unwrap();
    let kind: i8 = value(
        &s.tiered,
        "SELECT relkind FROM pg_class WHERE relname = 'regions'",
    )
    .await;
    assert_eq!(kind as u8, b'm');
    // Its refresh is Postgres's too, and so is the error for a view that
    // does not exist.
    through
        .batch_execute("REFRESH MATERIALIZED VIEW regions")
        .await
        .unwrap();
    let missing = "REFRESH MATERIALIZED VIEW no_such_view";
    assert_eq!(ask(&through, missing).await, ask(&direct, missing).await);
    assert_eq!(ask(&direct, missing).await, Answer::Error("42P01".into()));
    assert_eq!(
        rows_of(&through, "SELECT 1").await,
        vec![vec![Some("1".to_string())]],
        "the session goes on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn materialized_views_of_the_cached_statements_equal_postgres_s() {
    let s = setup().await;
    move_rows(&s).await;
    let proxy = serve(&s).await;
    let direct = client(pg().port(), "postgres", &s.oracle).await;
    let through = client(proxy.port(), "postgres", &s.tiered).await;
    // Each statement as a view, in Postgres's own materialized view over
    // every row and in thermocline's.
    let views: Vec<(String, &str)> = CACHED
        .iter()
        .filter(|q| !q.contains("now()"))
        .enumerate()
        .map(|(i, q)| (format!("mv_{i}"), *q))
        .collect();
    let mut made = Vec::new();
    for (name, q) in views {
        // Postgres refuses some (two columns named count): so must
        // thermocline.
        let create = format!("CREATE MATERIALIZED VIEW {name} AS {q}");
        let answer = ask(&direct, &create).await;
        assert_eq!(ask(&through, &create).await, answer, "{create}");
        if matches!(answer, Answer::Rows(..)) {
            made.push((name, q));
        }
    }
    assert!(made.len() >= 6, "most statements make views: {made:?}");
    let views = made;
    let compare = |label: &'static str| {
        let (direct, through, views) = (&direct, &through, &views);
        async move {
            for (name, q) in views {
                // Without ORDER BY, `ask` sorts the rows (a view keeps no
                // order).
                let sql = format!("TABLE {name}");
                assert_eq!(
                    rows_of(through, &sql).await,
                    rows_of(direct, &sql).await,
                    "{label}: {q}"
                );
            }
        }
    };
    compare("created").await;
    let refresh = || {
        let (direct, through, views) = (&direct, &through, &views);
        async move {
            for (name, _) in views {
                let sql = format!("REFRESH MATERIALIZED VIEW {name}");
                direct.batch_execute(&sql).await.unwrap();
                through.batch_execute(&sql).await.unwrap();
            }
        }
    };
    in_both(
        &s,
        "INSERT INTO orders SELECT 100001, max(created_at) - interval '400 days', 3, 12.34, 'late', NULL, 0.5, max(day) - 400, true FROM orders;
         INSERT INTO orders SELECT 100002, max(created_at) + interval '1 second', 4, 1.00, 'new', 'fresh', NULL, max(day), false FROM orders;
         UPDATE orders SET amount = amount + 1, created_at = created_at - interval '40 days' WHERE id = 10;
         DELETE FROM orders WHERE id = 17;",
    )
    .await;
    refresh().await;
    compare("after writes").await;
    assert!(move_rows(&s).await >= 1, "the late row moves");
    refresh().await;
    compare("after the mover").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn materialized_views_refresh_on_their_interval() {
    let s = setup().await;
    move_rows(&s).await;
    let proxy = serve(&s).await;
    let direct = client(pg().port(), "postgres", &s.oracle).await;
    let through = client(proxy.port(), "postgres", &s.tiered).await;
    let query = "SELECT date_trunc('day', created_at) AS day, count(*) AS n, sum(amount) AS total FROM orders GROUP BY 1";
    direct
        .batch_execute(&format!("CREATE MATERIALIZED VIEW daily AS {query}"))
        .await
        .unwrap();
    through
        .batch_execute(&format!(
            "CREATE MATERIALIZED VIEW daily WITH (thermocline.refresh_interval = '1 second') AS {query}"
        ))
        .await
        .unwrap();
    in_both(
        &s,
        "INSERT INTO orders SELECT 100001, max(created_at) + interval '1 second', 4, 1.00, 'new', 'fresh', NULL, max(day), false FROM orders",
    )
    .await;
    direct
        .batch_execute("REFRESH MATERIALIZED VIEW daily")
        .await
        .unwrap();
    let want = rows_of(&direct, "SELECT * FROM daily ORDER BY 1").await;
    // The server refreshes it by itself, soon.
    let mut got = Vec::new();
    for _ in 0..100 {
        got = rows_of(&through, "SELECT * FROM daily ORDER BY 1").await;
        if got == want {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(got, want, "the view was refreshed on its interval");
    let refreshes: Vec<(String, Option<String>)> = pairs_of(
        &through,
        "SELECT last_refresh_kind, refresh_interval::text FROM thermocline.materialized_views",
    )
    .await;
    assert_eq!(
        refreshes,
        vec![("incremental".to_string(), Some("00:00:01".to_string()))]
    );
}

/// A view is computed in the time zone of the session that created it,
/// whoever refreshes it: its weeks, and the days it is kept in, start at
/// that zone's midnight. Rows written on either side of a local midnight,
/// hot and cold, and then moved to the lake, are refreshed incrementally to
/// what Postgres holds, its view refreshed in that zone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn materialized_views_refresh_in_the_time_zone_they_were_created_in() {
    let s = setup().await;
    move_rows(&s).await;
    let proxy = serve(&s).await;
    // A zone half an hour off UTC's hours.
    const ZONE: &str = "SET TimeZone = 'Asia/Kolkata'";
    let direct = client(pg().port(), "postgres", &s.oracle).await;
    let creator = client(proxy.port(), "postgres", &s.tiered).await;
    // Kept in parts by the day, and by the (local) hour.
    let views = [
        "CREATE MATERIALIZED VIEW weekly AS SELECT date_trunc('week', created_at) AS week, status, \
         count(*) AS n, sum(amount) AS total FROM orders GROUP BY 1, 2",
        "CREATE MATERIALIZED VIEW daily AS SELECT date_trunc('day', created_at) AS day, \
         count(*) AS n, sum(amount) AS total, max(amount) AS top FROM orders GROUP BY 1",
    ];
    for c in [&direct, &creator] {
        c.batch_execute(ZONE).await.unwrap();
        for v in views {
            c.batch_execute(v).await.unwrap();
        }
    }
    // Sessions in the server's zone read both views, and refresh this one.
    let oracle = client(pg().port(), "postgres", &s.oracle).await;
    let through = client(proxy.port(), "postgres", &s.tiered).await;
    let zones = (
        value::<String>(&s.oracle, "SHOW TimeZone").await,
        value::<String>(&s.tiered, "SHOW TimeZone").await,
    );
    assert_eq!(zones.0, zones.1);
    assert_ne!(zones.0, "Asia/Kolkata");
    let compare = |label: &'static str| {
        let (oracle, through) = (&oracle, &through);
        async move {
            for sql in [
                "SELECT * FROM weekly ORDER BY 1, 2",
                "SELECT * FROM daily ORDER BY 1",
            ] {
                assert_eq!(
                    rows_of(through, sql).await,
                    rows_of(oracle, sql).await,
                    "{label}: {sql}"
                );
            }
        }
    };
    let refresh = |label: &'static str| {
        let (direct, through) = (&direct, &through);
        async move {
            for c in [direct, through] {
                for v in ["weekly", "daily"] {
                    c.batch_execute(&format!("REFRESH MATERIALIZED VIEW {v}"))
                        .await
                        .unwrap();
                }
            }
            compare(label).await;
            let kinds: Vec<(String, String)> = pairs_of(
                through,
                "SELECT parts_grain, last_refresh_kind FROM thermocline.materialized_views \
                 ORDER BY 1",
            )
            .await;
            let incremental = |grain: &str| (grain.to_string(), "incremental".to_string());
            assert_eq!(
                kinds,
                vec![incremental("day"), incremental("hour")],
                "{label}"
            );
        }
    };
    compare("created").await;
    // A microsecond before and at a local midnight: of the latest day, and
    // of one 400 days back (in the lake's range, so kept in Postgres until
    // moved).
    in_both(
        &s,
        "INSERT INTO orders SELECT 100001 + 2 * d + i, \
                (date_trunc('day', max(created_at) AT TIME ZONE 'Asia/Kolkata') - d * interval '1 day') \
                    AT TIME ZONE 'Asia/Kolkata' + i * interval '1 microsecond', \
                3, 1.25, 'edge', NULL, 0.5, max(day) - d, true \
           FROM orders, generate_series(-1, 0) i, (VALUES (0), (400)) v(d) GROUP BY i, d",
    )
    .await;
    refresh("after writes at local midnights").await;
    move_rows(&s).await;
    refresh("after the mover").await;
    in_both(
        &s,
        "UPDATE orders SET amount = amount + 1 WHERE id IN (100000, 100001)",
    )
    .await;
    refresh("after updates on either side of the latest local midnight").await;
}

/// Views bucketed by each unit of `date_trunc`, computed in UTC (whose
/// calendar thermocline works out itself), are refreshed incrementally to
/// Postgres's rows after writes a microsecond before and at the start of
/// a bucket of each unit, of the latest time and 400 days back, and after
/// the mover takes the old ones to the lake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn materialized_views_of_every_bucket_unit_refresh_to_postgres_s_rows() {
    let s = setup().await;
    move_rows(&s).await;
    let proxy = serve(&s).await;
    let direct = client(pg().port(), "postgres", &s.oracle).await;
    let through = client(proxy.port(), "postgres", &s.tiered).await;
    const UNITS: [&str; 10] = [
        "minute",
        "hour",
        "day",
        "week",
        "month",
        "quarter",
        "year",
        "decade",
        "century",
        "millennium",
    ];
    for c in [&direct, &through] {
        c.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
        for u in UNITS {
            c.batch_execute(&format!(
                "CREATE MATERIALIZED VIEW by_{u} AS SELECT date_trunc('{u}', created_at) AS b, \
                 count(*) AS n, sum(amount) AS total, max(amount) AS top FROM orders GROUP BY 1"
            ))
            .await
            .unwrap();
        }
    }
    let refresh = |label: &'static str| {
        let (direct, through) = (&direct, &through);
        async move {
            for u in UNITS {
                for c in [direct, through] {
                    c.batch_execute(&format!("REFRESH MATERIALIZED VIEW by_{u}"))
                        .await
                        .unwrap();
                }
                let sql = format!("SELECT * FROM by_{u} ORDER BY 1");
                assert_eq!(
                    rows_of(through, &sql).await,
                    rows_of(direct, &sql).await,
                    "{label}: {sql}"
                );
            }
            let kinds = rows_of(
                through,
                "SELECT DISTINCT last_refresh_kind FROM thermocline.materialized_views",
            )
            .await;
            assert_eq!(
                kinds,
                vec![vec![Some("incremental".to_string())]],
                "{label}"
            );
        }
    };
    let units: Vec<String> = UNITS.iter().map(|u| format!("'{u}'")).collect();
    in_both(
        &s,
        &format!(
            "INSERT INTO orders SELECT 200000 + row_number() OVER (), t, 3, 1.25, 'edge', NULL, 0.5, t::date, true \
               FROM (SELECT date_trunc(u, m - d * interval '1 day') + i * interval '1 microsecond' AS t \
                       FROM (SELECT max(created_at) AS m FROM orders) x, unnest(ARRAY[{}]) u, \
                            generate_series(-1, 0) i, (VALUES (0), (400)) v(d)) y",
            units.join(", ")
        ),
    )
    .await;
    refresh("after writes at the edges of buckets").await;
    assert!(move_rows(&s).await >= 1);
    refresh("after the mover").await;
    in_both(
        &s,
        "UPDATE orders SET amount = amount + 1 \
         WHERE status = 'edge' AND created_at > (SELECT max(created_at) - interval '1 day' FROM orders)",
    )
    .await;
    refresh("after updates at the edges of the latest buckets").await;
}

/// With `thermocline.result_cache_ttl` set, a session accepts whole answers
/// up to that age: the same statement again is answered from the cache,
/// without the row inserted meanwhile. Other sessions, and the same one
/// once it turns the setting off, get fresh answers; a role that lost its
/// privileges gets Postgres's error, not the cached answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_answers_up_to_an_age_when_a_session_asks() {
    let s = setup().await;
    move_rows(&s).await;
    let proxy = serve(&s).await;
    let direct = client(pg().port(), "postgres", &s.oracle).await;
    let admin_tiered = admin(&s.tiered).await;
    admin_tiered
        .batch_execute(
            "DO $$BEGIN CREATE ROLE dashboard LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END$$;
             GRANT SELECT ON orders TO dashboard",
        )
        .await
        .unwrap();
    let dashboard = client(proxy.port(), "dashboard", &s.tiered).await;
    let fresh = client(proxy.port(), "postgres", &s.tiered).await;
    let sql = "SELECT status, count(*), sum(amount) FROM orders GROUP BY 1 ORDER BY 1";
    dashboard
        .batch_execute("SET thermocline.result_cache_ttl = '1h'")
        .await
        .unwrap();
    let before = ask(&direct, sql).await;
    assert_eq!(ask(&dashboard, sql).await, before);
    in_both(
        &s,
        "INSERT INTO orders SELECT 100001, max(created_at) + interval '1 second', 4, 1.00, 'new', 'fresh', NULL, max(day), false FROM orders",
    )
    .await;
    let after = ask(&direct, sql).await;
    assert_ne!(before, after);
    assert_eq!(
        ask(&dashboard, sql).await,
        before,
        "answered from the cache"
    );
    assert_eq!(ask(&fresh, sql).await, after, "another session computes");
    let kept: Vec<(String, i64)> = pairs_of(
        &fresh,
        "SELECT kind, hits FROM thermocline.cache WHERE kind = 'result'",
    )
    .await;
    assert_eq!(kept, vec![("result".to_string(), 1)]);

    admin_tiered
        .batch_execute("REVOKE SELECT ON orders FROM dashboard")
        .await
        .unwrap();
    assert_eq!(ask(&dashboard, sql).await, Answer::Error("42501".into()));
    admin_tiered
        .batch_execute("GRANT SELECT ON orders TO dashboard")
        .await
        .unwrap();
    dashboard
        .batch_execute("SET thermocline.result_cache_ttl = 'off'")
        .await
        .unwrap();
    assert_eq!(ask(&dashboard, sql).await, after, "fresh once turned off");
}
