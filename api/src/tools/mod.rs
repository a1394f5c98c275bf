//! Operator tools: the `member` subcommands that inspect or repair the system.

pub mod erase;
pub mod governance;
pub mod ids;
pub mod import;
pub mod keys;
pub mod progress;
pub mod rebuild;
pub mod seed;
pub mod status;
pub mod verify;

/// The cause an operator tool records on the events it appends: caller `tool:<name>`, and one
/// request id for the whole run of the process (every event of one run shares it).
pub fn cause(name: &str) -> member_infra::event_store::cause::Cause {
    static RUN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| uuid::Uuid::now_v7().to_string());
    member_infra::event_store::cause::Cause::new(format!("tool:{name}"), run.clone())
}
