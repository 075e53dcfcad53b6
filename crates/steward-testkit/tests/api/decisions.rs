//! Policies and decisions over HTTP: validation, versioning, chains,
//! freshness of the inventory, remediation and auditing.

use serde_json::json;
use steward_client::{Client, Method};
use steward_testkit::{Backend, TestServer, on_both_backends};
use steward_types::*;

use crate::support::*;

on_both_backends!(
    decisions_follow_policies_and_explain_denials,
    inventory_changes_apply_to_the_next_decision,
    delegation_narrows_access,
    policies_are_validated_and_versioned,
    decision_bad_input,
    decisions_fail_closed_when_the_log_cannot_append,
    stored_attributes_outrank_the_request,
    an_agent_cannot_probe_for_identities
);

/// An agent asking about an agent, person or team as a resource learns
/// what it may do, not whether the tenant has one by that name: an unknown
/// one is decided on as one that is not active. An enforcement point (a
/// token) is told the name is unknown.
async fn an_agent_cannot_probe_for_identities(b: Backend) {
    let s = TestServer::start(b).await;
    human(&s.admin, "alice@example.com").await;
    human(&s.admin, "dora@example.com").await;
    s.admin
        .deactivate_human("dora@example.com", &TransitionRequest::default())
        .await
        .unwrap();
    low_risk_agent(&s.admin, "reviewer", "alice@example.com").await;
    low_risk_agent(&s.admin, "other", "alice@example.com").await;
    s.admin
        .create_team(&CreateTeam {
            name: "payments".into(),
            description: String::new(),
        })
        .await
        .unwrap();
    s.admin
        .put_action(&PutAction {
            name: "inspect".into(),
            description: String::new(),
            resource_types: vec!["Agent".into(), "Human".into(), "Team".into()],
            context: Default::default(),
        })
        .await
        .unwrap();
    s.admin
        .put_policy(&PutPolicy {
            id: "inspect-the-active".into(),
            description: "Agents may inspect active people and agents".into(),
            owner: String::new(),
            text: r#"permit(principal is Agent, action == Action::"inspect", resource)
                when { resource is Team || (resource has active && resource.active) };"#
                .into(),
        })
        .await
        .unwrap();
    let me = agent_client(&s, "reviewer").await;
    let inspect = |kind: &str, id: &str| DecisionRequest {
        action: "inspect".into(),
        resource: ResourceRef {
            resource_type: kind.into(),
            id: id.into(),
            attributes: Default::default(),
        },
        ..Default::default()
    };
    // What an answer says, its id aside and the name asked about as NAME.
    let said = |r: DecisionResponse, name: &str| {
        let hint = serde_json::to_string(&r.remediation).unwrap();
        (
            r.decision,
            r.policies,
            r.errors,
            r.chain,
            hint.replace(name, "NAME"),
        )
    };
    let known = me
        .decide(&inspect("Human", "alice@example.com"))
        .await
        .unwrap();
    assert_eq!(known.decision, Decision::Allow);
    let deactivated = said(
        me.decide(&inspect("Human", "dora@example.com"))
            .await
            .unwrap(),
        "dora@example.com",
    );
    assert_eq!(deactivated.0, Decision::Deny);
    let unknown = said(
        me.decide(&inspect("Human", "ghost@example.com"))
            .await
            .unwrap(),
        "ghost@example.com",
    );
    assert_eq!(unknown, deactivated);
    assert_eq!(
        me.decide(&inspect("Agent", "other"))
            .await
            .unwrap()
            .decision,
        Decision::Allow
    );
    let ghost_agent = me.decide(&inspect("Agent", "no-such-agent")).await.unwrap();
    assert_eq!(ghost_agent.decision, Decision::Deny);
    // A team has nothing to tell apart: the same answer either way, and
    // the same actions found by an AuthZEN search.
    for team in ["payments", "no-such-team"] {
        let r = me.decide(&inspect("Team", team)).await.unwrap();
        assert_eq!(r.decision, Decision::Allow, "{team}");
        let found = me
            .authzen_search_action(&json!({
                "subject": {"type": "agent", "id": "reviewer"},
                "resource": {"type": "team", "id": team},
            }))
            .await
            .unwrap();
        assert_eq!(found["results"], json!([{"name": "inspect"}]), "{team}");
    }
    // Every one of them is on the record.
    let recorded = all_audit(&s.admin)
        .await
        .into_iter()
        .filter(|e| e.action.starts_with("decision.") && e.resource_id == "ghost@example.com")
        .count();
    assert_eq!(recorded, 1);
    // An enforcement point is told the name is unknown.
    let mut pep = inspect("Human", "ghost@example.com");
    pep.principal = Some(PrincipalRef {
        principal_type: "agent".into(),
        id: "reviewer".into(),
    });
    assert_eq!(
        code(s.admin.decide(&pep).await),
        ErrorCode::UnknownReference
    );
    s.stop().await;
}

