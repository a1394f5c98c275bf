//! Process wiring: which roles run, how they share connections, and how they stop.
//!
//! Shutdown follows mini-redis: one signal future fans out to every role through a watch
//! channel; each role stops taking work and drains what is in flight before `run` returns.

use anyhow::Context;
use member_infra::config::Settings;
use sqlx::PgPool;
use tokio::sync::watch;

use member_infra::relay::Relay;

use crate::app::{App, Role};
use crate::query_api::{QueryApi, QueryBackends};

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = terminate => {} }
    tracing::info!("shutdown requested, draining");
}

/// A shutdown that several tasks can wait for.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A shutdown triggered when `signal` resolves.
    pub fn on(signal: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            signal.await;
            let _ = tx.send(true);
        });
        Self(rx)
    }

    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|stopped| *stopped).await;
    }
}

/// The query API over the given backends, bound to `query_api.listen`. Warns when the published
/// default keys are used on an address other than loopback. (The owner wires the real adapters:
/// Redis centers, search clusters, MySQL shards.)
pub async fn query_api(settings: &Settings, backends: QueryBackends) -> anyhow::Result<QueryApi> {
    let listen = settings.query_api.listen;
    if let Some(warning) =
        crate::access::callers::default_keys_warning(settings, "query api", listen)
    {
        tracing::warn!("{warning}");
    }
    QueryApi::build(backends, settings, settings.query_api.listen).await
}

pub fn relay(settings: &Settings, pool: PgPool) -> anyhow::Result<Relay> {
    Relay::new(
        &settings.kafka.topic,
        pool,
        &settings.kafka,
        &settings.relay,
    )
    .context("creating the kafka producer (kafka.brokers)")
}

/// Builds the roles and runs them until shutdown: `member run` (every role) and
/// `member serve <role>` (one).
pub async fn serve(settings: Settings, roles: &[Role], shutdown: Shutdown) -> anyhow::Result<()> {
    App::build(&settings, roles)
        .await?
        .run_until_stopped(shutdown)
        .await
}
