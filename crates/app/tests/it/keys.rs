//! API keys: issued once in full, verified in memory with a code for every refusal, rotated with
//! a grace that ends to the second, limited to scopes their creator holds, authenticating as their
//! owner within those scopes, and their usage recorded per minute and at shutdown.

use custodian_app::keys::verify::{self, VerifyCode, VerifyRequest};
use custodian_app::keys::{
    self, CreateKeyRequest, KeyListQuery, KeyScopeBody, RotateKeyRequest, UpdateKeyRequest,
    UsageLimitBody,
};
use custodian_app::{AppError, Clock as _, Principal, access};
use custodian_domain::key::KeyEvent;
use custodian_domain::policy::Target;
use custodian_domain::tenant::TenantCommand;
use custodian_domain::user::UserCommand;
use custodian_domain::{DomainEvent as _, EventRecord};

use crate::support::{Member, TestApp};

/// A tenant `acme` whose member Ada is an admin, and a developer of `acme` who verifies keys.
struct World {
    t: TestApp,
    ada: Member,
    gateway: Principal,
}

async fn world() -> World {
    let t = TestApp::new().await;
    let ada = t.member("acme").await;
    t.assign("acme", &ada.user_id, "admin").await;
    let dev = t.user_with_roles("acme", &[]).await;
    t.assign("acme", &dev, "developer").await;
    let gateway = t.principal("acme", &dev, "sess_gateway").await;
    World { t, ada, gateway }
}

fn request(scopes: &[&str]) -> CreateKeyRequest {
    CreateKeyRequest {
        name: "deploy bot".into(),
        owner: None,
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        on: None,
        expires_at: None,
        ip_allowlist: None,
        ratelimit: None,
        usage_limit: None,
    }
}

/// A request for a key with the scope `key:read` and `remaining` units of usage, refilled as
/// `refill` says.
fn metered(remaining: u64, refill: Option<keys::RefillBody>) -> CreateKeyRequest {
    CreateKeyRequest {
        usage_limit: Some(UsageLimitBody { remaining, refill }),
        ..request(&["key:read"])
    }
}

fn verifying(key: &str) -> VerifyRequest {
    VerifyRequest {
        key: key.to_owned(),
        permission: None,
        resource: None,
        cost: None,
        ip: None,
    }
}

impl World {
    async fn ada(&self) -> Principal {
        self.t.as_member(&self.ada).await
    }

    async fn issue(&self, req: CreateKeyRequest) -> keys::IssuedKey {
        keys::create_key(&self.t.app, &self.ada().await, "acme", req)
            .await
            .unwrap()
    }

    async fn code(&self, req: VerifyRequest) -> VerifyCode {
        verify::verify(&self.t.app, &self.gateway, req)
            .await
            .unwrap()
            .code
    }
}

fn has_text(records: &[EventRecord], needle: &str) -> bool {
    records
        .iter()
        .any(|r| serde_json::to_string(r).unwrap().contains(needle))
}

#[tokio::test]
async fn a_key_is_shown_once_and_the_log_and_the_views_hold_only_its_hash_and_preview() {
    let w = world().await;
    let issued = w.issue(request(&["key:read"])).await;
    assert!(issued.key.starts_with("cst_") && issued.key.len() == 40);
    assert_eq!(
        issued.preview,
        format!("cst_{}…{}", &issued.key[4..8], &issued.key[36..])
    );
    let rotated = keys::rotate_key(
        &w.t.app,
        &w.ada().await,
        "acme",
        &issued.id,
        RotateKeyRequest {
            grace_seconds: Some(60),
        },
    )
    .await
    .unwrap();
    assert_eq!(rotated.id, issued.id, "rotation keeps the key's id");
    assert_ne!(rotated.key, issued.key);
    w.t.views_caught_up().await;
    let everything = w.t.events_after(0).await;
    for secret in [&issued.key, &rotated.key] {
        assert!(!has_text(&everything, secret), "a full key is in the log");
        assert!(
            !has_text(&everything, &secret[4..34]),
            "a random part is in the log"
        );
    }
    let page = keys::list_keys(&w.t.app, &w.ada().await, "acme", KeyListQuery::default())
        .await
        .unwrap();
    let listed = serde_json::to_string(&page).unwrap();
    assert!(!listed.contains(&issued.key) && !listed.contains(&rotated.key));
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].preview, rotated.preview);
    let one = keys::get_key(&w.t.app, &w.ada().await, "acme", &issued.id)
        .await
        .unwrap();
    assert_eq!(one.status, "active");
    assert!(one.rotated_at.is_some());
}

