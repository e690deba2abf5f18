//! The usage writer: one task that takes whatever admitted records are waiting, rolls them up into
//! one `usage.recorded` event per (tenant, subject, meter, minute) present, adds the follow-ups
//! the ledger decides (soft-quota warnings, budget thresholds) and the refusals to report
//! (`quota.exceeded`), appends each tenant's events as one append (the store commits concurrent
//! appends together), and only then tells the waiting callers. So an acknowledged record is
//! durable, and under load the number of events grows with flushes × active (subject, meter)
//! pairs, not with requests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use custodian_domain::usage::{self, AGGREGATE, RECORDS_STREAM_ID, Record, UsageEvent};
use custodian_domain::{Actor, StreamName, Timestamp};
use custodian_store::{EventStore, ExpectedVersion, StoreError};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::ledger::{Outcome, UsageLedger};
use crate::clock::Clock;
use crate::commands::Context;
use crate::error::AppError;

/// Most submissions waiting; callers wait for room beyond it.
const QUEUE: usize = 8_192;
/// Most submissions taken in one flush.
const FLUSH: usize = 2_048;

/// What a request hands the writer.
#[derive(Debug)]
pub(crate) enum Submission {
    /// Admitted records, and whom to tell when they are durable.
    Records {
        tenant: String,
        records: Vec<Record>,
        outcome: watch::Sender<Outcome>,
    },
    /// Records a hard quota refused, to report (nobody waits).
    Refused {
        tenant: String,
        records: Vec<Record>,
        limit: u64,
    },
}

/// The writer of usage records.
#[derive(Debug)]
pub struct UsageWriter {
    queue: mpsc::Sender<Submission>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl UsageWriter {
    /// Starts the writer; it writes what is queued and stops when `shutdown` is cancelled.
    pub fn start(
        store: Arc<dyn EventStore>,
        ledger: Arc<UsageLedger>,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let (queue, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(run(store, ledger, clock, rx, shutdown));
        Arc::new(Self {
            queue,
            task: Mutex::new(Some(task)),
        })
    }

    pub(crate) async fn submit(&self, submission: Submission) -> Result<(), AppError> {
        self.queue
            .send(submission)
            .await
            .map_err(|_| AppError::unavailable("the server is shutting down", 5))
    }

    /// Waits until the writer has written what was queued before shutdown and stopped.
    pub async fn stopped(&self) {
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

async fn run(
    store: Arc<dyn EventStore>,
    ledger: Arc<UsageLedger>,
    clock: Arc<dyn Clock>,
    mut rx: mpsc::Receiver<Submission>,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::with_capacity(FLUSH);
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut batch, FLUSH) => n,
            () = shutdown.cancelled() => {
                rx.close();
                while rx.recv_many(&mut batch, FLUSH).await > 0 {
                    flush(&store, &ledger, clock.now(), &mut batch).await;
                }
                return;
            }
        };
        if n == 0 {
            return;
        }
        flush(&store, &ledger, clock.now(), &mut batch).await;
    }
}

#[derive(Default)]
struct TenantBatch {
    records: Vec<Record>,
    waiting: Vec<watch::Sender<Outcome>>,
    refused: Vec<(Record, u64)>,
}

async fn flush(
    store: &Arc<dyn EventStore>,
    ledger: &Arc<UsageLedger>,
    now: Timestamp,
    batch: &mut Vec<Submission>,
) {
    let mut by_tenant: BTreeMap<String, TenantBatch> = BTreeMap::new();
    for s in batch.drain(..) {
        match s {
            Submission::Records {
                tenant,
                records,
                outcome,
            } => {
                let b = by_tenant.entry(tenant).or_default();
                b.records.extend(records);
                b.waiting.push(outcome);
            }
            Submission::Refused {
                tenant,
                records,
                limit,
            } => {
                let b = by_tenant.entry(tenant).or_default();
                b.refused.extend(records.into_iter().map(|r| (r, limit)));
            }
        }
    }
    let appends = by_tenant
        .into_iter()
        .map(|(tenant, b)| write_tenant(store, ledger, now, tenant, b));
    futures::future::join_all(appends).await;
}

async fn write_tenant(
    store: &Arc<dyn EventStore>,
    ledger: &Arc<UsageLedger>,
    now: Timestamp,
    tenant: String,
    b: TenantBatch,
) {
    let fail = |e: AppError, follow: &super::ledger::FollowUps| {
        ledger.release(&tenant, &b.records, follow);
        for w in &b.waiting {
            w.send_replace(Outcome::Failed(e.clone()));
        }
    };
    let follow = match ledger.flush(&tenant, &b.records) {
        Ok(f) => f,
        Err(e) => {
            fail(e, &super::ledger::FollowUps::default());
            return;
        }
    };
    let events_by = |keys_per_event: usize| {
        let mut events = usage::roll_up_by(&b.records, keys_per_event);
        events.extend(roll_up_refusals(&b.refused));
        events.extend(follow.events.iter().cloned());
        events
    };
    let mut keys_per_event = usage::KEYS_PER_EVENT;
    if events_by(keys_per_event).is_empty() {
        return;
    }
    let Ok(stream) = StreamName::new(&tenant, AGGREGATE, RECORDS_STREAM_ID) else {
        fail(
            AppError::internal(format!("cannot name the usage stream of {tenant}")),
            &follow,
        );
        return;
    };
    let ctx = Context {
        actor: Actor::system(),
        now,
        correlation_id: None,
    };
    let mut new: Vec<_> = events_by(keys_per_event)
        .iter()
        .map(|e| ctx.event(e))
        .collect();
    // A failed append is retried a few times: the events carry their ids, so a retry of an
    // append that did commit is not doubled. An event over the store's size limit (set lower
    // than usual) is split into smaller ones: a refused append wrote nothing.
    let mut attempt = 0;
    loop {
        attempt += 1;
        match store
            .append(&stream, ExpectedVersion::Any, new.clone())
            .await
        {
            Ok(outcome) => {
                for w in &b.waiting {
                    w.send_replace(Outcome::Durable(outcome.last_position));
                }
                return;
            }
            Err(StoreError::EventTooLarge { .. }) if keys_per_event > 1 => {
                keys_per_event /= 2;
                new = events_by(keys_per_event)
                    .iter()
                    .map(|e| ctx.event(e))
                    .collect();
            }
            Err(e)
                if attempt < 3
                    && matches!(AppError::from(e.clone()), AppError::Unavailable { .. }) =>
            {
                tracing::warn!(error = %e, tenant, "recording usage failed; retrying");
            }
            Err(e) => {
                tracing::error!(error = %e, tenant, records = b.records.len(), "recording usage failed");
                fail(AppError::from(e), &follow);
                return;
            }
        }
    }
}

/// One `quota.exceeded` per (subject, meter, minute) of the refused records.
fn roll_up_refusals(refused: &[(Record, u64)]) -> Vec<UsageEvent> {
    let mut groups: BTreeMap<(String, String, Timestamp), (u64, u64, u64)> = BTreeMap::new();
    for (r, limit) in refused {
        let g = groups
            .entry((r.subject.clone(), r.meter.clone(), usage::window_of(r.at)))
            .or_default();
        g.0 += 1;
        g.1 = g.1.saturating_add(r.quantity);
        g.2 = *limit;
    }
    groups
        .into_iter()
        .map(
            |((subject, meter, window), (refused, quantity, limit))| UsageEvent::QuotaExceeded {
                period: usage::period_of(window),
                window,
                subject,
                meter,
                refused,
                quantity,
                limit,
            },
        )
        .collect()
}
