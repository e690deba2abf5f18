//! Authorization routes: a tenant's catalog, roles, grants, assignments and resource groups, the
//! decision point (`/check`), and the lookups of effective permissions. Each calls one use case of
//! `custodian_app::authz`.

use axum::Json;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::Response;
use custodian_app::Principal;
use custodian_app::authz::check::{
    self, BatchAnswer, BatchRequest, CheckAnswer, CheckRequest, HoldersView, PermissionsView,
};
use custodian_app::authz::manage::{
    self, AssignmentListQuery, AssignmentPage, CatalogRequest, CatalogView,
    CreateAssignmentRequest, CreateGrantRequest, CreateRoleRequest, GrantListQuery, GrantPage,
    Made, MemberView, RoleDeleted, RoleView, UpdateRoleRequest,
};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{JsonBody, MAX_BATCH_BODY_BYTES, PathParams, QueryParams, TenantPath};
use crate::openapi::{AdminProblems, AuthProblems, JsonBodyProblems, PolicyProblems};
use crate::respond::{Problem, positioned};
use crate::state::AppState;

/// This module's routes.
pub(crate) fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    // A batch of 1,000 checks is larger than the body limit of every other route.
    let (schemas, paths, batch) = routes!(check_batch);
    let batch = batch.layer(DefaultBodyLimit::max(MAX_BATCH_BODY_BYTES));
    router
        .routes(routes!(set_catalog, get_catalog))
        .routes(routes!(create_role, list_roles))
        .routes(routes!(get_role, update_role, delete_role))
        .routes(routes!(create_grant, list_grants))
        .routes(routes!(revoke_grant))
        .routes(routes!(create_assignment, list_assignments))
        .routes(routes!(end_assignment))
        .routes(routes!(add_member, remove_member))
        .routes(routes!(check))
        .routes((schemas, paths, batch))
        .routes(routes!(principal_permissions))
        .routes(routes!(resource_principals))
        .routes(routes!(my_permissions))
}

/// The path of a route on one role.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RolePath {
    /// The tenant's slug
    pub tenant: String,
    /// The role's name
    pub role: String,
}

/// The path of a route on one grant or assignment.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct IdPath {
    /// The tenant's slug
    pub tenant: String,
    /// The grant's or assignment's id
    pub id: String,
}

/// The path of a route on one member of a resource group.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MemberPath {
    /// The tenant's slug
    pub tenant: String,
    /// The group's name
    pub group: String,
    /// The resource's type
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub resource_type: String,
    /// The resource's id
    pub id: String,
}

/// The path of a route on one principal.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct PrincipalPath {
    /// The tenant's slug
    pub tenant: String,
    /// The principal's id
    pub id: String,
}

/// The path of a route on one resource.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ResourcePath {
    /// The tenant's slug
    pub tenant: String,
    /// The resource's type
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub resource_type: String,
    /// The resource's id
    pub id: String,
}

/// Register the tenant's own resource types and actions, replacing the previous list.
///
/// Needs `tenant:update`. The built-in types are in every tenant and cannot be redefined.
#[utoipa::path(
    put,
    path = "/v1/tenants/{tenant}/catalog",
    tag = "authorization",
    security(("bearer" = [])),
    params(TenantPath),
    request_body = CatalogRequest,
    responses(
        (status = 200, description = "The catalog as it now is", body = CatalogView),
        JsonBodyProblems, AuthProblems, AdminProblems,
    ),
)]
async fn set_catalog(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(TenantPath { tenant }): PathParams<TenantPath>,
    JsonBody(req): JsonBody<CatalogRequest>,
) -> Result<Response, Problem> {
    let r = manage::set_catalog(&state, &principal, &tenant, req).await?;
    Ok(positioned(StatusCode::OK, r.position, r))
}

/// The tenant's permission catalog: the built-in types and the tenant's own. Needs `role:read`.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/catalog",
    tag = "authorization",
    security(("bearer" = [])),
    params(TenantPath),
    responses(
        (status = 200, description = "The catalog", body = CatalogView),
        AuthProblems, AdminProblems,
    ),
)]
async fn get_catalog(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(TenantPath { tenant }): PathParams<TenantPath>,
) -> Result<Json<CatalogView>, Problem> {
    Ok(Json(manage::catalog(&state, &principal, &tenant).await?))
}

