//! `member rebuild` and `member verify [--repair]` for an Elasticsearch target, on the local
//! stack's search-primary cluster: the rebuild is blue-green behind the aliases (a new pair of
//! indices, caught up, one atomic alias swap, the old pair dropped) while commands flow; verify
//! finds damage done behind the projector's back and repair fixes it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use elasticsearch::indices::IndicesGetAliasParts;
use elasticsearch::params::{Refresh, VersionType};
use elasticsearch::{BulkOperation, BulkParts};
use member_api::app::Role;
use member_infra::config::SearchEngine;
use member_infra::event_store::commands::CommandService;
use member_infra::search::elasticsearch::IndexOptions;
use member_infra::search::{ElasticsearchIndex, SearchCluster};
use member_projections::{MemberDocument, Target};
use member_tests::app::{isolated_settings, spawn_app_with, wait_converged};
use member_tests::tools::{register, run_member};
use serde_json::{json, Value};
use uuid::Uuid;

const TARGET: Target = Target::SearchPrimary;

/// A second handle on the test's indices in the cluster of `target`, for looking and damaging
/// behind the projector.
async fn handle(settings: &member_infra::config::Settings, target: Target) -> ElasticsearchIndex {
    let cluster = SearchCluster::ALL
        .into_iter()
        .find(|c| c.target() == target.as_str())
        .expect("an Elasticsearch target");
    let es = &settings.search.elasticsearch;
    let options = IndexOptions {
        index: es.index_prefix.clone(),
        shards: es.shards.get(),
        replicas: es.replicas,
        refresh: Duration::from_millis(settings.search.refresh_ms),
    };
    ElasticsearchIndex::connect(cluster.elasticsearch_url(settings), cluster, options)
        .await
        .expect("the test's indices")
}

