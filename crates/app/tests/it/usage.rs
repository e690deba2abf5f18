//! Usage metering, quotas and budgets through the use cases: idempotency, hard and soft quotas
//! (also under concurrent posts), budget thresholds, batches and validation.

use std::collections::BTreeMap;

use custodian_app::AppError;
use custodian_app::usage::{
    self, PeriodQuery, SetBudgetRequest, SetMeterRequest, SetQuotaRequest, UsageBatch, UsageQuery,
    UsageRecord,
};
use custodian_domain::EventRecord;

use crate::support::TestApp;

fn rec(meter: &str, quantity: u64, subject: &str, key: &str) -> UsageRecord {
    UsageRecord {
        meter: meter.into(),
        quantity,
        subject: subject.into(),
        idempotency_key: key.into(),
    }
}

async fn events_of(t: &TestApp, event_type: &str) -> Vec<EventRecord> {
    t.events_after(0)
        .await
        .into_iter()
        .filter(|r| r.event_type.as_str() == event_type)
        .collect()
}

async fn used(t: &TestApp, tenant: &str, meter: &str, subject: Option<&str>) -> usage::UsageView {
    t.views_caught_up().await;
    usage::read(
        &t.app,
        &t.root().await,
        tenant,
        UsageQuery {
            meter: Some(meter.into()),
            subject: subject.map(str::to_owned),
            period: None,
        },
    )
    .await
    .unwrap()
}

/// Records one unit of `meter` for alice in acme under each of `keys`, each accepted.
async fn record_each(t: &TestApp, meter: &str, keys: impl IntoIterator<Item = String>) {
    let root = t.root().await;
    for key in keys {
        usage::record(&t.app, &root, "acme", rec(meter, 1, "alice", &key))
            .await
            .unwrap_or_else(|e| panic!("record {key} refused: {e:?}"));
    }
}

/// Posts every record of `records` to acme at once, each in its own task; the answers.
async fn record_concurrently(
    t: &TestApp,
    records: impl IntoIterator<Item = UsageRecord>,
) -> Vec<Result<usage::Recorded, AppError>> {
    let root = t.root().await;
    let mut tasks = tokio::task::JoinSet::new();
    for r in records {
        let (app, root) = (t.app.clone(), root.clone());
        tasks.spawn(async move { usage::record(&app, &root, "acme", r).await });
    }
    tasks.join_all().await
}

