//! Proving who one is: authenticating an access token, logging in (with a TOTP or recovery code
//! when the account requires one), refreshing a session, the one-time tokens (invitations,
//! password resets) that set a password, and the keys that verify access tokens.
//!
//! Every failed login is the same [`AppError::InvalidCredentials`] whatever was wrong (tenant,
//! email, account state or password), after the same argon2id work (a dummy hash when there is no
//! password to check) and the same appends: one failure event, then one `security.login_throttled`
//! per limit it engaged. Repeated failures are throttled per (email, client address) first (5
//! failures, then delays doubling from 1 s to 5 minutes), per email from every address (100
//! consecutive failures, then one-minute locks: kept by the account's own events, or in memory for
//! an email that is no account), and per client address across emails (spraying). See
//! `docs/security.md`.

use custodian_domain::Timestamp;
use custodian_domain::id::type_id;
use custodian_domain::secret::TokenHash;
use custodian_domain::security::SecurityEvent;
use custodian_domain::session::{RevokeReason, SessionCommand, SessionError, SessionEvent};
use custodian_domain::user::{self, PendingToken, User, UserCommand, UserError, UserStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::access::Principal;
use crate::auth::index::Refusal;
use crate::auth::tokens::{OpaqueToken, TokenKind};
use crate::auth::totp;
use crate::commands::{self, Failed};
use crate::error::AppError;
use crate::sessions::{revoke_all, run_session, session_error};
use crate::users::{
    anonymous, check_email_from_ip, check_ip, check_password, count_failure, failed_user,
    forget_email_from_ip, load_user, locked, record_bad_code, run_user, seal_password,
    security_home, totp_secret, user_actor,
};
use crate::validate::{MAX_PASSWORD_CHARS, check_len, check_tenant, normalize_email};
use crate::{App, Origin, stream};

fn refusal(r: Refusal) -> AppError {
    match r {
        Refusal::Behind => AppError::catching_up(),
        r => AppError::unauthenticated(r.to_string()),
    }
}

/// The caller behind a bearer credential presented from `ip`: an API key (`cst_...`, see
/// [`crate::keys::verify::authenticate`]) or an access token (see [`authenticate`]).
pub async fn authenticate_from(
    app: &App,
    bearer: &str,
    ip: Option<std::net::IpAddr>,
) -> Result<Principal, AppError> {
    if custodian_domain::key::looks_like_key(bearer) {
        return crate::keys::verify::authenticate(app, bearer, ip).await;
    }
    let mut principal = authenticate(app, bearer).await?;
    principal.ip = ip;
    Ok(principal)
}

/// Who presents a bearer credential to a route that may also take the operators' scrape token.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The configured scrape token (`--metrics-token`): an operator's tool, no principal.
    Operator,
    /// An access token or API key that authenticates.
    Principal(Box<Principal>),
}

/// The caller behind `bearer`, presented from `ip`: the scrape token, or a principal as
/// [`authenticate_from`] finds it. No credential, or one that does not authenticate, is
/// [`AppError::Unauthenticated`].
pub async fn authenticate_caller(
    app: &App,
    bearer: Option<&str>,
    ip: Option<std::net::IpAddr>,
) -> Result<Caller, AppError> {
    let Some(bearer) = bearer else {
        return Err(AppError::unauthenticated(
            "send Authorization: Bearer <access token or API key>",
        ));
    };
    if app.security.is_metrics_token(bearer) {
        return Ok(Caller::Operator);
    }
    Ok(Caller::Principal(Box::new(
        authenticate_from(app, bearer, ip).await?,
    )))
}

