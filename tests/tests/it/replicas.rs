//! Replicas: several `custodian serve` processes started at the same instant against one fresh
//! PostgreSQL database, as a deployment with three replicas starts. Each must become ready (their
//! schema work is serialized, not raced), and a token issued by one is accepted by the others.

use std::time::{Duration, Instant};

use custodian_testkit::deployment::{Deployment, Server};
use reqwest::Method;

use crate::kill_9::{ADMIN_EMAIL, ADMIN_PASSWORD, Api};

/// Servers per round: a deployment's three replicas.
const REPLICAS: usize = 3;
/// Rounds, each on a fresh database: a race lost once in a while is still a defect.
const ROUNDS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_started_at_once_on_a_fresh_postgres_database_all_serve() {
    for round in 0..ROUNDS {
        let Some(home) = Deployment::postgres().await else {
            return;
        };
        // The replicas share the master key, as a deployment's replicas do; making it first keeps
        // this test about the database.
        let data = home.data_dir();
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("secret.key"), format!("{}A=\n", "B".repeat(42))).unwrap();

        let args = home.store_args();
        // Every process is spawned in the first poll of `join_all`, microseconds apart.
        let mut servers = futures::future::join_all(
            (0..REPLICAS).map(|_| Server::start(&args, home.home.path(), &[])),
        )
        .await;
        for (i, server) in servers.iter_mut().enumerate() {
            ready(server)
                .await
                .unwrap_or_else(|e| panic!("round {round}, replica {i}: {e}"));
        }

        home.bootstrap(ADMIN_EMAIL, "Replica Admin", ADMIN_PASSWORD)
            .await;
        let issuer = Api::new(&servers[0].base);
        let token = accepted(&issuer, Method::POST, "/v1/auth/login", true)
            .await
            .body["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        for (i, server) in servers.iter().enumerate().skip(1) {
            let me = accepted(
                &Api::new(&server.base).with_token(&token),
                Method::GET,
                "/v1/auth/me",
                false,
            )
            .await;
            assert_eq!(
                me.body["email"], ADMIN_EMAIL,
                "round {round}, replica {i}: {me:?}"
            );
        }
        for server in servers {
            server.terminate_cleanly().await;
        }
    }
}

/// Waits until `server` answers `/readyz` with 200; an error when it exits first or takes longer
/// than 30 s, with what it logged.
pub async fn ready(server: &mut Server) -> Result<(), String> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(status) = server.child.try_wait().unwrap() {
            let mut log = Vec::new();
            while let Some(line) = server.lines.recv().await {
                log.push(line);
            }
            return Err(format!("exited with {status}:\n{}", log.join("\n")));
        }
        let r = client.get(format!("{}/readyz", server.base)).send().await;
        if r.is_ok_and(|r| r.status() == 200) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("not ready within 30 s".into())
}

/// Sends until the server answers 2xx; a replica answers 401 only until it has read the
/// bootstrap (or the login's session) from the log, within milliseconds, so 10 s is a failure.
async fn accepted(api: &Api, method: Method, path: &str, login: bool) -> crate::kill_9::Answer {
    let body =
        serde_json::json!({"tenant": "_system", "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD});
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = api
            .settled(method.clone(), path, login.then_some(&body), None)
            .await;
        if (200..300).contains(&r.status) || Instant::now() >= deadline {
            assert!((200..300).contains(&r.status), "{method} {path}: {r:?}");
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
