//! The `thermocline` command as a user runs it: configuration errors exit 2
//! with one line naming the key; `serve --embedded-postgres` works on its
//! own and stops cleanly on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn thermocline() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_thermocline"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("THERMOCLINE_")) {
        cmd.env_remove(key);
    }
    cmd
}

fn assert_config_error(cmd: &mut Command, key: &str) {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(key), "names {key}: {stderr}");
}

#[test]
fn configuration_errors_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "listen = 5\n").unwrap();
    assert_config_error(
        thermocline().args(["serve", "--config"]).arg(&file),
        "`listen`",
    );
    std::fs::write(&file, "shutdown_timout = \"5s\"\n").unwrap();
    assert_config_error(
        thermocline().args(["check-config", "--config"]).arg(&file),
        "`shutdown_timout`",
    );
    assert_config_error(
        thermocline()
            .arg("check-config")
            .env("THERMOCLINE_ADMIN_LISTEN", "nowhere"),
        "THERMOCLINE_ADMIN_LISTEN",
    );
    assert_config_error(
        thermocline().arg("check-config").env(
            "THERMOCLINE_POSTGRES_URL",
            "postgres://x/?sslmode=sometimes",
        ),
        "`postgres_url`",
    );
    // No Postgres at all: say how to fix it.
    assert_config_error(thermocline().arg("serve"), "--embedded-postgres");

    std::fs::write(
        &file,
        "listen = \"127.0.0.1:7000\"\npostgres_url = \"postgres://db:5432/app\"\n[tls]\n",
    )
    .unwrap();
    let out = thermocline()
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Finds `key=value` in a log line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!("{key}="))? + key.len() + 1;
    line[start..].split_whitespace().next()
}

#[test]
fn serve_with_embedded_postgres_then_sigterm() {
    let mut child = thermocline()
        .args([
            "serve",
            "--embedded-postgres",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut listen, mut admin, mut data_dir) = (None, None, None);
    for line in lines.by_ref() {
        let line = line.unwrap();
        let plain: String = strip_ansi(&line);
        if plain.contains("embedded Postgres") {
            data_dir = field(&plain, "data_dir").map(String::from);
        }
        if plain.contains("admin endpoint") {
            admin = field(&plain, "addr").map(String::from);
        }
        if plain.contains("thermocline is serving") {
            listen = field(&plain, "listen").map(String::from);
            break;
        }
    }
    let (listen, admin, data_dir) = (
        listen.expect("serving"),
        admin.expect("admin"),
        data_dir.expect("embedded"),
    );
    let port = listen.rsplit(':').next().unwrap();
    let out = Command::new("psql")
        .args([
            "-X",
            "-A",
            "-t",
            "-h",
            "127.0.0.1",
            "-p",
            port,
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            "SELECT 40 + 2",
        ])
        .env("PGSSLMODE", "disable")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "42",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(http_get(&admin, "/health").starts_with("HTTP/1.1 200"));
    assert!(http_get(&admin, "/ready").starts_with("HTTP/1.1 200"));
    // /metrics is Prometheus text, and counts the statement just relayed.
    let metrics = http_get(&admin, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    let body = metrics.split("\r\n\r\n").nth(1).unwrap_or_default();
    for line in body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (name, value) = line.rsplit_once(' ').expect("name value");
        assert!(value.parse::<f64>().is_ok(), "{line}");
        assert!(name.starts_with("thermocline_"), "{line}");
    }
    let relayed = body
        .lines()
        .find(|l| l.starts_with("thermocline_statements_total{route=\"relay\"}"))
        .and_then(|l| l.rsplit_once(' '))
        .map(|(_, v)| v.parse::<u64>().unwrap())
        .expect("relay counter");
    assert!(relayed >= 1, "{body}");

    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let drain = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    let status = wait_timeout(&mut child, Duration::from_secs(30)).expect("exits after SIGTERM");
    assert!(status.success(), "{:?}", drain.join().unwrap());
    // The private Postgres was stopped and its directory removed.
    assert!(
        !std::path::Path::new(&data_dir).exists(),
        "{data_dir} removed"
    );
}

fn wait_timeout(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The README's first command: `thermocline demo` loads, tiers and serves a
/// sample table; a federated count sees every row; SIGINT stops it cleanly.
#[test]
fn demo_serves_a_tiered_sample() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = thermocline()
        .args([
            "demo",
            "--rows",
            "20000",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let drain_err = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let mut printed = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let done = line.contains("Stop with Ctrl-C");
        printed.push(line);
        if done {
            break;
        }
    }
    let printed = printed.join("\n");
    if !printed.contains(&format!("port={port}")) {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "demo printed:\n{printed}\n{}",
            drain_err.join().unwrap().join("\n")
        );
    }
    let psql = |sql: &str| {
        let out = Command::new("psql")
            .args(["-X", "-A", "-t", "-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-c", sql])
            .env("PGSSLMODE", "disable")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(
        psql("SELECT count(*), count(DISTINCT id) FROM orders"),
        "20000|20000"
    );
    let plan = psql("EXPLAIN SELECT count(*) FROM orders");
    assert!(plan.contains("Iceberg: public.orders snapshot"), "{plan}");
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = wait_timeout(&mut child, Duration::from_secs(30)).expect("exits after SIGINT");
    assert!(status.success(), "{:?}", drain_err.join().unwrap());
}
