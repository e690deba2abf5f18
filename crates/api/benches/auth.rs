//! Login throughput and latency, and the latency of authenticated reads, measured against the real
//! `custodian` binary.
//!
//! The benchmark starts `target/release/custodian` (next to this bench executable; build it first
//! with `cargo build --release --bin custodian`, or point `CUSTODIAN_BIN` at another build) as a
//! child process on a fresh SQLite data directory and a free loopback port:
//!
//! 1. **Setup**: `custodian admin bootstrap` (password on standard input) makes the platform
//!    administrator; `custodian serve` starts; the administrator logs in with tenant `_system`,
//!    creates a tenant (`POST /v1/tenants`) and `USERS` (64) person users with passwords
//!    (`POST /v1/tenants/{tenant}/users`).
//! 2. **Logins**: 8 and 64 closed-loop clients, each logging in again and again as its own user
//!    (`POST /v1/auth/login`) and timing every login from sending to the full answer, for
//!    `BENCH_SECS` seconds (default 10) per client count. Throughput is successful logins over the
//!    time from a slice's start until its last login ended, summed over slices. The **baseline**,
//!    measured in the same run for `BENCH_SECS` seconds, is raw argon2id verification with the
//!    server's default parameters (m = 19,456 KiB, t = 2, p = 1) through the `argon2` crate, parsing
//!    the PHC string and verifying as the server does, on as many threads as the server's hashing
//!    pool has permits (the number of cores). The three take turns in 5 rounds of one slice each
//!    (`BENCH_SECS / 5`), in an order that rotates every round, so that bursts of load from
//!    elsewhere on the machine fall on all of them alike. "ratio to baseline" is logins/s over the
//!    baseline's verifications/s.
//! 3. **Authenticated reads**: `GET /v1/auth/me` with valid access tokens (the last token of each of
//!    the 64 users, round robin) at a fixed open-loop rate of `BENCH_RATE` requests/s (default
//!    5,000) for `BENCH_SECS` seconds in all. Request `k` of a run is scheduled at
//!    `start + k / rate` on a fixed timeline by a pacing thread, and its latency is measured from
//!    that scheduled time to the end of the answer's body, so a stalled server or a stalled load
//!    generator shows up in the latency instead of silently lowering the rate (coordinated
//!    omission). At most 64 requests are in flight, over a pool of keep-alive HTTP/1.1 connections;
//!    when all 64 are out, the pacer waits and the waiting counts as latency. The **baseline**, in
//!    the same run at the same rate, is `GET /healthz`, which authenticates nothing and touches no
//!    state: the cost of HTTP, the router's middleware and the load generator itself. After one
//!    second of warm-up each, the two take turns in slices of one second (`/healthz` first in odd
//!    rounds, `/v1/auth/me` first in even ones), so that bursts of load from elsewhere on the
//!    machine fall on both alike. The table gives the percentiles over all slices, `/v1/auth/me`'s
//!    p99 over `/healthz`'s p99, and the median of the slices' p99s, which a single burst moves
//!    less.
//!
//! The server starts with every plan's rate limits raised far above what the benchmark sends, so
//! that the tables count answered requests, not `429`s.
//!
//! Client and server share the machine's cores; the lines under the tables give each phase's CPU
//! time of the server process per request and the load generator's own lateness (from a request's
//! scheduled time until its task started), which is part of every open-loop latency.
//!
//! Run with `cargo build --release --bin custodian && cargo bench -p custodian-api --bench auth`.
//! (Cargo also builds a package's binaries for its benchmarks, with the bench profile, which here
//! has the release profile's settings, and links the result to the same `target/release/custodian`;
//! a warning is printed if a source file is newer than the binary found.)
//! 4. **Checks** (`BENCH_PART=check`): on a fresh ledger, a tenant with a custom catalog, 64 service
//!    principals, a four-level hierarchy of custom roles under the built-in ones, and 256 grants
//!    (a quarter resource-scoped, some through resource groups, a few denies), all made over HTTP;
//!    then `POST /v1/tenants/{t}/check` as the platform administrator, with 256 different checks
//!    round robin, open loop at `BENCH_RATE` against `/healthz` in alternating slices as in part 3,
//!    first with the decision log on (`--decision-log all`, the default), then on a restarted
//!    server with it off (`--decision-log none`). The table gives each p99 over the same server's
//!    `/healthz`, and the events the decision log appended.
//!
//! 5. **Key verification** (`BENCH_PART=verify`): on a fresh ledger, 64 API keys issued over HTTP,
//!    then `POST /v1/keys/verify` as the platform administrator (an access token) and as a gateway
//!    authenticating with a key of its own that holds `key:verify`, the keys round robin, open
//!    loop at `BENCH_RATE`, against `/healthz` in alternating slices.
//! 6. **Keys against access tokens** (`BENCH_PART=key`): on the same kind of server, `GET
//!    /v1/auth/me` with `Authorization: Bearer cst_...` (the 64 keys round robin) against the same
//!    request with the administrator's access token, and `/healthz`, in alternating slices.
//!
//! `BENCH_PART=login`, `BENCH_PART=me`, `BENCH_PART=check`, `BENCH_PART=verify` or `BENCH_PART=key` runs one part. Any setup error ends the run with a non-zero
//! exit status; errors during a measurement are counted in the tables.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use custodian_api::auth::password::{Argon2Params, PasswordHasher};
use custodian_testkit::table::{Table, percentile_ms, thousands};
use futures::StreamExt as _;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Semaphore, oneshot};

type BoxError = Box<dyn Error + Send + Sync>;
type Result<T> = std::result::Result<T, BoxError>;

/// Person users the logins are spread over.
const USERS: usize = 64;
/// Concurrent login clients per run.
const LOGIN_CLIENTS: [usize; 2] = [8, 64];
/// The login runs and their baseline take turns in this many rounds.
const LOGIN_ROUNDS: usize = 5;
/// Most open-loop requests in flight at once.
const MAX_IN_FLIGHT: usize = 64;
/// Warm-up of each open-loop target, at the same rate, not recorded.
const WARM_UP: Duration = Duration::from_secs(1);
/// The open-loop targets take turns in slices of about this length.
const SLICE: Duration = Duration::from_secs(1);
/// The tenant the users live in.
const TENANT: &str = "bench";
const ADMIN_EMAIL: &str = "admin@bench.test";
const ADMIN_PASSWORD: &str = "bench admin passphrase 7f3k";
/// Stop a login client after this many failed logins in a row.
const MAX_CONSECUTIVE_ERRORS: usize = 20;
/// Requests/s of `/v1/auth/me` while the hashing pool is saturated by a login flood.
const FLOOD_RATE: f64 = 500.0;
/// Login clients of the flood.
const FLOOD_CLIENTS: usize = 64;

#[derive(Clone)]
struct Config {
    secs: f64,
    rate: f64,
    login: bool,
    me: bool,
    check: bool,
    verify: bool,
    key: bool,
}

