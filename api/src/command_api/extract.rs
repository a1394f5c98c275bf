//! Extractors that answer bad input with the contract's JSON errors instead of axum's text ones.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::errors::ApiError;

/// A JSON body, with the canonical form of the JSON (keys sorted, no whitespace) used to
/// recognise a retried request under the same idempotency key.
pub struct JsonBody<T> {
    pub value: T,
    pub canonical: Vec<u8>,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::InvalidRequest("could not read the request body".into())
            }
        })?;
        let json: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::InvalidRequest(format!(
                "malformed json at line {} column {}",
                e.line(),
                e.column()
            ))
        })?;
        let canonical = serde_json::to_vec(&json).expect("a json value serializes");
        let value = serde_json::from_value(json).map_err(|e| {
            ApiError::InvalidRequest(format!("invalid request: {}", without_values(&e)))
        })?;
        Ok(Self { value, canonical })
    }
}

/// serde's message without the value it refused (`invalid type: integer `13800138000`, expected
/// a string` becomes `invalid type: integer, expected a string`): the value may be personal
/// data, and error messages never carry it. Field and variant names are kept.
fn without_values(e: &serde_json::Error) -> String {
    let message = e.to_string();
    for prefix in ["invalid type: ", "invalid value: ", "invalid length: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let what = rest.split([' ', ',']).next().unwrap_or("value");
            let expected = rest.find(", expected").map(|at| &rest[at..]).unwrap_or("");
            return format!("{prefix}{what}{expected}");
        }
    }
    message
}

/// Path parameters; a malformed path is `400 invalid_request`.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| ApiPath(t))
            .map_err(|_| ApiError::InvalidRequest("malformed path".into()))
    }
}

/// A member id from the path: any UUID spelling, normalized.
pub fn member_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::InvalidRequest("member id is not a uuid".into()))
}

/// The optional `Idempotency-Key` header: 1 to 255 visible ASCII characters.
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(Self(None));
        };
        let bad = || {
            ApiError::InvalidRequest(
                "Idempotency-Key must be 1 to 255 visible ascii characters".into(),
            )
        };
        let key = value.to_str().map_err(|_| bad())?;
        if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad());
        }
        Ok(Self(Some(key.to_owned())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        value: String,
        n: Option<u8>,
    }

    fn message(json: serde_json::Value) -> String {
        without_values(&serde_json::from_value::<Body>(json).unwrap_err())
    }

    #[test]
    fn refusals_never_echo_the_value() {
        let m = message(serde_json::json!({"value": 13800138000u64}));
        assert_eq!(m, "invalid type: integer, expected a string");
        let m = message(serde_json::json!({"value": "x", "n": 13800138000u64}));
        assert!(
            !m.contains("13800138000") && m.starts_with("invalid value"),
            "{m}"
        );
        let m = message(serde_json::json!({"value": ["+8613800138000"]}));
        assert!(!m.contains("138"), "{m}");
        let m = message(serde_json::json!({}));
        assert_eq!(m, "missing field `value`");
    }
}
