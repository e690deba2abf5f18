//! The `policy` view: every tenant's catalog, custom roles, grants, assignments and resource-group
//! memberships as the events of `{tenant}/policy/rules` have made them, history included, and the
//! queries that serve listings, reverse lookups and an SQL-side decision.
//!
//! Nothing is forgotten when it ends: an ended grant or assignment keeps its row with the position
//! and time it ended, a deleted role keeps its row with the position it was deleted at, a role's
//! parents are kept per interval of positions, and a group membership keeps the positions it was
//! added and removed at. So every question can be asked as the policy stood at any position
//! ([`AsOf`]), like the domain's own [`evaluate`](custodian_domain::policy::evaluate).
//!
//! The built-in roles and their default grants
//! ([`BUILTIN_ROLES`](custodian_domain::policy::vocabulary::BUILTIN_ROLES)) are defined by the
//! service's code, not by events: the queries add them as constant rows, so they never go stale
//! in a view built by older code.
//!
//! Scopes are stored as `on_kind` (`tenant`, `resource`, `resource_type` or `group`) and
//! `on_value` (`type/id`, the type, the group, or `NULL` for the tenant). Timestamps are stored in
//! their fixed-width text form, so windows compare as text; positions as `BIGINT`; conditions and
//! lists as JSON text. One set of SQL serves SQLite and PostgreSQL through sqlx's `Any` driver.

use std::net::IpAddr;
use std::sync::OnceLock;

use async_trait::async_trait;
use custodian_domain::policy::event::AGGREGATE;
use custodian_domain::policy::vocabulary::{ANY, BUILTIN_ROLES, BUILTIN_TYPES, builtin_role};
use custodian_domain::policy::{
    AsOf, Check, Conditions, Effect, EndReason, Permission, PolicyEvent, Resource, Scope, Subject,
    Target, Verdict,
};
use custodian_domain::{DomainEvent, EventRecord, Timestamp};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, AnyConnection, AnyPool, Row};

use crate::runtime::{ApplyError, Projection, Tables};

/// Folds the events of `{tenant}/policy/rules` streams into `catalog`, `roles`, `role_parents`,
/// `grants`, `assignments` and `group_members`.
#[derive(Debug, Default)]
pub struct PolicyView;

// ---------------------------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------------------------

/// One resource type of a tenant's catalog.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CatalogRow {
    /// The resource type.
    pub resource_type: String,
    /// Its actions.
    pub actions: Vec<String>,
    /// Whether the service defines it (in every tenant) rather than the tenant.
    pub builtin: bool,
}

/// A role as it is now: built-in, or a custom role that is not deleted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoleRow {
    /// The tenant.
    pub tenant: String,
    /// The role's name, unique among the tenant's live roles.
    pub name: String,
    /// What it is for.
    pub description: Option<String>,
    /// The roles it inherits every permission of.
    pub parents: Vec<String>,
    /// Whether the service defines it.
    pub builtin: bool,
    /// A built-in role's default permissions (a custom role's come from grants).
    pub default_permissions: Vec<String>,
    /// The position of its creation (0 for a built-in role).
    pub created_position: u64,
    /// When it was created (`None` for a built-in role).
    pub created_at: Option<Timestamp>,
    /// The position of its last change (its creation if never changed).
    pub updated_position: u64,
    /// When it last changed.
    pub updated_at: Option<Timestamp>,
}

/// A grant, live or ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GrantRow {
    /// The tenant.
    pub tenant: String,
    /// `grant_...`.
    pub id: String,
    /// To whom.
    pub subject: Subject,
    /// What it allows or denies (a pattern).
    pub permission: Permission,
    /// On what; `None` for the whole tenant.
    pub on: Option<Scope>,
    /// Allow or deny.
    pub effect: Effect,
    /// In force from (inclusive).
    pub valid_from: Option<Timestamp>,
    /// In force until (exclusive).
    pub valid_until: Option<Timestamp>,
    /// Extra requirements on a check's context.
    pub conditions: Option<Conditions>,
    /// Who made it.
    pub granted_by: String,
    /// The position of `grant.created`.
    pub created_position: u64,
    /// When it was made.
    pub created_at: Timestamp,
    /// The position of `grant.revoked`, if it ended.
    pub ended_position: Option<u64>,
    /// When it ended.
    pub ended_at: Option<Timestamp>,
    /// Why it ended.
    pub end_reason: Option<EndReason>,
}

/// An assignment of a role to a principal, live or ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AssignmentRow {
    /// The tenant.
    pub tenant: String,
    /// `asg_...`.
    pub id: String,
    /// Who holds the role.
    pub principal: String,
    /// The role.
    pub role: String,
    /// On what; `None` for the whole tenant.
    pub on: Option<Scope>,
    /// In force from (inclusive).
    pub valid_from: Option<Timestamp>,
    /// In force until (exclusive).
    pub valid_until: Option<Timestamp>,
    /// Who assigned it.
    pub assigned_by: String,
    /// The earlier model's role it carries over (`tenant_admin`), if any.
    pub migrated_from: Option<String>,
    /// The position of `assignment.created`.
    pub created_position: u64,
    /// When it was made.
    pub created_at: Timestamp,
    /// The position of `assignment.ended`, if it ended.
    pub ended_position: Option<u64>,
    /// When it ended.
    pub ended_at: Option<Timestamp>,
    /// Why it ended.
    pub end_reason: Option<EndReason>,
}

/// A resource's current membership of a group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupMemberRow {
    /// The tenant.
    pub tenant: String,
    /// The group.
    pub group: String,
    /// The member.
    pub resource: Resource,
    /// The position of `group.member_added`.
    pub added_position: u64,
    /// When it joined.
    pub added_at: Timestamp,
}

/// Which grants [`list_grants`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantFilter {
    /// Only grants to this principal or role.
    pub subject: Option<Subject>,
    /// Only grants whose permission overlaps this one: `project:read` lists the grants of
    /// `project:read`, `project:*`, `*:read` and `*:*`; `project:*` every grant on projects.
    pub permission: Option<Permission>,
    /// Ended grants too (revoked, or ended with their role).
    pub include_ended: bool,
}

/// Which assignments [`list_assignments`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssignmentFilter {
    /// Only assignments to this principal.
    pub principal: Option<String>,
    /// Only assignments of this role.
    pub role: Option<String>,
    /// Ended assignments too.
    pub include_ended: bool,
}

/// A grant that applies to a check, before resolution.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApplicableGrant {
    /// The grant (`builtin:{role}:{permission}` for a built-in role's default).
    pub id: String,
    /// Allow or deny.
    pub effect: Effect,
    /// The position of its creation (0 for a built-in default).
    pub created_position: u64,
}

/// One way a principal holds a permission on a resource: a grant that bears on the resource,
/// directly or through a role held by an assignment that covers it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WhoCanRow {
    /// Who.
    pub principal: String,
    /// The grant's permission (a pattern).
    pub permission: Permission,
    /// Allow or deny.
    pub effect: Effect,
    /// The grant.
    pub grant_id: String,
    /// The role the grant is to, when it reaches the principal through an assignment.
    pub via_role: Option<String>,
    /// The assignment that gives the principal that role (directly or by inheritance).
    pub via_assignment: Option<String>,
    /// Conditions the grant still needs from a check's context.
    pub conditions: Option<Conditions>,
}

