//! Access as the log made it: every tenant's [`Policy`] with its history, the standing of
//! principals (disabled, enabled, deleted) and tenants (suspended, reactivated), and the platform's
//! administrators, folded from event records in log order. The service's authorization index and
//! the offline tools fold the log with this one type, so they decide alike.
//!
//! Nothing is forgotten when it ends: the same state answers for now and for any past position,
//! and says for each link of a decision which later event ended it.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::evaluate::{Check, Decision, MatchKind, Matched, Target, evaluate};
use super::event::{AGGREGATE, EndReason, PolicyEvent, Verdict};
use super::model::{AsOf, Policy, Stamp};
use crate::event::{DomainEvent, EventDecodeError, EventRecord, Timestamp};
use crate::tenant::TenantEvent;
use crate::user::{ROLE_PLATFORM_ADMIN, UserEvent};

/// The tenant that holds the platform's own streams and its administrators.
pub const SYSTEM_TENANT: &str = "_system";

/// A change of a principal's or a tenant's standing: whether it may be allowed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Standing {
    /// The event that changed it.
    pub stamp: Stamp,
    /// Its type (`user.disabled`, `user.enabled`, `user.deleted`, `tenant.suspended`,
    /// `tenant.reactivated`).
    pub event_type: &'static str,
    /// Whether nothing is allowed from then on.
    pub out_of_service: bool,
}

/// The types a [`Standing`] or a [`PlatformAdmin`] names, as kept in a snapshot of the state.
const STANDING_TYPES: [&str; 7] = [
    "user.disabled",
    "user.enabled",
    "user.deleted",
    "user.created",
    "user.invited",
    "tenant.suspended",
    "tenant.reactivated",
];

/// One of [`STANDING_TYPES`], read back from a snapshot; any other name is refused.
fn known_type(name: &str) -> Result<&'static str, String> {
    STANDING_TYPES
        .iter()
        .find(|t| **t == name)
        .copied()
        .ok_or_else(|| format!("unknown standing event type {name:?}"))
}

/// A [`Standing`] as a snapshot holds it.
#[derive(Deserialize)]
struct StandingRepr {
    stamp: Stamp,
    event_type: String,
    out_of_service: bool,
}

impl<'de> Deserialize<'de> for Standing {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = StandingRepr::deserialize(d)?;
        Ok(Self {
            stamp: r.stamp,
            event_type: known_type(&r.event_type).map_err(serde::de::Error::custom)?,
            out_of_service: r.out_of_service,
        })
    }
}

/// A [`PlatformAdmin`] as a snapshot holds it.
#[derive(Deserialize)]
struct PlatformAdminRepr {
    user_id: String,
    granted: Stamp,
    granted_by: String,
    active: Option<Stamp>,
}

impl<'de> Deserialize<'de> for PlatformAdmin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = PlatformAdminRepr::deserialize(d)?;
        Ok(Self {
            user_id: r.user_id,
            granted: r.granted,
            granted_by: known_type(&r.granted_by).map_err(serde::de::Error::custom)?,
            active: r.active,
        })
    }
}

/// A user of `_system` given the platform's root role when created or invited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlatformAdmin {
    /// The user.
    pub user_id: String,
    /// The event that created or invited them with the role.
    pub granted: Stamp,
    /// Its type (`user.created` or `user.invited`).
    pub granted_by: &'static str,
    /// When they became active: the creation, or the acceptance of the invitation.
    pub active: Option<Stamp>,
}

/// The event that ended a link of a decision (or took a principal or tenant out of service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// The event.
    pub stamp: Stamp,
    /// Its type, e.g. `grant.revoked`.
    pub event_type: &'static str,
    /// Why, where the event says (`revoked`, `role_deleted`).
    pub reason: Option<&'static str>,
}

/// One link of a decision's provenance, with the event that made it and the one that later ended
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// What kind of thing.
    pub kind: MatchKind,
    /// Its id (a role's or a group's name).
    pub id: String,
    /// The event that made it what it was; `None` for what the service defines (built-in roles
    /// and their grants).
    pub made: Option<Stamp>,
    /// That event's type, e.g. `grant.created` (`builtin` for what the service defines).
    pub event_type: &'static str,
    /// The later event that ended it, if any has: the grant revoked, the assignment ended, the
    /// role deleted or its parents changed so the chain no longer passes, the membership removed.
    pub ended: Option<Ending>,
    /// When its own window closes with no event (a grant's or an assignment's `valid_until`).
    pub expires: Option<Timestamp>,
}

