//! Authorization checks: Custodian's policy decision point against casbin and Cedar on one
//! generated workload, in the same process, on one thread.
//!
//! **The workload** (seeded, the same in every run): 10 tenants, each with 1,000 users, 20 roles
//! in two four-level hierarchies (1, 2, 3 and 4 roles per level; each role above the lowest level
//! inherits two roles of the level below, so hierarchies are diamonds, not chains), a catalog of
//! 40 resource types with 8 actions each, 1,000 resources per type, about 1,500 tenant-wide role
//! assignments (every user one role, half of them a second), and 10,000 grants: every tenth scoped
//! to one resource, the rest tenant-wide; about 1 % denies (a fifth of them to roles), and of the
//! allows 2 % to roles, the rest to users. In all 10,000 users, 200 roles and 100,000 grants. Every
//! grant names one concrete permission, so the three engines can hold exactly the same policy.
//!
//! **The checks**: 100,000 (10,000 per tenant, shuffled together), each "may this user do
//! `type:action` on `type/id`?", drawn to exercise every path: 30 % should be allowed through an
//! inherited role, 20 % through a direct grant, 20 % target a resource-scoped grant (three in four
//! on its resource, one in four on another resource of the type), 20 % are random (mostly
//! denied), and 10 % aim at a deny grant, so deny-overrides decides them.
//!
//! **The engines**, each holding one instance per tenant (a tenant's checks go to its instance):
//! - Custodian: a `custodian_domain::policy::Policy` folded from the tenant's policy events
//!   (catalog, roles with parents, assignments, grants: the events `decide` made from the
//!   corresponding commands), asked with `evaluate` (`explain` off, no source address, as of now).
//!   The answer includes the reason in words and the provenance chain.
//! - casbin (casbin-rs, default features, the plain `Enforcer`, no cache): RBAC with domains,
//!   `g = _, _, _` holding both user → role assignments and role → parent inheritance in the
//!   tenant's domain, policies `p = sub, dom, obj, act, eft` where `obj` is `*` for a tenant-wide
//!   grant and `type/id` for a resource-scoped one, `act` is the permission, and deny-overrides as
//!   the effect. The matcher tests the cheap, selective comparisons first, as casbin's docs advise.
//!   Loaded from the policy as CSV text through `StringAdapter`.
//! - Cedar (`cedar-policy`, default features): users are entities whose parents are their
//!   assigned roles, roles are entities whose parents are the roles they inherit; one policy per
//!   grant, `permit(principal in Role::"r", action == Action::"type07:read", resource)`, with
//!   `principal == User::"u"` for a grant to a user, `resource == Resource::"type07/r0042"` for a
//!   resource-scoped one and `forbid` for a deny; one `Authorizer`, a `PolicySet` and `Entities`
//!   per tenant, no schema.
//!
//! One instance per tenant is the most favourable arrangement for the peers: casbin and Cedar
//! test every policy of the instance on every check, so one casbin enforcer or one Cedar policy
//! set for all ten tenants would scan ten times as many. **Load** is the time from each engine's
//! own input form (the events; the CSV text; the policy text and the entities' ids and parents) to
//! an engine ready to answer, for all tenants.
//!
//! **Agreement**: before measuring, the first `BENCH_SAMPLE` checks (default 2,000) go to every
//! engine, and each peer's verdict is compared with Custodian's; the table gives the count. The
//! policies are the same, so every verdict should agree; a disagreement is printed with its check.
//!
//! **Measurement**: each engine answers the checks in the same order, from its own cursor, for
//! `BENCH_SECS` seconds in all (default 10), in 5 rounds of one slice each, the engines' order
//! rotating every round, so that bursts of load from elsewhere on the machine fall on all alike;
//! the table gives the smallest and largest of each engine's per-round medians, to show how much
//! such bursts moved them.
//! Each check is timed alone: the loop reads the clock once after every check, and a check's
//! latency is the time since the previous reading, so the figures include one clock read and the
//! loop's bookkeeping (the "harness floor" printed under the table: the same loop with no check,
//! about 30 ns). checks/s is the checks answered over the time spent answering them. The inputs
//! are prepared before the run as far as each engine's interface lets them be reused: Custodian
//! gets a parsed `Permission` and `Resource`, Cedar a built `Request`, casbin the four strings it
//! takes (it converts them to its script engine's values on every call). One more row, "Custodian,
//! warm caches", takes its turns like the others but goes through only the first 1,000 checks
//! again and again: the ten tenants' policies take some 90 MB, far more than the processor's caches
//! hold, so the difference between the two Custodian rows is the price of reaching memory.
//!
//! Run with `cargo bench -p custodian-app --features bench-peers --bench authz`.
//! `BENCH_PART=inprocess` runs the in-process part alone (the only part so far).
//! `BENCH_PEERS=casbin`, `cedar` or `none` limits the peers loaded and measured (for profiling
//! Custodian alone: `BENCH_PEERS=none`). Any setup error or engine error ends the run with a
//! non-zero exit status.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::error::Error;
use std::hint::black_box;
use std::process::ExitCode;
use std::str::FromStr as _;
use std::time::{Duration, Instant};

use casbin::{CoreApi as _, DefaultModel, Enforcer, StringAdapter};
use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicySet, Request,
};
use custodian_domain::event::Timestamp;
use custodian_domain::policy::{
    AsOf, Check, Effect, Permission, Policy, PolicyCommand, PolicyEvent, Resource, Scope, Stamp,
    Subject, Target, Verdict, Window, decide, evaluate,
};
use custodian_testkit::table::{Table, thousands};
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};

