//! `member serve relay` and `member serve projector` as processes answer `/healthz` and
//! `/metrics` on their `telemetry.*_listen`, with their own role's metrics, and stop cleanly on
//! SIGTERM.

use std::process::Child;
use std::time::Duration;

use member_domain::{Identity, MemberCommand};
use member_infra::event_store::commands::CommandService;
use member_tests::app::isolated_settings;
use member_tests::process::{send_signal, spawn_member, Signal};
use member_tests::tools::member_env;
use uuid::Uuid;

/// A port no one listens on now (the child binds it right after).
/// Kills the child if the test ends before it stopped it.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Running {
    /// SIGTERM, then the exit code (the drain is short: nothing is in flight).
    async fn terminate(mut self) -> Option<i32> {
        let child = self.0.take().unwrap();
        send_signal(child.id(), Signal::Terminate);
        let output = member_tests::process::wait_exit(child, Duration::from_secs(30)).await;
        output.status.code()
    }
}

/// `GET http://addr/path` -> (status, body), or None while nothing answers.
async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let response = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// The value of the first sample of `metric` (any labels) in a Prometheus text body.
fn sample(body: &str, metric: &str) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(metric) && l[metric.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_and_projector_processes_serve_health_and_their_metrics() {
    let (settings, pool, _data_dir) = isolated_settings().await;
    let (relay_port, projector_port) = (member_tests::free_port(), member_tests::free_port());
    let mut env: Vec<(String, String)> = member_env(&settings);
    env.push((
        "MEMBER__TELEMETRY__RELAY_LISTEN".into(),
        format!("127.0.0.1:{relay_port}"),
    ));
    env.push((
        "MEMBER__TELEMETRY__PROJECTOR_LISTEN".into(),
        format!("127.0.0.1:{projector_port}"),
    ));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let relay = Running(Some(spawn_member(&["serve", "relay"], &env)));
    let projector = Running(Some(spawn_member(
        &["serve", "projector", "--target", "mysql"],
        &env,
    )));

    for (port, role) in [(relay_port, "relay"), (projector_port, "projector")] {
        member_tests::eventually(
            &format!("the {role} answers /healthz"),
            Duration::from_secs(60),
            || async move { get(port, "/healthz").await.is_some_and(|(s, _)| s == 200) },
        )
        .await;
    }

    let commands = CommandService::new(pool.clone(), member_tests::vault());
    let account =
        Identity::parse("tongcheng_account", &Uuid::new_v4().to_string(), None, None).unwrap();
    commands
        .execute(
            Uuid::now_v7(),
            MemberCommand::Register {
                identities: vec![account],
            },
            None,
        )
        .await
        .unwrap();

    // Each process's /metrics shows its own role's work.
    member_tests::eventually(
        "the relay's /metrics counts the published events",
        Duration::from_secs(60),
        || async move {
            get(relay_port, "/metrics")
                .await
                .is_some_and(|(status, body)| {
                    status == 200
                        && sample(&body, "member_relay_events_total").unwrap_or(0.0) >= 2.0
                })
        },
    )
    .await;
    member_tests::eventually(
        "the projector's /metrics counts the applied records",
        Duration::from_secs(60),
        || async move {
            get(projector_port, "/metrics")
                .await
                .is_some_and(|(status, body)| {
                    status == 200
                        && sample(&body, "member_projector_records_total").unwrap_or(0.0) >= 1.0
                })
        },
    )
    .await;
    let (_, body) = get(projector_port, "/metrics").await.unwrap();
    assert!(
        sample(&body, "member_relay_events_total").is_none(),
        "a projector process does not relay: {body}"
    );
    let (status, _) = get(relay_port, "/nowhere").await.unwrap();
    assert_eq!(status, 404);

    assert_eq!(
        relay.terminate().await,
        Some(0),
        "the relay drains and exits 0"
    );
    assert_eq!(
        projector.terminate().await,
        Some(0),
        "the projector drains and exits 0"
    );
}
