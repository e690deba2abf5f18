//! Verifying a key: for a service that received one (`POST /v1/keys/verify`), and for Custodian
//! itself when a caller presents one as `Authorization: Bearer cst_...` ([`authenticate`]).
//!
//! Both ask the key index in memory: the checksum first (a mistyped key costs no lookup), then
//! one lookup by the keyed hash, then the checks in this order, the first that fails giving the
//! code: `MALFORMED`, `NOT_FOUND`, `TENANT_SUSPENDED`, `REVOKED`, `EXPIRED`, `DISABLED_OWNER`,
//! `IP_NOT_ALLOWED`, `FORBIDDEN` (with a permission), `RATE_LIMITED`, `USAGE_EXCEEDED`, `VALID`.

use std::net::IpAddr;
use std::sync::Arc;

use custodian_domain::key as domain;
use custodian_domain::policy::{Permission, Target};
use custodian_domain::user::UserStatus;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::index::KeyEntry;
use crate::App;
use crate::access::{self, KeyPrincipal, Principal};
use crate::auth::index::{Refusal, SYSTEM_TENANT};
use crate::error::AppError;
use crate::validate::{parse_permission, parse_resource};

/// The answer of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VerifyCode {
    /// The key may be used (for the permission asked, if one was).
    Valid,
    /// No key has this secret, or not one the caller may know of.
    NotFound,
    /// Not a key: wrong prefix, length or alphabet, or a checksum that does not match (a typo).
    Malformed,
    /// The key was revoked.
    Revoked,
    /// The key expired, or this secret was rotated away and its grace has ended.
    Expired,
    /// The key may not do what was asked: its scopes, or its owner's rights, do not cover it.
    Forbidden,
    /// The key's rate limit is exhausted for now.
    RateLimited,
    /// The key's usage limit has fewer units left than the cost.
    UsageExceeded,
    /// The key was presented from an address outside its allowlist.
    IpNotAllowed,
    /// The key's tenant is suspended (told only to a verifier in `_system`).
    TenantSuspended,
    /// The key's owner is disabled or deleted.
    DisabledOwner,
}

/// `POST /v1/keys/verify`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The key presented to the caller.
    pub key: String,
    /// A permission (`type:action`) to decide for the key as principal.
    #[serde(default)]
    #[schema(example = "project:read")]
    pub permission: Option<String>,
    /// The resource (`type/id`) the permission is asked on; the whole tenant when absent.
    #[serde(default)]
    #[schema(example = "project/p42")]
    pub resource: Option<String>,
    /// Units to take from the key's usage limit when it is valid (default 1; 0 takes none).
    #[serde(default)]
    pub cost: Option<u64>,
    /// The address the key was presented from, for its allowlist (IPv4-mapped IPv6 addresses
    /// count as IPv4); without it a key with an allowlist is `IP_NOT_ALLOWED`.
    #[serde(default)]
    #[schema(example = "203.0.113.7")]
    pub ip: Option<String>,
}

/// Where one of the key's rate limits stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct RateLimitState {
    /// Requests per window.
    pub limit: u64,
    /// Requests left now.
    pub remaining: u64,
    /// Seconds until the limit is whole again.
    pub reset: u64,
}

/// What a verification found. Fields the caller may not know, or that do not apply, are `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Verification {
    /// Whether the key may be used (`code` is `VALID`).
    pub valid: bool,
    /// Why or why not.
    pub code: VerifyCode,
    /// `key_...`.
    pub key_id: Option<String>,
    /// The key's tenant.
    pub tenant: Option<String>,
    /// The user the key acts for.
    pub owner: Option<String>,
    /// Its scopes.
    pub scopes: Option<Vec<String>>,
    /// Units left under its usage limit (after this use's cost, when valid).
    pub remaining: Option<u64>,
    /// The tightest of its rate limits after this verification (its tenant's plan, the key's
    /// share of it, its own `ratelimit`); `null` when the checks stopped before counting it.
    pub ratelimit: Option<RateLimitState>,
}

impl Verification {
    fn unknown(code: VerifyCode) -> Self {
        Self {
            valid: false,
            code,
            key_id: None,
            tenant: None,
            owner: None,
            scopes: None,
            remaining: None,
            ratelimit: None,
        }
    }

