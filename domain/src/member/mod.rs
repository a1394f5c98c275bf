//! The `Member` aggregate: one person, the identities bound to them, and the rules that guard
//! those bindings within one member. Each command's decision lives in its own module.

mod bind;
mod commands;
mod deactivate;
mod erase;
mod errors;
mod events;
mod register;
mod state;
mod unbind;

#[cfg(test)]
mod tests;

pub use commands::MemberCommand;
pub use errors::MemberError;
pub use events::{MemberEvent, UnbindReason};
pub use state::{Member, MemberStatus};
