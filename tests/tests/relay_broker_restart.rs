//! Stop the broker while commands keep coming, start it again: the relay resumes and catches up.
//! (Its own test binary: stopping the shared broker must not overlap other Kafka tests.)

use std::time::Duration;

use member_domain::{Identity, MemberCommand};
use member_infra::config::RelaySettings;
use member_infra::event_store::commands::CommandService;
use member_infra::relay::{Checkpoint, Relay};
use member_tests::kafka::{
    assert_complete, read_topic, store_head, stored_events, test_topic, wait_for_relay,
};
use member_tests::postgres::fresh_event_store;
use member_tests::process::stack;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_catches_up_after_the_broker_returns() {
    let pool = fresh_event_store().await;
    let kafka = test_topic(3);
    member_infra::kafka::ensure_topic(&kafka, &kafka.topic)
        .await
        .unwrap();
    let relay = Relay::new(
        &kafka.topic,
        pool.clone(),
        &kafka,
        &RelaySettings {
            batch_size: 50,
            idle_poll_ms: 10,
        },
    )
    .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let relay_task = tokio::spawn(relay.run(async {
        let _ = stop_rx.await;
    }));
    let commands = CommandService::new(pool.clone());
    let write = |range: std::ops::Range<u32>| {
        let commands = commands.clone();
        async move {
            for i in range {
                let account =
                    Identity::parse("elong_account", &format!("el-{i}"), None, None).unwrap();
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
    tokio::time::sleep(Duration::from_secs(1)).await;
    stack(&["stop-service", "kafka"]);
    write(20..60).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stalled = Checkpoint::load(&pool, &kafka.topic).await.unwrap();
    stack(&["start-service", "kafka"]);
    write(60..80).await;

    let stored = stored_events(&pool).await;
    let head = store_head(&pool).await;
    assert!(
        stalled < head,
        "the relay could not publish while the broker was down"
    );
    wait_for_relay(&pool, &kafka.topic, Duration::from_secs(90)).await;
    let _ = stop_tx.send(());
    relay_task.await.unwrap();

    let records = read_topic(&kafka, stored.len(), Duration::from_secs(60)).await;
    assert_eq!(stored.len(), 160);
    assert_complete(&stored, &records);
}
