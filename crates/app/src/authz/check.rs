//! The decision point: checks, one or a batch, now or as the ledger stood at a past instant, and
//! the lookups that list what a principal may do and who may act on a resource.

use std::net::IpAddr;

use custodian_domain::Timestamp;
use custodian_domain::policy::{
    AsOf, Check, DecisionEvent, MatchKind, Matched, Permission, Resource, Target, Verdict,
    effective, holders,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::index::When;
use super::manage::{ConditionsBody, EffectBody, ScopeBody};
use crate::App;
use crate::access::{Principal, authorize};
use crate::error::AppError;
use crate::validate::{parse_permission, parse_resource, parse_time};

/// Most checks in one batch.
pub const MAX_BATCH: usize = 1_000;

/// The context of a check.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckContext {
    /// The address the principal's request came from, for `source_ip` conditions.
    #[serde(default)]
    #[schema(example = "10.1.2.3")]
    pub ip: Option<String>,
    /// The time of the principal's request (RFC 3339), for windows and time-of-day conditions;
    /// the check's own time when absent.
    #[serde(default)]
    pub time: Option<String>,
}

/// `POST /v1/tenants/{tenant}/check`
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// Who: a principal's id.
    pub principal: String,
    /// What: `resource_type:action`.
    #[schema(example = "project:read")]
    pub permission: String,
    /// On what: `type/id`.
    #[schema(example = "project/p42")]
    pub resource: String,
    /// The request's context.
    #[serde(default)]
    pub context: Option<CheckContext>,
    /// Decide as the ledger stood at this past instant (RFC 3339) instead of now.
    #[serde(default)]
    pub at: Option<String>,
    /// Also list every candidate grant and why it did or did not apply.
    #[serde(default)]
    pub explain: Option<bool>,
}

/// `POST /v1/tenants/{tenant}/check/batch`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1 to 1,000 checks.
    pub checks: Vec<CheckRequest>,
}

/// One link of a decision's provenance.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MatchedView {
    /// `grant`, `assignment`, `role` (a role reached, by inheritance or assignment), `group` (the
    /// resource's membership), `principal` (the event that took the principal out of service) or
    /// `tenant` (its suspension).
    #[schema(example = "grant")]
    pub kind: &'static str,
    /// The grant's or assignment's id, or the role's, group's, principal's or tenant's name.
    pub id: String,
    /// The position of the event that made it so (0: defined by the service, as the built-in
    /// roles and their permissions are).
    pub position: u64,
}

impl From<Matched> for MatchedView {
    fn from(m: Matched) -> Self {
        Self {
            kind: match m.kind {
                MatchKind::Grant => "grant",
                MatchKind::Assignment => "assignment",
                MatchKind::Role => "role",
                MatchKind::Group => "group",
                MatchKind::Principal => "principal",
                MatchKind::Tenant => "tenant",
            },
            id: m.id,
            position: m.position,
        }
    }
}

/// `allow` or `deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VerdictView {
    /// Allowed.
    Allow,
    /// Denied.
    Deny,
}

impl From<Verdict> for VerdictView {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Allow => Self::Allow,
            Verdict::Deny => Self::Deny,
        }
    }
}

/// One decision.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CheckResult {
    /// The answer.
    pub decision: VerdictView,
    /// Why, in words.
    pub reason: String,
    /// The chain that decided, in order: assignment, roles, group membership, grant (empty when
    /// nothing allowed it).
    pub matched: Vec<MatchedView>,
    /// With `explain`: every candidate and why it did or did not apply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<Vec<String>>,
}

/// The answer to a check.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckAnswer {
    /// The decision.
    #[serde(flatten)]
    pub result: CheckResult,
    /// The log position it was evaluated at: the index's for a check of now, the instant's for
    /// a check with `at`.
    pub position: u64,
}

/// The answers to a batch, in the order asked.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchAnswer {
    /// One result per check.
    pub results: Vec<CheckResult>,
    /// The log position every check of the batch was evaluated at (checks with `at` were
    /// evaluated as the ledger stood then).
    pub position: u64,
}

