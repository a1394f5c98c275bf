//! Blue-green table sets: a rebuild writes a new set of shard tables next to the live one and
//! promotes it when it has caught up; the live projector and the readers always use `live`.
//!
//! Promotion renames, per database, every `live` table to `old` and every table of the new set
//! to `live` in **one** `RENAME TABLE` statement. MySQL executes it atomically and under
//! metadata locks: a statement of the live projector or a reader runs entirely against the old
//! tables or entirely against the new ones, never against a half-built set. Databases are
//! promoted one after the other (in production they sit on different servers), so for a few
//! milliseconds a lookup may read an identity entry from a promoted database and the document
//! from one not yet promoted; both are complete projections, and the lookup rule (the
//! document must still list the identity) keeps that harmless.

use std::collections::BTreeMap;

use futures::future::try_join_all;
use member_domain::IdentityKey;
use sqlx::{ConnectOptions, Connection, Executor};
use uuid::Uuid;

use super::schema::CREATE_SCHEMA_MIGRATIONS;
use super::{to_sink_error, MysqlError, MysqlShards, TableSet};
use member_projections::SinkError;

impl MysqlShards {
    /// Drops every table of this set (a leftover of an interrupted rebuild) and forgets their
    /// migrations, so that `migrate` creates them empty. Refuses the live set.
    pub async fn drop_table_set(&self) -> Result<(), MysqlError> {
        self.refuse_live("drop")?;
        try_join_all((0..self.map.databases().len()).map(|index| async move {
            let tables = self.tables_of_database(index, &self.set);
            let mut conn = self.admin_connection(index).await?;
            conn.execute(CREATE_SCHEMA_MIGRATIONS)
                .await
                .map_err(MysqlError::Unavailable)?;
            for table in &tables {
                conn.execute(format!("DROP TABLE IF EXISTS `{table}`").as_str())
                    .await
                    .map_err(MysqlError::Unavailable)?;
                sqlx::query("DELETE FROM schema_migrations WHERE table_name = ?")
                    .bind(table)
                    .execute(&mut conn)
                    .await
                    .map_err(MysqlError::Unavailable)?;
            }
            conn.close().await.map_err(MysqlError::Unavailable)
        }))
        .await?;
        Ok(())
    }

    /// Makes this set the live one: per database, one atomic `RENAME TABLE` swaps it with the
    /// live tables (which become set `old` and are then dropped). Where a database has no live
    /// tables yet, the set is simply renamed. Afterwards the caller migrates the live set (which
    /// records the renamed tables' migrations).
    pub async fn promote_table_set(&self) -> Result<(), MysqlError> {
        self.refuse_live("promote")?;
        let live = TableSet::live();
        let old = TableSet::new("old").expect("a valid set name");
        for index in 0..self.map.databases().len() {
            let database = &self.map.databases()[index];
            let mut conn = self.admin_connection(index).await?;
            let live_exists: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ? \
                 AND table_name = ?",
            )
            .bind(database)
            .bind(live.member_table(self.map.shards_of_database(index).next().unwrap_or(0)))
            .fetch_one(&mut conn)
            .await
            .map_err(MysqlError::Unavailable)?;
            let mut renames = Vec::new();
            for shard in self.map.shards_of_database(index) {
                for (next, live_table, old_table) in [
                    (
                        self.set.member_table(shard),
                        live.member_table(shard),
                        old.member_table(shard),
                    ),
                    (
                        self.set.identity_table(shard),
                        live.identity_table(shard),
                        old.identity_table(shard),
                    ),
                ] {
                    conn.execute(format!("DROP TABLE IF EXISTS `{old_table}`").as_str())
                        .await
                        .map_err(MysqlError::Unavailable)?;
                    if live_exists > 0 {
                        renames.push(format!("`{live_table}` TO `{old_table}`"));
                    }
                    renames.push(format!("`{next}` TO `{live_table}`"));
                }
            }
            conn.execute(format!("RENAME TABLE {}", renames.join(", ")).as_str())
                .await
                .map_err(MysqlError::Unavailable)?;
            for table in self.tables_of_database(index, &old) {
                conn.execute(format!("DROP TABLE IF EXISTS `{table}`").as_str())
                    .await
                    .map_err(MysqlError::Unavailable)?;
            }
            for table in self.tables_of_database(index, &self.set) {
                sqlx::query("DELETE FROM schema_migrations WHERE table_name = ?")
                    .bind(table)
                    .execute(&mut conn)
                    .await
                    .map_err(MysqlError::Unavailable)?;
            }
            conn.close().await.map_err(MysqlError::Unavailable)?;
        }
        Ok(())
    }

    /// Every member id with a document in this set (for `member verify`: finding extra
    /// documents).
    pub async fn member_ids(&self) -> Result<Vec<Uuid>, SinkError> {
        let mut all = Vec::new();
        for shard in 0..self.map.logical_shards() {
            let sql = format!("SELECT member_id FROM `{}`", self.set.member_table(shard));
            let ids: Vec<Uuid> = sqlx::query_scalar(&sql)
                .fetch_all(self.pool_of_shard(shard))
                .await
                .map_err(to_sink_error)?;
            all.extend(ids);
        }
        Ok(all)
    }

    /// Deletes documents and identity-index entries (repair deletes what is wrong, then writes
    /// the truth through the guarded path).
    pub async fn remove(
        &self,
        members: &[Uuid],
        identities: &[IdentityKey],
    ) -> Result<(), SinkError> {
        let mut by_shard: BTreeMap<u32, (Vec<Uuid>, Vec<String>)> = BTreeMap::new();
        for &m in members {
            by_shard
                .entry(self.map.shard_of_member(m))
                .or_default()
                .0
                .push(m);
        }
        for key in identities {
            by_shard
                .entry(self.map.shard_of_identity(key))
                .or_default()
                .1
                .push(key.to_string());
        }
        for (shard, (members, keys)) in by_shard {
            let pool = self.pool_of_shard(shard);
            for m in members {
                let sql = format!(
                    "DELETE FROM `{}` WHERE member_id = ?",
                    self.set.member_table(shard)
                );
                sqlx::query(&sql)
                    .bind(m)
                    .execute(pool)
                    .await
                    .map_err(to_sink_error)?;
            }
            for key in keys {
                let sql = format!(
                    "DELETE FROM `{}` WHERE identity_key = ?",
                    self.set.identity_table(shard)
                );
                sqlx::query(&sql)
                    .bind(key)
                    .execute(pool)
                    .await
                    .map_err(to_sink_error)?;
            }
        }
        Ok(())
    }

    fn refuse_live(&self, what: &str) -> Result<(), MysqlError> {
        if self.set == TableSet::live() {
            return Err(MysqlError::Config(format!(
                "refusing to {what} the live table set"
            )));
        }
        Ok(())
    }

    fn tables_of_database(&self, index: usize, set: &TableSet) -> Vec<String> {
        self.map
            .shards_of_database(index)
            .flat_map(|shard| [set.member_table(shard), set.identity_table(shard)])
            .collect()
    }

    async fn admin_connection(
        &self,
        index: usize,
    ) -> Result<sqlx::mysql::MySqlConnection, MysqlError> {
        self.server
            .clone()
            .database(&self.map.databases()[index])
            .connect()
            .await
            .map_err(MysqlError::Unavailable)
    }
}
