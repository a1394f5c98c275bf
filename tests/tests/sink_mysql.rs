//! The MySQL shards adapter against the local MariaDB: the sink contract, the placement of rows
//! in shard tables, and the migration runner.

use std::collections::BTreeSet;

use member_domain::{Identity, IdentityKey, MemberEvent};
use member_infra::mysql::{MysqlError, MysqlShards};
use member_projections::fixtures::MemberHistory;
use member_projections::{MemberReader, MemberRecord, Sink, SinkError};
use member_tests::mysql::{drop_databases, fresh_settings, migrated};
use member_tests::sink_contract::Ids;
use uuid::Uuid;

/// A member with a mobile and a card, all at generation 1.
fn member(ids: &Ids) -> MemberHistory {
    let mut h = MemberHistory::new(Uuid::now_v7());
    h.push(MemberEvent::MemberRegistered {}, None);
    h.push(
        MemberEvent::IdentityBound {
            identity: ids.mobile.clone(),
        },
        Some(1),
    );
    h.push(
        MemberEvent::IdentityBound {
            identity: ids.card.clone(),
        },
        Some(1),
    );
    h
}

async fn count(shards: &MysqlShards, sql: &str, bind: Option<Vec<u8>>) -> i64 {
    let mut q = sqlx::query_scalar(sql);
    if let Some(b) = bind {
        q = q.bind(b);
    }
    q.fetch_one(shards.pool(0)).await.expect(sql)
}

async fn open() -> (MysqlShards, ()) {
    (migrated(&fresh_settings(16, 4)).await, ())
}

async fn close(shards: MysqlShards, (): ()) {
    drop_databases(&shards).await;
}

mod contract {
    member_tests::sink_contract_tests!(super::open, super::close);
}

#[tokio::test]
async fn rows_land_in_the_tables_of_their_shards() {
    let settings = fresh_settings(16, 4);
    let shards = migrated(&settings).await;
    let map = shards.shard_map().clone();
    let set = shards.table_set().clone();

    // Every database holds exactly the tables of its logical shards.
    for (index, db) in map.databases().iter().enumerate() {
        let tables: BTreeSet<String> = sqlx::query_scalar(
            "SELECT CAST(table_name AS CHAR) FROM information_schema.tables WHERE table_schema = ?",
        )
        .bind(db)
        .fetch_all(shards.pool(0))
        .await
        .unwrap()
        .into_iter()
        .collect();
        let mut expected: BTreeSet<String> = map
            .shards_of_database(index)
            .flat_map(|s| [set.member_table(s), set.identity_table(s)])
            .collect();
        expected.insert("schema_migrations".into());
        assert_eq!(tables, expected, "tables of {db}");
    }

    // One batch of 40 members, interleaved.
    let members: Vec<(Ids, MemberHistory)> = (0..40)
        .map(|_| {
            let ids = Ids::fresh();
            let h = member(&ids);
            (ids, h)
        })
        .collect();
    let mut batch: Vec<MemberRecord> = Vec::new();
    for i in 0..3 {
        batch.extend(members.iter().map(|(_, h)| h.records()[i].clone()));
    }
    shards.apply(&batch).await.unwrap();

    for (ids, h) in &members {
        let doc = &h.records().last().unwrap().document;
        let shard = map.shard_of_member(doc.member_id);
        let db = map.database_of(shard);
        let (version, stored): (u64, Vec<u8>) = sqlx::query_as(&format!(
            "SELECT version, doc FROM `{db}`.`{}` WHERE member_id = ?",
            set.member_table(shard)
        ))
        .bind(doc.member_id)
        .fetch_one(shards.pool(0))
        .await
        .expect("the member row is in the table of the member's shard");
        assert_eq!(version, 3);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&stored).unwrap(),
            serde_json::to_value(doc).unwrap()
        );

        for identity in [&ids.mobile, &ids.card] {
            let key: IdentityKey = identity.key();
            let shard = map.shard_of_identity(&key);
            let db = map.database_of(shard);
            let (owner, generation): (Option<Uuid>, u64) = sqlx::query_as(&format!(
                "SELECT member_id, generation FROM `{db}`.`{}` WHERE identity_key = ?",
                set.identity_table(shard)
            ))
            .bind(key.to_string())
            .fetch_one(shards.pool(0))
            .await
            .expect("the identity row is in the table of the identity's shard");
            assert_eq!((owner, generation), (Some(doc.member_id), 1));
        }
    }

    // And nowhere else: the shard tables hold exactly one row per member and per identity.
    let mut member_rows = 0;
    let mut identity_rows = 0;
    for shard in 0..map.logical_shards() {
        let db = map.database_of(shard);
        member_rows += count(
            &shards,
            &format!("SELECT count(*) FROM `{db}`.`{}`", set.member_table(shard)),
            None,
        )
        .await;
        identity_rows += count(
            &shards,
            &format!(
                "SELECT count(*) FROM `{db}`.`{}`",
                set.identity_table(shard)
            ),
            None,
        )
        .await;
    }
    assert_eq!((member_rows, identity_rows), (40, 80));

    // A stale record leaves version, doc and updated_at as they are (the guard's left-to-right
    // assignments).
    let (_, h) = &members[0];
    let doc = &h.records().last().unwrap().document;
    shards.apply(&h.records()[..1]).await.unwrap();
    let shard = map.shard_of_member(doc.member_id);
    let (version, updated_at): (u64, chrono::DateTime<chrono::Utc>) = sqlx::query_as(&format!(
        "SELECT version, updated_at FROM `{}`.`{}` WHERE member_id = ?",
        map.database_of(shard),
        set.member_table(shard)
    ))
    .bind(doc.member_id)
    .fetch_one(shards.pool(0))
    .await
    .unwrap();
    assert_eq!((version, updated_at), (doc.version, doc.updated_at));
    assert_eq!(
        shards.by_id(doc.member_id).await.unwrap().as_ref(),
        Some(doc)
    );

    drop_databases(&shards).await;
}

