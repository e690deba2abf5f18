//! API keys: their format, and the key aggregate (issue, update, rotate, revoke, usage windows).
//!
//! A key reads `cst_` + 30 random base62 characters + 6 base62 characters of checksum (DESIGN
//! section 5). The checksum is CRC-32/ISO-HDLC of the random part, so a mistyped key is refused by
//! [`parse`] before anything is looked up, and secret scanners recognize a leaked one. The domain
//! never sees a full key: events carry its keyed hash ([`TokenHash`]) and a [`preview`].
//!
//! A key lives in the stream `{tenant}/key/{key_id}`. Rotation keeps the key's id: the previous
//! secret keeps working until `previous_valid_until` (exclusive). Usage is recorded per key per
//! minute window as `key.used`, never one event per request.

use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::event::Timestamp;
use crate::policy::{Permission, Scope};
use crate::secret::TokenHash;

/// The aggregate name of keys' streams.
pub const AGGREGATE: &str = "key";
/// Every key starts with this.
pub const PREFIX: &str = "cst_";
/// Characters of the random part (about 178 bits).
pub const RANDOM_LEN: usize = 30;
/// Characters of the checksum.
pub const CHECKSUM_LEN: usize = 6;
/// Characters of a whole key.
pub const KEY_LEN: usize = PREFIX.len() + RANDOM_LEN + CHECKSUM_LEN;
/// The base62 alphabet, in ASCII order.
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Bytes at or above this are rejected when sampling, so every character is equally likely
/// (248 = 4 × 62).
const SAMPLE_BOUND: u8 = 248;

/// Most scopes on one key.
pub const MAX_SCOPES: usize = 100;
/// Most ranges in an address allowlist.
pub const MAX_IP_RANGES: usize = 100;
/// Longest key name, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// Why a string is not a well-formed key. No variant carries the key or any part of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    /// It does not start with `cst_`.
    #[error("an API key starts with cst_")]
    Prefix,
    /// It is not 40 characters long.
    #[error("an API key is 40 characters long")]
    Length,
    /// It holds a character outside `0-9A-Za-z` after the prefix.
    #[error("an API key holds only 0-9, A-Z and a-z after cst_")]
    Alphabet,
    /// Its checksum does not match its random part: it was mistyped or altered.
    #[error("the API key's checksum does not match: it was mistyped or altered")]
    Checksum,
}

/// A random part of 30 base62 characters, drawn from `next_byte` (which the caller feeds from the
/// operating system's generator) by rejection sampling, so every character is uniform.
pub fn random_part(mut next_byte: impl FnMut() -> u8) -> String {
    let mut out = String::with_capacity(RANDOM_LEN);
    while out.len() < RANDOM_LEN {
        let b = next_byte();
        if b < SAMPLE_BOUND {
            out.push(base62_digit(u32::from(b % 62)));
        }
    }
    out
}

fn base62_digit(n: u32) -> char {
    usize::try_from(n)
        .ok()
        .and_then(|i| BASE62.get(i))
        .map_or('0', |b| char::from(*b))
}

/// The checksum of a random part: CRC-32/ISO-HDLC of its ASCII bytes as 6 base62 digits, most
/// significant first, left-padded with `0`.
pub fn checksum(random: &str) -> String {
    let mut n = crc32fast::hash(random.as_bytes());
    let mut digits = [b'0'; CHECKSUM_LEN];
    for d in digits.iter_mut().rev() {
        *d = BASE62.get((n % 62) as usize).copied().unwrap_or(b'0');
        n /= 62;
    }
    digits.iter().map(|b| char::from(*b)).collect()
}

