//! The caller's own sessions: logout, listing and revoking them.

use custodian_app::AppError;
use custodian_app::sessions::{self, SessionListQuery, SessionPage};

use crate::support::TestApp;

fn all() -> SessionListQuery {
    SessionListQuery {
        active: Some("false".to_owned()),
        ..SessionListQuery::default()
    }
}

fn ids(page: &SessionPage) -> Vec<&str> {
    page.items.iter().map(|s| s.session_id.as_str()).collect()
}

#[tokio::test]
async fn logout_revokes_the_callers_session_at_once() {
    let t = TestApp::new().await;
    let m = t.member("acme").await;
    let other = t.seed_session(&m.tenant, &m.user_id).await;
    let done = sessions::logout(&t.app, &t.as_member(&m).await)
        .await
        .unwrap();
    assert_eq!(done.position, t.app.store.head().await.unwrap().position);
    let index = &t.app.security.index;
    index.catch_up().await.unwrap();
    assert!(index.session(&m.session_id).unwrap().revoked);
    assert_eq!(index.live_sessions(&m.tenant, &m.user_id), [other]);
}

#[tokio::test]
async fn revoke_mine_ends_another_session_of_the_caller() {
    let t = TestApp::new().await;
    let m = t.member("acme").await;
    let other = t.seed_session(&m.tenant, &m.user_id).await;
    let caller = t.as_member(&m).await;
    let done = sessions::revoke_mine(&t.app, &caller, &other)
        .await
        .unwrap();
    assert_eq!(done.position, t.app.store.head().await.unwrap().position);
    let index = &t.app.security.index;
    index.catch_up().await.unwrap();
    assert!(index.session(&other).unwrap().revoked);
    assert_eq!(index.live_sessions(&m.tenant, &m.user_id), [m.session_id]);

    t.views_caught_up().await;
    let page = sessions::list_mine(&t.app, &caller, &all()).await.unwrap();
    let revoked = page.items.iter().find(|s| s.session_id == other).unwrap();
    assert_eq!(revoked.status, "revoked");
    assert_eq!(revoked.revoke_reason.as_deref(), Some("revoked_by_user"));
    assert_eq!(revoked.revoked_at, Some(t.app.now().to_string()));
}

#[tokio::test]
async fn a_session_of_another_user_or_none_at_all_is_not_found() {
    let t = TestApp::new().await;
    let ada = t.member("acme").await;
    let bob_id = t
        .create_person("acme", "bob@acme.test", "babbage's engine 1837")
        .await;
    let bobs = t.seed_session("acme", &bob_id).await;
    let elsewhere = t.member("globex").await;
    let caller = t.as_member(&ada).await;
    let unknown = custodian_domain::id::type_id("sess", uuid::Uuid::now_v7());
    for session_id in [
        bobs.as_str(),
        elsewhere.session_id.as_str(),
        unknown.as_str(),
        "not-a-session",
    ] {
        let e = sessions::revoke_mine(&t.app, &caller, session_id)
            .await
            .unwrap_err();
        assert!(matches!(e, AppError::NotFound(_)), "{session_id}: {e:?}");
    }
    let index = &t.app.security.index;
    index.catch_up().await.unwrap();
    assert!(!index.session(&bobs).unwrap().revoked);
    assert!(!index.session(&elsewhere.session_id).unwrap().revoked);
}

#[tokio::test]
async fn list_mine_defaults_to_live_sessions_and_marks_the_current_one() {
    let t = TestApp::new().await;
    let m = t.member("acme").await;
    let second = t.seed_session(&m.tenant, &m.user_id).await;
    let third = t.seed_session(&m.tenant, &m.user_id).await;
    let bob_id = t
        .create_person("acme", "bob@acme.test", "babbage's engine 1837")
        .await;
    t.seed_session("acme", &bob_id).await;
    let caller = t.as_member(&m).await;
    sessions::revoke_mine(&t.app, &caller, &third)
        .await
        .unwrap();
    t.views_caught_up().await;

    let live = sessions::list_mine(&t.app, &caller, &SessionListQuery::default())
        .await
        .unwrap();
    assert_eq!(ids(&live), [m.session_id.as_str(), second.as_str()]);
    assert_eq!(live.next_cursor, None);
    for s in &live.items {
        assert_eq!(s.user_id, m.user_id);
        assert_eq!(s.status, "active");
        assert_eq!(s.method, "password");
        assert_eq!(s.current, s.session_id == m.session_id, "{s:?}");
    }

    let everything = sessions::list_mine(&t.app, &caller, &all()).await.unwrap();
    assert_eq!(
        ids(&everything),
        [m.session_id.as_str(), second.as_str(), third.as_str()]
    );

    let first_page = sessions::list_mine(
        &t.app,
        &caller,
        &SessionListQuery {
            limit: Some("1".to_owned()),
            ..all()
        },
    )
    .await
    .unwrap();
    assert_eq!(ids(&first_page), [m.session_id.as_str()]);
    assert_eq!(
        first_page.next_cursor.as_deref(),
        Some(m.session_id.as_str())
    );
}

#[tokio::test]
async fn sessions_past_their_lifetime_leave_the_default_listing() {
    let t = TestApp::new().await;
    let m = t.member("acme").await;
    let caller = t.as_member(&m).await;
    t.views_caught_up().await;
    let lifetime = t.app.security.lifetimes.session.whole_seconds();
    t.advance(lifetime - 1);
    let live = sessions::list_mine(&t.app, &caller, &SessionListQuery::default())
        .await
        .unwrap();
    assert_eq!(ids(&live), [m.session_id.as_str()]);
    t.advance(1);
    let live = sessions::list_mine(&t.app, &caller, &SessionListQuery::default())
        .await
        .unwrap();
    assert!(live.items.is_empty(), "{:?}", ids(&live));
    let everything = sessions::list_mine(&t.app, &caller, &all()).await.unwrap();
    assert_eq!(ids(&everything), [m.session_id.as_str()]);
}

#[tokio::test]
async fn a_listing_with_a_bad_flag_limit_or_cursor_is_invalid() {
    let t = TestApp::new().await;
    let m = t.member("acme").await;
    let caller = t.as_member(&m).await;
    let cases = [
        SessionListQuery {
            active: Some("maybe".to_owned()),
            ..SessionListQuery::default()
        },
        SessionListQuery {
            limit: Some("0".to_owned()),
            ..SessionListQuery::default()
        },
        SessionListQuery {
            cursor: Some("user_nope".to_owned()),
            ..SessionListQuery::default()
        },
    ];
    for q in cases {
        let e = sessions::list_mine(&t.app, &caller, &q).await.unwrap_err();
        assert!(matches!(e, AppError::Invalid(_)), "{q:?}: {e:?}");
    }
}
