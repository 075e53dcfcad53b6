//! Authentication, admin and auditor tokens, and tenant isolation.

use steward_client::Method;
use steward_testkit::{ADMIN_TOKEN, Backend, TestServer, on_both_backends};
use steward_types::*;

use crate::support::*;

on_both_backends!(
    credentials_are_required_and_roles_enforced,
    tenants_are_isolated,
    secrets_never_stored_or_logged,
    a_leavers_tokens_stop_working,
    a_configured_admin_token_shows_none_of_itself,
    pep_tokens_only_ask_for_decisions
);

/// An enforcement point's token decides about any principal of its tenant
/// (the decision API and AuthZEN), and does nothing else: no inventory, no
/// changes, no approvals, no dashboard. An auditor's token does not decide.
async fn pep_tokens_only_ask_for_decisions(b: Backend) {
    let s = TestServer::start(b).await;
    human(&s.admin, "pat@example.com").await;
    low_risk_agent(&s.admin, "reviewer", "pat@example.com").await;
    let pep = token_for(&s.admin, "gateway-pep", TokenRole::Pep, "pat@example.com").await;
    assert_eq!(pep.token.role, TokenRole::Pep);
    let pep = s.client(&pep.secret);
    let auditor = token_for(&s.admin, "audit", TokenRole::Auditor, "pat@example.com").await;
    let auditor = s.client(&auditor.secret);

    let ask = serde_json::json!({
        "subject": {"type": "agent", "id": "reviewer"},
        "action": {"name": "read"},
        "resource": {"type": "agent", "id": "reviewer"},
    });
    let answer = pep.authzen_evaluation(&ask).await.unwrap();
    assert_eq!(answer["decision"], false, "{answer}");
    let found = pep
        .authzen_search_subject(&serde_json::json!({
            "subject": {"type": "agent"},
            "action": {"name": "read"},
            "resource": {"type": "agent", "id": "reviewer"},
        }))
        .await
        .unwrap();
    assert!(found["results"].is_array(), "{found}");
    let decided = pep
        .decide(&DecisionRequest {
            principal: Some(PrincipalRef {
                principal_type: "agent".into(),
                id: "reviewer".into(),
            }),
            action: "read".into(),
            resource: ResourceRef {
                resource_type: "Agent".into(),
                id: "reviewer".into(),
                attributes: Default::default(),
            },
            context: Default::default(),
            on_behalf_of: None,
            estimate: None,
            call_arguments: None,
        })
        .await;
    assert_ne!(
        decided.as_ref().err().and_then(|e| e.code()),
        Some(ErrorCode::Forbidden),
        "{decided:?}"
    );
    assert_eq!(
        code(auditor.authzen_evaluation(&ask).await),
        ErrorCode::Forbidden
    );

    let before = snapshot(&s.admin).await;
    for (status, _) in [
        pep.raw(Method::GET, "/v1/agents", None, None)
            .await
            .unwrap(),
        pep.raw(Method::GET, "/v1/audit", None, None).await.unwrap(),
        pep.raw(Method::GET, "/v1/approvals", None, None)
            .await
            .unwrap(),
        pep.raw(
            Method::POST,
            "/v1/teams",
            Some(r#"{"name":"t"}"#.into()),
            Some("application/json"),
        )
        .await
        .unwrap(),
        pep.raw(
            Method::POST,
            "/v1/tokens",
            Some(r#"{"name":"x","role":"admin"}"#.into()),
            Some("application/json"),
        )
        .await
        .unwrap(),
    ] {
        assert_eq!(status, 403);
    }
    let (status, body) = pep
        .raw(Method::GET, "/v1/agents", None, None)
        .await
        .unwrap();
    assert_eq!(status, 403);
    assert!(
        body.to_string()
            .contains("pep tokens only ask for decisions"),
        "{body}"
    );
    assert_eq!(snapshot(&s.admin).await, before);
    // An approval its own decisions did not file is not its to see.
    s.admin
        .register_agent(&RegisterAgent {
            name: "reader".into(),
            owner: "pat@example.com".into(),
            classifications: Some(vec!["confidential".into()]),
            ..Default::default()
        })
        .await
        .unwrap();
    let filed = pending_approval(&s.admin, "reader", "registration").await;
    for path in [
        format!("/v1/approvals/{}", filed.id),
        format!("/v1/approvals/{}/wait?timeout=0", filed.id),
    ] {
        let (status, body) = pep.raw(Method::GET, &path, None, None).await.unwrap();
        assert_eq!(status, 404, "{path}: {body}");
        let (status, body) = s.admin.raw(Method::GET, &path, None, None).await.unwrap();
        assert_eq!(status, 200, "{path}: {body}");
    }
    // It says who it is.
    pep.whoami().await.unwrap();
    s.stop().await;
}

fn stdio_server(name: &str, command: &str) -> PutMcpServer {
    PutMcpServer {
        name: name.into(),
        description: String::new(),
        transport: McpTransport::Stdio {
            command: command.into(),
            args: vec!["--serve".into()],
            env: Default::default(),
        },
        tools: Default::default(),
        timeout_secs: None,
        decision_record: McpDecisionRecord::BeforeCall,
    }
}

/// A stdio upstream's command runs on Steward's host as Steward's user: a
/// tenant's admin token can neither register one nor change one's command,
/// by the API or by an applied directory, unless the operator allows it.
#[tokio::test]
async fn stdio_commands_are_the_platform_administrators() {
    let s = TestServer::start(Backend::Sqlite).await;
    let tenant_admin = tenant_admin_client(&s).await;
    let err = tenant_admin
        .put_mcp_server(&stdio_server("shell", "sh"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden), "{err}");
    assert!(err.to_string().contains("platform administrator"), "{err}");
    assert_eq!(
        code(tenant_admin.get_mcp_server("shell").await),
        ErrorCode::NotFound
    );
    let apply = |server: PutMcpServer| ApplyRequest {
        mcp_servers: vec![server],
        ..Default::default()
    };
    let err = tenant_admin
        .apply(&apply(stdio_server("shell", "sh")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden), "{err}");
    assert_eq!(
        code(tenant_admin.get_mcp_server("shell").await),
        ErrorCode::NotFound
    );
    // A Streamable HTTP upstream is any admin's.
    tenant_admin
        .put_mcp_server(&PutMcpServer {
            transport: McpTransport::StreamableHttp {
                url: "http://127.0.0.1:9/mcp".into(),
            },
            ..stdio_server("remote", "")
        })
        .await
        .unwrap();
    // The platform administrator registers a command; a tenant's admin may
    // change the rest of the registration but not the command.
    s.admin
        .put_mcp_server(&stdio_server("tools", "tool-server"))
        .await
        .unwrap();
    let described = PutMcpServer {
        description: "The team's tools".into(),
        ..stdio_server("tools", "tool-server")
    };
    tenant_admin.put_mcp_server(&described).await.unwrap();
    tenant_admin.apply(&apply(described.clone())).await.unwrap();
    for changed in [stdio_server("tools", "sh"), {
        let mut other_args = described.clone();
        other_args.transport = McpTransport::Stdio {
            command: "tool-server".into(),
            args: vec!["-c".into(), "id".into()],
            env: Default::default(),
        };
        other_args
    }] {
        let err = tenant_admin.put_mcp_server(&changed).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::Forbidden), "{err}");
        let err = tenant_admin.apply(&apply(changed)).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::Forbidden), "{err}");
    }
    let kept = s.admin.get_mcp_server("tools").await.unwrap();
    assert_eq!(kept.transport, described.transport);
    assert_eq!(kept.description, "The team's tools");
    s.stop().await;

    // The operator may let tenants' admins run commands.
    let s = TestServer::start_with(Backend::Sqlite, |c| c.mcp_stdio_tenant_admins = true).await;
    tenant_admin_client(&s)
        .await
        .put_mcp_server(&stdio_server("shell", "sh"))
        .await
        .unwrap();
    s.stop().await;
}

