//! A randomized race: a writer advances one member through many versions, applying each record
//! to the six stores in a random order with random delays (so every store lags differently),
//! and knocks stores out at random, while readers of both classes read it concurrently by id and
//! by identity. No reader ever sees a version lower than one it saw before, and no read that
//! starts after a version was served returns an older one (per-process monotonic reads).

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use member_domain::{Identity, MemberEvent, UnbindReason};
use member_projections::fixtures::MemberHistory;
use member_tests::query::{query_settings, spawn_query_api_with, Stores};
use rand::seq::SliceRandom;
use rand::Rng;
use reqwest::{Client, StatusCode};
use serde_json::Value;
use uuid::Uuid;

const VERSIONS: usize = 80;

/// Registered with a mobile that stays, then a card bound and unbound over and over.
fn history() -> (Uuid, MemberHistory, String) {
    let id = Uuid::now_v7();
    let mut rng = rand::rng();
    let mobile = format!("137{:08}", rng.random_range(0..100_000_000u32));
    let card = Identity::parse("elong_card", "6200112233", None, None).unwrap();
    let mut h = MemberHistory::new(id);
    h.push(MemberEvent::MemberRegistered {}, None);
    h.push(
        MemberEvent::IdentityBound {
            identity: Identity::parse("mobile", &mobile, None, None).unwrap(),
        },
        Some(1),
    );
    let mut generation = 0;
    while h.records().len() < VERSIONS {
        generation += 1;
        let event = if generation % 2 == 1 {
            MemberEvent::IdentityBound {
                identity: card.clone(),
            }
        } else {
            MemberEvent::IdentityUnbound {
                identity: card.clone(),
                reason: UnbindReason::MemberRequest,
            }
        };
        h.push(event, Some(generation));
    }
    (id, h, mobile)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_readers_never_see_a_version_go_backwards() {
    let mut settings = query_settings();
    // Keep the near cache in play, without letting it answer most reads (the backends' lag is
    // what this test is about).
    settings.query_api.flow.hot_key_rate_per_second = 100;
    settings.query_api.cache.near_cache_ttl_ms = NonZeroU64::new(20).unwrap();
    settings.query_api.breaker.open_ms = NonZeroU64::new(100).unwrap();
    let app = Arc::new(spawn_query_api_with(Stores::new(), settings).await);
    let (id, h, mobile) = history();
    let records = h.records().to_vec();
    let done = Arc::new(AtomicBool::new(false));
    // The highest version any read has returned so far (set after the response arrived).
    let served_max = Arc::new(AtomicU64::new(0));

    // Outages: one store at a time goes down for a few milliseconds, all along.
    let chaos = {
        let app = app.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let stores = app.stores.clone();
            while !done.load(Ordering::SeqCst) {
                let (which, down_for, pause) = {
                    let mut rng = rand::rng();
                    (
                        rng.random_range(0..6usize),
                        rng.random_range(5..40u64),
                        rng.random_range(0..15u64),
                    )
                };
                let store = stores.all()[which];
                store.set_down(true);
                tokio::time::sleep(Duration::from_millis(down_for)).await;
                store.set_down(false);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        })
    };

    // Each record reaches the stores in a random order, a few milliseconds apart, so at any
    // moment the stores hold different versions; a store that is down gets it on a retry, as
    // its projector would retry.
    let writer = {
        let app = app.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let stores = app.stores.clone();
            for record in &records {
                let mut order = stores.all().to_vec();
                order.shuffle(&mut rand::rng());
                for store in order {
                    while store.try_apply(std::slice::from_ref(record)).await.is_err() {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    let pause = rand::rng().random_range(0..6u64);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            }
            done.store(true, Ordering::SeqCst);
        })
    };

    let mut readers = Vec::new();
    for n in 0..8 {
        let app = app.clone();
        let done = done.clone();
        let served_max = served_max.clone();
        let mobile = mobile.clone();
        readers.push(tokio::spawn(async move {
            let client = Client::new();
            let key = if n % 4 == 3 {
                "local-marketing-key"
            } else {
                "local-order-key"
            };
            let mut seen = 0u64;
            let mut reads = 0usize;
            while !done.load(Ordering::SeqCst) || reads < 20 {
                let path = if n % 2 == 0 {
                    format!("/v1/members/{id}")
                } else {
                    format!("/v1/members?kind=mobile&value={mobile}")
                };
                let floor = served_max.load(Ordering::SeqCst);
                let r = client
                    .get(app.url(&path))
                    .bearer_auth(key)
                    .send()
                    .await
                    .unwrap();
                let status = r.status();
                let from = r
                    .headers()
                    .get("x-served-from")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                let body: Value = r.json().await.unwrap();
                match status {
                    StatusCode::OK => {
                        let v = body["version"].as_u64().unwrap();
                        assert!(
                            v >= seen,
                            "reader {n} saw version {v} after {seen} (from {from})"
                        );
                        assert!(
                            v >= floor,
                            "reader {n} got version {v} after {floor} was served (from {from})"
                        );
                        seen = v;
                        served_max.fetch_max(v, Ordering::SeqCst);
                    }
                    // Before the first record reached a store a marketing reader may find
                    // nothing, and every store of its chain may be down at once.
                    StatusCode::NOT_FOUND | StatusCode::SERVICE_UNAVAILABLE if seen == 0 => {}
                    StatusCode::SERVICE_UNAVAILABLE if n % 4 == 3 => {}
                    other => panic!("reader {n}: {other} {body} after version {seen}"),
                }
                reads += 1;
            }
            (seen, reads)
        }));
    }
    writer.await.unwrap();
    chaos.await.unwrap();
    let mut total = 0;
    for reader in readers {
        let (seen, reads) = reader.await.unwrap();
        total += reads;
        assert!(seen > 0, "every reader saw the member");
    }
    assert!(total > 100, "only {total} reads happened");
    // Once the stores caught up (and the near cache's short TTL passed), reads converge on
    // the last version.
    for store in app.stores.all() {
        store.set_down(false);
    }
    let client = Client::new();
    let url = app.url(&format!("/v1/members/{id}"));
    member_tests::eventually(
        "reads converge on the last version",
        Duration::from_secs(10),
        || {
            let (client, url) = (&client, &url);
            async move {
                let r: Value = client
                    .get(url)
                    .bearer_auth("local-order-key")
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                r["version"].as_u64() == Some(VERSIONS as u64)
            }
        },
    )
    .await;
}
