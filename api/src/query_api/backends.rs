//! The backends the query API reads from, as ports only (`MemberReader`, and `CacheFill` for the
//! two Redis centers), each behind its own circuit breaker, timeout and admin fault switch; and
//! the routing pins. The owner wires the real adapters; tests wire in-memory stores.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use member_infra::config::QueryApiSettings;
use member_projections::status::StatusProvider;
use member_projections::{CacheFill, MemberReader, Target};
use member_read_policy::breaker::{Breaker, BreakerState};
use member_read_policy::routing::{self, Center, PinRefused, ReadClass};

use super::metrics;

/// Everything the query API reads from.
#[derive(Clone)]
pub struct QueryBackends {
    pub redis_a: Arc<dyn MemberReader>,
    pub redis_a_fill: Arc<dyn CacheFill>,
    pub redis_b: Arc<dyn MemberReader>,
    pub redis_b_fill: Arc<dyn CacheFill>,
    pub search_primary: Arc<dyn MemberReader>,
    pub search_backup: Arc<dyn MemberReader>,
    pub search_marketing: Arc<dyn MemberReader>,
    pub mysql: Arc<dyn MemberReader>,
    /// Projection lag for `/admin/status`, when the process can tell.
    pub status: Option<Arc<dyn StatusProvider>>,
}

/// One backend: its reader, timeout, breaker and fault switch.
pub struct Backend {
    pub target: Target,
    pub reader: Arc<dyn MemberReader>,
    pub timeout: Duration,
    breaker: Mutex<Breaker>,
    faulted: AtomicBool,
    /// Its breaker opened and its projection has not caught up since: no reads, not even probes.
    recovering: AtomicBool,
    /// Whether an opened breaker makes the backend wait for its projection (the lag is known).
    gate_on_lag: bool,
}

impl Backend {
    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        // A panic while holding this lock cannot leave the breaker inconsistent (every method
        // is a few assignments), so a poisoned lock is still usable.
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a call may go out now (counts a half-open probe).
    pub fn try_acquire(&self) -> bool {
        if self.recovering() {
            return false;
        }
        let mut breaker = self.breaker();
        let permitted = breaker.try_acquire(Instant::now());
        metrics::breaker_state(self.target, breaker.state(Instant::now()));
        permitted
    }

    pub fn record(&self, success: bool, latency: Duration) {
        let mut breaker = self.breaker();
        let before = breaker.state(Instant::now());
        breaker.record(Instant::now(), success, latency);
        let after = breaker.state(Instant::now());
        metrics::breaker_state(self.target, after);
        if after == BreakerState::Open && before != BreakerState::Open && self.gate_on_lag {
            self.recovering.store(true, Ordering::SeqCst);
        }
        if before != after {
            tracing::warn!(
                backend = self.target.as_str(),
                from = before.as_str(),
                to = after.as_str(),
                "circuit breaker changed state"
            );
        }
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.breaker().state(Instant::now())
    }

    pub fn faulted(&self) -> bool {
        self.faulted.load(Ordering::SeqCst)
    }

    pub fn set_faulted(&self, down: bool) {
        self.faulted.store(down, Ordering::SeqCst);
    }

    /// Waiting for its projection to catch up after its breaker opened.
    pub fn recovering(&self) -> bool {
        self.recovering.load(Ordering::SeqCst)
    }

    /// Neither faulted, nor open, nor waiting for its projection.
    pub fn available(&self) -> bool {
        !self.faulted() && !self.recovering() && self.breaker_state() != BreakerState::Open
    }
}

/// The backends, the local center's cache fill and the routing pins.
pub struct Registry {
    backends: HashMap<Target, Backend>,
    fills: HashMap<Target, Arc<dyn CacheFill>>,
    pins: Mutex<HashMap<ReadClass, Target>>,
    pub local: Center,
    /// The backends this center reads (`center.reads`); the others are left out of every chain.
    readable: Vec<Target>,
    /// `query_api.backends.return_max_lag_records`.
    return_max_lag: u64,
    pub status: Option<Arc<dyn StatusProvider>>,
}

impl Registry {
    pub fn new(backends: QueryBackends, settings: &QueryApiSettings, local: Center) -> Self {
        Self::for_center(backends, settings, local, Target::ALL.to_vec())
    }

