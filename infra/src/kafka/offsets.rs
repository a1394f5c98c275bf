//! Offsets of the topic for the member tool: where the topic ends now, reading a range of it,
//! and committing a consumer group's position (the hand-over of a rebuild to a projector).

use std::collections::BTreeMap;
use std::time::Duration;

use member_projections::MemberRecord;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::config::KafkaSettings;

/// The next offset of each partition (partition -> offset).
pub type Offsets = BTreeMap<i32, i64>;

const TIMEOUT: Duration = Duration::from_secs(5);

/// The end of every partition of the topic now (high watermarks): everything the relay has
/// published so far lies below.
pub async fn end_offsets(settings: &KafkaSettings) -> Result<Offsets, KafkaError> {
    let settings = settings.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = super::client_config(&settings).create()?;
        let metadata = consumer.fetch_metadata(Some(&settings.topic), TIMEOUT)?;
        let mut ends = Offsets::new();
        for topic in metadata.topics() {
            for p in topic.partitions() {
                let (_, high) = consumer.fetch_watermarks(&settings.topic, p.id(), TIMEOUT)?;
                ends.insert(p.id(), high);
            }
        }
        Ok(ends)
    })
    .await
    .map_err(|_| KafkaError::Canceled)?
}

/// Commits `offsets` as the position of `group` (which must have no running member that
/// commits over it).
pub async fn commit_group(
    settings: &KafkaSettings,
    group: &str,
    offsets: &Offsets,
) -> Result<(), KafkaError> {
    let settings = settings.clone();
    let group = group.to_owned();
    let offsets = offsets.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = super::client_config(&settings)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()?;
        let mut list = TopicPartitionList::new();
        for (p, o) in &offsets {
            list.add_partition_offset(&settings.topic, *p, Offset::Offset(*o))?;
        }
        consumer.commit(&list, CommitMode::Sync)
    })
    .await
    .map_err(|_| KafkaError::Canceled)?
}

/// The records of the topic between two positions (`from` inclusive, `to` exclusive, per
/// partition), in partition order; not part of any consumer group.
pub struct RangeReader {
    consumer: StreamConsumer,
    /// Partitions still to finish -> their end offset.
    pending: BTreeMap<i32, i64>,
}

impl RangeReader {
    pub fn new(settings: &KafkaSettings, from: &Offsets, to: &Offsets) -> Result<Self, KafkaError> {
        let consumer: StreamConsumer = super::client_config(settings)
            .set("group.id", format!("{}.member-tool", settings.topic))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("fetch.wait.max.ms", "50")
            .create()?;
        let mut list = TopicPartitionList::new();
        let mut pending = BTreeMap::new();
        for (&p, &end) in to {
            let start = from.get(&p).copied().unwrap_or(0);
            if start < end {
                list.add_partition_offset(&settings.topic, p, Offset::Offset(start))?;
                pending.insert(p, end);
            }
        }
        if !pending.is_empty() {
            consumer.assign(&list)?;
        }
        Ok(Self { consumer, pending })
    }

    /// Up to `max` records; an empty batch once the range is read. Fails when nothing arrives
    /// for `stall` (the broker is down or the range does not exist).
    pub async fn next_batch(
        &mut self,
        max: usize,
        stall: Duration,
    ) -> Result<Vec<MemberRecord>, RangeError> {
        let mut batch = Vec::new();
        while !self.pending.is_empty() && batch.len() < max {
            let wait = if batch.is_empty() {
                stall
            } else {
                Duration::from_millis(20)
            };
            let message = match tokio::time::timeout(wait, self.consumer.recv()).await {
                Err(_) if batch.is_empty() => return Err(RangeError::Stalled(stall)),
                Err(_) => break,
                Ok(Err(e)) => return Err(RangeError::Kafka(e)),
                Ok(Ok(m)) => m,
            };
            let (partition, offset) = (message.partition(), message.offset());
            let Some(&end) = self.pending.get(&partition) else {
                continue;
            };
            if offset >= end {
                self.pending.remove(&partition);
                continue;
            }
            let record =
                MemberRecord::from_json(message.payload().unwrap_or_default()).map_err(|e| {
                    RangeError::Poison {
                        partition,
                        offset,
                        reason: e.to_string(),
                    }
                })?;
            batch.push(record);
            if offset + 1 >= end {
                self.pending.remove(&partition);
            }
        }
        Ok(batch)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RangeError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("no record arrived for {0:?}")]
    Stalled(Duration),
    #[error("record at partition {partition} offset {offset} is unreadable: {reason}")]
    Poison {
        partition: i32,
        offset: i64,
        reason: String,
    },
}
