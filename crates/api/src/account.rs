//! Self-service endpoints of an authenticated user: who am I, logout, my sessions, my password,
//! and TOTP enrollment with recovery codes.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use custodian_domain::session::{self, RevokeReason, SessionCommand};
use custodian_domain::user::UserCommand;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{secrets, tokens, totp};
use crate::commands;
use crate::identity::{
    ClientIp, Identity, JsonBody, Principal, check_len, command_problem, now, stream,
};
use crate::identity::{
    MAX_PASSWORD_CHARS, check_password, load_user, positioned, record_bad_code, revoke_sessions,
    run_user, user_problem,
};
use crate::identity::{QueryParams, SessionListQuery, SessionPage, sessions_of};
use crate::respond::{PROBLEM_JSON, Problem, ProblemDocument};
use crate::state::AppState;
use custodian_app::users::{seal_password, totp_secret};

/// How many recovery codes a set holds.
pub const RECOVERY_CODES: usize = 10;

/// The caller, as `GET /v1/auth/me` shows them.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    /// The user's id.
    pub user_id: String,
    /// Their tenant (`_system` for platform administrators).
    pub tenant: String,
    /// `person`, `agent` or `service`.
    pub kind: String,
    /// Their email address.
    pub email: Option<String>,
    /// Their display name.
    pub name: Option<String>,
    /// Built-in roles.
    pub roles: Vec<String>,
    /// Whether TOTP is required at login.
    pub mfa_enabled: bool,
    /// The session of the access token used.
    pub session_id: String,
}

