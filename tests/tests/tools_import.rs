//! `member import` as a process against a fresh event store: valid records become members with
//! their identities, duplicates are recognised, conflicts of both kinds and malformed lines are
//! quarantined and reported, a second run appends nothing, and an interrupted import (a slice
//! with --limit, or a SIGKILLed process) ends exactly like an uninterrupted one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use member_api::tools::ids::name_based;
use member_tests::postgres::{event_count, fresh_event_store_with_url};
use member_tests::process::member_binary;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

fn union(n: u32) -> String {
    format!("oUnion{n:0>24}")
}

fn openid(app: &str, n: u32) -> String {
    format!("oOpen{app}{n:0>12}")
}

/// Runs `member import` on the given database; returns the exit code and stdout.
fn import(url: &str, file: &Path, extra: &[&str]) -> (i32, String) {
    let out = Command::new(member_binary())
        .arg("import")
        .arg("--from")
        .arg(file)
        .args(extra)
        .env("MEMBER__POSTGRES__URL", url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run member import");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.code().is_some(),
        "member import was killed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap(), stdout)
}

fn member_of(legacy_id: &str) -> Uuid {
    name_based("member-legacy", legacy_id)
}

/// Every member's identity keys, from the fold of the event store.
async fn members(pool: &PgPool) -> BTreeMap<Uuid, BTreeSet<String>> {
    member_infra::event_store::replay::all_documents(pool, &member_tests::vault())
        .await
        .expect("fold")
        .into_iter()
        .map(|(id, doc)| {
            let keys = doc.identities.iter().map(|i| i.key.to_string()).collect();
            (id, keys)
        })
        .collect()
}

/// (line, reason, detail, status) of every quarantined record.
async fn quarantine(pool: &PgPool) -> Vec<(i64, String, Option<String>, String)> {
    sqlx::query_as(
        "SELECT line_number, reason, detail, status FROM import_quarantine ORDER BY line_number",
    )
    .fetch_all(pool)
    .await
    .expect("read quarantine")
}

fn write(dir: &Path, name: &str, lines: &[String]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").expect("write file");
    path
}

#[tokio::test]
async fn valid_records_become_members_conflicts_are_quarantined_and_a_second_run_changes_nothing() {
    let (pool, url) = fresh_event_store_with_url().await;
    let dir = tempfile::tempdir().unwrap();
    let full = format!(
        r#"{{"legacy_id":"A","mobile":"13900000001","unionid":"{}","openids":[{{"app":"tongcheng_mp","openid":"{}"}},{{"app":"elong_mp","openid":"{}"}}],"tongcheng_account":"tcA","elong_account":"elA","elong_card":"8800000001"}}"#,
        union(1),
        openid("tc", 1),
        openid("el", 1)
    );
    let lines = vec![
        full.clone(),
        r#"{"legacy_id":"B","mobile":"+8613900000002","elong_card":"8800000002"}"#.to_owned(),
        // An exact duplicate: recognised, not a conflict.
        full.clone(),
        // One unionid on two members.
        format!(
            r#"{{"legacy_id":"C","mobile":"13900000003","unionid":"{}"}}"#,
            union(1)
        ),
        // An openid recorded with another member's unionid.
        format!(
            r#"{{"legacy_id":"D","openids":[{{"app":"elong_mp","openid":"{}","unionid":"{}"}}]}}"#,
            openid("el", 4),
            union(1)
        ),
        "{\"legacy_id\": \"E\", \"mobile\": ".to_owned(),
        String::new(),
        r#"{"legacy_id":"F","mobile":"12345"}"#.to_owned(),
        // An openid of another unionid than its own record's (the old cross-account bug).
        format!(
            r#"{{"legacy_id":"G","unionid":"{}","openids":[{{"app":"tongcheng_mp","openid":"{}","unionid":"{}"}}]}}"#,
            union(7),
            openid("tc", 7),
            union(8)
        ),
        r#"{"legacy_id":"H","tongcheng_account":"tcH"}"#.to_owned(),
    ];
    let file = write(dir.path(), "legacy.jsonl", &lines);
    let report = dir.path().join("report.jsonl");

    let (code, out) = import(&url, &file, &["--report", report.to_str().unwrap()]);
    assert_eq!(code, 2, "quarantined records give exit code 2: {out}");

    let found = members(&pool).await;
    let expected: BTreeMap<Uuid, BTreeSet<String>> = [
        (
            member_of("A"),
            vec![
                "mobile:+8613900000001".to_owned(),
                format!("wechat_unionid:{}", union(1)),
                format!("wechat_openid:tongcheng_mp:{}", openid("tc", 1)),
                format!("wechat_openid:elong_mp:{}", openid("el", 1)),
                "tongcheng_account:tcA".to_owned(),
                "elong_account:elA".to_owned(),
                "elong_card:8800000001".to_owned(),
            ],
        ),
        (
            member_of("B"),
            vec![
                "mobile:+8613900000002".to_owned(),
                "elong_card:8800000002".to_owned(),
            ],
        ),
        (member_of("H"), vec!["tongcheng_account:tcH".to_owned()]),
    ]
    .into_iter()
    .map(|(id, keys)| (id, keys.into_iter().collect()))
    .collect();
    assert_eq!(found, expected);

    let q = quarantine(&pool).await;
    // (The detail of a malformed line is the JSON error's category and column: keep the category.)
    let reasons: Vec<(i64, &str, Option<&str>)> = q
        .iter()
        .map(|(line, reason, detail, _)| {
            let detail = detail.as_deref();
            let detail = if reason == "malformed" {
                detail.and_then(|d| d.split(' ').next())
            } else {
                detail
            };
            (*line, reason.as_str(), detail)
        })
        .collect();
    assert_eq!(
        reasons,
        [
            (
                4,
                "identity_owned_by_another_member",
                Some("wechat_unionid")
            ),
            (5, "cross_account_wechat", None),
            (6, "malformed", Some("eof")),
            (8, "invalid_value", Some("mobile")),
            (9, "conflicting_unionids", None),
        ]
    );
    assert!(q.iter().all(|(.., status)| status == "open"));

    // Every imported event records the tool as its caller.
    let callers: Vec<Option<String>> =
        sqlx::query_scalar("SELECT DISTINCT metadata::jsonb ->> 'caller' FROM events")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(callers, [Some("tool:import".to_owned())]);

    // The report: one line per quarantined record, where and why, no identity values.
    let report_text = std::fs::read_to_string(&report).unwrap();
    let report_lines: Vec<Value> = report_text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(report_lines.len(), 5);
    assert_eq!(report_lines[0]["line"], 4);
    assert_eq!(report_lines[0]["legacy_id"], "C");
    assert_eq!(
        report_lines[0]["reason"],
        "identity_owned_by_another_member"
    );
    assert_eq!(report_lines[2]["reason"], "malformed");
    assert_eq!(report_lines[2]["legacy_id"], Value::Null);
    assert!(!report_text.contains(&union(1)) && !report_text.contains("1390000"));

    // Nothing of the quarantined records reached the store.
    let events = event_count(&pool).await;
    for legacy in ["C", "D", "F", "G"] {
        assert!(!found.contains_key(&member_of(legacy)));
    }

    // Again, at the checkpoint, and again re-checking every line: nothing changes.
    for extra in [&[][..], &["--rescan"][..]] {
        let (code, out) = import(&url, &file, extra);
        assert_eq!(code, 2, "{out}");
        assert_eq!(
            event_count(&pool).await,
            events,
            "{extra:?} appended events"
        );
        assert_eq!(
            quarantine(&pool).await,
            q,
            "{extra:?} changed the quarantine"
        );
        assert_eq!(members(&pool).await, expected);
    }
}

#[tokio::test]
async fn a_file_of_valid_records_exits_zero() {
    let (pool, url) = fresh_event_store_with_url().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "ok.jsonl",
        &[r#"{"legacy_id":"ok1","elong_account":"el-ok-1"}"#.to_owned()],
    );
    let (code, out) = import(&url, &file, &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(members(&pool).await.len(), 1);

    let missing = dir.path().join("missing.jsonl");
    let (code, _) = import(&url, &missing, &[]);
    assert_eq!(code, 1, "a missing file is an error");
}

/// A file where later records collide with earlier ones, so that the result depends on order.
fn larger_file(records: u32) -> Vec<String> {
    (0..records)
        .map(|i| {
            if i % 9 == 8 {
                // Claims the unionid of record i - 5.
                format!(
                    r#"{{"legacy_id":"R{i}","mobile":"137{i:08}","unionid":"{}"}}"#,
                    union(i - 5)
                )
            } else if i % 13 == 12 {
                "{broken".to_owned()
            } else {
                format!(
                    r#"{{"legacy_id":"R{i}","mobile":"137{i:08}","unionid":"{}","openids":[{{"app":"tongcheng_mp","openid":"{}"}}],"elong_card":"77{i:08}"}}"#,
                    union(i),
                    openid("tc", i)
                )
            }
        })
        .collect()
}

#[tokio::test]
async fn an_interrupted_import_resumes_and_ends_like_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "larger.jsonl", &larger_file(120));

    // The reference: one uninterrupted run.
    let (reference_pool, reference_url) = fresh_event_store_with_url().await;
    assert_eq!(import(&reference_url, &file, &[]).0, 2);
    let reference_members = members(&reference_pool).await;
    let reference_quarantine = quarantine(&reference_pool).await;
    assert!(reference_members.len() > 80 && reference_quarantine.len() > 15);

    // Slices of 17 lines, each run resuming at the checkpoint of the previous one.
    let (pool, url) = fresh_event_store_with_url().await;
    let mut runs = 0;
    loop {
        runs += 1;
        let (code, out) = import(&url, &file, &["--limit", "17"]);
        assert!(code == 2 || code == 0, "{out}");
        if !out.contains("--limit") {
            break;
        }
        assert!(runs < 20, "the import does not advance");
    }
    assert_eq!(runs, 8, "120 lines in slices of 17");
    assert_eq!(members(&pool).await, reference_members);
    assert_eq!(quarantine(&pool).await, reference_quarantine);
    assert_eq!(event_count(&pool).await, event_count(&reference_pool).await);
}