/// A check, parsed.
struct Parsed {
    principal: String,
    permission: Permission,
    resource: Resource,
    ip: Option<IpAddr>,
    time: Timestamp,
    at: Option<Timestamp>,
    explain: bool,
}

fn parse(app: &App, req: CheckRequest, field: &str) -> Result<Parsed, AppError> {
    let now = app.now();
    let permission = parse_permission(&format!("{field}permission"), &req.permission)?;
    if !permission.is_concrete() {
        return Err(AppError::invalid(format!(
            "{field}permission: a check asks about one action on one type; {permission} has a *"
        )));
    }
    let resource = parse_resource(&format!("{field}resource"), &req.resource)?;
    if req.principal.is_empty() || req.principal.len() > 200 {
        return Err(AppError::invalid(format!(
            "{field}principal: a principal id of 1-200 characters"
        )));
    }
    let context = req.context.unwrap_or_default();
    let ip = context
        .ip
        .as_deref()
        .map(|ip| {
            ip.parse::<IpAddr>().map_err(|_| {
                AppError::invalid(format!("{field}context.ip: {ip:.64?} is not an IP address"))
            })
        })
        .transpose()?;
    let at = parse_time(&format!("{field}at"), req.at.as_deref())?;
    if at.is_some_and(|at| at > now) {
        return Err(AppError::invalid(format!(
            "{field}at: the ledger cannot answer for the future; give a past instant"
        )));
    }
    let time = parse_time(&format!("{field}context.time"), context.time.as_deref())?
        .or(at)
        .unwrap_or(now);
    Ok(Parsed {
        principal: req.principal,
        permission,
        resource,
        ip,
        time,
        at,
        explain: req.explain.unwrap_or(false),
    })
}

fn as_of(app: &App, p: &Parsed) -> Result<AsOf, AppError> {
    let mut as_of = app.policy.as_of(match p.at {
        Some(at) => When::At(at),
        None => When::Now(p.time),
    })?;
    as_of.time = p.time;
    Ok(as_of)
}

fn result(d: custodian_domain::policy::Decision, explain: bool) -> CheckResult {
    CheckResult {
        decision: d.verdict.into(),
        reason: d.reason,
        matched: d.matched.into_iter().map(MatchedView::from).collect(),
        trace: explain.then_some(d.trace),
    }
}

async fn record(
    app: &App,
    principal: &Principal,
    tenant: &str,
    p: &Parsed,
    r: &CheckResult,
    position: u64,
) {
    let event = DecisionEvent::Recorded {
        principal: p.principal.clone(),
        permission: p.permission.clone(),
        resource: p.resource.clone(),
        decision: match r.decision {
            VerdictView::Allow => Verdict::Allow,
            VerdictView::Deny => Verdict::Deny,
        },
        reason: r.reason.clone(),
        matched: r.matched.iter().map(|m| m.id.clone()).collect(),
        at: p.at,
        position,
        ip: p.ip.map(|ip| ip.to_string()),
    };
    app.decisions
        .record(tenant, &principal.context(app.now()), event)
        .await;
}

/// May `req.principal` do `req.permission` on `req.resource` in `tenant`, now or at `req.at`?
/// Needs `decision:execute`. The decision is recorded in the decision log as its mode says.
pub async fn check(
    app: &App,
    principal: &Principal,
    tenant: &str,
    req: CheckRequest,
) -> Result<CheckAnswer, AppError> {
    authorize(app, principal, tenant, "decision:execute", Target::Tenant)?;
    let p = parse(app, req, "")?;
    let as_of = as_of(app, &p)?;
    let (decision, position) = app.policy.decide(
        tenant,
        &Check {
            principal: &p.principal,
            permission: &p.permission,
            target: Target::Resource(&p.resource),
            ip: p.ip,
            as_of,
            explain: p.explain,
        },
    )?;
    let result = result(decision, p.explain);
    record(app, principal, tenant, &p, &result, position).await;
    Ok(CheckAnswer { result, position })
}

