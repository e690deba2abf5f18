//! User administration routes within a tenant: `/v1/tenants/{tenant}/users...`,
//! `/v1/tenants/{tenant}/invitations` and `/v1/tenants/{tenant}/credentials`. Each calls one use
//! case of `custodian_app::admin::users`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use custodian_app::Principal;
use custodian_app::admin::users::{
    self, CreateUserRequest, CredentialListQuery, CredentialPage, DisableUserRequest,
    InvitationIssued, InviteRequest, ResetIssued, SessionsRevoked, UpdateUserRequest, UserChanged,
    UserCreated, UserDetail, UserListQuery, UserPage,
};
use custodian_app::identity::Accepted;
use custodian_app::sessions::{SessionListQuery, SessionPage};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{JsonBody, PathParams, QueryParams, TenantPath, UserPath};
use crate::openapi::{
    AdminProblems, AuthProblems, JsonBodyProblems, NewUserProblems, SessionQueryProblems,
    ViewProblems,
};
use crate::respond::{PROBLEM_JSON, Problem, ProblemDocument, positioned};
use crate::state::AppState;

/// This module's routes.
pub(crate) fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router
        .routes(routes!(create_user, list_users))
        .routes(routes!(invite_user))
        .routes(routes!(get_user, update_user, delete_user))
        .routes(routes!(disable_user))
        .routes(routes!(enable_user))
        .routes(routes!(issue_password_reset))
        .routes(routes!(list_user_sessions, revoke_user_sessions))
        .routes(routes!(list_credentials))
}

/// Create a user, active at once.
///
/// People may be given a first password; agents and services authenticate with API keys only.
/// The email must not be in use by another user of the tenant.
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/users",
    tag = "users",
    security(("bearer" = [])),
    params(TenantPath),
    request_body = CreateUserRequest,
    responses(
        (status = 201, description = "The user exists", body = UserCreated),
        JsonBodyProblems, AuthProblems, AdminProblems,
        NewUserProblems,
        (status = 422, description = "A field is missing, of the wrong type, unknown or invalid; the password does not meet the policy or is given for an agent or service; an unknown role", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
async fn create_user(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(TenantPath { tenant }): PathParams<TenantPath>,
    JsonBody(req): JsonBody<CreateUserRequest>,
) -> Result<Response, Problem> {
    let r = users::create(&state, &principal, &tenant, req).await?;
    Ok(positioned(StatusCode::CREATED, r.position, r))
}

/// Invite a person to the tenant.
///
/// Answers the invitation token, which only this answer shows: deliver it to the invitee, who sets
/// a password with it at `/v1/auth/invitations/accept`.
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/invitations",
    tag = "users",
    security(("bearer" = [])),
    params(TenantPath),
    request_body = InviteRequest,
    responses(
        (status = 201, description = "The user is invited", body = InvitationIssued),
        JsonBodyProblems, AuthProblems, AdminProblems,
        NewUserProblems,
    ),
)]
async fn invite_user(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(TenantPath { tenant }): PathParams<TenantPath>,
    JsonBody(req): JsonBody<InviteRequest>,
) -> Result<Response, Problem> {
    let r = users::invite(&state, &principal, &tenant, req).await?;
    Ok(positioned(StatusCode::CREATED, r.position, r))
}

/// List the tenant's users by id (creation order), optionally by status and kind.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/users",
    tag = "users",
    security(("bearer" = [])),
    params(TenantPath, UserListQuery),
    responses(
        (status = 200, description = "A page of users; erased users show `email` and `name` as null", body = UserPage),
        AuthProblems, AdminProblems,
        (status = 422, description = "`limit`, `cursor`, `status` or `kind` is invalid", body = ProblemDocument, content_type = PROBLEM_JSON),
        ViewProblems,
    ),
)]
async fn list_users(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(TenantPath { tenant }): PathParams<TenantPath>,
    QueryParams(q): QueryParams<UserListQuery>,
) -> Result<Json<UserPage>, Problem> {
    Ok(Json(users::list(&state, &principal, &tenant, &q).await?))
}

/// Read a user and their credential status.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/users/{user_id}",
    tag = "users",
    security(("bearer" = [])),
    params(UserPath),
    responses(
        (status = 200, description = "The user; an erased user shows `email` and `name` as null", body = UserDetail),
        AuthProblems, AdminProblems,
        ViewProblems,
    ),
)]
async fn get_user(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(UserPath { tenant, user_id }): PathParams<UserPath>,
) -> Result<Json<UserDetail>, Problem> {
    Ok(Json(
        users::get(&state, &principal, &tenant, &user_id).await?,
    ))
}

/// List the tenant's credential statuses by user id, optionally only locked accounts.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/credentials",
    tag = "users",
    security(("bearer" = [])),
    params(TenantPath, CredentialListQuery),
    responses(
        (status = 200, description = "A page of credential statuses (erased users have none)", body = CredentialPage),
        AuthProblems, AdminProblems,
        (status = 422, description = "`limit`, `cursor` or `locked` is invalid", body = ProblemDocument, content_type = PROBLEM_JSON),
        ViewProblems,
    ),
)]
async fn list_credentials(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(TenantPath { tenant }): PathParams<TenantPath>,
    QueryParams(q): QueryParams<CredentialListQuery>,
) -> Result<Json<CredentialPage>, Problem> {
    Ok(Json(
        users::credentials(&state, &principal, &tenant, &q).await?,
    ))
}

