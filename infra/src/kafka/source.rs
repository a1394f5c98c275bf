//! Kafka as the projectors' record source: one consumer group id per projection target, so every
//! read store consumes, lags and recovers on its own. Offsets are committed under that group by
//! the projector loop only after the sink made a batch durable (auto-commit is off).
//!
//! A projector assigns itself every partition of the topic instead of joining the group
//! protocol (see docs/decisions/0008-projector-partition-assignment.md): one projector runs per
//! target, and a projector restarted after a crash resumes at once from the committed offsets,
//! without waiting for a rebalance to give up on its dead predecessor.
//!
//! In one process the projectors share one reader (`super::feed`, ADR 0014); this source is the
//! reader of a projector on its own: one the shared feed detached because its sink stopped
//! taking records.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use member_projections::projector::{RecordSource, SourceBatch, SourceError};
use member_projections::MemberRecord;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::config::KafkaSettings;

/// Per partition, the next offset to read.
pub type Positions = BTreeMap<i32, i64>;

pub struct KafkaSource {
    consumer: Arc<StreamConsumer>,
    topic: String,
    lag: LagGauge<StreamConsumer>,
    positions: Positions,
    halted: Option<Unreadable>,
}

impl KafkaSource {
    /// Reads every partition of the configured topic from the offsets committed under `group`
    /// (the beginning of the topic for a new group). Waits up to 30 s for the topic to exist.
    pub async fn new(settings: &KafkaSettings, group: &str) -> Result<Self, KafkaError> {
        Self::starting_at(settings, group, &Positions::new()).await
    }

    /// As `new`, but the partitions in `from` start at the given offsets instead of the
    /// committed ones (a projector leaving the shared feed goes on exactly where it stopped).
    pub async fn starting_at(
        settings: &KafkaSettings,
        group: &str,
        from: &Positions,
    ) -> Result<Self, KafkaError> {
        let consumer: StreamConsumer = consumer_config(settings, group).create()?;
        let consumer = Arc::new(consumer);
        let topic = settings.topic.clone();
        let assigned = consumer.clone();
        let from = from.clone();
        tokio::task::spawn_blocking(move || {
            let mut all = TopicPartitionList::new();
            for p in wait_for_partitions(assigned.as_ref(), &topic)? {
                let offset = from.get(&p).map_or(Offset::Stored, |o| Offset::Offset(*o));
                all.add_partition_offset(&topic, p, offset)?;
            }
            assigned.assign(&all)
        })
        .await
        .map_err(|_| KafkaError::Canceled)??;
        Ok(Self {
            lag: LagGauge::new(consumer.clone(), &settings.topic),
            consumer,
            topic: settings.topic.clone(),
            positions: Positions::new(),
            halted: None,
        })
    }

    /// The consumer group of a projection target on a topic: `<topic>.projector.<target>`, for
    /// example `member.events.projector.redis-b`.
    pub fn group_of(topic: &str, target: &str) -> String {
        format!("{topic}.projector.{target}")
    }
}

