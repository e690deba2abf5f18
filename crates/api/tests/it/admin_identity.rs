//! Tenant and user administration over HTTP: who may do what to which tenant, the lifecycle of
//! users from creation or invitation to erasure, and bad input refused without touching the log.

use reqwest::Method;
use serde_json::json;

use crate::support::{
    Admined, create_tenant, create_user, expect, login, problem, refused, send, setup, token,
};

#[tokio::test]
async fn platform_admins_create_list_change_suspend_and_reactivate_tenants() {
    let Admined { app, root, .. } = setup().await;

    let created = send(
        &app,
        Method::POST,
        "/v1/tenants",
        &root,
        Some(json!({"slug": "acme", "name": " Acme ", "plan": "team"})),
    )
    .await;
    let created = expect(created, 201).await;
    assert_eq!(created["slug"], "acme");
    assert_eq!(created["name"], "Acme");
    assert_eq!(created["plan"], "team");
    assert_eq!(created["status"], "active");

    let again = send(
        &app,
        Method::POST,
        "/v1/tenants",
        &root,
        Some(json!({"slug": "acme", "name": "Other"})),
    )
    .await;
    refused(again, 409).await;
    let too_long = "a".repeat(64);
    for slug in [
        "_system",
        "A!",
        "x",
        "1abc",
        "has_underscore",
        too_long.as_str(),
    ] {
        let r = send(
            &app,
            Method::POST,
            "/v1/tenants",
            &root,
            Some(json!({"slug": slug, "name": "N"})),
        )
        .await;
        let detail = refused(r, 422).await;
        assert!(detail.contains("slug"), "{slug}: {detail}");
    }

    for slug in ["beta", "gamma", "delta"] {
        create_tenant(&app, &root, slug).await;
    }
    let mut seen = vec![];
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/tenants?limit=3&cursor={c}"),
            None => "/v1/tenants?limit=3".to_owned(),
        };
        let page = expect(send(&app, Method::GET, &path, &root, None).await, 200).await;
        pages += 1;
        for t in page["items"].as_array().unwrap() {
            seen.push(t["slug"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    // The platform scope is listed too, first: `_` sorts before every slug's first letter.
    assert_eq!(seen, ["_system", "acme", "beta", "delta", "gamma"]);
    assert_eq!(pages, 2);
    for bad in ["limit=0", "limit=201", "limit=ten", "cursor=NOT_A_SLUG"] {
        let r = send(
            &app,
            Method::GET,
            &format!("/v1/tenants?{bad}"),
            &root,
            None,
        )
        .await;
        refused(r, 422).await;
    }

    let patched = send(
        &app,
        Method::PATCH,
        "/v1/tenants/beta",
        &root,
        Some(json!({"name": "Beta Corp", "plan": "enterprise"})),
    )
    .await;
    let patched = expect(patched, 200).await;
    assert_eq!(
        (patched["name"].as_str(), patched["plan"].as_str()),
        (Some("Beta Corp"), Some("enterprise"))
    );
    let read = expect(
        send(&app, Method::GET, "/v1/tenants/beta", &root, None).await,
        200,
    )
    .await;
    assert_eq!(read["name"], "Beta Corp");
    assert_eq!(read["plan"], "enterprise");
    let empty = send(
        &app,
        Method::PATCH,
        "/v1/tenants/beta",
        &root,
        Some(json!({})),
    )
    .await;
    refused(empty, 422).await;

    let suspend = |reason: &'static str| {
        send(
            &app,
            Method::POST,
            "/v1/tenants/beta/suspend",
            &root,
            Some(json!({ "reason": reason })),
        )
    };
    refused(suspend(" ").await, 422).await;
    let suspended = expect(suspend("unpaid").await, 200).await;
    assert_eq!(suspended["status"], "suspended");
    refused(suspend("again").await, 409).await;
    let reactivate = || {
        send(
            &app,
            Method::POST,
            "/v1/tenants/beta/reactivate",
            &root,
            None,
        )
    };
    assert_eq!(expect(reactivate().await, 200).await["status"], "active");
    refused(reactivate().await, 409).await;

    for (method, path) in [
        (Method::GET, "/v1/tenants/nope"),
        (Method::GET, "/v1/tenants/BAD!"),
        (Method::POST, "/v1/tenants/nope/reactivate"),
    ] {
        refused(send(&app, method, path, &root, None).await, 404).await;
    }
    // The platform scope reads as it is listed, and cannot be changed.
    let platform = expect(
        send(&app, Method::GET, "/v1/tenants/_system", &root, None).await,
        200,
    )
    .await;
    assert_eq!(
        (platform["slug"].as_str(), platform["status"].as_str()),
        (Some("_system"), Some("active"))
    );
    refused(
        send(
            &app,
            Method::POST,
            "/v1/tenants/_system/reactivate",
            &root,
            None,
        )
        .await,
        409,
    )
    .await;
    let r = send(
        &app,
        Method::PATCH,
        "/v1/tenants/nope",
        &root,
        Some(json!({"name": "x"})),
    )
    .await;
    refused(r, 404).await;
    let unauthenticated = app.client.get(app.url("/v1/tenants")).send().await.unwrap();
    refused(unauthenticated, 401).await;
}

#[tokio::test]
async fn tenant_admins_manage_their_own_tenant_and_nothing_else() {
    let Admined { app, root, .. } = setup().await;
    create_tenant(&app, &root, "acme").await;
    create_tenant(&app, &root, "globex").await;

    // The platform administrator makes a tenant administrator in each tenant.
    let acme_admin = create_user(
        &app,
        &root,
        "acme",
        json!({"email": "boss@acme.test", "name": "Boss", "password": "correct horse battery",
               "roles": ["tenant_admin"]}),
    )
    .await;
    assert_eq!(acme_admin["status"], "active");
    assert_eq!(acme_admin["kind"], "person");
    // `tenant_admin` is the earlier name of the built-in `admin` role, assigned on the tenant.
    assert_eq!(acme_admin["roles"], json!(["admin"]));
    assert_eq!(acme_admin["password_set"], true);
    let acme_admin_id = acme_admin["user_id"].as_str().unwrap().to_owned();
    let globex_admin = create_user(
        &app,
        &root,
        "globex",
        json!({"email": "boss@globex.test", "name": "G", "password": "correct horse battery",
               "roles": ["tenant_admin"]}),
    )
    .await;
    let globex_admin_id = globex_admin["user_id"].as_str().unwrap().to_owned();
    let acme = token(&app, "acme", "boss@acme.test", "correct horse battery").await;

    // The tenant administrator invites someone, who accepts and logs in.
    let invited = send(
        &app,
        Method::POST,
        "/v1/tenants/acme/invitations",
        &acme,
        Some(json!({"email": "Grace@Acme.TEST", "name": "Grace"})),
    )
    .await;
    let invited = expect(invited, 201).await;
    let grace_id = invited["user_id"].as_str().unwrap().to_owned();
    let invitation = invited["invitation_token"].as_str().unwrap().to_owned();
    assert!(invited["expires_at"].as_str().is_some());
    let pending = expect(
        send(
            &app,
            Method::GET,
            &format!("/v1/tenants/acme/users/{grace_id}"),
            &acme,
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(pending["status"], "invited");
    assert_eq!(pending["email"], "Grace@acme.test");
    assert_eq!(pending["name"], "Grace");
    assert_eq!(pending["credentials"]["password_set"], false);
    let accepted = app
        .client
        .post(app.url("/v1/auth/invitations/accept"))
        .json(&json!({"token": invitation, "password": "grace's own passphrase"}))
        .send()
        .await
        .unwrap();
    expect(accepted, 200).await;
    let grace = token(&app, "acme", "grace@acme.test", "grace's own passphrase").await;
    let detail = expect(
        send(
            &app,
            Method::GET,
            &format!("/v1/tenants/acme/users/{grace_id}"),
            &acme,
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(detail["status"], "active");
    assert_eq!(detail["credentials"]["password_set"], true);
    assert!(detail["credentials"]["last_login_at"].is_string());

    // Users of a tenant may read it; its administrator may not change it.
    let own = send(&app, Method::GET, "/v1/tenants/acme", &grace, None).await;
    assert_eq!(expect(own, 200).await["slug"], "acme");
    refused(
        send(
            &app,
            Method::PATCH,
            "/v1/tenants/acme",
            &acme,
            Some(json!({"name": "Mine"})),
        )
        .await,
        403,
    )
    .await;
    refused(
        send(&app, Method::GET, "/v1/tenants", &acme, None).await,
        403,
    )
    .await;
    refused(
        send(
            &app,
            Method::POST,
            "/v1/tenants",
            &acme,
            Some(json!({"slug": "mine", "name": "Mine"})),
        )
        .await,
        403,
    )
    .await;

    // The email is unique in a tenant, whatever its case; another tenant may use it.
    for email in ["grace@acme.test", "GRACE@ACME.TEST"] {
        let dup = send(
            &app,
            Method::POST,
            "/v1/tenants/acme/users",
            &acme,
            Some(json!({"email": email, "name": "Imposter"})),
        )
        .await;
        refused(dup, 409).await;
    }
    let elsewhere = create_user(
        &app,
        &root,
        "globex",
        json!({"email": "grace@acme.test", "name": "Grace at Globex"}),
    )
    .await;
    let globex_grace = elsewhere["user_id"].as_str().unwrap().to_owned();

    // A plain member is refused administration of their own tenant.
    for (method, path, body) in [
        (Method::GET, "/v1/tenants/acme/users".to_owned(), None),
        (
            Method::POST,
            "/v1/tenants/acme/users".to_owned(),
            Some(json!({"email": "x@acme.test", "name": "X"})),
        ),
        (
            Method::POST,
            format!("/v1/tenants/acme/users/{acme_admin_id}/disable"),
            Some(json!({"reason": "coup"})),
        ),
        (Method::GET, "/v1/tenants/acme/credentials".to_owned(), None),
    ] {
        refused(send(&app, method, &path, &grace, body).await, 403).await;
    }

    // Everything of another tenant is 404 to a tenant administrator, and so is a user of another
    // tenant named under their own.
    let globex_routes = |user: &str| {
        vec![
            (Method::GET, "/v1/tenants/globex".to_owned(), None),
            (
                Method::PATCH,
                "/v1/tenants/globex".to_owned(),
                Some(json!({"name": "x"})),
            ),
            (
                Method::POST,
                "/v1/tenants/globex/suspend".to_owned(),
                Some(json!({"reason": "x"})),
            ),
            (
                Method::POST,
                "/v1/tenants/globex/reactivate".to_owned(),
                None,
            ),
            (Method::GET, "/v1/tenants/globex/users".to_owned(), None),
            (
                Method::POST,
                "/v1/tenants/globex/users".to_owned(),
                Some(json!({"email": "y@globex.test", "name": "Y"})),
            ),
            (
                Method::POST,
                "/v1/tenants/globex/invitations".to_owned(),
                Some(json!({"email": "y@globex.test", "name": "Y"})),
            ),
            (
                Method::GET,
                "/v1/tenants/globex/credentials".to_owned(),
                None,
            ),
            (
                Method::GET,
                format!("/v1/tenants/globex/users/{user}"),
                None,
            ),
            (
                Method::PATCH,
                format!("/v1/tenants/globex/users/{user}"),
                Some(json!({"name": "Z"})),
            ),
            (
                Method::DELETE,
                format!("/v1/tenants/globex/users/{user}"),
                None,
            ),
            (
                Method::POST,
                format!("/v1/tenants/globex/users/{user}/disable"),
                Some(json!({"reason": "x"})),
            ),
            (
                Method::POST,
                format!("/v1/tenants/globex/users/{user}/enable"),
                None,
            ),
            (
                Method::POST,
                format!("/v1/tenants/globex/users/{user}/password-reset"),
                None,
            ),
            (
                Method::GET,
                format!("/v1/tenants/globex/users/{user}/sessions"),
                None,
            ),
            (
                Method::DELETE,
                format!("/v1/tenants/globex/users/{user}/sessions"),
                None,
            ),
            (Method::GET, "/v1/tenants/nosuch/users".to_owned(), None),
        ]
    };
    let head = app.store.head().await.unwrap();
    for (method, path, body) in globex_routes(&globex_admin_id) {
        let label = format!("{method} {path}");
        let detail = refused(send(&app, method, &path, &acme, body).await, 404).await;
        assert!(!detail.contains("forbidden"), "{label}: {detail}");
    }
    for user in [&globex_admin_id, &globex_grace] {
        for (method, suffix, body) in [
            (Method::GET, "", None),
            (Method::PATCH, "", Some(json!({"name": "Z"}))),
            (Method::DELETE, "", None),
            (Method::POST, "/disable", Some(json!({"reason": "x"}))),
            (Method::POST, "/enable", None),
            (Method::POST, "/password-reset", None),
            (Method::GET, "/sessions", None),
            (Method::DELETE, "/sessions", None),
        ] {
            let path = format!("/v1/tenants/acme/users/{user}{suffix}");
            refused(send(&app, method, &path, &acme, body).await, 404).await;
        }
    }
    for guess in ["user_00000000000000000000000000", "nope", "sess_x"] {
        let path = format!("/v1/tenants/acme/users/{guess}");
        refused(send(&app, Method::GET, &path, &acme, None).await, 404).await;
    }
    assert_eq!(
        app.store.head().await.unwrap(),
        head,
        "refused requests wrote nothing"
    );

    // Agents and services: no password, listed by kind.
    let r = send(
        &app,
        Method::POST,
        "/v1/tenants/acme/users",
        &acme,
        Some(json!({"email": "bot@acme.test", "name": "Bot", "kind": "agent", "password": "irrelevant passphrase"})),
    )
    .await;
    assert!(refused(r, 422).await.contains("password"));
    let bot = create_user(
        &app,
        &acme,
        "acme",
        json!({"email": "bot@acme.test", "name": "Bot", "kind": "agent"}),
    )
    .await;
    assert_eq!(bot["password_set"], false);
    create_user(
        &app,
        &acme,
        "acme",
        json!({"email": "ci@acme.test", "name": "CI", "kind": "service"}),
    )
    .await;
    for (roles, status) in [
        (json!(["platform_admin"]), 422),
        (json!(["owner"]), 422),
        (json!("tenant_admin"), 422),
    ] {
        let r = send(
            &app,
            Method::POST,
            "/v1/tenants/acme/users",
            &acme,
            Some(json!({"email": "r@acme.test", "name": "R", "roles": roles})),
        )
        .await;
        refused(r, status).await;
    }

    // Listing: filters, and a cursor through every page.
    let list = |query: &'static str| {
        let path = format!("/v1/tenants/acme/users{query}");
        let (app, acme) = (&app, &acme);
        async move { send(app, Method::GET, &path, acme, None).await }
    };
    let agents = expect(list("?kind=agent").await, 200).await;
    let agents = agents["items"].as_array().unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0]["email"], "bot@acme.test");
    assert_eq!(agents[0]["name"], "Bot");
    let active = expect(list("?status=active&kind=person").await, 200).await;
    assert_eq!(active["items"].as_array().unwrap().len(), 2);
    let mut ids = vec![];
    let mut cursor = String::new();
    loop {
        let path = format!("/v1/tenants/acme/users?limit=1{cursor}");
        let page = expect(send(&app, Method::GET, &path, &acme, None).await, 200).await;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 1);
        ids.extend(
            items
                .iter()
                .map(|u| u["user_id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(ids.len(), 4, "{ids:?}");
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "users are listed by id");
    for bad in [
        "?status=gone",
        "?kind=robot",
        "?limit=0",
        "?limit=500",
        "?cursor=bogus",
    ] {
        let detail = refused(list(bad).await, 422).await;
        let field = bad[1..].split('=').next().unwrap();
        assert!(detail.contains(field), "{bad}: {detail}");
    }
    let credentials = expect(
        send(
            &app,
            Method::GET,
            "/v1/tenants/acme/credentials",
            &acme,
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(credentials["items"].as_array().unwrap().len(), 4);
    let locked = expect(
        send(
            &app,
            Method::GET,
            "/v1/tenants/acme/credentials?locked=true",
            &acme,
            None,
        )
        .await,
        200,
    )
    .await;
    assert!(locked["items"].as_array().unwrap().is_empty());
    refused(
        send(
            &app,
            Method::GET,
            "/v1/tenants/acme/credentials?locked=maybe",
            &acme,
            None,
        )
        .await,
        422,
    )
    .await;

    // Sessions: listed, then revoked by the administrator; the token stops working at once.
    let grace_sessions = format!("/v1/tenants/acme/users/{grace_id}/sessions");
    let sessions = expect(
        send(
            &app,
            Method::GET,
            &format!("{grace_sessions}?active=true"),
            &acme,
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(sessions["items"].as_array().unwrap().len(), 1);
    assert_eq!(sessions["items"][0]["status"], "active");
    let revoked = expect(
        send(&app, Method::DELETE, &grace_sessions, &acme, None).await,
        200,
    )
    .await;
    assert_eq!(revoked["revoked"], 1);
    refused(
        send(&app, Method::GET, "/v1/tenants/acme", &grace, None).await,
        401,
    )
    .await;
    let none_left = expect(
        send(
            &app,
            Method::GET,
            &format!("{grace_sessions}?active=true"),
            &acme,
            None,
        )
        .await,
        200,
    )
    .await;
    assert!(none_left["items"].as_array().unwrap().is_empty());
    let all = expect(
        send(&app, Method::GET, &grace_sessions, &acme, None).await,
        200,
    )
    .await;
    assert_eq!(all["items"][0]["revoke_reason"], "revoked_by_admin");

    // Disable: the user's token is refused at once; enable lets them back in.
    let grace = token(&app, "acme", "grace@acme.test", "grace's own passphrase").await;
    let disable = format!("/v1/tenants/acme/users/{grace_id}/disable");
    refused(
        send(
            &app,
            Method::POST,
            &disable,
            &acme,
            Some(json!({"reason": ""})),
        )
        .await,
        422,
    )
    .await;
    let disabled = send(
        &app,
        Method::POST,
        &disable,
        &acme,
        Some(json!({"reason": "on leave"})),
    )
    .await;
    assert_eq!(expect(disabled, 200).await["status"], "disabled");
    refused(
        send(&app, Method::GET, "/v1/tenants/acme", &grace, None).await,
        401,
    )
    .await;
    refused(
        login(&app, "acme", "grace@acme.test", "grace's own passphrase").await,
        401,
    )
    .await;
    refused(
        send(
            &app,
            Method::POST,
            &disable,
            &acme,
            Some(json!({"reason": "again"})),
        )
        .await,
        409,
    )
    .await;
    let enable = format!("/v1/tenants/acme/users/{grace_id}/enable");
    let enabled = send(&app, Method::POST, &enable, &acme, None).await;
    assert_eq!(expect(enabled, 200).await["status"], "active");
    refused(send(&app, Method::POST, &enable, &acme, None).await, 409).await;
    token(&app, "acme", "grace@acme.test", "grace's own passphrase").await;

    // A password reset issued by the administrator.
    let reset = expect(
        send(
            &app,
            Method::POST,
            &format!("/v1/tenants/acme/users/{grace_id}/password-reset"),
            &acme,
            None,
        )
        .await,
        201,
    )
    .await;
    let reset_token = reset["reset_token"].as_str().unwrap();
    let r = app
        .client
        .post(app.url("/v1/auth/password/reset"))
        .json(&json!({"token": reset_token, "new_password": "a brand new passphrase"}))
        .send()
        .await
        .unwrap();
    expect(r, 200).await;
    token(&app, "acme", "grace@acme.test", "a brand new passphrase").await;
    let bot_reset = send(
        &app,
        Method::POST,
        &format!(
            "/v1/tenants/acme/users/{}/password-reset",
            bot["user_id"].as_str().unwrap()
        ),
        &acme,
        None,
    )
    .await;
    refused(bot_reset, 409).await;

    // A new email: claimed first, the old one released for others.
    let patched = send(
        &app,
        Method::PATCH,
        &format!("/v1/tenants/acme/users/{grace_id}"),
        &acme,
        Some(json!({"email": "grace.hopper@acme.test", "name": "Grace Hopper"})),
    )
    .await;
    expect(patched, 200).await;
    let taken = send(
        &app,
        Method::PATCH,
        &format!("/v1/tenants/acme/users/{grace_id}"),
        &acme,
        Some(json!({"email": "bot@acme.test"})),
    )
    .await;
    refused(taken, 409).await;
    let renamed = expect(
        send(
            &app,
            Method::GET,
            &format!("/v1/tenants/acme/users/{grace_id}"),
            &acme,
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(renamed["email"], "grace.hopper@acme.test");
    assert_eq!(renamed["name"], "Grace Hopper");
    refused(
        login(&app, "acme", "grace@acme.test", "a brand new passphrase").await,
        401,
    )
    .await;
    token(
        &app,
        "acme",
        "grace.hopper@acme.test",
        "a brand new passphrase",
    )
    .await;
    create_user(
        &app,
        &acme,
        "acme",
        json!({"email": "grace@acme.test", "name": "Another Grace"}),
    )
    .await;

    // Platform administrators may make more of themselves; nobody else may.
    let second = create_user(
        &app,
        &root,
        "_system",
        json!({"email": "second@platform.test", "name": "Second", "roles": ["platform_admin"]}),
    )
    .await;
    assert_eq!(second["roles"], json!(["platform_admin"]));
}

#[tokio::test]
async fn erasure_leaves_only_ciphertext_nobody_can_open() {
    let Admined {
        app, root, db_file, ..
    } = setup().await;
    create_tenant(&app, &root, "acme").await;
    let email = "erasable-7f3a@acme.test";
    let name = "Ermintrude Erasable-Q9";
    let user = create_user(
        &app,
        &root,
        "acme",
        json!({"email": email, "name": name, "password": "erase me passphrase"}),
    )
    .await;
    let user_id = user["user_id"].as_str().unwrap().to_owned();
    let victim = token(&app, "acme", email, "erase me passphrase").await;
    let path = format!("/v1/tenants/acme/users/{user_id}");

    let deleted = expect(send(&app, Method::DELETE, &path, &root, None).await, 200).await;
    assert_eq!(deleted["user_id"], user_id.as_str());
    assert_eq!(deleted["tenant"], "acme");
    refused(
        send(&app, Method::GET, "/v1/tenants/acme", &victim, None).await,
        401,
    )
    .await;
    let shown = expect(send(&app, Method::GET, &path, &root, None).await, 200).await;
    assert_eq!(shown["status"], "deleted");
    assert!(shown["email"].is_null(), "{shown}");
    assert!(shown["name"].is_null(), "{shown}");
    assert!(shown["credentials"].is_null(), "{shown}");
    let listed = expect(
        send(
            &app,
            Method::GET,
            "/v1/tenants/acme/users?status=deleted",
            &root,
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(listed["items"][0]["user_id"], user_id.as_str());
    assert!(listed["items"][0]["email"].is_null());
    refused(login(&app, "acme", email, "erase me passphrase").await, 401).await;
    refused(send(&app, Method::DELETE, &path, &root, None).await, 404).await;
    refused(
        send(
            &app,
            Method::PATCH,
            &path,
            &root,
            Some(json!({"name": "Back"})),
        )
        .await,
        404,
    )
    .await;
    assert!(
        app.state
            .security
            .vault
            .get(&user_id)
            .await
            .unwrap()
            .is_none(),
        "the data key is destroyed"
    );
    let stream = custodian_domain::StreamName::new("acme", "user", &user_id).unwrap();
    let events = app.store.read_stream(&stream, 1, 100).await.unwrap();
    assert!(
        events.len() >= 3,
        "the log keeps the user's events: {events:?}"
    );

    // The address is free again.
    create_user(
        &app,
        &root,
        "acme",
        json!({"email": email.to_uppercase(), "name": "Successor"}),
    )
    .await;

    let mut bytes = std::fs::read(&db_file).unwrap();
    let wal = db_file.with_extension("db-wal");
    if let Ok(more) = std::fs::read(&wal) {
        bytes.extend(more);
    }
    for secret in [email, name, "erase me passphrase"] {
        assert!(
            !bytes
                .windows(secret.len())
                .any(|w| w.eq_ignore_ascii_case(secret.as_bytes())),
            "{secret} is in the database file in plaintext"
        );
    }
}

#[tokio::test]
async fn bad_input_is_refused_with_a_problem_and_writes_nothing() {
    let Admined { app, root, .. } = setup().await;
    create_tenant(&app, &root, "acme").await;
    let user = create_user(
        &app,
        &root,
        "acme",
        json!({"email": "ok@acme.test", "name": "Ok"}),
    )
    .await;
    let user_path = format!(
        "/v1/tenants/acme/users/{}",
        user["user_id"].as_str().unwrap()
    );
    let head = app.store.head().await.unwrap();

    let raw = |method: Method, path: &str, body: String| {
        app.client
            .request(method, app.url(path))
            .bearer_auth(&root)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let users = "/v1/tenants/acme/users";
    let cases: Vec<(Method, &str, String, u16, &str)> = vec![
        (Method::POST, users, "{\"email\": ".into(), 400, "JSON"),
        (
            Method::POST,
            users,
            "{\"name\": \"N\"}".into(),
            422,
            "email",
        ),
        (
            Method::POST,
            users,
            "{\"email\": 5, \"name\": \"N\"}".into(),
            422,
            "email",
        ),
        (
            Method::POST,
            users,
            json!({"email": "not-an-address", "name": "N"}).to_string(),
            422,
            "email",
        ),
        (
            Method::POST,
            users,
            json!({"email": format!("{}@acme.test", "a".repeat(250)), "name": "N"}).to_string(),
            422,
            "email",
        ),
        (
            Method::POST,
            users,
            json!({"email": "n@acme.test", "name": "N", "kind": "robot"}).to_string(),
            422,
            "kind",
        ),
        (
            Method::POST,
            users,
            json!({"email": "n@acme.test", "name": "N", "admin": true}).to_string(),
            422,
            "admin",
        ),
        (
            Method::POST,
            users,
            json!({"email": "n@acme.test", "name": ""}).to_string(),
            422,
            "name",
        ),
        (
            Method::POST,
            users,
            json!({"email": "n@acme.test", "name": "n".repeat(201)}).to_string(),
            422,
            "name",
        ),
        (
            Method::POST,
            users,
            json!({"email": "n@acme.test", "name": "N", "password": "password"}).to_string(),
            422,
            "password",
        ),
        (
            Method::POST,
            users,
            json!({"email": "n@acme.test", "name": "N", "roles": ["root"]}).to_string(),
            422,
            "roles",
        ),
        (
            Method::POST,
            "/v1/tenants/acme/invitations",
            json!({"email": "n@acme.test"}).to_string(),
            422,
            "name",
        ),
        (
            Method::PATCH,
            &user_path,
            json!({"email": "nope"}).to_string(),
            422,
            "email",
        ),
        (Method::PATCH, &user_path, "{}".into(), 422, "email"),
        (
            Method::POST,
            "/v1/tenants",
            json!({"slug": "ok-slug", "name": "n".repeat(201)}).to_string(),
            422,
            "name",
        ),
        (
            Method::POST,
            "/v1/tenants",
            json!({"slug": "ok-slug", "name": "N", "plan": "platinum"}).to_string(),
            422,
            "plan",
        ),
        (
            Method::POST,
            "/v1/tenants/acme/suspend",
            json!({"reason": "r".repeat(501)}).to_string(),
            422,
            "reason",
        ),
    ];
    for (method, path, body, status, mentions) in cases {
        let label = format!("{method} {path} {body:.80}");
        let detail = refused(raw(method, path, body).await.unwrap(), status).await;
        assert!(detail.contains(mentions), "{label}: {detail}");
    }

    // A 10 MB email is refused before it is read to the end.
    let huge = json!({"email": format!("{}@acme.test", "a".repeat(10 << 20)), "name": "N"});
    match raw(Method::POST, users, huge.to_string()).await {
        Ok(r) => {
            let (status, _) = problem(r).await;
            assert!(status == 413 || status == 422, "{status}");
        }
        // The server may answer 413 and close the connection while the body is still being sent.
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
    let no_type = app
        .client
        .post(app.url(users))
        .bearer_auth(&root)
        .body(json!({"email": "n@acme.test", "name": "N"}).to_string())
        .send()
        .await
        .unwrap();
    refused(no_type, 415).await;

    assert_eq!(
        app.store.head().await.unwrap(),
        head,
        "bad input wrote nothing"
    );
}

#[tokio::test]
async fn an_email_claimed_by_a_creation_that_failed_half_way_is_taken_over_later() {
    use custodian_api::commands::{self, Context};
    use custodian_domain::email::{self, EmailCommand, Reservation};
    use custodian_domain::{Actor, StreamName, Timestamp};

    let Admined { app, root, .. } = setup().await;
    create_tenant(&app, &root, "acme").await;
    // Claims whose user stream was never appended: one long ago, one just now (a creation that
    // may still be under way).
    let claim = |address: &'static str, ago: i64| {
        let app = &app;
        async move {
            let index = app.state.security.keyring.email_index("acme", address);
            let ctx = Context {
                actor: Actor::system(),
                now: Timestamp::from_datetime(
                    time::OffsetDateTime::now_utc() - time::Duration::seconds(ago),
                ),
                correlation_id: None,
            };
            let reservation = StreamName::new("acme", "email", &index).unwrap();
            commands::execute(
                &app.store,
                None,
                &reservation,
                &ctx,
                Reservation::default(),
                email::evolve,
                |r| {
                    email::decide(
                        r,
                        EmailCommand::Claim {
                            user_id: "user_00000000000000000000000000".to_owned(),
                            holder_gone: false,
                        },
                    )
                },
            )
            .await
            .unwrap();
            index
        }
    };
    let old = claim("ghost@acme.test", 3600).await;
    claim("busy@acme.test", 0).await;

    let created = create_user(
        &app,
        &root,
        "acme",
        json!({"email": "ghost@acme.test", "name": "Not a ghost"}),
    )
    .await;
    let r = send(
        &app,
        Method::POST,
        "/v1/tenants/acme/users",
        &root,
        Some(json!({"email": "busy@acme.test", "name": "Too early"})),
    )
    .await;
    refused(r, 409).await;
    app.state.security.index.catch_up().await.unwrap();
    assert_eq!(
        app.state.security.index.user_by_email("acme", &old),
        created["user_id"].as_str().map(str::to_owned)
    );
}

#[tokio::test]
async fn administrators_cannot_disable_or_erase_themselves() {
    let Admined { app, root, .. } = setup().await;
    let me = expect(
        send(&app, Method::GET, "/v1/auth/me", &root, None).await,
        200,
    )
    .await;
    let id = me["user_id"].as_str().unwrap();
    let head = app.store.head().await.unwrap().position;
    let detail = refused(
        send(
            &app,
            Method::POST,
            &format!("/v1/tenants/_system/users/{id}/disable"),
            &root,
            Some(json!({"reason": "oops"})),
        )
        .await,
        409,
    )
    .await;
    assert!(detail.contains("themselves"), "{detail}");
    refused(
        send(
            &app,
            Method::DELETE,
            &format!("/v1/tenants/_system/users/{id}"),
            &root,
            None,
        )
        .await,
        409,
    )
    .await;
    assert_eq!(app.store.head().await.unwrap().position, head);
    expect(
        send(&app, Method::GET, "/v1/auth/me", &root, None).await,
        200,
    )
    .await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_is_throttled_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = custodian_app::SecurityOptions::new(dir.path().join("secret.key"));
    options.trusted_proxies = custodian_api::config::parse_proxies("127.0.0.1").unwrap();
    options.login_ip_failures = 2;
    // Time stands still, so the 1 s lock cannot lapse between the requests however slow they are.
    let clock = std::sync::Arc::new(custodian_app::ManualClock::new(custodian_app::Clock::now(
        &custodian_app::SystemClock,
    )));
    let s = crate::support::setup_clocked(options, clock.clone()).await;
    let app = &s.app;
    let attempt = |client_ip: &'static str, email: &'static str| {
        app.client
            .post(app.url("/v1/auth/login"))
            .header("x-forwarded-for", format!("{client_ip}, 127.0.0.1"))
            .json(&json!({"tenant": "_system", "email": email, "password": "wrong password"}))
            .send()
    };
    // Two failures from one forwarded client (with different emails, so no email lock) lock it.
    assert_eq!(
        attempt("198.51.100.1", "a@x.test").await.unwrap().status(),
        401
    );
    assert_eq!(
        attempt("198.51.100.1", "b@x.test").await.unwrap().status(),
        401
    );
    let locked = attempt("198.51.100.1", "c@x.test").await.unwrap();
    assert_eq!(locked.status(), 429);
    assert!(locked.headers().contains_key("retry-after"));
    // Another client behind the same proxy is not.
    assert_eq!(
        attempt("198.51.100.2", "d@x.test").await.unwrap().status(),
        401
    );
    // The lock is recorded with the client's address, not the proxy's.
    let log = app.store.read_all(1, 1000).await.unwrap();
    assert!(
        log.iter()
            .any(|e| e.event_type.as_str() == "security.login_throttled"
                && e.data["ip"] == "198.51.100.1"),
        "no throttle event for the forwarded client"
    );
    // Once the lock has run out, the client is heard again.
    clock.advance(time::Duration::seconds(2));
    assert_eq!(
        attempt("198.51.100.1", "e@x.test").await.unwrap().status(),
        401
    );
}
