//! Running a command against one stream: read the stream, fold it into the aggregate's state, let
//! the domain decide, append what it decided with the version it saw, and do it again from the top
//! if another writer got there first.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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

/// Reads every event of `stream` from version `from` on.
pub async fn read_stream(
    store: &dyn EventStore,
    stream: &StreamName,
    from: u64,
) -> Result<Vec<EventRecord>, StoreError> {
    let mut out = Vec::new();
    loop {
        let page = store
            .read_stream(stream, from + out.len() as u64, PAGE)
            .await?;
        let n = page.len();
        out.extend(page);
        if n < PAGE {
            return Ok(out);
        }
    }
}

/// Folded aggregate states by stream, so a command reads only the events appended since the
/// state it last saw instead of the whole stream (a user's stream grows with every login).
///
/// A stream only ever grows, and a cached state says which version it folded, so an entry is never
/// wrong, only behind: whatever was appended since (by this process or another) is read and folded
/// on top before every decision.
#[derive(Debug, Default)]
pub struct StateCache {
    entries: Mutex<HashMap<String, (Arc<dyn Any + Send + Sync>, u64)>>,
}

/// Most streams whose state is kept.
const CACHED_STREAMS: usize = 50_000;

impl StateCache {
    fn get<S: Clone + 'static>(&self, stream: &StreamName) -> Option<(S, u64)> {
        let entries = self.entries.lock().ok()?;
        let (state, version) = entries.get(stream.as_str())?;
        state.downcast_ref::<S>().map(|s| (s.clone(), *version))
    }

    fn put<S: Clone + Send + Sync + 'static>(&self, stream: &StreamName, state: &S, version: u64) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries
            .get(stream.as_str())
            .is_some_and(|(_, cached)| *cached >= version)
        {
            return;
        }
        if entries.len() >= CACHED_STREAMS {
            entries.clear();
        }
        entries.insert(
            stream.as_str().to_owned(),
            (Arc::new(state.clone()), version),
        );
    }
}

/// Folds the events of `stream` after version `from.1` into the state `from.0`. Events of types
/// this code does not know are a corrupt stream, reported as such.
async fn fold_from<S, E: DomainEvent>(
    store: &dyn EventStore,
    stream: &StreamName,
    from: (S, u64),
    evolve: impl Fn(S, &E) -> S,
) -> Result<(S, u64), StoreError> {
    let (mut state, mut version) = from;
    for r in read_stream(store, stream, version + 1).await? {
        let event = E::decode(r.event_type.as_str(), r.schema, &r.data).map_err(|e| {
            StoreError::CorruptRecord {
                position: r.position,
                reason: e.to_string(),
            }
        })?;
        state = evolve(state, &event);
        version = r.version;
    }
    Ok((state, version))
}

/// Folds a stream into an aggregate's state, starting from `cache`'s state of it when there is
/// one.
pub async fn load<S: Clone + Send + Sync + 'static, E: DomainEvent>(
    store: &dyn EventStore,
    cache: Option<&StateCache>,
    stream: &StreamName,
    init: S,
    evolve: impl Fn(S, &E) -> S,
) -> Result<(S, u64), StoreError> {
    let from = cache.and_then(|c| c.get::<S>(stream)).unwrap_or((init, 0));
    let from_version = from.1;
    let (state, version) = fold_from(store, stream, from, evolve).await?;
    if let Some(cache) = cache
        && version > from_version
    {
        cache.put(stream, &state, version);
    }
    Ok((state, version))
}

/// Runs `decide` on the current state of `stream` and appends its events with the version it saw,
/// retrying from a fresh read when another writer moved the stream in between.
pub async fn execute<S: Clone + Send + Sync + 'static, E: DomainEvent, X>(
    store: &Arc<dyn EventStore>,
    cache: Option<&StateCache>,
    stream: &StreamName,
    ctx: &Context,
    init: S,
    evolve: impl Fn(S, &E) -> S,
    decide: impl Fn(&S) -> Result<Vec<E>, X>,
) -> Result<Done<S, E>, Failed<X>> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (state, version) = load(store.as_ref(), cache, stream, init.clone(), &evolve).await?;
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
                let version = version + events.len() as u64;
                if let Some(cache) = cache {
                    cache.put(stream, &state, version);
                }
                return Ok(Done {
                    state,
                    version,
                    events,
                    position: Some(outcome.last_position),
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

#[cfg(test)]
mod tests {
    use custodian_domain::email::{self, EmailCommand, EmailError, Reservation};
    use custodian_domain::{Actor, Timestamp};
    use custodian_store::StoreOptions;

    use super::*;

    fn claim(user: &str) -> impl Fn(&Reservation) -> Result<Vec<email::EmailEvent>, EmailError> {
        let user = user.to_owned();
        move |r| {
            email::decide(
                r,
                EmailCommand::Claim {
                    user_id: user.clone(),
                    holder_gone: false,
                },
            )
        }
    }

    #[tokio::test]
    async fn a_cached_state_catches_up_with_what_others_appended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.db").display().to_string();
        let store = custodian_store::open(&path, StoreOptions::default())
            .await
            .unwrap();
        let cache = StateCache::default();
        let ctx = Context {
            actor: Actor::system(),
            now: Timestamp::parse("2026-01-01T00:00:00Z").unwrap(),
            correlation_id: None,
        };
        let stream = StreamName::parse("acme/email/x").unwrap();
        let init = Reservation::default;
        execute(
            &store,
            Some(&cache),
            &stream,
            &ctx,
            init(),
            email::evolve,
            claim("a"),
        )
        .await
        .unwrap();
        assert_eq!(cache.get::<Reservation>(&stream).unwrap().1, 1);
        // Another process (no shared cache) releases the address.
        execute(&store, None, &stream, &ctx, init(), email::evolve, |r| {
            email::decide(
                r,
                EmailCommand::Release {
                    user_id: "a".into(),
                },
            )
        })
        .await
        .unwrap();
        // The cached state is behind by one event; the next command folds it in first.
        let done = execute(
            &store,
            Some(&cache),
            &stream,
            &ctx,
            init(),
            email::evolve,
            claim("b"),
        )
        .await
        .unwrap();
        assert_eq!(done.version, 3);
        assert_eq!(done.state.holder.as_deref(), Some("b"));
        let (cached, version) = cache.get::<Reservation>(&stream).unwrap();
        assert_eq!((cached.holder.as_deref(), version), (Some("b"), 3));
        // And a state loaded without the cache agrees.
        let (fresh, _) = load(store.as_ref(), None, &stream, init(), email::evolve)
            .await
            .unwrap();
        assert_eq!(fresh, cached);
        store.close().await;
    }
}