fn env_number(name: &str, default: f64) -> Result<f64> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n > 0.0)
            .ok_or_else(|| format!("{name} must be a positive number, not {v:?}").into()),
        Err(_) => Ok(default),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("auth benchmark: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    let part = std::env::var("BENCH_PART").ok();
    let config = Config {
        secs: env_number("BENCH_SECS", 10.0)?,
        rate: env_number("BENCH_RATE", 5_000.0)?,
        login: part.as_deref().is_none_or(|p| p == "login"),
        me: part.as_deref().is_none_or(|p| p == "me"),
        check: part.as_deref().is_none_or(|p| p == "check"),
        verify: part.as_deref().is_none_or(|p| p == "verify"),
        key: part.as_deref().is_none_or(|p| p == "key"),
    };
    if !config.login && !config.me && !config.check && !config.verify && !config.key {
        return Err("BENCH_PART must be `login`, `me`, `check`, `verify` or `key`".into());
    }
    let binary = custodian_binary()?;
    let params = Argon2Params::default();
    let threads = PasswordHasher::default_concurrency().get();
    eprintln!(
        "auth benchmark: {} against {}; {USERS} users, {} s per run, {} requests/s open loop; argon2id m={} KiB t={} p={}, {threads} hashing threads; load average {}",
        if config.login && config.me {
            "logins and authenticated reads".to_owned()
        } else {
            format!("BENCH_PART={}", part.as_deref().unwrap_or_default())
        },
        binary.display(),
        config.secs,
        config.rate,
        params.memory_kib,
        params.iterations,
        params.parallelism,
        load_average(),
    );

    let started = Instant::now();
    let (login, me) = if config.login || config.me {
        let dir = tempfile::tempdir()?;
        bootstrap(&binary, dir.path()).await?;
        let server = Server::start(&binary, dir.path(), &[]).await?;
        let outcome = measure(&server, &config, params, threads).await;
        server.stop().await;
        outcome?
    } else {
        (None, None)
    };
    let checks = if config.check {
        Some(check_part(&binary, &config).await?)
    } else {
        None
    };
    let keys = if config.verify || config.key {
        Some(key_part(&binary, &config).await?)
    } else {
        None
    };
    eprintln!(
        "done in {:.0} s; load average {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );

    if let Some(login) = login {
        println!();
        print_login_table(&login, params);
    }
    if let Some(me) = me {
        println!();
        print_read_table(&me, config.rate);
        if let Some((quiet, during, logins)) = &me.flood {
            println!();
            print_flood_table(quiet, during, logins);
        }
    }
    if let Some(checks) = checks {
        println!();
        print_check_table(&checks, config.rate);
    }
    if let Some(keys) = keys {
        println!();
        print_key_table(&keys, config.rate);
    }
    Ok(())
}

/// Everything measured against one running server.
async fn measure(
    server: &Server,
    config: &Config,
    params: Argon2Params,
    threads: usize,
) -> Result<(Option<LoginPart>, Option<ReadPart>)> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(MAX_IN_FLIGHT * 2)
        .timeout(Duration::from_secs(120))
        .build()?;
    let setup = Instant::now();
    let users = create_users(&client, &server.base).await?;
    eprintln!(
        "setup: tenant {TENANT} and {USERS} users created in {:.1} s",
        setup.elapsed().as_secs_f64()
    );

    let mut tokens: Vec<Option<String>> = vec![None; USERS];
    let logins = if config.login {
        // Rounds of one slice each of the baseline and of both client counts, in an order that
        // rotates every round, so that bursts of load from elsewhere fall on all three alike.
        let slice = config.secs / LOGIN_ROUNDS as f64;
        let mut baseline = Baseline::new(threads);
        let mut runs: Vec<LoginRun> = LOGIN_CLIENTS.into_iter().map(LoginRun::new).collect();
        for round in 0..LOGIN_ROUNDS {
            let mut progress = Vec::new();
            for step in 0..=LOGIN_CLIENTS.len() {
                match (step + round) % (LOGIN_CLIENTS.len() + 1) {
                    0 => {
                        let b = argon2_baseline(params, threads, slice).await?;
                        progress.push(format!("baseline {:.1}/s", b.per_second()));
                        baseline.absorb(b);
                    }
                    i => {
                        let run = &mut runs[i - 1];
                        let cpu = server.cpu();
                        let mut part =
                            login_run(&client, &server.base, &users, run.clients, slice).await;
                        part.server_cpu = server.cpu().saturating_sub(cpu);
                        progress.push(format!(
                            "{} clients {:.1}/s",
                            run.clients,
                            part.per_second()
                        ));
                        for (user, token) in part.tokens.drain(..) {
                            tokens[user] = Some(token);
                        }
                        run.absorb(part);
                    }
                }
            }
            eprintln!(
                "login round {}/{LOGIN_ROUNDS}: {}",
                round + 1,
                progress.join(", ")
            );
        }
        eprintln!("baseline: {}", baseline.summary());
        for run in &runs {
            eprintln!("logins, {} clients: {}", run.clients, run.summary());
        }
        Some(LoginPart { baseline, runs })
    } else {
        None
    };

    let me = if config.me {
        // Every user's access token, logging in those the login runs did not leave one for.
        let mut fresh = futures::stream::iter(
            tokens
                .iter()
                .enumerate()
                .filter(|(_, t)| t.is_none())
                .map(|(i, _)| i)
                .collect::<Vec<_>>(),
        )
        .map(|i| {
            let (client, base, user) = (&client, &server.base, &users[i]);
            async move {
                login(client, base, TENANT, &user.email, &user.password)
                    .await
                    .map(|t| (i, t))
            }
        })
        .buffer_unordered(8);
        while let Some(fresh) = fresh.next().await {
            let (i, token) = fresh?;
            tokens[i] = Some(token);
        }
        let tokens: Vec<String> = tokens.into_iter().flatten().collect();
        // One request each, to fail early on a setup problem rather than count 50,000 errors.
        for (path, token) in [("/healthz", None), ("/v1/auth/me", Some(&tokens[0]))] {
            let mut request = client.get(format!("{}{path}", server.base));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            send(request)
                .await
                .map_err(|e| format!("GET {path} failed before the run: {e}"))?;
        }
        let targets = [
            ("baseline: `GET /healthz`", "/healthz", Vec::new()),
            ("`GET /v1/auth/me`", "/v1/auth/me", tokens),
        ];
        let mut runs: Vec<ReadRun> = Vec::new();
        for (label, path, tokens) in &targets {
            let url = format!("{}{path}", server.base);
            open_loop(
                &client,
                &url,
                tokens,
                &[],
                config.rate,
                WARM_UP.as_secs_f64(),
            )
            .await?;
            runs.push(ReadRun::empty(label));
        }
        // Slices of SLICE each, alternating between the targets (and their order every round), so
        // that bursts of load from elsewhere on the machine fall on both alike.
        let slices = (config.secs / SLICE.as_secs_f64()).ceil().max(1.0) as usize;
        let slice = config.secs / slices as f64;
        for round in 0..slices {
            let mut progress = Vec::new();
            for i in 0..targets.len() {
                let i = if round % 2 == 0 {
                    i
                } else {
                    targets.len() - 1 - i
                };
                let (_, path, tokens) = &targets[i];
                let url = format!("{}{path}", server.base);
                let cpu = server.cpu();
                let own = own_cpu();
                let mut run = open_loop(&client, &url, tokens, &[], config.rate, slice).await?;
                run.server_cpu = server.cpu().saturating_sub(cpu);
                run.client_cpu = own_cpu().saturating_sub(own);
                progress.push(format!(
                    "{} p99 {:.3} ms",
                    targets[i].1,
                    percentile_ms(&run.latencies, 99.0)
                ));
                runs[i].absorb(run);
            }
            eprintln!("slice {}/{slices}: {}", round + 1, progress.join(", "));
        }
        for run in &runs {
            eprintln!("{}: {}", run.label, run.summary());
        }
        // Does a login flood starve other requests? `/v1/auth/me` at a modest rate alone, then
        // while 64 clients keep the argon2id pool saturated.
        let me_url = format!("{}/v1/auth/me", server.base);
        let secs = (config.secs / 2.0).max(1.0);
        let (_, _, me_tokens) = &targets[1];
        let mut quiet = open_loop(&client, &me_url, me_tokens, &[], FLOOD_RATE, secs).await?;
        quiet.label = "`GET /v1/auth/me` alone";
        let (flood_logins, during) = tokio::join!(
            login_run(&client, &server.base, &users, FLOOD_CLIENTS, secs),
            open_loop(&client, &me_url, me_tokens, &[], FLOOD_RATE, secs)
        );
        let mut during = during?;
        during.label = "`GET /v1/auth/me` during the login flood";
        eprintln!("{}: {}", quiet.label, quiet.summary());
        eprintln!("{}: {}", during.label, during.summary());
        eprintln!("login flood: {}", flood_logins.summary());
        Some(ReadPart {
            runs,
            flood: Some((quiet, during, flood_logins)),
        })
    } else {
        None
    };
    Ok((logins, me))
}

