//! Use cases of the application layer, run without HTTP on a temporary SQLite ledger with a
//! clock the tests move themselves.

mod bootstrap;
mod signing;
mod support;
