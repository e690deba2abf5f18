//! Start-up: how long a restarted `custodian serve` takes to answer its first authenticated
//! request, by the length of the log, measured against the real binary on SQLite.
//!
//! For each log size (100,000, 1,000,000 and 3,000,000 events; `BENCH_MAX_EVENTS` caps them for
//! quick runs, `BENCH_SIZES=100000,200000` names others):
//!
//! 1. **Setup**: `custodian admin bootstrap` on a fresh data directory, then the log is filled with
//!    tenant lives (`custodian_testkit::fill`) and settled; `custodian serve` starts, the platform
//!    administrator logs in, and the server runs until its views and indexes have caught up (and,
//!    where the server reports them, its indexes' snapshots cover the log).
//! 2. **Restart**: the server is killed with SIGKILL and started again; the time runs from the
//!    spawn to the first `GET /v1/auth/me` answered 200 with the token from before, polled every
//!    10 ms. Then `/v1/admin/readiness` gives the events the indexes read at start-up (the largest of the
//!    three), and `/proc/PID/status` the server's peak resident memory (`VmHWM`).
//! 3. **Baseline**, in the same run on the same log: the same restart with the snapshots deleted
//!    (`DELETE FROM index_snapshots`), so every index is rebuilt from the whole log, as every
//!    restart did before snapshots existed. "ratio" is the restart's time over the baseline's.
//!
//! Run with `cargo build --release --bin custodian && cargo bench -p custodian-api --bench
//! startup` (or point `CUSTODIAN_BIN` at another build: a build without snapshots restarts from
//! the log both times, and reports no events read).

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use custodian_store::StoreOptions;
use custodian_testkit::Backend;
use custodian_testkit::table::{Table, thousands};
use serde_json::{Value, json};
use sqlx::Connection as _;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

type BoxError = Box<dyn Error + Send + Sync>;
type Result<T> = std::result::Result<T, BoxError>;

const SIZES: [u64; 3] = [100_000, 1_000_000, 3_000_000];
const ADMIN_EMAIL: &str = "admin@bench.test";
const ADMIN_PASSWORD: &str = "bench admin passphrase 7f3k";
/// Longest wait for a server to catch up or to answer.
const PATIENCE: Duration = Duration::from_secs(900);

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("startup bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn sizes() -> Result<Vec<u64>> {
    let mut sizes = match std::env::var("BENCH_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|s| s.trim().replace('_', "").parse::<u64>())
            .collect::<std::result::Result<Vec<_>, _>>()?,
        Err(_) => SIZES.to_vec(),
    };
    if let Ok(max) = std::env::var("BENCH_MAX_EVENTS") {
        let max: u64 = max.replace('_', "").parse()?;
        sizes.retain(|s| *s <= max);
    }
    Ok(sizes)
}

/// One restart's measurements.
struct Restart {
    first_auth: Duration,
    events_read: Option<u64>,
    peak_kib: Option<u64>,
}

async fn run() -> Result<()> {
    let binary = custodian_binary()?;
    let mut table = Table::new([
        "events in the log",
        "restart: first /me (s)",
        "events read",
        "peak RSS (MiB)",
        "baseline: full rebuild (s)",
        "events read",
        "peak RSS (MiB)",
        "ratio to baseline",
    ]);
    for size in sizes()? {
        eprintln!("== {size} events");
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let out = cli(
            &binary,
            &data,
            &["admin", "bootstrap", "--email", ADMIN_EMAIL],
            ADMIN_PASSWORD,
        )
        .await?;
        if !out {
            return Err("bootstrap failed".into());
        }
        let location = data.join("custodian.db").display().to_string();
        let started = Instant::now();
        let store = custodian_store::open(&location, StoreOptions::default()).await?;
        custodian_testkit::fill::fill(&store, size).await?;
        store.close().await;
        custodian_testkit::fill::settle(Backend::Sqlite, &location).await?;
        eprintln!("filled in {:.1} s", started.elapsed().as_secs_f64());

        let (mut server, base) = serve(&binary, &data).await?;
        let http = reqwest::Client::new();
        let token = login(&http, &base).await?;
        let started = Instant::now();
        caught_up(&http, &base, &token).await?;
        eprintln!(
            "first start caught up in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        server.kill().await?;

        let restart = restart_once(&binary, &data, &http, &token).await?;
        // The baseline: no snapshot to start from.
        let db = format!("sqlite://{location}");
        let mut conn = sqlx::SqliteConnection::connect(&db).await?;
        let deleted = sqlx::query("DELETE FROM index_snapshots")
            .execute(&mut conn)
            .await
            .is_ok();
        conn.close().await?;
        if !deleted {
            eprintln!("this build keeps no snapshots: the baseline restarts as the restart did");
        }
        let baseline = restart_once(&binary, &data, &http, &token).await?;
        eprintln!(
            "restart {:.2} s, full rebuild {:.2} s",
            restart.first_auth.as_secs_f64(),
            baseline.first_auth.as_secs_f64()
        );
        let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), thousands);
        let mib = |v: Option<u64>| {
            v.map_or_else(|| "-".to_owned(), |k| format!("{:.0}", k as f64 / 1024.0))
        };
        table.row([
            thousands(size),
            format!("{:.2}", restart.first_auth.as_secs_f64()),
            opt(restart.events_read),
            mib(restart.peak_kib),
            format!("{:.2}", baseline.first_auth.as_secs_f64()),
            opt(baseline.events_read),
            mib(baseline.peak_kib),
            format!(
                "{:.3}",
                restart.first_auth.as_secs_f64() / baseline.first_auth.as_secs_f64()
            ),
        ]);
    }
    println!("{table}");
    Ok(())
}

