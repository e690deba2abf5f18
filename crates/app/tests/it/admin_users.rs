//! User administration within a tenant, by its administrators: creation, invitations, profiles,
//! disabling, erasure, password resets, sessions, listings, and the isolation of tenants.

use custodian_app::admin::users::{
    self, CreateUserRequest, CredentialListQuery, DisableUserRequest, InviteRequest,
    UpdateUserRequest, UserKindName, UserListQuery, UserStatusName,
};
use custodian_app::auth::tokens::{OpaqueToken, TokenKind};
use custodian_app::commands::read_stream;
use custodian_app::sessions::SessionListQuery;
use custodian_app::users::record_bad_code;
use custodian_app::{AppError, Clock, Principal, stream};
use custodian_domain::id::type_id;
use uuid::Uuid;

use crate::support::{ADMIN_PASSWORD, TestApp};

fn person(email: &str) -> CreateUserRequest {
    CreateUserRequest {
        email: email.to_owned(),
        name: "Ada Lovelace".to_owned(),
        kind: None,
        password: None,
        roles: None,
    }
}

fn agent(email: &str) -> CreateUserRequest {
    CreateUserRequest {
        kind: Some(UserKindName::Agent),
        ..person(email)
    }
}

fn reason(text: &str) -> DisableUserRequest {
    DisableUserRequest {
        reason: text.to_owned(),
    }
}

/// A service with the tenant `tenant` and an administrator of it, as a principal.
async fn with_tenant_admin(tenant: &str) -> (TestApp, Principal) {
    let t = TestApp::new().await;
    let admin = admin_of(&t, tenant).await;
    (t, admin)
}

/// Creates `tenant` and an administrator of it; returns them as a principal.
async fn admin_of(t: &TestApp, tenant: &str) -> Principal {
    t.create_tenant(tenant).await;
    let created = users::create(
        &t.app,
        &t.root().await,
        tenant,
        CreateUserRequest {
            roles: Some(vec!["tenant_admin".to_owned()]),
            ..person(&format!("admin@{tenant}.test"))
        },
    )
    .await
    .unwrap();
    t.principal(tenant, &created.user_id, "sess_admin").await
}

/// The event types of a stream, in order.
async fn types(t: &TestApp, tenant: &str, aggregate: &str, id: &str) -> Vec<String> {
    let s = stream(tenant, aggregate, id).unwrap();
    read_stream(t.app.store.as_ref(), &s, 1)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event_type.as_str().to_owned())
        .collect()
}

/// The blind index of an email address in a tenant (the id of its reservation stream).
fn email_stream(t: &TestApp, tenant: &str, email: &str) -> String {
    t.app.security.keyring.email_index(tenant, email)
}

/// Starts a session of `user_id` as a completed login would, and lets the authentication index
/// see it; returns its id.
async fn start_session(t: &TestApp, tenant: &str, user_id: &str) -> String {
    let session_id = t.seed_session(tenant, user_id).await;
    t.app.security.index.catch_up().await.unwrap();
    session_id
}

fn is_not_found<T: std::fmt::Debug>(r: &Result<T, AppError>) -> bool {
    matches!(r, Err(AppError::NotFound(_)))
}

fn is_conflict<T: std::fmt::Debug>(r: &Result<T, AppError>) -> bool {
    matches!(r, Err(AppError::Conflict(_)))
}

fn is_invalid<T: std::fmt::Debug>(r: &Result<T, AppError>) -> bool {
    matches!(r, Err(AppError::Invalid(_)))
}

// ---------------------------------------------------------------------------------------------
// Creation and invitations.

