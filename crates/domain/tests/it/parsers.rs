//! Every domain parser that reads outside text (API keys, ids, permissions, resources, times of
//! day, timestamps, stream names, checkpoints and verifier keys) answers any input with a value or
//! an error, never a panic, and reads back what the domain writes.

use custodian_domain::checkpoint::{Checkpoint, NoteSigner, NoteVerifier};
use custodian_domain::id::{is_type_id, type_id};
use custodian_domain::key::{self, KeyFormatError};
use custodian_domain::policy::{Permission, Resource, TimeOfDay};
use custodian_domain::{StreamName, Timestamp};
use ed25519_dalek::SigningKey;
use proptest::prelude::*;

const BASE62: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A random part: 30 base62 characters.
fn random_part() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(BASE62.as_bytes().to_vec()), 30)
        .prop_map(|bytes| bytes.into_iter().map(char::from).collect())
}

/// Text that looks like a key some of the time: `cst_` and near-key lengths, odd characters.
fn key_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "cst_[0-9A-Za-z]{0,45}",
        "cst_[0-9A-Za-z_\\-+/=. ]{36}",
        "cst_\\PC{36}",
        "(cst_)?[\\x00-\\x7f]{0,50}",
    ]
}

#[test]
fn a_time_of_day_is_two_digits_each_without_a_sign() {
    for refused in [
        "+0:+0", "+9:30", "09:+5", "-0:00", " 9:30", "9:30", "09:5", "24:00", "23:60",
    ] {
        assert!(
            TimeOfDay::parse(refused).is_err(),
            "{refused:?} was accepted"
        );
    }
    assert_eq!(TimeOfDay::parse("23:59").unwrap().minutes, 1439);
    assert_eq!(TimeOfDay::parse("00:00").unwrap().minutes, 0);
}

