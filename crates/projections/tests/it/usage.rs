//! The `usage` view: usage per period, meter and subject, quota status and budget status, as the
//! usage events left them, per tenant; and a rebuild from position 0 gives the same answers.

use std::sync::Arc;
use std::time::Duration;

use custodian_domain::usage::{self, Record, UsageEvent};
use custodian_domain::{Actor, DomainEvent, EventType, NewEvent, Timestamp};
use custodian_projections::usage::{
    self as usage_view, BudgetRow, MeterRow, QuotaOverride, UsageView,
};
use custodian_projections::{Projection, Projections, Tables, ViewDb, request_rebuild};
use custodian_store::{EventStore, ExpectedVersion};
use custodian_testkit::{Ledger, stream};

use crate::support::Views as _;

custodian_testkit::on_every_backend!(usage_quotas_and_budgets_are_folded_per_tenant_and_period);

async fn append(store: &Arc<dyn EventStore>, s: &str, at: Timestamp, events: &[UsageEvent]) {
    let new = events
        .iter()
        .map(|e| NewEvent {
            id: uuid::Uuid::now_v7(),
            event_type: EventType::parse(e.event_type()).unwrap(),
            schema: e.schema_version(),
            actor: Actor::system(),
            occurred_at: at,
            correlation_id: None,
            causation_id: None,
            data: e.data(),
        })
        .collect();
    store
        .append(&stream(s), ExpectedVersion::Any, new)
        .await
        .unwrap();
}

fn rec(at: Timestamp, subject: &str, meter: &str, quantity: u64, key: &str) -> Record {
    Record {
        at,
        subject: subject.into(),
        meter: meter.into(),
        quantity,
        cost: quantity * 1_000,
        idempotency_key: key.into(),
    }
}

/// What the queries answer for `tenant`, for comparing a rebuild with the live view.
async fn answers(
    pool: &sqlx::AnyPool,
    t: &Tables,
    tenant: &str,
) -> (
    Vec<MeterRow>,
    Vec<MeterRow>,
    Vec<QuotaOverride>,
    BudgetRow,
    u64,
) {
    (
        usage_view::meters(pool, t, tenant, "2026-03")
            .await
            .unwrap(),
        usage_view::meters(pool, t, tenant, "2026-04")
            .await
            .unwrap(),
        usage_view::quota_overrides(pool, t, tenant).await.unwrap(),
        usage_view::budget(pool, t, tenant, "2026-03")
            .await
            .unwrap(),
        usage_view::usage_of(pool, t, tenant, "2026-03", "api_calls", Some("alice"))
            .await
            .unwrap(),
    )
}

async fn synced(store: &Arc<dyn EventStore>, projections: &Projections) -> Tables {
    let head = store.head().await.unwrap().position;
    projections
        .wait_for(head, Duration::from_secs(20))
        .await
        .unwrap();
    projections.active_tables("usage").unwrap()
}

