//! A running [`App`] on a temporary SQLite ledger, with a [`ManualClock`], a platform
//! administrator, and helpers to make principals.

// Each test module uses some of these helpers; none uses them all.
#![allow(dead_code)]

use std::sync::Arc;

use custodian_app::auth::index::SYSTEM_TENANT;
use custodian_app::bootstrap::{Admin, bootstrap};
use custodian_app::{App, Clock, ManualClock, Principal, SecurityOptions};
use custodian_domain::Timestamp;
use custodian_store::StoreOptions;
use tokio_util::sync::CancellationToken;

/// The platform administrator every [`TestApp`] starts with.
pub const ADMIN_EMAIL: &str = "root@platform.test";
/// Their password.
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";
/// Where every test's clock starts.
pub const START: &str = "2026-03-01T12:00:00Z";

/// The service on a fresh ledger.
pub struct TestApp {
    /// The service.
    pub app: App,
    /// Its clock.
    pub clock: Arc<ManualClock>,
    /// The platform administrator's user id.
    pub admin_id: String,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl TestApp {
    /// A service on an empty temporary SQLite ledger with a platform administrator.
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let location = dir.path().join("custodian.db").display().to_string();
        let store = custodian_store::open(&location, StoreOptions::default())
            .await
            .unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp::parse(START).unwrap()));
        let shutdown = CancellationToken::new();
        let app = App::start(
            store,
            &location,
            custodian_projections::all(),
            SecurityOptions::new(dir.path().join("secret.key")),
            clock.clone(),
            shutdown.clone(),
        )
        .await
        .unwrap();
        let security = &app.security;
        let admin_id = bootstrap(
            &app.store,
            &app.db,
            &security.keyring,
            &security.hasher,
            &security.policy,
            Admin {
                email: ADMIN_EMAIL,
                name: "Root",
                password: ADMIN_PASSWORD,
            },
            clock.now(),
        )
        .await
        .unwrap();
        Self {
            app,
            clock,
            admin_id,
            shutdown,
            _dir: dir,
        }
    }

    /// Moves the clock forward by `secs` seconds.
    pub fn advance(&self, secs: i64) {
        self.clock.advance(time::Duration::seconds(secs));
    }

    /// The principal of `user_id` of `tenant` as the index knows them now, holding a session
    /// `session_id` (not checked: use cases take an authenticated principal as given).
    pub async fn principal(&self, tenant: &str, user_id: &str, session_id: &str) -> Principal {
        let index = &self.app.security.index;
        index.catch_up().await.unwrap();
        Principal {
            user_id: user_id.to_owned(),
            tenant: tenant.to_owned(),
            session_id: session_id.to_owned(),
            user: index
                .user(tenant, user_id)
                .unwrap_or_else(|| panic!("the index does not know {tenant}/{user_id}")),
        }
    }

    /// The platform administrator as a principal.
    pub async fn root(&self) -> Principal {
        self.principal(SYSTEM_TENANT, &self.admin_id, "sess_root")
            .await
    }

    /// Waits until the views have applied everything appended so far.
    pub async fn views_caught_up(&self) {
        let head = self.app.store.head().await.unwrap().position;
        self.app
            .projections
            .wait_for(head, std::time::Duration::from_secs(10))
            .await
            .unwrap();
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A person of a tenant with a password, holding one session: what the self-service tests act as.
pub struct Member {
    /// Their tenant.
    pub tenant: String,
    /// Their user id.
    pub user_id: String,
    /// Their email address.
    pub email: String,
    /// Their password.
    pub password: String,
    /// The session they act in.
    pub session_id: String,
}

impl TestApp {
    /// Creates the tenant `slug` straight through its domain command, as the platform
    /// administrator.
    pub async fn seed_tenant(&self, slug: &str) {
        use custodian_domain::tenant::{self, Plan, TenantCommand};
        let s = custodian_app::stream(SYSTEM_TENANT, "tenant", slug).unwrap();
        let ctx = self.root().await.context(self.clock.now());
        custodian_app::commands::execute(
            &self.app.store,
            Some(&self.app.states),
            &s,
            &ctx,
            None,
            tenant::evolve,
            |t| {
                tenant::decide(
                    t.as_ref(),
                    TenantCommand::Create {
                        name: slug.to_owned(),
                        slug: slug.to_owned(),
                        plan: Plan::Free,
                    },
                )
            },
        )
        .await
        .unwrap();
    }

    /// Creates an active person of `tenant` with `email`, the name "Ada Lovelace" and `password`,
    /// straight through the domain's commands; returns their user id.
    pub async fn seed_person(&self, tenant: &str, email: &str, password: &str) -> String {
        use custodian_app::auth::secrets;
        use custodian_domain::user::{self, UserCommand, UserKind};
        let user_id = custodian_domain::id::type_id("user", uuid::Uuid::now_v7());
        let credential = custodian_app::users::seal_password(&self.app, tenant, &user_id, password)
            .await
            .unwrap();
        let key = self.app.security.data_key(&user_id).await.unwrap().unwrap();
        let seal = |text: &str| secrets::seal(&key, text.as_bytes(), user_id.as_bytes());
        let command = UserCommand::Create {
            kind: UserKind::Person,
            email: seal(email),
            name: seal("Ada Lovelace"),
            email_index: self.app.security.keyring.email_index(tenant, email),
            roles: vec![],
            credential: Some(credential),
        };
        let s = custodian_app::stream(tenant, "user", &user_id).unwrap();
        let ctx = self.root().await.context(self.clock.now());
        custodian_app::commands::execute(
            &self.app.store,
            Some(&self.app.states),
            &s,
            &ctx,
            None,
            user::evolve,
            |u| user::decide(u.as_ref(), command.clone()),
        )
        .await
        .unwrap();
        user_id
    }

    /// Starts a password session of `user_id` of `tenant` now, straight through the session's
    /// domain command; returns its id.
    pub async fn seed_session(&self, tenant: &str, user_id: &str) -> String {
        use custodian_domain::session::{self, SessionCommand};
        use custodian_domain::user::LoginMethod;
        let session_id = custodian_domain::id::type_id("sess", uuid::Uuid::now_v7());
        let now = self.clock.now();
        let refresh = self
            .app
            .security
            .tokens
            .hash(&format!("refresh {session_id}"));
        let s = custodian_app::stream(tenant, "session", &session_id).unwrap();
        custodian_app::commands::execute(
            &self.app.store,
            Some(&self.app.states),
            &s,
            &custodian_app::users::user_actor(user_id, now),
            None,
            session::evolve,
            |s| {
                session::decide(
                    s.as_ref(),
                    SessionCommand::Start {
                        user_id: user_id.to_owned(),
                        refresh: refresh.clone(),
                        method: LoginMethod::Password,
                        expires_at: now.plus(self.app.security.lifetimes.session),
                        ip: Some("192.0.2.1".to_owned()),
                        user_agent: Some("tests".to_owned()),
                    },
                )
            },
        )
        .await
        .unwrap();
        session_id
    }

    /// A new tenant `slug` with a person in it (email `ada@{slug}.test`) holding one session.
    pub async fn member(&self, slug: &str) -> Member {
        self.seed_tenant(slug).await;
        let email = format!("ada@{slug}.test");
        let password = "analytical engine 1843".to_owned();
        let user_id = self.seed_person(slug, &email, &password).await;
        let session_id = self.seed_session(slug, &user_id).await;
        Member {
            tenant: slug.to_owned(),
            user_id,
            email,
            password,
            session_id,
        }
    }

    /// `member` as a principal acting in their session, as the index knows them now.
    pub async fn as_member(&self, member: &Member) -> Principal {
        self.principal(&member.tenant, &member.user_id, &member.session_id)
            .await
    }

    /// The current state of a user, read from the log.
    pub async fn user(&self, tenant: &str, user_id: &str) -> custodian_domain::user::User {
        custodian_app::users::load_user(&self.app, tenant, user_id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no user {tenant}/{user_id}"))
    }
}
