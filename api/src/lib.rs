//! The `member` binary's library: HTTP servers, process wiring and the operator CLI.
#![forbid(unsafe_code)]

pub mod access;
pub mod app;
pub mod cli;
pub mod command_api;
pub mod console;
pub mod http;
pub mod query_api;
pub mod run;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod tools;
