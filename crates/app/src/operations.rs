//! Operating the service: whether it is alive and ready, and how far each projection and the event
//! feed have got behind the log.

use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;

use crate::App;
use crate::error::AppError;

/// How long readiness waits for the store before answering that it is unavailable.
pub const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

/// The liveness answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`: any answer at all means the process is serving HTTP.
    pub status: Liveness,
}

/// The only liveness status there is.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    /// The process serves HTTP.
    Ok,
}

/// The public readiness answer: ready, and nothing more. Where the log and the indexes stand is
/// for operators ([`ReadinessReport`]): the head moves with every event, failed logins included,
/// so showing it to anyone would tell a stranger what their requests appended.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// Always `ready`; an unready server answers 503 with a problem document instead.
    pub status: ReadyStatus,
}

/// The operators' readiness report: the store answers, this is the head of the log, and this is
/// where each in-memory index stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadinessReport {
    /// Always `ready`; an unready server answers 503 with a problem document instead.
    pub status: ReadyStatus,
    /// The last committed event.
    pub head: LogHead,
    /// The in-memory indexes that answer authenticated requests: where each started from (its
    /// snapshot, or the log when the snapshot was missing or refused, and why), how many events
    /// it has read since, and how far it has applied. Requests wait (bounded) for an index that
    /// is behind.
    pub indexes: Vec<crate::snapshot::IndexReport>,
}

/// The only status of a 200 readiness answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadyStatus {
    /// The store answered in time.
    Ready,
}

/// The head of the log: its last committed position and that event's hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogHead {
    /// The last committed position; `0` for an empty log.
    #[schema(example = 0)]
    pub position: u64,
    /// The SHA-256 hash of the event at `position`, as 64 lowercase hex digits (all zeros for an
    /// empty log).
    #[schema(
        pattern = "^[0-9a-f]{64}$",
        example = "0000000000000000000000000000000000000000000000000000000000000000"
    )]
    pub hash: String,
}

/// The log's head and every projection generation's progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectionsReport {
    /// The log's last committed position.
    pub head: u64,
    /// The position every serving view has applied (what `Custodian-Min-Position` waits for).
    pub applied: u64,
    /// One entry per projection generation being served or built.
    pub projections: Vec<ProjectionReport>,
    /// The NATS JetStream relay, when the server publishes the event feed (`--nats-url`).
    pub relay: Option<RelayReport>,
}

/// How far the event feed on NATS JetStream has got.
#[derive(Debug, Serialize, ToSchema)]
pub struct RelayReport {
    /// Connected to a NATS server right now.
    pub connected: bool,
    /// Every event up to this position is acknowledged by JetStream.
    pub acknowledged_position: u64,
    /// Events between `acknowledged_position` and the head.
    pub lag_events: u64,
    /// Failed attempts since the server started.
    pub failures: u64,
    /// The current failure, while there is one.
    pub last_error: Option<String>,
}

/// One generation of one projection.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectionReport {
    /// Projection name.
    pub name: String,
    /// Generation: a rebuild makes a new one beside the serving one.
    pub generation: i64,
    /// The code version it is built with.
    pub code_version: i64,
    /// `building`, `active` (serving) or `retired`.
    #[schema(example = "active")]
    pub state: String,
    /// The last position it applied.
    pub position: u64,
    /// Events between `position` and the head.
    pub lag_events: u64,
    /// Seconds since the oldest event it has not applied occurred; 0 when caught up.
    pub lag_seconds: f64,
    /// Failed batches since the server started.
    pub failures: u64,
    /// The event it is failing on, while it is: the worker retries it with backoff, never skips it.
    pub last_error: Option<ProjectionError>,
}

/// An event a projection could not apply.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectionError {
    /// The event's position.
    pub position: u64,
    /// What went wrong.
    pub error: String,
}

/// What the relay that publishes the event feed says of itself, for [`projections`] to report
/// beside the views. The relay runs beside the application, so its owner hands this in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayProgress {
    /// Connected to a NATS server right now.
    pub connected: bool,
    /// Every event up to this position is acknowledged by JetStream.
    pub acknowledged_position: u64,
    /// Failed attempts since the relay started.
    pub failures: u64,
    /// The current failure, while there is one.
    pub last_error: Option<String>,
}

