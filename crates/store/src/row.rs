//! Reading stored rows back into event records, naming the position of anything unreadable.

use custodian_domain::{
    Actor, ActorKind, EventHash, EventRecord, EventType, StreamName, Timestamp,
};
use sqlx::Row;
use uuid::Uuid;

use crate::batch::Existing;
use crate::{Head, StoreError};

/// The columns of `events`, in the order [`StoredRow`] expects.
pub(crate) const COLUMNS: &str = "position, id, stream, version, type, schema, tenant, actor_kind, actor_id, occurred_at, correlation_id, causation_id, data, prev_hash, hash";

/// One row of `events` as the database holds it.
#[derive(sqlx::FromRow)]
pub(crate) struct StoredRow {
    position: i64,
    id: Uuid,
    stream: String,
    version: i64,
    #[sqlx(rename = "type")]
    event_type: String,
    schema: i64,
    tenant: String,
    actor_kind: String,
    actor_id: String,
    occurred_at: String,
    correlation_id: Option<String>,
    causation_id: Option<String>,
    data: String,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
}

impl StoredRow {
    /// Parses the row; anything malformed is a [`StoreError::CorruptRecord`] at its position.
    pub(crate) fn into_record(self) -> Result<EventRecord, StoreError> {
        let position = u64::try_from(self.position).unwrap_or(0);
        let corrupt = |reason: String| StoreError::CorruptRecord { position, reason };
        Ok(EventRecord {
            position,
            stream: StreamName::parse(&self.stream).map_err(|e| corrupt(e.to_string()))?,
            version: u64::try_from(self.version)
                .map_err(|_| corrupt(format!("negative version {}", self.version)))?,
            id: self.id,
            event_type: EventType::parse(&self.event_type).map_err(|e| corrupt(e.to_string()))?,
            schema: u32::try_from(self.schema)
                .map_err(|_| corrupt(format!("schema {} out of range", self.schema)))?,
            tenant: self.tenant,
            actor: Actor {
                kind: ActorKind::parse(&self.actor_kind)
                    .ok_or_else(|| corrupt(format!("unknown actor kind {:?}", self.actor_kind)))?,
                id: self.actor_id,
            },
            occurred_at: Timestamp::parse(&self.occurred_at).map_err(|e| corrupt(e.to_string()))?,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            data: serde_json::from_str(&self.data)
                .map_err(|e| corrupt(format!("data is not valid JSON: {e}")))?,
            prev_hash: EventHash::from_slice(&self.prev_hash)
                .ok_or_else(|| corrupt("prev_hash is not 32 bytes".into()))?,
            hash: EventHash::from_slice(&self.hash)
                .ok_or_else(|| corrupt("hash is not 32 bytes".into()))?,
        })
    }
}

/// Converts a position or version to the database's signed integer.
pub(crate) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Reads `(position, hash)` of the last row, or the empty head.
pub(crate) fn head_from_row<R: Row>(row: Option<R>) -> Result<Head, StoreError>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    let Some(row) = row else {
        return Ok(Head::default());
    };
    let position: i64 = row.try_get(0)?;
    let hash: Vec<u8> = row.try_get(1)?;
    let position = u64::try_from(position).unwrap_or(0);
    Ok(Head {
        position,
        hash: EventHash::from_slice(&hash).ok_or(StoreError::CorruptRecord {
            position,
            reason: "hash is not 32 bytes".into(),
        })?,
    })
}

/// Reads `(id, stream, position, version)` of a stored event, for idempotent retries.
pub(crate) fn existing_from_row<R: Row>(row: &R) -> Result<(Uuid, Existing), StoreError>
where
    for<'r> Uuid: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    let id: Uuid = row.try_get(0)?;
    Ok((
        id,
        Existing {
            stream: row.try_get(1)?,
            position: u64::try_from(row.try_get::<i64, _>(2)?).unwrap_or(0),
            version: u64::try_from(row.try_get::<i64, _>(3)?).unwrap_or(0),
        },
    ))
}
