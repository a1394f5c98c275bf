//! What idle consumers cost the local broker, and what delay they add (ADR 0014).
//!
//! For each (partitions, `fetch.wait.max.ms`) pair: a private tansu broker on fresh storage, a
//! topic, `consumers` consumers that each read every partition (as the six projectors of
//! `member run` do, ADR 0008) with nothing to read, and the broker's CPU time over the measured
//! seconds (from /proc). Then one record every 150 ms, and the time from its production to its
//! arrival at a consumer: with a broker that answers a waiting fetch as soon as records arrive
//! (Kafka) this stays small whatever the wait; with one that holds the fetch for the whole wait,
//! it grows with it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::latency::Latency;
use crate::private_broker::PrivateBroker;
use crate::report::{Report, Row};

/// One point of the matrix: its broker CPU (cores) and delivery delays.
struct Point {
    cores: f64,
    delay: Latency,
}

fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').context("a /proc stat line")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields[11].parse()?;
    let stime: u64 = fields[12].parse()?;
    Ok(utime + stime)
}

fn consumer(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: i32,
    wait_ms: u64,
) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", wait_ms.to_string())
        .create()?;
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, Offset::End)?;
    }
    consumer.assign(&list)?;
    Ok(consumer)
}

fn measure(
    tansu: &Path,
    dir: &Path,
    consumers: usize,
    partitions: i32,
    wait_ms: u64,
    seconds: u64,
) -> anyhow::Result<Point> {
    let broker = PrivateBroker::start(tansu, dir)?;
    let brokers = broker.brokers();
    let topic = "fetch-cost";
    let mut settings = member_infra::config::Settings::load_from(None, Vec::new())?.kafka;
    settings.brokers = brokers.clone();
    settings.partitions = partitions as u32;
    tokio::runtime::Handle::current()
        .block_on(member_infra::kafka::ensure_topic(&settings, topic))
        .context("creating the topic")?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut idle = Vec::new();
    for i in 1..consumers {
        let c = consumer(&brokers, &format!("idle-{i}"), topic, partitions, wait_ms)?;
        let stop = stop.clone();
        idle.push(std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = c.poll(Duration::from_millis(100));
            }
        }));
    }
    let watcher = consumer(&brokers, "watcher", topic, partitions, wait_ms)?;
    // Settle (connections, metadata, first fetches), then the idle cost.
    let settle = Instant::now() + Duration::from_secs(2);
    while Instant::now() < settle {
        let _ = watcher.poll(Duration::from_millis(100));
    }
    let pid = broker.pid().context("the broker runs")?;
    let (t0, c0) = (Instant::now(), cpu_ticks(pid)?);
    let until = t0 + Duration::from_secs(seconds);
    while Instant::now() < until {
        let _ = watcher.poll(Duration::from_millis(100));
    }
    let ticks = (cpu_ticks(pid)? - c0) as f64;
    let cores = ticks / 100.0 / t0.elapsed().as_secs_f64();
    // Delivery delay: one record every 150 ms, stamped with its production time.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "0")
        .create()?;
    let epoch = Instant::now();
    let mut delay = Latency::default();
    for i in 0..20u64 {
        let sent = epoch.elapsed().as_micros().to_string();
        producer
            .send(BaseRecord::to(topic).key(&i.to_string()).payload(&sent))
            .map_err(|(e, _)| e)?;
        producer.flush(Duration::from_secs(5))?;
        let next = Instant::now() + Duration::from_millis(150);
        let mut got = false;
        while !got || Instant::now() < next {
            if let Some(Ok(m)) = watcher.poll(Duration::from_millis(10)) {
                let at: u128 = std::str::from_utf8(m.payload().unwrap_or_default())?.parse()?;
                let now = epoch.elapsed().as_micros();
                delay.record(Duration::from_micros((now - at) as u64));
                got = true;
            }
            anyhow::ensure!(
                epoch.elapsed() < Duration::from_secs(60),
                "records did not arrive"
            );
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in idle {
        let _ = t.join();
    }
    drop(broker);
    Ok(Point { cores, delay })
}

/// `matrix`: "partitions:wait_ms" pairs.
pub fn run(
    report: &mut Report,
    tansu: &Path,
    work_dir: &Path,
    consumers: usize,
    matrix: &[(i32, u64)],
    seconds: u64,
) -> anyhow::Result<()> {
    for &(partitions, wait_ms) in matrix {
        let dir = std::fs::canonicalize(work_dir)?.join(format!(
            "fetch-cost-{}-{partitions}-{wait_ms}",
            chrono::Utc::now().format("%H%M%S")
        ));
        let point = measure(tansu, &dir, consumers, partitions, wait_ms, seconds)?;
        let _ = std::fs::remove_dir_all(&dir);
        report.row(Row::new(
            format!(
                "{consumers} idle consumers, {partitions} partitions, fetch.wait.max.ms {wait_ms}"
            ),
            format!(
                "broker CPU {:.2} cores; delivery delay p50 {:.0} ms, max {:.0} ms",
                point.cores,
                point.delay.ms(0.5),
                point.delay.ms(1.0)
            ),
        ));
    }
    report.command(format!(
        "member-bench broker-fetch-cost --tansu-bin {} --consumers {consumers} --seconds {seconds} --matrix {}",
        tansu.display(),
        matrix
            .iter()
            .map(|(p, w)| format!("{p}:{w}"))
            .collect::<Vec<_>>()
            .join(",")
    ));
    Ok(())
}
