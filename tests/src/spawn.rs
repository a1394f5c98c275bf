//! `spawn_command_api()`: the real command API on a free port over a fresh event store.

use std::net::SocketAddr;

use member_api::command_api::CommandApi;
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

pub async fn spawn_command_api_on(pool: PgPool) -> TestApp {
    // As shipped: the member cache on, so every command test also runs through it.
    let settings = member_infra::config::CommandApiSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        member_cache_capacity: 10_000,
        member_cache_idle_seconds: 300,
        append_writers: 4,
    };
    let api = CommandApi::build(pool.clone(), &settings)
        .await
        .expect("command api binds");
    let addr = api.local_addr();
    TestApp {
        addr,
        pool,
        server: Running::spawn(|shutdown| api.run_until_stopped(shutdown)),
    }
}
