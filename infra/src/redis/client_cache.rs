//! The in-process cache of a Redis center's keys, kept exact by server-assisted client-side
//! caching (Redis `CLIENT TRACKING` in broadcast mode over RESP3): the server pushes an
//! invalidation for every change of a key under the tracked prefixes, and the cache drops the
//! key. A warm lookup touches no network. See docs/decisions/0038-tracked-client-cache.md.
//!
//! This module is the cache itself, with no I/O: [`ClientCache`] is driven by the tracking
//! connection ([`ClientCache::go_live`], [`ClientCache::invalidate`], [`ClientCache::go_dead`])
//! and by readers ([`ClientCache::get`], [`ClientCache::begin`], [`ClientCache::complete`]).
//!
//! The race every such cache must close: a reader reads a key, the key changes, the server's
//! invalidation is processed, and only then does the reader insert what it read; the stale value
//! would stay until the next change. Here a reader takes a [`Ticket`] *before* it sends its read
//! (the sequence number of the last invalidation processed, and the tracking connection's epoch)
//! and [`ClientCache::complete`] inserts only if no invalidation touched the key's shard since
//! then, and the tracking connection that was live then still is. A change that the read does
//! not reflect happened after the server executed the read, so its invalidation is processed
//! after the ticket was taken: either before `complete` (which then drops the value) or after
//! (which removes it). Shards are many, so an invalidation of another key of the same shard
//! costs a lost insert, never a wrong one.
//!
//! When the tracking connection is not live (not yet connected, lost, reconnecting) the cache
//! serves nothing and takes nothing: invalidations may have been missed. Every transition
//! (`go_live`, `go_dead`, a `FLUSHALL` on the server) empties it.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// What the cache holds must say which of two values is newer.
pub trait Versioned: Clone {
    /// A number that only grows with each change of the stored value (a document's version, an
    /// identity entry's generation).
    fn version(&self) -> u64;
}

const SHARDS: usize = 256;

struct Shard<V> {
    entries: HashMap<Box<str>, V>,
    /// The sequence number of the last invalidation (or flush) that touched this shard.
    last_invalidation: u64,
}

/// Taken before a read is sent; lets [`ClientCache::complete`] tell whether what was read may
/// be cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    epoch: u64,
    seq: u64,
}

/// Counters for metrics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheCounts {
    pub entries: usize,
    pub invalidations: u64,
    pub flushes: u64,
}

/// The cache. Cheap operations under one of [`SHARDS`] mutexes; no await points inside.
pub struct ClientCache<V> {
    shards: Vec<Mutex<Shard<V>>>,
    hasher: RandomState,
    per_shard: usize,
    live: AtomicBool,
    /// Bumped by every `go_live` and `go_dead`.
    epoch: AtomicU64,
    /// Bumped by every invalidation and every shard cleared by a flush.
    seq: AtomicU64,
    flushes: AtomicU64,
}

