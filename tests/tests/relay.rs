//! The relay against the real PostgreSQL and Apache Kafka: commit-safe order.

use std::time::Duration;

use member_domain::{Identity, MemberCommand};
use member_infra::config::RelaySettings;
use member_infra::event_store::commands::CommandService;
use member_infra::relay::{Checkpoint, EventStoreReader, Relay};
use member_tests::eventually::eventually;
use member_tests::kafka::{assert_complete, read_topic, store_head, stored_events, test_topic};
use member_tests::postgres::fresh_event_store;
use uuid::Uuid;

fn register(value: &str) -> MemberCommand {
    MemberCommand::Register {
        identities: vec![Identity::parse("tongcheng_account", value, None, None).unwrap()],
    }
}

async fn drain(relay: &Relay) -> usize {
    let mut total = 0;
    loop {
        let n = relay.step().await.expect("relay step");
        if n == 0 {
            return total;
        }
        total += n;
    }
}

/// Drains until `expected` events were published or 30 s passed. A step can find nothing while
/// events wait: the relay publishes only below the cluster's oldest open transaction (xmin is
/// cluster-wide), and a test running beside this one may hold one open for a while.
async fn drain_until(relay: &Relay, expected: usize) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut total = 0;
    while total < expected && tokio::time::Instant::now() < deadline {
        let n = drain(relay).await;
        if n == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        total += n;
    }
    total + drain(relay).await
}

/// A new topic of `partitions` partitions, created on the broker.
async fn new_topic(partitions: u32) -> member_infra::config::KafkaSettings {
    let kafka = test_topic(partitions);
    member_infra::kafka::ensure_topic(&kafka, &kafka.topic)
        .await
        .unwrap();
    kafka
}

