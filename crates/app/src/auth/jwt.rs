//! Access tokens: short-lived JWTs signed with rotating Ed25519 keys, after RFC 9068 (JWT access
//! tokens) and RFC 8725 (JWT best practices).
//!
//! The signing keys live in `signing_keys`, their private halves wrapped under the master key's
//! signing-key wrap key (AES-256-GCM, the kid as associated data). The newest key signs; an older
//! key stays published in the JWKS, and accepted, until every token it may have signed has expired:
//! until its successor's creation plus the token lifetime plus 60 seconds.
//!
//! Verification pins the algorithm before anything else (only `EdDSA`: never `none`, never HMAC
//! keyed with a public key), requires `typ: at+jwt` and a published `kid`, checks the signature,
//! then `iss`, `aud`, `exp` and `nbf` (30 seconds of leeway) against a time the caller passes in.
//!
//! A token that passed every check is remembered, by the SHA-256 of the whole token (never the
//! token itself), in a bounded least-recently-used cache: presented again, it skips the header
//! parsing and the signature check, but its key must still be known and published and its `exp`
//! and `nbf` are checked again at the new time. What may have changed since (the session, the
//! user, the tenant) is not the token's business: callers check it on every request.

use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use custodian_domain::Timestamp;
use custodian_domain::secret::Sealed;
use custodian_projections::ViewDb;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use hashlink::LruCache;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use sqlx::Row;
use time::OffsetDateTime;

use super::secrets::{Keyring, open, seal};

/// The lifetime of an access token unless configured otherwise.
pub const DEFAULT_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

/// The longest lifetime an access token may be given: they are meant to be short-lived.
pub const MAX_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// The `typ` header of an access token (RFC 9068).
const TOKEN_TYPE: &str = "at+jwt";
/// Clock skew tolerated on `exp` and `nbf`, in seconds.
const CLAIM_LEEWAY_SECONDS: i64 = 30;
/// How long a retired key stays published beyond the last token it can have signed.
const PUBLISH_GRACE: time::Duration = time::Duration::seconds(60);
/// Fewest time between two reloads triggered by an unknown `kid`.
const RELOAD_INTERVAL: Duration = Duration::from_secs(5);
/// Longest token looked at; anything longer is not one of ours.
const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Most verified tokens remembered at once (about half a kilobyte each).
const VERIFIED_TOKENS: usize = 10_000;

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The issuer: this server's public URL.
    pub iss: String,
    /// The audience the token is meant for.
    pub aud: String,
    /// The user the token was issued to (a user id).
    pub sub: String,
    /// The tenant the user acts in.
    pub tenant: String,
    /// The session the token belongs to.
    pub sid: String,
    /// The user's roles in the tenant when the token was issued.
    pub roles: Vec<String>,
    /// Issued at, in seconds since the Unix epoch.
    pub iat: i64,
    /// Not valid before, in seconds since the Unix epoch.
    pub nbf: i64,
    /// Expires at, in seconds since the Unix epoch.
    pub exp: i64,
    /// A unique id for this token.
    pub jti: String,
}

/// Why a token cannot be issued or verified, or the signing keys cannot be loaded.
///
/// Messages say what is wrong and never echo the token or any key material.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// The token is not a well-formed JWS of ours.
    #[error("malformed access token: {0}")]
    Malformed(&'static str),
    /// The header names another algorithm than `EdDSA` (including `none` and HMAC).
    #[error("access token algorithm is not EdDSA")]
    Algorithm,
    /// The header's `typ` is not `at+jwt`.
    #[error("token is not an access token (typ is not at+jwt)")]
    Type,
    /// The header's `kid` names no key this server knows.
    #[error("access token signed by an unknown key")]
    UnknownKey,
    /// The token's key is known but no longer published: it is past its verify window.
    #[error("access token signed by a retired key")]
    RetiredKey,
    /// The signature does not match the header and claims.
    #[error("access token signature is invalid")]
    BadSignature,
    /// The token has expired.
    #[error("access token expired")]
    Expired,
    /// The token's `nbf` is still in the future.
    #[error("access token not valid yet")]
    NotYetValid,
    /// The token was issued by another issuer.
    #[error("access token has the wrong issuer")]
    WrongIssuer,
    /// The token is meant for another audience.
    #[error("access token has the wrong audience")]
    WrongAudience,
    /// The signing keys' database failed.
    #[error("signing keys database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored private key does not unwrap under this master key (another master key, or an
    /// altered row).
    #[error("signing key {kid} cannot be unwrapped with this master key")]
    KeyUnwrap {
        /// The key's id.
        kid: String,
    },
    /// A stored key is unusable.
    #[error("signing key {kid} is corrupt: {what}")]
    CorruptKey {
        /// The key's id.
        kid: String,
        /// What is wrong with it.
        what: &'static str,
    },
    /// The `signing_keys` table holds no key.
    #[error("there is no signing key")]
    NoSigningKey,
    /// The token lifetime is zero or longer than [`MAX_ACCESS_TOKEN_TTL`].
    #[error("the access token lifetime must be between 1 second and 24 hours")]
    Lifetime,
    /// Signing failed.
    #[error("cannot sign the access token")]
    Signing,
}

impl JwtError {
    /// True when the error is about the token a client presented (answer 401), false when it is
    /// the server's own failure (answer 500).
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            Self::Malformed(_)
                | Self::Algorithm
                | Self::Type
                | Self::UnknownKey
                | Self::RetiredKey
                | Self::BadSignature
                | Self::Expired
                | Self::NotYetValid
                | Self::WrongIssuer
                | Self::WrongAudience
        )
    }
}

