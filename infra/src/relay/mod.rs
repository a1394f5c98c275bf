//! The outbox relay: publishes every committed event of the store to Kafka, in commit-safe order,
//! never skipping one.
//!
//! Loop: read the next batch after the checkpoint in `(txid, position)` order, restricted to
//! transactions below the current snapshot's xmin (all of them have ended, so no event can still
//! appear before the checkpoint); build one record per event (envelope + document after it);
//! produce them keyed by member id with an idempotent producer; once every record of the batch is
//! acknowledged, store the checkpoint. A crash anywhere re-publishes at most the unacknowledged
//! batch: at-least-once, and consumers are idempotent. See docs/decisions/0002-relay-ordering.md.

mod checkpoint;
pub mod publisher;
mod reader;
mod records;

use std::time::{Duration, Instant};

use member_projections::projector::backoff;
use sqlx::PgPool;

pub use checkpoint::Checkpoint;
pub use publisher::Publisher;
pub use reader::{EventRow, EventStoreReader};

use crate::config::{KafkaSettings, RelaySettings};

/// Errors of one relay step. Every one is retried with backoff by [`Relay::run`].
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("event store: {0}")]
    Store(#[from] sqlx::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("event store holds an event this build cannot read: {0}")]
    Corrupt(String),
}

pub struct Relay {
    name: String,
    reader: EventStoreReader,
    publisher: Publisher,
    batch_size: u32,
    idle_poll: Duration,
    /// When the lag was last counted: counting is a range scan, done at most once a second.
    lag_counted: std::sync::Mutex<Option<Instant>>,
}

impl Relay {
    /// A relay named `name` (its checkpoint row), publishing to `kafka.topic`.
    pub fn new(
        name: &str,
        pool: PgPool,
        kafka: &KafkaSettings,
        settings: &RelaySettings,
    ) -> Result<Self, RelayError> {
        Ok(Self {
            name: name.to_owned(),
            reader: EventStoreReader::new(pool),
            publisher: Publisher::new(kafka)?,
            batch_size: settings.batch_size,
            idle_poll: Duration::from_millis(settings.idle_poll_ms),
            lag_counted: std::sync::Mutex::new(None),
        })
    }

    /// Publishes one batch; returns how many events it published (0: caught up).
    pub async fn step(&self) -> Result<usize, RelayError> {
        let from = Checkpoint::load(self.reader.pool(), &self.name).await?;
        let rows = self.reader.next_batch(from, self.batch_size).await?;
        let Some(last) = rows.last() else {
            metrics::gauge!("member_relay_lag_events").set(0.0);
            metrics::gauge!("member_relay_lag_seconds").set(0.0);
            return Ok(0);
        };
        let to = Checkpoint {
            txid: last.txid,
            position: last.position,
        };
        let oldest = rows[0].recorded_at;
        let records = records::build(&self.reader, &rows).await?;
        self.publisher.publish(&records).await?;
        to.store(self.reader.pool(), &self.name).await?;
        metrics::counter!("member_relay_events_total").increment(rows.len() as u64);
        if self.lag_due() {
            let behind = self.reader.events_after(to).await?;
            metrics::gauge!("member_relay_lag_events").set(behind as f64);
            let seconds = if behind > 0 {
                (chrono::Utc::now() - oldest).num_milliseconds().max(0) as f64 / 1000.0
            } else {
                0.0
            };
            metrics::gauge!("member_relay_lag_seconds").set(seconds);
        }
        Ok(rows.len())
    }

    fn lag_due(&self) -> bool {
        let mut last = self.lag_counted.lock().expect("lag lock");
        let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if due {
            *last = Some(Instant::now());
        }
        due
    }

    /// The relay's checkpoint row is named after the topic it publishes to.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs until `shutdown` resolves. Failures (database or broker down) are retried with
    /// exponential backoff and jitter, from the last stored checkpoint.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        if let Err(e) =
            crate::kafka::ensure_topic(self.publisher.settings(), self.publisher.topic()).await
        {
            tracing::warn!(error = %e, "could not ensure the topic exists; producing anyway");
        }
        let mut failures: u32 = 0;
        loop {
            let started = Instant::now();
            let pause = tokio::select! {
                _ = &mut shutdown => break,
                outcome = self.step() => match outcome {
                    Ok(n) => {
                        failures = 0;
                        metrics::histogram!("member_relay_batch_seconds").record(started.elapsed().as_secs_f64());
                        if n == 0 { self.idle_poll } else { Duration::ZERO }
                    }
                    Err(e) => {
                        failures += 1;
                        let pause = backoff(failures);
                        tracing::warn!(error = %e, failures, retry_in_ms = pause.as_millis() as u64, "relay step failed");
                        metrics::counter!("member_relay_failures_total").increment(1);
                        pause
                    }
                }
            };
            if !pause.is_zero() {
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
        tracing::info!(relay = %self.name, "relay stopped");
    }
}
