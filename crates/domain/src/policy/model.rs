//! A tenant's policy as its events have made it, with its whole history: nothing is forgotten when
//! it ends, so the same structure answers for now and for any past position.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::event::{EndReason, PolicyEvent};
use super::vocabulary::{
    BUILTIN_ROLES, Catalog, Conditions, Effect, Permission, Resource, Scope, Subject, Window,
    builtin_role,
};
use crate::event::Timestamp;

/// When something happened in the log: the event's position and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// The event's position.
    pub position: u64,
    /// The event's `occurred_at`.
    pub at: Timestamp,
}

/// A grant, live or ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// `grant_...`, or `builtin:{role}:{permission}` for a built-in role's default.
    pub id: String,
    /// To whom.
    pub subject: Subject,
    /// What.
    pub permission: Permission,
    /// On what (`None`: the whole tenant).
    pub on: Option<Scope>,
    /// Allow or deny.
    pub effect: Effect,
    /// When it is in force.
    pub window: Window,
    /// Extra requirements.
    pub conditions: Option<Conditions>,
    /// Who made it.
    pub granted_by: String,
    /// When it was made (position 0 for built-in defaults).
    pub created: Stamp,
    /// When and why it ended.
    pub ended: Option<(Stamp, EndReason)>,
}

/// An assignment of a role, live or ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// `asg_...`.
    pub id: String,
    /// Who holds the role.
    pub principal: String,
    /// The role.
    pub role: String,
    /// On what (`None`: the whole tenant).
    pub on: Option<Scope>,
    /// When it is in force.
    pub window: Window,
    /// Who assigned it.
    pub assigned_by: String,
    /// The earlier model's role it carries over, if any.
    pub migrated_from: Option<String>,
    /// When it was made.
    pub created: Stamp,
    /// When and why it ended.
    pub ended: Option<(Stamp, EndReason)>,
}

/// One version of a custom role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleVersion {
    /// The event that set it.
    pub stamp: Stamp,
    /// Description.
    pub description: Option<String>,
    /// Parents.
    pub parents: Vec<String>,
}

/// A custom role from its creation to its deletion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleLife {
    /// Its versions, oldest first (the first is its creation).
    pub versions: Vec<RoleVersion>,
    /// When it was deleted.
    pub deleted: Option<Stamp>,
}

impl RoleLife {
    fn created(&self) -> Option<Stamp> {
        self.versions.first().map(|v| v.stamp)
    }
}

/// A resource's membership of a group, from its addition to its removal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The group.
    pub group: String,
    /// When it joined.
    pub added: Stamp,
    /// When it left.
    pub removed: Option<Stamp>,
}

/// The instant a question is asked about: which events had happened (those at or before
/// `position`), and the time windows and conditions are evaluated at (`time`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsOf {
    /// The last position counted.
    pub position: u64,
    /// The time of the question.
    pub time: Timestamp,
}

impl AsOf {
    /// Everything applied so far, at `time`.
    pub fn now(time: Timestamp) -> Self {
        Self {
            position: u64::MAX,
            time,
        }
    }

    /// Whether something made at `created` and ended at `ended` existed then.
    pub fn sees(&self, created: Stamp, ended: Option<Stamp>) -> bool {
        created.position <= self.position && ended.is_none_or(|e| e.position > self.position)
    }
}

/// The maps of the policy: keyed by names, probed several times per check. foldhash is several
/// times faster than SipHash on short keys; its seed is drawn once per process, which keeps keys
/// chosen by tenants from being arranged to collide in another process.
pub(super) type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Grants by permission: the interned ids of the resource type and the action (either may be
/// [`ANY_ID`], for `*`).
pub(super) type ByPermission = Map<(u32, u32), Vec<usize>>;

/// The interned id of `*`.
pub(super) const ANY_ID: u32 = 0;

/// What the policy keeps of a role: its lives (custom roles) or its parents (built-in ones), and
/// the grants to it and assignments of it, so that a check finds all with one lookup.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct RoleEntry {
    pub(super) lives: Vec<RoleLife>,
    pub(super) builtin_parents: Option<Vec<String>>,
    pub(super) grants: ByPermission,
    pub(super) assignments: Vec<usize>,
}

/// What the policy keeps of a principal: the grants to it and its assignments.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct PrincipalEntry {
    pub(super) grants: ByPermission,
    pub(super) assignments: Vec<usize>,
}

