//! `spawn_command_api()`: the real command API on a free port over a fresh event store.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};

use member_api::command_api::CommandApi;
use member_infra::config::{CallerSettings, CommandApiSettings};
use sqlx::PgPool;

use crate::server::Running;

pub struct TestApp {
    pub addr: SocketAddr,
    pub pool: PgPool,
    server: Running,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops the server gracefully and waits until in-flight requests are done.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.server.stop().await
    }
}

pub async fn spawn_command_api() -> TestApp {
    let pool = crate::postgres::fresh_event_store().await;
    spawn_command_api_on(pool).await
}

/// The command API's settings the tests use: as shipped (the member cache on, so every command
/// test also runs through it), on port 0, with a write budget no test reaches by accident.
pub fn command_api_settings() -> CommandApiSettings {
    CommandApiSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        member_cache_capacity: 10_000,
        member_cache_idle_seconds: 300,
        append_writers: NonZeroUsize::new(4).unwrap(),
        write_rate_per_second: NonZeroU32::new(100_000).unwrap(),
        write_burst: NonZeroU32::new(100_000).unwrap(),
        header_read_timeout_ms: 10_000,
    }
}

/// The shipped callers, with write quotas no test reaches by accident.
pub fn test_callers() -> Vec<CallerSettings> {
    let mut callers = crate::settings().callers;
    for c in &mut callers {
        c.write_rate_per_second = 100_000;
        c.write_burst = 100_000;
    }
    callers
}

pub async fn spawn_command_api_on(pool: PgPool) -> TestApp {
    spawn_command_api_with(pool, command_api_settings(), test_callers()).await
}

/// The command API with the given settings and callers (quota tests).
pub async fn spawn_command_api_with(
    pool: PgPool,
    settings: CommandApiSettings,
    callers: Vec<CallerSettings>,
) -> TestApp {
    let api = CommandApi::build(pool.clone(), &settings, &callers, crate::vault())
        .await
        .expect("command api binds");
    let addr = api.local_addr();
    TestApp {
        addr,
        pool,
        server: Running::spawn(|shutdown| api.run_until_stopped(shutdown)),
    }
}
