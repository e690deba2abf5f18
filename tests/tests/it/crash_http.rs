//! Crash safety of the HTTP command path: `custodian serve` is killed with SIGKILL while sixteen
//! clients create users as fast as it answers. After a restart on the same store and master key,
//! every acknowledged user is there exactly once with their email readable, every unanswered
//! creation either happened completely or not at all (and never keeps its email from being used),
//! the log's head has not gone back, and the hash chain verifies.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use custodian_testkit::deployment::{Deployment, verify};
use reqwest::Method;
use serde_json::{Value, json};

use crate::kill_9::{Answer, Api, MIN_ACKS, kill_9_under_load, serve_with_tenant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_every_acknowledged_user_through_kill_9() {
    create_users_kill_9_then_check(Deployment::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_every_acknowledged_user_through_kill_9() {
    if let Some(home) = Deployment::postgres().await {
        create_users_kill_9_then_check(home).await;
    }
}

const TENANT: &str = "crashco";
const ADMIN_NAME: &str = "Rootie Platformsson";
/// The server is killed once this many creations were acknowledged (or after its load).
const ACKS_BEFORE_KILL: usize = 200;
/// The server takes over an email claim whose user stream is missing once the claim is older than
/// 30 s; a little margin on top.
const CLAIM_TAKEOVER: Duration = Duration::from_secs(31);

// ---------------------------------------------------------------------------------------------
// The store.

/// What only this test reads of a deployment's store.
trait UserStreams {
    /// The ids of the users whose stream the log holds in `tenant`.
    async fn user_streams(&self, tenant: &str) -> HashSet<String>;
}

impl UserStreams for Deployment {
    async fn user_streams(&self, tenant: &str) -> HashSet<String> {
        let prefix = format!("{tenant}/user/");
        let mut ids = HashSet::new();
        for r in self.read_log().await {
            if let Some(id) = r.stream.as_str().strip_prefix(&prefix)
                && r.version == 1
            {
                assert!(ids.insert(id.to_owned()), "user stream {id} created twice");
            }
        }
        ids
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP.

impl Api {
    async fn get(&self, path: &str, min_position: u64) -> Answer {
        self.settled(Method::GET, path, None, Some(min_position))
            .await
    }

    /// The log's head position (a platform administrator's view of readiness).
    async fn head(&self) -> u64 {
        let r = self
            .settled(Method::GET, "/v1/admin/readiness", None, None)
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        r.body["head"]["position"].as_u64().unwrap()
    }

    /// Every user of `tenant`, page by page, from views that have applied `min_position`.
    async fn all_users(&self, tenant: &str, min_position: u64) -> Vec<Value> {
        let mut users = vec![];
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/tenants/{tenant}/users?limit=200");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let r = self.get(&path, min_position).await;
            assert_eq!(r.status, 200, "{r:?}");
            users.extend(r.body["items"].as_array().unwrap().iter().cloned());
            match r.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return users,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The load.

/// What became of one creation request.
#[derive(Debug)]
enum Outcome {
    /// 201: acknowledged.
    Created { user_id: String, position: u64 },
    /// Any other answer.
    Refused(u16, Value),
    /// No answer: the connection failed or was cut by the kill.
    Unanswered(String),
}

#[derive(Debug)]
struct Attempt {
    email: String,
    name: String,
    outcome: Outcome,
}

fn new_user(email: &str, name: &str) -> Value {
    json!({"email": email, "name": name, "kind": "person"})
}

/// Creates users one after the other until told to stop; returns every attempt.
async fn create_users(
    api: Api,
    client: usize,
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicUsize>,
) -> Vec<Attempt> {
    let path = format!("/v1/tenants/{TENANT}/users");
    let mut attempts = vec![];
    for i in 0.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let email = format!("c{client:02}-u{i:05}@crash.test");
        let name = format!("Crash Client{client} User{i}");
        let body = new_user(&email, &name);
        let outcome = match api.send(Method::POST, &path, Some(&body), None).await {
            Ok(r) if r.status == 201 => {
                let position = r.position.expect("a 201 without Custodian-Position");
                assert_eq!(r.body["position"], position, "{r:?}");
                assert_eq!(r.body["email"], email.as_str(), "{r:?}");
                acks.fetch_add(1, Ordering::SeqCst);
                Outcome::Created {
                    user_id: r.body["user_id"].as_str().unwrap().to_owned(),
                    position,
                }
            }
            Ok(r) => Outcome::Refused(r.status, r.body),
            Err(e) => Outcome::Unanswered(format!("{e:?}")),
        };
        attempts.push(Attempt {
            email,
            name,
            outcome,
        });
    }
    attempts
}

// ---------------------------------------------------------------------------------------------
// The test.

async fn create_users_kill_9_then_check(home: Deployment) {
    let (mut server, root) = serve_with_tenant(&home, ADMIN_NAME, TENANT, "Crash Co").await;

    // Load, then SIGKILL while requests are in flight.
    let (attempts, killed_at) = kill_9_under_load(
        &mut server,
        ACKS_BEFORE_KILL,
        "users created",
        |c, stop, acks| create_users(root.clone(), c, stop, acks),
    )
    .await;
    let attempts: Vec<Attempt> = attempts.into_iter().flatten().collect();
    drop(server);

    let mut acked: HashMap<&str, (&str, &str, u64)> = HashMap::new(); // id -> (email, name, position)
    let mut unanswered: Vec<&Attempt> = vec![];
    for a in &attempts {
        match &a.outcome {
            Outcome::Created { user_id, position } => {
                let fresh = acked.insert(user_id, (&a.email, &a.name, *position));
                assert!(fresh.is_none(), "user id {user_id} acknowledged twice");
            }
            // Only a busy store may refuse a well-formed creation; its outcome is unknown.
            Outcome::Refused(status, body) => {
                assert_eq!(*status, 503, "creating {} answered {body}", a.email);
                unanswered.push(a);
            }
            Outcome::Unanswered(_) => unanswered.push(a),
        }
    }
    let cut = attempts
        .iter()
        .filter(|a| matches!(&a.outcome, Outcome::Unanswered(e) if !e.contains("ConnectError")))
        .count();
    eprintln!(
        "{} attempts: {} acknowledged, {} without a 201 ({cut} failed mid-request)",
        attempts.len(),
        acked.len(),
        unanswered.len()
    );
    assert!(acked.len() >= MIN_ACKS);
    let by_email: HashMap<&str, &Attempt> =
        attempts.iter().map(|a| (a.email.as_str(), a)).collect();

    // Restart on the same store and master key.
    let server = home.serve(&[]).await;
    let root = Api::new(&server.base).login().await;
    let head = root.head().await;
    let highest_ack = acked.values().map(|a| a.2).max().unwrap();
    assert!(
        head >= highest_ack,
        "the log's head {head} is behind an acknowledged position {highest_ack}"
    );

    // The listing: every user once, each an attempted one, every acknowledged one there.
    let users = root.all_users(TENANT, head).await;
    let mut listed: HashMap<String, String> = HashMap::new(); // email -> id
    let mut ids = HashSet::new();
    for u in &users {
        let id = u["user_id"].as_str().unwrap();
        let email = u["email"]
            .as_str()
            .unwrap_or_else(|| panic!("a user without a readable email: {u}"));
        assert!(ids.insert(id.to_owned()), "user {id} listed twice");
        let attempt = by_email
            .get(email)
            .unwrap_or_else(|| panic!("a user nobody asked for: {u}"));
        assert_eq!(u["name"], attempt.name.as_str(), "{u}");
        assert_eq!(u["kind"], "person", "{u}");
        assert_eq!(u["status"], "active", "{u}");
        if let Some(dup) = listed.insert(email.to_owned(), id.to_owned()) {
            panic!("email {email} belongs to two users: {dup} and {id}");
        }
    }
    for (id, (email, _, _)) in &acked {
        assert_eq!(
            listed.get(*email).map(String::as_str),
            Some(*id),
            "acknowledged user {id} ({email}) is not listed as such"
        );
    }

    // Each acknowledged user reads back whole, email and name decrypted.
    for (id, (email, name, _)) in &acked {
        let r = root
            .get(&format!("/v1/tenants/{TENANT}/users/{id}"), head)
            .await;
        assert_eq!(r.status, 200, "acknowledged user {id} ({email}): {r:?}");
        assert_eq!(r.body["email"], *email, "{r:?}");
        assert_eq!(r.body["name"], *name, "{r:?}");
        assert_eq!(r.body["status"], "active", "{r:?}");
        assert!(r.body["credentials"].is_object(), "{r:?}");
    }

    // An unanswered creation happened completely or not at all, and never keeps its email from
    // being used.
    let path = format!("/v1/tenants/{TENANT}/users");
    let mut created_again: HashMap<String, (String, u64)> = HashMap::new(); // email -> (id, position)
    let mut held = vec![];
    let mut completed = 0;
    for a in &unanswered {
        let body = new_user(&a.email, &a.name);
        let r = root.settled(Method::POST, &path, Some(&body), None).await;
        if let Some(id) = listed.get(&a.email) {
            completed += 1;
            let u = root.get(&format!("{path}/{id}"), head).await;
            assert_eq!(u.status, 200, "unanswered but listed user {id}: {u:?}");
            assert_eq!(u.body["email"], a.email.as_str(), "{u:?}");
            assert_eq!(u.body["name"], a.name.as_str(), "{u:?}");
            assert_eq!(
                r.status, 409,
                "{} is in use by {id}, yet creating it again answered {r:?}",
                a.email
            );
            assert_eq!(r.body["code"], "conflict", "{r:?}");
        } else if r.status == 409 {
            // A claim whose user was never written: the server leaves it 30 s to its claimant.
            assert_eq!(r.body["code"], "conflict", "{r:?}");
            held.push(*a);
        } else {
            assert_eq!(r.status, 201, "creating {} again: {r:?}", a.email);
            created_again.insert(a.email.clone(), created(&r));
        }
    }
    eprintln!(
        "unanswered: {completed} had completed, {} were free, {} held by a half-done claim",
        created_again.len(),
        held.len()
    );
    if !held.is_empty() {
        tokio::time::sleep_until((killed_at + CLAIM_TAKEOVER).into()).await;
        for a in held {
            let body = new_user(&a.email, &a.name);
            let r = root.settled(Method::POST, &path, Some(&body), None).await;
            assert_eq!(
                r.status,
                201,
                "{} is still held {} s after the kill by a user who does not exist: {r:?}",
                a.email,
                CLAIM_TAKEOVER.as_secs()
            );
            created_again.insert(a.email.clone(), created(&r));
        }
    }

    // Afterwards: still one user per email, the new ones included.
    let last = created_again.values().map(|c| c.1).max().unwrap_or(head);
    let after = root.all_users(TENANT, last).await;
    let mut emails = HashMap::new();
    for u in &after {
        let email = u["email"].as_str().unwrap().to_owned();
        let id = u["user_id"].as_str().unwrap().to_owned();
        if let Some(dup) = emails.insert(email.clone(), id.clone()) {
            panic!("email {email} belongs to two users: {dup} and {id}");
        }
    }
    for (email, (id, _)) in &created_again {
        assert_eq!(emails.get(email), Some(id), "{email}");
    }
    assert_eq!(after.len(), users.len() + created_again.len());

    let (code, _) = server.terminate().await;
    assert_eq!(code, Some(0));

    // The views and the log agree: one stream per listed user, none more.
    let streams = home.user_streams(TENANT).await;
    let after_ids: HashSet<String> = emails.into_values().collect();
    assert_eq!(
        streams, after_ids,
        "the log's user streams and the listing differ"
    );

    let (code, out) = verify(&home.ledger.location).await;
    assert_eq!(code, Some(0), "verify failed: {out}");
}

/// The id and position of a 201 to a creation.
#[track_caller]
fn created(r: &Answer) -> (String, u64) {
    let position = r.position.expect("a 201 without Custodian-Position");
    (r.body["user_id"].as_str().unwrap().to_owned(), position)
}
