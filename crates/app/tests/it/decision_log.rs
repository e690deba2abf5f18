//! The decision log: what checks leave in `{tenant}/decision/log` under each mode, in the order
//! they were answered, and that what was queued when the service stops is still written.

use custodian_app::Clock;
use custodian_app::authz::DecisionLogMode;
use custodian_app::authz::check::{
    self, BatchRequest, CheckAnswer, CheckContext, CheckRequest, VerdictView,
};
use custodian_domain::policy::{DecisionEvent, Verdict};
use custodian_domain::{DomainEvent as _, EventRecord};

use crate::support::TestApp;

/// A tenant `acme` with a viewer in it.
struct World {
    t: TestApp,
    viewer: String,
}

async fn world(mode: DecisionLogMode) -> World {
    let t = TestApp::with_options(|o| o.decision_log = mode).await;
    t.create_tenant("acme").await;
    let viewer = t
        .create_person("acme", "vera@acme.test", "a long enough password")
        .await;
    t.assign("acme", &viewer, "viewer").await;
    World { t, viewer }
}

fn ask(principal: &str, permission: &str, resource: &str) -> CheckRequest {
    CheckRequest {
        principal: principal.to_owned(),
        permission: permission.to_owned(),
        resource: resource.to_owned(),
        context: None,
        at: None,
        explain: None,
    }
}

impl World {
    async fn check(&self, req: CheckRequest) -> CheckAnswer {
        check::check(&self.t.app, &self.t.root().await, "acme", req)
            .await
            .unwrap()
    }

    /// A check the viewer's role allows.
    async fn allowed(&self) -> CheckAnswer {
        let answer = self.check(ask(&self.viewer, "user:read", "user/u1")).await;
        assert_eq!(answer.result.decision, VerdictView::Allow);
        answer
    }

    /// A check nothing allows.
    async fn denied(&self) -> CheckAnswer {
        let answer = self
            .check(ask(&self.viewer, "user:create", "user/u1"))
            .await;
        assert_eq!(answer.result.decision, VerdictView::Deny);
        answer
    }

    /// Waits until `acme`'s decision log holds `n` records; answers them.
    async fn records(&self, n: usize) -> Vec<(EventRecord, DecisionEvent)> {
        decode(self.t.wait_for_stream("acme", "decision", "log", n).await)
    }

    /// Stops the service, waits for the decision log's writer to finish, and answers what it
    /// wrote.
    async fn records_after_shutdown(&self) -> Vec<(EventRecord, DecisionEvent)> {
        self.t.shut_down();
        self.t.app.decisions.stopped().await;
        decode(self.t.stream_events("acme", "decision", "log").await)
    }
}

fn decode(records: Vec<EventRecord>) -> Vec<(EventRecord, DecisionEvent)> {
    records
        .into_iter()
        .map(|r| {
            let e = DecisionEvent::decode(r.event_type.as_str(), r.schema, &r.data).unwrap();
            (r, e)
        })
        .collect()
}

