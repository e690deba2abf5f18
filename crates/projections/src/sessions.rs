//! The `sessions` view: one row per session, as its events have made it. Refresh tokens are never
//! stored here, not even hashed: only the generation they have reached.

use std::collections::BTreeMap;

use async_trait::async_trait;
use custodian_domain::session::{RevokeReason, SessionEvent};
use custodian_domain::user::LoginMethod;
use custodian_domain::{DomainEvent, EventRecord};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row};

use crate::bulk::{self, Value};
use crate::page::Page;
use crate::runtime::{ApplyError, BatchApplyError, Projection, Tables};

/// Folds `session.*` events of `{tenant}/session/{id}` streams into `sessions`.
#[derive(Debug, Default)]
pub struct SessionsView;

/// One session, as the view holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SessionRow {
    /// The tenant the session belongs to.
    pub tenant: String,
    /// The session's id.
    pub session_id: String,
    /// Whose session.
    pub user_id: String,
    /// `active` or `revoked` (an active session may still have expired: see `expires_at`).
    pub status: String,
    /// How the login completed: `password`, `password_totp` or `password_recovery_code`.
    pub method: String,
    /// The current refresh token's generation (0 until the first refresh).
    pub generation: u64,
    /// Why it was revoked: `logout`, `revoked_by_user`, `revoked_by_admin`,
    /// `refresh_token_reuse`, `password_changed` or `tenant_suspended`.
    pub revoke_reason: Option<String>,
    /// The client's address at login.
    pub ip: Option<String>,
    /// The client's `User-Agent` at login.
    pub user_agent: Option<String>,
    /// When the login started it.
    pub started_at: String,
    /// When its refresh token was last rotated.
    pub last_refreshed_at: Option<String>,
    /// It cannot be refreshed after this.
    pub expires_at: String,
    /// When it was revoked.
    pub revoked_at: Option<String>,
}

/// The stored name of a login method.
pub fn method_name(m: LoginMethod) -> &'static str {
    match m {
        LoginMethod::Password => "password",
        LoginMethod::PasswordTotp => "password_totp",
        LoginMethod::PasswordRecoveryCode => "password_recovery_code",
    }
}

/// The stored name of a revocation reason.
pub fn revoke_reason_name(r: RevokeReason) -> &'static str {
    match r {
        RevokeReason::Logout => "logout",
        RevokeReason::RevokedByUser => "revoked_by_user",
        RevokeReason::RevokedByAdmin => "revoked_by_admin",
        RevokeReason::RefreshTokenReuse => "refresh_token_reuse",
        RevokeReason::PasswordChanged => "password_changed",
    }
}

const COLUMNS: &str = "tenant, session_id, user_id, status, method, generation, revoke_reason, \
                       ip, user_agent, started_at, last_refreshed_at, expires_at, revoked_at";

fn session_row(r: &AnyRow) -> Result<SessionRow, sqlx::Error> {
    Ok(SessionRow {
        tenant: r.try_get(0)?,
        session_id: r.try_get(1)?,
        user_id: r.try_get(2)?,
        status: r.try_get(3)?,
        method: r.try_get(4)?,
        generation: u64::try_from(r.try_get::<i64, _>(5)?)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        revoke_reason: r.try_get(6)?,
        ip: r.try_get(7)?,
        user_agent: r.try_get(8)?,
        started_at: r.try_get(9)?,
        last_refreshed_at: r.try_get(10)?,
        expires_at: r.try_get(11)?,
        revoked_at: r.try_get(12)?,
    })
}

/// A `session.*` event of a `session` stream, decoded; `None` for every other event.
fn session_event(event: &EventRecord) -> Result<Option<SessionEvent>, ApplyError> {
    if event.stream.aggregate() != "session" || !event.event_type.as_str().starts_with("session.") {
        return Ok(None);
    }
    SessionEvent::decode(event.event_type.as_str(), event.schema, &event.data)
        .map(Some)
        .map_err(|e| ApplyError(e.to_string()))
}

/// The `revoke_reason` of the sessions a tenant's suspension ended.
pub const TENANT_SUSPENDED: &str = "tenant_suspended";

/// Whether `event` is a tenant's suspension (`tenant.suspended` on `_system/tenant/{slug}`).
fn is_suspension(event: &EventRecord) -> bool {
    event.stream.aggregate() == "tenant" && event.event_type.as_str() == "tenant.suspended"
}

