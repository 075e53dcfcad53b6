//! Governance as code over HTTP: `POST /v1/apply` creates what a directory
//! declares, is idempotent, plans without changing anything on a dry run,
//! refuses an invalid batch whole (naming the item) and prunes policies
//! only when asked.

use steward_client::Client;
use steward_testkit::{Backend, TestServer, on_both_backends};
use steward_types::*;

use crate::support::*;

on_both_backends!(
    apply_creates_everything_then_changes_nothing,
    a_dry_run_plans_without_changing_anything,
    an_invalid_batch_changes_nothing_and_names_the_item,
    pruning_deletes_only_undeclared_policies,
    reapplying_team_ids_and_a_fine_expiry_changes_nothing,
    persona_and_parent_differences_are_warned_not_ignored,
    policy_descriptions_and_owners_are_checked_as_by_the_policies_route,
    refused_declarations_are_named,
    concurrent_identical_applies_all_succeed,
    parents_come_first_and_what_apply_cannot_do_is_said,
    declarations_the_gateway_and_the_directory_share_count_once
);

fn policy(id: &str, text: &str) -> PutPolicy {
    PutPolicy {
        id: id.into(),
        description: format!("{id} policy"),
        owner: "security@example.com".into(),
        text: text.into(),
    }
}

const READ: &str =
    r#"permit(principal in Role::"doc-reader", action == Action::"read_doc", resource is doc);"#;
const NO_PII: &str = r#"forbid(principal is Agent, action, resource is doc) when { resource.classification == "pii" && !principal.classifications.contains("pii") };"#;

/// A small but complete directory: every kind of item once.
fn declaration() -> ApplyRequest {
    ApplyRequest {
        teams: vec![CreateTeam {
            name: "docs".into(),
            description: "Documentation".into(),
        }],
        roles: vec![CreateRole {
            name: "doc-reader".into(),
            description: "Read documents".into(),
            writes: false,
        }],
        humans: vec![CreateHuman {
            email: "dana@example.com".into(),
            display_name: "Dana".into(),
            external_id: Some("dana-pid".into()),
            teams: vec!["docs".into()],
            roles: vec!["doc-reader".into()],
        }],
        personas: vec![CreatePersona {
            name: "Doc Reader".into(),
            description: "Reads documents".into(),
            roles: vec!["doc-reader".into()],
            classifications: vec!["internal".into()],
            ..Default::default()
        }],
        agents: vec![RegisterAgent {
            name: "doc-bot".into(),
            owner: "dana@example.com".into(),
            team: Some("docs".into()),
            persona: Some("Doc Reader".into()),
            purpose: "Answers questions from the docs".into(),
            ..Default::default()
        }],
        activate: vec!["doc-bot".into()],
        resource_types: vec![PutResourceType {
            name: "doc".into(),
            description: "A document".into(),
            attributes: [("classification".to_string(), "String".to_string())].into(),
        }],
        actions: vec![PutAction {
            name: "read_doc".into(),
            description: "Read a document".into(),
            resource_types: vec!["doc".into()],
            context: Default::default(),
        }],
        entities: vec![ResourceEntity {
            resource_type: "doc".into(),
            id: "handbook".into(),
            attributes: [("classification".to_string(), serde_json::json!("internal"))].into(),
        }],
        policies: vec![policy("docs.read", READ), policy("docs.no-pii", NO_PII)],
        ..Default::default()
    }
}

fn read_doc(agent: &str, doc: &str) -> DecisionRequest {
    DecisionRequest {
        principal: Some(PrincipalRef {
            principal_type: "agent".into(),
            id: agent.into(),
        }),
        action: "read_doc".into(),
        resource: ResourceRef {
            resource_type: "doc".into(),
            id: doc.into(),
            attributes: Default::default(),
        },
        ..Default::default()
    }
}

async fn policy_ids(admin: &Client) -> Vec<String> {
    let page = admin
        .list_policies(&PolicyQuery {
            limit: Some(500),
            ..Default::default()
        })
        .await
        .unwrap();
    page.items.into_iter().map(|p| p.id).collect()
}

