//! One reader of the topic for all the projectors of a process (ADR 0014).
//!
//! `member run` projects into six stores. Six consumers would fetch every record from the broker
//! six times, and the local broker (tansu on SQLite) pays for every fetch it answers and every
//! record it returns: six readers of a busy topic drove it past its request timeouts, and then
//! no store advanced at all. The feed fetches the topic once and hands each record to every
//! projector. Each projector keeps its own consumer group: it starts from its own committed
//! offsets, commits only what its sink made durable, and reports its own lag, exactly as if it
//! read alone.
//!
//! A projector whose store is down holds its batch and takes nothing more. The feed waits for it
//! at most `DETACH_AFTER`, then lets it go: that projector drains what was queued for it and
//! goes on with a consumer of its own from the next offset it had not received, so a store that
//! is down never holds up the others, and nothing is skipped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use member_projections::projector::{RecordSource, SourceBatch, SourceError};
use member_projections::MemberRecord;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::{SendTimeoutError, TrySendError};

use super::source::{
    commit_batch, consumer_config, read_record, wait_for_partitions, Filling, KafkaSource,
    LagGauge, Positions, Unreadable,
};
use crate::config::KafkaSettings;

/// How long the feed waits for a projector that takes no records before it lets it read alone.
pub const DETACH_AFTER: Duration = Duration::from_secs(5);

/// What the feed hands a projector: a record with its partition and offset, or the first
/// record it could not read.
type Item = Result<(i32, i64, MemberRecord), Unreadable>;

/// One projector's end of the feed.
struct Subscriber {
    group: String,
    /// Per partition, the first offset this group has not committed: records below it are not
    /// sent again.
    from: Positions,
    sender: Option<mpsc::Sender<Item>>,
}

/// Opens one reader for `groups` and returns their sources, in the same order. Each queue holds
/// up to `queue` records.
pub async fn open(
    settings: &KafkaSettings,
    groups: &[String],
    queue: usize,
) -> Result<Vec<FeedSource>, KafkaError> {
    let mut sources = Vec::new();
    let mut subscribers = Vec::new();
    let mut partitions = Vec::new();
    for group in groups {
        let committer: Arc<BaseConsumer> = Arc::new(consumer_config(settings, group).create()?);
        let (found, from) = {
            let committer = committer.clone();
            let topic = settings.topic.clone();
            tokio::task::spawn_blocking(move || committed(committer.as_ref(), &topic))
                .await
                .map_err(|_| KafkaError::Canceled)??
        };
        partitions = found;
        let (sender, receiver) = mpsc::channel(queue.max(1));
        subscribers.push(Subscriber {
            group: group.clone(),
            from: from.clone(),
            sender: Some(sender),
        });
        sources.push(FeedSource {
            settings: settings.clone(),
            group: group.clone(),
            receiver,
            own: None,
            lag: LagGauge::new(committer.clone(), &settings.topic),
            committer,
            positions: from,
            halted: None,
        });
    }
    if subscribers.is_empty() {
        return Ok(sources);
    }
    // The reader starts at the lowest position any group needs; a group that never committed
    // needs the beginning.
    let reader: StreamConsumer =
        consumer_config(settings, &format!("{}.projector.feed", settings.topic)).create()?;
    let mut start = TopicPartitionList::new();
    for p in &partitions {
        let lowest = subscribers
            .iter()
            .map(|s| s.from.get(p).copied())
            .min()
            .flatten();
        let offset = lowest.map_or(Offset::Beginning, Offset::Offset);
        start.add_partition_offset(&settings.topic, *p, offset)?;
    }
    reader.assign(&start)?;
    tokio::spawn(run(reader, subscribers));
    Ok(sources)
}

/// The partitions of the topic and the offsets `consumer`'s group committed for them.
fn committed(consumer: &BaseConsumer, topic: &str) -> Result<(Vec<i32>, Positions), KafkaError> {
    let partitions = wait_for_partitions(consumer, topic)?;
    let mut list = TopicPartitionList::new();
    for p in &partitions {
        list.add_partition(topic, *p);
    }
    let committed = consumer.committed_offsets(list, Duration::from_secs(10))?;
    let mut from = Positions::new();
    for elem in committed.elements_for_topic(topic) {
        if let Offset::Offset(o) = elem.offset() {
            from.insert(elem.partition(), o);
        }
    }
    Ok((partitions, from))
}

