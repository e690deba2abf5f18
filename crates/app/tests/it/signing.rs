//! Issuing access-token signing keys, and the record of it on the log.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use custodian_app::signing;
use custodian_domain::{Actor, ActorKind, EventRecord, Timestamp};
use ed25519_dalek::{Signature, VerifyingKey};
use sqlx::Row;

use crate::support::{START, TestApp};

/// Every record of the log after `position`.
async fn records_after(t: &TestApp, position: u64) -> Vec<EventRecord> {
    t.app.store.read_all(position + 1, 1000).await.unwrap()
}

async fn wrapped_private_key(t: &TestApp, kid: &str) -> String {
    sqlx::query("SELECT private_wrapped FROM signing_keys WHERE kid = $1")
        .bind(kid)
        .fetch_one(t.app.db.pool())
        .await
        .unwrap()
        .try_get("private_wrapped")
        .unwrap()
}

#[tokio::test]
async fn rotation_records_one_issuance_of_the_new_signing_key_and_signs_with_it() {
    let t = TestApp::new().await;
    let signer = &t.app.security.signer;
    let old_kid = signer.signing_kid().unwrap();
    let head = t.app.store.head().await.unwrap().position;
    t.advance(90);

    let issued = signing::rotate(&t.app).await.unwrap();

    let new_kid = signer.signing_kid().unwrap();
    assert_ne!(new_kid, old_kid);
    assert_eq!(
        issued.kid, new_kid,
        "the service signs with the issued key at once"
    );
    let records = records_after(&t, head).await;
    assert_eq!(records.len(), 1, "exactly one event: {records:?}");
    let record = &records[0];
    assert_eq!(record.event_type.as_str(), "signing_key.issued");
    assert_eq!(record.schema, 1);
    assert_eq!(record.position, issued.position);
    assert_eq!(
        record.stream.as_str(),
        format!("_system/signing_key/{new_kid}")
    );
    assert_eq!(record.actor.kind, ActorKind::System);
    let at = Timestamp::parse(START)
        .unwrap()
        .plus(time::Duration::seconds(90));
    assert_eq!(record.occurred_at, at);
    assert_eq!(issued.created_at, at);

    let data = record.data.as_object().unwrap();
    let mut fields: Vec<&str> = data.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        ["algorithm", "created_at", "curve", "kid", "public_key"],
        "nothing but the public description of the key"
    );
    assert_eq!(data["kid"], new_kid.as_str());
    assert_eq!(data["algorithm"], "EdDSA");
    assert_eq!(data["curve"], "Ed25519");
    assert_eq!(data["created_at"], at.to_string());
    assert_eq!(data["public_key"], issued.public_key.as_str());

    // The recorded key is the public half of the one that signs: it verifies a fresh token.
    let jwks = signer.jwks(at.as_datetime());
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == new_kid.as_str())
        .expect("the new key is published");
    assert_eq!(jwk["x"], data["public_key"]);
    let (token, _) = signer
        .issue("user_1", "acme", "sess_1", vec![], at.as_datetime())
        .unwrap();
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let public: [u8; 32] = URL_SAFE_NO_PAD
        .decode(data["public_key"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let signature = Signature::from_slice(&URL_SAFE_NO_PAD.decode(signature).unwrap()).unwrap();
    VerifyingKey::from_bytes(&public)
        .unwrap()
        .verify_strict(signed.as_bytes(), &signature)
        .expect("the recorded public key verifies what the new key signs");

    // The views and the authentication index read past it.
    t.views_caught_up().await;
    t.app.security.index.catch_up().await.unwrap();

    // And the private half, kept wrapped outside the log, is not in it in any form.
    let text = record.data.to_string();
    let wrapped = wrapped_private_key(&t, &new_kid).await;
    assert!(!text.contains(&wrapped), "{text}");
    assert!(!text.contains(wrapped.trim_start_matches("v1.")), "{text}");
}

#[tokio::test]
async fn the_key_a_service_makes_for_itself_at_first_start_is_not_recorded() {
    let t = TestApp::new().await;
    assert!(t.app.security.signer.signing_kid().is_some());
    let records = records_after(&t, 0).await;
    assert!(!records.is_empty(), "the bootstrap is on the log");
    assert!(
        records
            .iter()
            .all(|r| r.stream.aggregate() != "signing_key"),
        "{records:?}"
    );
}

#[tokio::test]
async fn a_key_issued_by_another_process_is_recorded_at_its_time_and_loaded_on_reload() {
    let t = TestApp::new().await;
    let head = t.app.store.head().await.unwrap().position;
    let at = Timestamp::parse("2026-03-02T08:30:00Z").unwrap();
    let actor = Actor::system();

    let issued = signing::issue(
        &t.app.store,
        &t.app.db,
        &t.app.security.keyring,
        actor.clone(),
        at,
    )
    .await
    .unwrap();

    let records = records_after(&t, head).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].actor, actor);
    assert_eq!(records[0].occurred_at, at);
    assert_eq!(records[0].data["created_at"], at.to_string());
    let signer = &t.app.security.signer;
    assert_ne!(signer.signing_kid(), Some(issued.kid.clone()));
    signer.reload().await.unwrap();
    assert_eq!(signer.signing_kid(), Some(issued.kid));
}
