//! The log as a verifiable ledger: its RFC 6962 Merkle tree in memory ([`tree`]), the signed
//! checkpoints the service publishes ([`publish`]), their keys ([`keys`]), and the use cases that
//! answer checkpoints and proofs.
//!
//! The leaves are the events' hashes in position order (leaf index = position - 1). Hashes cover
//! the events' ciphertext, so proofs still verify after a person's data key was destroyed.
//! Checkpoints are C2SP `tlog-checkpoint` bodies in `signed-note` form, signed with Ed25519 keys of
//! their own ([`custodian_domain::checkpoint`]); each published one is a `ledger.checkpointed`
//! event of `_system/ledger/checkpoints`, appended with the stream's exact version so two servers
//! on one database never publish conflicting checkpoints (the loser of a race drops its attempt).

pub mod keys;
pub mod publish;
pub mod tree;

use std::sync::Arc;
use std::time::Duration;

use custodian_domain::checkpoint::{Checkpoint, NoteSigner};
use custodian_domain::ledger::{
    self, AGGREGATE, CurrentKey, LedgerCommand, LedgerError, LedgerState, NewKey, STREAM_ID,
};
use custodian_domain::merkle::ProofError;
use custodian_domain::policy::Target;
use custodian_domain::stream::SYSTEM_TENANT;
use custodian_domain::{Actor, StreamName, Timestamp};
use custodian_projections::ViewDb;
use custodian_store::EventStore;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::App;
use crate::access::{Principal, authorize};
use crate::auth::secrets::Keyring;
use crate::clock::Clock;
use crate::commands::{self, Context};
use crate::error::AppError;
use keys::CheckpointKeys;
use tree::TreeIndex;

/// The origin line of checkpoints, and the name of their keys, unless configured.
pub const DEFAULT_ORIGIN: &str = "custodian.local/ledger";
/// The server's default: a checkpoint once the log grew by this many events.
pub const DEFAULT_CHECKPOINT_EVENTS: u64 = 1000;
/// The server's default: a checkpoint once this many seconds passed since the last one (if the
/// log grew at all).
pub const DEFAULT_CHECKPOINT_SECONDS: u64 = 60;

/// How checkpoints are made and published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerOptions {
    /// The checkpoints' origin line (a schema-less URL naming the log), and the name of the keys
    /// made for them.
    pub origin: String,
    /// Publish a checkpoint once the log grew by this many events (0: never by count).
    pub checkpoint_events: u64,
    /// Publish a checkpoint once this long passed since the last one, if the log grew at all
    /// (zero: never by time).
    pub checkpoint_interval: Duration,
}

impl Default for LedgerOptions {
    /// The origin [`DEFAULT_ORIGIN`] and no publishing on a cadence: the embedding program opts
    /// in (the server's configuration defaults to [`DEFAULT_CHECKPOINT_EVENTS`] and
    /// [`DEFAULT_CHECKPOINT_SECONDS`]). Checkpoints are still signed on request.
    fn default() -> Self {
        Self {
            origin: DEFAULT_ORIGIN.to_owned(),
            checkpoint_events: 0,
            checkpoint_interval: Duration::ZERO,
        }
    }
}

impl LedgerOptions {
    /// Whether a checkpoint is published on a cadence at all.
    pub fn publishes(&self) -> bool {
        self.checkpoint_events > 0 || !self.checkpoint_interval.is_zero()
    }
}

/// The ledger of the running service: the tree, the checkpoint keys and how to publish.
#[derive(Debug)]
pub struct Ledger {
    /// The Merkle tree of the log as applied.
    pub tree: Arc<TreeIndex>,
    /// The keys that sign checkpoints.
    pub keys: CheckpointKeys,
    /// How checkpoints are made.
    pub options: LedgerOptions,
    /// When this process started: the time cadence counts from here until a first checkpoint.
    started: Timestamp,
    /// One publication at a time in this process.
    publishing: tokio::sync::Mutex<()>,
}

impl Ledger {
    /// Starts following `store` into the tree. `wait` bounds how long a request waits for it.
    pub fn start(
        store: Arc<dyn EventStore>,
        db: ViewDb,
        keyring: Keyring,
        options: LedgerOptions,
        clock: &dyn Clock,
        wait: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            tree: TreeIndex::start(store, wait, shutdown),
            keys: CheckpointKeys::new(db, keyring),
            options,
            started: clock.now(),
            publishing: tokio::sync::Mutex::new(()),
        })
    }
}

