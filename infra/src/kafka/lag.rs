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
