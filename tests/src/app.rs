//! `spawn_app(roles)`: the real application (any roles) over fresh stores: its own event-store
//! database, Kafka topic, MariaDB databases and search directory; the shared Redis centers (every
//! test uses fresh member ids and identity values, so they do not collide).

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use member_api::app::{App, Role};
use member_api::shutdown::Shutdown;
use member_infra::config::{SearchEngine, Settings};
use member_infra::stores::Store;
use member_projections::{MemberDocument, MemberReader, Target};
use sqlx::PgPool;
use uuid::Uuid;

pub struct TestStack {
    pub settings: Settings,
    pub pool: PgPool,
    pub command_api: Option<SocketAddr>,
    pub query_api: Option<SocketAddr>,
    stores: std::collections::BTreeMap<Target, Store>,
    server: crate::server::Running,
    _data_dir: tempfile::TempDir,
}

/// Settings for an isolated stack: fresh databases, topic and data directory; ports 0.
pub async fn isolated_settings() -> (Settings, PgPool, tempfile::TempDir) {
    let (pool, url) = crate::postgres::fresh_event_store_with_url().await;
    isolated_settings_on(pool, url)
}

/// [`isolated_settings`] over an event-store database the test made itself (`url`, `pool`),
/// e.g. on a private cluster.
pub fn isolated_settings_on(pool: PgPool, url: String) -> (Settings, PgPool, tempfile::TempDir) {
    let mut settings = crate::settings();
    settings.postgres.url = url.into();
    settings.postgres.max_connections = NonZeroU32::new(10).unwrap();
    settings.kafka = crate::kafka::test_topic(3);
    let prefix = crate::unique("member_t");
    settings.mysql.databases = (0..4).map(|i| format!("{prefix}_db_{i}")).collect();
    settings.mysql.logical_shards = 16;
    settings.mysql.max_connections = NonZeroU32::new(4).unwrap();
    let data_dir = tempfile::tempdir().expect("temp dir");
    settings.data_dir = data_dir.path().to_path_buf();
    settings.search.refresh_ms = 100;
    // Indices of the test's own on the shared clusters (started if they do not answer).
    settings.search.elasticsearch.index_prefix = crate::unique("member_t");
    settings.search.elasticsearch.shards = NonZeroU32::MIN;
    if settings.search.engine == SearchEngine::Elasticsearch {
        for cluster in member_infra::search::SearchCluster::ALL {
            crate::elasticsearch::ensure_cluster(cluster);
        }
    }
    settings.command_api.listen = "127.0.0.1:0".parse().unwrap();
    settings.query_api.listen = "127.0.0.1:0".parse().unwrap();
    settings.relay.idle_poll_ms = 10;
    settings.projector.max_wait_ms = 20;
    (settings, pool, data_dir)
}

pub async fn spawn_app(roles: &[Role]) -> TestStack {
    let (settings, pool, data_dir) = isolated_settings().await;
    spawn_app_with(settings, pool, data_dir, roles).await
}

pub async fn spawn_app_with(
    settings: Settings,
    pool: PgPool,
    data_dir: tempfile::TempDir,
    roles: &[Role],
) -> TestStack {
    let app = App::build(&settings, roles).await.expect("the app builds");
    let command_api = app.command_api_addr();
    let query_api = app.query_api_addr();
    let stores = app.stores().clone();
    let server =
        crate::server::Running::spawn(|shutdown| app.run_until_stopped(Shutdown::on(shutdown)));
    TestStack {
        settings,
        pool,
        command_api,
        query_api,
        stores,
        server,
        _data_dir: data_dir,
    }
}

impl TestStack {
    pub fn command_url(&self, path: &str) -> String {
        format!(
            "http://{}{}",
            self.command_api.expect("command api role"),
            path
        )
    }

    pub fn query_url(&self, path: &str) -> String {
        format!("http://{}{}", self.query_api.expect("query api role"), path)
    }

    /// A reader of a target's store: the app's own when it opened it, otherwise a new one.
    pub async fn reader(&self, target: Target) -> Arc<dyn MemberReader> {
        match self.stores.get(&target) {
            Some(store) => store.reader(),
            None => Store::open(target, &self.settings)
                .await
                .expect("open store")
                .reader(),
        }
    }

    /// The truth: every member folded from the event store.
    pub async fn truth(&self) -> std::collections::HashMap<Uuid, MemberDocument> {
        member_infra::event_store::replay::all_documents(&self.pool, &crate::vault())
            .await
            .expect("fold the event store")
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.server.stop().await
    }
}

/// Waits until `reader` serves exactly the truth for every member, by id and by each identity
/// (`timeout` at most); panics with the first difference otherwise.
pub async fn wait_converged(
    reader: &dyn MemberReader,
    truth: &std::collections::HashMap<Uuid, MemberDocument>,
    timeout: std::time::Duration,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let difference = first_difference(reader, truth).await;
        match difference {
            None => return,
            Some(d) if tokio::time::Instant::now() > deadline => {
                panic!("{} did not converge: {d}", reader.target())
            }
            Some(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
}

async fn first_difference(
    reader: &dyn MemberReader,
    truth: &std::collections::HashMap<Uuid, MemberDocument>,
) -> Option<String> {
    for (id, doc) in truth {
        match reader.by_id(*id).await {
            Ok(Some(stored)) if &stored == doc => {}
            Ok(other) => {
                return Some(format!(
                    "member {id}: expected version {}, found {:?}",
                    doc.version,
                    other.map(|d| d.version)
                ))
            }
            Err(e) => return Some(format!("member {id}: {e}")),
        }
        for identity in &doc.identities {
            match reader.by_identity(&identity.key).await {
                Ok(Some(stored)) if stored.member_id == *id => {}
                Ok(other) => {
                    return Some(format!(
                        "member {id}: a {} lookup found {:?}",
                        identity.key.kind(),
                        other.map(|d| d.member_id)
                    ))
                }
                Err(e) => return Some(format!("member {id}: {e}")),
            }
        }
    }
    None
}
