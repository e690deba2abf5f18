//! Server configuration: command-line flags, then `CUSTODIAN_*` environment variables, then an
//! optional TOML file, then defaults.

use custodian_app::ratelimit::{RateTier, RateTiers};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The default directory of the embedded store.
pub const DEFAULT_DATA_DIR: &str = "custodian-data";
/// The embedded store's file name inside the data directory.
pub const SQLITE_FILE: &str = "custodian.db";
/// The master key's file name inside the data directory.
pub const SECRET_KEY_FILE: &str = "secret.key";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, coloured on a terminal.
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

/// `custodian serve` options. Each flag can also be set by its environment variable or in the
/// configuration file; a flag wins over the variable, the variable over the file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// Address and port to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "CUSTODIAN_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Directory of the embedded SQLite store, created if missing; ignored when --database-url is
    /// set [default: ./custodian-data]
    #[arg(long, env = "CUSTODIAN_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// PostgreSQL URL (postgres://user:password@host/db) of a production store; the embedded SQLite
    /// store is used when unset
    #[arg(long, env = "CUSTODIAN_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,

    /// Log format [default: pretty]
    #[arg(long, env = "CUSTODIAN_LOG_FORMAT", value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Largest accepted event body in bytes [default: 262144]
    #[arg(long, env = "CUSTODIAN_MAX_EVENT_BYTES", value_name = "BYTES")]
    pub max_event_bytes: Option<usize>,

    /// Seconds to let in-flight requests finish after SIGTERM or Ctrl-C [default: 30]
    #[arg(long, env = "CUSTODIAN_SHUTDOWN_TIMEOUT", value_name = "SECS")]
    pub shutdown_timeout: Option<u64>,

    /// NATS server (nats://host:4222, or several separated by commas) to publish every event to,
    /// on the JetStream stream CUSTODIAN; unset: no publishing
    #[arg(long, env = "CUSTODIAN_NATS_URL", value_name = "URL")]
    pub nats_url: Option<String>,

    /// Milliseconds a read with `Custodian-Min-Position` may wait for the views before answering
    /// 503 [default: 2000]
    #[arg(long, env = "CUSTODIAN_READ_WAIT_MS", value_name = "MS")]
    pub read_wait_ms: Option<u64>,

    /// File holding the server's 32-byte master key (base64), created with mode 0600 if missing;
    /// every instance on one database needs the same key [default: DATA_DIR/secret.key]
    #[arg(long, env = "CUSTODIAN_SECRET_KEY_FILE", value_name = "FILE")]
    pub secret_key_file: Option<PathBuf>,

    /// PEM file of the TLS certificate chain (the server's certificate first) to serve HTTPS
    /// with; needs --tls-key. Unset: plain HTTP, for a TLS-terminating proxy in front
    #[arg(long, env = "CUSTODIAN_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM file of the TLS certificate's private key (PKCS#8, PKCS#1 or SEC1); needs --tls-cert
    #[arg(long, env = "CUSTODIAN_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// The `iss` and `aud` of access tokens, usually the server's public URL [default: custodian]
    #[arg(long, env = "CUSTODIAN_ISSUER", value_name = "NAME")]
    pub issuer: Option<String>,

    /// Shortest accepted password, in characters, for accounts that sign in with a password alone
    /// (at least 8); accounts with TOTP enabled may use 8 [default: 15]
    #[arg(long, env = "CUSTODIAN_PASSWORD_MIN_LENGTH", value_name = "CHARS")]
    pub password_min_length: Option<usize>,

    /// argon2id memory cost in KiB (at least 19456, OWASP's minimum) [default: 19456]
    #[arg(long, env = "CUSTODIAN_ARGON2_MEMORY_KIB", value_name = "KIB")]
    pub argon2_memory_kib: Option<u32>,

    /// argon2id iterations (at least 2) [default: 2]
    #[arg(long, env = "CUSTODIAN_ARGON2_ITERATIONS", value_name = "N")]
    pub argon2_iterations: Option<u32>,

    /// Failed logins from one IP address within 15 minutes before its attempts are delayed, the
    /// delay doubling with each further failure [default: 50]
    #[arg(long, env = "CUSTODIAN_LOGIN_IP_FAILURES", value_name = "N")]
    pub login_ip_failures: Option<u32>,

    /// Reverse proxies (addresses or CIDR ranges, comma-separated) whose `X-Forwarded-For` is
    /// believed: behind them, the client address for login throttling is the last address in the
    /// header that is not a trusted proxy [default: none, the TCP peer is the client]
    #[arg(long, env = "CUSTODIAN_TRUSTED_PROXIES", value_name = "CIDRS")]
    pub trusted_proxies: Option<String>,

    /// Which authorization checks are recorded as `decision.recorded` events: all, denies or
    /// none [default: all]
    #[arg(long, env = "CUSTODIAN_DECISION_LOG", value_name = "MODE")]
    pub decision_log: Option<String>,

    /// A bearer token that may scrape `/metrics` without signing in (a Prometheus
    /// `authorization` credential); without it, `/metrics` needs a principal holding
    /// `audit:read` in `_system` [default: none]
    #[arg(
        long,
        env = "CUSTODIAN_METRICS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub metrics_token: Option<String>,

    /// The origin line of the log's signed checkpoints, naming this log for witnesses (a
    /// schema-less URL; no spaces or `+`); also the name of the keys made to sign them
    /// [default: custodian.local/ledger]
    #[arg(long, env = "CUSTODIAN_LEDGER_ORIGIN", value_name = "ORIGIN")]
    pub ledger_origin: Option<String>,

    /// Publish a signed checkpoint once the log grew by this many events; 0 never by count
    /// [default: 1000]
    #[arg(long, env = "CUSTODIAN_CHECKPOINT_EVENTS", value_name = "N")]
    pub checkpoint_events: Option<u64>,

    /// Publish a signed checkpoint once this many seconds passed since the last one, if the log
    /// grew at all; 0 never by time [default: 60]
    #[arg(long, env = "CUSTODIAN_CHECKPOINT_SECONDS", value_name = "SECS")]
    pub checkpoint_seconds: Option<u64>,

    /// TOML file with any of the settings above (snake_case keys, e.g. `listen = "0.0.0.0:8080"`);
    /// flags and environment variables take precedence over it
    #[arg(long, env = "CUSTODIAN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The configuration file's contents: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    log_format: Option<LogFormat>,
    max_event_bytes: Option<usize>,
    shutdown_timeout: Option<u64>,
    read_wait_ms: Option<u64>,
    nats_url: Option<String>,
    secret_key_file: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    issuer: Option<String>,
    password_min_length: Option<usize>,
    argon2_memory_kib: Option<u32>,
    argon2_iterations: Option<u32>,
    login_ip_failures: Option<u32>,
    trusted_proxies: Option<String>,
    decision_log: Option<String>,
    metrics_token: Option<String>,
    /// `[plans.free]`, `[plans.team]`, `[plans.enterprise]`: each replaces that plan's built-in
    /// tier (quotas, unit costs); a plan without a section keeps its built-in tier.
    plans: Option<custodian_app::plans::Plans>,
    rate_limits: Option<RateLimitsFile>,
    ledger: Option<LedgerFile>,
}

