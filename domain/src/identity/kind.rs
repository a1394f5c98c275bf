use std::fmt;

use serde::{Deserialize, Serialize};

use super::IdentityError;

/// The identity kinds of the contract, spelled as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    Mobile,
    WechatUnionid,
    WechatOpenid,
    TongchengAccount,
    ElongAccount,
    ElongCard,
}

impl IdentityKind {
    pub const ALL: [IdentityKind; 6] = [
        IdentityKind::Mobile,
        IdentityKind::WechatUnionid,
        IdentityKind::WechatOpenid,
        IdentityKind::TongchengAccount,
        IdentityKind::ElongAccount,
        IdentityKind::ElongCard,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::Mobile => "mobile",
            IdentityKind::WechatUnionid => "wechat_unionid",
            IdentityKind::WechatOpenid => "wechat_openid",
            IdentityKind::TongchengAccount => "tongcheng_account",
            IdentityKind::ElongAccount => "elong_account",
            IdentityKind::ElongCard => "elong_card",
        }
    }

    /// Parses the wire name exactly (case-sensitive, no trimming).
    pub fn parse(s: &str) -> Result<Self, IdentityError> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or(IdentityError::UnknownKind)
    }
}

impl fmt::Display for IdentityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The WeChat mini-programs whose openids members bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WechatApp {
    TongchengMp,
    ElongMp,
}

impl WechatApp {
    pub const ALL: [WechatApp; 2] = [WechatApp::TongchengMp, WechatApp::ElongMp];

    pub fn as_str(self) -> &'static str {
        match self {
            WechatApp::TongchengMp => "tongcheng_mp",
            WechatApp::ElongMp => "elong_mp",
        }
    }

    pub fn parse(s: &str) -> Result<Self, IdentityError> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or(IdentityError::UnknownApp)
    }
}

impl fmt::Display for WechatApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
