//! Human approvals end to end: the refund flow, binding to the exact
//! request, expiry on an injected clock, separation of duties, concurrent use
//! of one grant, registration chains and the mover case.

use chrono::{Duration, Utc};
use serde_json::json;
use steward_client::{Client, Method};
use steward_testkit::{Backend, TestServer, on_both_backends};
use steward_types::*;

use crate::support::*;

on_both_backends!(
    refund_flow,
    a_different_request_is_not_covered,
    expiry_follows_an_injected_clock,
    separation_of_duties_is_enforced,
    one_grant_two_concurrent_uses,
    high_risk_registration_walks_security_then_legal,
    mover_change_waits_for_approval,
    persona_rule_and_authzen,
    bad_input_changes_nothing,
    chains_are_configurable,
    high_risk_actions_need_several_groups,
    each_approval_needs_its_own_grant,
    approving_and_decommissioning_race_cleanly,
    a_grant_waits_for_its_sibling,
    a_change_stays_within_its_chain,
    a_lapsed_grant_is_not_revived,
    a_lapsed_grant_is_not_extended,
    owners_of_ancestors_as_of_the_decision,
    only_an_approver_closes_an_approval_of_a_gone_agent,
);

/// A support bot (low risk, active) that may refund up to 100 on its own
/// and more with a support lead's approval; its key; and a support lead.
struct Refunds {
    s: TestServer,
    bot: Client,
    lead: Client,
}

