//! The user aggregate: a person or non-human actor within a tenant, their credentials, MFA and login
//! history.
//!
//! Users live in streams `{tenant}/user/{user_id}`; platform administrators are users of the
//! `_system` tenant. Personal data (email, name) and credentials (the password's PHC string, the TOTP
//! seed) arrive already sealed under the user's data key ([`Sealed`]); tokens and recovery codes
//! arrive as keyed hashes ([`TokenHash`]). The email is also carried as a blind index (a keyed hash of
//! the normalized address) so that the tenant's email reservation can name it without storing it.

use serde::{Deserialize, Serialize};
use time::Duration;

use crate::event::Timestamp;
use crate::secret::{Sealed, TokenHash};

/// What kind of principal a user is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserKind {
    /// A human: logs in with a password (and MFA).
    Person,
    /// An autonomous program acting on its own: authenticates with API keys only.
    Agent,
    /// Another system: authenticates with API keys only.
    Service,
}

impl UserKind {
    /// The serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Person => "person",
            Self::Agent => "agent",
            Self::Service => "service",
        }
    }
}

/// Where a user is in their life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    /// Invited, has not accepted yet.
    Invited,
    /// May act.
    Active,
    /// Refused everywhere until enabled again.
    Disabled,
    /// Erased: their data key is destroyed; nothing of them can be read or done.
    Deleted,
}

impl UserStatus {
    /// The serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invited => "invited",
            Self::Active => "active",
            Self::Disabled => "disabled",
            Self::Deleted => "deleted",
        }
    }
}

/// How a login was completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginMethod {
    /// Password alone (MFA not enrolled).
    Password,
    /// Password and a TOTP code.
    PasswordTotp,
    /// Password and a recovery code.
    PasswordRecoveryCode,
}

/// Why a login attempt failed, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginFailure {
    /// The password did not match.
    BadPassword,
    /// The second factor did not match, or was already used.
    BadCode,
}

/// Built-in roles this issue knows; the authorization model maps them onto its own roles.
pub const ROLE_TENANT_ADMIN: &str = "tenant_admin";
/// The platform scope's administrator role (users of `_system` only).
pub const ROLE_PLATFORM_ADMIN: &str = "platform_admin";

/// The facts of a user's life. Every variant is `user.{variant}` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum UserEvent {
    /// An administrator invited someone; they become active by accepting with the invitation token.
    Invited {
        /// Person, agent or service.
        kind: UserKind,
        /// The email address, sealed.
        email: Sealed,
        /// The display name, sealed.
        name: Sealed,
        /// Blind index of the email.
        email_index: String,
        /// Built-in roles granted on creation.
        roles: Vec<String>,
        /// Keyed hash of the invitation token.
        invitation: TokenHash,
        /// The invitation cannot be accepted after this.
        expires_at: Timestamp,
    },
    /// The invitation was accepted.
    InvitationAccepted {},
    /// An administrator created the user directly, active at once.
    Created {
        /// Person, agent or service.
        kind: UserKind,
        /// The email address, sealed.
        email: Sealed,
        /// The display name, sealed.
        name: Sealed,
        /// Blind index of the email.
        email_index: String,
        /// Built-in roles granted on creation.
        roles: Vec<String>,
    },
    /// The profile changed.
    ProfileUpdated {
        /// New email, sealed, if it changed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        email: Option<Sealed>,
        /// New email's blind index, if it changed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        email_index: Option<String>,
        /// New display name, sealed, if it changed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<Sealed>,
    },
    /// The user may not act until enabled.
    Disabled {
        /// Why, for the audit trail.
        reason: String,
    },
    /// A disabled user may act again.
    Enabled {},
    /// The user was erased: their data key is destroyed with this event.
    Deleted {},
    /// A first password was set (on creation or when accepting an invitation).
    PasswordSet {
        /// The PHC string of the argon2id hash, sealed.
        credential: Sealed,
    },
    /// The user changed their password, proving the current one.
    PasswordChanged {
        /// The new PHC string, sealed.
        credential: Sealed,
    },
    /// The password was replaced through a reset token.
    PasswordReset {
        /// The new PHC string, sealed.
        credential: Sealed,
    },
    /// The password was hashed again with stronger parameters at login.
    PasswordRehashed {
        /// The new PHC string, sealed.
        credential: Sealed,
    },
    /// An administrator issued a one-time password reset token.
    PasswordResetIssued {
        /// Keyed hash of the token.
        token: TokenHash,
        /// The token is dead after this.
        expires_at: Timestamp,
    },
    /// The password was right and MFA is enrolled: a challenge awaits a second factor.
    MfaChallengeIssued {
        /// Keyed hash of the challenge id.
        challenge: TokenHash,
        /// The challenge is dead after this.
        expires_at: Timestamp,
    },
    /// A login completed and started a session.
    LoggedIn {
        /// The session it started.
        session_id: String,
        /// How it was completed.
        method: LoginMethod,
        /// The TOTP time step used, which can never be used again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        totp_step: Option<u64>,
        /// The recovery code used (its keyed hash), which can never be used again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recovery_code: Option<TokenHash>,
        /// The client's address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip: Option<String>,
    },
    /// A login attempt failed.
    LoginFailed {
        /// Why.
        reason: LoginFailure,
        /// Consecutive failures so far, this one included.
        failures: u32,
        /// Further attempts are refused until then (growing with each failure past the threshold).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        locked_until: Option<Timestamp>,
        /// The client's address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip: Option<String>,
    },
    /// TOTP enrollment began; it takes effect once confirmed with a first code.
    TotpEnrollmentStarted {
        /// The TOTP seed, sealed.
        secret: Sealed,
    },
    /// TOTP was confirmed and is now required at login.
    TotpEnabled {
        /// The time step of the confirming code, which can never be used again.
        step: u64,
    },
    /// TOTP was turned off.
    TotpDisabled {
        /// The time step of the TOTP code that proved presence, if a code did; it can never be
        /// used again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        totp_step: Option<u64>,
    },
    /// A fresh set of single-use recovery codes replaced any earlier set.
    RecoveryCodesGenerated {
        /// Keyed hashes of the codes.
        codes: Vec<TokenHash>,
        /// The time step of the TOTP code that proved presence, if a code did; it can never be
        /// used again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        totp_step: Option<u64>,
    },
}

