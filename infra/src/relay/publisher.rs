//! Producing records to Kafka: an idempotent producer with up to five requests in flight
//! (docs/decisions/0018-idempotent-relay-producer.md).

use std::time::Duration;

use member_projections::MemberRecord;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use crate::config::KafkaSettings;

pub struct Publisher {
    producer: FutureProducer,
    topic: String,
    settings: KafkaSettings,
}

/// The relay's producer configuration (also used by the benchmark's rdkafka-only baseline, so the
/// two cannot drift apart).
pub fn producer_config(settings: &KafkaSettings) -> rdkafka::ClientConfig {
    let mut config = crate::kafka::client_config(settings);
    if settings.idempotent_producer {
        // Idempotence: the broker drops a retried batch it already wrote and refuses one out of
        // sequence, so with up to five requests in flight per connection a retry neither
        // duplicates nor reorders a partition, and one member's records (one key, one
        // partition) stay in order. Requires acks=all (set below).
        config
            .set("enable.idempotence", "true")
            .set("max.in.flight.requests.per.connection", "5");
    } else {
        // Without idempotence, one request in flight keeps retries from reordering a
        // partition; a retry may duplicate a record, which the projectors' version guards
        // ignore.
        config
            .set("enable.idempotence", "false")
            .set("max.in.flight.requests.per.connection", "1")
            .set("retries", "2147483647");
    }
    config
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "2")
        .set("batch.num.messages", "10000")
        // A batch not acknowledged in time fails as a whole and is retried from the
        // checkpoint by the relay loop. Generous, because that retry publishes the batch
        // again on top of what the producer still holds: with 15 s, an overloaded local broker
        // (slow, not down) was sent every batch again and again and never caught up
        // (docs/benchmarks.md, 2026-12-02). A broker that restarts costs no more: the
        // producer sends what was in flight again on its new connection.
        .set("message.timeout.ms", "60000");
    config
}

impl Publisher {
    pub fn new(settings: &KafkaSettings) -> Result<Self, KafkaError> {
        let producer: FutureProducer = producer_config(settings).create()?;
        Ok(Self {
            producer,
            topic: settings.topic.clone(),
            settings: settings.clone(),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn settings(&self) -> &KafkaSettings {
        &self.settings
    }

    /// Produces every record, keyed by member id, and waits until the broker acknowledged all of
    /// them. Records are enqueued in order, so per-key order is the batch's order.
    pub async fn publish(&self, records: &[MemberRecord]) -> Result<(), KafkaError> {
        self.enqueue(records).await?.acknowledged().await
    }

    /// Hands every record to the producer, in order, without waiting for the broker: a batch
    /// enqueued after this one is delivered after it on each partition.
    pub async fn enqueue(&self, records: &[MemberRecord]) -> Result<Deliveries, KafkaError> {
        let mut deliveries = Vec::with_capacity(records.len());
        for record in records {
            let key = record.event.member_id.to_string();
            let payload = record.to_json();
            loop {
                let message = FutureRecord::to(&self.topic).key(&key).payload(&payload);
                match self.producer.send_result(message) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        // The producer's queue is full: let deliveries drain.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => return Err(e),
                }
            }
        }
        Ok(Deliveries(deliveries))
    }
}

/// The pending acknowledgements of an enqueued batch.
pub struct Deliveries(Vec<DeliveryFuture>);

impl Deliveries {
    /// Waits until the broker acknowledged every record (or one of them failed for good, after
    /// the producer's own retries and `message.timeout.ms`).
    pub async fn acknowledged(self) -> Result<(), KafkaError> {
        for delivery in self.0 {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(e),
                Err(_canceled) => return Err(KafkaError::Canceled),
            }
        }
        Ok(())
    }
}
