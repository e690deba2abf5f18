//! User administration within a tenant: create and invite users, list and read them, change their
//! profile, disable, enable and erase them, issue password resets, and list or end their sessions.
//!
//! Every use case needs an administrator of the tenant (or a platform administrator), checked by
//! [`crate::access`]. To anyone of another tenant, the tenant and everything in it do not exist:
//! `NotFound`, never `Forbidden`, guessed user ids included.
//!
//! Users live in streams `{tenant}/user/{user_id}`. Their email and name are sealed under their own
//! data key before they reach an event; the email is unique per tenant through the reservations of
//! [`super::emails`], claimed before the user's stream is created and released when the address
//! changes or the user is erased. Erasure destroys the data key, so the log keeps only ciphertext
//! nobody can open any more.

use std::collections::HashMap;
use std::sync::Mutex;

use custodian_domain::Timestamp;
use custodian_domain::id::type_id;
use custodian_domain::secret::Sealed;
use custodian_domain::session::RevokeReason;
use custodian_domain::user::{self, User, UserCommand, UserEvent, UserKind, UserStatus};
use custodian_projections::users as user_view;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::emails;
use crate::access::{Principal, authorize, authorize_user, check_roles, no_user, not_oneself};
use crate::auth::secrets::{self, DataKey};
use crate::auth::tokens::{OpaqueToken, TokenKind};
use crate::auth::vault_error;
use crate::commands::{self, Context};
use crate::error::AppError;
use crate::identity::Accepted;
use crate::sessions::{SessionListQuery, SessionPage, page_of_user, revoke_all};
use crate::users::{failed_user, load_user, run_user, seal_password};
use crate::validate::{
    MAX_PASSWORD_CHARS, check_cursor, check_len, check_name, from_name, normalize_email, page,
    parse_flag, parse_limit,
};
use crate::{App, Security, stream};
use custodian_domain::policy::Target;

/// What kind of principal a user is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserKindName {
    /// A human: logs in with a password (and MFA).
    Person,
    /// An autonomous program acting on its own: authenticates with API keys only.
    Agent,
    /// Another system: authenticates with API keys only.
    Service,
}

impl From<UserKindName> for UserKind {
    fn from(k: UserKindName) -> Self {
        match k {
            UserKindName::Person => UserKind::Person,
            UserKindName::Agent => UserKind::Agent,
            UserKindName::Service => UserKind::Service,
        }
    }
}

impl From<UserKind> for UserKindName {
    fn from(k: UserKind) -> Self {
        match k {
            UserKind::Person => Self::Person,
            UserKind::Agent => Self::Agent,
            UserKind::Service => Self::Service,
        }
    }
}

/// Where a user is in their life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserStatusName {
    /// Invited, has not accepted yet.
    Invited,
    /// May act.
    Active,
    /// Refused everywhere until enabled again.
    Disabled,
    /// Erased: email and name are gone for good.
    Deleted,
}

impl From<UserStatus> for UserStatusName {
    fn from(s: UserStatus) -> Self {
        match s {
            UserStatus::Invited => Self::Invited,
            UserStatus::Active => Self::Active,
            UserStatus::Disabled => Self::Disabled,
            UserStatus::Deleted => Self::Deleted,
        }
    }
}

/// `POST /v1/tenants/{tenant}/users`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    /// The email address, unique in the tenant (at most 254 characters).
    #[schema(example = "ada@acme.test")]
    pub email: String,
    /// Display name, 1 to 200 characters.
    #[schema(example = "Ada Lovelace")]
    pub name: String,
    /// `person` when absent.
    #[serde(default)]
    pub kind: Option<UserKindName>,
    /// A first password, for people only (agents and services authenticate with API keys).
    #[serde(default)]
    pub password: Option<String>,
    /// Roles of the tenant to assign on the whole tenant (`admin`, `manager`, `developer`,
    /// `viewer` or a custom role; `tenant_admin` is the earlier name of `admin`), which needs
    /// `assignment:create` and every permission of the role; and `platform_admin`, only in
    /// `_system` and from a platform administrator.
    #[serde(default)]
    pub roles: Option<Vec<String>>,
}

