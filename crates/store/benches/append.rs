//! Append throughput and latency of the event log, against a plain-INSERT floor.
//!
//! For each backend (SQLite in a temporary directory; PostgreSQL in a fresh database, skipped with a
//! note when the server is unreachable) this appends `BENCH_EVENTS` events (default 100,000) of
//! about 1 KiB of JSON data each, with 1, 8 and 64 concurrent writers. Each writer is a tokio task
//! that makes single-event appends with [`ExpectedVersion::Any`] to its own stream
//! `bench/writer/w{n}`, one after the other, and records the latency of every append (from the
//! call to the durable acknowledgement). Every run gets a fresh database so that runs do not
//! influence each other. A single writer makes one durable transaction per event, so its run is
//! capped at 10,000 events; the table says so.
//!
//! The floor is what the database itself sustains for the same rows without the store: the same
//! columns as the `events` table, the same ~1 KiB data and random bytes in place of the hashes,
//! inserted by one connection with multi-row `INSERT`s of 500 rows per transaction, with the
//! store's connection settings (SQLite: WAL, `synchronous = FULL`). It does no hashing, no version
//! or duplicate checks and no group-commit hand-off, and it amortizes each durable commit over 500
//! rows, so the store cannot be expected to beat it: the store's throughput divided by the floor's
//! is the share of the database's capacity that the store delivers. The floor's latency columns
//! are per 500-row transaction.
//!
//! One more run per backend appends with 64 writers while a follower reads every committed event
//! and pushes its hash into an RFC 6962 Merkle tree, as the server's ledger does; the table's
//! `64 + tree` row and the line under it compare it with the plain 64-writer run.
//!
//! Run with `cargo bench -p custodian-store --bench append`. Any append error ends the run with a
//! non-zero exit status.

use std::error::Error;
use std::time::{Duration, Instant};

use custodian_domain::{Actor, EventType, NewEvent, StreamName, Timestamp};
use custodian_store::{EventStore, ExpectedVersion, StoreOptions};
use custodian_testkit::table::{Table, percentile_ms, thousands};
use custodian_testkit::{Backend, Ledger};
use sqlx::QueryBuilder;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

type BoxError = Box<dyn Error + Send + Sync>;
type Result<T> = std::result::Result<T, BoxError>;

/// Concurrent writers per run.
const WRITERS: [usize; 3] = [1, 8, 64];
/// Most events a single writer appends: each is its own durable transaction.
const SINGLE_WRITER_CAP: usize = 10_000;
/// Writers of the run with a Merkle tree following the log.
const MERKLE_WRITERS: usize = 64;
/// Rows per transaction of the floor.
const FLOOR_BATCH: usize = 500;
/// Target serialized size of one event's data.
const DATA_BYTES: usize = 1024;
/// The columns of `events`, as in the migrations.
const COLUMNS: &str = "position, id, stream, version, type, schema, tenant, actor_kind, actor_id, occurred_at, correlation_id, causation_id, data, prev_hash, hash";
const EVENT_TYPE: &str = "bench.appended";
const OCCURRED_AT: &str = "2026-11-25T12:00:00Z";
const CORRELATION_ID: &str = "req_bench";

/// One row of the results table.
struct Measurement {
    backend: Backend,
    /// `None` for the floor.
    writers: Option<usize>,
    events: usize,
    capped: bool,
    elapsed: Duration,
    /// Per append; per transaction for the floor.
    latencies: Vec<Duration>,
    /// A Merkle tree followed the log during the run.
    merkle: bool,
}

impl Measurement {
    fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
}

/// The ~1 KiB JSON data of one event; only `writer` and `seq` vary.
#[derive(Clone)]
struct Payload(serde_json::Value);

impl Payload {
    fn new() -> Self {
        let mut value = serde_json::json!({
            "writer": 0,
            "seq": 0,
            "secret_id": "sec_0192d7c4e5f67a8b9c0d1e2f3a4b5c6d",
            "path": "prod/payments/stripe/api-key",
            "labels": { "team": "payments", "env": "prod", "rotation": "90d" },
            "actor_ip": "203.0.113.42",
            "user_agent": "custodian-cli/0.1.0 (linux; x86_64)",
            "note": "",
        });
        let base = value.to_string().len();
        value["note"] = serde_json::Value::String("x".repeat(DATA_BYTES.saturating_sub(base)));
        Self(value)
    }

    fn for_event(&self, writer: usize, seq: usize) -> serde_json::Value {
        let mut value = self.0.clone();
        value["writer"] = writer.into();
        value["seq"] = seq.into();
        value
    }
}

