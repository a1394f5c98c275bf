//! Validation and normalization of identity values.
//!
//! Values are ASCII by construction: anything else (full-width digits, zero-width or other
//! unicode spaces, control characters) is refused rather than guessed at, so that one person
//! can never be stored under two spellings.

use thiserror::Error;

use super::IdentityKind;

/// Why a raw identity was refused. Callers answer `400 invalid_request` with this message; the
/// messages never echo the refused value (it may be personal data).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdentityError {
    #[error("unknown identity kind")]
    UnknownKind,
    #[error("unknown wechat app (expected tongcheng_mp or elong_mp)")]
    UnknownApp,
    #[error("{kind} requires the field `{field}`")]
    MissingField {
        kind: IdentityKind,
        field: &'static str,
    },
    #[error("{kind} does not take the field `{field}`")]
    UnexpectedField {
        kind: IdentityKind,
        field: &'static str,
    },
    #[error("invalid {kind} value: {reason}")]
    InvalidValue {
        kind: IdentityKind,
        reason: &'static str,
    },
}

fn invalid(kind: IdentityKind, reason: &'static str) -> IdentityError {
    IdentityError::InvalidValue { kind, reason }
}

/// A mainland China mobile: 11 ASCII digits starting `1[3-9]`, optionally prefixed `+86`.
/// Normalized to `+86XXXXXXXXXXX`.
pub(crate) fn mobile(raw: &str) -> Result<String, IdentityError> {
    let kind = IdentityKind::Mobile;
    let digits = raw.strip_prefix("+86").unwrap_or(raw);
    if digits.len() != 11 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(kind, "expected 11 digits, optionally prefixed +86"));
    }
    let b = digits.as_bytes();
    if b[0] != b'1' || !(b'3'..=b'9').contains(&b[1]) {
        return Err(invalid(kind, "not a mainland China mobile number"));
    }
    Ok(format!("+86{digits}"))
}

fn token(
    kind: IdentityKind,
    raw: &str,
    min: usize,
    max: usize,
    reason: &'static str,
) -> Result<String, IdentityError> {
    let ok = (min..=max).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(invalid(kind, reason))
    }
}

/// A WeChat unionid: 28 to 64 characters of `[A-Za-z0-9_-]`, case preserved.
pub(crate) fn unionid(raw: &str) -> Result<String, IdentityError> {
    token(
        IdentityKind::WechatUnionid,
        raw,
        28,
        64,
        "expected 28 to 64 characters of [A-Za-z0-9_-]",
    )
}

/// A WeChat openid: 16 to 64 characters of `[A-Za-z0-9_-]`, case preserved.
pub(crate) fn openid(raw: &str) -> Result<String, IdentityError> {
    token(
        IdentityKind::WechatOpenid,
        raw,
        16,
        64,
        "expected 16 to 64 characters of [A-Za-z0-9_-]",
    )
}

/// A Tongcheng or eLong app account id: 1 to 64 characters of `[A-Za-z0-9_-]`.
pub(crate) fn account(kind: IdentityKind, raw: &str) -> Result<String, IdentityError> {
    token(
        kind,
        raw,
        1,
        64,
        "expected 1 to 64 characters of [A-Za-z0-9_-]",
    )
}

/// An eLong membership card number: 6 to 20 ASCII digits, leading zeros kept.
pub(crate) fn card(raw: &str) -> Result<String, IdentityError> {
    let ok = (6..=20).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(invalid(IdentityKind::ElongCard, "expected 6 to 20 digits"))
    }
}
