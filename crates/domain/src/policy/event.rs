//! The facts of a tenant's policy, and of the decisions taken under it.
//!
//! A tenant's whole policy (catalog, roles, grants, assignments, group memberships) is one
//! aggregate, in the stream `{tenant}/policy/rules`, so that the rules that span its parts are
//! decided atomically: a grant names a permission of the current catalog and a role that exists, a
//! new parent makes no cycle, and deleting a role ends its grants and assignments in the same
//! append. Decisions go to `{tenant}/decision/log`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::vocabulary::{Conditions, Effect, Permission, Resource, Scope, Subject};
use crate::event::{DomainEvent, EventDecodeError, Timestamp, variant_body, variant_tag};

/// The aggregate name of policy streams.
pub const AGGREGATE: &str = "policy";
/// The id of a tenant's one policy stream.
pub const STREAM_ID: &str = "rules";
/// The aggregate name of decision streams.
pub const DECISION_AGGREGATE: &str = "decision";
/// The id of a tenant's decision stream.
pub const DECISION_STREAM_ID: &str = "log";

/// Why a grant or an assignment stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Someone revoked it.
    Revoked,
    /// Its role was deleted.
    RoleDeleted,
}

/// The facts of a tenant's policy. The event type is the variant's serde name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum PolicyEvent {
    /// `catalog.updated` v1: the tenant's own resource types and actions, in full.
    #[serde(rename = "catalog.updated")]
    CatalogUpdated {
        /// Each of the tenant's resource types with its actions.
        resource_types: BTreeMap<String, BTreeSet<String>>,
    },
    /// `role.created` v1: a custom role.
    #[serde(rename = "role.created")]
    RoleCreated {
        /// Its name, unique in the tenant.
        name: String,
        /// What it is for.
        description: Option<String>,
        /// The roles it inherits every permission of.
        parents: Vec<String>,
    },
    /// `role.updated` v1: a custom role's description and parents, in full.
    #[serde(rename = "role.updated")]
    RoleUpdated {
        /// The role.
        name: String,
        /// Its new description.
        description: Option<String>,
        /// Its new parents.
        parents: Vec<String>,
    },
    /// `role.deleted` v1: a custom role is gone. Its grants and assignments were ended by the
    /// events just before this one.
    #[serde(rename = "role.deleted")]
    RoleDeleted {
        /// The role.
        name: String,
    },
    /// `grant.created` v1: `granted_by` allowed or denied `permission` to `subject` on `on` (the
    /// whole tenant when absent); the envelope's `occurred_at` says when.
    #[serde(rename = "grant.created")]
    GrantCreated {
        /// `grant_...`.
        id: String,
        /// A principal or a role.
        subject: Subject,
        /// What it allows or denies (a pattern).
        permission: Permission,
        /// What it covers; the whole tenant when absent.
        on: Option<Scope>,
        /// Allow or deny.
        effect: Effect,
        /// In force from (inclusive).
        valid_from: Option<Timestamp>,
        /// In force until (exclusive).
        valid_until: Option<Timestamp>,
        /// Extra requirements on the check's context.
        conditions: Option<Conditions>,
        /// The principal who made the grant.
        granted_by: String,
    },
    /// `grant.revoked` v1.
    #[serde(rename = "grant.revoked")]
    GrantRevoked {
        /// The grant.
        id: String,
        /// Why.
        reason: EndReason,
    },
    /// `assignment.created` v1: `assigned_by` gave `principal` the role `role` on `on`.
    #[serde(rename = "assignment.created")]
    AssignmentCreated {
        /// `asg_...`.
        id: String,
        /// Who holds the role.
        principal: String,
        /// The role.
        role: String,
        /// What it covers; the whole tenant when absent.
        on: Option<Scope>,
        /// In force from (inclusive).
        valid_from: Option<Timestamp>,
        /// In force until (exclusive).
        valid_until: Option<Timestamp>,
        /// The principal who assigned it (`system` for a migration).
        assigned_by: String,
        /// Set when the assignment carries over a role of an earlier model (`tenant_admin`).
        migrated_from: Option<String>,
    },
    /// `assignment.ended` v1.
    #[serde(rename = "assignment.ended")]
    AssignmentEnded {
        /// The assignment.
        id: String,
        /// Why.
        reason: EndReason,
    },
    /// `group.member_added` v1: a resource joined a group.
    #[serde(rename = "group.member_added")]
    GroupMemberAdded {
        /// The group's name.
        group: String,
        /// The resource.
        resource: Resource,
    },
    /// `group.member_removed` v1: a resource left a group.
    #[serde(rename = "group.member_removed")]
    GroupMemberRemoved {
        /// The group's name.
        group: String,
        /// The resource.
        resource: Resource,
    },
}

/// Implements [`DomainEvent`] for an externally tagged enum whose variants' serde names are the
/// full event types, every one at schema version 1.
macro_rules! named_event {
    ($ty:ty, [$($name:literal),+ $(,)?]) => {
        impl DomainEvent for $ty {
            const TYPES: &'static [(&'static str, u32)] = &[$(($name, 1)),+];

            fn event_type(&self) -> &'static str {
                let tag = variant_tag(self);
                Self::TYPES
                    .iter()
                    .map(|(t, _)| *t)
                    .find(|t| *t == tag)
                    .unwrap_or("unknown.unknown")
            }

            fn schema_version(&self) -> u32 {
                1
            }

            fn data(&self) -> Value {
                variant_body(self)
            }

            fn decode(event_type: &str, schema: u32, data: &Value) -> Result<Self, EventDecodeError> {
                if !Self::TYPES.iter().any(|(t, v)| *t == event_type && *v == schema) {
                    return Err(EventDecodeError::Unknown {
                        event_type: event_type.to_owned(),
                        schema,
                    });
                }
                let mut wrapped = serde_json::Map::new();
                wrapped.insert(event_type.to_owned(), data.clone());
                serde_json::from_value(Value::Object(wrapped)).map_err(|source| {
                    EventDecodeError::Malformed {
                        event_type: event_type.to_owned(),
                        schema,
                        source,
                    }
                })
            }
        }
    };
}

named_event!(
    PolicyEvent,
    [
        "catalog.updated",
        "role.created",
        "role.updated",
        "role.deleted",
        "grant.created",
        "grant.revoked",
        "assignment.created",
        "assignment.ended",
        "group.member_added",
        "group.member_removed",
    ]
);

/// What a check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Allowed.
    Allow,
    /// Denied.
    Deny,
}

/// The record of an authorization decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum DecisionEvent {
    /// `decision.recorded` v1: a check was answered.
    #[serde(rename = "decision.recorded")]
    Recorded {
        /// Who was asked about.
        principal: String,
        /// What they wanted to do.
        permission: Permission,
        /// On what.
        resource: Resource,
        /// The answer.
        decision: Verdict,
        /// Why, in words.
        reason: String,
        /// The ids of the grants, assignments and roles that made it so.
        matched: Vec<String>,
        /// The instant asked about, when it was not the time of the check.
        at: Option<Timestamp>,
        /// The log position the decision was evaluated at.
        position: u64,
        /// The source address given in the check's context.
        ip: Option<String>,
    },
}

named_event!(DecisionEvent, ["decision.recorded"]);
