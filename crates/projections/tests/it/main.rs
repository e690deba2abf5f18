//! Integration tests of the projection runtime, on SQLite and PostgreSQL.

mod audit;
mod batch_equals_per_event;
mod connections;
mod failures;
mod identity;
mod keys;
mod live_equals_rebuilt;
mod policy;
mod support;
mod tenants;
mod usage;
