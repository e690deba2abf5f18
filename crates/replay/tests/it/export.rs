//! `export`: the records as stored (a log every command reads), filtered by time and tenant, and
//! as OCSF events carrying their class's required fields.

use custodian_domain::EventRecord;
use custodian_domain::policy::{DecisionEvent, Permission, PolicyCommand, Subject, Verdict};
use custodian_domain::tenant::{Plan, TenantCommand};
use custodian_domain::user::{LoginMethod, UserEvent};
use custodian_store::ExpectedVersion;
use custodian_testkit::Ledger;
use custodian_testkit::sample::decided;
use custodian_testkit::stream as stream_name;
use serde_json::Value;

use crate::histories::{World, assign, catalog, grant, resource};
use crate::support::run_binary;

custodian_testkit::on_every_backend!(
    an_unfiltered_jsonl_export_is_the_log_and_verifies,
    filters_keep_the_period_and_the_tenant_asked_for,
    an_ocsf_export_fills_the_required_fields_of_each_class,
);

/// Two tenants with a policy each: roles, grants to a role and to a principal, an assignment,
/// a group, and their revocations; a minute between commands from 08:01.
async fn history(ledger: &Ledger) -> u64 {
    let mut w = World::new(ledger.open().await);
    for t in 0..2 {
        w.tenant(
            t,
            TenantCommand::Create {
                name: format!("Tenant {t}"),
                slug: format!("tenant-{t}"),
                plan: Plan::Free,
            },
        )
        .await;
        w.policy(t, catalog()).await;
        w.policy(
            t,
            PolicyCommand::CreateRole {
                name: "ops".into(),
                description: None,
                parents: vec![],
            },
        )
        .await;
        w.policy(
            t,
            grant(
                "grant_001",
                Subject::Role("ops".into()),
                "project:write",
                None,
            ),
        )
        .await;
        w.policy(
            t,
            grant(
                "grant_002",
                Subject::Principal("user_bob".into()),
                "project:read",
                Some(custodian_domain::policy::Scope::Resource(resource(
                    "project/a",
                ))),
            ),
        )
        .await;
        w.policy(t, assign("asg_001", "user_alice", "ops")).await;
        w.policy(
            t,
            PolicyCommand::AddMember {
                group: "prod".into(),
                resource: resource("project/a"),
            },
        )
        .await;
        w.policy(
            t,
            PolicyCommand::Revoke {
                id: "grant_002".into(),
            },
        )
        .await;
        w.policy(
            t,
            PolicyCommand::Unassign {
                id: "asg_001".into(),
            },
        )
        .await;
        w.tenant(
            t,
            TenantCommand::Rename {
                name: "Renamed".into(),
            },
        )
        .await;
        // An authentication and an authorization decision, for classes 3002 and 3003.
        let tenant = crate::histories::TENANTS[t];
        let at = custodian_domain::Timestamp::parse("2026-03-01T12:00:00Z").unwrap();
        let login = UserEvent::LoggedIn {
            session_id: "sess_01".into(),
            method: LoginMethod::Password,
            totp_step: None,
            recovery_code: None,
            ip: Some("192.0.2.7".into()),
        };
        let decision = DecisionEvent::Recorded {
            principal: "user_alice".into(),
            permission: Permission::parse("project:write").unwrap(),
            resource: resource("project/a"),
            decision: Verdict::Allow,
            reason: "granted".into(),
            matched: vec!["grant_001".into()],
            at: None,
            position: 1,
            ip: None,
        };
        for (stream, event) in [
            (format!("{tenant}/user/user_alice"), decided(&login, at)),
            (format!("{tenant}/decision/log"), decided(&decision, at)),
        ] {
            w.store
                .append(&stream_name(&stream), ExpectedVersion::Any, vec![event])
                .await
                .unwrap();
        }
    }
    let head = w.head().await;
    w.store.close().await;
    head
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

async fn an_unfiltered_jsonl_export_is_the_log_and_verifies(ledger: Ledger) {
    let head = history(&ledger).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ledger.jsonl");
    let file_text = file.display().to_string();
    let run = run_binary(&[
        "export",
        "--format",
        "jsonl",
        "--out",
        &file_text,
        &ledger.location,
    ])
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.starts_with(&format!("as of position {head} (")),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains(&format!("exported {head} events as jsonl")),
        "{run:?}"
    );

    // Each line is the record as stored.
    let stored = ledger.records().await;
    let text = std::fs::read_to_string(&file).unwrap();
    let exported: Vec<EventRecord> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(exported, stored);
    for (line, record) in text.lines().zip(&stored) {
        assert_eq!(line, serde_json::to_string(record).unwrap());
    }

    // The export is a log: it verifies to the same head as the database.
    let from_db = run_binary(&["verify", &ledger.location]).await;
    let from_file = run_binary(&["verify", &file_text]).await;
    assert_eq!(from_file.code, Some(0), "{from_file:?}");
    assert_eq!(from_file.stdout, from_db.stdout);

    // Without --out the events go to stdout and the summary to stderr; an existing file is kept.
    let run = run_binary(&["export", "--format", "jsonl", &ledger.location]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout, text);
    assert!(run.stderr.starts_with("as of position "), "{run:?}");
    let run = run_binary(&[
        "export",
        "--format",
        "jsonl",
        "--out",
        &file_text,
        &ledger.location,
    ])
    .await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("exists; pass --force"), "{run:?}");
}