/// `[ledger]`: the signed checkpoints: `origin`, `checkpoint_events`, `checkpoint_seconds` (as the
/// flags `--ledger-origin`, `--checkpoint-events`, `--checkpoint-seconds`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerFile {
    origin: Option<String>,
    checkpoint_events: Option<u64>,
    checkpoint_seconds: Option<u64>,
}

/// `[rate_limits.free]`, `[rate_limits.team]`, `[rate_limits.enterprise]`: each plan's request
/// rates, each `tenant = { limit = 1200, window_seconds = 60 }` and `principal = { ... }`; a plan
/// not given keeps its defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitsFile {
    free: Option<RateTier>,
    team: Option<RateTier>,
    enterprise: Option<RateTier>,
}

/// Where the log lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// The embedded SQLite file.
    Sqlite(PathBuf),
    /// A database URL (PostgreSQL).
    Url(String),
}

impl StoreLocation {
    /// The string `custodian_store::open` takes.
    pub fn as_open_arg(&self) -> String {
        match self {
            Self::Sqlite(p) => p.display().to_string(),
            Self::Url(u) => u.clone(),
        }
    }

    /// Why a command that works on an existing ledger refuses to run here, naming the flags that
    /// select the ledger.
    pub fn no_ledger(&self) -> String {
        let (found, flag) = match self {
            Self::Sqlite(p) => (
                format!("no ledger at {}", p.display()),
                "name the server's data directory with --data-dir DIR, or its PostgreSQL database with --database-url URL",
            ),
            Self::Url(_) => (
                format!(
                    "no ledger in {} (the database does not exist or has no Custodian tables)",
                    self.redacted()
                ),
                "name the server's PostgreSQL database with --database-url URL, or its data directory with --data-dir DIR",
            ),
        };
        format!(
            "{found}: {flag} (or CUSTODIAN_DATA_DIR, CUSTODIAN_DATABASE_URL); only `custodian serve` and `custodian admin bootstrap` create a ledger"
        )
    }

