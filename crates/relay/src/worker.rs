//! The relay worker: connect, find the checkpoint in JetStream, then follow the log and publish.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::{PublishAckFuture, PublishError};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::stream::{self, LastRawMessageErrorKind, StorageType};
use async_nats::{Client, ConnectOptions, Event, ServerAddr};
use custodian_domain::EventRecord;
use custodian_store::EventStore;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cloudevent::{self, Checkpoint};
use crate::{
    CHECKPOINT_SUBJECT, CONTENT_TYPE, NOTE_CONTENT_TYPE, RelayError, RelayOptions, RelayStatus,
    STREAM_NAME, STREAM_SUBJECTS,
};

/// Publishes the log to JetStream; see the [crate] docs for its guarantees.
pub struct Relay {
    store: Arc<dyn EventStore>,
    servers: Vec<ServerAddr>,
    options: RelayOptions,
    status: Arc<watch::Sender<RelayStatus>>,
}

/// Where a session starts: the last event JetStream holds and the stream's last sequence.
struct Resume {
    checkpoint: Option<Checkpoint>,
    last_sequence: u64,
    /// The last message is a checkpoint's event without its note.
    note_missing: bool,
}

impl Relay {
    /// A relay from `store` to the NATS server(s) at `nats_url`: one address or several separated
    /// by commas (`nats://host:4222`, `tls://user:pass@host`, or `host:port`, which means
    /// `nats://`). Nothing is contacted until [`run`](Self::run).
    pub fn new(
        store: Arc<dyn EventStore>,
        nats_url: &str,
        options: RelayOptions,
    ) -> Result<Self, RelayError> {
        let servers = nats_url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<ServerAddr>().map_err(|e| RelayError::InvalidUrl {
                    address: mask_password(s),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if servers.is_empty() {
            return Err(RelayError::InvalidUrl {
                address: nats_url.to_owned(),
                reason: "no server address given".to_owned(),
            });
        }
        // Out-of-range values get the nearest workable one rather than a tight loop or a stall.
        let mut options = options;
        options.max_in_flight = options.max_in_flight.max(1);
        options.retry_min = options.retry_min.max(Duration::from_millis(1));
        options.retry_max = options.retry_max.max(options.retry_min);
        Ok(Self {
            store,
            servers,
            options,
            status: Arc::new(watch::Sender::new(RelayStatus::default())),
        })
    }

    /// The relay's status, updated as it connects, publishes and fails. Take it before
    /// [`run`](Self::run); it stays readable after the relay stopped.
    pub fn status(&self) -> watch::Receiver<RelayStatus> {
        self.status.subscribe()
    }

    /// Relays until `shutdown` is cancelled. Never fails and never panics on NATS or log errors:
    /// each is logged, shown in the status, and retried after a bounded backoff.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(&self.options);
        let servers = self
            .servers
            .iter()
            .map(|s| format!("{}:{}", s.host(), s.port()))
            .collect::<Vec<_>>()
            .join(",");
        let client = loop {
            let attempt = tokio::select! {
                () = shutdown.cancelled() => return,
                attempt = self.connect(&shutdown) => attempt,
            };
            match attempt {
                Ok(client) => break client,
                Err(e) => {
                    let delay = backoff.next();
                    tracing::warn!(servers, error = %e, ?delay, "relay cannot reach NATS; retrying");
                    self.fail(&e);
                    if !sleep_unless_cancelled(delay, &shutdown).await {
                        return;
                    }
                }
            }
        };
        self.update(|s| set(&mut s.connected, true) | set(&mut s.last_error, None));
        let jetstream = async_nats::jetstream::ContextBuilder::new()
            .timeout(self.options.ack_timeout)
            .ack_timeout(self.options.ack_timeout)
            // Room for this session's window plus the acks a failed session left behind (the
            // context lets go of those within `ack_timeout`), so a publish seldom waits for one.
            .max_ack_inflight(self.options.max_in_flight.saturating_mul(2))
            .backpressure_on_inflight(true)
            .build(client.clone());

        loop {
            match self.session(&jetstream, &shutdown, &mut backoff).await {
                Ok(()) => break,
                Err(e) => {
                    let delay = backoff.next();
                    tracing::warn!(error = %e, ?delay, "relay interrupted; resuming from JetStream's checkpoint");
                    self.fail(&e);
                    if !sleep_unless_cancelled(delay, &shutdown).await {
                        break;
                    }
                }
            }
        }
        drop(jetstream);
        drop(client);
        self.update(|s| set(&mut s.connected, false));
        tracing::info!("relay stopped");
    }

    /// One run from the checkpoint: returns `Ok` only on shutdown.
    async fn session(
        &self,
        jetstream: &async_nats::jetstream::Context,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Result<(), RelayError> {
        let stream = jetstream
            .get_or_create_stream(stream::Config {
                name: STREAM_NAME.to_owned(),
                subjects: vec![STREAM_SUBJECTS.to_owned()],
                storage: StorageType::File,
                duplicate_window: self.options.duplicate_window,
                ..Default::default()
            })
            .await
            .map_err(|e| RelayError::Stream(format!("cannot create or open it: {e}")))?;
        let subjects = &stream.cached_info().config.subjects;
        if !subjects.iter().any(|s| s == STREAM_SUBJECTS) {
            return Err(RelayError::Stream(format!(
                "it exists with subjects {subjects:?}, which do not include {STREAM_SUBJECTS}"
            )));
        }
        let resume = read_checkpoint(&stream).await?;
        let position = self.verify(resume.checkpoint.as_ref()).await?;
        self.update(|s| set(&mut s.acknowledged_position, position) | set(&mut s.last_error, None));
        tracing::info!(
            position,
            sequence = resume.last_sequence,
            "relay resuming after JetStream's checkpoint"
        );

        // The k-th publish of this session must land at `last_sequence + k`.
        let mut last_sequence = resume.last_sequence;
        if resume.note_missing
            && let Some(record) = self.store.read_all(position, 1).await?.first()
            && let Some(note) = checkpoint_note(record)
        {
            let ack = publish_note(jetstream, record, note, last_sequence).await?;
            last_sequence += 1;
            confirm(position, last_sequence, ack.await)?;
        }
        let mut events = pin!(custodian_store::follow(self.store.clone(), position + 1));
        let mut in_flight = FuturesOrdered::new();
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                Some((position, sequence, ack)) = in_flight.next(), if !in_flight.is_empty() => {
                    confirm(position, sequence, ack)?;
                    backoff.reset();
                    self.update(|s| {
                        set(&mut s.acknowledged_position, position) | set(&mut s.last_error, None)
                    });
                }
                next = events.next(), if in_flight.len() < self.options.max_in_flight => {
                    let record = next.ok_or(RelayError::LogClosed)??;
                    let ack = publish(jetstream, &record, last_sequence).await?;
                    last_sequence += 1;
                    if let Some(note) = checkpoint_note(&record) {
                        // The position counts as delivered once its note is, too.
                        in_flight.push_back(awaiting(record.position.saturating_sub(1), last_sequence, ack));
                        let ack = publish_note(jetstream, &record, note, last_sequence).await?;
                        last_sequence += 1;
                        in_flight.push_back(awaiting(record.position, last_sequence, ack));
                    } else {
                        in_flight.push_back(awaiting(record.position, last_sequence, ack));
                    }
                }
            }
        }
    }

