//! A center read through an in-process cache that Redis keeps exact: [`TrackedCenter`].
//!
//! A background task holds one RESP3 connection with `CLIENT TRACKING ON BCAST` on the
//! prefixes of documents (`m:{`) and identity entries (`i:{`): the server pushes an
//! invalidation for every change of such a key (by any client: the projectors, cache fills,
//! maintenance), and for its expiry or eviction. The push is handled in the connection's read
//! task, synchronously, by [`ClientCache::invalidate`]. Reads go through the center's ordinary
//! connection; what they return is cached under a [`super::client_cache::Ticket`] taken before
//! the read was sent, which refuses a value that raced an invalidation.
//!
//! Broadcast mode rather than the default mode: the default mode tracks only the keys a
//! connection read itself, and not the keys a script reads without declaring them, which the
//! one-round-trip lookup by identity does (docs/decisions/0038-tracked-client-cache.md).
//!
//! When the tracking connection drops (Redis restarted, network cut) the cache is emptied and
//! serves nothing until a new tracking connection is established (then it starts empty): an
//! invalidation may have been missed in between. A `PING` every second notices a dead
//! connection that did not close.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, ProtocolVersion, PushInfo, PushKind, Value};
use async_trait::async_trait;
use member_domain::IdentityKey;
use member_projections::{MemberDocument, MemberReader, SinkError};
use tokio::sync::Notify;
use uuid::Uuid;

use super::client_cache::{CacheCounts, ClientCache, Versioned};
use super::{document_key, identity_key, RedisCenter};

/// The prefixes tracked: documents (and their fences) and identity entries.
const PREFIXES: [&str; 2] = ["m:{", "i:{"];
/// How often the tracking connection is checked.
const PING_EVERY: Duration = Duration::from_secs(1);
/// Connection and response timeout of the tracking connection.
const TRACKING_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What the cache holds per Redis key.
#[derive(Debug, Clone)]
pub enum Cached {
    /// `m:{<member id>}`: the decoded document.
    Document(Arc<MemberDocument>),
    /// `i:{<identity>}`: the entry (member `None`: a tombstone).
    Owner {
        member: Option<Uuid>,
        generation: u64,
    },
}

impl Versioned for Cached {
    fn version(&self) -> u64 {
        match self {
            Cached::Document(doc) => doc.version,
            Cached::Owner { generation, .. } => *generation,
        }
    }
}

