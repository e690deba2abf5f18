//! The usage recorder: keys' minute windows appended as `key.used`, by one task.
//!
//! Verifications and authentications count uses in memory ([`super::index::KeyIndex::consume`]).
//! Once a minute has passed, this task appends one `key.used` per key that was used in it, to the
//! key's own stream; at shutdown it appends every window still open, including the current
//! minute's. So the log holds at most one `key.used` per key per minute (two when the service
//! stops and starts again within one minute), never one per request.
//!
//! What a crash can lose: the uses not yet recorded, at most the current minute and the one
//! before it (the recorder runs every [`SWEEP`]), and the `remaining` they took from usage
//! limits: after a crash a key can be used that much again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use custodian_domain::NewEvent;
use custodian_domain::key::KeyEvent;
use custodian_domain::{Actor, ActorKind};
use custodian_store::{EventStore, ExpectedVersion};
use futures::StreamExt as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::index::{KeyIndex, UsageRecord};
use crate::clock::Clock;
use crate::commands::Context;

/// How often closed windows are looked for.
pub const SWEEP: Duration = Duration::from_secs(1);
/// Appends in flight at once (the store group-commits them).
const CONCURRENT_APPENDS: usize = 64;
/// Attempts at appending one window, 50 ms apart and doubling (about 1.5 s in all).
const ATTEMPTS: u32 = 5;

/// The recorder's task.
pub struct UsageRecorder {
    store: Arc<dyn EventStore>,
    index: Arc<KeyIndex>,
    clock: Arc<dyn Clock>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for UsageRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageRecorder").finish_non_exhaustive()
    }
}

impl UsageRecorder {
    /// Starts the task; when `shutdown` is cancelled it records every open window and stops.
    pub fn start(
        store: Arc<dyn EventStore>,
        index: Arc<KeyIndex>,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let recorder = Arc::new(Self {
            store,
            index,
            clock,
            writer: Mutex::new(None),
        });
        let running = recorder.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => {
                        running.record(true).await;
                        return;
                    }
                    _ = tick.tick() => {
                        running.record(false).await;
                    }
                }
            }
        });
        if let Ok(mut w) = recorder.writer.lock() {
            *w = Some(task);
        }
        recorder
    }

    /// Appends the windows that are over now (every open one with `all`); answers how many.
    pub async fn record(&self, all: bool) -> usize {
        let records = self.index.take_closed(self.clock.now(), all);
        let n = records.len();
        futures::stream::iter(records)
            .for_each_concurrent(CONCURRENT_APPENDS, |r| {
                append(self.store.clone(), self.index.clone(), r)
            })
            .await;
        n
    }

    /// Waits until the task has recorded what was open at shutdown and stopped.
    pub async fn stopped(&self) {
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(writer) = writer {
            let _ = writer.await;
        }
    }
}

async fn append(store: Arc<dyn EventStore>, index: Arc<KeyIndex>, r: UsageRecord) {
    let Ok(stream) =
        custodian_domain::StreamName::new(&r.tenant, custodian_domain::key::AGGREGATE, &r.key_id)
    else {
        index.not_recorded(&r);
        return;
    };
    let ctx = Context {
        actor: Actor {
            kind: ActorKind::ApiKey,
            id: r.key_id.clone(),
        },
        now: r.window.last,
        correlation_id: None,
    };
    let event = KeyEvent::Used {
        window_start: r.window.start,
        uses: r.window.uses,
        cost: r.window.cost,
        first_used_at: r.window.first,
        last_used_at: r.window.last,
        remaining: r.remaining,
    };
    // One event, one id, whatever the attempt: an append that committed but answered an error is
    // recognised by its id when retried, so a window is never counted twice.
    let new = NewEvent {
        id: r.event_id,
        ..ctx.event(&event)
    };
    let mut pause = Duration::from_millis(50);
    for attempt in 1..=ATTEMPTS {
        match store
            .append(&stream, ExpectedVersion::Any, vec![new.clone()])
            .await
        {
            Ok(_) => return,
            Err(e) if attempt < ATTEMPTS => {
                tracing::warn!(error = %e, key = r.key_id, "recording key usage failed; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Err(e) => {
                tracing::error!(error = %e, key = r.key_id, uses = r.window.uses, "recording key usage failed");
                index.not_recorded(&r);
            }
        }
    }
}
