//! A running [`App`] on a temporary SQLite ledger, with a [`ManualClock`], a platform
//! administrator, and helpers to make principals.

// Each test module uses some of these helpers; none uses them all.
#![allow(dead_code)]

use std::sync::Arc;

use custodian_app::auth::index::SYSTEM_TENANT;
use custodian_app::bootstrap::{Admin, bootstrap};
use custodian_app::{App, Clock, ManualClock, Principal, SecurityOptions};
use custodian_domain::Timestamp;
use custodian_testkit::Ledger;
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
    /// Where the master key is: in the SQLite ledger's directory, or in `_keys` on PostgreSQL.
    key_file: std::path::PathBuf,
    _keys: Option<tempfile::TempDir>,
    ledger: Ledger,
}

impl TestApp {
    /// A service on an empty temporary SQLite ledger with a platform administrator.
    pub async fn new() -> Self {
        Self::with_options(|_| {}).await
    }

    /// [`TestApp::new`] with the security options `change` makes of the defaults.
    pub async fn with_options(change: impl FnOnce(&mut SecurityOptions)) -> Self {
        Self::with_store_options(custodian_store::StoreOptions::default(), change).await
    }

    /// [`TestApp::with_options`] on a store opened with `store`.
    pub async fn with_store_options(
        store: custodian_store::StoreOptions,
        change: impl FnOnce(&mut SecurityOptions),
    ) -> Self {
        let ledger = Ledger::sqlite();
        let key_file = ledger
            .dir()
            .expect("a SQLite ledger has a directory")
            .join("secret.key");
        Self::start_on(ledger, key_file, None, store, change).await
    }

    /// A service on a fresh PostgreSQL database (`None` outside CI when PostgreSQL is
    /// unreachable), its master key in a temporary directory.
    pub async fn postgres() -> Option<Self> {
        let ledger = Ledger::postgres().await?;
        let keys = tempfile::tempdir().unwrap();
        let key_file = keys.path().join("secret.key");
        Some(
            Self::start_on(
                ledger,
                key_file,
                Some(keys),
                custodian_store::StoreOptions::default(),
                |_| {},
            )
            .await,
        )
    }

    /// A second instance of the service on the same ledger and master key, with a store of its
    /// own, as a second server process runs; it shares only the database with this one.
    pub async fn another_instance(&self) -> App {
        let store = self.ledger.open().await;
        App::start(
            store,
            &self.ledger.location,
            custodian_projections::all(),
            SecurityOptions::new(self.key_file.clone()),
            self.clock.clone(),
            self.shutdown.clone(),
        )
        .await
        .unwrap()
    }

