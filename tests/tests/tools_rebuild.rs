//! `member rebuild` and `member verify` on the real stack: stores wiped behind the projectors'
//! backs are rebuilt while commands keep flowing, and verify then finds zero differences; the
//! search index owned by a running projector is swapped blue-green under it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use member_api::app::Role;
use member_infra::event_store::commands::CommandService;
use member_projections::Target;
use member_tests::app::{isolated_settings, spawn_app_with, wait_converged};
use member_tests::mysql::fresh_settings;
use member_tests::redis::{raw, PrivateRedis};
use member_tests::tools::{register, run_member, unbind};
use sqlx::Executor;

const TARGETS: [Target; 3] = [Target::Mysql, Target::RedisB, Target::SearchPrimary];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_stores_are_rebuilt_while_commands_flow_and_verify_finds_no_difference() {
    let redis_b = PrivateRedis::start();
    let (mut settings, pool, data_dir) = isolated_settings().await;
    settings.redis.b.url = redis_b.url().into();
    // Wipes the embedded index's directory and checks its generations.
    settings.search.engine = member_infra::config::SearchEngine::Tantivy;
    let mut roles = vec![Role::Relay];
    roles.extend(TARGETS.map(Role::Projector));
    let app = spawn_app_with(settings.clone(), pool.clone(), data_dir, &roles).await;
    let commands = CommandService::new(pool.clone(), member_tests::vault());
    let tag = member_tests::unique("rb");
    let mut members = Vec::new();
    for i in 0..60 {
        members.push(register(&commands, &tag, i).await);
    }
    for (i, m) in members.iter().enumerate().take(10) {
        let account =
            member_domain::Identity::parse("tongcheng_account", &format!("{tag}-{i}"), None, None)
                .unwrap();
        unbind(&commands, *m, account.key()).await;
    }
    let truth = app.truth().await;
    for target in TARGETS {
        wait_converged(
            app.reader(target).await.as_ref(),
            &truth,
            Duration::from_secs(30),
        )
        .await;
    }

    // Wipe MySQL and Redis B behind the projectors' backs.
    let shards = member_tests::mysql::migrated(&settings.mysql).await;
    for shard in 0..settings.mysql.logical_shards {
        let pool = shards.pool(shards.shard_map().database_index_of(shard));
        for table in [
            format!("members_live_{shard:04}"),
            format!("identities_live_{shard:04}"),
        ] {
            pool.execute(format!("DELETE FROM `{table}`").as_str())
                .await
                .unwrap();
        }
    }
    let mut b = raw(&redis_b.url()).await;
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut b)
        .await
        .unwrap();
    let gone = app
        .reader(Target::Mysql)
        .await
        .by_id(members[20])
        .await
        .unwrap();
    assert_eq!(gone, None, "the wipe emptied mysql");

    // Commands keep flowing during the rebuild.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let commands = commands.clone();
        let stop = stop.clone();
        let tag = tag.clone();
        async move {
            let mut written = Vec::new();
            let mut i = 1000;
            while !stop.load(Ordering::Relaxed) {
                written.push(register(&commands, &tag, i).await);
                i += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            written
        }
    });
    let generation_before = live_generation(&settings);
    let ran = run_member(
        &settings,
        &[
            "rebuild",
            "--target",
            "mysql,redis-b,search-primary",
            "--json",
            "--batch",
            "7",
        ],
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert_eq!(ran.code, 0, "rebuild failed: {}", ran.stderr);
    let report = ran.json();
    assert!(report["members"].as_u64().unwrap() >= 60, "{report}");
    assert!(
        written.len() >= 3,
        "commands flowed during the rebuild ({})",
        written.len()
    );
    assert_ne!(
        live_generation(&settings),
        generation_before,
        "the search index was swapped for a new generation"
    );

    // No lost update: every store serves exactly the truth, including what was written during
    // the rebuild, and the projectors keep working after the hand-over.
    let late = register(&commands, &tag, 9999).await;
    let truth = app.truth().await;
    assert!(truth.contains_key(&late) && written.iter().all(|m| truth.contains_key(m)));
    for target in TARGETS {
        wait_converged(
            app.reader(target).await.as_ref(),
            &truth,
            Duration::from_secs(30),
        )
        .await;
    }
    for target in TARGETS {
        let ran = run_member(
            &settings,
            &["verify", "--target", target.as_str(), "--json"],
        )
        .await;
        assert_eq!(ran.code, 0, "{target}: {}\n{}", ran.stdout, ran.stderr);
        let report = ran.json();
        assert_eq!(report["remaining"], 0, "{target}: {report}");
        assert_eq!(
            report["members_checked"].as_u64(),
            Some(truth.len() as u64),
            "{target}: {report}"
        );
    }
    app.stop().await.unwrap();
}

