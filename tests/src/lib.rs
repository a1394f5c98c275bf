//! Test harness for the end-to-end tests: every test gets fresh databases on the real local
//! stack (started by `make test` through scripts/stack.sh) and its own servers on free ports.
#![forbid(unsafe_code)]

pub mod app;
pub mod console;
pub mod elasticsearch;
pub mod eventually;
pub mod kafka;
pub mod mysql;
pub mod pg_ha;
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

/// A port nobody listens on now, on 127.0.0.1 (for a server a test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The key of the shipped writer (scope `write`): every command API call sends it.
pub const WRITER_KEY: &str = "local-writer-key";
/// The key of the shipped admin (scopes `admin`, `erase`).
pub const ADMIN_KEY: &str = "local-admin-key";

/// An HTTP client that sends `Authorization: Bearer local-writer-key` on every request, as the
/// command API requires; a request that sets its own `Authorization` (a query API key) sends that
/// one instead.
pub fn writer_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_static("Bearer local-writer-key"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("an http client")
}

/// The settings of the local stack (config/default.toml plus MEMBER__* overrides).
pub fn settings() -> member_infra::config::Settings {
    member_infra::config::Settings::load().expect("configuration loads")
}

/// The keys of crypto-shredding of the local stack's settings (what every process of a test
/// shares, as the processes of one deployment do).
pub fn vault() -> member_infra::event_store::vault::Vault {
    member_infra::event_store::vault::Vault::new(&settings().encryption)
}

/// A name unique to this test run, safe as a database or topic name.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}
