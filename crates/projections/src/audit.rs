//! The `audit` view: every event of every tenant by position, with its type and time, and the
//! principals and resources it touches ([`custodian_domain::touches`]), so that a tenant's audit
//! trail can be filtered and paged without reading the whole log. The records themselves stay in
//! the log; the view holds no event body.
//!
//! An event that continues an object (a session's refresh, a grant's revocation) also touches
//! what the object's opening event touched as a subject, copied here when it is applied.

use std::collections::BTreeMap;

use async_trait::async_trait;
use custodian_domain::EventRecord;
use custodian_domain::touches::touches;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row};

use crate::bulk::{self, Value};
use crate::page::Page;
use crate::runtime::{ApplyError, BatchApplyError, Projection, Tables};

/// Folds every event into `events` and `touches`.
#[derive(Debug, Default)]
pub struct AuditView;

/// One event of a tenant, as the view indexes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// Its position in the log.
    pub position: u64,
    /// Its type.
    pub event_type: String,
    /// When it occurred, in the fixed-width timestamp form.
    pub occurred_at: String,
}

/// Which event types a listing keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeFilter {
    /// Exactly this type.
    Exact(String),
    /// Every type that starts with this prefix, which ends in `.` (`grant.`).
    Prefix(String),
}

/// What a listing of a tenant's events keeps; every condition given must hold.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only events that touch this principal (as actor or subject).
    pub principal: Option<String>,
    /// Only events that touch this resource, `type/id`.
    pub resource: Option<String>,
    /// Only events of these types.
    pub event_type: Option<TypeFilter>,
    /// Only events that occurred at or after this time (fixed-width timestamp form).
    pub from: Option<String>,
    /// Only events that occurred before this time (fixed-width timestamp form).
    pub to: Option<String>,
}

const PRINCIPAL: &str = "principal";
const RESOURCE: &str = "resource";

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn audit_row(r: &AnyRow) -> Result<AuditRow, sqlx::Error> {
    Ok(AuditRow {
        position: u64::try_from(r.try_get::<i64, _>(0)?)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        event_type: r.try_get(1)?,
        occurred_at: r.try_get(2)?,
    })
}

