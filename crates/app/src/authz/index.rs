//! The authorization index: every tenant's [`Policy`], with its history, and the standing of
//! principals and tenants, kept current by following the log. It answers checks in memory, for now
//! or for any past instant.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use custodian_domain::policy::{
    AsOf, Check, Decision, MatchKind, Matched, Policy, PolicyEvent, Stamp, Verdict, evaluate,
};
use custodian_domain::tenant::TenantEvent;
use custodian_domain::user::UserEvent;
use custodian_domain::{DomainEvent, EventRecord, Timestamp};
use custodian_store::EventStore;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::AppError;
use crate::follower::Progress;

/// A change of a principal's or a tenant's standing: whether it may be allowed anything.
#[derive(Debug, Clone, Copy)]
struct Standing {
    stamp: Stamp,
    out_of_service: bool,
}

#[derive(Debug, Default)]
struct State {
    policies: HashMap<String, Policy>,
    /// Principal id → standing changes, oldest first.
    principals: HashMap<String, Vec<Standing>>,
    /// Tenant → standing changes (suspensions), oldest first.
    tenants: HashMap<String, Vec<Standing>>,
    /// Positions of the events this index applied, with non-decreasing times: the log as it stood
    /// at an instant.
    timeline: Vec<Stamp>,
    /// The last position applied.
    position: u64,
}

/// The policy as it stood, and the position that is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Everything applied so far, evaluated at this time.
    Now(Timestamp),
    /// The log as it stood at this instant.
    At(Timestamp),
}

/// The index and its follower's progress.
#[derive(Debug)]
pub struct PolicyIndex {
    state: RwLock<State>,
    progress: Progress,
    head: watch::Receiver<u64>,
}

impl PolicyIndex {
    /// Starts following `store` from position 0; the task stops with `shutdown`.
    pub fn start(
        store: Arc<dyn EventStore>,
        wait: Duration,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let index = Arc::new(Self {
            state: RwLock::new(State::default()),
            progress: Progress::new(wait),
            head: store.watch_head(),
        });
        let follower = index.clone();
        crate::follower::spawn(store, "the authorization index", shutdown, move |record| {
            follower.apply(record);
        });
        index
    }

    /// The last position applied.
    pub fn applied(&self) -> u64 {
        self.progress.applied()
    }

    /// Waits until the index has applied every commit this process knows of (bounded).
    pub async fn catch_up(&self) -> Result<u64, AppError> {
        let head = *self.head.borrow();
        self.wait_for(head).await?;
        Ok(head)
    }

    /// Waits until the index has applied `position` (bounded).
    pub async fn wait_for(&self, position: u64) -> Result<(), AppError> {
        if self.progress.reached(position).await {
            Ok(())
        } else {
            Err(AppError::unavailable(
                "the authorization index is catching up with the log",
                1,
            ))
        }
    }

    /// Reads `tenant`'s policy (the built-ins only, if it has no events yet).
    pub fn read<T>(&self, tenant: &str, f: impl FnOnce(&Policy) -> T) -> Result<T, AppError> {
        let state = self.state.read().map_err(|_| poisoned())?;
        Ok(f(state
            .policies
            .get(tenant)
            .unwrap_or_else(|| builtin_only())))
    }

    /// The instant a question is about: for `At`, the position of the log as it stood then.
    pub fn as_of(&self, when: When) -> Result<AsOf, AppError> {
        match when {
            When::Now(time) => Ok(AsOf::now(time)),
            When::At(time) => {
                let state = self.state.read().map_err(|_| poisoned())?;
                let n = state.timeline.partition_point(|s| s.at <= time);
                let position = n
                    .checked_sub(1)
                    .and_then(|i| state.timeline.get(i))
                    .map_or(0, |s| s.position);
                Ok(AsOf { position, time })
            }
        }
    }

