//! Deactivate a member: its identities are released first, so they can be bound elsewhere.

use super::{Member, MemberError, MemberEvent, UnbindReason};

impl Member {
    pub(super) fn deactivate(
        &self,
        actor: String,
        reason: String,
    ) -> Result<Vec<MemberEvent>, MemberError> {
        self.ensure_active()?;
        let mut events: Vec<MemberEvent> = self
            .identities
            .iter()
            .map(|identity| MemberEvent::IdentityUnbound {
                identity: identity.clone(),
                reason: UnbindReason::MemberDeactivated,
            })
            .collect();
        events.push(MemberEvent::MemberDeactivated { actor, reason });
        Ok(events)
    }
}