/// The caller behind an access token: the token verifies (signature, `iss`, `aud`, `exp`), and
/// its session, user and tenant may act now, as the index knows after catching up with the log.
/// An API key is authenticated as one presented from an unknown address.
pub async fn authenticate(app: &App, access_token: &str) -> Result<Principal, AppError> {
    if custodian_domain::key::looks_like_key(access_token) {
        return crate::keys::verify::authenticate(app, access_token, None).await;
    }
    let security = &app.security;
    let now = app.now();
    let claims = security
        .signer
        .verify_or_reload(access_token, now.as_datetime())
        .await
        .map_err(|e| {
            if e.is_rejection() {
                AppError::unauthenticated(format!("the access token is not valid: {e}"))
            } else {
                AppError::internal(format!("cannot verify an access token: {e}"))
            }
        })?;
    security.index.catch_up().await.map_err(refusal)?;
    // Every use case authorizes its caller against the policy as of this request at least.
    app.policy.catch_up().await?;
    let user = security
        .index
        .check(&claims.tenant, &claims.sub, &claims.sid, now)
        .map_err(refusal)?;
    Ok(Principal {
        user_id: claims.sub,
        tenant: claims.tenant,
        session_id: claims.sid,
        user,
        ip: None,
        key: None,
    })
}

/// A command's answer about one user: who, and the position of the last event written.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// The user concerned.
    pub user_id: String,
    /// Their tenant.
    pub tenant: String,
    /// The log position of the last event written (`Custodian-Min-Position` for reads).
    pub position: u64,
}

/// `POST /v1/auth/login`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The tenant's slug (`_system` for platform administrators).
    #[schema(example = "acme")]
    pub tenant: String,
    /// The user's email address.
    #[schema(example = "ada@acme.test")]
    pub email: String,
    /// The user's password.
    pub password: String,
}

/// A completed login or refresh: an access token and the refresh token that replaces it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Tokens {
    /// `authenticated`.
    pub status: &'static str,
    /// A signed JWT (EdDSA, `typ: at+jwt`) to send as `Authorization: Bearer ...`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Opaque, single-use: present it once to `/v1/auth/refresh` for the next pair. Presenting a
    /// spent one revokes the session.
    pub refresh_token: String,
    /// The session these tokens belong to.
    pub session_id: String,
    /// The user.
    pub user_id: String,
    /// The user's tenant.
    pub tenant: String,
    /// The log position of the last event the request wrote.
    pub position: u64,
}

/// The password was right, and the account requires a second factor.
#[derive(Debug, Serialize, ToSchema)]
pub struct MfaRequired {
    /// `mfa_required`.
    pub status: &'static str,
    /// Send it with a TOTP or recovery code to `/v1/auth/mfa/verify`.
    pub challenge_id: String,
    /// Seconds until the challenge expires.
    pub expires_in: u64,
    /// The log position of the challenge.
    pub position: u64,
}

/// What a right password leads to: tokens, or a challenge for a second factor. Serialized as the
/// one it is (each says which by its `status`).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum LoginOutcome {
    /// Logged in.
    Authenticated(Tokens),
    /// A second factor is needed.
    MfaRequired(MfaRequired),
}

impl LoginOutcome {
    /// The log position of the last event the login wrote.
    pub fn position(&self) -> u64 {
        match self {
            Self::Authenticated(t) => t.position,
            Self::MfaRequired(m) => m.position,
        }
    }
}

/// `POST /v1/auth/mfa/verify`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaVerifyRequest {
    /// From the login answer.
    pub challenge_id: String,
    /// A 6-digit TOTP code; or give `recovery_code` instead.
    #[serde(default)]
    pub code: Option<String>,
    /// A single-use recovery code (`xxxxx-xxxxx`).
    #[serde(default)]
    pub recovery_code: Option<String>,
}

/// `POST /v1/auth/refresh`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The current refresh token.
    pub refresh_token: String,
}

/// `POST /v1/auth/invitations/accept`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptInvitationRequest {
    /// The invitation token an administrator received when inviting.
    pub token: String,
    /// The password to set.
    pub password: String,
}

/// `POST /v1/auth/password/reset`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetPasswordRequest {
    /// The reset token an administrator issued.
    pub token: String,
    /// The new password.
    pub new_password: String,
}

/// The detail of a TOTP code that matches but whose time step was already used (at enrollment,
/// or at an earlier login): the code itself was right, so the caller can act on waiting.
pub const SPENT_CODE: &str =
    "this code was already used; wait for the next code (a new one every 30 seconds)";
// The hint names the step's length.
const _: () = assert!(totp::PERIOD_SECONDS == 30);

const CHALLENGE_INVALID: &str = "the challenge is invalid or expired";

