//! The checkpoint lives in JetStream: a new relay resumes where the last one stopped, and refuses
//! to publish onto a stream that holds another log's history.

use futures::StreamExt;

use crate::support::*;

#[tokio::test]
async fn a_restarted_relay_resumes_from_jetstream_without_republishing() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let log = Log::sqlite().await;
    let mut first = Running::start(log.store.clone(), &nats.url(), fast_options());
    log.append("acme/user/user_01", 10).await;
    first.acknowledged(10).await;
    first.stop().await;

    // Watch every message published on the subjects, including any JetStream would drop as a
    // duplicate: a plain subscription sees them all.
    let js = nats.jetstream().await;
    let client = js.client();
    let mut wire = client
        .subscribe("custodian.>")
        .await
        .expect("subscribing to custodian.>");
    client
        .flush()
        .await
        .expect("the subscription is registered");

    let last = log.append("acme/user/user_02", 5).await;
    assert_eq!(last, 15);
    let mut second = Running::start(log.store.clone(), &nats.url(), fast_options());
    second.acknowledged(last).await;
    // The relay publishes on one connection, in order, so the subscription sees anything it sent
    // again before it sees position 11; read up to the last new event.
    let mut published = Vec::new();
    within("the new events on the wire", async {
        while published.last() != Some(&last) {
            let message = wire.next().await.expect("the subscription stays open");
            let body: serde_json::Value =
                serde_json::from_slice(&message.payload).expect("a JSON body");
            published.push(body["position"].as_u64().expect("a position"));
        }
    })
    .await;
    assert_eq!(
        published,
        (11..=15).collect::<Vec<_>>(),
        "only the new events are sent"
    );

    let mut stream = custodian_stream(&js).await;
    let state = stream.info().await.expect("stream info").state.clone();
    assert_eq!((state.messages, state.last_sequence), (last, last));
    second.stop().await;
}

#[tokio::test]
async fn a_relay_refuses_a_stream_that_holds_another_logs_history() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let original = Log::sqlite().await;
    let mut relay = Running::start(original.store.clone(), &nats.url(), fast_options());
    original.append("acme/user/user_01", 3).await;
    relay.acknowledged(3).await;
    relay.stop().await;

    // A different log (say, a database restored from the wrong backup) with as many events.
    let other = Log::sqlite().await;
    other.append("acme/user/user_01", 4).await;
    let mut relay = Running::start(other.store.clone(), &nats.url(), fast_options());
    relay
        .until("the relay to report the divergence", |s| {
            s.last_error
                .as_deref()
                .is_some_and(|e| e.contains("disagree at position 3"))
        })
        .await;
    assert_eq!(relay.status.borrow().acknowledged_position, 0);
    relay.stop().await;

    let js = nats.jetstream().await;
    let mut stream = custodian_stream(&js).await;
    assert_eq!(
        stream.info().await.expect("stream info").state.messages,
        3,
        "nothing of the other log was published"
    );
}

#[tokio::test]
async fn two_relays_on_one_log_publish_each_event_once_in_order() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    // As when two server processes share one PostgreSQL database, each with its relay.
    let log = Log::sqlite().await;
    let mut one = Running::start(log.store.clone(), &nats.url(), fast_options());
    let mut two = Running::start(log.store.clone(), &nats.url(), fast_options());
    let mut last = 0;
    for i in 0..20 {
        last = log.append(&format!("acme/user/user_{i}"), 10).await;
    }
    one.acknowledged(last).await;
    two.acknowledged(last).await;

    let js = nats.jetstream().await;
    let consumer = durable_consumer(&js, "audit").await;
    let positions: Vec<u64> = receive(&consumer, last as usize)
        .await
        .iter()
        .map(|m| body(m)["position"].as_u64().expect("a position"))
        .collect();
    assert_eq!(positions, (1..=last).collect::<Vec<_>>());
    one.stop().await;
    two.stop().await;
}
