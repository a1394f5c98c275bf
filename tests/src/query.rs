//! `spawn_query_api()`: the real query API on a free port over six in-memory backends, each with
//! its own name, outage switch, call counters and (for the Redis centers) a cache fill with a
//! version fence, as the Redis adapter has.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use member_api::query_api::{QueryApi, QueryBackends};
use member_domain::IdentityKey;
use member_infra::config::Settings;
use member_projections::memory::MemoryStore;
use member_projections::{
    CacheFill, EventEnvelope, IdentityChange, MemberDocument, MemberReader, MemberRecord, Sink,
    SinkError, RECORD_SCHEMA_VERSION,
};
use uuid::Uuid;

/// A read store in memory that counts the reads it serves.
pub struct TestStore {
    store: MemoryStore,
    target: String,
    reads: AtomicUsize,
    identity_reads: AtomicUsize,
    delay_ms: AtomicU64,
    fills_written: AtomicUsize,
    fences: Mutex<HashMap<Uuid, u64>>,
    /// Copies served from process memory (`MemberReader::cached_*`), as a tracked cache would.
    memory: Mutex<HashMap<Uuid, Arc<MemberDocument>>>,
}

impl TestStore {
    pub fn new(target: &str) -> Arc<Self> {
        Arc::new(Self {
            store: MemoryStore::new(target),
            target: target.to_owned(),
            reads: AtomicUsize::new(0),
            identity_reads: AtomicUsize::new(0),
            delay_ms: AtomicU64::new(0),
            fills_written: AtomicUsize::new(0),
            fences: Mutex::new(HashMap::new()),
            memory: Mutex::new(HashMap::new()),
        })
    }

    pub fn name(&self) -> &str {
        &self.target
    }

    /// While down, reads and writes fail with `Unavailable`.
    pub fn set_down(&self, down: bool) {
        self.store.set_down(down);
    }

    /// Every read waits this long first (to trip timeouts and latency thresholds).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Reads that reached this store (counted even while it is down).
    pub fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }

    /// Reads through the identity index (`by_identity`; two round trips on Redis).
    pub fn identity_reads(&self) -> usize {
        self.identity_reads.load(Ordering::SeqCst)
    }

    pub fn fills_written(&self) -> usize {
        self.fills_written.load(Ordering::SeqCst)
    }

    /// The projector's version fence: fills below `version` are refused.
    pub fn set_fence(&self, member: Uuid, version: u64) {
        self.fences.lock().unwrap().insert(member, version);
    }

    /// Applies records as the store's projector would.
    pub async fn apply(&self, records: &[MemberRecord]) {
        self.store
            .apply(records)
            .await
            .expect("test store applies records");
    }

    /// Applies records, failing while the store is down (a projector retries).
    pub async fn try_apply(&self, records: &[MemberRecord]) -> Result<(), SinkError> {
        self.store.apply(records).await
    }

    /// Holds `doc` in "process memory": served by `cached_by_id`/`cached_by_identity` without
    /// a read, whatever the store holds (a copy that may lag, like a tracked cache's).
    pub fn hold_in_memory(&self, doc: &MemberDocument) {
        self.memory
            .lock()
            .unwrap()
            .insert(doc.member_id, Arc::new(doc.clone()));
    }

    async fn before_read(&self) {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
    }
}

#[async_trait]
impl MemberReader for TestStore {
    fn target(&self) -> &str {
        &self.target
    }

    async fn by_id(&self, member_id: Uuid) -> Result<Option<MemberDocument>, SinkError> {
        self.before_read().await;
        self.store.by_id(member_id).await
    }

    fn cached_by_id(&self, member_id: Uuid) -> Option<Arc<MemberDocument>> {
        self.memory.lock().unwrap().get(&member_id).cloned()
    }

    fn cached_by_identity(&self, key: &IdentityKey) -> Option<Arc<MemberDocument>> {
        self.memory
            .lock()
            .unwrap()
            .values()
            .find(|doc| doc.generation_of(key).is_some())
            .cloned()
    }

    async fn by_identity(&self, key: &IdentityKey) -> Result<Option<MemberDocument>, SinkError> {
        self.identity_reads.fetch_add(1, Ordering::SeqCst);
        self.before_read().await;
        self.store.by_identity(key).await
    }
}

#[async_trait]
impl CacheFill for TestStore {
    async fn fill(&self, doc: &MemberDocument) -> Result<bool, SinkError> {
        let fence = self.fences.lock().unwrap().get(&doc.member_id).copied();
        if fence.is_some_and(|f| f > doc.version) {
            return Ok(false);
        }
        let stored = self.store.by_id(doc.member_id).await?;
        if stored.is_some_and(|s| s.version >= doc.version) {
            return Ok(false);
        }
        self.store.apply(&fill_records(doc)).await?;
        self.fills_written.fetch_add(1, Ordering::SeqCst);
        Ok(true)
    }
}

