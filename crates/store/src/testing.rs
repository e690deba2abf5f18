//! Support for tests that need a real database: a fresh PostgreSQL database per test.
//!
//! `CUSTODIAN_TEST_POSTGRES_URL` names the server (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). Without a reachable server the PostgreSQL tests
//! are skipped with a note on stderr, except under `CI=true`, where that is a failure.

use sqlx::Connection;

/// The server tests create their databases on.
pub fn postgres_admin_url() -> String {
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
pub async fn fresh_postgres_database() -> Option<String> {
    let admin = postgres_admin_url();
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
