//! `member-bench drill-kafka`: the broker-loss drill. A private three-broker KRaft cluster
//! (replication factor 3, `min.insync.replicas` 2, the relay producing with `acks=all` and
//! idempotence), `member run` over an isolated environment, a steady command load; one broker is
//! SIGKILLed under the load, the load goes on, the broker is started again. Then every
//! acknowledged write is looked for in the event store, on the topic and, through `member
//! verify`, in every store. Appends a dated section to docs/benchmarks.md.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use member_projections::Target;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::isolated::{Isolated, Overrides};
use crate::member_process::MemberProcess;
use crate::private_broker::PrivateBroker;
use crate::register::{register_card, Acked};
use crate::report::{Report, Row};
use crate::Common;

/// The broker the drill kills (any but a lone node would do; 2 is neither first nor last).
const VICTIM: usize = 2;
/// Concurrent writers, each registering one member at a time with a short pause.
const WRITERS: usize = 4;

pub async fn run(common: Common, script: &Path, phase: u64) -> anyhow::Result<()> {
    std::fs::create_dir_all(&common.work_dir)?;
    let mut report = Report::default();
    let outcome = drill(&common, script, phase, &mut report).await;
    let title = format!("broker-loss drill (three brokers, {phase} s phases)");
    report.conclude(&common, "drill", &title, outcome)
}

async fn drill(
    common: &Common,
    script: &Path,
    phase: u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let member_bin = std::fs::canonicalize(&common.member_bin)
        .with_context(|| format!("{} (cargo build --release)", common.member_bin.display()))?;
    let dir = std::fs::canonicalize(&common.work_dir)?.join(format!(
        "kafka-drill-{}",
        chrono::Utc::now().format("%Y%m%d%H%M%S")
    ));
    let cluster = PrivateBroker::start(script, &dir, 3, &["a", "b", "w"])?;
    report.command(cluster.command_line());
    let env = Isolated::create(
        &common.work_dir,
        "kafkadrill",
        Overrides {
            kafka_brokers: Some(cluster.brokers()),
            ..Overrides::default()
        },
    )
    .await?;
    let result = drill_in(&env, &member_bin, &cluster, phase, report).await;
    env.drop_databases(&[], &[]).await;
    drop(cluster);
    result
}

