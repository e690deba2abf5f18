//! Passwords: which ones a person may choose, and argon2id hashes of them computed off the runtime.
//!
//! The policy follows NIST SP 800-63B: a length floor and ceiling, no composition rules, and a
//! blocklist of the passwords attackers try first.
//!
//! The blocklist, `crates/app/data/common-passwords.txt`, is the first 10,000 entries (most common
//! first) of the `passwords` frequency list shipped in the source of the `zxcvbn` crate, version
//! 3.1.1 (<https://github.com/shssoichiro/zxcvbn-rs>, `src/frequency_lists.rs`), one per line. That
//! list is under the MIT License:
//!
//! > Copyright (c) 2016 Joshua Holmer
//! >
//! > Permission is hereby granted, free of charge, to any person obtaining a copy of this software
//! > and associated documentation files (the "Software"), to deal in the Software without
//! > restriction, including without limitation the rights to use, copy, modify, merge, publish,
//! > distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the
//! > Software is furnished to do so, subject to the following conditions:
//! >
//! > The above copyright notice and this permission notice shall be included in all copies or
//! > substantial portions of the Software.
//! >
//! > THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING
//! > BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
//! > NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
//! > DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
//! > OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::sync::{Arc, LazyLock};

use std::sync::{Mutex, PoisonError};

use argon2::password_hash::{self, Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::RngCore as _;
use rand::rngs::OsRng;
use tokio::sync::Semaphore;

/// The blocklist, lowercase, built once on first use.
static COMMON_PASSWORDS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../../data/common-passwords.txt")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect()
});

/// A password as it is checked, hashed and verified: its Unicode NFKC form (NIST SP 800-63B-4),
/// so that a password typed on another keyboard or system (composed or decomposed accents,
/// fullwidth forms) is the same password. NFKC of ASCII is itself, so hashes of ASCII passwords
/// made before normalization still verify.
pub fn normalize(password: &str) -> String {
    use unicode_normalization::UnicodeNormalization as _;
    password.nfkc().collect()
}

/// The [`normalize`]d form of `password`, and the form as typed where it differs (a hash made
/// before passwords were normalized is of that form).
fn forms(password: &str) -> (String, Option<String>) {
    let normalized = normalize(password);
    let typed = (normalized != password).then(|| password.to_owned());
    (normalized, typed)
}

/// Which passwords a person may choose (NIST SP 800-63B-4): after NFKC normalization, a length
/// between a minimum and `max_length` Unicode code points (the minimum is `min_length` for an
/// account that signs in with a password alone, and [`PasswordPolicy::MIN_LENGTH_WITH_SECOND_FACTOR`]
/// once it has a second factor), no control characters, not only whitespace, and not one of the
/// 10,000 most common passwords, compared case-insensitively. There are no composition rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// The fewest characters accepted from an account that signs in with a password alone
    /// (default 15).
    pub min_length: usize,
    /// The most characters accepted (default 256); at least 64, so passphrases fit.
    pub max_length: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_length: 15,
            max_length: 256,
        }
    }
}

/// Why a password policy cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// `min_length` is below NIST's floor.
    #[error("the minimum password length must be at least {floor}")]
    MinTooLow {
        /// The lowest minimum allowed.
        floor: usize,
    },
    /// `max_length` would cut off passphrases.
    #[error("the maximum password length must be at least {floor}")]
    MaxTooLow {
        /// The lowest maximum allowed.
        floor: usize,
    },
    /// `min_length` exceeds `max_length`, so no password could pass.
    #[error("the minimum password length must not exceed the maximum")]
    MinAboveMax,
}

/// Why a password was refused. The messages tell the person what to change and never repeat the
/// password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordRejected {
    /// Fewer characters than the policy's minimum.
    #[error("password must be at least {min} characters long")]
    TooShort {
        /// The policy's minimum length in characters.
        min: usize,
    },
    /// More characters than the policy's maximum.
    #[error("password must be at most {max} characters long")]
    TooLong {
        /// The policy's maximum length in characters.
        max: usize,
    },
    /// Contains a control character (NUL, CR, LF, ...).
    #[error("password must not contain control characters")]
    ControlCharacters,
    /// Only whitespace.
    #[error("password must not be only whitespace")]
    AllWhitespace,
    /// On the list of commonly used passwords.
    #[error("this password is too common and easy to guess; choose a less common one")]
    Common,
}

