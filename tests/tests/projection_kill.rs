//! SIGKILL projector processes in the middle of their batches while commands flow; restarted, every
//! store converges to the event store's state.

use std::time::Duration;

use member_api::app::Role;
use member_domain::{Identity, MemberCommand};
use member_infra::event_store::commands::CommandService;
use member_infra::kafka::lag::ConsumerGroupLag;
use member_projections::Target;
use member_tests::app::{isolated_settings, spawn_app_with, wait_converged};
use member_tests::process::spawn_member;
use rand::Rng;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_projectors_converge_after_restart() {
    let (settings, pool, data_dir) = isolated_settings().await;
    // The relay runs in this process; the projectors run as child processes that get killed.
    let app = spawn_app_with(settings.clone(), pool.clone(), data_dir, &[Role::Relay]).await;
    let databases = settings.mysql.databases.join(",");
    let shards = settings.mysql.logical_shards.to_string();
    let data_dir = settings.data_dir.display().to_string();
    let search_shards = settings.search.elasticsearch.shards.to_string();
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
        ("MEMBER__SEARCH__ENGINE", settings.search.engine.as_str()),
        (
            "MEMBER__SEARCH__ELASTICSEARCH__INDEX_PREFIX",
            settings.search.elasticsearch.index_prefix.as_str(),
        ),
        (
            "MEMBER__SEARCH__ELASTICSEARCH__SHARDS",
            search_shards.as_str(),
        ),
    ];
    let targets = [Target::Mysql, Target::RedisA, Target::SearchPrimary];
    let spawn = |t: Target| spawn_member(&["serve", "projector", "--target", t.as_str()], &env);
    let mut children: Vec<_> = targets.iter().map(|t| spawn(*t)).collect();

    let writer = tokio::spawn({
        let commands = CommandService::new(pool.clone(), member_tests::vault());
        async move {
            let suffix: u32 = rand::rng().random_range(0..1_000_000);
            for i in 0..150u32 {
                let id = Uuid::now_v7();
                let account =
                    Identity::parse("tongcheng_account", &format!("k{suffix}-{i}"), None, None)
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
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        }
    });
    let mut kills = 0;
    while !writer.is_finished() {
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(300..900))).await;
        let which = rand::rng().random_range(0..targets.len());
        children[which].kill().expect("SIGKILL a projector");
        children[which].wait().unwrap();
        children[which] = spawn(targets[which]);
        kills += 1;
    }
    writer.await.unwrap();
    assert!(kills >= 2, "killed {kills} times");

    let truth = app.truth().await;
    assert_eq!(truth.len(), 150);
    let kills_stopped = std::time::Instant::now();
    for target in [Target::Mysql, Target::RedisA] {
        let reader = app.reader(target).await;
        wait_converged(reader.as_ref(), &truth, Duration::from_secs(90)).await;
        eprintln!(
            "{target} converged {:?} after the last kill",
            kills_stopped.elapsed()
        );
    }
    // The search projector owns its index (one writer per index): wait until its consumer group
    // has committed everything, stop it, then compare the index with the truth.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let all = settings.clone();
        let behind = tokio::task::spawn_blocking(move || {
            ConsumerGroupLag::records_behind(&all, Target::SearchPrimary)
        })
        .await
        .unwrap();
        if behind.as_ref().is_ok_and(|b| *b == 0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "search-primary projector still behind: {behind:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for mut child in children {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let reader = app.reader(Target::SearchPrimary).await;
    wait_converged(reader.as_ref(), &truth, Duration::from_secs(10)).await;
    app.stop().await.unwrap();
}
