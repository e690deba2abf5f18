//! The OpenAPI document of the HTTP API, generated from the handlers' `#[utoipa::path]`
//! annotations, and the reference page at `/docs` that renders it.
//!
//! [`ApiDoc`] holds what no handler knows: the title, the description, the tags. The paths and
//! their schemas are added by `server::documented_routes` as it registers each route, so the
//! document describes exactly what the router serves.

use std::sync::Arc;

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Json};
use utoipa::OpenApi;
use utoipa::openapi::OpenApi as Document;

use crate::respond::{PROBLEM_JSON, ProblemDocument};

/// The document's fixed part; see the module doc for where the paths come from.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Custodian",
        version = env!("CARGO_PKG_VERSION"),
        description = DESCRIPTION,
    ),
    components(schemas(ProblemDocument)),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Logging in, second factors, refresh-token rotation, invitations, password resets, and the keys that verify access tokens."),
        (name = "account", description = "What an authenticated user does for themselves: their profile, sessions, password and TOTP."),
        (name = "tenants", description = "Tenants: creating, listing, renaming, re-planning, suspending and reactivating them (platform administrators)."),
        (name = "users", description = "Users of a tenant, for its administrators: creating and inviting them, their profiles, disabling, erasure, password resets, sessions and credential status."),
        (name = "keys", description = "API keys: issuing them (the full key is shown once), listing, changing, rotating with a grace period and revoking them, and verifying a key for another service. A key authenticates as `Authorization: Bearer cst_...`, limited to its scopes."),
        (name = "authorization", description = "A tenant's permission catalog, roles, grants, assignments and resource groups, and the decision point that answers, now or for any past instant, whether a principal may act, with the events that made it so."),
        (name = "usage", description = "Usage metering (single records and batches, each idempotency key counted once, acknowledged only when durable), monthly quotas from the tenant's plan or its own, meter unit costs, and the monthly budget whose 50/80/100 % thresholds are recorded as events."),
        (name = "audit", description = "A tenant's audit trail: its events, filtered by the principals and resources they touch, their type and time, each with its position and hashes; personal data opened only for who may read the user, and shown as erased once the user's data key is destroyed."),
        (name = "ledger", description = "The log as a verifiable ledger: signed checkpoints of its RFC 6962 Merkle tree (C2SP tlog-checkpoint, Ed25519 signed notes), their verifier key, and inclusion and consistency proofs that any RFC 6962 implementation checks."),
        (name = "operations", description = "Liveness and readiness, for orchestrators and load balancers."),
        (name = "reference", description = "This document, and the page that renders it."),
    ),
)]
pub struct ApiDoc;

/// Completes the document once every route is in it: documents read-your-writes on every read
/// under `/v1` and on the checks, where the middleware applies it: the optional
/// `Custodian-Min-Position` header, the 401 when it comes without a valid credential, its 400
/// when it is not a position, and the 503 when the views do not reach it in time. One place,
/// because one middleware answers them for every read.
pub fn document_read_your_writes(openapi: &mut Document) {
    {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::{ObjectBuilder, Ref, ResponseBuilder, Type};
        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    PROBLEM_JSON,
                    utoipa::openapi::ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ProblemDocument")))
                        .build(),
                )
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let read = if path.starts_with("/v1/tenants/{tenant}/check") {
                item.post.as_mut()
            } else {
                item.get.as_mut().filter(|_| path.starts_with("/v1/"))
            };
            let Some(operation) = read else {
                continue;
            };
            let parameters = operation.parameters.get_or_insert_with(Vec::new);
            if parameters
                .iter()
                .any(|p| p.name.eq_ignore_ascii_case(CUSTODIAN_MIN_POSITION_HEADER))
            {
                continue;
            }
            parameters.push(
                ParameterBuilder::new()
                    .name(CUSTODIAN_MIN_POSITION_HEADER)
                    .parameter_in(ParameterIn::Header)
                    .description(Some(
                        "Answer only from views that have applied this log position (a `Custodian-Position` a command returned): read-your-writes. Honoured only for an authenticated caller; without a valid credential the request is 401 at once.",
                    ))
                    .schema(Some(
                        ObjectBuilder::new()
                            .schema_type(Type::Integer)
                            .minimum(Some(0))
                            .maximum(Some(i64::MAX)),
                    ))
                    .build(),
            );
            let responses = &mut operation.responses.responses;
            responses.entry("400".to_owned()).or_insert_with(|| {
                problem("`Custodian-Min-Position` is not a position: an integer from 0 to 2^63-1 (code `bad_request`)").into()
            });
            responses.entry("401".to_owned()).or_insert_with(|| {
                problem("`Custodian-Min-Position` was sent without a valid credential: only an authenticated caller may make the server wait (code `unauthenticated`)").into()
            });
            responses.entry("503".to_owned()).or_insert_with(|| {
                problem("The views did not reach `Custodian-Min-Position` within the read wait, or are not ready; retry after `Retry-After` (code `unavailable`)").into()
            });
        }
    }
}

