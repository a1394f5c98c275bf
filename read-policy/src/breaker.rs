//! A circuit breaker as a pure state machine: no clock of its own, no I/O. The caller passes the
//! current instant to every call, so tests drive time by hand.
//!
//! - **Closed**: calls pass. Outcomes are counted in a rolling window (`window`, kept as ten
//!   buckets so memory stays constant at any request rate). Once the window holds at least
//!   `min_calls` outcomes and either the share of failures reaches `failure_rate` or the share of
//!   slow calls (latency at or above `slow_call`) reaches `slow_call_rate`, the breaker opens.
//!   It also opens after `consecutive_failures` failures in a row, whatever the window holds: a
//!   backend that dies after a busy healthy period would otherwise keep costing every request its
//!   timeout until the old successes leave the window.
//! - **Open**: calls are refused (the read path moves on to the next backend at no cost) until
//!   `open_for` has passed.
//! - **Half-open**: up to `half_open_probes` calls are let through as probes. A failed or slow
//!   probe opens the breaker again for another `open_for`; `half_open_probes` good probes close
//!   it with an empty window. A probe whose outcome never comes back (its request was cancelled)
//!   is given up after `open_for`, so a lost probe cannot wedge the breaker half-open.

use std::num::{NonZeroU32, NonZeroU64};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Thresholds of a breaker (from `[query_api.breaker]` and the per-backend slow-call latency).
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerPolicy {
    pub window: Duration,
    pub min_calls: u32,
    /// Share of failed calls in the window (0 < r <= 1) that opens the breaker.
    pub failure_rate: f64,
    /// A call at least this slow counts as slow (whether it succeeded or not).
    pub slow_call: Duration,
    /// Share of slow calls in the window (0 < r <= 1) that opens the breaker.
    pub slow_call_rate: f64,
    pub open_for: Duration,
    pub half_open_probes: u32,
    /// Failures in a row that open the breaker (0: only the rates decide).
    pub consecutive_failures: u32,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            min_calls: 10,
            failure_rate: 0.5,
            slow_call: Duration::from_millis(100),
            slow_call_rate: 0.8,
            open_for: Duration::from_secs(2),
            half_open_probes: 1,
            consecutive_failures: 5,
        }
    }
}

/// `[query_api.breaker]`: the thresholds shared by every backend (the slow-call latency is per
/// backend, from `[query_api.backends]`). Loaded by the process's settings; kept here, next to the
/// policy it builds, so the settings and the state machine change together.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSettings {
    // Counts and times that must be positive are `NonZero*`: serde refuses 0 and the settings
    // loader names the key, so no range check is written for them.
    pub window_ms: NonZeroU64,
    pub min_calls: NonZeroU32,
    /// Checked by the settings loader: above 0 and at most 1.
    pub failure_rate: f64,
    /// As `failure_rate`.
    pub slow_call_rate: f64,
    pub open_ms: NonZeroU64,
    pub half_open_probes: NonZeroU32,
    /// 0: only the rates decide.
    pub consecutive_failures: u32,
}

impl BreakerSettings {
    /// The breaker policy for a backend whose calls are slow at `slow_ms`.
    pub fn policy(&self, slow_ms: NonZeroU64) -> BreakerPolicy {
        BreakerPolicy {
            window: Duration::from_millis(self.window_ms.get()),
            min_calls: self.min_calls.get(),
            failure_rate: self.failure_rate,
            slow_call: Duration::from_millis(slow_ms.get()),
            slow_call_rate: self.slow_call_rate,
            open_for: Duration::from_millis(self.open_ms.get()),
            half_open_probes: self.half_open_probes.get(),
            consecutive_failures: self.consecutive_failures,
        }
    }
}

/// What an operator sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }

    /// The value of the breaker-state gauge: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    index: u64,
    calls: u32,
    failures: u32,
    slow: u32,
}

/// Counts over the rolling window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowStats {
    pub calls: u32,
    pub failures: u32,
    pub slow: u32,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed,
    Open {
        until: Instant,
    },
    HalfOpen {
        in_flight: u32,
        successes: u32,
        last_probe: Instant,
    },
}

#[derive(Debug, Clone)]
pub struct Breaker {
    policy: BreakerPolicy,
    epoch: Instant,
    bucket_len: Duration,
    buckets: [Bucket; BUCKETS],
    phase: Phase,
    failures_in_a_row: u32,
}

