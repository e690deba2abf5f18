//! Public authentication routes: login, second factors, refresh, invitations, password resets and
//! the signing keys. Each calls one use case of [`custodian_app::identity`].

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use custodian_app::Origin;
use custodian_app::identity::{
    self, AcceptInvitationRequest, Accepted, LoginRequest, MfaVerifyRequest, RefreshRequest,
    ResetPasswordRequest, Tokens,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::JsonBody;
use crate::openapi::{IndexBusyProblems, JsonBodyProblems, NewPasswordProblems, StoreBusyProblems};
use crate::respond::{PROBLEM_JSON, Problem, ProblemDocument, positioned};
use crate::state::AppState;

/// This module's routes.
pub(crate) fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router
        .routes(routes!(jwks))
        .routes(routes!(login))
        .routes(routes!(mfa_verify))
        .routes(routes!(refresh))
        .routes(routes!(accept_invitation))
        .routes(routes!(reset_password))
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
        JsonBodyProblems,
        (status = 401, description = "Wrong tenant, email or password (code `invalid_credentials`)", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = "The password was right but the tenant is suspended (code `forbidden`)", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 429, description = "Too many failed attempts for this account or address (code `rate_limited`, with `Retry-After`)", body = ProblemDocument, content_type = PROBLEM_JSON),
        IndexBusyProblems,
    ),
)]
async fn login(
    State(state): State<AppState>,
    origin: Origin,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Result<Response, Problem> {
    let r = identity::login(&state, &origin, req).await?;
    Ok(positioned(StatusCode::OK, r.position(), r))
}

/// Complete a login with a TOTP code or a recovery code.
///
/// A TOTP code is accepted for the current 30-second step and one step either side, once: a code
/// of a step already used is refused, with a hint to wait for the next code. A recovery code
/// works once.
#[utoipa::path(
    post,
    path = "/v1/auth/mfa/verify",
    tag = "auth",
    request_body = MfaVerifyRequest,
    responses(
        (status = 200, description = "Logged in", body = Tokens),
        JsonBodyProblems,
        (status = 401, description = "Unknown or expired challenge, or a wrong or spent code", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 422, description = "Neither or both of `code` and `recovery_code`, or a field is missing or of the wrong type", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = "The tenant is suspended (code `forbidden`)", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 429, description = "Too many failed attempts", body = ProblemDocument, content_type = PROBLEM_JSON),
        StoreBusyProblems,
    ),
)]
async fn mfa_verify(
    State(state): State<AppState>,
    origin: Origin,
    JsonBody(req): JsonBody<MfaVerifyRequest>,
) -> Result<Response, Problem> {
    let r = identity::mfa_verify(&state, &origin, req).await?;
    Ok(positioned(StatusCode::OK, r.position, r))
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
        JsonBodyProblems,
        (status = 401, description = "Invalid, spent (code `refresh_token_reused`: the session is now revoked) or expired refresh token, a session that has ended (a suspension of its tenant ends it for good), or the user or tenant may not act", body = ProblemDocument, content_type = PROBLEM_JSON),
        IndexBusyProblems,
    ),
)]
async fn refresh(
    State(state): State<AppState>,
    origin: Origin,
    JsonBody(req): JsonBody<RefreshRequest>,
) -> Result<Response, Problem> {
    let r = identity::refresh(&state, &origin, req).await?;
    Ok(positioned(StatusCode::OK, r.position, r))
}

/// Accept an invitation and set a first password.
#[utoipa::path(
    post,
    path = "/v1/auth/invitations/accept",
    tag = "auth",
    request_body = AcceptInvitationRequest,
    responses(
        (status = 200, description = "The user is active; log in next", body = Accepted),
        JsonBodyProblems,
        (status = 401, description = "Unknown, used or expired invitation", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = "The tenant is suspended; the invitation stays open (code `forbidden`)", body = ProblemDocument, content_type = PROBLEM_JSON),
        NewPasswordProblems,
        StoreBusyProblems,
    ),
)]
async fn accept_invitation(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<AcceptInvitationRequest>,
) -> Result<Response, Problem> {
    let r = identity::accept_invitation(&state, req).await?;
    Ok(positioned(StatusCode::OK, r.position, r))
}

/// Set a new password with a reset token. Every session of the user is revoked.
#[utoipa::path(
    post,
    path = "/v1/auth/password/reset",
    tag = "auth",
    request_body = ResetPasswordRequest,
    responses(
        (status = 200, description = "The password is replaced and the user's sessions revoked", body = Accepted),
        JsonBodyProblems,
        (status = 401, description = "Unknown, used or expired reset token", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 403, description = "The tenant is suspended; the reset token stays open (code `forbidden`)", body = ProblemDocument, content_type = PROBLEM_JSON),
        NewPasswordProblems,
        IndexBusyProblems,
    ),
)]
async fn reset_password(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<ResetPasswordRequest>,
) -> Result<Response, Problem> {
    let r = identity::reset_password(&state, req).await?;
    Ok(positioned(StatusCode::OK, r.position, r))
}

/// The public keys that verify access tokens, as a JSON Web Key Set (RFC 7517). Keys stay
/// listed after a rotation until every token they signed has expired.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "auth",
    responses((status = 200, description = "The JSON Web Key Set", body = Object)),
)]
async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = Json(identity::jwks(&state)).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    response
}
