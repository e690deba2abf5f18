//! The views' connection pool never hands back a connection that still holds a transaction.

use custodian_projections::ViewDb;
use sqlx::Connection as _;

/// SQLite ends a transaction on its own after some errors (a full disk among them) without sqlx
/// noticing. Reusing that connection would nest the next transaction under a savepoint whose
/// rollback leaves a write transaction open, holding the write lock against every other writer
/// until the process ends: the pool must close such a connection instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_transaction_sqlite_ended_never_keeps_the_write_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("views.db");
    let db = ViewDb::open(path.to_str().unwrap()).await.unwrap();
    sqlx::query("CREATE TABLE t (x INTEGER)")
        .execute(db.pool())
        .await
        .unwrap();
    {
        let mut tx = db.pool().begin().await.unwrap();
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut *tx)
            .await
            .unwrap();
        // The transaction ends behind sqlx's back, as SQLite does after SQLITE_FULL.
        sqlx::query("ROLLBACK").execute(&mut *tx).await.unwrap();
    }
    // Failed writes on whichever connections the pool hands out next.
    for _ in 0..4 {
        let mut tx = db.pool().begin().await.unwrap();
        sqlx::query("INSERT INTO t VALUES (2)")
            .execute(&mut *tx)
            .await
            .unwrap();
        drop(tx);
    }
    // Another writer (the log's, say) still gets the write lock.
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query("PRAGMA busy_timeout = 5000")
        .execute(&mut other)
        .await
        .unwrap();
    sqlx::query("INSERT INTO t VALUES (3)")
        .execute(&mut other)
        .await
        .expect("no pooled connection keeps the write lock");
    let rows: Vec<i64> = sqlx::query_scalar("SELECT x FROM t")
        .fetch_all(&mut other)
        .await
        .unwrap();
    assert_eq!(rows, vec![3], "no rolled-back write survived");
}
