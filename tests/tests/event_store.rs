//! The event store schema: what the relay and the invariants rely on.

use member_domain::{Identity, IdentityKind, WechatApp};
use member_tests::postgres::fresh_event_store;

/// The identity-owner trigger computes keys in SQL; they must be the domain's keys exactly.
#[tokio::test]
async fn sql_and_rust_agree_on_identity_keys() {
    let pool = fresh_event_store().await;
    let vault = member_tests::vault();
    let unionid = "oUnion_AAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let mut identities = vec![
        Identity::parse("mobile", "13800138000", None, None).unwrap(),
        Identity::parse("wechat_unionid", unionid, None, None).unwrap(),
        Identity::parse("tongcheng_account", "tc-1", None, None).unwrap(),
        Identity::parse("elong_account", "el_1", None, None).unwrap(),
        Identity::parse("elong_card", "0012345678", None, None).unwrap(),
    ];
    for app in WechatApp::ALL {
        identities.push(
            Identity::parse(
                "wechat_openid",
                "oOpenid_0000000001",
                Some(app.as_str()),
                Some(unionid),
            )
            .unwrap(),
        );
    }
    let kinds: std::collections::HashSet<IdentityKind> =
        identities.iter().map(|i| i.kind()).collect();
    assert_eq!(
        kinds.len(),
        IdentityKind::ALL.len(),
        "every kind is covered"
    );
    for identity in identities {
        let json = serde_json::to_value(&identity).unwrap();
        let sql: String = sqlx::query_scalar("SELECT member_identity_key($1::jsonb)")
            .bind(&json)
            .fetch_one(&pool)
            .await
            .unwrap();
        // `member keys migrate` rekeys owner rows written before encryption from this text.
        assert_eq!(sql, identity.key().to_string());
        // The opaque reference the trigger raises instead of the key: the keyed hash's first
        // 16 digits (migration 0010).
        let reference =
            member_infra::event_store::commands::identity_reference(&vault, &identity.key());
        assert_eq!(reference.len(), 16);
        assert!(!reference.contains(identity.value()));
    }
}

#[tokio::test]
async fn events_carry_commit_order_columns() {
    let pool = fresh_event_store().await;
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns WHERE table_name = 'events' AND column_name IN ('position', 'txid', 'event_id', 'recorded_at') ORDER BY column_name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        columns,
        vec![
            ("event_id".into(), "uuid".into()),
            ("position".into(), "bigint".into()),
            ("recorded_at".into(), "timestamp with time zone".into()),
            ("txid".into(), "xid8".into()),
        ]
    );
}

#[tokio::test]
async fn idempotency_keys_past_their_retention_are_expired() {
    use member_infra::event_store::idempotency::{IdempotencyStore, StoredOutcome};
    let pool = fresh_event_store().await;
    let store = IdempotencyStore::new(pool.clone());
    let outcome = StoredOutcome {
        request_hash: "h".into(),
        status: 201,
        body: serde_json::json!({"member_id": "m", "version": 1}),
    };
    assert!(store.save("old", &outcome).await.unwrap());
    assert!(store.save("new", &outcome).await.unwrap());
    sqlx::query(
        "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'old'",
    )
    .execute(&pool)
    .await
    .unwrap();
    let deleted = store
        .expire(member_api::command_api::IDEMPOTENCY_RETENTION)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    assert!(store.lookup("old").await.unwrap().is_none());
    assert!(store.lookup("new").await.unwrap().is_some());
}