/// The stream of the ledger's own events: `_system/ledger/checkpoints`.
pub fn ledger_stream() -> Result<StreamName, AppError> {
    crate::stream(SYSTEM_TENANT, AGGREGATE, STREAM_ID)
}

/// A checkpoint signed for a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The signed note: the C2SP checkpoint body, a blank line, the signature line.
    pub note: String,
    /// The tree size it covers (the position it was evaluated at).
    pub tree_size: u64,
}

/// A checkpoint the service appended to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The position of its `ledger.checkpointed` event.
    pub position: u64,
    /// The tree size it covers.
    pub tree_size: u64,
    /// The id of the key that signed it.
    pub key_id: String,
    /// The signed note.
    pub note: String,
}

/// `GET /v1/ledger/proof/inclusion` query.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InclusionQuery {
    /// The event's position (1-based).
    pub position: Option<u64>,
    /// The tree size to prove inclusion in (default: the size the server has applied); at least
    /// `position`.
    pub tree_size: Option<u64>,
}

/// `GET /v1/ledger/proof/consistency` query.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    /// The older tree size.
    pub from: Option<u64>,
    /// The newer tree size (default: the size the server has applied); at least `from`.
    pub to: Option<u64>,
}

/// An RFC 6962 inclusion proof of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct InclusionProof {
    /// The event's position.
    pub position: u64,
    /// Its leaf index: `position - 1`.
    pub leaf_index: u64,
    /// The tree size the proof is for.
    pub tree_size: u64,
    /// The leaf's data: the event's `hash`, 64 lower-case hex digits (the leaf hash is
    /// SHA-256(0x00 || these 32 bytes)).
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub leaf_hash: String,
    /// The root of the tree of `tree_size` events, hex.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub root: String,
    /// The audit path, nearest sibling first, each hash hex.
    pub proof: Vec<String>,
}

/// An RFC 6962 consistency proof between two tree sizes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ConsistencyProof {
    /// The older tree size.
    pub from: u64,
    /// The newer tree size.
    pub to: u64,
    /// The root of the tree of `from` events, hex.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub from_root: String,
    /// The root of the tree of `to` events, hex.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub to_root: String,
    /// The proof, each hash hex; empty when `from` is 0 or equals `to`.
    pub proof: Vec<String>,
}

/// A checkpoint key just issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIssued {
    /// Its id, 8 hex digits.
    pub key_id: String,
    /// Its verifier key.
    pub verifier_key: String,
    /// The key it replaces.
    pub replaces: Option<String>,
    /// The position of its `ledger.checkpoint_key_issued` event.
    pub position: u64,
}

/// Who may read checkpoints and proofs: anyone holding `audit:read` in their own tenant
/// (platform staff: in `_system`).
fn authorize_audit(app: &App, principal: &Principal) -> Result<(), AppError> {
    authorize(
        app,
        principal,
        &principal.tenant,
        "audit:read",
        Target::Tenant,
    )
}

/// Waits, for a request that read its own writes, until the tree covers `min_position`, for at most
/// the read wait; past it (a position beyond the log's head is never reached) the answer is 503.
async fn reach(app: &App, min_position: Option<u64>) -> Result<(), AppError> {
    if let Some(wanted) = min_position.filter(|p| *p > 0) {
        app.ledger.tree.wait_for(wanted).await?;
    }
    Ok(())
}

/// A checkpoint of the tree as applied now, signed now with the current checkpoint key. Needs
/// `audit:read` in the caller's tenant. On a log whose checkpoints have no key yet, the first
/// checkpoint (with its key) is published first.
pub async fn checkpoint(
    app: &App,
    principal: &Principal,
    min_position: Option<u64>,
) -> Result<SignedCheckpoint, AppError> {
    authorize_audit(app, principal)?;
    reach(app, min_position).await?;
    let key = current_key(app).await?;
    let signer = app.ledger.keys.signer(&key.key_id).await?;
    let (tree_size, root) = app.ledger.tree.current_root()?;
    let note = sign(
        &signer,
        &Checkpoint {
            origin: app.ledger.options.origin.clone(),
            size: tree_size,
            root,
            time: Some(app.now()),
        },
    )?;
    Ok(SignedCheckpoint { note, tree_size })
}

