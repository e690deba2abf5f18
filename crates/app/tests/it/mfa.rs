//! TOTP enrollment, confirmation and removal, and recovery codes, with codes computed from the
//! seed at the manual clock's time.

use custodian_app::auth::totp;
use custodian_app::mfa::{self, FreshProof, TotpCode};
use custodian_app::{AppError, Origin, Principal};
use custodian_domain::user::{UserCommand, UserError};

use crate::support::{Member, TestApp};

/// Seconds since the epoch on the test's clock.
fn unix(t: &TestApp) -> u64 {
    u64::try_from(t.app.now().as_datetime().unix_timestamp()).unwrap()
}

/// The code of the current 30-second step, `steps` away.
fn code(t: &TestApp, seed: &[u8], steps: i64) -> String {
    let at = unix(t).checked_add_signed(steps * 30).unwrap();
    totp::code_at(seed, at)
}

/// The member's pending or enabled TOTP seed, read from the log.
async fn seed(t: &TestApp, m: &Member) -> Vec<u8> {
    let user = t.user(&m.tenant, &m.user_id).await;
    custodian_app::users::totp_secret(&t.app, &m.user_id, &user)
        .await
        .unwrap()
}

fn password(p: &str) -> FreshProof {
    FreshProof {
        password: Some(p.to_owned()),
        code: None,
    }
}

fn totp_code(c: String) -> FreshProof {
    FreshProof {
        password: None,
        code: Some(c),
    }
}

/// Enrolls and confirms TOTP for `m` with the current step's code; returns the seed, the
/// recovery codes, and the member as a principal who now has TOTP enabled.
async fn enrolled(t: &TestApp, m: &Member) -> (Vec<u8>, Vec<String>, Principal) {
    let caller = t.as_member(m).await;
    mfa::enroll(&t.app, &caller).await.unwrap();
    let seed = seed(t, m).await;
    let codes = mfa::confirm(
        &t.app,
        &caller,
        TotpCode {
            code: code(t, &seed, 0),
        },
    )
    .await
    .unwrap();
    (seed, codes.recovery_codes, t.as_member(m).await)
}

/// A login of `m` completed with `recovery_code` as the second factor, through the domain's
/// challenge and completion commands.
async fn log_in_with_recovery_code(
    t: &TestApp,
    m: &Member,
    recovery_code: &str,
) -> Result<(), UserError> {
    let security = &t.app.security;
    let now = t.app.now();
    let ctx = custodian_app::users::user_actor(&m.user_id, now);
    let challenge = security
        .tokens
        .hash(&format!("challenge {}", uuid::Uuid::now_v7()));
    let given = security.tokens.hash_recovery_code(recovery_code).unwrap();
    let run = |command: UserCommand| {
        let ctx = ctx.clone();
        async move {
            custodian_app::users::run_user(&t.app, &ctx, &m.tenant, &m.user_id, |_| command.clone())
                .await
                .map(|_| ())
                .map_err(|e| match e {
                    custodian_app::commands::Failed::Refused(e) => e,
                    custodian_app::commands::Failed::Store(e) => panic!("{e}"),
                })
        }
    };
    run(UserCommand::IssueMfaChallenge {
        challenge: challenge.clone(),
        expires_at: now.plus(security.lifetimes.challenge),
        now,
    })
    .await?;
    run(UserCommand::CompleteLogin {
        session_id: custodian_domain::id::type_id("sess", uuid::Uuid::now_v7()),
        challenge: Some(challenge),
        totp_step: None,
        recovery_code: Some(given),
        ip: None,
        now,
    })
    .await
}

