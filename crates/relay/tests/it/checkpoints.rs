//! A checkpoint's signed note is published on `custodian._system.ledger.checkpoint` right after its
//! event, once, even when the relay stopped between the two.

use async_nats::jetstream::message::PublishMessage;
use custodian_relay::{CHECKPOINT_SUBJECT, NOTE_CONTENT_TYPE};
use serde_json::json;

use crate::support::*;

const NOTE: &str = "custodian.local/ledger\n3\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\u{2014} custodian.local/ledger AAAAAA==\n";

fn checkpointed() -> custodian_domain::NewEvent {
    event(
        "ledger.checkpointed",
        json!({"origin": "custodian.local/ledger", "tree_size": 3, "note": NOTE}),
    )
}

#[tokio::test]
async fn a_checkpoint_s_note_follows_its_event_on_its_own_subject() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let log = Log::sqlite().await;
    log.append("acme/device/dev_1", 3).await;
    let checkpoint = log
        .append_events("_system/ledger/checkpoints", vec![checkpointed()])
        .await;
    let last = log.append("acme/device/dev_1", 2).await;
    let mut relay = Running::start(log.store.clone(), &nats.url(), fast_options());
    relay.acknowledged(last).await;

    let js = nats.jetstream().await;
    let mut stream = custodian_stream(&js).await;
    // Every event, plus the one note.
    assert_eq!(stream.info().await.unwrap().state.messages, last + 1);
    let event = stream.get_raw_message(checkpoint).await.unwrap();
    assert_eq!(
        event.subject.as_str(),
        "custodian._system.ledger.ledger.checkpointed"
    );
    let note = stream.get_raw_message(checkpoint + 1).await.unwrap();
    assert_eq!(note.subject.as_str(), CHECKPOINT_SUBJECT);
    assert_eq!(std::str::from_utf8(&note.payload).unwrap(), NOTE);
    assert_eq!(
        note.headers.get("Content-Type").map(|v| v.as_str()),
        Some(NOTE_CONTENT_TYPE)
    );
    let record = &log.records().await[checkpoint as usize - 1];
    assert_eq!(
        note.headers.get("Nats-Msg-Id").map(|v| v.as_str()),
        Some(format!("{}.checkpoint", record.id).as_str())
    );
    // The events after it keep their order.
    let after = stream.get_raw_message(checkpoint + 2).await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&after.payload).unwrap();
    assert_eq!(body["position"], checkpoint + 1);

    // A restart resumes after the note without sending anything again.
    relay.stop().await;
    let last = log.append("acme/device/dev_1", 1).await;
    let mut relay = Running::start(log.store.clone(), &nats.url(), fast_options());
    relay.acknowledged(last).await;
    assert_eq!(stream.info().await.unwrap().state.messages, last + 1);
    relay.stop().await;
}

#[tokio::test]
async fn a_relay_stopped_between_a_checkpoint_and_its_note_sends_the_note_first() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let log = Log::sqlite().await;
    let first = log.append("acme/device/dev_1", 2).await;
    let mut relay = Running::start(log.store.clone(), &nats.url(), fast_options());
    relay.acknowledged(first).await;
    relay.stop().await;

    // The checkpoint's event reached JetStream, its note did not (the relay stopped in between).
    let checkpoint = log
        .append_events("_system/ledger/checkpoints", vec![checkpointed()])
        .await;
    let record = log.records().await.pop().unwrap();
    let js = nats.jetstream().await;
    js.send_publish(
        custodian_relay::subject(&record),
        PublishMessage::build()
            .payload(custodian_relay::cloud_event(&record).unwrap().into())
            .message_id(record.id.to_string()),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let last = log.append("acme/device/dev_1", 1).await;

    let mut relay = Running::start(log.store.clone(), &nats.url(), fast_options());
    relay.acknowledged(last).await;
    let mut stream = custodian_stream(&js).await;
    assert_eq!(stream.info().await.unwrap().state.messages, last + 1);
    let note = stream.get_raw_message(checkpoint + 1).await.unwrap();
    assert_eq!(note.subject.as_str(), CHECKPOINT_SUBJECT);
    assert_eq!(std::str::from_utf8(&note.payload).unwrap(), NOTE);
    let after = stream.get_raw_message(checkpoint + 2).await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&after.payload).unwrap();
    assert_eq!(body["position"], last);
    relay.stop().await;
}
