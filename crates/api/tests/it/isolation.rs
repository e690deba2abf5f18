//! Tenant isolation as a property. In a generated world of two tenants, an attacker who
//! administers tenant A calls every operation of `/openapi.json` with tenant B's ids, with A's own
//! token and with B's tokens tampered with (signature altered, `alg: none`, audience, tenant or
//! subject edited). Every request that names B's objects is refused (404 with A's token, 401 with
//! a forged one), nothing is appended to the log except the events every failed sign-in records
//! (and the checkpoint a request for one signs), and no answer carries any of B's ids, emails,
//! names or secrets that the request did not itself send. The operations come from the
//! document, so a new route joins on its own; one with a path parameter this test cannot fill
//! fails it rather than being skipped.

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{
    Admined, App, base64_url, base64_url_decode, create_tenant, create_user, expect, send, setup,
    token,
};

/// Worlds generated per run: each costs a server and a few dozen commands.
const WORLDS: u32 = 3;
const PASSWORD: &str = "isolation test passphrase";

/// The names a world is made of: two tenants, B's users, roles, group, resource and meter.
#[derive(Debug, Clone)]
struct Shape {
    a: String,
    b: String,
    users: Vec<(String, String)>,
    roles: Vec<String>,
    group: String,
    resource_type: String,
    resource: String,
    meter: String,
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        "[a-z]{8,12}",
        "[a-z]{8,12}",
        proptest::collection::btree_map("[a-z]{8,12}", "[A-Z][a-z]{7,11}", 1..4),
        proptest::collection::btree_set("[a-z]{8,12}", 1..3),
        "[a-z]{8,12}",
        "[a-z]{8,12}",
        "[a-z0-9]{10,14}",
        "[a-z]{8,12}",
    )
        .prop_filter("distinct tenants", |(a, b, ..)| a != b)
        .prop_map(
            |(a, b, users, roles, group, resource_type, resource, meter)| Shape {
                a: format!("a-{a}"),
                b: format!("b-{b}"),
                users: users.into_iter().collect(),
                roles: roles.into_iter().collect(),
                group,
                resource_type,
                resource,
                meter,
            },
        )
}

/// Tenant B as made through the API, and the attacker's and B's tokens.
struct World {
    shape: Shape,
    /// The attacker, an administrator of A.
    attacker: String,
    /// B's administrator's access and refresh tokens and session.
    b_token: String,
    b_refresh: String,
    b_session: String,
    b_emails: Vec<String>,
    b_users: Vec<String>,
    key_id: String,
    key_secret: String,
    grant: String,
    assignment: String,
    /// Everything of B's that no answer to the attacker may contain.
    secrets: Vec<String>,
}

