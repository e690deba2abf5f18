//! What the identity endpoints share: the server's keys and the services built on them, the
//! authenticated principal of a request, and a JSON body extractor that answers bad input with
//! problem documents.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use custodian_domain::secret::Sealed;
use custodian_domain::user::{LockoutPolicy, ROLE_PLATFORM_ADMIN, ROLE_TENANT_ADMIN};
use custodian_domain::{Actor, ActorKind, StreamName, Timestamp};
use custodian_store::StoreError;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use crate::auth::index::{AuthIndex, IndexedUser, Refusal, SYSTEM_TENANT};
use crate::auth::jwt::TokenSigner;
use crate::auth::password::{PasswordHasher, PasswordPolicy};
use crate::auth::secrets::{self, DataKey, Keyring};
use crate::auth::throttle::{EmailThrottle, IpThrottle};
use crate::auth::tokens::TokenHasher;
use crate::auth::vault::{Vault, VaultError};
use crate::commands::{Context, Failed};
use crate::problem::Problem;
use crate::server::AppState;

/// Lifetimes of what the identity endpoints hand out.
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

/// The identity services every handler can reach.
#[derive(Debug)]
pub struct Identity {
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
    /// Failed logins per client address.
    pub ip_throttle: IpThrottle,
    /// Failed logins per unknown email.
    pub email_throttle: EmailThrottle,
    /// Account lockout after failed logins.
    pub lockout: LockoutPolicy,
    /// Token and session lifetimes.
    pub lifetimes: Lifetimes,
    /// The issuer named in TOTP enrollment URIs.
    pub issuer: String,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Unwrapped data keys of users who are not erased.
    key_cache: std::sync::Mutex<std::collections::HashMap<String, DataKey>>,
}

/// Most data keys kept unwrapped in memory.
const KEY_CACHE_ENTRIES: usize = 100_000;

impl Identity {
    /// The data key of `subject`; `None` once erased.
    ///
    /// Unwrapped keys are kept in memory, so an authenticated read costs no database round trip;
    /// a key is dropped from memory as soon as the index has seen its user erased (by this
    /// process or another), and never served after that.
    pub async fn data_key(&self, subject: &str) -> Result<Option<DataKey>, Problem> {
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
        let key = self.vault.get(subject).await.map_err(vault_problem)?;
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

    /// Opens a value sealed under `subject`'s key, as UTF-8 text; `None` when the key is gone.
    pub fn open_text(key: &DataKey, sealed: &Sealed, subject: &str) -> Result<String, Problem> {
        let bytes = secrets::open(key, sealed, subject.as_bytes())
            .map_err(|e| Problem::internal(format!("cannot open sealed data of {subject}: {e}")))?;
        String::from_utf8(bytes)
            .map_err(|_| Problem::internal(format!("sealed data of {subject} is not UTF-8")))
    }
}

/// Maps a vault failure to a problem.
pub fn vault_problem(e: VaultError) -> Problem {
    Problem::internal(format!("data key vault: {e}"))
}

/// Maps a store failure inside a command to a problem.
pub fn command_problem<X>(e: Failed<X>, refused: impl FnOnce(X) -> Problem) -> Problem {
    match e {
        Failed::Refused(x) => refused(x),
        Failed::Store(e) => Problem::from(e),
    }
}

/// A stream name built from validated parts; a failure is a bug, reported as one.
pub fn stream(tenant: &str, aggregate: &str, id: &str) -> Result<StreamName, Problem> {
    StreamName::new(tenant, aggregate, id)
        .map_err(|e| Problem::internal(format!("cannot name a stream: {e}")))
}

/// The current time as the log writes it.
pub fn now() -> Timestamp {
    Timestamp::from_datetime(OffsetDateTime::now_utc())
}

/// The request's client address: the TCP peer, or, when the peer is a trusted proxy, the last
/// address of `X-Forwarded-For` that is not a trusted proxy.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let forwarded: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        Ok(Self(peer.map(|peer| {
            client_address(peer, &forwarded, &state.identity.trusted_proxies)
        })))
    }
}

