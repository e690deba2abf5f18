//! User administration within a tenant: create and invite users, list and read them, change their
//! profile, disable, enable and erase them, issue password resets, and list or end their sessions.
//!
//! Every route is under `/v1/tenants/{tenant}/` and needs an administrator of that tenant (or a
//! platform administrator). To anyone of another tenant, the tenant and everything in it do not
//! exist: 404, never 403, whatever the path, guessed user ids included.
//!
//! Users live in streams `{tenant}/user/{user_id}`. Their email and name are sealed under their own
//! data key before they reach an event; the email is unique per tenant through the reservation
//! stream `{tenant}/email/{blind index}`, claimed before the user's stream is created and released
//! when the address changes or the user is erased. Erasure destroys the data key, so the log keeps
//! only ciphertext nobody can open any more.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use custodian_domain::email::{self, EmailCommand, EmailEvent, Reservation};
use custodian_domain::id::{is_type_id, type_id};
use custodian_domain::secret::Sealed;
use custodian_domain::session::{self, RevokeReason, SessionCommand};
use custodian_domain::user::{
    self, ROLE_PLATFORM_ADMIN, ROLE_TENANT_ADMIN, User, UserCommand, UserKind, UserStatus,
};
use custodian_domain::{DomainEvent, Timestamp};
use custodian_projections::{sessions as session_view, users as user_view};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::index::SYSTEM_TENANT;
use crate::auth::secrets::{self, DataKey};
use crate::auth::tokens::{OpaqueToken, TokenKind};
use crate::commands::{self, Context};
use crate::identity::{
    Accepted, MAX_PASSWORD_CHARS, load_user, positioned, revoke_sessions, run_user, user_problem,
};
use crate::identity::{
    Identity, JsonBody, Principal, check_len, check_tenant, command_problem, normalize_email, now,
    stream, vault_problem,
};
use crate::identity::{
    PathParams, QueryParams, answer_position, from_name, parse_flag, parse_limit, view_problem,
    view_tables,
};
use crate::respond::{PROBLEM_JSON, Problem, ProblemDocument};
use crate::state::AppState;
use custodian_app::users::seal_password;

/// How long a reservation claimed by a user whose stream does not exist is left to its claimant:
/// a creation appends the user's stream right after claiming, so a claim older than this without
/// a user is the remains of a creation that failed half-way, and may be taken over.
const ABANDONED_CLAIM_SECONDS: i64 = 30;

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
    /// Built-in roles: `tenant_admin`; `platform_admin` only in `_system`, granted by a platform
    /// administrator.
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
    /// Built-in roles granted on acceptance, as for creation.
    #[serde(default)]
    pub roles: Option<Vec<String>>,
}

/// `PATCH /v1/tenants/{tenant}/users/{user_id}`: give at least one field.
#[derive(Debug, Deserialize, ToSchema)]
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
    /// Built-in roles.
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
    /// Built-in roles.
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

/// A session as the `sessions` view holds it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// The session's id.
    pub session_id: String,
    /// Whose session.
    pub user_id: String,
    /// `active` or `revoked` (an active session may have expired: see `expires_at`).
    pub status: String,
    /// How the login completed: `password`, `password_totp` or `password_recovery_code`.
    pub method: String,
    /// Why it was revoked.
    pub revoke_reason: Option<String>,
    /// The client's address at login.
    pub ip: Option<String>,
    /// The client's `User-Agent` at login.
    pub user_agent: Option<String>,
    /// When the login started it.
    pub started_at: String,
    /// When its refresh token was last rotated.
    pub last_refreshed_at: Option<String>,
    /// It cannot be refreshed after this.
    pub expires_at: String,
    /// When it was revoked.
    pub revoked_at: Option<String>,
    /// Whether this is the session of the access token that asked.
    pub current: bool,
}

