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
        tolerated_impossible: None,
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
fn an_empty_chain_is_denied_not_a_panic() {
    let out = standard()
        .decide(&input(vec![], "read", repo("internal"), Map::new()))
        .unwrap();
    assert_eq!(out.decision, Decision::Deny);
    assert!(out.errors[0].contains("no principal"));
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
fn an_approval_annotation_names_groups_or_says_none() {
    // Put (a changed policy), as the policies route and apply compile it.
    let gated = |said: &str| {
        policy(
            "gated",
            &format!("@approval(\"{said}\")\npermit(principal, action, resource);"),
        )
    };
    let with = |said: &str| {
        let mut c = catalog(vec![gated(said)]);
        c.changed_policies = vec!["gated".into()];
        Engine::compile(&c)
    };
    for good in ["none", "support-leads", "support-leads, finance", " leads "] {
        assert!(with(good).is_ok(), "{good}");
    }
    for bad in ["", " ", " , ", "leads,", "leads,,finance", "support leads"] {
        let err = with(bad).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidPolicy, "{bad}");
        assert!(
            err.message.contains("names no approver group"),
            "{}",
            err.message
        );
    }
    // One stored before the check (not changed now) is kept: the engine
    // still compiles, and a decision asks the runtime group for it.
    assert!(Engine::compile(&catalog(vec![gated("")])).is_ok());
}

#[test]
fn policies_that_can_never_apply_are_refused() {
    let engine = standard();
    // `amout` is not declared: the forbid could never fire.
    let err = crate::check_policy(
        engine.schema(),
        "typo",
        "forbid(principal, action == Action::\"refund\", resource)\nwhen { context has amout && context.amout > 100 };",
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidPolicy);
    assert!(err.message.contains("can never apply"), "{}", err.message);
    // The declared name is fine.
    crate::check_policy(
        engine.schema(),
        "right",
        r#"forbid(principal, action == Action::"refund", resource) when { context has amount && context.amount > 100 };"#,
    )
    .unwrap();
    // Nor may a declaration change leave a guarded policy testing nothing.
    let mut c = catalog(vec![policy(
        "large-refunds",
        r#"forbid(principal, action == Action::"refund", resource) when { context has amount && context.amount > 100 };"#,
    )]);
    for a in c.actions.iter_mut().filter(|a| a.name == "refund") {
        a.context.clear();
    }
    c.tolerated_impossible = Some(vec![]);
    let err = Engine::compile(&c).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidSchema);
    assert!(err.message.contains("large-refunds"), "{}", err.message);
    // One stored before such policies were refused still loads (so the
    // tenant's decisions go on), is reported, and may stay through other
    // changes; it may not be written again as it is.
    c.tolerated_impossible = None;
    let loaded = Engine::compile(&c).unwrap();
    assert_eq!(loaded.impossible().len(), 1);
    assert_eq!(loaded.impossible()[0].0, "large-refunds");
    c.tolerated_impossible = Some(vec!["large-refunds".into()]);
    Engine::compile(&c).unwrap();
    c.changed_policies = vec!["large-refunds".into()];
    let err = Engine::compile(&c).unwrap_err();
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

/// A compile after a previous engine reuses only what cannot have changed:
/// a changed text is checked again, every policy is checked again under a
/// changed schema, and the result is the engine a fresh compile gives.
#[test]
fn compiling_after_an_engine_checks_what_changed() {
    let previous = standard();
    let texts = [
        (
            "readers-read",
            r#"permit(principal in Role::"reader", action == Action::"read", resource is repo);"#,
        ),
        (
            "refunds",
            r#"permit(principal in Role::"refunder", action == Action::"refund", resource) when { context has amount && context.amount <= 100 };"#,
        ),
        (
            "no-pii",
            r#"forbid(principal is Agent, action, resource is repo) when { resource.classification == "pii" && !principal.classifications.contains("pii") };"#,
        ),
    ];
    let same = catalog(texts.iter().map(|(id, t)| policy(id, t)).collect());
    let again = Engine::compile_after(&same, Some(&previous)).unwrap();
    let fresh = Engine::compile(&same).unwrap();
    assert_eq!(again.referenced, fresh.referenced);
    assert_eq!(again.checked.len(), 3);
    for classification in ["public", "pii"] {
        let i = input(
            vec![agent("a1", &["reader"])],
            "read",
            repo(classification),
            Map::new(),
        );
        assert_eq!(
            again.decide(&i).unwrap().decision,
            fresh.decide(&i).unwrap().decision
        );
    }

    let mut changed = same.clone();
    changed.policies[0].text =
        "permit(principal, action == Action::\"read\", resource) when { resource.missing };".into();
    changed.changed_policies = vec!["readers-read".into()];
    let err = Engine::compile_after(&changed, Some(&previous)).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidPolicy, "{err:?}");

    let mut narrower = same.clone();
    narrower.resource_types[0].attributes.clear();
    let err = Engine::compile_after(&narrower, Some(&previous)).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidSchema, "{err:?}");
    assert!(err.message.contains("no-pii"), "{err:?}");
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

