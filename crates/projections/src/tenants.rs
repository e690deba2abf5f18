//! The `tenants` view: one row per tenant, as its events have made it.

use async_trait::async_trait;
use custodian_domain::tenant::{Plan, TenantEvent, TenantStatus};
use custodian_domain::{DomainEvent, EventRecord};
use sqlx::AnyConnection;

use crate::runtime::{ApplyError, Projection, Tables};

/// Folds `tenant.*` events of `_system/tenant/{id}` streams into `tenants`.
#[derive(Debug, Default)]
pub struct TenantsView;

fn plan_name(p: Plan) -> &'static str {
    match p {
        Plan::Free => "free",
        Plan::Team => "team",
        Plan::Enterprise => "enterprise",
    }
}

fn status_name(s: TenantStatus) -> &'static str {
    match s {
        TenantStatus::Active => "active",
        TenantStatus::Suspended => "suspended",
    }
}

#[async_trait]
impl Projection for TenantsView {
    fn name(&self) -> &'static str {
        "tenants"
    }

    fn version(&self) -> u32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["tenants"]
    }

    fn create(&self, t: &Tables) -> Vec<String> {
        vec![format!(
            "CREATE TABLE IF NOT EXISTS {} (
                tenant_id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                slug TEXT NOT NULL,
                plan TEXT NOT NULL,
                status TEXT NOT NULL,
                version BIGINT NOT NULL,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL
            )",
            t.name("tenants")
        )]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        t: &Tables,
        event: &EventRecord,
    ) -> Result<(), ApplyError> {
        if event.stream.aggregate() != "tenant" || !event.event_type.as_str().starts_with("tenant.")
        {
            return Ok(());
        }
        let decoded = TenantEvent::decode(event.event_type.as_str(), event.schema, &event.data)
            .map_err(|e| ApplyError(e.to_string()))?;
        let table = t.name("tenants");
        let id = event.stream.id();
        let at = event.occurred_at.to_string();
        let version = i64::try_from(event.version).unwrap_or(i64::MAX);
        let (column, value) = match decoded {
            TenantEvent::Created { name, slug, plan } => {
                sqlx::query(&format!(
                    "INSERT INTO {table} (tenant_id, name, slug, plan, status, version, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, 'active', $5, $6, $6) \
                     ON CONFLICT (tenant_id) DO NOTHING"
                ))
                .bind(id)
                .bind(name)
                .bind(slug)
                .bind(plan_name(plan))
                .bind(version)
                .bind(at)
                .execute(&mut *conn)
                .await?;
                return Ok(());
            }
            TenantEvent::Renamed { name } => ("name", name),
            TenantEvent::PlanChanged { plan } => ("plan", plan_name(plan).to_owned()),
            TenantEvent::Suspended { .. } => {
                ("status", status_name(TenantStatus::Suspended).to_owned())
            }
            TenantEvent::Reactivated => ("status", status_name(TenantStatus::Active).to_owned()),
        };
        sqlx::query(&format!(
            "UPDATE {table} SET {column} = $1, version = $2, updated_at = $3 WHERE tenant_id = $4"
        ))
        .bind(value)
        .bind(version)
        .bind(at)
        .bind(id)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