/// One signing key, unwrapped.
struct KeyEntry {
    kid: String,
    created_at: OffsetDateTime,
    /// The public key as base64url without padding: the JWK's `x`.
    x: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// Every stored key, oldest first (by `created_at`, then `kid`); never empty.
struct KeySet {
    keys: Vec<KeyEntry>,
}

impl KeySet {
    fn signing(&self) -> Option<&KeyEntry> {
        self.keys.last()
    }

    /// The key named `kid`, with its place in the set.
    fn find(&self, kid: &str) -> Option<(usize, &KeyEntry)> {
        self.keys.iter().enumerate().find(|(_, k)| k.kid == kid)
    }

    /// True while the key at `index` may still have signed a token that has not expired.
    fn is_published(&self, index: usize, now: OffsetDateTime, ttl: time::Duration) -> bool {
        match self.keys.get(index + 1) {
            None => true,
            Some(successor) => successor
                .created_at
                .checked_add(ttl)
                .and_then(|t| t.checked_add(PUBLISH_GRACE))
                .is_none_or(|until| now <= until),
        }
    }
}

struct Shared {
    db: ViewDb,
    keyring: Keyring,
    issuer: String,
    audience: String,
    ttl: time::Duration,
    keys: RwLock<Arc<KeySet>>,
    last_reload: Mutex<Option<Instant>>,
    verified: VerifiedTokens,
}

/// Tokens whose signature, issuer and audience were verified, by the SHA-256 of the whole token,
/// with the key that signed them; at most `capacity`, the least recently presented evicted first.
struct VerifiedTokens {
    entries: Mutex<LruCache<[u8; 32], Verified>>,
}

/// What a verified token was found to say, and by which key.
#[derive(Clone)]
struct Verified {
    kid: String,
    /// The signing key's public half, so that a key replaced under the same kid does not vouch.
    x: String,
    claims: AccessClaims,
}

impl VerifiedTokens {
    fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(LruCache::new(capacity.max(1))),
        }
    }

    fn digest(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    fn get(&self, digest: &[u8; 32]) -> Option<Verified> {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(digest)
            .cloned()
    }

    fn insert(&self, digest: [u8; 32], verified: Verified) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(digest, verified);
    }

    fn remove(&self, digest: &[u8; 32]) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(digest);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Issues and verifies access tokens with the keys of `signing_keys`.
///
/// Cheap to clone; clones share the keys, so a [`reload`](Self::reload) through one is seen by all.
#[derive(Clone)]
pub struct TokenSigner {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("issuer", &self.shared.issuer)
            .field("audience", &self.shared.audience)
            .field("ttl", &self.shared.ttl)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// Loads every signing key from `db`, creating the first one, made at `now`, if there is none.
    ///
    /// Tokens are issued by `issuer` for `audience` and live `ttl` (see
    /// [`DEFAULT_ACCESS_TOKEN_TTL`]; at most [`MAX_ACCESS_TOKEN_TTL`]).
    pub async fn load(
        db: ViewDb,
        keyring: Keyring,
        issuer: String,
        audience: String,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Self, JwtError> {
        install_crypto_provider();
        if ttl.is_zero() || ttl > MAX_ACCESS_TOKEN_TTL {
            return Err(JwtError::Lifetime);
        }
        let ttl = time::Duration::try_from(ttl).map_err(|_| JwtError::Lifetime)?;
        let keys = match read_keys(&db, &keyring).await {
            Ok(keys) => keys,
            Err(JwtError::NoSigningKey) => {
                rotate(&db, &keyring, now).await?;
                read_keys(&db, &keyring).await?
            }
            Err(e) => return Err(e),
        };
        Ok(Self {
            shared: Arc::new(Shared {
                db,
                keyring,
                issuer,
                audience,
                ttl,
                keys: RwLock::new(Arc::new(keys)),
                last_reload: Mutex::new(None),
                verified: VerifiedTokens::new(VERIFIED_TOKENS),
            }),
        })
    }

    /// Re-reads `signing_keys`, so that a rotation made elsewhere (the CLI, another server
    /// process) is used for signing and accepted for verifying.
    pub async fn reload(&self) -> Result<(), JwtError> {
        let keys = read_keys(&self.shared.db, &self.shared.keyring).await?;
        *self
            .shared
            .keys
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
        Ok(())
    }

    /// Creates a new signing key made at `now`, which signs from now on, and reloads; returns its
    /// kid.
    pub async fn rotate(&self, now: Timestamp) -> Result<String, JwtError> {
        let kid = rotate(&self.shared.db, &self.shared.keyring, now).await?;
        self.reload().await?;
        Ok(kid)
    }

    /// The kid of the key that signs new tokens.
    pub fn signing_kid(&self) -> Option<String> {
        self.key_set().signing().map(|k| k.kid.clone())
    }

    /// How long an issued token lives.
    pub fn ttl(&self) -> Duration {
        self.shared.ttl.unsigned_abs()
    }

    /// Signs an access token for user `sub` in `tenant` and session `sid`, valid from `now` for
    /// the configured lifetime; returns the compact JWT and its claims.
    pub fn issue(
        &self,
        sub: &str,
        tenant: &str,
        sid: &str,
        roles: Vec<String>,
        now: OffsetDateTime,
    ) -> Result<(String, AccessClaims), JwtError> {
        let keys = self.key_set();
        let key = keys.signing().ok_or(JwtError::NoSigningKey)?;
        let expires = now.checked_add(self.shared.ttl).ok_or(JwtError::Lifetime)?;
        let claims = AccessClaims {
            iss: self.shared.issuer.clone(),
            aud: self.shared.audience.clone(),
            sub: sub.to_owned(),
            tenant: tenant.to_owned(),
            sid: sid.to_owned(),
            roles,
            iat: now.unix_timestamp(),
            nbf: now.unix_timestamp(),
            exp: expires.unix_timestamp(),
            jti: uuid::Uuid::now_v7().to_string(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(TOKEN_TYPE.to_owned());
        header.kid = Some(key.kid.clone());
        let token =
            jsonwebtoken::encode(&header, &claims, &key.encoding).map_err(|_| JwtError::Signing)?;
        Ok((token, claims))
    }

    /// Verifies an access token at time `now` and returns its claims.
    ///
    /// Refuses, in this order: anything that is not a compact JWS; any algorithm but `EdDSA`; a
    /// `typ` other than `at+jwt`; a `kid` that is unknown or no longer published; a bad signature;
    /// another issuer or audience; an expired or not yet valid token (30 s leeway).
    ///
    /// A token verified before (the very same bytes) is answered from memory after checking
    /// again that its key is published and that it is valid at `now`, with the same errors.
    pub fn verify(&self, token: &str, now: OffsetDateTime) -> Result<AccessClaims, JwtError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwtError::Malformed("the token is too long"));
        }
        let digest = VerifiedTokens::digest(token);
        let verified = &self.shared.verified;
        if let Some(seen) = verified.get(&digest) {
            let keys = self.key_set();
            if let Some((index, key)) = keys.find(&seen.kid)
                && key.x == seen.x
            {
                let checked = if keys.is_published(index, now, self.shared.ttl) {
                    check_times(&seen.claims, now)
                } else {
                    Err(JwtError::RetiredKey)
                };
                return match checked {
                    Ok(()) => Ok(seen.claims),
                    Err(e) => {
                        if matches!(e, JwtError::Expired | JwtError::RetiredKey) {
                            verified.remove(&digest);
                        }
                        Err(e)
                    }
                };
            }
            // The key it was verified with is gone: verify it from scratch.
            verified.remove(&digest);
        }
        let (kid, x, claims) = self.verify_fully(token, now)?;
        verified.insert(
            digest,
            Verified {
                kid,
                x,
                claims: claims.clone(),
            },
        );
        Ok(claims)
    }

