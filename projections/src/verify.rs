//! Comparing a read store with the truth (the fold of the event store), without I/O: what
//! `member verify` reports and `--repair` fixes.
//!
//! A document is compared on what readers rely on: version, status, the identities it holds and
//! the ones it released, each with its generation. `updated_at` is not compared (stores keep it
//! at different precisions, and it follows from the version).

use member_domain::IdentityKey;
use serde::Serialize;
use uuid::Uuid;

use crate::MemberDocument;

/// What is wrong with one member in a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// The member exists in the event store, not in the store.
    Missing,
    /// The store holds a member the event store does not know.
    Extra,
    /// The store holds an older version than the event store.
    Stale,
    /// The store holds the member at the truth's version (or a newer one, which the event store
    /// never produced) with other content: corrupted.
    Diverged,
    /// A lookup by one of the member's identities does not return the member.
    IdentityMisrouted,
    /// A lookup by an identity that nobody holds returns a member.
    IdentityLeaked,
}

impl FindingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::Missing => "missing",
            FindingKind::Extra => "extra",
            FindingKind::Stale => "stale",
            FindingKind::Diverged => "diverged",
            FindingKind::IdentityMisrouted => "identity_misrouted",
            FindingKind::IdentityLeaked => "identity_leaked",
        }
    }
}

/// One difference, with what an operator needs to look at it (identities redacted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub member_id: Uuid,
    /// The identity concerned ([`redacted`]), for identity findings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The identity in clear, for repair; never printed (personal data).
    #[serde(skip)]
    pub identity_key: Option<IdentityKey>,
    /// The truth's version, when the member exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<u64>,
    /// The stored version, when the store holds the member.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_version: Option<u64>,
}

impl Finding {
    pub fn document(
        kind: FindingKind,
        member_id: Uuid,
        truth: Option<u64>,
        stored: Option<u64>,
    ) -> Self {
        Self {
            kind,
            member_id,
            identity: None,
            identity_key: None,
            expected_version: truth,
            stored_version: stored,
        }
    }

    pub fn identity(kind: FindingKind, member_id: Uuid, key: &IdentityKey) -> Self {
        Self {
            kind,
            member_id,
            identity: Some(redacted(key)),
            identity_key: Some(key.clone()),
            expected_version: None,
            stored_version: None,
        }
    }
}

/// An identity as reports show it: its kind and a fingerprint of the value
/// (`elong_card:#1a2b3c4d`), enough to correlate findings without printing personal data.
pub fn redacted(key: &IdentityKey) -> String {
    let text = key.to_string();
    let kind = text.split(':').next().unwrap_or("identity");
    format!(
        "{kind}:#{:08x}",
        crate::shards::stable_hash(text.as_bytes()) as u32
    )
}

/// Compares the stored document of a member with the truth. `None` when they agree.
pub fn compare_documents(
    member_id: Uuid,
    truth: Option<&MemberDocument>,
    stored: Option<&MemberDocument>,
) -> Option<Finding> {
    let kind = match (truth, stored) {
        (None, None) => return None,
        (Some(_), None) => FindingKind::Missing,
        (None, Some(_)) => FindingKind::Extra,
        (Some(t), Some(s)) if s.version < t.version => FindingKind::Stale,
        (Some(t), Some(s)) if s.version == t.version && same_content(t, s) => return None,
        (Some(_), Some(_)) => FindingKind::Diverged,
    };
    Some(Finding::document(
        kind,
        member_id,
        truth.map(|d| d.version),
        stored.map(|d| d.version),
    ))
}

fn same_content(a: &MemberDocument, b: &MemberDocument) -> bool {
    let sorted = |doc: &MemberDocument, released: bool| {
        let list = if released {
            &doc.released
        } else {
            &doc.identities
        };
        let mut v: Vec<_> = list
            .iter()
            .map(|i| (i.key.to_string(), i.generation))
            .collect();
        v.sort();
        v
    };
    a.member_id == b.member_id
        && a.status == b.status
        && sorted(a, false) == sorted(b, false)
        && sorted(a, true) == sorted(b, true)
}

/// Checks what a lookup by `key` returned against the truth: `holder` is the member that holds
/// the identity in the event store (`None`: nobody), `found` the member the store returned.
pub fn compare_lookup(
    key: &IdentityKey,
    holder: Option<Uuid>,
    found: Option<Uuid>,
) -> Option<Finding> {
    match (holder, found) {
        (Some(h), f) if f != Some(h) => {
            Some(Finding::identity(FindingKind::IdentityMisrouted, h, key))
        }
        (None, Some(f)) => Some(Finding::identity(FindingKind::IdentityLeaked, f, key)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::MemberHistory;
    use member_domain::{Identity, MemberEvent};

    fn doc_with_card(id: Uuid, n: &str) -> MemberDocument {
        let mut h = MemberHistory::new(id);
        h.push(MemberEvent::MemberRegistered {}, None);
        h.push(
            MemberEvent::IdentityBound {
                identity: Identity::parse("elong_card", &format!("10000{n}"), None, None).unwrap(),
            },
            Some(1),
        );
        h.records().last().unwrap().document.clone()
    }

    #[test]
    fn equal_documents_agree_and_every_difference_has_its_kind() {
        let id = Uuid::new_v4();
        let truth = doc_with_card(id, "1");
        assert_eq!(compare_documents(id, Some(&truth), Some(&truth)), None);
        assert_eq!(compare_documents(id, None, None), None);
        let kind = |t: Option<&MemberDocument>, s: Option<&MemberDocument>| {
            compare_documents(id, t, s).map(|f| f.kind)
        };
        assert_eq!(kind(Some(&truth), None), Some(FindingKind::Missing));
        assert_eq!(kind(None, Some(&truth)), Some(FindingKind::Extra));
        let mut older = truth.clone();
        older.version -= 1;
        assert_eq!(kind(Some(&truth), Some(&older)), Some(FindingKind::Stale));
        let other = doc_with_card(id, "2");
        assert_eq!(
            kind(Some(&truth), Some(&other)),
            Some(FindingKind::Diverged)
        );
        let mut newer = truth.clone();
        newer.version += 5;
        assert_eq!(
            kind(Some(&truth), Some(&newer)),
            Some(FindingKind::Diverged)
        );
    }

    #[test]
    fn lookups_must_return_the_holder_or_nothing() {
        let key = Identity::parse("elong_card", "100007", None, None)
            .unwrap()
            .key();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(compare_lookup(&key, Some(a), Some(a)), None);
        assert_eq!(compare_lookup(&key, None, None), None);
        let kind = |h, f| compare_lookup(&key, h, f).map(|f| f.kind);
        assert_eq!(kind(Some(a), None), Some(FindingKind::IdentityMisrouted));
        assert_eq!(kind(Some(a), Some(b)), Some(FindingKind::IdentityMisrouted));
        assert_eq!(kind(None, Some(b)), Some(FindingKind::IdentityLeaked));
    }
}
