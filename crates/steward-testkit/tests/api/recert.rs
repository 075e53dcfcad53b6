//! Recertification campaigns: owners attest the agents they own (keep,
//! suspend, decommission), nobody else does (an admin only for an orphaned
//! agent), each answer changes the agent in the same transaction and is
//! audited; at the due date the campaign closes and unattested agents are
//! suspended, or only reported.

use chrono::{Duration, Utc};
use steward_client::Client;
use steward_testkit::{Backend, TestServer};
use steward_types::*;

use crate::support::*;
use crate::webhooks::{receiver, subscribe};

fn start(name: &str) -> StartCampaign {
    StartCampaign {
        name: name.into(),
        ..Default::default()
    }
}

fn attest(decision: &str, note: Option<&str>) -> Attest {
    Attest {
        decision: decision.into(),
        note: note.map(str::to_string),
    }
}

async fn person(s: &TestServer, email: &str) -> Client {
    human(&s.admin, email).await;
    let name = email.split('@').next().unwrap_or_default();
    let t = token_for(&s.admin, name, TokenRole::Auditor, email).await;
    s.client(&t.secret)
}

async fn owners_attest_and_overdue_agents_are_suspended(backend: Backend) {
    let s = TestServer::start(backend).await;
    let admin = &s.admin;
    let alice = person(&s, "alice@example.com").await;
    let bob = person(&s, "bob@example.com").await;
    human(admin, "carol@example.com").await;
    admin
        .create_team(&CreateTeam {
            name: "payments".into(),
            description: String::new(),
        })
        .await
        .unwrap();
    low_risk_agent(admin, "a1", "alice@example.com").await;
    low_risk_agent(admin, "a2", "alice@example.com").await;
    admin
        .register_agent(&RegisterAgent {
            name: "a2-child".into(),
            owner: "alice@example.com".into(),
            parent: Some("a2".into()),
            classifications: Some(vec!["public".into()]),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .register_agent(&RegisterAgent {
            name: "b1".into(),
            owner: "bob@example.com".into(),
            team: Some("payments".into()),
            classifications: Some(vec!["public".into()]),
            ..Default::default()
        })
        .await
        .unwrap();
    low_risk_agent(admin, "c1", "carol@example.com").await;
    admin
        .deactivate_human(
            "carol@example.com",
            &TransitionRequest {
                reason: Some("left".into()),
            },
        )
        .await
        .unwrap();
    let hook = receiver(vec![200]).await;
    subscribe(admin, &hook, &["recertification.*"]).await;

    // Bad requests change nothing.
    for (bad, expected) in [
        (start("not a name!"), ErrorCode::InvalidRequest),
        (
            StartCampaign {
                due_in_days: Some(0),
                ..start("q")
            },
            ErrorCode::InvalidRequest,
        ),
        (
            StartCampaign {
                team: Some("nobody".into()),
                ..start("q")
            },
            ErrorCode::UnknownReference,
        ),
    ] {
        assert_eq!(code(admin.start_campaign(&bad).await), expected);
    }
    assert!(
        admin
            .list_campaigns(&page500())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(
        code(alice.start_campaign(&start("q")).await),
        ErrorCode::Forbidden
    );

    // Scope: by tier and by team.
    let high = admin
        .start_campaign(&StartCampaign {
            min_risk_tier: Some(RiskTier::High),
            ..start("high-only")
        })
        .await
        .unwrap();
    assert_eq!(high.counts.total, 0);
    let team = admin
        .start_campaign(&StartCampaign {
            team: Some("payments".into()),
            on_overdue: Some(OnOverdue::Report),
            ..start("payments")
        })
        .await
        .unwrap();
    assert_eq!(team.counts.total, 1);

    // Low and above: every tier.
    let q4 = admin
        .start_campaign(&StartCampaign {
            min_risk_tier: Some(RiskTier::Low),
            ..start("2026-Q4")
        })
        .await
        .unwrap();
    assert_eq!((q4.counts.total, q4.counts.pending), (5, 5));
    assert_eq!(q4.status, "open");
    assert_eq!(q4.on_overdue, OnOverdue::Suspend);
    assert_eq!(
        code(admin.start_campaign(&start("2026-Q4")).await),
        ErrorCode::AlreadyExists
    );

    // The owner keeps a1; once only.
    let kept = alice
        .attest("2026-Q4", "a1", &attest("keep", None))
        .await
        .unwrap();
    assert_eq!(kept.status, "kept");
    assert_eq!(
        code(alice.attest("2026-Q4", "a1", &attest("keep", None)).await),
        ErrorCode::RecertificationClosed
    );
    // Nobody else attests: not another owner, not an admin for an owned agent.
    assert_eq!(
        code(bob.attest("2026-Q4", "a2", &attest("keep", None)).await),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code(admin.attest("2026-Q4", "b1", &attest("keep", None)).await),
        ErrorCode::Forbidden
    );
    // An admin answers for the orphaned agent.
    let orphan = admin
        .attest("2026-Q4", "c1", &attest("keep", Some("moving to Dana")))
        .await
        .unwrap();
    assert_eq!(orphan.status, "kept");
    // Withdrawing needs a reason; then the agent changes with the answer.
    assert_eq!(
        code(
            alice
                .attest("2026-Q4", "a2", &attest("suspend", None))
                .await
        ),
        ErrorCode::InvalidRequest
    );
    assert_eq!(
        code(
            alice
                .attest("2026-Q4", "a2", &attest("pause", Some("x")))
                .await
        ),
        ErrorCode::InvalidRequest
    );
    alice
        .attest("2026-Q4", "a2", &attest("suspend", Some("project paused")))
        .await
        .unwrap();
    let a2 = admin.get_agent("a2").await.unwrap();
    assert_eq!(a2.state, AgentState::Suspended);
    assert!(
        a2.state_reason
            .as_deref()
            .unwrap_or_default()
            .contains("recertification 2026-Q4: project paused"),
        "{a2:?}"
    );
    // Decommissioning cascades, so it takes the owner's admin token.
    assert_eq!(
        code(
            bob.attest("2026-Q4", "b1", &attest("decommission", Some("replaced")))
                .await
        ),
        ErrorCode::Forbidden
    );
    let bob_admin = token_for(admin, "bob-admin", TokenRole::Admin, "bob@example.com").await;
    s.client(&bob_admin.secret)
        .attest("2026-Q4", "b1", &attest("decommission", Some("replaced")))
        .await
        .unwrap();
    assert_eq!(
        admin.get_agent("b1").await.unwrap().state,
        AgentState::Decommissioned
    );

    // Alice's dashboard lists what she still has to answer.
    let alice_token = token_for(admin, "alice-ui", TokenRole::Auditor, "alice@example.com").await;
    let mut browser = crate::dashboard::Browser::new(&s.server.url());
    assert!(browser.sign_in(&alice_token.secret).await.is_redirection());
    let (_, _, overview) = browser.get("/ui").await;
    assert!(overview.contains("Yours to re-attest"), "{overview}");
    assert!(
        overview.contains(">a2-child</a></td><td>2026-Q4</td>"),
        "{overview}"
    );
    assert!(
        !overview.contains(">a1</a></td><td>2026-Q4</td>"),
        "{overview}"
    );
    assert!(overview.contains("<td>2026-Q4</td>"), "{overview}");

    // Who still has to answer, and bad filters.
    let pending = admin
        .list_campaign_items(
            "2026-Q4",
            &CampaignItemQuery {
                status: Some("pending".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let names: Vec<&str> = pending
        .items
        .iter()
        .map(|i| i.agent_name.as_str())
        .collect();
    assert_eq!(names, vec!["a2-child"]);
    let alices = admin
        .list_campaign_items(
            "2026-Q4",
            &CampaignItemQuery {
                owner: Some("alice@example.com".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(alices.items.len(), 3);
    assert_eq!(
        code(
            admin
                .list_campaign_items(
                    "2026-Q4",
                    &CampaignItemQuery {
                        status: Some("maybe".into()),
                        ..Default::default()
                    },
                )
                .await
        ),
        ErrorCode::InvalidQuery
    );
    assert_eq!(
        code(admin.get_campaign("2025-Q1").await),
        ErrorCode::NotFound
    );

    // The due date passes: the campaign closes, a2-child is overdue and
    // suspended; the report-only campaign leaves b1's fate to people.
    let store = s.server.store();
    store
        .execute_raw(&format!(
            "UPDATE recert_campaigns SET due_at = {} WHERE status = 'open'",
            (Utc::now() - Duration::minutes(1)).timestamp_millis()
        ))
        .await
        .unwrap();
    // Past the due date nobody attests, even before the sweep closes it.
    assert_eq!(
        code(
            alice
                .attest("2026-Q4", "a2-child", &attest("keep", None))
                .await
        ),
        ErrorCode::RecertificationClosed
    );
    // Someone else still learns nothing about the item: refused as such.
    assert_eq!(
        code(
            bob.attest("2026-Q4", "a2-child", &attest("keep", None))
                .await
        ),
        ErrorCode::Forbidden
    );
    let closed = store.close_due_campaigns(Utc::now()).await.unwrap();
    assert_eq!(closed.len(), 3);
    assert!(
        store
            .close_due_campaigns(Utc::now())
            .await
            .unwrap()
            .is_empty()
    );
    let q4 = admin.get_campaign(&q4.id).await.unwrap();
    assert_eq!(q4.status, "closed");
    assert_eq!(
        q4.counts,
        CampaignCounts {
            total: 5,
            pending: 0,
            kept: 2,
            suspended: 1,
            decommissioned: 1,
            overdue: 1,
        }
    );
    let child = admin.get_agent("a2-child").await.unwrap();
    assert_eq!(child.state, AgentState::Suspended);
    assert_eq!(
        child.state_reason.as_deref(),
        Some("recertification 2026-Q4 closed without its owner attesting")
    );
    let suspension = admin
        .list_audit(&AuditFilter {
            agent: Some("a2-child".into()),
            action: Some("agent.suspend".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .items;
    assert_eq!(suspension.len(), 1, "{suspension:#?}");
    assert_eq!(suspension[0].actor.id, "recertification");
    assert_eq!(suspension[0].reason, child.state_reason);
    assert_eq!(suspension[0].after.as_ref().unwrap()["state"], "suspended");
    let payments = admin.get_campaign("payments").await.unwrap();
    assert_eq!(payments.counts.overdue, 1);
    assert_eq!(
        code(alice.attest("2026-Q4", "a1", &attest("keep", None)).await),
        ErrorCode::RecertificationClosed
    );
    // a1 and c1 were kept: still active.
    assert_eq!(
        admin.get_agent("a1").await.unwrap().state,
        AgentState::Active
    );
    assert_eq!(
        admin.get_agent("c1").await.unwrap().state,
        AgentState::Active
    );

    // Every step is in the log, and the webhooks went out.
    let log = admin
        .list_audit(&AuditFilter {
            action: Some("recertification.*".into()),
            limit: Some(500),
            ..Default::default()
        })
        .await
        .unwrap();
    let count = |a: &str| log.items.iter().filter(|e| e.action == a).count();
    assert_eq!(count("recertification.start"), 3);
    assert_eq!(count("recertification.attest"), 4);
    assert_eq!(count("recertification.close"), 3);
    for _ in 0..300 {
        let seen = hook.seen.lock().unwrap().len();
        if seen >= 6 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let bodies: Vec<String> = hook
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert!(
        bodies.iter().any(|b| b.contains("recertification.closed")
            && b.contains("1 not attested (suspended: a2-child)")),
        "{bodies:#?}"
    );
    s.stop().await;
}

/// An owner's "suspend" for an agent that was decommissioned while the
/// campaign ran is refused: the agent is not recorded as suspended, and the
/// item stays open for an answer that is true.
#[tokio::test]
async fn a_suspension_of_a_gone_agent_is_refused() {
    let s = TestServer::start(Backend::Sqlite).await;
    let admin = &s.admin;
    let alice = person(&s, "alice@example.com").await;
    low_risk_agent(admin, "gone", "alice@example.com").await;
    admin.start_campaign(&start("q1")).await.unwrap();
    admin
        .decommission_agent("gone", Some("replaced"))
        .await
        .unwrap();
    let refused = alice
        .attest("q1", "gone", &attest("suspend", Some("paused")))
        .await;
    assert_eq!(code(refused), ErrorCode::InvalidTransition);
    let agent = admin.get_agent("gone").await.unwrap();
    assert_eq!(agent.state, AgentState::Decommissioned);
    let campaign = admin.get_campaign("q1").await.unwrap();
    assert_eq!(campaign.counts.pending, 1, "{campaign:?}");
    s.stop().await;
}

steward_testkit::on_both_backends!(owners_attest_and_overdue_agents_are_suspended);
