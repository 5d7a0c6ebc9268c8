//! Running it in production: the system views, the idle-session timeout,
//! limits changed by SIGHUP, and JSON logs.

mod common;

use std::time::Duration;

use common::wire::{RawConn, bind, close, execute, parse, query, sync};
use common::{Proxy, ServeProcess, client, fresh_db, pg};
use tokio_postgres::SimpleQueryMessage;

fn rows(msgs: Vec<SimpleQueryMessage>) -> Vec<Vec<Option<String>>> {
    msgs.into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

/// `thermocline.sessions` lists the open sessions with their state and
/// running statement; `thermocline.statements` the recent statements with
/// route, SQLSTATE and duration, literals masked. Both work over the simple
/// and the extended protocol, with filters, ordering and aggregates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_views_show_sessions_and_recent_statements() {
    let proxy = Proxy::start().await;
    let db = fresh_db("views").await;
    let a = client(proxy.port(), "postgres", &db).await;
    let (b, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(proxy.port())
        .user("postgres")
        .dbname(&db)
        .application_name("dashboard")
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    b.batch_execute("BEGIN; SELECT 1").await.unwrap();
    a.simple_query("SELECT 'hunter2' AS secret, 42")
        .await
        .unwrap();
    assert!(a.simple_query("SELECT 1/0").await.is_err());
    // The client sees the error before its ReadyForQuery; wait for a whole
    // reply so that statement is over, not still in flight.
    a.simple_query("SELECT 2").await.unwrap();

    // Extended protocol, as drivers and BI tools ask.
    let sessions = a
        .query(
            "SELECT application_name, state, route, statement, backend_pid > 0, \
                    connected_at <= now(), user_name, database \
             FROM thermocline.sessions WHERE database = $1 ORDER BY conn_id",
            &[&db],
        )
        .await
        .unwrap();
    assert_eq!(sessions.len(), 2, "both sessions");
    let mine = &sessions[0];
    assert_eq!(mine.get::<_, String>(1), "active");
    assert_eq!(mine.get::<_, String>(2), "local");
    assert!(
        mine.get::<_, String>(3).contains("thermocline.sessions"),
        "{:?}",
        mine.get::<_, String>(3)
    );
    let other = &sessions[1];
    assert_eq!(other.get::<_, String>(0), "dashboard");
    assert_eq!(other.get::<_, String>(1), "idle in transaction");
    assert_eq!(other.get::<_, Option<String>>(3), None);
    for s in &sessions {
        assert!(s.get::<_, bool>(4) && s.get::<_, bool>(5));
        assert_eq!(s.get::<_, String>(6), "postgres");
        assert_eq!(s.get::<_, String>(7), db);
    }

    // The simple protocol; literals masked, errors' SQLSTATEs kept.
    let recent = rows(
        a.simple_query(
            "SELECT route, sqlstate, statement, duration_ms >= 0 FROM thermocline.statements \
             WHERE statement LIKE '%AS secret%' OR statement LIKE '%/%' ORDER BY started_at",
        )
        .await
        .unwrap(),
    );
    let want = |s: &str| Some(s.to_string());
    assert!(
        recent.contains(&vec![
            want("relay"),
            None,
            want("SELECT ? AS secret, ?"),
            want("t")
        ]),
        "{recent:?}"
    );
    assert!(
        recent.contains(&vec![
            want("relay"),
            want("22012"),
            want("SELECT ?/?"),
            want("t")
        ]),
        "{recent:?}"
    );
    let text = format!("{recent:?}");
    assert!(!text.contains("hunter2") && !text.contains("42"), "{text}");

    // Aggregates, and a filter that keeps nothing (the types stay).
    let counted = rows(
        a.simple_query(
            "SELECT route, count(*) FROM thermocline.statements \
             WHERE route IN ('relay', 'local') GROUP BY route ORDER BY route",
        )
        .await
        .unwrap(),
    );
    assert_eq!(counted.len(), 2, "{counted:?}");
    let none = a
        .query_one(
            "SELECT count(*) FROM thermocline.statements WHERE duration_ms < 0",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(none.get::<_, i64>(0), 0);
    // A prepared statement over a view runs again.
    let prepared = a
        .prepare("SELECT count(*) FROM thermocline.sessions")
        .await
        .unwrap();
    for _ in 0..2 {
        assert!(a.query_one(&prepared, &[]).await.unwrap().get::<_, i64>(0) >= 2);
    }
    b.batch_execute("COMMIT").await.unwrap();
    // As in pg_stat_activity, a role sees the statement texts of its own
    // sessions only (superusers and pg_read_all_stats see all).
    common::admin(&db)
        .await
        .batch_execute("CREATE ROLE viewer LOGIN")
        .await
        .unwrap();
    let viewer = client(proxy.port(), "viewer", &db).await;
    viewer.simple_query("SELECT 'mine' AS own").await.unwrap();
    let seen = rows(
        viewer
            .simple_query(
                "SELECT user_name, bool_or(statement IS NOT NULL) FROM thermocline.statements \
                 WHERE database = current_database() GROUP BY 1 ORDER BY 1",
            )
            .await
            .unwrap(),
    );
    assert_eq!(
        seen,
        vec![
            vec![want("postgres"), want("f")],
            vec![want("viewer"), want("t")]
        ]
    );
    // A view name inside a string is not a view.
    assert_eq!(
        rows(
            a.simple_query("SELECT 'thermocline.sessions'")
                .await
                .unwrap()
        ),
        vec![vec![want("thermocline.sessions")]]
    );
}

/// With idle_session_timeout, a session idle outside a transaction is
/// closed with FATAL 57P05, as Postgres closes it; a session inside a
/// transaction or running a long statement is not.
/// A Parse naming a system view that arrives in one packet behind other
/// messages (as a driver sends a Close of its last statement and its next
/// query together) is rewritten like any other, and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_view_behind_other_messages_in_one_packet() {
    let proxy = Proxy::start().await;
    let db = fresh_db("packet").await;
    let (mut conn, _) = RawConn::connect(proxy.port(), "postgres", &db).await;
    let mut packet = Vec::new();
    for m in [
        parse("s1", "SELECT 1", &[]),
        bind("", "s1", &[], &[], &[]),
        execute("", 0),
        sync(),
        close(b'S', "s1"),
        sync(),
        parse("", "SELECT count(*) >= 0 FROM thermocline.statements", &[]),
        bind("", "", &[], &[], &[]),
        execute("", 0),
        sync(),
        query("SELECT 'still here'"),
    ] {
        packet.extend(m);
    }
    conn.send(&packet).await;
    let replies = conn.until_ready(4).await;
    let tags: Vec<u8> = replies.iter().map(|m| m.tag).collect();
    assert_eq!(
        tags,
        b"12DCZ3Z12DCZTDCZ".to_vec(),
        "every exchange answered in order: {:?}",
        String::from_utf8_lossy(&tags)
    );
    let rows: Vec<&[u8]> = replies
        .iter()
        .filter(|m| m.tag == b'D')
        .map(|m| &m.body[6..])
        .collect();
    assert_eq!(rows, vec![&b"1"[..], b"t", b"still here"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_closed_with_57p05() {
    let proxy =
        Proxy::start_with(|c| c.idle_session_timeout = Some(Duration::from_millis(400))).await;
    let db = fresh_db("idle").await;
    let (mut idle, _) = RawConn::connect(proxy.port(), "postgres", &db).await;
    let (mut in_txn, _) = RawConn::connect(proxy.port(), "postgres", &db).await;
    let (mut busy, _) = RawConn::connect(proxy.port(), "postgres", &db).await;
    in_txn.send(&query("BEGIN")).await;
    in_txn.until_ready(1).await;
    busy.send(&query("SELECT pg_sleep(1.2)")).await;

    let closing = tokio::time::timeout(Duration::from_secs(10), idle.recv())
        .await
        .expect("closed within 10 s")
        .expect("an ErrorResponse before the close");
    assert_eq!(closing.tag, b'E');
    assert_eq!(closing.field(b'S').as_deref(), Some("FATAL"));
    assert_eq!(closing.field(b'C').as_deref(), Some("57P05"));
    assert!(idle.recv().await.is_none(), "then the connection closes");

    let answer = busy.until_ready(1).await;
    assert!(
        answer.iter().any(|m| m.tag == b'D'),
        "the long statement ran"
    );
    assert!(answer.iter().all(|m| m.tag != b'E'));
    tokio::time::sleep(Duration::from_millis(200)).await;
    in_txn.send(&query("SELECT 1")).await;
    let answer = in_txn.until_ready(1).await;
    assert!(answer.iter().any(|m| m.tag == b'D'), "{answer:?}");
}

/// A server started from a config file: SIGHUP raises
/// max_client_connections and the log level while sessions stay open; the
/// JSON log parses line by line, each statement a span with its route and
/// duration, and no literal of any statement appears in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_changes_limits_live_and_logs_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("thermocline.toml");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let write_config = |max: u32, level: &str| {
        std::fs::write(
            &config_file,
            format!(
                "listen = \"127.0.0.1:{port}\"\nadmin_listen = \"off\"\npostgres_url = \"{}\"\n\
                 log_format = \"json\"\nlog_level = \"{level}\"\nmax_client_connections = {max}\n\
                 slow_statement_threshold = \"50ms\"\n",
                pg().url()
            ),
        )
        .unwrap()
    };
    write_config(2, "info");
    let db = fresh_db("sighup").await;
    let mut server = ServeProcess::start(&config_file, None);
    server.wait_for("thermocline is serving").await;

    let connect = || {
        let mut c = tokio_postgres::Config::new();
        c.host("127.0.0.1").port(port).user("postgres").dbname(&db);
        async move { c.connect(tokio_postgres::NoTls).await }
    };
    let (a, conn) = connect().await.unwrap();
    tokio::spawn(conn);
    let (b, conn) = connect().await.unwrap();
    tokio::spawn(conn);
    let refused = connect().await.err().expect("a third client is refused");
    assert_eq!(
        refused.as_db_error().map(|e| e.code().code()),
        Some("53300")
    );
    // Slow: logged with its route and duration, its literal masked.
    a.simple_query("SELECT pg_sleep(0.1), 'hunter2-secret'")
        .await
        .unwrap();
    server.wait_for("slow statement").await;

    write_config(3, "info,thermocline=debug");
    server.signal(libc::SIGHUP);
    server.wait_for("configuration reloaded").await;
    let (c, conn) = connect().await.expect("the raised limit lets a third in");
    tokio::spawn(conn);
    for client in [&a, &b, &c] {
        assert_eq!(
            rows(client.simple_query("SELECT 7").await.unwrap()).len(),
            1
        );
    }
    // At debug level every statement is logged.
    b.simple_query("SELECT 'another-secret' AS x")
        .await
        .unwrap();
    server.wait_for("statement done").await;

    let log = server.stop();

    let mut slow = None;
    let mut done = 0;
    for line in &log {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("timestamp").is_some(),
            "{line}"
        );
        assert!(
            !line.contains("hunter2") && !line.contains("another-secret"),
            "a literal was logged: {line}"
        );
        let spans = v
            .get("spans")
            .and_then(|s| s.as_array())
            .cloned()
            .unwrap_or_default();
        let statement = spans.iter().find(|s| s["name"] == "statement");
        let conn = spans.iter().find(|s| s["name"] == "conn");
        match v["message"].as_str() {
            Some("slow statement") => slow = Some((statement.cloned(), conn.cloned(), v.clone())),
            Some("statement done") => {
                let s = statement.expect("a statement span");
                assert_eq!(s["route"], "relay", "{line}");
                assert!(s["duration_ms"].as_f64().is_some(), "{line}");
                assert!(conn.is_some(), "inside its connection's span: {line}");
                done += 1;
            }
            _ => {}
        }
    }
    let (statement, conn, event) = slow.expect("a slow-statement line");
    let statement = statement.expect("a statement span");
    assert_eq!(statement["route"], "relay");
    assert!(
        statement["duration_ms"].as_f64().unwrap() >= 100.0,
        "{statement}"
    );
    assert_eq!(event["statement"], "SELECT pg_sleep(?), ?");
    assert_eq!(conn.expect("a conn span")["db"], db.as_str());
    assert!(
        done >= 2,
        "statements logged at debug level after the reload"
    );
}
