//! `member rebuild`: rebuilds read stores from the event store at full speed, then hands them
//! over to the live projectors with no gap (docs/decisions/0009-rebuild-and-hand-over.md).
//!
//! 1. Note where the topic ends (`start`): everything published before lies in the fold below.
//! 2. Fold the event store member by member and bulk-write each final document into a store that
//!    readers do not see yet: a new MySQL table set, a new tantivy generation. (Redis is a cache
//!    and Elasticsearch has no blue-green here yet: they are written in place, under the same
//!    guards as the live projector, so readers only ever see newer documents.)
//! 3. Catch up with the topic from `start` to its end now (`caught_up`).
//! 4. Hand over: promote the table set (one atomic rename per database) / pause the owner of the
//!    live index and swap the generation in. Records the live projector applied to the old store
//!    meanwhile are on the topic, so a last catch-up (`caught_up` to the end after the pause or
//!    promotion) applies them to the new store. Every write is version-guarded, so the overlap
//!    with the live projector is harmless.
//!
//! The first SIGINT/SIGTERM during steps 1-3 stops the rebuild: the partial build (table set,
//! generation) is removed and the live stores are untouched, so running the command again
//! starts over. The hand-over (step 4) is short and always completes once begun.
//!
//! Re-sharding MySQL is a rebuild into other databases (`--databases`): the new layout's
//! projector consumer group gets the rebuild's final offsets, so the projector started with the
//! new configuration continues exactly where the rebuild stopped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::try_join_all;
use member_infra::config::{MysqlSettings, SearchEngine, Settings};
use member_infra::event_store::replay;
use member_infra::kafka::offsets::{self, Offsets, RangeReader};
use member_infra::mysql::{MysqlShards, TableSet};
use member_infra::redis::RedisCenter;
use member_infra::search::tantivy::{cluster_dir, NextGeneration};
use member_infra::search::{ElasticsearchIndex, SearchCluster, SearchIndex};
use member_projections::projector::backoff;
use member_projections::snapshot::snapshot_records;
use member_projections::{MemberRecord, Sink, SinkError, Target};
use serde::Serialize;
use sqlx::PgPool;

use super::progress;
use crate::shutdown::{Interrupted, Shutdown};

/// What to rebuild.
#[derive(Debug, Clone)]
pub struct RebuildPlan {
    pub targets: Vec<Target>,
    /// Re-shard: build MySQL in these settings' databases instead of the configured ones.
    pub reshard: Option<MysqlSettings>,
    /// Members per bulk write.
    pub batch: usize,
}

/// The plan of `member rebuild --target ... [--databases ...] [--logical-shards N]`.
pub fn plan(
    settings: &Settings,
    targets: &[String],
    databases: Option<Vec<String>>,
    logical_shards: Option<u32>,
    batch: usize,
) -> anyhow::Result<RebuildPlan> {
    let mut chosen = Vec::new();
    for name in targets {
        if name == "all" {
            chosen.extend(Target::ALL);
        } else {
            chosen.push(name.parse::<Target>().map_err(|e| anyhow::anyhow!("{e}"))?);
        }
    }
    chosen.sort();
    chosen.dedup();
    let reshard = match (databases, logical_shards) {
        (None, None) => None,
        (databases, shards) => {
            if !chosen.contains(&Target::Mysql) {
                anyhow::bail!(
                    "--databases and --logical-shards re-shard mysql: add --target mysql"
                );
            }
            let mut mysql = settings.mysql.clone();
            if let Some(databases) = databases {
                if let Some(shared) = databases
                    .iter()
                    .find(|d| settings.mysql.databases.contains(d))
                {
                    anyhow::bail!(
                        "database {shared} is already in mysql.databases: a re-shard builds into \
                         databases the live layout does not use"
                    );
                }
                mysql.databases = databases;
            }
            if let Some(shards) = shards {
                mysql.logical_shards = shards;
            }
            Some(mysql)
        }
    };
    Ok(RebuildPlan {
        targets: chosen,
        reshard,
        batch,
    })
}

