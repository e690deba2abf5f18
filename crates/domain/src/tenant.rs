//! The tenant aggregate: a customer organisation, its plan, and whether it may act at all.
//!
//! Tenants live in the platform scope, in streams `_system/tenant/{tenant_id}`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::{DomainEvent, EventDecodeError};

/// What a tenant pays for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Plan {
    /// The default.
    Free,
    /// Paid, for teams.
    Team,
    /// Paid, for organisations.
    Enterprise,
}

/// Whether a tenant may act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    /// Its sessions and keys work.
    Active,
    /// Every session and key of it is refused.
    Suspended,
}

/// The facts of a tenant's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TenantEvent {
    /// `tenant.created` v1.
    Created {
        /// Display name.
        name: String,
        /// URL-safe unique handle.
        slug: String,
        /// Initial plan.
        plan: Plan,
    },
    /// `tenant.renamed` v1.
    Renamed {
        /// New display name.
        name: String,
    },
    /// `tenant.plan_changed` v1.
    PlanChanged {
        /// New plan.
        plan: Plan,
    },
    /// `tenant.suspended` v1.
    Suspended {
        /// Why, for the audit trail.
        reason: String,
    },
    /// `tenant.reactivated` v1.
    Reactivated,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreatedV1 {
    name: String,
    slug: String,
    plan: Plan,
}
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RenamedV1 {
    name: String,
}
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanChangedV1 {
    plan: Plan,
}
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SuspendedV1 {
    reason: String,
}
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReactivatedV1 {}

fn to_value<T: Serialize>(body: T) -> Value {
    // Plain structs of strings and enums always serialize.
    serde_json::to_value(body).unwrap_or(Value::Null)
}

impl DomainEvent for TenantEvent {
    const TYPES: &'static [(&'static str, u32)] = &[
        ("tenant.created", 1),
        ("tenant.renamed", 1),
        ("tenant.plan_changed", 1),
        ("tenant.suspended", 1),
        ("tenant.reactivated", 1),
    ];

    fn event_type(&self) -> &'static str {
        match self {
            Self::Created { .. } => "tenant.created",
            Self::Renamed { .. } => "tenant.renamed",
            Self::PlanChanged { .. } => "tenant.plan_changed",
            Self::Suspended { .. } => "tenant.suspended",
            Self::Reactivated => "tenant.reactivated",
        }
    }

    fn schema_version(&self) -> u32 {
        1
    }

    fn data(&self) -> Value {
        match self.clone() {
            Self::Created { name, slug, plan } => to_value(CreatedV1 { name, slug, plan }),
            Self::Renamed { name } => to_value(RenamedV1 { name }),
            Self::PlanChanged { plan } => to_value(PlanChangedV1 { plan }),
            Self::Suspended { reason } => to_value(SuspendedV1 { reason }),
            Self::Reactivated => to_value(ReactivatedV1 {}),
        }
    }

    fn decode(event_type: &str, schema: u32, data: &Value) -> Result<Self, EventDecodeError> {
        fn body<T: serde::de::DeserializeOwned>(
            event_type: &str,
            schema: u32,
            data: &Value,
        ) -> Result<T, EventDecodeError> {
            T::deserialize(data).map_err(|source| EventDecodeError::Malformed {
                event_type: event_type.to_owned(),
                schema,
                source,
            })
        }
        Ok(match (event_type, schema) {
            ("tenant.created", 1) => {
                let b: CreatedV1 = body(event_type, schema, data)?;
                Self::Created {
                    name: b.name,
                    slug: b.slug,
                    plan: b.plan,
                }
            }
            ("tenant.renamed", 1) => {
                let b: RenamedV1 = body(event_type, schema, data)?;
                Self::Renamed { name: b.name }
            }
            ("tenant.plan_changed", 1) => {
                let b: PlanChangedV1 = body(event_type, schema, data)?;
                Self::PlanChanged { plan: b.plan }
            }
            ("tenant.suspended", 1) => {
                let b: SuspendedV1 = body(event_type, schema, data)?;
                Self::Suspended { reason: b.reason }
            }
            ("tenant.reactivated", 1) => {
                let _: ReactivatedV1 = body(event_type, schema, data)?;
                Self::Reactivated
            }
            _ => {
                return Err(EventDecodeError::Unknown {
                    event_type: event_type.to_owned(),
                    schema,
                });
            }
        })
    }
}

