//! Configuration: one TOML file, every key overridable by a `THERMOCLINE_*`
//! environment variable (`tls.cert` → `THERMOCLINE_TLS_CERT`).
//!
//! Each key is read and checked once, at start; an error names the key and
//! where its value came from. The keys and their defaults are documented in
//! the README ("Configuration").

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::backend::target::{BackendTarget, TargetError};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:6432";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9187";
/// Postgres's own limit on a frontend message (`PQ_LARGE_MESSAGE_LIMIT`).
const DEFAULT_MAX_MESSAGE_SIZE: u64 = 0x3fff_ffff;

/// The server's whole configuration, checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Where `/health` and `/ready` are served; `None` when turned off.
    pub admin_listen: Option<SocketAddr>,
    /// The Postgres behind thermocline. `None` with `embedded_postgres`.
    pub postgres: Option<BackendTarget>,
    /// Start a private Postgres from the machine's binaries.
    pub embedded_postgres: bool,
    /// Data directory of the embedded Postgres (a temporary one when unset).
    pub embedded_postgres_dir: Option<PathBuf>,
    /// How long opening a connection to Postgres may take.
    pub connect_timeout: Duration,
    /// On SIGTERM, how long running statements may take before their
    /// sessions are closed.
    pub shutdown_timeout: Duration,
    /// The longest frontend message accepted, in bytes.
    pub max_message_size: u32,
    pub log_format: LogFormat,
    /// A `tracing` filter such as `info` or `thermocline=debug`.
    pub log_level: String,
    /// Certificate and key for TLS toward clients (PEM files).
    pub tls: Option<TlsFiles>,
    /// The directory of tier definitions (one TOML file per tiered table).
    pub catalog_dir: Option<PathBuf>,
    /// The lake: warehouse (a directory or an S3 location), the SQL
    /// catalog's file, S3 settings. `None`: no warehouse configured.
    pub lake: Option<crate::lake::LakeConfig>,
    /// How often `serve` runs the mover; `None`: never (use `tier run`).
    pub tier_interval: Option<Duration>,
    /// How often `serve` maintains the lake (snapshot expiry, orphan
    /// files); `None`: never (use `tier maintain`).
    pub maintain_interval: Option<Duration>,
    /// Memory all federated statements together may use, in bytes.
    pub executor_memory: u64,
    /// Memory one federated statement may use; `None`: half of `executor_memory`.
    pub statement_memory: Option<u64>,
    /// Bytes of cold partial results kept for reuse; 0 turns the cache off.
    pub cache_memory: u64,
    /// How old a whole cached answer may be when a session does not say
    /// (`thermocline.result_cache_ttl`); `None`: not used.
    pub result_cache_ttl: Option<Duration>,
    /// Client sessions served at once; 0: no limit.
    pub max_client_connections: usize,
    /// Federated statements run at once; the rest wait in a queue. 0: no limit.
    pub max_federated_statements: usize,
    /// How long a federated statement may wait in that queue before it
    /// fails with 53000.
    pub federated_queue_timeout: Duration,
    /// A session idle outside a transaction this long is closed (57P05);
    /// `None`: never.
    pub idle_session_timeout: Option<Duration>,
    /// Statements that take longer are logged at warn level; `None`: none.
    pub slow_statement_threshold: Option<Duration>,
    /// Where this configuration was read from, to read it again on SIGHUP.
    pub source: Option<ConfigSource>,
}

/// The file and command-line values a configuration was loaded from.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub file: Option<PathBuf>,
    pub flags: Vec<(&'static str, String)>,
}

