//! Resolution: may this principal do this on that, as the policy stood at some instant, and why.
//!
//! 1. A grant *applies* to a check when it existed at the instant (made at or before the position,
//!    not yet revoked), its window is in force at the time, its scope covers the resource, its
//!    conditions hold, and it reaches the principal: it names the principal, or it names a role the
//!    principal holds through an applicable assignment (in force, existing, and whose own scope
//!    covers the resource), directly or through any chain of parents.
//! 2. An applicable deny whose permission overlaps the one asked wins.
//! 3. Otherwise an applicable allow whose permission covers the one asked allows.
//! 4. Otherwise the answer is deny: nothing is allowed by default.
//!
//! A condition that needs context the check did not give (a source-address condition without an
//! address) counts as failed for an allow and as met for a deny, so missing context never allows
//! more.

use std::fmt::Write as _;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::event::Verdict;
use super::model::{ANY_ID, AsOf, ByPermission, Membership, Policy};
use super::vocabulary::{Effect, Permission, Resource, Scope, WindowState};

/// What a check is about, beyond the permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// The tenant as a whole: only tenant-wide grants and assignments count.
    Tenant,
    /// Every resource of a type: tenant-wide and type-wide ones count.
    Type(&'a str),
    /// A group as a whole: tenant-wide and group-wide ones count.
    Group(&'a str),
    /// One resource: everything that covers it, groups included.
    Resource(&'a Resource),
}

/// One question to the policy.
#[derive(Debug, Clone, Copy)]
pub struct Check<'a> {
    /// Who.
    pub principal: &'a str,
    /// What, usually concrete; a pattern asks whether the principal holds all of it.
    pub permission: &'a Permission,
    /// On what.
    pub target: Target<'a>,
    /// The request's source address, for `source_ip` conditions.
    pub ip: Option<IpAddr>,
    /// As of when.
    pub as_of: AsOf,
    /// Whether to say, grant by grant, why each candidate did or did not apply.
    pub explain: bool,
}

/// The kind of a link in a decision's provenance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchKind {
    /// A grant (`grant_...`, or `builtin:{role}:{permission}` at position 0).
    Grant,
    /// An assignment of a role to the principal.
    Assignment,
    /// A role reached: its definition (position 0 for a built-in role).
    Role,
    /// The resource's membership of a group.
    Group,
    /// The event that took the principal out of service (disabled or deleted): nothing is allowed
    /// to it.
    Principal,
    /// The suspension of the tenant: nothing is allowed in it.
    Tenant,
}

/// One link of provenance: the thing, and the position of the event that made it so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matched {
    /// What kind of thing.
    pub kind: MatchKind,
    /// Its id (a role's or a group's name).
    pub id: String,
    /// The event that made it what it was (0: defined by the service).
    pub position: u64,
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allow or deny.
    pub verdict: Verdict,
    /// Why, in words.
    pub reason: String,
    /// The chain that decided: assignment, roles, group membership, grant. Empty for a default
    /// deny.
    pub matched: Vec<Matched>,
    /// With `explain`: every candidate grant and why it did or did not apply.
    pub trace: Vec<String>,
}

#[derive(Clone, Copy)]
struct Link<'p> {
    kind: MatchKind,
    id: &'p str,
    position: u64,
    parent: Option<usize>,
}

struct Walk<'p> {
    links: Vec<Link<'p>>,
    allow: Option<usize>,
    deny: Option<usize>,
    trace: Vec<String>,
}

impl<'p> Walk<'p> {
    fn push(
        &mut self,
        kind: MatchKind,
        id: &'p str,
        position: u64,
        parent: Option<usize>,
    ) -> usize {
        self.links.push(Link {
            kind,
            id,
            position,
            parent,
        });
        self.links.len() - 1
    }

    fn chain(&self, mut at: Option<usize>) -> Vec<Matched> {
        let mut out = Vec::new();
        while let Some(link) = at.and_then(|i| self.links.get(i)) {
            out.push(Matched {
                kind: link.kind,
                id: link.id.to_owned(),
                position: link.position,
            });
            at = link.parent;
        }
        out.reverse();
        out
    }
}