/// What [`SessionsView::apply`] does to a session's row, in memory; true when it changed it.
fn fold(row: &mut Option<SessionRow>, event: &EventRecord, decoded: SessionEvent) -> bool {
    let at = event.occurred_at.to_string();
    match (row, decoded) {
        (
            row @ None,
            SessionEvent::Started {
                user_id,
                method,
                expires_at,
                ip,
                user_agent,
                ..
            },
        ) => {
            *row = Some(SessionRow {
                tenant: event.stream.tenant().to_owned(),
                session_id: event.stream.id().to_owned(),
                user_id,
                status: "active".to_owned(),
                method: method_name(method).to_owned(),
                generation: 0,
                revoke_reason: None,
                ip,
                user_agent,
                started_at: at,
                last_refreshed_at: None,
                expires_at: expires_at.to_string(),
                revoked_at: None,
            });
            true
        }
        (Some(r), SessionEvent::Refreshed { generation, .. }) => {
            r.generation = generation;
            r.last_refreshed_at = Some(at);
            true
        }
        (Some(r), SessionEvent::Revoked { reason }) if r.status == "active" => {
            r.status = "revoked".to_owned();
            r.revoke_reason = Some(revoke_reason_name(reason).to_owned());
            r.revoked_at = Some(at);
            true
        }
        _ => false,
    }
}

#[async_trait]
impl Projection for SessionsView {
    fn name(&self) -> &'static str {
        "sessions"
    }

    // 2: a tenant's suspension ends its sessions.
    fn version(&self) -> u32 {
        2
    }

    fn tables(&self) -> &'static [&'static str] {
        &["sessions"]
    }

    fn create(&self, t: &Tables) -> Vec<String> {
        let sessions = t.name("sessions");
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {sessions} (
                    tenant TEXT NOT NULL,
                    session_id TEXT NOT NULL,
                    user_id TEXT NOT NULL,
                    status TEXT NOT NULL,
                    method TEXT NOT NULL,
                    generation BIGINT NOT NULL,
                    revoke_reason TEXT NULL,
                    ip TEXT NULL,
                    user_agent TEXT NULL,
                    started_at TEXT NOT NULL,
                    last_refreshed_at TEXT NULL,
                    expires_at TEXT NOT NULL,
                    revoked_at TEXT NULL,
                    PRIMARY KEY (tenant, session_id)
                )"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {sessions}_by_user ON {sessions} (tenant, user_id)"
            ),
        ]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        t: &Tables,
        event: &EventRecord,
    ) -> Result<(), ApplyError> {
        if is_suspension(event) {
            // A suspension ends every session of the tenant for good (the authentication index
            // refuses them after a reactivation too), so the view shows them ended.
            sqlx::query(&format!(
                "UPDATE {} SET status = 'revoked', revoke_reason = '{TENANT_SUSPENDED}', \
                 revoked_at = $1 WHERE tenant = $2 AND status = 'active'",
                t.name("sessions")
            ))
            .bind(event.occurred_at.to_string())
            .bind(event.stream.id())
            .execute(&mut *conn)
            .await?;
            return Ok(());
        }
        let Some(decoded) = session_event(event)? else {
            return Ok(());
        };
        let table = t.name("sessions");
        let tenant = event.stream.tenant();
        let id = event.stream.id();
        let at = event.occurred_at.to_string();
        match decoded {
            SessionEvent::Started {
                user_id,
                method,
                expires_at,
                ip,
                user_agent,
                ..
            } => {
                sqlx::query(&format!(
                    "INSERT INTO {table} (tenant, session_id, user_id, status, method, \
                     generation, ip, user_agent, started_at, expires_at) \
                     VALUES ($1, $2, $3, 'active', $4, 0, $5, $6, $7, $8) \
                     ON CONFLICT (tenant, session_id) DO NOTHING"
                ))
                .bind(tenant)
                .bind(id)
                .bind(user_id)
                .bind(method_name(method))
                .bind(ip)
                .bind(user_agent)
                .bind(at)
                .bind(expires_at.to_string())
                .execute(&mut *conn)
                .await?;
            }
            SessionEvent::Refreshed { generation, .. } => {
                sqlx::query(&format!(
                    "UPDATE {table} SET generation = $1, last_refreshed_at = $2 \
                     WHERE tenant = $3 AND session_id = $4"
                ))
                .bind(i64::try_from(generation).unwrap_or(i64::MAX))
                .bind(at)
                .bind(tenant)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            }
            // The revocation that follows it is what ends the session.
            SessionEvent::RefreshTokenReused { .. } => {}
            SessionEvent::Revoked { reason } => {
                sqlx::query(&format!(
                    "UPDATE {table} SET status = 'revoked', revoke_reason = $1, revoked_at = $2 \
                     WHERE tenant = $3 AND session_id = $4 AND status = 'active'"
                ))
                .bind(revoke_reason_name(reason))
                .bind(at)
                .bind(tenant)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            }
        }
        Ok(())
    }

    /// Folds the page's events per session in memory, starting from the rows stored for the
    /// sessions it touches, and writes each changed session's final row with one multi-row
    /// upsert.
    async fn apply_batch(
        &self,
        conn: &mut AnyConnection,
        t: &Tables,
        events: &[EventRecord],
    ) -> Result<(), BatchApplyError> {
        // A suspension touches every session of its tenant, whichever the page names: a page
        // holding one (rare) is applied event by event.
        if events.iter().any(is_suspension) {
            for event in events {
                self.apply(conn, t, event)
                    .await
                    .map_err(|error| BatchApplyError::Event {
                        position: event.position,
                        error,
                    })?;
            }
            return Ok(());
        }
        let decoded = bulk::decode_page(events, session_event)?;
        if decoded.is_empty() {
            return Ok(());
        }
        let table = t.name("sessions");
        // (tenant, session id) → (row, changed)
        let mut folded: BTreeMap<(String, String), (Option<SessionRow>, bool)> = BTreeMap::new();
        for (tenant, ids) in bulk::ids_by_tenant(&decoded) {
            for r in bulk::select_in(
                conn,
                &format!("SELECT {COLUMNS} FROM {table} WHERE tenant = $1 AND"),
                &[tenant],
                "session_id",
                &ids,
            )
            .await?
            {
                let row = session_row(&r)?;
                folded.insert(
                    (row.tenant.clone(), row.session_id.clone()),
                    (Some(row), false),
                );
            }
        }
        for (event, d) in decoded {
            let key = (
                event.stream.tenant().to_owned(),
                event.stream.id().to_owned(),
            );
            let (row, changed) = folded.entry(key).or_insert((None, false));
            *changed |= fold(row, event, d);
        }
        let rows: Vec<Vec<Value>> = folded
            .into_values()
            .filter(|(_, changed)| *changed)
            .filter_map(|(row, _)| row)
            .map(|r| {
                vec![
                    Value::Text(r.tenant),
                    Value::Text(r.session_id),
                    Value::Text(r.user_id),
                    Value::Text(r.status),
                    Value::Text(r.method),
                    Value::Int(i64::try_from(r.generation).unwrap_or(i64::MAX)),
                    Value::OptText(r.revoke_reason),
                    Value::OptText(r.ip),
                    Value::OptText(r.user_agent),
                    Value::Text(r.started_at),
                    Value::OptText(r.last_refreshed_at),
                    Value::Text(r.expires_at),
                    Value::OptText(r.revoked_at),
                ]
            })
            .collect();
        let columns: Vec<&str> = COLUMNS.split(',').map(str::trim).collect();
        let updates = columns[2..]
            .iter()
            .map(|c| format!("{c} = excluded.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        bulk::insert(
            conn,
            &table,
            &columns,
            &rows,
            &format!("ON CONFLICT (tenant, session_id) DO UPDATE SET {updates}"),
        )
        .await?;
        Ok(())
    }
}

