//! The ledger end to end: the real `custodian` binary signs checkpoints that a verifier written
//! here from the C2SP texts (tlog-checkpoint, signed-note) accepts, answers inclusion and
//! consistency proofs against them, and publishes its checkpoints on NATS.

use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use custodian_domain::merkle;
use custodian_testkit::deployment::Deployment;
use custodian_testkit::nats::NatsServer;
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use futures::StreamExt as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const ADMIN_EMAIL: &str = "root@platform.test";
const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// A signed-note verifier key, read as https://c2sp.org/signed-note says:
/// `<name>+<hex(key id)>+<base64(0x01 || 32-byte Ed25519 public key)>`, where the key id is the
/// first 4 bytes of SHA-256(name || 0x0A || 0x01 || public key).
struct Verifier {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

impl Verifier {
    fn parse(vkey: &str) -> Self {
        let parts: Vec<&str> = vkey.trim_end().splitn(3, '+').collect();
        let [name, id, key] = parts[..] else {
            panic!("not name+id+key: {vkey}")
        };
        let key = STANDARD.decode(key).unwrap();
        assert_eq!(key[0], 0x01, "an Ed25519 key");
        let public: [u8; 32] = key[1..].try_into().unwrap();
        let mut h = Sha256::new();
        h.update(name.as_bytes());
        h.update([0x0A, 0x01]);
        h.update(public);
        let computed: [u8; 4] = h.finalize()[..4].try_into().unwrap();
        assert_eq!(hex::encode(computed), id, "the key id is the key's");
        Self {
            name: name.to_owned(),
            id: computed,
            key: VerifyingKey::from_bytes(&public).unwrap(),
        }
    }

    /// Checks the note's signature by this key: the text up to and including the last newline
    /// before the blank line, then lines `— <name> <base64(key id || signature)>`. Answers the
    /// text.
    fn open<'n>(&self, note: &'n str) -> Option<&'n str> {
        let split = note.rfind("\n\n")?;
        let (text, signatures) = (&note[..=split], &note[split + 2..]);
        signatures.lines().find_map(|line| {
            let rest = line.strip_prefix("\u{2014} ")?;
            let (name, blob) = rest.split_once(' ')?;
            let blob = STANDARD.decode(blob).ok()?;
            if name != self.name || blob.len() != 68 || blob[..4] != self.id {
                return None;
            }
            let signature = Signature::from_slice(&blob[4..]).ok()?;
            self.key.verify(text.as_bytes(), &signature).ok()?;
            Some(text)
        })
    }
}

/// A checkpoint body as https://c2sp.org/tlog-checkpoint defines it: origin, decimal tree size,
/// base64 root hash, then extension lines.
struct Body {
    origin: String,
    size: u64,
    root: [u8; 32],
}

fn body(text: &str) -> Body {
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 3, "{text}");
    Body {
        origin: lines[0].to_owned(),
        size: lines[1].parse().unwrap(),
        root: STANDARD.decode(lines[2]).unwrap().try_into().unwrap(),
    }
}

fn hashes(values: &Value) -> Vec<[u8; 32]> {
    values
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            hex::decode(h.as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        })
        .collect()
}

struct Client {
    base: String,
    http: reqwest::Client,
    token: String,
}

