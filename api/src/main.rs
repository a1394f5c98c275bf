#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use member_api::cli::{Cli, Command, Role};
use member_api::run::{self, Shutdown};
use member_infra::config::Settings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    member_api::telemetry::init_logs();
    let settings = Settings::load().context("loading configuration")?;
    let shutdown = Shutdown::on(run::shutdown_signal());
    match cli.command {
        Command::Run => run::run_all(settings, shutdown).await,
        Command::Serve { role } => match role {
            Role::CommandApi => run::serve_command_api(settings, shutdown).await,
            Role::Relay => run::serve_relay(settings, shutdown).await,
        },
        Command::Migrate => {
            run::event_store(&settings).await?;
            tracing::info!("event store schema is up to date");
            Ok(())
        }
    }
}
