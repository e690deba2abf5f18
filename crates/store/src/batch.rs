//! Turning a batch of waiting appends into sealed records: the backend-independent half of a group
//! commit. Pure: the backend reads the head, the known ids and the stream versions inside its
//! transaction and hands them in.

use std::collections::{HashMap, HashSet};

use custodian_domain::{EventHash, EventRecord, NewEvent, StreamName};
use uuid::Uuid;

use crate::{AppendOutcome, ExpectedVersion, Head, StoreError};

/// One caller's append, waiting for the writer.
#[derive(Debug)]
pub(crate) struct Pending {
    pub stream: StreamName,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
    /// RFC 8785 canonical JSON of each event's data, computed by the caller's task so the writer
    /// only has to hash.
    pub data: Vec<String>,
}

/// Where an already-stored event id sits.
#[derive(Debug, Clone)]
pub(crate) struct Existing {
    pub stream: String,
    pub position: u64,
    pub version: u64,
}

/// What one batch writes and answers.
#[derive(Debug)]
pub(crate) struct Plan<'a> {
    /// Records to insert, in position order.
    pub records: Vec<EventRecord>,
    /// The canonical JSON of each record's data, as stored.
    pub data: Vec<&'a str>,
    /// One answer per pending append, in the batch's order.
    pub results: Vec<Result<AppendOutcome, StoreError>>,
    /// The head after the batch.
    pub head: Head,
}

/// One record of a batch, sealed (placed and hashed) while still borrowing its event from the
/// append that carried it: a writer that binds the fields itself never copies the event.
#[derive(Debug)]
pub(crate) struct Sealed<'a> {
    pub position: u64,
    pub version: u64,
    pub stream: &'a StreamName,
    pub event: &'a NewEvent,
    /// The canonical JSON of the event's data, as stored.
    pub data: &'a str,
    pub prev_hash: EventHash,
    pub hash: EventHash,
}

impl Sealed<'_> {
    /// The owned record.
    pub(crate) fn to_record(&self) -> EventRecord {
        EventRecord {
            position: self.position,
            stream: self.stream.clone(),
            version: self.version,
            id: self.event.id,
            event_type: self.event.event_type.clone(),
            schema: self.event.schema,
            tenant: self.stream.tenant().to_owned(),
            actor: self.event.actor.clone(),
            occurred_at: self.event.occurred_at,
            correlation_id: self.event.correlation_id.clone(),
            causation_id: self.event.causation_id.clone(),
            data: self.event.data.clone(),
            prev_hash: self.prev_hash,
            hash: self.hash,
        }
    }
}

/// What one batch writes and answers, with its records borrowed from the batch.
#[derive(Debug)]
pub(crate) struct SealedPlan<'a> {
    /// Records to insert, in position order.
    pub records: Vec<Sealed<'a>>,
    /// One answer per pending append, in the batch's order.
    pub results: Vec<Result<AppendOutcome, StoreError>>,
    /// The head after the batch.
    pub head: Head,
}

/// Checks an append before it is queued (not empty, each event within the size limit, no id twice)
/// and returns the canonical JSON of each event's data.
pub(crate) fn prepare(
    events: &[NewEvent],
    max_event_bytes: usize,
) -> Result<Vec<String>, StoreError> {
    if events.is_empty() {
        return Err(StoreError::EmptyAppend);
    }
    let mut ids = HashSet::with_capacity(events.len());
    let mut out = Vec::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        if !ids.insert(event.id) {
            return Err(StoreError::DuplicateEventId { id: event.id });
        }
        let data = custodian_domain::canonical_data(&event.data)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or(StoreError::Unserializable { index })?;
        if data.len() > max_event_bytes {
            return Err(StoreError::EventTooLarge {
                index,
                size: data.len(),
                limit: max_event_bytes,
            });
        }
        out.push(data);
    }
    Ok(out)
}

/// Every event id in the batch, for the backend's lookup of ids already stored.
pub(crate) fn ids(batch: &[Pending]) -> Vec<Uuid> {
    batch
        .iter()
        .flat_map(|p| p.events.iter().map(|e| e.id))
        .collect()
}

/// Every distinct stream in the batch, for the backend's lookup of current versions.
pub(crate) fn streams(batch: &[Pending]) -> Vec<String> {
    let set: HashSet<&str> = batch.iter().map(|p| p.stream.as_str()).collect();
    set.into_iter().map(str::to_owned).collect()
}

/// The writer's memory of stream versions, valid only while the log's head is the one it last
/// committed: if any other process appended in between, the head differs and it starts over.
#[derive(Debug, Default)]
pub(crate) struct VersionCache {
    head: Option<Head>,
    versions: HashMap<String, u64>,
}

/// Streams remembered before the cache starts over, bounding its memory.
const CACHED_STREAMS: usize = 100_000;

impl VersionCache {
    /// Forgets everything unless `head` is the head this cache last saw.
    pub(crate) fn sync(&mut self, head: Head) {
        if self.head != Some(head) {
            self.versions.clear();
            self.head = Some(head);
        }
    }

