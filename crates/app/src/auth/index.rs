//! The in-memory authentication index: who may act right now.
//!
//! A task follows the log from the index's snapshot (from position 1 without one, see
//! [`crate::snapshot`]) and keeps, per tenant, user and session, exactly what an
//! authenticated request must check: the tenant is active, the user is active, the session is live.
//! Requests wait (bounded) until the index has applied the log's head as this process knows it, so
//! a logout, a revocation, a disabled user or a suspended tenant stops every token at once, with no
//! database round trip on the request path. A tenant's suspension ends its sessions for good: they
//! stay ended after a reactivation.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use custodian_domain::email::EmailEvent;
use custodian_domain::secret::Sealed;
use custodian_domain::session::SessionEvent;
use custodian_domain::tenant::{Plan, TenantEvent, TenantStatus};
use custodian_domain::user::{UserEvent, UserKind, UserStatus};
use custodian_domain::{DomainEvent, EventHash, EventRecord, Timestamp};
use custodian_store::EventStore;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::follower::{Progress, Snapshotted};
use crate::snapshot::{IndexStatus, Snapshots};

/// How often expired sessions are dropped from memory.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// The platform scope: always active, has no tenant stream.
pub const SYSTEM_TENANT: &str = "_system";

/// What the index knows of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedUser {
    /// Person, agent or service.
    pub kind: UserKind,
    /// Lifecycle status.
    pub status: UserStatus,
    /// Built-in roles.
    pub roles: Vec<String>,
    /// The sealed email (absent once deleted).
    pub email: Option<Sealed>,
    /// The sealed name (absent once deleted).
    pub name: Option<Sealed>,
    /// Whether TOTP is required at login.
    pub mfa_enabled: bool,
}

/// What the index knows of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedSession {
    /// Its tenant.
    pub tenant: String,
    /// Its user.
    pub user_id: String,
    /// Revoked sessions stay revoked.
    pub revoked: bool,
    /// Absolute expiry.
    pub expires_at: Timestamp,
}

/// Everything the index holds, as its snapshot holds it too.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct State {
    /// The position and hash of the last event applied.
    at: Option<(u64, EventHash)>,
    tenants: HashMap<String, TenantStatus>,
    /// Tenant → its plan.
    plans: HashMap<String, Plan>,
    users: HashMap<(String, String), IndexedUser>,
    sessions: HashMap<String, IndexedSession>,
    user_sessions: HashMap<(String, String), Vec<String>>,
    erased: std::collections::HashSet<String>,
    emails: HashMap<(String, String), String>,
}

/// Why a token's holder may not act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The tenant is suspended.
    #[error("the tenant is suspended")]
    TenantSuspended,
    /// The tenant does not exist.
    #[error("the tenant does not exist")]
    UnknownTenant,
    /// The user is disabled, deleted or unknown.
    #[error("the user may not act")]
    UserInactive,
    /// The session was revoked, expired or is unknown.
    #[error("the session has ended")]
    SessionEnded,
    /// The index has not caught up with the log in time.
    #[error("the authentication index is behind the log")]
    Behind,
}

/// The index and its follower's progress.
#[derive(Debug)]
pub struct AuthIndex {
    state: RwLock<State>,
    progress: Progress,
    head: watch::Receiver<u64>,
    status: Arc<IndexStatus>,
}

