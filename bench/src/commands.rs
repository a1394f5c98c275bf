//! The command path: bind commands per second and p50/p99 at several client concurrencies, against
//! plain single-row INSERT transactions on the same PostgreSQL (pgbench, same client counts).
//!
//! The load is wrk with the script below: each connection registers a member with a mobile
//! (`POST /v1/members`), then binds four more identities to it (Tongcheng account, eLong account,
//! eLong card, WeChat unionid); every request is one command that binds an identity, checked
//! against the aggregate and the uniqueness table. wrk is a C program like pgbench: until
//! 2026-12-02 the load came from reqwest in this process, competing for the two cores with the
//! system it measured (wrk took 4% of the machine under this load in a `perf` profile).

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::isolated::Isolated;
use crate::report::{rate, Report, Row};
use crate::wrk::WrkResult;

/// A member the command benchmark registered, for the query benchmarks.
#[derive(Debug, Clone)]
pub struct Registered {
    pub member_id: String,
    pub card: String,
}

/// Values are unique per run step (`BENCH_STEP`, one digit), wrk thread and member. A response's
/// version says which bind comes next: a registration answers version 2 (registered, mobile
/// bound), each bind one more, so version v is followed by bind v - 1 of `kinds`.
const WRK_SCRIPT: &str = r#"-- member-bench: register a member, then bind four identities to it
local step = tonumber(os.getenv("BENCH_STEP"))
local kinds = {"tongcheng_account", "elong_account", "elong_card", "wechat_unionid"}
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer local-writer-key"}
local registered, named, queue, number_of = 0, 0, {}, {}
local function value(kind, n)
  local t = tonumber(tid)
  if kind == "tongcheng_account" then return string.format("tc_%d_%d_%d", step, t, n)
  elseif kind == "elong_account" then return string.format("el_%d_%d_%d", step, t, n)
  elseif kind == "elong_card" then return string.format("%d%d%010d", step, t, n)
  else return string.format("oUnion_%d_%d_%024d", step, t, n) end
end
function request()
  local bind = table.remove(queue)
  if bind then
    local kind = kinds[bind.next]
    return wrk.format("POST", "/v1/members/" .. bind.id .. "/identities", headers,
      '{"kind":"' .. kind .. '","value":"' .. value(kind, bind.n) .. '"}')
  end
  registered = registered + 1
  local mobile = string.format("13%d%d%07d", step, tonumber(tid), registered)
  return wrk.format("POST", "/v1/members", headers,
    '{"identities":[{"kind":"mobile","value":"' .. mobile .. '"}]}')
end
function response(status, _, body)
  if status >= 300 then return end
  local id = body:match('"member_id":"([^"]+)"')
  local version = tonumber(body:match('"version":(%d+)'))
  if id == nil or version == nil then return end
  if status == 201 then
    named = named + 1
    number_of[id] = named
  end
  local n = number_of[id]
  if n and version <= 5 then
    table.insert(queue, {id = id, next = version - 1, n = n})
  else
    number_of[id] = nil
  end
end
"#;

/// `connections` wrk connections against the command API for `seconds`.
fn load(
    command_api: &str,
    work_dir: &Path,
    connections: usize,
    seconds: u64,
    step: usize,
    report: &mut Report,
) -> anyhow::Result<WrkResult> {
    let script = work_dir.join("commands.lua");
    std::fs::write(&script, WRK_SCRIPT).context("writing the wrk script")?;
    let env = [("BENCH_STEP", (step % 10).to_string())];
    crate::wrk::run(command_api, &script, connections, seconds, &env, report)
}

/// The eLong cards the command load bound, read back from the event store (its members folded:
/// the values in the events are sealed).
async fn bound_cards(env: &Isolated) -> anyhow::Result<Vec<Registered>> {
    let pool = env.pg_pool().await?;
    let vault = member_infra::event_store::vault::Vault::new(&env.settings.encryption);
    let mut cards = Vec::new();
    member_infra::event_store::replay::for_each_document(&pool, &vault, |doc| {
        cards.extend(
            doc.identities
                .iter()
                .filter(|i| i.key.kind() == member_domain::IdentityKind::ElongCard)
                .map(|i| Registered {
                    member_id: doc.member_id.to_string(),
                    card: i.key.value().to_owned(),
                }),
        );
    })
    .await
    .context("reading the bound cards")?;
    Ok(cards)
}

fn row(title: String, run: &WrkResult, baseline: f64) -> Row {
    let ratio = run.rps / baseline;
    Row::new(title, format!("{}, {}", rate(run.rps), run.summary()))
        .baseline(format!("{} INSERT tx (pgbench)", rate(baseline)), ratio)
}

/// Issue 24: the command API alone at least as fast as pgbench's one-row transactions (group
/// commit lets many commands share a WAL flush), p99 under 25 ms, nothing failed.
fn meets_target(run: &WrkResult, baseline: f64) -> bool {
    run.rps / baseline >= 1.0 && run.p99_ms < 25.0 && run.failed() == 0
}

