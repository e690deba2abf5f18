//! Integration tests of custodian-replay: the library call and the binary, against every backend.

mod binary;
mod checkpoint;
mod merkle;
mod support;
mod verify;
