//! Identity flows end to end: the real `custodian` binary on SQLite and on PostgreSQL, driven over
//! HTTP as a client would drive it. Every flow starts its own server on a fresh store, creates the
//! first platform administrator with `custodian admin bootstrap`, and logs in with tenant `_system`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use custodian_testkit::Backend;
use custodian_testkit::deployment::{Deployment, Server, verify};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;

/// Runs each flow once on SQLite and once on PostgreSQL (skipped outside CI when PostgreSQL is
/// unreachable, a failure in CI).
macro_rules! on_both_backends {
    ($($flow:ident),+ $(,)?) => {$(
        mod $flow {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$flow(super::Deployment::sqlite()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(ledger) = super::Deployment::postgres().await {
                    super::$flow(ledger).await;
                }
            }
        }
    )+};
}

on_both_backends!(
    bootstrap_login_and_access_tokens,
    refresh_rotation_logout_and_sessions,
    password_change_and_reset,
    totp_enrollment_challenges_and_recovery_codes,
    totp_codes_proving_presence_are_single_use,
    wrong_totp_codes_proving_presence_are_throttled,
    login_throttling_per_email_and_address,
    tenant_and_user_administration,
    tenants_are_isolated,
    system_tenant_admins_cannot_take_over_platform_admins,
    disabling_interrupts_invitations_and_challenges,
    bad_input_is_a_problem_never_a_500,
    erasure_leaves_no_personal_data,
    no_secret_reaches_the_database_or_the_logs,
);

const SYSTEM: &str = "_system";
const ADMIN_EMAIL: &str = "root@platform.test";
const ADMIN_NAME: &str = "Rootie Platformsson";
const ADMIN_PASSWORD: &str = "correct horse battery staple";
const USER_AGENT: &str = "custodian-identity-tests/1";

// ---------------------------------------------------------------------------------------------
// The ledger: what the flows read of the store behind the binary.

/// What only these flows read of a deployment's store.
trait Inspect {
    /// Every record of the log, as JSON.
    async fn events(&self) -> Vec<Value>;

    /// Every byte the database holds that a thief of the disk or of a dump would get: on SQLite
    /// the database file and its WAL and shared-memory files, on PostgreSQL every row of every
    /// table of the test's database as text.
    async fn database_contents(&self) -> Vec<u8>;

    /// The wrapped data key of `subject` in the vault, if it has one.
    async fn wrapped_data_key(&self, subject: &str) -> Option<String>;
}

impl Inspect for Deployment {
    async fn events(&self) -> Vec<Value> {
        self.read_log()
            .await
            .iter()
            .map(|r| serde_json::to_value(r).unwrap())
            .collect()
    }

    async fn database_contents(&self) -> Vec<u8> {
        match self.ledger.backend {
            Backend::Sqlite => {
                let dir = self.data_dir();
                let mut bytes = vec![];
                for entry in std::fs::read_dir(&dir).unwrap() {
                    let path = entry.unwrap().path();
                    let name = path.file_name().unwrap().to_string_lossy().into_owned();
                    if name.starts_with("custodian.db") {
                        bytes.extend(std::fs::read(&path).unwrap());
                    }
                }
                assert!(!bytes.is_empty(), "no database files in {}", dir.display());
                bytes
            }
            Backend::Postgres => {
                use sqlx::Connection as _;
                let mut conn = sqlx::PgConnection::connect(&self.ledger.location)
                    .await
                    .unwrap();
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT table_name::text FROM information_schema.tables \
                     WHERE table_catalog = current_database() AND table_schema = 'public' \
                     AND table_type = 'BASE TABLE'",
                )
                .fetch_all(&mut conn)
                .await
                .unwrap();
                assert!(tables.iter().any(|t| t == "events"), "{tables:?}");
                let mut text = String::new();
                for table in tables {
                    let rows: Vec<String> =
                        sqlx::query_scalar(&format!("SELECT t::text FROM \"{table}\" t"))
                            .fetch_all(&mut conn)
                            .await
                            .unwrap();
                    text.push_str(&table);
                    text.push('\n');
                    for row in rows {
                        text.push_str(&row);
                        text.push('\n');
                    }
                }
                conn.close().await.unwrap();
                text.into_bytes()
            }
        }
    }

    async fn wrapped_data_key(&self, subject: &str) -> Option<String> {
        use sqlx::Connection as _;
        let sql = "SELECT wrapped FROM data_keys WHERE subject = $1";
        match self.ledger.backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}?mode=ro", self.ledger.location);
                let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
                let key = sqlx::query_scalar(sql)
                    .bind(subject)
                    .fetch_optional(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.unwrap();
                key
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.ledger.location)
                    .await
                    .unwrap();
                let key = sqlx::query_scalar(sql)
                    .bind(subject)
                    .fetch_optional(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.unwrap();
                key
            }
        }
    }
}

/// A server on a ledger with a bootstrapped platform administrator, logged in.
struct World {
    ledger: Deployment,
    server: Server,
    api: Client,
    admin: Tokens,
}

/// Bootstraps the first platform administrator, starts `custodian serve FLAGS`, and logs in.
async fn bootstrap_and_login(ledger: Deployment, flags: &[&str]) -> World {
    ledger
        .bootstrap(ADMIN_EMAIL, ADMIN_NAME, ADMIN_PASSWORD)
        .await;
    let server = ledger.serve(flags).await;
    let api = Client::new(&server.base);
    let admin = login_ok(&api, SYSTEM, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    World {
        ledger,
        server,
        api,
        admin,
    }
}

impl World {
    /// A client acting as the platform administrator.
    fn root(&self) -> Client {
        self.api.bearer(&self.admin.access)
    }

    /// Creates tenant `slug` as the platform administrator.
    async fn create_tenant(&self, slug: &str) {
        let r = self
            .root()
            .post(
                "/v1/tenants",
                json!({"slug": slug, "name": format!("Tenant {slug}")}),
            )
            .await;
        let body = r.ok(201);
        assert_eq!(body["slug"], slug);
        assert_eq!(body["status"], "active");
        assert_positioned(&r);
    }
}

/// Creates a person with a password in `tenant` as `by`; returns their id.
async fn create_person(
    by: &Client,
    tenant: &str,
    email: &str,
    password: &str,
    roles: &[&str],
) -> String {
    let r = by
        .post(
            &format!("/v1/tenants/{tenant}/users"),
            json!({"email": email, "name": name_of(email), "password": password, "roles": roles}),
        )
        .await;
    let body = r.ok(201);
    assert_eq!(body["kind"], "person", "{r:?}");
    assert_eq!(body["status"], "active", "{r:?}");
    assert_eq!(body["password_set"], true, "{r:?}");
    assert_eq!(body["email"], email, "{r:?}");
    assert_positioned(&r);
    body["user_id"].as_str().unwrap().to_owned()
}

/// A display name made from an email's local part.
fn name_of(email: &str) -> String {
    let local = email.split('@').next().unwrap();
    format!("{local} Testperson")
}

// ---------------------------------------------------------------------------------------------
// HTTP.

/// An HTTP client of one server, optionally carrying an access token. Clones share the highest
/// position any command answered, and every read under `/v1` asks for it with
/// `Custodian-Min-Position`, so reads see the writes before them.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    written: Arc<AtomicU64>,
}

/// An HTTP answer: status, headers, and the body as JSON (`Null` when empty, a string when it is
/// not JSON).
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status and returns the body.
    #[track_caller]
    fn ok(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "unexpected answer: {self:?}");
        &self.body
    }

    /// Asserts an RFC 9457 problem document with this status and `code`.
    #[track_caller]
    fn problem(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "unexpected answer: {self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        assert_eq!(self.body["code"], code, "{self:?}");
        assert_eq!(self.body["status"], status, "{self:?}");
        assert!(self.body["title"].is_string() && self.body["detail"].is_string());
        assert!(self.body["type"].is_string(), "{self:?}");
    }
}

/// Asserts that a command's answer carries `Custodian-Position`, equal to the body's `position`.
#[track_caller]
fn assert_positioned(r: &Answer) {
    let header = r
        .header("custodian-position")
        .unwrap_or_else(|| panic!("no Custodian-Position on a command's answer: {r:?}"));
    let position: u64 = header.parse().unwrap();
    assert!(position > 0, "{r:?}");
    assert_eq!(r.body["position"], position, "{r:?}");
}

impl Client {
    fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .user_agent(USER_AGENT)
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            base: base.to_owned(),
            token: None,
            written: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The same client, sending `token` as its bearer token.
    fn bearer(&self, token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    /// The same client, without a token.
    fn anonymous(&self) -> Self {
        Self {
            token: None,
            ..self.clone()
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None).await
    }

    async fn delete(&self, path: &str) -> Answer {
        self.send(Method::DELETE, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(
            Method::POST,
            path,
            Some(("application/json", body.to_string().into_bytes())),
        )
        .await
    }

    /// A POST without a body.
    async fn post_empty(&self, path: &str) -> Answer {
        self.send(Method::POST, path, None).await
    }

    async fn patch(&self, path: &str, body: Value) -> Answer {
        self.send(
            Method::PATCH,
            path,
            Some(("application/json", body.to_string().into_bytes())),
        )
        .await
    }

    /// Sends `body` as it is, with `content_type` (none when empty).
    async fn raw(&self, method: Method, path: &str, content_type: &str, body: Vec<u8>) -> Answer {
        self.send(method, path, Some((content_type, body))).await
    }

    async fn send(&self, method: Method, path: &str, body: Option<(&str, Vec<u8>)>) -> Answer {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if method == Method::GET && path.starts_with("/v1/") {
            request = request.header(
                "custodian-min-position",
                self.written.load(Ordering::SeqCst).to_string(),
            );
        }
        if let Some((content_type, bytes)) = body {
            if !content_type.is_empty() {
                request = request.header("content-type", content_type);
            }
            request = request.body(bytes);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        if method != Method::GET
            && let Some(p) = headers
                .get("custodian-position")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
        {
            self.written.fetch_max(p, Ordering::SeqCst);
        }
        assert!(
            status < 500,
            "{method} {path} answered {status} (a 5xx is a bug): {body}"
        );
        Answer {
            status,
            headers,
            body,
        }
    }

    /// The log's head position, from `/v1/admin/readiness` as an operator.
    async fn head(&self) -> u64 {
        let r = self
            .bearer(custodian_testkit::deployment::SCRAPE_TOKEN)
            .get("/v1/admin/readiness")
            .await;
        r.ok(200)["head"]["position"].as_u64().unwrap()
    }
}

/// What a completed login or refresh hands out.
#[derive(Debug, Clone)]
struct Tokens {
    access: String,
    refresh: String,
    session_id: String,
    user_id: String,
}

impl Tokens {
    #[track_caller]
    fn from(body: &Value) -> Self {
        assert_eq!(body["status"], "authenticated", "{body}");
        assert_eq!(body["token_type"], "Bearer", "{body}");
        let text = |field: &str| {
            body[field]
                .as_str()
                .unwrap_or_else(|| panic!("no {field} in {body}"))
                .to_owned()
        };
        Self {
            access: text("access_token"),
            refresh: text("refresh_token"),
            session_id: text("session_id"),
            user_id: text("user_id"),
        }
    }
}

async fn login(api: &Client, tenant: &str, email: &str, password: &str) -> Answer {
    api.anonymous()
        .post(
            "/v1/auth/login",
            json!({"tenant": tenant, "email": email, "password": password}),
        )
        .await
}

/// Logs in and asserts a complete login (no second factor).
async fn login_ok(api: &Client, tenant: &str, email: &str, password: &str) -> Tokens {
    let r = login(api, tenant, email, password).await;
    let tokens = Tokens::from(r.ok(200));
    assert_positioned(&r);
    assert_eq!(r.body["tenant"], tenant);
    tokens
}

/// Asserts that a login is refused with the one answer every wrong credential gets.
#[track_caller]
fn assert_invalid_credentials(r: &Answer) {
    r.problem(401, "invalid_credentials");
}

async fn refresh(api: &Client, refresh_token: &str) -> Answer {
    api.anonymous()
        .post("/v1/auth/refresh", json!({"refresh_token": refresh_token}))
        .await
}

/// Asserts that an access token is refused now.
async fn assert_token_refused(api: &Client, access: &str) {
    let r = api.bearer(access).get("/v1/auth/me").await;
    r.problem(401, "unauthenticated");
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")),
        "{r:?}"
    );
}

/// Asserts that an access token works now; returns `/v1/auth/me`.
async fn assert_token_works(api: &Client, access: &str) -> Value {
    let r = api.bearer(access).get("/v1/auth/me").await;
    r.ok(200).clone()
}

/// The header and the claims of a JWT, decoded (not verified).
fn jwt_parts(token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    let decode = |p: &str| -> Value { serde_json::from_slice(&base64url_decode(p)).unwrap() };
    (decode(parts[0]), decode(parts[1]))
}

/// The last `.`-separated part of an opaque token: its random secret.
fn secret_part(token: &str) -> &str {
    token.rsplit('.').next().unwrap()
}

// ---------------------------------------------------------------------------------------------
// 1 and 2: bootstrap, login, access tokens.

async fn bootstrap_login_and_access_tokens(ledger: Deployment) {
    // Bad input is refused before anything is written.
    for (email, password, says) in [
        (ADMIN_EMAIL, "1qaz2wsx3edc4rfv", "too common"),
        (ADMIN_EMAIL, "Zq7#mVx", "at least 15 characters"),
        (ADMIN_EMAIL, "Zq7#mVx!pL2$wR", "at least 15 characters"),
        ("not-an-email", ADMIN_PASSWORD, "email"),
    ] {
        let out = ledger.try_bootstrap(email, ADMIN_NAME, password).await;
        assert_eq!(out.code, Some(2), "{out:?}");
        assert!(out.stderr.contains(says), "{out:?}");
        assert!(
            !out.stderr.contains("Zq7#mVx"),
            "echoes the password: {out:?}"
        );
    }
    assert!(
        ledger.events().await.is_empty(),
        "a refused bootstrap wrote"
    );

    let out = ledger
        .try_bootstrap(ADMIN_EMAIL, ADMIN_NAME, ADMIN_PASSWORD)
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("_system"), "{out:?}");
    let admin_id = out
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with("user_"))
        .map(|w| w.trim_end_matches([';', ',', '.']).to_owned())
        .unwrap_or_else(|| panic!("no user id in {out:?}"));
    let head = ledger.events().await.len();
    assert!(head > 0);

