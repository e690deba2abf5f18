//! The conformance suite: every backend must pass every test here.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use custodian_domain::{ChainVerifier, EventRecord};
use custodian_store::{EventStore, ExpectedVersion, StoreError, StoreOptions};
use custodian_testkit::{Ledger, stream};
use futures::StreamExt;
use tokio::sync::Barrier;

use crate::support::{event, events};

custodian_testkit::on_every_backend!(
    appends_get_gapless_positions_and_a_linked_chain,
    reads_start_at_any_position_and_respect_the_limit,
    stream_reads_return_one_stream_in_version_order,
    expected_version_is_enforced_and_a_mismatch_writes_nothing,
    multi_event_appends_are_all_or_nothing,
    a_retry_with_the_same_ids_is_idempotent,
    bad_appends_are_typed_errors_and_write_nothing,
    follow_delivers_every_event_once_across_catch_up_and_live,
    racing_exact_appends_have_exactly_one_winner_per_version,
    concurrent_appends_to_distinct_streams_stay_gapless,
    the_log_survives_reopening_and_continues_the_chain,
    close_finishes_appends_already_taken,
    another_process_append_is_seen_by_the_next_version_check,
);

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

async fn appends_get_gapless_positions_and_a_linked_chain(f: Ledger) {
    let store = f.open().await;
    assert_eq!(store.head().await.unwrap().position, 0);
    let sent = events(3);
    let a = store
        .append(&stream("acme/user/u1"), ExpectedVersion::Any, sent.clone())
        .await
        .unwrap();
    let b = store
        .append(&stream("acme/user/u2"), ExpectedVersion::Any, events(2))
        .await
        .unwrap();
    assert_eq!(
        (a.first_position, a.last_position, a.stream_version),
        (1, 3, 3)
    );
    assert_eq!(
        (b.first_position, b.last_position, b.stream_version),
        (4, 5, 2)
    );

    let records = all(&store).await;
    assert_eq!(verify(&records), 5);
    let first = &records[0];
    assert_eq!(first.id, sent[0].id);
    assert_eq!(first.data, sent[0].data);
    assert_eq!(first.tenant, "acme");
    assert_eq!(first.correlation_id.as_deref(), Some("req_test"));
    assert_eq!(first.occurred_at, sent[0].occurred_at);
    let head = store.head().await.unwrap();
    assert_eq!((head.position, head.hash), (5, records[4].hash));
}

async fn reads_start_at_any_position_and_respect_the_limit(f: Ledger) {
    let store = f.open().await;
    for i in 0..10 {
        store
            .append(
                &stream(&format!("acme/thing/t{}", i % 3)),
                ExpectedVersion::Any,
                events(1),
            )
            .await
            .unwrap();
    }
    for from in 1..=11u64 {
        let page = store.read_all(from, 4).await.unwrap();
        let positions: Vec<u64> = page.iter().map(|r| r.position).collect();
        let expected: Vec<u64> = (from..=10).take(4).collect();
        assert_eq!(positions, expected, "from {from}");
    }
    assert!(store.read_all(0, 1).await.unwrap()[0].position == 1);
}

