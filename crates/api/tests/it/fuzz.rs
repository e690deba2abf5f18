//! A schema-driven fuzzer over `/openapi.json`: every documented operation, called by a logged-in
//! platform administrator with requests made from its own document (path, query and header
//! parameters, bodies generated from the request schema, and bodies that are missing, malformed
//! or of the wrong content type), answers with a status that operation documents, and never with
//! a 5xx other than a documented 503 (retry later). The generator is seeded, so a failure repeats.

use std::collections::BTreeMap;
use std::time::Duration;

use custodian_api::bootstrap::{Admin, bootstrap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{App, spawn_app_with};

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
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().join("custodian.db").display().to_string();
    let mut options = custodian_app::SecurityOptions::new(dir.path().join("secret.key"));
    options.login_ip_failures = u32::MAX;
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
