//! Operations outside the port: listing and removing members for `member verify --repair`, and
//! the blue-green generations of `member rebuild` (a new pair of indices beside the live one,
//! then one atomic alias swap; live reads never see a half-built index).

use ::elasticsearch::indices::{IndicesDeleteParts, IndicesGetAliasParts, IndicesGetParts};
use ::elasticsearch::{BulkOperation, BulkParts, ClearScrollParts, ScrollParts, SearchParts};
use member_domain::IdentityKey;
use member_projections::SinkError;
use serde_json::{json, Value};
use uuid::Uuid;

use super::schema::{create_generation, generation_index};
use super::ElasticsearchIndex;
use crate::search::SearchError;

/// How many ids one scroll page carries.
const PAGE: usize = 1000;

/// Two ticks of Elasticsearch's cached engine clock (see [`ElasticsearchIndex::remove`]).
const TOMBSTONE_CLOCK: std::time::Duration = std::time::Duration::from_millis(400);

impl ElasticsearchIndex {
    /// Every member id in the member index (a scroll in index order: no sorting, no scoring).
    pub async fn member_ids(&self) -> Result<Vec<Uuid>, SinkError> {
        let response = self
            .client
            .search(SearchParts::Index(&[&self.index]))
            .scroll("1m")
            .body(json!({"size": PAGE, "_source": false, "sort": ["_doc"], "query": {"match_all": {}}}))
            .send()
            .await
            .map_err(|e| self.unavailable(e))?;
        if !response.status_code().is_success() {
            return Err(self.failed("scroll", response).await);
        }
        let mut page: Value = self.read_json("scroll", response).await?;
        let mut ids = Vec::new();
        loop {
            let hits = page["hits"]["hits"].as_array().cloned().unwrap_or_default();
            if hits.is_empty() {
                break;
            }
            for hit in hits {
                let id = hit["_id"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| {
                        SinkError::corrupt(
                            self.cluster.target(),
                            "scroll: a document id is not a uuid",
                        )
                    })?;
                ids.push(id);
            }
            let scroll_id = page["_scroll_id"].as_str().unwrap_or_default().to_owned();
            let response = self
                .client
                .scroll(ScrollParts::None)
                .body(json!({"scroll": "1m", "scroll_id": scroll_id}))
                .send()
                .await
                .map_err(|e| self.unavailable(e))?;
            if !response.status_code().is_success() {
                return Err(self.failed("scroll", response).await);
            }
            page = self.read_json("scroll", response).await?;
        }
        if let Some(scroll_id) = page["_scroll_id"].as_str() {
            // Frees the search context now instead of after its minute; failure is harmless.
            let _ = self
                .client
                .clear_scroll(ClearScrollParts::None)
                .body(json!({"scroll_id": [scroll_id]}))
                .send()
                .await;
        }
        Ok(ids)
    }

