//! Erase a member's personal data: its identities are released first (so that another member,
//! e.g. the next holder of a recycled mobile, can bind them), then the member is erased.

use super::{Member, MemberError, MemberEvent, MemberStatus, UnbindReason};

impl Member {
    pub(super) fn erase(&self) -> Result<Vec<MemberEvent>, MemberError> {
        match self.status {
            MemberStatus::Unregistered => return Err(MemberError::MemberNotFound),
            MemberStatus::Erased => return Err(MemberError::MemberErased),
            // A deactivated member released its identities already; its erasure is still due.
            MemberStatus::Active | MemberStatus::Deactivated => {}
        }
        let mut events: Vec<MemberEvent> = self
            .identities
            .iter()
            .map(|identity| MemberEvent::IdentityUnbound {
                identity: identity.clone(),
                reason: UnbindReason::MemberErased,
            })
            .collect();
        events.push(MemberEvent::MemberErased {});
        Ok(events)
    }
}