    async fn start_on(
        ledger: Ledger,
        key_file: std::path::PathBuf,
        keys: Option<tempfile::TempDir>,
        store: custodian_store::StoreOptions,
        change: impl FnOnce(&mut SecurityOptions),
    ) -> Self {
        let location = ledger.location.clone();
        let store = ledger.open_with(store).await;
        let clock = Arc::new(ManualClock::new(Timestamp::parse(START).unwrap()));
        let shutdown = CancellationToken::new();
        let mut options = SecurityOptions::new(key_file.clone());
        change(&mut options);
        let app = App::start(
            store,
            &location,
            custodian_projections::all(),
            options,
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
        let t = Self {
            app,
            clock,
            admin_id,
            shutdown,
            key_file,
            _keys: keys,
            ledger,
        };
        // Every view serves before the first use case reads one.
        t.views_caught_up().await;
        t
    }

    /// Stops the service's background work, as a server does at shutdown (the log stays open).
    pub fn shut_down(&self) {
        self.shutdown.cancel();
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
            ip: None,
            key: None,
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

// ---------------------------------------------------------------------------------------------
// Tenants and users made directly through the domain, for tests of what they do once they exist.

/// A person's TOTP enrollment, confirmed at the clock's current step.
pub struct Enrolled {
    /// The seed, to compute codes with `custodian_app::auth::totp::code_at`.
    pub seed: Vec<u8>,
    /// The step spent by the confirmation.
    pub step: u64,
    /// The recovery codes, in clear.
    pub recovery_codes: Vec<String>,
}

impl TestApp {
    /// The current time as a Unix timestamp, for TOTP codes.
    pub fn unix(&self) -> u64 {
        u64::try_from(self.clock.now().as_datetime().unix_timestamp()).unwrap()
    }

    /// A command context for the platform administrator now.
    async fn as_root(&self) -> custodian_app::commands::Context {
        self.root().await.context(self.clock.now())
    }

    /// Runs a tenant command on `slug` as the platform administrator and waits until the
    /// authentication index has applied it; returns its position.
    pub async fn tenant_command(
        &self,
        slug: &str,
        command: custodian_domain::tenant::TenantCommand,
    ) -> u64 {
        use custodian_domain::tenant;
        let ctx = self.as_root().await;
        let s = custodian_app::stream(SYSTEM_TENANT, "tenant", slug).unwrap();
        let done = custodian_app::commands::execute(
            &self.app.store,
            Some(&self.app.states),
            &s,
            &ctx,
            None,
            tenant::evolve,
            |t: &Option<tenant::Tenant>| tenant::decide(t.as_ref(), command.clone()),
        )
        .await
        .unwrap_or_else(|e| panic!("tenant command on {slug} refused: {e:?}"));
        let position = done.position.unwrap_or_default();
        self.app.security.index.wait_for(position).await.unwrap();
        position
    }

    /// Creates an active tenant `slug` (plan free); returns the position of its creation.
    pub async fn create_tenant(&self, slug: &str) -> u64 {
        self.tenant_command(
            slug,
            custodian_domain::tenant::TenantCommand::Create {
                name: format!("Tenant {slug}"),
                slug: slug.to_owned(),
                plan: custodian_domain::tenant::Plan::Free,
            },
        )
        .await
    }

    /// Runs a user command on `tenant`/`user_id` as the platform administrator.
    pub async fn user_command(
        &self,
        tenant: &str,
        user_id: &str,
        command: custodian_domain::user::UserCommand,
    ) -> u64 {
        let ctx = self.as_root().await;
        custodian_app::users::run_user(&self.app, &ctx, tenant, user_id, |_| command.clone())
            .await
            .unwrap()
            .position
            .unwrap_or_default()
    }

    /// A fresh user id.
    pub fn new_user_id() -> String {
        custodian_domain::id::type_id("user", uuid::Uuid::now_v7())
    }

    /// Claims `email` in `tenant` for the new user `user_id` and creates them with `make(sealed
    /// email, sealed name, email index)`.
    async fn new_user(
        &self,
        tenant: &str,
        email: &str,
        user_id: &str,
        make: impl FnOnce(
            custodian_domain::secret::Sealed,
            custodian_domain::secret::Sealed,
            String,
        ) -> custodian_domain::user::UserCommand,
    ) {
        use custodian_app::auth::secrets;
        use custodian_domain::email::{self, EmailCommand, Reservation};
        use custodian_domain::user;
        let security = &self.app.security;
        let key = security.vault.create(tenant, user_id).await.unwrap();
        let sealed_email = secrets::seal(&key, email.as_bytes(), user_id.as_bytes());
        let sealed_name = secrets::seal(&key, b"Ada Lovelace", user_id.as_bytes());
        let index = security.keyring.email_index(tenant, email);
        let ctx = self.as_root().await;
        let claim = custodian_app::stream(tenant, "email", &index).unwrap();
        custodian_app::commands::execute(
            &self.app.store,
            None,
            &claim,
            &ctx,
            Reservation::default(),
            email::evolve,
            |r| {
                email::decide(
                    r,
                    EmailCommand::Claim {
                        user_id: user_id.to_owned(),
                        holder_gone: false,
                    },
                )
            },
        )
        .await
        .unwrap();
        let command = make(sealed_email, sealed_name, index);
        let s = custodian_app::stream(tenant, "user", user_id).unwrap();
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
    }

    /// Creates an active person of `tenant` with `password`; returns their user id.
    pub async fn create_person(&self, tenant: &str, email: &str, password: &str) -> String {
        let user_id = Self::new_user_id();
        let credential =
            custodian_app::users::seal_password(&self.app, tenant, &user_id, password, false)
                .await
                .unwrap();
        self.new_user(tenant, email, &user_id, |email, name, email_index| {
            custodian_domain::user::UserCommand::Create {
                kind: custodian_domain::user::UserKind::Person,
                email,
                name,
                email_index,
                roles: vec![],
                credential: Some(credential),
            }
        })
        .await;
        user_id
    }

    /// Creates an active service account of `tenant` (keys only, no password); returns its id.
    pub async fn create_service(&self, tenant: &str, email: &str) -> String {
        let user_id = Self::new_user_id();
        self.new_user(tenant, email, &user_id, |email, name, email_index| {
            custodian_domain::user::UserCommand::Create {
                kind: custodian_domain::user::UserKind::Service,
                email,
                name,
                email_index,
                roles: vec![],
                credential: None,
            }
        })
        .await;
        user_id
    }

    /// Invites a person to `tenant`; returns their user id and the invitation token.
    pub async fn invite_person(&self, tenant: &str, email: &str) -> (String, String) {
        use custodian_app::auth::tokens::{OpaqueToken, TokenKind};
        let security = &self.app.security;
        let user_id = Self::new_user_id();
        let token = OpaqueToken::new(TokenKind::Invitation, tenant, &user_id, 0)
            .unwrap()
            .to_string();
        let invitation = security.tokens.hash(&token);
        let expires_at = self.clock.now().plus(security.lifetimes.invitation);
        self.new_user(tenant, email, &user_id, |email, name, email_index| {
            custodian_domain::user::UserCommand::Invite {
                kind: custodian_domain::user::UserKind::Person,
                email,
                name,
                email_index,
                roles: vec![],
                invitation,
                expires_at,
            }
        })
        .await;
        (user_id, token)
    }

    /// Issues a password reset token for `user_id` of `tenant`.
    pub async fn issue_reset(&self, tenant: &str, user_id: &str) -> String {
        use custodian_app::auth::tokens::{OpaqueToken, TokenKind};
        let security = &self.app.security;
        let token = OpaqueToken::new(TokenKind::PasswordReset, tenant, user_id, 0)
            .unwrap()
            .to_string();
        self.user_command(
            tenant,
            user_id,
            custodian_domain::user::UserCommand::IssuePasswordReset {
                token: security.tokens.hash(&token),
                expires_at: self.clock.now().plus(security.lifetimes.reset),
            },
        )
        .await;
        token
    }

    /// Enrolls `user_id` of `tenant` in TOTP, confirming with the code of the current step.
    pub async fn enroll_totp(&self, tenant: &str, user_id: &str) -> Enrolled {
        use custodian_app::auth::{secrets, tokens, totp};
        use custodian_domain::user::UserCommand;
        let security = &self.app.security;
        let seed = totp::generate_secret();
        let key = security.data_key(user_id).await.unwrap().unwrap();
        let sealed = secrets::seal(&key, &seed, user_id.as_bytes());
        self.user_command(
            tenant,
            user_id,
            UserCommand::StartTotpEnrollment { secret: sealed },
        )
        .await;
        let step = totp::verify(&seed, &totp::code_at(&seed, self.unix()), self.unix()).unwrap();
        let recovery_codes = tokens::recovery_codes(10);
        let hashes = recovery_codes
            .iter()
            .map(|c| security.tokens.hash_recovery_code(c).unwrap())
            .collect();
        self.user_command(
            tenant,
            user_id,
            UserCommand::ConfirmTotp {
                step,
                recovery_codes: hashes,
            },
        )
        .await;
        Enrolled {
            seed,
            step,
            recovery_codes,
        }
    }

    /// The log's head position.
    pub async fn head(&self) -> u64 {
        self.app.store.head().await.unwrap().position
    }

    /// The events appended after `position`, in order.
    pub async fn events_after(&self, position: u64) -> Vec<custodian_domain::EventRecord> {
        self.app.store.read_all(position + 1, 10_000).await.unwrap()
    }

    /// Every event of the stream `{tenant}/{aggregate}/{id}`, in order.
    pub async fn stream_events(
        &self,
        tenant: &str,
        aggregate: &str,
        id: &str,
    ) -> Vec<custodian_domain::EventRecord> {
        let s = custodian_app::stream(tenant, aggregate, id).unwrap();
        custodian_app::commands::read_stream(self.app.store.as_ref(), &s, 1)
            .await
            .unwrap()
    }

    /// Waits, without polling on a timer, until the stream `{tenant}/{aggregate}/{id}` holds at
    /// least `n` events (at most 10 s), and answers them all.
    pub async fn wait_for_stream(
        &self,
        tenant: &str,
        aggregate: &str,
        id: &str,
        n: usize,
    ) -> Vec<custodian_domain::EventRecord> {
        let mut head = self.app.store.watch_head();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            head.borrow_and_update();
            let events = self.stream_events(tenant, aggregate, id).await;
            if events.len() >= n {
                return events;
            }
            match tokio::time::timeout_at(deadline, head.changed()).await {
                Ok(Ok(())) => {}
                _ => panic!(
                    "{tenant}/{aggregate}/{id} holds {} events, not {n}",
                    events.len()
                ),
            }
        }
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
        self.create_tenant(slug).await;
        let email = format!("ada@{slug}.test");
        let password = "analytical engine 1843".to_owned();
        let user_id = self.create_person(slug, &email, &password).await;
        let session_id = self.seed_session(slug, &user_id).await;
        Member {
            tenant: slug.to_owned(),
            user_id,
            email,
            password,
            session_id,
        }
    }

    /// A person of `tenant` whose `user.created` names `roles`, written straight to the log as the
    /// earlier model wrote users (sealed fields are placeholders); answers their id.
    pub async fn user_with_roles(&self, tenant: &str, roles: &[&str]) -> String {
        use custodian_domain::secret::Sealed;
        use custodian_domain::user::{self, UserCommand, UserKind};
        let user_id = Self::new_user_id();
        let ctx = custodian_app::commands::Context {
            actor: custodian_domain::Actor::system(),
            now: self.clock.now(),
            correlation_id: None,
        };
        let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
        custodian_app::commands::execute(
            &self.app.store,
            None,
            &custodian_app::stream(tenant, "user", &user_id).unwrap(),
            &ctx,
            None,
            user::evolve,
            |u| {
                user::decide(
                    u.as_ref(),
                    UserCommand::Create {
                        kind: UserKind::Person,
                        email: Sealed("v1.sealed-email".into()),
                        name: Sealed("v1.sealed-name".into()),
                        email_index: format!("{:064x}", uuid::Uuid::now_v7().as_u128()),
                        roles: roles.clone(),
                        credential: Some(Sealed("v1.sealed-password".into())),
                    },
                )
            },
        )
        .await
        .unwrap();
        user_id
    }

    /// Assigns `role` to `principal` on the whole of `tenant`, as the platform administrator;
    /// answers the assignment's id.
    pub async fn assign(&self, tenant: &str, principal: &str, role: &str) -> String {
        custodian_app::authz::manage::create_assignment(
            &self.app,
            &self.root().await,
            tenant,
            custodian_app::authz::manage::CreateAssignmentRequest {
                principal: principal.to_owned(),
                role: role.to_owned(),
                on: None,
                valid_from: None,
                valid_until: None,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("assigning {role} to {principal} in {tenant}: {e:?}"))
        .id
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
