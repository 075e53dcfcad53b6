//! Teams, humans, personas, roles and agent registration.

use steward_testkit::{Backend, TestServer, on_both_backends};
use steward_types::*;

use crate::support::*;

on_both_backends!(
    example_personas_are_seeded,
    registration_follows_risk_tier,
    lists_filter_and_page,
    humans_and_teams,
    a_person_is_found_by_id_then_email_then_external_id
);

async fn a_person_is_found_by_id_then_email_then_external_id(b: Backend) {
    let s = TestServer::start(b).await;
    // A person is named by id, e-mail or external id, so no name may stand
    // for two: Mallory may not take Bob's e-mail as her external id, nor
    // may a new person take hers as an e-mail. Bob is still Bob.
    let bob = human(&s.admin, "bob@example.com").await;
    let mallory = |external_id: &str, email: &str| CreateHuman {
        external_id: Some(external_id.into()),
        email: email.into(),
        display_name: "Mallory".into(),
        teams: vec![],
        roles: vec![],
    };
    let refused = s
        .admin
        .create_human(&mallory("bob@example.com", "mallory@example.com"))
        .await;
    assert_eq!(code(refused), ErrorCode::AlreadyExists);
    let refused = s
        .admin
        .create_human(&mallory(&bob.id, "mallory@example.com"))
        .await;
    assert_eq!(code(refused), ErrorCode::AlreadyExists);
    let mallory = s
        .admin
        .create_human(&mallory("m-at-idp@example.com", "mallory@example.com"))
        .await
        .unwrap();
    let refused = s
        .admin
        .create_human(&CreateHuman {
            external_id: None,
            email: "m-at-idp@example.com".into(),
            display_name: "Squatter".into(),
            teams: vec![],
            roles: vec![],
        })
        .await;
    assert_eq!(code(refused), ErrorCode::AlreadyExists);
    assert_eq!(
        s.admin.get_human("bob@example.com").await.unwrap().id,
        bob.id
    );
    assert_eq!(s.admin.get_human(&mallory.id).await.unwrap().id, mallory.id);
    assert_eq!(
        s.admin.get_human("m-at-idp@example.com").await.unwrap().id,
        mallory.id
    );
    let token = token_for(&s.admin, "bob", TokenRole::Auditor, "bob@example.com").await;
    assert_eq!(token.token.human_id.as_deref(), Some(bob.id.as_str()));
    // An e-mail beyond ASCII is found as typed, on either store.
    let elodie = human(&s.admin, "Élodie@example.com").await;
    assert_eq!(elodie.email, "élodie@example.com");
    assert_eq!(
        s.admin.get_human("Élodie@example.com").await.unwrap().id,
        elodie.id
    );
    low_risk_agent(&s.admin, "elodies-bot", "Élodie@example.com").await;
    // What a store cannot keep is refused, not a 500.
    let refused = s
        .admin
        .create_human(&CreateHuman {
            external_id: Some("x".repeat(600)),
            email: "long@example.com".into(),
            display_name: "Long".into(),
            teams: vec![],
            roles: vec![],
        })
        .await;
    assert_eq!(code(refused), ErrorCode::InvalidRequest);
    let refused = s
        .admin
        .create_team(&CreateTeam {
            name: "nul-team".into(),
            description: "a\u{0}b".into(),
        })
        .await;
    assert_eq!(code(refused), ErrorCode::InvalidRequest);
    assert_eq!(
        code(s.admin.get_agent("a\u{0}b").await),
        ErrorCode::NotFound
    );
    s.stop().await;
}

async fn example_personas_are_seeded(b: Backend) {
    let s = TestServer::start(b).await;
    let personas = s
        .admin
        .list_personas(&PageQuery::default())
        .await
        .unwrap()
        .items;
    let names: Vec<&str> = personas.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "Code Review Bot",
            "Data Pipeline Agent",
            "Customer Support Assistant"
        ]
    );
    let code_review = &personas[0];
    assert_eq!(
        code_review.quotas,
        vec![QuotaTemplate {
            metric: "requests".into(),
            window: "day".into(),
            limit: 1000
        }]
    );
    assert_eq!(personas[1].max_children, 5);
    assert_eq!(
        personas[2].approval_required_for,
        vec!["issue_refund".to_string()]
    );
    let role = s.admin.get_role("pr-commenter").await.unwrap();
    assert!(role.writes);
    s.stop().await;
}

