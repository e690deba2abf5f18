//! HTTP tests of the server frame, against the real router on a random port.

mod admin_identity;
mod audit_http;
mod authz_http;
mod authz_input;
mod consistency;
mod frame;
mod fuzz;
mod isolation;
mod keys;
mod openapi;
mod public_surface;
mod ratelimit_http;
mod support;
mod usage_http;