/// A tenant as its events have made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// Display name.
    pub name: String,
    /// URL-safe handle.
    pub slug: String,
    /// Current plan.
    pub plan: Plan,
    /// Whether it may act.
    pub status: TenantStatus,
}

/// What someone asks of a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantCommand {
    /// Create a tenant.
    Create {
        /// Display name, 1-200 characters.
        name: String,
        /// 2-63 characters of a-z, 0-9, `-`, starting with a letter.
        slug: String,
        /// Initial plan.
        plan: Plan,
    },
    /// Change the display name.
    Rename {
        /// New display name.
        name: String,
    },
    /// Change the plan.
    ChangePlan {
        /// New plan.
        plan: Plan,
    },
    /// Stop every session and key of the tenant.
    Suspend {
        /// Why, 1-500 characters.
        reason: String,
    },
    /// Undo a suspension.
    Reactivate,
}

/// Why a tenant command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    /// The tenant does not exist.
    #[error("tenant not found")]
    NotFound,
    /// The tenant already exists.
    #[error("tenant already exists")]
    AlreadyExists,
    /// A field is invalid.
    #[error("{field}: {message}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// What is wrong, for a person.
        message: &'static str,
    },
    /// The command does not apply in the tenant's current status.
    #[error("tenant is {0:?}")]
    WrongStatus(TenantStatus),
}

fn check_name(name: &str) -> Result<(), TenantError> {
    let n = name.trim().chars().count();
    if n == 0 || n > 200 {
        return Err(TenantError::Invalid {
            field: "name",
            message: "must be 1 to 200 characters",
        });
    }
    Ok(())
}

fn check_slug(slug: &str) -> Result<(), TenantError> {
    let mut chars = slug.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && (2..=63).contains(&slug.len())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(TenantError::Invalid {
            field: "slug",
            message: "must be 2 to 63 characters of a-z, 0-9 and '-', starting with a letter",
        })
    }
}

/// Decides what a command means for a tenant in `state` (`None`: not yet created).
pub fn decide(
    state: Option<&Tenant>,
    command: TenantCommand,
) -> Result<Vec<TenantEvent>, TenantError> {
    use TenantCommand as C;
    match (state, command) {
        (None, C::Create { name, slug, plan }) => {
            check_name(&name)?;
            check_slug(&slug)?;
            Ok(vec![TenantEvent::Created {
                name: name.trim().to_owned(),
                slug,
                plan,
            }])
        }
        (Some(_), C::Create { .. }) => Err(TenantError::AlreadyExists),
        (None, _) => Err(TenantError::NotFound),
        (Some(t), C::Rename { name }) => {
            check_name(&name)?;
            let name = name.trim().to_owned();
            Ok(if name == t.name {
                vec![]
            } else {
                vec![TenantEvent::Renamed { name }]
            })
        }
        (Some(t), C::ChangePlan { plan }) => Ok(if plan == t.plan {
            vec![]
        } else {
            vec![TenantEvent::PlanChanged { plan }]
        }),
        (Some(t), C::Suspend { reason }) => {
            if t.status == TenantStatus::Suspended {
                return Err(TenantError::WrongStatus(t.status));
            }
            let n = reason.trim().chars().count();
            if n == 0 || n > 500 {
                return Err(TenantError::Invalid {
                    field: "reason",
                    message: "must be 1 to 500 characters",
                });
            }
            Ok(vec![TenantEvent::Suspended {
                reason: reason.trim().to_owned(),
            }])
        }
        (Some(t), C::Reactivate) => {
            if t.status == TenantStatus::Active {
                return Err(TenantError::WrongStatus(t.status));
            }
            Ok(vec![TenantEvent::Reactivated])
        }
    }
}

