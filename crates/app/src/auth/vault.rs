//! Per-subject data keys, kept outside the append-only log so that they can be destroyed.
//!
//! Personal data in events is sealed under its subject's [`DataKey`]; destroying the key erases that
//! data from every event at once (crypto-shredding) while the hash chain still verifies. Each key
//! is stored in `data_keys` wrapped (AES-256-GCM) under the master key's data-key wrap key, with the
//! subject as associated data, so a wrapped key copied to another subject's row does not open.
//!
//! Erasure on disk: on SQLite the views' connections should run with `PRAGMA secure_delete = ON`
//! so that a destroyed key's bytes are overwritten in the file rather than left in a free page; on
//! PostgreSQL a deleted row lingers as a dead tuple, and a plain `VACUUM` leaves its bytes in the
//! page's free space, so `destroy` rewrites the table (`VACUUM FULL data_keys`) into a new file
//! that holds only the live keys. The rewrite still copies a row that a transaction begun before
//! the erasure may see, so the bytes are gone from the table once no such transaction remains
//! (the next erasure's rewrite removes them then). Copies in the write-ahead log (and in backups)
//! age out with them.

use std::collections::HashMap;
use std::sync::Arc;

use custodian_domain::secret::Sealed;
use custodian_projections::ViewDb;
use sqlx::Row;

use super::secrets::{DataKey, Keyring, open, seal};
use crate::clock::Clock;

/// Most subjects looked up in one `IN (...)` query.
const IN_CHUNK: usize = 500;

/// Why a data key cannot be created or read. No variant carries key material.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The database failed.
    #[error("data keys database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored key does not unwrap under this master key (another master key, or an altered row).
    #[error("the data key of {subject} cannot be unwrapped with this master key")]
    Unwrap {
        /// The subject whose key is unreadable.
        subject: String,
    },
    /// The subject already has a key, filed under another tenant.
    #[error("the data key of {subject} belongs to another tenant")]
    TenantMismatch {
        /// The subject.
        subject: String,
    },
}

/// How often `destroy` tries to checkpoint and truncate SQLite's write-ahead log.
const CHECKPOINT_ATTEMPTS: u32 = 25;

/// The store of per-subject data keys.
#[derive(Clone, Debug)]
pub struct Vault {
    db: ViewDb,
    keyring: Keyring,
    clock: Arc<dyn Clock>,
}

impl Vault {
    /// A vault on the `data_keys` table of `db`, wrapping keys under `keyring`; `clock` dates the
    /// keys it creates.
    pub fn new(db: ViewDb, keyring: Keyring, clock: Arc<dyn Clock>) -> Self {
        Self { db, keyring, clock }
    }

    /// The data key of `subject`, created if it has none.
    ///
    /// Idempotent: when the subject already has a key (a retried command, or a concurrent one),
    /// that key is returned and never replaced, since data may already be sealed under it.
    pub async fn create(&self, tenant: &str, subject: &str) -> Result<DataKey, VaultError> {
        let key = DataKey::generate();
        let wrapped = seal(
            self.keyring.data_key_wrap_key(),
            key.as_bytes(),
            subject.as_bytes(),
        );
        let created_at = self.clock.now().to_string();
        sqlx::query(
            "INSERT INTO data_keys (subject, tenant, wrapped, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (subject) DO NOTHING",
        )
        .bind(subject)
        .bind(tenant)
        .bind(&wrapped.0)
        .bind(created_at)
        .execute(self.db.pool())
        .await?;

        let row = sqlx::query("SELECT tenant, wrapped FROM data_keys WHERE subject = $1")
            .bind(subject)
            .fetch_one(self.db.pool())
            .await?;
        let stored_tenant: String = row.try_get("tenant")?;
        if stored_tenant != tenant {
            return Err(VaultError::TenantMismatch {
                subject: subject.to_owned(),
            });
        }
        self.unwrap_key(subject, row.try_get("wrapped")?)
    }

    /// The data key of `subject`; `None` when it never had one or it was destroyed (erased).
    pub async fn get(&self, subject: &str) -> Result<Option<DataKey>, VaultError> {
        let wrapped: Option<String> =
            sqlx::query_scalar("SELECT wrapped FROM data_keys WHERE subject = $1")
                .bind(subject)
                .fetch_optional(self.db.pool())
                .await?;
        wrapped.map(|w| self.unwrap_key(subject, w)).transpose()
    }

