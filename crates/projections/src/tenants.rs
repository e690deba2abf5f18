//! The `tenants` view: one row per tenant, as its events have made it, and the queries that read
//! it ([`find_tenant`], [`list_tenants`]).

use std::collections::BTreeMap;

use async_trait::async_trait;
use custodian_domain::tenant::{Plan, TenantEvent, TenantStatus};
use custodian_domain::{DomainEvent, EventRecord};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row};

use crate::bulk::{self, Value};
use crate::runtime::{ApplyError, BatchApplyError, Projection, Tables};

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

/// One tenant, as the view holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRow {
    /// The tenant's id: the id of its stream `_system/tenant/{tenant_id}`, which is its slug for
    /// every tenant created through the service.
    pub tenant_id: String,
    /// The slug its creation event gave.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// What it pays for.
    pub plan: Plan,
    /// Whether it may act.
    pub status: TenantStatus,
    /// The version of its stream the row reflects (its last event).
    pub version: u64,
    /// When it was created.
    pub created_at: String,
    /// When its last event occurred.
    pub updated_at: String,
}

const COLUMNS: &str = "tenant_id, slug, name, plan, status, version, created_at, updated_at";

/// A value the view never writes: the table was changed by something other than its worker.
fn undecodable(what: String) -> sqlx::Error {
    sqlx::Error::Decode(what.into())
}

fn tenant_row(r: &AnyRow) -> Result<TenantRow, sqlx::Error> {
    let plan: String = r.try_get("plan")?;
    let status: String = r.try_get("status")?;
    Ok(TenantRow {
        tenant_id: r.try_get("tenant_id")?,
        slug: r.try_get("slug")?,
        name: r.try_get("name")?,
        plan: [Plan::Free, Plan::Team, Plan::Enterprise]
            .into_iter()
            .find(|p| plan_name(*p) == plan)
            .ok_or_else(|| undecodable(format!("unknown plan {plan:?} in the tenants view")))?,
        status: [TenantStatus::Active, TenantStatus::Suspended]
            .into_iter()
            .find(|s| status_name(*s) == status)
            .ok_or_else(|| undecodable(format!("unknown status {status:?} in the tenants view")))?,
        version: u64::try_from(r.try_get::<i64, _>("version")?)
            .map_err(|e| undecodable(e.to_string()))?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// The tenant `tenant_id`, suspended or not.
pub async fn find_tenant(
    pool: &AnyPool,
    tables: &Tables,
    tenant_id: &str,
) -> Result<Option<TenantRow>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM {} WHERE tenant_id = $1",
        tables.name("tenants")
    ))
    .bind(tenant_id)
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(tenant_row)
    .transpose()
}

/// Up to `limit` tenants by id, starting after the id `after` (the last id of the previous page).
pub async fn list_tenants(
    pool: &AnyPool,
    tables: &Tables,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<TenantRow>, sqlx::Error> {
    let table = tables.name("tenants");
    let sql = match after {
        Some(_) => format!(
            "SELECT {COLUMNS} FROM {table} WHERE tenant_id > $1 ORDER BY tenant_id LIMIT $2"
        ),
        None => format!("SELECT {COLUMNS} FROM {table} ORDER BY tenant_id LIMIT $1"),
    };
    let mut query = sqlx::query(&sql);
    if let Some(after) = after {
        query = query.bind(after);
    }
    query
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?
        .iter()
        .map(tenant_row)
        .collect()
}

/// A `tenant.*` event of a `tenant` stream, decoded; `None` for every other event.
fn tenant_event(event: &EventRecord) -> Result<Option<TenantEvent>, ApplyError> {
    if event.stream.aggregate() != "tenant" || !event.event_type.as_str().starts_with("tenant.") {
        return Ok(None);
    }
    TenantEvent::decode(event.event_type.as_str(), event.schema, &event.data)
        .map(Some)
        .map_err(|e| ApplyError(e.to_string()))
}

/// The `tenants` row of one tenant as a page of events leaves it, and whether the page changed it.
struct Folded {
    row: Option<TenantRow>,
    changed: bool,
}

impl Folded {
    /// What [`TenantsView::apply`] does to the row, in memory.
    fn apply(&mut self, event: &EventRecord, decoded: TenantEvent) {
        let at = event.occurred_at.to_string();
        if let TenantEvent::Created { name, slug, plan } = decoded {
            if self.row.is_none() {
                self.row = Some(TenantRow {
                    tenant_id: event.stream.id().to_owned(),
                    slug,
                    name,
                    plan,
                    status: TenantStatus::Active,
                    version: event.version,
                    created_at: at.clone(),
                    updated_at: at,
                });
                self.changed = true;
            }
            return;
        }
        let Some(row) = &mut self.row else { return };
        match decoded {
            TenantEvent::Created { .. } => return,
            TenantEvent::Renamed { name } => row.name = name,
            TenantEvent::PlanChanged { plan } => row.plan = plan,
            TenantEvent::Suspended { .. } => row.status = TenantStatus::Suspended,
            TenantEvent::Reactivated => row.status = TenantStatus::Active,
        }
        row.version = event.version;
        row.updated_at = at;
        self.changed = true;
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
        let Some(decoded) = tenant_event(event)? else {
            return Ok(());
        };
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

    /// Folds the page's events per tenant in memory, starting from the rows stored for the
    /// tenants it touches, and writes each changed tenant's final row with one multi-row upsert.
    async fn apply_batch(
        &self,
        conn: &mut AnyConnection,
        t: &Tables,
        events: &[EventRecord],
    ) -> Result<(), BatchApplyError> {
        let decoded = bulk::decode_page(events, tenant_event)?;
        if decoded.is_empty() {
            return Ok(());
        }
        let table = t.name("tenants");
        let mut ids: Vec<&str> = decoded.iter().map(|(e, _)| e.stream.id()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut folded: BTreeMap<String, Folded> = BTreeMap::new();
        for r in bulk::select_in(
            conn,
            &format!("SELECT {COLUMNS} FROM {table} WHERE"),
            &[],
            "tenant_id",
            &ids,
        )
        .await?
        {
            let row = tenant_row(&r)?;
            folded.insert(
                row.tenant_id.clone(),
                Folded {
                    row: Some(row),
                    changed: false,
                },
            );
        }
        for (event, d) in decoded {
            folded
                .entry(event.stream.id().to_owned())
                .or_insert(Folded {
                    row: None,
                    changed: false,
                })
                .apply(event, d);
        }
        let rows: Vec<Vec<Value>> = folded
            .into_values()
            .filter(|f| f.changed)
            .filter_map(|f| f.row)
            .map(|r| {
                vec![
                    Value::Text(r.tenant_id),
                    Value::Text(r.name),
                    Value::Text(r.slug),
                    plan_name(r.plan).into(),
                    status_name(r.status).into(),
                    Value::Int(i64::try_from(r.version).unwrap_or(i64::MAX)),
                    Value::Text(r.created_at),
                    Value::Text(r.updated_at),
                ]
            })
            .collect();
        bulk::insert(
            conn,
            &table,
            &[
                "tenant_id",
                "name",
                "slug",
                "plan",
                "status",
                "version",
                "created_at",
                "updated_at",
            ],
            &rows,
            "ON CONFLICT (tenant_id) DO UPDATE SET name = excluded.name, slug = excluded.slug, \
             plan = excluded.plan, status = excluded.status, version = excluded.version, \
             created_at = excluded.created_at, updated_at = excluded.updated_at",
        )
        .await?;
        Ok(())
    }
}