/// Logs in with tenant, email and password, from `origin`.
///
/// Answers tokens, or a challenge when the account requires a second factor. A wrong tenant,
/// email or password, and an account that cannot log in by password (invited, disabled, erased,
/// keys-only), all answer [`AppError::InvalidCredentials`] after the same work and one append.
/// An email locked from this address or from every address (an account or not alike), or a
/// locked client address, is [`AppError::Throttled`] before any work, with nothing appended; a
/// right password in a suspended tenant is [`AppError::Forbidden`].
pub async fn login(
    app: &App,
    origin: &Origin,
    req: LoginRequest,
) -> Result<LoginOutcome, AppError> {
    let at = app.now();
    check_tenant(&req.tenant, false)?;
    let email = normalize_email(&req.email)?;
    check_len("password", &req.password, 1, MAX_PASSWORD_CHARS)?;
    let security = &app.security;
    let ip = origin.ip;
    check_ip(app, ip, at)?;
    // Wait for the index to apply the log's head as the database has it, not only as this
    // process last heard of it: an account another process created a moment ago (the command
    // line's bootstrap, another server) can log in at once. Every login asks, whatever follows.
    let head = app.store.head().await?.position;
    security
        .index
        .wait_for(head)
        .await
        .map_err(|_| AppError::catching_up())?;
    let index = security.keyring.email_index(&req.tenant, &email);
    check_email_from_ip(app, &req.tenant, &index, ip, at)?;
    let found = match security.index.user_by_email(&req.tenant, &index) {
        Some(user_id) => load_user(app, &req.tenant, &user_id)
            .await?
            .map(|u| (user_id, u)),
        None => None,
    };
    let Some((user_id, user)) = found.filter(|(_, u)| {
        !matches!(
            u.check_can_log_in(at),
            Err(UserError::WrongStatus(_) | UserError::KeysOnly(_) | UserError::NoPassword)
        )
    }) else {
        // No account that can log in by password: the same work and answer as a wrong password.
        let key = (req.tenant.clone(), index.clone());
        if let Some(until) = security.email_throttle.locked(&key, at) {
            return Err(locked(at, until));
        }
        let _ = security.hasher.verify_dummy(&req.password).await;
        // Recorded as a wrong password is on an account: the same appends, the same time.
        let home = security_home(app, &req.tenant);
        let failed = SecurityEvent::UnknownAccountLoginFailed {
            tenant: req.tenant.clone(),
            email_index: index.clone(),
            ip: ip.map(|ip| ip.to_string()),
        };
        if let Ok(s) = stream(&home, "security", "login")
            && let Err(e) = commands::record(&app.store, &s, &anonymous(ip, at), &[failed]).await
        {
            tracing::warn!(error = %e, "cannot record a failed login");
        }
        let account = security.email_throttle.fail(&key, at);
        count_failure(app, &req.tenant, &index, ip, account, at).await;
        return Err(AppError::InvalidCredentials);
    };
    if let Err(UserError::Locked(until)) = user.check_can_log_in(at) {
        return Err(locked(at, until));
    }
    if !check_password(app, &req.tenant, &user_id, &user, &req.password, ip, at).await? {
        return Err(AppError::InvalidCredentials);
    }
    if security.index.tenant(&req.tenant).is_err() {
        return Err(AppError::forbidden("the tenant is suspended"));
    }
    if user.totp_enabled {
        let challenge = OpaqueToken::new(TokenKind::MfaChallenge, &req.tenant, &user_id, 0)
            .map_err(|e| AppError::internal(format!("cannot make a challenge: {e}")))?;
        let hash = security.tokens.hash(&challenge.to_string());
        let expires_at = at.plus(security.lifetimes.challenge);
        let done = run_user(
            app,
            &user_actor(&user_id, at),
            &req.tenant,
            &user_id,
            |_| UserCommand::IssueMfaChallenge {
                challenge: hash.clone(),
                expires_at,
                now: at,
            },
        )
        .await
        .map_err(|e| failed_user(e, at))?;
        return Ok(LoginOutcome::MfaRequired(MfaRequired {
            status: "mfa_required",
            challenge_id: challenge.to_string(),
            expires_in: u64::try_from(security.lifetimes.challenge.whole_seconds()).unwrap_or(300),
            position: done.position.unwrap_or_default(),
        }));
    }
    let tokens = start_session(app, &req.tenant, &user_id, SecondFactor::None, origin, at).await?;
    Ok(LoginOutcome::Authenticated(tokens))
}

