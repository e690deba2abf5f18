//! `who-can`, `can` and `diff` over a scripted history written by the service's own use cases
//! under a controlled clock: a grant at t1, a role change at t2, a revocation at t3 and the
//! erasure of a user at t4, asked about at instants between them.

use std::sync::Arc;

use custodian_app::admin::{tenants, users};
use custodian_app::authz::manage;
use custodian_app::bootstrap::{Admin, bootstrap};
use custodian_app::{App, ManualClock, Principal, SecurityOptions};
use custodian_domain::policy::Verdict;
use custodian_domain::{EventRecord, Timestamp};
use custodian_replay::access::{
    CanArgs, CanReport, DiffArgs, DiffReport, LinkView, WhoCanArgs, WhoCanReport, can_report,
    diff_report, who_can_report,
};
use custodian_testkit::Ledger;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::run_binary;

custodian_testkit::on_every_backend!(
    who_can_names_exactly_the_principals_of_each_instant_with_their_provenance,
    can_allows_and_denies_with_the_same_provenance_and_deny_reasons,
    diff_names_access_gained_lost_and_expired_with_the_events,
    the_binary_answers_in_json_and_exits_by_the_decision,
);

/// The instants of the history, one hour apart.
const T0: &str = "2026-03-01T12:00:00Z";
const T1: &str = "2026-03-01T13:00:00Z";
const T2: &str = "2026-03-01T14:00:00Z";
const T3: &str = "2026-03-01T15:00:00Z";
const T4: &str = "2026-03-01T16:00:00Z";
/// When bob's own write grant runs out, with no event.
const BOB_WRITE_UNTIL: &str = "2026-03-01T15:30:00Z";

/// Half-way between the events: before t1, between t1 and t2, ..., after t4.
const BEFORE_T1: &str = "2026-03-01T12:30:00Z";
const T1_T2: &str = "2026-03-01T13:30:00Z";
const T2_T3: &str = "2026-03-01T14:30:00Z";
const T3_T4: &str = "2026-03-01T15:45:00Z";
const AFTER_T4: &str = "2026-03-01T16:30:00Z";

/// The scripted history, and the positions of its events.
struct History {
    ledger: Ledger,
    _keys: tempfile::TempDir,
    root: String,
    ada: String,
    bob: String,
    cy: String,
    /// `grant.created` of the grant of `document:read` on `document/d1` to role `reader` (t1).
    reader_grant: (String, u64),
    /// `grant.created` of the grant of `document:read` to ada herself (t1).
    ada_grant: (String, u64),
    /// `grant.created` of bob's own `document:write` grant, in force until [`BOB_WRITE_UNTIL`].
    bob_write: (String, u64),
    role_reader: u64,
    role_editor: u64,
    bob_assignment: (String, u64),
    cy_assignment: (String, u64),
    /// `role.updated`: editor no longer inherits reader (t2).
    editor_changed: u64,
    /// `grant.revoked` of ada's grant (t3).
    ada_revoked: u64,
    /// `user.deleted` of cy (t4).
    cy_erased: u64,
    /// The root's `user.created`.
    root_created: u64,
    head: u64,
}

fn at(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap()
}

async fn create_user(app: &App, root: &Principal, email: &str) -> String {
    let req = from_json(json!({ "email": email, "name": "Someone", "kind": "person" }));
    let user = users::create(app, root, "acme", req).await.unwrap();
    app.security.index.catch_up().await.unwrap();
    user.user_id
}

async fn grant(app: &App, root: &Principal, body: serde_json::Value) -> (String, u64) {
    let made = manage::create_grant(app, root, "acme", from_json(body))
        .await
        .unwrap();
    app.policy.wait_for(made.position).await.unwrap();
    (made.id, made.position)
}

async fn assign(app: &App, root: &Principal, principal: &str, role: &str) -> (String, u64) {
    let req = from_json(json!({ "principal": principal, "role": role }));
    let made = manage::create_assignment(app, root, "acme", req)
        .await
        .unwrap();
    app.policy.wait_for(made.position).await.unwrap();
    (made.id, made.position)
}

fn position_of(records: &[EventRecord], event_type: &str, stream_id: &str) -> u64 {
    records
        .iter()
        .find(|r| r.event_type.as_str() == event_type && r.stream.id() == stream_id)
        .unwrap_or_else(|| panic!("no {event_type} on {stream_id}"))
        .position
}

