//! The `users` and `sessions` views fold realistic identity histories, decided by the domain, into
//! rows the API can serve; a view rebuilt from position 0 equals the live one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use custodian_domain::id::type_id;
use custodian_domain::secret::{Sealed, TokenHash};
use custodian_domain::session::{self, RevokeReason, Session, SessionCommand, SessionEvent};
use custodian_domain::user::{
    self, LockoutPolicy, LoginFailure, LoginMethod, ROLE_TENANT_ADMIN, User, UserCommand,
    UserEvent, UserKind, UserStatus,
};
use custodian_domain::{DomainEvent, Timestamp};
use custodian_projections::sessions::{self as sessions_view, SessionRow, SessionsView};
use custodian_projections::users::{
    self as users_view, CredentialRow, UserFilter, UserRow, UsersView,
};
use custodian_projections::{Projection, Projections, Tables, ViewDb, request_rebuild};
use custodian_store::{EventStore, ExpectedVersion};
use custodian_testkit::sample::decided;
use custodian_testkit::{Ledger, stream};
use sqlx::Row;

use crate::support::Views as _;

custodian_testkit::on_every_backend!(
    a_user_lifecycle_and_its_credential_facts_are_folded,
    users_are_listed_by_page_and_filter_within_their_tenant_only,
    sessions_are_listed_active_or_all_and_reuse_revokes,
);

const WAIT: Duration = Duration::from_secs(20);

/// The log, the domain's own fold of every stream appended, and a clock that moves one second per
/// command.
struct World {
    store: Arc<dyn EventStore>,
    clock: Timestamp,
    counter: u64,
    users: HashMap<String, (Option<User>, u64)>,
    sessions: HashMap<String, (Option<Session>, u64)>,
}

impl World {
    fn new(store: Arc<dyn EventStore>) -> Self {
        Self {
            store,
            clock: Timestamp::parse("2026-11-25T12:00:00Z").unwrap(),
            counter: 0,
            users: HashMap::new(),
            sessions: HashMap::new(),
        }
    }

    fn advance(&mut self, d: time::Duration) {
        self.clock = self.clock.plus(d);
    }

    fn now(&self) -> Timestamp {
        self.clock
    }

    /// 64 hex digits, different each call: a blind index or a token hash.
    fn hex(&mut self) -> String {
        self.counter += 1;
        format!("{:064x}", self.counter)
    }

    fn token(&mut self) -> TokenHash {
        TokenHash(self.hex())
    }

    fn user_state(&self, tenant: &str, id: &str) -> User {
        self.users[&format!("{tenant}/user/{id}")]
            .0
            .clone()
            .unwrap()
    }

    fn session_state(&self, tenant: &str, id: &str) -> Session {
        self.sessions[&format!("{tenant}/session/{id}")]
            .0
            .clone()
            .unwrap()
    }

    /// Decides `command` (built at the new time) on the user and appends what it yields.
    async fn user(
        &mut self,
        tenant: &str,
        id: &str,
        command: impl FnOnce(Timestamp) -> UserCommand,
    ) -> Vec<UserEvent> {
        self.advance(time::Duration::seconds(1));
        let at = self.clock;
        let name = format!("{tenant}/user/{id}");
        let (state, version) = self.users.remove(&name).unwrap_or((None, 0));
        let events = user::decide(state.as_ref(), command(at)).unwrap();
        append(&self.store, &name, version, &events, at).await;
        let state = events.iter().fold(state, user::evolve);
        self.users
            .insert(name, (state, version + events.len() as u64));
        events
    }

    /// Decides `command` (built at the new time) on the session and appends what it yields.
    async fn session(
        &mut self,
        tenant: &str,
        id: &str,
        command: impl FnOnce(Timestamp) -> SessionCommand,
    ) -> Vec<SessionEvent> {
        self.advance(time::Duration::seconds(1));
        let at = self.clock;
        let name = format!("{tenant}/session/{id}");
        let (state, version) = self.sessions.remove(&name).unwrap_or((None, 0));
        let events = session::decide(state.as_ref(), command(at)).unwrap();
        append(&self.store, &name, version, &events, at).await;
        let state = events.iter().fold(state, session::evolve);
        self.sessions
            .insert(name, (state, version + events.len() as u64));
        events
    }

