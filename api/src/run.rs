//! Process wiring: build the roles, run them until the shutdown (crate::shutdown).

use member_infra::config::Settings;

use crate::app::{App, Role};
use crate::shutdown::Shutdown;

/// Builds the roles and runs them until shutdown: `member run` (every role) and
/// `member serve <role>` (one).
pub async fn serve(settings: Settings, roles: &[Role], shutdown: Shutdown) -> anyhow::Result<()> {
    App::build(&settings, roles)
        .await?
        .run_until_stopped(shutdown)
        .await
}
