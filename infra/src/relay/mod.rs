//! The outbox relay: publishes every committed event of the store to Kafka, in commit-safe order,
//! never skipping one.
//!
//! Loop: read the next batch after the checkpoint in `(txid, position)` order, restricted to
//! transactions below the current snapshot's xmin (all of them have ended, so no event can still
//! appear before the checkpoint); build one record per event (envelope + document after it);
//! produce them keyed by member id; once every record of the batch is acknowledged, store the
//! checkpoint. The next batch is read and enqueued while the broker acknowledges the previous
//! one (two in flight); checkpoints still move in order. A crash anywhere re-publishes at most the unacknowledged
//! batch: at-least-once, and consumers are idempotent. See docs/decisions/0002-relay-ordering.md.
//!
//! Only one relay publishes at a time: [`Relay::run`] publishes while it holds the relay's lease
//! (an advisory lock of the event store, [`lease`]); a second relay waits and takes over when
//! the first dies.

mod checkpoint;
pub mod lease;
pub mod publisher;
mod reader;
mod records;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use member_projections::projector::backoff;
use sqlx::PgPool;

pub use checkpoint::Checkpoint;
pub use lease::Lease;
pub use publisher::{Deliveries, Publisher};
pub use reader::{EventRow, EventStoreReader, ReadBatch};

use crate::config::{KafkaSettings, RelaySettings};
use crate::event_store::vault::Vault;

