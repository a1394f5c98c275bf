//! `POST /v1/members {"identities": [...]}` -> `201 {"member_id", "version"}`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use member_domain::{Identity, MemberCommand};
use serde::Deserialize;
use uuid::Uuid;

use super::access::Writer;
use super::errors::ApiError;
use super::extract::{IdempotencyKey, JsonBody};
use super::idempotency::{execute, request_hash, CommandRequest};
use super::AppState;
use crate::access::RequestId;
use member_infra::event_store::cause::Cause;

/// One identity as a caller sends it. `app` and `unionid` are for openids only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityInput {
    pub kind: String,
    pub value: String,
    #[serde(default)]
    pub app: Option<String>,
    #[serde(default)]
    pub unionid: Option<String>,
}

impl IdentityInput {
    pub fn parse(&self) -> Result<Identity, ApiError> {
        Identity::parse(
            &self.kind,
            &self.value,
            self.app.as_deref(),
            self.unionid.as_deref(),
        )
        .map_err(|e| ApiError::InvalidRequest(e.to_string()))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    identities: Vec<IdentityInput>,
}

/// At most one identity per slot can be bound; more than this is certainly a bad request.
const MAX_IDENTITIES: usize = 16;

pub async fn register(
    State(state): State<AppState>,
    Writer(caller): Writer,
    request_id: RequestId,
    IdempotencyKey(key): IdempotencyKey,
    body: Result<JsonBody<RegisterRequest>, ApiError>,
) -> Result<Response, ApiError> {
    let body = body?;
    if body.value.identities.len() > MAX_IDENTITIES {
        return Err(ApiError::InvalidRequest(format!(
            "at most {MAX_IDENTITIES} identities"
        )));
    }
    let identities = body
        .value
        .identities
        .iter()
        .map(IdentityInput::parse)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(execute(
        &state,
        CommandRequest {
            name: "register",
            member_id: Uuid::now_v7(),
            command: MemberCommand::Register { identities },
            success: StatusCode::CREATED,
            request_hash: request_hash(
                state.commands.vault(),
                "POST",
                "/v1/members",
                &body.canonical,
            ),
            idempotency_key: key,
            cause: Cause::new(caller.name.clone(), request_id.0),
        },
    )
    .await)
}
