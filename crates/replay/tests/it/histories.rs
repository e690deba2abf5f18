//! Realistic histories decided by the domain: tenants and their policies (roles, grants,
//! assignments, groups), appended one command at a time with a clock that moves a minute per
//! command, and random ones for property tests.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use custodian_domain::policy::event::{AGGREGATE, STREAM_ID};
use custodian_domain::policy::{
    self, Effect, Permission, Policy, PolicyCommand, Resource, Scope, Stamp, Subject, Window,
};
use custodian_domain::tenant::{self, Plan, Tenant, TenantCommand};
use custodian_domain::{NewEvent, Timestamp};
use custodian_store::{EventStore, ExpectedVersion};
use custodian_testkit::sample::decided;
use custodian_testkit::stream;
use proptest::prelude::*;

/// The tenants of the histories.
pub const TENANTS: &[&str] = &["acme", "globex"];
const PRINCIPALS: &[&str] = &["user_alice", "user_bob", "key_ci"];
const ROLES: &[&str] = &["ops", "audit", "viewer", "developer"];
const CUSTOM_ROLES: &[&str] = &["ops", "audit"];
const PERMISSIONS: &[&str] = &["project:read", "project:write", "project:*", "key:read"];
const RESOURCES: &[&str] = &["project/a", "project/b", "key/k1"];
const GROUPS: &[&str] = &["prod", "dev"];

/// When the first command of a history is decided.
pub const START: &str = "2026-03-02T08:00:00Z";

/// The log, the domain's own fold of every stream appended, and a clock.
pub struct World {
    pub store: Arc<dyn EventStore>,
    pub clock: Timestamp,
    tenants: HashMap<usize, (Option<Tenant>, u64)>,
    policies: HashMap<usize, Policy>,
    grants: usize,
    assignments: usize,
}

impl World {
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self {
            store,
            clock: Timestamp::parse(START).unwrap(),
            tenants: HashMap::new(),
            policies: HashMap::new(),
            grants: 0,
            assignments: 0,
        }
    }

    pub async fn head(&self) -> u64 {
        self.store.head().await.unwrap().position
    }

    fn tick(&mut self) {
        self.clock = self.clock.plus(time::Duration::minutes(1));
    }

    /// Decides `command` on tenant `t` and appends its events; returns how many (0 if refused).
    pub async fn tenant(&mut self, t: usize, command: TenantCommand) -> usize {
        self.tick();
        let (state, version) = self.tenants.entry(t).or_insert((None, 0));
        let Ok(events) = tenant::decide(state.as_ref(), command) else {
            return 0;
        };
        if events.is_empty() {
            return 0;
        }
        let new: Vec<NewEvent> = events.iter().map(|e| decided(e, self.clock)).collect();
        self.store
            .append(
                &stream(&format!("_system/tenant/tnt_{t}")),
                ExpectedVersion::Exact(*version),
                new,
            )
            .await
            .unwrap();
        for e in &events {
            *state = tenant::evolve(state.take(), e);
            *version += 1;
        }
        events.len()
    }

    /// Decides `command` on tenant `t`'s policy and appends its events; returns their
    /// positions (none if refused).
    pub async fn policy(&mut self, t: usize, command: PolicyCommand) -> Vec<u64> {
        self.tick();
        let next = self.head().await + 1;
        let policy = self.policies.entry(t).or_default();
        let Ok(events) = policy::decide(policy, command) else {
            return Vec::new();
        };
        if events.is_empty() {
            return Vec::new();
        }
        let version = policy.version;
        let mut positions = Vec::new();
        for (i, e) in events.iter().enumerate() {
            let position = next + i as u64;
            policy.apply(
                Stamp {
                    position,
                    at: self.clock,
                },
                e,
            );
            positions.push(position);
        }
        let new: Vec<NewEvent> = events.iter().map(|e| decided(e, self.clock)).collect();
        let outcome = self
            .store
            .append(
                &stream(&format!("{}/{AGGREGATE}/{STREAM_ID}", TENANTS[t])),
                ExpectedVersion::Exact(version),
                new,
            )
            .await
            .unwrap();
        assert_eq!(outcome.first_position, next, "nothing else appends");
        positions
    }

    /// Runs one generated step.
    pub async fn step(&mut self, step: &Step) -> bool {
        match step.clone() {
            Step::Tenant(t, command) => self.tenant(t, command).await > 0,
            Step::Policy(t, op) => {
                if !self.policies.contains_key(&t) {
                    self.policy(t, catalog()).await;
                }
                let command = self.command(op);
                !self.policy(t, command).await.is_empty()
            }
        }
    }

    fn command(&mut self, op: Op) -> PolicyCommand {
        match op {
            Op::CreateRole(r, parent) => PolicyCommand::CreateRole {
                name: CUSTOM_ROLES[r].to_owned(),
                description: None,
                parents: parent.map(|p| ROLES[p].to_owned()).into_iter().collect(),
            },
            Op::DeleteRole(r) => PolicyCommand::DeleteRole {
                name: CUSTOM_ROLES[r].to_owned(),
            },
            Op::Grant {
                to_role,
                subject,
                permission,
                on,
            } => {
                self.grants += 1;
                grant(
                    &format!("grant_{:03}", self.grants),
                    if to_role {
                        Subject::Role(ROLES[subject % ROLES.len()].to_owned())
                    } else {
                        Subject::Principal(PRINCIPALS[subject % PRINCIPALS.len()].to_owned())
                    },
                    PERMISSIONS[permission],
                    on.map(|r| Scope::Resource(resource(RESOURCES[r]))),
                )
            }
            Op::Revoke(i) => PolicyCommand::Revoke {
                id: format!("grant_{:03}", 1 + i % self.grants.max(1)),
            },
            Op::Assign { principal, role } => {
                self.assignments += 1;
                assign(
                    &format!("asg_{:03}", self.assignments),
                    PRINCIPALS[principal],
                    ROLES[role],
                )
            }
            Op::Unassign(i) => PolicyCommand::Unassign {
                id: format!("asg_{:03}", 1 + i % self.assignments.max(1)),
            },
            Op::AddMember(g, r) => PolicyCommand::AddMember {
                group: GROUPS[g].to_owned(),
                resource: resource(RESOURCES[r]),
            },
            Op::RemoveMember(g, r) => PolicyCommand::RemoveMember {
                group: GROUPS[g].to_owned(),
                resource: resource(RESOURCES[r]),
            },
        }
    }
}