// ---------------------------------------------------------------------------------------------
// The server process.

/// `custodian` next to this bench executable (`target/release/`), or `CUSTODIAN_BIN`.
fn custodian_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("CUSTODIAN_BIN") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("CUSTODIAN_BIN={} is not a file", path.display()).into())
        };
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
    if !path.is_file() {
        return Err(format!(
            "{} is missing: build the server first with `cargo build --release --bin custodian` (or set CUSTODIAN_BIN)",
            path.display()
        )
        .into());
    }
    warn_if_stale(&path);
    Ok(path)
}

/// Warns when a source file of the workspace's crates is newer than the binary.
fn warn_if_stale(binary: &Path) {
    let Ok(built) = std::fs::metadata(binary).and_then(|m| m.modified()) else {
        return;
    };
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    let mut pending = vec![crates];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if !path.ends_with("target") {
                    pending.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs" || e == "sql")
                && !path.components().any(|c| c.as_os_str() == "benches")
                && let Ok(modified) = entry.metadata().and_then(|m| m.modified())
                && newest.as_ref().is_none_or(|(t, _)| modified > *t)
            {
                newest = Some((modified, path));
            }
        }
    }
    if let Some((modified, path)) = newest
        && modified > built
    {
        eprintln!(
            "warning: {} is newer than {}; rebuild with `cargo build --release --bin custodian` to measure the current code",
            path.display(),
            binary.display()
        );
    }
}

/// A `custodian` command on `data_dir`, with no store settings inherited from the environment.
fn custodian(binary: &Path, data_dir: &Path) -> Command {
    let mut cmd = Command::new(binary);
    for var in [
        "CUSTODIAN_DATA_DIR",
        "CUSTODIAN_DATABASE_URL",
        "CUSTODIAN_SECRET_KEY_FILE",
        "CUSTODIAN_CONFIG",
        "CUSTODIAN_NATS_URL",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.current_dir(data_dir).kill_on_drop(true);
    cmd
}

/// `custodian admin bootstrap`, the password on standard input.
async fn bootstrap(binary: &Path, data_dir: &Path) -> Result<()> {
    let mut child = custodian(binary, data_dir)
        .args(["admin", "bootstrap", "--email", ADMIN_EMAIL, "--data-dir"])
        .arg(data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    stdin
        .write_all(format!("{ADMIN_PASSWORD}\n").as_bytes())
        .await?;
    drop(stdin);
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        return Err(format!(
            "`custodian admin bootstrap` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

/// A running `custodian serve`.
struct Server {
    child: Child,
    pid: u32,
    base: String,
}

impl Server {
    /// Starts `custodian serve` with JSON logs on a free loopback port and waits until it listens.
    /// Its log is read in the background; warnings and errors are copied to standard error.
    ///
    /// Every plan's rate limits are raised far above what the benchmark sends, so that it measures
    /// answered requests, not `429`s.
    async fn start(binary: &Path, data_dir: &Path, envs: &[(&str, &str)]) -> Result<Self> {
        let config = data_dir.join("bench.toml");
        let unlimited = "{ limit = 1000000000, window_seconds = 60 }";
        let plans: String = ["free", "team", "enterprise"]
            .iter()
            .map(|plan| {
                format!("[rate_limits.{plan}]\ntenant = {unlimited}\nprincipal = {unlimited}\n")
            })
            .collect();
        std::fs::write(&config, plans)?;
        let mut child = custodian(binary, data_dir)
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--config")
            .arg(&config)
            .env("CUSTODIAN_LISTEN", "127.0.0.1:0")
            .env("CUSTODIAN_LOG_FORMAT", "json")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let pid = child.id().ok_or("the server exited at once")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = oneshot::channel();
        tokio::spawn(follow_log(stdout, tx));
        let addr = tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .map_err(|_| "the server did not listen within 60 s")?
            .map_err(|_| "the server exited before listening")?;
        Ok(Self {
            child,
            pid,
            base: format!("http://{addr}"),
        })
    }

    /// CPU time (user and system) the server has used so far.
    fn cpu(&self) -> Duration {
        process_cpu(&format!("/proc/{}/stat", self.pid))
    }

    /// SIGTERM, then SIGKILL if it has not stopped within 15 s.
    async fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            eprintln!("the server did not stop within 15 s of SIGTERM; killing it");
            let _ = self.child.kill().await;
        }
    }
}

/// Reads the server's JSON log: sends the address once it listens, copies warnings and errors.
async fn follow_log(out: tokio::process::ChildStdout, listening: oneshot::Sender<String>) {
    let mut listening = Some(listening);
    let mut copied = 0;
    let mut lines = BufReader::new(out).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if v["fields"]["message"] == "listening"
            && let Some(addr) = v["fields"]["addr"].as_str()
            && let Some(tx) = listening.take()
        {
            let _ = tx.send(addr.to_owned());
        }
        if matches!(v["level"].as_str(), Some("WARN" | "ERROR")) && copied < 20 {
            copied += 1;
            eprintln!("server: {line}");
        }
    }
}

/// User plus system CPU time of a process from `/proc/.../stat`; zero where unavailable.
fn process_cpu(stat: &str) -> Duration {
    // Fields after the command name: state is the 3rd field, utime the 14th, stime the 15th, in
    // clock ticks of 1/100 s (USER_HZ).
    let ticks = std::fs::read_to_string(stat).ok().and_then(|s| {
        let rest = s.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some(utime + stime)
    });
    Duration::from_millis(ticks.unwrap_or(0) * 10)
}

fn own_cpu() -> Duration {
    process_cpu("/proc/self/stat")
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_owned())
}

// ---------------------------------------------------------------------------------------------
// HTTP.

/// Sends a request and reads the whole answer; an error for anything but 2xx.
async fn send(request: reqwest::RequestBuilder) -> std::result::Result<Vec<u8>, String> {
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(body.to_vec())
    } else {
        Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
    }
}

