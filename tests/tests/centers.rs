//! Two centers (docs/decisions/0039-center-topology.md): each center's query API reads its own
//! stores first, so B keeps answering order reads when every process and store of A is dead.
//!
//! Center A is a `member run` process of its own (config: center a, projectors redis-a,
//! search-primary and mysql on A's databases) with its own Redis; center B runs in this process
//! (command API, query API, relay, projectors redis-b, search-backup and mysql on B's own
//! databases) with its own Redis. Both share the event store and the topic, as the two centers
//! of a deployment do. Search runs embedded (tantivy) in each center's process.

use std::time::Duration;

use member_api::app::Role;
use member_infra::config::{RedisCenter, SearchEngine};
use member_projections::Target;
use member_tests::app::{isolated_settings, spawn_app_with};
use member_tests::eventually::eventually;
use member_tests::process::spawn_member;
use member_tests::redis::PrivateRedis;
use member_tests::{writer_client, ADMIN_KEY};
use serde_json::{json, Value};

const ORDER_KEY: &str = "local-order-key";

async fn read(client: &reqwest::Client, url: &str) -> Option<(u16, String)> {
    let r = client.get(url).bearer_auth(ORDER_KEY).send().await.ok()?;
    let from = r
        .headers()
        .get("x-served-from")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Some((r.status().as_u16(), from))
}

async fn register(client: &reqwest::Client, url: &str, card: &str) -> String {
    let r = client
        .post(url)
        .json(&json!({"identities": [{"kind": "elong_card", "value": card}]}))
        .send()
        .await
        .expect("the command api answers");
    assert_eq!(r.status().as_u16(), 201, "register");
    let v: Value = r.json().await.expect("json");
    v["member_id"].as_str().expect("member_id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn center_b_answers_order_reads_from_its_own_stores_while_center_a_is_dead() {
    let (mut settings, pool, data_dir) = isolated_settings().await;
    settings.search.engine = SearchEngine::Tantivy;
    let mut redis_a = PrivateRedis::start();
    let redis_b = PrivateRedis::start();
    settings.redis.a.url = redis_a.url().into();
    settings.redis.b.url = redis_b.url().into();
    let a_databases: Vec<String> = settings
        .mysql
        .databases
        .iter()
        .map(|d| format!("{d}_a"))
        .collect();

    // Center B, in this process.
    let mut b = settings.clone();
    b.center.name = Some(RedisCenter::B);
    b.center.projectors = ["redis-b", "search-backup", "mysql"]
        .map(String::from)
        .into();
    b.center.reads = ["redis-b", "redis-a", "search-backup", "mysql"]
        .map(String::from)
        .into();
    let roles = Role::of_center(&b);
    assert!(!roles.contains(&Role::Projector(Target::RedisA)));
    let b = spawn_app_with(b, pool.clone(), data_dir, &roles).await;

    // Center A, a process of its own.
    let a_dir = tempfile::tempdir().expect("temp dir");
    let a_query = format!("127.0.0.1:{}", member_tests::free_port());
    let a_command = format!("127.0.0.1:{}", member_tests::free_port());
    let config = a_dir.path().join("member.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[search]\nengine = \"tantivy\"\n\
             [center]\nname = \"a\"\nprojectors = [\"redis-a\", \"search-primary\", \"mysql\"]\n\
             reads = [\"redis-a\", \"redis-b\", \"search-primary\", \"mysql\"]\n",
            a_dir.path().join("data").display().to_string()
        ),
    )
    .expect("write A's config");
    let a_databases = a_databases.join(",");
    let shards = settings.mysql.logical_shards.to_string();
    let env = [
        ("MEMBER_CONFIG", config.to_str().expect("utf-8")),
        (
            "MEMBER__POSTGRES__URL",
            settings.postgres.url.expose_secret(),
        ),
        ("MEMBER__KAFKA__TOPIC", settings.kafka.topic.as_str()),
        ("MEMBER__MYSQL__DATABASES", a_databases.as_str()),
        ("MEMBER__MYSQL__LOGICAL_SHARDS", shards.as_str()),
        (
            "MEMBER__REDIS__A__URL",
            settings.redis.a.url.expose_secret(),
        ),
        (
            "MEMBER__REDIS__B__URL",
            settings.redis.b.url.expose_secret(),
        ),
        ("MEMBER__QUERY_API__LISTEN", a_query.as_str()),
        ("MEMBER__COMMAND_API__LISTEN", a_command.as_str()),
        ("MEMBER__PROJECTOR__MAX_WAIT_MS", "20"),
    ];
    let mut a = spawn_member(&["run"], &env);
    let a_url = |path: &str| format!("http://{a_query}{path}");

    let client = writer_client();
    let mut members = Vec::new();
    for i in 0..20 {
        let card = format!("{:012}", 700_000_000_000u64 + rand_suffix() + i);
        let id = register(&client, &b.command_url("/v1/members"), &card).await;
        members.push((id, card));
    }
    // Both centers projected them: each serves them from its own Redis.
    for (center, url, local) in [
        ("B", b.query_url(""), "redis-b"),
        ("A", a_url(""), "redis-a"),
    ] {
        for (id, _) in &members {
            let url = format!("{url}/v1/members/{id}");
            eventually(
                &format!("center {center} serves a member from {local}"),
                Duration::from_secs(60),
                || {
                    let (client, url) = (client.clone(), url.clone());
                    async move { read(&client, &url).await == Some((200, local.to_owned())) }
                },
            )
            .await;
        }
    }

    // Center A is lost: its process and its Redis, SIGKILLed.
    a.kill().expect("SIGKILL center A's member");
    a.wait().expect("reap");
    redis_a.stop();

    // B's order chain is its own stores first and never names A's search cluster.
    let status: Value = client
        .get(b.query_url("/admin/status"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(
        status["chains"]["order"],
        json!(["redis-b", "redis-a", "search-backup", "mysql"]),
        "{status}"
    );
    // Every order read succeeds, by id and by identity, from B's own stores.
    let mut served = std::collections::BTreeMap::<String, usize>::new();
    for round in 0..3 {
        for (id, card) in &members {
            for url in [
                b.query_url(&format!("/v1/members/{id}")),
                b.query_url(&format!("/v1/members?kind=elong_card&value={card}")),
            ] {
                let answer = read(&client, &url).await;
                let (status, from) = answer.unwrap_or_default();
                assert_eq!(status, 200, "round {round}: {url} answered {status}");
                assert!(
                    [
                        "redis-b",
                        "search-backup",
                        "mysql",
                        "near-cache",
                        "last-served"
                    ]
                    .contains(&from.as_str()),
                    "served from {from}, not a store of B"
                );
                *served.entry(from).or_default() += 1;
            }
        }
    }
    // Writes through B go on; B's projections serve them.
    let card = format!("{:012}", 710_000_000_000u64 + rand_suffix());
    let late = register(&client, &b.command_url("/v1/members"), &card).await;
    let url = b.query_url(&format!("/v1/members?kind=elong_card&value={card}"));
    eventually(
        "a member written after A died is served by B",
        Duration::from_secs(30),
        || {
            let (client, url) = (client.clone(), url.clone());
            async move { read(&client, &url).await.is_some_and(|(s, _)| s == 200) }
        },
    )
    .await;
    assert!(!late.is_empty());
    eprintln!("B served the order reads from: {served:?}");
    b.stop().await.expect("B stops");
}

/// Distinct identity values per run (the shared Redis and MariaDB are not the test's).
fn rand_suffix() -> u64 {
    (uuid::Uuid::new_v4().as_u128() % 1_000_000) as u64 * 100
}
