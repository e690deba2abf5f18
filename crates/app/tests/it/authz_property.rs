//! Random policy histories driven through the use cases while the clock moves: the index that
//! answers checks, a fold of the log read back from the store, and the SQL view decide alike, now
//! and at any past instant, and a check of the past is evaluated at the last policy event of that
//! instant.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use custodian_app::authz::check::{self, CheckAnswer, CheckContext, CheckRequest, MatchedView};
use custodian_app::authz::manage::{
    self, CatalogRequest, ConditionsBody, CreateAssignmentRequest, CreateGrantRequest,
    CreateRoleRequest, EffectBody, HoursBody, ScopeBody, SubjectBody, UpdateRoleRequest,
};
use custodian_app::{AppError, Clock, Principal};
use custodian_domain::policy::{
    AsOf, Check, Decision, MatchKind, Permission, Policy, PolicyEvent, Resource, Stamp, Target,
};
use custodian_domain::{DomainEvent as _, EventRecord, Timestamp};
use custodian_projections::policy::sql_decide;
use proptest::prelude::*;
use proptest::test_runner::{RngSeed, TestRunner};

use crate::support::TestApp;

const USERS: usize = 2;
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
/// What grants give: concrete, patterns, built-in and custom types, and one type no catalog has.
const PERMISSIONS: &[&str] = &[
    "project:read",
    "project:write",
    "project:*",
    "*:read",
    "billing:export",
    "user:create",
    "key:*",
    "*:*",
    "report:read",
];
/// What checks ask.
const CHECK_PERMISSIONS: &[&str] = &[
    "project:read",
    "project:write",
    "project:deploy",
    "billing:read",
    "billing:export",
    "key:rotate",
    "user:create",
    "user:read",
];
const RESOURCES: &[&str] = &[
    "project/a",
    "project/b",
    "billing/acct",
    "key/k1",
    "user/u1",
];
const GROUPS: &[&str] = &["prod", "dev"];
const TYPES: &[&str] = &["project", "billing", "key"];
const IPS: &[Option<&str>] = &[None, Some("10.1.2.3"), Some("192.0.2.9")];

/// The catalogs a history switches between; the first is the one it starts with.
fn catalog(i: usize) -> BTreeMap<String, BTreeSet<String>> {
    let types: &[(&str, &[&str])] = match i {
        0 => &[
            ("project", &["read", "write", "deploy"]),
            ("billing", &["read", "export"]),
        ],
        1 => &[("project", &["read", "write"])],
        _ => &[],
    };
    types
        .iter()
        .map(|(t, actions)| {
            (
                (*t).to_owned(),
                actions.iter().map(|a| (*a).to_owned()).collect(),
            )
        })
        .collect()
}

fn conditions(i: usize) -> Option<ConditionsBody> {
    let hours = |from: &str, until: &str, zone: &str| {
        Some(HoursBody {
            from: from.to_owned(),
            until: until.to_owned(),
            time_zone: zone.to_owned(),
        })
    };
    match i {
        1 => Some(ConditionsBody {
            time_of_day: hours("12:30", "14:00", "UTC"),
            source_ip: None,
        }),
        2 => Some(ConditionsBody {
            time_of_day: hours("22:00", "06:00", "Europe/Paris"),
            source_ip: None,
        }),
        3 => Some(ConditionsBody {
            time_of_day: None,
            source_ip: Some(vec!["10.0.0.0/8".to_owned()]),
        }),
        4 => Some(ConditionsBody {
            time_of_day: hours("06:00", "20:00", "UTC"),
            source_ip: Some(vec!["192.0.2.0/24".to_owned()]),
        }),
        _ => None,
    }
}

#[derive(Debug, Clone)]
enum ScopeGen {
    Tenant,
    Resource(usize),
    Type(usize),
    Group(usize),
}