    /// A registry of a center that reads only `readable` (`center.reads`).
    pub fn for_center(
        backends: QueryBackends,
        settings: &QueryApiSettings,
        local: Center,
        readable: Vec<Target>,
    ) -> Self {
        let b = &settings.backends;
        let now = Instant::now();
        let backend = |target: Target, reader: Arc<dyn MemberReader>| {
            let (timeout_ms, slow_ms) = match target {
                Target::RedisA | Target::RedisB => (b.redis_timeout_ms, b.redis_slow_ms),
                Target::Mysql => (b.mysql_timeout_ms, b.mysql_slow_ms),
                _ => (b.search_timeout_ms, b.search_slow_ms),
            };
            metrics::breaker_state(target, BreakerState::Closed);
            (
                target,
                Backend {
                    target,
                    reader,
                    timeout: Duration::from_millis(timeout_ms.get()),
                    breaker: Mutex::new(Breaker::new(settings.breaker.policy(slow_ms), now)),
                    faulted: AtomicBool::new(false),
                    recovering: AtomicBool::new(false),
                    gate_on_lag: backends.status.is_some(),
                },
            )
        };
        Self {
            backends: HashMap::from([
                backend(Target::RedisA, backends.redis_a),
                backend(Target::RedisB, backends.redis_b),
                backend(Target::SearchPrimary, backends.search_primary),
                backend(Target::SearchBackup, backends.search_backup),
                backend(Target::SearchMarketing, backends.search_marketing),
                backend(Target::Mysql, backends.mysql),
            ]),
            fills: HashMap::from([
                (Target::RedisA, backends.redis_a_fill),
                (Target::RedisB, backends.redis_b_fill),
            ]),
            pins: Mutex::new(HashMap::new()),
            local,
            readable,
            return_max_lag: b.return_max_lag_records,
            status: backends.status,
        }
    }

    /// Lets recovering backends back in once their projection is at most
    /// `query_api.backends.return_max_lag_records` behind. A projection whose lag is unknown is
    /// let back in too (the breaker's probe decides, as without a lag source).
    pub async fn release_caught_up(&self) {
        let recovering: Vec<&Backend> = self.backends.values().filter(|b| b.recovering()).collect();
        if recovering.is_empty() {
            return;
        }
        let Some(status) = &self.status else {
            return;
        };
        let lags = match status.projection_lag().await {
            Ok(lags) => lags,
            Err(error) => {
                tracing::warn!(%error, "projection lag unavailable; recovering backends wait");
                return;
            }
        };
        for backend in recovering {
            let behind = lags
                .iter()
                .find(|l| l.target == backend.target.as_str())
                .and_then(|l| l.records_behind);
            if behind.is_none_or(|n| n <= self.return_max_lag) {
                backend.recovering.store(false, Ordering::SeqCst);
                tracing::info!(
                    backend = backend.target.as_str(),
                    records_behind = behind,
                    "projection caught up; the backend gets reads again"
                );
            }
        }
    }

    pub fn backend(&self, target: Target) -> &Backend {
        self.backends
            .get(&target)
            .expect("every target has a backend")
    }

    /// The cache fill of the local Redis center.
    pub fn local_fill(&self) -> Arc<dyn CacheFill> {
        self.fills
            .get(&self.local.target())
            .expect("both centers have a fill")
            .clone()
    }

    fn pins(&self) -> std::sync::MutexGuard<'_, HashMap<ReadClass, Target>> {
        self.pins.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn pin(&self, class: ReadClass) -> Option<Target> {
        self.pins().get(&class).copied()
    }

    pub fn set_pin(&self, class: ReadClass, pin: Option<Target>) -> Result<(), PinRefused> {
        match pin {
            Some(target) => {
                routing::validate_pin(class, target)?;
                self.pins().insert(class, target);
            }
            None => {
                self.pins().remove(&class);
            }
        }
        Ok(())
    }

    pub fn chain(&self, class: ReadClass) -> Vec<Target> {
        let mut chain = routing::chain(class, self.local, self.pin(class));
        chain.retain(|t| self.readable.contains(t));
        chain
    }

    /// Ready while at least one backend of the order chain is neither open nor faulted.
    pub fn order_path_available(&self) -> bool {
        self.chain(ReadClass::Order)
            .into_iter()
            .any(|t| self.backend(t).available())
    }

    /// Refreshes the breaker gauges (an open breaker turns half-open with time alone).
    pub fn publish_gauges(&self) {
        for backend in self.backends.values() {
            metrics::breaker_state(backend.target, backend.breaker_state());
        }
    }
}
