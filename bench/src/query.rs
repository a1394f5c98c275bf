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

pub struct WrkResult {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub non_2xx: u64,
    pub errors: u64,
}

fn parse_duration_ms(v: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|n| n * scale)
}

pub fn parse_wrk(text: &str) -> anyhow::Result<WrkResult> {
    let mut r = WrkResult {
        rps: 0.0,
        p50_ms: 0.0,
        p99_ms: 0.0,
        non_2xx: 0,
        errors: 0,
    };
    for line in text.lines().map(str::trim) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["50%", v] => r.p50_ms = parse_duration_ms(v).context("wrk p50")?,
            ["99%", v] => r.p99_ms = parse_duration_ms(v).context("wrk p99")?,
            ["Requests/sec:", v] => r.rps = v.parse().context("wrk rate")?,
            ["Non-2xx", "or", "3xx", "responses:", v] => r.non_2xx = v.parse()?,
            ["Socket", "errors:", rest @ ..] => {
                r.errors = rest
                    .iter()
                    .filter_map(|f| f.trim_end_matches(',').parse::<u64>().ok())
                    .sum()
            }
            _ => {}
        }
    }
    anyhow::ensure!(r.rps > 0.0, "no rate in wrk output: {text}");
    Ok(r)
}

pub fn wrk(
    url: &str,
    paths: &Path,
    script: &Path,
    seconds: u64,
    report: &mut Report,
) -> anyhow::Result<WrkResult> {
    let args = [
        "-t2".to_owned(),
        "-c64".to_owned(),
        format!("-d{seconds}s"),
        "--latency".to_owned(),
        "-s".to_owned(),
        script.display().to_string(),
        url.to_owned(),
    ];
    report.command(format!(
        "BENCH_PATHS={} BENCH_KEY=local-order-key wrk {}",
        paths.display(),
        args.join(" ")
    ));
    let out = std::process::Command::new("wrk")
        .args(&args)
        .env("BENCH_PATHS", paths)
        .env("BENCH_KEY", "local-order-key")
        .output()
        .context("running wrk (scripts/bench.sh installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "wrk failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_wrk(&text)
}

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
    let base = wrk(
        &format!("http://{listen}"),
        &paths_file,
        &script,
        seconds,
        report,
    );
    let base_fixed = match base {
        Ok(_) => Some(fixed(&format!("http://{listen}"), &paths, rate, seconds, report).await),
        Err(_) => None,
    };
    let _ = baseline.kill();
    let _ = baseline.wait();
    let base = base?;
    let base_fixed = base_fixed.expect("measured when wrk ran")?;
    let ours = wrk(&env.query_url(""), &paths_file, &script, seconds, report)?;
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
        2 * env.settings.query_api.cache.near_cache_ttl_ms + 100,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_latency_and_rate() {
        let text =
            "  Latency Distribution\n     50%  635.00us\n     75%    1.00ms\n     99%    2.50ms\n\
                    Non-2xx or 3xx responses: 3\nRequests/sec:  77000.12\n";
        let r = parse_wrk(text).unwrap();
        assert!((r.p50_ms - 0.635).abs() < 1e-9);
        assert!((r.p99_ms - 2.5).abs() < 1e-9);
        assert_eq!(r.non_2xx, 3);
        assert!((r.rps - 77000.12).abs() < 1e-9);
    }
}
