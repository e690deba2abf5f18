//! The ledger's events as OCSF 1.9 events, one JSON object each, for SIEM import.
//!
//! Every event type of the catalog is either mapped to one OCSF class (a few to one of two,
//! chosen by whom the event is about) or skipped for a stated reason; [`RULES`] is the table,
//! and `docs/siem.md` says the same in words. Every event produced fills the base event's
//! required fields and those of its class, keeps the ledger's position, hash and event id so an
//! entry leads back to the log, and carries the original record in `raw_data`. Nothing is
//! decrypted: sealed personal data stays sealed.
//!
//! A few events name their subject only by reference (a session's events do not repeat the
//! user; a revoked grant or an ended assignment is named by id), so a [`Mapper`] remembers those
//! references as it is shown the log in order. It holds one entry per live session, grant and
//! assignment: bounded by the ledger's state, not by its length.

use std::collections::HashMap;

use custodian_domain::{ActorKind, EventRecord};
use serde_json::{Map, Value, json};

/// The OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.9.0";

/// The product named in every event's `metadata.product`.
pub const PRODUCT: &str = "Custodian";

/// The OCSF classes the export produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// 3002 Authentication: logons, their failures, sessions and their tokens.
    Authentication,
    /// 3003 Authorize Session: authorization checks and their decisions.
    AuthorizeSession,
    /// 3006 Group Management: resource group membership.
    GroupManagement,
    /// 3007 User Management: user lifecycle, credentials, and rights given to a principal.
    UserManagement,
    /// 3008 Role Management: roles and the rights given to a role.
    RoleManagement,
    /// 6003 API Activity: keys, usage, quotas, tenants and configuration.
    ApiActivity,
}

impl Class {
    /// Every class, in `class_uid` order.
    pub const ALL: [Self; 6] = [
        Self::Authentication,
        Self::AuthorizeSession,
        Self::GroupManagement,
        Self::UserManagement,
        Self::RoleManagement,
        Self::ApiActivity,
    ];

    /// `class_uid`.
    pub fn uid(self) -> u32 {
        match self {
            Self::Authentication => 3002,
            Self::AuthorizeSession => 3003,
            Self::GroupManagement => 3006,
            Self::UserManagement => 3007,
            Self::RoleManagement => 3008,
            Self::ApiActivity => 6003,
        }
    }

    /// `class_name`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Authentication => "Authentication",
            Self::AuthorizeSession => "Authorize Session",
            Self::GroupManagement => "Group Management",
            Self::UserManagement => "User Management",
            Self::RoleManagement => "Role Management",
            Self::ApiActivity => "API Activity",
        }
    }

    /// `category_uid`: 3 Identity & Access Management, or 6 Application Activity.
    pub fn category_uid(self) -> u32 {
        self.uid() / 1000
    }

    fn category_name(self) -> &'static str {
        match self.category_uid() {
            3 => "Identity & Access Management",
            _ => "Application Activity",
        }
    }
}

/// Where an event type goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// To `class` with `activity_id` (named `activity`).
    Class {
        /// The class.
        class: Class,
        /// `activity_id`.
        activity_id: u32,
        /// `activity_name`.
        activity: &'static str,
    },
    /// A grant: to Role Management when given to a role, to User Management when given to a
    /// principal, with the activities of assigning or removing privileges.
    Grant {
        /// True for a revocation.
        removed: bool,
    },
    /// Not exported, for this reason.
    Skipped(&'static str),
}

const fn to(class: Class, activity_id: u32, activity: &'static str) -> Target {
    Target::Class {
        class,
        activity_id,
        activity,
    }
}

use Class::{
    ApiActivity as Api, Authentication as Auth, AuthorizeSession as Authz,
    GroupManagement as Group, RoleManagement as Role, UserManagement as User,
};

