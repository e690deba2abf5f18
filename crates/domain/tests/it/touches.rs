//! What each event type touches, one line per type of the catalog: a new event type fails
//! `every_event_type_has_a_decision` until its line is here and `touches` has been taught it.

use std::collections::BTreeSet;

use custodian_domain::touches::{Touches, touches};
use custodian_domain::{
    Actor, ActorKind, EventHash, EventRecord, EventType, NewEvent, StreamName, Timestamp,
};
use serde_json::{Value, json};

const T: &str = "2026-03-01T12:00:00.000000Z";
const HASH: &str = "5f4dcc3b5aa765d61d8327deb882cf995f4dcc3b5aa765d61d8327deb882cf99";

/// One line: the event, and what it touches besides its actor (`u_actor`, a user).
struct Case {
    stream: &'static str,
    event_type: &'static str,
    data: Value,
    principals: &'static [&'static str],
    resources: &'static [&'static str],
    opens: Option<&'static str>,
    continues: Option<&'static str>,
}

fn case(
    stream: &'static str,
    event_type: &'static str,
    data: Value,
    principals: &'static [&'static str],
    resources: &'static [&'static str],
) -> Case {
    Case {
        stream,
        event_type,
        data,
        principals,
        resources,
        opens: None,
        continues: None,
    }
}

fn opens(mut c: Case, object: &'static str) -> Case {
    c.opens = Some(object);
    c
}

fn continues(mut c: Case, object: &'static str) -> Case {
    c.continues = Some(object);
    c
}

const U: &str = "acme/user/user_1";
const USER: &[&str] = &["user_1"];
const USER_R: &[&str] = &["user/user_1"];
const POLICY: &str = "acme/policy/rules";
const NONE: &[&str] = &[];

