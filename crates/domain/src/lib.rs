//! The pure core of Custodian: the event record and its hash chain, stream names, and the aggregates'
//! `decide`/`evolve` functions.
//!
//! Architecture invariant: this crate does no I/O. It reads no clock, draws no randomness and knows no
//! database; timestamps and ids are passed in by the caller.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod chain;
pub mod checkpoint;
pub mod email;
pub mod event;
pub mod id;
pub mod key;
pub mod ledger;
pub mod merkle;
pub mod policy;
pub mod secret;
pub mod security;
pub mod session;
pub mod signing_key;
pub mod stream;
pub mod tenant;
pub mod touches;
pub mod usage;
pub mod user;

pub use chain::{ChainBreak, ChainVerifier};
pub use event::{
    Actor, ActorKind, DomainEvent, EventDecodeError, EventHash, EventRecord, EventType,
    EventTypeError, NewEvent, Timestamp, TimestampError, canonical_data,
};
pub use stream::{StreamName, StreamNameError};

/// Every `(event type, schema version)` the domain writes, of every aggregate: the event catalog
/// that `schemas/` describes and subscribers filter on.
pub fn catalog() -> Vec<(&'static str, u32)> {
    [
        tenant::TenantEvent::TYPES,
        user::UserEvent::TYPES,
        session::SessionEvent::TYPES,
        email::EmailEvent::TYPES,
        security::SecurityEvent::TYPES,
        signing_key::SigningKeyEvent::TYPES,
        policy::PolicyEvent::TYPES,
        policy::DecisionEvent::TYPES,
        key::KeyEvent::TYPES,
        usage::UsageEvent::TYPES,
        ledger::LedgerEvent::TYPES,
    ]
    .concat()
}
