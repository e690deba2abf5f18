//! Black-box tests: the `custodian` and `custodian-replay` binaries against real databases.

mod crash;
mod feed;
mod identity;
mod server;
mod support;
