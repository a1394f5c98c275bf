//! `DELETE /v1/members/{id}/identities/{kind}/{value}` (openids: `{kind}/{app}:{value}`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use member_domain::{IdentityKey, MemberCommand, UnbindReason};

use super::access::Writer;
use super::errors::ApiError;
use super::extract::{member_id, ApiPath, IdempotencyKey};
use super::idempotency::{execute, request_hash, CommandRequest};
use super::AppState;
use crate::access::RequestId;
use member_infra::event_store::cause::Cause;

pub async fn unbind(
    State(state): State<AppState>,
    Writer(caller): Writer,
    request_id: RequestId,
    ApiPath((id, kind, value)): ApiPath<(String, String, String)>,
    IdempotencyKey(key): IdempotencyKey,
) -> Result<Response, ApiError> {
    let member_id = member_id(&id)?;
    let identity =
        IdentityKey::parse(&kind, &value).map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    Ok(execute(
        &state,
        CommandRequest {
            name: "unbind",
            member_id,
            request_hash: request_hash(
                state.commands.vault(),
                "DELETE",
                &format!("/v1/members/{member_id}/identities/{identity}"),
                b"",
            ),
            command: MemberCommand::UnbindIdentity {
                key: identity,
                reason: UnbindReason::MemberRequest,
            },
            success: StatusCode::OK,
            idempotency_key: key,
            cause: Cause::new(caller.name.clone(), request_id.0),
        },
    )
    .await)
}