/// Whether a scope covers the target as of `as_of`; `Some(membership)` names the group membership
/// it went through.
fn covers<'p>(
    policy: &'p Policy,
    scope: Option<&'p Scope>,
    target: Target<'_>,
    as_of: AsOf,
) -> Option<Option<&'p Membership>> {
    let Some(scope) = scope else {
        return Some(None);
    };
    match (scope, target) {
        (Scope::ResourceType(t), Target::Type(u)) => (t == u).then_some(None),
        (Scope::ResourceType(t), Target::Resource(r)) => (*t == r.resource_type).then_some(None),
        (Scope::Resource(s), Target::Resource(r)) => (s == r).then_some(None),
        (Scope::Group(g), Target::Group(h)) => (g == h).then_some(None),
        (Scope::Group(g), Target::Resource(r)) => policy
            .memberships(&r.resource_type, &r.id)
            .iter()
            .find(|m| m.group == *g && as_of.sees(m.added, m.removed))
            .map(Some),
        _ => None,
    }
}

/// Evaluates `check` against `policy`.
pub fn evaluate(policy: &Policy, check: &Check<'_>) -> Decision {
    let mut walk = Walk {
        links: Vec::with_capacity(8),
        allow: None,
        deny: None,
        trace: Vec::new(),
    };
    let keys = Keys::of(policy, check.permission);
    let entry = policy.principals.get(check.principal);
    if let Some(entry) = entry {
        consider(policy, &entry.grants, &keys, check, None, &mut walk);
    }
    let assignments = entry.map_or(&[][..], |e| e.assignments.as_slice());
    let mut visited: Vec<&str> = Vec::new();
    let mut stack: Vec<(&str, Option<usize>)> = Vec::new();
    for a in assignments
        .iter()
        .filter_map(|i| policy.assignments.get(*i))
    {
        // The first applicable deny decides, and the rest of the walk could only add to the trace.
        if walk.deny.is_some() && !check.explain {
            break;
        }
        if !check.as_of.sees(a.created, a.ended.map(|e| e.0)) {
            continue;
        }
        match a.window.at(check.as_of.time) {
            WindowState::Active => {}
            state => {
                if check.explain {
                    walk.trace.push(format!(
                        "assignment {} of role {} is not in force ({})",
                        a.id,
                        a.role,
                        window_word(state)
                    ));
                }
                continue;
            }
        }
        let Some(via) = covers(policy, a.on.as_ref(), check.target, check.as_of) else {
            if check.explain {
                walk.trace.push(format!(
                    "assignment {} of role {} does not cover the resource",
                    a.id, a.role
                ));
            }
            continue;
        };
        let mut head = Some(walk.push(MatchKind::Assignment, &a.id, a.created.position, None));
        if let Some(m) = via {
            head = Some(walk.push(MatchKind::Group, &m.group, m.added.position, head));
        }
        visited.clear();
        stack.clear();
        stack.push((a.role.as_str(), head));
        while let Some((role, parent)) = stack.pop() {
            if walk.deny.is_some() && !check.explain {
                break;
            }
            if visited.contains(&role) {
                continue;
            }
            visited.push(role);
            let Some((entry, parents, stamp)) = policy.role_at(role, check.as_of) else {
                continue;
            };
            let here = Some(walk.push(
                MatchKind::Role,
                role,
                stamp.map_or(0, |s| s.position),
                parent,
            ));
            consider(policy, &entry.grants, &keys, check, here, &mut walk);
            stack.extend(parents.iter().rev().map(|p| (p.as_str(), here)));
        }
    }
    let (verdict, at) = match (walk.deny, walk.allow) {
        (Some(d), _) => (Verdict::Deny, Some(d)),
        (None, Some(a)) => (Verdict::Allow, Some(a)),
        (None, None) => (Verdict::Deny, None),
    };
    let matched = walk.chain(at);
    let reason = reason(verdict, &matched, check);
    Decision {
        verdict,
        reason,
        matched,
        trace: walk.trace,
    }
}

fn window_word(state: WindowState) -> &'static str {
    match state {
        WindowState::NotYet => "not yet valid",
        WindowState::Expired => "expired",
        WindowState::Active => "in force",
    }
}

/// Considers the grants of one subject that may bear on the permission asked.
/// The keys a concrete permission's grants are filed under: its type or `*`, with its action or
/// `*` (those no grant names are left out). `None` for a pattern, whose grants are all weighed.
struct Keys {
    keys: [(u32, u32); 4],
    len: usize,
    concrete: bool,
}

