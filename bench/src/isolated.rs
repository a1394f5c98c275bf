//! An isolated environment for one benchmark or drill: its own event-store database, MariaDB
//! databases, Kafka topic, search directory and two private Redis servers (centers A and B), and
//! the `MEMBER_CONFIG` file that points the `member` binary at them. The developer's data and the
//! machine's own Redis servers are never touched.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use member_infra::config::Settings;
use sqlx::{Connection, PgConnection};

use crate::private_redis::{free_port, PrivateRedis};

pub struct Isolated {
    pub tag: String,
    pub dir: PathBuf,
    pub config_file: PathBuf,
    pub settings: Settings,
    pub redis_a: PrivateRedis,
    pub redis_b: PrivateRedis,
    base: Settings,
    pg_database: String,
}

/// How the environment points at the shared servers (Redis A and MariaDB can be put behind a
/// proxy by the drill).
#[derive(Default, Clone)]
pub struct Overrides {
    pub redis_a_url: Option<String>,
    pub mysql_url: Option<String>,
    pub kafka_brokers: Option<String>,
    /// The drill's own search-primary node (it SIGKILLs it).
    pub search_primary_url: Option<String>,
}

impl Isolated {
    /// `name` is a short label (`run`, `freshness`, `drill`); names get a time-based tag.
    pub async fn create(work_dir: &Path, name: &str, overrides: Overrides) -> anyhow::Result<Self> {
        let tag = format!("{name}_{}", chrono::Utc::now().format("%Y%m%d%H%M%S"));
        let dir = std::fs::canonicalize(work_dir)
            .context("the work directory exists")?
            .join(&tag);
        std::fs::create_dir_all(dir.join("logs")).context("creating the work directory")?;
        let base = Settings::load().context("loading the member configuration")?;
        let pg_database = format!("member_bench_{tag}");
        let mut admin = PgConnection::connect(base.postgres.url.expose_secret())
            .await
            .context("connecting to PostgreSQL (is the stack up? make stack-up)")?;
        sqlx::query(&format!("CREATE DATABASE {pg_database}"))
            .execute(&mut admin)
            .await
            .context("creating the benchmark's event-store database")?;
        let redis_a = PrivateRedis::start(&dir.join("logs"))?;
        let redis_b = PrivateRedis::start(&dir.join("logs"))?;
        let redis_a_url = overrides.redis_a_url.unwrap_or_else(|| redis_a.url());
        let command: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let query: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let pg_url = with_database(base.postgres.url.expose_secret(), &pg_database);
        let mysql_url = overrides
            .mysql_url
            .unwrap_or_else(|| base.mysql.url.expose_secret().to_owned());
        let databases: Vec<String> = (0..4).map(|i| format!("member_b_{tag}_db_{i}")).collect();
        let config_file = dir.join("member.toml");
        let mut toml = String::new();
        writeln!(
            toml,
            "data_dir = {:?}",
            dir.join("data").display().to_string()
        )?;
        writeln!(toml, "[postgres]\nurl = {pg_url:?}")?;
        writeln!(
            toml,
            "[mysql]\nurl = {mysql_url:?}\ndatabases = {databases:?}"
        )?;
        writeln!(toml, "[redis.a]\nurl = {redis_a_url:?}")?;
        writeln!(toml, "[redis.b]\nurl = {:?}", redis_b.url())?;
        writeln!(toml, "[kafka]\ntopic = \"member.bench.{tag}\"")?;
        if let Some(brokers) = &overrides.kafka_brokers {
            writeln!(toml, "brokers = {brokers:?}")?;
        }
        // Elasticsearch indices of the benchmark's own on the shared clusters.
        writeln!(
            toml,
            "[search.elasticsearch]\nindex_prefix = \"member_b_{}\"",
            tag.to_lowercase()
        )?;
        if let Some(url) = &overrides.search_primary_url {
            writeln!(toml, "primary_url = {url:?}")?;
        }
        // The shipped quotas (5,000 reads/s per caller, 20,000/s in all; 10,000 writes/s for the
        // writer, 20,000/s in all) would cap the measurement itself: the benchmark measures
        // capacity, so its callers get quotas it cannot reach.
        writeln!(
            toml,
            "[command_api]\nlisten = \"{command}\"\n\
             write_rate_per_second = 10000000\nwrite_burst = 10000000"
        )?;
        writeln!(toml, "[query_api]\nlisten = \"{query}\"")?;
        // Benchmarks start several relay and projector processes: any free port each.
        writeln!(
            toml,
            "[telemetry]\nrelay_listen = \"127.0.0.1:0\"\nprojector_listen = \"127.0.0.1:0\""
        )?;
        // The per-key hotspot limit too (200/s a key): a Zipf draw sends thousands a second to
        // its top keys, and the lookups would be measured as 429s.
        writeln!(
            toml,
            "[query_api.flow]\nglobal_rate_per_second = 10000000\nglobal_burst = 10000000\n\
             hotspot_rate_per_second = 10000000\nhotspot_burst = 10000000"
        )?;
        for (name, key, scopes, class) in [
            ("bench-writer", "local-writer-key", "[\"write\"]", None),
            (
                "bench-order",
                "local-order-key",
                "[\"read\"]",
                Some("order"),
            ),
            (
                "bench-marketing",
                "local-marketing-key",
                "[\"read\"]",
                Some("marketing"),
            ),
            (
                "bench-admin",
                "local-admin-key",
                "[\"admin\", \"erase\"]",
                None,
            ),
        ] {
            writeln!(
                toml,
                "[[callers]]\nname = {name:?}\nkey = {key:?}\nscopes = {scopes}\n\
                 rate_per_second = 10000000\nburst = 10000000\n\
                 write_rate_per_second = 10000000\nwrite_burst = 10000000"
            )?;
            if let Some(class) = class {
                writeln!(toml, "class = {class:?}")?;
            }
        }
        std::fs::write(&config_file, toml).context("writing the benchmark configuration")?;
        let settings = Settings::load_from(
            Some(config_file.to_str().context("utf-8 path")?),
            std::env::vars(),
        )
        .context("loading the benchmark configuration")?;
        Ok(Self {
            tag,
            dir,
            config_file,
            settings,
            redis_a,
            redis_b,
            base,
            pg_database,
        })
    }