async fn post_json(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: &Value,
) -> std::result::Result<Value, String> {
    let mut request = client.post(url).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let body = send(request)
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    serde_json::from_slice(&body).map_err(|e| format!("POST {url}: the answer is not JSON: {e}"))
}

/// Logs in; the access token.
async fn login(
    client: &reqwest::Client,
    base: &str,
    tenant: &str,
    email: &str,
    password: &str,
) -> std::result::Result<String, String> {
    let answer = post_json(
        client,
        &format!("{base}/v1/auth/login"),
        None,
        &json!({ "tenant": tenant, "email": email, "password": password }),
    )
    .await?;
    answer["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("the login answer has no access token: {answer}"))
}

struct BenchUser {
    email: String,
    password: String,
}

/// Logs in as the platform administrator and creates the tenant and its users.
async fn create_users(client: &reqwest::Client, base: &str) -> Result<Vec<BenchUser>> {
    let admin = login(client, base, "_system", ADMIN_EMAIL, ADMIN_PASSWORD).await?;
    post_json(
        client,
        &format!("{base}/v1/tenants"),
        Some(&admin),
        &json!({ "slug": TENANT, "name": "Benchmark tenant" }),
    )
    .await?;
    let users: Vec<BenchUser> = (0..USERS)
        .map(|i| BenchUser {
            email: format!("user{i}@bench.test"),
            password: format!("bench passphrase {i} q7x"),
        })
        .collect();
    let url = format!("{base}/v1/tenants/{TENANT}/users");
    let mut created = futures::stream::iter(users.iter().enumerate())
        .map(|(i, user)| {
            let (url, admin) = (&url, &admin);
            async move {
                post_json(
                    client,
                    url,
                    Some(admin),
                    &json!({
                        "email": user.email,
                        "name": format!("Bench user {i}"),
                        "password": user.password,
                    }),
                )
                .await
            }
        })
        .buffer_unordered(8);
    while let Some(answer) = created.next().await {
        answer?;
    }
    drop(created);
    Ok(users)
}

// ---------------------------------------------------------------------------------------------
// Part 2: logins.

struct LoginPart {
    baseline: Baseline,
    runs: Vec<LoginRun>,
}

/// Raw argon2id verifications on `threads` threads.
struct Baseline {
    threads: usize,
    verifications: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    /// Verifications per second of each slice.
    slice_rates: Vec<f64>,
}

impl Baseline {
    fn new(threads: usize) -> Self {
        Self {
            threads,
            verifications: 0,
            elapsed: Duration::ZERO,
            latencies: Vec::new(),
            slice_rates: Vec::new(),
        }
    }

    fn absorb(&mut self, slice: Self) {
        self.slice_rates.push(slice.per_second());
        self.verifications += slice.verifications;
        self.elapsed += slice.elapsed;
        self.latencies.extend(slice.latencies);
    }

    fn per_second(&self) -> f64 {
        self.verifications as f64 / self.elapsed.as_secs_f64()
    }

    fn summary(&self) -> String {
        format!(
            "{} verifications on {} threads in {:.2} s, {:.1}/s",
            self.verifications,
            self.threads,
            self.elapsed.as_secs_f64(),
            self.per_second()
        )
    }
}

/// Verifies one password against its PHC string, as the server does (parse, then verify), on
/// `threads` threads for `secs`.
async fn argon2_baseline(params: Argon2Params, threads: usize, secs: f64) -> Result<Baseline> {
    let duration = Duration::from_secs_f64(secs);
    let argon2 = Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(|e| format!("argon2 parameters: {e}"))?,
    );
    const PASSWORD: &[u8] = b"bench passphrase 0 q7x";
    let salt = SaltString::encode_b64(b"custodian bench!").map_err(|e| e.to_string())?;
    let phc = argon2
        .hash_password(PASSWORD, &salt)
        .map_err(|e| e.to_string())?
        .to_string();
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let deadline = start + duration;
        let per_thread: Vec<Vec<Duration>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    let (argon2, phc) = (&argon2, &phc);
                    scope.spawn(move || {
                        let mut latencies = Vec::new();
                        while Instant::now() < deadline {
                            let t = Instant::now();
                            let stored = PasswordHash::new(phc).expect("a PHC string just made");
                            let verified = argon2.verify_password(PASSWORD, &stored);
                            assert!(verified.is_ok(), "the password verifies");
                            latencies.push(t.elapsed());
                        }
                        latencies
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("a baseline thread panicked"))
                .collect()
        });
        let elapsed = start.elapsed();
        let latencies: Vec<Duration> = per_thread.into_iter().flatten().collect();
        Baseline {
            threads,
            verifications: latencies.len(),
            elapsed,
            latencies,
            slice_rates: Vec::new(),
        }
    })
    .await
    .map_err(Into::into)
}

struct LoginRun {
    clients: usize,
    ok: usize,
    errors: usize,
    first_error: Option<String>,
    elapsed: Duration,
    latencies: Vec<Duration>,
    /// The last access token of each user that logged in.
    tokens: Vec<(usize, String)>,
    server_cpu: Duration,
    /// Logins per second of each slice.
    slice_rates: Vec<f64>,
}

impl LoginRun {
    fn new(clients: usize) -> Self {
        Self {
            clients,
            ok: 0,
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
            latencies: Vec::new(),
            tokens: Vec::new(),
            server_cpu: Duration::ZERO,
            slice_rates: Vec::new(),
        }
    }

    fn absorb(&mut self, slice: Self) {
        self.slice_rates.push(slice.per_second());
        self.ok += slice.ok;
        self.errors += slice.errors;
        if self.first_error.is_none() {
            self.first_error = slice.first_error;
        }
        self.elapsed += slice.elapsed;
        self.latencies.extend(slice.latencies);
        self.server_cpu += slice.server_cpu;
    }

    fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    fn summary(&self) -> String {
        format!(
            "{} logins ({} errors) in {:.2} s, {:.1}/s, p50 {:.1} ms, p99 {:.1} ms{}",
            self.ok,
            self.errors,
            self.elapsed.as_secs_f64(),
            self.per_second(),
            percentile_ms(&self.latencies, 50.0),
            percentile_ms(&self.latencies, 99.0),
            self.first_error
                .as_ref()
                .map(|e| format!("; first error: {e}"))
                .unwrap_or_default()
        )
    }
}

