//! Operator tools: the `member` subcommands that inspect or repair the system.

pub mod progress;
pub mod rebuild;
pub mod status;
pub mod verify;