/// The session `session_id` of `tenant`.
pub async fn find_session(
    pool: &AnyPool,
    tables: &Tables,
    tenant: &str,
    session_id: &str,
) -> Result<Option<SessionRow>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM {} WHERE tenant = $1 AND session_id = $2",
        tables.name("sessions")
    ))
    .bind(tenant)
    .bind(session_id)
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(session_row)
    .transpose()
}

/// Up to `limit` sessions of `user_id` in `tenant`, by session id, after the session id `after`.
/// With `active_only`, only sessions not revoked that expire after `now` (a timestamp in its
/// fixed-width form).
#[allow(clippy::too_many_arguments)]
pub async fn list_sessions(
    pool: &AnyPool,
    tables: &Tables,
    tenant: &str,
    user_id: &str,
    active_only: bool,
    now: &str,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<SessionRow>, sqlx::Error> {
    let mut page = Page::new(
        format!(
            "SELECT {COLUMNS} FROM {} WHERE tenant = $1 AND user_id = $2",
            tables.name("sessions")
        ),
        vec![tenant, user_id],
    );
    if active_only {
        page.and_with(now, |p| format!("status = 'active' AND expires_at > {p}"));
    }
    page.fetch(pool, "session_id", after, limit, session_row)
        .await
}

/// The ids of every session of `user_id` in `tenant` that is not revoked (expired ones included),
/// by id: the sessions to revoke when the user is disabled, deleted or changes their password.
pub async fn active_session_ids(
    pool: &AnyPool,
    tables: &Tables,
    tenant: &str,
    user_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT session_id FROM {} WHERE tenant = $1 AND user_id = $2 AND status = 'active' \
         ORDER BY session_id",
        tables.name("sessions")
    ))
    .bind(tenant)
    .bind(user_id)
    .fetch_all(pool)
    .await
}