impl ConfigSource {
    /// Loads the configuration again, with the current environment.
    pub fn reload(&self) -> Result<Config, ConfigError> {
        Config::load_with_flags(self.file.as_deref(), self.flags.clone())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("valid default"),
            admin_listen: Some(DEFAULT_ADMIN_LISTEN.parse().expect("valid default")),
            postgres: None,
            embedded_postgres: false,
            embedded_postgres_dir: None,
            connect_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(30),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE as u32,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            tls: None,
            catalog_dir: None,
            lake: None,
            tier_interval: Some(Duration::from_secs(300)),
            maintain_interval: Some(Duration::from_secs(3600)),
            executor_memory: 1 << 30,
            cache_memory: 256 << 20,
            result_cache_ttl: None,
            statement_memory: None,
            max_client_connections: 1000,
            max_federated_statements: 8,
            federated_queue_timeout: Duration::from_secs(30),
            idle_session_timeout: None,
            slow_statement_threshold: Some(Duration::from_secs(1)),
            source: None,
        }
    }
}

/// A configuration error: which key, where its value came from, what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config key `{key}` ({origin}): {message}")]
    Key {
        key: String,
        origin: String,
        message: String,
    },
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone)]
enum Origin {
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File(p) => write!(f, "in {}", p.display()),
            Origin::Env(v) => write!(f, "from environment variable {v}"),
            Origin::Flag(v) => write!(f, "from command-line flag --{v}"),
        }
    }
}

/// The environment variable that overrides a key.
pub fn env_name(key: &str) -> String {
    format!("THERMOCLINE_{}", key.replace('.', "_").to_ascii_uppercase())
}

struct Loader {
    table: toml::Table,
    file: PathBuf,
    env: HashMap<String, String>,
    flags: HashMap<&'static str, String>,
}

impl Loader {
    /// The raw value of a key: the environment first, then the file.
    fn take(&mut self, key: &str) -> Option<(toml::Value, Origin)> {
        let from_file = match key.split_once('.') {
            Some((section, name)) => match self.table.get_mut(section) {
                Some(toml::Value::Table(t)) => t.remove(name),
                _ => None,
            },
            None => self.table.remove(key),
        };
        if let Some(value) = self.flags.get(key) {
            return Some((
                toml::Value::String(value.clone()),
                Origin::Flag(key.replace('_', "-")),
            ));
        }
        let var = env_name(key);
        if let Some(value) = self.env.get(&var) {
            return Some((toml::Value::String(value.clone()), Origin::Env(var)));
        }
        from_file.map(|v| (v, Origin::File(self.file.clone())))
    }

    fn error(key: &str, origin: &Origin, message: impl Into<String>) -> ConfigError {
        ConfigError::Key {
            key: key.into(),
            origin: origin.to_string(),
            message: message.into(),
        }
    }

    fn string(&mut self, key: &str) -> Result<Option<(String, Origin)>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some((toml::Value::String(s), origin)) => Ok(Some((s, origin))),
            Some((other, origin)) => Err(Self::error(
                key,
                &origin,
                format!("expected a string, found {}", other.type_str()),
            )),
        }
    }

    fn parsed<T>(
        &mut self,
        key: &str,
        parse: impl FnOnce(&toml::Value) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some((value, origin)) => parse(&value)
                .map(Some)
                .map_err(|m| Self::error(key, &origin, m)),
        }
    }

    fn leftover_keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        for (k, v) in &self.table {
            match v {
                toml::Value::Table(t) if k == "tls" || k == "lake" => {
                    keys.extend(t.keys().map(|n| format!("{k}.{n}")))
                }
                _ => keys.push(k.clone()),
            }
        }
        keys
    }
}

fn parse_bool(v: &toml::Value) -> Result<bool, String> {
    match v {
        toml::Value::Boolean(b) => Ok(*b),
        toml::Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "on" | "yes" | "1" => Ok(true),
            "false" | "off" | "no" | "0" => Ok(false),
            _ => Err(format!("expected true or false, found {s:?}")),
        },
        other => Err(format!(
            "expected true or false, found {}",
            other.type_str()
        )),
    }
}

fn parse_duration(v: &toml::Value) -> Result<Duration, String> {
    match v {
        toml::Value::String(s) => humantime::parse_duration(s.trim()).map_err(|e| {
            format!("expected a duration such as \"30s\" or \"5m\", found {s:?} ({e})")
        }),
        other => Err(format!(
            "expected a duration such as \"30s\", found {}",
            other.type_str()
        )),
    }
}

