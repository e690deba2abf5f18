//! `custodian-replay history`: every event about a principal or a resource, on every backend and
//! through the binary.

use custodian_domain::{Actor, ActorKind, NewEvent, Timestamp};
use custodian_replay::history::{HistoryArgs, run};
use custodian_store::ExpectedVersion;
use custodian_testkit::{Ledger, event, stream};
use serde_json::{Value, json};

use crate::support::run_binary;

custodian_testkit::on_every_backend!(
    the_history_of_a_principal_follows_what_was_opened_about_them,
    the_history_of_a_resource_is_every_event_naming_it,
    a_tenant_narrows_the_history,
);

fn by(user: &str, at: &str, e: NewEvent) -> NewEvent {
    NewEvent {
        actor: Actor {
            kind: ActorKind::User,
            id: user.to_owned(),
        },
        occurred_at: Timestamp::parse(at).unwrap(),
        ..e
    }
}

/// 1 grant to Bob on project/p1 (by root), 2 Bob's session starts, 3 his session is refreshed,
/// 4 project/p1 joins group prod (by Bob), 5 an event of globex by Bob, 6 root revokes Bob's grant,
/// 7 a grant to Carol on project/p2.
async fn scripted(ledger: &Ledger) {
    let store = ledger.open().await;
    let appends: Vec<(&str, NewEvent)> = vec![
        (
            "acme/policy/rules",
            by(
                "user_root",
                "2026-03-01T10:00:00Z",
                event(
                    "grant.created",
                    json!({"id": "grant_1", "subject": {"principal": "user_bob"}, "permission": "project:read", "on": {"resource": "project/p1"}, "effect": "allow", "granted_by": "user_root"}),
                ),
            ),
        ),
        (
            "acme/session/sess_1",
            by(
                "user_bob",
                "2026-03-01T10:01:00Z",
                event(
                    "session.started",
                    json!({"user_id": "user_bob", "refresh": "00", "method": "password", "expires_at": "2026-03-02T10:00:00Z"}),
                ),
            ),
        ),
        (
            "acme/session/sess_1",
            NewEvent {
                actor: Actor::system(),
                ..by(
                    "user_bob",
                    "2026-03-01T10:02:00Z",
                    event(
                        "session.refreshed",
                        json!({"generation": 1, "refresh": "01"}),
                    ),
                )
            },
        ),
        (
            "acme/policy/rules",
            by(
                "user_bob",
                "2026-03-01T10:03:00Z",
                event(
                    "group.member_added",
                    json!({"group": "prod", "resource": "project/p1"}),
                ),
            ),
        ),
        (
            "globex/user/user_x",
            by(
                "user_bob",
                "2026-03-01T10:04:00Z",
                event("user.enabled", json!({})),
            ),
        ),
        (
            "acme/policy/rules",
            by(
                "user_root",
                "2026-03-01T10:05:00Z",
                event(
                    "grant.revoked",
                    json!({"id": "grant_1", "reason": "revoked"}),
                ),
            ),
        ),
        (
            "acme/policy/rules",
            by(
                "user_root",
                "2026-03-01T10:06:00Z",
                event(
                    "grant.created",
                    json!({"id": "grant_2", "subject": {"principal": "user_carol"}, "permission": "project:read", "on": {"resource": "project/p2"}, "effect": "allow", "granted_by": "user_root"}),
                ),
            ),
        ),
    ];
    for (s, e) in appends {
        store
            .append(&stream(s), ExpectedVersion::Any, vec![e])
            .await
            .unwrap();
    }
    store.close().await;
}

fn args(ledger: &Ledger) -> HistoryArgs {
    HistoryArgs {
        principal: None,
        resource: None,
        tenant: None,
        source: ledger.location.clone(),
    }
}

async fn answer(a: &HistoryArgs) -> Value {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run(a, true, &mut out, &mut err).await;
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    assert!(err.is_empty());
    serde_json::from_slice(&out).unwrap()
}

fn positions(v: &Value) -> Vec<u64> {
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect()
}

