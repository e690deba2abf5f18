//! Rate limits: how many requests a tenant, a principal and a key may make per window, enforced
//! with the generic cell rate algorithm (GCRA), in memory on each node.
//!
//! A rule of `limit` per `window_seconds` lets a burst of `limit` requests through at once, then
//! one every `window_seconds / limit` seconds: each bucket keeps only its theoretical arrival time
//! (TAT), so a check is one map lookup and a few additions. A request limited by several rules
//! (its tenant's plan, its principal, its key) passes only when every rule lets it, and is then
//! counted against all of them; a refused request counts against none, so a client that backs
//! off as told by `Retry-After` is never starved.
//!
//! The state lives in this process: with several nodes behind a load balancer, each enforces the
//! limits on its own share of the traffic (see `docs/keys.md`).

use std::collections::HashMap;
use std::sync::Mutex;

use custodian_domain::Timestamp;
use custodian_domain::tenant::Plan;
use serde::{Deserialize, Serialize};

use crate::auth::index::SYSTEM_TENANT;
use crate::{App, Principal};

/// Nanoseconds in a second.
const NANOS: i128 = 1_000_000_000;
/// Buckets kept before full ones (which hold no information) are dropped.
const PRUNE_AT: usize = 100_000;

/// `limit` requests per `window_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateRule {
    /// Requests allowed per window (and the largest burst), at least 1.
    pub limit: u32,
    /// The window's length in seconds, at least 1.
    pub window_seconds: u32,
}

impl RateRule {
    /// Checks the rule can be enforced: both numbers at least 1, the window at most a day.
    pub fn validate(&self) -> Result<(), String> {
        if self.limit == 0 {
            return Err("a rate limit's limit must be at least 1".to_owned());
        }
        if self.window_seconds == 0 || self.window_seconds > 86_400 {
            return Err("a rate limit's window_seconds must be between 1 and 86400".to_owned());
        }
        Ok(())
    }

    /// The time one request uses up, in nanoseconds.
    fn interval(&self) -> i128 {
        self.window() / i128::from(self.limit.max(1))
    }

    fn window(&self) -> i128 {
        i128::from(self.window_seconds.max(1)) * NANOS
    }
}

/// The request rates of one plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateTier {
    /// All authenticated requests of a tenant together.
    pub tenant: RateRule,
    /// Each principal (user or key) of the tenant.
    pub principal: RateRule,
}

/// The request rates of every plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateTiers {
    /// Plan `free`.
    pub free: RateTier,
    /// Plan `team`.
    pub team: RateTier,
    /// Plan `enterprise`.
    pub enterprise: RateTier,
}

impl Default for RateTiers {
    /// Per minute: free 1,200 for the tenant and 600 per principal; team 12,000 and 3,000;
    /// enterprise 120,000 and 30,000.
    fn default() -> Self {
        let tier = |tenant, principal| RateTier {
            tenant: RateRule {
                limit: tenant,
                window_seconds: 60,
            },
            principal: RateRule {
                limit: principal,
                window_seconds: 60,
            },
        };
        Self {
            free: tier(1_200, 600),
            team: tier(12_000, 3_000),
            enterprise: tier(120_000, 30_000),
        }
    }
}

impl RateTiers {
    /// The rates of `plan`.
    pub fn of(&self, plan: Plan) -> RateTier {
        match plan {
            Plan::Free => self.free,
            Plan::Team => self.team,
            Plan::Enterprise => self.enterprise,
        }
    }

    /// Checks every rule can be enforced.
    pub fn validate(&self) -> Result<(), String> {
        for (name, tier) in [
            ("free", self.free),
            ("team", self.team),
            ("enterprise", self.enterprise),
        ] {
            for rule in [tier.tenant, tier.principal] {
                rule.validate().map_err(|e| format!("plan {name}: {e}"))?;
            }
        }
        Ok(())
    }
}

/// What a bucket counts: the policy names of the `RateLimit` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    /// A tenant's requests, by its plan.
    Tenant,
    /// One principal's requests, by its tenant's plan.
    Principal,
    /// One key's requests, by the key's own `ratelimit`.
    Key,
}

impl Policy {
    /// The name in `RateLimit-Policy` and `RateLimit`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tenant => "tenant",
            Self::Principal => "principal",
            Self::Key => "key",
        }
    }
}

/// One rule a request is subject to: the policy, who it counts, and the rule.
#[derive(Debug, Clone)]
pub struct Limit {
    /// What the bucket counts.
    pub policy: Policy,
    /// Whose bucket: a tenant, principal or key id.
    pub subject: String,
    /// How fast it may go.
    pub rule: RateRule,
}

