//! The index schema: what is indexed (ids and identities, as exact keywords), what is stored (the
//! whole document as JSON, plus the version as a fast field for the write guard), and nothing
//! else. There is no tokenization anywhere: lookups are exact term matches, like Elasticsearch
//! `keyword` fields.

use ::tantivy::schema::{Field, Schema, Value, FAST, STORED, STRING};
use ::tantivy::{TantivyDocument, Term};
use member_projections::MemberDocument;
use uuid::Uuid;

/// Field names; changing them (or their options) changes the schema, and opening an index built
/// with another schema fails instead of misreading it.
pub const MEMBER_ID: &str = "member_id";
pub const VERSION: &str = "version";
pub const IDENTITIES: &str = "identities";
pub const DOC: &str = "doc";

#[derive(Debug, Clone, Copy)]
pub struct Fields {
    /// The member id (hyphenated, lowercase): indexed as one term, stored.
    pub member_id: Field,
    /// The document version: a fast field (column) read by the write guard, stored.
    pub version: Field,
    /// Every identity the document holds or released, as its canonical key
    /// (`mobile:+8613800138000`, `wechat_openid:elong_mp:o...`): indexed as one term each, not
    /// stored (the document has them).
    pub identities: Field,
    /// The whole member document as JSON: stored only.
    pub doc: Field,
}

impl Fields {
    pub fn schema() -> (Schema, Fields) {
        let mut builder = Schema::builder();
        let member_id = builder.add_text_field(MEMBER_ID, STRING | STORED);
        let version = builder.add_u64_field(VERSION, FAST | STORED);
        let identities = builder.add_text_field(IDENTITIES, STRING);
        let doc = builder.add_text_field(DOC, STORED);
        (
            builder.build(),
            Fields {
                member_id,
                version,
                identities,
                doc,
            },
        )
    }

    pub fn member_term(&self, member_id: Uuid) -> Term {
        Term::from_field_text(self.member_id, &member_id.to_string())
    }

    pub fn identity_term(&self, key: &member_domain::IdentityKey) -> Term {
        Term::from_field_text(self.identities, &key.to_string())
    }

    /// The index document of a member document.
    pub fn index_document(&self, doc: &MemberDocument) -> TantivyDocument {
        let mut out = TantivyDocument::new();
        out.add_text(self.member_id, doc.member_id.to_string());
        out.add_u64(self.version, doc.version);
        for key in crate::search::searched_keys(doc) {
            out.add_text(self.identities, key);
        }
        out.add_text(
            self.doc,
            serde_json::to_string(doc).expect("a member document always serializes"),
        );
        out
    }

    /// The member document stored in an index document.
    pub fn member_document(&self, stored: &TantivyDocument) -> Result<MemberDocument, String> {
        let json = stored
            .get_first(self.doc)
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("stored document without a `{DOC}` field"))?;
        // Only the error's category and position: its text may quote the document (personal data).
        serde_json::from_str(json).map_err(|e| {
            format!(
                "stored `{DOC}` is not a member document ({:?} error at column {})",
                e.classify(),
                e.column()
            )
        })
    }
}