/// Create a custom role. Needs `role:create`; its parents must exist and make no cycle.
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/roles",
    tag = "authorization",
    security(("bearer" = [])),
    params(TenantPath),
    request_body = CreateRoleRequest,
    responses(
        (status = 201, description = "The role exists", body = RoleView),
        JsonBodyProblems, AuthProblems, AdminProblems, PolicyProblems,
    ),
)]
async fn create_role(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(TenantPath { tenant }): PathParams<TenantPath>,
    JsonBody(req): JsonBody<CreateRoleRequest>,
) -> Result<Response, Problem> {
    let r = manage::create_role(&state, &principal, &tenant, req).await?;
    Ok(positioned(StatusCode::CREATED, r.position, r))
}

/// Every role of the tenant: the built-in ones, then the custom ones. Needs `role:read`.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/roles",
    tag = "authorization",
    security(("bearer" = [])),
    params(TenantPath),
    responses(
        (status = 200, description = "The roles", body = Vec<RoleView>),
        AuthProblems, AdminProblems,
    ),
)]
async fn list_roles(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(TenantPath { tenant }): PathParams<TenantPath>,
) -> Result<Json<Vec<RoleView>>, Problem> {
    Ok(Json(manage::list_roles(&state, &principal, &tenant).await?))
}

/// One role. Needs `role:read`.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/roles/{role}",
    tag = "authorization",
    security(("bearer" = [])),
    params(RolePath),
    responses(
        (status = 200, description = "The role", body = RoleView),
        AuthProblems, AdminProblems,
    ),
)]
async fn get_role(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(RolePath { tenant, role }): PathParams<RolePath>,
) -> Result<Json<RoleView>, Problem> {
    Ok(Json(
        manage::get_role(&state, &principal, &tenant, &role).await?,
    ))
}

/// Change a custom role's description or parents. Needs `role:update`.
#[utoipa::path(
    patch,
    path = "/v1/tenants/{tenant}/roles/{role}",
    tag = "authorization",
    security(("bearer" = [])),
    params(RolePath),
    request_body = UpdateRoleRequest,
    responses(
        (status = 200, description = "The role as it now is", body = RoleView),
        JsonBodyProblems, AuthProblems, AdminProblems, PolicyProblems,
    ),
)]
async fn update_role(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(RolePath { tenant, role }): PathParams<RolePath>,
    JsonBody(req): JsonBody<UpdateRoleRequest>,
) -> Result<Response, Problem> {
    let r = manage::update_role(&state, &principal, &tenant, &role, req).await?;
    Ok(positioned(StatusCode::OK, r.position, r))
}

/// Delete a custom role: its grants are revoked and its assignments ended, each as an event.
/// Needs `role:delete`. A role that another role inherits cannot be deleted (409).
#[utoipa::path(
    delete,
    path = "/v1/tenants/{tenant}/roles/{role}",
    tag = "authorization",
    security(("bearer" = [])),
    params(RolePath),
    responses(
        (status = 200, description = "The role is gone", body = RoleDeleted),
        AuthProblems, AdminProblems, PolicyProblems,
    ),
)]
async fn delete_role(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(RolePath { tenant, role }): PathParams<RolePath>,
) -> Result<Response, Problem> {
    let r = manage::delete_role(&state, &principal, &tenant, &role).await?;
    Ok(positioned(StatusCode::OK, r.position, r))
}

/// Allow or deny a permission to a principal or a role, on the whole tenant or a scope.
///
/// Needs `grant:create`, and nobody can grant a permission they do not hold on that scope. A
/// permission outside the tenant's catalog is refused with 422 and the list of known ones.
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/grants",
    tag = "authorization",
    security(("bearer" = [])),
    params(TenantPath),
    request_body = CreateGrantRequest,
    responses(
        (status = 201, description = "The grant exists", body = Made),
        JsonBodyProblems, AuthProblems, AdminProblems, PolicyProblems,
    ),
)]
async fn create_grant(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(TenantPath { tenant }): PathParams<TenantPath>,
    JsonBody(req): JsonBody<CreateGrantRequest>,
) -> Result<Response, Problem> {
    let r = manage::create_grant(&state, &principal, &tenant, req).await?;
    Ok(positioned(StatusCode::CREATED, r.position, r))
}

