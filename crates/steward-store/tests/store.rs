//! The store against both backends: SQLite in a temporary folder and the
//! machine's PostgreSQL in a fresh schema.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::Utc;
use steward_core::lifecycle::Transition;
use steward_core::{ChangeContext, InventoryRules};
use steward_store::Store;
use steward_types::*;

async fn sqlite() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/s.db", dir.path().display());
    (Store::open(&url).await.unwrap(), dir)
}

async fn postgres() -> Store {
    let base = std::env::var("STEWARD_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("st_{}", uuid::Uuid::now_v7().simple());
    let admin = Store::open(&base).await.unwrap();
    admin
        .execute_raw(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    Store::open(&format!("{base}{sep}options=-c%20search_path%3D{schema}"))
        .await
        .unwrap()
}

async fn scenario(store: &Store) {
    let ctx = ChangeContext::system("default", "test", Utc::now());
    let rules = InventoryRules::default();
    assert!(
        store
            .ensure_tenant(&ctx, "default", "Default")
            .await
            .unwrap()
    );
    let owner = store
        .create_human(
            &ctx,
            CreateHuman {
                external_id: None,
                email: "Alice@Example.com".into(),
                display_name: "Alice".into(),
                teams: vec![],
                roles: vec![],
            },
        )
        .await
        .unwrap();
    assert_eq!(owner.email, "alice@example.com");
    let parent = store
        .register_agent(
            &ctx,
            &rules,
            RegisterAgent {
                name: "p".into(),
                owner: "alice@example.com".into(),
                classifications: Some(vec!["public".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(parent.state, AgentState::Active);
    let child = store
        .register_agent(
            &ctx,
            &rules,
            RegisterAgent {
                name: "c".into(),
                owner: owner.id.clone(),
                parent: Some("p".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(child.depth, 1);
    let dup = store
        .register_agent(
            &ctx,
            &rules,
            RegisterAgent {
                name: "c".into(),
                owner: owner.id.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(dup.code, ErrorCode::AlreadyExists);
    let r = store
        .transition_agent(&ctx, "p", Transition::Decommission, Some("done".into()))
        .await
        .unwrap();
    assert_eq!(r.cascaded, vec![child.id.clone()]);
    let page = store
        .list_agents(
            "default",
            AgentFilter {
                state: Some("decommissioned".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 2);
    let audit = store
        .list_audit("default", AuditFilter::default())
        .await
        .unwrap();
    assert!(
        audit
            .items
            .iter()
            .any(|e| e.action == "agent.decommission" && e.resource_id == child.id)
    );
}

#[tokio::test]
async fn scenario_on_sqlite() {
    let (store, _dir) = sqlite().await;
    scenario(&store).await;
}

#[tokio::test]
async fn scenario_on_postgres() {
    let store = postgres().await;
    scenario(&store).await;
}

/// The identities a decision reads follow every committed change at once,
/// whether or not the backend caches them, and the decision path's own
/// writes do not disturb them.
async fn identities_follow_changes(store: &Store) {
    let ctx = ChangeContext::system("default", "test", Utc::now());
    let rules = InventoryRules::default();
    store
        .ensure_tenant(&ctx, "default", "Default")
        .await
        .unwrap();
    for name in ["reader", "writer"] {
        store
            .create_role(
                &ctx,
                CreateRole {
                    name: name.into(),
                    description: String::new(),
                    writes: false,
                },
            )
            .await
            .unwrap();
    }
    let human = store
        .create_human(
            &ctx,
            CreateHuman {
                external_id: None,
                email: "bo@example.com".into(),
                display_name: "Bo".into(),
                teams: vec![],
                roles: vec![],
            },
        )
        .await
        .unwrap();
    let agent = store
        .register_agent(
            &ctx,
            &rules,
            RegisterAgent {
                name: "a".into(),
                owner: human.email.clone(),
                roles: Some(vec!["reader".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let read = || async { store.agent_context("default", "a").await.unwrap().unwrap() };
    assert_eq!(read().await.agent.roles, vec!["reader".to_string()]);
    assert_eq!(read().await.agent.state, AgentState::Active);

    // A decision's own writes change no identity.
    store
        .write_batch(vec![steward_store::quotas::Write::Audit(Box::new((
            ctx.clone(),
            steward_core::AuditEvent {
                action: "decision.allow".into(),
                resource_type: "repo".into(),
                resource_id: "r".into(),
                before: None,
                after: None,
                reason: None,
            },
        )))])
        .await
        .unwrap();
    assert_eq!(read().await, read().await);

    store
        .update_agent_with_access(
            &ctx,
            &rules,
            &agent.id,
            UpdateAgent {
                roles: Some(vec!["writer".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(read().await.agent.roles, vec!["writer".to_string()]);
    store
        .transition_agent(&ctx, "a", Transition::Suspend, Some("test".into()))
        .await
        .unwrap();
    assert_eq!(read().await.agent.state, AgentState::Suspended);
    // By id as well as by name.
    let by_id = store
        .agent_context("default", &agent.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_id.agent.state, AgentState::Suspended);

    let human_status = || async {
        store
            .human_context("default", "bo@example.com")
            .await
            .unwrap()
            .unwrap()
            .0
            .status
    };
    assert_eq!(human_status().await, HumanStatus::Active);
    assert_eq!(human_status().await, HumanStatus::Active);
    store
        .deactivate_human(&ctx, "bo@example.com", None)
        .await
        .unwrap();
    assert_eq!(human_status().await, HumanStatus::Deactivated);
    assert_eq!(read().await.owner_email, "bo@example.com");

    // Even a change made with raw SQL is seen.
    store
        .execute_raw("UPDATE humans SET email = 'bo2@example.com'")
        .await
        .unwrap();
    assert_eq!(read().await.owner_email, "bo2@example.com");
}

#[tokio::test]
async fn identities_follow_changes_on_sqlite() {
    let (store, _dir) = sqlite().await;
    identities_follow_changes(&store).await;
}

#[tokio::test]
async fn identities_follow_changes_on_postgres() {
    let store = postgres().await;
    identities_follow_changes(&store).await;
}

/// A group commit of many records: consecutive sequence numbers in the
/// order given, every stored row hashing to its leaf, in however many
/// statements the batch is cut into.
async fn a_batch_lands_in_order(store: &Store) {
    let ctx = ChangeContext::system("default", "test", chrono::Utc::now());
    let before = store.audit_size().await.unwrap();
    let writes = (0..45)
        .map(|i| {
            steward_store::quotas::Write::Audit(Box::new((
                ctx.clone(),
                steward_core::AuditEvent {
                    action: "decision.allow".into(),
                    resource_type: "repo".into(),
                    resource_id: format!("r{i}"),
                    before: None,
                    after: Some(serde_json::json!({"i": i})),
                    reason: None,
                },
            )))
        })
        .collect();
    let written = store.write_batch(writes).await.unwrap();
    let seqs: Vec<i64> = written
        .iter()
        .map(|w| match w {
            steward_store::quotas::Written::Audited(seq) => *seq,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(seqs, (before + 1..=before + 45).collect::<Vec<_>>());
    assert_eq!(store.audit_size().await.unwrap(), before + 45);
    let page = store.audit_page_all(before, 100).await.unwrap();
    assert_eq!(page.len(), 45);
    for (i, (entry, leaf, _)) in page.iter().enumerate() {
        assert_eq!(entry.seq, before + 1 + i as i64);
        assert_eq!(entry.resource_id, format!("r{i}"));
        let hashed = steward_audit::leaf_hash(&steward_store::audit::canonical_entry(entry));
        assert_eq!(leaf.as_deref(), Some(hashed.to_hex().as_str()));
    }
}

#[tokio::test]
async fn a_batch_lands_in_order_on_sqlite() {
    let (store, _dir) = sqlite().await;
    a_batch_lands_in_order(&store).await;
}

#[tokio::test]
async fn a_batch_lands_in_order_on_postgres() {
    let store = postgres().await;
    a_batch_lands_in_order(&store).await;
}
