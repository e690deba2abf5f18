//! Durable snapshots of the in-memory indexes, so that a server starts from the latest one and
//! reads only the events after it: start-up does not grow with the log.
//!
//! A snapshot is one row of `index_snapshots`, outside the log, per index: the index's state
//! (MessagePack), the position it was taken at and the hash of the event there, the format it is
//! written in, and an HMAC-SHA-256 over all of them under a key derived from the master key. At
//! start-up a snapshot is refused, and the index rebuilt from position 1, when it is missing, does
//! not verify (altered in the database, or written under another master key), does not decode, is
//! of an older format, or names a position whose event in this log has another hash (another or a
//! rewritten log). The outcome is reported by `/v1/admin/readiness` through [`IndexStatus`].
//!
//! Snapshots are taken off the request path, like a projection's checkpoint: every
//! [`SnapshotPolicy::every_events`] events or [`SnapshotPolicy::every`] (whichever comes first),
//! and as soon as an index that was rebuilt has caught up with the log's head at start-up. The
//! state is copied under the index's read lock and encoded and written by a background task.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use custodian_domain::{EventHash, Timestamp};
use custodian_projections::ViewDb;
use custodian_store::EventStore;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use sqlx::Row;
use utoipa::ToSchema;

/// When snapshots are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// After this many events applied since the last snapshot.
    pub every_events: u64,
    /// After this long, if anything was applied since the last snapshot.
    pub every: Duration,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        Self {
            every_events: 10_000,
            every: Duration::from_secs(60),
        }
    }
}

/// The snapshots of one ledger: where they are kept and the key that signs them.
#[derive(Clone)]
pub struct Snapshots {
    db: ViewDb,
    store: Arc<dyn EventStore>,
    key: [u8; 32],
    policy: SnapshotPolicy,
}

impl std::fmt::Debug for Snapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshots")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Why an index was rebuilt from the log instead of starting from its snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RebuildReason {
    /// There is no snapshot yet (a new ledger, or one written before snapshots existed).
    Missing,
    /// The snapshot's MAC does not verify: it was altered, or written under another master key.
    Tampered,
    /// The snapshot verifies but does not decode.
    Corrupt,
    /// The snapshot is of an older (or newer) format than this server writes.
    OldFormat,
    /// The snapshot's position holds another event in this log: it is of another or a rewritten
    /// log.
    OtherLog,
    /// The snapshot could not be read from the database.
    Unreadable,
}

/// Where an index started from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StartSource {
    /// Still loading its snapshot.
    Loading,
    /// From its snapshot, reading only the events after it.
    Snapshot,
    /// From position 1: the snapshot was refused (see `rebuild_reason`).
    Log,
}

/// An in-memory index's start and progress, as `/v1/admin/readiness` reports it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IndexReport {
    /// `authentication`, `authorization` or `keys`.
    pub name: &'static str,
    /// Where it started from.
    pub source: StartSource,
    /// Why it was rebuilt from the log, when it was.
    pub rebuild_reason: Option<RebuildReason>,
    /// The position of the snapshot it started from (0 when rebuilt).
    pub started_at: u64,
    /// Events read from the log since this process started it.
    pub events_read: u64,
    /// The last position applied.
    pub applied: u64,
    /// The position of the last snapshot this process wrote (0 before any).
    pub snapshot_written: u64,
}

#[derive(Debug)]
struct Start {
    source: StartSource,
    reason: Option<RebuildReason>,
    position: u64,
}

/// An index's start and progress, shared between its follower and `/v1/admin/readiness`.
#[derive(Debug)]
pub struct IndexStatus {
    name: &'static str,
    start: Mutex<Start>,
    events_read: AtomicU64,
    applied: AtomicU64,
    written: AtomicU64,
}

impl IndexStatus {
    pub(crate) fn new(name: &'static str) -> Self {
        Self {
            name,
            start: Mutex::new(Start {
                source: StartSource::Loading,
                reason: None,
                position: 0,
            }),
            events_read: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            written: AtomicU64::new(0),
        }
    }

