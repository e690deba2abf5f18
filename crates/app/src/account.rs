//! What an authenticated user does for themselves: see their profile and change their password.

use custodian_domain::Timestamp;
use custodian_domain::secret::Sealed;
use custodian_domain::session::RevokeReason;
use custodian_domain::user::{UserCommand, UserError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::access::Principal;
use crate::auth::Security;
use crate::error::AppError;
use crate::sessions::{Done, revoke_all};
use crate::users::{
    check_email_from_ip, check_password, failed_user, load_user, run_user, seal_password,
    user_error,
};
use crate::validate::{MAX_PASSWORD_CHARS, check_len};
use crate::{App, Origin};

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
    /// The platform's root role if held, and the roles held on the whole tenant now (as access
    /// tokens carry them).
    pub roles: Vec<String>,
    /// Whether TOTP is required at login.
    pub mfa_enabled: bool,
    /// The session of the access token used.
    pub session_id: String,
}

/// The caller's profile, from the authentication index, with their email and name opened with
/// their data key (absent once erased).
pub async fn me(app: &App, principal: &Principal) -> Result<Me, AppError> {
    let key = app.security.data_key(&principal.user_id).await?;
    let open = |sealed: &Option<Sealed>| -> Result<Option<String>, AppError> {
        match (sealed, &key) {
            (Some(s), Some(k)) => Ok(Some(Security::open_text(k, s, &principal.user_id)?)),
            _ => Ok(None),
        }
    };
    Ok(Me {
        email: open(&principal.user.email)?,
        name: open(&principal.user.name)?,
        user_id: principal.user_id.clone(),
        tenant: principal.tenant.clone(),
        kind: principal.user.kind.as_str().to_owned(),
        roles: crate::access::token_roles(
            app,
            &principal.tenant,
            &principal.user_id,
            &principal.user.roles,
        ),
        mfa_enabled: principal.user.mfa_enabled,
        session_id: principal.session_id.clone(),
    })
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

/// Changes the caller's password, proving the current one (a wrong one is
/// [`AppError::WrongProof`] and counts as a failed login). Every other session of the caller is
/// revoked; theirs stays.
pub async fn change_password(
    app: &App,
    principal: &Principal,
    origin: &Origin,
    req: ChangePasswordRequest,
) -> Result<Done, AppError> {
    principal.require_session("change a password")?;
    check_len(
        "current_password",
        &req.current_password,
        1,
        MAX_PASSWORD_CHARS,
    )?;
    check_len("new_password", &req.new_password, 1, MAX_PASSWORD_CHARS)?;
    app.security
        .policy
        .check(&req.new_password, principal.user.mfa_enabled)
        .map_err(|e| AppError::invalid(format!("new_password: {e}")))?;
    let at = app.now();
    prove_password(app, principal, &req.current_password, origin, at).await?;
    let credential = seal_password(
        app,
        &principal.tenant,
        &principal.user_id,
        &req.new_password,
        principal.user.mfa_enabled,
    )
    .await?;
    let ctx = principal.context(at);
    let done = run_user(app, &ctx, &principal.tenant, &principal.user_id, |_| {
        UserCommand::ChangePassword {
            credential: credential.clone(),
        }
    })
    .await
    .map_err(|e| failed_user(e, at))?;
    let (_, revoked) = revoke_all(
        app,
        &ctx,
        &principal.tenant,
        &principal.user_id,
        Some(&principal.session_id),
        RevokeReason::PasswordChanged,
    )
    .await?;
    Ok(Done {
        position: done.position.unwrap_or_default().max(revoked),
    })
}

/// Checks a password of the caller at `at`: a locked account, or the caller's email locked from
/// this address, is throttled; a wrong password is [`AppError::WrongProof`] and counts as a failed
/// login.
pub(crate) async fn prove_password(
    app: &App,
    principal: &Principal,
    password: &str,
    origin: &Origin,
    at: Timestamp,
) -> Result<(), AppError> {
    let user = load_user(app, &principal.tenant, &principal.user_id)
        .await?
        .ok_or_else(|| AppError::unauthenticated("the user no longer exists"))?;
    check_email_from_ip(app, &principal.tenant, &user.email_index, origin.ip, at)?;
    if let Err(e @ UserError::Locked(_)) = user.check_can_log_in(at) {
        return Err(user_error(e, at));
    }
    let matches = check_password(
        app,
        &principal.tenant,
        &principal.user_id,
        &user,
        password,
        origin.ip,
        at,
    )
    .await?;
    if matches {
        Ok(())
    } else {
        Err(AppError::WrongProof("the password is wrong".to_owned()))
    }
}
