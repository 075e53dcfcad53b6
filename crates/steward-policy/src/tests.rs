//! Engine tests: compile, validate with locations, decide along chains.

use std::collections::BTreeMap;

use chrono::Utc;
use proptest::prelude::*;
use serde_json::{Map, json};
use steward_types::{ActionDef, Decision, ErrorCode, Policy, ResourceType};

use crate::{Catalog, DecisionInput, Engine, EntityData, Subject};

fn policy(id: &str, text: &str) -> Policy {
    Policy {
        id: id.into(),
        description: format!("{id} description"),
        owner: "security@example.com".into(),
        text: text.into(),
        effect: String::new(),
        version: 1,
        updated_at: Utc::now(),
    }
}

fn catalog(policies: Vec<Policy>) -> Catalog {
    let attrs: BTreeMap<String, String> =
        [("classification".to_string(), "String".to_string())].into();
    Catalog {
        resource_types: vec![ResourceType {
            name: "repo".into(),
            description: String::new(),
            attributes: attrs,
            updated_at: Utc::now(),
        }],
        actions: vec![
            ActionDef {
                name: "read".into(),
                description: String::new(),
                resource_types: vec!["repo".into()],
                context: BTreeMap::new(),
                updated_at: Utc::now(),
            },
            ActionDef {
                name: "refund".into(),
                description: String::new(),
                resource_types: vec!["repo".into()],
                context: [("amount".to_string(), "Long?".to_string())].into(),
                updated_at: Utc::now(),
            },
        ],
        policies,
        roles: vec!["reader".into(), "writer".into(), "refunder".into()],
        personas: vec![("Code Review Bot".into(), vec!["reader".into()])],
        changed_policies: vec![],
    }
}

