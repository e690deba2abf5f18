//! The projection runtime: generations, workers, checkpoints, rebuilds, and waiting for a position.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use custodian_domain::EventRecord;
use custodian_store::EventStore;
use sqlx::{AnyConnection, Row};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::db::ViewDb;

/// The table names of one generation of a projection: `{projection}_g{generation}_{table}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    prefix: String,
}

impl Tables {
    pub(crate) fn new(projection: &str, generation: i64) -> Self {
        Self {
            prefix: format!("{projection}_g{generation}"),
        }
    }

    /// The full name of `table` in this generation.
    pub fn name(&self, table: &str) -> String {
        format!("{}_{table}", self.prefix)
    }
}

/// A projection failed to apply an event; the batch is rolled back and retried.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ApplyError(pub String);

impl From<sqlx::Error> for ApplyError {
    fn from(e: sqlx::Error) -> Self {
        Self(e.to_string())
    }
}

/// A projection failed to apply a page of events; the batch is rolled back and retried.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchApplyError {
    /// The event at `position` cannot be applied.
    #[error("position {position}: {error}")]
    Event {
        /// The event's position.
        position: u64,
        /// Why.
        error: ApplyError,
    },
    /// A statement that writes the rows of several events failed. The runtime then applies the
    /// page again one event at a time, to name the event that fails.
    #[error("{0}")]
    Statement(ApplyError),
}

impl From<sqlx::Error> for BatchApplyError {
    fn from(e: sqlx::Error) -> Self {
        Self::Statement(e.into())
    }
}

/// A named, versioned fold of the log into SQL tables.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Stable name: lower-case letters, digits and `_`.
    fn name(&self) -> &'static str;

    /// The fold's version. Changing it rebuilds the view from position 0 into fresh tables.
    fn version(&self) -> u32;

    /// The bare table names this projection owns (without the generation prefix).
    fn tables(&self) -> &'static [&'static str];

    /// `CREATE TABLE` statements for one generation's tables, valid on SQLite and PostgreSQL.
    fn create(&self, tables: &Tables) -> Vec<String>;

    /// Folds one event into the tables, inside the batch's transaction.
    async fn apply(
        &self,
        conn: &mut AnyConnection,
        tables: &Tables,
        event: &EventRecord,
    ) -> Result<(), ApplyError>;

    /// Folds a page of events, in position order, into the tables, inside the batch's
    /// transaction. It must leave exactly the rows that [`Projection::apply`] on each event in
    /// turn leaves. The default does that; a view that receives many events overrides it to fold
    /// the page in memory and write each table with a few multi-row statements.
    async fn apply_batch(
        &self,
        conn: &mut AnyConnection,
        tables: &Tables,
        events: &[EventRecord],
    ) -> Result<(), BatchApplyError> {
        for event in events {
            self.apply(conn, tables, event)
                .await
                .map_err(|error| BatchApplyError::Event {
                    position: event.position,
                    error,
                })?;
        }
        Ok(())
    }
}

/// Where a generation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GenerationState {
    /// Being built from position 0; not yet serving.
    Building,
    /// Serving reads.
    Active,
    /// Replaced by a newer generation; its tables are dropped.
    Retired,
}

impl GenerationState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Building => "building",
            Self::Active => "active",
            Self::Retired => "retired",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "building" => Self::Building,
            "active" => Self::Active,
            _ => Self::Retired,
        }
    }
}

/// What a worker reports about one generation of a projection.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProjectionStatus {
    /// Projection name.
    pub name: String,
    /// Generation number (its tables' prefix).
    pub generation: i64,
    /// The code version it was built with.
    pub code_version: i64,
    /// Its state.
    pub state: GenerationState,
    /// The last position applied.
    pub position: u64,
    /// The event it last failed on and why; cleared once that event is applied.
    pub last_error: Option<FailedEvent>,
    /// How many batches have failed since start.
    pub failures: u64,
}

/// The log's head and how far behind it each projection generation is.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LagReport {
    /// The log's last position.
    pub head: u64,
    /// One entry per generation.
    pub projections: Vec<ProjectionLag>,
}

