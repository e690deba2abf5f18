//! The security services: the master key and what is derived from it, per-subject data keys,
//! passwords, TOTP, opaque tokens, access tokens, the in-memory index of who may act, and login
//! throttling. [`Security`] holds one of each for the running service.

pub mod index;
pub mod jwt;
pub mod password;
pub mod secrets;
pub mod throttle;
pub mod tokens;
pub mod totp;
pub mod vault;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use custodian_domain::secret::Sealed;
use custodian_domain::user::LockoutPolicy;
use sha2::Digest as _;

use crate::clock::Clock;
use crate::error::AppError;
use index::AuthIndex;
use jwt::TokenSigner;
use password::{Argon2Params, PasswordHasher, PasswordPolicy};
use secrets::{DataKey, Keyring};
use throttle::{EmailFromIpThrottle, EmailThrottle, IpThrottle};
use tokens::TokenHasher;
use vault::{Vault, VaultError};

/// Lifetimes of what the identity use cases hand out.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// A session's absolute lifetime (its refresh tokens die with it).
    pub session: time::Duration,
    /// An invitation's.
    pub invitation: time::Duration,
    /// A password reset token's.
    pub reset: time::Duration,
    /// An MFA challenge's.
    pub challenge: time::Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            session: time::Duration::days(30),
            invitation: time::Duration::days(7),
            reset: time::Duration::hours(1),
            challenge: time::Duration::minutes(5),
        }
    }
}

/// How to build the security services.
#[derive(Debug, Clone)]
pub struct SecurityOptions {
    /// The master key's file.
    pub secret_key_file: std::path::PathBuf,
    /// Access tokens' `iss` and `aud`, and the TOTP issuer.
    pub issuer: String,
    /// Shortest accepted password of an account that signs in with a password alone (accounts
    /// with TOTP enabled may use [`PasswordPolicy::MIN_LENGTH_WITH_SECOND_FACTOR`]).
    pub password_min_length: usize,
    /// argon2id parameters.
    pub argon2: Argon2Params,
    /// Failed logins per client address before delays start.
    pub login_ip_failures: u32,
    /// How long an authenticated request waits for the index to catch up.
    pub index_wait: std::time::Duration,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Which authorization checks the decision log records.
    pub decision_log: crate::authz::DecisionLogMode,
    /// The bearer token that may scrape the metrics without signing in.
    pub metrics_token: Option<String>,
    /// Request rates by plan.
    pub rate_tiers: crate::ratelimit::RateTiers,
    /// What each plan entitles a tenant to (quotas, unit costs).
    pub plans: crate::plans::Plans,
    /// The ledger's checkpoints: their origin and publishing cadence.
    pub ledger: crate::ledger::LedgerOptions,
    /// When the in-memory indexes write their snapshots.
    pub snapshots: crate::snapshot::SnapshotPolicy,
}

impl SecurityOptions {
    /// Defaults with the master key in `secret_key_file`.
    pub fn new(secret_key_file: std::path::PathBuf) -> Self {
        Self {
            secret_key_file,
            issuer: "custodian".to_owned(),
            password_min_length: 15,
            argon2: Argon2Params::default(),
            login_ip_failures: 50,
            index_wait: std::time::Duration::from_secs(2),
            trusted_proxies: Vec::new(),
            decision_log: crate::authz::DecisionLogMode::All,
            metrics_token: None,
            rate_tiers: crate::ratelimit::RateTiers::default(),
            plans: crate::plans::Plans::default(),
            ledger: crate::ledger::LedgerOptions::default(),
            snapshots: crate::snapshot::SnapshotPolicy::default(),
        }
    }
}

/// The security services of the running service.
#[derive(Debug)]
pub struct Security {
    /// The master key and its derived keys.
    pub keyring: Keyring,
    /// Per-user data keys.
    pub vault: Vault,
    /// argon2id on a bounded pool.
    pub hasher: PasswordHasher,
    /// What a password must be.
    pub policy: PasswordPolicy,
    /// Keyed hashes of opaque tokens.
    pub tokens: TokenHasher,
    /// Access tokens.
    pub signer: TokenSigner,
    /// Who may act right now.
    pub index: Arc<AuthIndex>,
    /// Where the in-memory indexes keep their snapshots.
    pub snapshots: crate::snapshot::Snapshots,
    /// Failed logins per client address, across every email (spraying).
    pub ip_throttle: IpThrottle,
    /// Failed logins per email of a tenant from one client address, whether the email names an
    /// account or not: the first limit.
    pub email_from_ip_throttle: EmailFromIpThrottle,
    /// Failed logins per email that matches no account, from every address: the account-wide
    /// limit of emails that are not accounts.
    pub email_throttle: EmailThrottle,
    /// The account-wide limit of accounts, kept by their events.
    pub lockout: LockoutPolicy,
    /// Token and session lifetimes.
    pub lifetimes: Lifetimes,
    /// The issuer named in TOTP enrollment URIs.
    pub issuer: String,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Request rates by plan.
    pub rate_tiers: crate::ratelimit::RateTiers,
    /// This node's rate-limit buckets.
    pub ratelimits: crate::ratelimit::RateLimiter,
    /// SHA-256 of the bearer token that may scrape the metrics.
    metrics_token: Option<[u8; 32]>,
    /// Unwrapped data keys of users who are not erased.
    key_cache: Mutex<HashMap<String, DataKey>>,
}

/// Most data keys kept unwrapped in memory.
const KEY_CACHE_ENTRIES: usize = 100_000;

