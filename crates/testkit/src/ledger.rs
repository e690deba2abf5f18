//! Where a test's log lives: `custodian.db` in a temporary directory, or a fresh PostgreSQL
//! database.

use std::path::Path;
use std::sync::Arc;

use custodian_domain::EventRecord;
use custodian_store::{EventStore, StoreOptions};

/// The database a [`Ledger`] is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A file in a temporary directory.
    Sqlite,
    /// A database of its own on the test server (see [`crate::postgres`]).
    Postgres,
}

impl Backend {
    /// Every backend, SQLite first.
    pub const ALL: [Self; 2] = [Self::Sqlite, Self::Postgres];

    /// The name people know it by: `SQLite` or `PostgreSQL`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "SQLite",
            Self::Postgres => "PostgreSQL",
        }
    }

    /// Whether `wanted` names this backend, ignoring case; `postgres` names PostgreSQL too.
    pub fn matches(self, wanted: &str) -> bool {
        self.name().eq_ignore_ascii_case(wanted)
            || (self == Self::Postgres && wanted.eq_ignore_ascii_case("postgres"))
    }
}

/// An empty log location of one test: `custodian.db` in a temporary directory that goes with the
/// value, or a fresh PostgreSQL database named `custodian_test_*`, which stays (CI drops leftovers)
/// unless [`Ledger::remove`] drops it.
#[derive(Debug)]
pub struct Ledger {
    /// Which database it is on.
    pub backend: Backend,
    /// What `custodian_store::open` takes: the SQLite file's path or the PostgreSQL URL.
    pub location: String,
    dir: Option<tempfile::TempDir>,
}

impl Ledger {
    /// A ledger in a new temporary directory.
    ///
    /// # Panics
    /// When no temporary directory can be made.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory for the ledger");
        Self {
            backend: Backend::Sqlite,
            location: dir.path().join("custodian.db").display().to_string(),
            dir: Some(dir),
        }
    }

    /// A ledger in a fresh PostgreSQL database; `None` (skip the test) when PostgreSQL is
    /// unreachable outside CI.
    ///
    /// # Panics
    /// In CI, when PostgreSQL is unreachable.
    pub async fn postgres() -> Option<Self> {
        Some(Self {
            backend: Backend::Postgres,
            location: crate::postgres::fresh_database().await?,
            dir: None,
        })
    }

    /// A ledger in the PostgreSQL database at `url`, made by the caller (on a private cluster,
    /// say).
    pub fn postgres_at(url: String) -> Self {
        Self {
            backend: Backend::Postgres,
            location: url,
            dir: None,
        }
    }

    /// A ledger on `backend`; `None` as for [`Ledger::postgres`].
    pub async fn fresh(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => Some(Self::sqlite()),
            Backend::Postgres => Self::postgres().await,
        }
    }

    /// The temporary directory that holds the SQLite file; `None` on PostgreSQL.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(tempfile::TempDir::path)
    }

    /// The `custodian` flags that select this ledger: `--data-dir DIR` on SQLite,
    /// `--database-url URL` on PostgreSQL.
    pub fn serve_args(&self) -> Vec<String> {
        match self.dir() {
            Some(dir) => vec!["--data-dir".into(), dir.display().to_string()],
            None => vec!["--database-url".into(), self.location.clone()],
        }
    }

    /// Opens the log with the default options, creating its schema if need be.
    ///
    /// # Panics
    /// When the store cannot be opened.
    pub async fn open(&self) -> Arc<dyn EventStore> {
        self.open_with(StoreOptions::default()).await
    }

    /// Opens the log with `options`.
    ///
    /// # Panics
    /// When the store cannot be opened.
    pub async fn open_with(&self, options: StoreOptions) -> Arc<dyn EventStore> {
        custodian_store::open(&self.location, options)
            .await
            .unwrap_or_else(|e| panic!("cannot open the log at {}: {e}", self.location))
    }

    /// Opens the log read-only, as `custodian-replay verify` does.
    ///
    /// # Panics
    /// When the store cannot be opened.
    pub async fn open_read_only(&self) -> Arc<dyn EventStore> {
        self.open_with(StoreOptions {
            read_only: true,
            ..StoreOptions::default()
        })
        .await
    }

    /// Every record of the log, read through a read-only store that is closed again.
    ///
    /// # Panics
    /// When the log cannot be opened or read.
    pub async fn records(&self) -> Vec<EventRecord> {
        let store = self.open_read_only().await;
        let mut all: Vec<EventRecord> = vec![];
        loop {
            let next = all.last().map_or(1, |r| r.position + 1);
            let page = store.read_all(next, 1000).await.expect("reading the log");
            if page.is_empty() {
                break;
            }
            all.extend(page);
        }
        store.close().await;
        all
    }

    /// The temporary directory alone, for a fixture that keeps it alive itself; `None` on
    /// PostgreSQL.
    pub fn into_dir(self) -> Option<tempfile::TempDir> {
        self.dir
    }

    /// Drops a PostgreSQL database, so that a run leaves nothing behind; a SQLite directory goes
    /// with the value.
    ///
    /// # Errors
    /// When the PostgreSQL server refuses the drop.
    pub async fn remove(self) -> Result<(), sqlx::Error> {
        match self.backend {
            Backend::Sqlite => Ok(()),
            Backend::Postgres => crate::postgres::drop_database(&self.location).await,
        }
    }
}

/// Instantiates each listed test once per backend, as `sqlite::NAME` and `postgres::NAME`: each
/// test is an `async fn NAME(ledger: Ledger)` beside the macro call, run on a two-thread tokio
/// runtime (the calling crate needs tokio's `macros`). The PostgreSQL instance is skipped, with a
/// note, only when PostgreSQL is unreachable outside CI.
#[macro_export]
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::Ledger::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if let Some(ledger) = $crate::Ledger::postgres().await {
                        super::$test(ledger).await;
                    }
                }
            )*
        }
    };
}