    /// Creates an active user; people get a password.
    async fn create(&mut self, tenant: &str, kind: UserKind) -> String {
        let id = type_id("user", uuid::Uuid::now_v7());
        let index = self.hex();
        self.create_with_index(tenant, &id, kind, index).await;
        id
    }

    async fn create_with_index(&mut self, tenant: &str, id: &str, kind: UserKind, index: String) {
        let n = self.counter;
        self.user(tenant, id, |_| UserCommand::Create {
            kind,
            email: Sealed(format!("v1.email-{n}")),
            name: Sealed(format!("v1.name-{n}")),
            email_index: index,
            roles: vec![],
            credential: (kind == UserKind::Person).then(|| Sealed(format!("v1.pw-{n}"))),
        })
        .await;
    }

    /// Invites a person, who stays invited.
    async fn invite(&mut self, tenant: &str) -> String {
        let id = type_id("user", uuid::Uuid::now_v7());
        let index = self.hex();
        let invitation = self.token();
        let n = self.counter;
        self.user(tenant, &id, |now| UserCommand::Invite {
            kind: UserKind::Person,
            email: Sealed(format!("v1.email-{n}")),
            name: Sealed(format!("v1.name-{n}")),
            email_index: index,
            roles: vec![ROLE_TENANT_ADMIN.into()],
            invitation,
            expires_at: now.plus(time::Duration::days(7)),
        })
        .await;
        id
    }

    /// A password-only login of a person and the session it starts, expiring after `ttl`.
    async fn login(&mut self, tenant: &str, user_id: &str, ttl: time::Duration) -> String {
        let session_id = type_id("sess", uuid::Uuid::now_v7());
        let sid = session_id.clone();
        self.user(tenant, user_id, |now| UserCommand::CompleteLogin {
            session_id: sid,
            challenge: None,
            totp_step: None,
            recovery_code: None,
            ip: Some("192.0.2.7".into()),
            now,
        })
        .await;
        let refresh = self.token();
        let user_id = user_id.to_owned();
        self.session(tenant, &session_id, |now| SessionCommand::Start {
            user_id,
            refresh,
            method: LoginMethod::Password,
            expires_at: now.plus(ttl),
            ip: Some("192.0.2.7".into()),
            user_agent: Some("curl/8.5".into()),
        })
        .await;
        session_id
    }

    /// A login of a person enrolled in TOTP: a challenge, then a TOTP step or a recovery code.
    async fn mfa_login(
        &mut self,
        tenant: &str,
        user_id: &str,
        totp_step: Option<u64>,
        recovery_code: Option<TokenHash>,
    ) {
        let challenge = self.token();
        let c = challenge.clone();
        self.user(tenant, user_id, |now| UserCommand::IssueMfaChallenge {
            challenge: c,
            expires_at: now.plus(time::Duration::minutes(5)),
            now,
        })
        .await;
        self.user(tenant, user_id, |now| UserCommand::CompleteLogin {
            session_id: type_id("sess", uuid::Uuid::now_v7()),
            challenge: Some(challenge),
            totp_step,
            recovery_code,
            ip: None,
            now,
        })
        .await;
    }

    /// Rotates the session's refresh token with the current one.
    async fn refresh(&mut self, tenant: &str, session_id: &str) -> Vec<SessionEvent> {
        let s = self.session_state(tenant, session_id);
        let next = self.token();
        self.session(tenant, session_id, |now| SessionCommand::Refresh {
            generation: s.generation,
            presented: s.current,
            next,
            ip: None,
            now,
        })
        .await
    }

    async fn head(&self) -> u64 {
        self.store.head().await.unwrap().position
    }
}

async fn append<E: DomainEvent>(
    store: &Arc<dyn EventStore>,
    name: &str,
    version: u64,
    events: &[E],
    at: Timestamp,
) {
    if events.is_empty() {
        return;
    }
    let new = events.iter().map(|e| decided(e, at)).collect();
    store
        .append(&stream(name), ExpectedVersion::Exact(version), new)
        .await
        .unwrap();
}