/// Completes a login with a TOTP code or a recovery code, from `origin`.
///
/// A TOTP code is accepted for the current 30-second step and one step either side, once: a code
/// of a step already used is refused with [`SPENT_CODE`]. A recovery code works once. Every wrong
/// or spent code counts as a failed login of the account.
pub async fn mfa_verify(
    app: &App,
    origin: &Origin,
    req: MfaVerifyRequest,
) -> Result<Tokens, AppError> {
    let at = app.now();
    let security = &app.security;
    let ip = origin.ip;
    check_ip(app, ip, at)?;
    let challenge = OpaqueToken::parse(&req.challenge_id, TokenKind::MfaChallenge)
        .map_err(|_| AppError::unauthenticated(CHALLENGE_INVALID))?;
    let (tenant, user_id) = (
        challenge.tenant().to_owned(),
        challenge.subject().to_owned(),
    );
    let challenge_hash = security.tokens.hash(&req.challenge_id);
    let Some(user) = load_user(app, &tenant, &user_id).await? else {
        return Err(AppError::unauthenticated(CHALLENGE_INVALID));
    };
    match &user.challenge {
        Some(open) if open.hash == challenge_hash && at < open.expires_at => {}
        _ => return Err(AppError::unauthenticated(CHALLENGE_INVALID)),
    }
    check_email_from_ip(app, &tenant, &user.email_index, ip, at)?;
    match user.check_can_log_in(at) {
        Ok(()) => {}
        Err(UserError::Locked(until)) => return Err(locked(at, until)),
        // Disabled or erased since the challenge: the same answer as an unknown challenge.
        Err(_) => return Err(AppError::unauthenticated(CHALLENGE_INVALID)),
    }
    let factor = match (&req.code, &req.recovery_code) {
        (Some(code), None) => {
            check_len("code", code, 1, 16)?;
            let secret = totp_secret(app, &user_id, &user).await?;
            let unix = u64::try_from(at.as_datetime().unix_timestamp()).unwrap_or(0);
            match totp::verify(&secret, code, unix) {
                Some(step) => SecondFactor::Totp {
                    challenge: challenge_hash,
                    step,
                },
                None => {
                    record_bad_code(app, &tenant, &user_id, ip, at).await?;
                    return Err(AppError::unauthenticated(
                        UserError::InvalidCode.to_string(),
                    ));
                }
            }
        }
        (None, Some(code)) => {
            check_len("recovery_code", code, 1, 32)?;
            match security.tokens.hash_recovery_code(code) {
                Some(code) => SecondFactor::Recovery {
                    challenge: challenge_hash,
                    code,
                },
                None => {
                    record_bad_code(app, &tenant, &user_id, ip, at).await?;
                    return Err(AppError::unauthenticated(
                        UserError::InvalidCode.to_string(),
                    ));
                }
            }
        }
        _ => {
            return Err(AppError::invalid(
                "give exactly one of code (TOTP) and recovery_code",
            ));
        }
    };
    if security.index.tenant(&tenant).is_err() {
        return Err(AppError::forbidden("the tenant is suspended"));
    }
    start_session(app, &tenant, &user_id, factor, origin, at).await
}

/// What completed the login besides the password.
enum SecondFactor {
    None,
    Totp {
        challenge: TokenHash,
        step: u64,
    },
    Recovery {
        challenge: TokenHash,
        code: TokenHash,
    },
}