/// The mapping of every event type of the catalog, as `docs/siem.md` documents it.
pub const RULES: &[(&str, Target)] = &[
    ("user.logged_in", to(Auth, 1, "Logon")),
    ("user.login_failed", to(Auth, 1, "Logon")),
    ("user.mfa_challenge_issued", to(Auth, 99, "Other")),
    ("security.login_throttled", to(Auth, 1, "Logon")),
    (
        "security.unknown_account_login_failed",
        to(Auth, 1, "Logon"),
    ),
    ("session.started", to(Auth, 3, "Authentication Ticket")),
    ("session.refreshed", to(Auth, 5, "Service Ticket Renew")),
    (
        "session.refresh_token_reused",
        to(Auth, 5, "Service Ticket Renew"),
    ),
    ("session.revoked", to(Auth, 2, "Logoff")),
    ("decision.recorded", to(Authz, 1, "Assign Privileges")),
    ("user.created", to(User, 1, "Create")),
    ("user.invited", to(User, 1, "Create")),
    ("user.invitation_accepted", to(User, 4, "Enable")),
    ("user.profile_updated", to(User, 2, "Update")),
    ("user.deleted", to(User, 3, "Delete")),
    ("user.enabled", to(User, 4, "Enable")),
    ("user.disabled", to(User, 5, "Disable")),
    ("user.password_set", to(User, 8, "Password Change")),
    ("user.password_changed", to(User, 8, "Password Change")),
    ("user.password_rehashed", to(User, 2, "Update")),
    ("user.password_reset_issued", to(User, 9, "Password Reset")),
    ("user.password_reset", to(User, 9, "Password Reset")),
    (
        "user.totp_enrollment_started",
        to(User, 12, "MFA Factor Enable"),
    ),
    ("user.totp_enabled", to(User, 12, "MFA Factor Enable")),
    ("user.totp_disabled", to(User, 13, "MFA Factor Disable")),
    (
        "user.recovery_codes_generated",
        to(User, 12, "MFA Factor Enable"),
    ),
    ("assignment.created", to(User, 16, "Assign Roles")),
    ("assignment.ended", to(User, 17, "Remove Roles")),
    ("grant.created", Target::Grant { removed: false }),
    ("grant.revoked", Target::Grant { removed: true }),
    ("role.created", to(Role, 1, "Create")),
    ("role.updated", to(Role, 2, "Update")),
    ("role.deleted", to(Role, 3, "Delete")),
    ("group.member_added", to(Group, 3, "Add User")),
    ("group.member_removed", to(Group, 4, "Remove User")),
    ("key.issued", to(Api, 1, "Create")),
    ("key.updated", to(Api, 3, "Update")),
    ("key.rotated", to(Api, 3, "Update")),
    ("key.revoked", to(Api, 4, "Delete")),
    ("key.used", to(Api, 99, "Other")),
    ("usage.recorded", to(Api, 1, "Create")),
    ("quota.set", to(Api, 3, "Update")),
    ("quota.cleared", to(Api, 4, "Delete")),
    ("quota.warning", to(Api, 99, "Other")),
    ("quota.exceeded", to(Api, 99, "Other")),
    ("budget.set", to(Api, 3, "Update")),
    ("budget.threshold_crossed", to(Api, 99, "Other")),
    ("meter.cost_set", to(Api, 3, "Update")),
    ("catalog.updated", to(Api, 3, "Update")),
    ("signing_key.issued", to(Api, 1, "Create")),
    ("ledger.checkpoint_key_issued", to(Api, 1, "Create")),
    ("ledger.checkpointed", to(Api, 1, "Create")),
    ("tenant.created", to(Api, 1, "Create")),
    ("tenant.renamed", to(Api, 3, "Update")),
    ("tenant.plan_changed", to(Api, 3, "Update")),
    ("tenant.suspended", to(Api, 3, "Update")),
    ("tenant.reactivated", to(Api, 3, "Update")),
    (
        "email.claimed",
        Target::Skipped(
            "bookkeeping of an address's uniqueness; user.created and user.profile_updated report the change",
        ),
    ),
    (
        "email.released",
        Target::Skipped(
            "bookkeeping of an address's uniqueness; user.profile_updated and user.deleted report the change",
        ),
    ),
];

/// Where `event_type` goes; `None` for a type the table does not know (a newer ledger's), which
/// the export skips and counts.
pub fn target(event_type: &str) -> Option<Target> {
    RULES
        .iter()
        .find(|(t, _)| *t == event_type)
        .map(|(_, target)| *target)
}

/// The required attributes of each class, written from the OCSF 1.9 schema: the base event's
/// (`activity_id`, `category_uid`, `class_uid`, `metadata` with `product` and `version`,
/// `severity_id`, `time`, `type_uid`) and the class's own.
pub fn required(class: Class) -> &'static [&'static str] {
    match class {
        Class::Authentication => &["user"],
        Class::AuthorizeSession => &["user"],
        Class::GroupManagement => &["group"],
        Class::UserManagement => &["user"],
        Class::RoleManagement => &["iam_role"],
        Class::ApiActivity => &["actor", "api", "src_endpoint"],
    }
}