async fn registration_follows_risk_tier(b: Backend) {
    let s = TestServer::start(b).await;
    let alice = human(&s.admin, "alice@example.com").await;
    // Public data only: low risk, active at once.
    let docs = low_risk_agent(&s.admin, "docs-helper", "alice@example.com").await;
    assert_eq!(
        (docs.risk_tier, docs.state),
        (RiskTier::Low, AgentState::Active)
    );
    assert_eq!(docs.owner_id, alice.id);
    // Internal data: medium, waits for approval; roles come from the persona.
    let reviewer = s
        .admin
        .register_agent(&RegisterAgent {
            name: "reviewer".into(),
            owner: alice.id.clone(),
            persona: Some("Code Review Bot".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (reviewer.risk_tier, reviewer.state),
        (RiskTier::Medium, AgentState::PendingApproval)
    );
    assert_eq!(
        reviewer.roles,
        vec!["repo-reader".to_string(), "pr-commenter".to_string()]
    );
    // Confidential data with a writing role: high.
    let pipeline = s
        .admin
        .register_agent(&RegisterAgent {
            name: "etl".into(),
            owner: alice.id.clone(),
            persona: Some("Data Pipeline Agent".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(pipeline.risk_tier, RiskTier::High);
    // Confidential read-only: medium.
    let reader = s
        .admin
        .register_agent(&RegisterAgent {
            name: "reader".into(),
            owner: alice.id.clone(),
            roles: Some(vec!["db-reader".into()]),
            classifications: Some(vec!["confidential".into()]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(reader.risk_tier, RiskTier::Medium);
    // A pending one is not activated directly: its approval chain does.
    assert_eq!(
        code(s.admin.activate_agent("reviewer", None).await),
        ErrorCode::ApprovalPending
    );
    approve_registration(&s.admin, "reviewer").await.unwrap();
    let activated = s.admin.get_agent("reviewer").await.unwrap();
    assert_eq!(activated.state, AgentState::Active);
    // A draft stays proposed until submitted.
    let draft = s
        .admin
        .register_agent(&RegisterAgent {
            name: "draft".into(),
            owner: alice.id.clone(),
            draft: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(draft.state, AgentState::Proposed);
    assert_eq!(
        s.admin
            .submit_agent("draft", None)
            .await
            .unwrap()
            .agent
            .state,
        AgentState::Active
    );
    // Read back by id and by name.
    assert_eq!(
        s.admin.get_agent(&docs.id).await.unwrap(),
        s.admin.get_agent("docs-helper").await.unwrap()
    );
    s.stop().await;
}

async fn lists_filter_and_page(b: Backend) {
    let s = TestServer::start(b).await;
    human(&s.admin, "alice@example.com").await;
    human(&s.admin, "bob@example.com").await;
    for i in 0..5 {
        low_risk_agent(&s.admin, &format!("a{i}"), "alice@example.com").await;
    }
    low_risk_agent(&s.admin, "b0", "bob@example.com").await;
    s.admin
        .register_agent(&RegisterAgent {
            name: "rev".into(),
            owner: "bob@example.com".into(),
            persona: Some("Code Review Bot".into()),
            ..Default::default()
        })
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = s
            .admin
            .list_agents(&AgentFilter {
                owner: Some("alice@example.com".into()),
                limit: Some(2),
                cursor,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.into_iter().map(|a| a.name));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, ["a0", "a1", "a2", "a3", "a4"]);
    let pending = s
        .admin
        .list_agents(&AgentFilter {
            state: Some("pending_approval".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        pending
            .items
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>(),
        ["rev"]
    );
    let medium = s
        .admin
        .list_agents(&AgentFilter {
            risk_tier: Some("medium".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(medium.items.len(), 1);
    let by_persona = s
        .admin
        .list_agents(&AgentFilter {
            persona: Some("Code Review Bot".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_persona.items.len(), 1);
    assert_eq!(
        code(
            s.admin
                .list_agents(&AgentFilter {
                    state: Some("sleeping".into()),
                    ..Default::default()
                })
                .await
        ),
        ErrorCode::InvalidQuery
    );
    assert_eq!(
        code(
            s.admin
                .list_agents(&AgentFilter {
                    limit: Some(0),
                    ..Default::default()
                })
                .await
        ),
        ErrorCode::InvalidQuery
    );
    s.stop().await;
}

async fn humans_and_teams(b: Backend) {
    let s = TestServer::start(b).await;
    let team = s
        .admin
        .create_team(&CreateTeam {
            name: "payments".into(),
            description: "Payments".into(),
        })
        .await
        .unwrap();
    let h = s
        .admin
        .create_human(&CreateHuman {
            external_id: None,
            email: "Carol@Example.com".into(),
            display_name: "Carol".into(),
            teams: vec!["payments".into()],
            roles: vec!["kb-reader".into()],
        })
        .await
        .unwrap();
    assert_eq!(h.email, "carol@example.com");
    assert_eq!(h.teams, vec![team.id.clone()]);
    assert_eq!(
        s.admin.get_human("carol@example.com").await.unwrap().teams,
        vec![team.id.clone()]
    );
    let in_team = s
        .admin
        .list_humans(&PageQuery {
            team: Some("payments".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(in_team.items.len(), 1);
    let updated = s
        .admin
        .update_human(
            "carol@example.com",
            &UpdateHuman {
                display_name: Some("Carol K".into()),
                teams: Some(vec![]),
                roles: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (updated.display_name.as_str(), updated.teams.len()),
        ("Carol K", 0)
    );
    assert_eq!(
        code(
            s.admin
                .create_team(&CreateTeam {
                    name: "payments".into(),
                    description: String::new()
                })
                .await
        ),
        ErrorCode::AlreadyExists
    );
    assert_eq!(
        code(
            s.admin
                .create_human(&CreateHuman {
                    external_id: None,
                    email: "carol@example.com".into(),
                    display_name: "Again".into(),
                    teams: vec![],
                    roles: vec![]
                })
                .await
        ),
        ErrorCode::AlreadyExists
    );
    assert_eq!(
        code(
            s.admin
                .create_human(&CreateHuman {
                    external_id: None,
                    email: "d@example.com".into(),
                    display_name: "D".into(),
                    teams: vec!["nope".into()],
                    roles: vec![]
                })
                .await
        ),
        ErrorCode::UnknownReference
    );
    s.stop().await;
}
