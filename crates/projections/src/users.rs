//! The `users` view: one row per user as their events have made them, and one row of credential
//! facts (never the credentials themselves) per user that is not deleted.
//!
//! Personal data is kept exactly as the events carry it: the email and name are [`Sealed`] strings
//! and are never decrypted here. Deleting a user blanks them (and the email's blind index) and
//! removes the user's credentials row, as the domain forgets them.
//!
//! Booleans are stored as `BIGINT` 0/1 and timestamps as their fixed-width text form, so one set of
//! SQL serves SQLite and PostgreSQL through sqlx's `Any` driver.
//!
//! [`Sealed`]: custodian_domain::secret::Sealed

use async_trait::async_trait;
use custodian_domain::user::{UserEvent, UserKind, UserStatus};
use custodian_domain::{DomainEvent, EventRecord};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row};

use crate::page::Page;
use crate::runtime::{ApplyError, Projection, Tables};

/// Folds `user.*` events of `{tenant}/user/{id}` streams into `users` and `credentials`.
#[derive(Debug, Default)]
pub struct UsersView;

/// One user, as the view holds them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserRow {
    /// The tenant the user belongs to.
    pub tenant: String,
    /// The user's id (`user_...`).
    pub user_id: String,
    /// `person`, `agent` or `service`.
    pub kind: String,
    /// `invited`, `active`, `disabled` or `deleted`.
    pub status: String,
    /// The sealed email, as the events carry it; `None` once deleted.
    pub email: Option<String>,
    /// The sealed display name; `None` once deleted.
    pub name: Option<String>,
    /// The email's blind index; `None` once deleted.
    pub email_index: Option<String>,
    /// Built-in roles.
    pub roles: Vec<String>,
    /// The version of the user's stream the row reflects (its last event).
    pub version: u64,
    /// When the user was invited or created.
    pub created_at: String,
    /// When the user's last event occurred.
    pub updated_at: String,
}

/// What is known about a user's credentials: flags and counters, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CredentialRow {
    /// The tenant the user belongs to.
    pub tenant: String,
    /// The user's id.
    pub user_id: String,
    /// Whether the user has a password.
    pub password_set: bool,
    /// Whether TOTP is required at login.
    pub mfa_enabled: bool,
    /// Unused recovery codes.
    pub recovery_codes_left: u32,
    /// Consecutive failed logins.
    pub failed_logins: u32,
    /// Logins are refused until then, if set (a lock in the past has expired).
    pub locked_until: Option<String>,
    /// When the user last logged in.
    pub last_login_at: Option<String>,
    /// When the password was last set, changed or reset (not rehashed).
    pub password_changed_at: Option<String>,
}

/// Which users [`list_users`] returns; `None` matches any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFilter {
    /// Only users with this status (`invited`, `active`, `disabled`, `deleted`).
    pub status: Option<String>,
    /// Only users of this kind (`person`, `agent`, `service`).
    pub kind: Option<String>,
}

const USER_COLUMNS: &str = "tenant, user_id, kind, status, email, name, email_index, roles, \
                            version, created_at, updated_at";

const CREDENTIAL_COLUMNS: &str = "tenant, user_id, password_set, mfa_enabled, \
                                  recovery_codes_left, failed_logins, locked_until, \
                                  last_login_at, password_changed_at";

fn decode_error(e: impl std::error::Error + Send + Sync + 'static) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(e))
}

fn user_row(r: &AnyRow) -> Result<UserRow, sqlx::Error> {
    let roles: String = r.try_get(7)?;
    Ok(UserRow {
        tenant: r.try_get(0)?,
        user_id: r.try_get(1)?,
        kind: r.try_get(2)?,
        status: r.try_get(3)?,
        email: r.try_get(4)?,
        name: r.try_get(5)?,
        email_index: r.try_get(6)?,
        roles: serde_json::from_str(&roles).map_err(decode_error)?,
        version: u64::try_from(r.try_get::<i64, _>(8)?).map_err(decode_error)?,
        created_at: r.try_get(9)?,
        updated_at: r.try_get(10)?,
    })
}

