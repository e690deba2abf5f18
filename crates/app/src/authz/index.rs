//! The authorization index: the domain's [`AccessHistory`] (every tenant's [`Policy`], with its
//! history, and the standing of principals and tenants) behind a lock, kept current by following
//! the log. It answers checks in memory, for now or for any past instant; the offline tools fold
//! the log with the same type, so they decide alike.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use custodian_domain::policy::{AccessHistory, AsOf, Check, Decision, Policy};
use custodian_domain::{EventRecord, Timestamp};
use custodian_store::EventStore;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::AppError;
use crate::follower::Progress;

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
    state: RwLock<AccessHistory>,
    progress: Progress,
    head: watch::Receiver<u64>,
}

impl PolicyIndex {
    /// Starts following `store` from position 0; the task stops with `shutdown`.
    pub fn start(
        store: Arc<dyn EventStore>,
        wait: Duration,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let index = Arc::new(Self {
            state: RwLock::new(AccessHistory::new()),
            progress: Progress::new(wait),
            head: store.watch_head(),
        });
        let follower = index.clone();
        crate::follower::spawn(store, "the authorization index", shutdown, move |record| {
            follower.apply(record);
        });
        index
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
        Ok(f(state.policy(tenant)))
    }

    /// The instant a question is about: for `At`, the position of the log as it stood then.
    pub fn as_of(&self, when: When) -> Result<AsOf, AppError> {
        match when {
            When::Now(time) => Ok(AsOf::now(time)),
            When::At(time) => {
                let state = self.state.read().map_err(|_| poisoned())?;
                Ok(state.as_of(time))
            }
        }
    }

    /// Evaluates `check` in `tenant`: out-of-service principals and suspended tenants are denied
    /// everything; otherwise the policy decides. Also answers the position it was evaluated at:
    /// the one applied for a check of now, the instant's for a check of the past.
    pub fn decide(&self, tenant: &str, check: &Check<'_>) -> Result<(Decision, u64), AppError> {
        let state = self.state.read().map_err(|_| poisoned())?;
        let position = check.as_of.position.min(state.position());
        Ok((state.decide(tenant, check), position))
    }

    /// Evaluates every check in `tenant` against one state of the index, and answers the position
    /// it had applied.
    pub fn decide_all(
        &self,
        tenant: &str,
        checks: &[Check<'_>],
    ) -> Result<(Vec<Decision>, u64), AppError> {
        let state = self.state.read().map_err(|_| poisoned())?;
        let decisions = checks.iter().map(|c| state.decide(tenant, c)).collect();
        Ok((decisions, state.position()))
    }

    fn apply(&self, record: &EventRecord) {
        if let Ok(mut state) = self.state.write()
            && let Err(e) = state.apply(record)
        {
            tracing::error!(position = record.position, error = %e, "unreadable policy event");
        }
        self.progress.advance(record.position);
    }
}

fn poisoned() -> AppError {
    AppError::Internal("the authorization index's lock is poisoned".to_owned())
}
