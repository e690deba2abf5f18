//! Offline tools over the Custodian event log.
//!
//! `custodian-replay verify SOURCE` opens a log read-only (a SQLite file or a PostgreSQL database),
//! recomputes its hash chain from position 1, and either reports the verified head or names the
//! first broken position. [`verify()`] is the same check as a library call; [`cli`] is the command
//! line around it. [`access`] answers who could do what at an instant (`who-can`, `can`, `diff`),
//! with the events that made it so.

pub mod access;
pub mod at;
pub mod cli;
pub mod export;
pub mod history;
pub mod merkle;
pub mod ocsf;
pub mod source;
pub mod verify;

pub use cli::{Cli, run};
pub use source::{Source, SourceError, redact};
pub use verify::{BreakReason, DEFAULT_PAGE_SIZE, VerifyReport, verify, verify_in_pages};
