//! Every event is published once, in log order, with its subject, headers and CloudEvents body.

use std::time::Duration;

use async_nats::jetstream::stream::StorageType;
use custodian_domain::{ActorKind, EventRecord};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn every_event_is_published_once_in_order_as_a_cloudevent_on_sqlite() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    publishes_every_event_once_in_order(&nats, Log::sqlite().await).await;
}

#[tokio::test]
async fn every_event_is_published_once_in_order_as_a_cloudevent_on_postgres() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let Some(log) = Log::postgres().await else {
        return;
    };
    publishes_every_event_once_in_order(&nats, log).await;
}

async fn publishes_every_event_once_in_order(nats: &NatsServer, log: Log) {
    // Some events exist before the relay starts, more arrive while it runs.
    let mut registered = event("user.registered", json!({"email": "ada@example.com"}));
    registered.actor = actor(ActorKind::ApiKey, "key_01");
    registered.correlation_id = Some("req_01".into());
    let mut changed = event("user.email_changed", json!({"email": "ada@example.org"}));
    changed.actor = actor(ActorKind::User, "user_01");
    changed.correlation_id = Some("req_02".into());
    changed.causation_id = Some(registered.id.to_string());
    log.append_events("acme/user/user_01", vec![registered, changed])
        .await;
    let mut relay = Running::start(log.store.clone(), &nats.url(), fast_options());

    log.append_events(
        "_system/tenant/tnt_01",
        vec![event("tenant.created", json!({"name": "Acme"}))],
    )
    .await;
    let mut granted = event("role.permission.granted", json!({"permission": "read"}));
    granted.actor = actor(ActorKind::Service, "custodian-projections");
    granted.causation_id = Some("evt_cause".into());
    log.append_events("globex-2/role/role_9", vec![granted])
        .await;
    // More than the relay's window of 16 in flight, across several appends.
    for i in 0..5 {
        log.append(&format!("acme/device/dev_{i}"), 10).await;
    }
    let last = log.append("acme/user/user_01", 1).await;
    assert_eq!(last, 55);
    let status = relay.acknowledged(last).await;
    assert_eq!(status.acknowledged_position, last);
    assert!(status.connected, "{status:?}");
    assert_eq!(status.last_error, None);

    let js = nats.jetstream().await;
    let mut stream = custodian_stream(&js).await;
    let info = stream.info().await.expect("stream info");
    assert_eq!(info.config.subjects, ["custodian.>"]);
    assert_eq!(info.config.storage, StorageType::File);
    assert_eq!(info.config.duplicate_window, Duration::from_secs(120));
    assert_eq!(info.state.messages, last, "each event is stored once");

    let records = log.records().await;
    assert_eq!(records.len() as u64, last);
    let consumer = durable_consumer(&js, "audit").await;
    let messages = receive(&consumer, records.len()).await;
    for (record, message) in records.iter().zip(&messages) {
        let at = record.position;
        assert_eq!(
            message.subject.as_str(),
            format!(
                "custodian.{}.{}.{}",
                record.stream.tenant(),
                record.stream.aggregate(),
                record.event_type
            ),
            "subject at position {at}"
        );
        assert_eq!(
            message.info().expect("a JetStream message").stream_sequence,
            at,
            "stream sequence equals position"
        );
        assert_eq!(
            header(message, "Nats-Msg-Id"),
            Some(record.id.to_string().as_str())
        );
        assert_eq!(
            header(message, "Content-Type"),
            Some("application/cloudevents+json")
        );
        assert_eq!(
            body(message),
            expected_cloudevent(record),
            "body at position {at}"
        );
    }

    // Spot-check the shapes the generic comparison above cannot show by itself.
    let first = body(&messages[0]);
    assert_eq!(first["source"], "urn:custodian:acme/user/user_01");
    assert_eq!(first["time"], "2026-11-25T12:00:00.123456Z");
    assert_eq!(first["actorkind"], "api_key");
    assert_eq!(first["correlationid"], "req_01");
    assert!(
        first.get("causationid").is_none(),
        "null causation is omitted"
    );
    assert_eq!(
        first["prevhash"],
        "0000000000000000000000000000000000000000000000000000000000000000"
    );
    assert_eq!(
        messages[3].subject.as_str(),
        "custodian.globex-2.role.role.permission.granted"
    );
    assert_eq!(
        messages[2].subject.as_str(),
        "custodian._system.tenant.tenant.created"
    );
    let system = body(&messages[2]);
    assert!(system.get("correlationid").is_none() && system.get("causationid").is_none());

    relay.stop().await;
}

/// The CloudEvents document DESIGN section 6 describes, built by hand from the record.
fn expected_cloudevent(r: &EventRecord) -> serde_json::Value {
    let mut doc = json!({
        "specversion": "1.0",
        "id": r.id.to_string(),
        "source": format!("urn:custodian:{}", r.stream),
        "type": r.event_type.as_str(),
        "subject": r.stream.as_str(),
        "time": r.occurred_at.to_string(),
        "datacontenttype": "application/json",
        "data": r.data,
        "tenant": r.tenant,
        "stream": r.stream.as_str(),
        "streamversion": r.version,
        "position": r.position,
        "schemaversion": r.schema,
        "prevhash": r.prev_hash.to_hex(),
        "hash": r.hash.to_hex(),
        "actorkind": r.actor.kind.as_str(),
        "actorid": r.actor.id,
    });
    if let Some(c) = &r.correlation_id {
        doc["correlationid"] = json!(c);
    }
    if let Some(c) = &r.causation_id {
        doc["causationid"] = json!(c);
    }
    for name in doc.as_object().expect("an object").keys() {
        assert!(
            name.len() <= 20
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
            "CloudEvents attribute names are lower-case letters and digits: {name}"
        );
    }
    doc
}
