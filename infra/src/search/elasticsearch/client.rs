//! One client per cluster URL.

use ::elasticsearch::auth::Credentials;
use ::elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use ::elasticsearch::http::Url;
use ::elasticsearch::Elasticsearch;

use super::REQUEST_TIMEOUT;

/// Builds a client for one cluster URL. User info in the URL becomes basic authentication (and
/// is removed from the URL, which is logged). Proxies from the environment are ignored: the
/// clusters are on the internal network, and a proxy in the order path is a failure point.
pub(super) fn client(url: &str) -> Result<Elasticsearch, String> {
    let mut url = Url::parse(url).map_err(|e| format!("{e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("expected an http or https url".into());
    }
    let credentials = (!url.username().is_empty()).then(|| {
        Credentials::Basic(
            percent_decode(url.username()),
            percent_decode(url.password().unwrap_or("")),
        )
    });
    url.set_username("")
        .map_err(|()| "cannot strip the user name")?;
    url.set_password(None)
        .map_err(|()| "cannot strip the password")?;
    let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url))
        .disable_proxy()
        .timeout(REQUEST_TIMEOUT);
    if let Some(credentials) = credentials {
        builder = builder.auth(credentials);
    }
    let transport = builder.build().map_err(|e| format!("{e}"))?;
    Ok(Elasticsearch::new(transport))
}

/// Decodes `%XX` escapes (user info in a URL is percent-encoded).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