/// `POST /v1/tenants/{tenant}/invitations`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    /// The invitee's email address, unique in the tenant.
    #[schema(example = "grace@acme.test")]
    pub email: String,
    /// Display name, 1 to 200 characters.
    pub name: String,
    /// Roles, as for creation; they are assigned at once and take effect when the invitation is
    /// accepted (an invited user cannot sign in before).
    #[serde(default)]
    pub roles: Option<Vec<String>>,
}

/// `PATCH /v1/tenants/{tenant}/users/{user_id}`: give at least one field.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    /// A new email address, unique in the tenant.
    #[serde(default)]
    pub email: Option<String>,
    /// A new display name, 1 to 200 characters.
    #[serde(default)]
    pub name: Option<String>,
}

/// `POST /v1/tenants/{tenant}/users/{user_id}/disable`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableUserRequest {
    /// Why, for the audit trail: 1 to 500 characters.
    #[schema(example = "left the company")]
    pub reason: String,
}

/// A user as an administrator sees them.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    /// The user's id.
    #[schema(example = "user_01jd8x3k2m4n5p6q7r8s9t0v1w")]
    pub user_id: String,
    /// Their tenant.
    pub tenant: String,
    /// Person, agent or service.
    pub kind: UserKindName,
    /// Lifecycle status.
    pub status: UserStatusName,
    /// The email address; `null` once erased.
    pub email: Option<String>,
    /// The display name; `null` once erased.
    pub name: Option<String>,
    /// Roles recorded on the user itself: the platform's root role `platform_admin` (and, on users
    /// created before the policy existed, `tenant_admin`, carried over to an assignment of
    /// `admin`). The tenant's roles are assignments: `GET .../assignments?principal={user_id}`.
    pub roles: Vec<String>,
    /// When the user was created or invited.
    pub created_at: String,
    /// When the user last changed.
    pub updated_at: String,
}

/// What is known of a user's credentials: flags and counters, never a secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialStatus {
    /// The user's id.
    pub user_id: String,
    /// Whether the user has a password.
    pub password_set: bool,
    /// Whether TOTP is required at login.
    pub mfa_enabled: bool,
    /// Unused recovery codes.
    pub recovery_codes_left: u32,
    /// Consecutive failed logins.
    pub failed_logins: u32,
    /// Logins are refused until then (a time in the past means the lock has expired).
    pub locked_until: Option<String>,
    /// When the user last logged in.
    pub last_login_at: Option<String>,
    /// When the password was last set, changed or reset.
    pub password_changed_at: Option<String>,
}

/// A user and their credential status.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserDetail {
    /// The user.
    #[serde(flatten)]
    pub user: UserView,
    /// Their credential status; `null` once erased.
    pub credentials: Option<CredentialStatus>,
}

/// A page of users, by id (creation order).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserPage {
    /// The users of this page.
    pub items: Vec<UserView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A page of credential statuses, by user id.
#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialPage {
    /// The credential statuses of this page.
    pub items: Vec<CredentialStatus>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A created user.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserCreated {
    /// The new user's id.
    pub user_id: String,
    /// Their tenant.
    pub tenant: String,
    /// Person, agent or service.
    pub kind: UserKindName,
    /// `active`.
    pub status: UserStatusName,
    /// The email address as stored (domain lowercased).
    pub email: String,
    /// The display name.
    pub name: String,
    /// The roles given: `platform_admin` recorded on the user, and the tenant's roles assigned on
    /// the whole tenant (`tenant_admin` answered as `admin`).
    pub roles: Vec<String>,
    /// Whether a password was set.
    pub password_set: bool,
    /// The log position of the user's creation (`Custodian-Min-Position` for reads).
    pub position: u64,
}

/// An invitation: deliver the token to the invitee, who accepts it at
/// `/v1/auth/invitations/accept`. The token is shown only here.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationIssued {
    /// The invited user's id (status `invited` until they accept).
    pub user_id: String,
    /// Their tenant.
    pub tenant: String,
    /// The single-use invitation token. Only its keyed hash is stored.
    pub invitation_token: String,
    /// The token cannot be accepted after this.
    pub expires_at: String,
    /// The log position of the invitation.
    pub position: u64,
}

