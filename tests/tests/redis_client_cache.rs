//! The tracked in-process cache of a Redis center (`infra::redis::tracked`, ADR 0038): the sink
//! contract read through it, invalidation by writes of other connections, one round trip by
//! identity, a Redis restart empties it, an erased member is never served from it, and
//! concurrent readers never see a version go back while a writer moves it forward.
//!
//! The contract runs against the shared Redis A (fresh ids per scenario); everything that counts
//! commands or restarts a server uses a private `redis-server`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use member_domain::{MemberEvent, MemberStatus};
use member_infra::redis::tracked::TrackedCenter;
use member_infra::redis::{document_key, Expiry, RedisCenter};
use member_projections::fixtures::MemberHistory;
use member_projections::{MemberReader, Sink};
use member_tests::redis::{center, raw, PrivateRedis};
use member_tests::sink_contract::{erased_member, full_member, Ids};
use redis::AsyncCommands;
use uuid::Uuid;

const LIVE: Duration = Duration::from_secs(5);

async fn tracked(center: &RedisCenter) -> TrackedCenter {
    let tracked = TrackedCenter::start(center.clone(), 100_000);
    assert!(tracked.wait_live(LIVE).await, "tracking connection up");
    tracked
}

fn private_center(redis: &PrivateRedis) -> RedisCenter {
    RedisCenter::new(
        "redis-a",
        &redis.url(),
        Expiry {
            ttl: Duration::from_secs(3600),
            fence_ttl: Duration::from_secs(10),
        },
    )
    .unwrap()
}