/// Every tenant's policy and everyone's standing, as the log made them.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct AccessHistory {
    policies: HashMap<String, Policy>,
    /// Principal id → standing changes, oldest first.
    principals: HashMap<String, Vec<Standing>>,
    /// Tenant → standing changes (suspensions), oldest first.
    tenants: HashMap<String, Vec<Standing>>,
    /// Users of `_system` given the root role, by id.
    platform_admins: BTreeMap<String, PlatformAdmin>,
    /// Positions of the events that changed access, with non-decreasing times: the log as it
    /// stood at an instant.
    timeline: Vec<Stamp>,
    /// The last position applied.
    position: u64,
}

impl AccessHistory {
    /// Nothing applied yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The last position applied (0 before any).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// `tenant`'s policy (the built-ins only, if it has no events yet).
    pub fn policy(&self, tenant: &str) -> &Policy {
        self.policies.get(tenant).unwrap_or_else(|| builtin_only())
    }

    /// The tenants with policy events, in no particular order.
    pub fn tenants(&self) -> impl Iterator<Item = &str> {
        self.policies.keys().map(String::as_str)
    }

    /// The users of `_system` ever given the root role, by id.
    pub fn platform_admins(&self) -> impl Iterator<Item = &PlatformAdmin> {
        self.platform_admins.values()
    }

    /// The position of the log as it stood at `time`: the last event that changed access whose
    /// time (made non-decreasing along the log) is not after it; 0 before the first.
    pub fn as_of(&self, time: Timestamp) -> AsOf {
        let n = self.timeline.partition_point(|s| s.at <= time);
        let position = n
            .checked_sub(1)
            .and_then(|i| self.timeline.get(i))
            .map_or(0, |s| s.position);
        AsOf { position, time }
    }

    /// Applies one record of the log, in order. Records that do not bear on access are counted
    /// and otherwise ignored; a record of the policy that cannot be decoded is skipped and its
    /// error returned (the state stays as it was).
    pub fn apply(&mut self, record: &EventRecord) -> Result<(), EventDecodeError> {
        let stamp = Stamp {
            position: record.position,
            at: record.occurred_at,
        };
        self.position = record.position;
        let (t, schema, data) = (record.event_type.as_str(), record.schema, &record.data);
        let changed = match record.stream.aggregate() {
            AGGREGATE => {
                let event = PolicyEvent::decode(t, schema, data)?;
                self.policies
                    .entry(record.stream.tenant().to_owned())
                    .or_default()
                    .apply(stamp, &event);
                true
            }
            "user" => self.apply_user(record, stamp),
            "tenant" => {
                let change = match TenantEvent::decode(t, schema, data) {
                    Ok(TenantEvent::Suspended { .. }) => Some(("tenant.suspended", true)),
                    Ok(TenantEvent::Reactivated) => Some(("tenant.reactivated", false)),
                    _ => None,
                };
                if let Some((event_type, out_of_service)) = change {
                    self.tenants
                        .entry(record.stream.id().to_owned())
                        .or_default()
                        .push(Standing {
                            stamp,
                            event_type,
                            out_of_service,
                        });
                }
                change.is_some()
            }
            _ => false,
        };
        if changed {
            let at = match self.timeline.last() {
                Some(last) if last.at > stamp.at => last.at,
                _ => stamp.at,
            };
            self.timeline.push(Stamp {
                position: stamp.position,
                at,
            });
        }
        Ok(())
    }

