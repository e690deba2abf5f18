//! A view folded live, while commands are being appended, equals the same view rebuilt from
//! position 0, and both equal the domain's own fold of the events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use custodian_domain::tenant::{self, Plan, Tenant, TenantCommand, TenantStatus};
use custodian_domain::{NewEvent, Timestamp};
use custodian_projections::audit::AuditView;
use custodian_projections::tenants::TenantsView;
use custodian_projections::{Projection, Projections, Tables, ViewDb, request_rebuild};
use custodian_store::ExpectedVersion;
use custodian_testkit::sample::{OCCURRED_AT, decided};
use custodian_testkit::{Ledger, stream};
use proptest::prelude::*;
use sqlx::Row;

use crate::support::Views as _;

type Row8 = (String, String, String, String, String, i64);

fn command() -> impl Strategy<Value = (usize, TenantCommand)> {
    let plan = prop_oneof![Just(Plan::Free), Just(Plan::Team), Just(Plan::Enterprise)];
    let cmd = prop_oneof![
        ("[A-Za-z ]{1,12}", plan.clone()).prop_map(|(name, plan)| TenantCommand::Create {
            name,
            slug: "acme".into(),
            plan
        }),
        "[A-Za-z ]{1,12}".prop_map(|name| TenantCommand::Rename { name }),
        plan.prop_map(|plan| TenantCommand::ChangePlan { plan }),
        "[a-z ]{1,10}".prop_map(|reason| TenantCommand::Suspend { reason }),
        Just(TenantCommand::Reactivate),
    ];
    (0usize..4, cmd)
}

async fn snapshot(views: &ViewDb, projections: &Projections) -> Vec<Row8> {
    let tables = projections
        .active_tables("tenants")
        .expect("a serving generation");
    sqlx::query(&format!(
        "SELECT tenant_id, name, slug, plan, status, version FROM {} ORDER BY tenant_id",
        tables.name("tenants")
    ))
    .fetch_all(views.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
    .collect()
}

fn plan_str(p: Plan) -> &'static str {
    match p {
        Plan::Free => "free",
        Plan::Team => "team",
        Plan::Enterprise => "enterprise",
    }
}

async fn check(ledger: Ledger, history: Vec<(usize, TenantCommand)>) {
    let store = ledger.open().await;
    let views = ledger.views().await;
    let projections = ledger
        .start(
            &store,
            vec![
                Arc::new(TenantsView) as Arc<dyn Projection>,
                Arc::new(AuditView) as Arc<dyn Projection>,
            ],
        )
        .await;

    // Decide and append each command while the projection follows live.
    let mut state: BTreeMap<usize, (Option<Tenant>, u64)> = BTreeMap::new();
    for (t, cmd) in history {
        let (current, version) = state.entry(t).or_insert((None, 0));
        let cmd = match cmd {
            TenantCommand::Create { name, plan, .. } => TenantCommand::Create {
                name,
                slug: format!("tenant-{t}"),
                plan,
            },
            other => other,
        };
        let Ok(events) = tenant::decide(current.as_ref(), cmd) else {
            continue;
        };
        if events.is_empty() {
            continue;
        }
        let new: Vec<NewEvent> = events
            .iter()
            .map(|e| decided(e, Timestamp::parse(OCCURRED_AT).unwrap()))
            .collect();
        store
            .append(
                &stream(&format!("_system/tenant/tnt_{t}")),
                ExpectedVersion::Exact(*version),
                new,
            )
            .await
            .unwrap();
        for e in &events {
            *current = tenant::evolve(current.take(), e);
            *version += 1;
        }
    }
    let head = store.head().await.unwrap().position;
    projections
        .wait_for(head, Duration::from_secs(20))
        .await
        .unwrap();
    let live = if head == 0 {
        Vec::new()
    } else {
        snapshot(&views, &projections).await
    };

    // The domain's own fold is the oracle.
    let expected: Vec<Row8> = state
        .iter()
        .filter_map(|(t, (tenant, version))| {
            tenant.as_ref().map(|x| {
                (
                    format!("tnt_{t}"),
                    x.name.clone(),
                    x.slug.clone(),
                    plan_str(x.plan).to_owned(),
                    match x.status {
                        TenantStatus::Active => "active".to_owned(),
                        TenantStatus::Suspended => "suspended".to_owned(),
                    },
                    *version as i64,
                )
            })
        })
        .collect();
    assert_eq!(live, expected);
    if head == 0 {
        projections.stop().await;
        return;
    }

    // Rebuild from 0 into a new generation; the old one serves until the swap.
    let before = projections.active_tables("tenants").unwrap();
    let generation = request_rebuild(&views, "tenants", 1).await.unwrap();
    for _ in 0..2000 {
        if projections
            .active_tables("tenants")
            .is_some_and(|t| t != before)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let after = projections.active_tables("tenants").unwrap();
    assert_ne!(after, before, "generation {generation} was swapped in");
    projections
        .wait_for(head, Duration::from_secs(20))
        .await
        .unwrap();
    let rebuilt = snapshot(&views, &projections).await;
    assert_eq!(rebuilt, live);

    // The audit view too: one row per event, in the log's order, rebuilt alike.
    let audit_before = projections.active_tables("audit").unwrap();
    let audit_live = audit_snapshot(&views, &audit_before).await;
    let records = ledger.records().await;
    let expected: Vec<(i64, String)> = records
        .iter()
        .map(|r| (r.position as i64, r.event_type.to_string()))
        .collect();
    assert_eq!(audit_live, expected);
    request_rebuild(&views, "audit", AuditView.version())
        .await
        .unwrap();
    for _ in 0..2000 {
        if projections
            .active_tables("audit")
            .is_some_and(|t| t != audit_before)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let audit_after = projections.active_tables("audit").unwrap();
    assert_ne!(audit_after, audit_before, "the audit view was rebuilt");
    assert_eq!(audit_snapshot(&views, &audit_after).await, audit_live);
    projections.stop().await;
}

async fn audit_snapshot(views: &ViewDb, tables: &Tables) -> Vec<(i64, String)> {
    sqlx::query(&format!(
        "SELECT position, event_type FROM {} ORDER BY position",
        tables.name("events")
    ))
    .fetch_all(views.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

    #[test]
    fn sqlite_live_view_equals_rebuilt_view(history in proptest::collection::vec(command(), 0..30)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(check(Ledger::sqlite(), history));
    }

    #[test]
    fn postgres_live_view_equals_rebuilt_view(history in proptest::collection::vec(command(), 0..30)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            if let Some(ledger) = Ledger::postgres().await {
                check(ledger, history).await;
            }
        });
    }
}
