//! The HTTP face of Custodian: an axum server that turns requests into use cases of
//! `custodian-app` and answers them, and the `custodian` command line that starts it.
//!
//! Architecture invariant: a handler extracts what it needs from the request (`extract`), calls
//! one use case, and answers (`respond`); it holds no business rule, and no handler module imports
//! another. Every error becomes one RFC 9457 problem type, in one `match` (`respond`).

pub use custodian_app::auth;
pub use custodian_app::bootstrap;
pub mod cli;
pub use custodian_app::commands;
pub mod config;
pub mod consistency;
pub mod extract;
pub mod handlers;
pub mod metrics;
pub mod openapi;
pub mod ratelimit;
pub mod respond;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod tls;
