//! Running a command under an optional idempotency key: the same key with the same request
//! returns the first outcome and appends nothing; with another request it is
//! `422 idempotency_key_reused`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use member_domain::MemberCommand;
use member_infra::event_store::cause::Cause;
use member_infra::event_store::commands::{CommandError, IdempotencyTag};
use member_infra::event_store::idempotency::StoredOutcome;
use member_infra::event_store::vault::Vault;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::errors::ApiError;
use super::AppState;

/// A fingerprint of the request: method, path and canonical JSON body, keyed (the body holds
/// identity values, and an unkeyed hash of a mobile number is found by trying them all).
pub fn request_hash(vault: &Vault, method: &str, path: &str, canonical_body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(method.as_bytes());
    hasher.update(b" ");
    hasher.update(path.as_bytes());
    hasher.update(b"\n");
    hasher.update(canonical_body);
    vault.keyed_request_hash(&format!("{:x}", hasher.finalize()))
}

pub struct CommandRequest {
    pub name: &'static str,
    pub member_id: Uuid,
    pub command: MemberCommand,
    pub success: StatusCode,
    pub idempotency_key: Option<String>,
    pub request_hash: String,
    /// Who asked, under which request id: recorded on every event the command appends.
    pub cause: Cause,
}

pub async fn execute(state: &AppState, req: CommandRequest) -> Response {
    let started = std::time::Instant::now();
    let response = match execute_inner(state, &req).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    };
    let outcome = response.status().as_u16().to_string();
    metrics::counter!("member_commands_total", "command" => req.name, "status" => outcome)
        .increment(1);
    metrics::histogram!("member_command_seconds", "command" => req.name)
        .record(started.elapsed().as_secs_f64());
    response
}

async fn execute_inner(state: &AppState, req: &CommandRequest) -> Result<Response, ApiError> {
    let Some(key) = &req.idempotency_key else {
        let done = state
            .commands
            .execute_as(&req.cause, req.member_id, req.command.clone(), None)
            .await?;
        return Ok(success(req.success, done.member_id, done.version));
    };
    if let Some(stored) = state.idempotency.lookup(key).await? {
        return replay(stored, &req.request_hash);
    }
    let tag = IdempotencyTag {
        key: key.clone(),
        request_hash: req.request_hash.clone(),
        success_status: req.success.as_u16(),
    };
    let outcome = match state
        .commands
        .execute_as(&req.cause, req.member_id, req.command.clone(), Some(&tag))
        .await
    {
        // The trigger stored this outcome in the append's transaction.
        Ok(done) if done.appended > 0 => {
            return Ok(success(req.success, done.member_id, done.version));
        }
        Ok(done) => StoredOutcome {
            request_hash: req.request_hash.clone(),
            status: req.success.as_u16(),
            body: serde_json::json!({"member_id": done.member_id, "version": done.version}),
        },
        // A concurrent request with this key committed first: answer as it did.
        Err(CommandError::IdempotencyKeyInUse) => {
            return match state.idempotency.lookup(key).await? {
                Some(stored) => replay(stored, &req.request_hash),
                None => Err(ApiError::Conflict),
            };
        }
        Err(err) => {
            let err = ApiError::from(err);
            if !err.is_final_outcome() {
                return Err(err);
            }
            StoredOutcome {
                request_hash: req.request_hash.clone(),
                status: err.status_and_code().0.as_u16(),
                body: err.body(),
            }
        }
    };
    if state.idempotency.save(key, &outcome).await? {
        Ok(respond(&outcome, false))
    } else {
        // Another request with the same key stored its outcome first.
        match state.idempotency.lookup(key).await? {
            Some(stored) => replay(stored, &req.request_hash),
            None => Err(ApiError::Conflict),
        }
    }
}

fn replay(stored: StoredOutcome, request_hash: &str) -> Result<Response, ApiError> {
    if stored.request_hash != request_hash {
        return Err(ApiError::IdempotencyKeyReused);
    }
    Ok(respond(&stored, true))
}

fn respond(outcome: &StoredOutcome, replayed: bool) -> Response {
    let status = StatusCode::from_u16(outcome.status).unwrap_or(StatusCode::OK);
    let mut response = (status, Json(outcome.body.clone())).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

fn success(status: StatusCode, member_id: Uuid, version: u64) -> Response {
    (
        status,
        Json(serde_json::json!({"member_id": member_id, "version": version})),
    )
        .into_response()
}
