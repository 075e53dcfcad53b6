//! Lifecycle: suspend and resume, keys refused, cascading decommission,
//! spawn limits, orphaning and expiry.

use chrono::{Duration, Utc};
use steward_testkit::{Backend, TestServer, on_both_backends};
use steward_types::*;

use crate::support::*;

on_both_backends!(
    suspended_agent_key_is_refused,
    decommission_cascades_and_revokes,
    spawn_rules,
    leaver_orphans_agents,
    expiry_is_enforced
);

async fn suspended_agent_key_is_refused(b: Backend) {
    let s = TestServer::start(b).await;
    human(&s.admin, "alice@example.com").await;
    let agent = low_risk_agent(&s.admin, "bot", "alice@example.com").await;
    let key = s
        .admin
        .create_key(
            "bot",
            &CreateKey {
                name: "prod".into(),
                expires_at: None,
            },
        )
        .await
        .unwrap();
    assert!(key.secret.starts_with("stw_"));
    let as_agent = s.client(&key.secret);
    match as_agent.whoami().await.unwrap() {
        WhoAmI::Agent {
            agent_id, key_id, ..
        } => assert_eq!((agent_id, key_id), (agent.id.clone(), key.key.id.clone())),
        other => panic!("{other:?}"),
    }
    // Again: on SQLite the key is now held in memory, until the next change.
    as_agent.whoami().await.unwrap();
    // Listing shows metadata only, with last use recorded.
    let keys = s
        .admin
        .list_keys("bot", &PageQuery::default())
        .await
        .unwrap()
        .items;
    assert_eq!(keys.len(), 1);
    assert!(keys[0].last_used_at.is_some());
    assert!(key.secret.starts_with(&keys[0].prefix));
    assert!(
        s.admin
            .get_agent("bot")
            .await
            .unwrap()
            .last_seen_at
            .is_some()
    );

    // Suspension needs a reason, and then the key stops working at once.
    assert_eq!(
        code(s.admin.suspend_agent("bot", None).await),
        ErrorCode::InvalidRequest
    );
    let suspended = s
        .admin
        .suspend_agent("bot", Some("investigating spend"))
        .await
        .unwrap();
    assert_eq!(suspended.agent.state, AgentState::Suspended);
    assert_eq!(
        suspended.agent.state_reason.as_deref(),
        Some("investigating spend")
    );
    let refused = as_agent.whoami().await.unwrap_err();
    assert_eq!(
        (refused.status(), refused.code()),
        (Some(401), Some(ErrorCode::AgentNotActive))
    );
    // Invalid transitions are 409 with a stable code.
    assert_eq!(
        code(s.admin.suspend_agent("bot", Some("again")).await),
        ErrorCode::InvalidTransition
    );
    s.admin.resume_agent("bot", Some("resolved")).await.unwrap();
    as_agent.whoami().await.unwrap();
    // A revoked key never works again.
    s.admin.revoke_key("bot", &key.key.id).await.unwrap();
    assert_eq!(
        as_agent.whoami().await.unwrap_err().code(),
        Some(ErrorCode::Unauthenticated)
    );
    assert_eq!(
        code(s.admin.revoke_key("bot", &key.key.id).await),
        ErrorCode::InvalidTransition
    );
    // The log holds who did what, with before and after.
    let log = all_audit(&s.admin).await;
    let suspend = log.iter().find(|e| e.action == "agent.suspend").unwrap();
    assert_eq!(suspend.actor.id, "tok_bootstrap");
    assert_eq!(suspend.before.as_ref().unwrap()["state"], "active");
    assert_eq!(suspend.after.as_ref().unwrap()["state"], "suspended");
    assert_eq!(suspend.reason.as_deref(), Some("investigating spend"));
    assert!(suspend.request_id.as_deref().is_some_and(|r| !r.is_empty()));
    assert_eq!(
        suspend.source.as_deref(),
        Some("127.0.0.1"),
        "the source address is recorded"
    );
    s.stop().await;
}

