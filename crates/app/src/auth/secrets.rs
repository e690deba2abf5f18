//! The server's master key, the keys derived from it, and the sealing of data under a data key.
//!
//! One 32-byte master key (a file, or a variable) is the root of every server secret. Each use gets
//! its own key derived with HKDF-SHA-256 under a distinct `info` string, so a key used for one
//! purpose can never be confused with another: wrapping per-subject data keys, hashing tokens,
//! the blind index of email addresses, and wrapping the token and checkpoint signing keys.
//!
//! Losing the master key makes every wrapped key, and so every sealed value, unreadable; changing it
//! changes every token hash and email index.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use custodian_domain::secret::Sealed;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::Sha256;
use subtle::ConstantTimeEq;

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const SEALED_PREFIX: &str = "v1.";

const INFO_DATA_KEY_WRAP: &[u8] = b"custodian data-key wrap v1";
const INFO_TOKEN_HMAC: &[u8] = b"custodian token hmac v1";
const INFO_EMAIL_INDEX: &[u8] = b"custodian email index v1";
const INFO_SIGNING_KEY_WRAP: &[u8] = b"custodian signing-key wrap v1";
const INFO_API_KEY_HMAC: &[u8] = b"custodian api-key hmac v1";
const INFO_CHECKPOINT_KEY_WRAP: &[u8] = b"custodian checkpoint-key wrap v1";
const INFO_SNAPSHOT_MAC: &[u8] = b"custodian index-snapshot mac v1";

/// Why the master key cannot be loaded.
///
/// No variant carries key material or the content of the key file.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The key file (or its directory) cannot be read or created.
    #[error("cannot read or create the master key file {}: {source}", path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The key file exists but does not hold 32 bytes written in standard base64.
    #[error("the master key file {} does not hold 32 bytes of standard base64", path.display())]
    MalformedFile {
        /// The key file.
        path: PathBuf,
    },
    /// A master key given as text is not 32 bytes written in standard base64.
    #[error("the master key is not 32 bytes of standard base64")]
    MalformedValue,
    /// A sub-key cannot be derived (cannot happen with a 32-byte key; kept so nothing panics).
    #[error("cannot derive the server keys from the master key")]
    Derive,
}

/// The server's master key and the sub-keys derived from it.
///
/// Cheap to clone (the keys are shared). Its `Debug` form shows no key material.
#[derive(Clone)]
pub struct Keyring {
    keys: Arc<DerivedKeys>,
}

struct DerivedKeys {
    data_key_wrap: DataKey,
    signing_key_wrap: DataKey,
    checkpoint_key_wrap: DataKey,
    token: [u8; KEY_LEN],
    api_key: [u8; KEY_LEN],
    snapshot: [u8; KEY_LEN],
    /// Keyed once at load so computing an index cannot fail.
    email_index: Hmac<Sha256>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keyring(..)")
    }
}

