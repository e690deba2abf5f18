//! Who may administer what, in one place: the authenticated caller ([`Principal`]) and the rules
//! every administrative use case applies before it reads or writes anything.
//!
//! The rules: platform administrators (users of `_system` with `platform_admin`) administer every
//! tenant; a tenant's administrators (`tenant_admin`) administer that tenant only; anyone else of
//! the tenant is refused (403); anyone of another tenant is told the tenant does not exist (404),
//! so existence does not leak across tenants. `_system` itself is administered by platform
//! administrators only. Nobody disables or erases themselves. Only platform administrators grant
//! `platform_admin`, and only in `_system`.

use custodian_domain::id::is_type_id;
use custodian_domain::user::{ROLE_PLATFORM_ADMIN, ROLE_TENANT_ADMIN};
use custodian_domain::{Actor, ActorKind, Timestamp};

use crate::App;
use crate::auth::index::{IndexedUser, SYSTEM_TENANT};
use crate::commands::Context;
use crate::error::AppError;
use crate::validate::check_tenant;

/// The authenticated caller: a verified access token whose session, user and tenant may act now.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The user.
    pub user_id: String,
    /// Their tenant (`_system` for platform administrators).
    pub tenant: String,
    /// The session the token belongs to.
    pub session_id: String,
    /// The user as the index knows them now (roles included).
    pub user: IndexedUser,
}

impl Principal {
    /// The actor written on events this caller causes.
    pub fn actor(&self) -> Actor {
        Actor {
            kind: ActorKind::User,
            id: self.user_id.clone(),
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

    /// Whether this caller administers the platform.
    pub fn is_platform_admin(&self) -> bool {
        self.tenant == SYSTEM_TENANT && self.user.roles.iter().any(|r| r == ROLE_PLATFORM_ADMIN)
    }

    /// Lets platform administrators and `tenant`'s administrators through. Anyone else of
    /// `tenant` is refused with 403; anyone of another tenant is told the tenant does not exist.
    pub fn require_admin_of(&self, tenant: &str) -> Result<(), AppError> {
        if self.is_platform_admin() {
            return Ok(());
        }
        if self.tenant != tenant {
            return Err(AppError::not_found(format!("no tenant {tenant}")));
        }
        if self.user.roles.iter().any(|r| r == ROLE_TENANT_ADMIN) {
            Ok(())
        } else {
            Err(AppError::forbidden(
                "this needs the tenant_admin role in the tenant",
            ))
        }
    }

    /// Lets platform administrators through only.
    pub fn require_platform_admin(&self) -> Result<(), AppError> {
        if self.is_platform_admin() {
            Ok(())
        } else {
            Err(AppError::forbidden("this needs a platform administrator"))
        }
    }
}

/// Lets administrators of `tenant` (and platform administrators) through, for a tenant that
/// exists. A user of another tenant is told it does not exist. The platform scope `_system` is
/// administered by platform administrators only.
pub fn admin_of(app: &App, principal: &Principal, tenant: &str) -> Result<(), AppError> {
    check_tenant(tenant, true)?;
    principal.require_admin_of(tenant)?;
    if tenant == SYSTEM_TENANT {
        principal.require_platform_admin()?;
    }
    if app.security.index.tenant_exists(tenant) {
        Ok(())
    } else {
        Err(AppError::not_found(format!("no tenant {tenant}")))
    }
}

/// [`admin_of`], and `user_id` looks like a user id (anything else names no user: 404).
pub fn admin_of_user(
    app: &App,
    principal: &Principal,
    tenant: &str,
    user_id: &str,
) -> Result<(), AppError> {
    admin_of(app, principal, tenant)?;
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

/// Tenant administration beyond a tenant's own users (creating, renaming, changing the plan,
/// suspending): platform administrators only. Anyone else is told a tenant they cannot see does
/// not exist, and their own tenant is forbidden.
pub fn platform_admin_for(principal: &Principal, tenant: &str) -> Result<(), AppError> {
    if principal.is_platform_admin() {
        Ok(())
    } else if principal.tenant == tenant {
        Err(AppError::forbidden("this needs a platform administrator"))
    } else {
        Err(AppError::not_found(format!("no tenant {tenant}")))
    }
}

/// The built-in roles `principal` may grant to a user of `tenant`, deduplicated in the order given:
/// `tenant_admin` anywhere; `platform_admin` only in `_system` and only from a platform
/// administrator (anyone else is `Forbidden`). Any other name is `Invalid`.
pub fn check_roles(
    principal: &Principal,
    tenant: &str,
    roles: Option<Vec<String>>,
) -> Result<Vec<String>, AppError> {
    let mut out: Vec<String> = vec![];
    for role in roles.unwrap_or_default() {
        match role.as_str() {
            ROLE_TENANT_ADMIN => {}
            ROLE_PLATFORM_ADMIN if tenant == SYSTEM_TENANT => {
                if !principal.is_platform_admin() {
                    return Err(AppError::forbidden(
                        "only a platform administrator can grant platform_admin",
                    ));
                }
            }
            ROLE_PLATFORM_ADMIN => {
                return Err(AppError::invalid(
                    "roles: platform_admin can only be granted in the _system tenant",
                ));
            }
            other => {
                return Err(AppError::invalid(format!(
                    "roles: unknown role {other:.64?}; the built-in roles are tenant_admin and platform_admin"
                )));
            }
        }
        if !out.contains(&role) {
            out.push(role);
        }
    }
    Ok(out)
}

/// The answer for a user that does not exist, or that the caller may not know exists.
pub fn no_user() -> AppError {
    AppError::not_found("no such user")
}

/// Reading a tenant's own record: platform administrators and the tenant's own users. Anyone else
/// is told the tenant does not exist.
pub fn member_of(principal: &Principal, tenant: &str) -> Result<(), AppError> {
    if principal.is_platform_admin() || principal.tenant == tenant {
        Ok(())
    } else {
        Err(AppError::not_found(format!("no tenant {tenant}")))
    }
}
