//! Sessions: listing a user's sessions and ending them, for the user themselves (logout, their
//! own listing and revocations) and for their administrators.

use custodian_domain::session::{
    self, RevokeReason, Session, SessionCommand, SessionError, SessionEvent,
};
use custodian_projections::sessions as session_view;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::access::Principal;
use crate::commands::{self, Context};
use crate::error::AppError;
use crate::validate::{check_cursor, page, parse_flag, parse_limit};
use crate::{App, stream};

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
    /// Why it was revoked: `logout`, `revoked_by_user`, `revoked_by_admin`,
    /// `refresh_token_reuse`, `password_changed` or `tenant_suspended` (a suspension of the
    /// tenant ends every session of it for good).
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

/// Session listing parameters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionListQuery {
    /// `true`: only sessions that are neither revoked nor expired; `false`: all. The caller's
    /// own listing defaults to `true`, an administrator's to `false`.
    #[param(value_type = Option<bool>)]
    pub active: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

fn session_view(s: session_view::SessionRow, current: Option<&str>) -> SessionView {
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

/// A page of a user's sessions from the sessions view; `active` defaults to `default_active`;
/// `current` is marked as the asking session.
pub async fn page_of_user(
    app: &App,
    tenant: &str,
    user_id: &str,
    q: &SessionListQuery,
    default_active: bool,
    current: Option<&str>,
) -> Result<SessionPage, AppError> {
    let active = match q.active.as_deref() {
        None => default_active,
        some => parse_flag("active", some)?,
    };
    let limit = parse_limit(q.limit.as_deref())?;
    check_cursor("sess", q.cursor.as_deref())?;
    let tables = app.tables("sessions")?;
    let rows = session_view::list_sessions(
        app.db.pool(),
        &tables,
        tenant,
        user_id,
        active,
        &app.now().to_string(),
        q.cursor.as_deref(),
        limit + 1,
    )
    .await?;
    let (rows, next_cursor) = page(rows, limit, |r| &r.session_id);
    Ok(SessionPage {
        items: rows.into_iter().map(|r| session_view(r, current)).collect(),
        next_cursor,
    })
}

/// What a refused session command means to a refresh-token holder: every way of being wrong is
/// the same answer.
pub fn session_error(e: SessionError) -> AppError {
    match e {
        SessionError::NotFound | SessionError::InvalidToken | SessionError::Ended => {
            AppError::unauthenticated("the refresh token is invalid, spent or expired")
        }
        SessionError::AlreadyExists => AppError::conflict(e.to_string()),
    }
}

/// Runs a session command, built afresh for each attempt, on `tenant`'s session `session_id`; a
/// refusal is what `refused` makes of it.
pub(crate) async fn run_session(
    app: &App,
    ctx: &Context,
    tenant: &str,
    session_id: &str,
    command: impl Fn() -> SessionCommand,
    refused: impl FnOnce(SessionError) -> AppError,
) -> Result<commands::Done<Option<Session>, SessionEvent>, AppError> {
    let s = stream(tenant, "session", session_id)?;
    commands::execute(
        &app.store,
        Some(&app.states),
        &s,
        ctx,
        None,
        session::evolve,
        |s| session::decide(s.as_ref(), command()),
    )
    .await
    .map_err(|e| AppError::from_failed(e, refused))
}

/// Revokes one session of `tenant`; returns the position written (0 when it was already
/// revoked). An unknown session is `NotFound`.
pub async fn revoke_one(
    app: &App,
    ctx: &Context,
    tenant: &str,
    session_id: &str,
    reason: RevokeReason,
) -> Result<u64, AppError> {
    let done = run_session(
        app,
        ctx,
        tenant,
        session_id,
        || SessionCommand::Revoke { reason },
        |e| AppError::not_found(e.to_string()),
    )
    .await?;
    Ok(done.position.unwrap_or_default())
}

/// Revokes every live session of a user except `keep`; returns how many were revoked and the
/// last position written (0 if none).
pub async fn revoke_all(
    app: &App,
    ctx: &Context,
    tenant: &str,
    user_id: &str,
    keep: Option<&str>,
    reason: RevokeReason,
) -> Result<(u64, u64), AppError> {
    app.security
        .index
        .catch_up()
        .await
        .map_err(|_| AppError::catching_up())?;
    let mut position = 0;
    let mut revoked = 0;
    for session_id in app.security.index.live_sessions(tenant, user_id) {
        if Some(session_id.as_str()) == keep {
            continue;
        }
        let done = run_session(
            app,
            ctx,
            tenant,
            &session_id,
            || SessionCommand::Revoke { reason },
            // Revoking is idempotent, and the index listed this session as live: a refusal
            // means the log and the index disagree, which is a bug, not the caller's error.
            |e| AppError::internal(format!("cannot revoke session {session_id}: {e}")),
        )
        .await?;
        if let Some(p) = done.position {
            revoked += 1;
            position = position.max(p);
        }
    }
    Ok((revoked, position))
}

/// A command's answer carrying only its position.
#[derive(Debug, Serialize, ToSchema)]
pub struct Done {
    /// The log position of the last event written (0 when nothing changed).
    pub position: u64,
}

/// Ends the caller's own session: its access and refresh tokens stop working at once.
pub async fn logout(app: &App, principal: &Principal) -> Result<Done, AppError> {
    principal.require_session("log out")?;
    let position = revoke_one(
        app,
        &principal.context(app.now()),
        &principal.tenant,
        &principal.session_id,
        RevokeReason::Logout,
    )
    .await?;
    Ok(Done { position })
}

/// A page of the caller's own sessions: only live ones unless `active=false`, the session of the
/// asking token marked `current`.
pub async fn list_mine(
    app: &App,
    principal: &Principal,
    query: &SessionListQuery,
) -> Result<SessionPage, AppError> {
    principal.require_session("list your sessions")?;
    page_of_user(
        app,
        &principal.tenant,
        &principal.user_id,
        query,
        true,
        Some(&principal.session_id),
    )
    .await
}

/// Ends one of the caller's own sessions. Any other session, of another user or of another
/// tenant, does not exist for the caller (`NotFound`).
pub async fn revoke_mine(
    app: &App,
    principal: &Principal,
    session_id: &str,
) -> Result<Done, AppError> {
    principal.require_session("end your sessions")?;
    let mine = app
        .security
        .index
        .session(session_id)
        .is_some_and(|s| s.tenant == principal.tenant && s.user_id == principal.user_id);
    if !mine {
        return Err(AppError::not_found("no such session"));
    }
    let position = revoke_one(
        app,
        &principal.context(app.now()),
        &principal.tenant,
        session_id,
        RevokeReason::RevokedByUser,
    )
    .await?;
    Ok(Done { position })
}
