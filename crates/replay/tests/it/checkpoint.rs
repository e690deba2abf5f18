//! `verify --checkpoint`: a signed checkpoint kept outside the log catches what the chain alone
//! cannot (a cut tail, a history rewritten and rehashed), and every single-event tampering (change,
//! delete, reorder, insert) is still named at its position with a checkpoint given.

use custodian_domain::checkpoint::{Checkpoint, NoteSigner};
use custodian_domain::merkle::{self, Tree};
use custodian_testkit::Ledger;
use ed25519_dalek::SigningKey;

use crate::support::{Log as _, Run, run_binary};
use crate::verify::hashes;

custodian_testkit::on_every_backend!(
    an_intact_log_extends_its_checkpoint,
    a_cut_tail_contradicts_the_checkpoint_the_chain_cannot_see_it,
    a_rewritten_and_rehashed_history_contradicts_the_checkpoint,
    single_event_tampering_is_named_at_its_position_even_with_a_checkpoint,
    no_answer_comes_from_a_tampered_log,
);

const ORIGIN: &str = "custodian.test/ledger";

/// A checkpoint of the first `size` events of `leaves`, signed, written next to the log with its
/// verifier key; returns (checkpoint file, key).
fn signed_checkpoint(
    dir: &tempfile::TempDir,
    leaves: &[[u8; 32]],
    size: usize,
) -> (String, String) {
    let signer = NoteSigner::new(ORIGIN, SigningKey::from_bytes(&[42; 32])).unwrap();
    let checkpoint = Checkpoint {
        origin: ORIGIN.into(),
        size: size as u64,
        root: merkle::root_of(&leaves[..size]),
        time: None,
    };
    let note = signer.sign(&checkpoint.body()).unwrap();
    let path = dir.path().join(format!("checkpoint-{size}.txt"));
    std::fs::write(&path, note).unwrap();
    (path.display().to_string(), signer.verifier_key())
}

async fn verify_against(fixture: &Ledger, checkpoint: &str, key: &str) -> Run {
    run_binary(&[
        "verify",
        &fixture.location,
        "--checkpoint",
        checkpoint,
        "--key",
        key,
    ])
    .await
}

async fn an_intact_log_extends_its_checkpoint(fixture: Ledger) {
    fixture.populate(300).await;
    let leaves = hashes(&fixture).await;
    let dir = tempfile::tempdir().unwrap();
    for size in [0, 1, 250, 300] {
        let (file, key) = signed_checkpoint(&dir, &leaves, size);
        let run = verify_against(&fixture, &file, &key).await;
        assert_eq!(run.code, Some(0), "{run:?}");
        assert!(
            run.stdout.contains(&format!(
                "extends the checkpoint of {ORIGIN} at tree size {size}"
            )),
            "{run:?}"
        );
    }

    // The key must be the checkpoint's: another key, or a forged checkpoint, is unusable (2).
    let (file, _) = signed_checkpoint(&dir, &leaves, 250);
    let other = NoteSigner::new(ORIGIN, SigningKey::from_bytes(&[7; 32])).unwrap();
    let run = verify_against(&fixture, &file, &other.verifier_key()).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("no signature by"), "{run:?}");
    let (_, key) = signed_checkpoint(&dir, &leaves, 250);
    let note = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, note.replacen("\n250\n", "\n251\n", 1)).unwrap();
    let run = verify_against(&fixture, &file, &key).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("does not verify"), "{run:?}");

    // A checkpoint of another log is refused when the origin is given.
    let (file, key) = signed_checkpoint(&dir, &leaves, 250);
    for (origin, code) in [(ORIGIN, 0), ("other.example/ledger", 2)] {
        let run = run_binary(&[
            "verify",
            &fixture.location,
            "--checkpoint",
            &file,
            "--key",
            &key,
            "--origin",
            origin,
        ])
        .await;
        assert_eq!(run.code, Some(code), "{origin}: {run:?}");
    }

    // The JSON answer for programs.
    let (file, key) = signed_checkpoint(&dir, &leaves, 250);
    let run = run_binary(&[
        "verify",
        &fixture.location,
        "--checkpoint",
        &file,
        "--key",
        &key,
        "--json",
    ])
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["status"], "verified");
    assert_eq!(doc["position"], 300);
    assert_eq!(doc["merkle_root"], hex::encode(merkle::root_of(&leaves)));
    assert_eq!(doc["checkpoint"]["tree_size"], 250);
    assert_eq!(doc["events_read"], 300);
    assert!(doc["time"].is_string(), "{doc}");
}