    /// Deletes the documents of `members` and the identity entries of `keys` (each routed by its
    /// own id), so that a repair writes them again from the event store.
    pub async fn remove(&self, members: &[Uuid], keys: &[IdentityKey]) -> Result<(), SinkError> {
        let mut operations: Vec<BulkOperation<Value>> = Vec::new();
        for m in members {
            let id = m.to_string();
            operations.push(
                BulkOperation::delete(id.as_str())
                    .index(self.index.as_str())
                    .routing(id.as_str())
                    .into(),
            );
        }
        for k in keys {
            let id = k.to_string();
            operations.push(
                BulkOperation::delete(id.as_str())
                    .index(self.identity_index.as_str())
                    .routing(id.as_str())
                    .into(),
            );
        }
        if operations.is_empty() {
            return Ok(());
        }
        let response = self
            .client
            .bulk(BulkParts::None)
            .refresh(::elasticsearch::params::Refresh::True)
            .body(operations)
            .send()
            .await
            .map_err(|e| self.unavailable(e))?;
        if !response.status_code().is_success() {
            return Err(self.failed("bulk delete", response).await);
        }
        let body: Value = self.read_json("bulk delete", response).await?;
        let refused = body["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter(|i| {
                        let status = i["delete"]["status"].as_u64().unwrap_or(0);
                        !(200..300).contains(&status) && status != 404
                    })
                    .count()
            })
            .unwrap_or(0);
        if refused > 0 {
            return Err(SinkError::corrupt(
                self.cluster.target(),
                format!("bulk delete: {refused} items refused"),
            ));
        }
        // A refresh prunes the deletes' version tombstones (gc_deletes 0s, see `schema`), once
        // they are older than zero by the engine's cached clock, which ticks every 200 ms
        // (`thread_pool.estimated_time_interval`): wait for two ticks, then refresh.
        tokio::time::sleep(TOMBSTONE_CLOCK).await;
        self.refresh().await
    }

    /// Makes the index searchable now (verify reads what was just written).
    pub async fn refresh(&self) -> Result<(), SinkError> {
        let response = self
            .client
            .indices()
            .refresh(::elasticsearch::indices::IndicesRefreshParts::Index(&[
                &self.index,
                &self.identity_index,
            ]))
            .send()
            .await
            .map_err(|e| self.unavailable(e))?;
        if !response.status_code().is_success() {
            return Err(self.failed("refresh", response).await);
        }
        Ok(())
    }

    async fn json_or_setup(
        &self,
        what: &str,
        response: Result<::elasticsearch::http::response::Response, ::elasticsearch::Error>,
    ) -> Result<Value, SearchError> {
        let target = self.cluster.target();
        let response = response.map_err(|source| SearchError::Unavailable { target, source })?;
        let status = response.status_code();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(SearchError::Setup {
                target,
                index: self.index.clone(),
                reason: format!(
                    "{what}: status {status}, error type {}",
                    super::error_type(&body)
                ),
            });
        }
        Ok(body)
    }

    /// The concrete indices whose names are `<alias>-<generation>`, with their generations.
    async fn generations(&self, alias: &str) -> Result<Vec<(u32, String)>, SearchError> {
        let pattern = format!("{alias}-*");
        let response = self
            .client
            .indices()
            .get(IndicesGetParts::Index(&[&pattern]))
            .send()
            .await;
        let body = self.json_or_setup("list generations", response).await?;
        let prefix = format!("{alias}-");
        let mut found: Vec<(u32, String)> = body
            .as_object()
            .map(|m| {
                m.keys()
                    .filter_map(|k| Some((k.strip_prefix(&prefix)?.parse().ok()?, k.clone())))
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        Ok(found)
    }

    /// The concrete index `alias` points at.
    async fn aliased(&self, alias: &str) -> Result<String, SearchError> {
        let response = self
            .client
            .indices()
            .get_alias(IndicesGetAliasParts::Name(&[alias]))
            .send()
            .await;
        let body = self.json_or_setup("read alias", response).await?;
        let names: Vec<String> = body
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        match names.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(SearchError::Setup {
                target: self.cluster.target(),
                index: alias.to_owned(),
                reason: format!("the alias points at {} indices, expected one", names.len()),
            }),
        }
    }

    /// Creates the next generation of both indices, not aliased (so nothing reads it yet), and
    /// returns a handle that writes to them. Indices of an abandoned earlier rebuild (higher
    /// generations without the alias) are dropped first.
    pub async fn next_generation(&self) -> Result<ElasticsearchIndex, SearchError> {
        let mut next = 0;
        for alias in [self.index.clone(), self.identity_index.clone()] {
            let live = self.aliased(&alias).await?;
            let generations = self.generations(&alias).await?;
            let stale: Vec<&str> = generations
                .iter()
                .filter(|(_, name)| *name != live)
                .map(|(_, name)| name.as_str())
                .collect();
            if !stale.is_empty() {
                self.delete_indices(&stale).await?;
            }
            next = generations
                .iter()
                .map(|(g, _)| g + 1)
                .max()
                .unwrap_or(1)
                .max(next);
        }
        for alias in [&self.index, &self.identity_index] {
            create_generation(self, alias, next, false).await?;
        }
        tracing::info!(target: "member::search", cluster = self.cluster.target(), generation = next, "created the next generation");
        Ok(ElasticsearchIndex {
            cluster: self.cluster,
            client: self.client.clone(),
            index: generation_index(&self.index, next),
            identity_index: generation_index(&self.identity_index, next),
        })
    }

    /// Points both aliases at `next` in one atomic alias update, then drops the indices they
    /// pointed at before. Returns the dropped indices.
    pub async fn swap_in(&self, next: &ElasticsearchIndex) -> Result<Vec<String>, SearchError> {
        // Lookups by identity search the identity index: what the rebuild wrote since the last
        // scheduled refresh must be searchable the moment the alias points at it, or a live
        // lookup right after the swap misses a member the old generation found.
        let response = self
            .client
            .indices()
            .refresh(::elasticsearch::indices::IndicesRefreshParts::Index(&[
                &next.index,
                &next.identity_index,
            ]))
            .send()
            .await;
        self.json_or_setup("refresh the next generation", response)
            .await?;
        let old = [
            self.aliased(&self.index).await?,
            self.aliased(&self.identity_index).await?,
        ];
        let actions = json!({"actions": [
            {"remove": {"index": old[0], "alias": self.index}},
            {"add": {"index": next.index, "alias": self.index}},
            {"remove": {"index": old[1], "alias": self.identity_index}},
            {"add": {"index": next.identity_index, "alias": self.identity_index}},
        ]});
        let response = self
            .client
            .indices()
            .update_aliases()
            .body(actions)
            .send()
            .await;
        self.json_or_setup("swap aliases", response).await?;
        let names: Vec<&str> = old.iter().map(String::as_str).collect();
        self.delete_indices(&names).await?;
        Ok(old.to_vec())
    }

    /// Drops the next generation of an abandoned rebuild.
    pub async fn abandon(&self, next: &ElasticsearchIndex) -> Result<(), SearchError> {
        self.delete_indices(&[&next.index, &next.identity_index])
            .await
    }

    async fn delete_indices(&self, names: &[&str]) -> Result<(), SearchError> {
        let response = self
            .client
            .indices()
            .delete(IndicesDeleteParts::Index(names))
            .send()
            .await;
        self.json_or_setup("delete indices", response)
            .await
            .map(|_| ())
    }
}
