//! Self-service routes of an authenticated user: profile, sessions, password and TOTP.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use custodian_app::account::{self, ChangePasswordRequest, Me};
use custodian_app::mfa::{self, FreshProof, RecoveryCodes, TotpCode, TotpEnrollment};
use custodian_app::sessions::{self, Done, SessionListQuery, SessionPage};
use custodian_app::{Origin, Principal};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{JsonBody, PathParams, QueryParams};
use crate::openapi::{
    AuthProblems, FreshProofProblems, JsonBodyProblems, SessionQueryProblems, ThrottledProblems,
};
use crate::respond::{PROBLEM_JSON, Problem, ProblemDocument, positioned};
use crate::state::AppState;

/// This module's routes.
pub(crate) fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router
        .routes(routes!(me))
        .routes(routes!(logout))
        .routes(routes!(my_sessions))
        .routes(routes!(revoke_my_session))
        .routes(routes!(change_password))
        .routes(routes!(totp_enroll))
        .routes(routes!(totp_confirm))
        .routes(routes!(totp_disable))
        .routes(routes!(regenerate_recovery_codes))
}

/// The caller's profile, from the access token and the live index.
#[utoipa::path(
    get,
    path = "/v1/auth/me",
    tag = "account",
    security(("bearer" = [])),
    responses((status = 200, description = "The caller", body = Me), AuthProblems),
)]
async fn me(State(state): State<AppState>, principal: Principal) -> Result<Json<Me>, Problem> {
    Ok(Json(account::me(&state, &principal).await?))
}

/// End the caller's session: its access and refresh tokens stop working at once.
#[utoipa::path(
    post,
    path = "/v1/auth/logout",
    tag = "account",
    security(("bearer" = [])),
    responses((status = 200, description = "The session is revoked", body = Done), AuthProblems),
)]
async fn logout(State(state): State<AppState>, principal: Principal) -> Result<Response, Problem> {
    let r = sessions::logout(&state, &principal).await?;
    Ok(positioned(StatusCode::OK, r.position, r))
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
        SessionQueryProblems,
        AuthProblems,
        (status = 503, description = "The sessions view or the authentication index is not ready; retry after `Retry-After`", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
async fn my_sessions(
    State(state): State<AppState>,
    principal: Principal,
    QueryParams(query): QueryParams<SessionListQuery>,
) -> Result<Json<SessionPage>, Problem> {
    Ok(Json(sessions::list_mine(&state, &principal, &query).await?))
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
        (status = 404, description = "No such session of the caller", body = ProblemDocument, content_type = PROBLEM_JSON),
        AuthProblems,
    ),
)]
async fn revoke_my_session(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(session_id): PathParams<String>,
) -> Result<Response, Problem> {
    let r = sessions::revoke_mine(&state, &principal, &session_id).await?;
    Ok(positioned(StatusCode::OK, r.position, r))
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
        (status = 403, description = "The current password is wrong (code `invalid_credentials`)", body = ProblemDocument, content_type = PROBLEM_JSON),
        ThrottledProblems,
        JsonBodyProblems,
        AuthProblems,
    ),
)]
async fn change_password(
    State(state): State<AppState>,
    origin: Origin,
    principal: Principal,
    JsonBody(req): JsonBody<ChangePasswordRequest>,
) -> Result<Response, Problem> {
    let r = account::change_password(&state, &principal, &origin, req).await?;
    Ok(positioned(StatusCode::OK, r.position, r))
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
        (status = 409, description = "TOTP is already enabled, or the user has no password", body = ProblemDocument, content_type = PROBLEM_JSON),
        AuthProblems,
    ),
)]
async fn totp_enroll(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Response, Problem> {
    let r = mfa::enroll(&state, &principal).await?;
    Ok(positioned(StatusCode::CREATED, r.position, r))
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
        (status = 409, description = "No enrollment started, or TOTP already enabled", body = ProblemDocument, content_type = PROBLEM_JSON),
        JsonBodyProblems,
        AuthProblems,
        (status = 401, description = "Missing or invalid access token, or a wrong code", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
async fn totp_confirm(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(req): JsonBody<TotpCode>,
) -> Result<Response, Problem> {
    let r = mfa::confirm(&state, &principal, req).await?;
    Ok(positioned(StatusCode::OK, r.position, r))
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
        JsonBodyProblems,
        AuthProblems,
        FreshProofProblems,
        ThrottledProblems,
    ),
)]
async fn totp_disable(
    State(state): State<AppState>,
    origin: Origin,
    principal: Principal,
    JsonBody(proof): JsonBody<FreshProof>,
) -> Result<Response, Problem> {
    let r = mfa::disable(&state, &principal, &origin, proof).await?;
    Ok(positioned(StatusCode::OK, r.position, r))
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
        JsonBodyProblems,
        AuthProblems,
        FreshProofProblems,
        ThrottledProblems,
    ),
)]
async fn regenerate_recovery_codes(
    State(state): State<AppState>,
    origin: Origin,
    principal: Principal,
    JsonBody(proof): JsonBody<FreshProof>,
) -> Result<Response, Problem> {
    let r = mfa::regenerate_recovery_codes(&state, &principal, &origin, proof).await?;
    Ok(positioned(StatusCode::OK, r.position, r))
}
