//! The words of a policy: permissions (`resource_type:action`), resources (`type/id`), the scopes
//! a grant or an assignment covers, subjects, validity windows and conditions.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::event::Timestamp;

/// The wildcard of a permission's type or action: `project:*`, `*:read`, `*:*`.
pub const ANY: &str = "*";

/// Whether `s` is a resource-type or action name: 1-63 characters of `a-z`, `0-9`, `_` and `-`,
/// starting with a letter.
pub fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && s.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// `resource_type:action`, either part possibly `*`. A permission *pattern* with a `*` covers
/// every permission it matches; a check always asks about a concrete one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Permission {
    /// The resource type, or `*`.
    pub resource_type: String,
    /// The action, or `*`.
    pub action: String,
}

impl Permission {
    /// Parses `type:action`; each part is a name (see [`is_name`]) or `*`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let Some((t, a)) = s.split_once(':') else {
            return Err(format!(
                "{s:?} is not a permission: write resource_type:action, e.g. project:read"
            ));
        };
        for part in [t, a] {
            if part != ANY && !is_name(part) {
                return Err(format!(
                    "{s:?} is not a permission: {part:?} must be * or 1-63 of a-z, 0-9, _ and -, starting with a letter"
                ));
            }
        }
        Ok(Self {
            resource_type: t.to_owned(),
            action: a.to_owned(),
        })
    }

    /// Whether this permission (a pattern) covers `other` (a permission or a pattern): every part
    /// is `*` or equal.
    pub fn covers(&self, other: &Permission) -> bool {
        part_covers(&self.resource_type, &other.resource_type)
            && part_covers(&self.action, &other.action)
    }

    /// Whether some concrete permission is covered by both: a deny of one blocks holding the other.
    pub fn overlaps(&self, other: &Permission) -> bool {
        part_overlaps(&self.resource_type, &other.resource_type)
            && part_overlaps(&self.action, &other.action)
    }

    /// Whether neither part is `*`.
    pub fn is_concrete(&self) -> bool {
        self.resource_type != ANY && self.action != ANY
    }
}

fn part_covers(pattern: &str, part: &str) -> bool {
    pattern == ANY || pattern == part
}

fn part_overlaps(a: &str, b: &str) -> bool {
    a == ANY || b == ANY || a == b
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.resource_type, self.action)
    }
}

impl Serialize for Permission {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Permission {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One resource: `type/id`, e.g. `project/p42`. The id is 1-200 printable characters without
/// whitespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Resource {
    /// Its type, a catalog name.
    pub resource_type: String,
    /// Its id within the type.
    pub id: String,
}

impl Resource {
    /// Parses `type/id`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let Some((t, id)) = s.split_once('/') else {
            return Err(format!(
                "{s:?} is not a resource: write type/id, e.g. project/p42"
            ));
        };
        if !is_name(t) {
            return Err(format!(
                "{s:?} is not a resource: the type must be 1-63 of a-z, 0-9, _ and -, starting with a letter"
            ));
        }
        if id.is_empty()
            || id.len() > 200
            || id.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(format!(
                "{s:?} is not a resource: the id must be 1-200 characters without spaces or control characters"
            ));
        }
        Ok(Self {
            resource_type: t.to_owned(),
            id: id.to_owned(),
        })
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.resource_type, self.id)
    }
}

impl Serialize for Resource {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Resource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// What a grant or an assignment covers, short of the whole tenant (which is `None` wherever a
/// scope is optional). Written `{"resource": "type/id"}`, `{"resource_type": t}` or `{"group": g}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Scope {
    /// One resource.
    Resource(Resource),
    /// Every resource of a type.
    ResourceType(String),
    /// Every member of a resource group.
    Group(String),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Resource(r) => write!(f, "resource {r}"),
            Self::ResourceType(t) => write!(f, "every {t}"),
            Self::Group(g) => write!(f, "group {g}"),
        }
    }
}

/// Who a grant is to: one principal (a user, agent, service or API key, by id) or every holder of
/// a role. Written `{"principal": id}` or `{"role": name}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Subject {
    /// A principal's id.
    Principal(String),
    /// A role's name.
    Role(String),
}

