//! The projector loop: read a batch from the source, apply it to the sink, make it durable, and
//! only then commit the source's offsets.
//!
//! A sink that is down is retried with backoff, holding the same batch: nothing is skipped and,
//! since offsets are committed only after a successful apply, a crash at any point re-delivers the
//! uncommitted records (at-least-once; sinks are idempotent and version-guarded).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rand::Rng;

use crate::sink::{Sink, SinkError};
use crate::MemberRecord;

/// A batch read from a source, with what must be committed once it is applied.
#[derive(Debug, Default, Clone)]
pub struct SourceBatch {
    pub records: Vec<MemberRecord>,
    /// Per partition, the next offset to read once this batch is applied.
    pub commit: BTreeMap<i32, i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The broker is unreachable; retried with backoff.
    #[error("source unavailable: {0}")]
    Unavailable(String),
    /// A record that cannot be read (unknown schema version, malformed). The projector does not
    /// skip it: it stops advancing and alarms until an operator deploys a projector that reads
    /// it, because skipping would silently lose an update.
    #[error("unreadable record at partition {partition} offset {offset}: {reason}")]
    Poison {
        partition: i32,
        offset: i64,
        reason: String,
    },
}

/// Where records come from (Kafka in production, memory in tests).
#[async_trait]
pub trait RecordSource: Send {
    /// Waits up to `max_wait` for the first record, then returns up to `max` records.
    async fn next_batch(
        &mut self,
        max: usize,
        max_wait: Duration,
    ) -> Result<SourceBatch, SourceError>;

    /// Records that everything in `batch` is durably applied.
    async fn commit(&mut self, batch: &SourceBatch) -> Result<(), SourceError>;

    /// Records behind the head of the source, when known (refreshed by the source itself).
    fn lag(&self) -> Option<u64> {
        None
    }
}

#[derive(Debug, Clone)]
pub struct ProjectorSettings {
    pub batch_size: usize,
    pub max_wait: Duration,
}

impl Default for ProjectorSettings {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            max_wait: Duration::from_millis(100),
        }
    }
}

pub struct Projector<S: RecordSource> {
    source: S,
    sink: Arc<dyn Sink>,
    settings: ProjectorSettings,
}

impl<S: RecordSource> Projector<S> {
    pub fn new(source: S, sink: Arc<dyn Sink>, settings: ProjectorSettings) -> Self {
        Self {
            source,
            sink,
            settings,
        }
    }

    /// Runs until `shutdown` resolves. A batch being applied when shutdown comes is finished and
    /// committed first; a batch waiting for a sink that is down is left uncommitted (it will be
    /// re-delivered).
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let target = self.sink.target().to_owned();
        let mut source_failures = 0u32;
        loop {
            let batch = tokio::select! {
                _ = &mut shutdown => break,
                batch = self.source.next_batch(self.settings.batch_size, self.settings.max_wait) => batch,
            };
            let batch = match batch {
                Ok(batch) => {
                    source_failures = 0;
                    batch
                }
                Err(e) => {
                    source_failures += 1;
                    let pause = backoff(source_failures);
                    match &e {
                        SourceError::Poison { .. } => {
                            tracing::error!(target = %target, error = %e, "projection halted on an unreadable record")
                        }
                        SourceError::Unavailable(_) => {
                            tracing::warn!(target = %target, error = %e, "source unavailable")
                        }
                    }
                    metrics::counter!("member_projector_source_failures_total", "target" => target.clone()).increment(1);
                    tokio::select! { _ = &mut shutdown => break, _ = tokio::time::sleep(pause) => continue }
                }
            };
            self.report_lag(&target, &batch);
            if batch.records.is_empty() {
                continue;
            }
            if !self.apply_until_done(&target, &batch, &mut shutdown).await {
                break;
            }
            if let Err(e) = self.source.commit(&batch).await {
                // Harmless: the batch will be delivered and applied again.
                tracing::warn!(target = %target, error = %e, "offset commit failed");
            }
        }
        // Release the store now rather than whenever the last handle to it is dropped: a
        // tool started right after this projector stopped must find it free.
        if let Err(e) = self.sink.close().await {
            tracing::warn!(target = %target, error = %e, "closing the sink failed");
        }
        tracing::info!(target = %target, "projector stopped");
    }

    /// Applies the batch, retrying while the sink is down. Returns false if shutdown came first.
    async fn apply_until_done(
        &self,
        target: &str,
        batch: &SourceBatch,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> bool {
        let mut failures = 0u32;
        loop {
            let started = Instant::now();
            match self.sink.apply(&batch.records).await {
                Ok(()) => {
                    metrics::counter!("member_projector_records_total", "target" => target.to_owned())
                        .increment(batch.records.len() as u64);
                    metrics::histogram!("member_projector_batch_seconds", "target" => target.to_owned())
                        .record(started.elapsed().as_secs_f64());
                    metrics::gauge!("member_projector_up", "target" => target.to_owned()).set(1.0);
                    return true;
                }
                Err(e) => {
                    failures += 1;
                    let pause = match e {
                        SinkError::Unavailable { .. } => backoff(failures),
                        SinkError::Corrupt { .. } => Duration::from_secs(5),
                    };
                    tracing::warn!(target = %target, error = %e, failures, retry_in_ms = pause.as_millis() as u64, "sink apply failed, retrying the same batch");
                    metrics::gauge!("member_projector_up", "target" => target.to_owned()).set(0.0);
                    metrics::counter!("member_projector_apply_failures_total", "target" => target.to_owned()).increment(1);
                    tokio::select! {
                        _ = shutdown.as_mut() => return false,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }

    fn report_lag(&self, target: &str, batch: &SourceBatch) {
        if let Some(lag) = self.source.lag() {
            metrics::gauge!("member_projector_lag_records", "target" => target.to_owned())
                .set(lag as f64);
        }
        let seconds = batch
            .records
            .last()
            .map(|r| {
                (chrono::Utc::now() - r.event.recorded_at)
                    .num_milliseconds()
                    .max(0) as f64
                    / 1000.0
            })
            .unwrap_or(0.0);
        metrics::gauge!("member_projector_lag_seconds", "target" => target.to_owned()).set(seconds);
    }
}

/// Exponential backoff from 100 ms to 5 s with full jitter.
pub fn backoff(failures: u32) -> Duration {
    let cap = 100u64.saturating_mul(1 << failures.min(6)).min(5_000);
    Duration::from_millis(rand::rng().random_range(cap / 2..=cap))
}
