//! [`AppState`]: what every handler can reach, the application and what only HTTP needs.

use std::sync::Arc;
use std::time::Duration;

use custodian_app::{App, SecurityOptions, SystemClock};
use custodian_projections::Projection;
use custodian_relay::RelayStatus;
use custodian_store::EventStore;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

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
        identity: SecurityOptions,
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
        identity: SecurityOptions,
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
