//! The `keys` view: one row per API key, as its events have made it, with its recorded use (last
//! used time, uses). Never a secret: the view keeps the preview, not even the keyed hash.

use std::collections::BTreeMap;

use async_trait::async_trait;
use custodian_domain::key::KeyEvent;
use custodian_domain::{DomainEvent, EventRecord};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row};

use crate::bulk::{self, Value};
use crate::page::Page;
use crate::runtime::{ApplyError, BatchApplyError, Projection, Tables};

/// Folds `key.*` events of `{tenant}/key/{id}` streams into `keys`.
#[derive(Debug, Default)]
pub struct KeysView;

/// One key, as the view holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    /// Its tenant.
    pub tenant: String,
    /// `key_...`.
    pub key_id: String,
    /// The user it acts for.
    pub owner: String,
    /// Its name.
    pub name: String,
    /// The current secret's preview.
    pub preview: String,
    /// Its scopes, a JSON array of permissions.
    pub scopes: String,
    /// What they cover, as JSON (`{"resource_type": ...}`), if not the whole tenant.
    pub on_scope: Option<String>,
    /// `active` or `revoked` (an active key may have expired: see `expires_at`).
    pub status: String,
    /// Expiry.
    pub expires_at: Option<String>,
    /// Allowed addresses, a JSON array.
    pub ip_allowlist: String,
    /// Rate limit, as JSON.
    pub ratelimit: Option<String>,
    /// Usage limit, as JSON.
    pub usage_limit: Option<String>,
    /// When it was issued.
    pub created_at: String,
    /// The position of its `key.issued`.
    pub created_position: u64,
    /// Its last rotation.
    pub rotated_at: Option<String>,
    /// Until when the previous secret works.
    pub previous_valid_until: Option<String>,
    /// When it was revoked.
    pub revoked_at: Option<String>,
    /// The last recorded use.
    pub last_used_at: Option<String>,
    /// Valid uses recorded.
    pub uses: u64,
}

/// A key's status as a listing filters on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not revoked, not expired.
    Active,
    /// Revoked.
    Revoked,
    /// Not revoked, but past its expiry.
    Expired,
}

/// What a listing of keys keeps.
#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    /// Only keys of this owner.
    pub owner: Option<String>,
    /// Only keys in this status.
    pub status: Option<Status>,
    /// The time statuses are judged at, in the fixed-width timestamp form.
    pub now: String,
}

const COLUMNS: &str = "tenant, key_id, owner, name, preview, scopes, on_scope, status, expires_at, \
                       ip_allowlist, ratelimit, usage_limit, created_at, created_position, \
                       rotated_at, previous_valid_until, revoked_at, last_used_at, uses";

