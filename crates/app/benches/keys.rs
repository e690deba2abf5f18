//! API-key verification in process: `keys::verify::verify` (what `POST /v1/keys/verify` runs
//! after its extractors) and `keys::verify::authenticate` (what `Authorization: Bearer cst_...`
//! runs), on a running `App` over a temporary SQLite ledger, one caller at a time.
//!
//! **The workload**: `BENCH_KEYS` keys (default 1,000) issued by the platform administrator, half
//! with a usage limit large enough never to run out; the calls go round robin over them. Rows:
//! a valid key (verify), a valid key with a permission to decide (verify with `permission`), a
//! mistyped key (refused by the checksum), an unknown well-formed key (one hash and one lookup),
//! and authentication. Each call is timed alone for `BENCH_SECS` seconds per row (default 3).
//!
//! Run with `cargo bench -p custodian-app --bench keys`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use custodian_app::bootstrap::{Admin, bootstrap};
use custodian_app::keys::verify::{self, VerifyCode, VerifyRequest};
use custodian_app::keys::{self, CreateKeyRequest, UsageLimitBody};
use custodian_app::{App, Clock as _, Principal, SecurityOptions, SystemClock};
use custodian_testkit::table::{Table, percentile_ms, thousands};
use tokio_util::sync::CancellationToken;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn env_number(name: &str, default: f64) -> Result<f64> {
    match std::env::var(name) {
        Ok(v) => Ok(v.parse()?),
        Err(_) => Ok(default),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keys benchmark: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Row {
    label: &'static str,
    latencies: Vec<Duration>,
    elapsed: Duration,
    unexpected: usize,
}

async fn run() -> Result<()> {
    let n_keys = env_number("BENCH_KEYS", 1_000.0)? as usize;
    let secs = env_number("BENCH_SECS", 3.0)?;
    let ledger = custodian_testkit::Ledger::sqlite();
    let store = ledger.open().await;
    let dir = ledger.dir().ok_or("a SQLite ledger has a directory")?;
    let shutdown = CancellationToken::new();
    let app = App::start(
        store,
        &ledger.location,
        custodian_projections::all(),
        SecurityOptions::new(dir.join("secret.key")),
        Arc::new(SystemClock),
        shutdown.clone(),
    )
    .await?;
    let root_id = bootstrap(
        &app.store,
        &app.db,
        &app.security.keyring,
        &app.security.hasher,
        &app.security.policy,
        Admin {
            email: "root@bench.test",
            name: "Root",
            password: "benchmark root password",
        },
        SystemClock.now(),
    )
    .await?;
    app.security
        .index
        .catch_up()
        .await
        .map_err(|e| e.to_string())?;
    let root = Principal {
        user_id: root_id.clone(),
        tenant: "_system".into(),
        session_id: "sess_bench".into(),
        user: app
            .security
            .index
            .user("_system", &root_id)
            .ok_or("the index does not know the administrator")?,
        ip: None,
        key: None,
    };
    let began = Instant::now();
    let mut issued = Vec::with_capacity(n_keys);
    for i in 0..n_keys {
        let made = keys::create_key(
            &app,
            &root,
            "_system",
            CreateKeyRequest {
                name: format!("bench {i}"),
                owner: None,
                scopes: vec!["tenant:read".into(), "key:read".into()],
                on: None,
                expires_at: None,
                ip_allowlist: None,
                ratelimit: None,
                usage_limit: (i % 2 == 0).then_some(UsageLimitBody {
                    remaining: u64::MAX / 2,
                    refill: None,
                }),
            },
        )
        .await
        .map_err(|e| format!("issuing key {i}: {e}"))?;
        issued.push(made.key);
    }
    eprintln!(
        "keys benchmark: {n_keys} keys issued in {:.1} s; {secs} s per row",
        began.elapsed().as_secs_f64()
    );
    let typos: Vec<String> = issued
        .iter()
        .map(|k| {
            let mut t = k.clone();
            let c = if t.ends_with('0') { "1" } else { "0" };
            t.replace_range(39..40, c);
            t
        })
        .collect();
    let unknown: Vec<String> = (0..n_keys).map(|_| keys::generate()).collect();

    let plain = |k: &str| VerifyRequest {
        key: k.to_owned(),
        permission: None,
        resource: None,
        cost: None,
        ip: None,
    };
    let mut rows = Vec::new();
    for (label, set, permission, expect) in [
        ("verify: valid key", &issued, None, VerifyCode::Valid),
        (
            "verify: valid key, permission decided",
            &issued,
            Some("key:read"),
            VerifyCode::Valid,
        ),
        (
            "verify: one-character typo",
            &typos,
            None,
            VerifyCode::Malformed,
        ),
        ("verify: unknown key", &unknown, None, VerifyCode::NotFound),
    ] {
        let mut row = Row {
            label,
            latencies: Vec::new(),
            elapsed: Duration::ZERO,
            unexpected: 0,
        };
        let start = Instant::now();
        let mut i = 0;
        while start.elapsed().as_secs_f64() < secs {
            let req = VerifyRequest {
                permission: permission.map(str::to_owned),
                ..plain(&set[i % set.len()])
            };
            let t = Instant::now();
            let answer = verify::verify(&app, &root, req).await;
            row.latencies.push(t.elapsed());
            if !answer.is_ok_and(|a| a.code == expect) {
                row.unexpected += 1;
            }
            i += 1;
        }
        row.elapsed = start.elapsed();
        rows.push(row);
    }
    let mut row = Row {
        label: "authenticate: Bearer cst_",
        latencies: Vec::new(),
        elapsed: Duration::ZERO,
        unexpected: 0,
    };
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        let p = verify::authenticate(&app, &issued[i % issued.len()], None).await;
        row.latencies.push(t.elapsed());
        if p.is_err() {
            row.unexpected += 1;
        }
        i += 1;
    }
    row.elapsed = start.elapsed();
    rows.push(row);

    println!();
    println!(
        "API-key verification in process: {n_keys} keys round robin, one caller, {secs} s per row"
    );
    println!();
    let mut table = Table::new([
        "call",
        "calls",
        "calls/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "unexpected answers",
    ]);
    for r in &rows {
        table.row([
            r.label.to_owned(),
            thousands(r.latencies.len() as u64),
            thousands((r.latencies.len() as f64 / r.elapsed.as_secs_f64()).round() as u64),
            format!("{:.2}", percentile_ms(&r.latencies, 50.0) * 1000.0),
            format!("{:.2}", percentile_ms(&r.latencies, 99.0) * 1000.0),
            format!("{:.2}", percentile_ms(&r.latencies, 99.9) * 1000.0),
            r.unexpected.to_string(),
        ]);
    }
    print!("{table}");
    shutdown.cancel();
    app.keys.stopped().await;
    app.decisions.stopped().await;
    app.projections.stop().await;
    app.store.close().await;
    Ok(())
}
