//! The application: the roles one process runs, built once (connections opened, listeners bound)
//! and then run until a shutdown signal. `member run` builds every role; `member serve <role>`
//! builds one; tests build what they need on port 0.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use member_infra::config::Settings;
use member_infra::event_store::vault::Vault;
use member_infra::kafka::lag::ConsumerGroupLag;
use member_infra::kafka::source::KafkaSource;
use member_infra::relay::Relay;
use member_infra::stores::Store;
use member_projections::projector::{Projector, ProjectorSettings};
use member_projections::Target;
use sqlx::PgPool;

use crate::command_api::CommandApi;
use crate::query_api::{QueryApi, QueryBackends};
use crate::shutdown::Shutdown;

/// A role a process can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    CommandApi,
    QueryApi,
    Relay,
    Projector(Target),
}

impl Role {
    /// Every role: what `member run` starts.
    pub fn all() -> Vec<Role> {
        let mut roles = vec![Role::CommandApi, Role::QueryApi, Role::Relay];
        roles.extend(Target::ALL.into_iter().map(Role::Projector));
        roles
    }

    /// What `member run` starts in its center: the APIs, the relay (one at a time across the
    /// centers, ADR 0019) and the projectors of `center.projectors` (all six by default).
    pub fn of_center(settings: &Settings) -> Vec<Role> {
        let mut roles = vec![Role::CommandApi, Role::QueryApi, Role::Relay];
        roles.extend(
            settings
                .center
                .projector_targets()
                .into_iter()
                .map(Role::Projector),
        );
        roles
    }
}

pub struct App {
    command_api: Option<CommandApi>,
    query_api: Option<QueryApi>,
    relay: Option<Relay>,
    projectors: Vec<Projector<KafkaSource>>,
    stores: BTreeMap<Target, Store>,
}

impl App {
    /// Opens what the roles need and binds their listeners.
    pub async fn build(settings: &Settings, roles: &[Role]) -> anyhow::Result<Self> {
        let needs_store = roles
            .iter()
            .any(|r| matches!(r, Role::CommandApi | Role::Relay));
        let pool = if needs_store {
            Some(event_store(settings).await?)
        } else {
            None
        };
        let needs_topic = roles
            .iter()
            .any(|r| matches!(r, Role::Relay | Role::Projector(_)));
        if needs_topic {
            if let Err(e) =
                member_infra::kafka::ensure_topic(&settings.kafka, &settings.kafka.topic).await
            {
                // The relay creates it later; projectors wait for it.
                tracing::warn!(error = %e, "could not ensure the kafka topic exists yet");
            }
        }

        let mut targets: Vec<Target> = roles
            .iter()
            .filter_map(|r| match r {
                Role::Projector(t) => Some(*t),
                _ => None,
            })
            .collect();
        if roles.contains(&Role::QueryApi) {
            targets.extend(Target::ALL);
        }
        let mut stores = BTreeMap::new();
        for target in targets {
            if let std::collections::btree_map::Entry::Vacant(slot) = stores.entry(target) {
                slot.insert(Store::open(target, settings).await?);
            }
        }

        let command_api = match (roles.contains(&Role::CommandApi), &pool) {
            (true, Some(pool)) => {
                let listen = settings.command_api.listen;
                if let Some(warning) =
                    crate::access::callers::default_keys_warning(settings, "command api", listen)
                {
                    tracing::warn!("{warning}");
                }
                Some(
                    CommandApi::build(
                        pool.clone(),
                        &settings.command_api,
                        &settings.callers,
                        vault(settings),
                    )
                    .await?,
                )
            }
            _ => None,
        };
        let query_api = if roles.contains(&Role::QueryApi) {
            let store = |t: Target| stores.get(&t).expect("opened above");
            let fill = |t: Target| store(t).cache().expect("redis stores fill");
            let backends = QueryBackends {
                redis_a: store(Target::RedisA).query_reader(settings),
                redis_a_fill: fill(Target::RedisA),
                redis_b: store(Target::RedisB).query_reader(settings),
                redis_b_fill: fill(Target::RedisB),
                search_primary: store(Target::SearchPrimary).reader(),
                search_backup: store(Target::SearchBackup).reader(),
                search_marketing: store(Target::SearchMarketing).reader(),
                mysql: store(Target::Mysql).reader(),
                status: Some(Arc::new(ConsumerGroupLag::new(settings))),
            };
            Some(query_api(settings, backends).await?)
        } else {
            None
        };
        let relay = match (roles.contains(&Role::Relay), &pool) {
            (true, Some(pool)) => Some(relay(settings, pool.clone())?),
            _ => None,
        };
        // Each projector is a member of its target's consumer group (ADR 0017): processes of
        // one target share its partitions.
        let batch_size = settings.projector.batch_size as usize;
        let mut projectors = Vec::new();
        // Projectors record when their store applied an erasure (the receipt) in the event
        // store; a projector-only process connects to it lazily.
        let mut receipts: Option<PgPool> = None;
        for role in roles {
            let Role::Projector(target) = role else {
                continue;
            };
            let group = member_infra::kafka::projector_group(settings, *target);
            let source = KafkaSource::new(&settings.kafka, &group)
                .await
                .with_context(|| format!("joining the consumer group {group} (kafka.brokers)"))?;
            let receipts = match (&pool, &receipts) {
                (Some(pool), _) => pool.clone(),
                (None, Some(lazy)) => lazy.clone(),
                (None, None) => {
                    let lazy = member_infra::event_store::connect_lazy(&settings.postgres)
                        .context("reading postgres.url for the erasure receipts")?;
                    receipts = Some(lazy.clone());
                    lazy
                }
            };
            let sink = member_infra::event_store::erasure::ErasureReceipts::wrap(
                stores.get(target).expect("opened above").sink(),
                receipts,
            );
            projectors.push(Projector::new(
                source,
                sink,
                ProjectorSettings {
                    batch_size,
                    max_wait: Duration::from_millis(settings.projector.max_wait_ms),
                },
            ));
        }
        Ok(Self {
            command_api,
            query_api,
            relay,
            projectors,
            stores,
        })
    }

