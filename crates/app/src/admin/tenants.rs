//! Tenant administration: create, list, read, rename or re-plan, suspend and reactivate tenants.
//!
//! Tenants live in streams `_system/tenant/{slug}`: the slug is the tenant's id, and the `tenant`
//! segment of every stream of that tenant. Commands run against the log; reads come from the
//! `tenants` view. Only platform administrators manage tenants; a tenant's own users may read it,
//! and to anyone else another tenant does not exist (never forbidden, so existence does not leak).
//!
//! The platform scope `_system` has no tenant stream, yet it is where platform administrators
//! live, so reads show it beside the tenants (see [`TenantView`]); it cannot be changed.

use custodian_domain::tenant::{self, Plan, Tenant, TenantCommand, TenantError, TenantEvent};
use custodian_projections::tenants::{self as tenant_view, TenantRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::access::{self, Principal};
use crate::auth::index::SYSTEM_TENANT;
use crate::commands::{self, Done};
use crate::error::AppError;
use crate::validate::{check_len, check_tenant, page, parse_limit};
use crate::{App, stream};

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
///
/// The platform scope `_system`, where platform administrators live, is shown as a tenant too,
/// though no tenant stream records it: it is named `Platform`, its plan is `enterprise` (no plan
/// limits the platform, and `enterprise` is the plan with the fewest limits), its status is
/// always `active` (it cannot be suspended), and it was created and last changed when the
/// ledger's first event was recorded (the platform's bootstrap). It cannot be renamed,
/// re-planned, suspended or reactivated.
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

/// A page of tenants, by slug: the platform scope `_system` first (it sorts before every tenant
/// slug, which starts with a letter), then the tenants.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantPage {
    /// The tenants of this page.
    pub items: Vec<TenantView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /v1/tenants` parameters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantListQuery {
    /// Page size, 1 to 200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The display name of the platform scope in tenant listings.
pub const PLATFORM_NAME: &str = "Platform";

/// Creates a tenant (platform administrators). The slug is the tenant's permanent id; `_system`
/// is reserved for the platform, and a slug already taken is a `Conflict`.
pub async fn create(
    app: &App,
    principal: &Principal,
    req: CreateTenantRequest,
) -> Result<TenantChanged, AppError> {
    access::authorize_platform(app, principal, "tenant:create", None)?;
    if req.slug == SYSTEM_TENANT {
        return Err(AppError::invalid(
            "slug: _system is reserved for the platform",
        ));
    }
    check_tenant(&req.slug, false).map_err(|_| {
        AppError::invalid(
            "slug: must be 2 to 63 characters of a-z, 0-9 and '-', starting with a letter",
        )
    })?;
    check_len("name", req.name.trim(), 1, 200)?;
    let command = TenantCommand::Create {
        name: req.name,
        slug: req.slug.clone(),
        plan: req.plan.unwrap_or(PlanName::Free).into(),
    };
    let done = run_tenant(app, principal, &req.slug, |t| {
        tenant::decide(t, command.clone())
    })
    .await?;
    changed(app, done).await
}

/// A page of tenants by slug (platform administrators), the platform scope `_system` first.
pub async fn list(
    app: &App,
    principal: &Principal,
    query: TenantListQuery,
) -> Result<TenantPage, AppError> {
    access::authorize_platform(app, principal, "tenant:read", None)?;
    let limit = parse_limit(query.limit.as_deref())?;
    if let Some(cursor) = &query.cursor {
        check_tenant(cursor, false)
            .map_err(|_| AppError::invalid("cursor is not a cursor this listing returned"))?;
    }
    // `_system` comes first, so a page without a cursor starts with it, and the cursor `_system`
    // resumes at the first tenant. It never reaches the view's query: how a database collates
    // `_` is its own business.
    let first_page = query.cursor.is_none();
    let after = query.cursor.as_deref().filter(|c| *c != SYSTEM_TENANT);
    let tables = app.tables("tenants")?;
    let rows = tenant_view::list_tenants(app.db.pool(), &tables, after, limit + 1).await?;
    let mut items = Vec::with_capacity(rows.len() + 1);
    if first_page {
        items.push(platform(app).await?);
    }
    items.extend(rows.into_iter().map(view));
    let (items, next_cursor) = page(items, limit, |t| &t.slug);
    Ok(TenantPage { items, next_cursor })
}

/// A tenant (platform administrators, and the tenant's own users); `_system` is the platform
/// scope, as listed.
pub async fn get(app: &App, principal: &Principal, tenant: &str) -> Result<TenantView, AppError> {
    check_tenant(tenant, true)?;
    // Every member reads their own tenant's record; reading another's is a platform-wide
    // permission.
    if principal.tenant != tenant {
        access::authorize_platform(app, principal, "tenant:read", Some(tenant))?;
    }
    if tenant == SYSTEM_TENANT {
        return platform(app).await;
    }
    let tables = app.tables("tenants")?;
    tenant_view::find_tenant(app.db.pool(), &tables, tenant)
        .await?
        .map(view)
        .ok_or_else(|| no_tenant(tenant))
}

/// Renames a tenant or changes its plan, or both (platform administrators).
pub async fn update(
    app: &App,
    principal: &Principal,
    tenant: &str,
    req: UpdateTenantRequest,
) -> Result<TenantChanged, AppError> {
    changeable(app, principal, tenant)?;
    if req.name.is_none() && req.plan.is_none() {
        return Err(AppError::invalid("give name, plan, or both"));
    }
    if let Some(name) = &req.name {
        check_len("name", name.trim(), 1, 200)?;
    }
    let done = run_tenant(app, principal, tenant, |t| {
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
    changed(app, done).await
}

/// Suspends a tenant (platform administrators): every session and key of it is refused at once.
/// An already suspended tenant is a `Conflict`.
pub async fn suspend(
    app: &App,
    principal: &Principal,
    tenant: &str,
    req: SuspendTenantRequest,
) -> Result<TenantChanged, AppError> {
    changeable(app, principal, tenant)?;
    check_len("reason", req.reason.trim(), 1, 500)?;
    let done = run_tenant(app, principal, tenant, |t| {
        tenant::decide(
            t,
            TenantCommand::Suspend {
                reason: req.reason.clone(),
            },
        )
    })
    .await?;
    changed(app, done).await
}

/// Reactivates a suspended tenant (platform administrators). An active tenant is a `Conflict`.
pub async fn reactivate(
    app: &App,
    principal: &Principal,
    tenant: &str,
) -> Result<TenantChanged, AppError> {
    changeable(app, principal, tenant)?;
    let done = run_tenant(app, principal, tenant, |t| {
        tenant::decide(t, TenantCommand::Reactivate)
    })
    .await?;
    changed(app, done).await
}

fn no_tenant(tenant: &str) -> AppError {
    AppError::not_found(format!("no tenant {tenant}"))
}

/// A tenant a command may change: a well-formed slug, a caller allowed to change it, and not the
/// platform scope, which has no tenant stream to change.
fn changeable(app: &App, principal: &Principal, tenant: &str) -> Result<(), AppError> {
    check_tenant(tenant, true)?;
    access::authorize_platform(app, principal, "tenant:update", Some(tenant))?;
    if tenant == SYSTEM_TENANT {
        return Err(AppError::conflict(
            "_system is the platform scope, not a tenant: it cannot be renamed, re-planned, \
             suspended or reactivated",
        ));
    }
    Ok(())
}

fn tenant_error(e: TenantError) -> AppError {
    match e {
        TenantError::NotFound => AppError::not_found("no such tenant"),
        TenantError::AlreadyExists => AppError::conflict("a tenant with this slug already exists"),
        TenantError::Invalid { .. } => AppError::invalid(e.to_string()),
        TenantError::WrongStatus(s) => AppError::conflict(format!(
            "the tenant is {}",
            match TenantStatusName::from(s) {
                TenantStatusName::Active => "active",
                TenantStatusName::Suspended => "suspended",
            }
        )),
    }
}

/// Runs a tenant command as `principal`, now.
async fn run_tenant(
    app: &App,
    principal: &Principal,
    slug: &str,
    decide: impl Fn(Option<&Tenant>) -> Result<Vec<TenantEvent>, TenantError>,
) -> Result<Done<Option<Tenant>, TenantEvent>, AppError> {
    let s = stream(SYSTEM_TENANT, "tenant", slug)?;
    commands::execute(
        &app.store,
        Some(&app.states),
        &s,
        &principal.context(app.now()),
        None,
        tenant::evolve,
        |t: &Option<Tenant>| decide(t.as_ref()),
    )
    .await
    .map_err(|e| AppError::from_failed(e, tenant_error))
}

/// The tenant as a command left it, with the position to read it at.
async fn changed(
    app: &App,
    done: Done<Option<Tenant>, TenantEvent>,
) -> Result<TenantChanged, AppError> {
    let position = app
        .answer_position(done.position.unwrap_or_default())
        .await?;
    let t = done
        .state
        .ok_or_else(|| AppError::internal("a tenant command left no tenant"))?;
    Ok(TenantChanged {
        slug: t.slug,
        name: t.name,
        plan: t.plan.into(),
        status: t.status.into(),
        position,
    })
}

fn view(row: TenantRow) -> TenantView {
    TenantView {
        slug: row.tenant_id,
        name: row.name,
        plan: row.plan.into(),
        status: row.status.into(),
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

/// The platform scope as a tenant (see [`TenantView`]): it began with the ledger's first event.
async fn platform(app: &App) -> Result<TenantView, AppError> {
    let began = match app.store.read_all(1, 1).await?.first() {
        Some(first) => first.occurred_at,
        // Nobody can ask before the bootstrap wrote the first event; should someone, the
        // platform begins now.
        None => app.now(),
    };
    Ok(TenantView {
        slug: SYSTEM_TENANT.to_owned(),
        name: PLATFORM_NAME.to_owned(),
        plan: PlanName::Enterprise,
        status: TenantStatusName::Active,
        created_at: began.to_string(),
        updated_at: began.to_string(),
    })
}