    /// Checks the checkpoint is the log's own event at that position; returns the position.
    async fn verify(&self, checkpoint: Option<&Checkpoint>) -> Result<u64, RelayError> {
        let Some(checkpoint) = checkpoint else {
            return Ok(0);
        };
        let position = checkpoint.position;
        let diverged = |detail: String| RelayError::Diverged { position, detail };
        match self.store.read_all(position, 1).await?.first() {
            Some(r)
                if r.position == position && r.id == checkpoint.id && r.hash == checkpoint.hash =>
            {
                Ok(position)
            }
            Some(r) => Err(diverged(format!(
                "JetStream holds event {} with hash {}, the log has event {} with hash {}",
                checkpoint.id, checkpoint.hash, r.id, r.hash
            ))),
            None => Err(diverged(format!(
                "JetStream holds event {}, but the log ends before that position",
                checkpoint.id
            ))),
        }
    }

    async fn connect(&self, shutdown: &CancellationToken) -> Result<Client, RelayError> {
        let status = self.status.clone();
        // A client being dropped may still report a reconnect; a stopped relay is not connected.
        let stopped = shutdown.clone();
        let (min, max) = (self.options.retry_min, self.options.retry_max);
        ConnectOptions::new()
            .name("custodian-relay")
            .connection_timeout(self.options.connect_timeout)
            .request_timeout(Some(self.options.ack_timeout))
            .max_reconnects(None)
            .reconnect_delay_callback(move |attempts| delay(min, max, attempts))
            .event_callback(move |event| {
                if !stopped.is_cancelled() {
                    on_connection_event(&status, event);
                }
                std::future::ready(())
            })
            .connect(self.servers.clone())
            .await
            .map_err(RelayError::Connect)
    }