/// The caller's profile, from the access token and the live index.
#[utoipa::path(
    get,
    path = "/v1/auth/me",
    tag = "account",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = Me),
        (status = 401, description = "Missing, invalid or expired access token, or its session, user or tenant may no longer act", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
pub async fn me(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<axum::Json<Me>, Problem> {
    let key = state.security.data_key(&principal.user_id).await?;
    let open =
        |sealed: &Option<custodian_domain::secret::Sealed>| -> Result<Option<String>, Problem> {
            match (sealed, &key) {
                (Some(s), Some(k)) => Ok(Some(Identity::open_text(k, s, &principal.user_id)?)),
                _ => Ok(None),
            }
        };
    Ok(axum::Json(Me {
        email: open(&principal.user.email)?,
        name: open(&principal.user.name)?,
        user_id: principal.user_id.clone(),
        tenant: principal.tenant.clone(),
        kind: principal.user.kind.as_str().to_owned(),
        roles: principal.user.roles.clone(),
        mfa_enabled: principal.user.mfa_enabled,
        session_id: principal.session_id.clone(),
    }))
}

/// A command's answer carrying only its position.
#[derive(Debug, Serialize, ToSchema)]
pub struct Done {
    /// The log position of the last event written (0 when nothing changed).
    pub position: u64,
}

async fn revoke_one(
    state: &AppState,
    principal: &Principal,
    session_id: &str,
    reason: RevokeReason,
) -> Result<u64, Problem> {
    let s = stream(&principal.tenant, "session", session_id)?;
    let done = commands::execute(
        &state.store,
        Some(&state.states),
        &s,
        &principal.context(now()),
        None,
        session::evolve,
        |s| session::decide(s.as_ref(), SessionCommand::Revoke { reason }),
    )
    .await
    .map_err(|e| command_problem(e, |e| Problem::not_found(e.to_string())))?;
    Ok(done.position.unwrap_or_default())
}

/// End the caller's session: its access and refresh tokens stop working at once.
#[utoipa::path(
    post,
    path = "/v1/auth/logout",
    tag = "account",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The session is revoked", body = Done),
        (status = 401, description = "Missing or invalid access token", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
pub async fn logout(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Response, Problem> {
    let position = revoke_one(
        &state,
        &principal,
        &principal.session_id,
        RevokeReason::Logout,
    )
    .await?;
    Ok(positioned(StatusCode::OK, position, Done { position }))
}

/// The caller's sessions.
#[utoipa::path(
    get,
    path = "/v1/auth/sessions",
    tag = "account",
    security(("bearer" = [])),
    params(SessionListQuery),
    responses(
        (status = 200, description = "A page of the caller's sessions", body = SessionPage),
        (status = 400, description = "Malformed query", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 401, description = "Missing or invalid access token", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 422, description = "`active`, `limit` or `cursor` is invalid", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 503, description = "The sessions view is not ready; retry after `Retry-After`", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
pub async fn my_sessions(
    State(state): State<AppState>,
    principal: Principal,
    QueryParams(query): QueryParams<SessionListQuery>,
) -> Result<axum::Json<SessionPage>, Problem> {
    Ok(axum::Json(
        sessions_of(
            &state,
            &principal.tenant,
            &principal.user_id,
            &query,
            true,
            Some(&principal.session_id),
        )
        .await?,
    ))
}

/// Revoke one of the caller's own sessions.
#[utoipa::path(
    delete,
    path = "/v1/auth/sessions/{session_id}",
    tag = "account",
    security(("bearer" = [])),
    params(("session_id" = String, Path, description = "The session to end")),
    responses(
        (status = 200, description = "The session is revoked", body = Done),
        (status = 401, description = "Missing or invalid access token", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 404, description = "No such session of the caller", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
pub async fn revoke_my_session(
    State(state): State<AppState>,
    principal: Principal,
    Path(session_id): Path<String>,
) -> Result<Response, Problem> {
    let mine = state
        .security
        .index
        .session(&session_id)
        .is_some_and(|s| s.tenant == principal.tenant && s.user_id == principal.user_id);
    if !mine {
        return Err(Problem::not_found("no such session"));
    }
    let position = revoke_one(&state, &principal, &session_id, RevokeReason::RevokedByUser).await?;
    Ok(positioned(StatusCode::OK, position, Done { position }))
}

/// `POST /v1/auth/password`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    /// The password now.
    pub current_password: String,
    /// The password from now on.
    pub new_password: String,
}

/// Change the caller's password, proving the current one. Every other session is revoked.
#[utoipa::path(
    post,
    path = "/v1/auth/password",
    tag = "account",
    security(("bearer" = [])),
    request_body = ChangePasswordRequest,
    responses(
        (status = 200, description = "Changed", body = Done),
        (status = 400, description = "Malformed JSON", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 401, description = "Missing or invalid access token", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = "The current password is wrong (code `invalid_credentials`)", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 422, description = "The new password does not meet the policy, or a field is missing", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 429, description = "Too many failed attempts", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
pub async fn change_password(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    principal: Principal,
    JsonBody(req): JsonBody<ChangePasswordRequest>,
) -> Result<Response, Problem> {
    check_len(
        "current_password",
        &req.current_password,
        1,
        MAX_PASSWORD_CHARS,
    )?;
    check_len("new_password", &req.new_password, 1, MAX_PASSWORD_CHARS)?;
    state
        .security
        .policy
        .check(&req.new_password)
        .map_err(|e| Problem::validation(format!("new_password: {e}")))?;
    prove_password(&state, &principal, &req.current_password, ip).await?;
    let credential = seal_password(
        &state,
        &principal.tenant,
        &principal.user_id,
        &req.new_password,
    )
    .await?;
    let ctx = principal.context(now());
    let done = run_user(&state, &ctx, &principal.tenant, &principal.user_id, |_| {
        UserCommand::ChangePassword {
            credential: credential.clone(),
        }
    })
    .await
    .map_err(|e| command_problem(e, user_problem))?;
    let position = done.position.unwrap_or_default().max(
        revoke_sessions(
            &state,
            &ctx,
            &principal.tenant,
            &principal.user_id,
            Some(&principal.session_id),
            RevokeReason::PasswordChanged,
        )
        .await?,
    );
    Ok(positioned(StatusCode::OK, position, Done { position }))
}

/// Checks a password of the caller; a wrong one counts as a failed login.
async fn prove_password(
    state: &AppState,
    principal: &Principal,
    password: &str,
    ip: Option<std::net::IpAddr>,
) -> Result<(), Problem> {
    let at = now();
    let user = load_user(state, &principal.tenant, &principal.user_id)
        .await?
        .ok_or_else(|| Problem::unauthenticated("the user no longer exists"))?;
    if let Err(e @ custodian_domain::user::UserError::Locked(_)) = user.check_can_log_in(at) {
        return Err(user_problem(e));
    }
    if check_password(
        state,
        &principal.tenant,
        &principal.user_id,
        &user,
        password,
        ip,
        at,
    )
    .await?
    {
        Ok(())
    } else {
        Err(Problem::new(
            StatusCode::FORBIDDEN,
            "invalid_credentials",
            "Invalid credentials",
            "the password is wrong",
        ))
    }
}

/// A fresh TOTP seed, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct TotpEnrollment {
    /// The seed in base32, for manual entry.
    pub secret: String,
    /// `otpauth://totp/...`, for a QR code.
    pub otpauth_uri: String,
    /// The log position of the enrollment.
    pub position: u64,
}

/// Start TOTP enrollment: returns a new seed once. It takes effect when confirmed with a code;
/// starting again before that replaces the seed.
#[utoipa::path(
    post,
    path = "/v1/auth/mfa/totp",
    tag = "account",
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Enrollment started; confirm it with a first code", body = TotpEnrollment),
        (status = 401, description = "Missing or invalid access token", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 409, description = "TOTP is already enabled, or the user has no password", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
pub async fn totp_enroll(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Response, Problem> {
    let identity = &state.security;
    let key = identity
        .data_key(&principal.user_id)
        .await?
        .ok_or_else(|| Problem::unauthenticated("the user no longer exists"))?;
    let secret = totp::generate_secret();
    let sealed = secrets::seal(&key, &secret, principal.user_id.as_bytes());
    let account = match &principal.user.email {
        Some(e) => Identity::open_text(&key, e, &principal.user_id)?,
        None => principal.user_id.clone(),
    };
    let done = run_user(
        &state,
        &principal.context(now()),
        &principal.tenant,
        &principal.user_id,
        |_| UserCommand::StartTotpEnrollment {
            secret: sealed.clone(),
        },
    )
    .await
    .map_err(|e| command_problem(e, user_problem))?;
    let position = done.position.unwrap_or_default();
    Ok(positioned(
        StatusCode::CREATED,
        position,
        TotpEnrollment {
            secret: totp::base32(&secret),
            otpauth_uri: totp::otpauth_uri(&secret, &identity.issuer, &account),
            position,
        },
    ))
}

/// `POST /v1/auth/mfa/totp/confirm`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpCode {
    /// A current 6-digit code.
    pub code: String,
}

/// Recovery codes, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecoveryCodes {
    /// Ten single-use codes; each completes one login in place of a TOTP code. Store them
    /// safely: they are never shown again.
    pub recovery_codes: Vec<String>,
    /// The log position.
    pub position: u64,
}

fn unix(at: custodian_domain::Timestamp) -> u64 {
    u64::try_from(at.as_datetime().unix_timestamp()).unwrap_or(0)
}

fn fresh_codes(
    identity: &Identity,
) -> Result<(Vec<String>, Vec<custodian_domain::secret::TokenHash>), Problem> {
    let codes = tokens::recovery_codes(RECOVERY_CODES);
    let hashes = codes
        .iter()
        .map(|c| {
            identity
                .tokens
                .hash_recovery_code(c)
                .ok_or_else(|| Problem::internal("a generated recovery code does not normalize"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((codes, hashes))
}

/// Confirm TOTP enrollment with a first code; from now on login needs a second factor. Returns
/// the first recovery codes.
#[utoipa::path(
    post,
    path = "/v1/auth/mfa/totp/confirm",
    tag = "account",
    security(("bearer" = [])),
    request_body = TotpCode,
    responses(
        (status = 200, description = "TOTP is enabled", body = RecoveryCodes),
        (status = 400, description = "Malformed JSON", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 401, description = "Missing or invalid access token, or a wrong code", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 409, description = "No enrollment started, or TOTP already enabled", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 422, description = "A field is missing", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
pub async fn totp_confirm(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(req): JsonBody<TotpCode>,
) -> Result<Response, Problem> {
    check_len("code", &req.code, 1, 16)?;
    let at = now();
    let user = load_user(&state, &principal.tenant, &principal.user_id)
        .await?
        .ok_or_else(|| Problem::unauthenticated("the user no longer exists"))?;
    if user.totp_enabled {
        return Err(Problem::conflict("TOTP is already enabled"));
    }
    let secret = totp_secret(&state, &principal.user_id, &user).await?;
    let step = totp::verify(&secret, &req.code, unix(at))
        .ok_or_else(|| Problem::unauthenticated("the code is invalid or was already used"))?;
    let (codes, hashes) = fresh_codes(&state.security)?;
    let done = run_user(
        &state,
        &principal.context(at),
        &principal.tenant,
        &principal.user_id,
        |_| UserCommand::ConfirmTotp {
            step,
            recovery_codes: hashes.clone(),
        },
    )
    .await
    .map_err(|e| command_problem(e, user_problem))?;
    let position = done.position.unwrap_or_default();
    Ok(positioned(
        StatusCode::OK,
        position,
        RecoveryCodes {
            recovery_codes: codes,
            position,
        },
    ))
}

/// Proof of presence for sensitive MFA changes: the password, or a current TOTP code.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FreshProof {
    /// The caller's password.
    #[serde(default)]
    pub password: Option<String>,
    /// A current TOTP code.
    #[serde(default)]
    pub code: Option<String>,
}

/// Checks a proof of presence; returns the TOTP step when a code was the proof, which the
/// command then spends. A wrong password or code counts as a failed login.
async fn prove_fresh(
    state: &AppState,
    principal: &Principal,
    proof: &FreshProof,
    ip: Option<std::net::IpAddr>,
) -> Result<Option<u64>, Problem> {
    match (&proof.password, &proof.code) {
        (Some(password), None) => {
            check_len("password", password, 1, MAX_PASSWORD_CHARS)?;
            prove_password(state, principal, password, ip).await?;
            Ok(None)
        }
        (None, Some(code)) => {
            check_len("code", code, 1, 16)?;
            let at = now();
            let user = load_user(state, &principal.tenant, &principal.user_id)
                .await?
                .ok_or_else(|| Problem::unauthenticated("the user no longer exists"))?;
            if let Err(e @ custodian_domain::user::UserError::Locked(_)) = user.check_can_log_in(at)
            {
                return Err(user_problem(e));
            }
            let secret = totp_secret(state, &principal.user_id, &user).await?;
            match totp::verify(&secret, code, unix(at)) {
                Some(step) if user.last_totp_step.is_none_or(|last| step > last) => Ok(Some(step)),
                _ => {
                    record_bad_code(state, &principal.tenant, &principal.user_id, ip, at).await?;
                    Err(Problem::new(
                        StatusCode::FORBIDDEN,
                        "invalid_credentials",
                        "Invalid credentials",
                        "the code is invalid or was already used",
                    ))
                }
            }
        }
        _ => Err(Problem::validation(
            "give exactly one of password and code (TOTP) to prove it is you",
        )),
    }
}

/// Turn TOTP off, proving presence with the password or a current code. Recovery codes are
/// discarded.
#[utoipa::path(
    post,
    path = "/v1/auth/mfa/totp/disable",
    tag = "account",
    security(("bearer" = [])),
    request_body = FreshProof,
    responses(
        (status = 200, description = "TOTP is off", body = Done),
        (status = 400, description = "Malformed JSON", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 401, description = "Missing or invalid access token", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = "Wrong password or code (code `invalid_credentials`)", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 409, description = "TOTP is not enabled", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 422, description = "Neither or both of password and code", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 429, description = "Too many failed attempts (code `rate_limited`, with `Retry-After`)", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
pub async fn totp_disable(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    principal: Principal,
    JsonBody(proof): JsonBody<FreshProof>,
) -> Result<Response, Problem> {
    if !principal.user.mfa_enabled {
        return Err(Problem::conflict("TOTP is not enabled"));
    }
    let totp_step = prove_fresh(&state, &principal, &proof, ip).await?;
    let done = run_user(
        &state,
        &principal.context(now()),
        &principal.tenant,
        &principal.user_id,
        |_| UserCommand::DisableTotp { totp_step },
    )
    .await
    .map_err(|e| command_problem(e, user_problem))?;
    let position = done.position.unwrap_or_default();
    Ok(positioned(StatusCode::OK, position, Done { position }))
}

/// Replace the recovery codes with ten new ones, proving presence with the password or a current
/// code. The old codes stop working.
#[utoipa::path(
    post,
    path = "/v1/auth/mfa/recovery-codes",
    tag = "account",
    security(("bearer" = [])),
    request_body = FreshProof,
    responses(
        (status = 200, description = "New codes", body = RecoveryCodes),
        (status = 400, description = "Malformed JSON", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 401, description = "Missing or invalid access token", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = "Wrong password or code (code `invalid_credentials`)", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 409, description = "TOTP is not enabled", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 422, description = "Neither or both of password and code", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 429, description = "Too many failed attempts (code `rate_limited`, with `Retry-After`)", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
pub async fn regenerate_recovery_codes(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    principal: Principal,
    JsonBody(proof): JsonBody<FreshProof>,
) -> Result<Response, Problem> {
    if !principal.user.mfa_enabled {
        return Err(Problem::conflict("TOTP is not enabled"));
    }
    let totp_step = prove_fresh(&state, &principal, &proof, ip).await?;
    let (codes, hashes) = fresh_codes(&state.security)?;
    let done = run_user(
        &state,
        &principal.context(now()),
        &principal.tenant,
        &principal.user_id,
        |_| UserCommand::RegenerateRecoveryCodes {
            codes: hashes.clone(),
            totp_step,
        },
    )
    .await
    .map_err(|e| command_problem(e, user_problem))?;
    let position = done.position.unwrap_or_default();
    Ok(positioned(
        StatusCode::OK,
        position,
        RecoveryCodes {
            recovery_codes: codes,
            position,
        },
    ))
}
