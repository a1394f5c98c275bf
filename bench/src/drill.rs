//! `member-bench drill`: the fail-over drill under order-class load against the release
//! `member run` over an isolated environment. Redis A (a private redis-server) and MariaDB sit
//! behind TCP proxies the drill cuts; the search primary is a private Elasticsearch node the
//! drill SIGKILLs and starts again (a crash, not an admin fault flag); the broker (started by scripts/stack.sh) is restarted with
//! `stack.sh restart-service kafka`. Counts failed order-class requests, the time until reads
//! moved (`X-Served-From`), and the time until each recovered store caught up.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use member_domain::IdentityKey;
use member_infra::stores::Store;
use member_projections::Target;
use serde_json::json;

use crate::isolated::{Isolated, Overrides};
use crate::member_process::MemberProcess;
use crate::private_redis::PrivateRedis;
use crate::report::{Report, Row};
use crate::Common;
use member_tests::elasticsearch::PrivateElasticsearch;
use member_tests::proxy::FaultProxy;

/// One order-class read: when (since the drill's start) and where it was served from (Err: failed).
type Read = (Duration, Result<String, String>, Duration);

#[derive(Clone)]
struct Written {
    card: String,
    version: u64,
}

async fn register(client: &reqwest::Client, url: &str, card: &str) -> anyhow::Result<u64> {
    let r = client
        .post(url)
        .bearer_auth("local-writer-key")
        .json(&json!({"identities": [{"kind": "elong_card", "value": card}]}))
        .send()
        .await?;
    anyhow::ensure!(r.status().as_u16() == 201, "register: {}", r.status());
    let v: serde_json::Value = r.json().await?;
    v["version"].as_u64().context("version in the response")
}

/// Which broker the drill restarts.
pub enum Broker {
    /// The shared broker, through `stack.sh restart-service kafka` (every client sees it).
    Shared(PathBuf),
    /// A Kafka broker of the drill's own, started with this script (scripts/kafka-cluster.sh).
    Private(PathBuf),
    /// The shared broker, not restarted (the broker phase is only a wait).
    Untouched,
}

enum RunningBroker {
    Untouched,
    Shared(PathBuf),
    Private(crate::private_broker::PrivateBroker),
}

