//! The user aggregate as the use cases meet it: loading a user, running a command on one, what a
//! refusal means to the caller, and the user's secrets (password, TOTP seed) opened or sealed.

use std::net::IpAddr;

use custodian_domain::secret::Sealed;
use custodian_domain::security::{SecurityEvent, ThrottleScope};
use custodian_domain::user::{self, LoginFailure, User, UserCommand, UserError, UserEvent};
use custodian_domain::{Actor, ActorKind, Timestamp};

use crate::App;
use crate::auth::index::SYSTEM_TENANT;
use crate::auth::secrets;
use crate::auth::throttle::Engaged;
use crate::commands::{self, Context, Done, Failed};
use crate::error::AppError;
use crate::stream;

/// A user's current state, read from the log; `None` if the stream does not exist.
pub async fn load_user(app: &App, tenant: &str, user_id: &str) -> Result<Option<User>, AppError> {
    let s = stream(tenant, "user", user_id)?;
    let (user, _) = commands::load(
        app.store.as_ref(),
        Some(&app.states),
        &s,
        None,
        user::evolve,
    )
    .await?;
    Ok(user)
}

/// Runs a user command, built from the user's current state; an absent user is `NotFound`.
pub async fn run_user(
    app: &App,
    ctx: &Context,
    tenant: &str,
    user_id: &str,
    command: impl Fn(&User) -> UserCommand,
) -> Result<Done<Option<User>, UserEvent>, Failed<UserError>> {
    let s = stream(tenant, "user", user_id).map_err(|_| Failed::Refused(UserError::NotFound))?;
    commands::execute(
        &app.store,
        Some(&app.states),
        &s,
        ctx,
        None,
        user::evolve,
        |u: &Option<User>| match u {
            Some(u) => user::decide(Some(u), command(u)),
            None => Err(UserError::NotFound),
        },
    )
    .await
}

/// What a refused user command means to the caller at `now`.
pub fn user_error(e: UserError, now: Timestamp) -> AppError {
    match e {
        UserError::NotFound => AppError::not_found("no such user"),
        UserError::AlreadyExists => AppError::conflict(e.to_string()),
        UserError::Invalid { .. } => AppError::invalid(e.to_string()),
        UserError::Locked(until) => locked(now, until),
        UserError::InvalidToken | UserError::InvalidCode => {
            AppError::unauthenticated(e.to_string())
        }
        UserError::WrongStatus(_)
        | UserError::KeysOnly(_)
        | UserError::NoPassword
        | UserError::Mfa(_) => AppError::conflict(e.to_string()),
    }
}

/// A failed user command: the refusal as [`user_error`] says, a store failure as such.
pub fn failed_user(e: Failed<UserError>, now: Timestamp) -> AppError {
    AppError::from_failed(e, |e| user_error(e, now))
}

/// Locked until `until`: throttled, with the seconds left from `now`.
pub fn locked(now: Timestamp, until: Timestamp) -> AppError {
    let secs = now.until(&until).whole_seconds().max(1);
    AppError::throttled(
        "too many failed attempts; try again later",
        u64::try_from(secs).unwrap_or(1),
    )
}

/// The context of something a user does themselves.
pub fn user_actor(user_id: &str, at: Timestamp) -> Context {
    Context {
        actor: Actor {
            kind: ActorKind::User,
            id: user_id.to_owned(),
        },
        now: at,
        correlation_id: None,
    }
}

/// The context of something an unauthenticated client does (from `ip`, when known).
pub fn anonymous(ip: Option<IpAddr>, at: Timestamp) -> Context {
    Context {
        actor: Actor {
            kind: ActorKind::System,
            id: ip.map_or_else(|| "anonymous".to_owned(), |ip| format!("ip:{ip}")),
        },
        now: at,
        correlation_id: None,
    }
}

/// Where the `security.*` observations about emails of `tenant` go: the tenant's own
/// `security/login` stream, or `_system`'s when no such tenant exists.
pub fn security_home(app: &App, tenant: &str) -> String {
    if app.security.index.tenant_exists(tenant) {
        tenant.to_owned()
    } else {
        SYSTEM_TENANT.to_owned()
    }
}

