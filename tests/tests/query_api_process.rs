//! `member serve query-api` in a process of its own beside a `member serve projector` process,
//! on the local stack's Elasticsearch (with tantivy the two cannot share the index: one writer
//! per directory, docs/local-stack.md): a member written through the event store is projected by
//! the one process and served from search-primary by the other.

use std::time::Duration;

use member_api::app::Role;
use member_domain::{Identity, MemberCommand};
use member_infra::config::SearchEngine;
use member_infra::event_store::commands::CommandService;
use member_projections::Target;
use member_tests::app::{isolated_settings, spawn_app_with};
use member_tests::eventually::eventually;
use member_tests::process::spawn_member;
use member_tests::ADMIN_KEY;
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_api_process_serves_what_a_projector_process_wrote_to_elasticsearch() {
    let (settings, pool, data_dir) = isolated_settings().await;
    assert_eq!(settings.search.engine, SearchEngine::Elasticsearch);
    // The relay runs in this process (it creates the topic).
    let app = spawn_app_with(settings.clone(), pool.clone(), data_dir, &[Role::Relay]).await;
    let databases = settings.mysql.databases.join(",");
    let shards = settings.mysql.logical_shards.to_string();
    let listen = format!("127.0.0.1:{}", member_tests::free_port());
    let env = [
        (
            "MEMBER__POSTGRES__URL",
            settings.postgres.url.expose_secret(),
        ),
        ("MEMBER__KAFKA__TOPIC", settings.kafka.topic.as_str()),
        ("MEMBER__MYSQL__DATABASES", databases.as_str()),
        ("MEMBER__MYSQL__LOGICAL_SHARDS", shards.as_str()),
        (
            "MEMBER__SEARCH__ELASTICSEARCH__INDEX_PREFIX",
            settings.search.elasticsearch.index_prefix.as_str(),
        ),
        ("MEMBER__QUERY_API__LISTEN", listen.as_str()),
    ];
    let mut projector = spawn_member(
        &[
            "serve",
            "projector",
            "--target",
            Target::SearchPrimary.as_str(),
        ],
        &env,
    );
    let mut query_api = spawn_member(&["serve", "query-api"], &env);

    let member = Uuid::now_v7();
    let account = format!("qp-{}", Uuid::new_v4().simple());
    CommandService::new(pool.clone(), member_tests::vault())
        .execute(
            member,
            MemberCommand::Register {
                identities: vec![
                    Identity::parse("tongcheng_account", &account, None, None).unwrap()
                ],
            },
            None,
        )
        .await
        .unwrap();

    let client = reqwest::Client::new();
    let base = format!("http://{listen}");
    eventually("the query api answers", Duration::from_secs(60), || {
        let (client, base) = (client.clone(), base.clone());
        async move { client.get(format!("{base}/readyz")).send().await.is_ok() }
    })
    .await;
    // Order reads pinned to search-primary: only the projector process writes there.
    let pinned = client
        .post(format!("{base}/admin/routing"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"class": "order", "pin": "search-primary"}))
        .send()
        .await
        .unwrap();
    assert_eq!(pinned.status(), StatusCode::OK);
    let url = format!("{base}/v1/members?kind=tongcheng_account&value={account}");
    eventually(
        "the member is served from search-primary",
        Duration::from_secs(60),
        || {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let Ok(r) = client.get(&url).bearer_auth("local-order-key").send().await else {
                    return false;
                };
                let served = r
                    .headers()
                    .get("x-served-from")
                    .map(|v| v.to_str().unwrap_or("").to_owned());
                r.status() == StatusCode::OK
                    && served.as_deref() == Some("search-primary")
                    && r.json::<serde_json::Value>().await.unwrap()["member_id"]
                        == member.to_string()
            }
        },
    )
    .await;

    for child in [&mut projector, &mut query_api] {
        let _ = child.kill();
        let _ = child.wait();
    }
    app.stop().await.unwrap();
}