/// The report as a few lines for a terminal.
pub fn render(report: &RebuildReport) -> String {
    let mut out = format!(
        "rebuilt {} from {} members in {:.1} s (fold {:.1} s, {} records caught up from the topic)\n",
        report.targets.join(", "),
        report.members,
        report.total_seconds,
        report.fold_seconds,
        report.records_caught_up
    );
    if let Some(group) = &report.reshard_group {
        out.push_str(&format!(
            "re-shard: consumer group {group} holds the new layout's position; set mysql.databases \
             (and mysql.logical_shards) to the new layout and restart the mysql projector and the \
             query APIs\n"
        ));
    }
    out
}

/// What a rebuild did.
#[derive(Debug, Clone, Serialize)]
pub struct RebuildReport {
    pub targets: Vec<String>,
    pub members: u64,
    pub records_caught_up: u64,
    pub fold_seconds: f64,
    /// When each store had every folded document (seconds from the start of the fold): the
    /// per-store rebuild rate is `members / seconds`.
    pub written_seconds: std::collections::BTreeMap<String, f64>,
    pub total_seconds: f64,
    /// For a re-shard: the consumer group that now holds the new layout's position.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reshard_group: Option<String>,
}

/// A store being rebuilt, and how it is handed over.
enum Building {
    /// A new table set, promoted to `live` at the end.
    Mysql {
        next: Arc<MysqlShards>,
        live: MysqlSettings,
        reshard: bool,
    },
    /// Written in place.
    InPlace(Target, Arc<dyn Sink>),
    /// A new generation of an embedded index.
    Tantivy(NextGeneration),
    /// A new generation of both Elasticsearch indices, swapped in behind the aliases.
    Elasticsearch {
        live: Arc<ElasticsearchIndex>,
        next: Arc<ElasticsearchIndex>,
    },
}

impl Building {
    fn sink(&self) -> Arc<dyn Sink> {
        match self {
            Building::Mysql { next, .. } => next.clone(),
            Building::InPlace(_, sink) => sink.clone(),
            Building::Tantivy(next) => next.sink(),
            Building::Elasticsearch { next, .. } => next.clone(),
        }
    }
}

/// Name of the table set a MySQL rebuild writes before promoting it.
const NEXT_SET: &str = "next";

/// How long a catch-up waits for a record before deciding the broker is down.
const STALL: Duration = Duration::from_secs(30);

pub async fn rebuild(
    settings: &Settings,
    pool: &PgPool,
    plan: &RebuildPlan,
    shutdown: &Shutdown,
) -> anyhow::Result<RebuildReport> {
    let started = Instant::now();
    member_infra::kafka::ensure_topic(&settings.kafka, &settings.kafka.topic)
        .await
        .context("creating the topic (kafka.brokers)")?;
    let start = offsets::end_offsets(&settings.kafka)
        .await
        .context("reading where the topic ends (kafka.brokers)")?;
    let mut building = Vec::new();
    for &target in &plan.targets {
        building.push(
            prepare(settings, target, plan.reshard.as_ref())
                .await
                .with_context(|| format!("preparing {target}"))?,
        );
    }
    let sinks: Vec<Arc<dyn Sink>> = building.iter().map(Building::sink).collect();

    let total = replay::member_count(pool)
        .await
        .context("counting members in the event store")?;
    for b in &building {
        if let Building::Tantivy(next) = b {
            next.begin_bulk_load().await;
        }
    }
    let bar = progress::bar("fold", Some(total));
    let vault = crate::app::vault(settings);
    let folded = fold_into(pool, &vault, &sinks, plan.batch, &bar, shutdown).await;
    bar.finish();
    if shutdown.is_requested() {
        return Err(abandon(building).await);
    }
    let (members, written_seconds) = folded?;
    for b in &building {
        if let Building::Tantivy(next) = b {
            next.finish_bulk_load()
                .await
                .context("committing the bulk-loaded index")?;
        }
    }
    let fold_seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        members,
        seconds = fold_seconds,
        "folded the event store into the new stores"
    );

    let caught_up = offsets::end_offsets(&settings.kafka)
        .await
        .context("reading where the topic ends")?;
    let caught_up_records = catch_up(
        settings,
        &start,
        &caught_up,
        &sinks,
        "catch-up",
        Some(shutdown),
    )
    .await;
    if shutdown.is_requested() {
        return Err(abandon(building).await);
    }
    let mut records = caught_up_records?;

    let mut reshard_group = None;
    for b in building {
        let (applied, group) = hand_over(settings, b, &caught_up).await?;
        records += applied;
        reshard_group = reshard_group.or(group);
    }
    Ok(RebuildReport {
        targets: plan.targets.iter().map(|t| t.as_str().to_owned()).collect(),
        members,
        records_caught_up: records,
        fold_seconds,
        written_seconds,
        total_seconds: started.elapsed().as_secs_f64(),
        reshard_group,
    })
}

