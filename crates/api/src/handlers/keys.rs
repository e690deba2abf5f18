//! API-key routes: a tenant's keys (issue, list, read, change, rotate, revoke) and the
//! verification of a key for another service. Each calls one use case of `custodian_app::keys`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use custodian_app::Principal;
use custodian_app::keys::verify::{self, Verification, VerifyRequest};
use custodian_app::keys::{
    self, CreateKeyRequest, IssuedKey, KeyListQuery, KeyPage, KeyView, KeyWritten,
    RotateKeyRequest, UpdateKeyRequest,
};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{JsonBody, PathParams, QueryParams, TenantPath};
use crate::openapi::{AdminProblems, AuthProblems, JsonBodyProblems, KeyProblems, ViewProblems};
use crate::respond::{PROBLEM_JSON, Problem, ProblemDocument, never_stored, positioned};
use crate::state::AppState;

/// This module's routes.
pub(crate) fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router
        .routes(routes!(create_key, list_keys))
        .routes(routes!(get_key, update_key, revoke_key))
        .routes(routes!(rotate_key))
        .routes(routes!(verify_key))
}

/// The path of a route on one key.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct KeyPath {
    /// The tenant's slug
    pub tenant: String,
    /// The key's id (`key_...`)
    pub id: String,
}

/// Issue an API key. Needs `key:create`, and every scope held by the caller on `on`.
///
/// The answer holds the full key, shown this once: the server keeps only its keyed hash.
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/keys",
    tag = "keys",
    security(("bearer" = [])),
    params(TenantPath),
    request_body = CreateKeyRequest,
    responses(
        (status = 201, description = "The key, in full, once", body = IssuedKey),
        JsonBodyProblems, AuthProblems, AdminProblems, KeyProblems,
    ),
)]
async fn create_key(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(TenantPath { tenant }): PathParams<TenantPath>,
    JsonBody(req): JsonBody<CreateKeyRequest>,
) -> Result<Response, Problem> {
    let r = keys::create_key(&state, &principal, &tenant, req).await?;
    Ok(never_stored(positioned(StatusCode::CREATED, r.position, r)))
}

/// The tenant's keys, by id, filtered by `owner` and `status`; never a secret. Needs `key:read`.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/keys",
    tag = "keys",
    security(("bearer" = [])),
    params(TenantPath, KeyListQuery),
    responses(
        (status = 200, description = "A page of keys", body = KeyPage),
        AuthProblems, AdminProblems, ViewProblems,
        (status = 422, description = "`owner`, `status`, `limit` or `cursor` is invalid (code `validation_failed`)", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
async fn list_keys(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(TenantPath { tenant }): PathParams<TenantPath>,
    QueryParams(q): QueryParams<KeyListQuery>,
) -> Result<Json<KeyPage>, Problem> {
    Ok(Json(keys::list_keys(&state, &principal, &tenant, q).await?))
}

/// One key; never its secret. Needs `key:read`.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/keys/{id}",
    tag = "keys",
    security(("bearer" = [])),
    params(KeyPath),
    responses(
        (status = 200, description = "The key", body = KeyView),
        AuthProblems, AdminProblems, ViewProblems,
    ),
)]
async fn get_key(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(KeyPath { tenant, id }): PathParams<KeyPath>,
) -> Result<Json<KeyView>, Problem> {
    Ok(Json(keys::get_key(&state, &principal, &tenant, &id).await?))
}

/// Change a key's name, rate limit, usage limit or address allowlist. Needs `key:update`.
#[utoipa::path(
    patch,
    path = "/v1/tenants/{tenant}/keys/{id}",
    tag = "keys",
    security(("bearer" = [])),
    params(KeyPath),
    request_body = UpdateKeyRequest,
    responses(
        (status = 200, description = "The key as changed", body = KeyWritten),
        JsonBodyProblems, AuthProblems, AdminProblems, KeyProblems,
    ),
)]
async fn update_key(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(KeyPath { tenant, id }): PathParams<KeyPath>,
    JsonBody(req): JsonBody<UpdateKeyRequest>,
) -> Result<Response, Problem> {
    let r = keys::update_key(&state, &principal, &tenant, &id, req).await?;
    Ok(positioned(StatusCode::OK, r.position, r))
}

/// Revoke a key at once. Needs `key:delete`.
#[utoipa::path(
    delete,
    path = "/v1/tenants/{tenant}/keys/{id}",
    tag = "keys",
    security(("bearer" = [])),
    params(KeyPath),
    responses(
        (status = 200, description = "The key is revoked", body = KeyWritten),
        AuthProblems, AdminProblems,
    ),
)]
async fn revoke_key(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(KeyPath { tenant, id }): PathParams<KeyPath>,
) -> Result<Response, Problem> {
    let r = keys::revoke_key(&state, &principal, &tenant, &id).await?;
    Ok(positioned(StatusCode::OK, r.position, r))
}

/// Give a key a new secret, keeping its id; the previous one works `grace_seconds` more, then
/// answers `EXPIRED`. Needs `key:rotate`. The answer holds the new key, shown this once.
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/keys/{id}/rotate",
    tag = "keys",
    security(("bearer" = [])),
    params(KeyPath),
    request_body = RotateKeyRequest,
    responses(
        (status = 200, description = "The new key, in full, once", body = IssuedKey),
        JsonBodyProblems, AuthProblems, AdminProblems, KeyProblems,
    ),
)]
async fn rotate_key(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(KeyPath { tenant, id }): PathParams<KeyPath>,
    JsonBody(req): JsonBody<RotateKeyRequest>,
) -> Result<Response, Problem> {
    let r = keys::rotate_key(&state, &principal, &tenant, &id, req).await?;
    Ok(never_stored(positioned(StatusCode::OK, r.position, r)))
}

/// Verify a key presented to the caller, optionally for a permission on a resource.
///
/// Always 200 with `valid` and `code`: `MALFORMED`, `NOT_FOUND`, `TENANT_SUSPENDED`, `REVOKED`,
/// `EXPIRED`, `DISABLED_OWNER`, `IP_NOT_ALLOWED`, `FORBIDDEN`, `RATE_LIMITED`, `USAGE_EXCEEDED`
/// or `VALID`, the first check that fails in this order. Needs `key:verify` in the key's tenant
/// (another tenant's key is `NOT_FOUND`) or in `_system`. The key's address allowlist is checked
/// against `ip`, or else this request's own client address.
#[utoipa::path(
    post,
    path = "/v1/keys/verify",
    tag = "keys",
    security(("bearer" = [])),
    request_body = VerifyRequest,
    responses(
        (status = 200, description = "What the key may do", body = Verification),
        JsonBodyProblems, AuthProblems, KeyProblems,
    ),
)]
async fn verify_key(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(req): JsonBody<VerifyRequest>,
) -> Result<Json<Verification>, Problem> {
    Ok(Json(verify::verify(&state, &principal, req).await?))
}
