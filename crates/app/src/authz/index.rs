//! The authorization index: the domain's [`AccessHistory`] (every tenant's [`Policy`], with its
//! history, and the standing of principals and tenants) behind a lock, started from its snapshot
//! (see [`crate::snapshot`]) and kept current by following the log. It answers checks in memory, for now or for any past instant; the offline tools fold
//! the log with the same type, so they decide alike.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use custodian_domain::policy::{AccessHistory, AsOf, Check, Decision, Policy};
use custodian_domain::{EventHash, EventRecord, Timestamp};
use custodian_store::EventStore;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::error::AppError;
use crate::follower::{Progress, Snapshotted};
use crate::snapshot::{IndexStatus, Snapshots};

/// The fold and the hash of the last event it applied: what the snapshot holds.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct Image {
    history: AccessHistory,
    hash: Option<EventHash>,
}

/// The policy as it stood, and the position that is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Everything applied so far, evaluated at this time.
    Now(Timestamp),
    /// The log as it stood at this instant.
    At(Timestamp),
}

/// The index and its follower's progress.
#[derive(Debug)]
pub struct PolicyIndex {
    state: RwLock<Image>,
    progress: Progress,
    head: watch::Receiver<u64>,
    status: Arc<IndexStatus>,
}

impl PolicyIndex {
    /// Starts from the snapshot in `snapshots` (from position 1 without), following `store`; the
    /// tasks stop with `shutdown`.
    pub fn start(
        store: Arc<dyn EventStore>,
        snapshots: Option<Snapshots>,
        wait: Duration,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let index = Arc::new(Self {
            state: RwLock::new(Image::default()),
            progress: Progress::new(wait),
            head: store.watch_head(),
            status: Arc::new(IndexStatus::new(Self::NAME)),
        });
        crate::follower::spawn_snapshotted(
            index.clone(),
            index.status.clone(),
            store,
            snapshots,
            clock,
            shutdown,
        );
        index
    }

    /// An index that follows nothing, for tests that apply events by hand.
    #[cfg(test)]
    pub(crate) fn detached() -> Self {
        Self {
            state: RwLock::new(Image::default()),
            progress: Progress::new(Duration::ZERO),
            head: watch::channel(0).1,
            status: Arc::new(IndexStatus::new(Self::NAME)),
        }
    }

    /// Where the index started from and how far it has read.
    pub fn status(&self) -> &Arc<IndexStatus> {
        &self.status
    }

    /// The last position applied.
    pub fn applied(&self) -> u64 {
        self.progress.applied()
    }

    /// Waits until the index has applied every commit this process knows of (bounded).
    pub async fn catch_up(&self) -> Result<u64, AppError> {
        let head = *self.head.borrow();
        self.wait_for(head).await?;
        Ok(head)
    }

    /// Waits until the index has applied `position` (bounded).
    pub async fn wait_for(&self, position: u64) -> Result<(), AppError> {
        if self.progress.reached(position).await {
            Ok(())
        } else {
            Err(AppError::unavailable(
                "the authorization index is catching up with the log",
                1,
            ))
        }
    }

    /// Reads `tenant`'s policy (the built-ins only, if it has no events yet).
    pub fn read<T>(&self, tenant: &str, f: impl FnOnce(&Policy) -> T) -> Result<T, AppError> {
        let state = self.state.read().map_err(|_| poisoned())?;
        Ok(f(state.history.policy(tenant)))
    }

    /// The instant a question is about: for `At`, the position of the log as it stood then.
    pub fn as_of(&self, when: When) -> Result<AsOf, AppError> {
        match when {
            When::Now(time) => Ok(AsOf::now(time)),
            When::At(time) => {
                let state = self.state.read().map_err(|_| poisoned())?;
                Ok(state.history.as_of(time))
            }
        }
    }

    /// Evaluates `check` in `tenant`: out-of-service principals and suspended tenants are denied
    /// everything; otherwise the policy decides. Also answers the position it was evaluated at:
    /// the one applied for a check of now, the instant's for a check of the past.
    pub fn decide(&self, tenant: &str, check: &Check<'_>) -> Result<(Decision, u64), AppError> {
        let state = self.state.read().map_err(|_| poisoned())?;
        let position = check.as_of.position.min(state.history.position());
        Ok((state.history.decide(tenant, check), position))
    }

    /// Evaluates every check in `tenant` against one state of the index, and answers the position
    /// it had applied.
    pub fn decide_all(
        &self,
        tenant: &str,
        checks: &[Check<'_>],
    ) -> Result<(Vec<Decision>, u64), AppError> {
        let state = self.state.read().map_err(|_| poisoned())?;
        let decisions = checks
            .iter()
            .map(|c| state.history.decide(tenant, c))
            .collect();
        Ok((decisions, state.history.position()))
    }
}

impl Snapshotted for PolicyIndex {
    const NAME: &'static str = "authorization";
    const FORMAT: u64 = 1;
    type Image = Image;

    fn apply(&self, record: &EventRecord) {
        if let Ok(mut state) = self.state.write() {
            if let Err(e) = state.history.apply(record) {
                tracing::error!(position = record.position, error = %e, "unreadable policy event");
            }
            state.hash = Some(record.hash);
        }
        self.progress.advance(record.position);
    }

    fn image(&self) -> Option<(u64, EventHash, Image)> {
        let state = self.state.read().ok()?;
        let hash = state.hash?;
        Some((state.history.position(), hash, state.clone()))
    }

    fn restore(&self, image: Image, position: u64) {
        if let Ok(mut state) = self.state.write() {
            *state = image;
        }
        self.progress.advance(position);
    }
}

fn poisoned() -> AppError {
    AppError::Internal("the authorization index's lock is poisoned".to_owned())
}
