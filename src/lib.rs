//! thermocline: a PostgreSQL-wire server that makes a table whole across a
//! hot tier (recent rows, in PostgreSQL) and a cold tier (history, in Iceberg).

/// HTTP health and readiness endpoints.
pub mod admin;
/// The Postgres behind thermocline: its address, links to it, the embedded one.
pub mod backend;
/// The TOML configuration and its environment overrides.
pub mod config;
/// What a client talks to: startup, TLS, cancel, the relay session.
pub(crate) mod frontend;
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

pub use config::Config;
pub use server::run;