    pub fn command_api_addr(&self) -> Option<SocketAddr> {
        self.command_api.as_ref().map(CommandApi::local_addr)
    }

    pub fn query_api_addr(&self) -> Option<SocketAddr> {
        self.query_api.as_ref().map(QueryApi::local_addr)
    }

    /// The stores this process opened, by target (for tests and tools).
    pub fn stores(&self) -> &BTreeMap<Target, Store> {
        &self.stores
    }

    /// Runs every role until `shutdown`; each drains its work in flight. If one role fails, the
    /// others are stopped and the error is returned.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let mut roles = tokio::task::JoinSet::new();
        if let Some(api) = self.command_api {
            roles.spawn(api.run_until_stopped(shutdown.clone().wait()));
        }
        if let Some(api) = self.query_api {
            roles.spawn(api.run_until_stopped(shutdown.clone().wait()));
        }
        if let Some(relay) = self.relay {
            let stop = shutdown.clone();
            roles.spawn(async move {
                relay.run(stop.wait()).await;
                Ok(())
            });
        }
        for projector in self.projectors {
            let stop = shutdown.clone();
            roles.spawn(async move {
                projector.run(stop.wait()).await;
                Ok(())
            });
        }
        let mut result = Ok(());
        while let Some(joined) = roles.join_next().await {
            if let Err(e) = joined.context("a role panicked").and_then(|r| r) {
                tracing::error!(error = %format!("{e:#}"), "a role failed, stopping the others");
                roles.abort_all();
                result = Err(e);
            }
        }
        result
    }
}

/// The query API over the given backends, bound to `query_api.listen`. Warns when the published
/// default keys are used on an address other than loopback. (The owner wires the real adapters:
/// Redis centers, search clusters, MySQL shards.)
async fn query_api(settings: &Settings, backends: QueryBackends) -> anyhow::Result<QueryApi> {
    if let Some(warning) = crate::access::callers::default_keys_warning(
        settings,
        "query api",
        settings.query_api.listen,
    ) {
        tracing::warn!("{warning}");
    }
    QueryApi::build(backends, settings, settings.query_api.listen).await
}

fn relay(settings: &Settings, pool: PgPool) -> anyhow::Result<Relay> {
    Relay::new(
        &settings.kafka.topic,
        pool,
        &settings.kafka,
        &settings.relay,
        vault(settings),
    )
    .context("creating the kafka producer (kafka.brokers)")
}

/// The keys of crypto-shredding (`[encryption]`, validated when the settings loaded).
pub fn vault(settings: &Settings) -> Vault {
    Vault::new(&settings.encryption)
}

/// Connects to the event store and brings its schema up to date.
pub async fn event_store(settings: &Settings) -> anyhow::Result<PgPool> {
    let pool = member_infra::event_store::connect(&settings.postgres)
        .await
        .context("connecting to the event store (postgres.url)")?;
    member_infra::event_store::migrate(&pool)
        .await
        .context("migrating the event store")?;
    // Owner rows written before crypto-shredding are keyed by the identity; every process that
    // may write rekeys them first (nothing to do, and no lock taken, once they are).
    let rekeyed = member_infra::event_store::vault::rewrite::owners(&pool, &vault(settings))
        .await
        .context("rekeying identity owners written before encryption")?;
    if rekeyed > 0 {
        tracing::info!(
            rows = rekeyed,
            "identity owners rekeyed by their keyed hash"
        );
    }
    Ok(pool)
}
