//! Following the log in memory: the loop every in-memory index runs, applying each event in
//! position order until shutdown; from position 1, or from the index's snapshot
//! ([`spawn_snapshotted`], see [`crate::snapshot`]).

use std::sync::Arc;
use std::time::Duration;

use custodian_domain::{EventHash, EventRecord};
use custodian_store::EventStore;
use futures::StreamExt as _;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::snapshot::{IndexStatus, RebuildReason, Snapshots, StartSource, Taken};

/// An in-memory index that starts from a durable snapshot and follows the log from there.
pub(crate) trait Snapshotted: Send + Sync + 'static {
    /// Its name in `index_snapshots` and `/v1/admin/readiness`.
    const NAME: &'static str;
    /// The version of its snapshot's format: raise it whenever the state or its meaning changes,
    /// so a snapshot written by an older code is rebuilt from the log instead of misread.
    const FORMAT: u64;
    /// Its state as a snapshot holds it.
    type Image: serde::Serialize + serde::de::DeserializeOwned + Send + 'static;

    /// Applies the next event of the log.
    fn apply(&self, record: &EventRecord);
    /// A copy of the state, with the position and hash of the last event applied; `None` before
    /// any event.
    fn image(&self) -> Option<(u64, EventHash, Self::Image)>;
    /// Replaces the (empty) state with a snapshot's, taken at `position`.
    fn restore(&self, image: Self::Image, position: u64);
}

/// Starts `index` from its snapshot in `snapshots` (from position 1 when there is none, or it is
/// refused), follows the log from there, and keeps the snapshot current; reports through
/// `status`. Stops with `shutdown`.
pub(crate) fn spawn_snapshotted<I: Snapshotted>(
    index: Arc<I>,
    status: Arc<IndexStatus>,
    store: Arc<dyn EventStore>,
    snapshots: Option<Snapshots>,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        let from = match &snapshots {
            Some(s) => restore(&*index, s, &status).await,
            None => {
                status.started(StartSource::Log, None, 0);
                1
            }
        };
        let rebuilt = from == 1;
        if let Some(snapshots) = snapshots {
            let target = if rebuilt {
                store.head().await.map(|h| h.position).unwrap_or(0)
            } else {
                0
            };
            tokio::spawn(keep_current(
                index.clone(),
                snapshots,
                clock,
                status.clone(),
                target,
                shutdown.clone(),
            ));
        }
        let mut events = Box::pin(custodian_store::follow(store, from));
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return,
                next = events.next() => next,
            };
            match next {
                Some(Ok(record)) => {
                    index.apply(&record);
                    status.read_one(record.position);
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "the {} index cannot read the log; retrying", I::NAME);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                None => return,
            }
        }
    });
}

/// Loads and installs `index`'s snapshot; answers the position to follow the log from.
async fn restore<I: Snapshotted>(index: &I, snapshots: &Snapshots, status: &IndexStatus) -> u64 {
    let loaded = match snapshots.load(I::NAME, I::FORMAT).await {
        Ok(loaded) => loaded,
        Err(reason) => {
            if reason != RebuildReason::Missing {
                tracing::warn!(
                    index = I::NAME,
                    ?reason,
                    "refused the index's snapshot; rebuilding it from the log"
                );
            }
            status.started(StartSource::Log, Some(reason), 0);
            return 1;
        }
    };
    let position = loaded.position;
    let decoded = tokio::task::spawn_blocking(move || {
        rmp_serde::from_slice::<I::Image>(&loaded.body).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    match decoded {
        Ok(image) => {
            index.restore(image, position);
            status.started(StartSource::Snapshot, None, position);
            tracing::info!(
                index = I::NAME,
                position,
                "started from the index's snapshot"
            );
            position + 1
        }
        Err(e) => {
            tracing::warn!(index = I::NAME, error = %e, "the index's snapshot does not decode; rebuilding it from the log");
            status.started(StartSource::Log, Some(RebuildReason::Corrupt), 0);
            1
        }
    }
}

/// Writes `index`'s snapshot every so many events or seconds, and once it reaches `target` (the
/// log's head when an index had to be rebuilt), until `shutdown`.
async fn keep_current<I: Snapshotted>(
    index: Arc<I>,
    snapshots: Snapshots,
    clock: Arc<dyn Clock>,
    status: Arc<IndexStatus>,
    mut target: u64,
    shutdown: CancellationToken,
) {
    let policy = snapshots.policy();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last = status.report().started_at;
    let mut last_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let applied = status.report().applied;
        let due = (target > 0 && applied >= target)
            || applied >= last.saturating_add(policy.every_events)
            || (applied > last && last_at.elapsed() >= policy.every);
        if !due {
            continue;
        }
        target = 0;
        let taking = index.clone();
        let taken = tokio::task::spawn_blocking(move || {
            let (position, hash, image) = taking.image()?;
            match rmp_serde::to_vec_named(&image) {
                Ok(body) => Some(Taken {
                    position,
                    hash,
                    body,
                }),
                Err(e) => {
                    tracing::error!(index = I::NAME, error = %e, "cannot encode the index's snapshot");
                    None
                }
            }
        })
        .await
        .ok()
        .flatten();
        last_at = tokio::time::Instant::now();
        let Some(taken) = taken else {
            continue;
        };
        match snapshots
            .save(I::NAME, I::FORMAT, &taken, clock.now())
            .await
        {
            Ok(()) => {
                last = taken.position;
                status.wrote(taken.position);
                tracing::debug!(
                    index = I::NAME,
                    position = taken.position,
                    bytes = taken.body.len(),
                    "wrote the index's snapshot"
                );
            }
            Err(e) => {
                tracing::warn!(index = I::NAME, error = %e, "cannot write the index's snapshot");
            }
        }
    }
}

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