/// A page of the tenant's grants. Needs `grant:read`.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/grants",
    tag = "authorization",
    security(("bearer" = [])),
    params(TenantPath, GrantListQuery),
    responses(
        (status = 200, description = "A page of grants", body = GrantPage),
        AuthProblems, AdminProblems, PolicyProblems,
    ),
)]
async fn list_grants(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(TenantPath { tenant }): PathParams<TenantPath>,
    QueryParams(q): QueryParams<GrantListQuery>,
) -> Result<Json<GrantPage>, Problem> {
    Ok(Json(
        manage::list_grants(&state, &principal, &tenant, q).await?,
    ))
}

/// Revoke a grant. Needs `grant:delete`.
#[utoipa::path(
    delete,
    path = "/v1/tenants/{tenant}/grants/{id}",
    tag = "authorization",
    security(("bearer" = [])),
    params(IdPath),
    responses(
        (status = 200, description = "The grant is revoked", body = Made),
        AuthProblems, AdminProblems,
    ),
)]
async fn revoke_grant(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(IdPath { tenant, id }): PathParams<IdPath>,
) -> Result<Response, Problem> {
    let r = manage::revoke_grant(&state, &principal, &tenant, &id).await?;
    Ok(positioned(StatusCode::OK, r.position, r))
}

/// Assign a role to a principal, on the whole tenant or a scope, for a window of time.
///
/// Needs `assignment:create`, and the caller must hold every permission the role allows.
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/assignments",
    tag = "authorization",
    security(("bearer" = [])),
    params(TenantPath),
    request_body = CreateAssignmentRequest,
    responses(
        (status = 201, description = "The assignment exists", body = Made),
        JsonBodyProblems, AuthProblems, AdminProblems, PolicyProblems,
    ),
)]
async fn create_assignment(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(TenantPath { tenant }): PathParams<TenantPath>,
    JsonBody(req): JsonBody<CreateAssignmentRequest>,
) -> Result<Response, Problem> {
    let r = manage::create_assignment(&state, &principal, &tenant, req).await?;
    Ok(positioned(StatusCode::CREATED, r.position, r))
}

/// A page of the tenant's assignments. Needs `assignment:read`.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/assignments",
    tag = "authorization",
    security(("bearer" = [])),
    params(TenantPath, AssignmentListQuery),
    responses(
        (status = 200, description = "A page of assignments", body = AssignmentPage),
        AuthProblems, AdminProblems, PolicyProblems,
    ),
)]
async fn list_assignments(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(TenantPath { tenant }): PathParams<TenantPath>,
    QueryParams(q): QueryParams<AssignmentListQuery>,
) -> Result<Json<AssignmentPage>, Problem> {
    Ok(Json(
        manage::list_assignments(&state, &principal, &tenant, q).await?,
    ))
}

/// End an assignment. Needs `assignment:delete`.
#[utoipa::path(
    delete,
    path = "/v1/tenants/{tenant}/assignments/{id}",
    tag = "authorization",
    security(("bearer" = [])),
    params(IdPath),
    responses(
        (status = 200, description = "The assignment has ended", body = Made),
        AuthProblems, AdminProblems,
    ),
)]
async fn end_assignment(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(IdPath { tenant, id }): PathParams<IdPath>,
) -> Result<Response, Problem> {
    let r = manage::end_assignment(&state, &principal, &tenant, &id).await?;
    Ok(positioned(StatusCode::OK, r.position, r))
}

/// Put a resource in a resource group (nothing changes if it is in it). Needs `group:update`.
#[utoipa::path(
    put,
    path = "/v1/tenants/{tenant}/groups/{group}/members/{type}/{id}",
    tag = "authorization",
    security(("bearer" = [])),
    params(MemberPath),
    responses(
        (status = 200, description = "The resource is a member", body = MemberView),
        AuthProblems, AdminProblems, PolicyProblems,
    ),
)]
async fn add_member(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(p): PathParams<MemberPath>,
) -> Result<Response, Problem> {
    let r = manage::add_member(
        &state,
        &principal,
        &p.tenant,
        &p.group,
        &p.resource_type,
        &p.id,
    )
    .await?;
    Ok(positioned(StatusCode::OK, r.position, r))
}

