//! The keys that sign checkpoints: Ed25519 keys of their own (never the access-token keys), kept in
//! `checkpoint_keys` with their private halves wrapped under the master key's checkpoint-key wrap
//! key (AES-256-GCM, the verifier key as associated data, so a wrapped key cannot be passed off
//! under another name or public key).
//!
//! Which key signs is the log's to say (`ledger.checkpoint_key_issued`): a server asks for the key
//! the log names and re-reads the table when it does not hold it yet, so a rotation made by another
//! server or the command line is picked up by the next checkpoint.

use std::collections::HashMap;
use std::sync::RwLock;

use custodian_domain::Timestamp;
use custodian_domain::checkpoint::NoteSigner;
use custodian_domain::secret::Sealed;
use custodian_projections::ViewDb;
use ed25519_dalek::SigningKey;
use rand::rngs::OsRng;
use sqlx::Row;

use crate::auth::secrets::{Keyring, open, seal};
use crate::error::AppError;

/// The checkpoint keys this process can sign with, by key id.
#[derive(Debug)]
pub struct CheckpointKeys {
    db: ViewDb,
    keyring: Keyring,
    signers: RwLock<HashMap<String, NoteSigner>>,
}

impl CheckpointKeys {
    /// The keys of `db`'s `checkpoint_keys`, unwrapped with `keyring` when first asked for.
    pub fn new(db: ViewDb, keyring: Keyring) -> Self {
        Self {
            db,
            keyring,
            signers: RwLock::default(),
        }
    }

    /// The signer of the key `key_id`, re-reading the table if this process does not hold it.
    pub async fn signer(&self, key_id: &str) -> Result<NoteSigner, AppError> {
        if let Some(signer) = self.cached(key_id) {
            return Ok(signer);
        }
        self.reload().await?;
        self.cached(key_id).ok_or_else(|| {
            AppError::internal(format!(
                "the log names checkpoint key {key_id}, which checkpoint_keys does not hold"
            ))
        })
    }

    /// Makes a new key named `name` at `now`, stores it wrapped, and answers its signer. It signs
    /// nothing until the log names it (its `ledger.checkpoint_key_issued`).
    pub async fn generate(&self, name: &str, now: Timestamp) -> Result<NoteSigner, AppError> {
        let signer = generate(&self.db, &self.keyring, name, now).await?;
        if let Ok(mut signers) = self.signers.write() {
            signers.insert(hex::encode(signer.key_id()), signer.clone());
        }
        Ok(signer)
    }

    fn cached(&self, key_id: &str) -> Option<NoteSigner> {
        self.signers.read().ok()?.get(key_id).cloned()
    }

    async fn reload(&self) -> Result<(), AppError> {
        let loaded = read_keys(&self.db, &self.keyring).await?;
        if let Ok(mut signers) = self.signers.write() {
            *signers = loaded;
        }
        Ok(())
    }
}

/// Makes a new key named `name` at `now` and stores it in `db`, wrapped under `keyring`.
pub async fn generate(
    db: &ViewDb,
    keyring: &Keyring,
    name: &str,
    now: Timestamp,
) -> Result<NoteSigner, AppError> {
    let key = SigningKey::generate(&mut OsRng);
    let signer = NoteSigner::new(name, key.clone())
        .map_err(|e| AppError::invalid(format!("the ledger origin cannot name a key: {e}")))?;
    let verifier_key = signer.verifier_key();
    let wrapped = seal(
        keyring.checkpoint_key_wrap_key(),
        key.as_bytes(),
        verifier_key.as_bytes(),
    );
    sqlx::query(
        "INSERT INTO checkpoint_keys (key_id, key_name, created_at, private_wrapped, verifier_key) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(hex::encode(signer.key_id()))
    .bind(name)
    .bind(now.to_string())
    .bind(&wrapped.0)
    .bind(&verifier_key)
    .execute(db.pool())
    .await?;
    Ok(signer)
}

async fn read_keys(
    db: &ViewDb,
    keyring: &Keyring,
) -> Result<HashMap<String, NoteSigner>, AppError> {
    let rows =
        sqlx::query("SELECT key_id, key_name, private_wrapped, verifier_key FROM checkpoint_keys")
            .fetch_all(db.pool())
            .await?;
    let mut keys = HashMap::with_capacity(rows.len());
    for row in rows {
        let get = |column: &str| -> Result<String, AppError> {
            row.try_get(column)
                .map_err(|e| AppError::internal(format!("checkpoint_keys.{column}: {e}")))
        };
        let key_id = get("key_id")?;
        let corrupt =
            |what: &str| AppError::internal(format!("checkpoint key {key_id} is corrupt: {what}"));
        let verifier_key = get("verifier_key")?;
        let seed = open(
            keyring.checkpoint_key_wrap_key(),
            &Sealed(get("private_wrapped")?),
            verifier_key.as_bytes(),
        )
        .map_err(|_| corrupt("it does not open under the master key"))?;
        let seed: [u8; 32] = seed
            .as_slice()
            .try_into()
            .map_err(|_| corrupt("the private key is not 32 bytes"))?;
        let signer = NoteSigner::new(&get("key_name")?, SigningKey::from_bytes(&seed))
            .map_err(|_| corrupt("its name is not a key name"))?;
        if signer.verifier_key() != verifier_key || hex::encode(signer.key_id()) != key_id {
            return Err(corrupt("the private key does not match its verifier key"));
        }
        keys.insert(key_id, signer);
    }
    Ok(keys)
}
