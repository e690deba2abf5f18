//! The event record (DESIGN section 1): what is appended to the log, and how it is sealed into the chain.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use sha2::{Digest, Sha256};
use time::{OffsetDateTime, UtcOffset, format_description::well_known::Rfc3339};
use uuid::Uuid;

use crate::stream::StreamName;

/// A SHA-256 digest in the hash chain; serialized as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EventHash(pub [u8; 32]);

impl EventHash {
    /// The `prev_hash` of position 1: 32 zero bytes.
    pub const ZERO: EventHash = EventHash([0; 32]);

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self, hex::FromHexError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)?;
        Ok(Self(out))
    }

    /// Takes a 32-byte slice, as stored in a database column.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }
}

impl fmt::Display for EventHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for EventHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventHash({})", self.to_hex())
    }
}

impl Serialize for EventHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for EventHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// Who caused an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A person or non-human user authenticated by a session.
    User,
    /// A caller authenticated by an API key.
    ApiKey,
    /// A Custodian-internal service (projection worker, relay).
    Service,
    /// The ledger itself or an operator at the command line.
    System,
}

impl ActorKind {
    /// The serialized name (`user`, `api_key`, `service`, `system`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::ApiKey => "api_key",
            Self::Service => "service",
            Self::System => "system",
        }
    }

    /// Parses the serialized name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "user" => Self::User,
            "api_key" => Self::ApiKey,
            "service" => Self::Service,
            "system" => Self::System,
            _ => return None,
        })
    }
}

/// `{kind, id}`: who did it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Actor {
    /// What kind of principal.
    pub kind: ActorKind,
    /// Its id (`user_...`, `key_...`, or a service name).
    pub id: String,
}

impl Actor {
    /// The ledger acting on its own behalf (bootstrap, command-line administration).
    pub fn system() -> Self {
        Self {
            kind: ActorKind::System,
            id: "custodian".to_owned(),
        }
    }
}

/// A dotted lower-case event type name, `{aggregate}.{past_tense_verb}`, e.g. `user.registered`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct EventType(String);

/// Why a string is not an event type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "event type {0:?} must be dotted lower-case words (a-z, 0-9, `_`), at least two, at most 128 characters, e.g. `user.registered`"
)]
pub struct EventTypeError(pub String);