pub fn resource(s: &str) -> Resource {
    Resource::parse(s).unwrap()
}

/// The tenants' own resource types.
pub fn catalog() -> PolicyCommand {
    PolicyCommand::SetCatalog {
        resource_types: BTreeMap::from([(
            "project".to_owned(),
            ["read", "write", "deploy"]
                .into_iter()
                .map(str::to_owned)
                .collect::<BTreeSet<_>>(),
        )]),
    }
}

pub fn grant(id: &str, subject: Subject, permission: &str, on: Option<Scope>) -> PolicyCommand {
    PolicyCommand::Grant {
        id: id.to_owned(),
        subject,
        permission: Permission::parse(permission).unwrap(),
        on,
        effect: Effect::Allow,
        window: Window::default(),
        conditions: None,
        granted_by: "root".to_owned(),
    }
}

pub fn assign(id: &str, principal: &str, role: &str) -> PolicyCommand {
    PolicyCommand::Assign {
        id: id.to_owned(),
        principal: principal.to_owned(),
        role: role.to_owned(),
        on: None,
        window: Window::default(),
        assigned_by: "root".to_owned(),
        migrated_from: None,
    }
}

/// A policy change, by indexes into the constants above.
#[derive(Debug, Clone)]
pub enum Op {
    CreateRole(usize, Option<usize>),
    DeleteRole(usize),
    Grant {
        to_role: bool,
        subject: usize,
        permission: usize,
        on: Option<usize>,
    },
    Revoke(usize),
    Assign {
        principal: usize,
        role: usize,
    },
    Unassign(usize),
    AddMember(usize, usize),
    RemoveMember(usize, usize),
}

/// One command of a history.
#[derive(Debug, Clone)]
pub enum Step {
    Tenant(usize, TenantCommand),
    Policy(usize, Op),
}

fn tenant_command(t: usize) -> impl Strategy<Value = TenantCommand> {
    let plan = prop_oneof![Just(Plan::Free), Just(Plan::Team), Just(Plan::Enterprise)];
    prop_oneof![
        plan.clone().prop_map(move |plan| TenantCommand::Create {
            name: format!("Tenant {t}"),
            slug: format!("tenant-{t}"),
            plan,
        }),
        "[A-Za-z ]{1,12}".prop_map(|name| TenantCommand::Rename { name }),
        plan.prop_map(|plan| TenantCommand::ChangePlan { plan }),
        "[a-z ]{1,10}".prop_map(|reason| TenantCommand::Suspend { reason }),
        Just(TenantCommand::Reactivate),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..CUSTOM_ROLES.len(), proptest::option::of(0..ROLES.len()))
            .prop_map(|(r, p)| Op::CreateRole(r, p)),
        1 => (0..CUSTOM_ROLES.len()).prop_map(Op::DeleteRole),
        5 => (any::<bool>(), 0..4usize, 0..PERMISSIONS.len(), proptest::option::of(0..RESOURCES.len()))
            .prop_map(|(to_role, subject, permission, on)| Op::Grant { to_role, subject, permission, on }),
        2 => (0..16usize).prop_map(Op::Revoke),
        3 => (0..PRINCIPALS.len(), 0..ROLES.len())
            .prop_map(|(principal, role)| Op::Assign { principal, role }),
        1 => (0..16usize).prop_map(Op::Unassign),
        2 => (0..GROUPS.len(), 0..RESOURCES.len()).prop_map(|(g, r)| Op::AddMember(g, r)),
        1 => (0..GROUPS.len(), 0..RESOURCES.len()).prop_map(|(g, r)| Op::RemoveMember(g, r)),
    ]
}

/// A random step on one of the tenants.
pub fn step() -> impl Strategy<Value = Step> {
    (0..TENANTS.len()).prop_flat_map(|t| {
        prop_oneof![
            1 => tenant_command(t).prop_map(move |c| Step::Tenant(t, c)),
            3 => op().prop_map(move |o| Step::Policy(t, o)),
        ]
    })
}
