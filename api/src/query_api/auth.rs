//! The query API's callers (see [`crate::access::callers`]): reads need scope `read`, the admin
//! endpoints scope `admin`. `401` without a known key, `403` without the scope.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use member_infra::config::Scope;

use super::errors::QueryError;
use super::AppState;
pub use crate::access::Caller;

/// Extracts a caller with scope `read`, or answers 401/403.
pub struct AuthCaller(pub Arc<Caller>);

impl FromRequestParts<AppState> for AuthCaller {
    type Rejection = QueryError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = state
            .callers
            .authorize(&parts.headers, Scope::Read)
            .map_err(QueryError::from);
        if let Err(e) = &caller {
            super::metrics::request("none", e.outcome());
        }
        caller.map(AuthCaller)
    }
}

/// Proof that the request carries a key with scope `admin`.
pub struct Admin(pub Arc<Caller>);

impl FromRequestParts<AppState> for Admin {
    type Rejection = QueryError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        state
            .callers
            .authorize(&parts.headers, Scope::Admin)
            .map(Admin)
            .map_err(QueryError::from)
    }
}
