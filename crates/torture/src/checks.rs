//! What must hold after every scenario: every acknowledged command is in the log exactly once,
//! the chain verifies, every view equals its rebuild, and a NATS consumer saw every event.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use custodian_domain::EventRecord;
use custodian_projections::{ViewBuild, ViewDb};
use custodian_testkit::deployment::{Deployment, Server, verify};
use futures::StreamExt as _;
use sqlx::Row as _;

use crate::traffic::Ack;

/// Waits until the server's views and its relay have caught up with the log's head; `Err` says
/// how far they got.
pub async fn wait_caught_up(server: &Server, within: Duration) -> Result<u64, String> {
    let deadline = Instant::now() + within;
    let mut last = serde_json::Value::Null;
    while Instant::now() < deadline {
        if let Ok(r) = server.try_operations("/v1/admin/projections").await
            && let Ok(body) = r.json::<serde_json::Value>().await
        {
            let head = body["head"].as_u64().unwrap_or(0);
            let all_applied = body["applied"].as_u64() == Some(head)
                && body["projections"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().all(|p| p["position"].as_u64() == Some(head)));
            let relayed = body["relay"].is_null()
                || body["relay"]["acknowledged_position"].as_u64() == Some(head);
            if head > 0 && all_applied && relayed {
                return Ok(head);
            }
            last = body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "views or relay not caught up within {within:?}: {last}"
    ))
}

/// Waits until the relay has published everything the log held when it was called (the backlog
/// of an outage), while traffic goes on.
pub async fn wait_relay_caught_up(server: &Server, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    let mut target = None;
    let mut last = serde_json::Value::Null;
    while Instant::now() < deadline {
        if let Ok(r) = server.try_operations("/v1/admin/projections").await
            && let Ok(body) = r.json::<serde_json::Value>().await
        {
            let head = *target.get_or_insert(body["head"].as_u64().unwrap_or(0));
            if body["relay"]["acknowledged_position"]
                .as_u64()
                .is_some_and(|p| p >= head)
            {
                return Ok(());
            }
            last = body["relay"].clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "the relay did not catch up within {within:?}: {last}"
    ))
}

/// Every acknowledged command is in the log, once: the log's positions are 1..=n without a gap,
/// its ids are unique, every acknowledged position is in it, and every id an answer named starts
/// exactly one stream, at or before the acknowledged position.
pub fn acknowledged_in_log(log: &[EventRecord], acks: &[Ack]) -> Vec<String> {
    let mut failures = Vec::new();
    for (expected, r) in (1u64..).zip(log) {
        if r.position != expected {
            failures.push(format!(
                "log position {} where {expected} was expected",
                r.position
            ));
            break;
        }
    }
    let mut ids = HashSet::new();
    let duplicates = log.iter().filter(|r| !ids.insert(r.id)).count();
    if duplicates > 0 {
        failures.push(format!("{duplicates} event ids appear twice in the log"));
    }
    // Each stream's id (its last segment) with the positions of its first events.
    let mut starts: HashMap<&str, Vec<u64>> = HashMap::new();
    for r in log {
        if r.version == 1
            && let Some((_, id)) = r.stream.as_str().rsplit_once('/')
        {
            starts.entry(id).or_default().push(r.position);
        }
    }
    let head = log.last().map_or(0, |r| r.position);
    let mut lost = 0;
    let mut twice = 0;
    for ack in acks {
        if ack.position > head || ack.position == 0 {
            lost += 1;
            if lost <= 3 {
                failures.push(format!(
                    "{} acknowledged at position {} beyond the head {head}",
                    ack.operation, ack.position
                ));
            }
            continue;
        }
        if let Some(subject) = &ack.subject {
            match starts.get(subject.as_str()).map(Vec::as_slice) {
                Some([first]) if *first <= ack.position => {}
                Some([_]) | None => {
                    lost += 1;
                    if lost <= 3 {
                        failures.push(format!(
                            "{} of {subject} acknowledged at {} is not in the log",
                            ack.operation, ack.position
                        ));
                    }
                }
                Some(_) => {
                    twice += 1;
                    if twice <= 3 {
                        failures.push(format!("the stream of {subject} starts twice"));
                    }
                }
            }
        }
    }
    if lost > 3 {
        failures.push(format!("{lost} acknowledged commands lost in all"));
    }
    failures
}

/// `custodian-replay verify` on the ledger.
pub async fn chain_verifies(location: &str) -> Vec<String> {
    let (code, out) = verify(location).await;
    if code == Some(0) {
        vec![]
    } else {
        vec![format!(
            "custodian-replay verify exited {code:?}: {}",
            out.trim()
        )]
    }
}

