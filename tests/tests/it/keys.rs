//! API keys end to end: the real `custodian` binary, publishing to a real `nats-server`. A key is
//! shown once; the database files, the server's log and the NATS messages never hold it (nor its
//! random part), and the usage counted before shutdown is on the log after it.

use std::time::Duration;

use custodian_testkit::deployment::Deployment;
use custodian_testkit::nats::NatsServer;
use serde_json::{Value, json};

const ADMIN_EMAIL: &str = "root@platform.test";
const ADMIN_PASSWORD: &str = "correct horse battery staple";

fn contains(haystack: &[u8], needle: &str) -> bool {
    let needle = needle.as_bytes();
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

struct Api {
    base: String,
    client: reqwest::Client,
    /// The position of the last command answered: reads wait for the views to reach it.
    seen: std::sync::atomic::AtomicU64,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        use std::sync::atomic::Ordering;
        let mut r = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(bearer)
            .header(
                "custodian-min-position",
                self.seen.load(Ordering::SeqCst).to_string(),
            );
        if let Some(body) = body {
            r = r.json(&body);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        if let Some(p) = body.get("position").and_then(Value::as_u64) {
            self.seen.fetch_max(p, Ordering::SeqCst);
        }
        (status, body)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_full_key_reaches_the_database_the_logs_or_the_nats_messages() {
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    let ledger = Deployment::sqlite();
    ledger.bootstrap(ADMIN_EMAIL, "Root", ADMIN_PASSWORD).await;
    let nats_url = nats.url();
    let server = ledger.serve(&["--nats-url", &nats_url]).await;
    let api = Api {
        base: server.base.clone(),
        client: reqwest::Client::new(),
        seen: std::sync::atomic::AtomicU64::new(0),
    };
    let login = api
        .client
        .post(format!("{}/v1/auth/login", api.base))
        .json(&json!({"tenant": "_system", "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let login: Value = login.json().await.unwrap();
    let root = login["access_token"].as_str().unwrap().to_owned();

    use reqwest::Method;
    let (status, made) = api
        .call(
            Method::POST,
            "/v1/tenants/_system/keys",
            &root,
            Some(json!({"name": "gateway", "scopes": ["tenant:read", "key:read"]})),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let first = made["key"].as_str().unwrap().to_owned();
    let id = made["id"].as_str().unwrap().to_owned();
    let (status, rotated) = api
        .call(
            Method::POST,
            &format!("/v1/tenants/_system/keys/{id}/rotate"),
            &root,
            Some(json!({"grace_seconds": 600})),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let second = rotated["key"].as_str().unwrap().to_owned();

    // Both secrets work, as bearer credentials and through verify; a typo is a plain 401.
    for key in [&first, &second] {
        let (status, body) = api
            .call(Method::GET, "/v1/tenants/_system/keys", key, None)
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = api
            .call(
                Method::POST,
                "/v1/keys/verify",
                &root,
                Some(json!({"key": key})),
            )
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (200, Some("VALID")),
            "{body}"
        );
    }
    let mut typo = second.clone();
    typo.replace_range(20..21, if &second[20..21] == "a" { "b" } else { "a" });
    let (status, _) = api
        .call(Method::GET, "/v1/tenants/_system/keys", &typo, None)
        .await;
    assert_eq!(status, 401);
    let (status, body) = api
        .call(
            Method::POST,
            "/v1/keys/verify",
            &root,
            Some(json!({"key": typo})),
        )
        .await;
    assert_eq!(body["code"], "MALFORMED", "{status} {body}");

    // Every event so far reaches JetStream.
    let mut relay = Value::Null;
    for _ in 0..400 {
        let body: Value = server
            .operations("/v1/admin/projections")
            .await
            .json()
            .await
            .unwrap();
        relay = body["relay"].clone();
        if relay["lag_events"] == 0 && relay["acknowledged_position"].as_u64() > Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(relay["lag_events"], 0, "{relay}");
    let published = relay["acknowledged_position"].as_u64().unwrap();

    let log = server.terminate_cleanly().await;

    let js = nats.jetstream().await;
    let mut stream = js.get_stream("CUSTODIAN").await.unwrap();
    let messages = stream.info().await.unwrap().state.messages;
    assert!(messages >= published, "{messages} < {published}");
    let mut feed = vec![];
    for seq in 1..=messages {
        feed.extend(stream.get_raw_message(seq).await.unwrap().payload.to_vec());
    }
    assert!(contains(&feed, "key.issued") && contains(&feed, "key.rotated"));

    let mut database = vec![];
    for entry in std::fs::read_dir(ledger.data_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("custodian.db")
        {
            database.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(!database.is_empty());
    for key in [&first, &second, &typo] {
        let random = &key[4..34];
        for secret in [key.as_str(), random] {
            assert!(!contains(&database, secret), "a key is in the database");
            assert!(!log.contains(secret), "a key is in the server's log");
            assert!(!contains(&feed, secret), "a key is in the NATS messages");
        }
    }

    // The uses counted before shutdown were recorded on the way down.
    let used: Vec<Value> = ledger
        .read_log()
        .await
        .iter()
        .filter(|r| r.event_type.as_str() == "key.used")
        .map(|r| r.data.clone())
        .collect();
    let uses: u64 = used.iter().map(|d| d["uses"].as_u64().unwrap()).sum();
    assert_eq!(uses, 4, "{used:?}");
    nats.kill().await;
}
