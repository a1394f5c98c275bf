//! Opening the read store of a projection target: the one place that knows which adapter serves
//! which target under the current configuration.

use std::sync::Arc;

use anyhow::Context;
use member_projections::{CacheFill, MemberReader, Sink, Target};

use crate::config::Settings;
use crate::mysql::MysqlShards;
use crate::redis::RedisCenter;
use crate::search::{SearchCluster, SearchIndex};

/// An opened read store; cheap to clone, shared by its projector and by readers.
#[derive(Clone)]
pub enum Store {
    Mysql(Arc<MysqlShards>),
    Redis(Arc<RedisCenter>),
    Search(SearchIndex),
}

impl Store {
    /// Connects to (and, for MySQL, migrates) the store of `target`.
    pub async fn open(target: Target, settings: &Settings) -> anyhow::Result<Self> {
        Ok(match target {
            Target::Mysql => {
                let shards = MysqlShards::connect(&settings.mysql)
                    .await
                    .context("connecting to the mysql shards (mysql.url, mysql.databases)")?;
                shards
                    .migrate()
                    .await
                    .context("migrating the mysql shards")?;
                Store::Mysql(Arc::new(shards))
            }
            Target::RedisA | Target::RedisB => Store::Redis(Arc::new(
                RedisCenter::for_target(target.as_str(), &settings.redis)
                    .with_context(|| format!("configuring {target} (redis.*.url)"))?,
            )),
            Target::SearchPrimary | Target::SearchBackup | Target::SearchMarketing => {
                let cluster: SearchCluster = target
                    .as_str()
                    .trim_start_matches("search-")
                    .parse()
                    .context("search cluster name")?;
                Store::Search(
                    SearchIndex::open(settings, cluster)
                        .await
                        .with_context(|| format!("opening the {target} index (search.*)"))?,
                )
            }
        })
    }

    pub fn sink(&self) -> Arc<dyn Sink> {
        match self {
            Store::Mysql(s) => s.clone(),
            Store::Redis(s) => s.clone(),
            Store::Search(s) => s.sink(),
        }
    }

    pub fn reader(&self) -> Arc<dyn MemberReader> {
        match self {
            Store::Mysql(s) => s.clone(),
            Store::Redis(s) => s.clone(),
            Store::Search(s) => s.reader(),
        }
    }

    /// The reader the query API uses: for a Redis center with `redis.client_cache_capacity`
    /// above 0, the center behind its tracked in-process cache (ADR 0038). Starts the tracking
    /// task: call it inside the runtime.
    pub fn query_reader(&self, settings: &Settings) -> Arc<dyn MemberReader> {
        match self {
            Store::Redis(s) if settings.redis.client_cache_capacity > 0 => {
                Arc::new(crate::redis::tracked::TrackedCenter::start(
                    (**s).clone(),
                    settings.redis.client_cache_capacity as usize,
                ))
            }
            _ => self.reader(),
        }
    }

    /// The cache-fill port, for the Redis centers.
    pub fn cache(&self) -> Option<Arc<dyn CacheFill>> {
        match self {
            Store::Redis(s) => Some(s.clone()),
            _ => None,
        }
    }
}
