//! Unbind an identity. Unbinding the unionid also unbinds the openids that belong to it, so that
//! no openid is ever left naming a unionid its member does not hold.

use crate::identity::{Identity, IdentityKey};

use super::{Member, MemberError, MemberEvent, UnbindReason};

impl Member {
    pub(super) fn unbind(
        &self,
        key: &IdentityKey,
        reason: UnbindReason,
    ) -> Result<Vec<MemberEvent>, MemberError> {
        self.ensure_active()?;
        let identity = self.find(key).ok_or(MemberError::IdentityNotBound)?;
        let mut events = Vec::new();
        if let Identity::WechatUnionid { value } = identity {
            events.extend(
                self.identities
                    .iter()
                    .filter(
                        |i| matches!(i, Identity::WechatOpenid { unionid, .. } if unionid == value),
                    )
                    .map(|openid| MemberEvent::IdentityUnbound {
                        identity: openid.clone(),
                        reason: reason.clone(),
                    }),
            );
        }
        events.push(MemberEvent::IdentityUnbound {
            identity: identity.clone(),
            reason,
        });
        Ok(events)
    }
}
