//! The relay: publishes every event of the log, in position order, to the NATS JetStream stream
//! `CUSTODIAN` as a CloudEvents 1.0 document (DESIGN section 6), so subscribers can follow the
//! ledger without reading its database.
//!
//! Guarantees, for one relay or several on the same log and NATS:
//! - **In order, nothing skipped.** Event `n + 1` is published only after `n` was, and an event is
//!   counted as delivered only once JetStream acknowledged it. Every publish carries
//!   `Nats-Expected-Last-Sequence`, so JetStream itself refuses a message that would land anywhere
//!   but right after its predecessor; the stream holds positions `1..=n` as consecutive messages.
//! - **Nothing doubled.** The checkpoint is JetStream itself: on every (re)connect the relay reads
//!   the stream's last message and resumes after its `position`. A message whose ack was lost is
//!   therefore never sent again, and one that an earlier connection still delivers late is
//!   dropped by JetStream's duplicate window (`Nats-Msg-Id` = event id) or refused by the sequence
//!   check. A subscriber that deduplicates by event id sees each event exactly once.
//! - **NATS is not on the command path.** The relay only reads the log; when NATS is unreachable
//!   it retries with bounded exponential backoff and catches up afterwards, while the server keeps
//!   taking appends.
//!
//! The message format (DESIGN section 6) is defined by [`subject`] and [`cloud_event`].
//!
//! Right after a `ledger.checkpointed` event the relay also publishes the signed checkpoint's note
//! text, as is, on [`CHECKPOINT_SUBJECT`] (content type `text/plain; charset=utf-8`,
//! `Nats-Msg-Id` = `{event id}.checkpoint`), so witnesses can follow the checkpoints alone. It is
//! part of the same ordered sequence: the stream holds each checkpoint's note right after its
//! event, and a relay that stopped between the two publishes the note first when it resumes.
//!
//! Start one per server process, keep its status for monitoring, and cancel it on shutdown:
//!
//! ```no_run
//! # async fn serve(store: std::sync::Arc<dyn custodian_store::EventStore>) -> Result<(), custodian_relay::RelayError> {
//! use custodian_relay::{Relay, RelayOptions};
//! use tokio_util::sync::CancellationToken;
//!
//! let relay = Relay::new(store, "nats://127.0.0.1:4222", RelayOptions::default())?;
//! let status = relay.status(); // acknowledged position, connected, failures, last error
//! let shutdown = CancellationToken::new();
//! let task = tokio::spawn(relay.run(shutdown.clone()));
//! // ... serve; then, on SIGTERM:
//! shutdown.cancel();
//! let _ = task.await;
//! println!("relayed up to {}", status.borrow().acknowledged_position);
//! # Ok(())
//! # }
//! ```

mod cloudevent;
mod worker;

use std::time::Duration;

pub use cloudevent::{CONTENT_TYPE, DATA_CONTENT_TYPE, SOURCE_PREFIX, cloud_event, subject};
pub use worker::Relay;

/// The JetStream stream every event is published to.
pub const STREAM_NAME: &str = "CUSTODIAN";

/// The first token of every subject: `custodian.{tenant}.{aggregate}.{type}`.
pub const SUBJECT_PREFIX: &str = "custodian";

/// The subject of every published checkpoint's signed note.
pub const CHECKPOINT_SUBJECT: &str = "custodian._system.ledger.checkpoint";

/// The content type of a checkpoint's note.
pub const NOTE_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// The subjects the stream is created with.
pub const STREAM_SUBJECTS: &str = "custodian.>";

