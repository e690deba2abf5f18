//! How one event record looks on NATS: its subject and its CloudEvents 1.0 structured JSON body
//! (DESIGN section 6).

use custodian_domain::{EventHash, EventRecord, Timestamp};
use serde::Serialize;
use uuid::Uuid;

/// The media type of a message body, sent as its `Content-Type` header.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// The CloudEvents `datacontenttype` of every event: `data` is the record's JSON body, as is.
pub const DATA_CONTENT_TYPE: &str = "application/json";

/// The prefix of every event's CloudEvents `source`; the stream name follows it.
pub const SOURCE_PREFIX: &str = "urn:custodian:";

/// The subject an event is published on: `custodian.{tenant}.{aggregate}.{type}`.
///
/// The type keeps its dots, so `acme/user/user_01` with type `user.created` goes to
/// `custodian.acme.user.user.created`; `custodian.acme.user.>` selects every event of a tenant's
/// users, and `custodian._system.signing_key.>` every issuance of an access-token signing key. Stream names have no `.`, `*`, `>` or whitespace, so every subject is a valid literal one.
pub fn subject(record: &EventRecord) -> String {
    format!(
        "{}.{}.{}.{}",
        crate::SUBJECT_PREFIX,
        record.stream.tenant(),
        record.stream.aggregate(),
        record.event_type
    )
}

/// The record as a CloudEvents 1.0 structured-mode JSON document.
///
/// - `id` is the event id (a UUIDv7), so (`source`, `id`) is unique and subscribers deduplicate by it;
/// - `source` is `urn:custodian:{stream}` (e.g. `urn:custodian:acme/user/user_01`);
/// - `type` is the ledger's own event type (`user.created`), not reverse-DNS prefixed, so a filter
///   on it reads the same as everywhere else in Custodian;
/// - `subject` is the stream name, `time` is `occurred_at` (RFC 3339, UTC, microseconds);
/// - `datacontenttype` is `application/json` and `data` is the event's body;
/// - the ledger's fields ride as extension attributes: `tenant`, `stream`, `streamversion`,
///   `position`, `schemaversion` (JSON integers), `prevhash`, `hash` (64 lower-case hex digits),
///   `actorkind` (`user`, `api_key`, `service`, `system`), `actorid`, and `correlationid` and
///   `causationid`, which are left out when the record has none.
pub fn cloud_event(record: &EventRecord) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&CloudEvent {
        specversion: "1.0",
        id: &record.id,
        source: format!("{SOURCE_PREFIX}{}", record.stream),
        event_type: record.event_type.as_str(),
        subject: record.stream.as_str(),
        time: &record.occurred_at,
        datacontenttype: DATA_CONTENT_TYPE,
        tenant: &record.tenant,
        stream: record.stream.as_str(),
        streamversion: record.version,
        position: record.position,
        schemaversion: record.schema,
        prevhash: &record.prev_hash,
        hash: &record.hash,
        actorkind: record.actor.kind.as_str(),
        actorid: &record.actor.id,
        correlationid: record.correlation_id.as_deref(),
        causationid: record.causation_id.as_deref(),
        data: &record.data,
    })
}

#[derive(Serialize)]
struct CloudEvent<'a> {
    specversion: &'static str,
    id: &'a Uuid,
    source: String,
    #[serde(rename = "type")]
    event_type: &'a str,
    subject: &'a str,
    time: &'a Timestamp,
    datacontenttype: &'static str,
    tenant: &'a str,
    stream: &'a str,
    streamversion: u64,
    position: u64,
    schemaversion: u32,
    prevhash: &'a EventHash,
    hash: &'a EventHash,
    actorkind: &'static str,
    actorid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlationid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    causationid: Option<&'a str>,
    data: &'a serde_json::Value,
}

/// The fields of a published event the relay reads back to find where it left off.
#[derive(serde::Deserialize)]
pub(crate) struct Checkpoint {
    pub(crate) id: Uuid,
    /// The event's type: after a `ledger.checkpointed` event comes its note.
    #[serde(rename = "type", default)]
    pub(crate) event_type: String,
    pub(crate) position: u64,
    pub(crate) hash: EventHash,
}

#[cfg(test)]
mod tests {
    use custodian_domain::{Actor, EventType, NewEvent, StreamName};

    use super::*;

    fn record(stream: &str, event_type: &str) -> EventRecord {
        EventRecord::seal(
            1,
            StreamName::parse(stream).unwrap(),
            1,
            EventHash::ZERO,
            NewEvent {
                id: Uuid::now_v7(),
                event_type: EventType::parse(event_type).unwrap(),
                schema: 1,
                actor: Actor::system(),
                occurred_at: Timestamp::parse("2026-03-01T12:00:00Z").unwrap(),
                correlation_id: None,
                causation_id: None,
                data: serde_json::json!({}),
            },
        )
        .unwrap()
    }

    #[test]
    fn the_subject_is_tenant_aggregate_and_the_dotted_type() {
        for (stream, event_type, subject) in [
            (
                "acme/user/user_01",
                "user.created",
                "custodian.acme.user.user.created",
            ),
            (
                "_system/signing_key/sk_0193a5b2c3d47e8f9a0b1c2d3e4f5a6b",
                "signing_key.issued",
                "custodian._system.signing_key.signing_key.issued",
            ),
        ] {
            assert_eq!(super::subject(&record(stream, event_type)), subject);
        }
    }
}
