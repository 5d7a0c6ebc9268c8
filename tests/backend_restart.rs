//! A Postgres that crashes or restarts under thermocline: sessions end with
//! a Postgres-style error, and once Postgres is back new sessions work, as
//! they would straight against a restarted Postgres. Own Postgres: these
//! tests crash it.

mod common;

use std::time::{Duration, Instant};

use common::wire::*;
use thermocline::backend::embedded::{EmbeddedOptions, EmbeddedPostgres};
use thermocline::backend::target::BackendTarget;

async fn proxy_for(port: u16) -> common::Proxy {
    let url = format!("postgres://127.0.0.1:{port}/postgres?sslmode=disable");
    common::Proxy::start_with(move |c| c.postgres = Some(BackendTarget::parse(&url).unwrap())).await
}

async fn session(port: u16) -> (RawConn, i32) {
    let (conn, hello) = RawConn::connect(port, "postgres", "postgres").await;
    let key = hello
        .iter()
        .find(|m| m.tag == b'K')
        .expect("BackendKeyData");
    (conn, i32::from_be_bytes(key.body[..4].try_into().unwrap()))
}

/// Waits for the session's last words: a FATAL error, then end of stream.
/// Returns its SQLSTATE and the SQLSTATEs of notices before it.
async fn last_words(conn: &mut RawConn) -> (String, Vec<String>) {
    let msgs = conn.drain(Duration::from_secs(15)).await;
    let last = msgs
        .last()
        .unwrap_or_else(|| panic!("no error before close"));
    assert_eq!(last.tag, b'E', "{msgs:?}");
    assert_eq!(last.field(b'S').as_deref(), Some("FATAL"));
    let notices = msgs
        .iter()
        .filter(|m| m.tag == b'N')
        .filter_map(|m| m.field(b'C'))
        .collect();
    (last.field(b'C').unwrap(), notices)
}

async fn fatal_code(conn: &mut RawConn) -> String {
    last_words(conn).await.0
}

async fn works_again(port: u16) {
    let start = Instant::now();
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(5), async {
            let (mut conn, hello) = RawConn::connect(port, "postgres", "postgres").await;
            if hello.last().map(|m| m.tag) != Some(b'Z') {
                return false;
            }
            conn.send(&query("SELECT 'back'")).await;
            conn.until_ready(1)
                .await
                .iter()
                .any(|m| m.tag == b'D' && m.body.ends_with(b"back"))
        })
        .await;
        if attempt == Ok(true) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "sessions never worked again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn crashed_and_restarted_postgres() {
    let dir = tempfile::tempdir().unwrap();
    std::process::Command::new("chmod")
        .args(["a+rx", dir.path().to_str().unwrap()])
        .status()
        .unwrap();
    let data_dir = dir.path().join("data");
    let options = EmbeddedOptions {
        no_fsync: true,
        data_dir: Some(data_dir.clone()),
        ..Default::default()
    };
    let mut pg = EmbeddedPostgres::start(options.clone()).unwrap();
    let port = pg.port();
    let proxy = proxy_for(port).await;

    // A backend process dies: its client hears 08006 from thermocline; the
    // others first get Postgres's own crash warning (57P02) as it resets.
    let (mut victim, victim_pid) = session(proxy.port()).await;
    let (mut bystander, _) = session(proxy.port()).await;
    unsafe { libc::kill(victim_pid, libc::SIGKILL) };
    assert_eq!(fatal_code(&mut victim).await, "08006");
    assert_eq!(
        last_words(&mut bystander).await,
        ("08006".to_string(), vec!["57P02".to_string()])
    );
    works_again(proxy.port()).await;

    // Postgres restarts: sessions get its shutdown notice (57P01); new ones
    // fail with 08006 while it is down and work once it is back.
    let (mut before, _) = session(proxy.port()).await;
    pg.stop();
    assert_eq!(fatal_code(&mut before).await, "57P01");
    let (mut down, _) = (
        RawConn {
            stream: tokio::net::TcpStream::connect(proxy.addr).await.unwrap(),
        },
        0,
    );
    down.send(&startup(&[("user", "postgres"), ("database", "postgres")]))
        .await;
    assert_eq!(fatal_code(&mut down).await, "08006");
    let _pg = EmbeddedPostgres::start(EmbeddedOptions {
        port: Some(port),
        ..options
    })
    .unwrap();
    works_again(proxy.port()).await;
}
