//! Integration tests of custodian-replay: the library call and the binary, against every backend.

mod at;
mod binary;
mod export;
mod history;
mod support;
mod verify;
