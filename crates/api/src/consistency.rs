//! Read-your-writes (DESIGN section 3): a read may ask, with `Custodian-Min-Position: N`, to be
//! answered only from views that have applied position `N`. Only an authenticated caller may ask
//! (an access token, an API key, or the scrape token): any other request carrying the header is
//! 401 at once, without waiting. The server waits for that (bounded),
//! woken by the projection workers rather than polling, and otherwise answers 503 with
//! `Retry-After`. Checks (`POST .../check` and `.../check/batch`) wait the same way, for the
//! authorization index as well. Every answer to an authenticated read under `/v1` carries
//! `Custodian-Position`: the position its views had applied.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::FromRequestParts as _;
use custodian_app::identity::{self, Caller};

use crate::extract::{Authenticated, BearerCredential, ClientIp};
use crate::respond::Problem;
use crate::state::AppState;

pub use crate::respond::CUSTODIAN_POSITION;
/// Request header: answer this read only from views that have applied this position.
pub const CUSTODIAN_MIN_POSITION: &str = "custodian-min-position";

/// The largest position a log can hold: positions are stored as signed 64-bit integers.
pub const MAX_POSITION: u64 = i64::MAX as u64;

/// A `Custodian-Min-Position` value: an integer from 0 to [`MAX_POSITION`]. Anything else, a
/// number too large for any log included, cannot name a position, so it is no position at all.
pub fn min_position(raw: &HeaderValue) -> Option<u64> {
    raw.to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|n| *n <= MAX_POSITION)
}

/// Waits for `Custodian-Min-Position` on reads and checks, and stamps `Custodian-Position` on their answers.
pub async fn read_your_writes(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let is_read = matches!(*request.method(), Method::GET | Method::HEAD)
        && request.uri().path().starts_with("/v1/");
    let waits = is_read || is_check(request.method(), request.uri().path());
    let mut authenticated_here = false;
    if waits && let Some(raw) = request.headers().get(CUSTODIAN_MIN_POSITION).cloned() {
        // Only a caller who authenticates may make the server wait: a stranger's request is
        // refused at once, before it costs anything.
        let (mut parts, body) = request.into_parts();
        let Ok(ClientIp(ip)) = ClientIp::from_request_parts(&mut parts, &state).await;
        let BearerCredential(bearer) = BearerCredential::parse(&parts.headers);
        match identity::authenticate_caller(&state.app, bearer.as_deref(), ip).await {
            Ok(Caller::Principal(principal)) => {
                parts.extensions.insert(Authenticated(principal));
            }
            Ok(Caller::Operator) => {}
            Err(e) => return Problem::from(e).into_response(),
        }
        request = Request::from_parts(parts, body);
        authenticated_here = true;
        let Some(wanted) = min_position(&raw) else {
            return Problem::bad_request(
                    "Custodian-Min-Position must be an integer from 0 to 9223372036854775807 (a position from a Custodian-Position header)",
                )
                .into_response();
        };
        // Reads are served by the views and the authorization index, checks by the index alone.
        if is_read && let Err(e) = state.projections.wait_for(wanted, state.read_wait).await {
            return Problem::unavailable(
                format!("{e}; retry, or read without {CUSTODIAN_MIN_POSITION}"),
                1,
            )
            .into_response();
        }
        // Checks and the policy's reads are answered from the authorization index, which
        // follows the log on its own.
        if state.policy.wait_for(wanted).await.is_err() {
            return Problem::unavailable(
                format!(
                    "the authorization index has not reached position {wanted}; retry, or read without {CUSTODIAN_MIN_POSITION}"
                ),
                1,
            )
            .into_response();
        }
    }
    let authenticated = CallerAuthenticated::default();
    if authenticated_here {
        authenticated.set();
    }
    request.extensions_mut().insert(authenticated.clone());
    let mut response = next.run(request).await;
    // Where the views stand moves with every event, a stranger's failed login included: only an
    // authenticated caller hears it.
    if is_read && authenticated.is_set() && !response.headers().contains_key(CUSTODIAN_POSITION) {
        let applied = state.projections.applied_position();
        response
            .headers_mut()
            .insert(CUSTODIAN_POSITION, HeaderValue::from(applied));
    }
    response
}

/// Whether the request's caller has authenticated (the `Principal` extractor, an operator's
/// route, or this middleware before it waited says so): only then does a read's answer carry
/// `Custodian-Position`.
#[derive(Debug, Clone, Default)]
pub struct CallerAuthenticated(Arc<AtomicBool>);

impl CallerAuthenticated {
    /// Records that the caller authenticated.
    pub fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Whether the request asks the decision point (`POST /v1/tenants/{tenant}/check` or
/// `.../check/batch`): a read, though it is a POST.
pub fn is_check(method: &Method, path: &str) -> bool {
    *method == Method::POST
        && path
            .strip_prefix("/v1/tenants/")
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(_, tail)| tail == "check" || tail == "check/batch")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_min_position_is_an_integer_a_log_can_hold() {
        for (raw, wanted) in [
            ("0", Some(0)),
            (" 42 ", Some(42)),
            ("9223372036854775807", Some(MAX_POSITION)),
            ("9223372036854775808", None),
            ("18446744073709551615", None),
            ("18446744073709551616", None),
            ("-1", None),
            ("1.5", None),
            ("1e3", None),
            ("ten", None),
            ("", None),
        ] {
            assert_eq!(
                min_position(&HeaderValue::from_static(raw)),
                wanted,
                "{raw:?}"
            );
        }
    }

    #[test]
    fn only_the_decision_point_is_a_read_among_posts() {
        for (method, path, check) in [
            (Method::POST, "/v1/tenants/acme/check", true),
            (Method::POST, "/v1/tenants/acme/check/batch", true),
            (Method::GET, "/v1/tenants/acme/check", false),
            (Method::POST, "/v1/tenants/acme/grants", false),
            (Method::POST, "/v1/tenants/acme/check/other", false),
            (Method::POST, "/v1/tenants/check", false),
        ] {
            assert_eq!(is_check(&method, path), check, "{method} {path}");
        }
    }
}