impl EventType {
    /// Parses and validates an event type name.
    pub fn parse(s: &str) -> Result<Self, EventTypeError> {
        let word_ok = |w: &str| {
            let mut c = w.chars();
            matches!(c.next(), Some(first) if first.is_ascii_lowercase())
                && c.all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
        };
        if s.len() <= 128 && s.split('.').count() >= 2 && s.split('.').all(word_ok) {
            Ok(Self(s.to_owned()))
        } else {
            Err(EventTypeError(s.to_owned()))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A UTC instant with microsecond precision, written `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
///
/// The written form is fixed, so it is the same on every backend and sorts as text in time order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Timestamp(OffsetDateTime);

/// Why a string is not a timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an RFC 3339 timestamp")]
pub struct TimestampError(pub String);

const TIMESTAMP_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
);

impl Timestamp {
    /// Normalizes an instant to UTC and microseconds.
    pub fn from_datetime(dt: OffsetDateTime) -> Self {
        let utc = dt.to_offset(UtcOffset::UTC);
        let micros = utc.nanosecond() / 1_000 * 1_000;
        Self(utc.replace_nanosecond(micros).unwrap_or(utc))
    }

    /// Parses any RFC 3339 timestamp and normalizes it; one whose UTC instant falls outside the
    /// years 0000-9999 (`9999-12-31T23:00:00-02:00`) is refused.
    pub fn parse(s: &str) -> Result<Self, TimestampError> {
        OffsetDateTime::parse(s, &Rfc3339)
            .ok()
            .and_then(|dt| dt.checked_to_offset(UtcOffset::UTC))
            .map(Self::from_datetime)
            .ok_or_else(|| TimestampError(s.to_owned()))
    }

    /// Microseconds since the Unix epoch.
    pub fn unix_micros(&self) -> i128 {
        self.0.unix_timestamp_nanos() / 1_000
    }

    /// The underlying instant.
    pub fn as_datetime(&self) -> OffsetDateTime {
        self.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.format(TIMESTAMP_FORMAT) {
            Ok(s) => f.write_str(&s),
            Err(_) => Err(fmt::Error),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An event as a caller hands it to the log: everything but its place in the log and its hashes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// UUIDv7 chosen by the caller; retrying an append with the same ids is idempotent.
    pub id: Uuid,
    /// `{aggregate}.{verb}`.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// Schema version of `data`; `schemas/{type}.v{schema}.json` validates it.
    pub schema: u32,
    /// Who did it.
    pub actor: Actor,
    /// When, as the caller's clock saw it.
    pub occurred_at: Timestamp,
    /// The request this event came from.
    pub correlation_id: Option<String>,
    /// The request or event that caused this one.
    pub causation_id: Option<String>,
    /// The body. Never a plaintext secret.
    pub data: Value,
}

/// A committed event: a [`NewEvent`] with its place in the log, sealed into the hash chain.
///
/// `hash = SHA-256(RFC 8785 canonical JSON of every other field)`; `prev_hash` is the hash of the
/// record at `position - 1`, or [`EventHash::ZERO`] at position 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Global, 1-based, gapless.
    pub position: u64,
    /// `{tenant}/{aggregate}/{id}`.
    pub stream: StreamName,
    /// 1-based within the stream.
    pub version: u64,
    /// UUIDv7.
    pub id: Uuid,
    /// `{aggregate}.{verb}`.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// Schema version of `data`.
    pub schema: u32,
    /// The stream's tenant.
    pub tenant: String,
    /// Who did it.
    pub actor: Actor,
    /// When.
    pub occurred_at: Timestamp,
    /// The request this event came from.
    pub correlation_id: Option<String>,
    /// The request or event that caused this one.
    pub causation_id: Option<String>,
    /// The body.
    pub data: Value,
    /// Hash of the previous position.
    pub prev_hash: EventHash,
    /// Hash of this record.
    pub hash: EventHash,
}

/// The record as hashed, through the generic canonicalizer: the reference the fast path is tested against.
#[cfg(test)]
#[derive(Serialize)]
struct Unsealed<'a> {
    position: u64,
    stream: &'a StreamName,
    version: u64,
    id: &'a Uuid,
    #[serde(rename = "type")]
    event_type: &'a EventType,
    schema: u32,
    tenant: &'a str,
    actor: &'a Actor,
    occurred_at: &'a Timestamp,
    correlation_id: &'a Option<String>,
    causation_id: &'a Option<String>,
    data: &'a Value,
    prev_hash: &'a EventHash,
}

impl EventRecord {
    /// Places `event` at `position` / `version` after `prev_hash`, and computes its hash.
    pub fn seal(
        position: u64,
        stream: StreamName,
        version: u64,
        prev_hash: EventHash,
        event: NewEvent,
    ) -> Result<Self, serde_json::Error> {
        let data = canonical_data(&event.data)?;
        Self::seal_canonical(position, stream, version, prev_hash, event, &data)
    }

    /// [`seal`](Self::seal) for a caller that already holds `canonical_data(&event.data)`, so the
    /// costly part of canonicalization can run before, and outside of, the log's write lock.
    pub fn seal_canonical(
        position: u64,
        stream: StreamName,
        version: u64,
        prev_hash: EventHash,
        event: NewEvent,
        data: &[u8],
    ) -> Result<Self, serde_json::Error> {
        let hash = Self::sealed_hash(position, &stream, version, prev_hash, &event, data)?;
        Ok(Self {
            position,
            tenant: stream.tenant().to_owned(),
            stream,
            version,
            id: event.id,
            event_type: event.event_type,
            schema: event.schema,
            actor: event.actor,
            occurred_at: event.occurred_at,
            correlation_id: event.correlation_id,
            causation_id: event.causation_id,
            data: event.data,
            prev_hash,
            hash,
        })
    }

    /// The hash [`seal_canonical`](Self::seal_canonical) would give the record, computed from
    /// borrowed parts, so a writer can seal a batch without copying its events.
    pub fn sealed_hash(
        position: u64,
        stream: &StreamName,
        version: u64,
        prev_hash: EventHash,
        event: &NewEvent,
        data: &[u8],
    ) -> Result<EventHash, serde_json::Error> {
        let parts = Parts {
            position,
            stream,
            version,
            id: &event.id,
            event_type: &event.event_type,
            schema: event.schema,
            tenant: stream.tenant(),
            actor: &event.actor,
            occurred_at: &event.occurred_at,
            correlation_id: &event.correlation_id,
            causation_id: &event.causation_id,
            prev_hash: &prev_hash,
        };
        Ok(EventHash(
            Sha256::digest(parts.canonical_bytes_with(data)?).into(),
        ))
    }

    /// The RFC 8785 canonical JSON of every field but `hash`: the bytes that are hashed.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        self.parts()
            .canonical_bytes_with(&canonical_data(&self.data)?)
    }

    fn parts(&self) -> Parts<'_> {
        Parts {
            position: self.position,
            stream: &self.stream,
            version: self.version,
            id: &self.id,
            event_type: &self.event_type,
            schema: self.schema,
            tenant: &self.tenant,
            actor: &self.actor,
            occurred_at: &self.occurred_at,
            correlation_id: &self.correlation_id,
            causation_id: &self.causation_id,
            prev_hash: &self.prev_hash,
        }
    }

    /// Recomputes the hash from the other fields (it does not read `self.hash`).
    pub fn compute_hash(&self) -> Result<EventHash, serde_json::Error> {
        let bytes = self.canonical_bytes()?;
        Ok(EventHash(Sha256::digest(&bytes).into()))
    }
}

/// Every field of a record but `data` and `hash`, borrowed: what is hashed around the data.
struct Parts<'a> {
    position: u64,
    stream: &'a StreamName,
    version: u64,
    id: &'a Uuid,
    event_type: &'a EventType,
    schema: u32,
    tenant: &'a str,
    actor: &'a Actor,
    occurred_at: &'a Timestamp,
    correlation_id: &'a Option<String>,
    causation_id: &'a Option<String>,
    prev_hash: &'a EventHash,
}

impl Parts<'_> {
    /// The canonical form around already-canonical `data`. RFC 8785 orders an object's members by
    /// their names' UTF-16 code units; the names below are ASCII and listed in that order.
    fn canonical_bytes_with(&self, data: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
        fn member<T: Serialize>(
            out: &mut Vec<u8>,
            name: &str,
            value: &T,
        ) -> Result<(), serde_json::Error> {
            out.push(if out.is_empty() { b'{' } else { b',' });
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            serde_json_canonicalizer::to_writer(value, out)
        }
        let mut out = Vec::with_capacity(data.len() + 512);
        member(&mut out, "actor", &self.actor)?;
        member(&mut out, "causation_id", &self.causation_id)?;
        member(&mut out, "correlation_id", &self.correlation_id)?;
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(data);
        member(&mut out, "id", &self.id)?;
        member(&mut out, "occurred_at", &self.occurred_at)?;
        member(&mut out, "position", &self.position)?;
        member(&mut out, "prev_hash", &self.prev_hash)?;
        member(&mut out, "schema", &self.schema)?;
        member(&mut out, "stream", &self.stream)?;
        member(&mut out, "tenant", &self.tenant)?;
        member(&mut out, "type", &self.event_type)?;
        member(&mut out, "version", &self.version)?;
        out.push(b'}');
        Ok(out)
    }
}

/// The RFC 8785 canonical JSON of an event's `data`.
pub fn canonical_data(data: &Value) -> Result<Vec<u8>, serde_json::Error> {
    serde_json_canonicalizer::to_vec(data)
}

/// Why a stored event could not be turned back into a domain event.
#[derive(Debug, thiserror::Error)]
pub enum EventDecodeError {
    /// The type or version is not one this code knows.
    #[error("unknown event type {event_type} v{schema}")]
    Unknown {
        /// The stored type.
        event_type: String,
        /// The stored schema version.
        schema: u32,
    },
    /// The data does not match the type's schema.
    #[error("event {event_type} v{schema} has malformed data: {source}")]
    Malformed {
        /// The stored type.
        event_type: String,
        /// The stored schema version.
        schema: u32,
        /// What serde said.
        source: serde_json::Error,
    },
}

/// A typed event of one aggregate: how it is written to and read from the log.
///
/// Reading upcasts: `decode` accepts every schema version ever written for a type, and returns the
/// current shape.
pub trait DomainEvent: Sized {
    /// Every `(type, schema version)` this aggregate writes today.
    const TYPES: &'static [(&'static str, u32)];

    /// The event's type name.
    fn event_type(&self) -> &'static str;

    /// The schema version `data` is written in.
    fn schema_version(&self) -> u32;

    /// The event's body.
    fn data(&self) -> Value;

    /// Reads a stored event of any known version.
    fn decode(event_type: &str, schema: u32, data: &Value) -> Result<Self, EventDecodeError>;
}

impl Timestamp {
    /// This instant moved by `d` (saturating at the representable range).
    pub fn plus(&self, d: time::Duration) -> Self {
        Self::from_datetime(self.0.checked_add(d).unwrap_or(self.0))
    }

    /// How far `later` is after this instant (negative when it is before).
    pub fn until(&self, later: &Self) -> time::Duration {
        later.0 - self.0
    }
}

/// Implements [`DomainEvent`] for an enum of struct variants written with serde's external tagging
/// (`{"variant": {...fields}}`): the type is `{aggregate}.{variant}` and `data` is the variant's
/// fields, every type at schema version 1. Unknown fields are refused when reading
/// (`#[serde(deny_unknown_fields)]` belongs on the enum).
#[macro_export]
macro_rules! tagged_event {
    ($ty:ty, $aggregate:literal, [$($name:literal),+ $(,)?]) => {
        impl $crate::DomainEvent for $ty {
            const TYPES: &'static [(&'static str, u32)] = &[$((concat!($aggregate, ".", $name), 1)),+];

            fn event_type(&self) -> &'static str {
                let tag = $crate::event::variant_tag(self);
                Self::TYPES
                    .iter()
                    .map(|(t, _)| *t)
                    .find(|t| t.strip_prefix(concat!($aggregate, ".")) == Some(tag.as_str()))
                    .unwrap_or("unknown.unknown")
            }

            fn schema_version(&self) -> u32 {
                1
            }

            fn data(&self) -> serde_json::Value {
                $crate::event::variant_body(self)
            }

            fn decode(
                event_type: &str,
                schema: u32,
                data: &serde_json::Value,
            ) -> Result<Self, $crate::EventDecodeError> {
                let known = Self::TYPES.iter().any(|(t, v)| *t == event_type && *v == schema);
                let tag = event_type.strip_prefix(concat!($aggregate, "."));
                match tag {
                    Some(tag) if known => {
                        let mut wrapped = serde_json::Map::new();
                        wrapped.insert(tag.to_owned(), data.clone());
                        serde_json::from_value(serde_json::Value::Object(wrapped)).map_err(|source| {
                            $crate::EventDecodeError::Malformed {
                                event_type: event_type.to_owned(),
                                schema,
                                source,
                            }
                        })
                    }
                    _ => Err($crate::EventDecodeError::Unknown {
                        event_type: event_type.to_owned(),
                        schema,
                    }),
                }
            }
        }
    };
}