impl PasswordPolicy {
    /// The lowest `min_length` accepted by [`PasswordPolicy::validate`] (NIST SP 800-63B).
    pub const MIN_LENGTH_FLOOR: usize = 8;
    /// The fewest characters accepted once the account has a second factor (NIST SP 800-63B-4:
    /// 8 for a password used with another factor, 15 for a password alone).
    pub const MIN_LENGTH_WITH_SECOND_FACTOR: usize = 8;
    /// The lowest `max_length` accepted by [`PasswordPolicy::validate`] (NIST SP 800-63B).
    pub const MAX_LENGTH_FLOOR: usize = 64;

    /// Checks that the policy is one NIST SP 800-63B allows: a minimum of at least 8, a maximum of
    /// at least 64, and the minimum not above the maximum.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.min_length < Self::MIN_LENGTH_FLOOR {
            return Err(PolicyError::MinTooLow {
                floor: Self::MIN_LENGTH_FLOOR,
            });
        }
        if self.max_length < Self::MAX_LENGTH_FLOOR {
            return Err(PolicyError::MaxTooLow {
                floor: Self::MAX_LENGTH_FLOOR,
            });
        }
        if self.min_length > self.max_length {
            return Err(PolicyError::MinAboveMax);
        }
        Ok(())
    }

    /// The fewest characters accepted from an account with (`second_factor`) or without a second
    /// factor.
    pub fn min_length_for(&self, second_factor: bool) -> usize {
        if second_factor {
            Self::MIN_LENGTH_WITH_SECOND_FACTOR.min(self.min_length)
        } else {
            self.min_length
        }
    }

    /// Accepts `password` for an account with (`second_factor`) or without a second factor if,
    /// after NFKC normalization, it has no control character, is not only whitespace, its length
    /// in code points is within bounds, and its lowercase form is not on the blocklist of common
    /// passwords.
    pub fn check(&self, password: &str, second_factor: bool) -> Result<(), PasswordRejected> {
        let password = normalize(password);
        if password.chars().any(char::is_control) {
            return Err(PasswordRejected::ControlCharacters);
        }
        if password.chars().all(char::is_whitespace) {
            return Err(PasswordRejected::AllWhitespace);
        }
        let length = password.chars().count();
        let min = self.min_length_for(second_factor);
        if length < min {
            return Err(PasswordRejected::TooShort { min });
        }
        if length > self.max_length {
            return Err(PasswordRejected::TooLong {
                max: self.max_length,
            });
        }
        if COMMON_PASSWORDS.contains(password.to_lowercase().as_str()) {
            return Err(PasswordRejected::Common);
        }
        Ok(())
    }
}

/// The argon2id cost parameters new hashes are made with. The defaults are OWASP's minimum for
/// argon2id: 19 MiB of memory, 2 iterations, 1 lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    /// Memory per hash in KiB (default 19,456 = 19 MiB).
    pub memory_kib: u32,
    /// Passes over the memory (default 2).
    pub iterations: u32,
    /// Lanes (default 1).
    pub parallelism: u32,
}

impl Default for Argon2Params {
    fn default() -> Self {
        Self {
            memory_kib: Self::MIN_MEMORY_KIB,
            iterations: Self::MIN_ITERATIONS,
            parallelism: 1,
        }
    }
}

/// Why argon2 cost parameters cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// Less memory than OWASP's minimum.
    #[error("argon2 memory must be at least {min} KiB")]
    MemoryTooLow {
        /// The minimum in KiB.
        min: u32,
    },
    /// Fewer iterations than OWASP's minimum.
    #[error("argon2 iterations must be at least {min}")]
    IterationsTooLow {
        /// The minimum number of iterations.
        min: u32,
    },
    /// The combination is outside what argon2 supports (for example zero lanes, or fewer than 8 KiB
    /// of memory per lane).
    #[error(
        "argon2 parameters are not supported: parallelism must be 1 to 16777215 and memory at least 8 KiB per lane"
    )]
    Unsupported,
}

impl Argon2Params {
    /// OWASP's minimum memory for argon2id with 2 iterations, in KiB.
    pub const MIN_MEMORY_KIB: u32 = 19_456;
    /// OWASP's minimum iterations for argon2id with 19 MiB.
    pub const MIN_ITERATIONS: u32 = 2;

    /// Checks the parameters are at least OWASP's minimum (m = 19 MiB, t = 2) and that argon2
    /// supports them.
    pub fn validate(&self) -> Result<(), ParamsError> {
        self.to_argon2().map(drop)
    }

