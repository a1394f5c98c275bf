//! Flow control, all with governor (GCRA, lock-free):
//! - **per-caller quota**: each caller's own limiter (checked first, so one noisy caller is
//!   stopped before it spends the shared budget);
//! - **global budget** with a reserve for order traffic: every request takes from the global
//!   limiter, and marketing requests must first pass a second limiter sized at
//!   `marketing_share` of the global rate and burst. Marketing can therefore never take more
//!   than its share, the rest is kept for order traffic, and under load marketing is refused
//!   (`marketing_shed`) while order requests still pass;
//! - **per-identity hotspot limit**: a keyed limiter on the looked-up key (member id or
//!   identity), so one hot identity cannot flood the backends;
//! - **hot-key detection**: a second keyed limiter at `hot_key_rate_per_second`; a key over it is
//!   hot, and its documents go to the near cache (see `read_path`);
//! - **in-flight bound** (tokio semaphores, never waited on): at most `max_in_flight` requests
//!   are served at once, marketing within `marketing_share` of them. Rates bound the arrivals,
//!   this bounds the work in progress: when the process or a backend slows down, arrivals within
//!   the rate would otherwise pile up (memory grows, every queued request waits past its
//!   caller's timeout and is wasted). Refusing at once keeps latency for the requests that are
//!   served, and sheds marketing first.
//!
//! A rate refusal carries governor's wait time, which becomes `Retry-After`.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, NotUntil, RateLimiter};
use member_infra::config::FlowSettings;
use member_read_policy::routing::ReadClass;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::errors::{LimitReason, QueryError};

pub use crate::access::callers::quota;

pub struct FlowControl {
    clock: DefaultClock,
    global: DefaultDirectRateLimiter,
    marketing: DefaultDirectRateLimiter,
    /// Keyed by a keyed hash of the lookup key (`key_hash`): no allocation per request, and a
    /// caller cannot pick keys that collide without knowing the process's random hash keys.
    hotspot: DefaultKeyedRateLimiter<u64>,
    hot_keys: Option<DefaultKeyedRateLimiter<u64>>,
    hasher: RandomState,
    in_flight: Semaphore,
    marketing_in_flight: Semaphore,
}

/// A request being served: holds its in-flight slots until dropped.
#[must_use = "the slot is given back when this is dropped"]
pub struct InFlight<'a> {
    _slot: SemaphorePermit<'a>,
    _marketing: Option<SemaphorePermit<'a>>,
}

/// How long an overloaded caller is asked to wait: the queue drains in milliseconds, but a
/// shorter `Retry-After` cannot be said in whole seconds.
const OVERLOADED_RETRY_AFTER: Duration = Duration::from_secs(1);

impl FlowControl {
    pub fn new(settings: &FlowSettings) -> Self {
        let global_rate = f64::from(settings.global_rate_per_second.get());
        let share = settings.marketing_share;
        let marketing_burst = (f64::from(settings.global_burst.get()) * share).floor() as u32;
        let max_in_flight = settings.max_in_flight.get() as usize;
        let marketing_in_flight = (max_in_flight as f64 * share).floor() as usize;
        Self {
            clock: DefaultClock::default(),
            global: RateLimiter::direct(quota(global_rate, settings.global_burst.get())),
            marketing: RateLimiter::direct(quota(global_rate * share, marketing_burst)),
            hotspot: RateLimiter::keyed(quota(
                settings.hotspot_rate_per_second.get().into(),
                settings.hotspot_burst.get(),
            )),
            hot_keys: (settings.hot_key_rate_per_second > 0).then(|| {
                RateLimiter::keyed(quota(
                    settings.hot_key_rate_per_second.into(),
                    settings.hot_key_rate_per_second,
                ))
            }),
            in_flight: Semaphore::new(max_in_flight),
            marketing_in_flight: Semaphore::new(marketing_in_flight),
            hasher: RandomState::new(),
        }
    }

    /// The limiters' key for a lookup key, computed once per request.
    pub fn key_hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Takes an in-flight slot for a request of `class`, or refuses it at once (429 reason
    /// `overloaded`): marketing first takes one of its share, then one of all.
    pub fn enter(&self, class: ReadClass) -> Result<InFlight<'_>, QueryError> {
        let overloaded = || QueryError::Limited {
            reason: LimitReason::Overloaded,
            retry_after: OVERLOADED_RETRY_AFTER,
        };
        let marketing = match class {
            ReadClass::Marketing => Some(
                self.marketing_in_flight
                    .try_acquire()
                    .map_err(|_| overloaded())?,
            ),
            ReadClass::Order => None,
        };
        let slot = self.in_flight.try_acquire().map_err(|_| overloaded())?;
        Ok(InFlight {
            _slot: slot,
            _marketing: marketing,
        })
    }

    fn limited(
        &self,
        reason: LimitReason,
        not_until: NotUntil<<DefaultClock as Clock>::Instant>,
    ) -> QueryError {
        QueryError::Limited {
            reason,
            retry_after: not_until.wait_time_from(self.clock.now()),
        }
    }

    /// The caller's own quota, then the global budget (marketing within its share).
    pub fn admit(
        &self,
        quota: &DefaultDirectRateLimiter,
        class: ReadClass,
    ) -> Result<(), QueryError> {
        quota
            .check()
            .map_err(|n| self.limited(LimitReason::Quota, n))?;
        if class == ReadClass::Marketing {
            self.marketing
                .check()
                .map_err(|n| self.limited(LimitReason::MarketingShed, n))?;
            return self
                .global
                .check()
                .map_err(|n| self.limited(LimitReason::MarketingShed, n));
        }
        self.global
            .check()
            .map_err(|n| self.limited(LimitReason::Global, n))
    }

