//! Kafka through rdkafka: client configuration shared by the relay and the projectors, and
//! topic administration.

pub mod lag;
pub mod source;

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use crate::config::KafkaSettings;

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

/// Creates the topic with the configured partition count unless it exists.
pub async fn ensure_topic(
    settings: &KafkaSettings,
    topic: &str,
) -> Result<(), rdkafka::error::KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client_config(settings).create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(
            &[NewTopic::new(
                topic,
                settings.partitions as i32,
                TopicReplication::Fixed(1),
            )],
            &options,
        )
        .await?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(rdkafka::error::KafkaError::AdminOp(code)).inspect_err(|_| {
                    tracing::warn!(topic = %name, ?code, "creating the topic failed");
                })
            }
        }
    }
    Ok(())
}
