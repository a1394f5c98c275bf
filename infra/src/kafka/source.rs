//! Kafka as the projectors' record source: one consumer group per projection target, joined with
//! the group protocol (docs/decisions/0017-projector-consumer-groups.md). Every process of one
//! target is a member of its group and reads the partitions the group assigned it; a killed
//! process's partitions move to the others once its session times out.
//!
//! Offsets are committed by the projector loop only after the sink made a batch durable
//! (auto-commit is off), and only for partitions this member still owns under the assignment it
//! read them in: after a revocation, the member that now owns a partition resumes from the last
//! committed offset, and the version guards of the sinks absorb what both applied.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use member_projections::projector::{RecordSource, SourceBatch, SourceError};
use member_projections::MemberRecord;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use crate::config::KafkaSettings;

/// Per partition, the next offset to read.
pub type Positions = BTreeMap<i32, i64>;

type GroupConsumer = StreamConsumer<Membership>;

pub struct KafkaSource {
    consumer: Arc<GroupConsumer>,
    topic: String,
    membership: Membership,
    lag: LagGauge,
    /// Per owned partition, the next offset not yet handed out.
    positions: Positions,
    /// Per partition of the batches handed out, the assignment they were read under.
    read_under: BTreeMap<i32, u64>,
    halted: Option<Unreadable>,
}

impl KafkaSource {
    /// Joins `group` on the configured topic; the partitions the group assigns this member are
    /// read from the group's committed offsets (the beginning of the topic for a new group).
    /// Waits up to 30 s for the topic to exist.
    pub async fn new(settings: &KafkaSettings, group: &str) -> Result<Self, KafkaError> {
        let membership = Membership::new(group);
        let consumer: GroupConsumer =
            consumer_config(settings, group).create_with_context(membership.clone())?;
        let consumer = Arc::new(consumer);
        let topic = settings.topic.clone();
        let joining = consumer.clone();
        tokio::task::spawn_blocking(move || {
            wait_for_partitions(joining.as_ref(), &topic)?;
            joining.subscribe(&[&topic])
        })
        .await
        .map_err(|_| KafkaError::Canceled)??;
        Ok(Self {
            lag: LagGauge::new(consumer.clone(), &settings.topic),
            consumer,
            topic: settings.topic.clone(),
            membership,
            positions: Positions::new(),
            read_under: BTreeMap::new(),
            halted: None,
        })
    }

    /// The consumer group of a projection target on a topic: `<topic>.projector.<target>`, for
    /// example `member.events.projector.redis-b`.
    pub fn group_of(topic: &str, target: &str) -> String {
        format!("{topic}.projector.{target}")
    }

    /// The partitions the group assigned this member now.
    pub fn owned_partitions(&self) -> Vec<i32> {
        self.membership.owned().into_keys().collect()
    }
}

/// The group membership of one consumer: the partitions it owns, each with the number of the
/// assignment that gave it (a partition revoked and assigned again gets a new number). Kept up
/// to date by the rebalance callbacks, which librdkafka runs inside `recv`.
#[derive(Clone)]
pub struct Membership {
    group: String,
    state: Arc<Mutex<Owned>>,
}

#[derive(Default)]
struct Owned {
    partitions: BTreeMap<i32, u64>,
    assignments: u64,
}

impl Membership {
    fn new(group: &str) -> Self {
        Self {
            group: group.to_owned(),
            state: Arc::default(),
        }
    }

    fn owned(&self) -> BTreeMap<i32, u64> {
        self.state
            .lock()
            .expect("membership lock")
            .partitions
            .clone()
    }

    /// The assignment under which `partition` is owned now, if it is.
    fn assignment_of(&self, partition: i32) -> Option<u64> {
        self.state
            .lock()
            .expect("membership lock")
            .partitions
            .get(&partition)
            .copied()
    }
}

impl ClientContext for Membership {}

