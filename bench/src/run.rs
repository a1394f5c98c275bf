//! `member-bench run`: the benchmarks in order over one isolated environment, then the dated
//! section in docs/benchmarks.md.
//!
//! commands (with `member run` up) -> query (same process) -> peak memory of that process ->
//! relay (`member serve relay` over the event store the commands filled) -> projectors (each
//! consumes the relay's topic into a fresh store) -> freshness (in-process app, its own
//! environment).

use std::time::Duration;

use anyhow::Context;

use crate::isolated::{Isolated, Overrides};
use crate::member_process::MemberProcess;
use crate::report::{Report, Row};
use crate::Common;

fn wanted(only: &str, name: &str) -> bool {
    only == "all" || only.split(',').any(|s| s.trim() == name)
}

pub async fn run(
    common: Common,
    only: &str,
    seconds: u64,
    concurrency: &[usize],
    kafka_cluster_script: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&common.work_dir)?;
    let mut report = Report::default();
    // Kept alive until the run is over; stopped on drop.
    let broker = match kafka_cluster_script {
        Some(script) => {
            let dir = std::fs::canonicalize(&common.work_dir)?.join(format!(
                "bench-broker-{}",
                chrono::Utc::now().format("%Y%m%d%H%M%S")
            ));
            let broker = crate::private_broker::PrivateBroker::start(script, &dir, 1, &[])?;
            report.command(broker.command_line());
            Some(broker)
        }
        None => None,
    };
    let overrides = Overrides {
        kafka_brokers: broker.as_ref().map(|b| b.brokers()),
        ..Overrides::default()
    };
    let outcome = measure(&common, only, seconds, concurrency, &overrides, &mut report).await;
    drop(broker);
    let title = format!("benchmark run (`BENCH={only}`, {seconds} s steps)");
    let outcome = report.conclude(&common, "run", &title, outcome);
    eprintln!("[bench] appended a section to {}", common.doc.display());
    outcome
}

