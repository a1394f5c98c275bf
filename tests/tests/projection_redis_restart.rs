//! Stop Redis B (the process) while commands flow, start it again: its projector catches up by
//! itself. (Its own test binary: stopping a shared server must not overlap other tests.)

use std::time::Duration;

use member_api::app::Role;
use member_domain::{Identity, MemberCommand};
use member_infra::event_store::commands::CommandService;
use member_projections::Target;
use member_tests::app::{spawn_app, wait_converged};
use member_tests::process::stack;
use rand::Rng;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_b_catches_up_after_a_restart() {
    let app = spawn_app(&[Role::Relay, Role::Projector(Target::RedisB)]).await;
    let commands = CommandService::new(app.pool.clone(), member_tests::vault());
    let suffix: u32 = rand::rng().random_range(0..1_000_000);
    let write = |range: std::ops::Range<u32>| {
        let commands = commands.clone();
        async move {
            for i in range {
                let account =
                    Identity::parse("elong_account", &format!("rb{suffix}-{i}"), None, None)
                        .unwrap();
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
    write(0..30).await;
    let reader = app.reader(Target::RedisB).await;
    wait_converged(reader.as_ref(), &app.truth().await, Duration::from_secs(30)).await;

    stack(&["stop-service", "redis-b"]);
    write(30..80).await;
    // Everything written during the outage is on the topic, in front of the projector of the
    // stopped store.
    member_tests::kafka::wait_for_relay(
        &app.pool,
        &app.settings.kafka.topic,
        Duration::from_secs(30),
    )
    .await;
    stack(&["start-service", "redis-b"]);
    write(80..100).await;

    let truth = app.truth().await;
    assert_eq!(truth.len(), 100);
    wait_converged(reader.as_ref(), &truth, Duration::from_secs(60)).await;
    app.stop().await.unwrap();
}