/// The base event's required attributes.
pub const BASE_REQUIRED: &[&str] = &[
    "activity_id",
    "category_uid",
    "class_uid",
    "metadata",
    "severity_id",
    "time",
    "type_uid",
];

/// Turns ledger records into OCSF events; see the module docs for what it remembers.
#[derive(Debug, Default)]
pub struct Mapper {
    /// `{tenant}/{session id}` → the session's user.
    sessions: HashMap<String, String>,
    /// `{tenant}/{grant id}` → to whom it was given.
    grants: HashMap<String, Subject>,
    /// `{tenant}/{assignment id}` → (principal, role).
    assignments: HashMap<String, (String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Subject {
    Principal(String),
    Role(String),
}

impl Subject {
    fn of(data: &Value) -> Option<Self> {
        let subject = data.get("subject")?;
        if let Some(role) = subject.get("role").and_then(Value::as_str) {
            return Some(Self::Role(role.to_owned()));
        }
        subject
            .get("principal")
            .and_then(Value::as_str)
            .map(|p| Self::Principal(p.to_owned()))
    }
}

fn text<'a>(data: &'a Value, field: &str) -> Option<&'a str> {
    data.get(field).and_then(Value::as_str)
}

impl Mapper {
    /// A mapper that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Remembers what later events will refer to. Call it for every record of the log, in
    /// order, after [`Mapper::map`], whether or not the record is exported.
    pub fn observe(&mut self, record: &EventRecord) {
        let key = |id: &str| format!("{}/{id}", record.tenant);
        let data = &record.data;
        match record.event_type.as_str() {
            "session.started" => {
                if let Some(user) = text(data, "user_id") {
                    self.sessions
                        .insert(key(record.stream.id()), user.to_owned());
                }
            }
            "session.revoked" => {
                self.sessions.remove(&key(record.stream.id()));
            }
            "grant.created" => {
                if let (Some(id), Some(subject)) = (text(data, "id"), Subject::of(data)) {
                    self.grants.insert(key(id), subject);
                }
            }
            "grant.revoked" => {
                if let Some(id) = text(data, "id") {
                    self.grants.remove(&key(id));
                }
            }
            "assignment.created" => {
                if let (Some(id), Some(principal), Some(role)) = (
                    text(data, "id"),
                    text(data, "principal"),
                    text(data, "role"),
                ) {
                    self.assignments
                        .insert(key(id), (principal.to_owned(), role.to_owned()));
                }
            }
            "assignment.ended" => {
                if let Some(id) = text(data, "id") {
                    self.assignments.remove(&key(id));
                }
            }
            _ => {}
        }
    }

    /// The OCSF event for `record`, or `None` when its type is skipped or unknown.
    pub fn map(&self, record: &EventRecord) -> Option<Value> {
        let (class, activity_id, activity) = match target(record.event_type.as_str())? {
            Target::Skipped(_) => return None,
            Target::Class {
                class,
                activity_id,
                activity,
            } => (class, activity_id, activity),
            Target::Grant { removed } => {
                let subject = if removed {
                    text(&record.data, "id")
                        .and_then(|id| self.grants.get(&format!("{}/{id}", record.tenant)))
                        .cloned()
                } else {
                    Subject::of(&record.data)
                };
                match (subject, removed) {
                    (Some(Subject::Role(_)), false) => {
                        (Class::RoleManagement, 4, "Assign Privileges")
                    }
                    (Some(Subject::Role(_)), true) => {
                        (Class::RoleManagement, 5, "Remove Privileges")
                    }
                    (_, false) => (Class::UserManagement, 14, "Assign Privileges"),
                    (_, true) => (Class::UserManagement, 15, "Remove Privileges"),
                }
            }
        };
        let mut event = base(record, class, activity_id, activity);
        self.fill(&mut event, record, class);
        Some(Value::Object(event))
    }

