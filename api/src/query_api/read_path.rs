//! The read path: near cache, then the caller class's chain of backends with fail-over,
//! monotonic reads and cache fill.
//!
//! For each backend of the chain, in order: skip it if an operator faulted it or its breaker is
//! open; otherwise call it with its timeout. An error or a timeout counts against its breaker and
//! moves on, within the same request. Then:
//! - a miss (None) from a Redis center is a cache miss: move on;
//! - a None from a search cluster or MySQL is a *negative* answer, but one that may come from a
//!   projection that is behind (a member registered a moment ago, not yet refreshed in search).
//!   A 404 on the ordering path costs an order its member, so a negative answer is confirmed by
//!   the rest of the chain: 404 only when no later backend has the member either (see
//!   docs/decisions/0007-query-path.md);
//! - a document older than one this process already served for that member is a lagging copy:
//!   move on;
//! - otherwise it is the answer. If it came from anything but the local Redis center and that
//!   center missed or held an older copy, the local center is filled (asynchronously, bounded,
//!   version- and fence-guarded by the adapter).
//!
//! Monotonic reads: the last document served per member is kept (bounded moka cache). No read
//! returns a version below it; when every backend that answered is behind it, that document is
//! served again (`last-served`). For lookups by identity the same holds for ownership: the
//! highest ownership generation served per identity is kept, so a lagging store that still shows
//! the identity's previous owner (or nothing) cannot take an answer back. When every backend is
//! down, the answer is 503, not an old copy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use member_domain::{IdentityKey, MemberStatus};
use member_infra::config::QueryCacheSettings;
use member_projections::{MemberDocument, MemberReader, SinkError, Target};
use member_read_policy::routing::{is_cache, ReadClass};
use moka::ops::compute::{CompResult, Op};
use moka::sync::Cache;
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::backends::Registry;
use super::errors::QueryError;
use super::metrics;

/// What a read looks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Id(Uuid),
    Identity(IdentityKey),
}

impl Lookup {
    /// The key of the hotspot limiter and the near cache.
    pub fn key(&self) -> String {
        match self {
            Lookup::Id(id) => format!("member:{id}"),
            Lookup::Identity(key) => format!("identity:{key}"),
        }
    }

    /// Reads the lookup from one backend. `owner` is the member (and the identity's ownership
    /// generation) this process last served for an identity: its document is read by id first,
    /// one round trip where the identity index costs two (entry, then document), and served if
    /// it still lists the identity at that generation or a later one. Anything else (the member
    /// let the identity go, the document is not there) goes through the identity index as if
    /// there were no hint, so a hint can cost a read but never change an answer.
    async fn read(
        &self,
        reader: &dyn MemberReader,
        owner: Option<(Uuid, u64)>,
    ) -> Result<Option<MemberDocument>, SinkError> {
        match self {
            Lookup::Id(id) => reader.by_id(*id).await,
            Lookup::Identity(key) => {
                if let Some((member_id, generation)) = owner {
                    let hinted = reader
                        .by_id(member_id)
                        .await?
                        .filter(|doc| doc.generation_of(key).is_some_and(|g| g >= generation));
                    metrics::cache("owner-hint", hinted.is_some());
                    if hinted.is_some() {
                        return Ok(hinted);
                    }
                }
                reader.by_identity(key).await
            }
        }
    }

    /// Whether `doc` answers this lookup.
    fn matches(&self, doc: &MemberDocument) -> bool {
        match self {
            Lookup::Id(id) => doc.member_id == *id,
            Lookup::Identity(key) => doc.generation_of(key).is_some(),
        }
    }
}

/// Whether `doc` shows the looked-up identity at an older ownership generation than the answer
/// `owner` already served for it (a lagging store still showing the previous owner).
fn older_owner(lookup: &Lookup, doc: &MemberDocument, owner: Option<(Uuid, u64)>) -> bool {
    let Lookup::Identity(identity) = lookup else {
        return false;
    };
    let generation = doc.generation_of(identity).unwrap_or(0);
    owner.is_some_and(|(_, served)| served > generation)
}

/// An erased member is a tombstone in every store (its version keeps replays from bringing it
/// back, see docs/decisions/0033); readers are told it does not exist.
fn not_erased(served: Served) -> Result<Served, QueryError> {
    if served.doc.status == MemberStatus::Erased {
        Err(QueryError::MemberNotFound)
    } else {
        Ok(served)
    }
}

