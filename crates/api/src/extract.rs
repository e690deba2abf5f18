//! What handlers take from a request: the authenticated principal, the client's origin, a JSON
//! body, path and query parameters. Every rejection is a problem document.

use std::net::{IpAddr, SocketAddr};

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use custodian_app::{Origin, Principal};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use utoipa::IntoParams;

use crate::consistency::CallerAuthenticated;
use crate::ratelimit::RateLimitSlot;
use crate::respond::Problem;
use crate::state::AppState;

/// The request's client address: the TCP peer, or, when the peer is a trusted proxy, the last
/// address of `X-Forwarded-For` that is not a trusted proxy.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let forwarded: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        Ok(Self(peer.map(|peer| {
            client_address(peer, &forwarded, &state.security.trusted_proxies).to_canonical()
        })))
    }
}

/// Who the client is, given the TCP `peer`, the `X-Forwarded-For` header values in order, and the
/// trusted proxies. Only a trusted peer's header is believed; it is read from the right (each
/// proxy appends the address it received from), skipping trusted proxies, and the first other
/// address is the client. A malformed entry stops the walk at the last address believed.
pub fn client_address(peer: IpAddr, forwarded: &[&str], trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    for entry in forwarded.iter().rev().flat_map(|v| v.rsplit(',')) {
        let Ok(ip) = entry.trim().parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

impl FromRequestParts<AppState> for Origin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let ClientIp(ip) = ClientIp::from_request_parts(parts, state).await?;
        Ok(Origin {
            ip,
            user_agent: user_agent(&parts.headers),
        })
    }
}

/// The request's `User-Agent`, truncated to 512 bytes on a character boundary.
pub fn user_agent(parts: &axum::http::HeaderMap) -> Option<String> {
    let ua = parts.get(header::USER_AGENT)?.to_str().ok()?;
    let mut end = ua.len().min(512);
    while !ua.is_char_boundary(end) {
        end -= 1;
    }
    Some(ua.get(..end)?.to_owned())
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let principal = match parts.extensions.remove::<Authenticated>() {
            Some(Authenticated(principal)) => *principal,
            None => authenticate(parts, state).await?,
        };
        if let Some(seen) = parts.extensions.get::<CallerAuthenticated>() {
            seen.set();
        }
        let admission = custodian_app::ratelimit::admit(&state.app, &principal);
        let refused = admission.retry_after;
        if let Some(slot) = parts.extensions.get::<RateLimitSlot>() {
            slot.set(admission);
        }
        if let Some(retry_after) = refused {
            return Err(Problem::rate_limited(
                "too many requests for this tenant's plan, this caller or this key; retry after `Retry-After`",
                retry_after,
            ));
        }
        Ok(principal)
    }
}

/// A principal the read-your-writes middleware already authenticated (it authenticates before it
/// waits), so the request is not authenticated twice: an API key counts one use per request.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Box<Principal>);

/// The principal behind the request's `Authorization: Bearer` credential.
async fn authenticate(parts: &mut Parts, state: &AppState) -> Result<Principal, Problem> {
    let header = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
        Problem::unauthenticated("send Authorization: Bearer <access token or API key>")
    })?;
    let token = header
        .to_str()
        .ok()
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| {
            Problem::unauthenticated("the Authorization header must be `Bearer <access token>`")
        })?
        .to_owned();
    let Ok(ClientIp(ip)) = ClientIp::from_request_parts(parts, state).await;
    Ok(custodian_app::identity::authenticate_from(&state.app, &token, ip).await?)
}

/// The credential of `Authorization: Bearer ...`, if any, unverified: for the one route that
/// accepts something other than an access token (`/metrics`, which also takes a scrape token).
#[derive(Debug, Clone)]
pub struct BearerCredential(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for BearerCredential {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::parse(&parts.headers))
    }
}

impl BearerCredential {
    /// The credential of `headers`' `Authorization: Bearer ...`, if any.
    pub fn parse(headers: &axum::http::HeaderMap) -> Self {
        Self(
            headers
                .get(header::AUTHORIZATION)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| {
                    h.strip_prefix("Bearer ")
                        .or_else(|| h.strip_prefix("bearer "))
                })
                .map(|t| t.trim().to_owned()),
        )
    }
}

/// A JSON request body whose every rejection is a problem document: malformed JSON is 400, a body
/// of the wrong shape (missing field, wrong type, unknown field) is 422, a body that is too large is
/// 413, a missing `Content-Type: application/json` is 415.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        if !json_content_type(req.headers()) {
            return Err(unsupported_media_type());
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    payload_too_large()
                } else {
                    Problem::bad_request(format!("cannot read the body: {}", e.body_text()))
                }
            })?;
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(v)) => Ok(Self(v)),
            // serde reports some shapes it does not expect (an object with two keys where one
            // enum variant is expected) as syntax errors; valid JSON is of the wrong shape.
            Err(JsonRejection::JsonSyntaxError(e))
                if serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok() =>
            {
                Err(wrong_shape(&e.body_text()))
            }
            Err(rejection) => Err(json_problem(rejection)),
        }
    }
}

