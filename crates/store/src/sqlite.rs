//! The embedded backend: one SQLite file in WAL mode with `synchronous = FULL`, so an acknowledged
//! append survives a crash of the process or the machine.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use custodian_domain::{EventRecord, NewEvent, StreamName};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection as _, QueryBuilder, Sqlite, SqlitePool};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::batch::{self, Pending, VersionCache};
use crate::row::{COLUMNS, existing_from_row, head_from_row, to_i64};
use crate::sqlite_read::SqliteReader;
use crate::writer::{Committer, Decided, Writer};
use crate::{AppendOutcome, EventStore, ExpectedVersion, Head, StoreError, StoreOptions};

const IDS_PER_QUERY: usize = 900;
/// How often an open store asks whether another process (a command-line bootstrap or key rotation
/// while a server runs) committed to the file: SQLite cannot notify, so the head watch would only
/// learn of it at the followers' idle recheck.
const OTHER_WRITERS_POLL: Duration = Duration::from_millis(100);

/// The log in one SQLite file.
pub struct SqliteStore {
    read: SqlitePool,
    reads: SqliteReader,
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
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Config(format!("cannot create directory {}: {e}", dir.display()))
            })?;
        }
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(!options.read_only)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30));
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(connect.clone())
            .await?;
        let mut store = Self {
            read,
            reads: SqliteReader::new(path),
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
            let committer = Box::new(SqliteCommitter {
                pool: write,
                cache: VersionCache::default(),
            });
            store.writer = Some(Writer::spawn(committer, store.head.clone(), &options));
            store.watcher = Some(tokio::spawn(watch_other_writers(
                watching,
                store.head.clone(),
            )));
        }
        let head = store.head().await?;
        crate::writer::advance(&store.head, head.position);
        Ok(store)
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
            .busy_timeout(Duration::from_secs(30)),
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
        self.reads.read_stream(stream, from_version, limit).await
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

struct SqliteCommitter {
    pool: SqlitePool,
    cache: VersionCache,
}

/// Rows per insert statement. Every statement of 1 to 64 rows stays prepared in the connection's
/// statement cache (100 entries), so a batch is typically one cached statement.
const ROWS_PER_INSERT: usize = 64;

#[async_trait]
impl Committer for SqliteCommitter {
    fn forget(&mut self) {
        self.cache.reset();
    }

    async fn try_commit(
        &mut self,
        pendings: &[Pending],
        look_up_ids: bool,
    ) -> Result<Option<Decided>, StoreError> {
        // IMMEDIATE takes the write lock up front, so the head cannot move under us.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let head = read_head(&mut *tx).await?;
        self.cache.sync(head);

        let missing = self.cache.missing(pendings);
        let mut found = HashMap::new();
        for stream in &missing {
            let version: Option<i64> = sqlx::query_scalar(
                "SELECT version FROM events WHERE stream = ? ORDER BY version DESC LIMIT 1",
            )
            .bind(stream.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(v) = version {
                found.insert(stream.clone(), u64::try_from(v).unwrap_or(0));
            }
        }
        self.cache.fill(missing, &found);

        let mut existing = HashMap::new();
        if look_up_ids {
            for chunk in batch::ids(pendings).chunks(IDS_PER_QUERY) {
                let mut q = QueryBuilder::<Sqlite>::new(
                    "SELECT id, stream, position, version FROM events WHERE id IN (",
                );
                let mut list = q.separated(", ");
                for id in chunk {
                    list.push_bind(*id);
                }
                q.push(")");
                for row in q.build().fetch_all(&mut *tx).await? {
                    let (id, place) = existing_from_row(&row)?;
                    existing.insert(id, place);
                }
            }
        }

        let plan = batch::plan(head, &existing, self.cache.versions(), pendings);
        if !look_up_ids && plan.results.iter().any(Result::is_err) {
            // A refused append may be a retry of one already stored: decide again with the lookup.
            return Ok(None);
        }
        let mut offset = 0;
        while offset < plan.records.len() {
            let size = (plan.records.len() - offset).min(ROWS_PER_INSERT);
            let rows = &plan.records[offset..offset + size];
            let data = &plan.data[offset..offset + size];
            let times: Vec<String> = rows.iter().map(|r| r.occurred_at.to_string()).collect();
            let mut q = QueryBuilder::<Sqlite>::new(format!("INSERT INTO events ({COLUMNS}) "));
            q.push_values(rows.iter().enumerate(), |mut b, (i, r)| {
                b.push_bind(to_i64(r.position))
                    .push_bind(r.id)
                    .push_bind(r.stream.as_str())
                    .push_bind(to_i64(r.version))
                    .push_bind(r.event_type.as_str())
                    .push_bind(i64::from(r.schema))
                    .push_bind(r.tenant.as_str())
                    .push_bind(r.actor.kind.as_str())
                    .push_bind(r.actor.id.as_str())
                    .push_bind(times[i].as_str())
                    .push_bind(r.correlation_id.as_deref())
                    .push_bind(r.causation_id.as_deref())
                    .push_bind(data[i])
                    .push_bind(&r.prev_hash.0[..])
                    .push_bind(&r.hash.0[..]);
            });
            q.build().persistent(true).execute(&mut *tx).await?;
            offset += size;
        }
        tx.commit().await?;
        self.cache.committed(&plan);
        Ok(Some((plan.results, plan.head)))
    }
}
