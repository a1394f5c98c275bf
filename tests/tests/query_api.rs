//! The query API over in-memory backends: fail-over along the chains, caller isolation,
//! monotonic reads, cache fill, flow control, admin endpoints and the contract's errors.

use std::num::{NonZeroU32, NonZeroU64};
use std::time::{Duration, Instant};

use member_api::query_api::SERVED_FROM;
use member_domain::{Identity, MemberEvent};
use member_projections::fixtures::MemberHistory;
use member_tests::query::{
    query_settings, spawn_query_api, spawn_query_api_with, QueryApp, Stores,
};
use rand::Rng;
use reqwest::header::HeaderMap;
use reqwest::{Client, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use uuid::Uuid;

const ORDER: &str = "local-order-key";
const MARKETING: &str = "local-marketing-key";
const ADMIN: &str = "local-admin-key";

fn digits(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(b'0' + rng.random_range(0..10)))
        .collect()
}

/// A member with a fresh mobile and card: returns its id, history (versions 1..=3) and mobile.
fn member() -> (Uuid, MemberHistory, String) {
    let id = Uuid::now_v7();
    let mobile = format!("139{}", digits(8));
    let mut h = MemberHistory::new(id);
    h.push(MemberEvent::MemberRegistered {}, None);
    h.push(
        MemberEvent::IdentityBound {
            identity: Identity::parse("mobile", &mobile, None, None).unwrap(),
        },
        Some(1),
    );
    h.push(
        MemberEvent::IdentityBound {
            identity: Identity::parse("elong_card", &digits(12), None, None).unwrap(),
        },
        Some(1),
    );
    (id, h, mobile)
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn served_from(&self) -> &str {
        self.headers
            .get(SERVED_FROM)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn version(&self) -> u64 {
        self.body["version"].as_u64().expect("a document")
    }
}

async fn get(app: &QueryApp, key: Option<&str>, path: &str) -> Reply {
    let mut request = Client::new().get(app.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let r = request.send().await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply {
        status,
        headers,
        body,
    }
}

async fn by_id(app: &QueryApp, key: &str, id: Uuid) -> Reply {
    get(app, Some(key), &format!("/v1/members/{id}")).await
}

async fn by_mobile(app: &QueryApp, key: &str, mobile: &str) -> Reply {
    get(
        app,
        Some(key),
        &format!("/v1/members?kind=mobile&value={mobile}"),
    )
    .await
}

async fn admin(app: &QueryApp, key: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let r = Client::new()
        .post(app.url(path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

#[tokio::test]
async fn order_reads_fall_through_each_backend_without_a_failed_request() {
    let app = spawn_query_api().await;
    let (id, h, mobile) = member();
    app.stores.apply_all(h.records()).await;

    let chain = [
        "redis-a",
        "redis-b",
        "search-primary",
        "search-backup",
        "mysql",
    ];
    for (i, serving) in chain.iter().enumerate() {
        for _ in 0..6 {
            let r = by_id(&app, ORDER, id).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            assert_eq!(r.served_from(), *serving, "with {:?} down", &chain[..i]);
            assert_eq!(r.version(), 3);
            let r = by_mobile(&app, ORDER, &mobile).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            assert_eq!(r.served_from(), *serving);
            assert_eq!(r.body["member_id"], json!(id));
        }
        app.stores.by_name(serving).set_down(true);
    }
    // Every backend of the order chain is down: 503, with Retry-After.
    let r = by_id(&app, ORDER, id).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(r.body["error"], "unavailable");
    assert!(r.headers.contains_key("retry-after"));
    // The marketing cluster is up, but order traffic never reads it.
    assert_eq!(app.stores.search_marketing.reads(), 0);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn an_open_breaker_skips_the_backend_and_reads_return_after_the_probe() {
    let app = spawn_query_api().await;
    let (id, h, _) = member();
    app.stores.apply_all(h.records()).await;
    let redis_a = &app.stores.redis_a;
    redis_a.set_down(true);
    for _ in 0..5 {
        let r = by_id(&app, ORDER, id).await;
        assert_eq!((r.status, r.served_from()), (StatusCode::OK, "redis-b"));
    }
    // The breaker is open now (3 failures of 3): the next reads do not even call redis-a,
    // except at most one half-open probe.
    let before = redis_a.reads();
    for _ in 0..20 {
        let r = by_id(&app, ORDER, id).await;
        assert_eq!((r.status, r.served_from()), (StatusCode::OK, "redis-b"));
    }
    assert!(
        redis_a.reads() - before <= 1,
        "an open breaker still called redis-a {} times",
        redis_a.reads() - before
    );
    let status = get(&app, Some(ADMIN), "/admin/status").await;
    let a = &status.body["backends"][1];
    assert_eq!(a["backend"], "redis-a", "{}", status.body);
    assert_ne!(a["breaker"], "closed", "{}", status.body);

    // Back up: after the open period a probe succeeds and reads return to the local center.
    redis_a.set_down(false);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = by_id(&app, ORDER, id).await;
        assert_eq!(r.status, StatusCode::OK);
        if r.served_from() == "redis-a" {
            break;
        }
        assert!(Instant::now() < deadline, "reads never returned to redis-a");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = by_id(&app, ORDER, id).await;
    assert_eq!(r.served_from(), "redis-a");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_slow_backend_times_out_within_the_same_request() {
    let app = spawn_query_api().await;
    let (id, h, _) = member();
    app.stores.apply_all(h.records()).await;
    // Far beyond the 50 ms backend timeout: without the timeout the answer would come from
    // redis-a, half a minute later.
    app.stores.redis_a.set_delay(Duration::from_secs(30));
    let r = by_id(&app, ORDER, id).await;
    assert_eq!((r.status, r.served_from()), (StatusCode::OK, "redis-b"));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn marketing_never_reaches_the_order_path_clusters() {
    let app = spawn_query_api().await;
    let (id, h, mobile) = member();
    app.stores.apply_all(h.records()).await;
    let (other, h2, _) = member();
    // Known only to the order path's stores.
    for s in [
        &app.stores.search_primary,
        &app.stores.search_backup,
        &app.stores.mysql,
    ] {
        s.apply(h2.records()).await;
    }

    let r = by_id(&app, MARKETING, id).await;
    assert_eq!((r.status, r.served_from()), (StatusCode::OK, "redis-a"));
    app.stores.redis_a.set_down(true);
    let r = by_mobile(&app, MARKETING, &mobile).await;
    assert_eq!(
        (r.status, r.served_from()),
        (StatusCode::OK, "search-marketing")
    );
    let r = by_id(&app, MARKETING, other).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    assert_eq!(r.body["error"], "member_not_found");
    app.stores.search_marketing.set_down(true);
    for _ in 0..5 {
        let r = by_id(&app, MARKETING, id).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    }
    // Even a pin cannot send marketing there.
    let (status, body) = admin(
        &app,
        ADMIN,
        "/admin/routing",
        json!({"class": "marketing", "pin": "search-primary"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    for s in [
        &app.stores.search_primary,
        &app.stores.search_backup,
        &app.stores.mysql,
    ] {
        assert_eq!(s.reads(), 0, "marketing read {}", s.name());
    }
    // Order traffic is not affected by the marketing outage.
    let r = by_id(&app, ORDER, id).await;
    assert_eq!((r.status, r.served_from()), (StatusCode::OK, "redis-b"));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn marketing_callers_see_masked_mobiles() {
    let app = spawn_query_api().await;
    let (id, h, mobile) = member();
    app.stores.apply_all(h.records()).await;
    let mobile_of = |r: &Reply| {
        r.body["identities"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["kind"] == "mobile")
            .unwrap()["value"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let r = by_id(&app, ORDER, id).await;
    assert_eq!(mobile_of(&r), format!("+86{mobile}"));
    let r = by_id(&app, MARKETING, id).await;
    assert_eq!(
        mobile_of(&r),
        format!("+86{}****{}", &mobile[..3], &mobile[7..])
    );
    assert!(!r.body.to_string().contains(&mobile), "{}", r.body);
    // The contract's document shape, without generations.
    let keys: Vec<_> = r.body.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys.len(), 5, "{keys:?}");
    assert!(r.body["identities"][0].get("generation").is_none());
    app.stop().await.unwrap();
}

#[tokio::test]
async fn keys_are_required_and_each_endpoint_needs_its_scope() {
    let app = spawn_query_api().await;
    let id = Uuid::now_v7();
    for key in [None, Some("wrong-key")] {
        let r = get(&app, key, &format!("/v1/members/{id}")).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{key:?}");
        assert_eq!(r.body["error"], "unauthorized");
    }
    // Known keys without scope `read`.
    for key in [ADMIN, member_tests::WRITER_KEY] {
        let r = get(&app, Some(key), &format!("/v1/members/{id}")).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{key:?}");
        assert_eq!(r.body["error"], "forbidden");
    }
    let r = Client::new()
        .get(app.url(&format!("/v1/members/{id}")))
        .header("authorization", format!("Basic {ORDER}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    for key in [None, Some("x")] {
        let r = get(&app, key, "/admin/status").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{key:?}");
    }
    // Known keys without scope `admin`.
    for key in [ORDER, MARKETING, member_tests::WRITER_KEY] {
        let r = get(&app, Some(key), "/admin/status").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{key:?}");
        assert_eq!(r.body["error"], "forbidden");
    }
    let (status, _) = admin(
        &app,
        ORDER,
        "/admin/faults",
        json!({"backend": "mysql", "down": true}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = admin(
        &app,
        MARKETING,
        "/admin/routing",
        json!({"class": "order", "pin": "mysql"}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Nothing changed.
    let r = get(&app, Some(ADMIN), "/admin/status").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body["backends"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["faulted"] == false));
    assert_eq!(r.body["chains"]["order"][0], "redis-a");
    // Operational routes are open.
    assert_eq!(get(&app, None, "/healthz").await.status, StatusCode::OK);
    assert_eq!(get(&app, None, "/readyz").await.status, StatusCode::OK);
    assert_eq!(get(&app, None, "/metrics").await.status, StatusCode::OK);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn bad_ids_kinds_and_values_are_400() {
    let app = spawn_query_api().await;
    for path in [
        "/v1/members/not-a-uuid",
        "/v1/members/1234",
        "/v1/members?kind=email&value=a@b.c",
        "/v1/members?kind=mobile&value=12345",
        "/v1/members?kind=mobile",
        "/v1/members?value=13800138000",
        "/v1/members",
        "/v1/members?kind=wechat_openid&value=oOpenid_123456789",
        "/v1/members?kind=wechat_openid&value=other_mp:oOpenid_123456789",
        "/v1/members?kind=elong_card&value=abc",
    ] {
        let r = get(&app, Some(ORDER), path).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.body);
        assert_eq!(r.body["error"], "invalid_request", "{path}");
    }
    let r = get(&app, Some(ORDER), "/v2/members").await;
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let r = Client::new()
        .delete(app.url("/v1/members"))
        .bearer_auth(ORDER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    for body in [
        json!({"backend": "redis-c", "down": true}),
        json!({"backend": "mysql"}),
        json!([1]),
    ] {
        let (status, reply) = admin(&app, ADMIN, "/admin/faults", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
        assert_eq!(reply["error"], "invalid_request");
    }
    let (status, _) = admin(
        &app,
        ADMIN,
        "/admin/routing",
        json!({"class": "vip", "pin": null}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = admin(
        &app,
        ADMIN,
        "/admin/routing",
        json!({"class": "order", "pin": "search-marketing"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Openids are looked up as app:value.
    let r = get(
        &app,
        Some(ORDER),
        "/v1/members?kind=wechat_openid&value=elong_mp:oOpenid_123456789",
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_negative_answer_is_confirmed_and_a_lagging_search_does_not_cause_404() {
    let app = spawn_query_api().await;
    // Unknown everywhere: 404 after every authoritative store said so.
    let r = by_id(&app, ORDER, Uuid::now_v7()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["error"], "member_not_found");
    assert_eq!(
        app.stores.mysql.reads(),
        1,
        "mysql confirmed the negative answer"
    );

    // Registered a moment ago: only MySQL has it yet; search is behind.
    let (id, h, mobile) = member();
    app.stores.mysql.apply(h.records()).await;
    let r = by_mobile(&app, ORDER, &mobile).await;
    assert_eq!(
        (r.status, r.served_from()),
        (StatusCode::OK, "mysql"),
        "{}",
        r.body
    );
    // The local center was filled from it: the next read is a cache hit.
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.stores.redis_a.fills_written() == 0 {
        assert!(Instant::now() < deadline, "redis-a was never filled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = by_id(&app, ORDER, id).await;
    assert_eq!((r.status, r.served_from()), (StatusCode::OK, "redis-a"));
    let r = by_mobile(&app, ORDER, &mobile).await;
    assert_eq!((r.status, r.served_from()), (StatusCode::OK, "redis-a"));
    assert_eq!(
        app.stores.redis_b.fills_written(),
        0,
        "only the local center is filled"
    );

    // A fence above the copy's version refuses the fill: the cache keeps missing.
    let (id2, h2, _) = member();
    app.stores.mysql.apply(h2.records()).await;
    app.stores.redis_a.set_fence(id2, 4);
    for _ in 0..3 {
        let r = by_id(&app, ORDER, id2).await;
        assert_eq!((r.status, r.served_from()), (StatusCode::OK, "mysql"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.stores.redis_a.fills_written(), 1);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn reads_never_go_back_to_an_older_version() {
    let app = spawn_query_api().await;
    let (id, h, mobile) = member();
    let records = h.records();
    // Every store at version 2 except MySQL at version 3.
    for s in app.stores.all() {
        s.apply(&records[..2]).await;
    }
    app.stores.mysql.apply(records).await;
    // The local center's fence refuses fills (its projector knows of a newer version), so
    // only MySQL ever holds version 3 here.
    app.stores.redis_a.set_fence(id, 4);
    let pin = |p: Value| {
        admin(
            &app,
            ADMIN,
            "/admin/routing",
            json!({"class": "order", "pin": p}),
        )
    };
    assert_eq!(pin(json!("mysql")).await.0, StatusCode::OK);
    let r = by_id(&app, ORDER, id).await;
    assert_eq!((r.version(), r.served_from()), (3, "mysql"));
    assert_eq!(pin(Value::Null).await.0, StatusCode::OK);
    // redis-a, redis-b, primary and backup hold version 2: they are passed over.
    let r = by_id(&app, ORDER, id).await;
    assert_eq!((r.version(), r.served_from()), (3, "mysql"), "{}", r.body);
    // No store has version 3 any more (MySQL is down): the last served copy is served again.
    app.stores.mysql.set_down(true);
    let r = by_id(&app, ORDER, id).await;
    assert_eq!(
        (r.status, r.version(), r.served_from()),
        (StatusCode::OK, 3, "last-served")
    );
    // By identity (version 2 still holds the mobile, and so does version 3).
    let r = by_mobile(&app, ORDER, &mobile).await;
    assert_eq!((r.status, r.version()), (StatusCode::OK, 3), "{}", r.body);
    assert_eq!(app.stores.redis_a.fills_written(), 0);
    // The stores catch up: served from the preferred backend again.
    app.stores.redis_a.apply(records).await;
    let r = by_id(&app, ORDER, id).await;
    assert_eq!((r.version(), r.served_from()), (3, "redis-a"));
    app.stop().await.unwrap();
}

/// A reader that keeps a copy in process memory (the tracked cache of a Redis center, ADR 0038)
/// is served from it without a call, but never below what this process served already, and
/// not while the backend is faulted.
#[tokio::test]
async fn a_copy_in_memory_is_served_without_a_call_and_never_below_the_floor() {
    let app = spawn_query_api().await;
    let (id, h, mobile) = member();
    let records = h.records();
    for s in app.stores.all() {
        s.apply(&records[..2]).await;
    }
    app.stores.mysql.apply(records).await;
    app.stores.redis_a.set_fence(id, 4);
    let v2 = &records[1].document;
    let v3 = &records[2].document;
    app.stores.redis_a.hold_in_memory(v2);
    // Nothing served yet: the copy in memory (version 2) is the answer, with no read.
    let r = by_id(&app, ORDER, id).await;
    assert_eq!((r.version(), r.served_from()), (2, "redis-a"));
    assert_eq!(app.stores.redis_a.reads(), 0);
    // Version 3 is served (from MySQL, pinned): the copy in memory is now below the floor and
    // is passed over like any lagging copy.
    let pin = |p: Value| {
        admin(
            &app,
            ADMIN,
            "/admin/routing",
            json!({"class": "order", "pin": p}),
        )
    };
    assert_eq!(pin(json!("mysql")).await.0, StatusCode::OK);
    assert_eq!(by_id(&app, ORDER, id).await.version(), 3);
    assert_eq!(pin(Value::Null).await.0, StatusCode::OK);
    let r = by_id(&app, ORDER, id).await;
    assert_eq!((r.version(), r.served_from()), (3, "mysql"), "{}", r.body);
    let r = by_mobile(&app, ORDER, &mobile).await;
    assert_eq!(r.version(), 3, "{}", r.body);
    // The copy catches up: served from memory, by id and by identity, with no read.
    app.stores.redis_a.hold_in_memory(v3);
    let reads = app.stores.redis_a.reads();
    let r = by_id(&app, ORDER, id).await;
    assert_eq!((r.version(), r.served_from()), (3, "redis-a"));
    let r = by_mobile(&app, ORDER, &mobile).await;
    assert_eq!((r.version(), r.served_from()), (3, "redis-a"));
    assert_eq!(app.stores.redis_a.reads(), reads);
    // A faulted backend is not read from memory either.
    let (status, _) = admin(
        &app,
        ADMIN,
        "/admin/faults",
        json!({"backend": "redis-a", "down": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let r = by_id(&app, ORDER, id).await;
    assert_ne!(r.served_from(), "redis-a");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_caller_over_its_quota_gets_429_with_retry_after() {
    let mut settings = query_settings();
    let order = settings
        .callers
        .iter_mut()
        .find(|c| c.key.expose_secret() == ORDER)
        .unwrap();
    order.rate_per_second = 1;
    order.burst = 3;
    let app = spawn_query_api_with(Stores::new(), settings).await;
    for _ in 0..3 {
        let r = by_id(&app, ORDER, Uuid::now_v7()).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    }
    let r = by_id(&app, ORDER, Uuid::now_v7()).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    assert_eq!(r.body["error"], "rate_limited");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    // The other caller has its own quota.
    let r = by_id(&app, MARKETING, Uuid::now_v7()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_hot_identity_is_limited_and_served_from_the_near_cache() {
    let mut settings = query_settings();
    settings.query_api.flow.hot_key_rate_per_second = 2;
    settings.query_api.flow.hotspot_rate_per_second = NonZeroU32::new(1).unwrap();
    settings.query_api.flow.hotspot_burst = NonZeroU32::new(8).unwrap();
    settings.query_api.cache.near_cache_ttl_ms = NonZeroU64::new(60_000).unwrap();
    let app = spawn_query_api_with(Stores::new(), settings).await;
    let (_, h, mobile) = member();
    let (_, h2, other_mobile) = member();
    app.stores.apply_all(h.records()).await;
    app.stores.apply_all(h2.records()).await;
    let mut from = Vec::new();
    for _ in 0..8 {
        let r = by_mobile(&app, ORDER, &mobile).await;
        assert_eq!(r.status, StatusCode::OK);
        from.push(r.served_from().to_owned());
    }
    assert!(from[..2].iter().all(|f| f == "redis-a"), "{from:?}");
    assert_eq!(
        from[7], "near-cache",
        "a hot key is served in process: {from:?}"
    );
    assert!(app.stores.redis_a.reads() < 8);
    let r = by_mobile(&app, ORDER, &mobile).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    assert!(r.headers.contains_key("retry-after"));
    assert!(
        r.body["message"].as_str().unwrap().contains("hotspot"),
        "{}",
        r.body
    );
    // Other identities are not affected.
    let r = by_mobile(&app, ORDER, &other_mobile).await;
    assert_eq!(r.status, StatusCode::OK);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn marketing_is_shed_before_order_under_the_global_limit() {
    let mut settings = query_settings();
    settings.query_api.flow.global_rate_per_second = NonZeroU32::new(1).unwrap();
    settings.query_api.flow.global_burst = NonZeroU32::new(20).unwrap();
    settings.query_api.flow.marketing_share = 0.25;
    let app = spawn_query_api_with(Stores::new(), settings).await;
    let mut marketing_ok = 0;
    let mut shed = None;
    for _ in 0..10 {
        let r = by_id(&app, MARKETING, Uuid::now_v7()).await;
        match r.status {
            StatusCode::NOT_FOUND => marketing_ok += 1,
            StatusCode::TOO_MANY_REQUESTS => shed = Some(r),
            other => panic!("{other}"),
        }
    }
    assert_eq!(marketing_ok, 5, "marketing gets a quarter of the burst");
    let shed = shed.expect("marketing was shed");
    assert!(shed.body["message"]
        .as_str()
        .unwrap()
        .contains("marketing_shed"));
    assert!(shed.headers.contains_key("retry-after"));
    // Order traffic still has the rest of the budget...
    for i in 0..15 {
        let r = by_id(&app, ORDER, Uuid::now_v7()).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "order request {i} refused");
    }
    // ...and then it is limited too.
    let r = by_id(&app, ORDER, Uuid::now_v7()).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.body["message"].as_str().unwrap().contains("global"));
    app.stop().await.unwrap();
}

/// Sends `n` reads of `id` with `key` and waits until they are all being served (at redis-a).
async fn hold(
    app: &QueryApp,
    key: &'static str,
    id: Uuid,
    n: usize,
) -> Vec<tokio::task::JoinHandle<StatusCode>> {
    let started = app.stores.redis_a.reads();
    let url = app.url(&format!("/v1/members/{id}"));
    let held = (0..n)
        .map(|_| {
            let request = Client::new().get(&url).bearer_auth(key);
            tokio::spawn(async move { request.send().await.unwrap().status() })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.stores.redis_a.reads() < started + n {
        assert!(Instant::now() < deadline, "the slow reads never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    held
}

async fn assert_overloaded(app: &QueryApp, key: &str, id: Uuid) {
    let started = Instant::now();
    let r = by_id(app, key, id).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{key}: {}", r.body);
    assert_eq!(r.body["error"], "rate_limited", "{}", r.body);
    assert!(
        r.body["message"].as_str().unwrap().contains("overloaded"),
        "{}",
        r.body
    );
    assert_eq!(r.headers["retry-after"], "1");
    assert!(
        started.elapsed() < Duration::from_millis(1_000),
        "{key} was queued behind the slow reads for {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn requests_over_the_in_flight_bound_are_refused_at_once_marketing_first() {
    let mut settings = query_settings();
    settings.query_api.flow.max_in_flight = NonZeroU32::new(4).unwrap();
    settings.query_api.flow.marketing_share = 0.5;
    // Slow reads are held, not timed out, so the slots stay taken.
    let b = &mut settings.query_api.backends;
    (b.redis_timeout_ms, b.redis_slow_ms) = (
        NonZeroU64::new(10_000).unwrap(),
        NonZeroU64::new(10_000).unwrap(),
    );
    let app = spawn_query_api_with(Stores::new(), settings).await;
    let (id, h, _) = member();
    app.stores.apply_all(h.records()).await;
    app.stores.redis_a.set_delay(Duration::from_millis(2_000));

    let mut held = hold(&app, MARKETING, id, 2).await;
    // Marketing has its half of the slots; order still gets the other half.
    assert_overloaded(&app, MARKETING, id).await;
    held.extend(hold(&app, ORDER, id, 2).await);
    assert_overloaded(&app, ORDER, id).await;
    assert_eq!(
        app.stores.redis_a.reads(),
        4,
        "a refused request read nothing"
    );
    for request in held {
        assert_eq!(request.await.unwrap(), StatusCode::OK);
    }

    // The slots are given back when the reads end.
    app.stores.redis_a.set_delay(Duration::ZERO);
    for key in [MARKETING, MARKETING, ORDER, ORDER] {
        let r = by_id(&app, key, id).await;
        assert_eq!((r.status, r.served_from()), (StatusCode::OK, "redis-a"));
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn admin_faults_and_pins_change_where_reads_are_served_from() {
    let app = spawn_query_api().await;
    let (id, h, _) = member();
    app.stores.apply_all(h.records()).await;
    let fault = |b: &str, down: bool| {
        admin(
            &app,
            ADMIN,
            "/admin/faults",
            json!({"backend": b, "down": down}),
        )
    };
    let (status, body) = fault("redis-a", true).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["faulted"], true);
    let r = by_id(&app, ORDER, id).await;
    assert_eq!(r.served_from(), "redis-b");
    let reads_a = app.stores.redis_a.reads();

    let (status, body) = admin(
        &app,
        ADMIN,
        "/admin/routing",
        json!({"class": "order", "pin": "search-backup"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["chain"][0], "search-backup");
    let r = by_id(&app, ORDER, id).await;
    assert_eq!(r.served_from(), "search-backup");
    // Marketing is not affected by an order pin.
    let r = by_id(&app, MARKETING, id).await;
    assert_eq!(r.served_from(), "search-marketing", "redis-a is faulted");

    let status = get(&app, Some(ADMIN), "/admin/status").await.body;
    let backend = |name: &str| {
        status["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["backend"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(backend("redis-a")["faulted"], true);
    assert_eq!(backend("search-backup")["pinned_for"], json!(["order"]));
    assert_eq!(status["chains"]["order"][0], "search-backup");
    assert_eq!(status["projections"], Value::Null);

    admin(
        &app,
        ADMIN,
        "/admin/routing",
        json!({"class": "order", "pin": null}),
    )
    .await;
    let r = by_id(&app, ORDER, id).await;
    assert_eq!(r.served_from(), "redis-b");
    fault("redis-a", false).await;
    let r = by_id(&app, ORDER, id).await;
    assert_eq!(r.served_from(), "redis-a");
    assert_eq!(
        app.stores.redis_a.reads(),
        reads_a + 1,
        "a faulted backend is not called"
    );

    // Readiness follows the order chain, and reports each backend (each search cluster).
    for b in [
        "redis-a",
        "redis-b",
        "search-primary",
        "search-backup",
        "mysql",
    ] {
        let ready = get(&app, None, "/readyz").await;
        assert_eq!(ready.status, StatusCode::OK, "{b}");
        assert_eq!(
            ready.body["backends"][b]["available"], true,
            "{b}: {}",
            ready.body
        );
        fault(b, true).await;
        let ready = get(&app, None, "/readyz").await;
        assert_eq!(
            ready.body["backends"][b]["available"], false,
            "{b}: {}",
            ready.body
        );
        assert_eq!(
            ready.body["backends"][b]["faulted"], true,
            "{b}: {}",
            ready.body
        );
    }
    let ready = get(&app, None, "/readyz").await;
    assert_eq!(
        ready.body["backends"]["search-marketing"]["available"],
        true
    );
    assert_eq!(
        get(&app, None, "/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let r = by_id(&app, ORDER, id).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    fault("mysql", false).await;
    assert_eq!(get(&app, None, "/readyz").await.status, StatusCode::OK);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_show_where_reads_are_served_from() {
    let app = spawn_query_api().await;
    let (id, h, _) = member();
    app.stores.apply_all(h.records()).await;
    app.stores.redis_a.set_down(true);
    for _ in 0..3 {
        assert_eq!(by_id(&app, MARKETING, id).await.status, StatusCode::OK);
    }
    let metrics = get(&app, None, "/metrics").await.body;
    let text = metrics.as_str().unwrap();
    for needle in [
        "member_query_requests_total{class=\"marketing\",outcome=\"ok\"}",
        "member_query_served_total{backend=\"search-marketing\",class=\"marketing\"}",
        "member_query_fallbacks_total{backend=\"redis-a\",class=\"marketing\",reason=\"error\"}",
        "member_query_breaker_state{backend=\"redis-a\"}",
        "member_query_cache_total{cache=\"near\",result=\"miss\"}",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_repeated_identity_lookup_reads_the_owner_it_served_by_id() {
    let app = spawn_query_api().await;
    let (id, h, mobile) = member();
    app.stores.apply_all(h.records()).await;
    let path = format!("/v1/members?kind=mobile&value={mobile}");
    let first = get(&app, Some(ORDER), &path).await;
    assert_eq!(
        (first.body["member_id"].clone(), first.served_from()),
        (json!(id), "redis-a")
    );
    assert_eq!(app.stores.redis_a.identity_reads(), 1);
    // The second lookup knows the owner: one read of its document by id (one round trip on
    // Redis), not the identity entry and then the document.
    let second = get(&app, Some(ORDER), &path).await;
    assert_eq!(
        (second.body["member_id"].clone(), second.served_from()),
        (json!(id), "redis-a")
    );
    assert_eq!(
        app.stores.redis_a.identity_reads(),
        1,
        "no identity-index read"
    );
    assert_eq!(app.stores.redis_a.reads(), 2);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_lagging_store_cannot_take_back_an_identity_that_moved() {
    let app = spawn_query_api().await;
    let card = Identity::parse("elong_card", &digits(12), None, None).unwrap();
    let value = card.value().to_owned();
    let (old_owner, new_owner) = (Uuid::now_v7(), Uuid::now_v7());
    let mut old = MemberHistory::new(old_owner);
    old.push(MemberEvent::MemberRegistered {}, None);
    old.push(
        MemberEvent::IdentityBound {
            identity: card.clone(),
        },
        Some(1),
    );
    let before_move = old.records().to_vec();
    old.push(
        MemberEvent::IdentityUnbound {
            identity: card.clone(),
            reason: member_domain::UnbindReason::MemberRequest,
        },
        Some(2),
    );
    let mut new = MemberHistory::new(new_owner);
    new.push(MemberEvent::MemberRegistered {}, None);
    new.push(
        MemberEvent::IdentityBound {
            identity: card.clone(),
        },
        Some(3),
    );
    // MySQL has seen the move; every other store still shows the old owner.
    for s in app.stores.all() {
        s.apply(&before_move).await;
    }
    app.stores.mysql.apply(old.records()).await;
    app.stores.mysql.apply(new.records()).await;
    app.stores.redis_a.set_fence(new_owner, 99);
    let path = format!("/v1/members?kind=elong_card&value={value}");
    let r = get(&app, Some(ORDER), &path).await;
    assert_eq!(
        r.body["member_id"],
        json!(old_owner),
        "the chain's first store answers"
    );
    let pin = |p: Value| {
        admin(
            &app,
            ADMIN,
            "/admin/routing",
            json!({"class": "order", "pin": p}),
        )
    };
    pin(json!("mysql")).await;
    let r = get(&app, Some(ORDER), &path).await;
    assert_eq!(
        (r.body["member_id"].clone(), r.served_from()),
        (json!(new_owner), "mysql")
    );
    pin(Value::Null).await;
    // The stores in front still show the old owner: they are passed over.
    let r = get(&app, Some(ORDER), &path).await;
    assert_eq!(
        (r.body["member_id"].clone(), r.served_from()),
        (json!(new_owner), "mysql")
    );
    app.stores.mysql.set_down(true);
    let r = get(&app, Some(ORDER), &path).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        (r.body["member_id"].clone(), r.served_from()),
        (json!(new_owner), "last-served")
    );
    app.stop().await.unwrap();
}

/// The lag of search-primary's projection, as the test sets it.
struct SetLag(std::sync::Mutex<Option<u64>>);

#[async_trait::async_trait]
impl member_projections::status::StatusProvider for SetLag {
    async fn projection_lag(
        &self,
    ) -> Result<Vec<member_projections::status::ProjectionLag>, member_projections::sink::BoxError>
    {
        Ok(vec![member_projections::status::ProjectionLag {
            target: "search-primary".into(),
            records_behind: *self.0.lock().unwrap(),
            seconds_behind: None,
        }])
    }
}

#[tokio::test]
async fn a_backend_whose_breaker_opened_returns_only_once_its_projection_caught_up() {
    let lag = std::sync::Arc::new(SetLag(std::sync::Mutex::new(Some(0))));
    let app = member_tests::query::spawn_query_api_with_status(
        Stores::new(),
        query_settings(),
        Some(lag.clone()),
    )
    .await;
    let (id, h, _) = member();
    app.stores.apply_all(h.records()).await;
    for center in ["redis-a", "redis-b"] {
        let body = json!({"backend": center, "down": true});
        assert_eq!(
            admin(&app, ADMIN, "/admin/faults", body).await.0,
            StatusCode::OK
        );
    }
    assert_eq!(by_id(&app, ORDER, id).await.served_from(), "search-primary");

    // The cluster dies: reads move on and its breaker opens; meanwhile its projector falls behind.
    app.stores.search_primary.set_down(true);
    *lag.0.lock().unwrap() = Some(5_000);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = by_id(&app, ORDER, id).await;
        assert_eq!(r.status, StatusCode::OK);
        let ready = get(&app, None, "/readyz").await;
        if ready.body["backends"]["search-primary"]["recovering"] == true {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the breaker never opened: {}",
            ready.body
        );
    }

    // Back up, but 5,000 records behind: no reads, not even the breaker's probes, for several
    // of its open periods (500 ms here).
    app.stores.search_primary.set_down(false);
    let reads = app.stores.search_primary.reads();
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        assert_eq!(by_id(&app, ORDER, id).await.served_from(), "search-backup");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        app.stores.search_primary.reads(),
        reads,
        "a stale cluster was read"
    );

    // Caught up (within query_api.backends.return_max_lag_records): reads return.
    *lag.0.lock().unwrap() = Some(3);
    let deadline = Instant::now() + Duration::from_secs(10);
    while by_id(&app, ORDER, id).await.served_from() != "search-primary" {
        assert!(
            Instant::now() < deadline,
            "reads never returned to search-primary"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await.unwrap();
}
