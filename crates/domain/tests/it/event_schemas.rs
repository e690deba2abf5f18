//! Every event the code can emit validates against `schemas/{type}.v{schema}.json`, and every schema
//! file belongs to an event type the code knows.

use std::collections::BTreeSet;
use std::path::PathBuf;

use custodian_domain::checkpoint::{Checkpoint, NoteSigner};
use custodian_domain::email::{self, EmailCommand, EmailEvent, Reservation};
use custodian_domain::id::type_id;
use custodian_domain::key::{self, KeyCommand, KeyEvent, RateLimit, Refill, UsageLimit};
use custodian_domain::ledger::{self, LedgerCommand, LedgerEvent, LedgerState, NewKey};
use custodian_domain::policy::{
    self, AsOf, Check, Conditions, DecisionEvent, Effect, Hours, Permission, Policy, PolicyCommand,
    PolicyEvent, Resource, Scope, Stamp, Subject, Target, TimeOfDay, Window,
};
use custodian_domain::secret::{Sealed, TokenHash};
use custodian_domain::security::{SecurityEvent, ThrottleScope};
use custodian_domain::session::{self, RevokeReason, SessionCommand, SessionEvent};
use custodian_domain::signing_key::{self, SigningKeyCommand, SigningKeyEvent};
use custodian_domain::tenant::{self, Plan, TenantCommand, TenantEvent};
use custodian_domain::usage::{self, UsageEvent};
use custodian_domain::user::{
    self, LockoutPolicy, LoginFailure, LoginMethod, ROLE_PLATFORM_ADMIN, ROLE_TENANT_ADMIN,
    UserCommand, UserEvent, UserKind,
};
use custodian_domain::{DomainEvent, Timestamp};
use serde_json::{Value, json};
use time::Duration;
use uuid::Uuid;

fn schemas_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