fn cases() -> Vec<Case> {
    let sealed = "v1.AAAA";
    vec![
        // Tenants: the stream names the tenant.
        case(
            "_system/tenant/acme",
            "tenant.created",
            json!({"name": "Acme", "slug": "acme", "plan": "free"}),
            NONE,
            &["tenant/acme"],
        ),
        case(
            "_system/tenant/acme",
            "tenant.renamed",
            json!({"name": "Acme"}),
            NONE,
            &["tenant/acme"],
        ),
        case(
            "_system/tenant/acme",
            "tenant.plan_changed",
            json!({"plan": "team"}),
            NONE,
            &["tenant/acme"],
        ),
        case(
            "_system/tenant/acme",
            "tenant.suspended",
            json!({"reason": "unpaid"}),
            NONE,
            &["tenant/acme"],
        ),
        case(
            "_system/tenant/acme",
            "tenant.reactivated",
            json!({}),
            NONE,
            &["tenant/acme"],
        ),
        // Users: the stream names the user.
        case(
            U,
            "user.invited",
            json!({"kind": "person", "email": sealed, "name": sealed, "email_index": HASH, "roles": [], "invitation": HASH, "expires_at": T}),
            USER,
            USER_R,
        ),
        case(U, "user.invitation_accepted", json!({}), USER, USER_R),
        case(
            U,
            "user.created",
            json!({"kind": "person", "email": sealed, "name": sealed, "email_index": HASH, "roles": []}),
            USER,
            USER_R,
        ),
        case(
            U,
            "user.profile_updated",
            json!({"name": sealed}),
            USER,
            USER_R,
        ),
        case(U, "user.disabled", json!({"reason": "left"}), USER, USER_R),
        case(U, "user.enabled", json!({}), USER, USER_R),
        case(U, "user.deleted", json!({}), USER, USER_R),
        case(
            U,
            "user.password_set",
            json!({"credential": sealed}),
            USER,
            USER_R,
        ),
        case(
            U,
            "user.password_changed",
            json!({"credential": sealed}),
            USER,
            USER_R,
        ),
        case(
            U,
            "user.password_reset",
            json!({"credential": sealed}),
            USER,
            USER_R,
        ),
        case(
            U,
            "user.password_rehashed",
            json!({"credential": sealed}),
            USER,
            USER_R,
        ),
        case(
            U,
            "user.password_reset_issued",
            json!({"token": HASH, "expires_at": T}),
            USER,
            USER_R,
        ),
        case(
            U,
            "user.mfa_challenge_issued",
            json!({"challenge": HASH, "expires_at": T}),
            USER,
            USER_R,
        ),
        case(
            U,
            "user.logged_in",
            json!({"session_id": "sess_1", "method": "password"}),
            USER,
            &["session/sess_1", "user/user_1"],
        ),
        case(
            U,
            "user.login_failed",
            json!({"reason": "bad_password", "failures": 1}),
            USER,
            USER_R,
        ),
        case(
            U,
            "user.totp_enrollment_started",
            json!({"secret": sealed}),
            USER,
            USER_R,
        ),
        case(U, "user.totp_enabled", json!({"step": 7}), USER, USER_R),
        case(U, "user.totp_disabled", json!({}), USER, USER_R),
        case(
            U,
            "user.recovery_codes_generated",
            json!({"codes": [HASH]}),
            USER,
            USER_R,
        ),
        // Sessions: opened by their start, which names the user.
        opens(
            case(
                "acme/session/sess_1",
                "session.started",
                json!({"user_id": "user_1", "refresh": HASH, "method": "password", "expires_at": T}),
                USER,
                &["session/sess_1"],
            ),
            "session/sess_1",
        ),
        continues(
            case(
                "acme/session/sess_1",
                "session.refreshed",
                json!({"generation": 1, "refresh": HASH}),
                NONE,
                &["session/sess_1"],
            ),
            "session/sess_1",
        ),
        continues(
            case(
                "acme/session/sess_1",
                "session.refresh_token_reused",
                json!({"generation": 0}),
                NONE,
                &["session/sess_1"],
            ),
            "session/sess_1",
        ),
        continues(
            case(
                "acme/session/sess_1",
                "session.revoked",
                json!({"reason": "logout"}),
                NONE,
                &["session/sess_1"],
            ),
            "session/sess_1",
        ),
        // Email reservations: the holder.
        case(
            "acme/email/abc",
            "email.claimed",
            json!({"user_id": "user_1"}),
            USER,
            NONE,
        ),
        case(
            "acme/email/abc",
            "email.released",
            json!({"user_id": "user_1"}),
            USER,
            NONE,
        ),
        // Security observations name addresses and blind indexes, never a principal.
        case(
            "acme/security/ip",
            "security.login_throttled",
            json!({"scope": "ip", "ip": "192.0.2.1", "failures": 5, "until": T}),
            NONE,
            NONE,
        ),
        case(
            "acme/security/unknown",
            "security.unknown_account_login_failed",
            json!({"tenant": "acme", "email_index": HASH}),
            NONE,
            NONE,
        ),
        case(
            "_system/signing_key/kid_1",
            "signing_key.issued",
            json!({"kid": "kid_1", "algorithm": "EdDSA", "curve": "Ed25519", "public_key": "AAAA", "created_at": T}),
            NONE,
            &["signing_key/kid_1"],
        ),
        case(
            "_system/ledger/checkpoints",
            "ledger.checkpoint_key_issued",
            json!({"key_id": "0a1b2c3d", "key_name": "custodian.local/ledger", "verifier_key": "custodian.local/ledger+0a1b2c3d+AQ==", "replaces": null}),
            NONE,
            &["checkpoint_key/0a1b2c3d"],
        ),
        case(
            "_system/ledger/checkpoints",
            "ledger.checkpointed",
            json!({"origin": "custodian.local/ledger", "tree_size": 5, "root_hash": HASH, "time": T, "key_id": "0a1b2c3d", "note": "custodian.local/ledger\n5\nAA==\n\n\u{2014} custodian.local/ledger AA==\n"}),
            NONE,
            &["checkpoint_key/0a1b2c3d"],
        ),
        // The policy.
        case(
            POLICY,
            "catalog.updated",
            json!({"resource_types": {"project": ["read"]}}),
            NONE,
            NONE,
        ),
        case(
            POLICY,
            "role.created",
            json!({"name": "ops", "description": null, "parents": ["viewer"]}),
            NONE,
            &["role/ops", "role/viewer"],
        ),
        case(
            POLICY,
            "role.updated",
            json!({"name": "ops", "description": "x", "parents": []}),
            NONE,
            &["role/ops"],
        ),
        case(
            POLICY,
            "role.deleted",
            json!({"name": "ops"}),
            NONE,
            &["role/ops"],
        ),
        opens(
            case(
                POLICY,
                "grant.created",
                json!({"id": "grant_1", "subject": {"principal": "user_2"}, "permission": "project:read", "on": {"resource": "project/p1"}, "effect": "allow", "granted_by": "u_actor"}),
                &["user_2"],
                &["grant/grant_1", "project/p1"],
            ),
            "grant/grant_1",
        ),
        continues(
            case(
                POLICY,
                "grant.revoked",
                json!({"id": "grant_1", "reason": "revoked"}),
                NONE,
                &["grant/grant_1"],
            ),
            "grant/grant_1",
        ),
        opens(
            case(
                POLICY,
                "assignment.created",
                json!({"id": "asg_1", "principal": "user_2", "role": "ops", "on": {"group": "prod"}, "assigned_by": "u_actor"}),
                &["user_2"],
                &["assignment/asg_1", "group/prod", "role/ops"],
            ),
            "assignment/asg_1",
        ),
        continues(
            case(
                POLICY,
                "assignment.ended",
                json!({"id": "asg_1", "reason": "role_deleted"}),
                NONE,
                &["assignment/asg_1"],
            ),
            "assignment/asg_1",
        ),
        case(
            POLICY,
            "group.member_added",
            json!({"group": "prod", "resource": "project/p1"}),
            NONE,
            &["group/prod", "project/p1"],
        ),
        case(
            POLICY,
            "group.member_removed",
            json!({"group": "prod", "resource": "project/p1"}),
            NONE,
            &["group/prod", "project/p1"],
        ),
        case(
            "acme/decision/log",
            "decision.recorded",
            json!({"principal": "user_2", "permission": "project:read", "resource": "project/p1", "decision": "allow", "reason": "granted", "matched": ["grant_1"], "position": 7}),
            &["user_2"],
            &["project/p1"],
        ),
        // Keys: the key is a principal; its issue names its owner and opens it.
        opens(
            case(
                "acme/key/key_1",
                "key.issued",
                json!({"owner": "user_2", "name": "ci", "scopes": ["project:read"], "on": {"resource_type": "project"}, "hash": HASH, "preview": "cst_abcd…wxyz"}),
                &["key_1", "user_2"],
                &["key/key_1"],
            ),
            "key/key_1",
        ),
        continues(
            case(
                "acme/key/key_1",
                "key.updated",
                json!({"name": "ci2"}),
                &["key_1"],
                &["key/key_1"],
            ),
            "key/key_1",
        ),
        continues(
            case(
                "acme/key/key_1",
                "key.rotated",
                json!({"hash": HASH, "preview": "cst_abcd…wxyz", "previous_valid_until": T}),
                &["key_1"],
                &["key/key_1"],
            ),
            "key/key_1",
        ),
        continues(
            case(
                "acme/key/key_1",
                "key.revoked",
                json!({}),
                &["key_1"],
                &["key/key_1"],
            ),
            "key/key_1",
        ),
        continues(
            case(
                "acme/key/key_1",
                "key.used",
                json!({"window_start": T, "uses": 3, "cost": 3, "first_used_at": T, "last_used_at": T}),
                &["key_1"],
                &["key/key_1"],
            ),
            "key/key_1",
        ),
        // Usage: the subject that consumed; limits and totals are the tenant's.
        case(
            "acme/usage/2026-03",
            "usage.recorded",
            json!({"period": "2026-03", "window": T, "subject": "key_1", "meter": "calls", "quantity": 1, "records": 1, "cost": 0, "idempotency_keys": ["a"]}),
            &["key_1"],
            NONE,
        ),
        case(
            "acme/usage/2026-03",
            "quota.exceeded",
            json!({"period": "2026-03", "window": T, "subject": "user_2", "meter": "calls", "refused": 1, "quantity": 1, "limit": 10}),
            &["user_2"],
            NONE,
        ),
        case(
            "acme/usage/2026-03",
            "quota.warning",
            json!({"period": "2026-03", "meter": "calls", "used": 10, "limit": 10}),
            NONE,
            NONE,
        ),
        case(
            "acme/usage/2026-03",
            "budget.threshold_crossed",
            json!({"period": "2026-03", "threshold": 50, "spent": 5, "budget": 10}),
            NONE,
            NONE,
        ),
        case(
            "acme/quota/limits",
            "quota.set",
            json!({"meter": "calls", "limit": 10, "hard": true}),
            NONE,
            NONE,
        ),
        case(
            "acme/quota/limits",
            "quota.cleared",
            json!({"meter": "calls"}),
            NONE,
            NONE,
        ),
        case(
            "acme/quota/limits",
            "meter.cost_set",
            json!({"meter": "calls", "unit_cost": 5}),
            NONE,
            NONE,
        ),
        case(
            "acme/quota/limits",
            "budget.set",
            json!({"amount": 10}),
            NONE,
            NONE,
        ),
    ]
}

