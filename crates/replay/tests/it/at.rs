//! `at`: the views as of a position or a time, built by the live service's projections into a
//! fresh SQLite file, equal the live views captured when the head stood there.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use custodian_domain::Timestamp;
use custodian_domain::policy::Subject;
use custodian_domain::tenant::{Plan, TenantCommand};
use custodian_projections::{GenerationState, Projections, RuntimeOptions, ViewDb, statuses};
use custodian_replay::at::{Moment, build};
use custodian_testkit::Ledger;
use indicatif::ProgressDrawTarget;
use proptest::prelude::*;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use crate::histories::{World, assign, catalog, grant, step};
use crate::support::run_binary;

custodian_testkit::on_every_backend!(
    at_a_position_writes_the_views_there_and_says_so,
    at_a_time_stops_before_the_first_later_event,
    an_existing_file_is_kept_unless_forced,
    a_position_past_the_head_exits_2_and_writes_nothing,
);

/// Every row of every view table, by `view.table`, sorted; values as text (`None` for NULL).
type Views = BTreeMap<String, Vec<Vec<Option<String>>>>;

/// The rows of every serving view in `db`, found through the registry as the live service finds
/// them; also each view's registered position.
async fn views(db: &ViewDb) -> (Views, BTreeMap<String, u64>) {
    let serving: BTreeMap<String, (i64, u64)> = statuses(db)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.state == GenerationState::Active)
        .map(|s| (s.name, (s.generation, s.position)))
        .collect();
    let mut all = Views::new();
    let mut positions = BTreeMap::new();
    for projection in custodian_projections::all() {
        let name = projection.name();
        let (generation, position) = serving[name];
        positions.insert(name.to_owned(), position);
        for table in projection.tables() {
            let rows = sqlx::query(&format!("SELECT * FROM {name}_g{generation}_{table}"))
                .fetch_all(db.pool())
                .await
                .unwrap();
            let mut rows: Vec<Vec<Option<String>>> = rows
                .iter()
                .map(|row| {
                    (0..row.len())
                        .map(|i| match row.try_get::<Option<i64>, _>(i) {
                            Ok(n) => n.map(|n| n.to_string()),
                            Err(_) => row.try_get::<Option<String>, _>(i).unwrap(),
                        })
                        .collect()
                })
                .collect();
            rows.sort();
            all.insert(format!("{name}.{table}"), rows);
        }
    }
    (all, positions)
}

async fn start_live(ledger: &Ledger, store: &Arc<dyn custodian_store::EventStore>) -> Projections {
    Projections::start(
        ViewDb::open(&ledger.location).await.unwrap(),
        store.clone(),
        custodian_projections::all(),
        RuntimeOptions {
            batch_size: 7,
            catch_up_batch_size: 7,
            min_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(50),
            idle_check: Duration::from_millis(50),
        },
        CancellationToken::new(),
    )
    .await
    .unwrap()
}

async fn at_position(ledger: &Ledger, n: u64, out: &Path) -> Views {
    let report = build(
        &ledger.location,
        Moment::Position(n),
        out,
        false,
        ProgressDrawTarget::hidden(),
    )
    .await
    .unwrap();
    assert_eq!(report.position, n);
    let db = ViewDb::open(&out.display().to_string()).await.unwrap();
    let (rows, positions) = views(&db).await;
    db.pool().close().await;
    assert!(positions.values().all(|p| *p == n), "{positions:?} at {n}");
    rows
}

