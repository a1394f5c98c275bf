//! The contract of the sink and reader ports (see `projections::sink`), one suite run against
//! every adapter: MySQL, Redis, tantivy, Elasticsearch.
//!
//! Reads are polled until they match (up to 10 s), because search stores are near-real-time:
//! a write becomes visible on refresh. Every scenario uses fresh member ids and identity values,
//! so the suite can run against a shared store.

use std::time::Duration;

use member_domain::{Identity, IdentityKey, MemberEvent, UnbindReason};
use member_projections::fixtures::MemberHistory;
use member_projections::{MemberDocument, MemberReader, MemberRecord, Sink};
use rand::Rng;
use uuid::Uuid;

/// One test per scenario of the contract, each against a store of its own, so that the first
/// failure does not hide the others (quickwit's shape). In an adapter's test file:
///
/// ```ignore
/// async fn open() -> (Store, Guard) { ... }            // the store, and what must outlive it
/// async fn close(store: Store, guard: Guard) { ... }   // cleanup after a passing scenario
/// mod contract {
///     member_tests::sink_contract_tests!(super::open, super::close);
/// }
/// ```
#[macro_export]
macro_rules! sink_contract_tests {
    ($open:path, $close:path) => {
        $crate::sink_contract_tests!(@each $open, $close,
            visible_by_id_and_by_every_identity,
            later_batches_replace_stored_documents,
            duplicates_and_replays_never_move_a_document_backwards,
            out_of_order_delivery_within_a_batch_converges,
            unbind_removes_the_identity,
            an_identity_moving_between_members_follows_its_generation,
            unknown_members_and_identities_are_absent,
            erasure_leaves_a_tombstone_and_no_identity,
            replays_never_bring_an_erased_member_back,
            a_recycled_identity_belongs_to_its_new_holder,
        );
    };
    (@each $open:path, $close:path, $($scenario:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                let (store, guard) = $open().await;
                $crate::sink_contract::$scenario(&store, &store).await;
                $close(store, guard).await;
            }
        )+
    };
}

/// An erased member's history: full member, then the erasure's unbinds (generation 2 each) and
/// `MemberErased`. Returns the records before the erasure and the whole history.
pub fn erased_member(ids: &Ids) -> (Uuid, Vec<MemberRecord>, MemberHistory) {
    let (id, mut h) = full_member(ids);
    let before = h.records().to_vec();
    for identity in [&ids.mobile, &ids.unionid, &ids.openid, &ids.card] {
        h.push(
            MemberEvent::IdentityUnbound {
                identity: identity.clone(),
                reason: UnbindReason::MemberErased,
            },
            Some(2),
        );
    }
    h.push(MemberEvent::MemberErased {}, None);
    (id, before, h)
}

/// The tombstone an erased member leaves: its id and version, status `erased`, nothing else
/// that could identify the person.
fn assert_tombstone(doc: &MemberDocument) {
    assert_eq!(doc.status, member_domain::MemberStatus::Erased);
    assert!(doc.identities.is_empty(), "no identities: {doc:?}");
    assert!(doc.released.is_empty(), "no released identities: {doc:?}");
}

pub async fn erasure_leaves_a_tombstone_and_no_identity(
    sink: &dyn Sink,
    reader: &dyn MemberReader,
) {
    // Erased in a later batch than the binds (the usual case) ...
    let ids = Ids::fresh();
    let (id, before, h) = erased_member(&ids);
    apply(sink, &before).await;
    expect_by_identity(reader, &ids.mobile, Some(&before.last().unwrap().document)).await;
    apply(sink, &h.records()[before.len()..]).await;
    let tombstone = &h.records().last().unwrap().document;
    assert_tombstone(tombstone);
    expect_by_id(reader, id, Some(tombstone)).await;
    for identity in [&ids.mobile, &ids.unionid, &ids.openid, &ids.card] {
        expect_by_identity(reader, identity, None).await;
    }
    // ... and in the same batch as everything else.
    let ids = Ids::fresh();
    let (id, _, h) = erased_member(&ids);
    apply(sink, h.records()).await;
    expect_by_id(reader, id, Some(&h.records().last().unwrap().document)).await;
    for identity in [&ids.mobile, &ids.unionid, &ids.openid, &ids.card] {
        expect_by_identity(reader, identity, None).await;
    }
}