#[tokio::test]
async fn a_one_character_typo_is_refused_by_the_checksum_without_a_lookup() {
    let w = world().await;
    let issued = w.issue(request(&["key:read"])).await;
    let mut typo = issued.key.clone();
    let c = if typo.ends_with('A') { "B" } else { "A" };
    typo.replace_range(39..40, c);
    let lookups = w.t.app.keys.index.lookups();
    assert_eq!(w.code(verifying(&typo)).await, VerifyCode::Malformed);
    let e = custodian_app::identity::authenticate(&w.t.app, &typo)
        .await
        .unwrap_err();
    assert!(matches!(e, AppError::Unauthenticated(_)), "{e:?}");
    assert_eq!(
        w.t.app.keys.index.lookups(),
        lookups,
        "a mistyped key must not be looked up"
    );
    assert_eq!(w.code(verifying(&issued.key)).await, VerifyCode::Valid);
    assert_eq!(w.t.app.keys.index.lookups(), lookups + 1);
}

#[tokio::test]
async fn revoked_expired_wrong_address_used_up_and_forbidden_keys_each_get_their_code() {
    let w = world().await;
    let revoked = w.issue(request(&["key:read"])).await;
    keys::revoke_key(&w.t.app, &w.ada().await, "acme", &revoked.id)
        .await
        .unwrap();
    assert_eq!(w.code(verifying(&revoked.key)).await, VerifyCode::Revoked);

    let mut expiring = request(&["key:read"]);
    expiring.expires_at = Some("2026-03-01T12:10:00Z".into());
    let expiring = w.issue(expiring).await;
    assert_eq!(w.code(verifying(&expiring.key)).await, VerifyCode::Valid);

    let mut fenced = request(&["key:read"]);
    fenced.ip_allowlist = Some(vec!["10.0.0.0/8".into()]);
    let fenced = w.issue(fenced).await;
    let from = |ip: Option<&str>| VerifyRequest {
        ip: ip.map(str::to_owned),
        ..verifying(&fenced.key)
    };
    assert_eq!(w.code(from(Some("10.1.2.3"))).await, VerifyCode::Valid);
    assert_eq!(
        w.code(from(Some("::ffff:10.1.2.3"))).await,
        VerifyCode::Valid,
        "an IPv4-mapped address is its IPv4 address"
    );
    assert_eq!(
        w.code(from(Some("192.0.2.1"))).await,
        VerifyCode::IpNotAllowed
    );
    // Without `ip` the address the key was presented from is unknown: the verifier's own
    // address is a gateway's, not the key holder's, so an allowlisted key is refused.
    assert_eq!(w.code(from(None)).await, VerifyCode::IpNotAllowed);

    let metered = w.issue(metered(3, None)).await;
    let costing = |cost| VerifyRequest {
        cost: Some(cost),
        ..verifying(&metered.key)
    };
    let answer = verify::verify(&w.t.app, &w.gateway, costing(2))
        .await
        .unwrap();
    assert_eq!(
        (answer.code, answer.remaining),
        (VerifyCode::Valid, Some(1))
    );
    let answer = verify::verify(&w.t.app, &w.gateway, costing(2))
        .await
        .unwrap();
    assert_eq!(
        (answer.code, answer.remaining),
        (VerifyCode::UsageExceeded, Some(1)),
        "a refused use takes nothing"
    );
    assert_eq!(w.code(costing(0)).await, VerifyCode::Valid);
    assert_eq!(w.code(costing(1)).await, VerifyCode::Valid);
    assert_eq!(w.code(costing(1)).await, VerifyCode::UsageExceeded);

    let asking = |permission: &str, resource: Option<&str>| VerifyRequest {
        permission: Some(permission.to_owned()),
        resource: resource.map(str::to_owned),
        ..verifying(&expiring.key)
    };
    assert_eq!(w.code(asking("key:read", None)).await, VerifyCode::Valid);
    assert_eq!(
        w.code(asking("user:read", None)).await,
        VerifyCode::Forbidden,
        "the owner may read users, the key's scopes do not cover it"
    );
    assert_eq!(
        w.code(asking("key:read", Some("key/key_x"))).await,
        VerifyCode::Valid
    );

    w.t.advance(600);
    assert_eq!(w.code(verifying(&expiring.key)).await, VerifyCode::Expired);
    assert_eq!(
        w.code(verifying("cst_000000000000000000000000000000000000"))
            .await,
        VerifyCode::Malformed
    );
    let unknown = keys::generate();
    assert_eq!(w.code(verifying(&unknown)).await, VerifyCode::NotFound);
}