    fn to_argon2(self) -> Result<Params, ParamsError> {
        if self.memory_kib < Self::MIN_MEMORY_KIB {
            return Err(ParamsError::MemoryTooLow {
                min: Self::MIN_MEMORY_KIB,
            });
        }
        if self.iterations < Self::MIN_ITERATIONS {
            return Err(ParamsError::IterationsTooLow {
                min: Self::MIN_ITERATIONS,
            });
        }
        Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|_| ParamsError::Unsupported)
    }
}

/// Why hashing or verifying a password could not be done. None of them carries the password or the
/// stored hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// The stored hash is not a PHC string of an argon2 variant this service can verify.
    #[error("the stored password hash is malformed or uses an unsupported algorithm")]
    MalformedHash,
    /// The hasher was closed (the service is shutting down) before the work could run.
    #[error("the password hasher is shut down")]
    PoolClosed,
    /// The hash computation itself failed.
    #[error("password hashing failed")]
    Failed,
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    /// The password is the one the hash was made from.
    pub matches: bool,
    /// The password matched, and the stored hash is weaker than what [`PasswordHasher::hash`] makes
    /// now (not argon2id v19, less memory, fewer iterations or a shorter output): store a fresh hash
    /// of the password the caller still holds.
    pub needs_rehash: bool,
}

/// Hashes and verifies passwords with argon2id, in PHC string format.
///
/// The work runs on tokio's blocking pool, at most `max_concurrent` at a time: a flood of logins
/// waits for a permit instead of occupying every blocking thread and every core. Each computation
/// borrows the argon2 block memory (`m` KiB) of a previous one instead of allocating and
/// faulting in a fresh buffer, so the hasher holds at most `max_concurrent` such buffers. Cloning
/// is cheap and clones share the permits and the memory.
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

