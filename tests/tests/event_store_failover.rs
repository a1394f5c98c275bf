//! The event store across two centers (ADR 0037), on a private Patroni cluster of its own
//! (scripts/pg-ha.sh: nodes in centers A and B, etcd in A, B and the witness, each center in its
//! own network namespace):
//!
//! - promotion under the relay: commands flow through the command API and the relay publishes
//!   them while center A's PostgreSQL and Patroni are SIGKILLed; B is promoted, commands go on
//!   without a restart, every acknowledged command's events are in the event store, and the topic
//!   holds every stored event in per-member order;
//! - split-brain refusal: center A cut off while its processes run stops taking writes, B takes
//!   over, and after the heal A is B's replica.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use member_api::app::Role;
use member_tests::app::{isolated_settings_on, spawn_app_with};
use member_tests::eventually;
use member_tests::kafka::{assert_complete, read_topic, stored_events, wait_for_relay};
use member_tests::pg_ha::{Center, PrivatePgHa};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

/// A command never takes longer than this, whatever the event store does: a slower answer is a
/// hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Default)]
struct Load {
    /// (member, version) of every command answered 2xx.
    acked: Vec<(Uuid, u64)>,
    /// 503s and refused connections, each retried with the same idempotency key.
    unavailable: usize,
    /// Any other answer: none is expected.
    unexpected: Vec<String>,
    /// When each 2xx arrived.
    acked_at: Vec<Instant>,
}

impl Load {
    /// The longest time without any 2xx: the write path's unavailability.
    fn longest_gap(&self) -> Duration {
        let mut at = self.acked_at.clone();
        at.sort();
        at.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
    }
}

/// Sends `body` to `path` until the answer is neither a 503 nor a `409 conflict` (both say "retry"),
/// with the same idempotency key each time; records the outcome in `load`.
async fn command(
    client: &reqwest::Client,
    url: &str,
    body: Value,
    load: &Mutex<Load>,
    stop: &AtomicBool,
) -> Option<Value> {
    let key = Uuid::new_v4().to_string();
    loop {
        let started = Instant::now();
        let sent = client
            .post(url)
            .header("Idempotency-Key", &key)
            .json(&body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                let mut load = load.lock().unwrap();
                load.unexpected
                    .push(format!("no answer after {:?}: {e}", started.elapsed()));
                return None;
            }
        };
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            let member = Uuid::parse_str(answer["member_id"].as_str().unwrap()).unwrap();
            let version = answer["version"].as_u64().unwrap();
            let mut load = load.lock().unwrap();
            load.acked.push((member, version));
            load.acked_at.push(Instant::now());
            return Some(answer);
        }
        let retry = status == StatusCode::SERVICE_UNAVAILABLE
            || (status == StatusCode::CONFLICT && answer["error"] == "conflict");
        if !retry {
            load.lock()
                .unwrap()
                .unexpected
                .push(format!("{status} {answer}"));
            return None;
        }
        load.lock().unwrap().unavailable += 1;
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One writer: registers members and binds two more identities to each, one command at a time.
async fn writer(base: String, worker: usize, load: Arc<Mutex<Load>>, stop: Arc<AtomicBool>) {
    let client = reqwest::Client::builder()
        .default_headers(
            [(
                reqwest::header::AUTHORIZATION,
                reqwest::header::HeaderValue::from_static("Bearer local-writer-key"),
            )]
            .into_iter()
            .collect(),
        )
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let register = json!({"identities": [{"kind": "tongcheng_account", "value": format!("tc-{worker}-{i}")}]});
        let Some(answer) = command(
            &client,
            &format!("{base}/v1/members"),
            register,
            &load,
            &stop,
        )
        .await
        else {
            continue;
        };
        let member = answer["member_id"].as_str().unwrap().to_owned();
        let bind = format!("{base}/v1/members/{member}/identities");
        let account = json!({"kind": "elong_account", "value": format!("el-{worker}-{i}")});
        let card = json!({"kind": "elong_card", "value": format!("{worker}{i:09}")});
        for body in [account, card] {
            if command(&client, &bind, body, &load, &stop).await.is_none() {
                return;
            }
        }
    }
}

