//! Authorization: the policy's use cases (catalog, roles, grants, assignments, groups), the
//! decision point (checks, now or at a past instant), the index that answers them in memory, and
//! the decision log.
//!
//! Every policy command of a tenant is decided against the index's copy of its policy and appended
//! to `{tenant}/policy/rules` with the stream version that copy had; another writer's append in
//! between is a version conflict, after which the command waits for the index and decides again.

pub mod check;
pub mod decisions;
pub mod index;
pub mod manage;
pub mod migrate;

use custodian_domain::NewEvent;
use custodian_domain::policy::Policy;
use custodian_domain::policy::event::{AGGREGATE, STREAM_ID};
use custodian_domain::policy::{PolicyCommand, PolicyError, PolicyEvent, decide};
use custodian_store::{ExpectedVersion, StoreError};

pub use decisions::{DecisionLog, DecisionLogMode};
pub use index::{PolicyIndex, When};

use crate::App;
use crate::commands::Context;
use crate::error::AppError;

/// How often a policy command is decided again after losing a race.
const ATTEMPTS: usize = 5;

/// What a policy command did: its events and the position of the last (the log's head when it
/// changed nothing).
#[derive(Debug)]
pub struct Applied {
    /// The events appended.
    pub events: Vec<PolicyEvent>,
    /// The position to answer with.
    pub position: u64,
}

/// The refusal of a policy command as the caller sees it.
pub fn policy_error(e: PolicyError) -> AppError {
    match e {
        PolicyError::Invalid { .. } => AppError::invalid(e.to_string()),
        PolicyError::UnknownPermission(u) => AppError::UnknownPermission {
            detail: format!(
                "{} is not in the tenant's catalog; register its type and action with PUT /v1/tenants/{{tenant}}/catalog",
                u.permission
            ),
            known: u.known,
        },
        PolicyError::NotFound(m) => AppError::not_found(m),
        PolicyError::Conflict(m) => AppError::conflict(m),
    }
}

/// Runs the command `make` builds from the current policy of `tenant`: decide, append with the
/// version decided on, and wait until the index has applied the result, so that a check made
/// right after sees it.
pub async fn run(
    app: &App,
    tenant: &str,
    ctx: &Context,
    make: impl Fn(&Policy) -> Result<PolicyCommand, AppError>,
) -> Result<Applied, AppError> {
    let stream = crate::stream(tenant, AGGREGATE, STREAM_ID)?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        app.policy.catch_up().await?;
        let (events, version) = app.policy.read(tenant, |p| {
            let command = make(p)?;
            decide(p, command)
                .map(|events| (events, p.version))
                .map_err(policy_error)
        })??;
        if events.is_empty() {
            let position = app.answer_position(0).await?;
            return Ok(Applied { events, position });
        }
        let new: Vec<NewEvent> = events.iter().map(|e| ctx.event(e)).collect();
        match app
            .store
            .append(&stream, ExpectedVersion::Exact(version), new)
            .await
        {
            Ok(outcome) => {
                app.policy.wait_for(outcome.last_position).await?;
                return Ok(Applied {
                    events,
                    position: outcome.last_position,
                });
            }
            Err(StoreError::WrongExpectedVersion { .. }) if attempt < ATTEMPTS => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