/// Removes what a stopped rebuild built (the live stores were not touched) and says so.
async fn abandon(building: Vec<Building>) -> anyhow::Error {
    for b in building {
        match b {
            Building::Mysql { next, .. } => {
                if let Err(e) = next.drop_table_set().await {
                    tracing::warn!(error = %e, "could not drop the partial table set (the next rebuild drops it)");
                }
            }
            Building::Tantivy(next) => next.abandon().await,
            Building::Elasticsearch { live, next } => {
                if let Err(e) = live.abandon(&next).await {
                    tracing::warn!(error = %e, "could not drop the partial indices (the next rebuild drops them)");
                }
            }
            Building::InPlace(..) => {}
        }
    }
    Interrupted::new(
        "the rebuild stopped before the hand-over and removed its partial build; the live \
         stores are unchanged (redis, written in place, only got newer documents); run the \
         same command again to rebuild from the start",
    )
    .into()
}

async fn prepare(
    settings: &Settings,
    target: Target,
    reshard: Option<&MysqlSettings>,
) -> anyhow::Result<Building> {
    Ok(match target {
        Target::Mysql => {
            let live = reshard.cloned().unwrap_or_else(|| settings.mysql.clone());
            let next = MysqlShards::connect_table_set(&live, TableSet::new(NEXT_SET)?)
                .await
                .context("connecting to the mysql shards (mysql.url, mysql.databases)")?;
            // Creates the databases of a new layout; then starts from empty tables.
            next.migrate().await.context("creating the databases")?;
            next.drop_table_set()
                .await
                .context("dropping a leftover table set")?;
            next.migrate().await.context("creating the new table set")?;
            Building::Mysql {
                next: Arc::new(next),
                live,
                reshard: reshard.is_some(),
            }
        }
        Target::RedisA | Target::RedisB => Building::InPlace(
            target,
            Arc::new(
                RedisCenter::for_target(target.as_str(), &settings.redis)
                    .with_context(|| format!("configuring {target} (redis.*.url)"))?,
            ),
        ),
        Target::SearchPrimary | Target::SearchBackup | Target::SearchMarketing => {
            let cluster: SearchCluster = target.as_str().parse()?;
            match settings.search.engine {
                SearchEngine::Tantivy => Building::Tantivy(
                    NextGeneration::create(cluster_dir(&settings.data_dir, cluster), cluster)
                        .await?,
                ),
                SearchEngine::Elasticsearch => {
                    let SearchIndex::Elasticsearch(live) = SearchIndex::open(settings, cluster)
                        .await
                        .with_context(|| {
                            format!("connecting to {target} (search.elasticsearch.*)")
                        })?
                    else {
                        anyhow::bail!("{target}: search.engine is elasticsearch, the index is not");
                    };
                    let next = Arc::new(
                        live.next_generation()
                            .await
                            .context("creating the next generation of the indices")?,
                    );
                    Building::Elasticsearch { live, next }
                }
            }
        }
    })
}

