//! The same wire-level session scripts, sent straight to Postgres and through
//! thermocline: every backend message must be identical (after renumbering
//! what differs between any two connections: cancel keys, notifying pids,
//! OIDs of objects each run creates).

mod common;

use std::time::Duration;

use common::wire::*;
use common::{Proxy, fresh_db, pg};

enum Step {
    Send(Vec<u8>),
    /// Read until this many ReadyForQuery messages.
    Ready(usize),
    /// Read exactly this many messages.
    Read(usize),
    /// Read whatever arrives until the connection is idle or closed.
    Drain,
}
use Step::*;

const SETUP: &str = "
    CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
    CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(12,2), m mood, at timestamptz);
    INSERT INTO items VALUES
        (1, 'apple', 1.25, 'happy', '2024-02-29 12:00:00+00'),
        (2, 'pear', NULL, 'ok', '2025-11-01 00:00:00+00'),
        (3, 'fig', 99999999.99, NULL, NULL);
";

async fn transcript(port: u16, db: &str, steps: &[Step]) -> Vec<Msg> {
    let (mut conn, mut out) = RawConn::connect(port, "postgres", db).await;
    for step in steps {
        match step {
            Send(bytes) => conn.send(bytes).await,
            Ready(n) => out.extend(conn.until_ready(*n).await),
            Read(n) => {
                for _ in 0..*n {
                    let msg = tokio::time::timeout(Duration::from_secs(30), conn.recv())
                        .await
                        .expect("reply");
                    out.extend(msg);
                }
            }
            Drain => out.extend(conn.drain(Duration::from_millis(300)).await),
        }
    }
    out
}

/// Runs `steps` directly and through thermocline, each on a fresh database
/// set up the same way, and requires the same replies. `expect` lists
/// message tags the reference reply must contain, so a script that stops
/// exercising what it is named for fails loudly.
async fn differential(steps: Vec<Step>, expect: &[u8]) {
    let proxy = Proxy::start().await;
    let direct_db = fresh_db("direct").await;
    let proxied_db = fresh_db("proxied").await;
    for db in [&direct_db, &proxied_db] {
        common::admin(db).await.batch_execute(SETUP).await.unwrap();
    }
    let direct = normalize(&transcript(pg().port(), &direct_db, &steps).await);
    let proxied = normalize(&transcript(proxy.port(), &proxied_db, &steps).await);
    for tag in expect {
        assert!(
            direct.iter().any(|m| m.tag == *tag),
            "reference lacks a '{}' message: {direct:#?}",
            *tag as char
        );
    }
    assert_eq!(
        direct.len(),
        proxied.len(),
        "direct: {direct:#?}\nproxied: {proxied:#?}"
    );
    for (d, p) in direct.iter().zip(&proxied) {
        assert_eq!(d, p, "first difference (direct vs proxied)");
    }
}

#[tokio::test]
async fn simple_multi_statement_and_empty_query() {
    differential(
        vec![
            Send(query("SELECT 1 AS one, 'x'::text AS t; SELECT * FROM items ORDER BY id; SELECT m FROM items WHERE id = 1")),
            Ready(1),
            Send(query("")),
            Ready(1),
            Send(query(";;")),
            Ready(1),
        ],
        b"TDCIZ",
    )
    .await;
}

#[tokio::test]
async fn errors_carry_every_field() {
    differential(
        vec![
            Send(query(
                "INSERT INTO items VALUES (1, 'again', 0, 'ok', NULL)",
            )),
            Ready(1),
            Send(query("SELECT 1/0")),
            Ready(1),
            Send(query("SELEC 1")),
            Ready(1),
            Send(query("SELECT * FROM no_such_table")),
            Ready(1),
            Send(query("INSERT INTO items (id) VALUES (9)")),
            Ready(1),
            Send(query("SELECT 'sad'::mood < 'happy'::mood, 'nope'::mood")),
            Ready(1),
        ],
        b"EZ",
    )
    .await;
}

#[tokio::test]
async fn transaction_status_through_failures() {
    differential(
        vec![
            Send(query("BEGIN")),
            Ready(1),
            Send(query(
                "INSERT INTO items VALUES (10, 'kiwi', 2, 'ok', now())",
            )),
            Ready(1),
            Send(query("SELECT 1/0")),
            Ready(1),
            Send(query("SELECT 1")),
            Ready(1),
            Send(query("ROLLBACK")),
            Ready(1),
            Send(query(
                "BEGIN; SAVEPOINT a; SELECT 1/0; ROLLBACK TO a; SELECT count(*) FROM items; COMMIT",
            )),
            Ready(1),
            Send(query("SELECT count(*) FROM items WHERE id = 10")),
            Ready(1),
            Send(query("COMMIT")),
            Ready(1),
        ],
        b"EZC",
    )
    .await;
}