    /// Evaluates `check` in `tenant`: out-of-service principals and suspended tenants are denied
    /// everything; otherwise the policy decides. Also answers the position it was evaluated at:
    /// the one applied for a check of now, the instant's for a check of the past.
    pub fn decide(&self, tenant: &str, check: &Check<'_>) -> Result<(Decision, u64), AppError> {
        let state = self.state.read().map_err(|_| poisoned())?;
        let position = check.as_of.position.min(state.position);
        Ok((decide_in(&state, tenant, check), position))
    }

    /// Evaluates every check in `tenant` against one state of the index, and answers the position
    /// it had applied.
    pub fn decide_all(
        &self,
        tenant: &str,
        checks: &[Check<'_>],
    ) -> Result<(Vec<Decision>, u64), AppError> {
        let state = self.state.read().map_err(|_| poisoned())?;
        let decisions = checks
            .iter()
            .map(|c| decide_in(&state, tenant, c))
            .collect();
        Ok((decisions, state.position))
    }

    fn apply(&self, record: &EventRecord) {
        if let Ok(mut state) = self.state.write() {
            apply(&mut state, record);
        }
        self.progress.advance(record.position);
    }
}

fn decide_in(state: &State, tenant: &str, check: &Check<'_>) -> Decision {
    let out = |changes: Option<&Vec<Standing>>| {
        changes
            .and_then(|c| {
                c.iter()
                    .rev()
                    .find(|s| s.stamp.position <= check.as_of.position)
            })
            .filter(|s| s.out_of_service)
            .map(|s| s.stamp.position)
    };
    if let Some(position) = out(state.tenants.get(tenant)) {
        return refused(
            MatchKind::Tenant,
            tenant,
            position,
            "the tenant is suspended",
        );
    }
    if let Some(position) = out(state.principals.get(check.principal)) {
        return refused(
            MatchKind::Principal,
            check.principal,
            position,
            "the principal is disabled or deleted",
        );
    }
    evaluate(
        state.policies.get(tenant).unwrap_or_else(|| builtin_only()),
        check,
    )
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

fn poisoned() -> AppError {
    AppError::Internal("the authorization index's lock is poisoned".to_owned())
}

fn apply(state: &mut State, record: &EventRecord) {
    let stamp = Stamp {
        position: record.position,
        at: record.occurred_at,
    };
    state.position = record.position;
    let (t, schema, data) = (record.event_type.as_str(), record.schema, &record.data);
    let standing = |out_of_service| Standing {
        stamp,
        out_of_service,
    };
    let applied = match record.stream.aggregate() {
        custodian_domain::policy::event::AGGREGATE => match PolicyEvent::decode(t, schema, data) {
            Ok(event) => {
                state
                    .policies
                    .entry(record.stream.tenant().to_owned())
                    .or_default()
                    .apply(stamp, &event);
                true
            }
            Err(e) => {
                tracing::error!(position = record.position, error = %e, "unreadable policy event");
                false
            }
        },
        "user" => {
            let change = match UserEvent::decode(t, schema, data) {
                Ok(UserEvent::Disabled { .. } | UserEvent::Deleted {}) => Some(true),
                Ok(UserEvent::Enabled {}) => Some(false),
                _ => None,
            };
            if let Some(out) = change {
                state
                    .principals
                    .entry(record.stream.id().to_owned())
                    .or_default()
                    .push(standing(out));
            }
            change.is_some()
        }
        "tenant" => {
            let change = match TenantEvent::decode(t, schema, data) {
                Ok(TenantEvent::Suspended { .. }) => Some(true),
                Ok(TenantEvent::Reactivated) => Some(false),
                _ => None,
            };
            if let Some(out) = change {
                state
                    .tenants
                    .entry(record.stream.id().to_owned())
                    .or_default()
                    .push(standing(out));
            }
            change.is_some()
        }
        _ => false,
    };
    if applied {
        let at = match state.timeline.last() {
            Some(last) if last.at > stamp.at => last.at,
            _ => stamp.at,
        };
        state.timeline.push(Stamp {
            position: stamp.position,
            at,
        });
    }
}
