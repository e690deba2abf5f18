//! The event feed: `custodian serve --nats-url` publishes the whole log to JetStream.

use std::process::Stdio;
use std::time::Duration;

use custodian_testkit::Ledger;
use custodian_testkit::deployment::Server;
use custodian_testkit::nats::NatsServer;
use tokio::process::Command;

use crate::support::loadgen;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_nats_url_publishes_the_whole_log_as_cloudevents() {
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    let ledger = Ledger::sqlite();
    let status = Command::new(loadgen())
        .args([
            "--database",
            &ledger.location,
            "--clients",
            "4",
            "--appends",
            "10",
        ])
        .stdout(Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let total = 4 * 10 * 3;

    let cwd = tempfile::tempdir().unwrap();
    let mut args = ledger.serve_args();
    args.extend(["--nats-url".to_owned(), nats.url()]);
    let server = Server::start(&args, cwd.path(), &[]).await;
    let mut relay = serde_json::Value::Null;
    for _ in 0..400 {
        let body: serde_json::Value = server
            .operations("/v1/admin/projections")
            .await
            .json()
            .await
            .unwrap();
        relay = body["relay"].clone();
        if relay["acknowledged_position"] == total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(relay["acknowledged_position"], total, "{relay}");
    assert_eq!(relay["connected"], true);
    assert_eq!(relay["lag_events"], 0);

    let js = nats.jetstream().await;
    let mut stream = js.get_stream("CUSTODIAN").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, total);
    let first = stream.get_raw_message(1).await.unwrap();
    assert_eq!(
        first.subject.as_str(),
        "custodian.load.client.load.appended"
    );
    let body: serde_json::Value = serde_json::from_slice(&first.payload).unwrap();
    assert_eq!(body["specversion"], "1.0");
    assert_eq!(body["position"], 1);
    assert_eq!(body["type"], "load.appended");

    let metrics = server.operations("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(&format!("custodian_relay_acknowledged_position {total}")),
        "{metrics}"
    );
    let (code, _) = server.terminate().await;
    assert_eq!(code, Some(0));
    nats.kill().await;
}
