//! `custodian serve` as a user runs it.

use std::process::Command;

use crate::support::{Backend, Server, workspace_binary};

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
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let cwd = tempfile::tempdir().unwrap();
    let server = Server::start(&backend.serve_args(), cwd.path(), &[]).await;
    let r = reqwest::get(format!("{}/readyz", server.base))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        !cwd.path().join("custodian-data").exists(),
        "no embedded store when PostgreSQL is configured"
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
    ] {
        assert!(
            help.contains(flag) && help.contains(env),
            "{flag} / {env} missing:\n{help}"
        );
    }
}