fn credential_row(r: &AnyRow) -> Result<CredentialRow, sqlx::Error> {
    let count = |i: usize| -> Result<u32, sqlx::Error> {
        u32::try_from(r.try_get::<i64, _>(i)?).map_err(decode_error)
    };
    Ok(CredentialRow {
        tenant: r.try_get(0)?,
        user_id: r.try_get(1)?,
        password_set: r.try_get::<i64, _>(2)? != 0,
        mfa_enabled: r.try_get::<i64, _>(3)? != 0,
        recovery_codes_left: count(4)?,
        failed_logins: count(5)?,
        locked_until: r.try_get(6)?,
        last_login_at: r.try_get(7)?,
        password_changed_at: r.try_get(8)?,
    })
}

#[async_trait]
impl Projection for UsersView {
    fn name(&self) -> &'static str {
        "users"
    }

    fn version(&self) -> u32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["users", "credentials"]
    }

    fn create(&self, t: &Tables) -> Vec<String> {
        let users = t.name("users");
        let credentials = t.name("credentials");
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {users} (
                    tenant TEXT NOT NULL,
                    user_id TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    status TEXT NOT NULL,
                    email TEXT NULL,
                    name TEXT NULL,
                    email_index TEXT NULL,
                    roles TEXT NOT NULL,
                    version BIGINT NOT NULL,
                    created_at TEXT NOT NULL,
                    updated_at TEXT NOT NULL,
                    PRIMARY KEY (tenant, user_id)
                )"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {users}_by_email_index ON {users} (tenant, email_index)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {credentials} (
                    tenant TEXT NOT NULL,
                    user_id TEXT NOT NULL,
                    password_set BIGINT NOT NULL,
                    mfa_enabled BIGINT NOT NULL,
                    recovery_codes_left BIGINT NOT NULL,
                    failed_logins BIGINT NOT NULL,
                    locked_until TEXT NULL,
                    last_login_at TEXT NULL,
                    password_changed_at TEXT NULL,
                    PRIMARY KEY (tenant, user_id)
                )"
            ),
        ]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        t: &Tables,
        event: &EventRecord,
    ) -> Result<(), ApplyError> {
        if event.stream.aggregate() != "user" || !event.event_type.as_str().starts_with("user.") {
            return Ok(());
        }
        let decoded = UserEvent::decode(event.event_type.as_str(), event.schema, &event.data)
            .map_err(|e| ApplyError(e.to_string()))?;
        let users = t.name("users");
        let credentials = t.name("credentials");
        let tenant = event.stream.tenant();
        let id = event.stream.id();
        let at = event.occurred_at.to_string();
        let version = i64::try_from(event.version).unwrap_or(i64::MAX);

        // A change to the credentials row, as `SET` assignments, and whether they use the event's
        // time as `$3`.
        let mut credential_change: Option<(&str, bool)> = None;
        // A new status for the user, if the event changes it.
        let mut status: Option<UserStatus> = None;

        match decoded {
            UserEvent::Invited {
                kind,
                email,
                name,
                email_index,
                roles,
                ..
            } => {
                return insert_user(
                    conn,
                    t,
                    event,
                    NewUser {
                        kind,
                        status: UserStatus::Invited,
                        email: email.0,
                        name: name.0,
                        email_index,
                        roles,
                    },
                )
                .await;
            }
            UserEvent::Created {
                kind,
                email,
                name,
                email_index,
                roles,
            } => {
                return insert_user(
                    conn,
                    t,
                    event,
                    NewUser {
                        kind,
                        status: UserStatus::Active,
                        email: email.0,
                        name: name.0,
                        email_index,
                        roles,
                    },
                )
                .await;
            }
            UserEvent::InvitationAccepted {} | UserEvent::Enabled {} => {
                status = Some(UserStatus::Active);
            }
            UserEvent::Disabled { .. } => status = Some(UserStatus::Disabled),
            UserEvent::ProfileUpdated {
                email,
                email_index,
                name,
            } => {
                sqlx::query(&format!(
                    "UPDATE {users} SET email = COALESCE($1, email), \
                     email_index = COALESCE($2, email_index), name = COALESCE($3, name), \
                     version = $4, updated_at = $5 WHERE tenant = $6 AND user_id = $7"
                ))
                .bind(email.map(|e| e.0))
                .bind(email_index)
                .bind(name.map(|n| n.0))
                .bind(version)
                .bind(at)
                .bind(tenant)
                .bind(id)
                .execute(&mut *conn)
                .await?;
                return Ok(());
            }
            UserEvent::Deleted {} => {
                sqlx::query(&format!(
                    "UPDATE {users} SET status = $1, email = NULL, name = NULL, \
                     email_index = NULL, roles = '[]', version = $2, updated_at = $3 \
                     WHERE tenant = $4 AND user_id = $5"
                ))
                .bind(UserStatus::Deleted.as_str())
                .bind(version)
                .bind(at)
                .bind(tenant)
                .bind(id)
                .execute(&mut *conn)
                .await?;
                sqlx::query(&format!(
                    "DELETE FROM {credentials} WHERE tenant = $1 AND user_id = $2"
                ))
                .bind(tenant)
                .bind(id)
                .execute(&mut *conn)
                .await?;
                return Ok(());
            }
            UserEvent::PasswordSet { .. } | UserEvent::PasswordChanged { .. } => {
                credential_change = Some(("password_set = 1, password_changed_at = $3", true));
            }
            UserEvent::PasswordReset { .. } => {
                credential_change = Some((
                    "password_set = 1, password_changed_at = $3, failed_logins = 0, \
                     locked_until = NULL",
                    true,
                ));
            }
            UserEvent::PasswordRehashed { .. } => {
                credential_change = Some(("password_set = 1", false));
            }
            UserEvent::PasswordResetIssued { .. }
            | UserEvent::MfaChallengeIssued { .. }
            | UserEvent::TotpEnrollmentStarted { .. } => {}
            UserEvent::LoggedIn { recovery_code, .. } => {
                credential_change = Some(if recovery_code.is_some() {
                    (
                        "failed_logins = 0, locked_until = NULL, last_login_at = $3, \
                         recovery_codes_left = CASE WHEN recovery_codes_left > 0 \
                         THEN recovery_codes_left - 1 ELSE 0 END",
                        true,
                    )
                } else {
                    (
                        "failed_logins = 0, locked_until = NULL, last_login_at = $3",
                        true,
                    )
                });
            }
            UserEvent::LoginFailed {
                failures,
                locked_until,
                ..
            } => {
                sqlx::query(&format!(
                    "UPDATE {credentials} SET failed_logins = $1, locked_until = $2 \
                     WHERE tenant = $3 AND user_id = $4"
                ))
                .bind(i64::from(failures))
                .bind(locked_until.map(|l| l.to_string()))
                .bind(tenant)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            }
            UserEvent::TotpEnabled { .. } => {
                credential_change = Some(("mfa_enabled = 1", false));
            }
            UserEvent::TotpDisabled { .. } => {
                credential_change = Some(("mfa_enabled = 0, recovery_codes_left = 0", false));
            }
            UserEvent::RecoveryCodesGenerated { codes, .. } => {
                sqlx::query(&format!(
                    "UPDATE {credentials} SET recovery_codes_left = $1 \
                     WHERE tenant = $2 AND user_id = $3"
                ))
                .bind(i64::try_from(codes.len()).unwrap_or(i64::MAX))
                .bind(tenant)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            }
        }

        if let Some((assignments, with_at)) = credential_change {
            let sql = format!(
                "UPDATE {credentials} SET {assignments} WHERE tenant = $1 AND user_id = $2"
            );
            let mut query = sqlx::query(&sql).bind(tenant).bind(id);
            if with_at {
                query = query.bind(at.clone());
            }
            query.execute(&mut *conn).await?;
        }
        sqlx::query(&format!(
            "UPDATE {users} SET status = COALESCE($1, status), version = $2, updated_at = $3 \
             WHERE tenant = $4 AND user_id = $5"
        ))
        .bind(status.map(|s| s.as_str()))
        .bind(version)
        .bind(at)
        .bind(tenant)
        .bind(id)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

struct NewUser {
    kind: UserKind,
    status: UserStatus,
    email: String,
    name: String,
    email_index: String,
    roles: Vec<String>,
}

/// Inserts a new user and their empty credentials row; a replayed creation changes nothing.
async fn insert_user(
    conn: &mut AnyConnection,
    t: &Tables,
    event: &EventRecord,
    user: NewUser,
) -> Result<(), ApplyError> {
    let tenant = event.stream.tenant();
    let id = event.stream.id();
    let at = event.occurred_at.to_string();
    let version = i64::try_from(event.version).unwrap_or(i64::MAX);
    let roles = serde_json::to_string(&user.roles).map_err(|e| ApplyError(e.to_string()))?;
    sqlx::query(&format!(
        "INSERT INTO {} ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) \
         ON CONFLICT (tenant, user_id) DO NOTHING",
        t.name("users")
    ))
    .bind(tenant)
    .bind(id)
    .bind(user.kind.as_str())
    .bind(user.status.as_str())
    .bind(user.email)
    .bind(user.name)
    .bind(user.email_index)
    .bind(roles)
    .bind(version)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    sqlx::query(&format!(
        "INSERT INTO {} (tenant, user_id, password_set, mfa_enabled, recovery_codes_left, \
         failed_logins) VALUES ($1, $2, 0, 0, 0, 0) ON CONFLICT (tenant, user_id) DO NOTHING",
        t.name("credentials")
    ))
    .bind(tenant)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The user `user_id` of `tenant`, deleted or not.
pub async fn find_user(
    pool: &AnyPool,
    tables: &Tables,
    tenant: &str,
    user_id: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {USER_COLUMNS} FROM {} WHERE tenant = $1 AND user_id = $2",
        tables.name("users")
    ))
    .bind(tenant)
    .bind(user_id)
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(user_row)
    .transpose()
}

