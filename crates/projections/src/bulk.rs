//! Multi-row statements for the views that apply a page of events at once: one `INSERT` of many
//! rows (with its `ON CONFLICT` clause) and one `SELECT .. IN (..)` of many keys, cut into chunks
//! that stay under the bind-parameter limits of SQLite (32,766) and PostgreSQL (65,535).

use std::collections::BTreeMap;

use custodian_domain::EventRecord;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use crate::runtime::{ApplyError, BatchApplyError};

/// Most bind parameters in one statement, under both databases' limits.
const MAX_PARAMETERS: usize = 30_000;
/// Most rows in one statement: beyond this a statement only gets longer to parse.
const MAX_ROWS: usize = 1_000;

/// One value bound into a multi-row statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    /// A `BIGINT`.
    Int(i64),
    /// A `TEXT`.
    Text(String),
    /// A `TEXT` that may be `NULL`.
    OptText(Option<String>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Self::Text(v.to_owned())
    }
}

impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Self {
        Self::OptText(v)
    }
}

fn rows_per_statement(columns: usize) -> usize {
    (MAX_PARAMETERS / columns.max(1)).clamp(1, MAX_ROWS)
}

/// `($1, $2), ($3, $4), ..`: `rows` tuples of `columns` placeholders.
fn placeholders(rows: usize, columns: usize) -> String {
    let mut sql = String::with_capacity(rows * columns * 6);
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..columns {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(r * columns + c + 1).to_string());
        }
        sql.push(')');
    }
    sql
}

fn bind<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    value: &'q Value,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    query = match value {
        Value::Int(v) => query.bind(*v),
        Value::Text(v) => query.bind(v.as_str()),
        Value::OptText(v) => query.bind(v.as_deref()),
    };
    query
}

/// Inserts `rows` (each one value per column of `columns`) into `table` with `conflict` (an
/// `ON CONFLICT ..` clause, or empty) after the values, in as few statements as the limits allow.
/// With `DO UPDATE`, no two rows may share a key (PostgreSQL refuses to update a row twice).
pub(crate) async fn insert(
    conn: &mut AnyConnection,
    table: &str,
    columns: &[&str],
    rows: &[Vec<Value>],
    conflict: &str,
) -> Result<(), sqlx::Error> {
    let names = columns.join(", ");
    for chunk in rows.chunks(rows_per_statement(columns.len())) {
        let sql = format!(
            "INSERT INTO {table} ({names}) VALUES {} {conflict}",
            placeholders(chunk.len(), columns.len())
        );
        let mut query = sqlx::query(&sql);
        for row in chunk {
            debug_assert_eq!(row.len(), columns.len());
            for value in row {
                query = bind(query, value);
            }
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The rows of `select` (a `SELECT .. FROM .. WHERE ..` that binds `fixed` as `$1`, `$2`, ..
/// and ends where `{key} IN (..)` follows) whose `key` is one of `keys`, in as few statements as
/// the limits allow.
pub(crate) async fn select_in(
    conn: &mut AnyConnection,
    select: &str,
    fixed: &[&str],
    key: &str,
    keys: &[&str],
) -> Result<Vec<AnyRow>, sqlx::Error> {
    let mut found = Vec::new();
    for chunk in keys.chunks(rows_per_statement(1) - fixed.len()) {
        let list = (1..=chunk.len())
            .map(|i| format!("${}", fixed.len() + i))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("{select} {key} IN ({list})");
        let mut query = sqlx::query(&sql);
        for k in fixed.iter().chain(chunk) {
            query = query.bind(*k);
        }
        found.extend(query.fetch_all(&mut *conn).await?);
    }
    Ok(found)
}

/// The events of a page that `decode` says concern the view, each with what it decoded; the first
/// event that cannot be decoded names its position.
pub(crate) fn decode_page<T>(
    events: &[EventRecord],
    decode: impl Fn(&EventRecord) -> Result<Option<T>, ApplyError>,
) -> Result<Vec<(&EventRecord, T)>, BatchApplyError> {
    let mut decoded = Vec::new();
    for event in events {
        match decode(event) {
            Ok(Some(d)) => decoded.push((event, d)),
            Ok(None) => {}
            Err(error) => {
                return Err(BatchApplyError::Event {
                    position: event.position,
                    error,
                });
            }
        }
    }
    Ok(decoded)
}

/// The ids of the streams a page's decoded events belong to, per tenant, sorted and without
/// repeats: what a view keyed by (tenant, id) loads before it folds the page.
pub(crate) fn ids_by_tenant<'a, T>(
    decoded: &[(&'a EventRecord, T)],
) -> BTreeMap<&'a str, Vec<&'a str>> {
    let mut by_tenant: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (event, _) in decoded {
        by_tenant
            .entry(event.stream.tenant())
            .or_default()
            .push(event.stream.id());
    }
    for ids in by_tenant.values_mut() {
        ids.sort_unstable();
        ids.dedup();
    }
    by_tenant
}