fn identity_views() -> Vec<Arc<dyn Projection>> {
    vec![Arc::new(UsersView), Arc::new(SessionsView)]
}

/// Waits until the views have applied the whole log, and returns the serving tables.
async fn synced(world: &World, projections: &Projections) -> (Tables, Tables) {
    projections
        .wait_for(world.head().await, WAIT)
        .await
        .unwrap();
    (
        projections.active_tables("users").unwrap(),
        projections.active_tables("sessions").unwrap(),
    )
}

/// The row the domain's own fold of a user implies, for the fields the view keeps.
fn expected_credentials(
    tenant: &str,
    id: &str,
    u: &User,
) -> (String, String, bool, bool, u32, u32, Option<String>) {
    (
        tenant.to_owned(),
        id.to_owned(),
        u.credential.is_some(),
        u.totp_enabled,
        u.recovery_codes.len() as u32,
        u.failed_logins,
        u.locked_until.map(|l| l.to_string()),
    )
}

fn credential_facts(c: &CredentialRow) -> (String, String, bool, bool, u32, u32, Option<String>) {
    (
        c.tenant.clone(),
        c.user_id.clone(),
        c.password_set,
        c.mfa_enabled,
        c.recovery_codes_left,
        c.failed_logins,
        c.locked_until.clone(),
    )
}

/// Every user and session the views hold agrees with the domain's fold of its stream.
async fn assert_views_match_domain(
    world: &World,
    views: &ViewDb,
    users: &Tables,
    sessions: &Tables,
) {
    for (name, (state, version)) in &world.users {
        let s = stream(name);
        let u = state.as_ref().unwrap();
        let row = users_view::find_user(views.pool(), users, s.tenant(), s.id())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.status, u.status.as_str(), "{name}");
        assert_eq!(row.kind, u.kind.as_str(), "{name}");
        assert_eq!(row.email, u.email.as_ref().map(|e| e.0.clone()), "{name}");
        assert_eq!(row.name, u.name.as_ref().map(|e| e.0.clone()), "{name}");
        assert_eq!(row.roles, u.roles, "{name}");
        assert_eq!(row.version, *version, "{name}");
        let creds = users_view::credentials(views.pool(), users, s.tenant(), s.id())
            .await
            .unwrap();
        if u.status == UserStatus::Deleted {
            assert_eq!(row.email_index, None, "{name}");
            assert_eq!(creds, None, "{name}");
        } else {
            assert_eq!(row.email_index.as_deref(), Some(u.email_index.as_str()));
            assert_eq!(
                credential_facts(&creds.unwrap()),
                expected_credentials(s.tenant(), s.id(), u),
                "{name}"
            );
        }
    }
    for (name, (state, _)) in &world.sessions {
        let s = stream(name);
        let x = state.as_ref().unwrap();
        let row = sessions_view::find_session(views.pool(), sessions, s.tenant(), s.id())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.user_id, x.user_id, "{name}");
        assert_eq!(row.generation, x.generation, "{name}");
        assert_eq!(row.expires_at, x.expires_at.to_string(), "{name}");
        assert_eq!(
            row.revoke_reason.as_deref(),
            x.revoked.map(sessions_view::revoke_reason_name),
            "{name}"
        );
        assert_eq!(
            row.status,
            if x.revoked.is_some() {
                "revoked"
            } else {
                "active"
            },
            "{name}"
        );
        assert_eq!(row.method, sessions_view::method_name(x.method), "{name}");
    }
}

