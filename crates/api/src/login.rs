//! Public authentication endpoints: login (with TOTP challenges), refresh-token rotation,
//! accepting invitations, password reset, and the signing keys.
//!
//! Every answer to a failed login is the same `invalid_credentials` 401 whatever was wrong, after
//! the same argon2id work (a dummy hash for unknown emails); repeated failures are throttled per
//! account (by the account's own events), per unknown email and per client address, with lock
//! times doubling past the threshold.

use std::net::IpAddr;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use custodian_domain::id::type_id;
use custodian_domain::secret::{Sealed, TokenHash};
use custodian_domain::security::{SecurityEvent, ThrottleScope};
use custodian_domain::session::{self, SessionCommand, SessionError, SessionEvent};
use custodian_domain::user::{self, LoginFailure, User, UserCommand, UserError};
use custodian_domain::{Actor, ActorKind, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::index::SYSTEM_TENANT;
use crate::auth::secrets;
use crate::auth::tokens::{OpaqueToken, TokenKind};
use crate::auth::totp;
use crate::commands::{self, Context, Done, Failed};
use crate::consistency::CUSTODIAN_POSITION;
use crate::identity::{
    ClientIp, Identity, JsonBody, check_len, check_tenant, command_problem, normalize_email, now,
    stream, user_agent,
};
use crate::respond::{PROBLEM_JSON, Problem, ProblemDocument};
use crate::state::AppState;

/// Longest accepted password, in characters (the policy's own maximum may be lower).
pub const MAX_PASSWORD_CHARS: usize = 1024;

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

/// A command's answer: what it did and the position of its last event.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// The user concerned.
    pub user_id: String,
    /// Their tenant.
    pub tenant: String,
    /// The log position of the last event written (`Custodian-Min-Position` for reads).
    pub position: u64,
}

/// A JSON answer with `Custodian-Position`.
pub fn positioned<T: Serialize>(status: StatusCode, position: u64, body: T) -> Response {
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert(CUSTODIAN_POSITION, HeaderValue::from(position));
    response
}

/// A user's state and the stream's version, read from the log.
pub async fn load_user(
    state: &AppState,
    tenant: &str,
    user_id: &str,
) -> Result<Option<User>, Problem> {
    let s = stream(tenant, "user", user_id)?;
    let (user, _) = commands::load(
        state.store.as_ref(),
        Some(&state.states),
        &s,
        None,
        user::evolve,
    )
    .await?;
    Ok(user)
}

