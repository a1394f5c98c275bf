//! Test harness for the end-to-end tests: every test gets fresh databases on the real local
//! stack (started by `make test` through scripts/stack.sh) and its own servers on free ports.
#![forbid(unsafe_code)]

pub mod app;
pub mod elasticsearch;
pub mod eventually;
pub mod kafka;
pub mod mysql;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod query;
pub mod redis;
pub mod server;
pub mod sink_contract;
pub mod spawn;
pub mod tools;

pub use eventually::eventually;
pub use spawn::{spawn_command_api, TestApp};

/// The settings of the local stack (config/default.toml plus MEMBER__* overrides).
pub fn settings() -> member_infra::config::Settings {
    member_infra::config::Settings::load().expect("configuration loads")
}

/// A name unique to this test run, safe as a database or topic name.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}
