//! The MySQL shards (MariaDB locally): the primary read store of member documents and the
//! identity index, spread over logical shards and physical databases.
//!
//! - Routing is the pure [`ShardMap`] of the projections crate: a member row lives in the shard of
//!   its member id, an identity-index row in the shard of the identity, and logical shard `n`
//!   lives in `databases[n % len]`.
//! - Every logical shard has its own tables, named from a **table set** (`live` by default):
//!   `members_<set>_<NNNN>` and `identities_<set>_<NNNN>`. A blue-green rebuild can build another
//!   set (`members_next_0007`, ...) next to the live one and swap it in; nothing here assumes
//!   there is only one.
//! - [`schema`]: the versioned per-shard DDL, applied by [`MysqlShards::migrate`] at projector
//!   start; [`sink`]: batched, version-guarded multi-row upserts; [`reader`]: lookups by id and
//!   by identity.
//!
//! One connection pool per physical database (the database is the pool's default schema), not one
//! pool to the server with qualified names: in production the databases sit on many servers, and
//! per-database pools are what lets `databases` later name different servers without touching
//! the write path. `mysql.max_connections` is the size of each pool; a batch uses at most one
//! connection per database, so the pools stay small in practice.

pub mod reader;
pub mod schema;
pub mod sink;
pub mod table_sets;

use std::str::FromStr;
use std::time::Duration;

use member_projections::{ShardMap, SinkError};
use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlPool, MySqlPoolOptions};
use sqlx::{ConnectOptions, Connection};

use crate::config::{is_identifier, MysqlSettings};

/// The projection target name of this store.
pub const TARGET: &str = "mysql";

/// How long a request waits for a pooled connection before the store counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The name of a set of shard tables: `[a-z0-9]`, 1 to 16 characters, so that
/// `identities_<set>_<NNNN>` stays well within MySQL's 64-character identifiers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableSet(String);

impl TableSet {
    /// The set the projector writes and the query path reads.
    pub fn live() -> Self {
        Self("live".to_owned())
    }