/// A duration as a session may set it: `30s`, `30 seconds`, `5 min`
/// (`None` when it is not one, or zero).
pub(crate) fn parse_interval(v: &str) -> Option<Duration> {
    let mut compact = String::with_capacity(v.len());
    let mut last_digit = false;
    for c in v.trim().chars() {
        if c == ' ' && last_digit {
            continue;
        }
        last_digit = c.is_ascii_digit();
        compact.push(c);
    }
    humantime::parse_duration(&compact)
        .ok()
        .filter(|d| !d.is_zero())
}

/// A duration, or `"off"` (also `"0"`) for none.
fn parse_optional_duration(v: &toml::Value) -> Result<Option<Duration>, String> {
    match v {
        toml::Value::String(s) if matches!(s.trim(), "off" | "0" | "") => Ok(None),
        toml::Value::Integer(0) => Ok(None),
        other => parse_duration(other).map(|d| (!d.is_zero()).then_some(d)),
    }
}

/// A count such as a number of connections; 0 means no limit.
fn parse_count(v: &toml::Value) -> Result<usize, String> {
    match v {
        toml::Value::Integer(n) if *n >= 0 => Ok(*n as usize),
        toml::Value::String(s) => s
            .trim()
            .parse::<usize>()
            .map_err(|_| format!("expected a whole number (0 for no limit), found {s:?}")),
        other => Err(format!(
            "expected a whole number (0 for no limit), found {}",
            other.type_str()
        )),
    }
}

/// Sizes: a number of bytes, or a string with a unit (`"64MB"`, `"1GB"`).
fn parse_size(v: &toml::Value) -> Result<u64, String> {
    match v {
        toml::Value::Integer(n) if *n > 0 => Ok(*n as u64),
        toml::Value::String(s) => parse_size_text(s),
        other => Err(format!("expected a size such as \"64MB\", found {}", other)),
    }
}

/// A size written with an optional unit: `64MB`, `1GB`, `4096`.
pub fn parse_size_text(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("expected a size such as \"64MB\", found {text:?}"))?;
    let factor: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" | "KIB" => 1 << 10,
        "MB" | "MIB" => 1 << 20,
        "GB" | "GIB" => 1 << 30,
        _ => {
            return Err(format!(
                "unknown size unit in {text:?} (use B, kB, MB or GB)"
            ));
        }
    };
    number
        .checked_mul(factor)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("size {text:?} is out of range"))
}

fn parse_addr(v: &toml::Value) -> Result<SocketAddr, String> {
    match v {
        toml::Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("expected an address such as \"127.0.0.1:6432\", found {s:?}")),
        other => Err(format!(
            "expected an address such as \"127.0.0.1:6432\", found {}",
            other.type_str()
        )),
    }
}

