//! API keys: issuing, listing, changing, rotating and revoking them, verifying them for other
//! services ([`verify`]), and authenticating callers who present one ([`verify::authenticate`]).
//!
//! A key is shown in full once, in the answer that made it (issue or rotation). The log, the
//! views and the index hold only its keyed hash (HMAC-SHA-256 under a key derived from the master
//! key for API keys alone) and its preview. A key is a principal: it acts for its owner, limited
//! to its scopes, so what it may do is its scopes ∩ what its owner holds now.

pub mod index;
pub mod usage;
pub mod verify;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use custodian_domain::Timestamp;
use custodian_domain::id::{is_type_id, type_id};
use custodian_domain::key::{self as domain, KeyCommand, KeyError, RateLimit, Refill, UsageLimit};
use custodian_domain::policy::{Permission, Resource, Scope, Target};
use custodian_domain::secret::TokenHash;
use custodian_projections::keys as view;
use custodian_store::EventStore;
use ipnet::IpNet;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::access::{self, Principal, authorize};
use crate::auth::secrets::Keyring;
use crate::auth::tokens::TokenHasher;
use crate::clock::Clock;
use crate::commands;
use crate::error::AppError;
use crate::validate::{parse_permission, parse_resource, parse_time};
use crate::{App, stream};

pub use index::{KeyEntry, KeyIndex};
pub use usage::UsageRecorder;
pub use verify::{Verification, VerifyCode, VerifyRequest};

/// The running key services: the index, the usage recorder and the keys' hasher.
#[derive(Debug)]
pub struct Keys {
    /// Every key by the hash of its secret, with its usage counters.
    pub index: Arc<KeyIndex>,
    /// Appends `key.used` per key per minute, and at shutdown.
    pub recorder: Arc<UsageRecorder>,
    hasher: TokenHasher,
}

impl Keys {
    /// Starts the index and the recorder on `store`; both stop with `shutdown` (the recorder after
    /// recording every open window).
    pub fn start(
        store: Arc<dyn EventStore>,
        snapshots: Option<crate::snapshot::Snapshots>,
        keyring: &Keyring,
        clock: Arc<dyn Clock>,
        wait: Duration,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let index = KeyIndex::start(
            store.clone(),
            snapshots,
            wait,
            clock.clone(),
            shutdown.clone(),
        );
        let recorder = UsageRecorder::start(store, index.clone(), clock, shutdown);
        Arc::new(Self {
            index,
            recorder,
            hasher: TokenHasher::new(keyring.api_key_key()),
        })
    }

    /// The keyed hash a key is stored and looked up under.
    pub fn hash(&self, key: &str) -> TokenHash {
        self.hasher.hash(key)
    }

    /// Waits until the recorder has written the usage open at shutdown.
    pub async fn stopped(&self) {
        self.recorder.stopped().await;
    }
}

/// A new key: `cst_` + 30 base62 characters drawn uniformly from the operating system's
/// generator + their checksum.
pub fn generate() -> String {
    let mut pool = [0u8; 64];
    let mut used = pool.len();
    let random = domain::random_part(|| {
        if used == pool.len() {
            rand::rngs::OsRng.fill_bytes(&mut pool);
            used = 0;
        }
        let b = pool.get(used).copied().unwrap_or(0);
        used += 1;
        b
    });
    // 30 base62 characters always assemble.
    domain::assemble(&random).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Shapes of requests and answers.

/// A key's own rate limit: `limit` requests per `window_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitBody {
    /// Requests per window (at least 1).
    #[schema(example = 100)]
    pub limit: u64,
    /// The window in seconds (1-86400).
    #[schema(example = 60)]
    pub window_seconds: u64,
}

/// Refilling a usage limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefillBody {
    /// `remaining` is set back to this...
    pub amount: u64,
    /// ...every this many seconds since the limit was set.
    pub interval_seconds: u64,
}

/// Units a key may still use; each valid verification takes its `cost` (default 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageLimitBody {
    /// Units left.
    #[schema(example = 1000)]
    pub remaining: u64,
    /// Optional periodic refill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refill: Option<RefillBody>,
}

impl From<RateLimitBody> for RateLimit {
    fn from(r: RateLimitBody) -> Self {
        Self {
            limit: r.limit,
            window_seconds: r.window_seconds,
        }
    }
}

impl From<RateLimit> for RateLimitBody {
    fn from(r: RateLimit) -> Self {
        Self {
            limit: r.limit,
            window_seconds: r.window_seconds,
        }
    }
}

