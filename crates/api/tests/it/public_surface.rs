//! What a stranger can learn or cost the server without credentials: readiness says only ready,
//! metrics and the log's head need an operator, `Custodian-Min-Position` is honoured only after
//! authentication, and every answer carries the headers that keep browsers and caches from
//! mishandling it.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{problem, root_token, spawn_app_with};

/// The scrape token of these tests' servers.
const SCRAPE_TOKEN: &str = "scrape-token-of-the-public-surface-tests";

/// A server with a platform administrator and a scrape token, whose reads wait at most
/// `read_wait`; answers it and the administrator's access token.
async fn server(read_wait: Duration) -> (crate::support::App, String) {
    let ledger = custodian_testkit::Ledger::sqlite();
    let location = ledger.location.clone();
    let mut identity = custodian_app::SecurityOptions::new(
        std::env::temp_dir().join(format!("custodian-test-{}.key", uuid::Uuid::now_v7())),
    );
    identity.metrics_token = Some(SCRAPE_TOKEN.to_owned());
    let app = spawn_app_with(location, ledger.into_dir(), None, read_wait, identity).await;
    let root = root_token(&app).await;
    (app, root)
}

#[tokio::test]
async fn anonymous_readyz_and_metrics_reveal_no_position_or_hash() {
    let (app, root) = server(Duration::from_secs(2)).await;
    // A failed login appends: the head is exactly what a stranger must not be able to watch.
    let r = crate::support::login(&app, "_system", "nobody@platform.test", "wrong password").await;
    assert_eq!(r.status(), 401);
    let head = app.store.head().await.unwrap();
    assert!(
        head.position > 1,
        "the bootstrap and the failed login wrote events"
    );
    let hash = head.hash.to_hex();

    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"status": "ready"}),
        "readiness says ready and nothing more"
    );

    for credential in [None, Some("not-a-credential")] {
        for path in ["/metrics", "/v1/admin/readiness", "/v1/admin/projections"] {
            let mut request = app.client.get(app.url(path));
            if let Some(c) = credential {
                request = request.bearer_auth(c);
            }
            let r = request.send().await.unwrap();
            assert!(
                r.headers().get("custodian-position").is_none(),
                "{path} as {credential:?} says where the views stand"
            );
            let text = format!("{:?} {}", r.headers().clone(), r.text().await.unwrap());
            assert!(text.contains("401"), "{path} as {credential:?}: {text}");
            assert!(
                !text.contains(&hash),
                "{path} as {credential:?} shows the head: {text}"
            );
            assert!(
                !text.contains("head") && !text.contains("position\":"),
                "{path} as {credential:?} shows where the log stands: {text}"
            );
        }
    }

    // No anonymous read under /v1 says where the views stand, whatever it answers.
    for path in [
        "/v1/ledger/checkpoint/key",
        "/v1/nothing",
        "/v1/tenants/acme/users",
    ] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert!(
            r.headers().get("custodian-position").is_none(),
            "{path} answered {} with {:?}",
            r.status(),
            r.headers()
        );
    }

    // Operators see where the log and the indexes stand, with the scrape token or as an
    // administrator.
    for operator in [SCRAPE_TOKEN, root.as_str()] {
        let r = app
            .client
            .get(app.url("/v1/admin/readiness"))
            .bearer_auth(operator)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["status"], "ready", "{body}");
        assert!(
            body["head"]["position"].as_u64().unwrap() >= head.position,
            "{body}"
        );
        let names: Vec<&str> = body["indexes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["authentication", "authorization", "keys"], "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_min_position_from_a_stranger_is_401_without_waiting() {
    // Reads wait at most 100 ms: a request that waited for a position no log will reach answers
    // 503, so a 401 for it says the server refused before waiting.
    let (app, root) = server(Duration::from_millis(100)).await;
    let far = i64::MAX.to_string();
    let requests = [
        (Method::GET, "/v1/admin/projections"),
        (Method::GET, "/v1/tenants/acme/users"),
        (Method::GET, "/v1/ledger/checkpoint/key"),
        (Method::POST, "/v1/tenants/acme/check"),
    ];
    for (method, path) in &requests {
        for credential in [None, Some("not-a-credential"), Some("cst_notakey")] {
            let mut request = app
                .client
                .request(method.clone(), app.url(path))
                .header("Custodian-Min-Position", &far);
            if let Some(c) = credential {
                request = request.bearer_auth(c);
            }
            if *method == Method::POST {
                request = request.json(&json!({}));
            }
            let (status, body) = problem(request.send().await.unwrap()).await;
            assert_eq!(
                (status, body["code"].as_str()),
                (401, Some("unauthenticated")),
                "{method} {path} as {credential:?}: {body}"
            );
        }
    }
    // An authenticated caller, the administrator or an operator's tool, still waits, and hears
    // 503 when the views do not get there in time.
    for operator in [root.as_str(), SCRAPE_TOKEN] {
        let r = app
            .client
            .get(app.url("/v1/admin/projections"))
            .bearer_auth(operator)
            .header("Custodian-Min-Position", &far)
            .send()
            .await
            .unwrap();
        let (status, body) = problem(r).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (503, Some("unavailable")),
            "{body}"
        );
    }
}

