//! `custodian serve` as a user runs it.

use std::process::Command;

use custodian_testkit::Ledger;
use custodian_testkit::deployment::{Server, workspace_binary};

#[tokio::test]
async fn serve_without_flags_creates_the_embedded_store_in_the_working_directory() {
    let cwd = tempfile::tempdir().unwrap();
    let server = Server::start(&[], cwd.path(), &[]).await;
    let r = reqwest::get(format!("{}/healthz", server.base))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::get(format!("{}/readyz", server.base))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(cwd.path().join("custodian-data/custodian.db").is_file());
    let (code, lines) = server.terminate().await;
    assert_eq!(code, Some(0), "SIGTERM is a clean stop");
    assert!(
        lines.iter().any(|l| l.contains("\"stopped\"")),
        "the server logs that it stopped: {lines:?}"
    );
    for l in &lines {
        serde_json::from_str::<serde_json::Value>(l)
            .unwrap_or_else(|e| panic!("--log-format json writes JSON lines only ({e}): {l}"));
    }
}

#[tokio::test]
async fn serve_runs_on_postgres_given_a_database_url() {
    let Some(ledger) = Ledger::postgres().await else {
        return;
    };
    let cwd = tempfile::tempdir().unwrap();
    let server = Server::start(&ledger.serve_args(), cwd.path(), &[]).await;
    let r = reqwest::get(format!("{}/readyz", server.base))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let data = cwd.path().join("custodian-data");
    assert!(
        !data.join("custodian.db").exists(),
        "no embedded store when PostgreSQL is configured"
    );
    assert!(
        data.join("secret.key").exists(),
        "the master key is kept in the data directory by default, whatever the store"
    );
    let (code, _) = server.terminate().await;
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn a_config_file_sets_what_flags_and_environment_leave_open() {
    let cwd = tempfile::tempdir().unwrap();
    let data = cwd.path().join("from-file");
    let config = cwd.path().join("custodian.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nlisten = \"127.0.0.1:1\"\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    // CUSTODIAN_LISTEN (set by Server::start) wins over the file's listen address.
    let server = Server::start(
        &["--config".into(), config.display().to_string()],
        cwd.path(),
        &[],
    )
    .await;
    assert!(data.join("custodian.db").is_file());
    server.terminate().await;
}

#[test]
fn bad_configuration_is_a_clear_error_and_exit_code_2() {
    let cwd = tempfile::tempdir().unwrap();
    let config = cwd.path().join("bad.toml");
    std::fs::write(&config, "lisen = \"127.0.0.1:1\"\n").unwrap();
    let out = Command::new(workspace_binary("custodian"))
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(cwd.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown field"), "{stderr}");
    assert!(!cwd.path().join("custodian-data").exists());
}

#[test]
fn serve_help_documents_every_setting_and_its_variable() {
    let out = Command::new(workspace_binary("custodian"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for (flag, env) in [
        ("--listen", "CUSTODIAN_LISTEN"),
        ("--data-dir", "CUSTODIAN_DATA_DIR"),
        ("--database-url", "CUSTODIAN_DATABASE_URL"),
        ("--log-format", "CUSTODIAN_LOG_FORMAT"),
        ("--max-event-bytes", "CUSTODIAN_MAX_EVENT_BYTES"),
        ("--shutdown-timeout", "CUSTODIAN_SHUTDOWN_TIMEOUT"),
        ("--config", "CUSTODIAN_CONFIG"),
        ("--read-wait-ms", "CUSTODIAN_READ_WAIT_MS"),
        ("--nats-url", "CUSTODIAN_NATS_URL"),
        ("--secret-key-file", "CUSTODIAN_SECRET_KEY_FILE"),
        ("--issuer", "CUSTODIAN_ISSUER"),
        ("--password-min-length", "CUSTODIAN_PASSWORD_MIN_LENGTH"),
        ("--argon2-memory-kib", "CUSTODIAN_ARGON2_MEMORY_KIB"),
        ("--argon2-iterations", "CUSTODIAN_ARGON2_ITERATIONS"),
        ("--login-ip-failures", "CUSTODIAN_LOGIN_IP_FAILURES"),
        ("--trusted-proxies", "CUSTODIAN_TRUSTED_PROXIES"),
        ("--decision-log", "CUSTODIAN_DECISION_LOG"),
        ("--metrics-token", "CUSTODIAN_METRICS_TOKEN"),
    ] {
        assert!(
            help.contains(flag) && help.contains(env),
            "{flag} / {env} missing:\n{help}"
        );
    }
}

#[tokio::test]
async fn projections_can_be_inspected_and_rebuilt_from_the_command_line() {
    let ledger = Ledger::sqlite();
    let cwd = tempfile::tempdir().unwrap();
    let server = Server::start(&ledger.serve_args(), cwd.path(), &[]).await;
    let status_of = |body: &serde_json::Value, generation: u64| {
        body["projections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "tenants" && p["generation"] == generation)
            .map(|p| p["state"].as_str().unwrap().to_owned())
    };
    let mut first = None;
    for _ in 0..200 {
        let body: serde_json::Value = server
            .operations("/v1/admin/projections")
            .await
            .json()
            .await
            .unwrap();
        first = status_of(&body, 1);
        if first.as_deref() == Some("active") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(first.as_deref(), Some("active"));

    let cli = |args: &[&str]| {
        let mut all = vec!["projections"];
        all.extend_from_slice(args);
        let mut c = Command::new(workspace_binary("custodian"));
        c.args(all)
            .args(ledger.serve_args())
            .current_dir(cwd.path());
        c.output().unwrap()
    };
    let out = cli(&["status"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("log head: 0") && text.contains("tenants") && text.contains("active"),
        "{text}"
    );

    let out = cli(&["rebuild", "tenants"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("generation 2"));
    // The running server notices the request and swaps the new generation in.
    let mut second = None;
    for _ in 0..400 {
        let body: serde_json::Value = server
            .operations("/v1/admin/projections")
            .await
            .json()
            .await
            .unwrap();
        second = status_of(&body, 2);
        if second.as_deref() == Some("active") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(second.as_deref(), Some("active"));

    let out = cli(&["rebuild", "nosuch"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("known: tenants"));
    let (code, _) = server.terminate().await;
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn a_stranger_cannot_make_the_server_wait_and_a_late_read_is_no_error() {
    let cwd = tempfile::tempdir().unwrap();
    let server = Server::start(&["--read-wait-ms".into(), "100".into()], cwd.path(), &[]).await;
    let far = i64::MAX.to_string();
    let client = reqwest::Client::new();
    let url = format!("{}/v1/admin/projections", server.base);
    // A wait for a position no log reaches would end in 503: a 401 says nobody waited.
    let stranger = client
        .get(&url)
        .header("Custodian-Min-Position", &far)
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), 401);
    // An operator waits, and hears 503 when the views do not get there in time.
    let operator = client
        .get(&url)
        .bearer_auth(custodian_testkit::deployment::SCRAPE_TOKEN)
        .header("Custodian-Min-Position", &far)
        .send()
        .await
        .unwrap();
    assert_eq!(operator.status(), 503);
    let (code, lines) = server.terminate().await;
    assert_eq!(code, Some(0));
    let levels: Vec<String> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|l| l["level"].as_str().map(str::to_owned))
        .collect();
    assert!(
        levels.iter().any(|l| l == "WARN"),
        "the late read is a warning: {lines:?}"
    );
    assert!(
        !levels.iter().any(|l| l == "ERROR"),
        "neither answer is an error: {lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_and_every_file_in_it_are_private_to_the_service() {
    use std::os::unix::fs::PermissionsExt as _;

    let cwd = tempfile::tempdir().unwrap();
    let data = cwd.path().join("fresh/data");
    let mut server = Server::start(
        &["--data-dir".into(), data.display().to_string()],
        cwd.path(),
        &[],
    )
    .await;
    crate::replicas::ready(&mut server).await.unwrap();
    // A refused login writes to the log too (the throttle's events), beside the views' writes.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/auth/login", server.base))
        .json(&serde_json::json!({"tenant": "_system", "email": "nobody@example.test", "password": "not the password at all"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{r:?}");

    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "{}", data.display());
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        names.push(path.file_name().unwrap().to_string_lossy().into_owned());
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    names.sort();
    for name in [
        "custodian.db",
        "custodian.db-shm",
        "custodian.db-wal",
        "secret.key",
    ] {
        assert!(
            names.iter().any(|n| n == name),
            "{name} is missing: {names:?}"
        );
    }
    server.terminate_cleanly().await;
}