fn schema_doc(event_type: &str, schema: u32) -> Value {
    let path = schemas_dir().join(format!("{event_type}.v{schema}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("no schema for {event_type} v{schema} at {path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?} is not JSON: {e}"))
}

fn validate(event_type: &str, schema: u32, data: &Value) {
    let doc = schema_doc(event_type, schema);
    let validator = jsonschema::validator_for(&doc).unwrap();
    let errors: Vec<String> = validator.iter_errors(data).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "{event_type} v{schema} {data}: {errors:?}"
    );
}

/// Checks every event against its schema and returns the `(type, version)` pairs seen.
fn validate_all<E: DomainEvent>(events: &[E]) -> BTreeSet<(&'static str, u32)> {
    let mut seen = BTreeSet::new();
    for e in events {
        validate(e.event_type(), e.schema_version(), &e.data());
        seen.insert((e.event_type(), e.schema_version()));
    }
    seen
}

fn declared<E: DomainEvent>() -> BTreeSet<(&'static str, u32)> {
    E::TYPES.iter().copied().collect()
}

// ---- inputs in the shapes the edge hands the domain ----

fn ts(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

fn now() -> Timestamp {
    ts("2026-01-01T00:00:00.123456Z")
}

fn sealed(s: &str) -> Sealed {
    Sealed(format!("v1.{s}"))
}

/// A keyed hash: 64 lowercase hex digits.
fn hash(c: char) -> TokenHash {
    TokenHash(std::iter::repeat_n(c, 64).collect())
}

fn index(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

fn user_id() -> String {
    type_id("user", Uuid::now_v7())
}

fn session_id() -> String {
    type_id("sess", Uuid::now_v7())
}

// ---- tenants ----

/// Every tenant event `decide` can produce, by driving it through the whole lifecycle.
fn emitted_tenant_events() -> Vec<TenantEvent> {
    let commands = [
        TenantCommand::Create {
            name: "Acme Corp".into(),
            slug: "acme".into(),
            plan: Plan::Free,
        },
        TenantCommand::Rename {
            name: "Acme Inc".into(),
        },
        TenantCommand::ChangePlan { plan: Plan::Team },
        TenantCommand::ChangePlan {
            plan: Plan::Enterprise,
        },
        TenantCommand::Suspend {
            reason: "invoice overdue".into(),
        },
        TenantCommand::Reactivate,
    ];
    let mut state = None;
    let mut out = Vec::new();
    for c in commands {
        let events = tenant::decide(state.as_ref(), c).unwrap();
        for e in &events {
            state = tenant::evolve(state, e);
        }
        out.extend(events);
    }
    out
}

// ---- users ----

/// Drives one user stream through `commands`, each of which must succeed.
fn user_stream(commands: Vec<UserCommand>) -> Vec<UserEvent> {
    let mut state = None;
    let mut out = Vec::new();
    for c in commands {
        let label = format!("{c:?}");
        let events = user::decide(state.as_ref(), c)
            .unwrap_or_else(|e| panic!("user command {label} refused: {e}"));
        for e in &events {
            state = user::evolve(state, e);
        }
        out.extend(events);
    }
    out
}

fn complete_login(
    challenge: Option<TokenHash>,
    totp_step: Option<u64>,
    recovery_code: Option<TokenHash>,
    ip: Option<&str>,
    at: Timestamp,
) -> UserCommand {
    UserCommand::CompleteLogin {
        session_id: session_id(),
        challenge,
        totp_step,
        recovery_code,
        ip: ip.map(str::to_owned),
        now: at,
    }
}

fn mfa_challenge(c: char, at: Timestamp) -> UserCommand {
    UserCommand::IssueMfaChallenge {
        challenge: hash(c),
        expires_at: at.plus(Duration::minutes(5)),
        now: at,
    }
}

/// Every user event `decide` can produce, by driving it through invitation, direct creation, and a
/// long life of profile, password, lockout, MFA and login changes ending in deletion.
fn emitted_user_events() -> Vec<UserEvent> {
    let policy = LockoutPolicy::default();
    let mut out = Vec::new();

    // Invite -> accept.
    out.extend(user_stream(vec![
        UserCommand::Invite {
            kind: UserKind::Person,
            email: sealed("aW52aXRlZQ"),
            name: sealed("SW52aXRlZQ"),
            email_index: index('1'),
            roles: vec![ROLE_TENANT_ADMIN.into()],
            invitation: hash('2'),
            expires_at: now().plus(Duration::days(7)),
        },
        UserCommand::AcceptInvitation {
            token: hash('2'),
            credential: sealed("JGFyZ29uMmlk_pw-1"),
            now: now(),
        },
    ]));

    // A non-human user: created without a password, in the platform scope.
    out.extend(user_stream(vec![UserCommand::Create {
        kind: UserKind::Agent,
        email: sealed("YWdlbnQ"),
        name: sealed("QWdlbnQ"),
        email_index: index('3'),
        roles: vec![ROLE_PLATFORM_ADMIN.into(), ROLE_TENANT_ADMIN.into()],
        credential: None,
    }]));

    // A person created with a password, through the rest of a user's life.
    let unlocked = now().plus(Duration::hours(1));
    let mut commands = vec![
        UserCommand::Create {
            kind: UserKind::Person,
            email: sealed("cGVyc29u"),
            name: sealed("UGVyc29u"),
            email_index: index('4'),
            roles: vec![],
            credential: Some(sealed("JGFyZ29uMmlk_pw-2")),
        },
        UserCommand::UpdateProfile {
            email: Some((sealed("bmV3"), index('5'))),
            name: Some(sealed("TmV3")),
        },
        UserCommand::UpdateProfile {
            email: None,
            name: Some(sealed("TmV3ZXI")),
        },
        UserCommand::UpdateProfile {
            email: Some((sealed("bmV3ZXI"), index('6'))),
            name: None,
        },
        UserCommand::Disable {
            reason: "left the company".into(),
        },
        UserCommand::Enable,
        UserCommand::ChangePassword {
            credential: sealed("JGFyZ29uMmlk_pw-3"),
        },
        UserCommand::IssuePasswordReset {
            token: hash('7'),
            expires_at: now().plus(Duration::hours(1)),
        },
        UserCommand::ResetPassword {
            token: hash('7'),
            credential: sealed("JGFyZ29uMmlk_pw-4"),
            now: now(),
        },
        UserCommand::RehashPassword {
            credential: sealed("JGFyZ29uMmlk_pw-5"),
        },
    ];
    // Failed logins up to and past the lockout threshold.
    for i in 0..=policy.threshold {
        commands.push(UserCommand::RecordLoginFailure {
            reason: LoginFailure::BadPassword,
            ip: (i % 2 == 0).then(|| "203.0.113.7".to_owned()),
            now: now(),
            policy,
        });
    }
    commands.extend([
        complete_login(None, None, None, Some("2001:db8::1"), unlocked),
        UserCommand::StartTotpEnrollment {
            secret: sealed("dG90cC1zZWVk"),
        },
        UserCommand::ConfirmTotp {
            step: 1_000,
            recovery_codes: vec![hash('a'), hash('b'), hash('c')],
        },
        mfa_challenge('8', unlocked),
        UserCommand::RecordLoginFailure {
            reason: LoginFailure::BadCode,
            ip: None,
            now: unlocked,
            policy,
        },
        complete_login(Some(hash('8')), Some(1_001), None, None, unlocked),
        mfa_challenge('9', unlocked),
        complete_login(
            Some(hash('9')),
            None,
            Some(hash('a')),
            Some("::1"),
            unlocked,
        ),
        UserCommand::RegenerateRecoveryCodes {
            codes: (0..20).map(|i| TokenHash(format!("{i:064x}"))).collect(),
            totp_step: None,
        },
        UserCommand::DisableTotp {
            totp_step: Some(9_000_000_000),
        },
        UserCommand::Delete,
    ]);
    out.extend(user_stream(commands));
    out
}

// ---- sessions ----

fn session_stream(commands: Vec<SessionCommand>) -> Vec<SessionEvent> {
    let mut state = None;
    let mut out = Vec::new();
    for c in commands {
        let label = format!("{c:?}");
        let events = session::decide(state.as_ref(), c)
            .unwrap_or_else(|e| panic!("session command {label} refused: {e}"));
        for e in &events {
            state = session::evolve(state, e);
        }
        out.extend(events);
    }
    out
}

fn refresh(generation: u64, presented: char, next: char, ip: Option<&str>) -> SessionCommand {
    SessionCommand::Refresh {
        generation,
        presented: hash(presented),
        next: hash(next),
        ip: ip.map(str::to_owned),
        now: now(),
    }
}

/// Every session event `decide` can produce: start, rotation, reuse of a spent token (which
/// revokes the family), and a plain logout.
fn emitted_session_events() -> Vec<SessionEvent> {
    let mut out = session_stream(vec![
        SessionCommand::Start {
            user_id: user_id(),
            refresh: hash('0'),
            method: LoginMethod::PasswordTotp,
            expires_at: now().plus(Duration::days(30)),
            ip: Some("198.51.100.4".into()),
            user_agent: Some("Mozilla/5.0 (X11; Linux x86_64)".into()),
        },
        refresh(0, '0', '1', Some("198.51.100.4")),
        refresh(1, '1', '2', None),
        // The spent generation-0 token again: reuse, which revokes the session.
        refresh(0, '0', '3', Some("192.0.2.66")),
    ]);
    out.extend(session_stream(vec![
        SessionCommand::Start {
            user_id: user_id(),
            refresh: hash('4'),
            method: LoginMethod::Password,
            expires_at: now().plus(Duration::days(30)),
            ip: None,
            user_agent: None,
        },
        refresh(0, '4', '5', None),
        SessionCommand::Revoke {
            reason: RevokeReason::Logout,
        },
    ]));
    out
}

// ---- email reservations ----

/// Every reservation event `decide` can produce: a claim, its release, and a takeover of a claim
/// whose holder never came to exist.
fn emitted_email_events() -> Vec<EmailEvent> {
    let (first, second, third) = (user_id(), user_id(), user_id());
    let commands = [
        EmailCommand::Claim {
            user_id: first.clone(),
            holder_gone: false,
        },
        EmailCommand::Release { user_id: first },
        EmailCommand::Claim {
            user_id: second,
            holder_gone: false,
        },
        EmailCommand::Claim {
            user_id: third,
            holder_gone: true,
        },
    ];
    let mut state = Reservation::default();
    let mut out = Vec::new();
    for c in commands {
        let events = email::decide(&state, c).unwrap();
        for e in &events {
            state = email::evolve(state, e);
        }
        out.extend(events);
    }
    out
}

// ---- security observations ----

/// Security observations are recorded, not decided (there is no `decide`): both scopes' shapes.
fn emitted_security_events() -> Vec<SecurityEvent> {
    vec![
        SecurityEvent::LoginThrottled {
            scope: ThrottleScope::Ip,
            ip: Some("203.0.113.7".into()),
            email_index: None,
            failures: 20,
            until: now().plus(Duration::seconds(1)),
        },
        SecurityEvent::LoginThrottled {
            scope: ThrottleScope::UnknownEmail,
            ip: Some("2001:db8::1".into()),
            email_index: Some(index('e')),
            failures: 5,
            until: now().plus(Duration::seconds(2)),
        },
        SecurityEvent::UnknownAccountLoginFailed {
            tenant: "acme".into(),
            email_index: index('f'),
            ip: Some("198.51.100.4".into()),
        },
    ]
}

// ---- signing keys ----

/// Every signing-key event `decide` can produce: the issuance of a key.
fn emitted_signing_key_events() -> Vec<SigningKeyEvent> {
    signing_key::decide(
        None,
        SigningKeyCommand::Issue {
            kid: format!("sk_{}", Uuid::now_v7().simple()),
            public_key: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into(),
            created_at: now(),
        },
    )
    .unwrap()
}

// ---- the ledger's checkpoints ----

/// Every ledger event `decide` can produce: the first checkpoint with its key, a rotation, and a
/// checkpoint by the new key.
fn emitted_ledger_events() -> Vec<LedgerEvent> {
    let signer = |seed: u8| {
        NoteSigner::new(
            "custodian.local/ledger",
            ed25519_dalek::SigningKey::from_bytes(&[seed; 32]),
        )
        .unwrap()
    };
    let key = |s: &NoteSigner| NewKey {
        key_name: s.name().to_owned(),
        verifier_key: s.verifier_key(),
    };
    let note = |s: &NoteSigner, size: u64| {
        s.sign(
            &Checkpoint {
                origin: "custodian.local/ledger".into(),
                size,
                root: [7; 32],
                time: Some(now()),
            }
            .body(),
        )
        .unwrap()
    };
    let (a, b) = (signer(1), signer(2));
    let mut state = LedgerState::default();
    let mut out = Vec::new();
    for command in [
        LedgerCommand::Checkpoint {
            note: note(&a, 10),
            issue_key: Some(key(&a)),
        },
        LedgerCommand::IssueKey(key(&b)),
        LedgerCommand::Checkpoint {
            note: note(&b, 20),
            issue_key: None,
        },
    ] {
        let events = ledger::decide(&state, command).unwrap();
        state = events.iter().fold(state, ledger::evolve);
        out.extend(events);
    }
    out
}

// ---- API keys ----

/// A key with every optional field, rotated, updated (a limit set, one removed), used and revoked;
/// and a bare key.
fn emitted_key_events() -> Vec<KeyEvent> {
    let key = assemble_key();
    let preview = key::preview(&key).unwrap();
    let mut events = key::decide(
        None,
        KeyCommand::Issue {
            owner: user_id(),
            name: "deploy bot".into(),
            scopes: vec![permission("project:read"), permission("key:*")],
            on: Some(Scope::ResourceType("project".into())),
            expires_at: Some(now().plus(Duration::days(30))),
            ip_allowlist: vec![
                "10.0.0.0/8".parse().unwrap(),
                "2001:db8::/32".parse().unwrap(),
            ],
            ratelimit: Some(RateLimit {
                limit: 100,
                window_seconds: 60,
            }),
            usage_limit: Some(UsageLimit {
                remaining: 1000,
                refill: Some(Refill {
                    amount: 1000,
                    interval_seconds: 86_400,
                }),
            }),
            hash: hash('a'),
            preview: preview.clone(),
            now: now(),
        },
    )
    .unwrap();
    let run = |c: KeyCommand, events: &mut Vec<KeyEvent>| {
        let state = events.iter().fold(None, key::evolve);
        let new = key::decide(state.as_ref(), c).unwrap();
        events.extend(new);
    };
    run(
        KeyCommand::Update {
            name: Some("deploy bot 2".into()),
            ratelimit: Some(None),
            usage_limit: Some(Some(UsageLimit {
                remaining: 5,
                refill: None,
            })),
            ip_allowlist: Some(vec![]),
        },
        &mut events,
    );
    run(
        KeyCommand::Update {
            name: None,
            ratelimit: Some(Some(RateLimit {
                limit: 5,
                window_seconds: 1,
            })),
            usage_limit: Some(None),
            ip_allowlist: None,
        },
        &mut events,
    );
    run(
        KeyCommand::Rotate {
            hash: hash('b'),
            preview,
            previous_valid_until: now().plus(Duration::hours(1)),
            now: now(),
        },
        &mut events,
    );
    events.push(KeyEvent::Used {
        window_start: ts("2026-03-01T12:00:00Z"),
        uses: 3,
        cost: 7,
        first_used_at: ts("2026-03-01T12:00:01.5Z"),
        last_used_at: ts("2026-03-01T12:00:59Z"),
        remaining: Some(993),
    });
    events.push(KeyEvent::Used {
        window_start: ts("2026-03-01T12:01:00Z"),
        uses: 1,
        cost: 0,
        first_used_at: ts("2026-03-01T12:01:01Z"),
        last_used_at: ts("2026-03-01T12:01:01Z"),
        remaining: None,
    });
    run(KeyCommand::Revoke, &mut events);
    events
}

fn assemble_key() -> String {
    let mut n = 0u8;
    key::assemble(&key::random_part(|| {
        n = n.wrapping_add(91);
        n
    }))
    .unwrap()
}

// ---- policies and decisions ----

fn grant_id(n: u128) -> String {
    type_id("grant", Uuid::from_u128(n))
}

fn assignment_id(n: u128) -> String {
    type_id("asg", Uuid::from_u128(n))
}

fn permission(s: &str) -> Permission {
    Permission::parse(s).unwrap()
}

fn resource(s: &str) -> Resource {
    Resource::parse(s).unwrap()
}

/// Runs `commands` against one tenant's policy, each of which must be accepted, applying each event
/// at the next position; returns the policy and the events.
fn policy_stream(commands: Vec<PolicyCommand>) -> (Policy, Vec<PolicyEvent>) {
    let mut state = Policy::new();
    let mut out = Vec::new();
    for c in commands {
        let label = format!("{c:?}");
        let events = policy::decide(&state, c)
            .unwrap_or_else(|e| panic!("policy command {label} refused: {e}"));
        for e in &events {
            let position = u64::try_from(out.len()).unwrap() + 1;
            state.apply(
                Stamp {
                    position,
                    at: now(),
                },
                e,
            );
            out.push(e.clone());
        }
    }
    (state, out)
}

/// A tenant's policy driven through every kind of change: its catalog, custom roles (made,
/// changed, deleted), grants of every subject, scope, window and condition, assignments (one
/// carried over from the earlier `tenant_admin`), group memberships, revocations, and the deletion
/// of a role, which ends its grants and assignments.
fn emitted_policy_events() -> (Policy, Vec<PolicyEvent>) {
    let grant = |n: u128, subject: Subject, p: &str, on: Option<Scope>| PolicyCommand::Grant {
        id: grant_id(n),
        subject,
        permission: permission(p),
        on,
        effect: Effect::Allow,
        window: Window::default(),
        conditions: None,
        granted_by: user_id(),
    };
    let assign = |n: u128, principal: &str, role: &str, on: Option<Scope>| PolicyCommand::Assign {
        id: assignment_id(n),
        principal: principal.to_owned(),
        role: role.to_owned(),
        on,
        window: Window::default(),
        assigned_by: "system".to_owned(),
        migrated_from: None,
    };
    let alice = "user_01jd8x0000000000000000000a";
    let mut commands = vec![
        PolicyCommand::SetCatalog {
            resource_types: [
                ("project", &["read", "update", "deploy"][..]),
                ("billing", &["export"][..]),
            ]
            .into_iter()
            .map(|(t, a)| (t.to_owned(), a.iter().map(|a| (*a).to_owned()).collect()))
            .collect(),
        },
        PolicyCommand::CreateRole {
            name: "deployer".into(),
            description: Some("Deploys projects.".into()),
            parents: vec!["developer".into()],
        },
        PolicyCommand::CreateRole {
            name: "release-lead".into(),
            description: None,
            parents: vec![],
        },
        PolicyCommand::UpdateRole {
            name: "release-lead".into(),
            description: Some(Some("Leads releases.".into())),
            parents: Some(vec!["deployer".into(), "viewer".into()]),
        },
        PolicyCommand::AddMember {
            group: "prod".into(),
            resource: resource("project/p42"),
        },
        PolicyCommand::AddMember {
            group: "prod".into(),
            resource: resource("billing/b1"),
        },
        PolicyCommand::RemoveMember {
            group: "prod".into(),
            resource: resource("billing/b1"),
        },
        grant(1, Subject::Role("deployer".into()), "project:deploy", None),
        grant(
            2,
            Subject::Principal(alice.into()),
            "project:*",
            Some(Scope::Resource(resource("project/p42"))),
        ),
        grant(
            3,
            Subject::Role("viewer".into()),
            "project:read",
            Some(Scope::ResourceType("project".into())),
        ),
        PolicyCommand::Grant {
            id: grant_id(4),
            subject: Subject::Role("release-lead".into()),
            permission: permission("*:export"),
            on: Some(Scope::Group("prod".into())),
            effect: Effect::Deny,
            window: Window {
                valid_from: Some(now()),
                valid_until: Some(now().plus(Duration::days(30))),
            },
            conditions: Some(Conditions {
                time_of_day: Some(Hours {
                    from: TimeOfDay::parse("22:00").unwrap(),
                    until: TimeOfDay::parse("06:00").unwrap(),
                    time_zone: "Europe/Paris".into(),
                }),
                source_ip: Some(vec![
                    "203.0.113.0/24".parse().unwrap(),
                    "2001:db8::/32".parse().unwrap(),
                ]),
            }),
            granted_by: alice.into(),
        },
        PolicyCommand::Grant {
            id: grant_id(5),
            subject: Subject::Principal("key_01jd8x0000000000000000000b".into()),
            permission: permission("project:read"),
            on: None,
            effect: Effect::Allow,
            window: Window {
                valid_from: None,
                valid_until: Some(now().plus(Duration::hours(8))),
            },
            conditions: Some(Conditions {
                time_of_day: None,
                source_ip: Some(vec!["10.0.0.0/8".parse().unwrap()]),
            }),
            granted_by: alice.into(),
        },
        PolicyCommand::Revoke { id: grant_id(5) },
        PolicyCommand::Assign {
            id: assignment_id(1),
            principal: alice.into(),
            role: "admin".into(),
            on: None,
            window: Window::default(),
            assigned_by: "system".into(),
            migrated_from: Some("tenant_admin".into()),
        },
        assign(2, alice, "deployer", Some(Scope::Group("prod".into()))),
        assign(3, "user_01jd8x0000000000000000000c", "release-lead", None),
        PolicyCommand::Assign {
            id: assignment_id(4),
            principal: "user_01jd8x0000000000000000000d".into(),
            role: "viewer".into(),
            on: Some(Scope::ResourceType("billing".into())),
            window: Window {
                valid_from: Some(now().plus(Duration::days(1))),
                valid_until: None,
            },
            assigned_by: alice.into(),
            migrated_from: None,
        },
        PolicyCommand::Unassign {
            id: assignment_id(4),
        },
    ];
    // Deleting a role ends its live grants and assignments first, each as an event.
    commands.push(PolicyCommand::DeleteRole {
        name: "release-lead".into(),
    });
    policy_stream(commands)
}

/// Decision records are written from `evaluate`'s answers, not decided: an allow through an `at`
/// check with an address, and a default deny without either.
fn emitted_decision_events() -> Vec<DecisionEvent> {
    let (policy, _) = emitted_policy_events();
    let record = |principal: &str, p: &str, r: &str, at: Option<Timestamp>, ip: Option<&str>| {
        let permission = permission(p);
        let resource = resource(r);
        let time = at.unwrap_or_else(now);
        let as_of = match at {
            Some(t) => AsOf {
                position: policy.position_at(t),
                time: t,
            },
            None => AsOf::now(time),
        };
        let decision = policy::evaluate(
            &policy,
            &Check {
                principal,
                permission: &permission,
                target: Target::Resource(&resource),
                ip: ip.map(|ip| ip.parse().unwrap()),
                as_of,
                explain: false,
            },
        );
        DecisionEvent::Recorded {
            principal: principal.to_owned(),
            permission,
            resource,
            decision: decision.verdict,
            reason: decision.reason,
            matched: decision.matched.into_iter().map(|m| m.id).collect(),
            at,
            position: as_of.position.min(policy.head()),
            ip: ip.map(str::to_owned),
        }
    };
    let allowed = record(
        "user_01jd8x0000000000000000000a",
        "project:deploy",
        "project/p42",
        Some(now()),
        Some("2001:db8::7"),
    );
    let denied = record(
        "user_01jd8x0000000000000000000e",
        "billing:export",
        "billing/b1",
        None,
        None,
    );
    vec![allowed, denied]
}

// ---- usage ----

/// Every usage event: records rolled up by the domain, and each follow-up and setting.
fn emitted_usage_events() -> Vec<UsageEvent> {
    let record = |key: &str| usage::Record {
        at: now(),
        subject: "user_01".into(),
        meter: "api_calls".into(),
        quantity: 3,
        cost: 3_000,
        idempotency_key: key.into(),
    };
    let mut events = usage::roll_up(&[record("k-1"), record("k-2")]);
    events.extend([
        UsageEvent::QuotaExceeded {
            period: usage::period_of(now()),
            window: usage::window_of(now()),
            subject: "user_01".into(),
            meter: "api_calls".into(),
            refused: 2,
            quantity: 7,
            limit: 100,
        },
        UsageEvent::QuotaWarning {
            period: "2026-01".into(),
            meter: "storage.gb".into(),
            used: 101,
            limit: 100,
        },
        UsageEvent::BudgetThresholdCrossed {
            period: "2026-01".into(),
            threshold: 80,
            spent: 8_000_000,
            budget: 10_000_000,
        },
        UsageEvent::QuotaSet {
            meter: "api_calls".into(),
            limit: 1_000,
            hard: true,
        },
        UsageEvent::QuotaCleared {
            meter: "api_calls".into(),
        },
        UsageEvent::MeterCostSet {
            meter: "api_calls".into(),
            unit_cost: 1_500,
        },
        UsageEvent::BudgetSet { amount: 0 },
    ]);
    events
}

#[test]
fn usage_schemas_reject_malformed_data() {
    let events = emitted_usage_events();
    mutation_fails(&events, "usage.recorded", |d| {
        d["idempotency_keys"] = json!([])
    });
    mutation_fails(&events, "usage.recorded", |d| {
        d["period"] = json!("2026-13")
    });
    mutation_fails(&events, "usage.recorded", |d| {
        d["meter"] = json!("API calls")
    });
    mutation_fails(&events, "budget.threshold_crossed", |d| {
        d["threshold"] = json!(90)
    });
    mutation_fails(&events, "quota.set", |d| d["limit"] = json!(-1));
}

#[test]
fn every_emitted_event_matches_its_schema() {
    assert_eq!(
        validate_all(&emitted_tenant_events()),
        declared::<TenantEvent>(),
        "the tenant lifecycle must emit every declared type"
    );
    assert_eq!(
        validate_all(&emitted_user_events()),
        declared::<UserEvent>(),
        "the user lifecycles must emit every declared type"
    );
    assert_eq!(
        validate_all(&emitted_session_events()),
        declared::<SessionEvent>(),
        "the session lifecycles must emit every declared type"
    );
    assert_eq!(
        validate_all(&emitted_email_events()),
        declared::<EmailEvent>(),
        "the reservation lifecycle must emit every declared type"
    );
    assert_eq!(
        validate_all(&emitted_security_events()),
        declared::<SecurityEvent>(),
        "every declared security observation must be checked"
    );
    assert_eq!(
        validate_all(&emitted_signing_key_events()),
        declared::<SigningKeyEvent>(),
        "the signing-key lifecycle must emit every declared type"
    );
    assert_eq!(
        validate_all(&emitted_policy_events().1),
        declared::<PolicyEvent>(),
        "the policy's changes must emit every declared type"
    );
    assert_eq!(
        validate_all(&emitted_decision_events()),
        declared::<DecisionEvent>(),
        "every declared decision record must be checked"
    );
    assert_eq!(
        validate_all(&emitted_key_events()),
        declared::<KeyEvent>(),
        "the key lifecycle must emit every declared type"
    );
    assert_eq!(
        validate_all(&emitted_usage_events()),
        declared::<UsageEvent>(),
        "every declared usage event must be checked"
    );
    assert_eq!(
        validate_all(&emitted_ledger_events()),
        declared::<LedgerEvent>(),
        "the ledger's checkpoints must emit every declared type"
    );
}

#[test]
fn the_policy_changes_emit_every_optional_shape() {
    let (_, events) = emitted_policy_events();
    let data = |t: &str| -> Vec<Value> {
        events
            .iter()
            .filter(|e| e.event_type() == t)
            .map(DomainEvent::data)
            .collect()
    };
    let grants = data("grant.created");
    let scopes: BTreeSet<String> = grants
        .iter()
        .map(|g| match &g["on"] {
            Value::Object(o) => o.keys().next().unwrap().clone(),
            other => other.to_string(),
        })
        .collect();
    assert_eq!(
        scopes,
        ["group", "null", "resource", "resource_type"]
            .map(String::from)
            .into()
    );
    assert!(grants.iter().any(|g| g["effect"] == "deny"));
    assert!(grants.iter().any(|g| g["conditions"].is_null()));
    assert!(
        grants
            .iter()
            .any(|g| g["conditions"]["time_of_day"].is_object())
    );
    assert!(grants.iter().any(|g| g["subject"]["principal"].is_string()));
    assert!(grants.iter().any(|g| g["subject"]["role"].is_string()));
    let ended: BTreeSet<String> = data("grant.revoked")
        .into_iter()
        .chain(data("assignment.ended"))
        .map(|e| e["reason"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ended, ["revoked", "role_deleted"].map(String::from).into());
    assert!(
        data("assignment.created")
            .iter()
            .any(|a| a["migrated_from"] == "tenant_admin")
    );
    let decisions: Vec<Value> = emitted_decision_events()
        .iter()
        .map(DomainEvent::data)
        .collect();
    assert_eq!(decisions[0]["decision"], "allow");
    assert!(!decisions[0]["matched"].as_array().unwrap().is_empty());
    assert_eq!(decisions[1]["decision"], "deny");
    assert!(decisions[1]["at"].is_null() && decisions[1]["ip"].is_null());
}

#[test]
fn the_lifecycles_emit_every_login_method_and_optional_field() {
    let logins: BTreeSet<String> = emitted_user_events()
        .iter()
        .filter(|e| e.event_type() == "user.logged_in")
        .map(|e| e.data()["method"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        logins,
        ["password", "password_recovery_code", "password_totp"]
            .map(String::from)
            .into()
    );
    let locked = emitted_user_events()
        .iter()
        .filter(|e| e.event_type() == "user.login_failed")
        .any(|e| e.data().get("locked_until").is_some());
    assert!(locked, "the failures must reach a lock");
}

fn validate_fails(event_type: &str, data: Value) {
    let doc = schema_doc(event_type, 1);
    assert!(
        !jsonschema::is_valid(&doc, &data),
        "{event_type} accepted {data}"
    );
}

/// The data of the first emitted event of `event_type`, changed by `change`, is refused. The
/// unchanged data is valid, so the refusal is the change's doing.
fn mutation_fails<E: DomainEvent>(events: &[E], event_type: &str, change: impl Fn(&mut Value)) {
    let event = events
        .iter()
        .find(|e| e.event_type() == event_type)
        .unwrap_or_else(|| panic!("no {event_type} emitted"));
    let mut data = event.data();
    validate(event_type, event.schema_version(), &data);
    change(&mut data);
    validate_fails(event_type, data);
}

#[test]
fn schemas_reject_what_the_code_would_refuse() {
    validate_fails(
        "tenant.created",
        json!({"name": "A", "slug": "acme", "plan": "gold"}),
    );
    validate_fails(
        "tenant.created",
        json!({"name": "A", "slug": "acme", "plan": "free", "extra": 1}),
    );
    validate_fails("tenant.renamed", json!({}));
}

#[test]
fn user_schemas_reject_malformed_data() {
    let events = emitted_user_events();
    let fails = |t: &str, change: &dyn Fn(&mut Value)| mutation_fails(&events, t, change);
    // Wrong enum values.
    fails("user.created", &|d| d["kind"] = json!("robot"));
    fails("user.created", &|d| d["roles"] = json!(["root"]));
    fails("user.logged_in", &|d| d["method"] = json!("magic_link"));
    fails("user.login_failed", &|d| d["reason"] = json!("bad_luck"));
    // Extra properties, including on fieldless events.
    fails("user.invited", &|d| d["password"] = json!("hunter2"));
    fails("user.enabled", &|d| d["extra"] = json!(1));
    fails("user.deleted", &|d| d["email"] = json!("a@example.com"));
    // Malformed hashes and sealed values: no plaintext secrets or personal data.
    fails("user.invited", &|d| d["invitation"] = json!("plain-token"));
    fails("user.invited", &|d| {
        d["email_index"] = json!("A".repeat(64))
    });
    fails("user.created", &|d| d["email"] = json!("a@example.com"));
    fails("user.password_set", &|d| {
        d["credential"] = json!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA");
    });
    fails("user.totp_enrollment_started", &|d| {
        d["secret"] = json!("JBSWY3DPEHPK3PXP")
    });
    fails("user.recovery_codes_generated", &|d| {
        d["codes"][0] = json!("abcd-efgh-ijkl")
    });
    // Other shapes the code never writes.
    fails("user.recovery_codes_generated", &|d| d["codes"] = json!([]));
    fails("user.recovery_codes_generated", &|d| {
        d["codes"] = json!(vec!["0".repeat(64); 21])
    });
    fails("user.disabled", &|d| d["reason"] = json!(""));
    fails("user.disabled", &|d| d["reason"] = json!("x".repeat(501)));
    fails("user.login_failed", &|d| d["failures"] = json!(-1));
    fails("user.login_failed", &|d| {
        d["locked_until"] = json!("2026-01-01T00:00:00Z")
    });
    fails("user.logged_in", &|d| d["session_id"] = json!("sess_1"));
    fails("user.logged_in", &|d| d["totp_step"] = json!(7));
    fails("user.profile_updated", &|d| {
        d.as_object_mut().unwrap().remove("email_index");
    });
    validate_fails("user.profile_updated", json!({}));
}

#[test]
fn session_schemas_reject_malformed_data() {
    let events = emitted_session_events();
    let fails = |t: &str, change: &dyn Fn(&mut Value)| mutation_fails(&events, t, change);
    fails("session.revoked", &|d| d["reason"] = json!("expired"));
    fails("session.started", &|d| d["method"] = json!("passkey"));
    fails("session.refreshed", &|d| d["token"] = json!("0".repeat(64)));
    fails("session.refresh_token_reused", &|d| {
        d["extra"] = json!(true)
    });
    fails("session.started", &|d| d["refresh"] = json!("rt_plaintext"));
    fails("session.refreshed", &|d| {
        d["refresh"] = json!("0".repeat(63))
    });
    fails("session.started", &|d| d["user_id"] = json!("user_1"));
    fails("session.started", &|d| {
        d["user_agent"] = json!("x".repeat(513))
    });
    fails("session.started", &|d| d["ip"] = json!("x".repeat(65)));
    fails("session.refreshed", &|d| d["generation"] = json!("1"));
}

#[test]
fn email_schemas_reject_malformed_data() {
    let events = emitted_email_events();
    let fails = |t: &str, change: &dyn Fn(&mut Value)| mutation_fails(&events, t, change);
    fails("email.claimed", &|d| d["email"] = json!("a@example.com"));
    fails("email.claimed", &|d| {
        d["user_id"] = json!("sess_01jd8x0000000000000000000a")
    });
    fails("email.released", &|d| d["user_id"] = json!(42));
    fails("email.released", &|d| {
        d.as_object_mut().unwrap().remove("user_id");
    });
}

#[test]
fn signing_key_schemas_reject_private_material_and_malformed_data() {
    let events = emitted_signing_key_events();
    let fails = |t: &str, change: &dyn Fn(&mut Value)| mutation_fails(&events, t, change);
    // A private key has no place in the event, in any field name a JWK or PKCS#8 would use.
    fails("signing_key.issued", &|d| {
        d["d"] = json!("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
    });
    fails("signing_key.issued", &|d| {
        d["private_key"] = json!("MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v")
    });
    fails("signing_key.issued", &|d| d["algorithm"] = json!("HS256"));
    fails("signing_key.issued", &|d| d["algorithm"] = json!("none"));
    fails("signing_key.issued", &|d| d["curve"] = json!("Ed448"));
    fails("signing_key.issued", &|d| d["kid"] = json!("key_1"));
    fails("signing_key.issued", &|d| {
        d["public_key"] = json!("MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg==")
    });
    fails("signing_key.issued", &|d| {
        d.as_object_mut().unwrap().remove("created_at");
    });
}

#[test]
fn ledger_schemas_reject_private_material_and_malformed_data() {
    let events = emitted_ledger_events();
    let fails = |t: &str, change: &dyn Fn(&mut Value)| mutation_fails(&events, t, change);
    fails("ledger.checkpoint_key_issued", &|d| {
        d["private_key"] = json!("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
    });
    fails("ledger.checkpoint_key_issued", &|d| {
        d["key_id"] = json!("ABCD1234")
    });
    fails("ledger.checkpoint_key_issued", &|d| {
        d["verifier_key"] = json!("custodian.local/ledger+0123abcd+short")
    });
    fails("ledger.checkpoint_key_issued", &|d| {
        d.as_object_mut().unwrap().remove("replaces");
    });
    fails("ledger.checkpointed", &|d| d["tree_size"] = json!(0));
    fails("ledger.checkpointed", &|d| d["root_hash"] = json!("00"));
    fails("ledger.checkpointed", &|d| {
        d["time"] = json!("2026-01-01T00:00:00Z")
    });
    fails("ledger.checkpointed", &|d| {
        d.as_object_mut().unwrap().remove("note");
    });
}

#[test]
fn policy_schemas_reject_malformed_data() {
    let (_, events) = emitted_policy_events();
    let fails = |t: &str, change: &dyn Fn(&mut Value)| mutation_fails(&events, t, change);
    // Permissions are `type:action`, each part a lower-case name or `*`.
    fails("grant.created", &|d| d["permission"] = json!("project"));
    fails("grant.created", &|d| {
        d["permission"] = json!("Project:read")
    });
    fails("grant.created", &|d| {
        d["permission"] = json!("project:re ad")
    });
    fails("grant.created", &|d| {
        d["permission"] = json!("project:read:all")
    });
    fails("grant.created", &|d| d["permission"] = json!("**:read"));
    // Closed objects, at every level.
    fails("grant.created", &|d| d["note"] = json!("temporary"));
    fails("grant.created", &|d| {
        d["subject"]["principal"] = json!("user_01jd8x0000000000000000000a")
    });
    fails("grant.created", &|d| d["on"] = json!({"project": "p42"}));
    fails("grant.created", &|d| {
        d["conditions"] = json!({"weekday": "monday"})
    });
    fails("grant.created", &|d| d["conditions"] = json!({}));
    // Effects are allow or deny; nothing is optional but null.
    fails("grant.created", &|d| d["effect"] = json!("maybe"));
    fails("grant.created", &|d| d["effect"] = json!(null));
    fails("grant.created", &|d| {
        d.as_object_mut().unwrap().remove("valid_until");
    });
    fails("grant.created", &|d| d["valid_from"] = json!("2026-01-01"));
    fails("grant.created", &|d| {
        d["id"] = json!("asg_00000000000000000000000001")
    });
    fails("grant.created", &|d| {
        d["on"] = json!({"resource": "project"})
    });
    fails("grant.created", &|d| {
        d["conditions"] = json!({"source_ip": []})
    });
    fails(
        "grant.created",
        &|d| {
            d["conditions"] =
                json!({"time_of_day": {"from": "9:00", "until": "17:00", "time_zone": "UTC"}})
        },
    );
    fails("grant.revoked", &|d| d["reason"] = json!("expired"));
    fails("assignment.created", &|d| d["role"] = json!("Release Lead"));
    fails("assignment.created", &|d| {
        d["migrated_from"] = json!("root")
    });
    fails("assignment.ended", &|d| {
        d["id"] = json!("grant_00000000000000000000000001")
    });
    fails("role.created", &|d| {
        d["parents"] = json!(["viewer", "viewer"])
    });
    fails("role.created", &|d| {
        d["description"] = json!("x".repeat(501))
    });
    fails("role.deleted", &|d| d["parents"] = json!([]));
    fails("catalog.updated", &|d| {
        d["resource_types"]["user"] = json!(["read"])
    });
    fails("catalog.updated", &|d| {
        d["resource_types"]["project"] = json!([])
    });
    fails("group.member_added", &|d| {
        d["resource"] = json!("project/p 42")
    });
    fails("group.member_added", &|d| {
        d["resource"] = json!("project/p\u{1}")
    });
    fails("group.member_removed", &|d| d["group"] = json!("Prod"));
    let decisions = emitted_decision_events();
    let fails =
        |change: &dyn Fn(&mut Value)| mutation_fails(&decisions, "decision.recorded", change);
    fails(&|d| d["decision"] = json!("abstain"));
    fails(&|d| d["position"] = json!(-1));
    fails(&|d| d["matched"] = json!([{"kind": "grant"}]));
    fails(&|d| d["ip"] = json!("not an address"));
}

/// The (type, version) of every event the code knows, as schema file names.
fn known_schema_files() -> BTreeSet<String> {
    custodian_domain::catalog()
        .iter()
        .map(|(t, v)| format!("{t}.v{v}.json"))
        .collect()
}

#[test]
fn every_schema_file_belongs_to_a_known_event_type() {
    let known = known_schema_files();
    for entry in std::fs::read_dir(schemas_dir()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".json") {
            assert!(
                known.contains(&name),
                "schema {name} has no event type in the code"
            );
        }
    }
}

#[test]
fn every_schema_is_a_closed_draft_2020_12_object_named_after_its_file() {
    for file in known_schema_files() {
        let stem = file.strip_suffix(".json").unwrap();
        let (event_type, version) = stem.rsplit_once(".v").unwrap();
        let doc = schema_doc(event_type, version.parse().unwrap());
        assert_eq!(
            doc["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{file}"
        );
        assert_eq!(
            doc["$id"],
            format!("https://custodian.dev/schemas/{file}"),
            "{file}"
        );
        assert_eq!(doc["title"], format!("{event_type} v{version}"), "{file}");
        assert!(
            doc["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{file}"
        );
        assert_eq!(doc["type"], "object", "{file}");
        assert_eq!(doc["additionalProperties"], false, "{file}");
        let properties = doc["properties"].as_object().unwrap();
        for required in doc["required"].as_array().unwrap() {
            assert!(
                properties.contains_key(required.as_str().unwrap()),
                "{file}: required {required} is not a property"
            );
        }
        jsonschema::validator_for(&doc).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}
