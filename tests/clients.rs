//! Real clients — psql, psycopg 3, asyncpg, node-postgres, pgjdbc — run the
//! same session (tests/clients/) straight against Postgres and through
//! thermocline, each on a fresh database; their transcripts must be
//! identical. `tests/clients/install.sh` installs them (tests/run.sh calls it).

mod common;

use common::{Proxy, assert_same_transcript, fresh_db, pg, transcript};

/// Runs `client` both ways and compares. `expect` are strings the direct
/// transcript must contain, so a session that stops exercising what it
/// claims to (errors, cancel, COPY, binary results) fails here.
async fn same_through_thermocline(client: &str, expect: &[&str]) {
    let proxy = Proxy::start().await;
    let (direct_db, proxied_db) = (fresh_db("direct").await, fresh_db("proxied").await);
    let direct = transcript(client, pg().port(), &direct_db).await;
    let proxied = transcript(client, proxy.port(), &proxied_db).await;
    for want in expect {
        assert!(
            direct.contains(want),
            "the {client} session no longer shows {want:?}:\n{direct}"
        );
    }
    assert_same_transcript(client, &direct, &proxied);
}

#[tokio::test]
async fn psql() {
    same_through_thermocline("psql", &["22012", "Table \"public.", "COPY"]).await;
}

#[tokio::test]
async fn psycopg() {
    same_through_thermocline("psycopg", &["22012", "57014"]).await;
}

#[tokio::test]
async fn asyncpg() {
    same_through_thermocline("asyncpg", &["22012", "returned within 5 s: True"]).await;
}

#[tokio::test]
async fn node_postgres() {
    same_through_thermocline("node-pg", &["22012"]).await;
}

#[tokio::test]
async fn pgjdbc() {
    same_through_thermocline("pgjdbc", &["22012", "57014"]).await;
}
