//! Carrying the earlier `tenant_admin` role over to assignments of the built-in `admin` role:
//! once per user, by the system, never for the platform scope, and never again once ended.

use custodian_app::authz::check::{self, CheckRequest, VerdictView};
use custodian_app::authz::manage;
use custodian_app::authz::migrate;
use custodian_domain::policy::PolicyEvent;
use custodian_domain::user::ROLE_TENANT_ADMIN;
use custodian_domain::{Actor, DomainEvent as _, EventRecord};

use crate::support::TestApp;

/// A person of `tenant` created with `roles`, as the earlier model wrote them: the roles named in
/// their `user.created`. Answers their id.
async fn legacy_user(t: &TestApp, tenant: &str, roles: &[&str]) -> String {
    t.user_with_roles(tenant, roles).await
}

/// The carried-over assignments of `tenant`'s policy stream: each record with its event.
async fn carried_over(t: &TestApp, tenant: &str) -> Vec<(EventRecord, PolicyEvent)> {
    t.stream_events(tenant, "policy", "rules")
        .await
        .into_iter()
        .filter_map(|r| {
            let e = PolicyEvent::decode(r.event_type.as_str(), r.schema, &r.data).unwrap();
            match &e {
                PolicyEvent::AssignmentCreated {
                    migrated_from: Some(_),
                    ..
                } => Some((r, e)),
                _ => None,
            }
        })
        .collect()
}

/// The principals of carried-over assignments, sorted.
fn principals(carried: &[(EventRecord, PolicyEvent)]) -> Vec<String> {
    let mut out: Vec<String> = carried
        .iter()
        .map(|(_, e)| match e {
            PolicyEvent::AssignmentCreated { principal, .. } => principal.clone(),
            _ => unreachable!(),
        })
        .collect();
    out.sort();
    out
}

/// A ledger with tenant administrators of the earlier model in two tenants and in `_system`, and
/// a person without the role.
struct Legacy {
    acme: Vec<String>,
    globex: String,
    plain: String,
}

async fn legacy(t: &TestApp) -> Legacy {
    t.create_tenant("acme").await;
    t.create_tenant("globex").await;
    let mut acme = vec![
        legacy_user(t, "acme", &[ROLE_TENANT_ADMIN]).await,
        legacy_user(t, "acme", &[ROLE_TENANT_ADMIN]).await,
    ];
    acme.sort();
    let plain = legacy_user(t, "acme", &[]).await;
    let globex = legacy_user(t, "globex", &[ROLE_TENANT_ADMIN]).await;
    legacy_user(t, "_system", &[ROLE_TENANT_ADMIN]).await;
    t.app.security.index.catch_up().await.unwrap();
    Legacy {
        acme,
        globex,
        plain,
    }
}

#[tokio::test]
async fn each_tenant_admin_of_the_earlier_model_gets_one_admin_assignment_by_the_system() {
    let t = TestApp::new().await;
    let users = legacy(&t).await;
    let system_before = carried_over(&t, "_system").await.len();

    migrate::tenant_admins(&t.app).await.unwrap();

    let acme = carried_over(&t, "acme").await;
    assert_eq!(principals(&acme), users.acme);
    assert!(!principals(&acme).contains(&users.plain));
    let globex = carried_over(&t, "globex").await;
    assert_eq!(principals(&globex), std::slice::from_ref(&users.globex));
    for (record, event) in acme.iter().chain(&globex) {
        assert_eq!(record.event_type.as_str(), "assignment.created");
        assert_eq!(record.actor, Actor::system());
        let PolicyEvent::AssignmentCreated {
            role,
            on,
            valid_from,
            valid_until,
            assigned_by,
            migrated_from,
            ..
        } = event
        else {
            unreachable!()
        };
        assert_eq!(
            (
                role.as_str(),
                on,
                valid_from,
                valid_until,
                assigned_by.as_str(),
                migrated_from.as_deref()
            ),
            (
                "admin",
                &None,
                &None,
                &None,
                "system",
                Some(ROLE_TENANT_ADMIN)
            )
        );
    }
    assert_eq!(
        carried_over(&t, "_system").await.len(),
        system_before,
        "tenant_admin means nothing in the platform scope"
    );
}

