//! A fresh PostgreSQL database per test.
//!
//! `CUSTODIAN_TEST_POSTGRES_URL` names the server (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). Each test gets a database named
//! `custodian_test_*`, a prefix CI relies on to drop what earlier runs left. Without a reachable
//! server the PostgreSQL tests are skipped with a note on stderr, except under `CI=true`, where that
//! is a failure.

use sqlx::Connection as _;

// The one implementation stays in `custodian_store::testing` while unit tests of the application
// layer (`crates/app/src/auth`) call it there; it moves here once they call this module.
pub use custodian_store::testing::{
    fresh_postgres_database as fresh_database, in_ci, postgres_admin_url as admin_url,
};

/// Drops the database at `url`, made by [`fresh_database`]; benchmarks do, so that a run leaves
/// nothing behind.
///
/// # Errors
/// When the server is unreachable or refuses the drop.
pub async fn drop_database(url: &str) -> Result<(), sqlx::Error> {
    let name = url.rsplit_once('/').map_or("", |(_, name)| name);
    let mut conn = sqlx::PgConnection::connect(&admin_url()).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    conn.close().await
}
