//! Kill the relay process (SIGKILL) again and again while commands flow: no event is missing on
//! the topic; duplicates are allowed, per-member order is preserved.

use std::time::Duration;

use member_domain::{Identity, MemberCommand};
use member_infra::event_store::commands::CommandService;
use member_tests::kafka::{assert_complete, read_topic, stored_events, test_topic, wait_for_relay};
use member_tests::postgres::fresh_event_store_with_url;
use member_tests::process::spawn_member;
use rand::Rng;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_relay_loses_nothing() {
    let (pool, url) = fresh_event_store_with_url().await;
    let kafka = test_topic(3);
    let partitions = kafka.partitions.to_string();
    let env = [
        ("MEMBER__POSTGRES__URL", url.as_str()),
        ("MEMBER__KAFKA__TOPIC", kafka.topic.as_str()),
        ("MEMBER__KAFKA__PARTITIONS", partitions.as_str()),
        ("MEMBER__RELAY__BATCH_SIZE", "7"),
    ];

    let writer = tokio::spawn({
        let commands = CommandService::new(pool.clone(), member_tests::vault());
        async move {
            for i in 0..60 {
                let id = Uuid::now_v7();
                let account =
                    Identity::parse("tongcheng_account", &format!("tc-{i}"), None, None).unwrap();
                commands
                    .execute(
                        id,
                        MemberCommand::Register {
                            identities: vec![account],
                        },
                        None,
                    )
                    .await
                    .unwrap();
                let card = Identity::parse("elong_card", &format!("{:08}", i), None, None).unwrap();
                commands
                    .execute(id, MemberCommand::BindIdentity { identity: card }, None)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        }
    });

    let mut relay = spawn_member(&["serve", "relay"], &env);
    let mut kills = 0;
    while !writer.is_finished() {
        let pause = rand::rng().random_range(150..600);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        relay.kill().expect("SIGKILL the relay");
        relay.wait().unwrap();
        kills += 1;
        relay = spawn_member(&["serve", "relay"], &env);
    }
    writer.await.unwrap();
    assert!(kills >= 3, "the relay was killed {kills} times");

    // Let the last relay catch up.
    let stored = stored_events(&pool).await;
    wait_for_relay(&pool, &kafka.topic, Duration::from_secs(60)).await;
    relay.kill().unwrap();
    relay.wait().unwrap();

    let records = read_topic(&kafka, stored.len(), Duration::from_secs(60)).await;
    assert_eq!(
        stored.len(),
        180,
        "60 members: registered, account bound, card bound"
    );
    assert_complete(&stored, &records);
}