    /// [`verify`](Self::verify) without memory: returns the kid and public key that verified the
    /// token, with its claims.
    fn verify_fully(
        &self,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<(String, String, AccessClaims), JwtError> {
        let kid = check_header(token)?;
        let keys = self.key_set();
        let (index, key) = keys.find(&kid).ok_or(JwtError::UnknownKey)?;
        if !keys.is_published(index, now, self.shared.ttl) {
            return Err(JwtError::RetiredKey);
        }

        // The signature only; the claims are checked below against the caller's `now`.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => JwtError::BadSignature,
                ErrorKind::InvalidAlgorithm => JwtError::Algorithm,
                ErrorKind::Json(_) => {
                    JwtError::Malformed("the claims are not those of an access token")
                }
                _ => JwtError::Malformed("the token cannot be decoded"),
            })?
            .claims;

        if claims.iss != self.shared.issuer {
            return Err(JwtError::WrongIssuer);
        }
        if claims.aud != self.shared.audience {
            return Err(JwtError::WrongAudience);
        }
        check_times(&claims, now)?;
        Ok((kid, key.x.clone(), claims))
    }

    /// Like [`verify`](Self::verify), but when the token's `kid` is unknown, reloads the keys
    /// (at most once every 5 seconds, so unknown kids cannot hammer the database) and tries again.
    pub async fn verify_or_reload(
        &self,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<AccessClaims, JwtError> {
        match self.verify(token, now) {
            Err(JwtError::UnknownKey) if self.may_reload() => {
                self.reload().await?;
                self.verify(token, now)
            }
            result => result,
        }
    }

    /// The JSON Web Key Set to publish at `/.well-known/jwks.json`: the signing key first, then
    /// every older key still within its verify window at `now`.
    pub fn jwks(&self, now: OffsetDateTime) -> serde_json::Value {
        let keys = self.key_set();
        let published: Vec<serde_json::Value> = keys
            .keys
            .iter()
            .enumerate()
            .rev()
            .filter(|(index, _)| keys.is_published(*index, now, self.shared.ttl))
            .map(|(_, key)| {
                json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": key.x,
                    "kid": key.kid,
                    "alg": "EdDSA",
                    "use": "sig",
                })
            })
            .collect();
        json!({ "keys": published })
    }

    fn key_set(&self) -> Arc<KeySet> {
        Arc::clone(
            &self
                .shared
                .keys
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Claims the right to reload now if the last reload triggered by a token is old enough.
    fn may_reload(&self) -> bool {
        let mut last = self
            .shared
            .last_reload
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < RELOAD_INTERVAL) {
            return false;
        }
        *last = Some(now);
        true
    }
}