impl From<UsageLimitBody> for UsageLimit {
    fn from(u: UsageLimitBody) -> Self {
        Self {
            remaining: u.remaining,
            refill: u.refill.map(|r| Refill {
                amount: r.amount,
                interval_seconds: r.interval_seconds,
            }),
        }
    }
}

impl From<UsageLimit> for UsageLimitBody {
    fn from(u: UsageLimit) -> Self {
        Self {
            remaining: u.remaining,
            refill: u.refill.map(|r| RefillBody {
                amount: r.amount,
                interval_seconds: r.interval_seconds,
            }),
        }
    }
}

/// What a key's scopes cover: `{"resource": "type/id"}`, `{"resource_type": t}` or
/// `{"group": g}`, as for grants. Absent: the whole tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum KeyScopeBody {
    /// One resource, `type/id`.
    #[schema(example = "project/p42")]
    Resource(String),
    /// Every resource of a type.
    ResourceType(String),
    /// Every member of a resource group.
    Group(String),
}

impl KeyScopeBody {
    fn parse(self) -> Result<Scope, AppError> {
        let name = |field: &str, s: String| {
            if custodian_domain::policy::vocabulary::is_name(&s) {
                Ok(s)
            } else {
                Err(AppError::invalid(format!(
                    "{field}: {s:.64?} must be 1-63 of a-z, 0-9, _ and -, starting with a letter"
                )))
            }
        };
        Ok(match self {
            Self::Resource(r) => Scope::Resource(parse_resource("on.resource", &r)?),
            Self::ResourceType(t) => Scope::ResourceType(name("on.resource_type", t)?),
            Self::Group(g) => Scope::Group(name("on.group", g)?),
        })
    }
}

impl From<&Scope> for KeyScopeBody {
    fn from(s: &Scope) -> Self {
        match s {
            Scope::Resource(r) => Self::Resource(r.to_string()),
            Scope::ResourceType(t) => Self::ResourceType(t.clone()),
            Scope::Group(g) => Self::Group(g.clone()),
        }
    }
}

/// `POST /v1/tenants/{tenant}/keys`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// A name people know the key by.
    #[schema(example = "deploy bot")]
    pub name: String,
    /// The user of the tenant the key acts for; the caller when absent.
    #[serde(default)]
    pub owner: Option<String>,
    /// Catalog permissions the key may use; each must be held by the caller on `on`.
    #[schema(example = json!(["project:read", "key:verify"]))]
    pub scopes: Vec<String>,
    /// What the scopes cover; the whole tenant when absent.
    #[serde(default)]
    pub on: Option<KeyScopeBody>,
    /// The key answers `EXPIRED` from this instant on (RFC 3339).
    #[serde(default)]
    pub expires_at: Option<String>,
    /// CIDR ranges (or single addresses) the key may be presented from; any when absent.
    #[serde(default)]
    #[schema(example = json!(["10.0.0.0/8"]))]
    pub ip_allowlist: Option<Vec<String>>,
    /// The key's own rate limit.
    #[serde(default)]
    pub ratelimit: Option<RateLimitBody>,
    /// The key's usage limit.
    #[serde(default)]
    pub usage_limit: Option<UsageLimitBody>,
}

/// A key as made or rotated: the only answer that ever holds the full key.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedKey {
    /// `key_...`.
    pub id: String,
    /// The full key: shown this once, never again.
    #[schema(example = "cst_0A1b2C3d4E5f6G7h8I9j0K1l2M3n4O1x2Y3z")]
    pub key: String,
    /// What listings show of it.
    pub preview: String,
    /// The log position of the event written (`Custodian-Min-Position` for reads).
    pub position: u64,
}

/// `PATCH /v1/tenants/{tenant}/keys/{id}`: what is absent does not change; `null` removes a
/// limit. A new `usage_limit` starts its `remaining` and its refill clock over.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKeyRequest {
    /// A new name.
    #[serde(default)]
    pub name: Option<String>,
    /// A new rate limit, or `null` for none.
    #[serde(default, with = "domain::double_option")]
    #[schema(value_type = Option<RateLimitBody>)]
    pub ratelimit: Option<Option<RateLimitBody>>,
    /// A new usage limit, or `null` for none.
    #[serde(default, with = "domain::double_option")]
    #[schema(value_type = Option<UsageLimitBody>)]
    pub usage_limit: Option<Option<UsageLimitBody>>,
    /// A new address allowlist (`[]` or `null`: any address).
    #[serde(default, with = "domain::double_option")]
    #[schema(value_type = Option<Vec<String>>)]
    pub ip_allowlist: Option<Option<Vec<String>>>,
}

