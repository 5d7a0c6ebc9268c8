//! thermocline: a PostgreSQL-wire server that makes a table whole across a
//! hot tier (recent rows, in PostgreSQL) and a cold tier (history, in Iceberg).

/// HTTP health, readiness and metrics endpoints.
pub mod admin;
/// The Postgres behind thermocline: its address, links to it, the embedded one.
pub mod backend;
/// Tier definitions: the files of the catalog directory.
pub mod catalog;
/// The TOML configuration and its environment overrides.
pub mod config;
/// Reads of tiered tables answered over both tiers.
pub mod federation;
/// What a client talks to: startup, TLS, cancel, the relay session.
pub(crate) mod frontend;
/// The cold tier: Iceberg catalog and tables.
pub mod lake;
/// Limits that protect the server, reloadable on SIGHUP.
pub mod limits;
/// Text or JSON logs to stderr, with a reloadable level.
pub mod logging;
/// Postgres types: binary decoding into Arrow, text encoding out of it.
pub mod pgtypes;
/// Message framing and the few messages thermocline writes itself
/// (public for the benchmarks only).
#[doc(hidden)]
pub mod protocol;
/// Decides where each statement is answered.
pub(crate) mod router;
/// The accept loop and graceful shutdown.
pub mod server;
/// One byte-stream type for plain, TLS and Unix-socket links.
pub(crate) mod stream;
/// Tiered tables as Postgres describes them, and the mover.
pub mod tiering;

pub use config::Config;
pub use server::run;
