#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use member_api::app::Role as AppRole;
use member_api::cli::{Cli, Command, Role};
use member_api::run;
use member_api::shutdown::{Interrupted, Shutdown, INTERRUPTED_EXIT};
use member_infra::config::Settings;

/// jemalloc instead of glibc's malloc: with glibc's per-thread arenas, `member run` (tokio
/// workers, tantivy, librdkafka and sqlx threads) held about twice the memory it used after a
/// burst of commands. See docs/decisions/0016-allocator.md.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    member_api::telemetry::init_logs();
    let settings = Settings::load().context("loading configuration")?;
    // The first SIGINT/SIGTERM stops every role and tool cleanly, a second one exits at once.
    let shutdown = Shutdown::on_signals();
    match command(cli.command, settings, shutdown).await {
        Err(e) => match e.downcast_ref::<Interrupted>() {
            Some(interrupted) => {
                eprintln!("member: {interrupted}");
                std::process::exit(INTERRUPTED_EXIT)
            }
            None => Err(e),
        },
        ok => ok,
    }
}

async fn command(command: Command, settings: Settings, shutdown: Shutdown) -> anyhow::Result<()> {
    match command {
        Command::Run => {
            let roles = AppRole::of_center(&settings);
            run::serve(settings, &roles, shutdown).await
        }
        Command::Serve { role } => {
            let role = match role {
                Role::CommandApi => AppRole::CommandApi,
                Role::QueryApi => AppRole::QueryApi,
                Role::Relay => AppRole::Relay,
                Role::Projector { target } => AppRole::Projector(target),
            };
            run::serve(settings, &[role], shutdown).await
        }
        Command::Status { json } => {
            let components = member_api::tools::status::collect(&settings).await;
            if json {
                println!("{}", serde_json::to_string_pretty(&components)?);
            } else {
                print!("{}", member_api::tools::status::render_table(&components));
            }
            if components.iter().all(|c| c.healthy) {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
        Command::Rebuild {
            target,
            databases,
            logical_shards,
            batch,
            json,
        } => {
            let plan = member_api::tools::rebuild::plan(
                &settings,
                &target,
                databases,
                logical_shards,
                batch as usize,
            )?;
            let pool = member_api::app::event_store(&settings).await?;
            let report =
                member_api::tools::rebuild::rebuild(&settings, &pool, &plan, &shutdown).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", member_api::tools::rebuild::render(&report));
            }
            Ok(())
        }
        Command::Verify {
            target,
            sample,
            repair,
            settle_ms,
            json,
        } => {
            let pool = member_api::app::event_store(&settings).await?;
            let options = member_api::tools::verify::VerifyOptions {
                target,
                sample,
                repair,
                settle: std::time::Duration::from_millis(settle_ms),
            };
            let report =
                member_api::tools::verify::verify(&settings, &pool, &options, &shutdown).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", member_api::tools::verify::render(&report));
            }
            std::process::exit(if report.remaining == 0 {
                member_api::cli::exit::OK
            } else {
                member_api::cli::exit::DIFFERENCES
            })
        }
        Command::Seed(args) => {
            exit_with(member_api::tools::seed::run(&settings, args, &shutdown).await)
        }
        Command::Import(args) => {
            exit_with(member_api::tools::import::run(&settings, args, &shutdown).await)
        }
        Command::Governance(args) => {
            exit_with(member_api::tools::governance::run(&settings, args, &shutdown).await)
        }
        Command::Erase { member_id } => {
            exit_with(member_api::tools::erase::run(&settings, member_id).await)
        }
        Command::Keys(action) => exit_with(member_api::tools::keys::run(&settings, action).await),
        Command::Migrate => {
            member_api::app::event_store(&settings).await?;
            tracing::info!("event store schema is up to date");
            Ok(())
        }
    }
}

/// Ends the process with a tool's exit code (errors are reported by `main` as code 1).
fn exit_with(code: anyhow::Result<i32>) -> anyhow::Result<()> {
    match code? {
        0 => Ok(()),
        code => std::process::exit(code),
    }
}