#[tokio::test]
async fn extended_named_and_unnamed_statements() {
    let int4 = 23;
    differential(
        vec![
            Send(
                [
                    parse(
                        "s1",
                        "SELECT id, name, price FROM items WHERE id >= $1 ORDER BY id",
                        &[int4],
                    ),
                    describe(b'S', "s1"),
                    sync(),
                ]
                .concat(),
            ),
            Ready(1),
            Send(
                [
                    bind("", "s1", &[0], &[Some(b"2")], &[0]),
                    describe(b'P', ""),
                    execute("", 0),
                    sync(),
                ]
                .concat(),
            ),
            Ready(1),
            // Binary results, binary parameter.
            Send(
                [
                    bind("", "s1", &[1], &[Some(&1i32.to_be_bytes())], &[1]),
                    execute("", 0),
                    sync(),
                ]
                .concat(),
            ),
            Ready(1),
            // An unnamed statement with an untyped parameter: Postgres infers it.
            Send(
                [
                    parse("", "SELECT $1 || name FROM items WHERE id = 1", &[]),
                    describe(b'S', ""),
                    bind("", "", &[], &[Some(b"fresh ")], &[]),
                    execute("", 0),
                    sync(),
                ]
                .concat(),
            ),
            Ready(1),
            // Closing, then using what was closed.
            Send([close(b'S', "s1"), sync()].concat()),
            Ready(1),
            Send(
                [
                    bind("", "s1", &[], &[Some(b"1")], &[]),
                    execute("", 0),
                    sync(),
                ]
                .concat(),
            ),
            Ready(1),
            // A duplicate name is an error, as in Postgres.
            Send(
                [
                    parse("dup", "SELECT 1", &[]),
                    parse("dup", "SELECT 2", &[]),
                    sync(),
                ]
                .concat(),
            ),
            Ready(1),
        ],
        b"12tTDCE3",
    )
    .await;
}

#[tokio::test]
async fn portals_with_row_limits_suspend() {
    differential(
        vec![
            Send(query("BEGIN")),
            Ready(1),
            Send(
                [
                    parse(
                        "series",
                        "SELECT g, g * 2 AS twice FROM generate_series(1, 10) g",
                        &[],
                    ),
                    bind("p1", "series", &[], &[], &[1, 0]),
                    describe(b'P', "p1"),
                    execute("p1", 3),
                    execute("p1", 3),
                    execute("p1", 0),
                    close(b'P', "p1"),
                    sync(),
                ]
                .concat(),
            ),
            Ready(1),
            Send(query("COMMIT")),
            Ready(1),
        ],
        b"s3",
    )
    .await;
}

#[tokio::test]
async fn flush_without_sync_and_stray_syncs() {
    differential(
        vec![
            // asyncpg's pattern: Parse + Describe + Flush, answers before any Sync.
            Send(
                [
                    parse("q", "SELECT name FROM items WHERE id = $1", &[]),
                    describe(b'S', "q"),
                    flush(),
                ]
                .concat(),
            ),
            Read(3),
            Send(
                [
                    bind("", "q", &[], &[Some(b"3")], &[]),
                    execute("", 0),
                    sync(),
                ]
                .concat(),
            ),
            Ready(1),
            Send([sync(), sync(), sync()].concat()),
            Ready(3),
        ],
        b"1tTZ",
    )
    .await;
}

#[tokio::test]
async fn an_error_skips_to_the_next_sync() {
    differential(
        vec![
            Send(
                [
                    parse("", "SELECT nonsense FROM", &[]),
                    bind("", "", &[], &[], &[]),
                    execute("", 0),
                    sync(),
                ]
                .concat(),
            ),
            Ready(1),
            Send(
                [
                    parse("", "SELECT 1/$1::int", &[]),
                    bind("", "", &[], &[Some(b"0")], &[]),
                    execute("", 0),
                    parse("", "SELECT 2", &[]),
                    sync(),
                ]
                .concat(),
            ),
            Ready(1),
            Send(query("SELECT 'still fine'")),
            Ready(1),
        ],
        b"ED",
    )
    .await;
}

