//! `member seed`: synthetic members for demos, tests and benchmarks.
//!
//! Members are derived from `(seed, index)` ([`generate`]), with deterministic ids, so seeding the
//! same seed again finds its members instead of adding new ones, and different seeds never share
//! an identity. The default mode registers each member through `CommandService::execute`, the
//! API's own path; `--bulk` appends the same events in large batches ([`bulk`]).
//!
//! The first SIGINT/SIGTERM stops taking new members and lets those in flight finish: every
//! member below the last one started is then in the store, and the same command run again
//! recognises them and goes on.

pub mod bulk;
pub mod generate;

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Context;
use futures::StreamExt;
use member_domain::{Identity, MemberCommand, MemberError};
use member_infra::config::Settings;
use member_infra::event_store::commands::{CommandError, CommandService};

use self::generate::{SyntheticMember, MAX_MEMBERS, MAX_SEED};
use crate::shutdown::{Interrupted, Shutdown};

/// Metadata stored on every seeded event, in both modes.
const SOURCE: &str = "seed";

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    member seed --members 1000\n  \
    member seed --members 1000 --seed 2 --concurrency 16\n  \
    member seed --members 1000000 --bulk\n\n\
    Exit code 0 when every member is in the store (seeded now or by an earlier run of the same \
    seed), 1 otherwise.")]
pub struct SeedArgs {
    /// How many members (indexes 0..N of the seed).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_MEMBERS))]
    pub members: u64,
    /// Which synthetic population (0-699): different seeds never share an identity; the same
    /// seed again adds nothing.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=MAX_SEED as i64))]
    pub seed: u32,
    /// Commands (or, with --bulk, batches) in flight at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Benchmark mode: append the aggregate's events in multi-row INSERTs instead of one command
    /// per member (same events, same uniqueness trigger).
    #[arg(long)]
    pub bulk: bool,
    /// Members per INSERT in --bulk mode.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    pub batch: u32,
}

/// Totals of a seed run.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    created: u64,
    already_present: u64,
    events: u64,
    failed: u64,
}

/// Runs `member seed`. Returns the process exit code.
pub async fn run(settings: &Settings, args: SeedArgs, shutdown: &Shutdown) -> anyhow::Result<i32> {
    let pool = connect(settings, args.concurrency).await?;
    let started = Instant::now();
    let bar = crate::tools::progress::bar("seed", Some(args.members));
    let totals = if args.bulk {
        seed_bulk(&pool, &crate::app::vault(settings), &args, &bar, shutdown).await?
    } else {
        seed_commands(
            CommandService::new(pool, crate::app::vault(settings)),
            &args,
            &bar,
            shutdown,
        )
        .await?
    };
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    println!(
        "seeded {} members ({} events, {} already present, {} failed) in {:.1}s: {:.0} members/s, {:.0} events/s",
        totals.created,
        totals.events,
        totals.already_present,
        totals.failed,
        secs,
        totals.created as f64 / secs,
        totals.events as f64 / secs,
    );
    // Members not started: a signal stopped the run (one arriving after the last was started
    // changes nothing).
    if totals.created + totals.already_present + totals.failed < args.members {
        return Err(Interrupted::new(
            "the seed stopped after the members in flight; run the same command again to go on \
             (members already in the store are recognised and skipped)",
        )
        .into());
    }
    Ok(if totals.failed == 0 { 0 } else { 1 })
}

/// A pool for the run. Statement logging is off: a bulk INSERT of thousands of rows routinely
/// takes over a second, which sqlx would log as a slow statement every time.
async fn connect(settings: &Settings, concurrency: u16) -> anyhow::Result<sqlx::PgPool> {
    use sqlx::ConnectOptions;
    let options: sqlx::postgres::PgConnectOptions = settings
        .postgres
        .url
        .expose_secret()
        .parse()
        .context("parsing postgres.url")?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(u32::from(concurrency) + 2)
        .acquire_timeout(std::time::Duration::from_secs(30))
        .connect_with(options.disable_statement_logging())
        .await
        .context("connecting to the event store (postgres.url)")?;
    member_infra::event_store::migrate(&pool)
        .await
        .context("migrating the event store")?;
    Ok(pool)
}

