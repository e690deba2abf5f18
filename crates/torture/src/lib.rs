//! A load and fault harness for the real `custodian` server: each scenario deploys a fresh ledger
//! (SQLite, or a database on a private PostgreSQL cluster) with a private NATS server, drives the
//! server over loopback with mixed traffic from many clients, injects its fault (a `kill -9` of
//! the server, a PostgreSQL restart, a NATS outage, a full disk), and then checks that every
//! acknowledged command is in the log exactly once, the chain verifies, every view equals its
//! rebuild, and a NATS consumer saw every event.
//!
//! The binaries it drives (`custodian`, `custodian-replay`) are looked up next to the running
//! executable, as the black-box tests do.

mod checks;
mod scenarios;
mod secrets;
mod traffic;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

pub use scenarios::{Backend, Scenario};

/// What to run, and how long and hard. The defaults are the full run; CI passes short ones.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "custodian-torture", version, about)]
pub struct Settings {
    /// Scenarios to run (comma-separated): mixed, kill, pg-restart, nats, disk-full, secrets.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "mixed,kill,pg-restart,nats,disk-full,secrets"
    )]
    pub scenarios: Vec<Scenario>,
    /// Backends (comma-separated): sqlite, postgres. A scenario runs on each backend it applies
    /// to (pg-restart on postgres only, disk-full on sqlite only).
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    pub backends: Vec<Backend>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Seconds of traffic per scenario.
    #[arg(long, default_value_t = 60)]
    pub duration_secs: u64,
    /// How many times the kill scenario kills the server with SIGKILL.
    #[arg(long, default_value_t = 10)]
    pub kills: usize,
    /// Seconds PostgreSQL stays down in the pg-restart scenario.
    #[arg(long, default_value_t = 5)]
    pub pg_down_secs: u64,
    /// Seconds NATS stays down in the nats scenario.
    #[arg(long, default_value_t = 30)]
    pub nats_down_secs: u64,
    /// Size of the tmpfs the disk-full scenario puts the SQLite data directory on, in MiB.
    #[arg(long, default_value_t = 48)]
    pub tmpfs_mib: u64,
    /// Seed of every random choice (operations, kill moments).
    #[arg(long, default_value_t = 19)]
    pub seed: u64,
}

impl Settings {
    /// The short settings CI runs with: a handful of clients for a few seconds, every scenario.
    pub fn short() -> Self {
        Self {
            scenarios: vec![
                Scenario::Mixed,
                Scenario::Kill,
                Scenario::PgRestart,
                Scenario::Nats,
                Scenario::DiskFull,
                Scenario::Secrets,
            ],
            backends: vec![Backend::Sqlite, Backend::Postgres],
            clients: 8,
            duration_secs: 5,
            kills: 2,
            pg_down_secs: 2,
            nats_down_secs: 3,
            tmpfs_mib: 24,
            seed: 19,
        }
    }
}

/// How one scenario went on one backend.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// The scenario's name.
    pub scenario: String,
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// Whether every check held.
    pub passed: bool,
    /// Why it was skipped, when it was.
    pub skipped: Option<String>,
    /// Requests sent.
    pub requests: u64,
    /// Commands the server acknowledged (2xx with a position).
    pub acknowledged: u64,
    /// Answers by status, and `none` for requests that got no answer.
    pub statuses: BTreeMap<String, u64>,
    /// Median latency of answered requests.
    pub p50: Duration,
    /// 99th percentile latency of answered requests.
    pub p99: Duration,
    /// Server restarts (after kills).
    pub restarts: usize,
    /// The longest time from a fault's end to the server answering again.
    pub recovery: Option<Duration>,
    /// Events in the log at the end.
    pub events: u64,
    /// Everything that failed, one line each.
    pub failures: Vec<String>,
    /// Other figures of the scenario, `name=value`.
    pub extra: Vec<String>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "scenario {} backend={} ", self.scenario, self.backend)?;
        if let Some(reason) = &self.skipped {
            return write!(f, "skipped ({reason})");
        }
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}:{n}"))
            .collect();
        write!(
            f,
            "{} requests={} acknowledged={} events={} statuses={} p50={:.1}ms p99={:.1}ms restarts={}",
            if self.passed { "passed" } else { "failed" },
            self.requests,
            self.acknowledged,
            self.events,
            statuses.join(","),
            self.p50.as_secs_f64() * 1000.0,
            self.p99.as_secs_f64() * 1000.0,
            self.restarts,
        )?;
        if let Some(r) = self.recovery {
            write!(f, " recovery={:.2}s", r.as_secs_f64())?;
        }
        for e in &self.extra {
            write!(f, " {e}")?;
        }
        if !self.failures.is_empty() {
            write!(f, " failures=[{}]", self.failures.join("; "))?;
        }
        Ok(())
    }
}

/// Runs every scenario of `settings` on every backend it applies to, printing each summary line
/// as it ends (details go to stderr), and returns them.
pub async fn run(settings: &Settings) -> Vec<Summary> {
    let mut summaries = Vec::new();
    for scenario in &settings.scenarios {
        for backend in &settings.backends {
            if !scenario.applies_to(*backend) {
                continue;
            }
            eprintln!("torture: running {scenario} on {backend}");
            let summary = scenarios::run(*scenario, *backend, settings).await;
            println!("{summary}");
            summaries.push(summary);
        }
    }
    summaries
}
