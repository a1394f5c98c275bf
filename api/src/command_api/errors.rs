//! The command API's errors and their HTTP mapping: the one place where a failure becomes a
//! status and an error code. Internal details are logged, never sent.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use member_domain::MemberError;
use member_infra::event_store::commands::CommandError;

use crate::http::error_response;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed JSON, wrong types, unknown kinds, bad values, bad ids or headers.
    #[error("{0}")]
    InvalidRequest(String),
    #[error("request body is larger than 64 KiB")]
    PayloadTooLarge,
    #[error("a valid api key is required: Authorization: Bearer <key>")]
    Unauthorized,
    #[error("this api key does not have the scope this request needs")]
    Forbidden,
    #[error("too many writes; retry later")]
    Limited { retry_after: Duration },
    #[error(transparent)]
    Rejected(MemberError),
    #[error("the identity is already bound to another member")]
    IdentityAlreadyBound,
    #[error("concurrent write to the same member; safe to retry")]
    Conflict,
    #[error("the idempotency key was used with a different request")]
    IdempotencyKeyReused,
    /// `GET .../erasure` of a member that was not erased. Do not retry; erase it first.
    #[error("this member has not been erased")]
    ErasureNotFound,
    #[error("the event store is unavailable; retry later")]
    Unavailable,
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::Limited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Rejected(e) => {
                let status = match e {
                    MemberError::MemberNotFound | MemberError::IdentityNotBound => {
                        StatusCode::NOT_FOUND
                    }
                    MemberError::NoIdentities => StatusCode::BAD_REQUEST,
                    MemberError::MemberErased => StatusCode::GONE,
                    MemberError::MemberAlreadyRegistered
                    | MemberError::MemberInactive
                    | MemberError::IdentityKindAlreadyBound(_)
                    | MemberError::CrossAccountWechatBinding => StatusCode::CONFLICT,
                };
                (status, e.code())
            }
            ApiError::IdentityAlreadyBound => (StatusCode::CONFLICT, "identity_already_bound"),
            ApiError::Conflict => (StatusCode::CONFLICT, "conflict"),
            ApiError::IdempotencyKeyReused => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
            }
            ApiError::ErasureNotFound => (StatusCode::NOT_FOUND, "erasure_not_found"),
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// Whether this outcome is the command's decided answer, to be replayed for a retry with the
    /// same idempotency key. Transient failures (conflicts, outages) are not: a retry may succeed.
    pub fn is_final_outcome(&self) -> bool {
        matches!(self, ApiError::Rejected(_) | ApiError::IdentityAlreadyBound)
    }

    pub fn body(&self) -> serde_json::Value {
        let (_, code) = self.status_and_code();
        serde_json::json!({"error": code, "message": self.to_string()})
    }
}

impl From<crate::access::AuthError> for ApiError {
    fn from(e: crate::access::AuthError) -> Self {
        match e {
            crate::access::AuthError::Unauthorized => ApiError::Unauthorized,
            crate::access::AuthError::Forbidden => ApiError::Forbidden,
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(err: CommandError) -> Self {
        match err {
            CommandError::Rejected(e) => ApiError::Rejected(e),
            CommandError::IdentityAlreadyBound { .. } => ApiError::IdentityAlreadyBound,
            CommandError::Conflict | CommandError::IdempotencyKeyInUse => ApiError::Conflict,
            CommandError::Unavailable(source) => {
                tracing::warn!(error = %source, "event store unavailable");
                ApiError::Unavailable
            }
            CommandError::Internal(source) => {
                tracing::error!(error = %source, "command failed");
                ApiError::Internal
            }
        }
    }
}

impl ApiError {
    /// A failed read of sealed events: the store unreachable, or a key that does not open
    /// (a missing master key in the configuration: an operator's error, logged).
    pub fn from_vault(err: member_infra::event_store::vault::VaultError) -> Self {
        match err {
            member_infra::event_store::vault::VaultError::Store(e) => e.into(),
            other => {
                tracing::error!(error = %other, "sealed events could not be opened");
                ApiError::Internal
            }
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        if member_infra::event_store::is_unavailable(&err) {
            tracing::warn!(error = %err, "event store unavailable");
            ApiError::Unavailable
        } else {
            tracing::error!(error = %err, "event store query failed");
            ApiError::Internal
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut response = error_response(status, code, &self.to_string());
        let headers = response.headers_mut();
        match &self {
            ApiError::Limited { retry_after } => {
                let secs = crate::query_api::errors::retry_after_seconds(*retry_after);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            ApiError::Unavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            }
            ApiError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}
