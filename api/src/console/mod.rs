//! The operations console: `GET /console` on the query API, in a browser (issue 23, ADR 0032).
//!
//! Server-rendered HTML with a little plain JavaScript (assets embedded with `include_str!`,
//! nothing loaded from elsewhere). An operator signs in with a key of scope `admin` (checked by
//! the callers table, [`crate::access::Callers`]) and gets an HttpOnly, SameSite=Strict session
//! cookie; every state-changing form carries the session's CSRF token.
//!
//! - [`session`]: sign-in, the session cookie, sign-out; [`csrf`]: the cross-site checks;
//! - [`pipeline`]: event store, relay, projections, consumer groups, breakers, lag charts;
//! - [`routing`]: pins and faults, each after a confirmation page;
//! - [`jobs`]: rebuild and verify run in the server, one per target, with progress;
//! - [`members`]: search, the member in every store side by side, history, audited reveal;
//! - [`governance`]: the scan of abnormal bindings;
//! - [`html`]: escaping and the embedded templates; [`errors`]: the one HTTP mapping.

pub mod csrf;
pub mod errors;
pub mod governance;
pub mod html;
pub mod jobs;
pub mod members;
pub mod pipeline;
pub mod routing;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use member_infra::config::Settings;
use sqlx::PgPool;

pub use errors::ConsoleError;

use crate::query_api::AppState;

/// What the console keeps beside the query path: the event store (for history, jobs and the
/// pipeline), the sessions, the jobs, the reveal audit and the sampled lag.
pub struct Console {
    pub settings: Settings,
    /// Connected on first use: the query API serves reads without PostgreSQL, so a console that
    /// is never opened must not make it depend on the event store.
    pub pool: PgPool,
    /// Opens the sealed identity values of the events the console shows.
    pub vault: member_infra::event_store::vault::Vault,
    pub sessions: session::Sessions,
    pub jobs: jobs::Jobs,
    pub audit: members::Audit,
    pub samples: pipeline::Samples,
}

impl Console {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        let options: sqlx::postgres::PgConnectOptions = settings
            .postgres
            .url
            .expose_secret()
            .parse()
            .map_err(|e| anyhow::anyhow!("postgres.url: {e}"))?;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(settings.postgres.max_connections.get().clamp(1, 4))
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options);
        Ok(Self {
            settings: settings.clone(),
            pool,
            vault: crate::app::vault(settings),
            sessions: session::Sessions::default(),
            jobs: jobs::Jobs::default(),
            audit: members::Audit::default(),
            samples: pipeline::Samples::default(),
        })
    }
}

/// The console's routes (merged into the query API's router).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/console", get(pipeline::page))
        .route("/console/login", post(session::sign_in))
        .route("/console/logout", post(session::sign_out))
        .route("/console/pipeline", get(pipeline::fragment))
        .route("/console/routing", get(routing::page).post(routing::apply))
        .route("/console/routing/confirm", get(routing::confirm))
        .route("/console/jobs", get(jobs::page).post(jobs::start))
        .route("/console/jobs/list", get(jobs::fragment))
        .route("/console/members", get(members::page))
        .route("/console/members/{id}/reveal", post(members::reveal))
        .route(
            "/console/governance",
            get(governance::page).post(governance::apply),
        )
        .route("/console/governance/confirm", get(governance::confirm))
        .route("/console/assets/console.js", get(script))
        .route("/console/assets/console.css", get(stylesheet))
        .with_state(state)
        .layer(axum::middleware::from_fn(html::security_headers))
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/console.js"),
    )
}

async fn stylesheet() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("assets/console.css"),
    )
}

/// Starts what runs beside the server: the lag sampler. Stops with the returned handle.
pub fn spawn_background(state: &AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(pipeline::sample_forever(
        Arc::downgrade(&state.console),
        Arc::downgrade(&state.reads),
    ))
}