async fn property(ledger: Ledger, history: Vec<(crate::histories::Step, bool)>) {
    let store = ledger.open().await;
    let live = start_live(&ledger, &store).await;
    let live_db = ViewDb::open(&ledger.location).await.unwrap();
    let mut world = World::new(store.clone());
    let mut captured = vec![];
    let last = history.len().saturating_sub(1);
    for (i, (step, capture)) in history.iter().enumerate() {
        world.step(step).await;
        let head = world.head().await;
        // A live view serves once it has applied something; position 0 is checked below.
        if head > 0 && (*capture || i == last) {
            live.wait_for(head, Duration::from_secs(20)).await.unwrap();
            // Nothing else appends: the live views stand exactly at the head.
            captured.push((head, views(&live_db).await.0));
        }
    }
    live.stop().await;
    live_db.pool().close().await;
    store.close().await;

    let dir = tempfile::tempdir().unwrap();
    let empty = at_position(&ledger, 0, &dir.path().join("at-0.db")).await;
    assert!(empty.values().all(Vec::is_empty), "{empty:?}");
    for (i, (n, live_rows)) in captured.into_iter().enumerate() {
        let rebuilt = at_position(&ledger, n, &dir.path().join(format!("at-{}.db", i + 1))).await;
        assert_eq!(rebuilt, live_rows, "views at position {n}");
    }
}

fn history() -> impl Strategy<Value = Vec<(crate::histories::Step, bool)>> {
    proptest::collection::vec((step(), proptest::bool::weighted(0.2)), 1..30)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, .. ProptestConfig::default() })]

    #[test]
    fn sqlite_at_position_views_equal_the_live_views_captured_at_that_head(history in history()) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(property(Ledger::sqlite(), history));
    }

    #[test]
    fn postgres_at_position_views_equal_the_live_views_captured_at_that_head(history in history()) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            if let Some(ledger) = Ledger::postgres().await {
                property(ledger, history).await;
            }
        });
    }
}

/// A tenant, its catalog, a role, a grant and an assignment: positions 1 to 5, a minute apart
/// from 08:01.
async fn scripted(ledger: &Ledger) -> World {
    let mut world = World::new(ledger.open().await);
    world
        .tenant(
            0,
            TenantCommand::Create {
                name: "Acme".into(),
                slug: "acme".into(),
                plan: Plan::Team,
            },
        )
        .await;
    world.policy(0, catalog()).await;
    world
        .policy(
            0,
            custodian_domain::policy::PolicyCommand::CreateRole {
                name: "ops".into(),
                description: None,
                parents: vec![],
            },
        )
        .await;
    world
        .policy(
            0,
            grant(
                "grant_001",
                Subject::Role("ops".into()),
                "project:write",
                None,
            ),
        )
        .await;
    world
        .policy(0, assign("asg_001", "user_alice", "ops"))
        .await;
    assert_eq!(world.head().await, 5);
    world
}

async fn at_a_position_writes_the_views_there_and_says_so(ledger: Ledger) {
    let world = scripted(&ledger).await;
    world.store.close().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("at-4.db");
    let out_text = out.display().to_string();

    let run = run_binary(&[
        "at",
        "--position",
        "4",
        "--out",
        &out_text,
        &ledger.location,
    ])
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let mut lines = run.stdout.lines();
    assert_eq!(
        lines.next(),
        Some("as of position 4 (2026-03-02T08:04:00.000000Z)")
    );
    assert_eq!(
        lines.next(),
        Some(format!("views written to {out_text}").as_str())
    );
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("tenants") && l.ends_with(" 1")),
        "{run:?}"
    );
    assert!(run.stderr.starts_with("read 4 events in "), "{run:?}");

    // The file says what it is, and its registry serves every view at position 4.
    let db = ViewDb::open(&out_text).await.unwrap();
    let row = sqlx::query("SELECT source, position, time, built_at FROM replay_snapshot")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(row.get::<i64, _>(1), 4);
    assert_eq!(row.get::<String, _>(2), "2026-03-02T08:04:00.000000Z");
    assert!(Timestamp::parse(&row.get::<String, _>(3)).is_ok());
    let source: String = row.get(0);
    assert_eq!(source, custodian_replay::redact(&ledger.location));
    let (rows, positions) = views(&db).await;
    assert!(positions.values().all(|p| *p == 4), "{positions:?}");
    db.pool().close().await;
    let grants = rows
        .iter()
        .filter(|(t, _)| t.starts_with("policy."))
        .map(|(_, r)| r.len())
        .sum::<usize>();
    assert!(grants > 0, "the policy view holds the role and the grant");

    // --json: one document with the position and the time.
    let out2 = dir.path().join("at-5.db");
    let run = run_binary(&[
        "--json",
        "at",
        "--position",
        "5",
        "--out",
        &out2.display().to_string(),
        &ledger.location,
    ])
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["position"], 5);
    assert_eq!(doc["time"], "2026-03-02T08:05:00.000000Z");
    assert_eq!(doc["events"], 5);
    assert!(doc["events_per_second"].as_f64().unwrap() >= 0.0);
    assert!(doc["views"].as_array().unwrap().len() >= custodian_projections::all().len());
}

