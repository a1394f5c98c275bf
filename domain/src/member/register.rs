//! Register a member with its first identities.

use crate::identity::Identity;

use super::{Member, MemberError, MemberEvent, MemberStatus};

impl Member {
    pub(super) fn register(
        &self,
        identities: Vec<Identity>,
    ) -> Result<Vec<MemberEvent>, MemberError> {
        if self.status != MemberStatus::Unregistered {
            return Err(MemberError::MemberAlreadyRegistered);
        }
        if identities.is_empty() {
            return Err(MemberError::NoIdentities);
        }
        // Each identity is decided against the state left by the previous ones, exactly as a
        // sequence of binds would be, so registration obeys the same rules.
        let mut scratch = self.clone();
        let mut events = vec![MemberEvent::MemberRegistered {}];
        scratch.apply_event(MemberEvent::MemberRegistered {});
        for identity in identities {
            for event in scratch.bind(identity)? {
                scratch.apply_event(event.clone());
                events.push(event);
            }
        }
        Ok(events)
    }
}