#[tokio::test]
async fn carrying_tenant_admin_over_again_or_concurrently_appends_each_assignment_once() {
    let t = TestApp::new().await;
    let users = legacy(&t).await;

    migrate::tenant_admins(&t.app).await.unwrap();
    assert_eq!(migrate::tenant_admins(&t.app).await.unwrap(), 0);
    let (a, b) = tokio::join!(
        migrate::tenant_admins(&t.app),
        migrate::tenant_admins(&t.app)
    );
    assert_eq!((a.unwrap(), b.unwrap()), (0, 0));
    assert_eq!(principals(&carried_over(&t, "acme").await), users.acme);
    assert_eq!(
        principals(&carried_over(&t, "globex").await),
        std::slice::from_ref(&users.globex)
    );

    // New tenant administrators of the earlier model, carried over by two runs at once.
    let more = vec![
        legacy_user(&t, "globex", &[ROLE_TENANT_ADMIN]).await,
        legacy_user(&t, "globex", &[ROLE_TENANT_ADMIN]).await,
        legacy_user(&t, "globex", &[ROLE_TENANT_ADMIN]).await,
    ];
    t.app.security.index.catch_up().await.unwrap();
    let (a, b) = tokio::join!(
        migrate::tenant_admins(&t.app),
        migrate::tenant_admins(&t.app)
    );
    assert!(a.unwrap() + b.unwrap() <= more.len());
    let mut expected = more;
    expected.push(users.globex);
    expected.sort();
    assert_eq!(principals(&carried_over(&t, "globex").await), expected);
    assert_eq!(principals(&carried_over(&t, "acme").await), users.acme);
}

#[tokio::test]
async fn a_carried_over_assignment_that_was_ended_is_not_made_again() {
    let t = TestApp::new().await;
    let users = legacy(&t).await;
    migrate::tenant_admins(&t.app).await.unwrap();
    let acme = carried_over(&t, "acme").await;
    let ended = &users.acme[0];
    let id = acme
        .iter()
        .find_map(|(_, e)| match e {
            PolicyEvent::AssignmentCreated { id, principal, .. } if principal == ended => {
                Some(id.clone())
            }
            _ => None,
        })
        .unwrap();

    manage::end_assignment(&t.app, &t.root().await, "acme", &id)
        .await
        .unwrap();
    assert_eq!(migrate::tenant_admins(&t.app).await.unwrap(), 0);

    assert_eq!(carried_over(&t, "acme").await.len(), acme.len());
    // Listings are served by the view, which follows the log on its own.
    t.views_caught_up().await;
    let live = manage::list_assignments(
        &t.app,
        &t.root().await,
        "acme",
        manage::AssignmentListQuery::default(),
    )
    .await
    .unwrap();
    assert!(!live.items.iter().any(|a| &a.principal == ended));
}

#[tokio::test]
async fn a_carried_over_tenant_admin_may_create_users() {
    let t = TestApp::new().await;
    let users = legacy(&t).await;
    migrate::tenant_admins(&t.app).await.unwrap();
    let root = t.root().await;
    let ask = |principal: &str| CheckRequest {
        principal: principal.to_owned(),
        permission: "user:create".to_owned(),
        resource: format!("user/{}", TestApp::new_user_id()),
        context: None,
        at: None,
        explain: None,
    };

    for admin in users.acme.iter().chain([&users.globex]) {
        let tenant = if *admin == users.globex {
            "globex"
        } else {
            "acme"
        };
        let answer = check::check(&t.app, &root, tenant, ask(admin))
            .await
            .unwrap();
        assert_eq!(
            answer.result.decision,
            VerdictView::Allow,
            "{}",
            answer.result.reason
        );
        assert!(
            answer
                .result
                .matched
                .iter()
                .any(|m| m.kind == "role" && m.id == "admin")
        );
    }
    let answer = check::check(&t.app, &root, "acme", ask(&users.plain))
        .await
        .unwrap();
    assert_eq!(answer.result.decision, VerdictView::Deny);
    // A tenant administrator of one tenant is nobody in another.
    let answer = check::check(&t.app, &root, "globex", ask(&users.acme[0]))
        .await
        .unwrap();
    assert_eq!(answer.result.decision, VerdictView::Deny);
}