/// A password reset token: deliver it to the user, who sets a new password at
/// `/v1/auth/password/reset`. The token is shown only here.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResetIssued {
    /// The user.
    pub user_id: String,
    /// Their tenant.
    pub tenant: String,
    /// The single-use reset token. Only its keyed hash is stored.
    pub reset_token: String,
    /// The token is dead after this.
    pub expires_at: String,
    /// The log position of the issue.
    pub position: u64,
}

/// A user command's answer: the user as the command left them.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserChanged {
    /// The user's id.
    pub user_id: String,
    /// Their tenant.
    pub tenant: String,
    /// Lifecycle status after the command.
    pub status: UserStatusName,
    /// The log position of the last event written (the log's head when nothing changed).
    pub position: u64,
}

/// Sessions ended by an administrator.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionsRevoked {
    /// The user.
    pub user_id: String,
    /// How many live sessions were revoked.
    pub revoked: u64,
    /// The log position of the last revocation (the log's head when there was none).
    pub position: u64,
}

/// `GET .../users` parameters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserListQuery {
    /// Page size, 1 to 200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only users with this status.
    #[param(value_type = Option<UserStatusName>)]
    pub status: Option<String>,
    /// Only users of this kind.
    #[param(value_type = Option<UserKindName>)]
    pub kind: Option<String>,
}

/// `GET .../credentials` parameters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CredentialListQuery {
    /// `true`: only users whose login is locked now; `false` (default): all.
    #[param(value_type = Option<bool>)]
    pub locked: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Creating users.

/// Create a user of `tenant`, active at once.
///
/// People may be given a first password (checked against the policy); agents and services
/// authenticate with API keys only, so a password for them is `Invalid`. An email held by another
/// user of the tenant is a `Conflict`.
pub async fn create(
    app: &App,
    principal: &Principal,
    tenant: &str,
    req: CreateUserRequest,
) -> Result<UserCreated, AppError> {
    authorize(app, principal, tenant, "user:create", Target::Tenant)?;
    let email = normalize_email(&req.email)?;
    let name = check_name(&req.name)?;
    let kind = req.kind.unwrap_or(UserKindName::Person);
    let roles = check_roles(app, principal, tenant, req.roles)?;
    if let Some(password) = &req.password {
        if kind != UserKindName::Person {
            return Err(AppError::invalid(
                "password: agents and services authenticate with API keys only; omit password",
            ));
        }
        check_new_password(&app.security, password)?;
    }
    let new = seal_new_user(&app.security, tenant, email, name).await?;
    let credential = match &req.password {
        Some(password) => match seal_password(app, tenant, &new.user_id, password, false).await {
            Ok(c) => Some(c),
            Err(e) => {
                forget_key(&app.security, &new.user_id).await;
                return Err(e);
            }
        },
        None => None,
    };
    let ctx = principal.context(app.now());
    let command = UserCommand::Create {
        kind: kind.into(),
        email: new.sealed_email.clone(),
        name: new.sealed_name.clone(),
        email_index: new.email_index.clone(),
        roles: roles.platform.clone(),
        credential: credential.clone(),
    };
    let (position, user) = create_with_email(app, &ctx, tenant, &new, command).await?;
    let position =
        crate::authz::manage::assign_tenant_roles(app, &ctx, tenant, &new.user_id, &roles.assign)
            .await?
            .max(position);
    Ok(UserCreated {
        user_id: new.user_id,
        tenant: tenant.to_owned(),
        kind,
        status: user.status.into(),
        email: new.email,
        name: new.name,
        roles: roles.names(),
        password_set: credential.is_some(),
        position,
    })
}