/// Everything a refused or dry-run apply must leave alone: inventory counts,
/// the audit log, roles, personas, policies and declarations.
async fn full_snapshot(admin: &Client) -> impl PartialEq + std::fmt::Debug + use<> {
    let roles = admin.list_roles(&page500()).await.unwrap().items.len();
    let personas = admin.list_personas(&page500()).await.unwrap().items.len();
    let types = admin.list_resource_types().await.unwrap().len();
    let actions = admin.list_actions().await.unwrap().len();
    (
        snapshot(admin).await,
        roles,
        personas,
        types,
        actions,
        policy_ids(admin).await,
    )
}

async fn apply_creates_everything_then_changes_nothing(b: Backend) {
    let s = TestServer::start(b).await;
    let first = s.admin.apply(&declaration()).await.unwrap();
    assert!(first.applied);
    for line in [
        "team docs: create",
        "role doc-reader: create",
        "human dana@example.com: create",
        "persona Doc Reader: create",
        "agent doc-bot: register",
        "agent doc-bot: activate",
        "resource type doc: created",
        "action read_doc: created",
        "entity doc::handbook: created",
        "policy docs.read: created (version 1)",
        "policy docs.no-pii: created (version 1)",
    ] {
        assert!(
            first.changes.iter().any(|c| c == line),
            "missing {line:?} in {:?}",
            first.changes
        );
    }
    assert_eq!(first.unchanged, 0, "{first:?}");

    // Everything exists and works together.
    let dana = s.admin.get_human("dana@example.com").await.unwrap();
    assert_eq!(dana.roles, ["doc-reader"]);
    assert_eq!(dana.external_id.as_deref(), Some("dana-pid"));
    let bot = s.admin.get_agent("doc-bot").await.unwrap();
    assert_eq!(bot.state, AgentState::Active);
    assert_eq!(bot.roles, ["doc-reader"]);
    let allowed = s
        .admin
        .decide(&read_doc("doc-bot", "handbook"))
        .await
        .unwrap();
    assert_eq!(allowed.decision, Decision::Allow, "{allowed:?}");
    assert_eq!(allowed.policies[0].id, "docs.read");
    assert_eq!(allowed.policies[0].owner, "security@example.com");

    // Applying the same declaration again changes nothing.
    let audit_before = all_audit(&s.admin).await.len();
    let second = s.admin.apply(&declaration()).await.unwrap();
    assert!(second.applied);
    assert!(second.changes.is_empty(), "{second:?}");
    assert!(second.warnings.is_empty(), "{second:?}");
    assert_eq!(second.unchanged, 10, "{second:?}");
    assert_eq!(all_audit(&s.admin).await.len(), audit_before);
    assert_eq!(s.admin.get_policy("docs.read").await.unwrap().version, 1);

    // A changed declaration updates in place.
    let mut changed = declaration();
    changed.humans[0].display_name = "Dana Scully".into();
    changed.policies[0].description = "Doc readers read docs".into();
    let third = s.admin.apply(&changed).await.unwrap();
    assert!(
        third
            .changes
            .contains(&"human dana@example.com: update".to_string()),
        "{third:?}"
    );
    assert!(
        third
            .changes
            .contains(&"policy docs.read: updated (version 2)".to_string()),
        "{third:?}"
    );
    assert_eq!(
        s.admin
            .get_human("dana@example.com")
            .await
            .unwrap()
            .display_name,
        "Dana Scully"
    );
    s.stop().await;
}

async fn a_dry_run_plans_without_changing_anything(b: Backend) {
    let s = TestServer::start(b).await;
    let before = full_snapshot(&s.admin).await;
    let mut request = declaration();
    request.dry_run = true;
    let plan = s.admin.apply(&request).await.unwrap();
    assert!(!plan.applied);
    assert!(
        plan.changes
            .contains(&"agent doc-bot: register".to_string()),
        "{plan:?}"
    );
    assert!(
        plan.changes
            .contains(&"policy docs.no-pii: created (version 1)".to_string()),
        "{plan:?}"
    );
    assert_eq!(full_snapshot(&s.admin).await, before);
    assert_eq!(
        code(s.admin.get_agent("doc-bot").await),
        ErrorCode::NotFound
    );

    // The plan is what apply then does.
    let applied = s.admin.apply(&declaration()).await.unwrap();
    assert_eq!(applied.changes, plan.changes);
    s.stop().await;
}

