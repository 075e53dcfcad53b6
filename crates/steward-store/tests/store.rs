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