/// `POST /v1/tenants/{tenant}/keys/{id}/rotate`
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKeyRequest {
    /// Seconds the previous secret keeps working (0-2592000, default 0: it stops at once).
    #[serde(default)]
    #[schema(example = 3600)]
    pub grace_seconds: Option<u64>,
}

/// The longest grace a rotation gives the previous secret: 30 days.
pub const MAX_GRACE_SECONDS: u64 = 30 * 86_400;

/// A command's answer about one key.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyWritten {
    /// `key_...`.
    pub id: String,
    /// The log position of the last event written, or the head when nothing changed.
    pub position: u64,
}

/// A key as listings show it: never its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    /// `key_...`.
    pub id: String,
    /// Its tenant.
    pub tenant: String,
    /// Its name.
    pub name: String,
    /// The user it acts for.
    pub owner: String,
    /// `cst_` + first 4 + `…` + last 4 of the current secret.
    pub preview: String,
    /// The permissions it may use.
    pub scopes: Vec<String>,
    /// What they cover (absent: the whole tenant).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on: Option<KeyScopeBody>,
    /// `active`, `revoked` or `expired`.
    pub status: String,
    /// Expiry.
    pub expires_at: Option<String>,
    /// Addresses it may be presented from (empty: any).
    pub ip_allowlist: Vec<String>,
    /// Its own rate limit.
    pub ratelimit: Option<RateLimitBody>,
    /// Its usage limit as set.
    pub usage_limit: Option<UsageLimitBody>,
    /// Units left now, as this server counts them (with a usage limit).
    pub remaining: Option<u64>,
    /// When it was made.
    pub created_at: String,
    /// When its secret was last rotated.
    pub rotated_at: Option<String>,
    /// Until when the secret before the last rotation works.
    pub previous_valid_until: Option<String>,
    /// When it was revoked.
    pub revoked_at: Option<String>,
    /// The last recorded use (recorded per minute).
    pub last_used_at: Option<String>,
    /// Valid uses recorded.
    pub uses: u64,
    /// The log position of its `key.issued`.
    pub issued_position: u64,
}

