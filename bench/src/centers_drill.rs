//! `member-bench drill-centers`: the loss of center A (issue 22, docs/operations/centers.md).
//!
//! The two-center topology on this machine:
//! - the event store: scripts/pg-ha.sh (Patroni + etcd + HAProxy, A, B and the witness each in a
//!   network namespace; A leads, B is the synchronous standby);
//! - Kafka: three private brokers (scripts/kafka-cluster.sh), rack `a`, `b` and `w`, the topic
//!   with replication factor 3 and `min.insync.replicas` 2, the relay producing with `acks=all`;
//! - each center: its own `member run` (command API, query API, relay, its own projectors) on the
//!   center's loopback address (A 127.0.10.1, B 127.0.20.1), its own Redis (append-only file,
//!   fsync always), its own embedded search clusters (tantivy, in the process), and its own MySQL
//!   server (a private MariaDB on the center's address, its own consumer group, ADR 0039). A
//!   center's `member run`, its Redis and its MariaDB are one process group.
//!
//! Under order-class reads on B's query API and writes through B's command API (B's command API
//! reaches the event store through B's HAProxy), all of A is SIGKILLed: its PostgreSQL, Patroni,
//! etcd and HAProxy (`pg-ha.sh kill-center`), its broker, its process group. The load goes on;
//! A is brought back (PostgreSQL as B's replica), and the drill waits until A's projections have
//! caught up and A's query API answers from redis-a again. Then every acknowledged write is
//! looked for in the event store and, through each center's query API pinned to each of its
//! backends, in every store. The last line of the output is a JSON object with the figures; the
//! same figures go into a dated section of docs/benchmarks.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use member_infra::config::Settings;
use member_projections::Target;
use serde_json::json;

use crate::private_broker::PrivateBroker;
use crate::private_redis::free_port;
use crate::register::{register_card, Acked};
use crate::report::{Report, Row};
use crate::Common;

const WRITERS: usize = 4;
const READERS: usize = 4;
const SEEDED: usize = 200;
/// Center A's broker (node 1 of the private cluster, rack `a`).
const BROKER_A: usize = 1;

const A_TARGETS: [Target; 4] = [
    Target::RedisA,
    Target::SearchPrimary,
    Target::SearchMarketing,
    Target::Mysql,
];
const B_TARGETS: [Target; 3] = [Target::RedisB, Target::SearchBackup, Target::Mysql];

pub struct Scripts {
    pub pg_ha: PathBuf,
    pub kafka_cluster: PathBuf,
}

pub async fn run(common: Common, scripts: Scripts, phase: u64) -> anyhow::Result<()> {
    std::fs::create_dir_all(&common.work_dir)?;
    let mut report = Report::default();
    let outcome = drill(&common, &scripts, phase, &mut report).await;
    let title = format!("center-loss drill (two centers and a witness, {phase} s phases)");
    let figures = report.figures.take();
    let result = report.conclude(&common, "drill", &title, outcome);
    if let Some(figures) = figures {
        println!("{figures}");
    }
    result
}

/// One center's processes: `member run`, the center's Redis and its MySQL server (MariaDB), in
/// one process group.
struct Center {
    name: &'static str,
    dir: PathBuf,
    config: PathBuf,
    settings: Settings,
    redis_port: u16,
    mysql_port: u16,
    member: Option<Child>,
    redis: Option<Child>,
    mysql: Option<Child>,
    /// The process group: Redis's pid.
    pgid: Option<i32>,
    starts: usize,
}

