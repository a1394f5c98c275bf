//! The projectors' record source against the stack's broker: the `RecordSource` contract (one
//! test per scenario per adapter, so the first failure does not hide the others), and consumer
//! group membership: members of one group split the partitions, a member that leaves hands its
//! partitions to the others, and a revoked partition's offsets are never committed by the member
//! that lost it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use member_domain::{Identity, MemberEvent};
use member_infra::config::KafkaSettings;
use member_infra::kafka::offsets::{commit_group, end_offsets};
use member_infra::kafka::source::{committed_positions, KafkaSource};
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
    produce(&kafka, payloads).await;
    kafka
}

async fn produce(kafka: &KafkaSettings, payloads: &[(String, Vec<u8>)]) {
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
                identity: Identity::parse("tongcheng_account", &format!("src-{i}"), None, None)
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

fn record_count(ends: &BTreeMap<i32, i64>, from: &BTreeMap<i32, i64>) -> usize {
    ends.iter()
        .map(|(p, end)| (end - from.get(p).copied().unwrap_or(0)) as usize)
        .sum()
}

/// Reads until `expected` records arrived (or 30 s pass), committing every batch; returns
/// (member, version) of every record read.
async fn read_all(source: &mut impl RecordSource, expected: usize) -> Vec<(Uuid, u64)> {
    let mut read = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while read.len() < expected && tokio::time::Instant::now() < deadline {
        let batch: SourceBatch = source
            .next_batch(7, Duration::from_millis(500))
            .await
            .expect("a batch");
        read.extend(
            batch
                .records
                .iter()
                .map(|r| (r.event.member_id, r.event.version)),
        );
        source.commit(&batch).await.expect("commit");
    }
    read
}

/// The `RecordSource` contract: `$open(kafka, group)` opens the adapter for one group.
macro_rules! record_source_contract {
    ($adapter:ident, $open:expr) => {
        mod $adapter {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_new_group_reads_every_record_once_in_member_order() {
                let kafka = topic_with(3, &histories(20)).await;
                let group = format!("{}.projector.fresh", kafka.topic);
                let mut source = $open(&kafka, &group).await;
                let mut read = read_all(&mut source, 60).await;
                assert_eq!(read.len(), 60, "records read");
                // Per member, versions arrive in order.
                let mut last: BTreeMap<Uuid, u64> = BTreeMap::new();
                for (member, version) in &read {
                    let before = last.insert(*member, *version).unwrap_or(0);
                    assert_eq!(*version, before + 1, "member {member} out of order");
                }
                read.sort();
                read.dedup();
                assert_eq!(read.len(), 60, "no record twice");
                let ends = end_offsets(&kafka).await.expect("ends");
                assert_eq!(
                    committed_positions(&kafka, &group).await.unwrap(),
                    ends,
                    "the end of every partition committed"
                );
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_group_resumes_from_its_committed_offsets() {
                let kafka = topic_with(3, &histories(20)).await;
                let group = format!("{}.projector.behind", kafka.topic);
                let ends = end_offsets(&kafka).await.expect("ends");
                // The group already applied the first two records of each partition.
                let from: BTreeMap<i32, i64> = ends.keys().map(|p| (*p, 2.min(ends[p]))).collect();
                commit_group(&kafka, &group, &from)
                    .await
                    .expect("committed");
                let mut source = $open(&kafka, &group).await;
                let expected = record_count(&ends, &from);
                let read = read_all(&mut source, expected).await;
                assert_eq!(
                    read.len(),
                    expected,
                    "only what follows the committed offsets"
                );
                let empty = source
                    .next_batch(100, Duration::from_millis(300))
                    .await
                    .expect("a batch");
                assert!(empty.records.is_empty(), "nothing more");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_batch_holds_at_most_max_records_and_waits_at_most_max_wait() {
                let kafka = topic_with(1, &histories(4)).await;
                let group = format!("{}.projector.max", kafka.topic);
                let mut source = $open(&kafka, &group).await;
                let read = read_all(&mut source, 12).await;
                assert_eq!(read.len(), 12);
                let started = tokio::time::Instant::now();
                let empty = source
                    .next_batch(5, Duration::from_millis(200))
                    .await
                    .expect("a batch");
                assert!(empty.records.is_empty());
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "it waited {:?}",
                    started.elapsed()
                );
                produce(&kafka, &histories(4)).await;
                let mut sizes = Vec::new();
                let mut total = 0;
                while total < 12 {
                    let batch = source
                        .next_batch(5, Duration::from_secs(2))
                        .await
                        .expect("a batch");
                    assert!(!batch.records.is_empty(), "records were produced");
                    total += batch.records.len();
                    sizes.push(batch.records.len());
                    source.commit(&batch).await.expect("commit");
                }
                assert!(sizes.iter().all(|s| *s <= 5), "{sizes:?}");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_unreadable_record_halts_the_source_after_the_records_before_it() {
                let mut payloads = histories(1);
                payloads.push(("bad".into(), b"{not a record".to_vec()));
                payloads.extend(histories(1));
                let kafka = topic_with(1, &payloads).await;
                let group = format!("{}.projector.poison", kafka.topic);
                let mut source = $open(&kafka, &group).await;
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
                let committed = committed_positions(&kafka, &group).await.unwrap();
                assert_eq!(
                    committed.get(&0),
                    Some(&3),
                    "committed up to the unreadable record"
                );
            }
        }
    };
}

async fn group_member(kafka: &KafkaSettings, group: &str) -> KafkaSource {
    KafkaSource::new(kafka, group).await.expect("joined")
}

record_source_contract!(kafka_group_member, group_member);

/// Polls both sources (committing what they read) until `done(owned by a, owned by b, records
/// read)` holds, or 30 s pass.
async fn poll_until(
    a: &mut KafkaSource,
    b: &mut KafkaSource,
    read: &mut BTreeSet<(Uuid, u64)>,
    done: impl Fn(&[i32], &[i32], usize) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        for source in [&mut *a, &mut *b] {
            let batch = source
                .next_batch(10, Duration::from_millis(100))
                .await
                .expect("a batch");
            read.extend(
                batch
                    .records
                    .iter()
                    .map(|r| (r.event.member_id, r.event.version)),
            );
            source.commit(&batch).await.expect("commit");
        }
        if done(&a.owned_partitions(), &b.owned_partitions(), read.len()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "owned: {:?} and {:?}, read {}",
            a.owned_partitions(),
            b.owned_partitions(),
            read.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_split_the_partitions_and_one_that_leaves_hands_its_share_over() {
    let kafka = topic_with(6, &histories(30)).await;
    let group = format!("{}.projector.shared", kafka.topic);
    let mut a = group_member(&kafka, &group).await;
    let mut b = group_member(&kafka, &group).await;
    let mut read = BTreeSet::new();
    poll_until(&mut a, &mut b, &mut read, |a, b, _| {
        a.len() + b.len() == 6 && !a.is_empty() && !b.is_empty()
    })
    .await;
    let (mine, theirs) = (a.owned_partitions(), b.owned_partitions());
    assert!(
        mine.iter().all(|p| !theirs.contains(p)),
        "no partition twice: {mine:?} {theirs:?}"
    );
    // Both read their share to the end.
    poll_until(&mut a, &mut b, &mut read, |_, _, n| n == 90).await;
    drop(a);
    produce(&kafka, &histories(10)).await;
    // The survivor owns every partition and reads what follows, from the leaver's commits.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while b.owned_partitions().len() < 6 || read.len() < 120 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "owned {:?}, read {}",
            b.owned_partitions(),
            read.len()
        );
        let batch = b
            .next_batch(50, Duration::from_millis(200))
            .await
            .expect("a batch");
        read.extend(
            batch
                .records
                .iter()
                .map(|r| (r.event.member_id, r.event.version)),
        );
        b.commit(&batch).await.expect("commit");
    }
    assert_eq!(read.len(), 120, "every record read");
    assert_eq!(
        committed_positions(&kafka, &group).await.unwrap(),
        end_offsets(&kafka).await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_never_commits_a_partition_it_lost() {
    // Members are spread over the partitions by their random ids: with 30, one partition in 40
    // runs got none and the wait below for all six never ended; with 90, one in millions.
    let kafka = topic_with(6, &histories(90)).await;
    let group = format!("{}.projector.revoked", kafka.topic);
    let mut a = group_member(&kafka, &group).await;
    // `a` alone owns every partition and reads a batch from several of them, without
    // committing it yet (its sink is still applying it).
    let mut held = SourceBatch::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while held.commit.len() < 6 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "read {:?}",
            held.commit
        );
        let batch = a
            .next_batch(90, Duration::from_millis(500))
            .await
            .expect("a batch");
        held.records.extend(batch.records);
        held.commit.extend(batch.commit);
    }
    // A second member joins: `a` gives up part of its partitions on its next polls.
    let mut b = group_member(&kafka, &group).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while a.owned_partitions().len() == 6 || b.owned_partitions().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no rebalance");
        // (What `a` reads meanwhile is not committed either.)
        a.next_batch(1, Duration::from_millis(100))
            .await
            .expect("a batch");
        // b reads (and does not commit) what it is given.
        b.next_batch(10, Duration::from_millis(100))
            .await
            .expect("a batch");
    }
    let kept = a.owned_partitions();
    // The held batch is committed late: only the partitions `a` still owns.
    a.commit(&held).await.expect("commit");
    let committed = committed_positions(&kafka, &group).await.unwrap();
    for (p, next) in &held.commit {
        if kept.contains(p) {
            assert_eq!(committed.get(p), Some(next), "partition {p} is still a's");
        } else {
            assert_ne!(
                committed.get(p),
                Some(next),
                "partition {p} was revoked from a: its offsets are b's to commit"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topic_is_created_with_the_configured_settings_and_an_existing_one_is_kept() {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    let mut kafka = test_topic(4);
    kafka.retention_ms = 3_600_000;
    member_infra::kafka::ensure_topic(&kafka, &kafka.topic)
        .await
        .expect("created");
    // A second call with other settings changes nothing.
    let mut other = kafka.clone();
    other.partitions = 9;
    other.retention_ms = 7_200_000;
    member_infra::kafka::ensure_topic(&other, &other.topic)
        .await
        .expect("exists");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .create()
        .expect("admin");
    let described = admin
        .describe_configs(
            &[ResourceSpecifier::Topic(&kafka.topic)],
            &AdminOptions::new().request_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("described");
    let config = described
        .into_iter()
        .next()
        .expect("one resource")
        .expect("the topic's config");
    let value = |key: &str| config.get(key).and_then(|e| e.value.clone());
    assert_eq!(value("retention.ms").as_deref(), Some("3600000"));
    assert_eq!(value("min.insync.replicas").as_deref(), Some("1"));
    assert_eq!(end_offsets(&kafka).await.expect("ends").len(), 4);
}
