//! The command path's member cache against the real event store: two command services with their
//! own caches (two command API processes) write the same members. Whatever one of them cached,
//! every answer must be the one a service without a cache gives, and the stored history must be
//! exactly what was decided.

use std::time::Duration;

use member_domain::{Identity, IdentityKey, Member, MemberCommand, MemberError, UnbindReason};
use member_infra::event_store::commands::{CommandError, CommandService};
use member_infra::event_store::member_cache::MemberCache;
use member_tests::postgres::fresh_event_store;
use sqlx::PgPool;
use uuid::Uuid;

fn cached(pool: &PgPool) -> CommandService {
    CommandService::with_cache(
        pool.clone(),
        MemberCache::new(1_000, Duration::from_secs(300)),
        member_tests::vault(),
    )
}

fn identity(kind: &str, value: &str) -> Identity {
    Identity::parse(kind, value, None, None).unwrap()
}

fn bind(kind: &str, value: &str) -> MemberCommand {
    MemberCommand::BindIdentity {
        identity: identity(kind, value),
    }
}

fn unbind(kind: &str, value: &str) -> MemberCommand {
    MemberCommand::UnbindIdentity {
        key: IdentityKey::parse(kind, value).unwrap(),
        reason: UnbindReason::MemberRequest,
    }
}

fn holds(member: &Member, kind: &str, value: &str) -> bool {
    let key = IdentityKey::parse(kind, value).unwrap();
    member.identities().iter().any(|i| i.key() == key)
}

