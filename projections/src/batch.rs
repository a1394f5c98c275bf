//! Compacting a batch of records before a sink writes it.
//!
//! Within one batch only the newest state of each row can survive the guards of `sink`, so a
//! sink writes one document per member (the highest version) and one identity-index entry per
//! identity (the highest generation), instead of every intermediate state. This is a pure
//! function of the batch; the guards in the store still decide against what is already stored.

use std::collections::HashMap;

use member_domain::IdentityKey;
use uuid::Uuid;

use crate::{MemberDocument, MemberRecord};

/// An identity-index entry to write: the owner at `generation`, or a tombstone (`member_id`
/// `None`) that keeps its generation so an older bind cannot revive the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityEntry<'a> {
    pub key: &'a IdentityKey,
    pub member_id: Option<Uuid>,
    pub generation: u64,
}

/// The rows a batch writes, newest state only, sorted by key (member id, identity key) so that
/// concurrent writers lock rows in the same order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactBatch<'a> {
    pub documents: Vec<&'a MemberDocument>,
    pub identities: Vec<IdentityEntry<'a>>,
    /// Entries left behind by erased members (`member_id` `None`): delete each entry whose
    /// stored generation is not higher than `generation` (a higher one belongs to a later
    /// holder). Writes of this batch to those entries at or below that generation are dropped
    /// from `identities`, so a sink may run the writes and the deletions in either order.
    pub erased: Vec<IdentityEntry<'a>>,
}