/// How many times the server ran `command` (`INFO commandstats`).
async fn calls(url: &str, command: &str) -> u64 {
    let mut conn = raw(url).await;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Applies `records`, retrying while the writer's connection comes back after a restart (as
/// the projector does).
async fn apply_retrying(writer: &RedisCenter, records: &[member_projections::MemberRecord]) {
    let started = Instant::now();
    while writer.apply(records).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the writer reconnects"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until `check` holds (2 s at most); returns how long it took.
async fn within<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < Duration::from_secs(2), "{what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    started.elapsed()
}

mod contract_through_the_cache {
    use super::*;

    macro_rules! through_the_cache {
        ($($scenario:ident),+ $(,)?) => {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                let sink = center("redis-a");
                let reader = tracked(&sink).await;
                member_tests::sink_contract::$scenario(&sink, &reader).await;
            }
        )+};
    }

    through_the_cache!(
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_lookups_touch_no_network_and_writes_by_other_connections_invalidate() {
    let redis = PrivateRedis::start();
    let writer = private_center(&redis);
    let reader = tracked(&private_center(&redis)).await;
    let ids = Ids::fresh();
    let (id, mut h) = full_member(&ids);
    writer.apply(h.records()).await.unwrap();
    let v5 = h.records().last().unwrap().document.clone();
    // The invalidations of these writes reach the tracking connection a moment later; a read
    // that overlaps them is answered but not cached (a refused insert, never a wrong one).
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The server learns the script on its first call (NOSCRIPT, then EVAL): done here, with an
    // identity nobody holds.
    assert_eq!(
        reader.by_identity(&Ids::fresh().card.key()).await.unwrap(),
        None
    );

    // Cold: by identity is one round trip (one script call; `commandstats` also counts the
    // commands the script runs, so only the calls from clients are compared).
    let (hget, evalsha) = (
        calls(&redis.url(), "hget").await,
        calls(&redis.url(), "evalsha").await + calls(&redis.url(), "eval").await,
    );
    let card = ids.card.key();
    assert_eq!(reader.by_identity(&card).await.unwrap(), Some(v5.clone()));
    assert_eq!(
        calls(&redis.url(), "evalsha").await + calls(&redis.url(), "eval").await,
        evalsha + 1
    );
    let hget = calls(&redis.url(), "hget").await.max(hget);
    // Warm: neither by identity nor by id reaches the server.
    for _ in 0..10 {
        assert_eq!(reader.by_identity(&card).await.unwrap(), Some(v5.clone()));
        assert_eq!(reader.by_id(id).await.unwrap(), Some(v5.clone()));
    }
    assert_eq!(calls(&redis.url(), "hget").await, hget);
    assert_eq!(
        calls(&redis.url(), "evalsha").await + calls(&redis.url(), "eval").await,
        evalsha + 1
    );

    // A write by the projector's connection: the next version is read within moments.
    h.push(
        MemberEvent::IdentityUnbound {
            identity: ids.mobile.clone(),
            reason: member_domain::UnbindReason::MemberRequest,
        },
        Some(2),
    );
    writer.apply(&h.records()[5..]).await.unwrap();
    let v6 = h.records().last().unwrap().document.clone();
    let took = within("the new version is read", || async {
        reader.by_id(id).await.unwrap().map(|d| d.version) == Some(v6.version)
    })
    .await;
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert_eq!(reader.by_identity(&ids.mobile.key()).await.unwrap(), None);
    assert_eq!(reader.by_identity(&card).await.unwrap(), Some(v6.clone()));

    // Any other client, even one writing the key directly, invalidates it too.
    let mut conn = raw(&redis.url()).await;
    let _: () = conn.del(document_key(id)).await.unwrap();
    within("a deleted document is not served from memory", || async {
        reader.by_id(id).await.unwrap().is_none()
    })
    .await;
    // FLUSHALL (null invalidation) empties the cache.
    writer.apply(h.records()).await.unwrap();
    assert_eq!(reader.by_id(id).await.unwrap(), Some(v6.clone()));
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    within("flushed", || async {
        reader.by_identity(&card).await.unwrap().is_none()
            && reader.by_id(id).await.unwrap().is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_empties_the_cache_and_tracking_comes_back() {
    let mut redis = PrivateRedis::start();
    let writer = private_center(&redis);
    let reader = tracked(&private_center(&redis)).await;
    let ids = Ids::fresh();
    let (id, h) = full_member(&ids);
    writer.apply(h.records()).await.unwrap();
    let v5 = h.records().last().unwrap().document.clone();
    assert_eq!(reader.by_id(id).await.unwrap(), Some(v5.clone()));
    assert!(reader.counts().entries >= 1);
    let lost_before = reader.counts().flushes;

    // The server restarts empty: invalidations of the down time are lost, so the cache must
    // not serve what it held before.
    redis.restart();
    within("the lost connection is noticed", || async {
        reader.counts().flushes > lost_before
    })
    .await;
    assert!(
        reader.wait_live(LIVE).await,
        "tracking again after the restart"
    );
    assert_eq!(reader.counts().entries, 0);
    let got = within("the restarted (empty) server is what is read", || async {
        matches!(reader.by_id(id).await, Ok(None))
    })
    .await;
    assert!(got < Duration::from_secs(2));
    // An older version written after the restart is the server's truth: read, not the copy
    // held before (versions going back across a lost center is the query path's floor's job).
    apply_retrying(&writer, &h.records()[..3]).await;
    let v3 = h.records()[2].document.clone();
    assert_eq!(reader.by_id(id).await.unwrap(), Some(v3.clone()));
    // And it is cached and invalidated again as before.
    writer.apply(h.records()).await.unwrap();
    within("invalidated after the restart", || async {
        reader.by_id(id).await.unwrap() == Some(v5.clone())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_is_not_served_from_memory() {
    let mut redis = PrivateRedis::start();
    let writer = private_center(&redis);
    let reader = tracked(&private_center(&redis)).await;
    let ids = Ids::fresh();
    let (id, h) = full_member(&ids);
    writer.apply(h.records()).await.unwrap();
    assert!(reader.by_id(id).await.unwrap().is_some());
    redis.stop();
    // Once the loss is noticed, a read fails (the query path's breaker moves on) instead of
    // answering from a cache that can no longer be kept exact.
    within("reads fail once the center is gone", || async {
        reader.by_id(id).await.is_err()
    })
    .await;
    assert!(!reader.is_live());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_member_is_never_served_from_the_cache() {
    let redis = PrivateRedis::start();
    let writer = private_center(&redis);
    let reader = tracked(&private_center(&redis)).await;
    let ids = Ids::fresh();
    let (id, before, h) = erased_member(&ids);
    writer.apply(&before).await.unwrap();
    // Cached by id and by every identity.
    for _ in 0..3 {
        assert!(reader.by_id(id).await.unwrap().is_some());
        for identity in [&ids.mobile, &ids.unionid, &ids.openid, &ids.card] {
            assert!(reader.by_identity(&identity.key()).await.unwrap().is_some());
        }
    }
    writer.apply(&h.records()[before.len()..]).await.unwrap();
    within("the tombstone replaces the cached document", || async {
        reader.by_id(id).await.unwrap().map(|d| d.status) == Some(MemberStatus::Erased)
    })
    .await;
    for identity in [&ids.mobile, &ids.unionid, &ids.openid, &ids.card] {
        within("no identity leads to the erased member", || async {
            reader.by_identity(&identity.key()).await.unwrap().is_none()
        })
        .await;
    }
    // Replays of the member's earlier records never bring it back into the cache.
    writer.apply(&before).await.unwrap();
    for _ in 0..20 {
        assert_eq!(
            reader.by_id(id).await.unwrap().map(|d| d.status),
            Some(MemberStatus::Erased)
        );
        for identity in [&ids.mobile, &ids.unionid, &ids.openid, &ids.card] {
            assert!(reader.by_identity(&identity.key()).await.unwrap().is_none());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Readers hammer one member through the cache while a writer moves it through 200 versions:
/// once the writer is done (and its invalidations delivered), every reader reads the last
/// version, from memory; no reader ever read a version the server had replaced before the
/// reader's previous read... checked as: the cache converges, and what it serves is never below
/// what the server held when the writer had finished that many writes ago.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_readers_converge_on_the_last_version() {
    let redis = PrivateRedis::start();
    let writer = private_center(&redis);
    let reader = Arc::new(tracked(&private_center(&redis)).await);
    let id = Uuid::now_v7();
    let mut h = MemberHistory::new(id);
    h.push(MemberEvent::MemberRegistered {}, None);
    writer.apply(h.records()).await.unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (reader, done) = (reader.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0u64;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = reader.by_id(id).await.unwrap().expect("present");
                reads += 1;
                // A hit completes without awaiting anything: let the writer run.
                tokio::task::yield_now().await;
            }
            reads
        }));
    }
    for i in 0..200u64 {
        let unionid = format!("oUnion_{:024}", i);
        let identity =
            member_domain::Identity::parse("wechat_unionid", &unionid, None, None).unwrap();
        if i % 2 == 0 {
            h.push(MemberEvent::IdentityBound { identity }, Some(i + 1));
        } else {
            let previous = format!("oUnion_{:024}", i - 1);
            let identity =
                member_domain::Identity::parse("wechat_unionid", &previous, None, None).unwrap();
            h.push(
                MemberEvent::IdentityUnbound {
                    identity,
                    reason: member_domain::UnbindReason::MemberRequest,
                },
                Some(i + 1),
            );
        }
        writer
            .apply(std::slice::from_ref(h.records().last().unwrap()))
            .await
            .unwrap();
    }
    let last = h.records().last().unwrap().document.version;
    within("every reader reads the last version", || async {
        reader.by_id(id).await.unwrap().map(|d| d.version) == Some(last)
    })
    .await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut total = 0;
    for r in readers {
        total += r.await.unwrap();
    }
    assert!(total > 0);
    // Converged for good: nothing stale was left behind by a read that raced a write.
    for _ in 0..50 {
        assert_eq!(
            reader.by_id(id).await.unwrap().map(|d| d.version),
            Some(last)
        );
    }
    let hget = calls(&redis.url(), "hget").await;
    for _ in 0..50 {
        reader.by_id(id).await.unwrap();
    }
    assert_eq!(
        calls(&redis.url(), "hget").await,
        hget,
        "served from memory"
    );
}
