//! The caller's own profile and password.

use custodian_app::account::{self, ChangePasswordRequest};
use custodian_app::{AppError, Origin};
use custodian_domain::user::UserStatus;

use crate::support::{Member, TestApp};

const NEW_PASSWORD: &str = "difference engine 1822";

fn change(current: &str, new: &str) -> ChangePasswordRequest {
    ChangePasswordRequest {
        current_password: current.to_owned(),
        new_password: new.to_owned(),
    }
}

/// Whether `password` is the member's password now.
async fn password_is(t: &TestApp, m: &Member, password: &str) -> bool {
    let user = t.user(&m.tenant, &m.user_id).await;
    custodian_app::users::check_password(
        &t.app,
        &m.tenant,
        &m.user_id,
        &user,
        password,
        None,
        t.app.now(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn me_shows_the_profile_opened_with_the_data_key() {
    let t = TestApp::new().await;
    let m = t.member("acme").await;
    let me = account::me(&t.app, &t.as_member(&m).await).await.unwrap();
    assert_eq!(me.user_id, m.user_id);
    assert_eq!(me.tenant, "acme");
    assert_eq!(me.kind, "person");
    assert_eq!(me.email.as_deref(), Some("ada@acme.test"));
    assert_eq!(me.name.as_deref(), Some("Ada Lovelace"));
    assert!(me.roles.is_empty());
    assert!(!me.mfa_enabled);
    assert_eq!(me.session_id, m.session_id);
}

#[tokio::test]
async fn a_wrong_current_password_is_a_wrong_proof_and_counts_as_a_failed_login() {
    let t = TestApp::new().await;
    let m = t.member("acme").await;
    let caller = t.as_member(&m).await;
    let head = t.app.store.head().await.unwrap().position;
    let e = account::change_password(
        &t.app,
        &caller,
        &Origin::default(),
        change("not my password", NEW_PASSWORD),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, AppError::WrongProof(_)), "{e:?}");
    assert_eq!(t.user(&m.tenant, &m.user_id).await.failed_logins, 1);
    assert!(t.app.store.head().await.unwrap().position > head);
    assert!(password_is(&t, &m, &m.password).await);
}

#[tokio::test]
async fn wrong_current_passwords_lock_the_account_for_a_second_then_it_changes() {
    let t = TestApp::new().await;
    let m = t.member("acme").await;
    let caller = t.as_member(&m).await;
    for _ in 0..5 {
        let e = account::change_password(
            &t.app,
            &caller,
            &Origin::default(),
            change("not my password", NEW_PASSWORD),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, AppError::WrongProof(_)), "{e:?}");
    }
    // The fifth failure locks the caller's email from this address for one second: even the
    // right password waits.
    let e = account::change_password(
        &t.app,
        &caller,
        &Origin::default(),
        change(&m.password, NEW_PASSWORD),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, AppError::Throttled { retry_after: 1, .. }),
        "{e:?}"
    );
    t.advance(1);
    account::change_password(
        &t.app,
        &caller,
        &Origin::default(),
        change(&m.password, NEW_PASSWORD),
    )
    .await
    .unwrap();
    assert!(password_is(&t, &m, NEW_PASSWORD).await);
}

#[tokio::test]
async fn a_new_password_the_policy_refuses_is_invalid_and_changes_nothing() {
    let t = TestApp::new().await;
    let m = t.member("acme").await;
    let caller = t.as_member(&m).await;
    for (current, new) in [
        (m.password.as_str(), "short"),
        (m.password.as_str(), ""),
        ("", NEW_PASSWORD),
    ] {
        let e = account::change_password(&t.app, &caller, &Origin::default(), change(current, new))
            .await
            .unwrap_err();
        assert!(
            matches!(e, AppError::Invalid(_)),
            "{current:?} {new:?}: {e:?}"
        );
    }
    assert_eq!(t.user(&m.tenant, &m.user_id).await.failed_logins, 0);
    assert!(password_is(&t, &m, &m.password).await);
}

#[tokio::test]
async fn changing_the_password_replaces_it_and_revokes_every_other_session_but_the_callers() {
    let t = TestApp::new().await;
    let m = t.member("acme").await;
    let other = t.seed_session(&m.tenant, &m.user_id).await;
    let caller = t.as_member(&m).await;
    let done = account::change_password(
        &t.app,
        &caller,
        &Origin::default(),
        change(&m.password, NEW_PASSWORD),
    )
    .await
    .unwrap();
    assert_eq!(done.position, t.app.store.head().await.unwrap().position);
    assert!(password_is(&t, &m, NEW_PASSWORD).await);
    assert!(!password_is(&t, &m, &m.password).await);
    let user = t.user(&m.tenant, &m.user_id).await;
    assert_eq!(user.status, UserStatus::Active);

    let index = &t.app.security.index;
    index.catch_up().await.unwrap();
    assert_eq!(index.live_sessions(&m.tenant, &m.user_id), [m.session_id]);
    assert!(index.session(&other).unwrap().revoked);
}
