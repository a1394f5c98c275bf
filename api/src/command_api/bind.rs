//! `POST /v1/members/{id}/identities {"kind", "value", "app"?, "unionid"?}`: bind one identity
//! (mobile, WeChat unionid or openid, Tongcheng or eLong account, eLong card).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use member_domain::MemberCommand;

use super::access::Writer;
use super::errors::ApiError;
use super::extract::{member_id, ApiPath, IdempotencyKey, JsonBody};
use super::idempotency::{execute, request_hash, CommandRequest};
use super::register::IdentityInput;
use super::AppState;
use crate::access::RequestId;
use member_infra::event_store::cause::Cause;

pub async fn bind(
    State(state): State<AppState>,
    Writer(caller): Writer,
    request_id: RequestId,
    ApiPath(id): ApiPath<String>,
    IdempotencyKey(key): IdempotencyKey,
    body: Result<JsonBody<IdentityInput>, ApiError>,
) -> Result<Response, ApiError> {
    let member_id = member_id(&id)?;
    let body = body?;
    let identity = body.value.parse()?;
    Ok(execute(
        &state,
        CommandRequest {
            name: "bind",
            member_id,
            command: MemberCommand::BindIdentity { identity },
            success: StatusCode::OK,
            request_hash: request_hash(
                state.commands.vault(),
                "POST",
                &format!("/v1/members/{member_id}/identities"),
                &body.canonical,
            ),
            idempotency_key: key,
            cause: Cause::new(caller.name.clone(), request_id.0),
        },
    )
    .await)
}
