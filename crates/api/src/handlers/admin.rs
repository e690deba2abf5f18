//! Operations: liveness, readiness, projection progress and metrics.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::respond::{PROBLEM_JSON, Problem, ProblemDocument};
use crate::state::AppState;

/// How long readiness waits for the store before answering 503.
const READINESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// This module's routes.
pub(crate) fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(crate::admin::projections))
        .routes(routes!(crate::admin::metrics))
}

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

/// The readiness answer: the store answers, and this is the head of the log.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// Always `ready`; an unready server answers 503 with a problem document instead.
    pub status: ReadyStatus,
    /// The last committed event.
    pub head: LogHead,
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
    Json(Health {
        status: Liveness::Ok,
    })
}

/// Readiness: the store answers. Reports the log's head.
///
/// A load balancer should send traffic only while this answers 200.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "The store answered; the body carries the log's head", body = Readiness),
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
    let check = async {
        state.store.ping().await?;
        state.store.head().await
    };
    let head = tokio::time::timeout(READINESS_TIMEOUT, check)
        .await
        .map_err(|_| Problem::unavailable("the event store did not answer in time", 2))??;
    Ok(Json(Readiness {
        status: ReadyStatus::Ready,
        head: LogHead {
            position: head.position,
            hash: head.hash.to_hex(),
        },
    }))
}
