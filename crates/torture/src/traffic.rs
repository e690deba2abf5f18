//! Mixed traffic: clients that log in, refresh, read, administer users, check permissions, make
//! and use API keys and record usage, against whichever server is current, recording every
//! answer, every acknowledged command and every secret they create.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use reqwest::Method;
use serde_json::{Value, json};

/// The platform administrator every scenario bootstraps.
pub const ROOT_EMAIL: &str = "root@torture.test";
/// Their password (long enough for any minimum length policy).
pub const ROOT_PASSWORD: &str = "torture root passphrase that is long enough";
/// The tenant the traffic works in.
pub const TENANT: &str = "torture";

/// A command the server acknowledged: a 2xx answer carrying the position of its last event.
#[derive(Debug, Clone)]
pub struct Ack {
    /// `Custodian-Position`.
    pub position: u64,
    /// What was asked (`create_user`, `login`...).
    pub operation: &'static str,
    /// An id the event's stream must contain, when the answer names one.
    pub subject: Option<String>,
}

/// Everything the clients saw.
#[derive(Debug, Default)]
pub struct Record {
    /// Answers by status; `none` for no answer.
    pub statuses: BTreeMap<String, u64>,
    /// Latencies of answered requests.
    pub latencies: Vec<Duration>,
    /// Acknowledged commands.
    pub acks: Vec<Ack>,
    /// Every secret created or used: passwords, tokens, key secrets.
    pub secrets: Vec<String>,
    /// A few 5xx answers other than 503/507, for the report.
    pub server_errors: Vec<String>,
    /// Answers by operation and status (`create_user 201`), for the details on stderr.
    pub by_operation: BTreeMap<String, u64>,
    /// The first refusal (4xx) of each operation and status, for the details on stderr.
    pub first_refusals: BTreeMap<String, String>,
}

/// The server the clients talk to: its base URL changes when it restarts.
#[derive(Clone, Default)]
pub struct Target(Arc<RwLock<String>>);

impl Target {
    /// Points the clients at `base`.
    pub fn set(&self, base: &str) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = base.to_owned();
    }

    fn get(&self) -> String {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One answer.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: u16,
    /// `Custodian-Position`.
    pub position: Option<u64>,
    /// The body, or a JSON string of it when it is not JSON.
    pub body: Value,
}

/// An HTTP client of the current server that records what it sees.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    target: Target,
    record: Arc<Mutex<Record>>,
}

impl Client {
    /// A client of `target` recording into `record`.
    pub fn new(target: Target, record: Arc<Mutex<Record>>) -> Self {
        Self {
            http: reqwest::Client::builder()
                .user_agent("custodian-torture/1")
                .timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(4)
                .build()
                .unwrap_or_default(),
            target,
            record,
        }
    }

    /// Notes a secret the scan must not find.
    pub fn secret(&self, s: &str) {
        if !s.is_empty() {
            self.lock().secrets.push(s.to_owned());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends one request; `None` when no answer came. A 2xx answer with a position to a command
    /// is recorded as acknowledged, with `subject` taken from the body's field of that name.
    pub async fn send(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
        subject: Option<&str>,
    ) -> Option<Answer> {
        let command = method != Method::GET;
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.target.get()));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let started = Instant::now();
        let answer = async {
            let response = request.send().await.ok()?;
            let status = response.status().as_u16();
            let position = response
                .headers()
                .get("custodian-position")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let bytes = response.bytes().await.ok()?;
            let body = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
            Some(Answer {
                status,
                position,
                body,
            })
        }
        .await;
        let elapsed = started.elapsed();
        let mut record = self.lock();
        match &answer {
            None => *record.statuses.entry("none".into()).or_default() += 1,
            Some(a) => {
                *record.statuses.entry(a.status.to_string()).or_default() += 1;
                let key = format!("{operation} {}", a.status);
                *record.by_operation.entry(key.clone()).or_default() += 1;
                if (400..500).contains(&a.status) {
                    record
                        .first_refusals
                        .entry(key)
                        .or_insert_with(|| a.body.to_string());
                }
                record.latencies.push(elapsed);
                if a.status >= 500
                    && a.status != 503
                    && a.status != 507
                    && record.server_errors.len() < 10
                {
                    record
                        .server_errors
                        .push(format!("{operation} {path}: {} {}", a.status, a.body));
                }
                if command
                    && (200..300).contains(&a.status)
                    && let Some(position) = a.position
                {
                    record.acks.push(Ack {
                        position,
                        operation,
                        subject: subject
                            .and_then(|field| a.body[field].as_str())
                            .map(str::to_owned),
                    });
                }
            }
        }
        answer
    }