async fn set_quota(t: &TestApp, tenant: &str, meter: &str, limit: u64, hard: bool) {
    usage::set_quota(
        &t.app,
        &t.root().await,
        tenant,
        meter,
        SetQuotaRequest { limit, hard },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_counts_once() {
    let t = TestApp::new().await;
    t.create_tenant("acme").await;
    let root = t.root().await;
    let first = usage::record(&t.app, &root, "acme", rec("api_calls", 3, "alice", "k-1"))
        .await
        .unwrap();
    assert!(first.accepted && !first.duplicate);
    let again = usage::record(&t.app, &root, "acme", rec("api_calls", 3, "alice", "k-1"))
        .await
        .unwrap();
    assert!(again.accepted && again.duplicate);
    usage::record(&t.app, &root, "acme", rec("api_calls", 4, "bob", "k-2"))
        .await
        .unwrap();
    let view = used(&t, "acme", "api_calls", None).await;
    assert_eq!(view.used, 7);
    assert_eq!(used(&t, "acme", "api_calls", Some("alice")).await.used, 3);
    // The same key in another tenant is another record.
    t.create_tenant("globex").await;
    let other = usage::record(&t.app, &root, "globex", rec("api_calls", 1, "alice", "k-1"))
        .await
        .unwrap();
    assert!(!other.duplicate);
}

#[tokio::test]
async fn concurrent_posts_with_the_same_key_count_once() {
    let t = TestApp::new().await;
    t.create_tenant("acme").await;
    let same = (0..50).map(|_| rec("api_calls", 5, "alice", "same-key"));
    let answers = record_concurrently(&t, same).await;
    assert_eq!(
        answers
            .iter()
            .filter(|a| !a.as_ref().unwrap().duplicate)
            .count(),
        1
    );
    assert_eq!(used(&t, "acme", "api_calls", None).await.used, 5);
}

#[tokio::test]
async fn a_hard_quota_refuses_exactly_at_its_limit() {
    let t = TestApp::new().await;
    t.create_tenant("acme").await;
    set_quota(&t, "acme", "api_calls", 10, true).await;
    record_each(&t, "api_calls", (0..10).map(|i| format!("k{i}"))).await;
    let root = t.root().await;
    let refused = usage::record(&t.app, &root, "acme", rec("api_calls", 1, "alice", "k10"))
        .await
        .unwrap_err();
    let AppError::QuotaExceeded { retry_after, .. } = refused else {
        panic!("not a quota refusal: {refused:?}")
    };
    assert!(retry_after >= 1);
    // A retry of an accepted record is still a duplicate, not a refusal.
    assert!(
        usage::record(&t.app, &root, "acme", rec("api_calls", 1, "alice", "k3"))
            .await
            .unwrap()
            .duplicate
    );
    let view = used(&t, "acme", "api_calls", None).await;
    assert_eq!(
        (view.used, view.limit, view.remaining),
        (10, Some(10), Some(0))
    );
    // Ten records, each written on its own, then the refusal.
    let exceeded = t.wait_for_stream("acme", "usage", "records", 11).await;
    let e = exceeded
        .iter()
        .find(|r| r.event_type.as_str() == "quota.exceeded")
        .unwrap();
    assert_eq!(e.data["refused"], 1);
    assert_eq!(e.data["limit"], 10);
    t.views_caught_up().await;
    let quotas = usage::quotas(&t.app, &root, "acme", PeriodQuery::default())
        .await
        .unwrap();
    let api = quotas
        .quotas
        .iter()
        .find(|q| q.meter == "api_calls")
        .unwrap();
    assert_eq!((api.used, api.refused, api.limit), (10, 1, Some(10)));
}

#[tokio::test]
async fn a_hard_quota_holds_under_concurrent_posts() {
    let t = TestApp::new().await;
    t.create_tenant("acme").await;
    set_quota(&t, "acme", "api_calls", 100, true).await;
    let records = (0..300).map(|i| rec("api_calls", 1, "alice", &format!("c{i}")));
    let answers = record_concurrently(&t, records).await;
    let accepted = answers.iter().filter(|a| a.is_ok()).count();
    let refused = answers
        .iter()
        .filter(|a| matches!(a, Err(AppError::QuotaExceeded { .. })))
        .count();
    assert_eq!((accepted, refused), (100, 200));
    assert_eq!(used(&t, "acme", "api_calls", None).await.used, 100);
}

#[tokio::test]
async fn a_batch_over_a_hard_quota_counts_nothing() {
    let t = TestApp::new().await;
    t.create_tenant("acme").await;
    set_quota(&t, "acme", "api_calls", 5, true).await;
    let root = t.root().await;
    let batch = UsageBatch {
        records: (0..6)
            .map(|i| rec("api_calls", 1, "alice", &format!("b{i}")))
            .collect(),
    };
    assert!(matches!(
        usage::record_batch(&t.app, &root, "acme", batch).await,
        Err(AppError::QuotaExceeded { .. })
    ));
    assert_eq!(used(&t, "acme", "api_calls", None).await.used, 0);
}

#[tokio::test]
async fn the_plans_quota_applies_until_the_tenant_sets_its_own() {
    let t = TestApp::new().await;
    t.create_tenant("acme").await;
    let view = used(&t, "acme", "api_calls", None).await;
    assert_eq!((view.limit, view.hard), (Some(10_000), Some(true)));
    set_quota(&t, "acme", "api_calls", 3, false).await;
    let view = used(&t, "acme", "api_calls", None).await;
    assert_eq!((view.limit, view.hard), (Some(3), Some(false)));
    usage::clear_quota(&t.app, &t.root().await, "acme", "api_calls")
        .await
        .unwrap();
    assert_eq!(
        used(&t, "acme", "api_calls", None).await.limit,
        Some(10_000)
    );
    // A meter no plan mentions is unlimited.
    assert_eq!(used(&t, "acme", "widgets", None).await.limit, None);
}

#[tokio::test]
async fn a_soft_quota_records_one_warning_a_month() {
    let t = TestApp::new().await;
    t.create_tenant("acme").await;
    set_quota(&t, "acme", "events", 5, false).await;
    record_each(&t, "events", (0..8).map(|i| format!("s{i}"))).await;
    let warnings = events_of(&t, "quota.warning").await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].data["used"], 5);
    assert_eq!(warnings[0].data["period"], "2026-03");
    // A new month counts from zero and warns again once.
    t.advance(31 * 24 * 3600);
    record_each(&t, "events", (0..6).map(|i| format!("n{i}"))).await;
    let warnings = events_of(&t, "quota.warning").await;
    assert_eq!(warnings.len(), 2);
    assert_eq!(warnings[1].data["period"], "2026-04");
    assert_eq!(used(&t, "acme", "events", None).await.used, 6);
}