fn live_generation(settings: &member_infra::config::Settings) -> Option<String> {
    use member_infra::search::tantivy::{cluster_dir, generations};
    let root = cluster_dir(
        &settings.data_dir,
        member_infra::search::SearchCluster::Primary,
    );
    generations::read(&root, generations::CURRENT)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_is_resharded_from_four_to_eight_databases_by_replay() {
    let (settings, pool, data_dir) = isolated_settings().await;
    let app = spawn_app_with(
        settings.clone(),
        pool.clone(),
        data_dir,
        &[Role::Relay, Role::Projector(Target::Mysql)],
    )
    .await;
    let commands = CommandService::new(pool.clone(), member_tests::vault());
    let tag = member_tests::unique("rs");
    for i in 0..40 {
        register(&commands, &tag, i).await;
    }
    let truth = app.truth().await;
    wait_converged(
        app.reader(Target::Mysql).await.as_ref(),
        &truth,
        Duration::from_secs(30),
    )
    .await;

    let eight = fresh_settings(settings.mysql.logical_shards, 8);
    assert_eq!(eight.databases.len(), 8);
    let ran = run_member(
        &settings,
        &[
            "rebuild",
            "--target",
            "mysql",
            "--databases",
            &eight.databases.join(","),
            "--json",
        ],
    )
    .await;
    assert_eq!(ran.code, 0, "re-shard failed: {}", ran.stderr);
    let report = ran.json();
    let group = report["reshard_group"]
        .as_str()
        .expect("the new layout's group")
        .to_owned();

    // Written after the re-shard's rebuild, while the old layout's projector still runs.
    let mut after = Vec::new();
    for i in 100..110 {
        after.push(register(&commands, &tag, i).await);
    }
    app.stop().await.unwrap();

    // The operator switches the configuration: the projector of the new layout continues from
    // the rebuild's position (its own consumer group), and lookups work on eight databases.
    let mut moved = settings.clone();
    moved.mysql = eight.clone();
    assert_eq!(
        member_infra::kafka::projector_group(&moved, Target::Mysql),
        group
    );
    let data_dir = tempfile::tempdir().unwrap();
    moved.data_dir = data_dir.path().to_path_buf();
    let app = spawn_app_with(
        moved.clone(),
        pool.clone(),
        data_dir,
        &[Role::Relay, Role::Projector(Target::Mysql)],
    )
    .await;
    let truth = app.truth().await;
    assert!(after.iter().all(|m| truth.contains_key(m)));
    let reader = app.reader(Target::Mysql).await;
    wait_converged(reader.as_ref(), &truth, Duration::from_secs(30)).await;
    let ran = run_member(&moved, &["verify", "--target", "mysql", "--json"]).await;
    assert_eq!(ran.code, 0, "{}\n{}", ran.stdout, ran.stderr);
    // Every database of the new layout holds members.
    let shards = member_tests::mysql::migrated(&eight).await;
    for index in 0..8 {
        let mut total = 0i64;
        for shard in shards.shard_map().shards_of_database(index) {
            let n: i64 =
                sqlx::query_scalar(&format!("SELECT COUNT(*) FROM `members_live_{shard:04}`"))
                    .fetch_one(shards.pool(index))
                    .await
                    .unwrap();
            total += n;
        }
        assert!(total > 0, "database {index} of the new layout is empty");
    }
    app.stop().await.unwrap();
    member_tests::mysql::drop_databases(&shards).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rebuild_and_verify_arguments_are_refused_with_a_clear_error_and_change_nothing() {
    let (settings, pool, _data_dir) = isolated_settings().await;
    let hostile = "member_t_x`; DROP DATABASE member; --";
    let live = settings.mysql.databases[0].clone();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["rebuild", "--target", "nope"], "unknown"),
        (
            vec!["rebuild", "--target", "mysql", "--batch", "0"],
            "batch",
        ),
        (
            vec!["rebuild", "--target", "redis-a", "--databases", "a,b"],
            "--target mysql",
        ),
        (
            vec!["rebuild", "--target", "mysql", "--databases", &live],
            "already in mysql.databases",
        ),
        (
            vec!["rebuild", "--target", "mysql", "--databases", hostile],
            "not a plain identifier",
        ),
        (
            vec!["verify", "--target", "mysql; rm -rf /"],
            "invalid value",
        ),
        (
            vec!["verify", "--target", "mysql", "--sample", "-3"],
            "unexpected argument '-3'",
        ),
    ];
    for (args, expected) in cases {
        let ran = run_member(&settings, &args).await;
        assert_ne!(ran.code, 0, "{args:?} must fail");
        assert!(
            ran.stderr.to_lowercase().contains(&expected.to_lowercase()),
            "{args:?}: the error names the problem ({expected}): {}",
            ran.stderr
        );
        assert!(
            ran.stdout.is_empty(),
            "{args:?} printed a report: {}",
            ran.stdout
        );
    }
    // Nothing was written: no event, and no database of any layout was created.
    assert_eq!(member_tests::postgres::event_count(&pool).await, 0);
    let mut admin =
        <sqlx::MySqlConnection as sqlx::Connection>::connect(settings.mysql.url.expose_secret())
            .await
            .unwrap();
    let created: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name LIKE 'member_t_x%' \
         OR schema_name = ?",
    )
    .bind(&live)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(created, 0);
}