/// One generation's status and lag.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProjectionLag {
    /// Its status.
    #[serde(flatten)]
    pub status: ProjectionStatus,
    /// Events between its position and the head.
    pub lag_events: u64,
    /// Seconds since the oldest unapplied event occurred (0 when caught up).
    pub lag_seconds: f64,
}

/// An event a worker could not apply.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FailedEvent {
    /// Its position.
    pub position: u64,
    /// The error.
    pub error: String,
}

/// Why a wait for a position ended without it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// The views did not reach the position in time.
    #[error("the views reached position {reached}, not {wanted}, within the wait")]
    Timeout {
        /// The position asked for.
        wanted: u64,
        /// Where the views are.
        reached: u64,
    },
}

pub(crate) const REGISTRY: &str = "CREATE TABLE IF NOT EXISTS projection_generations (
    name TEXT NOT NULL,
    generation BIGINT NOT NULL,
    code_version BIGINT NOT NULL,
    position BIGINT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (name, generation)
)";

/// Tuning of the workers.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Most events applied in one transaction while the view keeps up with the log.
    pub batch_size: usize,
    /// Most events applied in one transaction while the view is behind (a rebuild, or catching up
    /// after a restart): once a page comes back full, the next pages are this large, since each
    /// transaction and checkpoint has a fixed cost.
    pub catch_up_batch_size: usize,
    /// First retry delay after a failed batch; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// How often an idle worker looks for a requested rebuild.
    pub idle_check: Duration,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            batch_size: 500,
            catch_up_batch_size: 2000,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            idle_check: Duration::from_secs(5),
        }
    }
}

struct Shared {
    db: ViewDb,
    store: Arc<dyn EventStore>,
    options: RuntimeOptions,
    statuses: Mutex<HashMap<(String, i64), ProjectionStatus>>,
    active: RwLock<HashMap<String, Tables>>,
    applied: watch::Sender<u64>,
    names: Vec<String>,
}

/// The running projections: their workers, their status, and read-your-writes waits.
pub struct Projections {
    shared: Arc<Shared>,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
    shutdown: CancellationToken,
}

impl Projections {
    /// Creates the registry if needed and starts one supervisor per projection. Workers stop when
    /// `shutdown` is cancelled.
    pub async fn start(
        db: ViewDb,
        store: Arc<dyn EventStore>,
        projections: Vec<Arc<dyn Projection>>,
        options: RuntimeOptions,
        shutdown: CancellationToken,
    ) -> Result<Self, sqlx::Error> {
        create_registry(&db).await?;
        let shared = Arc::new(Shared {
            db,
            store,
            options,
            statuses: Mutex::new(HashMap::new()),
            active: RwLock::new(HashMap::new()),
            applied: watch::channel(0).0,
            names: projections.iter().map(|p| p.name().to_owned()).collect(),
        });
        let mut tasks = JoinSet::new();
        for p in projections {
            tasks.spawn(supervise(shared.clone(), p, shutdown.clone()));
        }
        Ok(Self {
            shared,
            tasks: tokio::sync::Mutex::new(tasks),
            shutdown,
        })
    }

    /// Every generation's status, as the workers last reported it.
    pub fn statuses(&self) -> Vec<ProjectionStatus> {
        let mut all: Vec<ProjectionStatus> = self
            .shared
            .statuses
            .lock()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default();
        all.sort_by(|a, b| (&a.name, a.generation).cmp(&(&b.name, b.generation)));
        all
    }

    /// Every generation's status with its lag behind the log's head: in events, and in seconds
    /// from when the oldest event it has not applied occurred until `now`.
    pub async fn lag_report(
        &self,
        now: custodian_domain::Timestamp,
    ) -> Result<LagReport, custodian_store::StoreError> {
        let head = self.shared.store.head().await?.position;
        let now = now.as_datetime();
        let mut projections = Vec::new();
        for status in self.statuses() {
            let lag_events = head.saturating_sub(status.position);
            let lag_seconds = if lag_events == 0 {
                0.0
            } else {
                match self
                    .shared
                    .store
                    .read_all(status.position + 1, 1)
                    .await?
                    .first()
                {
                    Some(oldest) => {
                        ((now - oldest.occurred_at.as_datetime()).as_seconds_f64()).max(0.0)
                    }
                    None => 0.0,
                }
            };
            projections.push(ProjectionLag {
                status,
                lag_events,
                lag_seconds,
            });
        }
        Ok(LagReport { head, projections })
    }

