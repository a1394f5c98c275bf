//! The quarantine and checkpoints of `member import`. Their tables belong to the event store
//! (`member_infra::event_store::imports` holds every statement); this module adds what needs the
//! legacy record type.

use sqlx::PgPool;
use uuid::Uuid;

pub use member_infra::event_store::imports::{
    entries_of_file, entry, load_checkpoint, open_entries, resolve, save_checkpoint, Checkpoint,
    Entry,
};

use super::record::LegacyRecord;

/// A record to quarantine.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    pub file_digest: &'a str,
    pub line_number: u64,
    pub legacy_id: Option<&'a str>,
    pub member_id: Option<Uuid>,
    pub reason: &'static str,
    pub detail: Option<&'a str>,
    pub record: Option<&'a LegacyRecord>,
}

/// Quarantines a record; a line already quarantined keeps its row (and its resolution).
/// Returns whether a row was added.
pub async fn insert(pool: &PgPool, entry: NewEntry<'_>) -> anyhow::Result<bool> {
    let record = entry.record.map(serde_json::to_value).transpose()?;
    let stored = member_infra::event_store::imports::NewEntry {
        file_digest: entry.file_digest,
        line_number: entry.line_number,
        legacy_id: entry.legacy_id,
        member_id: entry.member_id,
        reason: entry.reason,
        detail: entry.detail,
        record,
    };
    Ok(member_infra::event_store::imports::insert(pool, stored).await?)
}

/// The stored legacy record of an entry, when the line could be read.
pub fn legacy_record(entry: &Entry) -> Option<LegacyRecord> {
    entry
        .record
        .clone()
        .and_then(|r| serde_json::from_value(r).ok())
}