async fn a_leavers_tokens_stop_working(b: Backend) {
    let s = TestServer::start(b).await;
    human(&s.admin, "sam@example.com").await;
    let token = token_for(&s.admin, "sam-admin", TokenRole::Admin, "sam@example.com").await;
    let sam = s.client(&token.secret);
    sam.whoami().await.unwrap();
    let done = s
        .admin
        .deactivate_human("sam@example.com", &TransitionRequest::default())
        .await
        .unwrap();
    assert_eq!(done.revoked_tokens, vec![token.token.id.clone()]);
    assert_eq!(code(sam.whoami().await), ErrorCode::Unauthenticated);
    assert_eq!(
        code(
            sam.create_team(&CreateTeam {
                name: "ghost-team".into(),
                description: String::new(),
            })
            .await
        ),
        ErrorCode::Unauthenticated
    );
    // No new token for a leaver, and the revocation is on the record.
    let refused = s
        .admin
        .create_token(&CreateToken {
            name: "sam-again".into(),
            role: TokenRole::Admin,
            human: Some("sam@example.com".into()),
            expires_at: None,
            tenant: None,
        })
        .await;
    assert_eq!(code(refused), ErrorCode::OwnerInactive);
    let revoked = all_audit(&s.admin)
        .await
        .into_iter()
        .any(|e| e.action == "token.revoke" && e.resource_id == token.token.id);
    assert!(revoked, "the revocation has no audit record");
    s.stop().await;
}