    /// What `/v1/admin/readiness` shows of the index.
    pub fn report(&self) -> IndexReport {
        let (source, rebuild_reason, started_at) = self
            .start
            .lock()
            .map(|s| (s.source, s.reason, s.position))
            .unwrap_or((StartSource::Loading, None, 0));
        IndexReport {
            name: self.name,
            source,
            rebuild_reason,
            started_at,
            events_read: self.events_read.load(Ordering::Relaxed),
            applied: self.applied.load(Ordering::Relaxed),
            snapshot_written: self.written.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn started(&self, source: StartSource, reason: Option<RebuildReason>, at: u64) {
        if let Ok(mut s) = self.start.lock() {
            *s = Start {
                source,
                reason,
                position: at,
            };
        }
        self.applied.store(at, Ordering::Relaxed);
    }

    pub(crate) fn read_one(&self, position: u64) {
        self.events_read.fetch_add(1, Ordering::Relaxed);
        self.applied.store(position, Ordering::Relaxed);
    }

    pub(crate) fn wrote(&self, position: u64) {
        self.written.store(position, Ordering::Relaxed);
    }
}

/// A snapshot as loaded and verified.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) position: u64,
    pub(crate) body: Vec<u8>,
}

/// A snapshot to write.
#[derive(Debug)]
pub(crate) struct Taken {
    pub(crate) position: u64,
    pub(crate) hash: EventHash,
    pub(crate) body: Vec<u8>,
}

impl Snapshots {
    /// The snapshots kept in `db` for the log of `store`, signed with `key` (derived from the
    /// master key), taken as `policy` says.
    pub fn new(
        db: ViewDb,
        store: Arc<dyn EventStore>,
        key: [u8; 32],
        policy: SnapshotPolicy,
    ) -> Self {
        Self {
            db,
            store,
            key,
            policy,
        }
    }

    /// When snapshots are taken.
    pub fn policy(&self) -> SnapshotPolicy {
        self.policy
    }

