use thiserror::Error;

use crate::identity::IdentityKind;

/// A command refused by the member's own rules. Nothing was appended.
///
/// Each variant says how a caller should react; [`MemberError::code`] is the stable error code
/// of the API contract.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MemberError {
    /// The member's personal data was erased; it accepts no commands. Do not retry; a person
    /// who comes back is registered as a new member.
    #[error("member was erased")]
    MemberErased,
    /// No such member. Do not retry; check the id.
    #[error("member not found")]
    MemberNotFound,
    /// The id is taken (a client-chosen id was reused). Use a fresh id.
    #[error("member already registered")]
    MemberAlreadyRegistered,
    /// The member is deactivated and accepts no commands. Do not retry.
    #[error("member is deactivated")]
    MemberInactive,
    /// Registration needs at least one identity. Fix the request.
    #[error("a member is registered with at least one identity")]
    NoIdentities,
    /// The member already holds another identity of this kind (for openids: of this app).
    /// Unbind the old one first if the change is intended.
    #[error("the member already has a {0} bound")]
    IdentityKindAlreadyBound(IdentityKind),
    /// The WeChat identity belongs to another WeChat user than the member's own. Never retry:
    /// binding it would expose another person's account.
    #[error("the wechat identity belongs to another wechat user than the member's")]
    CrossAccountWechatBinding,
    /// The identity to unbind is not bound to this member.
    #[error("the identity is not bound to this member")]
    IdentityNotBound,
}

impl MemberError {
    /// The stable error code of the API contract.
    pub fn code(&self) -> &'static str {
        match self {
            MemberError::MemberNotFound => "member_not_found",
            MemberError::MemberAlreadyRegistered => "member_already_registered",
            MemberError::MemberInactive => "member_inactive",
            MemberError::MemberErased => "member_erased",
            MemberError::NoIdentities => "invalid_request",
            MemberError::IdentityKindAlreadyBound(_) => "identity_kind_already_bound",
            MemberError::CrossAccountWechatBinding => "cross_account_wechat_binding",
            MemberError::IdentityNotBound => "identity_not_bound",
        }
    }
}