impl ConsumerContext for Membership {
    /// Revocations take effect before librdkafka unassigns: from here on nothing read from a
    /// revoked partition is handed out or committed.
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut state = self.state.lock().expect("membership lock");
        match rebalance {
            Rebalance::Revoke(list) => {
                let revoked: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
                for p in &revoked {
                    state.partitions.remove(p);
                }
                tracing::info!(group = %self.group, ?revoked, "partitions revoked");
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => {
                tracing::warn!(group = %self.group, error = %e, "rebalance failed");
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let mut state = self.state.lock().expect("membership lock");
            state.assignments += 1;
            let number = state.assignments;
            let assigned: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
            for p in &assigned {
                state.partitions.insert(*p, number);
            }
            tracing::info!(group = %self.group, ?assigned, "partitions assigned");
        }
    }
}

/// The configuration of a projector's consumer: group membership with cooperative incremental
/// rebalancing, manual commits, the beginning of the topic for a group that never committed.
pub(crate) fn consumer_config(settings: &KafkaSettings, group: &str) -> rdkafka::ClientConfig {
    let mut config = super::client_config(settings);
    config
        .set("group.id", group)
        // The classic group protocol with incremental (cooperative) rebalancing: a member keeps
        // the partitions it is not asked to give up while the group rebalances (ADR 0017).
        .set("group.protocol", "classic")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set(
            "session.timeout.ms",
            settings.session_timeout_ms.to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            (settings.session_timeout_ms / 3).to_string(),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", settings.fetch_wait_ms.to_string())
        // Read-ahead: a projector applies at most `projector.batch_size` records at once, so
        // ten thousand queued keep it fed; the librdkafka default (100,000 messages, 64 MB)
        // only costs memory when a store lags.
        .set("queued.min.messages", "10000")
        .set("queued.max.messages.kbytes", "16384");
    config
}

/// The partitions of `topic`, waiting up to 30 s for the topic to exist (blocking).
pub(crate) fn wait_for_partitions<C: Consumer<X>, X: ConsumerContext>(
    consumer: &C,
    topic: &str,
) -> Result<Vec<i32>, KafkaError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if !partitions.is_empty() || attempts >= 30 {
            return Ok(partitions);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// A record that cannot be read. Once met, a source returns it on every call and delivers
/// nothing after it: the projector halts there instead of skipping an update (the records
/// before it in the same batch are still delivered).
#[derive(Debug, Clone)]
struct Unreadable {
    partition: i32,
    offset: i64,
    reason: String,
}

impl Unreadable {
    fn error(&self) -> SourceError {
        SourceError::Poison {
            partition: self.partition,
            offset: self.offset,
            reason: self.reason.clone(),
        }
    }
}

/// Reads one message as a record.
fn read_record(
    message: &rdkafka::message::BorrowedMessage<'_>,
) -> Result<MemberRecord, Unreadable> {
    MemberRecord::from_json(message.payload().unwrap_or_default()).map_err(|e| Unreadable {
        partition: message.partition(),
        offset: message.offset(),
        reason: e.to_string(),
    })
}

/// A batch being filled: wait up to `max_wait` for the first record, then take what arrives
/// within a short linger, up to `max` records. Each record keeps its partition and the
/// assignment it was read under, so the records of a partition revoked meanwhile can be dropped
/// before the batch is handed out.
struct Filling {
    records: Vec<(i32, i64, Option<u64>, MemberRecord)>,
    max: usize,
    deadline: tokio::time::Instant,
    wait_until: tokio::time::Instant,
}

impl Filling {
    fn new(max: usize, max_wait: Duration) -> Self {
        let deadline = tokio::time::Instant::now() + max_wait;
        Self {
            records: Vec::new(),
            max,
            deadline,
            wait_until: deadline,
        }
    }

    fn is_full(&self) -> bool {
        self.records.len() >= self.max
    }

    fn take(&mut self, partition: i32, offset: i64, read_under: Option<u64>, record: MemberRecord) {
        self.records.push((partition, offset, read_under, record));
        if self.records.len() == 1 {
            self.wait_until =
                (tokio::time::Instant::now() + Duration::from_millis(10)).min(self.deadline);
        }
    }

    /// The batch of the records whose partition is still owned under the assignment they were
    /// read in.
    fn finish(self, owned: &BTreeMap<i32, u64>) -> SourceBatch {
        let mut batch = SourceBatch::default();
        for (partition, offset, read_under, record) in self.records {
            if read_under.is_some() && owned.get(&partition) == read_under.as_ref() {
                batch.records.push(record);
                batch.commit.insert(partition, offset + 1);
            }
        }
        batch
    }
}

#[async_trait]
impl RecordSource for KafkaSource {
    async fn next_batch(
        &mut self,
        max: usize,
        max_wait: Duration,
    ) -> Result<SourceBatch, SourceError> {
        if let Some(unreadable) = &self.halted {
            return Err(unreadable.error());
        }
        let mut filling = Filling::new(max, max_wait);
        let mut trouble = None;
        while !filling.is_full() {
            let message =
                match tokio::time::timeout_at(filling.wait_until, self.consumer.recv()).await {
                    Err(_) => break,
                    // librdkafka queues broker and transport trouble as events among the
                    // messages and reconnects by itself. Every queued event is drained here:
                    // returning at the first one would let a backlog of stale errors from an
                    // outage pace the projector's backoff, one error per pause, long after the
                    // broker is back, with the group's rebalance (run inside `recv`) queued
                    // behind them.
                    Ok(Err(e)) => {
                        trouble = Some(e);
                        continue;
                    }
                    Ok(Ok(m)) => m,
                };
            let (partition, offset) = (message.partition(), message.offset());
            match read_record(&message) {
                Ok(record) => {
                    let read_under = self.membership.assignment_of(partition);
                    filling.take(partition, offset, read_under, record)
                }
                Err(unreadable) => {
                    let error = unreadable.error();
                    self.halted = Some(unreadable);
                    if filling.records.is_empty() {
                        return Err(error);
                    }
                    break;
                }
            }
        }
        if let (Some(e), true) = (trouble, filling.records.is_empty()) {
            return Err(SourceError::Unavailable(e.to_string()));
        }
        // A rebalance runs inside `recv`: what was read from a partition revoked meanwhile is
        // now another member's to apply.
        let owned = self.membership.owned();
        let batch = filling.finish(&owned);
        self.positions.retain(|p, _| owned.contains_key(p));
        self.read_under.retain(|p, _| owned.contains_key(p));
        for (partition, next) in &batch.commit {
            self.positions.insert(*partition, *next);
            self.read_under.insert(*partition, owned[partition]);
        }
        self.lag.refresh(&self.positions).await;
        Ok(batch)
    }

    /// Commits the batch's offsets for the partitions still owned under the assignment they
    /// were read in; the others are no longer this member's to commit.
    async fn commit(&mut self, batch: &SourceBatch) -> Result<(), SourceError> {
        let owned = self.membership.owned();
        let mut offsets = TopicPartitionList::new();
        for (partition, next) in &batch.commit {
            let read_under = self.read_under.get(partition);
            if read_under.is_none() || read_under != owned.get(partition) {
                continue;
            }
            offsets
                .add_partition_offset(&self.topic, *partition, Offset::Offset(*next))
                .map_err(|e| SourceError::Unavailable(e.to_string()))?;
        }
        if offsets.count() == 0 {
            return Ok(());
        }
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || consumer.commit(&offsets, CommitMode::Sync))
            .await
            .map_err(|e| SourceError::Unavailable(e.to_string()))?
            .map_err(|e| SourceError::Unavailable(e.to_string()))
    }

    fn lag(&self) -> Option<u64> {
        self.lag.get()
    }
}

/// The lag of a source: records between its positions in the partitions it owns (the
/// committed offsets where it has read nothing yet) and their high watermarks, asked of the
/// broker at most every two seconds.
struct LagGauge {
    consumer: Arc<GroupConsumer>,
    topic: String,
    measured: Option<Instant>,
    lag: Option<u64>,
}

impl LagGauge {
    fn new(consumer: Arc<GroupConsumer>, topic: &str) -> Self {
        Self {
            consumer,
            topic: topic.to_owned(),
            measured: None,
            lag: None,
        }
    }

    fn get(&self) -> Option<u64> {
        self.lag
    }

    /// Re-measures if the last measure is older than two seconds; it asks the broker, so it
    /// runs off the async threads.
    async fn refresh(&mut self, positions: &Positions) {
        if self
            .measured
            .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
        {
            return;
        }
        self.measured = Some(Instant::now());
        let consumer = self.consumer.clone();
        let topic = self.topic.clone();
        let positions = positions.clone();
        let lag = tokio::task::spawn_blocking(move || {
            let timeout = Duration::from_secs(1);
            let assignment = consumer.assignment().ok()?;
            let mut unread = TopicPartitionList::new();
            for e in assignment.elements_for_topic(&topic) {
                if !positions.contains_key(&e.partition()) {
                    unread.add_partition(&topic, e.partition());
                }
            }
            let mut at = positions.clone();
            if unread.count() > 0 {
                for e in consumer.committed_offsets(unread, timeout).ok()?.elements() {
                    at.insert(e.partition(), e.offset().to_raw().unwrap_or(0).max(0));
                }
            }
            let mut total = 0u64;
            for e in assignment.elements_for_topic(&topic) {
                let (low, high) = consumer
                    .fetch_watermarks(&topic, e.partition(), timeout)
                    .ok()?;
                let from = at.get(&e.partition()).copied().unwrap_or(low).max(low);
                total += (high - from).max(0) as u64;
            }
            Some(total)
        })
        .await
        .ok()
        .flatten();
        if lag.is_some() {
            self.lag = lag;
        }
    }
}

/// The offsets a group committed, per partition of the configured topic (for tests and tools).
pub async fn committed_positions(
    settings: &KafkaSettings,
    group: &str,
) -> Result<Positions, KafkaError> {
    let consumer: BaseConsumer = super::client_config(settings)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let topic = settings.topic.clone();
    tokio::task::spawn_blocking(move || {
        let partitions = wait_for_partitions(&consumer, &topic)?;
        let mut list = TopicPartitionList::new();
        for p in &partitions {
            list.add_partition(&topic, *p);
        }
        let committed = consumer.committed_offsets(list, Duration::from_secs(10))?;
        let mut from = Positions::new();
        for elem in committed.elements_for_topic(&topic) {
            if let Offset::Offset(o) = elem.offset() {
                from.insert(elem.partition(), o);
            }
        }
        Ok(from)
    })
    .await
    .map_err(|_| KafkaError::Canceled)?
}