/// A tenant's policy: its catalog, roles, grants, assignments and groups, with their history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Policy {
    /// The tenant's catalog, as it is now.
    pub catalog: Catalog,
    /// The version of the policy stream applied.
    pub version: u64,
    pub(super) roles: Map<String, RoleEntry>,
    pub(super) grants: Vec<Grant>,
    pub(super) grant_ids: Map<String, usize>,
    pub(super) assignments: Vec<Assignment>,
    pub(super) assignment_ids: Map<String, usize>,
    pub(super) principals: Map<String, PrincipalEntry>,
    /// Resource types' and actions' names, interned so grants are filed under integer keys.
    names: Map<String, u32>,
    /// Resource type → id → memberships.
    pub(super) members: Map<String, Map<String, Vec<Membership>>>,
    /// The stamps applied, with times made non-decreasing, to find the position of an instant.
    timeline: Vec<Stamp>,
}

impl Default for Policy {
    fn default() -> Self {
        Self::new()
    }
}

impl Policy {
    /// A tenant's policy before any event: the built-in roles and their default grants.
    pub fn new() -> Self {
        let mut policy = Self {
            catalog: Catalog::default(),
            version: 0,
            roles: BUILTIN_ROLES
                .iter()
                .map(|r| {
                    let entry = RoleEntry {
                        builtin_parents: Some(r.parent.map(str::to_owned).into_iter().collect()),
                        ..RoleEntry::default()
                    };
                    (r.name.to_owned(), entry)
                })
                .collect(),
            grants: Vec::new(),
            grant_ids: Map::default(),
            assignments: Vec::new(),
            assignment_ids: Map::default(),
            principals: Map::default(),
            names: std::iter::once((super::vocabulary::ANY.to_owned(), ANY_ID)).collect(),
            members: Map::default(),
            timeline: Vec::new(),
        };
        let origin = Stamp {
            position: 0,
            at: Timestamp::from_datetime(time::OffsetDateTime::UNIX_EPOCH),
        };
        for role in BUILTIN_ROLES {
            for p in role.permissions {
                if let Ok(permission) = Permission::parse(p) {
                    policy.add_grant(Grant {
                        id: format!("builtin:{}:{p}", role.name),
                        subject: Subject::Role(role.name.to_owned()),
                        permission,
                        on: None,
                        effect: Effect::Allow,
                        window: Window::default(),
                        conditions: None,
                        granted_by: "system".to_owned(),
                        created: origin,
                        ended: None,
                    });
                }
            }
        }
        policy
    }

    fn intern(&mut self, name: &str) -> u32 {
        if let Some(id) = self.names.get(name) {
            return *id;
        }
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.insert(name.to_owned(), id);
        id
    }

    /// The interned id of a resource type's or an action's name, if any grant names it.
    pub(super) fn name_id(&self, name: &str) -> Option<u32> {
        self.names.get(name).copied()
    }

    fn add_grant(&mut self, grant: Grant) {
        let i = self.grants.len();
        let key = (
            self.intern(&grant.permission.resource_type),
            self.intern(&grant.permission.action),
        );
        let by = match &grant.subject {
            Subject::Principal(p) => &mut self.principals.entry(p.clone()).or_default().grants,
            Subject::Role(r) => &mut self.roles.entry(r.clone()).or_default().grants,
        };
        by.entry(key).or_default().push(i);
        self.grant_ids.insert(grant.id.clone(), i);
        self.grants.push(grant);
    }