    fn of(code: VerifyCode, entry: &KeyEntry, remaining: Option<u64>) -> Self {
        Self {
            valid: code == VerifyCode::Valid,
            code,
            key_id: Some(entry.id.clone()),
            tenant: Some(entry.tenant.clone()),
            owner: Some(entry.owner.clone()),
            scopes: Some(entry.scopes.iter().map(ToString::to_string).collect()),
            remaining,
            ratelimit: None,
        }
    }
}

/// The checks every presentation of a key goes through, up to `IP_NOT_ALLOWED`: the key, if it
/// was found, and the first code that failed (`Valid` if none did).
fn assess(app: &App, key: &str, ip: Option<IpAddr>) -> (VerifyCode, Option<Arc<KeyEntry>>) {
    if domain::parse(key).is_err() {
        return (VerifyCode::Malformed, None);
    }
    let Some(found) = app.keys.index.find(&app.keys.hash(key)) else {
        return (VerifyCode::NotFound, None);
    };
    let now = app.now();
    let e = found.entry;
    let code = if matches!(
        app.security.index.tenant(&e.tenant),
        Err(Refusal::TenantSuspended | Refusal::UnknownTenant)
    ) {
        VerifyCode::TenantSuspended
    } else if e.revoked {
        VerifyCode::Revoked
    } else if e.expires_at.is_some_and(|t| t <= now)
        || found.superseded_at.is_some_and(|t| t <= now)
    {
        VerifyCode::Expired
    } else if !app
        .security
        .index
        .user(&e.tenant, &e.owner)
        .is_some_and(|u| u.status == UserStatus::Active)
    {
        VerifyCode::DisabledOwner
    } else if !e.ip_allowlist.is_empty()
        && !ip.is_some_and(|ip| e.ip_allowlist.iter().any(|n| n.contains(&ip)))
    {
        VerifyCode::IpNotAllowed
    } else {
        VerifyCode::Valid
    };
    (code, Some(e))
}

/// The principal a key acts as: its owner, limited to its scopes.
fn key_principal(app: &App, e: &KeyEntry, ip: Option<IpAddr>) -> Result<Principal, AppError> {
    let user = app
        .security
        .index
        .user(&e.tenant, &e.owner)
        .ok_or_else(|| AppError::unauthenticated("the API key is not valid"))?;
    Ok(Principal {
        user_id: e.owner.clone(),
        tenant: e.tenant.clone(),
        session_id: String::new(),
        user,
        ip,
        key: Some(KeyPrincipal {
            id: e.id.clone(),
            scopes: e.scopes.clone(),
            on: e.on.clone(),
            issuer: e.issuer.clone(),
        }),
    })
}

async fn caught_up(app: &App) -> Result<(), AppError> {
    app.keys.index.catch_up().await?;
    app.security
        .index
        .catch_up()
        .await
        .map_err(|_| AppError::catching_up())?;
    app.policy.catch_up().await?;
    Ok(())
}

/// The caller behind `Authorization: Bearer cst_...` presented from `ip`: a key that passes
/// every check of [`assess`] and has a unit of usage left, acting as its owner within its scopes.
/// Each authentication counts as one use. Whatever is wrong, the answer is the same 401.
pub async fn authenticate(app: &App, key: &str, ip: Option<IpAddr>) -> Result<Principal, AppError> {
    let refused = || AppError::unauthenticated("the API key is not valid");
    if domain::parse(key).is_err() {
        return Err(refused());
    }
    caught_up(app).await?;
    let (code, entry) = assess(app, key, ip);
    let entry = match (code, entry) {
        (VerifyCode::Valid, Some(e)) => e,
        _ => return Err(refused()),
    };
    let principal = key_principal(app, &entry, ip)?;
    // A request its rate limits will refuse (429, counted by the caller) takes no usage.
    if crate::ratelimit::would_admit(app, &principal) {
        app.keys
            .index
            .consume(&entry, 1, app.now())
            .map_err(|_| refused())?;
    }
    Ok(principal)
}

