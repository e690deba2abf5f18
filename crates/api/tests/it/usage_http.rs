//! Usage over HTTP: many concurrent clients with retried idempotency keys sum exactly, and bad
//! input, batches too large and hard quotas answer with problem documents.

use std::collections::HashSet;
use std::sync::Arc;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{create_tenant, expect, problem, send, setup};

const TENANT: &str = "meterco";
const POSTS: usize = 10_000;
const CLIENTS: usize = 64;
/// Every tenth post repeats the key of an earlier one.
const DUPLICATE_EVERY: usize = 10;

fn quantity(key: usize) -> u64 {
    (key % 7) as u64 + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_concurrent_posts_with_ten_percent_duplicate_keys_sum_exactly() {
    let s = setup().await;
    create_tenant(&s.app, &s.root, TENANT).await;
    // Post i carries key i, except every tenth, which repeats the key of the post before it.
    let keys: Vec<usize> = (0..POSTS)
        .map(|i| if i % DUPLICATE_EVERY == 9 { i - 1 } else { i })
        .collect();
    let unique: HashSet<usize> = keys.iter().copied().collect();
    let expected: u64 = unique.iter().map(|k| quantity(*k)).sum();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let keys = Arc::new(keys);
    let url = s.app.url(&format!("/v1/tenants/{TENANT}/usage"));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let (next, keys, url, root) = (next.clone(), keys.clone(), url.clone(), s.root.clone());
        let http = s.app.client.clone();
        clients.spawn(async move {
            let mut duplicates = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(key) = keys.get(i) else {
                    return duplicates;
                };
                let r = http
                    .post(&url)
                    .bearer_auth(&root)
                    .json(&json!({
                        "meter": "requests",
                        "quantity": quantity(*key),
                        "subject": format!("client-{}", key % 8),
                        "idempotency_key": format!("req-{key}"),
                    }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["accepted"], true);
                if body["duplicate"] == true {
                    duplicates += 1;
                }
            }
        });
    }
    let duplicates: usize = clients.join_all().await.into_iter().sum();
    assert_eq!(duplicates, POSTS - unique.len());

    let r = send(
        &s.app,
        Method::GET,
        &format!("/v1/tenants/{TENANT}/usage?meter=requests"),
        &s.root,
        None,
    )
    .await;
    let view = expect(r, 200).await;
    assert_eq!(view["used"], expected);
    assert_eq!(view["limit"], Value::Null, "requests has no quota");

    // Rolled up: far fewer events than records, and every key exactly once.
    let mut recorded = 0;
    let mut keys_seen = HashSet::new();
    let mut position = 1;
    loop {
        let page = s.app.store.read_all(position, 1_000).await.unwrap();
        let Some(last) = page.last() else { break };
        position = last.position + 1;
        for e in page
            .iter()
            .filter(|e| e.event_type.as_str() == "usage.recorded")
        {
            recorded += 1;
            for k in e.data["idempotency_keys"].as_array().unwrap() {
                assert!(
                    keys_seen.insert(k.as_str().unwrap().to_owned()),
                    "{k} twice"
                );
            }
        }
    }
    assert_eq!(keys_seen.len(), unique.len());
    eprintln!(
        "{} records in {recorded} usage.recorded events",
        unique.len()
    );
    assert!(
        recorded * 3 < unique.len() * 2,
        "{recorded} events for {} records",
        unique.len()
    );
}

#[tokio::test]
async fn bad_usage_input_is_a_4xx_problem() {
    let s = setup().await;
    create_tenant(&s.app, &s.root, TENANT).await;
    let path = format!("/v1/tenants/{TENANT}/usage");
    let good = json!({"meter": "api_calls", "quantity": 1, "subject": "a", "idempotency_key": "k"});
    let mut cases = vec![];
    for (field, value) in [
        ("meter", json!("API calls")),
        ("quantity", json!(0)),
        ("quantity", json!(-3)),
        ("quantity", json!(1.5)),
        ("subject", json!("")),
        ("idempotency_key", json!("has space")),
        ("unknown", json!(1)),
    ] {
        let mut body = good.clone();
        body[field] = value;
        cases.push(body);
    }
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("idempotency_key");
    cases.push(missing);
    for body in cases {
        let r = send(&s.app, Method::POST, &path, &s.root, Some(body.clone())).await;
        let (status, problem) = problem(r).await;
        assert_eq!(status, 422, "{body}: {problem}");
        assert_eq!(problem["code"], "validation_failed");
    }
    let records: Vec<Value> = (0..1001)
        .map(|i| json!({"meter": "api_calls", "quantity": 1, "subject": "a", "idempotency_key": format!("k{i}")}))
        .collect();
    let r = send(
        &s.app,
        Method::POST,
        &format!("{path}/batch"),
        &s.root,
        Some(json!({ "records": records })),
    )
    .await;
    let (status, body) = problem(r).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("1000"), "{body}");
    for query in ["", "?meter=api_calls&period=2026-13", "?meter=Bad+Meter"] {
        let r = send(
            &s.app,
            Method::GET,
            &format!("{path}{query}"),
            &s.root,
            None,
        )
        .await;
        assert_eq!(problem(r).await.0, 422, "{query}");
    }
    // Another tenant's usage does not exist for its members, and bad quotas are refused too.
    let r = send(
        &s.app,
        Method::PUT,
        &format!("/v1/tenants/{TENANT}/quotas/api_calls"),
        &s.root,
        Some(json!({"limit": -1, "hard": true})),
    )
    .await;
    assert_eq!(problem(r).await.0, 422);
}

#[tokio::test]
async fn a_hard_quota_answers_429_quota_exceeded_with_retry_after() {
    let s = setup().await;
    create_tenant(&s.app, &s.root, TENANT).await;
    let r = send(
        &s.app,
        Method::PUT,
        &format!("/v1/tenants/{TENANT}/quotas/api_calls"),
        &s.root,
        Some(json!({"limit": 2, "hard": true})),
    )
    .await;
    assert_eq!(expect(r, 200).await["event"], "quota.set");
    let post = |key: &str| json!({"meter": "api_calls", "quantity": 1, "subject": "a", "idempotency_key": key});
    let path = format!("/v1/tenants/{TENANT}/usage");
    for key in ["a", "b"] {
        let r = send(&s.app, Method::POST, &path, &s.root, Some(post(key))).await;
        assert_eq!(expect(r, 200).await["duplicate"], false);
    }
    let r = send(&s.app, Method::POST, &path, &s.root, Some(post("c"))).await;
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let (status, body) = problem(r).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("quota_exceeded"))
    );
    let r = send(
        &s.app,
        Method::GET,
        &format!("{path}?meter=api_calls"),
        &s.root,
        None,
    )
    .await;
    let view = expect(r, 200).await;
    assert_eq!(
        (&view["used"], &view["limit"], &view["remaining"]),
        (&json!(2), &json!(2), &json!(0))
    );
}
