//! The OpenAPI document at `/openapi.json` and the reference page at `/docs`.

use crate::support::{App, spawn_app};
use serde_json::Value;

/// Every route the router serves, with its methods. A new endpoint goes here too, so this test
/// fails until it is in the document.
pub(crate) const SERVED: &[(&str, &str)] = &[
    ("/healthz", "get"),
    ("/readyz", "get"),
    ("/openapi.json", "get"),
    ("/docs", "get"),
    ("/v1/admin/projections", "get"),
    ("/metrics", "get"),
    ("/.well-known/jwks.json", "get"),
    ("/v1/auth/login", "post"),
    ("/v1/auth/mfa/verify", "post"),
    ("/v1/auth/refresh", "post"),
    ("/v1/auth/invitations/accept", "post"),
    ("/v1/auth/password/reset", "post"),
    ("/v1/auth/me", "get"),
    ("/v1/auth/logout", "post"),
    ("/v1/auth/sessions", "get"),
    ("/v1/auth/sessions/{session_id}", "delete"),
    ("/v1/auth/password", "post"),
    ("/v1/auth/mfa/totp", "post"),
    ("/v1/auth/mfa/totp/confirm", "post"),
    ("/v1/auth/mfa/totp/disable", "post"),
    ("/v1/auth/mfa/recovery-codes", "post"),
    ("/v1/tenants", "post"),
    ("/v1/tenants", "get"),
    ("/v1/tenants/{tenant}", "get"),
    ("/v1/tenants/{tenant}", "patch"),
    ("/v1/tenants/{tenant}/suspend", "post"),
    ("/v1/tenants/{tenant}/reactivate", "post"),
    ("/v1/tenants/{tenant}/users", "post"),
    ("/v1/tenants/{tenant}/users", "get"),
    ("/v1/tenants/{tenant}/invitations", "post"),
    ("/v1/tenants/{tenant}/users/{user_id}", "get"),
    ("/v1/tenants/{tenant}/users/{user_id}", "patch"),
    ("/v1/tenants/{tenant}/users/{user_id}", "delete"),
    ("/v1/tenants/{tenant}/users/{user_id}/disable", "post"),
    ("/v1/tenants/{tenant}/users/{user_id}/enable", "post"),
    (
        "/v1/tenants/{tenant}/users/{user_id}/password-reset",
        "post",
    ),
    ("/v1/tenants/{tenant}/users/{user_id}/sessions", "get"),
    ("/v1/tenants/{tenant}/users/{user_id}/sessions", "delete"),
    ("/v1/tenants/{tenant}/credentials", "get"),
    ("/v1/tenants/{tenant}/catalog", "put"),
    ("/v1/tenants/{tenant}/catalog", "get"),
    ("/v1/tenants/{tenant}/roles", "post"),
    ("/v1/tenants/{tenant}/roles", "get"),
    ("/v1/tenants/{tenant}/roles/{role}", "get"),
    ("/v1/tenants/{tenant}/roles/{role}", "patch"),
    ("/v1/tenants/{tenant}/roles/{role}", "delete"),
    ("/v1/tenants/{tenant}/grants", "post"),
    ("/v1/tenants/{tenant}/grants", "get"),
    ("/v1/tenants/{tenant}/grants/{id}", "delete"),
    ("/v1/tenants/{tenant}/assignments", "post"),
    ("/v1/tenants/{tenant}/assignments", "get"),
    ("/v1/tenants/{tenant}/assignments/{id}", "delete"),
    (
        "/v1/tenants/{tenant}/groups/{group}/members/{type}/{id}",
        "put",
    ),
    (
        "/v1/tenants/{tenant}/groups/{group}/members/{type}/{id}",
        "delete",
    ),
    ("/v1/tenants/{tenant}/check", "post"),
    ("/v1/tenants/{tenant}/check/batch", "post"),
    ("/v1/tenants/{tenant}/principals/{id}/permissions", "get"),
    (
        "/v1/tenants/{tenant}/resources/{type}/{id}/principals",
        "get",
    ),
    ("/v1/permissions/me", "get"),
    ("/v1/tenants/{tenant}/keys", "post"),
    ("/v1/tenants/{tenant}/keys", "get"),
    ("/v1/tenants/{tenant}/keys/{id}", "get"),
    ("/v1/tenants/{tenant}/keys/{id}", "patch"),
    ("/v1/tenants/{tenant}/keys/{id}", "delete"),
    ("/v1/tenants/{tenant}/keys/{id}/rotate", "post"),
    ("/v1/keys/verify", "post"),
    ("/v1/tenants/{tenant}/usage", "post"),
    ("/v1/tenants/{tenant}/usage", "get"),
    ("/v1/tenants/{tenant}/usage/batch", "post"),
    ("/v1/tenants/{tenant}/quotas", "get"),
    ("/v1/tenants/{tenant}/quotas/{meter}", "put"),
    ("/v1/tenants/{tenant}/quotas/{meter}", "delete"),
    ("/v1/tenants/{tenant}/meters/{meter}", "put"),
    ("/v1/tenants/{tenant}/budget", "get"),
    ("/v1/tenants/{tenant}/budget", "put"),
    ("/v1/tenants/{tenant}/audit", "get"),
    ("/v1/ledger/checkpoint", "get"),
    ("/v1/ledger/checkpoint/key", "get"),
    ("/v1/ledger/proof/inclusion", "get"),
    ("/v1/ledger/proof/consistency", "get"),
];