    /// Applies one event of the tenant's policy stream, at `stamp`.
    pub fn apply(&mut self, stamp: Stamp, event: &PolicyEvent) {
        self.version += 1;
        let at = match self.timeline.last() {
            Some(last) if last.at > stamp.at => last.at,
            _ => stamp.at,
        };
        self.timeline.push(Stamp {
            position: stamp.position,
            at,
        });
        match event.clone() {
            PolicyEvent::CatalogUpdated { resource_types } => {
                self.catalog.custom = resource_types;
            }
            PolicyEvent::RoleCreated {
                name,
                description,
                parents,
            } => self.roles.entry(name).or_default().lives.push(RoleLife {
                versions: vec![RoleVersion {
                    stamp,
                    description,
                    parents,
                }],
                deleted: None,
            }),
            PolicyEvent::RoleUpdated {
                name,
                description,
                parents,
            } => {
                if let Some(life) = self.live_role_mut(&name) {
                    life.versions.push(RoleVersion {
                        stamp,
                        description,
                        parents,
                    });
                }
            }
            PolicyEvent::RoleDeleted { name } => {
                if let Some(life) = self.live_role_mut(&name) {
                    life.deleted = Some(stamp);
                }
            }
            PolicyEvent::GrantCreated {
                id,
                subject,
                permission,
                on,
                effect,
                valid_from,
                valid_until,
                conditions,
                granted_by,
            } => self.add_grant(Grant {
                id,
                subject,
                permission,
                on,
                effect,
                window: Window {
                    valid_from,
                    valid_until,
                },
                conditions,
                granted_by,
                created: stamp,
                ended: None,
            }),
            PolicyEvent::GrantRevoked { id, reason } => {
                if let Some(g) = self
                    .grant_ids
                    .get(&id)
                    .and_then(|i| self.grants.get_mut(*i))
                {
                    g.ended.get_or_insert((stamp, reason));
                }
            }
            PolicyEvent::AssignmentCreated {
                id,
                principal,
                role,
                on,
                valid_from,
                valid_until,
                assigned_by,
                migrated_from,
            } => {
                let i = self.assignments.len();
                self.principals
                    .entry(principal.clone())
                    .or_default()
                    .assignments
                    .push(i);
                self.roles
                    .entry(role.clone())
                    .or_default()
                    .assignments
                    .push(i);
                self.assignment_ids.insert(id.clone(), i);
                self.assignments.push(Assignment {
                    id,
                    principal,
                    role,
                    on,
                    window: Window {
                        valid_from,
                        valid_until,
                    },
                    assigned_by,
                    migrated_from,
                    created: stamp,
                    ended: None,
                });
            }
            PolicyEvent::AssignmentEnded { id, reason } => {
                if let Some(a) = self
                    .assignment_ids
                    .get(&id)
                    .and_then(|i| self.assignments.get_mut(*i))
                {
                    a.ended.get_or_insert((stamp, reason));
                }
            }
            PolicyEvent::GroupMemberAdded { group, resource } => {
                let list = self
                    .members
                    .entry(resource.resource_type)
                    .or_default()
                    .entry(resource.id)
                    .or_default();
                if !list.iter().any(|m| m.group == group && m.removed.is_none()) {
                    list.push(Membership {
                        group,
                        added: stamp,
                        removed: None,
                    });
                }
            }
            PolicyEvent::GroupMemberRemoved { group, resource } => {
                if let Some(m) = self
                    .members
                    .get_mut(&resource.resource_type)
                    .and_then(|ids| ids.get_mut(&resource.id))
                    .and_then(|list| {
                        list.iter_mut()
                            .find(|m| m.group == group && m.removed.is_none())
                    })
                {
                    m.removed = Some(stamp);
                }
            }
        }
    }

    fn live_role_mut(&mut self, name: &str) -> Option<&mut RoleLife> {
        self.roles
            .get_mut(name)
            .and_then(|e| e.lives.last_mut())
            .filter(|l| l.deleted.is_none())
    }

    /// The position of the policy as it stood at `time`: the last event whose time (made
    /// non-decreasing along the log) is not after it; 0 before the first.
    pub fn position_at(&self, time: Timestamp) -> u64 {
        let n = self.timeline.partition_point(|s| s.at <= time);
        n.checked_sub(1)
            .and_then(|i| self.timeline.get(i))
            .map_or(0, |s| s.position)
    }

    /// The last position applied (0 before any event).
    pub fn head(&self) -> u64 {
        self.timeline.last().map_or(0, |s| s.position)
    }

    /// The parents of `role` as of `as_of`, with the stamp of the event that set them (`None` for
    /// a built-in role); `None` when the role did not exist then.
    pub fn parents_at(&self, role: &str, as_of: AsOf) -> Option<(&[String], Option<Stamp>)> {
        self.role_at(role, as_of)
            .map(|(_, parents, stamp)| (parents, stamp))
    }

    /// What the policy keeps of `role`, with its parents and their stamp as of `as_of`; `None`
    /// when the role did not exist then. One lookup, for the walk of a check.
    pub(super) fn role_at(
        &self,
        role: &str,
        as_of: AsOf,
    ) -> Option<(&RoleEntry, &[String], Option<Stamp>)> {
        let entry = self.roles.get(role)?;
        if let Some(parents) = &entry.builtin_parents {
            return Some((entry, parents, None));
        }
        let life = entry
            .lives
            .iter()
            .rev()
            .find(|l| l.created().is_some_and(|c| as_of.sees(c, l.deleted)))?;
        let version = life
            .versions
            .iter()
            .rev()
            .find(|v| v.stamp.position <= as_of.position)?;
        Some((entry, &version.parents, Some(version.stamp)))
    }