async fn decommission_cascades_and_revokes(b: Backend) {
    let s = TestServer::start(b).await;
    human(&s.admin, "alice@example.com").await;
    low_risk_agent(&s.admin, "root", "alice@example.com").await;
    let child = s
        .admin
        .register_agent(&RegisterAgent {
            name: "child".into(),
            owner: "alice@example.com".into(),
            parent: Some("root".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let grandchild = s
        .admin
        .register_agent(&RegisterAgent {
            name: "grandchild".into(),
            owner: "alice@example.com".into(),
            parent: Some("child".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((child.depth, grandchild.depth), (1, 2));
    let root_key = s
        .admin
        .create_key("root", &CreateKey::default())
        .await
        .unwrap();
    let grandchild_key = s
        .admin
        .create_key("grandchild", &CreateKey::default())
        .await
        .unwrap();
    s.client(&grandchild_key.secret).whoami().await.unwrap();

    let result = s
        .admin
        .decommission_agent("root", Some("project ended"))
        .await
        .unwrap();
    assert_eq!(result.agent.state, AgentState::Decommissioned);
    let mut cascaded = result.cascaded.clone();
    cascaded.sort();
    let mut expected = vec![child.id.clone(), grandchild.id.clone()];
    expected.sort();
    assert_eq!(cascaded, expected);
    assert_eq!(result.keys_revoked, 2);
    for name in ["root", "child", "grandchild"] {
        assert_eq!(
            s.admin.get_agent(name).await.unwrap().state,
            AgentState::Decommissioned
        );
    }
    for secret in [&root_key.secret, &grandchild_key.secret] {
        assert_eq!(
            s.client(secret).whoami().await.unwrap_err().code(),
            Some(ErrorCode::Unauthenticated)
        );
    }
    let err = s.admin.resume_agent("root", None).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidTransition));
    assert!(err.to_string().contains("final"), "{err}");
    assert_eq!(
        code(s.admin.create_key("root", &CreateKey::default()).await),
        ErrorCode::InvalidTransition
    );
    s.stop().await;
}

async fn spawn_rules(b: Backend) {
    let s = TestServer::start(b).await;
    human(&s.admin, "alice@example.com").await;
    let reg = |name: &str, parent: &str| RegisterAgent {
        name: name.into(),
        owner: "alice@example.com".into(),
        parent: Some(parent.into()),
        persona: Some("Data Pipeline Agent".into()),
        ..Default::default()
    };
    s.admin
        .register_agent(&RegisterAgent {
            name: "etl".into(),
            owner: "alice@example.com".into(),
            persona: Some("Data Pipeline Agent".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    // A pending parent cannot spawn.
    assert_eq!(
        code(s.admin.register_agent(&reg("early", "etl")).await),
        ErrorCode::ParentNotActive
    );
    approve_registration(&s.admin, "etl").await.unwrap();
    for i in 0..5 {
        s.admin
            .register_agent(&reg(&format!("worker-{i}"), "etl"))
            .await
            .unwrap();
    }
    let err = s
        .admin
        .register_agent(&reg("worker-5", "etl"))
        .await
        .unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(409), Some(ErrorCode::SpawnLimitExceeded))
    );
    assert!(err.to_string().contains("max_children"), "{err}");
    // A decommissioned child frees its place.
    s.admin.decommission_agent("worker-4", None).await.unwrap();
    // A child may not hold a role or classification its parent lacks.
    let mut wider = reg("wider", "etl");
    wider.roles = Some(vec!["refund-issuer".into()]);
    assert_eq!(
        code(s.admin.register_agent(&wider).await),
        ErrorCode::ExceedsParent
    );
    let mut pii = reg("pii", "etl");
    pii.classifications = Some(vec!["pii".into()]);
    let err = s.admin.register_agent(&pii).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ExceedsParent));
    assert!(err.to_string().contains("pii"), "{err}");
    // Nor may the parent come to expire before its children, which would
    // outlive it: they have no expiry.
    let err = s
        .admin
        .update_agent(
            "etl",
            &UpdateAgent {
                expires_at: Some(Utc::now() + Duration::days(1)),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ExceedsParent));
    assert!(err.to_string().contains("worker-"), "{err}");
    assert_eq!(s.admin.get_agent("etl").await.unwrap().expires_at, None);
    // Depth: the persona allows two levels below the root.
    approve_registration(&s.admin, "worker-0").await.unwrap();
    s.admin
        .register_agent(&reg("sub", "worker-0"))
        .await
        .unwrap();
    approve_registration(&s.admin, "sub").await.unwrap();
    let err = s
        .admin
        .register_agent(&reg("subsub", "sub"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::SpawnDepthExceeded));
    assert!(err.to_string().contains("max_depth"), "{err}");
    // The persona's child_agents quota (5) counts every live agent below etl,
    // grandchildren included: 4 workers and `sub` leave no room.
    assert_eq!(
        code(s.admin.register_agent(&reg("waiting", "etl")).await),
        ErrorCode::QuotaExceeded
    );
    s.admin.decommission_agent("worker-3", None).await.unwrap();
    // A suspended parent cannot spawn, and a pending child cannot activate under it.
    s.admin
        .register_agent(&reg("waiting", "etl"))
        .await
        .unwrap();
    s.admin
        .suspend_agent("etl", Some("maintenance"))
        .await
        .unwrap();
    assert_eq!(
        code(s.admin.register_agent(&reg("late", "etl")).await),
        ErrorCode::ParentNotActive
    );
    assert_eq!(
        code(approve_registration(&s.admin, "waiting").await),
        ErrorCode::ParentNotActive
    );
    s.stop().await;
}

async fn leaver_orphans_agents(b: Backend) {
    let s = TestServer::start(b).await;
    human(&s.admin, "alice@example.com").await;
    human(&s.admin, "bob@example.com").await;
    let a = low_risk_agent(&s.admin, "a", "alice@example.com").await;
    let gone = s
        .admin
        .deactivate_human(
            "alice@example.com",
            &TransitionRequest {
                reason: Some("left the company".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(gone.human.status, HumanStatus::Deactivated);
    assert_eq!(gone.orphaned_agents, vec![a.id.clone()]);
    let orphans = s
        .admin
        .list_agents(&AgentFilter {
            orphaned: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        orphans
            .items
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>(),
        ["a"]
    );
    // A deactivated human cannot own a new agent.
    let err = s
        .admin
        .register_agent(&RegisterAgent {
            name: "b".into(),
            owner: "alice@example.com".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(422), Some(ErrorCode::OwnerInactive))
    );
    // An orphan cannot be resumed until reassigned.
    s.admin
        .suspend_agent("a", Some("owner left"))
        .await
        .unwrap();
    assert_eq!(
        code(s.admin.resume_agent("a", None).await),
        ErrorCode::OwnerInactive
    );
    let reassigned = s
        .admin
        .update_agent(
            "a",
            &UpdateAgent {
                owner: Some("bob@example.com".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!reassigned.orphaned);
    s.admin.resume_agent("a", None).await.unwrap();
    s.stop().await;
}

async fn expiry_is_enforced(b: Backend) {
    let s = TestServer::start(b).await;
    human(&s.admin, "alice@example.com").await;
    let soon = Utc::now() + Duration::hours(1);
    let mut req = RegisterAgent {
        name: "temp".into(),
        owner: "alice@example.com".into(),
        expires_at: Some(soon),
        ..Default::default()
    };
    req.classifications = Some(vec!["public".into()]);
    // Kept, answered and recorded to the millisecond, as the store keeps
    // it: what registration returns is what every later read gives.
    let fine = soon + Duration::nanoseconds(123_456);
    let registered = s
        .admin
        .register_agent(&RegisterAgent {
            expires_at: Some(fine),
            ..req.clone()
        })
        .await
        .unwrap();
    let read = s.admin.get_agent("temp").await.unwrap();
    assert_eq!(registered.expires_at, read.expires_at);
    let recorded = all_audit(&s.admin)
        .await
        .into_iter()
        .find(|e| e.action == "agent.register" && e.resource_id == read.id)
        .unwrap();
    let recorded: chrono::DateTime<Utc> =
        serde_json::from_value(recorded.after.unwrap()["expires_at"].clone()).unwrap();
    assert_eq!(Some(recorded), read.expires_at);
    assert_eq!(
        read.expires_at.unwrap().timestamp_millis(),
        fine.timestamp_millis()
    );
    req.name = "temp2".into();
    s.admin.register_agent(&req).await.unwrap();
    let key = s
        .admin
        .create_key("temp2", &CreateKey::default())
        .await
        .unwrap();
    // Using a key after the agent's expiry time refuses it and marks the agent
    // expired at once (the clock is moved by rewriting the stored expiry).
    req.name = "temp3".into();
    s.admin.register_agent(&req).await.unwrap();
    let key3 = s
        .admin
        .create_key("temp3", &CreateKey::default())
        .await
        .unwrap();
    s.client(&key3.secret).whoami().await.unwrap();
    s.server
        .store()
        .execute_raw("UPDATE agents SET expires_at = 1000 WHERE name = 'temp3'")
        .await
        .unwrap();
    assert_eq!(
        s.client(&key3.secret).whoami().await.unwrap_err().code(),
        Some(ErrorCode::AgentNotActive)
    );
    assert_eq!(
        s.admin.get_agent("temp3").await.unwrap().state,
        AgentState::Expired
    );
    // The sweep, with its clock two hours ahead, expires both.
    let expired = steward_server::expire_due(s.server.store(), soon + Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(expired.len(), 2);
    assert_eq!(
        s.admin.get_agent("temp").await.unwrap().state,
        AgentState::Expired
    );
    assert_eq!(
        s.client(&key.secret).whoami().await.unwrap_err().code(),
        Some(ErrorCode::AgentNotActive)
    );
    // Expiry in the past is refused at registration.
    req.name = "past".into();
    req.expires_at = Some(Utc::now() - Duration::seconds(1));
    assert_eq!(
        code(s.admin.register_agent(&req).await),
        ErrorCode::InvalidRequest
    );
    s.stop().await;
}
