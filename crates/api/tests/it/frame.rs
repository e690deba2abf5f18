//! Health, readiness and the problem+json error shape.

use std::time::Duration;

use crate::support::{problem, spawn_app, spawn_app_on};

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
    assert_eq!(body, serde_json::json!({"status": "ready"}));
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
    let Some(url) = custodian_testkit::postgres::fresh_database().await else {
        return;
    };
    let app = spawn_app_on(url.clone(), None, None, Duration::from_secs(2)).await;
    let r = app
        .client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let admin = custodian_testkit::postgres::admin_url();
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
