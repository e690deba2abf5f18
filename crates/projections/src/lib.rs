//! Read models folded from the log: each projection is a named, versioned fold of events, in
//! position order, into SQL tables in the log's own database.
//!
//! A worker per projection follows the log from its checkpoint and applies events in batches; the
//! checkpoint is written in the same transaction as the rows the batch changed, so a crash never
//! applies an event twice or skips one. Each build of a projection is a *generation* with its own
//! tables: when the code's version changes, or a rebuild is asked for, a new generation is built
//! from position 0 while the active one keeps serving, and is swapped in once it has caught up.
//!
//! Architecture invariant: a projection reads only the log. Nothing but a worker writes its tables.

pub mod audit;
mod build;
mod bulk;
mod db;
pub mod keys;
mod page;
pub mod policy;
mod runtime;
pub mod sessions;
pub mod tenants;
pub mod usage;
pub mod users;

pub use build::{BuildError, BuiltView, ViewBuild};
pub use db::{ViewDb, ViewDbError};
pub use runtime::{
    ApplyError, BatchApplyError, FailedEvent, GenerationState, LagReport, Projection,
    ProjectionLag, ProjectionStatus, Projections, RuntimeOptions, Tables, WaitError,
    request_rebuild, statuses,
};

/// Every projection the service runs.
pub fn all() -> Vec<std::sync::Arc<dyn Projection>> {
    vec![
        std::sync::Arc::new(tenants::TenantsView),
        std::sync::Arc::new(users::UsersView),
        std::sync::Arc::new(sessions::SessionsView),
        std::sync::Arc::new(policy::PolicyView),
        std::sync::Arc::new(keys::KeysView),
        std::sync::Arc::new(usage::UsageView),
        std::sync::Arc::new(audit::AuditView),
    ]
}
