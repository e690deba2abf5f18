//! The group-commit writer: one task per store takes every waiting append, commits them in one
//! transaction, then answers each caller.
//!
//! A backend whose driver blocks (SQLite) runs the writer on a thread of its own instead
//! ([`Writer::spawn_thread`]): the thread owns the connection, so a commit's statements run
//! without a hand-off between threads, and the only hand-offs left are one per append in and one
//! per append out.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use custodian_domain::{NewEvent, StreamName};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::batch::{self, Pending};
use crate::{AppendOutcome, ExpectedVersion, Head, StoreError, StoreOptions};

/// How many appends may wait for the writer before callers are held back.
const QUEUE_DEPTH: usize = 8192;

/// A batch's answers, one per append in order, and the head after it.
pub(crate) type Decided = (Vec<Result<AppendOutcome, StoreError>>, Head);

/// A backend's half of a group commit: one transaction for the whole batch.
#[async_trait]
pub(crate) trait Committer: Send + Sync + 'static {
    /// Decides and commits the batch in one transaction. Without `look_up_ids`, the batch is
    /// decided as if every id were new, and `Ok(None)` (nothing written) means it must be decided
    /// again with the lookup. `Err` means nothing was written.
    async fn try_commit(
        &mut self,
        batch: &[Pending],
        look_up_ids: bool,
    ) -> Result<Option<Decided>, StoreError>;

    /// Forgets what the committer remembers of the log (after a failed or abandoned transaction).
    fn forget(&mut self);
}

/// [`Committer`] for a backend whose driver blocks: it runs on the writer's own thread.
pub(crate) trait BlockingCommitter: Send + 'static {
    /// As [`Committer::try_commit`].
    fn try_commit(
        &mut self,
        batch: &[Pending],
        look_up_ids: bool,
    ) -> Result<Option<Decided>, StoreError>;

    /// As [`Committer::forget`].
    fn forget(&mut self);
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Commits the batch durably and answers each append in order; `Err` means nothing was written.
///
/// Fresh ids are the rule and a retried append the exception, so the batch is first committed
/// without looking its ids up; a retry then trips the unique index on ids (or shows up as a refused
/// append), and the batch is decided again with the lookup.
async fn commit(committer: &mut dyn Committer, batch: &[Pending]) -> Result<Decided, StoreError> {
    match committer.try_commit(batch, false).await {
        Ok(Some(done)) => return Ok(done),
        Ok(None) => {}
        Err(StoreError::Database(e)) if is_unique_violation(&e) => {}
        Err(e) => {
            committer.forget();
            return Err(e);
        }
    }
    committer.forget();
    match committer.try_commit(batch, true).await {
        Ok(Some(done)) => Ok(done),
        Ok(None) => Err(StoreError::Config(
            "an append batch could not be decided even with its ids looked up".into(),
        )),
        Err(e) => {
            committer.forget();
            Err(e)
        }
    }
}

/// [`commit`] on the writer's own thread.
fn commit_blocking(
    committer: &mut dyn BlockingCommitter,
    batch: &[Pending],
) -> Result<Decided, StoreError> {
    match committer.try_commit(batch, false) {
        Ok(Some(done)) => return Ok(done),
        Ok(None) => {}
        Err(StoreError::Database(e)) if is_unique_violation(&e) => {}
        Err(e) => {
            committer.forget();
            return Err(e);
        }
    }
    committer.forget();
    match committer.try_commit(batch, true) {
        Ok(Some(done)) => Ok(done),
        Ok(None) => Err(StoreError::Config(
            "an append batch could not be decided even with its ids looked up".into(),
        )),
        Err(e) => {
            committer.forget();
            Err(e)
        }
    }
}

struct Request {
    pending: Pending,
    reply: oneshot::Sender<Result<AppendOutcome, StoreError>>,
}

/// Raises the shared head to `position` if it is higher.
pub(crate) fn advance(head: &watch::Sender<u64>, position: u64) {
    head.send_if_modified(|h| {
        if position > *h {
            *h = position;
            true
        } else {
            false
        }
    });
}

/// Where appends are queued for the writer.
#[derive(Clone)]
enum Queue {
    Task(mpsc::Sender<Request>),
    Thread(flume::Sender<Request>),
}

/// The running writer, to wait for at close.
enum Running {
    Task(JoinHandle<()>),
    Thread {
        /// Resolves (with an error: its sender is dropped) once the thread has finished.
        finished: oneshot::Receiver<()>,
        thread: std::thread::JoinHandle<()>,
    },
}

/// Owns the writer task or thread; appends go through it.
pub(crate) struct Writer {
    sender: Mutex<Option<Queue>>,
    running: tokio::sync::Mutex<Option<Running>>,
    max_event_bytes: usize,
}

impl Writer {
    pub(crate) fn spawn(
        committer: Box<dyn Committer>,
        head: Arc<watch::Sender<u64>>,
        options: &StoreOptions,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let task = tokio::spawn(run(committer, rx, head, options.max_batch_events.max(1)));
        Self {
            sender: Mutex::new(Some(Queue::Task(tx))),
            running: tokio::sync::Mutex::new(Some(Running::Task(task))),
            max_event_bytes: options.max_event_bytes,
        }
    }