impl Config {
    /// Reads the file (if any) and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_flags(file, Vec::new())
    }

    /// Reads the file (if any), the process environment and command-line
    /// values (key, value), which win over both.
    pub fn load_with_flags(
        file: Option<&Path>,
        flags: Vec<(&'static str, String)>,
    ) -> Result<Self, ConfigError> {
        let source = ConfigSource {
            file: file.map(Path::to_path_buf),
            flags: flags.clone(),
        };
        let mut c = Self::load_from(
            file,
            std::env::vars().filter(|(k, _)| k.starts_with("THERMOCLINE_")),
            flags,
        )?;
        c.source = Some(source);
        Ok(c)
    }

    /// Reads the file (if any) with the given `THERMOCLINE_*` variables and flags.
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: Vec<(&'static str, String)>,
    ) -> Result<Self, ConfigError> {
        let (table, file) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                let table: toml::Table =
                    text.parse()
                        .map_err(|e: toml::de::Error| ConfigError::Syntax {
                            path: path.to_path_buf(),
                            message: one_line(&e),
                        })?;
                (table, path.to_path_buf())
            }
            None => (toml::Table::new(), PathBuf::from("<no config file>")),
        };
        let mut l = Loader {
            table,
            file,
            env: env.into_iter().collect(),
            flags: flags.into_iter().collect(),
        };
        let mut c = Config::default();

        if let Some(addr) = l.parsed("listen", parse_addr)? {
            c.listen = addr;
        }
        if let Some((s, origin)) = l.string("admin_listen")? {
            c.admin_listen = match s.trim() {
                "" | "off" => None,
                addr => Some(
                    parse_addr(&toml::Value::String(addr.into()))
                        .map_err(|m| Loader::error("admin_listen", &origin, m))?,
                ),
            };
        }
        if let Some((url, origin)) = l.string("postgres_url")?
            && !url.trim().is_empty()
        {
            let target = BackendTarget::parse(url.trim())
                .map_err(|e: TargetError| Loader::error("postgres_url", &origin, e.to_string()))?;
            c.postgres = Some(target);
        }
        if let Some(b) = l.parsed("embedded_postgres", parse_bool)? {
            c.embedded_postgres = b;
        }
        if let Some((dir, _)) = l.string("embedded_postgres_dir")? {
            c.embedded_postgres_dir = (!dir.is_empty()).then(|| PathBuf::from(dir));
        }
        if let Some(d) = l.parsed("connect_timeout", parse_duration)? {
            c.connect_timeout = d;
        }
        if let Some(d) = l.parsed("shutdown_timeout", parse_duration)? {
            c.shutdown_timeout = d;
        }
        if let Some(n) = l.parsed("max_message_size", |v| {
            // "1GB" is Postgres's own limit, one byte less than 2^30.
            let n = match parse_size(v)? {
                n if n == 1 << 30 => DEFAULT_MAX_MESSAGE_SIZE,
                n => n,
            };
            if n > DEFAULT_MAX_MESSAGE_SIZE {
                return Err(format!(
                    "at most {DEFAULT_MAX_MESSAGE_SIZE} bytes (Postgres's own limit)"
                ));
            }
            Ok(n.max(1024) as u32)
        })? {
            c.max_message_size = n;
        }
        if let Some((f, origin)) = l.string("log_format")? {
            c.log_format = match f.trim() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return Err(Loader::error(
                        "log_format",
                        &origin,
                        format!("expected \"text\" or \"json\", found {other:?}"),
                    ));
                }
            };
        }
        if let Some((level, origin)) = l.string("log_level")? {
            tracing_subscriber::EnvFilter::try_new(&level).map_err(|e| {
                Loader::error(
                    "log_level",
                    &origin,
                    format!("invalid filter {level:?}: {e}"),
                )
            })?;
            c.log_level = level;
        }
        let cert = l.string("tls.cert")?;
        let key = l.string("tls.key")?;
        c.tls = match (cert, key) {
            (None, None) => None,
            (Some((cert, _)), Some((key, _))) if cert.is_empty() && key.is_empty() => None,
            (Some((cert, co)), Some((key, ko))) => {
                for (k, path, origin) in [("tls.cert", &cert, &co), ("tls.key", &key, &ko)] {
                    if !Path::new(path).is_file() {
                        return Err(Loader::error(k, origin, format!("no such file {path:?}")));
                    }
                }
                Some(TlsFiles {
                    cert: cert.into(),
                    key: key.into(),
                })
            }
            (Some((_, origin)), None) => {
                return Err(Loader::error(
                    "tls.key",
                    &origin,
                    "tls.cert is set, so tls.key must be too",
                ));
            }
            (None, Some((_, origin))) => {
                return Err(Loader::error(
                    "tls.cert",
                    &origin,
                    "tls.key is set, so tls.cert must be too",
                ));
            }
        };
        if let Some((dir, origin)) = l.string("catalog_dir")?
            && !dir.is_empty()
        {
            if !Path::new(&dir).is_dir() {
                return Err(Loader::error(
                    "catalog_dir",
                    &origin,
                    format!("no such directory {dir:?}"),
                ));
            }
            c.catalog_dir = Some(dir.into());
        }
        let mut rest = None;
        if let Some((kind, origin)) = l.string("lake.catalog")? {
            match kind.trim() {
                "" | "sql" => {}
                "rest" => rest = Some(origin),
                "glue" => {
                    return Err(Loader::error(
                        "lake.catalog",
                        &origin,
                        "the glue catalog is not supported yet; use \"sql\" or \"rest\"",
                    ));
                }
                other => {
                    return Err(Loader::error(
                        "lake.catalog",
                        &origin,
                        format!("expected \"sql\", \"rest\" or \"glue\", found {other:?}"),
                    ));
                }
            }
        }
        let mut lake = crate::lake::LakeConfig::default();
        let uri = l.string("lake.uri")?;
        let token = l.string("lake.token")?.filter(|(t, _)| !t.is_empty());
        if let Some(catalog_origin) = rest {
            let Some((uri, origin)) = uri.filter(|(u, _)| !u.trim().is_empty()) else {
                return Err(Loader::error(
                    "lake.catalog",
                    &catalog_origin,
                    "lake.catalog is \"rest\", so lake.uri must name the catalog's address, e.g. http://127.0.0.1:8181",
                ));
            };
            let uri = uri.trim().trim_end_matches('/').to_string();
            if !uri.starts_with("http://") && !uri.starts_with("https://") {
                return Err(Loader::error(
                    "lake.uri",
                    &origin,
                    format!(
                        "a REST catalog's address starts with http:// or https://, found {uri:?}"
                    ),
                ));
            }
            lake.rest = Some(crate::lake::RestConfig {
                uri,
                token: token.map(|(t, _)| t),
            });
        } else {
            if let Some((_, origin)) = token {
                return Err(Loader::error(
                    "lake.token",
                    &origin,
                    "a token is for a REST catalog; set lake.catalog = \"rest\"",
                ));
            }
            if let Some((uri, _)) = uri {
                let path = uri.strip_prefix("sqlite://").unwrap_or(&uri);
                let path = path.split('?').next().unwrap_or_default();
                lake.catalog_db = (!path.is_empty()).then(|| PathBuf::from(path));
            }
        }
        for (key, prop) in [
            ("lake.s3_endpoint", "s3.endpoint"),
            ("lake.s3_region", "s3.region"),
            ("lake.s3_access_key_id", "s3.access-key-id"),
            ("lake.s3_secret_access_key", "s3.secret-access-key"),
            ("lake.s3_session_token", "s3.session-token"),
        ] {
            if let Some((v, _)) = l.string(key)?
                && !v.is_empty()
            {
                lake.s3.insert(prop.into(), v);
            }
        }
        if let Some(b) = l.parsed("lake.s3_path_style", parse_bool)? {
            lake.s3.insert("s3.path-style-access".into(), b.to_string());
        }
        if let Some((dir, origin)) = l.string("lake.warehouse")? {
            if !crate::lake::is_s3(&dir) && dir.contains("://") && !dir.starts_with("file://") {
                return Err(Loader::error(
                    "lake.warehouse",
                    &origin,
                    format!("expected a directory or an s3:// location, found {dir:?}"),
                ));
            }
            lake.warehouse = dir.strip_prefix("file://").unwrap_or(&dir).to_string();
        }
        c.lake = (!lake.warehouse.is_empty() || lake.rest.is_some()).then_some(lake);
        if let Some(d) = l.parsed("tier_interval", parse_optional_duration)? {
            c.tier_interval = d;
        }
        if let Some(d) = l.parsed("maintain_interval", parse_optional_duration)? {
            c.maintain_interval = d;
        }
        if let Some(n) = l.parsed("executor_memory", |v| {
            let n = parse_size(v)?;
            if n < 16 << 20 {
                return Err("at least 16MB".into());
            }
            Ok(n)
        })? {
            c.executor_memory = n;
        }
        if let Some(n) = l.parsed("statement_memory", |v| {
            let n = parse_size(v)?;
            if n < 8 << 20 {
                return Err("at least 8MB".into());
            }
            Ok(n)
        })? {
            c.statement_memory = Some(n);
        }
        if let Some(n) = l.parsed("cache_memory", |v| match v {
            toml::Value::Integer(0) => Ok(0),
            toml::Value::String(s) if matches!(s.trim(), "0" | "off") => Ok(0),
            v => parse_size(v),
        })? {
            c.cache_memory = n;
        }
        if let Some(d) = l.parsed("result_cache_ttl", parse_optional_duration)? {
            c.result_cache_ttl = d;
        }
        if let Some(n) = l.parsed("max_client_connections", parse_count)? {
            c.max_client_connections = n;
        }
        if let Some(n) = l.parsed("max_federated_statements", parse_count)? {
            c.max_federated_statements = n;
        }
        if let Some(d) = l.parsed("federated_queue_timeout", parse_duration)? {
            c.federated_queue_timeout = d;
        }
        if let Some(d) = l.parsed("idle_session_timeout", parse_optional_duration)? {
            c.idle_session_timeout = d;
        }
        if let Some(d) = l.parsed("slow_statement_threshold", parse_optional_duration)? {
            c.slow_statement_threshold = d;
        }
        if let Some(key) = l.leftover_keys().into_iter().next() {
            return Err(ConfigError::Key {
                key,
                origin: Origin::File(l.file.clone()).to_string(),
                message: "unknown key".into(),
            });
        }
        Ok(c)
    }

    /// The most memory one federated statement may use.
    pub fn statement_memory(&self) -> u64 {
        self.statement_memory
            .unwrap_or(self.executor_memory / 2)
            .min(self.executor_memory)
    }

    /// Checks that the server has a Postgres to talk to.
    pub fn require_backend(&self) -> Result<(), ConfigError> {
        if self.postgres.is_none() && !self.embedded_postgres {
            return Err(ConfigError::Key {
                key: "postgres_url".into(),
                origin: "not set".into(),
                message: format!(
                    "thermocline needs a Postgres: set postgres_url in the config file or {} \
                     (e.g. postgres://127.0.0.1:5432/postgres), or pass --embedded-postgres",
                    env_name("postgres_url")
                ),
            });
        }
        Ok(())
    }
}

