//! The `custodian` command line: commands that work on a ledger refuse where there is none, and a
//! signing-key rotation is recorded on the log.

use std::path::Path;
use std::process::Stdio;

use tokio::process::Command;

use custodian_testkit::deployment::{CliOutput, Deployment, verify, workspace_binary};

/// The commands that need an existing ledger (all but `serve` and `admin bootstrap`).
const LEDGER_COMMANDS: [&[&str]; 3] = [
    &["keys", "rotate-signing"],
    &["projections", "status"],
    &["projections", "rebuild", "tenants"],
];

/// Runs `custodian ARGS` in `cwd` with none of the `CUSTODIAN_*` store settings from the
/// environment, so only `args` select the store.
async fn custodian(cwd: &Path, args: &[&str]) -> CliOutput {
    let out = Command::new(workspace_binary("custodian"))
        .args(args)
        .current_dir(cwd)
        .env_remove("CUSTODIAN_DATA_DIR")
        .env_remove("CUSTODIAN_DATABASE_URL")
        .env_remove("CUSTODIAN_SECRET_KEY_FILE")
        .env_remove("CUSTODIAN_CONFIG")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    CliOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Every path under `dir`.
fn contents(dir: &Path) -> Vec<String> {
    let mut found = vec![];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(contents(&path));
        }
        found.push(path.display().to_string());
    }
    found
}

fn assert_refused_for_no_ledger(out: &CliOutput) {
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("no ledger"), "{out:?}");
    assert!(out.stderr.contains("--data-dir"), "{out:?}");
    assert!(out.stderr.contains("--database-url"), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
}

#[tokio::test]
async fn commands_refuse_without_a_sqlite_ledger_and_create_nothing() {
    let home = tempfile::tempdir().unwrap();
    for command in LEDGER_COMMANDS {
        // Run where no data directory is (the default `./custodian-data`), and with one named
        // that does not exist.
        let elsewhere = home.path().join("elsewhere").display().to_string();
        for flags in [vec![], vec!["--data-dir", elsewhere.as_str()]] {
            let args: Vec<&str> = command.iter().copied().chain(flags).collect();
            let out = custodian(home.path(), &args).await;
            assert_refused_for_no_ledger(&out);
            assert!(
                contents(home.path()).is_empty(),
                "{args:?} created {:?}",
                contents(home.path())
            );
        }
    }
}

#[tokio::test]
async fn commands_refuse_a_postgres_database_without_the_ledger_and_create_nothing() {
    let Some(url) = custodian_testkit::postgres::fresh_database().await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data").display().to_string();
    for command in LEDGER_COMMANDS {
        let args: Vec<&str> = command
            .iter()
            .copied()
            .chain(["--database-url", url.as_str(), "--data-dir", data.as_str()])
            .collect();
        let out = custodian(home.path(), &args).await;
        assert_refused_for_no_ledger(&out);
        assert!(out.stderr.contains("no Custodian tables"), "{out:?}");
        assert!(contents(home.path()).is_empty(), "{args:?} created files");
        assert!(
            !custodian_store::ledger_exists(&url).await.unwrap(),
            "{args:?} created the ledger's tables"
        );
    }
}

#[tokio::test]
async fn rotate_signing_records_the_key_issuance_on_the_log() {
    let ledger = Deployment::sqlite();
    ledger
        .bootstrap("root@platform.test", "Root", "correct horse battery staple")
        .await;
    let before = ledger.read_log().await.len();

    let out = ledger.cli(&["keys", "rotate-signing"], "").await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let kid = out
        .stdout
        .split_whitespace()
        .nth(3)
        .map(|k| k.trim_end_matches(';').to_owned())
        .unwrap_or_else(|| panic!("{out:?}"));
    assert!(kid.starts_with("sk_"), "{out:?}");

    let log = ledger.read_log().await;
    assert_eq!(log.len(), before + 1, "one event: the issuance");
    let issued = log.last().unwrap();
    assert_eq!(issued.event_type.as_str(), "signing_key.issued");
    assert_eq!(issued.stream.as_str(), format!("_system/signing_key/{kid}"));
    assert_eq!(issued.data["kid"], kid.as_str());
    assert_eq!(issued.data["algorithm"], "EdDSA");
    let mut fields: Vec<&str> = issued
        .data
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        ["algorithm", "created_at", "curve", "kid", "public_key"]
    );
    assert!(
        out.stdout
            .contains(&format!("at position {}", issued.position)),
        "{out:?}"
    );
    let (code, verified) = verify(&ledger.ledger.location).await;
    assert_eq!(code, Some(0), "{verified}");
}

#[tokio::test]
async fn rotate_signing_refuses_a_master_key_the_servers_do_not_have() {
    let ledger = Deployment::sqlite();
    ledger
        .bootstrap("root@platform.test", "Root", "correct horse battery staple")
        .await;
    let before = ledger.read_log().await.len();
    let other = ledger.home.path().join("other.key");

    let out = ledger
        .cli(
            &[
                "keys",
                "rotate-signing",
                "--secret-key-file",
                &other.display().to_string(),
            ],
            "",
        )
        .await;

    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("--secret-key-file"), "{out:?}");
    assert!(!other.exists(), "a master key was made up");
    assert_eq!(ledger.read_log().await.len(), before);
}