#[tokio::test]
async fn binary_parameters_and_results() {
    let int8 = 20;
    let text = 25;
    differential(
        vec![
            Send([
                parse("b", "SELECT $1::int8 + 1 AS n, $2::text AS t, at, price, m, ARRAY[id, id] AS arr FROM items ORDER BY id", &[int8, text]),
                bind("", "b", &[1, 0], &[Some(&41i64.to_be_bytes()), Some("héllo".as_bytes())], &[1]),
                execute("", 0),
                bind("", "b", &[1, 0], &[None, None], &[1, 0, 1, 1, 0, 1]),
                execute("", 0),
                sync(),
            ]
            .concat()),
            Ready(1),
        ],
        b"2D",
    )
    .await;
}

#[tokio::test]
async fn copy_in_out_and_fail() {
    differential(
        vec![
            Send(query("COPY items (id, name, price) FROM STDIN")),
            Read(1),
            Send([copy_data(b"20\tplum\t3.50\n21\tlime\t\\N\n"), copy_data(b"22\tyuzu\t7\n"), copy_done()].concat()),
            Ready(1),
            Send(query("COPY (SELECT id, name, price FROM items ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER)")),
            Ready(1),
            Send(query("COPY items (id, name) FROM STDIN")),
            Read(1),
            Send([copy_data(b"30\tnever\n"), copy_fail("client changed its mind")].concat()),
            Ready(1),
            Send(query("COPY (SELECT * FROM items ORDER BY id) TO STDOUT (FORMAT binary)")),
            Ready(1),
            Send(query("SELECT count(*) FROM items")),
            Ready(1),
        ],
        b"GHdcE",
    )
    .await;
}

#[tokio::test]
async fn notices_warnings_and_notifications() {
    differential(
        vec![
            Send(query("DO $$ BEGIN RAISE NOTICE 'hello %', 42; RAISE WARNING 'careful' USING HINT = 'mind the gap'; END $$")),
            Ready(1),
            Send(query("DROP TABLE IF EXISTS no_such_table")),
            Ready(1),
            Send(query("LISTEN ch; NOTIFY ch, 'first'; SELECT pg_notify('ch', 'second')")),
            Ready(1),
            Send(query("BEGIN; NOTIFY ch, 'after commit'; COMMIT")),
            Ready(1),
            Send(query("UNLISTEN *")),
            Ready(1),
        ],
        b"NA",
    )
    .await;
}

#[tokio::test]
async fn settings_are_reported_as_postgres_reports_them() {
    differential(
        vec![
            Send(query("SET TimeZone = 'America/New_York'; SELECT at FROM items WHERE id = 1")),
            Ready(1),
            Send(query("SET DateStyle = 'Postgres, MDY'; SET IntervalStyle = 'postgres_verbose'; SELECT at, interval '1 day 2 hours' FROM items WHERE id = 1")),
            Ready(1),
            Send(query("SET application_name = 'renamed'; RESET ALL")),
            Ready(1),
        ],
        b"SD",
    )
    .await;
}

#[tokio::test]
async fn large_rows_stream_through() {
    differential(
        vec![
            Send(query(
                "SELECT repeat('x', 8000000) AS big, g FROM generate_series(1, 3) g",
            )),
            Ready(1),
            Send(
                [
                    parse("", "SELECT $1::text AS echo", &[]),
                    bind("", "", &[], &[Some("y".repeat(3_000_000).as_bytes())], &[]),
                    execute("", 0),
                    sync(),
                ]
                .concat(),
            ),
            Ready(1),
        ],
        b"D",
    )
    .await;
}

#[tokio::test]
async fn function_call_protocol() {
    // int4pl (OID 177) through the legacy FunctionCall message.
    let mut body = 177u32.to_be_bytes().to_vec();
    body.extend(1u16.to_be_bytes());
    body.extend(1i16.to_be_bytes());
    body.extend(2u16.to_be_bytes());
    for n in [40i32, 2] {
        body.extend(4i32.to_be_bytes());
        body.extend(n.to_be_bytes());
    }
    body.extend(1i16.to_be_bytes());
    differential(
        vec![
            Send(message(b'F', &body)),
            Ready(1),
            Send(query("SELECT 1")),
            Ready(1),
        ],
        b"V",
    )
    .await;
}

#[tokio::test]
async fn unknown_message_types_end_the_session_as_postgres_does() {
    differential(vec![Send(message(b'z', b"junk")), Drain], b"E").await;
}