impl ScopeGen {
    fn body(&self) -> Option<ScopeBody> {
        match self {
            Self::Tenant => None,
            Self::Resource(i) => Some(ScopeBody::Resource(RESOURCES[*i].to_owned())),
            Self::Type(i) => Some(ScopeBody::ResourceType(TYPES[*i].to_owned())),
            Self::Group(i) => Some(ScopeBody::Group(GROUPS[*i].to_owned())),
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

/// A window's bounds, in minutes from the clock's time when it is made.
type WindowGen = (Option<i64>, Option<i64>);

fn window_gen() -> impl Strategy<Value = WindowGen> {
    prop_oneof![
        3 => Just((None, None)),
        1 => (proptest::option::of(-30i64..30), proptest::option::of(-10i64..90)),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    CreateRole(usize, Vec<usize>),
    UpdateRole(usize, Vec<usize>),
    DeleteRole(usize),
    Grant {
        to_role: bool,
        role: usize,
        principal: usize,
        permission: usize,
        on: ScopeGen,
        deny: bool,
        window: WindowGen,
        conditions: usize,
    },
    Revoke(usize),
    Assign {
        principal: usize,
        role: usize,
        on: ScopeGen,
        window: WindowGen,
    },
    Unassign(usize),
    AddMember(usize, usize),
    RemoveMember(usize, usize),
    Catalog(usize),
}

/// A user of the tenant, now and then one it does not have.
fn principal_gen() -> impl Strategy<Value = usize> {
    prop_oneof![9 => 0..USERS, 1 => Just(USERS)]
}

fn parents_gen() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::btree_set(0..ROLES.len(), 0..3).prop_map(|s| s.into_iter().collect())
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..CUSTOM_ROLES.len(), parents_gen()).prop_map(|(r, p)| Op::CreateRole(r, p)),
        2 => (0..CUSTOM_ROLES.len(), parents_gen()).prop_map(|(r, p)| Op::UpdateRole(r, p)),
        1 => (0..CUSTOM_ROLES.len()).prop_map(Op::DeleteRole),
        12 => (
            proptest::bool::weighted(0.4),
            0..ROLES.len(),
            principal_gen(),
            0..PERMISSIONS.len(),
            scope_gen(),
            proptest::bool::weighted(0.3),
            window_gen(),
            prop_oneof![8 => Just(0usize), 1 => 1..5usize],
        )
            .prop_map(|(to_role, role, principal, permission, on, deny, window, conditions)| Op::Grant {
                to_role,
                role,
                principal,
                permission,
                on,
                deny,
                window,
                conditions,
            }),
        2 => any::<usize>().prop_map(Op::Revoke),
        8 => (principal_gen(), 0..ROLES.len(), scope_gen(), window_gen()).prop_map(
            |(principal, role, on, window)| Op::Assign {
                principal,
                role,
                on,
                window,
            }
        ),
        2 => any::<usize>().prop_map(Op::Unassign),
        3 => (0..GROUPS.len(), 0..RESOURCES.len()).prop_map(|(g, r)| Op::AddMember(g, r)),
        1 => (0..GROUPS.len(), 0..RESOURCES.len()).prop_map(|(g, r)| Op::RemoveMember(g, r)),
        1 => (0..3usize).prop_map(Op::Catalog),
    ]
}

/// One step: what is done, then how many seconds pass.
fn step() -> impl Strategy<Value = (Op, i64)> {
    (
        op(),
        prop_oneof![2 => Just(0i64), 4 => 1i64..300, 1 => Just(900i64), 1 => Just(3_600i64)],
    )
}

#[derive(Debug, Clone)]
struct CheckGen {
    /// One past the users: a principal the tenant does not have.
    principal: usize,
    permission: usize,
    /// Whether the resource is of the permission's type, and which.
    resource: (bool, usize),
    ip: usize,
    /// `None`: now; otherwise one of the instants remembered after each step.
    at: Option<usize>,
}

fn check_gen() -> impl Strategy<Value = CheckGen> {
    (
        principal_gen(),
        0..CHECK_PERMISSIONS.len(),
        (proptest::bool::weighted(0.7), any::<usize>()),
        0..IPS.len(),
        proptest::option::of(any::<usize>()),
    )
        .prop_map(|(principal, permission, resource, ip, at)| CheckGen {
            principal,
            permission,
            resource,
            ip,
            at,
        })
}

/// A history (the custom roles are created first, then given random parents), and the checks to
/// make after it.
fn case() -> impl Strategy<Value = (Vec<(Op, i64)>, Vec<CheckGen>)> {
    (
        proptest::collection::vec(parents_gen(), CUSTOM_ROLES.len()),
        proptest::collection::vec(step(), 16..40),
        proptest::collection::vec(check_gen(), 24),
    )
        .prop_map(|(parents, steps, checks)| {
            let roles = (0..CUSTOM_ROLES.len()).map(|i| (Op::CreateRole(i, vec![]), 60));
            let parents = parents
                .into_iter()
                .enumerate()
                .map(|(i, p)| (Op::UpdateRole(i, p), 60));
            (roles.chain(parents).chain(steps).collect(), checks)
        })
}

/// The ids made so far in a history, to revoke and end.
#[derive(Default)]
struct Made {
    grants: Vec<String>,
    assignments: Vec<String>,
}

struct Case<'a> {
    t: &'a TestApp,
    root: Principal,
    tenant: String,
    users: Vec<String>,
    /// A user id the tenant does not have.
    stranger: String,
}