/// Every view the server serves equals the same view rebuilt from the log into the fresh
/// database at `fresh`, table by table, row by row. The server must be stopped, its views caught
/// up with `log`.
pub async fn views_equal_rebuild(
    location: &str,
    fresh: &str,
    log: &[EventRecord],
) -> Result<usize, Vec<String>> {
    let fail = |e: &dyn std::fmt::Display| vec![format!("rebuilding the views: {e}")];
    let live = ViewDb::open(location).await.map_err(|e| fail(&e))?;
    let statuses = custodian_projections::statuses(&live)
        .await
        .map_err(|e| fail(&e))?;
    let rebuilt = ViewDb::open(fresh).await.map_err(|e| fail(&e))?;
    let projections = custodian_projections::all();
    let mut build = ViewBuild::start(rebuilt.clone(), projections.clone())
        .await
        .map_err(|e| fail(&e))?;
    for page in log.chunks(2000) {
        build.apply(page).await.map_err(|e| fail(&e))?;
    }
    let built = build.finish().await.map_err(|e| fail(&e))?;
    let head = log.last().map_or(0, |r| r.position);
    let mut failures = Vec::new();
    let mut tables = 0;
    for view in &built {
        let Some(serving) = statuses
            .iter()
            .find(|s| s.name == view.name && s.state.as_str() == "active")
        else {
            failures.push(format!("no serving generation of {}", view.name));
            continue;
        };
        if serving.position != head {
            failures.push(format!(
                "{} is at position {}, the log at {head}",
                view.name, serving.position
            ));
        }
        for table in view.tables {
            let live_name = format!("{}_g{}_{table}", view.name, serving.generation);
            let (a, b) = match (
                dump(&live, &live_name).await,
                dump(&rebuilt, &view.generation.name(table)).await,
            ) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(e), _) | (_, Err(e)) => {
                    failures.push(format!("reading {live_name}: {e}"));
                    continue;
                }
            };
            tables += 1;
            if a != b {
                let only_live = a.iter().find(|r| !b.contains(r));
                let only_rebuilt = b.iter().find(|r| !a.contains(r));
                failures.push(format!(
                    "{live_name} differs from its rebuild ({} rows live, {} rebuilt; live only: {only_live:?}; rebuilt only: {only_rebuilt:?})",
                    a.len(),
                    b.len()
                ));
            }
        }
    }
    live.pool().close().await;
    rebuilt.pool().close().await;
    if failures.is_empty() {
        Ok(tables)
    } else {
        Err(failures)
    }
}

/// Every row of `table`, each value as text, sorted.
async fn dump(db: &ViewDb, table: &str) -> Result<Vec<Vec<String>>, sqlx::Error> {
    let rows = sqlx::query(&format!("SELECT * FROM {table}"))
        .fetch_all(db.pool())
        .await?;
    let mut out: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            (0..r.columns().len())
                .map(|i| {
                    if let Ok(v) = r.try_get::<Option<i64>, _>(i) {
                        format!("{v:?}")
                    } else if let Ok(v) = r.try_get::<Option<String>, _>(i) {
                        format!("{v:?}")
                    } else if let Ok(v) = r.try_get::<Option<bool>, _>(i) {
                        format!("{:?}", v.map(i64::from))
                    } else if let Ok(v) = r.try_get::<Option<Vec<u8>>, _>(i) {
                        format!("{:?}", v.map(hex::encode))
                    } else if let Ok(v) = r.try_get::<Option<f64>, _>(i) {
                        format!("{v:?}")
                    } else {
                        "?".to_owned()
                    }
                })
                .collect()
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Reads every message of the JetStream stream `CUSTODIAN` with an ordered consumer and checks
/// that every event of `log` was published; returns the messages seen, or what is missing.
pub async fn nats_saw_every_event(
    nats_url: &str,
    log: &[EventRecord],
    payloads: &mut Vec<Vec<u8>>,
) -> Result<u64, Vec<String>> {
    let fail = |e: &dyn std::fmt::Display| vec![format!("reading the NATS stream: {e}")];
    let client = tokio::time::timeout(Duration::from_secs(30), async_nats::connect(nats_url))
        .await
        .map_err(|e| fail(&e))?
        .map_err(|e| fail(&e))?;
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("CUSTODIAN").await.map_err(|e| fail(&e))?;
    let total = stream.info().await.map_err(|e| fail(&e))?.state.messages;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .map_err(|e| fail(&e))?;
    let mut messages = consumer.messages().await.map_err(|e| fail(&e))?;
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut read = 0u64;
    while read < total {
        let next = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .map_err(|_| vec![format!("only {read} of {total} NATS messages came")])?;
        let Some(Ok(message)) = next else {
            return Err(vec![format!(
                "the NATS consumer ended after {read} messages"
            )]);
        };
        read += 1;
        if let Ok(body) = serde_json::from_slice::<serde_json::Value>(&message.payload)
            && let Some(id) = body["id"].as_str()
        {
            *seen.entry(id.to_owned()).or_default() += 1;
        }
        payloads.push(message.payload.to_vec());
    }
    let missing: Vec<u64> = log
        .iter()
        .filter(|r| !seen.contains_key(&r.id.to_string()))
        .map(|r| r.position)
        .collect();
    let doubled = seen.values().filter(|n| **n > 1).count();
    let mut failures = Vec::new();
    if !missing.is_empty() {
        failures.push(format!(
            "{} events never reached NATS (positions {:?}...)",
            missing.len(),
            &missing[..missing.len().min(5)]
        ));
    }
    if doubled > 0 {
        failures.push(format!("{doubled} events published twice"));
    }
    if failures.is_empty() {
        Ok(read)
    } else {
        Err(failures)
    }
}

/// Runs every check on a stopped server's deployment: the log (read once), the chain, the views
/// against a rebuild into `fresh`, and the NATS stream. Returns the log and the failures.
pub async fn all(
    deployment: &Deployment,
    fresh: &str,
    nats_url: &str,
    acks: &[Ack],
    payloads: &mut Vec<Vec<u8>>,
    extra: &mut Vec<String>,
) -> (Vec<EventRecord>, Vec<String>) {
    let log = deployment.read_log().await;
    let mut failures = acknowledged_in_log(&log, acks);
    failures.extend(chain_verifies(&deployment.ledger.location).await);
    match views_equal_rebuild(&deployment.ledger.location, fresh, &log).await {
        Ok(tables) => extra.push(format!("view_tables_equal={tables}")),
        Err(f) => failures.extend(f),
    }
    match nats_saw_every_event(nats_url, &log, payloads).await {
        Ok(n) => extra.push(format!("nats_messages={n}")),
        Err(f) => failures.extend(f),
    }
    (log, failures)
}
