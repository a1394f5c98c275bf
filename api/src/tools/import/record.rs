//! The legacy export format (one JSON object per line, docs/operations/import-and-governance.md)
//! and its translation into a registration. Pure.
//!
//! Everything a record can get wrong on its own (a malformed line, an invalid value, two openids
//! of one app, an openid naming another unionid than the record's) is found here, by the same
//! validation as the API's (`Identity::parse`) and by the aggregate's own decision
//! (`Member::decide`), before anything touches the store.

use member_domain::{Identity, IdentityError, Member, MemberCommand, MemberError};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One member relationship of the old databases, as exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyRecord {
    /// The member's id in the old system: names the new member (deterministically).
    pub legacy_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mobile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unionid: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub openids: Vec<LegacyOpenid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tongcheng_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elong_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elong_card: Option<String>,
}

/// An openid of a mini-program. `unionid` is the unionid the old system recorded for this openid;
/// when absent, the record's own `unionid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyOpenid {
    pub app: String,
    pub openid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unionid: Option<String>,
}

/// Why a record is quarantined instead of imported. The codes are stable (report, table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Not a JSON object of the format, or no legacy_id.
    Malformed,
    /// A value fails validation (detail: which kind).
    InvalidValue,
    /// No identity at all.
    NoIdentities,
    /// An openid without a unionid (neither its own nor the record's).
    OpenidWithoutUnionid,
    /// Two openids of the same mini-program.
    DuplicateIdentityKind,
    /// An openid recorded under another unionid than the record's: the old system's
    /// cross-account binding.
    ConflictingUnionids,
    /// An identity already belongs to another member (detail: which kind).
    IdentityOwnedByAnotherMember,
    /// An openid whose unionid belongs to another member.
    CrossAccountWechat,
    /// The legacy id was imported before with other identities.
    LegacyIdReused,
}

impl Reason {
    pub const ALL: [Reason; 9] = [
        Reason::Malformed,
        Reason::InvalidValue,
        Reason::NoIdentities,
        Reason::OpenidWithoutUnionid,
        Reason::DuplicateIdentityKind,
        Reason::ConflictingUnionids,
        Reason::IdentityOwnedByAnotherMember,
        Reason::CrossAccountWechat,
        Reason::LegacyIdReused,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::InvalidValue => "invalid_value",
            Reason::NoIdentities => "no_identities",
            Reason::OpenidWithoutUnionid => "openid_without_unionid",
            Reason::DuplicateIdentityKind => "duplicate_identity_kind",
            Reason::ConflictingUnionids => "conflicting_unionids",
            Reason::IdentityOwnedByAnotherMember => "identity_owned_by_another_member",
            Reason::CrossAccountWechat => "cross_account_wechat",
            Reason::LegacyIdReused => "legacy_id_reused",
        }
    }

    pub fn parse(code: &str) -> Option<Reason> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }

    /// Whether the record itself is at fault: no change in the store can make it importable.
    pub fn is_intrinsic(self) -> bool {
        !matches!(
            self,
            Reason::IdentityOwnedByAnotherMember
                | Reason::CrossAccountWechat
                | Reason::LegacyIdReused
        )
    }
}

/// A record refused: the reason and a detail that is never personal data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub detail: Option<String>,
}

impl Refusal {
    pub fn new(reason: Reason) -> Self {
        Self {
            reason,
            detail: None,
        }
    }

    fn with_detail(reason: Reason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: Some(detail.into()),
        }
    }
}

/// A line that is not a record: its legacy id when one could be read, and what is wrong (the
/// JSON error's category and column, never the line's content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub legacy_id: Option<String>,
    pub detail: String,
}

/// Parses one line of the export.
pub fn parse_line(line: &str) -> Result<LegacyRecord, Malformed> {
    serde_json::from_str::<LegacyRecord>(line).map_err(|e| {
        let legacy_id = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("legacy_id")?.as_str().map(str::to_owned));
        let category = match e.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "data",
            serde_json::error::Category::Eof => "eof",
        };
        Malformed {
            legacy_id,
            detail: format!("{category} error at column {}", e.column()),
        }
    })
}

impl LegacyRecord {
    /// The member this record becomes: the same legacy id always names the same member.
    pub fn member_id(&self) -> Uuid {
        crate::tools::ids::name_based("member-legacy", &self.legacy_id)
    }

