//! The command path: bind commands per second and p50/p99 at several client concurrencies, against
//! plain single-row INSERT transactions on the same PostgreSQL (pgbench, same client counts).
//!
//! Each client registers a member with a mobile (`POST /v1/members`), then binds four more
//! identities to it (Tongcheng account, eLong account, eLong card, WeChat unionid): every request
//! is one command that binds an identity, checked against the aggregate and the uniqueness table.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use uuid::Uuid;

use crate::latency::Latency;
use crate::report::{rate, Report, Row};

/// A member the command benchmark registered, for the query benchmarks.
#[derive(Debug, Clone)]
pub struct Registered {
    pub card: String,
}

pub struct CommandRun {
    pub rate: f64,
    pub latency: Latency,
    pub errors: u64,
    pub first_error: Option<String>,
    pub members: Vec<Registered>,
}

/// Values unique within the run's fresh event store.
fn identities(n: u64) -> [(&'static str, String); 5] {
    [
        ("mobile", format!("139{:08}", n)),
        ("tongcheng_account", format!("tc_{n}")),
        ("elong_account", format!("el_{n}")),
        ("elong_card", format!("{:012}", n)),
        ("wechat_unionid", format!("oUnion_{:024}", n)),
    ]
}

pub async fn load(
    base_url: &str,
    concurrency: usize,
    duration: Duration,
    counter: Arc<AtomicU64>,
) -> anyhow::Result<CommandRun> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, base, counter) = (client.clone(), base_url.to_owned(), counter.clone());
        tasks.push(tokio::spawn(async move {
            worker(client, base, counter, deadline).await
        }));
    }
    let mut run = CommandRun {
        rate: 0.0,
        latency: Latency::default(),
        errors: 0,
        first_error: None,
        members: Vec::new(),
    };
    for t in tasks {
        let w = t.await?;
        run.latency.add(&w.latency);
        run.errors += w.errors;
        run.first_error = run.first_error.or(w.first_error);
        run.members.extend(w.members);
    }
    run.rate = run.latency.count() as f64 / started.elapsed().as_secs_f64();
    Ok(run)
}

async fn worker(
    client: reqwest::Client,
    base: String,
    counter: Arc<AtomicU64>,
    deadline: Instant,
) -> CommandRun {
    let mut w = CommandRun {
        rate: 0.0,
        latency: Latency::default(),
        errors: 0,
        first_error: None,
        members: Vec::new(),
    };
    while Instant::now() < deadline {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let ids = identities(n);
        let t = Instant::now();
        let created = client
            .post(format!("{base}/v1/members"))
            .json(&json!({"identities": [{"kind": ids[0].0, "value": ids[0].1}]}))
            .send()
            .await;
        let member_id = match created {
            Ok(r) if r.status().as_u16() == 201 => {
                w.latency.record(t.elapsed());
                r.json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| v["member_id"].as_str().and_then(|s| s.parse::<Uuid>().ok()))
            }
            Ok(r) => {
                w.fail(format!("register: {}", r.status()));
                None
            }
            Err(e) => {
                w.fail(format!("register: {e}"));
                None
            }
        };
        let Some(member_id) = member_id else { continue };
        let mut bound_card = false;
        for (kind, value) in &ids[1..] {
            if Instant::now() >= deadline {
                break;
            }
            let t = Instant::now();
            let r = client
                .post(format!("{base}/v1/members/{member_id}/identities"))
                .json(&json!({"kind": kind, "value": value}))
                .send()
                .await;
            match r {
                Ok(r) if r.status().is_success() => {
                    w.latency.record(t.elapsed());
                    bound_card |= *kind == "elong_card";
                }
                Ok(r) => w.fail(format!("bind {kind}: {}", r.status())),
                Err(e) => w.fail(format!("bind {kind}: {e}")),
            }
        }
        if bound_card {
            w.members.push(Registered {
                card: ids[3].1.clone(),
            });
        }
    }
    w
}

impl CommandRun {
    fn fail(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }
}

/// pgbench with one single-row INSERT per transaction into a fresh database.
pub struct Pgbench {
    pub url_db: String,
    script: std::path::PathBuf,
}

