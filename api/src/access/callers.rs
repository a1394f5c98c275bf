//! Callers: bearer API keys from configuration (`[[callers]]`), each mapped to a caller (name,
//! scopes, read class, read and write quotas). One table serves both APIs.
//!
//! Keys are held as secrets and compared in constant time: the presented key and every
//! configured key are hashed (SHA-256, so every comparison has the same length) and all of them
//! are compared, without stopping at the first match. No key is ever logged or returned.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, HeaderMap};
use governor::{DefaultDirectRateLimiter, RateLimiter};
use member_infra::config::{CallerSettings, Scope, Settings};
use member_read_policy::routing::ReadClass;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

/// An authenticated caller.
pub struct Caller {
    pub name: String,
    pub scopes: Vec<Scope>,
    /// The read class (callers without scope `read` have none; they are never served reads).
    pub class: ReadClass,
    /// The caller's own read quota (rate and burst from configuration).
    pub quota: DefaultDirectRateLimiter,
    /// The caller's own write quota.
    pub write_quota: DefaultDirectRateLimiter,
}

impl Caller {
    pub fn from_settings(c: &CallerSettings) -> Self {
        Self {
            name: c.name.clone(),
            scopes: c.scopes.clone(),
            class: c.class.unwrap_or(ReadClass::Order),
            quota: RateLimiter::direct(quota(c.rate_per_second.into(), c.burst)),
            write_quota: RateLimiter::direct(quota(c.write_rate_per_second.into(), c.write_burst)),
        }
    }

    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("class", &self.class)
            .finish_non_exhaustive()
    }
}

/// A quota of `rate` per second (fractions allowed) with `burst` cells.
pub fn quota(rate_per_second: f64, burst: u32) -> governor::Quota {
    let period = std::time::Duration::from_secs_f64(1.0 / rate_per_second.max(0.001));
    let burst = std::num::NonZeroU32::new(burst.max(1)).expect("at least 1");
    governor::Quota::with_period(period.max(std::time::Duration::from_nanos(1)))
        .expect("a non-zero period")
        .allow_burst(burst)
}

/// Why a request was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No key, a malformed `Authorization` header, or an unknown key.
    #[error("a valid api key is required: Authorization: Bearer <key>")]
    Unauthorized,
    /// A known key without the scope this request needs.
    #[error("this api key does not have the scope this request needs")]
    Forbidden,
}

