//! The application layer's parsers of outside text (opaque tokens, listing cursors and limits,
//! query flags, recovery codes, address allowlists) answer any input with a value or a refusal,
//! never a panic, and read back what the service writes.

use custodian_app::auth::tokens::{OpaqueToken, TokenKind, normalize_recovery_code};
use custodian_app::keys::parse_allowlist;
use custodian_app::validate::{MAX_LIMIT, check_cursor, parse_flag, parse_limit};
use proptest::prelude::*;

const KINDS: [TokenKind; 4] = [
    TokenKind::Refresh,
    TokenKind::Invitation,
    TokenKind::PasswordReset,
    TokenKind::MfaChallenge,
];

fn kind() -> impl Strategy<Value = TokenKind> {
    proptest::sample::select(KINDS.to_vec())
}

proptest! {
    #[test]
    fn an_issued_token_parses_back_only_as_its_own_kind(
        kind in kind(),
        other in kind(),
        tenant in "(_system|[a-z0-9][a-z0-9_\\-]{0,62})",
        subject in "[A-Za-z0-9][A-Za-z0-9_\\-]{0,127}",
        generation in any::<u64>(),
    ) {
        let token = OpaqueToken::new(kind, &tenant, &subject, generation).unwrap();
        let text = token.to_string();
        prop_assert!(text.len() <= OpaqueToken::MAX_LEN);
        let parsed = OpaqueToken::parse(&text, kind).unwrap();
        prop_assert_eq!(&parsed, &token);
        prop_assert_eq!(parsed.to_string(), text.clone());
        if other != kind {
            prop_assert!(OpaqueToken::parse(&text, other).is_err());
        }
        // A debug print never shows the secret.
        let secret = text.rsplit('.').next().unwrap();
        let debug = format!("{parsed:?}");
        prop_assert!(!debug.contains(secret));
    }

    #[test]
    fn a_token_parser_answers_every_string(
        s in prop_oneof![
            any::<String>(),
            "[a-z]{2,4}\\.[a-z_\\-]{0,10}\\.[A-Za-z0-9_\\-]{0,10}\\.[0-9\\-+]{0,22}\\.[A-Za-z0-9_\\-=+/]{40,45}",
            "\\PC{290,310}",
        ],
        kind in kind(),
    ) {
        match OpaqueToken::parse(&s, kind) {
            // Whatever is accepted is written back exactly, so it hashes as presented.
            Ok(token) => prop_assert_eq!(token.to_string(), s),
            Err(e) => prop_assert!(!e.to_string().contains(&s) || s.len() < 4),
        }
    }

    #[test]
    fn a_cursor_is_only_an_id_of_the_listing(prefix in "[a-z]{3,5}", s in any::<String>()) {
        prop_assert!(check_cursor(&prefix, None).is_ok());
        if check_cursor(&prefix, Some(&s)).is_ok() {
            let start = format!("{prefix}_");
            prop_assert!(s.starts_with(&start));
            prop_assert_eq!(s.len(), prefix.len() + 27);
        }
        let id = custodian_domain::id::type_id(&prefix, uuid::Uuid::now_v7());
        prop_assert!(check_cursor(&prefix, Some(&id)).is_ok());
    }

    #[test]
    fn a_limit_is_a_number_from_1_to_the_largest_page(s in prop_oneof![any::<String>(), " ?[+\\-]?[0-9]{1,12} ?"]) {
        if let Ok(limit) = parse_limit(Some(&s)) {
            prop_assert!((1..=MAX_LIMIT).contains(&limit));
            prop_assert_eq!(s.trim().parse::<u32>().ok(), Some(limit));
        }
    }

    #[test]
    fn a_flag_is_only_true_or_false(s in any::<String>()) {
        match parse_flag("flag", Some(&s)) {
            Ok(true) => prop_assert_eq!(s.trim(), "true"),
            Ok(false) => prop_assert_eq!(s.trim(), "false"),
            Err(_) => prop_assert!(s.trim() != "true" && s.trim() != "false"),
        }
    }

    #[test]
    fn a_recovery_code_normalizes_to_its_canonical_form(s in prop_oneof![any::<String>(), "[a-zA-Z0-9 \\-]{8,16}"]) {
        if let Some(code) = normalize_recovery_code(&s) {
            prop_assert_eq!(normalize_recovery_code(&code), Some(code.clone()));
            prop_assert_eq!(code.len(), 10);
        }
    }

    #[test]
    fn an_allowlist_holds_only_ranges(ranges in proptest::collection::vec(
        prop_oneof![any::<String>(), "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(/[0-9]{1,3})?", "[0-9a-f:]{2,20}(/[0-9]{1,3})?"],
        0..5,
    )) {
        if let Ok(nets) = parse_allowlist("ip_allowlist", &ranges) {
            prop_assert_eq!(nets.len(), ranges.len());
        }
    }
}