/// `clients` closed-loop clients logging in for `secs`, client `c` as user `c`.
async fn login_run(
    client: &reqwest::Client,
    base: &str,
    users: &[BenchUser],
    clients: usize,
    secs: f64,
) -> LoginRun {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let user_index = c % users.len();
            let (client, base) = (client.clone(), base.to_owned());
            let (email, password) = (
                users[user_index].email.clone(),
                users[user_index].password.clone(),
            );
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let (mut errors, mut in_a_row, mut first_error, mut token) = (0, 0, None, None);
                while Instant::now() < deadline && in_a_row < MAX_CONSECUTIVE_ERRORS {
                    let t = Instant::now();
                    match login(&client, &base, TENANT, &email, &password).await {
                        Ok(access) => {
                            latencies.push(t.elapsed());
                            token = Some(access);
                            in_a_row = 0;
                        }
                        Err(e) => {
                            errors += 1;
                            in_a_row += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
                (user_index, latencies, errors, first_error, token)
            })
        })
        .collect();
    let mut run = LoginRun::new(clients);
    for task in tasks {
        match task.await {
            Ok((user, latencies, errors, first_error, token)) => {
                run.ok += latencies.len();
                run.latencies.extend(latencies);
                run.errors += errors;
                if run.first_error.is_none() {
                    run.first_error = first_error;
                }
                if let Some(token) = token {
                    run.tokens.push((user, token));
                }
            }
            Err(e) => {
                run.errors += 1;
                run.first_error
                    .get_or_insert_with(|| format!("a client task failed: {e}"));
            }
        }
    }
    run.elapsed = start.elapsed();
    run
}

