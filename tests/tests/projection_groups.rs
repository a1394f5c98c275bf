//! Two projector processes of one target share its partitions through the target's consumer
//! group; SIGKILL one while commands flow and the survivor takes its partitions over: every
//! store ends equal to the event store.

use std::time::Duration;

use member_api::app::Role;
use member_domain::{Identity, MemberCommand};
use member_infra::event_store::commands::CommandService;
use member_projections::Target;
use member_tests::app::{isolated_settings, spawn_app_with, wait_converged};
use member_tests::kafka::group_members;
use member_tests::process::spawn_member;
use rand::Rng;
use uuid::Uuid;

/// Waits until `group` lists `members` members (stable), or panics after `timeout`.
async fn wait_for_members(
    kafka: &member_infra::config::KafkaSettings,
    group: &str,
    members: usize,
    timeout: Duration,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let now = group_members(kafka, group).await;
        if now == members {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{group}: {now} members, expected {members}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_of_a_target_share_it_and_the_survivor_of_a_sigkill_converges() {
    let (mut settings, pool, data_dir) = isolated_settings().await;
    settings.kafka.partitions = 6;
    // The relay runs in this process (it creates the topic); the projectors are child processes.
    let app = spawn_app_with(settings.clone(), pool.clone(), data_dir, &[Role::Relay]).await;
    let databases = settings.mysql.databases.join(",");
    let shards = settings.mysql.logical_shards.to_string();
    let data_dir = settings.data_dir.display().to_string();
    let env = [
        (
            "MEMBER__POSTGRES__URL",
            settings.postgres.url.expose_secret(),
        ),
        ("MEMBER__KAFKA__TOPIC", settings.kafka.topic.as_str()),
        ("MEMBER__MYSQL__DATABASES", databases.as_str()),
        ("MEMBER__MYSQL__LOGICAL_SHARDS", shards.as_str()),
        ("MEMBER__DATA_DIR", data_dir.as_str()),
        ("MEMBER__PROJECTOR__BATCH_SIZE", "25"),
    ];
    let targets = [Target::RedisA, Target::Mysql];
    let spawn = |t: Target| spawn_member(&["serve", "projector", "--target", t.as_str()], &env);
    let mut first: Vec<_> = targets.iter().map(|t| spawn(*t)).collect();
    let second: Vec<_> = targets.iter().map(|t| spawn(*t)).collect();
    let groups: Vec<String> = targets
        .iter()
        .map(|t| member_infra::kafka::projector_group(&settings, *t))
        .collect();
    for group in &groups {
        wait_for_members(&settings.kafka, group, 2, Duration::from_secs(60)).await;
    }

    let writer = tokio::spawn({
        let commands = CommandService::new(pool.clone(), member_tests::vault());
        async move {
            let suffix: u32 = rand::rng().random_range(0..1_000_000);
            for i in 0..120u32 {
                let id = Uuid::now_v7();
                let account =
                    Identity::parse("tongcheng_account", &format!("g{suffix}-{i}"), None, None)
                        .unwrap();
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
                let card = Identity::parse("elong_card", &format!("{suffix:06}{i:06}"), None, None)
                    .unwrap();
                commands
                    .execute(id, MemberCommand::BindIdentity { identity: card }, None)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    // Halfway through, one process of each target dies without leaving its group.
    tokio::time::sleep(Duration::from_millis(rand::rng().random_range(800..1500))).await;
    for child in &mut first {
        child.kill().expect("SIGKILL a projector");
        child.wait().unwrap();
    }
    writer.await.unwrap();

    // The group notices once the session times out and gives the survivor every partition.
    for group in &groups {
        wait_for_members(&settings.kafka, group, 1, Duration::from_secs(60)).await;
    }
    let truth = app.truth().await;
    assert_eq!(truth.len(), 120);
    for target in targets {
        let reader = app.reader(target).await;
        wait_converged(reader.as_ref(), &truth, Duration::from_secs(60)).await;
    }
    for mut child in second {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    app.stop().await.unwrap();
}
