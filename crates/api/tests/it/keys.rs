//! API keys over HTTP: the lifecycle under `/v1/tenants/{tenant}/keys`, `POST /v1/keys/verify`,
//! and `Authorization: Bearer cst_...` limited to the key's scopes.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Admined, create_tenant, create_user, expect, problem, send, setup, token};

const PASSWORD: &str = "a long enough password";

/// `acme` with an administrator, Ada, logged in.
async fn world() -> (Admined, String, String) {
    let s = setup().await;
    create_tenant(&s.app, &s.root, "acme").await;
    let ada = create_user(
        &s.app,
        &s.root,
        "acme",
        json!({"email": "ada@acme.test", "name": "Ada", "password": PASSWORD, "roles": ["admin"]}),
    )
    .await;
    let ada_id = ada["user_id"].as_str().unwrap().to_owned();
    let ada = token(&s.app, "acme", "ada@acme.test", PASSWORD).await;
    (s, ada, ada_id)
}

async fn issue(s: &Admined, as_token: &str, body: Value) -> Value {
    let r = send(
        &s.app,
        Method::POST,
        "/v1/tenants/acme/keys",
        as_token,
        Some(body),
    )
    .await;
    assert_eq!(
        r.headers()
            .get("cache-control")
            .map(|v| v.to_str().unwrap()),
        Some("no-store"),
        "the only answer with the full key is never cached"
    );
    expect(r, 201).await
}

async fn verify(s: &Admined, as_token: &str, body: Value) -> Value {
    let r = send(
        &s.app,
        Method::POST,
        "/v1/keys/verify",
        as_token,
        Some(body),
    )
    .await;
    expect(r, 200).await
}

