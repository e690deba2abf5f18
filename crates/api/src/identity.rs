//! What the identity endpoints share: the authenticated principal of a request, the client's
//! address, and a JSON body extractor that answers bad input with problem documents.

use std::net::{IpAddr, SocketAddr};

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use custodian_store::StoreError;
use serde::de::DeserializeOwned;

pub use custodian_app::Principal;
pub use custodian_app::auth::Security as Identity;
pub use custodian_app::auth::SecurityOptions as IdentityOptions;
pub use custodian_app::stream;
pub use custodian_app::validate::{check_len, check_tenant, normalize_email};
use custodian_domain::Timestamp;

use crate::commands::Failed;
use crate::problem::Problem;
use crate::server::AppState;

/// Maps a failed command to a problem.
pub fn command_problem<X>(e: Failed<X>, refused: impl FnOnce(X) -> Problem) -> Problem {
    match e {
        Failed::Refused(x) => refused(x),
        Failed::Store(e) => Problem::from(e),
    }
}

/// Maps a vault failure to a problem.
pub fn vault_problem(e: custodian_app::auth::vault::VaultError) -> Problem {
    Problem::from(custodian_app::auth::vault_error(e))
}

/// The current time as the log writes it.
pub fn now() -> Timestamp {
    custodian_app::Clock::now(&custodian_app::SystemClock)
}

/// The server's security options from its configuration.
pub fn options_from_config(config: &crate::config::Config) -> IdentityOptions {
    IdentityOptions {
        secret_key_file: config.secret_key_file.clone(),
        issuer: config.issuer.clone(),
        password_min_length: config.password_min_length,
        argon2: custodian_app::auth::password::Argon2Params {
            memory_kib: config.argon2_memory_kib,
            iterations: config.argon2_iterations,
            ..custodian_app::auth::password::Argon2Params::default()
        },
        login_ip_failures: config.login_ip_failures,
        index_wait: config.read_wait,
        trusted_proxies: config.trusted_proxies.clone(),
    }
}

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
            client_address(peer, &forwarded, &state.security.trusted_proxies)
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
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| Problem::unauthenticated("send Authorization: Bearer <access token>"))?;
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
            })?;
        Ok(custodian_app::identity::authenticate(&state.app, token).await?)
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
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(json_problem(rejection)),
        }
    }
}

fn json_problem(rejection: JsonRejection) -> Problem {
    match rejection {
        JsonRejection::JsonDataError(e) => Problem::validation(format!(
            "the JSON body does not have the expected fields: {}",
            e.body_text()
                .trim_start_matches("Failed to deserialize the JSON body into the target type: ")
        )),
        JsonRejection::JsonSyntaxError(e) => Problem::bad_request(format!(
            "the body is not valid JSON: {}",
            e.body_text()
                .trim_start_matches("Failed to parse the request body as JSON: ")
        )),
        JsonRejection::MissingJsonContentType(_) => Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Unsupported media type",
            "send the body as JSON with Content-Type: application/json",
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Payload too large",
                format!("the body is larger than {MAX_BODY_BYTES} bytes"),
            )
        }
        other => Problem::bad_request(format!("cannot read the body: {}", other.body_text())),
    }
}

/// The largest JSON body the identity endpoints read.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A store failure as a problem (for `?` on store calls in handlers).
pub fn store_problem(e: StoreError) -> Problem {
    Problem::from(e)
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
