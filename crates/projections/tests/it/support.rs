//! A log and its views on a real database, and a counting projection with a failure switch.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use custodian_domain::{Actor, EventRecord, EventType, NewEvent, StreamName, Timestamp};
use custodian_projections::{ApplyError, Projection, Projections, RuntimeOptions, Tables, ViewDb};
use custodian_store::{EventStore, StoreOptions};
use sqlx::{AnyConnection, Row};
use tokio_util::sync::CancellationToken;

/// A backend's log location, kept alive for the test.
pub struct Ledger {
    pub location: String,
    _dir: Option<tempfile::TempDir>,
}

impl Ledger {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            location: dir.path().join("custodian.db").display().to_string(),
            _dir: Some(dir),
        }
    }

    pub async fn postgres() -> Option<Self> {
        Some(Self {
            location: custodian_store::testing::fresh_postgres_database().await?,
            _dir: None,
        })
    }

    pub async fn store(&self) -> Arc<dyn EventStore> {
        custodian_store::open(&self.location, StoreOptions::default())
            .await
            .unwrap()
    }

    pub async fn views(&self) -> ViewDb {
        ViewDb::open(&self.location).await.unwrap()
    }

    pub async fn start(
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
        min_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        idle_check: Duration::from_millis(50),
    }
}

pub fn event(n: u64) -> NewEvent {
    NewEvent {
        id: uuid::Uuid::now_v7(),
        event_type: EventType::parse("thing.happened").unwrap(),
        schema: 1,
        actor: Actor::system(),
        occurred_at: Timestamp::parse("2026-11-25T12:00:00Z").unwrap(),
        correlation_id: None,
        causation_id: None,
        data: serde_json::json!({ "n": n }),
    }
}

pub fn stream(s: &str) -> StreamName {
    StreamName::parse(s).unwrap()
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
