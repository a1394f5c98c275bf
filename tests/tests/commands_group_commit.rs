//! Group commit against the real event store: commands that commit at the same time share one
//! statement, and each still gets the answer it would get alone.
//!
//! To make a batch happen for certain, a test holds a lock that stops every insert into the
//! events table, starts one command (which takes the only writer and waits on the lock), queues
//! the commands under test behind it, and releases the lock: the writer's next statement takes
//! all of them.

use std::collections::HashSet;
use std::time::Duration;

use member_domain::{Identity, MemberCommand};
use member_infra::event_store::commands::{CommandError, CommandService, IdempotencyTag};
use member_infra::event_store::member_cache::MemberCache;
use member_tests::postgres::fresh_event_store;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use uuid::Uuid;

type Outcome = Result<member_infra::event_store::commands::Executed, CommandError>;

fn one_writer(pool: &PgPool) -> CommandService {
    CommandService::with_cache_and_writers(
        pool.clone(),
        MemberCache::disabled(),
        1,
        member_tests::vault(),
    )
}

fn register(kind: &str, value: &str) -> MemberCommand {
    MemberCommand::Register {
        identities: vec![Identity::parse(kind, value, None, None).unwrap()],
    }
}

fn spawn(
    service: &CommandService,
    command: MemberCommand,
    idempotency: Option<IdempotencyTag>,
) -> (Uuid, JoinHandle<Outcome>) {
    let member = Uuid::now_v7();
    let service = service.clone();
    let task =
        tokio::spawn(async move { service.execute(member, command, idempotency.as_ref()).await });
    (member, task)
}

/// Runs `commands` so that they reach the writer together, in this order, behind one command
/// that holds the writer. Returns their member ids and outcomes.
async fn in_one_batch(
    pool: &PgPool,
    service: &CommandService,
    commands: Vec<(MemberCommand, Option<IdempotencyTag>)>,
) -> Vec<(Uuid, Outcome)> {
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE events IN SHARE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let (_, holder) = spawn(
        service,
        register("mobile", &format!("139{:08}", rand_suffix())),
        None,
    );
    wait_for_blocked_insert(pool).await;
    let mut queued = Vec::new();
    for (n, (command, idempotency)) in commands.into_iter().enumerate() {
        queued.push(spawn(service, command, idempotency));
        // Queue order is spawn order: each append is queued before the next command starts.
        wait_for_queued(service, n + 1).await;
    }
    lock.rollback().await.unwrap();
    holder
        .await
        .unwrap()
        .expect("the command holding the writer commits");
    let mut outcomes = Vec::new();
    for (member, task) in queued {
        outcomes.push((member, task.await.unwrap()));
    }
    outcomes
}

fn rand_suffix() -> u32 {
    Uuid::new_v4().as_u128() as u32 % 100_000_000
}

