//! Second factors of an authenticated user: TOTP enrollment, confirmation and removal, and the
//! recovery codes that stand in for a TOTP code at login.

use custodian_domain::Timestamp;
use custodian_domain::secret::TokenHash;
use custodian_domain::user::{UserCommand, UserError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::access::Principal;
use crate::account::prove_password;
use crate::auth::{Security, secrets, tokens, totp};
use crate::error::AppError;
use crate::sessions::Done;
use crate::users::{
    check_email_from_ip, failed_user, load_user, record_bad_code, run_user, totp_secret, user_error,
};
use crate::validate::{MAX_PASSWORD_CHARS, check_len};
use crate::{App, Origin};

/// How many recovery codes a set holds.
pub const RECOVERY_CODES: usize = 10;

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

/// Starts TOTP enrollment with a new seed, returned once (with an `otpauth://` URI naming the
/// caller's email). It takes effect when confirmed with a code; starting again before that
/// replaces the seed. Already enabled, or no password: `Conflict`.
pub async fn enroll(app: &App, principal: &Principal) -> Result<TotpEnrollment, AppError> {
    principal.require_session("enroll a second factor")?;
    let security = &app.security;
    let key = security
        .data_key(&principal.user_id)
        .await?
        .ok_or_else(|| AppError::unauthenticated("the user no longer exists"))?;
    let secret = totp::generate_secret();
    let sealed = secrets::seal(&key, &secret, principal.user_id.as_bytes());
    let account = match &principal.user.email {
        Some(e) => Security::open_text(&key, e, &principal.user_id)?,
        None => principal.user_id.clone(),
    };
    let at = app.now();
    let position = run_own(app, principal, at, || UserCommand::StartTotpEnrollment {
        secret: sealed.clone(),
    })
    .await?;
    Ok(TotpEnrollment {
        secret: totp::base32(&secret),
        otpauth_uri: totp::otpauth_uri(&secret, &security.issuer, &account),
        position,
    })
}

/// Confirms TOTP enrollment with a first code (of the current step or the one before), which is
/// spent: from now on login needs a second factor. Returns the first recovery codes. A wrong code
/// is `Unauthenticated`; no enrollment started, or TOTP already enabled, is `Conflict`.
pub async fn confirm(
    app: &App,
    principal: &Principal,
    req: TotpCode,
) -> Result<RecoveryCodes, AppError> {
    principal.require_session("enroll a second factor")?;
    check_len("code", &req.code, 1, 16)?;
    let at = app.now();
    let user = load_user(app, &principal.tenant, &principal.user_id)
        .await?
        .ok_or_else(|| AppError::unauthenticated("the user no longer exists"))?;
    if user.totp_enabled {
        return Err(AppError::conflict("TOTP is already enabled"));
    }
    let secret = totp_secret(app, &principal.user_id, &user).await?;
    let step = totp::verify(&secret, &req.code, unix(at))
        .ok_or_else(|| AppError::unauthenticated("the code is invalid or was already used"))?;
    let (codes, hashes) = fresh_codes(&app.security)?;
    let position = run_own(app, principal, at, || UserCommand::ConfirmTotp {
        step,
        recovery_codes: hashes.clone(),
    })
    .await?;
    Ok(RecoveryCodes {
        recovery_codes: codes,
        position,
    })
}

/// Turns TOTP off behind a fresh proof (see [`FreshProof`]); the recovery codes are discarded.
/// TOTP not enabled is `Conflict`.
pub async fn disable(
    app: &App,
    principal: &Principal,
    origin: &Origin,
    proof: FreshProof,
) -> Result<Done, AppError> {
    principal.require_session("change a second factor")?;
    let position = with_fresh_proof(app, principal, origin, &proof, |totp_step| {
        UserCommand::DisableTotp { totp_step }
    })
    .await?;
    Ok(Done { position })
}

/// Replaces the recovery codes with ten new ones behind a fresh proof (see [`FreshProof`]); the
/// old codes stop working. TOTP not enabled is `Conflict`.
pub async fn regenerate_recovery_codes(
    app: &App,
    principal: &Principal,
    origin: &Origin,
    proof: FreshProof,
) -> Result<RecoveryCodes, AppError> {
    principal.require_session("change a second factor")?;
    let (codes, hashes) = fresh_codes(&app.security)?;
    let position = with_fresh_proof(app, principal, origin, &proof, |totp_step| {
        UserCommand::RegenerateRecoveryCodes {
            codes: hashes.clone(),
            totp_step,
        }
    })
    .await?;
    Ok(RecoveryCodes {
        recovery_codes: codes,
        position,
    })
}

/// Runs a sensitive MFA change of the caller, which needs TOTP enabled and a fresh proof of
/// presence; `command` gets the TOTP step when a code was the proof, so that the change spends
/// it. Returns the position written.
async fn with_fresh_proof(
    app: &App,
    principal: &Principal,
    origin: &Origin,
    proof: &FreshProof,
    command: impl Fn(Option<u64>) -> UserCommand,
) -> Result<u64, AppError> {
    if !principal.user.mfa_enabled {
        return Err(AppError::conflict("TOTP is not enabled"));
    }
    let at = app.now();
    let totp_step = prove_fresh(app, principal, proof, origin, at).await?;
    run_own(app, principal, at, || command(totp_step)).await
}

/// Runs a command on the caller's own user at `at`; returns the position written (0 when nothing
/// changed).
async fn run_own(
    app: &App,
    principal: &Principal,
    at: Timestamp,
    command: impl Fn() -> UserCommand,
) -> Result<u64, AppError> {
    let done = run_user(
        app,
        &principal.context(at),
        &principal.tenant,
        &principal.user_id,
        |_| command(),
    )
    .await
    .map_err(|e| failed_user(e, at))?;
    Ok(done.position.unwrap_or_default())
}

/// Checks a proof of presence; returns the TOTP step when a code was the proof. A wrong password
/// or code is [`AppError::WrongProof`] and counts as a failed login; so does a code already spent.
async fn prove_fresh(
    app: &App,
    principal: &Principal,
    proof: &FreshProof,
    origin: &Origin,
    at: Timestamp,
) -> Result<Option<u64>, AppError> {
    match (&proof.password, &proof.code) {
        (Some(password), None) => {
            check_len("password", password, 1, MAX_PASSWORD_CHARS)?;
            prove_password(app, principal, password, origin, at).await?;
            Ok(None)
        }
        (None, Some(code)) => {
            check_len("code", code, 1, 16)?;
            let user = load_user(app, &principal.tenant, &principal.user_id)
                .await?
                .ok_or_else(|| AppError::unauthenticated("the user no longer exists"))?;
            check_email_from_ip(app, &principal.tenant, &user.email_index, origin.ip, at)?;
            if let Err(e @ UserError::Locked(_)) = user.check_can_log_in(at) {
                return Err(user_error(e, at));
            }
            let secret = totp_secret(app, &principal.user_id, &user).await?;
            match totp::verify(&secret, code, unix(at)) {
                Some(step) if user.last_totp_step.is_none_or(|last| step > last) => Ok(Some(step)),
                _ => {
                    record_bad_code(app, &principal.tenant, &principal.user_id, origin.ip, at)
                        .await?;
                    Err(AppError::WrongProof(
                        "the code is invalid or was already used".to_owned(),
                    ))
                }
            }
        }
        _ => Err(AppError::invalid(
            "give exactly one of password and code (TOTP) to prove it is you",
        )),
    }
}

/// Seconds since the Unix epoch, as TOTP counts time.
fn unix(at: Timestamp) -> u64 {
    u64::try_from(at.as_datetime().unix_timestamp()).unwrap_or(0)
}

/// A new set of recovery codes and their keyed hashes.
fn fresh_codes(security: &Security) -> Result<(Vec<String>, Vec<TokenHash>), AppError> {
    let codes = tokens::recovery_codes(RECOVERY_CODES);
    let hashes = codes
        .iter()
        .map(|c| {
            security
                .tokens
                .hash_recovery_code(c)
                .ok_or_else(|| AppError::internal("a generated recovery code does not normalize"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((codes, hashes))
}
