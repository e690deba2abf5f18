//! What an event is about: the principals and resources it touches, so that an audit can answer
//! "every event about this user" or "every event about this resource" from the log alone.
//!
//! [`touches`] reads one record and decodes it with its aggregate's own event type. It names:
//!
//! - the actor, when it is a principal (a user, an API key or a service; never the ledger itself);
//! - the subject of the stream: the user of a `user` stream, the key of a `key` stream, the
//!   session of a `session` stream, the tenant of a `tenant` stream;
//! - what the body names: a grant's subject principal (or role) and scope resource, an
//!   assignment's principal, role and scope, a group membership's resource and group, a decision's
//!   principal and resource, a key's owner, a login's session, usage's subject.
//!
//! Resources are written `type/id` as the policy spells them (`project/p42`, `user/user_01...`,
//! `group/admins`, `role/auditor`, `grant/grant_01...`). A scope over a whole resource type names
//! no single resource, so it touches none.
//!
//! Some events only continue the story of an object opened earlier: a session's refresh, a key's
//! rotation or use, a grant's revocation, an assignment's end. Their bodies do not name whose it
//! is, so they say which object they continue ([`Touches::continues`]), and the object's opening
//! event says it opens it ([`Touches::opens`]). A reader who follows the log counts a continuing
//! event as touching whatever its object's opening event touched as a subject (its actor aside):
//! the revocation of Alice's grant is about Alice.

use std::collections::BTreeSet;

use crate::event::{ActorKind, DomainEvent, EventRecord};
use crate::key::KeyEvent;
use crate::policy::{DecisionEvent, PolicyEvent, Scope, Subject};
use crate::session::SessionEvent;
use crate::usage::UsageEvent;
use crate::user::UserEvent;
use crate::{email, ledger, security, signing_key, tenant};

/// What one event is about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touches {
    /// The actor's id, when the actor is a principal (not the ledger acting on its own).
    pub actor: Option<String>,
    /// The principals the event is about (user, API key and service ids), actor aside.
    pub principals: BTreeSet<String>,
    /// The resources the event is about, `type/id`.
    pub resources: BTreeSet<String>,
    /// The object (`type/id`, one of `resources`) this event opens: later events that continue it
    /// touch what this one touches as a subject.
    pub opens: Option<String>,
    /// The object (`type/id`) whose story this event continues: it also touches what the object's
    /// opening event touched as a subject.
    pub continues: Option<String>,
}

impl Touches {
    /// Whether `principal` acted in the event or is one of its subjects.
    pub fn touches_principal(&self, principal: &str) -> bool {
        self.actor.as_deref() == Some(principal) || self.principals.contains(principal)
    }

    /// Whether the event is about `resource` (`type/id`).
    pub fn touches_resource(&self, resource: &str) -> bool {
        self.resources.contains(resource)
    }

    fn principal(&mut self, id: impl Into<String>) {
        let id = id.into();
        if !id.is_empty() {
            self.principals.insert(id);
        }
    }

    fn resource(&mut self, resource_type: &str, id: &str) {
        if !id.is_empty() {
            self.resources.insert(format!("{resource_type}/{id}"));
        }
    }

    fn scope(&mut self, on: Option<&Scope>) {
        match on {
            Some(Scope::Resource(r)) => {
                self.resources.insert(r.to_string());
            }
            Some(Scope::Group(g)) => self.resource("group", g),
            Some(Scope::ResourceType(_)) | None => {}
        }
    }

    fn opens(&mut self, resource_type: &str, id: &str) {
        self.resource(resource_type, id);
        self.opens = Some(format!("{resource_type}/{id}"));
    }

    fn continues(&mut self, resource_type: &str, id: &str) {
        self.resource(resource_type, id);
        self.continues = Some(format!("{resource_type}/{id}"));
    }
}

fn of<E: DomainEvent>(record: &EventRecord) -> Option<E> {
    let t = record.event_type.as_str();
    if E::TYPES.iter().any(|(name, _)| *name == t) {
        E::decode(t, record.schema, &record.data).ok()
    } else {
        None
    }
}

