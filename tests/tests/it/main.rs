//! Black-box tests: the `custodian` and `custodian-replay` binaries against real databases.

mod crash;
mod server;
mod support;
