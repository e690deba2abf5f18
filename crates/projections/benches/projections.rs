//! Projection throughput when rebuilding a view from a large log, and steady-state lag behind a
//! paced stream of appends, against a plain fold of the same events in the same run.
//!
//! For each backend (SQLite in a temporary directory; PostgreSQL in a fresh database, skipped with a
//! note when the server is unreachable) this fills a fresh log with `BENCH_EVENTS` events (default
//! 1,000,000) of tenant lifecycles: tenant `n` lives in `_system/tenant/tnt_{n}` and gets
//! `tenant.created` followed by nine `tenant.renamed`, `tenant.plan_changed`, `tenant.suspended` and
//! `tenant.reactivated` events, each decided by the domain's own `tenant::decide` so the history is
//! valid. Each tenant's ten events are one append; 256 tasks append concurrently so the store's
//! group commit fills its 2,048-event transactions.
//!
//! After filling, the database settles (PostgreSQL: `VACUUM ANALYZE` and `CHECKPOINT`; SQLite: a
//! WAL checkpoint) so the fill's background work does not land on the first measurement. Then, over
//! that same log, with the page (batch) size 500 of the runtime's default:
//!
//! - **read only**: `store.read_all` page after page, nothing applied: the read ceiling;
//! - **plain fold** (the baseline): `read_all` pages applied with the `tenants` view's own `apply`
//!   through sqlx, one transaction per page on the views' pool, with no checkpoint, no registry and
//!   no runtime. It runs twice, before and after the runtime rows, so that their order favours
//!   neither; a line under the table splits its time into reading, applying and committing;
//! - **plain fold, pipelined**: the same, with the next page read by another task while the current
//!   one is applied, to show what overlapping reads and writes would give;
//! - **batch fold**: the plain fold with each page applied by the view's `apply_batch` (the page
//!   folded in memory, then multi-row statements) instead of event by event;
//! - **runtime rebuild, per event**: the runtime building a copy of the view that has no batch apply
//!   of its own, so it applies each page event by event, as before batch apply existed;
//! - **runtime, no-op fold**: the runtime building a projection whose `apply` does nothing, i.e.
//!   reads, transactions and checkpoints only;
//! - **runtime rebuild**: `Projections::start` with `TenantsView` (which applies each batch with its
//!   `apply_batch`) and `RuntimeOptions::default()`,
//!   timed from the call until `wait_for(head)` returns, i.e. until its first generation has been
//!   built from position 0 and swapped in;
//! - **runtime rebuild, batch `BENCH_BATCH`** (default 2,000; `0` skips it): the same with a larger
//!   batch size (as a copy of the view under another name, so it builds from 0 as well).
//!
//! "ratio to baseline" is events/s over the events/s of both plain-fold passes together (their
//! events over their time) on the same backend; "ratio to read ceiling" is events/s over the read
//! only row's. Every measurement runs in a spawned task, on a
//! worker thread like the runtime's own tasks.
//!
//! Finally, with the `tenants` view running and caught up, one ticker paces appends at
//! `BENCH_LAG_RATE` events/s (default 2,000) for `BENCH_LAG_SECONDS` (default 20): every 10 ms it
//! hands one single-event append to each of the next 20 of 64 tenant streams (new tenants, created
//! by their first append), each stream appending in order with an exact expected version. For every
//! append, a task spawned at its acknowledgement waits with `Projections::wait_for(last_position)`,
//! as a read-your-writes request would, and records the time from the acknowledgement until the
//! view has applied it.
//!
//! Run with `cargo bench -p custodian-projections --bench projections`; `BENCH_BACKEND=sqlite` or
//! `postgresql` narrows a run. Any error ends the run with a non-zero exit status.

use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use custodian_domain::EventRecord;
use custodian_projections::tenants::TenantsView;
use custodian_projections::{
    ApplyError, BatchApplyError, Projection, Projections, RuntimeOptions, Tables, ViewDb,
};
use custodian_store::{EventStore, ExpectedVersion, StoreOptions};
use custodian_testkit::fill::{EVENTS_PER_TENANT, TenantLife, fill, settle};
use custodian_testkit::table::{Table, percentile_ms, thousands};
use custodian_testkit::{Backend, Ledger};
use sqlx::AnyConnection;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn Error + Send + Sync>;
type Result<T> = std::result::Result<T, BoxError>;

