//! The admin HTTP endpoint: `/health` (the process serves), `/ready`
//! (Postgres is reachable and thermocline is not shutting down), for load
//! balancers and Kubernetes probes, and `/metrics` (Prometheus).

pub mod activity;
pub mod metrics;
pub(crate) mod views;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::backend::UpstreamTls;
use crate::backend::target::BackendTarget;

struct AdminState {
    target: BackendTarget,
    tls: UpstreamTls,
    stopping: watch::Receiver<bool>,
}

/// Serves the admin endpoints until `shutdown` resolves. `stopping` turns
/// `/ready` to 503 as soon as the server starts draining.
pub async fn run(
    listener: TcpListener,
    target: BackendTarget,
    stopping: watch::Receiver<bool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls = UpstreamTls::new(&target).map_err(std::io::Error::other)?;
    let state = Arc::new(AdminState {
        target,
        tls,
        stopping,
    });
    let app = axum::Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route(
            "/metrics",
            get(|| async {
                (
                    [("content-type", "text/plain; version=0.0.4")],
                    metrics::METRICS.render(),
                )
            }),
        )
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn ready(State(state): State<Arc<AdminState>>) -> (StatusCode, String) {
    if *state.stopping.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    }
    match crate::backend::connect(&state.target, &state.tls, Duration::from_secs(2)).await {
        Ok(_) => (StatusCode::OK, "ready\n".into()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}