async fn an_invalid_batch_changes_nothing_and_names_the_item(b: Backend) {
    let s = TestServer::start(b).await;
    let before = full_snapshot(&s.admin).await;

    // Valid role, team, human and policies, then an agent whose owner does
    // not exist: nothing at all is created.
    let mut bad_owner = declaration();
    bad_owner.agents[0].owner = "nobody@example.com".into();
    let err = s.admin.apply(&bad_owner).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownReference), "{err}");
    let message = &err.detail().unwrap().message;
    assert!(message.starts_with("agent doc-bot: owner:"), "{message}");
    assert!(message.contains("nobody@example.com"), "{message}");
    assert_eq!(full_snapshot(&s.admin).await, before);
    assert_eq!(
        code(s.admin.get_role("doc-reader").await),
        ErrorCode::NotFound
    );

    // A policy that does not validate: refused with its id and location.
    let mut bad_policy = declaration();
    bad_policy.policies.push(policy(
        "docs.broken",
        "permit(principal, action == Action::\"read_doc\", resource is doc)\nwhen { resource.colour == \"red\" };",
    ));
    let err = s.admin.apply(&bad_policy).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidPolicy), "{err}");
    let detail = err.detail().unwrap();
    assert!(detail.message.contains("docs.broken"), "{}", detail.message);
    let details = detail.details.as_ref().unwrap();
    assert_eq!(details["policy"], "docs.broken");
    assert_eq!(details["line"], 2);
    assert_eq!(full_snapshot(&s.admin).await, before);

    // The same holds for a dry run of the invalid batch.
    bad_policy.dry_run = true;
    assert_eq!(
        code(s.admin.apply(&bad_policy).await),
        ErrorCode::InvalidPolicy
    );
    assert_eq!(full_snapshot(&s.admin).await, before);
    s.stop().await;
}

async fn pruning_deletes_only_undeclared_policies(b: Backend) {
    let s = TestServer::start(b).await;
    s.admin.apply(&declaration()).await.unwrap();
    s.admin
        .put_policy(&policy(
            "docs.extra",
            r#"permit(principal in Role::"doc-reader", action, resource is doc);"#,
        ))
        .await
        .unwrap();

    // Without pruning, a policy the declaration does not name stays.
    let kept = s.admin.apply(&declaration()).await.unwrap();
    assert!(kept.changes.is_empty(), "{kept:?}");
    assert!(
        policy_ids(&s.admin)
            .await
            .contains(&"docs.extra".to_string())
    );

    // A dry run with pruning plans the deletion; apply carries it out.
    let mut prune = declaration();
    prune.prune_policies = true;
    prune.dry_run = true;
    let plan = s.admin.apply(&prune).await.unwrap();
    assert_eq!(plan.changes, ["policy docs.extra: deleted"], "{plan:?}");
    assert!(
        policy_ids(&s.admin)
            .await
            .contains(&"docs.extra".to_string())
    );
    prune.dry_run = false;
    let pruned = s.admin.apply(&prune).await.unwrap();
    assert_eq!(pruned.changes, ["policy docs.extra: deleted"], "{pruned:?}");
    let mut ids = policy_ids(&s.admin).await;
    ids.sort();
    assert_eq!(ids, ["docs.no-pii", "docs.read"]);
    // Declarations and inventory are never pruned.
    assert!(s.admin.get_agent("doc-bot").await.is_ok());
    assert_eq!(s.admin.list_actions().await.unwrap().len(), 1);
    s.stop().await;
}

