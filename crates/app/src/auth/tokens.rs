//! Opaque bearer tokens that name the aggregate they belong to, recovery codes, and the keyed hashes
//! under which both are stored.
//!
//! A token reads `{prefix}.{tenant}.{subject}.{generation}.{secret}`: the leading parts let the
//! server find the stream to check without a lookup table, and the 256-bit secret makes it
//! unguessable. Only [`TokenHasher::hash`] of the whole string is ever stored, so a leaked database
//! or log does not yield usable tokens.

use std::collections::HashSet;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use custodian_domain::secret::TokenHash;
use hmac::{Hmac, Mac as _};
use rand::rngs::OsRng;
use rand::{Rng as _, RngCore as _};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

/// The tenant segment of platform-level tokens.
const SYSTEM_TENANT: &str = "_system";
/// Random bytes in a token's secret.
const SECRET_BYTES: usize = 32;
/// Characters of a secret: 32 bytes in unpadded base64url.
const SECRET_CHARS: usize = 43;

/// What a token grants; each kind has its own prefix, so one kind is never accepted as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// Renews an access token (`rt`).
    Refresh,
    /// Lets a person join a tenant (`inv`).
    Invitation,
    /// Lets a person set a new password (`pwr`).
    PasswordReset,
    /// Carries a half-finished login to its second factor (`mfa`).
    MfaChallenge,
}

impl TokenKind {
    /// The token's first segment.
    pub const fn prefix(self) -> &'static str {
        match self {
            Self::Refresh => "rt",
            Self::Invitation => "inv",
            Self::PasswordReset => "pwr",
            Self::MfaChallenge => "mfa",
        }
    }

    const fn noun(self) -> &'static str {
        match self {
            Self::Refresh => "refresh token",
            Self::Invitation => "invitation token",
            Self::PasswordReset => "password reset token",
            Self::MfaChallenge => "MFA challenge token",
        }
    }
}

/// Why a string is not a well-formed token of the expected kind. No variant carries the token or
/// any part of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Longer than any well-formed token.
    #[error("token is longer than {max} characters")]
    TooLong {
        /// The longest token accepted.
        max: usize,
    },
    /// Not five `.`-separated parts.
    #[error("token must have five parts separated by '.'")]
    Shape,
    /// The prefix is not the expected kind's.
    #[error("token is not a {}", .expected.noun())]
    WrongKind {
        /// The kind that was expected.
        expected: TokenKind,
    },
    /// The tenant part is malformed.
    #[error(
        "token tenant must be `_system` or 1-63 characters of a-z, 0-9, `_`, `-` starting with a letter or digit"
    )]
    Tenant,
    /// The subject part is malformed.
    #[error(
        "token subject must be 1-128 characters of A-Z, a-z, 0-9, `_`, `-` starting with a letter or digit"
    )]
    Subject,
    /// The generation part is not a canonical unsigned 64-bit decimal.
    #[error("token generation must be a decimal number without sign or leading zeros")]
    Generation,
    /// The secret part is not 43 base64url characters.
    #[error("token secret must be 43 base64url characters")]
    Secret,
}

/// A bearer token of one kind for one subject of one tenant, at one generation (a counter the
/// subject's aggregate bumps to revoke every earlier token at once).
///
/// Its [`Display`](fmt::Display) form is the token itself; [`OpaqueToken::parse`] accepts exactly
/// the strings that form produces. `Debug` leaves the secret out.
#[derive(Clone, PartialEq, Eq)]
pub struct OpaqueToken {
    kind: TokenKind,
    tenant: String,
    subject: String,
    generation: u64,
    secret: String,
}

impl OpaqueToken {
    /// The longest string [`OpaqueToken::parse`] looks at.
    pub const MAX_LEN: usize = 300;

    /// A new token with a fresh 256-bit secret from the operating system's generator. Fails if
    /// `tenant` or `subject` could not be parsed back out of the token.
    pub fn new(
        kind: TokenKind,
        tenant: &str,
        subject: &str,
        generation: u64,
    ) -> Result<Self, TokenError> {
        if !valid_tenant(tenant) {
            return Err(TokenError::Tenant);
        }
        if !valid_subject(subject) {
            return Err(TokenError::Subject);
        }
        let mut bytes = [0u8; SECRET_BYTES];
        OsRng.fill_bytes(&mut bytes);
        Ok(Self {
            kind,
            tenant: tenant.to_owned(),
            subject: subject.to_owned(),
            generation,
            secret: URL_SAFE_NO_PAD.encode(bytes),
        })
    }