/// Up to [`MAX_BATCH`] checks, evaluated against one state of the index. Needs
/// `decision:execute`.
pub async fn check_batch(
    app: &App,
    principal: &Principal,
    tenant: &str,
    req: BatchRequest,
) -> Result<BatchAnswer, AppError> {
    authorize(app, principal, tenant, "decision:execute", Target::Tenant)?;
    if req.checks.is_empty() || req.checks.len() > MAX_BATCH {
        return Err(AppError::invalid(format!(
            "checks: give 1 to {MAX_BATCH} checks"
        )));
    }
    let parsed = req
        .checks
        .into_iter()
        .enumerate()
        .map(|(i, c)| parse(app, c, &format!("checks[{i}].")))
        .collect::<Result<Vec<_>, _>>()?;
    let as_ofs = parsed
        .iter()
        .map(|p| as_of(app, p))
        .collect::<Result<Vec<_>, _>>()?;
    let checks: Vec<Check<'_>> = parsed
        .iter()
        .zip(&as_ofs)
        .map(|(p, as_of)| Check {
            principal: &p.principal,
            permission: &p.permission,
            target: Target::Resource(&p.resource),
            ip: p.ip,
            as_of: *as_of,
            explain: p.explain,
        })
        .collect();
    let (decisions, position) = app.policy.decide_all(tenant, &checks)?;
    let mut results = Vec::with_capacity(decisions.len());
    for ((d, p), as_of) in decisions.into_iter().zip(&parsed).zip(&as_ofs) {
        let r = result(d, p.explain);
        record(app, principal, tenant, p, &r, as_of.position.min(position)).await;
        results.push(r);
    }
    Ok(BatchAnswer { results, position })
}

// ---------------------------------------------------------------------------------------------
// Lookups.

/// A permission that reaches a principal, and where it comes from.
#[derive(Debug, Serialize, ToSchema)]
pub struct EffectivePermission {
    /// `resource_type:action`, possibly with `*`.
    pub permission: String,
    /// Allow or deny.
    pub effect: EffectBody,
    /// The grant's scope (absent: the whole tenant).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on: Option<ScopeBody>,
    /// The scope of the assignment it comes through, which narrows the grant's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignment_on: Option<ScopeBody>,
    /// The grant's conditions, evaluated at each check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conditions: Option<ConditionsBody>,
    /// In force until, if bounded.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub valid_until: Option<Timestamp>,
    /// Where it comes from: the assignment and the roles it goes through, then the grant.
    pub source: Vec<MatchedView>,
}

/// What a principal may do.
#[derive(Debug, Serialize, ToSchema)]
pub struct PermissionsView {
    /// The principal.
    pub principal: String,
    /// Whether it holds the platform's root role (everything, everywhere).
    pub platform_admin: bool,
    /// Every grant that reaches it now.
    pub permissions: Vec<EffectivePermission>,
    /// For a key: its scopes. It may use only what both a permission listed here and one of
    /// these scopes cover (and its `on`); grants no scope overlaps are left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// The log position the answer reflects.
    pub position: u64,
}

fn permissions_of(
    app: &App,
    tenant: &str,
    principal: &str,
) -> Result<Vec<EffectivePermission>, AppError> {
    let now = AsOf::now(app.now());
    app.policy.read(tenant, |p| {
        effective(p, principal, now)
            .into_iter()
            .map(|e| {
                let mut source: Vec<MatchedView> =
                    e.via.into_iter().map(MatchedView::from).collect();
                source.push(MatchedView {
                    kind: "grant",
                    id: e.grant.id.clone(),
                    position: e.grant.created.position,
                });
                EffectivePermission {
                    permission: e.grant.permission.to_string(),
                    effect: e.grant.effect.into(),
                    on: e.grant.on.as_ref().map(ScopeBody::from),
                    assignment_on: e.assignment_on.map(ScopeBody::from),
                    conditions: e.grant.conditions.as_ref().map(ConditionsBody::from),
                    valid_until: e.grant.window.valid_until,
                    source,
                }
            })
            .collect()
    })
}