impl Breaker {
    pub fn new(policy: BreakerPolicy, now: Instant) -> Self {
        let bucket_len = (policy.window / BUCKETS as u32).max(Duration::from_millis(1));
        Self {
            policy,
            epoch: now,
            bucket_len,
            buckets: [Bucket::default(); BUCKETS],
            phase: Phase::Closed,
            failures_in_a_row: 0,
        }
    }

    pub fn policy(&self) -> &BreakerPolicy {
        &self.policy
    }

    /// The state as an operator should see it: an open breaker whose wait is over shows as
    /// half-open (the next call is a probe).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { until } if now >= until => BreakerState::HalfOpen,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether a call may go to the backend now. Every permitted call must be followed by
    /// [`Breaker::record`] (a lost half-open probe is given up after `open_for`).
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        match &mut self.phase {
            Phase::Closed => true,
            Phase::Open { until } => {
                if now >= *until {
                    self.phase = Phase::HalfOpen {
                        in_flight: 1,
                        successes: 0,
                        last_probe: now,
                    };
                    true
                } else {
                    false
                }
            }
            Phase::HalfOpen {
                in_flight,
                last_probe,
                ..
            } => {
                if *in_flight < self.policy.half_open_probes {
                    *in_flight += 1;
                    *last_probe = now;
                    true
                } else if now.saturating_duration_since(*last_probe) >= self.policy.open_for {
                    // A probe never reported back; let another one through.
                    *last_probe = now;
                    true
                } else {
                    false
                }
            }
        }
    }

    /// Records the outcome of a permitted call that started earlier and took `latency`.
    pub fn record(&mut self, now: Instant, success: bool, latency: Duration) {
        let slow = latency >= self.policy.slow_call;
        match &mut self.phase {
            Phase::Closed => {
                self.count(now, success, slow);
                self.failures_in_a_row = if success {
                    0
                } else {
                    self.failures_in_a_row + 1
                };
                let stats = self.stats(now);
                let in_a_row = self.policy.consecutive_failures > 0
                    && self.failures_in_a_row >= self.policy.consecutive_failures;
                if in_a_row || self.should_open(stats) {
                    self.open(now);
                }
            }
            // A call let through before the breaker opened, finishing late: the breaker has
            // already decided.
            Phase::Open { .. } => {}
            Phase::HalfOpen {
                in_flight,
                successes,
                ..
            } => {
                if !success || slow {
                    self.open(now);
                } else {
                    *successes += 1;
                    *in_flight = in_flight.saturating_sub(1);
                    if *successes >= self.policy.half_open_probes {
                        self.phase = Phase::Closed;
                        self.buckets = [Bucket::default(); BUCKETS];
                    }
                }
            }
        }
    }

    /// The outcomes counted in the window that ends at `now`.
    pub fn stats(&self, now: Instant) -> WindowStats {
        let current = self.bucket_index(now);
        self.buckets
            .iter()
            .filter(|b| b.index <= current && current - b.index < BUCKETS as u64)
            .fold(WindowStats::default(), |acc, b| WindowStats {
                calls: acc.calls + b.calls,
                failures: acc.failures + b.failures,
                slow: acc.slow + b.slow,
            })
    }

    fn should_open(&self, stats: WindowStats) -> bool {
        if stats.calls == 0 || stats.calls < self.policy.min_calls {
            return false;
        }
        let calls = f64::from(stats.calls);
        f64::from(stats.failures) / calls >= self.policy.failure_rate
            || f64::from(stats.slow) / calls >= self.policy.slow_call_rate
    }

    fn open(&mut self, now: Instant) {
        self.phase = Phase::Open {
            until: now + self.policy.open_for,
        };
        self.failures_in_a_row = 0;
        self.buckets = [Bucket::default(); BUCKETS];
    }

    fn bucket_index(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.epoch).as_nanos();
        (elapsed / self.bucket_len.as_nanos()) as u64
    }

    fn count(&mut self, now: Instant, success: bool, slow: bool) {
        let index = self.bucket_index(now);
        let bucket = &mut self.buckets[(index % BUCKETS as u64) as usize];
        if bucket.index != index {
            *bucket = Bucket {
                index,
                ..Bucket::default()
            };
        }
        bucket.calls += 1;
        bucket.failures += u32::from(!success);
        bucket.slow += u32::from(slow);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            window: Duration::from_secs(10),
            min_calls: 4,
            failure_rate: 0.5,
            slow_call: Duration::from_millis(100),
            slow_call_rate: 0.75,
            open_for: Duration::from_secs(2),
            half_open_probes: 2,
            // Off, so the rate tests see the rates alone; tested on its own below.
            consecutive_failures: 0,
        }
    }

    const FAST: Duration = Duration::from_millis(1);
    const SLOW: Duration = Duration::from_millis(150);

    struct Clock(Instant);
    impl Clock {
        fn at(&self, ms: u64) -> Instant {
            self.0 + Duration::from_millis(ms)
        }
    }

    fn call(b: &mut Breaker, now: Instant, ok: bool, latency: Duration) -> bool {
        if b.try_acquire(now) {
            b.record(now, ok, latency);
            true
        } else {
            false
        }
    }

    #[test]
    fn opens_on_failure_rate_only_after_min_calls() {
        let clock = Clock(Instant::now());
        let mut b = Breaker::new(policy(), clock.at(0));
        assert!(call(&mut b, clock.at(0), false, FAST));
        assert!(call(&mut b, clock.at(1), false, FAST));
        assert!(call(&mut b, clock.at(2), false, FAST));
        assert_eq!(b.state(clock.at(3)), BreakerState::Closed, "3 < min_calls");
        assert!(call(&mut b, clock.at(3), true, FAST));
        // 3 failures of 4 >= 50%.
        assert_eq!(b.state(clock.at(4)), BreakerState::Open);
        assert!(!b.try_acquire(clock.at(5)));
    }

    #[test]
    fn opens_after_failures_in_a_row_even_after_many_successes() {
        let clock = Clock(Instant::now());
        let mut b = Breaker::new(
            BreakerPolicy {
                consecutive_failures: 3,
                ..policy()
            },
            clock.at(0),
        );
        for ms in 0..100 {
            assert!(call(&mut b, clock.at(ms), true, Duration::from_millis(1)));
        }
        call(&mut b, clock.at(200), false, Duration::from_millis(1));
        call(&mut b, clock.at(201), false, Duration::from_millis(1));
        assert_eq!(
            b.state(clock.at(202)),
            BreakerState::Closed,
            "2 in a row, 2% of the window"
        );
        call(&mut b, clock.at(202), false, Duration::from_millis(1));
        assert_eq!(b.state(clock.at(203)), BreakerState::Open);
    }

    #[test]
    fn stays_closed_below_the_failure_rate() {
        let clock = Clock(Instant::now());
        let mut b = Breaker::new(policy(), clock.at(0));
        for i in 0..100 {
            // one failure in three: 33% < 50%
            assert!(call(&mut b, clock.at(i * 10), i % 3 != 2, FAST));
        }
        assert_eq!(b.state(clock.at(1000)), BreakerState::Closed);
    }

    #[test]
    fn opens_on_slow_calls_even_when_they_succeed() {
        let clock = Clock(Instant::now());
        let mut b = Breaker::new(policy(), clock.at(0));
        for i in 0..4 {
            call(&mut b, clock.at(i), true, SLOW);
        }
        assert_eq!(b.state(clock.at(5)), BreakerState::Open);
    }

    #[test]
    fn old_outcomes_leave_the_window() {
        let clock = Clock(Instant::now());
        let mut b = Breaker::new(policy(), clock.at(0));
        for i in 0..3 {
            call(&mut b, clock.at(i), false, FAST);
        }
        // 11 s later the three failures are out of the window: one more failure is 1 of 1 call,
        // below min_calls.
        call(&mut b, clock.at(11_000), false, FAST);
        assert_eq!(b.stats(clock.at(11_000)).calls, 1);
        assert_eq!(b.state(clock.at(11_000)), BreakerState::Closed);
    }

    #[test]
    fn half_open_probes_close_or_reopen() {
        let clock = Clock(Instant::now());
        let mut b = Breaker::new(policy(), clock.at(0));
        for i in 0..4 {
            call(&mut b, clock.at(i), false, FAST);
        }
        assert!(!b.try_acquire(clock.at(1999)));
        assert_eq!(b.state(clock.at(2003)), BreakerState::HalfOpen);
        // A failed probe reopens for another open_for.
        assert!(call(&mut b, clock.at(2003), false, FAST));
        assert_eq!(b.state(clock.at(2004)), BreakerState::Open);
        assert!(!b.try_acquire(clock.at(4002)));
        // Two good probes close it.
        assert!(call(&mut b, clock.at(4003), true, FAST));
        assert_eq!(b.state(clock.at(4004)), BreakerState::HalfOpen);
        assert!(call(&mut b, clock.at(4004), true, FAST));
        assert_eq!(b.state(clock.at(4005)), BreakerState::Closed);
        assert_eq!(
            b.stats(clock.at(4005)).calls,
            0,
            "closing starts a fresh window"
        );
    }

    #[test]
    fn a_slow_probe_reopens() {
        let clock = Clock(Instant::now());
        let mut b = Breaker::new(policy(), clock.at(0));
        for i in 0..4 {
            call(&mut b, clock.at(i), false, FAST);
        }
        assert!(call(&mut b, clock.at(2003), true, SLOW));
        assert_eq!(b.state(clock.at(2004)), BreakerState::Open);
    }

    #[test]
    fn a_lost_probe_is_given_up_after_open_for() {
        let clock = Clock(Instant::now());
        let mut b = Breaker::new(policy(), clock.at(0));
        for i in 0..4 {
            call(&mut b, clock.at(i), false, FAST);
        }
        assert!(b.try_acquire(clock.at(2003)));
        assert!(b.try_acquire(clock.at(2004)));
        assert!(!b.try_acquire(clock.at(2005)), "both probes in flight");
        assert!(b.try_acquire(clock.at(4004)), "probes lost: another goes");
    }

    proptest! {
        #[test]
        fn fast_successes_never_open(gaps in proptest::collection::vec(0u64..3_000, 1..200)) {
            let clock = Clock(Instant::now());
            let mut b = Breaker::new(policy(), clock.at(0));
            let mut t = 0;
            for gap in gaps {
                t += gap;
                prop_assert!(call(&mut b, clock.at(t), true, FAST));
                prop_assert_eq!(b.state(clock.at(t)), BreakerState::Closed);
            }
        }

        #[test]
        fn an_open_breaker_refuses_every_call_until_open_for_has_passed(
            calls in proptest::collection::vec((0u64..500, any::<bool>(), any::<bool>()), 1..300),
        ) {
            let clock = Clock(Instant::now());
            let mut b = Breaker::new(policy(), clock.at(0));
            let mut t = 0;
            let mut opened_at: Option<u64> = None;
            for (gap, ok, slow) in calls {
                t += gap;
                let now = clock.at(t);
                let permitted = b.try_acquire(now);
                if let Some(at) = opened_at {
                    prop_assert!(t >= at + 2_000 || !permitted, "permitted at {} though opened at {}", t, at);
                }
                if permitted {
                    b.record(now, ok, if slow { SLOW } else { FAST });
                }
                // The breaker (re)opened at this step if it is open now after a permitted call
                // (a refused call changes nothing).
                match b.state(now) {
                    BreakerState::Open if permitted => opened_at = Some(t),
                    BreakerState::Open => {}
                    _ => opened_at = None,
                }
            }
        }

        #[test]
        fn a_window_of_failures_always_opens(
            min_calls in 1u32..20,
            spacing in 0u64..900,
        ) {
            let clock = Clock(Instant::now());
            let mut b = Breaker::new(BreakerPolicy { min_calls, ..policy() }, clock.at(0));
            // min_calls failures within one window (spacing * count < 10 s is not guaranteed,
            // so only the ones still in the window count; keep them inside it).
            let spacing = spacing.min(9_000 / u64::from(min_calls));
            for i in 0..u64::from(min_calls) {
                prop_assert!(call(&mut b, clock.at(i * spacing), false, FAST));
            }
            prop_assert_eq!(b.state(clock.at(u64::from(min_calls) * spacing)), BreakerState::Open);
        }

        #[test]
        fn half_open_lets_through_at_most_the_probe_count(probes in 1u32..8, attempts in 1u32..30) {
            let clock = Clock(Instant::now());
            let mut b = Breaker::new(BreakerPolicy { half_open_probes: probes, ..policy() }, clock.at(0));
            for i in 0..4 {
                call(&mut b, clock.at(i), false, FAST);
            }
            let permitted = (0..attempts).filter(|i| b.try_acquire(clock.at(2_010 + u64::from(*i)))).count();
            prop_assert_eq!(permitted as u32, attempts.min(probes));
        }
    }
}
