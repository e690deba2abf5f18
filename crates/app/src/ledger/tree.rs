//! The log's RFC 6962 Merkle tree in memory, kept current by following the log: every event's
//! hash is pushed as a leaf (leaf index = position - 1) as the event is read, off the append path.
//!
//! It costs about 64 bytes per event (every complete subtree's hash is kept, so a root or a proof
//! for any size up to the applied one is `O(log² n)` hashes and no reads), and starting a server
//! reads the whole log once to rebuild it; snapshots that bound start-up are a later step.
//!
//! Beside the tree it keeps what the checkpoint publisher needs from the ledger's own stream: the
//! positions of its events (which do not count as growth of the log), the current checkpoint key
//! and the last checkpoint.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use custodian_domain::ledger::{self, CurrentKey, LastCheckpoint, LedgerEvent, LedgerState};
use custodian_domain::merkle::{Hash, ProofError, Tree};
use custodian_domain::stream::SYSTEM_TENANT;
use custodian_domain::{DomainEvent, EventRecord};
use custodian_store::EventStore;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::AppError;
use crate::follower::Progress;

#[derive(Debug, Default)]
struct State {
    tree: Tree,
    /// Positions of the ledger stream's own events, ascending.
    ledger_positions: Vec<u64>,
    /// The ledger stream folded so far.
    ledger: LedgerState,
}

/// The tree of the log as applied so far, and the ledger stream's state.
#[derive(Debug)]
pub struct TreeIndex {
    state: RwLock<State>,
    progress: Progress,
    head: watch::Receiver<u64>,
}

impl TreeIndex {
    /// Starts following `store` from position 1; the task stops with `shutdown`. A request waits
    /// at most `wait` for the tree to reach a position.
    pub fn start(
        store: Arc<dyn EventStore>,
        wait: Duration,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let index = Arc::new(Self {
            state: RwLock::new(State::default()),
            progress: Progress::new(wait),
            head: store.watch_head(),
        });
        let follower = index.clone();
        crate::follower::spawn(store, "the Merkle tree", shutdown, move |record| {
            follower.apply(record);
        });
        index
    }

    /// The tree's size: the last position applied.
    pub fn size(&self) -> u64 {
        self.progress.applied()
    }

    /// The highest position committed that this process knows of.
    pub fn known_head(&self) -> u64 {
        *self.head.borrow()
    }

    /// Waits (bounded) until the tree covers `position`.
    pub async fn wait_for(&self, position: u64) -> Result<(), AppError> {
        if self.progress.reached(position).await {
            Ok(())
        } else {
            Err(AppError::unavailable(
                format!("the Merkle tree has not reached position {position} yet"),
                1,
            ))
        }
    }

    /// Waits (bounded) until the tree covers every commit this process knows of.
    pub async fn catch_up(&self) -> Result<u64, AppError> {
        let head = self.known_head();
        self.wait_for(head).await?;
        Ok(head)
    }

    /// The size of the tree and its root, read together.
    pub fn current_root(&self) -> Result<(u64, Hash), AppError> {
        self.read(|s| {
            let size = s.tree.size();
            s.tree.root(size).map(|root| (size, root))
        })?
        .map_err(proof_bug)
    }

    /// The root of the tree of the first `size` events.
    pub fn root(&self, size: u64) -> Result<Hash, ProofError> {
        self.read(|s| s.tree.root(size))
            .unwrap_or(Err(ProofError::BeyondTree {
                asked: size,
                size: 0,
            }))
    }

    /// The audit path of leaf `index` in the tree of `size` events.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        self.read(|s| s.tree.inclusion_proof(index, size))
            .unwrap_or(Err(ProofError::BeyondTree {
                asked: size,
                size: 0,
            }))
    }

    /// The proof that the tree of `old` events is a prefix of the tree of `new` events.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, ProofError> {
        self.read(|s| s.tree.consistency_proof(old, new))
            .unwrap_or(Err(ProofError::BeyondTree {
                asked: new,
                size: 0,
            }))
    }

    /// The checkpoint key the log names as current, once one was issued.
    pub fn current_key(&self) -> Option<CurrentKey> {
        self.read(|s| s.ledger.key.clone()).ok().flatten()
    }

    /// The last checkpoint the log holds, as far as applied.
    pub fn last_checkpoint(&self) -> Option<LastCheckpoint> {
        self.read(|s| s.ledger.last.clone()).ok().flatten()
    }

    /// How many events in positions `after + 1 ..= size()` are not the ledger stream's own: what
    /// the log grew by since a checkpoint of `after` events, leaving out checkpoints themselves.
    pub fn grown_since(&self, after: u64) -> u64 {
        self.read(|s| {
            let size = s.tree.size();
            if size <= after {
                return 0;
            }
            let own =
                s.ledger_positions.len() - s.ledger_positions.partition_point(|p| *p <= after);
            size - after - own as u64
        })
        .unwrap_or(0)
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> Result<T, AppError> {
        let state = self
            .state
            .read()
            .map_err(|_| AppError::internal("the Merkle tree's lock is poisoned"))?;
        Ok(f(&state))
    }

    fn apply(&self, record: &EventRecord) {
        if let Ok(mut state) = self.state.write() {
            state.tree.push(&record.hash.0);
            if record.stream.tenant() == SYSTEM_TENANT
                && record.stream.aggregate() == ledger::AGGREGATE
            {
                state.ledger_positions.push(record.position);
                match LedgerEvent::decode(record.event_type.as_str(), record.schema, &record.data) {
                    Ok(event) => {
                        let folded = std::mem::take(&mut state.ledger);
                        state.ledger = ledger::evolve(folded, &event);
                    }
                    Err(e) => {
                        tracing::error!(position = record.position, error = %e, "unreadable ledger event");
                    }
                }
            }
        }
        self.progress.advance(record.position);
    }
}

/// A proof for a size the tree has cannot fail; if it does, it is a bug.
fn proof_bug(e: ProofError) -> AppError {
    AppError::internal(format!(
        "the Merkle tree cannot answer for its own size: {e}"
    ))
}