/// The concrete indices behind both aliases.
async fn aliased(index: &ElasticsearchIndex) -> Vec<String> {
    let body: Value = index
        .client()
        .indices()
        .get_alias(IndicesGetAliasParts::Name(&[
            index.index(),
            index.identity_index(),
        ]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut names: Vec<String> = body.as_object().unwrap().keys().cloned().collect();
    names.sort();
    names
}

async fn exists(index: &ElasticsearchIndex, name: &str) -> bool {
    index
        .client()
        .indices()
        .exists(elasticsearch::indices::IndicesExistsParts::Index(&[name]))
        .send()
        .await
        .unwrap()
        .status_code()
        .is_success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_swaps_a_caught_up_generation_in_behind_the_aliases_while_commands_flow() {
    let (settings, pool, data_dir) = isolated_settings().await;
    assert_eq!(settings.search.engine, SearchEngine::Elasticsearch);
    let app = spawn_app_with(
        settings.clone(),
        pool.clone(),
        data_dir,
        &[Role::Relay, Role::Projector(TARGET)],
    )
    .await;
    let commands = CommandService::new(pool.clone(), member_tests::vault());
    let tag = member_tests::unique("esrb");
    for i in 0..40 {
        register(&commands, &tag, i).await;
    }
    let truth = app.truth().await;
    wait_converged(
        app.reader(TARGET).await.as_ref(),
        &truth,
        Duration::from_secs(30),
    )
    .await;
    let index = handle(&settings, TARGET).await;
    let prefix = index.index().to_owned();
    assert_eq!(
        aliased(&index).await,
        vec![
            format!("{prefix}-000001"),
            format!("{prefix}_identity-000001")
        ]
    );

    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (commands, stop, tag) = (commands.clone(), stop.clone(), tag.clone());
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
    // Live reads through the aliases during the rebuild: every member registered before it is
    // found, by id and by its card, on every pass (a half-built index behind the alias would
    // miss some).
    let live = tokio::spawn({
        let (stop, reader, before) = (stop.clone(), app.reader(TARGET).await, truth.clone());
        async move {
            let mut passes = 0u32;
            while !stop.load(Ordering::Relaxed) {
                for (id, doc) in &before {
                    let by_id = reader.by_id(*id).await.expect("a read by id");
                    assert!(
                        by_id.is_some_and(|d| d.version >= doc.version),
                        "member {id} missing or older during the rebuild"
                    );
                    let by_card = reader.by_identity(&card_of(doc)).await.expect("a read");
                    assert_eq!(by_card.map(|d| d.member_id), Some(*id), "by card, {id}");
                }
                passes += 1;
            }
            passes
        }
    });
    let ran = run_member(
        &settings,
        &[
            "rebuild",
            "--target",
            TARGET.as_str(),
            "--json",
            "--batch",
            "7",
        ],
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();
    let passes = live.await.expect("live reads never missed a member");
    assert!(passes >= 1, "the live reader made at least one full pass");
    assert_eq!(
        ran.code, 0,
        "rebuild failed: {}\n{}",
        ran.stdout, ran.stderr
    );
    assert!(
        ran.json()["members"].as_u64().unwrap() >= 40,
        "{}",
        ran.stdout
    );
    assert!(written.len() >= 3, "commands flowed during the rebuild");

    // The aliases point at the second generation; the first is gone.
    assert_eq!(
        aliased(&index).await,
        vec![
            format!("{prefix}-000002"),
            format!("{prefix}_identity-000002")
        ]
    );
    assert!(!exists(&index, &format!("{prefix}-000001")).await);
    assert!(!exists(&index, &format!("{prefix}_identity-000001")).await);

    // No lost update, and the projector keeps writing through the alias after the swap.
    let late = register(&commands, &tag, 9999).await;
    let truth = app.truth().await;
    assert!(truth.contains_key(&late) && written.iter().all(|m| truth.contains_key(m)));
    wait_converged(
        app.reader(TARGET).await.as_ref(),
        &truth,
        Duration::from_secs(30),
    )
    .await;
    let ran = run_member(
        &settings,
        &["verify", "--target", TARGET.as_str(), "--json"],
    )
    .await;
    assert_eq!(ran.code, 0, "{}\n{}", ran.stdout, ran.stderr);
    assert_eq!(ran.json()["remaining"], 0);
    app.stop().await.unwrap();
    member_tests::elasticsearch::remove(&index).await;
}

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

/// Writes raw bulk operations and refreshes, asserting every item succeeded.
async fn write_raw(index: &ElasticsearchIndex, operations: Vec<BulkOperation<Value>>) {
    let body: Value = index
        .client()
        .bulk(BulkParts::None)
        .refresh(Refresh::True)
        .body(operations)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["errors"], false, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_damage_behind_the_projector_and_repair_fixes_it_on_search_primary() {
    verify_and_repair(Target::SearchPrimary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_damage_behind_the_projector_and_repair_fixes_it_on_search_backup() {
    verify_and_repair(Target::SearchBackup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_damage_behind_the_projector_and_repair_fixes_it_on_search_marketing() {
    verify_and_repair(Target::SearchMarketing).await;
}

async fn verify_and_repair(target: Target) {
    let (settings, pool, data_dir) = isolated_settings().await;
    let app = spawn_app_with(
        settings.clone(),
        pool.clone(),
        data_dir,
        &[Role::Relay, Role::Projector(target)],
    )
    .await;
    let commands = CommandService::new(pool.clone(), member_tests::vault());
    let tag = member_tests::unique("esvf");
    let mut members = Vec::new();
    for i in 0..20 {
        members.push(register(&commands, &tag, i).await);
    }
    let truth = app.truth().await;
    wait_converged(
        app.reader(target).await.as_ref(),
        &truth,
        Duration::from_secs(30),
    )
    .await;
    let ran = run_member(
        &settings,
        &["verify", "--target", target.as_str(), "--json"],
    )
    .await;
    assert_eq!(
        ran.code, 0,
        "before the damage: {}\n{}",
        ran.stdout, ran.stderr
    );

    let (missing, diverged, misrouted, holder) = (members[3], members[7], members[11], members[12]);
    let extra = Uuid::now_v7();
    let card = card_of(&truth[&misrouted]);
    let generation = truth[&misrouted].generation_of(&card).unwrap();
    let index = handle(&settings, target).await;
    let member_op = |doc: &MemberDocument, version: u64| -> BulkOperation<Value> {
        let id = doc.member_id.to_string();
        BulkOperation::index(json!({"member_id": id, "status": "active", "doc": doc}))
            .index(index.index())
            .id(id.as_str())
            .routing(id.as_str())
            .version(version as i64)
            .version_type(VersionType::ExternalGte)
            .into()
    };
    // A deleted document; one newer than the truth (no guarded write would replace it); an
    // identity entry pointing at another member; a member nobody registered.
    let mut newer = truth[&diverged].clone();
    newer.version += 5;
    newer.identities.clear();
    let mut ghost = truth[&members[15]].clone();
    ghost.member_id = extra;
    ghost.identities.clear();
    let missing_id = missing.to_string();
    let card_id = card.to_string();
    write_raw(
        &index,
        vec![
            BulkOperation::delete(missing_id.as_str())
                .index(index.index())
                .routing(missing_id.as_str())
                .into(),
            member_op(&newer, newer.version),
            member_op(&ghost, 1),
            BulkOperation::index(json!({"member_id": holder, "generation": generation}))
                .index(index.identity_index())
                .id(card_id.as_str())
                .routing(card_id.as_str())
                .version(generation as i64)
                .version_type(VersionType::ExternalGte)
                .into(),
        ],
    )
    .await;

    let verify = |repair: bool| {
        let settings = settings.clone();
        async move {
            let mut args = vec![
                "verify",
                "--target",
                target.as_str(),
                "--json",
                "--settle-ms",
                "200",
            ];
            if repair {
                args.push("--repair");
            }
            run_member(&settings, &args).await
        }
    };
    let ran = verify(false).await;
    assert_eq!(
        ran.code, 2,
        "differences exit 2: {}\n{}",
        ran.stdout, ran.stderr
    );
    let report = ran.json();
    assert_eq!(named(&report, "missing"), vec![missing], "{report}");
    assert_eq!(named(&report, "diverged"), vec![diverged], "{report}");
    assert_eq!(named(&report, "extra"), vec![extra], "{report}");
    assert!(
        named(&report, "identity_misrouted").contains(&misrouted),
        "{report}"
    );
    assert!(
        !report.to_string().contains(&card_id),
        "identities are not printed in clear"
    );

    let ran = verify(true).await;
    assert_eq!(ran.code, 0, "repair: {}\n{}", ran.stdout, ran.stderr);
    assert_eq!(ran.json()["remaining"], 0);
    let ran = verify(false).await;
    assert_eq!(ran.code, 0, "after repair: {}\n{}", ran.stdout, ran.stderr);
    let reader = app.reader(target).await;
    assert_eq!(reader.by_id(extra).await.unwrap(), None);
    for member in [missing, diverged] {
        assert_eq!(
            reader.by_id(member).await.unwrap().as_ref(),
            Some(&truth[&member])
        );
    }
    let found = reader.by_identity(&card).await.unwrap();
    assert_eq!(found.map(|d| d.member_id), Some(misrouted));
    app.stop().await.unwrap();
    member_tests::elasticsearch::remove(&index).await;
}
