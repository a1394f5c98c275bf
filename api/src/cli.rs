//! The `member` command line.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "member",
    version,
    about = "Unified membership service: command and query APIs, relay, projectors and operator tools",
    long_about = "Unified membership service.\n\n\
        Configuration: config/default.toml (compiled in), overridden by the file named in \
        MEMBER_CONFIG and by environment variables MEMBER__SECTION__KEY \
        (for example MEMBER__POSTGRES__URL).",
    after_help = "Examples:\n  member run\n  member serve command-api\n  member serve relay\n  member serve projector --target redis-b\n  member migrate\n  member status --json\n  member seed --members 1000\n  member import --from legacy.jsonl --report quarantine.jsonl\n  member governance scan"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every role in one process: command API, query API, relay and the six projectors.
    Run,
    /// Run one role alone.
    Serve {
        #[command(subcommand)]
        role: Role,
    },
    /// Create or upgrade the event store schema, then exit.
    Migrate,
    /// Health and lag of the event store, the relay and every projection.
    ///
    /// Exit code 0 when every component answers, 1 otherwise.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Register synthetic members (realistic identities, deterministic per seed).
    Seed(crate::tools::seed::SeedArgs),
    /// Import legacy member relationships from a JSONL export; conflicts are quarantined.
    Import(crate::tools::import::ImportArgs),
    /// Find and resolve abnormal bindings in imported data (audited).
    Governance(crate::tools::governance::GovernanceArgs),
}

#[derive(Debug, Subcommand)]
pub enum Role {
    /// The command API (binds, unbinds, registrations).
    CommandApi,
    /// The query API (reads with routing, fail-over and flow control).
    QueryApi,
    /// The outbox relay: publishes committed events to Kafka in commit-safe order.
    Relay,
    /// One projector: materializes the event stream into one read store.
    Projector {
        /// mysql, redis-a, redis-b, search-primary, search-backup or search-marketing.
        #[arg(long)]
        target: member_projections::Target,
    },
}