#[tokio::test]
async fn a_killed_import_resumes_and_ends_like_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "killed.jsonl", &larger_file(600));

    let (reference_pool, reference_url) = fresh_event_store_with_url().await;
    assert_eq!(import(&reference_url, &file, &[]).0, 2);

    let (pool, url) = fresh_event_store_with_url().await;
    let mut child = Command::new(member_binary())
        .arg("import")
        .arg("--from")
        .arg(&file)
        .env("MEMBER__POSTGRES__URL", &url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn member import");
    // Kill it once it is well into the file (past a checkpoint), but not done.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let checkpoint: Option<i64> =
            sqlx::query_scalar("SELECT next_line FROM import_checkpoints")
                .fetch_optional(&pool)
                .await
                .unwrap_or(None);
        if checkpoint.is_some_and(|line| line > 100) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the import does not advance"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the import finished before it could be killed; make the file larger"
    );
    child.kill().expect("SIGKILL the import");
    child.wait().unwrap();
    let partial = members(&pool).await.len();
    assert!(partial < members(&reference_pool).await.len());

    let (code, out) = import(&url, &file, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(!out.contains("from line 1)"), "it resumed: {out}");
    assert_eq!(members(&pool).await, members(&reference_pool).await);
    assert_eq!(quarantine(&pool).await, quarantine(&reference_pool).await);
    assert_eq!(event_count(&pool).await, event_count(&reference_pool).await);
}