/// Creates a new signing key in `db`, made at `created_at`, which signs once the signers have
/// reloaded; returns its kid.
///
/// Older keys are kept: they stay published until the tokens they signed have expired.
pub async fn rotate(
    db: &ViewDb,
    keyring: &Keyring,
    created_at: Timestamp,
) -> Result<String, JwtError> {
    let key = NewSigningKey::generate(keyring, created_at);
    key.store(db).await?;
    Ok(key.kid)
}

/// A signing key just made and not yet stored: its id, its public half and when it was made, with
/// the private half already wrapped under the master key (it is never held here in the clear).
pub struct NewSigningKey {
    /// The key id (`sk_` and 32 hex digits): the JWK's and the token headers' `kid`.
    pub kid: String,
    /// The public key as base64url without padding: the JWK's `x`.
    pub public_key: String,
    /// When it was made.
    pub created_at: Timestamp,
    wrapped: Sealed,
}

impl std::fmt::Debug for NewSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSigningKey")
            .field("kid", &self.kid)
            .field("public_key", &self.public_key)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

impl NewSigningKey {
    /// Makes a fresh Ed25519 key at `created_at`, its private half wrapped under `keyring`'s
    /// signing-key wrap key with the kid as associated data.
    pub fn generate(keyring: &Keyring, created_at: Timestamp) -> Self {
        let kid = format!("sk_{}", uuid::Uuid::now_v7().simple());
        let signing = SigningKey::generate(&mut OsRng);
        let wrapped = seal(
            keyring.signing_key_wrap_key(),
            signing.as_bytes(),
            kid.as_bytes(),
        );
        let public_key = URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes());
        Self {
            kid,
            public_key,
            created_at,
            wrapped,
        }
    }

    /// Stores the key in `signing_keys`, where signers find it at their next reload.
    pub async fn store(&self, db: &ViewDb) -> Result<(), JwtError> {
        sqlx::query(
            "INSERT INTO signing_keys (kid, created_at, private_wrapped, public_key) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&self.kid)
        .bind(self.created_at.to_string())
        .bind(&self.wrapped.0)
        .bind(&self.public_key)
        .execute(db.pool())
        .await?;
        Ok(())
    }
}

async fn read_keys(db: &ViewDb, keyring: &Keyring) -> Result<KeySet, JwtError> {
    let rows = sqlx::query("SELECT kid, created_at, private_wrapped, public_key FROM signing_keys")
        .fetch_all(db.pool())
        .await?;
    let mut keys = Vec::with_capacity(rows.len());
    for row in rows {
        let kid: String = row.try_get("kid")?;
        let corrupt = |what| JwtError::CorruptKey {
            kid: kid.clone(),
            what,
        };
        let created_at = Timestamp::parse(&row.try_get::<String, _>("created_at")?)
            .map_err(|_| corrupt("created_at is not a timestamp"))?
            .as_datetime();
        let seed = open(
            keyring.signing_key_wrap_key(),
            &Sealed(row.try_get("private_wrapped")?),
            kid.as_bytes(),
        )
        .map_err(|_| JwtError::KeyUnwrap { kid: kid.clone() })?;
        let seed: [u8; 32] = seed
            .as_slice()
            .try_into()
            .map_err(|_| corrupt("the private key is not 32 bytes"))?;
        let signing = SigningKey::from_bytes(&seed);
        let public = signing.verifying_key();
        let x: String = row.try_get("public_key")?;
        if x != URL_SAFE_NO_PAD.encode(public.as_bytes()) {
            return Err(corrupt("the public key does not match the private key"));
        }
        let der = signing
            .to_pkcs8_der()
            .map_err(|_| corrupt("the private key cannot be encoded"))?;
        keys.push(KeyEntry {
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            // The EdDSA verifiers take the raw 32-byte public key (as a JWK's `x` carries it).
            decoding: DecodingKey::from_ed_der(public.as_bytes()),
            kid,
            created_at,
            x,
        });
    }
    if keys.is_empty() {
        return Err(JwtError::NoSigningKey);
    }
    keys.sort_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)));
    Ok(KeySet { keys })
}

/// Refuses claims that are expired or not yet valid at `now`, with 30 seconds of leeway.
fn check_times(claims: &AccessClaims, now: OffsetDateTime) -> Result<(), JwtError> {
    let now = now.unix_timestamp();
    if now > claims.exp.saturating_add(CLAIM_LEEWAY_SECONDS) {
        return Err(JwtError::Expired);
    }
    if claims.nbf > now.saturating_add(CLAIM_LEEWAY_SECONDS) {
        return Err(JwtError::NotYetValid);
    }
    Ok(())
}

/// Checks the protected header before any key is looked up and returns its `kid`.
fn check_header(token: &str) -> Result<String, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed("the token is too long"));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed(
            "the token is not three dot-separated parts",
        ));
    };
    let header = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| JwtError::Malformed("the header is not base64url"))?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|_| JwtError::Malformed("the header is not a JSON object"))?;
    if header.get("alg").and_then(|v| v.as_str()) != Some("EdDSA") {
        return Err(JwtError::Algorithm);
    }
    let typ = header.get("typ").and_then(|v| v.as_str()).unwrap_or("");
    let typ = typ.strip_prefix("application/").unwrap_or(typ);
    if !typ.eq_ignore_ascii_case(TOKEN_TYPE) {
        return Err(JwtError::Type);
    }
    if header.contains_key("crit") {
        return Err(JwtError::Malformed("the header has critical extensions"));
    }
    match header.get("kid") {
        Some(serde_json::Value::String(kid)) => Ok(kid.clone()),
        _ => Err(JwtError::Malformed("the header has no kid")),
    }
}

