//! The decision log: checks recorded as `decision.recorded` events, batched by one writer.
//!
//! A check does not wait for its record to be durable: the record joins a bounded queue, and one
//! task appends whatever is queued, per tenant, as one append to `{tenant}/decision/log`, which
//! the store commits with any other waiting appends (group commit). The queue applies backpressure
//! when it is full (checks wait), and is drained and written at shutdown. What a crash can lose is
//! the records of the last batch in flight: at most [`BATCH`] records and the milliseconds since
//! they were queued.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use custodian_domain::policy::event::{DECISION_AGGREGATE, DECISION_STREAM_ID};
use custodian_domain::policy::{DecisionEvent, Verdict};
use custodian_domain::{DomainEvent as _, NewEvent, StreamName};
use custodian_store::{EventStore, ExpectedVersion};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::commands::Context;

/// Most records waiting; checks wait for room beyond it.
const QUEUE: usize = 16_384;
/// Most records written in one append.
pub const BATCH: usize = 1_000;

/// Which checks are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecisionLogMode {
    /// Every check (the default).
    #[default]
    All,
    /// Only denials.
    Denies,
    /// None.
    None,
}

impl FromStr for DecisionLogMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all" => Ok(Self::All),
            "denies" => Ok(Self::Denies),
            "none" => Ok(Self::None),
            other => Err(format!(
                "{other:?} is not a decision log mode: use all, denies or none"
            )),
        }
    }
}

/// The recorder of decisions.
#[derive(Debug)]
pub struct DecisionLog {
    mode: DecisionLogMode,
    queue: mpsc::Sender<(String, NewEvent)>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl DecisionLog {
    /// Starts the writer; it drains the queue and stops when `shutdown` is cancelled.
    pub fn start(
        store: Arc<dyn EventStore>,
        mode: DecisionLogMode,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let (queue, rx) = mpsc::channel(QUEUE);
        let writer = tokio::spawn(write(store, rx, shutdown));
        Arc::new(Self {
            mode,
            queue,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// The mode it was started with.
    pub fn mode(&self) -> DecisionLogMode {
        self.mode
    }

    /// Queues the record of a decision in `tenant`, if the mode records it.
    pub async fn record(&self, tenant: &str, ctx: &Context, event: DecisionEvent) {
        let DecisionEvent::Recorded { decision, .. } = &event;
        let wanted = match self.mode {
            DecisionLogMode::All => true,
            DecisionLogMode::Denies => *decision == Verdict::Deny,
            DecisionLogMode::None => false,
        };
        if !wanted {
            return;
        }
        let new = ctx.event(&event);
        if self.queue.send((tenant.to_owned(), new)).await.is_err() {
            tracing::warn!(
                event = event.event_type(),
                "a decision came after the decision log stopped; it is not recorded"
            );
        }
    }

    /// Waits until the writer has written what was queued before shutdown and stopped.
    pub async fn stopped(&self) {
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(writer) = writer {
            let _ = writer.await;
        }
    }
}

async fn write(
    store: Arc<dyn EventStore>,
    mut rx: mpsc::Receiver<(String, NewEvent)>,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => n,
            () = shutdown.cancelled() => {
                rx.close();
                while rx.recv_many(&mut batch, BATCH).await > 0 {
                    flush(store.as_ref(), &mut batch).await;
                }
                return;
            }
        };
        if n == 0 {
            return;
        }
        flush(store.as_ref(), &mut batch).await;
    }
}

async fn flush(store: &dyn EventStore, batch: &mut Vec<(String, NewEvent)>) {
    let mut by_tenant: BTreeMap<String, Vec<NewEvent>> = BTreeMap::new();
    for (tenant, event) in batch.drain(..) {
        by_tenant.entry(tenant).or_default().push(event);
    }
    for (tenant, events) in by_tenant {
        let Ok(stream) = StreamName::new(&tenant, DECISION_AGGREGATE, DECISION_STREAM_ID) else {
            continue;
        };
        let n = events.len();
        // A failed append is retried a few times: the events carry their ids, so a retry of an
        // append that did commit is not doubled.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match store
                .append(&stream, ExpectedVersion::Any, events.clone())
                .await
            {
                Ok(_) => break,
                Err(e) if attempt < 3 => {
                    tracing::warn!(error = %e, tenant, "recording decisions failed; retrying");
                }
                Err(e) => {
                    tracing::error!(error = %e, tenant, lost = n, "recording decisions failed");
                    break;
                }
            }
        }
    }
}