async fn refunds(b: Backend) -> Refunds {
    let s = TestServer::start(b).await;
    let admin = &s.admin;
    admin
        .create_role(&CreateRole {
            name: "support-leads".into(),
            description: "Approve large refunds".into(),
            writes: false,
        })
        .await
        .unwrap();
    human(admin, "alice@example.com").await;
    admin
        .put_resource_type(&PutResourceType {
            name: "refund".into(),
            attributes: [("ticket".to_string(), "String?".to_string())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .put_action(&PutAction {
            name: "issue_refund".into(),
            resource_types: vec!["refund".into()],
            context: [("amount".to_string(), "Long".to_string())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    for (id, text) in [
        (
            "refunds-up-to-100",
            r#"permit(principal in Role::"refund-issuer", action == Action::"issue_refund", resource) when { context.amount <= 100 };"#,
        ),
        (
            "refunds-over-100",
            r#"@approval("support-leads") permit(principal in Role::"refund-issuer", action == Action::"issue_refund", resource) when { context.amount > 100 };"#,
        ),
    ] {
        admin
            .put_policy(&PutPolicy {
                id: id.into(),
                text: text.into(),
                owner: "finance@example.com".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let agent = admin
        .register_agent(&RegisterAgent {
            name: "support-bot".into(),
            owner: "alice@example.com".into(),
            roles: Some(vec!["refund-issuer".into()]),
            classifications: Some(vec!["public".into()]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(agent.state, AgentState::Active);
    let key = admin
        .create_key("support-bot", &CreateKey::default())
        .await
        .unwrap();
    let bot = s.client(&key.secret);
    let (_, lead) = person(admin, "lee@example.com", &["support-leads"]).await;
    Refunds { s, bot, lead }
}

fn refund(amount: i64, id: &str) -> DecisionRequest {
    DecisionRequest {
        action: "issue_refund".into(),
        resource: ResourceRef {
            resource_type: "refund".into(),
            id: id.into(),
            attributes: Default::default(),
        },
        context: json!({ "amount": amount }).as_object().unwrap().clone(),
        ..Default::default()
    }
}

async fn refund_flow(b: Backend) {
    let Refunds { s, bot, lead } = refunds(b).await;
    // Approval events go to chat, signed (the receiver here is unreachable:
    // what matters is what was queued, in order).
    let hook = s
        .admin
        .create_webhook(&CreateWebhook {
            name: "approvals-channel".into(),
            url: "http://127.0.0.1:9/slack".into(),
            events: vec!["approval.*".into()],
            secret: None,
        })
        .await
        .unwrap()
        .webhook;
    // Small refunds need nobody.
    let small = bot.decide(&refund(80, "R-1")).await.unwrap();
    assert_eq!(small.decision, Decision::Allow);
    assert!(small.approval.is_none());

    // Over 100: pending, with an approval to wait for; asking again is the same one.
    let first = bot.decide(&refund(250, "R-2")).await.unwrap();
    assert_eq!(first.decision, Decision::ApprovalRequired);
    let pending = first.approval.clone().unwrap();
    assert_eq!(pending.status, ApprovalStatus::Pending);
    assert_eq!(pending.groups, vec!["support-leads"]);
    assert!(first.remediation.unwrap().message.contains(&pending.id));
    let again = bot.decide(&refund(250, "R-2")).await.unwrap();
    assert_eq!(again.approval.unwrap().id, pending.id);

    // The approver sees the exact request; the bot waits (nothing yet).
    let shown = lead.get_approval(&pending.id).await.unwrap();
    assert_eq!(shown.kind, ApprovalKind::Action);
    assert_eq!(shown.request["context"]["amount"], json!(250));
    assert_eq!(shown.request["resource"]["id"], json!("R-2"));
    assert_eq!(shown.agent_name.as_deref(), Some("support-bot"));
    assert_eq!(
        bot.wait_approval(&pending.id, 0).await.unwrap().status,
        ApprovalStatus::Pending
    );

    // Approved: a waiter learns it, the identical request is allowed once.
    let waiter = {
        let bot = bot.clone();
        let id = pending.id.clone();
        tokio::spawn(async move { bot.wait_approval(&id, 30).await })
    };
    let approved = lead
        .approve(&pending.id, Some("customer is right"))
        .await
        .unwrap();
    assert_eq!(approved.status, ApprovalStatus::Approved);
    assert!(approved.grant_expires_at.is_some());
    assert_eq!(
        waiter.await.unwrap().unwrap().status,
        ApprovalStatus::Approved
    );
    let retry = bot.decide(&refund(250, "R-2")).await.unwrap();
    assert_eq!(retry.decision, Decision::Allow);
    let used = retry.approval.unwrap();
    assert_eq!(
        (used.id.as_str(), used.status),
        (pending.id.as_str(), ApprovalStatus::Used)
    );
    let spent = lead.get_approval(&pending.id).await.unwrap();
    assert_eq!(
        spent.used_by_decision.as_deref(),
        Some(retry.decision_id.as_str())
    );

    // A second retry is pending again, on a new approval.
    let second = bot.decide(&refund(250, "R-2")).await.unwrap();
    assert_eq!(second.decision, Decision::ApprovalRequired);
    assert_ne!(second.approval.unwrap().id, pending.id);

    // Every step is in the audit log.
    let log = all_audit(&s.admin).await;
    let steps: Vec<&str> = log
        .iter()
        .filter(|e| e.resource_id == pending.id)
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(
        steps,
        ["approval.request", "approval.approve", "approval.use"]
    );
    let approve = log.iter().find(|e| e.action == "approval.approve").unwrap();
    assert!(
        approve.actor.human_id.is_some(),
        "the approver is attributable"
    );
    assert!(log.iter().any(|e| e.action == "decision.approval_required"
        && e.after.as_ref().unwrap()["approval"] == json!(pending.id)));

    // Webhooks on creation, decision and use, Slack-compatible.
    let deliveries = s
        .admin
        .list_deliveries(
            &hook.id,
            &DeliveryQuery {
                limit: Some(500),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .items;
    let events: Vec<&str> = deliveries
        .iter()
        .filter(|d| d.payload["data"]["id"] == json!(pending.id))
        .map(|d| d.event.as_str())
        .collect();
    assert_eq!(
        events,
        ["approval.requested", "approval.approved", "approval.used"]
    );
    let text = deliveries[0].payload["text"].as_str().unwrap();
    assert!(
        text.contains("support-leads") && text.contains("issue_refund"),
        "{text}"
    );

    // Metrics: through the API and Prometheus.
    let stats = s.admin.approval_stats().await.unwrap();
    let low = stats.tiers.iter().find(|t| t.risk_tier == "low").unwrap();
    assert_eq!((low.approved, low.pending), (1, 1));
    assert!(low.p50_seconds.is_some());
    let (status, metrics) = s
        .admin
        .raw(Method::GET, "/metrics", None, None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let text = metrics.as_str().unwrap();
    assert!(
        text.contains(
            "steward_approvals_total{event=\"approved\",kind=\"action\",risk_tier=\"low\"}"
        ),
        "{text}"
    );
    assert!(
        text.contains("steward_approval_time_to_approval_seconds"),
        "{text}"
    );
    s.stop().await;
}

async fn a_different_request_is_not_covered(b: Backend) {
    let Refunds { s, bot, lead } = refunds(b).await;
    let id = bot
        .decide(&refund(250, "R-7"))
        .await
        .unwrap()
        .approval
        .unwrap()
        .id;
    lead.approve(&id, None).await.unwrap();
    // Another amount, another resource: not covered, each needs its own approval.
    for other in [refund(251, "R-7"), refund(250, "R-8")] {
        let d = bot.decide(&other).await.unwrap();
        assert_eq!(d.decision, Decision::ApprovalRequired);
        assert_ne!(d.approval.unwrap().id, id);
    }
    // The same request through another principal chain is not covered either.
    let mut on_behalf = refund(250, "R-7");
    human(&s.admin, "carol@example.com").await;
    on_behalf.on_behalf_of = Some("carol@example.com".into());
    on_behalf.principal = Some(PrincipalRef {
        principal_type: "agent".into(),
        id: "support-bot".into(),
    });
    on_behalf.on_behalf_of = None;
    let via_admin = s.admin.decide(&on_behalf).await.unwrap();
    // Same chain (the agent) named by an enforcement point: the same request.
    assert_eq!(via_admin.decision, Decision::Allow);
    assert_eq!(via_admin.approval.unwrap().id, id);
    // Denied means deny, with the approver's reason.
    let id = bot
        .decide(&refund(900, "R-9"))
        .await
        .unwrap()
        .approval
        .unwrap()
        .id;
    lead.deny(&id, Some("over the customer's total"))
        .await
        .unwrap();
    let d = bot.decide(&refund(900, "R-9")).await.unwrap();
    assert_eq!(d.decision, Decision::Deny);
    assert!(
        d.remediation
            .unwrap()
            .message
            .contains("over the customer's total")
    );
    // What policies never read (an undeclared context key) does not make
    // it another request: still denied, not asked again.
    let mut padded = refund(900, "R-9");
    padded.context.insert("nonce".into(), json!(1));
    assert_eq!(bot.decide(&padded).await.unwrap().decision, Decision::Deny);
    s.stop().await;
}

async fn expiry_follows_an_injected_clock(b: Backend) {
    let Refunds { s, bot, lead } = refunds(b).await;
    let store = s.server.store();
    let id = bot
        .decide(&refund(300, "R-3"))
        .await
        .unwrap()
        .approval
        .unwrap()
        .id;
    // An hour later (the request lifetime) nobody decided: expired, which means no.
    let expired = store
        .expire_approvals(Utc::now() + Duration::hours(1) + Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(
        bot.wait_approval(&id, 5).await.unwrap().status,
        ApprovalStatus::Expired
    );
    assert_eq!(
        code(lead.approve(&id, None).await),
        ErrorCode::ApprovalClosed
    );
    // Asking again files a new request; approved, its grant lasts 15 minutes.
    let again = bot.decide(&refund(300, "R-3")).await.unwrap();
    assert_eq!(again.decision, Decision::ApprovalRequired);
    let renewed = again.approval.unwrap().id;
    assert_ne!(renewed, id);
    lead.approve(&renewed, None).await.unwrap();
    assert!(
        store
            .expire_approvals(Utc::now() + Duration::minutes(14))
            .await
            .unwrap()
            .is_empty()
    );
    let expired = store
        .expire_approvals(Utc::now() + Duration::minutes(16))
        .await
        .unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].1.status, ApprovalStatus::Expired);
    let late = bot.decide(&refund(300, "R-3")).await.unwrap();
    assert_eq!(late.decision, Decision::ApprovalRequired);
    let log = all_audit(&s.admin).await;
    assert_eq!(
        log.iter().filter(|e| e.action == "approval.expire").count(),
        2
    );
    let stats = s.admin.approval_stats().await.unwrap();
    assert_eq!(
        stats
            .tiers
            .iter()
            .find(|t| t.risk_tier == "low")
            .unwrap()
            .expired,
        2
    );
    s.stop().await;
}

async fn separation_of_duties_is_enforced(b: Backend) {
    let Refunds { s, bot, lead } = refunds(b).await;
    let admin = &s.admin;
    // Alice owns the bot; even as a support lead she may not approve for it.
    admin
        .update_human(
            "alice@example.com",
            &UpdateHuman {
                roles: Some(vec!["support-leads".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (_, alice) = person(admin, "alice@example.com", &[]).await;
    let id = bot
        .decide(&refund(500, "R-4"))
        .await
        .unwrap()
        .approval
        .unwrap()
        .id;
    let before = all_audit(admin).await.len();
    assert_eq!(
        code(alice.approve(&id, None).await),
        ErrorCode::SeparationOfDuties
    );
    // Not a person, not in the group, an agent, a denial without reason: refused.
    assert_eq!(
        code(admin.approve(&id, None).await),
        ErrorCode::NotAnApprover
    );
    let (_, outsider) = person(admin, "olga@example.com", &[]).await;
    assert_eq!(
        code(outsider.approve(&id, None).await),
        ErrorCode::NotAnApprover
    );
    assert_eq!(code(bot.approve(&id, None).await), ErrorCode::Forbidden);
    assert_eq!(code(lead.deny(&id, None).await), ErrorCode::InvalidRequest);
    assert_eq!(
        code(lead.approve("apr_nope", None).await),
        ErrorCode::NotFound
    );
    // A person the agent acts for may not approve its request either.
    let mut for_lee = refund(500, "R-5");
    for_lee.principal = Some(PrincipalRef {
        principal_type: "agent".into(),
        id: "support-bot".into(),
    });
    admin
        .put_policy(&PutPolicy {
            id: "humans-refund".into(),
            text: r#"permit(principal is Human, action == Action::"issue_refund", resource);"#
                .into(),
            ..Default::default()
        })
        .await
        .unwrap();
    for_lee.on_behalf_of = Some("lee@example.com".into());
    let d = admin.decide(&for_lee).await.unwrap();
    let lee_id = d.approval.unwrap().id;
    assert_eq!(
        code(lead.approve(&lee_id, None).await),
        ErrorCode::SeparationOfDuties
    );
    // Nothing changed: still pending, and only the new request is in the log.
    assert_eq!(
        admin.get_approval(&id).await.unwrap().status,
        ApprovalStatus::Pending
    );
    let log = all_audit(admin).await;
    assert!(
        log[before..]
            .iter()
            .all(|e| !e.action.starts_with("approval.approve"))
    );
    // Another lead may.
    let (_, other) = person(admin, "lin@example.com", &["support-leads"]).await;
    assert_eq!(
        other.approve(&id, None).await.unwrap().status,
        ApprovalStatus::Approved
    );
    // Asking again for a request someone else filed makes you a requester
    // too: an approver who re-sends it may not approve it.
    let id = bot
        .decide(&refund(400, "R-44"))
        .await
        .unwrap()
        .approval
        .unwrap()
        .id;
    let (lee, lee_client) = person(admin, "lee@example.com", &["support-leads"]).await;
    let lee_admin = s.client(
        &token_for(admin, "lee-pep", TokenRole::Admin, "lee@example.com")
            .await
            .secret,
    );
    let mut resent = refund(400, "R-44");
    resent.principal = Some(PrincipalRef {
        principal_type: "agent".into(),
        id: "support-bot".into(),
    });
    let again = lee_admin.decide(&resent).await.unwrap();
    assert_eq!(again.approval.unwrap().id, id);
    assert_eq!(
        code(lee_client.approve(&id, None).await),
        ErrorCode::SeparationOfDuties
    );
    // Who was added, by whom, is in the audit log.
    let log = all_audit(admin).await;
    let added = log
        .iter()
        .find(|e| e.action == "approval.exclude" && e.resource_id == id)
        .expect("the new requester is audited");
    assert_eq!(added.actor.human_id.as_deref(), Some(lee.id.as_str()));
    let excluded = |side: &Option<serde_json::Value>| {
        side.as_ref().unwrap()["excluded"]
            .as_array()
            .unwrap()
            .contains(&json!(lee.id))
    };
    assert!(
        !excluded(&added.before) && excluded(&added.after),
        "{added:?}"
    );
    s.stop().await;
}

async fn one_grant_two_concurrent_uses(b: Backend) {
    let Refunds { s, bot, lead } = refunds(b).await;
    let id = bot
        .decide(&refund(400, "R-6"))
        .await
        .unwrap()
        .approval
        .unwrap()
        .id;
    lead.approve(&id, None).await.unwrap();
    let tries: Vec<_> = (0..8)
        .map(|_| {
            let bot = bot.clone();
            tokio::spawn(async move { bot.decide(&refund(400, "R-6")).await.unwrap() })
        })
        .collect();
    let mut allowed = 0;
    for t in tries {
        let d = t.await.unwrap();
        match d.decision {
            Decision::Allow => {
                allowed += 1;
                assert_eq!(d.approval.unwrap().id, id);
            }
            Decision::ApprovalRequired => assert_ne!(d.approval.unwrap().id, id),
            Decision::Deny => panic!("unexpected deny: {d:?}"),
        }
    }
    assert_eq!(allowed, 1, "exactly one use of one grant");
    let log = all_audit(&s.admin).await;
    assert_eq!(log.iter().filter(|e| e.action == "approval.use").count(), 1);
    // The losers share one new pending approval.
    let pending = s
        .admin
        .list_approvals(&ApprovalFilter {
            status: Some("pending".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(pending.items.len(), 1);
    s.stop().await;
}

async fn high_risk_registration_walks_security_then_legal(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = &s.admin;
    human(admin, "jordan@example.com").await;
    let (_, owner) = person(admin, "jordan@example.com", &[]).await;
    let agent = admin
        .register_agent(&RegisterAgent {
            name: "support-assistant".into(),
            owner: "jordan@example.com".into(),
            persona: Some("Customer Support Assistant".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (agent.state, agent.risk_tier),
        (AgentState::PendingApproval, RiskTier::High)
    );
    let approval = pending_approval(admin, "support-assistant", "registration").await;
    let groups: Vec<&str> = approval.steps.iter().map(|s| s.group.as_str()).collect();
    assert_eq!(groups, ["security", "legal"]);
    assert_eq!(approval.risk_tier, RiskTier::High);
    // Waiting for security, as a filter shows.
    let for_security = admin
        .list_approvals(&ApprovalFilter {
            group: Some("security".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(for_security.items.len(), 1);
    assert_eq!(
        code(
            admin
                .list_approvals(&ApprovalFilter {
                    status: Some("maybe".into()),
                    ..Default::default()
                })
                .await
        ),
        ErrorCode::InvalidQuery
    );
    // No shortcut: activation goes through the chain.
    assert_eq!(
        code(admin.activate_agent("support-assistant", None).await),
        ErrorCode::ApprovalPending
    );
    let (_, sam) = person(admin, "sam@example.com", &["security", "legal"]).await;
    let (_, lucia) = person(admin, "lucia@example.com", &["legal"]).await;
    // Legal cannot go first; the owner cannot approve at all.
    assert_eq!(
        code(lucia.approve(&approval.id, None).await),
        ErrorCode::NotAnApprover
    );
    assert_eq!(
        code(owner.approve(&approval.id, None).await),
        ErrorCode::SeparationOfDuties
    );
    let step = sam
        .approve(&approval.id, Some("scopes reviewed"))
        .await
        .unwrap();
    assert_eq!(step.status, ApprovalStatus::Pending);
    assert_eq!(step.current_group(), Some("legal"));
    assert_eq!(
        admin.get_agent("support-assistant").await.unwrap().state,
        AgentState::PendingApproval
    );
    // The same person may not take the legal step too.
    assert_eq!(
        code(sam.approve(&approval.id, None).await),
        ErrorCode::SeparationOfDuties
    );
    let done = lucia
        .approve(&approval.id, Some("DPA in place"))
        .await
        .unwrap();
    assert_eq!(done.status, ApprovalStatus::Approved);
    assert_eq!(
        done.steps[1].decided_by_email.as_deref(),
        Some("lucia@example.com")
    );
    assert_eq!(
        admin.get_agent("support-assistant").await.unwrap().state,
        AgentState::Active
    );
    assert_eq!(
        code(lucia.approve(&approval.id, None).await),
        ErrorCode::ApprovalClosed
    );

    // A medium one needs security only; a denial rejects it.
    admin
        .register_agent(&RegisterAgent {
            name: "reader".into(),
            owner: "jordan@example.com".into(),
            roles: Some(vec!["db-reader".into()]),
            classifications: Some(vec!["confidential".into()]),
            ..Default::default()
        })
        .await
        .unwrap();
    let medium = pending_approval(admin, "reader", "registration").await;
    assert_eq!(medium.steps.len(), 1);
    sam.deny(&medium.id, Some("no purpose given"))
        .await
        .unwrap();
    let reader = admin.get_agent("reader").await.unwrap();
    assert_eq!(reader.state, AgentState::Rejected);
    assert!(reader.state_reason.unwrap().contains("no purpose given"));
    let log = all_audit(admin).await;
    assert!(
        log.iter()
            .any(|e| e.action == "agent.activate" && e.actor.human_id.is_some())
    );
    assert!(
        log.iter()
            .any(|e| e.action == "agent.reject" && e.resource_id == reader.id)
    );
    let stats = admin.approval_stats().await.unwrap();
    let high = stats.tiers.iter().find(|t| t.risk_tier == "high").unwrap();
    let medium = stats
        .tiers
        .iter()
        .find(|t| t.risk_tier == "medium")
        .unwrap();
    assert_eq!((high.approved, medium.denied), (1, 1));
    s.stop().await;
}

async fn mover_change_waits_for_approval(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = &s.admin;
    human(admin, "jordan@example.com").await;
    low_risk_agent(admin, "helper", "jordan@example.com").await;
    // A change within the tier applies at once.
    let same = admin
        .update_agent(
            "helper",
            &UpdateAgent {
                roles: Some(vec!["kb-reader".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(same.roles, vec!["kb-reader"]);
    // Internal data raises it to medium: 202, unchanged, waiting for security.
    let (status, body) = admin
        .raw(
            Method::PATCH,
            "/v1/agents/helper",
            Some(json!({ "classifications": ["public", "internal"] }).to_string()),
            Some("application/json"),
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["classifications"], json!(["public"]));
    assert_eq!(body["risk_tier"], json!("low"));
    let change = pending_approval(admin, "helper", "change").await;
    assert_eq!(change.risk_tier, RiskTier::Medium);
    assert_eq!(
        change.request["to"]["classifications"],
        json!(["public", "internal"])
    );
    // Unknown roles are refused and change nothing.
    assert_eq!(
        code(
            admin
                .update_agent(
                    "helper",
                    &UpdateAgent {
                        roles: Some(vec!["nope".into()]),
                        ..Default::default()
                    }
                )
                .await
        ),
        ErrorCode::UnknownReference
    );
    // A second change while one waits is refused.
    assert_eq!(
        code(
            admin
                .update_agent(
                    "helper",
                    &UpdateAgent {
                        classifications: Some(vec!["pii".into()]),
                        ..Default::default()
                    }
                )
                .await
        ),
        ErrorCode::ApprovalPending
    );
    // A change within the tier still applies while one waits; approving
    // the waiting one later does not undo it.
    let (unchanged, held) = admin
        .update_agent_or_hold(
            "helper",
            &UpdateAgent {
                roles: Some(vec![]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(unchanged.roles.is_empty() && held.is_none());
    let (_, sam) = person(admin, "sam@example.com", &["security"]).await;
    sam.approve(&change.id, None).await.unwrap();
    let moved = admin.get_agent("helper").await.unwrap();
    assert_eq!(moved.classifications, vec!["public", "internal"]);
    assert!(
        moved.roles.is_empty(),
        "a removed role came back: {moved:?}"
    );
    assert_eq!(
        (moved.risk_tier, moved.state),
        (RiskTier::Medium, AgentState::Active)
    );
    s.stop().await;
}

async fn persona_rule_and_authzen(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = &s.admin;
    human(admin, "jordan@example.com").await;
    admin
        .put_resource_type(&PutResourceType {
            name: "refund".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .put_action(&PutAction {
            name: "issue_refund".into(),
            resource_types: vec!["refund".into()],
            context: [("amount".to_string(), "Long".to_string())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .put_policy(&PutPolicy {
            id: "refunds".into(),
            text: r#"permit(principal in Role::"refund-issuer", action == Action::"issue_refund", resource);"#.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .register_agent(&RegisterAgent {
            name: "assistant".into(),
            owner: "jordan@example.com".into(),
            persona: Some("Customer Support Assistant".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    approve_registration(admin, "assistant").await.unwrap();
    // The persona asks for a human on every refund: the default group.
    let (status, body) = admin
        .raw(
            Method::POST,
            "/access/v1/evaluation",
            Some(
                json!({
                    "subject": {"type": "agent", "id": "assistant"},
                    "action": {"name": "issue_refund", "properties": {"amount": 20}},
                    "resource": {"type": "refund", "id": "R-1"},
                })
                .to_string(),
            ),
            Some("application/json"),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["decision"], json!(false));
    assert_eq!(body["context"]["outcome"], json!("approval_required"));
    let id = body["context"]["approval"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        body["context"]["approval"]["approver_groups"],
        json!(["approvers"])
    );
    // What an evaluation holds for approval is not what a search lists:
    // the search answers what would be allowed now.
    let pending = admin
        .list_approvals(&ApprovalFilter::default())
        .await
        .unwrap()
        .items
        .len();
    for (path, query) in [
        (
            "/access/v1/search/action",
            json!({ "subject": {"type": "agent", "id": "assistant"}, "resource": {"type": "refund", "id": "R-1"}, "context": {"amount": 20} }),
        ),
        (
            "/access/v1/search/subject",
            json!({ "subject": {"type": "agent"}, "action": {"name": "issue_refund"}, "resource": {"type": "refund", "id": "R-1"}, "context": {"amount": 20} }),
        ),
    ] {
        let (status, found) = admin
            .raw(
                Method::POST,
                path,
                Some(query.to_string()),
                Some("application/json"),
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{found}");
        assert_eq!(found["results"], json!([]), "{path}: {found}");
    }
    assert_eq!(
        admin
            .list_approvals(&ApprovalFilter::default())
            .await
            .unwrap()
            .items
            .len(),
        pending,
        "a search asked for approval"
    );
    assert_eq!(
        body["context"]["approval"]["wait"]["href"],
        json!(format!("/v1/approvals/{id}/wait"))
    );
    let (_, ana) = person(admin, "ana@example.com", &["approvers"]).await;
    ana.approve(&id, None).await.unwrap();
    let mut req = DecisionRequest {
        principal: Some(PrincipalRef {
            principal_type: "agent".into(),
            id: "assistant".into(),
        }),
        action: "issue_refund".into(),
        resource: ResourceRef {
            resource_type: "refund".into(),
            id: "R-1".into(),
            attributes: Default::default(),
        },
        context: json!({ "amount": 20 }).as_object().unwrap().clone(),
        ..Default::default()
    };
    assert_eq!(admin.decide(&req).await.unwrap().decision, Decision::Allow);
    req.context = json!({ "amount": 21 }).as_object().unwrap().clone();
    assert_eq!(
        admin.decide(&req).await.unwrap().decision,
        Decision::ApprovalRequired
    );
    // A child without the persona still needs what its parent's persona
    // asks for: access only narrows down a chain.
    admin
        .create_persona(&CreatePersona {
            name: "Payments Agent".into(),
            roles: vec!["refund-issuer".into()],
            classifications: vec!["public".into()],
            max_children: Some(3),
            approval_required_for: vec!["issue_refund".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    for (name, persona, parent) in [
        ("payer", Some("Payments Agent"), None),
        ("payer-child", None, Some("payer")),
    ] {
        admin
            .register_agent(&RegisterAgent {
                name: name.into(),
                owner: "jordan@example.com".into(),
                persona: persona.map(String::from),
                parent: parent.map(String::from),
                roles: parent.map(|_| vec!["refund-issuer".to_string()]),
                classifications: parent.map(|_| vec!["public".to_string()]),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    req.principal.as_mut().unwrap().id = "payer-child".into();
    let answer = admin.decide(&req).await.unwrap();
    assert_eq!(answer.decision, Decision::ApprovalRequired, "{answer:?}");
    let filed = admin
        .get_approval(&answer.approval.as_ref().unwrap().id)
        .await
        .unwrap();
    assert!(
        filed.reason.contains("persona 'Payments Agent'"),
        "{filed:?}"
    );
    s.stop().await;
}

/// Two nodes on one PostgreSQL: an agent waits on one node while a person
/// approves on the other; the waiter sees it (it re-reads the store), and the
/// grant is used once across both nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_sees_a_decision_taken_on_another_node() {
    let Refunds { s, bot, lead } = refunds(Backend::Postgres).await;
    let (node2, admin2) = s.second_node().await;
    let id = bot
        .decide(&refund(700, "R-10"))
        .await
        .unwrap()
        .approval
        .unwrap()
        .id;
    let bot2 = Client::new(&node2.url(), bot.token().map(str::to_string));
    let waiter = {
        let bot2 = bot2.clone();
        let id = id.clone();
        tokio::spawn(async move { bot2.wait_approval(&id, 30).await })
    };
    lead.approve(&id, None).await.unwrap();
    assert_eq!(
        waiter.await.unwrap().unwrap().status,
        ApprovalStatus::Approved
    );
    // Used on node 2; node 1 finds it spent.
    assert_eq!(
        bot2.decide(&refund(700, "R-10")).await.unwrap().decision,
        Decision::Allow
    );
    assert_eq!(
        bot.decide(&refund(700, "R-10")).await.unwrap().decision,
        Decision::ApprovalRequired
    );
    assert_eq!(
        admin2.get_approval(&id).await.unwrap().status,
        ApprovalStatus::Used
    );
    node2.shutdown().await.unwrap();
    s.stop().await;
}

async fn bad_input_changes_nothing(b: Backend) {
    let Refunds { s, bot, lead } = refunds(b).await;
    let id = bot
        .decide(&refund(150, "R-11"))
        .await
        .unwrap()
        .approval
        .unwrap()
        .id;
    let before = all_audit(&s.admin).await.len();
    let json_ct = Some("application/json");
    let cases: Vec<(Method, String, Option<String>, u16, &str)> = vec![
        (
            Method::GET,
            format!("/v1/approvals/{id}/wait?timeout=31"),
            None,
            400,
            "invalid_query",
        ),
        (
            Method::GET,
            format!("/v1/approvals/{id}/wait?timeout=soon"),
            None,
            400,
            "invalid_query",
        ),
        (
            Method::GET,
            "/v1/approvals?kind=vibes".into(),
            None,
            400,
            "invalid_query",
        ),
        (
            Method::GET,
            "/v1/approvals?risk_tier=extreme".into(),
            None,
            400,
            "invalid_query",
        ),
        (
            Method::GET,
            "/v1/approvals/apr_missing".into(),
            None,
            404,
            "not_found",
        ),
        (
            Method::POST,
            format!("/v1/approvals/{id}/approve"),
            Some("{\"comment\": 5}".into()),
            400,
            "invalid_request",
        ),
        (
            Method::POST,
            format!("/v1/approvals/{id}/approve"),
            Some("{\"coment\": \"x\"}".into()),
            400,
            "invalid_request",
        ),
        (
            Method::POST,
            format!("/v1/approvals/{id}/deny"),
            Some("{".into()),
            400,
            "invalid_json",
        ),
        (
            Method::POST,
            format!("/v1/approvals/{id}/deny"),
            Some("{}".into()),
            400,
            "invalid_request",
        ),
        (
            Method::POST,
            "/v1/approvals/apr_missing/approve".into(),
            Some("{}".into()),
            404,
            "not_found",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let (got, answer) = lead
            .raw(method.clone(), &path, body, json_ct)
            .await
            .unwrap();
        assert_eq!(got, status, "{method} {path}: {answer}");
        assert_eq!(
            answer["error"]["code"],
            json!(code),
            "{method} {path}: {answer}"
        );
    }
    // Another tenant's approval is not found.
    let other = s
        .admin
        .create_tenant(&CreateTenant {
            id: "acme".into(),
            name: "Acme".into(),
        })
        .await
        .unwrap();
    let token = s
        .admin
        .create_token(&CreateToken {
            name: "acme admin".into(),
            role: TokenRole::Admin,
            human: None,
            expires_at: None,
            tenant: Some(other.id),
        })
        .await
        .unwrap();
    assert_eq!(
        code(s.client(&token.secret).get_approval(&id).await),
        ErrorCode::NotFound
    );
    assert_eq!(all_audit(&s.admin).await.len(), before);
    assert_eq!(
        lead.get_approval(&id).await.unwrap().status,
        ApprovalStatus::Pending
    );
    s.stop().await;
}

async fn chains_are_configurable(b: Backend) {
    // Low risk needs security; medium needs nobody.
    let s = TestServer::start_with(b, |c| {
        c.approvals.chains.low = vec!["security".into()];
        c.approvals.chains.medium = vec![];
    })
    .await;
    let admin = &s.admin;
    human(admin, "jordan@example.com").await;
    let low = low_risk_agent(admin, "helper", "jordan@example.com").await;
    assert_eq!(low.state, AgentState::PendingApproval);
    assert_eq!(
        pending_approval(admin, "helper", "registration")
            .await
            .steps
            .len(),
        1
    );
    let medium = admin
        .register_agent(&RegisterAgent {
            name: "reader".into(),
            owner: "jordan@example.com".into(),
            roles: Some(vec!["db-reader".into()]),
            classifications: Some(vec!["confidential".into()]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (medium.risk_tier, medium.state),
        (RiskTier::Medium, AgentState::Active)
    );
    approve_registration(admin, "helper").await.unwrap();
    assert_eq!(
        admin.get_agent("helper").await.unwrap().state,
        AgentState::Active
    );
    // A draft goes the same way when it is submitted: a low-risk one waits
    // for security here, a medium one is active at once.
    for (name, classification, waits) in [
        ("drafted", "public", true),
        ("drafted-reader", "confidential", false),
    ] {
        admin
            .register_agent(&RegisterAgent {
                name: name.into(),
                owner: "jordan@example.com".into(),
                classifications: Some(vec![classification.into()]),
                draft: true,
                ..Default::default()
            })
            .await
            .unwrap();
        admin.submit_agent(name, None).await.unwrap();
        let state = admin.get_agent(name).await.unwrap().state;
        if waits {
            assert_eq!(state, AgentState::PendingApproval, "{name}");
            pending_approval(admin, name, "registration").await;
        } else {
            assert_eq!(state, AgentState::Active, "{name}");
        }
    }
    s.stop().await;
}

async fn high_risk_actions_need_several_groups(b: Backend) {
    let Refunds { s, bot, lead } = refunds(b).await;
    let admin = &s.admin;
    admin
        .create_role(&CreateRole {
            name: "finance".into(),
            description: "Approve very large refunds".into(),
            writes: false,
        })
        .await
        .unwrap();
    admin
        .put_policy(&PutPolicy {
            id: "refunds-over-1000".into(),
            text: r#"@approval("support-leads, finance") permit(principal in Role::"refund-issuer", action == Action::"issue_refund", resource) when { context.amount > 1000 };"#.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let held = bot.decide(&refund(5000, "R-12")).await.unwrap();
    let approval = held.approval.unwrap();
    assert_eq!(approval.groups, vec!["support-leads", "finance"]);
    let step = lead.approve(&approval.id, None).await.unwrap();
    assert_eq!(
        (step.status, step.current_group()),
        (ApprovalStatus::Pending, Some("finance"))
    );
    // Still held until finance says yes too.
    assert_eq!(
        bot.decide(&refund(5000, "R-12")).await.unwrap().decision,
        Decision::ApprovalRequired
    );
    let (_, fiona) = person(admin, "fiona@example.com", &["finance"]).await;
    assert_eq!(
        fiona.approve(&approval.id, None).await.unwrap().status,
        ApprovalStatus::Approved
    );
    assert_eq!(
        bot.decide(&refund(5000, "R-12")).await.unwrap().decision,
        Decision::Allow
    );
    s.stop().await;
}

/// A quota on the bot's refunds: one a day, then `on_exceed`.
fn one_refund_a_day(on_exceed: OnExceed) -> PutQuota {
    PutQuota {
        name: "one-refund-a-day".into(),
        scope: Some(QuotaScope::Agent),
        subject: Some("support-bot".into()),
        metric: "requests".into(),
        action: Some("issue_refund".into()),
        window: "day".into(),
        limit: 1.0,
        on_exceed,
        ..Default::default()
    }
}

/// An `approval_required` refund quota the bot has already spent, and a
/// person of the `approvers` group who may let it go over.
/// A refund of `amount` over the day's spent quota, asked twice: the
/// lead's approval granted, then the approvers' filed. The approver, and
/// the two approvals.
async fn lead_approved(
    admin: &Client,
    bot: &Client,
    lead: &Client,
    amount: i64,
    reference: &str,
) -> (Client, ApprovalRef, ApprovalRef) {
    let approver = quota_spent(admin, bot).await;
    let ask = || async {
        bot.decide(&refund(amount, reference))
            .await
            .unwrap()
            .approval
            .unwrap()
    };
    let by_lead = ask().await;
    lead.approve(&by_lead.id, None).await.unwrap();
    (approver, by_lead, ask().await)
}

async fn quota_spent(admin: &Client, bot: &Client) -> Client {
    let (_, approver) = person(admin, "april@example.com", &["approvers"]).await;
    admin
        .put_quota(&one_refund_a_day(OnExceed::ApprovalRequired))
        .await
        .unwrap();
    assert_eq!(
        bot.decide(&refund(50, "R-1")).await.unwrap().decision,
        Decision::Allow
    );
    approver
}

/// A request needing a policy's approval and a quota's gets both, each from
/// its own groups, and converges; a grant serves only the groups that
/// approved it; a quota's denial does not use up a grant.
async fn each_approval_needs_its_own_grant(b: Backend) {
    let Refunds { s, bot, lead } = refunds(b).await;
    let admin = &s.admin;
    admin
        .create_role(&CreateRole {
            name: "finance".into(),
            description: "Approve refunds".into(),
            writes: false,
        })
        .await
        .unwrap();
    let approver = quota_spent(admin, &bot).await;

    // Over 100 and over the quota: the support lead's approval first...
    let held = bot.decide(&refund(500, "R-2")).await.unwrap();
    let by_lead = held.approval.unwrap();
    assert_eq!(by_lead.groups, vec!["support-leads"]);
    lead.approve(&by_lead.id, None).await.unwrap();
    // ...then the quota asks the approvers; the lead's grant is kept.
    let held = bot.decide(&refund(500, "R-2")).await.unwrap();
    assert_eq!(held.decision, Decision::ApprovalRequired);
    let by_approvers = held.approval.unwrap();
    assert_eq!(by_approvers.groups, vec!["approvers"]);
    assert_eq!(held.exceeded.unwrap().name, "one-refund-a-day");
    assert_eq!(
        admin.get_approval(&by_lead.id).await.unwrap().status,
        ApprovalStatus::Approved
    );
    approver.approve(&by_approvers.id, None).await.unwrap();
    // Both grants together let it through, once.
    let allowed = bot.decide(&refund(500, "R-2")).await.unwrap();
    assert_eq!(allowed.decision, Decision::Allow, "{allowed:?}");
    for id in [&by_lead.id, &by_approvers.id] {
        let used = admin.get_approval(id).await.unwrap();
        assert_eq!(used.status, ApprovalStatus::Used);
        assert_eq!(
            used.used_by_decision.as_deref(),
            Some(allowed.decision_id.as_str())
        );
    }
    assert_eq!(
        bot.decide(&refund(500, "R-2")).await.unwrap().decision,
        Decision::ApprovalRequired
    );

    // An approvers' grant (for the quota) is not a support lead's: with the
    // quota gone, the policy still asks the lead.
    let held = bot.decide(&refund(200, "R-3")).await.unwrap();
    let lead_ask = held.approval.unwrap();
    lead.approve(&lead_ask.id, None).await.unwrap();
    let held = bot.decide(&refund(200, "R-3")).await.unwrap();
    let quota_ask = held.approval.unwrap();
    assert_eq!(quota_ask.groups, vec!["approvers"]);
    approver.approve(&quota_ask.id, None).await.unwrap();
    admin
        .put_policy(&PutPolicy {
            id: "refunds-over-100".into(),
            text: r#"@approval("finance") permit(principal in Role::"refund-issuer", action == Action::"issue_refund", resource) when { context.amount > 100 };"#.into(),
            owner: "finance@example.com".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    admin.delete_quota("one-refund-a-day").await.unwrap();
    let held = bot.decide(&refund(200, "R-3")).await.unwrap();
    assert_eq!(held.decision, Decision::ApprovalRequired, "{held:?}");
    assert_eq!(held.approval.unwrap().groups, vec!["finance"]);
    assert_eq!(
        admin.get_approval(&quota_ask.id).await.unwrap().status,
        ApprovalStatus::Approved
    );

    // A quota that denies keeps the grant for when there is room again.
    admin
        .put_quota(&one_refund_a_day(OnExceed::Deny))
        .await
        .unwrap();
    assert_eq!(
        bot.decide(&refund(50, "R-5")).await.unwrap().decision,
        Decision::Allow
    );
    let (_, fiona) = person(admin, "fiona@example.com", &["finance"]).await;
    let held = bot.decide(&refund(300, "R-4")).await.unwrap();
    let finance_ask = held.approval.unwrap();
    fiona.approve(&finance_ask.id, None).await.unwrap();
    let denied = bot.decide(&refund(300, "R-4")).await.unwrap();
    assert_eq!(denied.decision, Decision::Deny, "{denied:?}");
    assert_eq!(
        admin.get_approval(&finance_ask.id).await.unwrap().status,
        ApprovalStatus::Approved
    );
    admin.delete_quota("one-refund-a-day").await.unwrap();
    let allowed = bot.decide(&refund(300, "R-4")).await.unwrap();
    assert_eq!(allowed.decision, Decision::Allow, "{allowed:?}");
    assert_eq!(allowed.approval.unwrap().id, finance_ask.id);
    s.stop().await;
}

/// The last approval of a registration (which activates the agent) racing
/// the agent's decommissioning: one of them wins, the other gets a clear
/// answer; never a deadlock or a 500 (both lock the agent, then the
/// approval).
async fn approving_and_decommissioning_race_cleanly(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = &s.admin;
    human(admin, "jordan@example.com").await;
    let (_, security) = person(admin, "sec@example.com", &["security"]).await;
    let (_, legal) = person(admin, "law@example.com", &["legal"]).await;
    for i in 0..6 {
        let name = format!("assistant-{i}");
        admin
            .register_agent(&RegisterAgent {
                name: name.clone(),
                owner: "jordan@example.com".into(),
                persona: Some("Customer Support Assistant".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let approval = pending_approval(admin, &name, "registration").await;
        security.approve(&approval.id, None).await.unwrap();
        let (approved, decommissioned) = tokio::join!(
            legal.approve(&approval.id, None),
            admin.decommission_agent(&name, Some("project cancelled")),
        );
        for status in [
            approved.as_ref().err().and_then(|e| e.status()),
            decommissioned.as_ref().err().and_then(|e| e.status()),
        ]
        .into_iter()
        .flatten()
        {
            assert!(status < 500, "{approved:?} {decommissioned:?}");
        }
        // Whatever the order, the agent ends decommissioned.
        let agent = admin.get_agent(&name).await.unwrap();
        if decommissioned.is_ok() {
            assert_eq!(agent.state, AgentState::Decommissioned);
        }
    }
    s.stop().await;
}

/// A first grant does not run out while the request's second approval
/// waits: the expiry sweep leaves it, and the second approval extends it.
async fn a_grant_waits_for_its_sibling(b: Backend) {
    let Refunds { s, bot, lead } = refunds(b).await;
    let admin = &s.admin;
    let (approver, by_lead, by_approvers) = lead_approved(admin, &bot, &lead, 500, "R-2").await;
    assert_eq!(by_approvers.groups, vec!["approvers"]);
    // The lead's grant is past its validity while the approvers think
    // (the approvers' approval was filed while it was valid).
    let store = s.server.store();
    store
        .execute_raw(&format!(
            "UPDATE approvals SET created_at = {} WHERE id = '{}'",
            (Utc::now() - Duration::minutes(2)).timestamp_millis(),
            by_approvers.id
        ))
        .await
        .unwrap();
    store
        .execute_raw(&format!(
            "UPDATE approvals SET grant_expires_at = {} WHERE id = '{}'",
            (Utc::now() - Duration::minutes(1)).timestamp_millis(),
            by_lead.id
        ))
        .await
        .unwrap();
    let expired = store.expire_approvals(Utc::now()).await.unwrap();
    assert!(
        expired.iter().all(|(_, a)| a.id != by_lead.id),
        "{expired:?}"
    );
    // Shown as it stands, approved, whether read or waited for.
    assert_eq!(
        admin.get_approval(&by_lead.id).await.unwrap().status,
        ApprovalStatus::Approved
    );
    assert_eq!(
        bot.wait_approval(&by_lead.id, 0).await.unwrap().status,
        ApprovalStatus::Approved
    );
    approver.approve(&by_approvers.id, None).await.unwrap();
    let allowed = bot.decide(&refund(500, "R-2")).await.unwrap();
    assert_eq!(allowed.decision, Decision::Allow, "{allowed:?}");
    assert_eq!(
        admin.get_approval(&by_lead.id).await.unwrap().status,
        ApprovalStatus::Used
    );
    s.stop().await;
}

/// An approved change never takes an agent beyond the tier its chain
/// covers. A change within the tier that, with the change waiting, would
/// go beyond it is refused; and should the agent get there anyway, the
/// last approval is refused and changes nothing.
async fn a_change_stays_within_its_chain(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = &s.admin;
    human(admin, "jordan@example.com").await;
    for (name, writes) in [("reader", false), ("writer", true)] {
        admin
            .create_role(&CreateRole {
                name: name.into(),
                description: format!("A {name}"),
                writes,
            })
            .await
            .unwrap();
    }
    admin
        .register_agent(&RegisterAgent {
            name: "helper".into(),
            owner: "jordan@example.com".into(),
            roles: Some(vec!["reader".into()]),
            classifications: Some(vec!["public".into()]),
            ..Default::default()
        })
        .await
        .unwrap();
    let confidential = UpdateAgent {
        classifications: Some(vec!["public".into(), "confidential".into()]),
        ..Default::default()
    };
    let writing = UpdateAgent {
        roles: Some(vec!["reader".into(), "writer".into()]),
        ..Default::default()
    };
    // Reading confidential data is medium: security's approval.
    let (_, held) = admin
        .update_agent_or_hold("helper", &confidential)
        .await
        .unwrap();
    assert!(held.is_some());
    let change = pending_approval(admin, "helper", "change").await;
    assert_eq!(change.risk_tier, RiskTier::Medium);
    // Writing public data alone stays low, but writing next to confidential
    // data is high (security, then legal): refused while the change waits.
    assert_eq!(
        code(admin.update_agent("helper", &writing).await),
        ErrorCode::ApprovalPending
    );
    assert_eq!(
        admin.get_agent("helper").await.unwrap().roles,
        vec!["reader"]
    );
    let (_, sam) = person(admin, "sam@example.com", &["security"]).await;
    sam.approve(&change.id, None).await.unwrap();
    let moved = admin.get_agent("helper").await.unwrap();
    assert_eq!(
        (moved.risk_tier, moved.roles),
        (RiskTier::Medium, vec!["reader".to_string()])
    );

    // The same change waits again; the agent gains a writing role anyway
    // (written to the store behind Steward's back).
    admin
        .update_agent(
            "helper",
            &UpdateAgent {
                classifications: Some(vec!["public".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    admin
        .update_agent_or_hold("helper", &confidential)
        .await
        .unwrap();
    let change = pending_approval(admin, "helper", "change").await;
    s.server
        .store()
        .execute_raw(r#"UPDATE agents SET roles = '["reader","writer"]' WHERE name = 'helper'"#)
        .await
        .unwrap();
    let before = all_audit(admin).await.len();
    let refused = sam.approve(&change.id, None).await;
    let message = refused.as_ref().unwrap_err().to_string();
    assert_eq!(code(refused), ErrorCode::ApprovalPending);
    assert!(message.contains("high risk"), "{message}");
    // Nothing changed: the step waits, the agent is as it was.
    assert_eq!(all_audit(admin).await.len(), before);
    assert_eq!(
        admin.get_approval(&change.id).await.unwrap().status,
        ApprovalStatus::Pending
    );
    let agent = admin.get_agent("helper").await.unwrap();
    assert_eq!(agent.classifications, vec!["public"]);
    assert_eq!(agent.risk_tier, RiskTier::Low);
    // It can still be denied.
    assert_eq!(
        sam.deny(&change.id, Some("writes too"))
            .await
            .unwrap()
            .status,
        ApprovalStatus::Denied
    );
    s.stop().await;
}

/// A grant that ran out before its request was asked again is not brought
/// back by the request's new approval: the sweep does not spare it, and
/// approving the new one does not extend it, so the request runs once per
/// approval.
async fn a_lapsed_grant_is_not_revived(b: Backend) {
    let Refunds { s, bot, lead } = refunds(b).await;
    let admin = &s.admin;
    let store = s.server.store();
    let first = bot
        .decide(&refund(500, "R-2"))
        .await
        .unwrap()
        .approval
        .unwrap();
    lead.approve(&first.id, None).await.unwrap();
    // Unused, its grant runs out; the bot asks again before the sweep.
    store
        .execute_raw(&format!(
            "UPDATE approvals SET grant_expires_at = {} WHERE id = '{}'",
            (Utc::now() - Duration::seconds(1)).timestamp_millis(),
            first.id
        ))
        .await
        .unwrap();
    let asked = bot.decide(&refund(500, "R-2")).await.unwrap();
    assert_eq!(asked.decision, Decision::ApprovalRequired);
    let second = asked.approval.unwrap();
    assert_ne!(second.id, first.id);
    store.expire_approvals(Utc::now()).await.unwrap();
    assert_eq!(
        admin.get_approval(&first.id).await.unwrap().status,
        ApprovalStatus::Expired
    );
    let (_, lin) = person(admin, "lin@example.com", &["support-leads"]).await;
    lin.approve(&second.id, None).await.unwrap();
    assert_eq!(
        bot.decide(&refund(500, "R-2")).await.unwrap().decision,
        Decision::Allow
    );
    assert_eq!(
        bot.decide(&refund(500, "R-2")).await.unwrap().decision,
        Decision::ApprovalRequired
    );
    s.stop().await;
}

/// Nor does approving the new one before the sweep ran extend the lapsed
/// grant. The sweep runs every second, so the dates are moved instead of
/// the clock: the first grant runs for five more minutes, and the approval
/// it would be used with is filed six minutes from now, after it lapsed.
async fn a_lapsed_grant_is_not_extended(b: Backend) {
    let Refunds { s, bot, lead } = refunds(b).await;
    let admin = &s.admin;
    let store = s.server.store();
    let (quota_approver, by_lead, by_approvers) =
        lead_approved(admin, &bot, &lead, 600, "R-3").await;
    assert_eq!(by_approvers.groups, vec!["approvers"]);
    let lapses = Utc::now() + Duration::minutes(5);
    store
        .execute_raw(&format!(
            "UPDATE approvals SET grant_expires_at = {} WHERE id = '{}'",
            lapses.timestamp_millis(),
            by_lead.id
        ))
        .await
        .unwrap();
    store
        .execute_raw(&format!(
            "UPDATE approvals SET created_at = {} WHERE id = '{}'",
            (Utc::now() + Duration::minutes(6)).timestamp_millis(),
            by_approvers.id
        ))
        .await
        .unwrap();
    quota_approver
        .approve(&by_approvers.id, None)
        .await
        .unwrap();
    let kept = admin.get_approval(&by_lead.id).await.unwrap();
    assert_eq!(
        kept.grant_expires_at.map(|t| t.timestamp_millis()),
        Some(lapses.timestamp_millis())
    );
    assert!(
        all_audit(admin)
            .await
            .iter()
            .all(|e| e.action != "approval.extend"),
    );
    s.stop().await;
}

/// The owners of the agent's ancestors may not approve its request, as of
/// the decision too: a parent that changed hands after the request was
/// filed has a new owner who may not approve it either.
async fn owners_of_ancestors_as_of_the_decision(b: Backend) {
    let Refunds { s, bot: _, lead } = refunds(b).await;
    let admin = &s.admin;
    human(admin, "carl@example.com").await;
    admin
        .register_agent(&RegisterAgent {
            name: "refund-helper".into(),
            owner: "carl@example.com".into(),
            parent: Some("support-bot".into()),
            roles: Some(vec!["refund-issuer".into()]),
            classifications: Some(vec!["public".into()]),
            ..Default::default()
        })
        .await
        .unwrap();
    let key = admin
        .create_key("refund-helper", &CreateKey::default())
        .await
        .unwrap();
    let helper = s.client(&key.secret);
    let asked = helper.decide(&refund(500, "R-8")).await.unwrap();
    assert_eq!(asked.decision, Decision::ApprovalRequired);
    let id = asked.approval.unwrap().id;
    // The parent changes hands: its new owner is a support lead.
    let (_, lin) = person(admin, "lin@example.com", &["support-leads"]).await;
    admin
        .update_agent(
            "support-bot",
            &UpdateAgent {
                owner: Some("lin@example.com".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        code(lin.approve(&id, None).await),
        ErrorCode::SeparationOfDuties
    );
    assert_eq!(
        lead.approve(&id, None).await.unwrap().status,
        ApprovalStatus::Approved
    );
    s.stop().await;
}

/// An approval about an agent that went away is closed only by someone
/// who may decide it: anyone else is refused and nothing changes.
async fn only_an_approver_closes_an_approval_of_a_gone_agent(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = &s.admin;
    human(admin, "jordan@example.com").await;
    low_risk_agent(admin, "helper", "jordan@example.com").await;
    admin
        .update_agent_or_hold(
            "helper",
            &UpdateAgent {
                classifications: Some(vec!["public".into(), "internal".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let change = pending_approval(admin, "helper", "change").await;
    // Gone without its approvals being closed (written behind Steward's back).
    s.server
        .store()
        .execute_raw("UPDATE agents SET state = 'decommissioned' WHERE name = 'helper'")
        .await
        .unwrap();
    let before = all_audit(admin).await.len();
    let (_, outsider) = person(admin, "olga@example.com", &[]).await;
    assert_eq!(
        code(outsider.approve(&change.id, None).await),
        ErrorCode::NotAnApprover
    );
    let (_, owner) = person(admin, "jordan@example.com", &[]).await;
    assert_eq!(
        code(owner.approve(&change.id, None).await),
        ErrorCode::SeparationOfDuties
    );
    assert_eq!(
        admin.get_approval(&change.id).await.unwrap().status,
        ApprovalStatus::Pending
    );
    // Tokens were created meanwhile: no approval entry was.
    assert!(
        all_audit(admin).await[before..]
            .iter()
            .all(|e| !e.action.starts_with("approval."))
    );
    let (_, sam) = person(admin, "sam@example.com", &["security"]).await;
    assert_eq!(
        code(sam.approve(&change.id, None).await),
        ErrorCode::ApprovalClosed
    );
    assert_eq!(
        admin.get_approval(&change.id).await.unwrap().status,
        ApprovalStatus::Cancelled
    );
    s.stop().await;
}

/// Approving a request's last approval locks the grants it extends before
/// the audit head, in the order using grants takes them (approval rows,
/// then the audit head), so the two never deadlock on PostgreSQL. The test
/// holds the first grant's row as a use does, waits until the approval
/// waits for it, then takes the audit head: the approval must not hold it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approving_takes_grants_before_the_audit_head() {
    use sqlx::Connection;
    let Refunds { s, bot, lead } = refunds(Backend::Postgres).await;
    let admin = &s.admin;
    let (approver, by_lead, by_approvers) = lead_approved(admin, &bot, &lead, 500, "R-2").await;
    let store = s.server.store();
    let mut tx = store.begin().await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    sqlx::query("SELECT id FROM approvals WHERE id = $1 FOR UPDATE")
        .bind(&by_lead.id)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    let approving = {
        let approver = approver.clone();
        let id = by_approvers.id.clone();
        tokio::spawn(async move { approver.approve(&id, None).await })
    };
    let mut watch = sqlx::PgConnection::connect(&steward_testkit::postgres_base_url())
        .await
        .unwrap();
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
        )
        .bind(pid)
        .fetch_one(&mut watch)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let head = sqlx::query("UPDATE audit_head SET size = size WHERE id = 1")
        .execute(&mut *tx)
        .await;
    tx.rollback().await.unwrap();
    assert!(head.is_ok(), "{head:?}");
    let approved = approving.await.unwrap().unwrap();
    assert_eq!(approved.status, ApprovalStatus::Approved);
    let millis = |a: &Approval| a.grant_expires_at.map(|t| t.timestamp_millis());
    assert_eq!(
        millis(&admin.get_approval(&by_lead.id).await.unwrap()),
        millis(&approved)
    );
    watch.close().await.unwrap();
    s.stop().await;
}
