//! Tenant administration: create, list, read, rename or re-plan, suspend and reactivate tenants.
//!
//! Tenants live in streams `_system/tenant/{slug}`: the slug is the tenant's id, and the `tenant`
//! segment of every stream of that tenant. Commands run against the log; reads come from the
//! `tenants` view. Only platform administrators manage tenants; a tenant's own users may read it,
//! and to anyone else another tenant does not exist (404, never 403).
//!
//! This module also holds what the administration endpoints share: path and query extractors that
//! answer with problem documents, page sizes, and access to the views' tables.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use custodian_domain::tenant::{self, Plan, Tenant, TenantCommand, TenantError, TenantEvent};
use custodian_projections::Tables;
use serde::de::{DeserializeOwned, IntoDeserializer};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};

use crate::auth::index::SYSTEM_TENANT;
use crate::commands::{self, Done};
use crate::extract::{PathParams, QueryParams};
use crate::identity::positioned;
use crate::identity::{JsonBody, Principal, check_len, check_tenant, command_problem, now, stream};
use crate::respond::{PROBLEM_JSON, Problem, ProblemDocument};
use crate::state::AppState;

/// The page size when a listing does not say.
pub const DEFAULT_LIMIT: u32 = 50;
/// The largest page a listing returns.
pub const MAX_LIMIT: u32 = 200;

/// Reads a snake_case name into one of the API's enums, as serde would.
pub(crate) fn from_name<T: DeserializeOwned>(name: &str) -> Option<T> {
    T::deserialize(IntoDeserializer::<serde::de::value::Error>::into_deserializer(name)).ok()
}

/// A page size from the query: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
pub(crate) fn parse_limit(limit: Option<&str>) -> Result<u32, Problem> {
    let Some(limit) = limit else {
        return Ok(DEFAULT_LIMIT);
    };
    limit
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or_else(|| {
            Problem::validation(format!("limit must be an integer from 1 to {MAX_LIMIT}"))
        })
}

/// The serving tables of a view; 503 while it has none yet (the server is starting).
pub(crate) fn view_tables(state: &AppState, view: &str) -> Result<Tables, Problem> {
    state
        .projections
        .active_tables(view)
        .ok_or_else(|| Problem::unavailable(format!("the {view} view is not ready yet"), 1))
}

/// A failed view query: the database is unreachable or the tables were swapped under the query;
/// the cause is logged and the client asked to retry.
pub(crate) fn view_problem(e: sqlx::Error) -> Problem {
    Problem::from(custodian_store::StoreError::from(e))
}

/// The position a command answers with: that of its last event, or the log's head when it changed
/// nothing (so that reading with it as `Custodian-Min-Position` still sees the state it left).
pub(crate) async fn answer_position(state: &AppState, written: u64) -> Result<u64, Problem> {
    if written > 0 {
        return Ok(written);
    }
    Ok(state.store.head().await?.position)
}

/// What a tenant pays for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlanName {
    /// The default.
    Free,
    /// Paid, for teams.
    Team,
    /// Paid, for organisations.
    Enterprise,
}

impl From<PlanName> for Plan {
    fn from(p: PlanName) -> Self {
        match p {
            PlanName::Free => Plan::Free,
            PlanName::Team => Plan::Team,
            PlanName::Enterprise => Plan::Enterprise,
        }
    }
}

impl From<Plan> for PlanName {
    fn from(p: Plan) -> Self {
        match p {
            Plan::Free => PlanName::Free,
            Plan::Team => PlanName::Team,
            Plan::Enterprise => PlanName::Enterprise,
        }
    }
}

/// Whether a tenant may act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatusName {
    /// Its sessions and keys work.
    Active,
    /// Every session and key of it is refused.
    Suspended,
}

impl From<tenant::TenantStatus> for TenantStatusName {
    fn from(s: tenant::TenantStatus) -> Self {
        match s {
            tenant::TenantStatus::Active => Self::Active,
            tenant::TenantStatus::Suspended => Self::Suspended,
        }
    }
}

/// `POST /v1/tenants`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantRequest {
    /// The tenant's id: 2 to 63 characters of a-z, 0-9 and `-`, starting with a letter. It names
    /// the tenant in every path and token and cannot change.
    #[schema(example = "acme")]
    pub slug: String,
    /// Display name, 1 to 200 characters.
    #[schema(example = "Acme Corp")]
    pub name: String,
    /// Initial plan; `free` when absent.
    #[serde(default)]
    pub plan: Option<PlanName>,
}

