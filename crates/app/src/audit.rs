//! A tenant's audit trail: its events, oldest first, filtered by the principals and resources they
//! touch, their type and their time, each with its position and hashes so that it can be checked
//! against the log.
//!
//! Who sees what:
//! - the listing needs `audit:read` in the tenant;
//! - personal data sealed in an event (a user's email and name in `user.invited`, `user.created`
//!   and `user.profile_updated`) is opened only for a caller who also holds `user:read` on that
//!   user; for anyone else it is `null` and the entry says `withheld`;
//! - once the user's data key has been destroyed (erasure), nobody can open it: it is `null` and
//!   the entry says `erased`;
//! - sealed credentials (password hashes, TOTP seeds) are never opened: always `null`.

use std::collections::HashMap;

use custodian_domain::policy::{Permission, Resource, Target};
use custodian_domain::secret::Sealed;
use custodian_domain::{EventRecord, EventType};
use custodian_projections::audit::{self as audit_view, AuditFilter, AuditRow, TypeFilter};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::access::{Principal, authorize, holds};
use crate::auth::vault_error;
use crate::error::AppError;
use crate::validate::{check_len, parse_limit, parse_resource, parse_time};
use crate::{App, Security};

/// `GET .../audit` parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only events that touch this principal (a user, API key or service id): as the actor, or
    /// as what the event is about.
    pub principal: Option<String>,
    /// Only events that touch this resource, `type/id` (`project/p42`, `user/user_01...`,
    /// `group/admins`, `role/auditor`, `grant/grant_01...`).
    pub resource: Option<String>,
    /// Only events of this type (`grant.created`), or, when it ends in `.`, of every type that
    /// starts with it (`grant.`).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub event_type: Option<String>,
    /// Only events that occurred at or after this RFC 3339 time (inclusive).
    pub from: Option<String>,
    /// Only events that occurred before this RFC 3339 time (exclusive).
    pub to: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
}

/// Who caused an event.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditActor {
    /// `user`, `api_key`, `service` or `system`.
    pub kind: String,
    /// Its id.
    pub id: String,
}

/// One event of the trail, as the log holds it, with its sealed data opened where the caller may
/// see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEntry {
    /// Its position in the log.
    pub position: u64,
    /// Its id (UUIDv7).
    pub id: String,
    /// Its hash in the chain, hex.
    pub hash: String,
    /// The hash of the position before, hex.
    pub prev_hash: String,
    /// `{tenant}/{aggregate}/{id}`.
    pub stream: String,
    /// Its type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The schema version of `data`.
    pub schema: u32,
    /// When it occurred.
    pub occurred_at: String,
    /// Who caused it.
    pub actor: AuditActor,
    /// The request it came from.
    pub correlation_id: Option<String>,
    /// The request or event that caused it.
    pub causation_id: Option<String>,
    /// Its body: personal data opened, or `null` where `withheld` or `erased`; sealed credentials
    /// always `null`.
    #[schema(value_type = Object)]
    pub data: Value,
    /// The event carries personal data whose data key was destroyed: it is erased for good.
    pub erased: bool,
    /// The event carries personal data the caller may not read (it needs `user:read` on the user).
    pub withheld: bool,
}

/// A page of the trail, oldest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditPage {
    /// The events of this page.
    pub items: Vec<AuditEntry>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
    /// The log position the views had applied when the page was read.
    pub position: u64,
}

/// The fields of an event type's `data` that hold personal data sealed under the user's key.
const PERSONAL: &[(&str, &[&str])] = &[
    ("user.invited", &["email", "name"]),
    ("user.created", &["email", "name"]),
    ("user.profile_updated", &["email", "name"]),
];

/// The fields of an event type's `data` that the log keeps in the clear but that are a person's:
/// shown, like the sealed ones, only to a caller who may read that user, and never once the user is
/// erased.
const CLEAR_PERSONAL: &[(&str, &[&str])] = &[
    ("user.invited", &["email_index"]),
    ("user.created", &["email_index"]),
    ("user.profile_updated", &["email_index"]),
    ("user.logged_in", &["ip"]),
    ("user.login_failed", &["ip"]),
    ("user.disabled", &["reason"]),
    ("session.started", &["ip", "user_agent"]),
    ("decision.recorded", &["ip"]),
];

