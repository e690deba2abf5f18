//! Integration tests of the event store: one conformance suite, run against every backend.

mod conformance;
mod ledger;
mod sqlite;
mod support;
