//! The command API (default 127.0.0.1:8080): the one place where members' identities change.

mod access;
mod bind;
mod erasure;
mod errors;
mod extract;
pub(crate) mod history;
mod idempotency;
mod register;
mod unbind;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;
use member_infra::config::{CallerSettings, CommandApiSettings};
use member_infra::event_store::commands::CommandService;
use member_infra::event_store::idempotency::IdempotencyStore;
use member_infra::event_store::member_cache::MemberCache;
use member_infra::event_store::vault::Vault;
use sqlx::PgPool;
use tokio::net::TcpListener;

pub use access::WriteBudget;
pub use errors::ApiError;
pub use register::IdentityInput;

/// Request bodies above this are refused with 413.
pub const BODY_LIMIT: usize = 64 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub callers: Arc<crate::access::Callers>,
    pub writes: Arc<WriteBudget>,
    pub commands: CommandService,
    pub idempotency: IdempotencyStore,
    pub pool: PgPool,
}

impl crate::http::Readiness for AppState {
    async fn ready(&self) -> Result<(), String> {
        let probe = sqlx::query("SELECT 1").execute(&self.pool);
        match tokio::time::timeout(Duration::from_secs(2), probe).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("event store: {e}")),
            Err(_) => Err("event store: timed out".into()),
        }
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/members", post(register::register))
        .route("/v1/members/{id}/identities", post(bind::bind))
        .route(
            "/v1/members/{id}/identities/{kind}/{value}",
            delete(unbind::unbind),
        )
        .route("/v1/members/{id}/history", get(history::history))
        .route(
            "/v1/members/{id}/erasure",
            post(erasure::erase).get(erasure::receipt),
        )
        .with_state(state.clone())
        .merge(crate::http::operational_routes(state))
        .fallback(crate::http::not_found)
        .method_not_allowed_fallback(crate::http::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(
            crate::access::request_id::propagate,
        ))
}

/// The command API, bound and ready to serve.
pub struct CommandApi {
    listener: TcpListener,
    router: Router,
    idempotency: IdempotencyStore,
    header_read_timeout: Duration,
}

/// How long an idempotency key answers retries. Clients retry within seconds or minutes; a day
/// covers a client that was down overnight.
pub const IDEMPOTENCY_RETENTION: Duration = Duration::from_secs(24 * 3600);

impl CommandApi {
    /// Binds the listener (port 0 picks a free port, as tests do). `callers` are the
    /// configuration's `[[callers]]`.
    pub async fn build(
        pool: PgPool,
        settings: &CommandApiSettings,
        callers: &[CallerSettings],
        vault: Vault,
    ) -> anyhow::Result<Self> {
        // Owner rows written by a binary older than crypto-shredding are keyed by the identity;
        // a bind keyed by its hash must meet them, so they are rekeyed before any write.
        let rekeyed = member_infra::event_store::vault::rewrite::owners(&pool, &vault)
            .await
            .context("rekeying identity owners written before encryption")?;
        if rekeyed > 0 {
            tracing::info!(
                rows = rekeyed,
                "identity owners rekeyed by their keyed hash"
            );
        }
        let listen = settings.listen;
        let cache = MemberCache::new(
            settings.member_cache_capacity,
            Duration::from_secs(settings.member_cache_idle_seconds),
        );
        let state = AppState {
            callers: Arc::new(crate::access::Callers::from_settings(callers)),
            writes: Arc::new(WriteBudget::new(settings)),
            commands: CommandService::with_cache_and_writers(
                pool.clone(),
                cache,
                settings.append_writers.get(),
                vault,
            ),
            idempotency: IdempotencyStore::new(pool.clone()),
            pool,
        };
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding the command api to {listen}"))?;
        let idempotency = state.idempotency.clone();
        Ok(Self {
            listener,
            router: router(state),
            idempotency,
            header_read_timeout: Duration::from_millis(settings.header_read_timeout_ms),
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
        tracing::info!(addr = %self.local_addr(), "command api listening");
        // Hourly, delete idempotency keys past their retention, so the table stays bounded.
        let keys = self.idempotency.clone();
        let expiry = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(3600));
            loop {
                every.tick().await;
                match keys.expire(IDEMPOTENCY_RETENTION).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, "expired idempotency keys"),
                    Err(e) => tracing::warn!(error = %e, "expiring idempotency keys failed"),
                }
            }
        });
        let served = crate::server::serve(
            self.listener,
            self.router,
            self.header_read_timeout,
            shutdown,
        )
        .await
        .context("serving the command api");
        expiry.abort();
        served
    }
}
