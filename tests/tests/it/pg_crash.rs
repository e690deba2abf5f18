//! Durability against a crash of the PostgreSQL SERVER, not of the client: while clients create
//! users, the postmaster of a private cluster and every backend are killed with SIGKILL right
//! after acknowledgements came. After PostgreSQL restarts and recovers from its WAL, every user
//! the service acknowledged is in the log at the position it was acknowledged with, the chain
//! verifies, and the running service works again without a restart of its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use custodian_testkit::Ledger;
use custodian_testkit::deployment::{Deployment, verify};
use custodian_testkit::pg_cluster::PgCluster;
use reqwest::Method;
use serde_json::json;

use crate::kill_9::serve_with_tenant;

const TENANT: &str = "pgcrashco";
const CLIENTS: usize = 8;
/// The database server is killed once this many users were acknowledged.
const ACKS_BEFORE_KILL: usize = 120;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_postgres_server_loses_no_acknowledged_event() {
    let Some(cluster) = PgCluster::start().await else {
        return;
    };
    let home = Deployment::new(Ledger::postgres_at(cluster.fresh_database().await));
    let (server, root) = serve_with_tenant(&home, "Rootie Crashsson", TENANT, "PG Crash").await;

    let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (api, acked, stop) = (root.clone(), acked.clone(), stop.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let body = json!({"email": format!("u{c}-{i}@pgcrash.test"), "name": format!("User {c} {i}")});
                    let path = format!("/v1/tenants/{TENANT}/users");
                    match api.send(Method::POST, &path, Some(&body), None).await {
                        Ok(r) if r.status == 201 => {
                            let id = r.body["user_id"].as_str().unwrap().to_owned();
                            acked.lock().unwrap().push((id, r.position.unwrap()));
                        }
                        Ok(r) => assert!(
                            r.status < 500 || r.status == 503,
                            "a creation answered {r:?}"
                        ),
                        Err(_) => {}
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    while acked.lock().unwrap().len() < ACKS_BEFORE_KILL {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "too few acknowledgements"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Kill the database server while creations are in flight, right after these were answered.
    cluster.kill_9().await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        tokio::time::timeout(Duration::from_secs(60), c)
            .await
            .expect("a client hung while PostgreSQL was down")
            .unwrap();
    }
    cluster.start_again().await;

    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= ACKS_BEFORE_KILL);
    let log = home.read_log().await;
    for (id, position) in &acked {
        let stream = format!("{TENANT}/user/{id}");
        let starts: Vec<u64> = log
            .iter()
            .filter(|r| r.stream.as_str() == stream && r.version == 1)
            .map(|r| r.position)
            .collect();
        assert_eq!(
            starts.len(),
            1,
            "user {id} acknowledged at {position} is in the log {} times",
            starts.len()
        );
        assert!(
            starts[0] <= *position,
            "{id} starts after its acknowledgement"
        );
        assert!(
            log.len() as u64 >= *position,
            "position {position} was acknowledged, the log ends at {}",
            log.len()
        );
    }
    let (code, out) = verify(&home.ledger.location).await;
    assert_eq!(code, Some(0), "{out}");

    // The running service reconnects on its own.
    let r = root
        .settled(
            Method::POST,
            &format!("/v1/tenants/{TENANT}/users"),
            Some(&json!({"email": "after@pgcrash.test", "name": "After Crash"})),
            None,
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let (code, _) = server.terminate().await;
    assert_eq!(code, Some(0));
}
