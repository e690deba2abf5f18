//! Managing a tenant's policy: its catalog, roles, grants, assignments and resource groups.
//!
//! Every use case here authorizes its caller through [`access::authorize`], and the ones that
//! give something away (grants, assignments) also check that the caller holds what they give.

use std::collections::{BTreeMap, BTreeSet};

use custodian_domain::Timestamp;
use custodian_domain::id::{is_type_id, type_id};
use custodian_domain::policy::{
    AsOf, BUILTIN_ROLES, Conditions, Effect, Hours, PolicyCommand, PolicyEvent, Scope, Subject,
    Target, TimeOfDay, Window, builtin_role,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use custodian_projections::policy as view;

use super::run;
use crate::App;
use crate::access::{self, Principal, authorize};
use crate::error::AppError;
use crate::validate::{parse_permission, parse_resource, parse_time};

// ---------------------------------------------------------------------------------------------
// Shapes shared by requests and answers.

/// Who a grant is to: `{"principal": id}` or `{"role": name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SubjectBody {
    /// A principal: a user, agent or service of the tenant, by id.
    Principal(String),
    /// Every holder of a role, by name.
    Role(String),
}

impl From<SubjectBody> for Subject {
    fn from(s: SubjectBody) -> Self {
        match s {
            SubjectBody::Principal(p) => Subject::Principal(p),
            SubjectBody::Role(r) => Subject::Role(r),
        }
    }
}

impl From<&Subject> for SubjectBody {
    fn from(s: &Subject) -> Self {
        match s {
            Subject::Principal(p) => Self::Principal(p.clone()),
            Subject::Role(r) => Self::Role(r.clone()),
        }
    }
}

/// What a grant or an assignment covers: `{"resource": "type/id"}`, `{"resource_type": t}` or
/// `{"group": g}`. Absent: the whole tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ScopeBody {
    /// One resource, `type/id`.
    #[schema(example = "project/p42")]
    Resource(String),
    /// Every resource of a type.
    ResourceType(String),
    /// Every member of a resource group.
    Group(String),
}

impl ScopeBody {
    fn parse(self) -> Result<Scope, AppError> {
        Ok(match self {
            Self::Resource(r) => Scope::Resource(parse_resource("on.resource", &r)?),
            Self::ResourceType(t) => Scope::ResourceType(t),
            Self::Group(g) => Scope::Group(g),
        })
    }
}

impl From<&Scope> for ScopeBody {
    fn from(s: &Scope) -> Self {
        match s {
            Scope::Resource(r) => Self::Resource(r.to_string()),
            Scope::ResourceType(t) => Self::ResourceType(t.clone()),
            Scope::Group(g) => Self::Group(g.clone()),
        }
    }
}

/// Local hours in an IANA time zone; `until` before `from` spans midnight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoursBody {
    /// Start, `HH:MM`, inclusive.
    #[schema(example = "09:00")]
    pub from: String,
    /// End, `HH:MM`, exclusive.
    #[schema(example = "17:30")]
    pub until: String,
    /// An IANA time zone.
    #[schema(example = "Europe/Paris")]
    pub time_zone: String,
}

/// Extra requirements on a check's context.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConditionsBody {
    /// The grant applies only within these local hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_of_day: Option<HoursBody>,
    /// The grant applies only to checks whose context `ip` is in one of these CIDR ranges. An
    /// allow with this condition does not apply to a check without an address; a deny does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = json!(["10.0.0.0/8"]))]
    pub source_ip: Option<Vec<String>>,
}

