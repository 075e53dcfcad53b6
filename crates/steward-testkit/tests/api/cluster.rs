//! Two nodes on one PostgreSQL database: identities are read fresh by every
//! node, policy changes reach the other node's engine, both append to one
//! gapless, verifiable audit log, and concurrent changes do not deadlock.

use std::time::{Duration, Instant};

use steward_client::Client;
use steward_testkit::{Backend, TestServer};
use steward_types::*;

use crate::support::*;

fn ask() -> DecisionRequest {
    DecisionRequest {
        principal: Some(PrincipalRef {
            principal_type: "agent".into(),
            id: "bot".into(),
        }),
        action: "read".into(),
        resource: ResourceRef {
            resource_type: "repo".into(),
            id: "r".into(),
            attributes: Default::default(),
        },
        ..Default::default()
    }
}

async fn verdict(c: &Client) -> Decision {
    c.decide(&ask()).await.unwrap().decision
}

/// Wait (bounded) until `node` decides `want`; the engine refresh runs every second.
async fn until(node: &Client, want: Decision) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while verdict(node).await != want {
        assert!(
            Instant::now() < deadline,
            "the other node never saw the change"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Resource type `repo` and action `read` on it.
async fn declare_repo_reads(admin: &Client) {
    admin
        .put_resource_type(&PutResourceType {
            name: "repo".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .put_action(&PutAction {
            name: "read".into(),
            resource_types: vec!["repo".into()],
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_inventory_policies_and_one_log() {
    let s = TestServer::start(Backend::Postgres).await;
    let a = &s.admin;
    declare_repo_reads(a).await;
    human(a, "o@example.com").await;
    a.register_agent(&RegisterAgent {
        name: "bot".into(),
        owner: "o@example.com".into(),
        roles: Some(vec!["repo-reader".into()]),
        classifications: Some(vec!["public".into()]),
        ..Default::default()
    })
    .await
    .unwrap();
    let (node_b, b) = s.second_node().await;
    // No policy yet: both deny.
    assert_eq!(verdict(a).await, Decision::Deny);
    assert_eq!(verdict(&b).await, Decision::Deny);
    // A policy written on node A reaches node B's engine.
    let readers = PutPolicy {
        id: "readers".into(),
        text: r#"permit(principal in Role::"repo-reader", action == Action::"read", resource is repo);"#.into(),
        ..Default::default()
    };
    a.put_policy(&readers).await.unwrap();
    assert_eq!(verdict(a).await, Decision::Allow);
    until(&b, Decision::Allow).await;
    // A suspension on node B applies to node A's very next decision.
    b.suspend_agent("bot", Some("incident")).await.unwrap();
    assert_eq!(verdict(a).await, Decision::Deny);
    b.resume_agent("bot", None).await.unwrap();
    assert_eq!(verdict(a).await, Decision::Allow);
    // Both nodes appended to one log: gapless, and it verifies from either.
    for _ in 0..20 {
        verdict(a).await;
        verdict(&b).await;
    }
    let entries = all_audit(a).await;
    let seqs: Vec<i64> = entries.iter().map(|e| e.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "gaps in {seqs:?}"
    );
    assert!(a.audit_verify().await.unwrap().ok);
    let report = b.audit_verify().await.unwrap();
    assert!(report.ok, "{report:?}");
    node_b.shutdown().await.unwrap();
    s.stop().await;
}

/// Policy changes and role and persona creations (alone or in an apply),
/// run together on two nodes, all succeed: each takes the tenant's policy
/// epoch lock before the audit log's head, so none waits for the other's
/// lock while holding the one it wants (PostgreSQL would end one of them
/// with a deadlock error, a 500).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_policy_role_and_persona_changes_do_not_deadlock() {
    let s = TestServer::start(Backend::Postgres).await;
    let a = &s.admin;
    declare_repo_reads(a).await;
    let (node_b, b) = s.second_node().await;
    let policy = |id: String, role: &str| PutPolicy {
        id,
        text: format!(
            r#"permit(principal in Role::"{role}", action == Action::"read", resource is repo);"#
        ),
        ..Default::default()
    };
    for round in 0..6 {
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..3 {
            let (node, role) = (a.clone(), format!("role-{round}-{i}"));
            calls.spawn(async move {
                let req = CreateRole {
                    name: role.clone(),
                    ..Default::default()
                };
                node.create_role(&req)
                    .await
                    .map(drop)
                    .map_err(|e| format!("{role}: {e}"))
            });
            let (node, persona) = (a.clone(), format!("persona-{round}-{i}"));
            calls.spawn(async move {
                let req = CreatePersona {
                    name: persona.clone(),
                    ..Default::default()
                };
                node.create_persona(&req)
                    .await
                    .map(drop)
                    .map_err(|e| format!("{persona}: {e}"))
            });
            let (node, p) = (b.clone(), policy(format!("p-{round}-{i}"), "role-0-0"));
            calls.spawn(async move {
                let id = p.id.clone();
                node.put_policy(&p)
                    .await
                    .map(drop)
                    .map_err(|e| format!("{id}: {e}"))
            });
        }
        // A rule the directory declares, replaced through the API meanwhile.
        let rule = |limit: f64| PutQuota {
            name: "calls".into(),
            metric: "requests".into(),
            window: "day".into(),
            limit,
            ..Default::default()
        };
        let (node, replaced) = (a.clone(), rule(100.0 + f64::from(round)));
        calls.spawn(async move {
            node.put_quota(&replaced)
                .await
                .map(drop)
                .map_err(|e| format!("quota: {e}"))
        });
        let (node, role) = (b.clone(), format!("applied-{round}"));
        let req = ApplyRequest {
            roles: vec![CreateRole {
                name: role.clone(),
                ..Default::default()
            }],
            policies: vec![policy(format!("applied-{round}"), &role)],
            quotas: vec![rule(10.0)],
            ..Default::default()
        };
        calls.spawn(async move {
            node.apply(&req)
                .await
                .map(drop)
                .map_err(|e| format!("apply {role}: {e}"))
        });
        let failed: Vec<String> = calls
            .join_all()
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect();
        assert!(failed.is_empty(), "round {round}: {failed:#?}");
    }
    // Every change is in.
    let query = PageQuery {
        limit: Some(500),
        ..Default::default()
    };
    let roles = a.list_roles(&query).await.unwrap().items;
    let ours = roles
        .iter()
        .filter(|r| r.name.starts_with("role-") || r.name.starts_with("applied-"))
        .count();
    assert_eq!(ours, 6 * 4);
    let policies = b
        .list_policies(&PolicyQuery {
            limit: Some(500),
            ..Default::default()
        })
        .await
        .unwrap()
        .items;
    assert_eq!(policies.len(), 6 * 4);
    node_b.shutdown().await.unwrap();
    s.stop().await;
}
