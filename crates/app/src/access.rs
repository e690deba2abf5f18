//! Who may do what, in one place: the authenticated caller ([`Principal`]) and [`authorize`], the
//! one mechanism every use case goes through before it reads or writes anything. It asks the same
//! decision point that answers `POST /v1/tenants/{tenant}/check`.
//!
//! The rules: platform administrators (users of `_system` with the root role `platform_admin`) may
//! do everything in every tenant. Anyone else acts only in their own tenant, where the tenant's
//! policy decides (403 when it denies); any other tenant, and anything in it, does not exist for
//! them (404), so existence does not leak across tenants. Platform-wide operations (creating and
//! listing tenants, changing a tenant's plan or standing) are decided by the policy of `_system`.
//! Nobody disables or erases themselves, and nobody grants or assigns what they do not hold.
//! A caller authenticated with an API key acts as the key's owner, but holds only what the key's
//! scopes (and `on`) cover, even when the owner is a platform administrator.

use std::net::IpAddr;

use custodian_domain::id::is_type_id;
use custodian_domain::policy::{
    AsOf, Check, Effect, Permission, Scope, Target, Verdict, builtin_role_names,
};
use custodian_domain::user::{ROLE_PLATFORM_ADMIN, ROLE_TENANT_ADMIN};
use custodian_domain::{Actor, ActorKind, Timestamp};

use crate::App;
use crate::auth::index::{IndexedUser, SYSTEM_TENANT};
use crate::commands::Context;
use crate::error::AppError;
use crate::validate::check_tenant;

/// The authenticated caller: a verified access token whose session, user and tenant may act now,
/// or an API key ([`Principal::key`]) whose owner and tenant may act now.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The user.
    pub user_id: String,
    /// Their tenant (`_system` for platform administrators).
    pub tenant: String,
    /// The session the token belongs to (empty for an API key).
    pub session_id: String,
    /// The user as the index knows them now (platform roles included).
    pub user: IndexedUser,
    /// The address the request came from, for grants with `source_ip` conditions.
    pub ip: Option<IpAddr>,
    /// The API key the caller authenticated with; `user_id` is then the key's owner. The key
    /// may use only what its scopes cover and its owner holds now.
    pub key: Option<KeyPrincipal>,
}

/// The API key a principal acts with: what it may use, whatever its owner holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPrincipal {
    /// `key_...`.
    pub id: String,
    /// The permissions it may use.
    pub scopes: Vec<Permission>,
    /// What they cover (the whole tenant when absent).
    pub on: Option<Scope>,
    /// The user who issued it for someone else: it never does what they no longer may.
    pub issuer: Option<String>,
}

impl Principal {
    /// The actor written on events this caller causes.
    pub fn actor(&self) -> Actor {
        match &self.key {
            Some(k) => Actor {
                kind: ActorKind::ApiKey,
                id: k.id.clone(),
            },
            None => Actor {
                kind: ActorKind::User,
                id: self.user_id.clone(),
            },
        }
    }

    /// Refuses an API key where only a person's own session makes sense (logging out, their
    /// sessions, their password, their second factor): `what` says what was asked.
    pub fn require_session(&self, what: &str) -> Result<(), AppError> {
        if self.key.is_some() {
            Err(AppError::forbidden(format!(
                "an API key cannot {what}: sign in with a session"
            )))
        } else {
            Ok(())
        }
    }

    /// A command context for this caller at `now`.
    pub fn context(&self, now: Timestamp) -> Context {
        Context {
            actor: self.actor(),
            now,
            correlation_id: None,
        }
    }

    /// Whether this caller holds the platform's root role.
    pub fn is_platform_admin(&self) -> bool {
        self.tenant == SYSTEM_TENANT && self.user.roles.iter().any(|r| r == ROLE_PLATFORM_ADMIN)
    }
}

/// The answer for a tenant the caller cannot see.
pub fn no_tenant(tenant: &str) -> AppError {
    AppError::not_found(format!("no tenant {tenant}"))
}