/// A small deterministic generator (SplitMix64) for the floor's stand-in hash bytes.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn hash(&mut self) -> Vec<u8> {
        (0..4).flat_map(|_| self.next().to_le_bytes()).collect()
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let requested = match std::env::var("BENCH_EVENTS") {
        Ok(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("BENCH_EVENTS must be a positive integer, not {v:?}"))?,
        Err(_) => 100_000,
    };
    let payload = Payload::new();
    eprintln!(
        "append benchmark: {requested} events of {} bytes of JSON data per run; writers {WRITERS:?}",
        payload.0.to_string().len()
    );

    // BENCH_BACKEND=sqlite|postgresql|postgres and BENCH_WRITERS=64 narrow a run, e.g. for
    // profiling. A value that names nothing is refused rather than giving an empty table.
    let only_backend = match std::env::var("BENCH_BACKEND") {
        Ok(v) if Backend::ALL.iter().any(|b| b.matches(&v)) => Some(v),
        Ok(v) => {
            return Err(
                format!("BENCH_BACKEND must be sqlite, postgresql or postgres, not {v:?}").into(),
            );
        }
        Err(_) => None,
    };
    let only_writers: Option<usize> = match std::env::var("BENCH_WRITERS") {
        Ok(v) => Some(
            v.trim()
                .parse()
                .ok()
                .filter(|w| WRITERS.contains(w))
                .ok_or_else(|| format!("BENCH_WRITERS must be one of {WRITERS:?}, not {v:?}"))?,
        ),
        Err(_) => None,
    };
    let mut rows = Vec::new();
    for backend in Backend::ALL {
        if only_backend.as_deref().is_some_and(|b| !backend.matches(b)) {
            continue;
        }
        let Some(db) = Ledger::fresh(backend).await else {
            eprintln!("note: {} is unreachable; skipping it", backend.name());
            continue;
        };
        let floor = run_floor(backend, db, requested, &payload).await?;
        report(&floor);
        rows.push(floor);
        for writers in WRITERS {
            if only_writers.is_some_and(|w| w != writers) {
                continue;
            }
            let db = Ledger::fresh(backend)
                .await
                .ok_or_else(|| format!("{} became unreachable", backend.name()))?;
            let run = run_store(backend, db, writers, requested, &payload, false).await?;
            report(&run);
            rows.push(run);
        }
        if only_writers.is_none_or(|w| w == MERKLE_WRITERS) {
            let db = Ledger::fresh(backend)
                .await
                .ok_or_else(|| format!("{} became unreachable", backend.name()))?;
            let run = run_store(backend, db, MERKLE_WRITERS, requested, &payload, true).await?;
            report(&run);
            rows.push(run);
        }
    }

    println!();
    print_table(&rows);
    Ok(())
}

fn report(m: &Measurement) {
    let who = m
        .writers
        .map_or_else(|| "floor".to_owned(), |w| format!("{w} writer(s)"));
    eprintln!(
        "{} {who}: ran {} events in {:.2} s",
        m.backend.name(),
        m.events,
        m.elapsed.as_secs_f64()
    );
}

/// Appends through the store with `writers` concurrent tasks.
async fn run_store(
    backend: Backend,
    db: Ledger,
    writers: usize,
    requested: usize,
    payload: &Payload,
    merkle: bool,
) -> Result<Measurement> {
    let (events, capped) = if writers == 1 && requested > SINGLE_WRITER_CAP {
        (SINGLE_WRITER_CAP, true)
    } else {
        (requested, false)
    };
    let store = custodian_store::open(&db.location, StoreOptions::default()).await?;
    let event_type = EventType::parse(EVENT_TYPE)?;
    let occurred_at = Timestamp::parse(OCCURRED_AT)?;
    let follower = merkle.then(|| {
        let store = store.clone();
        tokio::spawn(async move {
            use futures::StreamExt as _;
            let mut tree = custodian_domain::merkle::Tree::new();
            let mut log = Box::pin(custodian_store::follow(store, 1));
            while tree.size() < events as u64 {
                match log.next().await {
                    Some(Ok(record)) => tree.push(&record.hash.0),
                    Some(Err(e)) => return Err(BoxError::from(e)),
                    None => break,
                }
            }
            Ok(tree.size())
        })
    });

    let start = Instant::now();
    let mut tasks = Vec::with_capacity(writers);
    for w in 0..writers {
        let count = events / writers + usize::from(w < events % writers);
        let store = store.clone();
        let stream = StreamName::parse(&format!("bench/writer/w{w}"))?;
        let event_type = event_type.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            write(
                &*store,
                &stream,
                count,
                w,
                &event_type,
                occurred_at,
                &payload,
            )
            .await
        }));
    }
    let mut latencies = Vec::with_capacity(events);
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = start.elapsed();
    if let Some(follower) = follower {
        let size = follower.await??;
        if size != events as u64 {
            return Err(format!("the Merkle tree has {size} leaves, expected {events}").into());
        }
    }

    let head = store.head().await?;
    if head.position != events as u64 {
        return Err(format!(
            "{} with {writers} writers: the log ends at position {}, expected {events}",
            backend.name(),
            head.position
        )
        .into());
    }
    store.close().await;
    drop(store);
    db.remove().await?;
    Ok(Measurement {
        backend,
        writers: Some(writers),
        events,
        capped,
        elapsed,
        latencies,
        merkle,
    })
}

