//! `X-Request-Id`: the caller's, when it is 1 to 128 visible ASCII characters, otherwise a new
//! UUID v7. Every response of both APIs carries it, the request's log lines carry it in their
//! span, and every event a request appends records it (with the caller's name and the time).

use std::convert::Infallible;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id taken from a caller.
pub const MAX_LEN: usize = 128;

/// The request id of the request being served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    /// The caller's id when valid, otherwise a new one.
    pub fn from_header(value: Option<&HeaderValue>) -> Self {
        value
            .and_then(|v| v.to_str().ok())
            .filter(|v| valid(v))
            .map(|v| RequestId(v.to_owned()))
            .unwrap_or_else(RequestId::generate)
    }

    pub fn generate() -> Self {
        RequestId(uuid::Uuid::now_v7().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn valid(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

/// The middleware: assigns the id, runs the request in a span that names it, echoes it.
pub async fn propagate(mut request: Request, next: Next) -> Response {
    let id = RequestId::from_header(request.headers().get(HEADER));
    request.extensions_mut().insert(id.clone());
    let span = tracing::info_span!("request", request_id = %id.0);
    let mut response = next.run(request).instrument(span).await;
    // Valid by construction (visible ASCII), so this never fails.
    if let Ok(value) = HeaderValue::from_str(&id.0) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(|| RequestId::from_header(parts.headers.get(HEADER))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids_are_kept_and_others_replaced() {
        let keep = |s: &str| RequestId::from_header(Some(&HeaderValue::from_str(s).unwrap())).0;
        assert_eq!(keep("abc-123"), "abc-123");
        let long = "a".repeat(MAX_LEN);
        assert_eq!(keep(&long), long);
        for bad in ["", "has space", &"a".repeat(MAX_LEN + 1)] {
            let id = keep(bad);
            assert_ne!(id, bad);
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        }
        let non_ascii = HeaderValue::from_bytes("é".as_bytes()).unwrap();
        assert!(uuid::Uuid::parse_str(&RequestId::from_header(Some(&non_ascii)).0).is_ok());
        let generated = RequestId::from_header(None).0;
        assert_eq!(
            uuid::Uuid::parse_str(&generated).unwrap().get_version_num(),
            7
        );
    }
}