pub async fn replays_never_bring_an_erased_member_back(sink: &dyn Sink, reader: &dyn MemberReader) {
    let ids = Ids::fresh();
    let (id, before, h) = erased_member(&ids);
    apply(sink, h.records()).await;
    let tombstone = &h.records().last().unwrap().document;
    // Every older record alone, newest first, then the history before the erasure, then the
    // whole history again (a consumer replaying from an old offset ends with the erasure).
    for record in h.records().iter().rev().skip(1) {
        apply(sink, std::slice::from_ref(record)).await;
    }
    apply(sink, &before).await;
    expect_by_id(reader, id, Some(tombstone)).await;
    apply(sink, h.records()).await;
    expect_by_id(reader, id, Some(tombstone)).await;
    for identity in [&ids.mobile, &ids.unionid, &ids.openid, &ids.card] {
        expect_by_identity(reader, identity, None).await;
    }
}

/// A carrier recycles the erased member's mobile: a new member binds it (generation 3). The new
/// holder is found by it, whichever of the two members' records arrive first.
pub async fn a_recycled_identity_belongs_to_its_new_holder(
    sink: &dyn Sink,
    reader: &dyn MemberReader,
) {
    for erasure_first in [true, false] {
        let ids = Ids::fresh();
        let (_, _, erased) = erased_member(&ids);
        let b = Uuid::now_v7();
        let mut hb = MemberHistory::new(b);
        hb.push(MemberEvent::MemberRegistered {}, None);
        hb.push(bound(&ids.mobile), Some(3));
        if erasure_first {
            apply(sink, erased.records()).await;
            apply(sink, hb.records()).await;
        } else {
            apply(sink, hb.records()).await;
            apply(sink, erased.records()).await;
        }
        let b_doc = &hb.records().last().unwrap().document;
        expect_by_identity(reader, &ids.mobile, Some(b_doc)).await;
        expect_by_id(reader, b, Some(b_doc)).await;
        expect_by_identity(reader, &ids.card, None).await;
    }
}

pub fn digits(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(b'0' + rng.random_range(0..10)))
        .collect()
}

/// A random mainland mobile number over the whole valid space (1[3-9] and nine digits, 7e9
/// numbers). The stack's Redis keeps every test run's identity entries for a day, and with
/// `139` and eight digits (1e8) a fresh mobile met an earlier run's member about once in 2,500
/// (41,000 entries on this machine after a day of runs): a lookup then found that member.
pub fn fresh_mobile() -> String {
    let second = rand::rng().random_range(3..=9u8);
    format!("1{second}{}", digits(9))
}

/// Identities unique to one scenario run.
pub struct Ids {
    pub mobile: Identity,
    pub unionid: Identity,
    pub openid: Identity,
    pub card: Identity,
}

impl Ids {
    pub fn fresh() -> Self {
        let u = format!("oUnion_{}", digits(24));
        Self {
            mobile: Identity::parse("mobile", &fresh_mobile(), None, None).unwrap(),
            unionid: Identity::parse("wechat_unionid", &u, None, None).unwrap(),
            openid: Identity::parse(
                "wechat_openid",
                &format!("oOpenid_{}", digits(16)),
                Some("elong_mp"),
                Some(&u),
            )
            .unwrap(),
            card: Identity::parse("elong_card", &digits(12), None, None).unwrap(),
        }
    }
}

fn bound(identity: &Identity) -> MemberEvent {
    MemberEvent::IdentityBound {
        identity: identity.clone(),
    }
}

fn unbound(identity: &Identity) -> MemberEvent {
    MemberEvent::IdentityUnbound {
        identity: identity.clone(),
        reason: UnbindReason::MemberRequest,
    }
}

/// A registered member with mobile, unionid, openid and card (generations 1 each).
pub fn full_member(ids: &Ids) -> (Uuid, MemberHistory) {
    let id = Uuid::now_v7();
    let mut h = MemberHistory::new(id);
    h.push(MemberEvent::MemberRegistered {}, None);
    h.push(bound(&ids.mobile), Some(1));
    h.push(bound(&ids.unionid), Some(1));
    h.push(bound(&ids.openid), Some(1));
    h.push(bound(&ids.card), Some(1));
    (id, h)
}

async fn apply(sink: &dyn Sink, records: &[MemberRecord]) {
    sink.apply(records).await.expect("sink applies the batch");
}

