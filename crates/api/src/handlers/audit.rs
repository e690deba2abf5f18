//! The audit trail route: a tenant's events, filtered and paged. It calls the one use case of
//! `custodian_app::audit`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use custodian_app::Principal;
use custodian_app::audit::{self, AuditPage, AuditQuery};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{PathParams, QueryParams, TenantPath};
use crate::openapi::{AdminProblems, AuthProblems, ViewProblems};
use crate::respond::{PROBLEM_JSON, Problem, ProblemDocument, positioned};
use crate::state::AppState;

/// This module's routes.
pub(crate) fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router.routes(routes!(list_audit))
}

/// The tenant's events, oldest first, each with its position and hashes. Needs `audit:read`.
///
/// `principal` and `resource` keep the events that touch them (as actor, or as what the event is
/// about); `type` is an exact event type, or a prefix when it ends in `.` (`grant.`); `from`
/// (inclusive) and `to` (exclusive) bound `occurred_at`. Personal data is opened only for a caller
/// who also holds `user:read` on the user (`withheld` otherwise), and is `null` with `erased` once
/// the user's data key is destroyed. Sealed credentials are never shown.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/audit",
    tag = "audit",
    security(("bearer" = [])),
    params(TenantPath, AuditQuery),
    responses(
        (status = 200, description = "A page of the tenant's events; `Custodian-Position` is the position the views had applied", body = AuditPage,
            headers(("Custodian-Position" = u64, description = "The position the views had applied"))),
        AuthProblems, AdminProblems, ViewProblems,
        (status = 422, description = "`principal`, `resource`, `type`, `from`, `to`, `limit` or `cursor` is invalid (code `validation_failed`)", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
async fn list_audit(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(TenantPath { tenant }): PathParams<TenantPath>,
    QueryParams(q): QueryParams<AuditQuery>,
) -> Result<Response, Problem> {
    let page = audit::list(&state, &principal, &tenant, &q).await?;
    Ok(positioned(StatusCode::OK, page.position, page))
}
