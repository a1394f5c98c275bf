//! Access control on both APIs against the real PostgreSQL: each scope, the write quotas, request
//! ids, and who-did-what on every event with the history endpoint.

use std::num::NonZeroU32;

use futures::future::join_all;
use member_infra::config::Scope;
use member_tests::postgres::event_count;
use member_tests::query::spawn_query_api;
use member_tests::spawn::{command_api_settings, spawn_command_api_with, test_callers};
use member_tests::{spawn_command_api, TestApp, ADMIN_KEY, WRITER_KEY};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

const ORDER_KEY: &str = "local-order-key";
const MARKETING_KEY: &str = "local-marketing-key";

fn card() -> String {
    format!("{:012}", Uuid::new_v4().as_u128() % 1_000_000_000_000)
}

async fn register_as(app: &TestApp, key: Option<&str>, card: &str) -> reqwest::Response {
    let mut request = Client::new()
        .post(app.url("/v1/members"))
        .json(&json!({"identities": [{"kind": "elong_card", "value": card}]}));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

async fn error_code(r: reqwest::Response) -> (StatusCode, String) {
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    (
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn command_api_writes_need_a_known_key_with_scope_write() {
    let app = spawn_command_api().await;
    let id = Uuid::now_v7();
    for key in [None, Some("no-such-key-at-all"), Some("")] {
        let r = register_as(&app, key, &card()).await;
        assert!(r.headers().contains_key("www-authenticate"));
        assert_eq!(
            error_code(r).await,
            (StatusCode::UNAUTHORIZED, "unauthorized".into()),
            "{key:?}"
        );
    }
    // A key of another scheme is no key.
    let r = Client::new()
        .post(app.url("/v1/members"))
        .header("authorization", format!("Basic {WRITER_KEY}"))
        .json(&json!({"identities": [{"kind": "elong_card", "value": card()}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    for key in [ORDER_KEY, MARKETING_KEY, ADMIN_KEY] {
        let r = register_as(&app, Some(key), &card()).await;
        assert_eq!(
            error_code(r).await,
            (StatusCode::FORBIDDEN, "forbidden".into()),
            "{key}"
        );
        let bind = Client::new()
            .post(app.url(&format!("/v1/members/{id}/identities")))
            .bearer_auth(key)
            .json(&json!({"kind": "elong_card", "value": card()}))
            .send()
            .await
            .unwrap();
        assert_eq!(bind.status(), StatusCode::FORBIDDEN, "{key}");
        let unbind = Client::new()
            .delete(app.url(&format!("/v1/members/{id}/identities/elong_card/123456")))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(unbind.status(), StatusCode::FORBIDDEN, "{key}");
    }
    // Authentication comes before the body: a bad body without a key is still 401.
    let r = Client::new()
        .post(app.url("/v1/members"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        event_count(&app.pool).await,
        0,
        "nothing refused was stored"
    );

    let r = register_as(&app, Some(WRITER_KEY), &card()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // The operational routes stay open (probes and scrapers carry no key).
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = Client::new().get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn every_response_carries_a_request_id_the_callers_or_a_new_one() {
    let app = spawn_command_api().await;
    let client = member_tests::writer_client();
    let r = client
        .post(app.url("/v1/members"))
        .header("x-request-id", "trace-abc-123")
        .json(&json!({"identities": [{"kind": "elong_card", "value": card()}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["x-request-id"], "trace-abc-123");
    let long = "x".repeat(129);
    for (given, case) in [
        (None, "none"),
        (Some("has a space"), "space"),
        (Some(long.as_str()), "overlong"),
    ] {
        let mut request = client.get(app.url("/v1/nothing"));
        if let Some(given) = given {
            request = request.header("x-request-id", given);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let id = r.headers()["x-request-id"].to_str().unwrap();
        assert!(Uuid::parse_str(id).is_ok(), "{case}: a new id, not {id}");
    }
    // Refusals carry one too.
    let r = register_as(&app, None, &card()).await;
    assert!(r.headers().contains_key("x-request-id"));

    let query = spawn_query_api().await;
    let r = Client::new()
        .get(query.url(&format!("/v1/members/{}", Uuid::now_v7())))
        .bearer_auth(ORDER_KEY)
        .header("x-request-id", "query-trace-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.headers()["x-request-id"], "query-trace-1");
    let r = Client::new()
        .get(query.url("/admin/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(Uuid::parse_str(r.headers()["x-request-id"].to_str().unwrap()).is_ok());
    query.stop().await.unwrap();
    app.stop().await.unwrap();
}

async fn history(app: &TestApp, key: &str, id: &str, query: &str) -> (StatusCode, Value) {
    let r = Client::new()
        .get(app.url(&format!("/v1/members/{id}/history{query}")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn the_history_shows_who_did_what_with_identities_masked_unless_revealed() {
    let app = spawn_command_api().await;
    let client = member_tests::writer_client();
    let mobile = format!("139{:08}", Uuid::new_v4().as_u128() % 100_000_000);
    let r = client
        .post(app.url("/v1/members"))
        .header("x-request-id", "req-register-1")
        .json(&json!({"identities": [{"kind": "mobile", "value": mobile}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    let id = body["member_id"].as_str().unwrap().to_owned();
    let account = format!("tc_{}", Uuid::new_v4().simple());
    let r = client
        .post(app.url(&format!("/v1/members/{id}/identities")))
        .json(&json!({"kind": "tongcheng_account", "value": account}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let bind_request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();

    // Scope admin only.
    for key in [WRITER_KEY, ORDER_KEY, MARKETING_KEY] {
        assert_eq!(history(&app, key, &id, "").await.0, StatusCode::FORBIDDEN);
    }
    assert_eq!(
        history(&app, "not-a-key-at-all", &id, "").await.0,
        StatusCode::UNAUTHORIZED
    );

    let (status, body) = history(&app, ADMIN_KEY, &id, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["member_id"], id.as_str());
    let events = body["events"].as_array().unwrap();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["MemberRegistered", "IdentityBound", "IdentityBound"],
        "oldest first"
    );
    let versions: Vec<u64> = events
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2, 3]);
    for event in &events[..2] {
        assert_eq!(event["caller"], "local-writer");
        assert_eq!(event["request_id"], "req-register-1");
    }
    assert_eq!(events[2]["request_id"], bind_request_id.as_str());
    for event in events {
        let at = event["at"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok(), "{at}");
    }
    let text = body.to_string();
    assert!(!text.contains(&mobile[3..]), "mobile masked: {text}");
    assert!(!text.contains(&account), "account masked: {text}");
    assert!(!text.contains(WRITER_KEY), "never the key: {text}");
    assert_eq!(events[1]["identity"]["kind"], "mobile");
    assert!(events[1]["identity"]["value"]
        .as_str()
        .unwrap()
        .contains("****"));

    let (status, revealed) = history(&app, ADMIN_KEY, &id, "?reveal=true").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        revealed["events"][1]["identity"]["value"],
        format!("+86{mobile}")
    );
    assert_eq!(revealed["events"][2]["identity"]["value"], account.as_str());

    // Nor does the stored metadata hold the key.
    let metadata: Vec<String> = sqlx::query_scalar("SELECT metadata::text FROM events")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert!(metadata.iter().all(|m| !m.contains(WRITER_KEY)));

    let (status, body) = history(&app, ADMIN_KEY, &Uuid::now_v7().to_string(), "").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("member_not_found"))
    );
    let (status, _) = history(&app, ADMIN_KEY, "not-a-uuid", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = history(&app, ADMIN_KEY, &id, "?reveal=yes%27--").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    app.stop().await.unwrap();
}

/// Two writers with small quotas and a global budget that holds both.
fn two_writers(rate: u32, burst: u32) -> Vec<member_infra::config::CallerSettings> {
    let mut callers = test_callers();
    let template = callers
        .iter()
        .find(|c| c.has(Scope::Write))
        .unwrap()
        .clone();
    for (name, key) in [
        ("burst-writer", "burst-writer-key"),
        ("quiet-writer", "quiet-writer-key"),
    ] {
        let mut c = template.clone();
        c.name = name.into();
        c.key = key.to_owned().into();
        c.write_rate_per_second = rate;
        c.write_burst = burst;
        callers.push(c);
    }
    callers
}

#[tokio::test]
async fn a_writer_over_its_quota_gets_429_and_does_not_starve_another() {
    let pool = member_tests::postgres::fresh_event_store().await;
    let app = spawn_command_api_with(pool, command_api_settings(), two_writers(1, 5)).await;
    let results = join_all((0..30).map(|_| async {
        let r = register_as(&app, Some("burst-writer-key"), &card()).await;
        let retry_after = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        (r.status(), retry_after)
    }))
    .await;
    let created = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    let limited: Vec<_> = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    // Its burst of 5, and at most one more refilled while the burst was sent.
    assert!((5..=6).contains(&created), "{results:?}");
    assert_eq!(created + limited.len(), 30, "{results:?}");
    assert!(limited.iter().all(|(_, r)| r.is_some_and(|s| s >= 1)));
    for _ in 0..5 {
        let r = register_as(&app, Some("quiet-writer-key"), &card()).await;
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "the other writer is served"
        );
    }
    assert_eq!(event_count(&app.pool).await as usize, 2 * (created + 5));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_global_write_budget_refuses_once_spent() {
    let pool = member_tests::postgres::fresh_event_store().await;
    let mut settings = command_api_settings();
    settings.write_rate_per_second = NonZeroU32::MIN;
    settings.write_burst = NonZeroU32::new(4).unwrap();
    let app = spawn_command_api_with(pool, settings, test_callers()).await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(register_as(&app, Some(WRITER_KEY), &card()).await.status());
    }
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    assert!((4..=5).contains(&created), "{statuses:?}");
    let r = register_as(&app, Some(WRITER_KEY), &card()).await;
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        error_code(r).await,
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited".into())
    );
    app.stop().await.unwrap();
}
