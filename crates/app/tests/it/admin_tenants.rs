//! Tenant administration: creating, listing (the platform scope included), reading, renaming and
//! re-planning, suspending and reactivating tenants, and who may do which.

use custodian_app::access::Principal;
use custodian_app::admin::tenants::{
    self, CreateTenantRequest, PlanName, SuspendTenantRequest, TenantChanged, TenantListQuery,
    TenantStatusName, TenantView, UpdateTenantRequest,
};
use custodian_app::auth::index::Refusal;
use custodian_app::commands::{self, Context};
use custodian_app::{AppError, Clock, identity, stream};
use custodian_domain::id::type_id;
use custodian_domain::secret::TokenHash;
use custodian_domain::session::{self, SessionCommand};
use custodian_domain::user::{LoginMethod, ROLE_TENANT_ADMIN};
use custodian_domain::{Actor, EventRecord};

use crate::support::{START, TestApp};

fn create_req(slug: &str, name: &str, plan: Option<PlanName>) -> CreateTenantRequest {
    CreateTenantRequest {
        slug: slug.to_owned(),
        name: name.to_owned(),
        plan,
    }
}

async fn create(t: &TestApp, slug: &str) -> TenantChanged {
    let root = t.root().await;
    tenants::create(
        &t.app,
        &root,
        create_req(slug, &format!("{slug} Inc"), None),
    )
    .await
    .unwrap()
}

fn list_query(limit: Option<u32>, cursor: Option<&str>) -> TenantListQuery {
    TenantListQuery {
        limit: limit.map(|l| l.to_string()),
        cursor: cursor.map(str::to_owned),
    }
}

fn suspend_req(reason: &str) -> SuspendTenantRequest {
    SuspendTenantRequest {
        reason: reason.to_owned(),
    }
}

/// Every event of a stream, in order.
async fn events_of(t: &TestApp, name: &str) -> Vec<EventRecord> {
    let s = custodian_domain::StreamName::parse(name).unwrap();
    commands::read_stream(t.app.store.as_ref(), &s, 1)
        .await
        .unwrap()
}

/// A user of `tenant` with `roles` and a live session, written to the log as a login would leave
/// them, and an access token for that session.
async fn member(t: &TestApp, tenant: &str, roles: &[&str]) -> (Principal, String) {
    let user_id = t.user_with_roles(tenant, roles).await;
    let session_id = type_id("sess", uuid::Uuid::now_v7());
    let now = t.clock.now();
    let ctx = Context {
        actor: Actor::system(),
        now,
        correlation_id: None,
    };
    commands::execute(
        &t.app.store,
        None,
        &stream(tenant, "session", &session_id).unwrap(),
        &ctx,
        None,
        session::evolve,
        |s| {
            session::decide(
                s.as_ref(),
                SessionCommand::Start {
                    user_id: user_id.clone(),
                    refresh: TokenHash("0".repeat(64)),
                    method: LoginMethod::Password,
                    expires_at: now.plus(time::Duration::days(1)),
                    ip: None,
                    user_agent: None,
                },
            )
        },
    )
    .await
    .unwrap();
    let (token, _) = t
        .app
        .security
        .signer
        .issue(
            &user_id,
            tenant,
            &session_id,
            roles.iter().map(|r| (*r).to_owned()).collect(),
            now.as_datetime(),
        )
        .unwrap();
    (t.principal(tenant, &user_id, &session_id).await, token)
}

#[tokio::test]
async fn a_platform_admin_creates_an_active_tenant_on_its_plan_and_the_event_records_it() {
    let t = TestApp::new().await;
    let root = t.root().await;
    let created = tenants::create(
        &t.app,
        &root,
        create_req("acme", "  Acme Corp ", Some(PlanName::Team)),
    )
    .await
    .unwrap();
    assert_eq!(
        (
            created.slug.as_str(),
            created.name.as_str(),
            created.plan,
            created.status
        ),
        (
            "acme",
            "Acme Corp",
            PlanName::Team,
            TenantStatusName::Active
        )
    );
    let events = events_of(&t, "_system/tenant/acme").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type.as_str(), "tenant.created");
    assert_eq!(events[0].position, created.position);
    assert_eq!(events[0].actor.id, t.admin_id);
    assert_eq!(events[0].occurred_at, t.clock.now());

    // Without a plan, a tenant is on the free plan.
    assert_eq!(create(&t, "globex").await.plan, PlanName::Free);
}

