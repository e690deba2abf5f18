//! Time-based one-time passwords (RFC 6238) as authenticator apps make them: HMAC-SHA-1, 6 digits,
//! a new code every 30 seconds, and one step of clock skew tolerated either way.
//!
//! [`verify`] says which time step a code belongs to; it does not remember codes. The caller must
//! store the last accepted step per secret and refuse any step at or below it, or a code seen over a
//! shoulder or in a log could be replayed within its 90-second window.

use rand::RngCore as _;
use rand::rngs::OsRng;
use subtle::ConstantTimeEq as _;
use totp_rs::{Algorithm, TOTP};

/// Seconds per time step.
pub const PERIOD_SECONDS: u64 = 30;
/// Digits per code.
pub const DIGITS: usize = 6;
/// Bytes of secret made by [`generate_secret`] (160 bits, RFC 4226's recommendation).
pub const SECRET_BYTES: usize = 20;

/// A new shared secret of 20 random bytes from the operating system's generator.
pub fn generate_secret() -> Vec<u8> {
    let mut secret = vec![0u8; SECRET_BYTES];
    OsRng.fill_bytes(&mut secret);
    secret
}

/// The secret in unpadded RFC 4648 base32, as a person types it into an authenticator app.
pub fn base32(secret: &[u8]) -> String {
    generator(secret, DIGITS).get_secret_base32()
}

/// The `otpauth://` key URI an authenticator app scans from a QR code:
/// `otpauth://totp/{issuer}:{account}?secret={base32}&issuer={issuer}&algorithm=SHA1&digits=6&period=30`,
/// with `issuer` and `account` percent-encoded (a `:` in either becomes `%3A`, so the label stays
/// unambiguous).
pub fn otpauth_uri(secret: &[u8], issuer: &str, account: &str) -> String {
    let issuer = percent_encode(issuer);
    format!(
        "otpauth://totp/{issuer}:{account}?secret={secret}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={PERIOD_SECONDS}",
        account = percent_encode(account),
        secret = base32(secret),
    )
}

/// The 6-digit code for `secret` at `unix_seconds`.
pub fn code_at(secret: &[u8], unix_seconds: u64) -> String {
    generator(secret, DIGITS).generate(unix_seconds)
}

/// Checks `code` against `secret` at `unix_seconds`, accepting the current time step and the one
/// before and after it. Returns the matched time step (`unix_seconds / 30`, give or take one), or
/// `None` if the code does not match or is not exactly 6 ASCII digits once spaces are removed.
///
/// Codes are compared in constant time. Replay protection is the caller's: refuse a returned step
/// that is less than or equal to the last step accepted for this secret, then record it.
pub fn verify(secret: &[u8], code: &str, unix_seconds: u64) -> Option<u64> {
    let code: String = code.chars().filter(|c| *c != ' ').collect();
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let totp = generator(secret, DIGITS);
    let current = unix_seconds / PERIOD_SECONDS;
    let mut matched = None;
    // Every candidate is computed and compared, so the time taken does not depend on the code.
    for step in [
        current.checked_sub(1),
        Some(current),
        current.checked_add(1),
    ]
    .into_iter()
    .flatten()
    {
        let Some(at) = step.checked_mul(PERIOD_SECONDS) else {
            continue;
        };
        if bool::from(totp.generate(at).as_bytes().ct_eq(code.as_bytes())) {
            matched = Some(step);
        }
    }
    matched
}

/// A generator for `secret`. `new_unchecked` because verification must be total: `new` refuses
/// secrets under 128 bits, and [`generate_secret`] already makes 160.
fn generator(secret: &[u8], digits: usize) -> TOTP {
    TOTP::new_unchecked(
        Algorithm::SHA1,
        digits,
        1,
        PERIOD_SECONDS,
        secret.to_vec(),
        None,
        String::new(),
    )
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for byte in s.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_SECRET: &[u8] = b"12345678901234567890";

    /// RFC 6238 Appendix B, SHA-1 rows.
    const RFC_VECTORS: [(u64, &str); 6] = [
        (59, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ];

    #[test]
    fn eight_digit_generation_matches_rfc_6238_appendix_b() {
        let totp = generator(RFC_SECRET, 8);
        for (time, expected) in RFC_VECTORS {
            assert_eq!(totp.generate(time), expected, "t={time}");
        }
    }

    #[test]
    fn six_digit_codes_are_the_rfc_codes_last_digits_and_verify_at_their_step() {
        for (time, expected) in RFC_VECTORS {
            let six = &expected[2..];
            assert_eq!(code_at(RFC_SECRET, time), six, "t={time}");
            assert_eq!(verify(RFC_SECRET, six, time), Some(time / 30), "t={time}");
        }
    }

    #[test]
    fn neighbouring_steps_are_accepted_and_farther_ones_refused() {
        let now = 1_111_111_111;
        let step = now / 30;
        let cases = [
            (now - 60, None),
            (now - 30, Some(step - 1)),
            (now, Some(step)),
            (now + 30, Some(step + 1)),
            (now + 60, None),
        ];
        for (at, expected) in cases {
            let code = code_at(RFC_SECRET, at);
            assert_eq!(verify(RFC_SECRET, &code, now), expected, "code of t={at}");
        }
    }

    #[test]
    fn first_step_has_no_previous_step() {
        let code = code_at(RFC_SECRET, 0);
        assert_eq!(verify(RFC_SECRET, &code, 5), Some(0));
    }

    #[test]
    fn codes_that_are_not_six_digits_are_refused() {
        let time = 59;
        let good = code_at(RFC_SECRET, time);
        assert_eq!(
            verify(
                RFC_SECRET,
                &format!(" {} {} ", &good[..3], &good[3..]),
                time
            ),
            Some(1)
        );
        for code in [
            "",
            "12345",
            "1234567",
            "94287082",
            "28708a",
            "２８７０８２",
            "287-082",
            "+28708",
            "\t287082",
        ] {
            assert_eq!(verify(RFC_SECRET, code, time), None, "{code:?}");
        }
    }

    #[test]
    fn secrets_are_random_and_twenty_bytes() {
        let a = generate_secret();
        assert_eq!(a.len(), 20);
        assert_ne!(a, generate_secret());
    }

    #[test]
    fn base32_and_uri_follow_the_key_uri_format() {
        assert_eq!(base32(RFC_SECRET), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(
            otpauth_uri(RFC_SECRET, "Acme Corp", "ada@example.com"),
            "otpauth://totp/Acme%20Corp:ada%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Acme%20Corp&algorithm=SHA1&digits=6&period=30"
        );
        assert!(otpauth_uri(RFC_SECRET, "a:b", "c").starts_with("otpauth://totp/a%3Ab:c?"));
    }
}
