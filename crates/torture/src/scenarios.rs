//! The scenarios: a fresh deployment each, traffic, the scenario's fault, then the checks.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use custodian_testkit::Ledger;
use custodian_testkit::deployment::{Deployment, Server};
use custodian_testkit::nats::NatsServer;
use custodian_testkit::pg_cluster::PgCluster;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use reqwest::Method;
use serde_json::json;
use tokio::sync::mpsc;

use crate::traffic::{self, Client, ROOT_EMAIL, ROOT_PASSWORD, Record, Target};
use crate::{Settings, Summary, checks, secrets};

/// A scenario of the harness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Mixed traffic, no fault.
    Mixed,
    /// `kill -9` of the server at random moments, with restarts.
    Kill,
    /// PostgreSQL killed and restarted under load.
    PgRestart,
    /// NATS stopped for a while.
    Nats,
    /// The SQLite data directory's disk full, then freed.
    DiskFull,
    /// Mixed traffic with debug logs, then a scan for every secret created.
    Secrets,
}

impl Scenario {
    /// Whether the scenario runs on `backend`.
    pub fn applies_to(self, backend: Backend) -> bool {
        match self {
            Self::PgRestart => backend == Backend::Postgres,
            Self::DiskFull => backend == Backend::Sqlite,
            _ => true,
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Mixed => "mixed",
            Self::Kill => "kill",
            Self::PgRestart => "pg-restart",
            Self::Nats => "nats",
            Self::DiskFull => "disk-full",
            Self::Secrets => "secrets",
        })
    }
}

/// Where the ledger lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// A database on a private PostgreSQL cluster.
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        })
    }
}

