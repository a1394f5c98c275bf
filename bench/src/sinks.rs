//! Sink batch throughput: one batch of 10,000 records (2,000 members: registered, then mobile,
//! card, unionid and openid bound) applied to MySQL, Redis A and each embedded search cluster,
//! then the same batch again (every write a version-guarded no-op). The sink tests only check
//! that every document of such a batch lands; the rates are measured here.

use std::time::Instant;

use anyhow::Context;
use member_domain::MemberEvent;
use member_infra::mysql::MysqlShards;
use member_infra::redis::{Expiry, RedisCenter};
use member_infra::search::tantivy::cluster_dir;
use member_infra::search::{SearchCluster, TantivyIndex};
use member_projections::fixtures::MemberHistory;
use member_projections::{MemberRecord, Sink};
use member_tests::sink_contract::Ids;
use uuid::Uuid;

use crate::isolated::Isolated;
use crate::report::{Report, Row};

const MEMBERS: usize = 2_000;

fn batch() -> Vec<MemberRecord> {
    let mut records = Vec::with_capacity(MEMBERS * 5);
    for _ in 0..MEMBERS {
        let ids = Ids::fresh();
        let mut h = MemberHistory::new(Uuid::now_v7());
        h.push(MemberEvent::MemberRegistered {}, None);
        for identity in [&ids.mobile, &ids.card, &ids.unionid, &ids.openid] {
            h.push(
                MemberEvent::IdentityBound {
                    identity: identity.clone(),
                },
                Some(1),
            );
        }
        records.extend(h.records().iter().cloned());
    }
    records
}

/// Applies the batch twice to `sink` and reports both timings.
async fn measure(
    report: &mut Report,
    sink: &dyn Sink,
    records: &[MemberRecord],
) -> anyhow::Result<()> {
    let started = Instant::now();
    sink.apply(records)
        .await
        .with_context(|| format!("{}: applying the batch", sink.target()))?;
    let first = started.elapsed().as_secs_f64();
    let started = Instant::now();
    sink.apply(records)
        .await
        .with_context(|| format!("{}: applying the batch again", sink.target()))?;
    let again = started.elapsed().as_secs_f64();
    report.row(Row::new(
        format!(
            "{}: one batch of {} records ({MEMBERS} documents)",
            sink.target(),
            records.len()
        ),
        format!(
            "{:.0} ms, {:.0} records/s; the same batch again (guarded no-ops) {:.0} ms",
            first * 1000.0,
            records.len() as f64 / first,
            again * 1000.0
        ),
    ));
    Ok(())
}

/// Adds the MariaDB databases it creates to `created` (for the environment to drop).
pub async fn bench(
    report: &mut Report,
    env: &Isolated,
    created: &mut Vec<String>,
) -> anyhow::Result<()> {
    let records = batch();
    let mut mysql = env.settings.mysql.clone();
    mysql.databases = (0..4)
        .map(|i| format!("member_b_{}_sinks_db_{i}", env.tag))
        .collect();
    mysql.logical_shards = 64;
    created.extend(mysql.databases.iter().cloned());
    let shards = MysqlShards::connect(&mysql)
        .await
        .context("connecting to the sink benchmark's mysql databases")?;
    shards.migrate().await.context("migrating them")?;
    measure(report, &shards, &records).await?;
    shards.close().await;

    let redis = RedisCenter::new(
        "redis-a",
        &env.redis_a.url(),
        Expiry::from_settings(&env.settings.redis),
    )?;
    measure(report, &redis, &records).await?;

    for cluster in SearchCluster::ALL {
        let index = TantivyIndex::open(
            &cluster_dir(&env.dir.join("sinks-search"), cluster),
            cluster,
            std::time::Duration::from_secs(3600),
        )
        .await?;
        measure(report, &index, &records).await?;
        index.close().await?;
    }
    Ok(())
}
