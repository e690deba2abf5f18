//! [`AppState`]: what every handler can reach, the application and what only HTTP needs.

use std::sync::Arc;
use std::time::Duration;

use custodian_app::{App, SecurityOptions, SystemClock};
use custodian_projections::Projection;
use custodian_relay::RelayStatus;
use custodian_store::EventStore;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What every handler can reach: [`Shared`] behind one reference count, since the router hands
/// every request (and every extractor) a clone of it.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The application, and what only the HTTP face needs.
#[derive(Clone)]
pub struct Shared {
    /// The use cases' service.
    pub app: App,
    /// How long a read with `Custodian-Min-Position` may wait for the views.
    pub read_wait: Duration,
    /// The NATS relay's status, when the server publishes the event feed.
    pub relay: Option<watch::Receiver<RelayStatus>>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl std::ops::Deref for Shared {
    type Target = App;

    fn deref(&self) -> &App {
        &self.app
    }
}

impl AppState {
    /// The state of a router serving `shared`.
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }

    /// The same state, reporting the NATS relay's status.
    #[must_use]
    pub fn with_relay(self, relay: watch::Receiver<RelayStatus>) -> Self {
        let mut shared = Arc::unwrap_or_clone(self.0);
        shared.relay = Some(relay);
        Self::new(shared)
    }

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
        Ok(Self::new(Shared {
            app,
            read_wait,
            relay: None,
        }))
    }
}
