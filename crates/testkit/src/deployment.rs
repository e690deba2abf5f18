//! The real binaries deployed as a user deploys them: a ledger, a data directory with the master
//! key, `custodian admin bootstrap`, `custodian serve` on a free port, other `custodian` commands,
//! `custodian-replay verify`, and the server's JSON log.
//!
//! The binaries must be built: `cargo nextest run --workspace` (the README's test command) builds
//! every binary of the workspace before it runs a test.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use custodian_domain::EventRecord;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::ledger::{Backend, Ledger};

/// The scrape token every test server is started with (`--metrics-token`).
pub const SCRAPE_TOKEN: &str = "scrape-token-of-the-test-servers";

/// Path of a binary of this workspace, built next to the test executables.
///
/// # Panics
/// When the binary has not been built.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let mut dir = exe
        .parent()
        .expect("a test executable lives in a directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace binaries first (`cargo build --workspace --bins`)",
        path.display()
    );
    path
}

/// A test's deployment: its ledger, and the home directory every `custodian` process of the test
/// runs in. The data directory holds the master key on both backends (and the database on
/// SQLite); on PostgreSQL it is `home/data`.
pub struct Deployment {
    /// The store.
    pub ledger: Ledger,
    /// The working directory of every command.
    pub home: tempfile::TempDir,
}

/// What a `custodian` command printed, and how it exited.
#[derive(Debug)]
pub struct CliOutput {
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl Deployment {
    /// A deployment on `ledger` with a new home directory.
    ///
    /// # Panics
    /// When no temporary directory can be made.
    pub fn new(ledger: Ledger) -> Self {
        Self {
            ledger,
            home: tempfile::tempdir().expect("a temporary home directory"),
        }
    }

    /// A deployment on a SQLite ledger.
    pub fn sqlite() -> Self {
        Self::new(Ledger::sqlite())
    }

    /// A deployment on a fresh PostgreSQL database; `None` where PostgreSQL is unreachable outside
    /// CI.
    pub async fn postgres() -> Option<Self> {
        Some(Self::new(Ledger::postgres().await?))
    }

    /// Whether the ledger is on SQLite.
    pub fn is_sqlite(&self) -> bool {
        self.ledger.backend == Backend::Sqlite
    }

    /// The data directory: the master key's, and on SQLite the database's.
    pub fn data_dir(&self) -> PathBuf {
        match self.ledger.dir() {
            Some(dir) => dir.to_owned(),
            None => self.home.path().join("data"),
        }
    }

    /// The store flags of every `custodian` command: the same store and the same master key for
    /// the bootstrap, every server and the key rotation.
    pub fn store_args(&self) -> Vec<String> {
        let mut args = vec!["--data-dir".into(), self.data_dir().display().to_string()];
        if self.ledger.backend == Backend::Postgres {
            args.extend(["--database-url".into(), self.ledger.location.clone()]);
        }
        args
    }

    /// Runs `custodian ARGS <store flags>` in the home directory, feeding `stdin`.
    ///
    /// # Panics
    /// When the command cannot run or takes longer than 60 s.
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
            .expect("starting custodian");
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(stdin.as_bytes())
            .await
            .expect("writing custodian's standard input");
        drop(pipe);
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("custodian did not finish within 60 s")
            .expect("waiting for custodian");
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
    ///
    /// # Panics
    /// When the bootstrap fails.
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
        self.ledger.records().await
    }
}

/// A running `custodian serve`, with its log lines.
pub struct Server {
    /// The process; killed when dropped.
    pub child: Child,
    /// `http://ADDRESS:PORT`.
    pub base: String,
    /// The JSON log lines written since it listened.
    pub lines: mpsc::UnboundedReceiver<String>,
}

impl Server {
    /// GETs `path` of this server as an operator holding the scrape token (`/metrics`,
    /// `/v1/admin/projections`).
    pub async fn operations(&self, path: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .bearer_auth(SCRAPE_TOKEN)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// GETs `path` as [`Server::operations`] does, returning the error of a server that does not
    /// answer instead of panicking.
    ///
    /// # Errors
    /// When no answer comes.
    pub async fn try_operations(&self, path: &str) -> Result<reqwest::Response, reqwest::Error> {
        reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .bearer_auth(SCRAPE_TOKEN)
            .timeout(Duration::from_secs(10))
            .send()
            .await
    }

    /// Starts `custodian serve ARGS` in `cwd` with `envs`, JSON logs, the scrape token
    /// [`SCRAPE_TOKEN`] and a free port, and waits until it listens.
    ///
    /// # Panics
    /// When the server does not listen within 30 s.
    pub async fn start(args: &[String], cwd: &Path, envs: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(workspace_binary("custodian"));
        cmd.arg("serve")
            .args(args)
            .current_dir(cwd)
            .env("CUSTODIAN_LISTEN", "127.0.0.1:0")
            .env("CUSTODIAN_LOG_FORMAT", "json")
            .env("CUSTODIAN_METRICS_TOKEN", SCRAPE_TOKEN)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("starting custodian serve");
        let mut lines = forward_lines(child.stdout.take().expect("stdout is piped"));
        let addr = loop {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.recv())
                .await
                .expect("the server did not start within 30 s")
                .expect("the server exited before listening");
            let v: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
            if v["fields"]["message"] == "listening" {
                break v["fields"]["addr"]
                    .as_str()
                    .expect("the listening line names the address")
                    .to_owned();
            }
        };
        Self {
            child,
            base: format!("http://{addr}"),
            lines,
        }
    }

    /// Sends SIGTERM and returns the exit code and the log lines written meanwhile.
    ///
    /// # Panics
    /// When the server does not stop within 30 s.
    pub async fn terminate(mut self) -> (Option<i32>, Vec<String>) {
        let pid = self
            .child
            .id()
            .expect("the server is still running")
            .to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("running kill");
        assert!(status.success());
        let exit = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the server did not stop within 30 s of SIGTERM")
            .expect("waiting for the server");
        let mut rest = Vec::new();
        while let Some(l) = self.lines.recv().await {
            rest.push(l);
        }
        (exit.code(), rest)
    }

    /// Sends SIGTERM, checks that the server exits with 0, and returns the log lines not read
    /// yet, the ones written while it stopped included, one a line.
    ///
    /// # Panics
    /// When the server does not stop within 30 s, or exits otherwise.
    pub async fn terminate_cleanly(mut self) -> String {
        let mut log = Vec::new();
        while let Ok(line) = self.lines.try_recv() {
            log.push(line);
        }
        let (code, rest) = self.terminate().await;
        assert_eq!(code, Some(0));
        log.extend(rest);
        log.join("\n")
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

/// Runs `custodian-replay verify LOCATION` and returns its exit code and stdout.
///
/// # Panics
/// When the binary cannot run.
pub async fn verify(location: &str) -> (Option<i32>, String) {
    let out = Command::new(workspace_binary("custodian-replay"))
        .args(["verify", location])
        .output()
        .await
        .expect("running custodian-replay");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}