    /// Whether `role` exists now (built-in or live custom role).
    pub fn role_exists(&self, role: &str) -> bool {
        builtin_role(role).is_some()
            || self
                .roles
                .get(role)
                .and_then(|e| e.lives.last())
                .is_some_and(|l| l.deleted.is_none())
    }

    /// The live custom roles with their current description and parents, by name.
    pub fn custom_roles(&self) -> BTreeMap<&str, &RoleVersion> {
        self.roles
            .iter()
            .filter_map(|(name, entry)| {
                let life = entry.lives.last().filter(|l| l.deleted.is_none())?;
                Some((name.as_str(), life.versions.last()?))
            })
            .collect()
    }

    /// A grant by id, live or ended (built-in defaults included).
    pub fn grant(&self, id: &str) -> Option<&Grant> {
        self.grant_ids.get(id).and_then(|i| self.grants.get(*i))
    }

    /// Every grant ever made by an event (built-in defaults excluded), oldest first.
    pub fn grants(&self) -> impl Iterator<Item = &Grant> {
        self.grants.iter().filter(|g| g.created.position > 0)
    }

    /// An assignment by id, live or ended.
    pub fn assignment(&self, id: &str) -> Option<&Assignment> {
        self.assignment_ids
            .get(id)
            .and_then(|i| self.assignments.get(*i))
    }

    /// Every assignment ever made, oldest first.
    pub fn assignments(&self) -> impl Iterator<Item = &Assignment> {
        self.assignments.iter()
    }

    /// The groups `resource` belongs to now.
    pub fn groups_of(&self, resource: &Resource) -> Vec<&str> {
        self.memberships(&resource.resource_type, &resource.id)
            .iter()
            .filter(|m| m.removed.is_none())
            .map(|m| m.group.as_str())
            .collect()
    }

    pub(super) fn memberships(&self, resource_type: &str, id: &str) -> &[Membership] {
        self.members
            .get(resource_type)
            .and_then(|ids| ids.get(id))
            .map_or(&[], Vec::as_slice)
    }

    /// The principals that appear in a grant or an assignment, in no particular order.
    pub fn principals(&self) -> BTreeSet<&str> {
        self.principals.keys().map(String::as_str).collect()
    }

    /// The roles `role` reaches as of `as_of`: itself and every ancestor through parents, each
    /// once, nearest first.
    pub fn roles_reached<'p>(&'p self, role: &'p str, as_of: AsOf) -> Vec<&'p str> {
        let mut out: Vec<&str> = Vec::new();
        let mut stack = vec![role];
        while let Some(r) = stack.pop() {
            if out.contains(&r) {
                continue;
            }
            let Some((parents, _)) = self.parents_at(r, as_of) else {
                continue;
            };
            out.push(r);
            stack.extend(parents.iter().rev().map(String::as_str));
        }
        out
    }

    /// The grants that existed as of `as_of` to `role` and to every role it reaches (windows not
    /// applied).
    pub fn role_grants_reached(&self, role: &str, as_of: AsOf) -> Vec<&Grant> {
        self.roles_reached(role, as_of)
            .into_iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|e| e.grants.values())
            .flatten()
            .filter_map(|i| self.grants.get(*i))
            .filter(|g| as_of.sees(g.created, g.ended.map(|e| e.0)))
            .collect()
    }

    /// The assignments of `principal` in force as of `as_of` (existing, window active).
    pub fn assignments_of(&self, principal: &str, as_of: AsOf) -> Vec<&Assignment> {
        self.principals
            .get(principal)
            .map_or(&[][..], |e| e.assignments.as_slice())
            .iter()
            .filter_map(|i| self.assignments.get(*i))
            .filter(|a| {
                as_of.sees(a.created, a.ended.map(|e| e.0))
                    && a.window.at(as_of.time) == super::vocabulary::WindowState::Active
            })
            .collect()
    }

    /// The names of the roles `principal` holds on the whole tenant as of `as_of`, as assigned
    /// (not their ancestors), in assignment order.
    pub fn tenant_roles_of(&self, principal: &str, as_of: AsOf) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for a in self.assignments_of(principal, as_of) {
            if a.on.is_none() && !out.contains(&a.role) {
                out.push(a.role.clone());
            }
        }
        out
    }

    /// The grants made directly to `principal` that existed as of `as_of`.
    pub fn principal_grants_of(&self, principal: &str, as_of: AsOf) -> Vec<&Grant> {
        self.principals
            .get(principal)
            .into_iter()
            .flat_map(|e| e.grants.values())
            .flatten()
            .filter_map(|i| self.grants.get(*i))
            .filter(|g| as_of.sees(g.created, g.ended.map(|e| e.0)))
            .collect()
    }
}
