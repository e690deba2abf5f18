//! The `policy` view folds tenants' policies, decided by the domain, into listings with their
//! history; its SQL decision, its reverse lookups and its effective permissions agree with the
//! domain's own evaluation of the same log, now and at past positions; a view rebuilt from
//! position 0 equals the live one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use custodian_domain::Timestamp;
use custodian_domain::policy::event::{AGGREGATE, STREAM_ID};
use custodian_domain::policy::{
    self, AsOf, Check, Conditions, Effect, EndReason, MatchKind, Permission, Policy, PolicyCommand,
    PolicyError, Resource, Scope, Stamp, Subject, Target, Verdict, Window,
};
use custodian_projections::policy::{
    self as policy_view, AssignmentFilter, GrantFilter, PolicyView, WhoCanRow,
};
use custodian_projections::{Projection, Projections, Tables, ViewDb, request_rebuild};
use custodian_store::{EventStore, ExpectedVersion};
use custodian_testkit::sample::decided;
use custodian_testkit::{Ledger, stream};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use sqlx::Row;

use crate::support::Views as _;

custodian_testkit::on_every_backend!(
    policy_listings_show_roles_grants_assignments_and_groups_with_their_history,
    sql_decisions_and_reverse_lookups_agree_with_the_domain_on_random_histories,
    a_role_inherits_from_the_parents_it_had_at_the_position_asked_about,
);

const WAIT: Duration = Duration::from_secs(30);

fn ts(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

fn perm(s: &str) -> Permission {
    Permission::parse(s).unwrap()
}

fn res(s: &str) -> Resource {
    Resource::parse(s).unwrap()
}

/// The log, each tenant's policy as the domain folds it (with the log's real positions), and a
/// clock that moves 67 minutes per command, so commands fall at every time of day.
struct World {
    store: Arc<dyn EventStore>,
    clock: Timestamp,
    policies: HashMap<String, Policy>,
}

impl World {
    fn new(store: Arc<dyn EventStore>) -> Self {
        Self {
            store,
            clock: ts("2026-03-02T08:00:00Z"),
            policies: HashMap::new(),
        }
    }

    fn policy(&self, tenant: &str) -> &Policy {
        &self.policies[tenant]
    }

    async fn head(&self) -> u64 {
        self.store.head().await.unwrap().position
    }

    /// Decides `commands` in turn on the tenant's policy and appends every event they yield in
    /// one append; a refused command is skipped. Returns each command's outcome and the events'
    /// positions.
    async fn run(
        &mut self,
        tenant: &str,
        commands: Vec<PolicyCommand>,
    ) -> Vec<Result<Vec<u64>, PolicyError>> {
        let next = self.head().await + 1;
        let mut policy = self.policies.remove(tenant).unwrap_or_default();
        let version = policy.version;
        let mut pending = Vec::new();
        let mut outcomes = Vec::new();
        for command in commands {
            self.clock = self.clock.plus(time::Duration::minutes(67));
            match policy::decide(&policy, command) {
                Ok(events) => {
                    let mut positions = Vec::new();
                    for e in events {
                        // Nothing else appends in these tests, so the positions are known.
                        let position = next + pending.len() as u64;
                        policy.apply(
                            Stamp {
                                position,
                                at: self.clock,
                            },
                            &e,
                        );
                        positions.push(position);
                        pending.push(decided(&e, self.clock));
                    }
                    outcomes.push(Ok(positions));
                }
                Err(e) => outcomes.push(Err(e)),
            }
        }
        if !pending.is_empty() {
            let outcome = self
                .store
                .append(
                    &stream(&format!("{tenant}/{AGGREGATE}/{STREAM_ID}")),
                    ExpectedVersion::Exact(version),
                    pending,
                )
                .await
                .unwrap();
            assert_eq!(outcome.first_position, next, "nothing else appends");
        }
        self.policies.insert(tenant.to_owned(), policy);
        outcomes
    }

    /// Runs one command that must succeed; returns the position of its last event.
    async fn ok(&mut self, tenant: &str, command: PolicyCommand) -> u64 {
        let outcome = self.run(tenant, vec![command]).await.remove(0);
        *outcome
            .unwrap()
            .last()
            .expect("the command changed something")
    }
}

async fn synced(world: &World, projections: &Projections) -> Tables {
    projections
        .wait_for(world.head().await, WAIT)
        .await
        .unwrap();
    projections.active_tables("policy").unwrap()
}

fn grant(id: &str, subject: Subject, permission: &str, on: Option<Scope>) -> PolicyCommand {
    PolicyCommand::Grant {
        id: id.to_owned(),
        subject,
        permission: perm(permission),
        on,
        effect: Effect::Allow,
        window: Window::default(),
        conditions: None,
        granted_by: "root".to_owned(),
    }
}

fn assign(id: &str, principal: &str, role: &str, on: Option<Scope>) -> PolicyCommand {
    PolicyCommand::Assign {
        id: id.to_owned(),
        principal: principal.to_owned(),
        role: role.to_owned(),
        on,
        window: Window::default(),
        assigned_by: "root".to_owned(),
        migrated_from: None,
    }
}

fn project_catalog() -> PolicyCommand {
    PolicyCommand::SetCatalog {
        resource_types: BTreeMap::from([(
            "project".to_owned(),
            ["read", "write", "deploy"]
                .into_iter()
                .map(str::to_owned)
                .collect(),
        )]),
    }
}

fn check<'a>(
    principal: &'a str,
    permission: &'a Permission,
    target: Target<'a>,
    ip: Option<IpAddr>,
    as_of: AsOf,
) -> Check<'a> {
    Check {
        principal,
        permission,
        target,
        ip,
        as_of,
        explain: false,
    }
}

/// The view's decision on `c` in `tenant`.
async fn sql(
    pool: &sqlx::AnyPool,
    t: &Tables,
    tenant: &str,
    c: Check<'_>,
) -> (Verdict, Option<String>) {
    policy_view::sql_decide(pool, t, tenant, &c).await.unwrap()
}

// ---------------------------------------------------------------------------------------------
// Every table, column by column, as text: what a rebuild must reproduce.
// ---------------------------------------------------------------------------------------------

