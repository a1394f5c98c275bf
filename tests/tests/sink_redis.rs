//! The Redis centers adapter against the local Redis A and Redis B: the sink contract, the cache
//! fill and its version fence, expiry, and reconnection after a server restart.
//!
//! Every test uses fresh member ids and identity values, so tests run in parallel against the
//! shared centers without seeing each other's keys.

use std::time::{Duration, Instant};

use member_domain::{Identity, MemberEvent, UnbindReason};
use member_infra::redis::{document_key, fence_key, identity_key, Expiry, RedisCenter};
use member_projections::fixtures::MemberHistory;
use member_projections::{MemberReader, MemberRecord, Sink, SinkError};
use member_tests::redis::{center, center_with_expiry, raw, PrivateRedis};
use member_tests::sink_contract::Ids;
use redis::AsyncCommands;
use uuid::Uuid;

fn bound(identity: &Identity) -> MemberEvent {
    MemberEvent::IdentityBound {
        identity: identity.clone(),
    }
}

/// Registered (v1), mobile (v2, generation 1), card (v3, generation 1).
fn member(ids: &Ids) -> (Uuid, MemberHistory) {
    let id = Uuid::now_v7();
    let mut h = MemberHistory::new(id);
    h.push(MemberEvent::MemberRegistered {}, None);
    h.push(bound(&ids.mobile), Some(1));
    h.push(bound(&ids.card), Some(1));
    (id, h)
}

fn url(target: &str) -> String {
    let settings = member_tests::settings().redis;
    let url = if target == "redis-b" {
        settings.b.url
    } else {
        settings.a.url
    };
    url.expose_secret().to_owned()
}

async fn open(target: &str) -> (RedisCenter, ()) {
    let store = center(target);
    store.ping().await.expect("the center answers");
    (store, ())
}

async fn close(_: RedisCenter, (): ()) {}

mod contract_center_a {
    async fn open() -> (super::RedisCenter, ()) {
        super::open("redis-a").await
    }
    member_tests::sink_contract_tests!(open, super::close);
}

mod contract_center_b {
    async fn open() -> (super::RedisCenter, ()) {
        super::open("redis-b").await
    }
    member_tests::sink_contract_tests!(open, super::close);
}

#[tokio::test]
async fn a_fill_is_refused_while_the_fence_is_higher() {
    let a = center("redis-a");
    let mut conn = raw(&url("redis-a")).await;
    let ids = Ids::fresh();
    let (id, h) = member(&ids);
    a.apply(h.records()).await.unwrap();
    let v2 = &h.records()[1].document;
    let v3 = &h.records()[2].document;
    let fence: u64 = conn.get(fence_key(id)).await.unwrap();
    assert_eq!(fence, 3);

    // The document is gone (evicted, or expired before the fence), the fence is not: a read of
    // version 2 from a lagging search cluster must not be written back.
    let _: () = conn.del(document_key(id)).await.unwrap();
    assert!(
        !a.fill(v2).await.unwrap(),
        "a fill below the fence is refused"
    );
    assert_eq!(a.by_id(id).await.unwrap(), None, "and writes nothing");
    // A source that has caught up to the fence may fill.
    assert!(a.fill(v3).await.unwrap());
    assert_eq!(a.by_id(id).await.unwrap().as_ref(), Some(v3));
    assert_eq!(
        a.by_identity(&ids.card.key()).await.unwrap().as_ref(),
        Some(v3)
    );
}

#[tokio::test]
async fn the_fence_lives_for_fence_ttl_only() {
    let a = center_with_expiry(
        "redis-a",
        Expiry {
            ttl: Duration::from_secs(60),
            fence_ttl: Duration::from_millis(300),
        },
    );
    let mut conn = raw(&url("redis-a")).await;
    let ids = Ids::fresh();
    let (id, h) = member(&ids);
    a.apply(h.records()).await.unwrap();
    let pttl: i64 = conn.pttl(fence_key(id)).await.unwrap();
    assert!((1..=300).contains(&pttl), "fence pttl {pttl}");
    let _: () = conn.del(document_key(id)).await.unwrap();
    let v2 = &h.records()[1].document;
    assert!(!a.fill(v2).await.unwrap());
    member_tests::eventually("the fence expires", Duration::from_secs(10), || {
        let mut conn = conn.clone();
        async move { !conn.exists::<_, bool>(fence_key(id)).await.unwrap() }
    })
    .await;
    // The fence has expired: the known window that `fence_ttl_ms` must cover (search lag).
    assert!(a.fill(v2).await.unwrap());
    assert_eq!(a.by_id(id).await.unwrap().as_ref(), Some(v2));
}

