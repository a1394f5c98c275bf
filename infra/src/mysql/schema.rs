//! The schema of the shards: versioned DDL templates applied to every shard table.
//!
//! sqlx's migrator applies a fixed list of scripts to one database; the shards need the same
//! DDL applied to one table per logical shard, in whichever database holds that shard, for a
//! given table set. So this is a small runner of its own:
//!
//! 1. `CREATE DATABASE IF NOT EXISTS` for every configured database;
//! 2. per database, under `GET_LOCK` (so concurrent projector starts wait for each other instead
//!    of racing), every migration not yet recorded for a table is applied to it and recorded in
//!    that database's `schema_migrations` table, as `(table_name, version)`.
//!
//! Recording per table, not per database, keeps re-sharding simple: when a database is given
//! more logical shards, the next `migrate` creates exactly the tables it lacks. A re-run with
//! nothing to do reads `schema_migrations` once per database and changes nothing.
//!
//! Rules for new migrations: append, never edit an applied one; the DDL must be idempotent for
//! one table (`IF NOT EXISTS` forms; MySQL DDL commits implicitly, so a crash between the DDL and
//! its record re-runs it); `{table}` is replaced by the (validated) table name.

use std::collections::HashSet;

use futures::future::try_join_all;
use member_projections::shards::stable_hash;
use sqlx::mysql::MySqlConnection;
use sqlx::{ConnectOptions, Connection, Executor, Row};

use super::{MysqlError, MysqlShards};

/// The kind of a per-shard table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    Members,
    Identities,
}

/// One versioned DDL step for every table of a kind.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: u32,
    pub kind: TableKind,
    pub description: &'static str,
    /// The DDL, with `{table}` standing for the table name.
    pub ddl: &'static str,
}

/// Every migration, in order.
///
/// - `doc` is the whole member document as JSON text (binary collation: compared and stored
///   byte for byte), `version` its aggregate version, `updated_at` its `updated_at`.
/// - `identity_key` is the canonical key (`kind:value`, `wechat_openid:app:value`): ASCII by
///   construction, at most 91 characters today; `member_id` is NULL for a tombstone, which keeps
///   its `generation`.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        kind: TableKind::Members,
        description: "member documents",
        ddl: "CREATE TABLE IF NOT EXISTS `{table}` (
            member_id BINARY(16) NOT NULL,
            version BIGINT UNSIGNED NOT NULL,
            doc LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
            updated_at DATETIME(6) NOT NULL,
            PRIMARY KEY (member_id)
        ) ENGINE = InnoDB",
    },
    Migration {
        version: 2,
        kind: TableKind::Identities,
        description: "identity index",
        ddl: "CREATE TABLE IF NOT EXISTS `{table}` (
            identity_key VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
            member_id BINARY(16) NULL,
            generation BIGINT UNSIGNED NOT NULL,
            PRIMARY KEY (identity_key)
        ) ENGINE = InnoDB",
    },
];

pub(super) const CREATE_SCHEMA_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    table_name VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    version INT UNSIGNED NOT NULL,
    description VARCHAR(200) NOT NULL,
    applied_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (table_name, version)
) ENGINE = InnoDB";

/// How long `migrate` waits for another process's migration of the same database.
const LOCK_TIMEOUT_SECONDS: u32 = 120;

/// What a `migrate` run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Migration steps applied (one step = one migration on one table). 0 on a re-run.
    pub applied: usize,
}

impl MysqlShards {
    /// Creates the databases and brings every shard table of this table set up to date.
    /// Idempotent, and safe to run from several processes at once.
    pub async fn migrate(&self) -> Result<MigrationReport, MysqlError> {
        let mut admin = self
            .server
            .connect()
            .await
            .map_err(MysqlError::Unavailable)?;
        for db in self.map.databases() {
            // Names are validated identifiers (see `connect`).
            admin
                .execute(
                    format!(
                        "CREATE DATABASE IF NOT EXISTS `{db}` \
                         CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                    )
                    .as_str(),
                )
                .await
                .map_err(MysqlError::Unavailable)?;
        }
        admin.close().await.map_err(MysqlError::Unavailable)?;
        let applied =
            try_join_all((0..self.map.databases().len()).map(|index| self.migrate_database(index)))
                .await?;
        Ok(MigrationReport {
            applied: applied.into_iter().sum(),
        })
    }

    async fn migrate_database(&self, index: usize) -> Result<usize, MysqlError> {
        let database = &self.map.databases()[index];
        // A connection of its own, not a pooled one: GET_LOCK belongs to the session, and closing
        // the session releases it even when a step fails half-way.
        let mut conn = self
            .server
            .clone()
            .database(database)
            .connect()
            .await
            .map_err(MysqlError::Unavailable)?;
        // Lock names are at most 64 characters; database names may be 64 themselves.
        let lock = format!("member_schema_{:016x}", stable_hash(database.as_bytes()));
        let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
            .bind(&lock)
            .bind(LOCK_TIMEOUT_SECONDS)
            .fetch_one(&mut conn)
            .await
            .map_err(MysqlError::Unavailable)?;
        if locked != Some(1) {
            return Err(MysqlError::LockTimeout {
                database: database.clone(),
            });
        }
        let applied = self.apply_missing(&mut conn, index).await;
        conn.close().await.map_err(MysqlError::Unavailable)?;
        applied
    }

    async fn apply_missing(
        &self,
        conn: &mut MySqlConnection,
        index: usize,
    ) -> Result<usize, MysqlError> {
        let database = &self.map.databases()[index];
        conn.execute(CREATE_SCHEMA_MIGRATIONS)
            .await
            .map_err(MysqlError::Unavailable)?;
        let done: HashSet<(String, u32)> =
            sqlx::query("SELECT CAST(table_name AS CHAR), version FROM schema_migrations")
                .fetch_all(&mut *conn)
                .await
                .map_err(MysqlError::Unavailable)?
                .into_iter()
                .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                .collect::<Result<_, sqlx::Error>>()
                .map_err(MysqlError::Unavailable)?;
        let mut applied = 0;
        for shard in self.map.shards_of_database(index) {
            for m in MIGRATIONS {
                let table = match m.kind {
                    TableKind::Members => self.set.member_table(shard),
                    TableKind::Identities => self.set.identity_table(shard),
                };
                if done.contains(&(table.clone(), m.version)) {
                    continue;
                }
                let failed = |source| MysqlError::Migration {
                    database: database.clone(),
                    table: table.clone(),
                    version: m.version,
                    source,
                };
                conn.execute(m.ddl.replace("{table}", &table).as_str())
                    .await
                    .map_err(failed)?;
                sqlx::query(
                    "INSERT IGNORE INTO schema_migrations (table_name, version, description) \
                     VALUES (?, ?, ?)",
                )
                .bind(&table)
                .bind(m.version)
                .bind(m.description)
                .execute(&mut *conn)
                .await
                .map_err(failed)?;
                applied += 1;
            }
        }
        if applied > 0 {
            tracing::info!(database = %database, applied, set = self.set.as_str(), "mysql shard schema migrated");
        }
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_and_templated() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1);
            assert!(m.ddl.contains("`{table}`"));
            assert!(m.ddl.contains("IF NOT EXISTS"));
        }
    }
}
