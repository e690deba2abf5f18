//! Large logs for benchmarks: tenant lives decided by the domain, appended by many tasks at once so
//! the store's group commit fills its transactions, and a settle step so the fill's background work
//! does not land on the first measurement.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use custodian_domain::tenant::{self, Plan, Tenant, TenantCommand, TenantEvent, TenantStatus};
use custodian_domain::{Actor, DomainEvent, EventType, NewEvent, StreamName, Timestamp};
use custodian_store::{EventStore, ExpectedVersion};
use sqlx::Connection;

use crate::Backend;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, BoxError>;

/// Events of one tenant's life in a filled log; each tenant's events are one append.
pub const EVENTS_PER_TENANT: u64 = 10;
/// Concurrent appenders while filling.
const FILL_TASKS: usize = 256;

/// The life of one tenant: each call to [`TenantLife::next_event`] decides one more valid command.
pub struct TenantLife {
    n: u64,
    /// The tenant's stream, `_system/tenant/tnt_{n}`.
    pub stream: StreamName,
    state: Option<Tenant>,
    /// The stream's version after the last event made.
    pub version: u64,
}

fn next_plan(plan: Plan) -> Plan {
    match plan {
        Plan::Free => Plan::Team,
        Plan::Team => Plan::Enterprise,
        Plan::Enterprise => Plan::Free,
    }
}

impl TenantLife {
    /// Tenant `n`'s life, before its first event.
    pub fn new(n: u64) -> Result<Self> {
        Ok(Self {
            n,
            stream: StreamName::parse(&format!("_system/tenant/tnt_{n}"))?,
            state: None,
            version: 0,
        })
    }

    /// The next event of this tenant's life, decided and folded by the domain.
    pub fn next_event(&mut self) -> Result<NewEvent> {
        let (n, k) = (self.n, self.version);
        let command = match &self.state {
            None => TenantCommand::Create {
                name: format!("Tenant {n}"),
                slug: format!("tenant-{n}"),
                plan: [Plan::Free, Plan::Team, Plan::Enterprise][(n % 3) as usize],
            },
            Some(t) => match (n + k) % 5 {
                0 | 1 => TenantCommand::Rename {
                    name: format!("Tenant {n} revision {k}"),
                },
                2 | 3 => TenantCommand::ChangePlan {
                    plan: next_plan(t.plan),
                },
                _ if t.status == TenantStatus::Active => TenantCommand::Suspend {
                    reason: "invoice overdue".to_owned(),
                },
                _ => TenantCommand::Reactivate,
            },
        };
        let decided = tenant::decide(self.state.as_ref(), command)?;
        let [event]: [TenantEvent; 1] = decided
            .try_into()
            .map_err(|v: Vec<TenantEvent>| format!("expected one event, got {}", v.len()))?;
        self.state = tenant::evolve(self.state.take(), &event);
        self.version += 1;
        Ok(NewEvent {
            id: uuid::Uuid::now_v7(),
            event_type: EventType::parse(event.event_type())?,
            schema: event.schema_version(),
            actor: Actor::system(),
            occurred_at: Timestamp::from_datetime(time::OffsetDateTime::now_utc()),
            correlation_id: Some(format!("req_bench_{n}_{k}")),
            causation_id: None,
            data: event.data(),
        })
    }
}

/// Fills the log with `events` events of tenant lives, ten per append. Returns the tenant count.
pub async fn fill(store: &Arc<dyn EventStore>, events: u64) -> Result<u64> {
    let tenants = events.div_ceil(EVENTS_PER_TENANT);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(FILL_TASKS);
    for _ in 0..FILL_TASKS {
        let (store, next) = (store.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= tenants {
                    return Ok::<(), BoxError>(());
                }
                let count = EVENTS_PER_TENANT.min(events - n * EVENTS_PER_TENANT);
                let mut life = TenantLife::new(n)?;
                let batch = (0..count)
                    .map(|_| life.next_event())
                    .collect::<Result<Vec<_>>>()?;
                store
                    .append(&life.stream, ExpectedVersion::NoStream, batch)
                    .await
                    .map_err(|e| format!("filling: the append of {} failed: {e}", life.stream))?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(tenants)
}

/// Lets the database finish the fill's background work before anything is timed, so that it does
/// not land on the first measurement: PostgreSQL vacuums and analyzes the log and writes a
/// checkpoint; SQLite checkpoints its WAL into the database file.
pub async fn settle(backend: Backend, location: &str) -> Result<()> {
    match backend {
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(location).await?;
            sqlx::query("VACUUM ANALYZE events")
                .execute(&mut conn)
                .await?;
            sqlx::query("CHECKPOINT").execute(&mut conn).await?;
            conn.close().await?;
        }
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{location}")).await?;
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&mut conn)
                .await?;
            conn.close().await?;
        }
    }
    Ok(())
}
