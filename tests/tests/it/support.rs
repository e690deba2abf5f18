//! Starting the real binaries and reading what they say.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
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