/// A relay publishing the store of `pool` to `kafka`'s topic (its checkpoint named after it).
fn relay_to(
    kafka: &member_infra::config::KafkaSettings,
    pool: &sqlx::PgPool,
    settings: &RelaySettings,
) -> Relay {
    Relay::new(
        &kafka.topic,
        pool.clone(),
        kafka,
        settings,
        member_tests::vault(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_transaction_committing_late_is_never_skipped() {
    let pool = fresh_event_store().await;
    let kafka = new_topic(3).await;
    let relay = relay_to(
        &kafka,
        &pool,
        &RelaySettings {
            batch_size: 2,
            idle_poll_ms: 10,
        },
    );
    let commands = CommandService::new(pool.clone(), member_tests::vault());

    commands
        .execute(Uuid::now_v7(), register("before"), None)
        .await
        .unwrap();
    assert_eq!(drain_until(&relay, 2).await, 2);

    // A writer takes its transaction id and position first, then stays open.
    let slow_member = Uuid::now_v7();
    let mut slow = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
                 VALUES ('Member', $1, 1, 'MemberRegistered', '1.0', '{\"MemberRegistered\": {}}', '{}')")
        .bind(slow_member.to_string())
        .execute(&mut *slow)
        .await
        .unwrap();
    // Later writers commit first.
    for i in 0..3 {
        commands
            .execute(Uuid::now_v7(), register(&format!("fast-{i}")), None)
            .await
            .unwrap();
    }
    // The relay must not move past the open transaction: a naive reader ordered by position
    // would publish the fast events, move its checkpoint beyond the slow one and skip it forever.
    assert_eq!(
        drain(&relay).await,
        0,
        "nothing is published past an open transaction"
    );

    slow.commit().await.unwrap();
    assert_eq!(
        drain_until(&relay, 7).await,
        7,
        "the slow event and the six fast ones"
    );

    let stored = stored_events(&pool).await;
    assert_eq!(stored.len(), 9);
    let records = read_topic(&kafka, stored.len(), Duration::from_secs(60)).await;
    assert_complete(&stored, &records);
    assert_eq!(records.len(), stored.len(), "no failure, so no duplicate");
    let slow_record = records
        .iter()
        .find(|r| r.event.member_id == slow_member)
        .expect("slow event on the topic");
    assert_eq!(slow_record.document.version, 1);
    // Records carry the document after the event.
    let fast = records
        .iter()
        .find(|r| r.event.version == 2 && r.event.member_id != slow_member)
        .unwrap();
    assert_eq!(fast.document.identities.len(), 1);
    // Generations come from one sequence (migration 0009): the first bind's is positive.
    assert!(
        fast.identity_change
            .as_ref()
            .is_some_and(|c| c.bound && c.generation >= 1),
        "{:?}",
        fast.identity_change
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overlapping_run_publishes_everything_in_order_and_stops_at_its_last_acknowledged_batch(
) {
    let pool = fresh_event_store().await;
    let kafka = test_topic(3);
    member_infra::kafka::ensure_topic(&kafka, &kafka.topic)
        .await
        .unwrap();
    let settings = RelaySettings {
        // Small batches: many of them are in flight behind one another.
        batch_size: 3,
        idle_poll_ms: 10,
    };
    let commands = CommandService::new(pool.clone(), member_tests::vault());
    let members: Vec<Uuid> = (0..20).map(|_| Uuid::now_v7()).collect();
    for (i, member) in members.iter().enumerate() {
        commands
            .execute(*member, register(&format!("early-{i}")), None)
            .await
            .unwrap();
    }
    let relay = Relay::new(
        &kafka.topic,
        pool.clone(),
        &kafka,
        &settings,
        member_tests::vault(),
    )
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(relay.run(async {
        let _ = stopped.await;
    }));
    // An open transaction while the relay runs ahead: nothing past it may be checkpointed.
    let before_slow = store_head(&pool).await;
    let slow_member = Uuid::now_v7();
    let mut slow = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
                 VALUES ('Member', $1, 1, 'MemberRegistered', '1.0', '{\"MemberRegistered\": {}}', '{}')")
        .bind(slow_member.to_string())
        .execute(&mut *slow)
        .await
        .unwrap();
    for member in &members {
        commands
            .execute(
                *member,
                MemberCommand::BindIdentity {
                    identity: Identity::parse(
                        "elong_card",
                        &format!("{:012}", member.as_u128() % 1_000_000_000_000),
                        None,
                        None,
                    )
                    .unwrap(),
                },
                None,
            )
            .await
            .unwrap();
    }
    // The relay has published everything committed before the open transaction, and stays
    // there while it is open (the binds committed after it wait behind it).
    eventually(
        "the relay reaches the open transaction",
        Duration::from_secs(30),
        || async { Checkpoint::load(&pool, &kafka.topic).await.unwrap() == before_slow },
    )
    .await;
    slow.commit().await.unwrap();

    let stored = stored_events(&pool).await;
    assert_eq!(stored.len(), 20 * 3 + 1);
    let records = read_topic(&kafka, stored.len(), Duration::from_secs(60)).await;
    assert_complete(&stored, &records);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the relay drains and stops")
        .unwrap();
    assert_eq!(records.len(), stored.len(), "no failure, so no duplicate");
    // Stopped gracefully after everything was acknowledged: its checkpoint is at the end, so a
    // new relay on the same checkpoint has nothing to publish.
    let again = Relay::new(
        &kafka.topic,
        pool.clone(),
        &kafka,
        &settings,
        member_tests::vault(),
    )
    .unwrap();
    assert_eq!(drain(&again).await, 0);
}

/// Transaction ids compare as numbers: as text, "10" sorts before "9", and a reader ordered by
/// the text would return transaction 10 first, move its checkpoint past 9 and never publish it.
#[tokio::test]
async fn events_are_read_in_numeric_transaction_order_across_a_digit_boundary() {
    let pool = fresh_event_store().await;
    // Two long-ended transaction ids (9 and 10), stored in the order 10, then 9.
    for (txid, value) in [(10_i64, "ten"), (9, "nine")] {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                                 payload, metadata, txid)
             VALUES ('Member', $1, 1, 'MemberRegistered', '1.0', '{\"MemberRegistered\": {}}',
                     json_build_object('value', $2::text), $3::text::xid8)",
        )
        .bind(Uuid::now_v7().to_string())
        .bind(value)
        .bind(txid.to_string())
        .execute(&pool)
        .await
        .unwrap();
    }
    let reader = EventStoreReader::new(pool.clone(), member_tests::vault());
    let first = reader
        .next_batch(Checkpoint::default(), 1)
        .await
        .unwrap()
        .events;
    assert_eq!(first.iter().map(|e| e.txid).collect::<Vec<_>>(), [9]);
    let from = Checkpoint {
        txid: first[0].txid,
        position: first[0].position,
    };
    let rest = reader.next_batch(from, 10).await.unwrap().events;
    assert_eq!(rest.iter().map(|e| e.txid).collect::<Vec<_>>(), [10]);
    let all = reader
        .next_batch(Checkpoint::default(), 10)
        .await
        .unwrap()
        .events;
    assert_eq!(all.iter().map(|e| e.txid).collect::<Vec<_>>(), [9, 10]);
}

/// Events of another aggregate type are not published, and the reader still moves past them
/// (a batch of nothing but such events must not stop the relay).
#[tokio::test]
async fn events_of_other_aggregates_are_skipped_and_passed() {
    let pool = fresh_event_store().await;
    let commands = CommandService::new(pool.clone(), member_tests::vault());
    commands
        .execute(Uuid::now_v7(), register("before-other"), None)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         VALUES ('Coupon', 'not-a-member-id', 1, 'CouponIssued', '1.0', '{}', '{}')",
    )
    .execute(&pool)
    .await
    .unwrap();
    commands
        .execute(Uuid::now_v7(), register("after-other"), None)
        .await
        .unwrap();
    let reader = EventStoreReader::new(pool.clone(), member_tests::vault());
    let head = member_tests::kafka::store_head(&pool).await;
    let mut from = Checkpoint::default();
    let mut member_events = 0;
    let mut reads = 0;
    // One event per read: the read that meets the other aggregate's event returns no event
    // and a checkpoint past it.
    loop {
        let read = reader.next_batch(from, 1).await.unwrap();
        let Some(last) = read.last else { break };
        assert!(last > from, "the checkpoint moves on");
        member_events += read.events.len();
        from = last;
        reads += 1;
        assert!(reads <= 5, "the reader went past every event");
    }
    assert_eq!(member_events, 4, "two registrations, two events each");
    assert_eq!(reads, 5, "four member events and the other one");
    assert_eq!(from, head);
}

/// The relay keeps the fold it last published of each member and continues it with the next
/// batch instead of reading the member's history again. Every record must be the one a relay
/// folding whole histories builds: when the kept fold continues (consecutive batches), when
/// there is none (a new relay starting mid-member), and when it is ahead of the batch (the same
/// batches published again after the checkpoint went back, as after a failure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_from_kept_folds_are_the_records_of_whole_histories() {
    use member_domain::UnbindReason;

    let pool = fresh_event_store().await;
    let commands = CommandService::new(pool.clone(), member_tests::vault());
    let members: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    for (i, member) in members.iter().enumerate() {
        commands
            .execute(
                *member,
                register(&format!("kept-{i}-{}", member.simple())),
                None,
            )
            .await
            .unwrap();
    }
    // Interleaved, so that batches of three cut through every member's history.
    let tag = Uuid::now_v7().simple().to_string();
    for (round, kind) in ["elong_account", "elong_card", "wechat_unionid"]
        .into_iter()
        .enumerate()
    {
        for (i, member) in members.iter().enumerate() {
            let value = match kind {
                "elong_card" => format!("{}{i}{round}", 10_000_000 + rand_digits(&tag)),
                "wechat_unionid" => format!("oUnion_kept_{tag}_{i}"),
                _ => format!("kept_{}_{i}_{round}", &tag[..12]),
            };
            let identity = Identity::parse(kind, &value, None, None).unwrap();
            commands
                .execute(*member, MemberCommand::BindIdentity { identity }, None)
                .await
                .unwrap();
        }
    }
    let unbound = Identity::parse(
        "elong_account",
        &format!("kept_{}_0_0", &tag[..12]),
        None,
        None,
    )
    .unwrap();
    commands
        .execute(
            members[0],
            MemberCommand::UnbindIdentity {
                key: unbound.key(),
                reason: UnbindReason::MemberRequest,
            },
            None,
        )
        .await
        .unwrap();
    let stored = stored_events(&pool).await;
    let settings = RelaySettings {
        batch_size: 3,
        idle_poll_ms: 10,
    };

    // One relay, batch after batch: each continues the folds the previous one kept.
    let kept = new_topic(1).await;
    let relay = relay_to(&kept, &pool, &settings);
    assert_eq!(drain_until(&relay, stored.len()).await, stored.len());
    // The checkpoint goes back: the same relay publishes everything again, its kept folds now
    // ahead of every batch.
    sqlx::query("DELETE FROM relay_checkpoints WHERE name = $1")
        .bind(&kept.topic)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(drain_until(&relay, stored.len()).await, stored.len());

    // A new relay for every batch: nothing kept, each batch folds histories.
    let fresh = new_topic(1).await;
    let mut published = 0;
    while published < stored.len() {
        let relay = relay_to(&fresh, &pool, &settings);
        let n = relay.step().await.expect("relay step");
        assert!(n > 0, "events wait below an open transaction");
        published += n;
    }

    let twice = read_topic(&kept, 2 * stored.len(), Duration::from_secs(60)).await;
    let once = read_topic(&fresh, stored.len(), Duration::from_secs(60)).await;
    assert_eq!(twice.len(), 2 * stored.len());
    assert_complete(&stored, &once);
    let expected: std::collections::HashMap<(Uuid, u64), serde_json::Value> = once
        .iter()
        .map(|r| {
            (
                (r.event.member_id, r.event.version),
                serde_json::to_value(r).unwrap(),
            )
        })
        .collect();
    for record in &twice {
        assert_eq!(
            Some(&serde_json::to_value(record).unwrap()),
            expected.get(&(record.event.member_id, record.event.version)),
            "the record of {} version {}",
            record.event.member_id,
            record.event.version
        );
    }
}

/// Six digits from a test's tag, so that card numbers differ between runs on the shared stack.
fn rand_digits(tag: &str) -> u64 {
    u64::from_str_radix(&tag[tag.len() - 8..], 16).unwrap() % 1_000_000
}
