//! Lifecycle: suspend and resume, keys refused, cascading decommission,
//! spawn limits (every agent above a child bounds it), narrowing that
//! reaches every agent below, orphaning and expiry.

use chrono::{Duration, Utc};
use steward_testkit::{Backend, TestServer, on_both_backends};
use steward_types::*;

use crate::support::*;

on_both_backends!(
    suspended_agent_key_is_refused,
    decommission_cascades_and_revokes,
    spawn_rules,
    spawn_limits_hold_along_the_whole_chain,
    narrowing_an_agent_narrows_every_agent_below,
    an_approved_change_narrows_every_agent_below,
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

/// Each agent above a child bounds it, not only its parent: the tightest
/// `max_children` and `max_depth` along the chain, every one's roles,
/// classifications and expiry, and every one being active; at spawn and at
/// every later change of the child.
async fn spawn_limits_hold_along_the_whole_chain(b: Backend) {
    let s = TestServer::start(b).await;
    let a = &s.admin;
    human(a, "alice@example.com").await;
    for role in ["reader", "extra"] {
        a.create_role(&CreateRole {
            name: role.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    for (name, max_children, max_depth) in [("Shallow", 1, 2), ("Wide", 10, 5)] {
        a.create_persona(&CreatePersona {
            name: name.into(),
            max_children: Some(max_children),
            max_depth: Some(max_depth),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let root_expiry = Utc::now() + Duration::days(10);
    let reg = |name: &str, parent: Option<&str>, persona: Option<&str>| RegisterAgent {
        name: name.into(),
        owner: "alice@example.com".into(),
        parent: parent.map(Into::into),
        persona: persona.map(Into::into),
        roles: Some(vec!["reader".into()]),
        classifications: Some(vec!["public".into()]),
        expires_at: Some(root_expiry),
        ..Default::default()
    };
    a.register_agent(&reg("root", None, Some("Shallow")))
        .await
        .unwrap();
    a.register_agent(&reg("mid", Some("root"), Some("Wide")))
        .await
        .unwrap();
    a.register_agent(&reg("leaf-1", Some("mid"), None))
        .await
        .unwrap();
    // `mid`'s persona allows ten children, the root's one.
    let err = a
        .register_agent(&reg("leaf-2", Some("mid"), None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::SpawnLimitExceeded), "{err}");
    assert!(err.to_string().contains("'root'"), "{err}");
    // `leaf-1` has no persona (the defaults allow depth 3); the root's
    // persona stops its tree at depth 2.
    let err = a
        .register_agent(&reg("deep", Some("leaf-1"), None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::SpawnDepthExceeded), "{err}");
    assert!(err.to_string().contains("'root'"), "{err}");
    a.decommission_agent("leaf-1", None).await.unwrap();
    a.register_agent(&reg("leaf-3", Some("mid"), None))
        .await
        .unwrap();

    // An inventory where `mid` holds what the root does not, and outlives
    // it (as one written before the chain was checked could): what `mid`
    // holds beyond the root is still refused to a child of `mid`.
    s.server
        .store()
        .execute_raw(
            "UPDATE agents SET roles = '[\"reader\",\"extra\"]', \
             classifications = '[\"public\",\"internal\"]', expires_at = NULL WHERE name = 'mid'",
        )
        .await
        .unwrap();
    a.decommission_agent("leaf-3", None).await.unwrap();
    let mut extra = reg("extra", Some("mid"), None);
    extra.roles = Some(vec!["extra".into()]);
    let mut internal = reg("internal", Some("mid"), None);
    internal.classifications = Some(vec!["internal".into()]);
    let mut forever = reg("forever", Some("mid"), None);
    forever.expires_at = None;
    for req in [extra, internal, forever] {
        let err = a.register_agent(&req).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::ExceedsParent), "{err}");
        assert!(err.to_string().contains("'root'"), "{err}");
    }
    // So are later changes of a child.
    a.register_agent(&reg("leaf-4", Some("mid"), None))
        .await
        .unwrap();
    for change in [
        UpdateAgent {
            roles: Some(vec!["reader".into(), "extra".into()]),
            ..Default::default()
        },
        UpdateAgent {
            expires_at: Some(root_expiry + Duration::days(1)),
            ..Default::default()
        },
    ] {
        let err = a.update_agent("leaf-4", &change).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::ExceedsParent), "{err}");
        assert!(err.to_string().contains("'root'"), "{err}");
    }
    let leaf = a.get_agent("leaf-4").await.unwrap();
    assert_eq!(
        (leaf.roles, leaf.expires_at.map(|t| t.timestamp_millis())),
        (
            vec!["reader".to_string()],
            Some(root_expiry.timestamp_millis())
        )
    );
    // A suspended root stops its tree: no spawn below it, and nothing
    // below it comes back while it is suspended.
    a.suspend_agent("leaf-4", Some("paused")).await.unwrap();
    a.suspend_agent("root", Some("paused")).await.unwrap();
    assert_eq!(a.get_agent("mid").await.unwrap().state, AgentState::Active);
    for err in [
        a.register_agent(&reg("late", Some("mid"), None))
            .await
            .unwrap_err(),
        a.resume_agent("leaf-4", None).await.unwrap_err(),
    ] {
        assert_eq!(err.code(), Some(ErrorCode::ParentNotActive), "{err}");
        assert!(err.to_string().contains("'root'"), "{err}");
    }
    a.resume_agent("root", None).await.unwrap();
    a.resume_agent("leaf-4", None).await.unwrap();
    s.stop().await;
}

/// Three generations holding two roles and two classifications, and a
/// retired agent below the middle one.
async fn lineage(a: &steward_client::Client) {
    human(a, "alice@example.com").await;
    for role in ["r1", "r2"] {
        a.create_role(&CreateRole {
            name: role.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let both = vec!["r1".to_string(), "r2".to_string()];
    let classes = vec!["public".to_string(), "internal".to_string()];
    for (name, parent, roles) in [
        ("root", None, both.clone()),
        ("mid", Some("root"), both),
        ("leaf", Some("mid"), vec!["r1".to_string()]),
        ("gone", Some("mid"), vec!["r1".to_string()]),
    ] {
        a.register_agent(&RegisterAgent {
            name: name.into(),
            owner: "alice@example.com".into(),
            parent: parent.map(Into::into),
            roles: Some(roles),
            classifications: Some(classes.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
        approve_registration(a, name).await.unwrap();
    }
    a.decommission_agent("gone", None).await.unwrap();
}

/// The records of `agent.update` about `agent`.
async fn updates_of(a: &steward_client::Client, agent: &str) -> Vec<AuditEntry> {
    let id = a.get_agent(agent).await.unwrap().id;
    all_audit(a)
        .await
        .into_iter()
        .filter(|e| e.action == "agent.update" && e.resource_id == id)
        .collect()
}

/// Taking roles or classifications from an agent takes them from every
/// live agent below it, in the same change, each with its own record by
/// the same actor naming the agent above; giving them back does not.
async fn narrowing_an_agent_narrows_every_agent_below(b: Backend) {
    let s = TestServer::start(b).await;
    let a = &s.admin;
    lineage(a).await;
    let narrowed = a
        .update_agent(
            "root",
            &UpdateAgent {
                roles: Some(vec!["r2".into()]),
                classifications: Some(vec!["public".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(narrowed.risk_tier, RiskTier::Low);
    let mid = a.get_agent("mid").await.unwrap();
    assert_eq!(
        (mid.roles, mid.classifications),
        (vec!["r2".to_string()], vec!["public".to_string()])
    );
    assert_eq!(mid.risk_tier, RiskTier::Low);
    let leaf = a.get_agent("leaf").await.unwrap();
    assert!(
        leaf.roles.is_empty() && leaf.classifications == ["public"],
        "{leaf:?}"
    );
    // A retired agent is a record: left as it was.
    assert_eq!(a.get_agent("gone").await.unwrap().roles, vec!["r1"]);
    let root_record = updates_of(a, "root").await.pop().unwrap();
    for name in ["mid", "leaf"] {
        let records = updates_of(a, name).await;
        assert_eq!(records.len(), 1, "{name}: {records:#?}");
        let record = &records[0];
        assert_eq!(record.actor.id, root_record.actor.id);
        assert_eq!(record.actor.id, "tok_bootstrap");
        let reason = record.reason.as_deref().unwrap_or_default();
        assert!(reason.contains("'root'"), "{name}: {reason}");
        assert_eq!(
            record.before.as_ref().unwrap()["classifications"][1],
            "internal"
        );
        assert_eq!(
            record.after.as_ref().unwrap()["classifications"],
            serde_json::json!(["public"])
        );
    }
    // Widening does not give anything back below.
    a.update_agent(
        "root",
        &UpdateAgent {
            roles: Some(vec!["r1".into(), "r2".into()]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(a.get_agent("mid").await.unwrap().roles, vec!["r2"]);
    assert!(a.get_agent("leaf").await.unwrap().roles.is_empty());
    assert_eq!(updates_of(a, "mid").await.len(), 1);
    s.stop().await;
}

/// A change that waited for approval and takes a role away narrows the
/// agents below once approved, as a change applied at once does.
async fn an_approved_change_narrows_every_agent_below(b: Backend) {
    let s = TestServer::start(b).await;
    let a = &s.admin;
    lineage(a).await;
    a.create_role(&CreateRole {
        name: "writer".into(),
        writes: true,
        ..Default::default()
    })
    .await
    .unwrap();
    // `r1` out, a writing role in: internal data written is still medium,
    // so swap in confidential too, which raises the root to high.
    let (_, held) = a
        .update_agent_or_hold(
            "root",
            &UpdateAgent {
                roles: Some(vec!["r2".into(), "writer".into()]),
                classifications: Some(vec!["public".into(), "confidential".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(held.is_some(), "the change should wait for approval");
    assert_eq!(a.get_agent("mid").await.unwrap().roles, vec!["r1", "r2"]);
    let mut change = pending_approval(a, "root", "change").await;
    while change.status == ApprovalStatus::Pending {
        let group = change.current_group().unwrap().to_string();
        let (_, reviewer) = person(a, &format!("{group}-reviewer@example.com"), &[&group]).await;
        change = reviewer
            .approve(&change.id, Some("reviewed"))
            .await
            .unwrap();
    }
    assert_eq!(
        a.get_agent("root").await.unwrap().roles,
        vec!["r2", "writer"]
    );
    let mid = a.get_agent("mid").await.unwrap();
    assert_eq!(
        (mid.roles, mid.classifications),
        (vec!["r2".to_string()], vec!["public".to_string()])
    );
    let leaf = a.get_agent("leaf").await.unwrap();
    assert!(
        leaf.roles.is_empty() && leaf.classifications == ["public"],
        "{leaf:?}"
    );
    let record = updates_of(a, "mid").await.pop().unwrap();
    assert!(
        record
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("'root'"),
        "{record:?}"
    );
    s.stop().await;
}

/// Every lock on several agents takes them above before below: a PATCH
/// that narrows a tree and an owner's deactivation, which locks the
/// owner's agents across trees, wait for each other rather than deadlock.
/// An outside transaction holds one of the owner's agents so that the
/// deactivation is mid-way through its locks when the PATCH starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrowing_and_an_owners_deactivation_do_not_deadlock() {
    use sqlx::{Connection, Executor};
    let s = TestServer::start(Backend::Postgres).await;
    let a = &s.admin;
    a.create_role(&CreateRole {
        name: "r1".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    human(a, "alice@example.com").await;
    human(a, "bob@example.com").await;
    let reg = |name: &str, parent: Option<&str>, owner: &str| RegisterAgent {
        name: name.into(),
        owner: owner.into(),
        parent: parent.map(Into::into),
        roles: Some(vec!["r1".into()]),
        classifications: Some(vec!["public".into()]),
        ..Default::default()
    };
    // By id (creation order) bob's agents are g, z, c; by depth z, c, g.
    a.register_agent(&reg("x", None, "alice@example.com"))
        .await
        .unwrap();
    a.register_agent(&reg("mid", Some("x"), "alice@example.com"))
        .await
        .unwrap();
    a.register_agent(&reg("g", Some("mid"), "bob@example.com"))
        .await
        .unwrap();
    let z = a
        .register_agent(&reg("z", None, "bob@example.com"))
        .await
        .unwrap();
    a.register_agent(&reg("c", Some("x"), "bob@example.com"))
        .await
        .unwrap();
    let mut outside = sqlx::PgConnection::connect(s.store_url()).await.unwrap();
    outside.execute("BEGIN").await.unwrap();
    outside
        .execute(format!("SELECT id FROM agents WHERE id = '{}' FOR UPDATE", z.id).as_str())
        .await
        .unwrap();
    let (node_b, b) = s.second_node().await;
    let deactivating = {
        let a = a.clone();
        tokio::spawn(async move {
            a.deactivate_human("bob@example.com", &TransitionRequest::default())
                .await
                .map(drop)
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let narrowing = tokio::spawn(async move {
        b.update_agent(
            "x",
            &UpdateAgent {
                roles: Some(vec![]),
                ..Default::default()
            },
        )
        .await
        .map(drop)
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    outside.execute("COMMIT").await.unwrap();
    let deactivated = deactivating.await.unwrap();
    let narrowed = narrowing.await.unwrap();
    node_b.shutdown().await.unwrap();
    assert!(deactivated.is_ok(), "{deactivated:?}");
    assert!(narrowed.is_ok(), "{narrowed:?}");
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
