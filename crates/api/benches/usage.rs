//! Usage recording over HTTP against the real `custodian` binary (built next to this bench
//! executable): `POST /v1/tenants/{t}/usage` one record per request from 64 closed-loop clients,
//! then `POST /v1/tenants/{t}/usage/batch` with 100 records per request from 8 clients and with
//! 1,000 from 4, on a fresh SQLite ledger over loopback keep-alive connections.
//!
//! Every record is one unit of the meter `requests` (no quota) with a fresh idempotency key, from
//! one of 16 subjects; an answer means the records are durable. The table gives, per mode, units
//! per second (records over the mode's wall time), the p50 and p99 of one request's latency from
//! sending to the end of the answer, and the events the log grew by (the roll-up: one
//! `usage.recorded` per subject, meter and minute in each flush of the writer).
//!
//! Run with `cargo build --release --bin custodian && cargo bench -p custodian-api --bench usage`.
//! `BENCH_RECORDS` sets the records per mode (default 100,000).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use custodian_testkit::deployment::Deployment;
use custodian_testkit::table::{Table, percentile_ms, thousands};
use serde_json::{Value, json};

const TENANT: &str = "benchco";
const ADMIN_EMAIL: &str = "root@bench.test";
const ADMIN_PASSWORD: &str = "correct horse battery staple";

type Result<T> = std::result::Result<T, String>;

async fn post(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: &Value,
) -> Result<Value> {
    let mut request = client.post(url).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "POST {url}: {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    serde_json::from_slice(&body).map_err(|e| format!("POST {url}: {e}"))
}

async fn head(client: &reqwest::Client, base: &str, token: &str) -> Result<u64> {
    let r = client
        .get(format!("{base}/v1/admin/projections"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let body: Value = r.json().await.map_err(|e| e.to_string())?;
    Ok(body["head"].as_u64().unwrap_or(0))
}

fn record(mode: &str, n: usize) -> Value {
    json!({
        "meter": "requests",
        "quantity": 1,
        "subject": format!("subject-{}", n % 16),
        "idempotency_key": format!("{mode}-{n}"),
    })
}

/// `clients` closed-loop clients making `requests` requests of `per_request` records in all.
async fn run(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    mode: &'static str,
    clients: usize,
    requests: usize,
    per_request: usize,
) -> Result<(Duration, Vec<Duration>)> {
    let url = if per_request == 1 {
        format!("{base}/v1/tenants/{TENANT}/usage")
    } else {
        format!("{base}/v1/tenants/{TENANT}/usage/batch")
    };
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (client, url, token, next) =
            (client.clone(), url.clone(), token.to_owned(), next.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    return Ok::<_, String>(latencies);
                }
                let body = if per_request == 1 {
                    record(mode, i)
                } else {
                    let records: Vec<Value> = (0..per_request)
                        .map(|j| record(mode, i * per_request + j))
                        .collect();
                    json!({ "records": records })
                };
                let t = Instant::now();
                post(&client, &url, Some(&token), &body).await?;
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

async fn bench() -> Result<()> {
    let records: usize = std::env::var("BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
        .max(1_000);
    let home = Deployment::sqlite();
    home.bootstrap(ADMIN_EMAIL, "Root", ADMIN_PASSWORD).await;
    let server = home.serve(&[]).await;
    let base = server.base.clone();
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(128)
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| e.to_string())?;
    let login = post(
        &client,
        &format!("{base}/v1/auth/login"),
        None,
        &json!({"tenant": "_system", "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}),
    )
    .await?;
    let token = login["access_token"]
        .as_str()
        .ok_or("no access token")?
        .to_owned();
    post(
        &client,
        &format!("{base}/v1/tenants"),
        Some(&token),
        &json!({"slug": TENANT, "name": "Bench Co"}),
    )
    .await?;
    let mut table = Table::new([
        "mode",
        "records",
        "clients",
        "units/s",
        "p50 ms/request",
        "p99 ms/request",
        "events appended",
    ]);
    for (mode, clients, per_request) in [
        ("single", 64, 1),
        ("batch100", 8, 100),
        ("batch1000", 4, 1_000),
    ] {
        let requests = records / per_request;
        let before = head(&client, &base, &token).await?;
        let (wall, latencies) =
            run(&client, &base, &token, mode, clients, requests, per_request).await?;
        let appended = head(&client, &base, &token).await?.saturating_sub(before);
        let units = (requests * per_request) as f64 / wall.as_secs_f64();
        table.row([
            match per_request {
                1 => "`POST /usage`, one record".to_owned(),
                n => format!("`POST /usage/batch`, {} records", thousands(n as u64)),
            },
            thousands((requests * per_request) as u64),
            clients.to_string(),
            thousands(units as u64),
            format!("{:.2}", percentile_ms(&latencies, 50.0)),
            format!("{:.2}", percentile_ms(&latencies, 99.0)),
            thousands(appended),
        ]);
    }
    println!("Usage recording over HTTP, closed loop, every answer durable\n");
    println!("{table}");
    drop(server);
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match bench().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("usage benchmark: {e}");
            ExitCode::FAILURE
        }
    }
}
