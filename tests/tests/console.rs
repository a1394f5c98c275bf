//! The console over HTTP (the browser test, console_browser.rs, drives the same pages in
//! chromium): sign-in and its refusals, the session cookie's attributes, sign-out, and every
//! state-changing request refused without the session's form token, from another origin, or
//! unconfirmed, changing nothing.

use member_api::app::Role;
use member_tests::app::{spawn_app, TestStack};
use member_tests::console::session_cookie;
use reqwest::header::{COOKIE, LOCATION, ORIGIN};
use reqwest::{Client, StatusCode};
use serde_json::Value;

/// A form's fields.
type Form<'a> = Vec<(&'a str, &'a str)>;

fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in with `key`; the response.
async fn sign_in(app: &TestStack, key: &str) -> reqwest::Response {
    client()
        .post(app.query_url("/console/login"))
        .form(&[("key", key)])
        .send()
        .await
        .unwrap()
}

/// A session: the `name=value` of the cookie and the form token of its pages.
async fn session(app: &TestStack) -> (String, String) {
    let r = sign_in(app, member_tests::ADMIN_KEY).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = session_cookie(&r).expect("a session cookie");
    let pair = cookie.split(';').next().unwrap().to_owned();
    let page = client()
        .get(app.query_url("/console/routing"))
        .header(COOKIE, &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    let token = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a form token on the page")
        .to_owned();
    (pair, token)
}

async fn faulted(app: &TestStack, backend: &str) -> bool {
    let status: Value = client()
        .get(app.query_url("/admin/status"))
        .bearer_auth(member_tests::ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    status["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["backend"] == backend)
        .unwrap()["faulted"]
        .as_bool()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_takes_only_an_admin_key_and_the_session_cookie_is_strict() {
    let app = spawn_app(&[Role::QueryApi]).await;
    let form = client()
        .get(app.query_url("/console"))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::OK);
    let csp = form.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(form.text().await.unwrap().contains("type=\"password\""));

    for (key, status) in [
        ("not-a-known-key", StatusCode::UNAUTHORIZED),
        ("local-order-key", StatusCode::FORBIDDEN),
        ("local-writer-key", StatusCode::FORBIDDEN),
        ("", StatusCode::UNAUTHORIZED),
    ] {
        let r = sign_in(&app, key).await;
        assert_eq!(r.status(), status, "{key}");
        assert!(session_cookie(&r).is_none(), "{key}: no session");
        let body = r.text().await.unwrap();
        assert!(body.contains("id=\"refused\""), "{key}: {body}");
        assert!(
            key.is_empty() || !body.contains(key),
            "the key is not echoed"
        );
    }
    // Another site's sign-in form is refused before the key is looked at.
    let r = client()
        .post(app.query_url("/console/login"))
        .header(ORIGIN, "http://evil.example")
        .form(&[("key", member_tests::ADMIN_KEY)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(session_cookie(&r).is_none());

    let r = sign_in(&app, member_tests::ADMIN_KEY).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = session_cookie(&r).unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains(member_tests::ADMIN_KEY));

    let (pair, token) = session(&app).await;
    let page = client()
        .get(app.query_url("/console"))
        .header(COOKIE, &pair)
        .send()
        .await
        .unwrap();
    assert!(page.text().await.unwrap().contains("id=\"projections\""));
    // Sign-out needs the token too; then the cookie opens nothing.
    let r = client()
        .post(app.query_url("/console/logout"))
        .header(COOKIE, &pair)
        .form(&[("csrf", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = client()
        .post(app.query_url("/console/logout"))
        .header(COOKIE, &pair)
        .form(&[("csrf", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(session_cookie(&r).unwrap().contains("Max-Age=0"));
    for path in [
        "/console/routing",
        "/console/members",
        "/console/pipeline",
        "/console/jobs/list",
    ] {
        let r = client()
            .get(app.query_url(path))
            .header(COOKIE, &pair)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(r.headers()[LOCATION], "/console", "{path}");
    }
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_without_the_token_from_another_origin_or_unconfirmed_changes_nothing() {
    let app = spawn_app(&[Role::QueryApi]).await;
    let (pair, token) = session(&app).await;
    let post = |path: &str, form: Vec<(&str, &str)>, origin: Option<&str>| {
        let mut request = client()
            .post(app.query_url(path))
            .header(COOKIE, &pair)
            .form(&form);
        if let Some(origin) = origin {
            request = request.header(ORIGIN, origin);
        }
        request.send()
    };
    let fault = |csrf: &'static str| {
        vec![
            ("action", "fault"),
            ("backend", "redis-a"),
            ("down", "true"),
            ("confirm", "yes"),
            ("csrf", csrf),
        ]
    };
    let own_origin = format!("http://{}", app.query_api.unwrap());
    let cases: Vec<(Form, Option<&str>, StatusCode)> = vec![
        (
            fault("")
                .into_iter()
                .filter(|(k, _)| *k != "csrf")
                .collect(),
            None,
            StatusCode::FORBIDDEN,
        ),
        (fault("not-the-token"), None, StatusCode::FORBIDDEN),
        (
            fault("")
                .into_iter()
                .map(|(k, v)| (k, if k == "csrf" { token.as_str() } else { v }))
                .collect(),
            Some("http://evil.example"),
            StatusCode::FORBIDDEN,
        ),
        (
            vec![
                ("action", "fault"),
                ("backend", "redis-a"),
                ("down", "true"),
                ("csrf", token.as_str()),
            ],
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            vec![
                ("action", "fault"),
                ("backend", "nowhere"),
                ("down", "true"),
                ("confirm", "yes"),
                ("csrf", token.as_str()),
            ],
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            vec![
                ("action", "pin"),
                ("class", "marketing"),
                ("backend", "mysql"),
                ("confirm", "yes"),
                ("csrf", token.as_str()),
            ],
            None,
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (form, origin, status) in cases {
        let r = post("/console/routing", form.clone(), origin)
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{form:?} {origin:?}");
        assert!(!faulted(&app, "redis-a").await, "{form:?} changed nothing");
    }
    // Jobs and reveals take the same checks.
    let r = post(
        "/console/jobs",
        vec![("kind", "rebuild"), ("target", "mysql"), ("csrf", "x")],
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    for (kind, target) in [("rebuild", "nowhere"), ("explode", "mysql")] {
        let r = post(
            "/console/jobs",
            vec![("kind", kind), ("target", target), ("csrf", token.as_str())],
            None,
        )
        .await
        .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{kind} {target}");
    }
    let jobs = client()
        .get(app.query_url("/console/jobs/list"))
        .header(COOKIE, &pair)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        jobs.contains("id=\"no-jobs\""),
        "no job was started: {jobs}"
    );
    let member = uuid::Uuid::now_v7();
    let r = post(
        &format!("/console/members/{member}/reveal"),
        vec![("csrf", "x")],
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = client()
        .get(app.query_url("/console/members?q=colour:red"))
        .header(COOKIE, &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // The same change, confirmed, with the token, from the console's own origin: applied.
    let r = post(
        "/console/routing",
        vec![
            ("action", "fault"),
            ("backend", "redis-a"),
            ("down", "true"),
            ("confirm", "yes"),
            ("csrf", token.as_str()),
        ],
        Some(&own_origin),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(faulted(&app, "redis-a").await);
    app.stop().await.unwrap();
}
