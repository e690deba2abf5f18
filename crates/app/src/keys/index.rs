//! The key index: every API key by the keyed hash of its secret, kept current by following the
//! log, and each key's usage counters. Verifying a key is one hash of the input, one map lookup
//! and a few comparisons: no SQL.
//!
//! The index starts from its snapshot (see [`crate::snapshot`]): the keys, and each key's usage
//! counters as the log left them.
//!
//! Usage counters live here, in memory: `remaining` under the key's usage limit, and the uses of
//! the current minute window, which the recorder ([`super::usage`]) appends as `key.used` once the
//! minute has passed (and at shutdown). When the index replays a `key.used` this process did not
//! write (after a restart, or from another server), it takes the `remaining` recorded there.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use custodian_domain::key::{KeyEvent, RateLimit, UsageLimit};
use custodian_domain::policy::{Permission, Scope};
use custodian_domain::secret::TokenHash;
use custodian_domain::{ActorKind, DomainEvent, EventHash, EventRecord, Timestamp};
use custodian_store::EventStore;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::error::AppError;
use crate::follower::{Progress, Snapshotted};
use crate::snapshot::{IndexStatus, Snapshots};

/// What the index knows of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    /// `key_...`.
    pub id: String,
    /// Its tenant.
    pub tenant: String,
    /// The user it acts for.
    pub owner: String,
    /// The permissions it may use.
    pub scopes: Vec<Permission>,
    /// What they cover (the whole tenant when absent).
    pub on: Option<Scope>,
    /// It answers `EXPIRED` from this instant on.
    pub expires_at: Option<Timestamp>,
    /// Addresses it may be presented from (any when empty).
    pub ip_allowlist: Vec<IpNet>,
    /// Its own rate limit: enforced by the rate limiter, which reads it here.
    pub ratelimit: Option<RateLimit>,
    /// Its usage limit.
    pub usage_limit: Option<UsageLimit>,
    /// When the usage limit was set (issue, or the update that set it): refills count from here.
    pub limit_set_at: Timestamp,
    /// Whether it was revoked.
    pub revoked: bool,
    /// Keyed hash of the current secret.
    pub hash: TokenHash,
    /// The secret before the last rotation, and when it stops working (exclusive).
    pub previous: Option<(TokenHash, Timestamp)>,
    /// The user who issued it, when not its owner (through another key: that key's issuer or
    /// owner): the key never does what they no longer may.
    pub issuer: Option<String>,
}

/// A key found by the hash of a presented secret.
#[derive(Debug, Clone)]
pub struct Found {
    /// The key.
    pub entry: Arc<KeyEntry>,
    /// The secret presented stopped working at this instant (a rotated-away secret): from then
    /// on it answers `EXPIRED`. `None` for the current secret.
    pub superseded_at: Option<Timestamp>,
}

/// Uses of one key within one minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The minute.
    pub start: Timestamp,
    /// Valid uses.
    pub uses: u64,
    /// Units taken.
    pub cost: u64,
    /// First use.
    pub first: Timestamp,
    /// Last use.
    pub last: Timestamp,
}

/// A closed window to record as `key.used`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    /// The key's tenant.
    pub tenant: String,
    /// The key.
    pub key_id: String,
    /// Its uses in the window.
    pub window: Window,
    /// Units left after the window.
    pub remaining: Option<u64>,
    /// The id its `key.used` is appended with: retries of the append are idempotent, and the
    /// event coming back from the log is known as this process's own.
    pub event_id: uuid::Uuid,
}

#[derive(Debug, Default)]
struct Usage {
    /// Units left in `period`, when the key has a usage limit.
    remaining: Option<u64>,
    /// The refill period `remaining` belongs to.
    period: u64,
    /// The current minute's uses.
    open: Option<Window>,
    /// Windows closed by a use in a later minute, waiting for the recorder.
    closed: Vec<UsageRecord>,
}

/// The keys, and the usage counters as the log left them: what the snapshot holds.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct State {
    by_id: HashMap<String, Arc<KeyEntry>>,
    by_hash: HashMap<String, String>,
    /// Key id → `(remaining, period)` as the last event of the log that set them left them.
    logged: HashMap<String, (Option<u64>, u64)>,
    /// The position and hash of the last event applied.
    at: Option<(u64, EventHash)>,
}

/// Why a use was refused by the usage limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    /// Units left (fewer than the cost).
    pub remaining: u64,
}

