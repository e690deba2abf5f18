//! `custodian-replay` on a large log: how fast `verify` (hash chain and Merkle tree) and `at`
//! (every view as of the head, in a fresh SQLite file) read it, and how much memory they hold,
//! against the read ceiling measured in the same run.
//!
//! For each backend (SQLite in a temporary directory; PostgreSQL in a fresh database, skipped with a
//! note when the server is unreachable) this fills a fresh log with `BENCH_EVENTS` events (default
//! 1,000,000) of tenant lives (`custodian_testkit::fill`), lets the database settle, then:
//!
//! - **read only** (the baseline): `read_all` in pages of 1,000 through a read-only store in this
//!   process, nothing checked: the most a reader of this log can do;
//! - **verify**: the built `custodian-replay verify --json SOURCE`, which reports its own events/s
//!   and its peak resident memory (`VmHWM`);
//! - **at**: `custodian-replay at --position HEAD --out FILE --json SOURCE`, the same figures.
//!
//! "ratio" is events/s over the read-only events/s on the same backend. The targets: `verify` at
//! least 200,000 events/s and under 200 MiB whatever the log's length.
//!
//! Run with `cargo bench -p custodian-replay --bench replay`; `BENCH_BACKEND=sqlite` or
//! `postgresql` narrows a run. Any error ends the run with a non-zero exit status.

use std::error::Error;
use std::time::Instant;

use custodian_testkit::fill::{fill, settle};
use custodian_testkit::table::{Table, thousands};
use custodian_testkit::{Backend, Ledger};

type BoxError = Box<dyn Error + Send + Sync>;
type Result<T> = std::result::Result<T, BoxError>;

/// One measured pass over the log.
struct Pass {
    what: &'static str,
    events: u64,
    seconds: f64,
    peak_memory_bytes: Option<u64>,
}

impl Pass {
    fn rate(&self) -> f64 {
        self.events as f64 / self.seconds.max(1e-9)
    }
}

async fn read_only(ledger: &Ledger) -> Result<Pass> {
    let store = ledger.open_read_only().await;
    let started = Instant::now();
    let mut position = 0;
    loop {
        let page = store.read_all(position + 1, 1000).await?;
        let Some(last) = page.last() else { break };
        position = last.position;
    }
    let seconds = started.elapsed().as_secs_f64();
    store.close().await;
    Ok(Pass {
        what: "read only (read_all, pages of 1,000)",
        events: position,
        seconds,
        peak_memory_bytes: None,
    })
}

/// Runs the built tool with `args` and reads the figures of its `--json` answer.
async fn tool(what: &'static str, args: &[&str]) -> Result<Pass> {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_custodian-replay"))
        .args(args)
        .arg("--json")
        .output()
        .await?;
    if !output.status.success() {
        return Err(format!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let number = |field: &str| {
        doc[field]
            .as_f64()
            .ok_or_else(|| format!("{what}: no {field} in {doc}"))
    };
    Ok(Pass {
        what,
        events: number("events_read")? as u64,
        seconds: number("elapsed_seconds")?,
        peak_memory_bytes: doc["peak_memory_bytes"].as_u64(),
    })
}

async fn run_backend(backend: Backend, ledger: &Ledger, events: u64) -> Result<Vec<Pass>> {
    let store = ledger.open().await;
    let started = Instant::now();
    fill(&store, events).await?;
    let head = store.head().await?.position;
    store.close().await;
    eprintln!(
        "{}: filled {} events in {:.1} s",
        backend.name(),
        thousands(head),
        started.elapsed().as_secs_f64()
    );
    settle(backend, &ledger.location).await?;

    let mut passes = vec![read_only(ledger).await?];
    passes.push(tool("verify", &["verify", &ledger.location]).await?);
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("views.db").display().to_string();
    let head = head.to_string();
    passes.push(
        tool(
            "at (every view, as of the head)",
            &["at", "--position", &head, "--out", &out, &ledger.location],
        )
        .await?,
    );
    Ok(passes)
}

fn print_table(backend: Backend, passes: &[Pass]) {
    let baseline = passes.first().map_or(1.0, Pass::rate);
    let mut table = Table::new([
        "pass",
        "events",
        "seconds",
        "events/s",
        "ratio to read only",
        "peak memory",
    ]);
    for p in passes {
        table.row([
            p.what.to_owned(),
            thousands(p.events),
            format!("{:.2}", p.seconds),
            thousands(p.rate().round() as u64),
            format!("{:.2}", p.rate() / baseline),
            p.peak_memory_bytes.map_or("-".to_owned(), |b| {
                format!("{:.1} MiB", b as f64 / 1048576.0)
            }),
        ]);
    }
    println!("\n{}\n{table}", backend.name());
}

#[tokio::main]
async fn main() -> Result<()> {
    let events = match std::env::var("BENCH_EVENTS") {
        Ok(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("BENCH_EVENTS must be a positive integer, not {v:?}"))?,
        Err(_) => 1_000_000,
    };
    let only = std::env::var("BENCH_BACKEND").ok();
    let mut measured = 0;
    for backend in Backend::ALL {
        if only.as_deref().is_some_and(|b| !backend.matches(b)) {
            continue;
        }
        let Some(ledger) = Ledger::fresh(backend).await else {
            println!("\n{}: skipped (unreachable)", backend.name());
            continue;
        };
        let passes = run_backend(backend, &ledger, events).await;
        ledger.remove().await?;
        print_table(backend, &passes?);
        measured += 1;
    }
    if measured == 0 {
        return Err("no backend was measured".into());
    }
    Ok(())
}