/// Whether a grant allows or denies.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Allows, unless a deny applies.
    #[default]
    Allow,
    /// Denies, whatever allows.
    Deny,
}

/// When a grant or an assignment is in force: from `valid_from` (inclusive) until `valid_until`
/// (exclusive); an absent bound is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Window {
    /// In force from (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<Timestamp>,
    /// In force until (exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<Timestamp>,
}

/// Where an instant falls against a [`Window`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowState {
    /// Before `valid_from`.
    NotYet,
    /// In force.
    Active,
    /// At or after `valid_until`.
    Expired,
}

impl WindowState {
    /// Whether this is [`WindowState::Active`].
    pub fn is_active(self) -> bool {
        self == Self::Active
    }
}

impl Window {
    /// Where `t` falls: active iff `valid_from <= t < valid_until`.
    pub fn at(&self, t: Timestamp) -> WindowState {
        if self.valid_from.is_some_and(|from| t < from) {
            WindowState::NotYet
        } else if self.valid_until.is_some_and(|until| t >= until) {
            WindowState::Expired
        } else {
            WindowState::Active
        }
    }

    /// Refuses a window that is never in force.
    pub fn check(&self) -> Result<(), String> {
        match (self.valid_from, self.valid_until) {
            (Some(from), Some(until)) if until <= from => {
                Err("valid_until must be after valid_from".to_owned())
            }
            _ => Ok(()),
        }
    }
}

/// A wall-clock time of day, `HH:MM` (24 hours).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeOfDay {
    /// Minutes after midnight, 0-1439.
    pub minutes: u16,
}

impl TimeOfDay {
    /// Parses `HH:MM`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a time of day: write HH:MM, e.g. 09:30");
        let (h, m) = s.split_once(':').ok_or_else(bad)?;
        // Two digits each: `u16` parsing alone would take `+9` as 9.
        let two_digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
        if !two_digits(h) || !two_digits(m) {
            return Err(bad());
        }
        let h: u16 = h.parse().map_err(|_| bad())?;
        let m: u16 = m.parse().map_err(|_| bad())?;
        if h > 23 || m > 59 {
            return Err(bad());
        }
        Ok(Self {
            minutes: h * 60 + m,
        })
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.minutes / 60, self.minutes % 60)
    }
}

impl Serialize for TimeOfDay {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TimeOfDay {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Local hours in a named IANA time zone: from `from` (inclusive) until `until` (exclusive). When
/// `until` is earlier than `from` the hours span midnight (`22:00`-`06:00`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hours {
    /// Start, local time.
    pub from: TimeOfDay,
    /// End, local time, exclusive.
    pub until: TimeOfDay,
    /// The IANA zone the hours are in, e.g. `Europe/Paris`.
    pub time_zone: String,
}

impl Hours {
    /// Refuses an unknown zone or an empty span.
    pub fn check(&self) -> Result<(), String> {
        if self.from == self.until {
            return Err("time_of_day: from and until must differ".to_owned());
        }
        jiff::tz::TimeZone::get(&self.time_zone)
            .map(|_| ())
            .map_err(|_| format!("time_of_day: {:?} is not an IANA time zone", self.time_zone))
    }

    /// Whether `t` falls within the hours (an unknown zone matches nothing).
    pub fn contains(&self, t: Timestamp) -> bool {
        let Ok(zone) = jiff::tz::TimeZone::get(&self.time_zone) else {
            return false;
        };
        let Ok(instant) = jiff::Timestamp::from_second(t.as_datetime().unix_timestamp()) else {
            return false;
        };
        let local = instant.to_zoned(zone);
        let minutes = u16::try_from(i32::from(local.hour()) * 60 + i32::from(local.minute()))
            .unwrap_or(u16::MAX);
        if self.from < self.until {
            self.from.minutes <= minutes && minutes < self.until.minutes
        } else {
            minutes >= self.from.minutes || minutes < self.until.minutes
        }
    }
}

/// Extra requirements of a grant, evaluated against the check's context.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    /// Local hours within which the grant applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_of_day: Option<Hours>,
    /// The source addresses the grant applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<Vec<IpNet>>,
}

impl Conditions {
    /// Whether no condition is set.
    pub fn is_empty(&self) -> bool {
        self.time_of_day.is_none() && self.source_ip.is_none()
    }

