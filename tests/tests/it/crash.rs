//! Crash safety: kill the writing process with SIGKILL in the middle of a load, then check that
//! every acknowledged append is there exactly once, nothing unacknowledged is half-written, the
//! server starts on what is left, and the chain verifies.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Stdio;
use std::time::Duration;

use custodian_testkit::Ledger;
use custodian_testkit::deployment::{Server, forward_lines, verify};
use tokio::process::Command;

use crate::support::loadgen;

const EVENTS_PER_APPEND: u64 = 3;
const ACKS_BEFORE_KILL: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_every_acknowledged_append_through_kill_9() {
    kill_mid_load_then_check(Ledger::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_every_acknowledged_append_through_kill_9() {
    if let Some(ledger) = Ledger::postgres().await {
        kill_mid_load_then_check(ledger).await;
    }
}

/// `ack RUN CLIENT SEQ FIRST LAST`
struct Ack {
    client: u64,
    seq: u64,
    first: u64,
    last: u64,
}

fn parse_ack(line: &str) -> Ack {
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(f[0], "ack", "{line}");
    let n = |i: usize| f[i].parse::<u64>().unwrap();
    Ack {
        client: n(2),
        seq: n(3),
        first: n(4),
        last: n(5),
    }
}

async fn kill_mid_load_then_check(ledger: Ledger) {
    let location = ledger.location.clone();
    let mut child = Command::new(loadgen())
        .args([
            "--database",
            &location,
            "--clients",
            "32",
            "--appends",
            "100000",
        ])
        .args(["--events-per-append", &EVENTS_PER_APPEND.to_string()])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = forward_lines(child.stdout.take().unwrap());
    let mut acks = Vec::new();
    while acks.len() < ACKS_BEFORE_KILL {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.recv())
            .await
            .expect("the load generator stalled")
            .expect("the load generator exited early");
        acks.push(parse_ack(&line));
    }
    child.start_kill().unwrap(); // SIGKILL
    let status = child.wait().await.unwrap();
    assert!(
        !status.success(),
        "the load generator was killed, not finished"
    );
    // Acks printed before the kill and still in the pipe count too.
    while let Some(line) = lines.recv().await {
        acks.push(parse_ack(&line));
    }

    // The server starts on the crashed store.
    let cwd = tempfile::tempdir().unwrap();
    let server = Server::start(&ledger.serve_args(), cwd.path(), &[]).await;
    let ready: serde_json::Value = server
        .operations("/v1/admin/readiness")
        .await
        .json()
        .await
        .unwrap();
    let (code, _) = server.terminate().await;
    assert_eq!(code, Some(0));

    let store = ledger.open_read_only().await;
    let records = store.read_all(1, usize::MAX >> 2).await.unwrap();
    assert_eq!(ready["head"]["position"], records.len() as u64);

    // Group the stored events by the append they belong to.
    let mut appends: BTreeMap<(u64, u64), Vec<(u64, u64)>> = BTreeMap::new();
    let mut ids = HashSet::new();
    for r in &records {
        assert!(ids.insert(r.id), "event {} stored twice", r.id);
        let d = &r.data;
        let key = (d["client"].as_u64().unwrap(), d["seq"].as_u64().unwrap());
        appends
            .entry(key)
            .or_default()
            .push((d["part"].as_u64().unwrap(), r.position));
    }
    // Nothing half-written: every append present is whole, in consecutive positions.
    for ((client, seq), parts) in &appends {
        let expected: Vec<u64> = (0..EVENTS_PER_APPEND).collect();
        assert_eq!(
            parts.iter().map(|p| p.0).collect::<Vec<_>>(),
            expected,
            "append {client}/{seq} is partial"
        );
        assert_eq!(parts[2].1 - parts[0].1, EVENTS_PER_APPEND - 1);
    }
    // Every acknowledged append is there, exactly once, where the ack said.
    let mut acked = HashMap::new();
    for a in &acks {
        assert!(acked.insert((a.client, a.seq), (a.first, a.last)).is_none());
        let parts = appends
            .get(&(a.client, a.seq))
            .unwrap_or_else(|| panic!("acknowledged append {}/{} was lost", a.client, a.seq));
        assert_eq!((parts[0].1, parts[2].1), (a.first, a.last));
    }
    assert!(acks.len() >= ACKS_BEFORE_KILL);

    let (code, out) = verify(&location).await;
    assert_eq!(code, Some(0), "verify failed: {out}");
    assert!(
        out.contains(&records.len().to_string()),
        "verify names the head position: {out}"
    );
}
