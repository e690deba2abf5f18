//! Health, readiness and the problem+json error shape.

use std::sync::Arc;

use custodian_api::server::{AppState, router};
use custodian_store::{EventStore, StoreOptions};

struct App {
    base: String,
    client: reqwest::Client,
    _dir: Option<tempfile::TempDir>,
}

async fn spawn_app_on(store: Arc<dyn EventStore>, dir: Option<tempfile::TempDir>) -> App {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router(AppState { store }))
            .await
            .unwrap();
    });
    App {
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        _dir: dir,
    }
}

async fn spawn_app() -> App {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("custodian.db");
    let store = custodian_store::open(path.to_str().unwrap(), StoreOptions::default())
        .await
        .unwrap();
    spawn_app_on(store, Some(dir)).await
}

async fn problem(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn healthz_and_readyz_answer_when_the_store_is_up() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["head"]["position"], 0);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problem_documents() {
    let app = spawn_app().await;
    let (status, body) = problem(
        app.client
            .get(format!("{}/v1/nothing", app.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    assert!(body["detail"].as_str().unwrap().contains("/v1/nothing"));
    let (status, body) = problem(
        app.client
            .post(format!("{}/healthz", app.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
}

#[tokio::test]
async fn readyz_is_503_with_retry_after_when_the_database_is_gone() {
    let Some(url) = custodian_store::testing::fresh_postgres_database().await else {
        return;
    };
    let store = custodian_store::open(&url, StoreOptions::default())
        .await
        .unwrap();
    let app = spawn_app_on(store, None).await;
    let r = app
        .client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let admin = custodian_store::testing::postgres_admin_url();
    let name = url.rsplit('/').next().unwrap();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
        .await
        .unwrap();
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .unwrap();

    let r = app
        .client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("retry-after"));
    let (status, body) = problem(r).await;
    assert_eq!((status, body["code"].as_str()), (503, Some("unavailable")));
    assert!(
        !body.to_string().contains(name),
        "no internals in the body: {body}"
    );
}
