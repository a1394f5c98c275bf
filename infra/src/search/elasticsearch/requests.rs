//! The bodies the adapter sends, as plain JSON, kept apart from the transport so that what
//! Elasticsearch receives is easy to read (and is asserted byte for byte by the tests).

use std::time::Duration;

use member_domain::IdentityKey;
use member_projections::MemberDocument;
use serde_json::{json, Value};

/// How many documents a lookup by identity fetches. One member holds an identity; two do for a
/// moment while it moves between members. More than this means the store is badly behind.
pub const IDENTITY_HITS: usize = 10;

/// The index template for `index` (and `index-*`, for blue-green rebuilds): shards and refresh
/// interval from the settings; a strict mapping of keyword fields only, the document itself kept
/// in `_source` but not indexed.
pub fn index_template(index: &str, shards: u32, refresh: Duration) -> Value {
    json!({
        "index_patterns": [index, format!("{index}-*")],
        "priority": 200,
        "template": {
            "settings": {
                "number_of_shards": shards,
                "refresh_interval": format!("{}ms", refresh.as_millis()),
            },
            "mappings": {
                "dynamic": "strict",
                // Every write and get carries the member id as routing; refuse any that does not.
                "_routing": { "required": true },
                "properties": {
                    "member_id": { "type": "keyword" },
                    "version": { "type": "long" },
                    "status": { "type": "keyword" },
                    "identities": { "type": "keyword" },
                    "doc": { "type": "object", "enabled": false },
                },
            },
        },
    })
}

/// The `_source` of a member's search document. `identities` names every identity key the
/// document holds or released (see `super::super::searched_keys`).
pub fn source(doc: &MemberDocument) -> Value {
    json!({
        "member_id": doc.member_id,
        "version": doc.version,
        "status": doc.status,
        "identities": super::super::searched_keys(doc),
        "doc": doc,
    })
}

/// A lookup by identity: one term in filter context (no scoring), only the stored document back.
pub fn identity_search(key: &IdentityKey) -> Value {
    json!({
        "size": IDENTITY_HITS,
        "track_total_hits": false,
        "_source": ["doc"],
        "query": {
            "bool": {
                "filter": [
                    { "term": { "identities": key.to_string() } }
                ]
            }
        }
    })
}

/// Whether `name` is a valid Elasticsearch index name: lowercase `[a-z0-9_-]`, not starting with
/// `_` or `-`, at most 200 bytes (leaving room for rebuild suffixes).
pub fn is_index_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with(['_', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names() {
        assert!(is_index_name("member"));
        assert!(is_index_name("member_test-1"));
        assert!(!is_index_name(""));
        assert!(!is_index_name("Member"));
        assert!(!is_index_name("_member"));
        assert!(!is_index_name("member,other"));
        assert!(!is_index_name("member*"));
    }
}