    /// The environment of a `member` child process.
    pub fn member_env(&self) -> Vec<(String, String)> {
        vec![(
            "MEMBER_CONFIG".to_owned(),
            self.config_file.display().to_string(),
        )]
    }

    pub fn command_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.settings.command_api.listen)
    }

    pub fn query_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.settings.query_api.listen)
    }

    pub async fn pg_pool(&self) -> anyhow::Result<sqlx::PgPool> {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(self.settings.postgres.url.expose_secret())
            .await
            .context("connecting to the benchmark's event store")
    }

    /// A new, never-used database name on the PostgreSQL server (for pgbench).
    pub async fn extra_pg_database(&self, suffix: &str) -> anyhow::Result<String> {
        let name = format!("{}_{suffix}", self.pg_database);
        let mut admin = PgConnection::connect(self.base.postgres.url.expose_secret()).await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .with_context(|| format!("creating database {name}"))?;
        Ok(name)
    }

    pub fn pg_url_of(&self, database: &str) -> String {
        with_database(self.base.postgres.url.expose_secret(), database)
    }

    /// Drops every database this environment created (PostgreSQL and MariaDB) and its indices
    /// and templates on the three Elasticsearch clusters. Left behind, a run's indices (six
    /// shards each, on three one-node clusters with 512 MB heaps) slowed every later run.
    pub async fn drop_databases(&self, extra_pg: &[String], extra_mysql: &[String]) {
        let es = &self.settings.search.elasticsearch;
        let prefix = &es.index_prefix;
        let client = reqwest::Client::new();
        for url in [&es.primary_url, &es.backup_url, &es.marketing_url] {
            let base = url.expose_secret().trim_end_matches('/');
            for path in [
                format!("{prefix}*?expand_wildcards=all"),
                format!("_index_template/{prefix}*"),
            ] {
                let _ = client
                    .delete(format!("{base}/{path}"))
                    .timeout(std::time::Duration::from_secs(60))
                    .send()
                    .await;
            }
        }
        if let Ok(mut admin) = PgConnection::connect(self.base.postgres.url.expose_secret()).await {
            for db in std::iter::once(&self.pg_database).chain(extra_pg) {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await;
            }
        }
        if let Ok(mut admin) =
            sqlx::MySqlConnection::connect(self.base.mysql.url.expose_secret()).await
        {
            for db in self.settings.mysql.databases.iter().chain(extra_mysql) {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS `{db}`"))
                    .execute(&mut admin)
                    .await;
            }
        }
    }
}

fn with_database(url: &str, database: &str) -> String {
    match url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{database}"),
        None => format!("{url}/{database}"),
    }
}