/// The generation directories of the primary search cluster.
fn generation_dirs(settings: &member_infra::config::Settings) -> Vec<String> {
    let root = member_infra::search::tantivy::cluster_dir(
        &settings.data_dir,
        member_infra::search::SearchCluster::Primary,
    );
    let mut dirs: Vec<String> = std::fs::read_dir(root)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_stops_a_rebuild_before_the_hand_over_and_leaves_the_live_stores_untouched() {
    use member_tests::process::{send_signal, spawn_member_captured, wait_exit, Signal};
    const MEMBERS: i64 = 5000;
    let (mut settings, _pool, _data_dir) = isolated_settings().await;
    // Checks the embedded index's generation directories (the Elasticsearch generations of an
    // interrupted rebuild are covered by tests/tests/tools_elasticsearch.rs).
    settings.search.engine = member_infra::config::SearchEngine::Tantivy;
    let logical_shards = settings.mysql.logical_shards;
    let shards = member_tests::mysql::migrated(&settings.mysql).await;
    let ran = run_member(
        &settings,
        &["seed", "--members", &MEMBERS.to_string(), "--bulk"],
    )
    .await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let generations_before = generation_dirs(&settings);

    // One member per write: slow enough to be stopped in the middle of the fold.
    let args = [
        "rebuild",
        "--target",
        "mysql,search-primary",
        "--batch",
        "1",
    ];
    let child = spawn_member_captured(&args, &member_tests::tools::member_env(&settings));
    member_tests::eventually(
        "the rebuild writes the new table set",
        Duration::from_secs(60),
        || {
            let shards = &shards;
            async move { member_tests::mysql::member_rows(shards, logical_shards, "next").await > 50 }
        },
    )
    .await;
    send_signal(child.id(), Signal::Interrupt);
    let out = wait_exit(child, Duration::from_secs(60)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("run the same command again to rebuild from the start"),
        "{stderr}"
    );

    // The partial build is gone and the live stores never saw it.
    let next_tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables
         WHERE table_schema = DATABASE() AND table_name LIKE 'members\\_next\\_%'",
    )
    .fetch_one(shards.pool(0))
    .await
    .unwrap();
    assert_eq!(next_tables, 0, "the partial table set was dropped");
    assert_eq!(
        member_tests::mysql::member_rows(&shards, logical_shards, "live").await,
        0
    );
    // (The rebuild creates an empty live generation when there is none.)
    let live = live_generation(&settings);
    let mut expected_dirs = generations_before.clone();
    expected_dirs.extend(live.clone());
    expected_dirs.sort();
    expected_dirs.dedup();
    assert_eq!(
        generation_dirs(&settings),
        expected_dirs,
        "the partial search generation was removed, only the live one is left"
    );

    // Running again rebuilds from the start.
    let ran = run_member(
        &settings,
        &["rebuild", "--target", "mysql,search-primary", "--json"],
    )
    .await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(ran.json()["members"].as_i64(), Some(MEMBERS));
    assert_eq!(
        member_tests::mysql::member_rows(&shards, logical_shards, "live").await,
        MEMBERS
    );
    assert_ne!(
        live_generation(&settings),
        live,
        "a new generation was swapped in"
    );
}