fn standard() -> Engine {
    Engine::compile(&catalog(vec![
        policy("readers-read", r#"permit(principal in Role::"reader", action == Action::"read", resource is repo);"#),
        policy("refunds", r#"permit(principal in Role::"refunder", action == Action::"refund", resource) when { context has amount && context.amount <= 100 };"#),
        policy("no-pii", r#"forbid(principal is Agent, action, resource is repo) when { resource.classification == "pii" && !principal.classifications.contains("pii") };"#),
    ]))
    .unwrap()
}

fn agent(id: &str, roles: &[&str]) -> Subject {
    let attrs = json!({
        "name": id, "owner": "alice@example.com", "risk_tier": "low", "classifications": [], "labels": [],
        "depth": 0, "platform": "", "model": "", "purpose": "", "persona": "", "team": "", "active": true, "orphaned": false,
    });
    Subject {
        kind: "agent",
        name: id.into(),
        inactive: None,
        entity: EntityData {
            entity_type: "Agent".into(),
            id: id.into(),
            attrs: attrs.as_object().unwrap().clone(),
            parents: roles
                .iter()
                .map(|r| ("Role".to_string(), r.to_string()))
                .collect(),
        },
    }
}

fn human(email: &str, roles: &[&str]) -> Subject {
    let attrs = json!({ "email": email, "external_id": "", "display_name": email, "active": true });
    Subject {
        kind: "human",
        name: email.into(),
        inactive: None,
        entity: EntityData {
            entity_type: "Human".into(),
            id: email.into(),
            attrs: attrs.as_object().unwrap().clone(),
            parents: roles
                .iter()
                .map(|r| ("Role".to_string(), r.to_string()))
                .collect(),
        },
    }
}

fn repo(classification: &str) -> EntityData {
    EntityData {
        entity_type: "repo".into(),
        id: "steward".into(),
        attrs: json!({ "classification": classification })
            .as_object()
            .unwrap()
            .clone(),
        parents: vec![],
    }
}

fn input(
    chain: Vec<Subject>,
    action: &str,
    resource: EntityData,
    context: Map<String, serde_json::Value>,
) -> DecisionInput {
    DecisionInput {
        chain,
        action: action.into(),
        resource,
        context,
    }
}

#[test]
fn allow_names_the_permitting_policy() {
    let out = standard()
        .decide(&input(
            vec![agent("bot", &["reader"])],
            "read",
            repo("internal"),
            Map::new(),
        ))
        .unwrap();
    assert_eq!(out.decision, Decision::Allow);
    assert_eq!(out.policies[0].id, "readers-read");
    assert_eq!(out.policies[0].description, "readers-read description");
}

#[test]
fn denial_suggests_the_role_that_would_allow() {
    let out = standard()
        .decide(&input(
            vec![agent("bot", &[])],
            "read",
            repo("internal"),
            Map::new(),
        ))
        .unwrap();
    assert_eq!(out.decision, Decision::Deny);
    let hint = out.remediation.unwrap();
    assert_eq!(hint.roles_that_allow, vec!["reader".to_string()]);
    assert!(hint.message.contains("reader"), "{}", hint.message);
}

#[test]
fn guardrail_beats_any_role_and_names_its_owner() {
    let out = standard()
        .decide(&input(
            vec![agent("bot", &["reader"])],
            "read",
            repo("pii"),
            Map::new(),
        ))
        .unwrap();
    assert_eq!(out.decision, Decision::Deny);
    assert_eq!(out.policies[0].id, "no-pii");
    let hint = out.remediation.unwrap();
    assert_eq!(hint.forbidden_by[0].owner, "security@example.com");
    assert!(hint.message.contains("guardrail"), "{}", hint.message);
}

#[test]
fn context_values_are_used_and_type_checked() {
    let engine = standard();
    let ctx = |v: serde_json::Value| v.as_object().unwrap().clone();
    let allow = engine
        .decide(&input(
            vec![agent("bot", &["refunder"])],
            "refund",
            repo("internal"),
            ctx(json!({"amount": 50, "ignored": true})),
        ))
        .unwrap();
    assert_eq!(allow.decision, Decision::Allow);
    let deny = engine
        .decide(&input(
            vec![agent("bot", &["refunder"])],
            "refund",
            repo("internal"),
            ctx(json!({"amount": 500})),
        ))
        .unwrap();
    assert_eq!(deny.decision, Decision::Deny);
    let err = engine
        .decide(&input(
            vec![agent("bot", &["refunder"])],
            "refund",
            repo("internal"),
            ctx(json!({"amount": "lots"})),
        ))
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidEntity);
}

#[test]
fn on_behalf_of_narrows() {
    let engine = standard();
    let out = engine
        .decide(&input(
            vec![agent("bot", &["reader"]), human("bob@example.com", &[])],
            "read",
            repo("internal"),
            Map::new(),
        ))
        .unwrap();
    assert_eq!(out.decision, Decision::Deny);
    assert!(out.chain[0].allowed && !out.chain[1].allowed);
    assert!(out.remediation.unwrap().message.contains("acts for"));
    let ok = engine
        .decide(&input(
            vec![
                agent("bot", &["reader"]),
                human("carol@example.com", &["reader"]),
            ],
            "read",
            repo("internal"),
            Map::new(),
        ))
        .unwrap();
    assert_eq!(ok.decision, Decision::Allow);
}

#[test]
fn undeclared_actions_and_types_deny_with_a_reason() {
    let engine = standard();
    let out = engine
        .decide(&input(
            vec![agent("bot", &["reader"])],
            "delete",
            repo("internal"),
            Map::new(),
        ))
        .unwrap();
    assert_eq!(out.decision, Decision::Deny);
    assert!(out.errors[0].contains("not declared"));
}

#[test]
fn invalid_policies_are_located() {
    let engine = standard();
    let err = crate::check_policy(
        engine.schema(),
        "bad",
        "permit(principal, action, resource)\nwhen { resource.nope == 1 };",
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidPolicy);
    assert!(err.message.contains("line 2"), "{}", err.message);
    let err = crate::check_policy(
        engine.schema(),
        "bad",
        "permit(principal, action, resource) when {",
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidPolicy);
    let err = crate::check_policy(
        engine.schema(),
        "bad",
        r#"permit(principal, action == Action::"fly", resource);"#,
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidPolicy);
}

#[test]
fn schema_changes_that_break_policies_are_refused() {
    let mut c = catalog(vec![policy(
        "readers-read",
        r#"permit(principal in Role::"reader", action == Action::"read", resource is repo);"#,
    )]);
    c.actions.retain(|a| a.name != "read");
    let err = Engine::compile(&c).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidSchema);
    assert!(err.message.contains("readers-read"));
}

proptest! {
    /// A child agent (chain: child, parent) is never allowed what its parent
    /// alone is denied, whatever roles either holds.
    #[test]
    fn child_never_exceeds_parent(
        child_roles in proptest::sample::subsequence(vec!["reader", "writer", "refunder"], 0..=3),
        parent_roles in proptest::sample::subsequence(vec!["reader", "writer", "refunder"], 0..=3),
        action in proptest::sample::select(vec!["read", "refund"]),
        amount in 0i64..200,
        pii in any::<bool>(),
    ) {
        let engine = standard();
        let ctx = json!({"amount": amount}).as_object().unwrap().clone();
        let resource = repo(if pii { "pii" } else { "internal" });
        let chain = vec![agent("child", &child_roles), agent("parent", &parent_roles)];
        let together = engine.decide(&input(chain, action, resource.clone(), ctx.clone())).unwrap();
        let parent_alone = engine.decide(&input(vec![agent("parent", &parent_roles)], action, resource.clone(), ctx.clone())).unwrap();
        let child_alone = engine.decide(&input(vec![agent("child", &child_roles)], action, resource, ctx)).unwrap();
        if together.decision == Decision::Allow {
            prop_assert_eq!(parent_alone.decision, Decision::Allow);
            prop_assert_eq!(child_alone.decision, Decision::Allow);
        }
    }
}
