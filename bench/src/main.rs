//! `member-bench`: the benchmarks behind `make bench` and the fail-over drill behind `make drill`.
//! Each measure lives in a module named for it; every measure runs its baseline in the same run
//! and reports the ratio (docs/decisions/0011-benchmarks-with-same-run-baselines.md).
#![forbid(unsafe_code)]

mod broker_fetch;
mod commands;
mod drill;
mod freshness;
mod isolated;
mod latency;
mod member_process;
mod one_get;
mod open_loop;
mod private_broker;
mod private_redis;
mod projectors;
mod query;
mod rebuild;
mod relay;
mod report;
mod run;
mod sinks;
mod wrk;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "member-bench",
    about = "Benchmarks and the fail-over drill of the member system"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
pub struct Common {
    /// The release `member` binary to measure.
    #[arg(long, default_value = "target/release/member")]
    member_bin: PathBuf,
    /// Working directory for configuration files, logs and search indexes (never committed).
    #[arg(long, default_value = "target/bench")]
    work_dir: PathBuf,
    /// Markdown file with the machine facts (written by scripts/bench.sh).
    #[arg(long)]
    facts: Option<PathBuf>,
    /// The document the dated section is appended to.
    #[arg(long, default_value = "docs/benchmarks.md")]
    doc: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the benchmarks and append a dated section to the document.
    Run {
        #[command(flatten)]
        common: Common,
        /// Comma-separated subset: commands, query, relay, projectors, freshness, sinks (memory
        /// is measured whenever commands or query run).
        #[arg(long, default_value = "all")]
        only: String,
        /// Seconds per timed step (the whole run stays within about 15 minutes at 10).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Client concurrencies of the command benchmark.
        #[arg(long, value_delimiter = ',', default_value = "4,16,64")]
        concurrency: Vec<usize>,
        /// Run a private tansu broker (this binary) on fresh storage for the run, instead of
        /// the shared one: the shared broker's storage grows with every test run and slows
        /// down, which made runs incomparable (and once unresponsive).
        #[arg(long)]
        tansu_bin: Option<PathBuf>,
    },
    /// What idle consumers cost the local broker (tansu) and the delivery delay they add, per
    /// partition count and `fetch.wait.max.ms` (ADR 0014); appends a dated section.
    BrokerFetchCost {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        tansu_bin: PathBuf,
        /// Consumers reading every partition (`member run` has six projectors).
        #[arg(long, default_value_t = 6)]
        consumers: usize,
        /// Seconds of idle cost per point.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// "partitions:wait_ms" pairs.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "12:50,3:50,3:100,3:250,1:100"
        )]
        matrix: Vec<String>,
    },
    /// The one-Redis-GET baseline HTTP server (axum + redis, the query API's stack).
    OneGetServer {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        redis: String,
    },
    /// Seed N members in bulk, then rebuild every store from the event store, timed (needs
    /// `member seed --bulk` and `member rebuild`; scripts/bench.sh checks for them).
    Rebuild {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1_000_000)]
        members: u64,
    },
    /// The fail-over drill under order-class load; appends a dated section to the document.
    Drill {
        #[command(flatten)]
        common: Common,
        /// Restart the shared broker with this stack script (`stack.sh restart-service tansu`)
        /// instead of a private one; every client of the shared broker sees the outage.
        #[arg(long)]
        shared_broker: Option<PathBuf>,
        /// The tansu binary for the drill's private broker (scripts/lib.sh: TANSU_BIN).
        #[arg(long)]
        tansu_bin: Option<PathBuf>,
        /// Leave the broker alone (the shared one, not restarted).
        #[arg(long)]
        no_broker_restart: bool,
        /// Seconds each phase of the drill lasts.
        #[arg(long, default_value_t = 8)]
        phase_seconds: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Run {
            common,
            only,
            seconds,
            concurrency,
            tansu_bin,
        } => runtime.block_on(run::run(
            common,
            &only,
            seconds,
            &concurrency,
            tansu_bin.as_deref(),
        )),
        Command::BrokerFetchCost {
            common,
            tansu_bin,
            consumers,
            seconds,
            matrix,
        } => {
            let matrix = matrix
                .iter()
                .map(|point| {
                    let (p, w) = point
                        .split_once(':')
                        .with_context(|| format!("{point:?}: expected partitions:wait_ms"))?;
                    Ok((p.parse()?, w.parse()?))
                })
                .collect::<anyhow::Result<Vec<(i32, u64)>>>()?;
            std::fs::create_dir_all(&common.work_dir)?;
            let mut report = report::Report::default();
            let work_dir = common.work_dir.clone();
            let (report, outcome) = runtime.block_on(async move {
                tokio::task::spawn_blocking(move || {
                    let outcome = broker_fetch::run(
                        &mut report,
                        &tansu_bin,
                        &work_dir,
                        consumers,
                        &matrix,
                        seconds,
                    );
                    (report, outcome)
                })
                .await
            })?;
            let title = format!(
                "{} broker fetch cost (tansu, SQLite storage)",
                chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
            );
            report.append(&common.doc, &title, common.facts.as_deref())?;
            outcome
        }
        Command::OneGetServer { listen, redis } => runtime.block_on(one_get::serve(listen, &redis)),
        Command::Rebuild { common, members } => runtime.block_on(rebuild::run(common, members)),
        Command::Drill {
            common,
            shared_broker,
            tansu_bin,
            no_broker_restart,
            phase_seconds,
        } => {
            let broker = match (shared_broker, tansu_bin) {
                _ if no_broker_restart => drill::Broker::Untouched,
                (Some(script), _) => drill::Broker::Shared(script),
                (None, Some(bin)) => drill::Broker::Private(bin),
                (None, None) => anyhow::bail!("--tansu-bin or --shared-broker is required"),
            };
            runtime.block_on(drill::run(common, broker, phase_seconds))
        }
    }
}