#[tokio::test]
async fn slugs_follow_the_rules_and_system_is_reserved_for_the_platform() {
    let t = TestApp::new().await;
    let root = t.root().await;
    let too_long = "a".repeat(64);
    for slug in [
        "A!",
        "x",
        "1abc",
        "has_underscore",
        "-ab",
        too_long.as_str(),
    ] {
        let e = tenants::create(&t.app, &root, create_req(slug, "N", None))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, AppError::Invalid(d) if d.starts_with("slug: must be")),
            "{slug}: {e:?}"
        );
    }
    let e = tenants::create(&t.app, &root, create_req("_system", "N", None))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        AppError::invalid("slug: _system is reserved for the platform")
    );
    for name in ["", "   ", &"n".repeat(201)] {
        let e = tenants::create(&t.app, &root, create_req("acme", name, None))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, AppError::Invalid(d) if d.starts_with("name")),
            "{e:?}"
        );
    }
    // The longest and shortest slugs allowed are fine.
    let longest = format!("a{}", "-".repeat(62));
    for slug in ["ab", "a-1", longest.as_str()] {
        tenants::create(&t.app, &root, create_req(slug, "N", None))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_taken_slug_is_a_conflict_and_changes_nothing() {
    let t = TestApp::new().await;
    let root = t.root().await;
    create(&t, "acme").await;
    let e = tenants::create(&t.app, &root, create_req("acme", "Other", None))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        AppError::conflict("a tenant with this slug already exists")
    );
    assert_eq!(events_of(&t, "_system/tenant/acme").await.len(), 1);
}

#[tokio::test]
async fn the_listing_starts_with_the_platform_and_pages_across_it() {
    let t = TestApp::new().await;
    let root = t.root().await;
    for slug in ["gamma", "acme", "beta"] {
        create(&t, slug).await;
    }
    t.views_caught_up().await;

    let all = tenants::list(&t.app, &root, list_query(None, None))
        .await
        .unwrap();
    let slugs: Vec<&str> = all.items.iter().map(|v| v.slug.as_str()).collect();
    assert_eq!(slugs, ["_system", "acme", "beta", "gamma"]);
    assert_eq!(all.next_cursor, None);
    let platform = &all.items[0];
    let began = custodian_domain::Timestamp::parse(START)
        .unwrap()
        .to_string();
    assert_eq!(
        (
            platform.name.as_str(),
            platform.plan,
            platform.status,
            platform.created_at.as_str(),
            platform.updated_at.as_str()
        ),
        (
            "Platform",
            PlanName::Enterprise,
            TenantStatusName::Active,
            began.as_str(),
            began.as_str()
        ),
        "the platform began with the bootstrap"
    );

    // Every page size walks the same list, the platform once, and says when it is done.
    for limit in 1..=5u32 {
        let mut seen = vec![];
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = tenants::list(&t.app, &root, list_query(Some(limit), cursor.as_deref()))
                .await
                .unwrap();
            pages += 1;
            assert!(page.items.len() <= limit as usize);
            seen.extend(page.items.into_iter().map(|v| v.slug));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, slugs, "limit {limit}");
        assert_eq!(pages, 4_u32.div_ceil(limit).max(1), "limit {limit}");
    }
    let after_platform = tenants::list(&t.app, &root, list_query(Some(2), Some("_system")))
        .await
        .unwrap();
    assert_eq!(
        after_platform
            .items
            .iter()
            .map(|v| v.slug.as_str())
            .collect::<Vec<_>>(),
        ["acme", "beta"]
    );
    assert_eq!(after_platform.next_cursor.as_deref(), Some("beta"));

    for (limit, cursor) in [
        (Some("0"), None),
        (Some("201"), None),
        (Some("ten"), None),
        (None, Some("NOT_A_SLUG")),
    ] {
        let q = TenantListQuery {
            limit: limit.map(str::to_owned),
            cursor: cursor.map(str::to_owned),
        };
        let e = tenants::list(&t.app, &root, q).await.unwrap_err();
        assert!(
            matches!(e, AppError::Invalid(_)),
            "{limit:?} {cursor:?}: {e:?}"
        );
    }
}