async fn drill_in(
    env: &Isolated,
    member_bin: &Path,
    cluster: &PrivateBroker,
    phase: u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut member_env = env.member_env();
    member_env.extend(
        [
            ("MEMBER__KAFKA__REPLICATION_FACTOR", "3"),
            ("MEMBER__KAFKA__MIN_INSYNC_REPLICAS", "2"),
            ("MEMBER__KAFKA__IDEMPOTENT_PRODUCER", "true"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let mut app = MemberProcess::spawn(
        member_bin,
        &["run"],
        &member_env,
        &env.dir.join("logs/member-run.log"),
    )?;
    report.command(app.command_line.clone());
    app.wait_healthy(&env.command_url("/healthz"), Duration::from_secs(90))
        .await?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;

    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let failed = Arc::new(Mutex::new(Vec::<(Duration, String)>::new()));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (client, stop, acked, failed) =
            (client.clone(), stop.clone(), acked.clone(), failed.clone());
        let url = env.command_url("/v1/members");
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let card = format!("{:012}", 300_000_000_000u64 + n * WRITERS as u64 + w as u64);
                match register_card(&client, &url, &card, None).await {
                    Ok(a) => acked.lock().expect("acked").push(a),
                    Err(e) => failed
                        .lock()
                        .expect("failed")
                        .push((start.elapsed(), format!("{e:#}"))),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    // Progress of the relay (the topic's end offsets) and of each projector (its group's
    // committed offsets), sampled until the end: the longest time each went without moving.
    let settings = env.settings.clone();
    let sampling = stop.clone();
    let sampler = tokio::task::spawn_blocking(move || sample(&settings, &sampling, start));

    let mut marks = vec![("healthy", Duration::ZERO)];
    tokio::time::sleep(Duration::from_secs(phase)).await;
    marks.push(("broker killed (SIGKILL)", start.elapsed()));
    cluster.stop_node(VICTIM, true).await?;
    tokio::time::sleep(Duration::from_secs(2 * phase)).await;
    marks.push(("broker restarting", start.elapsed()));
    let t = Instant::now();
    cluster.start_node(VICTIM).await?;
    let restart = t.elapsed();
    marks.push(("broker back", start.elapsed()));
    tokio::time::sleep(Duration::from_secs(phase)).await;
    let load_end = start.elapsed();
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await?;
    }

    // Everything acknowledged is in the event store, relayed, and projected.
    let acked = std::mem::take(&mut *acked.lock().expect("acked"));
    let failed = std::mem::take(&mut *failed.lock().expect("failed"));
    let pool = env.pg_pool().await?;
    let versions: BTreeMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT aggregate_id, max(sequence) FROM events GROUP BY aggregate_id",
    )
    .fetch_all(&pool)
    .await?
    .into_iter()
    .collect();
    let events_stored: i64 = versions.values().sum();
    let lost_in_store = acked
        .iter()
        .filter(|a| versions.get(&a.member_id).is_none_or(|v| *v < a.version))
        .count();
    // The projectors have caught up once every group's lag is 0 with the relay done.
    let settings = env.settings.clone();
    let caught_up = tokio::task::spawn_blocking(move || {
        wait_caught_up(&settings, events_stored, Duration::from_secs(180))
    })
    .await??;
    let (relay_stall, projector_stalls, relayed) = sampler.await??;
    let rss = app.peak_rss_mib()?;
    app.stop().await?;

    // `member verify` of each store against the event store: a missing or older document is a
    // difference (exit code 2).
    let mut verify = BTreeMap::new();
    for target in Target::ALL {
        let mut v = MemberProcess::spawn(
            member_bin,
            &["verify", "--target", target.as_str()],
            &env.member_env(),
            &env.dir.join(format!("logs/verify-{}.log", target.as_str())),
        )?;
        verify.insert(target.as_str(), v.wait().await?.code());
    }

    let acked_events: i64 = acked.iter().map(|a| a.version).sum();
    report.row(
        Row::new(
            "commands acknowledged during the drill (registrations)",
            format!(
                "{} ({} events), {} failed",
                acked.len(),
                acked_events,
                failed.len()
            ),
        )
        .target(
            "0 failed is not required: a write may fail while the cluster elects",
            true,
        ),
    );
    if let Some((at, e)) = failed.first() {
        report.note(format!(
            "first failed write at {:.1} s: {e}",
            at.as_secs_f64()
        ));
    }
    report.row(
        Row::new(
            "acknowledged writes missing from the event store",
            lost_in_store.to_string(),
        )
        .target("0", lost_in_store == 0),
    );
    report.row(
        Row::new(
            "events relayed (records on the topic) / events in the event store",
            format!("{relayed} / {events_stored}"),
        )
        .target(
            "equal (idempotent producer: no duplicate)",
            relayed == events_stored as u64,
        ),
    );
    let all_verified = verify.values().all(|c| *c == Some(0));
    report.row(
        Row::new(
            "every store equal to the event store afterwards (`member verify`, exit codes)",
            format!("{verify:?}"),
        )
        .target("all 0", all_verified),
    );
    report.row(Row::new(
        "projections caught up after the load",
        caught_up
            .map(|d| format!("{} ms after the load stopped", d.as_millis()))
            .unwrap_or_else(|| "**not within 180 s**".into()),
    ));
    report.row(Row::new(
        "relay: longest time the topic did not grow under the load",
        format!("{} ms", relay_stall.as_millis()),
    ));
    let worst = projector_stalls
        .iter()
        .max_by_key(|(_, d)| **d)
        .map(|(t, d)| format!("{} ms ({t})", d.as_millis()))
        .unwrap_or_default();
    report.row(Row::new(
        "projectors: longest time a group's committed offsets did not move under the load",
        worst,
    ));
    report.note(format!(
        "per projector: {}",
        projector_stalls
            .iter()
            .map(|(t, d)| format!("{t} {} ms", d.as_millis()))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    report.row(Row::new(
        "killed broker's restart (start, answering)",
        format!("{:.1} s", restart.as_secs_f64()),
    ));
    report.row(Row::new(
        "peak RSS of `member run` during the drill",
        format!("{rss:.0} MiB"),
    ));
    for (name, at) in &marks {
        report.note(format!("`{name}` at {:.1} s", at.as_secs_f64()));
    }
    report.note(format!("load stopped at {:.1} s", load_end.as_secs_f64()));
    report.command(format!(
        "member-bench drill-kafka: {WRITERS} writers registering members (10 ms pause) through \
         the command API; phases of {phase} s: healthy, broker {VICTIM} SIGKILLed (2 phases), \
         broker restarted, 1 phase; topic with replication factor 3, min.insync.replicas 2, acks=all"
    ));
    Ok(())
}

type Stalls = (Duration, BTreeMap<&'static str, Duration>, u64);

/// Samples every 200 ms until `stop`: the longest interval without the topic growing, and per
/// target without its group's committed offsets moving; and the topic's final size.
fn sample(
    settings: &member_infra::config::Settings,
    stop: &AtomicBool,
    start: Instant,
) -> anyhow::Result<Stalls> {
    let mut relay = Progress::new(start);
    let mut projectors: BTreeMap<&'static str, Progress> = Target::ALL
        .iter()
        .map(|t| (t.as_str(), Progress::new(start)))
        .collect();
    let mut last_end = 0;
    while !stop.load(Ordering::SeqCst) {
        if let Ok(end) = topic_end(settings) {
            relay.saw(end);
            last_end = end;
        }
        for target in Target::ALL {
            if let Ok(c) = committed(settings, target) {
                projectors.get_mut(target.as_str()).expect("target").saw(c);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let end = topic_end(settings).unwrap_or(last_end);
    Ok((
        relay.longest(),
        projectors
            .into_iter()
            .map(|(t, p)| (t, p.longest()))
            .collect(),
        end,
    ))
}

/// The longest interval between two increases of a counter.
struct Progress {
    value: u64,
    since: Instant,
    longest: Duration,
}

impl Progress {
    fn new(start: Instant) -> Self {
        Self {
            value: 0,
            since: start,
            longest: Duration::ZERO,
        }
    }

    fn saw(&mut self, value: u64) {
        let now = Instant::now();
        if value > self.value {
            self.longest = self.longest.max(now - self.since);
            self.value = value;
            self.since = now;
        }
    }

    fn longest(&self) -> Duration {
        self.longest.max(Instant::now() - self.since)
    }
}

fn consumer(
    settings: &member_infra::config::Settings,
    group: &str,
) -> anyhow::Result<BaseConsumer> {
    Ok(member_infra::kafka::client_config(&settings.kafka)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?)
}

fn partitions(consumer: &BaseConsumer, topic: &str) -> anyhow::Result<TopicPartitionList> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(2))?;
    let mut list = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            list.add_partition(topic, p.id());
        }
    }
    Ok(list)
}

/// Records on the topic: the sum of its partitions' high watermarks.
pub(crate) fn topic_end(settings: &member_infra::config::Settings) -> anyhow::Result<u64> {
    let c = consumer(settings, "member-bench.drill")?;
    let topic = &settings.kafka.topic;
    let mut total = 0;
    for e in partitions(&c, topic)?.elements() {
        let (_, high) = c.fetch_watermarks(topic, e.partition(), Duration::from_secs(2))?;
        total += high.max(0) as u64;
    }
    Ok(total)
}

/// The sum of a target's group's committed offsets.
pub(crate) fn committed(
    settings: &member_infra::config::Settings,
    target: Target,
) -> anyhow::Result<u64> {
    let group = member_infra::kafka::projector_group(settings, target);
    let c = consumer(settings, &group)?;
    let list = c.committed_offsets(
        partitions(&c, &settings.kafka.topic)?,
        Duration::from_secs(2),
    )?;
    Ok(list
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o.max(0) as u64,
            _ => 0,
        })
        .sum())
}

/// Waits until the topic holds `events` records and every group has committed all of them.
fn wait_caught_up(
    settings: &member_infra::config::Settings,
    events: i64,
    timeout: Duration,
) -> anyhow::Result<Option<Duration>> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        let end = topic_end(settings).unwrap_or(0);
        if end >= events as u64
            && Target::ALL
                .iter()
                .all(|t| committed(settings, *t).is_ok_and(|c| c >= end))
        {
            return Ok(Some(start.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(None)
}