/// Who the client is, given the TCP `peer`, the `X-Forwarded-For` header values in order, and the
/// trusted proxies. Only a trusted peer's header is believed; it is read from the right (each
/// proxy appends the address it received from), skipping trusted proxies, and the first other
/// address is the client. A malformed entry stops the walk at the last address believed.
pub fn client_address(peer: IpAddr, forwarded: &[&str], trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    for entry in forwarded.iter().rev().flat_map(|v| v.rsplit(',')) {
        let Ok(ip) = entry.trim().parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// The request's `User-Agent`, truncated to 512 bytes on a character boundary.
pub fn user_agent(parts: &axum::http::HeaderMap) -> Option<String> {
    let ua = parts.get(header::USER_AGENT)?.to_str().ok()?;
    let mut end = ua.len().min(512);
    while !ua.is_char_boundary(end) {
        end -= 1;
    }
    Some(ua.get(..end)?.to_owned())
}

/// The authenticated caller: a verified access token whose session, user and tenant may act now.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The user.
    pub user_id: String,
    /// Their tenant (`_system` for platform administrators).
    pub tenant: String,
    /// The session the token belongs to.
    pub session_id: String,
    /// The user as the index knows them now (roles included).
    pub user: IndexedUser,
}

impl Principal {
    /// The actor written on events this caller causes.
    pub fn actor(&self) -> Actor {
        Actor {
            kind: ActorKind::User,
            id: self.user_id.clone(),
        }
    }

    /// A command context for this caller at `now`.
    pub fn context(&self, now: Timestamp) -> Context {
        Context {
            actor: self.actor(),
            now,
            correlation_id: None,
        }
    }

    /// Whether this caller administers the platform.
    pub fn is_platform_admin(&self) -> bool {
        self.tenant == SYSTEM_TENANT && self.user.roles.iter().any(|r| r == ROLE_PLATFORM_ADMIN)
    }

    /// Lets platform administrators and `tenant`'s administrators through. Anyone else of
    /// `tenant` is refused with 403; anyone of another tenant is told the tenant does not exist
    /// (existence does not leak across tenants).
    pub fn require_admin_of(&self, tenant: &str) -> Result<(), Problem> {
        if self.is_platform_admin() {
            return Ok(());
        }
        if self.tenant != tenant {
            return Err(Problem::not_found(format!("no tenant {tenant}")));
        }
        if self.user.roles.iter().any(|r| r == ROLE_TENANT_ADMIN) {
            Ok(())
        } else {
            Err(Problem::forbidden(
                "this needs the tenant_admin role in the tenant",
            ))
        }
    }

    /// Lets platform administrators through only.
    pub fn require_platform_admin(&self) -> Result<(), Problem> {
        if self.is_platform_admin() {
            Ok(())
        } else {
            Err(Problem::forbidden("this needs a platform administrator"))
        }
    }
}

fn refusal_problem(r: Refusal) -> Problem {
    match r {
        Refusal::Behind => Problem::unavailable("the server is catching up with the log", 1),
        r => Problem::unauthenticated(r.to_string()),
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| Problem::unauthenticated("send Authorization: Bearer <access token>"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| {
                Problem::unauthenticated("the Authorization header must be `Bearer <access token>`")
            })?;
        let identity = &state.identity;
        let claims = identity
            .signer
            .verify_or_reload(token, OffsetDateTime::now_utc())
            .await
            .map_err(|e| {
                if e.is_rejection() {
                    Problem::unauthenticated(format!("the access token is not valid: {e}"))
                } else {
                    Problem::internal(format!("cannot verify an access token: {e}"))
                }
            })?;
        identity.index.catch_up().await.map_err(refusal_problem)?;
        let user = identity
            .index
            .check(&claims.tenant, &claims.sub, &claims.sid, now())
            .map_err(refusal_problem)?;
        Ok(Self {
            user_id: claims.sub,
            tenant: claims.tenant,
            session_id: claims.sid,
            user,
        })
    }
}

/// A JSON request body whose every rejection is a problem document: malformed JSON is 400, a body
/// of the wrong shape (missing field, wrong type, unknown field) is 422, a body that is too large is
/// 413, a missing `Content-Type: application/json` is 415.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(json_problem(rejection)),
        }
    }
}

