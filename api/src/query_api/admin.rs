//! Admin endpoints (scope `admin`; each change is logged with the caller's name): inject or clear a backend outage, pin or release a backend
//! for a class, and the status of every backend and projection.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use member_projections::Target;
use member_read_policy::routing::ReadClass;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Admin;
use super::errors::QueryError;
use super::AppState;

/// A JSON body; malformed JSON or fields are `400 invalid_request`.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for ApiJson<T> {
    type Rejection = QueryError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|_| QueryError::InvalidRequest("could not read the request body".into()))?;
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|e| QueryError::InvalidRequest(format!("invalid request: {e}")))
    }
}

fn target(name: &str) -> Result<Target, QueryError> {
    name.parse::<Target>()
        .map_err(|e| QueryError::InvalidRequest(e.to_string()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    backend: String,
    down: bool,
}

/// `POST /admin/faults {"backend": "search-primary", "down": true}`.
pub async fn faults(
    Admin(caller): Admin,
    State(state): State<AppState>,
    body: Result<ApiJson<FaultRequest>, QueryError>,
) -> Result<Json<Value>, QueryError> {
    let ApiJson(request) = body?;
    let target = set_fault(&state, &caller.name, &request.backend, request.down)?;
    Ok(Json(backend_status(&state, target)))
}

/// Injects (`down`) or clears an outage of `backend`, logged with the caller's name. Shared by
/// `POST /admin/faults` and the console; bad input changes nothing.
pub fn set_fault(
    state: &AppState,
    caller: &str,
    backend: &str,
    down: bool,
) -> Result<Target, QueryError> {
    let target = target(backend)?;
    state.registry().backend(target).set_faulted(down);
    tracing::warn!(
        backend = target.as_str(),
        down,
        caller,
        "backend fault set by an operator"
    );
    Ok(target)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingRequest {
    class: String,
    /// The backend to pin, or null to release the pin.
    pin: Option<String>,
}

/// `POST /admin/routing {"class": "order", "pin": "mysql"}` (or `"pin": null` to release).
pub async fn routing(
    Admin(caller): Admin,
    State(state): State<AppState>,
    body: Result<ApiJson<RoutingRequest>, QueryError>,
) -> Result<Json<Value>, QueryError> {
    let ApiJson(request) = body?;
    let (class, pin) = set_pin(&state, &caller.name, &request.class, request.pin.as_deref())?;
    Ok(Json(json!({
        "class": class.as_str(),
        "pin": pin.map(|t| t.as_str()),
        "chain": state.registry().chain(class).iter().map(|t| t.as_str()).collect::<Vec<_>>(),
    })))
}

/// Pins `pin` for `class` (or releases the pin: `None`), logged with the caller's name. Shared by
/// `POST /admin/routing` and the console; bad input changes nothing.
pub fn set_pin(
    state: &AppState,
    caller: &str,
    class: &str,
    pin: Option<&str>,
) -> Result<(ReadClass, Option<Target>), QueryError> {
    let class = ReadClass::parse(class).ok_or_else(|| {
        QueryError::InvalidRequest("class must be \"order\" or \"marketing\"".into())
    })?;
    let pin = pin.map(target).transpose()?;
    state
        .registry()
        .set_pin(class, pin)
        .map_err(|e| QueryError::InvalidRequest(e.to_string()))?;
    tracing::warn!(
        class = class.as_str(),
        pin = pin.map(|t| t.as_str()),
        caller,
        "routing pin set by an operator"
    );
    Ok((class, pin))
}

fn backend_status(state: &AppState, target: Target) -> Value {
    let registry = state.registry();
    let backend = registry.backend(target);
    let pinned_for: Vec<&str> = ReadClass::ALL
        .into_iter()
        .filter(|c| registry.pin(*c) == Some(target))
        .map(|c| c.as_str())
        .collect();
    json!({
        "backend": target.as_str(),
        "breaker": backend.breaker_state().as_str(),
        "faulted": backend.faulted(),
        "available": backend.available(),
        "recovering": backend.recovering(),
        "pinned_for": pinned_for,
    })
}

/// `GET /admin/status`: every backend's health, the chains, and projection lag when known.
pub async fn status(_: Admin, State(state): State<AppState>) -> Response {
    let registry = state.registry();
    let backends: Vec<Value> = Target::ALL
        .into_iter()
        .map(|t| backend_status(&state, t))
        .collect();
    let chains: serde_json::Map<String, Value> = ReadClass::ALL
        .into_iter()
        .map(|c| {
            let chain: Vec<&str> = registry.chain(c).iter().map(|t| t.as_str()).collect();
            (c.as_str().to_owned(), json!(chain))
        })
        .collect();
    let projections = match &registry.status {
        None => Value::Null,
        Some(provider) => match provider.projection_lag().await {
            Ok(lag) => json!(lag),
            Err(error) => {
                tracing::warn!(%error, "projection lag unavailable");
                json!({"error": "projection lag unavailable"})
            }
        },
    };
    Json(json!({
        "local_center": registry.local.target().as_str(),
        "ready": registry.order_path_available(),
        "backends": backends,
        "chains": chains,
        "projections": projections,
    }))
    .into_response()
}
