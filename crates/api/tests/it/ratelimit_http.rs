//! Rate limits over HTTP: the plan's limits per tenant and per principal, the `RateLimit-Policy`
//! and `RateLimit` headers, and 429 with `Retry-After`.

use std::sync::Arc;

use custodian_app::ManualClock;
use custodian_app::ratelimit::{RateRule, RateTier};
use reqwest::Method;
use serde_json::json;

use crate::support::{create_tenant, create_user, problem, send, setup_clocked, token};

const PASSWORD: &str = "correct horse battery staple";

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_burst_beyond_the_plan_gets_429_with_headers_and_passes_after_retry_after() {
    let mut identity = custodian_app::SecurityOptions::new(
        std::env::temp_dir().join(format!("custodian-test-{}.key", uuid::Uuid::now_v7())),
    );
    identity.rate_tiers.free = RateTier {
        tenant: RateRule {
            limit: 100,
            window_seconds: 60,
        },
        principal: RateRule {
            limit: 3,
            window_seconds: 60,
        },
    };
    let clock = Arc::new(ManualClock::new(custodian_app::Clock::now(
        &custodian_app::SystemClock,
    )));
    let s = setup_clocked(identity, clock.clone()).await;
    let app = &s.app;
    create_tenant(app, &s.root, "acme").await;
    for email in ["ann@acme.test", "bob@acme.test"] {
        create_user(
            app,
            &s.root,
            "acme",
            json!({"email": email, "name": email, "password": PASSWORD, "roles": ["viewer"]}),
        )
        .await;
    }
    let ann = token(app, "acme", "ann@acme.test", PASSWORD).await;
    let bob = token(app, "acme", "bob@acme.test", PASSWORD).await;

    for left in (0..3).rev() {
        let r = send(app, Method::GET, "/v1/auth/me", &ann, None).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            header(&r, "ratelimit-policy").as_deref(),
            Some(r#""tenant";q=100;w=60, "principal";q=3;w=60"#)
        );
        let state = header(&r, "ratelimit").unwrap();
        assert!(
            state.ends_with(&format!(r#""principal";r={left};t={}"#, 20 * (3 - left))),
            "{state}"
        );
    }
    let r = send(app, Method::GET, "/v1/auth/me", &ann, None).await;
    assert_eq!(header(&r, "retry-after").as_deref(), Some("20"));
    assert!(
        header(&r, "ratelimit")
            .unwrap()
            .ends_with(r#""principal";r=0;t=60"#)
    );
    let (status, body) = problem(r).await;
    assert_eq!((status, body["code"].as_str()), (429, Some("rate_limited")));

    // Another principal of the tenant has a bucket of its own; the refused request did not count
    // against the tenant's.
    let r = send(app, Method::GET, "/v1/auth/me", &bob, None).await;
    assert_eq!(r.status(), 200);
    assert!(
        header(&r, "ratelimit")
            .unwrap()
            .starts_with(r#""tenant";r=96;"#)
    );

    clock.advance(time::Duration::seconds(19));
    let r = send(app, Method::GET, "/v1/auth/me", &ann, None).await;
    assert_eq!(r.status(), 429, "a second before Retry-After");
    assert_eq!(header(&r, "retry-after").as_deref(), Some("1"));
    clock.advance(time::Duration::seconds(1));
    let r = send(app, Method::GET, "/v1/auth/me", &ann, None).await;
    assert_eq!(r.status(), 200, "after Retry-After the next request passes");
}

#[tokio::test]
async fn platform_staff_are_not_limited_by_a_plan_and_anonymous_answers_carry_no_limits() {
    let mut identity = custodian_app::SecurityOptions::new(
        std::env::temp_dir().join(format!("custodian-test-{}.key", uuid::Uuid::now_v7())),
    );
    let tiny = RateRule {
        limit: 1,
        window_seconds: 60,
    };
    identity.rate_tiers.free = RateTier {
        tenant: tiny,
        principal: tiny,
    };
    let clock = Arc::new(ManualClock::new(custodian_app::Clock::now(
        &custodian_app::SystemClock,
    )));
    let s = setup_clocked(identity, clock).await;
    for _ in 0..5 {
        let r = send(&s.app, Method::GET, "/v1/auth/me", &s.root, None).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "ratelimit"), None);
    }
    let r = s
        .app
        .client
        .get(s.app.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "ratelimit-policy"), None);
}