impl Keyring {
    /// Loads the master key from `path`, creating it if the file does not exist.
    ///
    /// The file holds 32 random bytes as standard base64 and a newline. A new file is created
    /// (with its missing parent directories) readable by the owner only, and an existing file is
    /// never overwritten: a file that does not hold exactly 32 bytes is an error that names the
    /// path, never the content.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyringError> {
        let io_error = |source| KeyringError::Io {
            path: path.to_owned(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Self::decode(&text).ok_or_else(|| KeyringError::MalformedFile {
                path: path.to_owned(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut master = [0u8; KEY_LEN];
                OsRng.fill_bytes(&mut master);
                match create_key_file(path, &master) {
                    Ok(()) => Self::from_master(&master),
                    // Another process created it first: theirs is the key.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        let text = std::fs::read_to_string(path).map_err(io_error)?;
                        Self::decode(&text).ok_or_else(|| KeyringError::MalformedFile {
                            path: path.to_owned(),
                        })
                    }
                    Err(e) => Err(io_error(e)),
                }
            }
            Err(e) => Err(io_error(e)),
        }
    }

    /// Builds the keyring from a master key given as text (e.g. an environment variable): 32 bytes
    /// in standard base64; surrounding whitespace is ignored.
    pub fn from_base64(s: &str) -> Result<Self, KeyringError> {
        Self::decode(s).ok_or(KeyringError::MalformedValue)
    }

    /// The key that hashes high-entropy tokens (refresh, invitation and reset tokens, API keys,
    /// recovery codes) into a [`custodian_domain::secret::TokenHash`].
    pub fn token_key(&self) -> [u8; KEY_LEN] {
        self.keys.token
    }

    /// The key that signs the in-memory indexes' snapshots ([`crate::snapshot`]): a snapshot can
    /// grant access, so one altered in the database must not verify.
    pub fn snapshot_key(&self) -> [u8; KEY_LEN] {
        self.keys.snapshot
    }

    /// The key that hashes API keys (`cst_...`) into the [`custodian_domain::secret::TokenHash`]
    /// their events and the key index hold: a key of its own, so an API key's hash is never
    /// comparable with any other token's.
    pub fn api_key_key(&self) -> [u8; KEY_LEN] {
        self.keys.api_key
    }

    /// The blind index of an email address within a tenant: 64 lowercase hex digits of
    /// HMAC-SHA-256 over `tenant`, a NUL byte, and the address trimmed and lowercased.
    ///
    /// The same address always gives the same index under one master key, so the log can find a
    /// user by email without holding the address itself.
    pub fn email_index(&self, tenant: &str, email: &str) -> String {
        let mut mac = self.keys.email_index.clone();
        mac.update(tenant.as_bytes());
        mac.update(b"\0");
        mac.update(email.trim().to_lowercase().as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// The key that wraps (seals) per-subject data keys.
    pub(crate) fn data_key_wrap_key(&self) -> &DataKey {
        &self.keys.data_key_wrap
    }

    /// The key that wraps (seals) the private halves of token signing keys.
    pub(crate) fn signing_key_wrap_key(&self) -> &DataKey {
        &self.keys.signing_key_wrap
    }

    /// The key that wraps (seals) the private halves of checkpoint signing keys.
    pub(crate) fn checkpoint_key_wrap_key(&self) -> &DataKey {
        &self.keys.checkpoint_key_wrap
    }

    fn decode(text: &str) -> Option<Self> {
        let bytes = STANDARD.decode(text.trim()).ok()?;
        let master: [u8; KEY_LEN] = bytes.as_slice().try_into().ok()?;
        Self::from_master(&master).ok()
    }

    fn from_master(master: &[u8; KEY_LEN]) -> Result<Self, KeyringError> {
        let hkdf = Hkdf::<Sha256>::new(None, master);
        let derive = |info: &[u8]| {
            let mut okm = [0u8; KEY_LEN];
            hkdf.expand(info, &mut okm)
                .map_err(|_| KeyringError::Derive)?;
            Ok::<_, KeyringError>(okm)
        };
        let email_key = derive(INFO_EMAIL_INDEX)?;
        Ok(Self {
            keys: Arc::new(DerivedKeys {
                data_key_wrap: DataKey(derive(INFO_DATA_KEY_WRAP)?),
                signing_key_wrap: DataKey(derive(INFO_SIGNING_KEY_WRAP)?),
                checkpoint_key_wrap: DataKey(derive(INFO_CHECKPOINT_KEY_WRAP)?),
                token: derive(INFO_TOKEN_HMAC)?,
                api_key: derive(INFO_API_KEY_HMAC)?,
                snapshot: derive(INFO_SNAPSHOT_MAC)?,
                email_index: <Hmac<Sha256> as Mac>::new_from_slice(&email_key)
                    .map_err(|_| KeyringError::Derive)?,
            }),
        })
    }
}

/// Creates the key file without ever replacing an existing one (`AlreadyExists` if it is there).
fn create_key_file(path: &Path, master: &[u8; KEY_LEN]) -> io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let mut dir = std::fs::DirBuilder::new();
        dir.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
        dir.create(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(format!("{}\n", STANDARD.encode(master)).as_bytes())?;
    file.sync_all()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// A 256-bit AES-GCM key that seals one subject's data (or, inside this crate, wraps other keys).
///
/// Its `Debug` form is redacted; equality is constant-time.
#[derive(Clone)]
pub struct DataKey([u8; KEY_LEN]);

impl DataKey {
    /// A new random key from the operating system's generator.
    pub fn generate() -> Self {
        let mut key = [0u8; KEY_LEN];
        OsRng.fill_bytes(&mut key);
        Self(key)
    }

    pub(crate) fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    pub(crate) fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.0.into())
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl PartialEq for DataKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for DataKey {}

/// Why a sealed value cannot be opened. Neither variant says more, so a failed open leaks nothing
/// about the key or the plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The value is not `v1.` followed by base64url of a nonce, a ciphertext and a tag.
    #[error("the sealed value is not in the v1 format")]
    Format,
    /// Authentication failed: another key, another subject (AAD), or a changed byte.
    #[error("the sealed value cannot be opened: wrong key, wrong subject or altered")]
    Decrypt,
}

/// Encrypts `plaintext` under `key` with AES-256-GCM and a random 12-byte nonce.
///
/// `aad` binds the result to its context (the caller passes the subject, e.g. the user id):
/// [`open`] with any other `aad` fails, so a sealed value cannot be moved to another subject.
/// The result is `v1.` + base64url without padding of nonce ‖ ciphertext ‖ tag.
///
/// # Panics
/// If `plaintext` is longer than AES-GCM allows (about 64 GiB), or the operating system has no
/// randomness to give.
pub fn seal(key: &DataKey, plaintext: &[u8], aad: &[u8]) -> Sealed {
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let ciphertext = key
        .cipher()
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("AES-GCM encryption fails only for plaintexts over 64 GiB");
    let mut raw = Vec::with_capacity(NONCE_LEN + ciphertext.len());
    raw.extend_from_slice(&nonce);
    raw.extend_from_slice(&ciphertext);
    Sealed(format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw)))
}

/// Decrypts a value made by [`seal`] under the same `key` and `aad`.
pub fn open(key: &DataKey, sealed: &Sealed, aad: &[u8]) -> Result<Vec<u8>, SealError> {
    let encoded = sealed
        .0
        .strip_prefix(SEALED_PREFIX)
        .ok_or(SealError::Format)?;
    let raw = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| SealError::Format)?;
    if raw.len() < NONCE_LEN + TAG_LEN {
        return Err(SealError::Format);
    }
    let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
    key.cipher()
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| SealError::Decrypt)
}