impl Case<'_> {
    fn principal(&self, i: usize) -> String {
        self.users
            .get(i)
            .cloned()
            .unwrap_or_else(|| self.stranger.clone())
    }

    fn at(&self, minutes: Option<i64>) -> Option<String> {
        minutes.map(|m| {
            self.t
                .clock
                .now()
                .plus(time::Duration::minutes(m))
                .to_string()
        })
    }

    async fn run(&self, op: &Op, made: &mut Made) -> Result<(), AppError> {
        let (app, root, tenant) = (&self.t.app, &self.root, self.tenant.as_str());
        let roles = |parents: &[usize]| -> Vec<String> {
            parents.iter().map(|p| ROLES[*p].to_owned()).collect()
        };
        match op {
            Op::CreateRole(r, parents) => {
                manage::create_role(
                    app,
                    root,
                    tenant,
                    CreateRoleRequest {
                        name: CUSTOM_ROLES[*r].to_owned(),
                        description: None,
                        parents: Some(roles(parents)),
                    },
                )
                .await?;
            }
            Op::UpdateRole(r, parents) => {
                manage::update_role(
                    app,
                    root,
                    tenant,
                    CUSTOM_ROLES[*r],
                    UpdateRoleRequest {
                        description: None,
                        parents: Some(roles(parents)),
                    },
                )
                .await?;
            }
            Op::DeleteRole(r) => {
                manage::delete_role(app, root, tenant, CUSTOM_ROLES[*r]).await?;
            }
            Op::Grant {
                to_role,
                role,
                principal,
                permission,
                on,
                deny,
                window: (from, until),
                conditions: c,
            } => {
                let subject = if *to_role {
                    SubjectBody::Role(ROLES[*role].to_owned())
                } else {
                    SubjectBody::Principal(self.principal(*principal))
                };
                let made_grant = manage::create_grant(
                    app,
                    root,
                    tenant,
                    CreateGrantRequest {
                        subject,
                        permission: PERMISSIONS[*permission].to_owned(),
                        on: on.body(),
                        effect: Some(if *deny {
                            EffectBody::Deny
                        } else {
                            EffectBody::Allow
                        }),
                        valid_from: self.at(*from),
                        valid_until: self.at(*until),
                        conditions: conditions(*c),
                    },
                )
                .await?;
                made.grants.push(made_grant.id);
            }
            Op::Revoke(i) => {
                let id = match made.grants.get(i % made.grants.len().max(1)) {
                    Some(id) => id.clone(),
                    None => custodian_domain::id::type_id("grant", uuid::Uuid::now_v7()),
                };
                manage::revoke_grant(app, root, tenant, &id).await?;
            }
            Op::Assign {
                principal,
                role,
                on,
                window: (from, until),
            } => {
                let made_assignment = manage::create_assignment(
                    app,
                    root,
                    tenant,
                    CreateAssignmentRequest {
                        principal: self.principal(*principal),
                        role: ROLES[*role].to_owned(),
                        on: on.body(),
                        valid_from: self.at(*from),
                        valid_until: self.at(*until),
                    },
                )
                .await?;
                made.assignments.push(made_assignment.id);
            }
            Op::Unassign(i) => {
                let id = match made.assignments.get(i % made.assignments.len().max(1)) {
                    Some(id) => id.clone(),
                    None => custodian_domain::id::type_id("asg", uuid::Uuid::now_v7()),
                };
                manage::end_assignment(app, root, tenant, &id).await?;
            }
            Op::AddMember(g, r) | Op::RemoveMember(g, r) => {
                let (resource_type, id) = RESOURCES[*r].split_once('/').unwrap();
                if matches!(op, Op::AddMember(..)) {
                    manage::add_member(app, root, tenant, GROUPS[*g], resource_type, id).await?;
                } else {
                    manage::remove_member(app, root, tenant, GROUPS[*g], resource_type, id).await?;
                }
            }
            Op::Catalog(i) => {
                manage::set_catalog(
                    app,
                    root,
                    tenant,
                    CatalogRequest {
                        resource_types: catalog(*i),
                    },
                )
                .await?;
            }
        }
        Ok(())
    }
}