/// Where one rule stands after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// The rule's policy.
    pub policy: Policy,
    /// The rule.
    pub rule: RateRule,
    /// Requests that would pass right now.
    pub remaining: u32,
    /// Seconds until the whole limit is available again.
    pub reset: u64,
}

/// The answer to a request: the standing of each rule, and when to retry if it was refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// Each rule the request was subject to, in the order given.
    pub standings: Vec<Standing>,
    /// Seconds to wait before the request would pass, when it was refused.
    pub retry_after: Option<u64>,
}

impl Admission {
    /// Whether the request may go on.
    pub fn allowed(&self) -> bool {
        self.retry_after.is_none()
    }
}

/// The buckets of this node.
#[derive(Debug, Default)]
pub struct RateLimiter {
    /// (policy, subject) → theoretical arrival time, in nanoseconds since the Unix epoch.
    buckets: Mutex<HashMap<(Policy, String), i128>>,
}

impl RateLimiter {
    /// Counts a request of `cost` against every limit, or refuses it without counting it when
    /// any limit is exhausted.
    pub fn admit(&self, limits: &[Limit], cost: u32, now: Timestamp) -> Admission {
        let now = now.unix_micros() * 1_000;
        let cost = i128::from(cost);
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= PRUNE_AT {
            buckets.retain(|_, tat| *tat > now);
        }
        let mut retry_after: Option<i128> = None;
        let tats: Vec<i128> = limits
            .iter()
            .map(|limit| {
                let tat = bucket_tat(&buckets, limit, now);
                let next = tat + cost * limit.rule.interval();
                let allowed_at = next - limit.rule.window();
                if allowed_at > now {
                    let wait = allowed_at - now;
                    retry_after = Some(retry_after.map_or(wait, |w| w.max(wait)));
                }
                tat
            })
            .collect();
        let admitted = retry_after.is_none();
        let standings = limits
            .iter()
            .zip(tats)
            .map(|(limit, tat)| {
                let tat = if admitted {
                    let next = tat + cost * limit.rule.interval();
                    buckets.insert((limit.policy, limit.subject.clone()), next);
                    next
                } else {
                    tat
                };
                standing(limit, tat, now)
            })
            .collect();
        Admission {
            standings,
            retry_after: retry_after.map(ceil_seconds),
        }
    }

    /// Where `limits` stand now, counting nothing.
    pub fn peek(&self, limits: &[Limit], now: Timestamp) -> Vec<Standing> {
        let now = now.unix_micros() * 1_000;
        let buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        limits
            .iter()
            .map(|limit| standing(limit, bucket_tat(&buckets, limit, now), now))
            .collect()
    }
}

impl From<custodian_domain::key::RateLimit> for RateRule {
    /// A key's `ratelimit` (validated when it was set: a limit of at least 1 per 1 s to a day).
    fn from(r: custodian_domain::key::RateLimit) -> Self {
        Self {
            limit: u32::try_from(r.limit).unwrap_or(u32::MAX),
            window_seconds: u32::try_from(r.window_seconds).unwrap_or(86_400),
        }
    }
}

/// The rule of a key with its own `ratelimit`.
pub fn key_limit(key_id: &str, rule: custodian_domain::key::RateLimit) -> Limit {
    Limit {
        policy: Policy::Key,
        subject: key_id.to_owned(),
        rule: rule.into(),
    }
}

/// The limits a request of `principal` is subject to: its tenant's and its own (a key's own is
/// the key's), by the tenant's plan, and a key's own `ratelimit`. Platform staff (principals of
/// `_system`) are not limited by a plan.
pub fn limits(app: &App, principal: &Principal) -> Vec<Limit> {
    let mut limits = Vec::with_capacity(3);
    if principal.tenant != SYSTEM_TENANT {
        let tier = app
            .security
            .rate_tiers
            .of(app.security.index.plan(&principal.tenant));
        limits.push(Limit {
            policy: Policy::Tenant,
            subject: principal.tenant.clone(),
            rule: tier.tenant,
        });
        limits.push(Limit {
            policy: Policy::Principal,
            subject: principal
                .key
                .as_ref()
                .map_or_else(|| principal.user_id.clone(), |k| k.id.clone()),
            rule: tier.principal,
        });
    }
    if let Some(key) = &principal.key
        && let Some(rule) = app.keys.index.get(&key.id).and_then(|e| e.ratelimit)
    {
        limits.push(key_limit(&key.id, rule));
    }
    limits
}

/// Whether a request of `principal` would pass its limits now (counting nothing): what lets a
/// key's authentication leave its usage untouched when the request is about to be refused.
pub fn would_admit(app: &App, principal: &Principal) -> bool {
    app.security
        .ratelimits
        .peek(&limits(app, principal), app.now())
        .iter()
        .all(|s| s.remaining >= 1)
}

