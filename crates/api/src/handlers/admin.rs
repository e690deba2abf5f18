//! Operations: liveness, readiness, projection progress and metrics.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use custodian_app::operations::{
    self, Health, ProjectionsReport, Readiness, ReadinessReport, RelayProgress,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::consistency::CallerAuthenticated;
use crate::extract::BearerCredential;
use crate::respond::{PROBLEM_JSON, Problem, ProblemDocument};
use crate::state::AppState;

/// This module's routes.
pub(crate) fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(readiness))
        .routes(routes!(projections))
        .routes(routes!(metrics))
}

/// What the event feed's relay last said of itself, when the server runs one.
fn relay(state: &AppState) -> Option<RelayProgress> {
    state.relay.as_ref().map(|r| {
        let s = r.borrow().clone();
        RelayProgress {
            connected: s.connected,
            acknowledged_position: s.acknowledged_position,
            failures: s.failures,
            last_error: s.last_error,
        }
    })
}

/// Liveness: the process is up and serving HTTP.
///
/// Answers without touching the store, so an orchestrator restarts the process only when the
/// process itself is stuck.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process is serving HTTP", body = Health)),
)]
async fn healthz() -> Json<Health> {
    Json(operations::liveness())
}

/// Readiness: the store answers. Says only `ready`; where the log and the in-memory indexes
/// stand is for operators, at `/v1/admin/readiness`.
///
/// A load balancer should send traffic only while this answers 200.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "The store answered in time", body = Readiness),
        (
            status = 503,
            description = "The store is unreachable, closed, or did not answer in time (code `unavailable`)",
            body = ProblemDocument,
            content_type = PROBLEM_JSON,
            headers(("Retry-After" = u64, description = "Seconds to wait before asking again")),
        ),
        (
            status = 500,
            description = "The store answered with something it cannot make sense of, such as a damaged record (code `internal`); the cause is logged on the server",
            body = ProblemDocument,
            content_type = PROBLEM_JSON,
        ),
    ),
)]
async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, Problem> {
    Ok(Json(operations::readiness(&state).await?))
}

/// Readiness for operators: what `/readyz` decides, with the log's head and, for each in-memory
/// index that answers authenticated requests (`authentication`, `authorization`, `keys`), where it
/// started from: its snapshot (`source: snapshot`, reading only the events after `started_at`) or
/// the log (`source: log`, with `rebuild_reason`: `missing`, `tampered`, `corrupt`, `old_format`,
/// `other_log` or `unreadable`), the events it has read since this process started, and how far
/// it has applied. Requests wait (bounded by `--read-wait-ms`) for an index that is still behind.
#[utoipa::path(
    get,
    path = "/v1/admin/readiness",
    tag = "operations",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The store answered; the log's head and the in-memory indexes' start and progress", body = ReadinessReport,
            headers(("Custodian-Position" = u64, description = "The position the views had applied"))),
        (status = 401, description = "No bearer credential, or one that is neither the configured scrape token (`--metrics-token`) nor a valid access token (code `unauthenticated`)", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = "The access token's holder does not hold `audit:read` in `_system` (code `forbidden`)", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 500, description = "The store answered with something it cannot make sense of, such as a damaged record (code `internal`); the cause is logged on the server", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 503, description = "The store is unreachable, closed, or did not answer in time (code `unavailable`)", body = ProblemDocument, content_type = PROBLEM_JSON,
            headers(("Retry-After" = u64, description = "Seconds to wait before asking again"))),
    ),
)]
async fn readiness(
    State(state): State<AppState>,
    BearerCredential(bearer): BearerCredential,
    authenticated: Option<Extension<CallerAuthenticated>>,
) -> Result<Json<ReadinessReport>, Problem> {
    let report = operations::readiness_report(&state, bearer.as_deref()).await?;
    authenticated.inspect(|a| a.set());
    Ok(Json(report))
}

/// Projection status: each worker's position, the log's head, lag in events and seconds, and the
/// last error.
#[utoipa::path(
    get,
    path = "/v1/admin/projections",
    tag = "operations",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every projection generation's progress", body = ProjectionsReport,
            headers(("Custodian-Position" = u64, description = "The position the views had applied"))),
        (status = 400, description = "`Custodian-Min-Position` is not an integer from 0 to 9223372036854775807 (code `bad_request`)", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 401, description = "No bearer credential, or one that is neither the configured scrape token (`--metrics-token`) nor a valid access token (code `unauthenticated`)", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = "The access token's holder does not hold `audit:read` in `_system` (code `forbidden`)", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 503, description = "The views did not reach `Custodian-Min-Position` in time, or the store is unreachable (code `unavailable`)", body = ProblemDocument, content_type = PROBLEM_JSON,
            headers(("Retry-After" = u64, description = "Seconds to wait before asking again"))),
    ),
)]
async fn projections(
    State(state): State<AppState>,
    BearerCredential(bearer): BearerCredential,
    authenticated: Option<Extension<CallerAuthenticated>>,
) -> Result<Json<ProjectionsReport>, Problem> {
    let report = operations::operator_report(&state, bearer.as_deref(), relay(&state)).await?;
    authenticated.inspect(|a| a.set());
    Ok(Json(report))
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    security(("bearer" = [])),
    responses(
        (status = 401, description = "No bearer credential, or one that is neither the configured metrics token (`--metrics-token`) nor a valid access token (code `unauthenticated`)", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = "The access token's holder does not hold `audit:read` in `_system` (code `forbidden`)", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 200, description = "Metrics: `custodian_log_head_position`, `custodian_views_applied_position`, per projection generation `custodian_projection_position`, `custodian_projection_lag_events`, `custodian_projection_lag_seconds`, `custodian_projection_failures`, and with `--nats-url` `custodian_relay_acknowledged_position`, `custodian_relay_connected`, `custodian_relay_failures`", content_type = "text/plain; version=0.0.4"),
        (status = 503, description = "The store is unreachable (code `unavailable`)", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
async fn metrics(
    State(state): State<AppState>,
    BearerCredential(bearer): BearerCredential,
) -> Result<impl IntoResponse, Problem> {
    let report = operations::operator_report(&state, bearer.as_deref(), relay(&state)).await?;
    let body = crate::metrics::render(&report)
        .map_err(|e| Problem::internal(format!("encoding metrics: {e}")))?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body))
}