/// The verifier key of the current checkpoint key (a public key: anyone may ask, so asking never
/// writes anything). Not found until the first checkpoint, which brings the first key, is on the
/// log: the publisher makes it on its cadence, or an authorized `checkpoint` request does.
pub async fn verifier_key(app: &App) -> Result<String, AppError> {
    app.ledger.tree.catch_up().await?;
    app.ledger
        .tree
        .current_key()
        .map(|key| key.verifier_key)
        .ok_or_else(|| {
            AppError::not_found(
                "no checkpoint has been published yet: the first one brings the first checkpoint key",
            )
        })
}

/// The key the log names as current, publishing the first checkpoint with a key of its own when
/// there is none yet. An empty log has none to give: nothing may be written to it before
/// `custodian admin bootstrap`.
async fn current_key(app: &App) -> Result<CurrentKey, AppError> {
    if let Some(key) = app.ledger.tree.current_key() {
        return Ok(key);
    }
    app.ledger.tree.catch_up().await?;
    if let Some(key) = app.ledger.tree.current_key() {
        return Ok(key);
    }
    if app.ledger.tree.size() == 0 {
        return Err(AppError::not_found(
            "the ledger is empty: its first checkpoint key is made with its first checkpoint",
        ));
    }
    let published = publish::publish(app, true).await?;
    if let Some(p) = published {
        app.ledger.tree.wait_for(p.position).await?;
    } else {
        // Another server published first; its key is on the log.
        app.ledger.tree.catch_up().await?;
    }
    app.ledger
        .tree
        .current_key()
        .ok_or_else(AppError::catching_up)
}

/// The proof that the event at `position` is in the tree of `tree_size` events (default: the size
/// applied). Needs `audit:read` in the caller's tenant.
pub async fn inclusion_proof(
    app: &App,
    principal: &Principal,
    query: InclusionQuery,
    min_position: Option<u64>,
) -> Result<InclusionProof, AppError> {
    authorize_audit(app, principal)?;
    let Some(position) = query.position else {
        return Err(AppError::invalid(
            "position is required: the position of the event to prove, from 1",
        ));
    };
    if position == 0 {
        return Err(AppError::invalid(
            "position 0 names no event: positions start at 1",
        ));
    }
    if let Some(size) = query.tree_size
        && position > size
    {
        return Err(AppError::invalid(format!(
            "position {position} is not in a tree of {size} events: ask with tree_size of at least {position}"
        )));
    }
    reach(app, min_position).await?;
    let tree_size = match query.tree_size {
        Some(size) => within_tree(app, size, "tree_size").await?,
        None if position > app.ledger.tree.size() => within_tree(app, position, "position").await?,
        None => app.ledger.tree.size(),
    };
    let proof = app
        .ledger
        .tree
        .inclusion_proof(position - 1, tree_size)
        .map_err(proof_refused)?;
    let root = app.ledger.tree.root(tree_size).map_err(proof_refused)?;
    let leaf = app
        .store
        .read_all(position, 1)
        .await?
        .into_iter()
        .next()
        .filter(|r| r.position == position)
        .ok_or_else(|| AppError::internal(format!("the log has no event at {position}")))?;
    Ok(InclusionProof {
        position,
        leaf_index: position - 1,
        tree_size,
        leaf_hash: leaf.hash.to_hex(),
        root: hex::encode(root),
        proof: proof.iter().map(hex::encode).collect(),
    })
}