/// Records that write `doc` and its identity-index entries (at their generations).
fn fill_records(doc: &MemberDocument) -> Vec<MemberRecord> {
    let record = |identity_change| MemberRecord {
        schema_version: RECORD_SCHEMA_VERSION,
        event: EventEnvelope {
            event_id: Uuid::new_v4(),
            member_id: doc.member_id,
            version: doc.version,
            position: 0,
            event_type: "CacheFill".into(),
            event_version: "1.0".into(),
            recorded_at: doc.updated_at,
            payload: serde_json::Value::Null,
        },
        identity_change,
        document: doc.clone(),
        erased_identities: Vec::new(),
    };
    let mut records = vec![record(None)];
    records.extend(doc.identities.iter().map(|i| {
        record(Some(IdentityChange {
            key: i.key.clone(),
            bound: true,
            generation: i.generation,
        }))
    }));
    records
}

/// The six backends of a query API under test.
#[derive(Clone)]
pub struct Stores {
    pub redis_a: Arc<TestStore>,
    pub redis_b: Arc<TestStore>,
    pub search_primary: Arc<TestStore>,
    pub search_backup: Arc<TestStore>,
    pub search_marketing: Arc<TestStore>,
    pub mysql: Arc<TestStore>,
}

impl Default for Stores {
    fn default() -> Self {
        Self::new()
    }
}

impl Stores {
    pub fn new() -> Self {
        Self {
            redis_a: TestStore::new("redis-a"),
            redis_b: TestStore::new("redis-b"),
            search_primary: TestStore::new("search-primary"),
            search_backup: TestStore::new("search-backup"),
            search_marketing: TestStore::new("search-marketing"),
            mysql: TestStore::new("mysql"),
        }
    }

    /// In the order chain's order, then marketing.
    pub fn all(&self) -> [&Arc<TestStore>; 6] {
        [
            &self.redis_a,
            &self.redis_b,
            &self.search_primary,
            &self.search_backup,
            &self.mysql,
            &self.search_marketing,
        ]
    }

    pub fn by_name(&self, name: &str) -> &Arc<TestStore> {
        self.all()
            .into_iter()
            .find(|s| s.name() == name)
            .unwrap_or_else(|| panic!("no store {name}"))
    }

    pub async fn apply_all(&self, records: &[MemberRecord]) {
        for store in self.all() {
            store.apply(records).await;
        }
    }

    pub fn backends(&self) -> QueryBackends {
        QueryBackends {
            redis_a: self.redis_a.clone(),
            redis_a_fill: self.redis_a.clone(),
            redis_b: self.redis_b.clone(),
            redis_b_fill: self.redis_b.clone(),
            search_primary: self.search_primary.clone(),
            search_backup: self.search_backup.clone(),
            search_marketing: self.search_marketing.clone(),
            mysql: self.mysql.clone(),
            status: None,
        }
    }
}

/// The default configuration with fast breakers (tests wait for half-open probes) and generous
/// limits (tests that exercise limits set their own).
pub fn query_settings() -> Settings {
    let mut s = Settings::load_from(None, Vec::new()).expect("default configuration loads");
    let q = &mut s.query_api;
    q.breaker.min_calls = NonZeroU32::new(3).unwrap();
    q.breaker.open_ms = NonZeroU64::new(500).unwrap();
    // No near cache unless a test asks for it (it would answer instead of the backends).
    q.flow.hot_key_rate_per_second = 0;
    q.flow.hotspot_rate_per_second = NonZeroU32::new(100_000).unwrap();
    q.flow.hotspot_burst = NonZeroU32::new(100_000).unwrap();
    q.flow.global_rate_per_second = NonZeroU32::new(100_000).unwrap();
    q.flow.global_burst = NonZeroU32::new(100_000).unwrap();
    for c in &mut s.callers {
        c.rate_per_second = 100_000;
        c.burst = 100_000;
    }
    s
}

pub struct QueryApp {
    pub addr: SocketAddr,
    pub stores: Stores,
    server: crate::server::Running,
}

impl QueryApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.server.stop().await
    }
}

/// The query API with default test settings over fresh stores.
pub async fn spawn_query_api() -> QueryApp {
    spawn_query_api_with(Stores::new(), query_settings()).await
}

pub async fn spawn_query_api_with(stores: Stores, settings: Settings) -> QueryApp {
    spawn_query_api_with_status(stores, settings, None).await
}

/// The query API over `stores` with a projection-lag source (as `member run` has).
pub async fn spawn_query_api_with_status(
    stores: Stores,
    settings: Settings,
    status: Option<std::sync::Arc<dyn member_projections::status::StatusProvider>>,
) -> QueryApp {
    let mut backends = stores.backends();
    backends.status = status;
    let api = QueryApi::build(backends, &settings, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("query api binds");
    let addr = api.local_addr();
    QueryApp {
        addr,
        stores,
        server: crate::server::Running::spawn(|shutdown| api.run_until_stopped(shutdown)),
    }
}
