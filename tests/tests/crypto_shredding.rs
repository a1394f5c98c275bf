//! Crypto-shredding in the event store (docs/decisions/0033): identity values are sealed with
//! each member's data key, owner rows keyed by keyed hashes, master keys rotate by re-wrapping,
//! and a store written before encryption is rewritten once by `member keys migrate`.

use std::collections::BTreeMap;
use std::process::Command;

use member_domain::{Identity, IdentityKey, MemberCommand};
use member_infra::event_store::commands::{CommandError, CommandService};
use member_infra::event_store::replay::{self, ReplayError};
use member_infra::event_store::vault::{Vault, VaultError};
use member_tests::postgres::{fresh_event_store, fresh_event_store_with_url};
use member_tests::process::member_binary;
use secrecy::SecretString;
use sqlx::PgPool;
use uuid::Uuid;

fn identity(kind: &str, value: &str) -> Identity {
    Identity::parse(kind, value, None, None).unwrap()
}

fn register(identities: Vec<Identity>) -> MemberCommand {
    MemberCommand::Register { identities }
}

/// Every value any table of the event store holds, as text.
async fn dump(pool: &PgPool) -> String {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut out = String::new();
    for table in tables {
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT t::text FROM \"{table}\" t"))
            .fetch_all(pool)
            .await
            .unwrap();
        out.push_str(&rows.join("\n"));
    }
    out
}

/// A vault whose master keys are `keys` (id -> base64), wrapping with `current`.
fn vault_with(keys: &[(&str, &str)], current: &str) -> Vault {
    let mut settings = member_tests::settings().encryption;
    settings.master_keys = keys
        .iter()
        .map(|(id, key)| (id.to_string(), SecretString::from(key.to_string())))
        .collect::<BTreeMap<_, _>>();
    settings.master_key_id = current.to_owned();
    Vault::new(&settings)
}

const LOCAL_1: &str = "2/Z6zc+yoYJtntnCGS2+vOYVrnJc0Ecbyc/IMgLDoQU=";
const K2: &str = "c3VwZXItc2VjcmV0LWtleS1mb3ItdGVzdHMtb25seSE=";

#[tokio::test]
async fn the_command_path_stores_no_identity_value_in_the_clear() {
    let pool = fresh_event_store().await;
    let vault = member_tests::vault();
    let commands = CommandService::new(pool.clone(), vault.clone());
    let member = Uuid::now_v7();
    commands
        .execute(
            member,
            register(vec![identity("mobile", "13912345678")]),
            None,
        )
        .await
        .unwrap();
    commands
        .execute(
            member,
            MemberCommand::BindIdentity {
                identity: identity("elong_card", "77001234"),
            },
            None,
        )
        .await
        .unwrap();

    let text = dump(&pool).await;
    for value in ["13912345678", "77001234"] {
        assert!(!text.contains(value), "{value} in the clear");
    }
    assert!(text.contains("\"sealed\""), "the values are sealed");
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM member_keys WHERE member_id = $1")
        .bind(member.to_string())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(keys, 1, "one data key, stored by the append");
    let wrapped_in_events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE metadata::jsonb ? 'member_key'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        wrapped_in_events, 0,
        "the wrapped key never stays in an event"
    );

    // The fold opens them; another member cannot take them (owners keyed by keyed hashes).
    let doc = replay::document_of(&pool, &vault, member)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(doc.identities.len(), 2);
    let refused = commands
        .execute(
            Uuid::now_v7(),
            register(vec![identity("mobile", "13912345678")]),
            None,
        )
        .await;
    assert!(
        matches!(refused, Err(CommandError::IdentityAlreadyBound { .. })),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_tampered_ciphertext_is_reported_not_folded() {
    let pool = fresh_event_store().await;
    let vault = member_tests::vault();
    let commands = CommandService::new(pool.clone(), vault.clone());
    let member = Uuid::now_v7();
    commands
        .execute(
            member,
            register(vec![identity("mobile", "13912345679")]),
            None,
        )
        .await
        .unwrap();
    // Another member's sealed value copied into this member's event does not open: the
    // member id is bound into every seal.
    let other = Uuid::now_v7();
    commands
        .execute(
            other,
            register(vec![identity("mobile", "13912345670")]),
            None,
        )
        .await
        .unwrap();
    sqlx::query(
        "UPDATE events e SET payload = o.payload
         FROM events o
         WHERE e.aggregate_id = $1 AND e.event_type = 'IdentityBound'
           AND o.aggregate_id = $2 AND o.event_type = 'IdentityBound'",
    )
    .bind(member.to_string())
    .bind(other.to_string())
    .execute(&pool)
    .await
    .unwrap();
    let read = replay::document_of(&pool, &vault, member).await;
    assert!(matches!(read, Err(ReplayError::Corrupt { .. })), "{read:?}");
    assert!(
        !format!("{read:?}").contains("13912345670"),
        "the error names no value"
    );
}

#[tokio::test]
async fn rotating_the_master_key_rewraps_every_data_key_and_old_events_still_open() {
    let pool = fresh_event_store().await;
    let before = vault_with(&[("local-1", LOCAL_1)], "local-1");
    let commands = CommandService::new(pool.clone(), before);
    let mut members = Vec::new();
    for i in 0..25 {
        let member = Uuid::now_v7();
        commands
            .execute(
                member,
                register(vec![identity("elong_card", &format!("880000{i:04}"))]),
                None,
            )
            .await
            .unwrap();
        members.push(member);
    }

    let both = vault_with(&[("local-1", LOCAL_1), ("k2", K2)], "k2");
    let mut rotated = 0;
    loop {
        let done = both.rotate_batch(&pool, 10).await.unwrap();
        if done == 0 {
            break;
        }
        rotated += done;
    }
    assert_eq!(rotated, 25);
    assert_eq!(
        Vault::keys_by_master(&pool).await.unwrap(),
        vec![("k2".to_owned(), 25)]
    );

    // The old master key can go: every member still opens with the new one alone, and the old
    // one alone opens nothing.
    let after = vault_with(&[("k2", K2)], "k2");
    for (i, member) in members.iter().enumerate() {
        let doc = replay::document_of(&pool, &after, *member)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            doc.identities[0].key.value(),
            format!("880000{i:04}"),
            "member {i}"
        );
    }
    let old_only = vault_with(&[("local-1", LOCAL_1)], "local-1");
    let stale = old_only
        .data_key(&pool, &members[0].to_string())
        .await
        .map(|_| ());
    assert!(
        matches!(stale, Err(VaultError::UnknownMasterKey { .. })),
        "{stale:?}"
    );
}