    /// The class's own attributes.
    fn fill(&self, event: &mut Map<String, Value>, record: &EventRecord, class: Class) {
        let data = &record.data;
        let kind = record.event_type.as_str();
        let mut set = |k: &str, v: Value| {
            event.insert(k.to_owned(), v);
        };
        match class {
            Class::Authentication => {
                let user = match record.stream.aggregate() {
                    "user" => Some(record.stream.id().to_owned()),
                    "session" => text(data, "user_id").map(str::to_owned).or_else(|| {
                        self.sessions
                            .get(&format!("{}/{}", record.tenant, record.stream.id()))
                            .cloned()
                    }),
                    _ => None,
                };
                set(
                    "user",
                    match user {
                        Some(uid) => principal(&uid),
                        // An address that matches no account; only its blind index is kept.
                        None => json!({"name": "unknown", "type_id": 0, "type": "Unknown"}),
                    },
                );
                set("service", json!({"name": PRODUCT, "uid": record.tenant}));
                let session = match record.stream.aggregate() {
                    "session" => Some(record.stream.id()),
                    _ => text(data, "session_id"),
                };
                if let Some(session) = session {
                    set("session", json!({"uid": session}));
                }
                if let Some(method) = text(data, "method") {
                    set("is_mfa", Value::Bool(method != "password"));
                }
                let failed = matches!(
                    kind,
                    "user.login_failed"
                        | "security.login_throttled"
                        | "security.unknown_account_login_failed"
                        | "session.refresh_token_reused"
                );
                let detail = match kind {
                    "user.login_failed" => text(data, "reason").map(str::to_owned),
                    "security.login_throttled" => Some("too many failed logins; throttled".into()),
                    "security.unknown_account_login_failed" => Some("no such account".into()),
                    "session.refresh_token_reused" => {
                        Some("a spent refresh token was presented; the session was revoked".into())
                    }
                    "session.revoked" => text(data, "reason").map(str::to_owned),
                    "user.mfa_challenge_issued" => Some("second factor requested".into()),
                    _ => None,
                };
                if failed {
                    set("status_id", json!(2));
                    set("status", json!("Failure"));
                    let (severity_id, severity) = if kind == "session.refresh_token_reused" {
                        (4, "High")
                    } else {
                        (2, "Low")
                    };
                    set("severity_id", json!(severity_id));
                    set("severity", json!(severity));
                }
                if let Some(detail) = detail {
                    set("status_detail", json!(detail));
                }
            }
            Class::AuthorizeSession => {
                let principal_id = text(data, "principal").unwrap_or("unknown");
                set("user", principal(principal_id));
                set(
                    "privileges",
                    json!([text(data, "permission").unwrap_or("unknown")]),
                );
                let allowed = text(data, "decision") == Some("allow");
                set("status_id", json!(if allowed { 1 } else { 2 }));
                set("status", json!(if allowed { "Success" } else { "Failure" }));
                if let Some(reason) = text(data, "reason") {
                    set("status_detail", json!(reason));
                }
                set(
                    "message",
                    json!(format!(
                        "{} {} {} on {}",
                        text(data, "decision").unwrap_or("unknown"),
                        principal_id,
                        text(data, "permission").unwrap_or("?"),
                        text(data, "resource").unwrap_or("?"),
                    )),
                );
                if let Some(ip) = text(data, "ip") {
                    set("src_endpoint", json!({"ip": ip}));
                }
            }
            Class::UserManagement => {
                let user = match kind {
                    "assignment.created" => text(data, "principal").map(str::to_owned),
                    "assignment.ended" => text(data, "id")
                        .and_then(|id| self.assignments.get(&format!("{}/{id}", record.tenant)))
                        .map(|(p, _)| p.clone()),
                    "grant.created" => match Subject::of(data) {
                        Some(Subject::Principal(p)) => Some(p),
                        _ => None,
                    },
                    "grant.revoked" => text(data, "id")
                        .and_then(|id| self.grants.get(&format!("{}/{id}", record.tenant)))
                        .and_then(|s| match s {
                            Subject::Principal(p) => Some(p.clone()),
                            Subject::Role(_) => None,
                        }),
                    _ => Some(record.stream.id().to_owned()),
                };
                set(
                    "user",
                    user.map_or_else(|| json!({"name": "unknown"}), |u| principal(&u)),
                );
                let role = match kind {
                    "assignment.created" => text(data, "role").map(str::to_owned),
                    "assignment.ended" => text(data, "id")
                        .and_then(|id| self.assignments.get(&format!("{}/{id}", record.tenant)))
                        .map(|(_, r)| r.clone()),
                    _ => None,
                };
                if let Some(role) = role {
                    set("iam_roles", json!([{"name": role}]));
                }
                if let Some(permission) = text(data, "permission") {
                    set("privileges", json!([permission]));
                }
                if let Some(on) = data.get("on").and_then(scope) {
                    set("resources", json!([on]));
                }
                if kind.starts_with("user.totp") || kind == "user.recovery_codes_generated" {
                    set(
                        "auth_factors",
                        json!([{"factor_type_id": 6, "factor_type": "OTP"}]),
                    );
                }
            }
            Class::RoleManagement => {
                let role = match kind {
                    "grant.created" => match Subject::of(data) {
                        Some(Subject::Role(r)) => Some(r),
                        _ => None,
                    },
                    "grant.revoked" => text(data, "id")
                        .and_then(|id| self.grants.get(&format!("{}/{id}", record.tenant)))
                        .and_then(|s| match s {
                            Subject::Role(r) => Some(r.clone()),
                            Subject::Principal(_) => None,
                        }),
                    _ => text(data, "name").map(str::to_owned),
                };
                set(
                    "iam_role",
                    json!({"name": role.unwrap_or_else(|| "unknown".to_owned())}),
                );
                if let Some(permission) = text(data, "permission") {
                    set("privileges", json!([permission]));
                }
                if let Some(on) = data.get("on").and_then(scope) {
                    set("resources", json!([on]));
                }
            }
            Class::GroupManagement => {
                set(
                    "group",
                    json!({"name": text(data, "group").unwrap_or("unknown")}),
                );
                // Custodian's groups hold resources; the member is the class's `user` (which
                // OCSF requires) as well as its `resource`.
                let member = text(data, "resource").unwrap_or("unknown");
                set(
                    "user",
                    json!({"uid": member, "type_id": 99, "type": "Resource"}),
                );
                set("resource", resource(member));
            }
            Class::ApiActivity => {
                set(
                    "api",
                    json!({"operation": kind, "service": {"name": PRODUCT}}),
                );
                set(
                    "src_endpoint",
                    match text(data, "ip") {
                        Some(ip) => json!({"ip": ip}),
                        // The ledger keeps no client address for this event.
                        None => json!({"name": "unknown"}),
                    },
                );
                set(
                    "resources",
                    json!([{
                        "uid": record.stream.id(),
                        "type": record.stream.aggregate(),
                    }]),
                );
                if kind == "quota.exceeded" {
                    set("status_id", json!(2));
                    set("status", json!("Failure"));
                    set("status_detail", json!("over quota; usage refused"));
                    set("severity_id", json!(2));
                    set("severity", json!("Low"));
                }
            }
        }
    }
}

