//! The projectors' shared reader (infra/src/kafka/feed.rs, ADR 0014) against the stack's broker:
//! every group reads from its own committed offsets, a projector that takes nothing is let go
//! and goes on alone without a gap, and an unreadable record halts every reader at it.

use std::collections::BTreeMap;
use std::time::Duration;

use member_domain::{Identity, MemberEvent};
use member_infra::config::KafkaSettings;
use member_infra::kafka::feed::{self, FeedSource};
use member_infra::kafka::offsets::{commit_group, end_offsets};
use member_infra::kafka::source::KafkaSource;
use member_projections::fixtures::MemberHistory;
use member_projections::projector::{RecordSource, SourceBatch, SourceError};
use member_tests::kafka::test_topic;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use uuid::Uuid;

async fn topic_with(partitions: u32, payloads: &[(String, Vec<u8>)]) -> KafkaSettings {
    let kafka = test_topic(partitions);
    member_infra::kafka::ensure_topic(&kafka, &kafka.topic)
        .await
        .expect("topic");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .create()
        .expect("producer");
    for (key, payload) in payloads {
        producer
            .send(
                FutureRecord::to(&kafka.topic).key(key).payload(payload),
                Duration::from_secs(10),
            )
            .await
            .expect("produced");
    }
    kafka
}

/// Three events for each of `members` members, keyed by member.
fn histories(members: usize) -> Vec<(String, Vec<u8>)> {
    let mut payloads = Vec::new();
    for i in 0..members {
        let id = Uuid::now_v7();
        let mut h = MemberHistory::new(id);
        h.push(MemberEvent::MemberRegistered {}, None);
        h.push(
            MemberEvent::IdentityBound {
                identity: Identity::parse("tongcheng_account", &format!("feed-{i}"), None, None)
                    .unwrap(),
            },
            Some(1),
        );
        h.push(
            MemberEvent::IdentityBound {
                identity: Identity::parse("elong_card", &format!("{:012}", 700 + i), None, None)
                    .unwrap(),
            },
            Some(1),
        );
        payloads.extend(h.records().iter().map(|r| (id.to_string(), r.to_json())));
    }
    payloads
}

/// Reads until `expected` records arrived (or 30 s pass), committing every batch; returns the
/// offsets read per partition.
async fn read_all(source: &mut impl RecordSource, expected: usize) -> BTreeMap<i32, Vec<i64>> {
    let mut read: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut total = 0;
    while total < expected && tokio::time::Instant::now() < deadline {
        let batch: SourceBatch = source
            .next_batch(7, Duration::from_millis(500))
            .await
            .expect("a batch");
        // The last offset of each partition in the batch.
        for (p, next) in &batch.commit {
            read.entry(*p).or_default().push(*next - 1);
        }
        total += batch.records.len();
        source.commit(&batch).await.expect("commit");
    }
    assert_eq!(total, expected, "records read");
    read
}

fn record_count(ends: &BTreeMap<i32, i64>, from: &BTreeMap<i32, i64>) -> usize {
    ends.iter()
        .map(|(p, end)| (end - from.get(p).copied().unwrap_or(0)) as usize)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_group_reads_from_its_own_offsets_and_a_stuck_one_goes_on_alone_without_a_gap() {
    let kafka = topic_with(3, &histories(20)).await;
    let ends = end_offsets(&kafka).await.expect("ends");
    assert_eq!(record_count(&ends, &BTreeMap::new()), 60);
    let group = |name: &str| format!("{}.projector.{name}", kafka.topic);
    // Group "behind" already applied the first two records of each partition.
    let behind_from: BTreeMap<i32, i64> = ends.keys().map(|p| (*p, 2.min(ends[p]))).collect();
    commit_group(&kafka, &group("behind"), &behind_from)
        .await
        .expect("committed");

    let groups = [group("fresh"), group("behind"), group("stuck")];
    let mut sources: Vec<FeedSource> = feed::open(&kafka, &groups, 4).await.expect("feed");
    let mut stuck = sources.pop().unwrap();
    let mut behind = sources.pop().unwrap();
    let mut fresh = sources.pop().unwrap();

    // "stuck" takes nothing while the others read everything: the feed lets it go.
    let (fresh_read, behind_read) = tokio::join!(
        read_all(&mut fresh, 60),
        read_all(&mut behind, record_count(&ends, &behind_from))
    );
    assert!(!fresh.is_detached() && !behind.is_detached());
    for (p, end) in &ends {
        assert_eq!(fresh_read.get(p).and_then(|o| o.last()), Some(&(end - 1)));
        assert_eq!(behind_read.get(p).and_then(|o| o.last()), Some(&(end - 1)));
    }
    assert_eq!(
        feed::committed_positions(&kafka, &group("fresh"))
            .await
            .unwrap(),
        ends,
        "fresh committed the end of every partition"
    );

    // It drains what was queued for it, then reads alone from the next offset: every record
    // exactly once.
    let mut records = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while records.len() < 60 && tokio::time::Instant::now() < deadline {
        let batch = stuck
            .next_batch(5, Duration::from_millis(500))
            .await
            .expect("a batch");
        records.extend(
            batch
                .records
                .iter()
                .map(|r| (r.event.member_id, r.event.version)),
        );
        stuck.commit(&batch).await.expect("commit");
    }
    assert!(stuck.is_detached(), "the stuck projector reads alone");
    records.sort();
    let before = records.len();
    records.dedup();
    assert_eq!(before, records.len(), "no record twice");
    assert_eq!(records.len(), 60, "no record missing");
    assert_eq!(
        feed::committed_positions(&kafka, &group("stuck"))
            .await
            .unwrap(),
        ends
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_record_halts_every_reader_at_it_after_the_records_before_it() {
    let mut payloads = histories(1);
    payloads.push(("bad".into(), b"{not a record".to_vec()));
    payloads.extend(histories(1));
    let kafka = topic_with(1, &payloads).await;
    let group = format!("{}.projector.poison", kafka.topic);
    let alone = format!("{}.projector.alone", kafka.topic);

    let mut shared = feed::open(&kafka, std::slice::from_ref(&group), 100)
        .await
        .expect("feed")
        .pop()
        .unwrap();
    let mut own = KafkaSource::new(&kafka, &alone).await.expect("source");
    let sources: [&mut dyn RecordSource; 2] = [&mut shared, &mut own];
    for source in sources {
        let mut good = 0;
        let mut calls = 0;
        let error = loop {
            calls += 1;
            assert!(
                calls <= 20,
                "no unreadable record reported after {good} records"
            );
            match source.next_batch(100, Duration::from_millis(500)).await {
                Ok(batch) => {
                    good += batch.records.len();
                    source.commit(&batch).await.expect("commit");
                }
                Err(e) => break e,
            }
        };
        assert_eq!(good, 3, "the records before the unreadable one");
        assert!(
            matches!(
                error,
                SourceError::Poison {
                    partition: 0,
                    offset: 3,
                    ..
                }
            ),
            "{error}"
        );
        for _ in 0..2 {
            let again = source.next_batch(100, Duration::from_millis(300)).await;
            assert!(
                matches!(again, Err(SourceError::Poison { offset: 3, .. })),
                "nothing after it is delivered"
            );
        }
    }
    let committed = feed::committed_positions(&kafka, &group).await.unwrap();
    assert_eq!(
        committed.get(&0),
        Some(&3),
        "committed up to the unreadable record"
    );
}