/// Writes what a binary older than encryption wrote: values in the clear, owner rows keyed by
/// the identity, unkeyed request hashes, no data key.
async fn write_legacy_member(pool: &PgPool, member: Uuid, mobile: &str) {
    let payloads = [
        serde_json::json!({"MemberRegistered": {}}),
        serde_json::to_value(member_domain::MemberEvent::IdentityBound {
            identity: identity("mobile", mobile),
        })
        .unwrap(),
    ];
    for (sequence, payload) in (1i64..).zip(payloads) {
        let event_type = payload.as_object().unwrap().keys().next().unwrap().clone();
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                                 payload, metadata)
             VALUES ('Member', $1, $2, $3, '1.0', $4::jsonb::json,
                     json_build_object('request_hash', repeat('ab', 32)))",
        )
        .bind(member.to_string())
        .bind(sequence)
        .bind(event_type)
        .bind(payload.to_string())
        .execute(pool)
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn member_keys_migrate_rewrites_a_store_written_before_encryption_once() {
    let (pool, url) = fresh_event_store_with_url().await;
    let legacy = Uuid::now_v7();
    write_legacy_member(&pool, legacy, "13800001111").await;
    let plain_owner: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM identity_owners WHERE identity_key = 'mobile:+8613800001111'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        plain_owner, 1,
        "the legacy trigger path keys by the identity"
    );
    sqlx::query(
        "INSERT INTO idempotency_keys (key, request_hash, status, body)
         VALUES ('legacy-key', repeat('cd', 32), 201, '{}'::jsonb)",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert!(dump(&pool).await.contains("+8613800001111"));

    let migrate = || {
        let out = Command::new(member_binary())
            .args(["keys", "migrate"])
            .env("MEMBER__POSTGRES__URL", &url)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run member keys migrate");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = migrate();
    // The owner row was rekeyed when the tool connected (as every writing process does), before
    // the rewrite itself.
    assert!(
        first.contains("sealed 2 events of 1 members, keyed 1 idempotency records"),
        "{first}"
    );
    let plain_owners: i64 =
        sqlx::query_scalar("SELECT count(*) FROM identity_owners WHERE identity_key LIKE '%:%'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(plain_owners, 0, "owner rows keyed by the identity are left");
    let text = dump(&pool).await;
    assert!(!text.contains("13800001111"), "a value left in the clear");
    let unkeyed: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM idempotency_keys WHERE NOT starts_with(request_hash, 'k1:'))
              + (SELECT count(*) FROM events WHERE NOT starts_with(metadata::jsonb ->> 'request_hash', 'k1:'))",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(unkeyed, 0, "every request hash is keyed");

    // The member reads as before, and its mobile is still its own against the command path.
    let vault = member_tests::vault();
    let doc = replay::document_of(&pool, &vault, legacy)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        doc.identities[0].key,
        IdentityKey::parse("mobile", "13800001111").unwrap()
    );
    let commands = CommandService::new(pool.clone(), vault);
    let taken = commands
        .execute(
            Uuid::now_v7(),
            register(vec![identity("mobile", "13800001111")]),
            None,
        )
        .await;
    assert!(
        matches!(taken, Err(CommandError::IdentityAlreadyBound { .. })),
        "{taken:?}"
    );
    // And the legacy member's next unbind finds its (rekeyed) owner row.
    commands
        .execute(
            legacy,
            MemberCommand::UnbindIdentity {
                key: IdentityKey::parse("mobile", "13800001111").unwrap(),
                reason: member_domain::UnbindReason::MemberRequest,
            },
            None,
        )
        .await
        .unwrap();

    let second = migrate();
    assert!(
        second.contains(
            "rekeyed 0 identity owners, sealed 0 events of 0 members, keyed 0 idempotency records"
        ),
        "{second}"
    );
}

#[tokio::test]
async fn the_command_api_rekeys_legacy_owner_rows_before_its_first_write() {
    let pool = fresh_event_store().await;
    write_legacy_member(&pool, Uuid::now_v7(), "13800002222").await;
    let app = member_tests::spawn::spawn_command_api_on(pool.clone()).await;
    let plain: i64 =
        sqlx::query_scalar("SELECT count(*) FROM identity_owners WHERE identity_key LIKE '%:%'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(plain, 0, "owner rows keyed by the identity are left");
    let r = member_tests::writer_client()
        .post(app.url("/v1/members"))
        .json(&serde_json::json!({"identities": [{"kind": "mobile", "value": "13800002222"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        reqwest::StatusCode::CONFLICT,
        "the legacy holder keeps it"
    );
    app.stop().await.unwrap();
}