/// One permission a principal holds somewhere in the tenant: a grant in force that reaches them,
/// with the scopes that bound it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EffectivePermissionRow {
    /// The grant's permission (a pattern).
    pub permission: Permission,
    /// Allow or deny.
    pub effect: Effect,
    /// What the grant covers; `None` for the whole tenant.
    pub on: Option<Scope>,
    /// The grant.
    pub grant_id: String,
    /// The role the grant is to, when it reaches the principal through an assignment.
    pub via_role: Option<String>,
    /// The assignment that gives the principal that role.
    pub via_assignment: Option<String>,
    /// What the assignment covers; `None` for the whole tenant or a direct grant.
    pub assignment_on: Option<Scope>,
    /// Conditions the grant still needs from a check's context.
    pub conditions: Option<Conditions>,
}

// ---------------------------------------------------------------------------------------------
// Stored forms
// ---------------------------------------------------------------------------------------------

fn effect_name(e: Effect) -> &'static str {
    match e {
        Effect::Allow => "allow",
        Effect::Deny => "deny",
    }
}

fn end_reason_name(r: EndReason) -> &'static str {
    match r {
        EndReason::Revoked => "revoked",
        EndReason::RoleDeleted => "role_deleted",
    }
}

/// `(on_kind, on_value)` of a scope.
fn scope_columns(on: Option<&Scope>) -> (&'static str, Option<String>) {
    match on {
        None => ("tenant", None),
        Some(Scope::Resource(r)) => ("resource", Some(r.to_string())),
        Some(Scope::ResourceType(t)) => ("resource_type", Some(t.clone())),
        Some(Scope::Group(g)) => ("group", Some(g.clone())),
    }
}

fn subject_columns(s: &Subject) -> (&'static str, &str) {
    match s {
        Subject::Principal(p) => ("principal", p),
        Subject::Role(r) => ("role", r),
    }
}

/// Parses a subject filter of a listing: `principal:<id>` or `role:<name>`.
pub fn parse_subject(s: &str) -> Result<Subject, String> {
    match s.split_once(':') {
        Some(("principal", id)) if !id.is_empty() => Ok(Subject::Principal(id.to_owned())),
        Some(("role", name)) if !name.is_empty() => Ok(Subject::Role(name.to_owned())),
        _ => Err(format!(
            "{s:?} is not a subject: write principal:<id> or role:<name>"
        )),
    }
}

/// A value the view never writes: the table was changed by something other than its worker.
fn undecodable(what: impl Into<String>) -> sqlx::Error {
    sqlx::Error::Decode(what.into().into())
}

fn position(r: &AnyRow, i: usize) -> Result<u64, sqlx::Error> {
    u64::try_from(r.try_get::<i64, _>(i)?).map_err(|e| undecodable(e.to_string()))
}

fn opt_position(r: &AnyRow, i: usize) -> Result<Option<u64>, sqlx::Error> {
    r.try_get::<Option<i64>, _>(i)?
        .map(|p| u64::try_from(p).map_err(|e| undecodable(e.to_string())))
        .transpose()
}

fn timestamp(r: &AnyRow, i: usize) -> Result<Timestamp, sqlx::Error> {
    let s: String = r.try_get(i)?;
    Timestamp::parse(&s).map_err(|e| undecodable(e.to_string()))
}

fn opt_timestamp(r: &AnyRow, i: usize) -> Result<Option<Timestamp>, sqlx::Error> {
    r.try_get::<Option<String>, _>(i)?
        .map(|s| Timestamp::parse(&s).map_err(|e| undecodable(e.to_string())))
        .transpose()
}

fn effect(r: &AnyRow, i: usize) -> Result<Effect, sqlx::Error> {
    match r.try_get::<String, _>(i)?.as_str() {
        "allow" => Ok(Effect::Allow),
        "deny" => Ok(Effect::Deny),
        other => Err(undecodable(format!(
            "unknown effect {other:?} in the policy view"
        ))),
    }
}

fn end_reason(r: &AnyRow, i: usize) -> Result<Option<EndReason>, sqlx::Error> {
    match r.try_get::<Option<String>, _>(i)?.as_deref() {
        None => Ok(None),
        Some("revoked") => Ok(Some(EndReason::Revoked)),
        Some("role_deleted") => Ok(Some(EndReason::RoleDeleted)),
        Some(other) => Err(undecodable(format!(
            "unknown end reason {other:?} in the policy view"
        ))),
    }
}

fn permission(r: &AnyRow, i: usize) -> Result<Permission, sqlx::Error> {
    Permission::parse(&r.try_get::<String, _>(i)?).map_err(undecodable)
}

fn scope(r: &AnyRow, kind: usize) -> Result<Option<Scope>, sqlx::Error> {
    let k: Option<String> = r.try_get(kind)?;
    let v: Option<String> = r.try_get(kind + 1)?;
    match (k.as_deref(), v) {
        (None | Some("tenant"), _) => Ok(None),
        (Some("resource"), Some(v)) => Ok(Some(Scope::Resource(
            Resource::parse(&v).map_err(undecodable)?,
        ))),
        (Some("resource_type"), Some(v)) => Ok(Some(Scope::ResourceType(v))),
        (Some("group"), Some(v)) => Ok(Some(Scope::Group(v))),
        (k, v) => Err(undecodable(format!(
            "unknown scope {k:?} {v:?} in the policy view"
        ))),
    }
}

fn conditions(r: &AnyRow, i: usize) -> Result<Option<Conditions>, sqlx::Error> {
    r.try_get::<Option<String>, _>(i)?
        .map(|s| serde_json::from_str(&s).map_err(|e| undecodable(e.to_string())))
        .transpose()
}

fn json_list(r: &AnyRow, i: usize) -> Result<Vec<String>, sqlx::Error> {
    serde_json::from_str(&r.try_get::<String, _>(i)?).map_err(|e| undecodable(e.to_string()))
}

fn clamp(p: u64) -> i64 {
    i64::try_from(p).unwrap_or(i64::MAX)
}

// ---------------------------------------------------------------------------------------------
// Dynamic SQL
// ---------------------------------------------------------------------------------------------

enum Bound {
    Text(String),
    Int(i64),
}

/// The values of a statement built piece by piece; each method returns its placeholder.
#[derive(Default)]
struct Binds(Vec<Bound>);

impl Binds {
    fn text(&mut self, s: impl Into<String>) -> String {
        self.0.push(Bound::Text(s.into()));
        format!("${}", self.0.len())
    }

    fn int(&mut self, i: i64) -> String {
        self.0.push(Bound::Int(i));
        format!("${}", self.0.len())
    }

    fn query(self, sql: &str) -> sqlx::query::Query<'_, Any, AnyArguments<'_>> {
        let mut q = sqlx::query(sql);
        for b in self.0 {
            q = match b {
                Bound::Text(s) => q.bind(s),
                Bound::Int(i) => q.bind(i),
            };
        }
        q
    }
}