fn one_line(e: &toml::de::Error) -> String {
    let location = e
        .span()
        .map(|s| format!(" (at byte {})", s.start))
        .unwrap_or_default();
    format!("invalid TOML: {}{location}", e.message().trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml_text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("thermocline.toml");
        std::fs::write(&path, toml_text).unwrap();
        Config::load_from(
            Some(&path),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            Vec::new(),
        )
    }

    #[test]
    fn defaults_apply() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.admin_listen.unwrap().to_string(), DEFAULT_ADMIN_LISTEN);
        assert!(c.postgres.is_none());
        assert!(c.require_backend().is_err());
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let c = load(
            "listen = \"127.0.0.1:1\"\nshutdown_timeout = \"5s\"\n",
            &[
                ("THERMOCLINE_LISTEN", "0.0.0.0:7000"),
                ("THERMOCLINE_POSTGRES_URL", "postgres://db:5433/app"),
            ],
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:7000");
        assert_eq!(c.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(c.postgres.unwrap().port, 5433);
    }

    #[test]
    fn errors_name_the_key_on_one_line() {
        let e = load("listen = 5\n", &[]).unwrap_err().to_string();
        assert!(e.contains("`listen`") && !e.contains('\n'), "{e}");
        let e = load("", &[("THERMOCLINE_SHUTDOWN_TIMEOUT", "soon")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`shutdown_timeout`") && e.contains("THERMOCLINE_SHUTDOWN_TIMEOUT"),
            "{e}"
        );
        let e = load("lisen = \"x\"\n", &[]).unwrap_err().to_string();
        assert!(e.contains("`lisen`") && e.contains("unknown key"), "{e}");
        let e = load("[tls]\ncert = \"/nonexistent\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls."), "{e}");
        let e = load("listen = [\n", &[]).unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
        let e = load("", &[("THERMOCLINE_POSTGRES_URL", "mysql://x")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`postgres_url`"), "{e}");
    }

    #[test]
    fn sizes_take_units() {
        assert_eq!(
            parse_size(&toml::Value::String("64MB".into())).unwrap(),
            64 << 20
        );
        assert_eq!(parse_size(&toml::Value::Integer(4096)).unwrap(), 4096);
        assert!(parse_size(&toml::Value::String("12 parsecs".into())).is_err());
    }

    #[test]
    fn the_cache_can_be_turned_off() {
        assert_eq!(load("", &[]).unwrap().cache_memory, 256 << 20);
        for off in [
            "cache_memory = \"0\"\n",
            "cache_memory = 0\n",
            "cache_memory = \"off\"\n",
        ] {
            assert_eq!(load(off, &[]).unwrap().cache_memory, 0, "{off}");
        }
        assert_eq!(
            load("result_cache_ttl = \"30s\"\n", &[])
                .unwrap()
                .result_cache_ttl,
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_interval("5 min"), Some(Duration::from_secs(300)));
        assert_eq!(parse_interval("30 seconds"), Some(Duration::from_secs(30)));
        assert_eq!(parse_interval("soon"), None);
    }

    #[test]
    fn a_rest_catalog_is_configured_by_file_and_environment() {
        let c = load(
            "[lake]\ncatalog = \"rest\"\nuri = \"http://127.0.0.1:8181/catalog/\"\n",
            &[("THERMOCLINE_LAKE_TOKEN", "secret")],
        )
        .unwrap();
        let lake = c.lake.unwrap();
        assert_eq!(
            lake.rest,
            Some(crate::lake::RestConfig {
                uri: "http://127.0.0.1:8181/catalog".into(),
                token: Some("secret".into()),
            })
        );
        assert_eq!(lake.warehouse, "");
        for (file, env, key) in [
            ("[lake]\ncatalog = \"rest\"\n", None, "lake.catalog"),
            (
                "[lake]\ncatalog = \"rest\"\nuri = \"/var/lib/catalog.db\"\n",
                None,
                "lake.uri",
            ),
            (
                "[lake]\nwarehouse = \"/srv/lake\"\n",
                Some(("THERMOCLINE_LAKE_TOKEN", "secret")),
                "lake.token",
            ),
        ] {
            let e = load(file, env.as_slice()).unwrap_err().to_string();
            assert!(e.contains(key), "{file}: {e}");
        }
        let e = load("[lake]\ncatalog = \"glue\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("glue") && e.contains("not supported"), "{e}");
    }

    #[test]
    fn an_s3_lake_is_configured_by_file_and_environment() {
        let c = load(
            "[lake]\nwarehouse = \"s3://bucket/lake\"\nuri = \"sqlite:///var/lib/t/catalog.db\"\ns3_path_style = true\n",
            &[
                ("THERMOCLINE_LAKE_S3_ENDPOINT", "http://127.0.0.1:9000"),
                ("THERMOCLINE_LAKE_S3_ACCESS_KEY_ID", "key"),
            ],
        )
        .unwrap();
        let lake = c.lake.unwrap();
        assert_eq!(lake.warehouse, "s3://bucket/lake");
        assert_eq!(
            lake.catalog_db,
            Some(PathBuf::from("/var/lib/t/catalog.db"))
        );
        assert_eq!(lake.s3["s3.endpoint"], "http://127.0.0.1:9000");
        assert_eq!(lake.s3["s3.access-key-id"], "key");
        assert_eq!(lake.s3["s3.path-style-access"], "true");
        let e = load("[lake]\nwarehouse = \"gs://bucket/lake\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("lake.warehouse") && e.contains("s3://"), "{e}");
        let local = load("[lake]\nwarehouse = \"file:///srv/lake\"\n", &[]).unwrap();
        assert_eq!(local.lake.unwrap().warehouse, "/srv/lake");
    }
}