/// Verifies a key for `principal`, a service that holds `key:verify` in its tenant (it learns
/// about its tenant's keys only) or in `_system` (every key, and `TENANT_SUSPENDED`). The key was
/// presented from `req.ip`; without it a key with an allowlist is `IP_NOT_ALLOWED` (the verify
/// request's own address is the verifier's, not the key holder's). Always an
/// answer (`valid` and `code`), unless the caller may not verify at all (403) or the request is
/// invalid (422). `cost` is taken from the key's usage limit only when the answer is `VALID`.
pub async fn verify(
    app: &App,
    principal: &Principal,
    req: VerifyRequest,
) -> Result<Verification, AppError> {
    let key_verify = Permission {
        resource_type: "key".to_owned(),
        action: "verify".to_owned(),
    };
    let platform = principal.tenant == SYSTEM_TENANT
        && access::holds(app, principal, SYSTEM_TENANT, &key_verify, Target::Tenant)?;
    if !platform
        && !access::holds(
            app,
            principal,
            &principal.tenant,
            &key_verify,
            Target::Tenant,
        )?
    {
        return Err(AppError::forbidden(
            "this needs the permission key:verify in your tenant, or in _system for every tenant's keys",
        ));
    }
    let permission = req
        .permission
        .as_deref()
        .map(|p| parse_permission("permission", p))
        .transpose()?;
    let resource = req
        .resource
        .as_deref()
        .map(|r| parse_resource("resource", r))
        .transpose()?;
    if resource.is_some() && permission.is_none() {
        return Err(AppError::invalid(
            "resource: give the permission asked on it too",
        ));
    }
    let ip = match req.ip.as_deref() {
        Some(s) => Some(
            s.trim()
                .parse::<IpAddr>()
                .map_err(|_| AppError::invalid(format!("ip: {s:.64?} is not an IP address")))?
                .to_canonical(),
        ),
        None => None,
    };
    let cost = req.cost.unwrap_or(1);
    if domain::parse(&req.key).is_err() {
        return Ok(Verification::unknown(VerifyCode::Malformed));
    }
    caught_up(app).await?;
    let now = app.now();
    let (code, entry) = assess(app, &req.key, ip);
    let Some(entry) = entry else {
        return Ok(Verification::unknown(code));
    };
    if !platform && entry.tenant != principal.tenant {
        return Ok(Verification::unknown(VerifyCode::NotFound));
    }
    if code == VerifyCode::TenantSuspended && !platform {
        return Ok(Verification::unknown(VerifyCode::NotFound));
    }
    let remaining = || app.keys.index.remaining(&entry, now);
    if code != VerifyCode::Valid {
        return Ok(Verification::of(code, &entry, remaining()));
    }
    let as_key = key_principal(app, &entry, ip)?;
    if let Some(permission) = &permission {
        let target = resource.as_ref().map_or(Target::Tenant, Target::Resource);
        if !access::holds(app, &as_key, &entry.tenant, permission, target)? {
            return Ok(Verification::of(VerifyCode::Forbidden, &entry, remaining()));
        }
    }
    // The key's limits count this verification: its tenant's plan (the tenant's and the key's
    // own share) and the key's own `ratelimit`. A refusal takes no usage. The answer reports the
    // tightest of them.
    let mut limits = crate::ratelimit::limits(app, &as_key);
    if principal.tenant == entry.tenant {
        // The verify request itself was counted against the tenant's rule: once is enough.
        limits.retain(|l| l.policy != crate::ratelimit::Policy::Tenant);
    }
    let admission = app.security.ratelimits.admit(&limits, 1, now);
    let ratelimit = admission
        .standings
        .iter()
        .min_by_key(|s| (s.remaining, std::cmp::Reverse(s.reset)))
        .map(|s| RateLimitState {
            limit: u64::from(s.rule.limit),
            remaining: u64::from(s.remaining),
            reset: s.reset,
        });
    if !admission.allowed() {
        return Ok(Verification {
            ratelimit,
            ..Verification::of(VerifyCode::RateLimited, &entry, remaining())
        });
    }
    let answer = match app.keys.index.consume(&entry, cost, now) {
        Ok(left) => Verification::of(VerifyCode::Valid, &entry, left),
        Err(e) => Verification::of(VerifyCode::UsageExceeded, &entry, Some(e.remaining)),
    };
    Ok(Verification {
        ratelimit,
        ..answer
    })
}