/// Liveness: answering at all is the whole answer, so it touches nothing.
pub fn liveness() -> Health {
    Health {
        status: Liveness::Ok,
    }
}

/// Readiness: the store answers a ping and its head within [`READINESS_TIMEOUT`]. A store that
/// does not answer in time, or is unreachable, is `Unavailable`; a head it cannot make sense of
/// (a damaged record) is `Internal`.
pub async fn readiness(app: &App) -> Result<Readiness, AppError> {
    store_head(app).await?;
    Ok(Readiness {
        status: ReadyStatus::Ready,
    })
}

/// Readiness as [`readiness`] decides it, with the log's head and each in-memory index's start
/// and progress, for an operator's tool presenting `bearer`: the configured scrape token
/// (`--metrics-token`), or the access token of a principal holding `audit:read` in `_system`.
pub async fn readiness_report(
    app: &App,
    bearer: Option<&str>,
) -> Result<ReadinessReport, AppError> {
    operator(app, bearer).await?;
    let head = store_head(app).await?;
    Ok(ReadinessReport {
        status: ReadyStatus::Ready,
        head: LogHead {
            position: head.position,
            hash: head.hash.to_hex(),
        },
        indexes: app.index_reports(),
    })
}

/// The store's head, if the store answers a ping and its head within [`READINESS_TIMEOUT`].
async fn store_head(app: &App) -> Result<custodian_store::Head, AppError> {
    let check = async {
        app.store.ping().await?;
        app.store.head().await
    };
    tokio::time::timeout(READINESS_TIMEOUT, check)
        .await
        .map_err(|_| AppError::unavailable("the event store did not answer in time", 2))?
        .map_err(AppError::from)
}

/// Whether `bearer` is an operator's: the scrape token, or the access token of a principal
/// holding `audit:read` in `_system`.
async fn operator(app: &App, bearer: Option<&str>) -> Result<(), AppError> {
    let Some(bearer) = bearer else {
        return Err(AppError::unauthenticated(
            "send Authorization: Bearer <metrics token or access token>",
        ));
    };
    if !app.security.is_metrics_token(bearer) {
        let principal = crate::identity::authenticate(app, bearer).await?;
        crate::access::authorize_platform(app, &principal, "audit:read", None)?;
    }
    Ok(())
}

/// The log's head, the position the serving views have applied, every projection generation's
/// progress and lag (lag in seconds measured to the application's clock), and the relay's
/// progress when there is a relay. Needs `audit:read` in `_system`.
pub async fn projections(
    app: &App,
    principal: &crate::Principal,
    relay: Option<RelayProgress>,
) -> Result<ProjectionsReport, AppError> {
    crate::access::authorize_platform(app, principal, "audit:read", None)?;
    report(app, relay).await
}

/// What [`projections`] reports, for an operator's tool presenting `bearer`: the configured scrape
/// token (`--metrics-token`), or the access token of a principal holding `audit:read` in
/// `_system`. Serves `/metrics` and `/v1/admin/projections`.
pub async fn operator_report(
    app: &App,
    bearer: Option<&str>,
    relay: Option<RelayProgress>,
) -> Result<ProjectionsReport, AppError> {
    operator(app, bearer).await?;
    report(app, relay).await
}

async fn report(app: &App, relay: Option<RelayProgress>) -> Result<ProjectionsReport, AppError> {
    let lag = app.projections.lag_report(app.now()).await?;
    let relay = relay.map(|r| RelayReport {
        connected: r.connected,
        acknowledged_position: r.acknowledged_position,
        lag_events: lag.head.saturating_sub(r.acknowledged_position),
        failures: r.failures,
        last_error: r.last_error,
    });
    Ok(ProjectionsReport {
        relay,
        head: lag.head,
        applied: app.projections.applied_position(),
        projections: lag
            .projections
            .into_iter()
            .map(|p| ProjectionReport {
                name: p.status.name,
                generation: p.status.generation,
                code_version: p.status.code_version,
                state: p.status.state.as_str().to_owned(),
                position: p.status.position,
                lag_events: p.lag_events,
                lag_seconds: p.lag_seconds,
                failures: p.status.failures,
                last_error: p.status.last_error.map(|e| ProjectionError {
                    position: e.position,
                    error: e.error,
                }),
            })
            .collect(),
    })
}
