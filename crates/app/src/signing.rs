//! Access-token signing keys: issuing one is a use case, and the log records it.
//!
//! [`issue`] makes a key, appends its `signing_key.issued` event (the public half only, never the
//! private key) to `_system/signing_key/{kid}`, then stores the key in `signing_keys`, where every
//! server finds it within 30 seconds. The event comes first, so no key signs a token without its
//! issuance on the log; a failure between the two leaves the record of a key that never signs.
//!
//! The first key, which a server makes by itself when it starts on a database that has none, is
//! not recorded: nobody issued it, and recording it would make a ledger that nobody has used yet
//! non-empty, so `custodian admin bootstrap` (allowed only on an empty ledger) would refuse it. Its
//! public half is published in the JWKS like every key's; every key issued after it is an event.

use std::sync::Arc;

use custodian_domain::Timestamp;
use custodian_domain::signing_key::{self, SigningKeyCommand, SigningKeyError};
use custodian_domain::stream::SYSTEM_TENANT;
use custodian_domain::{Actor, StreamName};
use custodian_projections::ViewDb;
use custodian_store::EventStore;

use crate::App;
use crate::auth::jwt::{JwtError, NewSigningKey};
use crate::auth::secrets::Keyring;
use crate::commands::{self, Context};
use crate::error::AppError;

/// A key just issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// Its id: the `kid` of the JWK and of the tokens it signs.
    pub kid: String,
    /// Its public half as the JWK's `x` (base64url of the 32 bytes).
    pub public_key: String,
    /// When it was made.
    pub created_at: Timestamp,
    /// The position of its `signing_key.issued` event.
    pub position: u64,
}

/// The stream of the key `kid`: `_system/signing_key/{kid}`.
pub fn key_stream(kid: &str) -> Result<StreamName, AppError> {
    crate::stream(SYSTEM_TENANT, signing_key::AGGREGATE, kid)
}

/// Issues a new signing key made at `now`, as `actor`: records its issuance on the log, then stores
/// it where servers load it from (they sign with it within 30 seconds).
///
/// This is the form for a process that runs no [`App`] (the command line); a running service calls
/// [`rotate`].
pub async fn issue(
    store: &Arc<dyn EventStore>,
    db: &ViewDb,
    keyring: &Keyring,
    actor: Actor,
    now: Timestamp,
) -> Result<Issued, AppError> {
    let key = NewSigningKey::generate(keyring, now);
    let ctx = Context {
        actor,
        now,
        correlation_id: None,
    };
    let done = commands::execute(
        store,
        None,
        &key_stream(&key.kid)?,
        &ctx,
        None,
        signing_key::evolve,
        |state| {
            signing_key::decide(
                state.as_ref(),
                SigningKeyCommand::Issue {
                    kid: key.kid.clone(),
                    public_key: key.public_key.clone(),
                    created_at: key.created_at,
                },
            )
        },
    )
    .await
    .map_err(|failed| AppError::from_failed(failed, refused))?;
    let position = done
        .position
        .ok_or_else(|| AppError::internal("the issuance of a signing key appended nothing"))?;
    key.store(db).await.map_err(stored)?;
    Ok(Issued {
        kid: key.kid,
        public_key: key.public_key,
        created_at: key.created_at,
        position,
    })
}

/// Issues a new signing key for the running service at its clock's time, as the system, and
/// signs with it from now on in this process (others load it within 30 seconds).
pub async fn rotate(app: &App) -> Result<Issued, AppError> {
    let issued = issue(
        &app.store,
        &app.db,
        &app.security.keyring,
        Actor::system(),
        app.now(),
    )
    .await?;
    app.security
        .signer
        .reload()
        .await
        .map_err(|e| AppError::internal(format!("cannot load the new signing key: {e}")))?;
    Ok(issued)
}

/// A refused issuance: the key ids are fresh UUIDv7s and the keys well-formed, so a refusal is a bug.
fn refused(e: SigningKeyError) -> AppError {
    AppError::internal(format!("cannot issue a signing key: {e}"))
}

fn stored(e: JwtError) -> AppError {
    AppError::internal(format!("cannot store the signing key: {e}"))
}
