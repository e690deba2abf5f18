//! Authorization over HTTP: every route refuses a principal without its permission (403 in the
//! tenant, 404 from another tenant), nobody gives away what they do not hold, and the decision
//! point answers now and as the ledger stood in the past, with the chain of events that decided.

use custodian_domain::Timestamp;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{
    Admined, App, create_tenant, create_user, expect, problem, send, setup, token,
};

const PASSWORD: &str = "correct horse battery";

/// Creates a user of `tenant` with a password and `roles` (assigned on the whole tenant), logs them
/// in, and answers their id and access token.
async fn member(
    app: &App,
    by: &str,
    tenant: &str,
    email: &str,
    roles: &[&str],
) -> (String, String) {
    let user = create_user(
        app,
        by,
        tenant,
        json!({"email": email, "name": email, "password": PASSWORD, "roles": roles}),
    )
    .await;
    let id = user["user_id"].as_str().unwrap().to_owned();
    (id, token(app, tenant, email, PASSWORD).await)
}

/// Creates a user of `tenant` who never logs in; answers their id.
async fn someone(app: &App, by: &str, tenant: &str, email: &str) -> String {
    let user = create_user(app, by, tenant, json!({"email": email, "name": email})).await;
    user["user_id"].as_str().unwrap().to_owned()
}

/// Expects a problem document with `status` and `code`; answers it.
async fn refused_with(response: reqwest::Response, status: u16, code: &str) -> Value {
    let (got, body) = problem(response).await;
    assert_eq!((got, body["code"].as_str()), (status, Some(code)), "{body}");
    body
}

async fn post(app: &App, token: &str, path: &str, body: Value) -> reqwest::Response {
    send(app, Method::POST, path, token, Some(body)).await
}

async fn get(app: &App, token: &str, path: &str) -> Value {
    expect(send(app, Method::GET, path, token, None).await, 200).await
}

/// Asks the decision point of `tenant`; answers the decision.
async fn check(app: &App, token: &str, tenant: &str, body: Value) -> Value {
    expect(
        post(app, token, &format!("/v1/tenants/{tenant}/check"), body).await,
        200,
    )
    .await
}

fn id_of(made: &Value) -> String {
    made["id"].as_str().unwrap().to_owned()
}

fn position_of(made: &Value) -> u64 {
    made["position"].as_u64().unwrap()
}