/// Page size of the read-only pass and of the plain fold: the runtime's default batch size.
const PAGE: usize = 500;
/// Streams the paced appends are spread over.
const LAG_STREAMS: usize = 64;
/// The pacing interval of the lag phase.
const TICK: Duration = Duration::from_millis(10);
/// Longest a single wait for the view may take before the run fails.
const MAX_WAIT: Duration = Duration::from_secs(600);

/// The run's knobs.
#[derive(Clone)]
struct Config {
    events: u64,
    extra_batch: usize,
    lag_seconds: u64,
    lag_rate: u64,
}

fn env_number(name: &str, default: u64, allow_zero: bool) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|&n| allow_zero || n > 0)
            .ok_or_else(|| {
                let what = if allow_zero {
                    "a non-negative"
                } else {
                    "a positive"
                };
                format!("{name} must be {what} integer, not {v:?}").into()
            }),
        Err(_) => Ok(default),
    }
}

/// One rebuild measurement.
struct Rebuild {
    label: String,
    events: u64,
    elapsed: Duration,
    /// One of the plain fold's passes, which together make the baseline.
    baseline: bool,
}

impl Rebuild {
    fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
}

/// A projection with the `tenants` view's tables and no fold: what the runtime costs by itself.
/// It also hands out its tables, so that the plain fold can write into tables of the same shape.
struct NoopFold {
    name: &'static str,
    tables: Mutex<Option<Tables>>,
}

impl NoopFold {
    fn named(name: &'static str) -> Self {
        Self {
            name,
            tables: Mutex::new(None),
        }
    }

    /// The tables the runtime had it create.
    fn created(&self) -> Result<Tables> {
        self.tables
            .lock()
            .map_err(|_| "the no-op fold's tables are poisoned")?
            .clone()
            .ok_or_else(|| format!("the no-op fold {} created no tables", self.name).into())
    }
}

#[async_trait]
impl Projection for NoopFold {
    fn name(&self) -> &'static str {
        self.name
    }

    fn version(&self) -> u32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        TenantsView.tables()
    }

    fn create(&self, tables: &Tables) -> Vec<String> {
        if let Ok(mut t) = self.tables.lock() {
            *t = Some(tables.clone());
        }
        TenantsView.create(tables)
    }

    async fn apply(
        &self,
        _conn: &mut AnyConnection,
        _tables: &Tables,
        _event: &EventRecord,
    ) -> std::result::Result<(), ApplyError> {
        Ok(())
    }
}

/// The `tenants` view under another name, so that a second copy builds from position 0.
struct TenantsCopy;

#[async_trait]
impl Projection for TenantsCopy {
    fn name(&self) -> &'static str {
        "bench_tenants_copy"
    }

    fn version(&self) -> u32 {
        TenantsView.version()
    }

    fn tables(&self) -> &'static [&'static str] {
        TenantsView.tables()
    }

    fn create(&self, tables: &Tables) -> Vec<String> {
        TenantsView.create(tables)
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        tables: &Tables,
        event: &EventRecord,
    ) -> std::result::Result<(), ApplyError> {
        TenantsView.apply(conn, tables, event).await
    }

    async fn apply_batch(
        &self,
        conn: &mut AnyConnection,
        tables: &Tables,
        events: &[EventRecord],
    ) -> std::result::Result<(), BatchApplyError> {
        TenantsView.apply_batch(conn, tables, events).await
    }
}

/// The `tenants` view under another name, applied one event at a time (the default batch).
struct TenantsPerEvent;

#[async_trait]
impl Projection for TenantsPerEvent {
    fn name(&self) -> &'static str {
        "bench_tenants_per_event"
    }

    fn version(&self) -> u32 {
        TenantsView.version()
    }

    fn tables(&self) -> &'static [&'static str] {
        TenantsView.tables()
    }

    fn create(&self, tables: &Tables) -> Vec<String> {
        TenantsView.create(tables)
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        tables: &Tables,
        event: &EventRecord,
    ) -> std::result::Result<(), ApplyError> {
        TenantsView.apply(conn, tables, event).await
    }
}