/// The base event's attributes, plus the actor and the way back to the ledger.
fn base(
    record: &EventRecord,
    class: Class,
    activity_id: u32,
    activity: &'static str,
) -> Map<String, Value> {
    let millis = record.occurred_at.unix_micros() / 1000;
    let mut metadata = json!({
        "version": OCSF_VERSION,
        "product": {
            "name": PRODUCT,
            "vendor_name": PRODUCT,
            "version": env!("CARGO_PKG_VERSION"),
        },
        "uid": record.id.to_string(),
        "event_code": record.event_type.as_str(),
        "log_name": "ledger",
        "original_time": record.occurred_at.to_string(),
        "sequence": record.position,
        "tenant_uid": record.tenant,
    });
    if let Some(correlation) = &record.correlation_id {
        metadata["correlation_uid"] = json!(correlation);
    }
    let mut event = Map::new();
    let mut set = |k: &str, v: Value| {
        event.insert(k.to_owned(), v);
    };
    set("category_uid", json!(class.category_uid()));
    set("category_name", json!(class.category_name()));
    set("class_uid", json!(class.uid()));
    set("class_name", json!(class.name()));
    set("activity_id", json!(activity_id));
    set("activity_name", json!(activity));
    set("type_uid", json!(class.uid() * 100 + activity_id));
    set("type_name", json!(format!("{}: {activity}", class.name())));
    set("severity_id", json!(1));
    set("severity", json!("Informational"));
    set("status_id", json!(1));
    set("status", json!("Success"));
    set("time", json!(millis));
    set(
        "message",
        json!(format!(
            "{} in {}",
            record.event_type.as_str(),
            record.stream.as_str()
        )),
    );
    set("metadata", metadata);
    set("actor", actor(record));
    set(
        "unmapped",
        json!({
            "position": record.position,
            "hash": record.hash.to_hex(),
            "prev_hash": record.prev_hash.to_hex(),
            "stream": record.stream.as_str(),
            "stream_version": record.version,
            "type": record.event_type.as_str(),
            "schema": record.schema,
            "causation_id": record.causation_id,
        }),
    );
    if let Ok(raw) = serde_json::to_string(record) {
        set("raw_data", json!(raw));
    }
    event
}

