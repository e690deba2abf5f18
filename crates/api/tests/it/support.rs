//! The real router on a random port, on a fresh SQLite or PostgreSQL ledger.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use custodian_api::server::{AppState, router};
use custodian_api::state::Shared;
use custodian_projections::Projection;
use custodian_store::{EventStore, StoreOptions};
use tokio_util::sync::CancellationToken;

pub struct App {
    pub base: String,
    pub client: reqwest::Client,
    pub store: Arc<dyn EventStore>,
    pub state: AppState,
    _dir: Option<tempfile::TempDir>,
}

impl App {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

pub async fn spawn_app_on(
    location: String,
    dir: Option<tempfile::TempDir>,
    projections: Option<Vec<Arc<dyn Projection>>>,
    read_wait: Duration,
) -> App {
    let identity = custodian_app::SecurityOptions::new(
        std::env::temp_dir().join(format!("custodian-test-{}.key", uuid::Uuid::now_v7())),
    );
    spawn_app_with(location, dir, projections, read_wait, identity).await
}

/// [`spawn_app_on`] with chosen identity options.
pub async fn spawn_app_with(
    location: String,
    dir: Option<tempfile::TempDir>,
    projections: Option<Vec<Arc<dyn Projection>>>,
    read_wait: Duration,
    identity: custodian_app::SecurityOptions,
) -> App {
    let store = custodian_store::open(&location, StoreOptions::default())
        .await
        .unwrap();
    let projections = projections.unwrap_or_else(custodian_projections::all);
    let state = AppState::start_with(
        store.clone(),
        &location,
        projections,
        read_wait,
        identity,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(state.clone());
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap();
    });
    App {
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        store,
        state,
        _dir: dir,
    }
}

pub async fn spawn_app() -> App {
    let ledger = custodian_testkit::Ledger::sqlite();
    let location = ledger.location.clone();
    spawn_app_on(location, ledger.into_dir(), None, Duration::from_secs(2)).await
}

pub async fn problem(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    (status, response.json().await.unwrap())
}

/// The platform administrator's email and password in [`root_token`].
pub const ROOT_EMAIL: &str = "root@platform.test";
/// See [`ROOT_EMAIL`].
pub const ROOT_PASSWORD: &str = "platform admin passphrase";

/// Bootstraps the platform administrator on `app`'s ledger and logs them in; answers their access
/// token.
pub async fn root_token(app: &App) -> String {
    let identity = &app.state.security;
    custodian_api::bootstrap::bootstrap(
        &app.store,
        &app.state.db,
        &identity.keyring,
        &identity.hasher,
        &identity.policy,
        custodian_api::bootstrap::Admin {
            email: ROOT_EMAIL,
            name: "Root",
            password: ROOT_PASSWORD,
        },
        custodian_app::Clock::now(&custodian_app::SystemClock),
    )
    .await
    .unwrap();
    let r = app
        .client
        .post(app.url("/v1/auth/login"))
        .json(&serde_json::json!({"tenant": "_system", "email": ROOT_EMAIL, "password": ROOT_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the platform administrator logs in");
    let body: serde_json::Value = r.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// A fresh server with a platform administrator, logged in.
pub struct Admined {
    pub app: App,
    /// The SQLite file of its ledger.
    pub db_file: std::path::PathBuf,
    /// The platform administrator's access token.
    pub root: String,
}

/// A server on a fresh SQLite ledger, with its platform administrator logged in.
pub async fn setup() -> Admined {
    let dir = tempfile::tempdir().unwrap();
    let db_file = dir.path().join("custodian.db");
    let app = spawn_app_on(
        db_file.display().to_string(),
        Some(dir),
        None,
        Duration::from_secs(5),
    )
    .await;
    let root = root_token(&app).await;
    Admined { app, db_file, root }
}

/// Logs in with a password; answers the server's response, whatever it is.
pub async fn login(app: &App, tenant: &str, email: &str, password: &str) -> reqwest::Response {
    app.client
        .post(app.url("/v1/auth/login"))
        .json(&json!({"tenant": tenant, "email": email, "password": password}))
        .send()
        .await
        .unwrap()
}

/// Logs in with a password, which must succeed; answers the access token.
pub async fn token(app: &App, tenant: &str, email: &str, password: &str) -> String {
    let r = login(app, tenant, email, password).await;
    assert_eq!(r.status(), 200, "login of {email} in {tenant}");
    let body: Value = r.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// Sends a request as `token`. Reads wait for the views to reach the log's head, so they see every
/// command sent before.
pub async fn send(
    app: &App,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let head = app.store.head().await.unwrap().position;
    let mut request = app
        .client
        .request(method, app.url(path))
        .bearer_auth(token)
        .header("custodian-min-position", head.to_string());
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

/// Expects `status` and a JSON body; a command's answer carries its position in both places.
pub async fn expect(response: reqwest::Response, status: u16) -> Value {
    let got = response.status().as_u16();
    let header = response
        .headers()
        .get("custodian-position")
        .map(|h| h.to_str().unwrap().parse::<u64>().unwrap());
    let text = response.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    if let Some(position) = body.get("position") {
        assert_eq!(Some(position.as_u64().unwrap()), header, "{body}");
        assert!(position.as_u64().unwrap() > 0);
    }
    body
}

/// Expects a problem document with `status`; returns its detail.
pub async fn refused(response: reqwest::Response, status: u16) -> String {
    let (got, body) = problem(response).await;
    assert_eq!(got, status, "{body}");
    body["detail"].as_str().unwrap().to_owned()
}

/// Creates the tenant `slug` as `root`, a platform administrator.
pub async fn create_tenant(app: &App, root: &str, slug: &str) -> Value {
    let r = send(
        app,
        Method::POST,
        "/v1/tenants",
        root,
        Some(json!({"slug": slug, "name": format!("{slug} Inc")})),
    )
    .await;
    expect(r, 201).await
}

/// Creates a user of `tenant` as `as_token`, which must succeed.
pub async fn create_user(app: &App, as_token: &str, tenant: &str, body: Value) -> Value {
    let r = send(
        app,
        Method::POST,
        &format!("/v1/tenants/{tenant}/users"),
        as_token,
        Some(body),
    )
    .await;
    expect(r, 201).await
}

/// A server on a fresh SQLite ledger whose time is `clock`, with its platform administrator
/// logged in.
pub async fn setup_clocked(
    identity: custodian_app::SecurityOptions,
    clock: Arc<custodian_app::ManualClock>,
) -> Admined {
    let dir = tempfile::tempdir().unwrap();
    let db_file = dir.path().join("custodian.db");
    let location = db_file.display().to_string();
    let store = custodian_store::open(&location, StoreOptions::default())
        .await
        .unwrap();
    let app = custodian_app::App::start(
        store.clone(),
        &location,
        custodian_projections::all(),
        identity,
        clock,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let state = AppState::new(Shared {
        app,
        read_wait: Duration::from_secs(5),
        relay: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = router(state.clone());
    tokio::spawn(async move {
        axum::serve(
            listener,
            served.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let app = App {
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        store,
        state,
        _dir: Some(dir),
    };
    let root = root_token(&app).await;
    Admined { app, db_file, root }
}

/// `bytes` in unpadded base64url, as the parts of a JWT are written.
pub fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Reads an unpadded base64url part of a JWT.
pub fn base64_url_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .unwrap()
}