async fn reapplying_team_ids_and_a_fine_expiry_changes_nothing(b: Backend) {
    let s = TestServer::start(b).await;
    // The store keeps times to the millisecond.
    let expiry = "2030-01-01T00:00:00.123456Z".parse().unwrap();
    let mut request = declaration();
    request.teams.push(CreateTeam {
        name: "team-2b".into(),
        description: String::new(),
    });
    request.humans[0].teams.push("team-2b".into());
    request.agents[0].expires_at = Some(expiry);
    s.admin.apply(&request).await.unwrap();
    let stored = s.admin.get_agent("doc-bot").await.unwrap().expires_at;
    assert_eq!(stored, Some("2030-01-01T00:00:00.123Z".parse().unwrap()));

    // Teams named by id as well as by name (the server takes both).
    let docs = s.admin.get_team("docs").await.unwrap();
    request.humans[0].teams = vec![docs.id, "team-2b".into()];
    let audit_before = all_audit(&s.admin).await.len();
    for _ in 0..2 {
        let again = s.admin.apply(&request).await.unwrap();
        assert!(again.changes.is_empty(), "{again:?}");
    }
    assert_eq!(all_audit(&s.admin).await.len(), audit_before);

    // A changed expiry is written once, as it is kept.
    request.agents[0].expires_at = Some("2030-01-02T00:00:00.000999Z".parse().unwrap());
    let changed = s.admin.apply(&request).await.unwrap();
    assert_eq!(changed.changes, ["agent doc-bot: update"], "{changed:?}");
    let again = s.admin.apply(&request).await.unwrap();
    assert!(again.changes.is_empty(), "{again:?}");
    assert_eq!(
        s.admin.get_agent("doc-bot").await.unwrap().expires_at,
        Some("2030-01-02T00:00:00Z".parse().unwrap())
    );
    s.stop().await;
}

async fn persona_and_parent_differences_are_warned_not_ignored(b: Backend) {
    let s = TestServer::start(b).await;
    s.admin.apply(&declaration()).await.unwrap();
    let before = s.admin.get_agent("doc-bot").await.unwrap();

    let mut request = declaration();
    request.personas.push(CreatePersona {
        name: "Doc Writer".into(),
        description: "Writes documents".into(),
        roles: vec!["doc-reader".into()],
        ..Default::default()
    });
    request.agents[0].persona = Some("Doc Writer".into());
    request.agents[0].parent = Some("doc-bot-parent".into());
    request.dry_run = true;
    let plan = s.admin.apply(&request).await.unwrap();
    assert_eq!(plan.changes, ["persona Doc Writer: create"], "{plan:?}");
    for what in ["persona", "parent"] {
        let prefix = format!("agent doc-bot: {what} differs from the directory");
        assert!(
            plan.warnings.iter().any(|w| w.starts_with(&prefix)),
            "no {what} warning in {:?}",
            plan.warnings
        );
    }
    request.dry_run = false;
    s.admin.apply(&request).await.unwrap();
    let after = s.admin.get_agent("doc-bot").await.unwrap();
    assert_eq!(
        (after.persona_id, after.parent_id),
        (before.persona_id, before.parent_id)
    );

    // The declared persona, by id, is no difference.
    let mut same = declaration();
    let persona = s.admin.get_persona("Doc Reader").await.unwrap();
    same.agents[0].persona = Some(persona.id);
    let plan = s.admin.apply(&same).await.unwrap();
    assert!(plan.warnings.is_empty(), "{plan:?}");
    s.stop().await;
}