/// Change a user's email and/or name.
///
/// A new email is claimed in the tenant before the profile changes, and the old one released
/// after.
#[utoipa::path(
    patch,
    path = "/v1/tenants/{tenant}/users/{user_id}",
    tag = "users",
    security(("bearer" = [])),
    params(UserPath),
    request_body = UpdateUserRequest,
    responses(
        (status = 200, description = "The profile is updated", body = UserChanged),
        JsonBodyProblems, AuthProblems, AdminProblems,
        (status = 409, description = "The new email address is already in use in the tenant", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 422, description = "No field given, or a field is of the wrong type, unknown or invalid", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
async fn update_user(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(UserPath { tenant, user_id }): PathParams<UserPath>,
    JsonBody(req): JsonBody<UpdateUserRequest>,
) -> Result<Response, Problem> {
    let r = users::update(&state, &principal, &tenant, &user_id, req).await?;
    Ok(positioned(StatusCode::OK, r.position, r))
}

/// Disable a user: they are refused everywhere, and their sessions are revoked, at once.
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/users/{user_id}/disable",
    tag = "users",
    security(("bearer" = [])),
    params(UserPath),
    request_body = DisableUserRequest,
    responses(
        (status = 200, description = "The user is disabled and their sessions revoked", body = UserChanged),
        JsonBodyProblems, AuthProblems, AdminProblems,
        (status = 409, description = "The user is not active (already disabled, or invited), or is the caller", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 422, description = "`reason` is missing or not 1 to 500 characters", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
async fn disable_user(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(UserPath { tenant, user_id }): PathParams<UserPath>,
    JsonBody(req): JsonBody<DisableUserRequest>,
) -> Result<Response, Problem> {
    let r = users::disable(&state, &principal, &tenant, &user_id, req).await?;
    Ok(positioned(StatusCode::OK, r.position, r))
}

/// Enable a disabled user.
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/users/{user_id}/enable",
    tag = "users",
    security(("bearer" = [])),
    params(UserPath),
    responses(
        (status = 200, description = "The user is active again", body = UserChanged),
        AuthProblems, AdminProblems,
        (status = 409, description = "The user is not disabled", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
async fn enable_user(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(UserPath { tenant, user_id }): PathParams<UserPath>,
) -> Result<Response, Problem> {
    let r = users::enable(&state, &principal, &tenant, &user_id).await?;
    Ok(positioned(StatusCode::OK, r.position, r))
}

/// Erase a user.
///
/// Records the erasure, releases the email, revokes every session, and destroys the user's data
/// key: their email, name and credentials stay in the log only as ciphertext nobody can open.
/// The user remains listed with status `deleted`. Erasing again is 404.
#[utoipa::path(
    delete,
    path = "/v1/tenants/{tenant}/users/{user_id}",
    tag = "users",
    security(("bearer" = [])),
    params(UserPath),
    responses(
        (status = 200, description = "The user is erased", body = Accepted),
        AuthProblems, AdminProblems,
        (status = 409, description = "The user is the caller: administrators cannot erase themselves", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
async fn delete_user(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(UserPath { tenant, user_id }): PathParams<UserPath>,
) -> Result<Response, Problem> {
    let r = users::erase(&state, &principal, &tenant, &user_id).await?;
    Ok(positioned(StatusCode::OK, r.position, r))
}

/// Issue a password reset token for a person.
///
/// Answers the token, which only this answer shows: deliver it to the user, who sets a new
/// password with it at `/v1/auth/password/reset`.
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/users/{user_id}/password-reset",
    tag = "users",
    security(("bearer" = [])),
    params(UserPath),
    responses(
        (status = 201, description = "A reset token", body = ResetIssued),
        AuthProblems, AdminProblems,
        (status = 409, description = "The user is not active, or is an agent or service (API keys only)", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
async fn issue_password_reset(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(UserPath { tenant, user_id }): PathParams<UserPath>,
) -> Result<Response, Problem> {
    let r = users::issue_password_reset(&state, &principal, &tenant, &user_id).await?;
    Ok(positioned(StatusCode::CREATED, r.position, r))
}

/// List a user's sessions by id (start order).
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/users/{user_id}/sessions",
    tag = "users",
    security(("bearer" = [])),
    params(UserPath, SessionListQuery),
    responses(
        (status = 200, description = "A page of sessions", body = SessionPage),
        AuthProblems, AdminProblems,
        SessionQueryProblems,
        (status = 503, description = "A view is not ready or the database is busy; retry after `Retry-After`", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
async fn list_user_sessions(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(UserPath { tenant, user_id }): PathParams<UserPath>,
    QueryParams(q): QueryParams<SessionListQuery>,
) -> Result<Json<SessionPage>, Problem> {
    Ok(Json(
        users::sessions(&state, &principal, &tenant, &user_id, &q).await?,
    ))
}

/// Revoke every live session of a user. Their access tokens stop working at once.
#[utoipa::path(
    delete,
    path = "/v1/tenants/{tenant}/users/{user_id}/sessions",
    tag = "users",
    security(("bearer" = [])),
    params(UserPath),
    responses(
        (status = 200, description = "The sessions are revoked", body = SessionsRevoked),
        AuthProblems, AdminProblems,
    ),
)]
async fn revoke_user_sessions(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(UserPath { tenant, user_id }): PathParams<UserPath>,
) -> Result<Response, Problem> {
    let r = users::revoke_sessions(&state, &principal, &tenant, &user_id).await?;
    Ok(positioned(StatusCode::OK, r.position, r))
}