/// The user of `tenant` whose email has the blind index `email_index`, unless deleted.
pub async fn find_by_email_index(
    pool: &AnyPool,
    tables: &Tables,
    tenant: &str,
    email_index: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {USER_COLUMNS} FROM {} WHERE tenant = $1 AND email_index = $2 \
         AND status <> 'deleted' ORDER BY user_id LIMIT 1",
        tables.name("users")
    ))
    .bind(tenant)
    .bind(email_index)
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(user_row)
    .transpose()
}

/// Up to `limit` users of `tenant` matching `filter`, by id, starting after the id `after` (the
/// last id of the previous page). Ids are time-sortable, so this is creation order.
pub async fn list_users(
    pool: &AnyPool,
    tables: &Tables,
    tenant: &str,
    filter: &UserFilter,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<UserRow>, sqlx::Error> {
    let mut page = Page::new(
        format!(
            "SELECT {USER_COLUMNS} FROM {} WHERE tenant = $1",
            tables.name("users")
        ),
        vec![tenant],
    );
    let conditions = [
        ("status =", filter.status.as_deref()),
        ("kind =", filter.kind.as_deref()),
    ];
    for (test, value) in conditions {
        if let Some(value) = value {
            page.and_with(value, |p| format!("{test} {p}"));
        }
    }
    page.fetch(pool, "user_id", after, limit, user_row).await
}

/// The credentials row of `user_id` in `tenant`; `None` for an unknown or deleted user.
pub async fn credentials(
    pool: &AnyPool,
    tables: &Tables,
    tenant: &str,
    user_id: &str,
) -> Result<Option<CredentialRow>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {CREDENTIAL_COLUMNS} FROM {} WHERE tenant = $1 AND user_id = $2",
        tables.name("credentials")
    ))
    .bind(tenant)
    .bind(user_id)
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(credential_row)
    .transpose()
}

/// Up to `limit` credentials rows of `tenant`, by user id, after the user id `after`. With
/// `locked_only`, only users whose lock lasts past `now` (a timestamp in its fixed-width form).
pub async fn list_credentials(
    pool: &AnyPool,
    tables: &Tables,
    tenant: &str,
    locked_only: bool,
    now: &str,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<CredentialRow>, sqlx::Error> {
    let mut page = Page::new(
        format!(
            "SELECT {CREDENTIAL_COLUMNS} FROM {} WHERE tenant = $1",
            tables.name("credentials")
        ),
        vec![tenant],
    );
    if locked_only {
        page.and_with(now, |p| {
            format!("locked_until IS NOT NULL AND locked_until > {p}")
        });
    }
    page.fetch(pool, "user_id", after, limit, credential_row)
        .await
}
