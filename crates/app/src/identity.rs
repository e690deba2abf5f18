//! Proving who one is: authenticating an access token, logging in, refreshing a session, and the
//! one-time tokens (invitations, password resets) that set a password.

use crate::App;
use crate::access::Principal;
use crate::auth::index::Refusal;
use crate::error::AppError;

fn refusal(r: Refusal) -> AppError {
    match r {
        Refusal::Behind => AppError::catching_up(),
        r => AppError::unauthenticated(r.to_string()),
    }
}

/// The caller behind an access token: the token verifies (signature, `iss`, `aud`, `exp`), and
/// its session, user and tenant may act now, as the index knows after catching up with the log.
pub async fn authenticate(app: &App, access_token: &str) -> Result<Principal, AppError> {
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
    let user = security
        .index
        .check(&claims.tenant, &claims.sub, &claims.sid, now)
        .map_err(refusal)?;
    Ok(Principal {
        user_id: claims.sub,
        tenant: claims.tenant,
        session_id: claims.sid,
        user,
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
