//! The event feed: `custodian serve --nats-url` publishes the whole log to JetStream.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::support::{Backend, Server, loadgen};

/// A NATS server of the test's own, on a free port with its own storage, so the machine's NATS is
/// left alone.
struct Nats {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

fn nats_binary() -> Option<std::path::PathBuf> {
    [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ]
    .iter()
    .map(Path::new)
    .find(|p| p.is_file())
    .map(Path::to_path_buf)
}

impl Nats {
    async fn start() -> Option<Self> {
        let Some(binary) = nats_binary() else {
            assert!(
                !custodian_store::testing::in_ci(),
                "nats-server is required in CI"
            );
            eprintln!("skipping a NATS test: nats-server is not installed");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let url = format!("nats://127.0.0.1:{port}");
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Some(Self {
                    child,
                    url,
                    _dir: dir,
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("nats-server did not start on port {port}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_nats_url_publishes_the_whole_log_as_cloudevents() {
    let Some(mut nats) = Nats::start().await else {
        return;
    };
    let backend = Backend::sqlite();
    let status = Command::new(loadgen())
        .args([
            "--database",
            &backend.location(),
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
    let mut args = backend.serve_args();
    args.extend(["--nats-url".to_owned(), nats.url.clone()]);
    let server = Server::start(&args, cwd.path(), &[]).await;
    let admin = format!("{}/v1/admin/projections", server.base);
    let mut relay = serde_json::Value::Null;
    for _ in 0..400 {
        let body: serde_json::Value = reqwest::get(&admin).await.unwrap().json().await.unwrap();
        relay = body["relay"].clone();
        if relay["acknowledged_position"] == total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(relay["acknowledged_position"], total, "{relay}");
    assert_eq!(relay["connected"], true);
    assert_eq!(relay["lag_events"], 0);

    let js = async_nats::jetstream::new(async_nats::connect(&nats.url).await.unwrap());
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

    let metrics = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!("custodian_relay_acknowledged_position {total}")),
        "{metrics}"
    );
    let (code, _) = server.terminate().await;
    assert_eq!(code, Some(0));
    nats.child.kill().await.unwrap();
}