    /// A description safe to log: any password in a URL is replaced by `***`.
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite(p) => format!("sqlite {}", p.display()),
            Self::Url(u) => redact_url(u),
        }
    }
}

fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_owned()
            };
            format!("{scheme}://{masked}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

/// The resolved configuration of a server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address.
    pub listen: SocketAddr,
    /// The log's location.
    pub store: StoreLocation,
    /// Log format.
    pub log_format: LogFormat,
    /// Largest accepted event body.
    pub max_event_bytes: usize,
    /// Grace period for in-flight requests at shutdown.
    pub shutdown_timeout: Duration,
    /// Longest wait of a read for `Custodian-Min-Position`.
    pub read_wait: Duration,
    /// Where to publish the event feed, if anywhere.
    pub nats_url: Option<String>,
    /// The master key's file.
    pub secret_key_file: PathBuf,
    /// The certificate chain and key to serve HTTPS with; plain HTTP when `None`.
    pub tls: Option<TlsFiles>,
    /// Access tokens' issuer and audience.
    pub issuer: String,
    /// Shortest accepted password of an account without a second factor.
    pub password_min_length: usize,
    /// argon2id memory cost, KiB.
    pub argon2_memory_kib: u32,
    /// argon2id iterations.
    pub argon2_iterations: u32,
    /// Failed logins per IP address before delays start.
    pub login_ip_failures: u32,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Which checks the decision log records.
    pub decision_log: custodian_app::authz::DecisionLogMode,
    /// The bearer token that may scrape `/metrics`.
    pub metrics_token: Option<String>,
    /// Request rates by plan.
    pub rate_tiers: RateTiers,
    /// What each plan entitles a tenant to.
    pub plans: custodian_app::plans::Plans,
    /// The signed checkpoints' origin and cadence.
    pub ledger: custodian_app::ledger::LedgerOptions,
}

/// The PEM files HTTPS is served with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// The certificate's private key.
    pub key: PathBuf,
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("invalid configuration file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A value is out of range.
    #[error("{0}")]
    Invalid(String),
}

impl FileConfig {
    /// Reads a TOML configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })
    }
}

impl Config {
    /// Resolves flags and environment (already merged by clap) over the file over the defaults.
    pub fn resolve(args: ServeArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        Self::merge(args, file)
    }

