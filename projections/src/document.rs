//! The member document: what every read store serves, and the fold that builds it.

use std::borrow::Cow;
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use member_domain::{IdentityKey, Member, MemberEvent, MemberStatus};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A member as every read store holds it. The query API serves it without the generations:
/// `{"member_id", "version", "status", "identities": [{"kind", "value", "app"?}], "updated_at"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberDocument {
    pub member_id: Uuid,
    /// The aggregate version this document reflects; stores never replace a document by one
    /// with a version that is not higher.
    pub version: u64,
    pub status: MemberStatus,
    pub identities: Vec<BoundIdentity>,
    pub updated_at: DateTime<Utc>,
    /// Identities this member unbound, with the generation of the unbind (the latest per
    /// identity; an identity bound again leaves this list). Stores that keep no identity index of
    /// their own (search) use them as tombstones: when an identity moved on and was released
    /// again, the release outranks an older holder whose own unbind has not arrived yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub released: Vec<BoundIdentity>,
}

/// An identity in a document, with the ownership generation at which it was bound to this member
/// (see `IdentityChange`): when an identity moves between members and a store briefly holds both
/// documents, the higher generation is the current owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundIdentity {
    #[serde(flatten)]
    pub key: IdentityKey,
    pub generation: u64,
}

impl MemberDocument {
    /// Whether the document released the identity, and at which generation.
    pub fn released_at(&self, key: &IdentityKey) -> Option<u64> {
        self.released
            .iter()
            .find(|i| &i.key == key)
            .map(|i| i.generation)
    }

    /// Whether the document holds the identity, and at which generation.
    pub fn generation_of(&self, key: &IdentityKey) -> Option<u64> {
        self.identities
            .iter()
            .find(|i| &i.key == key)
            .map(|i| i.generation)
    }

    /// The document as the query API's contract shows it (no generations), with mobiles masked
    /// (`+86138****8000`) when `mask_mobiles` is set (marketing callers). Borrowed, to serialize
    /// straight to the response (no `serde_json::Value` built and walked on every read).
    pub fn public(&self, mask_mobiles: bool) -> PublicDocument<'_> {
        PublicDocument {
            identities: self
                .identities
                .iter()
                .map(|i| {
                    if mask_mobiles {
                        Cow::Owned(i.key.masked())
                    } else {
                        Cow::Borrowed(&i.key)
                    }
                })
                .collect(),
            member_id: self.member_id,
            status: &self.status,
            updated_at: self.updated_at,
            version: self.version,
        }
    }
}

/// A [`MemberDocument`] as the query API shows it ([`MemberDocument::public`]).
#[derive(Debug, Serialize)]
pub struct PublicDocument<'a> {
    identities: Vec<Cow<'a, IdentityKey>>,
    member_id: Uuid,
    status: &'a MemberStatus,
    updated_at: DateTime<Utc>,
    version: u64,
}

/// The pure fold of one member's events into its document.
///
/// It applies events through the aggregate's own `apply`, so the read side can never disagree
/// with the write side about what a sequence of events means.
#[derive(Debug, Clone)]
pub struct MemberFold {
    member_id: Uuid,
    state: Member,
    updated_at: DateTime<Utc>,
    generations: HashMap<IdentityKey, u64>,
    released: std::collections::BTreeMap<IdentityKey, u64>,
    /// After `MemberErased`: every identity-index entry the member left behind (the identities it
    /// released, with the generation of the release), for the stores to delete.
    erased: Vec<BoundIdentity>,
}

impl MemberFold {
    pub fn new(member_id: Uuid) -> Self {
        Self {
            member_id,
            state: Member::default(),
            updated_at: DateTime::<Utc>::UNIX_EPOCH,
            generations: HashMap::new(),
            released: Default::default(),
            erased: Vec::new(),
        }
    }