crate::tagged_event!(
    UserEvent,
    "user",
    [
        "invited",
        "invitation_accepted",
        "created",
        "profile_updated",
        "disabled",
        "enabled",
        "deleted",
        "password_set",
        "password_changed",
        "password_reset",
        "password_rehashed",
        "password_reset_issued",
        "mfa_challenge_issued",
        "logged_in",
        "login_failed",
        "totp_enrollment_started",
        "totp_enabled",
        "totp_disabled",
        "recovery_codes_generated",
    ]
);

/// A one-time token awaiting use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingToken {
    /// Its keyed hash.
    pub hash: TokenHash,
    /// Dead after this.
    pub expires_at: Timestamp,
}

impl PendingToken {
    fn accepts(&self, presented: &TokenHash, now: Timestamp) -> bool {
        self.hash == *presented && now < self.expires_at
    }
}

/// A user as their events have made them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Person, agent or service.
    pub kind: UserKind,
    /// Lifecycle status.
    pub status: UserStatus,
    /// Sealed email (absent once deleted).
    pub email: Option<Sealed>,
    /// Blind index of the email.
    pub email_index: String,
    /// Sealed display name (absent once deleted).
    pub name: Option<Sealed>,
    /// Built-in roles.
    pub roles: Vec<String>,
    /// The sealed PHC string of the current password.
    pub credential: Option<Sealed>,
    /// An unaccepted invitation.
    pub invitation: Option<PendingToken>,
    /// An unused password reset token.
    pub reset: Option<PendingToken>,
    /// An open MFA challenge.
    pub challenge: Option<PendingToken>,
    /// The sealed TOTP seed, once enrollment started.
    pub totp_secret: Option<Sealed>,
    /// Whether TOTP is required at login.
    pub totp_enabled: bool,
    /// The last TOTP step used; codes of this step or earlier are refused.
    pub last_totp_step: Option<u64>,
    /// Unused recovery codes.
    pub recovery_codes: Vec<TokenHash>,
    /// Consecutive failed logins.
    pub failed_logins: u32,
    /// Logins are refused until then.
    pub locked_until: Option<Timestamp>,
}

impl User {
    /// Whether this user may start a login by password at `now`: a person, active, with a
    /// password, not locked. Errors say why not; callers must not tell the client which.
    pub fn check_can_log_in(&self, now: Timestamp) -> Result<(), UserError> {
        match self.status {
            UserStatus::Active => {}
            s => return Err(UserError::WrongStatus(s)),
        }
        if self.kind != UserKind::Person {
            return Err(UserError::KeysOnly(self.kind));
        }
        if self.credential.is_none() {
            return Err(UserError::NoPassword);
        }
        match self.locked_until {
            Some(until) if now < until => Err(UserError::Locked(until)),
            _ => Ok(()),
        }
    }
}

/// How many failures lock something (an account, an email from one address, an address), and for
/// how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures before the first lock.
    pub threshold: u32,
    /// The first lock's length; each further failure doubles it.
    pub base: Duration,
    /// The longest lock.
    pub max: Duration,
}

/// The account-wide limit ([`LockoutPolicy::ACCOUNT`]).
impl Default for LockoutPolicy {
    fn default() -> Self {
        Self::ACCOUNT
    }
}

impl LockoutPolicy {
    /// The account-wide limit (NIST SP 800-63B-4: no more than 100 consecutive failed attempts):
    /// from the 100th consecutive failure on, each failure locks the account for one minute, from
    /// every address. It is a rate limit, not a lock-out: a stranger who stops is forgotten a
    /// minute later, and cannot keep the owner out for longer than that.
    pub const ACCOUNT: Self = Self {
        threshold: 100,
        base: Duration::minutes(1),
        max: Duration::minutes(1),
    };

    /// The first limit, on one email address from one client address: from the 5th failure on,
    /// locks of 1 s doubling with each further failure, to at most 5 minutes. The owner signing
    /// in from another address is not affected.
    pub const EMAIL_FROM_IP: Self = Self {
        threshold: 5,
        base: Duration::seconds(1),
        max: Duration::minutes(5),
    };

    /// The limit on one client address across every email (password spraying), with `threshold`
    /// failures (50 by default): locks of 1 s doubling to at most 15 minutes.
    pub const fn ip(threshold: u32) -> Self {
        Self {
            threshold,
            base: Duration::seconds(1),
            max: Duration::minutes(15),
        }
    }

    /// The lock after `failures` consecutive failures, if any.
    pub fn lock_for(&self, failures: u32) -> Option<Duration> {
        if failures < self.threshold {
            return None;
        }
        let doublings = (failures - self.threshold).min(30);
        let secs = self
            .base
            .whole_seconds()
            .saturating_mul(1_i64 << doublings)
            .min(self.max.whole_seconds());
        Some(Duration::seconds(secs))
    }
}