/// Selects jsonwebtoken's RustCrypto backend once per process, explicitly rather than by its
/// feature detection, which panics if another crate ever enables a second backend.
fn install_crypto_provider() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        // An error means a provider is installed already, which is all this needs.
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    });
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    use time::macros::datetime;

    use super::*;
    use crate::auth::secrets::test_keyring;

    const ISSUER: &str = "https://id.example.com";
    const AUDIENCE: &str = "https://api.example.com";
    const TTL: Duration = DEFAULT_ACCESS_TOKEN_TTL;
    const T0: OffsetDateTime = datetime!(2030-01-01 0:00 UTC);

    struct Fixture {
        _dir: tempfile::TempDir,
        location: String,
        db: ViewDb,
        keyring: Keyring,
    }

    /// The wall clock, where a test does not care when a key was made.
    fn wall_clock() -> Timestamp {
        Timestamp::from_datetime(OffsetDateTime::now_utc())
    }

    async fn open_db(location: &str) -> ViewDb {
        custodian_store::open(location, custodian_store::StoreOptions::default())
            .await
            .unwrap();
        ViewDb::open(location).await.unwrap()
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let location = dir.path().join("log.db").to_str().unwrap().to_owned();
        let db = open_db(&location).await;
        Fixture {
            _dir: dir,
            location,
            db,
            keyring: test_keyring(),
        }
    }

    async fn signer_with(f: &Fixture, issuer: &str, audience: &str) -> TokenSigner {
        TokenSigner::load(
            f.db.clone(),
            f.keyring.clone(),
            issuer.to_owned(),
            audience.to_owned(),
            TTL,
            wall_clock(),
        )
        .await
        .unwrap()
    }

    /// A signer whose first key was created at `T0`.
    async fn signer_at_t0(f: &Fixture) -> TokenSigner {
        rotate(&f.db, &f.keyring, Timestamp::from_datetime(T0))
            .await
            .unwrap();
        signer_with(f, ISSUER, AUDIENCE).await
    }

    fn issue(signer: &TokenSigner, now: OffsetDateTime) -> (String, AccessClaims) {
        signer
            .issue("user_1", "tnt_a", "sess_1", vec!["admin".to_owned()], now)
            .unwrap()
    }

    fn header_of(token: &str) -> serde_json::Value {
        let header = token.split('.').next().unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap()
    }

    fn kids(jwks: &serde_json::Value) -> Vec<String> {
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Asserts the rejection and that its message does not echo the token.
    fn assert_rejected(
        signer: &TokenSigner,
        token: &str,
        now: OffsetDateTime,
        expected: fn(&JwtError) -> bool,
    ) {
        let err = signer.verify(token, now).unwrap_err();
        assert!(expected(&err), "unexpected error: {err:?}");
        assert!(err.is_rejection());
        let message = err.to_string();
        for part in token.split('.').filter(|p| p.len() > 8) {
            assert!(!message.contains(part), "{message}");
        }
    }

    fn forge(header: serde_json::Value, claims: &AccessClaims, signature: &str) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(serde_json::to_string(claims).unwrap()),
            signature
        )
    }

    #[tokio::test]
    async fn issued_token_verifies_to_the_same_claims() {
        let f = fixture().await;
        let signer = signer_with(&f, ISSUER, AUDIENCE).await;
        let now = OffsetDateTime::now_utc();
        let (token, claims) = issue(&signer, now);

        let header = header_of(&token);
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(header["typ"], "at+jwt");
        assert_eq!(header["kid"].as_str(), signer.signing_kid().as_deref());
        assert!(header["kid"].as_str().unwrap().starts_with("sk_"));

        assert_eq!(claims.iss, ISSUER);
        assert_eq!(claims.aud, AUDIENCE);
        assert_eq!(claims.exp - claims.iat, 15 * 60);
        assert_eq!(claims.nbf, claims.iat);
        assert_eq!(signer.verify(&token, now).unwrap(), claims);
        assert_eq!(
            signer.verify(&token, now + TTL).unwrap(),
            claims,
            "valid until exp"
        );
        let (_, other) = issue(&signer, now);
        assert_ne!(other.jti, claims.jti);
    }

    #[tokio::test]
    async fn tampered_or_malformed_tokens_are_rejected() {
        let f = fixture().await;
        let signer = signer_at_t0(&f).await;
        let (token, claims) = issue(&signer, T0);
        let parts: Vec<&str> = token.split('.').collect();

        let mut elevated = claims.clone();
        elevated.roles.push("owner".to_owned());
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(serde_json::to_string(&elevated).unwrap()),
            parts[2]
        );
        assert_rejected(&signer, &tampered, T0, |e| {
            matches!(e, JwtError::BadSignature)
        });

        let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        signature[0] ^= 1;
        let bad_signature = format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            URL_SAFE_NO_PAD.encode(signature)
        );
        assert_rejected(&signer, &bad_signature, T0, |e| {
            matches!(e, JwtError::BadSignature)
        });

        for malformed in [
            "",
            "abc",
            "a.b",
            "a.b.c.d",
            "!!!.b.c",
            &format!("{}.{}", parts[0], parts[1]),
            &format!("{token}.x"),
            &format!("{}.!!!.{}", parts[0], parts[2]),
        ] {
            assert!(
                matches!(
                    signer.verify(malformed, T0),
                    Err(JwtError::Malformed(_) | JwtError::BadSignature)
                ),
                "{malformed:?}"
            );
        }
        let huge = format!("{}.{}.{}", parts[0], "A".repeat(MAX_TOKEN_LEN), parts[2]);
        assert!(matches!(
            signer.verify(&huge, T0),
            Err(JwtError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn tokens_with_another_algorithm_or_type_are_rejected_before_any_key_lookup() {
        let f = fixture().await;
        let signer = signer_at_t0(&f).await;
        let (token, claims) = issue(&signer, T0);
        let kid = signer.signing_kid().unwrap();
        let keys = signer.key_set();
        let key = keys.signing().unwrap();
        let public = URL_SAFE_NO_PAD.decode(&key.x).unwrap();

        let none = forge(
            json!({"alg": "none", "typ": "at+jwt", "kid": kid}),
            &claims,
            "",
        );
        assert_rejected(&signer, &none, T0, |e| matches!(e, JwtError::Algorithm));
        let none_upper = forge(
            json!({"alg": "None", "typ": "at+jwt", "kid": kid}),
            &claims,
            "",
        );
        assert_rejected(&signer, &none_upper, T0, |e| {
            matches!(e, JwtError::Algorithm)
        });

        // HS256 keyed with the public key, in each form an attacker could find it.
        for secret in [
            public.clone(),
            key.x.clone().into_bytes(),
            URL_SAFE.encode(&public).into_bytes(),
        ] {
            let mut header = Header::new(Algorithm::HS256);
            header.typ = Some(TOKEN_TYPE.to_owned());
            header.kid = Some(kid.clone());
            let hs256 =
                jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&secret)).unwrap();
            assert_rejected(&signer, &hs256, T0, |e| matches!(e, JwtError::Algorithm));
        }

        let parts: Vec<&str> = token.split('.').collect();
        let signature = parts[2];
        for header in [
            json!({"typ": "at+jwt", "kid": kid}),
            json!({"alg": "RS256", "typ": "at+jwt", "kid": kid}),
            json!({"alg": "ES256", "typ": "at+jwt", "kid": kid}),
            json!({"alg": ["EdDSA"], "typ": "at+jwt", "kid": kid}),
        ] {
            let forged = forge(header, &claims, signature);
            assert_rejected(&signer, &forged, T0, |e| matches!(e, JwtError::Algorithm));
        }

        // A genuine EdDSA signature over a plain JWT (an ID token, say) is not an access token.
        let mut plain = Header::new(Algorithm::EdDSA);
        plain.kid = Some(kid.clone());
        let id_token = jsonwebtoken::encode(&plain, &claims, &key.encoding).unwrap();
        assert_rejected(&signer, &id_token, T0, |e| matches!(e, JwtError::Type));

        let mut unknown = Header::new(Algorithm::EdDSA);
        unknown.typ = Some("application/AT+JWT".to_owned());
        unknown.kid = Some("sk_unknown".to_owned());
        let unknown = jsonwebtoken::encode(&unknown, &claims, &key.encoding).unwrap();
        assert_rejected(&signer, &unknown, T0, |e| matches!(e, JwtError::UnknownKey));

        let no_kid = forge(json!({"alg": "EdDSA", "typ": "at+jwt"}), &claims, signature);
        assert_rejected(&signer, &no_kid, T0, |e| {
            matches!(e, JwtError::Malformed(_))
        });
        let crit = forge(
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid, "crit": ["exp"]}),
            &claims,
            signature,
        );
        assert_rejected(&signer, &crit, T0, |e| matches!(e, JwtError::Malformed(_)));
    }

    #[tokio::test]
    async fn wrong_issuer_audience_and_times_are_rejected() {
        let f = fixture().await;
        let signer = signer_at_t0(&f).await;
        let other_audience = signer_with(&f, ISSUER, "https://other.example.com").await;
        let other_issuer = signer_with(&f, "https://evil.example.com", AUDIENCE).await;

        let (token, claims) = issue(&other_audience, T0);
        assert_rejected(&signer, &token, T0, |e| {
            matches!(e, JwtError::WrongAudience)
        });
        let (token, _) = issue(&other_issuer, T0);
        assert_rejected(&signer, &token, T0, |e| matches!(e, JwtError::WrongIssuer));

        let (token, _) = issue(&signer, T0);
        let exp = OffsetDateTime::from_unix_timestamp(claims.exp).unwrap();
        assert!(signer.verify(&token, exp + Duration::from_secs(30)).is_ok());
        assert_rejected(&signer, &token, exp + Duration::from_secs(31), |e| {
            matches!(e, JwtError::Expired)
        });
        assert_rejected(&signer, &token, T0 + TTL + Duration::from_secs(120), |e| {
            matches!(e, JwtError::Expired)
        });
        assert!(signer.verify(&token, T0 - Duration::from_secs(30)).is_ok());
        assert_rejected(&signer, &token, T0 - Duration::from_secs(120), |e| {
            matches!(e, JwtError::NotYetValid)
        });
    }

    /// `signer` remembering at most `capacity` verified tokens.
    fn with_memory_of(mut signer: TokenSigner, capacity: usize) -> TokenSigner {
        Arc::get_mut(&mut signer.shared)
            .expect("a signer just loaded has no clones")
            .verified = VerifiedTokens::new(capacity);
        signer
    }

    #[tokio::test]
    async fn a_remembered_token_is_refused_once_expired_or_before_it_is_valid() {
        let f = fixture().await;
        let signer = signer_at_t0(&f).await;
        let (token, claims) = issue(&signer, T0);
        assert_eq!(signer.verify(&token, T0).unwrap(), claims);
        assert_eq!(signer.shared.verified.len(), 1, "remembered");

        let exp = OffsetDateTime::from_unix_timestamp(claims.exp).unwrap();
        assert_eq!(
            signer
                .verify(&token, exp + Duration::from_secs(30))
                .unwrap(),
            claims
        );
        assert_rejected(&signer, &token, T0 - Duration::from_secs(31), |e| {
            matches!(e, JwtError::NotYetValid)
        });
        assert_rejected(&signer, &token, exp + Duration::from_secs(31), |e| {
            matches!(e, JwtError::Expired)
        });
        assert_eq!(signer.shared.verified.len(), 0, "forgotten once expired");
        assert_rejected(&signer, &token, exp + Duration::from_secs(31), |e| {
            matches!(e, JwtError::Expired)
        });
    }

    #[tokio::test]
    async fn a_forged_signature_is_refused_though_the_same_claims_were_verified() {
        let f = fixture().await;
        let signer = signer_at_t0(&f).await;
        let (token, claims) = issue(&signer, T0);
        assert_eq!(signer.verify(&token, T0).unwrap(), claims);

        let parts: Vec<&str> = token.split('.').collect();
        let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        signature[63] ^= 0x80;
        let forged = [
            // The same header and claims with another signature, or none.
            format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                URL_SAFE_NO_PAD.encode(&signature)
            ),
            format!("{}.{}.", parts[0], parts[1]),
            // The same claims under a header that says the same in other bytes.
            forge(
                json!({"kid": signer.signing_kid().unwrap(), "alg": "EdDSA", "typ": "at+jwt"}),
                &claims,
                parts[2],
            ),
        ];
        for forged in &forged {
            for _ in 0..2 {
                assert!(
                    matches!(
                        signer.verify(forged, T0),
                        Err(JwtError::BadSignature | JwtError::Malformed(_))
                    ),
                    "{forged}"
                );
            }
        }
        assert_eq!(signer.shared.verified.len(), 1, "only the genuine token");
        assert_eq!(signer.verify(&token, T0).unwrap(), claims);
    }

    #[tokio::test]
    async fn remembered_tokens_stay_bounded_and_evicted_ones_verify_again() {
        let f = fixture().await;
        let signer = with_memory_of(signer_at_t0(&f).await, 8);
        let tokens: Vec<(String, AccessClaims)> = (0..100)
            .map(|i| {
                signer
                    .issue(
                        &format!("user_{i}"),
                        "tnt_a",
                        &format!("sess_{i}"),
                        vec![],
                        T0,
                    )
                    .unwrap()
            })
            .collect();
        for (token, claims) in &tokens {
            assert_eq!(&signer.verify(token, T0).unwrap(), claims);
            assert!(signer.shared.verified.len() <= 8);
        }
        assert_eq!(signer.shared.verified.len(), 8);
        for (token, claims) in tokens.iter().rev() {
            assert_eq!(&signer.verify(token, T0).unwrap(), claims);
        }
        assert_eq!(signer.shared.verified.len(), 8);
    }

    #[tokio::test]
    async fn rotated_keys_sign_new_tokens_while_old_ones_verify_until_their_window_ends() {
        let f = fixture().await;
        let signer = signer_at_t0(&f).await;
        let old_kid = signer.signing_kid().unwrap();
        let (old_token, old_claims) = issue(&signer, T0 + Duration::from_secs(60));

        let t1 = T0 + Duration::from_secs(300);
        let new_kid = rotate(&f.db, &f.keyring, Timestamp::from_datetime(t1))
            .await
            .unwrap();
        signer.reload().await.unwrap();
        assert_eq!(signer.signing_kid(), Some(new_kid.clone()));

        let (new_token, new_claims) = issue(&signer, t1);
        assert_eq!(header_of(&new_token)["kid"], new_kid.as_str());
        let soon = t1 + Duration::from_secs(60);
        assert_eq!(signer.verify(&old_token, soon).unwrap(), old_claims);
        assert_eq!(signer.verify(&new_token, soon).unwrap(), new_claims);

        let jwks = signer.jwks(soon);
        assert_eq!(kids(&jwks), vec![new_kid.clone(), old_kid.clone()]);
        for key in jwks["keys"].as_array().unwrap() {
            assert_eq!(key["kty"], "OKP");
            assert_eq!(key["crv"], "Ed25519");
            assert_eq!(key["alg"], "EdDSA");
            assert_eq!(key["use"], "sig");
            assert_eq!(
                URL_SAFE_NO_PAD
                    .decode(key["x"].as_str().unwrap())
                    .unwrap()
                    .len(),
                32
            );
        }

        let window_end = t1 + TTL + Duration::from_secs(60);
        assert_eq!(kids(&signer.jwks(window_end)).len(), 2);
        let past = window_end + Duration::from_secs(1);
        assert_eq!(kids(&signer.jwks(past)), vec![new_kid]);
        // Verified (and remembered) above, the old token is refused once its key retires.
        assert_eq!(signer.shared.verified.len(), 2);
        assert_rejected(&signer, &old_token, past, |e| {
            matches!(e, JwtError::RetiredKey)
        });
        assert!(signer.verify(&new_token, t1 + TTL).is_ok());
    }

    #[tokio::test]
    async fn reload_picks_up_a_rotation_made_by_another_signer() {
        let f = fixture().await;
        let a = signer_with(&f, ISSUER, AUDIENCE).await;
        // Another process: its own pool on the same database.
        let b_db = ViewDb::open(&f.location).await.unwrap();
        let b = TokenSigner::load(
            b_db,
            f.keyring.clone(),
            ISSUER.to_owned(),
            AUDIENCE.to_owned(),
            TTL,
            wall_clock(),
        )
        .await
        .unwrap();
        assert_eq!(a.signing_kid(), b.signing_kid(), "only one first key");

        let rotated = a.rotate(wall_clock()).await.unwrap();
        assert_eq!(a.signing_kid(), Some(rotated.clone()));
        let now = OffsetDateTime::now_utc();
        let (token, claims) = issue(&a, now);

        assert!(matches!(b.verify(&token, now), Err(JwtError::UnknownKey)));
        assert_eq!(b.verify_or_reload(&token, now).await.unwrap(), claims);
        assert_eq!(b.signing_kid(), Some(rotated));

        // A second unknown kid within 5 seconds does not reload again.
        a.rotate(wall_clock()).await.unwrap();
        let (token, _) = issue(&a, now);
        assert!(matches!(
            b.verify_or_reload(&token, now).await,
            Err(JwtError::UnknownKey)
        ));
        b.reload().await.unwrap();
        assert!(b.verify(&token, now).is_ok());
    }

    #[tokio::test]
    async fn private_keys_are_stored_wrapped_and_bound_to_their_kid() {
        let f = fixture().await;
        let signer = signer_with(&f, ISSUER, AUDIENCE).await;
        signer.rotate(wall_clock()).await.unwrap();

        let rows = sqlx::query("SELECT kid, private_wrapped, public_key FROM signing_keys")
            .fetch_all(f.db.pool())
            .await
            .unwrap();
        assert_eq!(rows.len(), 2);
        let mut wrapped_by_kid = Vec::new();
        for row in &rows {
            let kid: String = row.try_get("kid").unwrap();
            let wrapped: String = row.try_get("private_wrapped").unwrap();
            let public: String = row.try_get("public_key").unwrap();
            let seed = open(
                f.keyring.signing_key_wrap_key(),
                &Sealed(wrapped.clone()),
                kid.as_bytes(),
            )
            .unwrap();
            assert_eq!(seed.len(), 32);
            let der = SigningKey::from_bytes(&seed.clone().try_into().unwrap())
                .to_pkcs8_der()
                .unwrap();
            for text in [&wrapped, &public] {
                for form in [
                    STANDARD.encode(&seed),
                    URL_SAFE_NO_PAD.encode(&seed),
                    STANDARD.encode(der.as_bytes()),
                ] {
                    assert!(!text.contains(form.trim_end_matches('=')));
                }
            }
            let raw = URL_SAFE_NO_PAD.decode(&wrapped[3..]).unwrap();
            assert!(!raw.windows(32).any(|w| w == seed.as_slice()));
            wrapped_by_kid.push((kid, wrapped));
        }

        // Moved under another kid, a wrapped key does not open: loading fails loudly.
        sqlx::query("UPDATE signing_keys SET private_wrapped = $1 WHERE kid = $2")
            .bind(&wrapped_by_kid[0].1)
            .bind(&wrapped_by_kid[1].0)
            .execute(f.db.pool())
            .await
            .unwrap();
        assert!(matches!(
            signer.reload().await,
            Err(JwtError::KeyUnwrap { .. })
        ));
        // The signer keeps its keys.
        assert!(signer.signing_kid().is_some());

        // Another master key cannot load them either.
        let other = TokenSigner::load(
            f.db.clone(),
            test_keyring(),
            ISSUER.to_owned(),
            AUDIENCE.to_owned(),
            TTL,
            wall_clock(),
        )
        .await;
        assert!(matches!(other, Err(JwtError::KeyUnwrap { .. })));
    }

    #[tokio::test]
    async fn lifetime_must_be_short_and_nonzero() {
        let f = fixture().await;
        for ttl in [
            Duration::ZERO,
            MAX_ACCESS_TOKEN_TTL + Duration::from_secs(1),
        ] {
            let result = TokenSigner::load(
                f.db.clone(),
                f.keyring.clone(),
                ISSUER.to_owned(),
                AUDIENCE.to_owned(),
                ttl,
                wall_clock(),
            )
            .await;
            assert!(matches!(result, Err(JwtError::Lifetime)));
        }
    }

    #[tokio::test]
    async fn works_on_postgres() {
        let Some(url) = custodian_testkit::postgres::fresh_database().await else {
            return;
        };
        let db = open_db(&url).await;
        let keyring = test_keyring();
        let load = || {
            TokenSigner::load(
                db.clone(),
                keyring.clone(),
                ISSUER.to_owned(),
                AUDIENCE.to_owned(),
                TTL,
                wall_clock(),
            )
        };
        let a = load().await.unwrap();
        let b = load().await.unwrap();
        let now = OffsetDateTime::now_utc();
        let (old, _) = issue(&a, now);
        let kid = a.rotate(wall_clock()).await.unwrap();
        let (new, claims) = issue(&a, now);
        assert_eq!(header_of(&new)["kid"], kid.as_str());
        assert_eq!(b.verify_or_reload(&new, now).await.unwrap(), claims);
        assert!(b.verify(&old, now).is_ok());
        assert_eq!(kids(&b.jwks(now)).len(), 2);
    }
}