/// The index and its follower's progress.
#[derive(Debug)]
pub struct KeyIndex {
    state: RwLock<State>,
    usage: Mutex<HashMap<String, Usage>>,
    /// Ids of the `key.used` events this process is appending: coming back from the log they are
    /// not news (the counters here are already ahead of them).
    own: Mutex<std::collections::HashSet<uuid::Uuid>>,
    lookups: AtomicU64,
    progress: Progress,
    head: watch::Receiver<u64>,
    status: Arc<IndexStatus>,
}

/// The start of the minute `t` falls in.
pub fn minute_of(t: Timestamp) -> Timestamp {
    let dt = t.as_datetime();
    let floored = dt
        .replace_second(0)
        .and_then(|d| d.replace_nanosecond(0))
        .unwrap_or(dt);
    Timestamp::from_datetime(floored)
}

impl KeyIndex {
    /// Starts from the snapshot in `snapshots` (from position 1 without), following `store`; the
    /// tasks stop with `shutdown`.
    pub fn start(
        store: Arc<dyn EventStore>,
        snapshots: Option<Snapshots>,
        wait: Duration,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let index = Arc::new(Self {
            state: RwLock::new(State::default()),
            usage: Mutex::new(HashMap::new()),
            own: Mutex::default(),
            lookups: AtomicU64::new(0),
            progress: Progress::new(wait),
            head: store.watch_head(),
            status: Arc::new(IndexStatus::new(Self::NAME)),
        });
        crate::follower::spawn_snapshotted(
            index.clone(),
            index.status.clone(),
            store,
            snapshots,
            clock,
            shutdown,
        );
        index
    }

    /// An index that follows nothing, for tests that apply events by hand.
    #[cfg(test)]
    pub(crate) fn detached() -> Self {
        Self {
            state: RwLock::new(State::default()),
            usage: Mutex::new(HashMap::new()),
            own: Mutex::default(),
            lookups: AtomicU64::new(0),
            progress: Progress::new(Duration::ZERO),
            head: watch::channel(0).1,
            status: Arc::new(IndexStatus::new(Self::NAME)),
        }
    }

    /// Where the index started from and how far it has read.
    pub fn status(&self) -> &Arc<IndexStatus> {
        &self.status
    }

    /// The last position applied.
    pub fn applied(&self) -> u64 {
        self.progress.applied()
    }

    /// Waits until the index has applied every commit this process knows of (bounded).
    pub async fn catch_up(&self) -> Result<(), AppError> {
        let head = *self.head.borrow();
        self.wait_for(head).await
    }

    /// Waits until the index has applied `position` (bounded).
    pub async fn wait_for(&self, position: u64) -> Result<(), AppError> {
        if self.progress.reached(position).await {
            Ok(())
        } else {
            Err(AppError::unavailable(
                "the key index is catching up with the log",
                1,
            ))
        }
    }