#[tokio::test]
async fn a_signal_stops_the_import_at_a_checkpoint_and_running_again_resumes_there() {
    use member_tests::process::{send_signal, spawn_member_captured, wait_exit, Signal};
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "signalled.jsonl", &larger_file(3000));
    let (reference_pool, reference_url) = fresh_event_store_with_url().await;
    assert_eq!(import(&reference_url, &file, &[]).0, 2);

    let (pool, url) = fresh_event_store_with_url().await;
    let env = [("MEMBER__POSTGRES__URL".to_owned(), url.clone())];
    let child = spawn_member_captured(&["import", "--from", file.to_str().unwrap()], &env);
    member_tests::eventually(
        "the import passes a checkpoint",
        Duration::from_secs(60),
        || {
            let pool = pool.clone();
            async move {
                let line: Option<i64> =
                    sqlx::query_scalar("SELECT next_line FROM import_checkpoints")
                        .fetch_optional(&pool)
                        .await
                        .unwrap_or(None);
                line.is_some_and(|line| line > 100)
            }
        },
    )
    .await;
    send_signal(child.id(), Signal::Terminate);
    let out = wait_exit(child, Duration::from_secs(30)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    // "the import stopped before line N (checkpoint saved); run the same command again ..."
    let line: i64 = stderr
        .split("stopped before line ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("names the line to resume at: {stderr}"));
    assert!(stderr.contains("run the same command again"), "{stderr}");
    assert!(line > 100 && line < 3000, "{line}");
    let (next_line, finished): (i64, bool) =
        sqlx::query_as("SELECT next_line, finished_at IS NOT NULL FROM import_checkpoints")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (next_line, finished),
        (line, false),
        "the checkpoint is kept"
    );
    // Exactly the lines before it are handled.
    let handled: Option<i64> = sqlx::query_scalar("SELECT max(line_number) FROM import_quarantine")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        handled.is_some_and(|handled| handled < line),
        "no line at or after the checkpoint was quarantined"
    );

    let (code, out) = import(&url, &file, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(&format!("(from line {line})")),
        "it resumed there: {out}"
    );
    assert_eq!(members(&pool).await, members(&reference_pool).await);
    assert_eq!(quarantine(&pool).await, quarantine(&reference_pool).await);
    assert_eq!(event_count(&pool).await, event_count(&reference_pool).await);
}

