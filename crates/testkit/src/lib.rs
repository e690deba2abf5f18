//! What Custodian's tests and benchmarks share: a ledger per test on SQLite or PostgreSQL, sample
//! events, the real binaries deployed on a ledger, a private NATS server, a private PostgreSQL cluster, and the benchmarks'
//! tables.
//!
//! A development dependency only. It depends on the domain and the store, never on the
//! application layer or the API: a unit test of those crates would otherwise meet two copies of
//! their types, the crate under test and the one this crate links.

pub mod deployment;
pub mod fill;
pub mod ledger;
pub mod nats;
pub mod pg_cluster;
pub mod postgres;
pub mod sample;
pub mod table;

pub use ledger::{Backend, Ledger};
pub use sample::{event, stream};