impl App {
    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    async fn document(&self) -> Value {
        let r = self.get("/openapi.json").await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/json");
        r.json().await.unwrap()
    }
}

#[tokio::test]
async fn the_document_is_openapi_3_with_info_from_the_crate() {
    let doc = spawn_app().await.document().await;
    let version = doc["openapi"].as_str().unwrap();
    assert!(version.starts_with("3."), "openapi is {version}");
    assert_eq!(doc["info"]["title"], "Custodian");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let description = doc["info"]["description"].as_str().unwrap();
    for fallback in ["404", "not_found", "405", "method_not_allowed"] {
        assert!(
            description.contains(fallback),
            "no {fallback} in {description}"
        );
    }
}

#[tokio::test]
async fn every_served_route_is_in_the_document() {
    let doc = spawn_app().await.document().await;
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in SERVED {
        assert!(
            paths.get(*path).and_then(|p| p.get(*method)).is_some(),
            "{} {path} is served but not documented",
            method.to_uppercase()
        );
    }
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        documented,
        SERVED.len(),
        "the document lists an operation that SERVED lacks: {paths:#?}"
    );
}

#[tokio::test]
async fn documented_routes_answer_as_documented() {
    // Every served route, called as an anonymous client would (path parameters filled in, an
    // empty JSON object as the body), answers with a status its operation documents.
    let app = spawn_app().await;
    let doc = app.document().await;
    for (path, method) in SERVED {
        let concrete: String = path
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "acme"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let url = format!("{}{concrete}", app.base);
        let request = match *method {
            "get" => app.client.get(&url),
            "post" => app.client.post(&url).json(&serde_json::json!({})),
            "patch" => app.client.patch(&url).json(&serde_json::json!({})),
            "put" => app.client.put(&url).json(&serde_json::json!({})),
            "delete" => app.client.delete(&url),
            other => panic!("no request for method {other}"),
        };
        let status = request.send().await.unwrap().status().as_u16().to_string();
        let documented = doc["paths"][*path][*method]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} has no documented responses"));
        assert!(
            documented.contains_key(&status),
            "{method} {path} answered {status}, which its operation does not document ({:?})",
            documented.keys().collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn readyz_documents_its_503_as_a_problem_document() {
    let doc = spawn_app().await.document().await;
    let unavailable = &doc["paths"]["/readyz"]["get"]["responses"]["503"];
    assert_eq!(
        unavailable["content"]["application/problem+json"]["schema"]["$ref"],
        "#/components/schemas/ProblemDocument"
    );
    assert!(unavailable["headers"].get("Retry-After").is_some());
    let ok = &doc["paths"]["/readyz"]["get"]["responses"]["200"];
    assert_eq!(
        ok["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Readiness"
    );

    let problem = &doc["components"]["schemas"]["ProblemDocument"];
    let mut properties: Vec<&str> = problem["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    properties.sort_unstable();
    assert_eq!(
        properties,
        [
            "code", "detail", "known", "missing", "status", "title", "type"
        ]
    );
}

#[tokio::test]
async fn docs_is_an_html_page_that_loads_the_document() {
    let app = spawn_app().await;
    let r = app.get("/docs").await;
    assert_eq!(r.status(), 200);
    let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = r.text().await.unwrap();
    assert!(page.contains(r#"data-url="openapi.json""#), "{page}");
    assert!(
        page.contains("integrity=\"sha384-"),
        "the renderer is pinned: {page}"
    );
}

#[tokio::test]
async fn every_read_under_v1_documents_read_your_writes_once() {
    let doc = spawn_app().await.document().await;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let Some(get) = item.get("get").filter(|_| path.starts_with("/v1/")) else {
            continue;
        };
        let headers: Vec<&Value> = get["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                p["in"] == "header"
                    && p["name"]
                        .as_str()
                        .is_some_and(|n| n.eq_ignore_ascii_case("custodian-min-position"))
            })
            .collect();
        assert_eq!(headers.len(), 1, "GET {path}: {headers:?}");
        assert_eq!(headers[0]["schema"]["maximum"], i64::MAX, "GET {path}");
        for status in ["400", "503"] {
            assert!(
                get["responses"].get(status).is_some(),
                "GET {path} does not document {status}"
            );
        }
    }
}
