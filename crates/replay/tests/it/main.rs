//! Integration tests of custodian-replay: the library call and the binary, against every backend.

mod access;
mod at;
mod binary;
mod checkpoint;
mod export;
mod histories;
mod history;
mod merkle;
mod support;
mod verify;