#[tokio::test]
async fn a_person_is_created_active_with_or_without_a_first_password() {
    let (t, admin) = with_tenant_admin("acme").await;
    let with = users::create(
        &t.app,
        &admin,
        "acme",
        CreateUserRequest {
            password: Some(ADMIN_PASSWORD.to_owned()),
            ..person("Ada@ACME.test")
        },
    )
    .await
    .unwrap();
    assert_eq!(with.status, UserStatusName::Active);
    assert_eq!(with.kind, UserKindName::Person);
    assert_eq!(with.email, "Ada@acme.test", "the domain is lowercased");
    assert!(with.password_set);
    assert_eq!(
        types(&t, "acme", "user", &with.user_id).await,
        ["user.created", "user.password_set"]
    );
    let without = users::create(&t.app, &admin, "acme", person("grace@acme.test"))
        .await
        .unwrap();
    assert!(!without.password_set);
    assert_eq!(
        types(&t, "acme", "user", &without.user_id).await,
        ["user.created"]
    );

    t.views_caught_up().await;
    let read = users::get(&t.app, &admin, "acme", &with.user_id)
        .await
        .unwrap();
    assert_eq!(read.user.email.as_deref(), Some("Ada@acme.test"));
    assert_eq!(read.user.name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(read.user.created_at, "2026-03-01T12:00:00.000000Z");
    assert!(read.credentials.unwrap().password_set);
    let read = users::get(&t.app, &admin, "acme", &without.user_id)
        .await
        .unwrap();
    assert!(!read.credentials.unwrap().password_set);
}

#[tokio::test]
async fn agents_and_services_cannot_hold_passwords() {
    let (t, admin) = with_tenant_admin("acme").await;
    for kind in [UserKindName::Agent, UserKindName::Service] {
        let refused = users::create(
            &t.app,
            &admin,
            "acme",
            CreateUserRequest {
                kind: Some(kind),
                password: Some(ADMIN_PASSWORD.to_owned()),
                ..person("bot@acme.test")
            },
        )
        .await;
        assert!(is_invalid(&refused), "{refused:?}");
    }
    let bot = users::create(&t.app, &admin, "acme", agent("bot@acme.test"))
        .await
        .unwrap();
    assert_eq!(bot.kind, UserKindName::Agent);
    assert!(!bot.password_set);
}

#[tokio::test]
async fn a_weak_password_or_a_bad_field_creates_nothing() {
    let (t, admin) = with_tenant_admin("acme").await;
    let head = t.app.store.head().await.unwrap().position;
    let weak = CreateUserRequest {
        password: Some("short".to_owned()),
        ..person("ada@acme.test")
    };
    let nameless = CreateUserRequest {
        name: "  ".to_owned(),
        ..person("ada@acme.test")
    };
    let unknown_role = CreateUserRequest {
        roles: Some(vec!["owner".to_owned()]),
        ..person("ada@acme.test")
    };
    let platform_role = CreateUserRequest {
        roles: Some(vec!["platform_admin".to_owned()]),
        ..person("ada@acme.test")
    };
    for req in [
        weak,
        nameless,
        unknown_role,
        platform_role,
        person("not an address"),
    ] {
        let r = users::create(&t.app, &admin, "acme", req).await;
        assert!(is_invalid(&r), "{r:?}");
    }
    assert_eq!(t.app.store.head().await.unwrap().position, head);
    // The address is still free.
    users::create(&t.app, &admin, "acme", person("ada@acme.test"))
        .await
        .unwrap();
}

#[tokio::test]
async fn only_a_platform_administrator_grants_platform_admin_and_only_in_system() {
    let t = TestApp::new().await;
    let root = t.root().await;
    let other = users::create(
        &t.app,
        &root,
        "_system",
        CreateUserRequest {
            roles: Some(vec![
                "platform_admin".to_owned(),
                "platform_admin".to_owned(),
            ]),
            ..person("second@platform.test")
        },
    )
    .await
    .unwrap();
    assert_eq!(other.roles, ["platform_admin"], "roles are deduplicated");
    let admin = t.principal("_system", &other.user_id, "sess_second").await;
    assert!(admin.is_platform_admin());
    // A tenant administrator cannot even see `_system`.
    let tenant_admin = admin_of(&t, "acme").await;
    let r = users::create(&t.app, &tenant_admin, "_system", person("x@platform.test")).await;
    assert!(is_not_found(&r), "{r:?}");
}

#[tokio::test]
async fn an_email_taken_in_the_tenant_is_a_conflict_but_free_in_another_tenant() {
    let t = TestApp::new().await;
    let acme = admin_of(&t, "acme").await;
    let globex = admin_of(&t, "globex").await;
    let first = users::create(&t.app, &acme, "acme", person("ada@acme.test"))
        .await
        .unwrap();
    // The same address, however its case is written, is taken in acme.
    for email in ["ada@acme.test", "ADA@Acme.Test", " ada@acme.test "] {
        let again = users::create(&t.app, &acme, "acme", person(email)).await;
        assert!(is_conflict(&again), "{email}: {again:?}");
        let invited = users::invite(
            &t.app,
            &acme,
            "acme",
            InviteRequest {
                email: email.to_owned(),
                name: "Ada".to_owned(),
                roles: None,
            },
        )
        .await;
        assert!(is_conflict(&invited), "{email}: {invited:?}");
    }
    // The reservation still names the first user only.
    let index = email_stream(&t, "acme", "ada@acme.test");
    assert_eq!(types(&t, "acme", "email", &index).await, ["email.claimed"]);
    assert_eq!(
        t.app
            .security
            .index
            .user_by_email("acme", &index)
            .as_deref(),
        Some(first.user_id.as_str())
    );
    // Another tenant has its own addresses.
    users::create(&t.app, &globex, "globex", person("ada@acme.test"))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_invitation_returns_a_one_time_token_that_the_log_never_holds() {
    let (t, admin) = with_tenant_admin("acme").await;
    t.advance(90);
    let invited = users::invite(
        &t.app,
        &admin,
        "acme",
        InviteRequest {
            email: "grace@acme.test".to_owned(),
            name: "Grace Hopper".to_owned(),
            roles: Some(vec!["tenant_admin".to_owned()]),
        },
    )
    .await
    .unwrap();
    let token = OpaqueToken::parse(&invited.invitation_token, TokenKind::Invitation).unwrap();
    assert_eq!(token.tenant(), "acme");
    assert_eq!(token.subject(), invited.user_id);
    // Seven days from the invitation, to the second.
    assert_eq!(invited.expires_at, "2026-03-08T12:01:30.000000Z");
    let s = stream("acme", "user", &invited.user_id).unwrap();
    let records = read_stream(t.app.store.as_ref(), &s, 1).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].event_type.as_str(), "user.invited");
    // The answer's position is that of the last event: the role's assignment after the user.
    assert!(records[0].position < invited.position);
    assert!(
        !records[0]
            .data
            .to_string()
            .contains(&invited.invitation_token)
    );

    t.views_caught_up().await;
    let read = users::get(&t.app, &admin, "acme", &invited.user_id)
        .await
        .unwrap();
    assert_eq!(read.user.status, UserStatusName::Invited);
    assert_eq!(read.user.email.as_deref(), Some("grace@acme.test"));
    // `tenant_admin` is the earlier name of `admin`: an assignment on the whole tenant.
    assert!(read.user.roles.is_empty());
    let held = t
        .app
        .policy
        .read("acme", |p| {
            p.tenant_roles_of(
                &invited.user_id,
                custodian_domain::policy::AsOf::now(t.clock.now()),
            )
        })
        .unwrap();
    assert_eq!(held, ["admin"]);
}