/// Records the login on the user (spending a TOTP step or recovery code), starts a session, and
/// issues the first tokens.
async fn start_session(
    app: &App,
    tenant: &str,
    user_id: &str,
    factor: SecondFactor,
    origin: &Origin,
    at: Timestamp,
) -> Result<Tokens, AppError> {
    let security = &app.security;
    let session_id = type_id("sess", Uuid::now_v7());
    let (challenge, totp_step, recovery_code) = match factor {
        SecondFactor::None => (None, None, None),
        SecondFactor::Totp { challenge, step } => (Some(challenge), Some(step), None),
        SecondFactor::Recovery { challenge, code } => (Some(challenge), None, Some(code)),
    };
    let ctx = user_actor(user_id, at);
    let ip = origin.ip;
    let ip_text = ip.map(|ip| ip.to_string());
    let done = run_user(app, &ctx, tenant, user_id, |_| UserCommand::CompleteLogin {
        session_id: session_id.clone(),
        challenge: challenge.clone(),
        totp_step,
        recovery_code: recovery_code.clone(),
        ip: ip_text.clone(),
        now: at,
    })
    .await;
    let done = match done {
        Ok(done) => done,
        Err(Failed::Refused(UserError::InvalidCode)) => {
            record_bad_code(app, tenant, user_id, ip, at).await?;
            // The code matched the seed (a wrong one never gets here), so the domain refused its
            // step as spent: say so, so that the person waits for the next code.
            return Err(AppError::unauthenticated(if totp_step.is_some() {
                SPENT_CODE.to_owned()
            } else {
                UserError::InvalidCode.to_string()
            }));
        }
        // Disabled or erased in the meantime: no answer that tells the account's state.
        Err(Failed::Refused(
            UserError::WrongStatus(_)
            | UserError::KeysOnly(_)
            | UserError::NoPassword
            | UserError::NotFound,
        )) => return Err(AppError::InvalidCredentials),
        Err(e) => return Err(failed_user(e, at)),
    };
    // The account signed in from this address: its own failures from there are forgiven, and
    // nothing else (failures from this address against other emails still count).
    if let Some(u) = &done.state {
        forget_email_from_ip(app, tenant, &u.email_index, ip);
    }
    let roles = crate::access::token_roles(
        app,
        tenant,
        user_id,
        &done.state.map(|u| u.roles).unwrap_or_default(),
    );
    let refresh = OpaqueToken::new(TokenKind::Refresh, tenant, &session_id, 0)
        .map_err(|e| AppError::internal(format!("cannot make a refresh token: {e}")))?;
    let refresh_hash = security.tokens.hash(&refresh.to_string());
    let method = match (totp_step, &recovery_code) {
        (Some(_), _) => user::LoginMethod::PasswordTotp,
        (None, Some(_)) => user::LoginMethod::PasswordRecoveryCode,
        (None, None) => user::LoginMethod::Password,
    };
    let expires_at = at.plus(security.lifetimes.session);
    let started = run_session(
        app,
        &ctx,
        tenant,
        &session_id,
        || SessionCommand::Start {
            user_id: user_id.to_owned(),
            refresh: refresh_hash.clone(),
            method,
            expires_at,
            ip: ip_text.clone(),
            user_agent: origin.user_agent.clone(),
        },
        session_error,
    )
    .await?;
    let position = started.position.unwrap_or_default();
    issue(
        app,
        Session {
            tenant,
            user_id,
            session_id: &session_id,
        },
        roles,
        refresh,
        position,
        at,
    )
}

/// Whose tokens are issued.
struct Session<'a> {
    tenant: &'a str,
    user_id: &'a str,
    session_id: &'a str,
}

fn issue(
    app: &App,
    session: Session<'_>,
    roles: Vec<String>,
    refresh: OpaqueToken,
    position: u64,
    at: Timestamp,
) -> Result<Tokens, AppError> {
    let signer = &app.security.signer;
    let (access_token, _) = signer
        .issue(
            session.user_id,
            session.tenant,
            session.session_id,
            roles,
            at.as_datetime(),
        )
        .map_err(|e| AppError::internal(format!("cannot sign an access token: {e}")))?;
    Ok(Tokens {
        status: "authenticated",
        access_token,
        token_type: "Bearer",
        expires_in: signer.ttl().as_secs(),
        refresh_token: refresh.to_string(),
        session_id: session.session_id.to_owned(),
        user_id: session.user_id.to_owned(),
        tenant: session.tenant.to_owned(),
        position,
    })
}

