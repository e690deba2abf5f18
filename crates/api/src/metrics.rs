//! The operations report in the Prometheus text exposition format: names, help texts and labels
//! only; every number comes from [`custodian_app::operations::projections`].

use custodian_app::operations::ProjectionsReport;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The media type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProjectionLabels {
    projection: String,
    generation: String,
    state: String,
}

/// A gauge's value: counters past `i64::MAX` (never reached in practice) show as `i64::MAX`.
fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `report` as Prometheus metrics: `custodian_log_head_position`,
/// `custodian_views_applied_position`, per projection generation `custodian_projection_position`,
/// `custodian_projection_lag_events`, `custodian_projection_lag_seconds`,
/// `custodian_projection_failures`, and with a relay `custodian_relay_acknowledged_position`,
/// `custodian_relay_connected`, `custodian_relay_failures`.
pub fn render(report: &ProjectionsReport) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("custodian");
    let head = Gauge::<i64>::default();
    head.set(gauge(report.head));
    registry.register(
        "log_head_position",
        "The log's last committed position",
        head,
    );
    let applied = Gauge::<i64>::default();
    applied.set(gauge(report.applied));
    registry.register(
        "views_applied_position",
        "The position every serving view has applied",
        applied,
    );
    let position = Family::<ProjectionLabels, Gauge<i64>>::default();
    let lag_events = Family::<ProjectionLabels, Gauge<i64>>::default();
    let lag_seconds =
        Family::<ProjectionLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let failures = Family::<ProjectionLabels, Gauge<i64>>::default();
    for p in &report.projections {
        let labels = ProjectionLabels {
            projection: p.name.clone(),
            generation: p.generation.to_string(),
            state: p.state.clone(),
        };
        position.get_or_create(&labels).set(gauge(p.position));
        lag_events.get_or_create(&labels).set(gauge(p.lag_events));
        lag_seconds.get_or_create(&labels).set(p.lag_seconds);
        failures.get_or_create(&labels).set(gauge(p.failures));
    }
    registry.register(
        "projection_position",
        "Last position a projection applied",
        position,
    );
    registry.register(
        "projection_lag_events",
        "Events a projection is behind the head",
        lag_events,
    );
    registry.register(
        "projection_lag_seconds",
        "Seconds since the oldest event a projection has not applied occurred",
        lag_seconds,
    );
    registry.register(
        "projection_failures",
        "Failed projection batches since start",
        failures,
    );
    if let Some(relay) = &report.relay {
        let acknowledged = Gauge::<i64>::default();
        acknowledged.set(gauge(relay.acknowledged_position));
        registry.register(
            "relay_acknowledged_position",
            "Every event up to this position is acknowledged by JetStream",
            acknowledged,
        );
        let connected = Gauge::<i64>::default();
        connected.set(i64::from(relay.connected));
        registry.register("relay_connected", "1 while connected to NATS", connected);
        let failures = Gauge::<i64>::default();
        failures.set(gauge(relay.failures));
        registry.register(
            "relay_failures",
            "Failed relay attempts since start",
            failures,
        );
    }
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, &registry)?;
    Ok(body)
}