#[tokio::test]
async fn keys_are_issued_listed_rotated_and_revoked_over_http() {
    let (s, ada, ada_id) = world().await;
    let made = issue(
        &s,
        &ada,
        json!({"name": "ci", "scopes": ["key:read"], "usage_limit": {"remaining": 10}}),
    )
    .await;
    let key = made["key"].as_str().unwrap().to_owned();
    let id = made["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("cst_"));

    let page = expect(
        send(&s.app, Method::GET, "/v1/tenants/acme/keys", &ada, None).await,
        200,
    )
    .await;
    assert!(
        !page.to_string().contains(&key),
        "a listing never holds the key"
    );
    assert_eq!(page["items"][0]["id"], id.as_str());
    assert_eq!(page["items"][0]["owner"], ada_id.as_str());
    assert_eq!(page["items"][0]["status"], "active");
    assert_eq!(page["items"][0]["remaining"], 10);

    let one_path = format!("/v1/tenants/acme/keys/{id}");
    let changed = send(
        &s.app,
        Method::PATCH,
        &one_path,
        &ada,
        Some(json!({"name": "ci 2", "ratelimit": {"limit": 5, "window_seconds": 1}})),
    )
    .await;
    expect(changed, 200).await;
    let one = expect(send(&s.app, Method::GET, &one_path, &ada, None).await, 200).await;
    assert_eq!(one["name"], "ci 2");
    assert_eq!(one["ratelimit"], json!({"limit": 5, "window_seconds": 1}));

    let rotated = send(
        &s.app,
        Method::POST,
        &format!("{one_path}/rotate"),
        &ada,
        Some(json!({"grace_seconds": 3600})),
    )
    .await;
    assert_eq!(rotated.headers()["cache-control"], "no-store");
    let rotated = expect(rotated, 200).await;
    let new_key = rotated["key"].as_str().unwrap().to_owned();
    assert_eq!(rotated["id"], id.as_str());
    for k in [&key, &new_key] {
        let v = verify(&s, &ada, json!({"key": k})).await;
        assert_eq!(v["code"], "VALID", "{v}");
    }

    expect(
        send(&s.app, Method::DELETE, &one_path, &ada, None).await,
        200,
    )
    .await;
    let v = verify(&s, &ada, json!({"key": new_key})).await;
    assert_eq!(
        v,
        json!({
            "valid": false, "code": "REVOKED", "key_id": id, "tenant": "acme", "owner": ada_id,
            "scopes": ["key:read"], "remaining": 8, "ratelimit": null
        })
    );
    let revoked = expect(
        send(
            &s.app,
            Method::GET,
            "/v1/tenants/acme/keys?status=revoked",
            &ada,
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(revoked["items"].as_array().unwrap().len(), 1);
    let again = send(
        &s.app,
        Method::POST,
        &format!("{one_path}/rotate"),
        &ada,
        Some(json!({})),
    )
    .await;
    assert_eq!(problem(again).await.0, 409);
}

#[tokio::test]
async fn verify_answers_200_with_a_code_for_every_key() {
    let (s, ada, _) = world().await;
    let v = verify(&s, &ada, json!({"key": "not a key"})).await;
    assert_eq!(
        v,
        json!({
            "valid": false, "code": "MALFORMED", "key_id": null, "tenant": null, "owner": null,
            "scopes": null, "remaining": null, "ratelimit": null
        })
    );
    let made = issue(
        &s,
        &ada,
        json!({"name": "fenced", "scopes": ["key:read"], "ip_allowlist": ["10.0.0.0/8"]}),
    )
    .await;
    let key = made["key"].as_str().unwrap();
    // The test client calls from 127.0.0.1: outside the allowlist, unless `ip` says otherwise.
    let v = verify(&s, &ada, json!({"key": key})).await;
    assert_eq!(v["code"], "IP_NOT_ALLOWED");
    let v = verify(&s, &ada, json!({"key": key, "ip": "10.2.3.4"})).await;
    assert_eq!(v["code"], "VALID");
    let v = verify(
        &s,
        &ada,
        json!({"key": key, "ip": "10.2.3.4", "permission": "user:read"}),
    )
    .await;
    assert_eq!(v["code"], "FORBIDDEN");
    let bad = send(
        &s.app,
        Method::POST,
        "/v1/keys/verify",
        &ada,
        Some(json!({"key": key, "permission": "not a permission"})),
    )
    .await;
    assert_eq!(problem(bad).await.0, 422);
    let bad = send(
        &s.app,
        Method::POST,
        "/v1/keys/verify",
        &ada,
        Some(json!({"key": key, "cost": -1})),
    )
    .await;
    assert_eq!(problem(bad).await.0, 422);
}

#[tokio::test]
async fn a_bearer_key_acts_as_its_owner_within_its_scopes_only() {
    let (s, ada, _) = world().await;
    let made = issue(&s, &ada, json!({"name": "reader", "scopes": ["key:read"]})).await;
    let key = made["key"].as_str().unwrap().to_owned();
    let listed = send(&s.app, Method::GET, "/v1/tenants/acme/keys", &key, None).await;
    expect(listed, 200).await;
    // Its owner may read users; the key may not.
    let users = send(&s.app, Method::GET, "/v1/tenants/acme/users", &key, None).await;
    let (status, body) = problem(users).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    let logout = send(&s.app, Method::POST, "/v1/auth/logout", &key, None).await;
    assert_eq!(problem(logout).await.0, 403);
    // What it may do is its owner's permissions narrowed to its scopes.
    let mine = send(&s.app, Method::GET, "/v1/permissions/me", &key, None).await;
    let mine = expect(mine, 200).await;
    assert_eq!(mine["principal"], made["id"]);
    assert_eq!(mine["scopes"], json!(["key:read"]));
    assert_eq!(mine["platform_admin"], false);
    let listed = mine["permissions"].as_array().unwrap();
    assert!(!listed.is_empty(), "{mine}");
    for p in listed {
        let (t, a) = p["permission"].as_str().unwrap().split_once(':').unwrap();
        assert!(
            (t == "key" || t == "*") && (a == "read" || a == "*"),
            "{p} is not within key:read"
        );
    }
    let owners = send(&s.app, Method::GET, "/v1/permissions/me", &ada, None).await;
    let owners = expect(owners, 200).await;
    assert!(owners["permissions"].as_array().unwrap().len() > listed.len());
    assert!(owners.get("scopes").is_none());
    // A key that is not valid is a plain 401.
    let mut typo = key.clone();
    typo.replace_range(39..40, if key.ends_with('x') { "y" } else { "x" });
    for bad in [typo.as_str(), "cst_nothing"] {
        let r = send(&s.app, Method::GET, "/v1/tenants/acme/keys", bad, None).await;
        let (status, body) = problem(r).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("unauthenticated"))
        );
        assert_eq!(body["detail"], "the API key is not valid");
    }
}

#[tokio::test]
async fn scopes_the_creator_lacks_are_named_in_the_refusal() {
    let (s, ada, _) = world().await;
    create_user(
        &s.app,
        &ada,
        "acme",
        json!({"email": "dev@acme.test", "name": "Dev", "password": PASSWORD, "roles": ["developer"]}),
    )
    .await;
    let dev = token(&s.app, "acme", "dev@acme.test", PASSWORD).await;
    let r = send(
        &s.app,
        Method::POST,
        "/v1/tenants/acme/keys",
        &dev,
        Some(json!({"name": "x", "scopes": ["key:read", "user:delete", "grant:create"]})),
    )
    .await;
    let (status, body) = problem(r).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    assert_eq!(body["missing"], json!(["user:delete", "grant:create"]));
    let r = send(
        &s.app,
        Method::POST,
        "/v1/tenants/acme/keys",
        &dev,
        Some(json!({"name": "x", "scopes": ["rocket:launch"]})),
    )
    .await;
    let (status, body) = problem(r).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("unknown_permission"))
    );
}
