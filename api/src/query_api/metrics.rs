//! The query API's metrics (Prometheus, through the `metrics` facade), all prefixed
//! `member_query_`. With them an operator sees where reads are served from and why they moved.
//!
//! - `member_query_requests_total{class, outcome}`: ok, not_found, invalid, unauthorized,
//!   limited, unavailable;
//! - `member_query_served_total{backend, class}`: which backend answered (`near-cache` and
//!   `last-served` are the in-process caches);
//! - `member_query_fallbacks_total{backend, class, reason}`: a read moved past a backend
//!   (faulted, open, error, timeout, miss, stale, not_found);
//! - `member_query_breaker_state{backend}`: 0 closed, 1 half-open, 2 open;
//! - `member_query_backend_seconds{backend}`: latency of backend calls;
//! - `member_query_cache_total{cache, result}`: near cache and Redis hits and misses (the hit
//!   ratio is `hit / (hit + miss)`);
//! - `member_query_limited_total{class, reason}`: 429s by reason (quota, global,
//!   marketing_shed, hotspot);
//! - `member_query_cache_fills_total{backend, outcome}`: written, refused, error, dropped.

use std::time::Duration;

use member_projections::Target;
use member_read_policy::breaker::BreakerState;

pub fn request(class: &'static str, outcome: &'static str) {
    metrics::counter!("member_query_requests_total", "class" => class, "outcome" => outcome)
        .increment(1);
}

pub fn served(backend: &'static str, class: &'static str) {
    metrics::counter!("member_query_served_total", "backend" => backend, "class" => class)
        .increment(1);
}

pub fn fallback(backend: Target, class: &'static str, reason: &'static str) {
    metrics::counter!(
        "member_query_fallbacks_total",
        "backend" => backend.as_str(), "class" => class, "reason" => reason
    )
    .increment(1);
}

pub fn breaker_state(backend: Target, state: BreakerState) {
    metrics::gauge!("member_query_breaker_state", "backend" => backend.as_str()).set(state.gauge());
}

/// Every call a request makes to a backend, by caller class: shows, for example, that marketing
/// reads never reach the order path's search clusters.
pub fn backend_request(backend: Target, class: &'static str) {
    metrics::counter!(
        "member_query_backend_requests_total",
        "backend" => backend.as_str(), "class" => class
    )
    .increment(1);
}

pub fn backend_latency(backend: Target, latency: Duration) {
    metrics::histogram!("member_query_backend_seconds", "backend" => backend.as_str())
        .record(latency.as_secs_f64());
}

pub fn cache(cache: &'static str, hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    metrics::counter!("member_query_cache_total", "cache" => cache, "result" => result)
        .increment(1);
}

pub fn limited(class: &'static str, reason: &'static str) {
    metrics::counter!("member_query_limited_total", "class" => class, "reason" => reason)
        .increment(1);
}

pub fn fill(backend: Target, outcome: &'static str) {
    metrics::counter!(
        "member_query_cache_fills_total",
        "backend" => backend.as_str(), "outcome" => outcome
    )
    .increment(1);
}
