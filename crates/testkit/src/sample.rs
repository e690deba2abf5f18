//! Sample events: what tests append when only the log's behaviour matters, not the content.
//!
//! Change a field with struct update syntax:
//! `NewEvent { correlation_id: Some("req_test".into()), ..event("thing.happened", data) }`.

use custodian_domain::{Actor, DomainEvent, EventType, NewEvent, StreamName, Timestamp};

/// When every sample event occurred.
pub const OCCURRED_AT: &str = "2026-11-25T12:00:00Z";

/// The stream `name`.
///
/// # Panics
/// When `name` is not a valid stream name (a typo in the test).
pub fn stream(name: &str) -> StreamName {
    StreamName::parse(name).unwrap_or_else(|e| panic!("{name:?} is not a stream name: {e}"))
}

/// An event of `event_type` carrying `data`: schema 1, by the system actor, at [`OCCURRED_AT`],
/// with a fresh UUIDv7 id and neither correlation nor causation.
///
/// # Panics
/// When `event_type` is not a valid event type (a typo in the test).
pub fn event(event_type: &str, data: serde_json::Value) -> NewEvent {
    NewEvent {
        id: uuid::Uuid::now_v7(),
        event_type: EventType::parse(event_type)
            .unwrap_or_else(|e| panic!("{event_type:?} is not an event type: {e}")),
        schema: 1,
        actor: Actor::system(),
        occurred_at: Timestamp::parse(OCCURRED_AT).expect("OCCURRED_AT is a timestamp"),
        correlation_id: None,
        causation_id: None,
        data,
    }
}

/// A domain event as the system actor appends it at `at`: its own type, schema version and data,
/// with a fresh UUIDv7 id and neither correlation nor causation.
pub fn decided(event: &impl DomainEvent, at: Timestamp) -> NewEvent {
    NewEvent {
        schema: event.schema_version(),
        occurred_at: at,
        ..self::event(event.event_type(), event.data())
    }
}