/// A page of sessions, by id (start order).
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionPage {
    /// The sessions of this page.
    pub items: Vec<SessionView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
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
#[derive(Debug, Deserialize, IntoParams)]
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

/// `GET .../users/{user_id}/sessions` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionListQuery {
    /// `true`: only sessions that are neither revoked nor expired; `false` (default): all.
    #[param(value_type = Option<bool>)]
    pub active: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// `GET .../credentials` parameters.
#[derive(Debug, Deserialize, IntoParams)]
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
// Access and validation.

/// Lets administrators of `tenant` (and platform administrators) through, for a tenant that
/// exists. A user of another tenant is told it does not exist. The platform scope `_system` is
/// administered by platform administrators only.
fn admin_of(state: &AppState, principal: &Principal, tenant: &str) -> Result<(), Problem> {
    check_tenant(tenant, true)?;
    principal.require_admin_of(tenant)?;
    if tenant == SYSTEM_TENANT {
        principal.require_platform_admin()?;
    }
    if state.security.index.tenant_exists(tenant) {
        Ok(())
    } else {
        Err(Problem::not_found(format!("no tenant {tenant}")))
    }
}

/// [`admin_of`], and `user_id` looks like a user id (anything else names no user: 404).
fn admin_of_user(
    state: &AppState,
    principal: &Principal,
    tenant: &str,
    user_id: &str,
) -> Result<(), Problem> {
    admin_of(state, principal, tenant)?;
    if is_type_id("user", user_id) {
        Ok(())
    } else {
        Err(no_user())
    }
}

/// An administrator cannot lock themselves out: with no other administrator left, nobody could
/// undo it (the platform's only administrator would leave it unmanageable).
fn not_oneself(
    principal: &Principal,
    tenant: &str,
    user_id: &str,
    what: &str,
) -> Result<(), Problem> {
    if principal.tenant == tenant && principal.user_id == user_id {
        Err(Problem::conflict(format!(
            "administrators cannot {what} themselves; ask another administrator"
        )))
    } else {
        Ok(())
    }
}

fn no_user() -> Problem {
    Problem::not_found("no such user")
}

fn check_name(name: &str) -> Result<String, Problem> {
    let name = name.trim();
    check_len("name", name, 1, 200)?;
    Ok(name.to_owned())
}

/// Built-in roles, deduplicated: `tenant_admin` anywhere; `platform_admin` only in `_system` and
/// only from a platform administrator.
fn check_roles(
    principal: &Principal,
    tenant: &str,
    roles: Option<Vec<String>>,
) -> Result<Vec<String>, Problem> {
    let mut out: Vec<String> = vec![];
    for role in roles.unwrap_or_default() {
        match role.as_str() {
            ROLE_TENANT_ADMIN => {}
            ROLE_PLATFORM_ADMIN if tenant == SYSTEM_TENANT => {
                if !principal.is_platform_admin() {
                    return Err(Problem::forbidden(
                        "only a platform administrator can grant platform_admin",
                    ));
                }
            }
            ROLE_PLATFORM_ADMIN => {
                return Err(Problem::validation(
                    "roles: platform_admin can only be granted in the _system tenant",
                ));
            }
            other => {
                return Err(Problem::validation(format!(
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

fn check_new_password(identity: &Identity, password: &str) -> Result<(), Problem> {
    check_len("password", password, 1, MAX_PASSWORD_CHARS)?;
    identity
        .policy
        .check(password)
        .map_err(|e| Problem::validation(format!("password: {e}")))
}

fn check_cursor(prefix: &str, cursor: Option<&str>) -> Result<(), Problem> {
    match cursor {
        Some(c) if !is_type_id(prefix, c) => Err(Problem::validation(
            "cursor is not a cursor this listing returned",
        )),
        _ => Ok(()),
    }
}

/// Keeps the first `limit` items, and the cursor after the last of them if there were more.
fn page<T>(mut items: Vec<T>, limit: u32, id: impl Fn(&T) -> &str) -> (Vec<T>, Option<String>) {
    let limit = limit as usize;
    if items.len() > limit {
        items.truncate(limit);
        let next = items.last().map(|i| id(i).to_owned());
        (items, next)
    } else {
        (items, None)
    }
}

// ---------------------------------------------------------------------------------------------
// Email reservations.

fn taken() -> Problem {
    Problem::conflict("the email address is already in use in this tenant")
}

/// Claims the email with blind index `index` in `tenant` for `user_id`; returns the position
/// written (0 when `user_id` held it already). A claim held by a user who was erased, or by one
/// whose stream never came to exist (a creation that failed half-way), is taken over.
async fn claim_email(
    state: &AppState,
    ctx: &Context,
    tenant: &str,
    index: &str,
    user_id: &str,
) -> Result<u64, Problem> {
    let s = stream(tenant, "email", index)?;
    let records = commands::read_stream(state.store.as_ref(), &s, 1).await?;
    let mut reservation = Reservation::default();
    for r in &records {
        let event = EmailEvent::decode(r.event_type.as_str(), r.schema, &r.data)
            .map_err(|e| Problem::internal(format!("corrupt reservation {s}: {e}")))?;
        reservation = email::evolve(reservation, &event);
    }
    let mut gone = None;
    if let Some(holder) = reservation.holder.as_deref().filter(|h| *h != user_id) {
        let claimed_at = records.last().map(|r| r.occurred_at);
        let abandoned = match load_user(state, tenant, holder).await {
            Ok(Some(u)) => u.status == UserStatus::Deleted,
            Ok(None) => claimed_at
                .is_some_and(|at| at.until(&ctx.now).whole_seconds() > ABANDONED_CLAIM_SECONDS),
            Err(_) => false,
        };
        if abandoned {
            gone = Some(holder.to_owned());
        }
    }
    let done = commands::execute(
        &state.store,
        Some(&state.states),
        &s,
        ctx,
        Reservation::default(),
        email::evolve,
        |r: &Reservation| {
            email::decide(
                r,
                EmailCommand::Claim {
                    user_id: user_id.to_owned(),
                    holder_gone: gone.is_some() && r.holder == gone,
                },
            )
        },
    )
    .await
    .map_err(|e| command_problem(e, |_| taken()))?;
    Ok(done.position.unwrap_or_default())
}

/// Releases the email with blind index `index` in `tenant` if `user_id` holds it.
async fn release_email(
    state: &AppState,
    ctx: &Context,
    tenant: &str,
    index: &str,
    user_id: &str,
) -> Result<u64, Problem> {
    let s = stream(tenant, "email", index)?;
    let done = commands::execute(
        &state.store,
        Some(&state.states),
        &s,
        ctx,
        Reservation::default(),
        email::evolve,
        |r: &Reservation| {
            email::decide(
                r,
                EmailCommand::Release {
                    user_id: user_id.to_owned(),
                },
            )
        },
    )
    .await
    .map_err(|e| command_problem(e, |_| taken()))?;
    Ok(done.position.unwrap_or_default())
}

/// Undoes a claim after the command it was for failed; a failure here is only logged, the first
/// failure is what the client hears about.
async fn abandon_claim(state: &AppState, ctx: &Context, tenant: &str, index: &str, user_id: &str) {
    if let Err(e) = release_email(state, ctx, tenant, index, user_id).await {
        tracing::warn!(
            tenant,
            user_id,
            error = e.detail(),
            "cannot release an email claim"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the views.

fn kind_of(row_kind: &str) -> Result<UserKindName, Problem> {
    from_name(row_kind)
        .ok_or_else(|| Problem::internal(format!("unknown kind {row_kind} in the view")))
}

fn status_of(row_status: &str) -> Result<UserStatusName, Problem> {
    from_name(row_status)
        .ok_or_else(|| Problem::internal(format!("unknown status {row_status} in the view")))
}

fn open_field(
    keys: &HashMap<String, DataKey>,
    sealed: Option<String>,
    user_id: &str,
) -> Result<Option<String>, Problem> {
    match (sealed, keys.get(user_id)) {
        (Some(sealed), Some(key)) => Ok(Some(Identity::open_text(key, &Sealed(sealed), user_id)?)),
        _ => Ok(None),
    }
}

/// Opens the personal data of view rows with their users' data keys (one query for the page).
async fn user_views(
    state: &AppState,
    rows: Vec<user_view::UserRow>,
) -> Result<Vec<UserView>, Problem> {
    let subjects: Vec<String> = rows
        .iter()
        .filter(|r| r.email.is_some() || r.name.is_some())
        .map(|r| r.user_id.clone())
        .collect();
    let keys = state
        .security
        .vault
        .get_many(&subjects)
        .await
        .map_err(vault_problem)?;
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

fn session_status(s: session_view::SessionRow, current: Option<&str>) -> SessionView {
    SessionView {
        current: current == Some(s.session_id.as_str()),
        session_id: s.session_id,
        user_id: s.user_id,
        status: s.status,
        method: s.method,
        revoke_reason: s.revoke_reason,
        ip: s.ip,
        user_agent: s.user_agent,
        started_at: s.started_at,
        last_refreshed_at: s.last_refreshed_at,
        expires_at: s.expires_at,
        revoked_at: s.revoked_at,
    }
}

/// The user as the view holds them; 404 if the view does not know them.
async fn find_user_row(
    state: &AppState,
    tenant: &str,
    user_id: &str,
) -> Result<user_view::UserRow, Problem> {
    let tables = view_tables(state, "users")?;
    user_view::find_user(state.db.pool(), &tables, tenant, user_id)
        .await
        .map_err(view_problem)?
        .ok_or_else(no_user)
}

// ---------------------------------------------------------------------------------------------
// Creating users.

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
    identity: &Identity,
    tenant: &str,
    email: String,
    name: String,
) -> Result<NewUser, Problem> {
    let user_id = type_id("user", Uuid::now_v7());
    let key = identity
        .vault
        .create(tenant, &user_id)
        .await
        .map_err(vault_problem)?;
    Ok(NewUser {
        sealed_email: secrets::seal(&key, email.as_bytes(), user_id.as_bytes()),
        sealed_name: secrets::seal(&key, name.as_bytes(), user_id.as_bytes()),
        email_index: identity.keyring.email_index(tenant, &email),
        user_id,
        email,
        name,
    })
}

/// Forgets a data key made for a user who never came to exist.
async fn forget_key(identity: &Identity, user_id: &str) {
    if let Err(e) = identity.vault.destroy(user_id).await {
        tracing::warn!(user_id, error = %e, "cannot destroy an unused data key");
    }
    identity.forget_key(user_id);
}

/// Claims the new user's email, then creates their stream with `command`; undoes the claim and the
/// key if the creation fails. Returns the position of the user's creation.
async fn create_with_email(
    state: &AppState,
    ctx: &Context,
    tenant: &str,
    new: &NewUser,
    command: UserCommand,
) -> Result<(u64, User), Problem> {
    if let Err(e) = claim_email(state, ctx, tenant, &new.email_index, &new.user_id).await {
        forget_key(&state.security, &new.user_id).await;
        return Err(e);
    }
    let s = stream(tenant, "user", &new.user_id)?;
    let created = commands::execute(
        &state.store,
        Some(&state.states),
        &s,
        ctx,
        None,
        user::evolve,
        |u| user::decide(u.as_ref(), command.clone()),
    )
    .await
    .map_err(|e| command_problem(e, user_problem));
    match created {
        Ok(done) => {
            let user = done
                .state
                .ok_or_else(|| Problem::internal("a user creation left no user"))?;
            Ok((done.position.unwrap_or_default(), user))
        }
        Err(e) => {
            abandon_claim(state, ctx, tenant, &new.email_index, &new.user_id).await;
            forget_key(&state.security, &new.user_id).await;
            Err(e)
        }
    }
}

/// Create a user, active at once.
///
/// People may be given a first password; agents and services authenticate with API keys only.
/// The email must not be in use by another user of the tenant.
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/users",
    tag = "users",
    security(("bearer" = [])),
    params(("tenant" = String, Path, description = "The tenant's slug")),
    request_body = CreateUserRequest,
    responses(
        (status = 201, description = "The user exists", body = UserCreated),
        (status = 400, description = "Malformed JSON", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 401, description = "No valid access token", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = "The caller is not an administrator of the tenant, or grants platform_admin without being one", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 404, description = "No such tenant, or not one the caller may see", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 409, description = "The email address is already in use in the tenant", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 413, description = "Body too large", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 415, description = "The body is not `application/json`", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 422, description = "A field is missing, of the wrong type, unknown or invalid; the password does not meet the policy or is given for an agent or service; an unknown role", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 503, description = "The store or the authentication index is busy; retry after `Retry-After`", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
pub async fn create_user(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(tenant): PathParams<String>,
    JsonBody(req): JsonBody<CreateUserRequest>,
) -> Result<Response, Problem> {
    admin_of(&state, &principal, &tenant)?;
    let email = normalize_email(&req.email)?;
    let name = check_name(&req.name)?;
    let kind = req.kind.unwrap_or(UserKindName::Person);
    let roles = check_roles(&principal, &tenant, req.roles)?;
    if let Some(password) = &req.password {
        if kind != UserKindName::Person {
            return Err(Problem::validation(
                "password: agents and services authenticate with API keys only; omit password",
            ));
        }
        check_new_password(&state.security, password)?;
    }
    let identity = &state.security;
    let new = seal_new_user(identity, &tenant, email, name).await?;
    let credential = match &req.password {
        Some(password) => match seal_password(&state, &tenant, &new.user_id, password).await {
            Ok(c) => Some(c),
            Err(e) => {
                forget_key(identity, &new.user_id).await;
                return Err(e.into());
            }
        },
        None => None,
    };
    let ctx = principal.context(now());
    let command = UserCommand::Create {
        kind: kind.into(),
        email: new.sealed_email.clone(),
        name: new.sealed_name.clone(),
        email_index: new.email_index.clone(),
        roles: roles.clone(),
        credential: credential.clone(),
    };
    let (position, user) = create_with_email(&state, &ctx, &tenant, &new, command).await?;
    Ok(positioned(
        StatusCode::CREATED,
        position,
        UserCreated {
            user_id: new.user_id,
            tenant,
            kind,
            status: user.status.into(),
            email: new.email,
            name: new.name,
            roles,
            password_set: credential.is_some(),
            position,
        },
    ))
}

/// Invite a person to the tenant.
///
/// Answers the invitation token, which only this answer shows: deliver it to the invitee, who sets
/// a password with it at `/v1/auth/invitations/accept`.
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/invitations",
    tag = "users",
    security(("bearer" = [])),
    params(("tenant" = String, Path, description = "The tenant's slug")),
    request_body = InviteRequest,
    responses(
        (status = 201, description = "The user is invited", body = InvitationIssued),
        (status = 400, description = "Malformed JSON", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 401, description = "No valid access token", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = "The caller is not an administrator of the tenant, or grants platform_admin without being one", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 404, description = "No such tenant, or not one the caller may see", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 409, description = "The email address is already in use in the tenant", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 413, description = "Body too large", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 415, description = "The body is not `application/json`", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 422, description = "A field is missing, of the wrong type, unknown or invalid", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 503, description = "The store or the authentication index is busy; retry after `Retry-After`", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
pub async fn invite_user(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(tenant): PathParams<String>,
    JsonBody(req): JsonBody<InviteRequest>,
) -> Result<Response, Problem> {
    admin_of(&state, &principal, &tenant)?;
    let email = normalize_email(&req.email)?;
    let name = check_name(&req.name)?;
    let roles = check_roles(&principal, &tenant, req.roles)?;
    let identity = &state.security;
    let new = seal_new_user(identity, &tenant, email, name).await?;
    let token = OpaqueToken::new(TokenKind::Invitation, &tenant, &new.user_id, 0)
        .map_err(|e| Problem::internal(format!("cannot make an invitation token: {e}")))?;
    let ctx = principal.context(now());
    let expires_at = ctx.now.plus(identity.lifetimes.invitation);
    let command = UserCommand::Invite {
        kind: UserKind::Person,
        email: new.sealed_email.clone(),
        name: new.sealed_name.clone(),
        email_index: new.email_index.clone(),
        roles,
        invitation: identity.tokens.hash(&token.to_string()),
        expires_at,
    };
    let (position, _) = create_with_email(&state, &ctx, &tenant, &new, command).await?;
    Ok(positioned(
        StatusCode::CREATED,
        position,
        InvitationIssued {
            user_id: new.user_id,
            tenant,
            invitation_token: token.to_string(),
            expires_at: expires_at.to_string(),
            position,
        },
    ))
}

// ---------------------------------------------------------------------------------------------
// Reading users.

/// List the tenant's users by id (creation order), optionally by status and kind.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/users",
    tag = "users",
    security(("bearer" = [])),
    params(("tenant" = String, Path, description = "The tenant's slug"), UserListQuery),
    responses(
        (status = 200, description = "A page of users; erased users show `email` and `name` as null", body = UserPage),
        (status = 401, description = "No valid access token", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = "The caller is not an administrator of the tenant", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 404, description = "No such tenant, or not one the caller may see", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 422, description = "`limit`, `cursor`, `status` or `kind` is invalid", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 503, description = "The view is not ready or the database is busy; retry after `Retry-After`", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
pub async fn list_users(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(tenant): PathParams<String>,
    QueryParams(q): QueryParams<UserListQuery>,
) -> Result<Json<UserPage>, Problem> {
    admin_of(&state, &principal, &tenant)?;
    let limit = parse_limit(q.limit.as_deref())?;
    check_cursor("user", q.cursor.as_deref())?;
    if let Some(status) = &q.status
        && from_name::<UserStatusName>(status).is_none()
    {
        return Err(Problem::validation(
            "status must be one of invited, active, disabled, deleted",
        ));
    }
    if let Some(kind) = &q.kind
        && from_name::<UserKindName>(kind).is_none()
    {
        return Err(Problem::validation(
            "kind must be one of person, agent, service",
        ));
    }
    let filter = user_view::UserFilter {
        status: q.status,
        kind: q.kind,
    };
    let tables = view_tables(&state, "users")?;
    let rows = user_view::list_users(
        state.db.pool(),
        &tables,
        &tenant,
        &filter,
        q.cursor.as_deref(),
        limit + 1,
    )
    .await
    .map_err(view_problem)?;
    let (rows, next_cursor) = page(rows, limit, |r| &r.user_id);
    Ok(Json(UserPage {
        items: user_views(&state, rows).await?,
        next_cursor,
    }))
}

/// Read a user and their credential status.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/users/{user_id}",
    tag = "users",
    security(("bearer" = [])),
    params(
        ("tenant" = String, Path, description = "The tenant's slug"),
        ("user_id" = String, Path, description = "The user's id"),
    ),
    responses(
        (status = 200, description = "The user; an erased user shows `email` and `name` as null", body = UserDetail),
        (status = 401, description = "No valid access token", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = "The caller is not an administrator of the tenant", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 404, description = "No such tenant or user, or not one the caller may see", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 503, description = "The view is not ready or the database is busy; retry after `Retry-After`", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
pub async fn get_user(
    State(state): State<AppState>,
    principal: Principal,
    PathParams((tenant, user_id)): PathParams<(String, String)>,
) -> Result<Json<UserDetail>, Problem> {
    admin_of_user(&state, &principal, &tenant, &user_id)?;
    let row = find_user_row(&state, &tenant, &user_id).await?;
    let tables = view_tables(&state, "users")?;
    let credentials = user_view::credentials(state.db.pool(), &tables, &tenant, &user_id)
        .await
        .map_err(view_problem)?
        .map(credential_status);
    let user = user_views(&state, vec![row])
        .await?
        .pop()
        .ok_or_else(no_user)?;
    Ok(Json(UserDetail { user, credentials }))
}

/// List the tenant's credential statuses by user id, optionally only locked accounts.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/credentials",
    tag = "users",
    security(("bearer" = [])),
    params(("tenant" = String, Path, description = "The tenant's slug"), CredentialListQuery),
    responses(
        (status = 200, description = "A page of credential statuses (erased users have none)", body = CredentialPage),
        (status = 401, description = "No valid access token", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = "The caller is not an administrator of the tenant", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 404, description = "No such tenant, or not one the caller may see", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 422, description = "`limit`, `cursor` or `locked` is invalid", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 503, description = "The view is not ready or the database is busy; retry after `Retry-After`", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
pub async fn list_credentials(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(tenant): PathParams<String>,
    QueryParams(q): QueryParams<CredentialListQuery>,
) -> Result<Json<CredentialPage>, Problem> {
    admin_of(&state, &principal, &tenant)?;
    let locked = parse_flag("locked", q.locked.as_deref())?;
    let limit = parse_limit(q.limit.as_deref())?;
    check_cursor("user", q.cursor.as_deref())?;
    let tables = view_tables(&state, "users")?;
    let rows = user_view::list_credentials(
        state.db.pool(),
        &tables,
        &tenant,
        locked,
        &now().to_string(),
        q.cursor.as_deref(),
        limit + 1,
    )
    .await
    .map_err(view_problem)?;
    let (rows, next_cursor) = page(rows, limit, |r| &r.user_id);
    Ok(Json(CredentialPage {
        items: rows.into_iter().map(credential_status).collect(),
        next_cursor,
    }))
}

// ---------------------------------------------------------------------------------------------
// Changing users.

async fn user_changed(
    state: &AppState,
    tenant: String,
    user_id: String,
    written: u64,
    user: Option<User>,
) -> Result<Response, Problem> {
    let position = answer_position(state, written).await?;
    let status = user.map(|u| u.status).ok_or_else(no_user)?;
    Ok(positioned(
        StatusCode::OK,
        position,
        UserChanged {
            user_id,
            tenant,
            status: status.into(),
            position,
        },
    ))
}

/// Change a user's email and/or name.
///
/// A new email is claimed in the tenant before the profile changes, and the old one released
/// after.
#[utoipa::path(
    patch,
    path = "/v1/tenants/{tenant}/users/{user_id}",
    tag = "users",
    security(("bearer" = [])),
    params(
        ("tenant" = String, Path, description = "The tenant's slug"),
        ("user_id" = String, Path, description = "The user's id"),
    ),
    request_body = UpdateUserRequest,
    responses(
        (status = 200, description = "The profile is updated", body = UserChanged),
        (status = 400, description = "Malformed JSON", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 401, description = "No valid access token", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = "The caller is not an administrator of the tenant", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 404, description = "No such tenant or user (or the user was erased), or not one the caller may see", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 409, description = "The new email address is already in use in the tenant", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 413, description = "Body too large", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 415, description = "The body is not `application/json`", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 422, description = "No field given, or a field is of the wrong type, unknown or invalid", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 503, description = "The store or the authentication index is busy; retry after `Retry-After`", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
pub async fn update_user(
    State(state): State<AppState>,
    principal: Principal,
    PathParams((tenant, user_id)): PathParams<(String, String)>,
    JsonBody(req): JsonBody<UpdateUserRequest>,
) -> Result<Response, Problem> {
    admin_of_user(&state, &principal, &tenant, &user_id)?;
    if req.email.is_none() && req.name.is_none() {
        return Err(Problem::validation("give email, name, or both"));
    }
    let email = req.email.as_deref().map(normalize_email).transpose()?;
    let name = req.name.as_deref().map(check_name).transpose()?;
    let identity = &state.security;
    let current = load_user(&state, &tenant, &user_id)
        .await?
        .filter(|u| u.status != UserStatus::Deleted)
        .ok_or_else(no_user)?;
    let key = identity.data_key(&user_id).await?.ok_or_else(no_user)?;
    let seal = |text: &str| secrets::seal(&key, text.as_bytes(), user_id.as_bytes());
    let new_email = email.map(|e| (seal(&e), identity.keyring.email_index(&tenant, &e)));
    let new_name = name.map(|n| seal(&n));
    let ctx = principal.context(now());
    let mut position = 0;
    let claimed = match &new_email {
        Some((_, index)) if *index != current.email_index => {
            position = claim_email(&state, &ctx, &tenant, index, &user_id).await?;
            Some(index.clone())
        }
        _ => None,
    };
    // The address the update replaced, as seen by the decision that made it.
    let replaced: Mutex<Option<String>> = Mutex::new(None);
    let updated = run_user(&state, &ctx, &tenant, &user_id, |u| {
        if let Ok(mut r) = replaced.lock() {
            *r = Some(u.email_index.clone());
        }
        UserCommand::UpdateProfile {
            email: new_email.clone(),
            name: new_name.clone(),
        }
    })
    .await
    .map_err(|e| command_problem(e, user_problem));
    let done = match updated {
        Ok(done) => done,
        Err(e) => {
            if let Some(index) = &claimed {
                abandon_claim(&state, &ctx, &tenant, index, &user_id).await;
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
            position = position.max(release_email(&state, &ctx, &tenant, &index, &user_id).await?);
        }
    }
    user_changed(&state, tenant, user_id, position, done.state).await
}

/// Disable a user: they are refused everywhere, and their sessions are revoked, at once.
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/users/{user_id}/disable",
    tag = "users",
    security(("bearer" = [])),
    params(
        ("tenant" = String, Path, description = "The tenant's slug"),
        ("user_id" = String, Path, description = "The user's id"),
    ),
    request_body = DisableUserRequest,
    responses(
        (status = 200, description = "The user is disabled and their sessions revoked", body = UserChanged),
        (status = 400, description = "Malformed JSON", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 401, description = "No valid access token", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = "The caller is not an administrator of the tenant", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 404, description = "No such tenant or user (or the user was erased), or not one the caller may see", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 409, description = "The user is not active (already disabled, or invited), or is the caller", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 413, description = "Body too large", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 415, description = "The body is not `application/json`", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 422, description = "`reason` is missing or not 1 to 500 characters", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 503, description = "The store or the authentication index is busy; retry after `Retry-After`", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
pub async fn disable_user(
    State(state): State<AppState>,
    principal: Principal,
    PathParams((tenant, user_id)): PathParams<(String, String)>,
    JsonBody(req): JsonBody<DisableUserRequest>,
) -> Result<Response, Problem> {
    admin_of_user(&state, &principal, &tenant, &user_id)?;
    not_oneself(&principal, &tenant, &user_id, "disable")?;
    check_len("reason", req.reason.trim(), 1, 500)?;
    let ctx = principal.context(now());
    let done = run_user(&state, &ctx, &tenant, &user_id, |_| UserCommand::Disable {
        reason: req.reason.clone(),
    })
    .await
    .map_err(|e| command_problem(e, user_problem))?;
    let revoked = revoke_sessions(
        &state,
        &ctx,
        &tenant,
        &user_id,
        None,
        RevokeReason::RevokedByAdmin,
    )
    .await?;
    let position = done.position.unwrap_or_default().max(revoked);
    user_changed(&state, tenant, user_id, position, done.state).await
}

/// Enable a disabled user.
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/users/{user_id}/enable",
    tag = "users",
    security(("bearer" = [])),
    params(
        ("tenant" = String, Path, description = "The tenant's slug"),
        ("user_id" = String, Path, description = "The user's id"),
    ),
    responses(
        (status = 200, description = "The user is active again", body = UserChanged),
        (status = 401, description = "No valid access token", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = "The caller is not an administrator of the tenant", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 404, description = "No such tenant or user (or the user was erased), or not one the caller may see", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 409, description = "The user is not disabled", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 503, description = "The store or the authentication index is busy; retry after `Retry-After`", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
pub async fn enable_user(
    State(state): State<AppState>,
    principal: Principal,
    PathParams((tenant, user_id)): PathParams<(String, String)>,
) -> Result<Response, Problem> {
    admin_of_user(&state, &principal, &tenant, &user_id)?;
    let ctx = principal.context(now());
    let done = run_user(&state, &ctx, &tenant, &user_id, |_| UserCommand::Enable)
        .await
        .map_err(|e| command_problem(e, user_problem))?;
    user_changed(
        &state,
        tenant,
        user_id,
        done.position.unwrap_or_default(),
        done.state,
    )
    .await
}

/// Releases an erased user's email, revokes their sessions and destroys their data key; each
/// step does nothing when already done. Returns the last position written (0 if none).
async fn finish_erasure(
    state: &AppState,
    ctx: &Context,
    tenant: &str,
    user_id: &str,
    email_index: &str,
) -> Result<u64, Problem> {
    let released = release_email(state, ctx, tenant, email_index, user_id).await?;
    let revoked = revoke_sessions(
        state,
        ctx,
        tenant,
        user_id,
        None,
        RevokeReason::RevokedByAdmin,
    )
    .await?;
    state
        .security
        .vault
        .destroy(user_id)
        .await
        .map_err(vault_problem)?;
    state.security.forget_key(user_id);
    Ok(released.max(revoked))
}

/// Erase a user.
///
/// Records the erasure, releases the email, revokes every session, and destroys the user's data
/// key: their email, name and credentials stay in the log only as ciphertext nobody can open.
/// The user remains listed with status `deleted`. Erasing again is 404.
#[utoipa::path(
    delete,
    path = "/v1/tenants/{tenant}/users/{user_id}",
    tag = "users",
    security(("bearer" = [])),
    params(
        ("tenant" = String, Path, description = "The tenant's slug"),
        ("user_id" = String, Path, description = "The user's id"),
    ),
    responses(
        (status = 200, description = "The user is erased", body = Accepted),
        (status = 401, description = "No valid access token", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = "The caller is not an administrator of the tenant", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 404, description = "No such tenant or user, the user is already erased, or not one the caller may see", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 409, description = "The user is the caller: administrators cannot erase themselves", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 503, description = "The store or the authentication index is busy; retry after `Retry-After`", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
pub async fn delete_user(
    State(state): State<AppState>,
    principal: Principal,
    PathParams((tenant, user_id)): PathParams<(String, String)>,
) -> Result<Response, Problem> {
    admin_of_user(&state, &principal, &tenant, &user_id)?;
    not_oneself(&principal, &tenant, &user_id, "erase")?;
    let ctx = principal.context(now());
    let current = load_user(&state, &tenant, &user_id)
        .await?
        .ok_or_else(no_user)?;
    if current.status == UserStatus::Deleted {
        // A previous erasure may have stopped half-way: finish it, then say it is gone.
        finish_erasure(&state, &ctx, &tenant, &user_id, &current.email_index).await?;
        return Err(no_user());
    }
    let done = run_user(&state, &ctx, &tenant, &user_id, |_| UserCommand::Delete)
        .await
        .map_err(|e| command_problem(e, user_problem))?;
    let index = done
        .state
        .as_ref()
        .map(|u| u.email_index.clone())
        .ok_or_else(no_user)?;
    let position = done
        .position
        .unwrap_or_default()
        .max(finish_erasure(&state, &ctx, &tenant, &user_id, &index).await?);
    Ok(positioned(
        StatusCode::OK,
        position,
        Accepted {
            user_id,
            tenant,
            position,
        },
    ))
}

/// Issue a password reset token for a person.
///
/// Answers the token, which only this answer shows: deliver it to the user, who sets a new
/// password with it at `/v1/auth/password/reset`.
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/users/{user_id}/password-reset",
    tag = "users",
    security(("bearer" = [])),
    params(
        ("tenant" = String, Path, description = "The tenant's slug"),
        ("user_id" = String, Path, description = "The user's id"),
    ),
    responses(
        (status = 201, description = "A reset token", body = ResetIssued),
        (status = 401, description = "No valid access token", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = "The caller is not an administrator of the tenant", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 404, description = "No such tenant or user (or the user was erased), or not one the caller may see", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 409, description = "The user is not active, or is an agent or service (API keys only)", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 503, description = "The store or the authentication index is busy; retry after `Retry-After`", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
pub async fn issue_password_reset(
    State(state): State<AppState>,
    principal: Principal,
    PathParams((tenant, user_id)): PathParams<(String, String)>,
) -> Result<Response, Problem> {
    admin_of_user(&state, &principal, &tenant, &user_id)?;
    let identity = &state.security;
    let token = OpaqueToken::new(TokenKind::PasswordReset, &tenant, &user_id, 0)
        .map_err(|e| Problem::internal(format!("cannot make a reset token: {e}")))?;
    let hash = identity.tokens.hash(&token.to_string());
    let ctx = principal.context(now());
    let expires_at: Timestamp = ctx.now.plus(identity.lifetimes.reset);
    let done = run_user(&state, &ctx, &tenant, &user_id, |_| {
        UserCommand::IssuePasswordReset {
            token: hash.clone(),
            expires_at,
        }
    })
    .await
    .map_err(|e| command_problem(e, user_problem))?;
    let position = done.position.unwrap_or_default();
    Ok(positioned(
        StatusCode::CREATED,
        position,
        ResetIssued {
            user_id,
            tenant,
            reset_token: token.to_string(),
            expires_at: expires_at.to_string(),
            position,
        },
    ))
}

// ---------------------------------------------------------------------------------------------
// Sessions.

/// List a user's sessions by id (start order).
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/users/{user_id}/sessions",
    tag = "users",
    security(("bearer" = [])),
    params(
        ("tenant" = String, Path, description = "The tenant's slug"),
        ("user_id" = String, Path, description = "The user's id"),
        SessionListQuery,
    ),
    responses(
        (status = 200, description = "A page of sessions", body = SessionPage),
        (status = 401, description = "No valid access token", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = "The caller is not an administrator of the tenant", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 404, description = "No such tenant or user, or not one the caller may see", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 422, description = "`active`, `limit` or `cursor` is invalid", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 503, description = "A view is not ready or the database is busy; retry after `Retry-After`", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
pub async fn list_user_sessions(
    State(state): State<AppState>,
    principal: Principal,
    PathParams((tenant, user_id)): PathParams<(String, String)>,
    QueryParams(q): QueryParams<SessionListQuery>,
) -> Result<Json<SessionPage>, Problem> {
    admin_of_user(&state, &principal, &tenant, &user_id)?;
    find_user_row(&state, &tenant, &user_id).await?;
    Ok(Json(
        sessions_of(
            &state,
            &tenant,
            &user_id,
            &q,
            false,
            Some(&principal.session_id),
        )
        .await?,
    ))
}

/// A page of a user's sessions from the sessions view; `active` defaults to `default_active`.
pub async fn sessions_of(
    state: &AppState,
    tenant: &str,
    user_id: &str,
    q: &SessionListQuery,
    default_active: bool,
    current: Option<&str>,
) -> Result<SessionPage, Problem> {
    let active = match q.active.as_deref() {
        None => default_active,
        some => parse_flag("active", some)?,
    };
    let limit = parse_limit(q.limit.as_deref())?;
    check_cursor("sess", q.cursor.as_deref())?;
    let tables = view_tables(state, "sessions")?;
    let rows = session_view::list_sessions(
        state.db.pool(),
        &tables,
        tenant,
        user_id,
        active,
        &now().to_string(),
        q.cursor.as_deref(),
        limit + 1,
    )
    .await
    .map_err(view_problem)?;
    let (rows, next_cursor) = page(rows, limit, |r| &r.session_id);
    Ok(SessionPage {
        items: rows
            .into_iter()
            .map(|r| session_status(r, current))
            .collect(),
        next_cursor,
    })
}

/// Revoke every live session of a user. Their access tokens stop working at once.
#[utoipa::path(
    delete,
    path = "/v1/tenants/{tenant}/users/{user_id}/sessions",
    tag = "users",
    security(("bearer" = [])),
    params(
        ("tenant" = String, Path, description = "The tenant's slug"),
        ("user_id" = String, Path, description = "The user's id"),
    ),
    responses(
        (status = 200, description = "The sessions are revoked", body = SessionsRevoked),
        (status = 401, description = "No valid access token", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = "The caller is not an administrator of the tenant", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 404, description = "No such tenant or user, or not one the caller may see", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 503, description = "The store or the authentication index is busy; retry after `Retry-After`", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
pub async fn revoke_user_sessions(
    State(state): State<AppState>,
    principal: Principal,
    PathParams((tenant, user_id)): PathParams<(String, String)>,
) -> Result<Response, Problem> {
    admin_of_user(&state, &principal, &tenant, &user_id)?;
    load_user(&state, &tenant, &user_id)
        .await?
        .ok_or_else(no_user)?;
    let ctx = principal.context(now());
    let index = &state.security.index;
    index
        .catch_up()
        .await
        .map_err(|_| Problem::unavailable("the server is catching up with the log", 1))?;
    let (mut revoked, mut position) = (0, 0);
    for session_id in index.live_sessions(&tenant, &user_id) {
        let s = stream(&tenant, "session", &session_id)?;
        let done = commands::execute(
            &state.store,
            Some(&state.states),
            &s,
            &ctx,
            None,
            session::evolve,
            |s| {
                session::decide(
                    s.as_ref(),
                    SessionCommand::Revoke {
                        reason: RevokeReason::RevokedByAdmin,
                    },
                )
            },
        )
        .await
        .map_err(|e| {
            command_problem(e, |e| {
                Problem::internal(format!("cannot revoke session {session_id}: {e}"))
            })
        })?;
        if let Some(p) = done.position {
            revoked += 1;
            position = p;
        }
    }
    let position = answer_position(&state, position).await?;
    Ok(positioned(
        StatusCode::OK,
        position,
        SessionsRevoked {
            user_id,
            revoked,
            position,
        },
    ))
}