    /// Parses a token presented by a client, accepting only the `expected` kind.
    pub fn parse(s: &str, expected: TokenKind) -> Result<Self, TokenError> {
        if s.len() > Self::MAX_LEN {
            return Err(TokenError::TooLong { max: Self::MAX_LEN });
        }
        let mut parts = s.split('.');
        let (Some(prefix), Some(tenant), Some(subject), Some(generation), Some(secret), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(TokenError::Shape);
        };
        if prefix != expected.prefix() {
            return Err(TokenError::WrongKind { expected });
        }
        if !valid_tenant(tenant) {
            return Err(TokenError::Tenant);
        }
        if !valid_subject(subject) {
            return Err(TokenError::Subject);
        }
        let generation = parse_generation(generation).ok_or(TokenError::Generation)?;
        if secret.len() != SECRET_CHARS
            || !secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(TokenError::Secret);
        }
        Ok(Self {
            kind: expected,
            tenant: tenant.to_owned(),
            subject: subject.to_owned(),
            generation,
            secret: secret.to_owned(),
        })
    }

    /// What the token grants.
    pub fn kind(&self) -> TokenKind {
        self.kind
    }

    /// The tenant the subject belongs to (`_system` for platform-level subjects).
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The id of the aggregate the token belongs to.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The generation of the subject's tokens this one was issued in.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl fmt::Display for OpaqueToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}.{}.{}",
            self.kind.prefix(),
            self.tenant,
            self.subject,
            self.generation,
            self.secret
        )
    }
}

impl fmt::Debug for OpaqueToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpaqueToken")
            .field("kind", &self.kind)
            .field("tenant", &self.tenant)
            .field("subject", &self.subject)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

fn valid_tenant(s: &str) -> bool {
    if s == SYSTEM_TENANT {
        return true;
    }
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_lowercase() || b.is_ascii_digit())
        && s.len() <= 63
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn valid_subject(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && s.len() <= 128
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Only the form `u64`'s `Display` writes, so that parsing then displaying gives back the same
/// string, and so the same hash.
fn parse_generation(s: &str) -> Option<u64> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if canonical { s.parse().ok() } else { None }
}

/// Keyed hashes (HMAC-SHA-256 under a server key) of tokens and recovery codes, the only form in
/// which they are stored. Without the key, a stored hash neither reveals the token nor lets anyone
/// test guesses against it. `Debug` does not show the key.
#[derive(Clone)]
pub struct TokenHasher {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for TokenHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenHasher").finish_non_exhaustive()
    }
}

impl TokenHasher {
    /// A hasher keyed with `key`, which must be secret and random.
    pub fn new(key: [u8; 32]) -> Self {
        // HMAC pads keys shorter than SHA-256's 64-byte block with zeros (RFC 2104), so passing
        // the padded block is the same key, through the constructor that cannot fail.
        let mut block = [0u8; 64];
        block[..key.len()].copy_from_slice(&key);
        Self {
            mac: <Hmac<Sha256> as hmac::digest::KeyInit>::new(&block.into()),
        }
    }