#[tokio::test]
async fn a_fill_older_than_the_stored_document_is_refused() {
    let b = center("redis-b");
    let ids = Ids::fresh();
    let (id, mut h) = member(&ids);
    b.apply(&h.records()[..3]).await.unwrap();
    let v3 = h.records()[2].document.clone();
    assert!(!b.fill(&h.records()[1].document).await.unwrap(), "older");
    assert!(!b.fill(&v3).await.unwrap(), "as old");
    assert_eq!(b.by_id(id).await.unwrap().as_ref(), Some(&v3));

    // A newer version is accepted (the fence is at 3), and the projector's later copy of the
    // same version is a no-op.
    h.push(bound(&ids.unionid), Some(1));
    let v4 = h.records()[3].document.clone();
    assert!(b.fill(&v4).await.unwrap());
    assert_eq!(b.by_id(id).await.unwrap().as_ref(), Some(&v4));
    b.apply(&h.records()[3..]).await.unwrap();
    assert_eq!(b.by_id(id).await.unwrap().as_ref(), Some(&v4));
    assert_eq!(
        b.by_identity(&ids.unionid.key()).await.unwrap().as_ref(),
        Some(&v4)
    );
}

#[tokio::test]
async fn a_fill_of_an_unknown_member_is_accepted_with_its_identity_entries() {
    let a = center("redis-a");
    let mut conn = raw(&url("redis-a")).await;
    let ids = Ids::fresh();
    let (id, h) = member(&ids);
    let doc = &h.records()[2].document;
    // Another member's unbind of the mobile at a higher generation is cached: the fill must not
    // overwrite that tombstone with its generation-1 binding.
    let _: () = conn
        .hset_multiple(identity_key(&ids.mobile.key()), &[("g", "5"), ("m", "")])
        .await
        .unwrap();
    let _: () = conn
        .expire(identity_key(&ids.mobile.key()), 60)
        .await
        .unwrap();
    assert!(a.fill(doc).await.unwrap());
    assert_eq!(a.by_id(id).await.unwrap().as_ref(), Some(doc));
    assert_eq!(
        a.by_identity(&ids.card.key()).await.unwrap().as_ref(),
        Some(doc)
    );
    assert_eq!(a.by_identity(&ids.mobile.key()).await.unwrap(), None);
    let g: u64 = conn
        .hget(identity_key(&ids.mobile.key()), "g")
        .await
        .unwrap();
    assert_eq!(g, 5);
    // A fill has no fence of its own: only the projector raises fences.
    let fence: Option<u64> = conn.get(fence_key(id)).await.unwrap();
    assert_eq!(fence, None);
    let pttl: i64 = conn.pttl(document_key(id)).await.unwrap();
    assert!(pttl > 0, "a filled document expires too");
}

#[tokio::test]
async fn documents_entries_and_tombstones_expire() {
    let b = center_with_expiry(
        "redis-b",
        Expiry {
            ttl: Duration::from_secs(1),
            fence_ttl: Duration::from_millis(200),
        },
    );
    let mut conn = raw(&url("redis-b")).await;
    let ids = Ids::fresh();
    let (id, mut h) = member(&ids);
    h.push(
        MemberEvent::IdentityUnbound {
            identity: ids.card.clone(),
            reason: UnbindReason::MemberRequest,
        },
        Some(2),
    );
    b.apply(h.records()).await.unwrap();
    let doc = &h.records()[3].document;
    assert_eq!(b.by_id(id).await.unwrap().as_ref(), Some(doc));
    let tombstone: (u64, String) = redis::cmd("HMGET")
        .arg(identity_key(&ids.card.key()))
        .arg(&["g", "m"])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(tombstone, (2, String::new()));
    for (key, max) in [
        (document_key(id), 1000),
        (identity_key(&ids.mobile.key()), 1000),
        (identity_key(&ids.card.key()), 1000),
        (fence_key(id), 200),
    ] {
        let pttl: i64 = conn.pttl(&key).await.unwrap();
        assert!(
            (1..=max).contains(&pttl),
            "{key}: pttl {pttl}, at most {max}"
        );
    }
    let keys = [
        document_key(id),
        fence_key(id),
        identity_key(&ids.mobile.key()),
        identity_key(&ids.card.key()),
    ];
    member_tests::eventually("every key expires", Duration::from_secs(10), || {
        let (mut conn, keys) = (conn.clone(), keys.clone());
        async move { conn.exists::<_, u64>(&keys).await.unwrap() == 0 }
    })
    .await;
    assert_eq!(b.by_id(id).await.unwrap(), None);
    assert_eq!(b.by_identity(&ids.mobile.key()).await.unwrap(), None);
    let left: u64 = conn
        .exists(&[
            document_key(id),
            fence_key(id),
            identity_key(&ids.mobile.key()),
            identity_key(&ids.card.key()),
        ])
        .await
        .unwrap();
    assert_eq!(left, 0, "every key expired, the tombstone too");
}

