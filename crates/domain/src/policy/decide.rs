//! What may be asked of a tenant's policy, and what it decides.

use std::collections::{BTreeMap, BTreeSet};

use super::event::{EndReason, PolicyEvent};
use super::model::{AsOf, Policy};
use super::vocabulary::{
    BUILTIN_TYPES, Conditions, Effect, Permission, Resource, Scope, Subject, UnknownPermission,
    Window, builtin_role, is_name,
};

/// Most resource types a tenant may register.
pub const MAX_CUSTOM_TYPES: usize = 200;
/// Most actions of one resource type.
pub const MAX_ACTIONS: usize = 64;
/// Most parents of one role.
pub const MAX_PARENTS: usize = 32;

/// What someone asks of a tenant's policy. Ids are drawn by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyCommand {
    /// Replace the tenant's own resource types and actions.
    SetCatalog {
        /// Type → actions.
        resource_types: BTreeMap<String, BTreeSet<String>>,
    },
    /// Create a custom role.
    CreateRole {
        /// Its name.
        name: String,
        /// What it is for (at most 500 characters).
        description: Option<String>,
        /// The roles it inherits.
        parents: Vec<String>,
    },
    /// Change a custom role; `None` keeps a field.
    UpdateRole {
        /// The role.
        name: String,
        /// The new description (`Some(None)` clears it).
        description: Option<Option<String>>,
        /// The new parents.
        parents: Option<Vec<String>>,
    },
    /// Delete a custom role, ending its grants and assignments.
    DeleteRole {
        /// The role.
        name: String,
    },
    /// Allow or deny a permission.
    Grant {
        /// `grant_...`.
        id: String,
        /// To whom.
        subject: Subject,
        /// What.
        permission: Permission,
        /// On what.
        on: Option<Scope>,
        /// Allow or deny.
        effect: Effect,
        /// When.
        window: Window,
        /// Extra requirements.
        conditions: Option<Conditions>,
        /// Who grants.
        granted_by: String,
    },
    /// Revoke a grant.
    Revoke {
        /// The grant.
        id: String,
    },
    /// Assign a role.
    Assign {
        /// `asg_...`.
        id: String,
        /// To whom.
        principal: String,
        /// The role.
        role: String,
        /// On what.
        on: Option<Scope>,
        /// When.
        window: Window,
        /// Who assigns.
        assigned_by: String,
        /// The earlier model's role it carries over.
        migrated_from: Option<String>,
    },
    /// End an assignment.
    Unassign {
        /// The assignment.
        id: String,
    },
    /// Put a resource in a group (nothing happens if it is in it).
    AddMember {
        /// The group.
        group: String,
        /// The resource.
        resource: Resource,
    },
    /// Take a resource out of a group.
    RemoveMember {
        /// The group.
        group: String,
        /// The resource.
        resource: Resource,
    },
}

/// Why a policy command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A field is malformed.
    #[error("{field}: {message}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A permission or a resource type is not in the tenant's catalog.
    #[error(transparent)]
    UnknownPermission(#[from] UnknownPermission),
    /// What the command names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The command contradicts the policy as it is.
    #[error("{0}")]
    Conflict(String),
}

fn invalid(field: &'static str, message: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        field,
        message: message.into(),
    }
}

