//! The HTTP face of Custodian: an axum server that turns requests into commands on the log and
//! serves reads from it, and the `custodian` command line that starts it.
//!
//! Architecture invariant: handlers hold no business rules. They parse, call the domain or the store,
//! and map every error to one RFC 9457 problem type.

pub mod account;
pub use custodian_app::auth;
pub use custodian_app::bootstrap;
pub mod cli;
pub use custodian_app::commands;
pub mod config;
pub mod consistency;
pub mod extract;
pub mod handlers;
pub mod identity;
pub mod login;
pub mod metrics;
pub mod openapi;
pub mod respond;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod users;
