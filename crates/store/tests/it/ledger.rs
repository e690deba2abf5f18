//! Finding out whether a ledger exists at a location, without creating one.

use custodian_store::{StoreOptions, ledger_exists, open};

#[tokio::test]
async fn a_missing_or_foreign_sqlite_file_is_no_ledger_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("data").join("custodian.db");
    assert!(!ledger_exists(&missing.display().to_string()).await.unwrap());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "looking created something"
    );

    let foreign = dir.path().join("other.db");
    std::fs::write(&foreign, b"").unwrap();
    assert!(!ledger_exists(&foreign.display().to_string()).await.unwrap());

    let location = dir.path().join("custodian.db").display().to_string();
    open(&location, StoreOptions::default())
        .await
        .unwrap()
        .close()
        .await;
    assert!(ledger_exists(&location).await.unwrap());
    assert!(
        ledger_exists(&format!("sqlite://{location}"))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_postgres_database_is_a_ledger_once_it_has_the_log() {
    let Some(url) = custodian_testkit::postgres::fresh_database().await else {
        return;
    };
    assert!(!ledger_exists(&url).await.unwrap(), "an empty database");
    let base = url.rsplit_once('/').unwrap().0;
    let absent = format!(
        "{base}/custodian_test_absent_{}",
        uuid::Uuid::now_v7().simple()
    );
    assert!(!ledger_exists(&absent).await.unwrap(), "no such database");
    open(&url, StoreOptions::default())
        .await
        .unwrap()
        .close()
        .await;
    assert!(ledger_exists(&url).await.unwrap());
}