    /// Applies a user's event; answers whether it changed their standing.
    fn apply_user(&mut self, record: &EventRecord, stamp: Stamp) -> bool {
        let Ok(event) = UserEvent::decode(record.event_type.as_str(), record.schema, &record.data)
        else {
            return false;
        };
        let id = record.stream.id();
        let system = record.stream.tenant() == SYSTEM_TENANT;
        let change = match event {
            UserEvent::Disabled { .. } => Some(("user.disabled", true)),
            UserEvent::Deleted {} => Some(("user.deleted", true)),
            UserEvent::Enabled {} => Some(("user.enabled", false)),
            UserEvent::Created { roles, .. } | UserEvent::Invited { roles, .. }
                if system && roles.iter().any(|r| r == ROLE_PLATFORM_ADMIN) =>
            {
                let created = record.event_type.as_str() == "user.created";
                self.platform_admins.insert(
                    id.to_owned(),
                    PlatformAdmin {
                        user_id: id.to_owned(),
                        granted: stamp,
                        granted_by: if created {
                            "user.created"
                        } else {
                            "user.invited"
                        },
                        active: created.then_some(stamp),
                    },
                );
                None
            }
            UserEvent::InvitationAccepted {} => {
                if let Some(admin) = self.platform_admins.get_mut(id) {
                    admin.active.get_or_insert(stamp);
                }
                None
            }
            _ => None,
        };
        if let Some((event_type, out_of_service)) = change {
            self.principals
                .entry(id.to_owned())
                .or_default()
                .push(Standing {
                    stamp,
                    event_type,
                    out_of_service,
                });
        }
        change.is_some()
    }

    /// Evaluates `check` in `tenant`: out-of-service principals and suspended tenants are denied
    /// everything; otherwise the tenant's policy decides ([`evaluate`]).
    pub fn decide(&self, tenant: &str, check: &Check<'_>) -> Decision {
        let position = check.as_of.position;
        if let Some(s) = out_of_service(self.tenants.get(tenant), position) {
            return refused(
                MatchKind::Tenant,
                tenant,
                s.stamp.position,
                "the tenant is suspended",
            );
        }
        if let Some(s) = out_of_service(self.principals.get(check.principal), position) {
            return refused(
                MatchKind::Principal,
                check.principal,
                s.stamp.position,
                "the principal is disabled or deleted",
            );
        }
        evaluate(self.policy(tenant), check)
    }

    /// The change that took `principal` out of service, if they were out of service as of
    /// `position`.
    pub fn principal_out_of_service(&self, principal: &str, position: u64) -> Option<&Standing> {
        out_of_service(self.principals.get(principal), position)
    }

    /// The suspension of `tenant`, if it was suspended as of `position`.
    pub fn tenant_suspended(&self, tenant: &str, position: u64) -> Option<&Standing> {
        out_of_service(self.tenants.get(tenant), position)
    }

    /// Every change of `principal`'s standing, oldest first.
    pub fn principal_standing(&self, principal: &str) -> &[Standing] {
        self.principals.get(principal).map_or(&[], Vec::as_slice)
    }

    /// Every change of `tenant`'s standing, oldest first.
    pub fn tenant_standing(&self, tenant: &str) -> &[Standing] {
        self.tenants.get(tenant).map_or(&[], Vec::as_slice)
    }

    /// The first change after `position` that took `principal` out of service, if any.
    pub fn principal_ended_after(&self, principal: &str, position: u64) -> Option<Ending> {
        first_out_after(self.principals.get(principal), position)
    }

    /// The first suspension of `tenant` after `position`, if any.
    pub fn tenant_ended_after(&self, tenant: &str, position: u64) -> Option<Ending> {
        first_out_after(self.tenants.get(tenant), position)
    }

    /// Whether `user_id` held the platform's root role and was active as of `position`.
    pub fn platform_admin_at(&self, user_id: &str, position: u64) -> Option<&PlatformAdmin> {
        self.platform_admins.get(user_id).filter(|a| {
            a.active.is_some_and(|s| s.position <= position)
                && self.principal_out_of_service(user_id, position).is_none()
        })
    }

    /// The platform administrators active as of `position`, by id.
    pub fn platform_admins_at(&self, position: u64) -> Vec<&PlatformAdmin> {
        self.platform_admins
            .keys()
            .filter_map(|id| self.platform_admin_at(id, position))
            .collect()
    }

