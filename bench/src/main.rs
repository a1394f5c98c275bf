//! `member-bench`: the benchmarks behind `make bench` and the fail-over drill behind `make drill`.
//! Each measure lives in a module named for it; every measure runs its baseline in the same run
//! and reports the ratio (docs/decisions/0011-benchmarks-with-same-run-baselines.md).
#![forbid(unsafe_code)]

mod centers_drill;
mod commands;
mod cpu;
mod crypto;
mod drill;
mod freshness;
mod isolated;
mod kafka_drill;
mod latency;
mod member_process;
mod one_get;
mod open_loop;
mod private_broker;
mod private_redis;
mod profile;
mod projectors;
mod query;
mod rebuild;
mod register;
mod relay;
mod report;
mod run;
mod sinks;
mod wrk;

use std::path::PathBuf;

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
        /// Run a private Kafka broker on fresh storage for the run (started with this script,
        /// scripts/kafka-cluster.sh) instead of the shared one, whose topics and groups grow
        /// with every test run: runs stay comparable.
        #[arg(long)]
        kafka_cluster_script: Option<PathBuf>,
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
    /// The broker-loss drill: three private brokers, one SIGKILLed under a command load;
    /// appends a dated section to the document.
    DrillKafka {
        #[command(flatten)]
        common: Common,
        /// scripts/kafka-cluster.sh, to start the drill's three brokers.
        #[arg(long)]
        kafka_cluster_script: PathBuf,
        /// Seconds each phase of the drill lasts (the broker stays down two phases).
        #[arg(long, default_value_t = 10)]
        phase_seconds: u64,
    },
    /// The center-loss drill: two centers and a witness (scripts/pg-ha.sh, three brokers on
    /// racks a, b, w), all of center A SIGKILLed under load on B and brought back; prints its
    /// figures as a JSON last line and appends a dated section to the document.
    DrillCenters {
        #[command(flatten)]
        common: Common,
        /// scripts/pg-ha.sh, the two-center event store.
        #[arg(long)]
        pg_ha_script: PathBuf,
        /// scripts/kafka-cluster.sh, the three brokers.
        #[arg(long)]
        kafka_cluster_script: PathBuf,
        /// Seconds each phase lasts (A stays down two phases).
        #[arg(long, default_value_t = 10)]
        phase_seconds: u64,
    },
    /// The fail-over drill under order-class load; appends a dated section to the document.
    Drill {
        #[command(flatten)]
        common: Common,
        /// Restart the shared broker with this stack script (`stack.sh restart-service kafka`)
        /// instead of a private one; every client of the shared broker sees the outage.
        #[arg(long)]
        shared_broker: Option<PathBuf>,
        /// scripts/kafka-cluster.sh, to start the drill's private broker.
        #[arg(long)]
        kafka_cluster_script: Option<PathBuf>,
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
            kafka_cluster_script,
        } => runtime.block_on(run::run(
            common,
            &only,
            seconds,
            &concurrency,
            kafka_cluster_script.as_deref(),
        )),
        Command::DrillKafka {
            common,
            kafka_cluster_script,
            phase_seconds,
        } => runtime.block_on(kafka_drill::run(
            common,
            &kafka_cluster_script,
            phase_seconds,
        )),
        Command::DrillCenters {
            common,
            pg_ha_script,
            kafka_cluster_script,
            phase_seconds,
        } => runtime.block_on(centers_drill::run(
            common,
            centers_drill::Scripts {
                pg_ha: pg_ha_script,
                kafka_cluster: kafka_cluster_script,
            },
            phase_seconds,
        )),
        Command::OneGetServer { listen, redis } => runtime.block_on(one_get::serve(listen, &redis)),
        Command::Rebuild { common, members } => runtime.block_on(rebuild::run(common, members)),
        Command::Drill {
            common,
            shared_broker,
            kafka_cluster_script,
            no_broker_restart,
            phase_seconds,
        } => {
            let broker = match (shared_broker, kafka_cluster_script) {
                _ if no_broker_restart => drill::Broker::Untouched,
                (Some(script), _) => drill::Broker::Shared(script),
                (None, Some(script)) => drill::Broker::Private(script),
                (None, None) => {
                    anyhow::bail!("--kafka-cluster-script or --shared-broker is required")
                }
            };
            runtime.block_on(drill::run(common, broker, phase_seconds))
        }
    }
}
