//! One test per real service of the local stack, through the crates the design names.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};
use sqlx::{Connection, Row};

#[tokio::test]
async fn postgres_answers_through_sqlx() {
    let settings = member_tests::settings();
    let mut conn = sqlx::PgConnection::connect(settings.postgres.url.expose_secret())
        .await
        .unwrap();
    let row = sqlx::query("SELECT pg_current_xact_id()::text AS xid, 40 + 2 AS n")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(row.get::<i32, _>("n"), 42);
    assert!(
        row.get::<String, _>("xid").parse::<u64>().is_ok(),
        "xid8 is available"
    );
}

#[tokio::test]
async fn mariadb_answers_through_sqlx() {
    let settings = member_tests::settings();
    let mut conn = sqlx::MySqlConnection::connect(settings.mysql.url.expose_secret())
        .await
        .unwrap();
    let db = member_tests::unique("member_t");
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(&format!(
        "CREATE TABLE {db}.t (id BIGINT PRIMARY KEY, v TEXT)"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query(&format!("INSERT INTO {db}.t VALUES (1, 'one'), (2, 'two')"))
        .execute(&mut conn)
        .await
        .unwrap();
    let v: String = sqlx::query_scalar(&format!("SELECT v FROM {db}.t WHERE id = ?"))
        .bind(2_i64)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(v, "two");
    sqlx::query(&format!("DROP DATABASE {db}"))
        .execute(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn both_redis_centers_answer_and_are_distinct() {
    let settings = member_tests::settings();
    let key = member_tests::unique("member_test_key");
    let mut a = redis::Client::open(settings.redis.a.url.expose_secret())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut b = redis::Client::open(settings.redis.b.url.expose_secret())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("a")
        .arg("EX")
        .arg(60)
        .query_async(&mut a)
        .await
        .unwrap();
    let on_a: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut a)
        .await
        .unwrap();
    let on_b: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut b)
        .await
        .unwrap();
    assert_eq!(on_a.as_deref(), Some("a"));
    assert_eq!(on_b, None, "center B is another server");
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut a)
        .await
        .unwrap();
}

fn consumer(brokers: &str, group: &str) -> StreamConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("consumer")
}

async fn next_value(consumer: &StreamConsumer) -> (i64, String) {
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("a record within 30 s")
        .expect("a record");
    let value = String::from_utf8(message.payload().unwrap().to_vec()).unwrap();
    consumer
        .commit_message(&message, CommitMode::Sync)
        .expect("commit");
    (message.offset(), value)
}

#[tokio::test]
async fn kafka_topic_idempotent_producer_and_consumer_group_resume() {
    let settings = member_tests::settings();
    let brokers = settings.kafka.brokers.as_str();
    let topic = member_tests::unique("member-test");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let created = admin
        .create_topics(
            &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .unwrap();
    for i in 0..10 {
        producer
            .send(
                FutureRecord::to(&topic)
                    .key("member")
                    .payload(&format!("r{i}")),
                Duration::from_secs(10),
            )
            .await
            .expect("delivered");
    }

    let group = member_tests::unique("member-test-group");
    let first = consumer(brokers, &group);
    first.subscribe(&[&topic]).unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(next_value(&first).await.1);
    }
    assert_eq!(seen, ["r0", "r1", "r2", "r3"]);
    drop(first);

    // A new consumer of the same group resumes after the committed offset.
    let second = consumer(brokers, &group);
    second.subscribe(&[&topic]).unwrap();
    let (offset, value) = next_value(&second).await;
    assert_eq!((offset, value.as_str()), (4, "r4"));
}
