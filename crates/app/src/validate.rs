//! Input rules shared by the use cases: lengths, email addresses, tenant slugs, listing cursors.
//! Each failure is an [`AppError::Invalid`] (or `NotFound` for a path that cannot name anything)
//! that names the field.

use custodian_domain::Timestamp;
use custodian_domain::id::is_type_id;
use custodian_domain::policy::{Permission, Resource};

use crate::auth::index::SYSTEM_TENANT;
use crate::error::AppError;

/// Longest accepted password, in characters (the policy's own maximum may be lower).
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// Checks a string field's length in characters; the error names the field.
pub fn check_len(field: &str, value: &str, min: usize, max: usize) -> Result<(), AppError> {
    let n = value.chars().count();
    if n < min || n > max {
        return Err(AppError::invalid(format!(
            "{field} must be {min} to {max} characters (got {n})"
        )));
    }
    Ok(())
}

/// Validates and normalizes an email address: Unicode NFKC (so composed, decomposed and
/// fullwidth spellings of one address are one address), trimmed, at most 254 characters, no
/// control characters, RFC 5321 syntax; the domain part is lowercased (the local part is kept as
/// given, but matching is case-insensitive through the blind index). Uniqueness and login both
/// see only this form.
pub fn normalize_email(email: &str) -> Result<String, AppError> {
    use unicode_normalization::UnicodeNormalization as _;
    if email.chars().any(char::is_control) {
        return Err(AppError::invalid(
            "email must not contain control characters",
        ));
    }
    let email: String = email.nfkc().collect();
    let email = email.trim();
    check_len("email", email, 3, 254)?;
    let parsed = email_address::EmailAddress::parse_with_options(
        email,
        email_address::Options::default().without_display_text(),
    )
    .map_err(|e| AppError::invalid(format!("email is not a valid address: {e}")))?;
    Ok(format!(
        "{}@{}",
        parsed.local_part(),
        parsed.domain().to_lowercase()
    ))
}

/// Validates a tenant slug as given in a path or body; an invalid one cannot exist, so it is
/// `NotFound` in paths (`as_path`) and `Invalid` in bodies.
pub fn check_tenant(tenant: &str, as_path: bool) -> Result<(), AppError> {
    let ok = tenant == SYSTEM_TENANT || {
        let mut chars = tenant.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
            && (2..=63).contains(&tenant.len())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    match (ok, as_path) {
        (true, _) => Ok(()),
        (false, true) => Err(AppError::not_found(format!("no tenant {tenant:.64}"))),
        (false, false) => Err(AppError::invalid(
            "tenant must be a tenant's slug: 2 to 63 characters of a-z, 0-9 and '-'",
        )),
    }
}

/// A display name: trimmed, 1 to 200 characters, with no control characters (NUL, CR, LF, ...)
/// and no bidirectional embeddings, overrides or isolates (U+202A..U+202E, U+2066..U+2069), which
/// would make a name display as something it is not.
pub fn check_name(name: &str) -> Result<String, AppError> {
    let name = name.trim();
    check_len("name", name, 1, 200)?;
    if name.chars().any(char::is_control) {
        return Err(AppError::invalid(
            "name must not contain control characters",
        ));
    }
    if name.chars().any(is_bidi_control) {
        return Err(AppError::invalid(
            "name must not contain bidirectional overrides or isolates (U+202A..U+202E, U+2066..U+2069)",
        ));
    }
    Ok(name.to_owned())
}

/// A bidirectional embedding, override or isolate, which reorders the text around it.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A listing cursor is the id of the last item of the previous page, with the listing's prefix.
pub fn check_cursor(prefix: &str, cursor: Option<&str>) -> Result<(), AppError> {
    match cursor {
        Some(c) if !is_type_id(prefix, c) => Err(AppError::invalid(
            "cursor is not a cursor this listing returned",
        )),
        _ => Ok(()),
    }
}

/// Keeps the first `limit` items, and the cursor after the last of them if there were more.
pub fn page<T>(mut items: Vec<T>, limit: u32, id: impl Fn(&T) -> &str) -> (Vec<T>, Option<String>) {
    let limit = limit as usize;
    if items.len() > limit {
        items.truncate(limit);
        let next = items.last().map(|i| id(i).to_owned());
        (items, next)
    } else {
        (items, None)
    }
}

/// The page size when a listing does not say.
pub const DEFAULT_LIMIT: u32 = 50;
/// The largest page a listing returns.
pub const MAX_LIMIT: u32 = 200;

/// A page size from a query: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
pub fn parse_limit(limit: Option<&str>) -> Result<u32, AppError> {
    let Some(limit) = limit else {
        return Ok(DEFAULT_LIMIT);
    };
    limit
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or_else(|| AppError::invalid(format!("limit must be an integer from 1 to {MAX_LIMIT}")))
}

/// A `true`/`false` query flag, `false` when absent.
pub fn parse_flag(field: &str, value: Option<&str>) -> Result<bool, AppError> {
    match value.map(str::trim) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(AppError::invalid(format!("{field} must be true or false"))),
    }
}

