//! A private `nats-server -js` per test, on its own port and storage, so that a test can kill and
//! restart it and the machine's own NATS is left alone.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_nats::jetstream;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long the server and a client may take to get ready.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// `nats-server` on the `PATH`, or where the Debian package puts it.
fn binary() -> Option<PathBuf> {
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

/// A `nats-server -js` child process on its own port and storage directory; killed when dropped.
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
    /// In CI without `nats-server`, and when the server does not get ready.
    pub async fn start() -> Option<Self> {
        let Some(binary) = binary() else {
            assert!(
                !crate::postgres::in_ci(),
                "nats-server is required in CI (install the Debian package nats-server)"
            );
            eprintln!("skipping a NATS test: nats-server is not installed");
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
    ///
    /// # Panics
    /// When the process cannot be killed.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("killing nats-server");
        }
    }

    /// Starts the server on the same port and storage; returns once it accepts clients.
    ///
    /// # Panics
    /// When it is running already, or does not get ready.
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
        let ready = tokio::time::timeout(READY_WITHIN, async {
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
    ///
    /// # Panics
    /// When the client cannot connect in time.
    pub async fn jetstream(&self) -> jetstream::Context {
        let client = tokio::time::timeout(READY_WITHIN, async_nats::connect(self.url()))
            .await
            .unwrap_or_else(|_| panic!("timed out after {READY_WITHIN:?} connecting a client"))
            .expect("connecting to the test nats-server");
        jetstream::new(client)
    }
}