    /// The serving tables of a projection, `None` until its first generation is built.
    pub fn active_tables(&self, name: &str) -> Option<Tables> {
        self.shared.active.read().ok()?.get(name).cloned()
    }

    /// The position every serving view has applied.
    pub fn applied_position(&self) -> u64 {
        *self.shared.applied.borrow()
    }

    /// Waits, without polling, until every serving view has applied `position`, or `timeout`.
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> Result<(), WaitError> {
        let mut rx = self.shared.applied.subscribe();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|p| *p >= position))
            .await
            .is_ok_and(|r| r.is_ok());
        if reached {
            Ok(())
        } else {
            Err(WaitError::Timeout {
                wanted: position,
                reached: *rx.borrow(),
            })
        }
    }

    /// Stops the workers and waits for them (a batch in flight rolls back).
    pub async fn stop(&self) {
        self.shutdown.cancel();
        let mut tasks = self.tasks.lock().await;
        while tasks.join_next().await.is_some() {}
    }
}

impl Shared {
    /// Registers a generation's status, keeping the failure history of one already known.
    fn report(&self, status: ProjectionStatus) {
        if let Ok(mut s) = self.statuses.lock() {
            s.entry((status.name.clone(), status.generation))
                .and_modify(|known| {
                    known.state = status.state;
                    known.position = known.position.max(status.position);
                })
                .or_insert(status);
        }
        self.recompute_applied();
    }

    fn update(&self, name: &str, generation: i64, f: impl FnOnce(&mut ProjectionStatus)) {
        if let Ok(mut s) = self.statuses.lock()
            && let Some(st) = s.get_mut(&(name.to_owned(), generation))
        {
            f(st);
        }
        self.recompute_applied();
    }

    /// The applied position is the least over every projection's serving generation; a projection
    /// with none yet holds it at 0.
    fn recompute_applied(&self) {
        let Ok(s) = self.statuses.lock() else { return };
        let min = self
            .names
            .iter()
            .map(|n| {
                s.values()
                    .filter(|st| &st.name == n && st.state == GenerationState::Active)
                    .map(|st| st.position)
                    .max()
                    .unwrap_or(0)
            })
            .min()
            .unwrap_or(0);
        self.applied.send_if_modified(|v| {
            if *v != min {
                *v = min;
                true
            } else {
                false
            }
        });
    }
}

#[derive(Debug, Clone)]
struct Generation {
    generation: i64,
    code_version: i64,
    position: u64,
    state: GenerationState,
}

/// Creates the registry of generations unless it exists, under the schema lock.
pub(crate) async fn create_registry(db: &ViewDb) -> Result<(), sqlx::Error> {
    let mut tx = db.begin_schema_work().await?;
    sqlx::query(REGISTRY).execute(&mut *tx).await?;
    tx.commit().await
}

async fn generations(db: &ViewDb, name: &str) -> Result<Vec<Generation>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT generation, code_version, position, state FROM projection_generations \
         WHERE name = $1 AND state <> 'retired' ORDER BY generation",
    )
    .bind(name)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Generation {
                generation: r.try_get(0)?,
                code_version: r.try_get(1)?,
                position: u64::try_from(r.try_get::<i64, _>(2)?).unwrap_or(0),
                state: GenerationState::parse(&r.try_get::<String, _>(3)?),
            })
        })
        .collect()
}