    /// The data keys of those `subjects` that have one, by subject; erased and unknown subjects are
    /// absent. One query per 500 subjects.
    pub async fn get_many(
        &self,
        subjects: &[String],
    ) -> Result<HashMap<String, DataKey>, VaultError> {
        let mut keys = HashMap::with_capacity(subjects.len());
        for chunk in subjects.chunks(IN_CHUNK) {
            let placeholders = (1..=chunk.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let sql =
                format!("SELECT subject, wrapped FROM data_keys WHERE subject IN ({placeholders})");
            let mut query = sqlx::query(&sql);
            for subject in chunk {
                query = query.bind(subject);
            }
            for row in query.fetch_all(self.db.pool()).await? {
                let subject: String = row.try_get("subject")?;
                let key = self.unwrap_key(&subject, row.try_get("wrapped")?)?;
                keys.insert(subject, key);
            }
        }
        Ok(keys)
    }

    /// Destroys the data key of `subject`, making everything sealed under it unreadable for good.
    /// Destroying a key that does not exist is not an error.
    ///
    /// On SQLite the row is overwritten in place (`secure_delete`), but the write-ahead log still
    /// holds earlier images of its page; the log is checkpointed into the database and truncated
    /// so that no copy of the wrapped key remains in either file. If readers keep the checkpoint
    /// from finishing after a few tries, the next checkpoint (SQLite runs one every 1,000 pages)
    /// overwrites it; that is logged.
    pub async fn destroy(&self, subject: &str) -> Result<(), VaultError> {
        sqlx::query("DELETE FROM data_keys WHERE subject = $1")
            .bind(subject)
            .execute(self.db.pool())
            .await?;
        if self.db.is_postgres() {
            // The table is small (one short row per subject) and erasure is rare: the rewrite
            // holds its lock for moments.
            sqlx::query("VACUUM FULL data_keys")
                .execute(self.db.pool())
                .await?;
        } else {
            for attempt in 1..=CHECKPOINT_ATTEMPTS {
                let busy: i64 = sqlx::query_scalar("PRAGMA wal_checkpoint(TRUNCATE)")
                    .fetch_one(self.db.pool())
                    .await?;
                if busy == 0 {
                    break;
                }
                if attempt == CHECKPOINT_ATTEMPTS {
                    tracing::warn!(
                        subject,
                        "the write-ahead log could not be truncated after destroying a data key; \
                         the next checkpoint overwrites it"
                    );
                } else {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        }
        Ok(())
    }

    fn unwrap_key(&self, subject: &str, wrapped: String) -> Result<DataKey, VaultError> {
        let unreadable = || VaultError::Unwrap {
            subject: subject.to_owned(),
        };
        let bytes = open(
            self.keyring.data_key_wrap_key(),
            &Sealed(wrapped),
            subject.as_bytes(),
        )
        .map_err(|_| unreadable())?;
        let bytes: [u8; 32] = bytes.as_slice().try_into().map_err(|_| unreadable())?;
        Ok(DataKey::from_bytes(bytes))
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};

    use super::*;
    use crate::auth::secrets::test_keyring;

    async fn open_db(location: &str) -> ViewDb {
        custodian_store::open(location, custodian_store::StoreOptions::default())
            .await
            .unwrap();
        ViewDb::open(location).await.unwrap()
    }

    async fn sqlite_vault() -> (tempfile::TempDir, Vault) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.db");
        let db = open_db(path.to_str().unwrap()).await;
        (
            dir,
            Vault::new(db, test_keyring(), Arc::new(crate::SystemClock)),
        )
    }

    async fn exercise(vault: &Vault) {
        let key = vault.create("tnt_a", "user_1").await.unwrap();
        let again = vault.create("tnt_a", "user_1").await.unwrap();
        assert_eq!(key, again, "a retried create keeps the first key");
        assert_eq!(vault.get("user_1").await.unwrap(), Some(key.clone()));

        vault.destroy("user_1").await.unwrap();
        assert_eq!(vault.get("user_1").await.unwrap(), None);
        vault.destroy("user_1").await.unwrap();
    }

    #[tokio::test]
    async fn create_is_idempotent_and_a_destroyed_key_is_gone() {
        let (_dir, vault) = sqlite_vault().await;
        exercise(&vault).await;
        assert_eq!(vault.get("never").await.unwrap(), None);
    }

    #[tokio::test]
    async fn on_postgres_a_destroyed_key_leaves_no_bytes_in_the_table_file() {
        use sqlx::Connection as _;

        let Some(url) = custodian_testkit::postgres::fresh_database().await else {
            return;
        };
        let vault = Vault::new(
            open_db(&url).await,
            test_keyring(),
            Arc::new(crate::SystemClock),
        );
        vault.create("tnt_a", "user_1").await.unwrap();
        vault.create("tnt_a", "user_2").await.unwrap();
        let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
        let wrapped = |subject: &'static str| {
            sqlx::query_scalar::<_, String>("SELECT wrapped FROM data_keys WHERE subject = $1")
                .bind(subject)
        };
        let erased = wrapped("user_1").fetch_one(&mut admin).await.unwrap();
        let kept = wrapped("user_2").fetch_one(&mut admin).await.unwrap();

        // The table's pages as PostgreSQL holds them, dead tuples included: through pageinspect
        // where it is installed, else the table's file once every page is written out.
        let inspect = sqlx::query("CREATE EXTENSION IF NOT EXISTS pageinspect")
            .execute(&mut admin)
            .await
            .is_ok();
        if !inspect {
            sqlx::query("CHECKPOINT").execute(&mut admin).await.unwrap();
        }
        vault.destroy("user_1").await.unwrap();
        let pages = if inspect {
            "SELECT COALESCE(string_agg(get_raw_page('data_keys', b::int), ''::bytea ORDER BY b), \
             ''::bytea) FROM generate_series(0, pg_relation_size('data_keys') \
             / current_setting('block_size')::bigint - 1) AS b"
        } else {
            "SELECT pg_read_binary_file(pg_relation_filepath('data_keys'))"
        };
        let holds =
            |file: &[u8], text: &str| file.windows(text.len()).any(|w| w == text.as_bytes());
        // A transaction that was already running somewhere in the cluster when the key was
        // destroyed (another test's database, an autovacuum) may still see the row, so the
        // rewrite keeps it; erasing again once that transaction ended removes it. Bounded: a key
        // that stays is a failure.
        let mut file = Vec::new();
        for attempt in 0..50 {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                vault.destroy("user_1").await.unwrap();
            }
            file = sqlx::query_scalar(pages)
                .fetch_one(&mut admin)
                .await
                .unwrap();
            if !holds(&file, &erased) {
                break;
            }
        }
        assert!(holds(&file, &kept), "the live key is in the file read");
        assert!(
            !holds(&file, &erased),
            "the destroyed key's bytes are still in the table's file"
        );
        assert!(vault.get("user_2").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn create_refuses_a_subject_filed_under_another_tenant() {
        let (_dir, vault) = sqlite_vault().await;
        vault.create("tnt_a", "user_1").await.unwrap();
        assert!(matches!(
            vault.create("tnt_b", "user_1").await,
            Err(VaultError::TenantMismatch { .. })
        ));
    }

    #[tokio::test]
    async fn get_many_returns_only_existing_keys_across_chunks() {
        let (_dir, vault) = sqlite_vault().await;
        let mut created = HashMap::new();
        for i in 0..(IN_CHUNK + 3) {
            if i % 2 == 0 {
                let subject = format!("user_{i}");
                created.insert(
                    subject.clone(),
                    vault.create("tnt_a", &subject).await.unwrap(),
                );
            }
        }
        vault.destroy("user_0").await.unwrap();
        created.remove("user_0");

        let asked: Vec<String> = (0..(IN_CHUNK + 3)).map(|i| format!("user_{i}")).collect();
        let found = vault.get_many(&asked).await.unwrap();
        assert_eq!(found, created);
        assert!(vault.get_many(&[]).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn stored_keys_are_wrapped_and_bound_to_their_subject() {
        let (_dir, vault) = sqlite_vault().await;
        let key = vault.create("tnt_a", "user_1").await.unwrap();
        vault.create("tnt_a", "user_2").await.unwrap();

        let wrapped: String =
            sqlx::query_scalar("SELECT wrapped FROM data_keys WHERE subject = 'user_1'")
                .fetch_one(vault.db.pool())
                .await
                .unwrap();
        for engine in [STANDARD, URL_SAFE] {
            let encoded = engine.encode(key.as_bytes());
            assert!(!wrapped.contains(encoded.trim_end_matches('=')));
        }
        assert!(!wrapped.contains(&URL_SAFE_NO_PAD.encode(key.as_bytes())));
        let raw = URL_SAFE_NO_PAD.decode(&wrapped[3..]).unwrap();
        assert!(!raw.windows(32).any(|w| w == key.as_bytes()));

        // Moved to another subject's row, the wrapped key no longer opens.
        sqlx::query("UPDATE data_keys SET wrapped = $1 WHERE subject = 'user_2'")
            .bind(&wrapped)
            .execute(vault.db.pool())
            .await
            .unwrap();
        assert!(matches!(
            vault.get("user_2").await,
            Err(VaultError::Unwrap { .. })
        ));

        // Another master key cannot read it.
        let other = Vault::new(
            vault.db.clone(),
            test_keyring(),
            Arc::new(crate::SystemClock),
        );
        assert!(matches!(
            other.get("user_1").await,
            Err(VaultError::Unwrap { .. })
        ));
    }

    #[tokio::test]
    async fn works_on_postgres() {
        let Some(url) = custodian_testkit::postgres::fresh_database().await else {
            return;
        };
        let vault = Vault::new(
            open_db(&url).await,
            test_keyring(),
            Arc::new(crate::SystemClock),
        );
        exercise(&vault).await;
        let a = vault.create("tnt_a", "user_a").await.unwrap();
        let found = vault
            .get_many(&["user_a".to_owned(), "user_x".to_owned()])
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found.get("user_a"), Some(&a));
    }
}
