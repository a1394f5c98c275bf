//! `GET /v1/members/{id}` and `GET /v1/members?kind=K&value=V`.

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Json;
use member_domain::IdentityKey;
use member_read_policy::routing::ReadClass;
use serde::Deserialize;
use uuid::Uuid;

use super::auth::AuthCaller;
use super::errors::QueryError;
use super::read_path::Lookup;
use super::{metrics, AppState};

/// Header naming the backend that served the read (for operators and drills).
pub const SERVED_FROM: &str = "x-served-from";

/// Path parameters; a malformed path is `400 invalid_request`.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = QueryError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| ApiPath(t))
            .map_err(|_| QueryError::InvalidRequest("malformed path".into()))
    }
}

#[derive(Debug, Deserialize)]
pub struct IdentityQuery {
    kind: Option<String>,
    value: Option<String>,
}

/// Query parameters; a malformed query string is `400 invalid_request`.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = QueryError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(t)| ApiQuery(t))
            .map_err(|e| QueryError::InvalidRequest(format!("malformed query: {e}")))
    }
}

pub async fn by_id(
    State(state): State<AppState>,
    AuthCaller(caller): AuthCaller,
    ApiPath(raw): ApiPath<String>,
) -> Response {
    let lookup = Uuid::parse_str(&raw)
        .map(Lookup::Id)
        .map_err(|_| QueryError::InvalidRequest("member id is not a uuid".into()));
    serve(&state, &caller, lookup).await
}

pub async fn by_identity(
    State(state): State<AppState>,
    AuthCaller(caller): AuthCaller,
    query: Result<ApiQuery<IdentityQuery>, QueryError>,
) -> Response {
    let lookup = query.and_then(|ApiQuery(q)| {
        let (Some(kind), Some(value)) = (q.kind, q.value) else {
            return Err(QueryError::InvalidRequest(
                "kind and value are required (openids: value=app:openid)".into(),
            ));
        };
        IdentityKey::parse(&kind, &value)
            .map(Lookup::Identity)
            .map_err(|e| QueryError::InvalidRequest(e.to_string()))
    });
    serve(&state, &caller, lookup).await
}

async fn serve(
    state: &AppState,
    caller: &super::auth::Caller,
    lookup: Result<Lookup, QueryError>,
) -> Response {
    let class = caller.class.as_str();
    // The slot is held while the read runs (`_in_flight` lives to the end of its arm).
    let result = match state.flow.enter(caller.class) {
        Ok(_in_flight) => read(state, caller, lookup).await,
        Err(refused) => Err(refused),
    };
    match result {
        Ok(served) => {
            metrics::request(class, "ok");
            state.console.samples.served(caller.class, served.from);
            let body = served.doc.public(caller.class == ReadClass::Marketing);
            let mut response = Json(body).into_response();
            response
                .headers_mut()
                .insert(SERVED_FROM, HeaderValue::from_static(served.from));
            response
        }
        Err(error) => {
            metrics::request(class, error.outcome());
            if let QueryError::Limited { reason, .. } = &error {
                metrics::limited(class, reason.as_str());
            }
            error.into_response()
        }
    }
}

async fn read(
    state: &AppState,
    caller: &super::auth::Caller,
    lookup: Result<Lookup, QueryError>,
) -> Result<super::read_path::Served, QueryError> {
    state.flow.admit(&caller.quota, caller.class)?;
    let lookup = lookup?;
    let key = lookup.key();
    let hashed = state.flow.key_hash(&key);
    state.flow.admit_key(hashed)?;
    state
        .reads
        .read(caller.class, &lookup, &key, || state.flow.is_hot(hashed))
        .await
}