async fn sequences(pool: &PgPool, member: Uuid) -> Vec<(i64, String)> {
    sqlx::query_as(
        "SELECT sequence, event_type FROM events WHERE aggregate_id = $1 ORDER BY sequence",
    )
    .bind(member.to_string())
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Registers a member through `a` (which then has it cached) with a mobile.
async fn registered(a: &CommandService) -> Uuid {
    let member = Uuid::now_v7();
    let done = a
        .execute(
            member,
            MemberCommand::Register {
                identities: vec![identity("mobile", "13800138000")],
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(done.version, 2, "registered, mobile bound");
    member
}

#[tokio::test]
async fn a_write_by_another_process_is_seen_before_the_next_append() {
    let pool = fresh_event_store().await;
    let (a, b) = (cached(&pool), cached(&pool));
    let member = registered(&a).await;

    // b appends event 3; a still holds the member at 2.
    b.execute(member, bind("tongcheng_account", "tc_1"), None)
        .await
        .unwrap();
    // a's guess claims sequence 3, the primary key refuses it, a reads the store and appends 4.
    let done = a
        .execute(member, bind("elong_account", "el_1"), None)
        .await
        .unwrap();
    assert_eq!((done.version, done.appended), (4, 1));
    assert_eq!(sequences(&pool, member).await.len(), 4);
    let truth = CommandService::new(pool.clone(), member_tests::vault())
        .load(member)
        .await
        .unwrap();
    assert!(holds(&truth, "tongcheng_account", "tc_1"));
    assert!(holds(&truth, "elong_account", "el_1"));
}

#[tokio::test]
async fn a_cached_no_op_is_checked_against_the_store() {
    let pool = fresh_event_store().await;
    let (a, b) = (cached(&pool), cached(&pool));
    let member = registered(&a).await;
    a.execute(member, bind("elong_card", "123456789012"), None)
        .await
        .unwrap();
    // b unbinds the card; a's cache still shows it bound, so binding it again looks like a no-op.
    b.execute(member, unbind("elong_card", "123456789012"), None)
        .await
        .unwrap();
    let done = a
        .execute(member, bind("elong_card", "123456789012"), None)
        .await
        .unwrap();
    assert_eq!(
        (done.version, done.appended),
        (5, 1),
        "bound again, not answered 'already bound' from the cache"
    );
}

#[tokio::test]
async fn a_cached_refusal_is_checked_against_the_store() {
    let pool = fresh_event_store().await;
    let (a, b) = (cached(&pool), cached(&pool));
    let member = registered(&a).await;
    // b binds a card a has never seen; a's cache says the member holds no card.
    b.execute(member, bind("elong_card", "123456789012"), None)
        .await
        .unwrap();
    let done = a
        .execute(member, unbind("elong_card", "123456789012"), None)
        .await
        .expect("unbound: the refusal 'not bound' came from a stale cache");
    assert_eq!((done.version, done.appended), (4, 1));
}

#[tokio::test]
async fn an_unbind_the_trigger_refuses_on_a_stale_cache_is_decided_again() {
    let pool = fresh_event_store().await;
    let (a, b) = (cached(&pool), cached(&pool));
    let member = registered(&a).await;
    // b releases the mobile; a's cache still shows it bound. a's unbind reaches the trigger,
    // which finds no owner row for this member, and a must answer from the store's state.
    b.execute(member, unbind("mobile", "13800138000"), None)
        .await
        .unwrap();
    let err = a
        .execute(member, unbind("mobile", "13800138000"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CommandError::Rejected(MemberError::IdentityNotBound)),
        "{err:?}"
    );
    assert_eq!(sequences(&pool, member).await.len(), 3, "nothing appended");
}

#[tokio::test]
async fn a_registration_guessed_new_on_a_taken_id_is_refused() {
    let pool = fresh_event_store().await;
    let (a, b) = (cached(&pool), cached(&pool));
    let member = registered(&a).await;
    // b has never seen the member: it guesses "new", the append collides with event 1.
    let err = b
        .execute(
            member,
            MemberCommand::Register {
                identities: vec![identity("tongcheng_account", "tc_9")],
            },
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CommandError::Rejected(MemberError::MemberAlreadyRegistered)
        ),
        "{err:?}"
    );
    assert_eq!(sequences(&pool, member).await.len(), 2, "nothing appended");
}

#[tokio::test]
async fn concurrent_writers_with_caches_lose_nothing() {
    let pool = fresh_event_store().await;
    let services: Vec<CommandService> = (0..3).map(|_| cached(&pool)).collect();
    let member = registered(&services[0]).await;
    // Three "processes" bind and unbind tongcheng accounts on one member at once; each kind
    // holds one value, so most attempts are refused or conflict. Every success must be in the
    // history, with dense sequences, and the final state must be the fold of that history.
    let mut tasks = Vec::new();
    for (n, service) in services.iter().enumerate() {
        let service = service.clone();
        tasks.push(tokio::spawn(async move {
            let mut appended = 0;
            for i in 0..30 {
                let value = format!("tc_{n}_{i}");
                if let Ok(done) = service
                    .execute(member, bind("tongcheng_account", &value), None)
                    .await
                {
                    appended += done.appended;
                }
                if let Ok(done) = service
                    .execute(member, unbind("tongcheng_account", &value), None)
                    .await
                {
                    appended += done.appended;
                }
            }
            appended
        }));
    }
    let mut appended = 0;
    for t in tasks {
        appended += t.await.unwrap();
    }
    let history = sequences(&pool, member).await;
    assert_eq!(
        history.len(),
        2 + appended,
        "every acknowledged append is stored"
    );
    for (i, (sequence, _)) in history.iter().enumerate() {
        assert_eq!(*sequence, i as i64 + 1, "dense sequences");
    }
    // Owner rows are keyed by the identities' keyed hashes: count this test's accounts.
    let vault = member_tests::vault();
    let accounts: Vec<String> = (0..3)
        .flat_map(|n| (0..30).map(move |i| format!("tongcheng_account:tc_{n}_{i}")))
        .map(|key| vault.identity_ref_of_text(&key))
        .collect();
    let owners: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM identity_owners WHERE member_id = $1 AND identity_key = ANY($2)",
    )
    .bind(member.to_string())
    .bind(&accounts)
    .fetch_one(&pool)
    .await
    .unwrap();
    let truth = CommandService::new(pool.clone(), member_tests::vault())
        .load(member)
        .await
        .unwrap();
    let held = (0..3)
        .flat_map(|n| (0..30).map(move |i| format!("tc_{n}_{i}")))
        .filter(|v| holds(&truth, "tongcheng_account", v))
        .count();
    assert_eq!(
        held as i64, owners,
        "the owner table agrees with the history"
    );
    assert!(held <= 1, "one tongcheng account at a time");
}