    fn fail(&self, error: &RelayError) {
        let message = error.to_string();
        self.update(|s| {
            s.failures += 1;
            s.last_error = Some(message);
            true
        });
    }

    fn update(&self, change: impl FnOnce(&mut RelayStatus) -> bool) {
        self.status.send_if_modified(change);
    }
}

/// Reads the last event in the stream, skipping messages an operator deleted.
async fn read_checkpoint(stream: &stream::Stream) -> Result<Resume, RelayError> {
    let info = stream
        .get_info()
        .await
        .map_err(|e| RelayError::Stream(format!("cannot read its state: {e}")))?;
    let state = info.state;
    let mut resume = Resume {
        checkpoint: None,
        last_sequence: state.last_sequence,
        note_missing: false,
    };
    if state.messages == 0 {
        return Ok(resume);
    }
    let mut sequence = state.last_sequence;
    // Whether the message being read is the stream's last.
    let mut latest = true;
    while sequence >= state.first_sequence.max(1) {
        match stream.get_raw_message(sequence).await {
            // A checkpoint's note follows its event, which is the one to resume after.
            Ok(message) if message.subject.as_str() == CHECKPOINT_SUBJECT => {
                sequence -= 1;
                latest = false;
            }
            Ok(message) => {
                let checkpoint =
                    serde_json::from_slice::<Checkpoint>(&message.payload).map_err(|e| {
                        RelayError::ForeignMessage {
                            sequence,
                            reason: e.to_string(),
                        }
                    })?;
                resume.note_missing =
                    latest && checkpoint.event_type == custodian_domain::ledger::CHECKPOINTED;
                resume.checkpoint = Some(checkpoint);
                return Ok(resume);
            }
            Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => {
                sequence -= 1;
                latest = false;
            }
            Err(e) => {
                return Err(RelayError::Stream(format!(
                    "cannot read message {sequence}: {e}"
                )));
            }
        }
    }
    Ok(resume)
}

/// Sends one event; the returned future yields JetStream's ack.
async fn publish(
    jetstream: &async_nats::jetstream::Context,
    record: &EventRecord,
    expected_last_sequence: u64,
) -> Result<PublishAckFuture, RelayError> {
    let position = record.position;
    let body = cloudevent::cloud_event(record)
        .map_err(|source| RelayError::Encode { position, source })?;
    let message = PublishMessage::build()
        .payload(body.into())
        .message_id(record.id.to_string())
        .expected_last_sequence(expected_last_sequence)
        .header("Content-Type", CONTENT_TYPE);
    jetstream
        .send_publish(cloudevent::subject(record), message)
        .await
        .map_err(|source| RelayError::Publish { position, source })
}

/// The signed note of a `ledger.checkpointed` event, if `record` is one.
fn checkpoint_note(record: &EventRecord) -> Option<&str> {
    if record.event_type.as_str() != custodian_domain::ledger::CHECKPOINTED
        || record.stream.tenant() != custodian_domain::stream::SYSTEM_TENANT
    {
        return None;
    }
    record.data.get("note")?.as_str()
}

/// Sends a checkpoint's note right after its event; the returned future yields JetStream's ack.
async fn publish_note(
    jetstream: &async_nats::jetstream::Context,
    record: &EventRecord,
    note: &str,
    expected_last_sequence: u64,
) -> Result<PublishAckFuture, RelayError> {
    let message = PublishMessage::build()
        .payload(note.to_owned().into())
        .message_id(format!("{}.checkpoint", record.id))
        .expected_last_sequence(expected_last_sequence)
        .header("Content-Type", NOTE_CONTENT_TYPE);
    jetstream
        .send_publish(CHECKPOINT_SUBJECT, message)
        .await
        .map_err(|source| RelayError::Publish {
            position: record.position,
            source,
        })
}