/// Polls `read` until it returns `expected` (10 s at most).
async fn eventually<F, Fut>(what: &str, expected: Option<&MemberDocument>, mut read: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<MemberDocument>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = read().await;
        if got.as_ref() == expected {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "{what}: expected {:?}, got {:?}",
                expected.map(|d| d.version),
                got.as_ref().map(|d| (d.version, &d.identities))
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn expect_by_id(reader: &dyn MemberReader, id: Uuid, expected: Option<&MemberDocument>) {
    eventually(
        &format!("{} by id", reader.target()),
        expected,
        || async move { reader.by_id(id).await.expect("read by id") },
    )
    .await
}

async fn expect_by_identity(
    reader: &dyn MemberReader,
    identity: &Identity,
    expected: Option<&MemberDocument>,
) {
    let key: IdentityKey = identity.key();
    let what = format!("{} by {}", reader.target(), key.kind());
    eventually(&what, expected, || {
        let key = key.clone();
        async move { reader.by_identity(&key).await.expect("read by identity") }
    })
    .await
}

pub async fn visible_by_id_and_by_every_identity(sink: &dyn Sink, reader: &dyn MemberReader) {
    let ids = Ids::fresh();
    let (id, h) = full_member(&ids);
    apply(sink, h.records()).await;
    let doc = &h.records().last().unwrap().document;
    assert_eq!(doc.version, 5);
    expect_by_id(reader, id, Some(doc)).await;
    for identity in [&ids.mobile, &ids.unionid, &ids.openid, &ids.card] {
        expect_by_identity(reader, identity, Some(doc)).await;
    }
}

/// Live consumption: a member's history applied one record per batch, then two per batch; after
/// every batch the store serves the newest document by id and by identity.
pub async fn later_batches_replace_stored_documents(sink: &dyn Sink, reader: &dyn MemberReader) {
    for batch_size in [1, 2] {
        let ids = Ids::fresh();
        let id = Uuid::now_v7();
        let mut h = MemberHistory::new(id);
        h.push(MemberEvent::MemberRegistered {}, None);
        h.push(bound(&ids.mobile), Some(1));
        h.push(bound(&ids.card), Some(1));
        h.push(bound(&ids.unionid), Some(1));
        h.push(unbound(&ids.card), Some(2));
        h.push(bound(&ids.card), Some(3));
        for chunk in h.records().chunks(batch_size) {
            apply(sink, chunk).await;
            let doc = &chunk.last().unwrap().document;
            expect_by_id(reader, id, Some(doc)).await;
            if doc.generation_of(&ids.mobile.key()).is_some() {
                expect_by_identity(reader, &ids.mobile, Some(doc)).await;
            }
            let expected = doc.generation_of(&ids.card.key()).map(|_| doc);
            expect_by_identity(reader, &ids.card, expected).await;
        }
    }
}

pub async fn duplicates_and_replays_never_move_a_document_backwards(
    sink: &dyn Sink,
    reader: &dyn MemberReader,
) {
    let ids = Ids::fresh();
    let (id, h) = full_member(&ids);
    apply(sink, h.records()).await;
    let last = &h.records().last().unwrap().document;
    // The whole batch again, then every older record alone, then the first half.
    apply(sink, h.records()).await;
    for record in h.records().iter().rev() {
        apply(sink, std::slice::from_ref(record)).await;
    }
    apply(sink, &h.records()[..2]).await;
    expect_by_id(reader, id, Some(last)).await;
    expect_by_identity(reader, &ids.card, Some(last)).await;
}

pub async fn out_of_order_delivery_within_a_batch_converges(
    sink: &dyn Sink,
    reader: &dyn MemberReader,
) {
    let ids = Ids::fresh();
    let (id, h) = full_member(&ids);
    let mut reversed = h.records().to_vec();
    reversed.reverse();
    apply(sink, &reversed).await;
    let last = &h.records().last().unwrap().document;
    expect_by_id(reader, id, Some(last)).await;
    for identity in [&ids.mobile, &ids.unionid, &ids.openid, &ids.card] {
        expect_by_identity(reader, identity, Some(last)).await;
    }
}

pub async fn unbind_removes_the_identity(sink: &dyn Sink, reader: &dyn MemberReader) {
    let ids = Ids::fresh();
    let (id, mut h) = full_member(&ids);
    h.push(unbound(&ids.card), Some(2));
    apply(sink, h.records()).await;
    let last = &h.records().last().unwrap().document;
    assert!(last.generation_of(&ids.card.key()).is_none());
    expect_by_id(reader, id, Some(last)).await;
    expect_by_identity(reader, &ids.card, None).await;
    expect_by_identity(reader, &ids.mobile, Some(last)).await;

    // A late duplicate of the bind does not bring it back.
    let bind_record = h.records()[4].clone();
    apply(sink, &[bind_record]).await;
    expect_by_identity(reader, &ids.card, None).await;
    expect_by_id(reader, id, Some(last)).await;
}

pub async fn an_identity_moving_between_members_follows_its_generation(
    sink: &dyn Sink,
    reader: &dyn MemberReader,
) {
    let ids = Ids::fresh();
    // A binds the card (generation 1), then unbinds it (generation 2); B binds it (generation 3).
    let a = Uuid::now_v7();
    let mut ha = MemberHistory::new(a);
    ha.push(MemberEvent::MemberRegistered {}, None);
    ha.push(bound(&ids.mobile), Some(1));
    ha.push(bound(&ids.card), Some(1));
    let a_with_card = ha.records().last().unwrap().clone();
    ha.push(unbound(&ids.card), Some(2));
    let b = Uuid::now_v7();
    let mut hb = MemberHistory::new(b);
    hb.push(MemberEvent::MemberRegistered {}, None);
    hb.push(bound(&ids.card), Some(3));

    // B's records arrive first (another partition), then A's, including the stale bind last.
    apply(sink, hb.records()).await;
    apply(sink, ha.records()).await;
    apply(sink, &[a_with_card]).await;
    let b_doc = &hb.records().last().unwrap().document;
    let a_doc = &ha.records().last().unwrap().document;
    expect_by_identity(reader, &ids.card, Some(b_doc)).await;
    expect_by_id(reader, a, Some(a_doc)).await;
    expect_by_identity(reader, &ids.mobile, Some(a_doc)).await;

    // The other order: A's stale state lands while B's bind is still in flight.
    let ids = Ids::fresh();
    let a = Uuid::now_v7();
    let mut ha = MemberHistory::new(a);
    ha.push(MemberEvent::MemberRegistered {}, None);
    ha.push(bound(&ids.card), Some(1));
    let stale = ha.records().to_vec();
    ha.push(unbound(&ids.card), Some(2));
    let b = Uuid::now_v7();
    let mut hb = MemberHistory::new(b);
    hb.push(MemberEvent::MemberRegistered {}, None);
    hb.push(bound(&ids.card), Some(3));
    apply(sink, &stale).await;
    let a_stale = &stale.last().unwrap().document;
    expect_by_identity(reader, &ids.card, Some(a_stale)).await;
    apply(sink, hb.records()).await;
    let b_doc = &hb.records().last().unwrap().document;
    // B holds it at a higher generation even though A's unbind has not arrived.
    expect_by_identity(reader, &ids.card, Some(b_doc)).await;
    apply(sink, ha.records()).await;
    expect_by_identity(reader, &ids.card, Some(b_doc)).await;
    let _ = a;

    // Moved on and released again: A held the card (1) and released it (2), B bound (3) and
    // released it (4). With B's records applied and A's release still in flight, nobody holds it.
    let ids = Ids::fresh();
    let mut ha = MemberHistory::new(Uuid::now_v7());
    ha.push(MemberEvent::MemberRegistered {}, None);
    ha.push(bound(&ids.card), Some(1));
    let a_holding = ha.records().to_vec();
    ha.push(unbound(&ids.card), Some(2));
    let mut hb = MemberHistory::new(Uuid::now_v7());
    hb.push(MemberEvent::MemberRegistered {}, None);
    hb.push(bound(&ids.card), Some(3));
    hb.push(unbound(&ids.card), Some(4));
    apply(sink, &a_holding).await;
    expect_by_identity(reader, &ids.card, Some(&a_holding.last().unwrap().document)).await;
    apply(sink, hb.records()).await;
    expect_by_identity(reader, &ids.card, None).await;
    apply(sink, ha.records()).await;
    expect_by_identity(reader, &ids.card, None).await;
}

pub async fn unknown_members_and_identities_are_absent(
    _sink: &dyn Sink,
    reader: &dyn MemberReader,
) {
    let ids = Ids::fresh();
    assert_eq!(reader.by_id(Uuid::now_v7()).await.expect("read"), None);
    assert_eq!(
        reader.by_identity(&ids.mobile.key()).await.expect("read"),
        None
    );
    assert_eq!(
        reader.by_identity(&ids.openid.key()).await.expect("read"),
        None
    );
}
