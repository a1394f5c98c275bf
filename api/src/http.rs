//! HTTP pieces shared by the APIs: the JSON error body, health and metrics routes, and the
//! fallback for unknown routes.

use std::net::SocketAddr;

use anyhow::Context;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

/// `{"error": "<code>", "message": "<text>"}` with a status.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": code, "message": message}))).into_response()
}

/// A readiness probe: answers whether the process can serve.
pub trait Readiness: Clone + Send + Sync + 'static {
    fn ready(&self) -> impl std::future::Future<Output = Result<(), String>> + Send;

    /// Per-dependency detail added to the `/readyz` body as `backends` (none by default).
    fn backends(&self) -> Option<serde_json::Value> {
        None
    }
}

/// `/healthz` (the process is up), `/readyz` (its dependencies answer) and `/metrics`.
pub fn operational_routes<R: Readiness>(readiness: R) -> Router {
    let metrics = crate::telemetry::metrics_handle();
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route(
            "/readyz",
            get(move || {
                let readiness = readiness.clone();
                async move {
                    let backends = readiness.backends();
                    let (status, mut body) = match readiness.ready().await {
                        Ok(()) => (StatusCode::OK, json!({"status": "ready"})),
                        Err(reason) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            json!({"error": "not_ready", "message": reason}),
                        ),
                    };
                    if let Some(backends) = backends {
                        body["backends"] = backends;
                    }
                    (status, Json(body)).into_response()
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [("content-type", "text/plain; version=0.0.4")],
                        metrics.render(),
                    )
                }
            }),
        )
}

/// A process that is up is ready: for the roles without an API (relay, projector), whose
/// progress and failures show in `/metrics` (lag, `member_projector_up`, failure counters).
#[derive(Clone, Copy)]
pub struct Up;

impl Readiness for Up {
    async fn ready(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A listener that answers only the operational routes: for `member serve relay` and
/// `member serve projector`, which have no API to carry them.
pub struct OperationalServer {
    listener: tokio::net::TcpListener,
    name: &'static str,
}

impl OperationalServer {
    /// Binds `listen` (the setting named `key`, for the error message).
    pub async fn bind(listen: SocketAddr, key: &'static str) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding /metrics and /healthz to {listen} ({key})"))?;
        Ok(Self {
            listener,
            name: key,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener")
    }

    /// Serves until `stop` resolves.
    pub async fn run_until_stopped(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let router = operational_routes(Up).fallback(not_found);
        axum::serve(self.listener, router)
            .with_graceful_shutdown(stop)
            .await
            .with_context(|| format!("serving the operational routes ({})", self.name))
    }
}

pub async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "not_found", "no such route")
}

pub async fn method_not_allowed() -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}