/// Errors of one relay step. Every one is retried with backoff by [`Relay::run`].
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("event store: {0}")]
    Store(#[from] sqlx::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("event store holds an event this build cannot read: {0}")]
    Corrupt(String),
    /// The task reading ahead panicked or was cancelled; retried from the stored checkpoint.
    #[error("the read ahead ended without a result: {0}")]
    ReadAhead(#[from] tokio::task::JoinError),
}

pub struct Relay {
    name: String,
    reader: EventStoreReader,
    publisher: Publisher,
    folds: records::Folds,
    batch_size: u32,
    idle_poll: Duration,
    /// When the lag was last counted: counting is a range scan, done at most once a second.
    lag_counted: std::sync::Mutex<Option<Instant>>,
    /// When the erased members' values were last purged from the log (at most once a second).
    purged: std::sync::Mutex<Option<Instant>>,
}

impl Relay {
    /// A relay named `name` (its checkpoint row), publishing to `kafka.topic`.
    pub fn new(
        name: &str,
        pool: PgPool,
        kafka: &KafkaSettings,
        settings: &RelaySettings,
        vault: Vault,
    ) -> Result<Self, RelayError> {
        Ok(Self {
            name: name.to_owned(),
            reader: EventStoreReader::new(pool, vault),
            publisher: Publisher::new(kafka)?,
            folds: records::Folds::new(records::KEPT_FOLDS),
            batch_size: settings.batch_size,
            idle_poll: Duration::from_millis(settings.idle_poll_ms),
            lag_counted: std::sync::Mutex::new(None),
            purged: std::sync::Mutex::new(None),
        })
    }

    /// Publishes one batch and waits for it; returns how many events it published (0: caught
    /// up). [`run`](Self::run) does the same with batches overlapping.
    pub async fn step(&self) -> Result<usize, RelayError> {
        let from = Checkpoint::load(self.reader.pool(), &self.name).await?;
        let Some(batch) = self.read(from).await? else {
            return Ok(0);
        };
        let deliveries = self.publisher.enqueue(&batch.records).await?;
        deliveries.acknowledged().await?;
        self.acknowledge(&batch).await?;
        Ok(batch.events)
    }

    /// The next batch after `from` with its records built, `None` when there is none yet.
    async fn read(&self, from: Checkpoint) -> Result<Option<Batch>, RelayError> {
        self.read_ahead(from, &mut None).await
    }

    /// [`read`](Self::read), taking the events from `ahead` when it is the read that starts at
    /// `from`, and, when the batch came back full (more are likely waiting), starting the next
    /// read into `ahead`: it runs on another worker while this batch's records are built and
    /// enqueued, so reading the store (with opening the sealed values) and building records
    /// overlap: 458,734 events in 6.6-6.9 s instead of 7.8-7.9 s (docs/benchmarks.md, 2026-12-05).
    async fn read_ahead(
        &self,
        from: Checkpoint,
        ahead: &mut Option<ReadAhead>,
    ) -> Result<Option<Batch>, RelayError> {
        let read = match ahead.take() {
            Some(next) if next.from == from => next.read().await?,
            _ => self.reader.next_batch(from, self.batch_size).await?,
        };
        if let Some(to) = read
            .last
            .filter(|_| read.scanned >= self.batch_size as usize)
        {
            *ahead = Some(ReadAhead::start(&self.reader, to, self.batch_size));
        }
        let Some(to) = read.last else {
            metrics::gauge!("member_relay_lag_events").set(0.0);
            metrics::gauge!("member_relay_lag_seconds").set(0.0);
            self.purge_erasures().await;
            return Ok(None);
        };
        // A batch of other aggregates' events only moves the checkpoint.
        let records = if read.events.is_empty() {
            Vec::new()
        } else {
            records::build(&self.reader, &self.folds, &read.events).await?
        };
        Ok(Some(Batch {
            to,
            oldest: read
                .events
                .first()
                .map_or_else(chrono::Utc::now, |e| e.recorded_at),
            events: read.events.len(),
            records,
            read_at: Instant::now(),
        }))
    }

    /// Stores the checkpoint after a batch the broker acknowledged whole.
    async fn acknowledge(&self, batch: &Batch) -> Result<(), RelayError> {
        batch.to.store(self.reader.pool(), &self.name).await?;
        metrics::counter!("member_relay_events_total").increment(batch.events as u64);
        metrics::histogram!("member_relay_batch_seconds")
            .record(batch.read_at.elapsed().as_secs_f64());
        if self.lag_due() {
            let behind = self.reader.events_after(batch.to).await?;
            metrics::gauge!("member_relay_lag_events").set(behind as f64);
            let seconds = if behind > 0 {
                (chrono::Utc::now() - batch.oldest)
                    .num_milliseconds()
                    .max(0) as f64
                    / 1000.0
            } else {
                0.0
            };
            metrics::gauge!("member_relay_lag_seconds").set(seconds);
        }
        self.purge_erasures().await;
        Ok(())
    }

    /// At most once a second, after a checkpoint was stored or while idle: erasures every relay
    /// has published can leave the log (migration 0008). A failure only delays that.
    async fn purge_erasures(&self) {
        {
            let mut last = self.purged.lock().expect("purge lock");
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                return;
            }
            *last = Some(Instant::now());
        }
        match crate::event_store::erasure::purge_published(self.reader.pool()).await {
            Ok(0) => {}
            Ok(members) => {
                tracing::info!(
                    members,
                    "erased members' values purged from the event store"
                )
            }
            Err(error) => {
                tracing::warn!(%error, "purging erased members' values failed; retried later")
            }
        }
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

    /// Runs until `shutdown` resolves, publishing while it holds the relay's lease and waiting
    /// for it otherwise. Failures (database or broker down) are retried with exponential
    /// backoff and jitter, from the last stored checkpoint.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let mut shutdown = Shutdown {
            signal: std::pin::pin!(shutdown),
            drain_until: None,
        };
        if let Err(e) =
            crate::kafka::ensure_topic(self.publisher.settings(), self.publisher.topic()).await
        {
            tracing::warn!(error = %e, "could not ensure the topic exists; producing anyway");
        }
        let mut failures: u32 = 0;
        while !shutdown.fired() {
            let Some(mut lease) = self.wait_for_lease(&mut shutdown).await else {
                break;
            };
            tracing::info!(relay = %self.name, "holding the relay lease, publishing");
            metrics::gauge!("member_relay_active").set(1.0);
            while !shutdown.fired() {
                let outcome = tokio::select! {
                    outcome = self.pipeline(&mut shutdown, &mut failures) => outcome,
                    _ = lease.lost() => {
                        tracing::warn!(relay = %self.name, "lost the relay lease's connection, stopped publishing");
                        break;
                    }
                };
                let Err(e) = outcome else {
                    break;
                };
                failures += 1;
                let pause = backoff(failures);
                tracing::warn!(error = %e, failures, retry_in_ms = pause.as_millis() as u64, "relay step failed");
                metrics::counter!("member_relay_failures_total").increment(1);
                shutdown.sleep(pause).await;
            }
            metrics::gauge!("member_relay_active").set(0.0);
            lease.release().await;
        }
        tracing::info!(relay = %self.name, "relay stopped");
    }

    /// Waits until this relay holds its lease; `None` when the shutdown fired first.
    async fn wait_for_lease<F: std::future::Future<Output = ()>>(
        &self,
        shutdown: &mut Shutdown<'_, F>,
    ) -> Option<Lease> {
        let mut waiting_logged = false;
        let mut failures = 0;
        loop {
            match shutdown
                .unless_fired(Lease::try_acquire(self.reader.pool(), &self.name))
                .await?
            {
                Ok(Some(lease)) => return Some(lease),
                Ok(None) => {
                    failures = 0;
                    if !waiting_logged {
                        tracing::info!(relay = %self.name, "another relay is publishing; waiting to take over");
                        waiting_logged = true;
                    }
                    shutdown.sleep(lease::POLL).await;
                }
                Err(e) => {
                    failures += 1;
                    let pause = backoff(failures);
                    tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "could not ask for the relay lease");
                    shutdown.sleep(pause).await;
                }
            }
            if shutdown.fired() {
                return None;
            }
        }
    }

    /// Publishes from the stored checkpoint on, with up to [`IN_FLIGHT_BATCHES`] batches handed
    /// to the producer at once: the next batch is read, built and enqueued while the broker
    /// acknowledges the previous one, so neither the event store nor the broker waits for the
    /// other. Checkpoints are still stored in order, each only once its whole batch is
    /// acknowledged; an error drops what is in flight, and the caller starts again from the
    /// stored checkpoint (at-least-once; the projectors' guards ignore the repeats).
    ///
    /// Returns `Ok` once `shutdown` fired and the batches already enqueued were acknowledged,
    /// or [`DRAIN_GRACE`] passed (what was not acknowledged is published again on the next start).
    async fn pipeline<F: std::future::Future<Output = ()>>(
        &self,
        shutdown: &mut Shutdown<'_, F>,
        failures: &mut u32,
    ) -> Result<(), RelayError> {
        let mut cursor = Checkpoint::load(self.reader.pool(), &self.name).await?;
        let mut in_flight: VecDeque<(Batch, Deliveries)> = VecDeque::new();
        let mut ahead: Option<ReadAhead> = None;
        loop {
            if !shutdown.fired() && in_flight.len() < IN_FLIGHT_BATCHES {
                if let Some(read) = shutdown
                    .unless_fired(self.read_ahead(cursor, &mut ahead))
                    .await
                {
                    if let Some(batch) = read? {
                        let deliveries = self.publisher.enqueue(&batch.records).await?;
                        cursor = batch.to;
                        in_flight.push_back((batch, deliveries));
                        continue;
                    }
                }
            }
            match in_flight.pop_front() {
                Some((batch, deliveries)) => {
                    let Some(acknowledged) = shutdown.drained(deliveries.acknowledged()).await
                    else {
                        return Ok(());
                    };
                    acknowledged?;
                    self.acknowledge(&batch).await?;
                    *failures = 0;
                }
                None if shutdown.fired() => return Ok(()),
                None => shutdown.sleep(self.idle_poll).await,
            }
        }
    }
}