fn acked(load: &Mutex<Load>) -> usize {
    load.lock().unwrap().acked.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_under_the_relay_loses_and_reorders_nothing() {
    if std::env::var_os("RUST_LOG").is_some() {
        member_api::telemetry::init_logs();
    }
    let cluster = PrivatePgHa::start().await;
    assert_eq!(cluster.leader().await, Some(Center::A));
    // The application of center B: its command API and relay reach the event store through B's
    // endpoint, which follows the leader.
    let (pool, url) = cluster.fresh_event_store(Center::B).await;
    let (settings, pool, data_dir) = isolated_settings_on(pool, url);
    let kafka = settings.kafka.clone();
    let app = spawn_app_with(
        settings,
        pool.clone(),
        data_dir,
        &[Role::CommandApi, Role::Relay],
    )
    .await;

    let load = Arc::new(Mutex::new(Load::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| tokio::spawn(writer(app.command_url(""), w, load.clone(), stop.clone())))
        .collect();
    eventually(
        "commands acknowledged through A",
        Duration::from_secs(30),
        || async { acked(&load) >= 40 },
    )
    .await;

    // Center A's PostgreSQL and Patroni die; its etcd member and HAProxy stay.
    let before = acked(&load);
    let killed = Instant::now();
    cluster.kill_node(Center::A).await;
    eventually("B is promoted", Duration::from_secs(60), || async {
        cluster.leader().await == Some(Center::B)
    })
    .await;
    let promoted = killed.elapsed();
    eventually(
        "commands acknowledged again after the promotion, without a restart",
        Duration::from_secs(60),
        || async { acked(&load) >= before + 60 },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let load = Arc::try_unwrap(load).ok().unwrap().into_inner().unwrap();
    let gap = load.longest_gap();
    println!(
        "promotion {promoted:?} after the kill; writes unavailable for {} ms; {} commands \
         acknowledged ({before} before the kill), {} answered 503/conflict and retried",
        gap.as_millis(),
        load.acked.len(),
        load.unavailable
    );
    // The goal of issue 22 for the loss of a center.
    assert!(
        gap <= Duration::from_secs(30),
        "no write acknowledged for {gap:?}"
    );
    assert!(
        load.unexpected.is_empty(),
        "every answer is a 2xx or a retryable 503/409 within {REQUEST_TIMEOUT:?}; {} were not, e.g. {:?}",
        load.unexpected.len(),
        &load.unexpected[..load.unexpected.len().min(3)]
    );

    // Every acknowledged command is in the event store (now B's node).
    let stored = stored_events(&pool).await;
    let lost: Vec<_> = load
        .acked
        .iter()
        .filter(|(member, version)| !stored.contains_key(&(*member, *version)))
        .collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");

    // The relay, which lost its connection and its lease with A, publishes everything, each
    // member in order, across the promotion.
    wait_for_relay(&pool, &kafka.topic, Duration::from_secs(60)).await;
    let records = read_topic(&kafka, stored.len(), Duration::from_secs(60)).await;
    assert_complete(&stored, &records);
    // And nothing that is not stored (a record of a commit the old leader made alone).
    let on_topic: BTreeSet<(Uuid, u64)> = records
        .iter()
        .map(|r| (r.event.member_id, r.event.version))
        .collect();
    let extra: Vec<_> = on_topic
        .iter()
        .filter(|k| !stored.contains_key(k))
        .collect();
    assert!(extra.is_empty(), "published but not stored: {extra:?}");
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_center_a_refuses_writes_and_rejoins_as_a_replica() {
    let cluster = PrivatePgHa::start().await;
    assert_eq!(cluster.leader().await, Some(Center::A));
    let url = cluster.url(Center::A, "member").await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE IF NOT EXISTS split_brain (at text PRIMARY KEY)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO split_brain VALUES ('before the cut')")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    // A is cut off: its etcd member, Patroni, PostgreSQL and HAProxy keep running.
    cluster.cut(Center::A).await;
    eventually("B takes over", Duration::from_secs(60), || async {
        cluster.leader().await == Some(Center::B)
    })
    .await;

    // A client inside center A writes straight to A's node: never accepted. While A still
    // believes it leads, the commit waits for B (its synchronous standby) and is never
    // acknowledged; once Patroni demoted A for losing the DCS, the write is refused outright.
    let mut attempts = 0;
    eventually("A refuses writes", Duration::from_secs(60), || {
        attempts += 1;
        let sql = format!("INSERT INTO split_brain VALUES ('on A, attempt {attempts}')");
        let cluster = &cluster;
        async move {
            match cluster
                .sql_on_node(Center::A, &sql, Duration::from_secs(3))
                .await
            {
                Ok(out) => panic!("the cut-off A accepted a write: {out}"),
                Err(why) => why.contains("read-only") || why.contains("shutting down"),
            }
        }
    })
    .await;
    eventually("Patroni demoted A", Duration::from_secs(60), || async {
        let role = cluster.role(Center::A).await;
        !role.is_empty() && role != "master" && role != "primary"
    })
    .await;

    // B takes writes through its endpoint once HAProxy's next check (every 500 ms) has seen the
    // promotion; until then B's endpoint has no server to forward to.
    let url_b = cluster.url(Center::B, "member").await;
    eventually("B's endpoint takes writes", Duration::from_secs(30), || {
        let url_b = url_b.clone();
        async move {
            use sqlx::Connection as _;
            let Ok(mut conn) = sqlx::PgConnection::connect(&url_b).await else {
                return false;
            };
            sqlx::query(
                "INSERT INTO split_brain VALUES ('on B, during the cut') ON CONFLICT DO NOTHING",
            )
            .execute(&mut conn)
            .await
            .is_ok()
        }
    })
    .await;
    let on_b = sqlx::PgPool::connect(&url_b).await.unwrap();

    // What B holds: the write from before the cut and its own; nothing A was sent while cut off.
    let rows: Vec<String> = sqlx::query_scalar("SELECT at FROM split_brain ORDER BY at")
        .fetch_all(&on_b)
        .await
        .unwrap();
    assert_eq!(rows, ["before the cut", "on B, during the cut"]);

    // Healed, A follows B (rewound if it wrote anything B does not have) and has B's write; B
    // keeps the lead. (Debian's Patroni 3.0.2 let a healed former leader put its leader key back
    // over B's about one run in three; patroni/patroni#2689, in the PyPI Patroni pg-ha.sh
    // installs, makes that update conditional on the key still being its own.)
    cluster.heal(Center::A).await;
    eventually(
        "A rejoins as B's replica",
        // A rewind and a restart of A's PostgreSQL under Patroni's loop: about 20 s on an idle
        // machine, several times that when the cores are shared.
        Duration::from_secs(240),
        || async {
            cluster.role(Center::A).await == "replica"
                && cluster
                    .sql_on_node(
                        Center::A,
                        "SELECT count(*) FROM split_brain WHERE at = 'on B, during the cut'",
                        Duration::from_secs(3),
                    )
                    .await
                    .is_ok_and(|n| n == "1")
        },
    )
    .await;
    assert_eq!(cluster.leader().await, Some(Center::B));
    let rows: Vec<String> = sqlx::query_scalar("SELECT at FROM split_brain ORDER BY at")
        .fetch_all(&on_b)
        .await
        .unwrap();
    assert_eq!(rows, ["before the cut", "on B, during the cut"]);
    on_b.close().await;
}
