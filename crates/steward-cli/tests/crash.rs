//! Acknowledged audit entries survive `kill -9`: a client drives decisions
//! while the server is killed; after a restart on the same store, every
//! decision the client received an answer for has its audit entry, and the
//! log verifies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use steward_client::Client;
use steward_types::*;
use support::serve_in;

const TOKEN: &str = "stwt_crash-test-admin-token-0123456789";

async fn setup(admin: &Client) {
    admin
        .put_resource_type(&PutResourceType {
            name: "repo".into(),
            description: String::new(),
            attributes: Default::default(),
        })
        .await
        .unwrap();
    admin
        .put_action(&PutAction {
            name: "read".into(),
            description: String::new(),
            resource_types: vec!["repo".into()],
            context: Default::default(),
        })
        .await
        .unwrap();
    admin
        .put_policy(&PutPolicy { id: "readers".into(), description: String::new(), owner: String::new(), text: r#"permit(principal in Role::"repo-reader", action == Action::"read", resource is repo);"#.into() })
        .await
        .unwrap();
    admin
        .create_human(&CreateHuman {
            email: "o@example.com".into(),
            display_name: "O".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .register_agent(&RegisterAgent {
            name: "bot".into(),
            owner: "o@example.com".into(),
            roles: Some(vec!["repo-reader".into()]),
            classifications: Some(vec!["public".into()]),
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_decisions_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = serve_in(&data, Some(TOKEN));
    let admin = Client::new(&server.url, Some(TOKEN.into()));
    setup(&admin).await;

    // Eight clients decide as fast as they can, remembering every answer.
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::new()));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (admin, acknowledged, answered) =
            (admin.clone(), acknowledged.clone(), answered.clone());
        clients.push(tokio::spawn(async move {
            let request = DecisionRequest {
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
            };
            // Until the server dies under us.
            while let Ok(answer) = admin.decide(&request).await {
                acknowledged.lock().unwrap().push(answer.decision_id);
                answered.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    // Kill -9 once a few hundred decisions were answered.
    while answered.load(Ordering::SeqCst) < 300 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    for c in clients {
        c.await.unwrap();
    }
    let acknowledged: Vec<String> = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= 300);
    drop(server);

    // Restart on the same store.
    let server = serve_in(&data, Some(TOKEN));
    let admin = Client::new(&server.url, Some(TOKEN.into()));
    let mut logged = HashSet::new();
    let mut cursor = None;
    loop {
        let page = admin
            .list_audit(&AuditFilter {
                cursor,
                limit: Some(500),
                ..Default::default()
            })
            .await
            .unwrap();
        for e in &page.items {
            if let Some(id) = e.after.as_ref().and_then(|a| a["decision_id"].as_str()) {
                logged.insert(id.to_string());
            }
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let missing: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !logged.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged decisions have no audit entry, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    let report = admin.audit_verify().await.unwrap();
    assert!(report.ok, "{report:?}");
    println!(
        "kill -9: {} acknowledged decisions, {} logged, log of {} entries verifies",
        acknowledged.len(),
        logged.len(),
        report.entries_checked
    );
}