/// Counts one request of `principal` against its limits now.
pub fn admit(app: &App, principal: &Principal) -> Admission {
    app.security
        .ratelimits
        .admit(&limits(app, principal), 1, app.now())
}

/// The theoretical arrival time of `limit`'s bucket: `now` for a bucket that is full or unknown.
fn bucket_tat(buckets: &HashMap<(Policy, String), i128>, limit: &Limit, now: i128) -> i128 {
    buckets
        .get(&(limit.policy, limit.subject.clone()))
        .copied()
        .unwrap_or(now)
        .max(now)
}

fn standing(limit: &Limit, tat: i128, now: i128) -> Standing {
    let used = (tat - now).max(0);
    let free = (limit.rule.window() - used).max(0);
    let remaining = free / limit.rule.interval().max(1);
    Standing {
        policy: limit.policy,
        rule: limit.rule,
        remaining: u32::try_from(remaining.min(i128::from(limit.rule.limit))).unwrap_or(0),
        reset: ceil_seconds(used),
    }
}

fn ceil_seconds(nanos: i128) -> u64 {
    u64::try_from((nanos + NANOS - 1) / NANOS).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: f64) -> Timestamp {
        let base = Timestamp::parse("2026-01-01T00:00:00Z").expect("a valid time");
        #[allow(clippy::cast_possible_truncation)]
        base.plus(time::Duration::nanoseconds((seconds * 1e9) as i64))
    }

    fn limit(policy: Policy, subject: &str, limit: u32, window_seconds: u32) -> Limit {
        Limit {
            policy,
            subject: subject.to_owned(),
            rule: RateRule {
                limit,
                window_seconds,
            },
        }
    }

    #[test]
    fn a_burst_of_the_limit_passes_and_the_next_request_waits_one_interval() {
        let limiter = RateLimiter::default();
        let rule = [limit(Policy::Key, "k", 10, 60)];
        for i in 0..10 {
            let a = limiter.admit(&rule, 1, at(0.0));
            assert!(a.allowed(), "request {i} of the burst");
            assert_eq!(a.standings[0].remaining, 9 - i);
        }
        let refused = limiter.admit(&rule, 1, at(0.0));
        assert_eq!(refused.retry_after, Some(6), "one request frees every 6 s");
        assert_eq!(refused.standings[0].remaining, 0);
        assert_eq!(refused.standings[0].reset, 60);
        assert!(!limiter.admit(&rule, 1, at(5.9)).allowed());
        let after = limiter.admit(&rule, 1, at(6.0));
        assert!(after.allowed());
        assert_eq!(after.standings[0].remaining, 0);
        assert_eq!(limiter.peek(&rule, at(66.0))[0].remaining, 10);
    }

    #[test]
    fn a_request_refused_by_one_limit_counts_against_none() {
        let limiter = RateLimiter::default();
        let tenant = limit(Policy::Tenant, "acme", 100, 60);
        let key = limit(Policy::Key, "k", 1, 60);
        let both = [tenant.clone(), key.clone()];
        assert!(limiter.admit(&both, 1, at(0.0)).allowed());
        let refused = limiter.admit(&both, 1, at(0.0));
        assert_eq!(refused.retry_after, Some(60));
        assert_eq!(
            limiter.peek(std::slice::from_ref(&tenant), at(0.0))[0].remaining,
            99,
            "the refused request did not count against the tenant"
        );
        let other = [tenant, limit(Policy::Key, "other", 1, 60)];
        assert!(limiter.admit(&other, 1, at(0.0)).allowed());
    }

    #[test]
    fn cost_takes_several_units_and_more_than_the_limit_never_passes() {
        let limiter = RateLimiter::default();
        let rule = [limit(Policy::Principal, "u", 10, 10)];
        assert!(limiter.admit(&rule, 4, at(0.0)).allowed());
        let a = limiter.admit(&rule, 6, at(0.0));
        assert!(a.allowed());
        assert_eq!(a.standings[0].remaining, 0);
        assert!(!limiter.admit(&rule, 11, at(100.0)).allowed());
        assert!(!limiter.admit(&rule, 11, at(1000.0)).allowed());
    }

    #[test]
    fn buckets_are_separate_per_policy_and_subject() {
        let limiter = RateLimiter::default();
        assert!(
            limiter
                .admit(&[limit(Policy::Key, "a", 1, 60)], 1, at(0.0))
                .allowed()
        );
        assert!(
            limiter
                .admit(&[limit(Policy::Principal, "a", 1, 60)], 1, at(0.0))
                .allowed()
        );
        assert!(
            limiter
                .admit(&[limit(Policy::Key, "b", 1, 60)], 1, at(0.0))
                .allowed()
        );
        assert!(
            !limiter
                .admit(&[limit(Policy::Key, "a", 1, 60)], 1, at(0.0))
                .allowed()
        );
    }
}
