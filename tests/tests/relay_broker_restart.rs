//! Stop the broker while commands keep coming, start it again: the relay (idempotent producer)
//! and a projector resume, the topic holds every event in member order and the store converges.
//! (Its own test binary: stopping the shared broker must not overlap other Kafka tests.)

use std::time::Duration;

use member_api::app::Role;
use member_domain::{Identity, MemberCommand};
use member_infra::event_store::commands::CommandService;
use member_infra::relay::Checkpoint;
use member_projections::Target;
use member_tests::app::{isolated_settings, spawn_app_with, wait_converged};
use member_tests::eventually::eventually;
use member_tests::kafka::{assert_complete, read_topic, store_head, stored_events, wait_for_relay};
use member_tests::process::stack;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_and_projector_resume_after_the_broker_returns() {
    // This test binary's metrics: the projector counts the source failures it saw.
    let metrics = member_api::telemetry::metrics_handle();
    let (mut settings, pool, data_dir) = isolated_settings().await;
    settings.relay.batch_size = 50;
    assert!(settings.kafka.idempotent_producer, "the default");
    let topic = settings.kafka.topic.clone();
    let app = spawn_app_with(
        settings.clone(),
        pool.clone(),
        data_dir,
        &[Role::Relay, Role::Projector(Target::RedisA)],
    )
    .await;
    let commands = CommandService::new(pool.clone(), member_tests::vault());
    let write = |range: std::ops::Range<u32>| {
        let commands = commands.clone();
        let tag = Uuid::new_v4().simple().to_string();
        async move {
            for i in range {
                let account =
                    Identity::parse("elong_account", &format!("el-{tag}-{i}"), None, None).unwrap();
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
            }
        }
    };

    write(0..20).await;
    wait_for_relay(&pool, &topic, Duration::from_secs(30)).await;
    stack(&["stop-service", "kafka"]);
    let outage = tokio::time::Instant::now();
    write(20..60).await;
    eventually(
        "the projector notices the broker is gone",
        Duration::from_secs(30),
        || async { source_failures(&metrics.render()) >= 2 },
    )
    .await;
    // The scenario, not a wait for something: an outage longer than the consumer's session, so
    // that its group membership expires and must be re-established when the broker returns (the
    // errors librdkafka queued meanwhile once paced the projector's backoff for minutes).
    let session = Duration::from_millis(settings.kafka.session_timeout_ms + 1_000);
    tokio::time::sleep_until(outage + session).await;
    let stalled = Checkpoint::load(&pool, &topic).await.unwrap();
    stack(&["start-service", "kafka"]);
    write(60..80).await;

    let stored = stored_events(&pool).await;
    let head = store_head(&pool).await;
    assert!(
        stalled < head,
        "the relay could not publish while the broker was down"
    );
    wait_for_relay(&pool, &topic, Duration::from_secs(90)).await;
    let truth = app.truth().await;
    assert_eq!(truth.len(), 80);
    let reader = app.reader(Target::RedisA).await;
    wait_converged(reader.as_ref(), &truth, Duration::from_secs(90)).await;
    app.stop().await.unwrap();

    let records = read_topic(&settings.kafka, stored.len(), Duration::from_secs(60)).await;
    assert_eq!(stored.len(), 160);
    assert_complete(&stored, &records);
}

/// `member_projector_source_failures_total` for redis-a in Prometheus text (0 when absent).
fn source_failures(rendered: &str) -> u64 {
    rendered
        .lines()
        .find(|l| {
            l.starts_with("member_projector_source_failures_total")
                && l.contains("target=\"redis-a\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .map_or(0, |n| n as u64)
}
