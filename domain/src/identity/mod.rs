//! Identities: the ways a person is known to the apps (mobile, WeChat, app accounts, cards).
//!
//! Every value that enters the system goes through [`Identity::parse`] (a full identity, as in a
//! bind request) or [`IdentityKey::parse`] (a reference to one, as in an unbind or a lookup),
//! which validate and normalize it. Nothing else constructs identities from raw strings.

mod key;
mod kind;
mod normalize;

pub use key::IdentityKey;
pub use kind::{IdentityKind, WechatApp};
pub use normalize::IdentityError;

use serde::{Deserialize, Serialize};

/// A validated, normalized identity.
///
/// A WeChat openid carries the unionid it belongs to: an openid is only ever bound together with
/// its member's own unionid (the rule that prevents cross-account WeChat bindings).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Identity {
    Mobile {
        value: String,
    },
    WechatUnionid {
        value: String,
    },
    WechatOpenid {
        app: WechatApp,
        value: String,
        unionid: String,
    },
    TongchengAccount {
        value: String,
    },
    ElongAccount {
        value: String,
    },
    ElongCard {
        value: String,
    },
}

impl Identity {
    /// Validates and normalizes an identity as it arrives from a caller.
    ///
    /// `app` and `unionid` are required for `wechat_openid` and refused for every other kind.
    pub fn parse(
        kind: &str,
        value: &str,
        app: Option<&str>,
        unionid: Option<&str>,
    ) -> Result<Self, IdentityError> {
        let kind = IdentityKind::parse(kind)?;
        if kind != IdentityKind::WechatOpenid && (app.is_some() || unionid.is_some()) {
            return Err(IdentityError::UnexpectedField {
                kind,
                field: if app.is_some() { "app" } else { "unionid" },
            });
        }
        Ok(match kind {
            IdentityKind::Mobile => Identity::Mobile {
                value: normalize::mobile(value)?,
            },
            IdentityKind::WechatUnionid => Identity::WechatUnionid {
                value: normalize::unionid(value)?,
            },
            IdentityKind::WechatOpenid => {
                let app = WechatApp::parse(
                    app.ok_or(IdentityError::MissingField { kind, field: "app" })?,
                )?;
                let unionid = unionid.ok_or(IdentityError::MissingField {
                    kind,
                    field: "unionid",
                })?;
                Identity::WechatOpenid {
                    app,
                    value: normalize::openid(value)?,
                    unionid: normalize::unionid(unionid)?,
                }
            }
            IdentityKind::TongchengAccount => Identity::TongchengAccount {
                value: normalize::account(kind, value)?,
            },
            IdentityKind::ElongAccount => Identity::ElongAccount {
                value: normalize::account(kind, value)?,
            },
            IdentityKind::ElongCard => Identity::ElongCard {
                value: normalize::card(value)?,
            },
        })
    }

    pub fn kind(&self) -> IdentityKind {
        match self {
            Identity::Mobile { .. } => IdentityKind::Mobile,
            Identity::WechatUnionid { .. } => IdentityKind::WechatUnionid,
            Identity::WechatOpenid { .. } => IdentityKind::WechatOpenid,
            Identity::TongchengAccount { .. } => IdentityKind::TongchengAccount,
            Identity::ElongAccount { .. } => IdentityKind::ElongAccount,
            Identity::ElongCard { .. } => IdentityKind::ElongCard,
        }
    }

    /// The normalized value (for openids, without the app).
    pub fn value(&self) -> &str {
        match self {
            Identity::Mobile { value }
            | Identity::WechatUnionid { value }
            | Identity::WechatOpenid { value, .. }
            | Identity::TongchengAccount { value }
            | Identity::ElongAccount { value }
            | Identity::ElongCard { value } => value,
        }
    }

    /// The app of an openid.
    pub fn app(&self) -> Option<WechatApp> {
        match self {
            Identity::WechatOpenid { app, .. } => Some(*app),
            _ => None,
        }
    }

    /// The key that is unique across all members (kind, app for openids, value).
    pub fn key(&self) -> IdentityKey {
        IdentityKey::new(self.kind(), self.app(), self.value().to_owned())
    }
}