// ---------------------------------------------------------------------------------------------
// Profiles.

#[tokio::test]
async fn a_new_email_is_claimed_and_the_old_one_released_for_anyone_to_claim() {
    let (t, admin) = with_tenant_admin("acme").await;
    let ada = users::create(&t.app, &admin, "acme", person("ada@acme.test"))
        .await
        .unwrap();
    t.advance(60);
    let changed = users::update(
        &t.app,
        &admin,
        "acme",
        &ada.user_id,
        UpdateUserRequest {
            email: Some("ada@lovelace.test".to_owned()),
            name: Some("Countess of Lovelace".to_owned()),
        },
    )
    .await
    .unwrap();
    assert_eq!(changed.status, UserStatusName::Active);
    assert_eq!(changed.position, t.app.store.head().await.unwrap().position);
    let old = email_stream(&t, "acme", "ada@acme.test");
    let new = email_stream(&t, "acme", "ada@lovelace.test");
    assert_eq!(
        types(&t, "acme", "email", &old).await,
        ["email.claimed", "email.released"]
    );
    assert_eq!(types(&t, "acme", "email", &new).await, ["email.claimed"]);
    assert_eq!(
        types(&t, "acme", "user", &ada.user_id).await,
        ["user.created", "user.profile_updated"]
    );

    // The old address is free again; the new one is taken.
    users::create(&t.app, &admin, "acme", person("ada@acme.test"))
        .await
        .unwrap();
    let taken = users::create(&t.app, &admin, "acme", person("ada@lovelace.test")).await;
    assert!(is_conflict(&taken), "{taken:?}");

    t.views_caught_up().await;
    let read = users::get(&t.app, &admin, "acme", &ada.user_id)
        .await
        .unwrap();
    assert_eq!(read.user.email.as_deref(), Some("ada@lovelace.test"));
    assert_eq!(read.user.name.as_deref(), Some("Countess of Lovelace"));
    assert_eq!(read.user.updated_at, "2026-03-01T12:01:00.000000Z");
}