async fn policy_descriptions_and_owners_are_checked_as_by_the_policies_route(b: Backend) {
    let s = TestServer::start(b).await;
    let before = full_snapshot(&s.admin).await;
    let mut long = declaration();
    long.policies[0].description = "d".repeat(5000);
    assert_eq!(
        code(s.admin.put_policy(&long.policies[0]).await),
        ErrorCode::InvalidRequest
    );
    let err = s.admin.apply(&long).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest), "{err}");
    let message = &err.detail().unwrap().message;
    assert!(
        message.starts_with("policy docs.read: description: longer than 4096 bytes"),
        "{message}"
    );
    for owner in ["sec\nops@example.com".to_string(), "o".repeat(600)] {
        let mut bad_owner = declaration();
        bad_owner.policies[1].owner = owner;
        let err = s.admin.apply(&bad_owner).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidRequest), "{err}");
        let message = &err.detail().unwrap().message;
        assert!(
            message.starts_with("policy docs.no-pii: owner: "),
            "{message}"
        );
    }
    assert_eq!(full_snapshot(&s.admin).await, before);
    s.stop().await;
}

/// The message of a refused apply, checking that it changed nothing.
async fn refusal(admin: &Client, request: &ApplyRequest) -> String {
    let before = full_snapshot(admin).await;
    let err = admin.apply(request).await.unwrap_err();
    assert_eq!(full_snapshot(admin).await, before);
    err.detail().unwrap().message.clone()
}

async fn refused_declarations_are_named(b: Backend) {
    let s = TestServer::start(b).await;
    let bare = |f: &dyn Fn(&mut ApplyRequest)| {
        let mut r = ApplyRequest::default();
        f(&mut r);
        r
    };
    // A type Cedar does not know.
    let message = refusal(
        &s.admin,
        &bare(&|r| {
            r.resource_types = declaration().resource_types;
            r.resource_types.push(PutResourceType {
                name: "level_doc".into(),
                description: String::new(),
                attributes: [("level".to_string(), "Lng".to_string())].into(),
            });
        }),
    )
    .await;
    assert!(
        message.starts_with(
            "resource type level_doc: the declarations do not form a valid Cedar schema"
        ),
        "{message}"
    );
    // An action on an undeclared type.
    let message = refusal(
        &s.admin,
        &bare(&|r| {
            r.actions = declaration().actions;
            r.actions[0].resource_types = vec!["nosuchtype".into()];
        }),
    )
    .await;
    assert!(
        message.starts_with("action read_doc: resource_types: 'nosuchtype'"),
        "{message}"
    );
    // A policy id Cedar would refuse.
    let message = refusal(&s.admin, &bare(&|r| r.policies = vec![policy("a1 ", READ)])).await;
    assert!(
        message.starts_with("policy a1 : id: 'a1 ' is not a policy id"),
        "{message}"
    );

    // A stored policy broken by a re-declared type: the type is named.
    s.admin.apply(&declaration()).await.unwrap();
    let message = refusal(
        &s.admin,
        &bare(&|r| {
            r.actions = declaration().actions;
            r.resource_types = vec![PutResourceType {
                name: "doc".into(),
                description: "A document".into(),
                attributes: Default::default(),
            }];
        }),
    )
    .await;
    assert!(
        message.starts_with("resource type doc: the change would break policy 'docs.no-pii'"),
        "{message}"
    );
    // A stored entity that no longer fits its re-declared type.
    let note = |ty: &str| PutResourceType {
        name: "note".into(),
        description: String::new(),
        attributes: [("title".to_string(), ty.to_string())].into(),
    };
    s.admin
        .apply(&bare(&|r| {
            r.resource_types = vec![note("String")];
            r.entities = vec![ResourceEntity {
                resource_type: "note".into(),
                id: "n1".into(),
                attributes: [("title".to_string(), serde_json::json!("hello"))].into(),
            }];
        }))
        .await
        .unwrap();
    let message = refusal(&s.admin, &bare(&|r| r.resource_types = vec![note("Long")])).await;
    assert!(message.starts_with("resource type note: "), "{message}");
    assert!(message.contains("note::n1"), "{message}");
    s.stop().await;
}

