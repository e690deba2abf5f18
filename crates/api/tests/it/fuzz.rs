//! A schema-driven fuzzer over `/openapi.json`: every documented operation, called by a logged-in
//! platform administrator with requests made from its own document (path, query and header
//! parameters, bodies generated from the request schema, and bodies that are missing, malformed
//! or of the wrong content type), answers with a status that operation documents, and never with
//! a 5xx other than a documented 503 (retry later). The generator is seeded, so a failure repeats.

use std::collections::BTreeMap;
use std::time::Duration;

use custodian_api::bootstrap::{Admin, bootstrap};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{App, base64_url, base64_url_decode, spawn_app_with};

const ADMIN_EMAIL: &str = "fuzz@platform.test";
const ADMIN_PASSWORD: &str = "fuzzing passphrase of the admin";
/// Generated requests per operation, besides the fixed body cases.
const CASES: usize = 12;

/// Strings that have broken parsers before: empty, huge, odd characters, numbers out of range,
/// ids of the right and the wrong kind, the platform scope.
const NASTY: &[&str] = &[
    "",
    " ",
    "acme",
    "_system",
    "a",
    "ZZ",
    "-1",
    "0",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551616",
    "1e309",
    "true",
    "null",
    "user_01jd0000000000000000000000",
    "sess_01jd0000000000000000000000",
    "tnt_x",
    "%00",
    "../..",
    "é🦀",
    "a@b.c",
    "fuzz@platform.test",
];

fn nasty(rng: &mut StdRng) -> String {
    if rng.gen_bool(0.1) {
        "x".repeat(rng.gen_range(256..5000))
    } else {
        NASTY[rng.gen_range(0..NASTY.len())].to_owned()
    }
}

/// Resolves `{"$ref": "#/components/schemas/X"}` against the document.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.trim_start_matches("#/components/schemas/");
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => schema,
    }
}

/// A value for `schema`: usually of the documented type, sometimes not, sometimes nasty.
fn generate(doc: &Value, schema: &Value, rng: &mut StdRng, depth: usize) -> Value {
    let schema = resolve(doc, schema);
    if depth > 4 || rng.gen_bool(0.1) {
        return [
            json!(null),
            json!(-1),
            json!(u64::MAX),
            json!("x"),
            json!([]),
            json!({}),
        ][rng.gen_range(0..6)]
        .clone();
    }
    if let Some(options) = schema
        .get("oneOf")
        .or_else(|| schema.get("anyOf"))
        .and_then(Value::as_array)
        && !options.is_empty()
    {
        return generate(
            doc,
            &options[rng.gen_range(0..options.len())],
            rng,
            depth + 1,
        );
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array)
        && !values.is_empty()
        && rng.gen_bool(0.8)
    {
        return values[rng.gen_range(0..values.len())].clone();
    }
    let kind = match &schema["type"] {
        Value::String(t) => t.clone(),
        Value::Array(ts) => ts
            .get(rng.gen_range(0..ts.len().max(1)))
            .and_then(Value::as_str)
            .unwrap_or("string")
            .to_owned(),
        _ if schema.get("properties").is_some() => "object".to_owned(),
        _ => "string".to_owned(),
    };
    match kind.as_str() {
        "object" => {
            let mut out = serde_json::Map::new();
            let required: Vec<&str> = schema["required"]
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if let Some(properties) = schema["properties"].as_object() {
                for (name, property) in properties {
                    if required.contains(&name.as_str()) || rng.gen_bool(0.5) {
                        out.insert(name.clone(), generate(doc, property, rng, depth + 1));
                    }
                }
            }
            if rng.gen_bool(0.05) {
                out.insert("unexpected_field".into(), json!(1));
            }
            Value::Object(out)
        }
        "array" => {
            let n = rng.gen_range(0..4);
            Value::Array(
                (0..n)
                    .map(|_| generate(doc, &schema["items"], rng, depth + 1))
                    .collect(),
            )
        }
        "integer" | "number" => [
            json!(0),
            json!(1),
            json!(-1),
            json!(i64::MAX),
            json!(u64::MAX),
            json!(1.5),
        ][rng.gen_range(0..6)]
        .clone(),
        "boolean" => json!(rng.gen_bool(0.5)),
        "null" => Value::Null,
        _ => json!(nasty(rng)),
    }
}