/// A tmpfs mounted over a directory; unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, mib: u64) -> Result<Self, String> {
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(Self(dir.to_owned()))
        } else {
            Err(format!(
                "mount -t tmpfs is not permitted here: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A running server and everything it logged.
struct Running {
    server: Server,
    log: Arc<Mutex<Vec<String>>>,
}

struct Env {
    deployment: Deployment,
    cluster: Option<PgCluster>,
    nats: NatsServer,
    envs: Vec<(&'static str, &'static str)>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Env {
    async fn serve(&self) -> Running {
        let mut args = self.deployment.store_args();
        args.extend(["--nats-url".to_owned(), self.nats.url()]);
        let mut server = Server::start(&args, self.deployment.home.path(), &self.envs).await;
        let (_, empty) = mpsc::unbounded_channel();
        let mut lines = std::mem::replace(&mut server.lines, empty);
        let log = self.log.clone();
        tokio::spawn(async move {
            while let Some(line) = lines.recv().await {
                log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        Running {
            server,
            log: self.log.clone(),
        }
    }
}

/// Runs `scenario` on `backend` and reports it.
pub async fn run(scenario: Scenario, backend: Backend, settings: &Settings) -> Summary {
    let mut summary = Summary {
        scenario: scenario.to_string(),
        backend: backend.to_string(),
        ..Summary::default()
    };
    let Some(nats) = NatsServer::start().await else {
        summary.skipped = Some("nats-server is not installed".into());
        return summary;
    };
    let (deployment, cluster, tmpfs) = match backend {
        Backend::Sqlite => {
            let deployment = Deployment::sqlite();
            let tmpfs = if scenario == Scenario::DiskFull {
                match Tmpfs::mount(&deployment.data_dir(), settings.tmpfs_mib) {
                    Ok(t) => Some(t),
                    Err(reason) => {
                        summary.skipped = Some(reason);
                        return summary;
                    }
                }
            } else {
                None
            };
            (deployment, None, tmpfs)
        }
        Backend::Postgres => {
            let Some(cluster) = PgCluster::start().await else {
                summary.skipped = Some("PostgreSQL's server programs are not installed".into());
                return summary;
            };
            let url = cluster.fresh_database().await;
            (
                Deployment::new(Ledger::postgres_at(url)),
                Some(cluster),
                None,
            )
        }
    };
    let mut env = Env {
        deployment,
        cluster,
        nats,
        envs: if scenario == Scenario::Secrets {
            vec![("RUST_LOG", "debug")]
        } else {
            vec![]
        },
        log: Arc::default(),
    };
    let boot = env
        .deployment
        .try_bootstrap(ROOT_EMAIL, "Torture Root", ROOT_PASSWORD)
        .await;
    if boot.code != Some(0) {
        summary.failures.push(format!("bootstrap failed: {boot:?}"));
        return summary;
    }
    let mut running = env.serve().await;
    let record = Arc::new(Mutex::new(Record::default()));
    let target = Target::default();
    target.set(&running.server.base);
    let client = Client::new(target.clone(), record.clone());
    let world = match traffic::setup(&client, settings.clients, settings.seed).await {
        Ok(w) => Arc::new(w),
        Err(e) => {
            summary.failures.push(e);
            return summary;
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..settings.clients)
        .map(|n| {
            tokio::spawn(traffic::client_loop(
                n,
                Client::new(target.clone(), record.clone()),
                world.clone(),
                stop.clone(),
                settings.seed,
            ))
        })
        .collect();

    let duration = Duration::from_secs(settings.duration_secs);
    let mut rng = StdRng::seed_from_u64(settings.seed);
    let started = Instant::now();
    let mut recoveries: Vec<Duration> = Vec::new();
    match scenario {
        Scenario::Mixed | Scenario::Secrets => tokio::time::sleep(duration).await,
        Scenario::Kill => {
            let slot = duration / settings.kills.max(1) as u32;
            for _ in 0..settings.kills {
                let at = slot.mul_f64(rng.gen_range(0.2..0.9));
                tokio::time::sleep(at).await;
                let _ = running.server.child.start_kill();
                let killed = Instant::now();
                let _ = running.server.child.wait().await;
                running = env.serve().await;
                target.set(&running.server.base);
                summary.restarts += 1;
                match probe(&client, Duration::from_secs(60)).await {
                    Some(()) => recoveries.push(killed.elapsed()),
                    None => summary
                        .failures
                        .push("the server did not answer within 60 s of a restart".into()),
                }
                tokio::time::sleep(slot.saturating_sub(at).saturating_sub(killed.elapsed())).await;
            }
        }
        Scenario::PgRestart => {
            let cluster = env.cluster.as_ref().expect("pg-restart runs on PostgreSQL");
            tokio::time::sleep(duration / 3).await;
            cluster.kill_9().await;
            let down = Duration::from_secs(settings.pg_down_secs);
            tokio::time::sleep(down).await;
            cluster.start_again().await;
            let back = Instant::now();
            match probe(&client, Duration::from_secs(60)).await {
                Some(()) => recoveries.push(back.elapsed()),
                None => summary
                    .failures
                    .push("the server did not recover within 60 s of PostgreSQL's restart".into()),
            }
            let rest = duration.saturating_sub(started.elapsed());
            tokio::time::sleep(rest.max(duration / 3)).await;
        }
        Scenario::Nats => {
            tokio::time::sleep(duration / 4).await;
            env.nats.kill().await;
            tokio::time::sleep(Duration::from_secs(settings.nats_down_secs)).await;
            env.nats.restart().await;
            let back = Instant::now();
            match checks::wait_relay_caught_up(&running.server, Duration::from_secs(120)).await {
                Ok(()) => recoveries.push(back.elapsed()),
                Err(e) => summary.failures.push(format!("after NATS came back: {e}")),
            }
            let rest = duration.saturating_sub(started.elapsed());
            tokio::time::sleep(rest.max(duration / 4)).await;
        }
        Scenario::DiskFull => {
            tokio::time::sleep(duration / 3).await;
            let filler = env.deployment.data_dir().join("filler");
            let written = fill(&filler);
            summary.extra.push(format!("filler_mib={}", written >> 20));
            tokio::time::sleep((duration / 3).max(Duration::from_secs(2))).await;
            let _ = std::fs::remove_file(&filler);
            let freed = Instant::now();
            match probe(&client, Duration::from_secs(60)).await {
                Some(()) => recoveries.push(freed.elapsed()),
                None => summary
                    .failures
                    .push("the server did not work again within 60 s of freeing space".into()),
            }
            let rest = duration.saturating_sub(started.elapsed());
            tokio::time::sleep(rest.max(duration / 4)).await;
        }
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        if tokio::time::timeout(Duration::from_secs(60), c)
            .await
            .is_err()
        {
            summary
                .failures
                .push("a client did not stop within 60 s".into());
        }
    }
    summary.recovery = recoveries.iter().max().copied();

    // A server appends on its way down (the usage counters of API keys), so the views and the
    // relay are checked on a restarted, idle server that has caught up with all of it.
    if let Err(e) = terminate(running.server).await {
        summary.failures.push(e);
    }
    running = env.serve().await;
    // An idle server still appends now and then (a signed checkpoint of the ledger): the checks
    // count only when the log did not move while they ran; otherwise they run again.
    let acks = record
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .acks
        .clone();
    let mut attempt = 0;
    let (log, failures, payloads) = loop {
        attempt += 1;
        let caught_up = checks::wait_caught_up(&running.server, Duration::from_secs(120)).await;
        let fresh_dir = tempfile::tempdir().ok();
        let fresh = match &env.cluster {
            Some(cluster) => cluster.fresh_database().await,
            None => fresh_dir
                .as_ref()
                .map(|d| d.path().join("rebuild.db").display().to_string())
                .unwrap_or_default(),
        };
        let mut payloads = Vec::new();
        let mut extra = Vec::new();
        let (log, mut failures) = checks::all(
            &env.deployment,
            &fresh,
            &env.nats.url(),
            &acks,
            &mut payloads,
            &mut extra,
        )
        .await;
        let moved = env.deployment.read_log().await.len() != log.len();
        if moved && attempt < 4 {
            continue;
        }
        if let Err(e) = caught_up {
            failures.push(e);
        }
        summary.extra.extend(extra);
        break (log, failures, payloads);
    };
    summary.failures.extend(failures);
    summary.events = log.len() as u64;
    if let Err(e) = terminate(running.server).await {
        summary.failures.push(e);
    }
    let server_log = std::mem::take(&mut *running.log.lock().unwrap_or_else(|e| e.into_inner()));
    for line in server_log
        .iter()
        .filter(|l| l.contains("\"level\":\"ERROR\""))
        .take(3)
    {
        eprintln!("torture: {scenario} on {backend}: server error: {line}");
    }
    if let Some(line) = server_log.iter().find(|l| l.contains("panicked")) {
        summary
            .failures
            .push(format!("the server panicked: {line}"));
    }
    let mut record = std::mem::take(&mut *record.lock().unwrap_or_else(|e| e.into_inner()));
    if scenario == Scenario::Secrets {
        let stores: Vec<PathBuf> = match &env.cluster {
            Some(cluster) => vec![cluster.data_dir()],
            None => vec![env.deployment.data_dir()],
        };
        let found = secrets::scan(&record.secrets, &stores, &server_log, &payloads);
        summary.extra.push(format!(
            "secrets_checked={} log_lines={} nats_messages_scanned={} found={}",
            record.secrets.len(),
            server_log.len(),
            payloads.len(),
            found.len()
        ));
        summary.failures.extend(found);
    }
    let errors: u64 = record
        .statuses
        .iter()
        .filter(|(s, _)| {
            s.parse::<u16>()
                .is_ok_and(|s| s >= 500 && s != 503 && s != 507)
        })
        .map(|(_, n)| n)
        .sum();
    if errors > 0 {
        summary.failures.push(format!(
            "{errors} answers were 5xx other than 503/507: {}",
            record.server_errors.join(" | ")
        ));
    }
    eprintln!(
        "torture: {scenario} on {backend}: answers by operation {:?}",
        record.by_operation
    );
    for (key, body) in &record.first_refusals {
        eprintln!("torture: first {key}: {body}");
    }
    summary.requests = record.statuses.values().sum();
    summary.acknowledged = record.acks.len() as u64;
    summary.p50 = traffic::percentile(&mut record.latencies, 50);
    summary.p99 = traffic::percentile(&mut record.latencies, 99);
    summary.statuses = record.statuses;
    summary.passed = summary.failures.is_empty();
    drop(tmpfs);
    summary
}

/// Stops `server` with SIGTERM; `Err` when it does not exit with 0 within 30 s (it is killed
/// then).
async fn terminate(mut server: Server) -> Result<(), String> {
    let Some(pid) = server.child.id() else {
        return Err("the server had exited before it was stopped".into());
    };
    let _ = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await;
    match tokio::time::timeout(Duration::from_secs(30), server.child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(status) => Err(format!("the server exited with {status:?} on SIGTERM")),
        Err(_) => {
            let _ = server.child.start_kill();
            let _ = server.child.wait().await;
            Err("the server did not stop within 30 s of SIGTERM".into())
        }
    }
}

/// Sends the platform administrator's login (a command: it appends) until it succeeds.
async fn probe(client: &Client, within: Duration) -> Option<()> {
    let body = json!({"tenant": "_system", "email": ROOT_EMAIL, "password": ROOT_PASSWORD});
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(a) = client
            .send(
                "login",
                Method::POST,
                "/v1/auth/login",
                None,
                Some(&body),
                Some("session_id"),
            )
            .await
            && a.status == 200
        {
            if let Some(t) = a.body["access_token"].as_str() {
                client.secret(t);
            }
            if let Some(t) = a.body["refresh_token"].as_str() {
                client.secret(t);
            }
            return Some(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Writes zeros to `path` until the disk is full; returns how many bytes fitted.
fn fill(path: &Path) -> u64 {
    use std::io::Write as _;
    let Ok(mut file) = std::fs::File::create(path) else {
        return 0;
    };
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    let _ = file.sync_all();
    written
}
