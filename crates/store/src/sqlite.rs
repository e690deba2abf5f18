//! The embedded backend: one SQLite file in WAL mode with `synchronous = FULL`, so an acknowledged
//! append survives a crash of the process or the machine.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use custodian_domain::{EventHash, EventRecord, NewEvent, StreamName};
use rusqlite::{OptionalExtension as _, TransactionBehavior};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection as _, Sqlite, SqlitePool};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::batch::{self, Existing, Pending, VersionCache};
use crate::row::{head_from_row, to_i64};
use crate::sqlite_read::SqliteReader;
use crate::writer::{BlockingCommitter, Decided, Writer};
use crate::{AppendOutcome, EventStore, ExpectedVersion, Head, StoreError, StoreOptions};

const IDS_PER_QUERY: usize = 900;
/// How often an open store asks whether another process (a command-line bootstrap or key rotation
/// while a server runs) committed to the file: SQLite cannot notify, so the head watch would only
/// learn of it at the followers' idle recheck.
const OTHER_WRITERS_POLL: Duration = Duration::from_millis(100);

/// How long a connection waits for another process's write lock before it gives up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The log in one SQLite file.
///
/// Appends are committed by one writer thread that owns its own connection to the file; reads go
/// through a small pool of other connections.
pub struct SqliteStore {
    read: SqlitePool,
    reads: SqliteReader,
    /// Whether `events` has the integer `stream_key` (migration 0004); a file opened read-only
    /// may predate it.
    keyed_streams: bool,
    writer: Option<Writer>,
    head: Arc<watch::Sender<u64>>,
    watcher: Option<JoinHandle<()>>,
}

impl SqliteStore {
    /// Opens (creating if needed, unless read-only) the database at `path` and applies migrations.
    pub async fn open(path: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        if options.read_only && !path.is_file() {
            return Err(StoreError::Config(format!(
                "no SQLite database at {}",
                path.display()
            )));
        }
        if !options.read_only {
            create_private(path)?;
        }
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(!options.read_only)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT);
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(connect.clone())
            .await?;
        let mut store = Self {
            read,
            reads: SqliteReader::new(path),
            keyed_streams: false,
            writer: None,
            head: Arc::new(watch::channel(0).0),
            watcher: None,
        };
        if !options.read_only {
            let watching = sqlx::SqliteConnection::connect_with(&connect).await?;
            let write = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(connect)
                .await?;
            sqlx::migrate!("./migrations/sqlite").run(&write).await?;
            write.close().await;
            let path = path.to_path_buf();
            let conn = tokio::task::spawn_blocking(move || writer_connection(&path))
                .await
                .map_err(|e| {
                    StoreError::Config(format!("cannot open the log for writing: {e}"))
                })??;
            let committer = Box::new(SqliteCommitter {
                conn,
                memory: Memory::default(),
            });
            store.writer = Some(Writer::spawn_thread(
                committer,
                store.head.clone(),
                &options,
            )?);
            store.watcher = Some(tokio::spawn(watch_other_writers(
                watching,
                store.head.clone(),
            )));
        }
        store.keyed_streams = sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM pragma_table_info('events') WHERE name = 'stream_key'",
        )
        .fetch_one(&store.read)
        .await?
            > 0;
        let head = store.head().await?;
        crate::writer::advance(&store.head, head.position);
        Ok(store)
    }
}

/// Creates the database's directory (mode 0700) and the empty database file (mode 0600) unless
/// they exist, whatever the process's umask. SQLite gives the files it makes beside the database
/// (`-wal`, `-shm`, `-journal`) the database file's mode, so the whole log, the views and the
/// vault stay readable by the service's user alone. An existing directory or file keeps its mode
/// (an operator may share it on purpose), with a warning when others may read it.
fn create_private(path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};

    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        builder.mode(0o700);
        builder.create(dir).map_err(|e| {
            StoreError::Config(format!("cannot create directory {}: {e}", dir.display()))
        })?;
        #[cfg(unix)]
        warn_if_shared(dir, std::fs::metadata(dir).map(|m| m.permissions().mode()));
    }
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create_new(true);
    #[cfg(unix)]
    file.mode(0o600);
    match file.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            #[cfg(unix)]
            warn_if_shared(
                path,
                std::fs::metadata(path).map(|m| m.permissions().mode()),
            );
            Ok(())
        }
        Err(e) => Err(StoreError::Config(format!(
            "cannot create the database {}: {e}",
            path.display()
        ))),
    }
}

/// Warns when group or others have any access to `path`, which holds the log or its directory.
#[cfg(unix)]
fn warn_if_shared(path: &Path, mode: std::io::Result<u32>) {
    if let Ok(mode) = mode
        && mode & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", mode & 0o777),
            "the database's files are open to other users of this machine; restrict them with chmod go-rwx"
        );
    }
}

