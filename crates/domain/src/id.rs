//! Prefixed, sortable identifiers in the TypeID style: `user_01jd8x...`.
//!
//! The suffix is the 128-bit UUID (a UUIDv7, so ids sort by creation time) in Crockford base32,
//! lowercase, 26 characters. The caller draws the UUID; this module only spells it.

use uuid::Uuid;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// `{prefix}_{26 base32 characters}` for `uuid`.
pub fn type_id(prefix: &str, uuid: Uuid) -> String {
    let n = uuid.as_u128();
    let mut out = String::with_capacity(prefix.len() + 27);
    out.push_str(prefix);
    out.push('_');
    // 26 characters of 5 bits hold 130 bits; the first character carries the top 3 bits.
    for i in (0..26).rev() {
        let shift = i * 5;
        let digit = usize::try_from((n >> shift) & 0x1f).unwrap_or(0);
        out.push(char::from(ALPHABET.get(digit).copied().unwrap_or(b'0')));
    }
    out
}

/// Whether `s` is `{prefix}_` followed by 26 characters of the TypeID alphabet.
pub fn is_type_id(prefix: &str, s: &str) -> bool {
    s.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|suffix| {
            suffix.len() == 26
                && suffix.bytes().all(|b| ALPHABET.contains(&b))
                && suffix.as_bytes().first().is_some_and(|b| *b <= b'7')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spells_the_typeid_reference_vectors() {
        // From the TypeID specification's valid test cases.
        let u = Uuid::parse_str("0110c853-1d09-52d8-d73e-1194e95b5f19").unwrap();
        assert_eq!(type_id("prefix", u), "prefix_0123456789abcdefghjkmnpqrs");
        assert_eq!(
            type_id("user", Uuid::nil()),
            "user_00000000000000000000000000"
        );
        assert!(is_type_id("user", &type_id("user", Uuid::now_v7())));
        assert!(!is_type_id("user", "user_0123"));
        assert!(!is_type_id("sess", &type_id("user", Uuid::now_v7())));
    }

    #[test]
    fn later_ids_sort_after_earlier_ones() {
        let a = type_id("user", Uuid::now_v7());
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = type_id("user", Uuid::now_v7());
        assert!(a < b);
    }
}