#[tokio::test]
async fn reading_the_platform_scope_agrees_with_the_listing() {
    let t = TestApp::new().await;
    let root = t.root().await;
    t.advance(3600);
    create(&t, "acme").await;
    t.views_caught_up().await;
    let listed = tenants::list(&t.app, &root, list_query(None, None))
        .await
        .unwrap();
    let json = |v: &TenantView| serde_json::to_value(v).unwrap();
    let platform = tenants::get(&t.app, &root, "_system").await.unwrap();
    assert_eq!(json(&platform), json(&listed.items[0]));
    let acme = tenants::get(&t.app, &root, "acme").await.unwrap();
    assert_eq!(json(&acme), json(&listed.items[1]));
    assert_eq!(acme.created_at, t.clock.now().to_string());
}

#[tokio::test]
async fn a_tenant_is_renamed_and_replanned_and_reads_show_it() {
    let t = TestApp::new().await;
    let root = t.root().await;
    let created = create(&t, "beta").await;
    t.advance(90);
    let changed = tenants::update(
        &t.app,
        &root,
        "beta",
        UpdateTenantRequest {
            name: Some(" Beta Corp ".into()),
            plan: Some(PlanName::Enterprise),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (changed.name.as_str(), changed.plan, changed.status),
        ("Beta Corp", PlanName::Enterprise, TenantStatusName::Active)
    );
    let types: Vec<String> = events_of(&t, "_system/tenant/beta")
        .await
        .iter()
        .map(|e| e.event_type.as_str().to_owned())
        .collect();
    assert_eq!(
        types,
        ["tenant.created", "tenant.renamed", "tenant.plan_changed"]
    );
    assert!(changed.position > created.position);
    t.views_caught_up().await;
    let read = tenants::get(&t.app, &root, "beta").await.unwrap();
    assert_eq!(
        (read.name.as_str(), read.plan),
        ("Beta Corp", PlanName::Enterprise)
    );
    assert_eq!(read.updated_at, t.clock.now().to_string());
    assert_ne!(read.created_at, read.updated_at);

    // Asking for what already is writes nothing, and answers with the log's head.
    let head = t.app.store.head().await.unwrap().position;
    let same = tenants::update(
        &t.app,
        &root,
        "beta",
        UpdateTenantRequest {
            name: Some("Beta Corp".into()),
            plan: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(same.position, head);
    assert_eq!(t.app.store.head().await.unwrap().position, head);

    for (name, plan) in [
        (None, None),
        (Some(" "), None),
        (Some(""), Some(PlanName::Free)),
    ] {
        let e = tenants::update(
            &t.app,
            &root,
            "beta",
            UpdateTenantRequest {
                name: name.map(str::to_owned),
                plan,
            },
        )
        .await
        .unwrap_err();
        assert!(
            matches!(e, AppError::Invalid(_)),
            "{name:?} {plan:?}: {e:?}"
        );
    }
}

#[tokio::test]
async fn a_suspended_tenants_users_are_refused_and_its_sessions_end_for_good() {
    let t = TestApp::new().await;
    let root = t.root().await;
    create(&t, "acme").await;
    let (_, token) = member(&t, "acme", &[]).await;
    identity::authenticate(&t.app, &token).await.unwrap();

    let e = tenants::suspend(&t.app, &root, "acme", suspend_req(" "))
        .await
        .unwrap_err();
    assert!(matches!(e, AppError::Invalid(_)), "{e:?}");
    let suspended = tenants::suspend(&t.app, &root, "acme", suspend_req("unpaid"))
        .await
        .unwrap();
    assert_eq!(suspended.status, TenantStatusName::Suspended);
    let e = identity::authenticate(&t.app, &token).await.unwrap_err();
    assert_eq!(e, AppError::unauthenticated("the tenant is suspended"));
    assert_eq!(
        t.app.security.index.tenant("acme"),
        Err(Refusal::TenantSuspended)
    );
    let e = tenants::suspend(&t.app, &root, "acme", suspend_req("again"))
        .await
        .unwrap_err();
    assert_eq!(e, AppError::conflict("the tenant is suspended"));

    let reactivated = tenants::reactivate(&t.app, &root, "acme").await.unwrap();
    assert_eq!(reactivated.status, TenantStatusName::Active);
    assert!(reactivated.position > suspended.position);
    // The tenant acts again, but the suspension ended its sessions for good.
    let e = identity::authenticate(&t.app, &token).await.unwrap_err();
    assert_eq!(e, AppError::unauthenticated("the session has ended"));
    let e = tenants::reactivate(&t.app, &root, "acme")
        .await
        .unwrap_err();
    assert_eq!(e, AppError::conflict("the tenant is active"));

    let types: Vec<String> = events_of(&t, "_system/tenant/acme")
        .await
        .iter()
        .map(|e| e.event_type.as_str().to_owned())
        .collect();
    assert_eq!(
        types,
        ["tenant.created", "tenant.suspended", "tenant.reactivated"]
    );
}

#[tokio::test]
async fn the_platform_scope_cannot_be_changed() {
    let t = TestApp::new().await;
    let root = t.root().await;
    let head = t.app.store.head().await.unwrap().position;
    let rename = UpdateTenantRequest {
        name: Some("Mine".into()),
        plan: None,
    };
    let refusals = [
        tenants::update(&t.app, &root, "_system", rename).await,
        tenants::suspend(&t.app, &root, "_system", suspend_req("why not")).await,
        tenants::reactivate(&t.app, &root, "_system").await,
    ];
    for r in refusals {
        assert!(matches!(r, Err(AppError::Conflict(_))), "{r:?}");
    }
    assert_eq!(t.app.store.head().await.unwrap().position, head);
}

#[tokio::test]
async fn unknown_and_malformed_tenants_are_not_found() {
    let t = TestApp::new().await;
    let root = t.root().await;
    for slug in ["nope", "BAD!", ""] {
        let e = tenants::get(&t.app, &root, slug).await.unwrap_err();
        assert!(matches!(e, AppError::NotFound(_)), "{slug}: {e:?}");
    }
    let rename = || UpdateTenantRequest {
        name: Some("x".into()),
        plan: None,
    };
    let refusals = [
        tenants::update(&t.app, &root, "nope", rename()).await,
        tenants::suspend(&t.app, &root, "nope", suspend_req("r")).await,
        tenants::reactivate(&t.app, &root, "nope").await,
        tenants::reactivate(&t.app, &root, "BAD!").await,
    ];
    for r in refusals {
        assert!(matches!(r, Err(AppError::NotFound(_))), "{r:?}");
    }
}

#[tokio::test]
async fn other_callers_are_forbidden_their_own_tenant_and_never_see_another() {
    let t = TestApp::new().await;
    create(&t, "acme").await;
    create(&t, "globex").await;
    t.views_caught_up().await;
    // An administrator of the earlier model (carried over to the admin role at start-up), and a
    // viewer.
    let (admin, _) = member(&t, "acme", &[ROLE_TENANT_ADMIN]).await;
    assert_eq!(
        custodian_app::authz::migrate::tenant_admins(&t.app)
            .await
            .unwrap(),
        1
    );
    let (user, _) = member(&t, "acme", &[]).await;
    t.assign("acme", &user.user_id, "viewer").await;

    for caller in [&admin, &user] {
        // Their own tenant: they may read it, not change it.
        assert_eq!(
            tenants::get(&t.app, caller, "acme").await.unwrap().slug,
            "acme"
        );
        let own = [
            tenants::update(
                &t.app,
                caller,
                "acme",
                UpdateTenantRequest {
                    name: Some("Mine".into()),
                    plan: None,
                },
            )
            .await,
            tenants::suspend(&t.app, caller, "acme", suspend_req("coup")).await,
            tenants::reactivate(&t.app, caller, "acme").await,
            tenants::create(&t.app, caller, create_req("mine", "Mine", None)).await,
        ];
        for r in own {
            assert!(matches!(r, Err(AppError::Forbidden(_))), "{r:?}");
        }
        let e = tenants::list(&t.app, caller, list_query(None, None))
            .await
            .unwrap_err();
        assert!(matches!(e, AppError::Forbidden(_)), "{e:?}");

        // Another tenant, and the platform, do not exist for them.
        for other in ["globex", "_system"] {
            let e = tenants::get(&t.app, caller, other).await.unwrap_err();
            assert_eq!(e, AppError::not_found(format!("no tenant {other}")));
        }
        let others = [
            tenants::update(
                &t.app,
                caller,
                "globex",
                UpdateTenantRequest {
                    name: None,
                    plan: Some(PlanName::Team),
                },
            )
            .await,
            tenants::suspend(&t.app, caller, "globex", suspend_req("coup")).await,
            tenants::reactivate(&t.app, caller, "globex").await,
            tenants::suspend(&t.app, caller, "_system", suspend_req("coup")).await,
        ];
        for r in others {
            assert!(matches!(r, Err(AppError::NotFound(_))), "{r:?}");
        }
    }
    assert_eq!(events_of(&t, "_system/tenant/globex").await.len(), 1);
    assert_eq!(events_of(&t, "_system/tenant/acme").await.len(), 1);
}
