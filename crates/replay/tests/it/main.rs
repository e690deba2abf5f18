//! Integration tests of custodian-replay: the library call and the binary, against every backend.

mod binary;
mod history;
mod support;
mod verify;
