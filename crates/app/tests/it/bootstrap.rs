//! The first platform administrator.

use custodian_app::Clock;
use custodian_app::bootstrap::{Admin, BootstrapError, bootstrap};

use crate::support::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp};

#[tokio::test]
async fn the_first_administrator_administers_the_platform_and_only_one_is_bootstrapped() {
    let t = TestApp::new().await;
    assert!(t.root().await.is_platform_admin());
    let security = &t.app.security;
    let again = bootstrap(
        &t.app.store,
        &t.app.db,
        &security.keyring,
        &security.hasher,
        &security.policy,
        Admin {
            email: ADMIN_EMAIL,
            name: "Root",
            password: ADMIN_PASSWORD,
        },
        t.clock.now(),
    )
    .await;
    assert!(matches!(again, Err(BootstrapError::NotEmpty(n)) if n > 0));
}