async fn at_a_time_stops_before_the_first_later_event(ledger: Ledger) {
    let world = scripted(&ledger).await;
    world.store.close().await;
    let dir = tempfile::tempdir().unwrap();
    for (time, position) in [
        ("2026-03-02T08:00:30Z", 0),
        ("2026-03-02T08:03:00Z", 3),
        ("2026-03-02T09:03:30+01:00", 3),
        ("2026-03-02T08:04:59Z", 4),
        ("2027-01-01T00:00:00Z", 5),
    ] {
        let out = dir.path().join(format!("at-{position}-{}.db", time.len()));
        let run = run_binary(&[
            "--json",
            "at",
            "--time",
            time,
            "--out",
            &out.display().to_string(),
            &ledger.location,
        ])
        .await;
        assert_eq!(run.code, Some(0), "{run:?}");
        let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(doc["position"], position, "{time}");
        assert_eq!(
            doc["time"],
            Timestamp::parse(time).unwrap().to_string(),
            "the time evaluated at is the one asked for"
        );
    }
    let run = run_binary(&[
        "at",
        "--time",
        "yesterday",
        "--out",
        "x.db",
        &ledger.location,
    ])
    .await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("RFC 3339"), "{run:?}");
    let run = run_binary(&["at", "--out", "x.db", &ledger.location]).await;
    assert_eq!(run.code, Some(2), "neither --time nor --position: {run:?}");
}

async fn an_existing_file_is_kept_unless_forced(ledger: Ledger) {
    let world = scripted(&ledger).await;
    world.store.close().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("views.db");
    std::fs::write(&out, b"precious").unwrap();
    let out_text = out.display().to_string();
    let args = [
        "at",
        "--position",
        "2",
        "--out",
        &out_text,
        &ledger.location,
    ];
    let run = run_binary(&args).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr,
        format!("custodian-replay: {out_text} exists; pass --force to replace it\n")
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");

    let run = run_binary(&[&args[..], &["--force"]].concat()).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let db = ViewDb::open(&out_text).await.unwrap();
    let (_, positions) = views(&db).await;
    db.pool().close().await;
    assert!(positions.values().all(|p| *p == 2), "{positions:?}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no partial file left"
    );
}

async fn a_position_past_the_head_exits_2_and_writes_nothing(ledger: Ledger) {
    let world = scripted(&ledger).await;
    world.store.close().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("views.db");
    let run = run_binary(&[
        "at",
        "--position",
        "6",
        "--out",
        &out.display().to_string(),
        &ledger.location,
    ])
    .await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert_eq!(
        run.stderr,
        "custodian-replay: position 6 is past the head of the log (position 5)\n"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );

    // An exported log does not know its head in advance: the build stops at its end.
    let export = dir.path().join("log.jsonl");
    let run = run_binary(&[
        "export",
        "--format",
        "jsonl",
        "--out",
        &export.display().to_string(),
        &ledger.location,
    ])
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let run = run_binary(&[
        "at",
        "--position",
        "9",
        "--out",
        &out.display().to_string(),
        &export.display().to_string(),
    ])
    .await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("position 9 is past the head"),
        "{run:?}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "only the export"
    );
}