/// Adds the rate-limit headers to every answer of the operations that authenticate their caller
/// (those that can answer 401), which carry them.
pub fn document_rate_limits(openapi: &mut Document) {
    use utoipa::openapi::header::HeaderBuilder;
    use utoipa::openapi::{ObjectBuilder, RefOr, Type};
    let header = |description: &str| {
        HeaderBuilder::new()
            .schema(ObjectBuilder::new().schema_type(Type::String))
            .description(Some(description))
            .build()
    };
    for item in openapi.paths.paths.values_mut() {
        for operation in [
            item.get.as_mut(),
            item.post.as_mut(),
            item.put.as_mut(),
            item.patch.as_mut(),
            item.delete.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            let responses = &mut operation.responses.responses;
            if !responses.contains_key("401") {
                continue;
            }
            for (status, response) in responses.iter_mut() {
                let RefOr::T(response) = response else {
                    continue;
                };
                if status == "401" {
                    continue;
                }
                response.headers.insert(
                    "RateLimit-Policy".to_owned(),
                    header("The caller's rate limits: `\"tenant\";q=1200;w=60, \"principal\";q=600;w=60` (and `\"key\"` for a key with its own limit); q requests per w seconds"),
                );
                response.headers.insert(
                    "RateLimit".to_owned(),
                    header("Where each limit stands: `\"tenant\";r=1187;t=1`, r requests left, t seconds until all are back"),
                );
            }
        }
    }
}

/// The read-your-writes request header, as the document names it.
const CUSTODIAN_MIN_POSITION_HEADER: &str = "Custodian-Min-Position";

/// Declares the `bearer` security scheme the authenticated operations refer to.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut Document) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT or API key")
                    .description(Some(
                        "An access token from /v1/auth/login or /v1/auth/refresh (EdDSA JWT, 15 minutes), or an API key (`cst_...`), which may use only its scopes.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The API's description: what Custodian is, then the error rules that hold on every path,
/// including the fallbacks, which are not operations and so appear nowhere else.
const DESCRIPTION: &str = "\
Custodian is an event-sourced security ledger: every change to identities and access is recorded \
as an immutable event in one append-only, hash-chained log, and every read is served from that \
log. This document is generated from the server's code, so it lists exactly the endpoints this \
build serves, with the errors each can answer.

**Errors.** Every error, on every path, is an RFC 9457 problem document served as \
`application/problem+json` (schema `ProblemDocument`), with a stable machine-readable `code` to \
branch on and a `detail` meant for a person. A path that no endpoint serves answers `404` with \
code `not_found`; a method that a served path does not support answers `405` with code \
`method_not_allowed`. A `503` (code `unavailable`) carries a `Retry-After` header in seconds. \
A `500` (code `internal`) is a bug: its cause is logged on the server and never sent.";

/// The page at `/docs`: Scalar's API reference, loading the document from the relative URL
/// `openapi.json` (so it also works behind a path prefix).
///
/// Scalar is pinned to one version with a Subresource Integrity hash: people paste bearer tokens
/// into this page to try requests, so it must run only the script that was reviewed, whatever the
/// CDN serves later. Its configuration turns off what would send the document or the reader's
/// requests to Scalar's hosted services (the AI agent, MCP generation, the developer toolbar,
/// telemetry, web fonts). To upgrade, `npm pack @scalar/api-reference@VERSION`, take
/// `openssl dgst -sha384 -binary package/dist/browser/standalone.js | openssl base64 -A` as the
/// new hash, and look at the page in a browser.
const DOCS_PAGE: &str = include_str!("docs.html");

/// The OpenAPI document of every endpoint this server serves.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "reference",
    responses((
        status = 200,
        description = "The OpenAPI 3.1 document, generated from the code",
        body = Object,
        content_type = "application/json",
    )),
)]
pub(crate) async fn openapi_json(Extension(document): Extension<Arc<Document>>) -> Response {
    Json(document.as_ref()).into_response()
}

/// An interactive reference page that renders `/openapi.json`.
///
/// The page loads its renderer from a CDN in the browser; the server needs no network for it.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "reference",
    responses((
        status = 200,
        description = "An HTML page",
        body = String,
        content_type = "text/html",
    )),
)]
pub(crate) async fn docs() -> impl IntoResponse {
    (
        [(header::CONTENT_SECURITY_POLICY, DOCS_POLICY)],
        Html(DOCS_PAGE),
    )
}