/// Folds the event store and writes every final document into every sink. Each sink has its own
/// writer task and queue, so the fold runs ahead of the writes and a fast store is not held
/// back batch by batch by a slow one (the slowest store bounds the total, not the sum of the
/// slowest per batch).
async fn fold_into(
    pool: &PgPool,
    vault: &member_infra::event_store::vault::Vault,
    sinks: &[Arc<dyn Sink>],
    batch: usize,
    bar: &indicatif::ProgressBar,
    shutdown: &Shutdown,
) -> anyhow::Result<(u64, std::collections::BTreeMap<String, f64>)> {
    /// Batches queued per sink: bounds memory to a few batches per store.
    const QUEUE: usize = 4;
    let started = Instant::now();
    let mut queues = Vec::new();
    let mut writers = Vec::new();
    for (i, sink) in sinks.iter().enumerate() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Arc<(usize, Vec<MemberRecord>)>>(QUEUE);
        queues.push(tx);
        let sink = sink.clone();
        // The first sink's progress is the bar's: every sink writes the same members.
        let bar = (i == 0).then(|| bar.clone());
        writers.push(tokio::spawn(async move {
            while let Some(work) = rx.recv().await {
                let (members, records) = &*work;
                apply_with_retry(sink.as_ref(), records).await?;
                if let Some(bar) = &bar {
                    bar.inc(*members as u64);
                }
            }
            Ok::<_, SinkError>((sink.target().to_owned(), started.elapsed().as_secs_f64()))
        }));
    }
    let folded = replay::for_each_batch(pool, vault, batch, |docs| {
        let queues = queues.clone();
        let stopped = shutdown.is_requested();
        async move {
            if stopped {
                return Err(replay::ReplayError::Stopped("a signal".into()));
            }
            let records: Vec<MemberRecord> = docs.iter().flat_map(snapshot_records).collect();
            let work = Arc::new((docs.len(), records));
            for queue in &queues {
                queue
                    .send(work.clone())
                    .await
                    .map_err(|_| replay::ReplayError::Stopped("a writer stopped".into()))?;
            }
            Ok(())
        }
    })
    .await;
    drop(queues);
    let mut written = std::collections::BTreeMap::new();
    for writer in writers {
        // A writer error explains a stopped fold better than the fold's own error.
        let (target, seconds) = writer
            .await
            .context("a writer task failed")?
            .context("writing documents")?;
        written.insert(target, seconds);
    }
    Ok((folded.context("folding the event store")?, written))
}

/// Applies records to every sink at once, retrying a store that is briefly unavailable.
async fn apply_all(sinks: &[Arc<dyn Sink>], records: &[MemberRecord]) -> Result<(), SinkError> {
    try_join_all(
        sinks
            .iter()
            .map(|sink| apply_with_retry(sink.as_ref(), records)),
    )
    .await?;
    Ok(())
}

pub(crate) async fn apply_with_retry(
    sink: &dyn Sink,
    records: &[MemberRecord],
) -> Result<(), SinkError> {
    let mut attempt = 0;
    loop {
        match sink.apply(records).await {
            Err(SinkError::Unavailable { .. }) if attempt < 8 => {
                attempt += 1;
                tokio::time::sleep(backoff(attempt)).await;
            }
            other => return other,
        }
    }
}