async fn build(app: &App, root: &str, shape: Shape) -> World {
    create_tenant(app, root, &shape.a).await;
    create_tenant(app, root, &shape.b).await;
    let attacker_email = format!("eve@{}.test", shape.a);
    create_user(
        app,
        root,
        &shape.a,
        json!({"email": attacker_email, "name": "Eve", "password": PASSWORD, "roles": ["admin"]}),
    )
    .await;
    let attacker = token(app, &shape.a, &attacker_email, PASSWORD).await;

    let b = format!("/v1/tenants/{}", shape.b);
    let b_admin_email = format!("boss@{}.test", shape.b);
    let b_admin = create_user(
        app,
        root,
        &shape.b,
        json!({"email": b_admin_email, "name": "Bea Boss", "password": PASSWORD, "roles": ["admin"]}),
    )
    .await;
    let login = app
        .client
        .post(app.url("/v1/auth/login"))
        .json(&json!({"tenant": shape.b, "email": b_admin_email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let login = expect(login, 200).await;
    let b_token = login["access_token"].as_str().unwrap().to_owned();
    let b_refresh = login["refresh_token"].as_str().unwrap().to_owned();
    let b_session = login["session_id"].as_str().unwrap().to_owned();

    let mut b_emails = vec![b_admin_email];
    let mut b_users = vec![b_admin["user_id"].as_str().unwrap().to_owned()];
    let mut secrets = vec![
        "Bea Boss".to_owned(),
        b_refresh.clone(),
        b_session.clone(),
        shape.group.clone(),
        shape.resource.clone(),
        shape.meter.clone(),
    ];
    for (local, name) in &shape.users {
        let email = format!("{local}@{}.test", shape.b);
        let user = create_user(
            app,
            &b_token,
            &shape.b,
            json!({"email": email, "name": name, "password": PASSWORD}),
        )
        .await;
        b_users.push(user["user_id"].as_str().unwrap().to_owned());
        b_emails.push(email);
        secrets.push(name.clone());
    }
    let user = b_users[1].clone();
    let as_b = |method: Method, path: String, body: Option<Value>, status: u16| {
        let b_token = &b_token;
        async move { expect(send(app, method, &path, b_token, body).await, status).await }
    };
    let catalog = json!({"resource_types": {shape.resource_type.clone(): ["read"]}});
    as_b(Method::PUT, format!("{b}/catalog"), Some(catalog), 200).await;
    for role in &shape.roles {
        let body = json!({"name": role, "description": format!("{role} of B")});
        as_b(Method::POST, format!("{b}/roles"), Some(body), 201).await;
        secrets.push(role.clone());
    }
    let body = json!({"subject": {"principal": user}, "permission": "user:read"});
    let grant = as_b(Method::POST, format!("{b}/grants"), Some(body), 201).await;
    let body = json!({"principal": user, "role": shape.roles[0]});
    let assignment = as_b(Method::POST, format!("{b}/assignments"), Some(body), 201).await;
    let member = format!(
        "{b}/groups/{}/members/{}/{}",
        shape.group, shape.resource_type, shape.resource
    );
    as_b(Method::PUT, member, None, 200).await;
    let body = json!({"name": "deploy bot", "owner": user, "scopes": ["key:read"]});
    let key = as_b(Method::POST, format!("{b}/keys"), Some(body), 201).await;
    let body = json!({"unit_cost": 3});
    as_b(
        Method::PUT,
        format!("{b}/meters/{}", shape.meter),
        Some(body),
        200,
    )
    .await;
    let body = json!({"limit": 100, "hard": true});
    as_b(
        Method::PUT,
        format!("{b}/quotas/{}", shape.meter),
        Some(body),
        200,
    )
    .await;
    let record =
        json!({"meter": shape.meter, "quantity": 1, "subject": user, "idempotency_key": "b-1"});
    as_b(Method::POST, format!("{b}/usage"), Some(record), 200).await;
    let invited = format!("invitee@{}.test", shape.b);
    let body = json!({"email": invited, "name": "Ivy Invitee"});
    let invitation = as_b(Method::POST, format!("{b}/invitations"), Some(body), 201).await;

    let grant = grant["id"].as_str().unwrap().to_owned();
    let assignment = assignment["id"].as_str().unwrap().to_owned();
    let key_id = key["id"].as_str().unwrap().to_owned();
    let key_secret = key["key"].as_str().unwrap().to_owned();
    secrets.extend([
        grant.clone(),
        assignment.clone(),
        key_id.clone(),
        key_secret.clone(),
        b_token.clone(),
        "Ivy Invitee".to_owned(),
        invited.clone(),
        invitation["user_id"].as_str().unwrap().to_owned(),
        invitation["invitation_token"].as_str().unwrap().to_owned(),
    ]);
    secrets.extend(b_users.iter().cloned());
    secrets.extend(b_emails.iter().cloned());
    World {
        shape,
        attacker,
        b_token,
        b_refresh,
        b_session,
        b_emails,
        b_users,
        key_id,
        key_secret,
        grant,
        assignment,
        secrets,
    }
}

impl World {
    /// `template` with its parameters filled by B's ids of the right kind, in `tenant`; `None`
    /// when a parameter is of a kind this test does not know.
    fn fill(&self, template: &str, tenant: &str) -> Result<String, String> {
        let mut out = vec![];
        let mut previous = "";
        for segment in template.split('/') {
            let value = match (segment, previous) {
                ("{tenant}", _) => tenant.to_owned(),
                ("{user_id}", _) => self.b_users[1].clone(),
                ("{session_id}", _) => self.b_session.clone(),
                ("{role}", _) => self.shape.roles[0].clone(),
                ("{group}", _) => self.shape.group.clone(),
                ("{meter}", _) => self.shape.meter.clone(),
                ("{type}", "members" | "resources") => self.shape.resource_type.clone(),
                ("{id}", "{type}") => self.shape.resource.clone(),
                ("{id}", "assignments") => self.assignment.clone(),
                ("{id}", "grants") => self.grant.clone(),
                ("{id}", "keys") => self.key_id.clone(),
                ("{id}", "principals") => self.b_users[1].clone(),
                (s, _) if s.starts_with('{') => {
                    return Err(format!(
                        "{template}: the isolation test cannot fill {s} after {previous:?}; teach World::fill its kind"
                    ));
                }
                (s, _) => s.to_owned(),
            };
            out.push(value);
            previous = segment;
        }
        Ok(out.join("/"))
    }

    /// A string for a body field named `name`, aimed at B.
    fn field(&self, name: &str) -> Value {
        let tampered = tamper_text(&self.b_refresh);
        match name {
            "tenant" => json!(self.shape.b),
            "email" => json!(self.b_emails[1]),
            n if n.contains("password") => json!("not the password of anyone"),
            n if n.contains("token") || n == "challenge" => json!(tampered),
            "code" => json!("000000"),
            "key" => json!(self.key_secret),
            "role" => json!(self.shape.roles[0]),
            "permission" => json!("user:read"),
            "resource" => json!(format!(
                "{}/{}",
                self.shape.resource_type, self.shape.resource
            )),
            "meter" => json!(self.shape.meter),
            "name" | "description" | "reason" => json!("Eve was here"),
            _ => json!(self.b_users[1]),
        }
    }

    /// A body of `schema` whose required fields name B's things.
    fn body(&self, doc: &Value, schema: &Value, name: &str, depth: usize) -> Value {
        let schema = resolve(doc, schema);
        if let Some(values) = schema.get("enum").and_then(Value::as_array) {
            return values.first().cloned().unwrap_or(Value::Null);
        }
        if let Some(options) = schema.get("oneOf").or_else(|| schema.get("anyOf")) {
            let first = options.as_array().and_then(|o| o.first()).cloned();
            return self.body(doc, &first.unwrap_or(Value::Null), name, depth + 1);
        }
        let kind = match &schema["type"] {
            Value::String(t) => t.as_str(),
            Value::Array(ts) => ts
                .iter()
                .filter_map(Value::as_str)
                .find(|t| *t != "null")
                .unwrap_or("null"),
            _ if schema.get("properties").is_some() => "object",
            _ => "string",
        };
        match kind {
            "object" if depth < 4 => {
                let mut out = serde_json::Map::new();
                for field in schema["required"].as_array().into_iter().flatten() {
                    let field = field.as_str().unwrap();
                    let property = &schema["properties"][field];
                    out.insert(field.to_owned(), self.body(doc, property, field, depth + 1));
                }
                Value::Object(out)
            }
            "array" => json!([self.body(doc, &schema["items"], name, depth + 1)]),
            "integer" | "number" => json!(1),
            "boolean" => json!(false),
            "null" => Value::Null,
            _ => self.field(name),
        }
    }

    /// B's administrator's access token, forged four ways with B's signature kept or dropped.
    fn forged_tokens(&self) -> Vec<(&'static str, String)> {
        let parts: Vec<&str> = self.b_token.split('.').collect();
        let header: Value = serde_json::from_slice(&base64_url_decode(parts[0])).unwrap();
        let claims: Value = serde_json::from_slice(&base64_url_decode(parts[1])).unwrap();
        let encode = |v: &Value| base64_url(&serde_json::to_vec(v).unwrap());
        let mut none = header.clone();
        none["alg"] = json!("none");
        let with_claim = |field: &str, value: Value| {
            let mut c = claims.clone();
            c[field] = value;
            format!("{}.{}.{}", parts[0], encode(&c), parts[2])
        };
        vec![
            (
                "a flipped signature byte",
                format!("{}.{}.{}", parts[0], parts[1], tamper_text(parts[2])),
            ),
            ("alg none", format!("{}.{}.", encode(&none), parts[1])),
            ("another audience", with_claim("aud", json!("elsewhere"))),
            (
                "A's tenant claimed",
                with_claim("tenant", json!(self.shape.a)),
            ),
        ]
    }
}

/// `text` with one character in its middle changed.
fn tamper_text(text: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    let at = bytes.len() / 2;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => resolve(
            doc,
            &doc["components"]["schemas"][r.trim_start_matches("#/components/schemas/")],
        ),
        None => schema,
    }
}

/// Operations that act on the caller's own account: the attacker may use them on themself, so
/// they run last, and may append only to A's streams.
fn own_account(path: &str) -> bool {
    matches!(
        path,
        "/v1/auth/logout"
            | "/v1/auth/password"
            | "/v1/auth/mfa/totp"
            | "/v1/auth/mfa/totp/confirm"
            | "/v1/auth/mfa/totp/disable"
            | "/v1/auth/mfa/recovery-codes"
    )
}

/// Operations that take a credential instead of a token: a failure there records a failed
/// sign-in, by design.
fn presents_credential(path: &str) -> bool {
    matches!(
        path,
        "/v1/auth/login"
            | "/v1/auth/refresh"
            | "/v1/auth/invitations/accept"
            | "/v1/auth/password/reset"
            | "/v1/auth/mfa/verify"
    )
}

/// The events a failed sign-in appends, whatever the account.
fn records_a_failed_sign_in(event_type: &str) -> bool {
    event_type.ends_with("login_failed")
        || event_type.ends_with("login_throttled")
        || event_type.ends_with("locked")
}

struct Call {
    label: String,
    /// The path and body sent: what the attacker already holds.
    sent: String,
    status: u16,
    body: String,
}

async fn call(
    app: &App,
    method: &Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<&Value>,
) -> Call {
    let mut request = app.client.request(method.clone(), app.url(path));
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    Call {
        label: format!("{method} {path}"),
        sent: format!("{path} {}", body.map(Value::to_string).unwrap_or_default()),
        status,
        body: response.text().await.unwrap(),
    }
}

/// Fails if `call` carries anything of B's that the attacker did not send: a refusal may repeat
/// the id it was asked for ("no role x"), which tells nothing.
fn leaks_nothing(world: &World, call: &Call, problems: &mut Vec<String>) {
    for secret in &world.secrets {
        if call.body.contains(secret.as_str()) && !call.sent.contains(secret.as_str()) {
            problems.push(format!(
                "{} -> {} shows B's {secret:?}: {:.300}",
                call.label, call.status, call.body
            ));
        }
    }
}

async fn head(app: &App) -> u64 {
    app.store.head().await.unwrap().position
}

async fn appended_since(app: &App, position: u64) -> Vec<(String, String)> {
    let records = app.store.read_all(position + 1, 10_000).await.unwrap();
    records
        .into_iter()
        .map(|r| (r.stream.to_string(), r.event_type.to_string()))
        .collect()
}

async fn attack(app: &App, doc: &Value, world: &World) -> Vec<String> {
    let mut problems = vec![];
    let mut operations = vec![];
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            operations.push((path.clone(), method, operation.clone()));
        }
    }
    // The hand-made bodies of every tenant route, aimed at B's objects, so a refusal is never
    // for a malformed body.
    let table = crate::authz_http::tenant_routes(
        &world.shape.b,
        &world.b_users[1],
        &world.grant,
        &world.assignment,
        &world.key_id,
    );
    let body_of = |path: &str, method: &Method, operation: &Value| -> Option<Value> {
        if let Some((_, _, _, body)) = table.iter().find(|(m, t, _, _)| m == method && *t == path) {
            return body.clone();
        }
        let schema = operation["requestBody"]["content"]["application/json"].get("schema")?;
        Some(world.body(doc, schema, "", 0))
    };
    let forged = world.forged_tokens();

    // With A's token and with forged ones, on every operation but the attacker's own account
    // and the sign-in routes: all refused, nothing appended.
    let before = head(app).await;
    for (path, method, operation) in &operations {
        if own_account(path) || presents_credential(path) {
            continue;
        }
        let body = body_of(path, method, operation);
        let needs_token = operation
            .get("security")
            .and_then(Value::as_array)
            .is_some_and(|s| !s.is_empty());
        let concrete = match world.fill(path, &world.shape.b) {
            Ok(concrete) => concrete,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        let names_b = path.contains('{');
        let c = call(app, method, &concrete, Some(&world.attacker), body.as_ref()).await;
        leaks_nothing(world, &c, &mut problems);
        if names_b && c.status != 404 {
            problems.push(format!(
                "{} as A's administrator -> {} (expected 404): {:.300}",
                c.label, c.status, c.body
            ));
        }
        // The same ids of B under A's own name, where the route names an object by its id.
        let by_id = ["{user_id}", "{session_id}", "{role}", "{id}"]
            .iter()
            .any(|p| path.contains(p))
            && !path.contains("{type}")
            && path.starts_with("/v1/tenants/{tenant}/");
        if by_id && *method != Method::PUT {
            let in_a = world.fill(path, &world.shape.a).unwrap();
            let c = call(app, method, &in_a, Some(&world.attacker), body.as_ref()).await;
            leaks_nothing(world, &c, &mut problems);
            if c.status != 404 {
                problems.push(format!(
                    "{} (B's id in A) -> {} (expected 404): {:.300}",
                    c.label, c.status, c.body
                ));
            }
        }
        for (how, token) in &forged {
            let c = call(app, method, &concrete, Some(token), body.as_ref()).await;
            leaks_nothing(world, &c, &mut problems);
            if needs_token && c.status != 401 {
                problems.push(format!(
                    "{} with B's token forged by {how} -> {} (expected 401): {:.300}",
                    c.label, c.status, c.body
                ));
            }
            if c.status < 300 && names_b {
                problems.push(format!(
                    "{} with B's token forged by {how} was answered {}",
                    c.label, c.status
                ));
            }
        }
    }
    // Asking for a checkpoint signs one of the whole log when none covers its head yet: that
    // names no tenant, and is the one append a read makes.
    let appended: Vec<_> = appended_since(app, before)
        .await
        .into_iter()
        .filter(|(stream, _)| stream != "_system/ledger/checkpoints")
        .collect();
    if !appended.is_empty() {
        problems.push(format!(
            "refused requests appended to the log: {appended:?}"
        ));
    }

    // The sign-in routes with B's emails and forged tokens: refused, and what they append is
    // only the record of a failed sign-in.
    let before = head(app).await;
    for (path, method, operation) in &operations {
        if !presents_credential(path) {
            continue;
        }
        let body = body_of(path, method, operation);
        for bearer in [None, Some(world.attacker.as_str())] {
            let c = call(app, method, path, bearer, body.as_ref()).await;
            leaks_nothing(world, &c, &mut problems);
            if !(400..500).contains(&c.status) {
                problems.push(format!(
                    "{} with {} -> {} (expected a refusal): {:.300}",
                    c.label,
                    body.clone().unwrap_or_default(),
                    c.status,
                    c.body
                ));
            }
        }
    }
    for (stream, event_type) in appended_since(app, before).await {
        if !records_a_failed_sign_in(&event_type) {
            problems.push(format!(
                "a refused sign-in appended {event_type} to {stream}"
            ));
        }
    }

    // The attacker's own account last (logging out ends their token): nothing of B's is
    // touched or shown.
    let before = head(app).await;
    let mut own: Vec<_> = operations
        .iter()
        .filter(|(p, _, _)| own_account(p))
        .collect();
    own.sort_by_key(|(p, _, _)| p == "/v1/auth/logout");
    for (path, method, operation) in own {
        let body = body_of(path, method, operation);
        let c = call(app, method, path, Some(&world.attacker), body.as_ref()).await;
        leaks_nothing(world, &c, &mut problems);
    }
    let a_streams = format!("{}/", world.shape.a);
    for (stream, event_type) in appended_since(app, before).await {
        if !stream.starts_with(&a_streams) {
            problems.push(format!(
                "the attacker's own account appended {event_type} to {stream}"
            ));
        }
    }
    problems
}

#[test]
fn an_administrator_of_one_tenant_reaches_nothing_of_another() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(ProptestConfig {
        cases: WORLDS,
        failure_persistence: None,
        // A failing world is reported as generated: shrinking would rebuild a server per step.
        max_shrink_iters: 0,
        ..ProptestConfig::default()
    });
    runner
        .run(&shape(), |shape| {
            let problems = rt.block_on(async {
                let Admined { app, root, .. } = setup().await;
                let doc: Value = app
                    .client
                    .get(app.url("/openapi.json"))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let world = build(&app, &root, shape).await;
                attack(&app, &doc, &world).await
            });
            let unique: BTreeSet<String> = problems.into_iter().collect();
            prop_assert!(
                unique.is_empty(),
                "{} ways in:\n{}",
                unique.len(),
                unique.into_iter().collect::<Vec<_>>().join("\n")
            );
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}
