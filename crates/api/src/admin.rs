//! Operators' view of the service: projection status and lag, and Prometheus metrics.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use utoipa::ToSchema;

use crate::respond::{PROBLEM_JSON, Problem, ProblemDocument};
use crate::state::AppState;

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

async fn report(state: &AppState) -> Result<ProjectionsReport, Problem> {
    let lag = state.projections.lag_report().await?;
    let relay = state.relay.as_ref().map(|r| {
        let s = r.borrow().clone();
        RelayReport {
            connected: s.connected,
            acknowledged_position: s.acknowledged_position,
            lag_events: lag.head.saturating_sub(s.acknowledged_position),
            failures: s.failures,
            last_error: s.last_error,
        }
    });
    Ok(ProjectionsReport {
        relay,
        head: lag.head,
        applied: state.projections.applied_position(),
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

/// Projection status: each worker's position, the log's head, lag in events and seconds, and the
/// last error.
#[utoipa::path(
    get,
    path = "/v1/admin/projections",
    tag = "operations",
    params(("Custodian-Min-Position" = Option<u64>, Header, description = "Answer only once the views have applied this position")),
    responses(
        (status = 200, description = "Every projection generation's progress", body = ProjectionsReport,
            headers(("Custodian-Position" = u64, description = "The position the views had applied"))),
        (status = 400, description = "`Custodian-Min-Position` is not a non-negative integer (code `bad_request`)", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 503, description = "The views did not reach `Custodian-Min-Position` in time, or the store is unreachable (code `unavailable`)", body = ProblemDocument, content_type = PROBLEM_JSON,
            headers(("Retry-After" = u64, description = "Seconds to wait before asking again"))),
    ),
)]
pub async fn projections(
    State(state): State<AppState>,
) -> Result<Json<ProjectionsReport>, Problem> {
    Ok(Json(report(&state).await?))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProjectionLabels {
    projection: String,
    generation: String,
    state: String,
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Metrics: `custodian_log_head_position`, `custodian_views_applied_position`, per projection generation `custodian_projection_position`, `custodian_projection_lag_events`, `custodian_projection_lag_seconds`, `custodian_projection_failures`, and with `--nats-url` `custodian_relay_acknowledged_position`, `custodian_relay_connected`, `custodian_relay_failures`", content_type = "text/plain; version=0.0.4"),
        (status = 503, description = "The store is unreachable (code `unavailable`)", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, Problem> {
    let r = report(&state).await?;
    let mut registry = Registry::with_prefix("custodian");
    let head = Gauge::<i64>::default();
    head.set(i64::try_from(r.head).unwrap_or(i64::MAX));
    registry.register(
        "log_head_position",
        "The log's last committed position",
        head,
    );
    let applied = Gauge::<i64>::default();
    applied.set(i64::try_from(r.applied).unwrap_or(i64::MAX));
    registry.register(
        "views_applied_position",
        "The position every serving view has applied",
        applied,
    );
    let position = Family::<ProjectionLabels, Gauge<i64>>::default();
    let lag_events = Family::<ProjectionLabels, Gauge<i64>>::default();
    let lag_seconds =
        Family::<ProjectionLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let failures = Family::<ProjectionLabels, Gauge<i64>>::default();
    for p in &r.projections {
        let labels = ProjectionLabels {
            projection: p.name.clone(),
            generation: p.generation.to_string(),
            state: p.state.clone(),
        };
        position
            .get_or_create(&labels)
            .set(i64::try_from(p.position).unwrap_or(i64::MAX));
        lag_events
            .get_or_create(&labels)
            .set(i64::try_from(p.lag_events).unwrap_or(i64::MAX));
        lag_seconds.get_or_create(&labels).set(p.lag_seconds);
        failures
            .get_or_create(&labels)
            .set(i64::try_from(p.failures).unwrap_or(i64::MAX));
    }
    registry.register(
        "projection_position",
        "Last position a projection applied",
        position,
    );
    registry.register(
        "projection_lag_events",
        "Events a projection is behind the head",
        lag_events,
    );
    registry.register(
        "projection_lag_seconds",
        "Seconds since the oldest event a projection has not applied occurred",
        lag_seconds,
    );
    registry.register(
        "projection_failures",
        "Failed projection batches since start",
        failures,
    );
    if let Some(relay) = &r.relay {
        let acknowledged = Gauge::<i64>::default();
        acknowledged.set(i64::try_from(relay.acknowledged_position).unwrap_or(i64::MAX));
        registry.register(
            "relay_acknowledged_position",
            "Every event up to this position is acknowledged by JetStream",
            acknowledged,
        );
        let connected = Gauge::<i64>::default();
        connected.set(i64::from(relay.connected));
        registry.register("relay_connected", "1 while connected to NATS", connected);
        let failures = Gauge::<i64>::default();
        failures.set(i64::try_from(relay.failures).unwrap_or(i64::MAX));
        registry.register(
            "relay_failures",
            "Failed relay attempts since start",
            failures,
        );
    }
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, &registry)
        .map_err(|e| Problem::internal(format!("encoding metrics: {e}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    ))
}