/// A fresh server (short read wait, no per-address login throttle, so the fuzzer's own failed
/// logins do not lock it out) with a platform administrator and one tenant.
async fn setup() -> (App, String, String) {
    let (app, admin_id) = with_admin(|dir| {
        let mut options = custodian_app::SecurityOptions::new(dir.join("secret.key"));
        options.login_ip_failures = u32::MAX;
        options
    })
    .await;
    let token = login(&app).await;
    let r = app
        .client
        .post(app.url("/v1/tenants"))
        .bearer_auth(&token)
        .json(&json!({"slug": "acme", "name": "Acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    (app, admin_id, token)
}

/// A fresh server on its own data directory, with the security options `options` makes for that
/// directory, a short read wait and a platform administrator; the administrator's id.
async fn with_admin(
    options: impl FnOnce(&std::path::Path) -> custodian_app::SecurityOptions,
) -> (App, String) {
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().join("custodian.db").display().to_string();
    let options = options(dir.path());
    let app = spawn_app_with(
        location,
        Some(dir),
        None,
        Duration::from_millis(100),
        options,
    )
    .await;
    let security = &app.state.security;
    let admin_id = bootstrap(
        &app.store,
        &app.state.db,
        &security.keyring,
        &security.hasher,
        &security.policy,
        Admin {
            email: ADMIN_EMAIL,
            name: "Fuzz",
            password: ADMIN_PASSWORD,
        },
        custodian_app::Clock::now(&custodian_app::SystemClock),
    )
    .await
    .unwrap();
    (app, admin_id)
}

async fn login(app: &App) -> String {
    let r = app
        .client
        .post(app.url("/v1/auth/login"))
        .json(&json!({"tenant": "_system", "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the fuzzing administrator logs in");
    r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// How a generated request sends its body.
enum Body {
    None,
    Json(Value),
    Raw(&'static str, &'static str),
}

/// Operations that end the administrator's own session or lock their account run last, so the
/// rest are fuzzed with a live token.
fn order(path: &str, method: &str) -> u8 {
    match (path, method) {
        ("/v1/auth/logout", _) | ("/v1/auth/sessions/{session_id}", _) => 3,
        (p, _) if p.starts_with("/v1/auth/") && !p.contains("login") => 2,
        _ => 1,
    }
}

#[tokio::test]
async fn no_request_made_from_the_document_gets_a_5xx_or_an_undocumented_status() {
    let (app, admin_id, token) = setup().await;
    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut operations = vec![];
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            operations.push((path.clone(), method.clone(), operation.clone()));
        }
    }
    operations.sort_by_key(|(p, m, _)| order(p, m));
    let mut rng = StdRng::seed_from_u64(14);
    let mut failures: BTreeMap<String, String> = BTreeMap::new();
    let mut sent = 0;
    for (path, method, operation) in &operations {
        let documented = operation["responses"].as_object().unwrap();
        let takes_body = operation.get("requestBody").is_some();
        let body_schema = operation["requestBody"]["content"]["application/json"]["schema"].clone();
        let mut bodies = vec![];
        if takes_body {
            bodies.push(Body::None);
            bodies.push(Body::Raw("application/json", "{\"unterminated\": "));
            bodies.push(Body::Raw("text/plain", "{}"));
            bodies.push(Body::Raw("application/json", "[1, 2, 3]"));
        }
        for _ in 0..CASES {
            bodies.push(if takes_body {
                Body::Json(generate(&doc, &body_schema, &mut rng, 0))
            } else {
                Body::None
            });
        }
        let mut cases: Vec<(Body, Option<String>)> =
            bodies.into_iter().map(|b| (b, None)).collect();
        if method == "get" {
            // Positions just past what a database integer holds, and not numbers at all.
            for position in ["9223372036854775808", "18446744073709551616", "-1", "12abc"] {
                cases.push((Body::None, Some(position.to_owned())));
            }
        }
        for (body, min_position) in cases {
            let concrete: String = path
                .split('/')
                .map(|segment| match segment {
                    "{tenant}" => ["acme", "_system", "nope"][rng.gen_range(0..3)].to_owned(),
                    "{user_id}" if rng.gen_bool(0.5) => admin_id.clone(),
                    // A `/` inside a value is sent encoded: sent as is, `../..` would be
                    // resolved by the client into another route's path.
                    s if s.starts_with('{') => nasty(&mut rng).replace('/', "%2F"),
                    s => s.to_owned(),
                })
                .collect::<Vec<_>>()
                .join("/");
            let method_value = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let mut request = app.client.request(
                method_value,
                format!("{}{}", app.base, concrete.replace(' ', "%20")),
            );
            let mut query = vec![];
            for param in operation["parameters"].as_array().into_iter().flatten() {
                if param["in"] == "query" && rng.gen_bool(0.6) {
                    let value = match generate(&doc, &param["schema"], &mut rng, 0) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    query.push((param["name"].as_str().unwrap().to_owned(), value));
                }
            }
            request = request.query(&query);
            if rng.gen_bool(0.9) {
                request = request.bearer_auth(&token);
            }
            if let Some(position) = min_position {
                request = request.header("custodian-min-position", position);
            } else if method == "get" && rng.gen_bool(0.3) {
                request = request.header("custodian-min-position", nasty(&mut rng));
            }
            request = match body {
                Body::None => request,
                Body::Json(v) => request.json(&v),
                Body::Raw(content_type, text) => {
                    request.header("content-type", content_type).body(text)
                }
            };
            let response = request.send().await.unwrap();
            sent += 1;
            let status = response.status().as_u16();
            // A documented 503 says "retry later" (the views did not reach a position in time);
            // any other 5xx is a bug.
            let bug = status >= 500 && status != 503;
            if bug || !documented.contains_key(&status.to_string()) {
                let detail = response.text().await.unwrap_or_default();
                failures
                    .entry(format!("{} {path} -> {status}", method.to_uppercase()))
                    .or_insert(format!("e.g. {concrete}: {detail:.300}"));
            }
        }
    }
    assert!(sent > 300, "the fuzzer sent only {sent} requests");
    assert!(
        failures.is_empty(),
        "{} kinds of answers were 5xx or undocumented:\n{}",
        failures.len(),
        failures
            .iter()
            .map(|(k, v)| format!("  {k}  ({v})"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// Property tests of every parser that takes the bytes of a request: bodies, bearer credentials,
// refresh tokens, API keys, cursors, headers and path ids. Each runs `PROPTEST_CASES` cases (64
// unless set) per route or per parser against one server, driven from the test's thread.

/// A server for property tests, with a tenant `acme`, one of its users, and the platform
/// administrator's access and refresh tokens.
struct Target {
    rt: tokio::runtime::Runtime,
    app: App,
    doc: Value,
    token: String,
    refresh_token: String,
    user_id: String,
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(64)
}

fn runner() -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

/// No request rate limit or login throttle gets in the way of thousands of requests.
fn unthrottled(dir: &std::path::Path) -> custodian_app::SecurityOptions {
    let mut options = custodian_app::SecurityOptions::new(dir.join("secret.key"));
    options.login_ip_failures = u32::MAX;
    let rule = custodian_app::ratelimit::RateRule {
        limit: u32::MAX,
        window_seconds: 1,
    };
    let tier = custodian_app::ratelimit::RateTier {
        tenant: rule,
        principal: rule,
    };
    options.rate_tiers = custodian_app::ratelimit::RateTiers {
        free: tier,
        team: tier,
        enterprise: tier,
    };
    options
}

fn target() -> Target {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (app, doc, token, refresh_token, user_id) = rt.block_on(async {
        let (app, _) = with_admin(unthrottled).await;
        let login: Value = app
            .client
            .post(app.url("/v1/auth/login"))
            .json(&json!({"tenant": "_system", "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = login["access_token"].as_str().unwrap().to_owned();
        let refresh_token = login["refresh_token"].as_str().unwrap().to_owned();
        let r = app
            .client
            .post(app.url("/v1/tenants"))
            .bearer_auth(&token)
            .json(&json!({"slug": "acme", "name": "Acme"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let r = app
            .client
            .post(app.url("/v1/tenants/acme/users"))
            .bearer_auth(&token)
            .json(&json!({"email": "ada@acme.test", "name": "Ada", "password": "a long enough passphrase"}))
            .send()
            .await
            .unwrap();
        let text = r.text().await.unwrap();
        let user: Value = serde_json::from_str(&text).unwrap();
        let user_id = user["user_id"].as_str().unwrap_or_else(|| panic!("{text}")).to_owned();
        let doc: Value = app
            .client
            .get(app.url("/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (app, doc, token, refresh_token, user_id)
    });
    Target {
        rt,
        app,
        doc,
        token,
        refresh_token,
        user_id,
    }
}

/// An answer as far as these properties look at it.
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

impl Target {
    fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        self.rt.block_on(async {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = response.text().await.unwrap_or_default();
            Answer {
                status,
                content_type,
                body,
            }
        })
    }

    /// The document's operations as (path, method, operation).
    fn operations(&self) -> Vec<(String, String, Value)> {
        let mut out = vec![];
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                out.push((path.clone(), method.clone(), operation.clone()));
            }
        }
        out
    }

    /// `path` with its parameters filled by ids that exist, so a request reaches the parsers
    /// behind the route.
    fn concrete(&self, path: &str) -> String {
        path.split('/')
            .map(|segment| match segment {
                "{tenant}" => "acme".to_owned(),
                "{user_id}" => self.user_id.clone(),
                "{role}" => "viewer".to_owned(),
                "{type}" => "user".to_owned(),
                "{meter}" => "api_calls".to_owned(),
                "{group}" => "staff".to_owned(),
                s if s.starts_with('{') => "key_01jd0000000000000000000000".to_owned(),
                s => s.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// An answer that refuses must be a problem document; none may be a server error.
fn refused_well(what: &str, answer: &Answer) -> Result<(), TestCaseError> {
    prop_assert!(
        answer.status < 500,
        "{what} -> {}: {:.300}",
        answer.status,
        answer.body
    );
    if answer.status >= 400 {
        prop_assert_eq!(
            answer.content_type.as_str(),
            "application/problem+json",
            "{} -> {}: {:.300}",
            what,
            answer.status,
            answer.body
        );
        let problem: Value = serde_json::from_str(&answer.body).map_err(|e| {
            TestCaseError::fail(format!("{what}: not JSON ({e}): {:.300}", answer.body))
        })?;
        prop_assert_eq!(problem["status"].as_u64(), Some(u64::from(answer.status)));
    }
    Ok(())
}

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::from),
        "[a-z_]{1,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            proptest::collection::btree_map("[a-z_]{1,16}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An object whose fields are the schema's own names with any values, so most bodies get past
/// the shape into the use case's own checks.
fn shaped_body(doc: &Value, schema: &Value) -> BoxedStrategy<Value> {
    let schema = resolve(doc, schema);
    let names: Vec<String> = schema["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    if names.is_empty() {
        return json_value().boxed();
    }
    proptest::collection::btree_map(proptest::sample::select(names), json_value(), 0..8)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
        .boxed()
}

/// Operations that would end the administrator's own session; the properties leave them out so
/// every request is made with a live token (their bodies are the same kinds the rest take).
fn ends_own_session(path: &str) -> bool {
    path == "/v1/auth/logout"
        || path == "/v1/auth/sessions/{session_id}"
        || path == "/v1/auth/password"
}

#[test]
fn any_json_or_bytes_sent_to_any_route_is_refused_with_a_problem() {
    let t = target();
    let mut tried = 0;
    for (path, method, operation) in t.operations() {
        let Some(schema) = operation["requestBody"]["content"]["application/json"]
            .get("schema")
            .cloned()
        else {
            continue;
        };
        if ends_own_session(&path) {
            continue;
        }
        tried += 1;
        let url = t.app.url(&t.concrete(&path));
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let strategy = prop_oneof![
            json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
            shaped_body(&t.doc, &schema).prop_map(|v| serde_json::to_vec(&v).unwrap()),
            proptest::collection::vec(any::<u8>(), 0..300),
        ];
        runner()
            .run(&strategy, |bytes| {
                let answer = t.send(
                    t.app
                        .client
                        .request(method.clone(), &url)
                        .bearer_auth(&t.token)
                        .header("content-type", "application/json")
                        .body(bytes.clone()),
                );
                let what = format!(
                    "{method} {path} with {:.200}",
                    String::from_utf8_lossy(&bytes)
                );
                refused_well(&what, &answer)?;
                // What is not JSON is malformed (400), or of the wrong shape as far as it was
                // read (422); it is never taken.
                if serde_json::from_slice::<Value>(&bytes).is_err() {
                    prop_assert!(
                        answer.status == 400 || answer.status == 422,
                        "{} -> {}: {:.300}",
                        what,
                        answer.status,
                        answer.body
                    );
                }
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(tried > 30, "only {tried} operations take a JSON body");
}

/// A credential that is not one: an access token altered in one character, cut short, with its
/// header or claims replaced (`alg: none`, another audience or tenant) and its signature kept;
/// strings that look like API keys; and anything else a header can carry.
fn forged_credential(token: String) -> impl Strategy<Value = String> {
    let parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let b64 = |v: &Value| base64_url(&serde_json::to_vec(v).unwrap());
    let claims: Value = serde_json::from_slice(&base64_url_decode(&parts[1])).unwrap();
    let header: Value = serde_json::from_slice(&base64_url_decode(&parts[0])).unwrap();
    let mut edited = vec![];
    for (field, value) in [
        ("aud", json!("another-audience")),
        ("tenant", json!("acme")),
        ("iss", json!("https://elsewhere.test")),
        ("exp", json!(9_999_999_999u64)),
        ("sub", json!("user_01jd0000000000000000000000")),
    ] {
        let mut c = claims.clone();
        c[field] = value;
        edited.push(format!("{}.{}.{}", parts[0], b64(&c), parts[2]));
    }
    for alg in ["none", "HS256", "RS256", "ES256"] {
        let mut h = header.clone();
        h["alg"] = json!(alg);
        edited.push(format!("{}.{}.{}", b64(&h), parts[1], parts[2]));
        edited.push(format!("{}.{}.", b64(&h), parts[1]));
    }
    let len = token.len();
    let flipped = token.clone();
    let cut = token.clone();
    prop_oneof![
        (
            0..len,
            proptest::sample::select(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.".to_vec()
            )
        )
            .prop_filter_map("the same character", move |(at, c)| {
                let mut bytes = flipped.clone().into_bytes();
                (bytes[at] != c).then(|| {
                    bytes[at] = c;
                    String::from_utf8(bytes).unwrap()
                })
            }),
        (0..len).prop_map(move |at| cut[..at].to_owned()),
        proptest::sample::select(edited),
        "cst_[0-9A-Za-z]{36}",
        "cst_[0-9A-Za-z]{0,50}",
        "[A-Za-z0-9]{30}".prop_map(|r| custodian_domain::key::assemble(&r).unwrap()),
        "[\\x20-\\x7e]{0,200}",
        "[A-Za-z0-9_\\-]{1,40}\\.[A-Za-z0-9_\\-]{0,200}\\.[A-Za-z0-9_\\-]{0,90}",
    ]
}

#[test]
fn a_forged_or_garbled_bearer_credential_is_refused_with_401() {
    let t = target();
    let me = t.app.url("/v1/auth/me");
    let good = t.send(t.app.client.get(&me).bearer_auth(&t.token));
    assert_eq!(good.status, 200, "{}", good.body);
    let strategy = (
        forged_credential(t.token.clone()),
        proptest::sample::select(vec!["Bearer ", "bearer ", "Basic ", "", "Bearer  "]),
    );
    runner()
        .run(&strategy, |(credential, scheme)| {
            let value = format!("{scheme}{credential}");
            // A header cannot carry every string; what it cannot carry never reaches the server.
            let Ok(header) = reqwest::header::HeaderValue::from_str(&value) else {
                return Ok(());
            };
            let answer = t.send(t.app.client.get(&me).header("authorization", header));
            refused_well(&value, &answer)?;
            prop_assert_eq!(answer.status, 401, "{}: {:.300}", value, answer.body);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_forged_refresh_token_or_api_key_is_refused() {
    let t = target();
    let refresh = t.refresh_token.clone();
    let len = refresh.len();
    let strategy = prop_oneof![
        (0..len, "[A-Za-z0-9_\\-.]").prop_filter_map("the same character", move |(at, c)| {
            let mut text = refresh.clone();
            (text.get(at..=at)? != c).then(|| {
                text.replace_range(at..=at, &c);
                text
            })
        }),
        "rt\\.[a-z_]{1,10}\\.[a-z0-9_]{1,30}\\.[0-9]{1,20}\\.[A-Za-z0-9_\\-]{43}",
        any::<String>(),
    ];
    runner()
        .run(&strategy, |token| {
            let answer = t.send(
                t.app
                    .client
                    .post(t.app.url("/v1/auth/refresh"))
                    .json(&json!({"refresh_token": token})),
            );
            refused_well(&token, &answer)?;
            prop_assert!(
                answer.status == 401 || answer.status == 422,
                "refresh with {token:?} -> {}: {:.300}",
                answer.status,
                answer.body
            );
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let keys = prop_oneof![
        "cst_[0-9A-Za-z]{36}",
        "[A-Za-z0-9]{30}".prop_map(|r| custodian_domain::key::assemble(&r).unwrap()),
        any::<String>(),
    ];
    runner()
        .run(&keys, |key| {
            let answer = t.send(
                t.app
                    .client
                    .post(t.app.url("/v1/keys/verify"))
                    .bearer_auth(&t.token)
                    .json(&json!({"key": key})),
            );
            refused_well(&key, &answer)?;
            // An unknown key is never valid.
            if answer.status == 200 {
                let v: Value = serde_json::from_str(&answer.body).unwrap();
                prop_assert_eq!(&v["valid"], &json!(false), "{}", answer.body);
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn any_cursor_or_limit_is_answered_with_a_page_or_a_problem() {
    let t = target();
    let mut listings = 0;
    for (path, method, operation) in t.operations() {
        let takes = |name: &str| {
            operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["in"] == "query" && p["name"] == name)
        };
        if method != "get" || !takes("cursor") {
            continue;
        }
        listings += 1;
        let url = t.app.url(&t.concrete(&path));
        let strategy = (
            prop_oneof![
                any::<String>(),
                "(user|sess|key|role|tnt|grant)_[0-9a-z]{20,30}",
                "[0-9]{1,25}",
            ],
            proptest::option::of(prop_oneof![any::<String>(), "-?[0-9]{1,12}"]),
        );
        runner()
            .run(&strategy, |(cursor, limit)| {
                let mut query = vec![("cursor", cursor.clone())];
                if let Some(limit) = &limit {
                    query.push(("limit", limit.clone()));
                }
                let answer = t.send(t.app.client.get(&url).bearer_auth(&t.token).query(&query));
                refused_well(
                    &format!("GET {path}?cursor={cursor:?}&limit={limit:?}"),
                    &answer,
                )?;
                prop_assert!(
                    answer.status == 200 || answer.status == 400 || answer.status == 422,
                    "GET {} ?cursor={:?} -> {}: {:.300}",
                    path,
                    cursor,
                    answer.status,
                    answer.body
                );
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(listings >= 4, "only {listings} listings take a cursor");
}

#[test]
fn any_min_position_or_content_type_header_is_answered_with_a_problem_or_a_result() {
    let t = target();
    let users = t.app.url("/v1/tenants/acme/users");
    let positions = prop_oneof![
        "[\\x20-\\x7e]{0,30}",
        " ?[+\\-]?[0-9]{1,22} ?",
        (0u64..50).prop_map(|n| n.to_string()),
    ];
    runner()
        .run(&positions, |position| {
            let Ok(header) = reqwest::header::HeaderValue::from_str(&position) else {
                return Ok(());
            };
            let answer = t.send(
                t.app
                    .client
                    .get(&users)
                    .bearer_auth(&t.token)
                    .header("custodian-min-position", header),
            );
            // A position the views have not reached within the wait is a documented 503.
            if answer.status != 503 {
                refused_well(&format!("Custodian-Min-Position: {position:?}"), &answer)?;
            }
            let expected: &[u16] = match position.trim().parse::<u64>() {
                Ok(n) if n <= i64::MAX as u64 => &[200, 503],
                _ => &[400],
            };
            prop_assert!(
                expected.contains(&answer.status),
                "Custodian-Min-Position: {:?} -> {}: {:.300}",
                position,
                answer.status,
                answer.body
            );
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let check = t.app.url("/v1/tenants/acme/check");
    let body = json!({"principal": {"type": "user", "id": t.user_id}, "permission": "users:read"});
    let content_types = prop_oneof![
        "[\\x20-\\x7e]{0,40}",
        "(application|text|multipart)/(json|[a-z+\\-]{1,20}json|plain|form-data)(; ?charset=[a-z0-9\\-]{1,10})?",
    ];
    runner()
        .run(&content_types, |content_type| {
            let Ok(header) = reqwest::header::HeaderValue::from_str(&content_type) else {
                return Ok(());
            };
            let answer = t.send(
                t.app
                    .client
                    .post(&check)
                    .bearer_auth(&t.token)
                    .header("content-type", header)
                    .body(body.to_string()),
            );
            refused_well(&format!("Content-Type: {content_type:?}"), &answer)?;
            prop_assert!(
                [200, 415, 422].contains(&answer.status),
                "Content-Type: {:?} -> {}: {:.300}",
                content_type,
                answer.status,
                answer.body
            );
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn any_path_id_is_answered_with_a_problem_or_a_result() {
    let t = target();
    let operations: Vec<_> = t
        .operations()
        .into_iter()
        .filter(|(path, _, _)| path.contains('{') && !ends_own_session(path))
        .collect();
    assert!(operations.len() > 20);
    let strategy = (
        proptest::sample::select(operations),
        proptest::collection::vec(
            prop_oneof![
                any::<String>(),
                "[a-z]{2,5}_[0-9a-z]{24,28}",
                "[\\x21-\\x7e]{1,20}",
                Just("acme".to_owned()),
                Just("_system".to_owned()),
            ],
            6,
        ),
    );
    runner()
        .run(&strategy, |((path, method, _), values)| {
            let mut url = reqwest::Url::parse(&t.app.base).unwrap();
            let mut values = values.into_iter();
            {
                let mut segments = url.path_segments_mut().unwrap();
                segments.clear();
                for segment in path.trim_start_matches('/').split('/') {
                    if segment.starts_with('{') {
                        segments.push(&values.next().unwrap());
                    } else {
                        segments.push(segment);
                    }
                }
            }
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let answer = t.send(
                t.app
                    .client
                    .request(method.clone(), url.clone())
                    .bearer_auth(&t.token)
                    .json(&json!({})),
            );
            refused_well(&format!("{method} {url}"), &answer)
        })
        .unwrap_or_else(|e| panic!("{e}"));
}
