//! A randomized race on the real stack: one member is updated again and again while its Redis
//! entries are deleted under the readers (cache misses), the search indexes refresh only once a
//! second, and readers read by id and by identity. No reader ever sees a version lower than one it
//! saw before.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use member_api::app::Role;
use member_infra::redis::document_key;
use member_projections::Target;
use member_tests::app::{isolated_settings, spawn_app_with};
use member_tests::sink_contract::Ids;
use rand::Rng;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_see_a_version_go_backwards() {
    let (mut settings, pool, data_dir) = isolated_settings().await;
    settings.search.refresh_ms = 1000;
    // Readers hammer one member: lift the hotspot limit, and keep reads off the near cache so they
    // really go to Redis and search.
    settings.query_api.flow.hotspot_rate_per_second = NonZeroU32::new(1_000_000).unwrap();
    settings.query_api.flow.hotspot_burst = NonZeroU32::new(1_000_000).unwrap();
    settings.query_api.flow.hot_key_rate_per_second = 0;
    // Nor may quotas refuse them: this test is about versions, and on a quiet machine four
    // readers exceed the shipped caller quota.
    for caller in &mut settings.callers {
        caller.rate_per_second = 1_000_000;
        caller.burst = 1_000_000;
    }
    settings.query_api.flow.global_rate_per_second = NonZeroU32::new(1_000_000).unwrap();
    settings.query_api.flow.global_burst = NonZeroU32::new(1_000_000).unwrap();
    let mut roles = vec![Role::CommandApi, Role::QueryApi, Role::Relay];
    roles.extend(Target::ALL.map(Role::Projector));
    let app = Arc::new(spawn_app_with(settings.clone(), pool, data_dir, &roles).await);
    let client = member_tests::writer_client();
    let ids = Ids::fresh();
    let r = client
        .post(app.command_url("/v1/members"))
        .json(&json!({"identities": [{"kind": "elong_card", "value": ids.card.value()}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let member: Uuid = r.json::<Value>().await.unwrap()["member_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let by_id = app.query_url(&format!("/v1/members/{member}"));
    let by_card = app.query_url(&format!(
        "/v1/members?kind=elong_card&value={}",
        ids.card.value()
    ));
    member_tests::eventually(
        "the new member is readable",
        Duration::from_secs(15),
        || {
            let (client, by_id) = (&client, &by_id);
            async move {
                let r = client
                    .get(by_id)
                    .bearer_auth("local-order-key")
                    .send()
                    .await
                    .unwrap();
                r.status() == StatusCode::OK
            }
        },
    )
    .await;

    // Writer: 40 updates (bind and unbind an account, alternately).
    let writer = tokio::spawn({
        let (client, app) = (client.clone(), app.clone());
        async move {
            let suffix: u32 = rand::rng().random_range(0..1_000_000);
            let account = format!("race-{suffix}");
            for i in 0..40 {
                let r = if i % 2 == 0 {
                    client
                        .post(app.command_url(&format!("/v1/members/{member}/identities")))
                        .json(&json!({"kind": "tongcheng_account", "value": account}))
                        .send()
                        .await
                } else {
                    client
                        .delete(app.command_url(&format!(
                            "/v1/members/{member}/identities/tongcheng_account/{account}"
                        )))
                        .send()
                        .await
                };
                assert_eq!(r.unwrap().status(), StatusCode::OK);
                let pause = rand::rng().random_range(5..60);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }
    });
    // Cache killer: deletes the member's documents from both Redis centers at random moments.
    let killer = tokio::spawn({
        let urls = [
            settings.redis.a.url.expose_secret().to_owned(),
            settings.redis.b.url.expose_secret().to_owned(),
        ];
        async move {
            let mut conns = Vec::new();
            for url in urls {
                conns.push(
                    redis::Client::open(url)
                        .unwrap()
                        .get_multiplexed_async_connection()
                        .await
                        .unwrap(),
                );
            }
            for _ in 0..60 {
                for c in conns.iter_mut() {
                    let _: () = redis::cmd("DEL")
                        .arg(document_key(member))
                        .query_async(c)
                        .await
                        .unwrap();
                }
                let pause = rand::rng().random_range(10..80);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }
    });
    // Readers: each remembers the highest version it saw.
    let mut readers = Vec::new();
    for r in 0..4 {
        let (client, url) = (
            client.clone(),
            if r % 2 == 0 {
                by_id.clone()
            } else {
                by_card.clone()
            },
        );
        readers.push(tokio::spawn(async move {
            let (mut highest, mut reads, mut below_redis) = (0u64, 0u32, 0u32);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
            while tokio::time::Instant::now() < deadline {
                let r = client
                    .get(&url)
                    .bearer_auth("local-order-key")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::OK, "reader {url}");
                let from = r
                    .headers()
                    .get("x-served-from")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                below_redis += u32::from(!from.starts_with("redis"));
                let version = r.json::<Value>().await.unwrap()["version"]
                    .as_u64()
                    .unwrap();
                assert!(
                    version >= highest,
                    "reader saw version {version} after {highest}"
                );
                highest = version;
                reads += 1;
            }
            (highest, reads, below_redis)
        }));
    }
    writer.await.unwrap();
    killer.await.unwrap();
    let (mut total, mut missed) = (0, 0);
    for reader in readers {
        let (highest, reads, below_redis) = reader.await.unwrap();
        assert!(highest > 2, "readers saw the updates (highest {highest})");
        total += reads;
        missed += below_redis;
    }
    assert!(total > 100, "enough reads raced the writer: {total}");
    assert!(
        missed > 0,
        "some reads missed Redis and were served further down the chain"
    );
}