/// What someone asks of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserCommand {
    /// Invite someone to the tenant.
    Invite {
        /// Person, agent or service.
        kind: UserKind,
        /// Sealed email.
        email: Sealed,
        /// Sealed display name.
        name: Sealed,
        /// Blind index of the email.
        email_index: String,
        /// Built-in roles.
        roles: Vec<String>,
        /// Keyed hash of the invitation token.
        invitation: TokenHash,
        /// Expiry.
        expires_at: Timestamp,
    },
    /// Accept an invitation and set a first password.
    AcceptInvitation {
        /// Keyed hash of the presented token.
        token: TokenHash,
        /// The sealed PHC string.
        credential: Sealed,
        /// The time of the request.
        now: Timestamp,
    },
    /// Create an active user directly.
    Create {
        /// Person, agent or service.
        kind: UserKind,
        /// Sealed email.
        email: Sealed,
        /// Sealed display name.
        name: Sealed,
        /// Blind index of the email.
        email_index: String,
        /// Built-in roles.
        roles: Vec<String>,
        /// A first password (people only).
        credential: Option<Sealed>,
    },
    /// Change email and/or name.
    UpdateProfile {
        /// New sealed email and its blind index.
        email: Option<(Sealed, String)>,
        /// New sealed name.
        name: Option<Sealed>,
    },
    /// Refuse the user everywhere.
    Disable {
        /// Why, 1-500 characters.
        reason: String,
    },
    /// Undo a disable.
    Enable,
    /// Erase the user.
    Delete,
    /// Replace the password; the caller has checked the current one.
    ChangePassword {
        /// The new sealed PHC string.
        credential: Sealed,
    },
    /// Issue a reset token.
    IssuePasswordReset {
        /// Keyed hash of the token.
        token: TokenHash,
        /// Expiry.
        expires_at: Timestamp,
    },
    /// Replace the password with a reset token.
    ResetPassword {
        /// Keyed hash of the presented token.
        token: TokenHash,
        /// The new sealed PHC string.
        credential: Sealed,
        /// The time of the request.
        now: Timestamp,
    },
    /// Store a stronger hash of the same password.
    RehashPassword {
        /// The new sealed PHC string.
        credential: Sealed,
    },
    /// Record a failed login attempt.
    RecordLoginFailure {
        /// Why it failed.
        reason: LoginFailure,
        /// Client address.
        ip: Option<String>,
        /// The time of the attempt.
        now: Timestamp,
        /// When to lock.
        policy: LockoutPolicy,
    },
    /// The password was right; MFA is enrolled, so open a challenge.
    IssueMfaChallenge {
        /// Keyed hash of the challenge id.
        challenge: TokenHash,
        /// Expiry.
        expires_at: Timestamp,
        /// The time of the request.
        now: Timestamp,
    },
    /// Complete a login: the password was right and, when MFA is enrolled, so was the second
    /// factor for the open challenge.
    CompleteLogin {
        /// The session it starts.
        session_id: String,
        /// The open challenge (when MFA is enrolled).
        challenge: Option<TokenHash>,
        /// The TOTP step matched, if a TOTP code was given.
        totp_step: Option<u64>,
        /// The recovery code given (keyed hash), if one was.
        recovery_code: Option<TokenHash>,
        /// Client address.
        ip: Option<String>,
        /// The time of the request.
        now: Timestamp,
    },
    /// Start TOTP enrollment with a fresh seed.
    StartTotpEnrollment {
        /// The sealed seed.
        secret: Sealed,
    },
    /// Confirm TOTP with a first code (the caller verified it against the pending seed).
    ConfirmTotp {
        /// The code's time step.
        step: u64,
        /// Keyed hashes of the first recovery codes.
        recovery_codes: Vec<TokenHash>,
    },
    /// Turn TOTP off (the caller verified a fresh password or code).
    DisableTotp {
        /// The step of the TOTP code that proved presence, when a code did.
        totp_step: Option<u64>,
    },
    /// Replace the recovery codes.
    RegenerateRecoveryCodes {
        /// Keyed hashes of the new codes.
        codes: Vec<TokenHash>,
        /// The step of the TOTP code that proved presence, when a code did.
        totp_step: Option<u64>,
    },
}

/// Why a user command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// The user does not exist.
    #[error("user not found")]
    NotFound,
    /// The user already exists.
    #[error("user already exists")]
    AlreadyExists,
    /// A field is invalid.
    #[error("{field}: {message}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// What is wrong, for a person.
        message: &'static str,
    },
    /// The command does not apply in the user's current status.
    #[error("user is {}", .0.as_str())]
    WrongStatus(UserStatus),
    /// Agents and services authenticate with API keys only.
    #[error("a user of kind {} authenticates with API keys only", .0.as_str())]
    KeysOnly(UserKind),
    /// The user has no password.
    #[error("the user has no password")]
    NoPassword,
    /// Too many failed logins.
    #[error("login is locked until {0}")]
    Locked(Timestamp),
    /// The token is unknown, spent or expired.
    #[error("the token is invalid, used or expired")]
    InvalidToken,
    /// The second factor is wrong or was used before.
    #[error("the code is invalid or was already used")]
    InvalidCode,
    /// MFA is not in the state the command needs.
    #[error("{0}")]
    Mfa(&'static str),
}

fn check_roles(roles: &[String]) -> Result<(), UserError> {
    if roles
        .iter()
        .all(|r| r == ROLE_TENANT_ADMIN || r == ROLE_PLATFORM_ADMIN)
    {
        Ok(())
    } else {
        Err(UserError::Invalid {
            field: "roles",
            message: "must be built-in roles: tenant_admin, platform_admin",
        })
    }
}

