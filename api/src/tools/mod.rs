//! Operator tools: the `member` subcommands that inspect or repair the system.

pub mod governance;
pub mod ids;
pub mod import;
pub mod progress;
pub mod rebuild;
pub mod seed;
pub mod status;
pub mod verify;
