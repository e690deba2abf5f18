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

impl TestApp {
    /// Creates the tenant `slug` (plan free) as the platform administrator, through the tenant
    /// aggregate's command, and waits until the authentication index knows it. Returns the
    /// position of its creation.
    pub async fn create_tenant(&self, slug: &str) -> u64 {
        use custodian_domain::tenant::{self, Plan, TenantCommand};
        let stream = custodian_app::stream(SYSTEM_TENANT, "tenant", slug).unwrap();
        let ctx = self.root().await.context(self.clock.now());
        let done = custodian_app::commands::execute(
            &self.app.store,
            Some(&self.app.states),
            &stream,
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
        .unwrap_or_else(|e| panic!("cannot create tenant {slug}: {e:?}"));
        self.app.security.index.catch_up().await.unwrap();
        done.position.unwrap()
    }
}