struct Inner {
    params: Argon2Params,
    /// `params` as argon2 takes them.
    argon2: Params,
    permits: Arc<Semaphore>,
    /// Block memory for the current parameters, one buffer per computation that ran at once (at
    /// most one per permit), reused from one computation to the next.
    memory: Mutex<Vec<Vec<Block>>>,
    /// A hash made with the current parameters of a random password nobody knows, so that
    /// verifying against it costs what a real verification costs.
    dummy_phc: String,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("params", &self.inner.params)
            .field("available_permits", &self.inner.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// The default number of hashes computed at once: the number of cores (1 if unknown).
    pub fn default_concurrency() -> NonZeroUsize {
        std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
    }

    /// A hasher with `params` that computes at most [`PasswordHasher::default_concurrency`] hashes
    /// at once. Computes one hash before returning (tens of milliseconds), so build it at startup.
    pub fn new(params: Argon2Params) -> Result<Self, ParamsError> {
        Self::with_concurrency(params, Self::default_concurrency())
    }

    /// A hasher with `params` that computes at most `max_concurrent` hashes at once. Computes one
    /// hash before returning (tens of milliseconds), so build it at startup.
    pub fn with_concurrency(
        params: Argon2Params,
        max_concurrent: NonZeroUsize,
    ) -> Result<Self, ParamsError> {
        let argon2 = params.to_argon2()?;
        let mut unguessable = [0u8; 32];
        OsRng.fill_bytes(&mut unguessable);
        let mut memory = blocks_for(&argon2);
        let dummy_phc =
            hash_with(&argon2, &unguessable, &mut memory).map_err(|_| ParamsError::Unsupported)?;
        Ok(Self {
            inner: Arc::new(Inner {
                params,
                argon2,
                permits: Arc::new(Semaphore::new(max_concurrent.get())),
                memory: Mutex::new(vec![memory]),
                dummy_phc,
            }),
        })
    }

    /// The parameters new hashes are made with.
    pub fn params(&self) -> Argon2Params {
        self.inner.params
    }

    /// Stops the hasher: calls waiting for a permit and later calls fail with
    /// [`HashError::PoolClosed`]; computations already running finish.
    pub fn close(&self) {
        self.inner.permits.close();
    }

    /// Hashes `password` with argon2id, the current parameters and a fresh random salt, as a PHC
    /// string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`).
    /// The password is hashed in its [`normalize`]d form.
    pub async fn hash(&self, password: &str) -> Result<String, HashError> {
        let password = normalize(password);
        self.run(move |inner, memory| hash_with(&inner.argon2, password.as_bytes(), memory))
            .await
    }

    /// Checks `password` against the stored PHC string `phc` (any argon2 variant, with the
    /// parameters recorded in it), and says whether the stored hash should be replaced. The
    /// password is verified in its [`normalize`]d form; where that differs from what was typed,
    /// a hash made before passwords were normalized (of the typed form) is accepted too and
    /// reported as needing a rehash, so its owner is moved to the normalized form at their next
    /// login instead of being locked out.
    pub async fn verify(&self, phc: &str, password: &str) -> Result<Verification, HashError> {
        let phc = phc.to_owned();
        let (password, typed) = forms(password);
        self.run(move |inner, memory| {
            let stored = PasswordHash::new(&phc).map_err(|_| HashError::MalformedHash)?;
            let check = |candidate: &str, memory: &mut [Block]| match verify_with(
                candidate.as_bytes(),
                &stored,
                memory,
            ) {
                Ok(()) => Ok(true),
                Err(password_hash::Error::Password) => Ok(false),
                Err(_) => Err(HashError::MalformedHash),
            };
            let mut matches = check(&password, memory)?;
            let mut legacy = false;
            if !matches && let Some(typed) = &typed {
                matches = check(typed, memory)?;
                legacy = matches;
            }
            let needs_rehash = matches && (legacy || weaker_than(&stored, &inner.params));
            Ok(Verification {
                matches,
                needs_rehash,
            })
        })
        .await
    }

    /// Spends the time and memory of one [`PasswordHasher::verify`] with the current parameters
    /// and decides nothing. Call it when the account does not exist, so that answering "unknown
    /// email" takes as long as answering "wrong password", and fails the same way when the hasher
    /// is closed.
    pub async fn verify_dummy(&self, password: &str) -> Result<(), HashError> {
        let (password, typed) = forms(password);
        self.run(move |inner, memory| {
            // Parsed and verified exactly as a stored hash is, with the same parameters and the
            // same reused memory, so that it costs what a real verification costs.
            let stored =
                PasswordHash::new(&inner.dummy_phc).map_err(|_| HashError::MalformedHash)?;
            // The outcome is irrelevant: the dummy's password is random and never handed out.
            // A wrong password whose typed form differs costs a real account two verifications.
            let _ = verify_with(password.as_bytes(), &stored, memory);
            if let Some(typed) = typed {
                let _ = verify_with(typed.as_bytes(), &stored, memory);
            }
            Ok(())
        })
        .await
    }

    /// Runs `work` on the blocking pool once a permit is free, with block memory for the current
    /// parameters. The permit moves into the task, so it is held until the computation ends even
    /// if the caller stops waiting; the memory goes back to the hasher when it ends.
    async fn run<T, F>(&self, work: F) -> Result<T, HashError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner, &mut [Block]) -> Result<T, HashError> + Send + 'static,
    {
        let permit = Arc::clone(&self.inner.permits)
            .acquire_owned()
            .await
            .map_err(|_| HashError::PoolClosed)?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut memory = inner
                .memory
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop()
                .unwrap_or_else(|| blocks_for(&inner.argon2));
            let outcome = work(&inner, &mut memory[..]);
            inner
                .memory
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(memory);
            outcome
        })
        .await
        .map_err(|join| {
            if join.is_cancelled() {
                HashError::PoolClosed
            } else {
                HashError::Failed
            }
        })?
    }
}

/// Block memory for one computation with `params`.
fn blocks_for(params: &Params) -> Vec<Block> {
    vec![Block::default(); params.block_count()]
}

/// `memory`, grown if `params` need more; memory beyond what the hasher's own parameters need
/// (a stored hash made with a larger `m`) is allocated for this computation only.
fn memory_for<'m>(
    params: &Params,
    memory: &'m mut [Block],
    scratch: &'m mut Vec<Block>,
) -> &'m mut [Block] {
    let needed = params.block_count();
    if needed <= memory.len() {
        &mut memory[..needed]
    } else {
        *scratch = blocks_for(params);
        scratch
    }
}

/// A PHC string of `password` hashed with argon2id v19, `params` and a fresh random salt,
/// computed in `memory`: what `argon2::PasswordHasher::hash_password` makes.
fn hash_with(params: &Params, password: &[u8], memory: &mut [Block]) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|_| HashError::Failed)?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut scratch = Vec::new();
    let blocks = memory_for(params, memory, &mut scratch);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt
        .as_salt()
        .decode_b64(&mut salt_bytes)
        .map_err(|_| HashError::Failed)?;
    let output = Output::init_with(
        params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN),
        |out| Ok(argon2.hash_password_into_with_memory(password, salt_bytes, out, &mut *blocks)?),
    )
    .map_err(|_| HashError::Failed)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|_| HashError::Failed)?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// Checks `password` against `stored` (any argon2 variant and version, with the parameters, salt
