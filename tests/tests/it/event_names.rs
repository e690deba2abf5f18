//! The docs and the subscriber example name only event types and NATS subjects that exist: every
//! event type they mention is in the domain's catalog, and every subject filter they show receives
//! at least one event type of it.

use std::path::{Path, PathBuf};

use custodian_domain::DomainEvent as _;
use custodian_domain::stream::SYSTEM_TENANT;

/// Aggregates whose streams live only in the platform tenant `_system`.
const PLATFORM_AGGREGATES: [&str; 2] = ["tenant", "signing_key"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The spans of each line of `text` between backticks or double quotes: code and string literals.
fn quoted(text: &str) -> Vec<&str> {
    text.lines()
        .flat_map(|line| {
            ['`', '"']
                .into_iter()
                .flat_map(move |quote| line.split(quote).skip(1).step_by(2))
        })
        .collect()
}

/// A dotted lower-case name such as `user.created`: what an event type looks like.
fn looks_like_event_type(s: &str) -> bool {
    let word = |w: &str| {
        w.starts_with(|c: char| c.is_ascii_lowercase())
            && w.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    let words: Vec<&str> = s.split('.').collect();
    words.len() == 2 && words.iter().all(|w| word(w)) && words[0] != "custodian"
}

/// Every concrete subject on which the relay can publish an event of the catalog, with `tenant` as
/// the tenant of aggregates that are not the platform's.
fn subjects_for(tenant: &str) -> Vec<Vec<String>> {
    custodian_domain::catalog()
        .iter()
        .map(|(event_type, _)| {
            // A tenant's policy and its usage are each one aggregate whose events have types of
            // several prefixes; every other event type starts with its stream's aggregate.
            let in_types = |types: &[(&str, u32)]| types.iter().any(|(t, _)| t == event_type);
            let aggregate = if in_types(custodian_domain::policy::PolicyEvent::TYPES) {
                custodian_domain::policy::event::AGGREGATE
            } else if in_types(custodian_domain::usage::UsageEvent::TYPES) {
                custodian_domain::usage::AGGREGATE
            } else {
                event_type.split('.').next().unwrap()
            };
            let tenant = if PLATFORM_AGGREGATES.contains(&aggregate) {
                SYSTEM_TENANT
            } else {
                tenant
            };
            ["custodian", tenant, aggregate]
                .into_iter()
                .chain(event_type.split('.'))
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

/// NATS subject matching: `*` is one token, a final `>` one or more.
fn matches(filter: &[&str], subject: &[String]) -> bool {
    match (filter.split_first(), subject.split_first()) {
        (Some((&">", [])), Some(_)) => true,
        (Some((token, rest)), Some((first, tail))) => {
            (*token == "*" || token == first) && matches(rest, tail)
        }
        (None, None) => true,
        _ => false,
    }
}

/// Whether the filter receives at least one event type of the catalog.
fn receives_something(filter: &str) -> bool {
    let tokens: Vec<&str> = filter.split('.').collect();
    let tenant = match tokens.get(1) {
        Some(t) if !["*", ">"].contains(t) => t,
        _ => "acme",
    };
    subjects_for(tenant).iter().any(|s| matches(&tokens, s))
}

/// The subject filters shown in `text`, quoted or not: every `custodian.` followed by subject
/// characters, templates such as `custodian.{tenant}.{aggregate}.{type}` aside.
fn subject_filters(text: &str) -> Vec<String> {
    let subject_char = |c: char| c.is_ascii_alphanumeric() || "_-.*>{}".contains(c);
    text.match_indices("custodian.")
        .filter(|(at, _)| {
            text[..*at]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || "_-/:.".contains(c)))
        })
        .map(|(at, _)| {
            let rest = &text[at..];
            let end = rest.find(|c| !subject_char(c)).unwrap_or(rest.len());
            rest[..end].trim_end_matches('.').to_owned()
        })
        .filter(|s| !s.contains('{'))
        .collect()
}

const SUBSCRIBER_DOCS: [&str; 2] = ["docs/subscribers.md", "examples/subscriber/src/main.rs"];

#[test]
fn every_subject_in_the_subscriber_docs_and_example_receives_events() {
    let mut seen = 0;
    for path in SUBSCRIBER_DOCS {
        for filter in subject_filters(&read(path)) {
            assert!(
                receives_something(&filter),
                "{path}: `{filter}` matches no subject of any event type the domain writes"
            );
            seen += 1;
        }
    }
    assert!(
        seen >= 12,
        "only {seen} subjects found: is the parsing right?"
    );
}

#[test]
fn every_event_type_named_in_the_docs_is_in_the_catalog() {
    let catalog: Vec<&str> = custodian_domain::catalog()
        .iter()
        .map(|(t, _)| *t)
        .collect();
    let mut seen = 0;
    for path in SUBSCRIBER_DOCS.into_iter().chain([
        "README.md",
        "docs/identity.md",
        "docs/keys.md",
        "docs/usage.md",
    ]) {
        let text = read(path);
        for name in quoted(&text)
            .into_iter()
            .filter(|s| looks_like_event_type(s))
        {
            assert!(
                catalog.contains(&name),
                "{path} names `{name}`, which is no event type of the domain's catalog"
            );
            seen += 1;
        }
    }
    assert!(
        seen >= 10,
        "only {seen} event types found: is the parsing right?"
    );
}

#[test]
fn the_matcher_tells_real_filters_from_empty_ones() {
    for real in [
        "custodian.>",
        "custodian.acme.>",
        "custodian._system.tenant.tenant.suspended",
        "custodian.*.*.tenant.suspended",
        "custodian.acme.user.user.created",
        "custodian._system.signing_key.>",
    ] {
        assert!(receives_something(real), "{real}");
    }
    for empty in [
        "custodian.*.api_key.>",
        "custodian.acme.user.user.registered",
        "custodian.acme.tenant.>",
        "custodian.acme.user",
        "custodian.*.user.user.created.>",
    ] {
        assert!(!receives_something(empty), "{empty}");
    }
}
