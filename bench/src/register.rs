//! Registering a member with an elong card through the command API, as the drills' writers do.

use anyhow::Context;
use serde_json::json;

/// An acknowledged registration: the member and the version the command API answered.
#[derive(Clone)]
pub struct Acked {
    pub member_id: String,
    pub version: i64,
}

/// One `POST /v1/members` with the card as the only identity, as the local writer, with
/// `idempotency_key` when given (a retry of the same write). Anything but `201` is an error.
pub async fn register_card(
    client: &reqwest::Client,
    url: &str,
    card: &str,
    idempotency_key: Option<&str>,
) -> anyhow::Result<Acked> {
    let mut request = client.post(url).bearer_auth("local-writer-key");
    if let Some(key) = idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    let r = request
        .json(&json!({"identities": [{"kind": "elong_card", "value": card}]}))
        .send()
        .await?;
    anyhow::ensure!(r.status().as_u16() == 201, "register: {}", r.status());
    let v: serde_json::Value = r.json().await?;
    Ok(Acked {
        member_id: v["member_id"]
            .as_str()
            .context("member_id in the response")?
            .to_owned(),
        version: v["version"].as_i64().context("version in the response")?,
    })
}