const TABLES: &[(&str, &[&str])] = &[
    (
        "catalog",
        &[
            "tenant",
            "resource_type",
            "actions",
            "updated_position",
            "updated_at",
        ],
    ),
    (
        "roles",
        &[
            "tenant",
            "name",
            "created_position",
            "description",
            "parents",
            "created_at",
            "updated_position",
            "updated_at",
            "deleted_position",
            "deleted_at",
        ],
    ),
    (
        "role_parents",
        &[
            "tenant",
            "role",
            "parent",
            "from_position",
            "until_position",
        ],
    ),
    (
        "grants",
        &[
            "tenant",
            "id",
            "subject_kind",
            "subject",
            "permission",
            "resource_type",
            "action",
            "on_kind",
            "on_value",
            "effect",
            "valid_from",
            "valid_until",
            "conditions",
            "granted_by",
            "created_position",
            "created_at",
            "ended_position",
            "ended_at",
            "end_reason",
        ],
    ),
    (
        "assignments",
        &[
            "tenant",
            "id",
            "principal",
            "role",
            "on_kind",
            "on_value",
            "valid_from",
            "valid_until",
            "assigned_by",
            "migrated_from",
            "created_position",
            "created_at",
            "ended_position",
            "ended_at",
            "end_reason",
        ],
    ),
    (
        "group_members",
        &[
            "tenant",
            "group_name",
            "resource_type",
            "resource_id",
            "added_position",
            "added_at",
            "removed_position",
            "removed_at",
        ],
    ),
];

type Snapshot = Vec<Vec<Vec<Option<String>>>>;

