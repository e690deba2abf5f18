//! The log's Merkle tree in the service, its signed checkpoints and their publishing cadence, key
//! rotation, and two services on one database.

use std::sync::Arc;
use std::time::Duration;

use custodian_app::ledger::{self, ConsistencyQuery, InclusionQuery, LedgerOptions, publish};
use custodian_app::{App, AppError, ManualClock, SecurityOptions};
use custodian_domain::checkpoint::NoteVerifier;
use custodian_domain::merkle;
use custodian_domain::{Actor, Timestamp};
use custodian_store::{EventStore, ExpectedVersion};
use custodian_testkit::Ledger;
use tokio_util::sync::CancellationToken;

use crate::support::{START, TestApp};

fn cadence(events: u64, seconds: u64) -> impl FnOnce(&mut SecurityOptions) {
    move |o| {
        o.ledger = LedgerOptions {
            checkpoint_events: events,
            checkpoint_interval: Duration::from_secs(seconds),
            ..LedgerOptions::default()
        }
    }
}

/// Appends `n` events of no aggregate the service folds.
async fn append(app: &App, n: usize) -> u64 {
    let events = (0..n)
        .map(|i| custodian_testkit::event("thing.happened", serde_json::json!({ "i": i })))
        .collect();
    app.store
        .append(
            &custodian_testkit::stream("acme/thing/t1"),
            ExpectedVersion::Any,
            events,
        )
        .await
        .unwrap()
        .last_position
}

async fn tree_caught_up(app: &App) -> u64 {
    app.ledger.tree.catch_up().await.unwrap()
}

