//! `member status` on the real stack: every component listed, a dead store reported, exit code 1.

use std::process::Command;

use member_tests::process::member_binary;
use serde_json::Value;

fn status(env: &[(&str, &str)]) -> (i32, Vec<Value>) {
    let mut cmd = Command::new(member_binary());
    cmd.args(["status", "--json"]).env("RUST_LOG", "error");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run member status");
    let json: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is json ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

#[tokio::test]
async fn status_lists_every_component_and_fails_when_a_store_is_down() {
    // An event store of its own, migrated: the test must not depend on the machine's `member`
    // database having been migrated by an earlier `make run`.
    let (_pool, event_store) = member_tests::postgres::fresh_event_store_with_url().await;
    let data_dir = tempfile::tempdir().unwrap();
    let data = data_dir.path().display().to_string();
    // A port nothing listens on, for Redis B.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let redis_b = format!("redis://{closed}");
    let (code, components) = status(&[
        ("MEMBER__POSTGRES__URL", &event_store),
        ("MEMBER__DATA_DIR", &data),
        ("MEMBER__REDIS__B__URL", &redis_b),
        // The embedded engine: an empty data directory is a search store with no index.
        ("MEMBER__SEARCH__ENGINE", "tantivy"),
    ]);
    let names: Vec<&str> = components
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "event-store",
            "relay",
            "mysql",
            "redis-a",
            "redis-b",
            "search-primary",
            "search-backup",
            "search-marketing"
        ]
    );
    let healthy = |name: &str| {
        components.iter().find(|c| c["name"] == name).unwrap()["healthy"]
            .as_bool()
            .unwrap()
    };
    assert!(healthy("event-store") && healthy("relay") && healthy("mysql") && healthy("redis-a"));
    assert!(!healthy("redis-b"), "a center nobody answers for is down");
    assert!(
        !healthy("search-primary"),
        "no index in an empty data directory"
    );
    assert_eq!(code, 1);
}
