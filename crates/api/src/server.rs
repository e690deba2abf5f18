//! The axum application: routes, shared state, and a run loop with graceful shutdown.
//!
//! # Adding an endpoint
//!
//! Every route is registered in `documented_routes` through utoipa-axum's `routes!`, which takes
//! the path from the handler's annotation, so a route registered there is in `/openapi.json` by
//! construction (see [`crate::openapi`]). Never add one with a plain `Router::route`. To add one:
//!
//! 1. Annotate the handler with `#[utoipa::path(...)]`. Its `path` is the route (there is no second
//!    place to write it), and `responses(...)` lists every status the handler can answer, errors
//!    included: `(status = 409, description = "...", body = ProblemDocument, content_type =
//!    PROBLEM_JSON)`. A `///` comment on the handler becomes the operation's summary and text.
//! 2. Derive `utoipa::ToSchema` next to `Serialize`/`Deserialize` on its bodies; the schemas a path
//!    refers to are collected into the document by themselves.
//! 3. Add `.routes(routes!(handler))` to `documented_routes`, and the path to `SERVED` in
//!    `tests/it/openapi.rs`, which checks that the document lists every served route.
//!
//! The 404 and 405 fallbacks are not operations; the document's description explains them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::{Extension, Json, Router};
use custodian_projections::Projection;
use custodian_relay::{Relay, RelayOptions, RelayStatus};
use custodian_store::{EventStore, StoreOptions};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::Config;
use crate::identity::IdentityOptions;
use crate::openapi::{self, ApiDoc};
use crate::problem::{InternalCause, PROBLEM_JSON, Problem, ProblemDocument};
use crate::{account, admin, consistency, login};
use crate::{tenants, users};
use custodian_app::{App, SystemClock};

/// How long readiness waits for the store before answering 503.
const READINESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// What every handler can reach: the application, and what only the HTTP face needs.
#[derive(Clone)]
pub struct AppState {
    /// The use cases' service.
    pub app: App,
    /// How long a read with `Custodian-Min-Position` may wait for the views.
    pub read_wait: Duration,
    /// The NATS relay's status, when the server publishes the event feed.
    pub relay: Option<watch::Receiver<RelayStatus>>,
}

impl std::ops::Deref for AppState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.app
    }
}

impl AppState {
    /// Starts the service on the log's database (`location`, as the store was opened) with every
    /// projection. Background work stops when `shutdown` is cancelled.
    pub async fn start(
        store: Arc<dyn EventStore>,
        location: &str,
        read_wait: Duration,
        identity: IdentityOptions,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        Self::start_with(
            store,
            location,
            custodian_projections::all(),
            read_wait,
            identity,
            shutdown,
        )
        .await
    }

    /// [`start`](Self::start) with a chosen set of projections.
    pub async fn start_with(
        store: Arc<dyn EventStore>,
        location: &str,
        projections: Vec<Arc<dyn Projection>>,
        read_wait: Duration,
        identity: IdentityOptions,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let app = App::start(
            store,
            location,
            projections,
            identity,
            Arc::new(SystemClock),
            shutdown,
        )
        .await?;
        Ok(Self {
            app,
            read_wait,
            relay: None,
        })
    }
}

/// The application's routes, with `/openapi.json` describing exactly these routes and `/docs`
/// rendering it.
pub fn router(state: AppState) -> Router {
    let (routes, document) = documented_routes().split_for_parts();
    routes
        .layer(Extension(Arc::new(document)))
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::identity::MAX_BODY_BYTES,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            consistency::read_your_writes,
        ))
        .layer(middleware::from_fn(log_internal_errors))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Every route, each with its operation in the OpenAPI document.
fn documented_routes() -> OpenApiRouter<AppState> {
    let router = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(openapi::docs))
        .routes(routes!(admin::projections))
        .routes(routes!(admin::metrics))
        .routes(routes!(login::jwks))
        .routes(routes!(login::login))
        .routes(routes!(login::mfa_verify))
        .routes(routes!(login::refresh))
        .routes(routes!(login::accept_invitation))
        .routes(routes!(login::reset_password));
    identity_admin_routes(account_routes(router))
}

/// Self-service routes of an authenticated user.
fn account_routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router
        .routes(routes!(account::me))
        .routes(routes!(account::logout))
        .routes(routes!(account::my_sessions))
        .routes(routes!(account::revoke_my_session))
        .routes(routes!(account::change_password))
        .routes(routes!(account::totp_enroll))
        .routes(routes!(account::totp_confirm))
        .routes(routes!(account::totp_disable))
        .routes(routes!(account::regenerate_recovery_codes))
}

/// Administration of tenants and their users.
fn identity_admin_routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    // Tenant and user administration routes.
    router
        .routes(routes!(tenants::create_tenant, tenants::list_tenants))
        .routes(routes!(tenants::get_tenant, tenants::update_tenant))
        .routes(routes!(tenants::suspend_tenant))
        .routes(routes!(tenants::reactivate_tenant))
        .routes(routes!(users::create_user, users::list_users))
        .routes(routes!(users::invite_user))
        .routes(routes!(
            users::get_user,
            users::update_user,
            users::delete_user
        ))
        .routes(routes!(users::disable_user))
        .routes(routes!(users::enable_user))
        .routes(routes!(users::issue_password_reset))
        .routes(routes!(
            users::list_user_sessions,
            users::revoke_user_sessions
        ))
        .routes(routes!(users::list_credentials))
}

