//! `member governance scan | repair`: abnormal bindings in imported data (the quarantine of
//! `member import`, and WeChat bindings in the event store that break the openid/unionid rule),
//! and their audited resolution. See docs/operations/import-and-governance.md.
//!
//! The first SIGINT/SIGTERM stops a scan at once (it only reads) and a repair between two
//! entries (each entry is resolved completely or not at all); the message names what is left.

pub mod repair;
pub mod scan;

use anyhow::Context;
use member_infra::config::Settings;

use crate::shutdown::{Interrupted, Shutdown};

#[derive(Debug, clap::Args)]
pub struct GovernanceArgs {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// List abnormal bindings: open quarantine entries (re-checked against the current owners)
    /// and event-store members whose openids do not belong to their unionid.
    #[command(
        after_help = "Examples:\n  member governance scan\n  member governance scan --json\n\n\
        Exit code 0 when nothing is abnormal, 2 when there are findings, 1 on errors."
    )]
    Scan {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Resolve findings (release, dismiss, unbind), recording who and why.
    Repair(repair::RepairArgs),
}

/// Runs `member governance`. Returns the process exit code.
pub async fn run(
    settings: &Settings,
    args: GovernanceArgs,
    shutdown: &Shutdown,
) -> anyhow::Result<i32> {
    let pool = crate::app::event_store(settings).await?;
    let vault = crate::app::vault(settings);
    match args.action {
        Action::Scan { json } => {
            let bar = crate::tools::progress::bar("scan", None);
            let scanning = async {
                let mut findings = scan::quarantine_findings(&pool, &vault)
                    .await
                    .context("re-checking the quarantine")?;
                findings.extend(
                    scan::store_findings(&pool, &vault, || bar.inc(1))
                        .await
                        .context("scanning the event store")?,
                );
                anyhow::Ok(findings)
            };
            // The scan only reads: dropping it half-way leaves nothing behind.
            let findings = tokio::select! {
                findings = scanning => findings?,
                _ = shutdown.requested() => {
                    bar.finish_and_clear();
                    return Err(Interrupted::new(
                        "the scan stopped (it changes nothing); run the same command again",
                    )
                    .into());
                }
            };
            bar.finish_and_clear();
            if json {
                println!("{}", serde_json::to_string_pretty(&findings)?);
            } else {
                print!("{}", scan::render_table(&findings));
            }
            Ok(if findings.is_empty() { 0 } else { 2 })
        }
        Action::Repair(args) => repair::run(pool, vault, args, shutdown).await,
    }
}
