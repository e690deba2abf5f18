//! What only the SQLite backend has: its schema's migrations, its writer thread, and a second
//! process (a command line) appending to the same file while a server runs.

use std::sync::Arc;
use std::time::Duration;

use custodian_domain::{ChainVerifier, EventHash, EventRecord, StreamName};
use custodian_store::{EventStore, ExpectedVersion, StoreError};
use custodian_testkit::{Ledger, stream};
use sqlx::{Connection as _, SqliteConnection};

use crate::support::{event, events};

async fn all(store: &Arc<dyn EventStore>) -> Vec<EventRecord> {
    store.read_all(1, usize::MAX >> 2).await.unwrap()
}

fn verify(records: &[EventRecord]) -> u64 {
    let mut v = ChainVerifier::new();
    for r in records {
        v.push(r).unwrap_or_else(|e| panic!("chain broken: {e}"));
    }
    v.head().0
}

async fn connect(f: &Ledger) -> SqliteConnection {
    SqliteConnection::connect_with(
        &sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&f.location)
            .busy_timeout(Duration::from_secs(30)),
    )
    .await
    .unwrap()
}

/// Writes `records` as the writer before the stream keys did: the old columns only.
async fn insert_old_style(conn: &mut SqliteConnection, records: &[EventRecord]) {
    for r in records {
        sqlx::query(
            "INSERT INTO events (position, id, stream, version, type, schema, tenant, actor_kind, \
             actor_id, occurred_at, correlation_id, causation_id, data, prev_hash, hash) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(r.position as i64)
        .bind(r.id)
        .bind(r.stream.as_str())
        .bind(r.version as i64)
        .bind(r.event_type.as_str())
        .bind(i64::from(r.schema))
        .bind(r.tenant.as_str())
        .bind(r.actor.kind.as_str())
        .bind(r.actor.id.as_str())
        .bind(r.occurred_at.to_string())
        .bind(r.correlation_id.as_deref())
        .bind(r.causation_id.as_deref())
        .bind(String::from_utf8(custodian_domain::canonical_data(&r.data).unwrap()).unwrap())
        .bind(&r.prev_hash.0[..])
        .bind(&r.hash.0[..])
        .execute(&mut *conn)
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn a_log_written_under_the_old_schema_keeps_its_hashes_and_continues_its_chain() {
    let f = Ledger::sqlite();
    // The schema as it stood before stream keys: the first three migrations, applied as a server
    // of that time applied them.
    let old = tempfile::tempdir().unwrap();
    let migrations = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    for entry in std::fs::read_dir(&migrations).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if ["0001_", "0002_", "0003_"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            std::fs::copy(&path, old.path().join(&name)).unwrap();
        }
    }
    let mut conn = SqliteConnection::connect_with(
        &sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&f.location)
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal),
    )
    .await
    .unwrap();
    let migrator = sqlx::migrate::Migrator::new(old.path()).await.unwrap();
    assert_eq!(migrator.iter().count(), 3);
    migrator.run(&mut conn).await.unwrap();

    // Seven events over three streams, interleaved, sealed as the old writer sealed them.
    let names = ["acme/user/u1", "acme/user/u2", "_system/tenant/tnt_1"];
    let mut records = Vec::new();
    let mut versions = [0_u64; 3];
    let mut prev = EventHash::ZERO;
    for position in 1..=7_u64 {
        let s = (position as usize - 1) % 3;
        versions[s] += 1;
        let record = EventRecord::seal(
            position,
            StreamName::parse(names[s]).unwrap(),
            versions[s],
            prev,
            event(serde_json::json!({ "n": position, "text": "ünïcode" })),
        )
        .unwrap();
        prev = record.hash;
        records.push(record);
    }
    insert_old_style(&mut conn, &records).await;
    conn.close().await.unwrap();

    let store = f.open().await;
    let read = all(&store).await;
    assert_eq!(read, records, "every record reads back as it was written");
    for r in &read {
        assert_eq!(r.compute_hash().unwrap(), r.hash, "position {}", r.position);
    }
    let u1 = store
        .read_stream(&stream("acme/user/u1"), 1, 100)
        .await
        .unwrap();
    assert_eq!(u1.iter().map(|r| r.position).collect::<Vec<_>>(), [1, 4, 7]);

    // The chain goes on from the old head, and each stream from its old version.
    let o = store
        .append(
            &stream("acme/user/u1"),
            ExpectedVersion::Exact(3),
            events(2),
        )
        .await
        .unwrap();
    assert_eq!((o.first_position, o.stream_version), (8, 5));
    let refused = store
        .append(
            &stream("acme/user/u2"),
            ExpectedVersion::Exact(1),
            events(1),
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(StoreError::WrongExpectedVersion { actual: 2, .. })
        ),
        "{refused:?}"
    );
    // An old event retried is recognised as already stored.
    let retried = store
        .append(
            &stream("acme/user/u1"),
            ExpectedVersion::Any,
            vec![custodian_domain::NewEvent {
                id: records[0].id,
                event_type: records[0].event_type.clone(),
                schema: records[0].schema,
                actor: records[0].actor.clone(),
                occurred_at: records[0].occurred_at,
                correlation_id: records[0].correlation_id.clone(),
                causation_id: records[0].causation_id.clone(),
                data: records[0].data.clone(),
            }],
        )
        .await
        .unwrap();
    assert!(retried.deduplicated);
    assert_eq!(retried.first_position, 1);

    let read = all(&store).await;
    assert_eq!(verify(&read), 9);
    assert_eq!(read[7].prev_hash, records[6].hash);
    let u1 = store
        .read_stream(&stream("acme/user/u1"), 4, 100)
        .await
        .unwrap();
    assert_eq!(
        u1.iter()
            .map(|r| (r.position, r.version))
            .collect::<Vec<_>>(),
        [(8, 4), (9, 5)]
    );
    store.close().await;

    // History stays append-only after the migration.
    let mut conn = connect(&f).await;
    for sql in [
        "UPDATE events SET data = '{}' WHERE position = 1",
        "DELETE FROM events WHERE position = 9",
        "UPDATE streams SET name = 'acme/user/x' WHERE name = 'acme/user/u1'",
        "DELETE FROM streams",
    ] {
        let refused = sqlx::query(sql).execute(&mut conn).await;
        assert!(refused.is_err(), "{sql} was allowed");
    }
}