    /// Runs the writer on a thread of its own that owns `committer` (and so its connection).
    pub(crate) fn spawn_thread(
        committer: Box<dyn BlockingCommitter>,
        head: Arc<watch::Sender<u64>>,
        options: &StoreOptions,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = flume::bounded(QUEUE_DEPTH);
        let (finished_tx, finished) = oneshot::channel::<()>();
        let max_batch_events = options.max_batch_events.max(1);
        let thread = std::thread::Builder::new()
            .name("custodian-writer".into())
            .spawn(move || {
                let _finished = finished_tx;
                run_thread(committer, rx, head, max_batch_events);
            })
            .map_err(|e| StoreError::Config(format!("cannot start the event writer: {e}")))?;
        Ok(Self {
            sender: Mutex::new(Some(Queue::Thread(tx))),
            running: tokio::sync::Mutex::new(Some(Running::Thread { finished, thread })),
            max_event_bytes: options.max_event_bytes,
        })
    }

    pub(crate) async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        let data = batch::prepare(&events, self.max_event_bytes)?;
        let sender = self
            .sender
            .lock()
            .map_err(|_| StoreError::Closed)?
            .clone()
            .ok_or(StoreError::Closed)?;
        let (reply, answer) = oneshot::channel();
        let request = Request {
            pending: Pending {
                stream: stream.clone(),
                expected,
                events,
                data,
            },
            reply,
        };
        match sender {
            Queue::Task(tx) => tx.send(request).await.map_err(|_| StoreError::Closed)?,
            Queue::Thread(tx) => tx
                .send_async(request)
                .await
                .map_err(|_| StoreError::Closed)?,
        }
        answer.await.map_err(|_| StoreError::Closed)?
    }

    pub(crate) async fn close(&self) {
        if let Ok(mut sender) = self.sender.lock() {
            sender.take();
        }
        match self.running.lock().await.take() {
            None => {}
            Some(Running::Task(task)) => {
                if let Err(e) = task.await {
                    tracing::error!(error = %e, "the event writer stopped abnormally");
                }
            }
            Some(Running::Thread { finished, thread }) => {
                // Appends still queued keep the thread going until each is committed and answered.
                let _ = finished.await;
                if thread.join().is_err() {
                    tracing::error!("the event writer stopped abnormally");
                }
            }
        }
    }
}

/// How long the writer thread waits for the callers it just answered to queue their next append,
/// at most, before it commits what it has.
const GATHER_WAIT: Duration = Duration::from_micros(500);

/// The writer thread: like [`run`], but blocking on its queue and its connection.
fn run_thread(
    mut committer: Box<dyn BlockingCommitter>,
    rx: flume::Receiver<Request>,
    head: Arc<watch::Sender<u64>>,
    max_batch_events: usize,
) {
    let mut last_batch_appends = 1;
    // After the last sender is gone, `recv` still hands out every append already queued.
    while let Ok(first) = rx.recv() {
        let mut size = first.pending.events.len();
        let mut requests = vec![first];
        // The callers answered after the last commit are waking up now. If that batch was larger
        // than what is queued, wait a moment for them, so that the next durable commit carries
        // them all instead of one.
        let deadline = Instant::now() + GATHER_WAIT;
        loop {
            while size < max_batch_events {
                match rx.try_recv() {
                    Ok(r) => {
                        size += r.pending.events.len();
                        requests.push(r);
                    }
                    Err(_) => break,
                }
            }
            if size >= max_batch_events || requests.len() >= last_batch_appends {
                break;
            }
            match rx.recv_deadline(deadline) {
                Ok(r) => {
                    size += r.pending.events.len();
                    requests.push(r);
                }
                Err(_) => break,
            }
        }
        last_batch_appends = requests.len();
        let (pendings, replies): (Vec<Pending>, Vec<_>) =
            requests.into_iter().map(|r| (r.pending, r.reply)).unzip();
        answer(
            &head,
            replies,
            commit_blocking(committer.as_mut(), &pendings),
        );
    }
}

/// Answers each caller of a batch with its outcome, after raising the shared head to what the
/// batch committed; a failed batch wrote nothing, and every caller hears why.
fn answer(
    head: &watch::Sender<u64>,
    replies: Vec<oneshot::Sender<Result<AppendOutcome, StoreError>>>,
    outcome: Result<Decided, StoreError>,
) {
    match outcome {
        Ok((results, new_head)) => {
            advance(head, new_head.position);
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, appends = replies.len(), "a batch of appends failed; nothing of it was written");
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// How many times the writer yields to let callers it just answered queue their next append.
const GATHER_YIELDS: usize = 4;

async fn run(
    mut committer: Box<dyn Committer>,
    mut rx: mpsc::Receiver<Request>,
    head: Arc<watch::Sender<u64>>,
    max_batch_events: usize,
) {
    let mut last_batch_appends = 1;
    while let Some(first) = rx.recv().await {
        let mut size = first.pending.events.len();
        let mut requests = vec![first];
        // The callers answered after the last commit are waking up now. If that batch was larger
        // than what is queued, give them a moment (a few scheduler turns, microseconds) to come
        // back, so the next durable commit carries them all instead of one.
        for attempt in 0..=GATHER_YIELDS {
            while size < max_batch_events {
                match rx.try_recv() {
                    Ok(r) => {
                        size += r.pending.events.len();
                        requests.push(r);
                    }
                    Err(_) => break,
                }
            }
            if attempt == GATHER_YIELDS
                || size >= max_batch_events
                || requests.len() >= last_batch_appends
            {
                break;
            }
            tokio::task::yield_now().await;
        }
        last_batch_appends = requests.len();
        let (pendings, replies): (Vec<Pending>, Vec<_>) =
            requests.into_iter().map(|r| (r.pending, r.reply)).unzip();
        answer(&head, replies, commit(committer.as_mut(), &pendings).await);
    }
}
