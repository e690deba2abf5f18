//! The policy decision point, case by case: each line of a table builds a tenant's history through
//! `decide`, asks one question and says the answer and the chain of grants, assignments, roles and
//! groups that must explain it. A second table lists what `decide` refuses.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use custodian_domain::Timestamp;
use custodian_domain::policy::{
    AsOf, Check, Conditions, Decision, Effect, EndReason, Hours, MatchKind, Matched, Permission,
    Policy, PolicyCommand, PolicyError, PolicyEvent, Resource, Scope, Stamp, Subject, Target,
    TimeOfDay, Verdict, Window, decide, evaluate,
};

use Verdict::{Allow, Deny};

/// When every history starts.
const T0: &str = "2026-01-01T00:00:00Z";
/// The time of a check written `now`: after every history's last event.
const NOW: &str = "2026-03-01T12:00:00Z";

fn ts(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn permission(s: &str) -> Permission {
    Permission::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

fn resource(s: &str) -> Resource {
    Resource::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

/// `role:r` is a role; anything else a principal.
fn subject(s: &str) -> Subject {
    match s.strip_prefix("role:") {
        Some(r) => Subject::Role(r.to_owned()),
        None => Subject::Principal(s.to_owned()),
    }
}

/// `type:t`, `group:g`, or a resource `t/id`.
fn scope(s: &str) -> Scope {
    if let Some(t) = s.strip_prefix("type:") {
        Scope::ResourceType(t.to_owned())
    } else if let Some(g) = s.strip_prefix("group:") {
        Scope::Group(g.to_owned())
    } else {
        Scope::Resource(resource(s))
    }
}

// ---- commands ----

/// A grant to build: `allow(..)` or `deny(..)`, then its scope, window and conditions.
struct G(PolicyCommand);

fn grant(id: &str, to: &str, p: &str, effect: Effect) -> G {
    G(PolicyCommand::Grant {
        id: id.to_owned(),
        subject: subject(to),
        permission: permission(p),
        on: None,
        effect,
        window: Window::default(),
        conditions: None,
        granted_by: "root".to_owned(),
    })
}

fn allow(id: &str, to: &str, p: &str) -> G {
    grant(id, to, p, Effect::Allow)
}

fn deny(id: &str, to: &str, p: &str) -> G {
    grant(id, to, p, Effect::Deny)
}

impl G {
    fn on(mut self, s: &str) -> Self {
        if let PolicyCommand::Grant { on, .. } = &mut self.0 {
            *on = Some(scope(s));
        }
        self
    }

    fn from(mut self, t: &str) -> Self {
        if let PolicyCommand::Grant { window, .. } = &mut self.0 {
            window.valid_from = Some(ts(t));
        }
        self
    }

    fn until(mut self, t: &str) -> Self {
        if let PolicyCommand::Grant { window, .. } = &mut self.0 {
            window.valid_until = Some(ts(t));
        }
        self
    }

    fn hours(mut self, from: &str, until: &str, zone: &str) -> Self {
        if let PolicyCommand::Grant { conditions, .. } = &mut self.0 {
            conditions
                .get_or_insert_with(Conditions::default)
                .time_of_day = Some(Hours {
                from: TimeOfDay::parse(from).unwrap(),
                until: TimeOfDay::parse(until).unwrap(),
                time_zone: zone.to_owned(),
            });
        }
        self
    }

    fn ips(mut self, ranges: &[&str]) -> Self {
        if let PolicyCommand::Grant { conditions, .. } = &mut self.0 {
            conditions.get_or_insert_with(Conditions::default).source_ip =
                Some(ranges.iter().map(|r| r.parse().unwrap()).collect());
        }
        self
    }
}

impl From<G> for PolicyCommand {
    fn from(g: G) -> Self {
        g.0
    }
}

/// An assignment to build: `assign(..)`, then its scope and window.
struct A(PolicyCommand);

fn assign(id: &str, principal: &str, role: &str) -> A {
    A(PolicyCommand::Assign {
        id: id.to_owned(),
        principal: principal.to_owned(),
        role: role.to_owned(),
        on: None,
        window: Window::default(),
        assigned_by: "root".to_owned(),
        migrated_from: None,
    })
}

impl A {
    fn on(mut self, s: &str) -> Self {
        if let PolicyCommand::Assign { on, .. } = &mut self.0 {
            *on = Some(scope(s));
        }
        self
    }

    fn from(mut self, t: &str) -> Self {
        if let PolicyCommand::Assign { window, .. } = &mut self.0 {
            window.valid_from = Some(ts(t));
        }
        self
    }

    fn until(mut self, t: &str) -> Self {
        if let PolicyCommand::Assign { window, .. } = &mut self.0 {
            window.valid_until = Some(ts(t));
        }
        self
    }
}

impl From<A> for PolicyCommand {
    fn from(a: A) -> Self {
        a.0
    }
}

fn set_catalog(types: &[(&str, &[&str])]) -> PolicyCommand {
    PolicyCommand::SetCatalog {
        resource_types: types
            .iter()
            .map(|(t, actions)| {
                let actions: BTreeSet<String> = actions.iter().map(|a| (*a).to_owned()).collect();
                ((*t).to_owned(), actions)
            })
            .collect::<BTreeMap<_, _>>(),
    }
}

fn create_role(name: &str, parents: &[&str]) -> PolicyCommand {
    PolicyCommand::CreateRole {
        name: name.to_owned(),
        description: None,
        parents: parents.iter().map(|p| (*p).to_owned()).collect(),
    }
}

fn reparent(name: &str, parents: &[&str]) -> PolicyCommand {
    PolicyCommand::UpdateRole {
        name: name.to_owned(),
        description: None,
        parents: Some(parents.iter().map(|p| (*p).to_owned()).collect()),
    }
}

fn delete_role(name: &str) -> PolicyCommand {
    PolicyCommand::DeleteRole {
        name: name.to_owned(),
    }
}

fn revoke(id: &str) -> PolicyCommand {
    PolicyCommand::Revoke { id: id.to_owned() }
}

fn unassign(id: &str) -> PolicyCommand {
    PolicyCommand::Unassign { id: id.to_owned() }
}

fn join(group: &str, r: &str) -> PolicyCommand {
    PolicyCommand::AddMember {
        group: group.to_owned(),
        resource: resource(r),
    }
}

fn leave(group: &str, r: &str) -> PolicyCommand {
    PolicyCommand::RemoveMember {
        group: group.to_owned(),
        resource: resource(r),
    }
}

// ---- histories ----

/// One log shared by several tenants' policies: every command goes through `decide` and its
/// events are applied at the next positions, stamped with the world's clock.
#[derive(Clone)]
struct World {
    tenants: BTreeMap<&'static str, Policy>,
    tenant: &'static str,
    position: u64,
    clock: Timestamp,
}

/// Tenant `acme` at `T0`, before any event.
fn world() -> World {
    World {
        tenants: BTreeMap::from([("acme", Policy::new())]),
        tenant: "acme",
        position: 0,
        clock: ts(T0),
    }
}

impl World {
    /// Later commands happen at `time`.
    fn at(mut self, time: &str) -> Self {
        self.clock = ts(time);
        self
    }

    /// Later commands and the checks go to `tenant`.
    fn tenant(mut self, tenant: &'static str) -> Self {
        self.tenant = tenant;
        self.tenants.entry(tenant).or_default();
        self
    }

    fn policy(&self) -> &Policy {
        self.tenants
            .get(self.tenant)
            .expect("a world's tenant has a policy")
    }

    fn decide(&self, command: impl Into<PolicyCommand>) -> Result<Vec<PolicyEvent>, PolicyError> {
        decide(self.policy(), command.into())
    }

    /// Runs a command that must be accepted.
    fn run(mut self, command: impl Into<PolicyCommand>) -> Self {
        let command = command.into();
        let label = format!("{command:?}");
        let events = self
            .decide(command)
            .unwrap_or_else(|e| panic!("{label} refused: {e}"));
        let policy = self.tenants.entry(self.tenant).or_default();
        for e in &events {
            self.position += 1;
            policy.apply(
                Stamp {
                    position: self.position,
                    at: self.clock,
                },
                e,
            );
        }
        self
    }

    fn catalog(self, types: &[(&str, &[&str])]) -> Self {
        self.run(set_catalog(types))
    }

    fn role(self, name: &str, parents: &[&str]) -> Self {
        self.run(create_role(name, parents))
    }

    /// Asks one question: `on` is a resource `t/id`, `tenant`, `every t` or `group g`; `when`
    /// is `now`, a time (the check's context time, against the ledger as it is), or `at` a time
    /// (the ledger as it stood then); `ip` is empty or an address.
    fn check(
        &self,
        principal: &str,
        p: &str,
        on: &str,
        when: &str,
        ip: &str,
        explain: bool,
    ) -> Decision {
        let policy = self.policy();
        let asked = permission(p);
        let owned;
        let target = if on == "tenant" {
            Target::Tenant
        } else if let Some(t) = on.strip_prefix("every ") {
            Target::Type(t)
        } else if let Some(g) = on.strip_prefix("group ") {
            Target::Group(g)
        } else {
            owned = resource(on);
            Target::Resource(&owned)
        };
        let as_of = match when.strip_prefix("at ") {
            Some(t) => AsOf {
                position: policy.position_at(ts(t)),
                time: ts(t),
            },
            None if when == "now" => AsOf::now(ts(NOW)),
            None => AsOf::now(ts(when)),
        };
        let ip: Option<IpAddr> = (!ip.is_empty()).then(|| ip.parse().unwrap());
        evaluate(
            policy,
            &Check {
                principal,
                permission: &asked,
                target,
                ip,
                as_of,
                explain,
            },
        )
    }
}

// ---- the worlds ----

/// The built-in roles, one holder each, and a tenant grant to `viewer`.
fn builtins() -> World {
    world()
        .catalog(&[("project", &["read", "update", "delete", "deploy"])]) // 1
        .run(allow("grant_viewer_project", "role:viewer", "project:read")) // 2
        .run(assign("asg_v", "vera", "viewer")) // 3
        .run(assign("asg_d", "dev", "developer")) // 4
        .run(assign("asg_m", "max", "manager")) // 5
        .run(assign("asg_a", "ada", "admin")) // 6
}

/// Custom roles: `lead` has parents `dev_a` and `dev_b`, which both inherit `base` (a diamond);
/// `auditor` inherits the built-in `viewer`; `ops` inherits `developer` and `base`.
fn custom() -> World {
    world()
        .catalog(&[
            ("project", &["read", "update", "delete", "deploy"]),
            ("billing", &["read", "export"]),
        ]) // 1
        .role("base", &[]) // 2
        .run(allow("grant_base", "role:base", "project:read")) // 3
        .role("dev_a", &["base"]) // 4
        .run(allow("grant_a", "role:dev_a", "project:update")) // 5
        .role("dev_b", &["base"]) // 6
        .run(allow("grant_b", "role:dev_b", "billing:read")) // 7
        .role("lead", &["dev_a", "dev_b"]) // 8
        .run(allow("grant_lead", "role:lead", "project:deploy").on("type:project")) // 9
        .role("auditor", &["viewer"]) // 10
        .run(allow("grant_audit", "role:auditor", "audit:read")) // 11
        .role("ops", &["developer", "base"]) // 12
        .run(assign("asg_lena", "lena", "lead")) // 13
        .run(assign("asg_bo", "bo", "dev_b")) // 14
        .run(assign("asg_otto", "otto", "auditor")) // 15
        .run(assign("asg_oz", "oz", "ops")) // 16
}

/// Every scope, for grants to principals and for assignments, and their intersections. Groups:
/// `blue` holds project/p1 and doc/d1, `red` holds project/p2.
fn scopes() -> World {
    world()
        .catalog(&[
            ("project", &["read", "update", "deploy"]),
            ("doc", &["read", "update"]),
        ]) // 1
        .run(join("blue", "project/p1")) // 2
        .run(join("blue", "doc/d1")) // 3
        .run(join("red", "project/p2")) // 4
        .run(allow("grant_t", "tess", "project:read")) // 5
        .run(allow("grant_ty", "tyra", "project:read").on("type:project")) // 6
        .run(allow("grant_r", "rita", "project:read").on("project/p1")) // 7
        .run(allow("grant_g", "gus", "project:read").on("group:blue")) // 8
        .run(allow("grant_gd", "gus", "doc:read").on("group:blue")) // 9
        .role("reader", &[]) // 10
        .run(allow("grant_reader_project", "role:reader", "project:read")) // 11
        .run(allow("grant_reader_doc", "role:reader", "doc:read")) // 12
        .run(assign("asg_amy", "amy", "reader")) // 13
        .run(assign("asg_ty", "ty", "reader").on("type:project")) // 14
        .run(assign("asg_ari", "ari", "reader").on("project/p1")) // 15
        .run(assign("asg_ag", "ag", "reader").on("group:blue")) // 16
        .role("blue_deployer", &[]) // 17
        .run(allow("grant_blue_deploy", "role:blue_deployer", "project:deploy").on("group:blue")) // 18
        .role("p2_deployer", &[]) // 19
        .run(allow("grant_p2_deploy", "role:p2_deployer", "project:deploy").on("project/p2")) // 20
        .run(assign("asg_ivy", "ivy", "blue_deployer").on("type:project")) // 21
        .run(assign("asg_ike", "ike", "p2_deployer").on("group:blue")) // 22
        .run(assign("asg_ida", "ida", "blue_deployer").on("group:blue")) // 23
        .run(assign("asg_pam", "pam", "p2_deployer").on("type:project")) // 24
        .run(assign("asg_pat", "pat", "admin").on("project/p1")) // 25
        .run(allow("grant_rex", "rex", "*:read")) // 26
}

/// Denies against allows: direct and through roles, on wildcards, scoped, conditional, expired.
fn denials() -> World {
    world()
        .catalog(&[("project", &["read", "update", "delete"])]) // 1
        .role("editor", &[]) // 2
        .run(allow("grant_edit", "role:editor", "project:*")) // 3
        .role("locked", &[]) // 4
        .run(deny("grant_locked", "role:locked", "project:delete")) // 5
        .run(assign("asg_dana", "dana", "editor")) // 6
        .run(deny("grant_dana", "dana", "project:delete")) // 7
        .run(allow("grant_rob", "rob", "project:delete")) // 8
        .run(assign("asg_rob", "rob", "locked")) // 9
        .run(assign("asg_wil", "wil", "editor"))
        .run(deny("grant_wil", "wil", "*:delete"))
        .run(assign("asg_wendy", "wendy", "admin"))
        .run(deny("grant_wendy", "wendy", "project:*"))
        .run(assign("asg_cleo", "cleo", "editor"))
        .run(deny("grant_cleo", "cleo", "project:delete").hours("09:00", "17:00", "Europe/Paris"))
        .run(assign("asg_ned", "ned", "editor"))
        .run(deny("grant_ned", "ned", "project:*").ips(&["203.0.113.0/24"]))
        .run(assign("asg_sam", "sam", "editor"))
        .run(deny("grant_sam", "sam", "project:delete").on("project/p1"))
        .run(assign("asg_ed", "ed", "editor"))
        .run(deny("grant_ed", "ed", "project:delete").until("2026-02-01T00:00:00Z"))
        .run(join("frozen", "project/p3"))
        .run(assign("asg_gil", "gil", "editor"))
        .run(deny("grant_gil", "gil", "project:update").on("group:frozen"))
        .run(assign("asg_zed", "zed", "admin"))
        .run(deny("grant_zed", "zed", "*:*").on("project/p1"))
}

/// Validity windows of grants and assignments.
fn windows() -> World {
    world()
        .catalog(&[("project", &["read", "update"])])
        .run(allow("grant_fay", "fay", "project:read").from("2026-04-01T00:00:00Z"))
        .run(allow("grant_eve", "eve", "project:read").until("2026-02-01T00:00:00Z"))
        .run(allow("grant_ola", "ola", "project:read").from("2026-01-15T00:00:00Z"))
        .run(
            allow("grant_wes", "wes", "project:read")
                .from("2026-02-01T00:00:00Z")
                .until("2026-04-01T00:00:00Z"),
        )
        .role("reader", &[])
        .run(allow("grant_reader", "role:reader", "project:read"))
        .run(
            assign("asg_tim", "tim", "reader")
                .from("2026-02-15T00:00:00Z")
                .until(NOW),
        )
        .run(assign("asg_lou", "lou", "reader").from("2026-06-01T00:00:00Z"))
        .run(assign("asg_kim", "kim", "reader").until("2026-12-31T00:00:00Z"))
}

/// Conditions: office hours in three zones, night hours across midnight, source addresses.
fn conditions() -> World {
    world()
        .catalog(&[("project", &["read"])])
        .run(allow("grant_ny", "nia", "project:read").hours("09:00", "17:00", "America/New_York"))
        .run(allow("grant_tokyo", "taro", "project:read").hours("09:00", "17:00", "Asia/Tokyo"))
        .run(allow("grant_night", "nox", "project:read").hours("22:00", "06:00", "Europe/Paris"))
        .run(allow("grant_ip", "ipo", "project:read").ips(&["10.0.0.0/8", "2001:db8::/32"]))
        .run(
            allow("grant_both", "bea", "project:read")
                .hours("08:00", "20:00", "UTC")
                .ips(&["10.0.0.0/8"]),
        )
}

/// A grant on group `blue`; project/p1 is in it from Jan 10 to Feb 10, project/p2 from Feb 20.
fn membership() -> World {
    world()
        .catalog(&[("project", &["read"])]) // 1
        .run(allow("grant_blue", "gia", "project:read").on("group:blue")) // 2
        .at("2026-01-10T00:00:00Z")
        .run(join("blue", "project/p1")) // 3
        .at("2026-02-10T00:00:00Z")
        .run(leave("blue", "project/p1")) // 4
        .at("2026-02-20T00:00:00Z")
        .run(join("blue", "project/p2")) // 5
}

/// As [`membership`], and project/p1 joins `blue` again on Feb 25.
fn rejoined() -> World {
    membership()
        .at("2026-02-25T00:00:00Z")
        .run(join("blue", "project/p1")) // 6
}

/// A revocation and an unassignment on Jan 10, the deletion of role `ops` on Jan 20, a new `ops`
/// on Jan 25, and on Feb 1 a grant whose window opened on Jan 1.
fn history() -> World {
    world()
        .catalog(&[("project", &["read", "deploy"])]) // 1
        .role("ops", &[]) // 2
        .run(allow("grant_ops", "role:ops", "project:deploy")) // 3
        .run(assign("asg_olga", "olga", "ops")) // 4
        .run(allow("grant_paul", "paul", "project:read")) // 5
        .run(assign("asg_uma", "uma", "viewer")) // 6
        .at("2026-01-10T00:00:00Z")
        .run(revoke("grant_paul")) // 7
        .run(unassign("asg_uma")) // 8
        .at("2026-01-20T00:00:00Z")
        .run(delete_role("ops")) // 9, 10, 11
        .at("2026-01-25T00:00:00Z")
        .role("ops", &[]) // 12
        .run(assign("asg_olga2", "olga", "ops")) // 13
        .at("2026-02-01T00:00:00Z")
        .run(allow("grant_lara", "lara", "project:read").from(T0)) // 14
}

/// Role `team` inherits `base` until Feb 1, then `extra` instead.
fn reparenting() -> World {
    world()
        .catalog(&[("project", &["read", "update"])]) // 1
        .role("base", &[]) // 2
        .run(allow("grant_base", "role:base", "project:read")) // 3
        .role("extra", &[]) // 4
        .run(allow("grant_extra", "role:extra", "project:update")) // 5
        .role("team", &["base"]) // 6
        .run(assign("asg_tom", "tom", "team")) // 7
        .at("2026-02-01T00:00:00Z")
        .run(reparent("team", &["extra"])) // 8
}

/// Two tenants in one log, with the same user ids and a role `ops` each, defined differently.
fn two_tenants() -> World {
    world()
        .catalog(&[("project", &["read", "deploy"])]) // 1
        .role("ops", &["developer"]) // 2
        .run(allow("grant_acme_ops", "role:ops", "project:deploy")) // 3
        .run(assign("asg_acme_alice", "alice", "ops")) // 4
        .tenant("globex")
        .catalog(&[("project", &["read", "deploy"])]) // 5
        .role("ops", &[]) // 6
        .run(allow("grant_globex_ops", "role:ops", "project:read")) // 7
        .run(assign("asg_globex_alice", "alice", "ops")) // 8
        .run(assign("asg_globex_bob", "bob", "admin")) // 9
}

fn acme() -> World {
    two_tenants().tenant("acme")
}

fn globex() -> World {
    two_tenants().tenant("globex")
}

/// Roles `a`, `b` (parent `a`) and `c` (parent `b`).
fn chain() -> World {
    world().role("a", &[]).role("b", &["a"]).role("c", &["b"])
}

// ---- the table ----

/// (behaviour, history, principal, permission, on, when, ip, verdict, matched). `matched` is the
/// provenance chain, `kind id` links joined by ` > `, each optionally `@position`; empty when
/// nothing matched (a default deny).
type Case = (
    &'static str,
    fn() -> World,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Verdict,
    &'static str,
);

#[rustfmt::skip]
fn cases() -> Vec<Case> {
    vec![
        // Built-in roles and their default permissions.
        ("viewer reads users", builtins, "vera", "user:read", "user/u1", "now", "", Allow, "assignment asg_v@3 > role viewer@0 > grant builtin:viewer:user:read@0"),
        ("viewer does not create keys", builtins, "vera", "key:create", "key/k1", "now", "", Deny, ""),
        ("viewer does not update users", builtins, "vera", "user:update", "user/u1", "now", "", Deny, ""),
        ("viewer does not read the audit trail", builtins, "vera", "audit:read", "audit/a1", "now", "", Deny, ""),
        ("viewer holds what the tenant grants the built-in role", builtins, "vera", "project:read", "project/p1", "now", "", Allow, "assignment asg_v > role viewer > grant grant_viewer_project@2"),
        ("developer creates keys", builtins, "dev", "key:create", "key/k1", "now", "", Allow, "assignment asg_d@4 > role developer@0 > grant builtin:developer:key:create@0"),
        ("developer reads users through viewer", builtins, "dev", "user:read", "user/u1", "now", "", Allow, "assignment asg_d > role developer > role viewer > grant builtin:viewer:user:read"),
        ("developer does not delete keys", builtins, "dev", "key:delete", "key/k1", "now", "", Deny, ""),
        ("developer asking for all of key:* is denied", builtins, "dev", "key:*", "key/k1", "now", "", Deny, ""),
        ("manager does anything to roles", builtins, "max", "role:delete", "role/r1", "now", "", Allow, "assignment asg_m@5 > role manager@0 > grant builtin:manager:role:*@0"),
        ("manager holds all of key:*", builtins, "max", "key:*", "key/k1", "now", "", Allow, "assignment asg_m > role manager > grant builtin:manager:key:*"),
        ("manager verifies keys through its own key:*", builtins, "max", "key:verify", "key/k1", "now", "", Allow, "assignment asg_m > role manager > grant builtin:manager:key:*"),
        ("manager exports the audit trail", builtins, "max", "audit:export", "audit/a1", "now", "", Allow, "assignment asg_m > role manager > grant builtin:manager:audit:export"),
        ("manager inherits a tenant's grant to viewer", builtins, "max", "project:read", "project/p1", "now", "", Allow, "assignment asg_m > role manager > role developer > role viewer > grant grant_viewer_project"),
        ("manager does not update projects", builtins, "max", "project:update", "project/p1", "now", "", Deny, ""),
        ("manager does not delete the tenant", builtins, "max", "tenant:delete", "tenant/acme", "now", "", Deny, ""),
        ("admin deletes the tenant", builtins, "ada", "tenant:delete", "tenant/acme", "now", "", Allow, "assignment asg_a@6 > role admin@0 > grant builtin:admin:*:*@0"),
        ("admin deploys a tenant's own type", builtins, "ada", "project:deploy", "project/p1", "now", "", Allow, "assignment asg_a > role admin > grant builtin:admin:*:*"),
        ("admin holds all of project:*", builtins, "ada", "project:*", "project/p1", "now", "", Allow, "assignment asg_a > role admin > grant builtin:admin:*:*"),
        ("a principal with nothing is denied by default", builtins, "nobody", "user:read", "user/u1", "now", "", Deny, ""),

        // Custom roles: several parents, a diamond, built-in parents.
        ("a custom role's own grant", custom, "lena", "project:deploy", "project/p1", "now", "", Allow, "assignment asg_lena@13 > role lead@8 > grant grant_lead@9"),
        ("the first parent's grant", custom, "lena", "project:update", "project/p1", "now", "", Allow, "assignment asg_lena > role lead > role dev_a@4 > grant grant_a@5"),
        ("the second parent's grant", custom, "lena", "billing:read", "billing/b1", "now", "", Allow, "assignment asg_lena > role lead > role dev_b@6 > grant grant_b@7"),
        ("a diamond's shared ancestor, reached through the first parent", custom, "lena", "project:read", "project/p1", "now", "", Allow, "assignment asg_lena > role lead > role dev_a > role base@2 > grant grant_base@3"),
        ("nothing in the hierarchy allows delete", custom, "lena", "project:delete", "project/p1", "now", "", Deny, ""),
        ("nothing in the hierarchy allows billing export", custom, "lena", "billing:export", "billing/b1", "now", "", Deny, ""),
        ("a child inherits its parent's grant", custom, "bo", "project:read", "project/p1", "now", "", Allow, "assignment asg_bo > role dev_b > role base > grant grant_base"),
        ("a sibling's grant is not inherited", custom, "bo", "project:update", "project/p1", "now", "", Deny, ""),
        ("a custom role over viewer: its own grant", custom, "otto", "audit:read", "audit/a1", "now", "", Allow, "assignment asg_otto > role auditor > grant grant_audit"),
        ("a custom role over viewer: viewer's defaults", custom, "otto", "user:read", "user/u1", "now", "", Allow, "assignment asg_otto > role auditor > role viewer@0 > grant builtin:viewer:user:read"),
        ("a custom role over viewer does not export audit", custom, "otto", "audit:export", "audit/a1", "now", "", Deny, ""),
        ("a built-in and a custom parent: the built-in's grant", custom, "oz", "key:create", "key/k1", "now", "", Allow, "assignment asg_oz > role ops > role developer > grant builtin:developer:key:create"),
        ("a built-in and a custom parent: the custom's grant", custom, "oz", "project:read", "project/p1", "now", "", Allow, "assignment asg_oz > role ops > role base > grant grant_base"),
        ("a built-in parent's own parent", custom, "oz", "user:read", "user/u1", "now", "", Allow, "assignment asg_oz > role ops > role developer > role viewer > grant builtin:viewer:user:read"),

        // Grant scopes.
        ("a tenant-wide grant covers any resource", scopes, "tess", "project:read", "project/p9", "now", "", Allow, "grant grant_t@5"),
        ("a tenant-wide grant covers every resource of a type", scopes, "tess", "project:read", "every project", "now", "", Allow, "grant grant_t"),
        ("a tenant-wide grant covers the tenant", scopes, "tess", "project:read", "tenant", "now", "", Allow, "grant grant_t"),
        ("a grant covers only its permission", scopes, "tess", "doc:read", "doc/d1", "now", "", Deny, ""),
        ("a type grant covers a resource of the type", scopes, "tyra", "project:read", "project/p9", "now", "", Allow, "grant grant_ty@6"),
        ("a type grant covers every resource of the type", scopes, "tyra", "project:read", "every project", "now", "", Allow, "grant grant_ty"),
        ("a type grant does not cover the tenant", scopes, "tyra", "project:read", "tenant", "now", "", Deny, ""),
        ("a resource grant covers its resource", scopes, "rita", "project:read", "project/p1", "now", "", Allow, "grant grant_r@7"),
        ("a resource grant does not cover another resource", scopes, "rita", "project:read", "project/p2", "now", "", Deny, ""),
        ("a resource grant does not cover the whole type", scopes, "rita", "project:read", "every project", "now", "", Deny, ""),
        ("a group grant covers a member", scopes, "gus", "project:read", "project/p1", "now", "", Allow, "group blue@2 > grant grant_g@8"),
        ("a group grant covers a member of another type", scopes, "gus", "doc:read", "doc/d1", "now", "", Allow, "group blue@3 > grant grant_gd@9"),
        ("a group grant does not cover a non-member", scopes, "gus", "project:read", "project/p2", "now", "", Deny, ""),
        ("a group grant covers the group", scopes, "gus", "project:read", "group blue", "now", "", Allow, "grant grant_g"),
        ("a group grant does not cover another group", scopes, "gus", "project:read", "group red", "now", "", Deny, ""),

        // Assignment scopes, and their intersection with grant scopes.
        ("a tenant-wide assignment covers any resource", scopes, "amy", "doc:read", "doc/d9", "now", "", Allow, "assignment asg_amy@13 > role reader@10 > grant grant_reader_doc@12"),
        ("a tenant-wide assignment covers the tenant", scopes, "amy", "project:read", "tenant", "now", "", Allow, "assignment asg_amy > role reader > grant grant_reader_project@11"),
        ("a type assignment covers a resource of the type", scopes, "ty", "project:read", "project/p9", "now", "", Allow, "assignment asg_ty@14 > role reader > grant grant_reader_project"),
        ("a type assignment covers the whole type", scopes, "ty", "project:read", "every project", "now", "", Allow, "assignment asg_ty > role reader > grant grant_reader_project"),
        ("a type assignment does not cover another type", scopes, "ty", "doc:read", "doc/d1", "now", "", Deny, ""),
        ("a type assignment does not cover the tenant", scopes, "ty", "project:read", "tenant", "now", "", Deny, ""),
        ("a resource assignment covers its resource", scopes, "ari", "project:read", "project/p1", "now", "", Allow, "assignment asg_ari@15 > role reader > grant grant_reader_project"),
        ("a resource assignment does not cover another resource", scopes, "ari", "project:read", "project/p2", "now", "", Deny, ""),
        ("a group assignment covers a member", scopes, "ag", "doc:read", "doc/d1", "now", "", Allow, "assignment asg_ag@16 > group blue@3 > role reader > grant grant_reader_doc"),
        ("a group assignment covers the group", scopes, "ag", "project:read", "group blue", "now", "", Allow, "assignment asg_ag > role reader > grant grant_reader_project"),
        ("a group assignment does not cover a non-member", scopes, "ag", "project:read", "project/p2", "now", "", Deny, ""),
        ("type assignment and group grant: a member of both", scopes, "ivy", "project:deploy", "project/p1", "now", "", Allow, "assignment asg_ivy > role blue_deployer > group blue > grant grant_blue_deploy@18"),
        ("type assignment and group grant: outside the group", scopes, "ivy", "project:deploy", "project/p2", "now", "", Deny, ""),
        ("group assignment and resource grant: the resource outside the group", scopes, "ike", "project:deploy", "project/p2", "now", "", Deny, ""),
        ("group assignment and group grant: both links named", scopes, "ida", "project:deploy", "project/p1", "now", "", Allow, "assignment asg_ida > group blue > role blue_deployer > group blue > grant grant_blue_deploy"),
        ("type assignment and resource grant: the resource", scopes, "pam", "project:deploy", "project/p2", "now", "", Allow, "assignment asg_pam > role p2_deployer > grant grant_p2_deploy"),
        ("type assignment and resource grant: another resource", scopes, "pam", "project:deploy", "project/p1", "now", "", Deny, ""),
        ("a built-in role assigned on one resource covers it", scopes, "pat", "project:deploy", "project/p1", "now", "", Allow, "assignment asg_pat@25 > role admin > grant builtin:admin:*:*"),
        ("a built-in role assigned on one resource covers no other", scopes, "pat", "project:deploy", "project/p2", "now", "", Deny, ""),
        ("a built-in role assigned on one resource does not cover the tenant", scopes, "pat", "tenant:delete", "tenant/acme", "now", "", Deny, ""),
        ("an allow on a wildcard type", scopes, "rex", "doc:read", "doc/d1", "now", "", Allow, "grant grant_rex@26"),
        ("an allow on a wildcard type covers only its action", scopes, "rex", "project:update", "project/p1", "now", "", Deny, ""),

        // Deny overrides.
        ("a direct deny beats a role's allow", denials, "dana", "project:delete", "project/p1", "now", "", Deny, "grant grant_dana@7"),
        ("a direct deny leaves the rest of a role's allow", denials, "dana", "project:update", "project/p1", "now", "", Allow, "assignment asg_dana@6 > role editor@2 > grant grant_edit@3"),
        ("a deny inside a pattern asked denies the pattern", denials, "dana", "project:*", "project/p1", "now", "", Deny, "grant grant_dana"),
        ("a role's deny beats a direct allow", denials, "rob", "project:delete", "project/p1", "now", "", Deny, "assignment asg_rob@9 > role locked@4 > grant grant_locked@5"),
        ("a role's deny allows nothing else", denials, "rob", "project:read", "project/p1", "now", "", Deny, ""),
        ("a deny on a wildcard action", denials, "wil", "project:delete", "project/p1", "now", "", Deny, "grant grant_wil"),
        ("a deny on a wildcard action spans types", denials, "wil", "user:delete", "user/u1", "now", "", Deny, "grant grant_wil"),
        ("a deny on a wildcard action leaves other actions", denials, "wil", "project:read", "project/p1", "now", "", Allow, "assignment asg_wil > role editor > grant grant_edit"),
        ("a deny on a whole type beats admin", denials, "wendy", "project:read", "project/p1", "now", "", Deny, "grant grant_wendy"),
        ("a deny on a whole type leaves admin its other types", denials, "wendy", "user:read", "user/u1", "now", "", Allow, "assignment asg_wendy > role admin > grant builtin:admin:*:*"),
        ("a deny outside its hours does not apply", denials, "cleo", "project:delete", "project/p1", "2026-03-02T20:00:00Z", "", Allow, "assignment asg_cleo > role editor > grant grant_edit"),
        ("a deny within its hours applies", denials, "cleo", "project:delete", "project/p1", "2026-03-02T10:00:00Z", "", Deny, "grant grant_cleo"),
        ("a deny from a listed address applies", denials, "ned", "project:read", "project/p1", "now", "203.0.113.9", Deny, "grant grant_ned"),
        ("a deny from another address does not apply", denials, "ned", "project:read", "project/p1", "now", "198.51.100.1", Allow, "assignment asg_ned > role editor > grant grant_edit"),
        ("a deny on addresses applies when the check gives none", denials, "ned", "project:read", "project/p1", "now", "", Deny, "grant grant_ned"),
        ("a resource deny on its resource", denials, "sam", "project:delete", "project/p1", "now", "", Deny, "grant grant_sam"),
        ("a resource deny leaves other resources", denials, "sam", "project:delete", "project/p2", "now", "", Allow, "assignment asg_sam > role editor > grant grant_edit"),
        ("a deny on a group covers its member", denials, "gil", "project:update", "project/p3", "now", "", Deny, "group frozen > grant grant_gil"),
        ("a deny on a group leaves non-members", denials, "gil", "project:update", "project/p4", "now", "", Allow, "assignment asg_gil > role editor > grant grant_edit"),
        ("a deny of everything on one resource beats admin there", denials, "zed", "project:read", "project/p1", "now", "", Deny, "grant grant_zed"),
        ("a deny of everything on one resource leaves admin elsewhere", denials, "zed", "project:read", "project/p2", "now", "", Allow, "assignment asg_zed > role admin > grant builtin:admin:*:*"),
        ("an expired deny no longer applies", denials, "ed", "project:delete", "project/p1", "now", "", Allow, "assignment asg_ed > role editor > grant grant_edit"),
        ("a deny applies within its window", denials, "ed", "project:delete", "project/p1", "2026-01-15T00:00:00Z", "", Deny, "grant grant_ed"),

        // Windows.
        ("a grant not yet valid", windows, "fay", "project:read", "project/p1", "now", "", Deny, ""),
        ("a grant from its valid_from, inclusive", windows, "fay", "project:read", "project/p1", "2026-04-01T00:00:00Z", "", Allow, "grant grant_fay"),
        ("a grant a microsecond before its valid_from", windows, "fay", "project:read", "project/p1", "2026-03-31T23:59:59.999999Z", "", Deny, ""),
        ("a grant after its valid_until", windows, "eve", "project:read", "project/p1", "now", "", Deny, ""),
        ("a grant a microsecond before its valid_until", windows, "eve", "project:read", "project/p1", "2026-01-31T23:59:59.999999Z", "", Allow, "grant grant_eve"),
        ("a grant at exactly its valid_until has expired", windows, "eve", "project:read", "project/p1", "2026-02-01T00:00:00Z", "", Deny, ""),
        ("an open-ended grant years later", windows, "ola", "project:read", "project/p1", "2030-01-01T00:00:00Z", "", Allow, "grant grant_ola"),
        ("an open-ended grant before its start", windows, "ola", "project:read", "project/p1", "2026-01-14T00:00:00Z", "", Deny, ""),
        ("a bounded grant within its window", windows, "wes", "project:read", "project/p1", "now", "", Allow, "grant grant_wes"),
        ("an assignment within its window", windows, "tim", "project:read", "project/p1", "2026-03-01T11:59:59Z", "", Allow, "assignment asg_tim > role reader > grant grant_reader"),
        ("an assignment at exactly its valid_until has expired", windows, "tim", "project:read", "project/p1", "now", "", Deny, ""),
        ("an assignment before its valid_from", windows, "tim", "project:read", "project/p1", "2026-02-14T00:00:00Z", "", Deny, ""),
        ("an assignment not yet valid", windows, "lou", "project:read", "project/p1", "now", "", Deny, ""),
        ("an assignment from its valid_from", windows, "lou", "project:read", "project/p1", "2026-06-01T00:00:00Z", "", Allow, "assignment asg_lou > role reader > grant grant_reader"),
        ("an assignment with only an end, before it", windows, "kim", "project:read", "project/p1", "now", "", Allow, "assignment asg_kim > role reader > grant grant_reader"),

        // Time of day in a zone, and source addresses.
        ("office hours in New York, 10:00 EDT", conditions, "nia", "project:read", "project/p1", "2026-06-01T14:00:00Z", "", Allow, "grant grant_ny"),
        ("office hours in New York open at 09:00 EDT", conditions, "nia", "project:read", "project/p1", "2026-06-01T13:00:00Z", "", Allow, "grant grant_ny"),
        ("office hours in New York close at 17:00 EDT", conditions, "nia", "project:read", "project/p1", "2026-06-01T21:00:00Z", "", Deny, ""),
        ("office hours in New York, 18:00 EDT", conditions, "nia", "project:read", "project/p1", "2026-06-01T22:00:00Z", "", Deny, ""),
        ("office hours in New York in winter, 09:30 EST", conditions, "nia", "project:read", "project/p1", "2026-01-15T14:30:00Z", "", Allow, "grant grant_ny"),
        ("office hours in New York in winter, 08:30 EST", conditions, "nia", "project:read", "project/p1", "2026-01-15T13:30:00Z", "", Deny, ""),
        ("office hours in Tokyo, 10:00 JST", conditions, "taro", "project:read", "project/p1", "2026-06-01T01:00:00Z", "", Allow, "grant grant_tokyo"),
        ("office hours in Tokyo, 23:00 JST", conditions, "taro", "project:read", "project/p1", "2026-06-01T14:00:00Z", "", Deny, ""),
        ("night hours in Paris, 23:30 before midnight", conditions, "nox", "project:read", "project/p1", "2026-06-01T21:30:00Z", "", Allow, "grant grant_night"),
        ("night hours in Paris, 05:00 after midnight", conditions, "nox", "project:read", "project/p1", "2026-06-01T03:00:00Z", "", Allow, "grant grant_night"),
        ("night hours in Paris open at 22:00", conditions, "nox", "project:read", "project/p1", "2026-06-01T20:00:00Z", "", Allow, "grant grant_night"),
        ("night hours in Paris close at 06:00", conditions, "nox", "project:read", "project/p1", "2026-06-01T04:00:00Z", "", Deny, ""),
        ("night hours in Paris in winter, 22:30 CET", conditions, "nox", "project:read", "project/p1", "2026-01-15T21:30:00Z", "", Allow, "grant grant_night"),
        ("night hours in Paris in winter, 06:30 CET", conditions, "nox", "project:read", "project/p1", "2026-01-15T05:30:00Z", "", Deny, ""),
        ("night hours in Paris, noon", conditions, "nox", "project:read", "project/p1", "2026-06-01T10:00:00Z", "", Deny, ""),
        ("an allowed IPv4 address", conditions, "ipo", "project:read", "project/p1", "now", "10.1.2.3", Allow, "grant grant_ip"),
        ("an allowed IPv6 address", conditions, "ipo", "project:read", "project/p1", "now", "2001:db8::5", Allow, "grant grant_ip"),
        ("an address outside the ranges", conditions, "ipo", "project:read", "project/p1", "now", "192.168.1.1", Deny, ""),
        ("an allow on addresses does not apply when the check gives none", conditions, "ipo", "project:read", "project/p1", "now", "", Deny, ""),
        ("both conditions hold", conditions, "bea", "project:read", "project/p1", "2026-06-01T10:00:00Z", "10.0.0.1", Allow, "grant grant_both"),
        ("the address holds, the hours do not", conditions, "bea", "project:read", "project/p1", "2026-06-01T21:00:00Z", "10.0.0.1", Deny, ""),
        ("the hours hold, the address does not", conditions, "bea", "project:read", "project/p1", "2026-06-01T10:00:00Z", "172.16.0.1", Deny, ""),

        // Group membership over time.
        ("a resource that left the group", membership, "gia", "project:read", "project/p1", "now", "", Deny, ""),
        ("at a time the resource was in the group", membership, "gia", "project:read", "project/p1", "at 2026-01-20T00:00:00Z", "", Allow, "group blue@3 > grant grant_blue@2"),
        ("at a time before the resource joined", membership, "gia", "project:read", "project/p1", "at 2026-01-05T00:00:00Z", "", Deny, ""),
        ("a context time alone does not bring back a membership", membership, "gia", "project:read", "project/p1", "2026-01-20T00:00:00Z", "", Deny, ""),
        ("a resource that joined later", membership, "gia", "project:read", "project/p2", "now", "", Allow, "group blue@5 > grant grant_blue@2"),
        ("at a time before the later resource joined", membership, "gia", "project:read", "project/p2", "at 2026-02-15T00:00:00Z", "", Deny, ""),
        ("a resource back in the group, through its new membership", rejoined, "gia", "project:read", "project/p1", "now", "", Allow, "group blue@6 > grant grant_blue@2"),
        ("a resource back in the group, between its memberships", rejoined, "gia", "project:read", "project/p1", "at 2026-02-15T00:00:00Z", "", Deny, ""),
        ("a resource back in the group, during its first membership", rejoined, "gia", "project:read", "project/p1", "at 2026-01-20T00:00:00Z", "", Allow, "group blue@3 > grant grant_blue@2"),

        // Revocation, unassignment, role deletion, and `at` checks.
        ("a revoked grant", history, "paul", "project:read", "project/p1", "now", "", Deny, ""),
        ("a revoked grant, at a time before its revocation", history, "paul", "project:read", "project/p1", "at 2026-01-05T00:00:00Z", "", Allow, "grant grant_paul@5"),
        ("a revoked grant, at the instant of its revocation", history, "paul", "project:read", "project/p1", "at 2026-01-10T00:00:00Z", "", Deny, ""),
        ("a revoked grant, at a context time only", history, "paul", "project:read", "project/p1", "2026-01-05T00:00:00Z", "", Deny, ""),
        ("an ended assignment", history, "uma", "user:read", "user/u1", "now", "", Deny, ""),
        ("an ended assignment, at a time before its end", history, "uma", "user:read", "user/u1", "at 2026-01-05T00:00:00Z", "", Allow, "assignment asg_uma@6 > role viewer@0 > grant builtin:viewer:user:read@0"),
        ("a deleted role's assignment and grant", history, "olga", "project:deploy", "project/p1", "now", "", Deny, ""),
        ("a deleted role, at a time before its deletion", history, "olga", "project:deploy", "project/p1", "at 2026-01-15T00:00:00Z", "", Allow, "assignment asg_olga@4 > role ops@2 > grant grant_ops@3"),
        ("a deleted role, at the instant of its deletion", history, "olga", "project:deploy", "project/p1", "at 2026-01-20T00:00:00Z", "", Deny, ""),
        ("a role made again under the same name has none of the old grants", history, "olga", "project:deploy", "project/p1", "at 2026-01-28T00:00:00Z", "", Deny, ""),
        ("at a time before any event", history, "olga", "project:deploy", "project/p1", "at 2025-12-01T00:00:00Z", "", Deny, ""),
        ("a grant made later with a window open since earlier", history, "lara", "project:read", "project/p1", "now", "", Allow, "grant grant_lara@14"),
        ("the window decides at a context time", history, "lara", "project:read", "project/p1", "2026-01-15T00:00:00Z", "", Allow, "grant grant_lara@14"),
        ("the ledger decides at an `at` time: the grant did not exist yet", history, "lara", "project:read", "project/p1", "at 2026-01-15T00:00:00Z", "", Deny, ""),
        ("a role's new parents", reparenting, "tom", "project:update", "project/p1", "now", "", Allow, "assignment asg_tom@7 > role team@8 > role extra@4 > grant grant_extra@5"),
        ("a role's former parent", reparenting, "tom", "project:read", "project/p1", "now", "", Deny, ""),
        ("a role's former parent, at a time before the change", reparenting, "tom", "project:read", "project/p1", "at 2026-01-15T00:00:00Z", "", Allow, "assignment asg_tom@7 > role team@6 > role base@2 > grant grant_base@3"),
        ("a role's new parent, at a time before the change", reparenting, "tom", "project:update", "project/p1", "at 2026-01-15T00:00:00Z", "", Deny, ""),

        // Two tenants with the same user ids and role names.
        ("acme's ops deploys", acme, "alice", "project:deploy", "project/p1", "now", "", Allow, "assignment asg_acme_alice@4 > role ops@2 > grant grant_acme_ops@3"),
        ("globex's ops does not deploy", globex, "alice", "project:deploy", "project/p1", "now", "", Deny, ""),
        ("globex's ops reads", globex, "alice", "project:read", "project/p1", "now", "", Allow, "assignment asg_globex_alice@8 > role ops@6 > grant grant_globex_ops@7"),
        ("acme's ops does not read", acme, "alice", "project:read", "project/p1", "now", "", Deny, ""),
        ("acme's ops inherits developer", acme, "alice", "key:create", "key/k1", "now", "", Allow, "assignment asg_acme_alice > role ops > role developer > grant builtin:developer:key:create"),
        ("globex's ops inherits nothing", globex, "alice", "key:create", "key/k1", "now", "", Deny, ""),
        ("an admin of globex", globex, "bob", "project:deploy", "project/p1", "now", "", Allow, "assignment asg_globex_bob@9 > role admin > grant builtin:admin:*:*"),
        ("an admin of globex is nobody in acme", acme, "bob", "project:deploy", "project/p1", "now", "", Deny, ""),
        ("an admin of globex reads no acme user", acme, "bob", "user:read", "user/u1", "now", "", Deny, ""),
        ("an `at` check in one tenant sees only its own events", acme, "alice", "project:deploy", "project/p1", "at 2026-01-01T00:00:00Z", "", Allow, "assignment asg_acme_alice@4 > role ops@2 > grant grant_acme_ops@3"),
    ]
}

fn link(m: &Matched) -> String {
    let kind = match m.kind {
        MatchKind::Grant => "grant",
        MatchKind::Assignment => "assignment",
        MatchKind::Role => "role",
        MatchKind::Group => "group",
        MatchKind::Principal => "principal",
        MatchKind::Tenant => "tenant",
    };
    format!("{kind} {}@{}", m.id, m.position)
}

/// Whether `matched` is the chain `expected` describes (positions compared where written).
fn chain_is(matched: &[Matched], expected: &str) -> bool {
    let want: Vec<&str> = if expected.is_empty() {
        vec![]
    } else {
        expected.split(" > ").collect()
    };
    matched.len() == want.len()
        && matched.iter().zip(want).all(|(m, w)| {
            let got = link(m);
            if w.contains('@') {
                got == w
            } else {
                got.rsplit_once('@').is_some_and(|(head, _)| head == w)
            }
        })
}

#[test]
fn every_case_decides_with_its_provenance() {
    let cases = cases();
    let mut names = BTreeSet::new();
    let mut failures = Vec::new();
    for (name, history, principal, p, on, when, ip, verdict, matched) in &cases {
        assert!(names.insert(*name), "two cases are called {name:?}");
        let world = history();
        let quiet = world.check(principal, p, on, when, ip, false);
        let explained = world.check(principal, p, on, when, ip, true);
        let got: Vec<String> = quiet.matched.iter().map(link).collect();
        if quiet.verdict != *verdict || !chain_is(&quiet.matched, matched) {
            failures.push(format!(
                "{name}: {principal} {p} on {on} ({when}, ip {ip:?}): expected {verdict:?} [{matched}], got {:?} [{}] ({})\n  trace: {:?}",
                quiet.verdict,
                got.join(" > "),
                quiet.reason,
                explained.trace,
            ));
        }
        if (explained.verdict, &explained.matched) != (quiet.verdict, &quiet.matched) {
            failures.push(format!("{name}: explaining changed the answer"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

// ---- what decide refuses ----

/// (behaviour, history, command, kind of refusal, a fragment of its message).
type Refusal = (
    &'static str,
    fn() -> World,
    PolicyCommand,
    &'static str,
    &'static str,
);

#[rustfmt::skip]
fn refusals() -> Vec<Refusal> {
    vec![
        ("an unknown action", custom, allow("grant_x", "alice", "project:fly").into(), "unknown_permission", "project:fly is not in the tenant's catalog"),
        ("an unknown type", custom, allow("grant_x", "alice", "widget:read").into(), "unknown_permission", "widget:read"),
        ("an action no type has", custom, allow("grant_x", "alice", "*:fly").into(), "unknown_permission", "*:fly"),
        ("an unknown type as a grant's type scope", custom, allow("grant_x", "alice", "project:read").on("type:widget").into(), "unknown_permission", "widget:*"),
        ("an unknown type as a grant's resource scope", custom, allow("grant_x", "alice", "project:read").on("widget/w1").into(), "unknown_permission", "widget:*"),
        ("an unknown type as an assignment's scope", custom, assign("asg_x", "alice", "viewer").on("type:widget").into(), "unknown_permission", "widget:*"),
        ("a group member of an unknown type", custom, join("blue", "widget/w1"), "unknown_permission", "widget:*"),
        ("a grant to an unknown role", custom, allow("grant_x", "role:ghost", "project:read").into(), "not_found", "no role ghost"),
        ("an assignment of an unknown role", custom, assign("asg_x", "alice", "ghost").into(), "not_found", "no role ghost"),
        ("a parent that is no role", custom, create_role("x", &["ghost"]), "not_found", "no role ghost"),
        ("a new role naming itself as parent", custom, create_role("x", &["x"]), "not_found", "no role x"),
        ("a duplicate custom role", custom, create_role("lead", &[]), "conflict", "role lead exists already"),
        ("a custom role named after a built-in", custom, create_role("admin", &[]), "conflict", "role admin exists already"),
        ("a role name that is not a name", custom, create_role("Ops Team", &[]), "invalid", "name"),
        ("a parent listed twice", custom, create_role("x", &["base", "base"]), "invalid", "base is listed twice"),
        ("changing a built-in role", custom, reparent("manager", &["viewer"]), "conflict", "manager is a built-in role"),
        ("deleting a built-in role", custom, delete_role("viewer"), "conflict", "viewer is a built-in role"),
        ("deleting a role that is a parent", custom, delete_role("base"), "conflict", "role base is a parent of dev_a, dev_b, ops"),
        ("changing a role that does not exist", history, reparent("ghost", &[]), "not_found", "no role ghost"),
        ("changing a deleted role", || custom().run(delete_role("lead")), reparent("lead", &[]), "not_found", "no role lead"),
        ("deleting a deleted role", || custom().run(delete_role("lead")), delete_role("lead"), "not_found", "no role lead"),
        ("a role its own parent", chain, reparent("a", &["a"]), "conflict", "would make a cycle"),
        ("a two-step cycle", chain, reparent("a", &["b"]), "conflict", "would make a cycle"),
        ("a three-step cycle", chain, reparent("a", &["c"]), "conflict", "would make a cycle"),
        ("a cycle through a diamond", custom, reparent("base", &["lead"]), "conflict", "would make a cycle"),
        ("revoking a grant twice", history, revoke("grant_paul"), "not_found", "no live grant grant_paul"),
        ("revoking a grant its role's deletion ended", history, revoke("grant_ops"), "not_found", "no live grant grant_ops"),
        ("revoking a built-in default", history, revoke("builtin:viewer:user:read"), "not_found", "no live grant builtin:viewer:user:read"),
        ("revoking an unknown grant", history, revoke("grant_none"), "not_found", "no live grant grant_none"),
        ("ending an assignment twice", history, unassign("asg_uma"), "not_found", "no live assignment asg_uma"),
        ("removing a resource not in the group", membership, leave("blue", "project/p1"), "not_found", "project/p1 is not in group blue"),
        ("a catalog redefining a built-in type", custom, set_catalog(&[("user", &["read"])]), "invalid", "user is a built-in type and cannot be redefined"),
        ("a catalog type without actions", custom, set_catalog(&[("project", &[])]), "invalid", "project: list 1-64 actions"),
        ("a catalog action that is not a name", custom, set_catalog(&[("project", &["Read"])]), "invalid", "is not an action"),
        ("a window that ends before it starts", custom, allow("grant_x", "alice", "project:read").from("2026-02-01T00:00:00Z").until("2026-01-01T00:00:00Z").into(), "invalid", "valid_until must be after valid_from"),
        ("an empty window", custom, assign("asg_x", "alice", "viewer").from(T0).until(T0).into(), "invalid", "valid_until must be after valid_from"),
        ("hours in an unknown time zone", custom, allow("grant_x", "alice", "project:read").hours("09:00", "17:00", "Mars/Olympus").into(), "invalid", "not an IANA time zone"),
        ("hours that start when they end", custom, allow("grant_x", "alice", "project:read").hours("09:00", "09:00", "UTC").into(), "invalid", "from and until must differ"),
        ("an empty address list", custom, allow("grant_x", "alice", "project:read").ips(&[]).into(), "invalid", "source_ip: list 1-100 CIDR ranges"),
    ]
}

fn kind(e: &PolicyError) -> &'static str {
    match e {
        PolicyError::Invalid { .. } => "invalid",
        PolicyError::UnknownPermission(_) => "unknown_permission",
        PolicyError::NotFound(_) => "not_found",
        PolicyError::Conflict(_) => "conflict",
    }
}

#[test]
fn decide_refuses_what_would_make_the_policy_wrong() {
    let mut failures = Vec::new();
    for (name, history, command, want_kind, fragment) in refusals() {
        match history().decide(command) {
            Err(e) if kind(&e) == want_kind && e.to_string().contains(fragment) => {}
            Err(e) => failures.push(format!(
                "{name}: expected {want_kind} with {fragment:?}, got {} {e}",
                kind(&e)
            )),
            Ok(events) => failures.push(format!("{name}: accepted, giving {events:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn an_unknown_permission_is_refused_with_the_known_ones() {
    let world = custom();
    let Err(PolicyError::UnknownPermission(e)) =
        world.decide(allow("grant_x", "alice", "project:fly"))
    else {
        panic!("project:fly was not refused as unknown");
    };
    assert_eq!(e.permission, "project:fly");
    for known in [
        "project:read",
        "project:deploy",
        "billing:export",
        "key:verify",
        "decision:execute",
    ] {
        assert!(
            e.known.iter().any(|k| k == known),
            "{known} is missing from {:?}",
            e.known
        );
    }
    assert!(!e.known.iter().any(|k| k == "project:fly"));
}

#[test]
fn deleting_a_role_ends_its_grants_and_assignments_each_as_an_event() {
    let world = world()
        .catalog(&[("project", &["read", "deploy"])])
        .role("ops", &[])
        .run(allow("grant_ops_deploy", "role:ops", "project:deploy"))
        .run(deny("grant_ops_read", "role:ops", "project:read").on("project/p1"))
        .run(allow("grant_other", "olga", "project:read"))
        .run(assign("asg_olga", "olga", "ops"))
        .run(assign("asg_oleg", "oleg", "ops").on("type:project"))
        .run(assign("asg_viewer", "olga", "viewer"))
        .run(revoke("grant_ops_read"));
    let events = world.decide(delete_role("ops")).unwrap();
    assert_eq!(
        events,
        vec![
            PolicyEvent::GrantRevoked {
                id: "grant_ops_deploy".into(),
                reason: EndReason::RoleDeleted
            },
            PolicyEvent::AssignmentEnded {
                id: "asg_olga".into(),
                reason: EndReason::RoleDeleted
            },
            PolicyEvent::AssignmentEnded {
                id: "asg_oleg".into(),
                reason: EndReason::RoleDeleted
            },
            PolicyEvent::RoleDeleted { name: "ops".into() },
        ]
    );
    let after = world.run(delete_role("ops"));
    assert!(!after.policy().role_exists("ops"));
    assert!(
        after
            .policy()
            .grant("grant_other")
            .is_some_and(|g| g.ended.is_none())
    );
    assert!(
        after
            .policy()
            .assignment("asg_viewer")
            .is_some_and(|a| a.ended.is_none())
    );
    assert_eq!(
        after
            .check("olga", "project:read", "project/p1", "now", "", false)
            .verdict,
        Allow
    );
}

#[test]
fn commands_that_change_nothing_append_nothing() {
    let world = custom().run(join("blue", "project/p1"));
    assert_eq!(world.decide(join("blue", "project/p1")), Ok(vec![]));
    assert_eq!(
        world.decide(reparent("lead", &["dev_a", "dev_b"])),
        Ok(vec![])
    );
    let same = set_catalog(&[
        ("project", &["read", "update", "delete", "deploy"]),
        ("billing", &["read", "export"]),
    ]);
    assert_eq!(world.decide(same), Ok(vec![]));
}

/// The history of the worked examples in `docs/authorization.md`, event for event, up to the
/// deletion of role `release`.
fn documented_before_deletion() -> World {
    world()
        .at("2026-01-05T09:00:00Z")
        .catalog(&[("project", &["read", "update", "deploy"])]) // 1
        .run(PolicyCommand::CreateRole {
            name: "release".into(),
            description: Some("Ships projects.".into()),
            parents: vec!["developer".into()],
        }) // 2
        .run(allow("grant_1", "role:release", "project:deploy").on("type:project")) // 3
        .run(assign("asg_1", "alice", "release")) // 4
        .at("2026-01-12T09:00:00Z")
        .run(join("prod", "project/p42")) // 5
        .run(deny("grant_2", "alice", "project:*").on("group:prod")) // 6
        .at("2026-02-27T09:00:00Z")
        .run(
            allow("grant_3", "bob", "project:update")
                .on("project/p42")
                .from("2026-03-01T00:00:00Z")
                .until("2026-03-08T00:00:00Z")
                .hours("22:00", "06:00", "Europe/Paris")
                .ips(&["10.0.0.0/8"]),
        ) // 7
}

/// [`documented_before_deletion`], then the deletion of `release` on Mar 10.
fn documented() -> World {
    documented_before_deletion()
        .at("2026-03-10T09:00:00Z")
        .run(delete_role("release")) // 8, 9, 10
}

/// Each check of the worked examples, asked at the moment the docs give: the ledger as it stood
/// then (its position) and that time. (moment, principal, permission, resource, ip, verdict,
/// matched, position).
#[rustfmt::skip]
const DOCUMENTED: &[(&str, &str, &str, &str, &str, Verdict, &str, u64)] = &[
    // 1. Inheritance through a custom role over a built-in one.
    ("2026-01-06T00:00:00Z", "alice", "project:deploy", "project/p42", "", Allow, "assignment asg_1@4 > role release@2 > grant grant_1@3", 4),
    ("2026-01-06T00:00:00Z", "alice", "key:create", "key/k1", "", Allow, "assignment asg_1@4 > role release@2 > role developer@0 > grant builtin:developer:key:create@0", 4),
    ("2026-01-06T00:00:00Z", "alice", "project:update", "project/p42", "", Deny, "", 4),
    // 2. A deny on a group wins over the role's allow.
    ("2026-01-13T00:00:00Z", "alice", "project:deploy", "project/p42", "", Deny, "group prod@5 > grant grant_2@6", 6),
    ("2026-01-13T00:00:00Z", "alice", "project:deploy", "project/p7", "", Allow, "assignment asg_1@4 > role release@2 > grant grant_1@3", 6),
    // 3. A window and two conditions.
    ("2026-03-03T22:30:00Z", "bob", "project:update", "project/p42", "10.1.2.3", Allow, "grant grant_3@7", 7),
    ("2026-03-03T22:30:00Z", "bob", "project:update", "project/p42", "", Deny, "", 7),
    ("2026-03-03T12:00:00Z", "bob", "project:update", "project/p42", "10.1.2.3", Deny, "", 7),
    ("2026-03-08T00:30:00Z", "bob", "project:update", "project/p42", "10.1.2.3", Deny, "", 7),
    // 4. A role's deletion, and checks about earlier instants.
    ("2026-03-11T00:00:00Z", "alice", "project:deploy", "project/p7", "", Deny, "", 10),
    ("2026-02-01T00:00:00Z", "alice", "project:deploy", "project/p7", "", Allow, "assignment asg_1@4 > role release@2 > grant grant_1@3", 6),
    ("2026-03-10T09:00:00Z", "alice", "project:deploy", "project/p7", "", Deny, "", 10),
];

#[test]
fn the_worked_examples_in_the_docs_hold() {
    let world = documented();
    for (moment, principal, p, on, ip, verdict, matched, position) in DOCUMENTED {
        let d = world.check(principal, p, on, &format!("at {moment}"), ip, false);
        let got: Vec<String> = d.matched.iter().map(link).collect();
        assert_eq!(
            (d.verdict, got.join(" > ")),
            (*verdict, (*matched).to_owned()),
            "{principal} {p} on {on} at {moment}: {}",
            d.reason
        );
        assert_eq!(
            world.policy().position_at(ts(moment)),
            *position,
            "{moment}"
        );
    }
    let reason = |p: &str, on: &str, moment: &str| {
        world
            .check("alice", p, on, &format!("at {moment}"), "", false)
            .reason
    };
    assert_eq!(
        reason("project:deploy", "project/p42", "2026-01-06T00:00:00Z"),
        "grant grant_1 allows project:deploy on project/p42 through role release (assignment asg_1)"
    );
    assert_eq!(
        reason("key:create", "key/k1", "2026-01-06T00:00:00Z"),
        "grant builtin:developer:key:create allows key:create on key/k1 through role release > developer (assignment asg_1)"
    );
    assert_eq!(
        reason("project:deploy", "project/p42", "2026-01-13T00:00:00Z"),
        "grant grant_2 denies project:deploy on project/p42 via group prod"
    );
    assert_eq!(
        reason("project:update", "project/p42", "2026-01-06T00:00:00Z"),
        "no grant allows project:update on project/p42"
    );
    let deletion = documented_before_deletion()
        .decide(delete_role("release"))
        .unwrap();
    assert_eq!(
        deletion,
        vec![
            PolicyEvent::GrantRevoked {
                id: "grant_1".into(),
                reason: EndReason::RoleDeleted
            },
            PolicyEvent::AssignmentEnded {
                id: "asg_1".into(),
                reason: EndReason::RoleDeleted
            },
            PolicyEvent::RoleDeleted {
                name: "release".into()
            },
        ]
    );
}