impl<'a> CompactBatch<'a> {
    pub fn of(records: &'a [MemberRecord]) -> Self {
        let mut documents: HashMap<Uuid, &'a MemberDocument> = HashMap::new();
        let mut identities: HashMap<&'a IdentityKey, IdentityEntry<'a>> = HashMap::new();
        let mut erased: HashMap<&'a IdentityKey, u64> = HashMap::new();
        for record in records {
            for left in &record.erased_identities {
                let g = erased.entry(&left.key).or_default();
                *g = (*g).max(left.generation);
            }
            let doc = &record.document;
            documents
                .entry(doc.member_id)
                .and_modify(|kept| {
                    if doc.version > kept.version {
                        *kept = doc;
                    }
                })
                .or_insert(doc);
            if let Some(change) = &record.identity_change {
                let entry = IdentityEntry {
                    key: &change.key,
                    member_id: change.bound.then_some(record.event.member_id),
                    generation: change.generation,
                };
                identities
                    .entry(&change.key)
                    .and_modify(|kept| {
                        if entry.generation > kept.generation {
                            *kept = entry;
                        }
                    })
                    .or_insert(entry);
            }
        }
        let mut documents: Vec<_> = documents.into_values().collect();
        documents.sort_by_key(|d| d.member_id);
        let mut identities: Vec<_> = identities
            .into_values()
            .filter(|entry| erased.get(entry.key).is_none_or(|g| entry.generation > *g))
            .collect();
        identities.sort_by(|a, b| a.key.cmp(b.key));
        let mut erased: Vec<_> = erased
            .into_iter()
            .map(|(key, generation)| IdentityEntry {
                key,
                member_id: None,
                generation,
            })
            .collect();
        erased.sort_by(|a, b| a.key.cmp(b.key));
        Self {
            documents,
            identities,
            erased,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.documents.is_empty() && self.identities.is_empty() && self.erased.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::MemberHistory;
    use member_domain::{Identity, MemberEvent, UnbindReason};

    fn card(n: &str) -> Identity {
        Identity::parse("elong_card", n, None, None).unwrap()
    }

    fn history(id: Uuid, c: &Identity) -> MemberHistory {
        let mut h = MemberHistory::new(id);
        h.push(MemberEvent::MemberRegistered {}, None);
        h.push(
            MemberEvent::IdentityBound {
                identity: c.clone(),
            },
            Some(1),
        );
        h.push(
            MemberEvent::IdentityUnbound {
                identity: c.clone(),
                reason: UnbindReason::MemberRequest,
            },
            Some(2),
        );
        h
    }

    #[test]
    fn keeps_the_newest_document_and_entry_whatever_the_order() {
        let c = card("123456789");
        let h = history(Uuid::now_v7(), &c);
        let mut records = h.records().to_vec();
        records.reverse();
        records.extend(h.records().iter().cloned());
        let batch = CompactBatch::of(&records);
        assert_eq!(batch.documents, vec![&h.records()[2].document]);
        assert_eq!(
            batch.identities,
            vec![IdentityEntry {
                key: &c.key(),
                member_id: None,
                generation: 2
            }]
        );
    }

    #[test]
    fn an_identity_moving_between_members_keeps_the_higher_generation() {
        let c = card("987654321");
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let ha = history(a, &c);
        let mut hb = MemberHistory::new(b);
        hb.push(MemberEvent::MemberRegistered {}, None);
        hb.push(
            MemberEvent::IdentityBound {
                identity: c.clone(),
            },
            Some(3),
        );
        let mut records = hb.records().to_vec();
        records.extend(ha.records().iter().cloned());
        let batch = CompactBatch::of(&records);
        assert_eq!(batch.documents.len(), 2);
        assert!(batch
            .documents
            .windows(2)
            .all(|w| w[0].member_id < w[1].member_id));
        assert_eq!(batch.identities.len(), 1);
        assert_eq!(batch.identities[0].member_id, Some(b));
        assert_eq!(batch.identities[0].generation, 3);
    }

    #[test]
    fn an_erasure_deletes_the_entries_its_member_left_and_drops_their_writes() {
        let (kept, moved) = (card("111111111"), card("222222222"));
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let mut ha = MemberHistory::new(a);
        ha.push(MemberEvent::MemberRegistered {}, None);
        ha.push(
            MemberEvent::IdentityBound {
                identity: kept.clone(),
            },
            Some(1),
        );
        ha.push(
            MemberEvent::IdentityBound {
                identity: moved.clone(),
            },
            Some(1),
        );
        ha.push(
            MemberEvent::IdentityUnbound {
                identity: kept.clone(),
                reason: UnbindReason::MemberErased,
            },
            Some(2),
        );
        ha.push(
            MemberEvent::IdentityUnbound {
                identity: moved.clone(),
                reason: UnbindReason::MemberErased,
            },
            Some(2),
        );
        ha.push(MemberEvent::MemberErased {}, None);
        // `moved` is bound again by another member (generation 3) in the same batch.
        let mut hb = MemberHistory::new(b);
        hb.push(MemberEvent::MemberRegistered {}, None);
        hb.push(
            MemberEvent::IdentityBound {
                identity: moved.clone(),
            },
            Some(3),
        );
        let erasure = ha.records().last().unwrap();
        assert!(erasure.document.identities.is_empty() && erasure.document.released.is_empty());
        assert_eq!(erasure.erased_identities.len(), 2);

        let mut records = ha.records().to_vec();
        records.extend(hb.records().iter().cloned());
        let batch = CompactBatch::of(&records);
        let erased: Vec<_> = batch
            .erased
            .iter()
            .map(|e| (e.key.clone(), e.generation))
            .collect();
        let mut expected = vec![(kept.key(), 2), (moved.key(), 2)];
        expected.sort();
        assert_eq!(erased, expected);
        // The erased member's own entries are not written; the new holder's is.
        assert_eq!(
            batch.identities,
            vec![IdentityEntry {
                key: &moved.key(),
                member_id: Some(b),
                generation: 3
            }]
        );
        let doc = batch.documents.iter().find(|d| d.member_id == a).unwrap();
        assert_eq!(doc.status, member_domain::MemberStatus::Erased);
    }

    #[test]
    fn an_empty_batch_writes_nothing() {
        assert!(CompactBatch::of(&[]).is_empty());
    }
}
