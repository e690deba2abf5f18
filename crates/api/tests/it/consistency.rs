//! Read-your-writes, projection status and metrics over HTTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use custodian_domain::{Actor, EventRecord, EventType, NewEvent, StreamName, Timestamp};
use custodian_projections::{ApplyError, Projection, Tables};
use custodian_store::ExpectedVersion;
use sqlx::AnyConnection;

use crate::support::{problem, spawn_app_on};

fn tenant_created(n: u64) -> NewEvent {
    NewEvent {
        id: uuid::Uuid::now_v7(),
        event_type: EventType::parse("tenant.created").unwrap(),
        schema: 1,
        actor: Actor::system(),
        occurred_at: Timestamp::parse("2026-11-25T12:00:00Z").unwrap(),
        correlation_id: None,
        causation_id: None,
        data: serde_json::json!({"name": format!("Tenant {n}"), "slug": format!("t-{n}"), "plan": "free"}),
    }
}

/// A deliberately slow projection: it remembers the last position it applied, in its table.
#[derive(Default)]
struct Slow {
    delay_us: AtomicU64,
}

#[async_trait]
impl Projection for Slow {
    fn name(&self) -> &'static str {
        "slow"
    }
    fn version(&self) -> u32 {
        1
    }
    fn tables(&self) -> &'static [&'static str] {
        &["seen"]
    }
    fn create(&self, t: &Tables) -> Vec<String> {
        vec![format!(
            "CREATE TABLE IF NOT EXISTS {} (id BIGINT PRIMARY KEY, position BIGINT NOT NULL)",
            t.name("seen")
        )]
    }
    async fn apply(
        &self,
        conn: &mut AnyConnection,
        t: &Tables,
        event: &EventRecord,
    ) -> Result<(), ApplyError> {
        tokio::time::sleep(Duration::from_micros(self.delay_us.load(Ordering::SeqCst))).await;
        let table = t.name("seen");
        sqlx::query(&format!(
            "INSERT INTO {table} (id, position) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET position = $1"
        ))
        .bind(event.position as i64)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_with_min_position_sees_the_write_just_made_1000_times() {
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().join("custodian.db").display().to_string();
    let slow = Arc::new(Slow::default());
    slow.delay_us.store(300, Ordering::SeqCst);
    let app = spawn_app_on(
        location,
        Some(dir),
        Some(vec![slow.clone() as Arc<dyn Projection>]),
        Duration::from_secs(5),
    )
    .await;
    let root = crate::support::root_token(&app).await;
    let stream = StreamName::parse("acme/thing/t1").unwrap();
    for i in 0..1000u64 {
        let written = app
            .store
            .append(&stream, ExpectedVersion::Any, vec![tenant_created(i)])
            .await
            .unwrap()
            .last_position;
        let r = app
            .client
            .get(app.url("/v1/admin/projections"))
            .bearer_auth(&root)
            .header("Custodian-Min-Position", written.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "read {i}");
        let served_at: u64 = r.headers()["custodian-position"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            served_at >= written,
            "read {i} served at {served_at} < {written}"
        );
        let body: serde_json::Value = r.json().await.unwrap();
        let slow_view = body["projections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "slow" && p["state"] == "active")
            .unwrap();
        assert!(
            slow_view["position"].as_u64().unwrap() >= written,
            "read {i}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_cannot_be_served_in_time_is_503_with_retry_after() {
    let app = scraped_app(Duration::from_millis(100)).await;
    let r = projections_at(&app, "999").await;
    assert_eq!(r.headers()["retry-after"], "1");
    let (status, body) = problem(r).await;
    assert_eq!((status, body["code"].as_str()), (503, Some("unavailable")));
    assert!(body["detail"].as_str().unwrap().contains("999"), "{body}");

    for bad in ["-1", "ten", "1.5", ""] {
        let r = projections_at(&app, bad).await;
        let (status, body) = problem(r).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("bad_request")),
            "{bad:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projection_status_and_metrics_report_position_and_lag() {
    let ledger = custodian_testkit::Ledger::sqlite();
    let location = ledger.location.clone();
    let mut identity = custodian_app::SecurityOptions::new(
        std::env::temp_dir().join(format!("custodian-test-{}.key", uuid::Uuid::now_v7())),
    );
    identity.metrics_token = Some(SCRAPE_TOKEN.to_owned());
    let app = crate::support::spawn_app_with(
        location,
        ledger.into_dir(),
        None,
        Duration::from_secs(2),
        identity,
    )
    .await;
    let root = crate::support::root_token(&app).await;
    let before = app.store.head().await.unwrap().position;
    for i in 0..3 {
        app.store
            .append(
                &StreamName::parse(&format!("_system/tenant/tnt_{i}")).unwrap(),
                ExpectedVersion::NoStream,
                vec![tenant_created(i)],
            )
            .await
            .unwrap();
    }
    let head = before + 3;
    app.state
        .projections
        .wait_for(head, Duration::from_secs(5))
        .await
        .unwrap();
    let anonymous = app
        .client
        .get(app.url("/v1/admin/projections"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        anonymous.status(),
        401,
        "projection status needs a principal"
    );
    let body: serde_json::Value = app
        .client
        .get(app.url("/v1/admin/projections"))
        .bearer_auth(&root)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["head"], head);
    assert_eq!(body["applied"], head);
    let tenants = body["projections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "tenants")
        .expect("the tenants projection is reported");
    assert_eq!(tenants["state"], "active");
    assert_eq!(tenants["position"], head);
    assert_eq!(tenants["lag_events"], 0);
    assert!(tenants["last_error"].is_null());

    for credential in [None, Some("not-the-scrape-token-at-all")] {
        let mut r = app.client.get(app.url("/metrics"));
        if let Some(c) = credential {
            r = r.bearer_auth(c);
        }
        assert_eq!(
            r.send().await.unwrap().status(),
            401,
            "metrics need a credential"
        );
    }
    let by_root = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(&root)
        .send()
        .await
        .unwrap();
    assert_eq!(
        by_root.status(),
        200,
        "a platform administrator may read the metrics"
    );
    let r = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(SCRAPE_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    for needle in [
        format!("custodian_log_head_position {head}"),
        format!("custodian_views_applied_position {head}"),
        format!("custodian_projection_position{{projection=\"tenants\",generation=\"1\",state=\"active\"}} {head}"),
        "custodian_projection_lag_events{projection=\"tenants\",generation=\"1\",state=\"active\"} 0".to_owned(),
    ] {
        assert!(text.contains(&needle), "{needle} missing from\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_min_position_beyond_any_log_is_400_and_the_largest_one_waits_like_any_other() {
    let app = scraped_app(Duration::from_millis(100)).await;
    app.store
        .append(
            &StreamName::parse("_system/tenant/tnt_0").unwrap(),
            ExpectedVersion::NoStream,
            vec![tenant_created(0)],
        )
        .await
        .unwrap();
    for bad in [
        "9223372036854775808",
        "18446744073709551615",
        "18446744073709551616",
    ] {
        let r = projections_at(&app, bad).await;
        let (status, body) = problem(r).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("bad_request")),
            "{bad}: {body}"
        );
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("Custodian-Min-Position"),
            "{body}"
        );
    }
    // The largest position a log can hold is a fair question: the views have not reached it in
    // time, which is the documented 503 with Retry-After, never a 500.
    let r = projections_at(&app, &i64::MAX.to_string()).await;
    assert_eq!(r.headers()["retry-after"], "1");
    let (status, body) = problem(r).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("unavailable")),
        "{body}"
    );
}

/// `GET /v1/admin/projections` asking for `position` with `Custodian-Min-Position`, as an
/// operator: only an authenticated caller may make the server wait.
async fn projections_at(app: &crate::support::App, position: &str) -> reqwest::Response {
    app.client
        .get(app.url("/v1/admin/projections"))
        .bearer_auth(SCRAPE_TOKEN)
        .header("Custodian-Min-Position", position)
        .send()
        .await
        .unwrap()
}

/// A server on a fresh SQLite ledger with [`SCRAPE_TOKEN`], whose reads wait at most `read_wait`.
async fn scraped_app(read_wait: Duration) -> crate::support::App {
    let ledger = custodian_testkit::Ledger::sqlite();
    let location = ledger.location.clone();
    let mut identity = custodian_app::SecurityOptions::new(
        std::env::temp_dir().join(format!("custodian-test-{}.key", uuid::Uuid::now_v7())),
    );
    identity.metrics_token = Some(SCRAPE_TOKEN.to_owned());
    crate::support::spawn_app_with(location, ledger.into_dir(), None, read_wait, identity).await
}

/// The scrape token the metrics test configures.
const SCRAPE_TOKEN: &str = "scrape-token-for-prometheus-0123";
