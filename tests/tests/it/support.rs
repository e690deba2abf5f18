//! Starting the real binaries and reading what they say.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use custodian_domain::EventRecord;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

pub use custodian_tests::workspace_binary;

/// Where a test's ledger lives, as each binary wants it named.
pub enum Backend {
    Sqlite { dir: tempfile::TempDir },
    Postgres { url: String },
}

impl Backend {
    pub fn sqlite() -> Self {
        Self::Sqlite {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub async fn postgres() -> Option<Self> {
        Some(Self::Postgres {
            url: custodian_store::testing::fresh_postgres_database().await?,
        })
    }

    /// The location `custodian_store::open`, the load generator and `custodian-replay` take.
    pub fn location(&self) -> String {
        match self {
            Self::Sqlite { dir } => dir.path().join("custodian.db").display().to_string(),
            Self::Postgres { url } => url.clone(),
        }
    }

    /// The `custodian serve` flags that select this store.
    pub fn serve_args(&self) -> Vec<String> {
        match self {
            Self::Sqlite { dir } => vec!["--data-dir".into(), dir.path().display().to_string()],
            Self::Postgres { url } => vec!["--database-url".into(), url.clone()],
        }
    }
}

/// A test's deployment: its store, and the home directory every `custodian` process of the test
/// runs in. The data directory holds the master key on both backends (and the database on
/// SQLite); on PostgreSQL it is `home/data`.
pub struct Deployment {
    pub backend: Backend,
    pub home: tempfile::TempDir,
}

/// What a `custodian` command printed, and how it exited.
#[derive(Debug)]
pub struct CliOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Deployment {
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            home: tempfile::tempdir().unwrap(),
        }
    }

    pub fn sqlite() -> Self {
        Self::new(Backend::sqlite())
    }

    /// `None` where PostgreSQL is unreachable outside CI.
    pub async fn postgres() -> Option<Self> {
        Some(Self::new(Backend::postgres().await?))
    }

    pub fn is_sqlite(&self) -> bool {
        matches!(self.backend, Backend::Sqlite { .. })
    }

    /// The data directory: the master key's, and on SQLite the database's.
    pub fn data_dir(&self) -> PathBuf {
        match &self.backend {
            Backend::Sqlite { dir } => dir.path().to_owned(),
            Backend::Postgres { .. } => self.home.path().join("data"),
        }
    }

    /// The store flags of every `custodian` command: the same store and the same master key for
    /// the bootstrap, every server and the key rotation.
    pub fn store_args(&self) -> Vec<String> {
        let mut args = vec!["--data-dir".into(), self.data_dir().display().to_string()];
        if let Backend::Postgres { url } = &self.backend {
            args.extend(["--database-url".into(), url.clone()]);
        }
        args
    }

    /// Runs `custodian ARGS <store flags>` in the home directory, feeding `stdin`.
    pub async fn cli(&self, args: &[&str], stdin: &str) -> CliOutput {
        let mut child = Command::new(workspace_binary("custodian"))
            .args(args)
            .args(self.store_args())
            .current_dir(self.home.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(stdin.as_bytes()).await.unwrap();
        drop(pipe);
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("custodian did not finish within 60 s")
            .unwrap();
        CliOutput {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `custodian admin bootstrap`, the password on standard input, whatever its outcome.
    pub async fn try_bootstrap(&self, email: &str, name: &str, password: &str) -> CliOutput {
        self.cli(
            &["admin", "bootstrap", "--email", email, "--name", name],
            &format!("{password}\n"),
        )
        .await
    }

    /// `custodian admin bootstrap`, which must succeed.
    pub async fn bootstrap(&self, email: &str, name: &str, password: &str) -> CliOutput {
        let out = self.try_bootstrap(email, name, password).await;
        assert_eq!(out.code, Some(0), "bootstrap failed: {out:?}");
        out
    }

    /// `custodian serve` on this deployment with `flags`.
    pub async fn serve(&self, flags: &[&str]) -> Server {
        let mut args = self.store_args();
        args.extend(flags.iter().map(|f| (*f).to_owned()));
        Server::start(&args, self.home.path(), &[]).await
    }

    /// Every record of the log, read with a read-only store.
    pub async fn read_log(&self) -> Vec<EventRecord> {
        let store = custodian_store::open(
            &self.backend.location(),
            custodian_store::StoreOptions {
                read_only: true,
                ..custodian_store::StoreOptions::default()
            },
        )
        .await
        .unwrap();
        let mut all: Vec<EventRecord> = vec![];
        loop {
            let next = all.last().map_or(1, |r| r.position + 1);
            let batch = store.read_all(next, 1000).await.unwrap();
            if batch.is_empty() {
                break;
            }
            all.extend(batch);
        }
        store.close().await;
        all
    }
}

/// A running `custodian serve`, with its log lines.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub lines: mpsc::UnboundedReceiver<String>,
}

impl Server {
    /// Starts `custodian serve` with JSON logs on a free port and waits until it listens.
    pub async fn start(args: &[String], cwd: &Path, envs: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(workspace_binary("custodian"));
        cmd.arg("serve")
            .args(args)
            .current_dir(cwd)
            .env("CUSTODIAN_LISTEN", "127.0.0.1:0")
            .env("CUSTODIAN_LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut lines = forward_lines(child.stdout.take().unwrap());
        let addr = loop {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.recv())
                .await
                .expect("the server did not start within 30 s")
                .expect("the server exited before listening");
            let v: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
            if v["fields"]["message"] == "listening" {
                break v["fields"]["addr"].as_str().unwrap().to_owned();
            }
        };
        Self {
            child,
            base: format!("http://{addr}"),
            lines,
        }
    }

    /// Sends SIGTERM and returns the exit code and the log lines written meanwhile.
    pub async fn terminate(mut self) -> (Option<i32>, Vec<String>) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the server did not stop within 30 s of SIGTERM")
            .unwrap();
        let mut rest = Vec::new();
        while let Some(l) = self.lines.recv().await {
            rest.push(l);
        }
        (exit.code(), rest)
    }
}

/// Reads a child's output line by line in the background, so its pipe never fills.
pub fn forward_lines(
    out: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut reader = BufReader::new(out).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Runs `custodian-replay verify` and returns its exit code and stdout.
pub async fn verify(location: &str) -> (Option<i32>, String) {
    let out = Command::new(workspace_binary("custodian-replay"))
        .args(["verify", location])
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The helper binary that drives the store directly.
pub fn loadgen() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_custodian-loadgen"))
}
