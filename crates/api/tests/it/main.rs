//! HTTP tests of the server frame, against the real router on a random port.

mod admin_identity;
mod consistency;
mod frame;
mod fuzz;
mod openapi;
mod support;