fn is_base62(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The key of a random part: `cst_` + the part + its checksum.
pub fn assemble(random: &str) -> Result<String, KeyFormatError> {
    if random.len() != RANDOM_LEN {
        return Err(KeyFormatError::Length);
    }
    if !is_base62(random) {
        return Err(KeyFormatError::Alphabet);
    }
    Ok(format!("{PREFIX}{random}{}", checksum(random)))
}

/// Checks that `s` is a well-formed key whose checksum matches, without looking anything up.
pub fn parse(s: &str) -> Result<(), KeyFormatError> {
    let Some(rest) = s.strip_prefix(PREFIX) else {
        return Err(KeyFormatError::Prefix);
    };
    if rest.len() != RANDOM_LEN + CHECKSUM_LEN {
        return Err(KeyFormatError::Length);
    }
    if !is_base62(rest) {
        return Err(KeyFormatError::Alphabet);
    }
    let (random, sum) = rest.split_at(RANDOM_LEN);
    if checksum(random) == sum {
        Ok(())
    } else {
        Err(KeyFormatError::Checksum)
    }
}

/// Whether a bearer credential claims to be an API key (and not an access token).
pub fn looks_like_key(s: &str) -> bool {
    s.starts_with(PREFIX)
}

/// What listings show of a well-formed key: `cst_` + the first 4 characters of the random part +
/// `…` + the last 4 characters of the key. Nothing for a malformed one.
pub fn preview(key: &str) -> Option<String> {
    parse(key).ok()?;
    let first = key.get(PREFIX.len()..PREFIX.len() + 4)?;
    let last = key.get(KEY_LEN - 4..)?;
    Some(format!("{PREFIX}{first}…{last}"))
}

/// A limit of `limit` requests per `window_seconds` (enforced by the rate limiter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests allowed per window.
    pub limit: u64,
    /// The window, in seconds.
    pub window_seconds: u64,
}

/// Refilling a usage limit: `remaining` is set back to `amount` every `interval_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refill {
    /// What `remaining` is set back to.
    pub amount: u64,
    /// Every this many seconds since the limit was set.
    pub interval_seconds: u64,
}

/// How much a key may still be used: each valid verification takes its cost from `remaining`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageLimit {
    /// Units left when the limit is set.
    pub remaining: u64,
    /// Optional periodic refill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refill: Option<Refill>,
}

impl UsageLimit {
    /// The refill period `at` falls in, counting from `set_at` (always 0 without a refill).
    pub fn period(&self, set_at: Timestamp, at: Timestamp) -> u64 {
        match self.refill {
            Some(r) if r.interval_seconds > 0 => {
                let elapsed = set_at.until(&at).whole_seconds().max(0);
                u64::try_from(elapsed).unwrap_or(0) / r.interval_seconds
            }
            _ => 0,
        }
    }

    /// Units left at the start of `period`: the initial `remaining` in period 0, the refill's
    /// amount after.
    pub fn at_start_of(&self, period: u64) -> u64 {
        match (period, self.refill) {
            (0, _) | (_, None) => self.remaining,
            (_, Some(r)) => r.amount,
        }
    }
}

/// The facts of a key's life. Every variant is `key.{variant}` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum KeyEvent {
    /// The key was made; its secret was shown once to whoever made it.
    Issued {
        /// The user the key acts for.
        owner: String,
        /// A name people know it by.
        name: String,
        /// The permissions it may use (never more than its owner holds).
        scopes: Vec<Permission>,
        /// What the scopes cover (the whole tenant when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        on: Option<Scope>,
        /// It answers `EXPIRED` from this instant on.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<Timestamp>,
        /// Addresses it may be presented from (any when empty).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ip_allowlist: Vec<IpNet>,
        /// Its own rate limit.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ratelimit: Option<RateLimit>,
        /// Its usage limit.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage_limit: Option<UsageLimit>,
        /// Keyed hash of the key.
        hash: TokenHash,
        /// `cst_` + first 4 + `…` + last 4.
        preview: String,
    },
    /// Its name or limits changed; absent fields did not.
    Updated {
        /// The new name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// The new rate limit (`null`: none).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "double_option"
        )]
        ratelimit: Option<Option<RateLimit>>,
        /// The new usage limit (`null`: none); its `remaining` starts over now.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "double_option"
        )]
        usage_limit: Option<Option<UsageLimit>>,
        /// The new address allowlist (empty: any address).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip_allowlist: Option<Vec<IpNet>>,
    },
    /// A new secret replaced the key's; the previous one works until `previous_valid_until`.
    Rotated {
        /// Keyed hash of the new key.
        hash: TokenHash,
        /// Preview of the new key.
        preview: String,
        /// The previous secret answers `EXPIRED` from this instant on.
        previous_valid_until: Timestamp,
    },
    /// The key was revoked: it answers `REVOKED` at once.
    Revoked {},
    /// The key's use during one minute window (or the part of it before a shutdown).
    Used {
        /// The minute the uses fell in.
        window_start: Timestamp,
        /// Valid uses.
        uses: u64,
        /// Units taken from the usage limit.
        cost: u64,
        /// The first use in the window.
        first_used_at: Timestamp,
        /// The last use in the window.
        last_used_at: Timestamp,
        /// Units left after the window, with a usage limit.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        remaining: Option<u64>,
    },
}