/// What `record` is about. An event of a type this code does not know, or whose body does not
/// decode, touches only its actor and its stream's subject.
pub fn touches(record: &EventRecord) -> Touches {
    let mut t = Touches {
        actor: match record.actor.kind {
            ActorKind::System => None,
            ActorKind::User | ActorKind::ApiKey | ActorKind::Service => {
                Some(record.actor.id.clone()).filter(|id| !id.is_empty())
            }
        },
        ..Touches::default()
    };
    let id = record.stream.id();
    match record.stream.aggregate() {
        "user" => {
            t.principal(id);
            t.resource("user", id);
        }
        "key" => {
            t.principal(id);
        }
        "tenant" => t.resource("tenant", id),
        _ => {}
    }
    if let Some(e) = of::<UserEvent>(record) {
        user(&mut t, e);
    } else if let Some(e) = of::<SessionEvent>(record) {
        match e {
            SessionEvent::Started { user_id, .. } => {
                t.principal(user_id);
                t.opens("session", id);
            }
            SessionEvent::Refreshed { .. }
            | SessionEvent::RefreshTokenReused { .. }
            | SessionEvent::Revoked { .. } => t.continues("session", id),
        }
    } else if let Some(e) = of::<KeyEvent>(record) {
        match e {
            KeyEvent::Issued { owner, on, .. } => {
                t.principal(owner);
                t.scope(on.as_ref());
                t.opens("key", id);
            }
            KeyEvent::Updated { .. }
            | KeyEvent::Rotated { .. }
            | KeyEvent::Revoked {}
            | KeyEvent::Used { .. } => t.continues("key", id),
        }
    } else if let Some(e) = of::<PolicyEvent>(record) {
        policy(&mut t, e);
    } else if let Some(e) = of::<DecisionEvent>(record) {
        match e {
            DecisionEvent::Recorded {
                principal,
                resource,
                ..
            } => {
                t.principal(principal);
                t.resources.insert(resource.to_string());
            }
        }
    } else if let Some(e) = of::<email::EmailEvent>(record) {
        match e {
            email::EmailEvent::Claimed { user_id } | email::EmailEvent::Released { user_id } => {
                t.principal(user_id);
            }
        }
    } else if let Some(e) = of::<UsageEvent>(record) {
        match e {
            UsageEvent::Recorded { subject, .. } | UsageEvent::QuotaExceeded { subject, .. } => {
                t.principal(subject);
            }
            // A tenant's limits and totals are about the tenant, which every entry carries.
            UsageEvent::QuotaWarning { .. }
            | UsageEvent::BudgetThresholdCrossed { .. }
            | UsageEvent::QuotaSet { .. }
            | UsageEvent::QuotaCleared { .. }
            | UsageEvent::MeterCostSet { .. }
            | UsageEvent::BudgetSet { .. } => {}
        }
    } else if let Some(e) = of::<signing_key::SigningKeyEvent>(record) {
        match e {
            signing_key::SigningKeyEvent::Issued { kid, .. } => t.resource("signing_key", &kid),
        }
    } else if let Some(e) = of::<ledger::LedgerEvent>(record) {
        match e {
            // A checkpoint is about the key that signed it, as the key's issuance is.
            ledger::LedgerEvent::CheckpointKeyIssued { key_id, .. }
            | ledger::LedgerEvent::Checkpointed { key_id, .. } => {
                t.resource("checkpoint_key", &key_id);
            }
        }
    } else if let Some(e) = of::<security::SecurityEvent>(record) {
        match e {
            // Addresses and blind indexes of emails name no principal; the actor says who tried.
            security::SecurityEvent::LoginThrottled { .. }
            | security::SecurityEvent::UnknownAccountLoginFailed { .. } => {}
        }
    } else if let Some(e) = of::<tenant::TenantEvent>(record) {
        match e {
            // The stream names the tenant.
            tenant::TenantEvent::Created { .. }
            | tenant::TenantEvent::Renamed { .. }
            | tenant::TenantEvent::PlanChanged { .. }
            | tenant::TenantEvent::Suspended { .. }
            | tenant::TenantEvent::Reactivated => {}
        }
    }
    t
}

fn user(t: &mut Touches, e: UserEvent) {
    match e {
        UserEvent::LoggedIn { session_id, .. } => t.resource("session", &session_id),
        // The stream names the user; nothing in these bodies names anyone else.
        UserEvent::Invited { .. }
        | UserEvent::InvitationAccepted {}
        | UserEvent::Created { .. }
        | UserEvent::ProfileUpdated { .. }
        | UserEvent::Disabled { .. }
        | UserEvent::Enabled {}
        | UserEvent::Deleted {}
        | UserEvent::PasswordSet { .. }
        | UserEvent::PasswordChanged { .. }
        | UserEvent::PasswordReset { .. }
        | UserEvent::PasswordRehashed { .. }
        | UserEvent::PasswordResetIssued { .. }
        | UserEvent::MfaChallengeIssued { .. }
        | UserEvent::LoginFailed { .. }
        | UserEvent::TotpEnrollmentStarted { .. }
        | UserEvent::TotpEnabled { .. }
        | UserEvent::TotpDisabled { .. }
        | UserEvent::RecoveryCodesGenerated { .. } => {}
    }
}

fn policy(t: &mut Touches, e: PolicyEvent) {
    match e {
        // The catalog is the tenant's, which every entry carries.
        PolicyEvent::CatalogUpdated { .. } => {}
        PolicyEvent::RoleCreated { name, parents, .. }
        | PolicyEvent::RoleUpdated { name, parents, .. } => {
            t.resource("role", &name);
            for p in parents {
                t.resource("role", &p);
            }
        }
        PolicyEvent::RoleDeleted { name } => t.resource("role", &name),
        PolicyEvent::GrantCreated {
            id, subject, on, ..
        } => {
            match subject {
                Subject::Principal(p) => t.principal(p),
                Subject::Role(r) => t.resource("role", &r),
            }
            t.scope(on.as_ref());
            t.opens("grant", &id);
        }
        PolicyEvent::GrantRevoked { id, .. } => t.continues("grant", &id),
        PolicyEvent::AssignmentCreated {
            id,
            principal,
            role,
            on,
            ..
        } => {
            t.principal(principal);
            t.resource("role", &role);
            t.scope(on.as_ref());
            t.opens("assignment", &id);
        }
        PolicyEvent::AssignmentEnded { id, .. } => t.continues("assignment", &id),
        PolicyEvent::GroupMemberAdded { group, resource }
        | PolicyEvent::GroupMemberRemoved { group, resource } => {
            t.resources.insert(resource.to_string());
            t.resource("group", &group);
        }
    }
}
