//! Kafka through rdkafka: client configuration shared by the relay and the projectors, and
//! topic administration.

pub mod lag;
pub mod offsets;
pub mod source;

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use crate::config::{KafkaSettings, Settings};
use member_projections::Target;

/// The consumer group of a target's projector: `<topic>.projector.<target>`; for MySQL also
/// the shard layout, `<topic>.projector.mysql.<layout>` (a hash of the logical shard count and
/// the databases). A re-shard is a rebuild into another layout: the projector started with the
/// new layout resumes from the offsets the rebuild committed for it, while the old layout's
/// projector keeps its own position until it is stopped (docs/decisions/0009).
pub fn projector_group(settings: &Settings, target: Target) -> String {
    let group = source::KafkaSource::group_of(&settings.kafka.topic, target.as_str());
    match target {
        Target::Mysql => format!("{group}.{}", mysql_layout(&settings.mysql)),
        _ => group,
    }
}

/// The shard layout of the MySQL settings: 8 hex digits naming logical shards and databases.
pub fn mysql_layout(mysql: &crate::config::MysqlSettings) -> String {
    let layout = format!("{}/{}", mysql.logical_shards, mysql.databases.join(","));
    format!(
        "{:08x}",
        member_projections::shards::stable_hash(layout.as_bytes()) as u32
    )
}

/// Base client configuration for the configured brokers.
pub fn client_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("client.id", "member")
        .set("socket.keepalive.enable", "true")
        .set("reconnect.backoff.max.ms", "2000");
    config
}

/// Creates the topic unless it exists, with the configured partitions, replication factor,
/// `min.insync.replicas` and `retention.ms` (an existing topic keeps its own settings). The
/// brokers do not create topics on first use (`auto.create.topics.enable=false`), so the relay
/// and the projectors call this before they produce or subscribe.
pub async fn ensure_topic(
    settings: &KafkaSettings,
    topic: &str,
) -> Result<(), rdkafka::error::KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client_config(settings).create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let min_insync = settings.min_insync_replicas.to_string();
    let retention = settings.retention_ms.to_string();
    let new_topic = NewTopic::new(
        topic,
        settings.partitions as i32,
        TopicReplication::Fixed(i32::from(settings.replication_factor)),
    )
    .set("min.insync.replicas", &min_insync)
    .set("retention.ms", &retention);
    let results = admin.create_topics(&[new_topic], &options).await?;
    for result in results {
        match result {
            Ok(name) => {
                tracing::info!(topic = %name, partitions = settings.partitions, "created the topic")
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(rdkafka::error::KafkaError::AdminOp(code)).inspect_err(|_| {
                    tracing::warn!(topic = %name, ?code, "creating the topic failed");
                })
            }
        }
    }
    Ok(())
}