/// Asks for a fresh generation of `name` built with code version `version`, unless one is already
/// being built. A running server starts it within its idle check; otherwise the next start does.
/// Done under the schema lock, so servers asking at once agree on one generation.
pub async fn request_rebuild(db: &ViewDb, name: &str, version: u32) -> Result<i64, sqlx::Error> {
    let mut tx = db.begin_schema_work().await?;
    sqlx::query(REGISTRY).execute(&mut *tx).await?;
    let building: Option<i64> = sqlx::query_scalar(
        "SELECT generation FROM projection_generations WHERE name = $1 AND state = 'building' \
         ORDER BY generation LIMIT 1",
    )
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(generation) = building {
        tx.commit().await?;
        return Ok(generation);
    }
    let max: Option<i64> =
        sqlx::query_scalar("SELECT MAX(generation) FROM projection_generations WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
    let next = max.unwrap_or(0) + 1;
    sqlx::query(
        "INSERT INTO projection_generations (name, generation, code_version, position, state) \
         VALUES ($1, $2, $3, 0, 'building') ON CONFLICT (name, generation) DO NOTHING",
    )
    .bind(name)
    .bind(next)
    .bind(i64::from(version))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(next)
}

/// Every generation's stored state, for the command line (no workers needed).
pub async fn statuses(db: &ViewDb) -> Result<Vec<ProjectionStatus>, sqlx::Error> {
    create_registry(db).await?;
    let rows = sqlx::query(
        "SELECT name, generation, code_version, position, state FROM projection_generations \
         ORDER BY name, generation",
    )
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ProjectionStatus {
                name: r.try_get(0)?,
                generation: r.try_get(1)?,
                code_version: r.try_get(2)?,
                position: u64::try_from(r.try_get::<i64, _>(3)?).unwrap_or(0),
                state: GenerationState::parse(&r.try_get::<String, _>(4)?),
                last_error: None,
                failures: 0,
            })
        })
        .collect()
}

async fn backoff_sleep(shared: &Shared, failures: u32, cancel: &CancellationToken) {
    let factor = 2u32.saturating_pow(failures.min(16));
    let delay = shared
        .options
        .min_backoff
        .saturating_mul(factor)
        .min(shared.options.max_backoff);
    tokio::select! {
        () = tokio::time::sleep(delay) => {},
        () = cancel.cancelled() => {},
    }
}

/// Keeps one projection served: builds generations, swaps them in, follows the log.
async fn supervise(
    shared: Arc<Shared>,
    projection: Arc<dyn Projection>,
    cancel: CancellationToken,
) {
    let name = projection.name();
    let version = i64::from(projection.version());
    let mut failures = 0u32;
    while !cancel.is_cancelled() {
        match supervise_once(&shared, &projection, version, &cancel).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                tracing::warn!(projection = name, error = %e, "projection supervisor failed; retrying");
                backoff_sleep(&shared, failures, &cancel).await;
            }
        }
    }
}

async fn supervise_once(
    shared: &Arc<Shared>,
    projection: &Arc<dyn Projection>,
    version: i64,
    cancel: &CancellationToken,
) -> Result<(), sqlx::Error> {
    let name = projection.name();
    let mut gens = generations(&shared.db, name).await?;
    let active = gens
        .iter()
        .find(|g| g.state == GenerationState::Active)
        .cloned();
    let needs_new = active.as_ref().is_none_or(|a| a.code_version != version);
    if needs_new && !gens.iter().any(|g| g.state == GenerationState::Building) {
        request_rebuild(&shared.db, name, projection.version()).await?;
        gens = generations(&shared.db, name).await?;
    }
    if let Some(a) = &active {
        shared
            .active
            .write()
            .map(|mut m| m.insert(name.to_owned(), Tables::new(name, a.generation)))
            .ok();
        shared.report(status_of(name, a));
    }
    let Some(building) = gens
        .into_iter()
        .find(|g| g.state == GenerationState::Building)
    else {
        if let Some(a) = active {
            // Serve and follow until a rebuild is requested or shutdown.
            follow(shared, projection, a, Mode::Serve, cancel).await?;
        }
        return Ok(());
    };

    // Build the new generation while the active one, if its code is current, keeps following.
    create_tables(&shared.db, projection, building.generation).await?;
    shared.report(status_of(name, &building));
    let old_cancel = cancel.child_token();
    let old = match &active {
        Some(a) if a.code_version == version => {
            let (s, p, a, c) = (
                shared.clone(),
                projection.clone(),
                a.clone(),
                old_cancel.clone(),
            );
            Some(tokio::spawn(async move {
                if let Err(e) = follow(&s, &p, a, Mode::ServeDuringBuild, &c).await {
                    tracing::warn!(error = %e, "the serving generation stopped following");
                }
            }))
        }
        _ => None,
    };
    let caught_up = follow(shared, projection, building.clone(), Mode::Build, cancel).await;
    old_cancel.cancel();
    if let Some(task) = old {
        let _ = task.await;
    }
    if !caught_up? {
        return Ok(());
    }
    swap(shared, projection, &building, active.as_ref()).await
}