/// Lets `principal` do `permission` on `target` in `tenant`, as the tenant's policy decides now,
/// for a tenant that exists. Someone of another tenant is told it does not exist.
pub fn authorize(
    app: &App,
    principal: &Principal,
    tenant: &str,
    permission: &str,
    target: Target<'_>,
) -> Result<(), AppError> {
    check_tenant(tenant, true)?;
    let root = principal.is_platform_admin();
    if (!root && principal.tenant != tenant) || !app.security.index.tenant_exists(tenant) {
        return Err(no_tenant(tenant));
    }
    let permission = Permission::parse(permission).map_err(AppError::Internal)?;
    if root {
        return if key_covers(app, principal, tenant, &permission, target) {
            Ok(())
        } else {
            Err(key_forbidden(&permission, tenant))
        };
    }
    if !key_covers(app, principal, tenant, &permission, target) {
        return Err(key_forbidden(&permission, tenant));
    }
    if holds(app, principal, tenant, &permission, target)? {
        Ok(())
    } else {
        Err(AppError::forbidden(format!(
            "this needs the permission {permission} in tenant {tenant}"
        )))
    }
}

/// Lets `principal` do a platform-wide `permission` (on the tenant `on`, if one is concerned), as
/// the policy of `_system` decides. A user of the tenant concerned is refused (403); anyone else
/// outside `_system` is told the tenant does not exist.
pub fn authorize_platform(
    app: &App,
    principal: &Principal,
    permission: &str,
    on: Option<&str>,
) -> Result<(), AppError> {
    if principal.tenant != SYSTEM_TENANT {
        return match on {
            Some(t) if t != principal.tenant => Err(no_tenant(t)),
            _ => Err(AppError::forbidden(format!(
                "this needs the permission {permission} in the platform scope _system"
            ))),
        };
    }
    let resource = on.map(|t| custodian_domain::policy::Resource {
        resource_type: "tenant".to_owned(),
        id: t.to_owned(),
    });
    let target = resource.as_ref().map_or(Target::Tenant, Target::Resource);
    authorize(app, principal, SYSTEM_TENANT, permission, target)
}

fn key_forbidden(permission: &Permission, tenant: &str) -> AppError {
    AppError::forbidden(format!(
        "this needs the permission {permission} in tenant {tenant}, which the API key's scopes do not cover"
    ))
}

/// Whether the API key `principal` acts with (if any) covers `permission` on `target`: one of its
/// scopes covers the permission, and its `on` covers the target (a resource of the type, the
/// resource itself, or a member of the group). A principal without a key is not limited here.
pub fn key_covers(
    app: &App,
    principal: &Principal,
    tenant: &str,
    permission: &Permission,
    target: Target<'_>,
) -> bool {
    let Some(key) = &principal.key else {
        return true;
    };
    key.scopes.iter().any(|s| s.covers(permission))
        && scope_covers(app, tenant, key.on.as_ref(), target)
}

/// Whether `on` (absent: the whole tenant) covers `target` in `tenant`.
pub fn scope_covers(app: &App, tenant: &str, on: Option<&Scope>, target: Target<'_>) -> bool {
    match (on, target) {
        (None, _) => true,
        (Some(Scope::ResourceType(t)), Target::Type(u)) => t == u,
        (Some(Scope::ResourceType(t)), Target::Resource(r)) => *t == r.resource_type,
        (Some(Scope::Resource(r)), Target::Resource(s)) => r == s,
        (Some(Scope::Group(g)), Target::Group(h)) => g == h,
        (Some(Scope::Group(g)), Target::Resource(r)) => app
            .policy
            .read(tenant, |p| p.groups_of(r).contains(&g.as_str()))
            .unwrap_or(false),
        _ => false,
    }
}

/// Whether `principal` holds all of `permission` (a pattern) on `target` in `tenant` now: the
/// policy allows it and no deny overlaps it. Platform administrators hold everything. An API key
/// holds only what its scopes cover and its owner holds.
pub fn holds(
    app: &App,
    principal: &Principal,
    tenant: &str,
    permission: &Permission,
    target: Target<'_>,
) -> Result<bool, AppError> {
    if !key_covers(app, principal, tenant, permission, target) {
        return Ok(false);
    }
    if let Some(issuer) = principal.key.as_ref().and_then(|k| k.issuer.as_deref())
        && !user_holds(app, tenant, issuer, principal.ip, permission, target)?
    {
        return Ok(false);
    }
    if principal.is_platform_admin() {
        return Ok(true);
    }
    if principal.tenant != tenant {
        return Ok(false);
    }
    let (decision, _) = app.policy.decide(
        tenant,
        &Check {
            principal: &principal.user_id,
            permission,
            target,
            ip: principal.ip,
            as_of: AsOf::now(app.now()),
            explain: false,
        },
    )?;
    Ok(decision.verdict == Verdict::Allow)
}

