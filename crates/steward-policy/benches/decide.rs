//! Steward's in-process decision against a bare Cedar `is_authorized` on the
//! same request and policies.
//!
//! cargo bench -p steward-policy --bench decide
//!
//! "bare cedar" evaluates one prepared request against prepared entities.
//! "steward decide" is what a decision costs inside Steward once the
//! identities are loaded: checking the values against their declared types,
//! building the context, evaluating every identity of the chain, collecting
//! the deciding policies. The same request again reuses the Cedar entities
//! built for identical data; "steward decide, new resource" makes every call
//! a first (another resource id each time), so the entities are built from
//! the JSON each call. All allow; a denial adds the remediation search.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::Utc;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use serde_json::json;
use steward_policy::{Catalog, DecisionInput, Engine, EntityData, Subject};
use steward_types::{ActionDef, Policy, ResourceType};

fn policy(id: &str, text: &str) -> Policy {
    Policy {
        id: id.into(),
        description: String::new(),
        owner: String::new(),
        text: text.into(),
        effect: String::new(),
        version: 1,
        updated_at: Utc::now(),
    }
}

fn engine(extra_policies: usize) -> Engine {
    let mut policies = vec![
        policy(
            "readers-read",
            r#"permit(principal in Role::"repo-reader", action == Action::"read", resource is repo);"#,
        ),
        policy(
            "no-pii",
            r#"forbid(principal is Agent, action, resource is repo) when { resource.classification == "pii" && !principal.classifications.contains("pii") };"#,
        ),
    ];
    for i in 0..extra_policies {
        // Spread over the write action and 50 others, as a large tenant's would be.
        let action = if i % 2 == 0 {
            "write".to_string()
        } else {
            format!("act{}", i % 50)
        };
        policies.push(policy(&format!("p{i}"), &format!(r#"permit(principal in Role::"role-{i}", action == Action::"{action}", resource is repo) when {{ resource.classification == "c{i}" }};"#)));
    }
    let attrs: BTreeMap<String, String> =
        [("classification".to_string(), "String".to_string())].into();
    Engine::compile(&Catalog {
        resource_types: vec![ResourceType {
            name: "repo".into(),
            description: String::new(),
            attributes: attrs,
            updated_at: Utc::now(),
        }],
        actions: ["read", "write"]
            .iter()
            .map(|a| a.to_string())
            .chain((0..50).map(|i| format!("act{i}")))
            .map(|name| ActionDef {
                name,
                description: String::new(),
                resource_types: vec!["repo".into()],
                context: BTreeMap::new(),
                updated_at: Utc::now(),
            })
            .collect(),
        policies,
        roles: vec!["repo-reader".into()],
        personas: vec![],
        changed_policies: vec![],
        tolerated_impossible: None,
    })
    .unwrap()
}

fn agent() -> Subject {
    let attrs = json!({
        "name": "bot", "owner": "alice@example.com", "risk_tier": "low", "classifications": ["internal"], "labels": [],
        "depth": 0, "platform": "", "model": "", "purpose": "", "persona": "", "team": "", "active": true, "orphaned": false,
    });
    Subject {
        kind: "agent",
        name: "bot".into(),
        inactive: None,
        entity: EntityData {
            entity_type: "Agent".into(),
            id: "bot".into(),
            attrs: attrs.as_object().unwrap().clone(),
            parents: vec![("Role".into(), "repo-reader".into())],
        },
    }
}

fn input() -> DecisionInput {
    DecisionInput {
        chain: vec![agent()],
        action: "read".into(),
        resource: EntityData {
            entity_type: "repo".into(),
            id: "steward".into(),
            attrs: json!({"classification": "internal"})
                .as_object()
                .unwrap()
                .clone(),
            parents: vec![],
        },
        context: serde_json::Map::new(),
    }
}

fn bench(c: &mut Criterion) {
    for extra in [0usize, 100, 10_000] {
        let engine = engine(extra);
        let input = input();
        assert_eq!(
            engine.decide(&input).unwrap().decision,
            steward_types::Decision::Allow
        );

        // The same request, prepared once, for bare Cedar.
        let entities = cedar_policy::Entities::from_json_value(
            json!([
                { "uid": {"type": "Agent", "id": "bot"}, "attrs": input.chain[0].entity.attrs, "parents": [{"type": "Role", "id": "repo-reader"}] },
                { "uid": {"type": "repo", "id": "steward"}, "attrs": {"classification": "internal"}, "parents": [] },
            ]),
            Some(engine.schema()),
        )
        .unwrap();
        let request = cedar_policy::Request::new(
            cedar_policy::EntityUid::from_str(r#"Agent::"bot""#).unwrap(),
            cedar_policy::EntityUid::from_str(r#"Action::"read""#).unwrap(),
            cedar_policy::EntityUid::from_str(r#"repo::"steward""#).unwrap(),
            cedar_policy::Context::empty(),
            None,
        )
        .unwrap();
        let authorizer = cedar_policy::Authorizer::new();
        let policies = engine.policy_set().clone();
        assert_eq!(
            authorizer
                .is_authorized(&request, &policies, &entities)
                .decision(),
            cedar_policy::Decision::Allow
        );

        let mut group = c.benchmark_group(format!("decision/{} policies", extra + 2));
        group.sample_size(if extra > 1000 { 20 } else { 100 });
        group.bench_function("bare cedar is_authorized", |b| {
            b.iter(|| authorizer.is_authorized(&request, &policies, &entities))
        });
        group.bench_function("steward decide", |b| {
            b.iter(|| engine.decide(&input).unwrap())
        });
        let mut n = 0u64;
        group.bench_function("steward decide, new resource", |b| {
            b.iter_batched_ref(
                || {
                    n += 1;
                    let mut first = input.clone();
                    first.resource.id = format!("repo-{n}");
                    first
                },
                |first| engine.decide(first).unwrap(),
                BatchSize::SmallInput,
            )
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
