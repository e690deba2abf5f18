//! Integration tests of the projection runtime, on SQLite and PostgreSQL.

mod failures;
mod live_equals_rebuilt;
mod support;
