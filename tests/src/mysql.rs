//! Fresh MySQL shard databases for tests: `member_t_<uuid>_db_<i>` (the `member_t_` prefix is
//! what `make test` cleans up after a test that panicked).

use member_infra::config::MysqlSettings;
use member_infra::mysql::MysqlShards;
use sqlx::{Connection, MySqlConnection};

/// The configured server with `databases` fresh database names and `logical_shards` shards.
pub fn fresh_settings(logical_shards: u32, databases: usize) -> MysqlSettings {
    let base = crate::settings().mysql;
    let prefix = crate::unique("member_t");
    MysqlSettings {
        logical_shards,
        databases: (0..databases).map(|i| format!("{prefix}_db_{i}")).collect(),
        max_connections: std::num::NonZeroU32::new(4).unwrap(),
        ..base
    }
}

/// Connects to the settings' shards and migrates them.
pub async fn migrated(settings: &MysqlSettings) -> MysqlShards {
    let shards = MysqlShards::connect(settings)
        .await
        .expect("mariadb answers (is the stack up? make stack-up)");
    shards.migrate().await.expect("migrations run");
    shards
}

/// Drops the test's databases (a test that fails before this leaves them to `make test`).
pub async fn drop_databases(shards: &MysqlShards) {
    shards.close().await;
    // A connection without a default database: the pools' connections name one of the dropped.
    let mut admin = MySqlConnection::connect(crate::settings().mysql.url.expose_secret())
        .await
        .expect("mariadb answers");
    for db in shards.shard_map().databases() {
        sqlx::query(&format!("DROP DATABASE IF EXISTS `{db}`"))
            .execute(&mut admin)
            .await
            .expect("drop test database");
    }
    admin.close().await.expect("close");
}

/// Members rows in every logical shard's table of `set` (0 for a table that does not exist).
pub async fn member_rows(
    shards: &member_infra::mysql::MysqlShards,
    logical_shards: u32,
    set: &str,
) -> i64 {
    let mut total = 0;
    for shard in 0..logical_shards {
        let pool = shards.pool(shards.shard_map().database_index_of(shard));
        let n: Result<i64, _> =
            sqlx::query_scalar(&format!("SELECT count(*) FROM `members_{set}_{shard:04}`"))
                .fetch_one(pool)
                .await;
        total += n.unwrap_or(0);
    }
    total
}
