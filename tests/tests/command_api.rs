//! The command API against the real PostgreSQL: contract routes, invariants under concurrency,
//! idempotency, hostile input and graceful shutdown.

use futures::future::join_all;
use member_tests::postgres::{event_count, owner_count};
use member_tests::{spawn_command_api, TestApp};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const UNIONID: &str = "oUnion_AAAAAAAAAAAAAAAAAAAAAAAAAAA";
const OTHER_UNIONID: &str = "oUnion_BBBBBBBBBBBBBBBBBBBBBBBBBBB";

async fn register(app: &TestApp, client: &Client, identities: Value) -> (StatusCode, Value) {
    let r = client
        .post(app.url("/v1/members"))
        .json(&json!({ "identities": identities }))
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

async fn bind(app: &TestApp, client: &Client, member: &str, body: Value) -> (StatusCode, Value) {
    let r = client
        .post(app.url(&format!("/v1/members/{member}/identities")))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

fn member_id(body: &Value) -> String {
    body["member_id"].as_str().expect("member_id").to_owned()
}

#[tokio::test]
async fn register_bind_and_unbind_follow_the_contract() {
    let app = spawn_command_api().await;
    let client = member_tests::writer_client();

    let (status, body) = register(
        &app,
        &client,
        json!([{"kind": "mobile", "value": "13800138000"}]),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["version"], 2, "registered + mobile bound: {body}");
    let id = member_id(&body);

    let openid = json!({"kind": "wechat_openid", "value": "oOpenid_tc_0000000001",
                        "app": "tongcheng_mp", "unionid": UNIONID});
    let (status, body) = bind(&app, &client, &id, openid.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"member_id": id, "version": 4}),
        "unionid bound with the openid"
    );

    // Binding it again changes nothing.
    let (status, body) = bind(&app, &client, &id, openid).await;
    assert_eq!(
        (status, body["version"].clone()),
        (StatusCode::OK, json!(4))
    );

    let (status, body) = bind(
        &app,
        &client,
        &id,
        json!({"kind": "mobile", "value": "+8613900139000"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"], "identity_kind_already_bound");

    let r = client
        .delete(app.url(&format!(
            "/v1/members/{id}/identities/wechat_openid/tongcheng_mp:oOpenid_tc_0000000001"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["version"], 5);

    let r = client
        .delete(app.url(&format!("/v1/members/{id}/identities/mobile/13800138000")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the path value is normalized like a body value"
    );

    let r = client
        .delete(app.url(&format!("/v1/members/{id}/identities/mobile/13800138000")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "identity_not_bound"
    );

    // The freed mobile can be bound by someone else.
    let (status, _) = register(
        &app,
        &client,
        json!([{"kind": "mobile", "value": "+8613800138000"}]),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, body) = bind(
        &app,
        &client,
        &uuid::Uuid::new_v4().to_string(),
        json!({"kind": "elong_card", "value": "123456"}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "member_not_found");
}

#[tokio::test]
async fn an_identity_is_bound_to_one_member_whatever_the_concurrency() {
    let app = spawn_command_api().await;
    let unionid_ref =
        member_tests::vault().identity_ref_of_text(&format!("wechat_unionid:{UNIONID}"));
    let client = member_tests::writer_client();
    let mut members = Vec::new();
    for i in 0..64 {
        let (status, body) = register(
            &app,
            &client,
            json!([{"kind": "tongcheng_account", "value": format!("tc{i}")}]),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        members.push(member_id(&body));
    }
    let events_before = event_count(&app.pool).await;

    let outcomes = join_all(members.iter().map(|m| {
        bind(
            &app,
            &client,
            m,
            json!({"kind": "wechat_unionid", "value": UNIONID}),
        )
    }))
    .await;
    let ok = outcomes
        .iter()
        .filter(|(s, _)| *s == StatusCode::OK)
        .count();
    let taken = outcomes
        .iter()
        .filter(|(s, b)| *s == StatusCode::CONFLICT && b["error"] == "identity_already_bound")
        .count();
    assert_eq!((ok, taken), (1, 63), "{outcomes:?}");

    let owners: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM identity_owners WHERE identity_key = $1 AND member_id IS NOT NULL",
    )
    .bind(&unionid_ref)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(owners, 1);
    // One bind event (the unionid sealed in it, its keyed hash in the metadata); the value is
    // nowhere in the clear.
    let bound_events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'IdentityBound' AND metadata::jsonb->>'identity_ref' = $1")
        .bind(&unionid_ref).fetch_one(&app.pool).await.unwrap();
    assert_eq!(bound_events, 1);
    let in_clear: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE payload::text LIKE $1")
            .bind(format!("%{UNIONID}%"))
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        in_clear, 0,
        "an identity value in the clear in the event store"
    );
    assert_eq!(event_count(&app.pool).await, events_before + 1);
    // The owner row names the member that got the 200.
    let winner = outcomes
        .iter()
        .find(|(s, _)| *s == StatusCode::OK)
        .map(|(_, b)| member_id(b))
        .unwrap();
    let owner: String =
        sqlx::query_scalar("SELECT member_id FROM identity_owners WHERE identity_key = $1")
            .bind(&unionid_ref)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(owner, winner);
}

#[tokio::test]
async fn a_mobile_registered_64_times_at_once_makes_one_member() {
    let app = spawn_command_api().await;
    let client = member_tests::writer_client();
    let outcomes = join_all((0..64).map(|i| {
        // Spelled two ways: both normalize to the same identity.
        let value = if i % 2 == 0 {
            "13800138000"
        } else {
            "+8613800138000"
        };
        register(&app, &client, json!([{"kind": "mobile", "value": value}]))
    }))
    .await;
    let created = outcomes
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    let taken = outcomes
        .iter()
        .filter(|(s, b)| *s == StatusCode::CONFLICT && b["error"] == "identity_already_bound")
        .count();
    assert_eq!((created, taken), (1, 63), "{outcomes:?}");
    assert_eq!(owner_count(&app.pool).await, 1);
    let registered: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'MemberRegistered'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(registered, 1, "refused registrations append nothing");
    assert_eq!(event_count(&app.pool).await, 2);
}

#[tokio::test]
async fn another_users_wechat_is_never_bound_and_nothing_is_appended() {
    let app = spawn_command_api().await;
    let client = member_tests::writer_client();
    // B owns the WeChat user UNIONID (through one of its openids).
    let (status, b) = register(&app, &client, json!([
        {"kind": "mobile", "value": "13900139000"},
        {"kind": "wechat_openid", "value": "oOpenid_el_000000000B", "app": "elong_mp", "unionid": UNIONID}
    ])).await;
    assert_eq!(status, StatusCode::CREATED);
    let b = member_id(&b);
    // A has a Tongcheng app account.
    let (_, a) = register(
        &app,
        &client,
        json!([{"kind": "tongcheng_account", "value": "tc-42"}]),
    )
    .await;
    let a = member_id(&a);
    let before = event_count(&app.pool).await;

    // A's app account logs in through a mini-program as B's WeChat user: refused.
    let (status, body) = bind(
        &app,
        &client,
        &a,
        json!({"kind": "wechat_openid",
        "value": "oOpenid_tc_000000000A", "app": "tongcheng_mp", "unionid": UNIONID}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"], "cross_account_wechat_binding");
    assert!(
        !body["message"].as_str().unwrap().contains(UNIONID),
        "never echo the identity"
    );

    // Binding B's unionid itself is refused as taken, without naming the owner.
    let (status, body) = bind(
        &app,
        &client,
        &a,
        json!({"kind": "wechat_unionid", "value": UNIONID}),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (StatusCode::CONFLICT, "identity_already_bound")
    );
    assert!(
        !body.to_string().contains(&b),
        "the owner is not revealed: {body}"
    );

    // Once A has its own WeChat user, an openid of another one is cross-account too.
    let (status, _) = bind(
        &app,
        &client,
        &a,
        json!({"kind": "wechat_unionid", "value": OTHER_UNIONID}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let before_second = event_count(&app.pool).await;
    assert_eq!(before_second, before + 1);
    let (status, body) = bind(
        &app,
        &client,
        &a,
        json!({"kind": "wechat_openid",
        "value": "oOpenid_tc_000000000C", "app": "tongcheng_mp", "unionid": UNIONID}),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (StatusCode::CONFLICT, "cross_account_wechat_binding")
    );
    assert_eq!(event_count(&app.pool).await, before_second);
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_returns_the_first_response() {
    let app = spawn_command_api().await;
    let client = member_tests::writer_client();
    let send = |key: &'static str, body: Value| {
        client
            .post(app.url("/v1/members"))
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let body = json!({"identities": [{"kind": "elong_card", "value": "8888123456"}]});
    let first = send("k-1", body.clone()).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let after_first = event_count(&app.pool).await;

    // Same key, same body (keys reordered, whitespace aside): same response, nothing appended.
    let same = json!({"identities": [{"value": "8888123456", "kind": "elong_card"}]});
    let retry = send("k-1", same).await.unwrap();
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.json::<Value>().await.unwrap(), first);
    assert_eq!(event_count(&app.pool).await, after_first);

    // Same key, another body: 422, nothing appended.
    let other = send(
        "k-1",
        json!({"identities": [{"kind": "elong_card", "value": "999999"}]}),
    )
    .await
    .unwrap();
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        other.json::<Value>().await.unwrap()["error"],
        "idempotency_key_reused"
    );
    assert_eq!(event_count(&app.pool).await, after_first);

    // Concurrent retries of one request: one member, the same answer for all.
    let body = json!({"identities": [{"kind": "elong_account", "value": "el-7"}]});
    let answers = join_all((0..16).map(|_| send("k-2", body.clone()))).await;
    let mut bodies = Vec::new();
    for a in answers {
        let a = a.unwrap();
        assert_eq!(a.status(), StatusCode::CREATED);
        bodies.push(a.json::<Value>().await.unwrap());
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
    assert_eq!(event_count(&app.pool).await, after_first + 2);

    // A refusal is an outcome too: replayed, even after the identity becomes free.
    let id = member_id(&first);
    let bind_card = |key: &'static str| {
        client
            .post(app.url(&format!("/v1/members/{id}/identities")))
            .header("Idempotency-Key", key)
            .json(&json!({"kind": "elong_card", "value": "77777777"}))
            .send()
    };
    let refused = bind_card("k-3").await.unwrap();
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    let refused: Value = refused.json().await.unwrap();
    let again = bind_card("k-3").await.unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(again.json::<Value>().await.unwrap(), refused);
}

#[tokio::test]
async fn hostile_and_malformed_input_gets_a_4xx_and_changes_nothing() {
    let app = spawn_command_api().await;
    let client = member_tests::writer_client();
    let (_, member) = register(
        &app,
        &client,
        json!([{"kind": "mobile", "value": "13800138000"}]),
    )
    .await;
    let id = member_id(&member);
    let before = event_count(&app.pool).await;
    let owners = owner_count(&app.pool).await;

    let post_members = app.url("/v1/members");
    let post_bind = app.url(&format!("/v1/members/{id}/identities"));
    let huge = format!(
        "{{\"identities\": [{{\"kind\": \"mobile\", \"value\": \"{}\"}}]}}",
        "1".repeat(1 << 20)
    );
    type Case<'a> = (
        &'a str,
        reqwest::Method,
        String,
        Vec<u8>,
        StatusCode,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        ("broken json", reqwest::Method::POST, post_members.clone(), b"{\"identities\": [".to_vec(), StatusCode::BAD_REQUEST, "invalid_request"),
        ("not json", reqwest::Method::POST, post_members.clone(), b"mobile=138".to_vec(), StatusCode::BAD_REQUEST, "invalid_request"),
        ("empty body", reqwest::Method::POST, post_members.clone(), b"".to_vec(), StatusCode::BAD_REQUEST, "invalid_request"),
        ("wrong type", reqwest::Method::POST, post_members.clone(), br#"{"identities": "mobile"}"#.to_vec(), StatusCode::BAD_REQUEST, "invalid_request"),
        ("number value", reqwest::Method::POST, post_members.clone(), br#"{"identities": [{"kind": "mobile", "value": 13800138001}]}"#.to_vec(), StatusCode::BAD_REQUEST, "invalid_request"),
        ("no identities", reqwest::Method::POST, post_members.clone(), br#"{"identities": []}"#.to_vec(), StatusCode::BAD_REQUEST, "invalid_request"),
        ("unknown field", reqwest::Method::POST, post_members.clone(), br#"{"identities": [], "admin": true}"#.to_vec(), StatusCode::BAD_REQUEST, "invalid_request"),
        ("unknown kind", reqwest::Method::POST, post_bind.clone(), br#"{"kind": "email", "value": "a@b.c"}"#.to_vec(), StatusCode::BAD_REQUEST, "invalid_request"),
        ("letters in a mobile", reqwest::Method::POST, post_bind.clone(), br#"{"kind": "mobile", "value": "1380013800O"}"#.to_vec(), StatusCode::BAD_REQUEST, "invalid_request"),
        ("full-width digits", reqwest::Method::POST, post_bind.clone(), "{\"kind\": \"elong_card\", \"value\": \"１２３４５６７\"}".as_bytes().to_vec(), StatusCode::BAD_REQUEST, "invalid_request"),
        ("empty value", reqwest::Method::POST, post_bind.clone(), br#"{"kind": "elong_account", "value": ""}"#.to_vec(), StatusCode::BAD_REQUEST, "invalid_request"),
        ("sql injection", reqwest::Method::POST, post_bind.clone(), br#"{"kind": "wechat_unionid", "value": "x'); DROP TABLE events; --aaaaaaaaaaaa"}"#.to_vec(), StatusCode::BAD_REQUEST, "invalid_request"),
        ("sql injection in kind", reqwest::Method::POST, post_bind.clone(), br#"{"kind": "mobile' OR '1'='1", "value": "13800138001"}"#.to_vec(), StatusCode::BAD_REQUEST, "invalid_request"),
        ("script injection", reqwest::Method::POST, post_bind.clone(), br#"{"kind": "tongcheng_account", "value": "<script>alert(1)</script>"}"#.to_vec(), StatusCode::BAD_REQUEST, "invalid_request"),
        ("openid without unionid", reqwest::Method::POST, post_bind.clone(), br#"{"kind": "wechat_openid", "value": "oOpenid_tc_0000000001", "app": "tongcheng_mp"}"#.to_vec(), StatusCode::BAD_REQUEST, "invalid_request"),
        ("invalid utf-8", reqwest::Method::POST, post_bind.clone(), b"{\"kind\": \"elong_account\", \"value\": \"a\xff\xfeb\"}".to_vec(), StatusCode::BAD_REQUEST, "invalid_request"),
        ("1 MB body", reqwest::Method::POST, post_members.clone(), huge.into_bytes(), StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        ("id not a uuid", reqwest::Method::POST, app.url("/v1/members/42/identities"), br#"{"kind": "elong_card", "value": "123456"}"#.to_vec(), StatusCode::BAD_REQUEST, "invalid_request"),
        ("id is injection", reqwest::Method::POST, app.url("/v1/members/1%27%20OR%201=1/identities"), br#"{"kind": "elong_card", "value": "123456"}"#.to_vec(), StatusCode::BAD_REQUEST, "invalid_request"),
        ("unbind unknown kind", reqwest::Method::DELETE, app.url(&format!("/v1/members/{id}/identities/email/a")), vec![], StatusCode::BAD_REQUEST, "invalid_request"),
        ("unbind bad value", reqwest::Method::DELETE, app.url(&format!("/v1/members/{id}/identities/mobile/1%27--")), vec![], StatusCode::BAD_REQUEST, "invalid_request"),
        ("unbind openid without app", reqwest::Method::DELETE, app.url(&format!("/v1/members/{id}/identities/wechat_openid/oOpenid_tc_0000000001")), vec![], StatusCode::BAD_REQUEST, "invalid_request"),
        ("unknown route", reqwest::Method::GET, app.url("/v1/nothing"), vec![], StatusCode::NOT_FOUND, "not_found"),
        ("wrong method", reqwest::Method::PUT, post_members.clone(), b"{}".to_vec(), StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
    ];
    for (name, method, url, body, status, code) in cases {
        let r = client
            .request(method, url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{name}");
        let text = r.text().await.unwrap();
        let json: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{name}: not json: {text}"));
        assert_eq!(json["error"], code, "{name}: {json}");
        assert!(json["message"].is_string(), "{name}: {json}");
    }
    let r = client
        .post(&post_bind)
        .header("Idempotency-Key", "x".repeat(300))
        .json(&json!({"kind": "elong_card", "value": "123456"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "oversized idempotency key"
    );

    assert_eq!(
        event_count(&app.pool).await,
        before,
        "the store is unchanged"
    );
    assert_eq!(owner_count(&app.pool).await, owners);
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(keys, 0);
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let app = spawn_command_api().await;
    let client = member_tests::writer_client();
    let r = client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    register(
        &app,
        &client,
        json!([{"kind": "elong_card", "value": "123456"}]),
    )
    .await;
    let text = client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("member_commands_total"), "{text}");

    // Readiness follows the event store.
    app.pool.close().await;
    let r = client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn shutdown_finishes_the_commands_in_flight() {
    let app = spawn_command_api().await;
    let client = member_tests::writer_client();
    let (_, member) = register(
        &app,
        &client,
        json!([{"kind": "elong_account", "value": "el-1"}]),
    )
    .await;
    let id = member_id(&member);

    // Hold the identity's owner row in an open transaction, so the bind blocks inside its commit.
    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO identity_owners (identity_key, member_id, generation) VALUES ($1, NULL, 1)",
    )
    .bind(member_tests::vault().identity_ref_of_text("elong_card:55555555"))
    .execute(&mut *blocker)
    .await
    .unwrap();
    let url = app.url(&format!("/v1/members/{id}/identities"));
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .post(url)
                .json(&json!({"kind": "elong_card", "value": "55555555"}))
                .send()
                .await
        }
    });
    let pool = app.pool.clone();
    member_tests::eventually(
        "the command waits on the lock",
        std::time::Duration::from_secs(5),
        || {
            let pool = pool.clone();
            async move {
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                waiting > 0
            }
        },
    )
    .await;
    let addr = app.addr;
    let stopping = tokio::spawn(app.stop());
    // The shutdown has begun once the listener is closed; the command in flight still holds it.
    member_tests::eventually(
        "the server stops accepting",
        std::time::Duration::from_secs(10),
        || async move { tokio::net::TcpStream::connect(addr).await.is_err() },
    )
    .await;
    assert!(
        !stopping.is_finished(),
        "shutdown waits for the command in flight"
    );
    blocker.commit().await.unwrap();

    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight command got its answer");
    assert_eq!(response.status(), StatusCode::OK);
    stopping.await.unwrap().unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}
