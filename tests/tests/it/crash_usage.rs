//! Crash safety of usage metering: `custodian serve` is killed with SIGKILL while sixteen clients
//! post usage records (a tenth of them retries of an earlier key). After a restart on the same
//! store, every acknowledged record is in the log exactly once, nothing is counted twice, and a
//! retry of any record, acknowledged or cut off by the kill, counts once: the tenant's total is
//! then exactly the sum over the distinct keys posted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use custodian_testkit::deployment::Deployment;
use reqwest::Method;
use serde_json::{Value, json};

use crate::kill_9::{Api, kill_9_under_load, serve_with_tenant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_every_acknowledged_usage_record_through_kill_9() {
    post_usage_kill_9_then_check(Deployment::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_every_acknowledged_usage_record_through_kill_9() {
    if let Some(home) = Deployment::postgres().await {
        post_usage_kill_9_then_check(home).await;
    }
}

const TENANT: &str = "meterco";
const ACKS_BEFORE_KILL: usize = 400;

fn record(key: &str, quantity: u64, client: usize) -> Value {
    json!({
        "meter": "requests",
        "quantity": quantity,
        "subject": format!("client-{client}"),
        "idempotency_key": key,
    })
}

fn quantity_of(client: usize, i: usize) -> u64 {
    ((client + i) % 3) as u64 + 1
}

/// What one client posted: each key with its quantity, and the keys the server acknowledged.
#[derive(Default)]
struct Posted {
    quantities: HashMap<String, u64>,
    acked: HashSet<String>,
}

async fn post_records(
    api: Api,
    client: usize,
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicUsize>,
) -> Posted {
    let path = format!("/v1/tenants/{TENANT}/usage");
    let mut posted = Posted::default();
    for i in 0.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        // Every tenth post retries the key before it.
        let n = if i % 10 == 9 { i - 1 } else { i };
        let key = format!("c{client:02}-{n:06}");
        let quantity = quantity_of(client, n);
        posted.quantities.insert(key.clone(), quantity);
        match api
            .send(
                Method::POST,
                &path,
                Some(&record(&key, quantity, client)),
                None,
            )
            .await
        {
            Ok(r) if r.status == 200 => {
                assert_eq!(r.body["accepted"], true, "{r:?}");
                posted.acked.insert(key);
                acks.fetch_add(1, Ordering::SeqCst);
            }
            // Only a busy or stopping server may refuse a well-formed record; its fate is unknown.
            Ok(r) => assert_eq!(r.status, 503, "{key}: {r:?}"),
            Err(_) => {}
        }
    }
    posted
}

async fn post_usage_kill_9_then_check(home: Deployment) {
    let (mut server, root) = serve_with_tenant(&home, "Root", TENANT, "Meter Co").await;

    let (posted, _) = kill_9_under_load(
        &mut server,
        ACKS_BEFORE_KILL,
        "records acknowledged",
        |c, stop, acks| post_records(root.clone(), c, stop, acks),
    )
    .await;
    let mut quantities: HashMap<String, (u64, usize)> = HashMap::new();
    let mut acked: HashSet<String> = HashSet::new();
    for (client, posted) in posted.into_iter().enumerate() {
        acked.extend(posted.acked);
        quantities.extend(posted.quantities.into_iter().map(|(k, q)| (k, (q, client))));
    }
    drop(server);
    eprintln!(
        "{} distinct keys posted, {} acknowledged before the kill",
        quantities.len(),
        acked.len()
    );

    // The log: every acknowledged key exactly once, and only keys that were posted.
    let mut logged: HashMap<String, u64> = HashMap::new();
    for r in home.read_log().await {
        if r.event_type.as_str() != "usage.recorded" {
            continue;
        }
        for k in r.data["idempotency_keys"].as_array().unwrap() {
            let k = k.as_str().unwrap().to_owned();
            assert!(quantities.contains_key(&k), "{k} was never posted");
            *logged.entry(k).or_default() += 1;
        }
    }
    for (k, n) in &logged {
        assert_eq!(*n, 1, "{k} is counted {n} times");
    }
    for k in &acked {
        assert!(logged.contains_key(k), "acknowledged {k} was lost");
    }

    // After a restart, a retry of every key counts once: the acknowledged ones are duplicates.
    let server = home.serve(&[]).await;
    let root = Api::new(&server.base).login().await;
    let path = format!("/v1/tenants/{TENANT}/usage");
    let mut position = 0;
    for (key, (quantity, client)) in &quantities {
        let r = root
            .settled(
                Method::POST,
                &path,
                Some(&record(key, *quantity, *client)),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{key}: {r:?}");
        let body = r.body;
        assert_eq!(
            body["duplicate"],
            logged.contains_key(key),
            "{key} was {}in the log: {body}",
            if logged.contains_key(key) { "" } else { "not " }
        );
        position = position.max(body["position"].as_u64().unwrap());
    }
    let r = root
        .settled(
            Method::GET,
            &format!("{path}?meter=requests"),
            None,
            Some(position),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let view = r.body;
    let expected: u64 = quantities.values().map(|(q, _)| q).sum();
    assert_eq!(view["used"], expected, "{view}");
}