    let again = ledger
        .try_bootstrap(
            "second@platform.test",
            ADMIN_NAME,
            "another fine passphrase",
        )
        .await;
    assert_eq!(again.code, Some(2), "{again:?}");
    assert!(again.stderr.contains("empty ledger"), "{again:?}");
    assert_eq!(
        ledger.events().await.len(),
        head,
        "a refused bootstrap wrote"
    );

    let server = ledger.serve(&[]).await;
    let api = Client::new(&server.base);
    // Still refused while the server runs.
    let again = ledger
        .try_bootstrap(
            "second@platform.test",
            ADMIN_NAME,
            "another fine passphrase",
        )
        .await;
    assert_eq!(again.code, Some(2), "{again:?}");

    // Login.
    let r = login(&api, SYSTEM, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let body = r.ok(200);
    assert_positioned(&r);
    let tokens = Tokens::from(body);
    assert_eq!(body["tenant"], SYSTEM);
    assert_eq!(body["user_id"], admin_id.as_str());
    assert_eq!(body["expires_in"], 900);
    assert!(tokens.session_id.starts_with("sess_"), "{body}");
    assert!(
        tokens
            .refresh
            .starts_with(&format!("rt.{SYSTEM}.{}.0.", tokens.session_id)),
        "{body}"
    );

    // The access token: EdDSA, at+jwt, a kid the JWKS publishes, the claims RFC 9068 asks for.
    let (header, claims) = jwt_parts(&tokens.access);
    assert_eq!(header["alg"], "EdDSA", "{header}");
    assert_eq!(header["typ"], "at+jwt", "{header}");
    let kid = header["kid"].as_str().expect("a kid").to_owned();
    assert_eq!(claims["sub"], admin_id.as_str(), "{claims}");
    assert_eq!(claims["tenant"], SYSTEM, "{claims}");
    assert_eq!(claims["sid"], tokens.session_id.as_str(), "{claims}");
    assert_eq!(claims["iss"], "custodian", "{claims}");
    assert!(
        claims["aud"] == "custodian" || claims["aud"] == json!(["custodian"]),
        "{claims}"
    );
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert_eq!(exp - iat, 900, "{claims}");
    assert!(
        claims["nbf"].as_u64().is_some_and(|nbf| nbf <= iat + 1),
        "{claims}"
    );
    assert!(claims["jti"].is_string(), "{claims}");
    assert!(
        claims["roles"]
            .as_array()
            .unwrap()
            .contains(&json!("platform_admin")),
        "{claims}"
    );
    let jwks = api.get("/.well-known/jwks.json").await;
    let keys = jwks.ok(200)["keys"].as_array().unwrap().clone();
    let key = keys
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("kid {kid} not in {keys:?}"));
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    for k in &keys {
        assert!(
            k.get("d").is_none(),
            "the JWKS publishes a private key: {k}"
        );
    }

    // Who am I: email and name decrypted, roles.
    let me = assert_token_works(&api, &tokens.access).await;
    assert_eq!(me["user_id"], admin_id.as_str());
    assert_eq!(me["tenant"], SYSTEM);
    assert_eq!(me["kind"], "person");
    assert_eq!(me["email"], ADMIN_EMAIL);
    assert_eq!(me["name"], ADMIN_NAME);
    assert_eq!(me["roles"], json!(["platform_admin"]));
    assert_eq!(me["mfa_enabled"], false);
    assert_eq!(me["session_id"], tokens.session_id.as_str());

    // Email matching ignores case and surrounding spaces.
    login_ok(&api, SYSTEM, " ROOT@Platform.TEST ", ADMIN_PASSWORD).await;

    // A wrong password, an unknown email and an unknown tenant get the very same answer.
    let answers = [
        login(&api, SYSTEM, ADMIN_EMAIL, "not the password at all").await,
        login(&api, SYSTEM, "nobody@platform.test", ADMIN_PASSWORD).await,
        login(&api, "nosuch", ADMIN_EMAIL, ADMIN_PASSWORD).await,
    ];
    for a in &answers {
        assert_invalid_credentials(a);
        assert_eq!(a.body, answers[0].body, "the answers differ");
        assert_eq!(
            a.header("www-authenticate"),
            answers[0].header("www-authenticate")
        );
    }

    // Tokens that are absent, malformed, forged or tampered with are refused.
    let r = api.get("/v1/auth/me").await;
    r.problem(401, "unauthenticated");
    assert_token_refused(&api, "garbage").await;
    assert_token_refused(&api, &tokens.refresh).await;
    let parts: Vec<&str> = tokens.access.split('.').collect();
    let none_header = base64url(
        json!({"alg": "none", "typ": "at+jwt", "kid": kid})
            .to_string()
            .as_bytes(),
    );
    assert_token_refused(&api, &format!("{none_header}.{}.", parts[1])).await;
    let hs_header = base64url(
        json!({"alg": "HS256", "typ": "at+jwt", "kid": kid})
            .to_string()
            .as_bytes(),
    );
    assert_token_refused(&api, &format!("{hs_header}.{}.{}", parts[1], parts[2])).await;
    let mut forged = claims.clone();
    forged["roles"] = json!(["platform_admin", "tenant_admin"]);
    forged["sub"] = json!("user_00000000000000000000000000");
    let forged = base64url(forged.to_string().as_bytes());
    assert_token_refused(&api, &format!("{}.{forged}.{}", parts[0], parts[2])).await;
    let r = api.anonymous().send(Method::GET, "/v1/auth/me", None).await;
    r.problem(401, "unauthenticated");
    // The genuine token still works after all that.
    assert_token_works(&api, &tokens.access).await;
}

// ---------------------------------------------------------------------------------------------
// 3 and 4: refresh rotation, logout, sessions.