/// SQL text for a constant string (the built-in definitions only; never input).
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The built-in roles and default grants as common table expressions: `builtin_roles(name)`,
/// `builtin_parents(role, parent)` and `builtin_grants(id, role, permission, resource_type,
/// action)`.
fn builtin_ctes() -> &'static str {
    static CTES: OnceLock<String> = OnceLock::new();
    CTES.get_or_init(|| {
        let names: Vec<String> = BUILTIN_ROLES
            .iter()
            .map(|r| format!("({})", literal(r.name)))
            .collect();
        let parents: Vec<String> = BUILTIN_ROLES
            .iter()
            .filter_map(|r| {
                r.parent
                    .map(|p| format!("({}, {})", literal(r.name), literal(p)))
            })
            .collect();
        let grants: Vec<String> = BUILTIN_ROLES
            .iter()
            .flat_map(|r| {
                r.permissions.iter().filter_map(|p| {
                    let parsed = Permission::parse(p).ok()?;
                    Some(format!(
                        "({}, {}, {}, {}, {})",
                        literal(&format!("builtin:{}:{p}", r.name)),
                        literal(r.name),
                        literal(p),
                        literal(&parsed.resource_type),
                        literal(&parsed.action)
                    ))
                })
            })
            .collect();
        format!(
            "builtin_roles(name) AS (VALUES {}), \
             builtin_parents(role, parent) AS (VALUES {}), \
             builtin_grants(id, role, permission, resource_type, action) AS (VALUES {})",
            names.join(", "),
            parents.join(", "),
            grants.join(", ")
        )
    })
}

/// The placeholders every as-of query shares.
struct AsOfBinds {
    tenant: String,
    position: String,
    time: String,
}

impl AsOfBinds {
    fn new(b: &mut Binds, tenant: &str, as_of: AsOf) -> Self {
        Self {
            tenant: b.text(tenant),
            position: b.int(clamp(as_of.position)),
            time: b.text(as_of.time.to_string()),
        }
    }

    /// Whether the grant or assignment aliased `x` existed: made, and not yet ended.
    fn existed(&self, x: &str) -> String {
        let p = &self.position;
        format!(
            "{x}.created_position <= {p} \
             AND ({x}.ended_position IS NULL OR {x}.ended_position > {p})"
        )
    }

    /// Whether the window of the row aliased `x` is in force.
    fn in_force(&self, x: &str) -> String {
        let t = &self.time;
        format!(
            "({x}.valid_from IS NULL OR {x}.valid_from <= {t}) \
             AND ({x}.valid_until IS NULL OR {x}.valid_until > {t})"
        )
    }

    /// `live_parents(role, parent)` and `live_roles(name)` as they stood, after the built-ins.
    fn role_ctes(&self, t: &Tables) -> String {
        let (tenant, p) = (&self.tenant, &self.position);
        format!(
            "{builtin}, \
             live_parents(role, parent) AS ( \
                SELECT role, parent FROM {parents} WHERE tenant = {tenant} \
                AND from_position <= {p} AND (until_position IS NULL OR until_position > {p}) \
                UNION ALL SELECT role, parent FROM builtin_parents), \
             live_roles(name) AS ( \
                SELECT name FROM {roles} WHERE tenant = {tenant} AND created_position <= {p} \
                AND (deleted_position IS NULL OR deleted_position > {p}) \
                UNION SELECT name FROM builtin_roles)",
            builtin = builtin_ctes(),
            parents = t.name("role_parents"),
            roles = t.name("roles"),
        )
    }
}

/// Whether the scope (`on_kind`, `on_value`) of the row aliased `x` covers `target`, group
/// memberships counted as they stood.
fn covers(b: &mut Binds, a: &AsOfBinds, t: &Tables, x: &str, target: Target<'_>) -> String {
    match target {
        Target::Tenant => format!("{x}.on_kind = 'tenant'"),
        Target::Type(ty) => {
            let ty = b.text(ty);
            format!(
                "({x}.on_kind = 'tenant' OR ({x}.on_kind = 'resource_type' AND {x}.on_value = {ty}))"
            )
        }
        Target::Group(g) => {
            let g = b.text(g);
            format!("({x}.on_kind = 'tenant' OR ({x}.on_kind = 'group' AND {x}.on_value = {g}))")
        }
        Target::Resource(r) => {
            let ty = b.text(r.resource_type.clone());
            let id = b.text(r.id.clone());
            let full = b.text(r.to_string());
            let (tenant, p) = (&a.tenant, &a.position);
            format!(
                "({x}.on_kind = 'tenant' \
                  OR ({x}.on_kind = 'resource_type' AND {x}.on_value = {ty}) \
                  OR ({x}.on_kind = 'resource' AND {x}.on_value = {full}) \
                  OR ({x}.on_kind = 'group' AND EXISTS (SELECT 1 FROM {members} m \
                      WHERE m.tenant = {tenant} AND m.group_name = {x}.on_value \
                      AND m.resource_type = {ty} AND m.resource_id = {id} \
                      AND m.added_position <= {p} \
                      AND (m.removed_position IS NULL OR m.removed_position > {p}))))",
                members = t.name("group_members"),
            )
        }
    }
}

/// One part of a grant's permission (`resource_type` or `action` of the row aliased `x`) against
/// the part asked: it covers it (`*` or equal), or with `overlap` shares a permission with it.
fn part_matches(b: &mut Binds, x: &str, column: &str, asked: &str, overlap: bool) -> String {
    if overlap && asked == ANY {
        "1 = 1".to_owned()
    } else {
        let v = b.text(asked);
        format!("({x}.{column} = '*' OR {x}.{column} = {v})")
    }
}

/// Whether the permission of the grant aliased `x` covers `asked`.
fn covers_permission(b: &mut Binds, x: &str, asked: &Permission) -> String {
    let t = part_matches(b, x, "resource_type", &asked.resource_type, false);
    let a = part_matches(b, x, "action", &asked.action, false);
    format!("{t} AND {a}")
}

/// Whether the grant aliased `x` bears on `asked`: a deny whose permission overlaps it, or an
/// allow whose permission covers it.
fn bears_on(b: &mut Binds, x: &str, asked: &Permission) -> String {
    let deny_type = part_matches(b, x, "resource_type", &asked.resource_type, true);
    let deny_action = part_matches(b, x, "action", &asked.action, true);
    let allow = covers_permission(b, x, asked);
    format!(
        "(({x}.effect = 'deny' AND {deny_type} AND {deny_action}) \
          OR ({x}.effect = 'allow' AND {allow}))"
    )
}

// ---------------------------------------------------------------------------------------------
// The projection
// ---------------------------------------------------------------------------------------------