#[tokio::test]
async fn an_email_held_by_another_user_changes_nothing() {
    let (t, admin) = with_tenant_admin("acme").await;
    let ada = users::create(&t.app, &admin, "acme", person("ada@acme.test"))
        .await
        .unwrap();
    users::create(&t.app, &admin, "acme", person("grace@acme.test"))
        .await
        .unwrap();
    let head = t.app.store.head().await.unwrap().position;
    let r = users::update(
        &t.app,
        &admin,
        "acme",
        &ada.user_id,
        UpdateUserRequest {
            email: Some("Grace@ACME.test".to_owned()),
            name: Some("Someone else".to_owned()),
        },
    )
    .await;
    assert!(is_conflict(&r), "{r:?}");
    assert_eq!(t.app.store.head().await.unwrap().position, head);
    let empty = users::update(
        &t.app,
        &admin,
        "acme",
        &ada.user_id,
        UpdateUserRequest::default(),
    )
    .await;
    assert!(is_invalid(&empty), "{empty:?}");
    // The same address again changes nothing, and answers the log's head.
    let same = users::update(
        &t.app,
        &admin,
        "acme",
        &ada.user_id,
        UpdateUserRequest {
            email: Some("ada@acme.test".to_owned()),
            name: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(same.position, head);
    let index = email_stream(&t, "acme", "ada@acme.test");
    assert_eq!(types(&t, "acme", "email", &index).await, ["email.claimed"]);
}

// ---------------------------------------------------------------------------------------------
// Disabling, enabling, erasing.

#[tokio::test]
async fn a_disabled_user_loses_their_sessions_until_enabled_again() {
    let (t, admin) = with_tenant_admin("acme").await;
    let ada = users::create(&t.app, &admin, "acme", person("ada@acme.test"))
        .await
        .unwrap();
    let session = start_session(&t, "acme", &ada.user_id).await;
    let blank = users::disable(&t.app, &admin, "acme", &ada.user_id, reason(" ")).await;
    assert!(is_invalid(&blank), "{blank:?}");

    let disabled = users::disable(&t.app, &admin, "acme", &ada.user_id, reason("left"))
        .await
        .unwrap();
    assert_eq!(disabled.status, UserStatusName::Disabled);
    assert_eq!(
        types(&t, "acme", "session", &session).await,
        ["session.started", "session.revoked"]
    );
    assert_eq!(
        disabled.position,
        t.app.store.head().await.unwrap().position,
        "the answer names the revocation, the last event written"
    );
    t.app.security.index.catch_up().await.unwrap();
    assert!(
        t.app
            .security
            .index
            .live_sessions("acme", &ada.user_id)
            .is_empty()
    );
    let again = users::disable(&t.app, &admin, "acme", &ada.user_id, reason("left")).await;
    assert!(is_conflict(&again), "{again:?}");

    let enabled = users::enable(&t.app, &admin, "acme", &ada.user_id)
        .await
        .unwrap();
    assert_eq!(enabled.status, UserStatusName::Active);
    let again = users::enable(&t.app, &admin, "acme", &ada.user_id).await;
    assert!(is_conflict(&again), "{again:?}");
    assert_eq!(
        types(&t, "acme", "user", &ada.user_id).await,
        ["user.created", "user.disabled", "user.enabled"]
    );
}

#[tokio::test]
async fn administrators_cannot_disable_or_erase_themselves() {
    let (t, admin) = with_tenant_admin("acme").await;
    let head = t.app.store.head().await.unwrap().position;
    let disabled = users::disable(&t.app, &admin, "acme", &admin.user_id, reason("oops")).await;
    assert!(is_conflict(&disabled), "{disabled:?}");
    let erased = users::erase(&t.app, &admin, "acme", &admin.user_id).await;
    assert!(is_conflict(&erased), "{erased:?}");
    let root = t.root().await;
    let erased = users::erase(&t.app, &root, "_system", &root.user_id).await;
    assert!(is_conflict(&erased), "{erased:?}");
    assert_eq!(t.app.store.head().await.unwrap().position, head);
    // Another administrator may.
    users::disable(&t.app, &root, "acme", &admin.user_id, reason("left"))
        .await
        .unwrap();
}

#[tokio::test]
async fn erasure_shreds_the_data_key_revokes_sessions_and_frees_the_email() {
    let (t, admin) = with_tenant_admin("acme").await;
    let ada = users::create(
        &t.app,
        &admin,
        "acme",
        CreateUserRequest {
            password: Some(ADMIN_PASSWORD.to_owned()),
            ..person("ada@acme.test")
        },
    )
    .await
    .unwrap();
    let sessions = [
        start_session(&t, "acme", &ada.user_id).await,
        start_session(&t, "acme", &ada.user_id).await,
    ];
    assert!(
        t.app
            .security
            .data_key(&ada.user_id)
            .await
            .unwrap()
            .is_some()
    );

    let erased = users::erase(&t.app, &admin, "acme", &ada.user_id)
        .await
        .unwrap();
    assert_eq!(erased.user_id, ada.user_id);
    assert_eq!(erased.position, t.app.store.head().await.unwrap().position);
    assert_eq!(
        types(&t, "acme", "user", &ada.user_id).await,
        ["user.created", "user.password_set", "user.deleted"]
    );
    for session in &sessions {
        assert_eq!(
            types(&t, "acme", "session", session).await,
            ["session.started", "session.revoked"]
        );
    }
    let index = email_stream(&t, "acme", "ada@acme.test");
    assert_eq!(
        types(&t, "acme", "email", &index).await,
        ["email.claimed", "email.released"]
    );
    // The key is gone from the vault and from memory.
    assert!(
        t.app
            .security
            .vault
            .get(&ada.user_id)
            .await
            .unwrap()
            .is_none()
    );
    t.app.security.index.catch_up().await.unwrap();
    assert!(
        t.app
            .security
            .data_key(&ada.user_id)
            .await
            .unwrap()
            .is_none()
    );

    t.views_caught_up().await;
    let read = users::get(&t.app, &admin, "acme", &ada.user_id)
        .await
        .unwrap();
    assert_eq!(read.user.status, UserStatusName::Deleted);
    assert_eq!((read.user.email, read.user.name), (None, None));
    assert!(read.credentials.is_none());

    // Erasing again is as if the user never existed; their address is free.
    let again = users::erase(&t.app, &admin, "acme", &ada.user_id).await;
    assert!(is_not_found(&again), "{again:?}");
    let changed = users::update(
        &t.app,
        &admin,
        "acme",
        &ada.user_id,
        UpdateUserRequest {
            name: Some("Back".to_owned()),
            email: None,
        },
    )
    .await;
    assert!(is_not_found(&changed), "{changed:?}");
    users::create(&t.app, &admin, "acme", person("ada@acme.test"))
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Isolation of tenants.

#[tokio::test]
async fn another_tenants_users_do_not_exist_for_a_tenant_administrator() {
    let t = TestApp::new().await;
    let acme = admin_of(&t, "acme").await;
    let globex = admin_of(&t, "globex").await;
    let hidden = users::create(&t.app, &globex, "globex", person("ada@globex.test"))
        .await
        .unwrap();
    t.views_caught_up().await;
    let head = t.app.store.head().await.unwrap().position;
    let guessed = type_id("user", Uuid::now_v7());
    // Through the other tenant's path, through one's own, with a real id or a guessed one.
    for (tenant, user_id) in [
        ("globex", hidden.user_id.as_str()),
        ("globex", guessed.as_str()),
        ("globex", "user_guess"),
        ("acme", hidden.user_id.as_str()),
        ("acme", guessed.as_str()),
        ("acme", "not-a-user"),
        ("nowhere", hidden.user_id.as_str()),
    ] {
        let what = format!("{tenant}/{user_id}");
        let r = users::get(&t.app, &acme, tenant, user_id).await;
        assert!(is_not_found(&r), "get {what}: {r:?}");
        let r = users::disable(&t.app, &acme, tenant, user_id, reason("x")).await;
        assert!(is_not_found(&r), "disable {what}: {r:?}");
        let r = users::enable(&t.app, &acme, tenant, user_id).await;
        assert!(is_not_found(&r), "enable {what}: {r:?}");
        let r = users::erase(&t.app, &acme, tenant, user_id).await;
        assert!(is_not_found(&r), "erase {what}: {r:?}");
        let r = users::issue_password_reset(&t.app, &acme, tenant, user_id).await;
        assert!(is_not_found(&r), "reset {what}: {r:?}");
        let r = users::revoke_sessions(&t.app, &acme, tenant, user_id).await;
        assert!(is_not_found(&r), "revoke {what}: {r:?}");
        let q = SessionListQuery::default();
        let r = users::sessions(&t.app, &acme, tenant, user_id, &q).await;
        assert!(is_not_found(&r), "sessions {what}: {r:?}");
        let update = UpdateUserRequest {
            name: Some("Mallory".to_owned()),
            email: None,
        };
        let r = users::update(&t.app, &acme, tenant, user_id, update).await;
        assert!(is_not_found(&r), "update {what}: {r:?}");
    }
    let r = users::list(&t.app, &acme, "globex", &UserListQuery::default()).await;
    assert!(is_not_found(&r), "{r:?}");
    let r = users::credentials(&t.app, &acme, "globex", &CredentialListQuery::default()).await;
    assert!(is_not_found(&r), "{r:?}");
    let r = users::create(&t.app, &acme, "globex", person("eve@globex.test")).await;
    assert!(is_not_found(&r), "{r:?}");
    assert_eq!(t.app.store.head().await.unwrap().position, head);
    // A platform administrator sees every tenant.
    users::get(&t.app, &t.root().await, "globex", &hidden.user_id)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_user_without_the_role_is_forbidden_in_their_own_tenant() {
    let (t, admin) = with_tenant_admin("acme").await;
    let ada = users::create(&t.app, &admin, "acme", person("ada@acme.test"))
        .await
        .unwrap();
    let plain = t.principal("acme", &ada.user_id, "sess_ada").await;
    let r = users::list(&t.app, &plain, "acme", &UserListQuery::default()).await;
    assert!(matches!(r, Err(AppError::Forbidden(_))), "{r:?}");
    let r = users::create(&t.app, &plain, "acme", person("x@acme.test")).await;
    assert!(matches!(r, Err(AppError::Forbidden(_))), "{r:?}");
    let r = users::erase(&t.app, &plain, "acme", &admin.user_id).await;
    assert!(matches!(r, Err(AppError::Forbidden(_))), "{r:?}");
    // A tenant administrator cannot make a platform administrator.
    let r = users::create(
        &t.app,
        &admin,
        "acme",
        CreateUserRequest {
            roles: Some(vec!["platform_admin".to_owned()]),
            ..person("x@acme.test")
        },
    )
    .await;
    assert!(is_invalid(&r), "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// Listings.

#[tokio::test]
async fn users_are_listed_in_creation_order_page_by_page_and_filtered() {
    let (t, admin) = with_tenant_admin("acme").await;
    for i in 0..3 {
        users::create(&t.app, &admin, "acme", person(&format!("p{i}@acme.test")))
            .await
            .unwrap();
    }
    let mut agents = vec![];
    for i in 0..2 {
        let bot = users::create(&t.app, &admin, "acme", agent(&format!("b{i}@acme.test")))
            .await
            .unwrap();
        agents.push(bot.user_id);
    }
    users::disable(&t.app, &admin, "acme", &agents[0], reason("retired"))
        .await
        .unwrap();
    t.views_caught_up().await;

    let all = users::list(&t.app, &admin, "acme", &UserListQuery::default())
        .await
        .unwrap();
    assert_eq!(all.items.len(), 6, "five users and the administrator");
    assert!(all.next_cursor.is_none());
    let ids: Vec<&str> = all.items.iter().map(|u| u.user_id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted);

    let mut paged = vec![];
    let mut cursor = None;
    loop {
        let q = UserListQuery {
            limit: Some("4".to_owned()),
            cursor: cursor.clone(),
            ..UserListQuery::default()
        };
        let page = users::list(&t.app, &admin, "acme", &q).await.unwrap();
        assert!(page.items.len() <= 4);
        paged.extend(page.items.into_iter().map(|u| u.user_id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(paged, ids);

    let q = UserListQuery {
        kind: Some("agent".to_owned()),
        ..UserListQuery::default()
    };
    let bots = users::list(&t.app, &admin, "acme", &q).await.unwrap();
    let bot_ids: Vec<String> = bots.items.into_iter().map(|u| u.user_id).collect();
    assert_eq!(bot_ids, agents);
    let q = UserListQuery {
        status: Some("disabled".to_owned()),
        kind: Some("agent".to_owned()),
        ..UserListQuery::default()
    };
    let disabled = users::list(&t.app, &admin, "acme", &q).await.unwrap();
    assert_eq!(disabled.items.len(), 1);
    assert_eq!(disabled.items[0].user_id, agents[0]);

    for q in [
        UserListQuery {
            status: Some("sleeping".to_owned()),
            ..UserListQuery::default()
        },
        UserListQuery {
            kind: Some("robot".to_owned()),
            ..UserListQuery::default()
        },
        UserListQuery {
            limit: Some("0".to_owned()),
            ..UserListQuery::default()
        },
        UserListQuery {
            cursor: Some("sess_01".to_owned()),
            ..UserListQuery::default()
        },
    ] {
        let r = users::list(&t.app, &admin, "acme", &q).await;
        assert!(is_invalid(&r), "{q:?}: {r:?}");
    }
}

#[tokio::test]
async fn a_locked_login_is_listed_until_the_lock_expires() {
    let (t, admin) = with_tenant_admin("acme").await;
    let ada = users::create(&t.app, &admin, "acme", person("ada@acme.test"))
        .await
        .unwrap();
    // A hundred consecutive failures lock the login for one minute.
    for _ in 0..100 {
        record_bad_code(&t.app, "acme", &ada.user_id, None, t.clock.now())
            .await
            .unwrap();
    }
    t.views_caught_up().await;
    let locked = CredentialListQuery {
        locked: Some("true".to_owned()),
        ..CredentialListQuery::default()
    };
    let page = users::credentials(&t.app, &admin, "acme", &locked)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].user_id, ada.user_id);
    assert_eq!(page.items[0].failed_logins, 100);
    assert_eq!(
        page.items[0].locked_until.as_deref(),
        Some("2026-03-01T12:01:00.000000Z")
    );
    let all = users::credentials(&t.app, &admin, "acme", &CredentialListQuery::default())
        .await
        .unwrap();
    assert_eq!(all.items.len(), 2);

    t.advance(60);
    let page = users::credentials(&t.app, &admin, "acme", &locked)
        .await
        .unwrap();
    assert!(page.items.is_empty(), "the lock ends at 12:01:00");

    let bad = CredentialListQuery {
        locked: Some("yes".to_owned()),
        ..CredentialListQuery::default()
    };
    let r = users::credentials(&t.app, &admin, "acme", &bad).await;
    assert!(is_invalid(&r), "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// Password resets and sessions.

#[tokio::test]
async fn a_password_reset_issues_a_token_valid_for_an_hour() {
    let (t, admin) = with_tenant_admin("acme").await;
    let ada = users::create(&t.app, &admin, "acme", person("ada@acme.test"))
        .await
        .unwrap();
    t.advance(5);
    let issued = users::issue_password_reset(&t.app, &admin, "acme", &ada.user_id)
        .await
        .unwrap();
    let token = OpaqueToken::parse(&issued.reset_token, TokenKind::PasswordReset).unwrap();
    assert_eq!(
        (token.tenant(), token.subject()),
        ("acme", ada.user_id.as_str())
    );
    assert_eq!(issued.expires_at, "2026-03-01T13:00:05.000000Z");
    assert_eq!(issued.position, t.app.store.head().await.unwrap().position);
    assert_eq!(
        types(&t, "acme", "user", &ada.user_id).await,
        ["user.created", "user.password_reset_issued"]
    );

    let bot = users::create(&t.app, &admin, "acme", agent("bot@acme.test"))
        .await
        .unwrap();
    let r = users::issue_password_reset(&t.app, &admin, "acme", &bot.user_id).await;
    assert!(is_conflict(&r), "{r:?}");
}

#[tokio::test]
async fn revoking_sessions_counts_those_that_were_live() {
    let (t, admin) = with_tenant_admin("acme").await;
    let ada = users::create(&t.app, &admin, "acme", person("ada@acme.test"))
        .await
        .unwrap();
    let first = start_session(&t, "acme", &ada.user_id).await;
    let second = start_session(&t, "acme", &ada.user_id).await;

    let revoked = users::revoke_sessions(&t.app, &admin, "acme", &ada.user_id)
        .await
        .unwrap();
    assert_eq!(revoked.revoked, 2);
    assert_eq!(revoked.position, t.app.store.head().await.unwrap().position);
    for session in [&first, &second] {
        assert_eq!(
            types(&t, "acme", "session", session).await,
            ["session.started", "session.revoked"]
        );
    }
    // Nothing left to revoke: the answer names the log's head.
    let again = users::revoke_sessions(&t.app, &admin, "acme", &ada.user_id)
        .await
        .unwrap();
    assert_eq!(again.revoked, 0);
    assert_eq!(again.position, revoked.position);
}

#[tokio::test]
async fn an_administrator_lists_all_of_a_users_sessions_by_default() {
    let (t, admin) = with_tenant_admin("acme").await;
    let ada = users::create(&t.app, &admin, "acme", person("ada@acme.test"))
        .await
        .unwrap();
    let ended = start_session(&t, "acme", &ada.user_id).await;
    users::revoke_sessions(&t.app, &admin, "acme", &ada.user_id)
        .await
        .unwrap();
    let live = start_session(&t, "acme", &ada.user_id).await;
    t.views_caught_up().await;

    let all = users::sessions(
        &t.app,
        &admin,
        "acme",
        &ada.user_id,
        &SessionListQuery::default(),
    )
    .await
    .unwrap();
    let ids: Vec<&str> = all.items.iter().map(|s| s.session_id.as_str()).collect();
    assert_eq!(ids, [ended.as_str(), live.as_str()]);
    assert_eq!(all.items[0].status, "revoked");
    assert!(all.items.iter().all(|s| !s.current));

    let active = SessionListQuery {
        active: Some("true".to_owned()),
        ..SessionListQuery::default()
    };
    let page = users::sessions(&t.app, &admin, "acme", &ada.user_id, &active)
        .await
        .unwrap();
    let ids: Vec<&str> = page.items.iter().map(|s| s.session_id.as_str()).collect();
    assert_eq!(ids, [live.as_str()]);

    // Thirty days on, the live session has expired too.
    t.advance(30 * 24 * 3600);
    let page = users::sessions(&t.app, &admin, "acme", &ada.user_id, &active)
        .await
        .unwrap();
    assert!(page.items.is_empty());
}

#[tokio::test]
async fn composed_decomposed_and_fullwidth_spellings_of_an_email_are_one_account() {
    let (t, admin) = with_tenant_admin("acme").await;
    let created = users::create(
        &t.app,
        &admin,
        "acme",
        CreateUserRequest {
            password: Some("a long enough passphrase".to_owned()),
            ..person("jos\u{e9}@acme.test")
        },
    )
    .await
    .unwrap();
    // (spelling, what it is)
    let spellings = [
        ("jose\u{301}@acme.test", "decomposed (NFD)"),
        ("jos\u{e9}@ACME.test", "upper-case domain"),
        (
            "\u{ff4a}\u{ff4f}\u{ff53}\u{e9}\u{ff20}\u{ff41}\u{ff43}\u{ff4d}\u{ff45}.test",
            "fullwidth",
        ),
    ];
    for (email, what) in spellings {
        let r = users::create(&t.app, &admin, "acme", person(email)).await;
        assert!(matches!(r, Err(AppError::Conflict(_))), "{what}: {r:?}");
        let login = custodian_app::identity::login(
            &t.app,
            &custodian_app::Origin::default(),
            custodian_app::identity::LoginRequest {
                tenant: "acme".to_owned(),
                email: email.to_owned(),
                password: "a long enough passphrase".to_owned(),
            },
        )
        .await;
        match login {
            Ok(custodian_app::identity::LoginOutcome::Authenticated(tokens)) => {
                assert_eq!(tokens.user_id, created.user_id, "{what}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn control_characters_bidi_overrides_and_weak_passwords_are_refused() {
    let (t, admin) = with_tenant_admin("acme").await;
    let head = t.app.store.head().await.unwrap().position;
    let with_password = |p: &str| CreateUserRequest {
        password: Some(p.to_owned()),
        ..person("ada@acme.test")
    };
    let named = |n: &str| CreateUserRequest {
        name: n.to_owned(),
        ..person("ada@acme.test")
    };
    // (request, what is wrong with it)
    let cases = [
        (person("ada\0@acme.test"), "NUL in the email"),
        (
            person("ada@acme.test\r\nBcc: x@y.test"),
            "CR/LF in the email",
        ),
        (person("ada\u{85}@acme.test"), "NEL in the email"),
        (named("Ada\0"), "NUL in the name"),
        (named("Ada\r\nLovelace"), "CR/LF in the name"),
        (named("Ada\u{7}"), "BEL in the name"),
        (named("\u{202e}ecalevoL adA"), "right-to-left override"),
        (named("Ada \u{202a}x"), "left-to-right embedding"),
        (named("Ada \u{2066}x"), "left-to-right isolate"),
        (named("Ada \u{2069}x"), "pop directional isolate"),
        (with_password("        "), "eight spaces"),
        (with_password(&" ".repeat(20)), "twenty spaces"),
        (with_password(&"\0".repeat(20)), "twenty NUL bytes"),
        (with_password("correct horse\nbattery staple"), "a newline"),
        (with_password("Zq7#mVx!pL2$wR"), "fourteen characters"),
        (
            with_password(&"e\u{301}".repeat(14)),
            "fourteen characters after normalization",
        ),
    ];
    for (req, what) in cases {
        let r = users::create(&t.app, &admin, "acme", req).await;
        assert!(is_invalid(&r), "{what}: {r:?}");
    }
    assert_eq!(t.app.store.head().await.unwrap().position, head);
    users::create(&t.app, &admin, "acme", with_password("Zq7#mVx!pL2$wR9"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_drops_a_cached_data_key_once_another_instance_erased_the_user() {
    let Some(t) = TestApp::postgres().await else {
        return;
    };
    let other = t.another_instance().await;
    t.create_tenant("acme").await;
    let ada = t
        .create_person("acme", "ada@acme.test", ADMIN_PASSWORD)
        .await;
    // This instance reads Ada's data key, and keeps it in memory.
    assert!(t.app.security.data_key(&ada).await.unwrap().is_some());

    // The other instance erases Ada: it destroys the key in the shared vault and logs it.
    other.security.index.catch_up().await.unwrap();
    let root = Principal {
        user: other
            .security
            .index
            .user(custodian_app::auth::index::SYSTEM_TENANT, &t.admin_id)
            .unwrap(),
        ..t.root().await
    };
    users::erase(&other, &root, "acme", &ada).await.unwrap();

    // This instance learns of it from the log it follows, and never serves the key again.
    t.app.security.index.catch_up().await.unwrap();
    assert!(t.app.security.data_key(&ada).await.unwrap().is_none());
}
