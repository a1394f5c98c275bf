use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::identity::Identity;

/// What happened to a member. Past tense; each variant is versioned independently through
/// [`DomainEvent::event_version`] so that stored events can be upcast when a shape changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberEvent {
    /// The member came into existence. Its identities follow as `IdentityBound` events.
    MemberRegistered {},
    /// An identity now belongs to this member (and, by the store's uniqueness rule, to no other).
    IdentityBound { identity: Identity },
    /// An identity no longer belongs to this member and is free to be bound again.
    IdentityUnbound {
        identity: Identity,
        reason: UnbindReason,
    },
    /// The member accepts no more commands; its identities were unbound just before.
    MemberDeactivated { actor: String, reason: String },
    /// The member's personal data was erased on request; its identities were unbound just
    /// before (reason `member_erased`). The member accepts no more commands, and every read store
    /// keeps only a tombstone without personal data (docs/decisions/0033).
    MemberErased {},
}

/// Why an identity was unbound: kept in the event so that every unbinding is auditable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum UnbindReason {
    /// The member asked for it (the command API's DELETE).
    MemberRequest,
    /// The member was deactivated.
    MemberDeactivated,
    /// An operator resolved an abnormal binding.
    Governance { actor: String, note: String },
    /// The member's personal data was erased.
    MemberErased,
}

impl MemberEvent {
    pub const REGISTERED: &'static str = "MemberRegistered";
    pub const IDENTITY_BOUND: &'static str = "IdentityBound";
    pub const IDENTITY_UNBOUND: &'static str = "IdentityUnbound";
    pub const DEACTIVATED: &'static str = "MemberDeactivated";
    pub const ERASED: &'static str = "MemberErased";
}

impl DomainEvent for MemberEvent {
    fn event_type(&self) -> String {
        match self {
            MemberEvent::MemberRegistered { .. } => Self::REGISTERED,
            MemberEvent::IdentityBound { .. } => Self::IDENTITY_BOUND,
            MemberEvent::IdentityUnbound { .. } => Self::IDENTITY_UNBOUND,
            MemberEvent::MemberDeactivated { .. } => Self::DEACTIVATED,
            MemberEvent::MemberErased { .. } => Self::ERASED,
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}
