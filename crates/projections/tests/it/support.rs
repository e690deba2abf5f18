//! The views of a test's ledger (from `custodian-testkit`), and a counting projection with a
//! failure switch.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use custodian_domain::EventRecord;
use custodian_projections::{ApplyError, Projection, Projections, RuntimeOptions, Tables, ViewDb};
use custodian_store::EventStore;
use custodian_testkit::Ledger;
use sqlx::{AnyConnection, Row};
use tokio_util::sync::CancellationToken;

/// The views of a test's ledger, in the log's own database.
pub trait Views {
    /// The views' database.
    async fn views(&self) -> ViewDb;

    /// Starts the runtime over `store` with `projections` and [`fast_options`].
    async fn start(
        &self,
        store: &Arc<dyn EventStore>,
        projections: Vec<Arc<dyn Projection>>,
    ) -> Projections;
}

impl Views for Ledger {
    async fn views(&self) -> ViewDb {
        ViewDb::open(&self.location).await.unwrap()
    }

    async fn start(
        &self,
        store: &Arc<dyn EventStore>,
        projections: Vec<Arc<dyn Projection>>,
    ) -> Projections {
        Projections::start(
            self.views().await,
            store.clone(),
            projections,
            fast_options(),
            CancellationToken::new(),
        )
        .await
        .unwrap()
    }
}

pub fn fast_options() -> RuntimeOptions {
    RuntimeOptions {
        batch_size: 16,
        catch_up_batch_size: 16,
        min_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        idle_check: Duration::from_millis(50),
    }
}

/// Counts events per stream; can be told to fail `fail_times` times on position `fail_at`, after
/// it has already applied the events before it in the same batch.
#[derive(Default)]
pub struct Counter {
    pub fail_at: AtomicU64,
    pub fail_times: AtomicU64,
    pub delay_ms: AtomicU64,
}

#[async_trait]
impl Projection for Counter {
    fn name(&self) -> &'static str {
        "counter"
    }
    fn version(&self) -> u32 {
        1
    }
    fn tables(&self) -> &'static [&'static str] {
        &["counts"]
    }
    fn create(&self, t: &Tables) -> Vec<String> {
        vec![format!(
            "CREATE TABLE IF NOT EXISTS {} (stream TEXT PRIMARY KEY, n BIGINT NOT NULL)",
            t.name("counts")
        )]
    }
    async fn apply(
        &self,
        conn: &mut AnyConnection,
        t: &Tables,
        event: &EventRecord,
    ) -> Result<(), ApplyError> {
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        sqlx::query(&format!(
            "INSERT INTO {} (stream, n) VALUES ($1, 1) ON CONFLICT (stream) DO UPDATE SET n = {}.n + 1",
            t.name("counts"),
            t.name("counts")
        ))
        .bind(event.stream.as_str())
        .execute(&mut *conn)
        .await?;
        if event.position == self.fail_at.load(Ordering::SeqCst)
            && self
                .fail_times
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err(ApplyError(format!(
                "injected failure at {}",
                event.position
            )));
        }
        Ok(())
    }
}

pub async fn counts(views: &ViewDb, tables: &Tables) -> Vec<(String, i64)> {
    sqlx::query(&format!(
        "SELECT stream, n FROM {} ORDER BY stream",
        tables.name("counts")
    ))
    .fetch_all(views.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}
