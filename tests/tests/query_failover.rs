//! The fail-over drill on the real stack: with order-class load running, take Redis A down, inject
//! a search-primary outage, take MariaDB down (and then Redis B): no order-class request fails
//! while a backend of its chain is healthy; restored, reads return to the preferred backend.
//! Marketing load runs beside it and never reaches the primary or backup cluster.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use member_api::app::Role;
use member_projections::Target;
use member_tests::app::{isolated_settings, spawn_app_with};
use member_tests::proxy::FaultProxy;
use member_tests::sink_contract::Ids;
use reqwest::{Client, StatusCode};
use serde_json::json;

#[derive(Default)]
struct Tally {
    served_from: BTreeMap<String, u64>,
    failures: Vec<String>,
}

async fn admin(client: &Client, url: &str, body: serde_json::Value) {
    let r = client
        .post(url)
        .bearer_auth("local-admin-key")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{url} {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_reads_survive_each_backend_going_down_and_return_when_restored() {
    let (mut settings, pool, data_dir) = isolated_settings().await;
    let redis_a = FaultProxy::start("127.0.0.1:6379".parse().unwrap()).await;
    let mariadb = FaultProxy::start("127.0.0.1:3306".parse().unwrap()).await;
    settings.redis.a.url = format!("redis://{}", redis_a.addr()).into();
    settings.mysql.url = format!("mysql://member:member@{}", mariadb.addr()).into();
    let mut roles = vec![Role::CommandApi, Role::QueryApi, Role::Relay];
    roles.extend(Target::ALL.map(Role::Projector));
    let app = spawn_app_with(settings, pool, data_dir, &roles).await;
    let client = member_tests::writer_client();

    // Members to read, each visible through the query API before the drill starts.
    let mut lookups = Vec::new();
    for _ in 0..20 {
        let ids = Ids::fresh();
        let r = client
            .post(app.command_url("/v1/members"))
            .json(
                &json!({"identities": [{"kind": "mobile", "value": ids.mobile.value()},
                                         {"kind": "elong_card", "value": ids.card.value()}]}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        lookups.push(format!(
            "/v1/members?kind=elong_card&value={}",
            ids.card.value()
        ));
    }
    let truth = app.truth().await;
    for target in Target::ALL {
        member_tests::app::wait_converged(
            app.reader(target).await.as_ref(),
            &truth,
            Duration::from_secs(30),
        )
        .await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let order = Arc::new(Mutex::new(Tally::default()));
    let load = |key: &'static str, tally: Arc<Mutex<Tally>>| {
        let (client, stop, lookups) = (client.clone(), stop.clone(), lookups.clone());
        let base = app.query_url("");
        tokio::spawn(async move {
            let mut i = 0usize;
            // Bounded: at most 100,000 requests or until told to stop.
            while !stop.load(Ordering::SeqCst) && i < 100_000 {
                let path = &lookups[i % lookups.len()];
                i += 1;
                let r = client
                    .get(format!("{base}{path}"))
                    .bearer_auth(key)
                    .send()
                    .await;
                let outcome = match r {
                    Ok(r) if r.status() == StatusCode::OK => Ok(r
                        .headers()
                        .get("x-served-from")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("?")
                        .to_owned()),
                    Ok(r) => Err(format!("{path}: {}", r.status())),
                    Err(e) => Err(format!("{path}: {e}")),
                };
                {
                    let mut t = tally.lock().unwrap();
                    match outcome {
                        Ok(from) => *t.served_from.entry(from).or_default() += 1,
                        Err(failure) => t.failures.push(failure),
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let order_load = load("local-order-key", order.clone());
    let marketing = Arc::new(Mutex::new(Tally::default()));
    let marketing_load = load("local-marketing-key", marketing.clone());

    // A phase lasts until it has answered a few hundred order requests (however long they take
    // while backends time out and breakers open).
    let phase = |name: &'static str| {
        let order = order.clone();
        async move {
            member_tests::eventually(
                &format!("{name}: 300 order requests"),
                Duration::from_secs(60),
                || {
                    let t = order.lock().unwrap();
                    let answered = t.served_from.values().sum::<u64>() + t.failures.len() as u64;
                    async move { answered >= 300 }
                },
            )
            .await;
            let mut t = order.lock().unwrap();
            let snapshot = std::mem::take(&mut t.served_from);
            assert!(
                t.failures.is_empty(),
                "{name}: order requests failed: {:?}",
                &t.failures[..t.failures.len().min(5)]
            );
            eprintln!("{name}: served from {snapshot:?}");
            snapshot
        }
    };
    // Where reads went among the backends: hot keys are also answered from the in-process near
    // cache, which is not a backend.
    let most = |served: &BTreeMap<String, u64>| {
        served
            .iter()
            .filter(|(b, _)| b.as_str() != "near-cache")
            .max_by_key(|(_, n)| **n)
            .map(|(b, _)| b.clone())
            .unwrap()
    };

    assert_eq!(most(&phase("healthy").await), "redis-a");
    redis_a.stop();
    phase("redis a down (settling)").await;
    assert_eq!(most(&phase("redis a down").await), "redis-b");
    admin(
        &client,
        &app.query_url("/admin/faults"),
        json!({"backend": "search-primary", "down": true}),
    )
    .await;
    mariadb.stop();
    assert_eq!(
        most(&phase("redis a, search primary and mariadb down").await),
        "redis-b"
    );
    admin(
        &client,
        &app.query_url("/admin/faults"),
        json!({"backend": "redis-b", "down": true}),
    )
    .await;
    assert_eq!(
        most(&phase("redis a and b, search primary and mariadb down").await),
        "search-backup"
    );

    redis_a.restore();
    mariadb.restore();
    admin(
        &client,
        &app.query_url("/admin/faults"),
        json!({"backend": "redis-b", "down": false}),
    )
    .await;
    admin(
        &client,
        &app.query_url("/admin/faults"),
        json!({"backend": "search-primary", "down": false}),
    )
    .await;
    // The breaker of Redis A half-opens after its open period and a probe closes it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let served = phase("restored").await;
        if most(&served) == "redis-a" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reads did not return to redis-a: {served:?}"
        );
    }

    stop.store(true, Ordering::SeqCst);
    order_load.await.unwrap();
    marketing_load.await.unwrap();
    let marketing_served = std::mem::take(&mut marketing.lock().unwrap().served_from);
    assert!(
        marketing_served.keys().all(|b| b == "redis-a"
            || b == "search-marketing"
            || b == "near-cache"
            || b == "last-served"),
        "{marketing_served:?}"
    );
    let metrics = client
        .get(app.query_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("member_query_backend_requests_total"))
    {
        if line.contains("class=\"marketing\"") {
            assert!(
                !line.contains("search-primary")
                    && !line.contains("search-backup")
                    && !line.contains("\"mysql\""),
                "marketing reached the order path: {line}"
            );
        }
    }
    assert!(
        metrics.contains("member_query_backend_requests_total"),
        "the per-backend counter is exported"
    );
    app.stop().await.unwrap();
}
