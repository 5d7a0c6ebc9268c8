//! Logging: `tracing` to stderr, as text or one JSON object per line, with
//! a level filter that SIGHUP can change while the server runs.

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, reload};

use crate::config::{Config, LogFormat};

type SetFilter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// Replaces the running filter; set once logging is up.
static SET_FILTER: OnceLock<SetFilter> = OnceLock::new();

/// Starts logging as `config` says. `RUST_LOG`, when set, wins over
/// `log_level` (and then a reload leaves the level alone).
pub fn init(config: &Config) {
    let filter =
        EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(&config.log_level));
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let output = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    if tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .is_ok()
    {
        let _ = SET_FILTER.set(Box::new(move |f| {
            handle.reload(f).map_err(|e| e.to_string())
        }));
    }
}

/// Applies `log_level` from a reloaded configuration.
pub fn set_level(level: &str) -> Result<(), String> {
    if std::env::var_os("RUST_LOG").is_some() {
        return Ok(());
    }
    let Some(set) = SET_FILTER.get() else {
        return Ok(());
    };
    let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
    set(filter)
}