/// The user whose personal data `r` holds, with its sealed and clear personal fields.
fn personal_fields(
    r: &EventRecord,
) -> Option<(String, &'static [&'static str], &'static [&'static str])> {
    let t = r.event_type.as_str();
    let user = match t {
        // Only a user has personal data (a decision's principal may be an API key).
        "session.started" | "decision.recorded" => {
            let field = if t == "session.started" {
                "user_id"
            } else {
                "principal"
            };
            let user = r.data.get(field)?.as_str()?;
            user.starts_with("user_").then(|| user.to_owned())?
        }
        _ if r.stream.aggregate() == "user" => r.stream.id().to_owned(),
        _ => return None,
    };
    let sealed = if r.stream.aggregate() == "user" {
        fields(PERSONAL, t)
    } else {
        &[]
    };
    let clear = fields(CLEAR_PERSONAL, t);
    let present = |f: &&str| r.data.get(*f).is_some_and(|v| !v.is_null());
    (sealed.iter().any(present) || clear.iter().any(present)).then_some((user, sealed, clear))
}

/// The fields of an event type's `data` that hold a sealed credential, never shown.
const CREDENTIALS: &[(&str, &[&str])] = &[
    ("user.password_set", &["credential"]),
    ("user.password_changed", &["credential"]),
    ("user.password_reset", &["credential"]),
    ("user.password_rehashed", &["credential"]),
    ("user.totp_enrollment_started", &["secret"]),
];

fn fields(table: &[(&str, &'static [&'static str])], event_type: &str) -> &'static [&'static str] {
    table
        .iter()
        .find(|(t, _)| *t == event_type)
        .map_or(&[], |(_, f)| *f)
}

/// A page of `tenant`'s events, oldest first, that pass the query's filters. Needs `audit:read`.
pub async fn list(
    app: &App,
    principal: &Principal,
    tenant: &str,
    q: &AuditQuery,
) -> Result<AuditPage, AppError> {
    authorize(app, principal, tenant, "audit:read", Target::Tenant)?;
    let filter = filter(q)?;
    let limit = parse_limit(q.limit.as_deref())?;
    let after = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(
            c.trim()
                .parse::<u64>()
                .ok()
                .filter(|p| *p > 0 && i64::try_from(*p).is_ok())
                .ok_or_else(|| AppError::invalid("cursor is not a cursor this listing returned"))?,
        ),
    };
    let position = app.projections.applied_position();
    let tables = app.tables("audit")?;
    let mut rows =
        audit_view::list_events(app.db.pool(), &tables, tenant, &filter, after, limit + 1).await?;
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|r| r.position.to_string())
    } else {
        None
    };
    let records = read_records(app, tenant, &rows).await?;
    let items = entries(app, principal, tenant, records).await?;
    Ok(AuditPage {
        items,
        next_cursor,
        position,
    })
}

/// The view's filter from the query, each bad value named.
fn filter(q: &AuditQuery) -> Result<AuditFilter, AppError> {
    let principal = q
        .principal
        .as_deref()
        .map(|p| {
            check_len("principal", p, 1, 200)?;
            if p.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(AppError::invalid(
                    "principal must be a principal's id, e.g. user_01jd..., without spaces",
                ));
            }
            Ok(p.to_owned())
        })
        .transpose()?;
    let resource = q
        .resource
        .as_deref()
        .map(|r| parse_resource("resource", r).map(|r: Resource| r.to_string()))
        .transpose()?;
    let event_type = q.event_type.as_deref().map(type_filter).transpose()?;
    let from = parse_time("from", q.from.as_deref())?;
    let to = parse_time("to", q.to.as_deref())?;
    if let (Some(from), Some(to)) = (from, to)
        && from > to
    {
        return Err(AppError::invalid(format!(
            "from ({from}) must not be after to ({to})"
        )));
    }
    Ok(AuditFilter {
        principal,
        resource,
        event_type,
        from: from.map(|t| t.to_string()),
        to: to.map(|t| t.to_string()),
    })
}