/// The Content-Security-Policy of `/docs`: the page runs only the pinned renderer from its CDN
/// directory (Scalar injects its styles inline), talks only to this server (the document, and
/// the requests a reader tries), and no other page may frame it.
pub const DOCS_POLICY: &str = "default-src 'none'; \
    script-src https://cdn.jsdelivr.net/npm/@scalar/api-reference@1.72.1/; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
    connect-src 'self'; worker-src 'self' blob:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

// Reusable response sets. A route lists its success answer and the problems only it can give
// inline, and refers to these for the problems many routes share, so the same rows are written
// once: `responses((status = 200, ...), JsonBodyProblems, AuthProblems)`.

/// The problems of any route that reads a JSON body: malformed (400), too large (413), not JSON
/// (415) or of the wrong shape (422).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum JsonBodyProblems {
    /// The body is not valid JSON (code `bad_request`).
    #[response(status = 400, content_type = "application/problem+json")]
    Malformed(ProblemDocument<'static>),
    /// The body is larger than 64 KiB, or 1 MiB for a batch of checks (code `payload_too_large`).
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(ProblemDocument<'static>),
    /// The body is missing or not sent as `Content-Type: application/json` (code
    /// `unsupported_media_type`).
    #[response(status = 415, content_type = "application/problem+json")]
    NotJson(ProblemDocument<'static>),
    /// A field is missing, unknown, of the wrong type, or invalid (code `validation_failed`).
    #[response(status = 422, content_type = "application/problem+json")]
    Invalid(ProblemDocument<'static>),
}

/// The problems of any route that needs an access token: none or an invalid one (401), or the
/// server is catching up with the log (503, with `Retry-After`).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum AuthProblems {
    /// Missing, invalid or expired access token, or its session, user or tenant may no longer
    /// act (code `unauthenticated`).
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthenticated(ProblemDocument<'static>),
    /// The tenant's plan, the caller or its key made more requests than their rate limit allows;
    /// retry after `Retry-After` (code `rate_limited`; `RateLimit-Policy` and `RateLimit` say
    /// which limit).
    #[response(status = 429, content_type = "application/problem+json")]
    RateLimited(ProblemDocument<'static>),
    /// The store or the authentication index is busy; retry after `Retry-After` (code
    /// `unavailable`).
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(ProblemDocument<'static>),
}

/// The problems of an administrator's route on a tenant's objects: not an administrator of it
/// (403), or no such tenant or object, or not one the caller may see (404).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum AdminProblems {
    /// The caller is not an administrator of the tenant (code `forbidden`).
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(ProblemDocument<'static>),
    /// No such tenant or object, or not one the caller may see (code `not_found`).
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(ProblemDocument<'static>),
}

/// The problems of a platform administrator's route on tenants in general: the caller is not
/// one (403).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum PlatformAdminProblems {
    /// The caller is not a platform administrator.
    #[response(
        status = 403,
        description = "The caller is not a platform administrator",
        content_type = "application/problem+json"
    )]
    Forbidden(ProblemDocument<'static>),
}

/// The problems of a route that adds a user to a tenant: roles the caller may not grant (403), or
/// an email another user of the tenant holds (409).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum NewUserProblems {
    /// The caller may not grant what the request asks for.
    #[response(
        status = 403,
        description = "The caller is not an administrator of the tenant, or grants platform_admin without being one",
        content_type = "application/problem+json"
    )]
    Forbidden(ProblemDocument<'static>),
    /// The email is taken in the tenant.
    #[response(
        status = 409,
        description = "The email address is already in use in the tenant",
        content_type = "application/problem+json"
    )]
    EmailInUse(ProblemDocument<'static>),
}

/// The problem of an administrator's read served from a view: the view is not ready or the
/// database is busy (503, with `Retry-After`). List it after [`AuthProblems`], whose 503 it
/// replaces.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum ViewProblems {
    /// The view cannot answer yet.
    #[response(
        status = 503,
        description = "The view is not ready or the database is busy; retry after `Retry-After`",
        content_type = "application/problem+json"
    )]
    Unavailable(ProblemDocument<'static>),
}

/// The problem of a route that lists sessions: a query parameter that does not parse (422).
/// List it after any set with a 422, which it replaces.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum SessionQueryProblems {
    /// The session query is invalid.
    #[response(
        status = 422,
        description = "`active`, `limit` or `cursor` is invalid",
        content_type = "application/problem+json"
    )]
    Invalid(ProblemDocument<'static>),
}

/// The problem of a route that counts failed proofs of a password or a code: too many (429, with
/// `Retry-After`).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum ThrottledProblems {
    /// Too many failed attempts.
    #[response(
        status = 429,
        description = "Too many failed attempts (code `rate_limited`, with `Retry-After`)",
        content_type = "application/problem+json"
    )]
    Throttled(ProblemDocument<'static>),
}

