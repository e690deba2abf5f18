//! Reading the SQLite log on blocking threads through a few read-only connections of its own, so
//! that a page of events is decoded straight into [`EventRecord`]s in one hand-off instead of one
//! hand-off between the async runtime and a connection thread per row.
//!
//! The connections are opened on first use and kept (up to [`READERS`]); in WAL mode they read the
//! last committed state without blocking the writer or each other.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use custodian_domain::{
    Actor, ActorKind, EventHash, EventRecord, EventType, StreamName, Timestamp,
};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, Row};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::StoreError;

/// Most reads in flight at once, and most connections kept open.
const READERS: usize = 4;
/// How long a read waits for a lock (only ever held briefly, e.g. during WAL recovery).
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The columns read, by name, in the order [`decode`] expects.
const SELECT: &str = "SELECT position, id, stream, version, type, schema, tenant, actor_kind, actor_id, \
     occurred_at, correlation_id, causation_id, data, prev_hash, hash FROM events";

/// The read side of one SQLite log file.
#[derive(Clone)]
pub(crate) struct SqliteReader {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl SqliteReader {
    /// A reader of the file at `path`; nothing is opened until the first read.
    pub(crate) fn new(path: &Path) -> Self {
        Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(READERS)),
            }),
        }
    }

    /// Up to `limit` events with position `>= from`, in position order.
    pub(crate) async fn read_all(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.run(move |conn| {
            query(
                conn,
                &format!("{SELECT} WHERE position >= ?1 ORDER BY position LIMIT ?2"),
                rusqlite::params![to_i64(from), to_i64(limit as u64)],
                limit,
            )
        })
        .await
    }

    /// Up to `limit` events of `stream` with version `>= from_version`, in version order. A log
    /// with integer stream keys (`keyed`, migration 0004) is searched by its `(stream_key,
    /// version)` index; an older file, opened read-only, by its `(stream, version)` index.
    pub(crate) async fn read_stream(
        &self,
        stream: &StreamName,
        from_version: u64,
        limit: usize,
        keyed: bool,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let stream = stream.as_str().to_owned();
        let by = if keyed {
            "stream_key = (SELECT key FROM streams WHERE name = ?1)"
        } else {
            "stream = ?1"
        };
        self.run(move |conn| {
            query(
                conn,
                &format!("{SELECT} WHERE {by} AND version >= ?2 ORDER BY version LIMIT ?3"),
                rusqlite::params![stream, to_i64(from_version), to_i64(limit as u64)],
                limit,
            )
        })
        .await
    }

    /// Runs `read` on a blocking thread with a connection of the pool.
    async fn run<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        // The permit goes with the blocking read: a caller that stops waiting does not free its
        // place while the read still holds a connection.
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = match inner.idle.lock().ok().and_then(|mut idle| idle.pop()) {
                Some(conn) => conn,
                None => open(&inner.path)?,
            };
            let result = read(&conn);
            if let Ok(mut idle) = inner.idle.lock()
                && idle.len() < READERS
            {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| database(format!("a read of the log stopped: {e}")))?
    }
}

fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite_error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite_error)?;
    Ok(conn)
}

fn query(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    limit: usize,
) -> Result<Vec<EventRecord>, StoreError> {
    let mut statement = conn.prepare_cached(sql).map_err(sqlite_error)?;
    let mut rows = statement.query(params).map_err(sqlite_error)?;
    let mut records = Vec::with_capacity(limit.min(4096));
    while let Some(row) = rows.next().map_err(sqlite_error)? {
        records.push(decode(row)?);
    }
    Ok(records)
}

/// Decodes one row; anything malformed is a [`StoreError::CorruptRecord`] at its position.
fn decode(row: &Row<'_>) -> Result<EventRecord, StoreError> {
    let position = match row.get_ref(0).map_err(sqlite_error)? {
        ValueRef::Integer(p) => u64::try_from(p).unwrap_or(0),
        _ => 0,
    };
    let corrupt = |reason: String| StoreError::CorruptRecord { position, reason };
    let value = |i: usize| row.get_ref(i).map_err(|e| corrupt(e.to_string()));
    let integer = |i: usize, what: &str| match value(i)? {
        ValueRef::Integer(n) => Ok(n),
        other => Err(corrupt(format!(
            "{what} is {:?}, not an integer",
            other.data_type()
        ))),
    };
    let text = |i: usize, what: &str| match value(i)? {
        ValueRef::Text(t) => {
            std::str::from_utf8(t).map_err(|e| corrupt(format!("{what} is not UTF-8: {e}")))
        }
        other => Err(corrupt(format!(
            "{what} is {:?}, not text",
            other.data_type()
        ))),
    };
    let optional_text = |i: usize, what: &str| match value(i)? {
        ValueRef::Null => Ok(None),
        _ => text(i, what).map(|t| Some(t.to_owned())),
    };
    let blob = |i: usize, what: &str| match value(i)? {
        ValueRef::Blob(b) => Ok(b),
        other => Err(corrupt(format!(
            "{what} is {:?}, not a blob",
            other.data_type()
        ))),
    };

    if !matches!(value(0)?, ValueRef::Integer(p) if p > 0) {
        return Err(corrupt("position is not a positive integer".into()));
    }
    let version = integer(3, "version")?;
    let schema = integer(5, "schema")?;
    let actor_kind = text(7, "actor_kind")?;
    let data = match value(12)? {
        ValueRef::Text(t) => serde_json::from_slice(t)
            .map_err(|e| corrupt(format!("data is not valid JSON: {e}")))?,
        other => {
            return Err(corrupt(format!(
                "data is {:?}, not text",
                other.data_type()
            )));
        }
    };
    Ok(EventRecord {
        position,
        id: Uuid::from_slice(blob(1, "id")?).map_err(|_| corrupt("id is not 16 bytes".into()))?,
        stream: StreamName::parse(text(2, "stream")?).map_err(|e| corrupt(e.to_string()))?,
        version: u64::try_from(version)
            .map_err(|_| corrupt(format!("negative version {version}")))?,
        event_type: EventType::parse(text(4, "type")?).map_err(|e| corrupt(e.to_string()))?,
        schema: u32::try_from(schema)
            .map_err(|_| corrupt(format!("schema {schema} out of range")))?,
        tenant: text(6, "tenant")?.to_owned(),
        actor: Actor {
            kind: ActorKind::parse(actor_kind)
                .ok_or_else(|| corrupt(format!("unknown actor kind {actor_kind:?}")))?,
            id: text(8, "actor_id")?.to_owned(),
        },
        occurred_at: Timestamp::parse(text(9, "occurred_at")?)
            .map_err(|e| corrupt(e.to_string()))?,
        correlation_id: optional_text(10, "correlation_id")?,
        causation_id: optional_text(11, "causation_id")?,
        data,
        prev_hash: EventHash::from_slice(blob(13, "prev_hash")?)
            .ok_or_else(|| corrupt("prev_hash is not 32 bytes".into()))?,
        hash: EventHash::from_slice(blob(14, "hash")?)
            .ok_or_else(|| corrupt("hash is not 32 bytes".into()))?,
    })
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn database(message: String) -> StoreError {
    StoreError::Database(Arc::new(sqlx::Error::Io(std::io::Error::other(message))))
}

fn sqlite_error(e: rusqlite::Error) -> StoreError {
    StoreError::Database(Arc::new(sqlx::Error::Io(std::io::Error::other(e))))
}