    /// The head these versions are valid at, if the cache holds any.
    pub(crate) fn head(&self) -> Option<Head> {
        self.head
    }

    /// The batch's streams whose versions must be read from the database.
    pub(crate) fn missing(&self, batch: &[Pending]) -> Vec<String> {
        streams(batch)
            .into_iter()
            .filter(|s| !self.versions.contains_key(s))
            .collect()
    }

    /// Records versions read from the database; streams not found are at version 0.
    pub(crate) fn fill(&mut self, missing: Vec<String>, found: &HashMap<String, u64>) {
        for s in missing {
            let v = found.get(&s).copied().unwrap_or(0);
            self.versions.insert(s, v);
        }
    }

    /// Current versions, for [`plan`].
    pub(crate) fn versions(&self) -> &HashMap<String, u64> {
        &self.versions
    }

    /// Takes in a committed batch.
    pub(crate) fn committed(&mut self, plan: &Plan<'_>) {
        self.take_in(
            plan.records.iter().map(|r| (r.stream.as_str(), r.version)),
            plan.head,
        );
    }

    /// Takes in a committed batch of borrowed records.
    pub(crate) fn committed_sealed(&mut self, plan: &SealedPlan<'_>) {
        self.take_in(
            plan.records.iter().map(|r| (r.stream.as_str(), r.version)),
            plan.head,
        );
    }

    fn take_in<'s>(&mut self, versions: impl Iterator<Item = (&'s str, u64)>, head: Head) {
        if self.versions.len() > CACHED_STREAMS {
            self.versions.clear();
        }
        for (stream, version) in versions {
            match self.versions.get_mut(stream) {
                Some(v) => *v = version,
                None => {
                    self.versions.insert(stream.to_owned(), version);
                }
            }
        }
        self.head = Some(head);
    }

    /// Forgets everything (after a failed transaction).
    pub(crate) fn reset(&mut self) {
        self.head = None;
        self.versions.clear();
    }
}

/// Decides each append of the batch in order against the log as it stands plus the appends before
/// it in the batch. A refused append writes nothing and does not disturb its neighbours.
pub(crate) fn plan<'a>(
    head: Head,
    existing: &HashMap<Uuid, Existing>,
    versions: &HashMap<String, u64>,
    batch: &'a [Pending],
) -> Plan<'a> {
    let sealed = seal(head, existing, versions, batch);
    Plan {
        records: sealed.records.iter().map(Sealed::to_record).collect(),
        data: sealed.records.iter().map(|r| r.data).collect(),
        results: sealed.results,
        head: sealed.head,
    }
}

/// [`plan`], with every record borrowing its event from the batch instead of owning a copy.
pub(crate) fn seal<'a>(
    head: Head,
    existing: &HashMap<Uuid, Existing>,
    versions: &HashMap<String, u64>,
    batch: &'a [Pending],
) -> SealedPlan<'a> {
    let mut head = head;
    let mut records: Vec<Sealed<'a>> =
        Vec::with_capacity(batch.iter().map(|p| p.events.len()).sum());
    let mut results = Vec::with_capacity(batch.len());
    let mut batch_versions: HashMap<&str, u64> = HashMap::new();
    let mut batch_ids: HashMap<Uuid, Existing> = HashMap::new();

    for pending in batch {
        if let Some(answer) = replayed(pending, existing, &batch_ids) {
            results.push(answer);
            continue;
        }
        let stream = pending.stream.as_str();
        let current = batch_versions
            .get(stream)
            .or_else(|| versions.get(stream))
            .copied()
            .unwrap_or(0);
        let matches = match pending.expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current == 0,
            ExpectedVersion::Exact(n) => current == n,
        };
        if !matches {
            results.push(Err(StoreError::WrongExpectedVersion {
                stream: stream.to_owned(),
                expected: pending.expected,
                actual: current,
            }));
            continue;
        }
        let kept = records.len();
        let mut prev = head;
        let mut failure = None;
        for (i, event) in pending.events.iter().enumerate() {
            let position = prev.position + 1;
            let version = current + 1 + i as u64;
            let canonical = pending.data.get(i).map_or("", String::as_str);
            match EventRecord::sealed_hash(
                position,
                &pending.stream,
                version,
                prev.hash,
                event,
                canonical.as_bytes(),
            ) {
                Ok(hash) => {
                    records.push(Sealed {
                        position,
                        version,
                        stream: &pending.stream,
                        event,
                        data: canonical,
                        prev_hash: prev.hash,
                        hash,
                    });
                    prev = Head { position, hash };
                }
                Err(e) => {
                    failure = Some(StoreError::CorruptRecord {
                        position,
                        reason: format!("the event cannot be canonicalized: {e}"),
                    });
                    break;
                }
            }
        }
        if let Some(e) = failure {
            records.truncate(kept);
            results.push(Err(e));
            continue;
        }
        let first_position = head.position + 1;
        let stream_version = current + pending.events.len() as u64;
        // Only a retry within the batch needs to find these ids; most batches have none.
        if batch.len() > 1 {
            for r in &records[kept..] {
                batch_ids.insert(
                    r.event.id,
                    Existing {
                        stream: stream.to_owned(),
                        position: r.position,
                        version: r.version,
                    },
                );
            }
        }
        head = prev;
        batch_versions.insert(stream, stream_version);
        results.push(Ok(AppendOutcome {
            first_position,
            last_position: head.position,
            stream_version,
            deduplicated: false,
        }));
    }
    SealedPlan {
        records,
        results,
        head,
    }
}

