//! Security observations that belong to no account: failed logins naming no account, and
//! throttling of failed logins by client address and by an email address that matches no account.
//!
//! They are appended to `_system/security/login` (per IP address) and `{tenant}/security/login`
//! (per unknown email), with no expected version: they record what happened, they decide nothing.

use serde::{Deserialize, Serialize};

use crate::event::Timestamp;

/// What was throttled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThrottleScope {
    /// One client IP address.
    Ip,
    /// One email address that matches no account (named by its blind index).
    UnknownEmail,
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
        /// The client address (scope `ip`, and the last failure's address for `unknown_email`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip: Option<String>,
        /// The email's blind index (scope `unknown_email`).
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