#[async_trait]
impl Projection for PolicyView {
    fn name(&self) -> &'static str {
        "policy"
    }

    fn version(&self) -> u32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "catalog",
            "roles",
            "role_parents",
            "grants",
            "assignments",
            "group_members",
        ]
    }

    fn create(&self, t: &Tables) -> Vec<String> {
        let catalog = t.name("catalog");
        let roles = t.name("roles");
        let parents = t.name("role_parents");
        let grants = t.name("grants");
        let assignments = t.name("assignments");
        let members = t.name("group_members");
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {catalog} (
                    tenant TEXT NOT NULL,
                    resource_type TEXT NOT NULL,
                    actions TEXT NOT NULL,
                    updated_position BIGINT NOT NULL,
                    updated_at TEXT NOT NULL,
                    PRIMARY KEY (tenant, resource_type)
                )"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {roles} (
                    tenant TEXT NOT NULL,
                    name TEXT NOT NULL,
                    description TEXT NULL,
                    parents TEXT NOT NULL,
                    created_position BIGINT NOT NULL,
                    created_at TEXT NOT NULL,
                    updated_position BIGINT NOT NULL,
                    updated_at TEXT NOT NULL,
                    deleted_position BIGINT NULL,
                    deleted_at TEXT NULL,
                    PRIMARY KEY (tenant, name, created_position)
                )"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {parents} (
                    tenant TEXT NOT NULL,
                    role TEXT NOT NULL,
                    parent TEXT NOT NULL,
                    from_position BIGINT NOT NULL,
                    until_position BIGINT NULL,
                    PRIMARY KEY (tenant, role, parent, from_position)
                )"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {grants} (
                    tenant TEXT NOT NULL,
                    id TEXT NOT NULL,
                    subject_kind TEXT NOT NULL,
                    subject TEXT NOT NULL,
                    permission TEXT NOT NULL,
                    resource_type TEXT NOT NULL,
                    action TEXT NOT NULL,
                    on_kind TEXT NOT NULL,
                    on_value TEXT NULL,
                    effect TEXT NOT NULL,
                    valid_from TEXT NULL,
                    valid_until TEXT NULL,
                    conditions TEXT NULL,
                    granted_by TEXT NOT NULL,
                    created_position BIGINT NOT NULL,
                    created_at TEXT NOT NULL,
                    ended_position BIGINT NULL,
                    ended_at TEXT NULL,
                    end_reason TEXT NULL,
                    PRIMARY KEY (tenant, id)
                )"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {grants}_by_subject \
                 ON {grants} (tenant, subject_kind, subject)"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {grants}_by_scope ON {grants} (tenant, on_kind, on_value)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {assignments} (
                    tenant TEXT NOT NULL,
                    id TEXT NOT NULL,
                    principal TEXT NOT NULL,
                    role TEXT NOT NULL,
                    on_kind TEXT NOT NULL,
                    on_value TEXT NULL,
                    valid_from TEXT NULL,
                    valid_until TEXT NULL,
                    assigned_by TEXT NOT NULL,
                    migrated_from TEXT NULL,
                    created_position BIGINT NOT NULL,
                    created_at TEXT NOT NULL,
                    ended_position BIGINT NULL,
                    ended_at TEXT NULL,
                    end_reason TEXT NULL,
                    PRIMARY KEY (tenant, id)
                )"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {assignments}_by_principal \
                 ON {assignments} (tenant, principal)"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {assignments}_by_role ON {assignments} (tenant, role)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {members} (
                    tenant TEXT NOT NULL,
                    group_name TEXT NOT NULL,
                    resource_type TEXT NOT NULL,
                    resource_id TEXT NOT NULL,
                    added_position BIGINT NOT NULL,
                    added_at TEXT NOT NULL,
                    removed_position BIGINT NULL,
                    removed_at TEXT NULL,
                    PRIMARY KEY (tenant, group_name, resource_type, resource_id, added_position)
                )"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {members}_by_resource \
                 ON {members} (tenant, resource_type, resource_id)"
            ),
        ]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        t: &Tables,
        event: &EventRecord,
    ) -> Result<(), ApplyError> {
        if event.stream.aggregate() != AGGREGATE {
            return Ok(());
        }
        let decoded = PolicyEvent::decode(event.event_type.as_str(), event.schema, &event.data)
            .map_err(|e| ApplyError(e.to_string()))?;
        let tenant = event.stream.tenant();
        let pos = clamp(event.position);
        let at = event.occurred_at.to_string();
        match decoded {
            PolicyEvent::CatalogUpdated { resource_types } => {
                let catalog = t.name("catalog");
                sqlx::query(&format!("DELETE FROM {catalog} WHERE tenant = $1"))
                    .bind(tenant)
                    .execute(&mut *conn)
                    .await?;
                for (resource_type, actions) in resource_types {
                    sqlx::query(&format!(
                        "INSERT INTO {catalog} (tenant, resource_type, actions, updated_position, \
                         updated_at) VALUES ($1, $2, $3, $4, $5)"
                    ))
                    .bind(tenant)
                    .bind(resource_type)
                    .bind(json(&actions)?)
                    .bind(pos)
                    .bind(at.clone())
                    .execute(&mut *conn)
                    .await?;
                }
            }
            PolicyEvent::RoleCreated {
                name,
                description,
                parents,
            } => {
                sqlx::query(&format!(
                    "INSERT INTO {} (tenant, name, description, parents, created_position, \
                     created_at, updated_position, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $5, $6) \
                     ON CONFLICT (tenant, name, created_position) DO NOTHING",
                    t.name("roles")
                ))
                .bind(tenant)
                .bind(name.as_str())
                .bind(description)
                .bind(json(&parents)?)
                .bind(pos)
                .bind(at)
                .execute(&mut *conn)
                .await?;
                open_parents(conn, t, tenant, &name, &parents, pos).await?;
            }
            PolicyEvent::RoleUpdated {
                name,
                description,
                parents,
            } => {
                let changed = sqlx::query(&format!(
                    "UPDATE {} SET description = $1, parents = $2, updated_position = $3, \
                     updated_at = $4 WHERE tenant = $5 AND name = $6 AND deleted_position IS NULL",
                    t.name("roles")
                ))
                .bind(description)
                .bind(json(&parents)?)
                .bind(pos)
                .bind(at)
                .bind(tenant)
                .bind(name.as_str())
                .execute(&mut *conn)
                .await?;
                // The domain ignores a change to a role that is not live; so does the view.
                if changed.rows_affected() > 0 {
                    close_parents(conn, t, tenant, &name, pos).await?;
                    open_parents(conn, t, tenant, &name, &parents, pos).await?;
                }
            }
            PolicyEvent::RoleDeleted { name } => {
                let changed = sqlx::query(&format!(
                    "UPDATE {} SET deleted_position = $1, deleted_at = $2 \
                     WHERE tenant = $3 AND name = $4 AND deleted_position IS NULL",
                    t.name("roles")
                ))
                .bind(pos)
                .bind(at)
                .bind(tenant)
                .bind(name.as_str())
                .execute(&mut *conn)
                .await?;
                if changed.rows_affected() > 0 {
                    close_parents(conn, t, tenant, &name, pos).await?;
                }
            }
            PolicyEvent::GrantCreated {
                id,
                subject,
                permission,
                on,
                effect,
                valid_from,
                valid_until,
                conditions,
                granted_by,
            } => {
                let (subject_kind, subject) = subject_columns(&subject);
                let (on_kind, on_value) = scope_columns(on.as_ref());
                let conditions = conditions.map(|c| json(&c)).transpose()?;
                sqlx::query(&format!(
                    "INSERT INTO {} (tenant, id, subject_kind, subject, permission, \
                     resource_type, action, on_kind, on_value, effect, valid_from, valid_until, \
                     conditions, granted_by, created_position, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
                     ON CONFLICT (tenant, id) DO NOTHING",
                    t.name("grants")
                ))
                .bind(tenant)
                .bind(id)
                .bind(subject_kind)
                .bind(subject)
                .bind(permission.to_string())
                .bind(permission.resource_type)
                .bind(permission.action)
                .bind(on_kind)
                .bind(on_value)
                .bind(effect_name(effect))
                .bind(valid_from.map(|v| v.to_string()))
                .bind(valid_until.map(|v| v.to_string()))
                .bind(conditions)
                .bind(granted_by)
                .bind(pos)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            PolicyEvent::GrantRevoked { id, reason } => {
                end(conn, &t.name("grants"), tenant, &id, pos, &at, reason).await?;
            }
            PolicyEvent::AssignmentCreated {
                id,
                principal,
                role,
                on,
                valid_from,
                valid_until,
                assigned_by,
                migrated_from,
            } => {
                let (on_kind, on_value) = scope_columns(on.as_ref());
                sqlx::query(&format!(
                    "INSERT INTO {} (tenant, id, principal, role, on_kind, on_value, valid_from, \
                     valid_until, assigned_by, migrated_from, created_position, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                     ON CONFLICT (tenant, id) DO NOTHING",
                    t.name("assignments")
                ))
                .bind(tenant)
                .bind(id)
                .bind(principal)
                .bind(role)
                .bind(on_kind)
                .bind(on_value)
                .bind(valid_from.map(|v| v.to_string()))
                .bind(valid_until.map(|v| v.to_string()))
                .bind(assigned_by)
                .bind(migrated_from)
                .bind(pos)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            PolicyEvent::AssignmentEnded { id, reason } => {
                end(conn, &t.name("assignments"), tenant, &id, pos, &at, reason).await?;
            }
            PolicyEvent::GroupMemberAdded { group, resource } => {
                let members = t.name("group_members");
                let live: i64 = sqlx::query_scalar(&format!(
                    "SELECT COUNT(*) FROM {members} WHERE tenant = $1 AND group_name = $2 \
                     AND resource_type = $3 AND resource_id = $4 AND removed_position IS NULL"
                ))
                .bind(tenant)
                .bind(group.as_str())
                .bind(resource.resource_type.as_str())
                .bind(resource.id.as_str())
                .fetch_one(&mut *conn)
                .await?;
                if live == 0 {
                    sqlx::query(&format!(
                        "INSERT INTO {members} (tenant, group_name, resource_type, resource_id, \
                         added_position, added_at) VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (tenant, group_name, resource_type, resource_id, \
                         added_position) DO NOTHING"
                    ))
                    .bind(tenant)
                    .bind(group)
                    .bind(resource.resource_type)
                    .bind(resource.id)
                    .bind(pos)
                    .bind(at)
                    .execute(&mut *conn)
                    .await?;
                }
            }
            PolicyEvent::GroupMemberRemoved { group, resource } => {
                sqlx::query(&format!(
                    "UPDATE {} SET removed_position = $1, removed_at = $2 WHERE tenant = $3 \
                     AND group_name = $4 AND resource_type = $5 AND resource_id = $6 \
                     AND removed_position IS NULL",
                    t.name("group_members")
                ))
                .bind(pos)
                .bind(at)
                .bind(tenant)
                .bind(group)
                .bind(resource.resource_type)
                .bind(resource.id)
                .execute(&mut *conn)
                .await?;
            }
        }
        Ok(())
    }
}

/// The JSON text of a value the view stores as JSON.
fn json<T: serde::Serialize>(value: &T) -> Result<String, ApplyError> {
    serde_json::to_string(value).map_err(|e| ApplyError(e.to_string()))
}

async fn open_parents(
    conn: &mut AnyConnection,
    t: &Tables,
    tenant: &str,
    role: &str,
    parents: &[String],
    pos: i64,
) -> Result<(), sqlx::Error> {
    for parent in parents {
        sqlx::query(&format!(
            "INSERT INTO {} (tenant, role, parent, from_position) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant, role, parent, from_position) DO NOTHING",
            t.name("role_parents")
        ))
        .bind(tenant)
        .bind(role)
        .bind(parent.as_str())
        .bind(pos)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

async fn close_parents(
    conn: &mut AnyConnection,
    t: &Tables,
    tenant: &str,
    role: &str,
    pos: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "UPDATE {} SET until_position = $1 WHERE tenant = $2 AND role = $3 \
         AND until_position IS NULL",
        t.name("role_parents")
    ))
    .bind(pos)
    .bind(tenant)
    .bind(role)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Ends a grant or an assignment; the first end is the one kept, as in the domain.
async fn end(
    conn: &mut AnyConnection,
    table: &str,
    tenant: &str,
    id: &str,
    pos: i64,
    at: &str,
    reason: EndReason,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "UPDATE {table} SET ended_position = $1, ended_at = $2, end_reason = $3 \
         WHERE tenant = $4 AND id = $5 AND ended_position IS NULL"
    ))
    .bind(pos)
    .bind(at)
    .bind(end_reason_name(reason))
    .bind(tenant)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Listings
// ---------------------------------------------------------------------------------------------

/// The tenant's catalog: the built-in resource types first, then the tenant's own by name.
pub async fn catalog(
    pool: &AnyPool,
    tables: &Tables,
    tenant: &str,
) -> Result<Vec<CatalogRow>, sqlx::Error> {
    let mut rows: Vec<CatalogRow> = BUILTIN_TYPES
        .iter()
        .map(|(t, actions)| CatalogRow {
            resource_type: (*t).to_owned(),
            actions: actions.iter().map(|a| (*a).to_owned()).collect(),
            builtin: true,
        })
        .collect();
    let custom = sqlx::query(&format!(
        "SELECT resource_type, actions FROM {} WHERE tenant = $1 ORDER BY resource_type",
        tables.name("catalog")
    ))
    .bind(tenant)
    .fetch_all(pool)
    .await?;
    for r in &custom {
        rows.push(CatalogRow {
            resource_type: r.try_get(0)?,
            actions: json_list(r, 1)?,
            builtin: false,
        });
    }
    Ok(rows)
}

const ROLE_COLUMNS: &str = "tenant, name, description, parents, created_position, created_at, updated_position, updated_at";

fn builtin_role_row(tenant: &str, name: &str) -> Option<RoleRow> {
    builtin_role(name).map(|b| RoleRow {
        tenant: tenant.to_owned(),
        name: b.name.to_owned(),
        description: Some(b.description.to_owned()),
        parents: b.parent.iter().map(|p| (*p).to_owned()).collect(),
        builtin: true,
        default_permissions: b.permissions.iter().map(|p| (*p).to_owned()).collect(),
        created_position: 0,
        created_at: None,
        updated_position: 0,
        updated_at: None,
    })
}

fn role_row(r: &AnyRow) -> Result<RoleRow, sqlx::Error> {
    Ok(RoleRow {
        tenant: r.try_get(0)?,
        name: r.try_get(1)?,
        description: r.try_get(2)?,
        parents: json_list(r, 3)?,
        builtin: false,
        default_permissions: Vec::new(),
        created_position: position(r, 4)?,
        created_at: Some(timestamp(r, 5)?),
        updated_position: position(r, 6)?,
        updated_at: Some(timestamp(r, 7)?),
    })
}

/// The role `name` of `tenant` as it is now: built-in, or custom and not deleted.
pub async fn find_role(
    pool: &AnyPool,
    tables: &Tables,
    tenant: &str,
    name: &str,
) -> Result<Option<RoleRow>, sqlx::Error> {
    if let Some(b) = builtin_role_row(tenant, name) {
        return Ok(Some(b));
    }
    sqlx::query(&format!(
        "SELECT {ROLE_COLUMNS} FROM {} WHERE tenant = $1 AND name = $2 \
         AND deleted_position IS NULL",
        tables.name("roles")
    ))
    .bind(tenant)
    .bind(name)
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(role_row)
    .transpose()
}

/// Up to `limit` roles of `tenant` (built-in and live custom ones) by name, starting after the
/// name `after` (the last name of the previous page).
pub async fn list_roles(
    pool: &AnyPool,
    tables: &Tables,
    tenant: &str,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<RoleRow>, sqlx::Error> {
    let mut b = Binds::default();
    let mut sql = format!(
        "SELECT {ROLE_COLUMNS} FROM {} WHERE tenant = {} AND deleted_position IS NULL",
        tables.name("roles"),
        b.text(tenant)
    );
    if let Some(after) = after {
        sql.push_str(&format!(" AND name > {}", b.text(after)));
    }
    sql.push_str(&format!(" ORDER BY name LIMIT {}", b.int(i64::from(limit))));
    let mut rows = b
        .query(&sql)
        .fetch_all(pool)
        .await?
        .iter()
        .map(role_row)
        .collect::<Result<Vec<_>, _>>()?;
    rows.extend(
        BUILTIN_ROLES
            .iter()
            .filter(|r| after.is_none_or(|a| r.name > a))
            .filter_map(|r| builtin_role_row(tenant, r.name)),
    );
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(rows)
}

const GRANT_COLUMNS: &str = "tenant, id, subject_kind, subject, permission, on_kind, on_value, \
                             effect, valid_from, valid_until, conditions, granted_by, \
                             created_position, created_at, ended_position, ended_at, end_reason";

fn grant_row(r: &AnyRow) -> Result<GrantRow, sqlx::Error> {
    let kind: String = r.try_get(2)?;
    let subject: String = r.try_get(3)?;
    Ok(GrantRow {
        tenant: r.try_get(0)?,
        id: r.try_get(1)?,
        subject: match kind.as_str() {
            "principal" => Subject::Principal(subject),
            "role" => Subject::Role(subject),
            other => {
                return Err(undecodable(format!(
                    "unknown subject kind {other:?} in the policy view"
                )));
            }
        },
        permission: permission(r, 4)?,
        on: scope(r, 5)?,
        effect: effect(r, 7)?,
        valid_from: opt_timestamp(r, 8)?,
        valid_until: opt_timestamp(r, 9)?,
        conditions: conditions(r, 10)?,
        granted_by: r.try_get(11)?,
        created_position: position(r, 12)?,
        created_at: timestamp(r, 13)?,
        ended_position: opt_position(r, 14)?,
        ended_at: opt_timestamp(r, 15)?,
        end_reason: end_reason(r, 16)?,
    })
}

/// The grant `id` of `tenant`, live or ended.
pub async fn find_grant(
    pool: &AnyPool,
    tables: &Tables,
    tenant: &str,
    id: &str,
) -> Result<Option<GrantRow>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {GRANT_COLUMNS} FROM {} WHERE tenant = $1 AND id = $2",
        tables.name("grants")
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(grant_row)
    .transpose()
}

/// Up to `limit` grants of `tenant` matching `filter`, by id, starting after the id `after` (the
/// last id of the previous page). Ids are time-sortable, so this is creation order. Built-in
/// roles' default grants are not listed: they are the roles' `default_permissions`.
pub async fn list_grants(
    pool: &AnyPool,
    tables: &Tables,
    tenant: &str,
    filter: &GrantFilter,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<GrantRow>, sqlx::Error> {
    let mut b = Binds::default();
    let mut sql = format!(
        "SELECT {GRANT_COLUMNS} FROM {} g WHERE g.tenant = {}",
        tables.name("grants"),
        b.text(tenant)
    );
    if let Some(subject) = &filter.subject {
        let (kind, value) = subject_columns(subject);
        sql.push_str(&format!(
            " AND g.subject_kind = {} AND g.subject = {}",
            b.text(kind),
            b.text(value)
        ));
    }
    if let Some(p) = &filter.permission {
        for (column, value) in [("resource_type", &p.resource_type), ("action", &p.action)] {
            if value != ANY {
                sql.push_str(&format!(
                    " AND (g.{column} = '*' OR g.{column} = {})",
                    b.text(value.as_str())
                ));
            }
        }
    }
    if !filter.include_ended {
        sql.push_str(" AND g.ended_position IS NULL");
    }
    if let Some(after) = after {
        sql.push_str(&format!(" AND g.id > {}", b.text(after)));
    }
    sql.push_str(&format!(" ORDER BY g.id LIMIT {}", b.int(i64::from(limit))));
    b.query(&sql)
        .fetch_all(pool)
        .await?
        .iter()
        .map(grant_row)
        .collect()
}

const ASSIGNMENT_COLUMNS: &str = "tenant, id, principal, role, on_kind, on_value, valid_from, \
                                  valid_until, assigned_by, migrated_from, created_position, \
                                  created_at, ended_position, ended_at, end_reason";

fn assignment_row(r: &AnyRow) -> Result<AssignmentRow, sqlx::Error> {
    Ok(AssignmentRow {
        tenant: r.try_get(0)?,
        id: r.try_get(1)?,
        principal: r.try_get(2)?,
        role: r.try_get(3)?,
        on: scope(r, 4)?,
        valid_from: opt_timestamp(r, 6)?,
        valid_until: opt_timestamp(r, 7)?,
        assigned_by: r.try_get(8)?,
        migrated_from: r.try_get(9)?,
        created_position: position(r, 10)?,
        created_at: timestamp(r, 11)?,
        ended_position: opt_position(r, 12)?,
        ended_at: opt_timestamp(r, 13)?,
        end_reason: end_reason(r, 14)?,
    })
}

/// The assignment `id` of `tenant`, live or ended.
pub async fn find_assignment(
    pool: &AnyPool,
    tables: &Tables,
    tenant: &str,
    id: &str,
) -> Result<Option<AssignmentRow>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {ASSIGNMENT_COLUMNS} FROM {} WHERE tenant = $1 AND id = $2",
        tables.name("assignments")
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(assignment_row)
    .transpose()
}

/// Up to `limit` assignments of `tenant` matching `filter`, by id, starting after the id `after`.
pub async fn list_assignments(
    pool: &AnyPool,
    tables: &Tables,
    tenant: &str,
    filter: &AssignmentFilter,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<AssignmentRow>, sqlx::Error> {
    let mut b = Binds::default();
    let mut sql = format!(
        "SELECT {ASSIGNMENT_COLUMNS} FROM {} WHERE tenant = {}",
        tables.name("assignments"),
        b.text(tenant)
    );
    let conditions = [
        ("principal =", filter.principal.as_deref()),
        ("role =", filter.role.as_deref()),
        ("id >", after),
    ];
    for (test, value) in conditions {
        if let Some(value) = value {
            sql.push_str(&format!(" AND {test} {}", b.text(value)));
        }
    }
    if !filter.include_ended {
        sql.push_str(" AND ended_position IS NULL");
    }
    sql.push_str(&format!(" ORDER BY id LIMIT {}", b.int(i64::from(limit))));
    b.query(&sql)
        .fetch_all(pool)
        .await?
        .iter()
        .map(assignment_row)
        .collect()
}

const MEMBER_COLUMNS: &str = "tenant, group_name, resource_type, resource_id, added_position, \
                              added_at";

fn member_row(r: &AnyRow) -> Result<GroupMemberRow, sqlx::Error> {
    Ok(GroupMemberRow {
        tenant: r.try_get(0)?,
        group: r.try_get(1)?,
        resource: Resource {
            resource_type: r.try_get(2)?,
            id: r.try_get(3)?,
        },
        added_position: position(r, 4)?,
        added_at: timestamp(r, 5)?,
    })
}

/// Up to `limit` current members of `group` in `tenant`, by type then id, starting after the
/// resource `after`.
pub async fn group_members(
    pool: &AnyPool,
    tables: &Tables,
    tenant: &str,
    group: &str,
    after: Option<&Resource>,
    limit: u32,
) -> Result<Vec<GroupMemberRow>, sqlx::Error> {
    let mut b = Binds::default();
    let mut sql = format!(
        "SELECT {MEMBER_COLUMNS} FROM {} WHERE tenant = {} AND group_name = {} \
         AND removed_position IS NULL",
        tables.name("group_members"),
        b.text(tenant),
        b.text(group)
    );
    if let Some(after) = after {
        let (t, i) = (
            b.text(after.resource_type.as_str()),
            b.text(after.id.as_str()),
        );
        sql.push_str(&format!(
            " AND (resource_type > {t} OR (resource_type = {t} AND resource_id > {i}))"
        ));
    }
    sql.push_str(&format!(
        " ORDER BY resource_type, resource_id LIMIT {}",
        b.int(i64::from(limit))
    ));
    b.query(&sql)
        .fetch_all(pool)
        .await?
        .iter()
        .map(member_row)
        .collect()
}

/// The groups `resource` belongs to now in `tenant`, by group name.
pub async fn groups_of(
    pool: &AnyPool,
    tables: &Tables,
    tenant: &str,
    resource: &Resource,
) -> Result<Vec<GroupMemberRow>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {MEMBER_COLUMNS} FROM {} WHERE tenant = $1 AND resource_type = $2 \
         AND resource_id = $3 AND removed_position IS NULL ORDER BY group_name",
        tables.name("group_members")
    ))
    .bind(tenant)
    .bind(resource.resource_type.as_str())
    .bind(resource.id.as_str())
    .fetch_all(pool)
    .await?
    .iter()
    .map(member_row)
    .collect()
}

