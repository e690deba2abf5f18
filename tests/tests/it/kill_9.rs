//! What the crash tests of `custodian serve` share: an HTTP client that waits out a restarting
//! server, and a SIGKILL while clients keep it busy.

use std::os::unix::process::ExitStatusExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use custodian_testkit::deployment::{Deployment, Server};
use reqwest::Method;
use serde_json::{Value, json};

/// The platform administrator the crash tests bootstrap and log in as.
pub const ADMIN_EMAIL: &str = "root@platform.test";
/// Their password.
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// A client of the server's HTTP API, logged in or not.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// An answer of the server.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// `Custodian-Position`.
    pub position: Option<u64>,
    pub body: Value,
}

impl Api {
    /// A client of the server at `base`, not logged in.
    pub fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .user_agent("custodian-crash-http-tests/1")
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            base: base.to_owned(),
            token: None,
        }
    }

    /// Sends once; an error is a request that got no answer.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        min_position: Option<u64>,
    ) -> Result<Answer, reqwest::Error> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(p) = min_position {
            request = request.header("custodian-min-position", p.to_string());
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let position = response
            .headers()
            .get("custodian-position")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let bytes = response.bytes().await?;
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok(Answer {
            status,
            position,
            body,
        })
    }

    /// Sends, retrying while the server answers 503 (views catching up after the restart).
    pub async fn settled(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        min_position: Option<u64>,
    ) -> Answer {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self
                .send(method.clone(), path, body, min_position)
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            if r.status == 503 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            assert!(r.status < 500, "{method} {path} answered {r:?}");
            return r;
        }
    }

    /// The same client, carrying the access token `token`.
    pub fn with_token(self, token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            ..self
        }
    }

    /// The same client, of the server at `base` (a restarted one).
    pub fn at(self, base: &str) -> Self {
        Self {
            base: base.to_owned(),
            ..self
        }
    }

    /// Logs the platform administrator in; returns a client carrying the access token.
    pub async fn login(&self) -> Self {
        let body = json!({"tenant": "_system", "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD});
        let r = self
            .settled(Method::POST, "/v1/auth/login", Some(&body), None)
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body["status"], "authenticated", "{r:?}");
        Self {
            token: Some(r.body["access_token"].as_str().unwrap().to_owned()),
            ..self.clone()
        }
    }
}

/// Concurrent clients loading the server.
const CLIENTS: usize = 16;
/// The server is killed after this much load, or sooner once enough requests were acknowledged
/// (with at least [`MIN_ACKS`]).
const LOAD: Duration = Duration::from_millis(1500);
/// Acknowledgements a kill waits for at the least.
pub const MIN_ACKS: usize = CLIENTS;

/// Bootstraps the platform administrator as `admin_name`, serves `home` and creates the tenant
/// `slug` named `name`; returns the server and a client logged in as the administrator.
pub async fn serve_with_tenant(
    home: &Deployment,
    admin_name: &str,
    slug: &str,
    name: &str,
) -> (Server, Api) {
    home.bootstrap(ADMIN_EMAIL, admin_name, ADMIN_PASSWORD)
        .await;
    let server = home.serve(&[]).await;
    let root = Api::new(&server.base).login().await;
    let r = root
        .settled(
            Method::POST,
            "/v1/tenants",
            Some(&json!({"slug": slug, "name": name})),
            None,
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    (server, root)
}

/// Starts [`CLIENTS`] clients, each `client(number, stop, acks)`, which count what the server
/// acknowledges in `acks` and send no more once `stop` is set; kills `server` with SIGKILL while
/// requests are in flight, once `acks_before_kill` requests (`acked`, for the message when too
/// few come) were acknowledged or after [`LOAD`]; returns what each client returns, in order, and
/// when the kill was sent.
pub async fn kill_9_under_load<T, F>(
    server: &mut Server,
    acks_before_kill: usize,
    acked: &str,
    client: impl Fn(usize, Arc<AtomicBool>, Arc<AtomicUsize>) -> F,
) -> (Vec<T>, Instant)
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(client(c, stop.clone(), acks.clone())))
        .collect();
    let started = Instant::now();
    loop {
        let n = acks.load(Ordering::SeqCst);
        if n >= acks_before_kill || (started.elapsed() >= LOAD && n >= MIN_ACKS) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "only {n} {acked} in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The clients finish the requests they have in flight, which the kill cuts, and send no more.
    stop.store(true, Ordering::SeqCst);
    server.child.start_kill().unwrap(); // SIGKILL
    let killed_at = Instant::now();
    let status = server.child.wait().await.unwrap();
    assert_eq!(status.signal(), Some(9), "the server died of SIGKILL");
    let mut results = Vec::with_capacity(clients.len());
    for c in clients {
        results.push(
            tokio::time::timeout(Duration::from_secs(30), c)
                .await
                .expect("a client hung after the kill")
                .unwrap(),
        );
    }
    (results, killed_at)
}