/// One writer: `count` single-event appends, one after the other, each timed.
async fn write(
    store: &dyn EventStore,
    stream: &StreamName,
    count: usize,
    writer: usize,
    event_type: &EventType,
    occurred_at: Timestamp,
    payload: &Payload,
) -> Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(count);
    for seq in 0..count {
        let event = NewEvent {
            id: uuid::Uuid::now_v7(),
            event_type: event_type.clone(),
            schema: 1,
            actor: Actor::system(),
            occurred_at,
            correlation_id: Some(CORRELATION_ID.to_owned()),
            causation_id: None,
            data: payload.for_event(writer, seq),
        };
        let t = Instant::now();
        store
            .append(stream, ExpectedVersion::Any, vec![event])
            .await
            .map_err(|e| format!("append {seq} of writer {writer} to {stream} failed: {e}"))?;
        latencies.push(t.elapsed());
    }
    Ok(latencies)
}

/// One floor row, ready to bind.
struct FloorRow {
    position: i64,
    id: uuid::Uuid,
    version: i64,
    data: String,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
}

/// Builds one multi-row `INSERT` of `rows` for any backend, with the same values the store writes.
fn floor_insert<'a, DB>(rows: &'a [FloorRow], fixed: &'a FloorFixed) -> QueryBuilder<'a, DB>
where
    DB: sqlx::Database,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    uuid::Uuid: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Option<&'a str>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    &'a [u8]: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let key_column = if fixed.stream_key.is_some() {
        ", stream_key"
    } else {
        ""
    };
    let mut q = QueryBuilder::<DB>::new(format!("INSERT INTO events ({COLUMNS}{key_column}) "));
    q.push_values(rows, |mut b, r| {
        b.push_bind(r.position)
            .push_bind(r.id)
            .push_bind(fixed.stream.as_str())
            .push_bind(r.version)
            .push_bind(EVENT_TYPE)
            .push_bind(1_i64)
            .push_bind(fixed.tenant.as_str())
            .push_bind("system")
            .push_bind("custodian")
            .push_bind(fixed.occurred_at.as_str())
            .push_bind(Some(CORRELATION_ID))
            .push_bind(None::<&str>)
            .push_bind(r.data.as_str())
            .push_bind(&r.prev_hash[..])
            .push_bind(&r.hash[..]);
        if let Some(key) = fixed.stream_key {
            b.push_bind(key);
        }
    });
    q
}

/// The columns that are the same in every floor row, written as the store writes them.
struct FloorFixed {
    stream: String,
    /// The stream's integer key, where the backend's `events` has one (SQLite).
    stream_key: Option<i64>,
    tenant: String,
    occurred_at: String,
}

/// The floor: the same rows through plain batched `INSERT`s on one connection.
async fn run_floor(
    backend: Backend,
    db: Ledger,
    events: usize,
    payload: &Payload,
) -> Result<Measurement> {
    // The store creates the schema; then it is out of the way.
    let store = custodian_store::open(&db.location, StoreOptions::default()).await?;
    store.close().await;
    drop(store);

    let stream = StreamName::parse("bench/writer/w0")?;
    let pool = FloorPool::connect(backend, &db.location).await?;
    let fixed = FloorFixed {
        stream_key: pool.stream_key(stream.as_str()).await?,
        tenant: stream.tenant().to_owned(),
        stream: stream.as_str().to_owned(),
        occurred_at: Timestamp::parse(OCCURRED_AT)?.to_string(),
    };
    let mut random = SplitMix(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    );
    let mut rows = Vec::with_capacity(FLOOR_BATCH);
    let mut latencies = Vec::with_capacity(events.div_ceil(FLOOR_BATCH));
    let mut next = 1_usize;

    let start = Instant::now();
    while next <= events {
        rows.clear();
        for position in next..=(next + FLOOR_BATCH - 1).min(events) {
            rows.push(FloorRow {
                position: position as i64,
                id: uuid::Uuid::now_v7(),
                version: position as i64,
                data: payload.for_event(0, position - 1).to_string(),
                prev_hash: random.hash(),
                hash: random.hash(),
            });
        }
        next += rows.len();
        let t = Instant::now();
        pool.insert(&rows, &fixed).await?;
        latencies.push(t.elapsed());
    }
    let elapsed = start.elapsed();
    let stored = pool.count().await?;
    pool.close().await;
    if stored != events as i64 {
        return Err(format!(
            "{} floor: {stored} rows stored, expected {events}",
            backend.name()
        )
        .into());
    }
    db.remove().await?;
    Ok(Measurement {
        backend,
        writers: None,
        events,
        capped: false,
        elapsed,
        latencies,
        merkle: false,
    })
}

