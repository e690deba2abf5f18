//! The `tenants` view's queries: one tenant by id, and pages of tenants by id, as their commands
//! left them.

use std::sync::Arc;
use std::time::Duration;

use custodian_domain::tenant::{self, Plan, Tenant, TenantCommand, TenantStatus};
use custodian_domain::{Actor, DomainEvent, EventType, NewEvent, Timestamp};
use custodian_projections::Projection;
use custodian_projections::tenants::{self as tenants_view, TenantRow, TenantsView};
use custodian_store::{EventStore, ExpectedVersion};

use custodian_testkit::{Ledger, stream};

use crate::support::Views as _;

custodian_testkit::on_every_backend!(tenants_are_found_by_id_and_listed_by_page);

/// Decides `commands` on the tenant `slug` one second apart from `at`, and appends each result.
async fn run(
    store: &Arc<dyn EventStore>,
    slug: &str,
    at: &mut Timestamp,
    commands: Vec<TenantCommand>,
) {
    let mut state: Option<Tenant> = None;
    let mut version = 0;
    for command in commands {
        *at = at.plus(time::Duration::seconds(1));
        let events = tenant::decide(state.as_ref(), command).unwrap();
        let new = events
            .iter()
            .map(|e| NewEvent {
                id: uuid::Uuid::now_v7(),
                event_type: EventType::parse(e.event_type()).unwrap(),
                schema: e.schema_version(),
                actor: Actor::system(),
                occurred_at: *at,
                correlation_id: None,
                causation_id: None,
                data: e.data(),
            })
            .collect();
        store
            .append(
                &stream(&format!("_system/tenant/{slug}")),
                ExpectedVersion::Exact(version),
                new,
            )
            .await
            .unwrap();
        version += events.len() as u64;
        state = events.iter().fold(state, tenant::evolve);
    }
}

fn create(slug: &str, plan: Plan) -> TenantCommand {
    TenantCommand::Create {
        name: format!("{slug} Inc"),
        slug: slug.to_owned(),
        plan,
    }
}

async fn tenants_are_found_by_id_and_listed_by_page(ledger: Ledger) {
    let store = ledger.open().await;
    let views = ledger.views().await;
    let projections = ledger
        .start(&store, vec![Arc::new(TenantsView) as Arc<dyn Projection>])
        .await;
    let start = Timestamp::parse("2026-11-25T12:00:00Z").unwrap();
    let mut at = start;
    for slug in ["delta", "acme", "gamma"] {
        run(&store, slug, &mut at, vec![create(slug, Plan::Free)]).await;
    }
    run(
        &store,
        "beta",
        &mut at,
        vec![
            create("beta", Plan::Team),
            TenantCommand::Rename {
                name: "Beta Corp".into(),
            },
            TenantCommand::ChangePlan {
                plan: Plan::Enterprise,
            },
            TenantCommand::Suspend {
                reason: "unpaid".into(),
            },
        ],
    )
    .await;
    let head = store.head().await.unwrap().position;
    projections
        .wait_for(head, Duration::from_secs(20))
        .await
        .unwrap();
    let tables = projections.active_tables("tenants").unwrap();
    let pool = views.pool();

    let beta = tenants_view::find_tenant(pool, &tables, "beta")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        beta,
        TenantRow {
            tenant_id: "beta".into(),
            slug: "beta".into(),
            name: "Beta Corp".into(),
            plan: Plan::Enterprise,
            status: TenantStatus::Suspended,
            version: 4,
            created_at: start.plus(time::Duration::seconds(4)).to_string(),
            updated_at: at.to_string(),
        }
    );
    assert_eq!(
        tenants_view::find_tenant(pool, &tables, "nope")
            .await
            .unwrap(),
        None
    );

    let ids = |rows: Vec<TenantRow>| rows.into_iter().map(|t| t.tenant_id).collect::<Vec<_>>();
    assert_eq!(
        ids(tenants_view::list_tenants(pool, &tables, None, 50)
            .await
            .unwrap()),
        ["acme", "beta", "delta", "gamma"]
    );
    let first = tenants_view::list_tenants(pool, &tables, None, 3)
        .await
        .unwrap();
    assert_eq!(ids(first), ["acme", "beta", "delta"]);
    let rest = tenants_view::list_tenants(pool, &tables, Some("delta"), 3)
        .await
        .unwrap();
    assert_eq!(ids(rest), ["gamma"]);
    assert!(
        tenants_view::list_tenants(pool, &tables, Some("gamma"), 3)
            .await
            .unwrap()
            .is_empty()
    );
    projections.stop().await;
}