/// A guardrail reads what an admin stored about a resource; a request may
/// add attributes the store lacks but cannot change a stored one.
async fn stored_attributes_outrank_the_request(b: Backend) {
    let s = TestServer::start(b).await;
    setup(&s.admin).await;
    s.admin
        .put_entity(&ResourceEntity {
            resource_type: "repo".into(),
            id: "payroll".into(),
            attributes: [("classification".to_string(), json!("pii"))].into(),
        })
        .await
        .unwrap();
    let mut request = ask("reviewer", "read", "public");
    request.resource.id = "payroll".into();
    let answer = s.admin.decide(&request).await.unwrap();
    assert_eq!(answer.decision, Decision::Deny, "{answer:?}");
    assert!(
        answer.policies.iter().any(|p| p.id == "no-pii-repos"),
        "{answer:?}"
    );
    // The record shows what was decided on: the stored classification,
    // not the one the request claimed.
    let recorded = all_audit(&s.admin)
        .await
        .into_iter()
        .find(|e| e.after.as_ref().unwrap()["decision_id"] == json!(answer.decision_id))
        .unwrap();
    assert_eq!(
        recorded.after.unwrap()["resource"]["attributes"],
        json!({"classification": "pii"})
    );
    // An unknown repository takes the request's attributes.
    let mut request = ask("reviewer", "read", "public");
    request.resource.id = "docs".into();
    assert_eq!(verdict(&s.admin, &request).await, Decision::Allow);
    s.stop().await;
}

/// The decision alone.
async fn verdict(admin: &Client, request: &DecisionRequest) -> Decision {
    admin.decide(request).await.unwrap().decision
}

/// A repo resource type, read/write/refund actions, three policies, two agents.
async fn setup(admin: &Client) {
    admin
        .put_resource_type(&PutResourceType {
            name: "repo".into(),
            description: "A source repository".into(),
            attributes: [("classification".to_string(), "String".to_string())].into(),
        })
        .await
        .unwrap();
    for (name, context) in [
        ("read", vec![]),
        ("write", vec![]),
        ("refund", vec![("amount", "Long?")]),
    ] {
        admin
            .put_action(&PutAction {
                name: name.into(),
                description: String::new(),
                resource_types: vec!["repo".into()],
                context: context
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            })
            .await
            .unwrap();
    }
    let policies = [
        (
            "readers-read",
            "Repo readers may read repositories",
            r#"permit(principal in Role::"repo-reader", action == Action::"read", resource is repo);"#,
        ),
        (
            "commenters-write",
            "PR commenters may write",
            r#"permit(principal in Role::"pr-commenter", action == Action::"write", resource is repo);"#,
        ),
        (
            "small-refunds",
            "Refund issuers may refund up to 100",
            r#"permit(principal in Role::"refund-issuer", action == Action::"refund", resource) when { context has amount && context.amount <= 100 };"#,
        ),
        (
            "no-pii-repos",
            "Agents without the pii classification never touch pii repositories",
            r#"forbid(principal is Agent, action, resource is repo) when { resource.classification == "pii" && !principal.classifications.contains("pii") };"#,
        ),
    ];
    for (id, description, text) in policies {
        admin
            .put_policy(&PutPolicy {
                id: id.into(),
                description: description.into(),
                owner: "security@example.com".into(),
                text: text.into(),
            })
            .await
            .unwrap();
    }
    human(admin, "alice@example.com").await;
    admin
        .register_agent(&RegisterAgent {
            name: "reviewer".into(),
            owner: "alice@example.com".into(),
            roles: Some(vec!["repo-reader".into()]),
            classifications: Some(vec!["public".into()]),
            ..Default::default()
        })
        .await
        .unwrap();
}

fn ask(agent: &str, action: &str, classification: &str) -> DecisionRequest {
    DecisionRequest {
        principal: Some(PrincipalRef {
            principal_type: "agent".into(),
            id: agent.into(),
        }),
        action: action.into(),
        resource: ResourceRef {
            resource_type: "repo".into(),
            id: "steward".into(),
            attributes: [("classification".to_string(), json!(classification))].into(),
        },
        ..Default::default()
    }
}

