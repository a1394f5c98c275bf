use std::fmt;

use serde::{Deserialize, Serialize};

use super::{normalize, IdentityError, IdentityKind, WechatApp};

/// The globally unique name of an identity: kind, app (openids only) and normalized value.
///
/// Its canonical text form, `kind:value` or `wechat_openid:app:value`, is the key of the
/// identity-owner table and of every identity index. Values never contain `:`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IdentityKey {
    kind: IdentityKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    app: Option<WechatApp>,
    value: String,
}

impl IdentityKey {
    pub(crate) fn new(kind: IdentityKind, app: Option<WechatApp>, value: String) -> Self {
        Self { kind, app, value }
    }

    /// Parses a reference to an identity as the API's paths and queries spell it:
    /// a kind and a value, where an openid's value is `app:openid`.
    pub fn parse(kind: &str, value: &str) -> Result<Self, IdentityError> {
        let kind = IdentityKind::parse(kind)?;
        let (app, value) = match kind {
            IdentityKind::WechatOpenid => {
                let (app, openid) = value
                    .split_once(':')
                    .ok_or(IdentityError::MissingField { kind, field: "app" })?;
                (Some(WechatApp::parse(app)?), normalize::openid(openid)?)
            }
            IdentityKind::Mobile => (None, normalize::mobile(value)?),
            IdentityKind::WechatUnionid => (None, normalize::unionid(value)?),
            IdentityKind::TongchengAccount | IdentityKind::ElongAccount => {
                (None, normalize::account(kind, value)?)
            }
            IdentityKind::ElongCard => (None, normalize::card(value)?),
        };
        Ok(Self { kind, app, value })
    }

    /// Parses the canonical text form produced by `Display`.
    pub fn parse_canonical(s: &str) -> Result<Self, IdentityError> {
        let (kind, rest) = s.split_once(':').ok_or(IdentityError::UnknownKind)?;
        Self::parse(kind, rest)
    }

    pub fn kind(&self) -> IdentityKind {
        self.kind
    }

    pub fn app(&self) -> Option<WechatApp> {
        self.app
    }

    pub fn value(&self) -> &str {
        &self.value
    }
}

impl fmt::Display for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.app {
            Some(app) => write!(f, "{}:{}:{}", self.kind, app, self.value),
            None => write!(f, "{}:{}", self.kind, self.value),
        }
    }
}

impl IdentityKey {
    /// The key with its value masked for display to marketing callers: mobiles keep the first
    /// three and last four digits (`+86138****8000`); other kinds are returned unchanged.
    pub fn masked(&self) -> Self {
        match self.kind {
            IdentityKind::Mobile if self.value.len() == 14 => {
                let v = &self.value;
                Self {
                    kind: self.kind,
                    app: None,
                    value: format!("{}****{}", &v[..6], &v[10..]),
                }
            }
            _ => self.clone(),
        }
    }
}
