//! HTTP tests of the server frame, against the real router on a random port.

mod frame;
mod openapi;
