//! The query API's errors and their HTTP mapping: the one place where a failure becomes a status,
//! an error code and headers. Internal details are logged, never sent.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::http::error_response;

/// Why a request was refused with 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitReason {
    /// The caller is over its own quota.
    Quota,
    /// The process is over its global budget (order traffic).
    Global,
    /// Marketing traffic is over its share of the global budget (shed first).
    MarketingShed,
    /// One identity (or member id) is read too often.
    Hotspot,
    /// The process is serving `max_in_flight` requests already (marketing: its share of them).
    Overloaded,
}

impl LimitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitReason::Quota => "quota",
            LimitReason::Global => "global",
            LimitReason::MarketingShed => "marketing_shed",
            LimitReason::Hotspot => "hotspot",
            LimitReason::Overloaded => "overloaded",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Bad member id, unknown kind, bad value, malformed query or body.
    #[error("{0}")]
    InvalidRequest(String),
    #[error("a valid api key is required: Authorization: Bearer <key>")]
    Unauthorized,
    #[error("this api key does not have the scope this request needs")]
    Forbidden,
    #[error("no member matches")]
    MemberNotFound,
    #[error("too many requests ({}); retry later", .reason.as_str())]
    Limited {
        reason: LimitReason,
        retry_after: Duration,
    },
    #[error("every backend for this caller's class is unavailable; retry later")]
    Unavailable,
}

impl QueryError {
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            QueryError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            QueryError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            QueryError::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            QueryError::MemberNotFound => (StatusCode::NOT_FOUND, "member_not_found"),
            QueryError::Limited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            QueryError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }

    /// The outcome label of the requests metric.
    pub fn outcome(&self) -> &'static str {
        match self {
            QueryError::InvalidRequest(_) => "invalid",
            QueryError::Unauthorized => "unauthorized",
            QueryError::Forbidden => "forbidden",
            QueryError::MemberNotFound => "not_found",
            QueryError::Limited { .. } => "limited",
            QueryError::Unavailable => "unavailable",
        }
    }
}

impl From<crate::access::AuthError> for QueryError {
    fn from(e: crate::access::AuthError) -> Self {
        match e {
            crate::access::AuthError::Unauthorized => QueryError::Unauthorized,
            crate::access::AuthError::Forbidden => QueryError::Forbidden,
        }
    }
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut response = error_response(status, code, &self.to_string());
        let headers = response.headers_mut();
        match &self {
            QueryError::Limited { retry_after, .. } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after_seconds(*retry_after)),
                );
            }
            QueryError::Unavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            }
            QueryError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(10)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_seconds(Duration::from_secs(7)), 7);
    }
}