    /// The per-identity hotspot limit.
    pub fn admit_key(&self, key: u64) -> Result<(), QueryError> {
        self.hotspot
            .check_key(&key)
            .map_err(|n| self.limited(LimitReason::Hotspot, n))
    }

    /// Counts a read of `key` and tells whether the key is hot (read faster than the threshold).
    pub fn is_hot(&self, key: u64) -> bool {
        self.hot_keys
            .as_ref()
            .is_some_and(|l| l.check_key(&key).is_err())
    }

    /// Forgets keys whose limiters are back to full (keeps the keyed maps small).
    pub fn housekeeping(&self) {
        self.hotspot.retain_recent();
        self.hotspot.shrink_to_fit();
        if let Some(hot) = &self.hot_keys {
            hot.retain_recent();
            hot.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    fn settings() -> FlowSettings {
        let n = |v| NonZeroU32::new(v).unwrap();
        FlowSettings {
            global_rate_per_second: n(1),
            global_burst: n(10),
            marketing_share: 0.4,
            hotspot_rate_per_second: n(1),
            hotspot_burst: n(3),
            hot_key_rate_per_second: 2,
            max_in_flight: n(4),
        }
    }

    /// A caller of `class` with a quota that never limits.
    fn caller(class: ReadClass) -> (DefaultDirectRateLimiter, ReadClass) {
        (RateLimiter::direct(quota(1000.0, 1000)), class)
    }

    #[test]
    fn marketing_is_held_to_its_share_and_order_gets_the_rest() {
        let flow = FlowControl::new(&settings());
        let (order, marketing) = (caller(ReadClass::Order), caller(ReadClass::Marketing));
        let passed = (0..10)
            .filter(|_| flow.admit(&marketing.0, marketing.1).is_ok())
            .count();
        assert_eq!(passed, 4, "marketing gets 40% of the burst of 10");
        let passed = (0..10)
            .filter(|_| flow.admit(&order.0, order.1).is_ok())
            .count();
        assert_eq!(passed, 6, "order gets what is left");
        match flow.admit(&marketing.0, marketing.1) {
            Err(QueryError::Limited {
                reason,
                retry_after,
            }) => {
                assert_eq!(reason, LimitReason::MarketingShed);
                assert!(retry_after > Duration::ZERO);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_caller_over_its_quota_is_refused_before_the_global_budget() {
        let flow = FlowControl::new(&FlowSettings {
            global_burst: NonZeroU32::new(100).unwrap(),
            ..settings()
        });
        let c = (RateLimiter::direct(quota(1.0, 2)), ReadClass::Order);
        assert!(flow.admit(&c.0, c.1).is_ok());
        assert!(flow.admit(&c.0, c.1).is_ok());
        assert!(matches!(
            flow.admit(&c.0, c.1),
            Err(QueryError::Limited {
                reason: LimitReason::Quota,
                ..
            })
        ));
    }

    fn overloaded<T>(r: Result<T, QueryError>) -> bool {
        matches!(
            r,
            Err(QueryError::Limited {
                reason: LimitReason::Overloaded,
                ..
            })
        )
    }

    #[test]
    fn in_flight_slots_are_bounded_marketing_within_its_share() {
        let flow = FlowControl::new(&FlowSettings {
            marketing_share: 0.5,
            ..settings()
        });
        let m1 = flow.enter(ReadClass::Marketing).unwrap();
        let _m2 = flow.enter(ReadClass::Marketing).unwrap();
        assert!(
            overloaded(flow.enter(ReadClass::Marketing)),
            "marketing holds half of the 4 slots"
        );
        let _o1 = flow.enter(ReadClass::Order).unwrap();
        let o2 = flow.enter(ReadClass::Order).unwrap();
        assert!(overloaded(flow.enter(ReadClass::Order)), "all 4 are taken");
        drop(o2);
        assert!(
            overloaded(flow.enter(ReadClass::Marketing)),
            "a freed slot does not raise marketing's share"
        );
        let _o2 = flow.enter(ReadClass::Order).unwrap();
        drop(m1);
        // One of all and one of marketing's share are free again.
        let _m1 = flow.enter(ReadClass::Marketing).unwrap();
    }

    #[test]
    fn a_refused_marketing_request_gives_back_its_share() {
        let flow = FlowControl::new(&FlowSettings {
            marketing_share: 0.5,
            ..settings()
        });
        let orders: Vec<_> = (0..4)
            .map(|_| flow.enter(ReadClass::Order).unwrap())
            .collect();
        assert!(overloaded(flow.enter(ReadClass::Marketing)));
        assert!(overloaded(flow.enter(ReadClass::Marketing)));
        assert!(overloaded(flow.enter(ReadClass::Marketing)));
        drop(orders);
        // Had the refusals kept their marketing permits, none would be left.
        let _a = flow.enter(ReadClass::Marketing).unwrap();
        let _b = flow.enter(ReadClass::Marketing).unwrap();
    }

    #[test]
    fn hot_keys_and_hotspots_are_per_key() {
        let flow = FlowControl::new(&settings());
        assert!(!flow.is_hot(flow.key_hash("a")));
        assert!(!flow.is_hot(flow.key_hash("a")));
        assert!(
            flow.is_hot(flow.key_hash("a")),
            "third read within a second is over 2/s"
        );
        assert!(!flow.is_hot(flow.key_hash("b")));
        for _ in 0..3 {
            flow.admit_key(flow.key_hash("a")).unwrap();
        }
        assert!(flow.admit_key(flow.key_hash("a")).is_err());
        assert!(flow.admit_key(flow.key_hash("b")).is_ok());
    }
}
