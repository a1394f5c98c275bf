//! Kafka helpers: per-test topics, reading a whole topic, and the ordering check.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use member_infra::config::KafkaSettings;
use member_projections::MemberRecord;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message};
use uuid::Uuid;

/// Kafka settings with a topic of its own for one test.
pub fn test_topic(partitions: u32) -> KafkaSettings {
    let mut kafka = crate::settings().kafka;
    kafka.topic = crate::unique("member-test-events");
    kafka.partitions = partitions;
    kafka
}

/// Reads the topic from the beginning until `expected` records were read and then nothing more
/// arrives for a second, or `timeout` passes.
pub async fn read_topic(
    kafka: &KafkaSettings,
    expected: usize,
    timeout: Duration,
) -> Vec<MemberRecord> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", crate::unique("member-test-reader"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&kafka.topic]).expect("subscribe");
    let deadline = tokio::time::Instant::now() + timeout;
    let mut records = Vec::new();
    loop {
        let wait = if records.len() >= expected {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(5)
        };
        match tokio::time::timeout(wait, consumer.recv()).await {
            Ok(Ok(m)) => records
                .push(MemberRecord::from_json(m.payload().expect("payload")).expect("a record")),
            Ok(Err(e)) => panic!("consuming: {e}"),
            Err(_) if records.len() >= expected => break,
            Err(_) => {}
        }
        if tokio::time::Instant::now() > deadline {
            break;
        }
    }
    records
}

/// Checks per-member order on the topic: duplicates are allowed, but a version may only appear
/// after every lower version of its member appeared (no record ever overtakes an earlier one).
pub fn check_member_order(records: &[MemberRecord]) -> Result<(), String> {
    let mut highest: HashMap<Uuid, u64> = HashMap::new();
    for r in records {
        let seen = highest.entry(r.event.member_id).or_default();
        if r.event.version > *seen + 1 {
            return Err(format!(
                "member {}: version {} arrived before version {}",
                r.event.member_id,
                r.event.version,
                *seen + 1
            ));
        }
        *seen = (*seen).max(r.event.version);
        if r.document.version != r.event.version {
            return Err(format!(
                "record version {} carries document version {}",
                r.event.version, r.document.version
            ));
        }
    }
    Ok(())
}

/// Every (member, version) of the event store.
pub async fn stored_events(pool: &sqlx::PgPool) -> BTreeMap<(Uuid, u64), ()> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT aggregate_id, sequence FROM events WHERE aggregate_type = 'Member'")
            .fetch_all(pool)
            .await
            .expect("read events");
    rows.into_iter()
        .map(|(id, s)| ((Uuid::parse_str(&id).unwrap(), s as u64), ()))
        .collect()
}

/// Asserts the topic holds every stored event at least once, in per-member order.
pub fn assert_complete(stored: &BTreeMap<(Uuid, u64), ()>, records: &[MemberRecord]) {
    let on_topic: std::collections::BTreeSet<(Uuid, u64)> = records
        .iter()
        .map(|r| (r.event.member_id, r.event.version))
        .collect();
    let missing: Vec<_> = stored.keys().filter(|k| !on_topic.contains(k)).collect();
    assert!(
        missing.is_empty(),
        "{} events missing from the topic, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    check_member_order(records).unwrap();
}

/// The last event of the store in commit order: where a caught-up relay's checkpoint stands.
pub async fn store_head(pool: &sqlx::PgPool) -> member_infra::relay::Checkpoint {
    let (txid, position): (String, i64) = sqlx::query_as(
        "SELECT txid::text, position FROM events ORDER BY events.txid DESC, events.position DESC LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .expect("the store holds events");
    member_infra::relay::Checkpoint {
        txid: txid.parse().expect("xid8 is a number"),
        position,
    }
}

/// Waits until the relay named `relay` has published everything up to the store's head.
pub async fn wait_for_relay(pool: &sqlx::PgPool, relay: &str, timeout: Duration) {
    let head = store_head(pool).await;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let at = member_infra::relay::Checkpoint::load(pool, relay)
            .await
            .expect("checkpoint");
        if at == head {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "relay did not catch up: at {at:?}, head {head:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The members of a consumer group now (0 for a group nobody joined), as the group coordinator
/// lists them.
pub async fn group_members(kafka: &KafkaSettings, group: &str) -> usize {
    let kafka = kafka.clone();
    let group = group.to_owned();
    tokio::task::spawn_blocking(move || {
        let client: rdkafka::consumer::BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &kafka.brokers)
            .create()
            .expect("client");
        let list = client
            .fetch_group_list(Some(&group), Duration::from_secs(5))
            .expect("describe the group");
        list.groups()
            .iter()
            .filter(|g| g.state() == "Stable")
            .map(|g| g.members().len())
            .sum()
    })
    .await
    .expect("describe task")
}
