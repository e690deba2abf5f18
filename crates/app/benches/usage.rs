//! Usage recording in process: records posted one at a time by many concurrent callers, and in
//! batches of 100 and 1,000, through the use cases (`usage::record`, `usage::record_batch`) of a
//! running service on a temporary SQLite ledger. Each call waits, as an HTTP caller does, until
//! its records are durable in the log.
//!
//! Every record is one unit of the meter `requests` (no quota) with a fresh idempotency key, from
//! one of 16 subjects. The table gives, per mode, the units recorded per second (records over the
//! wall time of the mode), and the median and 99th percentile of one call's latency.
//!
//! Run with `cargo bench -p custodian-app --bench usage`. `BENCH_RECORDS` sets the records per
//! mode (default 100,000); `BENCH_CONCURRENCY` the callers of the single-record mode (default 64).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use custodian_app::admin::tenants::{self, CreateTenantRequest};
use custodian_app::bootstrap::{Admin, bootstrap};
use custodian_app::usage::{self, UsageBatch, UsageRecord};
use custodian_app::{App, Clock, Principal, SecurityOptions, SystemClock};
use custodian_testkit::Ledger;
use custodian_testkit::table::{Table, percentile_ms, thousands};
use tokio_util::sync::CancellationToken;

const TENANT: &str = "benchco";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn record(mode: &str, n: usize) -> UsageRecord {
    UsageRecord {
        meter: "requests".into(),
        quantity: 1,
        subject: format!("subject-{}", n % 16),
        idempotency_key: format!("{}-{n}", mode.replace([' ', ','], "")),
    }
}

/// Runs `callers` tasks that together make `calls` calls of `per_call` records each; answers the
/// wall time and each call's latency.
async fn run(
    app: &App,
    root: &Principal,
    mode: &'static str,
    callers: usize,
    calls: usize,
    per_call: usize,
) -> Result<(Duration, Vec<Duration>), String> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let (app, root, next) = (app.clone(), root.clone(), next.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let call = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if call >= calls {
                    return Ok::<_, String>(latencies);
                }
                let t = Instant::now();
                if per_call == 1 {
                    usage::record(&app, &root, TENANT, record(mode, call))
                        .await
                        .map_err(|e| e.to_string())?;
                } else {
                    let records = (0..per_call)
                        .map(|i| record(mode, call * per_call + i))
                        .collect();
                    usage::record_batch(&app, &root, TENANT, UsageBatch { records })
                        .await
                        .map_err(|e| e.to_string())?;
                }
                latencies.push(t.elapsed());
            }
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done.map_err(|e| e.to_string())??);
    }
    Ok((started.elapsed(), latencies))
}

async fn bench() -> Result<(), String> {
    let records = env_usize("BENCH_RECORDS", 100_000).max(1_000);
    let concurrency = env_usize("BENCH_CONCURRENCY", 64).max(1);
    let ledger = Ledger::sqlite();
    let store = ledger.open().await;
    let key_file = ledger
        .dir()
        .ok_or("no ledger directory")?
        .join("secret.key");
    let shutdown = CancellationToken::new();
    let app = App::start(
        store,
        &ledger.location,
        custodian_projections::all(),
        SecurityOptions::new(key_file),
        Arc::new(SystemClock),
        shutdown.clone(),
    )
    .await
    .map_err(|e| format!("{e:#}"))?;
    let admin_id = bootstrap(
        &app.store,
        &app.db,
        &app.security.keyring,
        &app.security.hasher,
        &app.security.policy,
        Admin {
            email: "root@bench.test",
            name: "Root",
            password: "correct horse battery staple",
        },
        SystemClock.now(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let index = &app.security.index;
    index.catch_up().await.map_err(|e| e.to_string())?;
    let root = Principal {
        user_id: admin_id.clone(),
        tenant: "_system".into(),
        session_id: "sess_bench".into(),
        user: index
            .user("_system", &admin_id)
            .ok_or("the index does not know the administrator")?,
        ip: None,
        key: None,
    };
    let created = tenants::create(
        &app,
        &root,
        CreateTenantRequest {
            slug: TENANT.into(),
            name: "Bench Co".into(),
            plan: None,
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    index
        .wait_for(created.position)
        .await
        .map_err(|e| e.to_string())?;

    let mut table = Table::new([
        "mode",
        "records",
        "callers",
        "units/s",
        "p50 ms/call",
        "p99 ms/call",
    ]);
    for (mode, callers, per_call) in [
        ("single", concurrency, 1),
        ("batch of 100", 8, 100),
        ("batch of 1,000", 4, 1_000),
    ] {
        let calls = records / per_call;
        let (wall, latencies) = run(&app, &root, mode, callers, calls, per_call).await?;
        let units = (calls * per_call) as f64 / wall.as_secs_f64();
        table.row([
            mode.to_owned(),
            thousands((calls * per_call) as u64),
            callers.to_string(),
            thousands(units as u64),
            format!("{:.2}", percentile_ms(&latencies, 50.0)),
            format!("{:.2}", percentile_ms(&latencies, 99.0)),
        ]);
    }
    println!("{table}");
    shutdown.cancel();
    app.usage_writer.stopped().await;
    Ok(())
}

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("the usage benchmark failed: {e}");
            ExitCode::FAILURE
        }
    }
}
