//! The production backend: PostgreSQL. Positions are assigned under a transaction-scoped advisory
//! lock, so several processes on one database still produce one gapless, totally ordered log, and a
//! `NOTIFY` after each commit wakes every process's followers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use custodian_domain::{EventRecord, NewEvent, StreamName};
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{PgPool, Row};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::batch::{self, Pending, VersionCache};
use crate::row::{COLUMNS, StoredRow, existing_from_row, head_from_row, to_i64};
use crate::writer::{Committer, Decided, Writer, advance};
use crate::{AppendOutcome, EventStore, ExpectedVersion, Head, StoreError, StoreOptions};

/// The advisory lock that serializes appends across processes ("custodn" in ASCII).
const APPEND_LOCK: i64 = 0x0063_7573_746f_646e;
/// The channel a commit notifies with its new head position.
const CHANNEL: &str = "custodian_log";

/// Whether the database at `url` holds the log's `events` table. A database that does not exist
/// holds none; any other failure to connect is an error.
pub(crate) async fn ledger_exists(url: &str) -> Result<bool, StoreError> {
    use sqlx::Connection as _;
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
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
            let committer = Box::new(PostgresCommitter {
                pool: pool.clone(),
                cache: VersionCache::default(),
            });
            store.writer = Some(Writer::spawn(committer, head.clone(), &options));
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            store.listener = Some(tokio::spawn(listen(listener, head)));
        }
        let current = store.head().await?;
        advance(&store.head, current.position);
        Ok(store)
    }
}

/// Raises the head on every commit notification, from this process or another.
async fn listen(mut listener: PgListener, head: Arc<watch::Sender<u64>>) {
    loop {
        match listener.recv().await {
            Ok(n) => {
                if let Ok(position) = n.payload().parse() {
                    advance(&head, position);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "lost the PostgreSQL notification connection; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
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

struct PostgresCommitter {
    pool: PgPool,
    cache: VersionCache,
}

#[async_trait]
impl Committer for PostgresCommitter {
    fn forget(&mut self) {
        self.cache.reset();
    }

    async fn try_commit(
        &mut self,
        pendings: &[Pending],
        look_up_ids: bool,
    ) -> Result<Option<Decided>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(APPEND_LOCK)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
        let head = head_from_row(row)?;
        self.cache.sync(head);

        let missing = self.cache.missing(pendings);
        let mut found = HashMap::new();
        if !missing.is_empty() {
            // One index probe per stream; a GROUP BY over the streams would read them whole.
            let rows = sqlx::query(
                "SELECT s.stream, (SELECT e.version FROM events e WHERE e.stream = s.stream \
                 ORDER BY e.version DESC LIMIT 1) FROM UNNEST($1::text[]) AS s(stream)",
            )
            .bind(&missing)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                let stream: String = row.try_get(0)?;
                if let Some(v) = row.try_get::<Option<i64>, _>(1)? {
                    found.insert(stream, u64::try_from(v).unwrap_or(0));
                }
            }
        }
        self.cache.fill(missing, &found);

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
        if !plan.records.is_empty() {
            let r = &plan.records;
            sqlx::query(&format!(
                "WITH inserted AS (INSERT INTO events ({COLUMNS}) SELECT * FROM UNNEST(\
                 $1::bigint[], $2::uuid[], $3::text[], $4::bigint[], $5::text[], $6::bigint[], \
                 $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], \
                 $13::text[], $14::bytea[], $15::bytea[]) RETURNING 1) \
                 SELECT pg_notify($16, $17)"
            ))
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
            .bind(r.iter().map(|r| r.prev_hash.0.to_vec()).collect::<Vec<_>>())
            .bind(r.iter().map(|r| r.hash.0.to_vec()).collect::<Vec<_>>())
            .bind(CHANNEL)
            .bind(plan.head.position.to_string())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.cache.committed(&plan);
        Ok(Some((plan.results, plan.head)))
    }
}
