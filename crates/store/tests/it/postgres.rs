//! What only the PostgreSQL store promises: a log written by an earlier version migrates
//! unchanged, several processes share one database, and a writer survives losing its connection.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use custodian_domain::{ChainVerifier, EventRecord};
use custodian_store::{EventStore, ExpectedVersion, StoreError, StoreOptions};
use custodian_testkit::{Ledger, stream};
use sqlx::Connection as _;

use crate::support::events;

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

/// Writes `records` as the store before the `events_append` function did: one multi-row insert.
async fn insert_as_before(conn: &mut sqlx::PgConnection, records: &[EventRecord]) {
    let mut q = sqlx::QueryBuilder::new(
        "INSERT INTO events (position, id, stream, version, type, schema, tenant, actor_kind, \
         actor_id, occurred_at, correlation_id, causation_id, data, prev_hash, hash) ",
    );
    q.push_values(records, |mut b, r| {
        let data = custodian_domain::canonical_data(&r.data).unwrap();
        b.push_bind(r.position as i64)
            .push_bind(r.id)
            .push_bind(r.stream.as_str().to_owned())
            .push_bind(r.version as i64)
            .push_bind(r.event_type.as_str().to_owned())
            .push_bind(i64::from(r.schema))
            .push_bind(r.tenant.clone())
            .push_bind(r.actor.kind.as_str())
            .push_bind(r.actor.id.clone())
            .push_bind(r.occurred_at.to_string())
            .push_bind(r.correlation_id.clone())
            .push_bind(r.causation_id.clone())
            .push_bind(String::from_utf8(data).unwrap())
            .push_bind(r.prev_hash.0.to_vec())
            .push_bind(r.hash.0.to_vec());
    });
    q.build().execute(conn).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_written_before_the_append_function_opens_unchanged_and_grows() {
    let Some(f) = Ledger::postgres().await else {
        return;
    };
    // The schema as it was before the append function: the first three migrations.
    let mut before = sqlx::migrate!("./migrations/postgres");
    before.migrations = Cow::Owned(
        before
            .migrations
            .iter()
            .filter(|m| m.version < 4)
            .cloned()
            .collect(),
    );
    let mut conn = sqlx::PgConnection::connect(&f.location).await.unwrap();
    before.run(&mut conn).await.unwrap();
    // Its log: sealed records of several streams, written the way that version wrote them.
    let source = Ledger::sqlite();
    let writer = source.open().await;
    for (name, n) in [
        ("acme/user/u1", 3),
        ("acme/user/u2", 2),
        ("acme/user/u1", 1),
    ] {
        writer
            .append(&stream(name), ExpectedVersion::Any, events(n))
            .await
            .unwrap();
    }
    let old = all(&writer).await;
    insert_as_before(&mut conn, &old).await;

    let store = f.open().await;
    assert_eq!(all(&store).await, old, "every record reads back as written");
    assert_eq!(store.head().await.unwrap().hash, old[5].hash);
    // The versions are read from the migrated log, and the chain goes on from its head.
    let conflict = store
        .append(
            &stream("acme/user/u1"),
            ExpectedVersion::Exact(3),
            events(1),
        )
        .await;
    assert!(
        matches!(
            conflict,
            Err(StoreError::WrongExpectedVersion { actual: 4, .. })
        ),
        "{conflict:?}"
    );
    let o = store
        .append(
            &stream("acme/user/u1"),
            ExpectedVersion::Exact(4),
            events(2),
        )
        .await
        .unwrap();
    assert_eq!(
        (o.first_position, o.last_position, o.stream_version),
        (7, 8, 6)
    );
    let records = all(&store).await;
    assert_eq!(verify(&records), 8);
    assert_eq!(records[..6], old[..]);

    let rewrite = sqlx::query("UPDATE events SET data = data WHERE position = 1")
        .execute(&mut conn)
        .await;
    assert!(
        rewrite.is_err_and(|e| e.to_string().contains("append-only")),
        "the migrated log must still refuse rewrites"
    );
}

/// Appends one event to `name` with the version the task last saw, taking the version a conflict
/// reports and trying again, as a use case does; returns the acknowledged position.
async fn append_checked(store: &Arc<dyn EventStore>, name: &str, seen: &mut u64) -> u64 {
    loop {
        match store
            .append(&stream(name), ExpectedVersion::Exact(*seen), events(1))
            .await
        {
            Ok(o) => {
                *seen = o.stream_version;
                return o.first_position;
            }
            Err(StoreError::WrongExpectedVersion { actual, .. }) => *seen = actual,
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_racing_on_the_same_streams_keep_positions_and_versions_gapless() {
    const TASKS: usize = 8;
    const APPENDS: usize = 15;
    let Some(f) = Ledger::postgres().await else {
        return;
    };
    let a = f.open().await;
    let b = f.open().await;
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let store = if t % 2 == 0 { a.clone() } else { b.clone() };
        handles.push(tokio::spawn(async move {
            let shared = format!("acme/user/shared{}", t % 3);
            let own = format!("acme/user/own{t}");
            let (mut shared_seen, mut own_seen) = (0, 0);
            let mut positions = Vec::new();
            for _ in 0..APPENDS {
                positions.push(append_checked(&store, &shared, &mut shared_seen).await);
                positions.push(append_checked(&store, &own, &mut own_seen).await);
            }
            positions
        }));
    }
    let mut acknowledged = HashSet::new();
    for h in handles {
        for p in h.await.unwrap() {
            assert!(acknowledged.insert(p), "position {p} acknowledged twice");
        }
    }
    let n = (TASKS * APPENDS * 2) as u64;
    assert_eq!(acknowledged, (1..=n).collect::<HashSet<_>>());
    for store in [&a, &b] {
        let records = all(store).await;
        assert_eq!(verify(&records), n);
    }
    for name in (0..3)
        .map(|s| format!("acme/user/shared{s}"))
        .chain((0..TASKS).map(|t| format!("acme/user/own{t}")))
    {
        let versions: Vec<u64> = a
            .read_stream(&stream(&name), 1, 1000)
            .await
            .unwrap()
            .iter()
            .map(|r| r.version)
            .collect();
        assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_whose_connection_was_cut_appends_again_on_a_new_one() {
    let Some(f) = Ledger::postgres().await else {
        return;
    };
    let store = f.open_with(StoreOptions::default()).await;
    let s = stream("acme/user/u1");
    store
        .append(&s, ExpectedVersion::Any, events(2))
        .await
        .unwrap();

    let mut admin = sqlx::PgConnection::connect(&f.location).await.unwrap();
    // Waits (up to 5 s) until the backend has exited.
    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = $1",
    )
    .bind(custodian_store::postgres::WRITER_APPLICATION_NAME)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(cut, [true], "the writer's connection was found and cut");

    let o = store
        .append(&s, ExpectedVersion::Exact(2), events(1))
        .await
        .expect("the append goes through on a new connection");
    assert_eq!((o.first_position, o.stream_version), (3, 3));
    assert!(!o.deduplicated);
    assert_eq!(verify(&all(&store).await), 3);
}
