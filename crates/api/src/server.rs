//! The axum application: routes, shared state, and a run loop with graceful shutdown.

use std::sync::Arc;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use custodian_store::{EventStore, StoreOptions};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::problem::{InternalCause, Problem};

/// How long readiness waits for the store before answering 503.
const READINESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The log.
    pub store: Arc<dyn EventStore>,
}

/// The application's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(log_internal_errors))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Liveness: the process is up and serving HTTP.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the store answers. Reports the log's head.
async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, Problem> {
    let check = async {
        state.store.ping().await?;
        state.store.head().await
    };
    let head = tokio::time::timeout(READINESS_TIMEOUT, check)
        .await
        .map_err(|_| Problem::unavailable("the event store did not answer in time", 2))??;
    Ok(Json(json!({
        "status": "ready",
        "head": { "position": head.position, "hash": head.hash.to_hex() },
    })))
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
    let app = router(AppState {
        store: store.clone(),
    });
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
    store.close().await;
    tracing::info!("stopped");
    outcome
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