impl Center {
    fn addr(name: &str) -> &'static str {
        if name == "a" {
            "127.0.10.1"
        } else {
            "127.0.20.1"
        }
    }

    fn command_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.settings.command_api.listen)
    }

    fn query_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.settings.query_api.listen)
    }

    /// Starts the center's Redis and `member run`, one process group (Redis leads it).
    async fn start(&mut self, member_bin: &Path) -> anyhow::Result<()> {
        self.starts += 1;
        let log = |name: &str| -> anyhow::Result<std::fs::File> {
            Ok(std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(format!("{name}.log")))?)
        };
        let redis_dir = self.dir.join("redis");
        std::fs::create_dir_all(&redis_dir)?;
        let redis = Command::new("redis-server")
            .args(["--port", &self.redis_port.to_string()])
            .args(["--bind", Self::addr(self.name)])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&redis_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log("redis")?))
            .stderr(Stdio::from(log("redis")?))
            .process_group(0)
            .spawn()
            .context("starting redis-server")?;
        let pgid = redis.id() as i32;
        self.pgid = Some(pgid);
        self.redis = Some(redis);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect((Self::addr(self.name), self.redis_port)).is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "center {}'s redis did not start",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.mysql = Some(self.start_mysql(pgid).await?);
        let member = Command::new(member_bin)
            .arg("run")
            .env("MEMBER_CONFIG", &self.config)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(log("member")?))
            .stderr(Stdio::from(log("member")?))
            .process_group(pgid)
            .spawn()
            .with_context(|| format!("starting {}", member_bin.display()))?;
        self.member = Some(member);
        self.wait_healthy(Duration::from_secs(120)).await
    }

    /// The center's own MariaDB server (its data under the center's directory, kept across a
    /// kill like a real server's disk), in the center's process group: losing the center loses
    /// its MySQL projection too, and B's never depended on it. Grant tables are skipped: the
    /// server listens on the center's loopback address only, for this drill.
    async fn start_mysql(&self, pgid: i32) -> anyhow::Result<Child> {
        let data = self.dir.join("mysql");
        let log = self.dir.join("mysql.log");
        if !data.join("mysql").exists() {
            std::fs::create_dir_all(&data)?;
            let chown = Command::new("chown")
                .args(["-R", "mysql:mysql"])
                .arg(&data)
                .status()?;
            anyhow::ensure!(chown.success(), "chown of {}", data.display());
            let installed = Command::new("mariadb-install-db")
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .args([
                    "--user=mysql",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::from(std::fs::File::create(&log)?))
                .stderr(Stdio::null())
                .status()
                .context("mariadb-install-db (make stack-up installs MariaDB)")?;
            anyhow::ensure!(
                installed.success(),
                "mariadb-install-db for center {} failed; see {}",
                self.name,
                log.display()
            );
        }
        let mysql = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={}", self.mysql_port))
            .arg(format!("--bind-address={}", Self::addr(self.name)))
            .arg(format!("--socket={}", data.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", data.join("mysqld.pid").display()))
            .arg(format!("--log-error={}", log.display()))
            .args([
                "--user=mysql",
                "--skip-grant-tables",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=64M",
                "--max-connections=64",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(pgid)
            .spawn()
            .context("starting mariadbd")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect((Self::addr(self.name), self.mysql_port)).is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "center {}'s mariadbd did not start; see {}",
                self.name,
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(mysql)
    }

    async fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(member) = &mut self.member {
                if let Some(status) = member.try_wait()? {
                    anyhow::bail!(
                        "center {}'s member exited early ({status}); see {}",
                        self.name,
                        self.dir.join("member.log").display()
                    );
                }
            }
            let mut up = true;
            for url in [self.command_url("/readyz"), self.query_url("/readyz")] {
                up &= client
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
            }
            if up {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "center {} did not become ready",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGKILL of the whole process group (the center's member processes, Redis and MariaDB).
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .status();
        }
        for child in [self.member.take(), self.redis.take(), self.mysql.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            let _ = child.wait();
        }
    }

    /// SIGTERM to the member (a graceful stop), then the group.
    async fn stop(&mut self) {
        if let Some(member) = &mut self.member {
            let _ = Command::new("kill")
                .args(["-TERM", &member.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while matches!(member.try_wait(), Ok(None)) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        self.kill();
    }
}

impl Drop for Center {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The private HA event store (scripts/pg-ha.sh), torn down on drop.
struct PgHa {
    script: PathBuf,
    dir: PathBuf,
    up: bool,
}

impl PgHa {
    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("bash")
            .arg(&self.script)
            .args(args)
            .output()
            .with_context(|| format!("running {}", self.script.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "pg-ha.sh {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn dir(&self) -> String {
        self.dir.display().to_string()
    }

    async fn run_async(&self, args: Vec<String>) -> anyhow::Result<String> {
        let me = PgHa {
            script: self.script.clone(),
            dir: self.dir.clone(),
            up: false,
        };
        tokio::task::spawn_blocking(move || {
            me.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .await?
    }
}

impl Drop for PgHa {
    fn drop(&mut self) {
        if self.up {
            let _ = self.run(&["down", &self.dir()]);
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[derive(Default)]
struct Load {
    acked: Mutex<Vec<(Duration, Acked)>>,
    failed_writes: AtomicU64,
    order_reads: AtomicU64,
    failed_reads: Mutex<Vec<(Duration, String)>>,
}

async fn drill(
    common: &Common,
    scripts: &Scripts,
    phase: u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let member_bin = std::fs::canonicalize(&common.member_bin)
        .with_context(|| format!("{} (cargo build --release)", common.member_bin.display()))?;
    let tag = chrono::Utc::now().format("%Y%m%d%H%M%S").to_string();
    let dir = std::fs::canonicalize(&common.work_dir)?.join(format!("centers-drill-{tag}"));
    std::fs::create_dir_all(&dir)?;
    let started = Instant::now();

    // The event store: A leads, B is its synchronous standby.
    let pg = PgHa {
        script: scripts.pg_ha.clone(),
        dir: dir.join("pg-ha"),
        up: true,
    };
    report.command(format!(
        "make drill-centers   # scripts/drill-centers.sh, DRILL_PHASE_SECONDS={phase}, run at nice {}",
        niceness().map_or_else(|| "?".into(), |n| n.to_string())
    ));
    pg.run(&["up", &pg.dir(), "25600"])?;
    report.command(format!(
        "bash {} up {} 25600",
        pg.script.display(),
        pg.dir()
    ));
    let pg_url = |c: &str| pg.run(&["url", &pg.dir(), c]);
    let (url_a, url_b) = (pg_url("a")?, pg_url("b")?);
    // Kafka: a broker per site.
    let cluster = PrivateBroker::start(
        &scripts.kafka_cluster,
        &dir.join("kafka"),
        3,
        &["a", "b", "w"],
    )?;
    report.command(format!("{} a b w", cluster.command_line()));
    eprintln!(
        "[drill-centers] event store and brokers up in {:.0} s",
        started.elapsed().as_secs_f64()
    );

    let redis_ports = (free_port()?, free_port()?);
    let mut a = center("a", &dir, &tag, &url_a, &cluster.brokers(), redis_ports)?;
    let mut b = center("b", &dir, &tag, &url_b, &cluster.brokers(), redis_ports)?;
    let result = drill_in(&mut a, &mut b, &member_bin, &pg, &cluster, phase, report).await;
    a.stop().await;
    b.stop().await;
    drop(cluster);
    drop(pg);
    // The logs stay when a goal was missed (docs/benchmarks.md names the directory).
    let met = report
        .figures
        .as_deref()
        .and_then(|f| serde_json::from_str::<serde_json::Value>(f).ok())
        .is_some_and(|f| {
            f["failed_order_reads"] == 0
                && f["lost_acknowledged_writes"] == 0
                && f["write_unavailable_ms"]
                    .as_u64()
                    .is_some_and(|ms| ms <= 30_000)
                && f["center_a_caught_up"] == true
        });
    if result.is_ok() && met {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        report.note(format!("logs kept in {}", dir.display()));
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn center(
    name: &'static str,
    dir: &Path,
    tag: &str,
    pg_url: &str,
    brokers: &str,
    (redis_a, redis_b): (u16, u16),
) -> anyhow::Result<Center> {
    let cdir = dir.join(format!("center-{name}"));
    std::fs::create_dir_all(&cdir)?;
    let addr = Center::addr(name);
    let (command, query, mysql_port) = (free_port()?, free_port()?, free_port()?);
    let databases: Vec<String> = (0..4)
        .map(|i| format!("member_{name}_{tag}_db_{i}"))
        .collect();
    let (projectors, reads): (Vec<&str>, Vec<&str>) = if name == "a" {
        (
            A_TARGETS.iter().map(|t| t.as_str()).collect(),
            vec![
                "redis-a",
                "redis-b",
                "search-primary",
                "search-marketing",
                "mysql",
            ],
        )
    } else {
        (
            B_TARGETS.iter().map(|t| t.as_str()).collect(),
            vec!["redis-b", "redis-a", "search-backup", "mysql"],
        )
    };
    let mut toml = String::new();
    writeln!(
        toml,
        "data_dir = {:?}",
        cdir.join("data").display().to_string()
    )?;
    writeln!(toml, "[postgres]\nurl = {pg_url:?}\nmax_connections = 16")?;
    writeln!(
        toml,
        "[mysql]\nurl = \"mysql://member:member@{addr}:{mysql_port}\"\n\
         databases = {databases:?}\nmax_connections = 4"
    )?;
    writeln!(
        toml,
        "[redis.a]\nurl = \"redis://{}:{redis_a}\"",
        Center::addr("a")
    )?;
    writeln!(
        toml,
        "[redis.b]\nurl = \"redis://{}:{redis_b}\"",
        Center::addr("b")
    )?;
    writeln!(
        toml,
        "[kafka]\nbrokers = {brokers:?}\ntopic = \"member.centers.{tag}\"\n\
         replication_factor = 3\nmin_insync_replicas = 2\nidempotent_producer = true"
    )?;
    writeln!(toml, "[search]\nengine = \"tantivy\"")?;
    writeln!(
        toml,
        "[center]\nname = {name:?}\nprojectors = {projectors:?}\nreads = {reads:?}"
    )?;
    writeln!(
        toml,
        "[command_api]\nlisten = \"{addr}:{command}\"\n\
         write_rate_per_second = 10000000\nwrite_burst = 10000000\nappend_writers = 4"
    )?;
    writeln!(toml, "[query_api]\nlisten = \"{addr}:{query}\"")?;
    writeln!(
        toml,
        "[telemetry]\nrelay_listen = \"{addr}:0\"\nprojector_listen = \"{addr}:0\""
    )?;
    writeln!(
        toml,
        "[query_api.flow]\nglobal_rate_per_second = 10000000\nglobal_burst = 10000000"
    )?;
    for (cname, key, scopes, class) in [
        ("drill-writer", "local-writer-key", "[\"write\"]", None),
        (
            "drill-order",
            "local-order-key",
            "[\"read\"]",
            Some("order"),
        ),
        ("drill-admin", "local-admin-key", "[\"admin\"]", None),
    ] {
        writeln!(
            toml,
            "[[callers]]\nname = {cname:?}\nkey = {key:?}\nscopes = {scopes}\n\
             rate_per_second = 10000000\nburst = 10000000\n\
             write_rate_per_second = 10000000\nwrite_burst = 10000000"
        )?;
        if let Some(class) = class {
            writeln!(toml, "class = {class:?}")?;
        }
    }
    let config = cdir.join("member.toml");
    std::fs::write(&config, toml)?;
    let settings = Settings::load_from(
        Some(config.to_str().context("utf-8 path")?),
        std::iter::empty::<(String, String)>(),
    )
    .with_context(|| format!("loading center {name}'s configuration"))?;
    Ok(Center {
        name,
        dir: cdir,
        config,
        settings,
        redis_port: if name == "a" { redis_a } else { redis_b },
        mysql_port,
        member: None,
        redis: None,
        mysql: None,
        pgid: None,
        starts: 0,
    })
}

#[allow(clippy::too_many_arguments)]
async fn drill_in(
    a: &mut Center,
    b: &mut Center,
    member_bin: &Path,
    pg: &PgHa,
    cluster: &PrivateBroker,
    phase: u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    // B first: it creates the topic with the replication asked for; A's relay waits for the lease.
    b.start(member_bin).await?;
    a.start(member_bin).await?;
    report.command(format!(
        "MEMBER_CONFIG=<center>/member.toml {} run   # one per center (A: {}, B: {}), with the center's Redis and MariaDB in its process group",
        member_bin.display(),
        Center::addr("a"),
        Center::addr("b")
    ));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;

    // Members for the readers, registered before the load and readable on B.
    let mut seeded = Vec::new();
    for i in 0..SEEDED {
        let card = format!("{:012}", 500_000_000_000u64 + i as u64);
        let acked = write_until_acked(&client, &b.command_url("/v1/members"), &card, None).await?;
        seeded.push((acked.member_id, card));
    }
    for (id, _) in &seeded {
        let url = b.query_url(&format!("/v1/members/{id}"));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !get(&client, &url).await.is_ok_and(|(s, _)| s == 200) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "seeded members not readable on B"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let seeded = Arc::new(seeded);

    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let load = Arc::new(Load::default());
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (client, stop, load) = (client.clone(), stop.clone(), load.clone());
        let url = b.command_url("/v1/members");
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let card = format!("{:012}", 600_000_000_000u64 + n * WRITERS as u64 + w as u64);
                if let Ok(acked) =
                    write_until_acked(&client, &url, &card, Some((&stop, &load))).await
                {
                    load.acked
                        .lock()
                        .expect("acked")
                        .push((start.elapsed(), acked));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    for r in 0..READERS {
        let (client, stop, load, seeded) =
            (client.clone(), stop.clone(), load.clone(), seeded.clone());
        let base = b.query_url("");
        tasks.push(tokio::spawn(async move {
            let mut n = r;
            while !stop.load(Ordering::SeqCst) {
                n += READERS;
                let (id, card) = &seeded[n % seeded.len()];
                let url = if n % 2 == 0 {
                    format!("{base}/v1/members/{id}")
                } else {
                    format!("{base}/v1/members?kind=elong_card&value={card}")
                };
                load.order_reads.fetch_add(1, Ordering::SeqCst);
                match get(&client, &url).await {
                    Ok((200, _)) => {}
                    Ok((status, _)) => load
                        .failed_reads
                        .lock()
                        .expect("reads")
                        .push((start.elapsed(), format!("status {status}"))),
                    Err(e) => load
                        .failed_reads
                        .lock()
                        .expect("reads")
                        .push((start.elapsed(), format!("{e:#}"))),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }

    let mut marks = vec![("load started", Duration::ZERO)];
    tokio::time::sleep(Duration::from_secs(phase)).await;

    // Center A is lost: every process of it, at once.
    marks.push(("center A killed (SIGKILL)", start.elapsed()));
    let leader_before = pg.run(&["leader", &pg.dir()]).unwrap_or_default();
    let kill_pg = pg.run_async(vec!["kill-center".into(), pg.dir(), "a".into()]);
    let kill_broker = cluster.stop_node(BROKER_A, true);
    a.kill();
    let (k1, k2) = tokio::join!(kill_pg, kill_broker);
    k1?;
    k2?;
    marks.push(("center A dead", start.elapsed()));
    let kill_at = start.elapsed();
    // B takes over; the load goes on with A gone for two phases.
    let leader_wait = Instant::now();
    let mut promoted_after = None;
    while leader_wait.elapsed() < Duration::from_secs(2 * phase).max(Duration::from_secs(30)) {
        if pg.run(&["leader", &pg.dir()]).is_ok_and(|l| l == "b") {
            promoted_after = Some(start.elapsed() - kill_at);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    marks.push(("B leads the event store", start.elapsed()));
    let remaining = Duration::from_secs(2 * phase).saturating_sub(start.elapsed() - kill_at);
    tokio::time::sleep(remaining).await;

    // A comes back: its event-store node as B's replica, its broker, its processes.
    marks.push(("center A restarting", start.elapsed()));
    pg.run_async(vec!["start-center".into(), pg.dir(), "a".into()])
        .await?;
    cluster.start_node(BROKER_A).await?;
    a.start(member_bin).await?;
    marks.push(("center A's processes answering", start.elapsed()));
    let back_at = start.elapsed();

    // Caught up: A's projections have every record of the topic, and A's query API answers a
    // member written while A was gone from A's own Redis.
    let recent = load
        .acked
        .lock()
        .expect("acked")
        .iter()
        .rev()
        .find(|(at, _)| *at > kill_at)
        .map(|(_, w)| w.member_id.clone());
    let caught_up =
        wait_center_caught_up(a, &client, recent.as_deref(), Duration::from_secs(240)).await?;
    let catch_up = caught_up.map(|()| start.elapsed() - back_at);
    marks.push(("center A caught up, reads local", start.elapsed()));
    tokio::time::sleep(Duration::from_secs(phase)).await;
    let load_end = start.elapsed();
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await?;
    }

    // The figures.
    let acked: Vec<(Duration, Acked)> = std::mem::take(&mut *load.acked.lock().expect("acked"));
    let failed_reads = std::mem::take(&mut *load.failed_reads.lock().expect("reads"));
    let order_reads = load.order_reads.load(Ordering::SeqCst);
    let failed_writes = load.failed_writes.load(Ordering::SeqCst);
    // The longest time without an acknowledged write, during the load.
    let mut times: Vec<Duration> = acked.iter().map(|(t, _)| *t).collect();
    times.sort();
    let mut write_gap = Duration::ZERO;
    let mut prev = Duration::ZERO;
    for t in times.iter().chain(std::iter::once(&load_end)) {
        write_gap = write_gap.max(t.saturating_sub(prev));
        prev = *t;
    }

    // Every acknowledged write: in the event store (through B's endpoint, which follows the
    // leader), then in every store of both centers.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(b.settings.postgres.url.expose_secret())
        .await
        .context("connecting to the event store through B's endpoint")?;
    let versions: BTreeMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT aggregate_id, max(sequence) FROM events GROUP BY aggregate_id",
    )
    .fetch_all(&pool)
    .await?
    .into_iter()
    .collect();
    pool.close().await;
    // "Afterwards": once every projection of both centers has every event of the store.
    let events_stored: i64 = versions.values().sum();
    let mut settled_after = None;
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(120) {
        let (sa, sb) = (a.settings.clone(), b.settings.clone());
        let all = tokio::task::spawn_blocking(move || {
            let end = crate::kafka_drill::topic_end(&sa).unwrap_or(0);
            end >= events_stored as u64
                && [&sa, &sb].iter().all(|s| {
                    s.center
                        .projector_targets()
                        .iter()
                        .all(|t| crate::kafka_drill::committed(s, *t).is_ok_and(|c| c >= end))
                })
        })
        .await?;
        if all {
            settled_after = Some(settle.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    report.note(match settled_after {
        Some(d) => format!(
            "every projection of both centers had all {events_stored} events {} ms after the load stopped",
            d.as_millis()
        ),
        None => "**the projections did not all catch up within 120 s after the load**".into(),
    });
    let mut lost: BTreeMap<String, ()> = BTreeMap::new();
    let mut lost_in_store = 0;
    for (_, w) in &acked {
        if versions.get(&w.member_id).is_none_or(|v| *v < w.version) {
            lost_in_store += 1;
            lost.insert(w.member_id.clone(), ());
        }
    }
    let writes: Vec<Acked> = acked.iter().map(|(_, w)| w.clone()).collect();
    let mut missing_per_store = BTreeMap::new();
    for (center, targets) in [(&*a, &A_TARGETS[..]), (&*b, &B_TARGETS[..])] {
        for target in targets {
            if *target == Target::SearchMarketing {
                // Marketing reads are not order reads; A's marketing cluster is checked through
                // `member verify` below when it matters. Order-class pins cannot reach it.
                continue;
            }
            let missing = missing_from(center, *target, &writes, &client).await?;
            for m in &missing {
                lost.insert(m.clone(), ());
            }
            missing_per_store.insert(
                format!("{} ({})", target.as_str(), center.name),
                missing.len(),
            );
        }
    }
    // The topic as the brokers hold it: replicas and in-sync replicas of each partition.
    let sb = b.settings.clone();
    let replication = tokio::task::spawn_blocking(move || topic_replication(&sb))
        .await?
        .unwrap_or_else(|e| format!("unknown ({e:#})"));
    report.row(Row::new(
        "the topic afterwards: replicas / in-sync replicas per partition (min.insync.replicas 2, acks=all)",
        replication,
    ));
    let leader_after = pg.run(&["leader", &pg.dir()]).unwrap_or_default();
    let role_a = pg.run(&["role", &pg.dir(), "a"]).unwrap_or_default();
    let a_restarts = a.starts - 1;

    let figures = json!({
        "failed_order_reads": failed_reads.len(),
        "lost_acknowledged_writes": lost.len(),
        "write_unavailable_ms": write_gap.as_millis() as u64,
        "center_a_caught_up": caught_up.is_some(),
        "center_a_catch_up_ms": catch_up.map(|d| d.as_millis() as u64),
        "order_reads": order_reads,
        "acknowledged_writes": acked.len(),
        "failed_write_attempts": failed_writes,
        "event_store_promotion_ms": promoted_after.map(|d| d.as_millis() as u64),
        "event_store_leader_before": leader_before,
        "event_store_leader_after": leader_after,
        "center_a_node_role_after": role_a,
        "center_a_restarts": a_restarts,
        "phase_seconds": phase,
    });

    report.row(
        Row::new(
            "order-class reads on B's query API that failed (any status but 200, or no answer)",
            format!("{} of {order_reads}", failed_reads.len()),
        )
        .target("0", failed_reads.is_empty()),
    );
    if let Some((at, e)) = failed_reads.first() {
        report.note(format!(
            "first failed read at {:.1} s: {e}",
            at.as_secs_f64()
        ));
    }
    report.row(
        Row::new(
            "acknowledged writes lost (missing from the event store or from any store afterwards)",
            format!(
                "{} of {} ({} missing from the event store; per store: {:?})",
                lost.len(),
                acked.len(),
                lost_in_store,
                missing_per_store
            ),
        )
        .target("0", lost.is_empty()),
    );
    report.row(
        Row::new(
            "writes through B's command API: longest time without an acknowledged write",
            format!(
                "{} ms ({failed_write_attempts} attempts answered 503 or not at all, retried with their Idempotency-Key)",
                write_gap.as_millis(),
                failed_write_attempts = failed_writes
            ),
        )
        .target("at most 30000 ms", write_gap <= Duration::from_secs(30)),
    );
    report.row(
        Row::new(
            "center A back: its projections caught up and its reads local (redis-a) again",
            match catch_up {
                Some(d) => format!("yes, {} ms after its processes answered", d.as_millis()),
                None => "**no, not within 240 s**".into(),
            },
        )
        .target("yes", caught_up.is_some()),
    );
    report.row(Row::new(
        "event store: B promoted after A was killed",
        promoted_after
            .map(|d| format!("{} ms", d.as_millis()))
            .unwrap_or_else(|| "**not promoted**".into()),
    ));
    report.row(Row::new(
        "event store afterwards: leader / A's node",
        format!("{leader_after} / {role_a} (before: leader {leader_before})"),
    ));
    for (name, at) in &marks {
        report.note(format!("`{name}` at {:.1} s", at.as_secs_f64()));
    }
    report.note(format!("load stopped at {:.1} s", load_end.as_secs_f64()));
    report.note(
        "not checked: search-marketing (not on the order path; A's marketing projection resumes \
         from its group's offsets like the others)",
    );
    report.note(
        "simulation: the event store's three sites are network namespaces (pg-ha.sh); each \
         center's `member run`, Redis and MariaDB are one process group on the center's loopback \
         address (A 127.0.10.1, B 127.0.20.1), killed together, its search clusters embedded \
         (tantivy); the brokers are three processes on 127.0.0.1 (rack a, b, w)",
    );
    report.command(format!(
        "member-bench drill-centers: {WRITERS} writers registering members through B's command \
         API (10 ms pause, each write retried with its Idempotency-Key until acknowledged), \
         {READERS} order-class readers on B's query API ({SEEDED} members, by id and by \
         elong_card, 5 ms pause); phases of {phase} s: healthy, A killed (2 phases), A restarted \
         and caught up, 1 phase"
    ));
    report.note(format!("figures: `{figures}`"));
    report.figures = Some(figures.to_string());
    Ok(())
}

async fn get(client: &reqwest::Client, url: &str) -> anyhow::Result<(u16, Option<String>)> {
    let r = client
        .get(url)
        .bearer_auth("local-order-key")
        .send()
        .await?;
    let from = r
        .headers()
        .get("x-served-from")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((r.status().as_u16(), from))
}

/// Registers a member with an elong card, retrying with the same Idempotency-Key until the
/// command API acknowledges it (or the load stops).
async fn write_until_acked(
    client: &reqwest::Client,
    url: &str,
    card: &str,
    load: Option<(&AtomicBool, &Load)>,
) -> anyhow::Result<Acked> {
    let key = format!("drill-centers-{card}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match register_card(client, url, card, Some(&key)).await {
            Ok(acked) => return Ok(acked),
            Err(e) => {
                if let Some((stop, load)) = load {
                    load.failed_writes.fetch_add(1, Ordering::SeqCst);
                    if stop.load(Ordering::SeqCst) {
                        return Err(e);
                    }
                }
                anyhow::ensure!(Instant::now() < deadline, "write not acknowledged: {e:#}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Waits until every projector group of the center has committed the topic's end and the
/// center's query API answers `member` from its own Redis.
async fn wait_center_caught_up(
    center: &Center,
    client: &reqwest::Client,
    member: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<Option<()>> {
    let deadline = Instant::now() + timeout;
    let settings = center.settings.clone();
    let local = match center.name {
        "a" => Target::RedisA,
        _ => Target::RedisB,
    };
    let targets: Vec<Target> = settings.center.projector_targets();
    while Instant::now() < deadline {
        let s = settings.clone();
        let t = targets.clone();
        let projected = tokio::task::spawn_blocking(move || {
            let end = crate::kafka_drill::topic_end(&s)?;
            Ok::<_, anyhow::Error>(
                end > 0
                    && t.iter()
                        .all(|t| crate::kafka_drill::committed(&s, *t).is_ok_and(|c| c >= end)),
            )
        })
        .await?
        .unwrap_or(false);
        let local_read = match member {
            Some(id) => get(client, &center.query_url(&format!("/v1/members/{id}")))
                .await
                .is_ok_and(|(s, from)| s == 200 && from.as_deref() == Some(local.as_str())),
            None => true,
        };
        if projected && local_read {
            return Ok(Some(()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(None)
}

/// The acknowledged writes that `target` of `center` does not hold (at their version or later):
/// the center's query API is pinned to the target for order reads and each member is read; an
/// answer from another backend, an older version or no answer counts as missing.
async fn missing_from(
    center: &Center,
    target: Target,
    writes: &[Acked],
    client: &reqwest::Client,
) -> anyhow::Result<Vec<String>> {
    let pin = |pin: Option<&str>| {
        client
            .post(center.query_url("/admin/routing"))
            .bearer_auth("local-admin-key")
            .json(&json!({"class": "order", "pin": pin}))
            .send()
    };
    let r = pin(Some(target.as_str())).await?;
    anyhow::ensure!(
        r.status().is_success(),
        "pinning {}: {}",
        target.as_str(),
        r.status()
    );
    // Eight readers at a time, each over its share of the writes.
    let mut readers = Vec::new();
    for share in writes.chunks(writes.len().div_ceil(8).max(1)) {
        let (client, share) = (client.clone(), share.to_vec());
        let base = center.query_url("");
        let target = target.as_str();
        readers.push(tokio::spawn(async move {
            let mut missing = Vec::new();
            for w in share {
                // A read slower than the backend's timeout moves on to the next backend: a miss
                // is asked again (five times, 200 ms apart) before it counts.
                let mut held = false;
                for attempt in 0..5 {
                    if attempt > 0 {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    let r = client
                        .get(format!("{base}/v1/members/{}", w.member_id))
                        .bearer_auth("local-order-key")
                        .send()
                        .await;
                    held = match r {
                        Ok(r) if r.status().as_u16() == 200 => {
                            let from = r
                                .headers()
                                .get("x-served-from")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            let v: serde_json::Value = r.json().await.unwrap_or_default();
                            let version = v["version"].as_i64().unwrap_or(0);
                            from.as_deref() == Some(target) && version >= w.version
                        }
                        _ => false,
                    };
                    if held {
                        break;
                    }
                }
                if !held {
                    missing.push(w.member_id.clone());
                }
            }
            missing
        }));
    }
    let mut missing = Vec::new();
    for r in readers {
        missing.extend(r.await?);
    }
    pin(None).await?;
    Ok(missing)
}

/// This process's nice value (field 19 of /proc/self/stat): the drill's figures depend on it.
fn niceness() -> Option<i64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(16)?.parse().ok()
}

/// `p0: replicas [1, 2, 3], isr [1, 2, 3]; ...` of the topic.
fn topic_replication(settings: &Settings) -> anyhow::Result<String> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let consumer: BaseConsumer = member_infra::kafka::client_config(&settings.kafka).create()?;
    let metadata = consumer.fetch_metadata(Some(&settings.kafka.topic), Duration::from_secs(5))?;
    let mut out = Vec::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            out.push(format!(
                "p{}: replicas {:?}, isr {:?}",
                p.id(),
                p.replicas(),
                p.isr()
            ));
        }
    }
    Ok(out.join("; "))
}