// ---------------------------------------------------------------------------------------------
// Decisions and reverse lookups
// ---------------------------------------------------------------------------------------------

/// Every grant that applies to `check` in `tenant` (see
/// [`evaluate`](custodian_domain::policy::evaluate) for what *applies* means), in the order of
/// their creation: the roles the principal holds are reached in SQL by a recursive query over
/// the role parents as they stood at `check.as_of.position`, the candidate grants are fetched in
/// SQL (existence, window, scope with groups, subject, permission), and only their conditions
/// are weighed here, against `check.as_of.time` and `check.ip`.
pub async fn applicable_grants(
    pool: &AnyPool,
    tables: &Tables,
    tenant: &str,
    check: &Check<'_>,
) -> Result<Vec<ApplicableGrant>, sqlx::Error> {
    let mut b = Binds::default();
    let a = AsOfBinds::new(&mut b, tenant, check.as_of);
    let principal = b.text(check.principal);
    let assignment_covers = covers(&mut b, &a, tables, "a", check.target);
    let grant_covers = covers(&mut b, &a, tables, "g", check.target);
    let grant_bears = bears_on(&mut b, "g", check.permission);
    let builtin_covers = covers_permission(&mut b, "bg", check.permission);
    let sql = format!(
        "WITH RECURSIVE {roles}, \
         held(role) AS ( \
            SELECT a.role FROM {assignments} a WHERE a.tenant = {tenant} \
            AND a.principal = {principal} AND {a_existed} AND {a_in_force} AND {assignment_covers} \
            AND a.role IN (SELECT name FROM live_roles) \
            UNION \
            SELECT p.parent FROM held h JOIN live_parents p ON p.role = h.role \
            WHERE p.parent IN (SELECT name FROM live_roles)) \
         SELECT g.id, g.effect, g.conditions, g.created_position FROM {grants} g \
         WHERE g.tenant = {tenant} AND {g_existed} AND {g_in_force} AND {grant_covers} \
         AND {grant_bears} \
         AND ((g.subject_kind = 'principal' AND g.subject = {principal}) \
              OR (g.subject_kind = 'role' AND g.subject IN (SELECT role FROM held))) \
         UNION ALL \
         SELECT bg.id, 'allow', NULL, 0 FROM builtin_grants bg \
         WHERE bg.role IN (SELECT role FROM held) AND {builtin_covers} \
         ORDER BY 4, 1",
        roles = a.role_ctes(tables),
        assignments = tables.name("assignments"),
        grants = tables.name("grants"),
        tenant = a.tenant,
        a_existed = a.existed("a"),
        a_in_force = a.in_force("a"),
        g_existed = a.existed("g"),
        g_in_force = a.in_force("g"),
    );
    let rows = b.query(&sql).fetch_all(pool).await?;
    let mut out = Vec::new();
    for r in &rows {
        let effect = effect(r, 1)?;
        if !conditions_hold(
            conditions(r, 2)?.as_ref(),
            effect,
            check.as_of.time,
            check.ip,
        ) {
            continue;
        }
        out.push(ApplicableGrant {
            id: r.try_get(0)?,
            effect,
            created_position: position(r, 3)?,
        });
    }
    Ok(out)
}