/// A Redis center with a tracked in-process cache in front of its reads. Implements
/// [`MemberReader`] like the center; the tracking task stops when the last clone is dropped.
#[derive(Clone)]
pub struct TrackedCenter {
    center: RedisCenter,
    cache: Arc<ClientCache<Cached>>,
    _task: Arc<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl TrackedCenter {
    /// Starts tracking `center` with a cache of about `capacity` keys. Needs a tokio runtime.
    /// Returns at once: the cache serves once the tracking connection is established.
    pub fn start(center: RedisCenter, capacity: usize) -> Self {
        let cache = Arc::new(ClientCache::new(capacity));
        let info = center.client.get_connection_info().clone();
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = Client::open(info.set_redis_settings(resp3));
        let task = tokio::spawn(track(client, cache.clone(), center.target.clone()));
        Self {
            center,
            cache,
            _task: Arc::new(AbortOnDrop(task)),
        }
    }

    /// Whether the tracking connection is established (the cache serves).
    pub fn is_live(&self) -> bool {
        self.cache.is_live()
    }

    pub fn counts(&self) -> CacheCounts {
        self.cache.counts()
    }

    /// Waits until the cache serves, at most `timeout`; returns whether it does.
    pub async fn wait_live(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.is_live() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    pub fn center(&self) -> &RedisCenter {
        &self.center
    }
}

/// Keeps one tracking connection up, for as long as the task lives.
async fn track(
    client: Result<Client, ::redis::RedisError>,
    cache: Arc<ClientCache<Cached>>,
    target: String,
) {
    let client = match client {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(backend = %target, category = error.category(), "client-side cache disabled: invalid redis url");
            return;
        }
    };
    let mut backoff = Duration::from_millis(50);
    let mut failures = 0u32;
    loop {
        let alive = Arc::new(AtomicBool::new(true));
        let lost = Arc::new(Notify::new());
        let sender = {
            let (cache, alive, lost) = (cache.clone(), alive.clone(), lost.clone());
            move |push: PushInfo| -> Result<(), std::convert::Infallible> {
                on_push(&cache, &alive, &lost, push);
                Ok(())
            }
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TRACKING_TIMEOUT))
            .set_response_timeout(Some(TRACKING_TIMEOUT))
            .set_push_sender(sender);
        match connect(&client, &config).await {
            Ok(mut conn) => {
                if failures > 0 {
                    tracing::info!(backend = %target, "client-side cache tracking again");
                }
                failures = 0;
                backoff = Duration::from_millis(50);
                cache.go_live();
                metrics::gauge!("redis_client_cache_live", "backend" => target.clone()).set(1.0);
                loop {
                    tokio::select! {
                        () = lost.notified() => break,
                        () = tokio::time::sleep(PING_EVERY) => {
                            let ping = ::redis::cmd("PING").query_async::<String>(&mut conn).await;
                            if ping.is_err() {
                                break;
                            }
                            let counts = cache.counts();
                            metrics::gauge!("redis_client_cache_entries", "backend" => target.clone())
                                .set(counts.entries as f64);
                        }
                    }
                }
                if alive.swap(false, Ordering::SeqCst) {
                    cache.go_dead();
                }
                metrics::gauge!("redis_client_cache_live", "backend" => target.clone()).set(0.0);
                metrics::counter!("redis_client_cache_lost_total", "backend" => target.clone())
                    .increment(1);
                tracing::warn!(backend = %target, "client-side cache: tracking connection lost; cache emptied");
            }
            Err(error) => {
                failures += 1;
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(backend = %target, category = error.category(), failures, "client-side cache: cannot establish tracking; lookups go to redis");
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn connect(
    client: &Client,
    config: &AsyncConnectionConfig,
) -> Result<MultiplexedConnection, ::redis::RedisError> {
    let mut conn = client
        .get_multiplexed_async_connection_with_config(config)
        .await?;
    let mut tracking = ::redis::cmd("CLIENT");
    tracking.arg("TRACKING").arg("ON").arg("BCAST");
    for prefix in PREFIXES {
        tracking.arg("PREFIX").arg(prefix);
    }
    tracking.query_async::<()>(&mut conn).await?;
    Ok(conn)
}

/// Runs in the tracking connection's read task, in the order the server sent its messages.
fn on_push(cache: &ClientCache<Cached>, alive: &AtomicBool, lost: &Notify, push: PushInfo) {
    match push.kind {
        PushKind::Invalidate => match push.data.first() {
            Some(Value::Array(keys)) => {
                for key in keys {
                    match key {
                        Value::BulkString(bytes) => match std::str::from_utf8(bytes) {
                            Ok(key) => cache.invalidate(key),
                            Err(_) => cache.flush(),
                        },
                        Value::SimpleString(key) => cache.invalidate(key),
                        // Unreadable: the safe reading is "anything may have changed".
                        _ => cache.flush(),
                    }
                }
            }
            // FLUSHALL / FLUSHDB: a null instead of keys.
            _ => cache.flush(),
        },
        PushKind::Disconnection => {
            // Only this connection's loss: a late message of an earlier connection must not
            // take down the cache of the current one.
            if alive.swap(false, Ordering::SeqCst) {
                cache.go_dead();
            }
            lost.notify_one();
        }
        _ => {}
    }
}

#[async_trait]
impl MemberReader for TrackedCenter {
    fn target(&self) -> &str {
        self.center.target()
    }

    fn cached_by_id(&self, member_id: Uuid) -> Option<Arc<MemberDocument>> {
        match self.cache.get(&document_key(member_id)) {
            Some(Cached::Document(doc)) => Some(doc),
            _ => None,
        }
    }

    fn cached_by_identity(&self, key: &IdentityKey) -> Option<Arc<MemberDocument>> {
        let Some(Cached::Owner {
            member: Some(member),
            ..
        }) = self.cache.get(&identity_key(key))
        else {
            return None;
        };
        self.cached_by_id(member)
            .filter(|doc| doc.generation_of(key).is_some())
    }

    async fn by_id(&self, member_id: Uuid) -> Result<Option<MemberDocument>, SinkError> {
        let key = document_key(member_id);
        if let Some(Cached::Document(doc)) = self.cache.get(&key) {
            return Ok(Some((*doc).clone()));
        }
        let ticket = self.cache.begin();
        let doc = self.center.by_id(member_id).await?;
        if let (Some(ticket), Some(doc)) = (ticket, &doc) {
            self.cache
                .complete(&key, ticket, Cached::Document(Arc::new(doc.clone())));
        }
        Ok(doc)
    }

    async fn by_identity(&self, key: &IdentityKey) -> Result<Option<MemberDocument>, SinkError> {
        let entry_key = identity_key(key);
        if let Some(Cached::Owner { member, .. }) = self.cache.get(&entry_key) {
            let Some(member) = member else {
                return Ok(None);
            };
            return Ok(self
                .by_id(member)
                .await?
                .filter(|doc| doc.generation_of(key).is_some()));
        }
        let ticket = self.cache.begin();
        let Some(entry) = self.center.identity_entry(key).await? else {
            return Ok(None);
        };
        if let Some(ticket) = ticket {
            self.cache.complete(
                &entry_key,
                ticket,
                Cached::Owner {
                    member: entry.member,
                    generation: entry.generation,
                },
            );
            if let (Some(member), Some(doc)) = (entry.member, &entry.document) {
                self.cache.complete(
                    &document_key(member),
                    ticket,
                    Cached::Document(Arc::new(doc.clone())),
                );
            }
        }
        Ok(entry
            .document
            .filter(|doc| doc.generation_of(key).is_some()))
    }
}