/// A keyring on a random master key, for tests of this crate.
#[cfg(test)]
pub(crate) fn test_keyring() -> Keyring {
    let mut master = [0u8; KEY_LEN];
    OsRng.fill_bytes(&mut master);
    Keyring::from_base64(&STANDARD.encode(master)).expect("a fresh 32-byte key is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_text(byte: u8) -> String {
        STANDARD.encode([byte; KEY_LEN])
    }

    #[test]
    fn derived_keys_are_deterministic_per_master_key_and_differ_across_keys() {
        let a = Keyring::from_base64(&key_text(1)).unwrap();
        let a_again = Keyring::from_base64(&key_text(1)).unwrap();
        let b = Keyring::from_base64(&key_text(2)).unwrap();

        assert_eq!(a.token_key(), a_again.token_key());
        assert_ne!(a.token_key(), b.token_key());
        assert_eq!(a.data_key_wrap_key(), a_again.data_key_wrap_key());
        assert_ne!(a.data_key_wrap_key(), b.data_key_wrap_key());
        assert_eq!(a.signing_key_wrap_key(), a_again.signing_key_wrap_key());
        assert_ne!(a.signing_key_wrap_key(), b.signing_key_wrap_key());

        // The purposes never share a key.
        let purposes = [
            a.token_key(),
            *a.data_key_wrap_key().as_bytes(),
            *a.signing_key_wrap_key().as_bytes(),
        ];
        assert_ne!(purposes[0], purposes[1]);
        assert_ne!(purposes[0], purposes[2]);
        assert_ne!(purposes[1], purposes[2]);
        assert!(!purposes.contains(&[1; KEY_LEN]));
    }

    #[test]
    fn email_index_is_a_keyed_normalized_hash_scoped_to_the_tenant() {
        let a = Keyring::from_base64(&key_text(1)).unwrap();
        let b = Keyring::from_base64(&key_text(2)).unwrap();

        let index = a.email_index("tnt_a", "Ada@Example.com");
        assert_eq!(index.len(), 64);
        assert!(
            index
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        );
        assert_eq!(index, a.email_index("tnt_a", "  ada@example.COM\n"));
        assert_ne!(index, a.email_index("tnt_b", "ada@example.com"));
        assert_ne!(index, b.email_index("tnt_a", "ada@example.com"));
        assert_ne!(index, a.email_index("tnt_a", "bob@example.com"));
        // The separator keeps "ab" + "c" apart from "a" + "bc".
        assert_ne!(a.email_index("ab", "c"), a.email_index("a", "bc"));
    }

    #[test]
    fn sealed_data_opens_with_its_key_and_subject() {
        let key = DataKey::generate();
        let sealed = seal(&key, b"ada@example.com", b"user_1");
        assert!(sealed.0.starts_with("v1."));
        assert!(!sealed.0.contains("ada"));
        assert_eq!(open(&key, &sealed, b"user_1").unwrap(), b"ada@example.com");
        // A fresh nonce every time.
        assert_ne!(seal(&key, b"ada@example.com", b"user_1"), sealed);
        // An empty plaintext still round-trips.
        assert_eq!(open(&key, &seal(&key, b"", b"x"), b"x").unwrap(), b"");
    }

    #[test]
    fn sealed_data_does_not_open_with_another_subject_key_or_a_changed_byte() {
        let key = DataKey::generate();
        let sealed = seal(&key, b"secret", b"user_1");

        assert_eq!(open(&key, &sealed, b"user_2"), Err(SealError::Decrypt));
        assert_eq!(
            open(&DataKey::generate(), &sealed, b"user_1"),
            Err(SealError::Decrypt)
        );

        let raw = URL_SAFE_NO_PAD.decode(&sealed.0[3..]).unwrap();
        for i in [0, NONCE_LEN, raw.len() - 1] {
            let mut flipped = raw.clone();
            flipped[i] ^= 0x01;
            let tampered = Sealed(format!("v1.{}", URL_SAFE_NO_PAD.encode(flipped)));
            assert_eq!(open(&key, &tampered, b"user_1"), Err(SealError::Decrypt));
        }

        for malformed in ["", "v1.", "v2.AAAA", "v1.!!!!", "v1.AAAAAAAAAAAAAAAA"] {
            assert_eq!(
                open(&key, &Sealed(malformed.to_owned()), b"user_1"),
                Err(SealError::Format),
                "{malformed:?}"
            );
        }
    }

    #[test]
    fn key_file_is_created_owner_only_and_reloads_the_same_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/master.key");

        let created = Keyring::load_or_create(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with('\n'));
        assert_eq!(STANDARD.decode(text.trim_end()).unwrap().len(), KEY_LEN);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        let reloaded = Keyring::load_or_create(&path).unwrap();
        assert_eq!(created.token_key(), reloaded.token_key());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            text,
            "not rewritten"
        );
        let from_env = Keyring::from_base64(&text).unwrap();
        assert_eq!(from_env.token_key(), created.token_key());
    }

    #[test]
    fn malformed_key_file_is_an_error_naming_the_path_not_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        for content in [
            "not base64 at all\n".to_owned(),
            format!("{}\n", STANDARD.encode([7u8; 31])),
            format!("{}\n", STANDARD.encode([7u8; 33])),
            String::new(),
        ] {
            std::fs::write(&path, &content).unwrap();
            let err = Keyring::load_or_create(&path).unwrap_err();
            assert!(matches!(err, KeyringError::MalformedFile { .. }));
            let message = err.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            if !content.trim().is_empty() {
                assert!(!message.contains(content.trim()), "{message}");
            }
            // The bad file is left as it was.
            assert_eq!(std::fs::read_to_string(&path).unwrap(), content);
        }
        assert!(matches!(
            Keyring::from_base64("short"),
            Err(KeyringError::MalformedValue)
        ));
    }

    #[test]
    fn debug_forms_show_no_key_material() {
        let keyring = Keyring::from_base64(&key_text(0xab)).unwrap();
        assert_eq!(format!("{keyring:?}"), "Keyring(..)");
        assert_eq!(
            format!("{:?}", DataKey::from_bytes([0xab; 32])),
            "DataKey(..)"
        );
    }
}
