//! Kafka as the projectors' record source: one consumer group id per projection target, so every
//! read store consumes, lags and recovers on its own. Offsets are committed under that group by
//! the projector loop only after the sink made a batch durable (auto-commit is off).
//!
//! A projector assigns itself every partition of the topic instead of joining the group
//! protocol (see docs/decisions/0008-projector-partition-assignment.md): one projector runs per
//! target, and a projector restarted after a crash resumes at once from the committed offsets,
//! without waiting for a rebalance to give up on its dead predecessor.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use member_projections::projector::{RecordSource, SourceBatch, SourceError};
use member_projections::MemberRecord;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::config::KafkaSettings;

pub struct KafkaSource {
    consumer: Arc<StreamConsumer>,
    topic: String,
    lag: Option<u64>,
    lag_measured: Option<Instant>,
    positions: BTreeMap<i32, i64>,
}

impl KafkaSource {
    /// Reads every partition of the configured topic from the offsets committed under `group`
    /// (the beginning of the topic for a new group). Waits up to 30 s for the topic to exist.
    pub async fn new(
        settings: &KafkaSettings,
        group: &str,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let consumer: StreamConsumer = super::client_config(settings)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "50")
            .create()?;
        let consumer = Arc::new(consumer);
        let topic = settings.topic.clone();
        let assigned = consumer.clone();
        tokio::task::spawn_blocking(move || {
            let mut attempts = 0;
            loop {
                attempts += 1;
                let metadata = assigned.fetch_metadata(Some(&topic), Duration::from_secs(5))?;
                let partitions: Vec<i32> = metadata
                    .topics()
                    .iter()
                    .filter(|t| t.error().is_none())
                    .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                    .collect();
                if !partitions.is_empty() || attempts >= 30 {
                    let mut all = TopicPartitionList::new();
                    for p in partitions {
                        all.add_partition_offset(&topic, p, Offset::Stored)?;
                    }
                    return assigned.assign(&all);
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
        .await
        .map_err(|_| rdkafka::error::KafkaError::Canceled)??;
        Ok(Self {
            consumer,
            topic: settings.topic.clone(),
            lag: None,
            lag_measured: None,
            positions: BTreeMap::new(),
        })
    }

    /// The consumer group of a projection target on a topic: `<topic>.projector.<target>`, for
    /// example `member.events.projector.redis-b`.
    pub fn group_of(topic: &str, target: &str) -> String {
        format!("{topic}.projector.{target}")
    }

    /// Refreshes the lag (records between the consumed positions and the partitions' high
    /// watermarks) at most every two seconds; it asks the broker, so it runs off the async threads.
    async fn refresh_lag(&mut self) {
        if self
            .lag_measured
            .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
        {
            return;
        }
        self.lag_measured = Some(Instant::now());
        let consumer = self.consumer.clone();
        let topic = self.topic.clone();
        let positions = self.positions.clone();
        let lag = tokio::task::spawn_blocking(move || {
            let assignment = consumer.assignment().ok()?;
            let mut total = 0u64;
            for elem in assignment.elements_for_topic(&topic) {
                let (_, high) = consumer
                    .fetch_watermarks(&topic, elem.partition(), Duration::from_secs(1))
                    .ok()?;
                let at = positions.get(&elem.partition()).copied().unwrap_or(0);
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

#[async_trait]
impl RecordSource for KafkaSource {
    async fn next_batch(
        &mut self,
        max: usize,
        max_wait: Duration,
    ) -> Result<SourceBatch, SourceError> {
        let mut batch = SourceBatch::default();
        let deadline = tokio::time::Instant::now() + max_wait;
        // Wait up to max_wait for the first record, then take what arrives within a short linger.
        let mut wait_until = deadline;
        while batch.records.len() < max {
            let message = match tokio::time::timeout_at(wait_until, self.consumer.recv()).await {
                Err(_) => break,
                Ok(Err(e)) => return Err(SourceError::Unavailable(e.to_string())),
                Ok(Ok(m)) => m,
            };
            let (partition, offset) = (message.partition(), message.offset());
            let record =
                MemberRecord::from_json(message.payload().unwrap_or_default()).map_err(|e| {
                    SourceError::Poison {
                        partition,
                        offset,
                        reason: e.to_string(),
                    }
                })?;
            batch.records.push(record);
            batch.commit.insert(partition, offset + 1);
            self.positions.insert(partition, offset + 1);
            if batch.records.len() == 1 {
                wait_until =
                    (tokio::time::Instant::now() + Duration::from_millis(10)).min(deadline);
            }
        }
        self.refresh_lag().await;
        Ok(batch)
    }

    async fn commit(&mut self, batch: &SourceBatch) -> Result<(), SourceError> {
        if batch.commit.is_empty() {
            return Ok(());
        }
        let mut offsets = TopicPartitionList::new();
        for (partition, next) in &batch.commit {
            offsets
                .add_partition_offset(&self.topic, *partition, Offset::Offset(*next))
                .map_err(|e| SourceError::Unavailable(e.to_string()))?;
        }
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || consumer.commit(&offsets, CommitMode::Sync))
            .await
            .map_err(|e| SourceError::Unavailable(e.to_string()))?
            .map_err(|e| SourceError::Unavailable(e.to_string()))
    }

    fn lag(&self) -> Option<u64> {
        self.lag
    }
}