/// Decisions reuse built entities only for identical data: every change to
/// the identities or the resource shows in the next decision, and a reused
/// decision is the one a fresh engine makes.
#[test]
fn cached_entities_follow_the_data() {
    let engine = standard();
    let decide = |chain: Vec<Subject>, resource: EntityData| {
        engine
            .decide(&input(chain, "read", resource, Map::new()))
            .unwrap()
    };
    let fresh = |chain: Vec<Subject>, resource: EntityData| {
        standard()
            .decide(&input(chain, "read", resource, Map::new()))
            .unwrap()
    };

    let first = decide(vec![agent("bot", &["reader"])], repo("internal"));
    assert_eq!(first.decision, Decision::Allow);
    assert_eq!(engine.entity_cache.len(), 1);
    let again = decide(vec![agent("bot", &["reader"])], repo("internal"));
    assert_eq!(again, first);
    assert_eq!(engine.entity_cache.len(), 1);

    // The role removed: same identities, other data.
    let without = decide(vec![agent("bot", &[])], repo("internal"));
    assert_eq!(without.decision, Decision::Deny);
    assert_eq!(without, fresh(vec![agent("bot", &[])], repo("internal")));
    assert_eq!(engine.entity_cache.len(), 1);
    // And given back.
    assert_eq!(
        decide(vec![agent("bot", &["reader"])], repo("internal")).decision,
        Decision::Allow
    );

    // Suspended: the entity is the same, the decision is not.
    let mut suspended = agent("bot", &["reader"]);
    suspended.inactive = Some("suspended by alice@example.com".into());
    let out = decide(vec![suspended], repo("internal"));
    assert_eq!(out.decision, Decision::Deny);
    assert!(out.remediation.unwrap().message.contains("suspended"));

    // An attribute of the resource, then of the agent.
    assert_eq!(
        decide(vec![agent("bot", &["reader"])], repo("pii")).decision,
        Decision::Deny
    );
    let mut cleared = agent("bot", &["reader"]);
    cleared
        .entity
        .attrs
        .insert("classifications".into(), json!(["pii"]));
    assert_eq!(
        decide(vec![cleared.clone()], repo("pii")).decision,
        Decision::Allow
    );
    assert_eq!(
        decide(vec![cleared.clone()], repo("pii")),
        fresh(vec![cleared], repo("pii"))
    );

    // The same attributes in another order are the same data.
    let mut reordered = agent("bot", &["reader"]);
    reordered.entity.attrs = reordered
        .entity
        .attrs
        .into_iter()
        .rev()
        .collect::<Map<_, _>>();
    assert_eq!(
        decide(vec![reordered], repo("internal")).decision,
        Decision::Allow
    );

    // A longer chain with the same principal is another request.
    let chain = vec![agent("bot", &["reader"]), human("bob@example.com", &[])];
    assert_eq!(
        decide(chain.clone(), repo("internal")),
        fresh(chain, repo("internal"))
    );
}

#[test]
fn the_entity_cache_is_bounded() {
    let engine = standard();
    for i in 0..crate::cache::CAPACITY + 10 {
        let mut resource = repo("internal");
        resource.id = format!("repo-{i}");
        let out = engine
            .decide(&input(
                vec![agent("bot", &["reader"])],
                "read",
                resource,
                Map::new(),
            ))
            .unwrap();
        assert_eq!(out.decision, Decision::Allow);
    }
    assert_eq!(engine.entity_cache.len(), crate::cache::CAPACITY);
}

