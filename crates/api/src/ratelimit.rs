//! The rate-limit headers: every response to an authenticated request says where the caller's
//! limits stand, in the structured-field form of the IETF draft
//! `draft-ietf-httpapi-ratelimit-headers`:
//!
//! ```text
//! RateLimit-Policy: "tenant";q=1200;w=60, "principal";q=600;w=60
//! RateLimit: "tenant";r=1187;t=1, "principal";r=598;t=1
//! ```
//!
//! `q` is the limit per window of `w` seconds, `r` what is left now and `t` the seconds until all
//! of it is back. A refused request is answered 429 (code `rate_limited`) with `Retry-After`.
//! Authentication counts the request ([`custodian_app::ratelimit::admit`]) and leaves its answer in
//! the request's [`RateLimitSlot`], which this middleware turns into headers.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use custodian_app::ratelimit::{Admission, Standing};

/// Where the request's authentication leaves its rate-limit standing.
#[derive(Debug, Clone, Default)]
pub struct RateLimitSlot(Arc<Mutex<Option<Admission>>>);

impl RateLimitSlot {
    /// Keeps the standing of this request's limits.
    pub fn set(&self, admission: Admission) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(admission);
    }

    fn take(&self) -> Option<Admission> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// Gives each request a [`RateLimitSlot`] and writes what authentication left there as headers.
pub async fn headers(mut request: Request, next: Next) -> Response {
    let slot = RateLimitSlot::default();
    request.extensions_mut().insert(slot.clone());
    let mut response = next.run(request).await;
    if let Some(admission) = slot.take().filter(|a| !a.standings.is_empty()) {
        let (policy, state) = header_values(&admission.standings);
        let headers = response.headers_mut();
        if let Ok(policy) = HeaderValue::from_str(&policy) {
            headers.insert("ratelimit-policy", policy);
        }
        if let Ok(state) = HeaderValue::from_str(&state) {
            headers.insert("ratelimit", state);
        }
    }
    response
}

/// The `RateLimit-Policy` and `RateLimit` field values of `standings` (empty when there are none).
pub fn header_values(standings: &[Standing]) -> (String, String) {
    let mut policy = String::new();
    let mut state = String::new();
    for (i, s) in standings.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let name = s.policy.name();
        let _ = write!(
            policy,
            "{sep}\"{name}\";q={};w={}",
            s.rule.limit, s.rule.window_seconds
        );
        let _ = write!(state, "{sep}\"{name}\";r={};t={}", s.remaining, s.reset);
    }
    (policy, state)
}

#[cfg(test)]
mod tests {
    use custodian_app::ratelimit::{Policy, RateRule};

    use super::*;

    #[test]
    fn standings_are_written_as_structured_field_lists() {
        let standing = |policy, limit, window_seconds, remaining, reset| Standing {
            policy,
            rule: RateRule {
                limit,
                window_seconds,
            },
            remaining,
            reset,
        };
        let (policy, state) = header_values(&[
            standing(Policy::Tenant, 1000, 60, 998, 41),
            standing(Policy::Key, 10, 1, 0, 1),
        ]);
        assert_eq!(policy, r#""tenant";q=1000;w=60, "key";q=10;w=1"#);
        assert_eq!(state, r#""tenant";r=998;t=41, "key";r=0;t=1"#);
    }
}
