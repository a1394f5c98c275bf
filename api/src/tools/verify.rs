//! `member verify`: compares a read store with the fold of the event store and reports missing,
//! extra, stale and diverged documents and misrouted identity lookups; `--repair` rewrites them.
//!
//! The store is live while it is compared, so a difference can be projection lag: every
//! candidate is checked again after a settle delay, against a fresh fold of that member, and only
//! differences that persist are reported. Repair deletes what is wrong and writes the truth
//! through the sink's guarded path; for an embedded index owned by a running process (which no
//! other process may write), repair is a blue-green rebuild of that index.
//!
//! The first SIGINT/SIGTERM stops the comparison (verify only reads until it repairs; a repair by
//! a rebuild stops like `member rebuild`): nothing is left half-done, running the command again
//! starts over.
//!
//! The Redis centers are caches with a TTL: a member or identity they do not hold is expected
//! (expired, or not read since a flush; the query path fills on a miss), so there only wrong
//! content counts: a stale, diverged or extra document, a lookup that leads to another member.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::stream::{self, StreamExt, TryStreamExt};
use member_domain::IdentityKey;
use member_infra::config::{SearchEngine, Settings};
use member_infra::event_store::replay;
use member_infra::event_store::vault::Vault;
use member_infra::mysql::MysqlShards;
use member_infra::redis::RedisCenter;
use member_infra::search::tantivy::{cluster_dir, live_is_owned, TantivyIndex};
use member_infra::search::{ElasticsearchIndex, SearchCluster, SearchIndex};
use member_projections::snapshot::snapshot_records;
use member_projections::verify::{compare_documents, compare_lookup, Finding, FindingKind};
use member_projections::{MemberDocument, MemberReader, Sink, SinkError, Target};
use rand::Rng;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::progress;
use super::rebuild::{apply_with_retry, rebuild, RebuildPlan};
use crate::shutdown::{Interrupted, Shutdown};

#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub target: Target,
    /// Check about this many random members instead of all (and skip the full scan for extras).
    pub sample: Option<u64>,
    pub repair: bool,
    /// How long to wait before checking candidates again (projection lag).
    pub settle: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub target: String,
    pub members_checked: u64,
    pub store_documents: Option<u64>,
    /// Differences that persisted after the settle delay, before any repair.
    pub differences: BTreeMap<&'static str, u64>,
    /// Up to 20 of them.
    pub examples: Vec<Finding>,
    pub repaired: u64,
    /// Differences left after the repair (all of them when not repairing).
    pub remaining: u64,
}

/// A store as verify sees it: a reader, the list of its members, and (when this process may
/// write it) removal and a guarded sink.
struct Inspected {
    reader: Arc<dyn MemberReader>,
    /// A cache with a TTL (the Redis centers): absence is normal there (expired, or never read
    /// since a flush; the query path fills on a miss), so only wrong content is a difference.
    cache: bool,
    sink: Option<Arc<dyn Sink>>,
    kind: StoreKind,
}

enum StoreKind {
    Mysql(Arc<MysqlShards>),
    Redis(Arc<RedisCenter>),
    Tantivy(Arc<TantivyIndex>),
    Elasticsearch(Arc<ElasticsearchIndex>),
}