async fn migration_rows(shards: &MysqlShards) -> Vec<(String, u32, String)> {
    let mut rows = Vec::new();
    for db in shards.shard_map().databases() {
        let part: Vec<(String, u32, String)> = sqlx::query_as(&format!(
            "SELECT CAST(table_name AS CHAR), version, CAST(applied_at AS CHAR) FROM `{db}`.schema_migrations ORDER BY table_name, version"
        ))
        .fetch_all(shards.pool(0))
        .await
        .unwrap();
        rows.extend(part);
    }
    rows
}

#[tokio::test]
async fn migrating_twice_is_a_no_op() {
    let settings = fresh_settings(16, 4);
    let shards = MysqlShards::connect(&settings).await.unwrap();
    let first = shards.migrate().await.unwrap();
    assert_eq!(first.applied, 32, "two tables per logical shard");
    let before = migration_rows(&shards).await;
    assert_eq!(before.len(), 32);
    let again = shards.migrate().await.unwrap();
    assert_eq!(again.applied, 0);
    assert_eq!(migration_rows(&shards).await, before);
    drop_databases(&shards).await;
}

#[tokio::test]
async fn concurrent_migrations_apply_each_step_once() {
    let settings = fresh_settings(16, 4);
    let a = MysqlShards::connect(&settings).await.unwrap();
    let b = MysqlShards::connect(&settings).await.unwrap();
    let c = MysqlShards::connect(&settings).await.unwrap();
    let (ra, rb, rc) = tokio::join!(a.migrate(), b.migrate(), c.migrate());
    let applied = ra.unwrap().applied + rb.unwrap().applied + rc.unwrap().applied;
    assert_eq!(applied, 32);
    assert_eq!(migration_rows(&a).await.len(), 32);
    b.close().await;
    c.close().await;
    drop_databases(&a).await;
}