/// Waits until `n` appends wait for the (only, blocked) writer.
async fn wait_for_queued(service: &CommandService, n: usize) {
    for _ in 0..1000 {
        if service.queued_appends() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!(
        "{n} appends never queued (queued: {})",
        service.queued_appends()
    );
}

async fn wait_for_blocked_insert(pool: &PgPool) {
    for _ in 0..200 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'
               AND query LIKE 'INSERT INTO events%'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the first append never waited on the lock");
}

async fn transactions_of(pool: &PgPool, members: &[Uuid]) -> HashSet<String> {
    let ids: Vec<String> = members.iter().map(Uuid::to_string).collect();
    sqlx::query_scalar("SELECT DISTINCT txid::text FROM events WHERE aggregate_id = ANY($1)")
        .bind(&ids)
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

async fn events_of(pool: &PgPool, member: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = $1")
        .bind(member.to_string())
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_that_arrive_together_commit_in_one_statement() {
    let pool = fresh_event_store().await;
    let service = one_writer(&pool);
    let commands = (0..5)
        .map(|i| (register("elong_card", &format!("7100000{i:05}")), None))
        .collect();
    let outcomes = in_one_batch(&pool, &service, commands).await;
    let members: Vec<Uuid> = outcomes.iter().map(|(m, _)| *m).collect();
    for (member, outcome) in &outcomes {
        let done = outcome.as_ref().expect("each registration commits");
        assert_eq!(done.version, 2, "registered and card bound");
        assert_eq!(events_of(&pool, *member).await, 2);
    }
    assert_eq!(
        transactions_of(&pool, &members).await.len(),
        1,
        "the five registrations were one transaction"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_in_a_batch_is_answered_alone_and_the_others_commit() {
    let pool = fresh_event_store().await;
    let service = one_writer(&pool);
    // The second registration claims the card the first one claims: in one statement the
    // trigger refuses the whole batch, so each is written again alone.
    let commands = vec![
        (register("elong_card", "720000000001"), None),
        (register("elong_card", "720000000001"), None),
        (register("elong_card", "720000000002"), None),
    ];
    let outcomes = in_one_batch(&pool, &service, commands).await;
    assert!(outcomes[0].1.is_ok(), "{:?}", outcomes[0].1);
    assert!(
        matches!(
            outcomes[1].1,
            Err(CommandError::IdentityAlreadyBound { .. })
        ),
        "{:?}",
        outcomes[1].1
    );
    assert!(outcomes[2].1.is_ok(), "{:?}", outcomes[2].1);
    assert_eq!(events_of(&pool, outcomes[0].0).await, 2);
    assert_eq!(
        events_of(&pool, outcomes[1].0).await,
        0,
        "nothing of the refused"
    );
    assert_eq!(events_of(&pool, outcomes[2].0).await, 2);
    let owner: Option<String> =
        sqlx::query_scalar("SELECT member_id FROM identity_owners WHERE identity_key = $1")
            .bind(member_tests::vault().identity_ref_of_text("elong_card:720000000001"))
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        owner,
        Some(outcomes[0].0.to_string()),
        "the first one owns it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_commands_with_one_idempotency_key_never_share_a_transaction() {
    let pool = fresh_event_store().await;
    let service = one_writer(&pool);
    // Within a transaction the trigger lets events share an idempotency key (one command's
    // events do): two commands with one key in one batch would both be committed.
    let tag = |hash: &str| IdempotencyTag {
        key: "group-commit-key".to_owned(),
        request_hash: hash.to_owned(),
        success_status: 201,
    };
    let commands = vec![
        (register("elong_card", "730000000001"), Some(tag("a"))),
        (register("elong_card", "730000000002"), Some(tag("b"))),
    ];
    let outcomes = in_one_batch(&pool, &service, commands).await;
    let committed = outcomes.iter().filter(|(_, o)| o.is_ok()).count();
    assert_eq!(committed, 1, "one key, one outcome: {outcomes:?}");
    assert!(
        outcomes
            .iter()
            .any(|(_, o)| matches!(o, Err(CommandError::IdempotencyKeyInUse))),
        "{outcomes:?}"
    );
    let stored: serde_json::Value =
        sqlx::query_scalar("SELECT body FROM idempotency_keys WHERE key = 'group-commit-key'")
            .fetch_one(&pool)
            .await
            .unwrap();
    let winner = outcomes.iter().find(|(_, o)| o.is_ok()).unwrap().0;
    assert_eq!(stored["member_id"], winner.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_appends_to_one_member_never_share_a_statement() {
    let pool = fresh_event_store().await;
    let service = one_writer(&pool);
    let member = Uuid::now_v7();
    service
        .execute(member, register("mobile", "13900000077"), None)
        .await
        .unwrap();
    // Two binds on one member, decided on the same state (no cache: both read version 2), then
    // queued together: the second must lose the race alone and be decided again, not fail the
    // first or be refused for the first one's sake.
    let bind = |value: &str| MemberCommand::BindIdentity {
        identity: Identity::parse("tongcheng_account", value, None, None).unwrap(),
    };
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE events IN SHARE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let (_, holder) = spawn(&service, register("mobile", "13900000078"), None);
    wait_for_blocked_insert(&pool).await;
    let first = {
        let service = service.clone();
        let command = bind("tc_first");
        tokio::spawn(async move { service.execute(member, command, None).await })
    };
    wait_for_queued(&service, 1).await;
    let second = {
        let service = service.clone();
        let command = MemberCommand::BindIdentity {
            identity: Identity::parse("elong_account", "el_second", None, None).unwrap(),
        };
        tokio::spawn(async move { service.execute(member, command, None).await })
    };
    wait_for_queued(&service, 2).await;
    lock.rollback().await.unwrap();
    holder.await.unwrap().unwrap();
    let first = first.await.unwrap().expect("first bind commits");
    let second = second
        .await
        .unwrap()
        .expect("second bind commits after re-deciding");
    let mut versions = [first.version, second.version];
    versions.sort();
    assert_eq!(versions, [3, 4]);
    assert_eq!(events_of(&pool, member).await, 4);
}
