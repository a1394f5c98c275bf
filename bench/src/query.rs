//! The query path: lookups by identity and by member id over 20,000 members, keys drawn uniformly
//! and Zipf-distributed (wrk, 64 connections), warm and in the first ten seconds after a start,
//! each against the one-GET baseline server on the same Redis in the same run; a fixed-rate
//! (open-loop) measurement; and lookups with a cold cache (both Redis centers flushed: each
//! identity read once, filled from search).

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

/// Members the lookups range over (registered through the command API when the command
/// benchmark left fewer).
pub const MEMBERS: usize = 20_000;
/// The Zipf exponent of the skewed key distribution (rank k drawn with weight 1/k^s).
const ZIPF_S: f64 = 1.0;
/// Lines of the Zipf-sampled paths file (wrk picks lines uniformly).
const ZIPF_SAMPLES: usize = 200_000;

const WRK_SCRIPT: &str = r#"-- Random lookups from BENCH_PATHS (one path a line), with the order caller's key.
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

/// Which lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Identity,
    Id,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Identity => "by identity",
            Kind::Id => "by member id",
        }
    }
}

/// How the keys are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dist {
    Uniform,
    Zipf,
}

impl Dist {
    fn label(self) -> &'static str {
        match self {
            Dist::Uniform => "uniform",
            Dist::Zipf => "Zipf s=1",
        }
    }
}

pub const CASES: [(Kind, Dist); 4] = [
    (Kind::Identity, Dist::Uniform),
    (Kind::Identity, Dist::Zipf),
    (Kind::Id, Dist::Uniform),
    (Kind::Id, Dist::Zipf),
];

/// The lookups' paths files and wrk script, shared by the warm and the after-start rows.
pub struct Workload {
    script: std::path::PathBuf,
    files: BTreeMap<(Kind, Dist), std::path::PathBuf>,
    identity_paths: Vec<String>,
    members: usize,
}

/// A deterministic generator (xorshift64*), enough to draw benchmark keys.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `samples` indexes into `n` items, Zipf-distributed with exponent `s` over a random ranking
/// of the items (so the hot members are not those registered first).
fn zipf_sample(n: usize, s: f64, samples: usize, seed: u64) -> Vec<usize> {
    let mut draw = Draw(seed | 1);
    let mut rank: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        rank.swap(i, (draw.next() % (i as u64 + 1)) as usize);
    }
    let mut cdf = Vec::with_capacity(n);
    let mut total = 0.0;
    for k in 1..=n {
        total += 1.0 / (k as f64).powf(s);
        cdf.push(total);
    }
    (0..samples)
        .map(|_| {
            let u = draw.unit() * total;
            let k = cdf.partition_point(|c| *c < u).min(n - 1);
            rank[k]
        })
        .collect()
}

/// Registers members (each with an eLong card) through the command API until there are
/// `wanted`; returns all of them.
pub async fn top_up(
    env: &Isolated,
    mut members: Vec<Registered>,
    wanted: usize,
) -> anyhow::Result<Vec<Registered>> {
    let missing = wanted.saturating_sub(members.len());
    if missing == 0 {
        return Ok(members);
    }
    let client = reqwest::Client::new();
    let url = env.command_url("/v1/members");
    let made = Arc::new(Mutex::new(Vec::with_capacity(missing)));
    let failures = Arc::new(Mutex::new(0u64));
    futures::stream::iter(0..missing)
        .for_each_concurrent(16, |i| {
            let (client, url, made, failures) =
                (client.clone(), url.clone(), made.clone(), failures.clone());
            async move {
                // 16 digits, a prefix the command benchmark's cards never use.
                let card = format!("77{i:014}");
                let body =
                    serde_json::json!({"identities": [{"kind": "elong_card", "value": card}]});
                let r = client
                    .post(url)
                    .bearer_auth("local-writer-key")
                    .json(&body)
                    .send()
                    .await;
                let id = match r {
                    Ok(r) if r.status().is_success() => r
                        .json::<serde_json::Value>()
                        .await
                        .ok()
                        .and_then(|v| v["member_id"].as_str().map(str::to_owned)),
                    _ => None,
                };
                match id {
                    Some(member_id) => made.lock().unwrap().push(Registered { member_id, card }),
                    None => *failures.lock().unwrap() += 1,
                }
            }
        })
        .await;
    let failures = *failures.lock().unwrap();
    anyhow::ensure!(
        failures == 0,
        "{failures} registrations failed while topping up to {wanted} members"
    );
    members.extend(made.lock().unwrap().drain(..));
    Ok(members)
}