impl Inspected {
    async fn open(settings: &Settings, target: Target) -> anyhow::Result<Self> {
        Ok(match target {
            Target::Mysql => {
                let shards = Arc::new(MysqlShards::connect(&settings.mysql).await?);
                Inspected {
                    reader: shards.clone(),
                    cache: false,
                    sink: Some(shards.clone()),
                    kind: StoreKind::Mysql(shards),
                }
            }
            Target::RedisA | Target::RedisB => {
                let center = Arc::new(RedisCenter::for_target(target.as_str(), &settings.redis)?);
                Inspected {
                    reader: center.clone(),
                    cache: true,
                    sink: Some(center.clone()),
                    kind: StoreKind::Redis(center),
                }
            }
            Target::SearchPrimary | Target::SearchBackup | Target::SearchMarketing => {
                let cluster: SearchCluster = target.as_str().parse()?;
                if settings.search.engine == SearchEngine::Elasticsearch {
                    let SearchIndex::Elasticsearch(index) = SearchIndex::open(settings, cluster)
                        .await
                        .with_context(|| {
                            format!("connecting to {target} (search.elasticsearch.*)")
                        })?
                    else {
                        anyhow::bail!("{target}: search.engine is elasticsearch, the index is not");
                    };
                    // Elasticsearch takes writes from any process: repair writes beside the
                    // projector, guarded by the external versions.
                    return Ok(Inspected {
                        reader: index.clone(),
                        cache: false,
                        sink: Some(index.clone()),
                        kind: StoreKind::Elasticsearch(index),
                    });
                }
                let root = cluster_dir(&settings.data_dir, cluster);
                let refresh = Duration::from_secs(3600);
                let owned = live_is_owned(root.clone()).await;
                let index = Arc::new(if owned {
                    TantivyIndex::open_read_only(&root, cluster, refresh).await?
                } else {
                    TantivyIndex::open(&root, cluster, refresh).await?
                });
                Inspected {
                    reader: index.clone(),
                    cache: false,
                    sink: (!owned).then(|| index.clone() as Arc<dyn Sink>),
                    kind: StoreKind::Tantivy(index),
                }
            }
        })
    }

    async fn member_ids(&self) -> Result<Vec<Uuid>, SinkError> {
        match &self.kind {
            StoreKind::Mysql(s) => s.member_ids().await,
            StoreKind::Redis(c) => c.member_ids().await,
            StoreKind::Tantivy(i) => i.member_ids().await,
            StoreKind::Elasticsearch(i) => i.member_ids().await,
        }
    }

    async fn remove(&self, members: &[Uuid], keys: &[IdentityKey]) -> Result<(), SinkError> {
        match &self.kind {
            StoreKind::Mysql(s) => s.remove(members, keys).await,
            StoreKind::Redis(c) => c.remove(members, keys).await,
            StoreKind::Tantivy(i) => i.remove(members).await,
            StoreKind::Elasticsearch(i) => i.remove(members, keys).await,
        }
    }

    async fn refresh(&self) {
        match &self.kind {
            StoreKind::Tantivy(i) => {
                let _ = i.refresh().await;
            }
            StoreKind::Elasticsearch(i) => {
                let _ = i.refresh().await;
            }
            _ => {}
        }
    }

    async fn close(&self) {
        if let StoreKind::Tantivy(i) = &self.kind {
            let _ = i.close().await;
        }
    }
}

/// How many members are checked at once.
const CONCURRENCY: usize = 32;

pub async fn verify(
    settings: &Settings,
    pool: &PgPool,
    options: &VerifyOptions,
    shutdown: &Shutdown,
) -> anyhow::Result<VerifyReport> {
    let store = Inspected::open(settings, options.target)
        .await
        .with_context(|| format!("opening {}", options.target))?;
    let vault = crate::app::vault(settings);
    let result = verify_store(settings, (pool, &vault), options, &store, shutdown).await;
    store.close().await;
    result
}

