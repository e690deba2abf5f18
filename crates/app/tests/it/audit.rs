//! The audit trail of a tenant: filters, pages, who may read it, and personal data shown, withheld
//! or erased.

use custodian_app::admin::users;
use custodian_app::audit::{self, AuditEntry, AuditQuery};
use custodian_app::authz::manage::{self, CreateGrantRequest, SubjectBody};
use custodian_app::{AppError, Clock as _};

use crate::support::TestApp;

fn query() -> AuditQuery {
    AuditQuery::default()
}

async fn all(
    t: &TestApp,
    p: &custodian_app::Principal,
    tenant: &str,
    q: AuditQuery,
) -> Vec<AuditEntry> {
    t.views_caught_up().await;
    let page = audit::list(&t.app, p, tenant, &q).await.unwrap();
    assert!(page.next_cursor.is_none(), "one page holds them all");
    page.items
}

fn types(entries: &[AuditEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.event_type.as_str()).collect()
}

/// Grants `permission` on the whole of `tenant` to `principal`, as the platform administrator.
async fn grant(t: &TestApp, tenant: &str, principal: &str, permission: &str) {
    let made = manage::create_grant(
        &t.app,
        &t.root().await,
        tenant,
        CreateGrantRequest {
            subject: SubjectBody::Principal(principal.to_owned()),
            permission: permission.to_owned(),
            on: None,
            effect: None,
            valid_from: None,
            valid_until: None,
            conditions: None,
        },
    )
    .await
    .unwrap();
    t.app.policy.wait_for(made.position).await.unwrap();
}

#[tokio::test]
async fn the_trail_is_filtered_by_principal_resource_type_and_time() {
    let t = TestApp::new().await;
    let ada = t.member("acme").await;
    t.advance(60);
    let bob = t
        .create_person("acme", "bob@acme.test", "difference engine 1822")
        .await;
    t.advance(60);
    let middle = t.clock.now();
    let assignment = t.assign("acme", &bob, "viewer").await;
    t.member("globex").await;
    let root = t.root().await;

    let everything = all(&t, &root, "acme", query()).await;
    assert!(everything.windows(2).all(|w| w[0].position < w[1].position));
    assert!(everything.iter().all(|e| e.stream.starts_with("acme/")));
    assert!(types(&everything).contains(&"assignment.created"));

    // Bob: his address's claim, his creation, and the role given him.
    let of_bob = all(
        &t,
        &root,
        "acme",
        AuditQuery {
            principal: Some(bob.clone()),
            ..query()
        },
    )
    .await;
    assert_eq!(
        types(&of_bob),
        [
            "email.claimed",
            "user.created",
            "user.password_set",
            "assignment.created"
        ]
    );
    assert_eq!(of_bob[3].data["id"], assignment.as_str());

    let of_ada = all(
        &t,
        &root,
        "acme",
        AuditQuery {
            resource: Some(format!("user/{}", ada.user_id)),
            ..query()
        },
    )
    .await;
    assert_eq!(types(&of_ada), ["user.created", "user.password_set"]);

    let assignments = all(
        &t,
        &root,
        "acme",
        AuditQuery {
            event_type: Some("assignment.".into()),
            ..query()
        },
    )
    .await;
    assert_eq!(types(&assignments), ["assignment.created"]);
    let sessions = all(
        &t,
        &root,
        "acme",
        AuditQuery {
            event_type: Some("session.started".into()),
            ..query()
        },
    )
    .await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(
        sessions[0].stream,
        format!("acme/session/{}", ada.session_id)
    );

    let before = all(
        &t,
        &root,
        "acme",
        AuditQuery {
            to: Some(middle.to_string()),
            ..query()
        },
    )
    .await;
    let after = all(
        &t,
        &root,
        "acme",
        AuditQuery {
            from: Some(middle.to_string()),
            ..query()
        },
    )
    .await;
    assert_eq!(before.len() + after.len(), everything.len());
    assert_eq!(types(&after), ["assignment.created"]);
}