/// Everything both views hold, read through the query functions.
async fn snapshot(
    views: &ViewDb,
    users: &Tables,
    sessions: &Tables,
) -> (Vec<(UserRow, Option<CredentialRow>)>, Vec<SessionRow>) {
    let keys =
        |table: String, id: &str| format!("SELECT tenant, {id} FROM {table} ORDER BY tenant, {id}");
    let mut user_rows = Vec::new();
    for r in sqlx::query(&keys(users.name("users"), "user_id"))
        .fetch_all(views.pool())
        .await
        .unwrap()
    {
        let (tenant, id): (String, String) = (r.get(0), r.get(1));
        let user = users_view::find_user(views.pool(), users, &tenant, &id)
            .await
            .unwrap()
            .unwrap();
        let creds = users_view::credentials(views.pool(), users, &tenant, &id)
            .await
            .unwrap();
        user_rows.push((user, creds));
    }
    let mut session_rows = Vec::new();
    for r in sqlx::query(&keys(sessions.name("sessions"), "session_id"))
        .fetch_all(views.pool())
        .await
        .unwrap()
    {
        let (tenant, id): (String, String) = (r.get(0), r.get(1));
        session_rows.push(
            sessions_view::find_session(views.pool(), sessions, &tenant, &id)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    (user_rows, session_rows)
}

/// Rebuilds both views from position 0 into fresh generations and checks they equal the live ones.
async fn assert_rebuilt_equals_live(world: &World, views: &ViewDb, projections: &Projections) {
    let (users, sessions) = synced(world, projections).await;
    let live = snapshot(views, &users, &sessions).await;
    assert!(!live.0.is_empty(), "there is something to rebuild");
    request_rebuild(views, "users", UsersView.version())
        .await
        .unwrap();
    request_rebuild(views, "sessions", SessionsView.version())
        .await
        .unwrap();
    for _ in 0..4000 {
        let swapped = projections
            .active_tables("users")
            .is_some_and(|t| t != users)
            && projections
                .active_tables("sessions")
                .is_some_and(|t| t != sessions);
        if swapped {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (new_users, new_sessions) = synced(world, projections).await;
    assert_ne!(new_users, users, "the users view was rebuilt");
    assert_ne!(new_sessions, sessions, "the sessions view was rebuilt");
    let rebuilt = snapshot(views, &new_users, &new_sessions).await;
    assert_eq!(rebuilt, live);
}

async fn a_user_lifecycle_and_its_credential_facts_are_folded(ledger: Ledger) {
    let store = ledger.open().await;
    let views = ledger.views().await;
    let projections = ledger.start(&store, identity_views()).await;
    let pool = views.pool();
    let mut w = World::new(store);

    // Invited: no password yet.
    let alice = w.invite("acme").await;
    let invited_at = w.now().to_string();
    let (users, _) = synced(&w, &projections).await;
    let row = users_view::find_user(pool, &users, "acme", &alice)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, "invited");
    assert_eq!(row.kind, "person");
    assert_eq!(row.roles, vec![ROLE_TENANT_ADMIN.to_owned()]);
    assert!(
        row.email.as_deref().is_some_and(|e| e.starts_with("v1.")),
        "sealed as is"
    );
    assert_eq!(
        (row.version, row.created_at.as_str()),
        (1, invited_at.as_str())
    );
    let creds = users_view::credentials(pool, &users, "acme", &alice)
        .await
        .unwrap()
        .unwrap();
    assert!(!creds.password_set && !creds.mfa_enabled);
    assert_eq!(creds.password_changed_at, None);

    // Accepted (with a first password), disabled, enabled.
    let invitation = w.user_state("acme", &alice).invitation.unwrap().hash;
    w.user("acme", &alice, |now| UserCommand::AcceptInvitation {
        token: invitation,
        credential: Sealed("v1.pw".into()),
        now,
    })
    .await;
    let accepted_at = w.now().to_string();
    let (users, _) = synced(&w, &projections).await;
    let row = users_view::find_user(pool, &users, "acme", &alice)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.status.as_str(), row.version), ("active", 3));
    let creds = users_view::credentials(pool, &users, "acme", &alice)
        .await
        .unwrap()
        .unwrap();
    assert!(creds.password_set);
    assert_eq!(
        creds.password_changed_at.as_deref(),
        Some(accepted_at.as_str())
    );

    w.user("acme", &alice, |_| UserCommand::Disable {
        reason: "on leave".into(),
    })
    .await;
    let (users, _) = synced(&w, &projections).await;
    let row = users_view::find_user(pool, &users, "acme", &alice)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.status.as_str(), row.version), ("disabled", 4));
    w.user("acme", &alice, |_| UserCommand::Enable).await;
    let enabled_at = w.now().to_string();
    let (users, _) = synced(&w, &projections).await;
    let row = users_view::find_user(pool, &users, "acme", &alice)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.status.as_str(), row.version), ("active", 5));
    assert_eq!(row.created_at, invited_at);
    assert_eq!(row.updated_at, enabled_at);

    // MFA with three recovery codes; a recovery-code login spends one, a TOTP login none.
    w.user("acme", &alice, |_| UserCommand::StartTotpEnrollment {
        secret: Sealed("v1.seed".into()),
    })
    .await;
    let codes = vec![w.token(), w.token(), w.token()];
    let first_code = codes[0].clone();
    w.user("acme", &alice, |_| UserCommand::ConfirmTotp {
        step: 100,
        recovery_codes: codes,
    })
    .await;
    let (users, _) = synced(&w, &projections).await;
    let creds = users_view::credentials(pool, &users, "acme", &alice)
        .await
        .unwrap()
        .unwrap();
    assert!(creds.mfa_enabled);
    assert_eq!(creds.recovery_codes_left, 3);

    w.mfa_login("acme", &alice, None, Some(first_code)).await;
    let recovered_at = w.now().to_string();
    let (users, _) = synced(&w, &projections).await;
    let creds = users_view::credentials(pool, &users, "acme", &alice)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(creds.recovery_codes_left, 2);
    assert_eq!(creds.last_login_at.as_deref(), Some(recovered_at.as_str()));
    w.mfa_login("acme", &alice, Some(101), None).await;
    let (users, _) = synced(&w, &projections).await;
    let creds = users_view::credentials(pool, &users, "acme", &alice)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(creds.recovery_codes_left, 2);

    // Five failures lock the account; a login after the lock clears it.
    for _ in 0..5 {
        w.user("acme", &alice, |now| UserCommand::RecordLoginFailure {
            reason: LoginFailure::BadPassword,
            ip: Some("198.51.100.1".into()),
            now,
            // A policy that locks at the fifth failure, to see a lock folded.
            policy: LockoutPolicy {
                threshold: 5,
                ..LockoutPolicy::EMAIL_FROM_IP
            },
        })
        .await;
    }
    let lock = w.now().plus(time::Duration::seconds(1)).to_string();
    let (users, _) = synced(&w, &projections).await;
    let creds = users_view::credentials(pool, &users, "acme", &alice)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(creds.failed_logins, 5);
    assert_eq!(creds.locked_until.as_deref(), Some(lock.as_str()));
    let now = w.now().to_string();
    let locked = users_view::list_credentials(pool, &users, "acme", true, &now, None, 10)
        .await
        .unwrap();
    assert_eq!(locked, vec![creds.clone()]);
    let later = w.now().plus(time::Duration::minutes(1)).to_string();
    assert!(
        users_view::list_credentials(pool, &users, "acme", true, &later, None, 10)
            .await
            .unwrap()
            .is_empty(),
        "the lock has expired by then"
    );
    w.advance(time::Duration::seconds(5));
    w.mfa_login("acme", &alice, Some(102), None).await;
    let (users, _) = synced(&w, &projections).await;
    let creds = users_view::credentials(pool, &users, "acme", &alice)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((creds.failed_logins, creds.locked_until), (0, None));

    // A new email moves the blind index; the name stays.
    let old_index = w.user_state("acme", &alice).email_index;
    let new_index = w.hex();
    let ni = new_index.clone();
    w.user("acme", &alice, |_| UserCommand::UpdateProfile {
        email: Some((Sealed("v1.new-email".into()), ni)),
        name: None,
    })
    .await;
    let (users, _) = synced(&w, &projections).await;
    let found = users_view::find_by_email_index(pool, &users, "acme", &new_index)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.user_id, alice);
    assert_eq!(found.email.as_deref(), Some("v1.new-email"));
    assert_eq!(found.name, row.name);
    assert_eq!(
        users_view::find_by_email_index(pool, &users, "acme", &old_index)
            .await
            .unwrap(),
        None
    );

    // A deleted user keeps no personal data and no credentials.
    let bob = w.create("acme", UserKind::Person).await;
    let bob_index = w.user_state("acme", &bob).email_index;
    w.user("acme", &bob, |_| UserCommand::Delete).await;
    let (users, _) = synced(&w, &projections).await;
    let row = users_view::find_user(pool, &users, "acme", &bob)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, "deleted");
    assert_eq!((row.email, row.name, row.email_index), (None, None, None));
    assert!(row.roles.is_empty());
    assert_eq!(
        users_view::credentials(pool, &users, "acme", &bob)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        users_view::find_by_email_index(pool, &users, "acme", &bob_index)
            .await
            .unwrap(),
        None
    );

    // An agent has a credentials row without a password.
    let agent = w.create("acme", UserKind::Agent).await;
    let (users, sessions) = synced(&w, &projections).await;
    let creds = users_view::credentials(pool, &users, "acme", &agent)
        .await
        .unwrap()
        .unwrap();
    assert!(!creds.password_set);

    assert_views_match_domain(&w, &views, &users, &sessions).await;
    assert_rebuilt_equals_live(&w, &views, &projections).await;
    projections.stop().await;
}

