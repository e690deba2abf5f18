//! Security observations that belong to no account: failed logins naming no account, and
//! throttling of failed logins by client address, by email address from one client address, and
//! by email address from every address.
//!
//! They are appended to `_system/security/login` (per IP address, and per email of a tenant that
//! does not exist) and `{tenant}/security/login` (per email), with no expected version: they
//! record what happened, they decide nothing. A throttle by email is recorded alike whether the
//! email names an account or not, so the log does not tell which emails are accounts.

use serde::{Deserialize, Serialize};

use crate::event::Timestamp;

/// What was throttled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThrottleScope {
    /// One client IP address.
    Ip,
    /// One email address that matches no account (named by its blind index). Written by earlier
    /// versions only: emails are now throttled alike whether they name an account or not
    /// ([`ThrottleScope::EmailFromIp`], [`ThrottleScope::Email`]).
    UnknownEmail,
    /// One email address of a tenant (named by its blind index), from one client address: the
    /// first, small limit, which leaves the email's owner free to sign in from elsewhere.
    EmailFromIp,
    /// One email address of a tenant (named by its blind index), from every address: the
    /// account-wide limit, much higher, whose lock is short.
    Email,
}

/// Security observations. Every variant is `security.{variant}` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SecurityEvent {
    /// Failed logins crossed the threshold: further attempts are refused until `until`, the delay
    /// doubling with each further failure.
    LoginThrottled {
        /// What was throttled.
        scope: ThrottleScope,
        /// The client address (scopes `ip` and `email_from_ip`, and the last failure's address for
        /// `email` and `unknown_email`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip: Option<String>,
        /// The email's blind index (scopes `email_from_ip`, `email` and `unknown_email`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        email_index: Option<String>,
        /// Failures within the window, the last one included.
        failures: u32,
        /// Attempts are refused until then.
        until: Timestamp,
    },
    /// A login named an email that matches no account able to log in by password (none at all,
    /// or one invited, disabled, erased or keys-only). Recorded like a wrong password is on the
    /// account, so both failures cost the same and a security team sees credential stuffing.
    UnknownAccountLoginFailed {
        /// The tenant asked for (also when it does not exist; the event is then in `_system`).
        tenant: String,
        /// The email's blind index.
        email_index: String,
        /// The client address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip: Option<String>,
    },
}

crate::tagged_event!(
    SecurityEvent,
    "security",
    ["login_throttled", "unknown_account_login_failed"]
);