impl ConditionsBody {
    fn parse(self) -> Result<Conditions, AppError> {
        let time_of_day = match self.time_of_day {
            Some(h) => Some(Hours {
                from: TimeOfDay::parse(&h.from)
                    .map_err(|m| AppError::invalid(format!("conditions.time_of_day.from: {m}")))?,
                until: TimeOfDay::parse(&h.until)
                    .map_err(|m| AppError::invalid(format!("conditions.time_of_day.until: {m}")))?,
                time_zone: h.time_zone,
            }),
            None => None,
        };
        let source_ip = match self.source_ip {
            Some(ranges) => Some(
                ranges
                    .iter()
                    .map(|r| {
                        r.parse::<ipnet::IpNet>()
                            .or_else(|_| r.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                            .map_err(|_| {
                                AppError::invalid(format!(
                                    "conditions.source_ip: {r:.64?} is not a CIDR range"
                                ))
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            None => None,
        };
        Ok(Conditions {
            time_of_day,
            source_ip,
        })
    }
}

impl From<&Conditions> for ConditionsBody {
    fn from(c: &Conditions) -> Self {
        Self {
            time_of_day: c.time_of_day.as_ref().map(|h| HoursBody {
                from: h.from.to_string(),
                until: h.until.to_string(),
                time_zone: h.time_zone.clone(),
            }),
            source_ip: c
                .source_ip
                .as_ref()
                .map(|r| r.iter().map(ToString::to_string).collect()),
        }
    }
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EffectBody {
    /// Allows, unless a deny applies.
    #[default]
    Allow,
    /// Denies, whatever allows.
    Deny,
}

impl From<EffectBody> for Effect {
    fn from(e: EffectBody) -> Self {
        match e {
            EffectBody::Allow => Effect::Allow,
            EffectBody::Deny => Effect::Deny,
        }
    }
}

impl From<Effect> for EffectBody {
    fn from(e: Effect) -> Self {
        match e {
            Effect::Allow => Self::Allow,
            Effect::Deny => Self::Deny,
        }
    }
}

/// A command's answer: the id it made, and the position of its last event.
#[derive(Debug, Serialize, ToSchema)]
pub struct Made {
    /// `grant_...` or `asg_...`.
    pub id: String,
    /// The log position of the last event written (`Custodian-Min-Position` for reads).
    pub position: u64,
}

/// A command's answer when it made nothing new: the position to read with.
#[derive(Debug, Serialize, ToSchema)]
pub struct Written {
    /// The log position of the last event written, or the head when nothing changed.
    pub position: u64,
}

fn window(from: Option<&str>, until: Option<&str>) -> Result<Window, AppError> {
    Ok(Window {
        valid_from: parse_time("valid_from", from)?,
        valid_until: parse_time("valid_until", until)?,
    })
}

/// A principal named in the policy must be a user of the tenant (404 otherwise, as for any object
/// the caller cannot see).
fn known_principal(app: &App, tenant: &str, principal: &str) -> Result<(), AppError> {
    if is_type_id("user", principal) && app.security.index.user(tenant, principal).is_some() {
        Ok(())
    } else {
        Err(AppError::not_found(format!(
            "no principal {principal:.64} in tenant {tenant}"
        )))
    }
}

fn actor_id(principal: &Principal) -> String {
    principal.user_id.clone()
}

// ---------------------------------------------------------------------------------------------
// Catalog.

/// `PUT /v1/tenants/{tenant}/catalog`: the tenant's own resource types and their actions, in
/// full (what is not listed is no longer registered; existing grants stay and keep working).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogRequest {
    /// Resource type → actions.
    #[schema(example = json!({"project": ["read", "write", "deploy"], "billing": ["read", "export"]}))]
    pub resource_types: BTreeMap<String, BTreeSet<String>>,
}

/// A tenant's permission catalog.
#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogView {
    /// The service's own types and their actions, the same in every tenant.
    pub builtin: BTreeMap<String, Vec<String>>,
    /// The tenant's own types and their actions.
    pub resource_types: BTreeMap<String, Vec<String>>,
    /// The log position the answer reflects.
    pub position: u64,
}

fn catalog_view(app: &App, tenant: &str, position: u64) -> Result<CatalogView, AppError> {
    let custom = app.policy.read(tenant, |p| p.catalog.custom.clone())?;
    Ok(CatalogView {
        builtin: custodian_domain::policy::BUILTIN_TYPES
            .iter()
            .map(|(t, a)| ((*t).to_owned(), a.iter().map(|s| (*s).to_owned()).collect()))
            .collect(),
        resource_types: custom
            .into_iter()
            .map(|(t, a)| (t, a.into_iter().collect()))
            .collect(),
        position,
    })
}

/// Replace the tenant's own part of the catalog. Needs `tenant:update`.
pub async fn set_catalog(
    app: &App,
    principal: &Principal,
    tenant: &str,
    req: CatalogRequest,
) -> Result<CatalogView, AppError> {
    authorize(app, principal, tenant, "tenant:update", Target::Tenant)?;
    let ctx = principal.context(app.now());
    let done = run(app, tenant, &ctx, |_| {
        Ok(PolicyCommand::SetCatalog {
            resource_types: req.resource_types.clone(),
        })
    })
    .await?;
    catalog_view(app, tenant, done.position)
}

/// The tenant's catalog. Needs `role:read`.
pub async fn catalog(
    app: &App,
    principal: &Principal,
    tenant: &str,
) -> Result<CatalogView, AppError> {
    authorize(app, principal, tenant, "role:read", Target::Tenant)?;
    catalog_view(app, tenant, app.policy.applied())
}

// ---------------------------------------------------------------------------------------------
// Roles.

/// `POST /v1/tenants/{tenant}/roles`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRoleRequest {
    /// 1-63 of a-z, 0-9, `_` and `-`, starting with a letter; unique in the tenant.
    #[schema(example = "release-manager")]
    pub name: String,
    /// What it is for, at most 500 characters.
    #[serde(default)]
    pub description: Option<String>,
    /// The roles whose permissions it inherits.
    #[serde(default)]
    #[schema(example = json!(["developer"]))]
    pub parents: Option<Vec<String>>,
}

/// `PATCH /v1/tenants/{tenant}/roles/{role}`: give at least one field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRoleRequest {
    /// A new description (`null` clears it).
    #[serde(default, deserialize_with = "crate::validate::double_option")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    /// The new parents, in full.
    #[serde(default)]
    pub parents: Option<Vec<String>>,
}

/// A role.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoleView {
    /// Its name.
    pub name: String,
    /// What it is for.
    pub description: Option<String>,
    /// The roles it inherits.
    pub parents: Vec<String>,
    /// Whether the service defines it (built-in roles cannot be changed or deleted).
    pub builtin: bool,
    /// The permissions granted to the role itself on the whole tenant, without conditions or
    /// windows (inherited ones are its parents').
    pub permissions: Vec<String>,
    /// The log position the answer reflects.
    pub position: u64,
}

fn role_view(app: &App, tenant: &str, name: &str, position: u64) -> Result<RoleView, AppError> {
    let now = AsOf::now(app.now());
    app.policy
        .read(tenant, |p| {
            let (parents, description, builtin) = if let Some(b) = builtin_role(name) {
                (
                    b.parent.map(str::to_owned).into_iter().collect(),
                    Some(b.description.to_owned()),
                    true,
                )
            } else {
                let v = p.custom_roles().get(name).copied()?;
                (v.parents.clone(), v.description.clone(), false)
            };
            let permissions = p
                .role_grants_reached(name, now)
                .into_iter()
                .filter(|g| {
                    g.subject == Subject::Role(name.to_owned())
                        && g.effect == Effect::Allow
                        && g.on.is_none()
                        && g.conditions.is_none()
                        && g.window == Window::default()
                })
                .map(|g| g.permission.to_string())
                .collect();
            Some(RoleView {
                name: name.to_owned(),
                description,
                parents,
                builtin,
                permissions,
                position,
            })
        })?
        .ok_or_else(|| AppError::not_found(format!("no role {name:.64}")))
}

/// Create a custom role. Needs `role:create`.
pub async fn create_role(
    app: &App,
    principal: &Principal,
    tenant: &str,
    req: CreateRoleRequest,
) -> Result<RoleView, AppError> {
    authorize(app, principal, tenant, "role:create", Target::Tenant)?;
    let ctx = principal.context(app.now());
    let done = run(app, tenant, &ctx, |_| {
        Ok(PolicyCommand::CreateRole {
            name: req.name.clone(),
            description: req.description.clone(),
            parents: req.parents.clone().unwrap_or_default(),
        })
    })
    .await?;
    role_view(app, tenant, &req.name, done.position)
}

/// Every role of the tenant, built-in first, then custom roles by name. Needs `role:read`.
pub async fn list_roles(
    app: &App,
    principal: &Principal,
    tenant: &str,
) -> Result<Vec<RoleView>, AppError> {
    authorize(app, principal, tenant, "role:read", Target::Tenant)?;
    let position = app.policy.applied();
    let custom: Vec<String> = app.policy.read(tenant, |p| {
        p.custom_roles().keys().map(|k| (*k).to_owned()).collect()
    })?;
    BUILTIN_ROLES
        .iter()
        .map(|r| r.name.to_owned())
        .chain(custom)
        .map(|name| role_view(app, tenant, &name, position))
        .collect()
}

/// One role. Needs `role:read`.
pub async fn get_role(
    app: &App,
    principal: &Principal,
    tenant: &str,
    name: &str,
) -> Result<RoleView, AppError> {
    authorize(app, principal, tenant, "role:read", Target::Tenant)?;
    role_view(app, tenant, name, app.policy.applied())
}

/// Change a custom role's description or parents. Needs `role:update`.
pub async fn update_role(
    app: &App,
    principal: &Principal,
    tenant: &str,
    name: &str,
    req: UpdateRoleRequest,
) -> Result<RoleView, AppError> {
    authorize(app, principal, tenant, "role:update", Target::Tenant)?;
    if req.description.is_none() && req.parents.is_none() {
        return Err(AppError::invalid("give description or parents"));
    }
    let ctx = principal.context(app.now());
    let done = run(app, tenant, &ctx, |_| {
        Ok(PolicyCommand::UpdateRole {
            name: name.to_owned(),
            description: req.description.clone(),
            parents: req.parents.clone(),
        })
    })
    .await?;
    role_view(app, tenant, name, done.position)
}

/// What deleting a role ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoleDeleted {
    /// The role.
    pub name: String,
    /// The grants to the role that were revoked.
    pub revoked_grants: Vec<String>,
    /// The assignments of the role that were ended.
    pub ended_assignments: Vec<String>,
    /// The log position of the last event written.
    pub position: u64,
}

/// Delete a custom role, ending its grants and assignments, each as an event. Needs
/// `role:delete`.
pub async fn delete_role(
    app: &App,
    principal: &Principal,
    tenant: &str,
    name: &str,
) -> Result<RoleDeleted, AppError> {
    authorize(app, principal, tenant, "role:delete", Target::Tenant)?;
    let ctx = principal.context(app.now());
    let done = run(app, tenant, &ctx, |_| {
        Ok(PolicyCommand::DeleteRole {
            name: name.to_owned(),
        })
    })
    .await?;
    let mut out = RoleDeleted {
        name: name.to_owned(),
        revoked_grants: vec![],
        ended_assignments: vec![],
        position: done.position,
    };
    for e in done.events {
        match e {
            PolicyEvent::GrantRevoked { id, .. } => out.revoked_grants.push(id),
            PolicyEvent::AssignmentEnded { id, .. } => out.ended_assignments.push(id),
            _ => {}
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Grants.

/// `POST /v1/tenants/{tenant}/grants`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGrantRequest {
    /// To whom.
    pub subject: SubjectBody,
    /// `resource_type:action`; either may be `*`.
    #[schema(example = "project:read")]
    pub permission: String,
    /// What it covers; the whole tenant when absent.
    #[serde(default)]
    pub on: Option<ScopeBody>,
    /// `allow` when absent.
    #[serde(default)]
    pub effect: Option<EffectBody>,
    /// In force from (RFC 3339, inclusive).
    #[serde(default)]
    pub valid_from: Option<String>,
    /// In force until (RFC 3339, exclusive).
    #[serde(default)]
    pub valid_until: Option<String>,
    /// Extra requirements on the check's context.
    #[serde(default)]
    pub conditions: Option<ConditionsBody>,
}

/// Allow or deny a permission to a principal or a role. Needs `grant:create`, and the caller must
/// hold the permission on the scope themselves.
pub async fn create_grant(
    app: &App,
    principal: &Principal,
    tenant: &str,
    req: CreateGrantRequest,
) -> Result<Made, AppError> {
    authorize(app, principal, tenant, "grant:create", Target::Tenant)?;
    let permission = parse_permission("permission", &req.permission)?;
    let on = req.on.map(ScopeBody::parse).transpose()?;
    let window = window(req.valid_from.as_deref(), req.valid_until.as_deref())?;
    let conditions = req.conditions.map(ConditionsBody::parse).transpose()?;
    let subject = Subject::from(req.subject);
    if let Subject::Principal(p) = &subject {
        known_principal(app, tenant, p)?;
    }
    access::may_give(app, principal, tenant, &permission, on.as_ref())?;
    let id = type_id("grant", Uuid::now_v7());
    let ctx = principal.context(app.now());
    let done = run(app, tenant, &ctx, |_| {
        Ok(PolicyCommand::Grant {
            id: id.clone(),
            subject: subject.clone(),
            permission: permission.clone(),
            on: on.clone(),
            effect: req.effect.unwrap_or_default().into(),
            window,
            conditions: conditions.clone(),
            granted_by: actor_id(principal),
        })
    })
    .await?;
    Ok(Made {
        id,
        position: done.position,
    })
}

/// Revoke a grant. Needs `grant:delete`.
pub async fn revoke_grant(
    app: &App,
    principal: &Principal,
    tenant: &str,
    id: &str,
) -> Result<Made, AppError> {
    authorize(app, principal, tenant, "grant:delete", Target::Tenant)?;
    if !is_type_id("grant", id) {
        return Err(AppError::not_found(format!("no live grant {id:.64}")));
    }
    let ctx = principal.context(app.now());
    let done = run(app, tenant, &ctx, |_| {
        Ok(PolicyCommand::Revoke { id: id.to_owned() })
    })
    .await?;
    Ok(Made {
        id: id.to_owned(),
        position: done.position,
    })
}

// ---------------------------------------------------------------------------------------------
// Assignments.

/// `POST /v1/tenants/{tenant}/assignments`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAssignmentRequest {
    /// Who: a user, agent or service of the tenant, by id.
    pub principal: String,
    /// The role's name.
    #[schema(example = "developer")]
    pub role: String,
    /// What it covers; the whole tenant when absent.
    #[serde(default)]
    pub on: Option<ScopeBody>,
    /// In force from (RFC 3339, inclusive).
    #[serde(default)]
    pub valid_from: Option<String>,
    /// In force until (RFC 3339, exclusive).
    #[serde(default)]
    pub valid_until: Option<String>,
}

/// Assign a role. Needs `assignment:create`, and the caller must hold every permission the role
/// allows.
pub async fn create_assignment(
    app: &App,
    principal: &Principal,
    tenant: &str,
    req: CreateAssignmentRequest,
) -> Result<Made, AppError> {
    authorize(app, principal, tenant, "assignment:create", Target::Tenant)?;
    let on = req.on.map(ScopeBody::parse).transpose()?;
    let window = window(req.valid_from.as_deref(), req.valid_until.as_deref())?;
    known_principal(app, tenant, &req.principal)?;
    if !app.policy.read(tenant, |p| p.role_exists(&req.role))? {
        return Err(AppError::not_found(format!("no role {:.64}", req.role)));
    }
    access::may_assign(app, principal, tenant, &req.role, on.as_ref())?;
    let id = type_id("asg", Uuid::now_v7());
    let ctx = principal.context(app.now());
    let done = run(app, tenant, &ctx, |_| {
        Ok(PolicyCommand::Assign {
            id: id.clone(),
            principal: req.principal.clone(),
            role: req.role.clone(),
            on: on.clone(),
            window,
            assigned_by: actor_id(principal),
            migrated_from: None,
        })
    })
    .await?;
    Ok(Made {
        id,
        position: done.position,
    })
}

/// End an assignment. Needs `assignment:delete`.
pub async fn end_assignment(
    app: &App,
    principal: &Principal,
    tenant: &str,
    id: &str,
) -> Result<Made, AppError> {
    authorize(app, principal, tenant, "assignment:delete", Target::Tenant)?;
    if !is_type_id("asg", id) {
        return Err(AppError::not_found(format!("no live assignment {id:.64}")));
    }
    let ctx = principal.context(app.now());
    let done = run(app, tenant, &ctx, |_| {
        Ok(PolicyCommand::Unassign { id: id.to_owned() })
    })
    .await?;
    Ok(Made {
        id: id.to_owned(),
        position: done.position,
    })
}

/// Assigns each of `roles` to `principal_id` on the whole tenant (the caller was authorized for
/// it); answers the position of the last assignment (0 when there is none).
pub(crate) async fn assign_tenant_roles(
    app: &App,
    ctx: &crate::commands::Context,
    tenant: &str,
    principal_id: &str,
    roles: &[String],
) -> Result<u64, AppError> {
    let mut position = 0;
    for role in roles {
        let id = type_id("asg", Uuid::now_v7());
        let done = run(app, tenant, ctx, |_| {
            Ok(PolicyCommand::Assign {
                id: id.clone(),
                principal: principal_id.to_owned(),
                role: role.clone(),
                on: None,
                window: Window::default(),
                assigned_by: ctx.actor.id.clone(),
                migrated_from: None,
            })
        })
        .await?;
        position = done.position;
    }
    Ok(position)
}

// ---------------------------------------------------------------------------------------------
// Resource groups.

/// A resource's membership of a group, as a command left it.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberView {
    /// The group.
    pub group: String,
    /// The resource, `type/id`.
    pub resource: String,
    /// Whether it is a member now.
    pub member: bool,
    /// The log position of the last event written (the head when nothing changed).
    pub position: u64,
}

/// Put a resource in a group (nothing changes if it is in it). Needs `group:update`.
pub async fn add_member(
    app: &App,
    principal: &Principal,
    tenant: &str,
    group: &str,
    resource_type: &str,
    resource_id: &str,
) -> Result<MemberView, AppError> {
    member_change(
        app,
        principal,
        tenant,
        group,
        resource_type,
        resource_id,
        true,
    )
    .await
}

/// Take a resource out of a group. Needs `group:update`.
pub async fn remove_member(
    app: &App,
    principal: &Principal,
    tenant: &str,
    group: &str,
    resource_type: &str,
    resource_id: &str,
) -> Result<MemberView, AppError> {
    member_change(
        app,
        principal,
        tenant,
        group,
        resource_type,
        resource_id,
        false,
    )
    .await
}

async fn member_change(
    app: &App,
    principal: &Principal,
    tenant: &str,
    group: &str,
    resource_type: &str,
    resource_id: &str,
    add: bool,
) -> Result<MemberView, AppError> {
    authorize(app, principal, tenant, "group:update", Target::Tenant)?;
    let resource = parse_resource("resource", &format!("{resource_type}/{resource_id}"))?;
    let ctx = principal.context(app.now());
    let done = run(app, tenant, &ctx, |_| {
        let (group, resource) = (group.to_owned(), resource.clone());
        Ok(if add {
            PolicyCommand::AddMember { group, resource }
        } else {
            PolicyCommand::RemoveMember { group, resource }
        })
    })
    .await?;
    Ok(MemberView {
        group: group.to_owned(),
        resource: resource.to_string(),
        member: add,
        position: done.position,
    })
}

// ---------------------------------------------------------------------------------------------
// Listings.

/// `GET /v1/tenants/{tenant}/grants`
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct GrantListQuery {
    /// Only grants to this subject: `role:NAME`, or a principal's id (also written `principal:ID`).
    pub subject: Option<String>,
    /// Only grants whose permission overlaps this one (`project:read` also finds `project:*`,
    /// `*:read` and `*:*`).
    pub permission: Option<String>,
    /// `true` to include revoked grants.
    pub include_ended: Option<String>,
    /// At most this many (1-500, default 50).
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A grant.
#[derive(Debug, Serialize, ToSchema)]
pub struct GrantView {
    /// `grant_...`.
    pub id: String,
    /// To whom.
    pub subject: SubjectBody,
    /// What.
    pub permission: String,
    /// On what (absent: the whole tenant).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on: Option<ScopeBody>,
    /// Allow or deny.
    pub effect: EffectBody,
    /// In force from.
    #[schema(value_type = Option<String>)]
    pub valid_from: Option<Timestamp>,
    /// In force until.
    #[schema(value_type = Option<String>)]
    pub valid_until: Option<Timestamp>,
    /// Extra requirements.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conditions: Option<ConditionsBody>,
    /// Who granted it.
    pub granted_by: String,
    /// When.
    #[schema(value_type = String)]
    pub granted_at: Timestamp,
    /// The position of its `grant.created`.
    pub position: u64,
    /// When it was revoked, if it was.
    #[schema(value_type = Option<String>)]
    pub ended_at: Option<Timestamp>,
}

/// A page of grants, by id (creation order).
#[derive(Debug, Serialize, ToSchema)]
pub struct GrantPage {
    /// The grants of this page.
    pub items: Vec<GrantView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

fn subject_filter(s: &str) -> Subject {
    match s.split_once(':') {
        Some(("role", r)) => Subject::Role(r.to_owned()),
        Some(("principal", p)) => Subject::Principal(p.to_owned()),
        _ => Subject::Principal(s.to_owned()),
    }
}

/// A page of the tenant's grants, from the policy view (built-in roles' defaults are not listed;
/// see the role). Needs `grant:read`.
pub async fn list_grants(
    app: &App,
    principal: &Principal,
    tenant: &str,
    q: GrantListQuery,
) -> Result<GrantPage, AppError> {
    authorize(app, principal, tenant, "grant:read", Target::Tenant)?;
    let limit = crate::validate::parse_limit(q.limit.as_deref())?;
    crate::validate::check_cursor("grant", q.cursor.as_deref())?;
    let ended = crate::validate::parse_flag("include_ended", q.include_ended.as_deref())?;
    let permission = q
        .permission
        .as_deref()
        .map(|p| parse_permission("permission", p))
        .transpose()?;
    let filter = view::GrantFilter {
        subject: q.subject.as_deref().map(subject_filter),
        permission,
        include_ended: ended,
    };
    let tables = app.tables("policy")?;
    let rows = view::list_grants(
        app.db.pool(),
        &tables,
        tenant,
        &filter,
        q.cursor.as_deref(),
        limit + 1,
    )
    .await?;
    let items: Vec<GrantView> = rows
        .into_iter()
        .map(|g| GrantView {
            id: g.id,
            subject: SubjectBody::from(&g.subject),
            permission: g.permission.to_string(),
            on: g.on.as_ref().map(ScopeBody::from),
            effect: g.effect.into(),
            valid_from: g.valid_from,
            valid_until: g.valid_until,
            conditions: g.conditions.as_ref().map(ConditionsBody::from),
            granted_by: g.granted_by,
            granted_at: g.created_at,
            position: g.created_position,
            ended_at: g.ended_at,
        })
        .collect();
    let (items, next_cursor) = crate::validate::page(items, limit, |g| &g.id);
    Ok(GrantPage { items, next_cursor })
}

/// `GET /v1/tenants/{tenant}/assignments`
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AssignmentListQuery {
    /// Only assignments to this principal.
    pub principal: Option<String>,
    /// Only assignments of this role.
    pub role: Option<String>,
    /// `true` to include ended assignments.
    pub include_ended: Option<String>,
    /// At most this many (1-500, default 50).
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// An assignment.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssignmentView {
    /// `asg_...`.
    pub id: String,
    /// Who holds the role.
    pub principal: String,
    /// The role.
    pub role: String,
    /// On what (absent: the whole tenant).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on: Option<ScopeBody>,
    /// In force from.
    #[schema(value_type = Option<String>)]
    pub valid_from: Option<Timestamp>,
    /// In force until.
    #[schema(value_type = Option<String>)]
    pub valid_until: Option<Timestamp>,
    /// Who assigned it (`system` for one carried over from `tenant_admin`).
    pub assigned_by: String,
    /// `tenant_admin` when it carries over that earlier role.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migrated_from: Option<String>,
    /// When.
    #[schema(value_type = String)]
    pub assigned_at: Timestamp,
    /// The position of its `assignment.created`.
    pub position: u64,
    /// When it ended, if it did.
    #[schema(value_type = Option<String>)]
    pub ended_at: Option<Timestamp>,
}

/// A page of assignments, by id (creation order).
#[derive(Debug, Serialize, ToSchema)]
pub struct AssignmentPage {
    /// The assignments of this page.
    pub items: Vec<AssignmentView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A page of the tenant's assignments, from the policy view. Needs `assignment:read`.
pub async fn list_assignments(
    app: &App,
    principal: &Principal,
    tenant: &str,
    q: AssignmentListQuery,
) -> Result<AssignmentPage, AppError> {
    authorize(app, principal, tenant, "assignment:read", Target::Tenant)?;
    let limit = crate::validate::parse_limit(q.limit.as_deref())?;
    crate::validate::check_cursor("asg", q.cursor.as_deref())?;
    let ended = crate::validate::parse_flag("include_ended", q.include_ended.as_deref())?;
    let filter = view::AssignmentFilter {
        principal: q.principal,
        role: q.role,
        include_ended: ended,
    };
    let tables = app.tables("policy")?;
    let rows = view::list_assignments(
        app.db.pool(),
        &tables,
        tenant,
        &filter,
        q.cursor.as_deref(),
        limit + 1,
    )
    .await?;
    let items: Vec<AssignmentView> = rows
        .into_iter()
        .map(|a| AssignmentView {
            id: a.id,
            principal: a.principal,
            role: a.role,
            on: a.on.as_ref().map(ScopeBody::from),
            valid_from: a.valid_from,
            valid_until: a.valid_until,
            assigned_by: a.assigned_by,
            migrated_from: a.migrated_from,
            assigned_at: a.created_at,
            position: a.created_position,
            ended_at: a.ended_at,
        })
        .collect();
    let (items, next_cursor) = crate::validate::page(items, limit, |a| &a.id);
    Ok(AssignmentPage { items, next_cursor })
}
