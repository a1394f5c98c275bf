//! Projection lag from the projectors' consumer groups: records between each group's committed
//! offsets and the partitions' high watermarks. Asks the broker; for status pages, not hot paths.

use std::time::Duration;

use async_trait::async_trait;
use member_projections::status::{ProjectionLag, StatusProvider};
use member_projections::Target;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Settings;

pub struct ConsumerGroupLag {
    settings: Settings,
}

impl ConsumerGroupLag {
    pub fn new(settings: &Settings) -> Self {
        Self {
            settings: settings.clone(),
        }
    }

    /// Records behind for one target's group (blocking; call off the async threads).
    pub fn records_behind(
        settings: &Settings,
        target: Target,
    ) -> Result<u64, rdkafka::error::KafkaError> {
        let timeout = Duration::from_secs(2);
        let group = super::projector_group(settings, target);
        let settings = &settings.kafka;
        let consumer: BaseConsumer = super::client_config(settings)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()?;
        let metadata = consumer.fetch_metadata(Some(&settings.topic), timeout)?;
        let mut partitions = TopicPartitionList::new();
        for topic in metadata.topics() {
            for p in topic.partitions() {
                partitions.add_partition(&settings.topic, p.id());
            }
        }
        let committed = consumer.committed_offsets(partitions, timeout)?;
        let mut behind = 0u64;
        for elem in committed.elements() {
            let (low, high) =
                consumer.fetch_watermarks(&settings.topic, elem.partition(), timeout)?;
            let at = match elem.offset() {
                Offset::Offset(o) => o,
                _ => low,
            };
            behind += (high - at).max(0) as u64;
        }
        Ok(behind)
    }
}

#[async_trait]
impl StatusProvider for ConsumerGroupLag {
    async fn projection_lag(
        &self,
    ) -> Result<Vec<ProjectionLag>, member_projections::sink::BoxError> {
        let settings = self.settings.clone();
        let lags = tokio::task::spawn_blocking(move || {
            Target::ALL
                .into_iter()
                .map(|target| ProjectionLag {
                    target: target.as_str().to_owned(),
                    records_behind: Self::records_behind(&settings, target).ok(),
                    seconds_behind: None,
                })
                .collect::<Vec<_>>()
        })
        .await?;
        Ok(lags)
    }
}

/// A projector consumer group as the console shows it: who is in it, and where each partition
/// of the topic stands.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GroupDetail {
    pub group: String,
    /// The group's state as the broker reports it (`Stable`, `Empty`, `PreparingRebalance`, ...).
    pub state: String,
    pub members: Vec<GroupMember>,
    pub partitions: Vec<PartitionLag>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupMember {
    pub client_id: String,
    pub host: String,
    /// The partitions of the topic assigned to this member.
    pub partitions: Vec<i32>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PartitionLag {
    pub partition: i32,
    /// The group's committed offset (`None`: nothing committed yet).
    pub committed: Option<i64>,
    pub high_watermark: i64,
}

impl ConsumerGroupLag {
    /// Members and partitions of one target's group (blocking; call off the async threads).
    pub fn group_detail(
        settings: &Settings,
        target: Target,
    ) -> Result<GroupDetail, rdkafka::error::KafkaError> {
        let timeout = Duration::from_secs(2);
        let group = super::projector_group(settings, target);
        let kafka = &settings.kafka;
        let consumer: BaseConsumer = super::client_config(kafka)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()?;
        let list = consumer.fetch_group_list(Some(&group), timeout)?;
        let mut detail = GroupDetail {
            group: group.clone(),
            ..GroupDetail::default()
        };
        if let Some(info) = list.groups().iter().find(|g| g.name() == group) {
            detail.state = info.state().to_owned();
            detail.members = info
                .members()
                .iter()
                .map(|m| GroupMember {
                    client_id: m.client_id().to_owned(),
                    host: m.client_host().to_owned(),
                    partitions: m
                        .assignment()
                        .map(|a| assigned_partitions(a, &kafka.topic))
                        .unwrap_or_default(),
                })
                .collect();
        }
        let metadata = consumer.fetch_metadata(Some(&kafka.topic), timeout)?;
        let mut partitions = TopicPartitionList::new();
        for topic in metadata.topics() {
            for p in topic.partitions() {
                partitions.add_partition(&kafka.topic, p.id());
            }
        }
        let committed = consumer.committed_offsets(partitions, timeout)?;
        for elem in committed.elements() {
            let (_, high) = consumer.fetch_watermarks(&kafka.topic, elem.partition(), timeout)?;
            detail.partitions.push(PartitionLag {
                partition: elem.partition(),
                committed: match elem.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                },
                high_watermark: high,
            });
        }
        detail.partitions.sort_by_key(|p| p.partition);
        Ok(detail)
    }
}

/// The partitions of `topic` in a member's assignment (Kafka's consumer protocol `Assignment`:
/// version i16, then [topic string, [partition i32]], then user data). The broker hands the
/// assignment over as these bytes only; a malformed one yields what was read before the fault.
fn assigned_partitions(bytes: &[u8], topic: &str) -> Vec<i32> {
    struct Cursor<'a>(&'a [u8]);
    impl Cursor<'_> {
        fn take(&mut self, n: usize) -> Option<&[u8]> {
            if self.0.len() < n {
                return None;
            }
            let (head, tail) = self.0.split_at(n);
            self.0 = tail;
            Some(head)
        }
        fn i16(&mut self) -> Option<i16> {
            self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
        }
        fn i32(&mut self) -> Option<i32> {
            self.take(4)
                .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        }
    }
    let mut c = Cursor(bytes);
    let mut out = Vec::new();
    let mut read = || -> Option<()> {
        c.i16()?;
        let topics = c.i32()?;
        for _ in 0..topics.max(0) {
            let len = c.i16()?.max(0) as usize;
            let name = c.take(len)?.to_vec();
            let count = c.i32()?;
            for _ in 0..count.max(0) {
                let p = c.i32()?;
                if name == topic.as_bytes() {
                    out.push(p);
                }
            }
        }
        Some(())
    };
    let _ = read();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assignment_names_the_partitions_of_the_topic() {
        let mut bytes = vec![0, 0, 0, 0, 0, 2];
        for (topic, parts) in [("other", vec![9i32]), ("member.events", vec![2, 0])] {
            bytes.extend((topic.len() as i16).to_be_bytes());
            bytes.extend(topic.as_bytes());
            bytes.extend((parts.len() as i32).to_be_bytes());
            for p in parts {
                bytes.extend(p.to_be_bytes());
            }
        }
        bytes.extend([0, 0, 0, 0]);
        assert_eq!(assigned_partitions(&bytes, "member.events"), vec![0, 2]);
        assert_eq!(
            assigned_partitions(&bytes[..9], "member.events"),
            Vec::<i32>::new()
        );
    }
}