async fn decisions_follow_policies_and_explain_denials(b: Backend) {
    let s = TestServer::start(b).await;
    setup(&s.admin).await;
    let allowed = s
        .admin
        .decide(&ask("reviewer", "read", "internal"))
        .await
        .unwrap();
    assert_eq!(allowed.decision, Decision::Allow);
    assert_eq!(allowed.policies[0].id, "readers-read");
    assert_eq!(
        allowed.policies[0].description,
        "Repo readers may read repositories"
    );
    assert!(allowed.decision_id.starts_with("dec_"));

    let denied = s
        .admin
        .decide(&ask("reviewer", "write", "internal"))
        .await
        .unwrap();
    assert_eq!(denied.decision, Decision::Deny);
    let hint = denied.remediation.unwrap();
    assert_eq!(hint.roles_that_allow, vec!["pr-commenter".to_string()]);
    assert!(hint.message.contains("pr-commenter"), "{}", hint.message);
    assert!(
        hint.personas_that_allow
            .contains(&"Code Review Bot".to_string())
    );

    let guarded = s
        .admin
        .decide(&ask("reviewer", "read", "pii"))
        .await
        .unwrap();
    assert_eq!(guarded.decision, Decision::Deny);
    assert_eq!(guarded.policies[0].id, "no-pii-repos");
    let hint = guarded.remediation.unwrap();
    assert_eq!(hint.forbidden_by[0].owner, "security@example.com");

    // The agent asks about itself with its own key; not about others.
    let me = agent_client(&s, "reviewer").await;
    let mut own = ask("reviewer", "read", "internal");
    own.principal = None;
    assert_eq!(me.decide(&own).await.unwrap().decision, Decision::Allow);
    low_risk_agent(&s.admin, "other", "alice@example.com").await;
    assert_eq!(
        code(me.decide(&ask("other", "read", "internal")).await),
        ErrorCode::Forbidden
    );

    // Context values reach the policies.
    s.admin
        .register_agent(&RegisterAgent {
            name: "support".into(),
            owner: "alice@example.com".into(),
            roles: Some(vec!["refund-issuer".into()]),
            classifications: Some(vec!["public".into()]),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut refund = ask("support", "refund", "internal");
    refund.context = json!({ "amount": 80 }).as_object().unwrap().clone();
    assert_eq!(verdict(&s.admin, &refund).await, Decision::Allow);
    refund.context = json!({ "amount": 250 }).as_object().unwrap().clone();
    assert_eq!(verdict(&s.admin, &refund).await, Decision::Deny);

    // Every decision is in the audit log with its chain and policies.
    let log = all_audit(&s.admin).await;
    let decisions: Vec<&AuditEntry> = log
        .iter()
        .filter(|e| e.action.starts_with("decision."))
        .collect();
    assert_eq!(decisions.len(), 6);
    let first = decisions[0];
    assert_eq!(first.action, "decision.allow");
    assert_eq!(
        first.after.as_ref().unwrap()["decision_id"],
        json!(allowed.decision_id)
    );
    assert_eq!(
        first.after.as_ref().unwrap()["policies"],
        json!(["readers-read"])
    );
    assert_eq!(
        first.after.as_ref().unwrap()["chain"][0]["name"],
        "reviewer"
    );
    s.stop().await;
}

async fn inventory_changes_apply_to_the_next_decision(b: Backend) {
    let s = TestServer::start(b).await;
    setup(&s.admin).await;
    assert_eq!(
        verdict(&s.admin, &ask("reviewer", "read", "internal")).await,
        Decision::Allow
    );
    s.admin
        .suspend_agent("reviewer", Some("investigating"))
        .await
        .unwrap();
    let denied = s
        .admin
        .decide(&ask("reviewer", "read", "internal"))
        .await
        .unwrap();
    assert_eq!(denied.decision, Decision::Deny);
    assert!(
        denied.chain[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("suspended")
    );
    s.admin.resume_agent("reviewer", None).await.unwrap();
    assert_eq!(
        verdict(&s.admin, &ask("reviewer", "read", "internal")).await,
        Decision::Allow
    );

    // A human's role removed: the next decision on their behalf is denied.
    s.admin
        .create_human(&CreateHuman {
            email: "bob@example.com".into(),
            display_name: "Bob".into(),
            roles: vec!["repo-reader".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut for_bob = ask("reviewer", "read", "internal");
    for_bob.on_behalf_of = Some("bob@example.com".into());
    assert_eq!(verdict(&s.admin, &for_bob).await, Decision::Allow);
    s.admin
        .update_human(
            "bob@example.com",
            &UpdateHuman {
                roles: Some(vec![]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(verdict(&s.admin, &for_bob).await, Decision::Deny);
    // Deactivated: denied too, and said so.
    s.admin
        .update_human(
            "bob@example.com",
            &UpdateHuman {
                roles: Some(vec!["repo-reader".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    s.admin
        .deactivate_human("bob@example.com", &TransitionRequest::default())
        .await
        .unwrap();
    let out = s.admin.decide(&for_bob).await.unwrap();
    assert_eq!(out.decision, Decision::Deny);
    assert!(
        out.chain[1]
            .reason
            .as_deref()
            .unwrap()
            .contains("deactivated")
    );
    // A policy removed: the next decision is denied, without a restart.
    s.admin.delete_policy("readers-read").await.unwrap();
    assert_eq!(
        verdict(&s.admin, &ask("reviewer", "read", "internal")).await,
        Decision::Deny
    );
    s.stop().await;
}

async fn delegation_narrows_access(b: Backend) {
    let s = TestServer::start(b).await;
    setup(&s.admin).await;
    // A parent that may write, and a child with only read.
    s.admin
        .register_agent(&RegisterAgent {
            name: "lead".into(),
            owner: "alice@example.com".into(),
            roles: Some(vec!["repo-reader".into(), "pr-commenter".into()]),
            classifications: Some(vec!["public".into()]),
            ..Default::default()
        })
        .await
        .unwrap();
    s.admin
        .register_agent(&RegisterAgent {
            name: "helper".into(),
            owner: "alice@example.com".into(),
            parent: Some("lead".into()),
            roles: Some(vec!["repo-reader".into()]),
            ..Default::default()
        })
        .await
        .unwrap();
    let child_read = s
        .admin
        .decide(&ask("helper", "read", "internal"))
        .await
        .unwrap();
    assert_eq!(child_read.decision, Decision::Allow);
    assert_eq!(
        child_read
            .chain
            .iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>(),
        ["helper", "lead"]
    );
    assert_eq!(
        verdict(&s.admin, &ask("helper", "write", "internal")).await,
        Decision::Deny
    );
    // Suspending the parent stops the child.
    s.admin.suspend_agent("lead", Some("audit")).await.unwrap();
    let out = s
        .admin
        .decide(&ask("helper", "read", "internal"))
        .await
        .unwrap();
    assert_eq!(out.decision, Decision::Deny);
    assert!(out.chain[0].allowed && !out.chain[1].allowed);
    s.admin.resume_agent("lead", None).await.unwrap();

    // On behalf of a person who may not: denied, even though the agent may.
    s.admin
        .create_human(&CreateHuman {
            email: "carol@example.com".into(),
            display_name: "Carol".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut for_carol = ask("reviewer", "read", "internal");
    for_carol.on_behalf_of = Some("carol@example.com".into());
    let out = s.admin.decide(&for_carol).await.unwrap();
    assert_eq!(out.decision, Decision::Deny);
    assert!(out.chain[0].allowed && !out.chain[1].allowed);
    assert!(out.remediation.unwrap().message.contains("acts for"));
    s.stop().await;
}

async fn policies_are_validated_and_versioned(b: Backend) {
    let s = TestServer::start(b).await;
    setup(&s.admin).await;
    let before = s
        .admin
        .list_policies(&PolicyQuery::default())
        .await
        .unwrap();
    let audit_before = all_audit(&s.admin).await.len();
    // Does not parse.
    let err = s
        .admin
        .put_policy(&PutPolicy {
            id: "broken".into(),
            text: "permit(principal, action, resource) when {".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(400), Some(ErrorCode::InvalidPolicy))
    );
    // Parses, but names an attribute the schema does not have: Cedar's message with a location.
    let err = s
        .admin
        .put_policy(&PutPolicy { id: "typo".into(), text: "permit(principal, action, resource is repo)\nwhen { resource.clasification == \"x\" };".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidPolicy));
    assert!(err.to_string().contains("line 2"), "{err}");
    assert_eq!(err.detail().unwrap().details.as_ref().unwrap()["line"], 2);
    // An undeclared action can never match: refused, not silently kept.
    let err = s
        .admin
        .put_policy(&PutPolicy {
            id: "ghost".into(),
            text: r#"permit(principal, action == Action::"fly", resource);"#.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidPolicy));
    // Nested too deep, or too long a chain, for Cedar's parser to walk
    // safely: refused with where, and the server is still there.
    for text in [
        format!(
            "permit(principal, action, resource) when {{ {}true{} }};",
            "(".repeat(150),
            ")".repeat(150)
        ),
        format!(
            "permit(principal, action, resource) when {{ {} }};",
            vec!["1 < 2"; 5000].join(" || ")
        ),
    ] {
        let err = s
            .admin
            .put_policy(&PutPolicy {
                id: "deep".into(),
                text,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidPolicy), "{err}");
        assert!(err.to_string().contains("line 1"), "{err}");
    }
    // An owner beside the text that contradicts the text's @owner.
    let annotated = "@owner(\"sec@example.com\") @description(\"Nobody reads\")\n\
                     forbid(principal, action == Action::\"read\", resource is repo);";
    let err = s
        .admin
        .put_policy(&PutPolicy {
            id: "annotated".into(),
            owner: "ops@example.com".into(),
            text: annotated.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest));
    assert!(
        err.to_string().contains("@owner(\"sec@example.com\")"),
        "{err}"
    );
    // Removing an action a policy uses is refused and names the policy.
    let err = s.admin.delete_action("read").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidSchema));
    assert!(err.to_string().contains("readers-read"), "{err}");
    assert_eq!(
        s.admin
            .list_policies(&PolicyQuery::default())
            .await
            .unwrap(),
        before
    );
    assert_eq!(
        all_audit(&s.admin).await.len(),
        audit_before,
        "a refused change reached the log"
    );

    // Versions: an identical put changes nothing; a real change is version 2.
    let p = s.admin.get_policy("readers-read").await.unwrap();
    assert_eq!((p.version, p.effect.as_str()), (1, "permit"));
    s.admin
        .put_policy(&PutPolicy {
            id: p.id.clone(),
            description: p.description.clone(),
            owner: p.owner.clone(),
            text: p.text.clone(),
        })
        .await
        .unwrap();
    assert_eq!(s.admin.get_policy("readers-read").await.unwrap().version, 1);
    let updated = s
        .admin
        .put_policy(&PutPolicy {
            id: p.id.clone(),
            description: "Readers read".into(),
            owner: p.owner.clone(),
            text: p.text.clone(),
        })
        .await
        .unwrap();
    assert_eq!(updated.version, 2);
    let history = s.admin.policy_versions("readers-read").await.unwrap();
    assert_eq!(
        history.iter().map(|v| v.version).collect::<Vec<_>>(),
        [2, 1]
    );
    assert_eq!(
        s.admin.get_policy("no-pii-repos").await.unwrap().effect,
        "forbid"
    );
    // Fields left empty are the text's annotations.
    let filled = s
        .admin
        .put_policy(&PutPolicy {
            id: "annotated".into(),
            text: annotated.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (filled.owner.as_str(), filled.description.as_str()),
        ("sec@example.com", "Nobody reads")
    );
    assert!(s.admin.schema().await.unwrap().contains("entity repo"));
    // Auditors read policies but cannot change them.
    let auditor = s
        .admin
        .create_token(&CreateToken {
            name: "a".into(),
            role: TokenRole::Auditor,
            human: None,
            expires_at: None,
            tenant: None,
        })
        .await
        .unwrap();
    let auditor = s.client(&auditor.secret);
    auditor
        .list_policies(&PolicyQuery::default())
        .await
        .unwrap();
    assert_eq!(
        code(auditor.delete_policy("readers-read").await),
        ErrorCode::Forbidden
    );
    s.stop().await;
}

async fn decision_bad_input(b: Backend) {
    let s = TestServer::start(b).await;
    setup(&s.admin).await;
    let audit_before = all_audit(&s.admin).await.len();
    let ct = Some("application/json");
    let cases = [
        (
            json!({"action": "read", "resource": {"type": "repo", "id": "x"}}),
            400,
            "invalid_request",
        ),
        (
            json!({"principal": {"type": "agent", "id": "reviewer"}, "resource": {"type": "repo", "id": "x"}}),
            400,
            "invalid_request",
        ),
        (
            json!({"principal": {"type": "agent", "id": "reviewer"}, "action": "read", "resource": {"type": "spaceship", "id": "x"}}),
            400,
            "unknown_resource_type",
        ),
        (
            json!({"principal": {"type": "agent", "id": "nobody"}, "action": "read", "resource": {"type": "repo", "id": "x"}}),
            422,
            "unknown_reference",
        ),
        (
            json!({"principal": {"type": "robot", "id": "reviewer"}, "action": "read", "resource": {"type": "repo", "id": "x"}}),
            400,
            "invalid_request",
        ),
        (
            json!({"principal": {"type": "agent", "id": "reviewer"}, "action": "read", "resource": {"type": "repo", "id": "x", "attributes": {"classification": 5}}}),
            400,
            "invalid_entity",
        ),
        (
            json!({"principal": {"type": "agent", "id": "reviewer"}, "action": "refund", "resource": {"type": "repo", "id": "x", "attributes": {"classification": "a"}}, "context": {"amount": "lots"}}),
            400,
            "invalid_entity",
        ),
        (
            json!({"principal": {"type": "agent", "id": "reviewer"}, "action": "read", "resource": {"type": "repo", "id": "x"}, "on_behalf_of": "ghost@example.com"}),
            422,
            "unknown_reference",
        ),
        (
            json!({"principal": {"type": "agent", "id": "reviewer"}, "action": 7, "resource": {"type": "repo", "id": "x"}}),
            400,
            "invalid_request",
        ),
        // What the audit log's columns cannot keep fails this request alone,
        // never the group commit it would share with others.
        (
            json!({"principal": {"type": "agent", "id": "reviewer"}, "action": "read", "resource": {"type": "repo", "id": "x\u{0}y"}}),
            400,
            "invalid_request",
        ),
        (
            json!({"principal": {"type": "agent", "id": "reviewer"}, "action": "read", "resource": {"type": "repo", "id": "x".repeat(600)}}),
            400,
            "invalid_request",
        ),
        (
            json!({"principal": {"type": "agent", "id": "reviewer"}, "action": "re\u{0}ad", "resource": {"type": "repo", "id": "x"}}),
            400,
            "invalid_request",
        ),
    ];
    for (body, status, code) in cases {
        let (got, answer) = s
            .admin
            .raw(Method::POST, "/v1/decisions", Some(body.to_string()), ct)
            .await
            .unwrap();
        assert_eq!(
            (got, answer["error"]["code"].as_str().unwrap_or_default()),
            (status, code),
            "{body}: {answer}"
        );
    }
    // Bad declarations.
    let bad_types = [
        json!({"name": "1bad"}),
        json!({"name": "Agent"}),
        json!({"name": "ok", "attributes": {"x": "NotAType"}}),
        json!({"name": "ok", "attributes": {"x": "String; entity Evil"}}),
    ];
    for body in bad_types {
        let (got, answer) = s
            .admin
            .raw(
                Method::POST,
                "/v1/resource-types",
                Some(body.to_string()),
                ct,
            )
            .await
            .unwrap();
        assert_eq!(got, 400, "{body}: {answer}");
    }
    let (got, _) = s
        .admin
        .raw(
            Method::POST,
            "/v1/actions",
            Some(json!({"name": "x", "resource_types": ["nope"]}).to_string()),
            ct,
        )
        .await
        .unwrap();
    assert_eq!(got, 400);
    let (got, _) = s
        .admin
        .raw(
            Method::POST,
            "/v1/entities",
            Some(
                json!({"type": "repo", "id": "r", "attributes": {"classification": 3}}).to_string(),
            ),
            ct,
        )
        .await
        .unwrap();
    assert_eq!(got, 400);
    assert_eq!(
        all_audit(&s.admin).await.len(),
        audit_before,
        "bad input reached the log"
    );
    s.stop().await;
}

async fn decisions_fail_closed_when_the_log_cannot_append(b: Backend) {
    let s = TestServer::start(b).await;
    setup(&s.admin).await;
    assert_eq!(
        verdict(&s.admin, &ask("reviewer", "read", "internal")).await,
        Decision::Allow
    );
    // The log's head row disappears: no entry can be appended.
    s.server
        .store()
        .execute_raw("ALTER TABLE audit_head RENAME TO audit_head_gone")
        .await
        .unwrap();
    let err = s
        .admin
        .decide(&ask("reviewer", "read", "internal"))
        .await
        .unwrap_err();
    assert!(err.status().is_some_and(|st| st >= 500), "{err}");
    assert!(!err.to_string().is_empty());
    // Back, and decisions are answered again.
    s.server
        .store()
        .execute_raw("ALTER TABLE audit_head_gone RENAME TO audit_head")
        .await
        .unwrap();
    assert_eq!(
        verdict(&s.admin, &ask("reviewer", "read", "internal")).await,
        Decision::Allow
    );
    s.stop().await;
}