    /// Merges arguments over a file's settings over the defaults.
    pub fn merge(args: ServeArgs, file: FileConfig) -> Result<Self, ConfigError> {
        let listen = match args.listen.or(file.listen) {
            Some(a) => a,
            None => DEFAULT_LISTEN
                .parse()
                .map_err(|_| ConfigError::Invalid("bad default listen address".into()))?,
        };
        let data_dir = args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let store = match args.database_url.or(file.database_url) {
            Some(url) if !url.trim().is_empty() => StoreLocation::Url(url),
            _ => StoreLocation::Sqlite(data_dir.join(SQLITE_FILE)),
        };
        let secret_key_file = args
            .secret_key_file
            .or(file.secret_key_file)
            .unwrap_or_else(|| data_dir.join(SECRET_KEY_FILE));
        let password_min_length = args
            .password_min_length
            .or(file.password_min_length)
            .unwrap_or(15);
        if !(8..=64).contains(&password_min_length) {
            return Err(ConfigError::Invalid(format!(
                "password_min_length is {password_min_length}; it must be 8 to 64"
            )));
        }
        let argon2_memory_kib = args
            .argon2_memory_kib
            .or(file.argon2_memory_kib)
            .unwrap_or(19_456);
        let argon2_iterations = args
            .argon2_iterations
            .or(file.argon2_iterations)
            .unwrap_or(2);
        if argon2_memory_kib < 19_456 || argon2_iterations < 2 {
            return Err(ConfigError::Invalid(format!(
                "argon2id with m={argon2_memory_kib} KiB, t={argon2_iterations} is below OWASP's minimum (m=19456, t=2)"
            )));
        }
        let login_ip_failures = args
            .login_ip_failures
            .or(file.login_ip_failures)
            .unwrap_or(50);
        if login_ip_failures == 0 {
            return Err(ConfigError::Invalid(
                "login_ip_failures must be at least 1".into(),
            ));
        }
        let decision_log = match args.decision_log.or(file.decision_log) {
            Some(mode) => mode.parse().map_err(ConfigError::Invalid)?,
            None => custodian_app::authz::DecisionLogMode::All,
        };
        let tls = match (
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid(
                    "tls_cert and tls_key go together: give both to serve HTTPS, or neither".into(),
                ));
            }
        };
        let metrics_token = args.metrics_token.or(file.metrics_token);
        if metrics_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(ConfigError::Invalid(
                "metrics_token must be at least 16 characters".into(),
            ));
        }
        let mut rate_tiers = RateTiers::default();
        if let Some(given) = file.rate_limits {
            rate_tiers.free = given.free.unwrap_or(rate_tiers.free);
            rate_tiers.team = given.team.unwrap_or(rate_tiers.team);
            rate_tiers.enterprise = given.enterprise.unwrap_or(rate_tiers.enterprise);
        }
        rate_tiers.validate().map_err(ConfigError::Invalid)?;
        let trusted_proxies = parse_proxies(
            args.trusted_proxies
                .or(file.trusted_proxies)
                .as_deref()
                .unwrap_or_default(),
        )?;
        let max_event_bytes = args
            .max_event_bytes
            .or(file.max_event_bytes)
            .unwrap_or(custodian_store::DEFAULT_MAX_EVENT_BYTES);
        if max_event_bytes < 1024 {
            return Err(ConfigError::Invalid(format!(
                "max_event_bytes is {max_event_bytes}; it must be at least 1024"
            )));
        }
        let plans = file.plans.unwrap_or_default();
        plans.check().map_err(ConfigError::Invalid)?;
        let ledger_file = file.ledger.unwrap_or_default();
        let origin = args
            .ledger_origin
            .or(ledger_file.origin)
            .unwrap_or_else(|| custodian_app::ledger::DEFAULT_ORIGIN.to_owned());
        if origin.is_empty()
            || origin
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '+')
        {
            return Err(ConfigError::Invalid(format!(
                "ledger origin {origin:?} must be non-empty, without spaces or '+' (e.g. custodian.example.com/ledger)"
            )));
        }
        let ledger = custodian_app::ledger::LedgerOptions {
            origin,
            checkpoint_events: args
                .checkpoint_events
                .or(ledger_file.checkpoint_events)
                .unwrap_or(custodian_app::ledger::DEFAULT_CHECKPOINT_EVENTS),
            checkpoint_interval: Duration::from_secs(
                args.checkpoint_seconds
                    .or(ledger_file.checkpoint_seconds)
                    .unwrap_or(custodian_app::ledger::DEFAULT_CHECKPOINT_SECONDS),
            ),
        };
        Ok(Self {
            listen,
            store,
            log_format: args
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Pretty),
            max_event_bytes,
            shutdown_timeout: Duration::from_secs(
                args.shutdown_timeout
                    .or(file.shutdown_timeout)
                    .unwrap_or(30),
            ),
            read_wait: Duration::from_millis(
                args.read_wait_ms.or(file.read_wait_ms).unwrap_or(2000),
            ),
            nats_url: args
                .nats_url
                .or(file.nats_url)
                .filter(|u| !u.trim().is_empty()),
            secret_key_file,
            tls,
            issuer: args
                .issuer
                .or(file.issuer)
                .filter(|i| !i.trim().is_empty())
                .unwrap_or_else(|| "custodian".to_owned()),
            password_min_length,
            argon2_memory_kib,
            argon2_iterations,
            login_ip_failures,
            trusted_proxies,
            decision_log,
            metrics_token,
            rate_tiers,
            plans,
            ledger,
        })
    }
}

