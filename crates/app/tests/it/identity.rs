//! Logging in, second factors, refresh-token rotation, invitations, password resets and the key
//! set: the public authentication use cases.

use custodian_app::auth::totp;
use custodian_app::identity::{
    self, AcceptInvitationRequest, LoginOutcome, LoginRequest, MfaRequired, MfaVerifyRequest,
    RefreshRequest, ResetPasswordRequest, SPENT_CODE, Tokens,
};
use custodian_app::{AppError, Origin, sessions};
use custodian_domain::tenant::TenantCommand;
use custodian_domain::user::UserCommand;

use crate::support::TestApp;

const TENANT: &str = "acme";
const EMAIL: &str = "ada@acme.test";
const PASSWORD: &str = "analytical engine 1843";

fn origin() -> Origin {
    Origin {
        ip: Some("192.0.2.7".parse().unwrap()),
        user_agent: Some("tests".to_owned()),
    }
}

fn request(tenant: &str, email: &str, password: &str) -> LoginRequest {
    LoginRequest {
        tenant: tenant.to_owned(),
        email: email.to_owned(),
        password: password.to_owned(),
    }
}

/// A service with tenant `acme` and an active person in it.
async fn with_person() -> (TestApp, String) {
    let t = TestApp::new().await;
    t.create_tenant(TENANT).await;
    let user_id = t.create_person(TENANT, EMAIL, PASSWORD).await;
    (t, user_id)
}

async fn login(t: &TestApp, password: &str) -> Result<LoginOutcome, AppError> {
    identity::login(&t.app, &origin(), request(TENANT, EMAIL, password)).await
}

async fn login_ok(t: &TestApp) -> Tokens {
    match login(t, PASSWORD).await.unwrap() {
        LoginOutcome::Authenticated(tokens) => tokens,
        other => panic!("expected tokens, got {other:?}"),
    }
}

async fn challenge(t: &TestApp) -> MfaRequired {
    match login(t, PASSWORD).await.unwrap() {
        LoginOutcome::MfaRequired(m) => m,
        other => panic!("expected a challenge, got {other:?}"),
    }
}

async fn verify_code(t: &TestApp, challenge_id: &str, code: &str) -> Result<Tokens, AppError> {
    identity::mfa_verify(
        &t.app,
        &origin(),
        MfaVerifyRequest {
            challenge_id: challenge_id.to_owned(),
            code: Some(code.to_owned()),
            recovery_code: None,
        },
    )
    .await
}

async fn refresh(t: &TestApp, token: &str) -> Result<Tokens, AppError> {
    identity::refresh(
        &t.app,
        &origin(),
        RefreshRequest {
            refresh_token: token.to_owned(),
        },
    )
    .await
}

fn retry_after(e: AppError) -> u64 {
    match e {
        AppError::Throttled { retry_after, .. } => retry_after,
        other => panic!("expected a throttle, got {other:?}"),
    }
}

/// The types of the events appended after `position`.
async fn appended(t: &TestApp, position: u64) -> Vec<(String, String)> {
    t.events_after(position)
        .await
        .into_iter()
        .map(|r| (r.event_type.to_string(), r.stream.to_string()))
        .collect()
}

#[tokio::test]
async fn a_right_password_logs_in_with_tokens_that_authenticate() {
    let (t, user_id) = with_person().await;
    let tokens = login_ok(&t).await;
    assert_eq!(
        (tokens.status, tokens.token_type, tokens.tenant.as_str()),
        ("authenticated", "Bearer", TENANT)
    );
    assert_eq!(tokens.user_id, user_id);
    assert_eq!(tokens.position, t.head().await);
    let principal = identity::authenticate(&t.app, &tokens.access_token)
        .await
        .unwrap();
    assert_eq!(
        (principal.user_id.as_str(), principal.session_id.as_str()),
        (user_id.as_str(), tokens.session_id.as_str())
    );
    let stream = format!("{TENANT}/session/{}", tokens.session_id);
    let started = t.events_after(0).await;
    let started = started
        .iter()
        .find(|r| r.stream.as_str() == stream)
        .unwrap();
    assert_eq!(started.event_type.as_str(), "session.started");
    assert_eq!(started.data["user_agent"], "tests");
    assert_eq!(started.data["method"], "password");
}

