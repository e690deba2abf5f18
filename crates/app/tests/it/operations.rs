//! Operating the service: liveness, readiness, and the projections report.

use std::collections::BTreeSet;

use custodian_app::AppError;
use custodian_app::operations::{self, Liveness, ReadyStatus, RelayProgress};

use crate::support::TestApp;

#[tokio::test]
async fn the_projections_report_lists_every_projection_caught_up_with_the_head() {
    let t = TestApp::new().await;
    t.views_caught_up().await;
    let head = t.app.store.head().await.unwrap().position;
    assert!(head > 0, "the bootstrap wrote events");

    let report = operations::projections(&t.app, &t.root().await, None)
        .await
        .unwrap();
    assert_eq!((report.head, report.applied), (head, head));
    let reported: BTreeSet<&str> = report.projections.iter().map(|p| p.name.as_str()).collect();
    let expected: BTreeSet<&str> = custodian_projections::all()
        .iter()
        .map(|p| p.name())
        .collect();
    assert_eq!(reported, expected);
    for p in &report.projections {
        assert_eq!(p.state, "active", "{p:?}");
        assert_eq!(
            (p.position, p.lag_events, p.lag_seconds),
            (head, 0, 0.0),
            "{p:?}"
        );
        assert_eq!((p.failures, p.last_error.is_none()), (0, true), "{p:?}");
    }
    assert!(report.relay.is_none(), "no relay, no relay report");
}

#[tokio::test]
async fn the_relay_is_reported_behind_the_head_by_what_it_has_not_acknowledged() {
    let t = TestApp::new().await;
    let head = t.app.store.head().await.unwrap().position;
    let relay = RelayProgress {
        connected: false,
        acknowledged_position: 1,
        failures: 3,
        last_error: Some("connection refused".into()),
    };
    let report = operations::projections(&t.app, &t.root().await, Some(relay))
        .await
        .unwrap();
    let r = report.relay.unwrap();
    assert_eq!(
        (
            r.connected,
            r.acknowledged_position,
            r.lag_events,
            r.failures
        ),
        (false, 1, head - 1, 3)
    );
    assert_eq!(r.last_error.as_deref(), Some("connection refused"));

    // A relay ahead of what this process has read of the head is no lag, not an underflow.
    let ahead = RelayProgress {
        acknowledged_position: head + 10,
        ..RelayProgress::default()
    };
    let report = operations::projections(&t.app, &t.root().await, Some(ahead))
        .await
        .unwrap();
    assert_eq!(report.relay.unwrap().lag_events, 0);
}

#[tokio::test]
async fn readiness_reports_the_head_of_the_log_to_operators_only() {
    const SCRAPE: &str = "scrape-token-of-this-test";
    let t = TestApp::with_options(|o| o.metrics_token = Some(SCRAPE.to_owned())).await;
    let head = t.app.store.head().await.unwrap();
    let ready = operations::readiness(&t.app).await.unwrap();
    assert!(matches!(ready.status, ReadyStatus::Ready));
    let report = operations::readiness_report(&t.app, Some(SCRAPE))
        .await
        .unwrap();
    assert!(matches!(report.status, ReadyStatus::Ready));
    assert_eq!(report.head.position, head.position);
    assert_eq!(report.head.hash, head.hash.to_hex());
    for stranger in [None, Some("not-the-scrape-token")] {
        let refused = operations::readiness_report(&t.app, stranger).await;
        assert!(
            matches!(refused, Err(AppError::Unauthenticated(_))),
            "{stranger:?}: {refused:?}"
        );
    }
    assert!(matches!(operations::liveness().status, Liveness::Ok));
}