type BoxError = Box<dyn Error + Send + Sync>;
type Result<T> = std::result::Result<T, BoxError>;

const SEED: u64 = 0x00c0_57d1_a2e5;
const TENANTS: usize = 10;
const USERS_PER_TENANT: usize = 1_000;
/// Roles per level of one hierarchy, from the most powerful down.
const LEVELS: [usize; 4] = [1, 2, 3, 4];
const HIERARCHIES_PER_TENANT: usize = 2;
const GRANTS_PER_TENANT: usize = 10_000;
/// One grant in this many is scoped to one resource.
const SCOPED_EVERY: usize = 10;
const DENY_SHARE: f64 = 0.01;
/// The share of allow grants made to a role rather than a user.
const ROLE_GRANT_SHARE: f64 = 0.02;
/// The share of deny grants made to a role rather than a user.
const ROLE_DENY_SHARE: f64 = 0.2;
const SECOND_ROLE_SHARE: f64 = 0.5;
/// Resource types of each tenant's catalog, `type00` to `type39`.
const TYPES: usize = 40;
const ACTIONS: [&str; 8] = [
    "create", "read", "update", "delete", "share", "export", "approve", "archive",
];
const RESOURCES_PER_TYPE: usize = 1_000;
const CHECKS_PER_TENANT: usize = 10_000;
/// The engines take turns in this many rounds.
const ROUNDS: usize = 5;
/// The checks Custodian's warm-cache run goes through over and over.
const WARM_CHECKS: usize = 1_000;
/// Checks between two looks at the slice's clock.
const BATCH: usize = 32;

/// The parts of this benchmark; `BENCH_PART` picks one, all run when it is unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// The engines called in the process.
    InProcess,
}

impl Part {
    const ALL: [Part; 1] = [Part::InProcess];

    fn name(self) -> &'static str {
        match self {
            Part::InProcess => "inprocess",
        }
    }
}

struct Config {
    parts: Vec<Part>,
    /// Seconds of measurement per engine.
    secs: f64,
    /// Checks every engine answers for the agreement count.
    sample: usize,
    /// The peers measured beside Custodian.
    peers: Vec<Peer>,
}

/// An engine measured beside Custodian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Casbin,
    Cedar,
}

impl Peer {
    const ALL: [Peer; 2] = [Peer::Casbin, Peer::Cedar];

    fn name(self) -> &'static str {
        match self {
            Peer::Casbin => "casbin",
            Peer::Cedar => "cedar",
        }
    }
}

fn env_number(name: &str, default: f64) -> Result<f64> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n > 0.0)
            .ok_or_else(|| format!("{name} must be a positive number, not {v:?}").into()),
        Err(_) => Ok(default),
    }
}