/// `token` authenticates, or the refusal's message.
async fn authenticates(t: &TestApp, token: &str) -> Result<(), String> {
    match identity::authenticate(&t.app, token).await {
        Ok(_) => Ok(()),
        Err(AppError::Unauthenticated(message)) => Err(message),
        Err(other) => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_token_verified_before_is_refused_at_once_when_its_session_ends() {
    let (t, _) = with_person().await;
    let (first, second, third) = (login_ok(&t).await, login_ok(&t).await, login_ok(&t).await);
    for tokens in [&first, &second, &third] {
        // Verified once, then presented again while remembered.
        authenticates(&t, &tokens.access_token).await.unwrap();
        authenticates(&t, &tokens.access_token).await.unwrap();
    }
    let ended = Err("the session has ended".to_owned());

    let principal = identity::authenticate(&t.app, &first.access_token)
        .await
        .unwrap();
    sessions::logout(&t.app, &principal).await.unwrap();
    assert_eq!(authenticates(&t, &first.access_token).await, ended);

    let principal = identity::authenticate(&t.app, &third.access_token)
        .await
        .unwrap();
    sessions::revoke_mine(&t.app, &principal, &second.session_id)
        .await
        .unwrap();
    assert_eq!(authenticates(&t, &second.access_token).await, ended);
    authenticates(&t, &third.access_token).await.unwrap();

    // Fifteen minutes and thirty seconds of leeway later, the token itself has expired.
    t.advance(15 * 60 + 31);
    assert!(
        authenticates(&t, &third.access_token)
            .await
            .unwrap_err()
            .contains("expired")
    );
}

#[tokio::test]
async fn a_token_verified_before_is_refused_at_once_when_its_user_or_tenant_may_not_act() {
    let (t, user_id) = with_person().await;
    let tokens = login_ok(&t).await;
    authenticates(&t, &tokens.access_token).await.unwrap();
    authenticates(&t, &tokens.access_token).await.unwrap();

    t.user_command(
        TENANT,
        &user_id,
        UserCommand::Disable {
            reason: "on leave".into(),
        },
    )
    .await;
    assert_eq!(
        authenticates(&t, &tokens.access_token).await,
        Err("the user may not act".to_owned())
    );
    t.user_command(TENANT, &user_id, UserCommand::Enable).await;
    authenticates(&t, &tokens.access_token).await.unwrap();

    t.tenant_command(
        TENANT,
        TenantCommand::Suspend {
            reason: "unpaid".into(),
        },
    )
    .await;
    assert_eq!(
        authenticates(&t, &tokens.access_token).await,
        Err("the tenant is suspended".to_owned())
    );
    t.tenant_command(TENANT, TenantCommand::Reactivate).await;
    // A suspension ends every session for good: the user signs in again.
    assert_eq!(
        authenticates(&t, &tokens.access_token).await,
        Err("the session has ended".to_owned())
    );
}

#[tokio::test]
async fn a_suspension_ends_every_session_for_good_and_a_fresh_login_works_after_reactivation() {
    let (t, _) = with_person().await;
    let before = login_ok(&t).await;
    // A refreshed pair is as old as its session.
    let rotated = refresh(&t, &before.refresh_token).await.unwrap();
    t.tenant_command(
        TENANT,
        TenantCommand::Suspend {
            reason: "unpaid".into(),
        },
    )
    .await;
    let suspended = AppError::unauthenticated("the tenant is suspended");
    assert_eq!(
        refresh(&t, &rotated.refresh_token).await.unwrap_err(),
        suspended
    );
    assert_eq!(
        login(&t, PASSWORD).await.unwrap_err(),
        AppError::forbidden("the tenant is suspended")
    );
    t.tenant_command(TENANT, TenantCommand::Reactivate).await;

    let head = t.head().await;
    let ended = AppError::unauthenticated("the session has ended");
    for access in [&before.access_token, &rotated.access_token] {
        assert_eq!(
            authenticates(&t, access).await,
            Err("the session has ended".to_owned())
        );
    }
    assert_eq!(
        refresh(&t, &rotated.refresh_token).await.unwrap_err(),
        ended
    );
    assert_eq!(t.head().await, head, "a refused refresh appends nothing");

    let fresh = login_ok(&t).await;
    authenticates(&t, &fresh.access_token).await.unwrap();
    refresh(&t, &fresh.refresh_token).await.unwrap();

    // The sessions view says so too: the old session ended with the suspension.
    t.views_caught_up().await;
    let listed = sessions::page_of_user(
        &t.app,
        TENANT,
        &before.user_id,
        &sessions::SessionListQuery::default(),
        false,
        None,
    )
    .await
    .unwrap();
    let status = |id: &str| {
        listed
            .items
            .iter()
            .find(|s| s.session_id == id)
            .map(|s| (s.status.clone(), s.revoke_reason.clone()))
    };
    assert_eq!(
        status(&before.session_id),
        Some(("revoked".to_owned(), Some("tenant_suspended".to_owned())))
    );
    assert_eq!(status(&fresh.session_id), Some(("active".to_owned(), None)));
}

#[tokio::test]
async fn a_suspended_tenant_accepts_no_invitation_and_completes_no_reset() {
    let (t, user_id) = with_person().await;
    let (invited, invitation) = t.invite_person(TENANT, "grace@acme.test").await;
    let reset = t.issue_reset(TENANT, &user_id).await;
    t.tenant_command(
        TENANT,
        TenantCommand::Suspend {
            reason: "unpaid".into(),
        },
    )
    .await;
    let head = t.head().await;
    let accept = || {
        identity::accept_invitation(
            &t.app,
            AcceptInvitationRequest {
                token: invitation.clone(),
                password: "difference engine 1822".to_owned(),
            },
        )
    };
    let complete = || {
        identity::reset_password(
            &t.app,
            ResetPasswordRequest {
                token: reset.clone(),
                new_password: "a new engine of 1843".to_owned(),
            },
        )
    };
    let suspended = AppError::forbidden("the tenant is suspended");
    assert_eq!(accept().await.unwrap_err(), suspended);
    assert_eq!(complete().await.unwrap_err(), suspended);
    assert_eq!(
        t.head().await,
        head,
        "a refused credential operation appends nothing"
    );

    // The links are not spent by being refused: after the reactivation they work, until they
    // expire.
    t.tenant_command(TENANT, TenantCommand::Reactivate).await;
    assert_eq!(accept().await.unwrap().user_id, invited);
    assert_eq!(complete().await.unwrap().user_id, user_id);
}

#[tokio::test]
async fn every_failed_login_is_the_same_answer_with_one_event() {
    let (t, user_id) = with_person().await;
    let disabled = t
        .create_person(TENANT, "grace@acme.test", "cobol compiler 1959")
        .await;
    t.user_command(
        TENANT,
        &disabled,
        UserCommand::Disable {
            reason: "left".into(),
        },
    )
    .await;
    let cases = [
        (
            request(TENANT, EMAIL, "not the password"),
            "user.login_failed",
            format!("{TENANT}/user/{user_id}"),
        ),
        (
            request(TENANT, "nobody@acme.test", PASSWORD),
            "security.unknown_account_login_failed",
            format!("{TENANT}/security/login"),
        ),
        (
            request("globex", EMAIL, PASSWORD),
            "security.unknown_account_login_failed",
            "_system/security/login".to_owned(),
        ),
        (
            request(TENANT, "grace@acme.test", "cobol compiler 1959"),
            "security.unknown_account_login_failed",
            format!("{TENANT}/security/login"),
        ),
    ];
    for (req, event, stream) in cases {
        let before = t.head().await;
        let what = format!("{}/{}", req.tenant, req.email);
        let e = identity::login(&t.app, &origin(), req).await.unwrap_err();
        assert_eq!(e, AppError::InvalidCredentials, "{what}");
        assert_eq!(
            appended(&t, before).await,
            vec![(event.to_owned(), stream)],
            "{what}"
        );
    }
}

#[tokio::test]
async fn malformed_logins_are_refused_before_any_work() {
    let (t, _) = with_person().await;
    let before = t.head().await;
    for req in [
        request("Not A Slug", EMAIL, PASSWORD),
        request(TENANT, "not an email", PASSWORD),
        request(TENANT, EMAIL, ""),
        request(TENANT, EMAIL, &"x".repeat(1025)),
    ] {
        let e = identity::login(&t.app, &origin(), req).await.unwrap_err();
        assert!(matches!(e, AppError::Invalid(_)), "{e:?}");
    }
    assert_eq!(t.head().await, before);
}

fn from(ip: &str) -> Origin {
    Origin {
        ip: Some(ip.parse().unwrap()),
        user_agent: None,
    }
}

/// What one login attempt looked like from outside: its answer and the events it appended, with
/// the failure event named alike whether it is on an account or not (its stream is not public),
/// and each throttle by its scope.
async fn attempt(t: &TestApp, origin: &Origin, req: LoginRequest) -> (String, Vec<String>) {
    let before = t.head().await;
    let answer = match identity::login(&t.app, origin, req).await {
        Ok(_) => "ok".to_owned(),
        Err(AppError::Throttled { retry_after, .. }) => format!("throttled {retry_after}"),
        Err(e) => format!("{e:?}"),
    };
    let events = t
        .events_after(before)
        .await
        .into_iter()
        .map(|r| match r.event_type.as_str() {
            "user.login_failed" | "security.unknown_account_login_failed" => {
                "login failed".to_owned()
            }
            "security.login_throttled" => {
                let mut keys: Vec<&String> = r.data.as_object().unwrap().keys().collect();
                keys.sort();
                format!("throttled {} {keys:?}", r.data["scope"])
            }
            other => other.to_owned(),
        })
        .collect();
    (answer, events)
}

/// A service with tenant `acme`, an active person (`EMAIL`), and one account in `acme` of every
/// kind that cannot log in by password.
async fn with_every_kind_of_account() -> TestApp {
    let (t, _) = with_person().await;
    let disabled = t
        .create_person(TENANT, "grace@acme.test", "cobol compiler 1959")
        .await;
    t.user_command(
        TENANT,
        &disabled,
        UserCommand::Disable {
            reason: "left".into(),
        },
    )
    .await;
    t.invite_person(TENANT, "invited@acme.test").await;
    t.create_service(TENANT, "robot@acme.test").await;
    t
}

/// Every way a login can fail, each from its own address: a wrong password for a live person,
/// an unknown email, an unknown tenant, a disabled person, an invited person, a service account.
fn failure_paths() -> Vec<(&'static str, LoginRequest)> {
    vec![
        (
            "wrong password",
            request(TENANT, EMAIL, "not the password at all"),
        ),
        (
            "unknown email",
            request(TENANT, "nobody@acme.test", PASSWORD),
        ),
        ("unknown tenant", request("globex", EMAIL, PASSWORD)),
        (
            "disabled",
            request(TENANT, "grace@acme.test", "cobol compiler 1959"),
        ),
        ("invited", request(TENANT, "invited@acme.test", PASSWORD)),
        ("service", request(TENANT, "robot@acme.test", PASSWORD)),
    ]
}

#[tokio::test]
async fn every_failure_path_appends_the_same_events_on_every_attempt() {
    let t = with_every_kind_of_account().await;
    let mut seen = vec![];
    for (n, (path, req)) in failure_paths().into_iter().enumerate() {
        let origin = from(&format!("192.0.2.{}", 100 + n));
        let mut attempts = vec![];
        // Four failures, the fifth that engages the first limit, one refused while it holds, and
        // one more once it has passed, which extends it.
        for _ in 0..6 {
            attempts.push(attempt(&t, &origin, clone(&req)).await);
        }
        t.advance(1);
        attempts.push(attempt(&t, &origin, clone(&req)).await);
        t.advance(2);
        seen.push((path, attempts));
    }
    let failed = |events: &[&str]| -> (String, Vec<String>) {
        (
            "InvalidCredentials".to_owned(),
            events.iter().map(|e| (*e).to_owned()).collect(),
        )
    };
    let pair = r#"throttled "email_from_ip" ["email_index", "failures", "ip", "scope", "until"]"#;
    let expected = vec![
        failed(&["login failed"]),
        failed(&["login failed"]),
        failed(&["login failed"]),
        failed(&["login failed"]),
        failed(&["login failed", pair]),
        ("throttled 1".to_owned(), vec![]),
        failed(&["login failed", pair]),
    ];
    for (path, attempts) in seen {
        assert_eq!(attempts, expected, "{path}");
    }
}

#[tokio::test]
async fn the_account_wide_limit_appends_the_same_events_for_an_account_or_not() {
    let t = with_every_kind_of_account().await;
    let mut seen = vec![];
    // Every path meets the same code past its failure event, so an account and an email that is
    // none stand for all (each path's first limit is checked above).
    for (path, req) in failure_paths() {
        if !matches!(path, "wrong password" | "unknown email") {
            continue;
        }
        let mut attempts = vec![];
        // A hundred failures from a hundred addresses: no address nor pair limit engages, only the
        // account-wide one, at the hundredth.
        for n in 0..101 {
            let origin = from(&format!("10.0.0.{n}"));
            attempts.push(attempt(&t, &origin, clone(&req)).await);
        }
        t.advance(60);
        attempts.push(attempt(&t, &from("198.51.100.9"), clone(&req)).await);
        t.advance(60);
        seen.push((path, attempts));
    }
    let (first_path, reference) = &seen[0];
    let email = r#"throttled "email" ["email_index", "failures", "ip", "scope", "until"]"#;
    assert_eq!(reference[98].1, ["login failed"]);
    assert_eq!(reference[99].1, ["login failed", email]);
    assert_eq!(reference[100], ("throttled 60".to_owned(), vec![]));
    assert_eq!(reference[101].1, ["login failed", email]);
    for (path, attempts) in &seen[1..] {
        assert_eq!(attempts, reference, "{path} against {first_path}");
    }
}

fn clone(req: &LoginRequest) -> LoginRequest {
    request(&req.tenant, &req.email, &req.password)
}

#[tokio::test]
async fn wrong_passwords_from_one_address_leave_the_owner_free_elsewhere() {
    let (t, _) = with_person().await;
    let attacker = from("203.0.113.66");
    let wrong = || request(TENANT, EMAIL, "not the password at all");
    for _ in 0..4 {
        let e = identity::login(&t.app, &attacker, wrong()).await;
        assert_eq!(e.unwrap_err(), AppError::InvalidCredentials);
    }
    // The fifth failure locks that email from that address for 1 s: even the right password
    // waits there; the sixth locks for 2 s, the seventh for 4 s.
    for lock in [1, 2, 4] {
        let e = identity::login(&t.app, &attacker, wrong()).await;
        assert_eq!(e.unwrap_err(), AppError::InvalidCredentials);
        let right = identity::login(&t.app, &attacker, request(TENANT, EMAIL, PASSWORD)).await;
        assert_eq!(retry_after(right.unwrap_err()), lock);
        // Refused while locked, with nothing appended.
        let before = t.head().await;
        t.advance(i64::try_from(lock).unwrap() - 1);
        assert_eq!(
            retry_after(
                identity::login(&t.app, &attacker, wrong())
                    .await
                    .unwrap_err()
            ),
            1
        );
        assert_eq!(t.head().await, before);
        // The owner, at another address, signs in all along.
        login_ok(&t).await;
        t.advance(1);
    }
}

#[tokio::test]
async fn a_hundred_failures_from_many_addresses_slow_the_account_for_a_minute_only() {
    let (t, _) = with_person().await;
    for n in 0..100 {
        let origin = from(&format!("10.0.0.{n}"));
        let e = identity::login(
            &t.app,
            &origin,
            request(TENANT, EMAIL, "not the password at all"),
        )
        .await;
        assert_eq!(e.unwrap_err(), AppError::InvalidCredentials);
    }
    // The owner, at an address that failed nothing, waits a minute, and no more.
    assert_eq!(retry_after(login(&t, PASSWORD).await.unwrap_err()), 60);
    t.advance(59);
    assert_eq!(retry_after(login(&t, PASSWORD).await.unwrap_err()), 1);
    t.advance(1);
    login_ok(&t).await;
}

#[tokio::test]
async fn an_unknown_email_is_throttled_like_an_account() {
    let (t, _) = with_person().await;
    let unknown = || request(TENANT, "nobody@acme.test", PASSWORD);
    for _ in 0..4 {
        let e = identity::login(&t.app, &origin(), unknown()).await;
        assert_eq!(e.unwrap_err(), AppError::InvalidCredentials);
    }
    let before = t.head().await;
    let e = identity::login(&t.app, &origin(), unknown()).await;
    assert_eq!(e.unwrap_err(), AppError::InvalidCredentials);
    let events = t.events_after(before).await;
    let types: Vec<&str> = events.iter().map(|r| r.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "security.unknown_account_login_failed",
            "security.login_throttled"
        ]
    );
    assert_eq!(events[1].data["scope"], "email_from_ip");
    assert_eq!(events[1].stream.as_str(), "acme/security/login");
    let e = identity::login(&t.app, &origin(), unknown()).await;
    assert_eq!(retry_after(e.unwrap_err()), 1);
    // The throttle is on that email only.
    login_ok(&t).await;
}

#[tokio::test]
async fn a_good_login_does_not_forgive_an_address_its_failures_against_other_emails() {
    let (t, _) = with_person().await;
    // 49 wrong guesses against other emails from one address, with a good login of the
    // attacker's own account after every seventh: the address's count is not reset by them.
    for n in 0..49 {
        let req = request(TENANT, &format!("victim{n}@acme.test"), PASSWORD);
        let e = identity::login(&t.app, &origin(), req).await.unwrap_err();
        assert_eq!(e, AppError::InvalidCredentials);
        if n % 7 == 6 {
            login_ok(&t).await;
        }
    }
    let before = t.head().await;
    let req = request(TENANT, "victim49@acme.test", PASSWORD);
    let e = identity::login(&t.app, &origin(), req).await.unwrap_err();
    assert_eq!(e, AppError::InvalidCredentials);
    let events = t.events_after(before).await;
    assert_eq!(events.last().unwrap().data["scope"], "ip");
    // The address is throttled now, even for the account that signed in from it.
    assert_eq!(retry_after(login(&t, PASSWORD).await.unwrap_err()), 1);
}

#[tokio::test]
async fn a_good_login_forgives_its_own_failures_from_that_address() {
    let (t, _) = with_person().await;
    for _ in 0..4 {
        let e = login(&t, "not the password at all").await;
        assert_eq!(e.unwrap_err(), AppError::InvalidCredentials);
    }
    login_ok(&t).await;
    // Four more failures lock nothing: the count started again.
    for _ in 0..4 {
        let e = login(&t, "not the password at all").await;
        assert_eq!(e.unwrap_err(), AppError::InvalidCredentials);
    }
    login_ok(&t).await;
}

#[tokio::test]
async fn fifty_failures_from_one_address_throttle_that_address_only() {
    let (t, _) = with_person().await;
    // Fifty different unknown emails: no account or email lock engages, only the address's.
    for n in 0..49 {
        let req = request(TENANT, &format!("nobody{n}@acme.test"), PASSWORD);
        let e = identity::login(&t.app, &origin(), req).await.unwrap_err();
        assert_eq!(e, AppError::InvalidCredentials);
    }
    let before = t.head().await;
    let req = request(TENANT, "nobody49@acme.test", PASSWORD);
    let e = identity::login(&t.app, &origin(), req).await.unwrap_err();
    assert_eq!(e, AppError::InvalidCredentials);
    let events = t.events_after(before).await;
    let throttled = events.last().unwrap();
    assert_eq!(
        (
            throttled.event_type.as_str(),
            throttled.stream.as_str(),
            &throttled.data["scope"]
        ),
        (
            "security.login_throttled",
            "_system/security/login",
            &"ip".into()
        )
    );
    // Even the right password waits, from that address; another address logs in.
    assert_eq!(retry_after(login(&t, PASSWORD).await.unwrap_err()), 1);
    let elsewhere = Origin {
        ip: Some("198.51.100.1".parse().unwrap()),
        user_agent: None,
    };
    identity::login(&t.app, &elsewhere, request(TENANT, EMAIL, PASSWORD))
        .await
        .unwrap();
    t.advance(1);
    login_ok(&t).await;
}

#[tokio::test]
async fn a_right_password_in_a_suspended_tenant_is_forbidden() {
    let (t, _) = with_person().await;
    t.tenant_command(
        TENANT,
        TenantCommand::Suspend {
            reason: "unpaid".into(),
        },
    )
    .await;
    assert!(matches!(
        login(&t, PASSWORD).await.unwrap_err(),
        AppError::Forbidden(_)
    ));
    assert_eq!(
        login(&t, "wrong").await.unwrap_err(),
        AppError::InvalidCredentials
    );
}

#[tokio::test]
async fn a_totp_account_logs_in_with_a_code_once_per_step() {
    let (t, user_id) = with_person().await;
    let enrolled = t.enroll_totp(TENANT, &user_id).await;
    t.advance(30);
    let before = t.head().await;
    let first = challenge(&t).await;
    assert_eq!((first.status, first.expires_in), ("mfa_required", 300));
    assert_eq!(first.position, t.head().await);
    assert_eq!(
        appended(&t, before).await,
        vec![(
            "user.mfa_challenge_issued".to_owned(),
            format!("{TENANT}/user/{user_id}")
        )]
    );
    let code = totp::code_at(&enrolled.seed, t.unix());
    let tokens = verify_code(&t, &first.challenge_id, &code).await.unwrap();
    assert_eq!(tokens.user_id, user_id);
    identity::authenticate(&t.app, &tokens.access_token)
        .await
        .unwrap();
    // The same code, within the same step, on a new challenge: refused, with what to do.
    let second = challenge(&t).await;
    let before = t.head().await;
    assert_eq!(
        verify_code(&t, &second.challenge_id, &code)
            .await
            .unwrap_err(),
        AppError::unauthenticated(SPENT_CODE)
    );
    // Counted as a failed login, like a wrong code.
    let types: Vec<String> = appended(&t, before)
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(types, ["user.login_failed"]);
    // A challenge is spent by its login only; the next step's code completes it.
    t.advance(30);
    let code = totp::code_at(&enrolled.seed, t.unix());
    verify_code(&t, &second.challenge_id, &code).await.unwrap();
}

#[tokio::test]
async fn a_code_confirmed_at_enrollment_is_refused_at_login_with_a_hint_to_wait() {
    let (t, user_id) = with_person().await;
    let enrolled = t.enroll_totp(TENANT, &user_id).await;
    t.advance(10);
    let code = totp::code_at(&enrolled.seed, t.unix());
    assert_eq!(code, totp::code_at(&enrolled.seed, enrolled.step * 30));
    let c = challenge(&t).await;
    let e = verify_code(&t, &c.challenge_id, &code).await.unwrap_err();
    assert_eq!(e, AppError::unauthenticated(SPENT_CODE));
    assert!(e.to_string().contains("wait for the next code"));
    t.advance(20);
    let next = totp::code_at(&enrolled.seed, t.unix());
    verify_code(&t, &c.challenge_id, &next).await.unwrap();
}

#[tokio::test]
async fn a_wrong_code_is_refused_as_invalid_and_counted() {
    let (t, user_id) = with_person().await;
    let enrolled = t.enroll_totp(TENANT, &user_id).await;
    t.advance(30);
    let c = challenge(&t).await;
    let right = totp::code_at(&enrolled.seed, t.unix());
    let wrong = if right == "000000" {
        "000001"
    } else {
        "000000"
    };
    let before = t.head().await;
    assert_eq!(
        verify_code(&t, &c.challenge_id, wrong).await.unwrap_err(),
        AppError::unauthenticated("the code is invalid or was already used")
    );
    let types: Vec<String> = appended(&t, before)
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(types, ["user.login_failed"]);
    // Neither or both factors is a malformed request, not an attempt.
    for (code, recovery_code) in [(None, None), (Some(right.clone()), Some("x".to_owned()))] {
        let e = identity::mfa_verify(
            &t.app,
            &origin(),
            MfaVerifyRequest {
                challenge_id: c.challenge_id.clone(),
                code,
                recovery_code,
            },
        )
        .await
        .unwrap_err();
        assert!(matches!(e, AppError::Invalid(_)), "{e:?}");
    }
    // An unknown challenge is refused before any code is looked at.
    assert_eq!(
        verify_code(&t, "not a challenge", &right)
            .await
            .unwrap_err(),
        AppError::unauthenticated("the challenge is invalid or expired")
    );
    verify_code(&t, &c.challenge_id, &right).await.unwrap();
}

#[tokio::test]
async fn a_recovery_code_completes_one_login() {
    let (t, user_id) = with_person().await;
    let enrolled = t.enroll_totp(TENANT, &user_id).await;
    let recover = |challenge_id: String| {
        let code = enrolled.recovery_codes[0].clone();
        let t = &t;
        async move {
            identity::mfa_verify(
                &t.app,
                &origin(),
                MfaVerifyRequest {
                    challenge_id,
                    code: None,
                    recovery_code: Some(code),
                },
            )
            .await
        }
    };
    let c = challenge(&t).await;
    recover(c.challenge_id).await.unwrap();
    let c = challenge(&t).await;
    assert_eq!(
        recover(c.challenge_id).await.unwrap_err(),
        AppError::unauthenticated("the code is invalid or was already used")
    );
}

#[tokio::test]
async fn a_challenge_expires_after_five_minutes() {
    let (t, user_id) = with_person().await;
    let enrolled = t.enroll_totp(TENANT, &user_id).await;
    t.advance(30);
    let c = challenge(&t).await;
    t.advance(300);
    let code = totp::code_at(&enrolled.seed, t.unix());
    assert_eq!(
        verify_code(&t, &c.challenge_id, &code).await.unwrap_err(),
        AppError::unauthenticated("the challenge is invalid or expired")
    );
    let c = challenge(&t).await;
    t.advance(299);
    let code = totp::code_at(&enrolled.seed, t.unix());
    verify_code(&t, &c.challenge_id, &code).await.unwrap();
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_token_revokes_the_whole_session() {
    let (t, _) = with_person().await;
    let first = login_ok(&t).await;
    let second = refresh(&t, &first.refresh_token).await.unwrap();
    assert_eq!(second.session_id, first.session_id);
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_eq!(second.position, t.head().await);
    let third = refresh(&t, &second.refresh_token).await.unwrap();
    identity::authenticate(&t.app, &third.access_token)
        .await
        .unwrap();
    // The first token again: someone holds a copy. The session ends, newest tokens included.
    let before = t.head().await;
    assert_eq!(
        refresh(&t, &first.refresh_token).await.unwrap_err(),
        AppError::RefreshTokenReused
    );
    let types: Vec<String> = appended(&t, before)
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert!(
        types.contains(&"session.refresh_token_reused".to_owned()),
        "{types:?}"
    );
    assert!(matches!(
        refresh(&t, &third.refresh_token).await.unwrap_err(),
        AppError::Unauthenticated(_)
    ));
    assert!(matches!(
        identity::authenticate(&t.app, &third.access_token)
            .await
            .unwrap_err(),
        AppError::Unauthenticated(_)
    ));
}

#[tokio::test]
async fn a_disabled_user_cannot_refresh_and_keeps_their_token_for_later() {
    let (t, user_id) = with_person().await;
    let tokens = login_ok(&t).await;
    t.user_command(
        TENANT,
        &user_id,
        UserCommand::Disable {
            reason: "on leave".into(),
        },
    )
    .await;
    assert_eq!(
        refresh(&t, &tokens.refresh_token).await.unwrap_err(),
        AppError::unauthenticated("the user may not act")
    );
    t.user_command(TENANT, &user_id, UserCommand::Enable).await;
    refresh(&t, &tokens.refresh_token).await.unwrap();
    assert!(matches!(
        refresh(&t, "not a token").await.unwrap_err(),
        AppError::Unauthenticated(_)
    ));
}

#[tokio::test]
async fn an_accepted_invitation_sets_the_password_once() {
    let t = TestApp::new().await;
    t.create_tenant(TENANT).await;
    let (user_id, token) = t.invite_person(TENANT, EMAIL).await;
    let accept = |password: &str| {
        identity::accept_invitation(
            &t.app,
            AcceptInvitationRequest {
                token: token.clone(),
                password: password.to_owned(),
            },
        )
    };
    // Invited people cannot log in yet, and say nothing about it.
    assert_eq!(
        login(&t, PASSWORD).await.unwrap_err(),
        AppError::InvalidCredentials
    );
    assert!(matches!(
        accept("short").await.unwrap_err(),
        AppError::Invalid(_)
    ));
    let accepted = accept(PASSWORD).await.unwrap();
    assert_eq!(
        (accepted.user_id.as_str(), accepted.tenant.as_str()),
        (user_id.as_str(), TENANT)
    );
    assert_eq!(accepted.position, t.head().await);
    login_ok(&t).await;
    assert_eq!(
        accept(PASSWORD).await.unwrap_err(),
        AppError::unauthenticated("the token is invalid, used or expired")
    );
}

#[tokio::test]
async fn an_invitation_expires_after_seven_days() {
    let t = TestApp::new().await;
    t.create_tenant(TENANT).await;
    let (_, token) = t.invite_person(TENANT, EMAIL).await;
    t.advance(7 * 24 * 3600);
    let e = identity::accept_invitation(
        &t.app,
        AcceptInvitationRequest {
            token,
            password: PASSWORD.to_owned(),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        e,
        AppError::unauthenticated("the token is invalid, used or expired")
    );
}

#[tokio::test]
async fn a_password_reset_replaces_the_password_and_ends_every_session() {
    let (t, user_id) = with_person().await;
    let before_reset = login_ok(&t).await;
    let token = t.issue_reset(TENANT, &user_id).await;
    let reset = |password: &str| {
        identity::reset_password(
            &t.app,
            ResetPasswordRequest {
                token: token.clone(),
                new_password: password.to_owned(),
            },
        )
    };
    assert!(matches!(
        reset("short").await.unwrap_err(),
        AppError::Invalid(_)
    ));
    let new_password = "difference engine 1822";
    let done = reset(new_password).await.unwrap();
    assert_eq!(done.user_id, user_id);
    assert_eq!(done.position, t.head().await);
    assert!(matches!(
        identity::authenticate(&t.app, &before_reset.access_token)
            .await
            .unwrap_err(),
        AppError::Unauthenticated(_)
    ));
    assert!(matches!(
        refresh(&t, &before_reset.refresh_token).await.unwrap_err(),
        AppError::Unauthenticated(_)
    ));
    assert_eq!(
        login(&t, PASSWORD).await.unwrap_err(),
        AppError::InvalidCredentials
    );
    identity::login(&t.app, &origin(), request(TENANT, EMAIL, new_password))
        .await
        .unwrap();
    assert_eq!(
        reset("yet another password").await.unwrap_err(),
        AppError::unauthenticated("the token is invalid, used or expired")
    );
}

#[tokio::test]
async fn the_key_set_publishes_the_key_that_signs_access_tokens() {
    let (t, _) = with_person().await;
    let tokens = login_ok(&t).await;
    let jwks = identity::jwks(&t.app);
    let keys = jwks["keys"].as_array().unwrap();
    assert!(!keys.is_empty());
    let header = tokens.access_token.split('.').next().unwrap();
    let header: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header).unwrap(),
    )
    .unwrap();
    assert!(keys.iter().any(|k| k["kid"] == header["kid"]), "{jwks}");
}

#[tokio::test]
async fn five_wrong_second_factors_lock_the_email_from_that_address_for_a_second() {
    let (t, user_id) = with_person().await;
    let enrolled = t.enroll_totp(TENANT, &user_id).await;
    t.advance(30);
    let c = challenge(&t).await;
    let valid: Vec<String> = [-30, 0, 30]
        .iter()
        .map(|d| totp::code_at(&enrolled.seed, t.unix().checked_add_signed(*d).unwrap()))
        .collect();
    let wrong: Vec<String> = (0..1_000_000u32)
        .map(|n| format!("{n:06}"))
        .filter(|code| !valid.contains(code))
        .take(5)
        .collect();
    for code in &wrong {
        assert_eq!(
            verify_code(&t, &c.challenge_id, code).await.unwrap_err(),
            AppError::unauthenticated("the code is invalid or was already used")
        );
    }
    // Even the right code waits for the lock, which is short.
    let right = totp::code_at(&enrolled.seed, t.unix());
    assert_eq!(
        retry_after(verify_code(&t, &c.challenge_id, &right).await.unwrap_err()),
        1
    );
    t.advance(1);
    verify_code(&t, &c.challenge_id, &right).await.unwrap();
}