pub struct Callers {
    callers: Vec<([u8; 32], Arc<Caller>)>,
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl Callers {
    pub fn from_settings(callers: &[CallerSettings]) -> Self {
        Self {
            callers: callers
                .iter()
                .map(|c| {
                    (
                        digest(c.key.expose_secret()),
                        Arc::new(Caller::from_settings(c)),
                    )
                })
                .collect(),
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

    /// The caller of a request, if its key is known and has `scope`.
    pub fn authorize(&self, headers: &HeaderMap, scope: Scope) -> Result<Arc<Caller>, AuthError> {
        let caller = bearer(headers)
            .and_then(|key| self.authenticate(key))
            .ok_or(AuthError::Unauthorized)?;
        if caller.has(scope) {
            Ok(caller)
        } else {
            Err(AuthError::Forbidden)
        }
    }
}

/// The key of `Authorization: Bearer <key>`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| key.trim())
        .filter(|k| !k.is_empty())
}

/// The warning `member` logs at start when the published default keys are configured and an
/// API listens on an address other than loopback (anyone who read the docs could call it).
pub fn default_keys_warning(settings: &Settings, api: &str, listen: SocketAddr) -> Option<String> {
    let in_use = settings.default_keys_in_use();
    let encryption = settings.encryption.uses_default_keys();
    if (in_use.is_empty() && !encryption) || listen.ip().is_loopback() {
        return None;
    }
    let mut warnings = Vec::new();
    if !in_use.is_empty() {
        warnings.push(format!(
            "the default api keys of callers {}; set your own callers in the MEMBER_CONFIG file",
            in_use.join(", ")
        ));
    }
    if encryption {
        warnings.push(
            "the published encryption keys of config/default.toml; set [encryption] from the \
             environment (docs/operations/erasure.md)"
                .to_owned(),
        );
    }
    Some(format!(
        "the {api} listens on {listen} with {}",
        warnings.join(", and with ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings::load_from(None, Vec::new()).unwrap()
    }

    fn headers(key: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {key}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn keys_map_to_their_callers_and_unknown_keys_to_none() {
        let callers = Callers::from_settings(&settings().callers);
        let order = callers.authenticate("local-order-key").unwrap();
        assert_eq!(order.class, ReadClass::Order);
        assert!(order.has(Scope::Read) && !order.has(Scope::Write));
        let marketing = callers.authenticate("local-marketing-key").unwrap();
        assert_eq!(marketing.class, ReadClass::Marketing);
        assert!(callers.authenticate("local-order-ke").is_none());
        assert!(callers.authenticate("").is_none());
        let admin = callers.authenticate("local-admin-key").unwrap();
        assert!(admin.has(Scope::Admin) && admin.has(Scope::Erase) && !admin.has(Scope::Read));
        let writer = callers.authenticate("local-writer-key").unwrap();
        assert_eq!(writer.scopes, vec![Scope::Write]);
        assert!(!format!("{writer:?}").contains("key"), "{writer:?}");
    }

    #[test]
    fn authorize_answers_401_for_unknown_keys_and_403_without_the_scope() {
        let callers = Callers::from_settings(&settings().callers);
        assert_eq!(
            callers
                .authorize(&HeaderMap::new(), Scope::Write)
                .unwrap_err(),
            AuthError::Unauthorized
        );
        assert_eq!(
            callers
                .authorize(&headers("nope-nope-nope"), Scope::Write)
                .unwrap_err(),
            AuthError::Unauthorized
        );
        assert_eq!(
            callers
                .authorize(&headers("local-order-key"), Scope::Write)
                .unwrap_err(),
            AuthError::Forbidden
        );
        let writer = callers
            .authorize(&headers("local-writer-key"), Scope::Write)
            .unwrap();
        assert_eq!(writer.name, "local-writer");
        assert!(callers
            .authorize(&headers("local-admin-key"), Scope::Admin)
            .is_ok());
        assert_eq!(
            callers
                .authorize(&headers("local-admin-key"), Scope::Write)
                .unwrap_err(),
            AuthError::Forbidden
        );
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
        let loopback = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(default_keys_warning(&s, "command api", loopback), None);
        let any = "0.0.0.0:8080".parse().unwrap();
        let warning = default_keys_warning(&s, "command api", any).expect("warns on 0.0.0.0");
        assert!(warning.contains("local-writer"), "{warning}");
        assert!(
            !warning.contains("local-writer-key"),
            "names callers, not keys: {warning}"
        );
        assert_eq!(
            default_keys_warning(&s, "query api", "[::1]:8081".parse().unwrap()),
            None
        );
        for (i, c) in s.callers.iter_mut().enumerate() {
            c.key = format!("a-real-caller-secret-{i}").into();
        }
        // The published encryption keys alone still warn, naming no key.
        let warning = default_keys_warning(&s, "query api", "10.1.2.3:8081".parse().unwrap())
            .expect("a warning for the published encryption keys");
        assert!(warning.contains("encryption keys"), "{warning}");
        assert!(
            !member_infra::config::DEFAULT_ENCRYPTION_KEYS
                .iter()
                .any(|k| warning.contains(k)),
            "names no key: {warning}"
        );
        let own = |i: u8| {
            secrecy::SecretString::from(base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                [i; 32],
            ))
        };
        s.encryption.master_keys = [("prod-1".to_owned(), own(1))].into_iter().collect();
        s.encryption.master_key_id = "prod-1".to_owned();
        s.encryption.identity_hmac_key = own(2);
        assert_eq!(
            default_keys_warning(&s, "query api", "10.1.2.3:8081".parse().unwrap()),
            None,
            "own keys on a real address"
        );
    }
}
