//! `member verify` finds documents corrupted or deleted behind the projectors' backs, and
//! `--repair` fixes them: in MySQL, in a Redis center, and in an embedded search index.

use std::time::Duration;

use member_api::app::Role;
use member_infra::event_store::commands::CommandService;
use member_infra::redis::{document_key, identity_key};
use member_infra::search::tantivy::{cluster_dir, TantivyIndex};
use member_infra::search::SearchCluster;
use member_projections::{MemberDocument, Target};
use member_tests::app::{isolated_settings, spawn_app_with, wait_converged};
use member_tests::redis::{raw, PrivateRedis};
use member_tests::tools::{register, run_member};
use serde_json::Value;
use uuid::Uuid;

/// The members each finding kind names, from a `verify --json` report.
fn named(report: &Value, kind: &str) -> Vec<Uuid> {
    report["examples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == kind)
        .map(|f| f["member_id"].as_str().unwrap().parse().unwrap())
        .collect()
}

fn card_of(doc: &MemberDocument) -> member_domain::IdentityKey {
    doc.identities
        .iter()
        .map(|i| i.key.clone())
        .find(|k| k.to_string().starts_with("elong_card:"))
        .expect("a card")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_what_was_damaged_behind_the_projectors_back_and_repair_fixes_it() {
    let redis_b = PrivateRedis::start();
    let (mut settings, pool, data_dir) = isolated_settings().await;
    settings.redis.b.url = redis_b.url().into();
    // This test damages the embedded index behind the projector's back (tantivy's files).
    settings.search.engine = member_infra::config::SearchEngine::Tantivy;
    // The search index must outlive the app (the app deletes the data directory it is given).
    let search_data = tempfile::tempdir().unwrap();
    settings.data_dir = search_data.path().to_path_buf();
    let targets = [Target::Mysql, Target::RedisB, Target::SearchPrimary];
    let mut roles = vec![Role::Relay];
    roles.extend(targets.map(Role::Projector));
    let app = spawn_app_with(settings.clone(), pool.clone(), data_dir, &roles).await;
    let commands = CommandService::new(pool.clone(), member_tests::vault());
    let tag = member_tests::unique("vf");
    let mut members = Vec::new();
    for i in 0..30 {
        members.push(register(&commands, &tag, i).await);
    }
    let truth = app.truth().await;
    for target in targets {
        wait_converged(
            app.reader(target).await.as_ref(),
            &truth,
            Duration::from_secs(30),
        )
        .await;
    }
    for target in targets {
        let ran = run_member(
            &settings,
            &["verify", "--target", target.as_str(), "--json"],
        )
        .await;
        assert_eq!(ran.code, 0, "{target} before the damage: {}", ran.stdout);
    }
    let (missing, diverged, misrouted, holder) = (members[3], members[7], members[11], members[12]);
    let extra = Uuid::now_v7();
    let card = card_of(&truth[&misrouted]);

    // MySQL: delete a document, make one newer than the truth (which no guarded write would
    // replace), point an identity entry at another member, and add a member nobody registered.
    let shards = member_tests::mysql::migrated(&settings.mysql).await;
    let map = shards.shard_map().clone();
    let exec = |shard: u32, sql: String, binds: Vec<Vec<u8>>| {
        let pool = shards.pool(map.database_index_of(shard)).clone();
        async move {
            let mut q = sqlx::query(&sql);
            for b in binds {
                q = q.bind(b);
            }
            let done = q.execute(&pool).await.unwrap();
            assert_eq!(done.rows_affected(), 1, "{sql}");
        }
    };
    let members_of = |m: Uuid| format!("members_live_{:04}", map.shard_of_member(m));
    exec(
        map.shard_of_member(missing),
        format!("DELETE FROM `{}` WHERE member_id = ?", members_of(missing)),
        vec![missing.as_bytes().to_vec()],
    )
    .await;
    exec(
        map.shard_of_member(diverged),
        format!(
            "UPDATE `{}` SET version = version + 5, \
             doc = JSON_SET(doc, '$.version', version, '$.identities', JSON_ARRAY()) \
             WHERE member_id = ?",
            members_of(diverged)
        ),
        vec![diverged.as_bytes().to_vec()],
    )
    .await;
    exec(
        map.shard_of_identity(&card),
        format!(
            "UPDATE `identities_live_{:04}` SET member_id = ? WHERE identity_key = ?",
            map.shard_of_identity(&card)
        ),
        vec![holder.as_bytes().to_vec(), card.to_string().into_bytes()],
    )
    .await;
    let mut ghost = truth[&members[20]].clone();
    ghost.member_id = extra;
    ghost.identities.clear();
    exec(
        map.shard_of_member(extra),
        format!(
            "INSERT INTO `{}` (member_id, version, doc, updated_at) VALUES (?, 1, ?, NOW(6))",
            members_of(extra)
        ),
        vec![
            extra.as_bytes().to_vec(),
            serde_json::to_vec(&ghost).unwrap(),
        ],
    )
    .await;

    // Redis B: the same kinds of damage.
    let mut b = raw(&redis_b.url()).await;
    redis::cmd("DEL")
        .arg(document_key(missing))
        .query_async::<()>(&mut b)
        .await
        .unwrap();
    let mut newer = truth[&diverged].clone();
    newer.version += 5;
    newer.identities.clear();
    redis::cmd("HSET")
        .arg(document_key(diverged))
        .arg("v")
        .arg(newer.version)
        .arg("d")
        .arg(serde_json::to_string(&newer).unwrap())
        .query_async::<()>(&mut b)
        .await
        .unwrap();
    redis::cmd("HSET")
        .arg(identity_key(&card))
        .arg("g")
        .arg(1_000_000)
        .arg("m")
        .arg(holder.to_string())
        .query_async::<()>(&mut b)
        .await
        .unwrap();
    // ... and let the holder's document list the card too, so the lookup leads to the holder (a
    // lookup that finds nothing is a cache miss, not a difference).
    let mut claims = truth[&holder].clone();
    claims.identities.push(member_projections::BoundIdentity {
        key: card.clone(),
        generation: 1_000_000,
    });
    redis::cmd("HSET")
        .arg(document_key(holder))
        .arg("d")
        .arg(serde_json::to_string(&claims).unwrap())
        .query_async::<()>(&mut b)
        .await
        .unwrap();
    redis::cmd("HSET")
        .arg(document_key(extra))
        .arg("v")
        .arg(1)
        .arg("d")
        .arg(serde_json::to_string(&ghost).unwrap())
        .query_async::<()>(&mut b)
        .await
        .unwrap();

    for target in [Target::Mysql, Target::RedisB] {
        let ran = run_member(
            &settings,
            &[
                "verify",
                "--target",
                target.as_str(),
                "--json",
                "--settle-ms",
                "200",
            ],
        )
        .await;
        assert_eq!(
            ran.code, 2,
            "{target}: differences exit 2: {}\n{}",
            ran.stdout, ran.stderr
        );
        let report = ran.json();
        // Redis is a cache: a document it does not hold is a miss, not a difference.
        let (missing_expected, diverged_expected) = match target {
            Target::RedisB => (vec![], {
                let mut both = vec![diverged, holder];
                both.sort();
                both
            }),
            _ => (vec![missing], vec![diverged]),
        };
        assert_eq!(
            named(&report, "missing"),
            missing_expected,
            "{target}: {report}"
        );
        let mut diverged_found = named(&report, "diverged");
        diverged_found.sort();
        assert_eq!(diverged_found, diverged_expected, "{target}: {report}");
        assert_eq!(named(&report, "extra"), vec![extra], "{target}: {report}");
        assert!(
            named(&report, "identity_misrouted").contains(&misrouted),
            "{target}: {report}"
        );
        assert!(
            !report.to_string().contains(&card.to_string()),
            "{target}: identities are not printed in clear"
        );

        let ran = run_member(
            &settings,
            &[
                "verify",
                "--target",
                target.as_str(),
                "--repair",
                "--json",
                "--settle-ms",
                "200",
            ],
        )
        .await;
        assert_eq!(
            ran.code, 0,
            "{target}: repair: {}\n{}",
            ran.stdout, ran.stderr
        );
        assert_eq!(ran.json()["remaining"], 0, "{target}");
        let ran = run_member(
            &settings,
            &["verify", "--target", target.as_str(), "--json"],
        )
        .await;
        assert_eq!(ran.code, 0, "{target} after repair: {}", ran.stdout);
        let reader = app.reader(target).await;
        assert_eq!(reader.by_id(extra).await.unwrap(), None, "{target}");
        for member in [diverged, holder] {
            assert_eq!(
                reader.by_id(member).await.unwrap().as_ref(),
                Some(&truth[&member]),
                "{target}"
            );
        }
        let found = reader.by_identity(&card).await.unwrap();
        assert_eq!(found.map(|d| d.member_id), Some(misrouted), "{target}");
        if target == Target::Mysql {
            wait_converged(reader.as_ref(), &truth, Duration::from_secs(5)).await;
        }
    }
    app.stop().await.unwrap();

    // Search: with its projector stopped nobody owns the index; delete a document from it.
    let root = cluster_dir(&settings.data_dir, SearchCluster::Primary);
    let index = TantivyIndex::open(&root, SearchCluster::Primary, Duration::from_secs(60))
        .await
        .unwrap();
    index.remove(&[missing]).await.unwrap();
    index.close().await.unwrap();
    drop(index);
    let ran = run_member(
        &settings,
        &["verify", "--target", "search-primary", "--json"],
    )
    .await;
    assert_eq!(ran.code, 2, "{}\n{}", ran.stdout, ran.stderr);
    assert_eq!(named(&ran.json(), "missing"), vec![missing]);
    let ran = run_member(
        &settings,
        &["verify", "--target", "search-primary", "--repair"],
    )
    .await;
    assert_eq!(ran.code, 0, "{}\n{}", ran.stdout, ran.stderr);
    let ran = run_member(&settings, &["verify", "--target", "search-primary"]).await;
    assert_eq!(ran.code, 0, "{}", ran.stdout);
    assert!(ran.stdout.contains("no differences"), "{}", ran.stdout);
    member_tests::mysql::drop_databases(&shards).await;
}

/// The first SIGINT stops `member verify` before it repairs anything, with exit code 130 and a
/// message saying how to go on. The verify is held in its settle delay (ten minutes) with
/// differences found, so an exit within seconds is the signal's doing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_stops_a_verify_before_any_repair() {
    use member_tests::process::{send_signal, spawn_member_captured, wait_exit, Signal};
    let (settings, pool, _data_dir) = isolated_settings().await;
    let shards = member_tests::mysql::migrated(&settings.mysql).await;
    let ran = run_member(&settings, &["seed", "--members", "300", "--bulk"]).await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let connections = || {
        let (pool, database) = (pool.clone(), database.clone());
        async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            )
            .bind(database)
            .fetch_one(&pool)
            .await
            .unwrap();
            n
        }
    };
    let before = connections().await;
    // Nothing was projected: every member is missing from MySQL, and repair would write them.
    let child = spawn_member_captured(
        &[
            "verify",
            "--target",
            "mysql",
            "--repair",
            "--settle-ms",
            "600000",
        ],
        &member_tests::tools::member_env(&settings),
    );
    member_tests::eventually(
        "the verify reads the event store",
        Duration::from_secs(60),
        || {
            let connections = &connections;
            async move { connections().await > before }
        },
    )
    .await;
    send_signal(child.id(), Signal::Interrupt);
    let out = wait_exit(child, Duration::from_secs(30)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("before any repair; run the same command again"),
        "{stderr}"
    );
    let rows =
        member_tests::mysql::member_rows(&shards, settings.mysql.logical_shards, "live").await;
    assert_eq!(rows, 0, "nothing was repaired");
}