/// Applies one event to a tenant's state.
pub fn evolve(state: Option<Tenant>, event: &TenantEvent) -> Option<Tenant> {
    match (state, event) {
        (None, TenantEvent::Created { name, slug, plan }) => Some(Tenant {
            name: name.clone(),
            slug: slug.clone(),
            plan: *plan,
            status: TenantStatus::Active,
        }),
        (Some(t), TenantEvent::Renamed { name }) => Some(Tenant {
            name: name.clone(),
            ..t
        }),
        (Some(t), TenantEvent::PlanChanged { plan }) => Some(Tenant { plan: *plan, ..t }),
        (Some(t), TenantEvent::Suspended { .. }) => Some(Tenant {
            status: TenantStatus::Suspended,
            ..t
        }),
        (Some(t), TenantEvent::Reactivated) => Some(Tenant {
            status: TenantStatus::Active,
            ..t
        }),
        // Events that do not apply (never produced by `decide`) leave the state as it was.
        (state, _) => state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(events: &[TenantEvent]) -> Option<Tenant> {
        events.iter().fold(None, evolve)
    }

    fn created() -> TenantEvent {
        TenantEvent::Created {
            name: "Acme".into(),
            slug: "acme".into(),
            plan: Plan::Free,
        }
    }

    #[test]
    fn create_then_lifecycle() {
        let cases: Vec<(
            Vec<TenantEvent>,
            TenantCommand,
            Result<Vec<TenantEvent>, TenantError>,
        )> = vec![
            (
                vec![],
                TenantCommand::Create {
                    name: " Acme ".into(),
                    slug: "acme".into(),
                    plan: Plan::Free,
                },
                Ok(vec![created()]),
            ),
            (
                vec![created()],
                TenantCommand::Create {
                    name: "Acme".into(),
                    slug: "acme".into(),
                    plan: Plan::Free,
                },
                Err(TenantError::AlreadyExists),
            ),
            (
                vec![],
                TenantCommand::Rename { name: "X".into() },
                Err(TenantError::NotFound),
            ),
            (
                vec![],
                TenantCommand::Create {
                    name: "A".into(),
                    slug: "A!".into(),
                    plan: Plan::Free,
                },
                Err(TenantError::Invalid {
                    field: "slug",
                    message: "must be 2 to 63 characters of a-z, 0-9 and '-', starting with a letter",
                }),
            ),
            (
                vec![created()],
                TenantCommand::Rename {
                    name: "Acme".into(),
                },
                Ok(vec![]),
            ),
            (
                vec![created()],
                TenantCommand::Rename {
                    name: "Acme Corp".into(),
                },
                Ok(vec![TenantEvent::Renamed {
                    name: "Acme Corp".into(),
                }]),
            ),
            (
                vec![created()],
                TenantCommand::ChangePlan { plan: Plan::Team },
                Ok(vec![TenantEvent::PlanChanged { plan: Plan::Team }]),
            ),
            (
                vec![created()],
                TenantCommand::Reactivate,
                Err(TenantError::WrongStatus(TenantStatus::Active)),
            ),
            (
                vec![created()],
                TenantCommand::Suspend {
                    reason: "unpaid".into(),
                },
                Ok(vec![TenantEvent::Suspended {
                    reason: "unpaid".into(),
                }]),
            ),
            (
                vec![created(), TenantEvent::Suspended { reason: "x".into() }],
                TenantCommand::Suspend {
                    reason: "again".into(),
                },
                Err(TenantError::WrongStatus(TenantStatus::Suspended)),
            ),
            (
                vec![created(), TenantEvent::Suspended { reason: "x".into() }],
                TenantCommand::Reactivate,
                Ok(vec![TenantEvent::Reactivated]),
            ),
        ];
        for (history, command, expected) in cases {
            let state = given(&history);
            assert_eq!(
                decide(state.as_ref(), command.clone()),
                expected,
                "{history:?} + {command:?}"
            );
        }
    }

    #[test]
    fn events_round_trip_through_the_log_form() {
        for e in [
            created(),
            TenantEvent::Renamed { name: "B".into() },
            TenantEvent::PlanChanged {
                plan: Plan::Enterprise,
            },
            TenantEvent::Suspended { reason: "r".into() },
            TenantEvent::Reactivated,
        ] {
            let back = TenantEvent::decode(e.event_type(), e.schema_version(), &e.data()).unwrap();
            assert_eq!(back, e);
        }
        assert!(matches!(
            TenantEvent::decode("tenant.created", 9, &serde_json::json!({})),
            Err(EventDecodeError::Unknown { .. })
        ));
        assert!(matches!(
            TenantEvent::decode("tenant.renamed", 1, &serde_json::json!({"nom": "x"})),
            Err(EventDecodeError::Malformed { .. })
        ));
    }
}