impl Security {
    /// Whether `presented` is the configured metrics token (compared in constant time).
    pub fn is_metrics_token(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq as _;
        let digest: [u8; 32] = sha2::Sha256::digest(presented.as_bytes()).into();
        self.metrics_token
            .is_some_and(|t| bool::from(t.ct_eq(&digest)))
    }

    /// Loads the master key (creating it if missing), the signing keys (creating the first, made
    /// at the clock's time and not recorded on the log: see [`crate::signing`]), and starts the
    /// authentication index on `store`. Background tasks stop with `shutdown`.
    pub async fn start(
        options: SecurityOptions,
        db: custodian_projections::ViewDb,
        store: Arc<dyn custodian_store::EventStore>,
        clock: Arc<dyn Clock>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let keyring = Keyring::load_or_create(&options.secret_key_file)
            .context("cannot load the master key")?;
        let policy = PasswordPolicy {
            min_length: options.password_min_length,
            ..PasswordPolicy::default()
        };
        policy.validate().context("invalid password policy")?;
        let hasher = PasswordHasher::new(options.argon2).context("invalid argon2id parameters")?;
        let signer = TokenSigner::load(
            db.clone(),
            keyring.clone(),
            options.issuer.clone(),
            options.issuer.clone(),
            jwt::DEFAULT_ACCESS_TOKEN_TTL,
            clock.now(),
        )
        .await
        .context("cannot load the token signing keys")?;
        let snapshots = crate::snapshot::Snapshots::new(
            db.clone(),
            store.clone(),
            keyring.snapshot_key(),
            options.snapshots,
        );
        let index = AuthIndex::start(
            store,
            Some(snapshots.clone()),
            options.index_wait,
            clock.clone(),
            shutdown.clone(),
        );
        // Pick up signing keys rotated by another process (`custodian keys rotate-signing`).
        let reloading = signer.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
            tick.tick().await;
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => {
                        if let Err(e) = reloading.reload().await {
                            tracing::warn!(error = %e, "cannot reload the token signing keys");
                        }
                    }
                }
            }
        });
        let ip_policy = LockoutPolicy::ip(options.login_ip_failures);
        Ok(Self {
            vault: Vault::new(db, keyring.clone(), clock),
            tokens: TokenHasher::new(keyring.token_key()),
            keyring,
            hasher,
            policy,
            signer,
            index,
            snapshots,
            ip_throttle: IpThrottle::new(ip_policy),
            email_from_ip_throttle: EmailFromIpThrottle::new(LockoutPolicy::EMAIL_FROM_IP),
            // An account's count is of consecutive failures, forgotten only by a success; an
            // email that is no account has none, so its count is kept for a day.
            email_throttle: EmailThrottle::with_window(
                LockoutPolicy::ACCOUNT,
                time::Duration::days(1),
            ),
            lockout: LockoutPolicy::ACCOUNT,
            lifetimes: Lifetimes::default(),
            issuer: options.issuer,
            trusted_proxies: options.trusted_proxies,
            rate_tiers: options.rate_tiers,
            ratelimits: crate::ratelimit::RateLimiter::default(),
            metrics_token: options
                .metrics_token
                .as_deref()
                .map(|t| sha2::Sha256::digest(t.as_bytes()).into()),
            key_cache: Mutex::new(HashMap::new()),
        })
    }

    /// The data key of `subject`; `None` once erased.
    ///
    /// Unwrapped keys are kept in memory, so an authenticated read costs no database round trip;
    /// a key is dropped from memory as soon as the index has seen its user erased (by this
    /// process or another), and never served after that.
    pub async fn data_key(&self, subject: &str) -> Result<Option<DataKey>, AppError> {
        if self.index.is_erased(subject) {
            self.forget_key(subject);
            return Ok(None);
        }
        if let Some(key) = self
            .key_cache
            .lock()
            .ok()
            .and_then(|c| c.get(subject).cloned())
        {
            return Ok(Some(key));
        }
        let key = self.vault.get(subject).await.map_err(vault_error)?;
        if let Some(key) = &key
            && let Ok(mut cache) = self.key_cache.lock()
        {
            if cache.len() >= KEY_CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(subject.to_owned(), key.clone());
        }
        Ok(key)
    }

    /// Drops a subject's key from memory.
    pub fn forget_key(&self, subject: &str) {
        if let Ok(mut cache) = self.key_cache.lock() {
            cache.remove(subject);
        }
    }

    /// Opens a value sealed under `subject`'s key, as UTF-8 text.
    pub fn open_text(key: &DataKey, sealed: &Sealed, subject: &str) -> Result<String, AppError> {
        let bytes = secrets::open(key, sealed, subject.as_bytes()).map_err(|e| {
            AppError::internal(format!("cannot open sealed data of {subject}: {e}"))
        })?;
        String::from_utf8(bytes)
            .map_err(|_| AppError::internal(format!("sealed data of {subject} is not UTF-8")))
    }
}

/// A vault failure. A database that refuses (unreachable, or its disk full) is unavailable for
/// now and worth a retry, as the event store is; a key that does not unwrap or sits under another
/// tenant is the server's fault.
pub fn vault_error(e: VaultError) -> AppError {
    match e {
        VaultError::Database(db) => AppError::Unavailable {
            detail: "the data keys' database is unavailable".to_owned(),
            retry_after: 2,
            cause: Some(format!("data key vault: {db}")),
        },
        other => AppError::internal(format!("data key vault: {other}")),
    }
}