/// Reads the topic and hands each record to every subscriber that needs it, until every
/// subscriber is gone.
async fn run(reader: StreamConsumer, mut subscribers: Vec<Subscriber>) {
    loop {
        for s in &mut subscribers {
            if s.sender.as_ref().is_some_and(|tx| tx.is_closed()) {
                s.sender = None;
            }
        }
        if subscribers.iter().all(|s| s.sender.is_none()) {
            return;
        }
        // Wake up now and then to notice subscribers that went away while nothing arrives.
        let message = match tokio::time::timeout(Duration::from_secs(1), reader.recv()).await {
            Err(_) => continue,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the projectors' shared reader could not fetch");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Ok(Ok(message)) => message,
        };
        let (partition, offset) = (message.partition(), message.offset());
        let item: Item = read_record(&message).map(|record| (partition, offset, record));
        drop(message);
        for s in &mut subscribers {
            let Some(sender) = &s.sender else { continue };
            if s.from.get(&partition).is_some_and(|from| offset < *from) {
                continue;
            }
            let kept = match sender.try_send(item.clone()) {
                Ok(()) => true,
                Err(TrySendError::Closed(_)) => false,
                Err(TrySendError::Full(item)) => {
                    match sender.send_timeout(item, DETACH_AFTER).await {
                        Ok(()) => true,
                        Err(SendTimeoutError::Closed(_)) => false,
                        Err(SendTimeoutError::Timeout(_)) => {
                            tracing::warn!(
                                group = %s.group,
                                "a projector took no records for {DETACH_AFTER:?}; it reads on its own now"
                            );
                            metrics::counter!("member_projector_feed_detached_total", "group" => s.group.clone())
                            .increment(1);
                            false
                        }
                    }
                }
            };
            if !kept {
                s.sender = None;
            }
        }
        // A record nobody could read stops the feed: every subscriber halts on it.
        if item.is_err() {
            return;
        }
    }
}

/// A projector's record source on the shared feed; once detached, its own `KafkaSource`.
pub struct FeedSource {
    settings: KafkaSettings,
    group: String,
    receiver: mpsc::Receiver<Item>,
    own: Option<KafkaSource>,
    committer: Arc<BaseConsumer>,
    lag: LagGauge<BaseConsumer>,
    /// Per partition, the next offset not yet received.
    positions: Positions,
    halted: Option<Unreadable>,
}

impl FeedSource {
    /// Whether this source left the shared feed and reads with a consumer of its own.
    pub fn is_detached(&self) -> bool {
        self.own.is_some()
    }

    /// The consumer group this source consumes for.
    pub fn group(&self) -> &str {
        &self.group
    }

    async fn detach(&mut self) -> Result<&mut KafkaSource, SourceError> {
        let own = KafkaSource::starting_at(&self.settings, &self.group, &self.positions)
            .await
            .map_err(|e| SourceError::Unavailable(e.to_string()))?;
        Ok(self.own.insert(own))
    }
}

#[async_trait]
impl RecordSource for FeedSource {
    async fn next_batch(
        &mut self,
        max: usize,
        max_wait: Duration,
    ) -> Result<SourceBatch, SourceError> {
        if let Some(own) = &mut self.own {
            return own.next_batch(max, max_wait).await;
        }
        if let Some(unreadable) = &self.halted {
            return Err(unreadable.error());
        }
        let mut filling = Filling::new(max, max_wait);
        while !filling.is_full() {
            let item =
                match tokio::time::timeout_at(filling.wait_until(), self.receiver.recv()).await {
                    Err(_) => break,
                    Ok(Some(item)) => item,
                    // The feed let this projector go (or stopped): go on alone once what was
                    // queued is delivered.
                    Ok(None) if filling.batch.records.is_empty() => {
                        return self.detach().await?.next_batch(max, max_wait).await;
                    }
                    Ok(None) => break,
                };
            if !filling.take(item, &mut self.positions, &mut self.halted)? {
                break;
            }
        }
        let batch = filling.batch;
        self.lag.refresh(&self.positions).await;
        Ok(batch)
    }

    async fn commit(&mut self, batch: &SourceBatch) -> Result<(), SourceError> {
        match &mut self.own {
            Some(own) => own.commit(batch).await,
            None => commit_batch(&self.committer, &self.settings.topic, batch).await,
        }
    }

    fn lag(&self) -> Option<u64> {
        match &self.own {
            Some(own) => own.lag(),
            None => self.lag.get(),
        }
    }
}

/// The positions of a feed source's groups, for tests: the offsets each committed.
pub async fn committed_positions(
    settings: &KafkaSettings,
    group: &str,
) -> Result<BTreeMap<i32, i64>, KafkaError> {
    let consumer: BaseConsumer = consumer_config(settings, group).create()?;
    let topic = settings.topic.clone();
    tokio::task::spawn_blocking(move || committed(&consumer, &topic).map(|(_, from)| from))
        .await
        .map_err(|_| KafkaError::Canceled)?
}