impl Config {
    /// The security services' options this configuration sets.
    pub fn security_options(&self) -> custodian_app::SecurityOptions {
        custodian_app::SecurityOptions {
            secret_key_file: self.secret_key_file.clone(),
            issuer: self.issuer.clone(),
            password_min_length: self.password_min_length,
            argon2: custodian_app::auth::password::Argon2Params {
                memory_kib: self.argon2_memory_kib,
                iterations: self.argon2_iterations,
                ..custodian_app::auth::password::Argon2Params::default()
            },
            login_ip_failures: self.login_ip_failures,
            index_wait: self.read_wait,
            trusted_proxies: self.trusted_proxies.clone(),
            decision_log: self.decision_log,
            metrics_token: self.metrics_token.clone(),
            rate_tiers: self.rate_tiers,
            plans: self.plans.clone(),
            ledger: self.ledger.clone(),
            snapshots: custodian_app::snapshot::SnapshotPolicy::default(),
        }
    }
}

/// Parses `10.0.0.0/8, 192.168.1.7, ::1`: networks, or single addresses as /32 or /128.
pub fn parse_proxies(list: &str) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    ConfigError::Invalid(format!(
                        "trusted_proxies: {s:?} is not an IP address or CIDR range"
                    ))
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(toml: &str) -> FileConfig {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn defaults_give_the_embedded_store_on_localhost() {
        let c = Config::merge(ServeArgs::default(), FileConfig::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(
            c.store,
            StoreLocation::Sqlite(PathBuf::from("custodian-data/custodian.db"))
        );
        assert_eq!(c.max_event_bytes, 256 * 1024);
        assert_eq!(c.log_format, LogFormat::Pretty);
    }

    #[test]
    fn tls_files_come_as_a_pair_from_flags_or_the_file() {
        let f = file(
            r#"
            tls_cert = "/etc/custodian/cert.pem"
            tls_key = "/etc/custodian/key.pem"
            "#,
        );
        let c = Config::merge(ServeArgs::default(), f).unwrap();
        assert_eq!(
            c.tls,
            Some(TlsFiles {
                cert: PathBuf::from("/etc/custodian/cert.pem"),
                key: PathBuf::from("/etc/custodian/key.pem"),
            })
        );
        let c = Config::merge(ServeArgs::default(), file("")).unwrap();
        assert_eq!(c.tls, None);
        let alone = ServeArgs {
            tls_cert: Some(PathBuf::from("cert.pem")),
            ..ServeArgs::default()
        };
        let err = Config::merge(alone, file("")).unwrap_err().to_string();
        assert!(err.contains("tls_cert and tls_key go together"), "{err}");
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let f = file(
            r#"
            listen = "0.0.0.0:9000"
            data_dir = "/var/lib/custodian"
            log_format = "json"
            max_event_bytes = 4096
            "#,
        );
        let args = ServeArgs {
            listen: Some("127.0.0.1:7000".parse().unwrap()),
            ..ServeArgs::default()
        };
        let c = Config::merge(args, f).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7000");
        assert_eq!(
            c.store,
            StoreLocation::Sqlite(PathBuf::from("/var/lib/custodian/custodian.db"))
        );
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.max_event_bytes, 4096);
    }

    #[test]
    fn a_plan_s_rate_limits_come_from_the_file_and_the_others_keep_their_defaults() {
        let f = file(
            r#"
            [rate_limits.team]
            tenant = { limit = 20000, window_seconds = 60 }
            principal = { limit = 50, window_seconds = 1 }
            "#,
        );
        let c = Config::merge(ServeArgs::default(), f).unwrap();
        let defaults = RateTiers::default();
        assert_eq!(c.rate_tiers.team.tenant.limit, 20_000);
        assert_eq!(c.rate_tiers.team.principal.window_seconds, 1);
        assert_eq!(c.rate_tiers.free, defaults.free);
        assert_eq!(c.rate_tiers.enterprise, defaults.enterprise);
        let zero = file(
            r#"
            [rate_limits.free]
            tenant = { limit = 0, window_seconds = 60 }
            principal = { limit = 5, window_seconds = 60 }
            "#,
        );
        let err = Config::merge(ServeArgs::default(), zero).unwrap_err();
        assert!(err.to_string().contains("plan free"), "{err}");
    }

    #[test]
    fn a_plans_section_replaces_that_plans_tier_only() {
        let f = file(
            r#"
            [plans.free.quotas]
            api_calls = { limit = 500, hard = true }
            [plans.free.unit_costs]
            api_calls = 2000
            "#,
        );
        let c = Config::merge(ServeArgs::default(), f).unwrap();
        let plans = c.security_options().plans;
        assert_eq!(plans.free.quotas["api_calls"].limit, 500);
        assert_eq!(plans.free.unit_costs["api_calls"], 2000);
        assert!(!plans.free.quotas.contains_key("events"));
        assert_eq!(plans.team, custodian_app::plans::Plans::default().team);
        let bad = file("[plans.team.quotas]\n\"Bad Meter\" = { limit = 1, hard = true }\n");
        assert!(Config::merge(ServeArgs::default(), bad).is_err());
    }

    #[test]
    fn checkpoints_default_to_1000_events_or_60_seconds_and_the_file_or_flags_change_them() {
        let c = Config::merge(ServeArgs::default(), FileConfig::default()).unwrap();
        assert_eq!(c.ledger.origin, "custodian.local/ledger");
        assert_eq!(c.ledger.checkpoint_events, 1000);
        assert_eq!(c.ledger.checkpoint_interval, Duration::from_secs(60));
        let f = file(
            r#"
            [ledger]
            origin = "id.example.com/ledger"
            checkpoint_events = 50
            checkpoint_seconds = 0
            "#,
        );
        let args = ServeArgs {
            checkpoint_events: Some(7),
            ..ServeArgs::default()
        };
        let c = Config::merge(args, f).unwrap();
        assert_eq!(c.ledger.origin, "id.example.com/ledger");
        assert_eq!(c.ledger.checkpoint_events, 7);
        assert!(c.ledger.checkpoint_interval.is_zero());
        assert_eq!(c.security_options().ledger, c.ledger);
        let bad = ServeArgs {
            ledger_origin: Some("my log".into()),
            ..ServeArgs::default()
        };
        let err = Config::merge(bad, FileConfig::default()).unwrap_err();
        assert!(err.to_string().contains("ledger origin"), "{err}");
    }

    #[test]
    fn a_database_url_selects_postgres() {
        let args = ServeArgs {
            database_url: Some("postgres://app:s3cret@db:5432/custodian".into()),
            data_dir: Some("ignored".into()),
            ..ServeArgs::default()
        };
        let c = Config::merge(args, FileConfig::default()).unwrap();
        assert_eq!(
            c.store,
            StoreLocation::Url("postgres://app:s3cret@db:5432/custodian".into())
        );
        assert_eq!(c.store.redacted(), "postgres://app:***@db:5432/custodian");
        assert!(!c.store.redacted().contains("s3cret"));
    }

    #[test]
    fn a_missing_ledger_names_the_flags_that_select_one() {
        for location in [
            StoreLocation::Sqlite(PathBuf::from("custodian-data/custodian.db")),
            StoreLocation::Url("postgres://app:s3cret@db/custodian".into()),
        ] {
            let message = location.no_ledger();
            assert!(message.contains("--data-dir"), "{message}");
            assert!(message.contains("--database-url"), "{message}");
            assert!(!message.contains("s3cret"), "{message}");
        }
    }

    #[test]
    fn trusted_proxies_are_addresses_or_ranges() {
        let proxies = parse_proxies(" 10.0.0.0/8, 192.168.1.7 ,::1").unwrap();
        assert_eq!(proxies.len(), 3);
        assert!(proxies[0].contains(&"10.1.2.3".parse::<std::net::IpAddr>().unwrap()));
        assert_eq!(proxies[1].to_string(), "192.168.1.7/32");
        assert_eq!(proxies[2].to_string(), "::1/128");
        assert!(parse_proxies("").unwrap().is_empty());
        let err = parse_proxies("10.0.0.0/8, proxy.internal").unwrap_err();
        assert!(err.to_string().contains("proxy.internal"), "{err}");
    }

    #[test]
    fn bad_files_and_values_are_clear_errors() {
        let err = toml::from_str::<FileConfig>("listne = \"x\"").unwrap_err();
        assert!(err.message().contains("unknown field"), "{err}");
        let args = ServeArgs {
            max_event_bytes: Some(10),
            ..ServeArgs::default()
        };
        let err = Config::merge(args, FileConfig::default()).unwrap_err();
        assert!(err.to_string().contains("at least 1024"), "{err}");
        let err = Config::resolve(ServeArgs {
            config: Some("/nonexistent/custodian.toml".into()),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/custodian.toml"),
            "{err}"
        );
    }
}
