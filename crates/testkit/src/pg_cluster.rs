//! A private PostgreSQL cluster: `initdb` into a temporary directory and a postmaster on a free
//! loopback port with trust authentication, so that a test can stop, kill and restart the
//! database SERVER without touching the machine's own.
//!
//! PostgreSQL refuses to run as root; as root, the cluster's directory is handed to the `postgres`
//! user and every server command runs as that user (`runuser`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::Connection as _;
use tokio::process::Command;

/// How long the server may take to start or to stop.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// The newest `bin` directory of the Debian packages (`/usr/lib/postgresql/*/bin`) that holds
/// `initdb`, or the directory of `initdb` on the `PATH`.
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths).find(|dir| dir.join("initdb").is_file())
        })
    })
}

/// Whether this process runs as root (PostgreSQL then needs another user).
fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

/// The uid and gid of `user`, read from `/etc/passwd`.
fn user_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&user) && fields.len() > 3)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
            .flatten()
    })
}

/// A PostgreSQL cluster of its own in a temporary directory; stopped (immediately) when dropped.
pub struct PgCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    run_as: Option<&'static str>,
}

impl PgCluster {
    /// Initializes a cluster and starts its server; `None` (skip) when PostgreSQL's server
    /// programs are not installed, except in CI.
    ///
    /// # Panics
    /// In CI without PostgreSQL, and when the cluster cannot be made or started.
    pub async fn start() -> Option<Self> {
        let Some(bin) = bin_dir() else {
            assert!(
                !crate::postgres::in_ci(),
                "PostgreSQL's server programs (initdb, pg_ctl) are required in CI"
            );
            eprintln!("skipping a PostgreSQL cluster test: initdb is not installed");
            return None;
        };
        let dir = tempfile::tempdir().expect("a temporary directory for the cluster");
        let run_as = is_root().then_some("postgres");
        if let Some(user) = run_as {
            let (uid, gid) = user_ids(user).expect("the postgres user exists to run PostgreSQL");
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("handing the cluster's directory to the postgres user");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("the loopback interface has free ports")
            .port();
        let cluster = Self {
            bin,
            dir,
            port,
            run_as,
        };
        let data = cluster.data_dir().display().to_string();
        cluster
            .run(
                "initdb",
                &[
                    "-D",
                    &data,
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
            )
            .await;
        cluster.start_again().await;
        Some(cluster)
    }

    /// The cluster's data directory (what `pg_ctl -D` takes).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The directory of the server's own log file, `server.log`.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The URL of `database` on this cluster.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a new empty database and returns its URL.
    ///
    /// # Panics
    /// When the server refuses.
    pub async fn fresh_database(&self) -> String {
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connecting to the private cluster");
        let name = format!("custodian_{}", uuid::Uuid::now_v7().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        let _ = conn.close().await;
        self.url(&name)
    }

    /// Starts the server (after [`PgCluster::stop_immediate`] or [`PgCluster::kill_9`]) and waits
    /// until it accepts connections; PostgreSQL recovers from its WAL first.
    ///
    /// # Panics
    /// When it does not start.
    pub async fn start_again(&self) {
        let data = self.data_dir().display().to_string();
        let log = self.dir.path().join("server.log").display().to_string();
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-w", "-t", "60", "-o", &options, "start",
            ],
        )
        .await;
    }

    /// Stops the server as a crash would (`pg_ctl stop -m immediate`: no checkpoint, recovery on
    /// the next start).
    ///
    /// # Panics
    /// When it cannot be stopped.
    pub async fn stop_immediate(&self) {
        let data = self.data_dir().display().to_string();
        self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"])
            .await;
    }

    /// Kills the postmaster and every process it started with SIGKILL, as a power cut or the OOM
    /// killer would, and waits until they are gone.
    ///
    /// # Panics
    /// When the server is not running.
    pub async fn kill_9(&self) {
        let pid_file = self.data_dir().join("postmaster.pid");
        let text = std::fs::read_to_string(&pid_file).expect("the server is running");
        let postmaster: u32 = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .expect("postmaster.pid starts with the pid");
        // The postmaster first, so that it starts no one else; then what it had started.
        let mut victims = vec![postmaster];
        victims.extend(children_of(postmaster));
        for pid in &victims {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(std::process::Stdio::null())
                .status()
                .await;
        }
        let deadline = tokio::time::Instant::now() + READY_WITHIN;
        while victims
            .iter()
            .any(|pid| Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(*pid))
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "PostgreSQL did not die"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn run(&self, program: &str, args: &[&str]) {
        let exe = self.bin.join(program);
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let out = tokio::time::timeout(READY_WITHIN, cmd.args(args).output())
            .await
            .unwrap_or_else(|_| panic!("{program} did not finish within {READY_WITHIN:?}"))
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let exe = self.bin.join("pg_ctl");
        let data = self.data_dir();
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => std::process::Command::new(&exe),
        };
        let _ = cmd
            .arg("-D")
            .arg(data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The pids whose parent is `parent`, read from `/proc`.
fn children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let after = stat.rsplit_once(')')?.1;
            let ppid: u32 = after.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == parent).then_some(pid)
        })
        .collect()
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, a)| a.split_whitespace().next().map(|st| st == "Z"))
        })
        .unwrap_or(true)
}