/// and output length recorded in it), computing in `memory`.
///
/// The same steps, checks and errors as `argon2::PasswordVerifier::verify_password` (argon2 0.5),
/// which allocates the block memory afresh on every call: `Ok(())` for the right password,
/// `Error::Password` for a wrong one or a hash without salt or output, another error for a hash
/// that cannot be computed. The outputs are compared in constant time (`Output`'s `PartialEq`).
fn verify_with(
    password: &[u8],
    stored: &PasswordHash<'_>,
    memory: &mut [Block],
) -> password_hash::Result<()> {
    let (Some(salt), Some(expected)) = (&stored.salt, &stored.hash) else {
        return Err(password_hash::Error::Password);
    };
    let params = Params::try_from(stored)?;
    let algorithm = Algorithm::try_from(stored.algorithm)?;
    let version = stored
        .version
        .map(Version::try_from)
        .transpose()?
        .unwrap_or_default();
    let argon2 = Argon2::new(algorithm, version, params);
    let params = argon2.params();
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
    let mut scratch = Vec::new();
    let blocks = memory_for(params, memory, &mut scratch);
    let computed = Output::init_with(
        params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN),
        |out| Ok(argon2.hash_password_into_with_memory(password, salt_bytes, out, &mut *blocks)?),
    )?;
    if *expected == computed {
        Ok(())
    } else {
        Err(password_hash::Error::Password)
    }
}

