//! Access control shared by both APIs: callers and their scopes from configuration
//! ([`callers`]), and the request id every response carries ([`request_id`]).

pub mod callers;
pub mod request_id;

pub use callers::{AuthError, Caller, Callers};
pub use request_id::RequestId;
