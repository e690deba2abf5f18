//! Integration tests of custodian-replay: the library call and the binary, against every backend.

mod access;
mod binary;
mod support;
mod verify;