/// Counts a failed login naming email `email_index` of `tenant` from `ip` against the client
/// address (across every email) and against the (email, address) pair, and records a
/// `security.login_throttled` event for each limit this failure engaged or extended: the
/// address's, the pair's, then the account-wide one (`account`, decided by the caller). Every
/// failed login comes here, whether the email names an account or not, so both append the same
/// events in the same order.
pub async fn count_failure(
    app: &App,
    tenant: &str,
    email_index: &str,
    ip: Option<IpAddr>,
    account: Option<Engaged>,
    at: Timestamp,
) {
    let security = &app.security;
    let home = security_home(app, tenant);
    let ip_text = ip.map(|ip| ip.to_string());
    let mut records = vec![];
    if let Some(ip) = ip
        && let Some(e) = security.ip_throttle.fail(&ip, at)
    {
        records.push((
            SYSTEM_TENANT.to_owned(),
            SecurityEvent::LoginThrottled {
                scope: ThrottleScope::Ip,
                ip: Some(ip.to_string()),
                email_index: None,
                failures: e.failures,
                until: e.until,
            },
        ));
    }
    let pair = (tenant.to_owned(), email_index.to_owned(), ip);
    if let Some(e) = security.email_from_ip_throttle.fail(&pair, at) {
        records.push((
            home.clone(),
            SecurityEvent::LoginThrottled {
                scope: ThrottleScope::EmailFromIp,
                ip: ip_text.clone(),
                email_index: Some(email_index.to_owned()),
                failures: e.failures,
                until: e.until,
            },
        ));
    }
    if let Some(e) = account {
        records.push((
            home,
            SecurityEvent::LoginThrottled {
                scope: ThrottleScope::Email,
                ip: ip_text,
                email_index: Some(email_index.to_owned()),
                failures: e.failures,
                until: e.until,
            },
        ));
    }
    for (tenant, event) in records {
        if let Ok(s) = stream(&tenant, "security", "login")
            && let Err(e) = commands::record(&app.store, &s, &anonymous(ip, at), &[event]).await
        {
            tracing::warn!(error = %e, "cannot record a login throttle");
        }
    }
}

/// Refuses a client address that is locked out at `at`.
pub fn check_ip(app: &App, ip: Option<IpAddr>, at: Timestamp) -> Result<(), AppError> {
    match ip.and_then(|ip| app.security.ip_throttle.locked(&ip, at)) {
        Some(until) => Err(locked(at, until)),
        None => Ok(()),
    }
}

/// Refuses email `email_index` of `tenant` from `ip` while that pair is locked out at `at`.
pub fn check_email_from_ip(
    app: &App,
    tenant: &str,
    email_index: &str,
    ip: Option<IpAddr>,
    at: Timestamp,
) -> Result<(), AppError> {
    let pair = (tenant.to_owned(), email_index.to_owned(), ip);
    match app.security.email_from_ip_throttle.locked(&pair, at) {
        Some(until) => Err(locked(at, until)),
        None => Ok(()),
    }
}

/// Forgets the failures of email `email_index` of `tenant` from `ip`, after its account signed in
/// from there. Nothing else is forgotten: failures from that address against other emails still
/// count towards the address's own limit.
pub fn forget_email_from_ip(app: &App, tenant: &str, email_index: &str, ip: Option<IpAddr>) {
    let pair = (tenant.to_owned(), email_index.to_owned(), ip);
    app.security.email_from_ip_throttle.succeed(&pair);
}

/// Records a wrong second factor as a failed login of the user (and of the client address).
pub async fn record_bad_code(
    app: &App,
    tenant: &str,
    user_id: &str,
    ip: Option<IpAddr>,
    at: Timestamp,
) -> Result<(), AppError> {
    record_failure(app, tenant, user_id, LoginFailure::BadCode, ip, at).await
}