/// Advances `head` to the file's last position whenever another connection has committed to it:
/// `PRAGMA data_version` changes then, and asking costs no read of the log.
async fn watch_other_writers(mut conn: sqlx::SqliteConnection, head: Arc<watch::Sender<u64>>) {
    let mut seen = None;
    let mut tick = tokio::time::interval(OTHER_WRITERS_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let version: i64 = match sqlx::query_scalar("PRAGMA data_version")
            .fetch_one(&mut conn)
            .await
        {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "cannot ask SQLite for commits by other processes");
                continue;
            }
        };
        if seen == Some(version) {
            continue;
        }
        match read_head(&mut conn).await {
            Ok(h) => {
                seen = Some(version);
                crate::writer::advance(&head, h.position);
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the head of the log"),
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let Some(w) = &self.watcher {
            w.abort();
        }
    }
}

/// Whether `path` is a SQLite file holding the log, looked at read-only: nothing is created.
pub(crate) async fn ledger_exists(path: &Path) -> Result<bool, StoreError> {
    if !path.is_file() {
        return Ok(false);
    }
    let mut conn = sqlx::SqliteConnection::connect_with(
        &SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .busy_timeout(BUSY_TIMEOUT),
    )
    .await?;
    let found: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'")
            .fetch_optional(&mut conn)
            .await?;
    conn.close().await?;
    Ok(found.is_some())
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        match &self.writer {
            Some(w) => w.append(stream, expected, events).await,
            None => Err(StoreError::Config("the store was opened read-only".into())),
        }
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.reads
            .read_stream(stream, from_version, limit, self.keyed_streams)
            .await
    }

    async fn read_all(
        &self,
        from_position: u64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.reads.read_all(from_position, limit).await
    }

    async fn head(&self) -> Result<Head, StoreError> {
        read_head(&self.read).await
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    async fn close(&self) {
        if let Some(w) = &self.writer {
            w.close().await;
        }
    }
}

async fn read_head<'e, E>(executor: E) -> Result<Head, StoreError>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    let row = sqlx::query("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1")
        .fetch_optional(executor)
        .await?;
    head_from_row(row)
}

/// How durably the writer commits to the database at `path`: its journal mode and its
/// `synchronous` level (`2` is FULL), read back from a connection opened exactly as the writer
/// opens its own. An acknowledged append survives a power loss only with `("wal", 2)`.
pub fn writer_durability(path: &Path) -> Result<(String, i64), StoreError> {
    let conn = writer_connection(path)?;
    let journal: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    let synchronous: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
    Ok((journal, synchronous))
}

/// Opens the writer's own connection: WAL, and every commit synced to disk before it returns.
fn writer_connection(path: &Path) -> Result<rusqlite::Connection, StoreError> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "wal")?;
    conn.pragma_update(None, "synchronous", "full")?;
    Ok(conn)
}

/// A failure of the writer's SQLite connection, carried as a database error like any other, so
/// that callers see one [`StoreError::Database`] and the writer still recognises a unique
/// violation (an append retried with ids already stored).
#[derive(Debug)]
struct SqliteFailure {
    message: String,
    unique: bool,
    source: rusqlite::Error,
}

