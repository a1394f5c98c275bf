//! No identity value in any log: the `member` binary (at the level it ships with, info) and the
//! PostgreSQL server log, after every kind of refusal a caller can provoke.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use member_tests::process::member_binary;
use member_tests::{ADMIN_KEY, WRITER_KEY};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

/// The PostgreSQL server log: `MEMBER_POSTGRES_LOG`, or the Debian cluster's.
fn postgres_log() -> PathBuf {
    if let Ok(path) = std::env::var("MEMBER_POSTGRES_LOG") {
        return PathBuf::from(path);
    }
    let mut logs: Vec<PathBuf> = std::fs::read_dir("/var/log/postgresql")
        .expect("/var/log/postgresql is readable (set MEMBER_POSTGRES_LOG otherwise)")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("postgresql-") && name.ends_with("-main.log")
        })
        .collect();
    logs.sort();
    logs.pop().expect("a postgresql-*-main.log")
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// What was appended to `path` since it had `from` bytes.
fn appended(path: &Path, from: u64) -> String {
    let mut file = std::fs::File::open(path).expect("open log");
    file.seek(SeekFrom::Start(from)).unwrap();
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).unwrap();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn refusals_leave_no_identity_value_in_the_service_or_postgres_log() {
    let pg_log = postgres_log();
    let pg_from = size(&pg_log);
    let (_pool, url) = member_tests::postgres::fresh_event_store_with_url().await;
    let database = url.rsplit('/').next().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let service_log = dir.path().join("member.log");
    let port = member_tests::free_port();
    let mut child = Command::new(member_binary())
        .args(["serve", "command-api"])
        .env("RUST_LOG", "info")
        .env("MEMBER__POSTGRES__URL", &url)
        .env("MEMBER__COMMAND_API__LISTEN", format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&service_log).unwrap())
        .spawn()
        .expect("spawn member");
    let base = format!("http://127.0.0.1:{port}");
    let client = member_tests::writer_client();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .map(|r| r.status() != StatusCode::OK)
        .unwrap_or(true)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "member did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let n = Uuid::new_v4().as_u128();
    let mobile = format!("139{:08}", n % 100_000_000);
    let other_mobile = format!("137{:08}", (n >> 30) % 100_000_000);
    let unionid = format!("oUnion_{}", Uuid::new_v4().simple());
    let openid = format!("oOpenid_{}", Uuid::new_v4().simple());
    let other_openid = format!("oOpenid_{}", Uuid::new_v4().simple());
    let card = format!("{:016}", (n >> 60) % 10_000_000_000_000_000);
    let bad_card = format!("{}x{}", &card[..8], &card[8..]);
    let bad_mobile = format!("{}O", &mobile[..10]);
    let post = |path: String, body: Value| {
        let client = client.clone();
        let url = format!("{base}{path}");
        async move {
            let r = client.post(url).json(&body).send().await.unwrap();
            let status = r.status();
            let body: Value = r.json().await.unwrap();
            (status, body)
        }
    };

    let (status, a) = post(
        "/v1/members".into(),
        json!({"identities": [
            {"kind": "mobile", "value": mobile},
            {"kind": "wechat_openid", "value": openid, "app": "tongcheng_mp", "unionid": unionid},
        ]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{a}");
    let a = a["member_id"].as_str().unwrap().to_owned();
    let (status, b) = post(
        "/v1/members".into(),
        json!({"identities": [{"kind": "elong_card", "value": card}]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    let b = b["member_id"].as_str().unwrap().to_owned();

    let refusals = [
        (
            "identity taken",
            format!("/v1/members/{b}/identities"),
            json!({"kind": "mobile", "value": mobile}),
            StatusCode::CONFLICT,
            "identity_already_bound",
        ),
        (
            "identity taken, at registration",
            "/v1/members".to_owned(),
            json!({"identities": [{"kind": "mobile", "value": mobile}]}),
            StatusCode::CONFLICT,
            "identity_already_bound",
        ),
        (
            "cross-account wechat",
            format!("/v1/members/{b}/identities"),
            json!({"kind": "wechat_openid", "value": other_openid, "app": "elong_mp",
                   "unionid": unionid}),
            StatusCode::CONFLICT,
            "cross_account_wechat_binding",
        ),
        (
            "kind already bound",
            format!("/v1/members/{a}/identities"),
            json!({"kind": "mobile", "value": other_mobile}),
            StatusCode::CONFLICT,
            "identity_kind_already_bound",
        ),
        (
            "bad card",
            format!("/v1/members/{b}/identities"),
            json!({"kind": "elong_card", "value": bad_card}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "bad mobile",
            "/v1/members".to_owned(),
            json!({"identities": [{"kind": "mobile", "value": bad_mobile}]}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (case, path, body, status, code) in refusals {
        let (got, answer) = post(path, body).await;
        assert_eq!(
            (got, answer["error"].as_str()),
            (status, Some(code)),
            "{case}: {answer}"
        );
        let text = answer.to_string();
        for value in [&mobile, &unionid, &other_openid, &other_mobile, &card] {
            assert!(
                !text.contains(value.as_str()),
                "{case}: the answer names a value: {text}"
            );
        }
    }
    let r = client
        .delete(format!(
            "{base}/v1/members/{b}/identities/mobile/{other_mobile}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "unbind of what is not held"
    );
    // The refused key itself never reaches a log either.
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/members"))
        .bearer_auth(format!("{WRITER_KEY}-{openid}"))
        .json(&json!({"identities": [{"kind": "mobile", "value": other_mobile}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // A reveal of the history is an access, logged with who and whose, never with the values.
    let r = reqwest::Client::new()
        .get(format!("{base}/v1/members/{a}/history?reveal=true"))
        .bearer_auth(ADMIN_KEY)
        .header("x-request-id", "reveal-audit-test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let revealed = r.text().await.unwrap();
    assert!(
        revealed.contains(&mobile),
        "the values are revealed: {revealed}"
    );

    // Erasing a member (twice, and concurrently) logs who erased whom, never what; so does a
    // refused command on the erased member.
    let erase = format!("{base}/v1/members/{a}/erasure");
    let admin = reqwest::Client::new();
    let answers =
        futures::future::join_all((0..3).map(|_| admin.post(&erase).bearer_auth(ADMIN_KEY).send()))
            .await;
    for r in answers {
        assert_eq!(r.unwrap().status(), StatusCode::ACCEPTED);
    }
    let (status, answer) = post(
        format!("/v1/members/{a}/identities"),
        json!({"kind": "elong_card", "value": card}),
    )
    .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (StatusCode::GONE, Some("member_erased"))
    );

    // Stop the service so its log is complete, and let PostgreSQL's logger catch up.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let stopped = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap();
    assert!(stopped.is_ok());
    let pg = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = appended(&pg_log, pg_from);
            // The refusals did reach the log we read: it is the right log.
            if text
                .lines()
                .any(|l| l.contains(database.as_str()) && l.contains("identity_already_bound"))
            {
                break text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} shows no refused bind: is it this server's log?",
                pg_log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let service = std::fs::read_to_string(&service_log).unwrap();
    assert!(service.contains("command api listening"), "{service}");
    let audit: Vec<&str> = service
        .lines()
        .filter(|l| l.contains("identity values revealed"))
        .collect();
    assert_eq!(audit.len(), 1, "one audited reveal:\n{service}");
    for part in ["audit", "local-admin", a.as_str(), "reveal-audit-test"] {
        assert!(
            audit[0].contains(part),
            "the audit line names {part}: {}",
            audit[0]
        );
    }
    assert!(service.contains("member erasure accepted"), "{service}");
    let normalized = format!("+86{mobile}");
    let values = [
        mobile.as_str(),
        normalized.as_str(),
        other_mobile.as_str(),
        unionid.as_str(),
        openid.as_str(),
        other_openid.as_str(),
        card.as_str(),
        bad_card.as_str(),
        bad_mobile.as_str(),
        WRITER_KEY,
    ];
    for value in values {
        assert!(
            !service.contains(value),
            "the service log holds {value}:\n{service}"
        );
        let leaked: Vec<&str> = pg.lines().filter(|l| l.contains(value)).collect();
        assert!(
            leaked.is_empty(),
            "the postgres log holds {value}: {leaked:#?}"
        );
    }
}