async fn a_cut_tail_contradicts_the_checkpoint_the_chain_cannot_see_it(fixture: Ledger) {
    fixture.populate(300).await;
    let leaves = hashes(&fixture).await;
    let dir = tempfile::tempdir().unwrap();
    let (file, key) = signed_checkpoint(&dir, &leaves, 250);

    let mut db = fixture.connect().await;
    db.drop_append_only_triggers().await;
    db.delete_from(201).await;
    db.close().await;

    // The chain alone: the last surviving record is a valid head.
    let run = fixture.run_verify().await;
    assert_eq!(run.code, Some(0), "{run:?}");

    let run = verify_against(&fixture, &file, &key).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(
        run.stdout,
        format!(
            "contradicts the checkpoint of {ORIGIN} at tree size 250: the log holds only 200 events, so its tail was cut\n"
        )
    );
}

async fn a_rewritten_and_rehashed_history_contradicts_the_checkpoint(fixture: Ledger) {
    fixture.populate(300).await;
    let original = hashes(&fixture).await;
    let dir = tempfile::tempdir().unwrap();
    let (file, key) = signed_checkpoint(&dir, &original, 250);

    // An attacker with the database changes event 100 and rehashes the chain from there on.
    let mut db = fixture.connect().await;
    db.drop_append_only_triggers().await;
    db.flip_one_data_byte(100).await;
    db.rechain_from(&fixture, 100).await;
    db.close().await;

    let run = fixture.run_verify().await;
    assert_eq!(run.code, Some(0), "the chain alone cannot see it: {run:?}");

    let run = verify_against(&fixture, &file, &key).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stdout.starts_with(&format!(
            "contradicts the checkpoint of {ORIGIN} at tree size 250: the log's first 250 events have merkle root "
        )),
        "{run:?}"
    );
    assert!(
        run.stdout
            .ends_with("so history up to position 250 was rewritten\n"),
        "{run:?}"
    );

    // Nor can the rewritten log prove consistency with the earlier checkpoint.
    let tampered = hashes(&fixture).await;
    let mut tree = Tree::new();
    for leaf in &tampered {
        tree.push(leaf);
    }
    let proof = tree.consistency_proof(250, 300).unwrap();
    assert!(!merkle::verify_consistency(
        250,
        300,
        &merkle::root_of(&original[..250]),
        &tree.root(300).unwrap(),
        &proof
    ));
    // While the intact history does.
    let mut intact = Tree::new();
    for leaf in &original {
        intact.push(leaf);
    }
    assert!(merkle::verify_consistency(
        250,
        300,
        &merkle::root_of(&original[..250]),
        &intact.root(300).unwrap(),
        &intact.consistency_proof(250, 300).unwrap()
    ));
}

async fn single_event_tampering_is_named_at_its_position_even_with_a_checkpoint(fixture: Ledger) {
    fixture.populate(300).await;
    let leaves = hashes(&fixture).await;
    let dir = tempfile::tempdir().unwrap();
    let (file, key) = signed_checkpoint(&dir, &leaves, 250);
    let mut db = fixture.connect().await;
    db.drop_append_only_triggers().await;
    db.close().await;

    let cases = [
        ("change", "chain broken at position 137: stored hash is "),
        (
            "delete",
            "chain broken at position 137: position 137 expected, found position 138",
        ),
        ("reorder", "chain broken at position 137: "),
        ("insert", "chain broken at position 138: "),
    ];
    for (name, expected) in cases {
        let mut db = fixture.connect().await;
        db.snapshot().await;
        match name {
            "change" => db.flip_one_data_byte(137).await,
            "delete" => db.delete(137).await,
            "reorder" => db.swap(137, 138).await,
            _ => db.duplicate_after(137).await,
        }
        let run = verify_against(&fixture, &file, &key).await;
        assert_eq!(run.code, Some(1), "{name}: {run:?}");
        assert!(run.stdout.starts_with(expected), "{name}: {run:?}");
        db.restore().await;
        db.close().await;
        let run = verify_against(&fixture, &file, &key).await;
        assert_eq!(run.code, Some(0), "{name} restored: {run:?}");
    }
}

/// Every command that answers from the log checks its chain as it reads: a changed event stops
/// the answer at its position rather than letting it count.
async fn no_answer_comes_from_a_tampered_log(fixture: Ledger) {
    fixture.populate(300).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("views.db").display().to_string();
    let history = ["history", "--principal", "u1", fixture.location.as_str()];
    let at = [
        "at",
        "--position",
        "200",
        "--out",
        out.as_str(),
        fixture.location.as_str(),
    ];
    let run = run_binary(&history).await;
    assert_eq!(run.code, Some(0), "{run:?}");

    let mut db = fixture.connect().await;
    db.drop_append_only_triggers().await;
    db.flip_one_data_byte(137).await;
    db.close().await;
    for args in [&history[..], &at[..]] {
        let run = run_binary(args).await;
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
        assert!(
            run.stderr.contains("position 137") && run.stderr.contains("hash chain is broken"),
            "{args:?}: {run:?}"
        );
        assert_eq!(run.stdout, "", "{args:?}");
    }
    assert!(!std::path::Path::new(&out).exists(), "at wrote a file");
}
