//! Reading: by id and by identity, from the near-real-time snapshot.

use super::*;

/// Every live document matching `term`, in the near-real-time snapshot.
fn find(
    target: &str,
    searcher: &Searcher,
    fields: Fields,
    term: Term,
) -> Result<Vec<MemberDocument>, SinkError> {
    let query = TermQuery::new(term, IndexRecordOption::Basic);
    let hits = searcher
        .search(&query, &DocSetCollector)
        .map_err(|e| tantivy_error(target, e))?;
    hits.into_iter()
        .map(|address| {
            let stored: TantivyDocument = searcher
                .doc(address)
                .map_err(|e| tantivy_error(target, e))?;
            fields
                .member_document(&stored)
                .map_err(|reason| SinkError::corrupt(target, reason))
        })
        .collect()
}

#[async_trait]
impl MemberReader for TantivyIndex {
    fn target(&self) -> &str {
        self.shared.cluster.target()
    }

    async fn by_id(&self, member_id: Uuid) -> Result<Option<MemberDocument>, SinkError> {
        let target = self.shared.cluster.target();
        let searcher = self.searcher();
        let fields = self.shared.fields;
        let docs = blocking(target, move || {
            find(target, &searcher, fields, fields.member_term(member_id))
        })
        .await?;
        Ok(docs.into_iter().max_by_key(|d| d.version))
    }

    async fn by_identity(&self, key: &IdentityKey) -> Result<Option<MemberDocument>, SinkError> {
        let target = self.shared.cluster.target();
        let searcher = self.searcher();
        let fields = self.shared.fields;
        let term = fields.identity_term(key);
        let docs = blocking(target, move || find(target, &searcher, fields, term)).await?;
        Ok(holder_of(key, docs))
    }
}