#[tokio::test]
async fn an_undecodable_document_is_corrupt() {
    let a = center("redis-a");
    let mut conn = raw(&url("redis-a")).await;
    let id = Uuid::now_v7();
    let _: () = conn
        .hset_multiple(document_key(id), &[("v", "1"), ("d", "not a document")])
        .await
        .unwrap();
    let _: () = conn.expire(document_key(id), 60).await.unwrap();
    let err = a.by_id(id).await.unwrap_err();
    assert!(matches!(err, SinkError::Corrupt { .. }), "{err:?}");
}

#[tokio::test]
async fn an_unreachable_center_is_unavailable() {
    let dead = RedisCenter::new(
        "redis-a",
        "redis://127.0.0.1:1",
        Expiry::from_settings(&member_tests::settings().redis),
    )
    .unwrap();
    let ids = Ids::fresh();
    let (id, h) = member(&ids);
    let err = dead.ping().await.unwrap_err();
    assert!(matches!(err, SinkError::Unavailable { .. }), "{err:?}");
    let err = dead.apply(h.records()).await.unwrap_err();
    assert!(matches!(err, SinkError::Unavailable { .. }), "{err:?}");
    let err = dead.by_id(id).await.unwrap_err();
    assert!(matches!(err, SinkError::Unavailable { .. }), "{err:?}");
}

/// A center that restarts (empty, scripts unloaded) is used again without a new adapter: the
/// connection manager reconnects and the pipeline reloads its scripts on NOSCRIPT.
#[tokio::test]
async fn a_restarted_center_is_written_again() {
    let mut server = PrivateRedis::start();
    let c = RedisCenter::new(
        "redis-a",
        &server.url(),
        Expiry::from_settings(&member_tests::settings().redis),
    )
    .unwrap();
    let ids = Ids::fresh();
    let (id, h) = member(&ids);
    c.apply(&h.records()[..2]).await.unwrap();
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match c.apply(h.records()).await {
            Ok(()) => break,
            Err(SinkError::Unavailable { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("after the restart: {e:?}"),
        }
    }
    let doc = &h.records()[2].document;
    assert_eq!(c.by_id(id).await.unwrap().as_ref(), Some(doc));
    assert_eq!(
        c.by_identity(&ids.card.key()).await.unwrap().as_ref(),
        Some(doc)
    );
    server.stop();
    let err = c.ping().await.unwrap_err();
    assert!(matches!(err, SinkError::Unavailable { .. }), "{err:?}");
}

/// 2,000 members of 5 records each in one batch (one pipeline): every document lands. (Its rate
/// is measured by `member-bench run --only sinks`.)
#[tokio::test]
async fn a_ten_thousand_record_batch() {
    let a = center("redis-a");
    let histories: Vec<(Ids, MemberHistory)> = (0..2_000)
        .map(|_| {
            let ids = Ids::fresh();
            let (_, mut h) = member(&ids);
            h.push(bound(&ids.unionid), Some(1));
            h.push(bound(&ids.openid), Some(1));
            (ids, h)
        })
        .collect();
    let records: Vec<MemberRecord> = histories
        .iter()
        .flat_map(|(_, h)| h.records().iter().cloned())
        .collect();
    assert_eq!(records.len(), 10_000);
    a.apply(&records).await.unwrap();
    for (ids, h) in histories.iter().step_by(97) {
        let doc = &h.records().last().unwrap().document;
        assert_eq!(a.by_id(doc.member_id).await.unwrap().as_ref(), Some(doc));
        assert_eq!(
            a.by_identity(&ids.openid.key()).await.unwrap().as_ref(),
            Some(doc)
        );
    }
}