impl<V: Versioned> ClientCache<V> {
    /// A cache of at most about `capacity` keys (at least one per shard). It starts not live.
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        entries: HashMap::new(),
                        last_invalidation: 0,
                    })
                })
                .collect(),
            hasher: RandomState::new(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            live: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard<V>> {
        let index = (self.hasher.hash_one(key) as usize) % SHARDS;
        // Every critical section is a few map operations that cannot leave a shard
        // inconsistent, so a poisoned lock is still usable.
        self.shards[index].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the tracking connection is live (the cache serves and takes values).
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::SeqCst)
    }

    /// The cached value of `key`, when the cache is live and holds it.
    pub fn get(&self, key: &str) -> Option<V> {
        if !self.is_live() {
            return None;
        }
        self.shard(key).entries.get(key).cloned()
    }

    /// Taken before sending a read whose result may be cached; `None` when the cache is not
    /// live (the result must not be cached).
    pub fn begin(&self) -> Option<Ticket> {
        if !self.is_live() {
            return None;
        }
        let epoch = self.epoch.load(Ordering::SeqCst);
        let seq = self.seq.load(Ordering::SeqCst);
        // Went dead (and maybe live again) between the two loads: the epoch is not the one
        // the sequence number belongs to.
        if !self.is_live() || self.epoch.load(Ordering::SeqCst) != epoch {
            return None;
        }
        Some(Ticket { epoch, seq })
    }

    /// Caches `value` read for `key` under `ticket`, unless the key's shard saw an invalidation
    /// since the ticket was taken, the tracking connection changed or was lost, or the cache
    /// holds a newer version. Returns whether it was cached.
    pub fn complete(&self, key: &str, ticket: Ticket, value: V) -> bool {
        let mut shard = self.shard(key);
        // Checked under the shard lock: `go_dead` clears this shard (under its lock) after it
        // made the cache not live, so a value inserted here is either refused or cleared.
        if !self.is_live() || self.epoch.load(Ordering::SeqCst) != ticket.epoch {
            return false;
        }
        if shard.last_invalidation > ticket.seq {
            return false;
        }
        if let Some(current) = shard.entries.get(key) {
            if current.version() >= value.version() {
                return false;
            }
        } else if shard.entries.len() >= self.per_shard {
            // Full: make room by dropping an arbitrary entry (a miss later, never a wrong read).
            if let Some(victim) = shard.entries.keys().next().cloned() {
                shard.entries.remove(&victim);
            }
        }
        shard.entries.insert(key.into(), value);
        true
    }

    /// The server says `key` changed (or expired, or was evicted).
    pub fn invalidate(&self, key: &str) {
        let mut shard = self.shard(key);
        shard.last_invalidation = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        shard.entries.remove(key);
    }

    /// Empties every shard; every ticket taken before is refused afterwards.
    pub fn flush(&self) {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard.last_invalidation = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
            shard.entries.clear();
        }
    }

    /// The tracking connection is established and tracking is on: start from empty, under a
    /// new epoch.
    pub fn go_live(&self) {
        self.live.store(false, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.flush();
        self.live.store(true, Ordering::SeqCst);
    }

    /// The tracking connection is lost: invalidations may be missed from now on, so nothing is
    /// served or taken, and what is cached is dropped.
    pub fn go_dead(&self) {
        self.live.store(false, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.flush();
    }

    pub fn counts(&self) -> CacheCounts {
        CacheCounts {
            entries: self
                .shards
                .iter()
                .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).entries.len())
                .sum(),
            invalidations: self.seq.load(Ordering::SeqCst),
            flushes: self.flushes.load(Ordering::SeqCst),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct V(u64);
    impl Versioned for V {
        fn version(&self) -> u64 {
            self.0
        }
    }

    fn live(capacity: usize) -> ClientCache<V> {
        let cache = ClientCache::new(capacity);
        cache.go_live();
        cache
    }

    #[test]
    fn serves_nothing_until_live_and_after_going_dead() {
        let cache = ClientCache::new(10);
        assert!(cache.begin().is_none());
        cache.go_live();
        let t = cache.begin().unwrap();
        assert!(cache.complete("k", t, V(1)));
        assert_eq!(cache.get("k"), Some(V(1)));
        cache.go_dead();
        assert_eq!(cache.get("k"), None);
        assert!(!cache.complete("k", t, V(2)));
        cache.go_live();
        assert_eq!(cache.get("k"), None, "going live again starts empty");
        assert!(
            !cache.complete("k", t, V(2)),
            "a ticket of an earlier epoch"
        );
    }

    #[test]
    fn a_read_that_raced_an_invalidation_is_not_cached() {
        let cache = live(10);
        let t = cache.begin().unwrap();
        cache.invalidate("k");
        assert!(!cache.complete("k", t, V(1)));
        assert_eq!(cache.get("k"), None);
        let t = cache.begin().unwrap();
        assert!(cache.complete("k", t, V(2)));
    }

    #[test]
    fn never_replaces_a_newer_version() {
        let cache = live(10);
        let (t1, t2) = (cache.begin().unwrap(), cache.begin().unwrap());
        assert!(cache.complete("k", t2, V(5)));
        assert!(!cache.complete("k", t1, V(4)));
        assert_eq!(cache.get("k"), Some(V(5)));
    }

    #[test]
    fn stays_within_capacity() {
        let cache = live(1);
        for i in 0..10_000u64 {
            let t = cache.begin().unwrap();
            cache.complete(&format!("k{i}"), t, V(i));
        }
        assert!(cache.counts().entries <= SHARDS);
    }

    /// One step of the model: the server holds a version per key; a tracked reader's read is
    /// split into its steps (ticket, server read, insert), each interleaved with writes whose
    /// invalidations arrive late, and with connection losses.
    #[derive(Debug, Clone)]
    enum Step {
        /// A write by another client: the server's version goes up; its invalidation is queued.
        Write(usize),
        /// The tracking connection delivers the oldest queued invalidation.
        Deliver,
        /// Reader `r` takes a ticket for key `k` (before sending its read).
        Begin(usize, usize),
        /// Reader `r`'s read is executed by the server.
        Execute(usize),
        /// Reader `r`'s reply is inserted.
        Complete(usize),
        /// A lookup through the cache.
        Get(usize),
        /// The tracking connection is lost (queued invalidations are lost with it) and comes back.
        Reconnect,
    }

    /// A reader's read in progress: the key, its ticket, the version the server returned.
    type Reading = (usize, Option<Ticket>, Option<u64>);

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..3usize).prop_map(Step::Write),
            Just(Step::Deliver),
            Just(Step::Deliver),
            (0..3usize, 0..3usize).prop_map(|(r, k)| Step::Begin(r, k)),
            (0..3usize).prop_map(Step::Execute),
            (0..3usize).prop_map(Step::Complete),
            (0..3usize).prop_map(Step::Get),
            Just(Step::Reconnect),
        ]
    }

    proptest! {
        /// Whatever the interleaving of reads, writes by another client, late invalidations and
        /// lost connections: once every invalidation is delivered, the cache holds only the
        /// server's current versions (nothing stale survives); a lookup never returns a version
        /// older than one whose invalidation was delivered; and, the capacity being large
        /// enough that nothing is evicted, a lookup never returns a lower version than an
        /// earlier lookup of the same key.
        #[test]
        fn nothing_stale_survives_and_versions_never_go_back(steps in proptest::collection::vec(step(), 1..80)) {
            let keys = ["m:{a}", "m:{b}", "i:{c}"];
            let cache = live(100_000);
            let mut server = [1u64; 3];
            let mut queue: std::collections::VecDeque<usize> = Default::default();
            // Per reader: (key, ticket, value read by the server).
            let mut readers: [Option<Reading>; 3] = [None; 3];
            let mut returned = [0u64; 3];
            // The server version each key had when its last invalidation was delivered.
            let mut delivered_floor = [0u64; 3];
            for step in steps {
                match step {
                    Step::Write(k) => { server[k] += 1; queue.push_back(k); }
                    Step::Deliver => if let Some(k) = queue.pop_front() {
                        cache.invalidate(keys[k]);
                        // Writes are queued in order: the key's version at this write is at least
                        // the number of writes delivered so far for it plus one.
                        delivered_floor[k] = delivered_floor[k].max(server[k] - queue.iter().filter(|q| **q == k).count() as u64);
                    },
                    Step::Begin(r, k) => if readers[r].is_none() { readers[r] = Some((k, cache.begin(), None)); },
                    Step::Execute(r) => if let Some((k, t, None)) = readers[r] { readers[r] = Some((k, t, Some(server[k]))); },
                    Step::Complete(r) => if let Some((k, Some(t), Some(v))) = readers[r] {
                        cache.complete(keys[k], t, V(v));
                        readers[r] = None;
                    } else if let Some((_, None, Some(_))) = readers[r] { readers[r] = None; },
                    Step::Get(k) => if let Some(V(v)) = cache.get(keys[k]) {
                        prop_assert!(v >= returned[k], "version went back: {v} after {}", returned[k]);
                        prop_assert!(v >= delivered_floor[k], "served {v}, invalidated up to {}", delivered_floor[k]);
                        returned[k] = v;
                    },
                    Step::Reconnect => { cache.go_dead(); queue.clear(); cache.go_live(); }
                }
            }
            // Deliver everything: the cache may hold only current versions.
            while let Some(k) = queue.pop_front() { cache.invalidate(keys[k]); }
            for (k, key) in keys.iter().enumerate() {
                if let Some(V(v)) = cache.get(key) {
                    prop_assert_eq!(v, server[k], "stale entry for {}", key);
                }
            }
        }
    }
}
