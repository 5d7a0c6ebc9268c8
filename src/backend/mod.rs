//! The Postgres behind thermocline: where it is, how to reach it (TCP, Unix
//! socket, TLS), and the private Postgres `--embedded-postgres` starts.

pub(crate) mod connect;
pub mod embedded;
pub mod target;

pub(crate) use connect::{ConnectError, UpstreamTls, connect};