impl Keys {
    fn of(policy: &Policy, asked: &Permission) -> Self {
        let mut out = Self {
            keys: [(ANY_ID, ANY_ID); 4],
            len: 0,
            concrete: asked.is_concrete(),
        };
        if !out.concrete {
            return out;
        }
        let t = policy.name_id(&asked.resource_type);
        let a = policy.name_id(&asked.action);
        for t in [t, Some(ANY_ID)].into_iter().flatten() {
            for a in [a, Some(ANY_ID)].into_iter().flatten() {
                if let Some(slot) = out.keys.get_mut(out.len) {
                    *slot = (t, a);
                    out.len += 1;
                }
            }
        }
        out
    }
}

fn consider<'p>(
    policy: &'p Policy,
    by: &'p ByPermission,
    keys: &Keys,
    check: &Check<'_>,
    parent: Option<usize>,
    walk: &mut Walk<'p>,
) {
    if by.is_empty() {
        return;
    }
    if keys.concrete {
        for key in keys.keys.iter().take(keys.len) {
            if let Some(ids) = by.get(key) {
                for i in ids {
                    // Filed under the asked type (or `*`) and action (or `*`): it covers the
                    // asked permission, and overlaps it, without comparing the names again.
                    weigh(policy, *i, check, parent, walk, true);
                }
            }
        }
    } else {
        for ids in by.values() {
            for i in ids {
                weigh(policy, *i, check, parent, walk, false);
            }
        }
    }
}

fn weigh<'p>(
    policy: &'p Policy,
    i: usize,
    check: &Check<'_>,
    parent: Option<usize>,
    walk: &mut Walk<'p>,
    covered: bool,
) {
    let Some(g) = policy.grants.get(i) else {
        return;
    };
    let relevant = match g.effect {
        Effect::Deny => walk.deny.is_none() && (covered || g.permission.overlaps(check.permission)),
        Effect::Allow => walk.allow.is_none() && (covered || g.permission.covers(check.permission)),
    };
    if !relevant || !check.as_of.sees(g.created, g.ended.map(|e| e.0)) {
        return;
    }
    let skip = |walk: &mut Walk<'p>, why: &str| {
        if check.explain {
            walk.trace
                .push(format!("grant {} does not apply: {why}", g.id));
        }
    };
    match g.window.at(check.as_of.time) {
        WindowState::Active => {}
        state => return skip(walk, window_word(state)),
    }
    let Some(via) = covers(policy, g.on.as_ref(), check.target, check.as_of) else {
        return skip(walk, "its scope does not cover the resource");
    };
    if let Some(conditions) = &g.conditions {
        let holds = conditions
            .hold(check.as_of.time, check.ip)
            .unwrap_or(g.effect == Effect::Deny);
        if !holds {
            return skip(walk, "its conditions do not hold");
        }
    }
    let mut at = parent;
    if let Some(m) = via {
        at = Some(walk.push(MatchKind::Group, &m.group, m.added.position, at));
    }
    let at = Some(walk.push(MatchKind::Grant, &g.id, g.created.position, at));
    if check.explain {
        walk.trace.push(format!(
            "grant {} applies: {} {}",
            g.id,
            if g.effect == Effect::Deny {
                "deny"
            } else {
                "allow"
            },
            g.permission
        ));
    }
    match g.effect {
        Effect::Deny => walk.deny = at,
        Effect::Allow => walk.allow = at,
    }
}

fn reason(verdict: Verdict, matched: &[Matched], check: &Check<'_>) -> String {
    // Written into one buffer: the reason is built for every check, so it is on the hot path.
    let mut out = String::with_capacity(128);
    let grant = matched.iter().rev().find(|m| m.kind == MatchKind::Grant);
    let _ = match (grant, verdict) {
        (None, _) => write!(out, "no grant allows "),
        (Some(g), Verdict::Deny) => write!(out, "grant {} denies ", g.id),
        (Some(g), Verdict::Allow) => write!(out, "grant {} allows ", g.id),
    };
    let _ = write!(out, "{} on ", check.permission);
    let _ = match check.target {
        Target::Tenant => write!(out, "the tenant"),
        Target::Type(t) => write!(out, "every {t}"),
        Target::Group(g) => write!(out, "group {g}"),
        Target::Resource(r) => write!(out, "{r}"),
    };
    if grant.is_none() {
        return out;
    }
    if let Some(a) = matched.iter().find(|m| m.kind == MatchKind::Assignment) {
        out.push_str(" through role ");
        let roles = matched.iter().filter(|m| m.kind == MatchKind::Role);
        for (i, role) in roles.enumerate() {
            if i > 0 {
                out.push_str(" > ");
            }
            out.push_str(&role.id);
        }
        let _ = write!(out, " (assignment {})", a.id);
    }
    if let Some(g) = matched.iter().find(|m| m.kind == MatchKind::Group) {
        let _ = write!(out, " via group {}", g.id);
    }
    out
}