fn check_index(index: &str) -> Result<(), UserError> {
    if index.len() == 64
        && index
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        Ok(())
    } else {
        Err(UserError::Invalid {
            field: "email_index",
            message: "must be 64 lowercase hex digits",
        })
    }
}

fn require_status(user: &User, status: UserStatus) -> Result<(), UserError> {
    if user.status == status {
        Ok(())
    } else {
        Err(UserError::WrongStatus(user.status))
    }
}

fn require_person_with_password(user: &User) -> Result<(), UserError> {
    require_status(user, UserStatus::Active)?;
    if user.kind != UserKind::Person {
        return Err(UserError::KeysOnly(user.kind));
    }
    Ok(())
}

/// A TOTP step offered as proof must be newer than every step used before.
fn check_fresh_step(user: &User, step: Option<u64>) -> Result<(), UserError> {
    match (step, user.last_totp_step) {
        (Some(step), Some(last)) if step <= last => Err(UserError::InvalidCode),
        _ => Ok(()),
    }
}

fn check_recovery_codes(codes: &[TokenHash]) -> Result<(), UserError> {
    if codes.is_empty() || codes.len() > 20 {
        return Err(UserError::Invalid {
            field: "recovery_codes",
            message: "must be 1 to 20 codes",
        });
    }
    Ok(())
}

/// Decides what a command on a user means, given the user's state.
pub fn decide(state: Option<&User>, command: UserCommand) -> Result<Vec<UserEvent>, UserError> {
    use UserCommand as C;
    use UserEvent as E;
    let user = match (state, command) {
        (
            None,
            C::Invite {
                kind,
                email,
                name,
                email_index,
                roles,
                invitation,
                expires_at,
            },
        ) => {
            check_roles(&roles)?;
            check_index(&email_index)?;
            if kind != UserKind::Person {
                return Err(UserError::KeysOnly(kind));
            }
            return Ok(vec![E::Invited {
                kind,
                email,
                name,
                email_index,
                roles,
                invitation,
                expires_at,
            }]);
        }
        (
            None,
            C::Create {
                kind,
                email,
                name,
                email_index,
                roles,
                credential,
            },
        ) => {
            check_roles(&roles)?;
            check_index(&email_index)?;
            if kind != UserKind::Person && credential.is_some() {
                return Err(UserError::KeysOnly(kind));
            }
            let mut events = vec![E::Created {
                kind,
                email,
                name,
                email_index,
                roles,
            }];
            if let Some(credential) = credential {
                events.push(E::PasswordSet { credential });
            }
            return Ok(events);
        }
        (Some(_), C::Invite { .. } | C::Create { .. }) => return Err(UserError::AlreadyExists),
        (None, _) => return Err(UserError::NotFound),
        (Some(u), command) => (u, command),
    };
    let (u, command) = user;
    if u.status == UserStatus::Deleted {
        return Err(UserError::NotFound);
    }
    Ok(match command {
        C::Invite { .. } | C::Create { .. } => return Err(UserError::AlreadyExists),
        C::AcceptInvitation {
            token,
            credential,
            now,
        } => {
            require_status(u, UserStatus::Invited)?;
            match &u.invitation {
                Some(p) if p.accepts(&token, now) => {}
                _ => return Err(UserError::InvalidToken),
            }
            vec![E::InvitationAccepted {}, E::PasswordSet { credential }]
        }
        C::UpdateProfile { email, name } => {
            if let Some((_, index)) = &email {
                check_index(index)?;
            }
            let (email, email_index) = match email {
                Some((e, i)) if i != u.email_index => (Some(e), Some(i)),
                _ => (None, None),
            };
            if email.is_none() && name.is_none() {
                vec![]
            } else {
                vec![E::ProfileUpdated {
                    email,
                    email_index,
                    name,
                }]
            }
        }
        C::Disable { reason } => {
            // Only active users are disabled: an invited user who should not join is deleted,
            // so enabling can never activate someone who did not accept their invitation.
            require_status(u, UserStatus::Active)?;
            let reason = reason.trim();
            let n = reason.chars().count();
            if n == 0 || n > 500 {
                return Err(UserError::Invalid {
                    field: "reason",
                    message: "must be 1 to 500 characters",
                });
            }
            vec![E::Disabled {
                reason: reason.to_owned(),
            }]
        }
        C::Enable => {
            require_status(u, UserStatus::Disabled)?;
            vec![E::Enabled {}]
        }
        C::Delete => vec![E::Deleted {}],
        C::ChangePassword { credential } => {
            require_person_with_password(u)?;
            vec![E::PasswordChanged { credential }]
        }
        C::IssuePasswordReset { token, expires_at } => {
            require_person_with_password(u)?;
            vec![E::PasswordResetIssued { token, expires_at }]
        }
        C::ResetPassword {
            token,
            credential,
            now,
        } => {
            require_person_with_password(u)?;
            match &u.reset {
                Some(p) if p.accepts(&token, now) => {}
                _ => return Err(UserError::InvalidToken),
            }
            vec![E::PasswordReset { credential }]
        }
        C::RehashPassword { credential } => {
            require_person_with_password(u)?;
            vec![E::PasswordRehashed { credential }]
        }
        C::RecordLoginFailure {
            reason,
            ip,
            now,
            policy,
        } => {
            let failures = u.failed_logins.saturating_add(1);
            let locked_until = policy.lock_for(failures).map(|d| now.plus(d));
            vec![E::LoginFailed {
                reason,
                failures,
                locked_until,
                ip,
            }]
        }
        C::IssueMfaChallenge {
            challenge,
            expires_at,
            now,
        } => {
            u.check_can_log_in(now)?;
            if !u.totp_enabled {
                return Err(UserError::Mfa("MFA is not enrolled"));
            }
            vec![E::MfaChallengeIssued {
                challenge,
                expires_at,
            }]
        }
        C::CompleteLogin {
            session_id,
            challenge,
            totp_step,
            recovery_code,
            ip,
            now,
        } => {
            u.check_can_log_in(now)?;
            let method = if u.totp_enabled {
                match (&u.challenge, &challenge) {
                    (Some(open), Some(given)) if open.accepts(given, now) => {}
                    _ => return Err(UserError::InvalidToken),
                }
                match (totp_step, &recovery_code) {
                    (Some(step), None) => {
                        if u.last_totp_step.is_some_and(|last| step <= last) {
                            return Err(UserError::InvalidCode);
                        }
                        LoginMethod::PasswordTotp
                    }
                    (None, Some(code)) => {
                        if !u.recovery_codes.contains(code) {
                            return Err(UserError::InvalidCode);
                        }
                        LoginMethod::PasswordRecoveryCode
                    }
                    _ => return Err(UserError::InvalidCode),
                }
            } else {
                if totp_step.is_some() || recovery_code.is_some() || challenge.is_some() {
                    return Err(UserError::Mfa("MFA is not enrolled"));
                }
                LoginMethod::Password
            };
            vec![E::LoggedIn {
                session_id,
                method,
                totp_step,
                recovery_code,
                ip,
            }]
        }
        C::StartTotpEnrollment { secret } => {
            require_person_with_password(u)?;
            if u.totp_enabled {
                return Err(UserError::Mfa("TOTP is already enabled; disable it first"));
            }
            vec![E::TotpEnrollmentStarted { secret }]
        }
        C::ConfirmTotp {
            step,
            recovery_codes,
        } => {
            require_person_with_password(u)?;
            if u.totp_enabled {
                return Err(UserError::Mfa("TOTP is already enabled"));
            }
            if u.totp_secret.is_none() {
                return Err(UserError::Mfa("start TOTP enrollment first"));
            }
            if u.last_totp_step.is_some_and(|last| step <= last) {
                return Err(UserError::InvalidCode);
            }
            check_recovery_codes(&recovery_codes)?;
            vec![
                E::TotpEnabled { step },
                E::RecoveryCodesGenerated {
                    codes: recovery_codes,
                    totp_step: None,
                },
            ]
        }
        C::DisableTotp { totp_step } => {
            require_person_with_password(u)?;
            if !u.totp_enabled {
                return Err(UserError::Mfa("TOTP is not enabled"));
            }
            check_fresh_step(u, totp_step)?;
            vec![E::TotpDisabled { totp_step }]
        }
        C::RegenerateRecoveryCodes { codes, totp_step } => {
            require_person_with_password(u)?;
            if !u.totp_enabled {
                return Err(UserError::Mfa("TOTP is not enabled"));
            }
            check_fresh_step(u, totp_step)?;
            check_recovery_codes(&codes)?;
            vec![E::RecoveryCodesGenerated { codes, totp_step }]
        }
    })
}