/// Every event of the log, in order.
async fn whole_log(t: &TestApp) -> Vec<EventRecord> {
    let mut out: Vec<EventRecord> = Vec::new();
    loop {
        let page = t
            .app
            .store
            .read_all(out.len() as u64 + 1, 1_000)
            .await
            .unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// A tenant's policy folded from scratch from its events at or before `position`.
fn fold(events: &[(Stamp, PolicyEvent)], position: u64) -> Policy {
    let mut policy = Policy::new();
    for (stamp, event) in events.iter().filter(|(s, _)| s.position <= position) {
        policy.apply(*stamp, event);
    }
    policy
}

type Answer = (String, String, Vec<(String, String, u64)>);

fn matched(m: impl IntoIterator<Item = MatchedView>) -> Vec<(String, String, u64)> {
    m.into_iter()
        .map(|m| (m.kind.to_owned(), m.id, m.position))
        .collect()
}

fn answered(a: &CheckAnswer) -> Answer {
    (
        format!("{:?}", a.result.decision),
        a.result.reason.clone(),
        matched(a.result.matched.clone()),
    )
}

fn decided(d: &Decision) -> Answer {
    (
        format!("{:?}", check::VerdictView::from(d.verdict)),
        d.reason.clone(),
        matched(d.matched.iter().cloned().map(MatchedView::from)),
    )
}

async fn one_case(t: &TestApp, n: usize, steps: Vec<(Op, i64)>, checks: Vec<CheckGen>) {
    let tenant = format!("case-{n}");
    t.create_tenant(&tenant).await;
    let mut users = Vec::new();
    for i in 0..USERS {
        users.push(
            t.create_person(
                &tenant,
                &format!("u{i}@{tenant}.test"),
                "a long enough password",
            )
            .await,
        );
    }
    let case = Case {
        t,
        root: t.root().await,
        tenant: tenant.clone(),
        users,
        stranger: TestApp::new_user_id(),
    };
    case.run(&Op::Catalog(0), &mut Made::default())
        .await
        .unwrap();

    // The history; refusals (a missing role, a cycle, an ended grant, an unknown permission or
    // principal, an empty window) append nothing and are part of it.
    let mut made = Made::default();
    let mut instants = vec![t.clock.now()];
    for (op, secs) in &steps {
        let rules = t.stream_events(&tenant, "policy", "rules").await.len();
        match case.run(op, &mut made).await {
            Ok(()) => {}
            Err(
                AppError::Invalid(_)
                | AppError::UnknownPermission { .. }
                | AppError::NotFound(_)
                | AppError::Conflict(_),
            ) => assert_eq!(
                t.stream_events(&tenant, "policy", "rules").await.len(),
                rules,
                "{op:?} was refused but appended"
            ),
            Err(e) => panic!("{op:?} failed: {e:?}"),
        }
        instants.push(t.clock.now());
        t.advance(*secs);
    }

    // The log as the store has it, and the tenant's policy folded from it from scratch.
    t.views_caught_up().await;
    let tables = t.app.tables("policy").unwrap();
    let pool = t.app.db.pool();
    let log = whole_log(t).await;
    let events: Vec<(Stamp, PolicyEvent)> = log
        .iter()
        .filter(|r| r.stream.tenant() == tenant && r.stream.aggregate() == "policy")
        .map(|r| {
            (
                Stamp {
                    position: r.position,
                    at: r.occurred_at,
                },
                PolicyEvent::decode(r.event_type.as_str(), r.schema, &r.data).unwrap(),
            )
        })
        .collect();
    let now = t.clock.now();
    let folded = fold(&events, u64::MAX);

    for c in &checks {
        let principal = case.principal(c.principal);
        let permission = Permission::parse(CHECK_PERMISSIONS[c.permission]).unwrap();
        let (same_type, i) = c.resource;
        let candidates: Vec<&str> = RESOURCES
            .iter()
            .copied()
            .filter(|r| !same_type || r.split('/').next() == Some(&*permission.resource_type))
            .collect();
        let resource = Resource::parse(candidates[i % candidates.len()]).unwrap();
        let ip: Option<IpAddr> = IPS[c.ip].map(|ip| ip.parse().unwrap());
        let at: Option<Timestamp> = c.at.map(|i| instants[i % instants.len()]);
        let answer = check::check(
            &t.app,
            &case.root,
            &tenant,
            CheckRequest {
                principal: principal.clone(),
                permission: permission.to_string(),
                resource: resource.to_string(),
                context: Some(CheckContext {
                    ip: IPS[c.ip].map(str::to_owned),
                    time: None,
                }),
                at: at.map(|at| at.to_string()),
                explain: None,
            },
        )
        .await
        .unwrap();
        let question = |as_of: AsOf| Check {
            principal: &principal,
            permission: &permission,
            target: Target::Resource(&resource),
            ip,
            as_of,
            explain: false,
        };
        let context = format!("{principal} {permission} on {resource} from {ip:?} at {at:?}");
        match at {
            None => {
                // The live index, the fold of the log and the SQL view.
                let expected =
                    custodian_domain::policy::evaluate(&folded, &question(AsOf::now(now)));
                assert_eq!(answered(&answer), decided(&expected), "{context}");
                let (direct, _) = t
                    .app
                    .policy
                    .decide(&tenant, &question(AsOf::now(now)))
                    .unwrap();
                assert_eq!(direct, expected, "{context}");
                let (verdict, grant) = sql_decide(
                    pool,
                    &tables,
                    &tenant,
                    &question(AsOf {
                        position: u64::MAX,
                        time: now,
                    }),
                )
                .await
                .unwrap();
                assert_eq!(verdict, expected.verdict, "the SQL view: {context}");
                assert_eq!(
                    grant.is_some(),
                    expected.matched.iter().any(|m| m.kind == MatchKind::Grant),
                    "the SQL view: {context}"
                );
            }
            Some(at) => {
                // The position of the instant: the last policy event at or before it.
                let last = log
                    .iter()
                    .filter(|r| r.stream.aggregate() == "policy" && r.occurred_at <= at)
                    .map(|r| r.position)
                    .max()
                    .unwrap_or(0);
                assert_eq!(answer.position, last, "{context}");
                let then = fold(&events, answer.position);
                let expected = custodian_domain::policy::evaluate(&then, &question(AsOf::now(at)));
                assert_eq!(answered(&answer), decided(&expected), "{context}");
                let (verdict, _) = sql_decide(
                    pool,
                    &tables,
                    &tenant,
                    &question(AsOf {
                        position: answer.position,
                        time: at,
                    }),
                )
                .await
                .unwrap();
                assert_eq!(verdict, expected.verdict, "the SQL view: {context}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_the_folded_log_and_the_sql_view_decide_alike_now_and_at_past_instants() {
    let t = TestApp::new().await;
    let handle = tokio::runtime::Handle::current();
    let cases = AtomicUsize::new(0);
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 12,
        rng_seed: RngSeed::Fixed(0x0a07_4a11_5eed),
        failure_persistence: None,
        max_shrink_iters: 64,
        ..ProptestConfig::default()
    });
    // Each case is a fresh tenant of one ledger, so the earlier cases' tenants, which reuse every
    // name, are there to leak into it if tenants were not kept apart.
    let result = tokio::task::block_in_place(|| {
        runner.run(&case(), |(steps, checks)| {
            let n = cases.fetch_add(1, Ordering::SeqCst);
            handle.block_on(one_case(&t, n, steps, checks));
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