proptest! {
    #[test]
    fn a_key_parser_answers_every_string(s in key_like()) {
        let parsed = key::parse(&s);
        // A key is exactly `cst_` + 36 base62 characters.
        if parsed.is_ok() {
            prop_assert_eq!(s.len(), key::KEY_LEN);
            prop_assert!(s.starts_with(key::PREFIX));
            prop_assert!(s[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
        }
        // A listing shows a preview only of a well-formed key, and never its middle.
        match key::preview(&s) {
            Some(preview) => {
                prop_assert!(parsed.is_ok());
                prop_assert!(!preview.contains(&s[8..key::KEY_LEN - 4]));
            }
            None => prop_assert!(parsed.is_err()),
        }
        // The refusal never repeats the key.
        if let Err(e) = parsed
            && s.len() > 4
        {
            prop_assert!(!e.to_string().contains(&s));
        }
    }

    #[test]
    fn every_assembled_key_parses(random in random_part()) {
        let assembled = key::assemble(&random).unwrap();
        prop_assert_eq!(key::parse(&assembled), Ok(()));
        prop_assert!(key::looks_like_key(&assembled));
        prop_assert_eq!(&assembled[4..34], random.as_str());
    }

    #[test]
    fn one_mistyped_character_fails_the_checksum(
        random in random_part(),
        at in 4..key::KEY_LEN,
        replacement in proptest::sample::select(BASE62.as_bytes().to_vec()),
    ) {
        let assembled = key::assemble(&random).unwrap();
        prop_assume!(assembled.as_bytes()[at] != replacement);
        let mut typo = assembled.into_bytes();
        typo[at] = replacement;
        let typo = String::from_utf8(typo).unwrap();
        prop_assert_eq!(key::parse(&typo), Err(KeyFormatError::Checksum));
        prop_assert_eq!(key::preview(&typo), None);
    }

    #[test]
    fn two_swapped_characters_fail_the_checksum(
        random in random_part(),
        at in 4..key::KEY_LEN - 1,
    ) {
        let assembled = key::assemble(&random).unwrap();
        let mut swapped = assembled.clone().into_bytes();
        swapped.swap(at, at + 1);
        prop_assume!(swapped != assembled.as_bytes());
        let swapped = String::from_utf8(swapped).unwrap();
        prop_assert_eq!(key::parse(&swapped), Err(KeyFormatError::Checksum));
    }

    #[test]
    fn assembling_refuses_a_random_part_of_the_wrong_shape(s in any::<String>()) {
        match key::assemble(&s) {
            Ok(assembled) => {
                prop_assert_eq!(s.len(), key::RANDOM_LEN);
                prop_assert_eq!(key::parse(&assembled), Ok(()));
            }
            Err(KeyFormatError::Length) => prop_assert_ne!(s.len(), key::RANDOM_LEN),
            Err(KeyFormatError::Alphabet) => {
                prop_assert!(!s.bytes().all(|b| b.is_ascii_alphanumeric()));
            }
            Err(other) => prop_assert!(false, "assemble refused with {other:?}"),
        }
    }

    #[test]
    fn a_type_id_is_recognized_only_with_its_prefix(
        uuid in any::<u128>(),
        prefix in "[a-z]{1,8}",
        other in "[a-z]{1,8}",
        junk in any::<String>(),
    ) {
        let id = type_id(&prefix, uuid::Uuid::from_u128(uuid));
        prop_assert!(is_type_id(&prefix, &id));
        if other != prefix {
            prop_assert!(!is_type_id(&other, &id));
        }
        // Any string at all is answered, and a recognized one has the shape.
        if is_type_id(&prefix, &junk) {
            prop_assert_eq!(junk.len(), prefix.len() + 27);
        }
    }

    #[test]
    fn a_permission_reads_back_as_written(s in prop_oneof![any::<String>(), "[a-z*_:\\-]{0,20}"]) {
        if let Ok(p) = Permission::parse(&s) {
            prop_assert_eq!(format!("{}:{}", p.resource_type, p.action), s);
        }
    }

    #[test]
    fn a_resource_reads_back_as_written(s in prop_oneof![any::<String>(), "[a-z]{1,5}/\\PC{0,10}"]) {
        if let Ok(r) = Resource::parse(&s) {
            prop_assert_eq!(format!("{}/{}", r.resource_type, r.id), s);
        }
    }

    #[test]
    fn a_time_of_day_is_hh_mm_within_a_day(s in prop_oneof![any::<String>(), "[0-9+\\-]{1,3}:[0-9+\\-]{1,3}"]) {
        if let Ok(t) = TimeOfDay::parse(&s) {
            prop_assert!(t.minutes < 1440);
            prop_assert_eq!(format!("{:02}:{:02}", t.minutes / 60, t.minutes % 60), s);
        }
    }

    #[test]
    fn a_timestamp_reads_back_as_it_is_written(
        s in prop_oneof![
            any::<String>(),
            "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?(Z|[+\\-][0-9]{2}:[0-9]{2})",
        ]
    ) {
        if let Ok(t) = Timestamp::parse(&s) {
            let written = t.to_string();
            prop_assert_eq!(Timestamp::parse(&written).unwrap(), t);
            prop_assert_eq!(written.len(), "2026-01-01T00:00:00.000000Z".len());
        }
    }

    #[test]
    fn a_stream_name_reads_back_as_written(
        s in prop_oneof![any::<String>(), "[a-z_]{1,8}/[a-z_]{1,8}/[A-Za-z0-9_\\-/]{1,20}"]
    ) {
        if let Ok(name) = StreamName::parse(&s) {
            prop_assert_eq!(name.to_string(), s.clone());
            prop_assert_eq!(format!("{}/{}/{}", name.tenant(), name.aggregate(), name.id()), s);
        }
    }

    #[test]
    fn a_checkpoint_body_reads_back_as_written(
        origin in "[a-z.]{1,20}/[a-z]{1,10}",
        size in any::<u64>(),
        root in any::<[u8; 32]>(),
        seconds in 0i64..253_402_300_799,
    ) {
        let time = Some(Timestamp::parse(
            &time::OffsetDateTime::from_unix_timestamp(seconds).unwrap()
                .format(&time::format_description::well_known::Rfc3339).unwrap(),
        ).unwrap());
        let checkpoint = Checkpoint { origin, size, root, time };
        prop_assert_eq!(Checkpoint::parse_body(&checkpoint.body()).unwrap(), checkpoint);
    }

    #[test]
    fn checkpoint_and_note_readers_answer_every_text(
        text in prop_oneof![any::<String>(), "[a-z./]{0,10}\n[0-9]{0,25}\n[A-Za-z0-9+/=]{0,50}\n(\\PC{0,20}\n)?"],
        vkey in prop_oneof![any::<String>(), "[a-z.]{1,10}\\+[0-9a-f]{0,10}\\+[A-Za-z0-9+/=]{0,50}"],
    ) {
        let _ = Checkpoint::parse_body(&text);
        let _ = NoteVerifier::parse(&vkey);
        let signer = NoteSigner::new("example.test/log", SigningKey::from_bytes(&[7; 32])).unwrap();
        let verifier = NoteVerifier::parse(&signer.verifier_key()).unwrap();
        prop_assert!(verifier.open(&text).is_err());
        let _ = verifier.open_checkpoint(&format!("{text}\n\n\u{2014} example.test/log {vkey}\n"));
    }
}
