//! The use cases of Custodian: everything the service does, callable without HTTP.
//!
//! [`App`] is the running service: the log, the views, the security services and a [`Clock`].
//! Each capability is a module with one function per use case, taking the [`App`], the caller
//! and a request, and returning a result or an [`AppError`]:
//!
//! - [`commands`]: the one runner every command goes through (load, decide, append, retry).
//! - [`auth`]: keys, data keys, passwords, TOTP, tokens, the authentication index, throttles.
//! - [`access`]: who may administer what.
//! - [`audit`]: a tenant's audit trail, filtered by what its events touch.
//! - [`keys`]: API keys: issuing, rotating, revoking, verifying, and authenticating with them.
//! - [`ledger`]: the log's Merkle tree, signed checkpoints and their publishing, proofs.
//! - [`snapshot`]: the in-memory indexes' durable snapshots, so start-up reads only the tail.
//! - [`validate`]: input rules shared by the use cases.
//!
//! Architecture invariant: this crate knows nothing of HTTP (no axum, tower or http dependency),
//! reads the time only from its [`Clock`], and reads views only through the query functions of
//! `custodian-projections`. It owns the SQL of the tables it keeps outside the log
//! (`data_keys`, `signing_keys`, `checkpoint_keys`, `index_snapshots`).

pub mod access;
pub mod account;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod bootstrap;
pub mod clock;
pub mod commands;
pub mod error;
mod follower;
pub mod identity;
pub mod keys;
pub mod ledger;
pub mod mfa;
pub mod operations;
pub mod plans;
pub mod ratelimit;
pub mod sessions;
pub mod signing;
pub mod snapshot;
pub mod usage;
pub mod users;
pub mod validate;

use std::sync::Arc;

use anyhow::Context as _;
use custodian_domain::{StreamName, Timestamp};
use custodian_projections::{Projection, Projections, RuntimeOptions, ViewDb};
use custodian_store::EventStore;
use tokio_util::sync::CancellationToken;

pub use access::Principal;
pub use auth::{Security, SecurityOptions};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::AppError;

/// The running service: what every use case reads and writes through.
#[derive(Clone)]
pub struct App {
    /// The log.
    pub store: Arc<dyn EventStore>,
    /// The views' database (and the tables kept outside the log).
    pub db: ViewDb,
    /// The views and their workers.
    pub projections: Arc<Projections>,
    /// Aggregate states folded by earlier commands.
    pub states: Arc<commands::StateCache>,
    /// Keys, passwords, tokens and the index of who may act.
    pub security: Arc<Security>,
    /// Where the time comes from.
    pub clock: Arc<dyn Clock>,
    /// Every tenant's policy, answering checks.
    pub policy: Arc<authz::PolicyIndex>,
    /// The decision log's writer.
    pub decisions: Arc<authz::DecisionLog>,
    /// API keys: the index that verifies them and the recorder of their usage.
    pub keys: Arc<keys::Keys>,
    /// What each plan entitles a tenant to.
    pub plans: Arc<plans::Plans>,
    /// Every tenant's usage, quotas and budget, and the records being written.
    pub usage: Arc<usage::UsageLedger>,
    /// The usage records' writer.
    pub usage_writer: Arc<usage::UsageWriter>,
    /// The log's Merkle tree and its checkpoints.
    pub ledger: Arc<ledger::Ledger>,
}

impl App {
    /// Where each in-memory index that starts from a snapshot started from, and how far it has
    /// read: the authentication, authorization and key indexes.
    pub fn index_reports(&self) -> Vec<snapshot::IndexReport> {
        [
            self.security.index.status(),
            self.policy.status(),
            self.keys.index.status(),
        ]
        .iter()
        .map(|s| s.report())
        .collect()
    }
}