/// Decides `command` against `policy`: the events to append, in order (none when nothing changes).
pub fn decide(policy: &Policy, command: PolicyCommand) -> Result<Vec<PolicyEvent>, PolicyError> {
    match command {
        PolicyCommand::SetCatalog { resource_types } => {
            check_catalog(&resource_types)?;
            if resource_types == policy.catalog.custom {
                return Ok(vec![]);
            }
            Ok(vec![PolicyEvent::CatalogUpdated { resource_types }])
        }
        PolicyCommand::CreateRole {
            name,
            description,
            parents,
        } => {
            if !is_name(&name) {
                return Err(invalid(
                    "name",
                    "1-63 of a-z, 0-9, _ and -, starting with a letter",
                ));
            }
            if policy.role_exists(&name) {
                return Err(PolicyError::Conflict(format!("role {name} exists already")));
            }
            check_description(description.as_deref())?;
            check_parents(policy, &name, &parents)?;
            Ok(vec![PolicyEvent::RoleCreated {
                name,
                description,
                parents,
            }])
        }
        PolicyCommand::UpdateRole {
            name,
            description,
            parents,
        } => {
            let current = changeable_role(policy, &name)?;
            let description = description.unwrap_or_else(|| current.description.clone());
            let parents = parents.unwrap_or_else(|| current.parents.clone());
            check_description(description.as_deref())?;
            check_parents(policy, &name, &parents)?;
            if description == current.description && parents == current.parents {
                return Ok(vec![]);
            }
            Ok(vec![PolicyEvent::RoleUpdated {
                name,
                description,
                parents,
            }])
        }
        PolicyCommand::DeleteRole { name } => {
            changeable_role(policy, &name)?;
            let children: Vec<&str> = policy
                .custom_roles()
                .into_iter()
                .filter(|(_, v)| v.parents.contains(&name))
                .map(|(n, _)| n)
                .collect();
            if !children.is_empty() {
                return Err(PolicyError::Conflict(format!(
                    "role {name} is a parent of {}; change their parents first",
                    children.join(", ")
                )));
            }
            let mut events: Vec<PolicyEvent> = policy
                .grants()
                .filter(|g| g.ended.is_none() && g.subject == Subject::Role(name.clone()))
                .map(|g| PolicyEvent::GrantRevoked {
                    id: g.id.clone(),
                    reason: EndReason::RoleDeleted,
                })
                .collect();
            events.extend(
                policy
                    .assignments()
                    .filter(|a| a.role == name && a.ended.is_none())
                    .map(|a| PolicyEvent::AssignmentEnded {
                        id: a.id.clone(),
                        reason: EndReason::RoleDeleted,
                    }),
            );
            events.push(PolicyEvent::RoleDeleted { name });
            Ok(events)
        }
        PolicyCommand::Grant {
            id,
            subject,
            permission,
            on,
            effect,
            window,
            conditions,
            granted_by,
        } => {
            match &subject {
                Subject::Role(r) if !policy.role_exists(r) => {
                    return Err(PolicyError::NotFound(format!("no role {r}")));
                }
                Subject::Principal(p) if p.is_empty() || p.len() > 200 => {
                    return Err(invalid("subject", "a principal id of 1-200 characters"));
                }
                _ => {}
            }
            policy.catalog.check(&permission)?;
            check_scope(policy, on.as_ref())?;
            window.check().map_err(|m| invalid("valid_until", m))?;
            if let Some(c) = &conditions {
                c.check().map_err(|m| invalid("conditions", m))?;
            }
            Ok(vec![PolicyEvent::GrantCreated {
                id,
                subject,
                permission,
                on,
                effect,
                valid_from: window.valid_from,
                valid_until: window.valid_until,
                conditions: conditions.filter(|c| !c.is_empty()),
                granted_by,
            }])
        }
        PolicyCommand::Revoke { id } => match policy.grant(&id) {
            Some(g) if g.ended.is_none() && g.created.position > 0 => {
                Ok(vec![PolicyEvent::GrantRevoked {
                    id,
                    reason: EndReason::Revoked,
                }])
            }
            _ => Err(PolicyError::NotFound(format!("no live grant {id}"))),
        },
        PolicyCommand::Assign {
            id,
            principal,
            role,
            on,
            window,
            assigned_by,
            migrated_from,
        } => {
            if principal.is_empty() || principal.len() > 200 {
                return Err(invalid("principal", "a principal id of 1-200 characters"));
            }
            if !policy.role_exists(&role) {
                return Err(PolicyError::NotFound(format!("no role {role}")));
            }
            check_scope(policy, on.as_ref())?;
            window.check().map_err(|m| invalid("valid_until", m))?;
            Ok(vec![PolicyEvent::AssignmentCreated {
                id,
                principal,
                role,
                on,
                valid_from: window.valid_from,
                valid_until: window.valid_until,
                assigned_by,
                migrated_from,
            }])
        }
        PolicyCommand::Unassign { id } => match policy.assignment(&id) {
            Some(a) if a.ended.is_none() => Ok(vec![PolicyEvent::AssignmentEnded {
                id,
                reason: EndReason::Revoked,
            }]),
            _ => Err(PolicyError::NotFound(format!("no live assignment {id}"))),
        },
        PolicyCommand::AddMember { group, resource } => {
            if !is_name(&group) {
                return Err(invalid(
                    "group",
                    "1-63 of a-z, 0-9, _ and -, starting with a letter",
                ));
            }
            check_type(policy, &resource.resource_type)?;
            if policy.groups_of(&resource).contains(&group.as_str()) {
                return Ok(vec![]);
            }
            Ok(vec![PolicyEvent::GroupMemberAdded { group, resource }])
        }
        PolicyCommand::RemoveMember { group, resource } => {
            if policy.groups_of(&resource).contains(&group.as_str()) {
                Ok(vec![PolicyEvent::GroupMemberRemoved { group, resource }])
            } else {
                Err(PolicyError::NotFound(format!(
                    "{resource} is not in group {group}"
                )))
            }
        }
    }
}

