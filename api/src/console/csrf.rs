//! Cross-site request protection for every state-changing console request (sign-out, routing,
//! jobs, reveal, governance). Three layers, because one alone has gaps:
//! - the session cookie is `SameSite=Strict`, so another site's form posts arrive without it;
//! - a request whose `Origin` names another origin, or whose `Sec-Fetch-Site` says
//!   `cross-site`, is refused before anything else (this also covers the sign-in form, which
//!   has no session yet: no login CSRF);
//! - each form carries the session's random token, compared in constant time.

use axum::http::{header, HeaderMap};
use subtle::ConstantTimeEq;

use super::errors::ConsoleError;
use super::session::Operator;

/// Refuses a request another site sent (by its `Origin` or `Sec-Fetch-Site`).
pub fn same_origin(headers: &HeaderMap) -> Result<(), ConsoleError> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site.eq_ignore_ascii_case("cross-site") {
            return Err(ConsoleError::CrossSite("sent by another site"));
        }
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    if host.is_empty() || origin_host != host {
        return Err(ConsoleError::CrossSite("another origin"));
    }
    Ok(())
}

/// Checks a state-changing request of a signed-in operator: same origin, and the form's token.
pub fn check(operator: &Operator, headers: &HeaderMap, token: &str) -> Result<(), ConsoleError> {
    same_origin(headers)?;
    let expected = operator.csrf.as_bytes();
    let matches = expected.len() == token.len() && bool::from(expected.ct_eq(token.as_bytes()));
    if matches {
        Ok(())
    } else {
        Err(ConsoleError::CrossSite("missing or wrong form token"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_the_console_own_origin_passes() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8081")])).is_ok());
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:8081"),
            ("origin", "http://127.0.0.1:8081")
        ]))
        .is_ok());
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:8081"),
            ("origin", "http://evil.example")
        ]))
        .is_err());
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8081"), ("origin", "null")])).is_err());
        assert!(same_origin(&headers(&[("sec-fetch-site", "cross-site")])).is_err());
    }
}
