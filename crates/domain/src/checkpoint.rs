//! Signed checkpoints of the log's Merkle tree, in the C2SP formats other transparency logs use, so
//! that witnesses and auditors need nothing of Custodian's to check them:
//!
//! - the body is a [`tlog-checkpoint`](https://c2sp.org/tlog-checkpoint): the origin line, the tree
//!   size in decimal, the root hash in standard base64, then extension lines; Custodian adds one,
//!   `time <RFC 3339 UTC>`, the moment the checkpoint was taken;
//! - it is wrapped in a [`signed-note`](https://c2sp.org/signed-note): the text, a blank line, and
//!   one line per signature, `— <key name> <base64(key id || signature)>`;
//! - the signature is Ed25519 over the text's bytes; the key id is the first four bytes of
//!   `SHA-256(key name || "\n" || 0x01 || public key)`, and the verifier key is published as
//!   `<key name>+<key id, 8 hex digits>+<base64(0x01 || public key)>`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::event::Timestamp;
use crate::merkle::Hash;

/// The signature type byte of Ed25519 in signed notes.
const ED25519: u8 = 0x01;

/// The prefix of a signature line: an em dash and a space.
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// The extension line Custodian adds to a checkpoint's body.
const TIME_EXTENSION: &str = "time ";

/// Why a checkpoint or a note could not be read or verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// The text does not follow the format.
    #[error("malformed {what}: {why}")]
    Malformed {
        /// What was being read.
        what: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// No signature line is by the verifier's key.
    #[error("the note carries no signature by {0}")]
    Unsigned(String),
    /// The signature by the verifier's key does not verify.
    #[error("the signature by {0} does not verify")]
    BadSignature(String),
}

fn malformed(what: &'static str, why: impl Into<String>) -> NoteError {
    NoteError::Malformed {
        what,
        why: why.into(),
    }
}

/// A key name: non-empty, printable, without spaces or `+`.
fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '+')
    {
        return Err(malformed(
            "key name",
            format!("{name:?} must be non-empty, without spaces or '+'"),
        ));
    }
    Ok(())
}

/// The key id of an Ed25519 key named `name`: the first four bytes of
/// `SHA-256(name || "\n" || 0x01 || public key)`.
pub fn key_id(name: &str, public: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ED25519]);
    h.update(public.as_bytes());
    let digest = h.finalize();
    let mut id = [0; 4];
    id.copy_from_slice(digest.get(..4).unwrap_or(&[0; 4]));
    id
}

/// The verifier key string of an Ed25519 key: `name+hex(key id)+base64(0x01 || public key)`.
pub fn verifier_key(name: &str, public: &VerifyingKey) -> String {
    let mut key = Vec::with_capacity(33);
    key.push(ED25519);
    key.extend_from_slice(public.as_bytes());
    format!(
        "{name}+{}+{}",
        hex::encode(key_id(name, public)),
        STANDARD.encode(key)
    )
}

/// A checkpoint: the tree's size and root, and when it was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line: a schema-less URL naming the log.
    pub origin: String,
    /// The number of leaves (events).
    pub size: u64,
    /// The root of the tree of `size` leaves.
    pub root: Hash,
    /// When it was taken.
    pub time: Option<Timestamp>,
}

