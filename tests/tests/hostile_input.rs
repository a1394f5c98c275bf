//! A hostile-input battery for both APIs: oversized and malformed headers, injection strings,
//! NUL, full-width digits and overlong values in query strings, paths and bodies, path segments
//! of thousands of characters, slow clients and many connections from one client. Each is
//! answered 4xx or has its connection closed, nothing is stored, and the server keeps serving
//! others.

use std::net::SocketAddr;
use std::time::Duration;

use member_tests::postgres::{event_count, fresh_event_store};
use member_tests::query::{query_settings, spawn_query_api_with, Stores};
use member_tests::spawn::{command_api_settings, spawn_command_api_with, test_callers};
use member_tests::{ADMIN_KEY, WRITER_KEY};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

const ORDER_KEY: &str = "local-order-key";
/// The header read timeout of the servers under test.
const HEADER_TIMEOUT: Duration = Duration::from_millis(1000);

/// Sends `request` as it is and reads the answer: `Some(status)`, or `None` when the server
/// closed the connection without one.
async fn raw(addr: SocketAddr, request: &[u8]) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The server may close before it has read everything (431): a failed write is an answer.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server neither answered nor closed");
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
}

fn refused(case: &str, answer: Option<u16>) {
    if let Some(status) = answer {
        assert!((400..500).contains(&status), "{case}: answered {status}");
    }
}

fn get(path: &str, key: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\n{extra}Connection: close\r\n\r\n"
    )
    .into_bytes()
}

fn post(path: &str, key: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// Header-level attacks, the same for both APIs (`key` is valid for `path`).
async fn header_battery(addr: SocketAddr, path: &str, key: &str) {
    let big = "a".repeat(64 * 1024);
    let many: String = (0..200).map(|i| format!("X-H-{i}: v\r\n")).collect();
    let long_id = "r".repeat(10_000);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("oversized header", get(path, key, &format!("X-Big: {big}\r\n"))),
        ("too many headers", get(path, key, &many)),
        ("space in a header name", get(path, key, "X Bad: v\r\n")),
        ("nul in a header value", get(path, key, "X-Nul: a\0b\r\n")),
        ("header without a colon", get(path, key, "NoColon\r\n")),
        ("bare lf line", get(path, key, "X-A: b\nX-C: d\r\n")),
        (
            "overlong request id",
            get(path, key, &format!("X-Request-Id: {long_id}\r\n")),
        ),
        (
            "nul in the key",
            get(path, "local-order\0key", ""),
        ),
        (
            "non-ascii key",
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer ｌｏｃａｌ\r\nConnection: close\r\n\r\n")
                .into_bytes(),
        ),
        ("garbage request line", b"\x16\x03\x01\x02\x00 not http\r\n\r\n".to_vec()),
        ("no http version", format!("GET {path}\r\n\r\n").into_bytes()),
        (
            "path of 50,000 characters",
            get(&format!("/v1/members/{}", "x".repeat(50_000)), key, ""),
        ),
        (
            "conflicting content lengths",
            format!(
                "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\n{{}}"
            )
            .into_bytes(),
        ),
    ];
    for (case, request) in cases {
        let answer = raw(addr, &request).await;
        // A request id that is too long is replaced, not refused: the request itself is fine.
        if case == "overlong request id" {
            assert!(answer.is_some(), "{case}");
            continue;
        }
        refused(case, answer);
    }
}