/// Reads the whole log page by page and applies nothing.
async fn read_only(store: &Arc<dyn EventStore>, head: u64) -> Result<Rebuild> {
    let start = Instant::now();
    let mut position = 0;
    loop {
        let page = store.read_all(position + 1, PAGE).await?;
        let Some(last) = page.last() else { break };
        position = last.position;
    }
    let elapsed = start.elapsed();
    check_reached(position, head, "read only")?;
    Ok(Rebuild {
        label: format!("read only (`read_all`, pages of {PAGE})"),
        events: head,
        elapsed,
        baseline: false,
    })
}

/// Where the plain fold's time went.
#[derive(Default)]
struct Split {
    read: Duration,
    apply: Duration,
    commit: Duration,
}

/// The baseline: pages of the log applied with the view's own `apply`, one transaction per page,
/// no checkpoint and no runtime. Also returns how its time split between reading, applying and
/// committing.
async fn plain_fold(
    store: &Arc<dyn EventStore>,
    views: &ViewDb,
    tables: &Tables,
    head: u64,
    label: String,
    split: &mut Split,
) -> Result<Rebuild> {
    let start = Instant::now();
    let mut position = 0;
    loop {
        let t = Instant::now();
        let page = store.read_all(position + 1, PAGE).await?;
        split.read += t.elapsed();
        let Some(last) = page.last() else { break };
        position = last.position;
        let t = Instant::now();
        let mut tx = views.pool().begin().await?;
        for event in &page {
            TenantsView.apply(&mut tx, tables, event).await?;
        }
        split.apply += t.elapsed();
        let t = Instant::now();
        tx.commit().await?;
        split.commit += t.elapsed();
    }
    let elapsed = start.elapsed();
    check_reached(position, head, "plain fold")?;
    Ok(Rebuild {
        label,
        events: head,
        elapsed,
        baseline: true,
    })
}

/// The plain fold with each page applied by the view's `apply_batch` (multi-row statements)
/// instead of event by event.
async fn batch_fold(
    store: &Arc<dyn EventStore>,
    views: &ViewDb,
    tables: &Tables,
    head: u64,
) -> Result<Rebuild> {
    let start = Instant::now();
    let mut position = 0;
    loop {
        let page = store.read_all(position + 1, PAGE).await?;
        let Some(last) = page.last() else { break };
        position = last.position;
        let mut tx = views.pool().begin().await?;
        TenantsView.apply_batch(&mut tx, tables, &page).await?;
        tx.commit().await?;
    }
    let elapsed = start.elapsed();
    check_reached(position, head, "batch fold")?;
    Ok(Rebuild {
        label: format!(
            "batch fold: pages of {PAGE} by `apply_batch`, one transaction each, no checkpoint"
        ),
        events: head,
        elapsed,
        baseline: false,
    })
}

/// The plain fold with the next page read while the current one is applied: what overlapping the
/// two would give.
async fn pipelined_fold(
    store: &Arc<dyn EventStore>,
    views: &ViewDb,
    tables: &Tables,
    head: u64,
) -> Result<Rebuild> {
    let start = Instant::now();
    let (tx_pages, mut pages) = mpsc::channel::<Vec<EventRecord>>(1);
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut position = 0;
            loop {
                let page = store.read_all(position + 1, PAGE).await?;
                let Some(last) = page.last() else {
                    return Ok::<u64, BoxError>(position);
                };
                position = last.position;
                if tx_pages.send(page).await.is_err() {
                    return Err("the pipelined fold stopped early".into());
                }
            }
        })
    };
    let mut applied = 0;
    while let Some(page) = pages.recv().await {
        let mut tx = views.pool().begin().await?;
        for event in &page {
            TenantsView.apply(&mut tx, tables, event).await?;
        }
        tx.commit().await?;
        applied = page.last().map_or(applied, |e| e.position);
    }
    let read = reader.await??;
    let elapsed = start.elapsed();
    check_reached(read, head, "pipelined fold (read)")?;
    check_reached(applied, head, "pipelined fold")?;
    Ok(Rebuild {
        label: format!("plain fold, next page read while applying ({PAGE} per transaction)"),
        events: head,
        elapsed,
        baseline: false,
    })
}

fn check_reached(position: u64, head: u64, what: &str) -> Result<()> {
    if position == head {
        Ok(())
    } else {
        Err(format!("{what}: ended at position {position}, expected {head}").into())
    }
}