impl Pgbench {
    pub async fn prepare(url_db: String, work_dir: &Path) -> anyhow::Result<Self> {
        let mut conn: sqlx::PgConnection = sqlx::Connection::connect(&url_db).await?;
        sqlx::query(
            "CREATE TABLE bench_insert (id bigserial PRIMARY KEY, member_id uuid NOT NULL, \
             kind text NOT NULL, value text NOT NULL, at timestamptz NOT NULL DEFAULT now())",
        )
        .execute(&mut conn)
        .await
        .context("creating the pgbench table")?;
        let script = work_dir.join("pgbench-insert.sql");
        std::fs::write(
            &script,
            "\\set v random(1, 1000000000)\n\
             INSERT INTO bench_insert (member_id, kind, value) VALUES (gen_random_uuid(), 'elong_card', :v);\n",
        )?;
        Ok(Self { url_db, script })
    }

    /// Runs pgbench with `clients` clients; returns (tps, the command line).
    pub fn run(&self, clients: usize, seconds: u64) -> anyhow::Result<(f64, String)> {
        let args = [
            "-n".to_owned(),
            "-c".to_owned(),
            clients.to_string(),
            "-j".to_owned(),
            clients.min(2).to_string(),
            "-T".to_owned(),
            seconds.to_string(),
            "-f".to_owned(),
            self.script.display().to_string(),
            self.url_db.clone(),
        ];
        let line = format!("pgbench {}", args.join(" "));
        let out = std::process::Command::new("pgbench")
            .args(&args)
            .output()
            .context("running pgbench (postgresql client tools)")?;
        let text = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(
            out.status.success(),
            "pgbench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tps = text
            .lines()
            .find(|l| l.starts_with("tps = "))
            .and_then(|l| l["tps = ".len()..].split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("no tps in pgbench output: {text}"))?;
        Ok((tps, line))
    }
}

/// Runs the command benchmark at each concurrency and adds its rows.
pub async fn bench(
    report: &mut Report,
    command_api: &str,
    pgbench: &Pgbench,
    concurrencies: &[usize],
    seconds: u64,
) -> anyhow::Result<Vec<Registered>> {
    let counter = Arc::new(AtomicU64::new(1));
    let mut members = Vec::new();
    for &c in concurrencies {
        let (baseline, line) = pgbench.run(c, seconds)?;
        report.command(line);
        let run = load(
            command_api,
            c,
            Duration::from_secs(seconds),
            counter.clone(),
        )
        .await?;
        let ratio = run.rate / baseline;
        let mut row = Row::new(
            format!("bind commands, {c} clients"),
            format!("{}, {}", rate(run.rate), run.latency.summary()),
        )
        .baseline(format!("{} INSERT tx (pgbench)", rate(baseline)), ratio);
        if c == 16 {
            let pass = ratio >= 1.0 / 3.0 && run.latency.ms(0.99) < 25.0 && run.errors == 0;
            row = row.target(">= 1/3 of baseline, p99 < 25 ms", pass);
        }
        report.row(row);
        if run.errors > 0 {
            report.note(format!(
                "bind commands at {c} clients: {} failed requests (first: {})",
                run.errors,
                run.first_error.as_deref().unwrap_or("?")
            ));
        }
        members.extend(run.members);
    }
    report.command(format!(
        "member-bench command load: {concurrencies:?} clients x {seconds} s each, \
         POST /v1/members + 4 x POST /v1/members/{{id}}/identities per client loop"
    ));
    Ok(members)
}

/// The command path without the rest of the pipeline: `member serve command-api` alone over its
/// own fresh event store (no relay, broker traffic or projectors competing for the 2 cores).
pub async fn alone(
    report: &mut Report,
    command_api: &str,
    pgbench: &Pgbench,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<()> {
    let (baseline, line) = pgbench.run(clients, seconds)?;
    report.command(line);
    let counter = Arc::new(AtomicU64::new(1));
    let run = load(command_api, clients, Duration::from_secs(seconds), counter).await?;
    let ratio = run.rate / baseline;
    report.row(
        Row::new(
            format!("bind commands, {clients} clients, command API alone (no relay/projectors)"),
            format!("{}, {}", rate(run.rate), run.latency.summary()),
        )
        .baseline(format!("{} INSERT tx (pgbench)", rate(baseline)), ratio)
        .target(
            ">= 1/3 of baseline, p99 < 25 ms",
            ratio >= 1.0 / 3.0 && run.latency.ms(0.99) < 25.0 && run.errors == 0,
        ),
    );
    if run.errors > 0 {
        report.note(format!(
            "command API alone: {} failed requests (first: {})",
            run.errors,
            run.first_error.as_deref().unwrap_or("?")
        ));
    }
    Ok(())
}
