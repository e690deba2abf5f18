//! The load and fault harness (`custodian-torture`) with short settings on each backend: mixed
//! traffic, `kill -9` of the server, a PostgreSQL restart, a NATS outage, a full disk and the
//! secrets scan, each followed by its checks (every acknowledged command in the log once, the
//! chain, the views against their rebuild, the NATS feed).

use custodian_testkit::postgres::in_ci;
use custodian_torture::{Backend, Settings, Summary};

async fn short_run_passes(backend: Backend) {
    let settings = Settings {
        backends: vec![backend],
        ..Settings::short()
    };
    let summaries: Vec<Summary> = custodian_torture::run(&settings).await;
    assert!(!summaries.is_empty());
    for s in &summaries {
        if s.skipped.is_some() {
            assert!(!in_ci(), "no scenario may be skipped in CI: {s}");
            continue;
        }
        assert!(s.passed, "{s}");
        assert!(s.acknowledged > 0, "{s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_harness_passes_on_sqlite() {
    short_run_passes(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_harness_passes_on_postgres() {
    short_run_passes(Backend::Postgres).await;
}