async fn awaiting(
    position: u64,
    sequence: u64,
    ack: PublishAckFuture,
) -> (u64, u64, Result<PublishAck, PublishError>) {
    (position, sequence, ack.await)
}

/// Accepts an ack only if the event landed right after its predecessor.
fn confirm(
    position: u64,
    expected: u64,
    ack: Result<PublishAck, PublishError>,
) -> Result<(), RelayError> {
    let ack = ack.map_err(|source| RelayError::Publish { position, source })?;
    if ack.sequence == expected && ack.stream == STREAM_NAME {
        Ok(())
    } else {
        Err(RelayError::OutOfSequence {
            position,
            sequence: ack.sequence,
            expected,
            duplicate: ack.duplicate,
        })
    }
}

fn on_connection_event(status: &watch::Sender<RelayStatus>, event: Event) {
    match event {
        Event::Connected => {
            tracing::info!("relay connected to NATS");
            status.send_if_modified(|s| set(&mut s.connected, true) | set(&mut s.last_error, None));
        }
        Event::Disconnected => {
            tracing::warn!("relay lost its NATS connection; reconnecting");
            status.send_if_modified(|s| set(&mut s.connected, false));
        }
        Event::Closed => {
            status.send_if_modified(|s| set(&mut s.connected, false));
        }
        Event::ClientError(e) => {
            tracing::debug!(error = %e, "NATS client error");
            let message = format!("NATS: {e}");
            status.send_if_modified(|s| set(&mut s.last_error, Some(message)));
        }
        Event::ServerError(e) => {
            tracing::warn!(error = %e, "NATS server error");
            let message = format!("NATS server: {e}");
            status.send_if_modified(|s| set(&mut s.last_error, Some(message)));
        }
        other => tracing::debug!(event = %other, "NATS connection event"),
    }
}

/// Assigns and reports whether anything changed.
fn set<T: PartialEq>(field: &mut T, value: T) -> bool {
    if *field == value {
        false
    } else {
        *field = value;
        true
    }
}

/// Waits `delay`; false if `shutdown` came first.
async fn sleep_unless_cancelled(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

/// `min * 2^attempts`, at most `max`.
fn delay(min: Duration, max: Duration, attempts: usize) -> Duration {
    let factor = 1u32 << attempts.min(16);
    min.saturating_mul(factor).min(max)
}

/// Bounded exponential backoff between failed attempts; reset by progress.
struct Backoff {
    min: Duration,
    max: Duration,
    attempts: usize,
}

impl Backoff {
    fn new(options: &RelayOptions) -> Self {
        Self {
            min: options.retry_min,
            max: options.retry_max,
            attempts: 0,
        }
    }

    fn next(&mut self) -> Duration {
        let d = delay(self.min, self.max, self.attempts);
        self.attempts = self.attempts.saturating_add(1);
        d
    }

    fn reset(&mut self) {
        self.attempts = 0;
    }
}

/// The address with its password or token replaced by `***`, so it can be shown.
fn mask_password(address: &str) -> String {
    match (address.find("://"), address.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &address[scheme_end + 3..at];
            let masked = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => "***".to_owned(),
            };
            format!("{}{masked}{}", &address[..scheme_end + 3], &address[at..])
        }
        _ => address.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_min_and_stops_at_max() {
        let mut b = Backoff::new(&RelayOptions::default());
        let delays: Vec<_> = (0..9).map(|_| b.next()).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000].map(Duration::from_millis)
        );
        b.reset();
        assert_eq!(b.next(), Duration::from_millis(100));
        assert_eq!(
            delay(
                Duration::from_millis(100),
                Duration::from_secs(5),
                usize::MAX
            ),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_password("nats://u:secret@host:4222"),
            "nats://u:***@host:4222"
        );
        assert_eq!(mask_password("nats://token@host"), "nats://***@host");
        assert_eq!(mask_password("host:4222"), "host:4222");
    }
}
