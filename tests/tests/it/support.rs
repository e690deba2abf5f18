//! The load generator, which only this package builds; the deployment of the real binaries comes
//! from `custodian_testkit::deployment`.

use std::path::PathBuf;

/// The helper binary that drives the store directly.
pub fn loadgen() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_custodian-loadgen"))
}
