//! Bad input to the authorization endpoints: every malformed, mistyped, incomplete or meaningless
//! request is refused with a problem document and a 4xx, and nothing is appended to the log.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Admined, create_tenant, create_user, expect, send, setup};

/// A valid RFC 3339 time whose UTC instant is past the year 9999.
const OFF_THE_CALENDAR: &str = "9999-12-31T23:59:59.999999-14:00";

/// A request and what it must get: its method, path and raw body (sent as JSON; none when
/// `None`), the status, and what the problem's `detail` must mention.
struct Case {
    method: Method,
    path: String,
    body: Option<String>,
    status: u16,
    mentions: &'static str,
}

/// A case whose body is `raw` text, JSON or not.
fn raw(method: Method, path: &str, raw: &str, status: u16, mentions: &'static str) -> Case {
    Case {
        method,
        path: path.to_owned(),
        body: Some(raw.to_owned()),
        status,
        mentions,
    }
}

/// A case without a body.
fn bare(method: Method, path: &str, status: u16, mentions: &'static str) -> Case {
    Case {
        method,
        path: path.to_owned(),
        body: None,
        status,
        mentions,
    }
}

/// The cases of one endpoint with a JSON body: `endpoint(body, status, mentions)`.
fn endpoint(method: Method, path: &str) -> impl Fn(Value, u16, &'static str) -> Case {
    let path = path.to_owned();
    move |body, status, mentions| raw(method.clone(), &path, &body.to_string(), status, mentions)
}

/// `base` with `field` set to `value`, or removed when `value` is `null`.
fn with(mut base: Value, field: &str, value: Value) -> Value {
    if value.is_null() {
        base.as_object_mut().unwrap().remove(field);
    } else {
        base[field] = value;
    }
    base
}