/// Invalid values are refused on every call, whether or not a policy reads
/// the attribute, and whether or not the same identity was decided before.
#[test]
fn invalid_values_are_refused_every_time() {
    let engine = standard();
    let ok = input(
        vec![agent("bot", &["reader"])],
        "read",
        repo("internal"),
        Map::new(),
    );
    assert_eq!(engine.decide(&ok).unwrap().decision, Decision::Allow);
    let cases = [
        (
            "purpose",
            json!(null),
            "attribute 'purpose': null is not a value policies can use",
        ),
        (
            "depth",
            json!(1.5),
            "attribute 'depth': numbers must be integers",
        ),
        (
            "labels",
            json!(["a", {"b": null}]),
            "attribute 'labels': null is not a value policies can use",
        ),
        (
            "classifications",
            json!([null]),
            "attribute 'classifications': null is not a value policies can use",
        ),
    ];
    for (attr, value, message) in cases {
        let mut bad = agent("bot", &["reader"]);
        bad.entity.attrs.insert(attr.into(), value);
        let request = input(vec![bad], "read", repo("internal"), Map::new());
        for _ in 0..2 {
            let err = engine.decide(&request).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidEntity);
            assert_eq!(err.message, message);
        }
    }
    assert_eq!(engine.decide(&ok).unwrap().decision, Decision::Allow);
}

/// Attributes are built only when a policy names them, however it names
/// them; the others cannot change a decision.
#[test]
fn attributes_named_by_policies_are_built() {
    let engine = Engine::compile(&catalog(vec![
        policy("ci", r#"permit(principal is Agent, action == Action::"read", resource is repo) when { principal has platform && principal.platform == "ci" };"#),
        policy("model", r#"permit(principal is Agent, action == Action::"read", resource is repo) when { principal["model"] == "m1" };"#),
    ]))
    .unwrap();
    let referenced = engine.referenced.as_ref().unwrap();
    for name in ["platform", "model"] {
        assert!(referenced.iter().any(|n| n == name), "{name}");
    }
    assert!(!referenced.iter().any(|n| n == "purpose"));
    let with = |attr: &str, value: &str| {
        let mut a = agent("bot", &[]);
        a.entity.attrs.insert(attr.into(), json!(value));
        engine
            .decide(&input(vec![a], "read", repo("internal"), Map::new()))
            .unwrap()
            .decision
    };
    assert_eq!(with("platform", "ci"), Decision::Allow);
    assert_eq!(with("model", "m1"), Decision::Allow);
    assert_eq!(with("purpose", "ci"), Decision::Deny);
}

/// A decision asked deep in a caller's stack is made, not refused: Cedar
/// errs with under 100 KiB of stack left, and an erring guardrail denies.
#[test]
fn a_decision_deep_in_the_stack_is_still_made() {
    // Use up the stack until less than Cedar's minimum is left, then decide.
    fn deep(engine: &Engine, input: &DecisionInput) -> crate::Outcome {
        let left = stacker::remaining_stack().unwrap_or(usize::MAX);
        if left < 64 * 1024 {
            return engine.decide(input).unwrap();
        }
        let pad = std::hint::black_box([0u8; 4096]);
        let out = deep(engine, input);
        std::hint::black_box(pad);
        out
    }
    let engine = standard();
    let ask = input(
        vec![agent("bot", &["reader"])],
        "read",
        repo("internal"),
        Map::new(),
    );
    let out = std::thread::Builder::new()
        .stack_size(1024 * 1024)
        .spawn(move || deep(&engine, &ask))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(out.decision, Decision::Allow, "{:?}", out.errors);
}

/// A guardrail reads values only in their declared types: a value of
/// another type, anywhere inside a record, is refused (400), never allowed
/// past a `forbid` that could not match it. Extension types are made from
/// their text, so a declared decimal can be compared.
#[test]
fn guardrails_see_values_only_in_their_declared_types() {
    let mut c = catalog(vec![
        policy(
            "deploy-all",
            r#"permit(principal, action == Action::"deploy", resource);"#,
        ),
        policy(
            "no-prod",
            r#"forbid(principal is Agent, action == Action::"deploy", resource) when { context.target.env == "prod" };"#,
        ),
        policy(
            "no-big-spend",
            r#"forbid(principal is Agent, action == Action::"deploy", resource) when { context has price && context.price.greaterThan(decimal("10.0")) };"#,
        ),
    ]);
    c.actions.push(ActionDef {
        name: "deploy".into(),
        description: String::new(),
        resource_types: vec!["repo".into()],
        context: [
            (
                "target".to_string(),
                r#"{ "env": __cedar::String }"#.to_string(),
            ),
            ("price".to_string(), "decimal?".to_string()),
        ]
        .into(),
        updated_at: Utc::now(),
    });
    let engine = Engine::compile(&c).unwrap();
    let decide = |context: serde_json::Value| {
        let request = input(
            vec![agent("bot", &[])],
            "deploy",
            repo("internal"),
            context.as_object().unwrap().clone(),
        );
        engine.decide(&request)
    };
    let decision = |context| decide(context).unwrap().decision;
    assert_eq!(decision(json!({"target": {"env": "dev"}})), Decision::Allow);
    assert_eq!(decision(json!({"target": {"env": "prod"}})), Decision::Deny);
    for env in [json!(["prod"]), json!(1), json!({"x": 1})] {
        let err = decide(json!({"target": {"env": env}})).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidEntity, "{env}");
        assert!(
            err.message.contains("'target.env' must be String"),
            "{}",
            err.message
        );
    }
    assert_eq!(
        decide(json!({"target": {}})).unwrap_err().code,
        ErrorCode::InvalidEntity
    );
    let dev = |price: serde_json::Value| json!({"target": {"env": "dev"}, "price": price});
    assert_eq!(decision(dev(json!("5.0"))), Decision::Allow);
    assert_eq!(decision(dev(json!(5))), Decision::Allow);
    assert_eq!(decision(dev(json!("12.5"))), Decision::Deny);
    assert_eq!(
        decision(dev(json!({"__extn": {"fn": "decimal", "arg": "12.5"}}))),
        Decision::Deny
    );
    for bad in [json!("lots"), json!(true), json!("1.23456")] {
        let err = decide(dev(bad.clone())).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidEntity, "{bad}: {}", err.message);
    }
}

