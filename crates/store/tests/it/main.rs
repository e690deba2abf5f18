//! Integration tests of the event store: one conformance suite, run against every backend.

mod conformance;
mod corrupt;
mod ledger;
mod postgres;
mod sqlite;
mod support;