#[tokio::test]
async fn bad_input_to_every_authorization_endpoint_is_a_4xx_problem_and_appends_nothing() {
    let Admined { app, root, .. } = setup().await;
    let user = |tenant: &'static str, email: &'static str| {
        let (app, root) = (&app, &root);
        async move {
            create_tenant(app, root, tenant).await;
            let u = create_user(app, root, tenant, json!({"email": email, "name": "N"})).await;
            u["user_id"].as_str().unwrap().to_owned()
        }
    };
    let alice = user("acme", "alice@acme.test").await;
    let bob_of_globex = user("globex", "bob@globex.test").await;
    let t = "/v1/tenants/acme";
    let catalog = json!({"resource_types": {"project": ["read", "write"]}});
    let r = send(
        &app,
        Method::PUT,
        &format!("{t}/catalog"),
        &root,
        Some(catalog),
    )
    .await;
    expect(r, 200).await;
    for role in [json!({"name": "a"}), json!({"name": "b", "parents": ["a"]})] {
        let r = send(&app, Method::POST, &format!("{t}/roles"), &root, Some(role)).await;
        expect(r, 201).await;
    }
    let member = format!("{t}/groups/staging/members/project/p1");
    expect(send(&app, Method::PUT, &member, &root, None).await, 200).await;

    let nobody = "user_00000000000000000000000000";
    let a_grant = json!({"subject": {"principal": alice}, "permission": "project:read"});
    let g = |field: &str, value: Value| with(a_grant.clone(), field, value);
    let an_assignment = json!({"principal": alice, "role": "a"});
    let a = |field: &str, value: Value| with(an_assignment.clone(), field, value);
    let a_check =
        json!({"principal": alice, "permission": "project:read", "resource": "project/p1"});
    let c = |field: &str, value: Value| with(a_check.clone(), field, value);
    let hours = |from: &str, until: Option<&str>, zone: &str| {
        let mut h = json!({"from": from, "time_zone": zone});
        if let Some(until) = until {
            h["until"] = json!(until);
        }
        json!({"time_of_day": h})
    };
    let backwards =
        json!({"valid_from": "2030-01-02T00:00:00Z", "valid_until": "2030-01-01T00:00:00Z"});
    let backwards = |mut base: Value| {
        base.as_object_mut()
            .unwrap()
            .extend(backwards.as_object().unwrap().clone());
        base
    };

    let (catalog, roles, role_a, grants, assignments, check, batch) = (
        format!("{t}/catalog"),
        format!("{t}/roles"),
        format!("{t}/roles/a"),
        format!("{t}/grants"),
        format!("{t}/assignments"),
        format!("{t}/check"),
        format!("{t}/check/batch"),
    );
    let put_catalog = endpoint(Method::PUT, &catalog);
    let post_role = endpoint(Method::POST, &roles);
    let patch_role = endpoint(Method::PATCH, &role_a);
    let post_grant = endpoint(Method::POST, &grants);
    let post_assignment = endpoint(Method::POST, &assignments);
    let post_check = endpoint(Method::POST, &check);
    let post_batch = endpoint(Method::POST, &batch);
    let cases = vec![
        // PUT catalog
        raw(Method::PUT, &catalog, "{\"resource_types\": ", 400, "JSON"),
        put_catalog(json!([]), 422, ""),
        put_catalog(
            json!({"resource_types": ["project"]}),
            422,
            "resource_types",
        ),
        put_catalog(
            json!({"resource_types": {"project": "read"}}),
            422,
            "resource_types",
        ),
        put_catalog(json!({"resource_types": {}, "extra": 1}), 422, "extra"),
        put_catalog(json!({}), 422, "resource_types"),
        put_catalog(
            json!({"resource_types": {"Project!": ["read"]}}),
            422,
            "resource_types",
        ),
        put_catalog(
            json!({"resource_types": {"user": ["read"]}}),
            422,
            "built-in",
        ),
        put_catalog(json!({"resource_types": {"project": []}}), 422, "actions"),
        put_catalog(
            json!({"resource_types": {"project": ["Read It"]}}),
            422,
            "action",
        ),
        // POST roles
        raw(Method::POST, &roles, "{\"name\": \"c\"", 400, "JSON"),
        post_role(json!({"name": 5}), 422, "name"),
        post_role(json!({"name": "c", "parents": "a"}), 422, "parents"),
        post_role(
            json!({"name": "c", "permissions": ["x:y"]}),
            422,
            "permissions",
        ),
        post_role(json!({}), 422, "name"),
        post_role(json!({"name": "Bad Name"}), 422, "name"),
        post_role(json!({"name": ""}), 422, "name"),
        post_role(
            json!({"name": "c", "description": "d".repeat(501)}),
            422,
            "description",
        ),
        post_role(json!({"name": "c", "parents": ["nope"]}), 404, "nope"),
        post_role(json!({"name": "c", "parents": ["a", "a"]}), 422, "parents"),
        post_role(json!({"name": "a"}), 409, "exists"),
        post_role(json!({"name": "admin"}), 409, "exists"),
        // PATCH roles/{role}
        raw(Method::PATCH, &role_a, "{", 400, "JSON"),
        patch_role(json!({"parents": "b"}), 422, "parents"),
        patch_role(json!({"name": "z"}), 422, "name"),
        patch_role(json!({}), 422, "description"),
        patch_role(json!({"parents": ["b"]}), 409, "cycle"),
        patch_role(json!({"parents": ["a"]}), 409, "cycle"),
        patch_role(json!({"parents": ["nope"]}), 404, "nope"),
        raw(
            Method::PATCH,
            &format!("{t}/roles/admin"),
            "{\"description\": \"x\"}",
            409,
            "built-in",
        ),
        raw(
            Method::PATCH,
            &format!("{t}/roles/nope"),
            "{\"description\": \"x\"}",
            404,
            "nope",
        ),
        // DELETE roles/{role}
        bare(Method::DELETE, &format!("{t}/roles/nope"), 404, "nope"),
        bare(
            Method::DELETE,
            &format!("{t}/roles/viewer"),
            409,
            "built-in",
        ),
        bare(Method::DELETE, &role_a, 409, "parent"),
        // POST grants
        raw(Method::POST, &grants, "{\"subject\": {", 400, "JSON"),
        post_grant(json!("grant"), 422, ""),
        post_grant(g("subject", json!(alice)), 422, "subject"),
        post_grant(g("permission", json!(["project:read"])), 422, "permission"),
        post_grant(g("effect", json!("maybe")), 422, "effect"),
        post_grant(g("explain", json!(true)), 422, "explain"),
        post_grant(g("subject", Value::Null), 422, "subject"),
        post_grant(g("permission", Value::Null), 422, "permission"),
        post_grant(
            g("subject", json!({"principal": alice, "role": "a"})),
            422,
            "subject",
        ),
        post_grant(g("subject", json!({"group": "staging"})), 422, "group"),
        post_grant(g("permission", json!("projectread")), 422, "permission"),
        post_grant(g("permission", json!("project:")), 422, "permission"),
        post_grant(g("permission", json!("project:deploy")), 422, "catalog"),
        post_grant(g("on", json!({"resource": "p1"})), 422, "resource"),
        post_grant(
            g("on", json!({"resource": "spaceship/p1"})),
            422,
            "spaceship",
        ),
        post_grant(
            g("on", json!({"resource_type": "spaceship"})),
            422,
            "spaceship",
        ),
        post_grant(g("on", json!({"group": "Bad Group"})), 422, "group"),
        post_grant(g("on", json!({"planet": "mars"})), 422, "planet"),
        post_grant(
            g("conditions", json!({"source_ip": ["10.0.0.0/33"]})),
            422,
            "source_ip",
        ),
        post_grant(
            g("conditions", json!({"source_ip": ["intranet"]})),
            422,
            "source_ip",
        ),
        post_grant(
            g("conditions", json!({"source_ip": "10.0.0.0/8"})),
            422,
            "source_ip",
        ),
        post_grant(g("conditions", json!({"source_ip": []})), 422, "source_ip"),
        post_grant(
            g("conditions", json!({"weekday": "monday"})),
            422,
            "weekday",
        ),
        post_grant(
            g(
                "conditions",
                hours("09:00", Some("17:00"), "Mars/Olympus_Mons"),
            ),
            422,
            "time zone",
        ),
        post_grant(
            g("conditions", hours("25:00", Some("17:00"), "Europe/Paris")),
            422,
            "time_of_day",
        ),
        post_grant(
            g("conditions", hours("09:00", Some("09:00"), "Europe/Paris")),
            422,
            "differ",
        ),
        post_grant(
            g("conditions", hours("09:00", None, "Europe/Paris")),
            422,
            "until",
        ),
        post_grant(g("valid_from", json!("yesterday")), 422, "valid_from"),
        post_grant(
            g("valid_until", json!(OFF_THE_CALENDAR)),
            422,
            "valid_until",
        ),
        post_grant(backwards(a_grant.clone()), 422, "valid_until"),
        post_grant(g("subject", json!({"principal": nobody})), 404, "principal"),
        post_grant(
            g("subject", json!({"principal": "alice"})),
            404,
            "principal",
        ),
        post_grant(
            g("subject", json!({"principal": bob_of_globex})),
            404,
            "principal",
        ),
        post_grant(g("subject", json!({"role": "nope"})), 404, "nope"),
        // DELETE grants/{id}
        bare(Method::DELETE, &format!("{grants}/nope"), 404, "nope"),
        bare(
            Method::DELETE,
            &format!("{grants}/grant_00000000000000000000000000"),
            404,
            "grant",
        ),
        // POST assignments
        raw(Method::POST, &assignments, "{\"principal\"", 400, "JSON"),
        post_assignment(a("principal", json!([alice])), 422, "principal"),
        post_assignment(a("effect", json!("deny")), 422, "effect"),
        post_assignment(a("principal", Value::Null), 422, "principal"),
        post_assignment(a("role", Value::Null), 422, "role"),
        post_assignment(a("role", json!("nope")), 404, "nope"),
        post_assignment(a("principal", json!(nobody)), 404, "principal"),
        post_assignment(a("principal", json!(bob_of_globex)), 404, "principal"),
        post_assignment(a("on", json!({"resource": "p1"})), 422, "resource"),
        post_assignment(a("on", json!({"group": "-x"})), 422, "group"),
        post_assignment(
            a("on", json!({"resource_type": "spaceship"})),
            422,
            "spaceship",
        ),
        post_assignment(backwards(an_assignment.clone()), 422, "valid_until"),
        post_assignment(a("valid_until", json!("soon")), 422, "valid_until"),
        post_assignment(a("valid_from", json!(OFF_THE_CALENDAR)), 422, "valid_from"),
        // DELETE assignments/{id}
        bare(Method::DELETE, &format!("{assignments}/nope"), 404, "nope"),
        bare(
            Method::DELETE,
            &format!("{assignments}/asg_00000000000000000000000000"),
            404,
            "assignment",
        ),
        // PUT and DELETE groups/{group}/members/{type}/{id}
        bare(
            Method::PUT,
            &format!("{t}/groups/Bad%20Group/members/project/p1"),
            422,
            "group",
        ),
        bare(
            Method::PUT,
            &format!("{t}/groups/staging/members/spaceship/x"),
            422,
            "spaceship",
        ),
        bare(
            Method::PUT,
            &format!("{t}/groups/staging/members/Project/x"),
            422,
            "resource",
        ),
        bare(
            Method::DELETE,
            &format!("{t}/groups/staging/members/project/p2"),
            404,
            "p2",
        ),
        // POST check
        raw(Method::POST, &check, "{\"principal\": ", 400, "JSON"),
        post_check(json!([]), 422, ""),
        post_check(c("principal", json!(5)), 422, "principal"),
        post_check(c("explain", json!("yes")), 422, "explain"),
        post_check(c("effect", json!("allow")), 422, "effect"),
        post_check(c("principal", Value::Null), 422, "principal"),
        post_check(c("permission", Value::Null), 422, "permission"),
        post_check(c("resource", Value::Null), 422, "resource"),
        post_check(c("principal", json!("")), 422, "principal"),
        post_check(c("permission", json!("projectread")), 422, "permission"),
        post_check(c("permission", json!("project:*")), 422, "permission"),
        post_check(c("permission", json!("*:read")), 422, "permission"),
        post_check(c("resource", json!("p1")), 422, "resource"),
        post_check(c("resource", json!("project/")), 422, "resource"),
        post_check(c("context", json!({"ip": "999.1.1.1"})), 422, "context.ip"),
        post_check(c("context", json!({"ip": "10.0.0.0/8"})), 422, "context.ip"),
        post_check(c("context", json!({"time": "noon"})), 422, "context.time"),
        post_check(
            c("context", json!({"time": OFF_THE_CALENDAR})),
            422,
            "context.time",
        ),
        post_check(c("context", json!({"user_agent": "x"})), 422, "user_agent"),
        post_check(c("at", json!("yesterday")), 422, "at"),
        post_check(c("at", json!("2999-01-01T00:00:00Z")), 422, "future"),
        // POST check/batch
        raw(Method::POST, &batch, "{\"checks\": [", 400, "JSON"),
        post_batch(json!({"checks": {}}), 422, "checks"),
        post_batch(json!({"checks": [], "explain": true}), 422, "explain"),
        post_batch(json!({}), 422, "checks"),
        post_batch(json!({"checks": []}), 422, "checks"),
        post_batch(
            json!({"checks": vec![a_check.clone(); 1_001]}),
            422,
            "checks",
        ),
        post_batch(
            json!({"checks": [a_check, c("permission", json!("project:*"))]}),
            422,
            "checks[1].permission",
        ),
        // Listings and lookups
        bare(Method::GET, &format!("{grants}?limit=0"), 422, "limit"),
        bare(
            Method::GET,
            &format!("{grants}?permission=projectread"),
            422,
            "permission",
        ),
        bare(
            Method::GET,
            &format!("{grants}?include_ended=maybe"),
            422,
            "include_ended",
        ),
        bare(Method::GET, &format!("{grants}?cursor=nope"), 422, "cursor"),
        bare(Method::GET, &format!("{grants}?colour=red"), 422, "colour"),
        bare(
            Method::GET,
            &format!("{assignments}?limit=ten"),
            422,
            "limit",
        ),
        bare(
            Method::GET,
            &format!("{assignments}?include_ended=2"),
            422,
            "include_ended",
        ),
        bare(Method::GET, &format!("{t}/roles/nope"), 404, "nope"),
        bare(
            Method::GET,
            &format!("{t}/principals/{nobody}/permissions"),
            404,
            "principal",
        ),
        bare(
            Method::GET,
            &format!("{t}/principals/{bob_of_globex}/permissions"),
            404,
            "principal",
        ),
        bare(
            Method::GET,
            &format!("{t}/resources/Project/p1/principals"),
            422,
            "resource",
        ),
    ];

    let head = app.store.head().await.unwrap();
    let mut failures = vec![];
    for case in cases {
        let label = format!(
            "{} {} {:.120}",
            case.method,
            case.path,
            case.body.as_deref().unwrap_or("")
        );
        let mut request = app
            .client
            .request(case.method, app.url(&case.path))
            .bearer_auth(&root);
        if let Some(body) = case.body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let r = request.send().await.unwrap();
        let got = r.status().as_u16();
        let content_type = r.headers().get("content-type").cloned();
        let text = r.text().await.unwrap();
        let problem: Option<Value> = serde_json::from_str(&text).ok();
        let detail = problem
            .as_ref()
            .and_then(|p| p["detail"].as_str())
            .unwrap_or_default();
        let wrong = if got != case.status {
            Some(format!("answered {got}, not {}", case.status))
        } else if content_type.as_ref().and_then(|v| v.to_str().ok())
            != Some("application/problem+json")
        {
            Some(format!("answered with content-type {content_type:?}"))
        } else if problem.as_ref().map(|p| &p["status"]) != Some(&json!(case.status)) {
            Some("the problem's status differs".to_owned())
        } else if !detail.contains(case.mentions) {
            Some(format!("the detail does not mention {:?}", case.mentions))
        } else {
            None
        };
        if let Some(wrong) = wrong {
            failures.push(format!("{label}: {wrong}: {text}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Without `Content-Type: application/json`, every body is refused before it is read.
    for (method, path) in [
        (Method::PUT, &catalog),
        (Method::POST, &roles),
        (Method::PATCH, &role_a),
        (Method::POST, &grants),
        (Method::POST, &assignments),
        (Method::POST, &check),
        (Method::POST, &batch),
    ] {
        let r = app
            .client
            .request(method, app.url(path))
            .bearer_auth(&root)
            .body(json!({}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 415, "{path}");
    }
    assert_eq!(
        app.store.head().await.unwrap(),
        head,
        "bad input wrote nothing"
    );
}
