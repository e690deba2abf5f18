//! Usage routes: recording usage (one record or a batch), reading it against the quotas, the
//! tenant's quotas, meter costs and budget. Each calls one use case of `custodian_app::usage`.

use axum::Json;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::Response;
use custodian_app::Principal;
use custodian_app::usage::{
    self, BatchRecorded, BudgetView, PeriodQuery, QuotasView, Recorded, SetBudgetRequest,
    SetMeterRequest, SetQuotaRequest, SettingChanged, UsageBatch, UsageQuery, UsageRecord,
    UsageView,
};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{JsonBody, MAX_BATCH_BODY_BYTES, PathParams, QueryParams, TenantPath};
use crate::openapi::{AdminProblems, AuthProblems, JsonBodyProblems, QuotaProblems, ViewProblems};
use crate::respond::{Problem, positioned};
use crate::state::AppState;

/// This module's routes.
pub(crate) fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    // A batch of 1,000 records is larger than the body limit of every other route.
    let (schemas, paths, batch) = routes!(record_batch);
    let batch = batch.layer(DefaultBodyLimit::max(MAX_BATCH_BODY_BYTES));
    router
        .routes(routes!(record, read))
        .routes((schemas, paths, batch))
        .routes(routes!(quotas))
        .routes(routes!(set_quota, clear_quota))
        .routes(routes!(set_meter))
        .routes(routes!(budget, set_budget))
}

/// The path of a route on one meter.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MeterPath {
    /// The tenant's slug
    pub tenant: String,
    /// The meter
    pub meter: String,
}

/// Record usage of a meter by a subject. Needs `usage:create`.
///
/// Answers once the record is durable; a retry with the same `idempotency_key` counts nothing and
/// answers `duplicate: true`. A record that would take a hard quota beyond its limit is refused.
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/usage",
    tag = "usage",
    security(("bearer" = [])),
    params(TenantPath),
    request_body = UsageRecord,
    responses(
        (status = 200, description = "The record counts (once)", body = Recorded),
        JsonBodyProblems, AuthProblems, AdminProblems, QuotaProblems,
    ),
)]
async fn record(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(TenantPath { tenant }): PathParams<TenantPath>,
    JsonBody(req): JsonBody<UsageRecord>,
) -> Result<Response, Problem> {
    let r = usage::record(&state, &principal, &tenant, req).await?;
    Ok(positioned(StatusCode::OK, r.position, r))
}

/// Record up to 1,000 records at once, all or none. Needs `usage:create`.
///
/// More than 1,000 records is 422; a record over a hard quota refuses the whole batch (429).
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/usage/batch",
    tag = "usage",
    security(("bearer" = [])),
    params(TenantPath),
    request_body = UsageBatch,
    responses(
        (status = 200, description = "Every record counts (once)", body = BatchRecorded),
        JsonBodyProblems, AuthProblems, AdminProblems, QuotaProblems,
    ),
)]
async fn record_batch(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(TenantPath { tenant }): PathParams<TenantPath>,
    JsonBody(req): JsonBody<UsageBatch>,
) -> Result<Response, Problem> {
    let r = usage::record_batch(&state, &principal, &tenant, req).await?;
    Ok(positioned(StatusCode::OK, r.position, r))
}

/// A meter's usage in a month, by a subject or the whole tenant, against the tenant's quota.
/// Needs `usage:read`.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/usage",
    tag = "usage",
    security(("bearer" = [])),
    params(TenantPath, UsageQuery),
    responses(
        (status = 200, description = "The usage", body = UsageView),
        (status = 422, description = "`meter` is missing, or a parameter is malformed (code `validation_failed`)", body = crate::respond::ProblemDocument, content_type = "application/problem+json"),
        AuthProblems, AdminProblems, ViewProblems,
    ),
)]
async fn read(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(TenantPath { tenant }): PathParams<TenantPath>,
    QueryParams(q): QueryParams<UsageQuery>,
) -> Result<Json<UsageView>, Problem> {
    Ok(Json(usage::read(&state, &principal, &tenant, q).await?))
}

/// Every quota of the tenant (its plan's and its own) with its status in a month. Needs
/// `quota:read`.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/quotas",
    tag = "usage",
    security(("bearer" = [])),
    params(TenantPath, PeriodQuery),
    responses(
        (status = 200, description = "The quotas", body = QuotasView),
        (status = 422, description = "`period` is not `YYYY-MM` (code `validation_failed`)", body = crate::respond::ProblemDocument, content_type = "application/problem+json"),
        AuthProblems, AdminProblems, ViewProblems,
    ),
)]
async fn quotas(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(TenantPath { tenant }): PathParams<TenantPath>,
    QueryParams(q): QueryParams<PeriodQuery>,
) -> Result<Json<QuotasView>, Problem> {
    Ok(Json(usage::quotas(&state, &principal, &tenant, q).await?))
}

