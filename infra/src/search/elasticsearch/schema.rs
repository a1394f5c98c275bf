//! The two indices of a cluster, their templates and aliases.
//!
//! Each alias (`<prefix>` for members, `<prefix>_identity` for identities) points at one
//! concrete index, `<alias>-<generation>`; the first start creates generation `000001`. The
//! index templates (one per alias, matching `<alias>-*`) carry the settings and the strict,
//! keyword-only mappings, so that every generation a rebuild creates gets them too.

use std::time::Duration;

use ::elasticsearch::indices::{
    IndicesCreateParts, IndicesExistsParts, IndicesPutIndexTemplateParts,
};
use serde_json::{json, Value};

use super::{error_of, ElasticsearchIndex};
use crate::search::SearchError;

/// The generation the first start creates behind each alias.
pub const FIRST_GENERATION: u32 = 1;

/// The identity alias of a member alias.
pub fn identity_alias(index: &str) -> String {
    format!("{index}_identity")
}

/// The concrete index of `alias` at `generation`.
pub fn generation_index(alias: &str, generation: u32) -> String {
    format!("{alias}-{generation:06}")
}

/// Index settings shared by both templates: shards and replicas from the settings, refresh
/// interval from `search.refresh_ms`. `gc_deletes: 0s`: a deleted document leaves no version
/// tombstone once refreshed, so that `member verify --repair` can delete a damaged document and
/// write the truth again at its (lower) version. Nothing else deletes: the projectors only
/// index, so the tombstones' usual job (ordering a delete against late writes) does not arise.
fn settings(shards: u32, replicas: u32, refresh: Duration) -> Value {
    json!({
        "number_of_shards": shards,
        "number_of_replicas": replicas,
        "refresh_interval": format!("{}ms", refresh.as_millis()),
        "gc_deletes": "0s",
    })
}

/// The template of the member indices: documents keyed and routed by member id; `member_id` and
/// `status` are the only indexed fields (keywords), the document itself is kept in `_source`
/// under `doc` but not indexed.
pub fn member_template(alias: &str, shards: u32, replicas: u32, refresh: Duration) -> Value {
    json!({
        "index_patterns": [format!("{alias}-*")],
        "priority": 200,
        "template": {
            "settings": settings(shards, replicas, refresh),
            "mappings": {
                "dynamic": "strict",
                // Every write and get carries the member id as routing; refuse any that does not.
                "_routing": { "required": true },
                "properties": {
                    "member_id": { "type": "keyword" },
                    "status": { "type": "keyword" },
                    "doc": { "type": "object", "enabled": false },
                },
            },
        },
    })
}

/// The template of the identity indices: one entry per identity, keyed and routed by the
/// identity key, its version the ownership generation. `member_id` is the holder (absent for a
/// release); `generation` is stored, not indexed (Elasticsearch's `_version` is the guard).
pub fn identity_template(alias: &str, shards: u32, replicas: u32, refresh: Duration) -> Value {
    json!({
        "index_patterns": [format!("{alias}-*")],
        "priority": 200,
        "template": {
            "settings": settings(shards, replicas, refresh),
            "mappings": {
                "dynamic": "strict",
                "_routing": { "required": true },
                "properties": {
                    "member_id": { "type": "keyword" },
                    "generation": { "type": "long", "index": false, "doc_values": false },
                },
            },
        },
    })
}

/// Whether `name` is a valid Elasticsearch index name: lowercase `[a-z0-9_-]`, not starting with
/// `_` or `-`, at most 200 bytes (leaving room for the identity and generation suffixes).
pub fn is_index_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with(['_', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Puts both templates (created or updated), then creates the first generation of each alias
/// unless an index or alias of that name exists.
pub(super) async fn set_up(
    es: &ElasticsearchIndex,
    options: &super::IndexOptions,
) -> Result<(), SearchError> {
    let (shards, replicas, refresh) = (options.shards, options.replicas, options.refresh);
    let templates = [
        (
            es.index.as_str(),
            member_template(&es.index, shards, replicas, refresh),
        ),
        (
            es.identity_index.as_str(),
            identity_template(&es.identity_index, shards, replicas, refresh),
        ),
    ];
    for (alias, template) in templates {
        put_template(es, alias, template).await?;
        ensure_alias(es, alias).await?;
    }
    Ok(())
}

fn setup_error(es: &ElasticsearchIndex, index: &str, reason: String) -> SearchError {
    SearchError::Setup {
        target: es.cluster.target(),
        index: index.to_owned(),
        reason,
    }
}

fn unavailable(es: &ElasticsearchIndex, source: ::elasticsearch::Error) -> SearchError {
    SearchError::Unavailable {
        target: es.cluster.target(),
        source,
    }
}

async fn put_template(
    es: &ElasticsearchIndex,
    alias: &str,
    template: Value,
) -> Result<(), SearchError> {
    let response = es
        .client
        .indices()
        .put_index_template(IndicesPutIndexTemplateParts::Name(alias))
        .body(template)
        .send()
        .await
        .map_err(|e| unavailable(es, e))?;
    if response.status_code().is_success() {
        return Ok(());
    }
    let (status, error_type) = error_of(response).await;
    Err(setup_error(
        es,
        alias,
        format!("index template: status {status}, error type {error_type}"),
    ))
}

/// Creates `<alias>-000001` with the alias unless `alias` names an index or alias already.
pub async fn ensure_alias(es: &ElasticsearchIndex, alias: &str) -> Result<(), SearchError> {
    let exists = es
        .client
        .indices()
        .exists(IndicesExistsParts::Index(&[alias]))
        .send()
        .await
        .map_err(|e| unavailable(es, e))?;
    if exists.status_code().is_success() {
        return Ok(());
    }
    create_generation(es, alias, FIRST_GENERATION, true).await
}

/// Creates `<alias>-<generation>` (from the alias's template); with `aliased`, the alias points
/// at it from the start. An index of that name created concurrently counts as created.
pub async fn create_generation(
    es: &ElasticsearchIndex,
    alias: &str,
    generation: u32,
    aliased: bool,
) -> Result<(), SearchError> {
    let index = generation_index(alias, generation);
    let body = if aliased {
        json!({ "aliases": { alias: {} } })
    } else {
        json!({})
    };
    let response = es
        .client
        .indices()
        .create(IndicesCreateParts::Index(&index))
        .body(body)
        .send()
        .await
        .map_err(|e| unavailable(es, e))?;
    if response.status_code().is_success() {
        return Ok(());
    }
    let (status, error_type) = error_of(response).await;
    // Another process created it between our check and our create.
    if error_type == "resource_already_exists_exception" {
        return Ok(());
    }
    Err(setup_error(
        es,
        &index,
        format!("create index: status {status}, error type {error_type}"),
    ))
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

    #[test]
    fn aliases_and_generations() {
        assert_eq!(identity_alias("member"), "member_identity");
        assert_eq!(generation_index("member", 1), "member-000001");
        assert_eq!(
            generation_index("member_identity", 12),
            "member_identity-000012"
        );
    }
}