async fn stream_reads_return_one_stream_in_version_order(f: Ledger) {
    let store = f.open().await;
    for i in 0..6 {
        let s = if i % 2 == 0 {
            "acme/user/a"
        } else {
            "acme/user/b"
        };
        store
            .append(
                &stream(s),
                ExpectedVersion::Any,
                vec![event(serde_json::json!({ "i": i }))],
            )
            .await
            .unwrap();
    }
    let a = store
        .read_stream(&stream("acme/user/a"), 1, 100)
        .await
        .unwrap();
    assert_eq!(a.iter().map(|r| r.version).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(
        a.iter()
            .map(|r| r.data["i"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [0, 2, 4]
    );
    let tail = store
        .read_stream(&stream("acme/user/a"), 2, 1)
        .await
        .unwrap();
    assert_eq!(tail.iter().map(|r| r.version).collect::<Vec<_>>(), [2]);
    assert!(
        store
            .read_stream(&stream("acme/user/none"), 1, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn expected_version_is_enforced_and_a_mismatch_writes_nothing(f: Ledger) {
    let store = f.open().await;
    let s = stream("acme/user/u1");
    let ok = |r: Result<custodian_store::AppendOutcome, StoreError>| r.unwrap().stream_version;
    assert_eq!(
        ok(store.append(&s, ExpectedVersion::NoStream, events(1)).await),
        1
    );
    let conflict = store.append(&s, ExpectedVersion::NoStream, events(1)).await;
    assert!(
        matches!(
            &conflict,
            Err(StoreError::WrongExpectedVersion {
                actual: 1,
                expected: ExpectedVersion::NoStream,
                ..
            })
        ),
        "{conflict:?}"
    );
    assert_eq!(
        ok(store.append(&s, ExpectedVersion::Exact(1), events(2)).await),
        3
    );
    for stale in [0, 1, 2, 4] {
        let r = store
            .append(&s, ExpectedVersion::Exact(stale), events(1))
            .await;
        assert!(
            matches!(r, Err(StoreError::WrongExpectedVersion { actual: 3, .. })),
            "Exact({stale}) on version 3 gave {r:?}"
        );
    }
    assert_eq!(
        ok(store.append(&s, ExpectedVersion::Any, events(1)).await),
        4
    );
    assert_eq!(
        ok(store
            .append(
                &stream("acme/user/new"),
                ExpectedVersion::Exact(0),
                events(1)
            )
            .await),
        1
    );
    let records = all(&store).await;
    assert_eq!(records.len(), 5, "conflicts must write nothing");
    verify(&records);
}

async fn multi_event_appends_are_all_or_nothing(f: Ledger) {
    let store = f.open().await;
    let s = stream("acme/user/u1");
    let out = store
        .append(&s, ExpectedVersion::NoStream, events(3))
        .await
        .unwrap();
    assert_eq!((out.first_position, out.last_position), (1, 3));
    let versions: Vec<u64> = all(&store).await.iter().map(|r| r.version).collect();
    assert_eq!(versions, [1, 2, 3]);

    // A conflicting three-event append leaves no trace.
    assert!(
        store
            .append(&s, ExpectedVersion::Exact(1), events(3))
            .await
            .is_err()
    );
    // So does one whose second event is too large.
    let mut mixed = events(3);
    mixed[1].data = serde_json::json!({ "blob": "x".repeat(300 * 1024) });
    let r = store.append(&s, ExpectedVersion::Any, mixed).await;
    assert!(
        matches!(r, Err(StoreError::EventTooLarge { index: 1, .. })),
        "{r:?}"
    );
    assert_eq!(all(&store).await.len(), 3);
}

async fn a_retry_with_the_same_ids_is_idempotent(f: Ledger) {
    let store = f.open().await;
    let s = stream("acme/user/u1");
    let batch = events(2);
    let first = store
        .append(&s, ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    store
        .append(&stream("acme/user/u2"), ExpectedVersion::Any, events(1))
        .await
        .unwrap();
    // The retry carries a now-stale expectation: it still answers with the original positions.
    let retry = store
        .append(&s, ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    assert!(retry.deduplicated);
    assert_eq!(
        (
            retry.first_position,
            retry.last_position,
            retry.stream_version
        ),
        (
            first.first_position,
            first.last_position,
            first.stream_version
        )
    );
    assert_eq!(all(&store).await.len(), 3, "a retry writes nothing");

    // The same ids on another stream, or mixed with new ones, are refused.
    let r = store
        .append(
            &stream("acme/user/other"),
            ExpectedVersion::Any,
            batch.clone(),
        )
        .await;
    assert!(
        matches!(r, Err(StoreError::DuplicateEventId { .. })),
        "{r:?}"
    );
    let mut partial = events(1);
    partial.push(batch[0].clone());
    let r = store.append(&s, ExpectedVersion::Any, partial).await;
    assert!(
        matches!(r, Err(StoreError::DuplicateEventId { .. })),
        "{r:?}"
    );
    assert_eq!(all(&store).await.len(), 3);
}

async fn bad_appends_are_typed_errors_and_write_nothing(f: Ledger) {
    let store = f
        .open_with(StoreOptions {
            max_event_bytes: 1024,
            ..StoreOptions::default()
        })
        .await;
    let s = stream("acme/user/u1");
    let r = store.append(&s, ExpectedVersion::Any, vec![]).await;
    assert!(matches!(r, Err(StoreError::EmptyAppend)), "{r:?}");
    let big = vec![event(serde_json::json!({ "blob": "x".repeat(2000) }))];
    let r = store.append(&s, ExpectedVersion::Any, big).await;
    let Err(
        e @ StoreError::EventTooLarge {
            index: 0,
            limit: 1024,
            ..
        },
    ) = r
    else {
        panic!("{r:?}")
    };
    assert!(
        e.to_string().contains("over the limit of 1024 bytes"),
        "{e}"
    );
    let mut twice = events(1);
    twice.push(twice[0].clone());
    let r = store.append(&s, ExpectedVersion::Any, twice).await;
    assert!(
        matches!(r, Err(StoreError::DuplicateEventId { .. })),
        "{r:?}"
    );
    assert_eq!(store.head().await.unwrap().position, 0);
    // At the limit is fine.
    let fits = vec![event(serde_json::json!({ "blob": "x".repeat(1000) }))];
    store.append(&s, ExpectedVersion::Any, fits).await.unwrap();
}

async fn follow_delivers_every_event_once_across_catch_up_and_live(f: Ledger) {
    let store = f.open().await;
    for i in 0..25 {
        store
            .append(
                &stream(&format!("acme/user/u{}", i % 4)),
                ExpectedVersion::Any,
                events(1 + i % 3),
            )
            .await
            .unwrap();
    }
    let before = store.head().await.unwrap().position;
    let mut live = Box::pin(custodian_store::follow(store.clone(), 1));
    let mut from_middle = Box::pin(custodian_store::follow(store.clone(), 10));

    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            for t in 0..8 {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0..15 {
                        store
                            .append(
                                &stream(&format!("acme/live/t{t}")),
                                ExpectedVersion::Any,
                                events(1 + i % 2),
                            )
                            .await
                            .unwrap();
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        })
    };
    let total = before + 8 * (8 + 7 * 2);
    let mut seen = Vec::new();
    while (seen.len() as u64) < total {
        let next = tokio::time::timeout(Duration::from_secs(20), live.next())
            .await
            .expect("follow stalled")
            .unwrap()
            .unwrap();
        seen.push(next);
    }
    writer.await.unwrap();
    let positions: Vec<u64> = seen.iter().map(|r| r.position).collect();
    assert_eq!(positions, (1..=total).collect::<Vec<_>>());
    assert_eq!(verify(&seen), total);

    let first_from_middle = from_middle.next().await.unwrap().unwrap();
    assert_eq!(first_from_middle.position, 10);

    // Nothing more arrives until something is appended; then exactly that.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), live.next())
            .await
            .is_err()
    );
    store
        .append(&stream("acme/user/late"), ExpectedVersion::Any, events(1))
        .await
        .unwrap();
    let late = tokio::time::timeout(Duration::from_secs(5), live.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(late.position, total + 1);
}

async fn racing_exact_appends_have_exactly_one_winner_per_version(f: Ledger) {
    const TASKS: usize = 32;
    const ROUNDS: u64 = 10;
    let store = f.open().await;
    let barrier = Arc::new(Barrier::new(TASKS));
    let mut handles = Vec::new();
    for _ in 0..TASKS {
        let store = store.clone();
        let barrier = barrier.clone();
        handles.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for v in 0..ROUNDS {
                barrier.wait().await;
                let r = store
                    .append(
                        &stream("acme/user/contended"),
                        ExpectedVersion::Exact(v),
                        events(1),
                    )
                    .await;
                outcomes.push((v, r));
                barrier.wait().await;
            }
            outcomes
        }));
    }
    let mut winners = vec![0usize; ROUNDS as usize];
    for h in handles {
        for (v, r) in h.await.unwrap() {
            match r {
                Ok(o) => {
                    assert_eq!(o.stream_version, v + 1);
                    winners[v as usize] += 1;
                }
                Err(StoreError::WrongExpectedVersion { actual, .. }) => assert_eq!(actual, v + 1),
                Err(e) => panic!("unexpected error {e}"),
            }
        }
    }
    assert_eq!(
        winners,
        vec![1; ROUNDS as usize],
        "exactly one winner per version"
    );
    let records = all(&store).await;
    assert_eq!(verify(&records), ROUNDS);
}

async fn concurrent_appends_to_distinct_streams_stay_gapless(f: Ledger) {
    const TASKS: usize = 32;
    const APPENDS: usize = 25;
    let store = f.open().await;
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut positions = Vec::new();
            for i in 0..APPENDS {
                let o = store
                    .append(
                        &stream(&format!("acme/user/u{t}")),
                        ExpectedVersion::Exact(i as u64),
                        events(1),
                    )
                    .await
                    .unwrap();
                positions.push(o.first_position);
            }
            positions
        }));
    }
    let mut acknowledged = HashSet::new();
    for h in handles {
        for p in h.await.unwrap() {
            assert!(acknowledged.insert(p), "position {p} given twice");
        }
    }
    let n = (TASKS * APPENDS) as u64;
    assert_eq!(acknowledged, (1..=n).collect::<HashSet<_>>());
    let records = all(&store).await;
    assert_eq!(verify(&records), n);
    for t in 0..TASKS {
        let versions: Vec<u64> = store
            .read_stream(&stream(&format!("acme/user/u{t}")), 1, 1000)
            .await
            .unwrap()
            .iter()
            .map(|r| r.version)
            .collect();
        assert_eq!(versions, (1..=APPENDS as u64).collect::<Vec<_>>());
    }
}

