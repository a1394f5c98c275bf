//! The PostgreSQL event store (postgres-es) and the write path built on it.
//!
//! - [`cause`]: who did what (caller, request id, time), recorded on every event;
//! - [`commands`]: executes member commands: load, decide, append, with the cross-member
//!   uniqueness rule enforced by the database in the append's transaction;
//! - [`erasure`]: the erasure of a member's personal data and its receipt;
//! - [`idempotency`]: the first outcome of each command sent with an idempotency key;
//! - [`append`]: the event repository (postgres-es reads, a one-statement append);
//! - [`group_commit`]: the appends of concurrent commands, written in one statement;
//! - [`member_cache`]: members the command path wrote recently, a guess an append confirms;
//! - [`replay`]: the fold of every member from its events (rebuild, verify);
//! - [`members`]: the tools' other reads and the bulk append of `member seed --bulk`;
//! - [`vault`]: crypto-shredding: members' data keys, sealing identity values, keyed hashes;
//! - [`imports`]: the checkpoints and quarantine of `member import`.

pub mod append;
pub mod cause;
pub mod commands;
pub mod erasure;
pub mod group_commit;
pub mod idempotency;
pub mod imports;
pub mod member_cache;
pub mod members;
pub mod replay;
pub mod vault;

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::config::PostgresSettings;

/// The `aggregate_type` of every member event (cqrs-es's type of the aggregate): the one value
/// statements on `events` filter on.
pub const AGGREGATE_TYPE: &str = <member_domain::Member as cqrs_es::Aggregate>::TYPE;

/// The schema migrations of the event store (`infra/migrations/postgres`).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Connects a pool to the event store. Fails fast (5 s) when the database does not answer.
pub async fn connect(settings: &PostgresSettings) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = settings.url.expose_secret().parse()?;
    PgPoolOptions::new()
        .max_connections(settings.max_connections.get())
        .acquire_timeout(Duration::from_secs(5))
        // sqlx pings every connection it hands out by default: one more round trip per
        // statement, which on the command path (one statement per command) doubled them. A
        // connection that died meanwhile fails its statement instead; every caller already
        // treats that as "unavailable, retry" (503 on the command API, backoff elsewhere).
        .test_before_acquire(false)
        .connect_with(options)
        .await
}

/// A pool that connects on first use: for roles that only write to the event store now and
/// then (the projectors' erasure receipts), so they start, and keep projecting, while it is down.
pub fn connect_lazy(settings: &PostgresSettings) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = settings.url.expose_secret().parse()?;
    Ok(PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options))
}

/// Whether `err` says the event store cannot take the statement now, rather than that it refused
/// the statement itself: the connection failed or was never made, or the server is not (or no
/// longer) a writable primary. During a fail-over (ADR 0037) a command meets exactly these: the old
/// leader shutting down (`57P01` admin shutdown, `57P02` crash shutdown, `57P03` cannot connect
/// now), a node that is a standby now (`25006` read-only transaction), a connection refused or cut
/// (class `08`, or an I/O error), too many connections while clients reconnect (`53300`), and a
/// connection the endpoint accepted and closed at once because no node leads (sqlx reports that
/// as a protocol error: "unexpected response from SSLRequest"; any answer it cannot read leaves
/// the outcome as unknown as a lost connection does). Callers answer these with "unavailable,
/// retry" (503) and never retry the statement themselves: a commit whose connection failed may
/// have been made.
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08")
                || matches!(&*code, "57P01" | "57P02" | "57P03" | "25006" | "53300")
        }),
        _ => false,
    }
}

/// Brings the schema up to date. Safe to run concurrently from several processes: sqlx takes an
/// advisory lock.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}