    /// HMAC-SHA-256 of the whole `token` string, as 64 lowercase hex digits.
    pub fn hash(&self, token: &str) -> TokenHash {
        let mut mac = self.mac.clone();
        mac.update(token.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut hex = String::with_capacity(digest.len() * 2);
        for byte in digest {
            hex.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
            hex.push(char::from(HEX_DIGITS[usize::from(byte & 0x0f)]));
        }
        TokenHash(hex)
    }

    /// Whether `token` hashes to `stored`, compared in constant time.
    pub fn matches(&self, token: &str, stored: &TokenHash) -> bool {
        self.hash(token)
            .0
            .as_bytes()
            .ct_eq(stored.0.as_bytes())
            .into()
    }

    /// The hash to store for a recovery code: that of its normalized form (see
    /// [`normalize_recovery_code`]), so the code matches however the person types it. `None` if
    /// `code` cannot be a recovery code.
    pub fn hash_recovery_code(&self, code: &str) -> Option<TokenHash> {
        normalize_recovery_code(code).map(|normalized| self.hash(&normalized))
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// The characters of recovery codes: lowercase letters and digits without the look-alikes `i`,
/// `l`, `o`, `0` and `1`.
pub const RECOVERY_ALPHABET: &str = "abcdefghjkmnpqrstuvwxyz23456789";
/// Characters in a recovery code, not counting the separator (about 49.5 bits).
pub const RECOVERY_CODE_LEN: usize = 10;

/// `n` distinct one-time recovery codes, each 10 random characters of [`RECOVERY_ALPHABET`], shown
/// as `xxxxx-xxxxx`. Store only [`TokenHasher::hash_recovery_code`] of each.
pub fn recovery_codes(n: usize) -> Vec<String> {
    let alphabet = RECOVERY_ALPHABET.as_bytes();
    let mut seen = HashSet::with_capacity(n);
    let mut codes = Vec::with_capacity(n);
    while codes.len() < n {
        let mut code = String::with_capacity(RECOVERY_CODE_LEN + 1);
        for i in 0..RECOVERY_CODE_LEN {
            if i == RECOVERY_CODE_LEN / 2 {
                code.push('-');
            }
            code.push(char::from(alphabet[OsRng.gen_range(0..alphabet.len())]));
        }
        if seen.insert(code.clone()) {
            codes.push(code);
        }
    }
    codes
}

/// The canonical form of a recovery code as a person typed it: lowercased, with spaces and `-`
/// removed. `None` unless that leaves exactly 10 characters of [`RECOVERY_ALPHABET`].
pub fn normalize_recovery_code(s: &str) -> Option<String> {
    let normalized: String = s
        .chars()
        .filter(|c| *c != ' ' && *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let valid = normalized.len() == RECOVERY_CODE_LEN
        && normalized.chars().all(|c| RECOVERY_ALPHABET.contains(c));
    valid.then_some(normalized)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [TokenKind; 4] = [
        TokenKind::Refresh,
        TokenKind::Invitation,
        TokenKind::PasswordReset,
        TokenKind::MfaChallenge,
    ];

    fn sample() -> OpaqueToken {
        OpaqueToken::new(TokenKind::Refresh, "acme", "usr_01HZY", 7).unwrap()
    }

    #[test]
    fn display_parses_back_to_the_same_token_for_every_kind() {
        for kind in KINDS {
            for (tenant, subject, generation) in [
                ("acme", "usr_01HZY", 0),
                ("_system", "adm-1", u64::MAX),
                (&*"t".repeat(63), &*"S".repeat(128), 42),
            ] {
                let token = OpaqueToken::new(kind, tenant, subject, generation).unwrap();
                let text = token.to_string();
                assert!(text.starts_with(&format!("{}.", kind.prefix())));
                assert!(text.len() <= OpaqueToken::MAX_LEN);
                let parsed = OpaqueToken::parse(&text, kind).unwrap();
                assert_eq!(parsed, token);
                assert_eq!(parsed.to_string(), text);
                assert_eq!(
                    (
                        parsed.kind(),
                        parsed.tenant(),
                        parsed.subject(),
                        parsed.generation()
                    ),
                    (kind, tenant, subject, generation)
                );
            }
        }
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        let good = sample().to_string();
        let secret = good.rsplit('.').next().unwrap().to_owned();
        assert_eq!(secret.len(), 43);
        let cases: Vec<(String, TokenError)> = vec![
            (
                format!("inv.acme.usr_01HZY.7.{secret}"),
                TokenError::WrongKind {
                    expected: TokenKind::Refresh,
                },
            ),
            (format!("rt.acme.usr_01HZY.{secret}"), TokenError::Shape),
            (format!("rt.acme.usr_01HZY.7.8.{secret}"), TokenError::Shape),
            (String::new(), TokenError::Shape),
            (format!("rt.Acme.usr_01HZY.7.{secret}"), TokenError::Tenant),
            (format!("rt._acme.usr_01HZY.7.{secret}"), TokenError::Tenant),
            (format!("rt..usr_01HZY.7.{secret}"), TokenError::Tenant),
            (
                format!("rt.{}.usr_01HZY.7.{secret}", "a".repeat(64)),
                TokenError::Tenant,
            ),
            (format!("rt.acme.-usr.7.{secret}"), TokenError::Subject),
            (format!("rt.acme.us/r.7.{secret}"), TokenError::Subject),
            (
                format!("rt.acme.usr_01HZY.seven.{secret}"),
                TokenError::Generation,
            ),
            (
                format!("rt.acme.usr_01HZY.-7.{secret}"),
                TokenError::Generation,
            ),
            (
                format!("rt.acme.usr_01HZY.+7.{secret}"),
                TokenError::Generation,
            ),
            (
                format!("rt.acme.usr_01HZY.07.{secret}"),
                TokenError::Generation,
            ),
            (
                format!("rt.acme.usr_01HZY.18446744073709551616.{secret}"),
                TokenError::Generation,
            ),
            (
                format!("rt.acme.usr_01HZY.7.{}", &secret[..42]),
                TokenError::Secret,
            ),
            (format!("rt.acme.usr_01HZY.7.{secret}A"), TokenError::Secret),
            (
                format!("rt.acme.usr_01HZY.7.{}+", &secret[..42]),
                TokenError::Secret,
            ),
            (
                format!("rt.acme.{}.7.{secret}", "u".repeat(300)),
                TokenError::TooLong { max: 300 },
            ),
        ];
        for (text, expected) in cases {
            let err = OpaqueToken::parse(&text, TokenKind::Refresh).unwrap_err();
            assert_eq!(err, expected, "{text}");
            assert!(!err.to_string().contains(&secret));
        }
        assert_eq!(
            OpaqueToken::new(TokenKind::Refresh, "a.b", "usr", 1).unwrap_err(),
            TokenError::Tenant
        );
        assert_eq!(
            OpaqueToken::new(TokenKind::Refresh, "acme", "u.s", 1).unwrap_err(),
            TokenError::Subject
        );
    }

    #[test]
    fn new_tokens_have_distinct_secrets_and_debug_hides_them() {
        let (a, b) = (sample(), sample());
        assert_ne!(a, b);
        assert_ne!(a.to_string(), b.to_string());
        let secret = a.to_string().rsplit('.').next().unwrap().to_owned();
        assert!(!format!("{a:?}").contains(&secret));
    }

    #[test]
    fn hash_is_stable_keyed_hex_and_plain_hmac_sha256() {
        let hasher = TokenHasher::new([7; 32]);
        let token = sample().to_string();
        let hash = hasher.hash(&token);
        assert_eq!(hash, hasher.hash(&token));
        assert_eq!(hash.0.len(), 64);
        assert!(
            hash.0
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_ne!(hash, TokenHasher::new([8; 32]).hash(&token));
        assert_ne!(hash, hasher.hash(&sample().to_string()));

        let mut reference = Hmac::<Sha256>::new_from_slice(&[7; 32]).unwrap();
        reference.update(token.as_bytes());
        let expected: String = reference
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hash.0, expected);
        assert!(!format!("{hasher:?}").contains('7'));
    }

    #[test]
    fn matches_only_the_hashed_token() {
        let hasher = TokenHasher::new([1; 32]);
        let token = sample().to_string();
        let stored = hasher.hash(&token);
        assert!(hasher.matches(&token, &stored));
        assert!(!hasher.matches(&sample().to_string(), &stored));
        assert!(!TokenHasher::new([2; 32]).matches(&token, &stored));
        assert!(!hasher.matches(&token, &TokenHash(String::new())));
    }

    #[test]
    fn recovery_codes_are_distinct_and_well_formed() {
        let codes = recovery_codes(10);
        assert_eq!(codes.len(), 10);
        assert_eq!(codes.iter().collect::<HashSet<_>>().len(), 10);
        for code in &codes {
            assert_eq!(code.len(), 11, "{code}");
            assert_eq!(code.as_bytes()[5], b'-', "{code}");
            let normalized = normalize_recovery_code(code).unwrap();
            assert_eq!(normalized, code.replace('-', ""));
        }
        assert!(recovery_codes(0).is_empty());
    }

    #[test]
    fn recovery_codes_normalize_however_they_are_typed() {
        let cases = [
            ("abcde-fghjk", Some("abcdefghjk")),
            ("ABCDE FGHJK", Some("abcdefghjk")),
            (" abc de-fg hjk ", Some("abcdefghjk")),
            ("2345678923", Some("2345678923")),
            ("abcde-fghj", None),
            ("abcde-fghjkm", None),
            ("abcde-fghj1", None),
            ("abcde-fghjl", None),
            ("abcde-fghjo", None),
            ("abcde_fghjk", None),
            ("abcdé-fghjk", None),
            ("", None),
        ];
        for (typed, expected) in cases {
            assert_eq!(
                normalize_recovery_code(typed).as_deref(),
                expected,
                "{typed:?}"
            );
        }
        let hasher = TokenHasher::new([3; 32]);
        assert_eq!(
            hasher.hash_recovery_code("ABCDE FGHJK"),
            Some(hasher.hash("abcdefghjk"))
        );
        assert_eq!(hasher.hash_recovery_code("nope"), None);
    }
}