fn note_failures(report: &mut Report, what: &str, run: &WrkResult) {
    if run.failed() > 0 {
        report.note(format!(
            "{what}: {} non-2xx answers and {} socket errors",
            run.non_2xx, run.errors
        ));
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
             kind text NOT NULL, value text NOT NULL, at timestamptz NOT NULL DEFAULT now()) \
             WITH (autovacuum_enabled = false)",
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
        self.wait_backends_gone();
        Ok((tps, line))
    }

    /// Waits (up to 10 s) until pgbench's backends have exited. Their CPU time moves into the
    /// postmaster's when it reaps them, and the CPU split of the step after pgbench would
    /// otherwise carry pgbench's PostgreSQL time.
    fn wait_backends_gone(&self) {
        let db = self
            .url_db
            .rsplit('/')
            .next()
            .and_then(|tail| tail.split('?').next())
            .unwrap_or_default()
            .to_owned();
        let backend = |pid: &u32| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                let cmdline = String::from_utf8_lossy(&cmdline);
                cmdline.starts_with("postgres: ") && cmdline.contains(&format!(" {db} "))
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if !crate::cpu::pids().iter().any(backend) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs the command benchmark at each concurrency and adds its rows; returns the members it made.
pub async fn bench(
    report: &mut Report,
    env: &Isolated,
    pgbench: &Pgbench,
    concurrencies: &[usize],
    seconds: u64,
) -> anyhow::Result<Vec<Registered>> {
    let command_api = env.command_url("");
    for (step, &c) in concurrencies.iter().enumerate() {
        let (baseline, line) = pgbench.run(c, seconds)?;
        report.command(line);
        let name = format!("bind commands, {c} clients, under member run");
        let profile = crate::profile::start(report, &name, Duration::from_secs(seconds));
        let cpu = crate::cpu::snapshot();
        let run = load(&command_api, &env.dir, c, seconds, step, report)?;
        report.note(format!(
            "bind commands at {c} clients under `member run`: CPU by process: {}",
            cpu.since()
        ));
        crate::profile::finish(report, profile);
        // Here the relay, the broker, six projectors and the query API share the two cores with
        // PostgreSQL and the load generator, while pgbench had them to itself: issue 24 asks for
        // half of pgbench's rate (the row `alone` adds measures the command path as the baseline
        // is measured, and asks for all of it).
        report.row(
            row(
                format!(
                    "bind commands, {c} clients, under `member run` (every role on the 2 cores)"
                ),
                &run,
                baseline,
            )
            .target(
                ">= 0.5 x baseline",
                run.rps / baseline >= 0.5 && run.failed() == 0,
            ),
        );
        note_failures(report, &format!("bind commands at {c} clients"), &run);
    }
    bound_cards(env).await
}

/// The command path without the rest of the pipeline: `member serve command-api` alone over its
/// own fresh event store (no relay, broker traffic or projectors competing for the 2 cores).
/// `step` numbers the runs against one store: each run's identities are its own (two runs of
/// one step would bind the same values, and the second would be refused `409`).
pub async fn alone(
    report: &mut Report,
    command_api: &str,
    work_dir: &Path,
    pgbench: &Pgbench,
    (clients, step): (usize, usize),
    seconds: u64,
) -> anyhow::Result<()> {
    let cpu = crate::cpu::snapshot();
    let (baseline, line) = pgbench.run(clients, seconds)?;
    let pgbench_cpu = cpu.since();
    report.command(line);
    let name = format!("bind commands, {clients} clients, command API alone");
    let profile = crate::profile::start(report, &name, Duration::from_secs(seconds));
    let cpu = crate::cpu::snapshot();
    let run = load(command_api, work_dir, clients, seconds, step, report)?;
    let commands_cpu = cpu.since();
    crate::profile::finish(report, profile);
    // Where the time goes: PostgreSQL's CPU per command against per pgbench transaction.
    let per = |split: &crate::cpu::Split, rate: f64| {
        1e6 * split.seconds("postgres") / (rate * seconds as f64).max(1.0)
    };
    report.note(format!(
        "command API alone, {clients} clients: postgres {:.0} µs of CPU per command, {:.0} µs per \
         pgbench transaction; CPU by process during the commands: {commands_cpu}; during pgbench: \
         {pgbench_cpu}",
        per(&commands_cpu, run.rps),
        per(&pgbench_cpu, baseline),
    ));
    let title =
        format!("bind commands, {clients} clients, command API alone (no relay/projectors)");
    report.row(row(title, &run, baseline).target(
        ">= 1.0 x baseline, p99 < 25 ms",
        meets_target(&run, baseline),
    ));
    note_failures(report, "command API alone", &run);
    Ok(())
}