/// How a relay behaves; [`Default`] gives the values documented on each field. A value out of
/// range is raised to the nearest usable one (a window of 1, a delay of 1 ms, `retry_max >= retry_min`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayOptions {
    /// Most publishes awaiting JetStream's ack at once (default 256; at least 1). Acks are still
    /// taken in order: the acknowledged position never passes an unacknowledged event.
    pub max_in_flight: usize,
    /// How long one publish ack or JetStream API request may take before the relay reconnects
    /// and re-reads its checkpoint (default 5 s).
    pub ack_timeout: Duration,
    /// How long one attempt to reach a NATS server may take (default 5 s).
    pub connect_timeout: Duration,
    /// The first delay after a failure (default 100 ms); it doubles with each failure in a row.
    pub retry_min: Duration,
    /// The longest delay between attempts (default 5 s).
    pub retry_max: Duration,
    /// JetStream's duplicate window, used only when the relay creates the stream (default 2
    /// minutes). It must be longer than any outage of a single publish, i.e. than
    /// `ack_timeout` plus `retry_max`.
    pub duplicate_window: Duration,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            max_in_flight: 256,
            ack_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            duplicate_window: Duration::from_secs(120),
        }
    }
}

/// What the relay is doing, for health checks and metrics. Read it through the
/// [`tokio::sync::watch::Receiver`] that [`Relay::status`] returns: cloning that is cheap, and
/// `changed()` / `wait_for()` wake on every update.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RelayStatus {
    /// The highest position JetStream holds: every event up to it was acknowledged. `0` until the
    /// relay first read its checkpoint, or when the stream is empty.
    pub acknowledged_position: u64,
    /// Whether the relay is connected to a NATS server right now.
    pub connected: bool,
    /// Failed attempts since the relay started (to connect, to read the checkpoint, or to have an
    /// event acknowledged), each followed by a backoff and a fresh start from JetStream's
    /// checkpoint. A counter for metrics: it never decreases.
    pub failures: u64,
    /// The most recent failure, in words; cleared once the relay has recovered (connected again,
    /// read its checkpoint, or had an event acknowledged). The log carries the full history.
    pub last_error: Option<String>,
}

/// What can go wrong while relaying, named for the operator who reads it in the status or the log.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The NATS URL cannot be used.
    #[error("the NATS server address {address:?} is not usable: {reason}")]
    InvalidUrl {
        /// The offending address, with any password replaced by `***`.
        address: String,
        /// Why.
        reason: String,
    },
    /// No NATS server could be reached.
    #[error("cannot connect to NATS: {0}")]
    Connect(#[source] async_nats::ConnectError),
    /// Creating or reading the JetStream stream failed.
    #[error("JetStream stream {STREAM_NAME}: {0}")]
    Stream(String),
    /// The stream's last message was not published by a relay, so no checkpoint can be read.
    #[error(
        "message {sequence} of stream {STREAM_NAME} is not a Custodian event ({reason}); only the relay may publish to {STREAM_SUBJECTS}"
    )]
    ForeignMessage {
        /// Its stream sequence.
        sequence: u64,
        /// Why it cannot be read as an event.
        reason: String,
    },
    /// JetStream holds an event the log does not: the stream belongs to another ledger, or the
    /// log was replaced. The relay publishes nothing until an operator resolves it.
    #[error("stream {STREAM_NAME} and the log disagree at position {position}: {detail}")]
    Diverged {
        /// The checkpoint position.
        position: u64,
        /// What differs.
        detail: String,
    },
    /// Reading the log failed.
    #[error("reading the log: {0}")]
    Store(#[from] custodian_store::StoreError),
    /// The log stopped yielding events (the store was dropped).
    #[error("the log is closed")]
    LogClosed,
    /// An event cannot be written as JSON.
    #[error("the event at position {position} cannot be encoded: {source}")]
    Encode {
        /// Its position.
        position: u64,
        /// What serde said.
        source: serde_json::Error,
    },
    /// Publishing an event failed or its ack did not come.
    #[error("publishing the event at position {position}: {source}")]
    Publish {
        /// Its position.
        position: u64,
        /// What NATS said.
        source: async_nats::jetstream::context::PublishError,
    },
    /// JetStream acknowledged an event somewhere other than right after its predecessor.
    #[error(
        "JetStream acknowledged the event at position {position} as message {sequence}{}, but expected message {expected}",
        if *.duplicate { " (a duplicate)" } else { "" }
    )]
    OutOfSequence {
        /// Its position.
        position: u64,
        /// Where JetStream says it is.
        sequence: u64,
        /// Where it should be.
        expected: u64,
        /// Whether JetStream took it for a duplicate.
        duplicate: bool,
    },
}
