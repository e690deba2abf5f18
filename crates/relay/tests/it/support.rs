//! A private `nats-server` per test (so it can be killed and restarted on the same port and
//! storage), a log per test, and a subscriber's view of the stream.

use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream::Stream as JsStream};
use custodian_domain::{Actor, ActorKind, EventRecord, EventType, NewEvent, StreamName, Timestamp};
use custodian_relay::{Relay, RelayOptions, RelayStatus};
use custodian_store::{EventStore, ExpectedVersion, StoreOptions};
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
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

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

fn nats_server_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let sbin = PathBuf::from("/usr/sbin/nats-server");
        sbin.is_file().then_some(sbin)
    })
}

/// A `nats-server -js` child process on its own port and storage directory.
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    storage: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server; `None` (skip the test) when `nats-server` is not installed, except in CI.
    ///
    /// # Panics
    /// In CI without `nats-server`: the relay must be tested there.
    pub async fn start() -> Option<Self> {
        // The relay's log, shown by the test runner when a test fails.
        let _ = tracing_subscriber::fmt()
            .with_env_filter("custodian_relay=debug,async_nats=warn")
            .with_test_writer()
            .try_init();
        let Some(binary) = nats_server_binary() else {
            assert!(
                !in_ci(),
                "nats-server is required in CI (install the Debian package nats-server)"
            );
            eprintln!("skipping a relay test: nats-server is not installed");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("the loopback interface has free ports")
            .port();
        let mut server = Self {
            binary,
            port,
            storage: tempfile::tempdir().expect("a temporary directory"),
            child: None,
        };
        server.restart().await;
        Some(server)
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (`SIGKILL`, no goodbye to its clients) and waits until it is gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("killing nats-server");
        }
    }

    /// Starts the server on the same port and storage; returns once it accepts clients.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "nats-server is already running");
        let mut child = Command::new(&self.binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.storage.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("starting nats-server");
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        let ready = tokio::time::timeout(WAIT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                let ready = line.contains("Server is ready");
                seen.push(line);
                if ready {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            matches!(ready, Ok(true)),
            "nats-server did not become ready:\n{}",
            seen.join("\n")
        );
        // Keep draining its log so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
    }

    /// A JetStream context on a fresh client.
    pub async fn jetstream(&self) -> jetstream::Context {
        let client = within("a test client to connect", async_nats::connect(self.url()))
            .await
            .expect("connecting to the test nats-server");
        jetstream::new(client)
    }
}

/// Where a test's log lives.
pub struct Log {
    pub store: Arc<dyn EventStore>,
    _dir: Option<tempfile::TempDir>,
}

impl Log {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let location = dir.path().join("custodian.db").display().to_string();
        Self {
            store: custodian_store::open(&location, StoreOptions::default())
                .await
                .expect("opening a SQLite log"),
            _dir: Some(dir),
        }
    }

    pub async fn postgres() -> Option<Self> {
        let location = custodian_store::testing::fresh_postgres_database().await?;
        Some(Self {
            store: custodian_store::open(&location, StoreOptions::default())
                .await
                .expect("opening a PostgreSQL log"),
            _dir: None,
        })
    }

    /// Appends `n` events to `stream`; returns the last position.
    pub async fn append(&self, stream: &str, n: usize) -> u64 {
        let events = (0..n).map(|i| event("thing.happened", json(i))).collect();
        self.append_events(stream, events).await
    }

    pub async fn append_events(&self, stream: &str, events: Vec<NewEvent>) -> u64 {
        let stream = StreamName::parse(stream).expect("a valid stream name");
        self.store
            .append(&stream, ExpectedVersion::Any, events)
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

pub fn event(event_type: &str, data: serde_json::Value) -> NewEvent {
    NewEvent {
        id: uuid::Uuid::now_v7(),
        event_type: EventType::parse(event_type).expect("a valid event type"),
        schema: 1,
        actor: Actor::system(),
        occurred_at: Timestamp::parse("2026-11-25T12:00:00.123456Z").expect("a timestamp"),
        correlation_id: None,
        causation_id: None,
        data,
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