/// Whether `stored` costs an attacker less per guess than a hash made with `current` would.
/// Parallelism is not compared: it changes how the work is split, not how much there is.
fn weaker_than(stored: &PasswordHash<'_>, current: &Argon2Params) -> bool {
    if stored.algorithm != Algorithm::Argon2id.ident() {
        return true;
    }
    if stored.version != Some(Version::V0x13.into()) {
        return true;
    }
    let Ok(params) = Params::try_from(stored) else {
        return true;
    };
    let output_len = stored.hash.as_ref().map_or(0, |hash| hash.len());
    params.m_cost() < current.memory_kib
        || params.t_cost() < current.iterations
        || output_len < Params::DEFAULT_OUTPUT_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_accepts_lengths_within_bounds_and_rejects_outside() {
        let policy = PasswordPolicy::default();
        let short = |min| Err(PasswordRejected::TooShort { min });
        // (password, with a second factor, verdict)
        let cases: &[(&str, bool, Result<(), PasswordRejected>)] = &[
            ("vK3#pq8zLm2@wQ9", false, Ok(())),
            ("vK3#pq8zLm2@wQ", false, short(15)),
            ("vK3#pq8zLm2@wQ", true, Ok(())),
            ("vK3#pq8z", true, Ok(())),
            ("vK3#pq8", true, short(8)),
            ("vK3#pq8", false, short(15)),
            // Code points after NFKC: 14 precomposed é, or 14 e + combining acute, are 14.
            (
                "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}",
                false,
                short(15),
            ),
            (
                "e\u{301}e\u{301}e\u{301}e\u{301}e\u{301}e\u{301}e\u{301}e\u{301}e\u{301}e\u{301}e\u{301}e\u{301}e\u{301}e\u{301}",
                false,
                short(15),
            ),
            (
                "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}",
                false,
                Ok(()),
            ),
            // NFKC expands a ligature: "\u{fb03}" (ffi) counts as three.
            ("\u{fb03}\u{fb03}\u{fb03}\u{fb03}\u{fb03}", false, Ok(())),
            ("        ", true, Err(PasswordRejected::AllWhitespace)),
            (
                "               \u{3000}\t",
                false,
                Err(PasswordRejected::ControlCharacters),
            ),
            (
                "\u{3000}\u{3000}\u{3000}\u{3000}\u{3000}\u{3000}\u{3000}\u{3000}\u{3000}\u{3000}\u{3000}\u{3000}\u{3000}\u{3000}\u{3000}",
                false,
                Err(PasswordRejected::AllWhitespace),
            ),
            (
                "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
                false,
                Err(PasswordRejected::ControlCharacters),
            ),
            (
                "correct horse\nbattery staple",
                false,
                Err(PasswordRejected::ControlCharacters),
            ),
            (
                "correct horse\rbattery staple",
                false,
                Err(PasswordRejected::ControlCharacters),
            ),
            (
                "correct horse\u{7f}battery staple",
                false,
                Err(PasswordRejected::ControlCharacters),
            ),
            ("correct horse battery staple", false, Ok(())),
        ];
        for (password, second_factor, expected) in cases {
            assert_eq!(
                &policy.check(password, *second_factor),
                expected,
                "{password:?} second factor {second_factor}"
            );
        }
        let long = "correct horse battery staple ".repeat(3);
        let sixty_four: String = long.chars().take(64).collect();
        assert_eq!(policy.check(&sixty_four, false), Ok(()));
        let too_long = "x".repeat(257);
        assert_eq!(
            policy.check(&too_long, false),
            Err(PasswordRejected::TooLong { max: 256 })
        );
        assert_eq!(policy.check(&"y".repeat(256), false), Ok(()));
    }

    #[tokio::test]
    async fn composed_decomposed_and_fullwidth_spellings_are_one_password() {
        let hasher = PasswordHasher::new(Argon2Params::default()).unwrap();
        let phc = hasher
            .hash("caf\u{e9} au lait, s'il vous pla\u{ee}t")
            .await
            .unwrap();
        for spelling in [
            "cafe\u{301} au lait, s'il vous plai\u{302}t",
            "\u{ff43}\u{ff41}\u{ff46}\u{e9} au lait, s'il vous pla\u{ee}t",
        ] {
            assert!(
                hasher.verify(&phc, spelling).await.unwrap().matches,
                "{spelling:?}"
            );
        }
        // A password hashed as typed, before normalization existed, still verifies, and is
        // moved to its normalized form at the next login.
        let typed = "na\u{ef}ve \u{b5}-caf\u{e9} \u{ff11}\u{ff12}\u{ff13} \u{b2}";
        assert_ne!(normalize(typed), typed);
        let before = hash_with(&hasher.inner.argon2, typed.as_bytes(), &mut []).unwrap();
        assert_eq!(
            hasher.verify(&before, typed).await.unwrap(),
            Verification {
                matches: true,
                needs_rehash: true
            }
        );
        assert!(
            !hasher
                .verify(&before, "naive u-cafe 123 2")
                .await
                .unwrap()
                .matches
        );
        // An ASCII password hashed before normalization existed still verifies.
        let old = hash_with(
            &hasher.inner.argon2,
            b"correct horse battery staple",
            &mut [],
        )
        .unwrap();
        assert!(
            hasher
                .verify(&old, "correct horse battery staple")
                .await
                .unwrap()
                .matches
        );
    }

    #[test]
    fn policy_rejects_common_passwords_case_insensitively() {
        let policy = PasswordPolicy::default();
        for password in [
            "password1",
            "123456789",
            "qwertyuiop",
            "PassWord1",
            "QWERTYUIOP",
        ] {
            assert_eq!(
                policy.check(password, true),
                Err(PasswordRejected::Common),
                "{password}"
            );
        }
    }

    #[test]
    fn rejection_messages_do_not_repeat_the_password() {
        let policy = PasswordPolicy::default();
        for password in ["short", "password1"] {
            let Err(rejected) = policy.check(password, true) else {
                panic!("{password} should be rejected");
            };
            assert!(!rejected.to_string().contains(password));
        }
    }

    #[test]
    fn blocklist_has_ten_thousand_lowercase_entries() {
        assert!(COMMON_PASSWORDS.len() >= 10_000);
        assert!(
            COMMON_PASSWORDS
                .iter()
                .all(|p| *p == p.to_lowercase() && !p.is_empty())
        );
    }

    #[test]
    fn policy_validation_enforces_nist_bounds() {
        assert_eq!(PasswordPolicy::default().validate(), Ok(()));
        let cases = [
            (7, 256, Err(PolicyError::MinTooLow { floor: 8 })),
            (8, 63, Err(PolicyError::MaxTooLow { floor: 64 })),
            (100, 64, Err(PolicyError::MinAboveMax)),
            (12, 64, Ok(())),
        ];
        for (min_length, max_length, expected) in cases {
            let policy = PasswordPolicy {
                min_length,
                max_length,
            };
            assert_eq!(policy.validate(), expected, "{min_length}..{max_length}");
        }
    }

    #[test]
    fn params_below_owasp_minimum_are_rejected() {
        assert_eq!(Argon2Params::default().validate(), Ok(()));
        let base = Argon2Params::default();
        let cases = [
            (
                Argon2Params {
                    memory_kib: 19_455,
                    ..base
                },
                Err(ParamsError::MemoryTooLow { min: 19_456 }),
            ),
            (
                Argon2Params {
                    iterations: 1,
                    ..base
                },
                Err(ParamsError::IterationsTooLow { min: 2 }),
            ),
            (
                Argon2Params {
                    parallelism: 0,
                    ..base
                },
                Err(ParamsError::Unsupported),
            ),
            (
                Argon2Params {
                    memory_kib: 65_536,
                    iterations: 3,
                    parallelism: 4,
                },
                Ok(()),
            ),
        ];
        for (params, expected) in cases {
            assert_eq!(params.validate(), expected, "{params:?}");
        }
        assert_eq!(
            PasswordHasher::new(Argon2Params {
                memory_kib: 8_192,
                ..base
            })
            .err(),
            Some(ParamsError::MemoryTooLow { min: 19_456 })
        );
    }

    #[tokio::test]
    async fn hash_verifies_the_right_password_only() {
        let hasher = PasswordHasher::new(Argon2Params::default()).unwrap();
        assert_eq!(hasher.params(), Argon2Params::default());
        let phc = hasher.hash("correct horse battery staple").await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(!phc.contains("correct horse"));

        let right = hasher
            .verify(&phc, "correct horse battery staple")
            .await
            .unwrap();
        assert_eq!(
            right,
            Verification {
                matches: true,
                needs_rehash: false
            }
        );
        let wrong = hasher
            .verify(&phc, "correct horse battery stapler")
            .await
            .unwrap();
        assert_eq!(
            wrong,
            Verification {
                matches: false,
                needs_rehash: false
            }
        );
        hasher.verify_dummy("anything at all").await.unwrap();
    }

    #[tokio::test]
    async fn weaker_stored_hash_needs_rehash() {
        let hasher =
            PasswordHasher::with_concurrency(Argon2Params::default(), NonZeroUsize::MIN).unwrap();
        let weak = Params::new(8_192, 1, 1, None).unwrap();
        let phc = hash_with(&weak, b"hunter2 but longer", &mut []).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=8192,t=1,p=1$"), "{phc}");

        let verification = hasher.verify(&phc, "hunter2 but longer").await.unwrap();
        assert_eq!(
            verification,
            Verification {
                matches: true,
                needs_rehash: true
            }
        );
        let wrong = hasher.verify(&phc, "hunter3 but longer").await.unwrap();
        assert!(!wrong.matches && !wrong.needs_rehash);
    }

    /// What a verifier says about one password against one stored string: `Some(matches)`, or
    /// `None` when the stored string cannot be verified.
    fn outcome(result: password_hash::Result<()>) -> Option<bool> {
        match result {
            Ok(()) => Some(true),
            Err(password_hash::Error::Password) => Some(false),
            Err(_) => None,
        }
    }

    #[test]
    fn reused_memory_verification_accepts_exactly_what_argon2_accepts() {
        use argon2::password_hash::PasswordHasher as _;
        use argon2::password_hash::PasswordVerifier as _;

        let right = "correct horse battery staple";
        let made = |algorithm, version, params: Params| {
            let salt = SaltString::encode_b64(b"sixteen byte slt").unwrap();
            Argon2::new(algorithm, version, params)
                .hash_password(right.as_bytes(), &salt)
                .unwrap()
                .to_string()
        };
        let params = |m, t, p, len| Params::new(m, t, p, len).unwrap();
        let mut stored = vec![
            // What this service stores today, and what it stored under earlier settings.
            made(
                Algorithm::Argon2id,
                Version::V0x13,
                params(19_456, 2, 1, None),
            ),
            made(Algorithm::Argon2id, Version::V0x13, params(64, 1, 1, None)),
            made(
                Algorithm::Argon2id,
                Version::V0x13,
                params(2_048, 3, 1, None),
            ),
            made(Algorithm::Argon2id, Version::V0x13, params(256, 1, 4, None)),
            made(
                Algorithm::Argon2id,
                Version::V0x13,
                params(64, 1, 1, Some(16)),
            ),
            made(
                Algorithm::Argon2id,
                Version::V0x13,
                params(64, 1, 1, Some(64)),
            ),
            made(Algorithm::Argon2id, Version::V0x10, params(64, 1, 1, None)),
            made(Algorithm::Argon2i, Version::V0x13, params(64, 2, 1, None)),
            made(Algorithm::Argon2d, Version::V0x13, params(64, 2, 1, None)),
        ];
        let current = stored[0].clone();
        let hash_of_current = current.rsplit('$').next().unwrap().to_owned();
        stored.extend([
            // No output, no salt, and no parameters (argon2's defaults are today's, so the
            // current hash verifies without them).
            "$argon2id$v=19$m=64,t=1,p=1$c2l4dGVlbiBieXRlIHNsdA".to_owned(),
            format!("$argon2id$v=19$m=64,t=1,p=1${hash_of_current}"),
            format!("$argon2id$v=19$c2l4dGVlbiBieXRlIHNsdA${hash_of_current}"),
            // Parameters argon2 refuses, an unknown parameter, version or algorithm.
            format!("$argon2id$v=19$m=4,t=1,p=1$c2l4dGVlbiBieXRlIHNsdA${hash_of_current}"),
            format!("$argon2id$v=19$m=64,t=0,p=1$c2l4dGVlbiBieXRlIHNsdA${hash_of_current}"),
            format!("$argon2id$v=19$m=64,t=1,p=1,x=2$c2l4dGVlbiBieXRlIHNsdA${hash_of_current}"),
            format!("$argon2id$v=18$m=64,t=1,p=1$c2l4dGVlbiBieXRlIHNsdA${hash_of_current}"),
            format!("$argon2x$v=19$m=64,t=1,p=1$c2l4dGVlbiBieXRlIHNsdA${hash_of_current}"),
            // A salt too short, and the current hash with its output altered.
            format!("$argon2id$v=19$m=64,t=1,p=1$c2FsdA${hash_of_current}"),
            format!("{}A", &current[..current.len() - 1]),
        ]);
        // Smaller than the current parameters need, so that a larger stored `m` also takes the
        // path that does not keep its memory; reused across every case.
        let mut memory = blocks_for(&params(1_024, 1, 1, None));
        let mut verified = 0;
        for phc in &stored {
            let parsed = PasswordHash::new(phc).unwrap();
            for password in [right, "correct horse battery stapler", ""] {
                let old = outcome(Argon2::default().verify_password(password.as_bytes(), &parsed));
                let new = outcome(verify_with(password.as_bytes(), &parsed, &mut memory));
                assert_eq!(new, old, "{phc} with {password:?}");
                verified += usize::from(new == Some(true));
            }
        }
        // The nine hashes made above and the one without parameters, with their password only.
        assert_eq!(verified, 10);
        assert_eq!(
            memory.len(),
            1_024,
            "memory beyond the pooled size is not kept"
        );
    }

    #[tokio::test]
    async fn new_hashes_verify_with_argon2_itself() {
        use argon2::password_hash::PasswordVerifier as _;

        let hasher =
            PasswordHasher::with_concurrency(Argon2Params::default(), NonZeroUsize::MIN).unwrap();
        let phc = hasher.hash("a long passphrase of mine").await.unwrap();
        let parsed = PasswordHash::new(&phc).unwrap();
        assert_eq!(
            outcome(Argon2::default().verify_password(b"a long passphrase of mine", &parsed)),
            Some(true)
        );
        assert_eq!(
            outcome(Argon2::default().verify_password(b"a long passphrase of min", &parsed)),
            Some(false)
        );
        // Another hash of the same password has another salt.
        assert_ne!(hasher.hash("a long passphrase of mine").await.unwrap(), phc);
    }

    #[tokio::test]
    async fn malformed_stored_hash_is_an_error_without_echo() {
        let hasher =
            PasswordHasher::with_concurrency(Argon2Params::default(), NonZeroUsize::MIN).unwrap();
        for stored in ["", "not a hash", "$scrypt$ln=15,r=8,p=1$c2FsdA$aGFzaA"] {
            let err = hasher
                .verify(stored, "whatever password")
                .await
                .unwrap_err();
            assert_eq!(err, HashError::MalformedHash, "{stored}");
        }
    }

    #[tokio::test]
    async fn closed_hasher_refuses_work() {
        let hasher =
            PasswordHasher::with_concurrency(Argon2Params::default(), NonZeroUsize::MIN).unwrap();
        hasher.clone().close();
        assert_eq!(hasher.hash("whatever").await, Err(HashError::PoolClosed));
        assert_eq!(
            hasher.verify_dummy("whatever").await,
            Err(HashError::PoolClosed)
        );
    }
}
