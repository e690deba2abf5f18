//! A fresh PostgreSQL database per test.
//!
//! `CUSTODIAN_TEST_POSTGRES_URL` names the server (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). Each test gets a database named
//! `custodian_test_*`, a prefix CI relies on to drop what earlier runs left. Without a reachable
//! server the PostgreSQL tests are skipped with a note on stderr, except under `CI=true`, where that
//! is a failure.

use sqlx::Connection as _;

/// The server tests create their databases on.
pub fn admin_url() -> String {
    std::env::var("CUSTODIAN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// True when running in CI, where no backend may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Creates an empty database and returns its URL; `None` (skip) when PostgreSQL is unreachable
/// outside CI.
///
/// # Panics
/// In CI, when PostgreSQL is unreachable: a backend that cannot be tested there is a failure.
pub async fn fresh_database() -> Option<String> {
    let admin = admin_url();
    let mut conn = match sqlx::PgConnection::connect(&admin).await {
        Ok(c) => c,
        Err(e) if in_ci() => panic!("PostgreSQL at {admin} is required in CI: {e}"),
        Err(e) => {
            eprintln!("skipping a PostgreSQL test: {admin} is unreachable ({e})");
            return None;
        }
    };
    let name = format!("custodian_test_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
    let _ = conn.close().await;
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    Some(format!("{base}/{name}"))
}

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
