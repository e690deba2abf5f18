//! The `audit` view: a tenant's events found by the principals and resources they touch, their
//! type and their time, on every backend; and the same rows after a rebuild.

use std::sync::Arc;
use std::time::Duration;

use custodian_domain::{Actor, ActorKind, NewEvent};
use custodian_projections::audit::{AuditFilter, AuditView, TypeFilter, list_events};
use custodian_projections::{Projection, Tables, ViewDb, request_rebuild};
use custodian_store::{EventStore, ExpectedVersion};
use custodian_testkit::{Ledger, event, stream};
use serde_json::json;
use sqlx::Row;

use crate::support::Views as _;

custodian_testkit::on_every_backend!(
    a_tenants_events_are_found_by_what_they_touch,
    a_continuing_event_is_about_whoever_its_object_was_about,
    a_rebuilt_audit_view_equals_the_live_one,
);

fn by(user: &str, at: &str, e: NewEvent) -> NewEvent {
    NewEvent {
        actor: Actor {
            kind: ActorKind::User,
            id: user.to_owned(),
        },
        occurred_at: custodian_domain::Timestamp::parse(at).unwrap(),
        ..e
    }
}

/// Appends a small history of tenant `acme` (and one event of `globex`); answers the store.
async fn history(ledger: &Ledger) -> Arc<dyn EventStore> {
    let store = ledger.open().await;
    let appends: Vec<(&str, NewEvent)> = vec![
        (
            "acme/user/user_ada",
            by(
                "user_root",
                "2026-03-01T10:00:00Z",
                event("user.disabled", json!({"reason": "left"})),
            ),
        ),
        (
            "acme/policy/rules",
            by(
                "user_root",
                "2026-03-01T11:00:00Z",
                event(
                    "grant.created",
                    json!({"id": "grant_1", "subject": {"principal": "user_bob"}, "permission": "project:read", "on": {"resource": "project/p1"}, "effect": "allow", "granted_by": "user_root"}),
                ),
            ),
        ),
        (
            "acme/policy/rules",
            by(
                "user_bob",
                "2026-03-01T12:00:00Z",
                event(
                    "group.member_added",
                    json!({"group": "prod", "resource": "project/p1"}),
                ),
            ),
        ),
        (
            "globex/user/user_bob",
            by(
                "user_bob",
                "2026-03-01T12:30:00Z",
                event("user.enabled", json!({})),
            ),
        ),
        (
            "acme/policy/rules",
            by(
                "user_root",
                "2026-03-01T13:00:00Z",
                event(
                    "grant.revoked",
                    json!({"id": "grant_1", "reason": "revoked"}),
                ),
            ),
        ),
    ];
    for (s, e) in appends {
        let s = stream(s);
        store
            .append(&s, ExpectedVersion::Any, vec![e])
            .await
            .unwrap();
    }
    store
}

async fn serving(
    ledger: &Ledger,
    store: &Arc<dyn EventStore>,
) -> (ViewDb, custodian_projections::Projections) {
    let views = ledger.views().await;
    let projections = ledger
        .start(store, vec![Arc::new(AuditView) as Arc<dyn Projection>])
        .await;
    let head = store.head().await.unwrap().position;
    projections
        .wait_for(head, Duration::from_secs(20))
        .await
        .unwrap();
    (views, projections)
}

async fn positions(views: &ViewDb, tables: &Tables, filter: AuditFilter) -> Vec<u64> {
    list_events(views.pool(), tables, "acme", &filter, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.position)
        .collect()
}