fn status_of(name: &str, g: &Generation) -> ProjectionStatus {
    ProjectionStatus {
        name: name.to_owned(),
        generation: g.generation,
        code_version: g.code_version,
        state: g.state,
        position: g.position,
        last_error: None,
        failures: 0,
    }
}

pub(crate) async fn create_tables(
    db: &ViewDb,
    projection: &Arc<dyn Projection>,
    generation: i64,
) -> Result<(), sqlx::Error> {
    let tables = Tables::new(projection.name(), generation);
    let mut tx = db.begin_schema_work().await?;
    for ddl in projection.create(&tables) {
        sqlx::query(&ddl).execute(&mut *tx).await?;
    }
    tx.commit().await
}

/// Makes `building` the serving generation and retires (and drops) the old one, atomically.
async fn swap(
    shared: &Shared,
    projection: &Arc<dyn Projection>,
    building: &Generation,
    old: Option<&Generation>,
) -> Result<(), sqlx::Error> {
    let name = projection.name();
    let mut tx = shared.db.pool().begin().await?;
    sqlx::query(
        "UPDATE projection_generations SET state = 'retired' \
         WHERE name = $1 AND state = 'active'",
    )
    .bind(name)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE projection_generations SET state = 'active' WHERE name = $1 AND generation = $2",
    )
    .bind(name)
    .bind(building.generation)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    shared
        .active
        .write()
        .map(|mut m| m.insert(name.to_owned(), Tables::new(name, building.generation)))
        .ok();
    shared.update(name, building.generation, |s| {
        s.state = GenerationState::Active
    });
    if let Some(old) = old {
        shared.update(name, old.generation, |s| s.state = GenerationState::Retired);
        if let Ok(mut s) = shared.statuses.lock() {
            s.remove(&(name.to_owned(), old.generation));
        }
        let tables = Tables::new(name, old.generation);
        let mut tx = shared.db.begin_schema_work().await?;
        for t in projection.tables() {
            sqlx::query(&format!("DROP TABLE IF EXISTS {}", tables.name(t)))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    }
    shared.recompute_applied();
    tracing::info!(
        projection = name,
        generation = building.generation,
        "projection generation is now serving"
    );
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Follow forever; return when a rebuild is requested.
    Serve,
    /// Follow forever while a newer generation is being built beside it.
    ServeDuringBuild,
    /// Return `true` once caught up with the head.
    Build,
}

/// Applies the log to one generation, batch by batch, each batch in one transaction with its
/// checkpoint. Returns `Ok(true)` when a build has caught up, `Ok(false)` when cancelled.
async fn follow(
    shared: &Arc<Shared>,
    projection: &Arc<dyn Projection>,
    generation: Generation,
    mode: Mode,
    cancel: &CancellationToken,
) -> Result<bool, sqlx::Error> {
    let name = projection.name();
    let tables = Tables::new(name, generation.generation);
    let mut position = generation.position;
    let mut head = shared.store.watch_head();
    let mut failures = 0u32;
    let mut behind = false;
    loop {
        if cancel.is_cancelled() {
            return Ok(false);
        }
        head.borrow_and_update();
        let page = if behind {
            shared
                .options
                .catch_up_batch_size
                .max(shared.options.batch_size)
        } else {
            shared.options.batch_size
        };
        let batch = match shared.store.read_all(position + 1, page).await {
            Ok(b) => b,
            Err(e) => {
                failures += 1;
                record_failure(
                    shared,
                    name,
                    generation.generation,
                    position + 1,
                    e.to_string(),
                );
                backoff_sleep(shared, failures, cancel).await;
                continue;
            }
        };
        behind = batch.len() >= page;
        if batch.is_empty() {
            if mode == Mode::Build {
                return Ok(true);
            }
            tokio::select! {
                _ = head.changed() => {},
                () = cancel.cancelled() => return Ok(false),
                () = tokio::time::sleep(shared.options.idle_check) => {
                    if mode == Mode::Serve {
                        let building = generations(&shared.db, name).await?
                            .iter()
                            .any(|g| g.state == GenerationState::Building);
                        if building {
                            return Ok(false);
                        }
                    }
                },
            }
            continue;
        }
        match apply_batch(
            &shared.db,
            projection,
            &tables,
            generation.generation,
            position,
            &batch,
        )
        .await
        {
            Ok(BatchOutcome::Applied(last)) => {
                position = last;
                failures = 0;
                shared.update(name, generation.generation, |s| {
                    s.position = last;
                    s.last_error = None;
                });
            }
            Ok(BatchOutcome::Moved(now)) => {
                // Another process advanced this generation: continue from where it is.
                position = now;
                shared.update(name, generation.generation, |s| s.position = now);
            }
            Err((at, error)) => {
                failures += 1;
                tracing::warn!(projection = name, position = at, %error, "projection failed to apply an event; retrying");
                record_failure(shared, name, generation.generation, at, error);
                backoff_sleep(shared, failures, cancel).await;
            }
        }
    }
}