crate::tagged_event!(
    KeyEvent,
    "key",
    ["issued", "updated", "rotated", "revoked", "used"]
);

/// `Option<Option<T>>` in JSON: absent (unchanged), `null` (cleared), or a value. Use with
/// `#[serde(default, with = "double_option")]`.
pub mod double_option {
    use super::{Deserialize, Deserializer, Serialize, Serializer};

    /// Writes `Some(Some(v))` as `v` and anything else as `null` (skip `None` to leave it out).
    pub fn serialize<T: Serialize, S: Serializer>(
        value: &Option<Option<T>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(Some(v)) => v.serialize(serializer),
            _ => serializer.serialize_none(),
        }
    }

    /// Reads a present field: `null` as `Some(None)`, a value as `Some(Some(v))`.
    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(deserializer).map(Some)
    }
}

/// A key as its events have made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// The user it acts for.
    pub owner: String,
    /// Its name.
    pub name: String,
    /// Its scopes.
    pub scopes: Vec<Permission>,
    /// What they cover.
    pub on: Option<Scope>,
    /// Expiry.
    pub expires_at: Option<Timestamp>,
    /// Allowed addresses.
    pub ip_allowlist: Vec<IpNet>,
    /// Rate limit.
    pub ratelimit: Option<RateLimit>,
    /// Usage limit.
    pub usage_limit: Option<UsageLimit>,
    /// Keyed hash of the current secret.
    pub hash: TokenHash,
    /// Preview of the current secret.
    pub preview: String,
    /// The previous secret and the instant it stops working.
    pub previous: Option<(TokenHash, Timestamp)>,
    /// Whether it was revoked.
    pub revoked: bool,
    /// Valid uses recorded so far.
    pub uses: u64,
}

/// What someone asks of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCommand {
    /// Make the key.
    Issue {
        /// The user it acts for.
        owner: String,
        /// Its name.
        name: String,
        /// Its scopes (already checked against the catalog and its creator's rights).
        scopes: Vec<Permission>,
        /// What they cover.
        on: Option<Scope>,
        /// Expiry.
        expires_at: Option<Timestamp>,
        /// Allowed addresses.
        ip_allowlist: Vec<IpNet>,
        /// Rate limit.
        ratelimit: Option<RateLimit>,
        /// Usage limit.
        usage_limit: Option<UsageLimit>,
        /// Keyed hash of the key.
        hash: TokenHash,
        /// Its preview.
        preview: String,
        /// The time of the request.
        now: Timestamp,
    },
    /// Change its name or limits (`None`: unchanged).
    Update {
        /// New name.
        name: Option<String>,
        /// New rate limit, `Some(None)` to remove it.
        ratelimit: Option<Option<RateLimit>>,
        /// New usage limit, `Some(None)` to remove it.
        usage_limit: Option<Option<UsageLimit>>,
        /// New allowlist.
        ip_allowlist: Option<Vec<IpNet>>,
    },
    /// Replace its secret.
    Rotate {
        /// Keyed hash of the new key.
        hash: TokenHash,
        /// Its preview.
        preview: String,
        /// When the previous secret stops working.
        previous_valid_until: Timestamp,
        /// The time of the request.
        now: Timestamp,
    },
    /// Revoke it.
    Revoke,
}

/// Why a key command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No such key.
    #[error("no such key")]
    NotFound,
    /// The key exists already.
    #[error("the key already exists")]
    AlreadyExists,
    /// The key was revoked; it cannot change any more.
    #[error("the key is revoked")]
    Revoked,
    /// The key has expired; it cannot be rotated.
    #[error("the key has expired")]
    Expired,
    /// The previous rotation's grace is still running: rotating again would end it early.
    #[error(
        "the previous secret works until {0} (the last rotation's grace); rotate again after that"
    )]
    GraceRunning(Timestamp),
    /// The request's content is invalid.
    #[error("{0}")]
    Invalid(String),
}