/// The configuration of a projector's consumer: manual commits, the beginning of the topic for
/// a group that never committed, and fetch settings that suit the local broker (ADR 0014).
pub(crate) fn consumer_config(settings: &KafkaSettings, group: &str) -> rdkafka::ClientConfig {
    let mut config = super::client_config(settings);
    config
        .set("group.id", group)
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
pub(crate) fn wait_for_partitions<C: Consumer>(
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
pub(crate) struct Unreadable {
    pub partition: i32,
    pub offset: i64,
    pub reason: String,
}

impl Unreadable {
    pub fn error(&self) -> SourceError {
        SourceError::Poison {
            partition: self.partition,
            offset: self.offset,
            reason: self.reason.clone(),
        }
    }
}

/// Reads one message as a record.
pub(crate) fn read_record(
    message: &rdkafka::message::BorrowedMessage<'_>,
) -> Result<MemberRecord, Unreadable> {
    MemberRecord::from_json(message.payload().unwrap_or_default()).map_err(|e| Unreadable {
        partition: message.partition(),
        offset: message.offset(),
        reason: e.to_string(),
    })
}

/// A batch being filled, as both sources fill one: wait up to `max_wait` for the first record,
/// then take what arrives within a short linger, up to `max` records.
pub(crate) struct Filling {
    pub batch: SourceBatch,
    max: usize,
    deadline: tokio::time::Instant,
    wait_until: tokio::time::Instant,
}

impl Filling {
    pub fn new(max: usize, max_wait: Duration) -> Self {
        let deadline = tokio::time::Instant::now() + max_wait;
        Self {
            batch: SourceBatch::default(),
            max,
            deadline,
            wait_until: deadline,
        }
    }

    pub fn is_full(&self) -> bool {
        self.batch.records.len() >= self.max
    }

    /// Until when to wait for the next record.
    pub fn wait_until(&self) -> tokio::time::Instant {
        self.wait_until
    }

    /// Takes one record read at (partition, offset), moving `positions` on; `Ok(false)` when
    /// the batch ends here. An unreadable record ends the batch before it and is kept in
    /// `halted`; it is the error itself when the batch is still empty.
    pub fn take(
        &mut self,
        item: Result<(i32, i64, MemberRecord), Unreadable>,
        positions: &mut Positions,
        halted: &mut Option<Unreadable>,
    ) -> Result<bool, SourceError> {
        match item {
            Ok((partition, offset, record)) => {
                self.batch.records.push(record);
                self.batch.commit.insert(partition, offset + 1);
                positions.insert(partition, offset + 1);
                if self.batch.records.len() == 1 {
                    self.wait_until = (tokio::time::Instant::now() + Duration::from_millis(10))
                        .min(self.deadline);
                }
                Ok(true)
            }
            Err(unreadable) => {
                let error = unreadable.error();
                *halted = Some(unreadable);
                if self.batch.records.is_empty() {
                    Err(error)
                } else {
                    Ok(false)
                }
            }
        }
    }
}

/// Commits a batch's offsets under the consumer's group (blocking work, run off the async threads).
pub(crate) async fn commit_batch<C: Consumer + Send + Sync + 'static>(
    consumer: &Arc<C>,
    topic: &str,
    batch: &SourceBatch,
) -> Result<(), SourceError> {
    if batch.commit.is_empty() {
        return Ok(());
    }
    let mut offsets = TopicPartitionList::new();
    for (partition, next) in &batch.commit {
        offsets
            .add_partition_offset(topic, *partition, Offset::Offset(*next))
            .map_err(|e| SourceError::Unavailable(e.to_string()))?;
    }
    let consumer = consumer.clone();
    tokio::task::spawn_blocking(move || consumer.commit(&offsets, CommitMode::Sync))
        .await
        .map_err(|e| SourceError::Unavailable(e.to_string()))?
        .map_err(|e| SourceError::Unavailable(e.to_string()))
}

/// The lag of a source: records between its positions and the partitions' high watermarks,
/// asked of the broker at most every two seconds.
pub(crate) struct LagGauge<C> {
    consumer: Arc<C>,
    topic: String,
    measured: Option<Instant>,
    lag: Option<u64>,
}

impl<C: Consumer + Send + Sync + 'static> LagGauge<C> {
    pub fn new(consumer: Arc<C>, topic: &str) -> Self {
        Self {
            consumer,
            topic: topic.to_owned(),
            measured: None,
            lag: None,
        }
    }

    pub fn get(&self) -> Option<u64> {
        self.lag
    }

    /// Re-measures if the last measure is older than two seconds; it asks the broker, so it
    /// runs off the async threads.
    pub async fn refresh(&mut self, positions: &Positions) {
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
            let mut total = 0u64;
            for p in partitions_now(consumer.as_ref(), &topic)? {
                let (_, high) = consumer
                    .fetch_watermarks(&topic, p, Duration::from_secs(1))
                    .ok()?;
                let at = positions.get(&p).copied().unwrap_or(0);
                total += (high - at).max(0) as u64;
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

fn partitions_now<C: Consumer>(consumer: &C, topic: &str) -> Option<Vec<i32>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(1))
        .ok()?;
    Some(
        metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect(),
    )
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
        while !filling.is_full() {
            let message =
                match tokio::time::timeout_at(filling.wait_until(), self.consumer.recv()).await {
                    Err(_) => break,
                    Ok(Err(e)) => return Err(SourceError::Unavailable(e.to_string())),
                    Ok(Ok(m)) => m,
                };
            let item = read_record(&message).map(|r| (message.partition(), message.offset(), r));
            if !filling.take(item, &mut self.positions, &mut self.halted)? {
                break;
            }
        }
        let batch = filling.batch;
        self.lag.refresh(&self.positions).await;
        Ok(batch)
    }

    async fn commit(&mut self, batch: &SourceBatch) -> Result<(), SourceError> {
        commit_batch(&self.consumer, &self.topic, batch).await
    }

    fn lag(&self) -> Option<u64> {
        self.lag.get()
    }
}