async fn seed_bulk(
    pool: &sqlx::PgPool,
    vault: &member_infra::event_store::vault::Vault,
    args: &SeedArgs,
    bar: &indicatif::ProgressBar,
    shutdown: &Shutdown,
) -> anyhow::Result<Totals> {
    let mut metadata = serde_json::Map::new();
    metadata.insert("source".into(), SOURCE.into());
    for (key, value) in crate::tools::cause("seed").metadata() {
        metadata.insert(key, value.into());
    }
    let batch = u64::from(args.batch);
    let starts = (0..args.members).step_by(batch as usize);
    let mut outcomes = futures::stream::iter(starts)
        .take_while(|_| std::future::ready(!shutdown.is_requested()))
        .map(|start| {
            let metadata = &metadata;
            async move {
                let end = (start + batch).min(args.members);
                let members: Vec<SyntheticMember> = (start..end)
                    .map(|i| generate::member(args.seed, i))
                    .collect();
                bulk::write_batch(pool, vault, &members, metadata)
                    .await
                    .with_context(|| format!("appending members {start}..{end}"))
            }
        })
        .buffer_unordered(usize::from(args.concurrency));
    let mut totals = Totals::default();
    while let Some(outcome) = outcomes.next().await {
        let outcome = outcome?;
        totals.created += outcome.created;
        totals.already_present += outcome.already_present;
        totals.events += outcome.events;
        bar.inc(outcome.created + outcome.already_present);
    }
    Ok(totals)
}

/// What registering one synthetic member through the command path did.
enum Seeded {
    Created {
        events: u64,
    },
    AlreadyPresent,
    /// Refused: the reason code (never the identity).
    Failed(&'static str),
}

async fn seed_commands(
    service: CommandService,
    args: &SeedArgs,
    bar: &indicatif::ProgressBar,
    shutdown: &Shutdown,
) -> anyhow::Result<Totals> {
    let mut outcomes = futures::stream::iter(0..args.members)
        .take_while(|_| std::future::ready(!shutdown.is_requested()))
        .map(|index| {
            let service = service.clone();
            async move { seed_one(&service, generate::member(args.seed, index)).await }
        })
        .buffer_unordered(usize::from(args.concurrency));
    let mut totals = Totals::default();
    let mut failures: HashMap<&'static str, u64> = HashMap::new();
    while let Some(outcome) = outcomes.next().await {
        match outcome? {
            Seeded::Created { events } => {
                totals.created += 1;
                totals.events += events;
            }
            Seeded::AlreadyPresent => totals.already_present += 1,
            Seeded::Failed(code) => {
                totals.failed += 1;
                *failures.entry(code).or_default() += 1;
            }
        }
        bar.inc(1);
    }
    for (code, count) in failures {
        tracing::warn!(code, count, "synthetic members refused");
    }
    Ok(totals)
}

async fn seed_one(service: &CommandService, member: SyntheticMember) -> anyhow::Result<Seeded> {
    let mut metadata = crate::tools::cause("seed").metadata();
    metadata.insert("source".to_owned(), SOURCE.to_owned());
    let command = MemberCommand::Register {
        identities: member.identities.clone(),
    };
    match service
        .execute_with_metadata(member.member_id, command, None, metadata)
        .await
    {
        Ok(executed) => Ok(Seeded::Created {
            events: executed.appended as u64,
        }),
        Err(CommandError::Rejected(MemberError::MemberAlreadyRegistered)) => {
            let existing = service
                .load(member.member_id)
                .await
                .context("loading an already registered member")?;
            Ok(
                if same_identities(existing.identities(), &member.identities) {
                    Seeded::AlreadyPresent
                } else {
                    Seeded::Failed("member_id_taken")
                },
            )
        }
        Err(CommandError::IdentityAlreadyBound { .. }) => {
            Ok(Seeded::Failed("identity_already_bound"))
        }
        Err(CommandError::Rejected(e)) => Ok(Seeded::Failed(e.code())),
        Err(e) => Err(e).context("registering a synthetic member"),
    }
}

/// Whether a member holds exactly these identities (in any order).
pub(crate) fn same_identities(held: &[Identity], expected: &[Identity]) -> bool {
    held.len() == expected.len() && expected.iter().all(|i| held.contains(i))
}
