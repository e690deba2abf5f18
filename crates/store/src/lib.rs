//! The event log: one totally ordered, hash-chained, append-only sequence of events, on SQLite (the
//! embedded default) or PostgreSQL.
//!
//! Every append goes through one writer per store that group-commits whatever is waiting into one
//! transaction; callers hear back only once their batch is durable.
//!
//! Architecture invariant: this crate knows events only as records. It never interprets `data`.

mod batch;
mod follow;
pub mod postgres;
mod row;
pub mod sqlite;
mod sqlite_read;
mod writer;

use std::sync::Arc;

use async_trait::async_trait;
use custodian_domain::{EventHash, EventRecord, NewEvent, StreamName};
use tokio::sync::watch;

pub use follow::{follow, follow_rechecking};

/// The default ceiling on one event's serialized `data`: 256 KiB.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 256 * 1024;

/// What the caller believes about the stream's current version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the version is.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must be at exactly this version (`0` means it does not exist).
    Exact(u64),
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Any => f.write_str("any version"),
            Self::NoStream => f.write_str("no stream"),
            Self::Exact(n) => write!(f, "version {n}"),
        }
    }
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Position of the first event of the append.
    pub first_position: u64,
    /// Position of the last event of the append: the consistency token to hand back to the caller.
    pub last_position: u64,
    /// The stream's version after the append's last event.
    pub stream_version: u64,
    /// True when these ids were already in the log and nothing was written (an idempotent retry).
    pub deduplicated: bool,
}

/// The last committed position and its hash (`0` and zeros for an empty log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Head {
    /// Last position.
    pub position: u64,
    /// Its hash.
    pub hash: EventHash,
}

/// Everything that can go wrong with the log, named for the caller.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// `append` was called with no events.
    #[error("an append needs at least one event; none were given")]
    EmptyAppend,
    /// One event's data is over the configured limit.
    #[error(
        "event {index} of the append has {size} bytes of data, over the limit of {limit} bytes"
    )]
    EventTooLarge {
        /// 0-based index within the append.
        index: usize,
        /// Serialized size of its data.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// One event's data cannot be put in canonical form.
    #[error("event {index} of the append has data that cannot be serialized as canonical JSON")]
    Unserializable {
        /// 0-based index within the append.
        index: usize,
    },
    /// The stream's version is not what the caller expected: someone else wrote first.
    #[error("stream {stream} is at version {actual}, but the append expected {expected}")]
    WrongExpectedVersion {
        /// The stream.
        stream: String,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// What it is.
        actual: u64,
    },
    /// An event id is already in the log as part of a different append.
    #[error(
        "event id {id} is already in the log as part of a different append; retry only with the exact same events"
    )]
    DuplicateEventId {
        /// The id.
        id: uuid::Uuid,
    },
    /// A stored row cannot be read as an event record.
    #[error("the record at position {position} is unreadable: {reason}")]
    CorruptRecord {
        /// Its position.
        position: u64,
        /// Why.
        reason: String,
    },
    /// The location of the database is not usable.
    #[error("{0}")]
    Config(String),
    /// The store is shutting down and takes no more appends.
    #[error("the event store is shutting down")]
    Closed,
    /// The database failed; the append may be retried with the same event ids.
    #[error("database error: {0}")]
    Database(Arc<sqlx::Error>),
    /// Applying the schema failed.
    #[error("migrating the database failed: {0}")]
    Migration(Arc<sqlx::migrate::MigrateError>),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(Arc::new(e))
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Migration(Arc::new(e))
    }
}

/// The log. One trait, one conformance suite, several backends.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `stream`, atomically: all or none.
    ///
    /// The append is checked against `expected`; a mismatch writes nothing and returns
    /// [`StoreError::WrongExpectedVersion`]. If every event id is already in the log as the same
    /// append, nothing is written and the original positions are returned (`deduplicated`).
    /// Returns only once the events are durable.
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError>;

    /// Up to `limit` events of `stream` with version `>= from_version`, in version order.
    async fn read_stream(
        &self,
        stream: &StreamName,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError>;

    /// Up to `limit` events with position `>= from_position`, in position order, with no gaps.
    async fn read_all(
        &self,
        from_position: u64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError>;

    /// The last committed position and hash, read from the database.
    async fn head(&self) -> Result<Head, StoreError>;

    /// A receiver of the highest committed position this process knows of; it changes after every
    /// commit (on PostgreSQL also commits by other processes). Used to follow the log without polling.
    fn watch_head(&self) -> watch::Receiver<u64>;

    /// Checks the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Stops taking appends, finishes those already taken, and waits for the writer to stop.
    async fn close(&self);
}

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Largest serialized `data` of one event, in bytes.
    pub max_event_bytes: usize,
    /// Most events committed in one transaction.
    pub max_batch_events: usize,
    /// Open for reading only: no migrations, no writer.
    pub read_only: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            max_batch_events: 2048,
            read_only: false,
        }
    }
}

/// Whether a ledger is at `location` (as [`open`] takes it), found without creating anything: a
/// SQLite file that holds the log's `events` table, or a PostgreSQL database that has it. A missing
/// file or a PostgreSQL database that does not exist is no ledger; an unreachable server is an
/// error.
pub async fn ledger_exists(location: &str) -> Result<bool, StoreError> {
    if is_postgres(location) {
        postgres::ledger_exists(location).await
    } else {
        sqlite::ledger_exists(sqlite_path(location)).await
    }
}

fn is_postgres(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

fn sqlite_path(location: &str) -> &std::path::Path {
    let path = location
        .strip_prefix("sqlite://")
        .or_else(|| location.strip_prefix("sqlite:"));
    std::path::Path::new(path.unwrap_or(location))
}

/// Opens a store by location: a `postgres://` or `postgresql://` URL, a `sqlite:` URL, or a path
/// to a SQLite file.
pub async fn open(
    location: &str,
    options: StoreOptions,
) -> Result<Arc<dyn EventStore>, StoreError> {
    if is_postgres(location) {
        Ok(Arc::new(
            postgres::PostgresStore::open(location, options).await?,
        ))
    } else {
        Ok(Arc::new(
            sqlite::SqliteStore::open(sqlite_path(location), options).await?,
        ))
    }
}