    /// The links of a decision's chain (`matched`, as [`evaluate`] gives it) in `tenant` as of
    /// `as_of` on `target`, each with the event that made it and the later one (after `as_of`) that
    /// ended it.
    pub fn provenance(
        &self,
        tenant: &str,
        matched: &[Matched],
        target: Target<'_>,
        as_of: AsOf,
    ) -> Vec<Link> {
        let policy = self.policy(tenant);
        let mut out = Vec::with_capacity(matched.len());
        for (i, m) in matched.iter().enumerate() {
            let mut link = Link {
                kind: m.kind,
                id: m.id.clone(),
                made: None,
                event_type: "builtin",
                ended: None,
                expires: None,
            };
            let after = |stamp: Stamp| stamp.position > as_of.position;
            match m.kind {
                MatchKind::Grant => {
                    if let Some(g) = policy.grant(&m.id).filter(|g| g.created.position > 0) {
                        link.made = Some(g.created);
                        link.event_type = "grant.created";
                        link.ended = g.ended.filter(|(s, _)| after(*s)).map(|(stamp, r)| Ending {
                            stamp,
                            event_type: "grant.revoked",
                            reason: Some(end_reason(r)),
                        });
                        link.expires = g.window.valid_until;
                    }
                }
                MatchKind::Assignment => {
                    if let Some(a) = policy.assignment(&m.id) {
                        link.made = Some(a.created);
                        link.event_type = "assignment.created";
                        link.ended = a.ended.filter(|(s, _)| after(*s)).map(|(stamp, r)| Ending {
                            stamp,
                            event_type: "assignment.ended",
                            reason: Some(end_reason(r)),
                        });
                        link.expires = a.window.valid_until;
                    }
                }
                MatchKind::Role => {
                    // The next role of the chain, reached through this one's parents.
                    let next = matched
                        .get(i + 1)
                        .filter(|n| n.kind == MatchKind::Role)
                        .map(|n| n.id.as_str());
                    if let Some((made, event_type, ended)) = role_link(policy, &m.id, next, as_of) {
                        link.made = Some(made);
                        link.event_type = event_type;
                        link.ended = ended;
                    }
                }
                MatchKind::Group => {
                    if let Some(membership) = match target {
                        Target::Resource(r) => policy
                            .memberships(&r.resource_type, &r.id)
                            .iter()
                            .find(|ms| ms.group == m.id && ms.added.position == m.position),
                        _ => None,
                    } {
                        link.made = Some(membership.added);
                        link.event_type = "group.member_added";
                        link.ended = membership
                            .removed
                            .filter(|s| after(*s))
                            .map(|stamp| Ending {
                                stamp,
                                event_type: "group.member_removed",
                                reason: None,
                            });
                    }
                }
                MatchKind::Principal => {
                    if let Some(s) = self
                        .principals
                        .get(&m.id)
                        .and_then(|c| c.iter().find(|s| s.stamp.position == m.position))
                    {
                        link.made = Some(s.stamp);
                        link.event_type = s.event_type;
                    }
                }
                MatchKind::Tenant => {
                    if let Some(s) = self
                        .tenants
                        .get(&m.id)
                        .and_then(|c| c.iter().find(|s| s.stamp.position == m.position))
                    {
                        link.made = Some(s.stamp);
                        link.event_type = s.event_type;
                    }
                }
            }
            out.push(link);
        }
        out
    }
}

/// A role link of a chain: the version in force as of `as_of`, its event, and the later event
/// that broke the chain there: the role's deletion, or a change of its parents that drops `next`
/// (the role the chain went on to).
fn role_link(
    policy: &Policy,
    role: &str,
    next: Option<&str>,
    as_of: AsOf,
) -> Option<(Stamp, &'static str, Option<Ending>)> {
    let entry = policy.roles.get(role)?;
    if entry.builtin_parents.is_some() {
        return None;
    }
    let life = entry.lives.iter().rev().find(|l| {
        l.versions
            .first()
            .is_some_and(|c| as_of.sees(c.stamp, l.deleted))
    })?;
    let current = life
        .versions
        .iter()
        .rposition(|v| v.stamp.position <= as_of.position)?;
    let version = life.versions.get(current)?;
    let event_type = if current == 0 {
        "role.created"
    } else {
        "role.updated"
    };
    let dropped = next.and_then(|next| {
        life.versions
            .iter()
            .skip(current + 1)
            .find(|v| !v.parents.iter().any(|p| p == next))
    });
    let changed = dropped.map(|v| Ending {
        stamp: v.stamp,
        event_type: "role.updated",
        reason: None,
    });
    let deleted = life.deleted.map(|stamp| Ending {
        stamp,
        event_type: "role.deleted",
        reason: None,
    });
    // Whichever came first ended the link.
    let ended = match (changed, deleted) {
        (Some(c), Some(d)) if d.stamp.position < c.stamp.position => Some(d),
        (Some(c), _) => Some(c),
        (None, d) => d,
    };
    Some((version.stamp, event_type, ended))
}

