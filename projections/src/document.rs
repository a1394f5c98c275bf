//! The member document: what every read store serves, and the fold that builds it.

use chrono::{DateTime, Utc};
use member_domain::{IdentityKey, Member, MemberEvent, MemberStatus};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A member as the query API returns it:
/// `{"member_id", "version", "status", "identities": [{"kind", "value", "app"?}], "updated_at"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberDocument {
    pub member_id: Uuid,
    pub version: u64,
    pub status: MemberStatus,
    pub identities: Vec<IdentityKey>,
    pub updated_at: DateTime<Utc>,
}

impl MemberDocument {
    /// The same document with mobiles masked (`+86138****8000`), for marketing callers.
    pub fn masked(&self) -> Self {
        let mut doc = self.clone();
        for key in &mut doc.identities {
            if key.kind() == member_domain::IdentityKind::Mobile {
                *key = key.masked();
            }
        }
        doc
    }
}

/// The pure fold of one member's events into its document.
///
/// It applies events through the aggregate's own `apply`, so the read side can never disagree
/// with the write side about what a sequence of events means.
#[derive(Debug, Clone)]
pub struct MemberFold {
    member_id: Uuid,
    state: Member,
    updated_at: DateTime<Utc>,
}

impl MemberFold {
    pub fn new(member_id: Uuid) -> Self {
        Self {
            member_id,
            state: Member::default(),
            updated_at: DateTime::<Utc>::UNIX_EPOCH,
        }
    }

    /// Applies the event with the given aggregate sequence. Sequences must follow each other
    /// (1, 2, 3, ...); a gap or repeat is a bug in the caller and is reported, not applied.
    pub fn apply(
        &mut self,
        sequence: u64,
        event: MemberEvent,
        recorded_at: DateTime<Utc>,
    ) -> Result<(), FoldError> {
        let expected = self.state.version() + 1;
        if sequence != expected {
            return Err(FoldError {
                member_id: self.member_id,
                expected,
                got: sequence,
            });
        }
        self.state.apply_event(event);
        self.updated_at = recorded_at;
        Ok(())
    }

    pub fn version(&self) -> u64 {
        self.state.version()
    }

    pub fn document(&self) -> MemberDocument {
        MemberDocument {
            member_id: self.member_id,
            version: self.state.version(),
            status: self.state.status(),
            identities: self.state.identities().iter().map(|i| i.key()).collect(),
            updated_at: self.updated_at,
        }
    }
}

/// Events of one member were not contiguous.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("member {member_id}: expected event sequence {expected}, got {got}")]
pub struct FoldError {
    pub member_id: Uuid,
    pub expected: u64,
    pub got: u64,
}
