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
//! 3. Add `.routes(routes!(handler))` to `documented_routes`. `tests/it/openapi.rs` reads the
//!    paths from the router itself and asks each for every method, so a route served without an
//!    operation in the document (or documented but not served) fails it.
//!
//! The 404 and 405 fallbacks are not operations; the document's description explains them.

pub use crate::state::AppState;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::{Extension, Router};
use custodian_relay::{Relay, RelayOptions};
use custodian_store::StoreOptions;
use tokio_util::sync::CancellationToken;
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::Config;
use crate::openapi::{self, ApiDoc};
use crate::respond::{InternalCause, Problem};
use crate::{consistency, handlers};

/// The application's routes, with `/openapi.json` describing exactly these routes and `/docs`
/// rendering it.
pub fn router(state: AppState) -> Router {
    let (routes, mut document) = documented_routes().split_for_parts();
    // Rate limits first: the answers read-your-writes adds come before authentication's
    // admission, so they carry no rate-limit headers, and its 401 does not make a public route
    // look authenticated.
    openapi::document_rate_limits(&mut document);
    openapi::document_read_your_writes(&mut document);
    routes
        .layer(Extension(Arc::new(document)))
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::extract::MAX_BODY_BYTES,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            consistency::read_your_writes,
        ))
        .layer(middleware::from_fn(crate::ratelimit::headers))
        .layer(middleware::from_fn(log_internal_errors))
        // Every answer may carry a token, a key, a secret, a TOTP seed or recovery codes, or
        // personal data: no cache keeps one unless its route says otherwise (the JWKS does).
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(TraceLayer::new_for_http().on_failure(log_server_error))
        .with_state(state)
}

/// The trace of a 5xx: a 503 is the service asking the client to come back (a store that is
/// away, views that did not reach a `Custodian-Min-Position` in time), which needs no one's
/// attention unless it lasts, so it is a warning; any other 5xx is an error. The cause of a 500
/// is logged by `log_internal_errors`.
fn log_server_error(
    class: ServerErrorsFailureClass,
    latency: std::time::Duration,
    _: &tracing::Span,
) {
    let latency_ms = latency.as_millis();
    match class {
        ServerErrorsFailureClass::StatusCode(status)
            if status == axum::http::StatusCode::SERVICE_UNAVAILABLE =>
        {
            tracing::warn!(%status, latency_ms, "response failed");
        }
        class => tracing::error!(%class, latency_ms, "response failed"),
    }
}

/// Every route, each with its operation in the OpenAPI document: the reference routes here, the
/// others from each handler module's `routes`.
fn documented_routes() -> OpenApiRouter<AppState> {
    let router = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(openapi::docs));
    let router = handlers::admin::routes(router);
    let router = handlers::auth::routes(router);
    let router = handlers::account::routes(router);
    let router = handlers::tenants::routes(router);
    let router = handlers::authz::routes(router);
    let router = handlers::keys::routes(router);
    let router = handlers::usage::routes(router);
    let router = handlers::audit::routes(router);
    let router = handlers::ledger::routes(router);
    handlers::users::routes(router)
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
    // Bad certificate files stop the start before anything is opened.
    let tls = match &config.tls {
        Some(files) => Some(crate::tls::server_config(files)?),
        None => None,
    };
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
        tls = tls.is_some(),
        "listening"
    );

    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    let workers = CancellationToken::new();
    let state = AppState::start(
        store.clone(),
        &config.store.as_open_arg(),
        config.read_wait,
        config.security_options(),
        workers.clone(),
    )
    .await?;
    let projections = state.projections.clone();
    let decisions = state.decisions.clone();
    let keys = state.keys.clone();
    let usage_writer = state.usage_writer.clone();
    let mut state = state;
    let relay_task = match &config.nats_url {
        Some(url) => {
            let relay = Relay::new(store.clone(), url, RelayOptions::default())
                .context("cannot start the NATS relay")?;
            state = state.with_relay(relay.status());
            tracing::info!(nats = %redact_nats(url), "publishing every event to JetStream stream CUSTODIAN");
            Some(tokio::spawn(relay.run(workers.clone())))
        }
        None => None,
    };
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let grace = config.shutdown_timeout;
    let server: std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> = match tls {
        None => Box::pin(
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                .into_future(),
        ),
        Some(tls) => {
            let handle = axum_server::Handle::new();
            let stop = handle.clone();
            let cancelled = shutdown.clone();
            tokio::spawn(async move {
                cancelled.cancelled().await;
                stop.graceful_shutdown(Some(grace));
            });
            let server = axum_server::from_tcp_rustls(listener.into_std()?, tls)?.handle(handle);
            Box::pin(server.serve(app))
        }
    };
    let outcome = tokio::select! {
        r = server => r.context("the HTTP server failed"),
        () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(seconds = grace.as_secs(), "in-flight requests did not finish in time; closing");
            Ok(())
        }
    };
    workers.cancel();
    // Decisions queued before shutdown are written before the store closes.
    decisions.stopped().await;
    // So is the usage of API keys counted since the last minute was recorded.
    keys.stopped().await;
    usage_writer.stopped().await;
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
