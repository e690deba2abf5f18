//! The events the conformance suite appends; the logs under test come from `custodian-testkit`.

use custodian_domain::NewEvent;

/// A `thing.happened` event carrying `data`, from request `req_test`.
pub fn event(data: serde_json::Value) -> NewEvent {
    NewEvent {
        correlation_id: Some("req_test".into()),
        ..custodian_testkit::event("thing.happened", data)
    }
}

/// `n` events, the `i`-th carrying `{"i": i}`.
pub fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| event(serde_json::json!({ "i": i })))
        .collect()
}