impl std::fmt::Display for SqliteFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SqliteFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl sqlx::error::DatabaseError for SqliteFailure {
    fn message(&self) -> &str {
        &self.message
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        if self.unique {
            sqlx::error::ErrorKind::UniqueViolation
        } else {
            sqlx::error::ErrorKind::Other
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(source: rusqlite::Error) -> Self {
        let unique = matches!(
            source.sqlite_error(),
            Some(e) if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        );
        Self::Database(Arc::new(sqlx::Error::Database(Box::new(SqliteFailure {
            message: source.to_string(),
            unique,
            source,
        }))))
    }
}

/// The writer thread's half of a group commit: its connection and what it remembers of the log.
struct SqliteCommitter {
    conn: rusqlite::Connection,
    memory: Memory,
}

/// What the writer remembers of the log between commits.
#[derive(Default)]
struct Memory {
    /// Streams' versions, while the head is the one it last committed.
    cache: VersionCache,
    /// Streams' keys. A key never changes once committed, so this memory stays valid whatever
    /// other processes append; only keys of committed transactions enter it.
    keys: HashMap<String, i64>,
}

/// Keys remembered before the memory starts over, bounding it.
const CACHED_KEYS: usize = 100_000;

const INSERT_EVENT: &str = "INSERT INTO events (position, id, stream, version, type, schema, tenant, actor_kind, actor_id, occurred_at, correlation_id, causation_id, data, prev_hash, hash, stream_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)";

/// The head of the log as this connection sees it.
fn head_of(conn: &rusqlite::Connection) -> Result<Head, StoreError> {
    let row: Option<(i64, Vec<u8>)> = conn
        .prepare_cached("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((position, hash)) = row else {
        return Ok(Head::default());
    };
    let position = u64::try_from(position).unwrap_or(0);
    Ok(Head {
        position,
        hash: EventHash::from_slice(&hash).ok_or(StoreError::CorruptRecord {
            position,
            reason: "hash is not 32 bytes".into(),
        })?,
    })
}

/// Where each of `ids` already stored sits, for idempotent retries.
fn existing_ids(
    conn: &rusqlite::Connection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Existing>, StoreError> {
    let mut existing = HashMap::new();
    for chunk in ids.chunks(IDS_PER_QUERY) {
        let marks = vec!["?"; chunk.len()].join(", ");
        let mut query = conn.prepare(&format!(
            "SELECT id, stream, position, version FROM events WHERE id IN ({marks})"
        ))?;
        let mut rows = query.query(rusqlite::params_from_iter(
            chunk.iter().map(|id| id.as_bytes().as_slice()),
        ))?;
        while let Some(row) = rows.next()? {
            let id: Vec<u8> = row.get(0)?;
            let Ok(id) = Uuid::from_slice(&id) else {
                continue;
            };
            existing.insert(
                id,
                Existing {
                    stream: row.get(1)?,
                    position: u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
                    version: u64::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
                },
            );
        }
    }
    Ok(existing)
}

impl Memory {
    /// The key of `stream` if it has one: remembered, or read from `streams`.
    fn known_key(
        &mut self,
        conn: &rusqlite::Connection,
        stream: &str,
    ) -> Result<Option<i64>, StoreError> {
        if let Some(key) = self.keys.get(stream) {
            return Ok(Some(*key));
        }
        let key: Option<i64> = conn
            .prepare_cached("SELECT key FROM streams WHERE name = ?1")?
            .query_row([stream], |r| r.get(0))
            .optional()?;
        if let Some(key) = key {
            if self.keys.len() >= CACHED_KEYS {
                self.keys.clear();
            }
            self.keys.insert(stream.to_owned(), key);
        }
        Ok(key)
    }
}

impl BlockingCommitter for SqliteCommitter {
    fn forget(&mut self) {
        self.memory.cache.reset();
    }

    fn try_commit(
        &mut self,
        pendings: &[Pending],
        look_up_ids: bool,
    ) -> Result<Option<Decided>, StoreError> {
        let Self { conn, memory } = self;
        // IMMEDIATE takes the write lock up front, so the head cannot move under us.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let head = head_of(&tx)?;
        memory.cache.sync(head);

        let missing = memory.cache.missing(pendings);
        let mut found = HashMap::new();
        for stream in &missing {
            let Some(key) = memory.known_key(&tx, stream)? else {
                continue;
            };
            let version: Option<i64> = tx
                .prepare_cached(
                    "SELECT version FROM events WHERE stream_key = ?1 ORDER BY version DESC LIMIT 1",
                )?
                .query_row([key], |r| r.get(0))
                .optional()?;
            if let Some(v) = version {
                found.insert(stream.clone(), u64::try_from(v).unwrap_or(0));
            }
        }
        memory.cache.fill(missing, &found);

        let existing = if look_up_ids {
            existing_ids(&tx, &batch::ids(pendings))?
        } else {
            HashMap::new()
        };

        let plan = batch::seal(head, &existing, memory.cache.versions(), pendings);
        if !look_up_ids && plan.results.iter().any(Result::is_err) {
            // A refused append may be a retry of one already stored: decide again with the lookup.
            return Ok(None);
        }
        let mut new_keys: Vec<(&str, i64)> = Vec::new();
        {
            let mut insert = tx.prepare_cached(INSERT_EVENT)?;
            let mut occurred_at = String::with_capacity(32);
            for r in &plan.records {
                let name = r.stream.as_str();
                let key = match new_keys.iter().find(|(n, _)| *n == name) {
                    Some((_, key)) => *key,
                    None => match memory.known_key(&tx, name)? {
                        Some(key) => key,
                        None => {
                            tx.prepare_cached("INSERT INTO streams (name) VALUES (?1)")?
                                .execute([name])?;
                            let key = tx.last_insert_rowid();
                            new_keys.push((name, key));
                            key
                        }
                    },
                };
                occurred_at.clear();
                {
                    use std::fmt::Write as _;
                    let _ = write!(occurred_at, "{}", r.event.occurred_at);
                }
                insert.execute(rusqlite::params![
                    to_i64(r.position),
                    r.event.id.as_bytes().as_slice(),
                    name,
                    to_i64(r.version),
                    r.event.event_type.as_str(),
                    i64::from(r.event.schema),
                    r.stream.tenant(),
                    r.event.actor.kind.as_str(),
                    r.event.actor.id.as_str(),
                    occurred_at.as_str(),
                    r.event.correlation_id.as_deref(),
                    r.event.causation_id.as_deref(),
                    r.data,
                    r.prev_hash.0.as_slice(),
                    r.hash.0.as_slice(),
                    key,
                ])?;
            }
        }
        tx.commit()?;
        if memory.keys.len() + new_keys.len() > CACHED_KEYS {
            memory.keys.clear();
        }
        for (name, key) in new_keys {
            memory.keys.insert(name.to_owned(), key);
        }
        memory.cache.committed_sealed(&plan);
        Ok(Some((plan.results, plan.head)))
    }
}