/// Reads a snake_case name into one of the API's enums, as serde would.
pub fn from_name<T: serde::de::DeserializeOwned>(name: &str) -> Option<T> {
    T::deserialize(serde::de::IntoDeserializer::<serde::de::value::Error>::into_deserializer(name))
        .ok()
}

/// Parses a permission (`type:action`); the error names `field`.
pub(crate) fn parse_permission(field: &str, s: &str) -> Result<Permission, AppError> {
    Permission::parse(s).map_err(|m| AppError::invalid(format!("{field}: {m}")))
}

/// Parses a resource (`type/id`); the error names `field`.
pub(crate) fn parse_resource(field: &str, s: &str) -> Result<Resource, AppError> {
    Resource::parse(s).map_err(|m| AppError::invalid(format!("{field}: {m}")))
}

/// Parses an optional RFC 3339 time; the error names `field`.
pub(crate) fn parse_time(field: &str, s: Option<&str>) -> Result<Option<Timestamp>, AppError> {
    s.map(|s| {
        Timestamp::parse(s).map_err(|_| {
            AppError::invalid(format!(
                "{field}: {s:.64?} is not an RFC 3339 time, e.g. 2026-03-01T12:00:00Z"
            ))
        })
    })
    .transpose()
}

/// Reads a field that may be absent (`None`), `null` (`Some(None)`) or a value, for updates where
/// `null` clears.
pub fn double_option<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    serde::Deserialize::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_their_domain_lowercased() {
        assert_eq!(
            normalize_email("  Ada@Example.ORG ").unwrap(),
            "Ada@example.org"
        );
        assert!(matches!(
            normalize_email("not an address"),
            Err(AppError::Invalid(_))
        ));
    }

    #[test]
    fn composed_decomposed_and_fullwidth_spellings_are_one_address() {
        let composed = normalize_email("jos\u{e9}@Example.org").unwrap();
        for spelling in [
            "jose\u{301}@example.org",
            "jos\u{e9}@EXAMPLE.ORG",
            "\u{ff4a}\u{ff4f}\u{ff53}\u{e9}\u{ff20}\u{ff45}\u{ff58}\u{ff41}\u{ff4d}\u{ff50}\u{ff4c}\u{ff45}.org",
        ] {
            assert_eq!(normalize_email(spelling).unwrap(), composed, "{spelling:?}");
        }
        assert_eq!(composed, "jos\u{e9}@example.org");
    }

    #[test]
    fn emails_with_control_characters_are_refused() {
        for email in [
            "ada\0@example.org",
            "ada@example.org\r\nBcc: eve@example.org",
            "ada\u{7f}@example.org",
            "ada\u{85}@example.org",
            "ada@example.org\n",
        ] {
            assert!(
                matches!(normalize_email(email), Err(AppError::Invalid(_))),
                "{email:?}"
            );
        }
    }

    #[test]
    fn names_refuse_control_characters_and_bidi_overrides() {
        for name in [
            "Ada\0",
            "Ada\r\nLovelace",
            "Ada\nLovelace",
            "Ada\u{1b}[31m",
            "\u{202E}ecalevoL",
            "Ada \u{202A}x",
            "Ada \u{202D}x",
            "Ada \u{2066}x",
            "Ada \u{2069}x",
        ] {
            assert!(
                matches!(check_name(name), Err(AppError::Invalid(_))),
                "{name:?}"
            );
        }
        assert_eq!(check_name("  Ada Lovelace ").unwrap(), "Ada Lovelace");
        assert_eq!(
            check_name("\u{5d0}\u{5d3}\u{5d4}").unwrap(),
            "\u{5d0}\u{5d3}\u{5d4}"
        );
    }

    #[test]
    fn a_bad_slug_is_not_found_in_a_path_and_invalid_in_a_body() {
        for slug in ["A", "a", "-ab", "ab_c", &"a".repeat(64)] {
            assert!(matches!(
                check_tenant(slug, true),
                Err(AppError::NotFound(_))
            ));
            assert!(matches!(
                check_tenant(slug, false),
                Err(AppError::Invalid(_))
            ));
        }
        for slug in ["ab", "acme-2", SYSTEM_TENANT] {
            assert!(check_tenant(slug, true).is_ok());
        }
    }

    #[test]
    fn a_page_names_the_cursor_only_when_more_remain() {
        let (items, next) = page(vec!["a", "b", "c"], 2, |s| s);
        assert_eq!((items, next.as_deref()), (vec!["a", "b"], Some("b")));
        let (items, next) = page(vec!["a", "b"], 2, |s| s);
        assert_eq!((items, next), (vec!["a", "b"], None));
    }
}
