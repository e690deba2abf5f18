//! Integration tests of the domain crate: one binary, one module per concern.

mod event_schemas;
mod parsers;
mod policy;
mod touches;