fn json_problem(rejection: JsonRejection) -> Problem {
    match rejection {
        JsonRejection::JsonDataError(e) => Problem::validation(format!(
            "the JSON body does not have the expected fields: {}",
            e.body_text()
                .trim_start_matches("Failed to deserialize the JSON body into the target type: ")
        )),
        JsonRejection::JsonSyntaxError(e) => Problem::bad_request(format!(
            "the body is not valid JSON: {}",
            e.body_text()
                .trim_start_matches("Failed to parse the request body as JSON: ")
        )),
        JsonRejection::MissingJsonContentType(_) => Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Unsupported media type",
            "send the body as JSON with Content-Type: application/json",
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Payload too large",
                format!("the body is larger than {MAX_BODY_BYTES} bytes"),
            )
        }
        other => Problem::bad_request(format!("cannot read the body: {}", other.body_text())),
    }
}

/// The largest JSON body the identity endpoints read.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A store failure as a problem (for `?` on store calls in handlers).
pub fn store_problem(e: StoreError) -> Problem {
    Problem::from(e)
}

/// Checks a string field's length in characters; a 422 names the field.
pub fn check_len(field: &str, value: &str, min: usize, max: usize) -> Result<(), Problem> {
    let n = value.chars().count();
    if n < min || n > max {
        return Err(Problem::validation(format!(
            "{field} must be {min} to {max} characters (got {n})"
        )));
    }
    Ok(())
}

/// Validates and normalizes an email address: trimmed, at most 254 characters, RFC 5321 syntax;
/// the domain part is lowercased (the local part is kept as given, but matching is
/// case-insensitive through the blind index).
pub fn normalize_email(email: &str) -> Result<String, Problem> {
    let email = email.trim();
    check_len("email", email, 3, 254)?;
    let parsed = email_address::EmailAddress::parse_with_options(
        email,
        email_address::Options::default().without_display_text(),
    )
    .map_err(|e| Problem::validation(format!("email is not a valid address: {e}")))?;
    Ok(format!(
        "{}@{}",
        parsed.local_part(),
        parsed.domain().to_ascii_lowercase()
    ))
}

/// Validates a tenant slug as given in a path or body; an invalid one cannot exist, so it is 404
/// in paths (`as_path`) and 422 in bodies.
pub fn check_tenant(tenant: &str, as_path: bool) -> Result<(), Problem> {
    let ok = tenant == SYSTEM_TENANT || {
        let mut chars = tenant.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
            && (2..=63).contains(&tenant.len())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    match (ok, as_path) {
        (true, _) => Ok(()),
        (false, true) => Err(Problem::not_found(format!("no tenant {tenant:.64}"))),
        (false, false) => Err(Problem::validation(
            "tenant must be a tenant's slug: 2 to 63 characters of a-z, 0-9 and '-'",
        )),
    }
}

/// How to build the identity services.
#[derive(Debug, Clone)]
pub struct IdentityOptions {
    /// The master key's file.
    pub secret_key_file: std::path::PathBuf,
    /// Access tokens' `iss` and `aud`, and the TOTP issuer.
    pub issuer: String,
    /// Shortest accepted password.
    pub password_min_length: usize,
    /// argon2id parameters.
    pub argon2: crate::auth::password::Argon2Params,
    /// Failed logins per client address before delays start.
    pub login_ip_failures: u32,
    /// How long an authenticated request waits for the index to catch up.
    pub index_wait: std::time::Duration,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl IdentityOptions {
    /// Defaults with the master key in `secret_key_file`.
    pub fn new(secret_key_file: std::path::PathBuf) -> Self {
        Self {
            secret_key_file,
            issuer: "custodian".to_owned(),
            password_min_length: 8,
            argon2: crate::auth::password::Argon2Params::default(),
            login_ip_failures: 50,
            index_wait: std::time::Duration::from_secs(2),
            trusted_proxies: Vec::new(),
        }
    }

    /// From the server's configuration.
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            secret_key_file: config.secret_key_file.clone(),
            issuer: config.issuer.clone(),
            password_min_length: config.password_min_length,
            argon2: crate::auth::password::Argon2Params {
                memory_kib: config.argon2_memory_kib,
                iterations: config.argon2_iterations,
                ..crate::auth::password::Argon2Params::default()
            },
            login_ip_failures: config.login_ip_failures,
            index_wait: config.read_wait,
            trusted_proxies: config.trusted_proxies.clone(),
        }
    }
}