fn record_failure(shared: &Shared, name: &str, generation: i64, position: u64, error: String) {
    shared.update(name, generation, |s| {
        s.failures += 1;
        s.last_error = Some(FailedEvent { position, error });
    });
}

/// What applying one batch did.
pub(crate) enum BatchOutcome {
    /// Applied, with the checkpoint moved to this position.
    Applied(u64),
    /// Not applied: another process had moved the checkpoint to this position.
    Moved(u64),
}

/// Applies `batch` to one generation in one transaction with its checkpoint, which must stand at
/// `from`. An event that fails is named by its position, and nothing of the batch stays.
pub(crate) async fn apply_batch(
    db: &ViewDb,
    projection: &Arc<dyn Projection>,
    tables: &Tables,
    generation: i64,
    from: u64,
    batch: &[EventRecord],
) -> Result<BatchOutcome, (u64, String)> {
    let first = batch.first().map_or(from + 1, |e| e.position);
    let fail_at = |p: u64| move |e: sqlx::Error| (p, e.to_string());
    let mut tx = db.pool().begin().await.map_err(fail_at(first))?;
    match projection.apply_batch(&mut tx, tables, batch).await {
        Ok(()) => {}
        Err(BatchApplyError::Event { position, error }) => return Err((position, error.0)),
        Err(BatchApplyError::Statement(error)) => {
            // Apply the page again one event at a time, so that a failure names its event.
            drop(tx);
            tracing::debug!(projection = projection.name(), %error, "a batch statement failed; applying the page event by event");
            tx = db.pool().begin().await.map_err(fail_at(first))?;
            for event in batch {
                projection
                    .apply(&mut tx, tables, event)
                    .await
                    .map_err(|e| (event.position, e.0))?;
            }
        }
    }
    let last = batch.last().map_or(from, |e| e.position);
    // Conditional on the old checkpoint, so two processes can never both apply the batch.
    let moved = sqlx::query(
        "UPDATE projection_generations SET position = $1 \
         WHERE name = $2 AND generation = $3 AND position = $4",
    )
    .bind(i64::try_from(last).unwrap_or(i64::MAX))
    .bind(projection.name())
    .bind(generation)
    .bind(i64::try_from(from).unwrap_or(i64::MAX))
    .execute(&mut *tx)
    .await
    .map_err(fail_at(first))?;
    if moved.rows_affected() != 1 {
        drop(tx);
        let now: i64 = sqlx::query_scalar(
            "SELECT position FROM projection_generations WHERE name = $1 AND generation = $2",
        )
        .bind(projection.name())
        .bind(generation)
        .fetch_one(db.pool())
        .await
        .map_err(fail_at(first))?;
        return Ok(BatchOutcome::Moved(u64::try_from(now).unwrap_or(0)));
    }
    tx.commit().await.map_err(fail_at(first))?;
    Ok(BatchOutcome::Applied(last))
}
