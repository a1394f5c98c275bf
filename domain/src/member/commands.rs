use crate::identity::{Identity, IdentityKey};

use super::UnbindReason;

/// What a caller asks of a member. Values are already validated and normalized
/// (see [`Identity::parse`]); the aggregate checks the rules that depend on the member's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberCommand {
    /// Create the member with its first identities.
    Register { identities: Vec<Identity> },
    /// Bind one more identity. Binding an identity the member already has changes nothing.
    BindIdentity { identity: Identity },
    /// Unbind an identity. Unbinding the unionid also unbinds the openids that belong to it.
    UnbindIdentity {
        key: IdentityKey,
        reason: UnbindReason,
    },
    /// Deactivate the member, releasing all of its identities.
    Deactivate { actor: String, reason: String },
    /// Erase the member's personal data (PIPL art. 47, GDPR art. 17): its identities are
    /// released first, then the member is erased and accepts no more commands. Also valid on a
    /// deactivated member (which holds no identities).
    Erase,
}