    pub fn new(name: &str) -> Result<Self, MysqlError> {
        let ok = (1..=16).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(MysqlError::Config(format!(
                "table set {name:?} is not 1 to 16 characters of [a-z0-9]"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The member table of a logical shard, e.g. `members_live_0007`.
    pub fn member_table(&self, shard: u32) -> String {
        format!("members_{}_{shard:04}", self.0)
    }

    /// The identity-index table of a logical shard, e.g. `identities_live_0007`.
    pub fn identity_table(&self, shard: u32) -> String {
        format!("identities_{}_{shard:04}", self.0)
    }
}

/// The shards could not be connected or migrated.
#[derive(Debug, thiserror::Error)]
pub enum MysqlError {
    #[error("mysql configuration: {0}")]
    Config(String),
    #[error("mysql server unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("mysql schema migration {version} of {table} in {database} failed")]
    Migration {
        database: String,
        table: String,
        version: u32,
        #[source]
        source: sqlx::Error,
    },
    #[error("timed out waiting for the schema lock of {database} (another migration running?)")]
    LockTimeout { database: String },
}

/// The MySQL shards: one pool per physical database, the shard map and the table set.
/// Cheap to clone. Implements [`member_projections::Sink`] and [`member_projections::MemberReader`].
#[derive(Clone)]
pub struct MysqlShards {
    map: ShardMap,
    set: TableSet,
    /// The server, without a default database (for `CREATE DATABASE` and migrations).
    server: MySqlConnectOptions,
    /// `pools[i]` is a pool to `map.databases()[i]`.
    pools: Vec<MySqlPool>,
}

impl MysqlShards {
    /// Connects to the live table set. Checks that the server answers; the databases themselves
    /// may not exist yet: [`MysqlShards::migrate`] creates them.
    pub async fn connect(settings: &MysqlSettings) -> Result<Self, MysqlError> {
        Self::connect_table_set(settings, TableSet::live()).await
    }

    /// Connects to a given table set (a rebuild writes a new set next to the live one).
    pub async fn connect_table_set(
        settings: &MysqlSettings,
        set: TableSet,
    ) -> Result<Self, MysqlError> {
        if let Some(bad) = settings.databases.iter().find(|d| !is_identifier(d)) {
            return Err(MysqlError::Config(format!(
                "database {bad:?} is not a plain identifier"
            )));
        }
        let map = ShardMap::new(settings.logical_shards, settings.databases.clone())
            .map_err(|e| MysqlError::Config(e.to_string()))?;
        let server = MySqlConnectOptions::from_str(settings.url.expose_secret())
            .map_err(|e| MysqlError::Config(format!("mysql.url: {e}")))?
            .charset("utf8mb4");
        // Fail fast when the server does not answer at all.
        let conn = server.connect().await.map_err(MysqlError::Unavailable)?;
        conn.close().await.map_err(MysqlError::Unavailable)?;
        let pools = map
            .databases()
            .iter()
            .map(|db| {
                MySqlPoolOptions::new()
                    .max_connections(settings.max_connections.get())
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_lazy_with(server.clone().database(db))
            })
            .collect();
        Ok(Self {
            map,
            set,
            server,
            pools,
        })
    }

    pub fn shard_map(&self) -> &ShardMap {
        &self.map
    }

    pub fn table_set(&self) -> &TableSet {
        &self.set
    }

    /// The pool of the database at `index` in the shard map's `databases`.
    pub fn pool(&self, index: usize) -> &MySqlPool {
        &self.pools[index]
    }

    fn pool_of_shard(&self, shard: u32) -> &MySqlPool {
        &self.pools[self.map.database_index_of(shard)]
    }

    /// Readiness: every database answers.
    pub async fn ping(&self) -> Result<(), SinkError> {
        for pool in &self.pools {
            sqlx::query("SELECT 1")
                .execute(pool)
                .await
                .map_err(to_sink_error)?;
        }
        Ok(())
    }

    /// Closes every pool (waits for connections in use to be returned).
    pub async fn close(&self) {
        for pool in &self.pools {
            pool.close().await;
        }
    }
}

/// MySQL error numbers that mean "the schema is not what this code expects": unknown database,
/// table or column. Not retryable without an operator.
const SCHEMA_ERRORS: &[u16] = &[1049, 1054, 1146];
/// Error numbers that mean "this data cannot be stored as it is" (too long, out of range, invalid
/// value, constraint failed). Not retryable either.
const DATA_ERRORS: &[u16] = &[1264, 1366, 1406, 3140, 4025];
/// Deadlock and lock wait timeout: retry the transaction.
pub(crate) const RETRYABLE_ERRORS: &[u16] = &[1205, 1213];

/// The server's error number, if the error came from the server.
pub(crate) fn error_number(e: &sqlx::Error) -> Option<u16> {
    match e {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<MySqlDatabaseError>()
            .map(|e| e.number()),
        _ => None,
    }
}

/// Maps a driver error to the port's error. Corrupt only for what retrying cannot fix (a schema
/// or data mismatch); anything else (connection refused or lost, pool timeout, deadlock, server
/// shutting down, access denied) is Unavailable, so the projector backs off and retries and
/// loses nothing. Reasons carry error numbers only: server messages can quote row values, which
/// are personal data.
pub(crate) fn to_sink_error(e: sqlx::Error) -> SinkError {
    if let Some(n) = error_number(&e) {
        if SCHEMA_ERRORS.contains(&n) {
            return SinkError::corrupt(TARGET, format!("unexpected schema (mysql error {n})"));
        }
        if DATA_ERRORS.contains(&n) {
            return SinkError::corrupt(TARGET, format!("row refused (mysql error {n})"));
        }
    }
    match e {
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::TypeNotFound { .. } => {
            SinkError::corrupt(TARGET, "a column could not be decoded")
        }
        other => SinkError::unavailable(TARGET, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_follow_the_set_and_the_shard() {
        let live = TableSet::live();
        assert_eq!(live.member_table(7), "members_live_0007");
        assert_eq!(live.identity_table(1023), "identities_live_1023");
        let next = TableSet::new("next2").unwrap();
        assert_eq!(next.member_table(0), "members_next2_0000");
        assert!(is_identifier(&next.identity_table(9999)));
    }

    #[test]
    fn driver_errors_map_to_retryable_or_not() {
        let unavailable = [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        ];
        for e in unavailable {
            assert!(matches!(to_sink_error(e), SinkError::Unavailable { .. }));
        }
        let corrupt = to_sink_error(sqlx::Error::Decode("bad".into()));
        assert!(matches!(corrupt, SinkError::Corrupt { .. }));
    }

    #[test]
    fn table_sets_are_plain_short_names() {
        for bad in [
            "",
            "Live",
            "a-b",
            "a b",
            "x`y",
            "abcdefghijklmnopq",
            "ümlaut",
        ] {
            assert!(TableSet::new(bad).is_err(), "{bad:?}");
        }
        assert!(TableSet::new("blue").is_ok());
    }
}
