//! Who may write: a key with scope `write` (history and erasure receipts: `admin`; erasure:
//! `erase`), then the write quotas — the
//! caller's own first, so one caller's burst is refused before it spends the global budget that
//! protects the event store and that the other callers need. All limiters are governor's (GCRA,
//! lock-free); a refusal carries governor's wait time as `Retry-After`.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, RateLimiter};
use member_infra::config::{CommandApiSettings, Scope};

use super::errors::ApiError;
use super::AppState;
use crate::access::callers::quota;
use crate::access::Caller;

/// The global write budget.
pub struct WriteBudget {
    clock: DefaultClock,
    global: DefaultDirectRateLimiter,
}

impl WriteBudget {
    pub fn new(settings: &CommandApiSettings) -> Self {
        Self {
            clock: DefaultClock::default(),
            global: RateLimiter::direct(quota(
                settings.write_rate_per_second.get().into(),
                settings.write_burst.get(),
            )),
        }
    }

    /// The caller's write quota, then the global budget.
    pub fn admit(&self, caller: &Caller) -> Result<(), ApiError> {
        let wait = |n: governor::NotUntil<<DefaultClock as Clock>::Instant>| {
            n.wait_time_from(self.clock.now())
        };
        caller.write_quota.check().map_err(|n| {
            metrics::counter!("member_command_limited_total", "reason" => "quota").increment(1);
            ApiError::Limited {
                retry_after: wait(n),
            }
        })?;
        self.global.check().map_err(|n| {
            metrics::counter!("member_command_limited_total", "reason" => "global").increment(1);
            ApiError::Limited {
                retry_after: wait(n),
            }
        })
    }
}

/// A caller with scope `write`, within its quota and the global budget (401, 403, 429 otherwise).
pub struct Writer(pub Arc<Caller>);

impl FromRequestParts<AppState> for Writer {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = state.callers.authorize(&parts.headers, Scope::Write)?;
        state.writes.admit(&caller)?;
        Ok(Writer(caller))
    }
}

/// A caller with scope `admin` (401, 403 otherwise).
pub struct AdminCaller(pub Arc<Caller>);

impl FromRequestParts<AppState> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(AdminCaller(
            state.callers.authorize(&parts.headers, Scope::Admin)?,
        ))
    }
}

/// A caller with scope `erase` (401, 403 otherwise). Erasures are not counted against the write
/// quotas: they are rare, and a data-protection request must not be refused for load.
pub struct Eraser(pub Arc<Caller>);

impl FromRequestParts<AppState> for Eraser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Eraser(
            state.callers.authorize(&parts.headers, Scope::Erase)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use member_infra::config::Settings;
    use std::time::Duration;

    fn caller(rate: u32, burst: u32) -> Caller {
        let mut c = Settings::load_from(None, Vec::new()).unwrap().callers[0].clone();
        c.write_rate_per_second = rate;
        c.write_burst = burst;
        Caller::from_settings(&c)
    }

    #[test]
    fn a_caller_over_its_quota_does_not_spend_the_global_budget() {
        let mut settings = Settings::load_from(None, Vec::new()).unwrap().command_api;
        settings.write_rate_per_second = std::num::NonZeroU32::MIN;
        settings.write_burst = std::num::NonZeroU32::new(10).unwrap();
        let budget = WriteBudget::new(&settings);
        let (noisy, quiet) = (caller(1, 3), caller(1, 100));
        let passed = (0..50).filter(|_| budget.admit(&noisy).is_ok()).count();
        assert_eq!(passed, 3, "the noisy caller gets its own burst only");
        let passed = (0..7).filter(|_| budget.admit(&quiet).is_ok()).count();
        assert_eq!(passed, 7, "the rest of the global budget is still there");
        match budget.admit(&quiet) {
            Err(ApiError::Limited { retry_after }) => assert!(retry_after > Duration::ZERO),
            other => panic!("the global budget is spent: {other:?}"),
        }
    }
}
