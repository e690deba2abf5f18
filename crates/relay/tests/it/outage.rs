//! NATS goes away and comes back: the log keeps taking appends, and a subscriber ends up with every
//! event exactly once, in order.

use std::collections::HashSet;

use crate::support::*;

#[tokio::test]
async fn a_nats_outage_loses_nothing_and_doubles_nothing() {
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    let log = Log::sqlite().await;
    let mut relay = Running::start(log.store.clone(), &nats.url(), fast_options());
    log.append("acme/user/user_01", 10).await;
    relay.acknowledged(10).await;

    // The subscriber's durable consumer exists before the outage and reads what is there.
    let js = nats.jetstream().await;
    let consumer = durable_consumer(&js, "siem").await;
    let mut received = receive(&consumer, 10).await;
    drop((consumer, js));

    // Kill NATS while a burst of appends is being published, so some publishes are in flight.
    let burst = {
        let store = log.store.clone();
        tokio::spawn(async move {
            let stream = custodian_domain::StreamName::parse("acme/user/user_02").unwrap();
            for i in 0..100 {
                store
                    .append(
                        &stream,
                        custodian_store::ExpectedVersion::Any,
                        vec![event("thing.happened", serde_json::json!({ "i": i }))],
                    )
                    .await
                    .expect("appends succeed while NATS is down");
            }
        })
    };
    relay.acknowledged(20).await;
    nats.kill().await;
    relay
        .until("the relay to notice NATS is gone", |s| !s.connected)
        .await;
    within("the burst of appends", burst)
        .await
        .expect("the appending task does not panic");

    // The server keeps serving commands while NATS is down.
    let last = log.append("globex/role/role_01", 25).await;
    assert_eq!(last, 135);
    let stalled = relay.status.borrow().clone();
    assert!(
        stalled.acknowledged_position < last,
        "nothing can be acknowledged without NATS: {stalled:?}"
    );
    // Stay down until a publish has timed out, so the relay has had to start over from the
    // checkpoint at least once.
    let failures = stalled.failures;
    relay
        .until("a publish to time out", |s| {
            s.failures > failures && s.last_error.is_some()
        })
        .await;

    nats.restart().await;
    relay.acknowledged(last).await;
    let last = log.append("acme/user/user_01", 5).await;
    let status = relay.acknowledged(last).await;
    assert!(status.connected, "{status:?}");

    let js = nats.jetstream().await;
    let consumer = durable_consumer(&js, "siem").await;
    received.extend(receive(&consumer, (last - 10) as usize).await);

    // Deduplicating by id (as the contract allows) leaves every event once, in position order.
    let mut seen = HashSet::new();
    let mut positions = Vec::new();
    for message in &received {
        let id = header(message, "Nats-Msg-Id").expect("every message has an id");
        let body = body(message);
        assert_eq!(body["id"], id, "the CloudEvents id is the message id");
        if seen.insert(id.to_owned()) {
            positions.push(body["position"].as_u64().expect("a numeric position"));
        }
    }
    assert_eq!(positions, (1..=last).collect::<Vec<_>>());
    // And in fact nothing was doubled at all: JetStream holds each event once.
    assert_eq!(received.len() as u64, last);
    let mut stream = custodian_stream(&js).await;
    assert_eq!(
        stream.info().await.expect("stream info").state.messages,
        last
    );
    let ids: HashSet<String> = log
        .records()
        .await
        .iter()
        .map(|r| r.id.to_string())
        .collect();
    assert_eq!(seen, ids);

    relay.stop().await;
}
