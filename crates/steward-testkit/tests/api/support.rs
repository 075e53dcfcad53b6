//! Small helpers shared by the suite.

use steward_client::{Client, ClientError};
use steward_types::*;

/// An active human with the given e-mail.
pub async fn human(admin: &Client, email: &str) -> Human {
    admin
        .create_human(&CreateHuman {
            external_id: None,
            email: email.into(),
            display_name: email.split('@').next().unwrap().into(),
            teams: vec![],
            roles: vec![],
        })
        .await
        .unwrap()
}

/// Register an agent with public data only (low risk: active at once).
pub async fn low_risk_agent(admin: &Client, name: &str, owner: &str) -> Agent {
    admin
        .register_agent(&RegisterAgent {
            name: name.into(),
            owner: owner.into(),
            classifications: Some(vec!["public".into()]),
            ..Default::default()
        })
        .await
        .unwrap()
}

/// The error code of a failed call.
pub fn code<T: std::fmt::Debug>(result: Result<T, ClientError>) -> ErrorCode {
    match result {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.code().unwrap_or_else(|| panic!("not an API error: {e}")),
    }
}

/// A page of up to 500 records.
pub fn page500() -> PageQuery {
    PageQuery {
        limit: Some(500),
        ..Default::default()
    }
}

/// Everything the tenant's store holds that a bad request must not change:
/// agent, human and team counts and the audit log length.
pub async fn snapshot(admin: &Client) -> (usize, usize, usize, usize) {
    let agents = admin
        .list_agents(&AgentFilter {
            limit: Some(500),
            ..Default::default()
        })
        .await
        .unwrap()
        .items
        .len();
    let humans = admin.list_humans(&page500()).await.unwrap().items.len();
    let teams = admin.list_teams(&page500()).await.unwrap().items.len();
    let audit = all_audit(admin).await.len();
    (agents, humans, teams, audit)
}

/// The whole audit log, following cursors.
pub async fn all_audit(admin: &Client) -> Vec<AuditEntry> {
    let mut out = Vec::new();
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
        out.extend(page.items);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

/// A person holding `roles`, and a client acting with their own token.
pub async fn person(admin: &Client, email: &str, roles: &[&str]) -> (Human, Client) {
    let human = match admin.get_human(email).await {
        Ok(h) => h,
        Err(_) => admin
            .create_human(&CreateHuman {
                external_id: None,
                email: email.into(),
                display_name: email.split('@').next().unwrap().into(),
                teams: vec![],
                roles: roles.iter().map(|r| r.to_string()).collect(),
            })
            .await
            .unwrap(),
    };
    let token = admin
        .create_token(&CreateToken {
            name: format!("approvals {}", email.split('@').next().unwrap()),
            role: TokenRole::Auditor,
            human: Some(human.id.clone()),
            expires_at: None,
            tenant: None,
        })
        .await
        .unwrap();
    (human, admin.with_token(token.secret))
}

/// The pending approval of `kind` for an agent.
pub async fn pending_approval(admin: &Client, agent: &str, kind: &str) -> Approval {
    let page = admin
        .list_approvals(&ApprovalFilter {
            agent: Some(agent.into()),
            kind: Some(kind.into()),
            status: Some("pending".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.items.len(),
        1,
        "one pending {kind} approval for {agent}"
    );
    page.items.into_iter().next().unwrap()
}

/// Walk an agent's registration approval through its chain, each step by a
/// reviewer of that group (`GROUP-reviewer@example.com`): the last step
/// activates it. Returns the last step's answer (an error if it failed).
pub async fn approve_registration(admin: &Client, agent: &str) -> Result<Approval, ClientError> {
    let mut approval = pending_approval(admin, agent, "registration").await;
    loop {
        let group = approval.current_group().unwrap().to_string();
        let (_, reviewer) =
            person(admin, &format!("{group}-reviewer@example.com"), &[&group]).await;
        approval = reviewer.approve(&approval.id, Some("reviewed")).await?;
        if approval.status != ApprovalStatus::Pending {
            return Ok(approval);
        }
    }
}

/// A token of `role` for the human `email`.
pub async fn token_for(admin: &Client, name: &str, role: TokenRole, email: &str) -> CreatedToken {
    admin
        .create_token(&CreateToken {
            name: name.into(),
            role,
            human: Some(email.into()),
            expires_at: None,
            tenant: None,
        })
        .await
        .unwrap()
}

/// A client with a new admin token of the default tenant, which is not the
/// platform administrator's.
pub async fn tenant_admin_client(s: &steward_testkit::TestServer) -> Client {
    let token = s
        .admin
        .create_token(&CreateToken {
            name: "tenant-admin".into(),
            role: TokenRole::Admin,
            human: None,
            expires_at: None,
            tenant: None,
        })
        .await
        .unwrap();
    s.client(&token.secret)
}

/// A client with a new key of agent `name`.
pub async fn agent_client(s: &steward_testkit::TestServer, name: &str) -> Client {
    let key = s
        .admin
        .create_key(name, &CreateKey::default())
        .await
        .unwrap();
    s.client(&key.secret)
}