impl Checkpoint {
    /// The body: origin, size, base64 root, and the `time` extension line, each ending in `\n`.
    pub fn body(&self) -> String {
        let mut text = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        );
        if let Some(time) = self.time {
            text.push_str(TIME_EXTENSION);
            text.push_str(&time.to_string());
            text.push('\n');
        }
        text
    }

    /// Reads a body as [`Checkpoint::body`] writes it; unknown extension lines are allowed and
    /// ignored.
    pub fn parse_body(text: &str) -> Result<Self, NoteError> {
        const WHAT: &str = "checkpoint";
        let Some(text) = text.strip_suffix('\n') else {
            return Err(malformed(WHAT, "the text must end with a newline"));
        };
        let mut lines = text.split('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or_else(|| malformed(WHAT, "the origin line is empty"))?;
        let size = lines
            .next()
            .ok_or_else(|| malformed(WHAT, "the tree size line is missing"))?;
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(malformed(
                WHAT,
                format!("tree size {size:?} is not a decimal number"),
            ));
        }
        let size: u64 = size
            .parse()
            .map_err(|_| malformed(WHAT, format!("tree size {size} is too large")))?;
        let root = lines
            .next()
            .ok_or_else(|| malformed(WHAT, "the root hash line is missing"))?;
        let root: Hash = STANDARD
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| malformed(WHAT, "the root hash is not 32 bytes of base64"))?;
        let mut time = None;
        for line in lines {
            if line.is_empty() {
                return Err(malformed(WHAT, "an extension line is empty"));
            }
            if let Some(t) = line.strip_prefix(TIME_EXTENSION) {
                time = Some(
                    Timestamp::parse(t).map_err(|e| malformed(WHAT, format!("time {t:?}: {e}")))?,
                );
            }
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            time,
        })
    }
}

/// Signs notes with an Ed25519 key under a name.
#[derive(Debug, Clone)]
pub struct NoteSigner {
    name: String,
    key: SigningKey,
}

impl NoteSigner {
    /// A signer of `name` (non-empty, no spaces or `+`) with `key`.
    pub fn new(name: &str, key: SigningKey) -> Result<Self, NoteError> {
        check_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            key,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id, as in the verifier key and each signature.
    pub fn key_id(&self) -> [u8; 4] {
        key_id(&self.name, &self.key.verifying_key())
    }

    /// The verifier key string others check the notes with.
    pub fn verifier_key(&self) -> String {
        verifier_key(&self.name, &self.key.verifying_key())
    }

    /// The signed note of `text` (which must end with a newline): the text, a blank line, and the
    /// signature line.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        if !text.ends_with('\n') || text.contains("\n\n") || text.starts_with('\n') {
            return Err(malformed(
                "note text",
                "it must be non-empty lines, each ending with a newline",
            ));
        }
        let signature = self.key.sign(text.as_bytes());
        let mut blob = Vec::with_capacity(68);
        blob.extend_from_slice(&self.key_id());
        blob.extend_from_slice(&signature.to_bytes());
        Ok(format!(
            "{text}\n{SIGNATURE_PREFIX}{} {}\n",
            self.name,
            STANDARD.encode(blob)
        ))
    }
}

/// A verifier key read from its string form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