/// The problems of a route that changes TOTP on proof of presence (a password or a current code):
/// a wrong proof (403), TOTP not enabled (409), neither or both proofs given (422). List it after
/// [`JsonBodyProblems`], whose 422 it replaces.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum FreshProofProblems {
    /// The proof is wrong.
    #[response(
        status = 403,
        description = "Wrong password or code (code `invalid_credentials`)",
        content_type = "application/problem+json"
    )]
    WrongProof(ProblemDocument<'static>),
    /// TOTP is off.
    #[response(
        status = 409,
        description = "TOTP is not enabled",
        content_type = "application/problem+json"
    )]
    NotEnabled(ProblemDocument<'static>),
    /// The body does not give exactly one proof.
    #[response(
        status = 422,
        description = "A field is missing, unknown or of the wrong type, or neither or both of password and code are given",
        content_type = "application/problem+json"
    )]
    Invalid(ProblemDocument<'static>),
}

/// The problem of a public route that reads the store and the authentication index: either is
/// busy (503, with `Retry-After`).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum IndexBusyProblems {
    /// The store or the index is busy.
    #[response(
        status = 503,
        description = "The store or the authentication index is busy; retry after `Retry-After` (code `unavailable`)",
        content_type = "application/problem+json"
    )]
    Unavailable(ProblemDocument<'static>),
}

/// The problem of a public route that reads only the store: it is busy (503, with `Retry-After`).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum StoreBusyProblems {
    /// The store is busy.
    #[response(
        status = 503,
        description = "The store is busy; retry after `Retry-After` (code `unavailable`)",
        content_type = "application/problem+json"
    )]
    Unavailable(ProblemDocument<'static>),
}

/// The problem of a public route that sets a password with a token: the password does not meet
/// the policy, or a field is missing (422). List it after [`JsonBodyProblems`], whose 422 it
/// replaces.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum NewPasswordProblems {
    /// The password or the body is invalid.
    #[response(
        status = 422,
        description = "The password does not meet the policy, or a field is missing",
        content_type = "application/problem+json"
    )]
    Invalid(ProblemDocument<'static>),
}

/// The problems of a route that changes or reads a tenant's policy: the change contradicts the
/// policy as it is (409), or names a permission, resource type, role or scope that is unknown or
/// malformed (422). List it after [`JsonBodyProblems`], whose 422 it replaces.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum PolicyProblems {
    /// The policy does not allow it now.
    #[response(
        status = 409,
        description = "The role exists already, is built in, is a parent of another role, or the parents would make a cycle (code `conflict`)",
        content_type = "application/problem+json"
    )]
    Conflict(ProblemDocument<'static>),
    /// Invalid content.
    #[response(
        status = 422,
        description = "A field is missing, unknown, of the wrong type or invalid (code `validation_failed`), or a permission or resource type is not in the tenant's catalog (code `unknown_permission`, with `known` listing the catalog)",
        content_type = "application/problem+json"
    )]
    Invalid(ProblemDocument<'static>),
}

/// The problems of the API-key routes: the caller may not (403, with `missing` listing scopes
/// the caller does not hold), the key was revoked or has expired (409), or invalid content (422).
/// List it after [`JsonBodyProblems`] and [`AdminProblems`], whose 403 and 422 it replaces.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum KeyProblems {
    /// Not allowed.
    #[response(
        status = 403,
        description = "The caller lacks the permission (code `forbidden`), or asks for scopes it does not hold itself on `on` (code `forbidden`, with `missing` listing them)",
        content_type = "application/problem+json"
    )]
    Forbidden(ProblemDocument<'static>),
    /// The key cannot change any more.
    #[response(
        status = 409,
        description = "The key is revoked, or has expired and cannot be rotated (code `conflict`)",
        content_type = "application/problem+json"
    )]
    Conflict(ProblemDocument<'static>),
    /// Invalid content.
    #[response(
        status = 422,
        description = "A field is missing, unknown, of the wrong type or invalid (code `validation_failed`), or a scope is not in the tenant's catalog (code `unknown_permission`, with `known` listing the catalog)",
        content_type = "application/problem+json"
    )]
    Invalid(ProblemDocument<'static>),
}

/// The problem of a route that records usage: a hard quota refuses it (429 with `Retry-After`,
/// the seconds until the next month).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum QuotaProblems {
    /// Over a hard quota.
    #[response(
        status = 429,
        description = "A hard quota would be exceeded; nothing of the request counted (code `quota_exceeded`, with `Retry-After` until the next month)",
        content_type = "application/problem+json"
    )]
    Exceeded(ProblemDocument<'static>),
}
