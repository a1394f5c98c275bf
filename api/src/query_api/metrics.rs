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

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use metrics::{Counter, Histogram};

use member_projections::Target;
use member_read_policy::breaker::BreakerState;

/// A series: its name and label values, all `&'static str`, identified by address and length.
type Series = [(usize, usize); 4];

fn series(parts: [&'static str; 4]) -> Series {
    parts.map(|p| (p.as_ptr() as usize, p.len()))
}

thread_local! {
    /// The handles this thread resolved. `counter!` hashes the name and labels and looks them up
    /// in the recorder's registry on every call; the read path counts four or five series per
    /// request, so each worker thread resolves a series once and keeps its handle.
    static COUNTERS: RefCell<HashMap<Series, Counter>> = RefCell::new(HashMap::new());
    static HISTOGRAMS: RefCell<HashMap<Series, Histogram>> = RefCell::new(HashMap::new());
}

/// Increments the counter `name{k1=v1,k2=v2[,k3=v3]}` through this thread's handle.
fn count(name: &'static str, labels: &[(&'static str, &'static str)]) {
    let key = series([
        name,
        labels.first().map_or("", |l| l.1),
        labels.get(1).map_or("", |l| l.1),
        labels.get(2).map_or("", |l| l.1),
    ]);
    COUNTERS.with(|handles| {
        handles
            .borrow_mut()
            .entry(key)
            .or_insert_with(|| {
                // A handle resolved before the recorder is installed would count nowhere, for
                // good: make sure there is one.
                crate::telemetry::metrics_handle();
                metrics::counter!(name, labels)
            })
            .increment(1);
    });
}

pub fn request(class: &'static str, outcome: &'static str) {
    count(
        "member_query_requests_total",
        &[("class", class), ("outcome", outcome)],
    );
}

pub fn served(backend: &'static str, class: &'static str) {
    count(
        "member_query_served_total",
        &[("backend", backend), ("class", class)],
    );
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
    count(
        "member_query_backend_requests_total",
        &[("backend", backend.as_str()), ("class", class)],
    );
}

pub fn backend_latency(backend: Target, latency: Duration) {
    let backend = backend.as_str();
    HISTOGRAMS.with(|handles| {
        handles
            .borrow_mut()
            .entry(series(["member_query_backend_seconds", backend, "", ""]))
            .or_insert_with(|| {
                crate::telemetry::metrics_handle();
                metrics::histogram!("member_query_backend_seconds", "backend" => backend)
            })
            .record(latency.as_secs_f64());
    });
}

pub fn cache(cache: &'static str, hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    count(
        "member_query_cache_total",
        &[("cache", cache), ("result", result)],
    );
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
