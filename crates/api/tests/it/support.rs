//! The real router on a random port, on a fresh SQLite or PostgreSQL ledger.

use std::sync::Arc;
use std::time::Duration;

use custodian_api::server::{AppState, router};
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
