//! Authorization: a tenant's permission catalog, roles, grants, assignments and resource groups,
//! and the policy decision point that answers "may this principal do this on that?" for now or for
//! any past instant, with the events that made it so.
//!
//! - [`vocabulary`]: permissions, resources, scopes, windows, conditions, the built-in catalog and
//!   roles.
//! - [`event`]: the policy's events and the decision record.
//! - [`model`]: the policy as its events have made it, history included.
//! - [`decide`]: what may be asked of a policy.
//! - [`evaluate`]: resolution (deny wins, then allow, else deny), documented there.
//! - [`ledger`]: access as the whole log made it (policies, standing, platform administrators),
//!   folded from event records; the service's index and the offline tools share it.

pub mod decide;
pub mod evaluate;
pub mod event;
pub mod ledger;
pub mod model;
pub mod vocabulary;

pub use decide::{PolicyCommand, PolicyError, decide};
pub use evaluate::{
    Check, Decision, Effective, MatchKind, Matched, Target, effective, evaluate, holders,
};
pub use event::{DecisionEvent, EndReason, PolicyEvent, Verdict};
pub use ledger::{AccessHistory, Ending, Link, PlatformAdmin, Standing};
pub use model::{AsOf, Assignment, Grant, Policy, Stamp};
pub use vocabulary::{
    BUILTIN_ROLES, BUILTIN_TYPES, Catalog, Conditions, Effect, Hours, Permission, Resource, Scope,
    Subject, TimeOfDay, Window, WindowState, builtin_role, builtin_role_names,
};
