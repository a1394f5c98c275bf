//! The read policy of the query API, without I/O, apart from the write-side crates so that the
//! projections crate holds only what the projectors need (docs/decisions/0036-config-by-owner.md):
//! - [`routing`]: which backends a read tries, in which order, for each caller class;
//! - [`breaker`]: the circuit breaker state machine, and the `[query_api.breaker]` settings it is
//!   built from.
#![forbid(unsafe_code)]

pub mod breaker;
pub mod routing;

pub use breaker::{Breaker, BreakerPolicy, BreakerSettings, BreakerState};
pub use routing::{Center, PinRefused, ReadClass};