async fn filters_keep_the_period_and_the_tenant_asked_for(ledger: Ledger) {
    history(&ledger).await;
    let stored = ledger.records().await;
    let run = run_binary(&[
        "export",
        "--format",
        "jsonl",
        "--tenant",
        "globex",
        &ledger.location,
    ])
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let globex: Vec<EventRecord> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let expected: Vec<&EventRecord> = stored.iter().filter(|r| r.tenant == "globex").collect();
    assert!(!expected.is_empty());
    assert_eq!(globex.iter().collect::<Vec<_>>(), expected);

    // From 08:03 to 08:06 inclusive: the events that occurred in that span, and the summary
    // states the last position read and the end of the span.
    let run = run_binary(&[
        "--json",
        "export",
        "--format",
        "jsonl",
        "--from",
        "2026-03-02T08:03:00Z",
        "--to",
        "2026-03-02T08:06:00Z",
        &ledger.location,
    ])
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let span: Vec<EventRecord> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let from = custodian_domain::Timestamp::parse("2026-03-02T08:03:00Z").unwrap();
    let to = custodian_domain::Timestamp::parse("2026-03-02T08:06:00Z").unwrap();
    let expected: Vec<EventRecord> = stored
        .iter()
        .filter(|r| r.occurred_at >= from && r.occurred_at <= to)
        .cloned()
        .collect();
    assert_eq!(span.len(), 4, "{span:?}");
    assert_eq!(span, expected);
    let summary: Value = serde_json::from_str(&run.stderr).unwrap();
    assert_eq!(summary["position"], span.last().unwrap().position);
    assert_eq!(summary["time"], "2026-03-02T08:06:00.000000Z");
    assert_eq!(summary["events"], 4);

    // A filtered export is not a chain.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("globex.jsonl");
    std::fs::write(&file, serde_json::to_string(&globex[1]).unwrap() + "\n").unwrap();
    let run = run_binary(&["verify", &file.display().to_string()]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
}

/// The required attributes of each class, from the OCSF 1.9 schema (base event, then class).
const REQUIRED: &[(u64, &[&str])] = &[
    (3002, &["user"]),
    (3003, &["user"]),
    (3006, &["group"]),
    (3007, &["user"]),
    (3008, &["iam_role"]),
    (6003, &["actor", "api", "api.operation", "src_endpoint"]),
];
const BASE: &[&str] = &[
    "activity_id",
    "category_uid",
    "class_uid",
    "severity_id",
    "time",
    "type_uid",
    "metadata",
    "metadata.version",
    "metadata.product",
    "metadata.product.name",
    "metadata.product.vendor_name",
];

fn get<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(v, |v, k| v.get(k))
        .filter(|v| !v.is_null())
}

async fn an_ocsf_export_fills_the_required_fields_of_each_class(ledger: Ledger) {
    let head = history(&ledger).await;
    let run = run_binary(&["export", "--format", "ocsf", &ledger.location]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let events = lines(&run.stdout);
    assert_eq!(
        events.len() as u64,
        head,
        "every event of this history has a class"
    );
    let mut classes = std::collections::BTreeSet::new();
    for (event, position) in events.iter().zip(1..) {
        for field in BASE {
            assert!(get(event, field).is_some(), "{field} missing: {event}");
        }
        let class = event["class_uid"].as_u64().unwrap();
        classes.insert(class);
        let (_, required) = REQUIRED
            .iter()
            .find(|(c, _)| *c == class)
            .unwrap_or_else(|| panic!("unexpected class {class}"));
        for field in *required {
            assert!(get(event, field).is_some(), "{field} missing: {event}");
        }
        assert_eq!(event["category_uid"].as_u64().unwrap(), class / 1000);
        assert_eq!(
            event["type_uid"].as_u64().unwrap(),
            class * 100 + event["activity_id"].as_u64().unwrap()
        );
        assert_eq!(event["metadata"]["version"], "1.9.0");
        assert!(
            event["time"].as_i64().unwrap() > 1_700_000_000_000,
            "milliseconds"
        );
        assert_eq!(event["metadata"]["sequence"], position);
        assert_eq!(event["unmapped"]["position"], position);
    }
    assert_eq!(
        classes.into_iter().collect::<Vec<_>>(),
        [3002, 3003, 3006, 3007, 3008, 6003],
        "tenants, the catalog, roles, grants, assignments and groups"
    );
    // A revoked grant and an ended assignment name whom they were about.
    let revoked = events
        .iter()
        .find(|e| e["metadata"]["event_code"] == "grant.revoked")
        .unwrap();
    assert_eq!(revoked["class_uid"], 3007);
    assert_eq!(revoked["user"]["uid"], "user_bob");
    let ended = events
        .iter()
        .find(|e| e["metadata"]["event_code"] == "assignment.ended")
        .unwrap();
    assert_eq!(ended["iam_roles"][0]["name"], "ops");
    assert_eq!(ended["user"]["uid"], "user_alice");
}