/// Take a resource out of a resource group. Needs `group:update`.
#[utoipa::path(
    delete,
    path = "/v1/tenants/{tenant}/groups/{group}/members/{type}/{id}",
    tag = "authorization",
    security(("bearer" = [])),
    params(MemberPath),
    responses(
        (status = 200, description = "The resource is no longer a member", body = MemberView),
        AuthProblems, AdminProblems, PolicyProblems,
    ),
)]
async fn remove_member(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(p): PathParams<MemberPath>,
) -> Result<Response, Problem> {
    let r = manage::remove_member(
        &state,
        &principal,
        &p.tenant,
        &p.group,
        &p.resource_type,
        &p.id,
    )
    .await?;
    Ok(positioned(StatusCode::OK, r.position, r))
}

/// May this principal do this action on this resource? Now, or as the ledger stood at `at`.
///
/// Needs `decision:execute`. The answer gives the reason and the chain of events that decided
/// (`matched`), and the position it was evaluated at. The decision is recorded in the decision
/// log (`decision.recorded`) as the server's `--decision-log` mode says.
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/check",
    tag = "authorization",
    security(("bearer" = [])),
    params(TenantPath),
    request_body = CheckRequest,
    responses(
        (status = 200, description = "The decision", body = CheckAnswer),
        JsonBodyProblems, AuthProblems, AdminProblems,
    ),
)]
async fn check(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(TenantPath { tenant }): PathParams<TenantPath>,
    JsonBody(req): JsonBody<CheckRequest>,
) -> Result<Response, Problem> {
    let r = check::check(&state, &principal, &tenant, req).await?;
    Ok(positioned(StatusCode::OK, r.position, r))
}

/// Up to 1,000 checks, evaluated against one state of the policy. Needs `decision:execute`.
///
/// The body may be up to 1 MiB.
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/check/batch",
    tag = "authorization",
    security(("bearer" = [])),
    params(TenantPath),
    request_body = BatchRequest,
    responses(
        (status = 200, description = "The decisions, in the order asked", body = BatchAnswer),
        JsonBodyProblems, AuthProblems, AdminProblems,
    ),
)]
async fn check_batch(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(TenantPath { tenant }): PathParams<TenantPath>,
    JsonBody(req): JsonBody<BatchRequest>,
) -> Result<Response, Problem> {
    let r = check::check_batch(&state, &principal, &tenant, req).await?;
    Ok(positioned(StatusCode::OK, r.position, r))
}

/// A principal's effective permissions, each with where it comes from. Needs `grant:read`.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/principals/{id}/permissions",
    tag = "authorization",
    security(("bearer" = [])),
    params(PrincipalPath),
    responses(
        (status = 200, description = "The principal's permissions", body = PermissionsView),
        AuthProblems, AdminProblems,
    ),
)]
async fn principal_permissions(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(PrincipalPath { tenant, id }): PathParams<PrincipalPath>,
) -> Result<Json<PermissionsView>, Problem> {
    Ok(Json(
        check::principal_permissions(&state, &principal, &tenant, &id).await?,
    ))
}

/// Who may do what on a resource, each with the chain that allows it. Needs `grant:read`.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/resources/{type}/{id}/principals",
    tag = "authorization",
    security(("bearer" = [])),
    params(ResourcePath),
    responses(
        (status = 200, description = "The principals and their permissions on the resource", body = HoldersView),
        AuthProblems, AdminProblems, PolicyProblems,
    ),
)]
async fn resource_principals(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(p): PathParams<ResourcePath>,
) -> Result<Json<HoldersView>, Problem> {
    Ok(Json(
        check::resource_principals(&state, &principal, &p.tenant, &p.resource_type, &p.id).await?,
    ))
}

/// The caller's own effective permissions in their tenant.
#[utoipa::path(
    get,
    path = "/v1/permissions/me",
    tag = "authorization",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's permissions", body = PermissionsView),
        AuthProblems,
    ),
)]
async fn my_permissions(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<PermissionsView>, Problem> {
    Ok(Json(check::my_permissions(&state, &principal).await?))
}