/// A document and where it came from.
#[derive(Debug, Clone)]
pub struct Served {
    pub doc: Arc<MemberDocument>,
    pub from: &'static str,
}

pub struct ReadPath {
    registry: Arc<Registry>,
    /// The last document served per member (monotonic reads).
    served: Cache<Uuid, Arc<MemberDocument>>,
    /// Per identity lookup key: the member served for it and the identity's ownership
    /// generation in that answer.
    owners: Cache<String, (Uuid, u64)>,
    /// Documents of hot keys, for a short time.
    near: Cache<String, Arc<MemberDocument>>,
    fills: Arc<Semaphore>,
}

impl ReadPath {
    pub fn new(registry: Arc<Registry>, settings: &QueryCacheSettings) -> Self {
        Self {
            registry,
            served: Cache::new(settings.served_capacity.get()),
            owners: Cache::new(settings.served_capacity.get()),
            near: Cache::builder()
                .max_capacity(settings.near_cache_capacity.get())
                .time_to_live(Duration::from_millis(settings.near_cache_ttl_ms.get()))
                .build(),
            fills: Arc::new(Semaphore::new(settings.fill_concurrency.get() as usize)),
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Serves `lookup` (whose [`Lookup::key`] is `key`) for a caller of `class`. `hot` says the
    /// key is read often: its answer is kept in the near cache.
    ///
    /// The caches are read once per request and written only when an answer changes them: on
    /// the warm path a request is two cache reads and one Redis round trip.
    pub async fn read(
        &self,
        class: ReadClass,
        lookup: &Lookup,
        key: &str,
        hot: impl FnOnce() -> bool,
    ) -> Result<Served, QueryError> {
        debug_assert_eq!(key, lookup.key());
        // Ownership only grows (`remember_owner`), so what was served before this request
        // started is here; a read that overlaps this one has no order with it.
        let owner = match lookup {
            Lookup::Identity(_) => self.owners.get(key),
            Lookup::Id(_) => None,
        };
        // The local Redis center's tracked copy first: a memory read like the near cache, and
        // one that is invalidated rather than expired. Only when it misses is the key's heat
        // asked (a keyed rate limiter).
        let chain = self.registry.chain(class);
        if let Some(served) = self.served_from_memory(class.as_str(), &chain, lookup, key, owner) {
            return not_erased(served);
        }
        let hot = hot();
        // Only hot keys are put in the near cache, so a key that is not hot now is read from
        // the chain without looking (one cache read less on most requests). A key that has just
        // cooled down may still be there until its TTL; reading past it is always correct.
        let near = if hot { self.near.get(key) } else { None };
        if let Some(doc) = near {
            let floor = self.served.get(&doc.member_id).map(|d| d.version);
            if floor.is_none_or(|f| f <= doc.version) && !older_owner(lookup, &doc, owner) {
                metrics::cache("near", true);
                return not_erased(Served {
                    doc,
                    from: "near-cache",
                });
            }
            self.near.invalidate(key);
        }
        metrics::cache("near", false);
        let served = self.read_chain(class, chain, lookup, key, owner).await?;
        if hot {
            self.near.insert(key.to_owned(), served.doc.clone());
        }
        not_erased(served)
    }

    async fn read_chain(
        &self,
        class: ReadClass,
        chain: Vec<Target>,
        lookup: &Lookup,
        key: &str,
        owner: Option<(Uuid, u64)>,
    ) -> Result<Served, QueryError> {
        let class_name = class.as_str();
        let local = self.registry.local.target();
        let mut behind_member: Option<Uuid> = None;
        let mut negative = false;
        let mut local_needs_fill = false;
        for target in chain {
            let backend = self.registry.backend(target);
            if backend.faulted() {
                metrics::fallback(target, class_name, "faulted");
                continue;
            }
            if !backend.try_acquire() {
                metrics::fallback(target, class_name, "open");
                continue;
            }
            let started = Instant::now();
            let result =
                tokio::time::timeout(backend.timeout, lookup.read(&*backend.reader, owner)).await;
            let latency = started.elapsed();
            metrics::backend_latency(target, latency);
            metrics::backend_request(target, class_name);
            let found = match result {
                Ok(Ok(found)) => {
                    backend.record(true, latency);
                    found
                }
                Ok(Err(error)) => {
                    backend.record(false, latency);
                    tracing::debug!(backend = target.as_str(), %error, "backend read failed");
                    metrics::fallback(target, class_name, "error");
                    continue;
                }
                Err(_) => {
                    backend.record(false, latency);
                    metrics::fallback(target, class_name, "timeout");
                    continue;
                }
            };
            let Some(doc) = found.filter(|d| lookup.matches(d)) else {
                if is_cache(target) {
                    metrics::cache("redis", false);
                    metrics::fallback(target, class_name, "miss");
                    local_needs_fill |= target == local;
                } else {
                    negative = true;
                    metrics::fallback(target, class_name, "not_found");
                }
                continue;
            };
            let floor = self.served.get(&doc.member_id).map(|d| d.version);
            if floor.is_some_and(|f| f > doc.version) || older_owner(lookup, &doc, owner) {
                behind_member = Some(doc.member_id);
                local_needs_fill |= target == local;
                metrics::fallback(target, class_name, "stale");
                continue;
            }
            if is_cache(target) {
                metrics::cache("redis", true);
            }
            let doc = if floor == Some(doc.version) {
                // This version is the one served last: nothing to record.
                Arc::new(doc)
            } else {
                self.remember(Arc::new(doc))
            };
            if !lookup.matches(&doc) {
                // A newer version was served meanwhile, and it no longer holds the identity.
                return Err(QueryError::MemberNotFound);
            }
            self.remember_owner(lookup, key, &doc, owner);
            if target != local && local_needs_fill {
                self.fill_local(doc.clone());
            }
            metrics::served(target.as_str(), class_name);
            return Ok(Served {
                doc,
                from: target.as_str(),
            });
        }
        if negative && matches!(lookup, Lookup::Identity(_)) {
            self.refresh_last_served(class, key, behind_member).await;
        }
        self.nothing_current(class_name, lookup, key, behind_member, negative)
    }

    /// The first backend of the chain, when it is a Redis center whose reader keeps an exact
    /// copy in process memory (the tracked cache, docs/decisions/0038): its copy, if it holds
    /// one, is served without a call, a timeout or the breaker's bookkeeping (a memory read is
    /// not a backend call), under the same floors as any answer. `None`: read the chain.
    fn served_from_memory(
        &self,
        class: &'static str,
        chain: &[Target],
        lookup: &Lookup,
        key: &str,
        owner: Option<(Uuid, u64)>,
    ) -> Option<Served> {
        let target = *chain.first()?;
        if !is_cache(target) {
            return None;
        }
        let backend = self.registry.backend(target);
        if !backend.available() {
            return None;
        }
        let doc = match lookup {
            Lookup::Id(id) => backend.reader.cached_by_id(*id),
            Lookup::Identity(identity) => backend.reader.cached_by_identity(identity),
        }?;
        if !lookup.matches(&doc) {
            return None;
        }
        let floor = self.served.get(&doc.member_id).map(|d| d.version);
        if floor.is_some_and(|f| f > doc.version) || older_owner(lookup, &doc, owner) {
            // Behind what this process served: the chain decides (it reads the center, which
            // may be ahead of its cache by an invalidation in flight, then the others).
            return None;
        }
        let doc = if floor == Some(doc.version) {
            doc
        } else {
            self.remember(doc)
        };
        if !lookup.matches(&doc) {
            return None;
        }
        self.remember_owner(lookup, key, &doc, owner);
        metrics::cache("tracked", true);
        metrics::served(target.as_str(), class);
        Some(Served {
            doc,
            from: target.as_str(),
        })
    }

    /// Before an identity lookup falls back to the last copy served of its candidate members
    /// (because the stores said nobody holds the identity), reads those members by id: a store
    /// holding a newer version (one that released the identity, or the tombstone of an erased
    /// member, docs/decisions/0033) replaces the copy, so the fallback never serves what a store
    /// already knows to be gone. Only newer versions are kept: reads stay monotonic.
    async fn refresh_last_served(&self, class: ReadClass, key: &str, behind: Option<Uuid>) {
        let candidates: Vec<Uuid> = behind
            .into_iter()
            .chain(self.owners.get(key).map(|(member, _)| member))
            .filter(|m| self.served.contains_key(m))
            .collect();
        for member in candidates {
            for target in self.registry.chain(class) {
                let backend = self.registry.backend(target);
                if backend.faulted() || !backend.try_acquire() {
                    continue;
                }
                let started = Instant::now();
                let read = tokio::time::timeout(backend.timeout, backend.reader.by_id(member));
                match read.await {
                    Ok(Ok(found)) => {
                        backend.record(true, started.elapsed());
                        let last = self.served.get(&member).map_or(0, |d| d.version);
                        if let Some(doc) = found.filter(|d| d.version > last) {
                            self.remember(Arc::new(doc));
                            break;
                        }
                    }
                    _ => backend.record(false, started.elapsed()),
                }
            }
        }
    }

    /// No backend gave a current answer: serve the last served copy when backends answered with
    /// older ones (or said None for a member this process has served), 404 when they answered
    /// that nothing matches, 503 when none answered.
    fn nothing_current(
        &self,
        class: &'static str,
        lookup: &Lookup,
        key: &str,
        behind_member: Option<Uuid>,
        negative: bool,
    ) -> Result<Served, QueryError> {
        let answered = negative || behind_member.is_some();
        if !answered {
            return Err(QueryError::Unavailable);
        }
        let candidates = match lookup {
            Lookup::Id(id) => vec![*id],
            Lookup::Identity(_) => behind_member
                .into_iter()
                .chain(self.owners.get(key).map(|(member, _)| member))
                .collect(),
        };
        let owner = match lookup {
            Lookup::Identity(_) => self.owners.get(key),
            Lookup::Id(_) => None,
        };
        let last = candidates
            .into_iter()
            .filter_map(|m| self.served.get(&m))
            .find(|doc| lookup.matches(doc) && !older_owner(lookup, doc, owner));
        match last {
            Some(doc) => {
                metrics::served("last-served", class);
                Ok(Served {
                    doc,
                    from: "last-served",
                })
            }
            None => Err(QueryError::MemberNotFound),
        }
    }

    /// Records the owner served for an identity unless a later generation was recorded; `owner`
    /// is what was recorded when the request started. Generations only grow, so when that is
    /// already this generation or a later one there is nothing to write.
    fn remember_owner(
        &self,
        lookup: &Lookup,
        key: &str,
        doc: &MemberDocument,
        owner: Option<(Uuid, u64)>,
    ) {
        let Lookup::Identity(identity) = lookup else {
            return;
        };
        let generation = doc.generation_of(identity).unwrap_or(0);
        if owner.is_some_and(|(_, served)| served >= generation) {
            return;
        }
        self.owners
            .entry(key.to_owned())
            .and_compute_with(|current| match current {
                Some(entry) if entry.value().1 >= generation => Op::Nop,
                _ => Op::Put((doc.member_id, generation)),
            });
    }

    /// Records `doc` as served unless a newer version was served already; returns what to serve.
    fn remember(&self, doc: Arc<MemberDocument>) -> Arc<MemberDocument> {
        let candidate = doc.clone();
        let result = self
            .served
            .entry(doc.member_id)
            .and_compute_with(|current| match current {
                Some(entry) if entry.value().version >= candidate.version => Op::Nop,
                _ => Op::Put(candidate),
            });
        match result {
            CompResult::Unchanged(entry) if entry.value().version > doc.version => {
                entry.into_value()
            }
            _ => doc,
        }
    }

    /// Fills the local Redis center in the background; dropped when too many fills are in
    /// flight or the center is unavailable (the projector fills it anyway).
    fn fill_local(&self, doc: Arc<MemberDocument>) {
        let target: Target = self.registry.local.target();
        if !self.registry.backend(target).available() {
            metrics::fill(target, "skipped");
            return;
        }
        let Ok(permit) = self.fills.clone().try_acquire_owned() else {
            metrics::fill(target, "dropped");
            return;
        };
        let fill = self.registry.local_fill();
        let timeout = self.registry.backend(target).timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let outcome = match tokio::time::timeout(timeout, fill.fill(&doc)).await {
                Ok(Ok(true)) => "written",
                Ok(Ok(false)) => "refused",
                Ok(Err(error)) => {
                    tracing::debug!(backend = target.as_str(), %error, "cache fill failed");
                    "error"
                }
                Err(_) => "timeout",
            };
            metrics::fill(target, outcome);
        });
    }
}