/// Runs a user command.
pub async fn run_user(
    state: &AppState,
    ctx: &Context,
    tenant: &str,
    user_id: &str,
    command: impl Fn(&User) -> UserCommand,
) -> Result<Done<Option<User>, user::UserEvent>, Failed<UserError>> {
    let s = stream(tenant, "user", user_id).map_err(|_| Failed::Refused(UserError::NotFound))?;
    commands::execute(
        &state.store,
        Some(&state.states),
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

/// The problem for a refused user command.
pub fn user_problem(e: UserError) -> Problem {
    match e {
        UserError::NotFound => Problem::not_found("no such user"),
        UserError::AlreadyExists => Problem::conflict(e.to_string()),
        UserError::Invalid { .. } => Problem::validation(e.to_string()),
        UserError::Locked(until) => locked(until),
        UserError::InvalidToken | UserError::InvalidCode => Problem::unauthenticated(e.to_string()),
        UserError::WrongStatus(_) | UserError::KeysOnly(_) | UserError::NoPassword => {
            Problem::conflict(e.to_string())
        }
        UserError::Mfa(_) => Problem::conflict(e.to_string()),
    }
}

fn locked(until: Timestamp) -> Problem {
    let secs = now().until(&until).whole_seconds().max(1);
    Problem::rate_limited(
        "too many failed attempts; try again later",
        u64::try_from(secs).unwrap_or(1),
    )
}

fn anonymous(ip: Option<IpAddr>, at: Timestamp) -> Context {
    Context {
        actor: Actor {
            kind: ActorKind::System,
            id: ip.map_or_else(|| "anonymous".to_owned(), |ip| format!("ip:{ip}")),
        },
        now: at,
        correlation_id: None,
    }
}

fn user_actor(user_id: &str, at: Timestamp) -> Context {
    Context {
        actor: Actor {
            kind: ActorKind::User,
            id: user_id.to_owned(),
        },
        now: at,
        correlation_id: None,
    }
}

/// Counts a failed attempt against the client address (and an unknown email), recording a
/// `security.login_throttled` event when a lock engages.
async fn count_failure(
    state: &AppState,
    ip: Option<IpAddr>,
    unknown_email: Option<(&str, &str)>,
    at: Timestamp,
) {
    let id = &state.security;
    let mut records = vec![];
    if let Some(ip) = ip
        && let Some(e) = id.ip_throttle.fail(&ip, at)
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
        && let Some(e) = id
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
            && let Err(e) = commands::record(&state.store, &s, &anonymous(ip, at), &[event]).await
        {
            tracing::warn!(error = %e, "cannot record a login throttle");
        }
    }
}

fn check_ip(identity: &Identity, ip: Option<IpAddr>, at: Timestamp) -> Result<(), Problem> {
    match ip.and_then(|ip| identity.ip_throttle.locked(&ip, at)) {
        Some(until) => Err(locked(until)),
        None => Ok(()),
    }
}

/// Opens the user's sealed password hash, or `None` if it cannot be read (erased).
async fn credential(
    identity: &Identity,
    user_id: &str,
    user: &User,
) -> Result<Option<String>, Problem> {
    let Some(sealed) = &user.credential else {
        return Ok(None);
    };
    let Some(key) = identity.data_key(user_id).await? else {
        return Ok(None);
    };
    Ok(Some(Identity::open_text(&key, sealed, user_id)?))
}

/// Hashes and seals a new password for `user_id`, after the policy accepts it.
pub async fn seal_password(
    identity: &Identity,
    tenant: &str,
    user_id: &str,
    password: &str,
) -> Result<Sealed, Problem> {
    identity
        .policy
        .check(password)
        .map_err(|e| Problem::validation(format!("password: {e}")))?;
    let phc = identity
        .hasher
        .hash(password)
        .await
        .map_err(|e| Problem::unavailable(format!("cannot hash the password now: {e}"), 1))?;
    let key = identity
        .vault
        .create(tenant, user_id)
        .await
        .map_err(crate::identity::vault_problem)?;
    Ok(secrets::seal(&key, phc.as_bytes(), user_id.as_bytes()))
}

/// Verifies `password` against the user's current password; records a failure when wrong.
/// Returns whether it matched; a stronger re-hash is stored on success when parameters rose.
pub async fn check_password(
    state: &AppState,
    tenant: &str,
    user_id: &str,
    user: &User,
    password: &str,
    ip: Option<IpAddr>,
    at: Timestamp,
) -> Result<bool, Problem> {
    let identity = &state.security;
    let Some(phc) = credential(identity, user_id, user).await? else {
        let _ = identity.hasher.verify_dummy(password).await;
        return Ok(false);
    };
    let verdict =
        identity.hasher.verify(&phc, password).await.map_err(|e| {
            Problem::internal(format!("cannot verify a password of {user_id}: {e}"))
        })?;
    let ctx = user_actor(user_id, at);
    if !verdict.matches {
        let policy = identity.lockout;
        run_user(state, &ctx, tenant, user_id, |_| {
            UserCommand::RecordLoginFailure {
                reason: LoginFailure::BadPassword,
                ip: ip.map(|ip| ip.to_string()),
                now: at,
                policy,
            }
        })
        .await
        .map_err(|e| command_problem(e, user_problem))?;
        count_failure(state, ip, None, at).await;
        return Ok(false);
    }
    if verdict.needs_rehash {
        let sealed = seal_password(identity, tenant, user_id, password).await;
        if let Ok(credential) = sealed {
            let rehashed = run_user(state, &ctx, tenant, user_id, |_| {
                UserCommand::RehashPassword {
                    credential: credential.clone(),
                }
            })
            .await;
            if let Err(Failed::Store(e)) = rehashed {
                tracing::warn!(error = %e, user_id, "cannot store a re-hashed password");
            }
        }
    }
    Ok(true)
}

/// Log in with tenant, email and password.
///
/// Answers `authenticated` with tokens, or `mfa_required` with a challenge for
/// `/v1/auth/mfa/verify`. A wrong tenant, email or password all answer the same 401 after the same
/// work.
#[utoipa::path(
    post,
    path = "/v1/auth/login",
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in (`status: authenticated`) or a second factor is needed (`status: mfa_required`)", body = Tokens),
        crate::openapi::JsonBodyProblems,
        (status = 401, description = "Wrong tenant, email or password (code `invalid_credentials`)", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = "The password was right but the tenant is suspended (code `forbidden`)", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 429, description = "Too many failed attempts for this account or address (code `rate_limited`, with `Retry-After`)", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Result<Response, Problem> {
    let at = now();
    check_tenant(&req.tenant, false)?;
    let email = normalize_email(&req.email)?;
    check_len("password", &req.password, 1, MAX_PASSWORD_CHARS)?;
    let identity = state.security.clone();
    check_ip(&identity, ip, at)?;
    identity
        .index
        .catch_up()
        .await
        .map_err(|_| Problem::unavailable("the server is catching up with the log", 1))?;
    let index = identity.keyring.email_index(&req.tenant, &email);
    let found = match identity.index.user_by_email(&req.tenant, &index) {
        Some(user_id) => load_user(&state, &req.tenant, &user_id)
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
        if let Some(until) = identity.email_throttle.locked(&key, at) {
            return Err(locked(until));
        }
        let _ = identity.hasher.verify_dummy(&req.password).await;
        // Recorded as a wrong password is on an account: the same append, the same time.
        let home = if identity.index.tenant_exists(&req.tenant) {
            req.tenant.as_str()
        } else {
            SYSTEM_TENANT
        };
        let failed = SecurityEvent::UnknownAccountLoginFailed {
            tenant: req.tenant.clone(),
            email_index: index.clone(),
            ip: ip.map(|ip| ip.to_string()),
        };
        if let Ok(s) = stream(home, "security", "login")
            && let Err(e) = commands::record(&state.store, &s, &anonymous(ip, at), &[failed]).await
        {
            tracing::warn!(error = %e, "cannot record a failed login");
        }
        count_failure(&state, ip, Some((&req.tenant, &index)), at).await;
        return Err(Problem::invalid_credentials());
    };
    if let Err(UserError::Locked(until)) = user.check_can_log_in(at) {
        return Err(locked(until));
    }
    if !check_password(&state, &req.tenant, &user_id, &user, &req.password, ip, at).await? {
        return Err(Problem::invalid_credentials());
    }
    if let Some(ip) = ip {
        identity.ip_throttle.succeed(&ip);
    }
    if identity.index.tenant(&req.tenant).is_err() {
        return Err(Problem::forbidden("the tenant is suspended"));
    }
    if user.totp_enabled {
        let challenge = OpaqueToken::new(TokenKind::MfaChallenge, &req.tenant, &user_id, 0)
            .map_err(|e| Problem::internal(format!("cannot make a challenge: {e}")))?;
        let hash = identity.tokens.hash(&challenge.to_string());
        let expires_at = at.plus(identity.lifetimes.challenge);
        let done = run_user(
            &state,
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
        .map_err(|e| command_problem(e, user_problem))?;
        let position = done.position.unwrap_or_default();
        return Ok(positioned(
            StatusCode::OK,
            position,
            MfaRequired {
                status: "mfa_required",
                challenge_id: challenge.to_string(),
                expires_in: u64::try_from(identity.lifetimes.challenge.whole_seconds())
                    .unwrap_or(300),
                position,
            },
        ));
    }
    let tokens = start_session(
        &state,
        &req.tenant,
        &user_id,
        SecondFactor::None,
        ip,
        user_agent(&headers),
        at,
    )
    .await?;
    Ok(positioned(StatusCode::OK, tokens.position, tokens))
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
    state: &AppState,
    tenant: &str,
    user_id: &str,
    factor: SecondFactor,
    ip: Option<IpAddr>,
    user_agent: Option<String>,
    at: Timestamp,
) -> Result<Tokens, Problem> {
    let identity = &state.security;
    let session_id = type_id("sess", Uuid::now_v7());
    let (challenge, totp_step, recovery_code) = match factor {
        SecondFactor::None => (None, None, None),
        SecondFactor::Totp { challenge, step } => (Some(challenge), Some(step), None),
        SecondFactor::Recovery { challenge, code } => (Some(challenge), None, Some(code)),
    };
    let ctx = user_actor(user_id, at);
    let ip_text = ip.map(|ip| ip.to_string());
    let done = run_user(state, &ctx, tenant, user_id, |_| {
        UserCommand::CompleteLogin {
            session_id: session_id.clone(),
            challenge: challenge.clone(),
            totp_step,
            recovery_code: recovery_code.clone(),
            ip: ip_text.clone(),
            now: at,
        }
    })
    .await;
    let done = match done {
        Ok(done) => done,
        Err(Failed::Refused(UserError::InvalidCode)) => {
            record_bad_code(state, tenant, user_id, ip, at).await?;
            return Err(Problem::unauthenticated(UserError::InvalidCode.to_string()));
        }
        // Disabled or erased in the meantime: no answer that tells the account's state.
        Err(Failed::Refused(
            UserError::WrongStatus(_)
            | UserError::KeysOnly(_)
            | UserError::NoPassword
            | UserError::NotFound,
        )) => return Err(Problem::invalid_credentials()),
        Err(e) => return Err(command_problem(e, user_problem)),
    };
    let roles = done.state.map(|u| u.roles).unwrap_or_default();
    let refresh = OpaqueToken::new(TokenKind::Refresh, tenant, &session_id, 0)
        .map_err(|e| Problem::internal(format!("cannot make a refresh token: {e}")))?;
    let refresh_hash = identity.tokens.hash(&refresh.to_string());
    let method = match (totp_step, &recovery_code) {
        (Some(_), _) => user::LoginMethod::PasswordTotp,
        (None, Some(_)) => user::LoginMethod::PasswordRecoveryCode,
        (None, None) => user::LoginMethod::Password,
    };
    let s = stream(tenant, "session", &session_id)?;
    let expires_at = at.plus(identity.lifetimes.session);
    let started = commands::execute(
        &state.store,
        Some(&state.states),
        &s,
        &ctx,
        None,
        session::evolve,
        |s| {
            session::decide(
                s.as_ref(),
                SessionCommand::Start {
                    user_id: user_id.to_owned(),
                    refresh: refresh_hash.clone(),
                    method,
                    expires_at,
                    ip: ip_text.clone(),
                    user_agent: user_agent.clone(),
                },
            )
        },
    )
    .await
    .map_err(|e| command_problem(e, session_problem))?;
    let position = started.position.unwrap_or_default();
    issue(
        identity,
        tenant,
        user_id,
        &session_id,
        roles,
        refresh,
        position,
        at,
    )
}

#[allow(clippy::too_many_arguments)]
fn issue(
    identity: &Identity,
    tenant: &str,
    user_id: &str,
    session_id: &str,
    roles: Vec<String>,
    refresh: OpaqueToken,
    position: u64,
    at: Timestamp,
) -> Result<Tokens, Problem> {
    let (access_token, _) = identity
        .signer
        .issue(user_id, tenant, session_id, roles, at.as_datetime())
        .map_err(|e| Problem::internal(format!("cannot sign an access token: {e}")))?;
    Ok(Tokens {
        status: "authenticated",
        access_token,
        token_type: "Bearer",
        expires_in: identity.signer.ttl().as_secs(),
        refresh_token: refresh.to_string(),
        session_id: session_id.to_owned(),
        user_id: user_id.to_owned(),
        tenant: tenant.to_owned(),
        position,
    })
}

/// Records a wrong second factor as a failed login of the user (and of the client address).
pub async fn record_bad_code(
    state: &AppState,
    tenant: &str,
    user_id: &str,
    ip: Option<IpAddr>,
    at: Timestamp,
) -> Result<(), Problem> {
    let policy = state.security.lockout;
    run_user(state, &user_actor(user_id, at), tenant, user_id, |_| {
        UserCommand::RecordLoginFailure {
            reason: LoginFailure::BadCode,
            ip: ip.map(|ip| ip.to_string()),
            now: at,
            policy,
        }
    })
    .await
    .map_err(|e| command_problem(e, user_problem))?;
    count_failure(state, ip, None, at).await;
    Ok(())
}

fn session_problem(e: SessionError) -> Problem {
    match e {
        SessionError::NotFound | SessionError::InvalidToken | SessionError::Ended => {
            Problem::unauthenticated("the refresh token is invalid, spent or expired")
        }
        SessionError::AlreadyExists => Problem::conflict(e.to_string()),
    }
}

/// Complete a login with a TOTP code or a recovery code.
///
/// A TOTP code is accepted for the current 30-second step and one step either side, once: a code
/// of a step already used is refused. A recovery code works once.
#[utoipa::path(
    post,
    path = "/v1/auth/mfa/verify",
    tag = "auth",
    request_body = MfaVerifyRequest,
    responses(
        (status = 200, description = "Logged in", body = Tokens),
        (status = 400, description = "Malformed JSON", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 401, description = "Unknown or expired challenge, or a wrong or spent code", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 422, description = "Neither or both of `code` and `recovery_code`", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = "The tenant is suspended (code `forbidden`)", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 429, description = "Too many failed attempts", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
pub async fn mfa_verify(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    JsonBody(req): JsonBody<MfaVerifyRequest>,
) -> Result<Response, Problem> {
    let at = now();
    let identity = state.security.clone();
    check_ip(&identity, ip, at)?;
    let challenge = OpaqueToken::parse(&req.challenge_id, TokenKind::MfaChallenge)
        .map_err(|_| Problem::unauthenticated("the challenge is invalid or expired"))?;
    let (tenant, user_id) = (
        challenge.tenant().to_owned(),
        challenge.subject().to_owned(),
    );
    let challenge_hash = identity.tokens.hash(&req.challenge_id);
    let Some(user) = load_user(&state, &tenant, &user_id).await? else {
        return Err(Problem::unauthenticated(
            "the challenge is invalid or expired",
        ));
    };
    match &user.challenge {
        Some(open) if open.hash == challenge_hash && at < open.expires_at => {}
        _ => {
            return Err(Problem::unauthenticated(
                "the challenge is invalid or expired",
            ));
        }
    }
    match user.check_can_log_in(at) {
        Ok(()) => {}
        Err(UserError::Locked(until)) => return Err(locked(until)),
        // Disabled or erased since the challenge: the same answer as an unknown challenge.
        Err(_) => {
            return Err(Problem::unauthenticated(
                "the challenge is invalid or expired",
            ));
        }
    }
    let factor = match (&req.code, &req.recovery_code) {
        (Some(code), None) => {
            check_len("code", code, 1, 16)?;
            let secret = totp_secret(&identity, &user_id, &user).await?;
            let unix = u64::try_from(at.as_datetime().unix_timestamp()).unwrap_or(0);
            match totp::verify(&secret, code, unix) {
                Some(step) => SecondFactor::Totp {
                    challenge: challenge_hash,
                    step,
                },
                None => {
                    record_bad_code(&state, &tenant, &user_id, ip, at).await?;
                    return Err(Problem::unauthenticated(UserError::InvalidCode.to_string()));
                }
            }
        }
        (None, Some(code)) => {
            check_len("recovery_code", code, 1, 32)?;
            match identity.tokens.hash_recovery_code(code) {
                Some(code) => SecondFactor::Recovery {
                    challenge: challenge_hash,
                    code,
                },
                None => {
                    record_bad_code(&state, &tenant, &user_id, ip, at).await?;
                    return Err(Problem::unauthenticated(UserError::InvalidCode.to_string()));
                }
            }
        }
        _ => {
            return Err(Problem::validation(
                "give exactly one of code (TOTP) and recovery_code",
            ));
        }
    };
    if identity.index.tenant(&tenant).is_err() {
        return Err(Problem::forbidden("the tenant is suspended"));
    }
    let tokens = start_session(
        &state,
        &tenant,
        &user_id,
        factor,
        ip,
        user_agent(&headers),
        at,
    )
    .await?;
    Ok(positioned(StatusCode::OK, tokens.position, tokens))
}

/// The user's TOTP seed (pending or enabled), opened.
pub async fn totp_secret(
    identity: &Identity,
    user_id: &str,
    user: &User,
) -> Result<Vec<u8>, Problem> {
    let sealed = user
        .totp_secret
        .as_ref()
        .ok_or_else(|| Problem::conflict("TOTP enrollment has not started"))?;
    let key = identity
        .data_key(user_id)
        .await?
        .ok_or_else(|| Problem::not_found("no such user"))?;
    secrets::open(&key, sealed, user_id.as_bytes())
        .map_err(|e| Problem::internal(format!("cannot open the TOTP seed of {user_id}: {e}")))
}

/// Exchange a refresh token for a new access token and a new refresh token.
///
/// The presented token is spent. Presenting a spent token again revokes the whole session (its
/// newest tokens included) and records `session.refresh_token_reused`.
#[utoipa::path(
    post,
    path = "/v1/auth/refresh",
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new token pair", body = Tokens),
        (status = 400, description = "Malformed JSON", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 401, description = "Invalid, spent (code `refresh_token_reused`: the session is now revoked) or expired refresh token, or the user or tenant may not act", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 422, description = "A field is missing or of the wrong type", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
pub async fn refresh(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    JsonBody(req): JsonBody<RefreshRequest>,
) -> Result<Response, Problem> {
    let at = now();
    let identity = state.security.clone();
    let presented = OpaqueToken::parse(&req.refresh_token, TokenKind::Refresh)
        .map_err(|_| Problem::unauthenticated("the refresh token is invalid, spent or expired"))?;
    let (tenant, session_id) = (
        presented.tenant().to_owned(),
        presented.subject().to_owned(),
    );
    let generation = presented.generation();
    let presented_hash = identity.tokens.hash(&req.refresh_token);
    let next = OpaqueToken::new(
        TokenKind::Refresh,
        &tenant,
        &session_id,
        generation.saturating_add(1),
    )
    .map_err(|e| Problem::internal(format!("cannot make a refresh token: {e}")))?;
    let next_hash = identity.tokens.hash(&next.to_string());
    identity
        .index
        .catch_up()
        .await
        .map_err(|_| Problem::unavailable("the server is catching up with the log", 1))?;
    let Some(indexed) = identity
        .index
        .session(&session_id)
        .filter(|s| s.tenant == tenant)
    else {
        return Err(session_problem(SessionError::InvalidToken));
    };
    // A suspended tenant or an inactive user cannot refresh; refuse before spending the token,
    // so the session can continue once they may act again.
    if let Err(r) = identity.index.tenant(&tenant) {
        return Err(Problem::unauthenticated(r.to_string()));
    }
    if identity
        .index
        .user(&tenant, &indexed.user_id)
        .is_none_or(|u| u.status != custodian_domain::user::UserStatus::Active)
    {
        return Err(Problem::unauthenticated(
            crate::auth::index::Refusal::UserInactive.to_string(),
        ));
    }
    let s = stream(&tenant, "session", &session_id)?;
    let ctx = user_actor(&indexed.user_id, at);
    let ip_text = ip.map(|ip| ip.to_string());
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
                SessionCommand::Refresh {
                    generation,
                    presented: presented_hash.clone(),
                    next: next_hash.clone(),
                    ip: ip_text.clone(),
                    now: at,
                },
            )
        },
    )
    .await
    .map_err(|e| command_problem(e, session_problem))?;
    if done
        .events
        .iter()
        .any(|e| matches!(e, SessionEvent::RefreshTokenReused { .. }))
    {
        tracing::warn!(tenant, session_id, "refresh token reuse: session revoked");
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "refresh_token_reused",
            "Refresh token reused",
            "this refresh token was already used; the session has been revoked",
        ));
    }
    let position = done.position.unwrap_or_default();
    identity
        .index
        .wait_for(position)
        .await
        .map_err(|_| Problem::unavailable("the server is catching up with the log", 1))?;
    let user = identity
        .index
        .check(&tenant, &indexed.user_id, &session_id, at)
        .map_err(|r| Problem::unauthenticated(r.to_string()))?;
    let tokens = issue(
        &identity,
        &tenant,
        &indexed.user_id,
        &session_id,
        user.roles,
        next,
        position,
        at,
    )?;
    Ok(positioned(StatusCode::OK, position, tokens))
}

/// Checks a presented one-time token of `kind` against the one its user has open (`open`), before
/// any work is done for it; returns the tenant, the user and the token's keyed hash. Every way of
/// being wrong is the same 401.
async fn pending_token(
    state: &AppState,
    presented: &str,
    kind: TokenKind,
    open: impl Fn(&User) -> &Option<custodian_domain::user::PendingToken>,
    at: Timestamp,
) -> Result<(String, String, TokenHash), Problem> {
    let invalid = || Problem::unauthenticated(UserError::InvalidToken.to_string());
    let token = OpaqueToken::parse(presented, kind).map_err(|_| invalid())?;
    let (tenant, user_id) = (token.tenant().to_owned(), token.subject().to_owned());
    let hash = state.security.tokens.hash(presented);
    let user = load_user(state, &tenant, &user_id)
        .await?
        .ok_or_else(invalid)?;
    match open(&user) {
        Some(p) if p.hash == hash && at < p.expires_at => Ok((tenant, user_id, hash)),
        _ => Err(invalid()),
    }
}

/// Accept an invitation and set a first password.
#[utoipa::path(
    post,
    path = "/v1/auth/invitations/accept",
    tag = "auth",
    request_body = AcceptInvitationRequest,
    responses(
        (status = 200, description = "The user is active; log in next", body = Accepted),
        (status = 400, description = "Malformed JSON", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 401, description = "Unknown, used or expired invitation", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 422, description = "The password does not meet the policy, or a field is missing", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
pub async fn accept_invitation(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<AcceptInvitationRequest>,
) -> Result<Response, Problem> {
    let at = now();
    check_len("password", &req.password, 1, MAX_PASSWORD_CHARS)?;
    let (tenant, user_id, hash) = pending_token(
        &state,
        &req.token,
        TokenKind::Invitation,
        |u| &u.invitation,
        at,
    )
    .await?;
    let credential = seal_password(&state.security, &tenant, &user_id, &req.password).await?;
    let done = run_user(&state, &user_actor(&user_id, at), &tenant, &user_id, |_| {
        UserCommand::AcceptInvitation {
            token: hash.clone(),
            credential: credential.clone(),
            now: at,
        }
    })
    .await
    .map_err(|e| command_problem(e, user_problem))?;
    let position = done.position.unwrap_or_default();
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

/// Set a new password with a reset token. Every session of the user is revoked.
#[utoipa::path(
    post,
    path = "/v1/auth/password/reset",
    tag = "auth",
    request_body = ResetPasswordRequest,
    responses(
        (status = 200, description = "The password is replaced and the user's sessions revoked", body = Accepted),
        (status = 400, description = "Malformed JSON", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 401, description = "Unknown, used or expired reset token", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 422, description = "The password does not meet the policy, or a field is missing", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
pub async fn reset_password(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<ResetPasswordRequest>,
) -> Result<Response, Problem> {
    let at = now();
    check_len("new_password", &req.new_password, 1, MAX_PASSWORD_CHARS)?;
    let (tenant, user_id, hash) = pending_token(
        &state,
        &req.token,
        TokenKind::PasswordReset,
        |u| &u.reset,
        at,
    )
    .await?;
    let credential = seal_password(&state.security, &tenant, &user_id, &req.new_password).await?;
    let ctx = user_actor(&user_id, at);
    let done = run_user(&state, &ctx, &tenant, &user_id, |_| {
        UserCommand::ResetPassword {
            token: hash.clone(),
            credential: credential.clone(),
            now: at,
        }
    })
    .await
    .map_err(|e| command_problem(e, user_problem))?;
    let mut position = done.position.unwrap_or_default();
    position = position.max(
        revoke_sessions(
            &state,
            &ctx,
            &tenant,
            &user_id,
            None,
            session::RevokeReason::PasswordChanged,
        )
        .await?,
    );
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

/// Revokes every live session of a user except `keep`; returns the last position written (0 if
/// none).
pub async fn revoke_sessions(
    state: &AppState,
    ctx: &Context,
    tenant: &str,
    user_id: &str,
    keep: Option<&str>,
    reason: session::RevokeReason,
) -> Result<u64, Problem> {
    state
        .security
        .index
        .catch_up()
        .await
        .map_err(|_| Problem::unavailable("the server is catching up with the log", 1))?;
    let mut position = 0;
    for session_id in state.security.index.live_sessions(tenant, user_id) {
        if Some(session_id.as_str()) == keep {
            continue;
        }
        let s = stream(tenant, "session", &session_id)?;
        let done = commands::execute(
            &state.store,
            Some(&state.states),
            &s,
            ctx,
            None,
            session::evolve,
            |s| session::decide(s.as_ref(), SessionCommand::Revoke { reason }),
        )
        .await
        .map_err(|e| command_problem(e, session_problem))?;
        position = position.max(done.position.unwrap_or_default());
    }
    Ok(position)
}

/// The public keys that verify access tokens, as a JSON Web Key Set (RFC 7517). Keys stay
/// listed after a rotation until every token they signed has expired.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "auth",
    responses((status = 200, description = "The JSON Web Key Set", body = Object)),
)]
pub async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = Json(state.security.signer.jwks(now().as_datetime())).into_response();
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    response
}