/// A page of keys, by id (creation order).
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyPage {
    /// The keys of this page.
    pub items: Vec<KeyView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /v1/tenants/{tenant}/keys`
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct KeyListQuery {
    /// Only keys of this owner.
    pub owner: Option<String>,
    /// Only keys in this status: `active`, `revoked` or `expired`.
    pub status: Option<String>,
    /// At most this many (1-500, default 50).
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Use cases.

fn key_error(e: KeyError) -> AppError {
    match e {
        KeyError::NotFound => no_key(),
        KeyError::AlreadyExists => AppError::conflict(e.to_string()),
        KeyError::Revoked | KeyError::Expired | KeyError::GraceRunning(_) => {
            AppError::conflict(e.to_string())
        }
        KeyError::Invalid(m) => AppError::invalid(m),
    }
}

fn no_key() -> AppError {
    AppError::not_found("no such key")
}

fn key_resource(id: &str) -> Resource {
    Resource {
        resource_type: "key".to_owned(),
        id: id.to_owned(),
    }
}

/// Parses CIDR ranges or single addresses.
pub fn parse_allowlist(field: &str, ranges: &[String]) -> Result<Vec<IpNet>, AppError> {
    if ranges.len() > domain::MAX_IP_RANGES {
        return Err(AppError::invalid(format!(
            "{field}: at most {} ranges",
            domain::MAX_IP_RANGES
        )));
    }
    ranges
        .iter()
        .map(|r| {
            r.parse::<IpNet>()
                .or_else(|_| r.parse::<IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| AppError::invalid(format!("{field}: {r:.64?} is not a CIDR range")))
        })
        .collect()
}

/// Parses scopes: each a permission of `tenant`'s catalog (`unknown_permission` otherwise).
fn parse_scopes(app: &App, tenant: &str, scopes: &[String]) -> Result<Vec<Permission>, AppError> {
    if scopes.is_empty() || scopes.len() > domain::MAX_SCOPES {
        return Err(AppError::invalid(format!(
            "scopes: 1-{} permissions",
            domain::MAX_SCOPES
        )));
    }
    let mut out: Vec<Permission> = Vec::with_capacity(scopes.len());
    for s in scopes {
        let p = parse_permission("scopes", s)?;
        app.policy
            .read(tenant, |policy| policy.catalog.check(&p))?
            .map_err(|u| AppError::UnknownPermission {
                detail: format!(
                    "scopes: {} is not in the tenant's catalog; register its type and action with PUT /v1/tenants/{{tenant}}/catalog",
                    u.permission
                ),
                known: u.known,
            })?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

/// The scopes of `scopes` that `principal` does not hold on `on` in `tenant`.
pub fn missing_scopes(
    app: &App,
    principal: &Principal,
    tenant: &str,
    scopes: &[Permission],
    on: Option<&Scope>,
) -> Result<Vec<String>, AppError> {
    let mut missing = Vec::new();
    for p in scopes {
        if !access::holds(app, principal, tenant, p, access::scope_target(on))? {
            missing.push(p.to_string());
        }
    }
    Ok(missing)
}

/// The user a new key acts for: `owner`, a user of `tenant`, or the caller when absent (who must
/// then be a user of `tenant`).
fn key_owner(
    app: &App,
    principal: &Principal,
    tenant: &str,
    owner: Option<String>,
) -> Result<String, AppError> {
    match owner {
        Some(o) => {
            if is_type_id("user", &o) && app.security.index.user(tenant, &o).is_some() {
                Ok(o)
            } else {
                Err(AppError::not_found(format!(
                    "no user {o:.64} in tenant {tenant}"
                )))
            }
        }
        None if principal.tenant == tenant => Ok(principal.user_id.clone()),
        None => Err(AppError::invalid(format!(
            "owner: you are not a user of {tenant}; name the user of {tenant} the key acts for"
        ))),
    }
}

/// Issues a key. Needs `key:create`; every scope must be a permission of the tenant's catalog and
/// held by the caller on `on` (otherwise 403 naming the missing ones). The full key is in this
/// answer only.
pub async fn create_key(
    app: &App,
    principal: &Principal,
    tenant: &str,
    req: CreateKeyRequest,
) -> Result<IssuedKey, AppError> {
    authorize(app, principal, tenant, "key:create", Target::Tenant)?;
    let owner = key_owner(app, principal, tenant, req.owner)?;
    let scopes = parse_scopes(app, tenant, &req.scopes)?;
    let on = req.on.map(KeyScopeBody::parse).transpose()?;
    let expires_at = parse_time("expires_at", req.expires_at.as_deref())?;
    let ip_allowlist = parse_allowlist("ip_allowlist", &req.ip_allowlist.unwrap_or_default())?;
    let missing = missing_scopes(app, principal, tenant, &scopes, on.as_ref())?;
    if !missing.is_empty() {
        return Err(AppError::MissingScopes {
            detail: format!(
                "a key cannot hold what you do not hold yourself; you lack {}{}",
                missing.join(", "),
                on.as_ref().map(|s| format!(" on {s}")).unwrap_or_default()
            ),
            missing,
        });
    }
    let key = generate();
    let preview = domain::preview(&key).unwrap_or_default();
    let hash = app.keys.hash(&key);
    let id = type_id("key", Uuid::now_v7());
    let now = app.now();
    let command = KeyCommand::Issue {
        owner,
        name: req.name,
        scopes,
        on,
        expires_at,
        ip_allowlist,
        ratelimit: req.ratelimit.map(Into::into),
        usage_limit: req.usage_limit.map(Into::into),
        hash,
        preview: preview.clone(),
        now,
    };
    let position = run(app, principal, tenant, &id, command).await?;
    Ok(IssuedKey {
        id,
        key,
        preview,
        position,
    })
}

/// Runs a key command and waits until the key index has applied it, so the key verifies (or stops
/// verifying) as soon as the answer is out. Answers the position to read with.
async fn run(
    app: &App,
    principal: &Principal,
    tenant: &str,
    id: &str,
    command: KeyCommand,
) -> Result<u64, AppError> {
    let s = stream(tenant, domain::AGGREGATE, id)?;
    let ctx = principal.context(app.now());
    let done = commands::execute(
        &app.store,
        Some(&app.states),
        &s,
        &ctx,
        None,
        domain::evolve,
        |k| domain::decide(k.as_ref(), command.clone()),
    )
    .await
    .map_err(|e| AppError::from_failed(e, key_error))?;
    if let Some(p) = done.position
        && let Err(e) = app.keys.index.wait_for(p).await
    {
        // The command is on the log: its answer (perhaps a new secret, shown only here) must
        // reach the caller; the key index applies it moments later.
        tracing::warn!(error = %e, position = p, "the key index is behind a key command");
    }
    app.answer_position(done.position.unwrap_or(0)).await
}

/// Lets `principal` do `permission` on key `id` of `tenant`, a well-formed key id (404 otherwise).
fn authorize_key(
    app: &App,
    principal: &Principal,
    tenant: &str,
    id: &str,
    permission: &str,
) -> Result<(), AppError> {
    let resource = key_resource(id);
    authorize(
        app,
        principal,
        tenant,
        permission,
        Target::Resource(&resource),
    )?;
    check_key_id(id)
}

fn check_key_id(id: &str) -> Result<(), AppError> {
    if is_type_id("key", id) {
        Ok(())
    } else {
        Err(no_key())
    }
}

/// A page of the tenant's keys from the `keys` view, filtered by owner and status. Needs
/// `key:read`.
pub async fn list_keys(
    app: &App,
    principal: &Principal,
    tenant: &str,
    q: KeyListQuery,
) -> Result<KeyPage, AppError> {
    authorize(app, principal, tenant, "key:read", Target::Tenant)?;
    let limit = crate::validate::parse_limit(q.limit.as_deref())?;
    crate::validate::check_cursor("key", q.cursor.as_deref())?;
    let status = match q.status.as_deref() {
        None => None,
        Some("active") => Some(view::Status::Active),
        Some("revoked") => Some(view::Status::Revoked),
        Some("expired") => Some(view::Status::Expired),
        Some(s) => {
            return Err(AppError::invalid(format!(
                "status: {s:.32?} is not active, revoked or expired"
            )));
        }
    };
    let now = app.now();
    let filter = view::KeyFilter {
        owner: q.owner,
        status,
        now: now.to_string(),
    };
    let tables = app.tables("keys")?;
    let rows = view::list_keys(
        app.db.pool(),
        &tables,
        tenant,
        &filter,
        q.cursor.as_deref(),
        limit + 1,
    )
    .await?;
    let items = rows
        .into_iter()
        .map(|r| key_view(app, r, now))
        .collect::<Result<Vec<_>, _>>()?;
    let (items, next_cursor) = crate::validate::page(items, limit, |k| &k.id);
    Ok(KeyPage { items, next_cursor })
}

/// One key of the tenant, from the `keys` view. Needs `key:read`.
pub async fn get_key(
    app: &App,
    principal: &Principal,
    tenant: &str,
    id: &str,
) -> Result<KeyView, AppError> {
    authorize_key(app, principal, tenant, id, "key:read")?;
    let tables = app.tables("keys")?;
    let row = view::find_key(app.db.pool(), &tables, tenant, id)
        .await?
        .ok_or_else(no_key)?;
    key_view(app, row, app.now())
}

fn key_view(app: &App, r: view::KeyRow, now: Timestamp) -> Result<KeyView, AppError> {
    let corrupt = |what: &str| AppError::internal(format!("the keys view holds a bad {what}"));
    let expired = r
        .expires_at
        .as_deref()
        .and_then(|e| Timestamp::parse(e).ok())
        .is_some_and(|e| e <= now);
    let status = match (r.status.as_str(), expired) {
        ("revoked", _) => "revoked",
        (_, true) => "expired",
        _ => "active",
    };
    let scopes: Vec<String> = serde_json::from_str(&r.scopes).map_err(|_| corrupt("scope list"))?;
    let on: Option<Scope> = r
        .on_scope
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|_| corrupt("scope"))?;
    let ip_allowlist: Vec<String> =
        serde_json::from_str(&r.ip_allowlist).map_err(|_| corrupt("allowlist"))?;
    let ratelimit: Option<RateLimit> = r
        .ratelimit
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|_| corrupt("rate limit"))?;
    let usage_limit: Option<UsageLimit> = r
        .usage_limit
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|_| corrupt("usage limit"))?;
    let remaining = app
        .keys
        .index
        .get(&r.key_id)
        .and_then(|e| app.keys.index.remaining(&e, now));
    Ok(KeyView {
        id: r.key_id,
        tenant: r.tenant,
        name: r.name,
        owner: r.owner,
        preview: r.preview,
        scopes,
        on: on.as_ref().map(KeyScopeBody::from),
        status: status.to_owned(),
        expires_at: r.expires_at,
        ip_allowlist,
        ratelimit: ratelimit.map(Into::into),
        usage_limit: usage_limit.map(Into::into),
        remaining,
        created_at: r.created_at,
        rotated_at: r.rotated_at,
        previous_valid_until: r.previous_valid_until,
        revoked_at: r.revoked_at,
        last_used_at: r.last_used_at,
        uses: r.uses,
        issued_position: r.created_position,
    })
}

/// Changes a key's name or limits. Needs `key:update` and every scope of the key.
pub async fn update_key(
    app: &App,
    principal: &Principal,
    tenant: &str,
    id: &str,
    req: UpdateKeyRequest,
) -> Result<KeyWritten, AppError> {
    authorize_key(app, principal, tenant, id, "key:update")?;
    may_change(app, principal, tenant, id, "changing").await?;
    let ip_allowlist = match req.ip_allowlist {
        None => None,
        Some(None) => Some(vec![]),
        Some(Some(r)) => Some(parse_allowlist("ip_allowlist", &r)?),
    };
    let command = KeyCommand::Update {
        name: req.name,
        ratelimit: req.ratelimit.map(|r| r.map(Into::into)),
        usage_limit: req.usage_limit.map(|u| u.map(Into::into)),
        ip_allowlist,
    };
    let position = run(app, principal, tenant, id, command).await?;
    Ok(KeyWritten {
        id: id.to_owned(),
        position,
    })
}

/// Revokes a key at once: it answers `REVOKED` from the answer on. Needs `key:delete`; revoking a
/// revoked key changes nothing.
pub async fn revoke_key(
    app: &App,
    principal: &Principal,
    tenant: &str,
    id: &str,
) -> Result<KeyWritten, AppError> {
    authorize_key(app, principal, tenant, id, "key:delete")?;
    let position = run(app, principal, tenant, id, KeyCommand::Revoke).await?;
    Ok(KeyWritten {
        id: id.to_owned(),
        position,
    })
}

/// Refuses a caller who does not hold every scope of key `id` on its `on` (403 naming the
/// missing ones): changing a key's limits or taking a new secret for it would hand them the key's
/// rights, which a key never holds beyond its creator's. A key the index does not know is left to
/// the command (404).
async fn may_change(
    app: &App,
    principal: &Principal,
    tenant: &str,
    id: &str,
    what: &str,
) -> Result<(), AppError> {
    app.keys.index.catch_up().await?;
    let Some(entry) = app.keys.index.get(id).filter(|e| e.tenant == tenant) else {
        return Ok(());
    };
    let missing = missing_scopes(app, principal, tenant, &entry.scopes, entry.on.as_ref())?;
    if missing.is_empty() {
        return Ok(());
    }
    Err(AppError::MissingScopes {
        detail: format!(
            "{what} a key needs every scope it holds; you lack {}",
            missing.join(", ")
        ),
        missing,
    })
}

/// Gives a key a new secret, keeping its id, scopes and limits; the previous secret works for
/// `grace_seconds` more, then answers `EXPIRED`. Needs `key:rotate` and every scope of the key;
/// refused (409) while the previous rotation's grace runs. The new key is in this answer only.
pub async fn rotate_key(
    app: &App,
    principal: &Principal,
    tenant: &str,
    id: &str,
    req: RotateKeyRequest,
) -> Result<IssuedKey, AppError> {
    authorize_key(app, principal, tenant, id, "key:rotate")?;
    may_change(app, principal, tenant, id, "rotating").await?;
    let grace = req.grace_seconds.unwrap_or(0);
    if grace > MAX_GRACE_SECONDS {
        return Err(AppError::invalid(format!(
            "grace_seconds: at most {MAX_GRACE_SECONDS} (30 days)"
        )));
    }
    let key = generate();
    let preview = domain::preview(&key).unwrap_or_default();
    let now = app.now();
    let command = KeyCommand::Rotate {
        hash: app.keys.hash(&key),
        preview: preview.clone(),
        previous_valid_until: now.plus(time::Duration::seconds(
            i64::try_from(grace).unwrap_or(i64::MAX),
        )),
        now,
    };
    let position = run(app, principal, tenant, id, command).await?;
    Ok(IssuedKey {
        id: id.to_owned(),
        key,
        preview,
        position,
    })
}