#[tokio::test]
async fn enrollment_returns_the_seed_once_and_a_first_code_from_it_enables_totp() {
    let t = TestApp::new().await;
    let m = t.member("acme").await;
    let caller = t.as_member(&m).await;
    let enrollment = mfa::enroll(&t.app, &caller).await.unwrap();
    assert_eq!(
        enrollment.position,
        t.app.store.head().await.unwrap().position
    );
    let seed = seed(&t, &m).await;
    assert_eq!(seed.len(), totp::SECRET_BYTES);
    assert_eq!(enrollment.secret, totp::base32(&seed));
    assert_eq!(
        enrollment.otpauth_uri,
        format!(
            "otpauth://totp/custodian:ada%40acme.test?secret={}&issuer=custodian&algorithm=SHA1&digits=6&period=30",
            enrollment.secret
        )
    );
    // Not in force until confirmed.
    assert!(!t.user(&m.tenant, &m.user_id).await.totp_enabled);

    let confirmed = mfa::confirm(
        &t.app,
        &caller,
        TotpCode {
            code: code(&t, &seed, 0),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        confirmed.position,
        t.app.store.head().await.unwrap().position
    );
    assert_eq!(confirmed.recovery_codes.len(), mfa::RECOVERY_CODES);
    let user = t.user(&m.tenant, &m.user_id).await;
    assert!(user.totp_enabled);
    assert_eq!(user.last_totp_step, Some(unix(&t) / 30));
    assert_eq!(user.recovery_codes.len(), mfa::RECOVERY_CODES);
    assert!(t.as_member(&m).await.user.mfa_enabled);
}

#[tokio::test]
async fn enrolling_again_before_confirming_replaces_the_seed() {
    let t = TestApp::new().await;
    let m = t.member("acme").await;
    let caller = t.as_member(&m).await;
    mfa::enroll(&t.app, &caller).await.unwrap();
    let stale = seed(&t, &m).await;
    mfa::enroll(&t.app, &caller).await.unwrap();
    let fresh = seed(&t, &m).await;
    assert_ne!(stale, fresh);
    let e = mfa::confirm(
        &t.app,
        &caller,
        TotpCode {
            code: code(&t, &stale, 0),
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(e, AppError::Unauthenticated(_)), "{e:?}");
    mfa::confirm(
        &t.app,
        &caller,
        TotpCode {
            code: code(&t, &fresh, 0),
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_wrong_code_does_not_confirm_enrollment() {
    let t = TestApp::new().await;
    let m = t.member("acme").await;
    let caller = t.as_member(&m).await;
    mfa::enroll(&t.app, &caller).await.unwrap();
    let seed = seed(&t, &m).await;
    for wrong in [code(&t, &seed, 7), code(&t, &seed, -2), "12345".to_owned()] {
        let e = mfa::confirm(
            &t.app,
            &caller,
            TotpCode {
                code: wrong.clone(),
            },
        )
        .await
        .unwrap_err();
        assert!(matches!(e, AppError::Unauthenticated(_)), "{wrong}: {e:?}");
    }
    let e = mfa::confirm(
        &t.app,
        &caller,
        TotpCode {
            code: String::new(),
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(e, AppError::Invalid(_)), "{e:?}");
    let user = t.user(&m.tenant, &m.user_id).await;
    assert!(!user.totp_enabled);
    assert!(user.recovery_codes.is_empty());
}

#[tokio::test]
async fn confirming_without_an_enrollment_or_enrolling_twice_is_a_conflict() {
    let t = TestApp::new().await;
    let m = t.member("acme").await;
    let caller = t.as_member(&m).await;
    let e = mfa::confirm(
        &t.app,
        &caller,
        TotpCode {
            code: "123456".to_owned(),
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(e, AppError::Conflict(_)), "{e:?}");

    let (seed, _, caller) = enrolled(&t, &m).await;
    let e = mfa::enroll(&t.app, &caller).await.unwrap_err();
    assert!(matches!(e, AppError::Conflict(_)), "{e:?}");
    t.advance(30);
    let e = mfa::confirm(
        &t.app,
        &caller,
        TotpCode {
            code: code(&t, &seed, 0),
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(e, AppError::Conflict(_)), "{e:?}");
}

#[tokio::test]
async fn each_recovery_code_completes_one_login_only() {
    let t = TestApp::new().await;
    let m = t.member("acme").await;
    let (_, codes, _) = enrolled(&t, &m).await;
    log_in_with_recovery_code(&t, &m, &codes[0]).await.unwrap();
    assert_eq!(
        log_in_with_recovery_code(&t, &m, &codes[0]).await,
        Err(UserError::InvalidCode)
    );
    // Typed in capitals and without the dash, a code still matches.
    let typed = codes[1].replace('-', "").to_uppercase();
    log_in_with_recovery_code(&t, &m, &typed).await.unwrap();
    assert_eq!(
        t.user(&m.tenant, &m.user_id).await.recovery_codes.len(),
        mfa::RECOVERY_CODES - 2
    );
}

#[tokio::test]
async fn disabling_or_regenerating_without_totp_enabled_is_a_conflict() {
    let t = TestApp::new().await;
    let m = t.member("acme").await;
    let caller = t.as_member(&m).await;
    let e = mfa::disable(&t.app, &caller, &Origin::default(), password(&m.password))
        .await
        .unwrap_err();
    assert!(matches!(e, AppError::Conflict(_)), "{e:?}");
    let e =
        mfa::regenerate_recovery_codes(&t.app, &caller, &Origin::default(), password(&m.password))
            .await
            .unwrap_err();
    assert!(matches!(e, AppError::Conflict(_)), "{e:?}");
}

#[tokio::test]
async fn a_fresh_proof_is_exactly_one_right_password_or_code() {
    let t = TestApp::new().await;
    let m = t.member("acme").await;
    let (seed, _, caller) = enrolled(&t, &m).await;
    t.advance(30);
    let origin = Origin::default();
    for proof in [
        FreshProof {
            password: None,
            code: None,
        },
        FreshProof {
            password: Some(m.password.clone()),
            code: Some(code(&t, &seed, 0)),
        },
        password(""),
        totp_code(String::new()),
    ] {
        let e = mfa::disable(&t.app, &caller, &origin, proof)
            .await
            .unwrap_err();
        assert!(matches!(e, AppError::Invalid(_)), "{e:?}");
    }
    assert_eq!(t.user(&m.tenant, &m.user_id).await.failed_logins, 0);

    let e = mfa::disable(&t.app, &caller, &origin, password("not my password"))
        .await
        .unwrap_err();
    assert!(matches!(e, AppError::WrongProof(_)), "{e:?}");
    let e = mfa::regenerate_recovery_codes(&t.app, &caller, &origin, totp_code(code(&t, &seed, 5)))
        .await
        .unwrap_err();
    assert!(matches!(e, AppError::WrongProof(_)), "{e:?}");
    let user = t.user(&m.tenant, &m.user_id).await;
    assert_eq!(
        user.failed_logins, 2,
        "each wrong proof counts as a failure"
    );
    assert!(user.totp_enabled);
}

#[tokio::test]
async fn disabling_with_the_password_turns_totp_off_and_discards_the_recovery_codes() {
    let t = TestApp::new().await;
    let m = t.member("acme").await;
    let (_, codes, caller) = enrolled(&t, &m).await;
    let done = mfa::disable(&t.app, &caller, &Origin::default(), password(&m.password))
        .await
        .unwrap();
    assert_eq!(done.position, t.app.store.head().await.unwrap().position);
    let user = t.user(&m.tenant, &m.user_id).await;
    assert!(!user.totp_enabled);
    assert!(user.recovery_codes.is_empty());
    assert!(!t.as_member(&m).await.user.mfa_enabled);
    assert!(log_in_with_recovery_code(&t, &m, &codes[0]).await.is_err());
}

#[tokio::test]
async fn a_code_given_as_proof_is_spent() {
    let t = TestApp::new().await;
    let m = t.member("acme").await;
    let (seed, old_codes, caller) = enrolled(&t, &m).await;
    let origin = Origin::default();
    // The code that confirmed the enrollment was spent by it.
    let e = mfa::regenerate_recovery_codes(&t.app, &caller, &origin, totp_code(code(&t, &seed, 0)))
        .await
        .unwrap_err();
    assert!(matches!(e, AppError::WrongProof(_)), "{e:?}");

    // The next step's code proves presence once.
    t.advance(30);
    let step = unix(&t) / 30;
    let fresh =
        mfa::regenerate_recovery_codes(&t.app, &caller, &origin, totp_code(code(&t, &seed, 0)))
            .await
            .unwrap();
    assert_eq!(fresh.position, t.app.store.head().await.unwrap().position);
    assert_eq!(fresh.recovery_codes.len(), mfa::RECOVERY_CODES);
    let user = t.user(&m.tenant, &m.user_id).await;
    assert_eq!(user.last_totp_step, Some(step));
    assert_eq!(user.failed_logins, 1);
    assert_eq!(
        log_in_with_recovery_code(&t, &m, &old_codes[0]).await,
        Err(UserError::InvalidCode),
        "the old codes stop working"
    );
    log_in_with_recovery_code(&t, &m, &fresh.recovery_codes[0])
        .await
        .unwrap();

    let e = mfa::disable(&t.app, &caller, &origin, totp_code(code(&t, &seed, 0)))
        .await
        .unwrap_err();
    assert!(matches!(e, AppError::WrongProof(_)), "{e:?}");
    assert!(t.user(&m.tenant, &m.user_id).await.totp_enabled);

    t.advance(30);
    mfa::disable(&t.app, &caller, &origin, totp_code(code(&t, &seed, 0)))
        .await
        .unwrap();
    let user = t.user(&m.tenant, &m.user_id).await;
    assert!(!user.totp_enabled);
    assert_eq!(user.last_totp_step, Some(step + 1));
}

#[tokio::test]
async fn wrong_codes_proving_presence_lock_the_email_from_that_address_for_a_second() {
    let t = TestApp::new().await;
    let m = t.member("acme").await;
    let (seed, _, caller) = enrolled(&t, &m).await;
    t.advance(30);
    let origin = Origin {
        ip: Some("192.0.2.7".parse().unwrap()),
        user_agent: None,
    };
    let right = code(&t, &seed, 0);
    let valid: Vec<String> = (-1..=1).map(|s| code(&t, &seed, s)).collect();
    let wrong: Vec<String> = (0..1_000_000u32)
        .map(|n| format!("{n:06}"))
        .filter(|c| !valid.contains(c))
        .take(5)
        .collect();
    for c in &wrong {
        let e = mfa::disable(&t.app, &caller, &origin, totp_code(c.clone()))
            .await
            .unwrap_err();
        assert!(matches!(e, AppError::WrongProof(_)), "{e:?}");
    }
    // The fifth locks for one second, even a right code, from that address only.
    let e = mfa::disable(&t.app, &caller, &origin, totp_code(right.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(e, AppError::Throttled { retry_after: 1, .. }),
        "{e:?}"
    );
    t.advance(1);
    mfa::disable(&t.app, &caller, &origin, totp_code(right))
        .await
        .unwrap();
    assert!(!t.user(&m.tenant, &m.user_id).await.totp_enabled);
}

#[tokio::test]
async fn a_person_with_totp_may_choose_a_shorter_password() {
    let t = TestApp::new().await;
    let m = t.member("acme").await;
    let change = |current: &str, new: &str| custodian_app::account::ChangePasswordRequest {
        current_password: current.to_owned(),
        new_password: new.to_owned(),
    };
    let short = "Zq7#mVx!pL2";
    let caller = t.as_member(&m).await;
    let e = custodian_app::account::change_password(
        &t.app,
        &caller,
        &Origin::default(),
        change(&m.password, short),
    )
    .await
    .unwrap_err();
    assert_eq!(
        e,
        AppError::invalid("new_password: password must be at least 15 characters long")
    );
    let (_, _, caller) = enrolled(&t, &m).await;
    custodian_app::account::change_password(
        &t.app,
        &caller,
        &Origin::default(),
        change(&m.password, short),
    )
    .await
    .unwrap();
    let e = custodian_app::account::change_password(
        &t.app,
        &caller,
        &Origin::default(),
        change(short, "Zq7#mVx"),
    )
    .await
    .unwrap_err();
    assert_eq!(
        e,
        AppError::invalid("new_password: password must be at least 8 characters long")
    );
}