fn check_name(name: &str) -> Result<(), KeyError> {
    if name.trim().is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(KeyError::Invalid(format!(
            "name: 1-{MAX_NAME_CHARS} characters, not only spaces"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(KeyError::Invalid(
            "name: control characters are not allowed".to_owned(),
        ));
    }
    Ok(())
}

fn check_ratelimit(r: Option<&RateLimit>) -> Result<(), KeyError> {
    match r {
        Some(r) if r.limit == 0 || r.window_seconds == 0 || r.window_seconds > 86_400 => {
            Err(KeyError::Invalid(
                "ratelimit: limit must be at least 1 and window_seconds 1-86400".to_owned(),
            ))
        }
        _ => Ok(()),
    }
}

fn check_usage_limit(u: Option<&UsageLimit>) -> Result<(), KeyError> {
    match u.and_then(|u| u.refill) {
        Some(r) if r.amount == 0 || r.interval_seconds == 0 => Err(KeyError::Invalid(
            "usage_limit.refill: amount and interval_seconds must be at least 1".to_owned(),
        )),
        _ => Ok(()),
    }
}

fn check_allowlist(ips: &[IpNet]) -> Result<(), KeyError> {
    if ips.len() > MAX_IP_RANGES {
        return Err(KeyError::Invalid(format!(
            "ip_allowlist: at most {MAX_IP_RANGES} ranges"
        )));
    }
    Ok(())
}

fn check_hash(hash: &TokenHash, preview: &str) -> Result<(), KeyError> {
    let hex = hash.0.len() == 64
        && hash
            .0
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !hex || !preview.starts_with(PREFIX) {
        return Err(KeyError::Invalid(
            "a key is stored as its keyed hash and preview only".to_owned(),
        ));
    }
    Ok(())
}

/// Decides what a command on a key means.
pub fn decide(state: Option<&Key>, command: KeyCommand) -> Result<Vec<KeyEvent>, KeyError> {
    use KeyCommand as C;
    use KeyEvent as E;
    match (state, command) {
        (
            None,
            C::Issue {
                owner,
                name,
                scopes,
                on,
                expires_at,
                ip_allowlist,
                ratelimit,
                usage_limit,
                hash,
                preview,
                now,
            },
        ) => {
            check_name(&name)?;
            if scopes.is_empty() || scopes.len() > MAX_SCOPES {
                return Err(KeyError::Invalid(format!(
                    "scopes: 1-{MAX_SCOPES} permissions"
                )));
            }
            if expires_at.is_some_and(|e| e <= now) {
                return Err(KeyError::Invalid(
                    "expires_at: must be in the future".to_owned(),
                ));
            }
            check_allowlist(&ip_allowlist)?;
            check_ratelimit(ratelimit.as_ref())?;
            check_usage_limit(usage_limit.as_ref())?;
            check_hash(&hash, &preview)?;
            Ok(vec![E::Issued {
                owner,
                name,
                scopes,
                on,
                expires_at,
                ip_allowlist,
                ratelimit,
                usage_limit,
                hash,
                preview,
            }])
        }
        (Some(_), C::Issue { .. }) => Err(KeyError::AlreadyExists),
        (None, _) => Err(KeyError::NotFound),
        (Some(k), C::Revoke) => Ok(if k.revoked {
            vec![]
        } else {
            vec![E::Revoked {}]
        }),
        (Some(k), _) if k.revoked => Err(KeyError::Revoked),
        (
            Some(k),
            C::Update {
                name,
                ratelimit,
                usage_limit,
                ip_allowlist,
            },
        ) => {
            if let Some(n) = &name {
                check_name(n)?;
            }
            if let Some(r) = &ratelimit {
                check_ratelimit(r.as_ref())?;
            }
            if let Some(u) = &usage_limit {
                check_usage_limit(u.as_ref())?;
            }
            if let Some(ips) = &ip_allowlist {
                check_allowlist(ips)?;
            }
            let name = name.filter(|n| *n != k.name);
            let ratelimit = ratelimit.filter(|r| *r != k.ratelimit);
            let ip_allowlist = ip_allowlist.filter(|i| *i != k.ip_allowlist);
            if name.is_none()
                && ratelimit.is_none()
                && usage_limit.is_none()
                && ip_allowlist.is_none()
            {
                return Ok(vec![]);
            }
            Ok(vec![E::Updated {
                name,
                ratelimit,
                usage_limit,
                ip_allowlist,
            }])
        }
        (
            Some(k),
            C::Rotate {
                hash,
                preview,
                previous_valid_until,
                now,
            },
        ) => {
            if k.expires_at.is_some_and(|e| e <= now) {
                return Err(KeyError::Expired);
            }
            if let Some((_, until)) = &k.previous
                && *until > now
            {
                return Err(KeyError::GraceRunning(*until));
            }
            if previous_valid_until < now {
                return Err(KeyError::Invalid(
                    "grace_seconds: must not be negative".to_owned(),
                ));
            }
            check_hash(&hash, &preview)?;
            Ok(vec![E::Rotated {
                hash,
                preview,
                previous_valid_until,
            }])
        }
    }
}

/// Applies one event to a key's state.
pub fn evolve(state: Option<Key>, event: &KeyEvent) -> Option<Key> {
    use KeyEvent as E;
    match (state, event) {
        (
            None,
            E::Issued {
                owner,
                name,
                scopes,
                on,
                expires_at,
                ip_allowlist,
                ratelimit,
                usage_limit,
                hash,
                preview,
            },
        ) => Some(Key {
            owner: owner.clone(),
            name: name.clone(),
            scopes: scopes.clone(),
            on: on.clone(),
            expires_at: *expires_at,
            ip_allowlist: ip_allowlist.clone(),
            ratelimit: *ratelimit,
            usage_limit: *usage_limit,
            hash: hash.clone(),
            preview: preview.clone(),
            previous: None,
            revoked: false,
            uses: 0,
        }),
        (None, _) => None,
        (
            Some(mut k),
            E::Updated {
                name,
                ratelimit,
                usage_limit,
                ip_allowlist,
            },
        ) => {
            if let Some(n) = name {
                k.name = n.clone();
            }
            if let Some(r) = ratelimit {
                k.ratelimit = *r;
            }
            if let Some(u) = usage_limit {
                k.usage_limit = *u;
            }
            if let Some(i) = ip_allowlist {
                k.ip_allowlist = i.clone();
            }
            Some(k)
        }
        (
            Some(mut k),
            E::Rotated {
                hash,
                preview,
                previous_valid_until,
            },
        ) => {
            let old = std::mem::replace(&mut k.hash, hash.clone());
            k.preview = preview.clone();
            k.previous = Some((old, *previous_valid_until));
            Some(k)
        }
        (Some(mut k), E::Revoked {}) => {
            k.revoked = true;
            Some(k)
        }
        (Some(mut k), E::Used { uses, .. }) => {
            k.uses = k.uses.saturating_add(*uses);
            Some(k)
        }
        (Some(k), E::Issued { .. }) => Some(k),
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} per {} s", self.limit, self.window_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DomainEvent;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    fn counter() -> impl FnMut() -> u8 {
        let mut n: u8 = 0;
        move || {
            n = n.wrapping_add(37);
            n
        }
    }

    #[test]
    fn keys_round_trip_through_the_checksum() {
        let random = random_part(counter());
        assert_eq!(random.len(), RANDOM_LEN);
        let key = assemble(&random).unwrap();
        assert_eq!(key.len(), KEY_LEN);
        assert_eq!(parse(&key), Ok(()));
        let p = preview(&key).unwrap();
        assert!(p.starts_with("cst_") && p.contains('…'));
        assert_eq!(&p[4..8], &random[..4]);
        assert!(p.ends_with(&key[KEY_LEN - 4..]));
    }

    #[test]
    fn the_checksum_is_zlib_crc32_in_six_base62_digits() {
        // The check value of CRC-32/ISO-HDLC: crc32("123456789") = 0xCBF43926.
        let mut n: u64 = 0xCBF4_3926;
        let mut digits = Vec::new();
        for _ in 0..6 {
            digits.push(BASE62[(n % 62) as usize]);
            n /= 62;
        }
        digits.reverse();
        assert_eq!(checksum("123456789").as_bytes(), &digits[..]);
        // Small values are left-padded with 0.
        assert_eq!(checksum("").len(), 6);
        assert_eq!(checksum(""), "000000");
    }

    #[test]
    fn every_one_character_typo_is_refused_by_the_checksum() {
        let key = assemble(&random_part(counter())).unwrap();
        for i in PREFIX.len()..KEY_LEN {
            for c in BASE62.iter().map(|b| char::from(*b)) {
                if key[i..].starts_with(c) {
                    continue;
                }
                let mut typo = key.clone();
                typo.replace_range(i..=i, &c.to_string());
                assert_eq!(parse(&typo), Err(KeyFormatError::Checksum), "{i} {c}");
            }
        }
        assert_eq!(parse("cst_short"), Err(KeyFormatError::Length));
        assert_eq!(
            parse(&key.replace("cst_", "abc_")),
            Err(KeyFormatError::Prefix)
        );
        let mut bad = key.clone();
        bad.replace_range(10..11, "-");
        assert_eq!(parse(&bad), Err(KeyFormatError::Alphabet));
    }

    #[test]
    fn sampling_rejects_bytes_that_would_bias_the_alphabet() {
        let mut bytes = [255u8, 250, 248, 0, 61, 62, 247].into_iter().cycle();
        let part = random_part(|| bytes.next().unwrap_or(0));
        // 0 → '0', 61 → 'z', 62 → '0', 247 → 247 % 62 = 61 → 'z'; 248-255 are skipped.
        assert!(part.starts_with("0z0z"));
    }

    fn issued() -> Vec<KeyEvent> {
        decide(
            None,
            KeyCommand::Issue {
                owner: "user_1".into(),
                name: "ci".into(),
                scopes: vec![Permission::parse("key:read").unwrap()],
                on: None,
                expires_at: None,
                ip_allowlist: vec![],
                ratelimit: None,
                usage_limit: Some(UsageLimit {
                    remaining: 10,
                    refill: None,
                }),
                hash: TokenHash("a".repeat(64)),
                preview: "cst_abcd…wxyz".into(),
                now: ts("2026-01-01T00:00:00Z"),
            },
        )
        .unwrap()
    }

    #[test]
    fn rotation_keeps_the_previous_secret_until_its_grace_ends() {
        let mut events = issued();
        let key = events.iter().fold(None, evolve);
        let until = ts("2026-01-01T00:05:00Z");
        events.extend(
            decide(
                key.as_ref(),
                KeyCommand::Rotate {
                    hash: TokenHash("b".repeat(64)),
                    preview: "cst_bbbb…bbbb".into(),
                    previous_valid_until: until,
                    now: ts("2026-01-01T00:00:00Z"),
                },
            )
            .unwrap(),
        );
        let key = events.iter().fold(None, evolve).unwrap();
        assert_eq!(key.hash, TokenHash("b".repeat(64)));
        assert_eq!(key.previous, Some((TokenHash("a".repeat(64)), until)));
        let revoked = decide(Some(&key), KeyCommand::Revoke).unwrap();
        let key = revoked.iter().fold(Some(key), evolve).unwrap();
        assert!(decide(Some(&key), KeyCommand::Revoke).unwrap().is_empty());
        assert_eq!(
            decide(
                Some(&key),
                KeyCommand::Update {
                    name: Some("x".into()),
                    ratelimit: None,
                    usage_limit: None,
                    ip_allowlist: None
                }
            ),
            Err(KeyError::Revoked)
        );
    }

    #[test]
    fn updates_say_only_what_changed_and_round_trip() {
        let events = issued();
        let key = events.iter().fold(None, evolve).unwrap();
        let same = decide(
            Some(&key),
            KeyCommand::Update {
                name: Some("ci".into()),
                ratelimit: Some(None),
                usage_limit: None,
                ip_allowlist: None,
            },
        )
        .unwrap();
        assert!(same.is_empty());
        let cleared = decide(
            Some(&key),
            KeyCommand::Update {
                name: None,
                ratelimit: None,
                usage_limit: Some(None),
                ip_allowlist: None,
            },
        )
        .unwrap();
        assert_eq!(cleared[0].data(), serde_json::json!({"usage_limit": null}));
        for e in events.iter().chain(&cleared) {
            let back = KeyEvent::decode(e.event_type(), e.schema_version(), &e.data()).unwrap();
            assert_eq!(&back, e);
        }
        let key = cleared.iter().fold(Some(key), evolve).unwrap();
        assert_eq!(key.usage_limit, None);
    }

    #[test]
    fn refills_start_over_every_interval_since_the_limit_was_set() {
        let limit = UsageLimit {
            remaining: 3,
            refill: Some(Refill {
                amount: 5,
                interval_seconds: 60,
            }),
        };
        let set = ts("2026-01-01T00:00:00Z");
        assert_eq!(limit.period(set, ts("2026-01-01T00:00:59Z")), 0);
        assert_eq!(limit.period(set, ts("2026-01-01T00:01:00Z")), 1);
        assert_eq!(limit.at_start_of(0), 3);
        assert_eq!(limit.at_start_of(4), 5);
    }
}