    /// Refuses conditions that can never hold.
    pub fn check(&self) -> Result<(), String> {
        if let Some(hours) = &self.time_of_day {
            hours.check()?;
        }
        if let Some(ranges) = &self.source_ip
            && (ranges.is_empty() || ranges.len() > 100)
        {
            return Err("source_ip: list 1-100 CIDR ranges".to_owned());
        }
        Ok(())
    }

    /// Whether the conditions hold at `t` for a request from `ip`. A condition that needs an
    /// address the check did not give is `None`: unknown, which the caller resolves by the
    /// grant's effect (an allow does not apply, a deny does).
    pub fn hold(&self, t: Timestamp, ip: Option<IpAddr>) -> Option<bool> {
        if let Some(hours) = &self.time_of_day
            && !hours.contains(t)
        {
            return Some(false);
        }
        if let Some(ranges) = &self.source_ip {
            let ip = ip?;
            if !ranges.iter().any(|r| r.contains(&ip)) {
                return Some(false);
            }
        }
        Some(true)
    }
}

/// CRUD, plus `execute` and `export`: the actions of most built-in types.
const STANDARD_ACTIONS: &[&str] = &["create", "read", "update", "delete", "execute", "export"];

/// The service's own resource types and their actions, registered in every tenant.
pub const BUILTIN_TYPES: &[(&str, &[&str])] = &[
    ("tenant", STANDARD_ACTIONS),
    ("user", STANDARD_ACTIONS),
    ("session", STANDARD_ACTIONS),
    ("role", STANDARD_ACTIONS),
    ("grant", STANDARD_ACTIONS),
    ("assignment", STANDARD_ACTIONS),
    ("group", STANDARD_ACTIONS),
    (
        "key",
        &[
            "create", "read", "update", "delete", "execute", "export", "verify", "rotate",
        ],
    ),
    ("usage", STANDARD_ACTIONS),
    ("quota", STANDARD_ACTIONS),
    ("audit", STANDARD_ACTIONS),
    ("decision", STANDARD_ACTIONS),
];

/// The built-in roles of every tenant, most powerful first: each inherits the next.
pub const BUILTIN_ROLES: &[BuiltinRole] = &[
    BuiltinRole {
        name: "admin",
        description: "Everything in the tenant.",
        parent: Some("manager"),
        permissions: &["*:*"],
    },
    BuiltinRole {
        name: "manager",
        description: "Manages users, sessions, roles, grants, assignments, groups, keys, quotas and the catalog; reads and exports the audit trail.",
        parent: Some("developer"),
        permissions: &[
            "user:create",
            "user:update",
            "user:delete",
            "session:read",
            "session:delete",
            "role:*",
            "grant:*",
            "assignment:*",
            "group:*",
            "key:*",
            "quota:*",
            "usage:export",
            "audit:read",
            "audit:export",
            "decision:read",
            "tenant:update",
        ],
    },
    BuiltinRole {
        name: "developer",
        description: "Issues and rotates API keys, records usage and asks for decisions.",
        parent: Some("viewer"),
        permissions: &[
            "key:create",
            "key:update",
            "key:rotate",
            "key:verify",
            "usage:create",
            "decision:execute",
        ],
    },
    BuiltinRole {
        name: "viewer",
        description: "Reads the tenant, its users, roles, grants, assignments, groups, keys, usage and quotas.",
        parent: None,
        permissions: &[
            "tenant:read",
            "user:read",
            "role:read",
            "grant:read",
            "assignment:read",
            "group:read",
            "key:read",
            "usage:read",
            "quota:read",
        ],
    },
];

/// A role every tenant has, defined by the service's code rather than by events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinRole {
    /// Its name.
    pub name: &'static str,
    /// What it is for.
    pub description: &'static str,
    /// The role it inherits.
    pub parent: Option<&'static str>,
    /// Its default permissions.
    pub permissions: &'static [&'static str],
}

/// The names of the built-in roles, most powerful first.
pub fn builtin_role_names() -> Vec<&'static str> {
    BUILTIN_ROLES.iter().map(|r| r.name).collect()
}

