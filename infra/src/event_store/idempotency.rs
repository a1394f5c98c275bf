//! The first outcome of each command sent with an `Idempotency-Key`.
//!
//! Outcomes of commands that appended events are written by the event store's trigger in the
//! append's transaction. Outcomes that appended nothing (refusals, no-op binds) are written here,
//! first writer wins.

use sqlx::PgPool;

/// A stored outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOutcome {
    pub request_hash: String,
    pub status: u16,
    pub body: serde_json::Value,
}

#[derive(Clone)]
pub struct IdempotencyStore {
    pool: PgPool,
}

impl IdempotencyStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub async fn lookup(&self, key: &str) -> Result<Option<StoredOutcome>, sqlx::Error> {
        let row: Option<(String, i16, serde_json::Value)> = sqlx::query_as(
            "SELECT request_hash, status, body FROM idempotency_keys WHERE key = $1",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(request_hash, status, body)| StoredOutcome {
            request_hash,
            status: status as u16,
            body,
        }))
    }

    /// Stores an outcome unless the key already has one. Returns whether this call stored it.
    pub async fn save(&self, key: &str, outcome: &StoredOutcome) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "INSERT INTO idempotency_keys (key, request_hash, status, body) VALUES ($1, $2, $3, $4)
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(&outcome.request_hash)
        .bind(outcome.status as i16)
        .bind(&outcome.body)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes outcomes older than the retention period; returns how many.
    pub async fn expire(&self, older_than: std::time::Duration) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
        )
        .bind(older_than.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
