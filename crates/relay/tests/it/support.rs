//! A relay over a log per test and a private `nats-server` (both from `custodian-testkit`), and a
//! subscriber's view of the stream.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream::Stream as JsStream};
use custodian_domain::{Actor, ActorKind, EventRecord, NewEvent, Timestamp};
use custodian_relay::{Relay, RelayOptions, RelayStatus};
use custodian_store::{EventStore, ExpectedVersion};
use custodian_testkit::Ledger;
pub use custodian_testkit::nats::NatsServer;
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(30);

/// Runs `future`, failing the test with `what` if it takes longer than [`WAIT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

/// Where a test's log lives, opened.
pub struct Log {
    pub store: Arc<dyn EventStore>,
    _ledger: Ledger,
}

impl Log {
    pub async fn sqlite() -> Self {
        Self::open(Ledger::sqlite()).await
    }

    pub async fn postgres() -> Option<Self> {
        Some(Self::open(Ledger::postgres().await?).await)
    }

    async fn open(ledger: Ledger) -> Self {
        Self {
            store: ledger.open().await,
            _ledger: ledger,
        }
    }

    /// Appends `n` events to `stream`; returns the last position.
    pub async fn append(&self, stream: &str, n: usize) -> u64 {
        let events = (0..n).map(|i| event("thing.happened", json(i))).collect();
        self.append_events(stream, events).await
    }

    pub async fn append_events(&self, stream: &str, events: Vec<NewEvent>) -> u64 {
        self.store
            .append(
                &custodian_testkit::stream(stream),
                ExpectedVersion::Any,
                events,
            )
            .await
            .expect("the log takes appends")
            .last_position
    }

    /// Every record, in position order.
    pub async fn records(&self) -> Vec<EventRecord> {
        self.store
            .read_all(1, 100_000)
            .await
            .expect("reading the log")
    }
}

fn json(i: usize) -> serde_json::Value {
    serde_json::json!({ "i": i, "note": "ünïcode and \"quotes\"" })
}

/// A sample event whose time has microseconds.
pub fn event(event_type: &str, data: serde_json::Value) -> NewEvent {
    NewEvent {
        occurred_at: Timestamp::parse("2026-11-25T12:00:00.123456Z").expect("a timestamp"),
        ..custodian_testkit::event(event_type, data)
    }
}

pub fn actor(kind: ActorKind, id: &str) -> Actor {
    Actor {
        kind,
        id: id.to_owned(),
    }
}

/// Options that retry quickly, so outages in tests are short.
pub fn fast_options() -> RelayOptions {
    RelayOptions {
        ack_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        retry_max: Duration::from_millis(500),
        max_in_flight: 16,
        ..RelayOptions::default()
    }
}

/// A running relay.
pub struct Running {
    pub status: watch::Receiver<RelayStatus>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    pub fn start(store: Arc<dyn EventStore>, url: &str, options: RelayOptions) -> Self {
        // The relay's log, shown by the test runner when a test fails.
        let _ = tracing_subscriber::fmt()
            .with_env_filter("custodian_relay=debug,async_nats=warn")
            .with_test_writer()
            .try_init();
        let relay = Relay::new(store, url, options).expect("a valid NATS URL");
        let status = relay.status();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(relay.run(shutdown.clone()));
        Self {
            status,
            shutdown,
            task,
        }
    }

    /// Waits until JetStream acknowledged every position up to `position`.
    pub async fn acknowledged(&mut self, position: u64) -> RelayStatus {
        let what = format!("the relay to have position {position} acknowledged");
        within(
            &what,
            self.status
                .wait_for(|s| s.acknowledged_position >= position),
        )
        .await
        .expect("the relay's status outlives it")
        .clone()
    }

    /// Waits until the status matches `condition`.
    pub async fn until(&mut self, what: &str, condition: impl FnMut(&RelayStatus) -> bool) {
        within(what, self.status.wait_for(condition))
            .await
            .expect("the relay's status outlives it");
    }

    /// Cancels the relay and waits until it has stopped.
    pub async fn stop(self) {
        self.shutdown.cancel();
        within("the relay to stop", self.task)
            .await
            .expect("the relay task does not panic");
    }
}

/// The stream the relay publishes to.
pub async fn custodian_stream(js: &jetstream::Context) -> JsStream {
    within(
        "the stream to be found",
        js.get_stream(custodian_relay::STREAM_NAME),
    )
    .await
    .expect("the relay created stream CUSTODIAN")
}

/// A durable pull consumer over the whole stream, created or reopened by name.
pub async fn durable_consumer(
    js: &jetstream::Context,
    name: &str,
) -> jetstream::consumer::PullConsumer {
    let stream = custodian_stream(js).await;
    within(
        "the consumer to be created",
        stream.get_or_create_consumer(
            name,
            pull::Config {
                durable_name: Some(name.to_owned()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ..Default::default()
            },
        ),
    )
    .await
    .expect("creating a durable pull consumer")
}

/// Fetches, acknowledges and returns messages until `n` have arrived (failing after [`WAIT`]),
/// then checks briefly that no further message is waiting.
pub async fn receive(
    consumer: &jetstream::consumer::PullConsumer,
    n: usize,
) -> Vec<jetstream::Message> {
    let mut received = Vec::new();
    within(&format!("{n} messages"), async {
        while received.len() < n {
            received.extend(fetch(consumer, n - received.len(), Duration::from_secs(1)).await);
        }
    })
    .await;
    let extra = fetch(consumer, 10, Duration::from_millis(300)).await;
    assert!(
        extra.is_empty(),
        "{} more messages than the {n} expected",
        extra.len()
    );
    received
}

async fn fetch(
    consumer: &jetstream::consumer::PullConsumer,
    max: usize,
    expires: Duration,
) -> Vec<jetstream::Message> {
    let mut out = Vec::new();
    let Ok(mut batch) = consumer
        .batch()
        .max_messages(max)
        .expires(expires)
        .messages()
        .await
    else {
        return out;
    };
    while let Some(message) = batch.next().await {
        let Ok(message) = message else { break };
        message.ack().await.expect("acknowledging a message");
        out.push(message);
    }
    out
}

/// The CloudEvents body of a message.
pub fn body(message: &jetstream::Message) -> serde_json::Value {
    serde_json::from_slice(&message.payload).expect("the body is JSON")
}

/// A header's value.
pub fn header<'a>(message: &'a jetstream::Message, name: &str) -> Option<&'a str> {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str())
}