async fn verify_store(
    settings: &Settings,
    (pool, vault): (&PgPool, &Vault),
    options: &VerifyOptions,
    store: &Inspected,
    shutdown: &Shutdown,
) -> anyhow::Result<VerifyReport> {
    let interrupted = |checked: u64| {
        anyhow::Error::from(Interrupted::new(format!(
            "verify stopped after checking {checked} members, before any repair; run the same \
             command again to verify from the start"
        )))
    };
    store.refresh().await;
    let total = replay::member_count(pool).await?;
    let probability = options
        .sample
        .map(|n| (n as f64 / total.max(1) as f64).min(1.0))
        .unwrap_or(1.0);
    let bar = progress::bar("verify", Some(total));
    let mut truth_ids: HashSet<Uuid> = HashSet::new();
    let found = Arc::new(std::sync::Mutex::new(Vec::<Finding>::new()));
    let mut checked = 0u64;
    let reader = store.reader.clone();
    let cache = store.cache;
    let folded = replay::for_each_batch(pool, vault, 1000, |docs| {
        let stopped = shutdown.is_requested();
        truth_ids.extend(docs.iter().map(|d| d.member_id));
        bar.inc(docs.len() as u64);
        let mut rng = rand::rng();
        let chosen: Vec<MemberDocument> = docs
            .into_iter()
            .filter(|_| probability >= 1.0 || rng.random_bool(probability))
            .collect();
        checked += chosen.len() as u64;
        let reader = reader.clone();
        let found = found.clone();
        async move {
            if stopped {
                return Err(replay::ReplayError::Stopped("a signal".into()));
            }
            let results: Vec<Vec<Finding>> = stream::iter(chosen)
                .map(|doc| {
                    let reader = reader.clone();
                    async move { check_member(reader.as_ref(), &doc, cache).await }
                })
                .buffer_unordered(CONCURRENCY)
                .try_collect()
                .await
                .map_err(|e| replay::ReplayError::Stopped(e.to_string()))?;
            found
                .lock()
                .expect("never poisoned")
                .extend(results.into_iter().flatten());
            Ok(())
        }
    })
    .await;
    bar.finish();
    if shutdown.is_requested() {
        return Err(interrupted(checked));
    }
    folded.context("folding the event store")?;
    let mut candidates = std::mem::take(&mut *found.lock().expect("never poisoned"));

    // Extra documents: in the store, unknown to the fold. With --sample, a sample of the store.
    let store_ids = store
        .member_ids()
        .await
        .context("listing the store's members")?;
    let store_documents = Some(store_ids.len() as u64);
    let mut rng = rand::rng();
    for id in store_ids {
        if !truth_ids.contains(&id) && (probability >= 1.0 || rng.random_bool(probability)) {
            candidates.push(Finding::document(FindingKind::Extra, id, None, None));
        }
    }

    // Projection lag: look again after the settle delay, against a fresh fold.
    let persisting = if candidates.is_empty() {
        Vec::new()
    } else {
        tokio::select! {
            _ = tokio::time::sleep(options.settle) => {}
            _ = shutdown.requested() => return Err(interrupted(checked)),
        }
        store.refresh().await;
        recheck(pool, vault, store, &candidates).await?
    };
    let mut differences = BTreeMap::new();
    for f in &persisting {
        *differences.entry(f.kind.as_str()).or_insert(0) += 1;
    }
    let examples: Vec<Finding> = persisting.iter().take(20).cloned().collect();
    let mut repaired = 0;
    let mut remaining = persisting.len() as u64;
    if options.repair && !persisting.is_empty() {
        match &store.sink {
            Some(sink) => repair(pool, vault, store, sink.as_ref(), &persisting).await?,
            None => {
                tracing::info!(target = %options.target, "the index is owned by a running process: repairing by a blue-green rebuild");
                let plan = RebuildPlan {
                    targets: vec![options.target],
                    reshard: None,
                    batch: 2000,
                };
                rebuild(settings, pool, &plan, shutdown).await?;
            }
        }
        store.refresh().await;
        let after = recheck(pool, vault, store, &persisting).await?;
        remaining = after.len() as u64;
        repaired = (persisting.len() as u64).saturating_sub(remaining);
    }
    Ok(VerifyReport {
        target: options.target.as_str().to_owned(),
        members_checked: checked,
        store_documents,
        differences,
        examples,
        repaired,
        remaining,
    })
}

/// The report as a few lines for a terminal.
pub fn render(report: &VerifyReport) -> String {
    let mut out = format!(
        "{}: {} members checked, {} documents in the store\n",
        report.target,
        report.members_checked,
        report
            .store_documents
            .map(|n| n.to_string())
            .unwrap_or_else(|| "?".into())
    );
    if report.differences.is_empty() {
        out.push_str("no differences\n");
        return out;
    }
    for (kind, n) in &report.differences {
        out.push_str(&format!("  {kind:<20} {n}\n"));
    }
    for f in &report.examples {
        out.push_str(&format!(
            "  e.g. {:<18} member {} {}{}\n",
            f.kind.as_str(),
            f.member_id,
            f.identity.as_deref().unwrap_or(""),
            match (f.expected_version, f.stored_version) {
                (Some(e), Some(s)) => format!(" (version {s}, expected {e})"),
                (Some(e), None) => format!(" (expected version {e})"),
                (None, Some(s)) => format!(" (stored version {s})"),
                (None, None) => String::new(),
            }
        ));
    }
    out.push_str(&format!(
        "repaired {}, remaining {}\n",
        report.repaired, report.remaining
    ));
    out
}

