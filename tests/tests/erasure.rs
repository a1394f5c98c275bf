//! Erasure of a member's personal data (issue 21, docs/decisions/0033): the command API's
//! `POST/GET /v1/members/{id}/erasure`, `member erase`, the release of identities for others to
//! bind, every store deleting the member, and what remains in each store afterwards.

use std::time::Duration;

use futures::future::join_all;
use member_api::app::Role;
use member_domain::MemberStatus;
use member_projections::Target;
use member_tests::app::{spawn_app, wait_converged};
use member_tests::sink_contract::Ids;
use member_tests::{eventually, spawn_command_api, ADMIN_KEY};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;

fn admin() -> Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {ADMIN_KEY}").parse().unwrap(),
    );
    Client::builder().default_headers(headers).build().unwrap()
}

async fn send(r: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let r = r.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn identities_json(ids: &Ids) -> Value {
    json!([
        {"kind": "mobile", "value": ids.mobile.value()},
        {"kind": "wechat_openid", "value": ids.openid.value(), "app": "elong_mp",
         "unionid": ids.unionid.value()},
        {"kind": "elong_card", "value": ids.card.value()},
    ])
}

async fn register(client: &Client, url: String, identities: Value) -> String {
    let (status, body) = send(client.post(url).json(&json!({ "identities": identities }))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["member_id"].as_str().unwrap().to_owned()
}

/// The members of `identity_owners` rows still owned by `member`.
async fn owned_by(pool: &PgPool, member: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM identity_owners WHERE member_id = $1")
        .bind(member)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn erasure_is_accepted_once_idempotent_and_scoped() {
    let app = spawn_command_api().await;
    let (writer, admin) = (member_tests::writer_client(), admin());
    let ids = Ids::fresh();
    let id = register(&writer, app.url("/v1/members"), identities_json(&ids)).await;
    let path = format!("/v1/members/{id}/erasure");

    // The writer key has no `erase` scope; nothing is erased.
    let (status, body) = send(writer.post(app.url(&path))).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::FORBIDDEN, &json!("forbidden"))
    );
    let (status, body) = send(admin.get(app.url(&path))).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::NOT_FOUND, &json!("erasure_not_found"))
    );
    assert_eq!(owned_by(&app.pool, &id).await, 4);

    let (status, first) = send(admin.post(app.url(&path))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(first["member_id"], json!(id));
    assert!(first["accepted_at"].is_string(), "{first}");
    assert_eq!(owned_by(&app.pool, &id).await, 0, "identities released");

    // A second erasure answers the first receipt and appends nothing.
    let events = member_tests::postgres::event_count(&app.pool).await;
    let (status, again) = send(admin.post(app.url(&path))).await;
    assert_eq!((status, &again), (StatusCode::ACCEPTED, &first));
    assert_eq!(member_tests::postgres::event_count(&app.pool).await, events);

    // The erased member refuses every command, with a code that says not to retry.
    let (status, body) = send(
        writer
            .post(app.url(&format!("/v1/members/{id}/identities")))
            .json(&json!({"kind": "tongcheng_account", "value": "acct-1"})),
    )
    .await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::GONE, &json!("member_erased"))
    );

    // Without a relay nothing was published, so the values stay in the log for now.
    let purged = member_infra::event_store::erasure::purge_published(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        purged, 0,
        "nothing is purged before a relay published the erasure"
    );
    // Its data key stays until then (the relay must read the identities to tell the stores
    // which entries to delete); the values are sealed, never in the clear.
    let dump = event_store_dump(&app.pool).await;
    assert!(
        !dump.contains(ids.card.value()),
        "a value in the clear in the event store"
    );
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM member_keys WHERE member_id = $1")
        .bind(&id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(keys, 1, "the unpublished erasure's key is kept");

    // The receipt: accepted, no store applied it (no projector runs here).
    let (status, receipt) = send(admin.get(app.url(&path))).await;
    assert_eq!(status, StatusCode::OK, "{receipt}");
    assert_eq!(receipt["accepted_at"], first["accepted_at"]);
    assert_eq!(receipt["complete"], json!(false));
    assert_eq!(receipt["stores"].as_array().unwrap().len(), 6);

    // The history keeps who did what, not the values, and refuses to reveal them.
    let (status, history) = send(admin.get(app.url(&format!("/v1/members/{id}/history")))).await;
    assert_eq!(status, StatusCode::OK);
    let text = history.to_string();
    for value in [ids.mobile.value(), ids.card.value(), ids.unionid.value()] {
        assert!(!text.contains(value), "history shows an erased value");
    }
    assert!(text.contains("MemberErased"), "{text}");
    let (status, body) =
        send(admin.get(app.url(&format!("/v1/members/{id}/history?reveal=true")))).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::GONE, &json!("member_erased"))
    );

    // Unknown members: 404, nothing recorded.
    let unknown = uuid::Uuid::now_v7();
    let (status, body) = send(admin.post(app.url(&format!("/v1/members/{unknown}/erasure")))).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::NOT_FOUND, &json!("member_not_found"))
    );
    let (status, _) = send(admin.post(app.url("/v1/members/not-a-uuid/erasure"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Another member can bind every released identity.
    register(&writer, app.url("/v1/members"), identities_json(&ids)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_racing_binds_and_other_erasures_leaves_nothing_bound() {
    let app = spawn_command_api().await;
    let (writer, admin) = (member_tests::writer_client(), admin());
    for _round in 0..5 {
        let ids = Ids::fresh();
        let id = register(
            &writer,
            app.url("/v1/members"),
            json!([{"kind": "mobile", "value": ids.mobile.value()}]),
        )
        .await;
        let bind_url = app.url(&format!("/v1/members/{id}/identities"));
        let erase_url = app.url(&format!("/v1/members/{id}/erasure"));
        let binds = [
            json!({"kind": "elong_card", "value": ids.card.value()}),
            json!({"kind": "wechat_openid", "value": ids.openid.value(), "app": "elong_mp",
                   "unionid": ids.unionid.value()}),
            json!({"kind": "tongcheng_account", "value": format!("acct-{}", ids.card.value())}),
        ];
        let bind_futures = binds
            .iter()
            .map(|b| send(writer.post(&bind_url).json(b)))
            .collect::<Vec<_>>();
        let erase_futures = (0..3)
            .map(|_| send(admin.post(&erase_url)))
            .collect::<Vec<_>>();
        let (bound, erased) = tokio::join!(join_all(bind_futures), join_all(erase_futures));
        for (status, body) in &bound {
            assert!(
                *status == StatusCode::OK
                    || (*status == StatusCode::GONE && body["error"] == "member_erased"),
                "a bind either happened before the erasure or was refused: {status} {body}"
            );
        }
        let accepted: Vec<&Value> = erased
            .iter()
            .map(|(s, b)| {
                assert_eq!(*s, StatusCode::ACCEPTED, "{b}");
                &b["accepted_at"]
            })
            .collect();
        assert!(
            accepted.windows(2).all(|w| w[0] == w[1]),
            "one receipt: {accepted:?}"
        );
        // Whatever was bound before the erasure was released by it.
        assert_eq!(owned_by(&app.pool, &id).await, 0);
        let erasures: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = 'MemberErased'",
        )
        .bind(&id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!(erasures, 1);
        // And every identity can be bound by someone else.
        register(
            &writer,
            app.url("/v1/members"),
            json!([
                {"kind": "mobile", "value": ids.mobile.value()},
                {"kind": "elong_card", "value": ids.card.value()},
                {"kind": "wechat_openid", "value": ids.openid.value(), "app": "elong_mp",
                 "unionid": ids.unionid.value()},
            ]),
        )
        .await;
    }
}

/// Everything stored in the test's MariaDB databases, as text (mysqldump).
fn mysql_dump(settings: &member_infra::config::Settings) -> String {
    let rest = settings
        .mysql
        .url
        .expose_secret()
        .trim_start_matches("mysql://");
    let (credentials, address) = rest.split_once('@').expect("user@host in mysql.url");
    let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
    let address = address.trim_end_matches('/');
    let (host, port) = address.split_once(':').unwrap_or((address, "3306"));
    let out = std::process::Command::new("mysqldump")
        .args(["-h", host, "-P", port, "-u", user])
        .arg(format!("-p{password}"))
        .args(["--skip-comments", "--skip-extended-insert", "--databases"])
        .args(&settings.mysql.databases)
        .output()
        .expect("mysqldump runs (Debian package mariadb-client, installed with mariadb-server)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The Redis keys that name `value` (SCAN), and the member's document, in both centers.
async fn redis_dump(
    settings: &member_infra::config::Settings,
    value: &str,
    member: &str,
) -> String {
    let mut dump = String::new();
    for url in [&settings.redis.a.url, &settings.redis.b.url] {
        let mut conn = member_tests::redis::raw(url.expose_secret()).await;
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("*{value}*"))
                .arg("COUNT")
                .arg(10_000)
                .query_async(&mut conn)
                .await
                .unwrap();
            dump.extend(keys.iter().map(|k| format!("{k}\n")));
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let doc: Vec<String> = redis::cmd("HGETALL")
            .arg(format!("m:{{{member}}}"))
            .query_async(&mut conn)
            .await
            .unwrap();
        dump.push_str(&doc.join("\n"));
    }
    dump
}

/// Every document of the test's indices on the three clusters, one line per hit.
async fn search_dump(settings: &member_infra::config::Settings) -> String {
    let mut dump = String::new();
    let es = &settings.search.elasticsearch;
    for url in [&es.primary_url, &es.backup_url, &es.marketing_url] {
        let body = reqwest::get(format!(
            "{}/{}*/_search?size=10000&expand_wildcards=all",
            url.expose_secret(),
            es.index_prefix
        ))
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
        let hits = body["hits"]["hits"].as_array().expect("search hits");
        for hit in hits {
            dump.push_str(&format!("{hit}\n"));
        }
    }
    dump
}

/// What every table of the event store holds.
async fn event_store_dump(pool: &PgPool) -> String {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE'
           AND table_name <> '_sqlx_migrations'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut dump = String::new();
    for table in tables {
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT t::text FROM \"{table}\" t"))
            .fetch_all(pool)
            .await
            .unwrap();
        dump.push_str(&rows.join("\n"));
    }
    dump
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_store_forgets_the_member_and_the_recycled_mobile_is_the_new_holders() {
    let mut roles = vec![Role::CommandApi, Role::QueryApi, Role::Relay];
    roles.extend(Target::ALL.map(Role::Projector));
    let app = spawn_app(&roles).await;
    let (writer, admin) = (member_tests::writer_client(), admin());
    let ids = Ids::fresh();
    let erased = register(
        &writer,
        app.command_url("/v1/members"),
        identities_json(&ids),
    )
    .await;
    let truth = app.truth().await;
    for target in Target::ALL {
        let reader = app.reader(target).await;
        wait_converged(reader.as_ref(), &truth, Duration::from_secs(30)).await;
    }

    // The query API serves the member before the erasure (so it remembers what it served).
    for key in ["local-order-key", "local-marketing-key"] {
        let r = Client::new()
            .get(app.query_url(&format!(
                "/v1/members?kind=elong_card&value={}",
                ids.card.value()
            )))
            .header("Authorization", format!("Bearer {key}"));
        let (status, body) = send(r).await;
        assert_eq!(
            (status, &body["member_id"]),
            (StatusCode::OK, &json!(erased))
        );
    }

    let (status, accepted) =
        send(admin.post(app.command_url(&format!("/v1/members/{erased}/erasure")))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    // The carrier recycles the mobile: a new member binds it.
    let holder = register(
        &writer,
        app.command_url("/v1/members"),
        json!([{"kind": "mobile", "value": ids.mobile.value()}]),
    )
    .await;

    let truth = app.truth().await;
    let erased_id: uuid::Uuid = erased.parse().unwrap();
    let holder_id: uuid::Uuid = holder.parse().unwrap();
    assert_eq!(truth[&erased_id].status, MemberStatus::Erased);
    for target in Target::ALL {
        let reader = app.reader(target).await;
        wait_converged(reader.as_ref(), &truth, Duration::from_secs(30)).await;
        let found = reader.by_identity(&ids.mobile.key()).await.unwrap();
        assert_eq!(
            found.map(|d| d.member_id),
            Some(holder_id),
            "{target}: the recycled mobile is the new holder's"
        );
        for identity in [&ids.card, &ids.unionid, &ids.openid] {
            assert_eq!(
                reader.by_identity(&identity.key()).await.unwrap(),
                None,
                "{target} still finds an erased identity"
            );
        }
    }

    // The query API: the erased member is not found, by a former identity (first, before a
    // lookup by id shows this process the tombstone) or by id; the recycled mobile leads to its
    // new holder (order and marketing callers alike).
    for key in ["local-order-key", "local-marketing-key"] {
        let reader = Client::new();
        let get = |path: String| {
            reader
                .get(app.query_url(&path))
                .header("Authorization", format!("Bearer {key}"))
        };
        let (status, body) = send(get(format!(
            "/v1/members?kind=elong_card&value={}",
            ids.card.value()
        )))
        .await;
        assert_eq!(
            (status, &body["error"]),
            (StatusCode::NOT_FOUND, &json!("member_not_found"))
        );
        let (status, body) = send(get(format!("/v1/members/{erased}"))).await;
        assert_eq!(
            (status, &body["error"]),
            (StatusCode::NOT_FOUND, &json!("member_not_found"))
        );
        let (status, body) = send(get(format!(
            "/v1/members?kind=mobile&value={}",
            ids.mobile.value().replace('+', "%2B")
        )))
        .await;
        assert_eq!(
            (status, &body["member_id"]),
            (StatusCode::OK, &json!(holder)),
            "{body}"
        );
    }

    // The receipt fills in as each projector applies the erasure.
    let url = app.command_url(&format!("/v1/members/{erased}/erasure"));
    eventually(
        "every store applied the erasure",
        Duration::from_secs(30),
        || {
            let (admin, url) = (admin.clone(), url.clone());
            async move { send(admin.get(url)).await.1["complete"] == json!(true) }
        },
    )
    .await;
    let (_, receipt) = send(admin.get(&url)).await;
    assert_eq!(receipt["accepted_at"], accepted["accepted_at"]);
    for store in receipt["stores"].as_array().unwrap() {
        assert!(store["applied_at"].is_string(), "{store}");
    }

    // Dumps of every store: the erased member's values that nobody else holds are gone. Each
    // dump does hold the recycled mobile (the new holder's), which shows it is a real dump.
    let dumps = [
        ("mysql", mysql_dump(&app.settings)),
        ("search", search_dump(&app.settings).await),
        ("event store", event_store_dump(&app.pool).await),
    ];
    for (store, dump) in &dumps[..2] {
        assert!(
            dump.contains(ids.mobile.value()),
            "{store}: the dump misses the new holder"
        );
    }
    assert!(
        dumps[2].1.contains(&erased),
        "the event store dump misses the receipt"
    );
    // The event store holds no identity value in the clear, the new holder's included
    // (crypto-shredding: sealed with each member's key); the holder's history opens it, the
    // erased member's key is gone.
    assert!(
        !dumps[2].1.contains(ids.mobile.value()),
        "the event store holds a mobile in the clear"
    );
    let vault = member_tests::vault();
    let history =
        member_infra::event_store::members::history_of(&app.pool, &vault, holder.parse().unwrap())
            .await
            .unwrap();
    assert!(
        format!("{history:?}").contains(ids.mobile.value()),
        "the holder's own history opens the sealed mobile"
    );
    eventually(
        "the erased member's data key is destroyed",
        Duration::from_secs(30),
        || {
            let (pool, erased) = (app.pool.clone(), erased.clone());
            async move {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM member_keys WHERE member_id = $1",
                )
                .bind(erased)
                .fetch_one(&pool)
                .await
                .unwrap()
                    == 0
            }
        },
    )
    .await;
    let holder_keys = redis_dump(&app.settings, ids.mobile.value(), &holder).await;
    assert!(
        holder_keys.contains(ids.mobile.value()),
        "redis: the dump misses the new holder"
    );
    for value in [ids.card.value(), ids.unionid.value(), ids.openid.value()] {
        let redis = redis_dump(&app.settings, value, &erased).await;
        assert!(!redis.contains(value), "redis still holds an erased value");
        for (store, dump) in &dumps {
            assert!(!dump.contains(value), "{store} still holds an erased value");
        }
    }
    // The mobile is the new member's only: the erased member's documents do not name it.
    let redis = redis_dump(&app.settings, "no-such-key", &erased).await;
    assert!(
        redis.contains("erased"),
        "redis: the erased member's tombstone: {redis}"
    );
    assert!(
        !redis.contains(ids.mobile.value()),
        "redis: the erased document names the mobile"
    );
    for (store, dump) in &dumps[..2] {
        let tombstone = dump
            .lines()
            .filter(|l| l.contains(&erased))
            .collect::<String>();
        assert!(
            !tombstone.contains(ids.mobile.value()),
            "{store}: the erased document names the mobile"
        );
    }

    // A rebuild and a verify --repair of any store do not bring the member back.
    let ran = member_tests::tools::run_member(
        &app.settings,
        &[
            "verify",
            "--target",
            "mysql",
            "--repair",
            "--settle-ms",
            "0",
            "--json",
        ],
    )
    .await;
    assert_eq!(ran.code, 0, "{}\n{}", ran.stdout, ran.stderr);
    let reader = app.reader(Target::Mysql).await;
    let doc = reader
        .by_id(erased_id)
        .await
        .unwrap()
        .expect("the tombstone");
    assert_eq!(doc.status, MemberStatus::Erased);
    assert!(doc.identities.is_empty() && doc.released.is_empty());
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_erase_does_the_same_for_operators() {
    let (settings, pool, _data_dir) = member_tests::app::isolated_settings().await;
    let vault = member_tests::vault();
    let commands =
        member_infra::event_store::commands::CommandService::new(pool.clone(), vault.clone());
    let tag = member_tests::unique("er");
    let member = member_tests::tools::register(&commands, &tag, 1).await;
    let id = member.to_string();

    let first = member_tests::tools::run_member(&settings, &["erase", "--member-id", &id]).await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    let receipt = first.json();
    assert_eq!(receipt["member_id"], json!(id));
    assert_eq!(owned_by(&pool, &id).await, 0, "identities released");
    let again = member_tests::tools::run_member(&settings, &["erase", "--member-id", &id]).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(
        again.json(),
        receipt,
        "a second erasure prints the first receipt"
    );
    let stored = member_infra::event_store::erasure::receipt(&pool, member)
        .await
        .unwrap()
        .expect("a receipt");
    // Registered, account and card bound, both released, erased.
    assert_eq!(stored.version, 6);

    let unknown = uuid::Uuid::now_v7().to_string();
    let ran = member_tests::tools::run_member(&settings, &["erase", "--member-id", &unknown]).await;
    assert_eq!(ran.code, 3, "{}", ran.stderr);
    let ran = member_tests::tools::run_member(&settings, &["erase", "--member-id", "nope"]).await;
    assert_eq!(ran.code, 2, "clap refuses a malformed id: {}", ran.stderr);
    assert!(!member_infra::event_store::erasure::is_erased(
        &pool,
        uuid::Uuid::parse_str(&unknown).unwrap()
    )
    .await
    .unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasures_during_a_rebuild_stay_erased_and_a_rebuild_does_not_bring_them_back() {
    const TARGETS: [Target; 2] = [Target::Mysql, Target::SearchPrimary];
    let (settings, pool, data_dir) = member_tests::app::isolated_settings().await;
    let mut roles = vec![Role::Relay];
    roles.extend(TARGETS.map(Role::Projector));
    let app =
        member_tests::app::spawn_app_with(settings.clone(), pool.clone(), data_dir, &roles).await;
    let vault = member_tests::vault();
    let commands =
        member_infra::event_store::commands::CommandService::new(pool.clone(), vault.clone());
    let tag = member_tests::unique("erb");
    let mut members = Vec::new();
    for i in 0..40 {
        members.push(member_tests::tools::register(&commands, &tag, i).await);
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

    // Erase half of the members, one every 20 ms, while both stores are rebuilt.
    let started = tokio::time::Instant::now();
    let eraser = tokio::spawn({
        let (commands, pool, victims) = (commands.clone(), pool.clone(), members[..20].to_vec());
        async move {
            let cause = member_infra::event_store::cause::Cause::new("test", "rebuild-race");
            let mut done = Vec::new();
            for m in victims {
                member_infra::event_store::erasure::erase(&commands, &pool, &cause, m)
                    .await
                    .unwrap();
                done.push(tokio::time::Instant::now());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            done
        }
    });
    let ran = member_tests::tools::run_member(
        &settings,
        &[
            "rebuild",
            "--target",
            "mysql,search-primary",
            "--json",
            "--batch",
            "3",
        ],
    )
    .await;
    let finished = tokio::time::Instant::now();
    let done = eraser.await.unwrap();
    assert_eq!(ran.code, 0, "rebuild failed: {}", ran.stderr);
    let during = done
        .iter()
        .filter(|t| **t > started && **t < finished)
        .count();
    assert!(
        during >= 2,
        "erasures overlapped the rebuild: {during} of 20"
    );

    erased_half(&app, &TARGETS, &members).await;
    // The mysql dump names none of the erased members' cards or accounts.
    let dump = mysql_dump(&settings);
    for m in &members[..20] {
        let line = dump
            .lines()
            .filter(|l| l.contains(&m.to_string()))
            .collect::<String>();
        assert!(line.contains("erased"), "the tombstone of {m}");
    }
    assert!(
        !dump.contains(&format!("{tag}-0")),
        "an erased account is still in mysql"
    );
    assert!(
        dump.contains(&format!("{tag}-39")),
        "the dump holds the live members"
    );

    // Once the relay published the erasures, their values leave the log; the live members'
    // stay.
    eventually(
        "every erasure purged from the log",
        Duration::from_secs(30),
        || {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM member_erasures WHERE purged_at IS NOT NULL",
                )
                .fetch_one(&pool)
                .await
                .unwrap()
                    == 20
            }
        },
    )
    .await;
    let in_log = |value: String| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE payload::text LIKE $1")
                .bind(format!("%\"{value}\"%"))
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    for i in 0..20 {
        assert_eq!(
            in_log(format!("{tag}-{i}")).await,
            0,
            "erased account {i} is in the log"
        );
    }
    // The live members' values are not in the clear either: sealed with their keys, which
    // stay; the erased members' keys are destroyed.
    assert_eq!(
        in_log(format!("{tag}-39")).await,
        0,
        "a live account is in the log in the clear"
    );
    let keys: Vec<String> = sqlx::query_scalar("SELECT member_id FROM member_keys")
        .fetch_all(&pool)
        .await
        .unwrap();
    for (i, m) in members.iter().enumerate() {
        assert_eq!(
            keys.contains(&m.to_string()),
            i >= 20,
            "member {i}: a data key exactly when not erased"
        );
    }
    let live = member_infra::event_store::replay::document_of(&pool, &vault, members[39])
        .await
        .unwrap()
        .expect("a live member");
    assert!(
        live.identities
            .iter()
            .any(|i| i.key.value() == format!("{tag}-39")),
        "the live member's sealed account opens with its key"
    );
    // Nor are they owner rows any more (nobody else took them).
    let owner_rows = |value: String| {
        let pool = pool.clone();
        let reference = vault.identity_ref_of_text(&format!("tongcheng_account:{value}"));
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM identity_owners WHERE identity_key = $1",
            )
            .bind(reference)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    for i in 0..20 {
        assert_eq!(
            owner_rows(format!("{tag}-{i}")).await,
            0,
            "erased account {i} is an owner row"
        );
    }
    assert_eq!(
        owner_rows(format!("{tag}-39")).await,
        1,
        "a live account is an owner row"
    );

    // A second rebuild (from the redacted log), and a verify: still erased.
    let ran = member_tests::tools::run_member(
        &settings,
        &["rebuild", "--target", "mysql,search-primary", "--json"],
    )
    .await;
    assert_eq!(ran.code, 0, "rebuild failed: {}", ran.stderr);
    erased_half(&app, &TARGETS, &members).await;
    for target in TARGETS {
        let ran = member_tests::tools::run_member(
            &settings,
            &["verify", "--target", target.as_str(), "--json"],
        )
        .await;
        assert_eq!(ran.code, 0, "{target}: {}\n{}", ran.stdout, ran.stderr);
    }
    app.stop().await.unwrap();
}

/// Every store of `targets` serves the truth, where the first half of `members` are tombstones
/// that no identity leads to, and the second half are live.
async fn erased_half(
    app: &member_tests::app::TestStack,
    targets: &[Target],
    members: &[uuid::Uuid],
) {
    let truth = app.truth().await;
    for target in targets {
        let reader = app.reader(*target).await;
        wait_converged(reader.as_ref(), &truth, Duration::from_secs(30)).await;
        for (i, m) in members.iter().enumerate() {
            let doc = reader
                .by_id(*m)
                .await
                .unwrap()
                .expect("every member is there");
            if i < members.len() / 2 {
                assert_eq!(doc.status, MemberStatus::Erased, "{target}: member {i}");
                assert!(doc.identities.is_empty() && doc.released.is_empty());
            } else {
                assert_eq!(doc.status, MemberStatus::Active, "{target}: member {i}");
                for identity in &doc.identities {
                    let found = reader.by_identity(&identity.key).await.unwrap();
                    assert_eq!(found.map(|d| d.member_id), Some(*m), "{target}: member {i}");
                }
            }
        }
    }
}
