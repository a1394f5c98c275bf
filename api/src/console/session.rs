//! Sign-in, the session cookie and sign-out.
//!
//! The key is checked by the callers table ([`crate::access::Callers::authenticate`]: constant
//! time, the one key check of the project) and never kept: the session holds the caller. The
//! cookie carries 32 random bytes; the server keeps only their SHA-256, so the session table
//! (or a timing difference of its lookup) gives away no usable token. Sessions live in the
//! process: a restart signs everyone out, which is acceptable for an operations console.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use member_infra::config::Scope;
use rand::Rng;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::csrf;
use super::errors::ConsoleError;
use crate::access::Caller;
use crate::query_api::AppState;

pub const COOKIE: &str = "member_console";

/// A session ends after this long without a request.
const IDLE: Duration = Duration::from_secs(30 * 60);
/// ... and after this long in any case.
const MAX_AGE: Duration = Duration::from_secs(8 * 3600);

struct Session {
    caller: Arc<Caller>,
    csrf: String,
    created: Instant,
    last_seen: Instant,
}

#[derive(Default)]
pub struct Sessions {
    by_digest: Mutex<HashMap<[u8; 32], Session>>,
}

/// A signed-in operator (the extractor answers "sign in first" without a session).
#[derive(Clone)]
pub struct Operator {
    pub caller: Arc<Caller>,
    /// The session's token for forms (see [`csrf`]).
    pub csrf: String,
    digest: [u8; 32],
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// 32 bytes from the thread's CSPRNG, hex.
fn random_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.by_digest.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session for `caller`; returns the cookie's token.
    fn open(&self, caller: Arc<Caller>) -> String {
        let token = random_token();
        let now = Instant::now();
        let mut table = self.table();
        table.retain(|_, s| live(s, now));
        table.insert(
            digest(&token),
            Session {
                caller,
                csrf: random_token(),
                created: now,
                last_seen: now,
            },
        );
        token
    }

    fn find(&self, token: &str) -> Option<Operator> {
        let key = digest(token);
        let now = Instant::now();
        let mut table = self.table();
        let session = table.get_mut(&key)?;
        if !live(session, now) {
            table.remove(&key);
            return None;
        }
        session.last_seen = now;
        Some(Operator {
            caller: session.caller.clone(),
            csrf: session.csrf.clone(),
            digest: key,
        })
    }

    fn close(&self, operator: &Operator) {
        self.table().remove(&operator.digest);
    }

    /// Whether anyone is signed in (the pipeline sampler only asks the broker then).
    pub fn any(&self) -> bool {
        let now = Instant::now();
        self.table().values().any(|s| live(s, now))
    }
}

fn live(session: &Session, now: Instant) -> bool {
    now.duration_since(session.last_seen) < IDLE && now.duration_since(session.created) < MAX_AGE
}

/// The session token of the request's cookie.
fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        cookie_token(&parts.headers)
            .and_then(|token| state.console.sessions.find(token))
            .ok_or(ConsoleError::SignInRequired)
    }
}

/// The operator when signed in; `None` otherwise (the sign-in form is shown instead).
pub struct MaybeOperator(pub Option<Operator>);

impl FromRequestParts<AppState> for MaybeOperator {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(MaybeOperator(
            Operator::from_request_parts(parts, state).await.ok(),
        ))
    }
}

#[derive(Deserialize)]
pub struct SignIn {
    key: String,
}

/// `POST /console/login` (form `key`): a key with scope `admin` opens a session.
pub async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<SignIn>, axum::extract::rejection::FormRejection>,
) -> Result<Response, ConsoleError> {
    csrf::same_origin(&headers)?;
    let Form(form) = form.map_err(|_| ConsoleError::SignInRefused)?;
    let caller = state
        .callers
        .authenticate(form.key.trim())
        .ok_or(ConsoleError::SignInRefused)?;
    if !caller.has(Scope::Admin) {
        tracing::warn!(caller = %caller.name, "console sign-in refused: no scope admin");
        return Err(ConsoleError::NotAdmin);
    }
    tracing::info!(target: "audit", caller = %caller.name, "console sign-in");
    let token = state.console.sessions.open(caller);
    let cookie = format!(
        "{COOKIE}={token}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}",
        MAX_AGE.as_secs()
    );
    let mut response = Redirect::to("/console").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("hex and ascii"),
    );
    Ok(response)
}

#[derive(Deserialize)]
pub struct SignOut {
    csrf: String,
}

/// `POST /console/logout`: closes the session and clears the cookie.
pub async fn sign_out(
    State(state): State<AppState>,
    operator: Operator,
    headers: HeaderMap,
    form: Result<Form<SignOut>, axum::extract::rejection::FormRejection>,
) -> Result<Response, ConsoleError> {
    let Form(form) = form.map_err(|_| ConsoleError::CrossSite("no token"))?;
    csrf::check(&operator, &headers, &form.csrf)?;
    state.console.sessions.close(&operator);
    tracing::info!(target: "audit", caller = %operator.caller.name, "console sign-out");
    let mut response = Redirect::to("/console").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "member_console=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; member_console=abc; b=2"),
        );
        assert_eq!(cookie_token(&h), Some("abc"));
        assert_eq!(cookie_token(&HeaderMap::new()), None);
    }

    #[test]
    fn tokens_are_long_random_and_distinct() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
