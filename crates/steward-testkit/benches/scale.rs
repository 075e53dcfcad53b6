//! How decision latency grows with the inventory and the policy set: a tenant
//! grown to 1k, 10k and 100k agents and 10k policies, sequential decisions
//! over HTTP for random agents (SQLite, audited), a recertification
//! campaign over all of them started and closed, then their owner
//! deactivated and reactivated, and a tree of 1 111 agents decommissioned.
//!
//! cargo bench -p steward-testkit --bench scale
//! (STEWARD_BENCH_MAX_AGENTS caps the largest step, default 100000.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use rand::Rng;
use steward_core::lifecycle::Transition;
use steward_core::{ChangeContext, InventoryRules};
use steward_testkit::{Backend, TestServer};
use steward_types::*;

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e6
}

async fn decide_once(s: &TestServer, agents: usize) -> Duration {
    let i = rand::thread_rng().gen_range(0..agents);
    let req = DecisionRequest {
        principal: Some(PrincipalRef {
            principal_type: "agent".into(),
            id: format!("agent-{i}"),
        }),
        action: "read".into(),
        resource: ResourceRef {
            resource_type: "repo".into(),
            id: "steward".into(),
            attributes: Default::default(),
        },
        ..Default::default()
    };
    let t = Instant::now();
    let d = s.admin.decide(&req).await.unwrap();
    let took = t.elapsed();
    assert_eq!(d.decision, Decision::Allow);
    took
}

async fn measure(s: &TestServer, agents: usize, samples: usize) -> (f64, f64) {
    let mut lat = Vec::with_capacity(samples);
    for _ in 0..samples {
        lat.push(decide_once(s, agents).await);
    }
    lat.sort();
    (pct(&lat, 0.5), pct(&lat, 0.99))
}

