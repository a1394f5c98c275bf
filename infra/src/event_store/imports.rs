//! The tables of `member import` (migration 0004): per-file checkpoints and the quarantine of
//! records that were not imported, which `member governance` works on. Every statement on them
//! is here; the tools call these functions.

use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// Where the import of a file stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// The first line not yet handled (1-based).
    pub next_line: u64,
    pub finished: bool,
}

pub async fn load_checkpoint(pool: &PgPool, digest: &str) -> sqlx::Result<Option<Checkpoint>> {
    let row: Option<(i64, bool)> = sqlx::query_as(
        "SELECT next_line, finished_at IS NOT NULL FROM import_checkpoints WHERE file_digest = $1",
    )
    .bind(digest)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(next_line, finished)| Checkpoint {
        next_line: next_line as u64,
        finished,
    }))
}

/// Records progress. The checkpoint never moves back (a `--rescan` run re-handles lines without
/// forgetting how far the file was imported).
pub async fn save_checkpoint(pool: &PgPool, digest: &str, at: Checkpoint) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO import_checkpoints AS c (file_digest, next_line, finished_at)
         VALUES ($1, $2, CASE WHEN $3 THEN now() END)
         ON CONFLICT (file_digest) DO UPDATE
            SET next_line = greatest(c.next_line, EXCLUDED.next_line),
                finished_at = coalesce(c.finished_at, EXCLUDED.finished_at),
                updated_at = now()",
    )
    .bind(digest)
    .bind(at.next_line as i64)
    .bind(at.finished)
    .execute(pool)
    .await?;
    Ok(())
}

/// A record to quarantine.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    pub file_digest: &'a str,
    pub line_number: u64,
    pub legacy_id: Option<&'a str>,
    pub member_id: Option<Uuid>,
    pub reason: &'static str,
    pub detail: Option<&'a str>,
    /// The legacy record as JSON, when the line could be read.
    pub record: Option<serde_json::Value>,
}

/// Quarantines a record; a line already quarantined keeps its row (and its resolution).
/// Returns whether a row was added.
pub async fn insert(pool: &PgPool, entry: NewEntry<'_>) -> sqlx::Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO import_quarantine
            (file_digest, line_number, legacy_id, member_id, reason, detail, record)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (file_digest, line_number) DO NOTHING",
    )
    .bind(entry.file_digest)
    .bind(entry.line_number as i64)
    .bind(entry.legacy_id)
    .bind(entry.member_id)
    .bind(entry.reason)
    .bind(entry.detail)
    .bind(entry.record)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// A quarantined record, as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Entry {
    pub id: i64,
    pub file_digest: String,
    pub line_number: i64,
    pub legacy_id: Option<String>,
    pub member_id: Option<Uuid>,
    pub reason: String,
    pub detail: Option<String>,
    #[serde(skip)]
    pub record: Option<serde_json::Value>,
    pub status: String,
    pub resolved_by: Option<String>,
    pub resolution_note: Option<String>,
}

impl Entry {
    /// The name operators use for it (`member governance repair --entry q-12`).
    pub fn name(&self) -> String {
        format!("q-{}", self.id)
    }
}

const COLUMNS: &str =
    "id, file_digest, line_number, legacy_id, member_id, reason, detail, record, \
                       status, resolved_by, resolution_note";

pub async fn entries_of_file(pool: &PgPool, digest: &str) -> sqlx::Result<Vec<Entry>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM import_quarantine WHERE file_digest = $1 ORDER BY line_number"
    ))
    .bind(digest)
    .fetch_all(pool)
    .await
}

pub async fn open_entries(pool: &PgPool) -> sqlx::Result<Vec<Entry>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM import_quarantine WHERE status = 'open' ORDER BY id"
    ))
    .fetch_all(pool)
    .await
}

pub async fn entry(pool: &PgPool, id: i64) -> sqlx::Result<Option<Entry>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM import_quarantine WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Closes an open entry with who resolved it, how and why. Returns false when it was not open
/// (someone else resolved it first).
pub async fn resolve(
    pool: &PgPool,
    id: i64,
    status: &str,
    actor: &str,
    note: &str,
    member_id: Option<Uuid>,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE import_quarantine
         SET status = $2, resolved_by = $3, resolution_note = $4, resolved_at = now(),
             member_id = coalesce($5, member_id)
         WHERE id = $1 AND status = 'open'",
    )
    .bind(id)
    .bind(status)
    .bind(actor)
    .bind(note)
    .bind(member_id)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(done == 1)
}