fn check_catalog(types: &BTreeMap<String, BTreeSet<String>>) -> Result<(), PolicyError> {
    if types.len() > MAX_CUSTOM_TYPES {
        return Err(invalid(
            "resource_types",
            format!("at most {MAX_CUSTOM_TYPES} types"),
        ));
    }
    for (t, actions) in types {
        if !is_name(t) {
            return Err(invalid(
                "resource_types",
                format!("{t:?}: a type is 1-63 of a-z, 0-9, _ and -, starting with a letter"),
            ));
        }
        if BUILTIN_TYPES.iter().any(|(b, _)| b == t) {
            return Err(invalid(
                "resource_types",
                format!("{t} is a built-in type and cannot be redefined"),
            ));
        }
        if actions.is_empty() || actions.len() > MAX_ACTIONS {
            return Err(invalid(
                "resource_types",
                format!("{t}: list 1-{MAX_ACTIONS} actions"),
            ));
        }
        if let Some(a) = actions.iter().find(|a| !is_name(a)) {
            return Err(invalid(
                "resource_types",
                format!(
                    "{t}: {a:?} is not an action: 1-63 of a-z, 0-9, _ and -, starting with a letter"
                ),
            ));
        }
    }
    Ok(())
}

fn check_description(description: Option<&str>) -> Result<(), PolicyError> {
    match description {
        Some(d) if d.chars().count() > 500 || d.chars().any(char::is_control) => Err(invalid(
            "description",
            "at most 500 characters, without control characters",
        )),
        _ => Ok(()),
    }
}

fn changeable_role<'p>(
    policy: &'p Policy,
    name: &str,
) -> Result<&'p super::model::RoleVersion, PolicyError> {
    if builtin_role(name).is_some() {
        return Err(PolicyError::Conflict(format!(
            "{name} is a built-in role and cannot be changed or deleted"
        )));
    }
    policy
        .custom_roles()
        .get(name)
        .copied()
        .ok_or_else(|| PolicyError::NotFound(format!("no role {name}")))
}

fn check_parents(policy: &Policy, name: &str, parents: &[String]) -> Result<(), PolicyError> {
    if parents.len() > MAX_PARENTS {
        return Err(invalid("parents", format!("at most {MAX_PARENTS} parents")));
    }
    let mut seen = BTreeSet::new();
    for p in parents {
        if !seen.insert(p) {
            return Err(invalid("parents", format!("{p} is listed twice")));
        }
        if !policy.role_exists(p) {
            return Err(PolicyError::NotFound(format!("no role {p}")));
        }
    }
    // A cycle: `name` reachable from one of its new parents.
    let now = AsOf {
        position: u64::MAX,
        time: crate::event::Timestamp::from_datetime(time::OffsetDateTime::UNIX_EPOCH),
    };
    let mut stack: Vec<&str> = parents.iter().map(String::as_str).collect();
    let mut visited = BTreeSet::new();
    while let Some(role) = stack.pop() {
        if role == name {
            return Err(PolicyError::Conflict(format!(
                "making {} parents of {name} would make a cycle",
                parents.join(", ")
            )));
        }
        if visited.insert(role)
            && let Some((ps, _)) = policy.parents_at(role, now)
        {
            stack.extend(ps.iter().map(String::as_str));
        }
    }
    Ok(())
}

fn check_type(policy: &Policy, resource_type: &str) -> Result<(), PolicyError> {
    if policy.catalog.actions(resource_type).is_some() {
        Ok(())
    } else {
        Err(PolicyError::UnknownPermission(UnknownPermission {
            permission: format!("{resource_type}:*"),
            known: policy.catalog.permissions(),
        }))
    }
}

fn check_scope(policy: &Policy, on: Option<&Scope>) -> Result<(), PolicyError> {
    match on {
        None => Ok(()),
        Some(Scope::Resource(r)) => check_type(policy, &r.resource_type),
        Some(Scope::ResourceType(t)) => check_type(policy, t),
        Some(Scope::Group(g)) if is_name(g) => Ok(()),
        Some(Scope::Group(_)) => Err(invalid(
            "on",
            "a group is 1-63 of a-z, 0-9, _ and -, starting with a letter",
        )),
    }
}