fn config() -> Result<Config> {
    let parts = match std::env::var("BENCH_PART") {
        Ok(name) => vec![
            Part::ALL
                .into_iter()
                .find(|p| p.name() == name.trim())
                .ok_or_else(|| {
                    format!(
                        "BENCH_PART must be one of {}, not {name:?}",
                        Part::ALL.map(Part::name).join(", ")
                    )
                })?,
        ],
        Err(_) => Part::ALL.to_vec(),
    };
    Ok(Config {
        parts,
        secs: env_number("BENCH_SECS", 10.0)?,
        sample: env_number("BENCH_SAMPLE", 2_000.0)? as usize,
        peers: match std::env::var("BENCH_PEERS") {
            Ok(list) if list.trim() == "none" => Vec::new(),
            Ok(list) => list
                .split(',')
                .map(|name| {
                    Peer::ALL
                        .into_iter()
                        .find(|p| p.name() == name.trim())
                        .ok_or_else(|| {
                            format!("BENCH_PEERS lists casbin, cedar or none, not {name:?}")
                        })
                })
                .collect::<std::result::Result<_, _>>()?,
            Err(_) => Peer::ALL.to_vec(),
        },
    })
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("authz benchmark: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let config = config()?;
    for part in &config.parts {
        match part {
            Part::InProcess => in_process(&config)?,
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The workload, in no engine's terms.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Who {
    User(usize),
    Role(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Perm {
    resource_type: usize,
    action: usize,
}

impl Perm {
    fn text(self) -> String {
        format!("type{:02}:{}", self.resource_type, ACTIONS[self.action])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Res {
    resource_type: usize,
    id: usize,
}

impl Res {
    fn text(self) -> String {
        format!("type{:02}/r{:04}", self.resource_type, self.id)
    }
}

#[derive(Debug, Clone, Copy)]
struct GrantSpec {
    to: Who,
    perm: Perm,
    /// `None`: the whole tenant.
    on: Option<Res>,
    deny: bool,
}

struct RoleSpec {
    name: String,
    /// Indexes of the roles it inherits, all created before it.
    parents: Vec<usize>,
}

struct TenantSpec {
    name: String,
    /// In creation order: every role after its parents.
    roles: Vec<RoleSpec>,
    users: Vec<String>,
    /// (user, role), tenant-wide.
    assignments: Vec<(usize, usize)>,
    grants: Vec<GrantSpec>,
}

/// Why a check was drawn; the verdict is whatever the policy says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Inherited,
    Direct,
    ScopedHit,
    ScopedMiss,
    Random,
    DenyAimed,
}

impl Kind {
    fn words(self) -> &'static str {
        match self {
            Kind::Inherited => "a permission of an inherited role",
            Kind::Direct => "a direct tenant-wide grant",
            Kind::ScopedHit => "a resource-scoped grant, on its resource",
            Kind::ScopedMiss => "a resource-scoped grant, on another resource",
            Kind::Random => "random user, permission and resource",
            Kind::DenyAimed => "the subject and permission of a deny grant",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct CheckSpec {
    tenant: usize,
    user: usize,
    perm: Perm,
    on: Res,
    kind: Kind,
}

struct Workload {
    tenants: Vec<TenantSpec>,
    /// Shuffled across tenants.
    checks: Vec<CheckSpec>,
}

impl Workload {
    fn generate() -> Self {
        let mut rng = StdRng::seed_from_u64(SEED);
        let tenants: Vec<TenantSpec> = (0..TENANTS).map(|t| tenant(&mut rng, t)).collect();
        let mut checks: Vec<CheckSpec> = tenants
            .iter()
            .enumerate()
            .flat_map(|(t, spec)| checks_of(&mut rng, t, spec))
            .collect();
        checks.shuffle(&mut rng);
        Self { tenants, checks }
    }
}

fn random_perm(rng: &mut StdRng) -> Perm {
    Perm {
        resource_type: rng.gen_range(0..TYPES),
        action: rng.gen_range(0..ACTIONS.len()),
    }
}

fn random_res(rng: &mut StdRng, resource_type: usize) -> Res {
    Res {
        resource_type,
        id: rng.gen_range(0..RESOURCES_PER_TYPE),
    }
}

fn tenant(rng: &mut StdRng, t: usize) -> TenantSpec {
    let mut roles = Vec::new();
    for h in 0..HIERARCHIES_PER_TENANT {
        // Lowest level first, so that every parent exists before its children.
        let mut below: Vec<usize> = Vec::new();
        for (level, &count) in LEVELS.iter().enumerate().rev() {
            let mut here = Vec::new();
            for i in 0..count {
                let parents = if below.is_empty() {
                    Vec::new()
                } else {
                    vec![below[i], below[i + 1]]
                };
                here.push(roles.len());
                roles.push(RoleSpec {
                    name: format!("h{h}_level{level}_{i}"),
                    parents,
                });
            }
            below = here;
        }
    }
    let users: Vec<String> = (0..USERS_PER_TENANT)
        .map(|u| format!("user_{u:04}"))
        .collect();
    let mut assignments = Vec::new();
    for u in 0..users.len() {
        let first = rng.gen_range(0..roles.len());
        assignments.push((u, first));
        if rng.gen_bool(SECOND_ROLE_SHARE) {
            let second = rng.gen_range(0..roles.len());
            if second != first {
                assignments.push((u, second));
            }
        }
    }
    let mut seen: HashSet<(Who, Perm, Option<Res>)> = HashSet::new();
    let mut grants = Vec::with_capacity(GRANTS_PER_TENANT);
    while grants.len() < GRANTS_PER_TENANT {
        let deny = rng.gen_bool(DENY_SHARE);
        let to_role = rng.gen_bool(if deny {
            ROLE_DENY_SHARE
        } else {
            ROLE_GRANT_SHARE
        });
        let to = if to_role {
            Who::Role(rng.gen_range(0..roles.len()))
        } else {
            Who::User(rng.gen_range(0..users.len()))
        };
        let perm = random_perm(rng);
        let on = (grants.len() % SCOPED_EVERY == 0).then(|| random_res(rng, perm.resource_type));
        if seen.insert((to, perm, on)) {
            grants.push(GrantSpec { to, perm, on, deny });
        }
    }
    TenantSpec {
        name: format!("tenant{t:02}"),
        roles,
        users,
        assignments,
        grants,
    }
}

/// The roles each user holds, directly or by inheritance.
fn reached_roles(spec: &TenantSpec) -> Vec<BTreeSet<usize>> {
    let mut reached = vec![BTreeSet::new(); spec.users.len()];
    for &(u, r) in &spec.assignments {
        let mut stack = vec![r];
        while let Some(role) = stack.pop() {
            if reached[u].insert(role) {
                stack.extend(&spec.roles[role].parents);
            }
        }
    }
    reached
}

fn checks_of(rng: &mut StdRng, t: usize, spec: &TenantSpec) -> Vec<CheckSpec> {
    let reached = reached_roles(spec);
    let mut holders: Vec<Vec<usize>> = vec![Vec::new(); spec.roles.len()];
    for (u, roles) in reached.iter().enumerate() {
        for &r in roles {
            holders[r].push(u);
        }
    }
    let mut role_allows: Vec<Vec<Perm>> = vec![Vec::new(); spec.roles.len()];
    let mut user_allows: Vec<Vec<Perm>> = vec![Vec::new(); spec.users.len()];
    let mut scoped = Vec::new();
    let mut denies = Vec::new();
    for g in &spec.grants {
        match (g.deny, g.on, g.to) {
            (true, _, _) => denies.push(*g),
            (false, Some(_), _) => scoped.push(*g),
            (false, None, Who::Role(r)) => role_allows[r].push(g.perm),
            (false, None, Who::User(u)) => user_allows[u].push(g.perm),
        }
    }
    // A user holding the grant's subject: the user, or a holder of the role.
    let holder = |rng: &mut StdRng, to: Who| match to {
        Who::User(u) => Some(u),
        Who::Role(r) => holders[r].choose(rng).copied(),
    };
    let mut out = Vec::with_capacity(CHECKS_PER_TENANT);
    while out.len() < CHECKS_PER_TENANT {
        let roll = rng.gen_range(0..100);
        let check = match roll {
            0..30 => {
                let user = rng.gen_range(0..spec.users.len());
                // A role the user holds only because a role it was given inherits it.
                let assigned: Vec<usize> = spec
                    .assignments
                    .iter()
                    .filter(|(u, _)| *u == user)
                    .map(|(_, r)| *r)
                    .collect();
                let inherited: Vec<usize> = reached[user]
                    .iter()
                    .copied()
                    .filter(|r| !assigned.contains(r) && !role_allows[*r].is_empty())
                    .collect();
                inherited.choose(rng).and_then(|&r| {
                    let perm = *role_allows[r].choose(rng)?;
                    Some((
                        user,
                        perm,
                        random_res(rng, perm.resource_type),
                        Kind::Inherited,
                    ))
                })
            }
            30..50 => {
                let user = rng.gen_range(0..spec.users.len());
                user_allows[user].choose(rng).map(|&perm| {
                    (
                        user,
                        perm,
                        random_res(rng, perm.resource_type),
                        Kind::Direct,
                    )
                })
            }
            50..70 => {
                let g = *scoped.choose(rng).expect("every tenant has scoped grants");
                let on = g.on.expect("a scoped grant names its resource");
                holder(rng, g.to).map(|user| {
                    if rng.gen_bool(0.75) {
                        (user, g.perm, on, Kind::ScopedHit)
                    } else {
                        let other = Res {
                            id: (on.id + rng.gen_range(1..RESOURCES_PER_TYPE)) % RESOURCES_PER_TYPE,
                            ..on
                        };
                        (user, g.perm, other, Kind::ScopedMiss)
                    }
                })
            }
            70..90 => {
                let perm = random_perm(rng);
                Some((
                    rng.gen_range(0..spec.users.len()),
                    perm,
                    random_res(rng, perm.resource_type),
                    Kind::Random,
                ))
            }
            _ => {
                let g = *denies.choose(rng).expect("every tenant has denies");
                holder(rng, g.to).map(|user| {
                    let on =
                        g.on.unwrap_or_else(|| random_res(rng, g.perm.resource_type));
                    (user, g.perm, on, Kind::DenyAimed)
                })
            }
        };
        if let Some((user, perm, on, kind)) = check {
            out.push(CheckSpec {
                tenant: t,
                user,
                perm,
                on,
                kind,
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The engines.

/// An authorization engine loaded with the workload and holding the checks in its own form.
trait Engine {
    /// Whether prepared check `i` is allowed.
    fn allows(&self, i: usize) -> Result<bool>;
}

// Custodian ----------------------------------------------------------------------------------

struct CustodianInput {
    /// Each tenant's policy events, stamped.
    events: Vec<Vec<(Stamp, PolicyEvent)>>,
}

/// The events `decide` makes of the tenant's commands, each applied before the next is decided,
/// so that the workload is one the domain accepts.
fn custodian_input(workload: &Workload) -> Result<CustodianInput> {
    let base = Timestamp::parse("2026-01-01T00:00:00Z")?;
    let mut position = 0u64;
    let mut events = Vec::new();
    for spec in &workload.tenants {
        let mut commands = vec![PolicyCommand::SetCatalog {
            resource_types: (0..TYPES)
                .map(|t| {
                    let actions = ACTIONS.iter().map(|a| a.to_string()).collect();
                    (format!("type{t:02}"), actions)
                })
                .collect(),
        }];
        commands.extend(spec.roles.iter().map(|r| {
            PolicyCommand::CreateRole {
                name: r.name.clone(),
                description: None,
                parents: r
                    .parents
                    .iter()
                    .map(|p| spec.roles[*p].name.clone())
                    .collect(),
            }
        }));
        commands.extend(spec.assignments.iter().enumerate().map(|(i, (u, r))| {
            PolicyCommand::Assign {
                id: format!("asg_{i:05}"),
                principal: spec.users[*u].clone(),
                role: spec.roles[*r].name.clone(),
                on: None,
                window: Window::default(),
                assigned_by: "user_admin".to_owned(),
                migrated_from: None,
            }
        }));
        for (i, g) in spec.grants.iter().enumerate() {
            commands.push(PolicyCommand::Grant {
                id: format!("grant_{i:05}"),
                subject: match g.to {
                    Who::User(u) => Subject::Principal(spec.users[u].clone()),
                    Who::Role(r) => Subject::Role(spec.roles[r].name.clone()),
                },
                permission: Permission::parse(&g.perm.text())?,
                on: g
                    .on
                    .map(|r| Resource::parse(&r.text()))
                    .transpose()?
                    .map(Scope::Resource),
                effect: if g.deny { Effect::Deny } else { Effect::Allow },
                window: Window::default(),
                conditions: None,
                granted_by: "user_admin".to_owned(),
            });
        }
        let mut policy = Policy::new();
        let mut stamped = Vec::new();
        for command in commands {
            for event in decide(&policy, command)? {
                position += 1;
                let at = Timestamp::from_datetime(
                    base.as_datetime() + time::Duration::milliseconds(position as i64),
                );
                let stamp = Stamp { position, at };
                policy.apply(stamp, &event);
                stamped.push((stamp, event));
            }
        }
        events.push(stamped);
    }
    Ok(CustodianInput { events })
}

struct CustodianCheck {
    tenant: usize,
    principal: String,
    permission: Permission,
    resource: Resource,
}

struct Custodian {
    policies: Vec<Policy>,
    checks: Vec<CustodianCheck>,
    as_of: AsOf,
}

impl Custodian {
    fn load(input: &CustodianInput) -> Vec<Policy> {
        input
            .events
            .iter()
            .map(|events| {
                let mut policy = Policy::new();
                for (stamp, event) in events {
                    policy.apply(*stamp, event);
                }
                policy
            })
            .collect()
    }

    fn prepare(policies: Vec<Policy>, workload: &Workload) -> Result<Self> {
        let checks = workload
            .checks
            .iter()
            .map(|c| {
                Ok(CustodianCheck {
                    tenant: c.tenant,
                    principal: workload.tenants[c.tenant].users[c.user].clone(),
                    permission: Permission::parse(&c.perm.text())?,
                    resource: Resource::parse(&c.on.text())?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            policies,
            checks,
            as_of: AsOf::now(Timestamp::parse("2026-06-01T12:00:00Z")?),
        })
    }
}

impl Engine for Custodian {
    fn allows(&self, i: usize) -> Result<bool> {
        let c = &self.checks[i];
        let decision = evaluate(
            &self.policies[c.tenant],
            &Check {
                principal: &c.principal,
                permission: &c.permission,
                target: Target::Resource(&c.resource),
                ip: None,
                as_of: self.as_of,
                explain: false,
            },
        );
        Ok(black_box(&decision).verdict == Verdict::Allow)
    }
}

// casbin -------------------------------------------------------------------------------------

/// RBAC with domains and deny-overrides. The matcher puts the most selective comparisons first:
/// casbin evaluates it for every policy line, stopping each at the first false term.
const CASBIN_MODEL: &str = r#"
[request_definition]
r = sub, dom, obj, act

[policy_definition]
p = sub, dom, obj, act, eft

[role_definition]
g = _, _, _

[policy_effect]
e = some(where (p.eft == allow)) && !some(where (p.eft == deny))

[matchers]
m = r.act == p.act && (p.obj == "*" || r.obj == p.obj) && r.dom == p.dom && g(r.sub, p.sub, r.dom)
"#;

/// Each tenant's policy as casbin's CSV lines.
fn casbin_input(workload: &Workload) -> Vec<String> {
    workload
        .tenants
        .iter()
        .map(|spec| {
            let dom = &spec.name;
            let mut lines = Vec::new();
            for role in &spec.roles {
                for p in &role.parents {
                    lines.push(format!("g, {}, {}, {dom}", role.name, spec.roles[*p].name));
                }
            }
            for (u, r) in &spec.assignments {
                lines.push(format!(
                    "g, {}, {}, {dom}",
                    spec.users[*u], spec.roles[*r].name
                ));
            }
            for g in &spec.grants {
                let sub = match g.to {
                    Who::User(u) => &spec.users[u],
                    Who::Role(r) => &spec.roles[r].name,
                };
                let obj = g.on.map_or_else(|| "*".to_owned(), Res::text);
                let eft = if g.deny { "deny" } else { "allow" };
                lines.push(format!("p, {sub}, {dom}, {obj}, {}, {eft}", g.perm.text()));
            }
            lines.join("\n")
        })
        .collect()
}

struct CasbinCheck {
    tenant: usize,
    sub: String,
    obj: String,
    act: String,
}

struct Casbin {
    enforcers: Vec<Enforcer>,
    domains: Vec<String>,
    checks: Vec<CasbinCheck>,
}

impl Casbin {
    fn load(input: &[String]) -> Result<Vec<Enforcer>> {
        // casbin's loading interface is async; a single-threaded runtime runs it on this thread.
        let runtime = tokio::runtime::Builder::new_current_thread().build()?;
        runtime.block_on(async {
            let mut enforcers = Vec::new();
            for text in input {
                let model = DefaultModel::from_str(CASBIN_MODEL).await?;
                enforcers.push(Enforcer::new(model, StringAdapter::new(text)).await?);
            }
            Ok(enforcers)
        })
    }

    fn prepare(enforcers: Vec<Enforcer>, workload: &Workload) -> Self {
        let checks = workload
            .checks
            .iter()
            .map(|c| CasbinCheck {
                tenant: c.tenant,
                sub: workload.tenants[c.tenant].users[c.user].clone(),
                obj: c.on.text(),
                act: c.perm.text(),
            })
            .collect();
        Self {
            enforcers,
            domains: workload.tenants.iter().map(|t| t.name.clone()).collect(),
            checks,
        }
    }
}

impl Engine for Casbin {
    fn allows(&self, i: usize) -> Result<bool> {
        let c = &self.checks[i];
        Ok(self.enforcers[c.tenant].enforce((
            c.sub.as_str(),
            self.domains[c.tenant].as_str(),
            c.obj.as_str(),
            c.act.as_str(),
        ))?)
    }
}

// Cedar --------------------------------------------------------------------------------------

struct CedarInput {
    /// Each tenant's policies as Cedar text.
    policies: Vec<String>,
    /// Each tenant's entities: type, id and parents (roles).
    entities: Vec<Vec<(&'static str, String, Vec<String>)>>,
}

fn cedar_input(workload: &Workload) -> CedarInput {
    let quote = |s: &str| format!("{s:?}");
    let mut policies = Vec::new();
    let mut entities = Vec::new();
    for spec in &workload.tenants {
        let mut text = String::new();
        for g in &spec.grants {
            let principal = match g.to {
                Who::User(u) => format!("principal == User::{}", quote(&spec.users[u])),
                Who::Role(r) => format!("principal in Role::{}", quote(&spec.roles[r].name)),
            };
            let resource = g.on.map_or_else(
                || "resource".to_owned(),
                |r| format!("resource == Resource::{}", quote(&r.text())),
            );
            text.push_str(&format!(
                "{}({principal}, action == Action::{}, {resource});\n",
                if g.deny { "forbid" } else { "permit" },
                quote(&g.perm.text()),
            ));
        }
        policies.push(text);
        let mut parents: Vec<Vec<String>> = vec![Vec::new(); spec.users.len()];
        for (u, r) in &spec.assignments {
            parents[*u].push(spec.roles[*r].name.clone());
        }
        let mut list: Vec<(&'static str, String, Vec<String>)> = spec
            .roles
            .iter()
            .map(|r| {
                let ps = r
                    .parents
                    .iter()
                    .map(|p| spec.roles[*p].name.clone())
                    .collect();
                ("Role", r.name.clone(), ps)
            })
            .collect();
        list.extend(
            spec.users
                .iter()
                .zip(parents)
                .map(|(u, ps)| ("User", u.clone(), ps)),
        );
        entities.push(list);
    }
    CedarInput { policies, entities }
}

fn cedar_uid(entity_type: &str, id: &str) -> Result<EntityUid> {
    Ok(EntityUid::from_type_name_and_id(
        EntityTypeName::from_str(entity_type)?,
        EntityId::new(id),
    ))
}

struct Cedar {
    authorizer: Authorizer,
    tenants: Vec<(PolicySet, Entities)>,
    checks: Vec<(usize, Request)>,
}

impl Cedar {
    fn load(input: &CedarInput) -> Result<Vec<(PolicySet, Entities)>> {
        input
            .policies
            .iter()
            .zip(&input.entities)
            .map(|(text, list)| {
                let policies = PolicySet::from_str(text)?;
                let mut entities = Vec::with_capacity(list.len());
                for (entity_type, id, parents) in list {
                    let parents = parents
                        .iter()
                        .map(|p| cedar_uid("Role", p))
                        .collect::<Result<HashSet<_>>>()?;
                    entities.push(Entity::new_no_attrs(cedar_uid(entity_type, id)?, parents));
                }
                Ok((policies, Entities::from_entities(entities, None)?))
            })
            .collect()
    }

    fn prepare(tenants: Vec<(PolicySet, Entities)>, workload: &Workload) -> Result<Self> {
        let checks = workload
            .checks
            .iter()
            .map(|c| {
                let request = Request::new(
                    cedar_uid("User", &workload.tenants[c.tenant].users[c.user])?,
                    cedar_uid("Action", &c.perm.text())?,
                    cedar_uid("Resource", &c.on.text())?,
                    Context::empty(),
                    None,
                )?;
                Ok((c.tenant, request))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            authorizer: Authorizer::new(),
            tenants,
            checks,
        })
    }
}

impl Engine for Cedar {
    fn allows(&self, i: usize) -> Result<bool> {
        let (tenant, request) = &self.checks[i];
        let (policies, entities) = &self.tenants[*tenant];
        let response = self.authorizer.is_authorized(request, policies, entities);
        if let Some(e) = response.diagnostics().errors().next() {
            return Err(format!("Cedar could not evaluate check {i}: {e}").into());
        }
        Ok(black_box(&response).decision() == cedar_policy::Decision::Allow)
    }
}

// ---------------------------------------------------------------------------------------------
// Part 1: in process.

/// One engine's measurement, summed over its slices.
struct Run<'e> {
    engine: &'e dyn Engine,
    label: &'static str,
    load: Duration,
    /// The checks it goes through, over and over: the first `span` of the list.
    span: usize,
    /// Whether it is a peer, compared with Custodian.
    peer: bool,
    /// (checks compared, checks that agreed with Custodian).
    agreement: Option<(usize, usize)>,
    latencies: Vec<Duration>,
    /// Each slice's median, in microseconds.
    slice_p50: Vec<f64>,
    busy: Duration,
    /// Where the engine is in the list of checks.
    cursor: usize,
}

impl<'e> Run<'e> {
    fn new(engine: &'e dyn Engine, label: &'static str, load: Duration, span: usize) -> Self {
        Self {
            engine,
            label,
            load,
            span,
            peer: false,
            agreement: None,
            latencies: Vec::new(),
            slice_p50: Vec::new(),
            busy: Duration::ZERO,
            cursor: 0,
        }
    }

    fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.busy.as_secs_f64()
    }

    fn percentile_us(&self, p: f64) -> f64 {
        percentile_us(&self.latencies, p)
    }
}

/// The nearest-rank percentile `p` of `latencies`, in microseconds.
fn percentile_us(latencies: &[Duration], p: f64) -> f64 {
    custodian_testkit::table::percentile_ms(latencies, p) * 1000.0
}

/// Answers checks for about `budget`, from the run's cursor on, each timed alone.
fn slice(run: &mut Run<'_>, budget: Duration) -> Result<()> {
    let first = run.latencies.len();
    let start = Instant::now();
    let mut last = start;
    let mut cursor = run.cursor;
    while last.duration_since(start) < budget {
        for _ in 0..BATCH {
            black_box(run.engine.allows(cursor)?);
            let now = Instant::now();
            run.latencies.push(now.duration_since(last));
            last = now;
            cursor = (cursor + 1) % run.span;
        }
    }
    run.busy += last.duration_since(start);
    run.cursor = cursor;
    let p50 = percentile_us(&run.latencies[first..], 50.0);
    run.slice_p50.push(p50);
    Ok(())
}

/// The loop of [`slice`] with nothing to check: the clock read and bookkeeping in every figure.
fn harness_floor() -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(1_000_000);
    let mut last = Instant::now();
    for i in 0..1_000_000u32 {
        black_box(i);
        let now = Instant::now();
        latencies.push(now.duration_since(last));
        last = now;
    }
    latencies
}

fn timed<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<(T, Duration)> {
    let started = Instant::now();
    let out = f().map_err(|e| format!("{what}: {e}"))?;
    let took = started.elapsed();
    eprintln!("{what}: {:.2} s", took.as_secs_f64());
    Ok((out, took))
}

fn in_process(config: &Config) -> Result<()> {
    let started = Instant::now();
    let workload = Workload::generate();
    let grants: usize = workload.tenants.iter().map(|t| t.grants.len()).sum();
    let scoped: usize = workload
        .tenants
        .iter()
        .flat_map(|t| &t.grants)
        .filter(|g| g.on.is_some())
        .count();
    let denies: usize = workload
        .tenants
        .iter()
        .flat_map(|t| &t.grants)
        .filter(|g| g.deny)
        .count();
    let to_roles: usize = workload
        .tenants
        .iter()
        .flat_map(|t| &t.grants)
        .filter(|g| matches!(g.to, Who::Role(_)))
        .count();
    let assignments: usize = workload.tenants.iter().map(|t| t.assignments.len()).sum();
    let users: usize = workload.tenants.iter().map(|t| t.users.len()).sum();
    let roles: usize = workload.tenants.iter().map(|t| t.roles.len()).sum();
    eprintln!(
        "authz benchmark, in process: {TENANTS} tenants, {} users, {roles} roles, {} assignments, {} grants ({} resource-scoped, {} denies, {} to roles), {} checks; {} s per engine in {ROUNDS} rounds; load average {}",
        thousands(users as u64),
        thousands(assignments as u64),
        thousands(grants as u64),
        thousands(scoped as u64),
        thousands(denies as u64),
        thousands(to_roles as u64),
        thousands(workload.checks.len() as u64),
        config.secs,
        load_average(),
    );

    let custodian_in = custodian_input(&workload)?;
    let events: usize = custodian_in.events.iter().map(Vec::len).sum();
    let casbin_in = config
        .peers
        .contains(&Peer::Casbin)
        .then(|| casbin_input(&workload));
    let cedar_in = config
        .peers
        .contains(&Peer::Cedar)
        .then(|| cedar_input(&workload));
    eprintln!(
        "inputs ready in {:.1} s: {} policy events",
        started.elapsed().as_secs_f64(),
        thousands(events as u64),
    );

    let (policies, custodian_load) = timed("Custodian load (fold of the events)", || {
        Ok(Custodian::load(&custodian_in))
    })?;
    let custodian = Custodian::prepare(policies, &workload)?;
    let all = workload.checks.len();
    let casbin = match &casbin_in {
        Some(input) => {
            let (enforcers, load) =
                timed("casbin load (model and CSV policy)", || Casbin::load(input))?;
            Some((Casbin::prepare(enforcers, &workload), load))
        }
        None => None,
    };
    let cedar = match &cedar_in {
        Some(input) => {
            let (tenants, load) = timed("Cedar load (policy text and entities)", || {
                Cedar::load(input)
            })?;
            Some((Cedar::prepare(tenants, &workload)?, load))
        }
        None => None,
    };
    drop((custodian_in, casbin_in, cedar_in));
    let mut runs = vec![Run::new(&custodian, "Custodian", custodian_load, all)];
    if let Some((casbin, load)) = &casbin {
        runs.push(Run::new(casbin, "casbin", *load, all));
    }
    if let Some((cedar, load)) = &cedar {
        runs.push(Run::new(cedar, "Cedar", *load, all));
    }
    for run in runs.iter_mut().skip(1) {
        run.peer = true;
    }
    runs.push(Run::new(
        &custodian,
        "Custodian, warm caches",
        custodian_load,
        WARM_CHECKS.min(all),
    ));

    // Custodian's verdicts on every check, for the mix; the sample for the agreement.
    let verdicts = (0..all)
        .map(|i| custodian.allows(i))
        .collect::<Result<Vec<bool>>>()?;
    let sample = config.sample.min(all);
    for run in runs.iter_mut().filter(|r| r.peer) {
        let mut agreed = 0;
        let mut shown = 0;
        for (i, expected) in verdicts.iter().enumerate().take(sample) {
            let verdict = run.engine.allows(i)?;
            if verdict == *expected {
                agreed += 1;
            } else if shown < 5 {
                shown += 1;
                let c = &workload.checks[i];
                eprintln!(
                    "{} disagrees on check {i} ({:?}): {} {} {} in {}: Custodian {}, {} {}",
                    run.label,
                    c.kind,
                    workload.tenants[c.tenant].users[c.user],
                    c.perm.text(),
                    c.on.text(),
                    workload.tenants[c.tenant].name,
                    word(*expected),
                    run.label,
                    word(verdict),
                );
            }
        }
        eprintln!(
            "{}: {agreed} of {sample} verdicts agree with Custodian's",
            run.label
        );
        run.agreement = Some((sample, agreed));
    }

    let slice_budget = Duration::from_secs_f64(config.secs / ROUNDS as f64);
    for round in 0..ROUNDS {
        let mut progress = Vec::new();
        let n = runs.len();
        for step in 0..n {
            let run = &mut runs[(step + round) % n];
            let (checks, busy) = (run.latencies.len(), run.busy);
            slice(run, slice_budget)?;
            progress.push(format!(
                "{} {:.0}/s p50 {} µs",
                run.label,
                (run.latencies.len() - checks) as f64 / (run.busy - busy).as_secs_f64(),
                run.slice_p50
                    .last()
                    .copied()
                    .map_or_else(String::new, significant),
            ));
        }
        eprintln!("round {}/{ROUNDS}: {}", round + 1, progress.join(", "));
    }
    let floor = harness_floor();
    eprintln!(
        "done in {:.0} s; load average {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );

    println!();
    print_in_process_table(&runs, &workload, &verdicts, &floor, config);
    Ok(())
}

fn word(allowed: bool) -> &'static str {
    if allowed { "allow" } else { "deny" }
}

fn print_in_process_table(
    runs: &[Run],
    workload: &Workload,
    verdicts: &[bool],
    floor: &[Duration],
    config: &Config,
) {
    println!(
        "Authorization checks in process, one thread: {TENANTS} tenants, {} users, {} roles in four-level hierarchies, {} grants (10 % resource-scoped), each engine with one instance per tenant",
        thousands((TENANTS * USERS_PER_TENANT) as u64),
        TENANTS * HIERARCHIES_PER_TENANT * LEVELS.iter().sum::<usize>(),
        thousands((TENANTS * GRANTS_PER_TENANT) as u64),
    );
    println!();
    let mut table = Table::new([
        "engine",
        "load s",
        "checks timed",
        "checks/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "rounds' p50 µs",
        "checks/s ratio to Custodian",
        "verdicts agreeing with Custodian",
    ]);
    let base = runs.first().map_or(f64::NAN, Run::per_second);
    for (i, run) in runs.iter().enumerate() {
        let warm = run.span < workload.checks.len();
        table.row([
            run.label.to_owned(),
            if warm {
                "—".to_owned()
            } else {
                format!("{:.2}", run.load.as_secs_f64())
            },
            thousands(run.latencies.len() as u64),
            thousands(run.per_second().round() as u64),
            format!("{:.2}", run.percentile_us(50.0)),
            format!("{:.2}", run.percentile_us(99.0)),
            format!("{:.2}", run.percentile_us(99.9)),
            range(&run.slice_p50),
            significant(run.per_second() / base),
            match run.agreement {
                Some((n, agreed)) => {
                    format!("{} of {}", thousands(agreed as u64), thousands(n as u64))
                }
                None if i == 0 => "(reference)".to_owned(),
                None => "—".to_owned(),
            },
        ]);
    }
    print!("{table}");
    println!();

    let mut mix: BTreeMap<Kind, (usize, usize)> = BTreeMap::new();
    for (c, allowed) in workload.checks.iter().zip(verdicts) {
        let e = mix.entry(c.kind).or_default();
        if *allowed {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
    }
    let mut table = Table::new(["checks aimed at", "checks", "allowed", "denied"]);
    for (kind, (allowed, denied)) in &mix {
        table.row([
            kind.words().to_owned(),
            thousands((allowed + denied) as u64),
            thousands(*allowed as u64),
            thousands(*denied as u64),
        ]);
    }
    print!("{table}");
    println!();
    println!(
        "Harness floor (clock read and bookkeeping, included in every latency above): p50 {:.3} µs, p99 {:.3} µs.",
        percentile_us(floor, 50.0),
        percentile_us(floor, 99.0)
    );
    if let Some(custodian) = runs.first() {
        let median = custodian.percentile_us(50.0);
        let faster = runs
            .iter()
            .filter(|r| r.peer)
            .all(|r| r.per_second() < custodian.per_second() && r.percentile_us(50.0) > median);
        println!(
            "Target: Custodian's median at most 1 µs ({}: {median:.2} µs) and faster than both peers ({}).",
            if median <= 1.0 { "met" } else { "missed" },
            if faster { "met" } else { "missed" },
        );
    }
    println!(
        "\"Custodian, warm caches\" goes through the first {} checks over and over, so that its policy data stays in the processor's caches; the other rows go through all {} checks.",
        thousands(WARM_CHECKS as u64),
        thousands(workload.checks.len() as u64)
    );
    println!(
        "Each engine answered checks for {} s in {ROUNDS} rounds; agreement over the first {} checks.",
        config.secs,
        thousands(config.sample.min(workload.checks.len()) as u64)
    );
}

/// `1.23–4.56`, the smallest and largest of `values`, each with three significant digits.
fn range(values: &[f64]) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{}–{}", significant(min), significant(max))
}

/// `x` with three significant digits, without an exponent.
fn significant(x: f64) -> String {
    if !x.is_finite() || x == 0.0 {
        return format!("{x}");
    }
    let decimals = (2 - x.abs().log10().floor() as i32).max(0) as usize;
    format!("{x:.decimals$}")
}

/// The 1-, 5- and 15-minute load averages, or `?` where the system does not say.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".to_owned())
}