/// The liveness answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`: any answer at all means the process is serving HTTP.
    pub status: Liveness,
}

/// The only liveness status there is.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    /// The process serves HTTP.
    Ok,
}

/// The readiness answer: the store answers, and this is the head of the log.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// Always `ready`; an unready server answers 503 with a problem document instead.
    pub status: ReadyStatus,
    /// The last committed event.
    pub head: LogHead,
}

/// The only status of a 200 readiness answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadyStatus {
    /// The store answered in time.
    Ready,
}

/// The head of the log: its last committed position and that event's hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogHead {
    /// The last committed position; `0` for an empty log.
    #[schema(example = 0)]
    pub position: u64,
    /// The SHA-256 hash of the event at `position`, as 64 lowercase hex digits (all zeros for an
    /// empty log).
    #[schema(
        pattern = "^[0-9a-f]{64}$",
        example = "0000000000000000000000000000000000000000000000000000000000000000"
    )]
    pub hash: String,
}

/// Liveness: the process is up and serving HTTP.
///
/// Answers without touching the store, so an orchestrator restarts the process only when the
/// process itself is stuck.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process is serving HTTP", body = Health)),
)]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: Liveness::Ok,
    })
}

/// Readiness: the store answers. Reports the log's head.
///
/// A load balancer should send traffic only while this answers 200.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "The store answered; the body carries the log's head", body = Readiness),
        (
            status = 503,
            description = "The store is unreachable, closed, or did not answer in time (code `unavailable`)",
            body = ProblemDocument,
            content_type = PROBLEM_JSON,
            headers(("Retry-After" = u64, description = "Seconds to wait before asking again")),
        ),
        (
            status = 500,
            description = "The store answered with something it cannot make sense of, such as a damaged record (code `internal`); the cause is logged on the server",
            body = ProblemDocument,
            content_type = PROBLEM_JSON,
        ),
    ),
)]
async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, Problem> {
    let check = async {
        state.store.ping().await?;
        state.store.head().await
    };
    let head = tokio::time::timeout(READINESS_TIMEOUT, check)
        .await
        .map_err(|_| Problem::unavailable("the event store did not answer in time", 2))??;
    Ok(Json(Readiness {
        status: ReadyStatus::Ready,
        head: LogHead {
            position: head.position,
            hash: head.hash.to_hex(),
        },
    }))
}

async fn not_found(request: Request) -> Problem {
    Problem::not_found(format!("no route for {}", request.uri().path()))
}

async fn method_not_allowed(request: Request) -> Problem {
    Problem::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "Method not allowed",
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// Logs the hidden cause of every 5xx once, here rather than where the response is built.
async fn log_internal_errors(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    if let Some(InternalCause(cause)) = response.extensions().get::<InternalCause>() {
        tracing::error!(%method, %path, status = response.status().as_u16(), cause, "request failed");
    }
    response
}

/// Opens the store, serves until SIGTERM or Ctrl-C, lets in-flight requests finish (up to the
/// configured grace period), then drains the store's writer so every accepted append is committed.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let store = custodian_store::open(
        &config.store.as_open_arg(),
        StoreOptions {
            max_event_bytes: config.max_event_bytes,
            ..StoreOptions::default()
        },
    )
    .await
    .with_context(|| format!("cannot open the event store ({})", config.store.redacted()))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let head = store.head().await?;
    tracing::info!(
        %addr,
        store = config.store.redacted(),
        head = head.position,
        "listening"
    );

    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    let workers = CancellationToken::new();
    let state = AppState::start(
        store.clone(),
        &config.store.as_open_arg(),
        config.read_wait,
        crate::identity::options_from_config(&config),
        workers.clone(),
    )
    .await?;
    let projections = state.projections.clone();
    let mut state = state;
    let relay_task = match &config.nats_url {
        Some(url) => {
            let relay = Relay::new(store.clone(), url, RelayOptions::default())
                .context("cannot start the NATS relay")?;
            state.relay = Some(relay.status());
            tracing::info!(nats = %redact_nats(url), "publishing every event to JetStream stream CUSTODIAN");
            Some(tokio::spawn(relay.run(workers.clone())))
        }
        None => None,
    };
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server =
        axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let grace = config.shutdown_timeout;
    let outcome = tokio::select! {
        r = server => r.context("the HTTP server failed"),
        () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(seconds = grace.as_secs(), "in-flight requests did not finish in time; closing");
            Ok(())
        }
    };
    workers.cancel();
    projections.stop().await;
    if let Some(task) = relay_task {
        let _ = task.await;
    }
    store.close().await;
    tracing::info!("stopped");
    outcome
}

/// A NATS address list safe to log: passwords replaced by `***`.
fn redact_nats(urls: &str) -> String {
    urls.split(',')
        .map(|u| crate::config::StoreLocation::Url(u.trim().to_owned()).redacted())
        .collect::<Vec<_>>()
        .join(",")
}

async fn signal_shutdown(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
    token.cancel();
}
