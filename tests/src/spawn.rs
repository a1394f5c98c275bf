//! `spawn_command_api()`: the real command API on a free port over a fresh event store.

use std::net::SocketAddr;

use member_api::command_api::CommandApi;
use sqlx::PgPool;

pub struct TestApp {
    pub addr: SocketAddr,
    pub pool: PgPool,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops the server gracefully and waits until in-flight requests are done.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }
}

pub async fn spawn_command_api() -> TestApp {
    let pool = crate::postgres::fresh_event_store().await;
    spawn_command_api_on(pool).await
}

pub async fn spawn_command_api_on(pool: PgPool) -> TestApp {
    let api = CommandApi::build(pool.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .expect("command api binds");
    let addr = api.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(api.run_until_stopped(async {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        pool,
        stop: Some(tx),
        task: Some(task),
    }
}
