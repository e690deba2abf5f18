//! Start-up from the indexes' snapshots: a server killed with SIGKILL on a log of thousands of
//! events restarts from its snapshots and reads only the events after them; with the snapshots
//! altered in the database, or deleted, it rebuilds them from the whole log. Either way a token
//! issued before still works, a session revoked before stays refused, and a permission granted
//! before is still granted.

use custodian_testkit::deployment::{Deployment, Server};
use custodian_testkit::ledger::Backend;
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Connection as _;

use crate::kill_9::{ADMIN_EMAIL, ADMIN_PASSWORD, Api};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_restarts_from_snapshots_and_rebuilds_refused_ones() {
    restart_from_snapshots(Deployment::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarts_from_snapshots_and_rebuilds_refused_ones() {
    if let Some(home) = Deployment::postgres().await {
        restart_from_snapshots(home).await;
    }
}

/// Events put in the log before the server first starts.
const FILLED: u64 = 3_000;
/// The indexes that start from a snapshot.
const INDEXES: [&str; 3] = ["authentication", "authorization", "keys"];

/// What the test knows before each restart.
struct Facts {
    /// Still signed in.
    live: Api,
    /// Logged out.
    revoked: Api,
    /// The principal granted `key:rotate` on `key/k42` in `acme`.
    grantee: String,
}

/// `/v1/admin/readiness`'s report of each index, once every one has applied `head`.
async fn indexes_at(api: &Api, head: u64) -> Vec<Value> {
    for _ in 0..300 {
        let r = api
            .settled(Method::GET, "/v1/admin/readiness", None, None)
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        let indexes = r.body["indexes"].as_array().unwrap().clone();
        let names: Vec<&str> = indexes
            .iter()
            .map(|i| i["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, INDEXES, "{r:?}");
        if indexes
            .iter()
            .all(|i| i["applied"].as_u64().unwrap() >= head)
        {
            return indexes;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the indexes did not reach position {head} within 30 s");
}

async fn head(api: &Api) -> u64 {
    let r = api
        .settled(Method::GET, "/v1/admin/readiness", None, None)
        .await;
    r.body["head"]["position"].as_u64().unwrap()
}

/// The answers that must survive every restart.
async fn answers_as_before(base: &str, facts: &Facts) {
    let live = facts.live.clone().at(base);
    let me = live.settled(Method::GET, "/v1/auth/me", None, None).await;
    assert_eq!(me.status, 200, "a token issued before the restart: {me:?}");
    let revoked = facts.revoked.clone().at(base);
    let gone = revoked
        .settled(Method::GET, "/v1/auth/me", None, None)
        .await;
    assert_eq!(
        gone.status, 401,
        "a session revoked before the restart: {gone:?}"
    );
    for (permission, decision) in [("key:rotate", "allow"), ("key:delete", "deny")] {
        let check =
            json!({"principal": facts.grantee, "permission": permission, "resource": "key/k42"});
        let r = live
            .settled(Method::POST, "/v1/tenants/acme/check", Some(&check), None)
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body["decision"], decision, "{permission}: {r:?}");
    }
}

async fn on_database(home: &Deployment, statement: &str) {
    match home.ledger.backend {
        Backend::Sqlite => {
            let url = format!("sqlite://{}", home.ledger.location);
            let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query(statement).execute(&mut db).await.unwrap();
        }
        Backend::Postgres => {
            let mut db = sqlx::PgConnection::connect(&home.ledger.location)
                .await
                .unwrap();
            sqlx::query(statement).execute(&mut db).await.unwrap();
        }
    }
}

/// Kills `server` with SIGKILL and starts another on the same store.
async fn kill_and_restart(home: &Deployment, server: Server, before: impl AsyncFnOnce()) -> Server {
    drop(server);
    before().await;
    home.serve(&[]).await
}

async fn restart_from_snapshots(home: Deployment) {
    home.bootstrap(ADMIN_EMAIL, "Rootie Platformsson", ADMIN_PASSWORD)
        .await;
    let store = home.ledger.open().await;
    custodian_testkit::fill::fill(&store, FILLED).await.unwrap();
    store.close().await;

    // First start: no snapshot yet, so every index is built from the whole log, and its snapshot
    // is written once it has caught up.
    let server = home.serve(&[]).await;
    let root = Api::new(&server.base).login().await;
    let tenant = json!({"slug": "acme", "name": "Acme"});
    let r = root
        .settled(Method::POST, "/v1/tenants", Some(&tenant), None)
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let first = indexes_at(&root, head(&root).await).await;
    for index in &first {
        assert_eq!(index["source"], "log", "{index}");
        assert_eq!(index["rebuild_reason"], "missing", "{index}");
        assert!(index["events_read"].as_u64().unwrap() > FILLED, "{index}");
    }
    let revoked = Api::new(&server.base).login().await;
    let out = revoked
        .settled(Method::POST, "/v1/auth/logout", None, None)
        .await;
    assert!(out.status < 300, "{out:?}");
    let user = json!({"email": "build@acme.test", "name": "Build Bot", "kind": "service"});
    let r = root
        .settled(Method::POST, "/v1/tenants/acme/users", Some(&user), None)
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let grantee = r.body["user_id"].as_str().unwrap().to_owned();
    let grant = json!({"subject": {"principal": grantee}, "permission": "key:rotate", "on": {"resource": "key/k42"}});
    let r = root
        .settled(Method::POST, "/v1/tenants/acme/grants", Some(&grant), None)
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let facts = Facts {
        live: root,
        revoked,
        grantee,
    };
    answers_as_before(&server.base, &facts).await;
    // Every index has written a snapshot beyond the filled log.
    for _ in 0..300 {
        let r = facts
            .live
            .settled(Method::GET, "/v1/admin/readiness", None, None)
            .await;
        if r.body["indexes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["snapshot_written"].as_u64().unwrap() > FILLED)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Killed, then restarted with the snapshots intact: only the events after them are read.
    let server = kill_and_restart(&home, server, async || {}).await;
    let api = facts.live.clone().at(&server.base);
    let head_now = head(&api).await;
    for index in indexes_at(&api, head_now).await {
        assert_eq!(index["source"], "snapshot", "{index}");
        assert_eq!(index["rebuild_reason"], Value::Null, "{index}");
        let started = index["started_at"].as_u64().unwrap();
        assert!(started > FILLED, "{index}");
        let read = index["events_read"].as_u64().unwrap();
        let applied = index["applied"].as_u64().unwrap();
        assert_eq!(read, applied - started, "only the tail is read: {index}");
        assert!(read < head_now - FILLED, "{index}");
    }
    answers_as_before(&server.base, &facts).await;

    // Killed, and the snapshots altered in the database: refused, and rebuilt from the log.
    let alter = match home.ledger.backend {
        Backend::Sqlite => "UPDATE index_snapshots SET body = substr(body, 1, length(body) - 1)",
        Backend::Postgres => {
            "UPDATE index_snapshots SET body = substring(body from 1 for length(body) - 1)"
        }
    };
    let server = kill_and_restart(&home, server, async || on_database(&home, alter).await).await;
    let api = facts.live.clone().at(&server.base);
    let head_now = head(&api).await;
    for index in indexes_at(&api, head_now).await {
        assert_eq!(index["source"], "log", "{index}");
        assert_eq!(index["rebuild_reason"], "tampered", "{index}");
        assert_eq!(index["started_at"], 0, "{index}");
        assert!(
            index["events_read"].as_u64().unwrap() >= head_now,
            "{index}"
        );
    }
    answers_as_before(&server.base, &facts).await;

    // Killed, and the snapshots deleted: rebuilt from the log.
    let server = kill_and_restart(&home, server, async || {
        on_database(&home, "DELETE FROM index_snapshots").await;
    })
    .await;
    let api = facts.live.clone().at(&server.base);
    let head_now = head(&api).await;
    for index in indexes_at(&api, head_now).await {
        assert_eq!(index["source"], "log", "{index}");
        assert_eq!(index["rebuild_reason"], "missing", "{index}");
        assert!(
            index["events_read"].as_u64().unwrap() >= head_now,
            "{index}"
        );
    }
    answers_as_before(&server.base, &facts).await;
    drop(server);
}