/// Invite a person to `tenant`: the user exists with status `invited` until they accept.
///
/// Answers the invitation token, which only this answer shows; its keyed hash is what the log
/// keeps. An email held by another user of the tenant is a `Conflict`.
pub async fn invite(
    app: &App,
    principal: &Principal,
    tenant: &str,
    req: InviteRequest,
) -> Result<InvitationIssued, AppError> {
    authorize(app, principal, tenant, "user:create", Target::Tenant)?;
    let email = normalize_email(&req.email)?;
    let name = check_name(&req.name)?;
    let roles = check_roles(app, principal, tenant, req.roles)?;
    let security = &app.security;
    let new = seal_new_user(security, tenant, email, name).await?;
    let token = match OpaqueToken::new(TokenKind::Invitation, tenant, &new.user_id, 0) {
        Ok(token) => token,
        Err(e) => {
            forget_key(security, &new.user_id).await;
            return Err(AppError::internal(format!(
                "cannot make an invitation token: {e}"
            )));
        }
    };
    let ctx = principal.context(app.now());
    let expires_at = ctx.now.plus(security.lifetimes.invitation);
    let command = UserCommand::Invite {
        kind: UserKind::Person,
        email: new.sealed_email.clone(),
        name: new.sealed_name.clone(),
        email_index: new.email_index.clone(),
        roles: roles.platform.clone(),
        invitation: security.tokens.hash(&token.to_string()),
        expires_at,
    };
    let (position, _) = create_with_email(app, &ctx, tenant, &new, command).await?;
    let position =
        crate::authz::manage::assign_tenant_roles(app, &ctx, tenant, &new.user_id, &roles.assign)
            .await?
            .max(position);
    Ok(InvitationIssued {
        user_id: new.user_id,
        tenant: tenant.to_owned(),
        invitation_token: token.to_string(),
        expires_at: expires_at.to_string(),
        position,
    })
}

/// A first password: within the accepted length, and what the policy accepts.
fn check_new_password(security: &Security, password: &str) -> Result<(), AppError> {
    check_len("password", password, 1, MAX_PASSWORD_CHARS)?;
    security
        .policy
        .check(password, false)
        .map_err(|e| AppError::invalid(format!("password: {e}")))
}

/// What a new user is made of, sealed.
struct NewUser {
    user_id: String,
    email: String,
    name: String,
    sealed_email: Sealed,
    sealed_name: Sealed,
    email_index: String,
}

/// Creates the new user's data key and seals their email and name under it.
async fn seal_new_user(
    security: &Security,
    tenant: &str,
    email: String,
    name: String,
) -> Result<NewUser, AppError> {
    let user_id = type_id("user", Uuid::now_v7());
    let key = security
        .vault
        .create(tenant, &user_id)
        .await
        .map_err(vault_error)?;
    Ok(NewUser {
        sealed_email: secrets::seal(&key, email.as_bytes(), user_id.as_bytes()),
        sealed_name: secrets::seal(&key, name.as_bytes(), user_id.as_bytes()),
        email_index: security.keyring.email_index(tenant, &email),
        user_id,
        email,
        name,
    })
}

/// Forgets a data key made for a user who never came to exist.
async fn forget_key(security: &Security, user_id: &str) {
    if let Err(e) = security.vault.destroy(user_id).await {
        tracing::warn!(user_id, error = %e, "cannot destroy an unused data key");
    }
    security.forget_key(user_id);
}