    /// Applies the event with the given aggregate sequence and, for binds and unbinds, the
    /// identity's ownership generation (from the event's metadata). Sequences must follow each
    /// other (1, 2, 3, ...); a gap or repeat is a bug in the caller and is reported, not applied.
    pub fn apply(
        &mut self,
        sequence: u64,
        event: MemberEvent,
        recorded_at: DateTime<Utc>,
        generation: Option<u64>,
    ) -> Result<(), FoldError> {
        let expected = self.state.version() + 1;
        if sequence != expected {
            return Err(FoldError {
                member_id: self.member_id,
                expected,
                got: sequence,
            });
        }
        match &event {
            MemberEvent::IdentityBound { identity } => {
                self.generations
                    .insert(identity.key(), generation.unwrap_or_default());
                self.released.remove(&identity.key());
            }
            MemberEvent::IdentityUnbound { identity, .. } => {
                self.generations.remove(&identity.key());
                self.released
                    .insert(identity.key(), generation.unwrap_or_default());
            }
            MemberEvent::MemberErased {} => {
                // The document keeps no personal data from here on: no identities, no released
                // ones. What the stores must delete is handed over once, with the erasure.
                self.erased = std::mem::take(&mut self.released)
                    .into_iter()
                    .chain(self.generations.drain())
                    .map(|(key, generation)| BoundIdentity { key, generation })
                    .collect();
                self.erased.sort_by(|a, b| a.key.cmp(&b.key));
            }
            _ => {}
        }
        self.state.apply_event(event);
        self.updated_at = recorded_at;
        Ok(())
    }

    pub fn version(&self) -> u64 {
        self.state.version()
    }

    /// Once the member was erased: the identity-index entries it left behind, which the record
    /// of its `MemberErased` event tells the stores to delete ([`MemberRecord::erased_identities`]).
    ///
    /// [`MemberRecord::erased_identities`]: crate::MemberRecord::erased_identities
    pub fn erased_identities(&self) -> &[BoundIdentity] {
        &self.erased
    }

    pub fn document(&self) -> MemberDocument {
        MemberDocument {
            member_id: self.member_id,
            version: self.state.version(),
            status: self.state.status(),
            identities: self
                .state
                .identities()
                .iter()
                .map(|i| {
                    let key = i.key();
                    let generation = self.generations.get(&key).copied().unwrap_or_default();
                    BoundIdentity { key, generation }
                })
                .collect(),
            updated_at: self.updated_at,
            released: self
                .released
                .iter()
                .map(|(key, generation)| BoundIdentity {
                    key: key.clone(),
                    generation: *generation,
                })
                .collect(),
        }
    }
}

/// Events of one member were not contiguous.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("member {member_id}: expected event sequence {expected}, got {got}")]
pub struct FoldError {
    pub member_id: Uuid,
    pub expected: u64,
    pub got: u64,
}

#[cfg(test)]
mod public_tests {
    use super::*;

    fn document() -> MemberDocument {
        let mobile = IdentityKey::parse("mobile", "13800138000").unwrap();
        let openid =
            IdentityKey::parse("wechat_openid", "tongcheng_mp:o6_bmjrPTlm6_2sgVt7hMZOPfL2M")
                .unwrap();
        MemberDocument {
            member_id: Uuid::from_u128(7),
            version: 3,
            status: MemberStatus::Active,
            identities: vec![
                BoundIdentity {
                    key: mobile,
                    generation: 1,
                },
                BoundIdentity {
                    key: openid,
                    generation: 2,
                },
            ],
            updated_at: DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap(),
            released: vec![],
        }
    }

    #[test]
    fn the_public_form_has_no_generations_and_masks_mobiles_for_marketing() {
        let doc = document();
        for (mask, mobile) in [(false, "+8613800138000"), (true, "+86138****8000")] {
            let bytes = serde_json::to_vec(&doc.public(mask)).unwrap();
            let shown: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let expected = serde_json::json!({
                "member_id": "00000000-0000-0000-0000-000000000007",
                "version": 3,
                "status": "active",
                "identities": [
                    {"kind": "mobile", "value": mobile},
                    {"kind": "wechat_openid", "app": "tongcheng_mp", "value": "o6_bmjrPTlm6_2sgVt7hMZOPfL2M"},
                ],
                "updated_at": "2023-11-14T22:13:20Z",
            });
            assert_eq!(shown, expected, "mask {mask}");
        }
    }
}