    /// How many lookups by hash the index has answered: a malformed key never costs one.
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    /// The key whose current or former secret hashes to `hash`.
    pub fn find(&self, hash: &TokenHash) -> Option<Found> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let state = self.state.read().ok()?;
        let id = state.by_hash.get(&hash.0)?;
        let entry = state.by_id.get(id)?.clone();
        let superseded_at = if entry.hash == *hash {
            None
        } else {
            match &entry.previous {
                Some((h, until)) if h == hash => Some(*until),
                // Secrets from before the last rotation stopped working at that rotation.
                _ => Some(Timestamp::from_datetime(time::OffsetDateTime::UNIX_EPOCH)),
            }
        };
        Some(Found {
            entry,
            superseded_at,
        })
    }

    /// The key `id`, if the index knows it.
    pub fn get(&self, id: &str) -> Option<Arc<KeyEntry>> {
        self.state.read().ok()?.by_id.get(id).cloned()
    }

    /// Units left under the key's usage limit at `now` (refills applied), if it has one.
    pub fn remaining(&self, entry: &KeyEntry, now: Timestamp) -> Option<u64> {
        let limit = entry.usage_limit?;
        let usage = self.usage.lock().ok()?;
        let u = usage.get(&entry.id);
        let period = limit.period(entry.limit_set_at, now);
        match u {
            Some(u) if u.period == period => Some(u.remaining.unwrap_or(limit.remaining)),
            _ => Some(limit.at_start_of(period)),
        }
    }

    /// Counts one valid use of `entry` at `now` costing `cost` units: taken from the usage limit
    /// (refilled first when a refill period has passed) only if enough are left. Answers the units
    /// left after it.
    pub fn consume(
        &self,
        entry: &KeyEntry,
        cost: u64,
        now: Timestamp,
    ) -> Result<Option<u64>, Exceeded> {
        let Ok(mut usage) = self.usage.lock() else {
            return Ok(None);
        };
        let u = usage.entry(entry.id.clone()).or_default();
        let mut left = None;
        if let Some(limit) = entry.usage_limit {
            let period = limit.period(entry.limit_set_at, now);
            if period > u.period {
                u.remaining = Some(limit.at_start_of(period));
                u.period = period;
            }
            let remaining = u.remaining.unwrap_or(limit.at_start_of(period));
            if remaining < cost {
                return Err(Exceeded { remaining });
            }
            u.remaining = Some(remaining - cost);
            left = u.remaining;
        }
        let minute = minute_of(now);
        match &mut u.open {
            Some(w) if w.start == minute => {
                w.uses += 1;
                w.cost = w.cost.saturating_add(cost);
                w.last = w.last.max(now);
            }
            open => {
                if let Some(w) = open.take() {
                    // The remaining after the closed window: before this use took its cost.
                    let before = left.map(|l| l.saturating_add(cost));
                    u.closed.push(UsageRecord {
                        tenant: entry.tenant.clone(),
                        key_id: entry.id.clone(),
                        window: w,
                        remaining: before,
                        event_id: uuid::Uuid::now_v7(),
                    });
                }
                *open = Some(Window {
                    start: minute,
                    uses: 1,
                    cost,
                    first: now,
                    last: now,
                });
            }
        }
        Ok(left)
    }

    /// Takes the windows that are over at `now` (every open window with `all`, at shutdown), for
    /// the recorder to append; each key's later `key.used` from the log is then known as its own.
    pub fn take_closed(&self, now: Timestamp, all: bool) -> Vec<UsageRecord> {
        let minute = minute_of(now);
        let tenants: HashMap<String, String> = match self.state.read() {
            Ok(s) => s
                .by_id
                .iter()
                .map(|(id, e)| (id.clone(), e.tenant.clone()))
                .collect(),
            Err(_) => HashMap::new(),
        };
        let Ok(mut usage) = self.usage.lock() else {
            return vec![];
        };
        let mut out = Vec::new();
        for (id, u) in usage.iter_mut() {
            out.append(&mut u.closed);
            if u.open.is_some_and(|w| all || w.start < minute)
                && let Some(w) = u.open.take()
                && let Some(tenant) = tenants.get(id)
            {
                out.push(UsageRecord {
                    tenant: tenant.clone(),
                    key_id: id.clone(),
                    window: w,
                    remaining: u.remaining,
                    event_id: uuid::Uuid::now_v7(),
                });
            }
        }
        drop(usage);
        if let Ok(mut own) = self.own.lock() {
            own.extend(out.iter().map(|r| r.event_id));
        }
        out
    }

    /// Forgets a window's `key.used` that could not be appended.
    pub fn not_recorded(&self, record: &UsageRecord) {
        if let Ok(mut own) = self.own.lock() {
            own.remove(&record.event_id);
        }
    }

    /// Windows waiting to be recorded (open or closed), for the tests and the shutdown report.
    pub fn pending(&self) -> usize {
        self.usage.lock().map_or(0, |u| {
            u.values()
                .map(|u| u.closed.len() + usize::from(u.open.is_some()))
                .sum()
        })
    }

    fn apply_key(&self, record: &EventRecord, event: KeyEvent) {
        let id = record.stream.id().to_owned();
        let Ok(mut state) = self.state.write() else {
            return;
        };
        state.at = Some((record.position, record.hash));
        match event {
            KeyEvent::Issued {
                owner,
                scopes,
                on,
                expires_at,
                ip_allowlist,
                ratelimit,
                usage_limit,
                hash,
                ..
            } => {
                let issuer = match record.actor.kind {
                    ActorKind::User => Some(record.actor.id.clone()),
                    ActorKind::ApiKey => state
                        .by_id
                        .get(&record.actor.id)
                        .map(|k| k.issuer.clone().unwrap_or_else(|| k.owner.clone())),
                    _ => None,
                }
                .filter(|i| *i != owner);
                state.by_hash.insert(hash.0.clone(), id.clone());
                state.by_id.insert(
                    id.clone(),
                    Arc::new(KeyEntry {
                        id: id.clone(),
                        tenant: record.stream.tenant().to_owned(),
                        owner,
                        scopes,
                        on,
                        expires_at,
                        ip_allowlist,
                        ratelimit,
                        usage_limit,
                        limit_set_at: record.occurred_at,
                        revoked: false,
                        hash,
                        previous: None,
                        issuer,
                    }),
                );
                state
                    .logged
                    .insert(id.clone(), (usage_limit.map(|l| l.remaining), 0));
                drop(state);
                self.reset_usage(&id, usage_limit);
            }
            KeyEvent::Updated {
                ratelimit,
                usage_limit,
                ip_allowlist,
                ..
            } => {
                let Some(entry) = state.by_id.get_mut(&id) else {
                    return;
                };
                let e = Arc::make_mut(entry);
                if let Some(r) = ratelimit {
                    e.ratelimit = r;
                }
                if let Some(i) = ip_allowlist {
                    e.ip_allowlist = i;
                }
                if let Some(u) = usage_limit {
                    e.usage_limit = u;
                    e.limit_set_at = record.occurred_at;
                    state.logged.insert(id.clone(), (u.map(|l| l.remaining), 0));
                    drop(state);
                    self.reset_usage(&id, u);
                }
            }
            KeyEvent::Rotated {
                hash,
                previous_valid_until,
                ..
            } => {
                state.by_hash.insert(hash.0.clone(), id.clone());
                if let Some(entry) = state.by_id.get_mut(&id) {
                    let e = Arc::make_mut(entry);
                    let old = std::mem::replace(&mut e.hash, hash);
                    e.previous = Some((old, previous_valid_until));
                }
            }
            KeyEvent::Revoked {} => {
                if let Some(entry) = state.by_id.get_mut(&id) {
                    Arc::make_mut(entry).revoked = true;
                }
            }
            KeyEvent::Used {
                last_used_at,
                remaining,
                ..
            } => {
                let limit = state
                    .by_id
                    .get(&id)
                    .and_then(|e| e.usage_limit.map(|l| (l, e.limit_set_at)));
                if let (Some((limit, set_at)), Some(remaining)) = (limit, remaining) {
                    state.logged.insert(
                        id.clone(),
                        (Some(remaining), limit.period(set_at, last_used_at)),
                    );
                }
                drop(state);
                if self.own.lock().is_ok_and(|mut own| own.remove(&record.id)) {
                    return;
                }
                let Ok(mut usage) = self.usage.lock() else {
                    return;
                };
                let u = usage.entry(id).or_default();
                if let (Some((limit, set_at)), Some(remaining)) = (limit, remaining) {
                    u.period = limit.period(set_at, last_used_at);
                    u.remaining = Some(remaining);
                }
            }
        }
    }

    fn reset_usage(&self, id: &str, limit: Option<UsageLimit>) {
        if let Ok(mut usage) = self.usage.lock() {
            let u = usage.entry(id.to_owned()).or_default();
            u.remaining = limit.map(|l| l.remaining);
            u.period = 0;
        }
    }
}

impl Snapshotted for KeyIndex {
    const NAME: &'static str = "keys";
    const FORMAT: u64 = 1;
    type Image = State;

    fn apply(&self, record: &EventRecord) {
        if record.stream.aggregate() == custodian_domain::key::AGGREGATE
            && let Ok(event) =
                KeyEvent::decode(record.event_type.as_str(), record.schema, &record.data)
        {
            self.apply_key(record, event);
        } else if let Ok(mut state) = self.state.write() {
            state.at = Some((record.position, record.hash));
        }
        self.progress.advance(record.position);
    }

    fn image(&self) -> Option<(u64, EventHash, State)> {
        let state = self.state.read().ok()?;
        let (position, hash) = state.at?;
        Some((position, hash, state.clone()))
    }

    fn restore(&self, image: State, position: u64) {
        if let Ok(mut usage) = self.usage.lock() {
            for (id, (remaining, period)) in &image.logged {
                let u = usage.entry(id.clone()).or_default();
                u.remaining = *remaining;
                u.period = *period;
            }
        }
        if let Ok(mut state) = self.state.write() {
            *state = image;
        }
        self.progress.advance(position);
    }
}
