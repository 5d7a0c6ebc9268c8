//! Bad input and faults: the affected session gets a Postgres-style error
//! and closes; Postgres is left with no stray backend; other sessions and
//! the server carry on. Also cancel and graceful shutdown.

mod common;

use std::time::{Duration, Instant};

use common::wire::*;
use common::{Proxy, admin, client, fresh_db, pg};
use tokio::io::AsyncWriteExt;

/// Backends of the test Postgres whose application_name is `app`.
async fn backends(app: &str) -> i64 {
    let admin = admin("postgres").await;
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap()
        .get(0)
}

async fn wait_until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !cond().await {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn connect_app(port: u16, db: &str, app: &str) -> RawConn {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut conn = RawConn { stream };
    conn.send(&startup(&[
        ("user", "postgres"),
        ("database", db),
        ("application_name", app),
    ]))
    .await;
    let msgs = conn.until_ready(1).await;
    assert_eq!(msgs.last().map(|m| m.tag), Some(b'Z'), "{msgs:?}");
    conn
}

/// The session ended with exactly one FATAL error with this SQLSTATE.
async fn expect_fatal(conn: &mut RawConn, code: &str) -> Msg {
    let msgs = conn.drain(Duration::from_secs(10)).await;
    let last = msgs
        .last()
        .cloned()
        .unwrap_or_else(|| panic!("no reply; wanted FATAL {code}"));
    assert_eq!(last.tag, b'E', "{msgs:?}");
    assert_eq!(last.field(b'S').as_deref(), Some("FATAL"), "{msgs:?}");
    assert_eq!(last.field(b'C').as_deref(), Some(code), "{msgs:?}");
    assert!(
        conn.recv().await.is_none(),
        "the connection is closed after the FATAL error"
    );
    last
}

#[tokio::test]
async fn malformed_messages_close_only_that_session() {
    let proxy = Proxy::start_with(|c| c.max_message_size = 1 << 20).await;
    let db = fresh_db("malformed").await;
    let mut bystander = connect_app(proxy.port(), &db, "bystander").await;

    // A length below the minimum.
    let mut conn = connect_app(proxy.port(), &db, "bad-length").await;
    conn.send(&[b'Q', 0, 0, 0, 2]).await;
    let e = expect_fatal(&mut conn, "08P01").await;
    assert_eq!(e.field(b'M').as_deref(), Some("invalid message length"));

    // A message larger than max_message_size.
    let mut conn = connect_app(proxy.port(), &db, "too-big").await;
    conn.send(&[b'Q', 0, 0x20, 0, 0]).await;
    expect_fatal(&mut conn, "08P01").await;

    // A broken startup packet.
    let mut raw = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    raw.write_all(&[0, 0, 0, 3]).await.unwrap();
    let mut conn = RawConn { stream: raw };
    expect_fatal(&mut conn, "08P01").await;

    // A Query where the startup packet belongs.
    let mut raw = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    raw.write_all(&query("SELECT 1")).await.unwrap();
    let mut conn = RawConn { stream: raw };
    let msgs = conn.drain(Duration::from_secs(5)).await;
    assert!(msgs.iter().all(|m| m.tag != b'Z'), "{msgs:?}");

    // Postgres keeps no session for any of them, and the bystander is fine.
    for app in ["bad-length", "too-big"] {
        wait_until(&format!("no backend for {app}"), async || {
            backends(app).await == 0
        })
        .await;
    }
    bystander.send(&query("SELECT 42")).await;
    let reply = bystander.until_ready(1).await;
    assert!(
        reply
            .iter()
            .any(|m| m.tag == b'D' && m.body.ends_with(b"42")),
        "{reply:?}"
    );
}

#[tokio::test]
async fn a_vanishing_client_leaves_no_work_behind() {
    let proxy = Proxy::start().await;
    let db = fresh_db("vanish").await;
    let mut conn = connect_app(proxy.port(), &db, "vanisher").await;
    conn.send(&query("SELECT pg_sleep(600)")).await;
    let admin = admin("postgres").await;
    wait_until("the query runs", async || {
        admin
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'vanisher' AND state = 'active'", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 1
    })
    .await;
    drop(conn);
    // The running statement is cancelled and the backend exits, long
    // before pg_sleep(600) would have ended.
    wait_until("the backend is gone", async || {
        backends("vanisher").await == 0
    })
    .await;
}

#[tokio::test]
async fn a_terminated_backend_ends_only_its_session() {
    let proxy = Proxy::start().await;
    let db = fresh_db("terminate").await;
    let mut victim = connect_app(proxy.port(), &db, "victim").await;
    let other = client(proxy.port(), "postgres", &db).await;
    let admin = admin("postgres").await;
    admin
        .execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'victim'", &[])
        .await
        .unwrap();
    // Postgres's own FATAL reaches the client unchanged.
    let e = expect_fatal(&mut victim, "57P01").await;
    assert_eq!(
        e.field(b'M').as_deref(),
        Some("terminating connection due to administrator command")
    );
    let n: i32 = other.query_one("SELECT 7", &[]).await.unwrap().get(0);
    assert_eq!(n, 7);
    let fresh = client(proxy.port(), "postgres", &db).await;
    let n: i32 = fresh.query_one("SELECT 8", &[]).await.unwrap().get(0);
    assert_eq!(n, 8);
}

#[tokio::test]
async fn cancel_requests_reach_the_backend() {
    let proxy = Proxy::start().await;
    let db = fresh_db("cancel").await;
    for port in [pg().port(), proxy.port()] {
        let c = client(port, "postgres", &db).await;
        let token = c.cancel_token();
        let running = tokio::spawn(async move { c.simple_query("SELECT pg_sleep(60)").await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
        let err = tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .expect("cancelled well before 60 s")
            .unwrap()
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
            "port {port}: {err}"
        );
    }
}

#[tokio::test]
async fn a_forged_cancel_key_cancels_nothing() {
    let proxy = Proxy::start().await;
    let db = fresh_db("forged").await;
    let mut conn = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let mut raw = RawConn {
        stream: tokio::net::TcpStream::connect(proxy.addr).await.unwrap(),
    };
    raw.send(&startup(&[("user", "postgres"), ("database", &db)]))
        .await;
    let hello = raw.until_ready(1).await;
    let key = hello
        .iter()
        .find(|m| m.tag == b'K')
        .expect("BackendKeyData");
    let pid = i32::from_be_bytes(key.body[..4].try_into().unwrap());
    let secret = i32::from_be_bytes(key.body[4..].try_into().unwrap());
    // The pid is the real backend pid (clients hand it to pg_terminate_backend).
    raw.send(&query("SELECT pg_backend_pid()")).await;
    let reply = raw.until_ready(1).await;
    let row = reply.iter().find(|m| m.tag == b'D').unwrap();
    assert!(row.body.ends_with(pid.to_string().as_bytes()), "{reply:?}");

    raw.send(&query("SELECT pg_sleep(1.5), 'done'")).await;
    let mut cancel = 16u32.to_be_bytes().to_vec();
    cancel.extend(80_877_102u32.to_be_bytes());
    cancel.extend(pid.to_be_bytes());
    cancel.extend(secret.wrapping_add(1).to_be_bytes());
    conn.write_all(&cancel).await.unwrap();
    let reply = raw.until_ready(1).await;
    assert!(
        reply.iter().all(|m| m.tag != b'E'),
        "a wrong secret must not cancel: {reply:?}"
    );
}

#[tokio::test]
async fn shutdown_lets_statements_finish_then_closes_with_57p01() {
    let mut proxy = Proxy::start_with(|c| c.shutdown_timeout = Duration::from_secs(20)).await;
    let db = fresh_db("drain").await;
    let mut idle = connect_app(proxy.port(), &db, "drain-idle").await;
    let mut busy = connect_app(proxy.port(), &db, "drain-busy").await;
    busy.send(&query("SELECT pg_sleep(1), 'finished'")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = proxy.shutdown();
    expect_fatal(&mut idle, "57P01").await;
    // The running statement completes before its session is closed.
    let reply = busy.until_ready(1).await;
    assert!(
        reply
            .iter()
            .any(|m| m.tag == b'D' && m.body.ends_with(b"finished")),
        "{reply:?}"
    );
    expect_fatal(&mut busy, "57P01").await;
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(proxy.addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn shutdown_timeout_closes_long_statements() {
    let mut proxy = Proxy::start_with(|c| c.shutdown_timeout = Duration::from_millis(300)).await;
    let db = fresh_db("drain_timeout").await;
    let mut busy = connect_app(proxy.port(), &db, "drain-long").await;
    busy.send(&query("SELECT pg_sleep(600)")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = proxy.shutdown();
    expect_fatal(&mut busy, "57P01").await;
    tokio::time::timeout(Duration::from_secs(15), stopped)
        .await
        .unwrap()
        .unwrap();
    wait_until("the long statement is cancelled", async || {
        backends("drain-long").await == 0
    })
    .await;
}

/// Past max_client_connections a client is refused with FATAL 53300, as
/// Postgres refuses it; the sessions already open carry on, and a slot
/// freed by a closed session is taken by the next client.
#[tokio::test]
async fn too_many_clients_are_refused_with_53300() {
    let proxy = Proxy::start_with(|c| c.max_client_connections = 2).await;
    let db = fresh_db("limit").await;
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(proxy.port())
        .user("postgres")
        .dbname(&db);
    let connect = || config.connect(tokio_postgres::NoTls);
    let (a, conn_a) = connect().await.unwrap();
    tokio::spawn(conn_a);
    let (b, conn_b) = connect().await.unwrap();
    let b_task = tokio::spawn(conn_b);
    let Err(refused) = connect().await else {
        panic!("a third client was let in");
    };
    assert_eq!(
        refused
            .as_db_error()
            .map(|e| (e.code().code(), e.message())),
        Some(("53300", "sorry, too many clients already")),
        "{refused}"
    );
    assert_eq!(a.simple_query("SELECT 1").await.unwrap().len(), 3);
    assert_eq!(b.simple_query("SELECT 2").await.unwrap().len(), 3);
    drop(b);
    let _ = b_task.await;
    // The slot is freed once the server has seen the session end.
    let mut next = connect().await;
    for _ in 0..100 {
        if next.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        next = connect().await;
    }
    let Ok((c, conn_c)) = next else {
        panic!("the slot of a closed session was not freed");
    };
    tokio::spawn(conn_c);
    assert_eq!(c.simple_query("SELECT 3").await.unwrap().len(), 3);
}