impl Client {
    async fn get(&self, path: &str, min_position: u64) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("custodian-min-position", min_position.to_string())
            .send()
            .await
            .unwrap()
    }

    /// A signed checkpoint covering at least `min_position`, checked with `verifier`.
    async fn checkpoint(&self, verifier: &Verifier, min_position: u64) -> Body {
        let r = self.get("/v1/ledger/checkpoint", min_position).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
        let position: u64 = r.headers()["custodian-position"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let note = r.text().await.unwrap();
        let text = verifier
            .open(&note)
            .unwrap_or_else(|| panic!("the checkpoint does not verify: {note}"));
        let checkpoint = body(text);
        assert_eq!(checkpoint.size, position);
        assert!(checkpoint.size >= min_position);
        assert!(text.lines().any(|l| l.starts_with("time ")), "{text}");
        checkpoint
    }

    async fn create_tenant(&self, slug: &str) -> u64 {
        let r = self
            .http
            .post(format!("{}/v1/tenants", self.base))
            .bearer_auth(&self.token)
            .json(&json!({"name": slug, "slug": slug, "plan": "free"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let body: Value = r.json().await.unwrap();
        body["position"].as_u64().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_verify_independently_proofs_hold_and_witnesses_get_them_on_nats() {
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    let ledger = Deployment::sqlite();
    ledger.bootstrap(ADMIN_EMAIL, "Root", ADMIN_PASSWORD).await;
    let nats_url = nats.url();
    let server = ledger
        .serve(&[
            "--nats-url",
            &nats_url,
            "--ledger-origin",
            "id.example.test/ledger",
            "--checkpoint-events",
            "3",
            "--checkpoint-seconds",
            "0",
        ])
        .await;
    let http = reqwest::Client::new();

    let login: Value = http
        .post(format!("{}/v1/auth/login", server.base))
        .json(&json!({"tenant": "_system", "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let api = Client {
        base: server.base.clone(),
        http: http.clone(),
        token: login["access_token"].as_str().unwrap().to_owned(),
    };
    let anonymous = http
        .get(format!("{}/v1/ledger/checkpoint", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    // Asking for a checkpoint, as an authorized caller, publishes the first one with its key;
    // from then on the verifier key is public (asking for it writes nothing).
    let r = api.get("/v1/ledger/checkpoint", 0).await;
    assert_eq!(r.status(), 200);
    // The verifier key is public.
    let r = http
        .get(format!("{}/v1/ledger/checkpoint/key", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let vkey = r.text().await.unwrap();
    assert!(vkey.starts_with("id.example.test/ledger+"), "{vkey}");
    let verifier = Verifier::parse(&vkey);

    // A checkpoint, and an event written after it, proved included in a later checkpoint.
    let created = api.create_tenant("acme").await;
    let first = api.checkpoint(&verifier, created).await;
    assert_eq!(first.origin, "id.example.test/ledger");
    let second_write = api.create_tenant("globex").await;
    let second = api.checkpoint(&verifier, second_write).await;
    assert!(second.size > first.size);

    let proof: Value = api
        .get(
            &format!(
                "/v1/ledger/proof/inclusion?position={second_write}&tree_size={}",
                second.size
            ),
            0,
        )
        .await
        .json()
        .await
        .unwrap();
    let log = ledger.read_log().await;
    let record = &log[second_write as usize - 1];
    assert_eq!(proof["leaf_hash"], record.hash.to_hex());
    assert_eq!(proof["leaf_index"], second_write - 1);
    assert_eq!(proof["root"], hex::encode(second.root));
    assert!(merkle::verify_inclusion(
        second_write - 1,
        second.size,
        &record.hash.0,
        &hashes(&proof["proof"]),
        &second.root,
    ));

    // The later checkpoint extends the earlier one.
    let consistency: Value = api
        .get(
            &format!(
                "/v1/ledger/proof/consistency?from={}&to={}",
                first.size, second.size
            ),
            0,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(consistency["from_root"], hex::encode(first.root));
    assert_eq!(consistency["to_root"], hex::encode(second.root));
    let path = hashes(&consistency["proof"]);
    assert!(merkle::verify_consistency(
        first.size,
        second.size,
        &first.root,
        &second.root,
        &path
    ));
    // A proof against another root does not verify.
    let mut forged = first.root;
    forged[0] ^= 1;
    assert!(!merkle::verify_consistency(
        first.size,
        second.size,
        &forged,
        &second.root,
        &path
    ));

    // Bad questions are problems a person can act on.
    for query in [
        "/v1/ledger/proof/inclusion?position=0".to_owned(),
        "/v1/ledger/proof/inclusion".to_owned(),
        format!("/v1/ledger/proof/inclusion?position={}", second.size + 1000),
        "/v1/ledger/proof/inclusion?position=x".to_owned(),
        "/v1/ledger/proof/consistency?from=5&to=4".to_owned(),
    ] {
        let r = api.get(&query, 0).await;
        assert_eq!(r.status(), 422, "{query}");
        let problem: Value = r.json().await.unwrap();
        assert_eq!(problem["code"], "validation_failed", "{query}");
    }

    // The published checkpoints arrive on NATS, and verify too.
    let js = nats.jetstream().await;
    let mut stream = None;
    for _ in 0..300 {
        if let Ok(s) = js.get_stream("CUSTODIAN").await {
            stream = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let consumer = stream
        .expect("the relay created the stream")
        .create_consumer(pull::Config {
            filter_subject: "custodian._system.ledger.checkpoint".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(30), messages.next())
        .await
        .expect("a checkpoint is published on NATS within 30 s")
        .unwrap()
        .unwrap();
    let note = std::str::from_utf8(&message.payload).unwrap();
    let published = body(verifier.open(note).expect("the published note verifies"));
    assert_eq!(published.origin, "id.example.test/ledger");
    let log = ledger.read_log().await;
    let hashes_of_log: Vec<[u8; 32]> = log[..published.size as usize]
        .iter()
        .map(|r| r.hash.0)
        .collect();
    assert_eq!(published.root, merkle::root_of(&hashes_of_log));
    assert!(
        log.iter()
            .any(|r| r.event_type.as_str() == "ledger.checkpointed" && r.data["note"] == note),
        "the note published is the one on the log"
    );

    let (code, _) = server.terminate().await;
    assert_eq!(code, Some(0));
    nats.kill().await;
}