/// If the append's ids are already stored, the answer for a retry: the original outcome when it is
/// the same append, a duplicate-id error when the ids were used for something else.
fn replayed(
    pending: &Pending,
    existing: &HashMap<Uuid, Existing>,
    batch_ids: &HashMap<Uuid, Existing>,
) -> Option<Result<AppendOutcome, StoreError>> {
    let found: Vec<(Uuid, Option<&Existing>)> = pending
        .events
        .iter()
        .map(|e| (e.id, batch_ids.get(&e.id).or_else(|| existing.get(&e.id))))
        .collect();
    let first_known = found.iter().find(|(_, f)| f.is_some())?;
    let duplicate = Err(StoreError::DuplicateEventId { id: first_known.0 });
    let mut expected_position = None;
    let mut outcome: Option<AppendOutcome> = None;
    for (_, place) in &found {
        let Some(place) = place else {
            return Some(duplicate);
        };
        if place.stream != pending.stream.as_str()
            || expected_position.is_some_and(|p| p != place.position)
        {
            return Some(duplicate);
        }
        expected_position = Some(place.position + 1);
        outcome = Some(match outcome {
            None => AppendOutcome {
                first_position: place.position,
                last_position: place.position,
                stream_version: place.version,
                deduplicated: true,
            },
            Some(o) => AppendOutcome {
                last_position: place.position,
                stream_version: place.version,
                ..o
            },
        });
    }
    outcome.map(Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use custodian_domain::{Actor, EventType, Timestamp};

    fn event(n: u128) -> NewEvent {
        NewEvent {
            id: Uuid::from_u128(n),
            event_type: EventType::parse("thing.happened").unwrap(),
            schema: 1,
            actor: Actor::system(),
            occurred_at: Timestamp::parse("2026-01-01T00:00:00Z").unwrap(),
            correlation_id: None,
            causation_id: None,
            data: serde_json::json!({"n": n as u64}),
        }
    }

    fn pending(stream: &str, expected: ExpectedVersion, ids: &[u128]) -> Pending {
        let events: Vec<NewEvent> = ids.iter().map(|&n| event(n)).collect();
        Pending {
            stream: StreamName::parse(stream).unwrap(),
            expected,
            data: prepare(&events, 1 << 20).unwrap(),
            events,
        }
    }

    #[test]
    fn a_conflicting_append_fails_alone() {
        let batch = [
            pending("t/a/1", ExpectedVersion::NoStream, &[1, 2]),
            pending("t/a/1", ExpectedVersion::NoStream, &[3]),
            pending("t/a/1", ExpectedVersion::Exact(2), &[4]),
        ];
        let p = plan(Head::default(), &HashMap::new(), &HashMap::new(), &batch);
        assert_eq!(p.records.len(), 3);
        assert!(matches!(
            p.results[1],
            Err(StoreError::WrongExpectedVersion { actual: 2, .. })
        ));
        let third = p.results[2].as_ref().unwrap();
        assert_eq!((third.first_position, third.stream_version), (3, 3));
        assert_eq!(p.head.position, 3);
        assert_eq!(
            p.records.iter().map(|r| r.position).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(p.records[1].prev_hash, p.records[0].hash);
    }

    #[test]
    fn a_retry_in_the_same_batch_is_answered_with_the_first_positions() {
        let batch = [
            pending("t/a/1", ExpectedVersion::Any, &[1, 2]),
            pending("t/a/1", ExpectedVersion::Any, &[1, 2]),
            pending("t/a/2", ExpectedVersion::Any, &[2]),
        ];
        let p = plan(Head::default(), &HashMap::new(), &HashMap::new(), &batch);
        assert_eq!(p.records.len(), 2);
        let retry = p.results[1].as_ref().unwrap();
        assert!(retry.deduplicated);
        assert_eq!((retry.first_position, retry.last_position), (1, 2));
        assert!(matches!(
            p.results[2],
            Err(StoreError::DuplicateEventId { .. })
        ));
    }

    #[test]
    fn preparation_rejects_empty_oversized_and_repeated_ids() {
        assert!(matches!(prepare(&[], 10), Err(StoreError::EmptyAppend)));
        assert!(matches!(
            prepare(&[event(1)], 3),
            Err(StoreError::EventTooLarge {
                index: 0,
                size: 7,
                limit: 3
            })
        ));
        assert!(matches!(
            prepare(&[event(1), event(1)], 100),
            Err(StoreError::DuplicateEventId { .. })
        ));
        assert_eq!(prepare(&[event(1)], 7).unwrap(), [r#"{"n":1}"#]);
    }
}
