//! The query path: lookups by identity served from Redis (wrk, 64 connections) against the
//! one-GET baseline server on the same Redis in the same run, and the same lookups with a cold
//! cache (both Redis centers flushed: each identity read once, filled from search).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;

use crate::commands::Registered;
use crate::isolated::Isolated;
use crate::latency::Latency;
use crate::report::{rate as rate_text, Report, Row};

const WRK_SCRIPT: &str = r#"-- Random lookups by identity from BENCH_PATHS, with the order caller's key.
local paths = {}
for line in io.lines(os.getenv("BENCH_PATHS")) do paths[#paths + 1] = line end
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
request = function()
  return wrk.format("GET", paths[math.random(#paths)])
end
"#;

/// The offered rate of the fixed-rate measurement: `BENCH_QUERY_RATE`, default 5,000/s. A latency
/// measured open loop means something only below saturation: with the generator (reqwest, much
/// heavier per request than wrk) on the same two cores, 10,000/s was at the edge, once p99 76 ms,
/// once overload (p99 14 s, timeouts) in two runs of 2026-12-02 (docs/benchmarks.md).
fn fixed_rate() -> anyhow::Result<f64> {
    match std::env::var("BENCH_QUERY_RATE") {
        Ok(v) => {
            let rate: f64 = v.parse().context("BENCH_QUERY_RATE must be a number")?;
            anyhow::ensure!(rate >= 1.0, "BENCH_QUERY_RATE must be at least 1");
            Ok(rate)
        }
        Err(_) => Ok(5_000.0),
    }
}

/// The open-loop measurement: 1 s warm-up, then `seconds` at `rate`.
async fn fixed(
    base: &str,
    paths: &[String],
    rate: f64,
    seconds: u64,
    report: &mut Report,
) -> anyhow::Result<crate::open_loop::OpenLoop> {
    report.command(format!(
        "member-bench open loop: GET {base}/v1/members?kind=elong_card&value=... at {rate:.0}/s for 1 s (warm-up) + {seconds} s, latency from each request's scheduled time"
    ));
    crate::open_loop::run(
        base,
        paths,
        "local-order-key",
        rate,
        Duration::from_secs(1),
        Duration::from_secs(seconds),
    )
    .await
}

/// Reads every path once at `concurrency`; returns (rate, latency, served-from counts, failures).
async fn read_each_once(
    base: &str,
    paths: &[String],
    concurrency: usize,
) -> (f64, Latency, BTreeMap<String, u64>, u64) {
    let client = reqwest::Client::new();
    let latency = Arc::new(Mutex::new(Latency::default()));
    let served = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let failures = Arc::new(Mutex::new(0u64));
    let started = Instant::now();
    futures::stream::iter(paths.iter().cloned())
        .for_each_concurrent(concurrency, |path| {
            let (client, latency, served, failures) = (
                client.clone(),
                latency.clone(),
                served.clone(),
                failures.clone(),
            );
            let url = format!("{base}{path}");
            async move {
                let t = Instant::now();
                let r = client.get(url).bearer_auth("local-order-key").send().await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        latency.lock().unwrap().record(t.elapsed());
                        let from = r
                            .headers()
                            .get("x-served-from")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("?")
                            .to_owned();
                        *served.lock().unwrap().entry(from).or_default() += 1;
                        let _ = r.bytes().await;
                    }
                    _ => *failures.lock().unwrap() += 1,
                }
            }
        })
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let latency = latency.lock().unwrap().clone();
    let served = served.lock().unwrap().clone();
    let failures = *failures.lock().unwrap();
    (paths.len() as f64 / elapsed, latency, served, failures)
}

pub async fn bench(
    report: &mut Report,
    env: &Isolated,
    members: &[Registered],
    one_get_bin: &Path,
    seconds: u64,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !members.is_empty(),
        "the query benchmark needs members (run commands first)"
    );
    let paths: Vec<String> = members
        .iter()
        .take(20_000)
        .map(|m| format!("/v1/members?kind=elong_card&value={}", m.card))
        .collect();
    let paths_file = env.dir.join("query-paths.txt");
    std::fs::write(&paths_file, paths.join("\n") + "\n")?;
    let script = env.dir.join("lookup.lua");
    std::fs::write(&script, WRK_SCRIPT)?;

    // Every path once through the query API (all served from Redis A once the projections
    // caught up); the same document goes under the baseline's key in the same Redis.
    let (_, _, served, failures) = read_each_once(&env.query_url(""), &paths, 32).await;
    anyhow::ensure!(
        failures == 0,
        "{failures} lookups failed before the query benchmark"
    );
    let client = reqwest::Client::new();
    let mut redis = env.redis_a.connection().await?;
    for (m, path) in members.iter().zip(&paths) {
        let body = client
            .get(env.query_url(path))
            .bearer_auth("local-order-key")
            .send()
            .await?
            .bytes()
            .await?;
        redis::cmd("SET")
            .arg(crate::one_get::key("elong_card", &m.card))
            .arg(body.as_ref())
            .query_async::<()>(&mut redis)
            .await?;
    }
    report.note(format!(
        "query: {} identities, warm-up reads served from {served:?}",
        paths.len()
    ));

    let port = crate::private_redis::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let mut baseline = std::process::Command::new(one_get_bin)
        .args([
            "one-get-server",
            "--listen",
            &listen,
            "--redis",
            &env.redis_a.url(),
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting the one-GET baseline server")?;
    report.command(format!(
        "member-bench one-get-server --listen {listen} --redis {}",
        env.redis_a.url()
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    while client
        .get(format!("http://{listen}/healthz"))
        .send()
        .await
        .is_err()
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the baseline server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rate = fixed_rate()?;
    let lookups = |url: &str, report: &mut Report| {
        let env = [
            ("BENCH_PATHS", paths_file.display().to_string()),
            ("BENCH_KEY", "local-order-key".to_owned()),
        ];
        crate::wrk::run(url, &script, 64, seconds, &env, report)
    };
    let base = lookups(&format!("http://{listen}"), report);
    let base_fixed = match base {
        Ok(_) => Some(fixed(&format!("http://{listen}"), &paths, rate, seconds, report).await),
        Err(_) => None,
    };
    let _ = baseline.kill();
    let _ = baseline.wait();
    let base = base?;
    let base_fixed = base_fixed.expect("measured when wrk ran")?;
    let ours = lookups(&env.query_url(""), report)?;
    let ours_fixed = fixed(&env.query_url(""), &paths, rate, seconds, report).await?;
    let ratio = ours.rps / base.rps;
    let clean = ours.non_2xx == 0 && ours.errors == 0 && ours_fixed.failed == 0;
    report.row(
        Row::new(
            "cached lookups by identity (wrk, 64 connections)",
            format!(
                "{}, p50 {:.2} ms, p99 {:.2} ms",
                rate_text(ours.rps),
                ours.p50_ms,
                ours.p99_ms
            ),
        )
        .baseline(
            format!(
                "{} one-GET server, p50 {:.2} ms, p99 {:.2} ms",
                rate_text(base.rps),
                base.p50_ms,
                base.p99_ms
            ),
            ratio,
        )
        .target(">= 1/2 of baseline", ratio >= 0.5 && clean),
    );
    report.row(
        Row::new(
            format!("cached lookups by identity at a fixed {rate:.0}/s (open loop)"),
            format!(
                "{}, {}, {} failed",
                rate_text(ours_fixed.rate),
                ours_fixed.latency.summary(),
                ours_fixed.failed
            ),
        )
        .baseline(
            format!(
                "one-GET server {}, {} failed",
                base_fixed.latency.summary(),
                base_fixed.failed
            ),
            ours_fixed.latency.ms(0.99) / base_fixed.latency.ms(0.99).max(0.001),
        )
        .target(
            "p99 < 5 ms (ratio: p99 to the baseline's)",
            ours_fixed.latency.ms(0.99) < 5.0 && clean,
        ),
    );
    if ours.non_2xx + ours.errors + base.non_2xx + base.errors > 0 {
        report.note(format!(
            "wrk: query API {} non-2xx and {} socket errors; baseline {} non-2xx and {} socket errors",
            ours.non_2xx, ours.errors, base.non_2xx, base.errors
        ));
    }

    // Cold cache: both centers flushed, and the in-process near cache expired (wrk made every
    // key hot); each identity read once.
    tokio::time::sleep(Duration::from_millis(
        2 * env.settings.query_api.cache.near_cache_ttl_ms.get() + 100,
    ))
    .await;
    env.redis_a.flush_all().await?;
    env.redis_b.flush_all().await?;
    let (cold_rate, cold, served, failures) = read_each_once(&env.query_url(""), &paths, 64).await;
    report.command(format!(
        "redis-cli -p {} FLUSHALL; redis-cli -p {} FLUSHALL; member-bench cold reads: each of {} identities once, 64 concurrent",
        env.redis_a.port(),
        env.redis_b.port(),
        paths.len()
    ));
    report.row(Row::new(
        "lookups by identity, cold cache (each identity once, 64 concurrent)",
        format!(
            "{}, {}, {failures} failed",
            rate_text(cold_rate),
            cold.summary()
        ),
    ));
    report.note(format!("cold-cache reads served from {served:?}"));
    Ok(())
}