/// Whether `Content-Type` says JSON: `application/json` or `application/*+json`, with any
/// parameters.
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json") || subtype.to_ascii_lowercase().ends_with("+json"))
}

fn wrong_shape(text: &str) -> Problem {
    Problem::validation(format!(
        "the JSON body does not have the expected fields: {}",
        text.trim_start_matches("Failed to deserialize the JSON body into the target type: ")
            .trim_start_matches("Failed to parse the request body as JSON: ")
    ))
}

fn unsupported_media_type() -> Problem {
    Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "Unsupported media type",
        "send the body as JSON with Content-Type: application/json",
    )
}

fn payload_too_large() -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "Payload too large",
        format!(
            "the body is larger than {MAX_BODY_BYTES} bytes ({MAX_BATCH_BODY_BYTES} for a batch of checks)"
        ),
    )
}

/// The refusal of a body that was read but does not parse into the expected type.
fn json_problem(rejection: JsonRejection) -> Problem {
    match rejection {
        JsonRejection::JsonDataError(e) => wrong_shape(&e.body_text()),
        other => Problem::bad_request(format!(
            "the body is not valid JSON: {}",
            other
                .body_text()
                .trim_start_matches("Failed to parse the request body as JSON: ")
        )),
    }
}

/// The largest JSON body the identity endpoints read.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The largest body of `POST /v1/tenants/{tenant}/check/batch`: room for its 1,000 checks.
pub const MAX_BATCH_BODY_BYTES: usize = 1024 * 1024;

/// Path parameters; a path that does not parse names nothing that exists, so it is 404.
#[derive(Debug, Clone)]
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(Self(v)),
            Err(_) => Err(Problem::not_found(format!(
                "no resource at {:.200}",
                parts.uri.path()
            ))),
        }
    }
}

/// The path of a route on one tenant: `/v1/tenants/{tenant}...`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TenantPath {
    /// The tenant's slug
    pub tenant: String,
}

/// The path of a route on one user of a tenant: `/v1/tenants/{tenant}/users/{user_id}...`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct UserPath {
    /// The tenant's slug
    pub tenant: String,
    /// The user's id
    pub user_id: String,
}

/// Query parameters; a query string that does not parse is 422.
#[derive(Debug, Clone)]
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for QueryParams<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Self(v)),
            Err(e) => Err(Problem::validation(format!(
                "the query string is invalid: {}",
                e.body_text()
                    .trim_start_matches("Failed to deserialize query string: ")
            ))),
        }
    }
}

/// The request's `Custodian-Min-Position`, for a read answered from something other than the
/// views (which the read-your-writes middleware already waited for). A malformed value never gets
/// here: the middleware answers it with 400.
#[derive(Debug, Clone, Copy)]
pub struct MinPosition(pub Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for MinPosition {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .headers
                .get(crate::consistency::CUSTODIAN_MIN_POSITION)
                .and_then(crate::consistency::min_position),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_a_trusted_proxy_is_believed_about_the_client() {
        let trusted = crate::config::parse_proxies("10.0.0.0/8").unwrap();
        // An untrusted peer's header is ignored: it could say anything.
        assert_eq!(
            client_address(ip("203.0.113.5"), &["198.51.100.1"], &trusted),
            ip("203.0.113.5")
        );
        // Behind one trusted proxy: the address it received from.
        assert_eq!(
            client_address(ip("10.0.0.2"), &["198.51.100.1"], &trusted),
            ip("198.51.100.1")
        );
        // A client cannot hide behind an address it writes itself: the walk stops at the first
        // untrusted address from the right.
        assert_eq!(
            client_address(
                ip("10.0.0.2"),
                &["1.2.3.4, 198.51.100.1", "10.0.0.9"],
                &trusted
            ),
            ip("198.51.100.1")
        );
        // All trusted, or nothing forwarded: the leftmost address believed, or the peer.
        assert_eq!(
            client_address(ip("10.0.0.2"), &["10.0.0.7"], &trusted),
            ip("10.0.0.7")
        );
        assert_eq!(
            client_address(ip("10.0.0.2"), &[], &trusted),
            ip("10.0.0.2")
        );
        // Garbage stops the walk at the last address believed.
        assert_eq!(
            client_address(ip("10.0.0.2"), &["198.51.100.1, junk"], &trusted),
            ip("10.0.0.2")
        );
        // No trusted proxies: the peer, always.
        assert_eq!(
            client_address(ip("10.0.0.2"), &["198.51.100.1"], &[]),
            ip("10.0.0.2")
        );
    }
}
