//! Following the log in memory: the loop every in-memory index runs, from position 1, applying
//! each event in position order until shutdown.

use std::sync::Arc;
use std::time::Duration;

use custodian_domain::EventRecord;
use custodian_store::EventStore;
use futures::StreamExt as _;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Spawns a task that hands every event of `store`, in order, to `apply`, and stops with
/// `shutdown`. A read that fails is retried after 200 ms and logged as `what` (e.g. "the
/// authentication index").
pub(crate) fn spawn(
    store: Arc<dyn EventStore>,
    what: &'static str,
    shutdown: CancellationToken,
    mut apply: impl FnMut(&EventRecord) + Send + 'static,
) {
    tokio::spawn(async move {
        let mut events = Box::pin(custodian_store::follow(store, 1));
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return,
                next = events.next() => next,
            };
            match next {
                Some(Ok(record)) => apply(&record),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "{what} cannot read the log; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                None => return,
            }
        }
    });
}

/// How far a follower has applied the log, for requests that wait (bounded) until it has applied
/// a position.
#[derive(Debug)]
pub(crate) struct Progress {
    applied: watch::Sender<u64>,
    wait: Duration,
}

impl Progress {
    /// Nothing applied yet; a wait lasts at most `wait`.
    pub(crate) fn new(wait: Duration) -> Self {
        Self {
            applied: watch::channel(0).0,
            wait,
        }
    }

    /// The last position applied.
    pub(crate) fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Records that everything up to `position` is applied.
    pub(crate) fn advance(&self, position: u64) {
        self.applied.send_replace(position);
    }

    /// Whether `position` is applied, waiting for it at most the bounded wait.
    pub(crate) async fn reached(&self, position: u64) -> bool {
        if self.applied() >= position {
            return true;
        }
        let mut rx = self.applied.subscribe();
        matches!(
            tokio::time::timeout(self.wait, rx.wait_for(|p| *p >= position)).await,
            Ok(Ok(_))
        )
    }
}
