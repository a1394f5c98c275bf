//! `member seed` as a process: the command path and the bulk mode produce the same members (the
//! identities `generate::member` derives), seeding again adds nothing, another seed never
//! collides, and bulk-seeded events flow through the relay into a projection like any other.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use member_api::app::Role;
use member_api::tools::seed::generate;
use member_projections::Target;
use member_tests::app::{spawn_app, wait_converged};
use member_tests::postgres::{event_count, fresh_event_store_with_url};
use member_tests::process::member_binary;
use sqlx::PgPool;
use uuid::Uuid;

fn seed(url: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(member_binary())
        .arg("seed")
        .args(args)
        .env("MEMBER__POSTGRES__URL", url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run member seed");
    (
        out.status.code().expect("exited"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Member id -> (version, identity keys), from the fold of the event store.
async fn members(pool: &PgPool) -> BTreeMap<Uuid, (u64, BTreeSet<String>)> {
    member_infra::event_store::replay::all_documents(pool, &member_tests::vault())
        .await
        .expect("fold")
        .into_iter()
        .map(|(id, doc)| {
            let keys = doc.identities.iter().map(|i| i.key.to_string()).collect();
            (id, (doc.version, keys))
        })
        .collect()
}

fn expected(seed: u32, n: u64) -> BTreeMap<Uuid, (u64, BTreeSet<String>)> {
    (0..n)
        .map(|i| {
            let m = generate::member(seed, i);
            let keys: BTreeSet<String> = m.identities.iter().map(|i| i.key().to_string()).collect();
            // MemberRegistered, then one IdentityBound per identity.
            (m.member_id, (1 + keys.len() as u64, keys))
        })
        .collect()
}

#[tokio::test]
async fn both_modes_seed_the_same_members_and_seeding_again_adds_nothing() {
    let (commands_pool, commands_url) = fresh_event_store_with_url().await;
    let (bulk_pool, bulk_url) = fresh_event_store_with_url().await;

    let (code, out) = seed(&commands_url, &["--members", "200", "--seed", "5"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("seeded 200 members"), "{out}");
    let (code, out) = seed(
        &bulk_url,
        &["--members", "200", "--seed", "5", "--bulk", "--batch", "64"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("seeded 200 members"), "{out}");

    let want = expected(5, 200);
    assert_eq!(members(&commands_pool).await, want);
    assert_eq!(members(&bulk_pool).await, want);
    // Not every member has every identity, and every kind occurs.
    let sizes: BTreeSet<usize> = want.values().map(|(_, k)| k.len()).collect();
    assert!(sizes.len() >= 4, "a realistic mix: {sizes:?}");
    // The same rows for the same members: the bulk path writes what the command path writes.
    // The ownership generations are the store's, drawn from one sequence in commit order
    // (migration 0009), so they differ between two runs: every bind carries one.
    let rows = |pool: PgPool| async move {
        let rows: Vec<(String, i64, String, String, String, bool)> = sqlx::query_as(
            // The cause's time and run id differ between runs; the caller is the same.
            // Sealed values differ by their random nonces: the payload is compared without them,
            // the identities by their keyed hashes (`identity_ref` in the metadata).
            "SELECT aggregate_id, sequence, event_type,
                    (payload::jsonb #- ARRAY[event_type, 'identity', 'sealed'])::text,
                    (metadata::jsonb - 'at' - 'request_id' - 'identity_generation')::text,
                    (event_type = 'IdentityBound') = (metadata::jsonb ? 'identity_generation')
             FROM events
             ORDER BY aggregate_id, sequence",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        rows
    };
    let by_commands = rows(commands_pool.clone()).await;
    assert!(
        by_commands.iter().all(|r| r.5),
        "every bind has its generation"
    );
    assert_eq!(by_commands, rows(bulk_pool.clone()).await);
    // Every event records the tool as its caller, with a run id and a time.
    for pool in [&commands_pool, &bulk_pool] {
        let causes: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT DISTINCT metadata::jsonb ->> 'caller', metadata::jsonb ->> 'request_id'
             FROM events",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        assert_eq!(causes.len(), 1, "one caller and one run id: {causes:?}");
        assert_eq!(causes[0].0.as_deref(), Some("tool:seed"));
        assert!(causes[0].1.is_some());
        let without_time: i64 =
            sqlx::query_scalar("SELECT count(*) FROM events WHERE NOT metadata::jsonb ? 'at'")
                .fetch_one(pool)
                .await
                .unwrap();
        assert_eq!(without_time, 0);
    }

    // The same seed again: nothing new, in either mode, and still success.
    for (pool, url, bulk) in [
        (&commands_pool, &commands_url, false),
        (&bulk_pool, &bulk_url, true),
    ] {
        let before = event_count(pool).await;
        let mut args = vec!["--members", "250", "--seed", "5"];
        if bulk {
            args.push("--bulk");
        }
        let (code, out) = seed(url, &args);
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains("seeded 50 members") && out.contains("200 already present"),
            "{out}"
        );
        let added = event_count(pool).await - before;
        let want_added: u64 = expected(5, 250).values().map(|(v, _)| *v).sum::<u64>()
            - want.values().map(|(v, _)| *v).sum::<u64>();
        assert_eq!(added as u64, want_added);
    }

    // Another seed in the same store: no collision, 200 more members.
    let (code, out) = seed(
        &commands_url,
        &["--members", "200", "--seed", "6", "--bulk"],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(members(&commands_pool).await.len(), 450);
}

#[tokio::test]
async fn bad_arguments_are_refused_and_change_nothing() {
    let (pool, url) = fresh_event_store_with_url().await;
    for args in [
        &["--members", "0"][..],
        &["--members", "10", "--seed", "700"][..],
        &["--members", "ten"][..],
    ] {
        let (code, _) = seed(&url, args);
        assert_eq!(code, 2, "clap refuses {args:?}");
    }
    assert_eq!(event_count(&pool).await, 0);
}

#[tokio::test]
async fn bulk_seeded_members_flow_through_the_relay_into_the_projections() {
    let app = spawn_app(&[Role::Relay, Role::Projector(Target::Mysql)]).await;
    let (code, out) = seed(
        app.settings.postgres.url.expose_secret(),
        &["--members", "200", "--seed", "9", "--bulk", "--batch", "50"],
    );
    assert_eq!(code, 0, "{out}");
    let truth = app.truth().await;
    assert_eq!(truth.len(), 200);
    let reader = app.reader(Target::Mysql).await;
    wait_converged(reader.as_ref(), &truth, Duration::from_secs(60)).await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_signal_stops_the_seed_after_the_members_in_flight_and_running_again_goes_on() {
    use member_tests::process::{send_signal, spawn_member_captured, wait_exit, Signal};
    let (pool, url) = fresh_event_store_with_url().await;
    let env = [("MEMBER__POSTGRES__URL".to_owned(), url.clone())];
    // Far more members than can be seeded before the signal.
    let child = spawn_member_captured(
        &[
            "seed",
            "--members",
            "1000000",
            "--seed",
            "9",
            "--concurrency",
            "4",
        ],
        &env,
    );
    member_tests::eventually("the seed writes members", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move { event_count(&pool).await > 100 }
    })
    .await;
    send_signal(child.id(), Signal::Interrupt);
    let out = wait_exit(child, Duration::from_secs(30)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("run the same command again"),
        "says how to resume: {stderr}"
    );

    // The members in flight finished: the store holds exactly members 0..n of the seed, each
    // complete, and nothing more arrives.
    let seeded = members(&pool).await;
    let n = seeded.len() as u64;
    assert!(n > 0 && n < 1_000_000, "{n} members");
    assert_eq!(seeded, expected(9, n));
    assert!(stdout.contains(&format!("seeded {n} members")), "{stdout}");

    // Running again recognises them and goes on.
    let (code, out) = seed(&url, &["--members", &(n + 10).to_string(), "--seed", "9"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("seeded 10 members") && out.contains(&format!("{n} already present")),
        "{out}"
    );
    assert_eq!(members(&pool).await, expected(9, n + 10));
}