async fn users_are_listed_by_page_and_filter_within_their_tenant_only(ledger: Ledger) {
    let store = ledger.open().await;
    let views = ledger.views().await;
    let projections = ledger.start(&store, identity_views()).await;
    let pool = views.pool();
    let mut w = World::new(store);

    let mut active = vec![];
    for _ in 0..3 {
        active.push(w.create("acme", UserKind::Person).await);
    }
    let invited = w.invite("acme").await;
    let disabled = w.create("acme", UserKind::Person).await;
    w.user("acme", &disabled, |_| UserCommand::Disable {
        reason: "left".into(),
    })
    .await;
    let agent = w.create("acme", UserKind::Agent).await;
    let service = w.create("acme", UserKind::Service).await;
    active.extend([agent.clone(), service.clone()]);
    // globex has users too, one with the same blind index as an acme user.
    let shared_index = w.user_state("acme", &active[0]).email_index;
    let globex_twin = type_id("user", uuid::Uuid::now_v7());
    w.create_with_index(
        "globex",
        &globex_twin,
        UserKind::Person,
        shared_index.clone(),
    )
    .await;
    let globex_other = w.create("globex", UserKind::Service).await;

    let (users, _) = synced(&w, &projections).await;
    let mut acme: Vec<String> = active
        .iter()
        .chain([&invited, &disabled])
        .cloned()
        .collect();
    acme.sort();

    // Every page is in id order, resumes after the cursor, and the last one is short.
    let all = UserFilter::default();
    let mut pages = vec![];
    let mut after: Option<String> = None;
    loop {
        let page = users_view::list_users(pool, &users, "acme", &all, after.as_deref(), 3)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|u| u.user_id.clone());
        pages.push(page.iter().map(|u| u.user_id.clone()).collect::<Vec<_>>());
    }
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![3, 3, 1]
    );
    assert_eq!(pages.concat(), acme);
    assert!(
        pages
            .concat()
            .iter()
            .all(|id| id != &globex_twin && id != &globex_other),
        "never another tenant's users"
    );

    let ids = |rows: Vec<UserRow>| rows.into_iter().map(|u| u.user_id).collect::<Vec<_>>();
    let filtered = |status: Option<&str>, kind: Option<&str>| UserFilter {
        status: status.map(str::to_owned),
        kind: kind.map(str::to_owned),
    };
    let mut expected_active = active.clone();
    expected_active.sort();
    assert_eq!(
        ids(users_view::list_users(
            pool,
            &users,
            "acme",
            &filtered(Some("active"), None),
            None,
            50
        )
        .await
        .unwrap()),
        expected_active
    );
    assert_eq!(
        ids(users_view::list_users(
            pool,
            &users,
            "acme",
            &filtered(Some("invited"), None),
            None,
            50
        )
        .await
        .unwrap()),
        vec![invited.clone()]
    );
    assert_eq!(
        ids(users_view::list_users(
            pool,
            &users,
            "acme",
            &filtered(Some("disabled"), Some("person")),
            None,
            50
        )
        .await
        .unwrap()),
        vec![disabled.clone()]
    );
    assert_eq!(
        ids(users_view::list_users(
            pool,
            &users,
            "acme",
            &filtered(None, Some("agent")),
            None,
            50
        )
        .await
        .unwrap()),
        vec![agent.clone()]
    );
    assert_eq!(
        ids(users_view::list_users(
            pool,
            &users,
            "acme",
            &filtered(Some("active"), Some("service")),
            None,
            50
        )
        .await
        .unwrap()),
        vec![service.clone()]
    );
    // A filtered listing pages too.
    let people = filtered(Some("active"), Some("person"));
    let first = users_view::list_users(pool, &users, "acme", &people, None, 2)
        .await
        .unwrap();
    let rest = users_view::list_users(
        pool,
        &users,
        "acme",
        &people,
        Some(&first.last().unwrap().user_id),
        2,
    )
    .await
    .unwrap();
    let mut expected_people = active[..3].to_vec();
    expected_people.sort();
    assert_eq!([ids(first), ids(rest)].concat(), expected_people);

    // The other tenant sees only its own.
    let mut globex = vec![globex_twin.clone(), globex_other.clone()];
    globex.sort();
    assert_eq!(
        ids(
            users_view::list_users(pool, &users, "globex", &all, None, 50)
                .await
                .unwrap()
        ),
        globex
    );
    assert_eq!(
        users_view::find_user(pool, &users, "globex", &active[0])
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        users_view::find_by_email_index(pool, &users, "acme", &shared_index)
            .await
            .unwrap()
            .map(|u| u.user_id),
        Some(active[0].clone())
    );
    assert_eq!(
        users_view::find_by_email_index(pool, &users, "globex", &shared_index)
            .await
            .unwrap()
            .map(|u| u.user_id),
        Some(globex_twin.clone())
    );

    // Credentials page the same way, per tenant.
    let now = w.now().to_string();
    let first = users_view::list_credentials(pool, &users, "acme", false, &now, None, 4)
        .await
        .unwrap();
    let rest = users_view::list_credentials(
        pool,
        &users,
        "acme",
        false,
        &now,
        Some(&first.last().unwrap().user_id),
        4,
    )
    .await
    .unwrap();
    assert_eq!(
        first
            .iter()
            .chain(&rest)
            .map(|c| c.user_id.clone())
            .collect::<Vec<_>>(),
        acme
    );
    assert!(
        users_view::list_credentials(pool, &users, "acme", true, &now, None, 50)
            .await
            .unwrap()
            .is_empty()
    );

    // Sessions exist for the rebuild check below.
    w.login("acme", &active[0], time::Duration::days(1)).await;
    let (users, sessions) = synced(&w, &projections).await;
    assert_views_match_domain(&w, &views, &users, &sessions).await;
    assert_rebuilt_equals_live(&w, &views, &projections).await;
    projections.stop().await;
}

