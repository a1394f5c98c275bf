//! Writing final documents (from a fold of the event store) through the ordinary sink port.
//!
//! A rebuild folds each member once and writes only its final document. Sinks take records, so
//! a document is turned into the records that carry it: one per identity it holds (a bind at
//! the identity's generation) and one per identity it released (an unbind at the release's
//! generation), or a single record without identity change. Every record carries the same
//! final document, so after [`crate::CompactBatch`] a sink writes one document per member and
//! one index entry per identity, under the same guards as live records: a rebuild overlapping
//! the live projector can never move anything backwards, whichever writes last.
//!
//! These records never go to Kafka; their envelope says so (`event_type` [`SNAPSHOT_EVENT`],
//! nil event id, position 0).

use member_domain::IdentityKey;

use crate::{EventEnvelope, IdentityChange, MemberDocument, MemberRecord, RECORD_SCHEMA_VERSION};

/// The `event_type` of a record made from a folded document.
pub const SNAPSHOT_EVENT: &str = "MemberSnapshot";

/// The records that write `doc` (and its identity-index entries) into a sink.
pub fn snapshot_records(doc: &MemberDocument) -> Vec<MemberRecord> {
    let record = |change: Option<(&IdentityKey, bool, u64)>| MemberRecord {
        schema_version: RECORD_SCHEMA_VERSION,
        event: EventEnvelope {
            event_id: uuid::Uuid::nil(),
            member_id: doc.member_id,
            version: doc.version,
            position: 0,
            event_type: SNAPSHOT_EVENT.to_owned(),
            event_version: "1.0".to_owned(),
            recorded_at: doc.updated_at,
            payload: serde_json::Value::Null,
        },
        identity_change: change.map(|(key, bound, generation)| IdentityChange {
            key: key.clone(),
            bound,
            generation,
        }),
        document: doc.clone(),
        erased_identities: Vec::new(),
    };
    let mut records: Vec<MemberRecord> = doc
        .identities
        .iter()
        .map(|i| record(Some((&i.key, true, i.generation))))
        .chain(
            doc.released
                .iter()
                .map(|i| record(Some((&i.key, false, i.generation)))),
        )
        .collect();
    if records.is_empty() {
        records.push(record(None));
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::MemberHistory;
    use crate::CompactBatch;
    use member_domain::{Identity, MemberEvent, UnbindReason};
    use uuid::Uuid;

    fn card(n: &str) -> Identity {
        Identity::parse("elong_card", &format!("10000{n}"), None, None).unwrap()
    }

    #[test]
    fn a_snapshot_compacts_to_the_document_and_one_entry_per_identity() {
        let id = Uuid::new_v4();
        let mut h = MemberHistory::new(id);
        h.push(MemberEvent::MemberRegistered {}, None);
        h.push(
            MemberEvent::IdentityBound {
                identity: card("1"),
            },
            Some(3),
        );
        h.push(
            MemberEvent::IdentityBound {
                identity: card("2"),
            },
            Some(4),
        );
        h.push(
            MemberEvent::IdentityUnbound {
                identity: card("1"),
                reason: UnbindReason::MemberRequest,
            },
            Some(7),
        );
        let doc = h.records().last().unwrap().document.clone();
        let records = snapshot_records(&doc);
        assert_eq!(records.len(), 2);
        let batch = CompactBatch::of(&records);
        assert_eq!(batch.documents, vec![&doc]);
        let entries: Vec<_> = batch
            .identities
            .iter()
            .map(|e| (e.key.to_string(), e.member_id, e.generation))
            .collect();
        assert_eq!(
            entries,
            vec![
                ("elong_card:100001".to_owned(), None, 7),
                ("elong_card:100002".to_owned(), Some(id), 4)
            ]
        );
    }

    #[test]
    fn a_member_without_identities_still_writes_its_document() {
        let mut h = MemberHistory::new(Uuid::new_v4());
        h.push(MemberEvent::MemberRegistered {}, None);
        let doc = h.records().last().unwrap().document.clone();
        let records = snapshot_records(&doc);
        assert_eq!(records.len(), 1);
        assert!(records[0].identity_change.is_none());
        assert_eq!(records[0].document, doc);
    }
}
