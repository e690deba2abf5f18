//! Backends under test, each reopenable on the same data.

use std::sync::Arc;

use custodian_domain::{Actor, EventType, NewEvent, StreamName, Timestamp};
use custodian_store::{EventStore, StoreOptions};

/// Where a test's log lives; open it as often as the test needs.
pub struct Fixture {
    pub location: String,
    _dir: Option<tempfile::TempDir>,
}

impl Fixture {
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

    pub async fn open(&self) -> Arc<dyn EventStore> {
        self.open_with(StoreOptions::default()).await
    }

    pub async fn open_with(&self, options: StoreOptions) -> Arc<dyn EventStore> {
        custodian_store::open(&self.location, options)
            .await
            .unwrap()
    }
}

pub fn stream(s: &str) -> StreamName {
    StreamName::parse(s).unwrap()
}

pub fn event(data: serde_json::Value) -> NewEvent {
    NewEvent {
        id: uuid::Uuid::now_v7(),
        event_type: EventType::parse("thing.happened").unwrap(),
        schema: 1,
        actor: Actor::system(),
        occurred_at: Timestamp::parse("2026-11-25T12:00:00Z").unwrap(),
        correlation_id: Some("req_test".into()),
        causation_id: None,
        data,
    }
}

pub fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| event(serde_json::json!({ "i": i })))
        .collect()
}