async fn a_configured_admin_token_shows_none_of_itself(b: Backend) {
    let s = TestServer::start(b).await;
    let tokens = s.admin.list_tokens(&page500()).await.unwrap();
    let bootstrap = tokens
        .items
        .iter()
        .find(|t| t.id == "tok_bootstrap")
        .expect("the bootstrap token is listed");
    assert_eq!(bootstrap.prefix, steward_server::CONFIGURED_TOKEN_LABEL);
    let log = serde_json::to_string(&all_audit(&s.admin).await).unwrap();
    assert!(
        !log.contains(&ADMIN_TOKEN[5..16]),
        "part of the admin token is in the log"
    );
    s.stop().await;
}

async fn credentials_are_required_and_roles_enforced(b: Backend) {
    let s = TestServer::start(b).await;
    let err = s
        .anonymous()
        .list_agents(&AgentFilter::default())
        .await
        .unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(401), Some(ErrorCode::Unauthenticated))
    );
    let (status, _) = s
        .client("stwt_not-a-real-token")
        .raw(Method::GET, "/v1/agents", None, None)
        .await
        .unwrap();
    assert_eq!(status, 401);
    let (status, _) = s
        .client("stw_not-a-real-key")
        .raw(Method::GET, "/v1/whoami", None, None)
        .await
        .unwrap();
    assert_eq!(status, 401);

    human(&s.admin, "audrey@example.com").await;
    let auditor = token_for(&s.admin, "audit", TokenRole::Auditor, "audrey@example.com").await;
    let auditor_client = s.client(&auditor.secret);
    auditor_client
        .list_agents(&AgentFilter::default())
        .await
        .unwrap();
    auditor_client
        .list_audit(&AuditFilter::default())
        .await
        .unwrap();
    let err = auditor_client
        .create_team(&CreateTeam {
            name: "x".into(),
            description: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(403), Some(ErrorCode::Forbidden))
    );
    match auditor_client.whoami().await.unwrap() {
        WhoAmI::Token {
            role,
            human_id,
            platform_admin,
            ..
        } => {
            assert_eq!(role, TokenRole::Auditor);
            assert!(human_id.is_some() && !platform_admin);
        }
        other => panic!("{other:?}"),
    }
    // Agents cannot administer.
    low_risk_agent(&s.admin, "bot", "audrey@example.com").await;
    let key = s
        .admin
        .create_key("bot", &CreateKey::default())
        .await
        .unwrap();
    assert_eq!(
        code(
            s.client(&key.secret)
                .list_agents(&AgentFilter::default())
                .await
        ),
        ErrorCode::Forbidden
    );
    // Revoked tokens stop working.
    s.admin.revoke_token(&auditor.token.id).await.unwrap();
    assert_eq!(
        code(auditor_client.list_agents(&AgentFilter::default()).await),
        ErrorCode::Unauthenticated
    );
    assert_eq!(
        code(s.admin.revoke_token("tok_bootstrap").await),
        ErrorCode::Forbidden
    );
    s.stop().await;
}