/// Whether the user `user_id` of `tenant` holds `permission` on `target` now: the root role in
/// `_system`, or the tenant's policy (which refuses disabled and deleted users).
fn user_holds(
    app: &App,
    tenant: &str,
    user_id: &str,
    ip: Option<IpAddr>,
    permission: &Permission,
    target: Target<'_>,
) -> Result<bool, AppError> {
    if tenant == SYSTEM_TENANT
        && app.security.index.user(tenant, user_id).is_some_and(|u| {
            u.status == custodian_domain::user::UserStatus::Active
                && u.roles.iter().any(|r| r == ROLE_PLATFORM_ADMIN)
        })
    {
        return Ok(true);
    }
    let (decision, _) = app.policy.decide(
        tenant,
        &Check {
            principal: user_id,
            permission,
            target,
            ip,
            as_of: AsOf::now(app.now()),
            explain: false,
        },
    )?;
    Ok(decision.verdict == Verdict::Allow)
}

/// What a scope covers, as the target of a check.
pub fn scope_target(on: Option<&Scope>) -> Target<'_> {
    match on {
        None => Target::Tenant,
        Some(Scope::ResourceType(t)) => Target::Type(t),
        Some(Scope::Resource(r)) => Target::Resource(r),
        Some(Scope::Group(g)) => Target::Group(g),
    }
}

/// Refuses to let `principal` give away `permission` on `on` unless they hold it there: nobody
/// grants what they do not hold.
pub fn may_give(
    app: &App,
    principal: &Principal,
    tenant: &str,
    permission: &Permission,
    on: Option<&Scope>,
) -> Result<(), AppError> {
    if holds(app, principal, tenant, permission, scope_target(on))? {
        Ok(())
    } else {
        Err(AppError::forbidden(format!(
            "you cannot give {permission}{}: you do not hold it there yourself",
            on.map(|s| format!(" on {s}")).unwrap_or_default()
        )))
    }
}

/// Refuses to let `principal` assign `role` on `on` unless they hold every permission the role
/// allows (its own and its ancestors' grants, each on its own scope or the assignment's).
pub fn may_assign(
    app: &App,
    principal: &Principal,
    tenant: &str,
    role: &str,
    on: Option<&Scope>,
) -> Result<(), AppError> {
    if principal.is_platform_admin() && principal.key.is_none() {
        return Ok(());
    }
    let now = AsOf::now(app.now());
    let needed: Vec<(Permission, Option<Scope>)> = app.policy.read(tenant, |p| {
        p.role_grants_reached(role, now)
            .into_iter()
            .filter(|g| g.effect == Effect::Allow && g.window.at(now.time).is_active())
            .map(|g| (g.permission.clone(), g.on.clone().or_else(|| on.cloned())))
            .collect()
    })?;
    for (permission, scope) in needed {
        if !holds(
            app,
            principal,
            tenant,
            &permission,
            scope_target(scope.as_ref()),
        )? {
            return Err(AppError::forbidden(format!(
                "you cannot assign {role}: it allows {permission}{}, which you do not hold",
                scope.map(|s| format!(" on {s}")).unwrap_or_default()
            )));
        }
    }
    Ok(())
}

/// [`authorize`] on the user `user_id` of `tenant`, which must look like a user id (anything else
/// names no user: 404).
pub fn authorize_user(
    app: &App,
    principal: &Principal,
    tenant: &str,
    permission: &str,
    user_id: &str,
) -> Result<(), AppError> {
    let resource = custodian_domain::policy::Resource {
        resource_type: "user".to_owned(),
        id: user_id.to_owned(),
    };
    authorize(
        app,
        principal,
        tenant,
        permission,
        Target::Resource(&resource),
    )?;
    // Only a platform administrator changes one: an administrator of `_system` through its
    // policy could otherwise take the platform over (reset its password, change its email).
    if !principal.is_platform_admin()
        && !permission.ends_with(":read")
        && app
            .security
            .index
            .user(tenant, user_id)
            .is_some_and(|u| u.roles.iter().any(|r| r == ROLE_PLATFORM_ADMIN))
    {
        return Err(AppError::forbidden(
            "only a platform administrator can act on a platform administrator",
        ));
    }
    if is_type_id("user", user_id) {
        Ok(())
    } else {
        Err(no_user())
    }
}

