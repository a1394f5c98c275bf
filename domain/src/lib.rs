//! The member domain: who a person is across the Tongcheng and eLong apps.
//!
//! This crate is pure: no I/O, no async runtime, no database. It holds
//! - [`identity`]: the identity kinds of the contract, their validation and normalization,
//! - [`member`]: the `Member` aggregate (cqrs-es), its commands, events and per-member rules.
//!
//! Cross-member rules (an identity belongs to at most one member) cannot be decided by one
//! aggregate; the event store enforces them atomically with the append (see `infra`).
#![forbid(unsafe_code)]

pub mod identity;
pub mod member;

pub use identity::{Identity, IdentityError, IdentityKey, IdentityKind, WechatApp};
pub use member::{Member, MemberCommand, MemberError, MemberEvent, MemberStatus, UnbindReason};
