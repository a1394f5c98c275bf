//! Bind an identity: mobile, WeChat unionid or openid, Tongcheng or eLong account, eLong card.
//!
//! WeChat rules: an openid is bound only together with the member's own unionid. Binding an
//! openid to a member without a unionid binds its unionid first (the store's uniqueness rule then
//! refuses it if the unionid is another member's); binding one that names another unionid than
//! the member's, or a unionid other than the one the member's openids name, is a cross-account
//! WeChat binding.

use crate::identity::Identity;

use super::{Member, MemberError, MemberEvent};

impl Member {
    pub(super) fn bind(&self, identity: Identity) -> Result<Vec<MemberEvent>, MemberError> {
        self.ensure_active()?;
        if let Some(existing) = self.find(&identity.key()) {
            return if existing == &identity {
                Ok(Vec::new())
            } else {
                // The same openid claimed under another unionid.
                Err(MemberError::CrossAccountWechatBinding)
            };
        }
        if self.in_slot(identity.kind(), identity.app()).is_some() {
            return Err(MemberError::IdentityKindAlreadyBound(identity.kind()));
        }
        let bound = |identity| MemberEvent::IdentityBound { identity };
        match &identity {
            Identity::WechatUnionid { value } => {
                if self.openid_unionids().any(|u| u != value) {
                    return Err(MemberError::CrossAccountWechatBinding);
                }
                Ok(vec![bound(identity)])
            }
            Identity::WechatOpenid { unionid, .. } => match self.unionid() {
                Some(own) if own == unionid => Ok(vec![bound(identity)]),
                Some(_) => Err(MemberError::CrossAccountWechatBinding),
                None => {
                    if self.openid_unionids().any(|u| u != unionid) {
                        return Err(MemberError::CrossAccountWechatBinding);
                    }
                    let unionid = Identity::WechatUnionid {
                        value: unionid.clone(),
                    };
                    Ok(vec![bound(unionid), bound(identity)])
                }
            },
            _ => Ok(vec![bound(identity)]),
        }
    }
}