#[tokio::test]
async fn a_second_signal_ends_a_stuck_import_at_once() {
    use member_tests::process::{send_signal, Signal};
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "stuck.jsonl", &larger_file(50));
    let (pool, url) = fresh_event_store_with_url().await;

    // The import's first command waits for this lock: the line in flight cannot finish.
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let mut child = Command::new(member_binary())
        .arg("import")
        .arg("--from")
        .arg(&file)
        .env("MEMBER__POSTGRES__URL", &url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn member import");
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let stderr = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines() {
                let line = line.unwrap_or_default();
                let mut all = stderr.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        })
    };
    member_tests::eventually(
        "the import waits for the lock",
        Duration::from_secs(30),
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

    send_signal(child.id(), Signal::Interrupt);
    member_tests::eventually("the first signal is seen", Duration::from_secs(10), || {
        let seen = stderr.lock().unwrap().contains("shutdown requested");
        async move { seen }
    })
    .await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the clean stop waits for the line in flight"
    );
    send_signal(child.id(), Signal::Interrupt);
    let status = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::task::spawn_blocking(move || child.wait().unwrap()),
    )
    .await
    .expect("the second signal ends the process at once")
    .unwrap();
    reader.join().unwrap();
    let stderr = stderr.lock().unwrap().clone();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("second signal"), "{stderr}");
    assert!(
        !stderr.contains("stopped by a signal"),
        "no clean stop: {stderr}"
    );
    lock.rollback().await.unwrap();
    assert_eq!(
        event_count(&pool).await,
        0,
        "the line in flight was not written"
    );
}