async fn tenants_are_isolated(b: Backend) {
    let s = TestServer::start(b).await;
    human(&s.admin, "alice@example.com").await;
    let ours = low_risk_agent(&s.admin, "shared-name", "alice@example.com").await;
    s.admin
        .create_tenant(&CreateTenant {
            id: "acme".into(),
            name: "Acme Corp".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        code(
            s.admin
                .create_tenant(&CreateTenant {
                    id: "acme".into(),
                    name: "Again".into()
                })
                .await
        ),
        ErrorCode::AlreadyExists
    );
    assert_eq!(
        code(
            s.admin
                .create_tenant(&CreateTenant {
                    id: "Bad Id".into(),
                    name: "x".into()
                })
                .await
        ),
        ErrorCode::InvalidRequest
    );
    let acme_token = s
        .admin
        .create_token(&CreateToken {
            name: "acme-admin".into(),
            role: TokenRole::Admin,
            human: None,
            expires_at: None,
            tenant: Some("acme".into()),
        })
        .await
        .unwrap();
    let acme = s.client(&acme_token.secret);
    // A new tenant starts empty: no example personas, no agents.
    assert!(
        acme.list_personas(&PageQuery::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        acme.list_agents(&AgentFilter::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // Another tenant's ids and names are unknown here.
    assert_eq!(code(acme.get_agent(&ours.id).await), ErrorCode::NotFound);
    assert_eq!(
        code(acme.get_agent("shared-name").await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(acme.suspend_agent(&ours.id, Some("x")).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(acme.get_human("alice@example.com").await),
        ErrorCode::NotFound
    );
    // Names are unique per tenant, not globally.
    acme.create_role(&CreateRole {
        name: "reader".into(),
        description: String::new(),
        writes: false,
    })
    .await
    .unwrap();
    acme.create_human(&CreateHuman {
        external_id: None,
        email: "alice@example.com".into(),
        display_name: "Other Alice".into(),
        teams: vec![],
        roles: vec![],
    })
    .await
    .unwrap();
    let theirs = low_risk_agent(&acme, "shared-name", "alice@example.com").await;
    assert_ne!(theirs.id, ours.id);
    assert_eq!(
        code(s.admin.get_agent(&theirs.id).await),
        ErrorCode::NotFound
    );
    // Only the platform administrator manages tenants or crosses into one.
    assert_eq!(
        code(
            acme.create_tenant(&CreateTenant {
                id: "evil".into(),
                name: "Evil".into()
            })
            .await
        ),
        ErrorCode::Forbidden
    );
    let (status, body) = acme
        .raw(Method::GET, "/v1/agents", None, None)
        .await
        .unwrap();
    assert_eq!((status, body["items"].as_array().unwrap().len()), (200, 1));
    let crossed = reqwest::Client::new()
        .get(format!("{}/v1/agents", s.server.url()))
        .bearer_auth(&acme_token.secret)
        .header("x-steward-tenant", "default")
        .send()
        .await
        .unwrap();
    assert_eq!(crossed.status(), 403);
    let platform = reqwest::Client::new()
        .get(format!("{}/v1/agents", s.server.url()))
        .bearer_auth(ADMIN_TOKEN)
        .header("x-steward-tenant", "acme")
        .send()
        .await
        .unwrap();
    let page: Page<Agent> = platform.json().await.unwrap();
    assert_eq!(page.items[0].id, theirs.id);
    // Each tenant's audit log holds only its own entries.
    assert!(all_audit(&acme).await.iter().all(|e| e.tenant_id == "acme"));
    assert!(
        all_audit(&s.admin)
            .await
            .iter()
            .all(|e| e.tenant_id == "default")
    );
    s.stop().await;
}

async fn secrets_never_stored_or_logged(b: Backend) {
    let s = TestServer::start(b).await;
    human(&s.admin, "alice@example.com").await;
    low_risk_agent(&s.admin, "bot", "alice@example.com").await;
    let key = s
        .admin
        .create_key("bot", &CreateKey::default())
        .await
        .unwrap();
    let token = s
        .admin
        .create_token(&CreateToken {
            name: "ops".into(),
            role: TokenRole::Admin,
            human: None,
            expires_at: None,
            tenant: None,
        })
        .await
        .unwrap();
    s.client(&key.secret).whoami().await.unwrap();
    let log = serde_json::to_string(&all_audit(&s.admin).await).unwrap();
    for secret in [key.secret.as_str(), token.secret.as_str(), ADMIN_TOKEN] {
        assert!(!log.contains(secret), "a secret reached the audit log");
        let tail = &secret[secret.len() - 20..];
        assert!(
            !log.contains(tail),
            "part of a secret reached the audit log"
        );
    }
    let listed = serde_json::to_string(
        &s.admin
            .list_keys("bot", &PageQuery::default())
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(!listed.contains(&key.secret));
    let tokens =
        serde_json::to_string(&s.admin.list_tokens(&PageQuery::default()).await.unwrap()).unwrap();
    assert!(!tokens.contains(&token.secret));
    s.stop().await;
}
