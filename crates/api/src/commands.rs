//! Running a command against one stream: read the stream, fold it into the aggregate's state, let
//! the domain decide, append what it decided with the version it saw, and do it again from the top
//! if another writer got there first.

use std::sync::Arc;

use custodian_domain::{Actor, DomainEvent, EventRecord, NewEvent, StreamName, Timestamp};
use custodian_store::{EventStore, ExpectedVersion, StoreError};
use uuid::Uuid;

/// How often a command is decided again after losing a race.
const ATTEMPTS: usize = 5;
/// Events read per page when loading a stream.
const PAGE: usize = 1000;

/// Who asks, when, and as part of which request.
#[derive(Debug, Clone)]
pub struct Context {
    /// Who.
    pub actor: Actor,
    /// When: the request's time, used for every event it writes.
    pub now: Timestamp,
    /// The request's id, written as every event's correlation id.
    pub correlation_id: Option<String>,
}

impl Context {
    /// Builds the [`NewEvent`] of a domain event.
    pub fn event<E: DomainEvent>(&self, event: &E) -> NewEvent {
        NewEvent {
            id: Uuid::now_v7(),
            event_type: event_type(event.event_type()),
            schema: event.schema_version(),
            actor: self.actor.clone(),
            occurred_at: self.now,
            correlation_id: self.correlation_id.clone(),
            causation_id: None,
            data: event.data(),
        }
    }
}

/// The type name of an aggregate's event. Every name in the aggregates' `TYPES` tables is valid
/// (the domain's schema test parses each), so the fallback is never taken.
fn event_type(name: &str) -> custodian_domain::EventType {
    custodian_domain::EventType::parse(name)
        .or_else(|_| custodian_domain::EventType::parse("unknown.unknown"))
        .unwrap_or_else(|e| panic!("invalid event type {name}: {e}"))
}

/// A command failed: the domain refused it, or the store failed.
#[derive(Debug)]
pub enum Failed<E> {
    /// The domain's refusal.
    Refused(E),
    /// The store's failure.
    Store(StoreError),
}

impl<E> From<StoreError> for Failed<E> {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// What a command did.
#[derive(Debug)]
pub struct Done<S, E> {
    /// The state after the new events.
    pub state: S,
    /// The events appended (none when the command changed nothing).
    pub events: Vec<E>,
    /// The position of the last event appended, or `None` if nothing was appended.
    pub position: Option<u64>,
    /// The stream's version after the command.
    pub version: u64,
}

/// Reads every event of `stream`.
pub async fn read_stream(
    store: &dyn EventStore,
    stream: &StreamName,
) -> Result<Vec<EventRecord>, StoreError> {
    let mut out = Vec::new();
    loop {
        let page = store
            .read_stream(stream, out.len() as u64 + 1, PAGE)
            .await?;
        let n = page.len();
        out.extend(page);
        if n < PAGE {
            return Ok(out);
        }
    }
}

/// Folds a stream into an aggregate's state. Events of types this code does not know are a
/// corrupt stream, reported as such.
pub async fn load<S, E: DomainEvent>(
    store: &dyn EventStore,
    stream: &StreamName,
    init: S,
    evolve: impl Fn(S, &E) -> S,
) -> Result<(S, u64), StoreError> {
    let records = read_stream(store, stream).await?;
    let version = records.last().map_or(0, |r| r.version);
    let mut state = init;
    for r in &records {
        let event = E::decode(r.event_type.as_str(), r.schema, &r.data).map_err(|e| {
            StoreError::CorruptRecord {
                position: r.position,
                reason: e.to_string(),
            }
        })?;
        state = evolve(state, &event);
    }
    Ok((state, version))
}

/// Runs `decide` on the current state of `stream` and appends its events with the version it saw,
/// retrying from a fresh read when another writer moved the stream in between.
pub async fn execute<S: Clone, E: DomainEvent, X>(
    store: &Arc<dyn EventStore>,
    stream: &StreamName,
    ctx: &Context,
    init: S,
    evolve: impl Fn(S, &E) -> S,
    decide: impl Fn(&S) -> Result<Vec<E>, X>,
) -> Result<Done<S, E>, Failed<X>> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (state, version) = load(store.as_ref(), stream, init.clone(), &evolve).await?;
        let events = decide(&state).map_err(Failed::Refused)?;
        if events.is_empty() {
            return Ok(Done {
                state,
                events,
                position: None,
                version,
            });
        }
        let new: Vec<NewEvent> = events.iter().map(|e| ctx.event(e)).collect();
        match store
            .append(stream, ExpectedVersion::Exact(version), new)
            .await
        {
            Ok(outcome) => {
                let state = events.iter().fold(state, &evolve);
                let position = outcome.last_position;
                return Ok(Done {
                    state,
                    version: version + events.len() as u64,
                    events,
                    position: Some(position),
                });
            }
            Err(StoreError::WrongExpectedVersion { .. }) if attempt < ATTEMPTS => continue,
            Err(e) => return Err(Failed::Store(e)),
        }
    }
}

/// Appends observations that decide nothing (no expected version).
pub async fn record<E: DomainEvent>(
    store: &Arc<dyn EventStore>,
    stream: &StreamName,
    ctx: &Context,
    events: &[E],
) -> Result<u64, StoreError> {
    let new = events.iter().map(|e| ctx.event(e)).collect();
    Ok(store
        .append(stream, ExpectedVersion::Any, new)
        .await?
        .last_position)
}