/// What a record says, next to what the answer said.
fn assert_records(answer: &CheckAnswer, record: &DecisionEvent, req: &CheckRequest) {
    let DecisionEvent::Recorded {
        principal,
        permission,
        resource,
        decision,
        reason,
        matched,
        at,
        position,
        ip,
    } = record;
    assert_eq!(
        (
            principal.as_str(),
            permission.to_string(),
            resource.to_string()
        ),
        (
            req.principal.as_str(),
            req.permission.clone(),
            req.resource.clone()
        )
    );
    let verdict = match answer.result.decision {
        VerdictView::Allow => Verdict::Allow,
        VerdictView::Deny => Verdict::Deny,
    };
    assert_eq!(*decision, verdict);
    assert_eq!(reason, &answer.result.reason);
    assert_eq!(
        matched,
        &answer
            .result
            .matched
            .iter()
            .map(|m| m.id.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(*position, answer.position);
    assert_eq!(
        at.map(|a| a.to_string()),
        req.at.clone(),
        "the instant asked about"
    );
    assert_eq!(
        ip.as_deref(),
        req.context.as_ref().and_then(|c| c.ip.as_deref())
    );
}

#[tokio::test]
async fn by_default_every_check_is_recorded_with_its_decision_reason_provenance_and_position() {
    let w = world(DecisionLogMode::All).await;
    assert_eq!(w.t.app.decisions.mode(), DecisionLogMode::All);
    let past = w.t.clock.now();
    w.t.advance(60);

    let allow_req = CheckRequest {
        context: Some(CheckContext {
            ip: Some("10.1.2.3".to_owned()),
            time: None,
        }),
        ..ask(&w.viewer, "user:read", "user/u1")
    };
    let allow = w.check(allow_req.clone()).await;
    assert_eq!(allow.result.decision, VerdictView::Allow);
    assert!(!allow.result.matched.is_empty());
    let deny_req = ask(&w.viewer, "user:create", "user/u1");
    let deny = w.check(deny_req.clone()).await;
    assert_eq!(deny.result.decision, VerdictView::Deny);
    let past_req = CheckRequest {
        at: Some(past.to_string()),
        ..ask(&w.viewer, "user:read", "user/u2")
    };
    let then = w.check(past_req.clone()).await;

    let records = w.records(3).await;
    assert_eq!(records.len(), 3);
    for (record, _) in &records {
        assert_eq!(record.event_type.as_str(), "decision.recorded");
        assert_eq!(record.stream.to_string(), "acme/decision/log");
        assert_eq!(record.actor.id, w.t.admin_id, "the caller who asked");
    }
    assert_records(&allow, &records[0].1, &allow_req);
    assert_records(&deny, &records[1].1, &deny_req);
    assert_records(&then, &records[2].1, &past_req);
}

#[tokio::test]
async fn in_denies_mode_only_denials_are_recorded() {
    let w = world(DecisionLogMode::Denies).await;
    w.allowed().await;
    let first = w.denied().await;
    w.allowed().await;
    w.allowed().await;
    let second = w.denied().await;
    w.allowed().await;

    // The writer keeps the order of the checks: once the second denial is written, every allow
    // asked before it would have been too.
    let records = w.records(2).await;
    assert_eq!(records.len(), 2);
    let req = ask(&w.viewer, "user:create", "user/u1");
    assert_records(&first, &records[0].1, &req);
    assert_records(&second, &records[1].1, &req);
    let records = w.records_after_shutdown().await;
    assert_eq!(records.len(), 2, "{records:?}");
}

#[tokio::test]
async fn in_none_mode_nothing_is_recorded() {
    let w = world(DecisionLogMode::None).await;
    w.allowed().await;
    w.denied().await;
    let batch = check::check_batch(
        &w.t.app,
        &w.t.root().await,
        "acme",
        BatchRequest {
            checks: vec![
                ask(&w.viewer, "user:read", "user/u1"),
                ask(&w.viewer, "user:delete", "user/u1"),
            ],
        },
    )
    .await
    .unwrap();
    assert_eq!(batch.results.len(), 2);
    assert!(w.records_after_shutdown().await.is_empty());
}

/// A thousand checks alternating an allow and two kinds of denial, on distinct resources.
fn thousand(viewer: &str) -> Vec<CheckRequest> {
    (0..1_000)
        .map(|i| {
            let permission = ["user:read", "user:create", "key:rotate"][i % 3];
            ask(viewer, permission, &format!("user/u{i}"))
        })
        .collect()
}

#[tokio::test]
async fn a_batch_of_a_thousand_checks_leaves_a_thousand_records_in_the_order_asked() {
    let w = world(DecisionLogMode::All).await;
    let checks = thousand(&w.viewer);
    let batch = check::check_batch(
        &w.t.app,
        &w.t.root().await,
        "acme",
        BatchRequest {
            checks: checks.clone(),
        },
    )
    .await
    .unwrap();
    assert_eq!(batch.results.len(), 1_000);

    let records = w.records(1_000).await;
    assert_eq!(records.len(), 1_000);
    for ((req, result), (_, record)) in checks.iter().zip(&batch.results).zip(&records) {
        let answer = CheckAnswer {
            result: result.clone(),
            position: batch.position,
        };
        assert_records(&answer, record, req);
    }
    // Recorded in order, one stream version after another.
    let versions: Vec<u64> = records.iter().map(|(r, _)| r.version).collect();
    assert_eq!(versions, (1..=1_000).collect::<Vec<u64>>());
}

#[tokio::test]
async fn decisions_queued_when_the_service_stops_are_written_before_it_stops() {
    let w = world(DecisionLogMode::All).await;
    let root = w.t.root().await;
    let checks = thousand(&w.viewer);
    for req in checks.iter().take(200) {
        check::check(&w.t.app, &root, "acme", req.clone())
            .await
            .unwrap();
    }
    let batch = check::check_batch(
        &w.t.app,
        &root,
        "acme",
        BatchRequest {
            checks: checks.clone(),
        },
    )
    .await
    .unwrap();
    assert_eq!(batch.results.len(), 1_000);

    let records = w.records_after_shutdown().await;
    assert_eq!(records.len(), 1_200);
    let asked: Vec<String> = checks
        .iter()
        .take(200)
        .chain(&checks)
        .map(|c| format!("{} {}", c.permission, c.resource))
        .collect();
    let written: Vec<String> = records
        .iter()
        .map(
            |(
                _,
                DecisionEvent::Recorded {
                    permission,
                    resource,
                    ..
                },
            )| { format!("{permission} {resource}") },
        )
        .collect();
    assert_eq!(written, asked);
}