/// Whether a grant's conditions let it apply: a condition that needs context the check did not
/// give counts as failed for an allow and as met for a deny, as in the domain.
pub fn conditions_hold(
    conditions: Option<&Conditions>,
    effect: Effect,
    time: Timestamp,
    ip: Option<IpAddr>,
) -> bool {
    conditions.is_none_or(|c| c.hold(time, ip).unwrap_or(effect == Effect::Deny))
}

/// The decision on `check` in `tenant`, reached independently of the domain's in-memory
/// evaluation: from the [`applicable_grants`], a deny wins, else an allow allows, else the answer
/// is deny. With the verdict comes the grant that decided it (the earliest applicable one of that
/// effect), or `None` for the default deny.
pub async fn sql_decide(
    pool: &AnyPool,
    tables: &Tables,
    tenant: &str,
    check: &Check<'_>,
) -> Result<(Verdict, Option<String>), sqlx::Error> {
    let applicable = applicable_grants(pool, tables, tenant, check).await?;
    let first = |e: Effect| {
        applicable
            .iter()
            .find(|g| g.effect == e)
            .map(|g| g.id.clone())
    };
    Ok(if let Some(deny) = first(Effect::Deny) {
        (Verdict::Deny, Some(deny))
    } else if let Some(allow) = first(Effect::Allow) {
        (Verdict::Allow, Some(allow))
    } else {
        (Verdict::Deny, None)
    })
}