async fn usage_quotas_and_budgets_are_folded_per_tenant_and_period(ledger: Ledger) {
    let store = ledger.open().await;
    let views: ViewDb = ledger.views().await;
    let projections = ledger
        .start(&store, vec![Arc::new(UsageView) as Arc<dyn Projection>])
        .await;
    let march = Timestamp::parse("2026-03-10T12:00:30Z").unwrap();
    let april = Timestamp::parse("2026-04-01T00:00:05Z").unwrap();
    for tenant in ["acme", "globex"] {
        let settings = format!("{tenant}/usage/settings");
        let records = format!("{tenant}/usage/records");
        append(
            &store,
            &settings,
            march,
            &[
                UsageEvent::QuotaSet {
                    meter: "api_calls".into(),
                    limit: 10,
                    hard: true,
                },
                UsageEvent::QuotaSet {
                    meter: "events".into(),
                    limit: 3,
                    hard: false,
                },
                UsageEvent::QuotaSet {
                    meter: "events".into(),
                    limit: 4,
                    hard: false,
                },
                UsageEvent::QuotaSet {
                    meter: "gpu".into(),
                    limit: 1,
                    hard: true,
                },
                UsageEvent::QuotaCleared {
                    meter: "gpu".into(),
                },
                UsageEvent::MeterCostSet {
                    meter: "api_calls".into(),
                    unit_cost: 1_000,
                },
                UsageEvent::BudgetSet { amount: 20_000 },
            ],
        )
        .await;
        // Two flushes in one minute: two events for alice's api_calls, summed by the view.
        let mut first = usage::roll_up(&[
            rec(march, "alice", "api_calls", 4, "k1"),
            rec(march, "bob", "api_calls", 3, "k2"),
            rec(march, "bob", "events", 5, "k3"),
        ]);
        first.push(UsageEvent::QuotaWarning {
            period: "2026-03".into(),
            meter: "events".into(),
            used: 5,
            limit: 4,
        });
        first.push(UsageEvent::BudgetThresholdCrossed {
            period: "2026-03".into(),
            threshold: 50,
            spent: 12_000,
            budget: 20_000,
        });
        append(&store, &records, march, &first).await;
        let mut second = usage::roll_up(&[rec(march, "alice", "api_calls", 3, "k4")]);
        second.push(UsageEvent::QuotaExceeded {
            period: "2026-03".into(),
            window: usage::window_of(march),
            subject: "alice".into(),
            meter: "api_calls".into(),
            refused: 2,
            quantity: 2,
            limit: 10,
        });
        second.push(UsageEvent::BudgetThresholdCrossed {
            period: "2026-03".into(),
            threshold: 80,
            spent: 16_000,
            budget: 20_000,
        });
        append(&store, &records, march, &second).await;
        append(
            &store,
            &records,
            april,
            &usage::roll_up(&[rec(april, "alice", "api_calls", 1, "k5")]),
        )
        .await;
    }
    // Another tenant's records never show in acme's answers.
    append(
        &store,
        "globex/usage/records",
        march,
        &usage::roll_up(&[rec(march, "alice", "api_calls", 100, "g1")]),
    )
    .await;

    let t = synced(&store, &projections).await;
    let pool = views.pool();
    let (march_meters, april_meters, overrides, budget, alice) = answers(pool, &t, "acme").await;
    assert_eq!(
        march_meters,
        [
            MeterRow {
                meter: "api_calls".into(),
                used: 10,
                refused: 2,
                warned: false,
            },
            MeterRow {
                meter: "events".into(),
                used: 5,
                refused: 0,
                warned: true,
            },
        ]
    );
    assert_eq!(
        april_meters,
        [MeterRow {
            meter: "api_calls".into(),
            used: 1,
            refused: 0,
            warned: false,
        }]
    );
    assert_eq!(
        overrides,
        [
            QuotaOverride {
                meter: "api_calls".into(),
                limit: 10,
                hard: true,
            },
            QuotaOverride {
                meter: "events".into(),
                limit: 4,
                hard: false,
            },
        ]
    );
    assert_eq!(
        budget,
        BudgetRow {
            amount: 20_000,
            spent: 15_000,
            crossed: vec![50, 80],
        }
    );
    assert_eq!(alice, 7);
    assert_eq!(
        usage_view::usage_of(pool, &t, "globex", "2026-03", "api_calls", None)
            .await
            .unwrap(),
        110
    );
    assert_eq!(
        usage_view::usage_of(pool, &t, "acme", "2026-05", "api_calls", None)
            .await
            .unwrap(),
        0
    );

    // A rebuild from position 0 answers the same.
    let live = (
        answers(pool, &t, "acme").await,
        answers(pool, &t, "globex").await,
    );
    request_rebuild(&views, "usage", UsageView.version())
        .await
        .unwrap();
    for _ in 0..6000 {
        if projections.active_tables("usage").is_some_and(|n| n != t) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rebuilt = synced(&store, &projections).await;
    assert_ne!(rebuilt, t, "the usage view was rebuilt");
    assert_eq!(
        (
            answers(pool, &rebuilt, "acme").await,
            answers(pool, &rebuilt, "globex").await,
        ),
        live
    );
}
