//! What a client talks to: the startup phase (SSLRequest, GSSENCRequest,
//! CancelRequest, StartupMessage), TLS, and the hand-over to the relay.
//!
//! Authentication is not done here: the StartupMessage goes to Postgres as
//! the client sent it and the exchange that follows is relayed, so
//! thermocline never sees or stores a password.

pub(crate) mod cancel;
pub(crate) mod session;
pub(crate) mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::protocol::ErrorFields;
use crate::protocol::startup::{StartupError, StartupPacket, read_startup};
use crate::server::Shared;
use crate::stream::Stream;

/// How long a client may take to send its startup packet (Postgres's
/// `authentication_timeout` default).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// One of `max_client_connections`, held for the session's life.
struct ClientSlot(Arc<Shared>);

impl ClientSlot {
    fn take(shared: &Arc<Shared>) -> Option<ClientSlot> {
        use std::sync::atomic::Ordering::AcqRel;
        let max = shared.limits.max_clients();
        let taken = shared.clients.fetch_add(1, AcqRel) + 1;
        let slot = ClientSlot(shared.clone());
        (max == 0 || taken <= max).then_some(slot)
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0
            .clients
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Serves one client connection from accept to close.
pub(crate) async fn handle(tcp: TcpStream, peer: SocketAddr, conn_id: u64, shared: Arc<Shared>) {
    use crate::admin::metrics::METRICS;
    use std::sync::atomic::Ordering::Relaxed;
    /// Counts the connection as open until it is dropped.
    struct Open;
    impl Drop for Open {
        fn drop(&mut self) {
            METRICS.connections_current.fetch_sub(1, Relaxed);
        }
    }
    METRICS.connections_total.fetch_add(1, Relaxed);
    METRICS.connections_current.fetch_add(1, Relaxed);
    let _open = Open;
    let _ = tcp.set_nodelay(true);
    let mut stream = Stream::Tcp(tcp);
    let (raw, params) = loop {
        let packet = match tokio::time::timeout(STARTUP_TIMEOUT, read_startup(&mut stream)).await {
            Err(_) | Ok(Err(StartupError::Closed(_))) => return,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "bad startup packet");
                let _ = stream
                    .write_all(&ErrorFields::fatal("08P01", e.to_string()).encode())
                    .await;
                return;
            }
            Ok(Ok(packet)) => packet,
        };
        match packet {
            StartupPacket::SslRequest => {
                stream = match (stream, &shared.client_tls) {
                    (Stream::Tcp(mut tcp), Some(acceptor)) => {
                        if tcp.write_all(b"S").await.is_err() {
                            return;
                        }
                        match acceptor.accept(tcp).await {
                            Ok(tls) => Stream::ServerTls(Box::new(tls)),
                            Err(e) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                        }
                    }
                    (mut other, _) => {
                        if other.write_all(b"N").await.is_err() {
                            return;
                        }
                        other
                    }
                };
            }
            StartupPacket::GssEncRequest => {
                if stream.write_all(b"N").await.is_err() {
                    return;
                }
            }
            StartupPacket::Cancel { pid, secret } => {
                if let Some((real, session)) = shared.cancel_keys.lookup(pid, secret) {
                    session.request();
                    shared.cancel_backend(pid, real).await;
                }
                return;
            }
            StartupPacket::Startup { raw, params } => break (raw, params),
        }
    };
    // Over the limit: refused as Postgres refuses, after the startup
    // packet so the client can read why.
    let _slot = match ClientSlot::take(&shared) {
        Some(slot) => slot,
        None => {
            METRICS.connections_rejected.fetch_add(1, Relaxed);
            let error = ErrorFields::fatal("53300", "sorry, too many clients already");
            let _ = stream.write_all(&error.encode()).await;
            return;
        }
    };
    let param = |k| StartupPacket::param(&params, k).unwrap_or("");
    let span = tracing::info_span!(
        "conn",
        conn_id,
        user = param("user"),
        db = if param("database").is_empty() {
            param("user")
        } else {
            param("database")
        },
        application_name = param("application_name"),
        tls = stream.is_tls(),
    );
    async move {
        tracing::debug!(%peer, "client connected");
        let mut backend = match crate::backend::connect(
            &shared.target,
            &shared.upstream_tls,
            shared.config.connect_timeout,
        )
        .await
        {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach Postgres");
                let error = ErrorFields::fatal("08006", format!("{e}")).with_hint(
                    "thermocline could not open a connection to Postgres for this session.",
                );
                let _ = stream.write_all(&error.encode()).await;
                return;
            }
        };
        if backend.write_all(&raw).await.is_err() {
            let error =
                ErrorFields::fatal("08006", "lost the connection to Postgres during startup");
            let _ = stream.write_all(&error.encode()).await;
            return;
        }
        let database = if param("database").is_empty() {
            param("user")
        } else {
            param("database")
        };
        let (router, federation) = shared.for_database(database);
        let info = Arc::new(crate::admin::activity::SessionInfo::new(
            conn_id,
            param("user"),
            database,
            param("application_name"),
            peer.to_string(),
            stream.is_tls(),
        ));
        let _registered = shared.activity.register(info.clone());
        let session = session::Session {
            router,
            federation,
            info,
        };
        session::run(stream, backend, shared.clone(), session).await;
        tracing::debug!("client disconnected");
    }
    .instrument(span)
    .await
}
