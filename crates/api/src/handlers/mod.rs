//! The HTTP handlers, one module per capability. A handler extracts what it needs from the request
//! (`crate::extract`), calls one use case of `custodian_app`, and answers (`crate::respond`). It
//! holds no business rule, and no handler module imports another.

pub mod account;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod keys;
pub mod ledger;
pub mod tenants;
pub mod usage;
pub mod users;
