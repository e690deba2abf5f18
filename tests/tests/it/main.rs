//! Black-box tests: the `custodian` and `custodian-replay` binaries against real databases.

mod cli;
mod crash;
mod crash_http;
mod crash_usage;
mod event_names;
mod feed;
mod identity;
mod keys;
mod kill_9;
mod ledger;
mod pg_crash;
mod replicas;
mod server;
mod startup;
mod support;
mod tls;
mod torture;
