//! The views' connection to the log's database, through sqlx's `Any` driver so one set of SQL
//! (`$1` placeholders, `ON CONFLICT` upserts) serves SQLite and PostgreSQL alike.

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

/// Why the views' database cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum ViewDbError {
    /// The database failed.
    #[error("view database: {0}")]
    Database(#[from] sqlx::Error),
}

/// A pool on the database that holds the log and the views.
#[derive(Clone, Debug)]
pub struct ViewDb {
    pool: AnyPool,
    postgres: bool,
}

impl ViewDb {
    /// Opens the database at `location`: a `postgres://` URL, or the path (or `sqlite:` URL) of
    /// the SQLite file the log lives in.
    pub async fn open(location: &str) -> Result<Self, ViewDbError> {
        sqlx::any::install_default_drivers();
        let postgres = location.starts_with("postgres://") || location.starts_with("postgresql://");
        let url = if postgres {
            location.to_owned()
        } else {
            let path = location
                .strip_prefix("sqlite://")
                .or_else(|| location.strip_prefix("sqlite:"))
                .unwrap_or(location);
            format!("sqlite://{path}?mode=rwc")
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if postgres { 8 } else { 4 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if !postgres {
                        // Share the file with the log's writer without failing on its lock.
                        sqlx::query("PRAGMA busy_timeout = 30000")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = FULL")
                            .execute(&mut *conn)
                            .await?;
                        // Deleted rows (a destroyed data key) are overwritten in the file, not
                        // left readable in free pages.
                        sqlx::query("PRAGMA secure_delete = ON")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            // A connection must come back with no transaction open. SQLite rolls a whole
            // transaction back on its own after some errors (a full disk among them); sqlx does
            // not see that, so its count of open transactions stays up, and the next
            // transaction on that connection nests under a savepoint whose rollback leaves a
            // write transaction open for good, holding the database's write lock against every
            // other writer. Such a connection is closed instead of reused: closing it rolls back
            // whatever it still holds.
            .after_release(|conn, _| {
                use sqlx::Connection as _;
                let clean = !conn.is_in_transaction();
                if !clean {
                    tracing::debug!("closing a database connection returned inside a transaction");
                }
                Box::pin(async move { Ok(clean) })
            })
            .connect(&url)
            .await?;
        Ok(Self { pool, postgres })
    }

    /// The pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A transaction for schema work (creating or dropping tables, registering generations): on
    /// PostgreSQL it holds [`custodian_store::postgres::SCHEMA_LOCK`] until it ends, so processes
    /// started together on one database never race each other's `CREATE TABLE`. On SQLite it
    /// takes the write lock up front (`BEGIN IMMEDIATE`), which serializes it just as well and
    /// keeps a read followed by a write from failing when another connection wrote between them.
    pub async fn begin_schema_work(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        let mut tx = if self.postgres {
            self.pool.begin().await?
        } else {
            self.pool.begin_with("BEGIN IMMEDIATE").await?
        };
        if self.postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(custodian_store::postgres::SCHEMA_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    /// True on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.postgres
    }
}
