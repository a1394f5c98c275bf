//! The relay: events per second from the event store to Kafka (`member serve relay` on a fresh
//! topic over the run's event store), against rdkafka alone producing the very same records (keys
//! and payloads read back from the relay's topic) to the same broker with the relay's producer
//! settings (idempotent, acks=all, lz4, linger 2 ms).

use std::time::{Duration, Instant};

use anyhow::Context;
use member_infra::config::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::isolated::Isolated;
use crate::member_process::MemberProcess;
use crate::report::{rate, Report, Row};

/// Sum of the high watermarks of every partition of the topic.
pub fn topic_size(settings: &KafkaSettings) -> anyhow::Result<i64> {
    let consumer: BaseConsumer = member_infra::kafka::client_config(settings).create()?;
    let timeout = Duration::from_secs(5);
    let metadata = consumer.fetch_metadata(Some(&settings.topic), timeout)?;
    let mut total = 0;
    for topic in metadata.topics() {
        for p in topic.partitions() {
            let (_, high) = consumer.fetch_watermarks(&settings.topic, p.id(), timeout)?;
            total += high;
        }
    }
    Ok(total)
}

/// Every record of the topic as (key, payload).
fn read_all(settings: &KafkaSettings, expected: usize) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let consumer: BaseConsumer = member_infra::kafka::client_config(settings)
        .set("group.id", format!("{}.bench-reader", settings.topic))
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(&settings.topic), Duration::from_secs(5))?;
    let mut tpl = TopicPartitionList::new();
    for topic in metadata.topics() {
        for p in topic.partitions() {
            tpl.add_partition_offset(&settings.topic, p.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let mut records = Vec::with_capacity(expected);
    let deadline = Instant::now() + Duration::from_secs(120);
    while records.len() < expected && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(500)) {
            let m = m?;
            records.push((
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
            ));
        }
    }
    anyhow::ensure!(
        records.len() == expected,
        "read {} of {expected} records back",
        records.len()
    );
    Ok(records)
}

/// The relay's producer, configured as infra/src/relay/publisher.rs configures it.
fn producer(settings: &KafkaSettings) -> Result<FutureProducer, KafkaError> {
    member_infra::relay::publisher::producer_config(settings).create()
}

/// Produces every record as fast as the producer's in-flight window allows; returns records/s.
async fn produce_all(
    settings: &KafkaSettings,
    records: &[(Vec<u8>, Vec<u8>)],
) -> anyhow::Result<f64> {
    let producer = producer(settings)?;
    // Warm up (metadata, producer id) before the clock starts: the relay's rate also starts at
    // its first published record.
    if let Some((key, payload)) = records.first() {
        producer
            .send(
                FutureRecord::to(&settings.topic).key(key).payload(payload),
                Duration::from_secs(15),
            )
            .await
            .map_err(|(e, _)| e)
            .context("warm-up record")?;
    }
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(records.len());
    for (key, payload) in records {
        loop {
            let message = FutureRecord::to(&settings.topic).key(key).payload(payload);
            match producer.send_result(message) {
                Ok(d) => {
                    deliveries.push(d);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }
    for d in deliveries {
        d.await
            .context("delivery canceled")?
            .map_err(|(e, _)| e)
            .context("delivery failed")?;
    }
    Ok(records.len() as f64 / started.elapsed().as_secs_f64())
}

/// Runs the relay over the whole event store into `topic`; returns (events, events/s).
pub async fn run_relay(
    report: &mut Report,
    env: &Isolated,
    member_bin: &std::path::Path,
    topic: &str,
) -> anyhow::Result<(i64, f64)> {
    let pool = env.pg_pool().await?;
    let (events,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .context("counting events")?;
    anyhow::ensure!(
        events > 0,
        "the event store is empty (run the command benchmark first)"
    );
    let mut kafka = env.settings.kafka.clone();
    kafka.topic = topic.to_owned();
    member_infra::kafka::ensure_topic(&kafka, topic).await?;
    let mut envs = env.member_env();
    envs.push(("MEMBER__KAFKA__TOPIC".into(), topic.to_owned()));
    let profile = crate::profile::start(report, "relay", Duration::from_secs(10));
    let cpu = crate::cpu::snapshot();
    let started = Instant::now();
    let relay = MemberProcess::spawn(
        member_bin,
        &["serve", "relay"],
        &envs,
        &env.dir.join("logs/relay.log"),
    )?;
    report.command(relay.command_line.clone());
    let mut first: Option<(Instant, i64)> = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    let done = loop {
        let size = {
            let kafka = kafka.clone();
            // A metadata timeout (busy broker) is "unknown": asked again 50 ms later.
            tokio::task::spawn_blocking(move || topic_size(&kafka))
                .await?
                .unwrap_or(0)
        };
        if size > 0 && first.is_none() {
            first = Some((Instant::now(), size));
        }
        if size >= events {
            break Instant::now();
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the relay published {size} of {events} events in 300 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let cpu = cpu.since();
    crate::profile::finish(report, profile);
    relay.stop().await?;
    report.note(format!("relay: CPU by process while it published: {cpu}"));
    let (t0, n0) = first.unwrap_or((started, 0));
    let span = done.duration_since(t0).as_secs_f64();
    let rate = if span > 0.0 && events > n0 {
        (events - n0) as f64 / span
    } else {
        events as f64 / done.duration_since(started).as_secs_f64()
    };
    report.note(format!(
        "relay: {events} events; start-up to first record {:.2} s (not in the rate)",
        t0.duration_since(started).as_secs_f64()
    ));
    Ok((events, rate))
}

pub async fn bench(
    report: &mut Report,
    env: &Isolated,
    member_bin: &std::path::Path,
) -> anyhow::Result<(String, i64)> {
    let topic = format!("member.bench.{}.relay", env.tag);
    let (events, relay_rate) = run_relay(report, env, member_bin, &topic).await?;
    let mut relayed = env.settings.kafka.clone();
    relayed.topic = topic.clone();
    let records = {
        let relayed = relayed.clone();
        tokio::task::spawn_blocking(move || read_all(&relayed, events as usize)).await??
    };
    let bytes: usize = records.iter().map(|(k, p)| k.len() + p.len()).sum();
    let mut baseline = env.settings.kafka.clone();
    baseline.topic = format!("member.bench.{}.produce", env.tag);
    member_infra::kafka::ensure_topic(&baseline, &baseline.topic).await?;
    let base_rate = produce_all(&baseline, &records).await?;
    report.command(format!(
        "member-bench rdkafka-only producer: the {events} relayed records (mean {} bytes) to {} \
         ({} partitions) with the relay's producer configuration (infra::relay::publisher::producer_config, idempotent: {})",
        bytes / records.len().max(1),
        baseline.topic,
        baseline.partitions,
        baseline.idempotent_producer
    ));
    let ratio = relay_rate / base_rate;
    report.row(
        Row::new(
            "relay, event store to Kafka",
            format!("{} events", rate(relay_rate)),
        )
        .baseline(
            format!("{} records (rdkafka alone)", rate(base_rate)),
            ratio,
        )
        // Issue 24: at least 0.9 of rdkafka alone with the same producer settings.
        .target(">= 0.9 x baseline", ratio >= 0.9),
    );
    Ok((topic, events))
}