fn path_of(kind: Kind, m: &Registered) -> String {
    match kind {
        Kind::Identity => format!("/v1/members?kind=elong_card&value={}", m.card),
        Kind::Id => format!("/v1/members/{}", m.member_id),
    }
}

fn baseline_key(kind: Kind, m: &Registered) -> String {
    match kind {
        Kind::Identity => crate::one_get::key("elong_card", &m.card),
        Kind::Id => crate::one_get::key("id", &m.member_id),
    }
}

/// The one-GET baseline server, started and waited for; killed on drop.
struct Baseline {
    child: std::process::Child,
    base: String,
}

impl Baseline {
    async fn start(
        one_get_bin: &Path,
        env: &Isolated,
        report: &mut Report,
    ) -> anyhow::Result<Self> {
        let port = crate::private_redis::free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let child = std::process::Command::new(one_get_bin)
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
        let baseline = Self {
            child,
            base: format!("http://{listen}"),
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while client
            .get(format!("{}/healthz", baseline.base))
            .send()
            .await
            .is_err()
        {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the baseline server did not start"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(baseline)
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The 1-minute load average now (the machine is shared: each figure carries the load it was
/// measured under).
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// A wrk run and the 1-minute load average when it started.
pub struct Measured {
    run: crate::wrk::WrkResult,
    load: String,
}

fn wrk(
    base: &str,
    workload: &Workload,
    case: (Kind, Dist),
    seconds: u64,
    report: &mut Report,
) -> anyhow::Result<Measured> {
    let load = load();
    let env = [
        ("BENCH_PATHS", workload.files[&case].display().to_string()),
        ("BENCH_KEY", "local-order-key".to_owned()),
    ];
    let run = crate::wrk::run(base, &workload.script, 64, seconds, &env, report)?;
    Ok(Measured { run, load })
}

fn lookup_row(title: String, ours: &Measured, base: &Measured) -> Row {
    let (load, base_load) = (&ours.load, &base.load);
    let (ours, base) = (&ours.run, &base.run);
    let ratio = ours.rps / base.rps;
    let clean = ours.non_2xx == 0 && ours.errors == 0;
    Row::new(
        title,
        format!(
            "{}, p50 {:.2} ms, p99 {:.2} ms (load {load})",
            rate_text(ours.rps),
            ours.p50_ms,
            ours.p99_ms
        ),
    )
    .baseline(
        format!(
            "{} one-GET server, p50 {:.2} ms, p99 {:.2} ms (load {base_load})",
            rate_text(base.rps),
            base.p50_ms,
            base.p99_ms
        ),
        ratio,
    )
    .target(
        ">= 1.0 x baseline, p99 < 5 ms",
        ratio >= 1.0 && ours.p99_ms < 5.0 && clean,
    )
}

fn note_failures(report: &mut Report, what: &str, ours: &Measured, base: &Measured) {
    let (ours, base) = (&ours.run, &base.run);
    if ours.non_2xx + ours.errors + base.non_2xx + base.errors > 0 {
        report.note(format!(
            "{what}: query API {} non-2xx and {} socket errors; baseline {} non-2xx and {} socket errors",
            ours.non_2xx, ours.errors, base.non_2xx, base.errors
        ));
    }
}

/// Writes the paths files, warms every key once through the query API, stores each answer under
/// the baseline's key in Redis A, then measures the warm rows and the fixed-rate rows.
pub async fn bench(
    report: &mut Report,
    env: &Isolated,
    members: &[Registered],
    one_get_bin: &Path,
    seconds: u64,
) -> anyhow::Result<Workload> {
    anyhow::ensure!(
        !members.is_empty(),
        "the query benchmark needs members (run commands first)"
    );
    let members = &members[..members.len().min(MEMBERS)];
    let script = env.dir.join("lookup.lua");
    std::fs::write(&script, WRK_SCRIPT)?;
    let zipf = zipf_sample(members.len(), ZIPF_S, ZIPF_SAMPLES, 0x5eed);
    let mut files = BTreeMap::new();
    for kind in [Kind::Identity, Kind::Id] {
        let paths: Vec<String> = members.iter().map(|m| path_of(kind, m)).collect();
        let name = match kind {
            Kind::Identity => "identity",
            Kind::Id => "id",
        };
        let uniform = env.dir.join(format!("query-paths-{name}-uniform.txt"));
        std::fs::write(&uniform, paths.join("\n") + "\n")?;
        let skewed = env.dir.join(format!("query-paths-{name}-zipf.txt"));
        let lines: Vec<&str> = zipf.iter().map(|&i| paths[i].as_str()).collect();
        std::fs::write(&skewed, lines.join("\n") + "\n")?;
        files.insert((kind, Dist::Uniform), uniform);
        files.insert((kind, Dist::Zipf), skewed);
    }
    let identity_paths: Vec<String> = members.iter().map(|m| path_of(Kind::Identity, m)).collect();
    let id_paths: Vec<String> = members.iter().map(|m| path_of(Kind::Id, m)).collect();
    let workload = Workload {
        script,
        files,
        identity_paths: identity_paths.clone(),
        members: members.len(),
    };

    // Every path once through the query API (all served from Redis A once the projections
    // caught up); the same document goes under the baseline's key in the same Redis.
    let (_, _, served, failures) = read_each_once(&env.query_url(""), &identity_paths, 32).await;
    anyhow::ensure!(
        failures == 0,
        "{failures} lookups by identity failed before the query benchmark"
    );
    let (_, _, served_id, failures) = read_each_once(&env.query_url(""), &id_paths, 32).await;
    anyhow::ensure!(
        failures == 0,
        "{failures} lookups by id failed before the query benchmark"
    );
    let client = reqwest::Client::new();
    let redis = env.redis_a.connection().await?;
    let copies: Vec<(String, String)> = members
        .iter()
        .flat_map(|m| [Kind::Identity, Kind::Id].map(|k| (path_of(k, m), baseline_key(k, m))))
        .collect();
    let copied = futures::stream::iter(copies)
        .map(|(path, key)| {
            let (client, mut redis) = (client.clone(), redis.clone());
            let url = env.query_url(&path);
            async move {
                let body = client
                    .get(url)
                    .bearer_auth("local-order-key")
                    .send()
                    .await?
                    .error_for_status()?
                    .bytes()
                    .await?;
                redis::cmd("SET")
                    .arg(key)
                    .arg(body.as_ref())
                    .query_async::<()>(&mut redis)
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    for c in copied {
        c?;
    }
    report.note(format!(
        "query: {} members; warm-up reads by identity served from {served:?}, by id from {served_id:?}; Zipf rows draw from {ZIPF_SAMPLES} keys sampled with s = {ZIPF_S} over a random ranking of the members",
        members.len()
    ));

    // Warm: baseline then ours, per case, back to back.
    let baseline = Baseline::start(one_get_bin, env, report).await?;
    let mut base_rows = Vec::new();
    for case in CASES {
        let name = format!(
            "lookups {} {}, one-GET server",
            case.0.label(),
            case.1.label()
        );
        let profile = crate::profile::start(report, &name, Duration::from_secs(seconds));
        base_rows.push(wrk(&baseline.base, &workload, case, seconds, report)?);
        crate::profile::finish(report, profile);
    }
    let rate = fixed_rate()?;
    let base_fixed_load = load();
    let base_fixed = fixed(&baseline.base, &identity_paths, rate, seconds, report).await?;
    drop(baseline);
    for (case, base) in CASES.into_iter().zip(&base_rows) {
        let name = format!("lookups {} {}, member run", case.0.label(), case.1.label());
        let profile = crate::profile::start(report, &name, Duration::from_secs(seconds));
        let ours = wrk(&env.query_url(""), &workload, case, seconds, report)?;
        crate::profile::finish(report, profile);
        report.row(lookup_row(
            format!(
                "lookups {}, {} over {} members, warm (wrk, 64 connections)",
                case.0.label(),
                case.1.label(),
                members.len()
            ),
            &ours,
            base,
        ));
        note_failures(
            report,
            &format!("warm {} {}", case.0.label(), case.1.label()),
            &ours,
            base,
        );
    }
    let ours_fixed_load = load();
    let ours_fixed = fixed(&env.query_url(""), &identity_paths, rate, seconds, report).await?;
    report.row(
        Row::new(
            format!("lookups by identity, uniform, at a fixed {rate:.0}/s (open loop)"),
            format!(
                "{}, {}, {} failed (load {ours_fixed_load})",
                rate_text(ours_fixed.rate),
                ours_fixed.latency.summary(),
                ours_fixed.failed
            ),
        )
        .baseline(
            format!(
                "one-GET server {}, {} failed (load {base_fixed_load})",
                base_fixed.latency.summary(),
                base_fixed.failed
            ),
            ours_fixed.latency.ms(0.99) / base_fixed.latency.ms(0.99).max(0.001),
        )
        .target(
            "p99 < 5 ms (ratio: p99 to the baseline's)",
            ours_fixed.latency.ms(0.99) < 5.0 && ours_fixed.failed == 0,
        ),
    );
    Ok(workload)
}

/// The baseline's first `seconds` after its start, for `case`: the server is started, and wrk
/// begins the moment it answers.
pub async fn baseline_after_start(
    report: &mut Report,
    env: &Isolated,
    workload: &Workload,
    one_get_bin: &Path,
    case: (Kind, Dist),
    seconds: u64,
) -> anyhow::Result<Measured> {
    let baseline = Baseline::start(one_get_bin, env, report).await?;
    let result = wrk(&baseline.base, workload, case, seconds, report);
    drop(baseline);
    result
}

/// Ours in the first `seconds` after `member run` answered its health check (the caller
/// restarted it): the row against the baseline's own first seconds.
pub fn after_start_row(
    report: &mut Report,
    env: &Isolated,
    workload: &Workload,
    case: (Kind, Dist),
    seconds: u64,
    base: &Measured,
) -> anyhow::Result<()> {
    let ours = wrk(&env.query_url(""), workload, case, seconds, report)?;
    report.row(lookup_row(
        format!(
            "lookups {}, {} over {} members, first {seconds} s after start (wrk from the first answer of /healthz)",
            case.0.label(),
            case.1.label(),
            workload.members
        ),
        &ours,
        base,
    ));
    note_failures(
        report,
        &format!("after start {} {}", case.0.label(), case.1.label()),
        &ours,
        base,
    );
    Ok(())
}

/// Cold cache: both centers flushed, the in-process caches empty (the caller restarted the
/// process, or the near cache expired); each identity read once.
pub async fn cold(report: &mut Report, env: &Isolated, workload: &Workload) -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_millis(
        2 * env.settings.query_api.cache.near_cache_ttl_ms.get() + 100,
    ))
    .await;
    env.redis_a.flush_all().await?;
    env.redis_b.flush_all().await?;
    let paths = &workload.identity_paths;
    let (cold_rate, cold, served, failures) = read_each_once(&env.query_url(""), paths, 64).await;
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
    fn zipf_sample_is_as_skewed_as_expected() {
        let n = 20_000;
        let sample = zipf_sample(n, 1.0, 200_000, 7);
        let mut counts = vec![0u32; n];
        for i in &sample {
            counts[*i] += 1;
        }
        counts.sort_unstable_by(|a, b| b.cmp(a));
        // With s = 1 over 20,000 keys the top key takes about 1/H(20000) ~ 9.3 % of draws and
        // the top 1 % of keys about half.
        let top: u32 = counts[..200].iter().sum();
        assert!(
            (0.08..0.11).contains(&(counts[0] as f64 / 200_000.0)),
            "{}",
            counts[0]
        );
        assert!((0.45..0.6).contains(&(top as f64 / 200_000.0)), "{top}");
    }
}