/// Applies the topic's records between two positions to the sinks. Stops early (with an error)
/// when `shutdown` is requested.
async fn catch_up(
    settings: &Settings,
    from: &Offsets,
    to: &Offsets,
    sinks: &[Arc<dyn Sink>],
    label: &str,
    shutdown: Option<&Shutdown>,
) -> anyhow::Result<u64> {
    let total: i64 = to
        .iter()
        .map(|(p, end)| (end - from.get(p).copied().unwrap_or(0)).max(0))
        .sum();
    if total == 0 {
        return Ok(0);
    }
    let bar = progress::bar(label, Some(total as u64));
    let mut reader = RangeReader::new(&settings.kafka, from, to).context("reading the topic")?;
    let mut applied = 0;
    loop {
        let next = reader.next_batch(5000, STALL);
        let records = match shutdown {
            Some(shutdown) => tokio::select! {
                records = next => records,
                _ = shutdown.requested() => anyhow::bail!("stopped by a signal"),
            },
            None => next.await,
        }
        .context("reading the topic")?;
        if records.is_empty() {
            break;
        }
        apply_all(sinks, &records)
            .await
            .context("applying records")?;
        applied += records.len() as u64;
        bar.inc(records.len() as u64);
    }
    bar.finish();
    Ok(applied)
}

/// Makes a rebuilt store the live one; returns the records applied by the last catch-up, and
/// for a re-shard the consumer group given the final position.
async fn hand_over(
    settings: &Settings,
    building: Building,
    caught_up: &Offsets,
) -> anyhow::Result<(u64, Option<String>)> {
    match building {
        Building::InPlace(target, _) => {
            tracing::info!(%target, "rebuilt in place");
            Ok((0, None))
        }
        Building::Mysql {
            next,
            live,
            reshard,
        } => {
            next.promote_table_set()
                .await
                .context("promoting the new table set")?;
            let promoted = MysqlShards::connect(&live).await?;
            promoted
                .migrate()
                .await
                .context("recording the promoted tables")?;
            let end = offsets::end_offsets(&settings.kafka).await?;
            let sinks: Vec<Arc<dyn Sink>> = vec![Arc::new(promoted)];
            let applied = catch_up(settings, caught_up, &end, &sinks, "hand-over", None).await?;
            let group = if reshard {
                let mut moved = settings.clone();
                moved.mysql = live;
                let group = member_infra::kafka::projector_group(&moved, Target::Mysql);
                offsets::commit_group(&settings.kafka, &group, &end)
                    .await
                    .context("handing the position over to the new layout's projector")?;
                Some(group)
            } else {
                None
            };
            tracing::info!(target = "mysql", "promoted the rebuilt table set");
            Ok((applied, group))
        }
        Building::Elasticsearch { live, next } => {
            let target = live.cluster().target();
            // One atomic alias update: reads move from the complete old pair to the caught-up
            // new pair. The live projector writes through the alias, so from here on it writes
            // the new pair; what it applied to the old pair since the catch-up is applied again.
            let dropped = match live.swap_in(&next).await {
                Ok(dropped) => dropped,
                Err(e) => {
                    let _ = live.abandon(&next).await;
                    return Err(e).context("swapping the aliases to the new generation");
                }
            };
            let end = offsets::end_offsets(&settings.kafka).await?;
            let sinks: Vec<Arc<dyn Sink>> = vec![live.clone()];
            // A hand-over that has started always completes (ADR 0030): no shutdown here.
            let applied = catch_up(settings, caught_up, &end, &sinks, "hand-over", None).await?;
            tracing::info!(%target, index = next.index(), ?dropped, "swapped the rebuilt indices in behind the aliases");
            Ok((applied, None))
        }
        Building::Tantivy(mut next) => {
            let target = next.target();
            if let Err(e) = next.pause_owner().await {
                next.abandon().await;
                return Err(e).context("pausing the owner of the live index");
            }
            let end = offsets::end_offsets(&settings.kafka).await?;
            let sinks = vec![next.sink()];
            let applied = match catch_up(settings, caught_up, &end, &sinks, "hand-over", None).await
            {
                Ok(applied) => applied,
                Err(e) => {
                    next.abandon().await;
                    return Err(e);
                }
            };
            next.swap_in()
                .await
                .context("swapping the new generation in")?;
            tracing::info!(%target, "swapped the rebuilt generation in");
            Ok((applied, None))
        }
    }
}
