//! Crash safety of usage metering: `custodian serve` is killed with SIGKILL while sixteen clients
//! post usage records (a tenth of them retries of an earlier key). After a restart on the same
//! store, every acknowledged record is in the log exactly once, nothing is counted twice, and a
//! retry of any record, acknowledged or cut off by the kill, counts once: the tenant's total is
//! then exactly the sum over the distinct keys posted.

use std::collections::{HashMap, HashSet};
use std::os::unix::process::ExitStatusExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use custodian_testkit::deployment::Deployment;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_every_acknowledged_usage_record_through_kill_9() {
    post_usage_kill_9_then_check(Deployment::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_every_acknowledged_usage_record_through_kill_9() {
    if let Some(home) = Deployment::postgres().await {
        post_usage_kill_9_then_check(home).await;
    }
}

const TENANT: &str = "meterco";
const ADMIN_EMAIL: &str = "root@platform.test";
const ADMIN_PASSWORD: &str = "correct horse battery staple";
const CLIENTS: usize = 16;
const ACKS_BEFORE_KILL: usize = 400;
const LOAD: Duration = Duration::from_millis(1500);

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            base: base.to_owned(),
            token: None,
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        min_position: Option<u64>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(p) = min_position {
            request = request.header("custodian-min-position", p.to_string());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// Sends, retrying while the server answers 503 (catching up after the restart).
    async fn settled(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        min_position: Option<u64>,
    ) -> (u16, Value) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = self
                .send(method.clone(), path, body, min_position)
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            if status == 503 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            assert!(status < 500, "{method} {path} answered {status} {body}");
            return (status, body);
        }
    }

    async fn login(&self) -> Self {
        let body = json!({"tenant": "_system", "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD});
        let (status, r) = self
            .settled(Method::POST, "/v1/auth/login", Some(&body), None)
            .await;
        assert_eq!(status, 200, "{r}");
        Self {
            token: Some(r["access_token"].as_str().unwrap().to_owned()),
            ..self.clone()
        }
    }
}

fn record(key: &str, quantity: u64, client: usize) -> Value {
    json!({
        "meter": "requests",
        "quantity": quantity,
        "subject": format!("client-{client}"),
        "idempotency_key": key,
    })
}

fn quantity_of(client: usize, i: usize) -> u64 {
    ((client + i) % 3) as u64 + 1
}

/// What one client posted: each key with its quantity, and the keys the server acknowledged.
#[derive(Default)]
struct Posted {
    quantities: HashMap<String, u64>,
    acked: HashSet<String>,
}

async fn post_records(
    api: Api,
    client: usize,
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicUsize>,
) -> Posted {
    let path = format!("/v1/tenants/{TENANT}/usage");
    let mut posted = Posted::default();
    for i in 0.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        // Every tenth post retries the key before it.
        let n = if i % 10 == 9 { i - 1 } else { i };
        let key = format!("c{client:02}-{n:06}");
        let quantity = quantity_of(client, n);
        posted.quantities.insert(key.clone(), quantity);
        match api
            .send(
                Method::POST,
                &path,
                Some(&record(&key, quantity, client)),
                None,
            )
            .await
        {
            Ok((200, body)) => {
                assert_eq!(body["accepted"], true, "{body}");
                posted.acked.insert(key);
                acks.fetch_add(1, Ordering::SeqCst);
            }
            // Only a busy or stopping server may refuse a well-formed record; its fate is unknown.
            Ok((status, body)) => assert_eq!(status, 503, "{key}: {body}"),
            Err(_) => {}
        }
    }
    posted
}

async fn post_usage_kill_9_then_check(home: Deployment) {
    home.bootstrap(ADMIN_EMAIL, "Root", ADMIN_PASSWORD).await;
    let mut server = home.serve(&[]).await;
    let root = Api::new(&server.base).login().await;
    let (status, body) = root
        .settled(
            Method::POST,
            "/v1/tenants",
            Some(&json!({"slug": TENANT, "name": "Meter Co"})),
            None,
        )
        .await;
    assert_eq!(status, 201, "{body}");

    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(post_records(root.clone(), c, stop.clone(), acks.clone())))
        .collect();
    let started = Instant::now();
    loop {
        let n = acks.load(Ordering::SeqCst);
        if n >= ACKS_BEFORE_KILL || (started.elapsed() >= LOAD && n >= CLIENTS) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "only {n} records acknowledged in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::SeqCst);
    server.child.start_kill().unwrap(); // SIGKILL
    let status = server.child.wait().await.unwrap();
    assert_eq!(status.signal(), Some(9), "the server died of SIGKILL");
    let mut quantities: HashMap<String, (u64, usize)> = HashMap::new();
    let mut acked: HashSet<String> = HashSet::new();
    for (client, c) in clients.into_iter().enumerate() {
        let posted = tokio::time::timeout(Duration::from_secs(30), c)
            .await
            .expect("a client hung after the kill")
            .unwrap();
        acked.extend(posted.acked);
        quantities.extend(posted.quantities.into_iter().map(|(k, q)| (k, (q, client))));
    }
    drop(server);
    eprintln!(
        "{} distinct keys posted, {} acknowledged before the kill",
        quantities.len(),
        acked.len()
    );

    // The log: every acknowledged key exactly once, and only keys that were posted.
    let mut logged: HashMap<String, u64> = HashMap::new();
    for r in home.read_log().await {
        if r.event_type.as_str() != "usage.recorded" {
            continue;
        }
        for k in r.data["idempotency_keys"].as_array().unwrap() {
            let k = k.as_str().unwrap().to_owned();
            assert!(quantities.contains_key(&k), "{k} was never posted");
            *logged.entry(k).or_default() += 1;
        }
    }
    for (k, n) in &logged {
        assert_eq!(*n, 1, "{k} is counted {n} times");
    }
    for k in &acked {
        assert!(logged.contains_key(k), "acknowledged {k} was lost");
    }

    // After a restart, a retry of every key counts once: the acknowledged ones are duplicates.
    let server = home.serve(&[]).await;
    let root = Api::new(&server.base).login().await;
    let path = format!("/v1/tenants/{TENANT}/usage");
    let mut position = 0;
    for (key, (quantity, client)) in &quantities {
        let (status, body) = root
            .settled(
                Method::POST,
                &path,
                Some(&record(key, *quantity, *client)),
                None,
            )
            .await;
        assert_eq!(status, 200, "{key}: {body}");
        assert_eq!(
            body["duplicate"],
            logged.contains_key(key),
            "{key} was {}in the log: {body}",
            if logged.contains_key(key) { "" } else { "not " }
        );
        position = position.max(body["position"].as_u64().unwrap());
    }
    let (status, view) = root
        .settled(
            Method::GET,
            &format!("{path}?meter=requests"),
            None,
            Some(position),
        )
        .await;
    assert_eq!(status, 200, "{view}");
    let expected: u64 = quantities.values().map(|(q, _)| q).sum();
    assert_eq!(view["used"], expected, "{view}");
}