#[tokio::test]
async fn a_suspended_tenant_and_a_disabled_owner_stop_their_keys() {
    let w = world().await;
    let issued = w.issue(request(&["key:read"])).await;
    let root = w.t.root().await;
    let by_root = |key: &str| {
        let app = w.t.app.clone();
        let root = root.clone();
        let req = verifying(key);
        async move { verify::verify(&app, &root, req).await.unwrap().code }
    };
    assert_eq!(by_root(&issued.key).await, VerifyCode::Valid);

    w.t.user_command(
        "acme",
        &w.ada.user_id,
        UserCommand::Disable {
            reason: "left".into(),
        },
    )
    .await;
    w.t.app.security.index.catch_up().await.unwrap();
    assert_eq!(
        w.code(verifying(&issued.key)).await,
        VerifyCode::DisabledOwner
    );
    let e = custodian_app::identity::authenticate(&w.t.app, &issued.key)
        .await
        .unwrap_err();
    assert!(matches!(e, AppError::Unauthenticated(_)), "{e:?}");
    w.t.user_command("acme", &w.ada.user_id, UserCommand::Enable)
        .await;

    w.t.tenant_command(
        "acme",
        TenantCommand::Suspend {
            reason: "unpaid".into(),
        },
    )
    .await;
    assert_eq!(
        by_root(&issued.key).await,
        VerifyCode::TenantSuspended,
        "a verifier of _system sees why"
    );
    w.t.tenant_command("acme", TenantCommand::Reactivate).await;
    assert_eq!(by_root(&issued.key).await, VerifyCode::Valid);
}

#[tokio::test]
async fn rotation_grace_ends_to_the_second() {
    let w = world().await;
    let old = w.issue(request(&["key:read"])).await;
    let new = keys::rotate_key(
        &w.t.app,
        &w.ada().await,
        "acme",
        &old.id,
        RotateKeyRequest {
            grace_seconds: Some(90),
        },
    )
    .await
    .unwrap();
    w.t.advance(89);
    assert_eq!(w.code(verifying(&old.key)).await, VerifyCode::Valid);
    w.t.clock.advance(time::Duration::milliseconds(999));
    assert_eq!(
        w.code(verifying(&old.key)).await,
        VerifyCode::Valid,
        "89.999 s after"
    );
    w.t.clock.advance(time::Duration::milliseconds(1));
    assert_eq!(
        w.code(verifying(&old.key)).await,
        VerifyCode::Expired,
        "90 s after: the grace is over"
    );
    assert_eq!(w.code(verifying(&new.key)).await, VerifyCode::Valid);

    // Rotating again ends the first secret's standing for good, and gives no grace by default.
    let newer = keys::rotate_key(
        &w.t.app,
        &w.ada().await,
        "acme",
        &old.id,
        RotateKeyRequest::default(),
    )
    .await
    .unwrap();
    assert_eq!(w.code(verifying(&new.key)).await, VerifyCode::Expired);
    assert_eq!(w.code(verifying(&old.key)).await, VerifyCode::Expired);
    assert_eq!(w.code(verifying(&newer.key)).await, VerifyCode::Valid);
}