/// An administrator cannot lock themselves out: with no other administrator left, nobody could
/// undo it (the platform's only administrator would leave it unmanageable).
pub fn not_oneself(
    principal: &Principal,
    tenant: &str,
    user_id: &str,
    what: &str,
) -> Result<(), AppError> {
    if principal.tenant == tenant && principal.user_id == user_id {
        Err(AppError::conflict(format!(
            "administrators cannot {what} themselves; ask another administrator"
        )))
    } else {
        Ok(())
    }
}

/// The roles asked for a new user, sorted out: the platform's root role (kept on the user, only
/// in `_system` and only from a platform administrator) and the tenant's roles to assign
/// tenant-wide (`tenant_admin` is the earlier name of `admin`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolesAsked {
    /// Roles recorded on the user: `platform_admin` or nothing.
    pub platform: Vec<String>,
    /// Roles of the tenant to assign on the whole tenant.
    pub assign: Vec<String>,
}

impl RolesAsked {
    /// Every role, as the answer lists them.
    pub fn names(&self) -> Vec<String> {
        self.platform.iter().chain(&self.assign).cloned().collect()
    }
}

/// Sorts out the `roles` of a user creation or invitation in `tenant`, and checks that
/// `principal` may give them: `platform_admin` only in `_system` and only from a platform
/// administrator; any role of the tenant (`tenant_admin` meaning `admin`) needs
/// `assignment:create` and every permission of the role. An unknown role is `Invalid`.
pub fn check_roles(
    app: &App,
    principal: &Principal,
    tenant: &str,
    roles: Option<Vec<String>>,
) -> Result<RolesAsked, AppError> {
    let mut out = RolesAsked::default();
    for role in roles.unwrap_or_default() {
        match role.as_str() {
            ROLE_PLATFORM_ADMIN if tenant == SYSTEM_TENANT => {
                if !principal.is_platform_admin() || principal.key.is_some() {
                    return Err(AppError::forbidden(
                        "only a platform administrator (signed in, not through an API key) can grant platform_admin",
                    ));
                }
                if !out.platform.contains(&role) {
                    out.platform.push(role);
                }
                continue;
            }
            ROLE_PLATFORM_ADMIN => {
                return Err(AppError::invalid(
                    "roles: platform_admin can only be granted in the _system tenant",
                ));
            }
            _ => {}
        }
        let name = match role.as_str() {
            ROLE_TENANT_ADMIN if tenant == SYSTEM_TENANT => {
                return Err(AppError::invalid(
                    "roles: tenant_admin has no meaning in the platform scope _system; assign its roles with POST /v1/tenants/_system/assignments",
                ));
            }
            ROLE_TENANT_ADMIN => "admin".to_owned(),
            _ => role,
        };
        if !app.policy.read(tenant, |p| p.role_exists(&name))? {
            return Err(AppError::invalid(format!(
                "roles: unknown role {name:.64?}; the built-in roles are {} (and platform_admin in _system)",
                builtin_role_names().join(", ")
            )));
        }
        authorize(app, principal, tenant, "assignment:create", Target::Tenant)?;
        may_assign(app, principal, tenant, &name, None)?;
        if !out.assign.contains(&name) {
            out.assign.push(name);
        }
    }
    Ok(out)
}

/// The roles an access token names: the user's platform roles and the roles they hold on the whole
/// tenant now. Services that decide locally from tokens see these as of the token's issue.
pub fn token_roles(app: &App, tenant: &str, user_id: &str, user_roles: &[String]) -> Vec<String> {
    let now = AsOf::now(app.now());
    let mut roles: Vec<String> = user_roles
        .iter()
        .filter(|r| *r == ROLE_PLATFORM_ADMIN)
        .cloned()
        .collect();
    if let Ok(held) = app.policy.read(tenant, |p| p.tenant_roles_of(user_id, now)) {
        for r in held {
            if !roles.contains(&r) {
                roles.push(r);
            }
        }
    }
    roles
}

/// The answer for a user that does not exist, or that the caller may not know exists.
pub fn no_user() -> AppError {
    AppError::not_found("no such user")
}
