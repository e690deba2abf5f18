//! The production backend: PostgreSQL. Positions are assigned under a transaction-scoped advisory
//! lock, so several processes on one database still produce one gapless, totally ordered log, and a
//! `NOTIFY` after each commit wakes every process's followers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use custodian_domain::{EventRecord, NewEvent, StreamName};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{Connection as _, PgConnection, PgPool, Row};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::batch::{self, Pending, Plan, VersionCache};
use crate::row::{COLUMNS, StoredRow, existing_from_row, head_from_row, to_i64};
use crate::writer::{Committer, Decided, Writer, advance};
use crate::{AppendOutcome, EventStore, ExpectedVersion, Head, StoreError, StoreOptions};

/// The advisory lock that serializes appends across processes ("custodn" in ASCII).
const APPEND_LOCK: i64 = 0x0063_7573_746f_646e;
/// The advisory lock that serializes schema work across processes ("cschema" in ASCII): the log's
/// migrations, the views' registry and tables, and anything else a process creates or drops at
/// start-up or while it runs. Servers started at the same moment on a fresh database would
/// otherwise race each other's `CREATE TABLE` (PostgreSQL's `IF NOT EXISTS` is not safe against
/// a concurrent creation). Distinct from the append lock, so schema work never holds up appends.
/// The migrations take it for the session on a connection of their own; other schema work takes
/// it for its transaction (`pg_advisory_xact_lock`), which conflicts with the session's.
pub const SCHEMA_LOCK: i64 = 0x0063_7363_6865_6d61;
/// The channel a commit notifies with its new head position.
const CHANNEL: &str = "custodian_log";
/// How the writer's connection shows in `pg_stat_activity`.
pub const WRITER_APPLICATION_NAME: &str = "custodian writer";
/// How the connection that listens for commits shows in `pg_stat_activity`.
pub const LISTENER_APPLICATION_NAME: &str = "custodian listener";

/// Whether the database at `url` holds the log's `events` table. A database that does not exist
/// holds none; any other failure to connect is an error.
pub(crate) async fn ledger_exists(url: &str) -> Result<bool, StoreError> {
    let mut conn = match sqlx::PgConnection::connect(url).await {
        Ok(conn) => conn,
        // invalid_catalog_name: the database does not exist.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    let found: bool = sqlx::query_scalar("SELECT to_regclass('events') IS NOT NULL")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(found)
}

/// The log in a PostgreSQL database.
pub struct PostgresStore {
    pool: PgPool,
    writer: Option<Writer>,
    head: Arc<watch::Sender<u64>>,
    listener: Option<JoinHandle<()>>,
}

impl PostgresStore {
    /// Connects to `url` and applies migrations (unless read-only).
    pub async fn open(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        let head = Arc::new(watch::channel(0).0);
        let mut store = Self {
            pool: pool.clone(),
            writer: None,
            head: head.clone(),
            listener: None,
        };
        if !options.read_only {
            migrate(&pool).await?;
            let committer = Box::new(PostgresCommitter::new(
                pool.connect_options()
                    .as_ref()
                    .clone()
                    .application_name(WRITER_APPLICATION_NAME),
            ));
            store.writer = Some(Writer::spawn(committer, head.clone(), &options));
            // A pool of its own, so the listener's connection (and each reconnection) is named.
            let listening = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(10))
                .connect_lazy_with(
                    pool.connect_options()
                        .as_ref()
                        .clone()
                        .application_name(LISTENER_APPLICATION_NAME),
                );
            let mut listener = PgListener::connect_with(&listening).await?;
            listener.listen(CHANNEL).await?;
            store.listener = Some(tokio::spawn(listen(listener, pool.clone(), head)));
        }
        let current = store.head().await?;
        advance(&store.head, current.position);
        Ok(store)
    }
}

/// Applies the log's migrations on a connection of its own that holds [`SCHEMA_LOCK`] for the
/// session meanwhile, so no other process does schema work at the same time.
async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let mut conn = PgConnection::connect_with(pool.connect_options().as_ref()).await?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(SCHEMA_LOCK)
        .execute(&mut conn)
        .await?;
    // `run_direct` takes the connection itself: `run` through `Acquire` on a `&mut PgConnection`
    // makes every caller's future `Send` only for one lifetime, which spawning it refuses.
    let migrated = sqlx::migrate!("./migrations/postgres")
        .run_direct(&mut conn)
        .await;
    // Closing the session releases the lock too; unlocking first releases it at once.
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(SCHEMA_LOCK)
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
    migrated?;
    unlocked?;
    Ok(())
}

