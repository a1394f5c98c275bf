//! Callers: bearer API keys from configuration, each mapped to a caller (name, class, quota).
//! Keys are compared in constant time: the presented key and every configured key are hashed
//! (SHA-256, so every comparison has the same length) and all of them are compared, without
//! stopping at the first match.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use governor::{DefaultDirectRateLimiter, RateLimiter};
use member_infra::config::QueryApiSettings;
use member_projections::routing::ReadClass;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::errors::QueryError;
use super::AppState;

/// An authenticated caller.
pub struct Caller {
    pub name: String,
    pub class: ReadClass,
    /// The caller's own quota (rate and burst from configuration).
    pub quota: DefaultDirectRateLimiter,
}

pub struct Callers {
    callers: Vec<([u8; 32], Arc<Caller>)>,
    admin: [u8; 32],
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl Callers {
    pub fn from_settings(settings: &QueryApiSettings) -> Self {
        let callers = settings
            .callers
            .iter()
            .map(|c| {
                let quota = super::flow_control::quota(c.rate_per_second.into(), c.burst);
                let caller = Caller {
                    name: c.name.clone(),
                    class: c.class,
                    quota: RateLimiter::direct(quota),
                };
                (digest(&c.key), Arc::new(caller))
            })
            .collect();
        Self {
            callers,
            admin: digest(&settings.admin_key),
        }
    }

    /// The caller holding `key`, comparing against every configured key.
    pub fn authenticate(&self, key: &str) -> Option<Arc<Caller>> {
        let presented = digest(key);
        let mut found = None;
        for (candidate, caller) in &self.callers {
            let matches: Choice = candidate.ct_eq(&presented);
            if bool::from(matches) {
                found = Some(caller.clone());
            }
        }
        found
    }

    pub fn is_admin(&self, key: &str) -> bool {
        bool::from(self.admin.ct_eq(&digest(key)))
    }
}

/// The key of `Authorization: Bearer <key>`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| key.trim())
        .filter(|k| !k.is_empty())
}

/// Extracts the authenticated caller, or answers 401.
pub struct AuthCaller(pub Arc<Caller>);

impl FromRequestParts<AppState> for AuthCaller {
    type Rejection = QueryError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = bearer(&parts.headers)
            .and_then(|key| state.callers.authenticate(key))
            .ok_or(QueryError::Unauthorized);
        if caller.is_err() {
            super::metrics::request("none", "unauthorized");
        }
        caller.map(AuthCaller)
    }
}

/// Proof that the request carries the admin key (401 otherwise, caller keys included).
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = QueryError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match bearer(&parts.headers) {
            Some(key) if state.callers.is_admin(key) => Ok(Admin),
            _ => Err(QueryError::Unauthorized),
        }
    }
}

/// The warning `member` logs at start when the published default keys are configured on an
/// address other than loopback (anyone who read the docs could call it).
pub fn default_keys_warning(settings: &QueryApiSettings) -> Option<String> {
    let in_use = settings.default_keys_in_use();
    if in_use.is_empty() || is_loopback(settings.listen) {
        return None;
    }
    Some(format!(
        "the query api listens on {} with the default api keys ({}); set your own keys in the \
         MEMBER_CONFIG file",
        settings.listen,
        in_use.join(", ")
    ))
}

fn is_loopback(addr: SocketAddr) -> bool {
    addr.ip().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;
    use member_infra::config::Settings;

    fn settings() -> QueryApiSettings {
        Settings::load_from(None, Vec::new()).unwrap().query_api
    }

    #[test]
    fn keys_map_to_their_callers_and_unknown_keys_to_none() {
        let callers = Callers::from_settings(&settings());
        let order = callers.authenticate("local-order-key").unwrap();
        assert_eq!(order.class, ReadClass::Order);
        let marketing = callers.authenticate("local-marketing-key").unwrap();
        assert_eq!(marketing.class, ReadClass::Marketing);
        assert!(callers.authenticate("local-order-ke").is_none());
        assert!(callers.authenticate("").is_none());
        assert!(callers.authenticate("local-admin-key").is_none());
        assert!(callers.is_admin("local-admin-key"));
        assert!(!callers.is_admin("local-order-key"));
    }

    #[test]
    fn bearer_needs_the_scheme_and_a_key() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn default_keys_warn_only_off_loopback() {
        let mut s = settings();
        assert_eq!(default_keys_warning(&s), None, "loopback is fine");
        s.listen = "0.0.0.0:8081".parse().unwrap();
        let warning = default_keys_warning(&s).expect("warns on 0.0.0.0");
        assert!(warning.contains("local-admin-key"), "{warning}");
        s.listen = "[::1]:8081".parse().unwrap();
        assert_eq!(default_keys_warning(&s), None);
        s.listen = "10.1.2.3:8081".parse().unwrap();
        s.admin_key = "a-real-admin-secret".into();
        for (i, c) in s.callers.iter_mut().enumerate() {
            c.key = format!("a-real-caller-secret-{i}");
        }
        assert_eq!(default_keys_warning(&s), None, "own keys on a real address");
    }
}