/// `matched` as `(kind, id, position)` triples.
fn chain(decision: &Value) -> Vec<(String, String, u64)> {
    decision["matched"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["kind"].as_str().unwrap().to_owned(),
                m["id"].as_str().unwrap().to_owned(),
                m["position"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn link(kind: &str, id: &str, position: u64) -> (String, String, u64) {
    (kind.to_owned(), id.to_owned(), position)
}

/// The instant one microsecond before `t`.
fn just_before(t: &Value) -> String {
    let t = Timestamp::parse(t.as_str().unwrap()).unwrap();
    Timestamp::from_datetime(t.as_datetime() - time::Duration::microseconds(1)).to_string()
}

/// One route under `/v1/tenants/{tenant}`: its method, its path as the router declares it, the
/// path with every parameter filled in, and a well-formed body.
pub(crate) type Route = (Method, &'static str, String, Option<Value>);

/// Every route under `/v1/tenants/{tenant}`, on objects of `tenant` that exist: the user `user`,
/// the custom role `auditor`, the grant `grant`, the assignment `assignment`, and the resource
/// `project/p1` in the group `staging`.
pub(crate) fn tenant_routes(
    tenant: &str,
    user: &str,
    grant: &str,
    assignment: &str,
    key: &str,
) -> Vec<Route> {
    let t = format!("/v1/tenants/{tenant}");
    let a_check =
        json!({"principal": user, "permission": "user:read", "resource": format!("user/{user}")});
    let a_record =
        json!({"meter": "api_calls", "quantity": 1, "subject": user, "idempotency_key": "k-1"});
    vec![
        (Method::GET, "/v1/tenants/{tenant}", t.clone(), None),
        (
            Method::PATCH,
            "/v1/tenants/{tenant}",
            t.clone(),
            Some(json!({"name": "Renamed"})),
        ),
        (
            Method::POST,
            "/v1/tenants/{tenant}/suspend",
            format!("{t}/suspend"),
            Some(json!({"reason": "unpaid"})),
        ),
        (
            Method::POST,
            "/v1/tenants/{tenant}/reactivate",
            format!("{t}/reactivate"),
            None,
        ),
        (
            Method::POST,
            "/v1/tenants/{tenant}/users",
            format!("{t}/users"),
            Some(json!({"email": "new@example.test", "name": "New"})),
        ),
        (
            Method::GET,
            "/v1/tenants/{tenant}/users",
            format!("{t}/users"),
            None,
        ),
        (
            Method::POST,
            "/v1/tenants/{tenant}/invitations",
            format!("{t}/invitations"),
            Some(json!({"email": "invited@example.test", "name": "Invited"})),
        ),
        (
            Method::GET,
            "/v1/tenants/{tenant}/users/{user_id}",
            format!("{t}/users/{user}"),
            None,
        ),
        (
            Method::PATCH,
            "/v1/tenants/{tenant}/users/{user_id}",
            format!("{t}/users/{user}"),
            Some(json!({"name": "Renamed"})),
        ),
        (
            Method::DELETE,
            "/v1/tenants/{tenant}/users/{user_id}",
            format!("{t}/users/{user}"),
            None,
        ),
        (
            Method::POST,
            "/v1/tenants/{tenant}/users/{user_id}/disable",
            format!("{t}/users/{user}/disable"),
            Some(json!({"reason": "on leave"})),
        ),
        (
            Method::POST,
            "/v1/tenants/{tenant}/users/{user_id}/enable",
            format!("{t}/users/{user}/enable"),
            None,
        ),
        (
            Method::POST,
            "/v1/tenants/{tenant}/users/{user_id}/password-reset",
            format!("{t}/users/{user}/password-reset"),
            None,
        ),
        (
            Method::GET,
            "/v1/tenants/{tenant}/users/{user_id}/sessions",
            format!("{t}/users/{user}/sessions"),
            None,
        ),
        (
            Method::DELETE,
            "/v1/tenants/{tenant}/users/{user_id}/sessions",
            format!("{t}/users/{user}/sessions"),
            None,
        ),
        (
            Method::GET,
            "/v1/tenants/{tenant}/credentials",
            format!("{t}/credentials"),
            None,
        ),
        (
            Method::GET,
            "/v1/tenants/{tenant}/audit",
            format!("{t}/audit"),
            None,
        ),
        (
            Method::PUT,
            "/v1/tenants/{tenant}/catalog",
            format!("{t}/catalog"),
            Some(json!({"resource_types": {"project": ["read", "write", "deploy"]}})),
        ),
        (
            Method::GET,
            "/v1/tenants/{tenant}/catalog",
            format!("{t}/catalog"),
            None,
        ),
        (
            Method::POST,
            "/v1/tenants/{tenant}/roles",
            format!("{t}/roles"),
            Some(json!({"name": "reviewer", "parents": ["viewer"]})),
        ),
        (
            Method::GET,
            "/v1/tenants/{tenant}/roles",
            format!("{t}/roles"),
            None,
        ),
        (
            Method::GET,
            "/v1/tenants/{tenant}/roles/{role}",
            format!("{t}/roles/auditor"),
            None,
        ),
        (
            Method::PATCH,
            "/v1/tenants/{tenant}/roles/{role}",
            format!("{t}/roles/auditor"),
            Some(json!({"description": "Reads the audit trail"})),
        ),
        (
            Method::DELETE,
            "/v1/tenants/{tenant}/roles/{role}",
            format!("{t}/roles/auditor"),
            None,
        ),
        (
            Method::POST,
            "/v1/tenants/{tenant}/grants",
            format!("{t}/grants"),
            Some(json!({"subject": {"principal": user}, "permission": "user:read"})),
        ),
        (
            Method::GET,
            "/v1/tenants/{tenant}/grants",
            format!("{t}/grants"),
            None,
        ),
        (
            Method::DELETE,
            "/v1/tenants/{tenant}/grants/{id}",
            format!("{t}/grants/{grant}"),
            None,
        ),
        (
            Method::POST,
            "/v1/tenants/{tenant}/assignments",
            format!("{t}/assignments"),
            Some(json!({"principal": user, "role": "viewer"})),
        ),
        (
            Method::GET,
            "/v1/tenants/{tenant}/assignments",
            format!("{t}/assignments"),
            None,
        ),
        (
            Method::DELETE,
            "/v1/tenants/{tenant}/assignments/{id}",
            format!("{t}/assignments/{assignment}"),
            None,
        ),
        (
            Method::PUT,
            "/v1/tenants/{tenant}/groups/{group}/members/{type}/{id}",
            format!("{t}/groups/staging/members/project/p2"),
            None,
        ),
        (
            Method::DELETE,
            "/v1/tenants/{tenant}/groups/{group}/members/{type}/{id}",
            format!("{t}/groups/staging/members/project/p1"),
            None,
        ),
        (
            Method::POST,
            "/v1/tenants/{tenant}/check",
            format!("{t}/check"),
            Some(a_check.clone()),
        ),
        (
            Method::POST,
            "/v1/tenants/{tenant}/check/batch",
            format!("{t}/check/batch"),
            Some(json!({"checks": [a_check]})),
        ),
        (
            Method::GET,
            "/v1/tenants/{tenant}/principals/{id}/permissions",
            format!("{t}/principals/{user}/permissions"),
            None,
        ),
        (
            Method::GET,
            "/v1/tenants/{tenant}/resources/{type}/{id}/principals",
            format!("{t}/resources/project/p1/principals"),
            None,
        ),
        (
            Method::POST,
            "/v1/tenants/{tenant}/keys",
            format!("{t}/keys"),
            Some(json!({"name": "k", "scopes": ["key:read"]})),
        ),
        (
            Method::GET,
            "/v1/tenants/{tenant}/keys",
            format!("{t}/keys"),
            None,
        ),
        (
            Method::POST,
            "/v1/tenants/{tenant}/usage",
            format!("{t}/usage"),
            Some(a_record.clone()),
        ),
        (
            Method::POST,
            "/v1/tenants/{tenant}/usage/batch",
            format!("{t}/usage/batch"),
            Some(json!({"records": [a_record]})),
        ),
        (
            Method::GET,
            "/v1/tenants/{tenant}/usage",
            format!("{t}/usage?meter=api_calls"),
            None,
        ),
        (
            Method::GET,
            "/v1/tenants/{tenant}/keys/{id}",
            format!("{t}/keys/{key}"),
            None,
        ),
        (
            Method::PATCH,
            "/v1/tenants/{tenant}/keys/{id}",
            format!("{t}/keys/{key}"),
            Some(json!({"name": "renamed"})),
        ),
        (
            Method::DELETE,
            "/v1/tenants/{tenant}/keys/{id}",
            format!("{t}/keys/{key}"),
            None,
        ),
        (
            Method::POST,
            "/v1/tenants/{tenant}/keys/{id}/rotate",
            format!("{t}/keys/{key}/rotate"),
            Some(json!({"grace_seconds": 60})),
        ),
        (
            Method::GET,
            "/v1/tenants/{tenant}/quotas",
            format!("{t}/quotas"),
            None,
        ),
        (
            Method::PUT,
            "/v1/tenants/{tenant}/quotas/{meter}",
            format!("{t}/quotas/api_calls"),
            Some(json!({"limit": 10, "hard": true})),
        ),
        (
            Method::DELETE,
            "/v1/tenants/{tenant}/quotas/{meter}",
            format!("{t}/quotas/api_calls"),
            None,
        ),
        (
            Method::PUT,
            "/v1/tenants/{tenant}/meters/{meter}",
            format!("{t}/meters/api_calls"),
            Some(json!({"unit_cost": 10})),
        ),
        (
            Method::GET,
            "/v1/tenants/{tenant}/budget",
            format!("{t}/budget"),
            None,
        ),
        (
            Method::PUT,
            "/v1/tenants/{tenant}/budget",
            format!("{t}/budget"),
            Some(json!({"amount": 1000})),
        ),
    ]
}

#[tokio::test]
async fn every_tenant_route_is_403_to_a_member_without_the_permission_and_404_to_another_tenant() {
    let Admined { app, root, .. } = setup().await;
    create_tenant(&app, &root, "acme").await;
    create_tenant(&app, &root, "globex").await;
    let (_, acme_admin) = member(&app, &root, "acme", "boss@acme.test", &["admin"]).await;
    let (nobody_id, nobody) = member(&app, &root, "acme", "nobody@acme.test", &[]).await;
    let (_, globex_admin) = member(&app, &root, "globex", "boss@globex.test", &["admin"]).await;

    // Objects of acme for the routes to name, so that a refusal is not for want of them.
    let user = someone(&app, &root, "acme", "user@acme.test").await;
    let acme = "/v1/tenants/acme";
    let catalog = json!({"resource_types": {"project": ["read", "write"]}});
    let as_root = |method: Method, path: String, body: Option<Value>, status: u16| {
        let (app, root) = (&app, &root);
        async move { expect(send(app, method, &path, root, body).await, status).await }
    };
    as_root(Method::PUT, format!("{acme}/catalog"), Some(catalog), 200).await;
    let role = json!({"name": "auditor"});
    as_root(Method::POST, format!("{acme}/roles"), Some(role), 201).await;
    let grant = json!({"subject": {"principal": user}, "permission": "user:read"});
    let grant = as_root(Method::POST, format!("{acme}/grants"), Some(grant), 201).await;
    let assignment = json!({"principal": user, "role": "viewer"});
    let assignment = as_root(
        Method::POST,
        format!("{acme}/assignments"),
        Some(assignment),
        201,
    );
    let assignment = assignment.await;
    let member = format!("{acme}/groups/staging/members/project/p1");
    as_root(Method::PUT, member, None, 200).await;

    let key = as_root(
        Method::POST,
        format!("{acme}/keys"),
        Some(json!({"name": "k", "owner": user, "scopes": ["key:read"]})),
        201,
    )
    .await;
    let routes = tenant_routes(
        "acme",
        &user,
        &id_of(&grant),
        &id_of(&assignment),
        &id_of(&key),
    );
    let mut listed: Vec<(String, String)> = routes
        .iter()
        .map(|(m, template, _, _)| ((*template).to_owned(), m.as_str().to_lowercase()))
        .collect();
    let mut served: Vec<(String, String)> = crate::openapi::served(&app)
        .await
        .into_iter()
        .filter(|(path, _)| path.starts_with("/v1/tenants/{tenant}"))
        .collect();
    listed.sort();
    served.sort();
    assert_eq!(listed, served, "the table lists every route of a tenant");

    let head = app.store.head().await.unwrap();
    for (method, template, path, body) in &routes {
        let label = format!("{method} {template}");
        let r = send(&app, method.clone(), path, &nobody, body.clone()).await;
        if (method, *template) == (&Method::GET, "/v1/tenants/{tenant}") {
            // Every member reads their own tenant's record.
            assert_eq!(expect(r, 200).await["slug"], "acme", "{label}");
        } else {
            let refusal = refused_with(r, 403, "forbidden").await;
            let detail = refusal["detail"].as_str().unwrap();
            assert!(detail.contains("permission"), "{label}: {detail}");
        }
        let r = send(&app, method.clone(), path, &globex_admin, body.clone()).await;
        let refusal = refused_with(r, 404, "not_found").await;
        let detail = refusal["detail"].as_str().unwrap();
        assert!(
            !detail.contains("permission") && !detail.contains(&user),
            "{label} tells another tenant more than that nothing is there: {detail}"
        );
    }
    assert_eq!(
        app.store.head().await.unwrap(),
        head,
        "refused requests wrote nothing"
    );

    // Platform-wide routes are for platform administrators only.
    for token in [&nobody, &acme_admin, &globex_admin] {
        refused_with(
            send(&app, Method::GET, "/v1/tenants", token, None).await,
            403,
            "forbidden",
        )
        .await;
        let r = post(
            &app,
            token,
            "/v1/tenants",
            json!({"slug": "mine", "name": "Mine"}),
        )
        .await;
        refused_with(r, 403, "forbidden").await;
    }
    for path in ["/metrics", "/v1/admin/projections"] {
        let anonymous = app.client.get(app.url(path)).send().await.unwrap();
        refused_with(anonymous, 401, "unauthenticated").await;
        let r = send(&app, Method::GET, path, &acme_admin, None).await;
        refused_with(r, 403, "forbidden").await;
    }

    // A member's own permissions need nothing, and a member without a role holds none.
    let mine = get(&app, &nobody, "/v1/permissions/me").await;
    assert_eq!(mine["principal"], nobody_id.as_str());
    assert_eq!(mine["platform_admin"], false);
    assert_eq!(mine["permissions"], json!([]));
}

#[tokio::test]
async fn only_holders_of_assignment_create_assign_and_nobody_gives_what_they_do_not_hold() {
    let Admined { app, root, .. } = setup().await;
    create_tenant(&app, &root, "acme").await;
    let (dev_id, dev) = member(&app, &root, "acme", "dev@acme.test", &["developer"]).await;
    let (_, manager) = member(&app, &root, "acme", "manager@acme.test", &["manager"]).await;
    let target = someone(&app, &root, "acme", "target@acme.test").await;
    let assign = |token: &str, role: &str| {
        let body = json!({"principal": target, "role": role});
        let (app, token) = (&app, token.to_owned());
        async move { post(app, &token, "/v1/tenants/acme/assignments", body).await }
    };
    let grant = |token: &str, permission: &str| {
        let body = json!({"subject": {"principal": target}, "permission": permission});
        let (app, token) = (&app, token.to_owned());
        async move { post(app, &token, "/v1/tenants/acme/grants", body).await }
    };

    // A developer holds neither assignment:create nor grant:create.
    let refusal = refused_with(assign(&dev, "viewer").await, 403, "forbidden").await;
    assert!(
        refusal["detail"]
            .as_str()
            .unwrap()
            .contains("assignment:create")
    );
    refused_with(grant(&dev, "key:read").await, 403, "forbidden").await;

    // A manager assigns the roles whose permissions they hold, not `admin` (which allows `*:*`).
    expect(assign(&manager, "viewer").await, 201).await;
    expect(assign(&manager, "manager").await, 201).await;
    let refusal = refused_with(assign(&manager, "admin").await, 403, "forbidden").await;
    let detail = refusal["detail"].as_str().unwrap();
    assert!(
        detail.contains("admin") && detail.contains("*:*"),
        "{detail}"
    );
    refused_with(grant(&manager, "*:*").await, 403, "forbidden").await;

    // Given grant:create, the developer grants what they hold, and nothing more.
    let given = post(
        &app,
        &root,
        "/v1/tenants/acme/grants",
        json!({"subject": {"principal": dev_id}, "permission": "grant:create"}),
    )
    .await;
    expect(given, 201).await;
    let refusal = refused_with(grant(&dev, "user:delete").await, 403, "forbidden").await;
    assert!(
        refusal["detail"].as_str().unwrap().contains("user:delete"),
        "{refusal}"
    );
    // key:* includes key:delete, which a developer does not hold.
    refused_with(grant(&dev, "key:*").await, 403, "forbidden").await;
    expect(grant(&dev, "key:read").await, 201).await;

    // Given assignment:create, the developer assigns `viewer`, whose permissions they inherit,
    // and not `manager`.
    let given = post(
        &app,
        &root,
        "/v1/tenants/acme/grants",
        json!({"subject": {"principal": dev_id}, "permission": "assignment:create"}),
    )
    .await;
    expect(given, 201).await;
    expect(assign(&dev, "viewer").await, 201).await;
    refused_with(assign(&dev, "manager").await, 403, "forbidden").await;
    // Nor can a manager give `admin` through a new user's roles; no user is made.
    let head = app.store.head().await.unwrap();
    let r = post(
        &app,
        &manager,
        "/v1/tenants/acme/users",
        json!({"email": "promoted@acme.test", "name": "P", "roles": ["admin"]}),
    )
    .await;
    refused_with(r, 403, "forbidden").await;
    assert_eq!(app.store.head().await.unwrap(), head);
}

/// A tenant's policy for the decision tests, made by its administrator: the catalog registers
/// `project: [read, write]`, the role `project-reader` is allowed `project:read`, and `alice`
/// holds it on the group `staging`, which `project/p1` is in.
struct Fixture {
    admin: String,
    alice: String,
    alice_token: String,
    role: u64,
    member: u64,
    assignment: (String, u64),
    grant: (String, u64),
}

async fn fixture(app: &App, root: &str) -> Fixture {
    create_tenant(app, root, "acme").await;
    let (_, admin) = member(app, root, "acme", "boss@acme.test", &["admin"]).await;
    let (alice, alice_token) = member(app, &admin, "acme", "alice@acme.test", &[]).await;
    let t = "/v1/tenants/acme";

    let catalog = json!({"resource_types": {"project": ["read", "write"]}});
    let catalog = send(
        app,
        Method::PUT,
        &format!("{t}/catalog"),
        &admin,
        Some(catalog),
    )
    .await;
    expect(catalog, 200).await;
    let role = post(
        app,
        &admin,
        &format!("{t}/roles"),
        json!({"name": "project-reader", "description": "Reads projects"}),
    )
    .await;
    let role = expect(role, 201).await;
    let added = send(
        app,
        Method::PUT,
        &format!("{t}/groups/staging/members/project/p1"),
        &admin,
        None,
    )
    .await;
    let added = expect(added, 200).await;
    assert_eq!(
        (&added["group"], &added["resource"], &added["member"]),
        (&json!("staging"), &json!("project/p1"), &json!(true))
    );
    let assignment = post(
        app,
        &admin,
        &format!("{t}/assignments"),
        json!({"principal": alice, "role": "project-reader", "on": {"group": "staging"}}),
    )
    .await;
    let assignment = expect(assignment, 201).await;
    let grant = post(
        app,
        &admin,
        &format!("{t}/grants"),
        json!({"subject": {"role": "project-reader"}, "permission": "project:read"}),
    )
    .await;
    let grant = expect(grant, 201).await;
    Fixture {
        admin,
        alice,
        alice_token,
        role: position_of(&role),
        member: position_of(&added),
        assignment: (id_of(&assignment), position_of(&assignment)),
        grant: (id_of(&grant), position_of(&grant)),
    }
}

#[tokio::test]
async fn a_grant_outside_the_catalog_is_refused_with_every_known_permission() {
    let Admined { app, root, .. } = setup().await;
    create_tenant(&app, &root, "acme").await;
    let grant = |permission: &'static str| {
        let body = json!({"subject": {"role": "viewer"}, "permission": permission});
        let (app, root) = (&app, &root);
        async move { post(app, root, "/v1/tenants/acme/grants", body).await }
    };

    let refusal = refused_with(grant("project:read").await, 422, "unknown_permission").await;
    let known = refusal["known"].as_array().unwrap();
    assert!(known.contains(&json!("user:read")), "{refusal}");
    assert!(known.contains(&json!("decision:execute")), "{refusal}");
    assert!(
        !known
            .iter()
            .any(|k| k.as_str().unwrap().starts_with("project:")),
        "{refusal}"
    );

    let catalog = json!({"resource_types": {"project": ["read"]}});
    let r = send(
        &app,
        Method::PUT,
        "/v1/tenants/acme/catalog",
        &root,
        Some(catalog),
    )
    .await;
    let catalog = expect(r, 200).await;
    assert_eq!(catalog["resource_types"], json!({"project": ["read"]}));
    assert!(
        catalog["builtin"]["user"]
            .as_array()
            .unwrap()
            .contains(&json!("read"))
    );
    let refusal = refused_with(grant("project:deploy").await, 422, "unknown_permission").await;
    let known = refusal["known"].as_array().unwrap();
    assert!(known.contains(&json!("project:read")), "{refusal}");
    assert!(!known.contains(&json!("project:deploy")), "{refusal}");
    expect(grant("project:read").await, 201).await;
    expect(grant("project:*").await, 201).await;
}

#[tokio::test]
async fn checks_explain_themselves_and_answer_as_the_ledger_stood_at_any_instant() {
    let Admined { app, root, .. } = setup().await;
    let f = fixture(&app, &root).await;
    let (asg, asg_at) = f.assignment.clone();
    let (grant, grant_at) = f.grant.clone();
    let ask = |permission: &str, resource: &str, extra: Value| {
        let mut body =
            json!({"principal": f.alice, "permission": permission, "resource": resource});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };

    let read_p1 = |extra: Value| {
        let body = ask("project:read", "project/p1", extra);
        let (app, admin) = (&app, &f.admin);
        async move { check(app, admin, "acme", body).await }
    };

    // Allowed through the role assigned on the group, with the chain that allows it.
    let allowed = read_p1(json!({})).await;
    assert_eq!(allowed["decision"], "allow", "{allowed}");
    assert!(allowed.get("trace").is_none(), "{allowed}");
    let reason = allowed["reason"].as_str().unwrap();
    assert!(
        reason.contains(&grant) && reason.contains("project-reader") && reason.contains("staging"),
        "{reason}"
    );
    assert_eq!(
        chain(&allowed),
        [
            link("assignment", &asg, asg_at),
            link("group", "staging", f.member),
            link("role", "project-reader", f.role),
            link("grant", &grant, grant_at),
        ],
        "{allowed}"
    );
    assert!(allowed["position"].as_u64().unwrap() >= grant_at);
    for (permission, resource) in [
        ("project:read", "project/p2"),
        ("project:write", "project/p1"),
    ] {
        let denied = check(&app, &f.admin, "acme", ask(permission, resource, json!({}))).await;
        assert_eq!(
            denied["decision"], "deny",
            "{permission} on {resource}: {denied}"
        );
        assert_eq!(denied["matched"], json!([]), "{denied}");
    }
    let explained = read_p1(json!({"explain": true})).await;
    let trace = explained["trace"].as_array().unwrap();
    assert!(
        trace
            .iter()
            .any(|line| line.as_str().unwrap().contains(&grant)),
        "{explained}"
    );

    // A deny overrides the allow, and ends with its revocation.
    let deny = post(
        &app,
        &f.admin,
        "/v1/tenants/acme/grants",
        json!({"subject": {"principal": f.alice}, "permission": "project:*",
               "on": {"resource": "project/p1"}, "effect": "deny"}),
    )
    .await;
    let deny = expect(deny, 201).await;
    let denied = read_p1(json!({})).await;
    assert_eq!(denied["decision"], "deny", "{denied}");
    assert_eq!(
        chain(&denied),
        [link("grant", &id_of(&deny), position_of(&deny))],
        "{denied}"
    );
    assert!(denied["reason"].as_str().unwrap().contains("denies"));
    let revoked = send(
        &app,
        Method::DELETE,
        &format!("/v1/tenants/acme/grants/{}", id_of(&deny)),
        &f.admin,
        None,
    )
    .await;
    expect(revoked, 200).await;
    let again = read_p1(json!({})).await;
    assert_eq!(again["decision"], "allow", "{again}");

    // As the ledger stood: before the grant, deny; from it on, allow.
    let listed = get(
        &app,
        &f.admin,
        "/v1/tenants/acme/grants?subject=role:project-reader",
    )
    .await;
    assert_eq!(listed["items"][0]["id"], grant.as_str(), "{listed}");
    let granted_at = listed["items"][0]["granted_at"].clone();
    let before = read_p1(json!({"at": just_before(&granted_at)})).await;
    assert_eq!(before["decision"], "deny", "{before}");
    assert!(before["position"].as_u64().unwrap() < grant_at, "{before}");
    let then = read_p1(json!({"at": granted_at})).await;
    assert_eq!(then["decision"], "allow", "{then}");
    let then_at = then["position"].as_u64().unwrap();
    assert!(
        grant_at <= then_at && then_at < position_of(&deny),
        "{then}"
    );

    // Revoked: denied now, still allowed as the ledger stood before.
    let revoked = send(
        &app,
        Method::DELETE,
        &format!("/v1/tenants/acme/grants/{grant}"),
        &f.admin,
        None,
    )
    .await;
    let revoked = expect(revoked, 200).await;
    let now = read_p1(json!({})).await;
    assert_eq!(now["decision"], "deny", "{now}");
    assert!(now["position"].as_u64().unwrap() >= position_of(&revoked));
    let ended = get(
        &app,
        &f.admin,
        "/v1/tenants/acme/grants?subject=role:project-reader&include_ended=true",
    )
    .await;
    let ended_at = ended["items"][0]["ended_at"].clone();
    assert!(ended_at.is_string(), "{ended}");
    let past = read_p1(json!({"at": just_before(&ended_at)})).await;
    assert_eq!(past["decision"], "allow", "{past}");
    assert_eq!(chain(&past).last(), Some(&link("grant", &grant, grant_at)));

    // A batch: every check evaluated at one position, in the order asked.
    let batch = post(
        &app,
        &f.admin,
        "/v1/tenants/acme/check/batch",
        json!({"checks": [
            ask("project:read", "project/p1", json!({})),
            ask("project:read", "project/p1", json!({"at": granted_at})),
            ask("project:read", "project/p2", json!({"explain": true})),
        ]}),
    )
    .await;
    let batch = expect(batch, 200).await;
    let results = batch["results"].as_array().unwrap();
    let decisions: Vec<&str> = results
        .iter()
        .map(|r| r["decision"].as_str().unwrap())
        .collect();
    assert_eq!(decisions, ["deny", "allow", "deny"], "{batch}");
    assert!(results[2]["trace"].is_array(), "{batch}");
    assert!(batch["position"].as_u64().unwrap() >= position_of(&revoked));
    assert!(
        results.iter().all(|r| r.get("position").is_none()),
        "{batch}"
    );
    let one = ask("project:read", "project/p1", json!({}));
    for n in [0, 1_001] {
        let r = post(
            &app,
            &f.admin,
            "/v1/tenants/acme/check/batch",
            json!({"checks": vec![one.clone(); n]}),
        )
        .await;
        let refusal = refused_with(r, 422, "validation_failed").await;
        assert!(
            refusal["detail"].as_str().unwrap().contains("checks"),
            "{refusal}"
        );
    }
    let thousand = post(
        &app,
        &f.admin,
        "/v1/tenants/acme/check/batch",
        json!({"checks": vec![one; 1_000]}),
    )
    .await;
    assert_eq!(
        expect(thousand, 200).await["results"]
            .as_array()
            .unwrap()
            .len(),
        1_000
    );
}

#[tokio::test]
async fn effective_permissions_and_holders_are_listed_with_their_sources() {
    let Admined { app, root, .. } = setup().await;
    let f = fixture(&app, &root).await;
    let (asg, asg_at) = f.assignment.clone();
    let (grant, grant_at) = f.grant.clone();

    let theirs = get(
        &app,
        &f.admin,
        &format!("/v1/tenants/acme/principals/{}/permissions", f.alice),
    )
    .await;
    assert_eq!(theirs["principal"], f.alice.as_str());
    assert_eq!(theirs["platform_admin"], false);
    let permissions = theirs["permissions"].as_array().unwrap();
    assert_eq!(permissions.len(), 1, "{theirs}");
    let p = &permissions[0];
    assert_eq!(p["permission"], "project:read");
    assert_eq!(p["effect"], "allow");
    assert_eq!(p["assignment_on"], json!({"group": "staging"}));
    assert_eq!(
        p["source"],
        json!([
            {"kind": "assignment", "id": asg, "position": asg_at},
            {"kind": "role", "id": "project-reader", "position": f.role},
            {"kind": "grant", "id": grant, "position": grant_at},
        ]),
        "{theirs}"
    );
    let mine = get(&app, &f.alice_token, "/v1/permissions/me").await;
    assert_eq!(mine["principal"], f.alice.as_str());
    assert_eq!(mine["permissions"], theirs["permissions"]);

    let holders = get(
        &app,
        &f.admin,
        "/v1/tenants/acme/resources/project/p1/principals",
    )
    .await;
    assert_eq!(holders["resource"], "project/p1");
    let alices: Vec<&Value> = holders["principals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["principal"] == f.alice.as_str())
        .collect();
    assert_eq!(alices.len(), 1, "{holders}");
    assert_eq!(alices[0]["permission"], "project:read");
    assert_eq!(
        alices[0]["matched"].as_array().unwrap().last().unwrap()["id"],
        grant.as_str()
    );
    let outside = get(
        &app,
        &f.admin,
        "/v1/tenants/acme/resources/project/p2/principals",
    )
    .await;
    assert!(
        !outside["principals"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["principal"] == f.alice.as_str()),
        "{outside}"
    );
    // The tenant's administrator holds everything through the built-in role.
    let boss = get(&app, &f.admin, "/v1/permissions/me").await;
    assert!(
        boss["permissions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["permission"] == "*:*" && p["effect"] == "allow"),
        "{boss}"
    );

    // A grant is seen by a read asking for its position, straight after it is made.
    let made = post(
        &app,
        &f.admin,
        "/v1/tenants/acme/grants",
        json!({"subject": {"principal": f.alice}, "permission": "project:write",
               "on": {"resource_type": "project"}}),
    )
    .await;
    let made = expect(made, 201).await;
    let r = app
        .client
        .get(app.url("/v1/tenants/acme/grants?permission=project:write"))
        .bearer_auth(&f.admin)
        .header("custodian-min-position", position_of(&made).to_string())
        .send()
        .await
        .unwrap();
    let seen_at: u64 = r.headers()["custodian-position"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(seen_at >= position_of(&made));
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["items"][0]["id"], id_of(&made), "{page}");
    assert_eq!(page["items"][0]["position"], position_of(&made));
    assert_eq!(page["items"][0]["on"], json!({"resource_type": "project"}));
}

#[tokio::test]
async fn deleting_a_role_ends_its_assignments_and_grants() {
    let Admined { app, root, .. } = setup().await;
    create_tenant(&app, &root, "acme").await;
    let (_, admin) = member(&app, &root, "acme", "boss@acme.test", &["admin"]).await;
    let alice = someone(&app, &admin, "acme", "alice@acme.test").await;
    let t = "/v1/tenants/acme";
    expect(
        post(&app, &admin, &format!("{t}/roles"), json!({"name": "temp"})).await,
        201,
    )
    .await;
    let grant = post(
        &app,
        &admin,
        &format!("{t}/grants"),
        json!({"subject": {"role": "temp"}, "permission": "audit:read"}),
    )
    .await;
    let grant = id_of(&expect(grant, 201).await);
    let assignment = post(
        &app,
        &admin,
        &format!("{t}/assignments"),
        json!({"principal": alice, "role": "temp"}),
    )
    .await;
    let assignment = id_of(&expect(assignment, 201).await);
    let ask = json!({"principal": alice, "permission": "audit:read", "resource": "audit/trail"});
    let allowed = check(&app, &admin, "acme", ask.clone()).await;
    assert_eq!(allowed["decision"], "allow", "{allowed}");

    let deleted = send(
        &app,
        Method::DELETE,
        &format!("{t}/roles/temp"),
        &admin,
        None,
    )
    .await;
    let deleted = expect(deleted, 200).await;
    assert_eq!(deleted["name"], "temp");
    assert_eq!(deleted["revoked_grants"], json!([grant]));
    assert_eq!(deleted["ended_assignments"], json!([assignment]));
    let denied = check(&app, &admin, "acme", ask).await;
    assert_eq!(denied["decision"], "deny", "{denied}");
    let r = send(&app, Method::GET, &format!("{t}/roles/temp"), &admin, None).await;
    refused_with(r, 404, "not_found").await;

    let live = get(&app, &admin, &format!("{t}/grants?subject=role:temp")).await;
    assert_eq!(live["items"], json!([]), "{live}");
    let all = get(
        &app,
        &admin,
        &format!("{t}/grants?subject=role:temp&include_ended=true"),
    )
    .await;
    assert_eq!(all["items"][0]["id"], grant.as_str(), "{all}");
    assert!(all["items"][0]["ended_at"].is_string(), "{all}");
    let live = get(&app, &admin, &format!("{t}/assignments?role=temp")).await;
    assert_eq!(live["items"], json!([]), "{live}");
    let all = get(
        &app,
        &admin,
        &format!("{t}/assignments?role=temp&include_ended=true"),
    )
    .await;
    assert_eq!(all["items"][0]["id"], assignment.as_str(), "{all}");
    assert!(all["items"][0]["ended_at"].is_string(), "{all}");

    // The ending is in the log, one event each.
    let stream = custodian_domain::StreamName::new("acme", "policy", "rules").unwrap();
    let events = app.store.read_stream(&stream, 1, 1000).await.unwrap();
    let types: Vec<&str> = events
        .iter()
        .rev()
        .take(3)
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(
        types,
        ["role.deleted", "assignment.ended", "grant.revoked"],
        "{events:?}"
    );
}

/// Appends `event` to the policy of `tenant` as another server on the same ledger would, without
/// this server's index knowing; answers its position.
async fn written_elsewhere(
    app: &App,
    tenant: &str,
    event: &custodian_domain::policy::PolicyEvent,
) -> u64 {
    let ctx = custodian_api::commands::Context {
        actor: custodian_domain::Actor::system(),
        now: custodian_app::Clock::now(&custodian_app::SystemClock),
        correlation_id: None,
    };
    let stream = custodian_domain::StreamName::new(tenant, "policy", "rules").unwrap();
    app.store
        .append(
            &stream,
            custodian_store::ExpectedVersion::Any,
            vec![ctx.event(event)],
        )
        .await
        .unwrap()
        .last_position
}

/// Sends `request` asking to be answered from views that have applied `position`; expects 200.
async fn at_least(request: reqwest::RequestBuilder, position: u64) -> Value {
    let r = request
        .header("custodian-min-position", position.to_string())
        .send()
        .await
        .unwrap();
    let answer = expect(r, 200).await;
    if let Some(p) = answer.get("position") {
        assert!(p.as_u64().unwrap() >= position, "{answer}");
    }
    answer
}

#[tokio::test]
async fn checks_and_reads_asking_for_a_position_see_what_another_server_wrote_there() {
    use custodian_domain::policy::{Effect, EndReason, Permission, PolicyEvent, Subject};
    let Admined { app, root, .. } = setup().await;
    create_tenant(&app, &root, "acme").await;
    let alice = someone(&app, &root, "acme", "alice@acme.test").await;
    let ask = json!({"principal": alice, "permission": "audit:read", "resource": "audit/trail"});
    let check = || {
        app.client
            .post(app.url("/v1/tenants/acme/check"))
            .bearer_auth(&root)
            .json(&ask)
    };
    let batch = || {
        app.client
            .post(app.url("/v1/tenants/acme/check/batch"))
            .bearer_auth(&root)
            .json(&json!({"checks": [ask]}))
    };
    // Each round races the write against this server's index; the reads must wait for it.
    for round in 0..10 {
        let id = format!("grant_01jd{round:022}");
        let granted = written_elsewhere(
            &app,
            "acme",
            &PolicyEvent::GrantCreated {
                id: id.clone(),
                subject: Subject::Principal(alice.clone()),
                permission: Permission::parse("audit:read").unwrap(),
                on: None,
                effect: Effect::Allow,
                valid_from: None,
                valid_until: None,
                conditions: None,
                granted_by: "system".to_owned(),
            },
        )
        .await;
        let allowed = at_least(check(), granted).await;
        assert_eq!(allowed["decision"], "allow", "round {round}: {allowed}");
        let listed = at_least(
            app.client
                .get(app.url("/v1/tenants/acme/grants"))
                .bearer_auth(&root),
            granted,
        )
        .await;
        assert_eq!(
            listed["items"][0]["id"],
            id.as_str(),
            "round {round}: {listed}"
        );

        let revoked = written_elsewhere(
            &app,
            "acme",
            &PolicyEvent::GrantRevoked {
                id,
                reason: EndReason::Revoked,
            },
        )
        .await;
        let denied = at_least(batch(), revoked).await;
        assert_eq!(
            denied["results"][0]["decision"], "deny",
            "round {round}: {denied}"
        );
    }
}