async fn a_tenants_events_are_found_by_what_they_touch(ledger: Ledger) {
    let store = history(&ledger).await;
    let (views, projections) = serving(&ledger, &store).await;
    let t = projections.active_tables("audit").unwrap();
    let all = positions(&views, &t, AuditFilter::default()).await;
    assert_eq!(all, vec![1, 2, 3, 5], "acme's events only, oldest first");

    let principal = |p: &str| AuditFilter {
        principal: Some(p.to_owned()),
        ..AuditFilter::default()
    };
    // Bob: the grant to him, the membership he added, and the revocation of his grant.
    assert_eq!(
        positions(&views, &t, principal("user_bob")).await,
        vec![2, 3, 5]
    );
    // Ada: the subject of her stream.
    assert_eq!(positions(&views, &t, principal("user_ada")).await, vec![1]);
    // Root acted in 1, 2 and 5.
    assert_eq!(
        positions(&views, &t, principal("user_root")).await,
        vec![1, 2, 5]
    );
    assert!(
        positions(&views, &t, principal("user_nobody"))
            .await
            .is_empty()
    );

    let resource = |r: &str| AuditFilter {
        resource: Some(r.to_owned()),
        ..AuditFilter::default()
    };
    assert_eq!(
        positions(&views, &t, resource("project/p1")).await,
        vec![2, 3, 5]
    );
    assert_eq!(positions(&views, &t, resource("group/prod")).await, vec![3]);
    assert_eq!(
        positions(&views, &t, resource("user/user_ada")).await,
        vec![1]
    );

    let typed = |f: TypeFilter| AuditFilter {
        event_type: Some(f),
        ..AuditFilter::default()
    };
    assert_eq!(
        positions(&views, &t, typed(TypeFilter::Prefix("grant.".into()))).await,
        vec![2, 5]
    );
    assert_eq!(
        positions(&views, &t, typed(TypeFilter::Exact("grant.revoked".into()))).await,
        vec![5]
    );
    // A prefix is a prefix of whole words: `group.` is not `grant.`, nor `grant` `grant_x.`.
    assert_eq!(
        positions(&views, &t, typed(TypeFilter::Prefix("group.".into()))).await,
        vec![3]
    );

    let window = AuditFilter {
        from: Some("2026-03-01T11:00:00.000000Z".into()),
        to: Some("2026-03-01T13:00:00.000000Z".into()),
        ..AuditFilter::default()
    };
    assert_eq!(
        positions(&views, &t, window).await,
        vec![2, 3],
        "from inclusive, to exclusive"
    );

    let both = AuditFilter {
        principal: Some("user_bob".into()),
        event_type: Some(TypeFilter::Prefix("grant.".into())),
        ..AuditFilter::default()
    };
    assert_eq!(positions(&views, &t, both).await, vec![2, 5]);

    // Paging: after a position, at most `limit`.
    let page = list_events(
        views.pool(),
        &t,
        "acme",
        &AuditFilter::default(),
        Some(2),
        1,
    )
    .await
    .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].position, 3);
    assert_eq!(page[0].event_type, "group.member_added");
    assert_eq!(page[0].occurred_at, "2026-03-01T12:00:00.000000Z");
    projections.stop().await;
    store.close().await;
}

async fn a_continuing_event_is_about_whoever_its_object_was_about(ledger: Ledger) {
    let store = ledger.open().await;
    let start = by(
        "user_ada",
        "2026-03-01T10:00:00Z",
        event(
            "session.started",
            json!({"user_id": "user_ada", "refresh": "00", "method": "password", "expires_at": "2026-03-02T10:00:00Z"}),
        ),
    );
    let refresh = by(
        "user_ada",
        "2026-03-01T10:05:00Z",
        event(
            "session.refreshed",
            json!({"generation": 1, "refresh": "01"}),
        ),
    );
    let revoke = by(
        "user_root",
        "2026-03-01T10:10:00Z",
        event("session.revoked", json!({"reason": "revoked_by_admin"})),
    );
    // The opening and the continuations in one append, so one batch of the worker.
    store
        .append(
            &stream("acme/session/sess_1"),
            ExpectedVersion::NoStream,
            vec![start, refresh, revoke],
        )
        .await
        .unwrap();
    let (views, projections) = serving(&ledger, &store).await;
    let t = projections.active_tables("audit").unwrap();
    let ada = AuditFilter {
        principal: Some("user_ada".into()),
        ..AuditFilter::default()
    };
    assert_eq!(positions(&views, &t, ada).await, vec![1, 2, 3]);
    // Root revoked it, but the session was not about root: only the revocation is.
    let root = AuditFilter {
        principal: Some("user_root".into()),
        ..AuditFilter::default()
    };
    assert_eq!(positions(&views, &t, root).await, vec![3]);
    projections.stop().await;
    store.close().await;
}

async fn rows(views: &ViewDb, t: &Tables) -> (Vec<String>, Vec<String>) {
    let events = sqlx::query(&format!(
        "SELECT position, tenant, event_type, occurred_at, opens FROM {} ORDER BY position",
        t.name("events")
    ))
    .fetch_all(views.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| {
        format!(
            "{} {} {} {} {:?}",
            r.get::<i64, _>(0),
            r.get::<String, _>(1),
            r.get::<String, _>(2),
            r.get::<String, _>(3),
            r.get::<Option<String>, _>(4)
        )
    })
    .collect();
    let touches = sqlx::query(&format!(
        "SELECT tenant, kind, value, position, subject FROM {} ORDER BY position, kind, value",
        t.name("touches")
    ))
    .fetch_all(views.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| {
        format!(
            "{} {} {} {} {}",
            r.get::<String, _>(0),
            r.get::<String, _>(1),
            r.get::<String, _>(2),
            r.get::<i64, _>(3),
            r.get::<i64, _>(4)
        )
    })
    .collect();
    (events, touches)
}

async fn a_rebuilt_audit_view_equals_the_live_one(ledger: Ledger) {
    let store = history(&ledger).await;
    let (views, projections) = serving(&ledger, &store).await;
    let before = projections.active_tables("audit").unwrap();
    let live = rows(&views, &before).await;
    assert_eq!(live.0.len(), 5);
    request_rebuild(&views, "audit", AuditView.version())
        .await
        .unwrap();
    let mut rebuilt = None;
    for _ in 0..2000 {
        if let Some(t) = projections.active_tables("audit").filter(|t| *t != before) {
            rebuilt = Some(t);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rebuilt = rebuilt.expect("the rebuild was not swapped in");
    assert_eq!(rows(&views, &rebuilt).await, live);
    projections.stop().await;
    store.close().await;
}