async fn the_history_of_a_principal_follows_what_was_opened_about_them(ledger: Ledger) {
    scripted(&ledger).await;
    let bob = answer(&HistoryArgs {
        principal: Some("user_bob".into()),
        ..args(&ledger)
    })
    .await;
    // The grant to him, his session and its refresh (by the system), what he did (in acme and
    // globex), and the revocation of his grant; not Carol's grant.
    assert_eq!(positions(&bob), [1, 2, 3, 4, 5, 6]);
    assert_eq!(bob["position"], 7);
    assert_eq!(bob["time"], "2026-03-01T10:06:00.000000Z");
    let revoked = &bob["entries"][5];
    assert_eq!(revoked["type"], "grant.revoked");
    assert_eq!(revoked["stream"], "acme/policy/rules");
    assert_eq!(revoked["actor"], json!({"kind": "user", "id": "user_root"}));
    assert_eq!(revoked["time"], "2026-03-01T10:05:00.000000Z");

    let root = answer(&HistoryArgs {
        principal: Some("user_root".into()),
        ..args(&ledger)
    })
    .await;
    assert_eq!(
        positions(&root),
        [1, 6, 7],
        "what root did, and nothing more"
    );
}

async fn the_history_of_a_resource_is_every_event_naming_it(ledger: Ledger) {
    scripted(&ledger).await;
    let p1 = answer(&HistoryArgs {
        resource: Some("project/p1".into()),
        ..args(&ledger)
    })
    .await;
    // The grant on it, its joining a group, and the grant's revocation.
    assert_eq!(positions(&p1), [1, 4, 6]);
    let session = answer(&HistoryArgs {
        resource: Some("session/sess_1".into()),
        ..args(&ledger)
    })
    .await;
    assert_eq!(positions(&session), [2, 3]);
    let none = answer(&HistoryArgs {
        resource: Some("project/none".into()),
        ..args(&ledger)
    })
    .await;
    assert_eq!(positions(&none), Vec::<u64>::new());
    assert_eq!(none["position"], 7, "the whole log was read");
}

async fn a_tenant_narrows_the_history(ledger: Ledger) {
    scripted(&ledger).await;
    let bob = answer(&HistoryArgs {
        principal: Some("user_bob".into()),
        tenant: Some("globex".into()),
        ..args(&ledger)
    })
    .await;
    assert_eq!(positions(&bob), [5]);
    assert_eq!(bob["tenant"], "globex");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_a_table_and_refuses_bad_arguments() {
    let ledger = Ledger::sqlite();
    scripted(&ledger).await;
    let run = run_binary(&["history", "--resource", "project/p1", &ledger.location]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stderr, "");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], "as of position 7 (2026-03-01T10:06:00.000000Z)");
    assert!(lines[1].starts_with("POSITION  TIME"), "{run:?}");
    assert_eq!(lines.len(), 5, "{run:?}");
    assert!(
        lines[2].starts_with("1         2026-03-01T10:00:00.000000Z  grant.created"),
        "{run:?}"
    );
    assert!(
        lines[4].contains("grant.revoked") && lines[4].ends_with("user:user_root"),
        "{run:?}"
    );

    let json = run_binary(&[
        "--json",
        "history",
        "--principal",
        "user_carol",
        &ledger.location,
    ])
    .await;
    assert_eq!(json.code, Some(0), "{json:?}");
    let v: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(positions(&v), [7]);

    for bad in [
        vec!["history", &ledger.location],
        vec![
            "history",
            "--principal",
            "a",
            "--resource",
            "project/p1",
            &ledger.location,
        ],
        vec!["history", "--resource", "nope", &ledger.location],
        vec![
            "history",
            "--principal",
            "user_bob",
            "/nowhere/custodian.db",
        ],
    ] {
        let r = run_binary(&bad).await;
        assert_eq!(r.code, Some(2), "{bad:?}: {r:?}");
        assert_eq!(r.stdout, "", "{bad:?}");
        assert!(!r.stderr.is_empty(), "{bad:?}");
    }
    let r = run_binary(&["history", "--resource", "nope", &ledger.location]).await;
    assert!(
        r.stderr.starts_with("custodian-replay: --resource"),
        "{r:?}"
    );
    assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
}
