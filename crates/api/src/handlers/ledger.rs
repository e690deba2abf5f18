//! Ledger routes: the signed checkpoint of the log's Merkle tree, its verifier key, and inclusion
//! and consistency proofs. Each calls one use case of `custodian_app::ledger`.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use custodian_app::Principal;
use custodian_app::ledger::{
    self, ConsistencyProof, ConsistencyQuery, InclusionProof, InclusionQuery,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{MinPosition, QueryParams};
use crate::openapi::AuthProblems;
use crate::respond::{CUSTODIAN_POSITION, PROBLEM_JSON, Problem, ProblemDocument, positioned};
use crate::state::AppState;

/// The media type of a signed note and of a verifier key.
const TEXT: &str = "text/plain; charset=utf-8";

/// This module's routes.
pub(crate) fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router
        .routes(routes!(checkpoint))
        .routes(routes!(checkpoint_key))
        .routes(routes!(inclusion))
        .routes(routes!(consistency))
}

fn text(body: String, position: Option<u64>) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT));
    if let Some(position) = position {
        headers.insert(CUSTODIAN_POSITION, HeaderValue::from(position));
    }
    response
}

/// A checkpoint of the log's Merkle tree as the server has applied it, signed now.
///
/// A C2SP `tlog-checkpoint` in signed-note form: the origin line, the tree size, the root hash in
/// base64, a `time` extension line, a blank line, and the Ed25519 signature line
/// (`— <key name> <base64(key id || signature)>`). Check it with the verifier key from
/// `/v1/ledger/checkpoint/key`. `Custodian-Position` is the tree size. Needs `audit:read` in the
/// caller's own tenant (platform staff: in `_system`).
#[utoipa::path(
    get,
    path = "/v1/ledger/checkpoint",
    tag = "ledger",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The signed checkpoint", body = String, content_type = "text/plain; charset=utf-8",
            headers(("Custodian-Position" = u64, description = "The tree size the checkpoint covers"))),
        (status = 403, description = "The caller does not hold `audit:read` in its tenant (code `forbidden`)", body = ProblemDocument, content_type = PROBLEM_JSON),
        AuthProblems,
    ),
)]
async fn checkpoint(
    State(state): State<AppState>,
    principal: Principal,
    MinPosition(min): MinPosition,
) -> Result<Response, Problem> {
    let signed = ledger::checkpoint(&state, &principal, min).await?;
    Ok(text(signed.note, Some(signed.tree_size)))
}

/// The verifier key of the checkpoints, in the C2SP signed-note form
/// `<name>+<key id, 8 hex digits>+<base64(0x01 || Ed25519 public key)>`.
///
/// Public: it is a public key. After a rotation it is the new key's; the log records every key
/// (`ledger.checkpoint_key_issued`).
#[utoipa::path(
    get,
    path = "/v1/ledger/checkpoint/key",
    tag = "ledger",
    responses(
        (status = 200, description = "The verifier key", body = String, content_type = "text/plain; charset=utf-8"),
        (status = 404, description = "No checkpoint has been published yet, so there is no checkpoint key (code `not_found`)", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 503, description = "The store or the Merkle tree is busy; retry after `Retry-After` (code `unavailable`)", body = ProblemDocument, content_type = PROBLEM_JSON),
    ),
)]
async fn checkpoint_key(State(state): State<AppState>) -> Result<Response, Problem> {
    Ok(text(ledger::verifier_key(&state).await?, None))
}

/// The RFC 6962 inclusion proof of the event at `position` in the tree of `tree_size` events
/// (default: the size the server has applied).
///
/// `leaf_hash` is the leaf's data, the event's `hash`; the leaf hash is SHA-256(0x00 || it).
/// Hashes are lower-case hex. Needs `audit:read` in the caller's own tenant.
#[utoipa::path(
    get,
    path = "/v1/ledger/proof/inclusion",
    tag = "ledger",
    security(("bearer" = [])),
    params(InclusionQuery),
    responses(
        (status = 200, description = "The proof", body = InclusionProof,
            headers(("Custodian-Position" = u64, description = "The tree size of the proof"))),
        (status = 403, description = "The caller does not hold `audit:read` in its tenant (code `forbidden`)", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 422, description = "`position` is missing or 0, larger than `tree_size`, or `tree_size` is beyond the log (code `validation_failed`)", body = ProblemDocument, content_type = PROBLEM_JSON),
        AuthProblems,
    ),
)]
async fn inclusion(
    State(state): State<AppState>,
    principal: Principal,
    MinPosition(min): MinPosition,
    QueryParams(q): QueryParams<InclusionQuery>,
) -> Result<Response, Problem> {
    let proof = ledger::inclusion_proof(&state, &principal, q, min).await?;
    Ok(positioned(StatusCode::OK, proof.tree_size, proof))
}

/// The RFC 6962 consistency proof that the tree of `from` events is a prefix of the tree of `to`
/// events (default: the size the server has applied): what a witness asks between two
/// checkpoints. Hashes are lower-case hex. Needs `audit:read` in the caller's own tenant.
#[utoipa::path(
    get,
    path = "/v1/ledger/proof/consistency",
    tag = "ledger",
    security(("bearer" = [])),
    params(ConsistencyQuery),
    responses(
        (status = 200, description = "The proof", body = ConsistencyProof,
            headers(("Custodian-Position" = u64, description = "The newer tree size"))),
        (status = 403, description = "The caller does not hold `audit:read` in its tenant (code `forbidden`)", body = ProblemDocument, content_type = PROBLEM_JSON),
        (status = 422, description = "`from` is missing, larger than `to`, or a size is beyond the log (code `validation_failed`)", body = ProblemDocument, content_type = PROBLEM_JSON),
        AuthProblems,
    ),
)]
async fn consistency(
    State(state): State<AppState>,
    principal: Principal,
    MinPosition(min): MinPosition,
    QueryParams(q): QueryParams<ConsistencyQuery>,
) -> Result<Response, Problem> {
    let proof = ledger::consistency_proof(&state, &principal, q, min).await?;
    Ok(positioned(StatusCode::OK, proof.to, proof))
}