/// Records a failed login of the user for `reason` (which may engage the account-wide limit),
/// and counts it as [`count_failure`] does.
async fn record_failure(
    app: &App,
    tenant: &str,
    user_id: &str,
    reason: LoginFailure,
    ip: Option<IpAddr>,
    at: Timestamp,
) -> Result<(), AppError> {
    let policy = app.security.lockout;
    let done = run_user(app, &user_actor(user_id, at), tenant, user_id, |_| {
        UserCommand::RecordLoginFailure {
            reason,
            ip: ip.map(|ip| ip.to_string()),
            now: at,
            policy,
        }
    })
    .await
    .map_err(|e| failed_user(e, at))?;
    let account = done.events.iter().find_map(|e| match e {
        UserEvent::LoginFailed {
            failures,
            locked_until: Some(until),
            ..
        } => Some(Engaged {
            failures: *failures,
            until: *until,
        }),
        _ => None,
    });
    let email_index = done.state.map(|u| u.email_index).unwrap_or_default();
    count_failure(app, tenant, &email_index, ip, account, at).await;
    Ok(())
}

/// Opens the user's sealed password hash, or `None` if there is none or it cannot be read
/// (erased).
async fn credential(app: &App, user_id: &str, user: &User) -> Result<Option<String>, AppError> {
    let Some(sealed) = &user.credential else {
        return Ok(None);
    };
    let Some(key) = app.security.data_key(user_id).await? else {
        return Ok(None);
    };
    Ok(Some(crate::Security::open_text(&key, sealed, user_id)?))
}

/// Hashes and seals a new password for `user_id`, after the policy accepts it for an account
/// with (`second_factor`: TOTP enabled) or without a second factor.
pub async fn seal_password(
    app: &App,
    tenant: &str,
    user_id: &str,
    password: &str,
    second_factor: bool,
) -> Result<Sealed, AppError> {
    app.security
        .policy
        .check(password, second_factor)
        .map_err(|e| AppError::invalid(format!("password: {e}")))?;
    seal(app, tenant, user_id, password).await
}

/// Hashes and seals a password the policy has already accepted (or one that already is the
/// user's, re-hashed with stronger parameters).
async fn seal(app: &App, tenant: &str, user_id: &str, password: &str) -> Result<Sealed, AppError> {
    let security = &app.security;
    let phc = security
        .hasher
        .hash(password)
        .await
        .map_err(|e| AppError::unavailable(format!("cannot hash the password now: {e}"), 1))?;
    let key = security
        .vault
        .create(tenant, user_id)
        .await
        .map_err(crate::auth::vault_error)?;
    Ok(secrets::seal(&key, phc.as_bytes(), user_id.as_bytes()))
}

/// Verifies `password` against the user's current password; records a failed login when wrong.
/// Returns whether it matched; a stronger re-hash is stored on success when parameters rose.
/// A user without a readable password costs the same work as a wrong one.
pub async fn check_password(
    app: &App,
    tenant: &str,
    user_id: &str,
    user: &User,
    password: &str,
    ip: Option<IpAddr>,
    at: Timestamp,
) -> Result<bool, AppError> {
    let security = &app.security;
    let Some(phc) = credential(app, user_id, user).await? else {
        let _ = security.hasher.verify_dummy(password).await;
        return Ok(false);
    };
    let verdict =
        security.hasher.verify(&phc, password).await.map_err(|e| {
            AppError::internal(format!("cannot verify a password of {user_id}: {e}"))
        })?;
    if !verdict.matches {
        record_failure(app, tenant, user_id, LoginFailure::BadPassword, ip, at).await?;
        return Ok(false);
    }
    let ctx = user_actor(user_id, at);
    if verdict.needs_rehash
        && let Ok(credential) = seal(app, tenant, user_id, password).await
    {
        let rehashed = run_user(app, &ctx, tenant, user_id, |_| {
            UserCommand::RehashPassword {
                credential: credential.clone(),
            }
        })
        .await;
        if let Err(Failed::Store(e)) = rehashed {
            tracing::warn!(error = %e, user_id, "cannot store a re-hashed password");
        }
    }
    Ok(true)
}

/// The user's TOTP seed (pending or enabled), opened.
pub async fn totp_secret(app: &App, user_id: &str, user: &User) -> Result<Vec<u8>, AppError> {
    let sealed = user
        .totp_secret
        .as_ref()
        .ok_or_else(|| AppError::conflict("TOTP enrollment has not started"))?;
    let key = app
        .security
        .data_key(user_id)
        .await?
        .ok_or_else(|| AppError::not_found("no such user"))?;
    secrets::open(&key, sealed, user_id.as_bytes())
        .map_err(|e| AppError::internal(format!("cannot open the TOTP seed of {user_id}: {e}")))
}