fn print_login_table(part: &LoginPart, params: Argon2Params) {
    let b = &part.baseline;
    let baseline = b.per_second();
    println!(
        "Logins: argon2id m={} KiB, t={}, p={} (the server's defaults); baseline and logins in {LOGIN_ROUNDS} alternating rounds",
        params.memory_kib, params.iterations, params.parallelism
    );
    println!();
    let mut table = Table::new([
        format!(
            "run (argon2id m={} KiB, t={}, p={})",
            params.memory_kib, params.iterations, params.parallelism
        ),
        "clients".into(),
        "logins".into(),
        "seconds".into(),
        "logins/s".into(),
        "slices' logins/s (min–max)".into(),
        "p50 ms".into(),
        "p99 ms".into(),
        "errors".into(),
        "ratio to baseline".into(),
    ]);
    table.row([
        format!(
            "baseline: raw argon2id verify on {} threads (verifications)",
            b.threads
        ),
        "–".into(),
        thousands(b.verifications as u64),
        format!("{:.1}", b.elapsed.as_secs_f64()),
        format!("{baseline:.1}"),
        range(&b.slice_rates),
        format!("{:.1}", percentile_ms(&b.latencies, 50.0)),
        format!("{:.1}", percentile_ms(&b.latencies, 99.0)),
        "0".into(),
        "1.00".into(),
    ]);
    for run in &part.runs {
        table.row([
            "`POST /v1/auth/login`, closed loop, one user per client".into(),
            run.clients.to_string(),
            thousands(run.ok as u64),
            format!("{:.1}", run.elapsed.as_secs_f64()),
            format!("{:.1}", run.per_second()),
            range(&run.slice_rates),
            format!("{:.1}", percentile_ms(&run.latencies, 50.0)),
            format!("{:.1}", percentile_ms(&run.latencies, 99.0)),
            run.errors.to_string(),
            format!("{:.2}", run.per_second() / baseline),
        ]);
    }
    print!("{table}");
    println!();
    println!(
        "Baseline p50/p99 are per verification. Server CPU per login: {}.",
        part.runs
            .iter()
            .map(|r| format!(
                "{:.1} ms at {} clients",
                per_request_ms(r.server_cpu, r.ok),
                r.clients
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for run in &part.runs {
        if let Some(e) = &run.first_error {
            println!("First error at {} clients: {e}", run.clients);
        }
    }
}

/// `12.3–45.6`, the smallest and largest of `values`.
fn range(values: &[f64]) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{min:.1}–{max:.1}")
}

// ---------------------------------------------------------------------------------------------
// Part 3: authenticated reads, open loop.

struct ReadPart {
    runs: Vec<ReadRun>,
    /// `/v1/auth/me` at [`FLOOD_RATE`] alone, then during a login flood, and the flood itself.
    flood: Option<(ReadRun, ReadRun, LoginRun)>,
}

struct ReadRun {
    label: &'static str,
    sent: usize,
    ok: usize,
    errors: usize,
    first_error: Option<String>,
    /// From the first scheduled send until the last answer.
    elapsed: Duration,
    /// From each successful request's scheduled send time to the end of its answer.
    latencies: Vec<Duration>,
    /// From each request's scheduled send time until its task started.
    lateness: Vec<Duration>,
    /// The p99 of each slice, in milliseconds.
    slice_p99: Vec<f64>,
    server_cpu: Duration,
    client_cpu: Duration,
}

impl ReadRun {
    fn empty(label: &'static str) -> Self {
        Self {
            label,
            sent: 0,
            ok: 0,
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
            latencies: Vec::new(),
            lateness: Vec::new(),
            slice_p99: Vec::new(),
            server_cpu: Duration::ZERO,
            client_cpu: Duration::ZERO,
        }
    }

    /// Adds another slice's requests to these.
    fn absorb(&mut self, slice: Self) {
        self.sent += slice.sent;
        self.ok += slice.ok;
        self.errors += slice.errors;
        if self.first_error.is_none() {
            self.first_error = slice.first_error;
        }
        self.elapsed += slice.elapsed;
        self.slice_p99.push(percentile_ms(&slice.latencies, 99.0));
        self.latencies.extend(slice.latencies);
        self.lateness.extend(slice.lateness);
        self.server_cpu += slice.server_cpu;
        self.client_cpu += slice.client_cpu;
    }

    fn achieved(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    fn summary(&self) -> String {
        format!(
            "{} requests ({} errors), {:.0}/s, p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms; pacer lateness p99 {:.3} ms{}",
            self.ok,
            self.errors,
            self.achieved(),
            percentile_ms(&self.latencies, 50.0),
            percentile_ms(&self.latencies, 99.0),
            percentile_ms(&self.latencies, 99.9),
            percentile_ms(&self.latencies, 100.0),
            percentile_ms(&self.lateness, 99.0),
            self.first_error
                .as_ref()
                .map(|e| format!("; first error: {e}"))
                .unwrap_or_default()
        )
    }
}

/// One request's outcome.
struct Sample {
    lateness: Duration,
    latency: Duration,
    done: Instant,
    outcome: std::result::Result<(), String>,
}

/// `GET url` (or `POST url` with `bodies` round robin as JSON, when there are bodies) at `rate`
/// requests/s for `secs` on a fixed timeline, with `tokens` round robin as bearer tokens (none
/// when empty), at most [`MAX_IN_FLIGHT`] at once.
async fn open_loop(
    client: &reqwest::Client,
    url: &str,
    tokens: &[String],
    bodies: &[Vec<u8>],
    rate: f64,
    secs: f64,
) -> Result<ReadRun> {
    let n = (rate * secs).round().max(1.0) as usize;
    let handle = tokio::runtime::Handle::current();
    let limit = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let client = client.clone();
    let url: reqwest::Url = url.parse()?;
    let bodies = bodies.to_vec();
    let authorizations = tokens
        .iter()
        .map(|t| HeaderValue::from_str(&format!("Bearer {t}")))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    // A plain thread paces the requests: tokio's timer has a resolution of 1 ms, too coarse for a
    // request every 200 µs; `thread::sleep` wakes within tens of microseconds.
    let pacer = std::thread::Builder::new()
        .name("pacer".into())
        .spawn(move || {
            let start = Instant::now() + Duration::from_millis(20);
            let mut tasks = Vec::with_capacity(n);
            for k in 0..n {
                let scheduled = start + Duration::from_secs_f64(k as f64 / rate);
                if let Some(wait) = scheduled.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let permit = match Arc::clone(&limit).try_acquire_owned() {
                    Ok(permit) => permit,
                    Err(_) => handle
                        .block_on(Arc::clone(&limit).acquire_owned())
                        .expect("the semaphore is never closed"),
                };
                let mut request = if bodies.is_empty() {
                    client.get(url.clone())
                } else {
                    client
                        .post(url.clone())
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(bodies[k % bodies.len()].clone())
                };
                if !authorizations.is_empty() {
                    let authorization = &authorizations[k % authorizations.len()];
                    request = request.header(AUTHORIZATION, authorization.clone());
                }
                tasks.push(handle.spawn(async move {
                    let began = Instant::now();
                    let outcome = send(request).await.map(drop);
                    let done = Instant::now();
                    drop(permit);
                    Sample {
                        lateness: began.saturating_duration_since(scheduled),
                        latency: done.saturating_duration_since(scheduled),
                        done,
                        outcome,
                    }
                }));
            }
            (start, tasks)
        })?;
    let (start, tasks) = tokio::task::spawn_blocking(move || pacer.join())
        .await?
        .map_err(|_| "the pacer thread panicked")?;
    let mut run = ReadRun::empty("");
    run.sent = n;
    let mut last = start;
    for task in tasks {
        let sample = task.await?;
        last = last.max(sample.done);
        run.lateness.push(sample.lateness);
        match sample.outcome {
            Ok(()) => {
                run.ok += 1;
                run.latencies.push(sample.latency);
            }
            Err(e) => {
                run.errors += 1;
                run.first_error.get_or_insert(e);
            }
        }
    }
    run.elapsed = last.saturating_duration_since(start);
    Ok(run)
}

fn print_flood_table(quiet: &ReadRun, during: &ReadRun, logins: &LoginRun) {
    println!(
        "Authenticated reads during a login flood: `GET /v1/auth/me` open loop at {FLOOD_RATE:.0} requests/s, alone and while {FLOOD_CLIENTS} clients log in without pause"
    );
    println!();
    let mut table = Table::new([
        "request",
        "requests",
        "achieved/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "p99 ratio to alone",
    ]);
    let alone = percentile_ms(&quiet.latencies, 99.0);
    for run in [quiet, during] {
        let p99 = percentile_ms(&run.latencies, 99.0);
        table.row([
            run.label.to_owned(),
            thousands(run.ok as u64),
            format!("{:.0}", run.achieved()),
            format!("{:.3}", percentile_ms(&run.latencies, 50.0)),
            format!("{p99:.3}"),
            format!("{:.3}", percentile_ms(&run.latencies, 100.0)),
            run.errors.to_string(),
            format!("{:.2}", p99 / alone),
        ]);
    }
    print!("{table}");
    println!();
    println!(
        "The flood: {} logins/s, p50 {:.1} ms, p99 {:.1} ms, {} errors.",
        format_args!("{:.1}", logins.per_second()),
        percentile_ms(&logins.latencies, 50.0),
        percentile_ms(&logins.latencies, 99.0),
        logins.errors
    );
}

fn print_read_table(part: &ReadPart, rate: f64) {
    let healthz_p99 = part
        .runs
        .first()
        .map_or(f64::NAN, |r| percentile_ms(&r.latencies, 99.0));
    println!(
        "Authenticated reads: open loop at {} requests/s, latency from each request's scheduled send time, at most {MAX_IN_FLIGHT} in flight over keep-alive connections",
        thousands(rate.round() as u64)
    );
    println!();
    let mut table = Table::new([
        "request".to_owned(),
        "requests".into(),
        "achieved/s".into(),
        "p50 ms".into(),
        "p99 ms".into(),
        "p99.9 ms".into(),
        "max ms".into(),
        "errors".into(),
        "p99 ratio to healthz".into(),
        format!("median of {}-s slices' p99 ms", SLICE.as_secs()),
    ]);
    for run in &part.runs {
        table.row([
            run.label.to_owned(),
            thousands(run.sent as u64),
            thousands(run.achieved().round() as u64),
            format!("{:.3}", percentile_ms(&run.latencies, 50.0)),
            format!("{:.3}", percentile_ms(&run.latencies, 99.0)),
            format!("{:.3}", percentile_ms(&run.latencies, 99.9)),
            format!("{:.3}", percentile_ms(&run.latencies, 100.0)),
            run.errors.to_string(),
            format!("{:.2}", percentile_ms(&run.latencies, 99.0) / healthz_p99),
            format!("{:.3}", median(&run.slice_p99)),
        ]);
    }
    print!("{table}");
    println!();
    for run in &part.runs {
        println!(
            "{}: server CPU {:.1} µs per request, load generator CPU {:.1} µs per request; pacer lateness p50 {:.3} ms, p99 {:.3} ms.",
            run.label,
            per_request_ms(run.server_cpu, run.sent) * 1000.0,
            per_request_ms(run.client_cpu, run.sent) * 1000.0,
            percentile_ms(&run.lateness, 50.0),
            percentile_ms(&run.lateness, 99.0),
        );
        if let Some(e) = &run.first_error {
            println!("First error of {}: {e}", run.label);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Numbers.

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn per_request_ms(cpu: Duration, requests: usize) -> f64 {
    cpu.as_secs_f64() * 1000.0 / requests.max(1) as f64
}

// ---------------------------------------------------------------------------------------------
// Part 4: authorization checks over HTTP.

/// Principals, roles and grants of the check part's policy.
const CHECK_PRINCIPALS: usize = 64;
const CHECK_GRANTS: usize = 256;
const CHECK_BODIES: usize = 256;

/// The check part: per decision-log mode, `/healthz` and `/check` on the same server.
struct CheckPart {
    modes: Vec<(&'static str, ReadRun, ReadRun, u64)>,
}

/// Makes the check part's policy over HTTP as the platform administrator; answers the admin's
/// token and the check bodies.
async fn check_setup(client: &reqwest::Client, base: &str) -> Result<(String, Vec<Vec<u8>>)> {
    let admin = login(client, base, "_system", ADMIN_EMAIL, ADMIN_PASSWORD).await?;
    let t = format!("{base}/v1/tenants/{TENANT}");
    let post = |path: String, body: Value| {
        let admin = admin.clone();
        async move { post_json(client, &path, Some(&admin), &body).await }
    };
    post(
        format!("{base}/v1/tenants"),
        json!({ "slug": TENANT, "name": "Benchmark tenant" }),
    )
    .await?;
    send(
        client
            .put(format!("{t}/catalog"))
            .bearer_auth(&admin)
            .json(&json!({"resource_types": {"project": ["read", "write", "deploy"], "billing": ["read", "export"]}})),
    )
    .await?;
    let mut principals = Vec::new();
    for i in 0..CHECK_PRINCIPALS {
        let created = post(
            format!("{t}/users"),
            json!({"email": format!("svc{i}@bench.test"), "name": format!("Service {i}"), "kind": "service"}),
        )
        .await?;
        principals.push(created["user_id"].as_str().ok_or("no user_id")?.to_owned());
    }
    // A four-level hierarchy: ops > release > build > reader > viewer.
    let levels = ["reader", "build", "release", "ops"];
    let mut parent = "viewer";
    for role in levels {
        post(
            format!("{t}/roles"),
            json!({"name": role, "parents": [parent]}),
        )
        .await?;
        parent = role;
    }
    let actions = [
        "project:read",
        "project:write",
        "project:deploy",
        "billing:read",
        "billing:export",
    ];
    for g in 0..CHECK_GRANTS {
        let permission = actions[g % actions.len()];
        let subject = if g % 3 == 0 {
            json!({"principal": principals[g % CHECK_PRINCIPALS]})
        } else {
            json!({"role": levels[g % levels.len()]})
        };
        let mut body = json!({"subject": subject, "permission": permission});
        if g % 4 == 0 {
            body["on"] = json!({"resource": format!("project/p{}", g % 32)});
        } else if g % 7 == 0 {
            body["on"] = json!({"group": format!("team{}", g % 4)});
        }
        if g % 29 == 0 {
            body["effect"] = json!("deny");
        }
        post(format!("{t}/grants"), body).await?;
    }
    for p in 0..32 {
        send(
            client
                .put(format!("{t}/groups/team{}/members/project/p{p}", p % 4))
                .bearer_auth(&admin),
        )
        .await?;
    }
    for (i, principal) in principals.iter().enumerate() {
        post(
            format!("{t}/assignments"),
            json!({"principal": principal, "role": levels[i % levels.len()]}),
        )
        .await?;
    }
    let bodies = (0..CHECK_BODIES)
        .map(|i| {
            serde_json::to_vec(&json!({
                "principal": principals[i % CHECK_PRINCIPALS],
                "permission": actions[i % actions.len()],
                "resource": format!("project/p{}", i % 40),
            }))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((admin, bodies))
}

async fn check_part(binary: &Path, config: &Config) -> Result<CheckPart> {
    let dir = tempfile::tempdir()?;
    bootstrap(binary, dir.path()).await?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(MAX_IN_FLIGHT * 2)
        .timeout(Duration::from_secs(120))
        .build()?;
    let mut part = CheckPart { modes: Vec::new() };
    let mut setup: Option<(String, Vec<Vec<u8>>)> = None;
    for mode in ["all", "none"] {
        let server = Server::start(binary, dir.path(), &[("CUSTODIAN_DECISION_LOG", mode)]).await?;
        let (token, bodies) = match &setup {
            Some(s) => (login_when_ready(&client, &server.base).await?, s.1.clone()),
            None => {
                let began = Instant::now();
                let s = check_setup(&client, &server.base).await?;
                eprintln!(
                    "check setup: policy made over HTTP in {:.1} s",
                    began.elapsed().as_secs_f64()
                );
                setup = Some(s.clone());
                s
            }
        };
        let tokens = vec![token];
        let healthz = format!("{}/healthz", server.base);
        let check = format!("{}/v1/tenants/{TENANT}/check", server.base);
        // One check first, to fail early on a setup problem rather than count errors.
        send(
            client
                .post(&check)
                .bearer_auth(&tokens[0])
                .json(&serde_json::from_slice::<Value>(&bodies[0])?),
        )
        .await
        .map_err(|e| format!("a check failed before the run: {e}"))?;
        let log_before = log_head(&client, &server.base, &tokens[0]).await?;
        open_loop(
            &client,
            &check,
            &tokens,
            &bodies,
            config.rate,
            WARM_UP.as_secs_f64(),
        )
        .await?;
        open_loop(
            &client,
            &healthz,
            &[],
            &[],
            config.rate,
            WARM_UP.as_secs_f64(),
        )
        .await?;
        let mut base_run = ReadRun::empty("baseline: `GET /healthz`");
        let mut check_run = ReadRun::empty(if mode == "all" {
            "`POST /check`, decision log on"
        } else {
            "`POST /check`, decision log off"
        });
        let slices = (config.secs / SLICE.as_secs_f64()).ceil().max(1.0) as usize;
        let slice = config.secs / slices as f64;
        for round in 0..slices {
            for i in 0..2 {
                let which = if round % 2 == 0 { i } else { 1 - i };
                let cpu = server.cpu();
                let own = own_cpu();
                let mut run = if which == 0 {
                    open_loop(&client, &healthz, &[], &[], config.rate, slice).await?
                } else {
                    open_loop(&client, &check, &tokens, &bodies, config.rate, slice).await?
                };
                run.server_cpu = server.cpu().saturating_sub(cpu);
                run.client_cpu = own_cpu().saturating_sub(own);
                if which == 0 {
                    base_run.absorb(run);
                } else {
                    check_run.absorb(run);
                }
            }
        }
        let appended = log_head(&client, &server.base, &tokens[0])
            .await?
            .saturating_sub(log_before);
        eprintln!("{}: {}", base_run.label, base_run.summary());
        eprintln!(
            "{}: {}; the log grew by {appended} events",
            check_run.label,
            check_run.summary()
        );
        server.stop().await;
        part.modes.push((mode, base_run, check_run, appended));
    }
    Ok(part)
}

/// Logs the platform administrator in once the restarted server has caught up with the log (it
/// answers 503 until then).
async fn login_when_ready(client: &reqwest::Client, base: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match login(client, base, "_system", ADMIN_EMAIL, ADMIN_PASSWORD).await {
            Ok(token) => return Ok(token),
            Err(e) if e.contains("503") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The log's head, from the projection report.
async fn log_head(client: &reqwest::Client, base: &str, token: &str) -> Result<u64> {
    let body = send(
        client
            .get(format!("{base}/v1/admin/projections"))
            .bearer_auth(token),
    )
    .await?;
    Ok(serde_json::from_slice::<Value>(&body)?["head"]
        .as_u64()
        .unwrap_or(0))
}

/// The columns of a table of runs against `/healthz` on the same server.
const VERSUS_HEALTHZ: [&str; 9] = [
    "request",
    "requests",
    "achieved/s",
    "p50 ms",
    "p99 ms",
    "max ms",
    "errors",
    "p99 ratio to healthz",
    "server CPU µs/request",
];

/// The cells of `run` under [`VERSUS_HEALTHZ`], where `/healthz` answered with the p99 `base`.
fn versus_healthz(run: &ReadRun, base: f64) -> Vec<String> {
    vec![
        run.label.to_owned(),
        thousands(run.sent as u64),
        thousands(run.achieved().round() as u64),
        format!("{:.3}", percentile_ms(&run.latencies, 50.0)),
        format!("{:.3}", percentile_ms(&run.latencies, 99.0)),
        format!("{:.3}", percentile_ms(&run.latencies, 100.0)),
        run.errors.to_string(),
        format!("{:.2}", percentile_ms(&run.latencies, 99.0) / base),
        format!("{:.1}", per_request_ms(run.server_cpu, run.sent) * 1000.0),
    ]
}

fn print_check_table(part: &CheckPart, rate: f64) {
    println!(
        "Authorization checks over HTTP: open loop at {} requests/s, {CHECK_BODIES} different checks round robin, against `/healthz` on the same server in alternating {}-s slices",
        thousands(rate.round() as u64),
        SLICE.as_secs()
    );
    println!();
    let mut table = Table::new(VERSUS_HEALTHZ.into_iter().chain(["events appended"]));
    for (_, healthz, check, appended) in &part.modes {
        let base = percentile_ms(&healthz.latencies, 99.0);
        for (run, events) in [(healthz, None), (check, Some(*appended))] {
            let mut cells = versus_healthz(run, base);
            cells.push(events.map(thousands).unwrap_or_default());
            table.row(cells);
        }
    }
    print!("{table}");
    for (_, _, check, _) in &part.modes {
        if let Some(e) = &check.first_error {
            println!("First error of {}: {e}", check.label);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parts 5 and 6: API keys over HTTP.

/// Keys issued for the key parts.
const BENCH_KEYS: usize = 64;

/// The key parts: `/healthz` first, then each measured request, on one server.
struct KeyPart {
    runs: Vec<ReadRun>,
}

async fn key_part(binary: &Path, config: &Config) -> Result<KeyPart> {
    let dir = tempfile::tempdir()?;
    bootstrap(binary, dir.path()).await?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(MAX_IN_FLIGHT * 2)
        .timeout(Duration::from_secs(120))
        .build()?;
    let server = Server::start(binary, dir.path(), &[]).await?;
    let outcome = key_runs(&client, &server, config).await;
    server.stop().await;
    outcome
}

async fn key_runs(client: &reqwest::Client, server: &Server, config: &Config) -> Result<KeyPart> {
    let base = &server.base;
    let admin = login(client, base, "_system", ADMIN_EMAIL, ADMIN_PASSWORD).await?;
    let mut keys = Vec::with_capacity(BENCH_KEYS);
    for i in 0..BENCH_KEYS {
        let made = post_json(
            client,
            &format!("{base}/v1/tenants/_system/keys"),
            Some(&admin),
            &json!({"name": format!("bench {i}"), "scopes": ["tenant:read", "key:read"]}),
        )
        .await?;
        let key = made["key"]
            .as_str()
            .ok_or_else(|| format!("the key answer has no key: {made}"))?;
        keys.push(key.to_owned());
    }
    let bodies = keys
        .iter()
        .map(|k| serde_json::to_vec(&json!({ "key": k })))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let healthz = format!("{base}/healthz");
    let me = format!("{base}/v1/auth/me");
    let verify = format!("{base}/v1/keys/verify");
    // A platform-wide gateway that authenticates with a key of its own holding `key:verify`.
    let gateway = post_json(
        client,
        &format!("{base}/v1/tenants/_system/keys"),
        Some(&admin),
        &json!({"name": "gateway", "scopes": ["key:verify"]}),
    )
    .await?;
    let gateway = vec![
        gateway["key"]
            .as_str()
            .ok_or_else(|| format!("the key answer has no key: {gateway}"))?
            .to_owned(),
    ];
    let admin = vec![admin];
    let mut targets: Vec<(&'static str, &str, &[String], &[Vec<u8>])> =
        vec![("baseline: `GET /healthz`", &healthz, &[], &[])];
    if config.key {
        targets.push(("`GET /v1/auth/me`, access token", &me, &admin, &[]));
        targets.push(("`GET /v1/auth/me`, API key", &me, &keys, &[]));
    }
    if config.verify {
        targets.push((
            "`POST /v1/keys/verify`, caller with an access token",
            &verify,
            &admin,
            &bodies,
        ));
        targets.push((
            "`POST /v1/keys/verify`, caller with an API key",
            &verify,
            &gateway,
            &bodies,
        ));
    }
    // One request each first, to fail early on a setup problem rather than count errors.
    for (label, url, tokens, bodies) in &targets {
        let mut request = match bodies.first() {
            Some(b) => client
                .post(*url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.clone()),
            None => client.get(*url),
        };
        if let Some(t) = tokens.first() {
            request = request.bearer_auth(t);
        }
        send(request)
            .await
            .map_err(|e| format!("{label} failed before the run: {e}"))?;
        open_loop(
            client,
            url,
            tokens,
            bodies,
            config.rate,
            WARM_UP.as_secs_f64(),
        )
        .await?;
    }
    let mut runs: Vec<ReadRun> = targets.iter().map(|t| ReadRun::empty(t.0)).collect();
    let slices = (config.secs / SLICE.as_secs_f64()).ceil().max(1.0) as usize;
    let slice = config.secs / slices as f64;
    for round in 0..slices {
        for i in 0..targets.len() {
            let which = (i + round) % targets.len();
            let (_, url, tokens, bodies) = targets[which];
            let cpu = server.cpu();
            let own = own_cpu();
            let mut run = open_loop(client, url, tokens, bodies, config.rate, slice).await?;
            run.server_cpu = server.cpu().saturating_sub(cpu);
            run.client_cpu = own_cpu().saturating_sub(own);
            runs[which].absorb(run);
        }
    }
    for run in &runs {
        eprintln!("{}: {}", run.label, run.summary());
    }
    Ok(KeyPart { runs })
}

fn print_key_table(part: &KeyPart, rate: f64) {
    println!(
        "API keys over HTTP: open loop at {} requests/s, {BENCH_KEYS} keys round robin, against `/healthz` on the same server in alternating {}-s slices",
        thousands(rate.round() as u64),
        SLICE.as_secs()
    );
    println!();
    let mut table = Table::new(VERSUS_HEALTHZ);
    let base = part
        .runs
        .first()
        .map_or(f64::NAN, |h| percentile_ms(&h.latencies, 99.0));
    for run in &part.runs {
        table.row(versus_healthz(run, base));
    }
    print!("{table}");
    for run in &part.runs {
        if let Some(e) = &run.first_error {
            println!("First error of {}: {e}", run.label);
        }
    }
}