/// Claims the new user's email, then creates their stream with `command`; undoes the claim and the
/// key if the creation fails. Returns the position of the user's creation and the new user.
async fn create_with_email(
    app: &App,
    ctx: &Context,
    tenant: &str,
    new: &NewUser,
    command: UserCommand,
) -> Result<(u64, User), AppError> {
    if let Err(e) = emails::claim(app, ctx, tenant, &new.email_index, &new.user_id).await {
        forget_key(&app.security, &new.user_id).await;
        return Err(e);
    }
    let created = match stream(tenant, "user", &new.user_id) {
        Ok(s) => commands::execute(
            &app.store,
            Some(&app.states),
            &s,
            ctx,
            None,
            user::evolve,
            |u| user::decide(u.as_ref(), command.clone()),
        )
        .await
        .map_err(|e| failed_user(e, ctx.now)),
        Err(e) => Err(e),
    };
    match created {
        Ok(done) => {
            let user = done
                .state
                .ok_or_else(|| AppError::internal("a user creation left no user"))?;
            Ok((done.position.unwrap_or_default(), user))
        }
        Err(e) => {
            emails::abandon(app, ctx, tenant, &new.email_index, &new.user_id).await;
            forget_key(&app.security, &new.user_id).await;
            Err(e)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading users.

/// A page of `tenant`'s users by id (creation order), optionally only those of one status or
/// kind. Erased users are listed without email and name.
pub async fn list(
    app: &App,
    principal: &Principal,
    tenant: &str,
    q: &UserListQuery,
) -> Result<UserPage, AppError> {
    authorize(app, principal, tenant, "user:read", Target::Tenant)?;
    let limit = parse_limit(q.limit.as_deref())?;
    check_cursor("user", q.cursor.as_deref())?;
    if let Some(status) = &q.status
        && from_name::<UserStatusName>(status).is_none()
    {
        return Err(AppError::invalid(
            "status must be one of invited, active, disabled, deleted",
        ));
    }
    if let Some(kind) = &q.kind
        && from_name::<UserKindName>(kind).is_none()
    {
        return Err(AppError::invalid(
            "kind must be one of person, agent, service",
        ));
    }
    let filter = user_view::UserFilter {
        status: q.status.clone(),
        kind: q.kind.clone(),
    };
    let tables = app.tables("users")?;
    let rows = user_view::list_users(
        app.db.pool(),
        &tables,
        tenant,
        &filter,
        q.cursor.as_deref(),
        limit + 1,
    )
    .await?;
    let (rows, next_cursor) = page(rows, limit, |r| &r.user_id);
    Ok(UserPage {
        items: user_views(app, rows).await?,
        next_cursor,
    })
}

/// A user of `tenant` and their credential status, as the views hold them. An erased user shows
/// status `deleted`, without email, name or credentials.
pub async fn get(
    app: &App,
    principal: &Principal,
    tenant: &str,
    user_id: &str,
) -> Result<UserDetail, AppError> {
    authorize_user(app, principal, tenant, "user:read", user_id)?;
    let row = find_user_row(app, tenant, user_id).await?;
    let tables = app.tables("users")?;
    let credentials = user_view::credentials(app.db.pool(), &tables, tenant, user_id)
        .await?
        .map(credential_status);
    let user = user_views(app, vec![row])
        .await?
        .pop()
        .ok_or_else(no_user)?;
    Ok(UserDetail { user, credentials })
}

/// A page of `tenant`'s credential statuses by user id; with `locked=true`, only users whose login
/// is locked now.
pub async fn credentials(
    app: &App,
    principal: &Principal,
    tenant: &str,
    q: &CredentialListQuery,
) -> Result<CredentialPage, AppError> {
    authorize(app, principal, tenant, "user:read", Target::Tenant)?;
    let locked = parse_flag("locked", q.locked.as_deref())?;
    let limit = parse_limit(q.limit.as_deref())?;
    check_cursor("user", q.cursor.as_deref())?;
    let tables = app.tables("users")?;
    let rows = user_view::list_credentials(
        app.db.pool(),
        &tables,
        tenant,
        locked,
        &app.now().to_string(),
        q.cursor.as_deref(),
        limit + 1,
    )
    .await?;
    let (rows, next_cursor) = page(rows, limit, |r| &r.user_id);
    Ok(CredentialPage {
        items: rows.into_iter().map(credential_status).collect(),
        next_cursor,
    })
}

fn kind_of(row_kind: &str) -> Result<UserKindName, AppError> {
    from_name(row_kind)
        .ok_or_else(|| AppError::internal(format!("unknown kind {row_kind} in the view")))
}

fn status_of(row_status: &str) -> Result<UserStatusName, AppError> {
    from_name(row_status)
        .ok_or_else(|| AppError::internal(format!("unknown status {row_status} in the view")))
}

fn open_field(
    keys: &HashMap<String, DataKey>,
    sealed: Option<String>,
    user_id: &str,
) -> Result<Option<String>, AppError> {
    match (sealed, keys.get(user_id)) {
        (Some(sealed), Some(key)) => Ok(Some(Security::open_text(key, &Sealed(sealed), user_id)?)),
        _ => Ok(None),
    }
}

/// Opens the personal data of view rows with their users' data keys (one query for the page).
async fn user_views(app: &App, rows: Vec<user_view::UserRow>) -> Result<Vec<UserView>, AppError> {
    let subjects: Vec<String> = rows
        .iter()
        .filter(|r| r.email.is_some() || r.name.is_some())
        .map(|r| r.user_id.clone())
        .collect();
    let keys = app
        .security
        .vault
        .get_many(&subjects)
        .await
        .map_err(vault_error)?;
    rows.into_iter()
        .map(|r| {
            let email = open_field(&keys, r.email, &r.user_id)?;
            let name = open_field(&keys, r.name, &r.user_id)?;
            Ok(UserView {
                kind: kind_of(&r.kind)?,
                status: status_of(&r.status)?,
                email,
                name,
                roles: r.roles,
                created_at: r.created_at,
                updated_at: r.updated_at,
                user_id: r.user_id,
                tenant: r.tenant,
            })
        })
        .collect()
}

fn credential_status(c: user_view::CredentialRow) -> CredentialStatus {
    CredentialStatus {
        user_id: c.user_id,
        password_set: c.password_set,
        mfa_enabled: c.mfa_enabled,
        recovery_codes_left: c.recovery_codes_left,
        failed_logins: c.failed_logins,
        locked_until: c.locked_until,
        last_login_at: c.last_login_at,
        password_changed_at: c.password_changed_at,
    }
}

/// The user as the view holds them; `NotFound` if the view does not know them.
async fn find_user_row(
    app: &App,
    tenant: &str,
    user_id: &str,
) -> Result<user_view::UserRow, AppError> {
    let tables = app.tables("users")?;
    user_view::find_user(app.db.pool(), &tables, tenant, user_id)
        .await?
        .ok_or_else(no_user)
}

// ---------------------------------------------------------------------------------------------
// Changing users.

/// The answer of a command on a user: their status after it, at the position it wrote (the log's
/// head when it wrote nothing).
async fn user_changed(
    app: &App,
    tenant: &str,
    user_id: &str,
    written: u64,
    user: Option<User>,
) -> Result<UserChanged, AppError> {
    let position = app.answer_position(written).await?;
    let status = user.map(|u| u.status).ok_or_else(no_user)?;
    Ok(UserChanged {
        user_id: user_id.to_owned(),
        tenant: tenant.to_owned(),
        status: status.into(),
        position,
    })
}

/// Change a user's email and/or name.
///
/// A new email is claimed in the tenant before the profile changes (held by another user: a
/// `Conflict`, and nothing changes), and the old one released after, so it can be claimed again.
/// An erased user is `NotFound`.
pub async fn update(
    app: &App,
    principal: &Principal,
    tenant: &str,
    user_id: &str,
    req: UpdateUserRequest,
) -> Result<UserChanged, AppError> {
    authorize_user(app, principal, tenant, "user:update", user_id)?;
    if req.email.is_none() && req.name.is_none() {
        return Err(AppError::invalid("give email, name, or both"));
    }
    let email = req.email.as_deref().map(normalize_email).transpose()?;
    let name = req.name.as_deref().map(check_name).transpose()?;
    let security = &app.security;
    let current = load_user(app, tenant, user_id)
        .await?
        .filter(|u| u.status != UserStatus::Deleted)
        .ok_or_else(no_user)?;
    let key = security.data_key(user_id).await?.ok_or_else(no_user)?;
    let seal = |text: &str| secrets::seal(&key, text.as_bytes(), user_id.as_bytes());
    let new_email = email.map(|e| (seal(&e), security.keyring.email_index(tenant, &e)));
    let new_name = name.map(|n| seal(&n));
    let ctx = principal.context(app.now());
    let mut position = 0;
    let claimed = match &new_email {
        Some((_, index)) if *index != current.email_index => {
            position = emails::claim(app, &ctx, tenant, index, user_id).await?;
            Some(index.clone())
        }
        _ => None,
    };
    // The address the update replaced, as seen by the decision that made it.
    let replaced: Mutex<Option<String>> = Mutex::new(None);
    let updated = run_admin(app, &ctx, tenant, user_id, |u| {
        if let Ok(mut r) = replaced.lock() {
            *r = Some(u.email_index.clone());
        }
        UserCommand::UpdateProfile {
            email: new_email.clone(),
            name: new_name.clone(),
        }
    })
    .await;
    let done = match updated {
        Ok(done) => done,
        Err(e) => {
            if let Some(index) = &claimed {
                emails::abandon(app, &ctx, tenant, index, user_id).await;
            }
            return Err(e);
        }
    };
    position = position.max(done.position.unwrap_or_default());
    let now_index = done.state.as_ref().map(|u| u.email_index.clone());
    let replaced = replaced.lock().ok().and_then(|mut r| r.take());
    // Release whatever this user holds and no longer uses: the replaced address, and the claimed
    // one if a concurrent change moved the user elsewhere.
    for index in [replaced, claimed].into_iter().flatten() {
        if Some(&index) != now_index.as_ref() {
            position = position.max(emails::release(app, &ctx, tenant, &index, user_id).await?);
        }
    }
    user_changed(app, tenant, user_id, position, done.state).await
}

/// Disable a user: they are refused everywhere, and their live sessions are revoked, at once.
///
/// Administrators cannot disable themselves (`Conflict`); a user who is not active is a
/// `Conflict` too.
pub async fn disable(
    app: &App,
    principal: &Principal,
    tenant: &str,
    user_id: &str,
    req: DisableUserRequest,
) -> Result<UserChanged, AppError> {
    authorize_user(app, principal, tenant, "user:update", user_id)?;
    not_oneself(principal, tenant, user_id, "disable")?;
    check_len("reason", req.reason.trim(), 1, 500)?;
    let ctx = principal.context(app.now());
    let done = run_admin(app, &ctx, tenant, user_id, |_| UserCommand::Disable {
        reason: req.reason.clone(),
    })
    .await?;
    let (_, revoked) = revoke_by_admin(app, &ctx, tenant, user_id).await?;
    let position = done.position.unwrap_or_default().max(revoked);
    user_changed(app, tenant, user_id, position, done.state).await
}

/// Enable a disabled user; any other status is a `Conflict`.
pub async fn enable(
    app: &App,
    principal: &Principal,
    tenant: &str,
    user_id: &str,
) -> Result<UserChanged, AppError> {
    authorize_user(app, principal, tenant, "user:update", user_id)?;
    let ctx = principal.context(app.now());
    let done = run_admin(app, &ctx, tenant, user_id, |_| UserCommand::Enable).await?;
    user_changed(
        app,
        tenant,
        user_id,
        done.position.unwrap_or_default(),
        done.state,
    )
    .await
}

/// Erase a user (crypto-shredding).
///
/// Records the erasure (`user.deleted`), releases the email, revokes every session, destroys the
/// user's data key and forgets any copy of it in memory: their email, name and credentials stay in
/// the log only as ciphertext nobody can open. The user remains listed with status `deleted`.
/// Erasing again is `NotFound` (after finishing an erasure that stopped half-way). Administrators
/// cannot erase themselves (`Conflict`).
pub async fn erase(
    app: &App,
    principal: &Principal,
    tenant: &str,
    user_id: &str,
) -> Result<Accepted, AppError> {
    authorize_user(app, principal, tenant, "user:delete", user_id)?;
    not_oneself(principal, tenant, user_id, "erase")?;
    let ctx = principal.context(app.now());
    let current = load_user(app, tenant, user_id).await?.ok_or_else(no_user)?;
    if current.status == UserStatus::Deleted {
        // A previous erasure may have stopped half-way: finish it, then say it is gone.
        finish_erasure(app, &ctx, tenant, user_id, &current.email_index).await?;
        return Err(no_user());
    }
    let done = run_admin(app, &ctx, tenant, user_id, |_| UserCommand::Delete).await?;
    let index = done
        .state
        .as_ref()
        .map(|u| u.email_index.clone())
        .ok_or_else(no_user)?;
    let position = done
        .position
        .unwrap_or_default()
        .max(finish_erasure(app, &ctx, tenant, user_id, &index).await?);
    Ok(Accepted {
        user_id: user_id.to_owned(),
        tenant: tenant.to_owned(),
        position,
    })
}

/// Runs an administrator's command on a user, built from the user's current state; a refusal is
/// what [`failed_user`] makes of it.
async fn run_admin(
    app: &App,
    ctx: &Context,
    tenant: &str,
    user_id: &str,
    command: impl Fn(&User) -> UserCommand,
) -> Result<commands::Done<Option<User>, UserEvent>, AppError> {
    run_user(app, ctx, tenant, user_id, command)
        .await
        .map_err(|e| failed_user(e, ctx.now))
}

/// Revokes every live session of a user on an administrator's behalf; returns how many were
/// revoked and the last position written (0 if none).
async fn revoke_by_admin(
    app: &App,
    ctx: &Context,
    tenant: &str,
    user_id: &str,
) -> Result<(u64, u64), AppError> {
    revoke_all(
        app,
        ctx,
        tenant,
        user_id,
        None,
        RevokeReason::RevokedByAdmin,
    )
    .await
}

/// Releases an erased user's email, revokes their sessions and destroys their data key; each
/// step does nothing when already done. Returns the last position written (0 if none).
async fn finish_erasure(
    app: &App,
    ctx: &Context,
    tenant: &str,
    user_id: &str,
    email_index: &str,
) -> Result<u64, AppError> {
    let released = emails::release(app, ctx, tenant, email_index, user_id).await?;
    let (_, revoked) = revoke_by_admin(app, ctx, tenant, user_id).await?;
    app.security
        .vault
        .destroy(user_id)
        .await
        .map_err(vault_error)?;
    app.security.forget_key(user_id);
    Ok(released.max(revoked))
}

/// Issue a password reset token for a person.
///
/// Answers the token, which only this answer shows (the log keeps its keyed hash); it expires
/// after the reset lifetime. A user who is not active, or an agent or service, is a `Conflict`.
pub async fn issue_password_reset(
    app: &App,
    principal: &Principal,
    tenant: &str,
    user_id: &str,
) -> Result<ResetIssued, AppError> {
    authorize_user(app, principal, tenant, "user:update", user_id)?;
    let security = &app.security;
    let token = OpaqueToken::new(TokenKind::PasswordReset, tenant, user_id, 0)
        .map_err(|e| AppError::internal(format!("cannot make a reset token: {e}")))?;
    let hash = security.tokens.hash(&token.to_string());
    let ctx = principal.context(app.now());
    let expires_at: Timestamp = ctx.now.plus(security.lifetimes.reset);
    let done = run_admin(app, &ctx, tenant, user_id, |_| {
        UserCommand::IssuePasswordReset {
            token: hash.clone(),
            expires_at,
        }
    })
    .await?;
    Ok(ResetIssued {
        user_id: user_id.to_owned(),
        tenant: tenant.to_owned(),
        reset_token: token.to_string(),
        expires_at: expires_at.to_string(),
        position: done.position.unwrap_or_default(),
    })
}

// ---------------------------------------------------------------------------------------------
// Sessions.

/// A page of a user's sessions by id (start order), as an administrator sees them: all of them
/// unless `active=true`. The caller's own session, if listed, is marked `current`.
pub async fn sessions(
    app: &App,
    principal: &Principal,
    tenant: &str,
    user_id: &str,
    q: &SessionListQuery,
) -> Result<SessionPage, AppError> {
    authorize_user(app, principal, tenant, "session:read", user_id)?;
    find_user_row(app, tenant, user_id).await?;
    page_of_user(app, tenant, user_id, q, false, Some(&principal.session_id)).await
}

/// Revoke every live session of a user; their access tokens stop working at once. Answers how
/// many were revoked.
pub async fn revoke_sessions(
    app: &App,
    principal: &Principal,
    tenant: &str,
    user_id: &str,
) -> Result<SessionsRevoked, AppError> {
    authorize_user(app, principal, tenant, "session:delete", user_id)?;
    load_user(app, tenant, user_id).await?.ok_or_else(no_user)?;
    let ctx = principal.context(app.now());
    let (revoked, written) = revoke_by_admin(app, &ctx, tenant, user_id).await?;
    let position = app.answer_position(written).await?;
    Ok(SessionsRevoked {
        user_id: user_id.to_owned(),
        revoked,
        position,
    })
}
