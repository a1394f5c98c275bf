//! `POST /v1/members/{id}/erasure` (scope `erase`) and `GET /v1/members/{id}/erasure` (scope
//! `admin`): erasing a member's personal data, and the receipt (docs/decisions/0033,
//! docs/operations/erasure.md).
//!
//! The POST answers `202 {"member_id", "accepted_at"}` once `MemberErased` is durable in the
//! event store; the stores apply it asynchronously, which the receipt shows. It is idempotent
//! by nature: erasing an erased member answers `202` with the first receipt, so no
//! `Idempotency-Key` is needed.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::SecondsFormat;
use member_infra::event_store::cause::Cause;
use member_infra::event_store::erasure;
use member_projections::Target;
use serde_json::json;

use super::access::{AdminCaller, Eraser};
use super::errors::ApiError;
use super::extract::{member_id, ApiPath};
use super::AppState;
use crate::access::RequestId;

pub async fn erase(
    State(state): State<AppState>,
    Eraser(caller): Eraser,
    request_id: RequestId,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let member_id = member_id(&id)?;
    let cause = Cause::new(caller.name.clone(), request_id.0);
    let receipt = erasure::erase(&state.commands, &state.pool, &cause, member_id).await?;
    // Who erased whom, never what (the values are gone).
    tracing::info!(
        target: "audit",
        caller = %caller.name,
        member_id = %member_id,
        request_id = %cause.request_id,
        "member erasure accepted"
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "member_id": receipt.member_id,
            "accepted_at": receipt.accepted_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        })),
    )
        .into_response())
}

pub async fn receipt(
    State(state): State<AppState>,
    AdminCaller(_): AdminCaller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let member_id = member_id(&id)?;
    let Some(receipt) = erasure::receipt(&state.pool, member_id).await? else {
        return Err(ApiError::ErasureNotFound);
    };
    let stores: Vec<_> = Target::ALL
        .into_iter()
        .map(|target| {
            let applied_at = receipt
                .applied
                .iter()
                .find(|(t, _)| t == target.as_str())
                .map(|(_, at)| at.to_rfc3339_opts(SecondsFormat::Micros, true));
            json!({"target": target.as_str(), "applied_at": applied_at})
        })
        .collect();
    let complete = stores.iter().all(|s| !s["applied_at"].is_null());
    Ok(Json(json!({
        "member_id": receipt.member_id,
        "accepted_at": receipt.accepted_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        "version": receipt.version,
        "stores": stores,
        "event_store_purged_at": receipt
            .purged_at
            .map(|at| at.to_rfc3339_opts(SecondsFormat::Micros, true)),
        "complete": complete && receipt.purged_at.is_some(),
    }))
    .into_response())
}