#[tokio::test]
async fn every_answer_says_nosniff_and_secrets_are_never_cached() {
    let (app, root) = server(Duration::from_secs(2)).await;
    let login = crate::support::login(
        &app,
        "_system",
        crate::support::ROOT_EMAIL,
        crate::support::ROOT_PASSWORD,
    )
    .await;
    assert_eq!(login.status(), 200);
    let answers = [
        ("POST /v1/auth/login", login),
        (
            "GET /v1/auth/me",
            app.client
                .get(app.url("/v1/auth/me"))
                .bearer_auth(&root)
                .send()
                .await
                .unwrap(),
        ),
        (
            "POST /v1/auth/refresh (refused)",
            app.client
                .post(app.url("/v1/auth/refresh"))
                .json(&json!({"refresh_token": "nonsense"}))
                .send()
                .await
                .unwrap(),
        ),
        (
            "GET /v1/nothing (fallback)",
            app.client.get(app.url("/v1/nothing")).send().await.unwrap(),
        ),
    ];
    for (what, r) in &answers {
        assert_eq!(r.headers()["cache-control"], "no-store", "{what}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{what}");
    }
    for path in [
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/.well-known/jwks.json",
    ] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{path}");
    }
    // The public keys may be cached as their route says.
    let r = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["cache-control"], "public, max-age=60");
}

#[tokio::test]
async fn the_docs_page_runs_only_its_pinned_renderer_and_cannot_be_framed() {
    let (app, _) = server(Duration::from_secs(2)).await;
    let r = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let policy = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let directive = |name: &str| -> Vec<String> {
        policy
            .split(';')
            .map(str::trim)
            .find_map(|d| d.strip_prefix(name).filter(|rest| rest.starts_with(' ')))
            .unwrap_or_else(|| panic!("no {name} in {policy}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(directive("default-src"), ["'none'"], "{policy}");
    assert_eq!(directive("frame-ancestors"), ["'none'"], "{policy}");
    assert_eq!(directive("connect-src"), ["'self'"], "{policy}");
    // Every script the page loads is allowed, and nothing else: no inline code, no other host.
    let page = r.text().await.unwrap();
    let scripts = directive("script-src");
    let sources: Vec<&str> = page
        .split("<script")
        .skip(1)
        .filter_map(|tag| tag.split_once(" src=\"").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_once('"').map(|(src, _)| src))
        .collect();
    assert_eq!(sources.len(), 1, "{page}");
    for src in sources {
        assert!(
            scripts
                .iter()
                .any(|allowed| src.starts_with(allowed.as_str())),
            "{src} is not allowed by {scripts:?}"
        );
    }
    assert!(
        scripts
            .iter()
            .all(|s| s.starts_with("https://cdn.jsdelivr.net/npm/@scalar/api-reference@")),
        "{scripts:?}"
    );
}