#[async_trait]
impl Projection for AuditView {
    fn name(&self) -> &'static str {
        "audit"
    }

    fn version(&self) -> u32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["events", "touches"]
    }

    fn create(&self, t: &Tables) -> Vec<String> {
        let events = t.name("events");
        let touches = t.name("touches");
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {events} (
                    position BIGINT NOT NULL PRIMARY KEY,
                    tenant TEXT NOT NULL,
                    event_type TEXT NOT NULL,
                    occurred_at TEXT NOT NULL,
                    opens TEXT NULL
                )"
            ),
            format!("CREATE INDEX IF NOT EXISTS {events}_by_tenant ON {events} (tenant, position)"),
            format!(
                "CREATE INDEX IF NOT EXISTS {events}_by_type ON {events} (tenant, event_type, position)"
            ),
            format!("CREATE INDEX IF NOT EXISTS {events}_by_object ON {events} (tenant, opens)"),
            // `subject` is 1 when the event is about the value, 0 when the value only acted.
            format!(
                "CREATE TABLE IF NOT EXISTS {touches} (
                    tenant TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    value TEXT NOT NULL,
                    position BIGINT NOT NULL,
                    subject BIGINT NOT NULL,
                    PRIMARY KEY (tenant, kind, value, position)
                )"
            ),
            format!("CREATE INDEX IF NOT EXISTS {touches}_by_position ON {touches} (position)"),
        ]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        t: &Tables,
        event: &EventRecord,
    ) -> Result<(), ApplyError> {
        let events = t.name("events");
        let table = t.name("touches");
        let tenant = event.tenant.as_str();
        let position = signed(event.position);
        let touched = touches(event);
        sqlx::query(&format!(
            "INSERT INTO {events} (position, tenant, event_type, occurred_at, opens) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (position) DO NOTHING"
        ))
        .bind(position)
        .bind(tenant)
        .bind(event.event_type.as_str())
        .bind(event.occurred_at.to_string())
        .bind(touched.opens.clone())
        .execute(&mut *conn)
        .await?;

        let rows = touch_rows_of(&touched);
        if !rows.is_empty() {
            let values = (0..rows.len())
                .map(|i| {
                    let b = i * 3 + 3;
                    format!(
                        "($1, ${b}, ${}, CAST($2 AS BIGINT), CAST(${} AS BIGINT))",
                        b + 1,
                        b + 2
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO {table} (tenant, kind, value, position, subject) VALUES {values} \
                 ON CONFLICT (tenant, kind, value, position) DO NOTHING"
            );
            let mut query = sqlx::query(&sql).bind(tenant).bind(position);
            for ((kind, value), subject) in rows {
                query = query.bind(kind).bind(value).bind(subject);
            }
            query.execute(&mut *conn).await?;
        }
        if let Some(object) = &touched.continues {
            continue_object(conn, t, tenant, position, object).await?;
        }
        Ok(())
    }

    /// Inserts the page's `events` rows and its direct `touches` rows with one multi-row
    /// statement each, then copies the subjects of each continued object in position order, as
    /// [`AuditView::apply`] does event by event.
    async fn apply_batch(
        &self,
        conn: &mut AnyConnection,
        t: &Tables,
        events: &[EventRecord],
    ) -> Result<(), BatchApplyError> {
        let mut event_rows = Vec::with_capacity(events.len());
        let mut touch_rows = Vec::new();
        let mut continued = Vec::new();
        for event in events {
            let tenant = event.tenant.as_str();
            let position = signed(event.position);
            let touched = touches(event);
            for ((kind, value), subject) in touch_rows_of(&touched) {
                touch_rows.push(vec![
                    Value::from(tenant),
                    Value::from(kind),
                    Value::from(value),
                    Value::Int(position),
                    Value::Int(subject),
                ]);
            }
            if let Some(object) = touched.continues {
                continued.push((tenant, position, object));
            }
            event_rows.push(vec![
                Value::Int(position),
                Value::from(tenant),
                Value::from(event.event_type.as_str()),
                Value::Text(event.occurred_at.to_string()),
                Value::OptText(touched.opens),
            ]);
        }
        bulk::insert(
            conn,
            &t.name("events"),
            &["position", "tenant", "event_type", "occurred_at", "opens"],
            &event_rows,
            "ON CONFLICT (position) DO NOTHING",
        )
        .await?;
        bulk::insert(
            conn,
            &t.name("touches"),
            &["tenant", "kind", "value", "position", "subject"],
            &touch_rows,
            "ON CONFLICT (tenant, kind, value, position) DO NOTHING",
        )
        .await?;
        for (tenant, position, object) in continued {
            continue_object(conn, t, tenant, position, &object).await?;
        }
        Ok(())
    }
}

/// One row per (kind, value) an event touches: a subject row wins over the same value as actor.
fn touch_rows_of(touched: &custodian_domain::touches::Touches) -> BTreeMap<(&str, &str), i64> {
    let mut rows: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    if let Some(actor) = &touched.actor {
        rows.insert((PRINCIPAL, actor), 0);
    }
    for p in &touched.principals {
        rows.insert((PRINCIPAL, p), 1);
    }
    for r in &touched.resources {
        rows.insert((RESOURCE, r), 1);
    }
    rows
}

/// The event at `position` continues `object`: it also touches, as a subject, what the events
/// up to it that opened the object touched as a subject.
async fn continue_object(
    conn: &mut AnyConnection,
    t: &Tables,
    tenant: &str,
    position: i64,
    object: &str,
) -> Result<(), sqlx::Error> {
    let events = t.name("events");
    let table = t.name("touches");
    sqlx::query(&format!(
        "INSERT INTO {table} (tenant, kind, value, position, subject) \
         SELECT DISTINCT t.tenant, t.kind, t.value, CAST($1 AS BIGINT), 1 \
         FROM {table} t JOIN {events} e ON e.position = t.position \
         WHERE e.tenant = $2 AND e.opens = $3 AND t.tenant = $2 AND t.subject = 1 \
         AND e.position <= CAST($1 AS BIGINT) \
         ON CONFLICT (tenant, kind, value, position) DO UPDATE SET subject = 1"
    ))
    .bind(position)
    .bind(tenant)
    .bind(object)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Up to `limit` events of `tenant` that pass `filter`, oldest first, after the position `after`.
pub async fn list_events(
    pool: &AnyPool,
    tables: &Tables,
    tenant: &str,
    filter: &AuditFilter,
    after: Option<u64>,
    limit: u32,
) -> Result<Vec<AuditRow>, sqlx::Error> {
    let events = tables.name("events");
    let touches = tables.name("touches");
    let after = after.map(|p| p.to_string());
    let next_type = match &filter.event_type {
        // `/` follows `.`: every type with the prefix sorts in [prefix, prefix with `/`).
        Some(TypeFilter::Prefix(p)) => Some(format!("{}/", p.trim_end_matches('.'))),
        _ => None,
    };
    let mut page = Page::new(
        format!(
            "SELECT e.position, e.event_type, e.occurred_at FROM {events} e WHERE e.tenant = $1"
        ),
        vec![tenant],
    );
    match &filter.event_type {
        None => {}
        Some(TypeFilter::Exact(t)) => page.and_with(t, |p| format!("e.event_type = {p}")),
        Some(TypeFilter::Prefix(t)) => {
            page.and_with(t, |p| format!("e.event_type >= {p}"));
            if let Some(next) = &next_type {
                page.and_with(next, |p| format!("e.event_type < {p}"));
            }
        }
    }
    if let Some(from) = &filter.from {
        page.and_with(from, |p| format!("e.occurred_at >= {p}"));
    }
    if let Some(to) = &filter.to {
        page.and_with(to, |p| format!("e.occurred_at < {p}"));
    }
    for (kind, value) in [
        (PRINCIPAL, filter.principal.as_deref()),
        (RESOURCE, filter.resource.as_deref()),
    ] {
        if let Some(value) = value {
            page.and_with(value, |p| {
                format!(
                    "e.position IN (SELECT t.position FROM {touches} t \
                     WHERE t.tenant = $1 AND t.kind = '{kind}' AND t.value = {p})"
                )
            });
        }
    }
    if let Some(after) = &after {
        page.and_with(after, |p| format!("e.position > CAST({p} AS BIGINT)"));
    }
    page.fetch(pool, "e.position", None, limit, audit_row).await
}