/// The built-in role called `name`.
pub fn builtin_role(name: &str) -> Option<&'static BuiltinRole> {
    BUILTIN_ROLES.iter().find(|r| r.name == name)
}

/// A tenant's permission catalog: the built-in types and the tenant's own.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Catalog {
    /// The tenant's own resource types and their actions.
    pub custom: BTreeMap<String, BTreeSet<String>>,
}

impl Catalog {
    /// The actions of `resource_type`, built-in or the tenant's.
    pub fn actions(&self, resource_type: &str) -> Option<Vec<&str>> {
        if let Some((_, actions)) = BUILTIN_TYPES.iter().find(|(t, _)| *t == resource_type) {
            return Some(actions.to_vec());
        }
        self.custom
            .get(resource_type)
            .map(|a| a.iter().map(String::as_str).collect())
    }

    /// Every resource type, built-in first.
    pub fn types(&self) -> Vec<&str> {
        BUILTIN_TYPES
            .iter()
            .map(|(t, _)| *t)
            .chain(self.custom.keys().map(String::as_str))
            .collect()
    }

    /// Every permission `type:action` the catalog knows, built-in first.
    pub fn permissions(&self) -> Vec<String> {
        self.types()
            .into_iter()
            .flat_map(|t| {
                self.actions(t)
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |a| format!("{t}:{a}"))
            })
            .collect()
    }

    /// Whether `permission` names known types and actions (`*` standing for any); otherwise
    /// what is known, for the refusal.
    pub fn check(&self, permission: &Permission) -> Result<(), UnknownPermission> {
        let known = match (
            permission.resource_type.as_str(),
            permission.action.as_str(),
        ) {
            (ANY, ANY) => true,
            (ANY, action) => self
                .types()
                .iter()
                .any(|t| self.actions(t).unwrap_or_default().contains(&action)),
            (t, ANY) => self.actions(t).is_some(),
            (t, action) => self.actions(t).is_some_and(|a| a.contains(&action)),
        };
        if known {
            Ok(())
        } else {
            Err(UnknownPermission {
                permission: permission.to_string(),
                known: self.permissions(),
            })
        }
    }
}

/// A permission the tenant's catalog does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{permission} is not in the tenant's catalog")]
pub struct UnknownPermission {
    /// What was asked for.
    pub permission: String,
    /// Every permission the catalog knows.
    pub known: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Permission {
        Permission::parse(s).unwrap()
    }

    #[test]
    fn wildcards_cover_and_overlap() {
        assert!(p("project:*").covers(&p("project:read")));
        assert!(p("*:read").covers(&p("project:read")));
        assert!(p("*:*").covers(&p("project:*")));
        assert!(!p("project:read").covers(&p("project:*")));
        assert!(p("project:read").overlaps(&p("project:*")));
        assert!(!p("project:read").overlaps(&p("billing:read")));
        assert!(Permission::parse("project").is_err());
        assert!(Permission::parse("Project:read").is_err());
        assert!(Permission::parse("project:re ad").is_err());
    }

    #[test]
    fn hours_span_midnight_in_their_zone() {
        let night = Hours {
            from: TimeOfDay::parse("22:00").unwrap(),
            until: TimeOfDay::parse("06:00").unwrap(),
            time_zone: "Europe/Paris".into(),
        };
        // 21:30 UTC in winter is 22:30 in Paris.
        assert!(night.contains(Timestamp::parse("2026-01-10T21:30:00Z").unwrap()));
        assert!(!night.contains(Timestamp::parse("2026-01-10T12:00:00Z").unwrap()));
        assert!(night.check().is_ok());
        let bad = Hours {
            time_zone: "Mars/Olympus".into(),
            ..night
        };
        assert!(bad.check().is_err());
    }

    #[test]
    fn the_catalog_lists_what_it_knows() {
        let mut c = Catalog::default();
        c.custom
            .insert("project".into(), ["read".to_owned()].into_iter().collect());
        assert!(c.check(&p("project:read")).is_ok());
        assert!(c.check(&p("key:verify")).is_ok());
        let err = c.check(&p("project:deploy")).unwrap_err();
        assert!(err.known.contains(&"project:read".to_owned()));
        assert!(c.check(&p("*:read")).is_ok());
        assert!(c.check(&p("*:deploy")).is_err());
    }
}