async fn snapshot(views: &ViewDb, tables: &Tables) -> Snapshot {
    let mut out = Vec::new();
    for (table, columns) in TABLES {
        let select: Vec<String> = columns
            .iter()
            .map(|c| format!("CAST({c} AS TEXT)"))
            .collect();
        let rows = sqlx::query(&format!(
            "SELECT {} FROM {} ORDER BY {}",
            select.join(", "),
            tables.name(table),
            columns
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .fetch_all(views.pool())
        .await
        .unwrap();
        out.push(
            rows.iter()
                .map(|r| (0..columns.len()).map(|i| r.get(i)).collect())
                .collect(),
        );
    }
    out
}

/// Rebuilds the view from position 0 into a fresh generation and checks it equals the live one.
async fn assert_rebuilt_equals_live(world: &World, views: &ViewDb, projections: &Projections) {
    let before = synced(world, projections).await;
    let live = snapshot(views, &before).await;
    assert!(!live[3].is_empty(), "there are grants to rebuild");
    request_rebuild(views, "policy", PolicyView.version())
        .await
        .unwrap();
    for _ in 0..6000 {
        if projections
            .active_tables("policy")
            .is_some_and(|t| t != before)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let after = synced(world, projections).await;
    assert_ne!(after, before, "the policy view was rebuilt");
    assert_eq!(snapshot(views, &after).await, live);
}

// ---------------------------------------------------------------------------------------------
// Listings
// ---------------------------------------------------------------------------------------------

async fn policy_listings_show_roles_grants_assignments_and_groups_with_their_history(
    ledger: Ledger,
) {
    let store = ledger.open().await;
    let views = ledger.views().await;
    let projections = ledger
        .start(&store, vec![Arc::new(PolicyView) as Arc<dyn Projection>])
        .await;
    let pool = views.pool();
    let mut w = World::new(store);

    // Two tenants reuse the same role, principal and group names.
    for tenant in ["acme", "globex"] {
        w.ok(tenant, project_catalog()).await;
        w.ok(
            tenant,
            PolicyCommand::CreateRole {
                name: "ops".into(),
                description: Some("Runs production".into()),
                parents: vec!["developer".into()],
            },
        )
        .await;
    }
    w.ok(
        "acme",
        PolicyCommand::CreateRole {
            name: "oncall".into(),
            description: None,
            parents: vec!["ops".into()],
        },
    )
    .await;
    w.ok(
        "acme",
        grant(
            "grant_01",
            Subject::Role("ops".into()),
            "project:deploy",
            Some(Scope::Group("prod".into())),
        ),
    )
    .await;
    w.ok(
        "acme",
        grant(
            "grant_02",
            Subject::Principal("alice".into()),
            "project:read",
            Some(Scope::ResourceType("project".into())),
        ),
    )
    .await;
    let conditions: Conditions =
        serde_json::from_value(serde_json::json!({"source_ip": ["10.0.0.0/8"]})).unwrap();
    w.ok(
        "acme",
        PolicyCommand::Grant {
            id: "grant_03".into(),
            subject: Subject::Principal("bob".into()),
            permission: perm("project:*"),
            on: Some(Scope::Resource(res("project/p1"))),
            effect: Effect::Deny,
            window: Window {
                valid_from: None,
                valid_until: Some(ts("2027-01-01T00:00:00Z")),
            },
            conditions: Some(conditions.clone()),
            granted_by: "root".into(),
        },
    )
    .await;
    w.ok(
        "acme",
        grant(
            "grant_04",
            Subject::Role("oncall".into()),
            "project:write",
            None,
        ),
    )
    .await;
    w.ok(
        "acme",
        grant(
            "grant_05",
            Subject::Principal("bob".into()),
            "key:read",
            None,
        ),
    )
    .await;
    let before_revocation = w
        .ok("acme", assign("asg_01", "alice", "oncall", None))
        .await;
    w.ok(
        "acme",
        assign(
            "asg_02",
            "bob",
            "viewer",
            Some(Scope::Resource(res("project/p1"))),
        ),
    )
    .await;
    let revoked_at = w
        .ok(
            "acme",
            PolicyCommand::Revoke {
                id: "grant_05".into(),
            },
        )
        .await;
    for r in ["project/p1", "project/p2"] {
        w.ok(
            "acme",
            PolicyCommand::AddMember {
                group: "prod".into(),
                resource: res(r),
            },
        )
        .await;
    }
    w.ok(
        "acme",
        PolicyCommand::RemoveMember {
            group: "prod".into(),
            resource: res("project/p2"),
        },
    )
    .await;
    // globex: the same names, other facts.
    w.ok(
        "globex",
        grant("grant_01", Subject::Principal("alice".into()), "*:*", None),
    )
    .await;
    w.ok("globex", assign("asg_01", "alice", "ops", None)).await;
    w.ok(
        "globex",
        PolicyCommand::AddMember {
            group: "prod".into(),
            resource: res("project/p2"),
        },
    )
    .await;

    let t = synced(&w, &projections).await;

    // The catalog: the built-in types, then the tenant's own.
    let catalog = policy_view::catalog(pool, &t, "acme").await.unwrap();
    assert_eq!(catalog.first().unwrap().resource_type, "tenant");
    let project = catalog.last().unwrap();
    assert_eq!(
        (project.resource_type.as_str(), project.builtin),
        ("project", false)
    );
    assert_eq!(project.actions, vec!["deploy", "read", "write"]);
    assert!(
        policy_view::catalog(pool, &t, "initech")
            .await
            .unwrap()
            .iter()
            .all(|c| c.builtin)
    );

    // Roles: built-in and custom by name, by pages.
    let names = |rows: Vec<policy_view::RoleRow>| -> Vec<String> {
        rows.into_iter().map(|r| r.name).collect()
    };
    let all = names(
        policy_view::list_roles(pool, &t, "acme", None, 50)
            .await
            .unwrap(),
    );
    assert_eq!(
        all,
        ["admin", "developer", "manager", "oncall", "ops", "viewer"]
    );
    let first = names(
        policy_view::list_roles(pool, &t, "acme", None, 4)
            .await
            .unwrap(),
    );
    let rest = names(
        policy_view::list_roles(pool, &t, "acme", first.last().map(String::as_str), 4)
            .await
            .unwrap(),
    );
    assert_eq!([first, rest].concat(), all);
    assert_eq!(
        names(
            policy_view::list_roles(pool, &t, "globex", None, 50)
                .await
                .unwrap()
        ),
        ["admin", "developer", "manager", "ops", "viewer"]
    );
    let ops = policy_view::find_role(pool, &t, "acme", "ops")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ops.parents, vec!["developer"]);
    assert_eq!(ops.description.as_deref(), Some("Runs production"));
    assert!(!ops.builtin && ops.created_position > 0 && ops.created_at.is_some());
    let admin = policy_view::find_role(pool, &t, "acme", "admin")
        .await
        .unwrap()
        .unwrap();
    assert!(admin.builtin);
    assert_eq!(admin.parents, vec!["manager"]);
    assert_eq!(admin.default_permissions, vec!["*:*"]);
    assert!(
        policy_view::find_role(pool, &t, "globex", "oncall")
            .await
            .unwrap()
            .is_none()
    );

    // Grants: live ones by default, ended ones on request, by subject and permission.
    let ids = |rows: Vec<policy_view::GrantRow>| -> Vec<String> {
        rows.into_iter().map(|r| r.id).collect()
    };
    let list = |filter: GrantFilter| {
        let t = t.clone();
        async move {
            ids(
                policy_view::list_grants(pool, &t, "acme", &filter, None, 50)
                    .await
                    .unwrap(),
            )
        }
    };
    assert_eq!(
        list(GrantFilter::default()).await,
        ["grant_01", "grant_02", "grant_03", "grant_04"]
    );
    assert_eq!(
        list(GrantFilter {
            include_ended: true,
            ..GrantFilter::default()
        })
        .await,
        ["grant_01", "grant_02", "grant_03", "grant_04", "grant_05"]
    );
    assert_eq!(
        list(GrantFilter {
            subject: Some(policy_view::parse_subject("principal:bob").unwrap()),
            include_ended: true,
            ..GrantFilter::default()
        })
        .await,
        ["grant_03", "grant_05"]
    );
    assert_eq!(
        list(GrantFilter {
            subject: Some(policy_view::parse_subject("role:ops").unwrap()),
            ..GrantFilter::default()
        })
        .await,
        ["grant_01"]
    );
    assert!(policy_view::parse_subject("team:ops").is_err());
    assert_eq!(
        list(GrantFilter {
            permission: Some(perm("project:write")),
            ..GrantFilter::default()
        })
        .await,
        ["grant_03", "grant_04"],
        "a filter lists the grants that bear on the permission, wildcards included"
    );
    assert_eq!(
        list(GrantFilter {
            permission: Some(perm("project:*")),
            ..GrantFilter::default()
        })
        .await,
        ["grant_01", "grant_02", "grant_03", "grant_04"]
    );
    let page = policy_view::list_grants(pool, &t, "acme", &GrantFilter::default(), None, 3)
        .await
        .unwrap();
    let next = policy_view::list_grants(
        pool,
        &t,
        "acme",
        &GrantFilter::default(),
        Some(&page.last().unwrap().id),
        3,
    )
    .await
    .unwrap();
    assert_eq!(
        [ids(page), ids(next)].concat(),
        ["grant_01", "grant_02", "grant_03", "grant_04"]
    );
    let g3 = policy_view::find_grant(pool, &t, "acme", "grant_03")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(g3.subject, Subject::Principal("bob".into()));
    assert_eq!(g3.permission, perm("project:*"));
    assert_eq!(g3.on, Some(Scope::Resource(res("project/p1"))));
    assert_eq!(g3.effect, Effect::Deny);
    assert_eq!(g3.valid_until, Some(ts("2027-01-01T00:00:00Z")));
    assert_eq!(g3.conditions, Some(conditions));
    assert_eq!(g3.granted_by, "root");
    assert_eq!(g3.ended_position, None);
    let g5 = policy_view::find_grant(pool, &t, "acme", "grant_05")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(g5.ended_position, Some(revoked_at));
    assert_eq!(g5.end_reason, Some(EndReason::Revoked));
    let globex_g1 = policy_view::find_grant(pool, &t, "globex", "grant_01")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(globex_g1.permission, perm("*:*"), "tenants do not leak");

    // Assignments by principal and role.
    let asg = |filter: AssignmentFilter| {
        let t = t.clone();
        async move {
            policy_view::list_assignments(pool, &t, "acme", &filter, None, 50)
                .await
                .unwrap()
                .into_iter()
                .map(|a| a.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(asg(AssignmentFilter::default()).await, ["asg_01", "asg_02"]);
    assert_eq!(
        asg(AssignmentFilter {
            principal: Some("bob".into()),
            ..AssignmentFilter::default()
        })
        .await,
        ["asg_02"]
    );
    assert_eq!(
        asg(AssignmentFilter {
            role: Some("oncall".into()),
            ..AssignmentFilter::default()
        })
        .await,
        ["asg_01"]
    );
    let a2 = policy_view::find_assignment(pool, &t, "acme", "asg_02")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((a2.principal.as_str(), a2.role.as_str()), ("bob", "viewer"));
    assert_eq!(a2.on, Some(Scope::Resource(res("project/p1"))));

    // Groups: current members only, each way round.
    let members = policy_view::group_members(pool, &t, "acme", "prod", None, 50)
        .await
        .unwrap();
    assert_eq!(
        members
            .iter()
            .map(|m| m.resource.clone())
            .collect::<Vec<_>>(),
        [res("project/p1")]
    );
    assert_eq!(
        policy_view::groups_of(pool, &t, "globex", &res("project/p2"))
            .await
            .unwrap()
            .iter()
            .map(|m| m.group.as_str())
            .collect::<Vec<_>>(),
        ["prod"]
    );
    assert!(
        policy_view::groups_of(pool, &t, "acme", &res("project/p2"))
            .await
            .unwrap()
            .is_empty()
    );

    // Decisions: alice deploys p1 through oncall > ops and the prod group; not p2, which left it.
    let now = AsOf::now(w.clock);
    let deploy = perm("project:deploy");
    let p1 = res("project/p1");
    let p2 = res("project/p2");
    assert_eq!(
        sql(
            pool,
            &t,
            "acme",
            check("alice", &deploy, Target::Resource(&p1), None, now)
        )
        .await,
        (Verdict::Allow, Some("grant_01".into()))
    );
    assert_eq!(
        sql(
            pool,
            &t,
            "acme",
            check("alice", &deploy, Target::Resource(&p2), None, now)
        )
        .await,
        (Verdict::Deny, None)
    );
    let read_key = perm("key:read");
    assert_eq!(
        sql(
            pool,
            &t,
            "acme",
            check("bob", &read_key, Target::Tenant, None, now)
        )
        .await,
        (Verdict::Deny, None),
        "grant_05 was revoked"
    );
    assert_eq!(
        sql(
            pool,
            &t,
            "acme",
            check(
                "bob",
                &read_key,
                Target::Tenant,
                None,
                AsOf {
                    position: before_revocation,
                    time: now.time
                }
            )
        )
        .await,
        (Verdict::Allow, Some("grant_05".into())),
        "as the log stood before the revocation"
    );
    // Bob's deny holds without an address, and only inside 10/8 with one.
    let read = perm("project:read");
    let inside: IpAddr = "10.1.2.3".parse().unwrap();
    let outside: IpAddr = "192.0.2.1".parse().unwrap();
    assert_eq!(
        sql(
            pool,
            &t,
            "acme",
            check("bob", &read, Target::Resource(&p1), None, now)
        )
        .await
        .0,
        Verdict::Deny
    );
    assert_eq!(
        sql(
            pool,
            &t,
            "acme",
            check("bob", &read, Target::Resource(&p1), Some(inside), now)
        )
        .await
        .0,
        Verdict::Deny
    );
    assert_eq!(
        sql(
            pool,
            &t,
            "acme",
            check("bob", &read, Target::Resource(&p1), Some(outside), now)
        )
        .await,
        (Verdict::Deny, None),
        "outside 10/8 the deny does not apply, and nothing allows bob to read projects"
    );

    // Who can do what on p1.
    let who = policy_view::who_can(pool, &t, "acme", &p1, now)
        .await
        .unwrap();
    let has = |principal: &str, grant: &str, role: Option<&str>| {
        who.iter().any(|r: &WhoCanRow| {
            r.principal == principal && r.grant_id == grant && r.via_role.as_deref() == role
        })
    };
    assert!(has("alice", "grant_01", Some("ops")));
    assert!(has("alice", "grant_02", None));
    assert!(has("alice", "grant_04", Some("oncall")));
    assert!(has(
        "alice",
        "builtin:developer:key:create",
        Some("developer")
    ));
    assert!(has("bob", "grant_03", None));
    assert!(has("bob", "builtin:viewer:tenant:read", Some("viewer")));
    assert!(!has("bob", "grant_05", None), "revoked");
    assert!(
        who.iter()
            .filter(|r| r.principal == "alice" && r.grant_id == "grant_01")
            .all(|r| r.via_assignment.as_deref() == Some("asg_01"))
    );
    let who_p2 = policy_view::who_can(pool, &t, "acme", &p2, now)
        .await
        .unwrap();
    assert!(
        !who_p2.iter().any(|r| r.grant_id == "grant_01"),
        "p2 left the group"
    );

    // Alice's effective permissions, with where they come from.
    let eff = policy_view::effective_permissions(pool, &t, "acme", "alice", now)
        .await
        .unwrap();
    let deploy_row = eff.iter().find(|r| r.grant_id == "grant_01").unwrap();
    assert_eq!(deploy_row.on, Some(Scope::Group("prod".into())));
    assert_eq!(deploy_row.via_role.as_deref(), Some("ops"));
    assert_eq!(deploy_row.via_assignment.as_deref(), Some("asg_01"));
    assert_eq!(deploy_row.assignment_on, None);
    assert!(
        eff.iter()
            .any(|r| r.grant_id == "grant_02" && r.via_role.is_none())
    );
    assert!(
        policy_view::effective_permissions(pool, &t, "acme", "mallory", now)
            .await
            .unwrap()
            .is_empty()
    );

    // Deleting oncall ends its grant and alice's assignment, each as an event, with the reason.
    let deleted = w
        .run(
            "acme",
            vec![PolicyCommand::DeleteRole {
                name: "oncall".into(),
            }],
        )
        .await
        .remove(0)
        .unwrap();
    assert_eq!(deleted.len(), 3, "a revocation, an end and the deletion");
    let t = synced(&w, &projections).await;
    let g4 = policy_view::find_grant(pool, &t, "acme", "grant_04")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(g4.end_reason, Some(EndReason::RoleDeleted));
    let a1 = policy_view::find_assignment(pool, &t, "acme", "asg_01")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a1.end_reason, Some(EndReason::RoleDeleted));
    assert!(
        policy_view::list_assignments(
            pool,
            &t,
            "acme",
            &AssignmentFilter {
                principal: Some("alice".into()),
                ..AssignmentFilter::default()
            },
            None,
            50
        )
        .await
        .unwrap()
        .is_empty()
    );
    assert_eq!(
        policy_view::list_assignments(
            pool,
            &t,
            "acme",
            &AssignmentFilter {
                principal: Some("alice".into()),
                include_ended: true,
                ..AssignmentFilter::default()
            },
            None,
            50
        )
        .await
        .unwrap()
        .len(),
        1
    );
    assert!(
        policy_view::find_role(pool, &t, "acme", "oncall")
            .await
            .unwrap()
            .is_none()
    );
    let now = AsOf::now(w.clock);
    assert_eq!(
        policy_view::sql_decide(
            pool,
            &t,
            "acme",
            &check("alice", &deploy, Target::Resource(&p1), None, now)
        )
        .await
        .unwrap(),
        (Verdict::Deny, None)
    );
    assert_eq!(
        policy_view::sql_decide(
            pool,
            &t,
            "acme",
            &check(
                "alice",
                &deploy,
                Target::Resource(&p1),
                None,
                AsOf {
                    position: deleted[0] - 1,
                    time: now.time
                }
            )
        )
        .await
        .unwrap(),
        (Verdict::Allow, Some("grant_01".into())),
        "as the log stood before the deletion"
    );

    assert_rebuilt_equals_live(&w, &views, &projections).await;
    projections.stop().await;
}

async fn a_role_inherits_from_the_parents_it_had_at_the_position_asked_about(ledger: Ledger) {
    let store = ledger.open().await;
    let views = ledger.views().await;
    let projections = ledger
        .start(&store, vec![Arc::new(PolicyView) as Arc<dyn Projection>])
        .await;
    let pool = views.pool();
    let mut w = World::new(store);
    w.ok("acme", project_catalog()).await;
    for role in ["readers", "writers"] {
        w.ok(
            "acme",
            PolicyCommand::CreateRole {
                name: role.into(),
                description: None,
                parents: vec![],
            },
        )
        .await;
    }
    w.ok(
        "acme",
        grant(
            "grant_r",
            Subject::Role("readers".into()),
            "project:read",
            None,
        ),
    )
    .await;
    w.ok(
        "acme",
        PolicyCommand::CreateRole {
            name: "team".into(),
            description: None,
            parents: vec!["readers".into()],
        },
    )
    .await;
    w.ok("acme", assign("asg_1", "alice", "team", None)).await;
    let as_reader = w.head().await;
    let changed = w
        .ok(
            "acme",
            PolicyCommand::UpdateRole {
                name: "team".into(),
                description: None,
                parents: Some(vec!["writers".into()]),
            },
        )
        .await;
    let t = synced(&w, &projections).await;
    let read = perm("project:read");
    let p = res("project/p1");
    let at = |position| AsOf {
        position,
        time: w.clock,
    };
    assert_eq!(
        sql(
            pool,
            &t,
            "acme",
            check("alice", &read, Target::Resource(&p), None, at(u64::MAX))
        )
        .await,
        (Verdict::Deny, None),
        "team no longer inherits from readers"
    );
    assert_eq!(
        sql(
            pool,
            &t,
            "acme",
            check("alice", &read, Target::Resource(&p), None, at(as_reader))
        )
        .await,
        (Verdict::Allow, Some("grant_r".into())),
        "before the change it did"
    );
    assert_eq!(
        sql(
            pool,
            &t,
            "acme",
            check("alice", &read, Target::Resource(&p), None, at(changed))
        )
        .await,
        (Verdict::Deny, None)
    );
    let who_then = policy_view::who_can(pool, &t, "acme", &p, at(as_reader))
        .await
        .unwrap();
    assert!(who_then.iter().any(|r| r.principal == "alice"
        && r.grant_id == "grant_r"
        && r.via_role.as_deref() == Some("readers")
        && r.via_assignment.as_deref() == Some("asg_1")));
    let who_now = policy_view::who_can(pool, &t, "acme", &p, at(u64::MAX))
        .await
        .unwrap();
    assert!(!who_now.iter().any(|r| r.grant_id == "grant_r"));
    assert_eq!(
        policy_view::find_role(pool, &t, "acme", "team")
            .await
            .unwrap()
            .unwrap()
            .parents,
        ["writers"]
    );
    projections.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Random histories
// ---------------------------------------------------------------------------------------------

const PRINCIPALS: &[&str] = &["alice", "bob", "carol"];
const CUSTOM_ROLES: &[&str] = &["ops", "audit", "eng"];
const ROLES: &[&str] = &[
    "ops",
    "audit",
    "eng",
    "admin",
    "manager",
    "developer",
    "viewer",
];
const PERMISSIONS: &[&str] = &[
    "project:read",
    "project:write",
    "project:*",
    "*:read",
    "key:read",
    "*:*",
];
const RESOURCES: &[&str] = &["project/a", "project/b", "key/k1"];
const GROUPS: &[&str] = &["prod", "dev"];
const TYPES: &[&str] = &["project", "key"];

#[derive(Debug, Clone)]
enum ScopeGen {
    Tenant,
    Resource(usize),
    Type(usize),
    Group(usize),
}

impl ScopeGen {
    fn scope(&self) -> Option<Scope> {
        match self {
            Self::Tenant => None,
            Self::Resource(i) => Some(Scope::Resource(res(RESOURCES[*i]))),
            Self::Type(i) => Some(Scope::ResourceType(TYPES[*i].to_owned())),
            Self::Group(i) => Some(Scope::Group(GROUPS[*i].to_owned())),
        }
    }
}

fn scope_gen() -> impl Strategy<Value = ScopeGen> {
    prop_oneof![
        4 => Just(ScopeGen::Tenant),
        2 => (0..RESOURCES.len()).prop_map(ScopeGen::Resource),
        1 => (0..TYPES.len()).prop_map(ScopeGen::Type),
        2 => (0..GROUPS.len()).prop_map(ScopeGen::Group),
    ]
}

/// Bounds of windows: instants two hours apart from the start of the history.
fn window_gen() -> impl Strategy<Value = (Option<u8>, Option<u8>)> {
    prop_oneof![
        3 => Just((None, None)),
        1 => (proptest::option::of(0u8..24), proptest::option::of(0u8..24)),
    ]
}

fn conditions_gen() -> impl Strategy<Value = Option<serde_json::Value>> {
    prop_oneof![
        12 => Just(None),
        1 => Just(Some(serde_json::json!({"time_of_day": {"from": "09:00", "until": "17:00", "time_zone": "UTC"}}))),
        1 => Just(Some(serde_json::json!({"time_of_day": {"from": "22:00", "until": "06:00", "time_zone": "Europe/Paris"}}))),
        1 => Just(Some(serde_json::json!({"source_ip": ["10.0.0.0/8"]}))),
        1 => Just(Some(serde_json::json!({"source_ip": ["192.0.2.0/24"], "time_of_day": {"from": "06:00", "until": "20:00", "time_zone": "UTC"}}))),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    CreateRole(usize, Vec<usize>),
    UpdateRole(usize, Vec<usize>),
    DeleteRole(usize),
    Grant {
        to_role: bool,
        subject: usize,
        permission: usize,
        on: ScopeGen,
        deny: bool,
        window: (Option<u8>, Option<u8>),
        conditions: Option<serde_json::Value>,
    },
    Revoke(usize),
    Assign {
        principal: usize,
        role: usize,
        on: ScopeGen,
        window: (Option<u8>, Option<u8>),
    },
    Unassign(usize),
    AddMember(usize, usize),
    RemoveMember(usize, usize),
}

fn parents_gen() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::btree_set(0..ROLES.len(), 0..3).prop_map(|s| s.into_iter().collect())
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..CUSTOM_ROLES.len(), parents_gen()).prop_map(|(r, p)| Op::CreateRole(r, p)),
        3 => (0..CUSTOM_ROLES.len(), parents_gen()).prop_map(|(r, p)| Op::UpdateRole(r, p)),
        1 => (0..CUSTOM_ROLES.len()).prop_map(Op::DeleteRole),
        10 => (
            any::<bool>(),
            0..ROLES.len(),
            0..PERMISSIONS.len(),
            scope_gen(),
            proptest::bool::weighted(0.3),
            window_gen(),
            conditions_gen(),
        )
            .prop_map(|(to_role, subject, permission, on, deny, window, conditions)| Op::Grant {
                to_role,
                subject,
                permission,
                on,
                deny,
                window,
                conditions,
            }),
        2 => (0..64usize).prop_map(Op::Revoke),
        5 => (0..PRINCIPALS.len(), 0..ROLES.len(), scope_gen(), window_gen()).prop_map(
            |(principal, role, on, window)| Op::Assign {
                principal,
                role,
                on,
                window,
            }
        ),
        1 => (0..64usize).prop_map(Op::Unassign),
        2 => (0..GROUPS.len(), 0..RESOURCES.len()).prop_map(|(g, r)| Op::AddMember(g, r)),
        1 => (0..GROUPS.len(), 0..RESOURCES.len()).prop_map(|(g, r)| Op::RemoveMember(g, r)),
    ]
}

#[derive(Debug, Clone)]
enum TargetGen {
    Resource(usize),
    Type(usize),
    Group(usize),
    Tenant,
}

#[derive(Debug, Clone)]
enum PositionGen {
    /// Everything applied.
    Now,
    /// Just after one of the case's events.
    After(usize),
    /// Just before one of them.
    Before(usize),
    /// As the log stood at the check's time.
    AtTime,
}

#[derive(Debug, Clone)]
struct CheckGen {
    principal: usize,
    permission: usize,
    target: TargetGen,
    ip: usize,
    position: PositionGen,
    /// Minutes after the start of the history.
    minutes: i64,
}

const CHECK_PERMISSIONS: &[&str] = &[
    "project:read",
    "project:write",
    "project:deploy",
    "key:read",
    "key:rotate",
    "tenant:update",
    "project:*",
    "*:read",
];
const IPS: &[Option<&str>] = &[None, Some("10.1.2.3"), Some("192.0.2.9")];

fn check_gen() -> impl Strategy<Value = CheckGen> {
    let target = prop_oneof![
        6 => (0..RESOURCES.len()).prop_map(TargetGen::Resource),
        1 => (0..TYPES.len()).prop_map(TargetGen::Type),
        1 => (0..GROUPS.len()).prop_map(TargetGen::Group),
        1 => Just(TargetGen::Tenant),
    ];
    let position = prop_oneof![
        3 => Just(PositionGen::Now),
        2 => (0..64usize).prop_map(PositionGen::After),
        1 => (0..64usize).prop_map(PositionGen::Before),
        2 => Just(PositionGen::AtTime),
    ];
    (
        prop_oneof![7 => 0..PRINCIPALS.len(), 1 => Just(PRINCIPALS.len())],
        0..CHECK_PERMISSIONS.len(),
        target,
        0..IPS.len(),
        position,
        -120i64..(48 * 60),
    )
        .prop_map(
            |(principal, permission, target, ip, position, minutes)| CheckGen {
                principal,
                permission,
                target,
                ip,
                position,
                minutes,
            },
        )
}

fn window(start: Timestamp, (from, until): (Option<u8>, Option<u8>)) -> Window {
    let at = |k: u8| start.plus(time::Duration::hours(2 * i64::from(k)));
    Window {
        valid_from: from.map(at),
        valid_until: until.map(at),
    }
}

/// Whether a scope covers a target, with the groups the resource is in.
fn scope_covers(scope: Option<&Scope>, target: Target<'_>, groups: &[&str]) -> bool {
    match (scope, target) {
        (None, _) => true,
        (Some(Scope::ResourceType(t)), Target::Type(u)) => t == u,
        (Some(Scope::ResourceType(t)), Target::Resource(r)) => *t == r.resource_type,
        (Some(Scope::Resource(s)), Target::Resource(r)) => s == r,
        (Some(Scope::Group(g)), Target::Group(h)) => g == h,
        (Some(Scope::Group(g)), Target::Resource(_)) => groups.contains(&g.as_str()),
        _ => false,
    }
}

/// Resolution over rows that bear on a check: a deny wins, else an allow allows, else deny.
fn resolve<'a>(
    rows: impl Iterator<Item = (Effect, &'a Permission, Option<&'a Conditions>)>,
    asked: &Permission,
    time: Timestamp,
    ip: Option<IpAddr>,
) -> Verdict {
    let (mut deny, mut allow) = (false, false);
    for (effect, p, conditions) in rows {
        let bears = match effect {
            Effect::Deny => p.overlaps(asked),
            Effect::Allow => p.covers(asked),
        };
        if bears && policy_view::conditions_hold(conditions, effect, time, ip) {
            match effect {
                Effect::Deny => deny = true,
                Effect::Allow => allow = true,
            }
        }
    }
    if deny || !allow {
        Verdict::Deny
    } else {
        Verdict::Allow
    }
}

struct Case {
    history: Vec<Op>,
    checks: Vec<CheckGen>,
}

fn case() -> impl Strategy<Value = (Vec<Op>, Vec<CheckGen>)> {
    (
        proptest::collection::vec(op(), 12..48),
        proptest::collection::vec(check_gen(), 32),
    )
}

/// Appends the history to a fresh tenant, then asks every check of the domain and of the view.
async fn one_case(
    w: &mut World,
    views: &ViewDb,
    projections: &Projections,
    tenant: &str,
    case: Case,
) {
    let start = w.clock;
    let mut commands = vec![project_catalog()];
    let mut grants = 0usize;
    let mut assignments = 0usize;
    for op in &case.history {
        commands.push(match op.clone() {
            Op::CreateRole(r, parents) => PolicyCommand::CreateRole {
                name: CUSTOM_ROLES[r].to_owned(),
                description: None,
                parents: parents.iter().map(|p| ROLES[*p].to_owned()).collect(),
            },
            Op::UpdateRole(r, parents) => PolicyCommand::UpdateRole {
                name: CUSTOM_ROLES[r].to_owned(),
                description: None,
                parents: Some(parents.iter().map(|p| ROLES[*p].to_owned()).collect()),
            },
            Op::DeleteRole(r) => PolicyCommand::DeleteRole {
                name: CUSTOM_ROLES[r].to_owned(),
            },
            Op::Grant {
                to_role,
                subject,
                permission,
                on,
                deny,
                window: bounds,
                conditions,
            } => {
                grants += 1;
                PolicyCommand::Grant {
                    id: format!("grant_{grants:03}"),
                    subject: if to_role {
                        Subject::Role(ROLES[subject].to_owned())
                    } else {
                        Subject::Principal(PRINCIPALS[subject % PRINCIPALS.len()].to_owned())
                    },
                    permission: perm(PERMISSIONS[permission]),
                    on: on.scope(),
                    effect: if deny { Effect::Deny } else { Effect::Allow },
                    window: window(start, bounds),
                    conditions: conditions.map(|c| serde_json::from_value(c).unwrap()),
                    granted_by: "root".to_owned(),
                }
            }
            Op::Revoke(i) => PolicyCommand::Revoke {
                id: format!("grant_{:03}", 1 + i % grants.max(1)),
            },
            Op::Assign {
                principal,
                role,
                on,
                window: bounds,
            } => {
                assignments += 1;
                PolicyCommand::Assign {
                    id: format!("asg_{assignments:03}"),
                    principal: PRINCIPALS[principal].to_owned(),
                    role: ROLES[role].to_owned(),
                    on: on.scope(),
                    window: window(start, bounds),
                    assigned_by: "root".to_owned(),
                    migrated_from: None,
                }
            }
            Op::Unassign(i) => PolicyCommand::Unassign {
                id: format!("asg_{:03}", 1 + i % assignments.max(1)),
            },
            Op::AddMember(g, r) => PolicyCommand::AddMember {
                group: GROUPS[g].to_owned(),
                resource: res(RESOURCES[r]),
            },
            Op::RemoveMember(g, r) => PolicyCommand::RemoveMember {
                group: GROUPS[g].to_owned(),
                resource: res(RESOURCES[r]),
            },
        });
    }
    // Appended in a few appends, so the view's batches and the appends do not line up.
    let mut positions = Vec::new();
    let mut commands = commands.into_iter().peekable();
    while commands.peek().is_some() {
        let chunk: Vec<PolicyCommand> = commands.by_ref().take(7).collect();
        // Refused commands (a missing role, a cycle, an ended grant) are part of the game.
        for outcome in w.run(tenant, chunk).await.into_iter().flatten() {
            positions.extend(outcome);
        }
    }
    let t = synced(w, projections).await;
    let pool = views.pool();
    let policy = w.policy(tenant);

    // The listings are the domain's fold.
    let grants_view = policy_view::list_grants(
        pool,
        &t,
        tenant,
        &GrantFilter {
            include_ended: true,
            ..GrantFilter::default()
        },
        None,
        1000,
    )
    .await
    .unwrap();
    let mut expected: Vec<_> = policy.grants().collect();
    expected.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(grants_view.len(), expected.len());
    for (row, g) in grants_view.iter().zip(expected) {
        assert_eq!(
            (
                &row.id,
                &row.subject,
                &row.permission,
                &row.on,
                row.effect,
                row.valid_from,
                row.valid_until,
                &row.conditions,
                row.created_position,
                row.ended_position,
                row.end_reason,
            ),
            (
                &g.id,
                &g.subject,
                &g.permission,
                &g.on,
                g.effect,
                g.window.valid_from,
                g.window.valid_until,
                &g.conditions,
                g.created.position,
                g.ended.map(|e| e.0.position),
                g.ended.map(|e| e.1),
            )
        );
    }
    let assignments_view = policy_view::list_assignments(
        pool,
        &t,
        tenant,
        &AssignmentFilter {
            include_ended: true,
            ..AssignmentFilter::default()
        },
        None,
        1000,
    )
    .await
    .unwrap();
    let mut expected: Vec<_> = policy.assignments().collect();
    expected.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(
        assignments_view
            .iter()
            .map(|a| (
                a.id.clone(),
                a.principal.clone(),
                a.role.clone(),
                a.on.clone(),
                a.created_position,
                a.ended_position
            ))
            .collect::<Vec<_>>(),
        expected
            .iter()
            .map(|a| (
                a.id.clone(),
                a.principal.clone(),
                a.role.clone(),
                a.on.clone(),
                a.created.position,
                a.ended.map(|e| e.0.position)
            ))
            .collect::<Vec<_>>()
    );
    let roles_view: BTreeMap<String, Vec<String>> =
        policy_view::list_roles(pool, &t, tenant, None, 1000)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| !r.builtin)
            .map(|r| (r.name, r.parents))
            .collect();
    let roles_domain: BTreeMap<String, Vec<String>> = policy
        .custom_roles()
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v.parents.clone()))
        .collect();
    assert_eq!(roles_view, roles_domain);
    for r in RESOURCES {
        let r = res(r);
        let view: BTreeSet<String> = policy_view::groups_of(pool, &t, tenant, &r)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.group)
            .collect();
        let domain: BTreeSet<String> = policy
            .groups_of(&r)
            .into_iter()
            .map(str::to_owned)
            .collect();
        assert_eq!(view, domain, "groups of {r}");
    }

    // Every check: the SQL decision, who-can and effective permissions agree with the domain.
    let resources: Vec<Resource> = RESOURCES.iter().map(|r| res(r)).collect();
    let permissions: Vec<Permission> = CHECK_PERMISSIONS.iter().map(|p| perm(p)).collect();
    for c in &case.checks {
        let principal = PRINCIPALS.get(c.principal).copied().unwrap_or("mallory");
        let permission = &permissions[c.permission];
        let target = match &c.target {
            TargetGen::Resource(i) => Target::Resource(&resources[*i]),
            TargetGen::Type(i) => Target::Type(TYPES[*i]),
            TargetGen::Group(i) => Target::Group(GROUPS[*i]),
            TargetGen::Tenant => Target::Tenant,
        };
        let ip: Option<IpAddr> = IPS[c.ip].map(|s| s.parse().unwrap());
        let time = start.plus(time::Duration::minutes(c.minutes));
        let pick = |i: usize| positions.get(i % positions.len().max(1)).copied();
        let position = match c.position {
            PositionGen::Now => u64::MAX,
            PositionGen::After(i) => pick(i).unwrap_or(u64::MAX),
            PositionGen::Before(i) => pick(i).map_or(u64::MAX, |p| p - 1),
            PositionGen::AtTime => policy.position_at(time),
        };
        let as_of = AsOf { position, time };
        let question = check(principal, permission, target, ip, as_of);
        let domain = policy::evaluate(policy, &question);
        let context = format!(
            "{principal} {permission} on {target:?} from {ip:?} at {as_of:?}: the domain says {domain:?}"
        );
        let (verdict, grant) = policy_view::sql_decide(pool, &t, tenant, &question)
            .await
            .unwrap();
        assert_eq!(verdict, domain.verdict, "{context}");
        let applicable = policy_view::applicable_grants(pool, &t, tenant, &question)
            .await
            .unwrap();
        match domain
            .matched
            .iter()
            .rev()
            .find(|m| m.kind == MatchKind::Grant)
        {
            Some(g) => {
                assert!(
                    applicable.iter().any(|a| a.id == g.id
                        && (a.effect == Effect::Deny) == (verdict == Verdict::Deny)),
                    "{context}: the view found {applicable:?}"
                )
            }
            None => assert_eq!(grant, None, "{context}"),
        }

        if let Target::Resource(r) = target {
            let who = policy_view::who_can(pool, &t, tenant, r, as_of)
                .await
                .unwrap();
            let verdict = resolve(
                who.iter()
                    .filter(|w| w.principal == principal)
                    .map(|w| (w.effect, &w.permission, w.conditions.as_ref())),
                permission,
                time,
                ip,
            );
            assert_eq!(verdict, domain.verdict, "who_can: {context}: {who:?}");
        }

        if position == u64::MAX {
            let groups: Vec<&str> = match target {
                Target::Resource(r) => policy.groups_of(r),
                _ => Vec::new(),
            };
            let rows = policy_view::effective_permissions(pool, &t, tenant, principal, as_of)
                .await
                .unwrap();
            let verdict = resolve(
                rows.iter()
                    .filter(|e| {
                        scope_covers(e.on.as_ref(), target, &groups)
                            && scope_covers(e.assignment_on.as_ref(), target, &groups)
                    })
                    .map(|e| (e.effect, &e.permission, e.conditions.as_ref())),
                permission,
                time,
                ip,
            );
            assert_eq!(
                verdict, domain.verdict,
                "effective_permissions: {context}: {rows:?}"
            );
        }
    }
}

async fn sql_decisions_and_reverse_lookups_agree_with_the_domain_on_random_histories(
    ledger: Ledger,
) {
    let store = ledger.open().await;
    let views = ledger.views().await;
    let projections = ledger
        .start(&store, vec![Arc::new(PolicyView) as Arc<dyn Projection>])
        .await;
    let world = std::sync::Mutex::new(World::new(store));
    let handle = tokio::runtime::Handle::current();
    let cases = AtomicUsize::new(0);
    // Each case is a fresh tenant of one ledger, so earlier cases' tenants, which reuse every
    // name, are there to leak into it if tenants were not kept apart.
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: 24,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let result = tokio::task::block_in_place(|| {
        runner.run(&case(), |(history, checks)| {
            let n = cases.fetch_add(1, Ordering::SeqCst);
            // A failed case's panic poisons the lock; the next case uses a fresh tenant anyway.
            let mut w = world
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            handle.block_on(one_case(
                &mut w,
                &views,
                &projections,
                &format!("t{n}"),
                Case { history, checks },
            ));
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let w = world
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    assert_rebuilt_equals_live(&w, &views, &projections).await;
    projections.stop().await;
}
