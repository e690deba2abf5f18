//! A failing or interrupted batch is never half-applied: no event twice, none skipped.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use custodian_projections::Projection;
use custodian_store::ExpectedVersion;
use custodian_testkit::{Ledger, event, stream};

use crate::support::{Counter, Views as _, counts};

custodian_testkit::on_every_backend!(
    a_failure_in_mid_batch_is_retried_and_reported_without_double_apply,
    a_worker_stopped_mid_batch_resumes_exactly_where_it_committed,
);

async fn append_spread(store: &Arc<dyn custodian_store::EventStore>, n: u64) {
    for i in 0..n {
        store
            .append(
                &stream(&format!("acme/thing/t{}", i % 5)),
                ExpectedVersion::Any,
                vec![event("thing.happened", serde_json::json!({ "n": i }))],
            )
            .await
            .unwrap();
    }
}

fn expected(n: u64) -> Vec<(String, i64)> {
    (0..5)
        .map(|s| {
            let count = (0..n).filter(|i| i % 5 == s).count() as i64;
            (format!("acme/thing/t{s}"), count)
        })
        .collect()
}

async fn a_failure_in_mid_batch_is_retried_and_reported_without_double_apply(ledger: Ledger) {
    let store = ledger.open().await;
    append_spread(&store, 40).await;
    let counter = Arc::new(Counter::default());
    // Batches are 16 events: position 8 is half-way through the first one. It fails there on
    // every attempt (retried after 10, 20, 40, 50, 50... ms) until the test has seen the failure
    // reported, so the check never races a short window.
    counter.fail_at.store(8, Ordering::SeqCst);
    counter.fail_times.store(u64::MAX, Ordering::SeqCst);
    counter.delay_ms.store(2, Ordering::SeqCst);
    let projections = ledger
        .start(&store, vec![counter.clone() as Arc<dyn Projection>])
        .await;

    // While it retries, the failure is visible with the event's position, and counted.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = projections.statuses();
        if s.iter().any(|s| {
            s.failures >= 2
                && s.last_error
                    .as_ref()
                    .is_some_and(|e| e.position == 8 && e.error.contains("injected"))
        }) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the failure is reported: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Let it succeed; every attempt that failed up to here is counted.
    let failed = u64::MAX - counter.fail_times.swap(0, Ordering::SeqCst);

    projections
        .wait_for(40, Duration::from_secs(20))
        .await
        .unwrap();
    let tables = projections.active_tables("counter").unwrap();
    assert_eq!(counts(&ledger.views().await, &tables).await, expected(40));
    let status = &projections.statuses()[0];
    assert_eq!(status.position, 40);
    assert!(
        status.last_error.is_none(),
        "cleared once applied: {status:?}"
    );
    assert_eq!(
        status.failures, failed,
        "each failed attempt is counted: {status:?}"
    );
    projections.stop().await;
}

async fn a_worker_stopped_mid_batch_resumes_exactly_where_it_committed(ledger: Ledger) {
    let store = ledger.open().await;
    append_spread(&store, 60).await;
    let counter = Arc::new(Counter::default());
    counter.delay_ms.store(3, Ordering::SeqCst);
    let projections = ledger
        .start(&store, vec![counter.clone() as Arc<dyn Projection>])
        .await;
    // Let it commit some batches, then stop it in the middle of one.
    for _ in 0..400 {
        if projections
            .statuses()
            .first()
            .is_some_and(|s| s.position >= 16)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    projections.stop().await;
    let stopped_at = projections.statuses()[0].position;
    assert!(stopped_at < 60, "stopped before the end ({stopped_at})");
    let lag = projections
        .lag_report(custodian_domain::Timestamp::from_datetime(
            time::OffsetDateTime::now_utc(),
        ))
        .await
        .unwrap();
    assert_eq!(lag.head, 60);
    assert_eq!(lag.projections[0].lag_events, 60 - stopped_at);
    assert!(lag.projections[0].lag_seconds > 0.0, "{lag:?}");

    counter.delay_ms.store(0, Ordering::SeqCst);
    append_spread(&store, 0).await;
    let restarted = ledger
        .start(&store, vec![counter.clone() as Arc<dyn Projection>])
        .await;
    restarted
        .wait_for(60, Duration::from_secs(20))
        .await
        .unwrap();
    let tables = restarted.active_tables("counter").unwrap();
    assert_eq!(counts(&ledger.views().await, &tables).await, expected(60));
    restarted.stop().await;
}
