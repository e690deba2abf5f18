//! The audit trail over HTTP: `GET /v1/tenants/{tenant}/audit`, its statuses and problems.

use reqwest::Method;
use serde_json::json;

use crate::support::{create_tenant, create_user, expect, problem, send, setup, token};

const PASSWORD: &str = "a long enough password";

#[tokio::test]
async fn the_trail_is_served_with_its_position_and_refused_as_problems() {
    let s = setup().await;
    create_tenant(&s.app, &s.root, "acme").await;
    create_tenant(&s.app, &s.root, "globex").await;
    let ada = create_user(
        &s.app,
        &s.root,
        "acme",
        json!({"email": "ada@acme.test", "name": "Ada", "password": PASSWORD}),
    )
    .await;
    let ada_id = ada["user_id"].as_str().unwrap().to_owned();
    create_user(
        &s.app,
        &s.root,
        "globex",
        json!({"email": "bob@globex.test", "name": "Bob", "password": PASSWORD, "roles": ["admin"]}),
    )
    .await;

    // The platform administrator reads acme's trail about Ada, decrypted.
    let path = format!("/v1/tenants/acme/audit?principal={ada_id}&type=user.&limit=1");
    let r = send(&s.app, Method::GET, &path, &s.root, None).await;
    let position = r.headers()["custodian-position"]
        .to_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    let page = expect(r, 200).await;
    assert_eq!(page["position"], position);
    let entry = &page["items"][0];
    assert_eq!(entry["type"], "user.created");
    assert_eq!(entry["data"]["email"], "ada@acme.test");
    assert_eq!(entry["erased"], false);
    assert_eq!(entry["hash"].as_str().unwrap().len(), 64);
    for field in [
        "position",
        "id",
        "prev_hash",
        "stream",
        "schema",
        "occurred_at",
        "actor",
        "correlation_id",
        "causation_id",
    ] {
        assert!(entry.get(field).is_some(), "{field} missing from {entry}");
    }
    let cursor = page["next_cursor"].as_str().expect("a second page");
    let next = send(
        &s.app,
        Method::GET,
        &format!("{path}&cursor={cursor}"),
        &s.root,
        None,
    )
    .await;
    let next = expect(next, 200).await;
    assert_eq!(next["items"][0]["type"], "user.password_set");
    assert!(
        next["items"][0]["position"].as_u64() > entry["position"].as_u64(),
        "{next}"
    );

    // Ada holds no audit:read: 403. Bob of globex: acme does not exist for him.
    let ada = token(&s.app, "acme", "ada@acme.test", PASSWORD).await;
    let (status, body) =
        problem(send(&s.app, Method::GET, "/v1/tenants/acme/audit", &ada, None).await).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let bob = token(&s.app, "globex", "bob@globex.test", PASSWORD).await;
    let (status, body) =
        problem(send(&s.app, Method::GET, "/v1/tenants/acme/audit", &bob, None).await).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let own = send(&s.app, Method::GET, "/v1/tenants/globex/audit", &bob, None).await;
    expect(own, 200).await;

    // Bad filters: 422 naming the field.
    for (query, field) in [
        ("type=Nope", "type"),
        ("from=yesterday", "from"),
        ("resource=project", "resource"),
        ("cursor=abc", "cursor"),
        ("limit=500", "limit"),
    ] {
        let r = send(
            &s.app,
            Method::GET,
            &format!("/v1/tenants/acme/audit?{query}"),
            &s.root,
            None,
        )
        .await;
        let (status, body) = problem(r).await;
        assert_eq!(status, 422, "{query}: {body}");
        assert_eq!(body["code"], "validation_failed");
        assert!(body["detail"].as_str().unwrap().contains(field), "{body}");
    }

    // No token: 401.
    let r = s
        .app
        .client
        .get(s.app.url("/v1/tenants/acme/audit"))
        .send()
        .await
        .unwrap();
    let (status, _) = problem(r).await;
    assert_eq!(status, 401);
}
