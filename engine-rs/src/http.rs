//! The engine's HTTP endpoints (axum, HTTP/1):
//! - `GET /healthz`: 200 while the process runs;
//! - `GET /readyz`: 200 when connected, the ORDERS consumer bound, start-up recovery finished
//!   and the request subscriptions registered, 503 otherwise; the JSON body names each
//!   condition ([`crate::metrics::health::Readiness`]);
//! - `GET /metrics`: every metric in Prometheus' text format ([`crate::metrics`]).
//!
//! The server is bound before the engine connects (`http_listen`; port 0 = any free port) and
//! logs `http listening` with the bound address, so probes and tests can find it. [`check`]
//! is the client side: `bridge-engine --check-ready URL` for container healthchecks.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::metrics::Metrics;

pub mod check;

/// Prometheus' text exposition format, version 0.0.4.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The HTTP server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("http_listen {addr:?}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// A running server; [`Server::stop`] ends it (dropping it aborts it).
pub struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// The routes, on `metrics`.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(metrics)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    let readiness = metrics.health.readiness();
    let code = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(readiness))
}

async fn metrics_text(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        metrics.encode(),
    )
}

impl Server {
    /// Binds `listen` (host:port) and serves in a task; logs `http listening` with `addr`.
    pub async fn start(listen: &str, metrics: Arc<Metrics>) -> Result<Server, HttpError> {
        let bind_error = |source| HttpError::Bind {
            addr: listen.to_string(),
            source,
        };
        let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let app = router(metrics);
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                warn!(error = %e, "http server ended");
            }
        });
        info!(addr = %addr, "http listening");
        Ok(Server {
            addr,
            stop: Some(stop),
            task,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets open requests finish, and waits for the task.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests;