/// Exchanges a refresh token, presented from `origin`, for a new access token and a new refresh
/// token.
///
/// The presented token is spent. Presenting a spent token again revokes the whole session (its
/// newest tokens included), records `session.refresh_token_reused`, and is
/// [`AppError::RefreshTokenReused`]. A suspended tenant or an inactive user cannot refresh, and
/// their token is not spent by trying.
pub async fn refresh(app: &App, origin: &Origin, req: RefreshRequest) -> Result<Tokens, AppError> {
    let at = app.now();
    let security = &app.security;
    let presented = OpaqueToken::parse(&req.refresh_token, TokenKind::Refresh)
        .map_err(|_| session_error(SessionError::InvalidToken))?;
    let (tenant, session_id) = (
        presented.tenant().to_owned(),
        presented.subject().to_owned(),
    );
    let generation = presented.generation();
    let presented_hash = security.tokens.hash(&req.refresh_token);
    let next = OpaqueToken::new(
        TokenKind::Refresh,
        &tenant,
        &session_id,
        generation.saturating_add(1),
    )
    .map_err(|e| AppError::internal(format!("cannot make a refresh token: {e}")))?;
    let next_hash = security.tokens.hash(&next.to_string());
    security
        .index
        .catch_up()
        .await
        .map_err(|_| AppError::catching_up())?;
    let Some(indexed) = security
        .index
        .session(&session_id)
        .filter(|s| s.tenant == tenant)
    else {
        return Err(session_error(SessionError::InvalidToken));
    };
    // A suspended tenant or an inactive user cannot refresh; refuse before spending the token,
    // so the session can continue once the user may act again. A suspension ends the session for
    // good (the index records it ended), so it does not continue after a reactivation.
    if let Err(r) = security.index.tenant(&tenant) {
        return Err(AppError::unauthenticated(r.to_string()));
    }
    if indexed.revoked {
        return Err(AppError::unauthenticated(Refusal::SessionEnded.to_string()));
    }
    if security
        .index
        .user(&tenant, &indexed.user_id)
        .is_none_or(|u| u.status != UserStatus::Active)
    {
        return Err(AppError::unauthenticated(Refusal::UserInactive.to_string()));
    }
    let ctx = user_actor(&indexed.user_id, at);
    let ip_text = origin.ip.map(|ip| ip.to_string());
    let done = run_session(
        app,
        &ctx,
        &tenant,
        &session_id,
        || SessionCommand::Refresh {
            generation,
            presented: presented_hash.clone(),
            next: next_hash.clone(),
            ip: ip_text.clone(),
            now: at,
        },
        session_error,
    )
    .await?;
    if done
        .events
        .iter()
        .any(|e| matches!(e, SessionEvent::RefreshTokenReused { .. }))
    {
        tracing::warn!(tenant, session_id, "refresh token reuse: session revoked");
        return Err(AppError::RefreshTokenReused);
    }
    let position = done.position.unwrap_or_default();
    security
        .index
        .wait_for(position)
        .await
        .map_err(|_| AppError::catching_up())?;
    // The rotation itself proved the session live at the version it appended to. A revocation
    // appended after it (a concurrent presentation of the same token, which counts as reuse)
    // stops these new tokens at their first use, so it does not turn this answer into a failure:
    // exactly one of two racing presentations gets a pair, whatever order the index applies them.
    security
        .index
        .tenant(&tenant)
        .map_err(|r| AppError::unauthenticated(r.to_string()))?;
    let user = security
        .index
        .user(&tenant, &indexed.user_id)
        .filter(|u| u.status == custodian_domain::user::UserStatus::Active)
        .ok_or_else(|| AppError::unauthenticated(Refusal::UserInactive.to_string()))?;
    issue(
        app,
        Session {
            tenant: &tenant,
            user_id: &indexed.user_id,
            session_id: &session_id,
        },
        crate::access::token_roles(app, &tenant, &indexed.user_id, &user.roles),
        next,
        position,
        at,
    )
}

