//! Process wiring: build the roles, run them until the shutdown (crate::shutdown).

use member_infra::config::Settings;

use crate::app::{App, Role};
use crate::http::OperationalServer;
use crate::shutdown::Shutdown;

/// Builds the roles and runs them until shutdown: `member run` (every role) and
/// `member serve <role>` (one). A process without an API (`member serve relay`, `member serve
/// projector`) answers `/healthz`, `/readyz` and `/metrics` on its `telemetry.*_listen`.
pub async fn serve(settings: Settings, roles: &[Role], shutdown: Shutdown) -> anyhow::Result<()> {
    let operational = match operational_listen(&settings, roles) {
        Some((listen, key)) => {
            let server = OperationalServer::bind(listen, key).await?;
            tracing::info!(addr = %server.local_addr(), "serving /healthz, /readyz and /metrics");
            Some(tokio::spawn(
                server.run_until_stopped(shutdown.clone().wait()),
            ))
        }
        None => None,
    };
    let served = match App::build(&settings, roles).await {
        Ok(app) => app.run_until_stopped(shutdown).await,
        Err(e) => Err(e),
    };
    if let Some(operational) = operational {
        if served.is_err() {
            operational.abort();
        } else {
            operational
                .await
                .map_err(anyhow::Error::from)
                .and_then(|r| r)?;
        }
    }
    served
}

/// Where a process without an API serves the operational routes (and the setting's name).
pub fn operational_listen(
    settings: &Settings,
    roles: &[Role],
) -> Option<(std::net::SocketAddr, &'static str)> {
    if roles
        .iter()
        .any(|r| matches!(r, Role::CommandApi | Role::QueryApi))
    {
        return None;
    }
    if roles.contains(&Role::Relay) {
        return Some((settings.telemetry.relay_listen, "telemetry.relay_listen"));
    }
    roles
        .iter()
        .any(|r| matches!(r, Role::Projector(_)))
        .then_some((
            settings.telemetry.projector_listen,
            "telemetry.projector_listen",
        ))
}