#[tokio::test]
async fn a_key_can_never_hold_a_scope_its_creator_lacks() {
    let w = world().await;
    let viewer = w.t.user_with_roles("acme", &[]).await;
    w.t.assign("acme", &viewer, "developer").await;
    let developer = w.t.principal("acme", &viewer, "sess_dev").await;
    // (scopes asked, on, what is missing): a developer holds key:create and the viewer's reads,
    // not user:create, nor anything outside the catalog.
    let cases: &[(&[&str], Option<KeyScopeBody>, &[&str])] = &[
        (&["key:read"], None, &[]),
        (&["key:read", "key:verify", "user:read"], None, &[]),
        (&["user:create"], None, &["user:create"]),
        (
            &["key:read", "user:create", "role:*"],
            None,
            &["user:create", "role:*"],
        ),
        (&["*:*"], None, &["*:*"]),
        (&["key:*"], None, &["key:*"]),
        (
            &["key:read"],
            Some(KeyScopeBody::ResourceType("key".into())),
            &[],
        ),
        (
            &["grant:create"],
            Some(KeyScopeBody::Resource("project/p1".into())),
            &["grant:create"],
        ),
    ];
    for (scopes, on, missing) in cases {
        let mut req = request(scopes);
        req.on = on.clone();
        let r = keys::create_key(&w.t.app, &developer, "acme", req).await;
        match r {
            Ok(k) => assert!(missing.is_empty(), "{scopes:?} issued {}", k.id),
            Err(AppError::MissingScopes { missing: m, detail }) => {
                assert_eq!(m, *missing, "{scopes:?}");
                for s in *missing {
                    assert!(detail.contains(s), "{detail}");
                }
            }
            Err(e) => panic!("{scopes:?}: {e:?}"),
        }
    }
    let e = keys::create_key(&w.t.app, &developer, "acme", request(&["project:deploy"]))
        .await
        .unwrap_err();
    assert!(matches!(e, AppError::UnknownPermission { .. }), "{e:?}");

    // A key cannot issue a key with more than itself: its scopes bound what it holds.
    let own = w.issue(request(&["key:create", "key:read"])).await;
    let as_key = custodian_app::identity::authenticate(&w.t.app, &own.key)
        .await
        .unwrap();
    let e = keys::create_key(&w.t.app, &as_key, "acme", request(&["user:read"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, AppError::MissingScopes { missing, .. } if missing == &["user:read"]),
        "{e:?}"
    );
    keys::create_key(&w.t.app, &as_key, "acme", request(&["key:read"]))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_key_authenticates_as_its_owner_limited_to_its_scopes() {
    let w = world().await;
    let issued = w.issue(request(&["key:read", "user:read"])).await;
    let p = custodian_app::identity::authenticate(&w.t.app, &issued.key)
        .await
        .unwrap();
    assert_eq!(p.user_id, w.ada.user_id);
    assert_eq!(p.actor().id, issued.id);
    assert_eq!(p.actor().kind, custodian_domain::ActorKind::ApiKey);
    access::authorize(&w.t.app, &p, "acme", "key:read", Target::Tenant).unwrap();
    let e = access::authorize(&w.t.app, &p, "acme", "key:create", Target::Tenant).unwrap_err();
    assert!(matches!(e, AppError::Forbidden(_)), "{e:?}");
    let e = keys::create_key(&w.t.app, &p, "acme", request(&["key:read"]))
        .await
        .unwrap_err();
    assert!(matches!(e, AppError::Forbidden(_)), "{e:?}");
    // Session-bound use cases refuse a key.
    let e = custodian_app::sessions::logout(&w.t.app, &p)
        .await
        .unwrap_err();
    assert!(matches!(e, AppError::Forbidden(_)), "{e:?}");
    let e = custodian_app::mfa::enroll(&w.t.app, &p).await.unwrap_err();
    assert!(matches!(e, AppError::Forbidden(_)), "{e:?}");

    // Even a platform administrator's key is limited to its scopes.
    let root = w.t.root().await;
    let mut mine = request(&["tenant:read"]);
    mine.owner = None;
    let root_key = keys::create_key(&w.t.app, &root, "_system", mine)
        .await
        .unwrap();
    let p = custodian_app::identity::authenticate(&w.t.app, &root_key.key)
        .await
        .unwrap();
    assert!(p.is_platform_admin());
    access::authorize(&w.t.app, &p, "acme", "tenant:read", Target::Tenant).unwrap();
    let e = access::authorize(&w.t.app, &p, "acme", "user:delete", Target::Tenant).unwrap_err();
    assert!(matches!(e, AppError::Forbidden(_)), "{e:?}");

    // A revoked key stops authenticating at once.
    keys::revoke_key(&w.t.app, &w.ada().await, "acme", &issued.id)
        .await
        .unwrap();
    let e = custodian_app::identity::authenticate(&w.t.app, &issued.key)
        .await
        .unwrap_err();
    assert!(matches!(e, AppError::Unauthenticated(_)), "{e:?}");
}

#[tokio::test]
async fn another_tenants_key_is_not_found_and_verifying_needs_the_permission() {
    let w = world().await;
    let issued = w.issue(request(&["key:read"])).await;
    let globex = w.t.member("globex").await;
    let other = w.t.user_with_roles("globex", &[]).await;
    w.t.assign("globex", &other, "developer").await;
    let other = w.t.principal("globex", &other, "sess_other").await;
    let answer = verify::verify(&w.t.app, &other, verifying(&issued.key))
        .await
        .unwrap();
    assert_eq!(answer.code, VerifyCode::NotFound);
    assert_eq!(answer.key_id, None, "nothing about the key leaks");
    // Without key:verify anywhere: 403.
    let plain = w.t.as_member(&globex).await;
    let e = verify::verify(&w.t.app, &plain, verifying(&issued.key))
        .await
        .unwrap_err();
    assert!(matches!(e, AppError::Forbidden(_)), "{e:?}");
    // A platform-wide gateway sees it.
    let root = w.t.root().await;
    let answer = verify::verify(&w.t.app, &root, verifying(&issued.key))
        .await
        .unwrap();
    assert_eq!(answer.code, VerifyCode::Valid);
    assert_eq!(answer.tenant.as_deref(), Some("acme"));
    assert_eq!(answer.owner.as_deref(), Some(w.ada.user_id.as_str()));
    assert_eq!(answer.scopes, Some(vec!["key:read".to_owned()]));
    // Another tenant's key, by id, does not exist for acme's administrator.
    let e = keys::get_key(&w.t.app, &w.t.as_member(&globex).await, "acme", &issued.id)
        .await
        .unwrap_err();
    assert!(matches!(e, AppError::NotFound(_)), "{e:?}");
}

fn used(records: &[EventRecord]) -> Vec<KeyEvent> {
    records
        .iter()
        .filter(|r| r.event_type.as_str() == "key.used")
        .map(|r| KeyEvent::decode(r.event_type.as_str(), r.schema, &r.data).unwrap())
        .collect()
}

#[tokio::test]
async fn usage_is_recorded_once_per_key_per_minute_and_what_is_open_at_shutdown() {
    let w = world().await;
    let issued = w.issue(metered(100, None)).await;
    for _ in 0..5 {
        assert_eq!(w.code(verifying(&issued.key)).await, VerifyCode::Valid);
    }
    // The minute is not over: nothing is written yet.
    assert_eq!(w.t.app.keys.recorder.record(false).await, 0);
    w.t.advance(60);
    assert_eq!(w.code(verifying(&issued.key)).await, VerifyCode::Valid);
    custodian_app::identity::authenticate(&w.t.app, &issued.key)
        .await
        .unwrap();
    assert_eq!(w.t.app.keys.recorder.record(false).await, 1);
    let stream = w.t.stream_events("acme", "key", &issued.id).await;
    match used(&stream).as_slice() {
        [
            KeyEvent::Used {
                uses, remaining, ..
            },
        ] => assert_eq!((*uses, *remaining), (5, Some(95))),
        other => panic!("{other:?}"),
    }
    // At shutdown the open minute is written too.
    w.t.shut_down();
    w.t.app.keys.stopped().await;
    let stream = w.t.stream_events("acme", "key", &issued.id).await;
    match used(&stream).as_slice() {
        [
            _,
            KeyEvent::Used {
                uses, remaining, ..
            },
        ] => assert_eq!((*uses, *remaining), (2, Some(93))),
        other => panic!("{other:?}"),
    }
    assert_eq!(w.t.app.keys.index.pending(), 0);
}

#[tokio::test]
async fn a_usage_limit_refills_every_interval_and_an_update_starts_it_over() {
    let w = world().await;
    let refill = keys::RefillBody {
        amount: 2,
        interval_seconds: 3600,
    };
    let issued = w.issue(metered(1, Some(refill))).await;
    assert_eq!(w.code(verifying(&issued.key)).await, VerifyCode::Valid);
    assert_eq!(
        w.code(verifying(&issued.key)).await,
        VerifyCode::UsageExceeded
    );
    w.t.advance(3600);
    assert_eq!(w.code(verifying(&issued.key)).await, VerifyCode::Valid);
    assert_eq!(w.code(verifying(&issued.key)).await, VerifyCode::Valid);
    assert_eq!(
        w.code(verifying(&issued.key)).await,
        VerifyCode::UsageExceeded
    );
    keys::update_key(
        &w.t.app,
        &w.ada().await,
        "acme",
        &issued.id,
        UpdateKeyRequest {
            usage_limit: Some(Some(UsageLimitBody {
                remaining: 1,
                refill: None,
            })),
            ..UpdateKeyRequest::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(w.code(verifying(&issued.key)).await, VerifyCode::Valid);
    assert_eq!(
        w.code(verifying(&issued.key)).await,
        VerifyCode::UsageExceeded
    );
    keys::update_key(
        &w.t.app,
        &w.ada().await,
        "acme",
        &issued.id,
        UpdateKeyRequest {
            usage_limit: Some(None),
            ..UpdateKeyRequest::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(w.code(verifying(&issued.key)).await, VerifyCode::Valid);
}

#[tokio::test]
async fn listings_filter_keys_by_owner_and_status() {
    let w = world().await;
    let a = w.issue(request(&["key:read"])).await;
    let b = w.issue(request(&["key:read"])).await;
    let mut short = request(&["key:read"]);
    short.expires_at = Some("2026-03-01T12:30:00Z".into());
    let c = w.issue(short).await;
    let other = w.t.user_with_roles("acme", &[]).await;
    let mut theirs = request(&["key:read"]);
    theirs.owner = Some(other.clone());
    let d = w.issue(theirs).await;
    keys::revoke_key(&w.t.app, &w.ada().await, "acme", &b.id)
        .await
        .unwrap();
    w.t.advance(3600);
    w.t.views_caught_up().await;
    let ada = w.ada().await;
    let list = |owner: Option<&str>, status: Option<&str>| {
        let app = w.t.app.clone();
        let q = KeyListQuery {
            owner: owner.map(str::to_owned),
            status: status.map(str::to_owned),
            ..KeyListQuery::default()
        };
        let p = ada.clone();
        async move {
            keys::list_keys(&app, &p, "acme", q)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|k| (k.id, k.status))
                .collect::<Vec<_>>()
        }
    };
    let ids = |v: &[(String, String)]| v.iter().map(|(i, _)| i.clone()).collect::<Vec<_>>();
    assert_eq!(
        ids(&list(None, Some("active")).await),
        [a.id.clone(), d.id.clone()]
    );
    assert_eq!(
        list(None, Some("revoked")).await,
        [(b.id.clone(), "revoked".into())]
    );
    assert_eq!(
        list(None, Some("expired")).await,
        [(c.id.clone(), "expired".into())]
    );
    assert_eq!(
        ids(&list(Some(&other), None).await),
        std::slice::from_ref(&d.id)
    );
    assert_eq!(list(None, None).await.len(), 4);
    let e = keys::list_keys(
        &w.t.app,
        &w.ada().await,
        "acme",
        KeyListQuery {
            status: Some("asleep".into()),
            ..KeyListQuery::default()
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(e, AppError::Invalid(_)), "{e:?}");
}

/// Scopes a creator may ask for: concrete permissions, patterns, and some no built-in role holds.
const POOL: &[&str] = &[
    "key:read",
    "key:create",
    "key:verify",
    "key:delete",
    "key:*",
    "user:read",
    "user:create",
    "user:delete",
    "grant:create",
    "role:*",
    "tenant:read",
    "tenant:update",
    "usage:create",
    "audit:export",
    "*:read",
    "*:*",
];

/// Concrete permissions a key's rights are compared on.
const CONCRETE: &[&str] = &[
    "key:read",
    "key:create",
    "key:verify",
    "key:delete",
    "key:rotate",
    "user:read",
    "user:create",
    "user:delete",
    "grant:create",
    "role:update",
    "tenant:read",
    "tenant:update",
    "usage:create",
    "audit:export",
    "quota:read",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatever_is_asked_a_key_never_holds_what_its_creator_lacks() {
    use custodian_domain::policy::{Permission, Resource};
    use proptest::prelude::*;
    use proptest::test_runner::{RngSeed, TestRunner};

    let w = world().await;
    let mut creators = Vec::new();
    for role in ["viewer", "developer", "manager", "admin"] {
        let u = w.t.user_with_roles("acme", &[]).await;
        w.t.assign("acme", &u, role).await;
        creators.push(w.t.principal("acme", &u, "sess_creator").await);
    }
    let ada = w.ada().await;
    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 40,
        rng_seed: RngSeed::Fixed(0x6b65_7973),
        failure_persistence: None,
        max_shrink_iters: 32,
        ..ProptestConfig::default()
    });
    let case = (
        0..creators.len(),
        proptest::sample::subsequence(POOL, 1..5),
        0..3usize,
        any::<bool>(),
    );
    let item = Resource::parse("key/key_x").unwrap();
    let targets = [Target::Tenant, Target::Type("key"), Target::Resource(&item)];
    let result = tokio::task::block_in_place(|| {
        runner.run(&case, |(c, scopes, on, owned_by_ada)| {
            handle.block_on(async {
                let creator = &creators[c];
                let on_body = match on {
                    0 => None,
                    1 => Some(KeyScopeBody::ResourceType("key".into())),
                    _ => Some(KeyScopeBody::Resource("key/key_x".into())),
                };
                let on_target = targets[on];
                let mut req = request(&scopes);
                req.on = on_body;
                if owned_by_ada {
                    req.owner = Some(w.ada.user_id.clone());
                }
                let held = |p: &Principal, s: &str, t: Target<'_>| {
                    access::holds(&w.t.app, p, "acme", &Permission::parse(s).unwrap(), t).unwrap()
                };
                match keys::create_key(&w.t.app, creator, "acme", req).await {
                    Ok(made) => {
                        for s in &scopes {
                            prop_assert!(held(creator, s, on_target), "{s} issued unheld");
                        }
                        let as_key = custodian_app::identity::authenticate(&w.t.app, &made.key)
                            .await
                            .unwrap();
                        for p in CONCRETE {
                            for t in targets {
                                if held(&as_key, p, t) {
                                    prop_assert!(
                                        held(creator, p, t),
                                        "the key holds {p} on {t:?}, its creator does not"
                                    );
                                    prop_assert!(held(&ada, p, t) || !owned_by_ada);
                                }
                            }
                        }
                    }
                    Err(AppError::MissingScopes { missing, .. }) => {
                        prop_assert!(!missing.is_empty());
                        for m in &missing {
                            prop_assert!(scopes.contains(&m.as_str()));
                            prop_assert!(!held(creator, m, on_target), "{m} refused but held");
                        }
                    }
                    Err(AppError::Forbidden(_)) => {
                        // The viewer may not create keys at all.
                        prop_assert!(!held(creator, "key:create", Target::Tenant));
                    }
                    Err(e) => prop_assert!(false, "{e:?}"),
                }
                Ok(())
            })
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[tokio::test]
async fn a_restarted_index_takes_the_usage_left_from_the_recorded_windows() {
    let w = world().await;
    let issued = w.issue(metered(10, None)).await;
    for _ in 0..3 {
        assert_eq!(w.code(verifying(&issued.key)).await, VerifyCode::Valid);
    }
    w.t.advance(60);
    assert_eq!(w.t.app.keys.recorder.record(false).await, 1);
    // A new index on the same log, as after a restart: it replays the issue and the recorded
    // window, not the counters of the process that wrote them.
    let fresh = keys::KeyIndex::start(
        w.t.app.store.clone(),
        None,
        std::time::Duration::from_secs(5),
        w.t.app.clock.clone(),
        tokio_util::sync::CancellationToken::new(),
    );
    fresh.catch_up().await.unwrap();
    let entry = fresh.get(&issued.id).unwrap();
    assert_eq!(fresh.remaining(&entry, w.t.clock.now()), Some(7));
    assert_eq!(fresh.consume(&entry, 7, w.t.clock.now()), Ok(Some(0)));
    assert!(fresh.consume(&entry, 1, w.t.clock.now()).is_err());
}

#[tokio::test]
async fn a_key_over_its_rate_limit_is_rate_limited_takes_no_usage_and_passes_again_in_time() {
    let w = world().await;
    let limited = CreateKeyRequest {
        ratelimit: Some(keys::RateLimitBody {
            limit: 2,
            window_seconds: 60,
        }),
        ..metered(10, None)
    };
    let limited = w.issue(limited).await;
    let verify = || async {
        verify::verify(&w.t.app, &w.gateway, verifying(&limited.key))
            .await
            .unwrap()
    };
    for (left, reset) in [(1, 30), (0, 60)] {
        let answer = verify().await;
        assert_eq!(answer.code, VerifyCode::Valid);
        let state = answer.ratelimit.unwrap();
        assert_eq!(
            (state.limit, state.remaining, state.reset),
            (2, left, reset)
        );
    }
    let refused = verify().await;
    assert_eq!(refused.code, VerifyCode::RateLimited);
    assert!(!refused.valid);
    assert_eq!(refused.remaining, Some(8), "a refused use takes no usage");
    let state = refused.ratelimit.unwrap();
    assert_eq!((state.remaining, state.reset), (0, 60));

    w.t.advance(29);
    assert_eq!(verify().await.code, VerifyCode::RateLimited);
    w.t.advance(1);
    let again = verify().await;
    assert_eq!((again.code, again.remaining), (VerifyCode::Valid, Some(7)));

    // A key without a rate limit of its own is limited by its tenant's plan: its own share of it
    // (600 a minute on the free plan) is the tightest.
    let free = w.issue(request(&["key:read"])).await;
    let answer = verify::verify(&w.t.app, &w.gateway, verifying(&free.key))
        .await
        .unwrap();
    assert_eq!(answer.code, VerifyCode::Valid);
    let state = answer.ratelimit.unwrap();
    assert_eq!((state.limit, state.remaining, state.reset), (600, 599, 1));

    // The tenant's rule counted the verify request of acme's own gateway (over HTTP), so the
    // verifications above did not count against it again; a platform-wide verifier's do.
    use custodian_app::ratelimit::{Limit, Policy, RateTiers};
    let tenant_rule = [Limit {
        policy: Policy::Tenant,
        subject: "acme".into(),
        rule: RateTiers::default().free.tenant,
    }];
    let tenant_left = || {
        w.t.app
            .security
            .ratelimits
            .peek(&tenant_rule, w.t.clock.now())[0]
            .remaining
    };
    assert_eq!(tenant_left(), 1_200);
    let root = w.t.root().await;
    let answer = verify::verify(&w.t.app, &root, verifying(&free.key))
        .await
        .unwrap();
    assert_eq!(answer.code, VerifyCode::Valid);
    assert_eq!(tenant_left(), 1_199);
}

#[tokio::test]
async fn nobody_takes_over_or_loosens_a_key_whose_scopes_they_lack() {
    let w = world().await;
    let mut strong = request(&["user:delete", "key:read"]);
    strong.ip_allowlist = Some(vec!["10.0.0.0/8".into()]);
    let strong = w.issue(strong).await;
    // The developer may rotate and update keys, but does not hold user:delete.
    let rotated = keys::rotate_key(
        &w.t.app,
        &w.gateway,
        "acme",
        &strong.id,
        RotateKeyRequest {
            grace_seconds: None,
        },
    )
    .await;
    let Err(AppError::MissingScopes { missing, .. }) = rotated else {
        panic!("a developer took a new secret for an admin's key: {rotated:?}");
    };
    assert_eq!(missing, ["user:delete"]);
    let loosened = keys::update_key(
        &w.t.app,
        &w.gateway,
        "acme",
        &strong.id,
        UpdateKeyRequest {
            name: None,
            ratelimit: None,
            usage_limit: None,
            ip_allowlist: Some(None),
        },
    )
    .await;
    assert!(
        matches!(loosened, Err(AppError::MissingScopes { .. })),
        "{loosened:?}"
    );
    let fenced = VerifyRequest {
        ip: Some("192.0.2.1".into()),
        ..verifying(&strong.key)
    };
    assert_eq!(w.code(fenced).await, VerifyCode::IpNotAllowed);

    // Its owner, who holds every scope, may; a rotation during another's grace is refused.
    let ada = w.ada().await;
    let grace = |s| RotateKeyRequest {
        grace_seconds: Some(s),
    };
    let first = keys::rotate_key(&w.t.app, &ada, "acme", &strong.id, grace(60))
        .await
        .unwrap();
    let again = keys::rotate_key(&w.t.app, &ada, "acme", &strong.id, grace(60)).await;
    assert!(matches!(again, Err(AppError::Conflict(_))), "{again:?}");
    let from_inside = |key: &str| VerifyRequest {
        ip: Some("10.0.0.1".into()),
        ..verifying(key)
    };
    assert_eq!(w.code(from_inside(&strong.key)).await, VerifyCode::Valid);
    w.t.advance(60);
    assert_eq!(w.code(from_inside(&strong.key)).await, VerifyCode::Expired);
    keys::rotate_key(&w.t.app, &ada, "acme", &strong.id, grace(0))
        .await
        .unwrap();
    assert_eq!(w.code(from_inside(&first.key)).await, VerifyCode::Expired);
}

#[tokio::test]
async fn two_recorded_windows_of_one_minute_both_count_after_a_restart() {
    let w = world().await;
    let mut metered = request(&["key:read"]);
    metered.usage_limit = Some(UsageLimitBody {
        remaining: 10,
        refill: None,
    });
    let issued = w.issue(metered).await;
    // Uses recorded at a stop, and more in the same minute after the start: two `key.used` of
    // one window.
    for uses in [3, 2] {
        for _ in 0..uses {
            assert_eq!(w.code(verifying(&issued.key)).await, VerifyCode::Valid);
        }
        assert_eq!(w.t.app.keys.recorder.record(true).await, 1);
    }
    let entry = w.t.app.keys.index.get(&issued.id).unwrap();
    w.t.app.keys.index.catch_up().await.unwrap();
    assert_eq!(
        w.t.app.keys.index.remaining(&entry, w.t.clock.now()),
        Some(5),
        "this process's own records are not news to it"
    );
    let fresh = keys::KeyIndex::start(
        w.t.app.store.clone(),
        None,
        std::time::Duration::from_secs(5),
        w.t.app.clock.clone(),
        tokio_util::sync::CancellationToken::new(),
    );
    fresh.catch_up().await.unwrap();
    let entry = fresh.get(&issued.id).unwrap();
    assert_eq!(fresh.remaining(&entry, w.t.clock.now()), Some(5));
}

#[tokio::test]
async fn a_key_issued_for_someone_else_never_does_what_its_issuer_no_longer_may() {
    let w = world().await;
    let bob = w.t.user_with_roles("acme", &[]).await;
    w.t.assign("acme", &bob, "admin").await;
    let mut for_bob = request(&["user:delete"]);
    for_bob.owner = Some(bob.clone());
    let issued = w.issue(for_bob).await;
    let deleting = || VerifyRequest {
        permission: Some("user:delete".into()),
        ..verifying(&issued.key)
    };
    assert_eq!(w.code(deleting()).await, VerifyCode::Valid);

    // Ada, who issued it, is disabled; Bob, its owner, still holds user:delete.
    w.t.user_command(
        "acme",
        &w.ada.user_id,
        UserCommand::Disable {
            reason: "left".into(),
        },
    )
    .await;
    w.t.app.policy.catch_up().await.unwrap();
    assert_eq!(w.code(deleting()).await, VerifyCode::Forbidden);
    let as_key = custodian_app::identity::authenticate(&w.t.app, &issued.key)
        .await
        .unwrap();
    let user_delete = custodian_domain::policy::Permission::parse("user:delete").unwrap();
    assert!(!access::holds(&w.t.app, &as_key, "acme", &user_delete, Target::Tenant).unwrap());

    w.t.user_command("acme", &w.ada.user_id, UserCommand::Enable)
        .await;
    w.t.app.policy.catch_up().await.unwrap();
    assert_eq!(w.code(deleting()).await, VerifyCode::Valid);
}