fn record(stream: &str, event_type: &str, data: Value, actor: Actor) -> EventRecord {
    EventRecord::seal(
        1,
        StreamName::parse(stream).unwrap(),
        1,
        EventHash::ZERO,
        NewEvent {
            id: uuid::Uuid::now_v7(),
            event_type: EventType::parse(event_type).unwrap(),
            schema: 1,
            actor,
            occurred_at: Timestamp::parse(T).unwrap(),
            correlation_id: None,
            causation_id: None,
            data,
        },
    )
    .unwrap()
}

fn user_actor() -> Actor {
    Actor {
        kind: ActorKind::User,
        id: "u_actor".to_owned(),
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn every_event_type_has_a_decision() {
    let decided: BTreeSet<&str> = cases().iter().map(|c| c.event_type).collect();
    let catalog: BTreeSet<&str> = custodian_domain::catalog()
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    let missing: Vec<_> = catalog.difference(&decided).collect();
    assert!(
        missing.is_empty(),
        "add a line to this table, and teach touches, for {missing:?}"
    );
    let unknown: Vec<_> = decided.difference(&catalog).collect();
    assert!(unknown.is_empty(), "not in the catalog: {unknown:?}");
}

#[test]
fn each_event_type_touches_its_actor_and_subjects() {
    for c in cases() {
        let r = record(c.stream, c.event_type, c.data.clone(), user_actor());
        // The line's data must be a real event of its type, or the line proves nothing.
        assert!(
            custodian_domain::catalog()
                .iter()
                .any(|(t, v)| *t == c.event_type && *v == 1),
            "{}",
            c.event_type
        );
        let got = touches(&r);
        let expected = Touches {
            actor: Some("u_actor".to_owned()),
            principals: set(c.principals),
            resources: set(c.resources),
            opens: c.opens.map(str::to_owned),
            continues: c.continues.map(str::to_owned),
        };
        assert_eq!(got, expected, "{}", c.event_type);
        assert!(got.touches_principal("u_actor"), "{}", c.event_type);
    }
}

#[test]
fn each_line_decodes_as_its_type() {
    use custodian_domain::DomainEvent;
    use custodian_domain::policy::{DecisionEvent, PolicyEvent};
    fn decodes<E: DomainEvent>(t: &str, data: &Value) -> Option<bool> {
        E::TYPES
            .iter()
            .any(|(n, _)| *n == t)
            .then(|| E::decode(t, 1, data).is_ok())
    }
    for c in cases() {
        let t = c.event_type;
        let d = &c.data;
        let ok = decodes::<custodian_domain::tenant::TenantEvent>(t, d)
            .or_else(|| decodes::<custodian_domain::user::UserEvent>(t, d))
            .or_else(|| decodes::<custodian_domain::session::SessionEvent>(t, d))
            .or_else(|| decodes::<custodian_domain::email::EmailEvent>(t, d))
            .or_else(|| decodes::<custodian_domain::security::SecurityEvent>(t, d))
            .or_else(|| decodes::<custodian_domain::signing_key::SigningKeyEvent>(t, d))
            .or_else(|| decodes::<custodian_domain::ledger::LedgerEvent>(t, d))
            .or_else(|| decodes::<PolicyEvent>(t, d))
            .or_else(|| decodes::<DecisionEvent>(t, d))
            .or_else(|| decodes::<custodian_domain::key::KeyEvent>(t, d))
            .or_else(|| decodes::<custodian_domain::usage::UsageEvent>(t, d));
        assert_eq!(ok, Some(true), "the line of {t} does not decode");
    }
}

#[test]
fn the_ledger_itself_is_no_principal_but_a_service_is() {
    let r = record(U, "user.enabled", json!({}), Actor::system());
    assert_eq!(touches(&r).actor, None);
    let r = record(
        U,
        "user.enabled",
        json!({}),
        Actor {
            kind: ActorKind::Service,
            id: "svc_1".into(),
        },
    );
    assert!(touches(&r).touches_principal("svc_1"));
    assert!(!touches(&r).touches_principal("custodian"));
}

#[test]
fn an_event_of_an_unknown_type_touches_its_actor_and_stream_subject() {
    let r = record(U, "user.teleported", json!({"to": "mars"}), user_actor());
    let t = touches(&r);
    assert_eq!(t.actor.as_deref(), Some("u_actor"));
    assert_eq!(t.principals, set(USER));
    assert_eq!(t.resources, set(USER_R));
}

#[test]
fn a_grant_to_a_role_touches_the_role_and_a_type_scope_no_resource() {
    let r = record(
        POLICY,
        "grant.created",
        json!({"id": "grant_2", "subject": {"role": "ops"}, "permission": "project:read", "on": {"resource_type": "project"}, "effect": "deny", "granted_by": "u_actor"}),
        user_actor(),
    );
    let t = touches(&r);
    assert!(t.principals.is_empty());
    assert_eq!(t.resources, set(&["grant/grant_2", "role/ops"]));
    assert!(t.touches_resource("role/ops"));
}