/// Who holds what on `resource` in `tenant` as of `as_of`: one row per grant in force that bears
/// on the resource and per way it reaches a principal (directly, or through a role held by an
/// assignment in force that covers the resource), by principal, permission and grant. Denies are
/// listed too, and conditions are left to the reader (they need a check's context): resolving
/// the rows of one principal as [`sql_decide`] does gives their decision.
pub async fn who_can(
    pool: &AnyPool,
    tables: &Tables,
    tenant: &str,
    resource: &Resource,
    as_of: AsOf,
) -> Result<Vec<WhoCanRow>, sqlx::Error> {
    let mut b = Binds::default();
    let a = AsOfBinds::new(&mut b, tenant, as_of);
    let target = Target::Resource(resource);
    let assignment_covers = covers(&mut b, &a, tables, "a", target);
    let grant_covers = covers(&mut b, &a, tables, "g", target);
    let sql = format!(
        "WITH RECURSIVE {roles}, \
         held(principal, assignment_id, role) AS ( \
            SELECT a.principal, a.id, a.role FROM {assignments} a WHERE a.tenant = {tenant} \
            AND {a_existed} AND {a_in_force} AND {assignment_covers} \
            AND a.role IN (SELECT name FROM live_roles) \
            UNION \
            SELECT h.principal, h.assignment_id, p.parent FROM held h \
            JOIN live_parents p ON p.role = h.role \
            WHERE p.parent IN (SELECT name FROM live_roles)), \
         applicable AS ( \
            SELECT g.id, g.subject_kind, g.subject, g.permission, g.effect, g.conditions \
            FROM {grants} g WHERE g.tenant = {tenant} AND {g_existed} AND {g_in_force} \
            AND {grant_covers}) \
         SELECT g.subject AS principal, g.permission, g.effect, g.id AS grant_id, \
                CAST(NULL AS TEXT) AS via_role, CAST(NULL AS TEXT) AS via_assignment, \
                g.conditions \
         FROM applicable g WHERE g.subject_kind = 'principal' \
         UNION ALL \
         SELECT h.principal, g.permission, g.effect, g.id, h.role, h.assignment_id, g.conditions \
         FROM applicable g JOIN held h ON g.subject_kind = 'role' AND g.subject = h.role \
         UNION ALL \
         SELECT h.principal, bg.permission, 'allow', bg.id, h.role, h.assignment_id, NULL \
         FROM builtin_grants bg JOIN held h ON bg.role = h.role \
         ORDER BY 1, 2, 4, 6, 5",
        roles = a.role_ctes(tables),
        assignments = tables.name("assignments"),
        grants = tables.name("grants"),
        tenant = a.tenant,
        a_existed = a.existed("a"),
        a_in_force = a.in_force("a"),
        g_existed = a.existed("g"),
        g_in_force = a.in_force("g"),
    );
    b.query(&sql)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| {
            Ok(WhoCanRow {
                principal: r.try_get(0)?,
                permission: permission(r, 1)?,
                effect: effect(r, 2)?,
                grant_id: r.try_get(3)?,
                via_role: r.try_get(4)?,
                via_assignment: r.try_get(5)?,
                conditions: conditions(r, 6)?,
            })
        })
        .collect()
}

