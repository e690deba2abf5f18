//! The OpenAPI document at `/openapi.json` and the reference page at `/docs`.

use std::collections::BTreeSet;

use crate::support::{App, spawn_app};
use serde_json::Value;

/// The methods a route may serve.
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Every path the router itself serves, read from its debug form (axum has no other way to list
/// them): each route's path appears there as `RouteId(n): "/path"`.
fn router_paths(app: &App) -> BTreeSet<String> {
    let router = custodian_api::server::router(app.state.clone());
    let debug = format!("{router:?}");
    // The routes proper come first; the fallback router's catch-all paths after them.
    let debug = debug
        .split("fallback_router")
        .next()
        .expect("split yields at least one part");
    let mut paths = BTreeSet::new();
    for (_, rest) in debug
        .split("RouteId(")
        .skip(1)
        .filter_map(|r| r.split_once("): \""))
    {
        if let Some((path, _)) = rest.split_once('"') {
            paths.insert(path.to_owned());
        }
    }
    assert!(
        paths.contains("/healthz") && paths.len() > 10,
        "cannot read the routes from the router's debug form (did axum change it?): {paths:?}"
    );
    paths
}

/// `path` with every parameter filled in.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "acme"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Every `(path, method)` the router serves: every path it has, with every method that is not
/// answered by the method-not-allowed fallback.
pub(crate) async fn served(app: &App) -> Vec<(String, String)> {
    let mut served = Vec::new();
    for path in router_paths(app) {
        for method in METHODS {
            let url = format!("{}{}", app.base, concrete(&path));
            let request = app
                .client
                .request(method.to_uppercase().parse().unwrap(), &url)
                .json(&serde_json::json!({}));
            let r = request.send().await.unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            if !(status == 405 && body.contains("method_not_allowed")) {
                served.push((path.clone(), method.to_owned()));
            }
        }
    }
    served
}

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
async fn the_document_lists_exactly_what_the_router_serves() {
    let app = spawn_app().await;
    let doc = app.document().await;
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|m| METHODS.contains(&m.as_str()))
                .map(move |m| (path.clone(), m.clone()))
        })
        .collect();
    let served: BTreeSet<(String, String)> = served(&app).await.into_iter().collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "served but not documented: {undocumented:?}"
    );
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        unserved.is_empty(),
        "documented but not served: {unserved:?}"
    );
}

#[tokio::test]
async fn documented_routes_answer_as_documented() {
    // Every served route, called as an anonymous client would (path parameters filled in, an
    // empty JSON object as the body), answers with a status its operation documents.
    let app = spawn_app().await;
    let doc = app.document().await;
    for (path, method) in served(&app).await {
        let url = format!("{}{}", app.base, concrete(&path));
        let request = match method.as_str() {
            "get" => app.client.get(&url),
            "post" => app.client.post(&url).json(&serde_json::json!({})),
            "patch" => app.client.patch(&url).json(&serde_json::json!({})),
            "put" => app.client.put(&url).json(&serde_json::json!({})),
            "delete" => app.client.delete(&url),
            other => panic!("no request for method {other}"),
        };
        let status = request.send().await.unwrap().status().as_u16().to_string();
        let documented = doc["paths"][&path][&method]["responses"]
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
        for status in ["400", "401", "503"] {
            assert!(
                get["responses"].get(status).is_some(),
                "GET {path} does not document {status}"
            );
        }
    }
}