/// A slow client (a header byte every 300 ms) is disconnected after the header read timeout,
/// while another client is served meanwhile; so are many idle connections from one client.
async fn slow_and_many(addr: SocketAddr) {
    let started = tokio::time::Instant::now();
    let mut slow = TcpStream::connect(addr).await.unwrap();
    let slow_client = tokio::spawn(async move {
        for byte in b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n"
        {
            if slow.write_all(&[*byte]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // Everything was sent: the server must not have answered a request it timed out.
        let mut buf = [0u8; 64];
        matches!(slow.read(&mut buf).await, Ok(0) | Err(_))
    });
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let r = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "served while others hog connections"
    );
    assert!(
        slow_client.await.unwrap(),
        "the slow client was disconnected"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    // The idle connections were closed too, after the header read timeout.
    tokio::time::sleep(HEADER_TIMEOUT).await;
    for mut connection in idle {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(5), connection.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "an idle connection was closed: {read:?}"
        );
    }
    // A kept-alive connection that goes quiet after a request is closed as well.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let read = tokio::time::timeout(3 * HEADER_TIMEOUT, async {
        loop {
            match kept.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(read.is_ok(), "an idle kept-alive connection stays open");
    let r = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_command_api_refuses_hostile_input_and_keeps_serving() {
    let pool = fresh_event_store().await;
    let mut settings = command_api_settings();
    settings.header_read_timeout_ms = HEADER_TIMEOUT.as_millis() as u64;
    let app = spawn_command_api_with(pool, settings, test_callers()).await;
    let addr = app.addr;
    let id = Uuid::now_v7();
    header_battery(addr, "/v1/members", WRITER_KEY).await;

    let long = "9".repeat(5_000);
    let bind = format!("/v1/members/{id}/identities");
    let bodies: Vec<(&str, String, Vec<u8>)> = vec![
        (
            "nul in a value",
            bind.clone(),
            br#"{"kind": "elong_account", "value": "ab\u0000cd"}"#.to_vec(),
        ),
        (
            "raw nul in the body",
            bind.clone(),
            b"{\"kind\": \"elong_account\", \"value\": \"ab\0cd\"}".to_vec(),
        ),
        (
            "full-width mobile",
            "/v1/members".into(),
            "{\"identities\": [{\"kind\": \"mobile\", \"value\": \"１３８００１３８０００\"}]}"
                .as_bytes()
                .to_vec(),
        ),
        (
            "overlong card",
            bind.clone(),
            format!(r#"{{"kind": "elong_card", "value": "{long}"}}"#).into_bytes(),
        ),
        (
            "overlong kind",
            bind.clone(),
            format!(r#"{{"kind": "{long}", "value": "1"}}"#).into_bytes(),
        ),
        (
            "injection in a value",
            bind.clone(),
            br#"{"kind": "elong_account", "value": "a'; DROP TABLE events; --"}"#.to_vec(),
        ),
        (
            "deeply nested json",
            "/v1/members".into(),
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
        ),
        (
            "path segment of 5,000 characters",
            format!("/v1/members/{}/identities", "a".repeat(5_000)),
            br#"{"kind": "elong_card", "value": "123456"}"#.to_vec(),
        ),
        (
            "injection in the member id",
            "/v1/members/1%27%20OR%20%271%27=%271/identities".into(),
            br#"{"kind": "elong_card", "value": "123456"}"#.to_vec(),
        ),
    ];
    for (case, path, body) in bodies {
        let answer = raw(addr, &post(&path, WRITER_KEY, &body)).await;
        assert!(
            answer.is_some_and(|s| (400..500).contains(&s)),
            "{case}: {answer:?}"
        );
    }
    let paths = [
        format!("/v1/members/{id}/identities/mobile/{}", "1".repeat(5_000)),
        format!("/v1/members/{id}/identities/mobile/%00"),
        format!("/v1/members/{id}/identities/mobile/%EF%BC%91%EF%BC%93%EF%BC%98"),
        format!("/v1/members/{id}/identities/elong_account/a%27%20OR%201=1--"),
        format!("/v1/members/{id}/identities/{}/1", "k".repeat(5_000)),
    ];
    for path in &paths {
        let request = format!(
            "DELETE {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {WRITER_KEY}\r\nConnection: close\r\n\r\n"
        );
        let answer = raw(addr, request.as_bytes()).await;
        assert!(
            answer.is_some_and(|s| (400..500).contains(&s)),
            "{path:.80}: {answer:?}"
        );
    }
    for query in [
        "reveal=true%27%20OR%201=1",
        "reveal=%00",
        "reveal=true&reveal=false",
        "reveal=%EF%BC%91",
        "x=<script>",
    ] {
        let answer = raw(
            addr,
            &get(&format!("/v1/members/{id}/history?{query}"), ADMIN_KEY, ""),
        )
        .await;
        assert!(
            answer.is_some_and(|s| (400..500).contains(&s)),
            "{query}: {answer:?}"
        );
    }
    assert_eq!(event_count(&app.pool).await, 0, "nothing was stored");

    slow_and_many(addr).await;
    // And real work still goes through.
    let r = member_tests::writer_client()
        .post(app.url("/v1/members"))
        .json(&serde_json::json!({"identities": [{"kind": "elong_card", "value": "123456789"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_query_api_refuses_hostile_input_and_keeps_serving() {
    let mut settings = query_settings();
    settings.query_api.header_read_timeout_ms = HEADER_TIMEOUT.as_millis() as u64;
    let stores = Stores::new();
    let app = spawn_query_api_with(stores.clone(), settings).await;
    let addr = app.addr;
    header_battery(addr, "/v1/members?kind=elong_card&value=123456", ORDER_KEY).await;
    // (A valid request with a replaced request id reads, as it should.)
    let reads_before = stores.redis_a.identity_reads() + stores.redis_a.reads();

    let long = "1".repeat(10_000);
    let queries = [
        "kind=mobile&value=13800138000%27%20OR%20%271%27=%271".to_owned(),
        "kind=mobile%27;DROP%20TABLE%20members;--&value=13800138000".to_owned(),
        "kind=mobile&value=%00".to_owned(),
        "kind=mobile&value=138%0000138000".to_owned(),
        "kind=mobile&value=%EF%BC%91%EF%BC%93%EF%BC%98%EF%BC%90%EF%BC%90%EF%BC%91%EF%BC%93%EF%BC%98%EF%BC%90%EF%BC%90%EF%BC%90".to_owned(),
        format!("kind=elong_card&value={long}"),
        format!("kind={long}&value=1"),
        "kind=mobile&kind=elong_card&value=123456".to_owned(),
        "kind=wechat_openid&value=tongcheng_mp:%3Cscript%3E".to_owned(),
        "kind=elong_card&value=123456%ZZ".to_owned(),
        "kind=elong_card&value=12345\u{FF10}".to_owned(),
    ];
    for query in &queries {
        let answer = raw(addr, &get(&format!("/v1/members?{query}"), ORDER_KEY, "")).await;
        assert!(
            answer.is_some_and(|s| (400..500).contains(&s)),
            "{query:.80}: {answer:?}"
        );
    }
    for path in [
        format!("/v1/members/{}", "a".repeat(5_000)),
        "/v1/members/%00".to_owned(),
        "/v1/members/1%27%20OR%201=1".to_owned(),
        format!("/{}", "seg/".repeat(2_000)),
    ] {
        let answer = raw(addr, &get(&path, ORDER_KEY, "")).await;
        assert!(
            answer.is_some_and(|s| (400..500).contains(&s)),
            "{path:.80}: {answer:?}"
        );
    }
    // No read reached a backend with any of it.
    assert_eq!(
        stores.redis_a.identity_reads() + stores.redis_a.reads(),
        reads_before,
        "refused before any read"
    );

    slow_and_many(addr).await;
    let r = reqwest::Client::new()
        .get(app.url(&format!("/v1/members/{}", Uuid::now_v7())))
        .bearer_auth(ORDER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "still serving reads");
    app.stop().await.unwrap();
}