    /// The registration the record asks for, checked against the member's own rules.
    pub fn registration(&self) -> Result<Vec<Identity>, Refusal> {
        if self.legacy_id.trim().is_empty() {
            return Err(Refusal::with_detail(Reason::Malformed, "empty legacy_id"));
        }
        let mut identities = Vec::new();
        let simple = [("mobile", &self.mobile), ("wechat_unionid", &self.unionid)];
        for (kind, value) in simple {
            if let Some(value) = value {
                identities.push(parse(kind, value, None, None)?);
            }
        }
        for openid in &self.openids {
            let unionid = openid
                .unionid
                .as_ref()
                .or(self.unionid.as_ref())
                .ok_or(Refusal::new(Reason::OpenidWithoutUnionid))?;
            identities.push(parse(
                "wechat_openid",
                &openid.openid,
                Some(&openid.app),
                Some(unionid),
            )?);
        }
        let accounts = [
            ("tongcheng_account", &self.tongcheng_account),
            ("elong_account", &self.elong_account),
            ("elong_card", &self.elong_card),
        ];
        for (kind, value) in accounts {
            if let Some(value) = value {
                identities.push(parse(kind, value, None, None)?);
            }
        }
        // The aggregate's own rules, decided on an empty member: what the store would refuse
        // whoever owns what.
        Member::default()
            .decide(MemberCommand::Register {
                identities: identities.clone(),
            })
            .map_err(|e| match e {
                MemberError::NoIdentities => Refusal::new(Reason::NoIdentities),
                MemberError::IdentityKindAlreadyBound(kind) => {
                    Refusal::with_detail(Reason::DuplicateIdentityKind, kind.as_str())
                }
                MemberError::CrossAccountWechatBinding => Refusal::new(Reason::ConflictingUnionids),
                other => Refusal::with_detail(Reason::InvalidValue, other.code()),
            })?;
        Ok(identities)
    }
}

fn parse(
    kind: &str,
    value: &str,
    app: Option<&str>,
    unionid: Option<&str>,
) -> Result<Identity, Refusal> {
    Identity::parse(kind, value, app, unionid).map_err(|e| {
        let detail = match e {
            IdentityError::InvalidValue { kind, .. }
            | IdentityError::MissingField { kind, .. }
            | IdentityError::UnexpectedField { kind, .. } => kind.as_str().to_owned(),
            IdentityError::UnknownApp => "wechat_openid app".to_owned(),
            IdentityError::UnknownKind => kind.to_owned(),
        };
        Refusal::with_detail(Reason::InvalidValue, detail)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNION_A: &str = "oUnionAAAAAAAAAAAAAAAAAAAAAAAA";
    const UNION_B: &str = "oUnionBBBBBBBBBBBBBBBBBBBBBBBB";

    fn record(json: &str) -> LegacyRecord {
        parse_line(json).expect("a record")
    }

    #[test]
    fn a_full_record_becomes_a_registration_in_the_domain_order() {
        let r = record(&format!(
            r#"{{"legacy_id":"L1","mobile":"13800138000","unionid":"{UNION_A}",
                "openids":[{{"app":"tongcheng_mp","openid":"oOpenidTC000000001"}},
                           {{"app":"elong_mp","openid":"oOpenidEL000000001","unionid":"{UNION_A}"}}],
                "tongcheng_account":"tc1","elong_account":"el1","elong_card":"88001234"}}"#
        ));
        let identities = r.registration().expect("valid");
        assert_eq!(identities.len(), 7);
        assert_eq!(identities[0].value(), "+8613800138000");
        assert_eq!(r.member_id(), record(r#"{"legacy_id":"L1"}"#).member_id());
    }

    #[test]
    fn malformed_lines_are_reported_without_their_content() {
        let m = parse_line(r#"{"legacy_id":"L2","mobile":138}"#).unwrap_err();
        assert_eq!(m.legacy_id.as_deref(), Some("L2"));
        assert!(m.detail.starts_with("data error"));
        assert!(!m.detail.contains("138"));
        assert_eq!(parse_line("not json").unwrap_err().legacy_id, None);
        assert!(parse_line(r#"{"legacy_id":"L3","typo":"x"}"#).is_err());
        assert!(parse_line(r#"{"mobile":"13800138000"}"#).is_err());
    }

    #[test]
    fn records_wrong_in_themselves_are_refused_with_their_reason() {
        let reason = |json: &str| record(json).registration().unwrap_err();
        assert_eq!(
            reason(r#"{"legacy_id":"x","mobile":"12345"}"#),
            Refusal::with_detail(Reason::InvalidValue, "mobile")
        );
        assert_eq!(reason(r#"{"legacy_id":"x"}"#).reason, Reason::NoIdentities);
        assert_eq!(
            reason(
                r#"{"legacy_id":"x","openids":[{"app":"elong_mp","openid":"oOpenidEL000000001"}]}"#
            )
            .reason,
            Reason::OpenidWithoutUnionid
        );
        assert_eq!(
            reason(&format!(
                r#"{{"legacy_id":"x","unionid":"{UNION_A}","openids":[{{"app":"elong_mp","openid":"oOpenidEL000000001","unionid":"{UNION_B}"}}]}}"#
            ))
            .reason,
            Reason::ConflictingUnionids
        );
        assert_eq!(
            reason(&format!(
                r#"{{"legacy_id":"x","unionid":"{UNION_A}","openids":[{{"app":"elong_mp","openid":"oOpenidEL000000001"}},{{"app":"elong_mp","openid":"oOpenidEL000000002"}}]}}"#
            ))
            .reason,
            Reason::DuplicateIdentityKind
        );
        assert_eq!(
            reason(&format!(
                r#"{{"legacy_id":"x","unionid":"{UNION_A}","openids":[{{"app":"qq","openid":"oOpenidEL000000001"}}]}}"#
            ))
            .reason,
            Reason::InvalidValue
        );
    }

    #[test]
    fn reason_codes_round_trip() {
        for reason in Reason::ALL {
            assert_eq!(Reason::parse(reason.code()), Some(reason));
        }
    }
}