impl NoteVerifier {
    /// Reads `name+hex(key id)+base64(0x01 || public key)`, checking that the id is the key's.
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        const WHAT: &str = "verifier key";
        let mut parts = vkey.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(malformed(WHAT, "expected name+id+key"));
        };
        check_name(name)?;
        let mut id_bytes = [0; 4];
        if id.len() != 8 || hex::decode_to_slice(id, &mut id_bytes).is_err() {
            return Err(malformed(WHAT, "the key id must be 8 hex digits"));
        }
        let key = STANDARD
            .decode(key)
            .map_err(|_| malformed(WHAT, "the key is not base64"))?;
        let Some((&ED25519, public)) = key.split_first() else {
            return Err(malformed(
                WHAT,
                "only Ed25519 keys (type 0x01) are supported",
            ));
        };
        let public: [u8; 32] = public
            .try_into()
            .map_err(|_| malformed(WHAT, "an Ed25519 key has 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&public)
            .map_err(|_| malformed(WHAT, "not a valid Ed25519 public key"))?;
        if key_id(name, &key) != id_bytes {
            return Err(malformed(
                WHAT,
                "the key id does not match the name and key",
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            id: id_bytes,
            key,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks `note`'s signature by this key and answers the signed text.
    pub fn open<'n>(&self, note: &'n str) -> Result<&'n str, NoteError> {
        const WHAT: &str = "signed note";
        let Some(split) = note.rfind("\n\n") else {
            return Err(malformed(WHAT, "no blank line before the signatures"));
        };
        let (text, signatures) = note.split_at(split + 1);
        let Some(signatures) = signatures
            .strip_prefix('\n')
            .and_then(|s| s.strip_suffix('\n'))
        else {
            return Err(malformed(WHAT, "the signatures must end with a newline"));
        };
        let mut found = false;
        for line in signatures.split('\n') {
            let Some(rest) = line.strip_prefix(SIGNATURE_PREFIX) else {
                return Err(malformed(WHAT, format!("{line:?} is not a signature line")));
            };
            let Some((name, blob)) = rest.split_once(' ') else {
                return Err(malformed(WHAT, format!("{line:?} has no signature")));
            };
            let blob = STANDARD
                .decode(blob)
                .map_err(|_| malformed(WHAT, "a signature is not base64"))?;
            let Some((id, signature)) = blob.split_first_chunk::<4>() else {
                return Err(malformed(WHAT, "a signature is shorter than its key id"));
            };
            if name != self.name || *id != self.id {
                continue;
            }
            found = true;
            let signature = Signature::from_slice(signature)
                .map_err(|_| NoteError::BadSignature(self.name.clone()))?;
            if self.key.verify(text.as_bytes(), &signature).is_ok() {
                return Ok(text);
            }
        }
        Err(if found {
            NoteError::BadSignature(self.name.clone())
        } else {
            NoteError::Unsigned(self.name.clone())
        })
    }

    /// Checks `note` and reads the checkpoint it signs.
    pub fn open_checkpoint(&self, note: &str) -> Result<Checkpoint, NoteError> {
        Checkpoint::parse_body(self.open(note)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> NoteSigner {
        NoteSigner::new("custodian.example/ledger", SigningKey::from_bytes(&[7; 32])).unwrap()
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "custodian.example/ledger".into(),
            size: 42,
            root: [9; 32],
            time: Some(Timestamp::parse("2026-12-02T10:00:00Z").unwrap()),
        }
    }

    #[test]
    fn a_checkpoint_reads_back_as_written() {
        let c = checkpoint();
        let body = c.body();
        assert_eq!(
            body,
            format!(
                "custodian.example/ledger\n42\n{}\ntime 2026-12-02T10:00:00.000000Z\n",
                STANDARD.encode([9; 32])
            )
        );
        assert_eq!(Checkpoint::parse_body(&body).unwrap(), c);
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let root = STANDARD.encode([9; 32]);
        for bad in [
            String::new(),
            format!("o\n42\n{root}"),
            format!("\n42\n{root}\n"),
            format!("o\n042\n{root}\n"),
            format!("o\n-1\n{root}\n"),
            "o\n42\nAAAA\n".to_owned(),
            format!("o\n42\n{root}\n\n"),
            format!("o\n42\n{root}\ntime yesterday\n"),
        ] {
            assert!(Checkpoint::parse_body(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_signed_note_opens_with_its_verifier_key_only() {
        let signer = signer();
        let note = signer.sign(&checkpoint().body()).unwrap();
        let verifier = NoteVerifier::parse(&signer.verifier_key()).unwrap();
        assert_eq!(verifier.open_checkpoint(&note).unwrap(), checkpoint());

        let other =
            NoteSigner::new("custodian.example/ledger", SigningKey::from_bytes(&[8; 32])).unwrap();
        let other = NoteVerifier::parse(&other.verifier_key()).unwrap();
        assert!(matches!(other.open(&note), Err(NoteError::Unsigned(_))));

        let forged = note.replacen("\n42\n", "\n43\n", 1);
        assert!(matches!(
            verifier.open(&forged),
            Err(NoteError::BadSignature(_))
        ));
    }

    #[test]
    fn verifier_keys_must_be_consistent() {
        let vkey = signer().verifier_key();
        let (name, rest) = vkey.split_once('+').unwrap();
        assert!(NoteVerifier::parse(&format!("other+{rest}")).is_err());
        assert!(
            NoteVerifier::parse(&format!(
                "{name}+00000000+{}",
                rest.split_once('+').unwrap().1
            ))
            .is_err()
        );
        assert!(NoteVerifier::parse("just-a-name").is_err());
        assert!(NoteSigner::new("has space", SigningKey::from_bytes(&[1; 32])).is_err());
    }
}