/// What `principal` holds in `tenant` as of `as_of`, anywhere: one row per grant in force that
/// reaches them and per way it does (directly, or through a role held by an assignment in force),
/// with the grant's scope and the assignment's, which both bound where it applies. Denies are
/// listed too; built-in roles' defaults appear with their `builtin:{role}:{permission}` ids.
pub async fn effective_permissions(
    pool: &AnyPool,
    tables: &Tables,
    tenant: &str,
    principal: &str,
    as_of: AsOf,
) -> Result<Vec<EffectivePermissionRow>, sqlx::Error> {
    let mut b = Binds::default();
    let a = AsOfBinds::new(&mut b, tenant, as_of);
    let principal = b.text(principal);
    let sql = format!(
        "WITH RECURSIVE {roles}, \
         held(assignment_id, on_kind, on_value, role) AS ( \
            SELECT a.id, a.on_kind, a.on_value, a.role FROM {assignments} a \
            WHERE a.tenant = {tenant} AND a.principal = {principal} AND {a_existed} \
            AND {a_in_force} AND a.role IN (SELECT name FROM live_roles) \
            UNION \
            SELECT h.assignment_id, h.on_kind, h.on_value, p.parent FROM held h \
            JOIN live_parents p ON p.role = h.role \
            WHERE p.parent IN (SELECT name FROM live_roles)), \
         applicable AS ( \
            SELECT g.id, g.subject_kind, g.subject, g.permission, g.effect, g.on_kind, \
                   g.on_value, g.conditions \
            FROM {grants} g WHERE g.tenant = {tenant} AND {g_existed} AND {g_in_force}) \
         SELECT g.permission, g.effect, g.on_kind, g.on_value, g.id AS grant_id, \
                CAST(NULL AS TEXT) AS via_role, CAST(NULL AS TEXT) AS via_assignment, \
                CAST(NULL AS TEXT) AS assignment_on_kind, CAST(NULL AS TEXT) AS assignment_on_value, \
                g.conditions \
         FROM applicable g WHERE g.subject_kind = 'principal' AND g.subject = {principal} \
         UNION ALL \
         SELECT g.permission, g.effect, g.on_kind, g.on_value, g.id, h.role, h.assignment_id, \
                h.on_kind, h.on_value, g.conditions \
         FROM applicable g JOIN held h ON g.subject_kind = 'role' AND g.subject = h.role \
         UNION ALL \
         SELECT bg.permission, 'allow', 'tenant', NULL, bg.id, h.role, h.assignment_id, \
                h.on_kind, h.on_value, NULL \
         FROM builtin_grants bg JOIN held h ON bg.role = h.role \
         ORDER BY 1, 5, 7, 6",
        roles = a.role_ctes(tables),
        assignments = tables.name("assignments"),
        grants = tables.name("grants"),
        tenant = a.tenant,
        a_existed = a.existed("a"),
        a_in_force = a.in_force("a"),
        g_existed = a.existed("g"),
        g_in_force = a.in_force("g"),
    );
    b.query(&sql)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| {
            Ok(EffectivePermissionRow {
                permission: permission(r, 0)?,
                effect: effect(r, 1)?,
                on: scope(r, 2)?,
                grant_id: r.try_get(4)?,
                via_role: r.try_get(5)?,
                via_assignment: r.try_get(6)?,
                assignment_on: scope(r, 7)?,
                conditions: conditions(r, 9)?,
            })
        })
        .collect()
}