fn fresh(
    kind: UserKind,
    status: UserStatus,
    email: &Sealed,
    name: &Sealed,
    email_index: &str,
    roles: &[String],
) -> User {
    User {
        kind,
        status,
        email: Some(email.clone()),
        email_index: email_index.to_owned(),
        name: Some(name.clone()),
        roles: roles.to_vec(),
        credential: None,
        invitation: None,
        reset: None,
        challenge: None,
        totp_secret: None,
        totp_enabled: false,
        last_totp_step: None,
        recovery_codes: vec![],
        failed_logins: 0,
        locked_until: None,
    }
}

/// Applies one event to a user's state.
pub fn evolve(state: Option<User>, event: &UserEvent) -> Option<User> {
    use UserEvent as E;
    match (state, event) {
        (
            None,
            E::Invited {
                kind,
                email,
                name,
                email_index,
                roles,
                invitation,
                expires_at,
            },
        ) => {
            let mut u = fresh(*kind, UserStatus::Invited, email, name, email_index, roles);
            u.invitation = Some(PendingToken {
                hash: invitation.clone(),
                expires_at: *expires_at,
            });
            Some(u)
        }
        (
            None,
            E::Created {
                kind,
                email,
                name,
                email_index,
                roles,
            },
        ) => Some(fresh(
            *kind,
            UserStatus::Active,
            email,
            name,
            email_index,
            roles,
        )),
        (None, _) => None,
        (Some(mut u), event) => {
            match event {
                E::Invited { .. } | E::Created { .. } => {}
                E::InvitationAccepted {} => {
                    u.status = UserStatus::Active;
                    u.invitation = None;
                }
                E::ProfileUpdated {
                    email,
                    email_index,
                    name,
                } => {
                    if let Some(e) = email {
                        u.email = Some(e.clone());
                    }
                    if let Some(i) = email_index {
                        u.email_index = i.clone();
                    }
                    if let Some(n) = name {
                        u.name = Some(n.clone());
                    }
                }
                E::Disabled { .. } => u.status = UserStatus::Disabled,
                E::Enabled {} => u.status = UserStatus::Active,
                E::Deleted {} => {
                    return Some(User {
                        status: UserStatus::Deleted,
                        email: None,
                        name: None,
                        roles: vec![],
                        credential: None,
                        invitation: None,
                        reset: None,
                        challenge: None,
                        totp_secret: None,
                        totp_enabled: false,
                        recovery_codes: vec![],
                        ..u
                    });
                }
                E::PasswordSet { credential }
                | E::PasswordChanged { credential }
                | E::PasswordRehashed { credential } => {
                    u.credential = Some(credential.clone());
                }
                E::PasswordReset { credential } => {
                    u.credential = Some(credential.clone());
                    u.reset = None;
                    u.failed_logins = 0;
                    u.locked_until = None;
                }
                E::PasswordResetIssued { token, expires_at } => {
                    u.reset = Some(PendingToken {
                        hash: token.clone(),
                        expires_at: *expires_at,
                    });
                }
                E::MfaChallengeIssued {
                    challenge,
                    expires_at,
                } => {
                    u.challenge = Some(PendingToken {
                        hash: challenge.clone(),
                        expires_at: *expires_at,
                    });
                }
                E::LoggedIn {
                    totp_step,
                    recovery_code,
                    ..
                } => {
                    u.challenge = None;
                    u.failed_logins = 0;
                    u.locked_until = None;
                    if let Some(step) = totp_step {
                        u.last_totp_step = Some(*step);
                    }
                    if let Some(code) = recovery_code {
                        u.recovery_codes.retain(|c| c != code);
                    }
                }
                E::LoginFailed {
                    failures,
                    locked_until,
                    ..
                } => {
                    u.failed_logins = *failures;
                    u.locked_until = *locked_until;
                }
                E::TotpEnrollmentStarted { secret } => u.totp_secret = Some(secret.clone()),
                E::TotpEnabled { step } => {
                    u.totp_enabled = true;
                    u.last_totp_step = Some(*step);
                }
                E::TotpDisabled { totp_step } => {
                    if let Some(step) = totp_step {
                        u.last_totp_step = Some(*step);
                    }
                    u.totp_enabled = false;
                    u.totp_secret = None;
                    u.recovery_codes.clear();
                    u.challenge = None;
                }
                E::RecoveryCodesGenerated { codes, totp_step } => {
                    if let Some(step) = totp_step {
                        u.last_totp_step = Some(*step);
                    }
                    u.recovery_codes = codes.clone();
                }
            }
            Some(u)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DomainEvent;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    fn sealed(s: &str) -> Sealed {
        Sealed(format!("v1.{s}"))
    }

    fn hash(c: char) -> TokenHash {
        TokenHash(std::iter::repeat_n(c, 64).collect())
    }

    fn index() -> String {
        "a".repeat(64)
    }

    fn given(events: &[UserEvent]) -> Option<User> {
        events.iter().fold(None, evolve)
    }

    fn run(events: &mut Vec<UserEvent>, command: UserCommand) -> Result<(), UserError> {
        let state = given(events);
        let new = decide(state.as_ref(), command)?;
        events.extend(new);
        Ok(())
    }

    fn active_person() -> Vec<UserEvent> {
        let mut events = vec![];
        run(
            &mut events,
            UserCommand::Create {
                kind: UserKind::Person,
                email: sealed("e"),
                name: sealed("n"),
                email_index: index(),
                roles: vec![],
                credential: Some(sealed("pw")),
            },
        )
        .unwrap();
        events
    }

    fn now() -> Timestamp {
        ts("2026-01-01T00:00:00Z")
    }

    #[test]
    fn invitation_is_accepted_once_before_expiry() {
        let mut events = vec![];
        run(
            &mut events,
            UserCommand::Invite {
                kind: UserKind::Person,
                email: sealed("e"),
                name: sealed("n"),
                email_index: index(),
                roles: vec![ROLE_TENANT_ADMIN.into()],
                invitation: hash('1'),
                expires_at: ts("2026-01-02T00:00:00Z"),
            },
        )
        .unwrap();
        let accept = |token, now| UserCommand::AcceptInvitation {
            token,
            credential: sealed("pw"),
            now,
        };
        assert_eq!(
            decide(given(&events).as_ref(), accept(hash('2'), now())),
            Err(UserError::InvalidToken)
        );
        assert_eq!(
            decide(
                given(&events).as_ref(),
                accept(hash('1'), ts("2026-01-02T00:00:00Z"))
            ),
            Err(UserError::InvalidToken),
            "expired"
        );
        run(&mut events, accept(hash('1'), now())).unwrap();
        let u = given(&events).unwrap();
        assert_eq!(u.status, UserStatus::Active);
        assert_eq!(u.credential, Some(sealed("pw")));
        assert_eq!(
            decide(Some(&u), accept(hash('1'), now())),
            Err(UserError::WrongStatus(UserStatus::Active))
        );
    }

    #[test]
    fn agents_and_services_cannot_hold_passwords() {
        for kind in [UserKind::Agent, UserKind::Service] {
            let create = |credential| UserCommand::Create {
                kind,
                email: sealed("e"),
                name: sealed("n"),
                email_index: index(),
                roles: vec![],
                credential,
            };
            assert_eq!(
                decide(None, create(Some(sealed("pw")))),
                Err(UserError::KeysOnly(kind))
            );
            let events = decide(None, create(None)).unwrap();
            let u = given(&events).unwrap();
            assert_eq!(u.check_can_log_in(now()), Err(UserError::KeysOnly(kind)));
            assert_eq!(
                decide(
                    Some(&u),
                    UserCommand::ChangePassword {
                        credential: sealed("x")
                    }
                ),
                Err(UserError::KeysOnly(kind))
            );
        }
    }

    #[test]
    fn unknown_roles_are_refused() {
        assert!(matches!(
            decide(
                None,
                UserCommand::Create {
                    kind: UserKind::Person,
                    email: sealed("e"),
                    name: sealed("n"),
                    email_index: index(),
                    roles: vec!["root".into()],
                    credential: None,
                }
            ),
            Err(UserError::Invalid { field: "roles", .. })
        ));
    }

    #[test]
    fn lockout_policies_lock_from_their_threshold_for_their_delays() {
        let secs =
            |policy: LockoutPolicy, failures| policy.lock_for(failures).map(|d| d.whole_seconds());
        // (policy, failures, lock in seconds)
        let cases = [
            (LockoutPolicy::EMAIL_FROM_IP, 1, None),
            (LockoutPolicy::EMAIL_FROM_IP, 4, None),
            (LockoutPolicy::EMAIL_FROM_IP, 5, Some(1)),
            (LockoutPolicy::EMAIL_FROM_IP, 6, Some(2)),
            (LockoutPolicy::EMAIL_FROM_IP, 7, Some(4)),
            (LockoutPolicy::EMAIL_FROM_IP, 13, Some(256)),
            (LockoutPolicy::EMAIL_FROM_IP, 14, Some(300)),
            (LockoutPolicy::EMAIL_FROM_IP, u32::MAX, Some(300)),
            (LockoutPolicy::ACCOUNT, 5, None),
            (LockoutPolicy::ACCOUNT, 99, None),
            (LockoutPolicy::ACCOUNT, 100, Some(60)),
            (LockoutPolicy::ACCOUNT, 101, Some(60)),
            (LockoutPolicy::ACCOUNT, 10_000, Some(60)),
            (LockoutPolicy::ip(50), 49, None),
            (LockoutPolicy::ip(50), 50, Some(1)),
            (LockoutPolicy::ip(50), 51, Some(2)),
            (LockoutPolicy::ip(50), 500, Some(900)),
        ];
        for (policy, failures, lock) in cases {
            assert_eq!(secs(policy, failures), lock, "{policy:?} after {failures}");
        }
        assert_eq!(LockoutPolicy::default(), LockoutPolicy::ACCOUNT);
    }

    #[test]
    fn an_account_locks_for_a_minute_from_its_hundredth_failure_and_success_resets() {
        let mut events = active_person();
        let policy = LockoutPolicy::ACCOUNT;
        let fail = |events: &mut Vec<UserEvent>, at: Timestamp| {
            run(
                events,
                UserCommand::RecordLoginFailure {
                    reason: LoginFailure::BadPassword,
                    ip: None,
                    now: at,
                    policy,
                },
            )
            .unwrap();
            given(events).unwrap()
        };
        for n in 1..100 {
            let u = fail(&mut events, now());
            assert_eq!((u.failed_logins, u.locked_until), (n, None));
        }
        let u = fail(&mut events, now());
        assert_eq!(u.failed_logins, 100);
        assert_eq!(u.locked_until, Some(now().plus(Duration::minutes(1))));
        assert!(matches!(
            u.check_can_log_in(now().plus(Duration::seconds(59))),
            Err(UserError::Locked(_))
        ));
        let later = now().plus(Duration::minutes(1));
        assert_eq!(u.check_can_log_in(later), Ok(()));
        // Each further failure locks for a minute again, never longer.
        let u = fail(&mut events, later);
        assert_eq!(u.locked_until, Some(later.plus(Duration::minutes(1))));
        let later = later.plus(Duration::minutes(1));
        run(
            &mut events,
            UserCommand::CompleteLogin {
                session_id: "sess_1".into(),
                challenge: None,
                totp_step: None,
                recovery_code: None,
                ip: None,
                now: later,
            },
        )
        .unwrap();
        let u = given(&events).unwrap();
        assert_eq!((u.failed_logins, u.locked_until), (0, None));
    }

    fn with_totp() -> Vec<UserEvent> {
        let mut events = active_person();
        run(
            &mut events,
            UserCommand::StartTotpEnrollment {
                secret: sealed("seed"),
            },
        )
        .unwrap();
        run(
            &mut events,
            UserCommand::ConfirmTotp {
                step: 100,
                recovery_codes: vec![hash('a'), hash('b')],
            },
        )
        .unwrap();
        events
    }

    fn challenge(events: &mut Vec<UserEvent>, c: char) {
        run(
            events,
            UserCommand::IssueMfaChallenge {
                challenge: hash(c),
                expires_at: now().plus(Duration::minutes(5)),
                now: now(),
            },
        )
        .unwrap();
    }

    fn complete(c: char, step: Option<u64>, code: Option<TokenHash>) -> UserCommand {
        UserCommand::CompleteLogin {
            session_id: "sess_1".into(),
            challenge: Some(hash(c)),
            totp_step: step,
            recovery_code: code,
            ip: None,
            now: now(),
        }
    }

    #[test]
    fn a_totp_step_and_a_recovery_code_work_once() {
        let mut events = with_totp();
        challenge(&mut events, '1');
        assert_eq!(
            decide(given(&events).as_ref(), complete('1', Some(100), None)),
            Err(UserError::InvalidCode),
            "the confirming step is spent"
        );
        assert_eq!(
            decide(given(&events).as_ref(), complete('2', Some(101), None)),
            Err(UserError::InvalidToken),
            "wrong challenge"
        );
        run(&mut events, complete('1', Some(101), None)).unwrap();
        challenge(&mut events, '2');
        assert_eq!(
            decide(given(&events).as_ref(), complete('2', Some(101), None)),
            Err(UserError::InvalidCode)
        );
        run(&mut events, complete('2', None, Some(hash('a')))).unwrap();
        challenge(&mut events, '3');
        assert_eq!(
            decide(
                given(&events).as_ref(),
                complete('3', None, Some(hash('a')))
            ),
            Err(UserError::InvalidCode),
            "a recovery code is single-use"
        );
        run(&mut events, complete('3', None, Some(hash('b')))).unwrap();
        assert!(given(&events).unwrap().recovery_codes.is_empty());
        // The challenge is spent by the login it completed.
        assert_eq!(
            decide(given(&events).as_ref(), complete('3', Some(200), None)),
            Err(UserError::InvalidToken)
        );
    }

    #[test]
    fn a_code_proving_presence_is_spent_like_a_login_code() {
        let mut events = with_totp();
        let regenerate = |step| UserCommand::RegenerateRecoveryCodes {
            codes: vec![hash('c')],
            totp_step: Some(step),
        };
        assert_eq!(
            decide(given(&events).as_ref(), regenerate(100)),
            Err(UserError::InvalidCode),
            "the confirming step"
        );
        run(&mut events, regenerate(101)).unwrap();
        assert_eq!(
            decide(
                given(&events).as_ref(),
                UserCommand::DisableTotp {
                    totp_step: Some(101)
                }
            ),
            Err(UserError::InvalidCode)
        );
        challenge(&mut events, '1');
        assert_eq!(
            decide(given(&events).as_ref(), complete('1', Some(101), None)),
            Err(UserError::InvalidCode),
            "nor can it complete a login"
        );
        run(
            &mut events,
            UserCommand::DisableTotp {
                totp_step: Some(102),
            },
        )
        .unwrap();
        assert!(!given(&events).unwrap().totp_enabled);
    }

    #[test]
    fn password_only_login_is_refused_once_totp_is_enabled() {
        let events = with_totp();
        assert_eq!(
            decide(
                given(&events).as_ref(),
                UserCommand::CompleteLogin {
                    session_id: "s".into(),
                    challenge: None,
                    totp_step: None,
                    recovery_code: None,
                    ip: None,
                    now: now()
                }
            ),
            Err(UserError::InvalidToken)
        );
    }

    #[test]
    fn reset_token_is_single_use_and_expires() {
        let mut events = active_person();
        run(
            &mut events,
            UserCommand::IssuePasswordReset {
                token: hash('r'),
                expires_at: now().plus(Duration::hours(1)),
            },
        )
        .unwrap();
        let reset = |at| UserCommand::ResetPassword {
            token: hash('r'),
            credential: sealed("new"),
            now: at,
        };
        assert_eq!(
            decide(
                given(&events).as_ref(),
                reset(now().plus(Duration::hours(2)))
            ),
            Err(UserError::InvalidToken)
        );
        run(&mut events, reset(now())).unwrap();
        assert_eq!(
            decide(given(&events).as_ref(), reset(now())),
            Err(UserError::InvalidToken)
        );
        assert_eq!(given(&events).unwrap().credential, Some(sealed("new")));
    }

    #[test]
    fn deleted_users_keep_nothing_and_accept_nothing() {
        let mut events = with_totp();
        run(&mut events, UserCommand::Delete).unwrap();
        let u = given(&events).unwrap();
        assert_eq!(u.status, UserStatus::Deleted);
        assert_eq!((u.email, u.name, u.credential), (None, None, None));
        assert_eq!(
            decide(given(&events).as_ref(), UserCommand::Enable),
            Err(UserError::NotFound)
        );
        assert_eq!(
            decide(given(&events).as_ref(), UserCommand::Delete),
            Err(UserError::NotFound)
        );
    }

    #[test]
    fn an_invited_user_cannot_be_disabled_into_activity() {
        let events = decide(
            None,
            UserCommand::Invite {
                kind: UserKind::Person,
                email: sealed("e"),
                name: sealed("n"),
                email_index: index(),
                roles: vec![],
                invitation: hash('1'),
                expires_at: now(),
            },
        )
        .unwrap();
        let u = given(&events);
        assert_eq!(
            decide(
                u.as_ref(),
                UserCommand::Disable {
                    reason: "no".into()
                }
            ),
            Err(UserError::WrongStatus(UserStatus::Invited))
        );
        assert_eq!(
            decide(u.as_ref(), UserCommand::Enable),
            Err(UserError::WrongStatus(UserStatus::Invited))
        );
    }

    #[test]
    fn disable_and_enable() {
        let mut events = active_person();
        run(
            &mut events,
            UserCommand::Disable {
                reason: "left".into(),
            },
        )
        .unwrap();
        let u = given(&events).unwrap();
        assert_eq!(
            u.check_can_log_in(now()),
            Err(UserError::WrongStatus(UserStatus::Disabled))
        );
        run(&mut events, UserCommand::Enable).unwrap();
        assert_eq!(given(&events).unwrap().check_can_log_in(now()), Ok(()));
    }

    #[test]
    fn events_round_trip_through_their_stored_form() {
        let mut events = with_totp();
        challenge(&mut events, '1');
        run(&mut events, complete('1', Some(101), None)).unwrap();
        for e in &events {
            let back = UserEvent::decode(e.event_type(), e.schema_version(), &e.data()).unwrap();
            assert_eq!(&back, e);
            assert!(e.event_type().starts_with("user."));
        }
        assert!(UserEvent::decode("user.created", 2, &serde_json::json!({})).is_err());
        assert!(
            UserEvent::decode("user.enabled", 1, &serde_json::json!({"extra": 1})).is_err(),
            "unknown fields are refused"
        );
    }
}