/// The proof that the tree of `from` events is a prefix of the tree of `to` events (default: the
/// size applied). Needs `audit:read` in the caller's tenant.
pub async fn consistency_proof(
    app: &App,
    principal: &Principal,
    query: ConsistencyQuery,
    min_position: Option<u64>,
) -> Result<ConsistencyProof, AppError> {
    authorize_audit(app, principal)?;
    let Some(from) = query.from else {
        return Err(AppError::invalid(
            "from is required: the tree size of the older checkpoint",
        ));
    };
    if let Some(to) = query.to
        && from > to
    {
        return Err(AppError::invalid(format!(
            "from ({from}) is larger than to ({to}): a tree can only be proved a prefix of a larger one"
        )));
    }
    reach(app, min_position).await?;
    let to = match query.to {
        Some(to) => within_tree(app, to, "to").await?,
        None => {
            let size = app.ledger.tree.size();
            if from > size {
                within_tree(app, from, "from").await?
            } else {
                size
            }
        }
    };
    if from > to {
        return Err(AppError::invalid(format!(
            "from ({from}) is beyond the {to} events the server has applied"
        )));
    }
    let proof = app
        .ledger
        .tree
        .consistency_proof(from, to)
        .map_err(proof_refused)?;
    let root = |size| app.ledger.tree.root(size).map_err(proof_refused);
    Ok(ConsistencyProof {
        from,
        to,
        from_root: hex::encode(root(from)?),
        to_root: hex::encode(root(to)?),
        proof: proof.iter().map(hex::encode).collect(),
    })
}

/// `size` once the tree covers it: waited for (bounded) when the log holds that many events,
/// refused when it does not.
async fn within_tree(app: &App, size: u64, name: &str) -> Result<u64, AppError> {
    if size <= app.ledger.tree.size() {
        return Ok(size);
    }
    let head = app.store.head().await?.position;
    if size > head {
        return Err(AppError::invalid(format!(
            "{name} {size} is beyond the log, which holds {head} events"
        )));
    }
    app.ledger.tree.wait_for(size).await?;
    Ok(size)
}

fn proof_refused(e: ProofError) -> AppError {
    AppError::invalid(e.to_string())
}

fn sign(signer: &NoteSigner, checkpoint: &Checkpoint) -> Result<String, AppError> {
    signer
        .sign(&checkpoint.body())
        .map_err(|e| AppError::internal(format!("cannot sign a checkpoint: {e}")))
}

/// Makes a new checkpoint key named `name` at `now` and records it on the log as replacing the
/// current one (`ledger.checkpoint_key_issued`): checkpoints from then on are signed with it, by
/// every server (each reads the key the log names). Refused on an empty log, whose first key comes
/// with its first checkpoint.
///
/// This is the form for a process that runs no [`App`] (the command line); a running service calls
/// [`rotate_key`].
pub async fn issue_key(
    store: &Arc<dyn EventStore>,
    db: &ViewDb,
    keyring: &Keyring,
    name: &str,
    actor: Actor,
    now: Timestamp,
) -> Result<KeyIssued, AppError> {
    if store.head().await?.position == 0 {
        return Err(AppError::conflict(
            "the ledger is empty: its first checkpoint key is made with its first checkpoint, after `custodian admin bootstrap`",
        ));
    }
    let signer = keys::generate(db, keyring, name, now).await?;
    let key = NewKey {
        key_name: signer.name().to_owned(),
        verifier_key: signer.verifier_key(),
    };
    let ctx = Context {
        actor,
        now,
        correlation_id: None,
    };
    let done = commands::execute(
        store,
        None,
        &ledger_stream()?,
        &ctx,
        LedgerState::default(),
        ledger::evolve,
        |state| ledger::decide(state, LedgerCommand::IssueKey(key.clone())),
    )
    .await
    .map_err(|failed| {
        AppError::from_failed(failed, |e| {
            AppError::internal(format!("cannot issue a checkpoint key: {e}"))
        })
    })?;
    let position = done
        .position
        .ok_or_else(|| AppError::internal("the issuance of a checkpoint key appended nothing"))?;
    let replaces = match done.events.first() {
        Some(ledger::LedgerEvent::CheckpointKeyIssued { replaces, .. }) => replaces.clone(),
        _ => None,
    };
    Ok(KeyIssued {
        key_id: hex::encode(signer.key_id()),
        verifier_key: key.verifier_key,
        replaces,
        position,
    })
}

/// Rotates the checkpoint key of the running service at its clock's time, as the system: the
/// next checkpoint, of this server or any other on the log, is signed with the new key.
pub async fn rotate_key(app: &App) -> Result<KeyIssued, AppError> {
    issue_key(
        &app.store,
        &app.db,
        &app.security.keyring,
        &app.ledger.options.origin,
        Actor::system(),
        app.now(),
    )
    .await
}

impl From<LedgerError> for AppError {
    fn from(e: LedgerError) -> Self {
        AppError::internal(format!("the ledger refused a checkpoint: {e}"))
    }
}