/// Set the tenant's own monthly quota of a meter, replacing its plan's. Needs `quota:update`.
#[utoipa::path(
    put,
    path = "/v1/tenants/{tenant}/quotas/{meter}",
    tag = "usage",
    security(("bearer" = [])),
    params(MeterPath),
    request_body = SetQuotaRequest,
    responses(
        (status = 200, description = "The quota is in force", body = SettingChanged),
        JsonBodyProblems, AuthProblems, AdminProblems,
    ),
)]
async fn set_quota(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(MeterPath { tenant, meter }): PathParams<MeterPath>,
    JsonBody(req): JsonBody<SetQuotaRequest>,
) -> Result<Response, Problem> {
    let r = usage::set_quota(&state, &principal, &tenant, &meter, req).await?;
    Ok(positioned(StatusCode::OK, r.position, r))
}

/// Restore the plan's quota of a meter. Needs `quota:update`.
#[utoipa::path(
    delete,
    path = "/v1/tenants/{tenant}/quotas/{meter}",
    tag = "usage",
    security(("bearer" = [])),
    params(MeterPath),
    responses(
        (status = 200, description = "The plan's quota is in force", body = SettingChanged),
        (status = 422, description = "The meter's name is malformed (code `validation_failed`)", body = crate::respond::ProblemDocument, content_type = "application/problem+json"),
        AuthProblems, AdminProblems,
    ),
)]
async fn clear_quota(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(MeterPath { tenant, meter }): PathParams<MeterPath>,
) -> Result<Response, Problem> {
    let r = usage::clear_quota(&state, &principal, &tenant, &meter).await?;
    Ok(positioned(StatusCode::OK, r.position, r))
}

/// Set the cost of one unit of a meter for records from now on. Needs `quota:update`.
#[utoipa::path(
    put,
    path = "/v1/tenants/{tenant}/meters/{meter}",
    tag = "usage",
    security(("bearer" = [])),
    params(MeterPath),
    request_body = SetMeterRequest,
    responses(
        (status = 200, description = "The cost is in force", body = SettingChanged),
        JsonBodyProblems, AuthProblems, AdminProblems,
    ),
)]
async fn set_meter(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(MeterPath { tenant, meter }): PathParams<MeterPath>,
    JsonBody(req): JsonBody<SetMeterRequest>,
) -> Result<Response, Problem> {
    let r = usage::set_meter(&state, &principal, &tenant, &meter, req).await?;
    Ok(positioned(StatusCode::OK, r.position, r))
}

/// The tenant's monthly budget and its spending in a month. Needs `quota:read`.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/budget",
    tag = "usage",
    security(("bearer" = [])),
    params(TenantPath, PeriodQuery),
    responses(
        (status = 200, description = "The budget", body = BudgetView),
        (status = 422, description = "`period` is not `YYYY-MM` (code `validation_failed`)", body = crate::respond::ProblemDocument, content_type = "application/problem+json"),
        AuthProblems, AdminProblems, ViewProblems,
    ),
)]
async fn budget(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(TenantPath { tenant }): PathParams<TenantPath>,
    QueryParams(q): QueryParams<PeriodQuery>,
) -> Result<Json<BudgetView>, Problem> {
    Ok(Json(usage::budget(&state, &principal, &tenant, q).await?))
}

/// Set the tenant's monthly budget (0 removes it). Needs `quota:update`.
#[utoipa::path(
    put,
    path = "/v1/tenants/{tenant}/budget",
    tag = "usage",
    security(("bearer" = [])),
    params(TenantPath),
    request_body = SetBudgetRequest,
    responses(
        (status = 200, description = "The budget is in force", body = SettingChanged),
        JsonBodyProblems, AuthProblems, AdminProblems,
    ),
)]
async fn set_budget(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(TenantPath { tenant }): PathParams<TenantPath>,
    JsonBody(req): JsonBody<SetBudgetRequest>,
) -> Result<Response, Problem> {
    let r = usage::set_budget(&state, &principal, &tenant, req).await?;
    Ok(positioned(StatusCode::OK, r.position, r))
}
