//! The `custodian-replay` binary: what it prints, where, and its exit status.

use custodian_testkit::{Backend, Ledger};

use crate::support::{Log as _, missing_path, run_binary};

custodian_testkit::on_every_backend!(
    an_intact_log_prints_the_head_and_exits_0,
    changed_data_exits_1_naming_its_position,
    a_rehashed_forgery_exits_1_naming_the_next_position,
    an_unreadable_row_exits_1_naming_its_position,
    an_empty_log_exits_0_with_0_events,
    a_missing_database_exits_2_and_creates_nothing,
    a_database_without_a_log_exits_2,
);

async fn an_intact_log_prints_the_head_and_exits_0(fixture: Ledger) {
    fixture.populate(300).await;
    let store = fixture.open_read_only().await;
    let head = store.head().await.unwrap();
    store.close().await;

    let run = fixture.run_verify().await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "verified: 300 events, head position 300, hash {}",
            head.hash.to_hex()
        )
    );
    assert!(lines[1].starts_with("as of position 300 ("), "{run:?}");
    let leaves = crate::verify::hashes(&fixture).await;
    assert_eq!(
        lines[2],
        format!(
            "merkle root {} (tree size 300)",
            hex::encode(custodian_domain::merkle::root_of(&leaves))
        )
    );
    // stderr is not a terminal here, so the progress bar must not draw at all: only the rate.
    assert_only_the_rate(&run.stderr, 300);
}

async fn changed_data_exits_1_naming_its_position(fixture: Ledger) {
    fixture.populate(300).await;
    let mut db = fixture.connect().await;
    db.drop_append_only_triggers().await;
    db.flip_one_data_byte(137).await;
    db.close().await;

    let run = fixture.run_verify().await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stdout
            .starts_with("chain broken at position 137: stored hash is "),
        "{run:?}"
    );
    assert!(
        run.stdout.contains("changed after it was written"),
        "{run:?}"
    );
    assert_eq!(run.stdout.lines().count(), 1, "{run:?}");
    assert_only_the_rate(&run.stderr, 136);
}

async fn a_rehashed_forgery_exits_1_naming_the_next_position(fixture: Ledger) {
    fixture.populate(300).await;
    let mut db = fixture.connect().await;
    db.drop_append_only_triggers().await;
    db.flip_one_data_byte(137).await;
    let forged = db.rehash(&fixture, 137).await;
    db.close().await;

    let run = fixture.run_verify().await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stdout
            .starts_with("chain broken at position 138: prev_hash is "),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains(&format!("the hash of position 137 is {forged}")),
        "{run:?}"
    );
}

async fn an_unreadable_row_exits_1_naming_its_position(fixture: Ledger) {
    fixture.populate(300).await;
    let mut db = fixture.connect().await;
    db.drop_append_only_triggers().await;
    db.set_data(250, "not json").await;
    db.close().await;

    let run = fixture.run_verify().await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stdout
            .starts_with("chain broken at position 250: the record is unreadable: "),
        "{run:?}"
    );
}

async fn an_empty_log_exits_0_with_0_events(fixture: Ledger) {
    fixture.populate(0).await;
    let run = fixture.run_verify().await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout
            .starts_with("verified: 0 events, the log is empty\nmerkle root "),
        "{run:?}"
    );
    assert_only_the_rate(&run.stderr, 0);
}

async fn a_missing_database_exits_2_and_creates_nothing(fixture: Ledger) {
    match fixture.backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let path = missing_path(&dir);
            let path_text = path.display().to_string();
            for source in [path_text.clone(), format!("sqlite:{path_text}")] {
                let run = run_binary(&["verify", &source]).await;
                assert_eq!(run.code, Some(2), "{run:?}");
                assert_eq!(run.stdout, "");
                assert!(run.stderr.starts_with("custodian-replay: "), "{run:?}");
                assert!(run.stderr.contains(&path_text), "{run:?}");
                assert!(
                    run.stderr.contains("no SQLite database"),
                    "the message says what is wrong: {run:?}"
                );
                assert!(!path.exists(), "{} was created", path.display());
                assert!(
                    !path.parent().unwrap().exists(),
                    "its directory was created"
                );
            }
        }
        Backend::Postgres => {
            // The fixture's database exists; one next to it that was never created does not.
            let missing = format!("{}_missing", fixture.location);
            let run = run_binary(&["verify", &missing]).await;
            assert_eq!(run.code, Some(2), "{run:?}");
            assert_eq!(run.stdout, "");
            assert!(
                run.stderr
                    .starts_with("custodian-replay: cannot open the event log at "),
                "{run:?}"
            );
            assert!(run.stderr.contains("does not exist"), "{run:?}");
        }
    }
}

async fn a_database_without_a_log_exits_2(fixture: Ledger) {
    // A database that exists but holds no Custodian schema: there is no log to verify.
    if fixture.backend == Backend::Sqlite {
        std::fs::write(&fixture.location, b"").unwrap();
    }
    let run = fixture.run_verify().await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert_eq!(run.stdout, "");
    assert!(run.stderr.starts_with("custodian-replay: "), "{run:?}");
    assert!(run.stderr.contains("events"), "{run:?}");
}

#[tokio::test]
async fn a_source_that_is_not_a_database_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(
        &path,
        "these are not the events you are looking for\n".repeat(100),
    )
    .unwrap();
    let run = run_binary(&["verify", &path.display().to_string()]).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert_eq!(run.stdout, "");
    assert!(run.stderr.starts_with("custodian-replay: "), "{run:?}");
}

#[tokio::test]
async fn an_unreachable_postgres_server_exits_2_at_once_saying_why() {
    // Nothing listens on port 1; the password must not be echoed.
    let started = std::time::Instant::now();
    let run = run_binary(&[
        "verify",
        "postgres://custodian:s3cret@127.0.0.1:1/custodian",
    ])
    .await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.starts_with(
            "custodian-replay: cannot open the event log at postgres://custodian:***@127.0.0.1:1/custodian: "
        ),
        "{run:?}"
    );
    assert!(run.stderr.to_lowercase().contains("refused"), "{run:?}");
    assert!(!run.stderr.contains("s3cret"), "{run:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "a refused connection is reported without waiting out a timeout"
    );
}

#[tokio::test]
async fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["verify"][..],
        &["verify", "a", "b"][..],
        &["frobnicate"][..],
    ] {
        let run = run_binary(args).await;
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
        assert_eq!(run.stdout, "", "{args:?}");
        assert!(!run.stderr.is_empty(), "{args:?}");
    }
}

#[tokio::test]
async fn help_documents_the_exit_statuses() {
    for args in [&["--help"][..], &["verify", "--help"][..]] {
        let run = run_binary(args).await;
        assert_eq!(run.code, Some(0), "{args:?}: {run:?}");
        for line in [
            "0  verified",
            "1  chain broken",
            "2  could not read the source",
        ] {
            assert!(run.stdout.contains(line), "{args:?}: {line:?} in {run:?}");
        }
    }
    let run = run_binary(&["verify", "--help"]).await;
    assert!(run.stdout.contains("SOURCE"), "{run:?}");
    assert!(run.stdout.contains("postgres://"), "{run:?}");
}

/// `stderr` holds one line: the reading rate of `events` events (no progress bar drawn).
pub fn assert_only_the_rate(stderr: &str, events: u64) {
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.starts_with(&format!("read {events} events in ")) && stderr.contains(" events/s"),
        "{stderr:?}"
    );
}
