//! The console's errors and their HTTP mapping: the one place where a console failure becomes a
//! status and a page. Internal details are logged, never shown (they could name a database).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use super::html;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// No session (or an expired one): back to the sign-in form.
    #[error("sign in first")]
    SignInRequired,
    /// The key given at sign-in is not a known key.
    #[error("that key is not known")]
    SignInRefused,
    /// The key is known but has no scope `admin`.
    #[error("that key does not have the scope admin")]
    NotAdmin,
    /// A state-changing request without the session's token, or from another site.
    #[error("refused: the request did not come from this console ({0})")]
    CrossSite(&'static str),
    /// Bad input; nothing was changed.
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// A job for this target is running already.
    #[error("{0}")]
    Conflict(String),
    /// A dependency did not answer (the event store, the broker); the detail is logged.
    #[error("{0} is unavailable; try again")]
    Unavailable(&'static str),
}

impl ConsoleError {
    pub fn status(&self) -> StatusCode {
        match self {
            ConsoleError::SignInRequired => StatusCode::SEE_OTHER,
            ConsoleError::SignInRefused => StatusCode::UNAUTHORIZED,
            ConsoleError::NotAdmin | ConsoleError::CrossSite(_) => StatusCode::FORBIDDEN,
            ConsoleError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::Conflict(_) => StatusCode::CONFLICT,
            ConsoleError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Logs `error` (which may name hosts or databases) and answers with what may be shown.
    pub fn unavailable(what: &'static str, error: impl std::fmt::Display) -> Self {
        tracing::warn!(%error, what, "console: a dependency failed");
        ConsoleError::Unavailable(what)
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = self.status();
        match self {
            ConsoleError::SignInRequired => Redirect::to("/console").into_response(),
            ConsoleError::SignInRefused | ConsoleError::NotAdmin => {
                let mut response = html::sign_in_page(Some(&self.to_string())).into_response();
                *response.status_mut() = status;
                response
            }
            other => {
                let body = format!(
                    "<section class=\"error\" id=\"error\"><h2>{}</h2><p>{}</p>\
                     <p><a href=\"/console\">Back to the console</a></p></section>",
                    status.as_u16(),
                    html::escape(&other.to_string())
                );
                let mut response = html::bare_page("Error", &body).into_response();
                *response.status_mut() = status;
                response.headers_mut().insert(
                    header::CACHE_CONTROL,
                    header::HeaderValue::from_static("no-store"),
                );
                response
            }
        }
    }
}