async fn refresh_rotation_logout_and_sessions(ledger: Deployment) {
    let w = bootstrap_and_login(ledger, &[]).await;
    let api = &w.api;

    // Rotation: each refresh token is good once, for a new pair in the same session.
    let first = login_ok(api, SYSTEM, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let r = refresh(api, &first.refresh).await;
    let second = Tokens::from(r.ok(200));
    assert_positioned(&r);
    assert_eq!(second.session_id, first.session_id);
    assert_ne!(second.refresh, first.refresh);
    assert_ne!(second.access, first.access);
    assert!(
        second
            .refresh
            .starts_with(&format!("rt.{SYSTEM}.{}.1.", first.session_id)),
        "{second:?}"
    );
    assert_token_works(api, &second.access).await;

    // The spent token again: reuse, and the whole session dies with it.
    refresh(api, &first.refresh)
        .await
        .problem(401, "refresh_token_reused");
    refresh(api, &second.refresh)
        .await
        .problem(401, "unauthenticated");
    assert_token_refused(api, &second.access).await;
    assert_token_refused(api, &first.access).await;
    for bad in [
        "rt.nope".to_owned(),
        String::new(),
        w.admin.access.clone(),
        format!("rt.{SYSTEM}.{}.0.{}", w.admin.session_id, "A".repeat(43)),
    ] {
        refresh(api, &bad).await.problem(401, "unauthenticated");
    }
    // Nobody else's session was touched by any of that.
    assert_token_works(api, &w.admin.access).await;
    let r = refresh(api, &w.admin.refresh).await;
    let admin = Tokens::from(r.ok(200));

    // One refresh token presented twice at once: exactly one new pair, never two.
    let racer = login_ok(api, SYSTEM, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (x, y) = tokio::join!(refresh(api, &racer.refresh), refresh(api, &racer.refresh));
    let mut statuses = [x.status, y.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 401], "{x:?} {y:?}");
    let loser = if x.status == 401 { &x } else { &y };
    loser.problem(401, "refresh_token_reused");
    let winner = Tokens::from(if x.status == 200 { &x.body } else { &y.body });
    // The reuse revoked the session, the winner's new tokens with it.
    assert_token_refused(api, &winner.access).await;
    refresh(api, &winner.refresh)
        .await
        .problem(401, "unauthenticated");

    // Sessions: three more logins of the same person.
    let a = login_ok(api, SYSTEM, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let b = login_ok(api, SYSTEM, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let c = login_ok(api, SYSTEM, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let as_a = api.bearer(&a.access);
    let r = as_a.get("/v1/auth/sessions").await;
    let items = r.ok(200)["items"].as_array().unwrap().clone();
    let ids: HashSet<&str> = items
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    let expected: HashSet<&str> = [&admin, &a, &b, &c]
        .iter()
        .map(|t| t.session_id.as_str())
        .collect();
    assert_eq!(ids, expected, "only live sessions by default: {items:?}");
    for s in &items {
        assert_eq!(s["user_id"], a.user_id.as_str(), "{s}");
        assert_eq!(s["status"], "active", "{s}");
        assert_eq!(s["method"], "password", "{s}");
        assert_eq!(s["ip"], "127.0.0.1", "{s}");
        assert_eq!(s["user_agent"], USER_AGENT, "{s}");
        assert_eq!(
            s["current"],
            s["session_id"] == a.session_id.as_str(),
            "{s}"
        );
    }
    assert!(r.header("custodian-position").is_some());
    let r = as_a.get("/v1/auth/sessions?limit=2").await;
    let page = r.ok(200);
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let r = as_a
        .get(&format!("/v1/auth/sessions?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(r.ok(200)["items"].as_array().unwrap().len(), 2);
    as_a.get("/v1/auth/sessions?limit=0")
        .await
        .problem(422, "validation_failed");

    // Revoking another session of one's own: it stops at once, access and refresh.
    let r = as_a
        .delete(&format!("/v1/auth/sessions/{}", b.session_id))
        .await;
    r.ok(200);
    assert_positioned(&r);
    assert_token_refused(api, &b.access).await;
    refresh(api, &b.refresh)
        .await
        .problem(401, "unauthenticated");
    assert_token_works(api, &a.access).await;
    let unknown = custodian_domain::id::type_id("sess", uuid::Uuid::now_v7());
    as_a.delete(&format!("/v1/auth/sessions/{unknown}"))
        .await
        .problem(404, "not_found");
    as_a.delete("/v1/auth/sessions/not-a-session")
        .await
        .problem(404, "not_found");

    // Someone else's session, even of the same tenant, does not exist for the caller.
    let other_email = "other.admin@platform.test";
    let other_password = "yet another passphrase";
    create_person(&w.root(), SYSTEM, other_email, other_password, &[]).await;
    let other = login_ok(api, SYSTEM, other_email, other_password).await;
    let r = as_a
        .delete(&format!("/v1/auth/sessions/{}", other.session_id))
        .await;
    r.problem(404, "not_found");
    api.bearer(&other.access)
        .delete(&format!("/v1/auth/sessions/{}", a.session_id))
        .await
        .problem(404, "not_found");
    assert_token_works(api, &other.access).await;
    assert_token_works(api, &a.access).await;
    let mine = api.bearer(&other.access).get("/v1/auth/sessions").await;
    let mine = mine.ok(200)["items"].as_array().unwrap().clone();
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["session_id"], other.session_id.as_str());

    // Logout: the token is refused immediately, and so is its refresh token.
    let r = api.bearer(&c.access).post_empty("/v1/auth/logout").await;
    r.ok(200);
    assert_positioned(&r);
    assert_token_refused(api, &c.access).await;
    refresh(api, &c.refresh)
        .await
        .problem(401, "unauthenticated");
    api.bearer(&c.access)
        .post_empty("/v1/auth/logout")
        .await
        .problem(401, "unauthenticated");

    // The listing shows what happened.
    let r = as_a.get("/v1/auth/sessions").await;
    let live: HashSet<String> = r.ok(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(live.contains(&a.session_id) && live.contains(&admin.session_id));
    assert!(!live.contains(&b.session_id) && !live.contains(&c.session_id));
    let r = as_a.get("/v1/auth/sessions?active=false").await;
    let all = r.ok(200)["items"].as_array().unwrap().clone();
    let find = |id: &str| {
        all.iter()
            .find(|s| s["session_id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed: {all:?}"))
            .clone()
    };
    for (t, reason) in [
        (&b, "revoked_by_user"),
        (&c, "logout"),
        (&first, "refresh_token_reuse"),
    ] {
        let s = find(&t.session_id);
        assert_eq!(s["status"], "revoked", "{s}");
        assert_eq!(s["revoke_reason"], reason, "{s}");
        assert!(s["revoked_at"].is_string(), "{s}");
    }
    assert!(find(&first.session_id)["last_refreshed_at"].is_string());
}

// ---------------------------------------------------------------------------------------------
// 5: password change and reset.

async fn password_change_and_reset(ledger: Deployment) {
    let w = bootstrap_and_login(ledger, &[]).await;
    let api = &w.api;
    w.create_tenant("acme").await;
    let (email, first_pw, second_pw, third_pw) = (
        "ada@acme.test",
        "analytical engine 1843",
        "difference engine 1822",
        "jacquard loom punch cards",
    );
    let ada = create_person(&w.root(), "acme", email, first_pw, &[]).await;
    let s1 = login_ok(api, "acme", email, first_pw).await;
    let s2 = login_ok(api, "acme", email, first_pw).await;
    let as_s1 = api.bearer(&s1.access);

    // The current password is required, and must be right.
    as_s1
        .post("/v1/auth/password", json!({"new_password": second_pw}))
        .await
        .problem(422, "validation_failed");
    as_s1
        .post(
            "/v1/auth/password",
            json!({"current_password": "not my password", "new_password": second_pw}),
        )
        .await
        .problem(403, "invalid_credentials");
    as_s1
        .post(
            "/v1/auth/password",
            json!({"current_password": first_pw, "new_password": "password"}),
        )
        .await
        .problem(422, "validation_failed");
    as_s1
        .post(
            "/v1/auth/password",
            json!({"current_password": first_pw, "new_password": "short"}),
        )
        .await
        .problem(422, "validation_failed");
    assert_token_works(api, &s2.access).await;

    let r = as_s1
        .post(
            "/v1/auth/password",
            json!({"current_password": first_pw, "new_password": second_pw}),
        )
        .await;
    r.ok(200);
    assert_positioned(&r);
    // The current session stays; every other one is revoked.
    assert_token_works(api, &s1.access).await;
    assert_token_refused(api, &s2.access).await;
    refresh(api, &s2.refresh)
        .await
        .problem(401, "unauthenticated");
    assert_invalid_credentials(&login(api, "acme", email, first_pw).await);
    let s3 = login_ok(api, "acme", email, second_pw).await;
    let s4 = login_ok(api, "acme", email, second_pw).await;

    // Reset with a token an administrator issued.
    let r = w
        .root()
        .post_empty(&format!("/v1/tenants/acme/users/{ada}/password-reset"))
        .await;
    let issued = r.ok(201).clone();
    assert_positioned(&r);
    assert_eq!(issued["user_id"], ada.as_str());
    assert!(issued["expires_at"].is_string());
    let token = issued["reset_token"].as_str().unwrap().to_owned();
    assert!(token.starts_with(&format!("pwr.acme.{ada}.")), "{token}");
    let anon = api.anonymous();
    anon.post(
        "/v1/auth/password/reset",
        json!({"token": token, "new_password": "password"}),
    )
    .await
    .problem(422, "validation_failed");
    for bad in [
        format!("pwr.acme.{ada}.0.{}", "A".repeat(43)),
        "pwr.nope".to_owned(),
        s3.refresh.clone(),
    ] {
        anon.post(
            "/v1/auth/password/reset",
            json!({"token": bad, "new_password": third_pw}),
        )
        .await
        .problem(401, "unauthenticated");
    }
    // Sessions survive until the reset is done.
    assert_token_works(api, &s3.access).await;
    let r = anon
        .post(
            "/v1/auth/password/reset",
            json!({"token": token, "new_password": third_pw}),
        )
        .await;
    assert_eq!(r.ok(200)["user_id"], ada.as_str());
    assert_positioned(&r);
    // Every session is revoked, the current one included.
    for s in [&s1, &s3, &s4] {
        assert_token_refused(api, &s.access).await;
        refresh(api, &s.refresh)
            .await
            .problem(401, "unauthenticated");
    }
    assert_invalid_credentials(&login(api, "acme", email, second_pw).await);
    login_ok(api, "acme", email, third_pw).await;
    // The token works once.
    anon.post(
        "/v1/auth/password/reset",
        json!({"token": token, "new_password": "a fourth fine password"}),
    )
    .await
    .problem(401, "unauthenticated");
    login_ok(api, "acme", email, third_pw).await;
}

// ---------------------------------------------------------------------------------------------
// 6: TOTP.

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Starts and confirms TOTP for the holder of `me`; returns the seed, the step whose code the
/// confirmation spent (`c - 1` where `c` is the current step), `c`, and the recovery codes.
///
/// The confirmation uses the previous step's code, which the server accepts only while its own
/// step is at most `c`. If a step boundary passes between reading the clock and the server
/// checking the code, the refusal is checked to be that (the step moved on) and the confirmation
/// is made again with the new step: a refused confirmation counts nothing. After it, the flow's
/// codes of steps `c` and `c + 1` stay valid for at least 30 and 60 seconds, across a boundary.
async fn enroll_totp(me: &Client, email: &str) -> (Vec<u8>, u64, Vec<String>) {
    let r = me.post_empty("/v1/auth/mfa/totp").await;
    let body = r.ok(201).clone();
    assert_positioned(&r);
    let secret = body["secret"].as_str().unwrap().to_owned();
    let seed = base32_decode(&secret);
    assert_eq!(seed.len(), 20, "{secret}");
    assert_eq!(
        body["otpauth_uri"],
        format!(
            "otpauth://totp/custodian:{}?secret={secret}&issuer=custodian&algorithm=SHA1&digits=6&period=30",
            email.replace('@', "%40")
        )
    );
    // A wrong code does not confirm.
    me.post(
        "/v1/auth/mfa/totp/confirm",
        json!({"code": totp(&seed, unix_now() / 30 + 7)}),
    )
    .await
    .problem(401, "unauthenticated");
    // The previous step's code is still accepted (clock skew), and is spent by confirming.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let c = unix_now() / 30;
        let r = me
            .post(
                "/v1/auth/mfa/totp/confirm",
                json!({"code": totp(&seed, c - 1)}),
            )
            .await;
        if r.status == 200 {
            let codes = recovery_codes(&r);
            assert_positioned(&r);
            assert_recovery_codes(&codes);
            return (seed, c, codes);
        }
        r.problem(401, "unauthenticated");
        assert!(
            unix_now() / 30 > c && Instant::now() < deadline,
            "the code of step {} was refused within step {c}",
            c - 1
        );
    }
}

/// The recovery codes a successful (200) answer hands out.
#[track_caller]
fn recovery_codes(r: &Answer) -> Vec<String> {
    r.ok(200)["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect()
}

/// `POST /v1/auth/mfa/recovery-codes` as the holder of `me`, proving presence with `proof`; returns
/// the answer and the new codes, which it must hand out.
async fn new_recovery_codes(me: &Client, proof: Value) -> (Answer, Vec<String>) {
    let r = me.post("/v1/auth/mfa/recovery-codes", proof).await;
    let codes = recovery_codes(&r);
    (r, codes)
}

#[track_caller]
fn assert_recovery_codes(codes: &[String]) {
    assert_eq!(codes.len(), 10, "{codes:?}");
    assert_eq!(codes.iter().collect::<HashSet<_>>().len(), 10, "{codes:?}");
    for code in codes {
        let (a, b) = code.split_once('-').unwrap_or_else(|| panic!("{code}"));
        assert!(
            a.len() == 5
                && b.len() == 5
                && code
                    .chars()
                    .all(|ch| ch == '-' || ch.is_ascii_alphanumeric()),
            "{code}"
        );
    }
}

/// Logs in with a password and expects a second-factor challenge; returns its id.
async fn challenge(api: &Client, tenant: &str, email: &str, password: &str) -> String {
    let r = login(api, tenant, email, password).await;
    let body = r.ok(200);
    assert_eq!(body["status"], "mfa_required", "{body}");
    assert!(body.get("access_token").is_none(), "{body}");
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert_eq!(body["expires_in"], 300, "{body}");
    assert_positioned(&r);
    body["challenge_id"].as_str().unwrap().to_owned()
}

async fn mfa_verify(api: &Client, body: Value) -> Answer {
    api.anonymous().post("/v1/auth/mfa/verify", body).await
}

/// The login method of the session of `access`, as its owner's listing shows it.
async fn session_method(api: &Client, access: &str) -> String {
    let r = api.bearer(access).get("/v1/auth/sessions").await;
    r.ok(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == true)
        .map(|s| s["method"].as_str().unwrap().to_owned())
        .expect("the current session is listed")
}

async fn totp_enrollment_challenges_and_recovery_codes(ledger: Deployment) {
    let w = bootstrap_and_login(ledger, &[]).await;
    let api = &w.api;
    let me = w.root();
    me.post("/v1/auth/mfa/totp/confirm", json!({"code": "123456"}))
        .await
        .problem(409, "conflict");
    me.post(
        "/v1/auth/mfa/totp/disable",
        json!({"password": ADMIN_PASSWORD}),
    )
    .await
    .problem(409, "conflict");
    me.post(
        "/v1/auth/mfa/recovery-codes",
        json!({"password": ADMIN_PASSWORD}),
    )
    .await
    .problem(409, "conflict");

    // A seed that was never confirmed is replaced by the next enrollment.
    let r = me.post_empty("/v1/auth/mfa/totp").await;
    let stale = base32_decode(r.ok(201)["secret"].as_str().unwrap());
    let (seed, c, codes) = enroll_totp(&me, ADMIN_EMAIL).await;
    assert_ne!(seed, stale);
    assert_eq!(
        assert_token_works(api, &w.admin.access).await["mfa_enabled"],
        true
    );
    me.post_empty("/v1/auth/mfa/totp")
        .await
        .problem(409, "conflict");

    // The password alone no longer logs in: it opens a challenge.
    let first = challenge(api, SYSTEM, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert!(
        first.starts_with(&format!("mfa.{SYSTEM}.{}.", w.admin.user_id)),
        "{first}"
    );
    // A wrong password still gets the usual answer, not a challenge.
    assert_invalid_credentials(&login(api, SYSTEM, ADMIN_EMAIL, "wrong password!!").await);
    // The code spent by the confirmation does not work again.
    mfa_verify(
        api,
        json!({"challenge_id": first, "code": totp(&seed, c - 1)}),
    )
    .await
    .problem(401, "unauthenticated");
    mfa_verify(api, json!({"challenge_id": first}))
        .await
        .problem(422, "validation_failed");
    mfa_verify(
        api,
        json!({"challenge_id": first, "code": totp(&seed, c), "recovery_code": codes[0]}),
    )
    .await
    .problem(422, "validation_failed");
    let forged = format!("mfa.{SYSTEM}.{}.0.{}", w.admin.user_id, "A".repeat(43));
    mfa_verify(api, json!({"challenge_id": forged, "code": totp(&seed, c)}))
        .await
        .problem(401, "unauthenticated");
    let r = mfa_verify(api, json!({"challenge_id": first, "code": totp(&seed, c)})).await;
    let with_totp = Tokens::from(r.ok(200));
    assert_positioned(&r);
    assert_eq!(
        session_method(api, &with_totp.access).await,
        "password_totp"
    );
    // The challenge is spent with its login.
    mfa_verify(
        api,
        json!({"challenge_id": first, "code": totp(&seed, c + 1)}),
    )
    .await
    .problem(401, "unauthenticated");

    // The same code again, on a new challenge: refused.
    let second = challenge(api, SYSTEM, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_ne!(second, first);
    mfa_verify(api, json!({"challenge_id": second, "code": totp(&seed, c)}))
        .await
        .problem(401, "unauthenticated");
    // A recovery code works once, however it is typed.
    let r = mfa_verify(
        api,
        json!({"challenge_id": second, "recovery_code": codes[0].to_uppercase()}),
    )
    .await;
    let with_recovery = Tokens::from(r.ok(200));
    assert_eq!(
        session_method(api, &with_recovery.access).await,
        "password_recovery_code"
    );
    let third = challenge(api, SYSTEM, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    mfa_verify(
        api,
        json!({"challenge_id": third, "recovery_code": codes[0]}),
    )
    .await
    .problem(401, "unauthenticated");
    mfa_verify(
        api,
        json!({"challenge_id": third, "recovery_code": "zzzzz-zzzzz"}),
    )
    .await
    .problem(401, "unauthenticated");
    let r = mfa_verify(
        api,
        json!({"challenge_id": third, "recovery_code": codes[1]}),
    )
    .await;
    Tokens::from(r.ok(200));

    // New recovery codes need proof of presence; the old ones die.
    let me = api.bearer(&with_recovery.access);
    me.post("/v1/auth/mfa/recovery-codes", json!({}))
        .await
        .problem(422, "validation_failed");
    me.post(
        "/v1/auth/mfa/recovery-codes",
        json!({"password": ADMIN_PASSWORD, "code": totp(&seed, c + 1)}),
    )
    .await
    .problem(422, "validation_failed");
    me.post(
        "/v1/auth/mfa/recovery-codes",
        json!({"password": "not the password"}),
    )
    .await
    .problem(403, "invalid_credentials");
    let (r, fresh) = new_recovery_codes(&me, json!({"password": ADMIN_PASSWORD})).await;
    assert_positioned(&r);
    assert_recovery_codes(&fresh);
    assert!(fresh.iter().all(|f| !codes.contains(f)));
    let fourth = challenge(api, SYSTEM, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    mfa_verify(
        api,
        json!({"challenge_id": fourth, "recovery_code": codes[2]}),
    )
    .await
    .problem(401, "unauthenticated");
    let r = mfa_verify(
        api,
        json!({"challenge_id": fourth, "recovery_code": fresh[0]}),
    )
    .await;
    Tokens::from(r.ok(200));

    // Wrong second factors count like wrong passwords (the fifth from one address locks: that,
    // and the lock's length, are tested with a controllable clock in crates/app); four do not
    // stop the right one.
    let before = w.ledger.events().await.len();
    let fifth = challenge(api, SYSTEM, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    for n in 0..4 {
        let wrong = if n % 2 == 0 {
            json!({"challenge_id": fifth, "recovery_code": format!("zzzzz-zzzz{}", n + 2)})
        } else {
            json!({"challenge_id": fifth, "code": totp(&seed, c + 20 + n)})
        };
        mfa_verify(api, wrong).await.problem(401, "unauthenticated");
    }
    let failed = w.ledger.events().await[before..]
        .iter()
        .filter(|e| e["type"] == "user.login_failed" && e["data"]["reason"] == "bad_code")
        .count();
    assert_eq!(failed, 4);
    let r = mfa_verify(
        api,
        json!({"challenge_id": fifth, "recovery_code": fresh[1]}),
    )
    .await;
    let latest = Tokens::from(r.ok(200));

    // Turning TOTP off needs the password or a current code.
    let me = api.bearer(&latest.access);
    me.post("/v1/auth/mfa/totp/disable", json!({}))
        .await
        .problem(422, "validation_failed");
    me.post(
        "/v1/auth/mfa/totp/disable",
        json!({"password": "not the password"}),
    )
    .await
    .problem(403, "invalid_credentials");
    me.post(
        "/v1/auth/mfa/totp/disable",
        json!({"code": totp(&seed, c + 9)}),
    )
    .await
    .problem(403, "invalid_credentials");
    // The code of an already used step proves nothing.
    me.post("/v1/auth/mfa/totp/disable", json!({"code": totp(&seed, c)}))
        .await
        .problem(403, "invalid_credentials");
    let r = me
        .post(
            "/v1/auth/mfa/totp/disable",
            json!({"code": totp(&seed, c + 1)}),
        )
        .await;
    r.ok(200);
    assert_positioned(&r);
    assert_eq!(
        assert_token_works(api, &latest.access).await["mfa_enabled"],
        false
    );
    // Password-only again; the recovery codes are gone with the seed.
    let plain = login_ok(api, SYSTEM, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(session_method(api, &plain.access).await, "password");
    mfa_verify(
        api,
        json!({"challenge_id": fourth, "recovery_code": fresh[2]}),
    )
    .await
    .problem(401, "unauthenticated");
}

/// A TOTP code that proved presence (for new recovery codes) is spent like a login's: a code seen
/// over a shoulder cannot be replayed within its window.
async fn totp_codes_proving_presence_are_single_use(ledger: Deployment) {
    let w = bootstrap_and_login(ledger, &[]).await;
    let me = w.root();
    let (seed, c, _) = enroll_totp(&me, ADMIN_EMAIL).await;
    let code = totp(&seed, c);
    let (_, codes) = new_recovery_codes(&me, json!({"code": code})).await;
    assert_recovery_codes(&codes);
    me.post("/v1/auth/mfa/recovery-codes", json!({"code": code}))
        .await
        .problem(403, "invalid_credentials");
    // Nor can it complete a login afterwards.
    let id = challenge(&w.api, SYSTEM, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    mfa_verify(&w.api, json!({"challenge_id": id, "code": code}))
        .await
        .problem(401, "unauthenticated");
}

/// Wrong TOTP codes sent to prove presence count as failed attempts, as wrong passwords there and
/// wrong codes at login do: a stolen access token is no licence to guess codes until one fits.
/// The fifth engages the limit of the email from that address, as the log shows; that the next
/// code is then refused, and for how long, is tested with a controllable clock in crates/app.
async fn wrong_totp_codes_proving_presence_are_throttled(ledger: Deployment) {
    let w = bootstrap_and_login(ledger, &[]).await;
    let me = w.root();
    let (seed, c, _) = enroll_totp(&me, ADMIN_EMAIL).await;
    let valid: HashSet<String> = (c - 1..=c + 2).map(|s| totp(&seed, s)).collect();
    let wrong: Vec<String> = (0..1_000_000u32)
        .map(|n| format!("{n:06}"))
        .filter(|code| !valid.contains(code))
        .take(5)
        .collect();
    for code in &wrong {
        me.post("/v1/auth/mfa/totp/disable", json!({"code": code}))
            .await
            .problem(403, "invalid_credentials");
    }
    let types = event_types(&w.ledger).await;
    let bad_codes = types
        .iter()
        .filter(|(t, d)| t == "user.login_failed" && d["reason"] == "bad_code")
        .count();
    assert_eq!(bad_codes, 5, "{types:?}");
    let (_, throttled) = types.last().unwrap();
    assert_eq!(
        (
            &throttled["scope"],
            &throttled["failures"],
            &throttled["ip"]
        ),
        (&json!("email_from_ip"), &json!(5), &json!("127.0.0.1")),
        "{types:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 7: throttling.

/// The event types of the log.
async fn event_types(ledger: &Deployment) -> Vec<(String, Value)> {
    ledger
        .events()
        .await
        .into_iter()
        .map(|e| (e["type"].as_str().unwrap().to_owned(), e["data"].clone()))
        .collect()
}

/// Failed logins are throttled per (email, client address) first, alike for an account and an
/// email that is none, and per client address across emails. Whether a lock still holds depends
/// on the time, so the locks' answers and lengths are tested with a controllable clock in
/// crates/app; here the log shows what the server decided, which does not depend on the time.
async fn login_throttling_per_email_and_address(ledger: Deployment) {
    let w = bootstrap_and_login(ledger, &[]).await;
    let api = &w.api;

    // Five wrong passwords for the account, then five for an email that is no account: every
    // attempt grows the log alike, and the fifth engages the (email, address) limit alike.
    let ghost = "ghost@platform.test";
    let mut growth = vec![];
    for email in [ADMIN_EMAIL, ghost] {
        let mut appended = vec![];
        for _ in 0..5 {
            let before = w.ledger.events().await.len();
            assert_invalid_credentials(&login(api, SYSTEM, email, "wrong password!!").await);
            appended.push(w.ledger.events().await.len() - before);
        }
        growth.push(appended);
    }
    assert_eq!(growth[0], [1, 1, 1, 1, 2]);
    assert_eq!(growth[1], growth[0], "the log tells an account from none");
    let types = event_types(&w.ledger).await;
    let failed: Vec<&Value> = types
        .iter()
        .filter(|(t, _)| t == "user.login_failed")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(failed.len(), 5, "{types:?}");
    // Five failures are far from the account-wide limit: the account itself is not locked.
    assert!(
        failed.iter().all(|d| d["locked_until"].is_null()),
        "{failed:?}"
    );
    let throttled: Vec<&Value> = types
        .iter()
        .filter(|(t, _)| t == "security.login_throttled")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(throttled.len(), 2, "{types:?}");
    for d in &throttled {
        assert_eq!(
            (&d["scope"], &d["failures"], &d["ip"]),
            (&json!("email_from_ip"), &json!(5), &json!("127.0.0.1")),
            "{d}"
        );
    }
    assert_ne!(throttled[0]["email_index"], throttled[1]["email_index"]);

    // Per client address, on a server told to lock after three failures (and with stronger
    // argon2id parameters: a login re-hashes the password, once).
    let World { ledger, server, .. } = w;
    let (code, _) = server.terminate().await;
    assert_eq!(code, Some(0));
    let server = ledger
        .serve(&["--login-ip-failures", "3", "--argon2-iterations", "3"])
        .await;
    let api = Client::new(&server.base);
    let rehashed = |types: &[(String, Value)]| {
        types
            .iter()
            .filter(|(t, _)| t == "user.password_rehashed")
            .count()
    };
    login_ok(&api, SYSTEM, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(rehashed(&event_types(&ledger).await), 1);
    login_ok(&api, SYSTEM, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(
        rehashed(&event_types(&ledger).await),
        1,
        "a hash made with the current parameters was made again"
    );
    // Three failures against three emails: no email's limit, the address's.
    for i in 0..3 {
        assert_invalid_credentials(
            &login(
                &api,
                SYSTEM,
                &format!("stranger{i}@platform.test"),
                "wrong password!!",
            )
            .await,
        );
    }
    let types = event_types(&ledger).await;
    let (last, d) = types.last().unwrap();
    assert_eq!(
        (last.as_str(), &d["scope"], &d["ip"], &d["failures"]),
        (
            "security.login_throttled",
            &json!("ip"),
            &json!("127.0.0.1"),
            &json!(3)
        ),
        "no security.login_throttled for the address"
    );
}

// ---------------------------------------------------------------------------------------------
// 8: tenants and users.

async fn tenant_and_user_administration(ledger: Deployment) {
    let w = bootstrap_and_login(ledger, &[]).await;
    let api = &w.api;
    let root = w.root();

    // Tenants.
    let r = root
        .post(
            "/v1/tenants",
            json!({"slug": "acme", "name": "Acme Corp", "plan": "team"}),
        )
        .await;
    let body = r.ok(201);
    assert_positioned(&r);
    assert_eq!(
        (&body["slug"], &body["name"], &body["plan"], &body["status"]),
        (
            &json!("acme"),
            &json!("Acme Corp"),
            &json!("team"),
            &json!("active")
        )
    );
    root.post("/v1/tenants", json!({"slug": "acme", "name": "Again"}))
        .await
        .problem(409, "conflict");
    root.post("/v1/tenants", json!({"slug": "_system", "name": "No"}))
        .await
        .problem(422, "validation_failed");
    root.post("/v1/tenants", json!({"slug": "Not A Slug", "name": "No"}))
        .await
        .problem(422, "validation_failed");
    let r = root.get("/v1/tenants/acme").await;
    assert_eq!(r.ok(200)["name"], "Acme Corp");
    let r = root.get("/v1/tenants").await;
    assert!(
        r.ok(200)["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["slug"] == "acme")
    );
    let r = root
        .patch(
            "/v1/tenants/acme",
            json!({"name": "Acme Corporation", "plan": "enterprise"}),
        )
        .await;
    assert_eq!(r.ok(200)["plan"], "enterprise");
    assert_positioned(&r);
    assert_eq!(
        root.get("/v1/tenants/acme").await.ok(200)["name"],
        "Acme Corporation"
    );
    root.get("/v1/tenants/nosuch")
        .await
        .problem(404, "not_found");

    // A tenant administrator with a password.
    let (boss_email, boss_pw) = ("boss@acme.test", "the boss is always right");
    let boss_id = create_person(&root, "acme", boss_email, boss_pw, &["tenant_admin"]).await;
    root.post(
        "/v1/tenants/acme/users",
        json!({"email": "BOSS@ACME.TEST", "name": "Clone"}),
    )
    .await
    .problem(409, "conflict");
    let boss = login_ok(api, "acme", boss_email, boss_pw).await;
    let me = assert_token_works(api, &boss.access).await;
    assert_eq!(me["tenant"], "acme");
    // `tenant_admin` is the earlier name of the built-in `admin` role, assigned on the tenant.
    assert_eq!(me["roles"], json!(["admin"]));
    assert_eq!(me["email"], boss_email);
    assert_eq!(me["name"], name_of(boss_email));
    let as_boss = api.bearer(&boss.access);
    // A tenant administrator may not grant platform_admin, nor manage tenants.
    as_boss
        .post(
            "/v1/tenants/acme/users",
            json!({"email": "x@acme.test", "name": "X", "roles": ["platform_admin"]}),
        )
        .await
        .problem(422, "validation_failed");
    as_boss
        .post("/v1/tenants/acme/suspend", json!({"reason": "coup"}))
        .await
        .problem(403, "forbidden");
    as_boss
        .post("/v1/tenants", json!({"slug": "mine", "name": "Mine"}))
        .await
        .problem(403, "forbidden");

    // The tenant administrator invites a person, who accepts and logs in.
    let (eve_email, eve_pw) = ("eve@acme.test", "invited and delighted");
    let r = as_boss
        .post(
            "/v1/tenants/acme/invitations",
            json!({"email": eve_email, "name": "Eve Invitee"}),
        )
        .await;
    let invitation = r.ok(201).clone();
    assert_positioned(&r);
    let eve_id = invitation["user_id"].as_str().unwrap().to_owned();
    let token = invitation["invitation_token"].as_str().unwrap().to_owned();
    assert!(token.starts_with(&format!("inv.acme.{eve_id}.")), "{token}");
    let r = as_boss
        .get(&format!("/v1/tenants/acme/users/{eve_id}"))
        .await;
    let eve = r.ok(200);
    assert_eq!(eve["status"], "invited");
    assert_eq!(eve["email"], eve_email);
    assert_eq!(eve["name"], "Eve Invitee");
    assert_invalid_credentials(&login(api, "acme", eve_email, eve_pw).await);
    let anon = api.anonymous();
    anon.post(
        "/v1/auth/invitations/accept",
        json!({"token": token, "password": "password"}),
    )
    .await
    .problem(422, "validation_failed");
    anon.post(
        "/v1/auth/invitations/accept",
        json!({"token": format!("inv.acme.{eve_id}.0.{}", "A".repeat(43)), "password": eve_pw}),
    )
    .await
    .problem(401, "unauthenticated");
    let r = anon
        .post(
            "/v1/auth/invitations/accept",
            json!({"token": token, "password": eve_pw}),
        )
        .await;
    assert_eq!(r.ok(200)["user_id"], eve_id.as_str());
    assert_positioned(&r);
    anon.post(
        "/v1/auth/invitations/accept",
        json!({"token": token, "password": "another password here"}),
    )
    .await
    .problem(401, "unauthenticated");
    let eve = login_ok(api, "acme", eve_email, eve_pw).await;
    let me = assert_token_works(api, &eve.access).await;
    assert_eq!(me["roles"], json!([]));
    assert_eq!(me["email"], eve_email);
    assert_eq!(
        as_boss
            .get(&format!("/v1/tenants/acme/users/{eve_id}"))
            .await
            .ok(200)["status"],
        "active"
    );

    // Two creations of one email at once: one user, one conflict.
    let body = json!({"email": "twin@acme.test", "name": "Twin", "password": "twin password 1"});
    let (x, y) = tokio::join!(
        as_boss.post("/v1/tenants/acme/users", body.clone()),
        as_boss.post("/v1/tenants/acme/users", body),
    );
    let mut statuses = [x.status, y.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409], "{x:?} {y:?}");
    let twins = as_boss.get("/v1/tenants/acme/users").await;
    let twins = twins.ok(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["email"] == "twin@acme.test")
        .count();
    assert_eq!(twins, 1);
    login_ok(api, "acme", "twin@acme.test", "twin password 1").await;

    // Agents and services: API keys only.
    for kind in ["agent", "service"] {
        let email = format!("{kind}@acme.test");
        as_boss
            .post(
                "/v1/tenants/acme/users",
                json!({"email": email, "name": kind, "kind": kind, "password": "a perfectly fine password"}),
            )
            .await
            .problem(422, "validation_failed");
        let r = as_boss
            .post(
                "/v1/tenants/acme/users",
                json!({"email": email, "name": kind, "kind": kind}),
            )
            .await;
        let body = r.ok(201);
        assert_eq!(body["kind"], kind);
        assert_eq!(body["password_set"], false);
        let id = body["user_id"].as_str().unwrap().to_owned();
        let answer = login(api, "acme", &email, "a perfectly fine password").await;
        assert_invalid_credentials(&answer);
        assert_eq!(
            answer.body,
            login(api, "acme", "nobody@acme.test", "x").await.body
        );
        as_boss
            .post_empty(&format!("/v1/tenants/acme/users/{id}/password-reset"))
            .await
            .problem(409, "conflict");
    }
    let r = as_boss.get("/v1/tenants/acme/users?kind=agent").await;
    let agents = r.ok(200)["items"].as_array().unwrap().clone();
    assert_eq!(agents.len(), 1, "{agents:?}");
    assert_eq!(agents[0]["kind"], "agent");

    // Someone else's session does not exist for a caller, even in the same tenant.
    api.bearer(&eve.access)
        .delete(&format!("/v1/auth/sessions/{}", boss.session_id))
        .await
        .problem(404, "not_found");
    assert_token_works(api, &boss.access).await;

    // Disable: refused at once, everywhere; enable: back.
    let r = as_boss
        .post(
            &format!("/v1/tenants/acme/users/{eve_id}/disable"),
            json!({"reason": "on leave"}),
        )
        .await;
    assert_eq!(r.ok(200)["status"], "disabled");
    assert_positioned(&r);
    assert_token_refused(api, &eve.access).await;
    refresh(api, &eve.refresh)
        .await
        .problem(401, "unauthenticated");
    assert_invalid_credentials(&login(api, "acme", eve_email, eve_pw).await);
    as_boss
        .post(
            &format!("/v1/tenants/acme/users/{eve_id}/disable"),
            json!({"reason": "again"}),
        )
        .await
        .problem(409, "conflict");
    as_boss
        .post(
            &format!("/v1/tenants/acme/users/{eve_id}/disable"),
            json!({"reason": ""}),
        )
        .await
        .problem(422, "validation_failed");
    assert_eq!(
        as_boss
            .get(&format!("/v1/tenants/acme/users/{eve_id}"))
            .await
            .ok(200)["status"],
        "disabled"
    );
    let r = as_boss
        .post_empty(&format!("/v1/tenants/acme/users/{eve_id}/enable"))
        .await;
    assert_eq!(r.ok(200)["status"], "active");
    as_boss
        .post_empty(&format!("/v1/tenants/acme/users/{eve_id}/enable"))
        .await
        .problem(409, "conflict");
    let eve = login_ok(api, "acme", eve_email, eve_pw).await;

    // An administrator lists and ends a user's sessions.
    let eve2 = login_ok(api, "acme", eve_email, eve_pw).await;
    let r = as_boss
        .get(&format!(
            "/v1/tenants/acme/users/{eve_id}/sessions?active=true"
        ))
        .await;
    let live: HashSet<String> = r.ok(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        live,
        HashSet::from([eve.session_id.clone(), eve2.session_id.clone()])
    );
    let r = as_boss
        .delete(&format!("/v1/tenants/acme/users/{eve_id}/sessions"))
        .await;
    assert_eq!(r.ok(200)["revoked"], 2);
    assert_positioned(&r);
    assert_token_refused(api, &eve.access).await;
    assert_token_refused(api, &eve2.access).await;
    let eve = login_ok(api, "acme", eve_email, eve_pw).await;
    let r = as_boss.get("/v1/tenants/acme/credentials").await;
    let creds = r.ok(200)["items"].as_array().unwrap().clone();
    let of_eve = creds
        .iter()
        .find(|c| c["user_id"] == eve_id.as_str())
        .unwrap_or_else(|| panic!("{creds:?}"));
    assert_eq!(of_eve["password_set"], true);
    assert_eq!(of_eve["mfa_enabled"], false);
    assert!(of_eve["last_login_at"].is_string());
    assert!(creds.iter().all(|c| c.get("credential").is_none()));
    let r = as_boss
        .get(&format!("/v1/tenants/acme/users/{boss_id}"))
        .await;
    assert_eq!(r.ok(200)["credentials"]["password_set"], true);

    // Suspend the tenant: every token of it is refused at once, and login is forbidden.
    let r = root
        .post(
            "/v1/tenants/acme/suspend",
            json!({"reason": "unpaid invoices"}),
        )
        .await;
    assert_eq!(r.ok(200)["status"], "suspended");
    assert_positioned(&r);
    assert_token_refused(api, &boss.access).await;
    assert_token_refused(api, &eve.access).await;
    refresh(api, &eve.refresh)
        .await
        .problem(401, "unauthenticated");
    login(api, "acme", boss_email, boss_pw)
        .await
        .problem(403, "forbidden");
    assert_invalid_credentials(&login(api, "acme", boss_email, "wrong password!!").await);
    root.post("/v1/tenants/acme/suspend", json!({"reason": "twice"}))
        .await
        .problem(409, "conflict");
    assert_eq!(
        root.get("/v1/tenants/acme").await.ok(200)["status"],
        "suspended"
    );
    // Reactivate: login works again, but the suspension ended every session for good: the
    // tokens from before it stay refused, and their holders sign in again.
    let r = root.post_empty("/v1/tenants/acme/reactivate").await;
    assert_eq!(r.ok(200)["status"], "active");
    assert_positioned(&r);
    root.post_empty("/v1/tenants/acme/reactivate")
        .await
        .problem(409, "conflict");
    assert_token_refused(api, &boss.access).await;
    assert_token_refused(api, &eve.access).await;
    refresh(api, &eve.refresh)
        .await
        .problem(401, "unauthenticated");
    let boss = login_ok(api, "acme", boss_email, boss_pw).await;
    assert_token_works(api, &boss.access).await;
    let as_boss = api.bearer(&boss.access);
    let eve = login_ok(api, "acme", eve_email, eve_pw).await;
    assert_token_works(api, &eve.access).await;
    let r = refresh(api, &eve.refresh).await;
    let eve = Tokens::from(r.ok(200));
    assert_token_works(api, &eve.access).await;

    // Profile changes: a new email logs in, the old one is released; a taken one is refused.
    let new_email = "eve.renamed@acme.test";
    as_boss
        .patch(
            &format!("/v1/tenants/acme/users/{eve_id}"),
            json!({"email": boss_email}),
        )
        .await
        .problem(409, "conflict");
    as_boss
        .patch(&format!("/v1/tenants/acme/users/{eve_id}"), json!({}))
        .await
        .problem(422, "validation_failed");
    let r = as_boss
        .patch(
            &format!("/v1/tenants/acme/users/{eve_id}"),
            json!({"email": new_email, "name": "Eve Renamed"}),
        )
        .await;
    assert_eq!(r.ok(200)["status"], "active");
    assert_positioned(&r);
    let me = assert_token_works(api, &eve.access).await;
    assert_eq!(me["email"], new_email);
    assert_eq!(me["name"], "Eve Renamed");
    assert_invalid_credentials(&login(api, "acme", eve_email, eve_pw).await);
    login_ok(api, "acme", new_email, eve_pw).await;
    create_person(&root, "acme", eve_email, "the next eve's password", &[]).await;
}

/// Disabling a user who has not finished joining or logging in: an invited user cannot be
/// disabled (and so never activated by an enable), and a second-factor challenge opened before
/// the disable does not log in.
async fn disabling_interrupts_invitations_and_challenges(ledger: Deployment) {
    let w = bootstrap_and_login(ledger, &[]).await;
    let api = &w.api;
    let root = w.root();
    w.create_tenant("acme").await;

    // An invited user cannot be disabled (only deleted), so enabling can never activate someone
    // who did not accept; the invitation keeps working.
    let r = root
        .post(
            "/v1/tenants/acme/invitations",
            json!({"email": "ivy@acme.test", "name": "Ivy"}),
        )
        .await;
    let ivy = r.ok(201)["user_id"].as_str().unwrap().to_owned();
    let token = r.body["invitation_token"].as_str().unwrap().to_owned();
    let user = format!("/v1/tenants/acme/users/{ivy}");
    root.post(&format!("{user}/disable"), json!({"reason": "hold on"}))
        .await
        .problem(409, "conflict");
    root.post_empty(&format!("{user}/enable"))
        .await
        .problem(409, "conflict");
    assert_eq!(root.get(&user).await.ok(200)["status"], "invited");
    let accept = json!({"token": token, "password": "ivy's own password"});
    let r = api
        .anonymous()
        .post("/v1/auth/invitations/accept", accept)
        .await;
    assert_eq!(r.ok(200)["user_id"], ivy.as_str());
    login_ok(api, "acme", "ivy@acme.test", "ivy's own password").await;

    // A challenge opened before the user was disabled does not complete a login.
    let (email, password) = ("ada@acme.test", "ada's password here");
    let ada = create_person(&root, "acme", email, password, &[]).await;
    let session = login_ok(api, "acme", email, password).await;
    let (seed, c, _) = enroll_totp(&api.bearer(&session.access), email).await;
    let id = challenge(api, "acme", email, password).await;
    root.post(
        &format!("/v1/tenants/acme/users/{ada}/disable"),
        json!({"reason": "left"}),
    )
    .await
    .ok(200);
    let r = mfa_verify(api, json!({"challenge_id": id, "code": totp(&seed, c)})).await;
    assert!(r.body.get("access_token").is_none(), "{r:?}");
    r.problem(401, "unauthenticated");
}

// ---------------------------------------------------------------------------------------------
// 9: isolation.

/// Every administration route of `tenant` concerning `user` (its method, path and body).
fn admin_routes(tenant: &str, user: &str) -> Vec<(Method, String, Option<Value>)> {
    let t = format!("/v1/tenants/{tenant}");
    let u = format!("{t}/users/{user}");
    vec![
        (Method::GET, t.clone(), None),
        (
            Method::PATCH,
            t.clone(),
            Some(json!({"name": "Taken over"})),
        ),
        (Method::GET, format!("{t}/users"), None),
        (
            Method::POST,
            format!("{t}/users"),
            Some(
                json!({"email": "intruder@evil.test", "name": "Intruder", "password": "intruder password"}),
            ),
        ),
        (
            Method::POST,
            format!("{t}/invitations"),
            Some(json!({"email": "intruder2@evil.test", "name": "Intruder"})),
        ),
        (Method::GET, format!("{t}/credentials"), None),
        (Method::GET, u.clone(), None),
        (Method::PATCH, u.clone(), Some(json!({"name": "Renamed"}))),
        (
            Method::POST,
            format!("{u}/disable"),
            Some(json!({"reason": "hostile"})),
        ),
        (Method::POST, format!("{u}/enable"), None),
        (Method::POST, format!("{u}/password-reset"), None),
        (Method::GET, format!("{u}/sessions"), None),
        (Method::DELETE, format!("{u}/sessions"), None),
        (Method::DELETE, u.clone(), None),
    ]
}

async fn call(client: &Client, method: Method, path: &str, body: Option<Value>) -> Answer {
    match body {
        Some(b) => {
            client
                .send(
                    method,
                    path,
                    Some(("application/json", b.to_string().into_bytes())),
                )
                .await
        }
        None => client.send(method, path, None).await,
    }
}

async fn tenants_are_isolated(ledger: Deployment) {
    let w = bootstrap_and_login(ledger, &[]).await;
    let api = &w.api;
    let root = w.root();
    let mut people = vec![];
    for t in ["alpha", "bravo"] {
        w.create_tenant(t).await;
        let admin_email = format!("admin@{t}.test");
        let member_email = format!("member@{t}.test");
        let admin_id = create_person(
            &root,
            t,
            &admin_email,
            "tenant admin password",
            &["tenant_admin"],
        )
        .await;
        let member_id = create_person(&root, t, &member_email, "member password", &[]).await;
        let admin = login_ok(api, t, &admin_email, "tenant admin password").await;
        let member = login_ok(api, t, &member_email, "member password").await;
        people.push((admin_id, member_id, admin, member));
    }
    let (_, a_member_id, a_admin, a_member) = &people[0];
    let (b_admin_id, b_member_id, b_admin, b_member) = &people[1];
    let head = api.head().await;
    let random_user = custodian_domain::id::type_id("user", uuid::Uuid::now_v7());

    // Tenant B does not exist for anyone of A: 404, the same answer as for no tenant at all.
    for who in [api.bearer(&a_admin.access), api.bearer(&a_member.access)] {
        for user in [b_member_id, b_admin_id] {
            let b_routes = admin_routes("bravo", user);
            let none_routes = admin_routes("nosuch", &random_user);
            for ((method, path, body), (_, none_path, none_body)) in
                b_routes.into_iter().zip(none_routes)
            {
                let r = call(&who, method.clone(), &path, body).await;
                r.problem(404, "not_found");
                let none = call(&who, method.clone(), &none_path, none_body).await;
                none.problem(404, "not_found");
                assert_eq!(
                    r.body["detail"]
                        .as_str()
                        .unwrap()
                        .replace("bravo", "nosuch"),
                    none.body["detail"].as_str().unwrap(),
                    "{method} {path}"
                );
            }
        }
        for (method, path, body) in [
            (
                Method::POST,
                "/v1/tenants/bravo/suspend".to_owned(),
                Some(json!({"reason": "x"})),
            ),
            (
                Method::POST,
                "/v1/tenants/bravo/reactivate".to_owned(),
                None,
            ),
            (
                Method::DELETE,
                format!("/v1/auth/sessions/{}", b_member.session_id),
                None,
            ),
        ] {
            call(&who, method, &path, body)
                .await
                .problem(404, "not_found");
        }
    }
    // B's real user ids under A's own path: no such user, like any unknown id.
    let as_a_admin = api.bearer(&a_admin.access);
    for user in [b_member_id, b_admin_id, &random_user] {
        for (method, path, body) in admin_routes("alpha", user).into_iter().skip(6) {
            let r = call(&as_a_admin, method.clone(), &path, body).await;
            r.problem(404, "not_found");
            assert_eq!(r.body["detail"], "no such user", "{method} {path}");
        }
    }

    // A plain member of A: 403 on A's administration, but may read its own tenant.
    let as_a_member = api.bearer(&a_member.access);
    for (method, path, body) in admin_routes("alpha", a_member_id).into_iter().skip(1) {
        call(&as_a_member, method.clone(), &path, body)
            .await
            .problem(403, "forbidden");
    }
    for (method, path, body) in [
        (
            Method::POST,
            "/v1/tenants/alpha/suspend",
            Some(json!({"reason": "x"})),
        ),
        (Method::POST, "/v1/tenants/alpha/reactivate", None),
        (Method::GET, "/v1/tenants", None),
        (
            Method::POST,
            "/v1/tenants",
            Some(json!({"slug": "mine", "name": "Mine"})),
        ),
    ] {
        call(&as_a_member, method, path, body)
            .await
            .problem(403, "forbidden");
    }
    assert_eq!(
        as_a_member.get("/v1/tenants/alpha").await.ok(200)["slug"],
        "alpha"
    );

    // Nothing was written, and B is untouched.
    assert_eq!(api.head().await, head, "a refused request wrote to the log");
    assert_token_works(api, &b_member.access).await;
    assert_token_works(api, &b_admin.access).await;
    let r = api
        .bearer(&b_admin.access)
        .get("/v1/tenants/bravo/users")
        .await;
    let users = r.ok(200)["items"].as_array().unwrap().clone();
    assert_eq!(users.len(), 2, "{users:?}");
    for u in &users {
        assert_eq!(u["status"], "active");
        assert_eq!(u["tenant"], "bravo");
        assert_ne!(u["name"], "Renamed");
    }
    assert_eq!(
        api.bearer(&b_admin.access)
            .get("/v1/tenants/bravo")
            .await
            .ok(200)["name"],
        "Tenant bravo"
    );
    login_ok(api, "bravo", "member@bravo.test", "member password").await;
}

/// An administrator of `_system` (its built-in `admin` role, assigned through the policy, since
/// the `tenant_admin` shorthand has no meaning there) may not grant `platform_admin`; nor may it
/// take over an account that has it (reset its password, change its email, disable, sign out or
/// erase it).
async fn system_tenant_admins_cannot_take_over_platform_admins(ledger: Deployment) {
    let w = bootstrap_and_login(ledger, &[]).await;
    let api = &w.api;
    let (email, password) = ("helpdesk@platform.test", "helpdesk password");
    w.root()
        .post(
            "/v1/tenants/_system/users",
            json!({"email": email, "name": "Helpdesk", "password": password, "roles": ["tenant_admin"]}),
        )
        .await
        .problem(422, "validation_failed");
    let r = w
        .root()
        .post(
            "/v1/tenants/_system/users",
            json!({"email": email, "name": "Helpdesk", "password": password}),
        )
        .await;
    let helpdesk_id = r.ok(201)["user_id"].as_str().unwrap().to_owned();
    w.root()
        .post(
            "/v1/tenants/_system/assignments",
            json!({"principal": helpdesk_id, "role": "admin"}),
        )
        .await
        .ok(201);
    let helpdesk = login_ok(api, SYSTEM, email, password).await;
    let h = api.bearer(&helpdesk.access);
    h.post(
        "/v1/tenants/_system/users",
        json!({"email": "x@platform.test", "name": "X", "roles": ["platform_admin"]}),
    )
    .await
    .problem(403, "forbidden");
    let root = format!("/v1/tenants/_system/users/{}", w.admin.user_id);
    for (method, path, body) in [
        (Method::POST, format!("{root}/password-reset"), None),
        (
            Method::PATCH,
            root.clone(),
            Some(json!({"email": "helpdesk+root@platform.test"})),
        ),
        (
            Method::POST,
            format!("{root}/disable"),
            Some(json!({"reason": "mine now"})),
        ),
        (Method::DELETE, format!("{root}/sessions"), None),
        (Method::DELETE, root.clone(), None),
    ] {
        let r = call(&h, method.clone(), &path, body).await;
        assert_eq!(
            r.status, 403,
            "{method} {path}: a tenant_admin of _system acted on a platform administrator: {r:?}"
        );
    }
    assert_token_works(api, &w.admin.access).await;
    login_ok(api, SYSTEM, ADMIN_EMAIL, ADMIN_PASSWORD).await;
}

// ---------------------------------------------------------------------------------------------
// 10: bad input.

/// A JSON endpoint, who calls it, and a well-formed body for it (all of whose fields are
/// strings).
struct Endpoint {
    path: String,
    client: Client,
    valid: Value,
    /// Fields that may be left out (or null).
    optional: &'static [&'static str],
}

async fn bad_input_is_a_problem_never_a_500(ledger: Deployment) {
    let w = bootstrap_and_login(ledger, &[]).await;
    let api = &w.api;
    w.create_tenant("acme").await;
    let endpoints = [
        Endpoint {
            path: "/v1/auth/login".into(),
            client: api.anonymous(),
            valid: json!({"tenant": "acme", "email": "ada@acme.test", "password": "some long enough password"}),
            optional: &[],
        },
        Endpoint {
            path: "/v1/tenants/acme/users".into(),
            client: w.root(),
            valid: json!({"email": "ada@acme.test", "name": "Ada", "password": "some long enough password"}),
            optional: &["password"],
        },
        Endpoint {
            path: "/v1/auth/invitations/accept".into(),
            client: api.anonymous(),
            valid: json!({"token": format!("inv.acme.user_01jd8x3k2m4n5p6q7r8s9t0v1w.0.{}", "A".repeat(43)), "password": "some long enough password"}),
            optional: &[],
        },
        Endpoint {
            path: "/v1/auth/refresh".into(),
            client: api.anonymous(),
            valid: json!({"refresh_token": w.admin.refresh}),
            optional: &[],
        },
        Endpoint {
            path: "/v1/auth/mfa/verify".into(),
            client: api.anonymous(),
            valid: json!({"challenge_id": format!("mfa._system.{}.0.{}", w.admin.user_id, "A".repeat(43)), "code": "123456"}),
            optional: &["code"],
        },
    ];
    let head = api.head().await;
    for e in &endpoints {
        let c = &e.client;
        let fields: Vec<String> = e.valid.as_object().unwrap().keys().cloned().collect();
        let post = |body: Vec<u8>, content_type: &'static str| {
            c.raw(Method::POST, &e.path, content_type, body)
        };
        let say = |what: &str, r: &Answer| format!("{} with {what}: {r:?}", e.path);

        let r = post(
            format!("{{\"{}\": ", fields[0]).into_bytes(),
            "application/json",
        )
        .await;
        r.problem(400, "bad_request");
        let r = post(b"{".to_vec(), "application/json").await;
        r.problem(400, "bad_request");
        let r = post(b"not json at all".to_vec(), "application/json").await;
        r.problem(400, "bad_request");
        let r = post(b"[1, 2, 3]".to_vec(), "application/json").await;
        r.problem(422, "validation_failed");
        let r = post(b"{}".to_vec(), "application/json").await;
        assert_eq!(r.status, 422, "{}", say("no fields", &r));
        r.problem(422, "validation_failed");
        for field in &fields {
            let optional = e.optional.contains(&field.as_str());
            if !optional {
                let mut missing = e.valid.clone();
                missing.as_object_mut().unwrap().remove(field);
                let r = c.post(&e.path, missing).await;
                assert_eq!(r.status, 422, "{}", say(&format!("no {field}"), &r));
                r.problem(422, "validation_failed");
            }
            let mut wrong = e.valid.clone();
            wrong[field] = json!(12345);
            c.post(&e.path, wrong)
                .await
                .problem(422, "validation_failed");
            if !optional {
                let mut null = e.valid.clone();
                null[field] = Value::Null;
                let r = c.post(&e.path, null).await;
                assert_eq!(r.status, 422, "{}", say(&format!("{field}: null"), &r));
                r.problem(422, "validation_failed");
            }
        }
        let mut unknown = e.valid.clone();
        unknown["is_admin"] = json!(true);
        c.post(&e.path, unknown)
            .await
            .problem(422, "validation_failed");
        let body = e.valid.to_string().into_bytes();
        post(body.clone(), "text/plain")
            .await
            .problem(415, "unsupported_media_type");
        post(body.clone(), "")
            .await
            .problem(415, "unsupported_media_type");
        post(body, "application/x-www-form-urlencoded")
            .await
            .problem(415, "unsupported_media_type");

        // Far too large (10 MB), and just over the identity endpoints' 64 KiB limit.
        for size in [10 * 1024 * 1024, 100 * 1024] {
            let mut big = e.valid.clone();
            big[&fields[0]] = json!("b".repeat(size));
            let r = post_over_tcp(c, &e.path, big.to_string().into_bytes()).await;
            r.problem(413, "payload_too_large");
        }
    }

    // Invalid values.
    let login_path = "/v1/auth/login";
    let anon = api.anonymous();
    for email in [
        "not-an-email",
        "a@",
        "@b.test",
        "a b@c.test",
        &format!("{}@x.test", "l".repeat(250)),
    ] {
        anon.post(
            login_path,
            json!({"tenant": "acme", "email": email, "password": "some long enough password"}),
        )
        .await
        .problem(422, "validation_failed");
        w.root()
            .post(
                "/v1/tenants/acme/users",
                json!({"email": email, "name": "Ada"}),
            )
            .await
            .problem(422, "validation_failed");
    }
    for tenant in ["", "A", "Acme", "a/b", "acme!"] {
        anon.post(
            login_path,
            json!({"tenant": tenant, "email": "ada@acme.test", "password": "some long enough password"}),
        )
        .await
        .problem(422, "validation_failed");
    }
    anon.post(
        login_path,
        json!({"tenant": "acme", "email": "ada@acme.test", "password": ""}),
    )
    .await
    .problem(422, "validation_failed");
    for name in ["", "   ", &"n".repeat(201)] {
        w.root()
            .post(
                "/v1/tenants/acme/users",
                json!({"email": "ada@acme.test", "name": name}),
            )
            .await
            .problem(422, "validation_failed");
    }
    for body in [
        json!({"email": "ada@acme.test", "name": "Ada", "kind": "robot"}),
        json!({"email": "ada@acme.test", "name": "Ada", "roles": ["owner"]}),
        json!({"email": "ada@acme.test", "name": "Ada", "roles": ["platform_admin"]}),
        json!({"email": "ada@acme.test", "name": "Ada", "password": "short"}),
        json!({"email": "ada@acme.test", "name": "Ada", "password": "password"}),
        json!({"email": "ada@acme.test", "name": "Ada", "password": "p".repeat(2000)}),
    ] {
        w.root()
            .post("/v1/tenants/acme/users", body)
            .await
            .problem(422, "validation_failed");
    }
    anon.post(
        "/v1/auth/invitations/accept",
        json!({"token": format!("inv.acme.user_01jd8x3k2m4n5p6q7r8s9t0v1w.0.{}", "A".repeat(43)), "password": "p".repeat(2000)}),
    )
    .await
    .problem(422, "validation_failed");
    let challenge = format!("mfa._system.{}.0.{}", w.admin.user_id, "A".repeat(43));
    for body in [
        json!({"challenge_id": challenge}),
        json!({"challenge_id": challenge, "code": "123456", "recovery_code": "abcde-fghjk"}),
    ] {
        let r = anon.post("/v1/auth/mfa/verify", body).await;
        match r.status {
            401 => r.problem(401, "unauthenticated"),
            _ => r.problem(422, "validation_failed"),
        }
    }
    // Query strings too.
    w.root()
        .get("/v1/tenants/acme/users?limit=abc")
        .await
        .problem(422, "validation_failed");
    w.root()
        .get("/v1/tenants/acme/users?status=zombie")
        .await
        .problem(422, "validation_failed");
    w.root()
        .get("/v1/auth/sessions?limit=9999")
        .await
        .problem(422, "validation_failed");
    w.root()
        .get("/v1/auth/sessions?active=maybe")
        .await
        .problem(422, "validation_failed");

    // None of it wrote anything.
    assert_eq!(api.head().await, head, "bad input wrote to the log");
    assert_token_works(api, &w.admin.access).await;
}

/// POSTs a JSON body over a plain TCP connection, writing the body while reading the answer: a
/// server may answer a body that is too large before reading all of it, and close the connection,
/// which an HTTP client still writing the body reports as an error instead of the answer.
async fn post_over_tcp(client: &Client, path: &str, body: Vec<u8>) -> Answer {
    use tokio::io::AsyncReadExt as _;
    let addr = client.base.trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let auth = client
        .token
        .as_ref()
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n{auth}\r\n",
        body.len()
    );
    let writing = tokio::spawn(async move {
        if writer.write_all(head.as_bytes()).await.is_ok() {
            let _ = writer.write_all(&body).await;
        }
        // Keep the write half open: a half-closed connection is one the server may drop unanswered.
        std::future::pending::<()>().await;
        drop(writer);
    });
    let mut response = vec![];
    let mut chunk = [0u8; 8192];
    let mut ended = None;
    while ended.is_none() {
        match tokio::time::timeout(Duration::from_secs(30), reader.read(&mut chunk)).await {
            Ok(Ok(0)) => ended = Some("end of stream".to_owned()),
            Ok(Err(e)) => ended = Some(e.to_string()),
            Ok(Ok(n)) => response.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("POST {path}: no answer within 30 s"),
        }
    }
    writing.abort();
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("POST {path}: no HTTP answer ({ended:?}): {text:?}"));
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("POST {path}: bad status line: {head}"));
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(
                reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
                value.trim().parse().unwrap(),
            );
        }
    }
    assert!(status < 500, "POST {path} answered {status}: {body}");
    Answer {
        status,
        headers,
        body: serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned())),
    }
}

// ---------------------------------------------------------------------------------------------
// 11: erasure.

fn contains(haystack: &[u8], needle: &str) -> bool {
    let needle = needle.as_bytes();
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Which of the (labelled) `needles` the database still holds, and where: on SQLite each file of
/// the data directory but the master key (database, WAL, shared memory), on PostgreSQL every
/// table.
async fn leftovers(ledger: &Deployment, needles: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut places = vec![];
    if ledger.is_sqlite() {
        for entry in std::fs::read_dir(ledger.data_dir()).unwrap() {
            let path = entry.unwrap().path();
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            if file != "secret.key" {
                places.push((file, std::fs::read(&path).unwrap()));
            }
        }
    } else {
        places.push(("tables".to_owned(), ledger.database_contents().await));
    }
    let mut found = vec![];
    for (place, bytes) in &places {
        for (label, needle) in needles {
            if contains(bytes, needle) {
                found.push((place.clone(), (*label).to_owned()));
            }
        }
    }
    found
}

async fn erasure_leaves_no_personal_data(ledger: Deployment) {
    let w = bootstrap_and_login(ledger, &[]).await;
    let api = &w.api;
    let root = w.root();
    w.create_tenant("acme").await;
    let (email, name, password) = (
        "zebulon.quixote@acme.test",
        "Zebulon Quixote-Erasable",
        "please forget me entirely",
    );
    let r = root
        .post(
            "/v1/tenants/acme/users",
            json!({"email": email, "name": name, "password": password}),
        )
        .await;
    let user_id = r.ok(201)["user_id"].as_str().unwrap().to_owned();
    let session = login_ok(api, "acme", email, password).await;
    let wrapped = w
        .ledger
        .wrapped_data_key(&user_id)
        .await
        .expect("the user has a data key");

    let r = root
        .delete(&format!("/v1/tenants/acme/users/{user_id}"))
        .await;
    assert_eq!(r.ok(200)["user_id"], user_id.as_str());
    assert_positioned(&r);
    // The user stays listed, without personal data.
    let r = root.get(&format!("/v1/tenants/acme/users/{user_id}")).await;
    let gone = r.ok(200);
    assert_eq!(gone["status"], "deleted");
    assert_eq!(gone["email"], Value::Null);
    assert_eq!(gone["name"], Value::Null);
    assert_eq!(gone["credentials"], Value::Null);
    let r = root.get("/v1/tenants/acme/users?status=deleted").await;
    let listed = r.ok(200)["items"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["email"], Value::Null);
    assert_token_refused(api, &session.access).await;
    refresh(api, &session.refresh)
        .await
        .problem(401, "unauthenticated");
    assert_invalid_credentials(&login(api, "acme", email, password).await);
    root.delete(&format!("/v1/tenants/acme/users/{user_id}"))
        .await
        .problem(404, "not_found");
    root.post_empty(&format!("/v1/tenants/acme/users/{user_id}/password-reset"))
        .await
        .problem(404, "not_found");
    assert_eq!(w.ledger.wrapped_data_key(&user_id).await, None);
    // The email can be used again.
    let again = create_person(&root, "acme", email, "a new person, a new password", &[]).await;
    assert_ne!(again, user_id);
    root.delete(&format!("/v1/tenants/acme/users/{again}"))
        .await
        .ok(200);

    // Nothing on disk (or in any table) names them, or holds the key that could open their data:
    // neither while the server runs, nor after it stopped.
    let needles = [
        ("email", email),
        ("name", name),
        ("part of the name", "Quixote"),
        ("password", password),
        ("wrapped data key", wrapped.as_str()),
    ];
    let running = leftovers(&w.ledger, &needles).await;
    let World { ledger, server, .. } = w;
    let (code, _) = server.terminate().await;
    assert_eq!(code, Some(0));
    let stopped = leftovers(&ledger, &needles).await;
    let (code, out) = verify(&ledger.ledger.location).await;
    assert_eq!(code, Some(0), "the chain no longer verifies: {out}");
    assert!(
        running.is_empty() && stopped.is_empty(),
        "erased data left behind, while the server ran: {running:?}; after a clean stop: \
         {stopped:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 12: secrets.

async fn no_secret_reaches_the_database_or_the_logs(ledger: Deployment) {
    let w = bootstrap_and_login(ledger, &[]).await;
    let api = &w.api;
    let root = w.root();
    let mut secrets: Vec<String> = vec![ADMIN_PASSWORD.into()];
    /// An opaque token, and its random part alone.
    fn token(t: &str, secrets: &mut Vec<String>) {
        secrets.push(t.to_owned());
        secrets.push(secret_part(t).to_owned());
    }
    token(&w.admin.refresh, &mut secrets);

    // Refresh tokens, rotated.
    let r = refresh(api, &w.admin.refresh).await;
    let admin = Tokens::from(r.ok(200));
    token(&admin.refresh, &mut secrets);
    secrets.push(admin.access.clone());

    // TOTP and recovery codes.
    let me = api.bearer(&admin.access);
    let (seed, c, codes) = enroll_totp(&me, ADMIN_EMAIL).await;
    secrets.push(base32_encode(&seed));
    for url in [false, true] {
        for pad in [false, true] {
            secrets.push(base64(&seed, url, pad));
        }
    }
    secrets.push(hex(&seed));
    let id = challenge(api, SYSTEM, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    token(&id, &mut secrets);
    let r = mfa_verify(api, json!({"challenge_id": id, "code": totp(&seed, c)})).await;
    let with_totp = Tokens::from(r.ok(200));
    token(&with_totp.refresh, &mut secrets);
    let (_, fresh) = new_recovery_codes(&me, json!({"password": ADMIN_PASSWORD})).await;
    for code in codes.iter().chain(&fresh) {
        secrets.push(code.clone());
        secrets.push(code.replace('-', ""));
    }

    // Invitations, first passwords, changed and reset passwords.
    w.create_tenant("acme").await;
    let passwords = [
        "first password of ada",
        "changed password of ada",
        "reset password of ada",
        "accepted password of bob",
    ];
    secrets.extend(passwords.iter().map(|p| (*p).to_owned()));
    let ada = create_person(&root, "acme", "ada@acme.test", passwords[0], &[]).await;
    let s = login_ok(api, "acme", "ada@acme.test", passwords[0]).await;
    token(&s.refresh, &mut secrets);
    api.bearer(&s.access)
        .post(
            "/v1/auth/password",
            json!({"current_password": passwords[0], "new_password": passwords[1]}),
        )
        .await
        .ok(200);
    let r = root
        .post_empty(&format!("/v1/tenants/acme/users/{ada}/password-reset"))
        .await;
    let reset = r.ok(201)["reset_token"].as_str().unwrap().to_owned();
    token(&reset, &mut secrets);
    api.anonymous()
        .post(
            "/v1/auth/password/reset",
            json!({"token": reset, "new_password": passwords[2]}),
        )
        .await
        .ok(200);
    let r = root
        .post(
            "/v1/tenants/acme/invitations",
            json!({"email": "bob@acme.test", "name": "Bob"}),
        )
        .await;
    let invitation = r.ok(201)["invitation_token"].as_str().unwrap().to_owned();
    token(&invitation, &mut secrets);
    api.anonymous()
        .post(
            "/v1/auth/invitations/accept",
            json!({"token": invitation, "password": passwords[3]}),
        )
        .await
        .ok(200);
    let bob = login_ok(api, "acme", "bob@acme.test", passwords[3]).await;
    token(&bob.refresh, &mut secrets);
    let wrong = "a wrong password typed by ada";
    secrets.push(wrong.into());
    assert_invalid_credentials(&login(api, "acme", "ada@acme.test", wrong).await);

    // Personal data is sealed too: it never appears in clear.
    let personal = [ADMIN_EMAIL, ADMIN_NAME, "ada@acme.test", "bob@acme.test"];

    let World { ledger, server, .. } = w;
    let log = server.terminate_cleanly().await;
    let bytes = ledger.database_contents().await;
    for s in &secrets {
        assert!(!contains(&bytes, s), "a secret is in the database: {s:?}");
        assert!(
            !log.contains(s.as_str()),
            "a secret is in the server's log: {s:?}"
        );
    }
    for p in personal {
        assert!(!contains(&bytes, p), "{p:?} is in the database in clear");
    }
    let (code, out) = verify(&ledger.ledger.location).await;
    assert_eq!(code, Some(0), "{out}");
}

// ---------------------------------------------------------------------------------------------
// 13: signing key rotation (SQLite only: the mechanism does not depend on the backend).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_key_rotation_keeps_old_tokens_and_signs_with_the_new_key() {
    let w = bootstrap_and_login(Deployment::sqlite(), &[]).await;
    let api = &w.api;
    let (header, _) = jwt_parts(&w.admin.access);
    let old_kid = header["kid"].as_str().unwrap().to_owned();
    let jwks = api.get("/.well-known/jwks.json").await;
    assert_eq!(jwks.ok(200)["keys"].as_array().unwrap().len(), 1);

    let out = w.ledger.cli(&["keys", "rotate-signing"], "").await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let new_kid = out
        .stdout
        .split_whitespace()
        .nth(3)
        .map(|k| k.trim_end_matches(';').to_owned())
        .unwrap_or_else(|| panic!("{out:?}"));
    assert_ne!(new_kid, old_kid);

    // The running server picks the key up within its reload interval (30 s).
    let started = Instant::now();
    let kids = loop {
        let jwks = api.get("/.well-known/jwks.json").await;
        let kids: Vec<String> = jwks.ok(200)["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect();
        if kids.len() == 2 {
            break kids;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "the server did not publish the new key within 40 s: {kids:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        kids.contains(&old_kid) && kids.contains(&new_kid),
        "{kids:?}"
    );
    // Tokens of the old key keep working; new ones carry the new kid and work too.
    assert_token_works(api, &w.admin.access).await;
    let fresh = login_ok(api, SYSTEM, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(jwt_parts(&fresh.access).0["kid"], new_kid.as_str());
    assert_token_works(api, &fresh.access).await;
    let r = refresh(api, &w.admin.refresh).await;
    let refreshed = Tokens::from(r.ok(200));
    assert_eq!(jwt_parts(&refreshed.access).0["kid"], new_kid.as_str());
}

// ---------------------------------------------------------------------------------------------
// Encodings, SHA-1, HMAC and TOTP, small and test-only, so the tests need no extra dependency.

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

fn base64(bytes: &[u8], url: bool, pad: bool) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            let c = BASE64[((n >> (18 - 6 * i)) & 63) as usize];
            out.push(match (url, c) {
                (true, b'+') => '-',
                (true, b'/') => '_',
                _ => char::from(c),
            });
        }
        if pad {
            out.push_str(&"=".repeat(3 - chunk.len()));
        }
    }
    out
}

fn base64url(bytes: &[u8]) -> String {
    base64(bytes, true, false)
}

fn base64url_decode(s: &str) -> Vec<u8> {
    let (mut out, mut acc, mut bits) = (vec![], 0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'-' => 62,
            b'_' => 63,
            _ => BASE64.iter().position(|b| *b == c).unwrap() as u32,
        };
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn base32_encode(bytes: &[u8]) -> String {
    let (mut out, mut acc, mut bits) = (String::new(), 0u32, 0);
    for b in bytes {
        acc = acc << 8 | u32::from(*b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(BASE32[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

fn base32_decode(s: &str) -> Vec<u8> {
    let (mut out, mut acc, mut bits) = (vec![], 0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = BASE32
            .iter()
            .position(|b| *b == c.to_ascii_uppercase())
            .unwrap_or_else(|| panic!("not base32: {s}")) as u32;
        acc = acc << 5 | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-1 (FIPS 180-4), for HMAC-SHA-1 in TOTP codes.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&(data.len() as u64 * 8).to_be_bytes());
    for block in message.chunks(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            (e, d, c, b, a) = (d, c, b.rotate_left(30), a, t);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (chunk, word) in out.chunks_mut(4).zip(h) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// HMAC-SHA-1 (RFC 2104).
fn hmac_sha1(key: &[u8], message: &[u8]) -> [u8; 20] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..20].copy_from_slice(&sha1(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner: Vec<u8> = block
        .iter()
        .map(|b| b ^ 0x36)
        .chain(message.iter().copied())
        .collect();
    let outer: Vec<u8> = block.iter().map(|b| b ^ 0x5c).chain(sha1(&inner)).collect();
    sha1(&outer)
}

/// HOTP (RFC 4226) of `counter` with `digits` digits.
fn hotp(key: &[u8], counter: u64, digits: u32) -> String {
    let mac = hmac_sha1(key, &counter.to_be_bytes());
    let offset = usize::from(mac[19] & 0x0f);
    let value = u32::from_be_bytes([
        mac[offset] & 0x7f,
        mac[offset + 1],
        mac[offset + 2],
        mac[offset + 3],
    ]);
    format!(
        "{:0width$}",
        value % 10u32.pow(digits),
        width = digits as usize
    )
}

/// The 6-digit TOTP code (RFC 6238, SHA-1, 30 s) of time step `step`.
fn totp(key: &[u8], step: u64) -> String {
    hotp(key, step, 6)
}

#[test]
fn identity_test_totp_matches_rfc_6238() {
    let key = b"12345678901234567890";
    // RFC 6238 Appendix B, SHA-1, 8 digits.
    for (time, code) in [
        (59u64, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ] {
        assert_eq!(hotp(key, time / 30, 8), code, "T = {time}");
    }
    // RFC 4226 Appendix D.
    assert_eq!(hotp(key, 0, 6), "755224");
    assert_eq!(hotp(key, 9, 6), "520489");
    // RFC 2202 test case 2, and the encodings' round trips.
    assert_eq!(
        hex(&hmac_sha1(b"Jefe", b"what do ya want for nothing?")),
        "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
    );
    assert_eq!(
        hex(&sha1(b"abc")),
        "a9993e364706816aba3e25717850c26c9cd0d89d"
    );
    let bytes: Vec<u8> = (0u8..=255).collect();
    assert_eq!(base32_decode(&base32_encode(&bytes)), bytes);
    assert_eq!(base64url_decode(&base64url(&bytes)), bytes);
    assert_eq!(base64(b"foob", false, true), "Zm9vYg==");
    assert_eq!(base32_encode(b"foob"), "MZXW6YQ");
}
