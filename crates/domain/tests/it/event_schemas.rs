//! Every event the code can emit validates against `schemas/{type}.v{schema}.json`, and every schema
//! file belongs to an event type the code knows.

use std::collections::BTreeSet;
use std::path::PathBuf;

use custodian_domain::DomainEvent;
use custodian_domain::tenant::{self, Plan, TenantCommand, TenantEvent};

fn schemas_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

fn validate(event_type: &str, schema: u32, data: &serde_json::Value) {
    let path = schemas_dir().join(format!("{event_type}.v{schema}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("no schema for {event_type} v{schema} at {path:?}: {e}"));
    let schema_doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let validator = jsonschema::validator_for(&schema_doc).unwrap();
    let errors: Vec<String> = validator.iter_errors(data).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "{event_type} v{schema} {data}: {errors:?}"
    );
}

/// Every tenant event `decide` can produce, by driving it through the whole lifecycle.
fn emitted_tenant_events() -> Vec<TenantEvent> {
    let commands = [
        TenantCommand::Create {
            name: "Acme Corp".into(),
            slug: "acme".into(),
            plan: Plan::Free,
        },
        TenantCommand::Rename {
            name: "Acme Inc".into(),
        },
        TenantCommand::ChangePlan { plan: Plan::Team },
        TenantCommand::ChangePlan {
            plan: Plan::Enterprise,
        },
        TenantCommand::Suspend {
            reason: "invoice overdue".into(),
        },
        TenantCommand::Reactivate,
    ];
    let mut state = None;
    let mut out = Vec::new();
    for c in commands {
        let events = tenant::decide(state.as_ref(), c).unwrap();
        for e in &events {
            state = tenant::evolve(state, e);
        }
        out.extend(events);
    }
    out
}

#[test]
fn every_emitted_event_matches_its_schema() {
    let events = emitted_tenant_events();
    let mut seen = BTreeSet::new();
    for e in &events {
        validate(e.event_type(), e.schema_version(), &e.data());
        seen.insert((e.event_type(), e.schema_version()));
    }
    let declared: BTreeSet<_> = TenantEvent::TYPES.iter().copied().collect();
    assert_eq!(
        seen, declared,
        "the lifecycle must emit every declared type"
    );
}

#[test]
fn schemas_reject_what_the_code_would_refuse() {
    validate_fails(
        "tenant.created",
        serde_json::json!({"name": "A", "slug": "acme", "plan": "gold"}),
    );
    validate_fails(
        "tenant.created",
        serde_json::json!({"name": "A", "slug": "acme", "plan": "free", "extra": 1}),
    );
    validate_fails("tenant.renamed", serde_json::json!({}));
}

fn validate_fails(event_type: &str, data: serde_json::Value) {
    let text =
        std::fs::read_to_string(schemas_dir().join(format!("{event_type}.v1.json"))).unwrap();
    let schema_doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        !jsonschema::is_valid(&schema_doc, &data),
        "{event_type} accepted {data}"
    );
}

#[test]
fn every_schema_file_belongs_to_a_known_event_type() {
    let known: BTreeSet<String> = TenantEvent::TYPES
        .iter()
        .map(|(t, v)| format!("{t}.v{v}.json"))
        .collect();
    for entry in std::fs::read_dir(schemas_dir()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".json") {
            assert!(
                known.contains(&name),
                "schema {name} has no event type in the code"
            );
        }
    }
}
