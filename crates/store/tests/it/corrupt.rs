//! A stored row that cannot be read as an event record is reported with its position, and the
//! rows around it still read.

use custodian_store::{ExpectedVersion, StoreError, StoreOptions, open};
use custodian_testkit::stream;
use sqlx::Connection as _;

use crate::support::events;

fn corrupt_at(result: Result<Vec<custodian_domain::EventRecord>, StoreError>) -> u64 {
    match result {
        Err(StoreError::CorruptRecord { position, .. }) => position,
        other => panic!("expected a corrupt record, got {other:?}"),
    }
}

#[tokio::test]
async fn a_corrupt_sqlite_row_names_its_position_and_its_neighbours_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().join("custodian.db").display().to_string();
    let store = open(&location, StoreOptions::default()).await.unwrap();
    let name = stream("acme/user/u1");
    store
        .append(&name, ExpectedVersion::NoStream, events(4))
        .await
        .unwrap();
    store.close().await;
    drop(store);

    // Rewrite history behind the store's back, as a damaged or tampered file would.
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{location}"))
        .await
        .unwrap();
    for sql in [
        "DROP TRIGGER events_are_append_only_update",
        "UPDATE events SET data = 'not json' WHERE position = 2",
        "UPDATE events SET hash = x'0102' WHERE position = 3",
    ] {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();

    let store = open(
        &location,
        StoreOptions {
            read_only: true,
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(corrupt_at(store.read_all(1, 10).await), 2);
    assert_eq!(corrupt_at(store.read_stream(&name, 1, 10).await), 2);
    assert_eq!(corrupt_at(store.read_all(3, 10).await), 3);
    assert_eq!(corrupt_at(store.read_stream(&name, 3, 10).await), 3);
    let readable = store.read_all(4, 10).await.unwrap();
    assert_eq!(readable.len(), 1);
    assert_eq!(readable[0].position, 4);
    assert_eq!(store.read_all(1, 1).await.unwrap()[0].position, 1);
}