fn key_row(r: &AnyRow) -> Result<KeyRow, sqlx::Error> {
    let unsigned = |i: usize| -> Result<u64, sqlx::Error> {
        u64::try_from(r.try_get::<i64, _>(i)?).map_err(|e| sqlx::Error::Decode(Box::new(e)))
    };
    Ok(KeyRow {
        tenant: r.try_get(0)?,
        key_id: r.try_get(1)?,
        owner: r.try_get(2)?,
        name: r.try_get(3)?,
        preview: r.try_get(4)?,
        scopes: r.try_get(5)?,
        on_scope: r.try_get(6)?,
        status: r.try_get(7)?,
        expires_at: r.try_get(8)?,
        ip_allowlist: r.try_get(9)?,
        ratelimit: r.try_get(10)?,
        usage_limit: r.try_get(11)?,
        created_at: r.try_get(12)?,
        created_position: unsigned(13)?,
        rotated_at: r.try_get(14)?,
        previous_valid_until: r.try_get(15)?,
        revoked_at: r.try_get(16)?,
        last_used_at: r.try_get(17)?,
        uses: unsigned(18)?,
    })
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, ApplyError> {
    serde_json::to_string(v).map_err(|e| ApplyError(e.to_string()))
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A `key.*` event of a key stream, decoded; `None` for every other event.
fn key_event(event: &EventRecord) -> Result<Option<KeyEvent>, ApplyError> {
    if event.stream.aggregate() != custodian_domain::key::AGGREGATE
        || !event.event_type.as_str().starts_with("key.")
    {
        return Ok(None);
    }
    KeyEvent::decode(event.event_type.as_str(), event.schema, &event.data)
        .map(Some)
        .map_err(|e| ApplyError(e.to_string()))
}

/// What [`KeysView::apply`] does to a key's row, in memory; true when it changed it.
fn fold(
    row: &mut Option<KeyRow>,
    event: &EventRecord,
    decoded: KeyEvent,
) -> Result<bool, ApplyError> {
    let at = event.occurred_at.to_string();
    let Some(r) = row else {
        let KeyEvent::Issued {
            owner,
            name,
            scopes,
            on,
            expires_at,
            ip_allowlist,
            ratelimit,
            usage_limit,
            preview,
            ..
        } = decoded
        else {
            return Ok(false);
        };
        *row = Some(KeyRow {
            tenant: event.stream.tenant().to_owned(),
            key_id: event.stream.id().to_owned(),
            owner,
            name,
            preview,
            scopes: json(&scopes)?,
            on_scope: on.as_ref().map(json).transpose()?,
            status: "active".to_owned(),
            expires_at: expires_at.map(|e| e.to_string()),
            ip_allowlist: json(&ip_allowlist)?,
            ratelimit: ratelimit.as_ref().map(json).transpose()?,
            usage_limit: usage_limit.as_ref().map(json).transpose()?,
            created_at: at,
            created_position: event.position,
            rotated_at: None,
            previous_valid_until: None,
            revoked_at: None,
            last_used_at: None,
            uses: 0,
        });
        return Ok(true);
    };
    match decoded {
        KeyEvent::Issued { .. } => return Ok(false),
        KeyEvent::Updated {
            name,
            ratelimit,
            usage_limit,
            ip_allowlist,
        } => {
            if let Some(name) = name {
                r.name = name;
            }
            if let Some(l) = ratelimit {
                r.ratelimit = l.as_ref().map(json).transpose()?;
            }
            if let Some(u) = usage_limit {
                r.usage_limit = u.as_ref().map(json).transpose()?;
            }
            if let Some(ips) = ip_allowlist {
                r.ip_allowlist = json(&ips)?;
            }
        }
        KeyEvent::Rotated {
            preview,
            previous_valid_until,
            ..
        } => {
            r.preview = preview;
            r.rotated_at = Some(at);
            r.previous_valid_until = Some(previous_valid_until.to_string());
        }
        KeyEvent::Revoked {} => {
            if r.status != "active" {
                return Ok(false);
            }
            r.status = "revoked".to_owned();
            r.revoked_at = Some(at);
        }
        KeyEvent::Used {
            uses, last_used_at, ..
        } => {
            // As the statement does: the sum in a signed column, and the latest use.
            r.uses = u64::try_from(signed(r.uses).saturating_add(signed(uses))).unwrap_or(0);
            let last = last_used_at.to_string();
            if r.last_used_at.as_ref().is_none_or(|l| *l < last) {
                r.last_used_at = Some(last);
            }
        }
    }
    Ok(true)
}

#[async_trait]
impl Projection for KeysView {
    fn name(&self) -> &'static str {
        "keys"
    }

    fn version(&self) -> u32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["keys"]
    }

    fn create(&self, t: &Tables) -> Vec<String> {
        let keys = t.name("keys");
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {keys} (
                    tenant TEXT NOT NULL,
                    key_id TEXT NOT NULL,
                    owner TEXT NOT NULL,
                    name TEXT NOT NULL,
                    preview TEXT NOT NULL,
                    scopes TEXT NOT NULL,
                    on_scope TEXT NULL,
                    status TEXT NOT NULL,
                    expires_at TEXT NULL,
                    ip_allowlist TEXT NOT NULL,
                    ratelimit TEXT NULL,
                    usage_limit TEXT NULL,
                    created_at TEXT NOT NULL,
                    created_position BIGINT NOT NULL,
                    rotated_at TEXT NULL,
                    previous_valid_until TEXT NULL,
                    revoked_at TEXT NULL,
                    last_used_at TEXT NULL,
                    uses BIGINT NOT NULL,
                    PRIMARY KEY (tenant, key_id)
                )"
            ),
            format!("CREATE INDEX IF NOT EXISTS {keys}_by_owner ON {keys} (tenant, owner)"),
        ]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        t: &Tables,
        event: &EventRecord,
    ) -> Result<(), ApplyError> {
        let Some(decoded) = key_event(event)? else {
            return Ok(());
        };
        let table = t.name("keys");
        let tenant = event.stream.tenant();
        let id = event.stream.id();
        let at = event.occurred_at.to_string();
        match decoded {
            KeyEvent::Issued {
                owner,
                name,
                scopes,
                on,
                expires_at,
                ip_allowlist,
                ratelimit,
                usage_limit,
                preview,
                ..
            } => {
                sqlx::query(&format!(
                    "INSERT INTO {table} (tenant, key_id, owner, name, preview, scopes, on_scope, \
                     status, expires_at, ip_allowlist, ratelimit, usage_limit, created_at, \
                     created_position, uses) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 'active', $8, $9, $10, $11, $12, $13, 0) \
                     ON CONFLICT (tenant, key_id) DO NOTHING"
                ))
                .bind(tenant)
                .bind(id)
                .bind(owner)
                .bind(name)
                .bind(preview)
                .bind(json(&scopes)?)
                .bind(on.as_ref().map(json).transpose()?)
                .bind(expires_at.map(|e| e.to_string()))
                .bind(json(&ip_allowlist)?)
                .bind(ratelimit.as_ref().map(json).transpose()?)
                .bind(usage_limit.as_ref().map(json).transpose()?)
                .bind(at)
                .bind(signed(event.position))
                .execute(&mut *conn)
                .await?;
            }
            KeyEvent::Updated {
                name,
                ratelimit,
                usage_limit,
                ip_allowlist,
            } => {
                if let Some(name) = name {
                    sqlx::query(&format!(
                        "UPDATE {table} SET name = $1 WHERE tenant = $2 AND key_id = $3"
                    ))
                    .bind(name)
                    .bind(tenant)
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
                }
                if let Some(r) = ratelimit {
                    sqlx::query(&format!(
                        "UPDATE {table} SET ratelimit = $1 WHERE tenant = $2 AND key_id = $3"
                    ))
                    .bind(r.as_ref().map(json).transpose()?)
                    .bind(tenant)
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
                }
                if let Some(u) = usage_limit {
                    sqlx::query(&format!(
                        "UPDATE {table} SET usage_limit = $1 WHERE tenant = $2 AND key_id = $3"
                    ))
                    .bind(u.as_ref().map(json).transpose()?)
                    .bind(tenant)
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
                }
                if let Some(ips) = ip_allowlist {
                    sqlx::query(&format!(
                        "UPDATE {table} SET ip_allowlist = $1 WHERE tenant = $2 AND key_id = $3"
                    ))
                    .bind(json(&ips)?)
                    .bind(tenant)
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
                }
            }
            KeyEvent::Rotated {
                preview,
                previous_valid_until,
                ..
            } => {
                sqlx::query(&format!(
                    "UPDATE {table} SET preview = $1, rotated_at = $2, previous_valid_until = $3 \
                     WHERE tenant = $4 AND key_id = $5"
                ))
                .bind(preview)
                .bind(at)
                .bind(previous_valid_until.to_string())
                .bind(tenant)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            }
            KeyEvent::Revoked {} => {
                sqlx::query(&format!(
                    "UPDATE {table} SET status = 'revoked', revoked_at = $1 \
                     WHERE tenant = $2 AND key_id = $3 AND status = 'active'"
                ))
                .bind(at)
                .bind(tenant)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            }
            KeyEvent::Used {
                uses, last_used_at, ..
            } => {
                // Windows may be recorded out of order (at shutdown); keep the latest use.
                let last = last_used_at.to_string();
                sqlx::query(&format!(
                    "UPDATE {table} SET uses = uses + $1, last_used_at = CASE \
                     WHEN last_used_at IS NULL OR last_used_at < $2 THEN $3 ELSE last_used_at END \
                     WHERE tenant = $4 AND key_id = $5"
                ))
                .bind(signed(uses))
                .bind(last.clone())
                .bind(last)
                .bind(tenant)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            }
        }
        Ok(())
    }

    /// Folds the page's events per key in memory, starting from the rows stored for the keys it
    /// touches, and writes each changed key's final row with one multi-row upsert.
    async fn apply_batch(
        &self,
        conn: &mut AnyConnection,
        t: &Tables,
        events: &[EventRecord],
    ) -> Result<(), BatchApplyError> {
        let decoded = bulk::decode_page(events, key_event)?;
        if decoded.is_empty() {
            return Ok(());
        }
        let table = t.name("keys");
        // (tenant, key id) → (row, changed)
        let mut folded: BTreeMap<(String, String), (Option<KeyRow>, bool)> = BTreeMap::new();
        for (tenant, ids) in bulk::ids_by_tenant(&decoded) {
            for r in bulk::select_in(
                conn,
                &format!("SELECT {COLUMNS} FROM {table} WHERE tenant = $1 AND"),
                &[tenant],
                "key_id",
                &ids,
            )
            .await?
            {
                let row = key_row(&r)?;
                folded.insert((row.tenant.clone(), row.key_id.clone()), (Some(row), false));
            }
        }
        for (event, d) in decoded {
            let key = (
                event.stream.tenant().to_owned(),
                event.stream.id().to_owned(),
            );
            let (row, changed) = folded.entry(key).or_insert((None, false));
            *changed |= fold(row, event, d).map_err(|error| BatchApplyError::Event {
                position: event.position,
                error,
            })?;
        }
        let rows: Vec<Vec<Value>> = folded
            .into_values()
            .filter(|(_, changed)| *changed)
            .filter_map(|(row, _)| row)
            .map(|r| {
                vec![
                    Value::Text(r.tenant),
                    Value::Text(r.key_id),
                    Value::Text(r.owner),
                    Value::Text(r.name),
                    Value::Text(r.preview),
                    Value::Text(r.scopes),
                    Value::OptText(r.on_scope),
                    Value::Text(r.status),
                    Value::OptText(r.expires_at),
                    Value::Text(r.ip_allowlist),
                    Value::OptText(r.ratelimit),
                    Value::OptText(r.usage_limit),
                    Value::Text(r.created_at),
                    Value::Int(signed(r.created_position)),
                    Value::OptText(r.rotated_at),
                    Value::OptText(r.previous_valid_until),
                    Value::OptText(r.revoked_at),
                    Value::OptText(r.last_used_at),
                    Value::Int(signed(r.uses)),
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
            &format!("ON CONFLICT (tenant, key_id) DO UPDATE SET {updates}"),
        )
        .await?;
        Ok(())
    }
}

/// The key `key_id` of `tenant`.
pub async fn find_key(
    pool: &AnyPool,
    tables: &Tables,
    tenant: &str,
    key_id: &str,
) -> Result<Option<KeyRow>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM {} WHERE tenant = $1 AND key_id = $2",
        tables.name("keys")
    ))
    .bind(tenant)
    .bind(key_id)
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(key_row)
    .transpose()
}

/// Up to `limit` keys of `tenant` that pass `filter`, by id, after the id `after`.
pub async fn list_keys(
    pool: &AnyPool,
    tables: &Tables,
    tenant: &str,
    filter: &KeyFilter,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<KeyRow>, sqlx::Error> {
    let mut page = Page::new(
        format!(
            "SELECT {COLUMNS} FROM {} WHERE tenant = $1",
            tables.name("keys")
        ),
        vec![tenant],
    );
    if let Some(owner) = &filter.owner {
        page.and_with(owner, |p| format!("owner = {p}"));
    }
    match filter.status {
        None => {}
        Some(Status::Revoked) => page.and("status = 'revoked'"),
        Some(Status::Active) => page.and_with(&filter.now, |p| {
            format!("status = 'active' AND (expires_at IS NULL OR expires_at > {p})")
        }),
        Some(Status::Expired) => page.and_with(&filter.now, |p| {
            format!("status = 'active' AND expires_at IS NOT NULL AND expires_at <= {p}")
        }),
    }
    page.fetch(pool, "key_id", after, limit, key_row).await
}