/// Re-sharding to more databases moves logical shards, never keys: the next migrate creates
/// exactly the tables the new databases hold.
#[tokio::test]
async fn adding_databases_creates_only_the_missing_tables() {
    let four = fresh_settings(16, 4);
    let two = member_infra::config::MysqlSettings {
        databases: four.databases[..2].to_vec(),
        ..four.clone()
    };
    let before = migrated(&two).await;
    let after = MysqlShards::connect(&four).await.unwrap();
    // Shards 0, 4, 8, 12 stay in db_0 and 1, 5, 9, 13 in db_1; the other eight move.
    assert_eq!(after.migrate().await.unwrap().applied, 16);
    assert_eq!(after.migrate().await.unwrap().applied, 0);
    before.close().await;
    drop_databases(&after).await;
}

#[tokio::test]
async fn undecodable_documents_are_corrupt_and_missing_schema_is_reported() {
    let settings = fresh_settings(4, 2);
    let shards = migrated(&settings).await;
    let ids = Ids::fresh();
    let h = member(&ids);
    shards.apply(h.records()).await.unwrap();
    let id = h.records()[0].document.member_id;
    let shard = shards.shard_map().shard_of_member(id);
    sqlx::query(&format!(
        "UPDATE `{}`.`{}` SET doc = 'not a document' WHERE member_id = ?",
        shards.shard_map().database_of(shard),
        shards.table_set().member_table(shard)
    ))
    .bind(id)
    .execute(shards.pool(0))
    .await
    .unwrap();
    let err = shards.by_id(id).await.unwrap_err();
    assert!(matches!(err, SinkError::Corrupt { .. }), "{err:?}");
    let err = shards.by_identity(&ids.card.key()).await.unwrap_err();
    assert!(matches!(err, SinkError::Corrupt { .. }), "{err:?}");

    // A table set that was never migrated: the schema is not what the code expects.
    let unmigrated = MysqlShards::connect_table_set(
        &settings,
        member_infra::mysql::TableSet::new("never").unwrap(),
    )
    .await
    .unwrap();
    let err = unmigrated.by_id(id).await.unwrap_err();
    assert!(matches!(err, SinkError::Corrupt { .. }), "{err:?}");
    unmigrated.close().await;
    drop_databases(&shards).await;
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    let mut settings = fresh_settings(4, 2);
    settings.url = "mysql://member:member@127.0.0.1:1".into();
    let err = MysqlShards::connect(&settings)
        .await
        .err()
        .expect("nothing listens on port 1");
    assert!(matches!(err, MysqlError::Unavailable(_)), "{err:?}");
}

/// 2,000 members of 5 records each in one batch: every document and identity lands, and the
/// same batch again changes nothing. (Its rate is measured by `member-bench run --only sinks`.)
#[tokio::test]
async fn a_ten_thousand_record_batch() {
    let settings = fresh_settings(64, 4);
    let shards = migrated(&settings).await;
    let histories: Vec<(Ids, MemberHistory)> = (0..2_000)
        .map(|_| {
            let ids = Ids::fresh();
            let mut h = member(&ids);
            for identity in [&ids.unionid, &ids.openid] {
                h.push(
                    MemberEvent::IdentityBound {
                        identity: Identity::clone(identity),
                    },
                    Some(1),
                );
            }
            (ids, h)
        })
        .collect();
    let records: Vec<MemberRecord> = histories
        .iter()
        .flat_map(|(_, h)| h.records().iter().cloned())
        .collect();
    assert_eq!(records.len(), 10_000);
    shards.apply(&records).await.unwrap();
    // The same batch again: every write a guarded no-op.
    shards.apply(&records).await.unwrap();
    for (ids, h) in histories.iter().step_by(97) {
        let doc = &h.records().last().unwrap().document;
        assert_eq!(
            shards.by_id(doc.member_id).await.unwrap().as_ref(),
            Some(doc)
        );
        assert_eq!(
            shards
                .by_identity(&ids.openid.key())
                .await
                .unwrap()
                .as_ref(),
            Some(doc)
        );
    }
    drop_databases(&shards).await;
}