async fn the_log_survives_reopening_and_continues_the_chain(f: Ledger) {
    let store = f.open().await;
    store
        .append(&stream("acme/user/u1"), ExpectedVersion::Any, events(4))
        .await
        .unwrap();
    let head = store.head().await.unwrap();
    store.close().await;
    drop(store);

    let store = f.open().await;
    assert_eq!(store.head().await.unwrap(), head);
    let o = store
        .append(
            &stream("acme/user/u1"),
            ExpectedVersion::Exact(4),
            events(1),
        )
        .await
        .unwrap();
    assert_eq!((o.first_position, o.stream_version), (5, 5));
    let records = all(&store).await;
    assert_eq!(records[4].prev_hash, head.hash);
    assert_eq!(verify(&records), 5);
}

async fn close_finishes_appends_already_taken(f: Ledger) {
    let store = f.open().await;
    let mut handles = Vec::new();
    for t in 0..16 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for _ in 0..20 {
                match store
                    .append(
                        &stream(&format!("acme/user/u{t}")),
                        ExpectedVersion::Any,
                        events(1),
                    )
                    .await
                {
                    Ok(o) => acked.push(o.first_position),
                    Err(StoreError::Closed) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    store.close().await;
    let mut acked: Vec<u64> = Vec::new();
    for h in handles {
        acked.extend(h.await.unwrap());
    }
    let after = store
        .append(&stream("acme/user/x"), ExpectedVersion::Any, events(1))
        .await;
    assert!(matches!(after, Err(StoreError::Closed)), "{after:?}");
    drop(store);
    let reopened = f.open().await;
    let records = all(&reopened).await;
    let stored: HashSet<u64> = records.iter().map(|r| r.position).collect();
    assert_eq!(
        stored.len(),
        acked.len(),
        "every acknowledged append, nothing else"
    );
    for p in acked {
        assert!(stored.contains(&p));
    }
}

/// A writer remembers stream versions between commits; an append by another process (a second
/// server, or a command line run beside the server) must make it read them again.
async fn another_process_append_is_seen_by_the_next_version_check(f: Ledger) {
    let server = f.open().await;
    let other = f.open().await;
    let s = stream("acme/user/u1");
    let ok = |r: Result<custodian_store::AppendOutcome, StoreError>| {
        let o = r.unwrap();
        (o.first_position, o.stream_version)
    };
    assert_eq!(
        ok(server
            .append(&s, ExpectedVersion::NoStream, events(1))
            .await),
        (1, 1)
    );
    assert_eq!(
        ok(other.append(&s, ExpectedVersion::Exact(1), events(1)).await),
        (2, 2)
    );
    let stale = server
        .append(&s, ExpectedVersion::Exact(1), events(1))
        .await;
    assert!(
        matches!(
            stale,
            Err(StoreError::WrongExpectedVersion { actual: 2, .. })
        ),
        "{stale:?}"
    );
    assert_eq!(
        ok(server
            .append(&s, ExpectedVersion::Exact(2), events(1))
            .await),
        (3, 3)
    );
    // Another stream moves the head too: the versions the server remembers may be stale.
    assert_eq!(
        ok(other.append(&s, ExpectedVersion::Any, events(2)).await),
        (4, 5)
    );
    assert_eq!(
        ok(other
            .append(&stream("acme/user/u2"), ExpectedVersion::Any, events(1))
            .await),
        (6, 1)
    );
    assert_eq!(
        ok(server.append(&s, ExpectedVersion::Any, events(1)).await),
        (7, 6)
    );
    let records = all(&server).await;
    assert_eq!(verify(&records), 7);
}

mod postgres_only {
    use sqlx::Connection as _;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_processes_on_one_database_share_one_gapless_log() {
        let Some(f) = Ledger::postgres().await else {
            return;
        };
        let a = f.open().await;
        let b = f.open().await;
        let mut follow_a = Box::pin(custodian_store::follow(a.clone(), 1));
        let mut handles = Vec::new();
        for t in 0..16 {
            let store = if t % 2 == 0 { a.clone() } else { b.clone() };
            handles.push(tokio::spawn(async move {
                for _ in 0..20 {
                    store
                        .append(
                            &stream(&format!("acme/user/u{t}")),
                            ExpectedVersion::Any,
                            events(2),
                        )
                        .await
                        .unwrap();
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        let records = all(&a).await;
        assert_eq!(verify(&records), 640);
        for p in 1..=640 {
            let r = tokio::time::timeout(Duration::from_secs(3), follow_a.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(r.position, p);
        }
    }

    /// Waits for the next event of `follow`, for at most 10 s: far less than the follower's idle
    /// recheck, so only the store's head watch (PostgreSQL's NOTIFY) can have woken it.
    async fn next_live<S>(follow: &mut S) -> u64
    where
        S: futures::Stream<Item = Result<EventRecord, StoreError>> + Unpin,
    {
        tokio::time::timeout(Duration::from_secs(10), follow.next())
            .await
            .expect("the follower heard of the other process's commit")
            .unwrap()
            .unwrap()
            .position
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_follower_hears_another_process_commits_live_and_after_its_listener_is_cut() {
        let Some(f) = Ledger::postgres().await else {
            return;
        };
        let a = f.open().await;
        let b = f.open().await;
        // An hour between idle re-reads: only a notification wakes the follower in this test.
        let mut follow_a = Box::pin(custodian_store::follow_rechecking(
            a.clone(),
            1,
            Duration::from_secs(3600),
        ));
        // The follower is waiting on an empty log before store b appends anything.
        assert!(
            tokio::time::timeout(Duration::from_millis(200), follow_a.next())
                .await
                .is_err()
        );
        for p in 1..=3 {
            b.append(&stream("acme/user/u1"), ExpectedVersion::Any, events(1))
                .await
                .unwrap();
            assert_eq!(next_live(&mut follow_a).await, p);
        }

        // Cut every listening connection on the database (store a's and store b's).
        let mut admin = sqlx::PgConnection::connect(&f.location).await.unwrap();
        let cut: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = $1",
        )
        .bind(custodian_store::postgres::LISTENER_APPLICATION_NAME)
        .fetch_all(&mut admin)
        .await
        .unwrap();
        assert_eq!(
            cut,
            [true, true],
            "both stores' listeners were found and cut"
        );

        // Commits made while a's listener is away or reconnecting still reach its follower.
        for p in 4..=6 {
            b.append(&stream("acme/user/u1"), ExpectedVersion::Any, events(1))
                .await
                .unwrap();
            assert_eq!(next_live(&mut follow_a).await, p);
        }
    }
}

mod sqlite_only {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_follower_hears_of_another_process_commits_well_before_its_idle_recheck() {
        let f = Ledger::sqlite();
        let server = f.open().await;
        // Another process on the same file: a command line run while the server runs.
        let cli = f.open().await;
        let mut follow = Box::pin(custodian_store::follow(server.clone(), 1));
        let mut head = server.watch_head();
        cli.append(&stream("acme/user/u1"), ExpectedVersion::Any, events(3))
            .await
            .unwrap();
        // SQLite cannot notify; the store asks it every 100 ms, far sooner than the 5 s recheck.
        for p in 1..=3 {
            let r = tokio::time::timeout(Duration::from_secs(2), follow.next())
                .await
                .expect("the follower heard of the other process's commit")
                .unwrap()
                .unwrap();
            assert_eq!(r.position, p);
        }
        tokio::time::timeout(Duration::from_secs(2), head.wait_for(|p| *p == 3))
            .await
            .expect("the head watch moved to the other process's commit")
            .unwrap();
    }
}