/// The `(stream_key, version)` index is what keeps a stream's versions unique, so a row without a
/// key (which that index cannot see) is refused by the database itself.
#[tokio::test]
async fn a_row_written_around_the_store_without_a_stream_key_is_refused() {
    let f = Ledger::sqlite();
    let store = f.open().await;
    store
        .append(&stream("acme/user/u1"), ExpectedVersion::Any, events(1))
        .await
        .unwrap();
    let mut conn = connect(&f).await;
    let keyless = "INSERT INTO events (position, id, stream, version, type, schema, tenant, \
         actor_kind, actor_id, occurred_at, correlation_id, causation_id, data, prev_hash, hash) \
         SELECT position + 1, randomblob(16), stream, version, type, schema, tenant, actor_kind, \
         actor_id, occurred_at, correlation_id, causation_id, data, prev_hash, hash \
         FROM events WHERE position = 1";
    let refused = sqlx::query(keyless).execute(&mut conn).await;
    assert!(
        refused.is_err(),
        "a keyless duplicate of version 1 was stored"
    );
    let keyed = keyless
        .replace(", hash) ", ", hash, stream_key) ")
        .replace("prev_hash, hash FROM", "prev_hash, hash, stream_key FROM");
    let refused = sqlx::query(&keyed).execute(&mut conn).await;
    assert!(
        refused.is_err(),
        "a second version 1 of the stream was stored"
    );
    assert_eq!(all(&store).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_appending_to_the_file_is_seen_by_the_writer() {
    let f = Ledger::sqlite();
    let server = f.open().await;
    server
        .append(&stream("acme/user/u1"), ExpectedVersion::Any, events(2))
        .await
        .unwrap();
    server
        .append(&stream("acme/user/u2"), ExpectedVersion::Any, events(1))
        .await
        .unwrap();

    // A command line appends to the server's streams and starts a new one while the server runs.
    let cli = f.open().await;
    cli.append(
        &stream("acme/user/u1"),
        ExpectedVersion::Exact(2),
        events(1),
    )
    .await
    .unwrap();
    cli.append(
        &stream("acme/user/u3"),
        ExpectedVersion::NoStream,
        events(2),
    )
    .await
    .unwrap();
    cli.close().await;

    // The server's writer forgets the versions it remembered and reads them again.
    let stale = server
        .append(
            &stream("acme/user/u1"),
            ExpectedVersion::Exact(2),
            events(1),
        )
        .await;
    assert!(
        matches!(
            stale,
            Err(StoreError::WrongExpectedVersion { actual: 3, .. })
        ),
        "{stale:?}"
    );
    let o = server
        .append(
            &stream("acme/user/u1"),
            ExpectedVersion::Exact(3),
            events(1),
        )
        .await
        .unwrap();
    assert_eq!((o.first_position, o.stream_version), (7, 4));
    let o = server
        .append(
            &stream("acme/user/u3"),
            ExpectedVersion::Exact(2),
            events(1),
        )
        .await
        .unwrap();
    assert_eq!((o.first_position, o.stream_version), (8, 3));
    let o = server
        .append(
            &stream("acme/user/u2"),
            ExpectedVersion::Exact(1),
            events(1),
        )
        .await
        .unwrap();
    assert_eq!((o.first_position, o.stream_version), (9, 2));

    let records = all(&server).await;
    assert_eq!(verify(&records), 9);
    let u3 = server
        .read_stream(&stream("acme/user/u3"), 1, 100)
        .await
        .unwrap();
    assert_eq!(u3.iter().map(|r| r.position).collect::<Vec<_>>(), [5, 6, 8]);
}

#[tokio::test]
async fn close_waits_for_appends_queued_behind_another_process_lock() {
    let f = Ledger::sqlite();
    let store = f.open().await;
    // Another process holds the write lock, so the writer's first commit waits for it.
    let mut cli = connect(&f).await;
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut cli)
        .await
        .unwrap();

    let mut appends = Vec::new();
    for t in 0..32 {
        let store = store.clone();
        appends.push(tokio::spawn(async move {
            store
                .append(
                    &stream(&format!("acme/user/u{t}")),
                    ExpectedVersion::Any,
                    events(1),
                )
                .await
        }));
    }
    // On this single-threaded runtime, one turn lets every append reach the writer's queue.
    tokio::task::yield_now().await;
    let closing = {
        let store = store.clone();
        tokio::spawn(async move { store.close().await })
    };
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(
        !closing.is_finished(),
        "close returned while appends it had taken were waiting for the lock"
    );
    sqlx::query("ROLLBACK").execute(&mut cli).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), closing)
        .await
        .expect("close finished once the lock was free")
        .unwrap();

    let mut positions = Vec::new();
    for a in appends {
        positions.push(a.await.unwrap().unwrap().first_position);
    }
    positions.sort_unstable();
    assert_eq!(positions, (1..=32).collect::<Vec<_>>());
    let after = store
        .append(&stream("acme/user/x"), ExpectedVersion::Any, events(1))
        .await;
    assert!(matches!(after, Err(StoreError::Closed)), "{after:?}");
    drop(store);
    assert_eq!(verify(&all(&f.open().await).await), 32);
}

#[tokio::test]
async fn the_writer_commits_in_wal_mode_with_full_synchronous() {
    let f = Ledger::sqlite();
    let store = f.open().await;
    store
        .append(&stream("acme/user/u1"), ExpectedVersion::Any, events(1))
        .await
        .unwrap();
    // NORMAL (1) in WAL mode may lose the last commits on a power loss: acknowledged appends.
    let (journal, synchronous) =
        custodian_store::sqlite::writer_durability(std::path::Path::new(&f.location)).unwrap();
    assert_eq!(journal, "wal");
    assert_eq!(synchronous, 2, "PRAGMA synchronous must be FULL (2)");
}