/// The `ledger.checkpointed` events of the log, as (position, tree_size, key_id, note).
async fn checkpoints(t: &TestApp) -> Vec<(u64, u64, String, String)> {
    t.stream_events("_system", "ledger", "checkpoints")
        .await
        .into_iter()
        .filter(|r| r.event_type.as_str() == "ledger.checkpointed")
        .map(|r| {
            (
                r.position,
                r.data["tree_size"].as_u64().unwrap(),
                r.data["key_id"].as_str().unwrap().to_owned(),
                r.data["note"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_tree_s_root_and_proofs_are_those_of_the_log_s_hashes() {
    let t = TestApp::new().await;
    t.create_tenant("acme").await;
    append(&t.app, 9).await;
    let size = tree_caught_up(&t.app).await;
    let hashes: Vec<[u8; 32]> = t
        .app
        .store
        .read_all(1, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|r| r.hash.0)
        .collect();
    assert_eq!(hashes.len() as u64, size);
    let (tree_size, root) = t.app.ledger.tree.current_root().unwrap();
    assert_eq!((tree_size, root), (size, merkle::root_of(&hashes)));
    for n in 1..=size {
        assert_eq!(
            t.app.ledger.tree.root(n).unwrap(),
            merkle::root_of(&hashes[..n as usize])
        );
    }

    let root_principal = t.root().await;
    let proof = ledger::inclusion_proof(
        &t.app,
        &root_principal,
        InclusionQuery {
            position: Some(3),
            tree_size: Some(size - 1),
        },
        None,
    )
    .await
    .unwrap();
    assert_eq!(proof.leaf_hash, hex::encode(hashes[2]));
    let path: Vec<[u8; 32]> = proof
        .proof
        .iter()
        .map(|h| hex::decode(h).unwrap().try_into().unwrap())
        .collect();
    let proved_root: [u8; 32] = hex::decode(&proof.root).unwrap().try_into().unwrap();
    assert!(merkle::verify_inclusion(
        2,
        size - 1,
        &hashes[2],
        &path,
        &proved_root
    ));
    let consistency = ledger::consistency_proof(
        &t.app,
        &root_principal,
        ConsistencyQuery {
            from: Some(4),
            to: None,
        },
        None,
    )
    .await
    .unwrap();
    assert_eq!(consistency.to, size);
    assert_eq!(
        consistency.from_root,
        hex::encode(merkle::root_of(&hashes[..4]))
    );
    let path: Vec<[u8; 32]> = consistency
        .proof
        .iter()
        .map(|h| hex::decode(h).unwrap().try_into().unwrap())
        .collect();
    assert!(merkle::verify_consistency(
        4,
        size,
        &merkle::root_of(&hashes[..4]),
        &merkle::root_of(&hashes),
        &path
    ));

    // Out-of-range questions are the caller's to fix.
    for (position, tree_size) in [
        (None, None),
        (Some(0), None),
        (Some(5), Some(4)),
        (Some(1), Some(size + 100)),
        (Some(size + 100), None),
    ] {
        let refused = ledger::inclusion_proof(
            &t.app,
            &root_principal,
            InclusionQuery {
                position,
                tree_size,
            },
            None,
        )
        .await;
        assert!(
            matches!(refused, Err(AppError::Invalid(_))),
            "{position:?} {tree_size:?}: {refused:?}"
        );
    }
    let refused = ledger::consistency_proof(
        &t.app,
        &root_principal,
        ConsistencyQuery {
            from: Some(5),
            to: Some(4),
        },
        None,
    )
    .await;
    assert!(matches!(refused, Err(AppError::Invalid(_))), "{refused:?}");
}

#[tokio::test]
async fn a_checkpoint_is_published_once_the_log_grew_by_the_configured_events() {
    let t = TestApp::with_options(cadence(5, 0)).await;
    append(&t.app, 5).await;
    let first = t
        .wait_for_stream("_system", "ledger", "checkpoints", 2)
        .await;
    assert_eq!(
        first[0].event_type.as_str(),
        "ledger.checkpoint_key_issued",
        "the first key comes with the first checkpoint"
    );
    assert_eq!(first[1].position, first[0].position + 1);
    let verifier = NoteVerifier::parse(first[0].data["verifier_key"].as_str().unwrap()).unwrap();
    let checkpoint = verifier
        .open_checkpoint(first[1].data["note"].as_str().unwrap())
        .unwrap();
    assert_eq!(checkpoint.size, first[1].data["tree_size"]);
    assert_eq!(hex::encode(checkpoint.root), first[1].data["root_hash"]);
    assert_eq!(
        checkpoint.root,
        t.app.ledger.tree.root(checkpoint.size).unwrap()
    );
    assert_eq!(first[1].data["key_id"], first[0].data["key_id"]);

    // Once nothing is due any more, four events are not enough...
    tree_caught_up(&t.app).await;
    while publish::publish(&t.app, false).await.unwrap().is_some() {
        tree_caught_up(&t.app).await;
    }
    let before = t
        .stream_events("_system", "ledger", "checkpoints")
        .await
        .len();
    append(&t.app, 4).await;
    tree_caught_up(&t.app).await;
    assert_eq!(publish::publish(&t.app, false).await.unwrap(), None);
    // ...and the fifth is: the publisher appends the checkpoint by itself.
    let fifth = append(&t.app, 1).await;
    let all = t
        .wait_for_stream("_system", "ledger", "checkpoints", before + 1)
        .await;
    assert_eq!(all.len(), before + 1, "one checkpoint, and no second key");
    let last = all.last().unwrap();
    assert_eq!(last.event_type.as_str(), "ledger.checkpointed");
    assert_eq!(last.data["tree_size"], fifth);
}

#[tokio::test]
async fn a_checkpoint_is_published_once_the_interval_passed_and_never_for_an_idle_log() {
    let t = TestApp::with_options(cadence(0, 60)).await;
    tree_caught_up(&t.app).await;
    // The log grew (bootstrap), but no time has passed on the clock.
    assert_eq!(publish::publish(&t.app, false).await.unwrap(), None);
    t.advance(61);
    let first = t
        .wait_for_stream("_system", "ledger", "checkpoints", 2)
        .await;
    let time = first[1].data["time"].as_str().unwrap().to_owned();
    assert_eq!(
        Timestamp::parse(&time).unwrap(),
        Timestamp::parse(START)
            .unwrap()
            .plus(time::Duration::seconds(61))
    );

    // Idle: only the checkpoint itself was appended since, so none is due, however long.
    tree_caught_up(&t.app).await;
    t.advance(3600);
    assert_eq!(publish::publish(&t.app, false).await.unwrap(), None);
    assert_eq!(
        publish::publish(&t.app, true).await.unwrap(),
        None,
        "even when asked"
    );
    assert_eq!(checkpoints(&t).await.len(), 1);

    // Something happens: it is covered by the next checkpoint (the interval has long passed).
    let position = append(&t.app, 1).await;
    let all = t
        .wait_for_stream("_system", "ledger", "checkpoints", 3)
        .await;
    assert_eq!(all[2].data["tree_size"], position);
}

#[tokio::test]
async fn a_rotated_key_signs_the_next_checkpoints_and_the_log_records_it() {
    let t = TestApp::new().await;
    let root = t.root().await;
    // The first checkpoint and its key come with the first request for one.
    let signed = ledger::checkpoint(&t.app, &root, None).await.unwrap();
    let old = NoteVerifier::parse(&ledger::verifier_key(&t.app).await.unwrap()).unwrap();
    assert_eq!(
        old.open_checkpoint(&signed.note).unwrap().size,
        signed.tree_size
    );
    let [(_, _, old_id, _)] = checkpoints(&t).await.try_into().unwrap();

    append(&t.app, 2).await;
    let issued = ledger::rotate_key(&t.app).await.unwrap();
    assert_eq!(issued.replaces.as_deref(), Some(old_id.as_str()));
    let event = t.events_after(issued.position - 1).await.remove(0);
    assert_eq!(event.event_type.as_str(), "ledger.checkpoint_key_issued");
    assert_eq!(event.data["replaces"], old_id);
    assert_eq!(event.data["verifier_key"], issued.verifier_key);
    assert_eq!(event.actor, Actor::system());
    assert!(!event.data.to_string().contains("private"));

    tree_caught_up(&t.app).await;
    let published = publish::publish(&t.app, true).await.unwrap().unwrap();
    assert_eq!(published.key_id, issued.key_id);
    let new = NoteVerifier::parse(&issued.verifier_key).unwrap();
    assert!(new.open_checkpoint(&published.note).is_ok());
    assert!(old.open_checkpoint(&published.note).is_err());
    assert_eq!(
        ledger::verifier_key(&t.app).await.unwrap(),
        issued.verifier_key
    );
    let signed = ledger::checkpoint(&t.app, &root, None).await.unwrap();
    assert!(new.open_checkpoint(&signed.note).is_ok());
}

#[tokio::test]
async fn checkpoints_and_proofs_need_audit_read_in_the_caller_s_tenant() {
    let t = TestApp::new().await;
    t.create_tenant("acme").await;
    let viewer = t.user_with_roles("acme", &[]).await;
    t.assign("acme", &viewer, "viewer").await;
    let manager = t.user_with_roles("acme", &[]).await;
    t.assign("acme", &manager, "manager").await;
    t.app.policy.catch_up().await.unwrap();
    let viewer = t.principal("acme", &viewer, "sess_v").await;
    let refused = ledger::checkpoint(&t.app, &viewer, None).await;
    assert!(
        matches!(refused, Err(AppError::Forbidden(_))),
        "{refused:?}"
    );
    let refused = ledger::inclusion_proof(&t.app, &viewer, InclusionQuery::default(), None).await;
    assert!(
        matches!(refused, Err(AppError::Forbidden(_))),
        "{refused:?}"
    );
    let manager = t.principal("acme", &manager, "sess_m").await;
    assert!(ledger::checkpoint(&t.app, &manager, None).await.is_ok());
}

/// A service on `ledger` (bootstrapped or not), publishing nothing on its own.
async fn service(ledger: &Ledger, store: Arc<dyn EventStore>, shutdown: &CancellationToken) -> App {
    let clock = Arc::new(ManualClock::new(Timestamp::parse(START).unwrap()));
    App::start(
        store,
        &ledger.location,
        custodian_projections::all(),
        SecurityOptions::new(ledger.dir().unwrap().join("secret.key")),
        clock,
        shutdown.clone(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn nothing_is_written_to_an_empty_log() {
    let ledger = Ledger::sqlite();
    let shutdown = CancellationToken::new();
    let app = service(&ledger, ledger.open().await, &shutdown).await;
    assert_eq!(publish::publish(&app, true).await.unwrap(), None);
    let refused = ledger::verifier_key(&app).await;
    assert!(matches!(refused, Err(AppError::NotFound(_))), "{refused:?}");
    let refused = ledger::rotate_key(&app).await;
    assert!(matches!(refused, Err(AppError::Conflict(_))), "{refused:?}");
    assert_eq!(app.store.head().await.unwrap().position, 0);
    shutdown.cancel();
}

#[tokio::test]
async fn two_services_on_one_database_publish_one_checkpoint_per_interval() {
    let ledger = Ledger::sqlite();
    let shutdown = CancellationToken::new();
    let a = service(&ledger, ledger.open().await, &shutdown).await;
    let b = service(&ledger, ledger.open().await, &shutdown).await;
    append(&a, 20).await;
    for _ in 0..3 {
        tree_caught_up(&a).await;
        tree_caught_up(&b).await;
        let (x, y) = tokio::join!(publish::publish(&a, true), publish::publish(&b, true));
        let published = [x.unwrap(), y.unwrap()];
        assert_eq!(
            published.iter().flatten().count(),
            1,
            "exactly one of them publishes: {published:?}"
        );
        append(&b, 3).await;
    }
    let records = a.store.read_all(1, 10_000).await.unwrap();
    let sizes: Vec<u64> = records
        .iter()
        .filter(|r| r.event_type.as_str() == "ledger.checkpointed")
        .map(|r| r.data["tree_size"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes.len(), 3);
    assert!(sizes.windows(2).all(|w| w[0] < w[1]), "{sizes:?}");
    let keys = records
        .iter()
        .filter(|r| r.event_type.as_str() == "ledger.checkpoint_key_issued")
        .count();
    assert_eq!(keys, 1, "the loser's key was never issued");
    shutdown.cancel();
}