/// The variant name of an externally tagged enum value.
#[doc(hidden)]
pub fn variant_tag<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => map.keys().next().cloned().unwrap_or_default(),
        Ok(Value::String(s)) => s,
        _ => String::new(),
    }
}

/// The fields of an externally tagged enum value's variant.
#[doc(hidden)]
pub fn variant_body<T: Serialize>(value: &T) -> Value {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => map
            .into_iter()
            .next()
            .map(|(_, v)| v)
            .unwrap_or(Value::Object(Default::default())),
        _ => Value::Object(Default::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(position: u64, prev: EventHash) -> EventRecord {
        EventRecord::seal(
            position,
            StreamName::parse("acme/user/user_1").unwrap(),
            1,
            prev,
            NewEvent {
                id: Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001),
                event_type: EventType::parse("user.registered").unwrap(),
                schema: 1,
                actor: Actor::system(),
                occurred_at: Timestamp::parse("2026-11-25T12:00:00.5+01:00").unwrap(),
                correlation_id: Some("req_1".into()),
                causation_id: None,
                data: serde_json::json!({"b": 1.0, "a": "é", "c": [3, 2, 1]}),
            },
        )
        .unwrap()
    }

    #[test]
    fn canonical_form_is_rfc8785_sorted_and_minimal() {
        let r = sample(1, EventHash::ZERO);
        let text = String::from_utf8(r.canonical_bytes().unwrap()).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"actor":{"id":"custodian","kind":"system"},"causation_id":null,"correlation_id":"req_1","#,
                r#""data":{"a":"é","b":1,"c":[3,2,1]},"id":"01930000-0000-7000-8000-000000000001","#,
                r#""occurred_at":"2026-11-25T11:00:00.500000Z","position":1,"#,
                r#""prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","#,
                r#""schema":1,"stream":"acme/user/user_1","tenant":"acme","type":"user.registered","version":1}"#
            )
        );
    }

    fn reference_canonical(r: &EventRecord) -> Vec<u8> {
        serde_json_canonicalizer::to_vec(&Unsealed {
            position: r.position,
            stream: &r.stream,
            version: r.version,
            id: &r.id,
            event_type: &r.event_type,
            schema: r.schema,
            tenant: &r.tenant,
            actor: &r.actor,
            occurred_at: &r.occurred_at,
            correlation_id: &r.correlation_id,
            causation_id: &r.causation_id,
            data: &r.data,
            prev_hash: &r.prev_hash,
        })
        .unwrap()
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-1e300f64..1e300).prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                proptest::collection::btree_map(".{0,8}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn the_fast_canonical_form_equals_rfc8785(data in json_value(), actor_id in ".{0,10}", corr in proptest::option::of(".{0,10}")) {
            let mut r = sample(7, EventHash([3; 32]));
            r.data = data;
            r.actor.id = actor_id;
            r.correlation_id = corr;
            proptest::prop_assert_eq!(r.canonical_bytes().unwrap(), reference_canonical(&r));
        }
    }

    #[test]
    fn hash_is_sha256_of_the_canonical_form() {
        let r = sample(1, EventHash::ZERO);
        let expected: [u8; 32] = Sha256::digest(r.canonical_bytes().unwrap()).into();
        assert_eq!(r.hash, EventHash(expected));
    }

    #[test]
    fn any_field_change_changes_the_hash() {
        let base = sample(2, EventHash([7; 32]));
        let mut variants = Vec::new();
        let mut r = base.clone();
        r.position = 3;
        variants.push(r);
        let mut r = base.clone();
        r.prev_hash = EventHash([8; 32]);
        variants.push(r);
        let mut r = base.clone();
        r.data = serde_json::json!({"b": 2});
        variants.push(r);
        let mut r = base.clone();
        r.actor.id = "someone".into();
        variants.push(r);
        let mut r = base.clone();
        r.tenant = "other".into();
        variants.push(r);
        for v in variants {
            assert_ne!(v.compute_hash().unwrap(), base.hash);
        }
        assert_eq!(base.compute_hash().unwrap(), base.hash);
    }

    #[test]
    fn record_round_trips_through_json() {
        let r = sample(1, EventHash::ZERO);
        let back: EventRecord = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.compute_hash().unwrap(), r.hash);
    }

    #[test]
    fn timestamps_normalize_to_utc_microseconds() {
        let t = Timestamp::parse("2026-01-02T03:04:05.123456789-02:00").unwrap();
        assert_eq!(t.to_string(), "2026-01-02T05:04:05.123456Z");
        assert!(Timestamp::parse("yesterday").is_err());
    }

    #[test]
    fn a_timestamp_whose_utc_instant_leaves_the_calendar_is_refused() {
        for outside in [
            "9999-12-31T23:59:59.999999-14:00",
            "9999-12-31T23:00:00-02:00",
            "-0001-01-01T00:00:00Z",
        ] {
            assert!(Timestamp::parse(outside).is_err(), "{outside}");
        }
        let first = Timestamp::parse("0000-01-01T00:00:00Z").unwrap();
        assert_eq!(first.to_string(), "0000-01-01T00:00:00.000000Z");
        let last = Timestamp::parse("9999-12-31T23:59:59.999999Z").unwrap();
        assert_eq!(last.to_string(), "9999-12-31T23:59:59.999999Z");
        assert!(Timestamp::parse("0001-01-01T00:00:00+14:00").is_ok());
    }

    #[test]
    fn event_type_names_are_dotted_lowercase() {
        for ok in ["user.registered", "api_key.issued", "a.b.c"] {
            assert!(EventType::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "user",
            "User.registered",
            "user..x",
            "user.",
            "1user.x",
            "user.reg-istered",
        ] {
            assert!(EventType::parse(bad).is_err(), "{bad}");
        }
    }
}