async fn measure(
    common: &Common,
    only: &str,
    seconds: u64,
    concurrency: &[usize],
    overrides: &Overrides,
    report: &mut Report,
) -> anyhow::Result<()> {
    let member_bin = std::fs::canonicalize(&common.member_bin)
        .with_context(|| format!("{} (cargo build --release)", common.member_bin.display()))?;
    let me = std::env::current_exe()?;
    let env = Isolated::create(&common.work_dir, "run", overrides.clone()).await?;
    report.note(format!(
        "isolated environment `{}`: event store member_bench_{}, MariaDB member_b_{}_*, topic member.bench.{}, private Redis A/B on ports {}/{}",
        env.tag, env.tag, env.tag, env.tag, env.redis_a.port(), env.redis_b.port()
    ));
    let mut extra_pg = Vec::new();
    let mut extra_mysql = Vec::new();
    let result = async {
        let need_app = wanted(only, "commands")
            || wanted(only, "query")
            || wanted(only, "relay")
            || wanted(only, "projectors")
            || wanted(only, "memory");
        if need_app {
            let mut app = MemberProcess::spawn(
                &member_bin,
                &["run"],
                &env.member_env(),
                &env.dir.join("logs/member-run.log"),
            )?;
            report.command(app.command_line.clone());
            app.wait_healthy(&env.command_url("/healthz"), Duration::from_secs(60))
                .await?;
            app.wait_healthy(&env.query_url("/healthz"), Duration::from_secs(60))
                .await?;
            let pg = env.extra_pg_database("pgbench").await?;
            extra_pg.push(pg.clone());
            let pgbench = crate::commands::Pgbench::prepare(env.pg_url_of(&pg), &env.dir).await?;
            // The query, relay and projector benchmarks need the members the commands create.
            let concurrencies = if wanted(only, "commands") {
                concurrency.to_vec()
            } else {
                vec![16]
            };
            let secs = if wanted(only, "commands") {
                seconds
            } else {
                seconds.min(5)
            };
            let members = crate::commands::bench(
                report,
                &env,
                &pgbench,
                &concurrencies,
                secs,
            )
            .await?;
            let members = if wanted(only, "query") {
                crate::query::top_up(&env, members, crate::query::MEMBERS).await?
            } else {
                members
            };
            let rss_commands = app.peak_rss_mib()?;
            let mut rss_query = None;
            if wanted(only, "query") {
                let waited = wait_projected(&env, Duration::from_secs(300)).await?;
                report.note(format!(
                    "query: the relay and the six projectors caught up with the command benchmark's writes {:.1} s after it ended",
                    waited.as_secs_f64()
                ));
                let workload = crate::query::bench(report, &env, &members, &me, seconds).await?;
                rss_query = Some(app.peak_rss_mib()?);
                // The first ten seconds after a start, per case: the baseline server started
                // afresh, then `member run` restarted (Redis A stays warm; the process's own
                // caches start empty), wrk from the first answer of each.
                for case in crate::query::CASES {
                    let base = crate::query::baseline_after_start(
                        report, &env, &workload, &me, case, 10,
                    )
                    .await?;
                    app.stop().await?;
                    app = MemberProcess::spawn(
                        &member_bin,
                        &["run"],
                        &env.member_env(),
                        &env.dir.join("logs/member-run-restarted.log"),
                    )?;
                    app.wait_healthy(&env.query_url("/healthz"), Duration::from_secs(60))
                        .await?;
                    crate::query::after_start_row(report, &env, &workload, case, 10, &base)?;
                }
                crate::query::cold(report, &env, &workload).await?;
            }
            let rss = match rss_query {
                Some(rss) => rss,
                None => app.peak_rss_mib()?,
            };
            report.row(
                Row::new(
                    "peak RSS of `member run` (VmHWM)",
                    format!("{rss:.0} MiB (after commands: {rss_commands:.0} MiB)"),
                )
                .target("< 300 MB", rss * 1.048_576 < 300.0),
            );
            app.stop().await?;
            if wanted(only, "commands") {
                let db = env.extra_pg_database("alone").await?;
                extra_pg.push(db.clone());
                let listen = format!("127.0.0.1:{}", crate::private_redis::free_port()?);
                let mut envs = env.member_env();
                envs.push(("MEMBER__POSTGRES__URL".into(), env.pg_url_of(&db)));
                envs.push(("MEMBER__COMMAND_API__LISTEN".into(), listen.clone()));
                let mut alone = MemberProcess::spawn(
                    &member_bin,
                    &["serve", "command-api"],
                    &envs,
                    &env.dir.join("logs/command-api.log"),
                )?;
                report.command(alone.command_line.clone());
                alone
                    .wait_healthy(&format!("http://{listen}/healthz"), Duration::from_secs(60))
                    .await?;
                // Issue 24 asks for 16 and 64 clients.
                for (step, clients) in [16, 64].into_iter().enumerate() {
                    crate::commands::alone(
                        report,
                        &format!("http://{listen}"),
                        &env.dir,
                        &pgbench,
                        (clients, step),
                        seconds,
                    )
                    .await?;
                }
                alone.stop().await?;
            }
        }
        if wanted(only, "relay") || wanted(only, "projectors") {
            let (topic, events) = crate::relay::bench(report, &env, &member_bin).await?;
            if wanted(only, "projectors") {
                extra_mysql =
                    crate::projectors::bench(report, &env, &member_bin, &topic, events).await?;
            }
        }
        if wanted(only, "crypto") {
            crate::crypto::bench(report, &env.settings);
        }
        if wanted(only, "sinks") {
            crate::sinks::bench(report, &env, &mut extra_mysql).await?;
        }
        anyhow::Ok(())
    }
    .await;
    env.drop_databases(&extra_pg, &extra_mysql).await;
    result?;
    if wanted(only, "freshness") {
        let fresh = Isolated::create(&common.work_dir, "fresh", overrides.clone()).await?;
        let r = crate::freshness::bench(report, &fresh, seconds).await;
        fresh.drop_databases(&[], &[]).await;
        r?;
    }
    report.note("the rebuild of 1,000,000 members (`member seed --bulk`, `member rebuild --target all`) is timed by scripts/bench.sh when those subcommands exist; see its section if present");
    Ok(())
}

/// Waits until every projector of `member run` consumed the whole topic.
/// Waits until every event is published and every projector caught up; returns how long that took.
async fn wait_projected(env: &Isolated, timeout: Duration) -> anyhow::Result<Duration> {
    let deadline = tokio::time::Instant::now() + timeout;
    let pool = env.pg_pool().await?;
    let (events,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await?;
    let started = tokio::time::Instant::now();
    loop {
        let kafka = env.settings.kafka.clone();
        // A broker busy with the backlog the commands left may not answer metadata within its
        // timeout: that is "not yet", until the deadline.
        let published = tokio::task::spawn_blocking(move || crate::relay::topic_size(&kafka))
            .await?
            .unwrap_or(-1);
        let all = env.settings.clone();
        let behind: u64 = tokio::task::spawn_blocking(move || {
            member_projections::Target::ALL
                .into_iter()
                .map(|t| {
                    member_infra::kafka::lag::ConsumerGroupLag::records_behind(&all, t)
                        .unwrap_or(u64::MAX)
                })
                .fold(0u64, u64::saturating_add)
        })
        .await?;
        if behind == 0 && published >= events {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "projections still {behind} records behind, {published} of {events} events published"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
