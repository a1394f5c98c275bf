//! Writing a batch: the version guard against the committed reader, one commit per batch (or per
//! 250,000 documents in a bulk load into an empty generation).

use super::*;

#[async_trait]
impl Sink for TantivyIndex {
    fn target(&self) -> &str {
        self.shared.cluster.target()
    }

    async fn close(&self) -> Result<(), SinkError> {
        TantivyIndex::close(self).await
    }

    async fn apply(&self, records: &[MemberRecord]) -> Result<(), SinkError> {
        if records.is_empty() {
            return Ok(());
        }
        let target = self.shared.cluster.target();
        let docs: Vec<MemberDocument> = member_projections::batch::CompactBatch::of(records)
            .documents
            .into_iter()
            .cloned()
            .collect();
        let fields = self.shared.fields;
        let mut guard = self.shared.state.clone().lock_owned().await;
        let (written, kept) = blocking(target, move || {
            let state = &mut *guard;
            let writer = state
                .writer
                .as_mut()
                .ok_or_else(|| SinkError::unavailable(target, "index closed or paused for a rebuild"))?;
            if state.bulk {
                return bulk_blocking(writer, fields, &docs, &mut state.uncommitted).map_err(|e| {
                    // Documents of earlier batches are not committed yet: a retry cannot bring
                    // them back, so the load fails for good (the rebuild discards the generation).
                    SinkError::corrupt(target, format!("bulk load failed: {e}"))
                });
            }
            apply_blocking(writer, fields, &docs).map_err(|e| {
                // Drop whatever the failed batch queued, so that a retry starts from the last
                // commit; the records will be applied again.
                if let Err(error) = writer.writer.rollback() {
                    tracing::warn!(target: "member::search", cluster = target, %error, "rollback failed");
                }
                tantivy_error(target, e)
            })
        })
        .await?;
        tracing::debug!(
            target: "member::search",
            cluster = target,
            records = records.len(),
            written,
            kept,
            "batch applied"
        );
        Ok(())
    }
}

/// Documents added between commits while bulk loading: rare commits keep segments few and large.
const BULK_COMMIT_DOCS: usize = 250_000;

/// Adds a batch to a generation being bulk loaded: every member comes once and the generation
/// started empty, so there is nothing to guard against; commits every [`BULK_COMMIT_DOCS`].
fn bulk_blocking(
    state: &mut Writer,
    fields: Fields,
    docs: &[MemberDocument],
    uncommitted: &mut usize,
) -> Result<(usize, usize), TantivyError> {
    for doc in docs {
        state.writer.add_document(fields.index_document(doc))?;
    }
    *uncommitted += docs.len();
    if *uncommitted >= BULK_COMMIT_DOCS {
        state.writer.commit()?;
        *uncommitted = 0;
    }
    Ok((docs.len(), 0))
}

/// Applies one batch (one document per member) under the version guard, and commits it.
/// Returns how many documents were written and how many stored ones were already as new.
fn apply_blocking(
    state: &mut Writer,
    fields: Fields,
    docs: &[MemberDocument],
) -> Result<(usize, usize), TantivyError> {
    let stored = stored_versions(
        &state.committed.searcher(),
        fields,
        docs.iter().map(|d| d.member_id),
    )?;
    let mut written = 0;
    for doc in docs {
        if stored
            .get(&doc.member_id)
            .is_some_and(|&stored| stored >= doc.version)
        {
            continue;
        }
        // Deletes apply to documents added before them, so the new document survives.
        state.writer.delete_term(fields.member_term(doc.member_id));
        state.writer.add_document(fields.index_document(doc))?;
        written += 1;
    }
    if written > 0 {
        state.commit()?;
    }
    Ok((written, docs.len() - written))
}

/// The stored version of each of `members` that has a document (its highest, should a replaced
/// document still be alive), read from the postings of `member_id` and the `version` column.
fn stored_versions(
    searcher: &Searcher,
    fields: Fields,
    members: impl Iterator<Item = Uuid>,
) -> Result<HashMap<Uuid, u64>, TantivyError> {
    let mut segments = Vec::with_capacity(searcher.segment_readers().len());
    for segment in searcher.segment_readers() {
        segments.push((
            segment.inverted_index(fields.member_id)?,
            segment.fast_fields().u64(schema::VERSION)?,
            segment.alive_bitset(),
        ));
    }
    let mut versions = HashMap::new();
    for member in members {
        let term = fields.member_term(member);
        for (postings, column, alive) in &segments {
            let Some(mut docs) = postings.read_postings(&term, IndexRecordOption::Basic)? else {
                continue;
            };
            let mut doc = docs.doc();
            while doc != TERMINATED {
                if alive.is_none_or(|a| a.is_alive(doc)) {
                    if let Some(version) = column.first(doc) {
                        let entry = versions.entry(member).or_insert(version);
                        *entry = (*entry).max(version);
                    }
                }
                doc = docs.advance();
            }
        }
    }
    Ok(versions)
}