impl App {
    /// Starts the service on an open `store` whose database is at `location` (as the store was
    /// opened): the security services and the workers of `projections` (all of them:
    /// [`custodian_projections::all`]). Background work stops when `shutdown` is cancelled.
    pub async fn start(
        store: Arc<dyn EventStore>,
        location: &str,
        projections: Vec<Arc<dyn Projection>>,
        options: SecurityOptions,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let db = ViewDb::open(location)
            .await
            .context("cannot open the views' database")?;
        let stop_migrating = shutdown.clone();
        let decisions =
            authz::DecisionLog::start(store.clone(), options.decision_log, shutdown.clone());
        let index_wait = options.index_wait;
        let ledger_options = options.ledger.clone();
        let plans = Arc::new(options.plans.clone());
        let usage = usage::UsageLedger::start(
            store.clone(),
            plans.clone(),
            options.index_wait,
            shutdown.clone(),
        )
        .await
        .context("cannot start the usage ledger")?;
        let usage_writer = usage::UsageWriter::start(
            store.clone(),
            usage.clone(),
            clock.clone(),
            shutdown.clone(),
        );
        let security = Security::start(
            options,
            db.clone(),
            store.clone(),
            clock.clone(),
            shutdown.clone(),
        )
        .await?;
        let policy = authz::PolicyIndex::start(
            store.clone(),
            Some(security.snapshots.clone()),
            index_wait,
            clock.clone(),
            shutdown.clone(),
        );
        let ledger = ledger::Ledger::start(
            store.clone(),
            db.clone(),
            security.keyring.clone(),
            ledger_options,
            clock.as_ref(),
            index_wait,
            shutdown.clone(),
        );
        let stop_publishing = shutdown.clone();
        let keys = keys::Keys::start(
            store.clone(),
            Some(security.snapshots.clone()),
            &security.keyring,
            clock.clone(),
            index_wait,
            shutdown.clone(),
        );
        let projections = Projections::start(
            db.clone(),
            store.clone(),
            projections,
            RuntimeOptions::default(),
            shutdown,
        )
        .await
        .context("cannot start the projections")?;
        let app = Self {
            store,
            db,
            projections: Arc::new(projections),
            states: Arc::default(),
            security: Arc::new(security),
            clock,
            policy,
            decisions,
            keys,
            plans,
            usage,
            usage_writer,
            ledger,
        };
        ledger::publish::spawn(app.clone(), stop_publishing);
        let migrating = app.clone();
        tokio::spawn(async move {
            // Retried until the indexes have caught up with a long log; stops with the service.
            for _ in 0..600 {
                let outcome = tokio::select! {
                    () = stop_migrating.cancelled() => return,
                    outcome = authz::migrate::tenant_admins(&migrating) => outcome,
                };
                match outcome {
                    Err(AppError::Unavailable { .. }) => {
                        tokio::select! {
                            () = stop_migrating.cancelled() => return,
                            () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot carry tenant_admin over to the policy");
                        return;
                    }
                    Ok(_) => return,
                }
            }
        });
        Ok(app)
    }

    /// The current time, from the injected clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The serving tables of a view, to pass to its query functions; unavailable while it has
    /// none yet (the server is starting).
    pub fn tables(&self, view: &str) -> Result<custodian_projections::Tables, AppError> {
        self.projections
            .active_tables(view)
            .ok_or_else(|| AppError::unavailable(format!("the {view} view is not ready yet"), 1))
    }

    /// The position a command answers with: that of its last event, or the log's head when it
    /// changed nothing (so that reading with it as `Custodian-Min-Position` still sees the state
    /// it left).
    pub async fn answer_position(&self, written: u64) -> Result<u64, AppError> {
        if written > 0 {
            Ok(written)
        } else {
            Ok(self.store.head().await?.position)
        }
    }
}

/// Where an unauthenticated request came from, as far as the service can tell: what login
/// throttling and session records use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The client's address (behind trusted proxies, the one they forwarded for).
    pub ip: Option<std::net::IpAddr>,
    /// The client's `User-Agent`, at most 512 bytes.
    pub user_agent: Option<String>,
}

/// A stream name built from validated parts; a failure is a bug, reported as one.
pub fn stream(tenant: &str, aggregate: &str, id: &str) -> Result<StreamName, AppError> {
    StreamName::new(tenant, aggregate, id)
        .map_err(|e| AppError::internal(format!("cannot name a stream: {e}")))
}
