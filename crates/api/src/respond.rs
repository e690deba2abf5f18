//! How handlers answer: JSON with the position a command wrote (`Custodian-Position`), and RFC
//! 9457 problem details, the one error shape every endpoint answers with. An [`AppError`] becomes a
//! [`Problem`] in one `match`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use custodian_app::AppError;
use custodian_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// Response header: the position a command's last event was written at, or the position a read's
/// views had applied.
pub const CUSTODIAN_POSITION: &str = "custodian-position";

/// A JSON answer with `Custodian-Position: position`.
pub fn positioned<T: Serialize>(status: StatusCode, position: u64, body: T) -> Response {
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert(CUSTODIAN_POSITION, HeaderValue::from(position));
    response
}

/// `response`, marked never to be stored by a cache: for answers that carry a secret shown once.
pub fn never_stored(mut response: Response) -> Response {
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
}

/// The media type of a problem document.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error as the client sees it: an HTTP status, a stable machine-readable `code`, and a
/// `detail` a person can act on. Internal causes are logged, never sent.
#[derive(Debug, Clone)]
pub struct Problem {
    status: StatusCode,
    code: &'static str,
    title: &'static str,
    detail: String,
    retry_after: Option<u64>,
    www_authenticate: Option<&'static str>,
    internal: Option<String>,
    known: Option<Vec<String>>,
    missing: Option<Vec<String>>,
}

/// The cause of a 5xx, handed from the response to the logging middleware.
#[derive(Debug, Clone)]
pub struct InternalCause(pub String);

/// The body of every error response, served as `application/problem+json`: an RFC 9457 problem
/// document plus the stable `code` a client branches on.
// This struct is what `Problem::into_response` serializes, so the schema derived from it is the
// wire format; a test checks the two have the same keys.
#[derive(Serialize, ToSchema)]
pub struct ProblemDocument<'a> {
    /// A URI naming the kind of problem: `urn:custodian:problem:` followed by `code`.
    #[serde(rename = "type")]
    #[schema(example = "urn:custodian:problem:not_found")]
    pub problem_type: String,
    /// A short summary of the kind of problem; the same for every occurrence of one `code`.
    #[schema(example = "Not found")]
    pub title: &'a str,
    /// The HTTP status code of the response, repeated for clients that lose it.
    #[schema(minimum = 400, maximum = 599, example = 404)]
    pub status: u16,
    /// What went wrong this time, in words a person can act on. Never contains internal causes.
    #[schema(example = "no route for /v1/nothing")]
    pub detail: &'a str,
    /// The stable, machine-readable kind of problem (`validation_failed`, `conflict`,
    /// `not_found`, `method_not_allowed`, `unavailable`, `internal`, ...).
    #[schema(example = "not_found")]
    pub code: &'a str,
    /// With code `unknown_permission` only: every permission the tenant's catalog knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known: Option<&'a [String]>,
    /// With an API key refused for scopes its creator does not hold: those scopes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<&'a [String]>,
}