/// The floor's single connection, with the store's settings.
enum FloorPool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl FloorPool {
    async fn connect(backend: Backend, location: &str) -> Result<Self> {
        Ok(match backend {
            Backend::Sqlite => {
                let options = SqliteConnectOptions::new()
                    .filename(location)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(30));
                Self::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(1)
                        .connect_with(options)
                        .await?,
                )
            }
            Backend::Postgres => Self::Postgres(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .connect(location)
                    .await?,
            ),
        })
    }

    /// One transaction, one multi-row `INSERT`.
    async fn insert(&self, rows: &[FloorRow], fixed: &FloorFixed) -> Result<()> {
        match self {
            Self::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                floor_insert::<sqlx::Sqlite>(rows, fixed)
                    .build()
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            Self::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                floor_insert::<sqlx::Postgres>(rows, fixed)
                    .build()
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Registers the floor's one stream where the schema keys streams by integer, as the store
    /// does before its first append to it.
    async fn stream_key(&self, stream: &str) -> Result<Option<i64>> {
        let Self::Sqlite(pool) = self else {
            return Ok(None);
        };
        let keyed: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'streams'",
        )
        .fetch_one(pool)
        .await?;
        if keyed == 0 {
            return Ok(None);
        }
        Ok(Some(
            sqlx::query_scalar("INSERT INTO streams (name) VALUES (?) RETURNING key")
                .bind(stream)
                .fetch_one(pool)
                .await?,
        ))
    }

    async fn count(&self) -> Result<i64> {
        const SQL: &str = "SELECT COUNT(*) FROM events";
        Ok(match self {
            Self::Sqlite(pool) => sqlx::query_scalar(SQL).fetch_one(pool).await?,
            Self::Postgres(pool) => sqlx::query_scalar(SQL).fetch_one(pool).await?,
        })
    }

    async fn close(self) {
        match self {
            Self::Sqlite(pool) => pool.close().await,
            Self::Postgres(pool) => pool.close().await,
        }
    }
}

fn print_table(rows: &[Measurement]) {
    let mut table = Table::new([
        "backend",
        "writers",
        "events",
        "events/s",
        "p50 ms",
        "p99 ms",
        "ratio to floor",
    ]);
    for m in rows {
        let floor = rows
            .iter()
            .find(|f| f.backend == m.backend && f.writers.is_none())
            .map_or(f64::NAN, Measurement::events_per_second);
        let writers = match m.writers {
            None => "floor".to_owned(),
            Some(w) if m.merkle => format!("{w} + tree"),
            Some(w) => w.to_string(),
        };
        let events = if m.capped {
            format!("{} (capped for 1 writer)", thousands(m.events as u64))
        } else {
            thousands(m.events as u64)
        };
        table.row([
            m.backend.name().to_owned(),
            writers,
            events,
            thousands(m.events_per_second().round() as u64),
            format!("{:.2}", percentile_ms(&m.latencies, 50.0)),
            format!("{:.2}", percentile_ms(&m.latencies, 99.0)),
            format!("{:.2}", m.events_per_second() / floor),
        ]);
    }
    print!("{table}");
    println!();
    println!(
        "Floor rows: one connection, multi-row INSERTs of {FLOOR_BATCH} rows per transaction; their p50/p99 are per transaction."
    );
    for with_tree in rows.iter().filter(|m| m.merkle) {
        if let Some(without) = rows
            .iter()
            .find(|m| m.backend == with_tree.backend && m.writers == with_tree.writers && !m.merkle)
        {
            println!(
                "{}: {MERKLE_WRITERS} writers with the Merkle tree following: {} events/s, without: {} events/s (ratio {:.2}).",
                with_tree.backend.name(),
                thousands(with_tree.events_per_second().round() as u64),
                thousands(without.events_per_second().round() as u64),
                with_tree.events_per_second() / without.events_per_second()
            );
        }
    }
}
