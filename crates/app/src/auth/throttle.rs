//! Failed-login throttling kept in memory: per client IP address across every email (spraying),
//! per email address from one client address (the first, small limit, for an account or not
//! alike), and the account-wide limit for emails that match no account (so an unknown email is
//! throttled exactly like a known one, and a lock does not reveal that an account exists). An
//! account's own account-wide limit is kept by its events (`user.login_failed` with
//! `locked_until`), which every instance shares.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use custodian_domain::Timestamp;
use custodian_domain::user::LockoutPolicy;
use time::Duration;

/// How long failures are remembered after the last one, by default.
pub const WINDOW: Duration = Duration::minutes(15);
/// Most remembered keys before the oldest half is forgotten.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last: Timestamp,
    locked_until: Option<Timestamp>,
}

/// A table of failure counters with growing lockouts.
#[derive(Debug)]
pub struct Throttle<K> {
    policy: LockoutPolicy,
    window: Duration,
    records: Mutex<HashMap<K, Record>>,
}

/// A key's lock engaged or grew: what to record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Engaged {
    /// Failures in the window, this one included.
    pub failures: u32,
    /// Locked until then.
    pub until: Timestamp,
}

impl<K: std::hash::Hash + Eq + Clone> Throttle<K> {
    /// A throttle that locks after `policy.threshold` failures, and forgets a key's failures
    /// [`WINDOW`] after its last.
    pub fn new(policy: LockoutPolicy) -> Self {
        Self::with_window(policy, WINDOW)
    }

    /// A throttle that locks after `policy.threshold` failures, and forgets a key's failures
    /// `window` after its last.
    pub fn with_window(policy: LockoutPolicy, window: Duration) -> Self {
        Self {
            policy,
            window,
            records: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(until)` while `key` is locked at `now`.
    pub fn locked(&self, key: &K, now: Timestamp) -> Option<Timestamp> {
        let records = self.records.lock().ok()?;
        records
            .get(key)
            .and_then(|r| r.locked_until)
            .filter(|until| now < *until)
    }

    /// Counts a failure; returns the lock when this failure engaged or extended one.
    pub fn fail(&self, key: &K, now: Timestamp) -> Option<Engaged> {
        let mut records = self.records.lock().ok()?;
        if records.len() >= MAX_KEYS {
            let cutoff = now.plus(-self.window);
            records.retain(|_, r| r.last > cutoff);
            if records.len() >= MAX_KEYS {
                records.clear();
            }
        }
        let r = records.entry(key.clone()).or_insert(Record {
            failures: 0,
            last: now,
            locked_until: None,
        });
        if r.last.until(&now) > self.window {
            r.failures = 0;
            r.locked_until = None;
        }
        r.failures = r.failures.saturating_add(1);
        r.last = now;
        let lock = self.policy.lock_for(r.failures).map(|d| now.plus(d));
        r.locked_until = lock;
        lock.map(|until| Engaged {
            failures: r.failures,
            until,
        })
    }

    /// Forgets a key's failures (after a success).
    pub fn succeed(&self, key: &K) {
        if let Ok(mut records) = self.records.lock() {
            records.remove(key);
        }
    }
}

/// The per-IP throttle.
pub type IpThrottle = Throttle<IpAddr>;
/// The account-wide throttle of emails that match no account, keyed by (tenant, email blind
/// index).
pub type EmailThrottle = Throttle<(String, String)>;
/// The per-(email, client address) throttle, keyed by (tenant, email blind index, address), for
/// emails that name an account and emails that do not alike.
pub type EmailFromIpThrottle = Throttle<(String, String, Option<IpAddr>)>;

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::parse("2026-01-01T00:00:00Z")
            .unwrap()
            .plus(Duration::seconds(secs))
    }

    #[test]
    fn locks_grow_and_expire_and_success_forgets() {
        let t: Throttle<u8> = Throttle::new(LockoutPolicy {
            threshold: 3,
            base: Duration::seconds(1),
            max: Duration::seconds(60),
        });
        assert_eq!(t.fail(&1, at(0)), None);
        assert_eq!(t.fail(&1, at(0)), None);
        let e = t.fail(&1, at(0)).unwrap();
        assert_eq!((e.failures, e.until), (3, at(1)));
        assert_eq!(t.locked(&1, at(0)), Some(at(1)));
        assert_eq!(t.locked(&1, at(1)), None);
        assert_eq!(t.fail(&1, at(2)).unwrap().until, at(4));
        assert_eq!(t.locked(&2, at(2)), None, "keys are independent");
        t.succeed(&1);
        assert_eq!(t.fail(&1, at(3)), None);
        // Failures older than the window are forgotten.
        t.fail(&1, at(3));
        assert_eq!(t.fail(&1, at(3 + 16 * 60)), None);
    }
}
