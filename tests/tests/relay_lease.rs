//! Two relay processes on one event store and topic: only the one holding the relay's lease
//! (a PostgreSQL advisory lock) publishes; SIGKILL it and the other takes over within seconds,
//! and the topic holds every event in member order.

use std::time::{Duration, Instant};

use member_domain::{Identity, MemberCommand};
use member_infra::event_store::commands::CommandService;
use member_tests::kafka::{assert_complete, read_topic, stored_events, test_topic, wait_for_relay};
use member_tests::postgres::fresh_event_store_with_url;
use member_tests::process::spawn_member;
use sqlx::PgPool;
use uuid::Uuid;

/// The application name of the session holding an advisory lock in this database.
async fn lease_holder(pool: &PgPool) -> Option<String> {
    sqlx::query_scalar(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted \
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_optional(pool)
    .await
    .expect("read pg_locks")
}

/// Sessions of this database opened by the process named `name`.
async fn sessions_of(pool: &PgPool, name: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND application_name = $1",
    )
    .bind(name)
    .fetch_one(pool)
    .await
    .expect("read pg_stat_activity")
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A child process killed (SIGKILL) when the test ends, passed or not.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn register(commands: &CommandService, range: std::ops::Range<u32>, tag: &str) {
    for i in range {
        let account =
            Identity::parse("tongcheng_account", &format!("{tag}-{i}"), None, None).unwrap();
        commands
            .execute(
                Uuid::now_v7(),
                MemberCommand::Register {
                    identities: vec![account],
                },
                None,
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_relay_waits_and_takes_over_when_the_first_is_sigkilled() {
    let (pool, url) = fresh_event_store_with_url().await;
    let kafka = test_topic(3);
    member_infra::kafka::ensure_topic(&kafka, &kafka.topic)
        .await
        .expect("topic");
    let tag = Uuid::new_v4().simple().to_string();
    let url_of = |name: &str| format!("{url}?application_name={name}");
    let (url_a, url_b) = (url_of("relay-a"), url_of("relay-b"));
    let env = |url: &str| {
        vec![
            ("MEMBER__POSTGRES__URL".to_owned(), url.to_owned()),
            ("MEMBER__KAFKA__TOPIC".to_owned(), kafka.topic.clone()),
        ]
    };
    let spawn = |url: &str| {
        let env = env(url);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Killed(spawn_member(&["serve", "relay"], &env))
    };

    let a = spawn(&url_a);
    wait_until(
        "relay-a holds the lease",
        Duration::from_secs(30),
        || async { lease_holder(&pool).await.as_deref() == Some("relay-a") },
    )
    .await;
    let b = spawn(&url_b);
    wait_until("relay-b is up", Duration::from_secs(30), || async {
        sessions_of(&pool, "relay-b").await > 0
    })
    .await;

    // While both run, one publishes: every event is on the topic exactly once.
    let commands = CommandService::new(pool.clone(), member_tests::vault());
    register(&commands, 0..40, &tag).await;
    let stored = stored_events(&pool).await;
    assert_eq!(
        stored.len(),
        80,
        "registered with an account: two events each"
    );
    wait_for_relay(&pool, &kafka.topic, Duration::from_secs(30)).await;
    let records = read_topic(&kafka, stored.len(), Duration::from_secs(30)).await;
    let mut seen: Vec<_> = records
        .iter()
        .map(|r| (r.event.member_id, r.event.version))
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(
        (records.len(), seen.len()),
        (80, 80),
        "every event once: the waiting relay published nothing"
    );
    assert_eq!(lease_holder(&pool).await.as_deref(), Some("relay-a"));

    drop(a); // SIGKILL
    let killed = Instant::now();
    wait_until("relay-b takes over", Duration::from_secs(10), || async {
        lease_holder(&pool).await.as_deref() == Some("relay-b")
    })
    .await;
    eprintln!("relay-b took over {:?} after the kill", killed.elapsed());

    register(&commands, 40..80, &tag).await;
    let stored = stored_events(&pool).await;
    wait_for_relay(&pool, &kafka.topic, Duration::from_secs(30)).await;
    drop(b);
    let records = read_topic(&kafka, stored.len(), Duration::from_secs(30)).await;
    assert_eq!(stored.len(), 160);
    assert_complete(&stored, &records);
}