/// One policy of the large set changed over HTTP while decisions run one
/// after another: how long the change takes, and how long the decisions
/// made meanwhile wait (a change must not hold the store's writer while
/// the whole set compiles).
async fn during_a_policy_change(s: &TestServer, agents: usize, round: usize) {
    let done = std::sync::atomic::AtomicBool::new(false);
    let change = async {
        let t = Instant::now();
        s.admin
            .put_policy(&PutPolicy {
                id: "p0".into(),
                description: format!("changed {round}"),
                owner: String::new(),
                text: format!(r#"permit(principal in Role::"role-0", action == Action::"act{}", resource is repo);"#, round % 50),
            })
            .await
            .unwrap();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        t.elapsed()
    };
    let decisions = async {
        let mut lat = Vec::new();
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            lat.push(decide_once(s, agents).await);
        }
        lat.sort();
        lat
    };
    let (took, lat) = tokio::join!(change, decisions);
    println!(
        "one policy of the set changed in {:.0} ms; {} decisions meanwhile, p99 {:.1} ms, the slowest {:.1} ms",
        took.as_secs_f64() * 1e3,
        lat.len(),
        if lat.is_empty() {
            0.0
        } else {
            pct(&lat, 0.99) / 1e3
        },
        lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e3)
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let max: usize = if full {
        std::env::var("STEWARD_BENCH_MAX_AGENTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000)
    } else {
        200
    };
    let policies = if full { 10_000 } else { 20 };
    // Store errors say why on stderr.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = TestServer::start_with(Backend::Sqlite, |c| {
            // Ten thousand policies in one apply are a few megabytes.
            c.max_body_bytes = 32 * 1024 * 1024;
            // Growing the inventory is not what is measured: relax fsync.
            if let Some(url) = c.database_url.as_mut() {
                url.push_str("?synchronous=normal");
            }
        })
        .await;
        let store = s.server.store();
        let ctx = ChangeContext::system("default", "bench", chrono::Utc::now());
        let mut req = ApplyRequest {
            resource_types: vec![PutResourceType { name: "repo".into(), description: String::new(), attributes: Default::default() }],
            actions: (0..50)
                .map(|i| format!("act{i}"))
                .chain(["read".to_string()])
                .map(|name| PutAction { name, description: String::new(), resource_types: vec!["repo".into()], context: Default::default() })
                .collect(),
            ..Default::default()
        };
        req.policies.push(PutPolicy {
            id: "readers".into(),
            description: String::new(),
            owner: String::new(),
            text: r#"permit(principal in Role::"repo-reader", action == Action::"read", resource is repo);"#.into(),
        });
        for i in 0..policies {
            req.policies.push(PutPolicy {
                id: format!("p{i}"),
                description: String::new(),
                owner: String::new(),
                text: format!(r#"permit(principal in Role::"role-{i}", action == Action::"act{}", resource is repo);"#, i % 50),
            });
        }
        let t = Instant::now();
        s.admin.apply(&req).await.unwrap();
        println!("{} policies applied and compiled in {:.1} s", policies + 1, t.elapsed().as_secs_f64());
        store.create_human(&ctx, CreateHuman { email: "owner@example.com".into(), display_name: "Owner".into(), ..Default::default() }).await.unwrap();
        let rules = InventoryRules::default();
        let mut have = 0usize;
        let mut step = 1_000usize;
        while step <= max {
            let t = Instant::now();
            for i in have..step {
                store
                    .register_agent(&ctx, &rules, RegisterAgent {
                        name: format!("agent-{i}"),
                        owner: "owner@example.com".into(),
                        roles: Some(vec!["repo-reader".into()]),
                        classifications: Some(vec!["public".into()]),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
            let grew = t.elapsed();
            have = step;
            let (p50, p99) = measure(&s, have, if full { 2_000 } else { 50 }).await;
            println!("{have} agents, {policies} policies: decision p50 {p50:.0} µs, p99 {p99:.0} µs (grew in {:.1} s)", grew.as_secs_f64());
            during_a_policy_change(&s, have, step).await;
            // A recertification over every agent: how long its start and
            // its close hold the store's one writer.
            let t = Instant::now();
            let campaign = store
                .start_campaign(&ctx, &StartCampaign { name: format!("scale-{have}"), on_overdue: Some(OnOverdue::Report), ..Default::default() })
                .await
                .unwrap();
            let started = t.elapsed();
            assert_eq!(campaign.counts.total, have as u64);
            let t = Instant::now();
            let closed = store.close_due_campaigns(chrono::Utc::now() + chrono::Duration::days(100)).await.unwrap();
            assert_eq!(closed.first().map(|c| c.counts.overdue), Some(have as u64));
            println!(
                "{have} agents: a recertification of all of them started in {:.0} ms, closed (report) in {:.0} ms",
                started.as_secs_f64() * 1e3,
                t.elapsed().as_secs_f64() * 1e3
            );
            step *= 10;
        }

        // A leaver who owns every agent: the deactivation orphans each
        // one with its record, the reactivation takes it back.
        let t = Instant::now();
        let gone = store.deactivate_human(&ctx, "owner@example.com", Some("left".into())).await.unwrap();
        let deactivated = t.elapsed();
        assert_eq!(gone.orphaned_agents.len(), have);
        let t = Instant::now();
        let back = store.reactivate_human(&ctx, "owner@example.com", Some("back".into())).await.unwrap();
        assert_eq!(back.orphaned_agents.len(), have);
        println!(
            "{have} agents of one owner: deactivating the owner took {:.0} ms, reactivating {:.0} ms",
            deactivated.as_secs_f64() * 1e3,
            t.elapsed().as_secs_f64() * 1e3
        );

        // A full tree under the default spawn limits (10 children a
        // parent, 3 levels: 1 110 descendants), decommissioned at its root.
        let mut level = vec!["tree".to_string()];
        store.register_agent(&ctx, &rules, RegisterAgent { name: "tree".into(), owner: "owner@example.com".into(), ..Default::default() }).await.unwrap();
        for _ in 0..3 {
            let mut next = Vec::new();
            for parent in &level {
                for c in 0..10 {
                    let name = format!("{parent}-{c}");
                    store.register_agent(&ctx, &rules, RegisterAgent { name: name.clone(), owner: "owner@example.com".into(), parent: Some(parent.clone()), ..Default::default() }).await.unwrap();
                    next.push(name);
                }
            }
            level = next;
        }
        let t = Instant::now();
        let r = store.transition_agent(&ctx, "tree", Transition::Decommission, Some("done".into())).await.unwrap();
        assert_eq!(r.cascaded.len(), 1_110);
        println!(
            "a tree of 1 111 agents (among {have}) decommissioned in {:.0} ms",
            t.elapsed().as_secs_f64() * 1e3
        );

        // A recertification that suspends, closed with every agent still
        // pending: each one suspended, with its record.
        let campaign = store
            .start_campaign(&ctx, &StartCampaign { name: "scale-suspend".into(), on_overdue: Some(OnOverdue::Suspend), ..Default::default() })
            .await
            .unwrap();
        let t = Instant::now();
        let closed = store.close_due_campaigns(chrono::Utc::now() + chrono::Duration::days(100)).await.unwrap();
        assert_eq!(closed.first().map(|c| c.counts.overdue), Some(campaign.counts.total));
        println!(
            "a recertification that suspends, closed with all {} agents overdue, in {:.0} ms",
            campaign.counts.total,
            t.elapsed().as_secs_f64() * 1e3
        );
    });
}