/// Builds the no-op fold named `name` with the runtime, which creates empty tables of the `tenants`
/// view's shape for a plain fold to write into. Returns the tables and the measurement.
async fn noop_run(
    location: &str,
    store: &Arc<dyn EventStore>,
    name: &'static str,
    head: u64,
) -> Result<(Tables, Rebuild)> {
    let noop = Arc::new(NoopFold::named(name));
    let options = RuntimeOptions::default();
    let label = format!("runtime, no-op fold (batch_size {})", options.batch_size);
    let (projections, run) =
        runtime_rebuild(location, store, noop.clone(), options, head, label).await?;
    projections.stop().await;
    Ok((noop.created()?, run))
}

/// Empty tables of the `tenants` view's shape, created by the runtime for the no-op fold named
/// `name`, which is stopped as soon as they exist.
async fn empty_tables(
    location: &str,
    store: &Arc<dyn EventStore>,
    name: &'static str,
) -> Result<Tables> {
    let noop = Arc::new(NoopFold::named(name));
    let projections = Projections::start(
        ViewDb::open(location).await?,
        store.clone(),
        vec![noop.clone()],
        RuntimeOptions::default(),
        CancellationToken::new(),
    )
    .await?;
    // A generation is reported once its tables are committed.
    let deadline = Instant::now() + MAX_WAIT;
    while !projections.statuses().iter().any(|s| s.name == name) {
        if Instant::now() > deadline {
            return Err(format!("the no-op fold {name} created no tables").into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    projections.stop().await;
    noop.created()
}

/// Starts the runtime with `projection` on a log whose views do not have it yet and times it until
/// `wait_for(head)` returns. Returns the running projections and the measurement.
async fn runtime_rebuild(
    location: &str,
    store: &Arc<dyn EventStore>,
    projection: Arc<dyn Projection>,
    options: RuntimeOptions,
    head: u64,
    label: String,
) -> Result<(Projections, Rebuild)> {
    let views = ViewDb::open(location).await?;
    let start = Instant::now();
    let projections = Projections::start(
        views,
        store.clone(),
        vec![projection],
        options,
        CancellationToken::new(),
    )
    .await?;
    projections.wait_for(head, MAX_WAIT).await?;
    let elapsed = start.elapsed();
    Ok((
        projections,
        Rebuild {
            label,
            events: head,
            elapsed,
            baseline: false,
        },
    ))
}

/// Rows in a view's `tenants` table.
async fn count_rows(views: &ViewDb, tables: &Tables) -> Result<u64> {
    let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", tables.name("tenants")))
        .fetch_one(views.pool())
        .await?;
    Ok(u64::try_from(n)?)
}

fn check_rows(rows: u64, tenants: u64, what: &str) -> Result<()> {
    if rows == tenants {
        Ok(())
    } else {
        Err(format!("{what}: {rows} tenant rows, expected {tenants}").into())
    }
}

/// The lag phase's outcome.
struct Lag {
    target_rate: u64,
    appends: usize,
    /// From the first tick to the last acknowledgement.
    elapsed: Duration,
    /// Per append, from its acknowledgement until the view applied it.
    lags: Vec<Duration>,
}

impl Lag {
    fn achieved_rate(&self) -> f64 {
        self.appends as f64 / self.elapsed.as_secs_f64()
    }
}

/// Appends at `rate` events/s for `seconds` while `projections` follow, and measures each append's
/// lag. `first_tenant` numbers the new tenants the appends create.
async fn lag(
    store: &Arc<dyn EventStore>,
    projections: &Arc<Projections>,
    first_tenant: u64,
    seconds: u64,
    rate: u64,
) -> Result<Lag> {
    let (lag_tx, mut lag_rx) = mpsc::unbounded_channel::<std::result::Result<Duration, String>>();
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<Instant>();
    let mut goes = Vec::with_capacity(LAG_STREAMS);
    let mut writers = Vec::with_capacity(LAG_STREAMS);
    for w in 0..LAG_STREAMS {
        let (go_tx, mut go_rx) = mpsc::unbounded_channel::<()>();
        goes.push(go_tx);
        let (store, projections) = (store.clone(), projections.clone());
        let (lag_tx, ack_tx) = (lag_tx.clone(), ack_tx.clone());
        let mut life = TenantLife::new(first_tenant + w as u64)?;
        writers.push(tokio::spawn(async move {
            while go_rx.recv().await.is_some() {
                let event = life.next_event()?;
                let expected = ExpectedVersion::Exact(life.version - 1);
                let outcome = store
                    .append(&life.stream, expected, vec![event])
                    .await
                    .map_err(|e| format!("lag phase: the append to {} failed: {e}", life.stream))?;
                let acked = Instant::now();
                let _ = ack_tx.send(acked);
                let (projections, lag_tx) = (projections.clone(), lag_tx.clone());
                tokio::spawn(async move {
                    let waited = projections
                        .wait_for(outcome.last_position, MAX_WAIT)
                        .await
                        .map(|()| acked.elapsed())
                        .map_err(|e| e.to_string());
                    let _ = lag_tx.send(waited);
                });
            }
            Ok::<(), BoxError>(())
        }));
    }
    drop((lag_tx, ack_tx));

    let tick_ms = TICK.as_millis() as u64;
    let ticks = seconds * 1000 / tick_ms;
    let mut interval = tokio::time::interval(TICK);
    let mut sent = 0u64;
    let mut next_stream = 0usize;
    let start = Instant::now();
    for tick in 1..=ticks {
        interval.tick().await;
        let due = tick * tick_ms * rate / 1000;
        while sent < due {
            goes[next_stream]
                .send(())
                .map_err(|_| "lag phase: a stream's writer stopped early")?;
            next_stream = (next_stream + 1) % LAG_STREAMS;
            sent += 1;
        }
    }
    drop(goes);
    for writer in writers {
        writer.await??;
    }
    let mut last_ack = start;
    while let Some(acked) = ack_rx.recv().await {
        last_ack = last_ack.max(acked);
    }
    let mut lags = Vec::with_capacity(sent as usize);
    while let Some(waited) = lag_rx.recv().await {
        lags.push(waited.map_err(|e| format!("lag phase: {e}"))?);
    }
    if lags.len() as u64 != sent {
        return Err(format!("lag phase: {} lags measured for {sent} appends", lags.len()).into());
    }
    Ok(Lag {
        target_rate: rate,
        appends: lags.len(),
        elapsed: last_ack - start,
        lags,
    })
}

/// Everything measured on one backend.
struct BackendRun {
    backend: Backend,
    fill_rate: f64,
    rebuilds: Vec<Rebuild>,
    split_note: String,
    lag: Lag,
}

async fn run_backend(backend: Backend, location: &str, config: &Config) -> Result<BackendRun> {
    let name = backend.name();
    let store = custodian_store::open(location, StoreOptions::default()).await?;

    let start = Instant::now();
    let tenants = fill(&store, config.events).await?;
    let fill_elapsed = start.elapsed();
    let head = store.head().await?.position;
    check_reached(head, config.events, "filling")?;
    let fill_rate = head as f64 / fill_elapsed.as_secs_f64();
    eprintln!(
        "{name}: filled {head} events of {tenants} tenants in {:.1} s ({fill_rate:.0} events/s)",
        fill_elapsed.as_secs_f64()
    );

    settle(backend, location).await?;

    let mut rebuilds = Vec::new();
    let read = read_only(&store, head).await?;
    report(name, &read);
    rebuilds.push(read);

    // The no-op runtime also creates, and hands over, empty tables for the plain fold.
    let (tables, noop) = noop_run(location, &store, "bench_noop", head).await?;
    report(name, &noop);
    rebuilds.push(noop);

    let views = ViewDb::open(location).await?;
    let mut split = Split::default();
    let pass1 = plain_fold(
        &store,
        &views,
        &tables,
        head,
        format!(
            "baseline: plain fold, pass 1 (pages of {PAGE}, one transaction each, no checkpoint)"
        ),
        &mut split,
    )
    .await?;
    check_rows(count_rows(&views, &tables).await?, tenants, "plain fold")?;
    report(name, &pass1);
    rebuilds.push(pass1);

    // The pipelined fold writes into a second set of empty tables of the same shape.
    let tables2 = empty_tables(location, &store, "bench_noop_2").await?;
    let pipelined = pipelined_fold(&store, &views, &tables2, head).await?;
    check_rows(
        count_rows(&views, &tables2).await?,
        tenants,
        "pipelined fold",
    )?;
    report(name, &pipelined);
    let pipelined_index = rebuilds.len();
    rebuilds.push(pipelined);

    let tables4 = empty_tables(location, &store, "bench_noop_4").await?;
    let batched = batch_fold(&store, &views, &tables4, head).await?;
    check_rows(count_rows(&views, &tables4).await?, tenants, "batch fold")?;
    report(name, &batched);
    rebuilds.push(batched);

    let (projections, run) = runtime_rebuild(
        location,
        &store,
        Arc::new(TenantsPerEvent),
        RuntimeOptions::default(),
        head,
        format!(
            "runtime rebuild, `TenantsView` copy applied per event, batch_size {}",
            RuntimeOptions::default().batch_size
        ),
    )
    .await?;
    let copy = projections
        .active_tables("bench_tenants_per_event")
        .ok_or("the per-event copy has no serving generation")?;
    check_rows(
        count_rows(&views, &copy).await?,
        tenants,
        "per-event rebuild",
    )?;
    projections.stop().await;
    report(name, &run);
    rebuilds.push(run);

    let (projections, run) = runtime_rebuild(
        location,
        &store,
        Arc::new(TenantsView),
        RuntimeOptions::default(),
        head,
        format!(
            "runtime rebuild, `TenantsView` (batch apply), defaults: batch_size {}, {} while behind",
            RuntimeOptions::default().batch_size,
            RuntimeOptions::default().catch_up_batch_size
        ),
    )
    .await?;
    let active = projections
        .active_tables("tenants")
        .ok_or("the tenants view has no serving generation")?;
    check_rows(
        count_rows(&views, &active).await?,
        tenants,
        "runtime rebuild",
    )?;
    projections.stop().await;
    report(name, &run);
    rebuilds.push(run);

    if config.extra_batch > 0 {
        let options = RuntimeOptions {
            batch_size: config.extra_batch,
            catch_up_batch_size: config.extra_batch,
            ..RuntimeOptions::default()
        };
        let (projections, run) = runtime_rebuild(
            location,
            &store,
            Arc::new(TenantsCopy),
            options,
            head,
            format!(
                "runtime rebuild, `TenantsView` copy (batch apply), batch_size {}",
                config.extra_batch
            ),
        )
        .await?;
        let copy = projections
            .active_tables("bench_tenants_copy")
            .ok_or("the copy has no serving generation")?;
        check_rows(count_rows(&views, &copy).await?, tenants, "runtime copy")?;
        projections.stop().await;
        report(name, &run);
        rebuilds.push(run);
    }

    // The baseline again, after the runtime rows, so that their order does not favour either.
    let tables3 = empty_tables(location, &store, "bench_noop_3").await?;
    let pass2 = plain_fold(
        &store,
        &views,
        &tables3,
        head,
        "baseline: plain fold, pass 2 (the same, run after the runtime rows)".to_owned(),
        &mut split,
    )
    .await?;
    check_rows(count_rows(&views, &tables3).await?, tenants, "plain fold")?;
    report(name, &pass2);
    rebuilds.insert(pipelined_index, pass2);
    let total = split.read + split.apply + split.commit;
    let share = |d: Duration| 100.0 * d.as_secs_f64() / total.as_secs_f64();
    let split_note = format!(
        "Plain fold time over both passes: reading {:.1} s ({:.0}%), applying {:.1} s ({:.0}%), committing {:.1} s ({:.0}%).",
        split.read.as_secs_f64(),
        share(split.read),
        split.apply.as_secs_f64(),
        share(split.apply),
        split.commit.as_secs_f64(),
        share(split.commit),
    );
    eprintln!("{name}: {split_note}");

    // Steady state: the tenants view, already built, follows the paced appends.
    let projections = Arc::new(
        Projections::start(
            ViewDb::open(location).await?,
            store.clone(),
            vec![Arc::new(TenantsView)],
            RuntimeOptions::default(),
            CancellationToken::new(),
        )
        .await?,
    );
    projections.wait_for(head, MAX_WAIT).await?;
    eprintln!(
        "{name}: appending {} events/s for {} s",
        config.lag_rate, config.lag_seconds
    );
    let lag = lag(
        &store,
        &projections,
        tenants,
        config.lag_seconds,
        config.lag_rate,
    )
    .await?;
    let active = projections
        .active_tables("tenants")
        .ok_or("the tenants view has no serving generation")?;
    check_rows(
        count_rows(&views, &active).await?,
        tenants + LAG_STREAMS.min(lag.appends) as u64,
        "after the lag phase",
    )?;
    projections.stop().await;
    eprintln!(
        "{name}: {} appends at {:.0}/s; lag p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lag.appends,
        lag.achieved_rate(),
        percentile_ms(&lag.lags, 50.0),
        percentile_ms(&lag.lags, 99.0),
        percentile_ms(&lag.lags, 100.0)
    );

    views.pool().close().await;
    store.close().await;
    Ok(BackendRun {
        backend,
        fill_rate,
        rebuilds,
        split_note,
        lag,
    })
}

fn report(backend: &str, r: &Rebuild) {
    eprintln!(
        "{backend}: {}: {} events in {:.2} s ({:.0} events/s)",
        r.label,
        r.events,
        r.elapsed.as_secs_f64(),
        r.events_per_second()
    );
}

#[tokio::main]
async fn main() -> Result<()> {
    let config = Config {
        events: env_number("BENCH_EVENTS", 1_000_000, false)?,
        extra_batch: usize::try_from(env_number("BENCH_BATCH", 2_000, true)?)?,
        lag_seconds: env_number("BENCH_LAG_SECONDS", 20, false)?,
        lag_rate: env_number("BENCH_LAG_RATE", 2_000, false)?,
    };
    let only_backend = std::env::var("BENCH_BACKEND").ok();
    eprintln!(
        "projection benchmark: {} events ({EVENTS_PER_TENANT} per tenant), then {} s of appends at {} events/s",
        config.events, config.lag_seconds, config.lag_rate
    );

    let mut runs = Vec::new();
    for backend in Backend::ALL {
        if only_backend.as_deref().is_some_and(|b| !backend.matches(b)) {
            continue;
        }
        let Some(db) = Ledger::fresh(backend).await else {
            eprintln!("note: {} is unreachable; skipping it", backend.name());
            println!("\n{}: skipped (unreachable)", backend.name());
            continue;
        };
        // On a worker thread like the runtime's tasks, not on the thread that blocks on `main`.
        let location = db.location.clone();
        let knobs = config.clone();
        let run = tokio::spawn(async move { run_backend(backend, &location, &knobs).await }).await;
        db.remove().await?;
        let run = run??;
        print_tables(&run);
        runs.push(run);
    }
    if runs.is_empty() {
        return Err("no backend was measured".into());
    }
    Ok(())
}

fn print_tables(run: &BackendRun) {
    // The baseline is both plain-fold passes together: their events over their time.
    let (events, seconds) = run
        .rebuilds
        .iter()
        .filter(|r| r.baseline)
        .fold((0.0, 0.0), |(e, s), r| {
            (e + r.events as f64, s + r.elapsed.as_secs_f64())
        });
    let baseline = events / seconds;
    let ceiling = run
        .rebuilds
        .first()
        .map_or(f64::NAN, Rebuild::events_per_second);
    println!();
    println!(
        "### {} (log filled at {} events/s)",
        run.backend.name(),
        thousands(run.fill_rate.round() as u64)
    );
    println!();
    let mut rebuilds = Table::new([
        "rebuild",
        "events",
        "seconds",
        "events/s",
        "ratio to baseline",
        "ratio to read ceiling",
    ]);
    for r in &run.rebuilds {
        rebuilds.row([
            r.label.clone(),
            thousands(r.events),
            format!("{:.1}", r.elapsed.as_secs_f64()),
            thousands(r.events_per_second().round() as u64),
            format!("{:.2}", r.events_per_second() / baseline),
            format!("{:.2}", r.events_per_second() / ceiling),
        ]);
    }
    print!("{rebuilds}");
    println!();
    println!("{}", run.split_note);
    println!();
    let lag = &run.lag;
    let mut steady = Table::new([
        "steady state",
        "appends",
        "achieved events/s",
        "lag p50 ms",
        "lag p99 ms",
        "lag max ms",
    ]);
    steady.row([
        format!(
            "{} events/s target, single-event appends over {LAG_STREAMS} streams, `TenantsView` batch_size {}",
            thousands(lag.target_rate),
            RuntimeOptions::default().batch_size,
        ),
        thousands(lag.appends as u64),
        thousands(lag.achieved_rate().round() as u64),
        format!("{:.1}", percentile_ms(&lag.lags, 50.0)),
        format!("{:.1}", percentile_ms(&lag.lags, 99.0)),
        format!("{:.1}", percentile_ms(&lag.lags, 100.0)),
    ]);
    print!("{steady}");
}
