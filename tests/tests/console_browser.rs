//! The operations console in a real browser (issue 23): the whole stack (`Role::all()`) on free
//! ports over fresh stores, members registered through the command API, then
//! tests/console/console.test.mjs (node:test, playwright-core, headless Debian chromium) drives
//! `/console`: sign-in and its refusals, the pipeline with live lag, a member found by
//! `kind:value` with its history and an audited reveal, a fault injected from the console moving
//! reads, a member deleted from MySQL shown as verify's "missing" and brought back by a rebuild
//! started from the console, a verify run by the server, governance, sign-out. The node process must
//! succeed; its output is printed either way.

use std::time::Duration;

use member_api::app::Role;
use member_infra::stores::Store;
use member_projections::Target;
use member_tests::app::{spawn_app, wait_converged};
use member_tests::console::{
    browser_test_dir, chromium, require_browser_dependencies, screenshot_dir,
};
use member_tests::process::member_binary;
use member_tests::sink_contract::Ids;
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_in_headless_chromium() {
    require_browser_dependencies();
    let app = spawn_app(&Role::all()).await;
    let client = member_tests::writer_client();

    // The member the browser looks at, registered with a request id the history must show.
    let ids = Ids::fresh();
    let request_id = format!("console-test-{}", uuid::Uuid::new_v4().simple());
    let r = client
        .post(app.command_url("/v1/members"))
        .header("x-request-id", &request_id)
        .json(&json!({"identities": [
            {"kind": "mobile", "value": ids.mobile.value()},
            {"kind": "wechat_unionid", "value": ids.unionid.value()},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let member: Value = r.json().await.unwrap();
    let member_id = member["member_id"].as_str().unwrap().to_owned();
    let r = client
        .post(app.command_url(&format!("/v1/members/{member_id}/identities")))
        .json(&json!({"kind": "elong_card", "value": ids.card.value()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A few more, so the rebuild and the charts have something to show.
    let mut others = Vec::new();
    for _ in 0..20 {
        let other = Ids::fresh();
        let r = client
            .post(app.command_url("/v1/members"))
            .json(&json!({"identities": [{"kind": "mobile", "value": other.mobile.value()}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let body: Value = r.json().await.unwrap();
        others.push(
            body["member_id"]
                .as_str()
                .unwrap()
                .parse::<uuid::Uuid>()
                .unwrap(),
        );
    }
    let truth = app.truth().await;
    for target in Target::ALL {
        let reader = app.reader(target).await;
        wait_converged(reader.as_ref(), &truth, Duration::from_secs(60)).await;
    }
    // Drift: one member deleted from MySQL behind its projector's back. The console must show
    // it as verify does (missing, highlighted), and the rebuild started from it must bring it back.
    let drifted = others[0];
    let Store::Mysql(mysql) = Store::open(Target::Mysql, &app.settings).await.unwrap() else {
        panic!("the mysql target is a mysql store");
    };
    mysql.remove(&[drifted], &[]).await.unwrap();
    assert_eq!(
        app.reader(Target::Mysql)
            .await
            .by_id(drifted)
            .await
            .unwrap(),
        None
    );

    // A legacy record the import quarantines as unresolvable: a governance finding to repair.
    let legacy = tempfile::tempdir().unwrap();
    let file = legacy.path().join("legacy.jsonl");
    std::fs::write(
        &file,
        "{\"legacy_id\": \"console-junk\", \"mobile\": \"999\"}\n",
    )
    .unwrap();
    let import = std::process::Command::new(member_binary())
        .args(["import", "--from", file.to_str().unwrap()])
        .env(
            "MEMBER__POSTGRES__URL",
            app.settings.postgres.url.expose_secret(),
        )
        .env("RUST_LOG", "warn")
        .output()
        .expect("run member import");
    assert_eq!(
        import.status.code(),
        Some(2),
        "one record quarantined: {import:?}"
    );

    let shots = screenshot_dir();
    let output = tokio::time::timeout(
        Duration::from_secs(600),
        tokio::process::Command::new("node")
            .arg("--test")
            .arg("--test-reporter=spec")
            .arg("console.test.mjs")
            .current_dir(browser_test_dir())
            .env("CONSOLE_URL", app.query_url(""))
            .env("CONSOLE_ADMIN_KEY", member_tests::ADMIN_KEY)
            .env("CONSOLE_ORDER_KEY", "local-order-key")
            .env("CONSOLE_MEMBER_ID", &member_id)
            .env("CONSOLE_DRIFTED_MEMBER_ID", drifted.to_string())
            .env("CONSOLE_MEMBER_MOBILE", ids.mobile.value())
            .env("CONSOLE_REQUEST_ID", &request_id)
            .env("CONSOLE_SCREENSHOTS", &shots)
            .env("CHROMIUM", chromium())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser test ends within 10 minutes")
    .expect("node runs");
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "the browser test failed ({}); its output is above",
        output.status
    );
    app.stop().await.unwrap();
}
