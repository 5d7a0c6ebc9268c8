//! A private Postgres started from the machine's PostgreSQL binaries:
//! `thermocline serve --embedded-postgres`, and the test harness.
//!
//! initdb runs into a data directory thermocline owns; the server listens on
//! 127.0.0.1 at a free port and is stopped when this value is dropped. If
//! thermocline dies without stopping it, the kernel stops it too (it is
//! started with a parent-death signal from a thread that lives as long as it).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "no PostgreSQL server binaries found (looked for `postgres` and `initdb` via pg_config, \
         in /usr/lib/postgresql/*/bin and on PATH); install PostgreSQL (Debian: apt-get install postgresql)"
    )]
    NoBinaries,
    #[error(
        "Postgres refuses to run as root and there is no `postgres` user to run it as; \
         create one (useradd postgres) or run thermocline as another user"
    )]
    NoUser,
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{step} failed: {output}")]
    Command { step: String, output: String },
    #[error("embedded Postgres did not start within {0:?}; its log: {1}")]
    NotReady(Duration, String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> EmbeddedError {
    let what = what.into();
    move |source| EmbeddedError::Io { what, source }
}

/// How to start the private Postgres.
#[derive(Debug, Clone, Default)]
pub struct EmbeddedOptions {
    /// Keep the data here (created and initialised if empty); a temporary
    /// directory, removed on stop, when unset.
    pub data_dir: Option<PathBuf>,
    /// Where `postgres` and `initdb` are; found automatically when unset.
    pub bin_dir: Option<PathBuf>,
    /// Turn fsync off (throwaway test clusters).
    pub no_fsync: bool,
    /// Extra `name=value` server settings.
    pub settings: Vec<String>,
    /// Listen on this port instead of a free one.
    pub port: Option<u16>,
}

/// A running private Postgres.
pub struct EmbeddedPostgres {
    pid: i32,
    port: u16,
    bin_dir: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    keeper: Option<std::thread::JoinHandle<()>>,
    _temp: Option<tempfile::TempDir>,
}

/// The OS user Postgres runs as when thermocline runs as root.
#[derive(Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

fn run_as() -> Result<Option<RunAs>, EmbeddedError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    // SAFETY: the name is a valid C string; the returned record is read
    // before any other call that could overwrite it.
    let pw = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
    if pw.is_null() {
        return Err(EmbeddedError::NoUser);
    }
    // SAFETY: pw is non-null and points to a valid passwd record.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(Some(RunAs { uid, gid }))
}

fn chown(path: &Path, who: Option<RunAs>) -> Result<(), EmbeddedError> {
    if let Some(who) = who {
        std::os::unix::fs::chown(path, Some(who.uid), Some(who.gid))
            .map_err(io_err(format!("chown {}", path.display())))?;
    }
    Ok(())
}

/// Finds the directory holding `postgres` and `initdb`.
pub fn find_bin_dir() -> Option<PathBuf> {
    let has = |dir: &Path| dir.join("postgres").is_file() && dir.join("initdb").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has(&dir) {
            return Some(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, dir)| has(dir))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Some(dir);
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|dir| has(dir))
}

fn free_port() -> Result<u16, EmbeddedError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io_err("finding a free port"))?;
    Ok(l.local_addr()
        .map_err(io_err("finding a free port"))?
        .port())
}

fn run(step: &str, cmd: &mut Command) -> Result<(), EmbeddedError> {
    let out = cmd.output().map_err(io_err(step.to_string()))?;
    if out.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    Err(EmbeddedError::Command {
        step: step.into(),
        output: text.trim().replace('\n', " | "),
    })
}

fn as_user(cmd: &mut Command, who: Option<RunAs>) -> &mut Command {
    if let Some(who) = who {
        cmd.uid(who.uid).gid(who.gid).env("HOME", "/tmp");
    }
    cmd
}

const TEMP_PREFIX: &str = "thermocline-pg-";

impl EmbeddedPostgres {
    /// Initialises (if needed) and starts the server; blocks until it
    /// accepts connections.
    pub fn start(options: EmbeddedOptions) -> Result<Self, EmbeddedError> {
        let bin_dir = match options.bin_dir.clone() {
            Some(dir) => dir,
            None => find_bin_dir().ok_or(EmbeddedError::NoBinaries)?,
        };
        let who = run_as()?;
        // A private runtime directory holds the socket (and, for a temporary
        // cluster, the data and the log); it goes away on stop.
        remove_stale_temp_dirs();
        let run_dir = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempdir()
            .map_err(io_err("creating a temporary directory"))?;
        let root = run_dir.path().to_path_buf();
        chown(&root, who)?;
        let socket_dir = root.clone();
        let (data_dir, log_path) = match &options.data_dir {
            Some(dir) => (dir.clone(), dir.join("postgres.log")),
            None => (root.join("data"), root.join("postgres.log")),
        };
        let temp = Some(run_dir);

        if !data_dir.join("PG_VERSION").is_file() {
            std::fs::create_dir_all(&data_dir)
                .map_err(io_err(format!("creating {}", data_dir.display())))?;
            std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io_err("setting data directory permissions"))?;
            chown(&data_dir, who)?;
            let mut initdb = Command::new(bin_dir.join("initdb"));
            initdb.arg("-D").arg(&data_dir).args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
            ]);
            if options.no_fsync {
                initdb.arg("--no-sync");
            }
            run("initdb", as_user(&mut initdb, who))?;
        }

        let mut last_error = None;
        let attempts = if options.port.is_some() { 1 } else { 5 };
        for _ in 0..attempts {
            let port = match options.port {
                Some(port) => port,
                None => free_port()?,
            };
            match Self::launch(
                &bin_dir,
                &data_dir,
                &socket_dir,
                &log_path,
                port,
                &options,
                who,
            ) {
                Ok((pid, keeper)) => {
                    let mut pg = EmbeddedPostgres {
                        pid,
                        port,
                        bin_dir: bin_dir.clone(),
                        data_dir: data_dir.clone(),
                        socket_dir: socket_dir.clone(),
                        keeper: Some(keeper),
                        _temp: None,
                    };
                    match pg.wait_ready(&log_path) {
                        Ok(()) => {
                            pg._temp = temp;
                            tracing::info!(
                                port,
                                data_dir = %data_dir.display(),
                                "started embedded Postgres (stopped when thermocline exits)"
                            );
                            return Ok(pg);
                        }
                        Err(e) => {
                            pg.stop();
                            last_error = Some(e);
                        }
                    }
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or(EmbeddedError::NoBinaries))
    }

    fn launch(
        bin_dir: &Path,
        data_dir: &Path,
        socket_dir: &Path,
        log_path: &Path,
        port: u16,
        options: &EmbeddedOptions,
        who: Option<RunAs>,
    ) -> Result<(i32, std::thread::JoinHandle<()>), EmbeddedError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(io_err(format!("opening {}", log_path.display())))?;
        let log2 = log.try_clone().map_err(io_err("opening the log"))?;
        let mut cmd = Command::new(bin_dir.join("postgres"));
        cmd.arg("-D")
            .arg(data_dir)
            .arg("-p")
            .arg(port.to_string())
            .arg("-c")
            .arg("listen_addresses=127.0.0.1")
            .arg("-c")
            .arg(format!("unix_socket_directories={}", socket_dir.display()))
            .arg("-c")
            .arg("max_connections=300");
        if options.no_fsync {
            cmd.args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]);
        }
        for setting in &options.settings {
            cmd.arg("-c").arg(setting);
        }
        cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
        as_user(&mut cmd, who);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        // The parent-death signal fires when the spawning *thread* ends, so
        // the spawn happens on a thread that lives exactly as long as Postgres.
        let (tx, rx) = std::sync::mpsc::channel();
        let keeper = std::thread::Builder::new()
            .name(format!("embedded-postgres-{port}"))
            .spawn(move || match cmd.spawn() {
                Ok(mut child) => {
                    let _ = tx.send(Ok(child.id() as i32));
                    let _ = child.wait();
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            })
            .map_err(io_err("starting the embedded Postgres keeper thread"))?;
        let pid = rx
            .recv()
            .map_err(|_| EmbeddedError::Command {
                step: "postgres".into(),
                output: "did not start".into(),
            })?
            .map_err(io_err("starting postgres"))?;
        Ok((pid, keeper))
    }

    fn wait_ready(&self, log_path: &Path) -> Result<(), EmbeddedError> {
        let limit = Duration::from_secs(60);
        let started = Instant::now();
        while started.elapsed() < limit {
            let exited = self.keeper.as_ref().is_none_or(|k| k.is_finished());
            if exited {
                break;
            }
            let ready = Command::new(self.bin_dir.join("pg_isready"))
                .args([
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                ])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        Err(EmbeddedError::NotReady(
            limit,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
        ))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// `postgres_url` for this server (superuser `postgres`, trust auth).
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    /// Fast shutdown; waits for the server to exit.
    pub fn stop(&mut self) {
        let Some(keeper) = self.keeper.take() else {
            return;
        };
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.pid, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !keeper.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !keeper.is_finished() {
            // SAFETY: as above.
            unsafe { libc::kill(self.pid, libc::SIGQUIT) };
        }
        let _ = keeper.join();
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Removes temporary clusters left by processes that were killed before
/// they could clean up (their Postgres died with them).
fn remove_stale_temp_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_ours = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(TEMP_PREFIX));
        if !is_ours {
            continue;
        }
        let pid_file = path.join("data").join("postmaster.pid");
        let stale = match std::fs::read_to_string(&pid_file) {
            Ok(text) => text
                .lines()
                .next()
                .and_then(|l| l.trim().parse::<i32>().ok())
                // A negative pid is a standalone backend's, such as initdb's
                // bootstrap run in a cluster being created right now.
                // SAFETY: signal 0 only checks that the process exists.
                .is_some_and(|pid| unsafe { libc::kill(pid.abs(), 0) } != 0),
            // No server ever ran, or it stopped: stale once old enough not
            // to be a cluster another process is initialising right now.
            Err(_) => entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(3600)),
        };
        if stale {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}