async fn concurrent_identical_applies_all_succeed(b: Backend) {
    let s = TestServer::start(b).await;
    let request = declaration();
    let (one, two, three) = tokio::join!(
        s.admin.apply(&request),
        s.admin.apply(&request),
        s.admin.apply(&request)
    );
    let answers = [one.unwrap(), two.unwrap(), three.unwrap()];
    let created = answers
        .iter()
        .filter(|a| a.changes.iter().any(|c| c == "role doc-reader: create"))
        .count();
    assert_eq!(created, 1, "{answers:?}");
    assert_eq!(
        s.admin.get_agent("doc-bot").await.unwrap().state,
        AgentState::Active
    );
    let again = s.admin.apply(&request).await.unwrap();
    assert!(again.changes.is_empty(), "{again:?}");
    s.stop().await;
}

async fn parents_come_first_and_what_apply_cannot_do_is_said(b: Backend) {
    let s = TestServer::start(b).await;
    // A child declared before its parent, the parent activated by the
    // directory: one apply registers the parent, activates it, then
    // spawns the child.
    let mut request = declaration();
    let child = RegisterAgent {
        name: "doc-bot-child".into(),
        owner: "dana@example.com".into(),
        parent: Some("doc-bot".into()),
        purpose: "Summarises one document".into(),
        ..Default::default()
    };
    request.agents.insert(0, child);
    // A team named twice is one team.
    request.humans[0].teams = vec!["docs".into(), "docs".into()];
    let applied = s.admin.apply(&request).await.unwrap();
    assert!(
        applied
            .changes
            .contains(&"agent doc-bot: activate".to_string()),
        "{applied:?}"
    );
    let child = s.admin.get_agent("doc-bot-child").await.unwrap();
    let parent = s.admin.get_agent("doc-bot").await.unwrap();
    assert_eq!(child.parent_id.as_deref(), Some(parent.id.as_str()));
    assert_eq!(parent.state, AgentState::Active);
    let audit_before = all_audit(&s.admin).await.len();
    let again = s.admin.apply(&request).await.unwrap();
    assert!(again.changes.is_empty(), "{again:?}");
    assert_eq!(all_audit(&s.admin).await.len(), audit_before);

    // A team or expiry the directory no longer names is not removed by
    // apply: said, not passed over as "unchanged".
    let mut dropped = declaration();
    // (The child first: a parent never expires before an agent below it.)
    s.admin
        .update_agent(
            "doc-bot-child",
            &UpdateAgent {
                expires_at: Some("2029-01-01T00:00:00Z".parse().unwrap()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    dropped.agents[0].expires_at = Some("2030-01-01T00:00:00Z".parse().unwrap());
    s.admin.apply(&dropped).await.unwrap();
    dropped.agents[0].expires_at = None;
    dropped.agents[0].team = None;
    let plan = s.admin.apply(&dropped).await.unwrap();
    for what in ["no team", "no expiry"] {
        assert!(
            plan.warnings.iter().any(|w| w.contains(what)),
            "no warning about {what} in {plan:?}"
        );
    }

    // A persona holding an undeclared action for approval: refused,
    // through apply and through the API.
    let mut typo = declaration();
    typo.personas.push(CreatePersona {
        name: "Payer".into(),
        description: String::new(),
        approval_required_for: vec!["red_doc".into()],
        ..Default::default()
    });
    let message = refusal(&s.admin, &typo).await;
    assert!(
        message.contains("persona Payer") && message.contains("red_doc"),
        "{message}"
    );
    let err = s
        .admin
        .create_persona(&CreatePersona {
            name: "Payer".into(),
            description: String::new(),
            approval_required_for: vec!["red_doc".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownReference), "{err}");
    s.stop().await;
}

async fn declarations_the_gateway_and_the_directory_share_count_once(b: Backend) {
    let s = TestServer::start(b).await;
    // A server (not started by registering it) and the directory's own
    // declaration of the gateway's tool type and action, with arguments.
    let request = ApplyRequest {
        mcp_servers: vec![PutMcpServer {
            name: "everything".into(),
            description: String::new(),
            transport: McpTransport::Stdio {
                command: "node".into(),
                args: vec!["server.js".into()],
                env: Default::default(),
            },
            tools: Default::default(),
            timeout_secs: None,
            decision_record: McpDecisionRecord::BeforeCall,
        }],
        resource_types: vec![PutResourceType {
            name: "Tool".into(),
            description: "A tool of an upstream MCP server".into(),
            attributes: [
                ("server", "String"),
                ("name", "String"),
                ("classification", "String"),
                ("risk", "String"),
                ("cost_estimate", "Long"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
        }],
        actions: vec![PutAction {
            name: "call_tool".into(),
            description: "Call a tool".into(),
            resource_types: vec!["Tool".into()],
            context: [("arguments".to_string(), "{ message?: String }?".to_string())].into(),
        }],
        ..Default::default()
    };
    let first = s.admin.apply(&request).await.unwrap();
    assert_eq!(first.unchanged, 0, "{first:?}");
    let second = s.admin.apply(&request).await.unwrap();
    assert!(second.changes.is_empty(), "{second:?}");
    // The server, the type and the action: the directory's own items (the
    // gateway's other declarations came with the first apply).
    assert_eq!(second.unchanged, 3, "{second:?}");
    s.stop().await;
}

/// An apply that creates a role (which appends to the audit log, holding
/// its head) and then changes an agent, a person and spawns under that
/// agent, run again and again beside PATCHes of the same agent (its
/// purpose, its roles) and person on two nodes of one PostgreSQL: all
/// succeed. Apply locks the rows it will change before it audits
/// anything, as a PATCH does (the agent, then the audit head); otherwise
/// each would hold the lock the other waits for, and PostgreSQL would end
/// one with a deadlock error, a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_and_concurrent_agent_changes_do_not_deadlock() {
    let s = TestServer::start(Backend::Postgres).await;
    let a = &s.admin;
    human(a, "alice@example.com").await;
    low_risk_agent(a, "bot", "alice@example.com").await;
    a.create_role(&CreateRole {
        name: "helper".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let (node_b, b) = s.second_node().await;
    for round in 0..10usize {
        let mut calls = tokio::task::JoinSet::new();
        let request = ApplyRequest {
            roles: vec![CreateRole {
                name: format!("applied-{round}"),
                ..Default::default()
            }],
            humans: vec![CreateHuman {
                email: "alice@example.com".into(),
                display_name: format!("Alice {round}"),
                external_id: None,
                teams: vec![],
                roles: vec![],
            }],
            agents: vec![
                RegisterAgent {
                    name: "bot".into(),
                    owner: "alice@example.com".into(),
                    classifications: Some(vec!["public".into()]),
                    purpose: format!("applied {round}"),
                    ..Default::default()
                },
                RegisterAgent {
                    name: format!("kid-{round}"),
                    owner: "alice@example.com".into(),
                    parent: Some("bot".into()),
                    classifications: Some(vec!["public".into()]),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let node = b.clone();
        calls.spawn(async move {
            node.apply(&request)
                .await
                .map(drop)
                .map_err(|e| format!("apply: {e}"))
        });
        for i in 0..4 {
            let node = if i % 2 == 0 { a.clone() } else { b.clone() };
            calls.spawn(async move {
                // The last one takes a role away and gives it back in turn,
                // which locks the agents below `bot` too.
                let change = UpdateAgent {
                    purpose: (i < 3).then(|| format!("patched {round}-{i}")),
                    roles: (i == 3).then(|| {
                        let mut roles = vec!["helper".to_string()];
                        roles.truncate(round % 2);
                        roles
                    }),
                    ..Default::default()
                };
                node.update_agent("bot", &change)
                    .await
                    .map(drop)
                    .map_err(|e| format!("patch bot {i}: {e}"))
            });
        }
        let node = a.clone();
        calls.spawn(async move {
            let change = UpdateHuman {
                display_name: Some(format!("Alice patched {round}")),
                ..Default::default()
            };
            node.update_human("alice@example.com", &change)
                .await
                .map(drop)
                .map_err(|e| format!("patch alice: {e}"))
        });
        let failed: Vec<String> = calls
            .join_all()
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect();
        assert!(failed.is_empty(), "round {round}: {failed:#?}");
    }
    node_b.shutdown().await.unwrap();
    s.stop().await;
}
