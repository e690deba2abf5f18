//! Tenant administration routes (platform administrators).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use custodian_app::Principal;
use custodian_app::admin::tenants::{
    self, CreateTenantRequest, SuspendTenantRequest, TenantChanged, TenantListQuery, TenantPage,
    TenantView, UpdateTenantRequest,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{JsonBody, PathParams, QueryParams, TenantPath};
use crate::openapi::{AdminProblems, AuthProblems, JsonBodyProblems, PlatformAdminProblems};
use crate::respond::{PROBLEM_JSON, Problem, ProblemDocument, positioned};
use crate::state::AppState;

/// This module's routes.
pub(crate) fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router
        .routes(routes!(create_tenant, list_tenants))
        .routes(routes!(get_tenant, update_tenant))
        .routes(routes!(suspend_tenant))
        .routes(routes!(reactivate_tenant))
}

/// Create a tenant (platform administrators).
///
/// The slug is the tenant's permanent id; `_system` is reserved for the platform (422). A slug
/// already taken is 409.
#[utoipa::path(
    post,
    path = "/v1/tenants",
    tag = "tenants",
    security(("bearer" = [])),
    request_body = CreateTenantRequest,
    responses(
        (status = 201, description = "The tenant exists; `Custodian-Position` names its event", body = TenantChanged),
        JsonBodyProblems,
        AuthProblems,
        PlatformAdminProblems,
        (status = 409, description = "A tenant with this slug already exists (code `conflict`)", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
async fn create_tenant(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(req): JsonBody<CreateTenantRequest>,
) -> Result<Response, Problem> {
    let r = tenants::create(&state, &principal, req).await?;
    Ok(positioned(StatusCode::CREATED, r.position, r))
}

/// List tenants by slug (platform administrators).
///
/// The platform scope `_system` comes first: it has no tenant of its own to record it, so it is
/// shown as the tenant `Platform`, on the `enterprise` plan, always `active`.
#[utoipa::path(
    get,
    path = "/v1/tenants",
    tag = "tenants",
    security(("bearer" = [])),
    params(TenantListQuery),
    responses(
        (status = 200, description = "A page of tenants", body = TenantPage),
        AuthProblems,
        PlatformAdminProblems,
        (status = 422, description = "`limit` or `cursor` is invalid", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
async fn list_tenants(
    State(state): State<AppState>,
    principal: Principal,
    QueryParams(q): QueryParams<TenantListQuery>,
) -> Result<Json<TenantPage>, Problem> {
    Ok(Json(tenants::list(&state, &principal, q).await?))
}

/// Read a tenant (platform administrators, and the tenant's own users).
///
/// `_system` is the platform scope, as the listing shows it.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}",
    tag = "tenants",
    security(("bearer" = [])),
    params(TenantPath),
    responses(
        (status = 200, description = "The tenant", body = TenantView),
        AuthProblems,
        (status = 404, description = "No such tenant, or not one the caller may see", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
async fn get_tenant(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(TenantPath { tenant }): PathParams<TenantPath>,
) -> Result<Json<TenantView>, Problem> {
    Ok(Json(tenants::get(&state, &principal, &tenant).await?))
}

/// Rename a tenant or change its plan (platform administrators).
#[utoipa::path(
    patch,
    path = "/v1/tenants/{tenant}",
    tag = "tenants",
    security(("bearer" = [])),
    params(TenantPath),
    request_body = UpdateTenantRequest,
    responses(
        (status = 200, description = "The tenant as changed", body = TenantChanged),
        JsonBodyProblems,
        AuthProblems,
        AdminProblems,
        (status = 409, description = "The tenant is `_system`, the platform scope, which cannot be changed (code `conflict`)", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
async fn update_tenant(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(TenantPath { tenant }): PathParams<TenantPath>,
    JsonBody(req): JsonBody<UpdateTenantRequest>,
) -> Result<Response, Problem> {
    let r = tenants::update(&state, &principal, &tenant, req).await?;
    Ok(positioned(StatusCode::OK, r.position, r))
}

/// Suspend a tenant (platform administrators): every session and key of it is refused at once.
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/suspend",
    tag = "tenants",
    security(("bearer" = [])),
    params(TenantPath),
    request_body = SuspendTenantRequest,
    responses(
        (status = 200, description = "The tenant is suspended", body = TenantChanged),
        JsonBodyProblems,
        AuthProblems,
        AdminProblems,
        (status = 409, description = "The tenant is already suspended, or is `_system`, the platform scope, which cannot be suspended (code `conflict`)", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
async fn suspend_tenant(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(TenantPath { tenant }): PathParams<TenantPath>,
    JsonBody(req): JsonBody<SuspendTenantRequest>,
) -> Result<Response, Problem> {
    let r = tenants::suspend(&state, &principal, &tenant, req).await?;
    Ok(positioned(StatusCode::OK, r.position, r))
}

/// Reactivate a suspended tenant (platform administrators).
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/reactivate",
    tag = "tenants",
    security(("bearer" = [])),
    params(TenantPath),
    responses(
        (status = 200, description = "The tenant is active", body = TenantChanged),
        AuthProblems,
        AdminProblems,
        (status = 409, description = "The tenant is not suspended, or is `_system`, the platform scope (code `conflict`)", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
async fn reactivate_tenant(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(TenantPath { tenant }): PathParams<TenantPath>,
) -> Result<Response, Problem> {
    let r = tenants::reactivate(&state, &principal, &tenant).await?;
    Ok(positioned(StatusCode::OK, r.position, r))
}