fn end_reason(reason: EndReason) -> &'static str {
    match reason {
        EndReason::Revoked => "revoked",
        EndReason::RoleDeleted => "role_deleted",
    }
}

fn out_of_service(changes: Option<&Vec<Standing>>, position: u64) -> Option<&Standing> {
    changes
        .and_then(|c| c.iter().rev().find(|s| s.stamp.position <= position))
        .filter(|s| s.out_of_service)
}

fn first_out_after(changes: Option<&Vec<Standing>>, position: u64) -> Option<Ending> {
    changes?
        .iter()
        .find(|s| s.stamp.position > position && s.out_of_service)
        .map(|s| Ending {
            stamp: s.stamp,
            event_type: s.event_type,
            reason: None,
        })
}

fn refused(kind: MatchKind, id: &str, position: u64, reason: &str) -> Decision {
    Decision {
        verdict: Verdict::Deny,
        reason: reason.to_owned(),
        matched: vec![Matched {
            kind,
            id: id.to_owned(),
            position,
        }],
        trace: vec![],
    }
}

/// The policy of a tenant without policy events: the built-in roles only.
fn builtin_only() -> &'static Policy {
    static POLICY: std::sync::LazyLock<Policy> = std::sync::LazyLock::new(Policy::new);
    &POLICY
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Actor, EventHash, EventType, NewEvent};
    use crate::policy::vocabulary::{Effect, Permission, Resource, Subject};
    use crate::secret::{Sealed, TokenHash};
    use crate::stream::StreamName;
    use crate::user::UserKind;

    /// Folds `events` (stream, event) as positions 1, 2, ..., a minute apart.
    fn fold(events: &[(&str, &dyn DomainEventObject)]) -> AccessHistory {
        let mut history = AccessHistory::new();
        for (i, (stream, event)) in events.iter().enumerate() {
            let position = i as u64 + 1;
            let at = Timestamp::parse(&format!("2026-03-01T12:{:02}:00Z", position)).unwrap();
            let record = EventRecord::seal(
                position,
                StreamName::parse(stream).unwrap(),
                1,
                EventHash([0; 32]),
                NewEvent {
                    id: uuid::Uuid::now_v7(),
                    event_type: EventType::parse(event.kind()).unwrap(),
                    schema: 1,
                    actor: Actor::system(),
                    occurred_at: at,
                    correlation_id: None,
                    causation_id: None,
                    data: event.body(),
                },
            )
            .unwrap();
            history.apply(&record).unwrap();
        }
        history
    }

    /// A domain event of any aggregate, for the table of a test.
    trait DomainEventObject {
        fn kind(&self) -> &'static str;
        fn body(&self) -> serde_json::Value;
    }

    impl<E: DomainEvent> DomainEventObject for E {
        fn kind(&self) -> &'static str {
            self.event_type()
        }
        fn body(&self) -> serde_json::Value {
            self.data()
        }
    }

    fn grant_to(principal: &str) -> PolicyEvent {
        PolicyEvent::GrantCreated {
            id: "grant_1".into(),
            subject: Subject::Principal(principal.into()),
            permission: Permission::parse("document:read").unwrap(),
            on: None,
            effect: Effect::Allow,
            valid_from: None,
            valid_until: None,
            conditions: None,
            granted_by: "system".into(),
        }
    }

    fn allowed(history: &AccessHistory, principal: &str, position: u64) -> bool {
        let permission = Permission::parse("document:read").unwrap();
        let resource = Resource::parse("document/d1").unwrap();
        let check = Check {
            principal,
            permission: &permission,
            target: Target::Resource(&resource),
            ip: None,
            as_of: AsOf {
                position,
                time: Timestamp::parse("2026-03-01T13:00:00Z").unwrap(),
            },
            explain: false,
        };
        history.decide("acme", &check).verdict == Verdict::Allow
    }

    #[test]
    fn standing_changes_deny_everything_while_they_last_and_name_their_event() {
        let history = fold(&[
            ("acme/policy/acme", &grant_to("user_a")),
            (
                "acme/user/user_a",
                &UserEvent::Disabled { reason: "x".into() },
            ),
            ("acme/user/user_a", &UserEvent::Enabled {}),
            (
                "_system/tenant/acme",
                &TenantEvent::Suspended { reason: "x".into() },
            ),
            ("_system/tenant/acme", &TenantEvent::Reactivated),
        ]);
        let answers: Vec<bool> = (1..=5).map(|p| allowed(&history, "user_a", p)).collect();
        assert_eq!(answers, [true, false, true, false, true]);
        let ended = history.principal_ended_after("user_a", 1).unwrap();
        assert_eq!(
            (ended.stamp.position, ended.event_type),
            (2, "user.disabled")
        );
        let ended = history.tenant_ended_after("acme", 3).unwrap();
        assert_eq!(
            (ended.stamp.position, ended.event_type),
            (4, "tenant.suspended")
        );
        assert_eq!(history.principal_ended_after("user_a", 2), None);
    }

    #[test]
    fn an_invited_platform_admin_acts_only_from_acceptance_until_erasure() {
        let invited = UserEvent::Invited {
            kind: UserKind::Person,
            email: Sealed("sealed".into()),
            name: Sealed("sealed".into()),
            email_index: "index".into(),
            roles: vec![ROLE_PLATFORM_ADMIN.into()],
            invitation: TokenHash("0".repeat(64)),
            expires_at: Timestamp::parse("2026-03-02T12:00:00Z").unwrap(),
        };
        let history = fold(&[
            ("_system/user/user_r", &invited),
            ("_system/user/user_r", &UserEvent::InvitationAccepted {}),
            ("_system/user/user_r", &UserEvent::Deleted {}),
        ]);
        let active: Vec<bool> = (1..=3)
            .map(|p| history.platform_admin_at("user_r", p).is_some())
            .collect();
        assert_eq!(active, [false, true, false]);
        let admin = history.platform_admins().next().unwrap();
        assert_eq!(admin.granted_by, "user.invited");
        assert_eq!(admin.active.map(|s| s.position), Some(2));
    }

    #[test]
    fn a_role_link_ends_with_the_change_that_drops_the_next_role_or_the_deletion() {
        let role = |name: &str, parents: &[&str]| PolicyEvent::RoleCreated {
            name: name.into(),
            description: None,
            parents: parents.iter().map(|p| (*p).to_owned()).collect(),
        };
        let updated = |name: &str, parents: &[&str]| PolicyEvent::RoleUpdated {
            name: name.into(),
            description: None,
            parents: parents.iter().map(|p| (*p).to_owned()).collect(),
        };
        let history = fold(&[
            ("acme/policy/acme", &role("reader", &[])),
            ("acme/policy/acme", &role("editor", &["reader"])),
            // A change that keeps reader among the parents does not end the link.
            (
                "acme/policy/acme",
                &updated("editor", &["reader", "viewer"]),
            ),
            ("acme/policy/acme", &updated("editor", &[])),
            (
                "acme/policy/acme",
                &PolicyEvent::RoleDeleted {
                    name: "reader".into(),
                },
            ),
        ]);
        let policy = history.policy("acme");
        let as_of = AsOf {
            position: 2,
            time: Timestamp::parse("2026-03-01T13:00:00Z").unwrap(),
        };
        let (made, event_type, ended) = role_link(policy, "editor", Some("reader"), as_of).unwrap();
        assert_eq!((made.position, event_type), (2, "role.created"));
        let ended = ended.unwrap();
        assert_eq!(
            (ended.stamp.position, ended.event_type),
            (4, "role.updated")
        );
        let (_, _, ended) = role_link(policy, "reader", None, as_of).unwrap();
        let ended = ended.unwrap();
        assert_eq!(
            (ended.stamp.position, ended.event_type),
            (5, "role.deleted")
        );
        assert_eq!(role_link(policy, "viewer", None, as_of), None);
    }
}