#[tokio::test]
async fn budget_thresholds_are_recorded_once_each_at_50_80_and_100_percent() {
    let t = TestApp::new().await;
    t.create_tenant("acme").await;
    let root = t.root().await;
    // One unit costs 1.00; the budget is 10.00 a month.
    usage::set_meter(
        &t.app,
        &root,
        "acme",
        "gpu_seconds",
        SetMeterRequest {
            unit_cost: 1_000_000,
        },
    )
    .await
    .unwrap();
    usage::set_budget(
        &t.app,
        &root,
        "acme",
        SetBudgetRequest { amount: 10_000_000 },
    )
    .await
    .unwrap();
    let mut crossed = Vec::new();
    for (i, quantity) in [4, 1, 2, 1, 1, 1, 3, 5].into_iter().enumerate() {
        usage::record(
            &t.app,
            &root,
            "acme",
            rec("gpu_seconds", quantity, "alice", &format!("g{i}")),
        )
        .await
        .unwrap();
        crossed.push(events_of(&t, "budget.threshold_crossed").await.len());
    }
    // Spent after each record: 4, 5, 7, 8, 9, 10, 13, 18.
    assert_eq!(crossed, [0, 1, 1, 2, 2, 3, 3, 3]);
    let events = events_of(&t, "budget.threshold_crossed").await;
    let by_threshold: BTreeMap<u64, u64> = events
        .iter()
        .map(|e| {
            (
                e.data["threshold"].as_u64().unwrap(),
                e.data["spent"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        by_threshold,
        BTreeMap::from([(50, 5_000_000), (80, 8_000_000), (100, 10_000_000)])
    );
    t.views_caught_up().await;
    let budget = usage::budget(&t.app, &root, "acme", PeriodQuery::default())
        .await
        .unwrap();
    assert_eq!(budget.spent, 18_000_000);
    assert_eq!(budget.remaining, 0);
    assert_eq!(budget.thresholds_crossed, [50, 80, 100]);
}

#[tokio::test]
async fn a_batch_counts_its_records_and_its_repeated_keys_once() {
    let t = TestApp::new().await;
    t.create_tenant("acme").await;
    let root = t.root().await;
    let records = vec![
        rec("api_calls", 2, "alice", "x1"),
        rec("api_calls", 2, "alice", "x1"),
        rec("api_calls", 3, "bob", "x2"),
        rec("storage.gb", 7, "bob", "x3"),
    ];
    let r = usage::record_batch(&t.app, &root, "acme", UsageBatch { records })
        .await
        .unwrap();
    assert_eq!((r.accepted, r.duplicates), (3, 1));
    assert_eq!(used(&t, "acme", "api_calls", None).await.used, 5);
    assert_eq!(used(&t, "acme", "storage.gb", None).await.used, 7);
    // One event per subject and meter in the minute, not one per record.
    assert_eq!(events_of(&t, "usage.recorded").await.len(), 3);
}

#[tokio::test]
async fn a_batch_over_1000_records_and_bad_records_are_refused() {
    let t = TestApp::new().await;
    t.create_tenant("acme").await;
    let root = t.root().await;
    let big = UsageBatch {
        records: (0..1001)
            .map(|i| rec("api_calls", 1, "alice", &format!("k{i}")))
            .collect(),
    };
    assert!(matches!(
        usage::record_batch(&t.app, &root, "acme", big).await,
        Err(AppError::Invalid(_))
    ));
    let empty = UsageBatch { records: vec![] };
    assert!(matches!(
        usage::record_batch(&t.app, &root, "acme", empty).await,
        Err(AppError::Invalid(_))
    ));
    for bad in [
        rec("API Calls", 1, "alice", "k"),
        rec("api_calls", 0, "alice", "k"),
        rec("api_calls", 1, "", "k"),
        rec("api_calls", 1, "alice", "with space"),
        rec("api_calls", 1, "alice", &"k".repeat(201)),
    ] {
        let e = usage::record(&t.app, &root, "acme", bad.clone()).await;
        assert!(matches!(e, Err(AppError::Invalid(_))), "{bad:?}: {e:?}");
    }
    let e = usage::read(
        &t.app,
        &root,
        "acme",
        UsageQuery {
            meter: Some("api_calls".into()),
            subject: None,
            period: Some("2026-13".into()),
        },
    )
    .await;
    assert!(matches!(e, Err(AppError::Invalid(_))), "{e:?}");
    assert!(events_of(&t, "usage.recorded").await.is_empty());
}

#[tokio::test]
async fn recording_needs_usage_create_and_other_tenants_do_not_exist() {
    let t = TestApp::new().await;
    let viewer = t.member("acme").await;
    t.assign("acme", &viewer.user_id, "viewer").await;
    let viewer = t.as_member(&viewer).await;
    assert!(matches!(
        usage::record(&t.app, &viewer, "acme", rec("api_calls", 1, "a", "k")).await,
        Err(AppError::Forbidden(_))
    ));
    t.create_tenant("globex").await;
    assert!(matches!(
        usage::record(&t.app, &viewer, "globex", rec("api_calls", 1, "a", "k")).await,
        Err(AppError::NotFound(_))
    ));
    assert!(matches!(
        usage::set_quota(
            &t.app,
            &viewer,
            "acme",
            "api_calls",
            SetQuotaRequest {
                limit: 1,
                hard: true
            }
        )
        .await,
        Err(AppError::Forbidden(_))
    ));
}

#[tokio::test]
async fn a_record_the_stopped_writer_cannot_take_is_refused_and_reserves_nothing() {
    let t = TestApp::new().await;
    t.create_tenant("acme").await;
    set_quota(&t, "acme", "api_calls", 1, true).await;
    let root = t.root().await;
    t.shut_down();
    t.app.usage_writer.stopped().await;
    for key in ["late-1", "late-2"] {
        // Were the first reservation kept, the second would be over the quota.
        let e = usage::record(&t.app, &root, "acme", rec("api_calls", 1, "alice", key)).await;
        assert!(
            matches!(e, Err(AppError::Unavailable { .. })),
            "{key}: {e:?}"
        );
    }
}

#[tokio::test]
async fn a_tenants_plan_sets_its_quotas_as_configured_and_follows_plan_changes() {
    use custodian_app::plans::QuotaRule;
    use custodian_domain::tenant::{Plan, TenantCommand};
    let t = TestApp::with_options(|o| {
        o.plans.team.quotas.insert(
            "api_calls".into(),
            QuotaRule {
                limit: 2,
                hard: true,
            },
        );
    })
    .await;
    t.create_tenant("acme").await;
    record_each(&t, "api_calls", ["f1", "f2", "f3"].map(String::from)).await;
    let root = t.root().await;
    let position = t
        .tenant_command("acme", TenantCommand::ChangePlan { plan: Plan::Team })
        .await;
    t.app.usage.wait_for(position).await.unwrap();
    assert_eq!(t.app.usage.plan("acme").unwrap(), Plan::Team);
    // On the team plan as configured, 3 of 2 are used: nothing more passes this month.
    assert!(matches!(
        usage::record(&t.app, &root, "acme", rec("api_calls", 1, "alice", "t1")).await,
        Err(AppError::QuotaExceeded { .. })
    ));
    let view = used(&t, "acme", "api_calls", None).await;
    assert_eq!(
        (view.used, view.limit, view.remaining),
        (3, Some(2), Some(0))
    );
}

#[tokio::test]
async fn usage_events_split_to_fit_a_store_with_a_small_event_size_limit() {
    let t = TestApp::with_store_options(
        custodian_store::StoreOptions {
            max_event_bytes: 2_048,
            ..custodian_store::StoreOptions::default()
        },
        |_| {},
    )
    .await;
    t.create_tenant("acme").await;
    let records = (0..200)
        .map(|i| rec("api_calls", 1, "alice", &format!("{i:0>150}")))
        .collect();
    let r = usage::record_batch(&t.app, &t.root().await, "acme", UsageBatch { records })
        .await
        .unwrap();
    assert_eq!(r.accepted, 200);
    assert_eq!(used(&t, "acme", "api_calls", None).await.used, 200);
    let events = events_of(&t, "usage.recorded").await;
    let keys: usize = events
        .iter()
        .map(|e| e.data["idempotency_keys"].as_array().unwrap().len())
        .sum();
    assert_eq!(keys, 200);
    assert!(events.len() > 10, "{} events", events.len());
}

#[tokio::test]
async fn spending_that_would_overflow_the_totals_is_refused_and_counts_nothing() {
    let t = TestApp::new().await;
    t.create_tenant("acme").await;
    let root = t.root().await;
    let costly = |unit_cost| SetMeterRequest { unit_cost };
    let too_dear = usage::set_meter(
        &t.app,
        &root,
        "acme",
        "gpu_seconds",
        costly(1_000_000_000_001),
    )
    .await;
    assert!(
        matches!(too_dear, Err(AppError::Invalid(_))),
        "{too_dear:?}"
    );
    usage::set_meter(
        &t.app,
        &root,
        "acme",
        "gpu_seconds",
        costly(1_000_000_000_000),
    )
    .await
    .unwrap();
    // Ten million units at a million a unit: more than a 64-bit total holds.
    let huge = usage::record(
        &t.app,
        &root,
        "acme",
        rec("gpu_seconds", 10_000_000, "alice", "h1"),
    )
    .await;
    assert!(matches!(huge, Err(AppError::Invalid(_))), "{huge:?}");
    usage::record(&t.app, &root, "acme", rec("gpu_seconds", 2, "alice", "h2"))
        .await
        .unwrap();
    let view = used(&t, "acme", "gpu_seconds", None).await;
    assert_eq!(view.used, 2, "the refused record counted nothing");
}