/// A denial's hint covers every refused identity of the chain: a role is
/// offered only if it allows all of them (ancestors first), a guardrail on
/// any of them is named with its owner, and any role the action's policies
/// name is tried, however many roles there are.
#[test]
fn the_hint_covers_every_refused_identity() {
    let mut c = catalog(vec![
        policy(
            "readers-read",
            r#"permit(principal in Role::"reader", action == Action::"read", resource is repo);"#,
        ),
        policy(
            "no-mallory",
            r#"forbid(principal is Human, action, resource) when { principal.email == "mallory@example.com" };"#,
        ),
    ]);
    // Many roles that grant nothing, sorted before the one that does.
    c.roles = (0..100).map(|i| format!("aaa-{i:03}")).collect();
    c.roles.push("reader".into());
    let engine = Engine::compile(&c).unwrap();
    let decide = |chain| {
        engine
            .decide(&input(chain, "read", repo("internal"), Map::new()))
            .unwrap()
    };

    // A child and its parent both refused: the role must go to both.
    let out = decide(vec![agent("child", &[]), agent("parent", &[])]);
    assert_eq!(out.decision, Decision::Deny);
    let hint = out.remediation.unwrap();
    assert_eq!(hint.roles_that_allow, vec!["reader".to_string()]);
    assert!(
        hint.message.contains("agent 'child' and agent 'parent' (an ancestor in its spawn chain)")
            && hint.message.contains("Grant it to agent 'parent' (an ancestor in its spawn chain) and agent 'child', in that order"),
        "{}",
        hint.message
    );

    // The agent lacks a role and the person is forbidden by a guardrail:
    // no role would help, and the guardrail and its owner are named.
    let out = decide(vec![
        agent("bot", &[]),
        human("mallory@example.com", &["reader"]),
    ]);
    assert_eq!(out.policies.len(), 1);
    assert_eq!(out.policies[0].id, "no-mallory");
    let hint = out.remediation.unwrap();
    assert!(hint.roles_that_allow.is_empty());
    assert_eq!(hint.forbidden_by[0].owner, "security@example.com");
    assert!(
        hint.message.contains("'no-mallory'")
            && hint
                .message
                .contains("forbids human 'mallory@example.com' (the person it acts for)"),
        "{}",
        hint.message
    );

    // A person is granted roles by an administrator, not by an owner.
    let out = decide(vec![
        agent("bot", &["reader"]),
        human("bob@example.com", &[]),
    ]);
    let hint = out.remediation.unwrap();
    assert_eq!(hint.roles_that_allow, vec!["reader".to_string()]);
    assert!(
        hint.message.contains("Ask an administrator"),
        "{}",
        hint.message
    );
}