impl RunningBroker {
    async fn restart(&mut self, report: &mut Report) -> anyhow::Result<()> {
        match self {
            RunningBroker::Untouched => {
                report.note("the broker was not restarted in this drill (DRILL_BROKER=none)");
                Ok(())
            }
            RunningBroker::Shared(script) => {
                report.command(format!("bash {} restart-service kafka", script.display()));
                let out = tokio::process::Command::new("bash")
                    .arg(&*script)
                    .args(["restart-service", "kafka"])
                    .output()
                    .await
                    .context("running stack.sh restart-service kafka")?;
                if !out.status.success() {
                    report.note(format!(
                        "stack.sh restart-service kafka failed ({}): {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                Ok(())
            }
            RunningBroker::Private(broker) => {
                report.command(format!(
                    "kafka-cluster.sh stop-node <dir> 1; start-node <dir> 1 ({})",
                    broker.command_line()
                ));
                broker.restart().await
            }
        }
    }
}

pub async fn run(common: Common, broker: Broker, phase_seconds: u64) -> anyhow::Result<()> {
    std::fs::create_dir_all(&common.work_dir)?;
    let mut report = Report::default();
    let outcome = drill(&common, broker, phase_seconds, &mut report).await;
    let title = format!("fail-over drill ({phase_seconds} s phases)");
    report.conclude(&common, "drill", &title, outcome)
}

async fn drill(
    common: &Common,
    broker: Broker,
    phase: u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let member_bin = std::fs::canonicalize(&common.member_bin)
        .with_context(|| format!("{} (cargo build --release)", common.member_bin.display()))?;
    std::fs::create_dir_all(common.work_dir.join("drill-redis"))?;
    let redis_a = PrivateRedis::start(&common.work_dir.join("drill-redis"))?;
    let redis_a_proxy = FaultProxy::start(format!("127.0.0.1:{}", redis_a.port()).parse()?).await;
    let base = member_infra::config::Settings::load()?;
    let mysql_host = base
        .mysql
        .url
        .expose_secret()
        .rsplit_once('@')
        .map(|(_, h)| h.trim_end_matches('/'))
        .context("mysql url with user@host:port")?;
    let (credentials, _) = base
        .mysql
        .url
        .expose_secret()
        .rsplit_once('@')
        .context("mysql url")?;
    let mariadb_proxy = FaultProxy::start(
        tokio::net::lookup_host(mysql_host)
            .await?
            .next()
            .context("mariadb address")?,
    )
    .await;
    let (mut broker, kafka_brokers) = match broker {
        Broker::Shared(script) => (RunningBroker::Shared(script), None),
        Broker::Untouched => (RunningBroker::Untouched, None),
        Broker::Private(script) => {
            let dir = std::fs::canonicalize(&common.work_dir)?.join(format!(
                "drill-broker-{}",
                chrono::Utc::now().format("%Y%m%d%H%M%S")
            ));
            let b = crate::private_broker::PrivateBroker::start(&script, &dir, 1, &[])?;
            report.command(b.command_line());
            let brokers = b.brokers();
            (RunningBroker::Private(b), Some(brokers))
        }
    };
    // The search primary is a node of the drill's own, so that killing it kills nothing shared.
    let mut search_primary = PrivateElasticsearch::start().await;
    let env = Isolated::create(
        &common.work_dir,
        "drill",
        Overrides {
            redis_a_url: Some(format!("redis://{}", redis_a_proxy.addr())),
            mysql_url: Some(format!("{credentials}@{}", mariadb_proxy.addr())),
            kafka_brokers,
            search_primary_url: Some(search_primary.url()),
        },
    )
    .await?;
    let result = drill_in(
        &env,
        &member_bin,
        &mut broker,
        phase,
        report,
        &redis_a,
        &redis_a_proxy,
        &mariadb_proxy,
        &mut search_primary,
    )
    .await;
    env.drop_databases(&[], &[]).await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn drill_in(
    env: &Isolated,
    member_bin: &std::path::Path,
    broker: &mut RunningBroker,
    phase: u64,
    report: &mut Report,
    redis_a: &PrivateRedis,
    redis_a_proxy: &FaultProxy,
    mariadb_proxy: &FaultProxy,
    search_primary: &mut PrivateElasticsearch,
) -> anyhow::Result<()> {
    let mut app = MemberProcess::spawn(
        member_bin,
        &["run"],
        &env.member_env(),
        &env.dir.join("logs/member-run.log"),
    )?;
    report.command(app.command_line.clone());
    app.wait_healthy(&env.command_url("/healthz"), Duration::from_secs(60))
        .await?;
    app.wait_healthy(&env.query_url("/healthz"), Duration::from_secs(60))
        .await?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let register_url = env.command_url("/v1/members");

    // Readers straight at the stores (not through the proxies), to see when they caught up.
    let mut direct = env.settings.clone();
    direct.redis.a.url = redis_a.url().into();
    direct.mysql.url = member_infra::config::Settings::load()?.mysql.url;
    let redis_a_reader = Store::open(Target::RedisA, &direct).await?.reader();
    let mysql_reader = Store::open(Target::Mysql, &direct).await?.reader();
    let search_primary_reader = Store::open(Target::SearchPrimary, &direct).await?.reader();

    let mut cards = Vec::new();
    for i in 0..200u64 {
        let card = format!("{:012}", 100_000_000_000u64 + i);
        register(&client, &register_url, &card).await?;
        cards.push(card);
    }
    // Every store shows every member before the load starts: a failure counted in the drill is
    // then one the faults caused, not a read racing its own registration. Every card, not only
    // the last: members are spread over the topic's partitions, which the projectors read side
    // by side, so the last registration being visible says nothing about the others.
    let keys = cards
        .iter()
        .map(|card| IdentityKey::parse("elong_card", card))
        .collect::<Result<Vec<_>, _>>()?;
    for reader in [&redis_a_reader, &mysql_reader] {
        let deadline = Instant::now() + Duration::from_secs(60);
        for key in &keys {
            while reader.by_identity(key).await.ok().flatten().is_none() {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "the stores did not catch up before the drill"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let reads: Arc<Mutex<Vec<Read>>> = Arc::default();
    let mut loads = Vec::new();
    for worker in 0..8usize {
        let (client, stop, reads, cards) =
            (client.clone(), stop.clone(), reads.clone(), cards.clone());
        let base = env.query_url("");
        loads.push(tokio::spawn(async move {
            let mut i = worker;
            while !stop.load(Ordering::SeqCst) {
                let path = format!(
                    "/v1/members?kind=elong_card&value={}",
                    cards[i % cards.len()]
                );
                i += 7;
                let t = Instant::now();
                let r = client
                    .get(format!("{base}{path}"))
                    .bearer_auth("local-order-key")
                    .send()
                    .await;
                let outcome = match r {
                    Ok(r) if r.status().is_success() => Ok(r
                        .headers()
                        .get("x-served-from")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("?")
                        .to_owned()),
                    Ok(r) => Err(format!("{}", r.status())),
                    Err(e) => Err(format!("{e}")),
                };
                reads
                    .lock()
                    .expect("reads")
                    .push((start.elapsed(), outcome, t.elapsed()));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    // Writes continue through the drill (20/s), so recovered stores have something to catch up.
    let written: Arc<Mutex<Vec<Written>>> = Arc::default();
    let writer = {
        let (client, stop, written, url) = (
            client.clone(),
            stop.clone(),
            written.clone(),
            register_url.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0u64;
            let mut failed = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let card = format!("{:012}", 200_000_000_000u64 + n);
                match register(&client, &url, &card).await {
                    Ok(version) => written
                        .lock()
                        .expect("written")
                        .push(Written { card, version }),
                    Err(_) => failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            failed
        })
    };

    let wait = || tokio::time::sleep(Duration::from_secs(phase));
    let mut marks: Vec<(&str, Duration)> = vec![("healthy", Duration::ZERO)];
    wait().await;
    marks.push(("redis A stopped", start.elapsed()));
    redis_a_proxy.stop();
    wait().await;
    marks.push(("search primary SIGKILLed", start.elapsed()));
    search_primary.kill();
    wait().await;
    marks.push(("MariaDB stopped", start.elapsed()));
    mariadb_proxy.stop();
    wait().await;
    marks.push(("broker restarting", start.elapsed()));
    let t = Instant::now();
    broker.restart(report).await?;
    let broker_restart = t.elapsed();
    wait().await;
    let restored_at = start.elapsed();
    marks.push(("all restored", restored_at));
    let last_written = written
        .lock()
        .expect("written")
        .last()
        .cloned()
        .context("no write succeeded")?;
    redis_a_proxy.restore();
    mariadb_proxy.restore();
    // Started again on the same port and data; reads return to it only once its projection has
    // caught up (ADR 0022).
    let t = Instant::now();
    search_primary.restart().await;
    let search_primary_restart = t.elapsed();
    let key = IdentityKey::parse("elong_card", &last_written.card)?;
    let mut caught_up = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while caught_up.len() < 3 && Instant::now() < deadline {
        for (name, reader) in [
            ("redis-a", &redis_a_reader),
            ("mysql", &mysql_reader),
            ("search-primary", &search_primary_reader),
        ] {
            if caught_up.contains_key(name) {
                continue;
            }
            if let Ok(Some(doc)) = reader.by_identity(&key).await {
                if doc.version >= last_written.version {
                    caught_up.insert(name, start.elapsed() - restored_at);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(phase)).await;
    stop.store(true, Ordering::SeqCst);
    for l in loads {
        l.await?;
    }
    let write_failures = writer.await?;
    let rss = app.peak_rss_mib()?;
    app.stop().await?;

    let reads = std::mem::take(&mut *reads.lock().expect("reads"));
    let failures: Vec<&Read> = reads.iter().filter(|(_, o, _)| o.is_err()).collect();
    report.row(
        Row::new(
            "failed order-class reads",
            format!("{} of {}", failures.len(), reads.len()),
        )
        .target("0", failures.is_empty()),
    );
    if let Some((at, Err(e), _)) = failures.first() {
        report.note(format!(
            "first failed read at {:.1} s: {e}",
            at.as_secs_f64()
        ));
    }
    // Per phase: where the reads were served from.
    for (i, (name, from)) in marks.iter().enumerate() {
        let to = marks.get(i + 1).map(|m| m.1).unwrap_or(Duration::MAX);
        let mut served: BTreeMap<&str, u64> = BTreeMap::new();
        let mut latency = crate::latency::Latency::default();
        let mut max = Duration::ZERO;
        for (at, o, took) in &reads {
            if at >= from && *at < to {
                *served.entry(o.as_deref().unwrap_or("failed")).or_default() += 1;
                latency.record(*took);
                max = max.max(*took);
            }
        }
        report.note(format!(
            "phase `{name}` (from {:.1} s): served from {served:?}; read latency {}, max {} ms",
            from.as_secs_f64(),
            latency.summary(),
            max.as_millis()
        ));
    }
    let first_after = |after: Duration, pred: &dyn Fn(&str) -> bool| {
        reads
            .iter()
            .find(|(at, o, _)| *at >= after && o.as_deref().map(pred).unwrap_or(false))
            .map(|(at, _, _)| *at - after)
    };
    let redis_a_down = marks[1].1;
    let moved = first_after(redis_a_down, &|s| {
        s != "redis-a" && s != "near-cache" && s != "last-served"
    });
    let last_on_a = reads
        .iter()
        .filter(|(at, o, _)| {
            *at >= redis_a_down && *at < restored_at && o.as_deref() == Ok("redis-a")
        })
        .map(|(at, _, _)| *at - redis_a_down)
        .max();
    let back = first_after(restored_at, &|s| s == "redis-a");
    let ms = |d: Option<Duration>| {
        d.map(|d| format!("{} ms", d.as_millis()))
            .unwrap_or("none".into())
    };
    report.row(Row::new(
        "Redis A stopped: time until reads moved (first read from another backend / last read from Redis A)",
        format!("{} / {}", ms(moved), ms(last_on_a)),
    ));
    report.row(Row::new(
        "restored: time until reads were back on Redis A",
        ms(back),
    ));
    for name in ["redis-a", "mysql", "search-primary"] {
        report.row(Row::new(
            format!("restored: time until {name} caught up with the writes made during its outage"),
            caught_up
                .get(name)
                .map(|d| format!("{} ms", d.as_millis()))
                .unwrap_or("**not within 120 s**".into()),
        ));
    }
    report.row(Row::new(
        "search primary restart after its SIGKILL (start, yellow)",
        format!("{:.1} s", search_primary_restart.as_secs_f64()),
    ));
    report.row(Row::new(
        "broker restart (stop, start, answering)",
        format!("{:.1} s", broker_restart.as_secs_f64()),
    ));
    report.row(Row::new(
        "writes during the drill (registrations, 20/s)",
        format!(
            "{} acknowledged, {write_failures} failed",
            written.lock().expect("written").len()
        ),
    ));
    report.row(Row::new(
        "peak RSS of `member run` during the drill",
        format!("{rss:.0} MiB"),
    ));
    report.command(format!(
        "member-bench drill: 8 order-class readers (2 ms pause), 1 writer (20/s); phases of {phase} s: \
         healthy, Redis A cut (proxy {}), + search-primary node SIGKILLed ({}), + MariaDB cut (proxy {}), \
         + broker restart, then all restored",
        redis_a_proxy.addr(),
        search_primary.url(),
        mariadb_proxy.addr()
    ));
    Ok(())
}