/// Starts the server on `data` and measures its first authenticated answer; then lets it catch up
/// (so the snapshots cover the log again) and kills it with SIGKILL.
async fn restart_once(
    binary: &Path,
    data: &Path,
    http: &reqwest::Client,
    token: &str,
) -> Result<Restart> {
    let started = Instant::now();
    let (mut server, base) = serve(binary, data).await?;
    loop {
        let r = http
            .get(format!("{base}/v1/auth/me"))
            .bearer_auth(token)
            .send()
            .await;
        if let Ok(r) = r
            && r.status().as_u16() == 200
        {
            break;
        }
        if started.elapsed() > PATIENCE {
            return Err("no authenticated answer in time".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first_auth = started.elapsed();
    let ready = readiness(http, &base, token).await?;
    let events_read = ready["indexes"].as_array().map(|indexes| {
        indexes
            .iter()
            .filter_map(|i| i["events_read"].as_u64())
            .max()
            .unwrap_or(0)
    });
    let peak_kib = server.id().and_then(peak_kib);
    caught_up(http, &base, token).await?;
    server.kill().await?;
    Ok(Restart {
        first_auth,
        events_read,
        peak_kib,
    })
}

/// The readiness report with the log's head and the indexes: `/v1/admin/readiness` as the
/// platform administrator, or `/readyz` of a build from before it moved there.
async fn readiness(http: &reqwest::Client, base: &str, token: &str) -> Result<Value> {
    let r = http
        .get(format!("{base}/v1/admin/readiness"))
        .bearer_auth(token)
        .send()
        .await?;
    if r.status().as_u16() != 404 {
        return Ok(r.json().await?);
    }
    Ok(http
        .get(format!("{base}/readyz"))
        .send()
        .await?
        .json()
        .await?)
}

/// `VmHWM` of a process, in KiB.
fn peak_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Waits until the views have applied the head and every index reports a snapshot that covers
/// it (when the server reports indexes).
async fn caught_up(http: &reqwest::Client, base: &str, token: &str) -> Result<()> {
    let started = Instant::now();
    let head = readiness(http, base, token).await?["head"]["position"]
        .as_u64()
        .unwrap_or(0);
    loop {
        let views = http
            .get(format!("{base}/v1/auth/me"))
            .bearer_auth(token)
            .header("custodian-min-position", head.to_string())
            .send()
            .await?
            .status()
            .as_u16()
            == 200;
        let ready = readiness(http, base, token).await?;
        let snapshots = ready["indexes"].as_array().is_none_or(|indexes| {
            // A snapshot covers the log: one this process wrote, or the one it started from.
            indexes.iter().all(|i| {
                let written = i["snapshot_written"].as_u64().unwrap_or(0);
                let started = i["started_at"].as_u64().unwrap_or(0);
                written.max(started) >= head.saturating_sub(10_000)
            })
        });
        if views && snapshots {
            return Ok(());
        }
        if started.elapsed() > PATIENCE {
            return Err("the server did not catch up in time".into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn login(http: &reqwest::Client, base: &str) -> Result<String> {
    let started = Instant::now();
    loop {
        let r = http
            .post(format!("{base}/v1/auth/login"))
            .json(&json!({"tenant": "_system", "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
            .send()
            .await?;
        if r.status().as_u16() == 200 {
            let body: Value = r.json().await?;
            return body["access_token"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| "a login without an access token".into());
        }
        if started.elapsed() > PATIENCE {
            return Err(format!("login answered {}", r.status()).into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `custodian ARGS --data-dir DATA` with `stdin`; answers whether it succeeded.
async fn cli(binary: &Path, data: &Path, args: &[&str], stdin: &str) -> Result<bool> {
    let mut child = Command::new(binary)
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut pipe = child.stdin.take().ok_or("stdin is piped")?;
    pipe.write_all(format!("{stdin}\n").as_bytes()).await?;
    drop(pipe);
    Ok(child.wait().await?.success())
}

/// Starts `custodian serve` on `data` and a free port; answers once it listens.
async fn serve(binary: &Path, data: &Path) -> Result<(Child, String)> {
    let mut child = Command::new(binary)
        .arg("serve")
        .arg("--data-dir")
        .arg(data)
        .env("CUSTODIAN_LISTEN", "127.0.0.1:0")
        .env("CUSTODIAN_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("stdout is piped")?).lines();
    let addr = loop {
        let line = lines
            .next_line()
            .await?
            .ok_or("the server exited before listening")?;
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if v["fields"]["message"] == "listening" {
            break v["fields"]["addr"]
                .as_str()
                .ok_or("the listening line names no address")?
                .to_owned();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, format!("http://{addr}")))
}

/// `custodian` next to this bench executable (`target/release/`), or `CUSTODIAN_BIN`.
fn custodian_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("CUSTODIAN_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe
        .parent()
        .ok_or("the bench executable has no directory")?
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join("custodian");
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: build the server first with `cargo build --release --bin custodian` (or set CUSTODIAN_BIN)",
            path.display()
        )
        .into())
    }
}