/// Runs the history through the service's use cases on `ledger`, then stops the service.
async fn script(ledger: Ledger) -> History {
    let keys = tempfile::tempdir().unwrap();
    let store = ledger.open().await;
    let clock = Arc::new(ManualClock::new(at(T0)));
    let shutdown = CancellationToken::new();
    let app = App::start(
        store,
        &ledger.location,
        custodian_projections::all(),
        SecurityOptions::new(keys.path().join("secret.key")),
        clock.clone(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let security = &app.security;
    let root_id = bootstrap(
        &app.store,
        &app.db,
        &security.keyring,
        &security.hasher,
        &security.policy,
        Admin {
            email: "root@platform.test",
            name: "Root",
            password: "correct horse battery staple",
        },
        at(T0),
    )
    .await
    .unwrap();
    security.index.catch_up().await.unwrap();
    let root = Principal {
        user_id: root_id.clone(),
        tenant: "_system".to_owned(),
        session_id: "sess_root".to_owned(),
        user: security.index.user("_system", &root_id).unwrap(),
        ip: None,
        key: None,
    };

    // t0: the tenant, its people, and the roles: editor inherits reader.
    let req = from_json(json!({ "slug": "acme", "name": "Acme" }));
    tenants::create(&app, &root, req).await.unwrap();
    security.index.catch_up().await.unwrap();
    let ada = create_user(&app, &root, "ada@acme.test").await;
    let bob = create_user(&app, &root, "bob@acme.test").await;
    let cy = create_user(&app, &root, "cy@acme.test").await;
    let req = from_json(json!({ "resource_types": { "document": ["read", "write"] } }));
    manage::set_catalog(&app, &root, "acme", req).await.unwrap();
    let req = from_json(json!({ "name": "reader" }));
    let role_reader = manage::create_role(&app, &root, "acme", req)
        .await
        .unwrap()
        .position;
    let req = from_json(json!({ "name": "editor", "parents": ["reader"] }));
    let role_editor = manage::create_role(&app, &root, "acme", req)
        .await
        .unwrap()
        .position;
    app.policy.wait_for(role_editor).await.unwrap();
    let bob_assignment = assign(&app, &root, &bob, "editor").await;
    let cy_assignment = assign(&app, &root, &cy, "reader").await;

    // t1: the grants.
    clock.set(at(T1));
    let reader_grant = grant(
        &app,
        &root,
        json!({ "subject": { "role": "reader" }, "permission": "document:read",
                "on": { "resource": "document/d1" } }),
    )
    .await;
    let ada_grant = grant(
        &app,
        &root,
        json!({ "subject": { "principal": ada }, "permission": "document:read" }),
    )
    .await;
    let bob_write = grant(
        &app,
        &root,
        json!({ "subject": { "principal": bob }, "permission": "document:write",
                "valid_until": BOB_WRITE_UNTIL }),
    )
    .await;

    // t2: editor no longer inherits reader.
    clock.set(at(T2));
    let req = from_json(json!({ "parents": [] }));
    let editor_changed = manage::update_role(&app, &root, "acme", "editor", req)
        .await
        .unwrap()
        .position;
    app.policy.wait_for(editor_changed).await.unwrap();

    // t3: ada's own grant is revoked.
    clock.set(at(T3));
    let ada_revoked = manage::revoke_grant(&app, &root, "acme", &ada_grant.0)
        .await
        .unwrap()
        .position;
    app.policy.wait_for(ada_revoked).await.unwrap();

    // t4: cy is erased.
    clock.set(at(T4));
    users::erase(&app, &root, "acme", &cy).await.unwrap();

    shutdown.cancel();
    app.store.close().await;
    let records = ledger.records().await;
    History {
        root_created: position_of(&records, "user.created", &root_id),
        cy_erased: position_of(&records, "user.deleted", &cy),
        head: records.last().unwrap().position,
        ledger,
        _keys: keys,
        root: root_id,
        ada,
        bob,
        cy,
        reader_grant,
        ada_grant,
        bob_write,
        role_reader,
        role_editor,
        bob_assignment,
        cy_assignment,
        editor_changed,
        ada_revoked,
    }
}

impl History {
    async fn who_can(&self, permission: &str, when: &str) -> WhoCanReport {
        who_can_report(&WhoCanArgs {
            tenant: "acme".to_owned(),
            permission: permission.to_owned(),
            resource: "document/d1".to_owned(),
            at: when.to_owned(),
            source: self.ledger.location.clone(),
        })
        .await
        .unwrap()
    }

    async fn can(&self, principal: &str, when: &str) -> CanReport {
        can_report(&CanArgs {
            tenant: "acme".to_owned(),
            principal: principal.to_owned(),
            permission: "document:read".to_owned(),
            resource: "document/d1".to_owned(),
            at: when.to_owned(),
            source: self.ledger.location.clone(),
        })
        .await
        .unwrap()
    }

    async fn diff(&self, from: &str, to: &str) -> DiffReport {
        diff_report(&DiffArgs {
            from: from.to_owned(),
            to: to.to_owned(),
            tenant: Some("acme".to_owned()),
            source: self.ledger.location.clone(),
        })
        .await
        .unwrap()
    }
}

/// A chain as (kind, id, position made, position ended or 0).
fn links(chain: &[LinkView]) -> Vec<(&str, &str, u64, u64)> {
    chain
        .iter()
        .map(|l| {
            (
                l.kind,
                l.id.as_str(),
                l.position,
                l.ended.as_ref().map_or(0, |e| e.position),
            )
        })
        .collect()
}

async fn who_can_names_exactly_the_principals_of_each_instant_with_their_provenance(
    ledger: Ledger,
) {
    let h = script(ledger).await;
    let (bob_asg, cy_asg) = (&h.bob_assignment, &h.cy_assignment);
    let reader = &h.reader_grant;

    // Before t1: nobody of the tenant; the platform's administrator, in a section of their own.
    let r = h.who_can("document:read", BEFORE_T1).await;
    assert!(r.principals.is_empty(), "{r:#?}");
    assert_eq!(r.time, at(BEFORE_T1));
    assert!(r.position < h.reader_grant.1 && r.position >= h.cy_assignment.1);
    assert_eq!(r.head, h.head);
    let admins: Vec<_> = r.platform_admins.iter().map(|a| &a.principal).collect();
    assert_eq!(admins, [&h.root]);
    assert_eq!(r.platform_admins[0].active.position, h.root_created);
    assert_eq!(r.platform_admins[0].active.event_type, "user.created");

    // Between t1 and t2: ada by her own grant, bob through editor > reader, cy through reader.
    let r = h.who_can("document:read", T1_T2).await;
    assert_eq!(
        r.position, h.bob_write.1,
        "the last event before the instant"
    );
    let mut who: Vec<&str> = r.principals.iter().map(|p| p.principal.as_str()).collect();
    who.sort_unstable();
    let mut expected = vec![h.ada.as_str(), h.bob.as_str(), h.cy.as_str()];
    expected.sort_unstable();
    assert_eq!(who, expected);
    let of = |id: &str| r.principals.iter().find(|p| p.principal == id).unwrap();
    assert_eq!(
        links(&of(&h.ada).chain),
        [(
            "grant",
            h.ada_grant.0.as_str(),
            h.ada_grant.1,
            h.ada_revoked
        )]
    );
    let revoked = of(&h.ada).chain[0].ended.clone().unwrap();
    assert_eq!(
        (revoked.event_type, revoked.reason, revoked.time),
        ("grant.revoked", Some("revoked"), at(T3))
    );
    assert_eq!(
        links(&of(&h.bob).chain),
        [
            ("assignment", bob_asg.0.as_str(), bob_asg.1, 0),
            ("role", "editor", h.role_editor, h.editor_changed),
            ("role", "reader", h.role_reader, 0),
            ("grant", reader.0.as_str(), reader.1, 0),
        ]
    );
    let bob_chain = &of(&h.bob).chain;
    assert_eq!(bob_chain[1].event_type, "role.created");
    assert_eq!(
        bob_chain[1].ended.as_ref().unwrap().event_type,
        "role.updated"
    );
    assert_eq!(bob_chain[3].event_type, "grant.created");
    assert_eq!(bob_chain[3].time, Some(at(T1)));
    assert_eq!(
        links(&of(&h.cy).chain),
        [
            ("assignment", cy_asg.0.as_str(), cy_asg.1, 0),
            ("role", "reader", h.role_reader, 0),
            ("grant", reader.0.as_str(), reader.1, 0),
        ]
    );
    let erased = of(&h.cy).principal_ended.clone().unwrap();
    assert_eq!(
        (erased.position, erased.event_type),
        (h.cy_erased, "user.deleted")
    );
    assert_eq!(of(&h.ada).principal_ended, None);

    // Between t2 and t3: bob lost reader with the role change.
    let r = h.who_can("document:read", T2_T3).await;
    assert_eq!(r.position, h.editor_changed);
    let mut who: Vec<&str> = r.principals.iter().map(|p| p.principal.as_str()).collect();
    who.sort_unstable();
    let mut expected = vec![h.ada.as_str(), h.cy.as_str()];
    expected.sort_unstable();
    assert_eq!(who, expected);

    // Between t3 and t4: only cy.
    let r = h.who_can("document:read", T3_T4).await;
    assert_eq!(r.position, h.ada_revoked);
    let who: Vec<&str> = r.principals.iter().map(|p| p.principal.as_str()).collect();
    assert_eq!(who, [h.cy.as_str()]);

    // After t4: nobody; the erasure took cy out of service.
    let r = h.who_can("document:read", AFTER_T4).await;
    assert_eq!(r.position, h.head);
    assert!(r.principals.is_empty(), "{r:#?}");

    // bob's write grant closed its window at 15:30 with no event.
    let r = h.who_can("document:write", T2_T3).await;
    let who: Vec<&str> = r.principals.iter().map(|p| p.principal.as_str()).collect();
    assert_eq!(who, [h.bob.as_str()]);
    assert_eq!(r.principals[0].chain[0].expires, Some(at(BOB_WRITE_UNTIL)));
    assert!(r.principals[0].chain[0].ended.is_none());
    let r = h.who_can("document:write", T3_T4).await;
    assert!(r.principals.is_empty(), "{r:#?}");
}

async fn can_allows_and_denies_with_the_same_provenance_and_deny_reasons(ledger: Ledger) {
    let h = script(ledger).await;

    let r = h.can(&h.bob, T1_T2).await;
    assert_eq!(r.decision, Verdict::Allow);
    assert_eq!(r.position, h.bob_write.1);
    let who_can = h.who_can("document:read", T1_T2).await;
    let same = who_can
        .principals
        .iter()
        .find(|p| p.principal == h.bob)
        .unwrap();
    assert_eq!(
        r.chain, same.chain,
        "can and who-can give the same provenance"
    );

    let r = h.can(&h.bob, T2_T3).await;
    assert_eq!(r.decision, Verdict::Deny);
    assert!(r.chain.is_empty(), "{r:#?}");
    assert!(r.reason.starts_with("no grant allows"), "{}", r.reason);

    let r = h.can(&h.ada, BEFORE_T1).await;
    assert_eq!(r.decision, Verdict::Deny);
    let r = h.can(&h.ada, T2_T3).await;
    assert_eq!(r.decision, Verdict::Allow);
    assert_eq!(r.chain[0].ended.as_ref().unwrap().position, h.ada_revoked);
    let r = h.can(&h.ada, T3_T4).await;
    assert_eq!(r.decision, Verdict::Deny);

    let r = h.can(&h.cy, T3_T4).await;
    assert_eq!(r.decision, Verdict::Allow);
    assert_eq!(r.principal_ended.as_ref().unwrap().position, h.cy_erased);
    let r = h.can(&h.cy, AFTER_T4).await;
    assert_eq!(r.decision, Verdict::Deny);
    assert_eq!(r.reason, "the principal is disabled or deleted");
    assert_eq!(
        links(&r.chain),
        [("principal", h.cy.as_str(), h.cy_erased, 0)]
    );
    assert_eq!(r.chain[0].event_type, "user.deleted");

    // The platform administrator may do everything, whatever the tenant's policy says.
    let r = h.can(&h.root, BEFORE_T1).await;
    assert_eq!(r.decision, Verdict::Allow);
    assert!(r.platform_admin);
    assert_eq!(
        links(&r.chain),
        [("platform_admin", h.root.as_str(), h.root_created, 0)]
    );
}

async fn diff_names_access_gained_lost_and_expired_with_the_events(ledger: Ledger) {
    let h = script(ledger).await;

    let r = h.diff(BEFORE_T1, T1_T2).await;
    assert_eq!((r.from.time, r.to.time), (at(BEFORE_T1), at(T1_T2)));
    assert_eq!(r.position, r.to.position);
    let of = |id: &str| r.principals.iter().find(|p| p.principal == id).unwrap();
    let gained: Vec<(&str, u64)> = of(&h.ada)
        .gained
        .iter()
        .map(|c| (c.grant.as_str(), c.event.as_ref().unwrap().position))
        .collect();
    assert_eq!(gained, [(h.ada_grant.0.as_str(), h.ada_grant.1)]);
    let bob = of(&h.bob);
    let mut gained: Vec<(&str, &str, u64)> = bob
        .gained
        .iter()
        .map(|c| {
            let e = c.event.as_ref().unwrap();
            (c.access.permission.as_str(), e.event_type, e.position)
        })
        .collect();
    gained.sort_unstable();
    assert_eq!(
        gained,
        [
            ("document:read", "grant.created", h.reader_grant.1),
            ("document:write", "grant.created", h.bob_write.1),
        ]
    );
    assert!(bob.lost.is_empty() && bob.expired.is_empty());

    // From between t1 and t2 to after t4: everything is gone, each for its own reason.
    let r = h.diff(T1_T2, AFTER_T4).await;
    let of = |id: &str| r.principals.iter().find(|p| p.principal == id).unwrap();
    let lost = |id: &str| -> Vec<(String, &'static str, u64)> {
        of(id)
            .lost
            .iter()
            .map(|c| {
                let e = c.event.as_ref().unwrap();
                (c.access.permission.clone(), e.event_type, e.position)
            })
            .collect()
    };
    assert_eq!(
        lost(&h.ada),
        [("document:read".to_owned(), "grant.revoked", h.ada_revoked)]
    );
    assert_eq!(
        lost(&h.bob),
        [("document:read".to_owned(), "role.updated", h.editor_changed)]
    );
    assert_eq!(
        lost(&h.cy),
        [("document:read".to_owned(), "user.deleted", h.cy_erased)]
    );
    let expired = &of(&h.bob).expired;
    assert_eq!(expired.len(), 1, "{expired:#?}");
    assert_eq!(expired[0].access.permission, "document:write");
    assert_eq!(expired[0].grant, h.bob_write.0);
    assert_eq!(expired[0].expired_at, Some(at(BOB_WRITE_UNTIL)));
    assert!(expired[0].event.is_none());
    assert_eq!(
        lost(&h.bob).len() + of(&h.bob).gained.len(),
        1,
        "nothing else changed for bob"
    );

    // Nothing changes between two instants with no event between them.
    let r = h.diff(T3_T4, T3_T4).await;
    assert!(r.principals.is_empty(), "{r:#?}");
}

async fn the_binary_answers_in_json_and_exits_by_the_decision(ledger: Ledger) {
    let h = script(ledger).await;
    let source = h.ledger.location.as_str();
    let common = [
        "--tenant",
        "acme",
        "--permission",
        "document:read",
        "--resource",
        "document/d1",
    ];

    let mut args = vec!["--json", "who-can"];
    args.extend(common);
    args.extend(["--at", T1_T2, source]);
    let run = run_binary(&args).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["position"], h.bob_write.1);
    assert_eq!(v["time"], json!(at(T1_T2)));
    assert_eq!(v["principals"].as_array().unwrap().len(), 3);

    let mut args = vec!["can", "--principal", h.ada.as_str()];
    args.extend(common);
    args.extend(["--at", T1_T2, source]);
    let run = run_binary(&args).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout
            .starts_with(&format!("as of position {} (", h.bob_write.1)),
        "{run:?}"
    );
    assert!(run.stdout.contains("allowed: "), "{run:?}");
    assert!(run.stdout.contains(&h.ada_grant.0), "{run:?}");

    let mut args = vec!["--json", "can", "--principal", h.ada.as_str()];
    args.extend(common);
    args.extend(["--at", T3_T4, source]);
    let run = run_binary(&args).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["position"], h.ada_revoked);

    let run = run_binary(&["diff", "--from", T1_T2, "--to", AFTER_T4, source]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("grant.revoked"), "{run:?}");
    assert!(run.stdout.contains("its window closed at"), "{run:?}");

    // Bad values exit 2 with one line naming the flag.
    for (flag, value) in [
        ("--at", "yesterday"),
        ("--permission", "read"),
        ("--resource", "d1"),
        ("--tenant", "nowhere"),
    ] {
        let mut args = vec!["who-can"];
        for pair in common.chunks(2) {
            if pair[0] != flag {
                args.extend(pair);
            }
        }
        if flag != "--at" {
            args.extend(["--at", T1_T2]);
        }
        args.extend([flag, value, source]);
        let run = run_binary(&args).await;
        assert_eq!(run.code, Some(2), "{flag}: {run:?}");
        assert_eq!(run.stdout, "", "{flag}");
        assert!(
            run.stderr
                .starts_with(&format!("custodian-replay: {flag}: ")),
            "{flag}: {run:?}"
        );
        assert_eq!(run.stderr.lines().count(), 1, "{flag}: {run:?}");
    }
}
