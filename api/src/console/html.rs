//! HTML: escaping, the embedded templates (`include_str!`, filled by [`fill`]) and the security
//! headers of every console response. No template engine: the pages are few and small, and each
//! value is escaped where it is put in (ADR 0032).

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{Html, Response};

use super::session::Operator;

const LAYOUT: &str = include_str!("templates/layout.html");
const NAV: &str = include_str!("templates/nav.html");
const SIGN_IN: &str = include_str!("templates/sign_in.html");
const CONFIRM: &str = include_str!("templates/confirm.html");

/// Escapes text for HTML content and double-quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Replaces each `{{name}}` of `template` by its value, in one pass: a value is never scanned
/// again, so text that contains `{{...}}` cannot pull in another value. Values are HTML already
/// (the caller escapes); unknown names are left empty.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let name = &after[..end];
                if let Some((_, value)) = values.iter().find(|(n, _)| *n == name) {
                    out.push_str(value);
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// A page of the console for a signed-in operator; `active` names the view in the menu.
pub fn page(operator: &Operator, active: &str, title: &str, body: &str) -> Html<String> {
    let views = ["pipeline", "routing", "jobs", "members", "governance"];
    let mut values: Vec<(&str, &str)> = views
        .iter()
        .map(|v| (*v, if *v == active { "active" } else { "" }))
        .collect();
    let csrf = escape(&operator.csrf);
    let who = escape(&operator.caller.name);
    values.push(("csrf", &csrf));
    values.push(("operator", &who));
    let nav = fill(NAV, &values);
    Html(fill(
        LAYOUT,
        &[("title", &escape(title)), ("nav", &nav), ("body", body)],
    ))
}

/// A page without the menu (sign-in, errors).
pub fn bare_page(title: &str, body: &str) -> Html<String> {
    Html(fill(
        LAYOUT,
        &[("title", &escape(title)), ("nav", ""), ("body", body)],
    ))
}

/// The sign-in form, with a refusal message when the last attempt failed.
pub fn sign_in_page(message: Option<&str>) -> Html<String> {
    let message = message
        .map(|m| format!("<p class=\"refused\" id=\"refused\">{}</p>", escape(m)))
        .unwrap_or_default();
    bare_page("Sign in", &fill(SIGN_IN, &[("message", &message)]))
}

/// A confirmation step: `what` (HTML) is about to happen; the form posts `fields` (name, value)
/// with the CSRF token and `confirm=yes` to `action`.
pub fn confirm_page(
    operator: &Operator,
    active: &str,
    what: &str,
    action: &str,
    fields: &[(&str, &str)],
    button: &str,
) -> Html<String> {
    let hidden: String = fields
        .iter()
        .map(|(name, value)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">\n",
                escape(name),
                escape(value)
            )
        })
        .collect();
    let csrf = escape(&operator.csrf);
    let cancel = format!("/console/{active}");
    let body = fill(
        CONFIRM,
        &[
            ("what", what),
            ("action", &escape(action)),
            ("csrf", &csrf),
            ("fields", &hidden),
            ("button", &escape(button)),
            ("cancel", &escape(&cancel)),
        ],
    );
    page(operator, active, "Confirm", &body)
}

/// Headers on every console response: nothing but this origin's own scripts and styles runs
/// (`Content-Security-Policy`), no framing (clickjacking of the confirmation buttons), no caching
/// of pages that show personal data, no referrer leaving for another site with a member id in
/// it. (`same-origin`, not `no-referrer`: with `no-referrer` Chromium sends `Origin: null` on the
/// console's own form posts, which the cross-site check must refuse.)
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_content_and_attributes() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn fill_substitutes_once_and_never_rescans_values() {
        let out = fill(
            "<p>{{a}} {{b}} {{missing}}</p>{{",
            &[("a", "{{b}}"), ("b", "B")],
        );
        assert_eq!(out, "<p>{{b}} B </p>{{");
    }
}