/// `PATCH /v1/tenants/{tenant}`: give at least one field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenantRequest {
    /// New display name, 1 to 200 characters.
    #[serde(default)]
    pub name: Option<String>,
    /// New plan.
    #[serde(default)]
    pub plan: Option<PlanName>,
}

/// `POST /v1/tenants/{tenant}/suspend`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuspendTenantRequest {
    /// Why, for the audit trail: 1 to 500 characters.
    #[schema(example = "unpaid invoices")]
    pub reason: String,
}

/// A tenant command's answer: the tenant as the command left it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantChanged {
    /// The tenant's id.
    #[schema(example = "acme")]
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Plan.
    pub plan: PlanName,
    /// Whether it may act.
    pub status: TenantStatusName,
    /// The log position of the last event written (the log's head when nothing changed); use it as
    /// `Custodian-Min-Position` to read the change.
    pub position: u64,
}

/// A tenant as the `tenants` view holds it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    /// The tenant's id.
    #[schema(example = "acme")]
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Plan.
    pub plan: PlanName,
    /// Whether it may act.
    pub status: TenantStatusName,
    /// When it was created.
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
}

/// A page of tenants, by slug.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantPage {
    /// The tenants of this page.
    pub items: Vec<TenantView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /v1/tenants` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantListQuery {
    /// Page size, 1 to 200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

fn tenant_problem(e: TenantError) -> Problem {
    match e {
        TenantError::NotFound => Problem::not_found("no such tenant"),
        TenantError::AlreadyExists => Problem::conflict("a tenant with this slug already exists"),
        TenantError::Invalid { .. } => Problem::validation(e.to_string()),
        TenantError::WrongStatus(s) => Problem::conflict(format!(
            "the tenant is {}",
            match TenantStatusName::from(s) {
                TenantStatusName::Active => "active",
                TenantStatusName::Suspended => "suspended",
            }
        )),
    }
}

/// A tenant slug from a path, for the tenant's own stream: `_system` and malformed slugs name no
/// tenant stream, so they are 404.
fn tenant_slug(tenant: &str) -> Result<(), Problem> {
    if tenant == SYSTEM_TENANT {
        return Err(Problem::not_found(format!("no tenant {tenant}")));
    }
    Ok(check_tenant(tenant, true)?)
}

/// Lets platform administrators through; a user of `tenant` is refused with 403, anyone else is
/// told the tenant does not exist.
fn require_platform_admin_for(principal: &Principal, tenant: &str) -> Result<(), Problem> {
    if principal.is_platform_admin() {
        Ok(())
    } else if principal.tenant == tenant {
        Ok(principal.require_platform_admin()?)
    } else {
        Err(Problem::not_found(format!("no tenant {tenant}")))
    }
}

/// Runs a tenant command.
async fn run_tenant(
    state: &AppState,
    principal: &Principal,
    slug: &str,
    decide: impl Fn(Option<&Tenant>) -> Result<Vec<TenantEvent>, TenantError>,
) -> Result<Done<Option<Tenant>, TenantEvent>, Problem> {
    let s = stream(SYSTEM_TENANT, "tenant", slug)?;
    commands::execute(
        &state.store,
        Some(&state.states),
        &s,
        &principal.context(now()),
        None,
        tenant::evolve,
        |t: &Option<Tenant>| decide(t.as_ref()),
    )
    .await
    .map_err(|e| command_problem(e, tenant_problem))
}

async fn changed(
    state: &AppState,
    status: StatusCode,
    done: Done<Option<Tenant>, TenantEvent>,
) -> Result<Response, Problem> {
    let position = answer_position(state, done.position.unwrap_or_default()).await?;
    let t = done
        .state
        .ok_or_else(|| Problem::internal("a tenant command left no tenant"))?;
    Ok(positioned(
        status,
        position,
        TenantChanged {
            slug: t.slug,
            name: t.name,
            plan: t.plan.into(),
            status: t.status.into(),
            position,
        },
    ))
}

fn tenant_view(row: &sqlx::any::AnyRow) -> Result<TenantView, Problem> {
    let text = |i: usize| -> Result<String, Problem> { row.try_get(i).map_err(view_problem) };
    let plan = text(2)?;
    let status = text(3)?;
    Ok(TenantView {
        slug: text(0)?,
        name: text(1)?,
        plan: from_name(&plan)
            .ok_or_else(|| Problem::internal(format!("unknown plan {plan} in the view")))?,
        status: from_name(&status)
            .ok_or_else(|| Problem::internal(format!("unknown status {status} in the view")))?,
        created_at: text(4)?,
        updated_at: text(5)?,
    })
}

/// Tenants from the view, by slug: `only` one, or up to `limit` after `after`.
async fn tenant_rows(
    state: &AppState,
    only: Option<&str>,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<TenantView>, Problem> {
    let tables = view_tables(state, "tenants")?;
    let mut sql = format!(
        "SELECT tenant_id, name, plan, status, created_at, updated_at FROM {}",
        tables.name("tenants")
    );
    let mut binds = vec![];
    for (test, value) in [("tenant_id =", only), ("tenant_id >", after)] {
        if let Some(value) = value {
            binds.push(value);
            let joiner = if binds.len() == 1 { "WHERE" } else { "AND" };
            sql.push_str(&format!(" {joiner} {test} ${}", binds.len()));
        }
    }
    sql.push_str(&format!(" ORDER BY tenant_id LIMIT ${}", binds.len() + 1));
    let mut query = sqlx::query(&sql);
    for b in binds {
        query = query.bind(b);
    }
    query
        .bind(i64::from(limit))
        .fetch_all(state.db.pool())
        .await
        .map_err(view_problem)?
        .iter()
        .map(tenant_view)
        .collect()
}

/// Create a tenant (platform administrators).
///
/// The slug is the tenant's permanent id. A slug already taken is 409.
#[utoipa::path(
    post,
    path = "/v1/tenants",
    tag = "tenants",
    security(("bearer" = [])),
    request_body = CreateTenantRequest,
    responses(
        (status = 201, description = "The tenant exists; `Custodian-Position` names its event", body = TenantChanged),
        (status = 400, description = "Malformed JSON", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 401, description = "No valid access token", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = "The caller is not a platform administrator", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 409, description = "A tenant with this slug already exists (code `conflict`)", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 413, description = "Body too large", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 415, description = "The body is not `application/json`", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 422, description = "A field is missing, of the wrong type, unknown, or invalid (the slug `_system` is reserved)", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 503, description = "The store or the authentication index is busy; retry after `Retry-After`", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
pub async fn create_tenant(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(req): JsonBody<CreateTenantRequest>,
) -> Result<Response, Problem> {
    principal.require_platform_admin()?;
    if req.slug == SYSTEM_TENANT {
        return Err(Problem::validation(
            "slug: _system is reserved for the platform",
        ));
    }
    check_tenant(&req.slug, false).map_err(|_| {
        Problem::validation(
            "slug: must be 2 to 63 characters of a-z, 0-9 and '-', starting with a letter",
        )
    })?;
    check_len("name", req.name.trim(), 1, 200)?;
    let command = TenantCommand::Create {
        name: req.name.clone(),
        slug: req.slug.clone(),
        plan: req.plan.unwrap_or(PlanName::Free).into(),
    };
    let done = run_tenant(&state, &principal, &req.slug, |t| {
        tenant::decide(t, command.clone())
    })
    .await?;
    changed(&state, StatusCode::CREATED, done).await
}

/// List tenants by slug (platform administrators).
#[utoipa::path(
    get,
    path = "/v1/tenants",
    tag = "tenants",
    security(("bearer" = [])),
    params(TenantListQuery),
    responses(
        (status = 200, description = "A page of tenants", body = TenantPage),
        (status = 401, description = "No valid access token", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = "The caller is not a platform administrator", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 422, description = "`limit` or `cursor` is invalid", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 503, description = "The view is not ready or the database is busy; retry after `Retry-After`", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
pub async fn list_tenants(
    State(state): State<AppState>,
    principal: Principal,
    QueryParams(q): QueryParams<TenantListQuery>,
) -> Result<axum::Json<TenantPage>, Problem> {
    principal.require_platform_admin()?;
    let limit = parse_limit(q.limit.as_deref())?;
    if let Some(cursor) = &q.cursor {
        check_tenant(cursor, false)
            .map_err(|_| Problem::validation("cursor is not a cursor this listing returned"))?;
    }
    let mut items = tenant_rows(&state, None, q.cursor.as_deref(), limit + 1).await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|t| t.slug.clone())
    } else {
        None
    };
    Ok(axum::Json(TenantPage { items, next_cursor }))
}

/// Read a tenant (platform administrators, and the tenant's own users).
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}",
    tag = "tenants",
    security(("bearer" = [])),
    params(("tenant" = String, Path, description = "The tenant's slug")),
    responses(
        (status = 200, description = "The tenant", body = TenantView),
        (status = 401, description = "No valid access token", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 404, description = "No such tenant, or not one the caller may see", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 503, description = "The view is not ready or the database is busy; retry after `Retry-After`", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
pub async fn get_tenant(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(tenant): PathParams<String>,
) -> Result<axum::Json<TenantView>, Problem> {
    tenant_slug(&tenant)?;
    if !principal.is_platform_admin() && principal.tenant != tenant {
        return Err(Problem::not_found(format!("no tenant {tenant}")));
    }
    tenant_rows(&state, Some(&tenant), None, 1)
        .await?
        .pop()
        .map(axum::Json)
        .ok_or_else(|| Problem::not_found(format!("no tenant {tenant}")))
}

/// Rename a tenant or change its plan (platform administrators).
#[utoipa::path(
    patch,
    path = "/v1/tenants/{tenant}",
    tag = "tenants",
    security(("bearer" = [])),
    params(("tenant" = String, Path, description = "The tenant's slug")),
    request_body = UpdateTenantRequest,
    responses(
        (status = 200, description = "The tenant as changed", body = TenantChanged),
        (status = 400, description = "Malformed JSON", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 401, description = "No valid access token", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = "The caller is a user of this tenant but not a platform administrator", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 404, description = "No such tenant", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 413, description = "Body too large", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 415, description = "The body is not `application/json`", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 422, description = "No field given, or a field is of the wrong type, unknown, or invalid", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 503, description = "The store or the authentication index is busy; retry after `Retry-After`", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
pub async fn update_tenant(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(tenant): PathParams<String>,
    JsonBody(req): JsonBody<UpdateTenantRequest>,
) -> Result<Response, Problem> {
    tenant_slug(&tenant)?;
    require_platform_admin_for(&principal, &tenant)?;
    if req.name.is_none() && req.plan.is_none() {
        return Err(Problem::validation("give name, plan, or both"));
    }
    if let Some(name) = &req.name {
        check_len("name", name.trim(), 1, 200)?;
    }
    let done = run_tenant(&state, &principal, &tenant, |t| {
        let mut events = vec![];
        let mut current = t.cloned();
        if let Some(name) = &req.name {
            let renamed = tenant::decide(
                current.as_ref(),
                TenantCommand::Rename { name: name.clone() },
            )?;
            current = renamed.iter().fold(current, tenant::evolve);
            events.extend(renamed);
        }
        if let Some(plan) = req.plan {
            events.extend(tenant::decide(
                current.as_ref(),
                TenantCommand::ChangePlan { plan: plan.into() },
            )?);
        }
        Ok(events)
    })
    .await?;
    changed(&state, StatusCode::OK, done).await
}

/// Suspend a tenant (platform administrators): every session and key of it is refused at once.
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/suspend",
    tag = "tenants",
    security(("bearer" = [])),
    params(("tenant" = String, Path, description = "The tenant's slug")),
    request_body = SuspendTenantRequest,
    responses(
        (status = 200, description = "The tenant is suspended", body = TenantChanged),
        (status = 400, description = "Malformed JSON", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 401, description = "No valid access token", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = "The caller is a user of this tenant but not a platform administrator", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 404, description = "No such tenant", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 409, description = "The tenant is already suspended", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 413, description = "Body too large", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 415, description = "The body is not `application/json`", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 422, description = "`reason` is missing or not 1 to 500 characters", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 503, description = "The store or the authentication index is busy; retry after `Retry-After`", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
pub async fn suspend_tenant(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(tenant): PathParams<String>,
    JsonBody(req): JsonBody<SuspendTenantRequest>,
) -> Result<Response, Problem> {
    tenant_slug(&tenant)?;
    require_platform_admin_for(&principal, &tenant)?;
    check_len("reason", req.reason.trim(), 1, 500)?;
    let done = run_tenant(&state, &principal, &tenant, |t| {
        tenant::decide(
            t,
            TenantCommand::Suspend {
                reason: req.reason.clone(),
            },
        )
    })
    .await?;
    changed(&state, StatusCode::OK, done).await
}

/// Reactivate a suspended tenant (platform administrators).
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/reactivate",
    tag = "tenants",
    security(("bearer" = [])),
    params(("tenant" = String, Path, description = "The tenant's slug")),
    responses(
        (status = 200, description = "The tenant is active", body = TenantChanged),
        (status = 401, description = "No valid access token", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = "The caller is a user of this tenant but not a platform administrator", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 404, description = "No such tenant", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 409, description = "The tenant is not suspended", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 503, description = "The store or the authentication index is busy; retry after `Retry-After`", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
pub async fn reactivate_tenant(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(tenant): PathParams<String>,
) -> Result<Response, Problem> {
    tenant_slug(&tenant)?;
    require_platform_admin_for(&principal, &tenant)?;
    let done = run_tenant(&state, &principal, &tenant, |t| {
        tenant::decide(t, TenantCommand::Reactivate)
    })
    .await?;
    changed(&state, StatusCode::OK, done).await
}