/// A read of the event store started ahead, on its own task. Dropped (the relay stopped, or
/// failed and starts again from its stored checkpoint), it is aborted.
struct ReadAhead {
    from: Checkpoint,
    task: tokio::task::JoinHandle<Result<ReadBatch, sqlx::Error>>,
}

impl ReadAhead {
    fn start(reader: &EventStoreReader, from: Checkpoint, limit: u32) -> Self {
        let reader = reader.clone();
        Self {
            from,
            task: tokio::spawn(async move { reader.next_batch(from, limit).await }),
        }
    }

    async fn read(mut self) -> Result<ReadBatch, RelayError> {
        Ok((&mut self.task).await??)
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How many batches the relay hands to the producer before waiting for the first one's
/// acknowledgement. Two keep the broker busy while the next batch is read; more only queue up
/// in the producer.
const IN_FLIGHT_BATCHES: usize = 2;

/// How long a stopping relay waits for the acknowledgements of what it already enqueued.
const DRAIN_GRACE: Duration = Duration::from_secs(3);

/// A batch read from the event store, its records built.
struct Batch {
    /// The checkpoint once the batch is acknowledged.
    to: Checkpoint,
    oldest: chrono::DateTime<chrono::Utc>,
    events: usize,
    records: Vec<member_projections::MemberRecord>,
    read_at: Instant,
}

/// The shutdown future, polled until it fires and never after, and the drain deadline it set.
struct Shutdown<'a, F> {
    signal: std::pin::Pin<&'a mut F>,
    drain_until: Option<tokio::time::Instant>,
}

impl<F: std::future::Future<Output = ()>> Shutdown<'_, F> {
    fn fired(&self) -> bool {
        self.drain_until.is_some()
    }

    /// Polls the signal alongside other work; once it fires, the drain deadline is set.
    async fn fire(signal: std::pin::Pin<&mut F>, drain_until: &mut Option<tokio::time::Instant>) {
        signal.await;
        *drain_until = Some(tokio::time::Instant::now() + DRAIN_GRACE);
    }

    /// `work`'s output, or `None` when the shutdown fires first (the work is dropped).
    async fn unless_fired<T>(&mut self, work: impl std::future::Future<Output = T>) -> Option<T> {
        if self.fired() {
            return None;
        }
        tokio::select! {
            out = work => Some(out),
            _ = Self::fire(self.signal.as_mut(), &mut self.drain_until) => None,
        }
    }

    /// `work`'s output; after the shutdown fired (before or during the work), only if it ends
    /// within the drain grace.
    async fn drained<T>(&mut self, work: impl std::future::Future<Output = T>) -> Option<T> {
        let mut work = std::pin::pin!(work);
        if !self.fired() {
            tokio::select! {
                out = work.as_mut() => return Some(out),
                _ = Self::fire(self.signal.as_mut(), &mut self.drain_until) => {}
            }
        }
        let deadline = self.drain_until?;
        tokio::time::timeout_at(deadline, work).await.ok()
    }

    /// Sleeps for `pause`, or less when the shutdown fires meanwhile.
    async fn sleep(&mut self, pause: Duration) {
        self.unless_fired(tokio::time::sleep(pause)).await;
    }
}