#[tokio::test]
async fn pages_follow_each_other_without_gaps_or_repeats() {
    let t = TestApp::new().await;
    t.member("acme").await;
    for i in 0..4 {
        t.create_person("acme", &format!("p{i}@acme.test"), "difference engine 1822")
            .await;
    }
    let root = t.root().await;
    let everything = all(&t, &root, "acme", query()).await;
    assert!(everything.len() > 6);
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = audit::list(
            &t.app,
            &root,
            "acme",
            &AuditQuery {
                limit: Some("3".into()),
                cursor: cursor.clone(),
                ..query()
            },
        )
        .await
        .unwrap();
        assert!(page.items.len() <= 3);
        assert!(page.position >= everything.last().unwrap().position);
        seen.extend(page.items.into_iter().map(|e| (e.position, e.hash)));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let expected: Vec<_> = everything
        .into_iter()
        .map(|e| (e.position, e.hash))
        .collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn each_entry_is_the_logs_record() {
    let t = TestApp::new().await;
    let ada = t.member("acme").await;
    let root = t.root().await;
    let entries = all(&t, &root, "acme", query()).await;
    let records = t.events_after(0).await;
    for e in &entries {
        let r = records
            .iter()
            .find(|r| r.position == e.position)
            .expect("an event of the log");
        assert_eq!(e.hash, r.hash.to_hex());
        assert_eq!(e.prev_hash, r.prev_hash.to_hex());
        assert_eq!(e.id, r.id.to_string());
        assert_eq!(e.stream, r.stream.as_str());
        assert_eq!(e.occurred_at, r.occurred_at.to_string());
        assert_eq!(e.actor.kind, r.actor.kind.as_str());
        assert_eq!(e.actor.id, r.actor.id);
    }
    // A password hash is never shown, not even sealed.
    let created = entries
        .iter()
        .find(|e| e.event_type == "user.created" && e.stream.ends_with(&ada.user_id))
        .unwrap();
    assert!(created.data.get("credential").is_none_or(|c| c.is_null()));
    for e in entries
        .iter()
        .filter(|e| e.event_type == "user.password_set")
    {
        assert!(e.data["credential"].is_null(), "{e:?}");
    }
}

#[tokio::test]
async fn personal_data_is_shown_to_who_may_read_the_user_and_erased_for_everyone() {
    let t = TestApp::new().await;
    let ada = t.member("acme").await;
    let root = t.root().await;
    let by_type = AuditQuery {
        resource: Some(format!("user/{}", ada.user_id)),
        event_type: Some("user.created".into()),
        ..query()
    };

    let shown = all(&t, &root, "acme", by_type.clone()).await;
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].data["email"], "ada@acme.test");
    assert_eq!(shown[0].data["name"], "Ada Lovelace");
    assert!(shown[0].data["email_index"].is_string(), "{:?}", shown[0]);
    assert!(!shown[0].erased && !shown[0].withheld);

    // An auditor without user:read sees that there is personal data, not what it is.
    let auditor = t
        .create_person("acme", "eve@acme.test", "difference engine 1822")
        .await;
    grant(&t, "acme", &auditor, "audit:read").await;
    let eve = t.principal("acme", &auditor, "sess_eve").await;
    let withheld = all(&t, &eve, "acme", by_type.clone()).await;
    assert_eq!(withheld.len(), 1);
    assert!(withheld[0].data["email"].is_null());
    assert!(withheld[0].data["name"].is_null());
    // Nor the blind index that would tell the same address apart across accounts.
    assert!(withheld[0].data["email_index"].is_null());
    assert!(withheld[0].withheld && !withheld[0].erased);
    // The hash is still the log's: the entry can be checked against any copy of it.
    assert_eq!(withheld[0].hash, shown[0].hash);

    // Erasure destroys the key: nobody sees the data again, and nothing fails.
    users::erase(&t.app, &root, "acme", &ada.user_id)
        .await
        .unwrap();
    for who in [&root, &eve] {
        let erased = all(&t, who, "acme", by_type.clone()).await;
        assert_eq!(erased.len(), 1);
        assert!(erased[0].erased && !erased[0].withheld);
        assert!(erased[0].data["email"].is_null());
        assert!(erased[0].data["name"].is_null());
        assert!(erased[0].data["email_index"].is_null());
        assert_eq!(erased[0].hash, shown[0].hash);
    }
    let after = all(
        &t,
        &root,
        "acme",
        AuditQuery {
            principal: Some(ada.user_id.clone()),
            ..query()
        },
    )
    .await;
    assert!(types(&after).contains(&"user.deleted"));
}

#[tokio::test]
async fn the_trail_needs_audit_read_and_another_tenant_does_not_exist() {
    let t = TestApp::new().await;
    let ada = t.member("acme").await;
    let ada = t.as_member(&ada).await;
    let refused = audit::list(&t.app, &ada, "acme", &query()).await;
    assert!(
        matches!(&refused, Err(AppError::Forbidden(d)) if d.contains("audit:read")),
        "{refused:?}"
    );
    let bob = t.member("globex").await;
    grant(&t, "globex", &bob.user_id, "audit:read").await;
    let bob = t.as_member(&bob).await;
    assert!(audit::list(&t.app, &bob, "globex", &query()).await.is_ok());
    let other = audit::list(&t.app, &bob, "acme", &query()).await;
    assert!(matches!(other, Err(AppError::NotFound(_))), "{other:?}");
    let none = audit::list(&t.app, &bob, "nowhere", &query()).await;
    assert!(matches!(none, Err(AppError::NotFound(_))), "{none:?}");
}

#[tokio::test]
async fn bad_filters_are_refused_with_the_field_named() {
    let t = TestApp::new().await;
    t.member("acme").await;
    let root = t.root().await;
    let cases: Vec<(AuditQuery, &str)> = vec![
        (
            AuditQuery {
                cursor: Some(u64::MAX.to_string()),
                ..query()
            },
            "cursor",
        ),
        (
            AuditQuery {
                event_type: Some("Grant".into()),
                ..query()
            },
            "type",
        ),
        (
            AuditQuery {
                event_type: Some("grant..".into()),
                ..query()
            },
            "type",
        ),
        (
            AuditQuery {
                resource: Some("project".into()),
                ..query()
            },
            "resource",
        ),
        (
            AuditQuery {
                principal: Some("user 1".into()),
                ..query()
            },
            "principal",
        ),
        (
            AuditQuery {
                principal: Some(String::new()),
                ..query()
            },
            "principal",
        ),
        (
            AuditQuery {
                from: Some("yesterday".into()),
                ..query()
            },
            "from",
        ),
        (
            AuditQuery {
                from: Some("2026-03-02T00:00:00Z".into()),
                to: Some("2026-03-01T00:00:00Z".into()),
                ..query()
            },
            "from",
        ),
        (
            AuditQuery {
                cursor: Some("user_01".into()),
                ..query()
            },
            "cursor",
        ),
        (
            AuditQuery {
                limit: Some("0".into()),
                ..query()
            },
            "limit",
        ),
    ];
    for (q, field) in cases {
        let r = audit::list(&t.app, &root, "acme", &q).await;
        assert!(
            matches!(&r, Err(AppError::Invalid(d)) if d.contains(field)),
            "{q:?}: {r:?}"
        );
    }
}