impl Problem {
    /// A problem with an explicit status, code, title and detail.
    pub fn new(
        status: StatusCode,
        code: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            title,
            detail: detail.into(),
            retry_after: None,
            www_authenticate: None,
            internal: None,
            known: None,
            missing: None,
        }
    }

    /// 400: the request cannot be parsed.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Bad request",
            detail,
        )
    }

    /// 422: the request parses but its content is invalid.
    pub fn validation(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "Validation failed",
            detail,
        )
    }

    /// 401: no valid credentials. Answers with `WWW-Authenticate: Bearer` (RFC 6750).
    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self {
            www_authenticate: Some("Bearer error=\"invalid_token\""),
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Unauthenticated",
                detail,
            )
        }
    }

    /// 401 for a login that failed: the same answer whatever was wrong.
    pub fn invalid_credentials() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "Invalid credentials",
            "the tenant, email or password is wrong",
        )
    }

    /// 403: authenticated, but not allowed.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }

    /// 429 with `Retry-After`.
    pub fn rate_limited(detail: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            retry_after: Some(retry_after_secs.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "Too many requests",
                detail,
            )
        }
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "Not found", detail)
    }

    /// 409: the request lost a race or repeats something already done differently.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", "Conflict", detail)
    }

    /// 503 with `Retry-After`: try again shortly.
    pub fn unavailable(detail: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            retry_after: Some(retry_after_secs),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
                detail,
            )
        }
    }

    /// 500: a bug. The cause is logged; the client gets a generic message.
    pub fn internal(cause: impl Into<String>) -> Self {
        Self {
            internal: Some(cause.into()),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                "the server failed to handle the request; the failure was logged",
            )
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The human-readable detail.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = ProblemDocument {
            problem_type: format!("urn:custodian:problem:{}", self.code),
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
            code: self.code,
            known: self.known.as_deref(),
            missing: self.missing.as_deref(),
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (self.status, json).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(challenge) = self.www_authenticate {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if let Some(cause) = self.internal {
            response.extensions_mut().insert(InternalCause(cause));
        }
        response
    }
}

impl From<AppError> for Problem {
    /// The one place an application error becomes an HTTP answer.
    fn from(e: AppError) -> Self {
        match e {
            AppError::Malformed(d) => Problem::bad_request(d),
            AppError::Invalid(d) => Problem::validation(d),
            AppError::UnknownPermission { detail, known } => Problem {
                known: Some(known),
                ..Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unknown_permission",
                    "Unknown permission",
                    detail,
                )
            },
            AppError::TooLarge(d) => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Payload too large",
                d,
            ),
            AppError::NotFound(d) => Problem::not_found(d),
            AppError::Conflict(d) => Problem::conflict(d),
            AppError::Forbidden(d) => Problem::forbidden(d),
            AppError::MissingScopes { detail, missing } => Problem {
                missing: Some(missing),
                ..Problem::forbidden(detail)
            },
            AppError::Unauthenticated(d) => Problem::unauthenticated(d),
            AppError::InvalidCredentials => Problem::invalid_credentials(),
            AppError::WrongProof(d) => Problem::new(
                StatusCode::FORBIDDEN,
                "invalid_credentials",
                "Invalid credentials",
                d,
            ),
            e @ AppError::RefreshTokenReused => Problem::new(
                StatusCode::UNAUTHORIZED,
                "refresh_token_reused",
                "Refresh token reused",
                e.to_string(),
            ),
            AppError::Throttled {
                detail,
                retry_after,
            } => Problem::rate_limited(detail, retry_after),
            AppError::QuotaExceeded {
                detail,
                retry_after,
            } => Problem {
                retry_after: Some(retry_after.max(1)),
                ..Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "quota_exceeded",
                    "Quota exceeded",
                    detail,
                )
            },
            AppError::Unavailable {
                detail,
                retry_after,
                cause,
            } => Self {
                internal: cause,
                ..Problem::unavailable(detail, retry_after)
            },
            AppError::Internal(cause) => Problem::internal(cause),
        }
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::EmptyAppend | StoreError::Unserializable { .. } => {
                Problem::validation(e.to_string())
            }
            StoreError::EventTooLarge { .. } => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Payload too large",
                e.to_string(),
            ),
            StoreError::WrongExpectedVersion { .. } | StoreError::DuplicateEventId { .. } => {
                Problem::conflict(e.to_string())
            }
            StoreError::Closed => Problem::unavailable(e.to_string(), 5),
            StoreError::Database(_) => Self {
                internal: Some(e.to_string()),
                ..Problem::unavailable("the event store is unreachable", 2)
            },
            StoreError::CorruptRecord { .. } | StoreError::Config(_) | StoreError::Migration(_) => {
                Problem::internal(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use utoipa::PartialSchema;

    use super::*;

    async fn render(p: Problem) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let r = p.into_response();
        let (parts, body) = r.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        (
            parts.status,
            parts.headers,
            serde_json::from_slice(&bytes).unwrap(),
        )
    }

    #[tokio::test]
    async fn problems_are_rfc9457_documents() {
        let (status, headers, body) = render(Problem::conflict("stream moved on")).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(headers[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(
            body,
            serde_json::json!({
                "type": "urn:custodian:problem:conflict",
                "title": "Conflict",
                "status": 409,
                "detail": "stream moved on",
                "code": "conflict",
            })
        );
    }

    #[tokio::test]
    async fn the_documented_schema_has_exactly_the_keys_a_problem_sends() {
        let schema = serde_json::to_value(ProblemDocument::schema()).unwrap();
        let documented: BTreeSet<&str> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let required: BTreeSet<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        for problem in [
            Problem::conflict("stream moved on"),
            Problem::unavailable("busy", 2),
            Problem::internal("cause"),
        ] {
            let (_, _, body) = render(problem).await;
            let sent: BTreeSet<&str> = body
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            // `known` is sent only with the code `unknown_permission`, `missing` only with a key
            // refused for scopes its creator lacks.
            let always: BTreeSet<&str> = documented
                .iter()
                .copied()
                .filter(|k| *k != "known" && *k != "missing")
                .collect();
            assert_eq!(always, sent);
            assert_eq!(
                required, sent,
                "every key is always sent, so every key is required"
            );
        }
    }

    #[tokio::test]
    async fn store_errors_map_to_the_right_status() {
        let cases = [
            (StoreError::EmptyAppend, 422, "validation_failed"),
            (
                StoreError::EventTooLarge {
                    index: 0,
                    size: 9,
                    limit: 1,
                },
                413,
                "payload_too_large",
            ),
            (
                StoreError::WrongExpectedVersion {
                    stream: "a/b/c".into(),
                    expected: custodian_store::ExpectedVersion::NoStream,
                    actual: 1,
                },
                409,
                "conflict",
            ),
            (StoreError::Closed, 503, "unavailable"),
            (
                StoreError::CorruptRecord {
                    position: 3,
                    reason: "x".into(),
                },
                500,
                "internal",
            ),
        ];
        for (error, status, code) in cases {
            let (s, _, body) = render(Problem::from(error)).await;
            assert_eq!((s.as_u16(), body["code"].as_str().unwrap()), (status, code));
        }
    }

    #[tokio::test]
    async fn internal_causes_stay_out_of_the_body() {
        let (_, _, body) = render(Problem::internal("secret table name xyz")).await;
        assert!(!body.to_string().contains("xyz"));
        let r = Problem::internal("cause").into_response();
        assert_eq!(r.extensions().get::<InternalCause>().unwrap().0, "cause");
    }

    #[tokio::test]
    async fn a_hard_quota_is_a_429_quota_exceeded_that_says_when_to_retry() {
        let (status, headers, body) = render(Problem::from(AppError::QuotaExceeded {
            detail: "over".into(),
            retry_after: 3600,
        }))
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(body["code"], "quota_exceeded");
        assert_eq!(headers[header::RETRY_AFTER], "3600");
    }

    #[tokio::test]
    async fn unavailable_says_when_to_retry() {
        let (_, headers, _) = render(Problem::unavailable("busy", 2)).await;
        assert_eq!(headers[header::RETRY_AFTER], "2");
    }
}
