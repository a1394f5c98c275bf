//! `member governance` as a process: the scan finds the import's quarantined conflicts and an
//! abnormal WeChat binding in the event store; `release` unbinds with the governance reason (who
//! and why) and imports the record; `dismiss` closes an entry; `unbind` removes the abnormal
//! binding; the events flow through the relay into a projection like any other.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use member_api::app::Role;
use member_api::tools::ids::name_based;
use member_projections::Target;
use member_tests::app::{spawn_app, wait_converged};
use member_tests::postgres::event_count;
use member_tests::process::member_binary;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

const UNION_1: &str = "oUnion000000000000000000000001";
const UNION_2: &str = "oUnion000000000000000000000002";

fn member(url: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(member_binary())
        .args(args)
        .env("MEMBER__POSTGRES__URL", url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run member");
    (
        out.status.code().expect("exited"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn scan(url: &str) -> (i32, Vec<Value>) {
    let (code, out) = member(url, &["governance", "scan", "--json"]);
    let findings: Vec<Value> =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("scan prints json ({e}): {out}"));
    (code, findings)
}

fn finding<'a>(findings: &'a [Value], legacy_id: &str) -> &'a Value {
    findings
        .iter()
        .find(|f| f["legacy_id"] == legacy_id)
        .unwrap_or_else(|| panic!("no finding for {legacy_id}: {findings:?}"))
}

fn write(dir: &Path, lines: &[Value]) -> std::path::PathBuf {
    let path = dir.join("legacy.jsonl");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// The payloads and metadata of a member's events, in order.
async fn events_of(pool: &PgPool, member_id: Uuid) -> Vec<(Value, Value)> {
    sqlx::query_as::<_, (Value, Value)>(
        "SELECT payload::jsonb, metadata::jsonb FROM events WHERE aggregate_id = $1 ORDER BY sequence",
    )
    .bind(member_id.to_string())
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn scan_finds_conflicts_release_imports_with_an_audited_unbind_and_dismiss_closes() {
    let app = spawn_app(&[Role::Relay, Role::Projector(Target::Mysql)]).await;
    let url = app.settings.postgres.url.expose_secret().to_owned();
    let pool = app.pool.clone();
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        &[
            json!({"legacy_id": "owner", "mobile": "13600000001", "unionid": UNION_1,
                   "openids": [{"app": "tongcheng_mp", "openid": "oOpenTC0000000000001"}]}),
            // The same unionid on a second member.
            json!({"legacy_id": "claimant", "mobile": "13600000002", "unionid": UNION_1}),
            // An openid recorded with the owner's unionid.
            json!({"legacy_id": "stray", "openids": [{"app": "elong_mp",
                   "openid": "oOpenEL0000000000003", "unionid": UNION_1}]}),
            json!({"legacy_id": "junk", "mobile": "999"}),
        ],
    );
    let (code, out) = member(&url, &["import", "--from", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    let owner = name_based("member-legacy", "owner");
    let claimant = name_based("member-legacy", "claimant");

    let (code, findings) = scan(&url);
    assert_eq!(code, 2, "findings give exit code 2");
    assert_eq!(findings.len(), 3, "{findings:?}");
    let conflict = finding(&findings, "claimant");
    assert_eq!(conflict["state"], "conflicting");
    assert_eq!(conflict["reason"], "identity_owned_by_another_member");
    assert_eq!(
        conflict["holders"],
        json!([{"kind": "wechat_unionid", "member_id": owner}])
    );
    let stray = finding(&findings, "stray");
    assert_eq!(stray["reason"], "cross_account_wechat");
    assert_eq!(stray["state"], "conflicting");
    let junk = finding(&findings, "junk");
    assert_eq!(junk["state"], "unresolvable");
    // No identity value in the scan's output.
    assert!(!serde_json::to_string(&findings).unwrap().contains(UNION_1));

    // Refusals change nothing: an unresolvable entry cannot be released, --dry-run writes nothing,
    // actor and note are required.
    let events = event_count(&pool).await;
    let junk_id = junk["id"].as_str().unwrap();
    let claimant_id = conflict["id"].as_str().unwrap();
    let (code, out) = member(
        &url,
        &[
            "governance",
            "repair",
            "--entry",
            junk_id,
            "--resolution",
            "release",
            "--actor",
            "alice",
            "--note",
            "OPS-7",
        ],
    );
    assert_eq!(code, 1, "{out}");
    let (code, out) = member(
        &url,
        &[
            "governance",
            "repair",
            "--entry",
            claimant_id,
            "--resolution",
            "release",
            "--actor",
            "alice",
            "--note",
            "OPS-7",
            "--dry-run",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("would unbind wechat_unionid"), "{out}");
    let (code, _) = member(
        &url,
        &[
            "governance",
            "repair",
            "--entry",
            claimant_id,
            "--resolution",
            "release",
            "--actor",
            " ",
            "--note",
            "OPS-7",
        ],
    );
    assert_eq!(code, 1);
    assert_eq!(event_count(&pool).await, events);

    // Release: the owner loses the unionid (and its openid) with the governance reason; the
    // claimant becomes a member.
    let (code, out) = member(
        &url,
        &[
            "governance",
            "repair",
            "--entry",
            claimant_id,
            "--resolution",
            "release",
            "--actor",
            "alice",
            "--note",
            "OPS-7: verified with the customer",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let governance =
        json!({"by": "governance", "actor": "alice", "note": "OPS-7: verified with the customer"});
    let owner_events = events_of(&pool, owner).await;
    let unbound: Vec<&(Value, Value)> = owner_events
        .iter()
        .filter(|(p, _)| p.get("IdentityUnbound").is_some())
        .collect();
    assert_eq!(
        unbound.len(),
        2,
        "the unionid and its openid: {owner_events:?}"
    );
    for (payload, metadata) in &unbound {
        assert_eq!(payload["IdentityUnbound"]["reason"], governance);
        assert_eq!(metadata["actor"], "alice");
        assert_eq!(metadata["source"], "governance");
        assert_eq!(metadata["entry"], claimant_id);
        assert_eq!(metadata["caller"], "tool:governance-repair");
        assert!(metadata["request_id"].is_string() && metadata["at"].is_string());
    }
    let truth = app.truth().await;
    let keys = |id: Uuid| -> Vec<String> {
        let mut k: Vec<String> = truth[&id]
            .identities
            .iter()
            .map(|i| i.key.to_string())
            .collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(claimant),
        [
            "mobile:+8613600000002".to_owned(),
            format!("wechat_unionid:{UNION_1}")
        ]
    );
    assert_eq!(keys(owner), ["mobile:+8613600000001"]);
    assert_eq!(events_of(&pool, claimant).await[0].1["actor"], "alice");

    // Dismiss the junk; the stray openid now conflicts with the claimant.
    let (code, out) = member(
        &url,
        &[
            "governance",
            "repair",
            "--entry",
            junk_id,
            "--resolution",
            "dismiss",
            "--actor",
            "bob",
            "--note",
            "not a phone number",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let (status, by, note): (String, String, String) = sqlx::query_as(
        "SELECT status, resolved_by, resolution_note FROM import_quarantine WHERE legacy_id = 'junk'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), by.as_str(), note.as_str()),
        ("dismissed", "bob", "not a phone number")
    );
    let (code, findings) = scan(&url);
    assert_eq!(code, 2);
    assert_eq!(findings.len(), 1);
    assert_eq!(
        finding(&findings, "stray")["holders"],
        json!([{"kind": "wechat_unionid", "member_id": claimant}])
    );
    // A resolved entry is not resolved twice.
    let (code, _) = member(
        &url,
        &[
            "governance",
            "repair",
            "--entry",
            junk_id,
            "--resolution",
            "dismiss",
            "--actor",
            "bob",
            "--note",
            "again",
        ],
    );
    assert_eq!(code, 1);

    // Importing the file again changes nothing: the released record is recognised.
    let events = event_count(&pool).await;
    let (_, out) = member(
        &url,
        &["import", "--from", file.to_str().unwrap(), "--rescan"],
    );
    assert!(out.contains("0 members imported"), "{out}");
    assert_eq!(event_count(&pool).await, events);

    // The governance events reach the projection like any other.
    let reader = app.reader(Target::Mysql).await;
    wait_converged(reader.as_ref(), &app.truth().await, Duration::from_secs(60)).await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn an_openid_of_another_unionid_in_the_store_is_found_and_unbound() {
    let (pool, url) = member_tests::postgres::fresh_event_store_with_url().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        &[json!({"legacy_id": "m1", "mobile": "13600000011", "unionid": UNION_1})],
    );
    assert_eq!(
        member(&url, &["import", "--from", file.to_str().unwrap()]).0,
        0
    );
    let (code, findings) = scan(&url);
    assert_eq!((code, findings.len()), (0, 0));

    // Data written around the aggregate (as an old import could have): an openid bound under
    // another unionid than the member's. The trigger claims it like any other.
    let m1 = name_based("member-legacy", "m1");
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('Member', $1, 4, 'IdentityBound', '1.0', $2, '{}')",
    )
    .bind(m1.to_string())
    .bind(json!({"IdentityBound": {"identity": {"kind": "wechat_openid", "app": "elong_mp",
                  "value": "oOpenEL0000000000011", "unionid": UNION_2}}}))
    .execute(&pool)
    .await
    .unwrap();

    let (code, findings) = scan(&url);
    assert_eq!(code, 2);
    assert_eq!(findings.len(), 1, "{findings:?}");
    let id = format!("m-{m1}-elong_mp");
    assert_eq!(findings[0]["id"], id.as_str());
    assert_eq!(findings[0]["reason"], "openid_unionid_mismatch");

    let (code, out) = member(
        &url,
        &[
            "governance",
            "repair",
            "--entry",
            &id,
            "--resolution",
            "dismiss",
            "--actor",
            "carol",
            "--note",
            "OPS-9",
        ],
    );
    assert_eq!(code, 1, "store findings are unbound, not dismissed: {out}");
    let (code, out) = member(
        &url,
        &[
            "governance",
            "repair",
            "--entry",
            &id,
            "--resolution",
            "unbind",
            "--actor",
            "carol",
            "--note",
            "OPS-9",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let events = events_of(&pool, m1).await;
    let (last, metadata) = events.last().unwrap();
    assert_eq!(
        last["IdentityUnbound"]["reason"],
        json!({"by": "governance", "actor": "carol", "note": "OPS-9"})
    );
    assert_eq!(last["IdentityUnbound"]["identity"]["app"], "elong_mp");
    assert_eq!(metadata["entry"], id.as_str());
    let (code, findings) = scan(&url);
    assert_eq!((code, findings.len()), (0, 0));
}

/// The first SIGINT stops `member governance repair` after the entry in flight, with exit code
/// 130 and the entries it did not resolve named, so the operator can run them again. The first
/// entry is held on a lock of the quarantine table until the signal has been seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_stops_a_repair_after_the_entry_in_flight() {
    use member_tests::process::{send_signal, Signal};
    let (pool, url) = member_tests::postgres::fresh_event_store_with_url().await;
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE import_quarantine IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stderr_path = dir.path().join("stderr.log");
    let child = Command::new(member_binary())
        .args([
            "governance",
            "repair",
            "--entry",
            "q-1",
            "--entry",
            "q-2",
            "--resolution",
            "dismiss",
            "--actor",
            "ops",
            "--note",
            "signal test",
        ])
        .env("MEMBER__POSTGRES__URL", &url)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("run member");
    member_tests::eventually(
        "the repair waits for the quarantine table",
        Duration::from_secs(60),
        || {
            let pool = pool.clone();
            async move {
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                     WHERE c.relname = 'import_quarantine' AND NOT l.granted",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                waiting > 0
            }
        },
    )
    .await;
    send_signal(child.id(), Signal::Interrupt);
    member_tests::eventually("the signal is seen", Duration::from_secs(30), || {
        let path = stderr_path.clone();
        async move {
            std::fs::read_to_string(path)
                .unwrap_or_default()
                .contains("shutdown requested")
        }
    })
    .await;
    lock.rollback().await.unwrap();
    let out = member_tests::process::wait_exit(child, Duration::from_secs(30)).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert_eq!(out.status.code(), Some(130), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("q-1:"),
        "the entry in flight ends: {stdout}"
    );
    assert!(
        !stdout.contains("q-2:"),
        "the next one is not started: {stdout}"
    );
    assert!(
        stderr.contains("the repair stopped after 1 of 2 entries; not resolved: q-2"),
        "{stderr}"
    );
}