    /// Sends until an answer below 500 comes, or `within` passes; `None` then.
    pub async fn settled(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
        within: Duration,
    ) -> Option<Answer> {
        let deadline = Instant::now() + within;
        loop {
            match self
                .send(operation, method.clone(), path, bearer, body, Some("id"))
                .await
            {
                Some(a) if a.status < 500 => return Some(a),
                _ if Instant::now() >= deadline => return None,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// What the clients share: the tenant's people, one per client, and the administrator's token.
pub struct World {
    root: RwLock<String>,
    people: Vec<Person>,
}

#[derive(Clone)]
struct Person {
    id: String,
    email: String,
    password: String,
}

fn password(rng: &mut StdRng) -> String {
    let tail: String = (0..20)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.gen_range(0..36)]))
        .collect();
    format!("pw-{tail}")
}

/// Logs the platform administrator in, makes the tenant and one person per client; `Err` says
/// which step failed.
pub async fn setup(client: &Client, clients: usize, seed: u64) -> Result<World, String> {
    let within = Duration::from_secs(60);
    client.secret(ROOT_PASSWORD);
    let root = root_login(client).await?;
    let made = client
        .settled(
            "create_tenant",
            Method::POST,
            "/v1/tenants",
            Some(&root),
            Some(&json!({"slug": TENANT, "name": "Torture Ltd"})),
            within,
        )
        .await
        .ok_or("creating the tenant got no answer")?;
    if made.status != 201 {
        return Err(format!(
            "creating the tenant: {} {}",
            made.status, made.body
        ));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut people = Vec::with_capacity(clients);
    for c in 0..clients {
        let email = format!("client{c}@torture.test");
        let pw = password(&mut rng);
        client.secret(&pw);
        let made = client
            .settled(
                "create_user",
                Method::POST,
                &format!("/v1/tenants/{TENANT}/users"),
                Some(&root),
                Some(&json!({
                    "email": email,
                    "name": format!("Client {c}"),
                    "password": pw,
                    "roles": ["admin"],
                })),
                within,
            )
            .await
            .ok_or("creating a person got no answer")?;
        if made.status != 201 {
            return Err(format!("creating a person: {} {}", made.status, made.body));
        }
        people.push(Person {
            id: made.body["user_id"].as_str().unwrap_or_default().to_owned(),
            email,
            password: pw,
        });
    }
    Ok(World {
        root: RwLock::new(root),
        people,
    })
}

async fn root_login(client: &Client) -> Result<String, String> {
    let login = client
        .settled(
            "login",
            Method::POST,
            "/v1/auth/login",
            None,
            Some(&json!({"tenant": "_system", "email": ROOT_EMAIL, "password": ROOT_PASSWORD})),
            Duration::from_secs(60),
        )
        .await
        .ok_or("the administrator's login got no answer")?;
    let token = login.body["access_token"].as_str().unwrap_or_default();
    if login.status != 200 || token.is_empty() {
        return Err(format!(
            "the administrator's login: {} {}",
            login.status, login.body
        ));
    }
    client.secret(token);
    client.secret(login.body["refresh_token"].as_str().unwrap_or_default());
    Ok(token.to_owned())
}

/// One client's session state.
#[derive(Default)]
struct Tokens {
    access: String,
    refresh: String,
}

impl World {
    fn root(&self) -> String {
        self.root.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Runs client `n` until `stop` is set.
pub async fn client_loop(
    n: usize,
    client: Client,
    world: Arc<World>,
    stop: Arc<AtomicBool>,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let me = world.people[n % world.people.len()].clone();
    let mut tokens = Tokens::default();
    let mut mine: Vec<String> = Vec::new();
    let users = format!("/v1/tenants/{TENANT}/users");
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        if tokens.access.is_empty() {
            login(&client, &me, &mut tokens).await;
            if tokens.access.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            continue;
        }
        let root = world.root();
        let roll = rng.gen_range(0..100);
        let answer = match roll {
            0..25 => {
                client
                    .send(
                        "me",
                        Method::GET,
                        "/v1/auth/me",
                        Some(&tokens.access),
                        None,
                        None,
                    )
                    .await
            }
            25..37 => {
                let a = client
                    .send(
                        "refresh",
                        Method::POST,
                        "/v1/auth/refresh",
                        None,
                        Some(&json!({"refresh_token": tokens.refresh})),
                        Some("session_id"),
                    )
                    .await;
                match &a {
                    Some(a) if a.status == 200 => take_tokens(&client, a, &mut tokens),
                    Some(a) if (400..500).contains(&a.status) => tokens = Tokens::default(),
                    _ => {}
                }
                a
            }
            37..45 => {
                client
                    .send(
                        "list_users",
                        Method::GET,
                        &format!("{users}?limit=20"),
                        Some(&root),
                        None,
                        None,
                    )
                    .await
            }
            45..57 => {
                let body = json!({
                    "principal": me.id,
                    "permission": "user:read",
                    "resource": format!("user/{}", me.id),
                });
                client
                    .send(
                        "check",
                        Method::POST,
                        &format!("/v1/tenants/{TENANT}/check"),
                        Some(&root),
                        Some(&body),
                        None,
                    )
                    .await
            }
            57..68 => {
                let pw = password(&mut rng);
                client.secret(&pw);
                let body = json!({
                    "email": format!("made{n}-{i}@torture.test"),
                    "name": format!("Made {n} {i}"),
                    "password": pw,
                });
                let a = client
                    .send(
                        "create_user",
                        Method::POST,
                        &users,
                        Some(&root),
                        Some(&body),
                        Some("user_id"),
                    )
                    .await;
                if let Some(a) = &a
                    && let Some(id) = a.body["user_id"].as_str()
                {
                    mine.push(id.to_owned());
                }
                a
            }
            68..72 if !mine.is_empty() => {
                let id = mine.swap_remove(rng.gen_range(0..mine.len()));
                client
                    .send(
                        "disable_user",
                        Method::POST,
                        &format!("{users}/{id}/disable"),
                        Some(&root),
                        Some(&json!({"reason": "load test"})),
                        Some("user_id"),
                    )
                    .await
            }
            72..78 => invite_and_accept(&client, &root, n, i, &mut rng).await,
            78..84 => key_and_use(&client, &tokens.access, n, i).await,
            84..92 => {
                let body = json!({
                    "meter": "requests",
                    "quantity": 1,
                    "subject": format!("client-{n}"),
                    "idempotency_key": format!("c{n}-{i}"),
                });
                client
                    .send(
                        "usage",
                        Method::POST,
                        &format!("/v1/tenants/{TENANT}/usage"),
                        Some(&root),
                        Some(&body),
                        None,
                    )
                    .await
            }
            _ => {
                login(&client, &me, &mut tokens).await;
                continue;
            }
        };
        match answer {
            None => tokio::time::sleep(Duration::from_millis(50)).await,
            Some(a) if a.status == 401 && roll < 25 => tokens = Tokens::default(),
            Some(a) if a.status == 401 => {
                if let Ok(fresh) = root_login(&client).await {
                    *world.root.write().unwrap_or_else(|e| e.into_inner()) = fresh;
                }
            }
            Some(a) if a.status >= 500 => tokio::time::sleep(Duration::from_millis(50)).await,
            Some(_) => {}
        }
    }
}

fn take_tokens(client: &Client, a: &Answer, tokens: &mut Tokens) {
    let access = a.body["access_token"].as_str().unwrap_or_default();
    let refresh = a.body["refresh_token"].as_str().unwrap_or_default();
    client.secret(access);
    client.secret(refresh);
    tokens.access = access.to_owned();
    tokens.refresh = refresh.to_owned();
}

async fn login(client: &Client, me: &Person, tokens: &mut Tokens) {
    let body = json!({"tenant": TENANT, "email": me.email, "password": me.password});
    if let Some(a) = client
        .send(
            "login",
            Method::POST,
            "/v1/auth/login",
            None,
            Some(&body),
            Some("session_id"),
        )
        .await
        && a.status == 200
    {
        take_tokens(client, &a, tokens);
    }
}

async fn invite_and_accept(
    client: &Client,
    root: &str,
    n: usize,
    i: u64,
    rng: &mut StdRng,
) -> Option<Answer> {
    let body = json!({"email": format!("invited{n}-{i}@torture.test"), "name": format!("Invited {n} {i}")});
    let a = client
        .send(
            "invite",
            Method::POST,
            &format!("/v1/tenants/{TENANT}/invitations"),
            Some(root),
            Some(&body),
            Some("user_id"),
        )
        .await?;
    let Some(token) = a.body["invitation_token"].as_str() else {
        return Some(a);
    };
    client.secret(token);
    let pw = password(rng);
    client.secret(&pw);
    client
        .send(
            "accept_invitation",
            Method::POST,
            "/v1/auth/invitations/accept",
            None,
            Some(&json!({"token": token, "password": pw})),
            Some("user_id"),
        )
        .await
}

async fn key_and_use(client: &Client, owner: &str, n: usize, i: u64) -> Option<Answer> {
    let a = client
        .send(
            "create_key",
            Method::POST,
            &format!("/v1/tenants/{TENANT}/keys"),
            Some(owner),
            Some(&json!({"name": format!("key {n} {i}"), "scopes": ["tenant:read", "key:read"]})),
            Some("id"),
        )
        .await?;
    let Some(key) = a.body["key"].as_str() else {
        return Some(a);
    };
    client.secret(key);
    client
        .send(
            "list_keys_with_key",
            Method::GET,
            &format!("/v1/tenants/{TENANT}/keys?limit=5"),
            Some(key),
            None,
            None,
        )
        .await
}

/// Latency percentile `p` (0..=100) of `latencies`, sorted in place.
pub fn percentile(latencies: &mut [Duration], p: usize) -> Duration {
    if latencies.is_empty() {
        return Duration::ZERO;
    }
    latencies.sort_unstable();
    let idx = (latencies.len() * p / 100).min(latencies.len() - 1);
    latencies[idx]
}