fn actor(record: &EventRecord) -> Value {
    let id = record.actor.id.as_str();
    let (type_id, kind) = match record.actor.kind {
        ActorKind::User => (1, "User"),
        ActorKind::ApiKey => (99, "API Key"),
        ActorKind::Service => (4, "Service"),
        ActorKind::System => (3, "System"),
    };
    match record.actor.kind {
        ActorKind::User | ActorKind::ApiKey => {
            json!({"user": {"uid": id, "type_id": type_id, "type": kind}})
        }
        ActorKind::Service | ActorKind::System => json!({
            "app_name": id,
            "user": {"uid": id, "type_id": type_id, "type": kind},
        }),
    }
}

/// A principal named by id: a user, an API key, or another kind of account.
fn principal(id: &str) -> Value {
    let (type_id, kind) = if id.starts_with("user_") {
        (1, "User")
    } else if id.starts_with("key_") {
        (99, "API Key")
    } else {
        (99, "Principal")
    };
    json!({"uid": id, "type_id": type_id, "type": kind})
}

/// A resource named `type/id`.
fn resource(name: &str) -> Value {
    match name.split_once('/') {
        Some((kind, _)) => json!({"uid": name, "type": kind}),
        None => json!({"uid": name}),
    }
}

/// What a grant or an assignment covers, as a resource; `None` for the whole tenant.
fn scope(on: &Value) -> Option<Value> {
    if let Some(r) = on.get("resource").and_then(Value::as_str) {
        return Some(resource(r));
    }
    if let Some(t) = on.get("resource_type").and_then(Value::as_str) {
        return Some(json!({"type": t, "name": format!("every {t}")}));
    }
    on.get("group")
        .and_then(Value::as_str)
        .map(|g| json!({"group": {"name": g}, "name": format!("every member of {g}")}))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record of `event_type` in a stream of its aggregate, carrying `data`.
    fn record(position: u64, event_type: &str, data: Value) -> EventRecord {
        let aggregate = event_type.split('.').next().unwrap();
        let id = match aggregate {
            "user" => "user_01",
            "session" => "sess_01",
            _ => "x1",
        };
        serde_json::from_value(json!({
            "position": position,
            "stream": format!("acme/{aggregate}/{id}"),
            "version": 1,
            "id": "01936d5e-8f2a-7c3b-9d4e-5f6a7b8c9d0e",
            "type": event_type,
            "schema": 1,
            "tenant": "acme",
            "actor": {"kind": "user", "id": "user_02"},
            "occurred_at": "2026-03-01T12:00:00.250000Z",
            "correlation_id": "req_1",
            "causation_id": null,
            "data": data,
            "prev_hash": "00".repeat(32),
            "hash": "ab".repeat(32),
        }))
        .unwrap()
    }

    fn present(event: &Value, path: &str) -> bool {
        let value = path.split('.').try_fold(event, |v, k| v.get(k));
        match value {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Array(a)) => !a.is_empty(),
            Some(Value::Object(o)) => !o.is_empty(),
            Some(_) => true,
        }
    }

    fn at_least_one(event: &Value, object: &str, of: &[&str]) -> bool {
        of.iter().any(|k| present(event, &format!("{object}.{k}")))
    }

    /// Checks the base event's and `class`'s required attributes, and the schema's
    /// "at least one of" constraints on them.
    pub(crate) fn assert_complete(event: &Value) {
        for field in BASE_REQUIRED {
            assert!(present(event, field), "{field} missing in {event}");
        }
        for field in [
            "metadata.version",
            "metadata.product.name",
            "metadata.product.vendor_name",
        ] {
            assert!(present(event, field), "{field} missing in {event}");
        }
        assert_eq!(event["metadata"]["version"], OCSF_VERSION);
        let uid = event["class_uid"].as_u64().unwrap();
        let class = Class::ALL
            .into_iter()
            .find(|c| u64::from(c.uid()) == uid)
            .unwrap_or_else(|| panic!("class {uid} is not one of ours"));
        assert_eq!(event["category_uid"], json!(class.category_uid()));
        assert_eq!(
            event["type_uid"].as_u64().unwrap(),
            uid * 100 + event["activity_id"].as_u64().unwrap()
        );
        for field in required(class) {
            assert!(present(event, field), "{field} missing in {event}");
        }
        let entity = ["name", "uid"];
        let user = ["account", "name", "uid"];
        let endpoint = ["ip", "uid", "name", "hostname", "instance_uid"];
        match class {
            Class::Authentication => {
                assert!(at_least_one(event, "user", &user), "{event}");
                assert!(present(event, "service") || present(event, "dst_endpoint"));
            }
            Class::AuthorizeSession => {
                assert!(at_least_one(event, "user", &user), "{event}");
                assert!(
                    ["privileges", "groups", "iam_roles"]
                        .iter()
                        .any(|k| present(event, k)),
                    "{event}"
                );
            }
            Class::GroupManagement => {
                assert!(at_least_one(event, "group", &entity), "{event}");
                assert!(present(event, "privileges") || present(event, "user"));
            }
            Class::UserManagement => assert!(at_least_one(event, "user", &user), "{event}"),
            Class::RoleManagement => assert!(at_least_one(event, "iam_role", &entity), "{event}"),
            Class::ApiActivity => {
                assert!(present(event, "api.operation"), "{event}");
                assert!(at_least_one(event, "src_endpoint", &endpoint), "{event}");
                assert!(
                    at_least_one(
                        event,
                        "actor",
                        &["user", "process", "session", "app_name", "app_uid"]
                    ),
                    "{event}"
                );
            }
        }
        // The way back to the ledger.
        for field in [
            "metadata.uid",
            "metadata.sequence",
            "unmapped.position",
            "unmapped.hash",
            "raw_data",
        ] {
            assert!(present(event, field), "{field} missing in {event}");
        }
    }

    #[test]
    fn every_catalog_type_is_mapped_or_skipped_with_a_reason() {
        for (event_type, _) in custodian_domain::catalog() {
            match target(event_type) {
                None => panic!("{event_type} has no OCSF rule"),
                Some(Target::Skipped(reason)) => assert!(!reason.is_empty()),
                Some(_) => {}
            }
        }
        for (event_type, _) in RULES {
            assert!(
                custodian_domain::catalog()
                    .iter()
                    .any(|(t, _)| t == event_type),
                "{event_type} is not in the catalog"
            );
        }
    }

    #[test]
    fn every_mapped_type_fills_its_class_required_fields_even_with_empty_data() {
        let mapper = Mapper::new();
        for (event_type, _) in custodian_domain::catalog() {
            let event = mapper.map(&record(7, event_type, json!({})));
            match target(event_type) {
                Some(Target::Skipped(_)) => assert!(event.is_none(), "{event_type}"),
                _ => {
                    let event = event.unwrap_or_else(|| panic!("{event_type} was not mapped"));
                    assert_complete(&event);
                    assert_eq!(event["metadata"]["event_code"], *event_type);
                }
            }
        }
    }

    #[test]
    fn the_mapping_table_is_documented() {
        let doc = include_str!("../../../docs/siem.md");
        for (event_type, target) in RULES {
            let row = doc
                .lines()
                .find(|l| l.starts_with(&format!("| `{event_type}` |")))
                .unwrap_or_else(|| panic!("{event_type} has no row in docs/siem.md"));
            match target {
                Target::Class {
                    class, activity_id, ..
                } => {
                    assert!(row.contains(&class.uid().to_string()), "{row}");
                    assert!(row.contains(&format!("{activity_id} ")), "{row}");
                }
                Target::Grant { .. } => {
                    assert!(row.contains("3007") && row.contains("3008"), "{row}")
                }
                Target::Skipped(_) => assert!(row.contains("skipped"), "{row}"),
            }
        }
    }

    #[test]
    fn a_grant_goes_to_role_or_user_management_by_its_subject_and_its_revocation_follows() {
        let mut mapper = Mapper::new();
        let to_role = record(
            1,
            "grant.created",
            json!({"id": "grant_1", "subject": {"role": "ops"}, "permission": "project:read", "on": {"resource": "project/a"}}),
        );
        let to_alice = record(
            2,
            "grant.created",
            json!({"id": "grant_2", "subject": {"principal": "user_alice"}, "permission": "project:write", "on": null}),
        );
        let role_event = mapper.map(&to_role).unwrap();
        mapper.observe(&to_role);
        let user_event = mapper.map(&to_alice).unwrap();
        mapper.observe(&to_alice);
        assert_eq!(role_event["class_uid"], 3008);
        assert_eq!(role_event["activity_id"], 4);
        assert_eq!(role_event["iam_role"]["name"], "ops");
        assert_eq!(role_event["privileges"], json!(["project:read"]));
        assert_eq!(role_event["resources"][0]["uid"], "project/a");
        assert_eq!(user_event["class_uid"], 3007);
        assert_eq!(user_event["activity_id"], 14);
        assert_eq!(user_event["user"]["uid"], "user_alice");

        let revoke_role = record(3, "grant.revoked", json!({"id": "grant_1"}));
        let revoke_alice = record(4, "grant.revoked", json!({"id": "grant_2"}));
        let a = mapper.map(&revoke_role).unwrap();
        let b = mapper.map(&revoke_alice).unwrap();
        assert_eq!(
            (a["class_uid"].clone(), a["activity_id"].clone()),
            (json!(3008), json!(5))
        );
        assert_eq!(a["iam_role"]["name"], "ops");
        assert_eq!(
            (b["class_uid"].clone(), b["activity_id"].clone()),
            (json!(3007), json!(15))
        );
        assert_eq!(b["user"]["uid"], "user_alice");
        assert_complete(&a);
        assert_complete(&b);
    }

    #[test]
    fn session_events_name_the_user_who_started_the_session() {
        let mut mapper = Mapper::new();
        let started = record(
            1,
            "session.started",
            json!({"user_id": "user_01", "method": "password_totp", "ip": "192.0.2.7"}),
        );
        let event = mapper.map(&started).unwrap();
        mapper.observe(&started);
        assert_eq!(event["user"]["uid"], "user_01");
        assert_eq!(event["session"]["uid"], "sess_01");
        assert_eq!(event["is_mfa"], true);
        let reused = record(2, "session.refresh_token_reused", json!({"generation": 3}));
        let event = mapper.map(&reused).unwrap();
        assert_eq!(event["user"]["uid"], "user_01");
        assert_eq!(event["status_id"], 2);
        assert_eq!(event["severity_id"], 4);
    }

    #[test]
    fn a_decision_is_an_authorize_session_with_its_outcome() {
        let mapper = Mapper::new();
        let deny = record(
            1,
            "decision.recorded",
            json!({"principal": "user_bob", "permission": "project:deploy", "resource": "project/a", "decision": "deny", "reason": "no grant"}),
        );
        let event = mapper.map(&deny).unwrap();
        assert_eq!(event["class_uid"], 3003);
        assert_eq!(event["type_uid"], 300301);
        assert_eq!(event["user"]["uid"], "user_bob");
        assert_eq!(event["privileges"], json!(["project:deploy"]));
        assert_eq!(event["status_id"], 2);
        assert_eq!(event["status_detail"], "no grant");
    }

    #[test]
    fn the_base_event_leads_back_to_the_ledger() {
        let event = Mapper::new()
            .map(&record(42, "user.disabled", json!({"reason": "left"})))
            .unwrap();
        assert_eq!(event["time"], 1_772_366_400_250_i64);
        assert_eq!(
            event["metadata"]["uid"],
            "01936d5e-8f2a-7c3b-9d4e-5f6a7b8c9d0e"
        );
        assert_eq!(event["metadata"]["correlation_uid"], "req_1");
        assert_eq!(event["metadata"]["sequence"], 42);
        assert_eq!(event["unmapped"]["hash"], "ab".repeat(32));
        assert_eq!(event["actor"]["user"]["uid"], "user_02");
        let raw: EventRecord = serde_json::from_str(event["raw_data"].as_str().unwrap()).unwrap();
        assert_eq!(raw.position, 42);
    }
}
