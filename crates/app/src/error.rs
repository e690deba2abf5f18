//! [`AppError`]: every way a use case can fail, in categories that say what the caller should do.
//! The HTTP face maps each category to one status in one place; other callers (a CLI, a client
//! library) branch on the same categories.

use custodian_store::StoreError;

use crate::commands::Failed;

/// Why a use case did not do what was asked.
///
/// | category | what the caller should do | HTTP |
/// | --- | --- | --- |
/// | [`Malformed`](Self::Malformed) | fix the request's syntax | 400 |
/// | [`Invalid`](Self::Invalid), [`UnknownPermission`](Self::UnknownPermission) | fix the request's content | 422 |
/// | [`TooLarge`](Self::TooLarge) | send less | 413 |
/// | [`NotFound`](Self::NotFound) | nothing: it does not exist (or is not the caller's to see) | 404 |
/// | [`Conflict`](Self::Conflict) | re-read and decide again: the state does not allow it now | 409 |
/// | [`Forbidden`](Self::Forbidden), [`MissingScopes`](Self::MissingScopes) | ask someone allowed to | 403 |
/// | [`Unauthenticated`](Self::Unauthenticated), [`InvalidCredentials`](Self::InvalidCredentials), [`RefreshTokenReused`](Self::RefreshTokenReused) | authenticate again | 401 |
/// | [`WrongProof`](Self::WrongProof) | give the right password or code | 403 |
/// | [`Throttled`](Self::Throttled) | wait `retry_after` seconds | 429 |
/// | [`QuotaExceeded`](Self::QuotaExceeded) | wait for the next period, or raise the quota | 429 |
/// | [`Unavailable`](Self::Unavailable) | retry after `retry_after` seconds | 503 |
/// | [`Internal`](Self::Internal) | report it: a bug or damaged data; the cause is for the operator's log only | 500 |
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    /// The request cannot be parsed.
    #[error("{0}")]
    Malformed(String),
    /// The request parses, but its content is invalid.
    #[error("{0}")]
    Invalid(String),
    /// A permission or resource type is not in the tenant's catalog; `known` lists what is.
    #[error("{detail}")]
    UnknownPermission {
        /// What was not known.
        detail: String,
        /// Every permission the catalog knows.
        known: Vec<String>,
    },
    /// The request, or an event it would write, is larger than allowed.
    #[error("{0}")]
    TooLarge(String),
    /// No such thing, or not one the caller may know exists.
    #[error("{0}")]
    NotFound(String),
    /// The current state does not allow it (or another writer changed it first).
    #[error("{0}")]
    Conflict(String),
    /// The caller is authenticated but may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// An API key was asked with scopes its creator does not hold; `missing` lists them.
    #[error("{detail}")]
    MissingScopes {
        /// What was refused.
        detail: String,
        /// The scopes the creator does not hold where the key would use them.
        missing: Vec<String>,
    },
    /// No valid credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// A login failed: one answer whatever was wrong (tenant, email, password, account state).
    #[error("the tenant, email or password is wrong")]
    InvalidCredentials,
    /// A fresh proof of identity asked for by a sensitive change (the current password, a TOTP
    /// or recovery code) was wrong. The caller is authenticated, so this is not a 401.
    #[error("{0}")]
    WrongProof(String),
    /// A spent refresh token was presented again; its session is now revoked.
    #[error("this refresh token was already used; the session has been revoked")]
    RefreshTokenReused,
    /// Too many attempts; try again after `retry_after` seconds.
    #[error("{detail}")]
    Throttled {
        /// What is throttled.
        detail: String,
        /// Seconds to wait (at least 1).
        retry_after: u64,
    },
    /// A hard quota refuses the request until its period ends (`retry_after` seconds).
    #[error("{detail}")]
    QuotaExceeded {
        /// Which quota, its limit and its usage.
        detail: String,
        /// Seconds until the next period begins (at least 1).
        retry_after: u64,
    },
    /// Not now: the store or an index is busy or catching up.
    #[error("{detail}")]
    Unavailable {
        /// What is unavailable.
        detail: String,
        /// Seconds to wait before retrying.
        retry_after: u64,
        /// The underlying failure, for the operator's log only.
        cause: Option<String>,
    },
    /// A bug or damaged data. The text is for the operator's log, never for the client.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    /// 400.
    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::Malformed(detail.into())
    }

    /// 422.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::Invalid(detail.into())
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::NotFound(detail.into())
    }

    /// 409.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::Conflict(detail.into())
    }

    /// 403.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::Forbidden(detail.into())
    }

    /// 401.
    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::Unauthenticated(detail.into())
    }

    /// 429 after `retry_after` seconds (at least 1).
    pub fn throttled(detail: impl Into<String>, retry_after: u64) -> Self {
        Self::Throttled {
            detail: detail.into(),
            retry_after: retry_after.max(1),
        }
    }

    /// 503 after `retry_after` seconds.
    pub fn unavailable(detail: impl Into<String>, retry_after: u64) -> Self {
        Self::Unavailable {
            detail: detail.into(),
            retry_after,
            cause: None,
        }
    }

    /// 500; `cause` is logged, never shown.
    pub fn internal(cause: impl Into<String>) -> Self {
        Self::Internal(cause.into())
    }

    /// The index or the views are behind the log: retry in a second.
    pub fn catching_up() -> Self {
        Self::unavailable("the server is catching up with the log", 1)
    }

    /// Maps a failed command: the domain's refusal through `refused`, a store failure as such.
    pub fn from_failed<X>(e: Failed<X>, refused: impl FnOnce(X) -> AppError) -> Self {
        match e {
            Failed::Refused(x) => refused(x),
            Failed::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::EmptyAppend | StoreError::Unserializable { .. } => {
                Self::Invalid(e.to_string())
            }
            StoreError::EventTooLarge { .. } => Self::TooLarge(e.to_string()),
            StoreError::WrongExpectedVersion { .. } | StoreError::DuplicateEventId { .. } => {
                Self::Conflict(e.to_string())
            }
            StoreError::Closed => Self::unavailable(e.to_string(), 5),
            StoreError::Database(_) => Self::Unavailable {
                detail: "the event store is unreachable".to_owned(),
                retry_after: 2,
                cause: Some(e.to_string()),
            },
            StoreError::CorruptRecord { .. } | StoreError::Config(_) | StoreError::Migration(_) => {
                Self::Internal(e.to_string())
            }
        }
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        Self::Unavailable {
            detail: "the views' database is unreachable".to_owned(),
            retry_after: 2,
            cause: Some(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_failures_fall_in_the_right_category() {
        let cases = [
            (StoreError::EmptyAppend, "Invalid"),
            (
                StoreError::EventTooLarge {
                    index: 0,
                    size: 9,
                    limit: 1,
                },
                "TooLarge",
            ),
            (
                StoreError::WrongExpectedVersion {
                    stream: "a/b/c".into(),
                    expected: custodian_store::ExpectedVersion::NoStream,
                    actual: 1,
                },
                "Conflict",
            ),
            (StoreError::Closed, "Unavailable"),
            (
                StoreError::CorruptRecord {
                    position: 3,
                    reason: "x".into(),
                },
                "Internal",
            ),
        ];
        for (store, category) in cases {
            let e = AppError::from(store);
            let name = format!("{e:?}");
            assert!(name.starts_with(category), "{name} is not {category}");
        }
    }

    #[test]
    fn throttling_always_says_to_wait_at_least_a_second() {
        assert_eq!(
            AppError::throttled("slow down", 0),
            AppError::Throttled {
                detail: "slow down".into(),
                retry_after: 1
            }
        );
    }
}
