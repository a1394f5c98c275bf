//! Latency at a fixed offered rate (open loop), for the query path's p99 target.
//!
//! wrk keeps 64 connections busy, so its p99 is mostly queueing at saturation on a 2-core machine
//! that also runs the servers (the one-GET baseline's own p99 was 13-23 ms that way). Here
//! requests are sent on a fixed schedule whatever the answers do, and each latency is measured
//! from the moment its request was due, not from when it was sent: a server that stalls is
//! charged for every request that waited behind the stall (no coordinated omission).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::latency::Latency;

pub struct OpenLoop {
    /// Requests answered 2xx per second over the measured period.
    pub rate: f64,
    pub latency: Latency,
    /// Answers other than 2xx, and requests that failed or got no answer.
    pub failed: u64,
}

/// Sends GET `base` + one of `paths` (round robin) with `key` as bearer, `rate` times a second
/// for `warm_up` (not measured) and then `duration`, and waits for the answers.
pub async fn run(
    base: &str,
    paths: &[String],
    key: &str,
    rate: f64,
    warm_up: Duration,
    duration: Duration,
) -> anyhow::Result<OpenLoop> {
    anyhow::ensure!(
        rate > 0.0 && !paths.is_empty(),
        "an open loop needs a rate and paths"
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(10))
        .build()?;
    let latency = Arc::new(Mutex::new(Latency::default()));
    let failed = Arc::new(Mutex::new(0u64));
    let started = Instant::now();
    let measured_from = started + warm_up;
    let end = measured_from + duration;
    let total = ((warm_up + duration).as_secs_f64() * rate) as u64;
    let mut ticks = tokio::time::interval(Duration::from_millis(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    let mut sent = 0u64;
    while sent < total {
        ticks.tick().await;
        let due = ((started.elapsed().as_secs_f64() * rate) as u64).min(total);
        while sent < due {
            let scheduled = started + Duration::from_secs_f64(sent as f64 / rate);
            let url = format!("{base}{}", paths[sent as usize % paths.len()]);
            let request = client.get(url).bearer_auth(key);
            let (latency, failed) = (latency.clone(), failed.clone());
            tasks.spawn(async move {
                let ok = match request.send().await {
                    Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                    _ => false,
                };
                if scheduled < measured_from {
                    return;
                }
                if ok {
                    latency.lock().unwrap().record(scheduled.elapsed());
                } else {
                    *failed.lock().unwrap() += 1;
                }
            });
            sent += 1;
        }
        // Reap finished requests as we go, so the set does not grow for the whole run.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let measured = end.saturating_duration_since(measured_from).as_secs_f64();
    let latency = latency.lock().unwrap().clone();
    let failed = *failed.lock().unwrap();
    Ok(OpenLoop {
        rate: latency.count() as f64 / measured,
        latency,
        failed,
    })
}
