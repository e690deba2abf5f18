//! The user aggregate as the use cases meet it: loading a user, running a command on one, what a
//! refusal means to the caller, and the user's secrets (password, TOTP seed) opened or sealed.

use std::net::IpAddr;

use custodian_domain::secret::Sealed;
use custodian_domain::security::{SecurityEvent, ThrottleScope};
use custodian_domain::user::{self, LoginFailure, User, UserCommand, UserError, UserEvent};
use custodian_domain::{Actor, ActorKind, Timestamp};

use crate::App;
use crate::auth::secrets;
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

/// Counts a failed attempt against the client address (and an unknown email: `(tenant, blind
/// index)`), recording a `security.login_throttled` event when a lock engages.
pub async fn count_failure(
    app: &App,
    ip: Option<IpAddr>,
    unknown_email: Option<(&str, &str)>,
    at: Timestamp,
) {
    let security = &app.security;
    let mut records = vec![];
    if let Some(ip) = ip
        && let Some(e) = security.ip_throttle.fail(&ip, at)
    {
        records.push((
            "_system".to_owned(),
            SecurityEvent::LoginThrottled {
                scope: ThrottleScope::Ip,
                ip: Some(ip.to_string()),
                email_index: None,
                failures: e.failures,
                until: e.until,
            },
        ));
    }
    if let Some((tenant, index)) = unknown_email
        && let Some(e) = security
            .email_throttle
            .fail(&(tenant.to_owned(), index.to_owned()), at)
    {
        records.push((
            tenant.to_owned(),
            SecurityEvent::LoginThrottled {
                scope: ThrottleScope::UnknownEmail,
                ip: ip.map(|ip| ip.to_string()),
                email_index: Some(index.to_owned()),
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

/// Records a failed login of the user for `reason`, and counts it against the client address.
async fn record_failure(
    app: &App,
    tenant: &str,
    user_id: &str,
    reason: LoginFailure,
    ip: Option<IpAddr>,
    at: Timestamp,
) -> Result<(), AppError> {
    let policy = app.security.lockout;
    run_user(app, &user_actor(user_id, at), tenant, user_id, |_| {
        UserCommand::RecordLoginFailure {
            reason,
            ip: ip.map(|ip| ip.to_string()),
            now: at,
            policy,
        }
    })
    .await
    .map_err(|e| failed_user(e, at))?;
    count_failure(app, ip, None, at).await;
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

/// Hashes and seals a new password for `user_id`, after the policy accepts it.
pub async fn seal_password(
    app: &App,
    tenant: &str,
    user_id: &str,
    password: &str,
) -> Result<Sealed, AppError> {
    let security = &app.security;
    security
        .policy
        .check(password)
        .map_err(|e| AppError::invalid(format!("password: {e}")))?;
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
        && let Ok(credential) = seal_password(app, tenant, user_id, password).await
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