impl Identity {
    /// Loads the master key (creating it if missing), the signing keys (creating the first), and
    /// starts the authentication index on `store`.
    pub async fn start(
        options: IdentityOptions,
        db: custodian_projections::ViewDb,
        store: Arc<dyn custodian_store::EventStore>,
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
            crate::auth::jwt::DEFAULT_ACCESS_TOKEN_TTL,
        )
        .await
        .context("cannot load the token signing keys")?;
        let index = AuthIndex::start(store, options.index_wait, shutdown.clone());
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
        let ip_policy = LockoutPolicy {
            threshold: options.login_ip_failures,
            ..LockoutPolicy::default()
        };
        Ok(Self {
            vault: Vault::new(db, keyring.clone()),
            tokens: TokenHasher::new(keyring.token_key()),
            keyring,
            hasher,
            policy,
            signer,
            index,
            ip_throttle: IpThrottle::new(ip_policy),
            email_throttle: EmailThrottle::new(LockoutPolicy::default()),
            lockout: LockoutPolicy::default(),
            lifetimes: Lifetimes::default(),
            issuer: options.issuer,
            trusted_proxies: options.trusted_proxies,
            key_cache: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_a_trusted_proxy_is_believed_about_the_client() {
        let trusted = crate::config::parse_proxies("10.0.0.0/8").unwrap();
        // An untrusted peer's header is ignored: it could say anything.
        assert_eq!(
            client_address(ip("203.0.113.5"), &["198.51.100.1"], &trusted),
            ip("203.0.113.5")
        );
        // Behind one trusted proxy: the address it received from.
        assert_eq!(
            client_address(ip("10.0.0.2"), &["198.51.100.1"], &trusted),
            ip("198.51.100.1")
        );
        // A client cannot hide behind an address it writes itself: the walk stops at the first
        // untrusted address from the right.
        assert_eq!(
            client_address(
                ip("10.0.0.2"),
                &["1.2.3.4, 198.51.100.1", "10.0.0.9"],
                &trusted
            ),
            ip("198.51.100.1")
        );
        // All trusted, or nothing forwarded: the leftmost address believed, or the peer.
        assert_eq!(
            client_address(ip("10.0.0.2"), &["10.0.0.7"], &trusted),
            ip("10.0.0.7")
        );
        assert_eq!(
            client_address(ip("10.0.0.2"), &[], &trusted),
            ip("10.0.0.2")
        );
        // Garbage stops the walk at the last address believed.
        assert_eq!(
            client_address(ip("10.0.0.2"), &["198.51.100.1, junk"], &trusted),
            ip("10.0.0.2")
        );
        // No trusted proxies: the peer, always.
        assert_eq!(
            client_address(ip("10.0.0.2"), &["198.51.100.1"], &[]),
            ip("10.0.0.2")
        );
    }
}