/// Compares one member's stored document and identity lookups with its folded document. In a
/// cache, a document or lookup that finds nothing is not a difference.
async fn check_member(
    reader: &dyn MemberReader,
    truth: &MemberDocument,
    cache: bool,
) -> Result<Vec<Finding>, SinkError> {
    let mut findings = Vec::new();
    let stored = reader.by_id(truth.member_id).await?;
    if cache && stored.is_none() {
        return Ok(findings);
    }
    findings.extend(compare_documents(
        truth.member_id,
        Some(truth),
        stored.as_ref(),
    ));
    for identity in &truth.identities {
        let found = reader.by_identity(&identity.key).await?;
        if cache && found.is_none() {
            continue;
        }
        findings.extend(compare_lookup(
            &identity.key,
            Some(truth.member_id),
            found.map(|d| d.member_id),
        ));
    }
    // A released identity must not lead back to this member.
    for released in &truth.released {
        let found = reader.by_identity(&released.key).await?;
        if found.as_ref().map(|d| d.member_id) == Some(truth.member_id) {
            findings.push(Finding::identity(
                FindingKind::IdentityLeaked,
                truth.member_id,
                &released.key,
            ));
        }
    }
    Ok(findings)
}

/// The candidates that are still differences now, against a fresh fold of their members.
async fn recheck(
    pool: &PgPool,
    vault: &Vault,
    store: &Inspected,
    candidates: &[Finding],
) -> anyhow::Result<Vec<Finding>> {
    let reader = store.reader.as_ref();
    let members: Vec<Uuid> = {
        let mut m: Vec<Uuid> = candidates.iter().map(|f| f.member_id).collect();
        m.sort();
        m.dedup();
        m
    };
    let mut persisting = Vec::new();
    for member in members {
        let truth = replay::document_of(pool, vault, member).await?;
        let now = match &truth {
            Some(doc) => check_member(reader, doc, store.cache).await?,
            None => {
                let stored = reader.by_id(member).await?;
                compare_documents(member, None, stored.as_ref())
                    .into_iter()
                    .collect()
            }
        };
        persisting.extend(now);
    }
    Ok(persisting)
}

/// Deletes what is wrong and writes the truth of every member concerned (and of the current
/// holders of every identity entry removed).
async fn repair(
    pool: &PgPool,
    vault: &Vault,
    store: &Inspected,
    sink: &dyn Sink,
    findings: &[Finding],
) -> anyhow::Result<()> {
    let mut remove_members = Vec::new();
    let mut remove_keys: Vec<IdentityKey> = Vec::new();
    let mut rewrite: Vec<Uuid> = Vec::new();
    for f in findings {
        match f.kind {
            FindingKind::Missing | FindingKind::Stale => rewrite.push(f.member_id),
            FindingKind::Diverged | FindingKind::Extra => {
                remove_members.push(f.member_id);
                if let Some(stored) = store.reader.by_id(f.member_id).await? {
                    remove_keys.extend(
                        stored
                            .identities
                            .iter()
                            .chain(&stored.released)
                            .map(|i| i.key.clone()),
                    );
                }
                rewrite.push(f.member_id);
            }
            FindingKind::IdentityMisrouted | FindingKind::IdentityLeaked => {
                remove_keys.extend(f.identity_key.clone());
                rewrite.push(f.member_id);
            }
        }
    }
    remove_keys.sort();
    remove_keys.dedup();
    // The members whose entries were removed get theirs back from their own truth.
    rewrite.extend(
        replay::holders_of(pool, vault, &remove_keys)
            .await?
            .into_values(),
    );
    rewrite.sort();
    rewrite.dedup();
    store
        .remove(&remove_members, &remove_keys)
        .await
        .context("removing wrong documents and entries")?;
    let mut records = Vec::new();
    for member in rewrite {
        if let Some(doc) = replay::document_of(pool, vault, member).await? {
            records.extend(snapshot_records(&doc));
        }
    }
    for chunk in records.chunks(5000) {
        apply_with_retry(sink, chunk)
            .await
            .context("writing the truth")?;
    }
    Ok(())
}
