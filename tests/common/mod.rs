//! Test harness: one throwaway Postgres per test binary (initdb into a temp
//! dir, random port), a fresh database per test, and thermocline started in
//! process on 127.0.0.1:0 in front of it.
#![allow(dead_code)]

pub mod tiered;
pub mod wire;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use thermocline::Config;
use thermocline::backend::embedded::{EmbeddedOptions, EmbeddedPostgres};
use thermocline::backend::target::BackendTarget;
use tokio::sync::oneshot;

static PG: OnceLock<EmbeddedPostgres> = OnceLock::new();

/// The Postgres shared by this test binary.
pub fn pg() -> &'static EmbeddedPostgres {
    PG.get_or_init(|| {
        let options = EmbeddedOptions {
            no_fsync: true,
            ..Default::default()
        };
        EmbeddedPostgres::start(options).expect("start the test Postgres")
    })
}

/// A superuser connection to the test Postgres.
pub async fn admin(dbname: &str) -> tokio_postgres::Client {
    let pg = pg();
    let (client, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(pg.port())
        .user("postgres")
        .dbname(dbname)
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect to the test Postgres");
    tokio::spawn(conn);
    client
}

/// The one value `sql` returns, asked as the superuser in `dbname`.
pub async fn value<T: tokio_postgres::types::FromSqlOwned>(dbname: &str, sql: &str) -> T {
    admin(dbname)
        .await
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0)
}

/// Creates an empty database with a name unique in this binary.
pub async fn fresh_db(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    admin("postgres")
        .await
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .expect("create database");
    name
}

/// thermocline serving in this process until dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    /// Starts thermocline in front of the test Postgres.
    pub async fn start() -> Proxy {
        Self::start_with(|_| {}).await
    }

    /// Starts thermocline with the config adjusted by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Proxy {
        let mut config = Config::default();
        config.postgres = Some(BackendTarget::parse(&pg().url()).unwrap());
        config.admin_listen = None;
        adjust(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let done = tokio::spawn(async move {
            thermocline::run(listener, config, async {
                let _ = stopped.await;
            })
            .await
            .expect("thermocline runs");
        });
        Proxy {
            addr,
            stop: Some(stop),
            done: Some(done),
        }
    }

    /// Begins a graceful shutdown (as SIGTERM does) and returns a handle
    /// that completes when the server has stopped.
    pub fn shutdown(&mut self) -> tokio::task::JoinHandle<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.done.take().expect("not shut down twice")
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A tokio-postgres client connected to `port` (direct or through thermocline).
pub async fn client(port: u16, user: &str, dbname: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user(user)
        .dbname(dbname)
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
}

/// `program`, to be run with the libpq environment naming `port` and
/// database `db`, as the superuser.
pub fn libpq_command(program: &str, port: u16, db: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(program);
    command
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", port.to_string())
        .env("PGUSER", "postgres")
        .env("PGDATABASE", db)
        .env("PGSSLMODE", "disable");
    command
}

/// Runs one real client (tests/clients/run.sh CLIENT) against `port` and
/// database `db`, and returns its transcript.
pub async fn transcript(client: &str, port: u16, db: &str) -> String {
    let out = libpq_command("bash", port, db)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/run.sh"))
        .arg(client)
        .output()
        .await
        .expect("run the client");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{client} failed against port {port}:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Fails, showing where, unless two transcripts of `client` are identical.
pub fn assert_same_transcript(client: &str, want: &str, got: &str) {
    if got == want {
        return;
    }
    let first = want
        .lines()
        .zip(got.lines())
        .position(|(a, b)| a != b)
        .unwrap_or(0);
    let window = |t: &str| {
        t.lines()
            .skip(first.saturating_sub(3))
            .take(8)
            .collect::<Vec<_>>()
            .join("\n")
    };
    panic!(
        "{client}: transcripts differ from line {}\n--- expected\n{}\n--- through thermocline\n{}",
        first + 1,
        window(want),
        window(got)
    );
}

/// `thermocline serve --config FILE` as a process of its own, its stderr
/// collected line by line.
pub struct ServeProcess {
    child: std::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    /// Every line read so far.
    pub log: Vec<String>,
}

impl ServeProcess {
    /// Starts it with `RUST_LOG` set to `rust_log`, or unset when `None`.
    pub fn start(config_file: &std::path::Path, rust_log: Option<&str>) -> ServeProcess {
        Self::start_with_env(config_file, rust_log, &[])
    }

    /// As [`ServeProcess::start`], with more environment variables.
    pub fn start_with_env(
        config_file: &std::path::Path,
        rust_log: Option<&str>,
        env: &[(&str, &str)],
    ) -> ServeProcess {
        use std::io::BufRead;
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_thermocline"));
        cmd.args(["serve", "--config"])
            .arg(config_file)
            .envs(env.iter().copied())
            .stderr(std::process::Stdio::piped());
        match rust_log {
            Some(level) => cmd.env("RUST_LOG", level),
            None => cmd.env_remove("RUST_LOG"),
        };
        let mut child = cmd.spawn().expect("start thermocline");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        let stderr = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        ServeProcess {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Reads lines until one contains `what` (60 s at most).
    pub async fn wait_for(&mut self, what: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            match tokio::time::timeout(std::time::Duration::from_secs(1), self.lines.recv()).await {
                Ok(Some(line)) => {
                    let found = line.contains(what);
                    self.log.push(line);
                    if found {
                        return;
                    }
                }
                Ok(None) => panic!("thermocline exited before {what:?}: {:#?}", self.log),
                Err(_) => {}
            }
        }
        panic!("no {what:?} within 60 s: {:#?}", self.log);
    }

    pub fn signal(&self, signal: i32) {
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Stops it with SIGTERM and returns every line it wrote.
    pub fn stop(mut self) -> Vec<String> {
        self.signal(libc::SIGTERM);
        let _ = self.child.wait();
        while let Ok(line) = self.lines.try_recv() {
            self.log.push(line);
        }
        std::mem::take(&mut self.log)
    }
}

impl Drop for ServeProcess {
    /// A test that fails before stopping it leaves no server behind (cargo
    /// would wait for it, as it holds the test's output).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