/// A grant that reaches a principal, and how.
#[derive(Debug, Clone)]
pub struct Effective<'p> {
    /// The grant.
    pub grant: &'p super::model::Grant,
    /// How it reaches the principal: empty for a grant to the principal; otherwise the assignment
    /// and the roles from the assigned one to the grant's.
    pub via: Vec<Matched>,
    /// The assignment's scope, which narrows the grant's (`None`: no narrowing).
    pub assignment_on: Option<&'p Scope>,
}

/// Every grant that reaches `principal` as of `as_of` (existing, in force; conditions are not
/// evaluated, as they depend on each check's context), directly or through an assignment and
/// inheritance. A grant reached through several paths is listed once per path.
pub fn effective<'p>(policy: &'p Policy, principal: &str, as_of: AsOf) -> Vec<Effective<'p>> {
    let in_force = |g: &&'p super::model::Grant| g.window.at(as_of.time).is_active();
    let mut out: Vec<Effective<'p>> = policy
        .principal_grants_of(principal, as_of)
        .into_iter()
        .filter(in_force)
        .map(|grant| Effective {
            grant,
            via: vec![],
            assignment_on: None,
        })
        .collect();
    for a in policy.assignments_of(principal, as_of) {
        let start = vec![Matched {
            kind: MatchKind::Assignment,
            id: a.id.clone(),
            position: a.created.position,
        }];
        let mut visited: Vec<&str> = Vec::new();
        let mut stack: Vec<(&str, Vec<Matched>)> = vec![(a.role.as_str(), start)];
        while let Some((role, path)) = stack.pop() {
            if visited.contains(&role) {
                continue;
            }
            visited.push(role);
            let Some((entry, parents, stamp)) = policy.role_at(role, as_of) else {
                continue;
            };
            let mut here = path;
            here.push(Matched {
                kind: MatchKind::Role,
                id: role.to_owned(),
                position: stamp.map_or(0, |s| s.position),
            });
            for grant in entry
                .grants
                .values()
                .flatten()
                .filter_map(|i| policy.grants.get(*i))
                .filter(|g| as_of.sees(g.created, g.ended.map(|e| e.0)))
                .filter(in_force)
            {
                out.push(Effective {
                    grant,
                    via: here.clone(),
                    assignment_on: a.on.as_ref(),
                });
            }
            for p in parents.iter().rev() {
                stack.push((p.as_str(), here.clone()));
            }
        }
    }
    out
}

/// Who may do what on `resource` as of `as_of`: for every principal that appears in the policy,
/// each permission (as granted, possibly a pattern) that some grant reaching them allows on the
/// resource and no deny takes away, with the decision that proves it. Conditions are evaluated
/// with no source address (so address-bound allows are left out).
pub fn holders<'p>(
    policy: &'p Policy,
    resource: &Resource,
    as_of: AsOf,
) -> Vec<(&'p str, Permission, Decision)> {
    let target = Target::Resource(resource);
    let mut out = Vec::new();
    for principal in policy.principals() {
        let mut asked: Vec<&Permission> = Vec::new();
        for e in effective(policy, principal, as_of) {
            if e.grant.effect == Effect::Allow
                && covers(policy, e.grant.on.as_ref(), target, as_of).is_some()
                && covers(policy, e.assignment_on, target, as_of).is_some()
                && !asked.contains(&&e.grant.permission)
            {
                asked.push(&e.grant.permission);
            }
        }
        for permission in asked {
            let decision = evaluate(
                policy,
                &Check {
                    principal,
                    permission,
                    target,
                    ip: None,
                    as_of,
                    explain: false,
                },
            );
            if decision.verdict == Verdict::Allow {
                out.push((principal, permission.clone(), decision));
            }
        }
    }
    out
}