impl AuthIndex {
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
            progress: Progress::new(wait),
            head: store.watch_head(),
            status: Arc::new(IndexStatus::new(Self::NAME)),
        });
        let status = index.status.clone();
        let snapshot_clock = clock.clone();
        let pruner = Arc::downgrade(&index);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PRUNE_EVERY);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let Some(index) = pruner.upgrade() else {
                    return;
                };
                index.prune(clock.now());
            }
        });
        crate::follower::spawn_snapshotted(
            index.clone(),
            status,
            store,
            snapshots,
            snapshot_clock,
            shutdown,
        );
        index
    }

    /// An index that follows nothing, for tests that apply events by hand.
    #[cfg(test)]
    pub(crate) fn detached() -> Self {
        Self {
            state: RwLock::new(State::default()),
            progress: Progress::new(Duration::ZERO),
            head: watch::channel(0).1,
            status: Arc::new(IndexStatus::new(Self::NAME)),
        }
    }

    /// Where the index started from and how far it has read.
    pub fn status(&self) -> &Arc<IndexStatus> {
        &self.status
    }

    /// Forgets sessions that have expired: an unknown session is refused like an expired one.
    pub fn prune(&self, now: Timestamp) {
        if let Ok(mut state) = self.state.write() {
            let State {
                sessions,
                user_sessions,
                ..
            } = &mut *state;
            sessions.retain(|_, s| now < s.expires_at);
            user_sessions.retain(|_, ids| {
                ids.retain(|id| sessions.contains_key(id));
                !ids.is_empty()
            });
        }
    }

    /// The last position applied.
    pub fn applied(&self) -> u64 {
        self.progress.applied()
    }

    /// Waits until the index has applied every commit this process knows of (bounded).
    pub async fn catch_up(&self) -> Result<(), Refusal> {
        let head = *self.head.borrow();
        self.wait_for(head).await
    }

    /// Waits until the index has applied `position` (bounded).
    pub async fn wait_for(&self, position: u64) -> Result<(), Refusal> {
        if self.progress.reached(position).await {
            Ok(())
        } else {
            Err(Refusal::Behind)
        }
    }

    /// Whether the holder of a session may act at `now`; the user as the index knows them.
    pub fn check(
        &self,
        tenant: &str,
        user_id: &str,
        session_id: &str,
        now: Timestamp,
    ) -> Result<IndexedUser, Refusal> {
        let state = self.state.read().map_err(|_| Refusal::Behind)?;
        // The tenant first: while it is suspended, every token of it hears so, though its
        // sessions have ended too.
        Self::tenant_may_act(&state, tenant)?;
        match state.sessions.get(session_id) {
            Some(s)
                if s.tenant == tenant
                    && s.user_id == user_id
                    && !s.revoked
                    && now < s.expires_at => {}
            _ => return Err(Refusal::SessionEnded),
        }
        match state.users.get(&(tenant.to_owned(), user_id.to_owned())) {
            Some(u) if u.status == UserStatus::Active => Ok(u.clone()),
            _ => Err(Refusal::UserInactive),
        }
    }

    fn tenant_may_act(state: &State, tenant: &str) -> Result<(), Refusal> {
        if tenant == SYSTEM_TENANT {
            return Ok(());
        }
        match state.tenants.get(tenant) {
            Some(TenantStatus::Active) => Ok(()),
            Some(TenantStatus::Suspended) => Err(Refusal::TenantSuspended),
            None => Err(Refusal::UnknownTenant),
        }
    }

    /// Whether a tenant exists and is active (`_system` always is).
    pub fn tenant(&self, tenant: &str) -> Result<(), Refusal> {
        let state = self.state.read().map_err(|_| Refusal::Behind)?;
        Self::tenant_may_act(&state, tenant)
    }

    /// Whether a tenant exists at all, suspended or not.
    pub fn tenant_exists(&self, tenant: &str) -> bool {
        tenant == SYSTEM_TENANT
            || self
                .state
                .read()
                .is_ok_and(|s| s.tenants.contains_key(tenant))
    }

    /// A tenant's plan (`free` for one the index does not know).
    pub fn plan(&self, tenant: &str) -> Plan {
        self.state
            .read()
            .ok()
            .and_then(|s| s.plans.get(tenant).copied())
            .unwrap_or(Plan::Free)
    }

    /// A user as the index knows them.
    pub fn user(&self, tenant: &str, user_id: &str) -> Option<IndexedUser> {
        self.state
            .read()
            .ok()?
            .users
            .get(&(tenant.to_owned(), user_id.to_owned()))
            .cloned()
    }

    /// The `(tenant, user id)` of every user whose user events name `role`, sorted.
    pub fn users_with_role(&self, role: &str) -> Vec<(String, String)> {
        let Ok(state) = self.state.read() else {
            return vec![];
        };
        let mut out: Vec<(String, String)> = state
            .users
            .iter()
            .filter(|(_, u)| u.roles.iter().any(|r| r == role))
            .map(|(k, _)| k.clone())
            .collect();
        out.sort();
        out
    }

    /// The user holding an email (by blind index) in a tenant.
    pub fn user_by_email(&self, tenant: &str, email_index: &str) -> Option<String> {
        self.state
            .read()
            .ok()?
            .emails
            .get(&(tenant.to_owned(), email_index.to_owned()))
            .cloned()
    }

    /// Whether the user with this id has been erased.
    pub fn is_erased(&self, user_id: &str) -> bool {
        self.state.read().is_ok_and(|s| s.erased.contains(user_id))
    }

    /// A session as the index knows it.
    pub fn session(&self, session_id: &str) -> Option<IndexedSession> {
        self.state.read().ok()?.sessions.get(session_id).cloned()
    }

    /// The sessions of a user that are not revoked (some may have expired).
    pub fn live_sessions(&self, tenant: &str, user_id: &str) -> Vec<String> {
        let Ok(state) = self.state.read() else {
            return vec![];
        };
        state
            .user_sessions
            .get(&(tenant.to_owned(), user_id.to_owned()))
            .map(|ids| {
                ids.iter()
                    .filter(|id| state.sessions.get(*id).is_some_and(|s| !s.revoked))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the log holds no event yet (a platform bootstrap is possible).
    pub fn is_empty(&self) -> bool {
        self.applied() == 0
    }
}

impl Snapshotted for AuthIndex {
    const NAME: &'static str = "authentication";
    // 2: a tenant's suspension ends its sessions; a snapshot of format 1 may hold them live.
    const FORMAT: u64 = 2;
    type Image = State;

    fn apply(&self, record: &EventRecord) {
        if let Ok(mut state) = self.state.write() {
            apply(&mut state, record);
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
        if let Ok(mut state) = self.state.write() {
            *state = image;
        }
        self.progress.advance(position);
    }
}

fn apply(state: &mut State, record: &EventRecord) {
    let tenant = record.stream.tenant();
    let id = record.stream.id();
    let (t, schema, data) = (record.event_type.as_str(), record.schema, &record.data);
    match record.stream.aggregate() {
        "tenant" => match TenantEvent::decode(t, schema, data) {
            Ok(TenantEvent::Created { plan, .. }) => {
                state.tenants.insert(id.to_owned(), TenantStatus::Active);
                state.plans.insert(id.to_owned(), plan);
            }
            Ok(TenantEvent::PlanChanged { plan }) => {
                state.plans.insert(id.to_owned(), plan);
            }
            Ok(TenantEvent::Reactivated) => {
                state.tenants.insert(id.to_owned(), TenantStatus::Active);
            }
            Ok(TenantEvent::Suspended { .. }) => {
                state.tenants.insert(id.to_owned(), TenantStatus::Suspended);
                end_sessions_of(state, id);
            }
            _ => {}
        },
        "email" => match EmailEvent::decode(t, schema, data) {
            Ok(EmailEvent::Claimed { user_id }) => {
                state
                    .emails
                    .insert((tenant.to_owned(), id.to_owned()), user_id);
            }
            Ok(EmailEvent::Released { user_id }) => {
                let key = (tenant.to_owned(), id.to_owned());
                if state.emails.get(&key) == Some(&user_id) {
                    state.emails.remove(&key);
                }
            }
            Err(_) => {}
        },
        "user" => {
            let Ok(event) = UserEvent::decode(t, schema, data) else {
                return;
            };
            let key = (tenant.to_owned(), id.to_owned());
            match event {
                UserEvent::Invited {
                    kind,
                    email,
                    name,
                    roles,
                    ..
                }
                | UserEvent::Created {
                    kind,
                    email,
                    name,
                    roles,
                    ..
                } => {
                    let status = if t == "user.invited" {
                        UserStatus::Invited
                    } else {
                        UserStatus::Active
                    };
                    state.users.insert(
                        key,
                        IndexedUser {
                            kind,
                            status,
                            roles,
                            email: Some(email),
                            name: Some(name),
                            mfa_enabled: false,
                        },
                    );
                }
                other => {
                    let Some(u) = state.users.get_mut(&key) else {
                        return;
                    };
                    match other {
                        UserEvent::InvitationAccepted {} | UserEvent::Enabled {} => {
                            u.status = UserStatus::Active;
                        }
                        UserEvent::Disabled { .. } => u.status = UserStatus::Disabled,
                        UserEvent::Deleted {} => {
                            state.erased.insert(id.to_owned());
                            u.status = UserStatus::Deleted;
                            u.email = None;
                            u.name = None;
                            u.roles.clear();
                            u.mfa_enabled = false;
                        }
                        UserEvent::ProfileUpdated { email, name, .. } => {
                            if let Some(e) = email {
                                u.email = Some(e);
                            }
                            if let Some(n) = name {
                                u.name = Some(n);
                            }
                        }
                        UserEvent::TotpEnabled { .. } => u.mfa_enabled = true,
                        UserEvent::TotpDisabled { .. } => u.mfa_enabled = false,
                        _ => {}
                    }
                }
            }
        }
        "session" => match SessionEvent::decode(t, schema, data) {
            Ok(SessionEvent::Started {
                user_id,
                expires_at,
                ..
            }) => {
                state
                    .user_sessions
                    .entry((tenant.to_owned(), user_id.clone()))
                    .or_default()
                    .push(id.to_owned());
                // A session the log records after its tenant's suspension (a login that raced
                // it) ends with the others.
                let suspended = state.tenants.get(tenant) == Some(&TenantStatus::Suspended);
                state.sessions.insert(
                    id.to_owned(),
                    IndexedSession {
                        tenant: tenant.to_owned(),
                        user_id,
                        revoked: suspended,
                        expires_at,
                    },
                );
            }
            Ok(SessionEvent::Revoked { .. }) => {
                if let Some(s) = state.sessions.get_mut(id) {
                    s.revoked = true;
                    let key = (s.tenant.clone(), s.user_id.clone());
                    if let Some(ids) = state.user_sessions.get_mut(&key) {
                        ids.retain(|i| i != id);
                    }
                }
            }
            _ => {}
        },
        _ => {}
    }
}

/// Ends every session of `tenant` for good, as its suspension does: reactivating the tenant
/// restores none of them, so every token issued before the suspension stays refused and its
/// people sign in again.
fn end_sessions_of(state: &mut State, tenant: &str) {
    let State {
        sessions,
        user_sessions,
        ..
    } = state;
    for session in sessions.values_mut().filter(|s| s.tenant == tenant) {
        session.revoked = true;
    }
    user_sessions.retain(|(t, _), _| t != tenant);
}

#[cfg(test)]
mod tests {
    use custodian_domain::secret::TokenHash;
    use custodian_domain::session::RevokeReason;
    use custodian_domain::tenant::Plan;
    use custodian_domain::user::LoginMethod;
    use custodian_domain::{Actor, StreamName};
    use custodian_store::{ExpectedVersion, StoreOptions};

    use super::*;
    use crate::commands::Context;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    async fn append<E: DomainEvent>(store: &Arc<dyn EventStore>, stream: &str, events: &[E]) {
        let ctx = Context {
            actor: Actor::system(),
            now: ts("2026-01-01T00:00:00Z"),
            correlation_id: None,
        };
        store
            .append(
                &StreamName::parse(stream).unwrap(),
                ExpectedVersion::Any,
                events.iter().map(|e| ctx.event(e)).collect(),
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn revocation_suspension_and_disabling_stop_a_session_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.db").display().to_string();
        let store = custodian_store::open(&path, StoreOptions::default())
            .await
            .unwrap();
        let index = AuthIndex::start(
            store.clone(),
            None,
            Duration::from_secs(2),
            Arc::new(crate::clock::SystemClock),
            CancellationToken::new(),
        );
        let sealed = Sealed("v1.x".into());
        append(
            &store,
            "_system/tenant/acme",
            &[TenantEvent::Created {
                name: "Acme".into(),
                slug: "acme".into(),
                plan: Plan::Free,
            }],
        )
        .await;
        append(
            &store,
            "acme/user/u1",
            &[UserEvent::Created {
                kind: UserKind::Person,
                email: sealed.clone(),
                name: sealed,
                email_index: "a".repeat(64),
                roles: vec![],
            }],
        )
        .await;
        append(
            &store,
            "acme/session/s1",
            &[SessionEvent::Started {
                user_id: "u1".into(),
                refresh: TokenHash("0".repeat(64)),
                method: LoginMethod::Password,
                expires_at: ts("2026-02-01T00:00:00Z"),
                ip: None,
                user_agent: None,
            }],
        )
        .await;
        let now = ts("2026-01-02T00:00:00Z");
        index.catch_up().await.unwrap();
        assert!(index.check("acme", "u1", "s1", now).is_ok());
        assert_eq!(
            index.check("acme", "u1", "s1", ts("2026-03-01T00:00:00Z")),
            Err(Refusal::SessionEnded),
            "expired"
        );
        assert_eq!(
            index.check("globex", "u1", "s1", now),
            Err(Refusal::UnknownTenant),
            "another tenant's claim on the session"
        );
        assert_eq!(index.user_by_email("acme", &"a".repeat(64)), None);
        assert_eq!(index.live_sessions("acme", "u1"), vec!["s1".to_owned()]);

        append(
            &store,
            "_system/tenant/acme",
            &[TenantEvent::Suspended {
                reason: "unpaid".into(),
            }],
        )
        .await;
        index.catch_up().await.unwrap();
        assert_eq!(
            index.check("acme", "u1", "s1", now),
            Err(Refusal::TenantSuspended)
        );
        append(&store, "_system/tenant/acme", &[TenantEvent::Reactivated]).await;
        index.catch_up().await.unwrap();
        assert_eq!(
            index.check("acme", "u1", "s1", now),
            Err(Refusal::SessionEnded),
            "a suspension ends the tenant's sessions for good"
        );
        assert!(index.live_sessions("acme", "u1").is_empty());
        append(
            &store,
            "acme/session/s2",
            &[SessionEvent::Started {
                user_id: "u1".into(),
                refresh: TokenHash("1".repeat(64)),
                method: LoginMethod::Password,
                expires_at: ts("2026-02-01T00:00:00Z"),
                ip: None,
                user_agent: None,
            }],
        )
        .await;
        index.catch_up().await.unwrap();
        assert!(
            index.check("acme", "u1", "s2", now).is_ok(),
            "a new session"
        );
        append(
            &store,
            "acme/user/u1",
            &[UserEvent::Disabled {
                reason: "left".into(),
            }],
        )
        .await;
        index.catch_up().await.unwrap();
        assert_eq!(
            index.check("acme", "u1", "s2", now),
            Err(Refusal::UserInactive)
        );
        append(&store, "acme/user/u1", &[UserEvent::Enabled {}]).await;
        append(
            &store,
            "acme/session/s2",
            &[SessionEvent::Revoked {
                reason: RevokeReason::Logout,
            }],
        )
        .await;
        index.catch_up().await.unwrap();
        assert_eq!(
            index.check("acme", "u1", "s2", now),
            Err(Refusal::SessionEnded)
        );
        assert!(index.live_sessions("acme", "u1").is_empty());
        index.prune(ts("2026-03-01T00:00:00Z"));
        assert_eq!(index.session("s1"), None);
        store.close().await;
    }
}
