//! Checks of the sink port that the shared contract suite (`sink_contract`) does not make yet,
//! run by the MySQL and Redis adapter tests.
//!
//! The contract suite writes each member's newest state in its first batch, so it never checks
//! that a *newer* document replaces a stored one; live consumption does exactly that, usually one
//! record per batch. Proposed for the contract suite (with polled reads there: these checks read
//! immediately, so they hold only for stores that read their own writes).

use member_domain::{Identity, IdentityKey, MemberEvent, UnbindReason};
use member_projections::fixtures::MemberHistory;
use member_projections::{MemberReader, Sink};
use uuid::Uuid;

use crate::sink_contract::Ids;

/// Applies a member's history one record per batch, then in batches of two, and checks after
/// every batch that the store serves the newest document by id and by identity.
pub async fn later_batches_replace_stored_documents(sink: &dyn Sink, reader: &dyn MemberReader) {
    for batch_size in [1, 2] {
        let ids = Ids::fresh();
        let id = Uuid::now_v7();
        let mut h = MemberHistory::new(id);
        h.push(MemberEvent::MemberRegistered {}, None);
        h.push(bound(&ids.mobile), Some(1));
        h.push(bound(&ids.card), Some(1));
        h.push(bound(&ids.unionid), Some(1));
        h.push(
            MemberEvent::IdentityUnbound {
                identity: ids.card.clone(),
                reason: UnbindReason::MemberRequest,
            },
            Some(2),
        );
        h.push(bound(&ids.card), Some(3));
        for chunk in h.records().chunks(batch_size) {
            sink.apply(chunk).await.expect("sink applies the batch");
            let doc = &chunk.last().unwrap().document;
            let what = format!("{} after version {}", reader.target(), doc.version);
            assert_eq!(
                reader.by_id(id).await.expect("read by id").as_ref(),
                Some(doc),
                "{what}: by id"
            );
            let mobile: IdentityKey = ids.mobile.key();
            if doc.generation_of(&mobile).is_some() {
                assert_eq!(
                    reader.by_identity(&mobile).await.expect("read").as_ref(),
                    Some(doc),
                    "{what}: by mobile"
                );
            }
            let card = reader.by_identity(&ids.card.key()).await.expect("read");
            let expected = doc.generation_of(&ids.card.key()).map(|_| doc);
            assert_eq!(card.as_ref(), expected, "{what}: by card");
        }
    }
}

fn bound(identity: &Identity) -> MemberEvent {
    MemberEvent::IdentityBound {
        identity: identity.clone(),
    }
}