/// The effective permissions of `principal_id` in `tenant`, each with where it comes from. Needs
/// `grant:read`.
pub async fn principal_permissions(
    app: &App,
    principal: &Principal,
    tenant: &str,
    principal_id: &str,
) -> Result<PermissionsView, AppError> {
    authorize(app, principal, tenant, "grant:read", Target::Tenant)?;
    if app.security.index.user(tenant, principal_id).is_none() {
        return Err(AppError::not_found(format!(
            "no principal {principal_id:.64} in tenant {tenant}"
        )));
    }
    let platform_admin = app
        .security
        .index
        .user(tenant, principal_id)
        .is_some_and(|u| {
            tenant == crate::auth::index::SYSTEM_TENANT
                && u.roles
                    .iter()
                    .any(|r| r == custodian_domain::user::ROLE_PLATFORM_ADMIN)
        });
    Ok(PermissionsView {
        principal: principal_id.to_owned(),
        platform_admin,
        permissions: permissions_of(app, tenant, principal_id)?,
        scopes: None,
        position: app.policy.applied(),
    })
}

/// The caller's own effective permissions in their tenant; needs nothing.
/// With a key, they are its owner's narrowed to the key: the key is the principal, it is never
/// a platform administrator, and only grants its scopes overlap are listed (denials always are).
pub async fn my_permissions(app: &App, principal: &Principal) -> Result<PermissionsView, AppError> {
    let mut permissions = permissions_of(app, &principal.tenant, &principal.user_id)?;
    let Some(key) = &principal.key else {
        return Ok(PermissionsView {
            principal: principal.user_id.clone(),
            platform_admin: principal.is_platform_admin(),
            permissions,
            scopes: None,
            position: app.policy.applied(),
        });
    };
    permissions.retain(|p| {
        p.effect == EffectBody::Deny
            || Permission::parse(&p.permission)
                .is_ok_and(|granted| key.scopes.iter().any(|s| overlaps(s, &granted)))
    });
    Ok(PermissionsView {
        principal: key.id.clone(),
        platform_admin: false,
        permissions,
        scopes: Some(key.scopes.iter().map(ToString::to_string).collect()),
        position: app.policy.applied(),
    })
}

/// Whether some permission is covered by both patterns.
fn overlaps(a: &Permission, b: &Permission) -> bool {
    let part = |x: &str, y: &str| x == "*" || y == "*" || x == y;
    part(&a.resource_type, &b.resource_type) && part(&a.action, &b.action)
}

/// One principal's permission on a resource.
#[derive(Debug, Serialize, ToSchema)]
pub struct Holder {
    /// The principal.
    pub principal: String,
    /// The permission, as granted (possibly with `*`).
    pub permission: String,
    /// The chain that allows it.
    pub matched: Vec<MatchedView>,
}

/// Who may do what on a resource.
#[derive(Debug, Serialize, ToSchema)]
pub struct HoldersView {
    /// The resource, `type/id`.
    pub resource: String,
    /// Every principal and permission allowed on it now (platform administrators, who may do
    /// everything everywhere, are not listed).
    pub principals: Vec<Holder>,
    /// The log position the answer reflects.
    pub position: u64,
}

/// Who may do what on `resource_type/resource_id` in `tenant` now. Needs `grant:read`.
pub async fn resource_principals(
    app: &App,
    principal: &Principal,
    tenant: &str,
    resource_type: &str,
    resource_id: &str,
) -> Result<HoldersView, AppError> {
    authorize(app, principal, tenant, "grant:read", Target::Tenant)?;
    let resource = parse_resource("resource", &format!("{resource_type}/{resource_id}"))?;
    let now = AsOf::now(app.now());
    let principals = app.policy.read(tenant, |p| {
        holders(p, &resource, now)
            .into_iter()
            .map(|(who, permission, d)| Holder {
                principal: who.to_owned(),
                permission: permission.to_string(),
                matched: d.matched.into_iter().map(MatchedView::from).collect(),
            })
            .collect()
    })?;
    Ok(HoldersView {
        resource: resource.to_string(),
        principals,
        position: app.policy.applied(),
    })
}