/// Checks a presented one-time token of `kind` against the one its user has open (`open`), before
/// any work is done for it; returns the tenant, the user and the token's keyed hash. Every way of
/// being wrong is the same [`AppError::Unauthenticated`].
async fn pending_token(
    app: &App,
    presented: &str,
    kind: TokenKind,
    open: impl Fn(&User) -> &Option<PendingToken>,
    at: Timestamp,
) -> Result<(String, String, TokenHash, User), AppError> {
    let invalid = || AppError::unauthenticated(UserError::InvalidToken.to_string());
    let token = OpaqueToken::parse(presented, kind).map_err(|_| invalid())?;
    let (tenant, user_id) = (token.tenant().to_owned(), token.subject().to_owned());
    let hash = app.security.tokens.hash(presented);
    let user = load_user(app, &tenant, &user_id)
        .await?
        .ok_or_else(invalid)?;
    match open(&user) {
        Some(p) if p.hash == hash && at < p.expires_at => Ok((tenant, user_id, hash, user.clone())),
        _ => Err(invalid()),
    }
}

/// Refuses every credential operation in a suspended tenant, as a login with the right password
/// is refused: [`AppError::Forbidden`], before anything is appended.
async fn tenant_may_act(app: &App, tenant: &str) -> Result<(), AppError> {
    let index = &app.security.index;
    index
        .catch_up()
        .await
        .map_err(|_| AppError::catching_up())?;
    index
        .tenant(tenant)
        .map_err(|_| AppError::forbidden("the tenant is suspended"))
}

/// Accepts an invitation and sets a first password: the user is active and logs in next.
///
/// An unknown, used or expired invitation is [`AppError::Unauthenticated`]; in a suspended tenant
/// a valid one is [`AppError::Forbidden`] and stays open; a password the policy refuses is
/// [`AppError::Invalid`].
pub async fn accept_invitation(
    app: &App,
    req: AcceptInvitationRequest,
) -> Result<Accepted, AppError> {
    let at = app.now();
    check_len("password", &req.password, 1, MAX_PASSWORD_CHARS)?;
    let (tenant, user_id, hash, _) = pending_token(
        app,
        &req.token,
        TokenKind::Invitation,
        |u| &u.invitation,
        at,
    )
    .await?;
    tenant_may_act(app, &tenant).await?;
    // An invited person has no second factor yet: the password alone must be strong enough.
    let credential = seal_password(app, &tenant, &user_id, &req.password, false).await?;
    let done = run_user(app, &user_actor(&user_id, at), &tenant, &user_id, |_| {
        UserCommand::AcceptInvitation {
            token: hash.clone(),
            credential: credential.clone(),
            now: at,
        }
    })
    .await
    .map_err(|e| failed_user(e, at))?;
    Ok(Accepted {
        user_id,
        tenant,
        position: done.position.unwrap_or_default(),
    })
}

/// Sets a new password with a reset token, and revokes every session of the user.
///
/// An unknown, used or expired token is [`AppError::Unauthenticated`]; in a suspended tenant a
/// valid one is [`AppError::Forbidden`] and stays open; a password the policy refuses is
/// [`AppError::Invalid`].
pub async fn reset_password(app: &App, req: ResetPasswordRequest) -> Result<Accepted, AppError> {
    let at = app.now();
    check_len("new_password", &req.new_password, 1, MAX_PASSWORD_CHARS)?;
    let (tenant, user_id, hash, user) =
        pending_token(app, &req.token, TokenKind::PasswordReset, |u| &u.reset, at).await?;
    tenant_may_act(app, &tenant).await?;
    let credential =
        seal_password(app, &tenant, &user_id, &req.new_password, user.totp_enabled).await?;
    let ctx = user_actor(&user_id, at);
    let done = run_user(app, &ctx, &tenant, &user_id, |_| {
        UserCommand::ResetPassword {
            token: hash.clone(),
            credential: credential.clone(),
            now: at,
        }
    })
    .await
    .map_err(|e| failed_user(e, at))?;
    let (_, revoked) = revoke_all(
        app,
        &ctx,
        &tenant,
        &user_id,
        None,
        RevokeReason::PasswordChanged,
    )
    .await?;
    Ok(Accepted {
        user_id,
        tenant,
        position: done.position.unwrap_or_default().max(revoked),
    })
}

/// The public keys that verify access tokens now, as a JSON Web Key Set (RFC 7517). Keys stay
/// listed after a rotation until every token they signed has expired.
pub fn jwks(app: &App) -> serde_json::Value {
    app.security.signer.jwks(app.now().as_datetime())
}
