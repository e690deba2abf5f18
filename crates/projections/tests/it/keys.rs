//! The `keys` view folds keys' lifecycles (issue, update, rotation, revocation, recorded use) into
//! rows listed by tenant, owner and status, never holding a secret; a rebuilt view equals the live
//! one.

use std::sync::Arc;
use std::time::Duration;

use custodian_domain::Timestamp;
use custodian_domain::key::{KeyEvent, RateLimit, UsageLimit};
use custodian_domain::policy::{Permission, Scope};
use custodian_domain::secret::TokenHash;
use custodian_projections::keys::{self as keys_view, KeyFilter, KeysView, Status};
use custodian_projections::{Projection, request_rebuild};
use custodian_store::ExpectedVersion;
use custodian_testkit::sample::decided;
use custodian_testkit::{Ledger, stream};

use crate::support::Views as _;

custodian_testkit::on_every_backend!(keys_are_folded_and_listed_by_owner_and_status);

const WAIT: Duration = Duration::from_secs(20);

fn ts(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

fn issued(owner: &str, expires_at: Option<&str>) -> KeyEvent {
    KeyEvent::Issued {
        owner: owner.into(),
        name: "bot".into(),
        scopes: vec![Permission::parse("project:read").unwrap()],
        on: Some(Scope::ResourceType("project".into())),
        expires_at: expires_at.map(ts),
        ip_allowlist: vec!["10.0.0.0/8".parse().unwrap()],
        ratelimit: None,
        usage_limit: Some(UsageLimit {
            remaining: 10,
            refill: None,
        }),
        hash: TokenHash("ab".repeat(32)),
        preview: "cst_abcd…wxyz".into(),
    }
}

async fn keys_are_folded_and_listed_by_owner_and_status(ledger: Ledger) {
    let store = ledger.open().await;
    let views = ledger.views().await;
    let projections = ledger
        .start(&store, vec![Arc::new(KeysView) as Arc<dyn Projection>])
        .await;
    let pool = views.pool();
    let append = |id: &str, at: &str, events: Vec<KeyEvent>| {
        let store = store.clone();
        let s = stream(&format!("acme/key/{id}"));
        let at = ts(at);
        async move {
            store
                .append(
                    &s,
                    ExpectedVersion::Any,
                    events.iter().map(|e| decided(e, at)).collect(),
                )
                .await
                .unwrap()
        }
    };
    append(
        "key_a",
        "2026-03-01T12:00:00Z",
        vec![issued("user_a", None)],
    )
    .await;
    append(
        "key_a",
        "2026-03-01T12:05:00Z",
        vec![
            KeyEvent::Updated {
                name: Some("renamed".into()),
                ratelimit: Some(Some(RateLimit {
                    limit: 5,
                    window_seconds: 1,
                })),
                usage_limit: Some(None),
                ip_allowlist: None,
            },
            KeyEvent::Rotated {
                hash: TokenHash("cd".repeat(32)),
                preview: "cst_efgh…stuv".into(),
                previous_valid_until: ts("2026-03-01T13:00:00Z"),
            },
        ],
    )
    .await;
    for (window, last) in [
        ("2026-03-01T12:07:00Z", "2026-03-01T12:07:30Z"),
        ("2026-03-01T12:06:00Z", "2026-03-01T12:06:59Z"),
    ] {
        append(
            "key_a",
            last,
            vec![KeyEvent::Used {
                window_start: ts(window),
                uses: 3,
                cost: 3,
                first_used_at: ts(window),
                last_used_at: ts(last),
                remaining: None,
            }],
        )
        .await;
    }
    append(
        "key_b",
        "2026-03-01T12:00:00Z",
        vec![issued("user_b", None)],
    )
    .await;
    append("key_b", "2026-03-01T12:01:00Z", vec![KeyEvent::Revoked {}]).await;
    let head = append(
        "key_c",
        "2026-03-01T12:00:00Z",
        vec![issued("user_a", Some("2026-03-01T12:30:00Z"))],
    )
    .await
    .last_position;
    projections.wait_for(head, WAIT).await.unwrap();
    let tables = projections.active_tables("keys").unwrap();

    let a = keys_view::find_key(pool, &tables, "acme", "key_a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.name, "renamed");
    assert_eq!(a.preview, "cst_efgh…stuv");
    assert_eq!(a.scopes, r#"["project:read"]"#);
    assert_eq!(
        a.on_scope.as_deref(),
        Some(r#"{"resource_type":"project"}"#)
    );
    assert_eq!(
        a.ratelimit.as_deref(),
        Some(r#"{"limit":5,"window_seconds":1}"#)
    );
    assert_eq!(a.usage_limit, None);
    assert_eq!(a.ip_allowlist, r#"["10.0.0.0/8"]"#);
    assert_eq!(a.uses, 6);
    assert_eq!(
        a.last_used_at.as_deref(),
        Some("2026-03-01T12:07:30.000000Z"),
        "windows recorded out of order keep the latest use"
    );
    assert_eq!(
        a.previous_valid_until.as_deref(),
        Some("2026-03-01T13:00:00.000000Z")
    );
    let all = format!("{a:?}");
    assert!(!all.contains(&"ab".repeat(32)) && !all.contains(&"cd".repeat(32)));

    let list = |owner: Option<&str>, status: Option<Status>, now: &str| {
        let filter = KeyFilter {
            owner: owner.map(str::to_owned),
            status,
            now: ts(now).to_string(),
        };
        let tables = tables.clone();
        async move {
            keys_view::list_keys(pool, &tables, "acme", &filter, None, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.key_id)
                .collect::<Vec<_>>()
        }
    };
    let early = "2026-03-01T12:10:00Z";
    let late = "2026-03-01T12:30:00Z";
    assert_eq!(list(None, None, early).await, ["key_a", "key_b", "key_c"]);
    assert_eq!(list(Some("user_a"), None, early).await, ["key_a", "key_c"]);
    assert_eq!(
        list(None, Some(Status::Active), early).await,
        ["key_a", "key_c"]
    );
    assert_eq!(list(None, Some(Status::Active), late).await, ["key_a"]);
    assert_eq!(list(None, Some(Status::Expired), late).await, ["key_c"]);
    assert_eq!(list(None, Some(Status::Revoked), late).await, ["key_b"]);
    let page = keys_view::list_keys(
        pool,
        &tables,
        "acme",
        &KeyFilter::default(),
        Some("key_a"),
        1,
    )
    .await
    .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].key_id, "key_b");

    // A rebuild from position 0 gives the same rows.
    let before = list(None, None, early).await;
    let rows_before: Vec<_> = view_rows(pool, &tables).await;
    request_rebuild(&views, "keys", KeysView.version())
        .await
        .unwrap();
    let mut rebuilt = None;
    for _ in 0..400 {
        if let Some(t) = projections.active_tables("keys")
            && t != tables
        {
            rebuilt = Some(t);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rebuilt = rebuilt.expect("the rebuild was not swapped in");
    projections.wait_for(head, WAIT).await.unwrap();
    assert_eq!(view_rows(pool, &rebuilt).await, rows_before);
    assert_eq!(before.len(), 3);
}

async fn view_rows(
    pool: &sqlx::AnyPool,
    tables: &custodian_projections::Tables,
) -> Vec<keys_view::KeyRow> {
    keys_view::list_keys(pool, tables, "acme", &KeyFilter::default(), None, 100)
        .await
        .unwrap()
}