fn type_filter(t: &str) -> Result<TypeFilter, AppError> {
    let bad = || {
        AppError::invalid(format!(
            "type: {t:.64?} is neither an event type (grant.created) nor a prefix of one ending in `.` (grant.)"
        ))
    };
    match t.strip_suffix('.') {
        Some(prefix) => EventType::parse(&format!("{prefix}.x"))
            .map(|_| TypeFilter::Prefix(t.to_owned()))
            .map_err(|_| bad()),
        None => EventType::parse(t)
            .map(|_| TypeFilter::Exact(t.to_owned()))
            .map_err(|_| bad()),
    }
}

/// The records at the rows' positions, read from the log in runs of consecutive positions.
async fn read_records(
    app: &App,
    tenant: &str,
    rows: &[AuditRow],
) -> Result<Vec<EventRecord>, AppError> {
    let mut records = Vec::with_capacity(rows.len());
    let mut i = 0;
    while let Some(first) = rows.get(i) {
        let mut run = 1;
        while rows
            .get(i + run)
            .is_some_and(|r| r.position == first.position + run as u64)
        {
            run += 1;
        }
        let read = app.store.read_all(first.position, run).await?;
        for (offset, record) in read.into_iter().enumerate() {
            if record.position != first.position + offset as u64 || record.tenant != tenant {
                return Err(AppError::internal(format!(
                    "the audit view names position {} of {tenant}, but the log holds another event there",
                    first.position + offset as u64
                )));
            }
            records.push(record);
        }
        i += run;
    }
    if records.len() != rows.len() {
        return Err(AppError::internal(
            "the audit view names positions the log does not hold",
        ));
    }
    Ok(records)
}

/// The entries of `records`, personal data opened where `principal` may see it.
async fn entries(
    app: &App,
    principal: &Principal,
    tenant: &str,
    records: Vec<EventRecord>,
) -> Result<Vec<AuditEntry>, AppError> {
    let mut subjects: Vec<String> = records
        .iter()
        .filter_map(|r| personal_fields(r).map(|(user, _, _)| user))
        .collect();
    subjects.sort();
    subjects.dedup();
    let keys = if subjects.is_empty() {
        HashMap::new()
    } else {
        app.security
            .vault
            .get_many(&subjects)
            .await
            .map_err(vault_error)?
    };
    let read_user = Permission::parse("user:read").map_err(AppError::Internal)?;
    let mut may_see: HashMap<String, bool> = HashMap::new();
    let mut items = Vec::with_capacity(records.len());
    for r in records {
        let personal = personal_fields(&r);
        let mut data = r.data;
        let mut erased = false;
        let mut withheld = false;
        for field in fields(CREDENTIALS, r.event_type.as_str()) {
            if let Some(v) = data.get_mut(*field) {
                *v = Value::Null;
            }
        }
        if let Some((user_id, sealed, clear)) = personal {
            let user_id = user_id.as_str();
            let visible = match may_see.get(user_id) {
                Some(v) => *v,
                None => {
                    let resource = Resource {
                        resource_type: "user".to_owned(),
                        id: user_id.to_owned(),
                    };
                    let v = holds(
                        app,
                        principal,
                        tenant,
                        &read_user,
                        Target::Resource(&resource),
                    )?;
                    may_see.insert(user_id.to_owned(), v);
                    v
                }
            };
            let key = keys.get(user_id);
            erased = key.is_none();
            withheld = !erased && !visible;
            for field in sealed {
                let Some(v) = data.get_mut(*field) else {
                    continue;
                };
                *v = match (key, visible, v.as_str()) {
                    (Some(key), true, Some(sealed)) => Value::String(Security::open_text(
                        key,
                        &Sealed(sealed.to_owned()),
                        user_id,
                    )?),
                    _ => Value::Null,
                };
            }
            if erased || withheld {
                for field in clear {
                    if let Some(v) = data.get_mut(*field) {
                        *v = Value::Null;
                    }
                }
            }
        }
        items.push(AuditEntry {
            position: r.position,
            id: r.id.to_string(),
            hash: r.hash.to_hex(),
            prev_hash: r.prev_hash.to_hex(),
            stream: r.stream.to_string(),
            event_type: r.event_type.to_string(),
            schema: r.schema,
            occurred_at: r.occurred_at.to_string(),
            actor: AuditActor {
                kind: r.actor.kind.as_str().to_owned(),
                id: r.actor.id,
            },
            correlation_id: r.correlation_id,
            causation_id: r.causation_id,
            data,
            erased,
            withheld,
        });
    }
    Ok(items)
}