async fn sessions_are_listed_active_or_all_and_reuse_revokes(ledger: Ledger) {
    let store = ledger.open().await;
    let views = ledger.views().await;
    let projections = ledger.start(&store, identity_views()).await;
    let pool = views.pool();
    let mut w = World::new(store);

    let alice = w.create("acme", UserKind::Person).await;
    let carol = w.create("acme", UserKind::Person).await;
    let month = time::Duration::days(30);

    // Refreshed twice and still going.
    let kept = w.login("acme", &alice, month).await;
    w.refresh("acme", &kept).await;
    w.refresh("acme", &kept).await;
    let refreshed_at = w.now().to_string();
    // Logged out.
    let logged_out = w.login("acme", &alice, month).await;
    w.session("acme", &logged_out, |_| SessionCommand::Revoke {
        reason: RevokeReason::Logout,
    })
    .await;
    // A spent refresh token presented again revokes the family.
    let stolen = w.login("acme", &alice, month).await;
    w.refresh("acme", &stolen).await;
    let spent = w.session_state("acme", &stolen).spent[0].clone();
    let next = w.token();
    let reuse = w
        .session("acme", &stolen, |now| SessionCommand::Refresh {
            generation: 0,
            presented: spent,
            next,
            ip: Some("203.0.113.9".into()),
            now,
        })
        .await;
    assert!(matches!(reuse[0], SessionEvent::RefreshTokenReused { .. }));
    let reused_at = w.now().to_string();
    // Short-lived: active now, expired within the hour.
    let short = w.login("acme", &alice, time::Duration::minutes(10)).await;
    // Another user's session in the same tenant, and a session in another tenant under the same
    // user id.
    let carols = w.login("acme", &carol, month).await;
    let globex_user = type_id("user", uuid::Uuid::now_v7());
    let index = w.hex();
    w.create_with_index("globex", &globex_user, UserKind::Person, index)
        .await;
    let foreign = w.login("globex", &globex_user, month).await;

    let (users, sessions) = synced(&w, &projections).await;
    let s = sessions_view::find_session(pool, &sessions, "acme", &kept)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((s.status.as_str(), s.generation), ("active", 2));
    assert_eq!(s.last_refreshed_at.as_deref(), Some(refreshed_at.as_str()));
    assert_eq!(s.method, "password");
    assert_eq!(s.ip.as_deref(), Some("192.0.2.7"));
    assert_eq!(s.user_agent.as_deref(), Some("curl/8.5"));
    assert_eq!(s.user_id, alice);
    let s = sessions_view::find_session(pool, &sessions, "acme", &stolen)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.status, "revoked");
    assert_eq!(s.revoke_reason.as_deref(), Some("refresh_token_reuse"));
    assert_eq!(s.revoked_at.as_deref(), Some(reused_at.as_str()));
    assert_eq!(s.generation, 1);
    let s = sessions_view::find_session(pool, &sessions, "acme", &logged_out)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (s.status.as_str(), s.revoke_reason.as_deref()),
        ("revoked", Some("logout"))
    );
    assert_eq!(
        sessions_view::find_session(pool, &sessions, "acme", &foreign)
            .await
            .unwrap(),
        None,
        "another tenant's session"
    );

    let ids = |rows: Vec<SessionRow>| rows.into_iter().map(|s| s.session_id).collect::<Vec<_>>();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let now = w.now().to_string();
    let all = sorted(vec![
        kept.clone(),
        logged_out.clone(),
        stolen.clone(),
        short.clone(),
    ]);
    assert_eq!(
        ids(
            sessions_view::list_sessions(pool, &sessions, "acme", &alice, false, &now, None, 50)
                .await
                .unwrap()
        ),
        all
    );
    assert_eq!(
        ids(
            sessions_view::list_sessions(pool, &sessions, "acme", &alice, true, &now, None, 50)
                .await
                .unwrap()
        ),
        sorted(vec![kept.clone(), short.clone()])
    );
    let in_an_hour = w.now().plus(time::Duration::hours(1)).to_string();
    assert_eq!(
        ids(sessions_view::list_sessions(
            pool,
            &sessions,
            "acme",
            &alice,
            true,
            &in_an_hour,
            None,
            50
        )
        .await
        .unwrap()),
        vec![kept.clone()],
        "the short session has expired"
    );
    // Pages of two resume after the cursor.
    let first = sessions_view::list_sessions(pool, &sessions, "acme", &alice, false, &now, None, 2)
        .await
        .unwrap();
    let rest = sessions_view::list_sessions(
        pool,
        &sessions,
        "acme",
        &alice,
        false,
        &now,
        Some(&first.last().unwrap().session_id),
        2,
    )
    .await
    .unwrap();
    assert_eq!([ids(first), ids(rest)].concat(), all);

    assert_eq!(
        sessions_view::active_session_ids(pool, &sessions, "acme", &alice)
            .await
            .unwrap(),
        sorted(vec![kept.clone(), short.clone()])
    );
    assert_eq!(
        sessions_view::active_session_ids(pool, &sessions, "acme", &carol)
            .await
            .unwrap(),
        vec![carols.clone()]
    );
    assert!(
        sessions_view::active_session_ids(pool, &sessions, "globex", &alice)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ids(sessions_view::list_sessions(
            pool,
            &sessions,
            "globex",
            &globex_user,
            false,
            &now,
            None,
            50
        )
        .await
        .unwrap()),
        vec![foreign.clone()]
    );

    // Users' last logins follow their sessions.
    let creds = users_view::credentials(pool, &users, "acme", &carol)
        .await
        .unwrap()
        .unwrap();
    assert!(creds.last_login_at.is_some());

    assert_views_match_domain(&w, &views, &users, &sessions).await;
    assert_rebuilt_equals_live(&w, &views, &projections).await;
    projections.stop().await;
}