/// Raises the head on every commit notification, from this process or another. Notifications
/// sent while the connection was lost are lost too, so once the listener is connected and
/// listening again the head is read from the log, and a follower misses nothing.
async fn listen(mut listener: PgListener, pool: PgPool, head: Arc<watch::Sender<u64>>) {
    let mut resync = false;
    loop {
        if resync {
            // Reconnects and listens again if the connection is gone, then reads the head.
            let head_now = match sqlx::query("SELECT 1").execute(&mut listener).await {
                Ok(_) => {
                    sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(position) FROM events")
                        .fetch_one(&pool)
                        .await
                }
                Err(e) => Err(e),
            };
            match head_now {
                Ok(position) => {
                    advance(&head, position.map_or(0, |p| u64::try_from(p).unwrap_or(0)));
                    resync = false;
                }
                Err(e) => {
                    // Receiving finds a dead connection out and reopens it; then this is retried.
                    tracing::warn!(error = %e, "cannot listen for commits again; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        match listener.try_recv().await {
            Ok(Some(n)) => {
                if let Ok(position) = n.payload().parse() {
                    advance(&head, position);
                }
            }
            // The connection was lost, and has been reopened.
            Ok(None) => resync = true,
            Err(e) => {
                tracing::warn!(error = %e, "lost the PostgreSQL notification connection; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                resync = true;
            }
        }
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some(l) = &self.listener {
            l.abort();
        }
    }
}

#[async_trait]
impl EventStore for PostgresStore {
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
        let sql = format!(
            "SELECT {COLUMNS} FROM events WHERE stream = $1 AND version >= $2 ORDER BY version LIMIT $3"
        );
        let rows: Vec<StoredRow> = sqlx::query_as(&sql)
            .bind(stream.as_str())
            .bind(to_i64(from_version))
            .bind(to_i64(limit as u64))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(StoredRow::into_record).collect()
    }

    async fn read_all(
        &self,
        from_position: u64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM events WHERE position >= $1 ORDER BY position LIMIT $2");
        let rows: Vec<StoredRow> = sqlx::query_as(&sql)
            .bind(to_i64(from_position))
            .bind(to_i64(limit as u64))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(StoredRow::into_record).collect()
    }

    async fn head(&self) -> Result<Head, StoreError> {
        let row = sqlx::query("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        head_from_row(row)
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        if let Some(w) = &self.writer {
            w.close().await;
        }
        if let Some(l) = &self.listener {
            l.abort();
        }
    }
}

/// The writer's half on PostgreSQL, on a connection of its own (no pool hand-off or liveness ping
/// per commit).
///
/// A commit is one call of the `events_append` function: it takes the advisory lock, checks that
/// the head is the one the batch was sealed on, inserts and notifies, all in the statement's
/// implicit transaction, so a batch costs one round trip while this process is the only appender.
/// When another process has moved the head, the function writes nothing and the batch goes the
/// locked way: one transaction that takes the lock first and reads the head and versions under
/// it, which always succeeds. The writer keeps going that way while other processes append, and
/// returns to one round trip as soon as a commit finds that nobody else appended since its last.
struct PostgresCommitter {
    options: PgConnectOptions,
    conn: Option<PgConnection>,
    cache: VersionCache,
    /// Another process appended since this writer's last commit: skip the optimistic call.
    shared: bool,
}

/// How often the versions of a batch's streams are read before the batch takes the lock first:
/// each read that finds the head moved starts over.
const OPTIMISTIC_READS: usize = 3;

impl PostgresCommitter {
    fn new(options: PgConnectOptions) -> Self {
        Self {
            options,
            conn: None,
            cache: VersionCache::default(),
            shared: false,
        }
    }

    /// Decides and writes the batch on `conn`; see [`Committer::try_commit`].
    async fn commit_on(
        &mut self,
        conn: &mut PgConnection,
        pendings: &[Pending],
        look_up_ids: bool,
    ) -> Result<Option<Decided>, StoreError> {
        if !look_up_ids && !self.shared {
            if let Some(decided) = self.commit_optimistically(conn, pendings).await? {
                return Ok(Some(decided));
            }
            if self.shared {
                return self.commit_locked(conn, pendings, false).await;
            }
            // A refused append may be a retry of one already stored: decide again with the lookup.
            return Ok(None);
        }
        self.commit_locked(conn, pendings, look_up_ids).await
    }

    /// One round trip when the versions of every stream of the batch are remembered: seals the
    /// batch on the remembered head and writes it if that head is still the log's. `Ok(None)`
    /// when an append is refused (then `shared` is unchanged) or the head has moved (then
    /// `shared` is set); nothing is written either way.
    async fn commit_optimistically(
        &mut self,
        conn: &mut PgConnection,
        pendings: &[Pending],
    ) -> Result<Option<Decided>, StoreError> {
        let mut reads = 0;
        let head = loop {
            match self.cache.head() {
                Some(head) if self.cache.missing(pendings).is_empty() => break head,
                _ if reads == OPTIMISTIC_READS => {
                    self.shared = true;
                    return Ok(None);
                }
                _ => {
                    self.read_versions(conn, pendings).await?;
                    reads += 1;
                }
            }
        };
        let plan = batch::plan(head, &HashMap::new(), self.cache.versions(), pendings);
        if plan.results.iter().any(Result::is_err) {
            return Ok(None);
        }
        if !write(conn, head, &plan).await? {
            self.shared = true;
            return Ok(None);
        }
        self.cache.committed(&plan);
        Ok(Some((plan.results, plan.head)))
    }

    /// The batch in one transaction that holds the advisory lock from its start: always decided
    /// against the log as it is.
    async fn commit_locked(
        &mut self,
        conn: &mut PgConnection,
        pendings: &[Pending],
        look_up_ids: bool,
    ) -> Result<Option<Decided>, StoreError> {
        let mut tx = conn.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(APPEND_LOCK)
            .execute(&mut *tx)
            .await?;
        let last_own = self.cache.head();
        self.read_versions(&mut tx, pendings).await?;
        let head = match self.cache.head() {
            // Under the lock the head cannot move, so one more read finds every version.
            Some(head) if self.cache.missing(pendings).is_empty() => head,
            _ => {
                self.read_versions(&mut tx, pendings).await?;
                self.cache.head().ok_or_else(|| {
                    StoreError::Config("the log's head could not be read under the lock".into())
                })?
            }
        };
        if last_own == Some(head) {
            // Nobody else appended since this writer's last commit.
            self.shared = false;
        }

        let mut existing = HashMap::new();
        if look_up_ids {
            let rows =
                sqlx::query("SELECT id, stream, position, version FROM events WHERE id = ANY($1)")
                    .bind(batch::ids(pendings))
                    .fetch_all(&mut *tx)
                    .await?;
            for row in rows {
                let (id, place) = existing_from_row(&row)?;
                existing.insert(id, place);
            }
        }

        let plan = batch::plan(head, &existing, self.cache.versions(), pendings);
        if !look_up_ids && plan.results.iter().any(Result::is_err) {
            // A refused append may be a retry of one already stored: decide again with the lookup.
            return Ok(None);
        }
        if !plan.records.is_empty() && !write(&mut tx, head, &plan).await? {
            return Err(StoreError::Config(
                "the log's head moved while this writer held the append lock".into(),
            ));
        }
        tx.commit().await?;
        self.cache.committed(&plan);
        Ok(Some((plan.results, plan.head)))
    }

    /// Reads the head and the versions of the batch's streams that the cache lacks, in one
    /// statement (one snapshot), and takes them in: when the head is not the one the cache knew,
    /// the cache starts over from what was read, and the caller reads again for the rest.
    async fn read_versions(
        &mut self,
        conn: &mut PgConnection,
        pendings: &[Pending],
    ) -> Result<(), StoreError> {
        let missing = self.cache.missing(pendings);
        // One index probe per stream; a GROUP BY over the streams would read them whole.
        let row = sqlx::query(
            "SELECT h.position, h.hash, ARRAY(SELECT (SELECT e.version FROM events e \
             WHERE e.stream = s.stream ORDER BY e.version DESC LIMIT 1) \
             FROM UNNEST($1::text[]) WITH ORDINALITY AS s(stream, n) ORDER BY s.n) \
             FROM (SELECT 1) AS one LEFT JOIN LATERAL \
             (SELECT position, hash FROM events ORDER BY position DESC LIMIT 1) AS h ON true",
        )
        .bind(&missing)
        .fetch_one(&mut *conn)
        .await?;
        let versions: Vec<Option<i64>> = row.try_get(2)?;
        let head = match row.try_get::<Option<i64>, _>(0)? {
            None => Head::default(),
            Some(_) => head_from_row(Some(row))?,
        };
        let found: HashMap<String, u64> = missing
            .iter()
            .zip(versions)
            .filter_map(|(s, v)| Some((s.clone(), u64::try_from(v?).unwrap_or(0))))
            .collect();
        self.cache.sync(head);
        self.cache.fill(missing, &found);
        Ok(())
    }
}

/// Writes the sealed batch through `events_append`: true when written, false when the log's head
/// is no longer `head` (nothing written). On a connection outside a transaction the statement
/// commits on its own, and the answer arrives only once the commit is durable.
async fn write(conn: &mut PgConnection, head: Head, plan: &Plan<'_>) -> Result<bool, StoreError> {
    let r = &plan.records;
    let written: bool = sqlx::query_scalar(
        "SELECT events_append($1, $2, $3, $4, $5::bigint[], $6::uuid[], $7::text[], \
         $8::bigint[], $9::text[], $10::bigint[], $11::text[], $12::text[], $13::text[], \
         $14::text[], $15::text[], $16::text[], $17::text[], $18::bytea[], $19::bytea[])",
    )
    .bind(APPEND_LOCK)
    .bind(CHANNEL)
    .bind(to_i64(head.position))
    .bind(&head.hash.0[..])
    .bind(r.iter().map(|r| to_i64(r.position)).collect::<Vec<_>>())
    .bind(r.iter().map(|r| r.id).collect::<Vec<_>>())
    .bind(r.iter().map(|r| r.stream.as_str()).collect::<Vec<_>>())
    .bind(r.iter().map(|r| to_i64(r.version)).collect::<Vec<_>>())
    .bind(r.iter().map(|r| r.event_type.as_str()).collect::<Vec<_>>())
    .bind(r.iter().map(|r| i64::from(r.schema)).collect::<Vec<_>>())
    .bind(r.iter().map(|r| r.tenant.as_str()).collect::<Vec<_>>())
    .bind(r.iter().map(|r| r.actor.kind.as_str()).collect::<Vec<_>>())
    .bind(r.iter().map(|r| r.actor.id.as_str()).collect::<Vec<_>>())
    .bind(
        r.iter()
            .map(|r| r.occurred_at.to_string())
            .collect::<Vec<_>>(),
    )
    .bind(
        r.iter()
            .map(|r| r.correlation_id.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        r.iter()
            .map(|r| r.causation_id.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(&plan.data)
    .bind(r.iter().map(|r| &r.prev_hash.0[..]).collect::<Vec<_>>())
    .bind(r.iter().map(|r| &r.hash.0[..]).collect::<Vec<_>>())
    .fetch_one(conn)
    .await?;
    Ok(written)
}

/// Whether `e` leaves the connection usable: the server refused a statement (and rolled its
/// transaction back), as opposed to a broken connection or one the server is closing (SQLSTATE
/// classes 08, connection exception, and 57, operator intervention, such as a terminated backend
/// or a shutdown).
fn keeps_connection(e: &StoreError) -> bool {
    match e {
        StoreError::Database(e) => match &**e {
            sqlx::Error::Database(db) => !db
                .code()
                .is_some_and(|code| code.starts_with("08") || code.starts_with("57")),
            _ => false,
        },
        _ => true,
    }
}

#[async_trait]
impl Committer for PostgresCommitter {
    fn forget(&mut self) {
        self.cache.reset();
    }

    /// A connection kept from an earlier commit may have been closed meanwhile (a restarted
    /// server, an idle timeout, a terminated backend); then the batch is tried once more on a new
    /// connection. That is safe even if the first try did commit before the connection broke: the
    /// second finds the ids stored and answers with their positions, as for any retried append.
    async fn try_commit(
        &mut self,
        pendings: &[Pending],
        look_up_ids: bool,
    ) -> Result<Option<Decided>, StoreError> {
        let mut reused = true;
        loop {
            let mut conn = match self.conn.take() {
                Some(conn) => conn,
                None => {
                    reused = false;
                    PgConnection::connect_with(&self.options).await?
                }
            };
            let result = self.commit_on(&mut conn, pendings, look_up_ids).await;
            match &result {
                Err(e) if !keeps_connection(e) => {
                    self.cache.reset();
                    if reused {
                        tracing::info!(error = %e, "the append connection broke; reconnecting");
                        continue;
                    }
                }
                _ => self.conn = Some(conn),
            }
            return result;
        }
    }
}
