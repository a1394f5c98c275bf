//! `GET /v1/members/{id}/history[?reveal=true]` (scope `admin`): the member's events, oldest
//! first, each with its cause (caller, request id, time) and its payload. Identity values are
//! masked unless `reveal=true`; each reveal is logged as an access (who, whose member id, when;
//! never the values).

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::SecondsFormat;
use member_infra::event_store::cause;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::access::AdminCaller;
use super::errors::ApiError;
use super::extract::{member_id, ApiPath};
use super::AppState;
use crate::access::RequestId;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    #[serde(default)]
    reveal: bool,
}

use member_infra::event_store::members::HistoryRow as EventRow;

pub async fn history(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    request_id: RequestId,
    ApiPath(id): ApiPath<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let member_id = member_id(&id)?;
    let Query(query) = query.map_err(|_| {
        ApiError::InvalidRequest("the only query parameter is reveal=true|false".into())
    })?;
    let rows = member_infra::event_store::members::history_of(
        &state.pool,
        state.commands.vault(),
        member_id,
    )
    .await
    .map_err(ApiError::from_vault)?;
    if rows.is_empty() {
        return Err(ApiError::Rejected(
            member_domain::MemberError::MemberNotFound,
        ));
    }
    // An erased member's values are gone for every reader, revealing ones included: the history
    // keeps what happened and who caused it, never what the identities were.
    let erased = rows
        .iter()
        .any(|row| row.0 == member_domain::MemberEvent::ERASED);
    if erased && query.reveal {
        return Err(ApiError::Rejected(member_domain::MemberError::MemberErased));
    }
    if query.reveal {
        tracing::info!(
            target: "audit",
            caller = %caller.name,
            member_id = %member_id,
            request_id = %request_id.0,
            "identity values revealed"
        );
    }
    let events: Vec<Value> = rows
        .into_iter()
        .map(|row| entry(row, query.reveal, erased))
        .collect();
    Ok(Json(json!({"member_id": member_id, "events": events})).into_response())
}

/// One event as the history shows it: type, version, cause, then the payload's fields.
pub(crate) fn entry(
    (event_type, sequence, payload, metadata, recorded_at): EventRow,
    reveal: bool,
    erased: bool,
) -> Value {
    let meta = |key: &str| metadata.get(key).and_then(Value::as_str).map(str::to_owned);
    let at =
        meta(cause::AT).unwrap_or_else(|| recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true));
    let mut entry = Map::new();
    entry.insert("type".into(), json!(event_type));
    entry.insert("version".into(), json!(sequence));
    entry.insert("at".into(), json!(at));
    entry.insert("caller".into(), json!(meta(cause::CALLER)));
    entry.insert("request_id".into(), json!(meta(cause::REQUEST_ID)));
    // A payload is `{"<EventType>": {fields}}`.
    let fields = match payload {
        Value::Object(outer) => outer.into_iter().next().map(|(_, inner)| inner),
        _ => None,
    };
    if let Some(Value::Object(fields)) = fields {
        for (key, mut value) in fields {
            if key == "identity" && erased {
                erase_identity(&mut value);
            } else if key == "identity" && !reveal {
                mask_identity(&mut value);
            }
            entry.entry(key).or_insert(value);
        }
    }
    Value::Object(entry)
}

/// Masks the personal values of an identity object (`value`, and an openid's `unionid`).
fn mask_identity(identity: &mut Value) {
    let Value::Object(fields) = identity else {
        return;
    };
    for key in ["value", "unionid"] {
        if let Some(Value::String(v)) = fields.get_mut(key) {
            *v = mask(v);
        }
    }
}

/// Replaces the personal values of an identity object of an erased member.
fn erase_identity(identity: &mut Value) {
    let Value::Object(fields) = identity else {
        return;
    };
    for key in ["value", "unionid"] {
        if let Some(v) = fields.get_mut(key) {
            *v = json!("[erased]");
        }
    }
}

/// `+86138****8000` for a mobile; otherwise the first and last two characters around `****`
/// (short values: `****`).
pub fn mask(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    if value.starts_with("+86") && chars.len() == 14 {
        let head: String = chars[..6].iter().collect();
        let tail: String = chars[10..].iter().collect();
        return format!("{head}****{tail}");
    }
    if chars.len() <= 6 {
        return "****".into();
    }
    let head: String = chars[..2].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}****{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_hide_most_of_a_value() {
        assert_eq!(mask("+8613800138000"), "+86138****8000");
        assert_eq!(mask("oUnion_abcdefghijklmnopqrstuvwx"), "oU****wx");
        assert_eq!(mask("123456"), "****");
    }

    #[test]
    fn an_entry_has_the_cause_and_the_masked_payload() {
        let row: EventRow = (
            "IdentityBound".into(),
            2,
            json!({"IdentityBound": {"identity": {"kind": "wechat_openid", "app": "tongcheng_mp",
                "value": "oOpenid_tc_0000000001", "unionid": "oUnion_0000000000000000000001"}}}),
            json!({"caller": "hotel", "request_id": "r-1", "at": "2026-12-03T14:00:00.000000Z",
                "identity_generation": "1"}),
            chrono::Utc::now(),
        );
        let masked = entry(row.clone(), false, false);
        assert_eq!(masked["type"], "IdentityBound");
        assert_eq!(masked["version"], 2);
        assert_eq!(masked["caller"], "hotel");
        assert_eq!(masked["request_id"], "r-1");
        assert_eq!(masked["at"], "2026-12-03T14:00:00.000000Z");
        assert_eq!(masked["identity"]["app"], "tongcheng_mp");
        assert_eq!(masked["identity"]["value"], "oO****01");
        assert_eq!(masked["identity"]["unionid"], "oU****01");
        let revealed = entry(row.clone(), true, false);
        assert_eq!(revealed["identity"]["value"], "oOpenid_tc_0000000001");
        let erased = entry(row, false, true);
        assert_eq!(erased["identity"]["value"], "[erased]");
        assert_eq!(erased["identity"]["unionid"], "[erased]");
    }
}
