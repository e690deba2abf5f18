//! Use cases of the application layer, run without HTTP on a temporary SQLite ledger with a
//! clock the tests move themselves.

mod account;
mod admin_tenants;
mod admin_users;
mod audit;
mod authz_property;
mod bootstrap;
mod decision_log;
mod identity;
mod keys;
mod ledger;
mod mfa;
mod migration;
mod operations;
mod parsers;
mod sessions;
mod signing;
mod support;
mod usage;
