//! Two nodes on one PostgreSQL database: identities are read fresh by every
//! node, policy changes reach the other node's engine, and both append to
//! one gapless, verifiable audit log.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_inventory_policies_and_one_log() {
    let s = TestServer::start(Backend::Postgres).await;
    let a = &s.admin;
    a.put_resource_type(&PutResourceType {
        name: "repo".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    a.put_action(&PutAction {
        name: "read".into(),
        resource_types: vec!["repo".into()],
        ..Default::default()
    })
    .await
    .unwrap();
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
