//! What quotas cost a decision.
//!
//! 1. criterion: choosing the counters a decision charges (3 of 100 rules
//!    apply), and reserving one decision's 3 charges in the store (SQLite,
//!    PostgreSQL), alone in its transaction.
//! 2. HTTP: closed-loop throughput of audited `POST /v1/decisions` with 16
//!    clients, for an agent with no quota and then with three (its own, its
//!    owner's, the tenant's), in the same run; the ratio is what quotas cost.
//!
//! cargo bench -p steward-testkit --bench quotas
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use criterion::Criterion;
use serde_json::json;
use steward_core::quota::{Rule, rule_from_request};
use steward_policy::{DecisionInput, EntityData, Subject};
use steward_server::quotas::{RuleSet, charges};
use steward_store::quotas::{Charge, Reservation, Write};
use steward_testkit::{Backend, TempStore, TestServer};
use steward_types::*;

fn rule(i: usize, scope: QuotaScope, subject: Option<&str>) -> Rule {
    rule_from_request(
        format!("quo_{i}"),
        PutQuota {
            name: format!("q{i}"),
            scope: Some(scope),
            metric: "requests".into(),
            window: "day".into(),
            limit: 1e9,
            ..Default::default()
        },
        subject.map(String::from),
        Utc::now(),
    )
    .unwrap()
}

fn agent_subject() -> Subject {
    let mut attrs = serde_json::Map::new();
    attrs.insert("owner".into(), json!("owner@example.com"));
    Subject {
        kind: "agent",
        name: "bot".into(),
        inactive: None,
        entity: EntityData {
            entity_type: "Agent".into(),
            id: "agt_bot".into(),
            attrs,
            parents: vec![("Team".into(), "platform".into())],
        },
    }
}

/// 100 rules, of which 3 apply to `agt_bot`.
fn rule_set() -> RuleSet {
    let mut rules = vec![
        rule(0, QuotaScope::Agent, Some("agt_bot")),
        rule(1, QuotaScope::Owner, Some("owner@example.com")),
        rule(2, QuotaScope::Tenant, None),
    ];
    for i in 3..100 {
        rules.push(rule(i, QuotaScope::Agent, Some(&format!("agt_other_{i}"))));
    }
    RuleSet {
        rules,
        templates: Default::default(),
    }
}

fn request() -> DecisionRequest {
    DecisionRequest {
        action: "read".into(),
        resource: ResourceRef {
            resource_type: "repo".into(),
            id: "r".into(),
            attributes: Default::default(),
        },
        ..Default::default()
    }
}

fn criterion_benches(rt: &tokio::runtime::Runtime, c: &mut Criterion) {
    let set = rule_set();
    let req = request();
    let input = DecisionInput {
        chain: vec![agent_subject()],
        action: req.action.clone(),
        resource: EntityData {
            entity_type: "repo".into(),
            id: "r".into(),
            attrs: Default::default(),
            parents: vec![],
        },
        context: Default::default(),
    };
    assert_eq!(charges(&set, "default", &input, &req).unwrap().len(), 3);
    c.bench_function("quotas/choose 3 of 100 rules", |b| {
        b.iter(|| charges(&set, "default", &input, &req).unwrap())
    });
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let temp = rt.block_on(TempStore::new(backend)).unwrap();
        let store = rt.block_on(steward_store::Store::open(&temp.url)).unwrap();
        let ctx = steward_core::ChangeContext::system("default", "bench", Utc::now());
        rt.block_on(store.ensure_tenant(&ctx, "default", "Default"))
            .unwrap();
        let three: Vec<Charge> = set.rules[..3]
            .iter()
            .map(|r| Charge {
                rule: r.clone(),
                subject: r.quota.subject.clone().unwrap_or_else(|| "default".into()),
                estimate: 1,
            })
            .collect();
        c.bench_function(
            &format!("quotas/reserve 3 counters, one decision per transaction ({backend:?})"),
            |b| {
                b.to_async(rt).iter(|| {
                    let (store, three) = (store.clone(), three.clone());
                    async move {
                        let now = Utc::now();
                        store
                            .write_batch(vec![Write::Reserve(Reservation {
                                tenant: "default".into(),
                                decision_id: format!("dec_{}", uuid::Uuid::now_v7().simple()),
                                principal: "agt_bot".into(),
                                charges: three,
                                now,
                                settle_by: now,
                                approved: false,
                            })])
                            .await
                            .unwrap()
                    }
                })
            },
        );
        rt.block_on(store.close());
        rt.block_on(temp.remove()).unwrap();
    }
}

async fn setup(s: &TestServer, quotas: bool) {
    let a = &s.admin;
    a.put_resource_type(&PutResourceType {
        name: "repo".into(),
        description: String::new(),
        attributes: Default::default(),
    })
    .await
    .unwrap();
    a.put_action(&PutAction {
        name: "read".into(),
        description: String::new(),
        resource_types: vec!["repo".into()],
        context: Default::default(),
    })
    .await
    .unwrap();
    a.put_policy(&PutPolicy {
        id: "agents-read".into(),
        description: String::new(),
        owner: String::new(),
        text: r#"permit(principal is Agent, action == Action::"read", resource is repo);"#.into(),
    })
    .await
    .unwrap();
    a.create_human(&CreateHuman {
        email: "owner@example.com".into(),
        display_name: "Owner".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    a.register_agent(&RegisterAgent {
        name: "bot".into(),
        owner: "owner@example.com".into(),
        classifications: Some(vec!["public".into()]),
        ..Default::default()
    })
    .await
    .unwrap();
    if quotas {
        for (name, scope, subject) in [
            ("own", QuotaScope::Agent, Some("bot")),
            ("owner", QuotaScope::Owner, Some("owner@example.com")),
            ("tenant", QuotaScope::Tenant, None),
        ] {
            a.put_quota(&PutQuota {
                name: name.into(),
                scope: Some(scope),
                subject: subject.map(String::from),
                metric: "requests".into(),
                window: "day".into(),
                limit: 1e9,
                ..Default::default()
            })
            .await
            .unwrap();
        }
    }
}

/// Closed-loop decisions per second with 16 clients.
async fn throughput(backend: Backend, quotas: bool, total: usize) -> f64 {
    let s = Arc::new(TestServer::start(backend).await);
    setup(&s, quotas).await;
    let url = format!("{}/v1/decisions", s.server.url());
    let http = reqwest::Client::new();
    let body = json!({"principal": {"type": "agent", "id": "bot"}, "action": "read", "resource": {"type": "repo", "id": "r"}}).to_string();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let (http, url, body) = (http.clone(), url.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            for _ in (w..total).step_by(16) {
                let r = http
                    .post(&url)
                    .bearer_auth(steward_testkit::ADMIN_TOKEN)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success());
                let v: serde_json::Value = r.json().await.unwrap();
                assert_eq!(v["decision"], "allow");
                assert_eq!(v.get("quota").is_some(), quotas);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    Arc::try_unwrap(s)
        .ok()
        .expect("no other handles")
        .stop()
        .await;
    rate
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(if full { 5 } else { 1 }))
        .warm_up_time(Duration::from_millis(500))
        .configure_from_args();
    criterion_benches(&rt, &mut c);
    c.final_summary();
    let total = if full { 10_000 } else { 100 };
    rt.block_on(async {
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let none = throughput(backend, false, total).await;
            let three = throughput(backend, true, total).await;
            println!(
                "{backend:?}: POST /v1/decisions, 16 clients, {total} decisions: no quota {none:.0}/s, three quotas {three:.0}/s, ratio {:.2}",
                three / none
            );
        }
    });
}