    fn mac(&self, name: &str, position: u64, hash: &str, format: u64, body: &[u8]) -> String {
        // The key is 32 bytes: HMAC takes a key of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts a key of any length"));
        mac.update(name.as_bytes());
        mac.update(b"\0");
        mac.update(&position.to_be_bytes());
        mac.update(hash.as_bytes());
        mac.update(&format.to_be_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    /// The snapshot of `name` in `format`, verified against its MAC and against this log; or why
    /// the index must be rebuilt from the log.
    pub(crate) async fn load(&self, name: &str, format: u64) -> Result<Loaded, RebuildReason> {
        let row = sqlx::query(
            "SELECT position, event_hash, format, body, mac FROM index_snapshots WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(self.db.pool())
        .await
        .map_err(|e| {
            tracing::warn!(index = name, error = %e, "cannot read the index's snapshot");
            RebuildReason::Unreadable
        })?
        .ok_or(RebuildReason::Missing)?;
        let field = |e: sqlx::Error| {
            tracing::warn!(index = name, error = %e, "an unreadable snapshot row");
            RebuildReason::Corrupt
        };
        let position: i64 = row.try_get("position").map_err(field)?;
        let hash: String = row.try_get("event_hash").map_err(field)?;
        let stored_format: i64 = row.try_get("format").map_err(field)?;
        let body: Vec<u8> = row.try_get("body").map_err(field)?;
        let mac: String = row.try_get("mac").map_err(field)?;
        let position = u64::try_from(position).map_err(|_| RebuildReason::Corrupt)?;
        let stored_format = u64::try_from(stored_format).map_err(|_| RebuildReason::Corrupt)?;
        let expected = self.mac(name, position, &hash, stored_format, &body);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            expected.as_bytes(),
            mac.as_bytes(),
        )) {
            return Err(RebuildReason::Tampered);
        }
        if stored_format != format {
            return Err(RebuildReason::OldFormat);
        }
        let hash = EventHash::from_hex(&hash).map_err(|_| RebuildReason::Corrupt)?;
        let there = self.store.read_all(position, 1).await.map_err(|e| {
            tracing::warn!(index = name, error = %e, "cannot read the log at the snapshot's position");
            RebuildReason::Unreadable
        })?;
        match there.first() {
            Some(r) if r.position == position && r.hash == hash => Ok(Loaded { position, body }),
            _ => Err(RebuildReason::OtherLog),
        }
    }

    /// Writes `taken` as the snapshot of `name`, unless one of a later position is already there
    /// (another server on the same database wrote it).
    pub(crate) async fn save(
        &self,
        name: &str,
        format: u64,
        taken: &Taken,
        now: Timestamp,
    ) -> Result<(), sqlx::Error> {
        let hash = taken.hash.to_hex();
        let mac = self.mac(name, taken.position, &hash, format, &taken.body);
        let position = i64::try_from(taken.position).unwrap_or(i64::MAX);
        let format = i64::try_from(format).unwrap_or(i64::MAX);
        sqlx::query(
            "INSERT INTO index_snapshots (name, position, event_hash, format, body, mac, taken_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (name) DO UPDATE SET position = excluded.position, \
             event_hash = excluded.event_hash, format = excluded.format, body = excluded.body, \
             mac = excluded.mac, taken_at = excluded.taken_at \
             WHERE index_snapshots.position <= excluded.position",
        )
        .bind(name)
        .bind(position)
        .bind(hash)
        .bind(format)
        .bind(taken.body.as_slice())
        .bind(mac)
        .bind(now.to_string())
        .execute(self.db.pool())
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use custodian_domain::{Actor, StreamName};
    use custodian_store::{ExpectedVersion, StoreOptions};

    use super::*;

    async fn ledger(dir: &tempfile::TempDir) -> (Arc<dyn EventStore>, Snapshots, EventHash) {
        let path = dir.path().join("log.db").display().to_string();
        let store = custodian_store::open(&path, StoreOptions::default())
            .await
            .unwrap();
        let db = ViewDb::open(&path).await.unwrap();
        let ctx = crate::commands::Context {
            actor: Actor::system(),
            now: Timestamp::parse("2026-01-01T00:00:00Z").unwrap(),
            correlation_id: None,
        };
        let event = custodian_domain::tenant::TenantEvent::Reactivated;
        store
            .append(
                &StreamName::parse("_system/tenant/acme").unwrap(),
                ExpectedVersion::Any,
                vec![ctx.event(&event), ctx.event(&event)],
            )
            .await
            .unwrap();
        let hash = store.read_all(2, 1).await.unwrap()[0].hash;
        let snapshots = Snapshots::new(db, store.clone(), [7; 32], SnapshotPolicy::default());
        (store, snapshots, hash)
    }

    fn now() -> Timestamp {
        Timestamp::parse("2026-01-01T00:00:00Z").unwrap()
    }

    #[tokio::test]
    async fn a_snapshot_loads_only_if_its_mac_format_and_log_all_match() {
        let dir = tempfile::tempdir().unwrap();
        let (store, snapshots, hash) = ledger(&dir).await;
        assert_eq!(
            snapshots.load("test", 1).await.unwrap_err(),
            RebuildReason::Missing
        );
        let taken = Taken {
            position: 2,
            hash,
            body: b"state".to_vec(),
        };
        snapshots.save("test", 1, &taken, now()).await.unwrap();
        let loaded = snapshots.load("test", 1).await.unwrap();
        assert_eq!((loaded.position, loaded.body), (2, b"state".to_vec()));

        // Written by an older code: its format is not this one's.
        assert_eq!(
            snapshots.load("test", 2).await.unwrap_err(),
            RebuildReason::OldFormat
        );

        // Under another master key, the MAC does not verify.
        let other = Snapshots {
            key: [8; 32],
            ..snapshots.clone()
        };
        assert_eq!(
            other.load("test", 1).await.unwrap_err(),
            RebuildReason::Tampered
        );

        // An altered body.
        sqlx::query("UPDATE index_snapshots SET body = $1 WHERE name = 'test'")
            .bind(b"stat3".as_slice())
            .execute(snapshots.db.pool())
            .await
            .unwrap();
        assert_eq!(
            snapshots.load("test", 1).await.unwrap_err(),
            RebuildReason::Tampered
        );

        // Signed properly but naming an event this log does not hold there.
        let foreign = Taken {
            position: 2,
            hash: EventHash([9; 32]),
            body: b"state".to_vec(),
        };
        snapshots.save("test", 1, &foreign, now()).await.unwrap();
        assert_eq!(
            snapshots.load("test", 1).await.unwrap_err(),
            RebuildReason::OtherLog
        );
        // Beyond the log's head.
        let beyond = Taken {
            position: 3,
            hash,
            body: b"state".to_vec(),
        };
        snapshots.save("test", 1, &beyond, now()).await.unwrap();
        assert_eq!(
            snapshots.load("test", 1).await.unwrap_err(),
            RebuildReason::OtherLog
        );

        // An earlier snapshot never replaces a later one.
        snapshots.save("test", 1, &taken, now()).await.unwrap();
        assert_eq!(
            snapshots.load("test", 1).await.unwrap_err(),
            RebuildReason::OtherLog,
            "position 3 stays"
        );
        store.close().await;
    }
}

/// A snapshot taken after any prefix of a history, restored and followed by the rest of it, gives
/// each index exactly the state of a fold of the whole history.
#[cfg(test)]
mod round_trip {
    use std::collections::HashMap;

    use custodian_domain::email::EmailEvent;
    use custodian_domain::key::{KeyEvent, UsageLimit};
    use custodian_domain::policy::{
        AsOf, Check, EndReason, Permission, PolicyEvent, Resource, Subject, Target, Verdict,
    };
    use custodian_domain::secret::{Sealed, TokenHash};
    use custodian_domain::session::{RevokeReason, SessionEvent};
    use custodian_domain::tenant::{Plan, TenantEvent};
    use custodian_domain::user::{LoginMethod, UserEvent, UserKind};
    use custodian_domain::{DomainEvent, EventHash, EventRecord, NewEvent, StreamName, Timestamp};
    use custodian_testkit::sample::decided;
    use proptest::prelude::*;

    use crate::auth::index::AuthIndex;
    use crate::authz::PolicyIndex;
    use crate::follower::Snapshotted;
    use crate::keys::KeyIndex;

    fn at(minute: u64) -> Timestamp {
        Timestamp::parse("2026-01-01T00:00:00Z")
            .unwrap()
            .plus(time::Duration::minutes(i64::try_from(minute).unwrap()))
    }

    /// One event of a random history: its stream and the event as appended.
    type Step = (String, NewEvent);

    fn step(stream: String, event: &impl DomainEvent, minute: u64) -> Step {
        (stream, decided(event, at(minute)))
    }

    /// Seals the steps into a log: positions, versions and the hash chain.
    fn seal(steps: Vec<Step>) -> Vec<EventRecord> {
        let mut versions: HashMap<String, u64> = HashMap::new();
        let mut prev = EventHash::ZERO;
        let mut out = Vec::new();
        for (i, (stream, event)) in steps.into_iter().enumerate() {
            let version = versions.entry(stream.clone()).or_default();
            *version += 1;
            let record = EventRecord::seal(
                i as u64 + 1,
                StreamName::parse(&stream).unwrap(),
                *version,
                prev,
                event,
            )
            .unwrap();
            prev = record.hash;
            out.push(record);
        }
        out
    }

    /// The index after the whole log, and another restored from a snapshot taken after `cut`
    /// events (through the encoding a snapshot is written in) and then given the rest.
    fn full_and_resumed<I: Snapshotted>(
        make: impl Fn() -> I,
        log: &[EventRecord],
        cut: usize,
    ) -> (I, I) {
        let full = make();
        log.iter().for_each(|r| full.apply(r));
        let first = make();
        log[..cut].iter().for_each(|r| first.apply(r));
        let resumed = make();
        match first.image() {
            Some((position, hash, image)) => {
                assert_eq!(position, cut as u64);
                assert_eq!(hash, log[cut - 1].hash);
                let body = rmp_serde::to_vec_named(&image).unwrap();
                resumed.restore(rmp_serde::from_slice(&body).unwrap(), position);
            }
            None => assert_eq!(cut, 0),
        }
        log[cut..].iter().for_each(|r| resumed.apply(r));
        (full, resumed)
    }

    fn identity_step() -> impl Strategy<Value = (u8, u8, u8, u64)> {
        (0u8..12, 0u8..3, 0u8..6, 0u64..120)
    }

    /// Tenants, users, emails and sessions, on a few ids so that events meet.
    fn identity_history(raw: Vec<(u8, u8, u8, u64)>) -> Vec<EventRecord> {
        let sealed = Sealed("v1.x".into());
        let steps = raw
            .into_iter()
            .map(|(kind, t, n, minute)| {
                let tenant = format!("t{t}");
                let user = format!("{tenant}/user/u{n}");
                let session = format!("{tenant}/session/s{n}");
                let tenant_stream = format!("_system/tenant/{tenant}");
                match kind {
                    0 => step(
                        tenant_stream,
                        &TenantEvent::Created {
                            name: "T".into(),
                            slug: tenant.clone(),
                            plan: [Plan::Free, Plan::Team, Plan::Enterprise][usize::from(n % 3)],
                        },
                        minute,
                    ),
                    1 => step(
                        tenant_stream,
                        &TenantEvent::Suspended { reason: "r".into() },
                        minute,
                    ),
                    2 => step(tenant_stream, &TenantEvent::Reactivated, minute),
                    3 => step(
                        user,
                        &UserEvent::Created {
                            kind: UserKind::Person,
                            email: sealed.clone(),
                            name: sealed.clone(),
                            email_index: "a".repeat(64),
                            roles: vec!["admin".into()],
                        },
                        minute,
                    ),
                    4 => step(user, &UserEvent::Disabled { reason: "r".into() }, minute),
                    5 => step(user, &UserEvent::Enabled {}, minute),
                    6 => step(user, &UserEvent::Deleted {}, minute),
                    7 => step(
                        format!("{tenant}/email/e{}", n % 2),
                        &EmailEvent::Claimed {
                            user_id: format!("u{n}"),
                        },
                        minute,
                    ),
                    8 => step(
                        format!("{tenant}/email/e{}", n % 2),
                        &EmailEvent::Released {
                            user_id: format!("u{n}"),
                        },
                        minute,
                    ),
                    9 | 10 => step(
                        session,
                        &SessionEvent::Started {
                            user_id: format!("u{}", n / 2),
                            refresh: TokenHash("0".repeat(64)),
                            method: LoginMethod::Password,
                            expires_at: at(minute + 60),
                            ip: None,
                            user_agent: None,
                        },
                        minute,
                    ),
                    _ => step(
                        session,
                        &SessionEvent::Revoked {
                            reason: RevokeReason::Logout,
                        },
                        minute,
                    ),
                }
            })
            .collect();
        seal(steps)
    }

    /// Keys issued, limited, rotated, used and revoked, beside other events.
    fn key_history(raw: Vec<(u8, u8, u8, u64)>) -> Vec<EventRecord> {
        let steps = raw
            .into_iter()
            .map(|(kind, _, n, minute)| {
                let stream = format!("acme/key/k{n}");
                let hash = TokenHash(format!("{n}{minute:063}"));
                match kind % 6 {
                    0 | 1 => step(
                        stream,
                        &KeyEvent::Issued {
                            owner: "u1".into(),
                            name: "k".into(),
                            scopes: vec![Permission::parse("project:read").unwrap()],
                            on: None,
                            expires_at: None,
                            ip_allowlist: vec![],
                            ratelimit: None,
                            usage_limit: (kind % 2 == 0).then_some(UsageLimit {
                                remaining: 100,
                                refill: None,
                            }),
                            hash,
                            preview: "cst_…".into(),
                        },
                        minute,
                    ),
                    2 => step(
                        stream,
                        &KeyEvent::Rotated {
                            hash,
                            preview: "cst_…".into(),
                            previous_valid_until: at(minute + 5),
                        },
                        minute,
                    ),
                    3 => step(
                        stream,
                        &KeyEvent::Used {
                            window_start: at(minute),
                            uses: 3,
                            cost: 3,
                            first_used_at: at(minute),
                            last_used_at: at(minute),
                            remaining: Some(100 - minute % 50),
                        },
                        minute,
                    ),
                    4 => step(stream, &KeyEvent::Revoked {}, minute),
                    _ => step(
                        "_system/tenant/acme".into(),
                        &TenantEvent::Reactivated,
                        minute,
                    ),
                }
            })
            .collect();
        seal(steps)
    }

    const PRINCIPALS: [&str; 3] = ["p0", "p1", "p2"];
    const PERMISSIONS: [&str; 3] = ["project:read", "project:deploy", "project:delete"];

    /// Grants and assignments made and ended, and principals and tenants put out of service.
    fn policy_history(raw: Vec<(u8, u8, u8, u64)>) -> Vec<EventRecord> {
        let mut minute_floor = 0;
        let steps = raw
            .into_iter()
            .map(|(kind, t, n, minute)| {
                minute_floor += minute % 3;
                let minute = minute_floor;
                let tenant = format!("t{}", t % 2);
                let rules = format!("{tenant}/policy/rules");
                let principal = PRINCIPALS[usize::from(n % 3)].to_owned();
                match kind % 8 {
                    0 | 1 => step(
                        rules,
                        &PolicyEvent::GrantCreated {
                            id: format!("grant_{n}_{minute}"),
                            subject: if kind % 2 == 0 {
                                Subject::Principal(principal)
                            } else {
                                Subject::Role("developer".into())
                            },
                            permission: Permission::parse(PERMISSIONS[usize::from(t % 3)]).unwrap(),
                            on: None,
                            effect: Default::default(),
                            valid_from: None,
                            valid_until: None,
                            conditions: None,
                            granted_by: "root".into(),
                        },
                        minute,
                    ),
                    2 => step(
                        rules,
                        &PolicyEvent::AssignmentCreated {
                            id: format!("asg_{n}_{minute}"),
                            principal,
                            role: "developer".into(),
                            on: None,
                            valid_from: None,
                            valid_until: Some(at(minute + 30)),
                            assigned_by: "root".into(),
                            migrated_from: None,
                        },
                        minute,
                    ),
                    3 => step(
                        rules,
                        &PolicyEvent::GrantRevoked {
                            id: format!("grant_{n}_{}", minute.saturating_sub(1)),
                            reason: EndReason::Revoked,
                        },
                        minute,
                    ),
                    4 => step(
                        format!("{tenant}/user/{principal}"),
                        &UserEvent::Disabled { reason: "r".into() },
                        minute,
                    ),
                    5 => step(
                        format!("{tenant}/user/{principal}"),
                        &UserEvent::Enabled {},
                        minute,
                    ),
                    6 => step(
                        format!("_system/tenant/{tenant}"),
                        &TenantEvent::Suspended { reason: "r".into() },
                        minute,
                    ),
                    _ => step(
                        format!("_system/tenant/{tenant}"),
                        &TenantEvent::Reactivated,
                        minute,
                    ),
                }
            })
            .collect();
        seal(steps)
    }

    /// Every decision the policy index gives on the history's principals and permissions, now
    /// and at every minute of it.
    fn decisions(index: &PolicyIndex, until: u64) -> Vec<(Verdict, String, u64)> {
        let resource = Resource::parse("project/p42").unwrap();
        let mut out = Vec::new();
        for tenant in ["t0", "t1"] {
            for principal in PRINCIPALS {
                for permission in PERMISSIONS {
                    let permission = Permission::parse(permission).unwrap();
                    for minute in (0..=until).step_by(7) {
                        for as_of in [
                            AsOf::now(at(minute)),
                            index.as_of(crate::authz::When::At(at(minute))).unwrap(),
                        ] {
                            let check = Check {
                                principal,
                                permission: &permission,
                                target: Target::Resource(&resource),
                                ip: None,
                                as_of,
                                explain: false,
                            };
                            let (d, position) = index.decide(tenant, &check).unwrap();
                            out.push((d.verdict, d.reason, position));
                        }
                    }
                }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn the_authentication_index_resumes_from_a_snapshot_exactly(
            raw in proptest::collection::vec(identity_step(), 1..80),
            cut in any::<proptest::sample::Index>(),
        ) {
            let log = identity_history(raw);
            let cut = cut.index(log.len() + 1);
            let (full, resumed) = full_and_resumed(AuthIndex::detached, &log, cut);
            prop_assert_eq!(full.image().map(|i| i.2), resumed.image().map(|i| i.2));
            prop_assert_eq!(full.applied(), resumed.applied());
        }

        #[test]
        fn the_key_index_resumes_from_a_snapshot_exactly(
            raw in proptest::collection::vec(identity_step(), 1..80),
            cut in any::<proptest::sample::Index>(),
        ) {
            let log = key_history(raw);
            let cut = cut.index(log.len() + 1);
            let (full, resumed) = full_and_resumed(KeyIndex::detached, &log, cut);
            prop_assert_eq!(full.image().map(|i| i.2), resumed.image().map(|i| i.2));
            for n in 0..6 {
                let id = format!("k{n}");
                let (a, b) = (full.get(&id), resumed.get(&id));
                prop_assert_eq!(&a, &b);
                if let Some(entry) = a {
                    for minute in [0, 60, 200] {
                        prop_assert_eq!(
                            full.remaining(&entry, at(minute)),
                            resumed.remaining(&entry, at(minute))
                        );
                    }
                }
            }
        }

        #[test]
        fn the_authorization_index_resumes_from_a_snapshot_exactly(
            raw in proptest::collection::vec(identity_step(), 1..80),
            cut in any::<proptest::sample::Index>(),
        ) {
            let log = policy_history(raw);
            let cut = cut.index(log.len() + 1);
            let (full, resumed) = full_and_resumed(PolicyIndex::detached, &log, cut);
            let until = 3 * log.len() as u64;
            prop_assert_eq!(decisions(&full, until), decisions(&resumed, until));
            prop_assert_eq!(full.applied(), resumed.applied());
        }
    }
}
