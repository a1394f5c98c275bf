//! The query API (default 127.0.0.1:8081): routed reads with fail-over, monotonic reads, cache
//! fill, flow control and caller isolation. It depends only on the read ports
//! (`MemberReader`, `CacheFill`, `StatusProvider`); the process wiring hands it the adapters.
//!
//! - [`auth`]: callers (scope `read`; `admin` for `/admin/*`), see [`crate::access`];
//! - [`flow_control`]: per-caller quotas, the global budget that sheds marketing first, the
//!   per-identity hotspot limit and hot-key detection (governor);
//! - [`read_path`]: near cache, chain walk with breakers and timeouts, monotonic reads, fills;
//! - [`backends`]: the ports behind breakers, fault switches and pins;
//! - [`routes`] and [`admin`]: the HTTP handlers; [`errors`]: the one HTTP mapping of failures.

pub mod admin;
pub mod auth;
pub mod backends;
pub mod errors;
pub mod flow_control;
pub mod metrics;
pub mod read_path;
pub mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use member_infra::config::{RedisCenter, Settings};
use member_read_policy::routing::Center;
use tokio::net::TcpListener;

pub use backends::QueryBackends;
pub use errors::QueryError;
pub use routes::SERVED_FROM;

use crate::access::Callers;
use backends::Registry;
use flow_control::FlowControl;
use read_path::ReadPath;

/// Admin request bodies above this are refused.
pub const BODY_LIMIT: usize = 16 * 1024;

/// The query API's state: one `Arc`, because axum clones the state for every request and each
/// clone of a shared counter is a cache line the two cores pass back and forth (four `Arc`s were
/// 1.2 % of a lookup's time in a profile).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub callers: Arc<Callers>,
    pub flow: Arc<FlowControl>,
    pub reads: Arc<ReadPath>,
    /// The operations console (api/src/console/).
    pub console: Arc<crate::console::Console>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn registry(&self) -> &Registry {
        self.reads.registry()
    }
}

impl crate::http::Readiness for AppState {
    async fn ready(&self) -> Result<(), String> {
        if self.registry().order_path_available() {
            Ok(())
        } else {
            Err("every backend of the order chain is open or faulted".into())
        }
    }

    /// Each backend (the three search clusters among them): available, breaker, fault flag.
    fn backends(&self) -> Option<serde_json::Value> {
        let registry = self.registry();
        let backends: serde_json::Map<String, serde_json::Value> = member_projections::Target::ALL
            .into_iter()
            .map(|t| {
                let b = registry.backend(t);
                let detail = serde_json::json!({
                    "available": b.available(),
                    "recovering": b.recovering(),
                    "breaker": b.breaker_state().as_str(),
                    "faulted": b.faulted(),
                });
                (t.as_str().to_owned(), detail)
            })
            .collect();
        Some(serde_json::Value::Object(backends))
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/members", get(routes::by_identity))
        .route("/v1/members/{id}", get(routes::by_id))
        .route("/admin/faults", post(admin::faults))
        .route("/admin/routing", post(admin::routing))
        .route("/admin/status", get(admin::status))
        .with_state(state.clone())
        .merge(crate::console::router(state.clone()))
        .merge(crate::http::operational_routes(state))
        .fallback(crate::http::not_found)
        .method_not_allowed_fallback(crate::http::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(
            crate::access::request_id::propagate,
        ))
}

/// The query API, bound and ready to serve.
pub struct QueryApi {
    listener: TcpListener,
    state: AppState,
    header_read_timeout: Duration,
}

impl QueryApi {
    /// Binds the listener (port 0 picks a free port, as tests do). `settings` gives the
    /// `[query_api]` section and the center (`center.name`, `center.reads`).
    pub async fn build(
        backends: QueryBackends,
        settings: &Settings,
        listen: SocketAddr,
    ) -> anyhow::Result<Self> {
        let q = &settings.query_api;
        let local = match settings.local_center() {
            RedisCenter::A => Center::A,
            RedisCenter::B => Center::B,
        };
        let registry = Arc::new(Registry::for_center(
            backends,
            q,
            local,
            settings.center.read_targets(),
        ));
        let state = AppState(Arc::new(Shared {
            callers: Arc::new(Callers::from_settings(&settings.callers)),
            flow: Arc::new(FlowControl::new(&q.flow)),
            reads: Arc::new(ReadPath::new(registry, &q.cache)),
            console: Arc::new(crate::console::Console::new(settings)?),
        }));
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding the query api to {listen}"))?;
        Ok(Self {
            listener,
            state,
            header_read_timeout: Duration::from_millis(q.header_read_timeout_ms),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr(), "query api listening");
        let housekeeping = tokio::spawn(housekeeping(
            Arc::downgrade(&self.state.flow),
            Arc::downgrade(&self.state.reads),
        ));
        let console_sampler = crate::console::spawn_background(&self.state);
        let console = self.state.console.clone();
        let served = crate::server::serve(
            self.listener,
            router(self.state),
            self.header_read_timeout,
            shutdown,
        )
        .await
        .context("serving the query api");
        housekeeping.abort();
        console_sampler.abort();
        // Console jobs stop like a tool on SIGTERM: a rebuild removes its partial build.
        console.jobs.stop_all(Duration::from_secs(30)).await;
        served
    }
}

/// Every quarter second: let recovering backends back in once their projection caught up;
/// every second: refresh the breaker gauges; every ten: trim the keyed limiters.
async fn housekeeping(flow: Weak<FlowControl>, reads: Weak<ReadPath>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        let (Some(flow), Some(reads)) = (flow.upgrade(), reads.upgrade()) else {
            return;
        };
        reads.registry().release_caught_up().await;
        n += 1;
        if n % 4 == 0 {
            reads.registry().publish_gauges();
        }
        if n % 40 == 0 {
            flow.housekeeping();
        }
    }
}
