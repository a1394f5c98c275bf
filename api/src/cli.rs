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
    after_help = "Examples:\n  member run\n  member serve command-api\n  member serve relay\n  member serve projector --target redis-b\n  member migrate\n  member status --json\n  member seed --members 1000\n  member import --from legacy.jsonl --report quarantine.jsonl\n  member governance scan\n  member rebuild --target all\n  member rebuild --target mysql,search-primary\n  member rebuild --target mysql --databases member_s0,member_s1,member_s2,member_s3,member_s4,member_s5,member_s6,member_s7\n  member verify --target redis-a --sample 10000\n  member verify --target mysql --repair\n  member erase --member-id 0190f0c4-2b1e-7cc3-9a53-3b1c1b0e7a11"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every role in one process: command API, query API, relay and the projectors of
    /// `center.projectors` (all six by default: the one-machine layout).
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
    /// Rebuild read stores from the event store, then hand them over to the live projectors.
    ///
    /// Folds every member once and bulk-writes the final documents; MySQL is built into a new
    /// table set and search into a new index generation, swapped in when caught up with the
    /// topic (readers never see a half-built store); Redis is written in place under the
    /// version guards. Safe while commands and projectors run. Exit code 0 on success, 1 on
    /// failure (the live store is then untouched, except Redis, which only ever gets newer).
    #[command(
        after_help = "Examples:\n  member rebuild --target all\n  member rebuild --target search-primary,search-backup\n  member rebuild --target mysql --databases s0,s1,s2,s3,s4,s5,s6,s7   (re-shard: then set mysql.databases to the new list and restart the mysql projector and query APIs)"
    )]
    Rebuild {
        /// Targets (comma-separated or repeated): mysql, redis-a, redis-b, search-primary,
        /// search-backup, search-marketing, or all.
        #[arg(long, value_delimiter = ',', required = true)]
        target: Vec<String>,
        /// Re-shard MySQL: build into these databases (none of the configured ones).
        #[arg(long, value_delimiter = ',')]
        databases: Option<Vec<String>>,
        /// Re-shard MySQL: logical shard count of the new layout (default: the configured one).
        #[arg(long)]
        logical_shards: Option<u32>,
        /// Members per bulk write.
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        batch: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compare a read store with the fold of the event store; optionally repair it.
    ///
    /// Reports missing, extra, stale and diverged documents and identity lookups that do not
    /// lead to the holder, with examples (identities masked). Differences are checked again
    /// after a settle delay, so projection lag is not reported. Exit code 0 when the store
    /// agrees (or was repaired), 2 when differences remain, 1 on failure.
    #[command(
        after_help = "Examples:\n  member verify --target mysql\n  member verify --target redis-b --sample 10000\n  member verify --target search-primary --repair --json"
    )]
    Verify {
        /// mysql, redis-a, redis-b, search-primary, search-backup or search-marketing.
        #[arg(long)]
        target: member_projections::Target,
        /// Check about N random members (and a sample of the store for extras) instead of all.
        #[arg(long)]
        sample: Option<u64>,
        /// Rewrite what differs (a blue-green rebuild for an index owned by a running process).
        #[arg(long)]
        repair: bool,
        /// Milliseconds to wait before checking differences again (projection lag).
        #[arg(long, default_value_t = 2000)]
        settle_ms: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Register synthetic members (realistic identities, deterministic per seed).
    Seed(crate::tools::seed::SeedArgs),
    /// Import legacy member relationships from a JSONL export; conflicts are quarantined.
    Import(crate::tools::import::ImportArgs),
    /// Find and resolve abnormal bindings in imported data (audited).
    Governance(crate::tools::governance::GovernanceArgs),
    /// Erase a member's personal data (PIPL art. 47, GDPR art. 17), as
    /// `POST /v1/members/{id}/erasure` does: its identities are released for others to bind,
    /// every store deletes its document, no rebuild brings it back. Idempotent.
    ///
    /// Prints the receipt `{"member_id", "accepted_at"}`; `GET /v1/members/{id}/erasure` shows
    /// when each store applied it. Exit code 0 when accepted (now or before), 3 when the member
    /// does not exist, 1 on failure.
    #[command(
        after_help = "Example:\n  member erase --member-id 0190f0c4-2b1e-7cc3-9a53-3b1c1b0e7a11"
    )]
    Erase {
        /// The member to erase.
        #[arg(long)]
        member_id: uuid::Uuid,
    },
    /// The keys of crypto-shredding: members' data keys and the master keys that wrap them
    /// (docs/operations/erasure.md).
    #[command(subcommand)]
    Keys(crate::tools::keys::KeysAction),
}

/// Exit codes of `member verify`.
pub mod exit {
    /// Everything agrees (or everything found was repaired).
    pub const OK: i32 = 0;
    /// The command failed (a store or the event store could not be read).
    pub const FAILED: i32 = 1;
    /// Differences remain.
    pub const DIFFERENCES: i32 = 2;
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
