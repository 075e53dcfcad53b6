//! The MCP gateway with real third-party software: the official TypeScript
//! SDK as the agent's client, `server-everything` (stdio and Streamable
//! HTTP) and `server-filesystem` (stdio) as upstreams, installed at pinned
//! versions by `npm ci` in `tests/mcp/` (`.ci/run` does it).
//!
//! Each gateway test builds a [`Gateway`] fixture (a server, an agent with a
//! key, a registered upstream, policies) and runs client scripts through it.
//! New cases (quotas, approvals) add a policy or a quota to the fixture and
//! one more script step.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use steward_client::Client;
use steward_testkit::mcp::{self, HttpUpstream, NodeStatus};
use steward_testkit::{Backend, TestServer, on_both_backends};
use steward_types::*;

use crate::support::*;

on_both_backends!(servers_are_registered_listed_replaced_and_removed);

/// Whether the third-party software is here. Without `node` the gateway
/// tests skip loudly; with `node` but without the packages they fail, since
/// `.ci/run` installs them.
fn node_ready(test: &str) -> bool {
    match mcp::node_status() {
        NodeStatus::Ready => true,
        NodeStatus::NodeMissing => {
            eprintln!(
                "\n*** SKIPPED {test}: `node` is not installed, so the MCP gateway cannot be \
                 tested with the official SDK and reference servers. ***\n"
            );
            false
        }
        NodeStatus::PackagesMissing => panic!(
            "{test}: run `npm ci` in {} first (.ci/run does)",
            mcp::material_dir().display()
        ),
    }
}

/// A server with an agent, its key and one registered upstream.
struct Gateway {
    server: TestServer,
    key: String,
    upstream: String,
}

impl Gateway {
    /// `agent` (public data, active at once) and the upstream `name`.
    async fn start(name: &str, transport: McpTransport, timeout_secs: Option<u32>) -> Gateway {
        Gateway::start_with(name, transport, timeout_secs, |_| {}).await
    }

    /// [`Gateway::start`] on a server whose configuration `adjust` changes.
    async fn start_with(
        name: &str,
        transport: McpTransport,
        timeout_secs: Option<u32>,
        adjust: impl FnOnce(&mut steward_server::Config),
    ) -> Gateway {
        Gateway::start_on(Backend::Sqlite, name, transport, timeout_secs, adjust).await
    }

    /// [`Gateway::start_with`] on `backend`.
    async fn start_on(
        backend: Backend,
        name: &str,
        transport: McpTransport,
        timeout_secs: Option<u32>,
        adjust: impl FnOnce(&mut steward_server::Config),
    ) -> Gateway {
        let server = TestServer::start_with(backend, adjust).await;
        let admin = &server.admin;
        human(admin, "owner@example.com").await;
        human(admin, "alice@example.com").await;
        let agent = low_risk_agent(admin, "helper", "owner@example.com").await;
        let key = admin
            .create_key(
                &agent.id,
                &CreateKey {
                    name: "mcp".into(),
                    expires_at: None,
                },
            )
            .await
            .unwrap()
            .secret;
        let tools: BTreeMap<String, McpToolMeta> = [
            (
                "echo".to_string(),
                McpToolMeta {
                    classification: "public".into(),
                    risk: "low".into(),
                    cost_estimate: 1,
                },
            ),
            (
                "get-sum".to_string(),
                McpToolMeta {
                    classification: "financial".into(),
                    risk: "high".into(),
                    cost_estimate: 5,
                },
            ),
        ]
        .into();
        admin
            .put_mcp_server(&PutMcpServer {
                name: name.into(),
                description: "reference server".into(),
                transport,
                tools,
                timeout_secs,
                decision_record: McpDecisionRecord::BeforeCall,
            })
            .await
            .unwrap();
        Gateway {
            server,
            key,
            upstream: name.into(),
        }
    }

    fn admin(&self) -> &Client {
        &self.server.admin
    }

    fn url(&self) -> String {
        format!("{}/mcp/{}", self.server.server.url(), self.upstream)
    }

    /// Let tools read `arguments` fields (strict validation needs them declared).
    async fn declare_arguments(&self, record: &str) {
        self.admin()
            .put_action(&PutAction {
                name: MCP_CALL_TOOL.into(),
                description: "Call a tool through the MCP gateway".into(),
                resource_types: vec![MCP_TOOL_TYPE.into()],
                context: [("arguments".to_string(), record.to_string())].into(),
            })
            .await
            .unwrap();
    }

    async fn policy(&self, id: &str, description: &str, text: &str) {
        self.admin()
            .put_policy(&PutPolicy {
                id: id.into(),
                description: description.into(),
                owner: "security@example.com".into(),
                text: text.into(),
            })
            .await
            .unwrap();
    }

    /// A delegated token for `email`, exchanged with the agent's key for
    /// a token of an identity provider the tenant trusts from now on.
    async fn delegated_token(&self, email: &str) -> String {
        use crate::delegation::{ISS, call, exchange_token, idp};
        let corp = idp("k1");
        let admin = self.admin().token().unwrap().to_string();
        let (status, body) = call(
            &self.server,
            &admin,
            reqwest::Method::PUT,
            "/v1/delegation/issuers/corp",
            Some(json!({"issuer": ISS, "audience": "steward", "jwks": {"keys": [corp.jwk]}})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let jwt = corp.token("k1", email, json!({}));
        let (status, body) = exchange_token(&self.server, &self.key, &jwt).await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_string()
    }

    /// Run client steps as the agent (optionally on behalf of a human).
    async fn run(&self, steps: Value, on_behalf_of: Option<&str>) -> Vec<Value> {
        let out = mcp::run_client(&self.url(), &self.key, &steps, on_behalf_of)
            .await
            .unwrap();
        assert!(
            out.get("connect_error").is_none(),
            "could not connect: {out}"
        );
        out["steps"].as_array().unwrap().clone()
    }

    /// The `mcp.tool_call` entries, once there are `count` (outcomes are
    /// recorded right after the answer, so they may trail it briefly).
    async fn tool_calls(&self, count: usize) -> Vec<AuditEntry> {
        for _ in 0..200 {
            let calls = self.audit("mcp.tool_call").await;
            if calls.len() >= count {
                return calls;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!(
            "fewer than {count} mcp.tool_call entries: {:?}",
            self.audit("mcp.tool_call").await
        )
    }

    /// A bare `initialize` POST with `key`, as a client opening a session
    /// sends it.
    async fn initialize(&self, key: &str) -> reqwest::Response {
        initialize(self.url(), key).await
    }

    /// One `echo` call in a session of its own: the answer's text.
    async fn echo(&self, message: &str) -> String {
        let steps = self
            .run(
                json!([{"op": "call", "name": "echo", "arguments": {"message": message}}]),
                None,
            )
            .await;
        text(&steps[0])
    }

    /// Let agents call `echo`, `get-sum` and the long-running tool.
    async fn allow_everything_tools(&self) {
        self.policy(
            "everything-tools",
            "Agents may echo and add",
            CALLS_ON_EVERYTHING,
        )
        .await;
    }

    /// Why connecting to the gateway at `url` (and listing tools) failed.
    async fn connect_error(&self, url: &str) -> String {
        let out = mcp::run_client(url, &self.key, &json!([{"op": "list_tools"}]), None)
            .await
            .unwrap();
        match out["connect_error"]["message"].as_str() {
            Some(message) => message.to_string(),
            None => panic!("the connection did not fail: {out}"),
        }
    }

    async fn audit(&self, action: &str) -> Vec<AuditEntry> {
        all_audit(self.admin())
            .await
            .into_iter()
            .filter(|e| e.action == action)
            .collect()
    }

    async fn stop(self) {
        self.server.stop().await;
    }
}

/// The text of a tool result.
fn text(result: &Value) -> String {
    result["ok"]["content"]
        .as_array()
        .unwrap_or_else(|| panic!("no content in {result}"))
        .iter()
        .filter_map(|c| c["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_error(result: &Value) -> bool {
    result["ok"]["isError"] == json!(true)
}

fn names(result: &Value) -> Vec<String> {
    let mut v: Vec<String> = serde_json::from_value(result["ok"].clone())
        .unwrap_or_else(|_| panic!("not a list: {result}"));
    v.sort();
    v
}

const CALLS_ON_EVERYTHING: &str = r#"permit(principal is Agent, action == Action::"call_tool", resource is Tool)
when { resource.server == "everything" && ["echo", "get-sum", "trigger-long-running-operation"].contains(resource.name) };"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_are_decided_on_tool_and_arguments_and_audited() {
    if !node_ready("tool_calls_are_decided_on_tool_and_arguments_and_audited") {
        return;
    }
    let gw = Gateway::start("everything", mcp::everything_stdio(), None).await;
    gw.declare_arguments("{ a?: Long, b?: Long, message?: String }?")
        .await;
    gw.allow_everything_tools().await;
    gw.policy(
        "no-large-sums",
        "Sums over 100 need a finance agent",
        r#"forbid(principal, action == Action::"call_tool", resource is Tool)
when { context has arguments && context.arguments has a && context.arguments.a > 100 };"#,
    )
    .await;
    gw.policy(
        "simple-prompt-only",
        "Only the simple prompt",
        r#"permit(principal is Agent, action == Action::"get_prompt", resource is Prompt) when { resource.name == "simple-prompt" };"#,
    )
    .await;
    gw.policy(
        "dynamic-text-only",
        "Only the generated text resources",
        r#"permit(principal is Agent, action == Action::"read_resource", resource is McpResource) when { resource.uri like "demo://resource/dynamic/text/*" };"#,
    )
    .await;

    let steps = gw
        .run(
            json!([
                {"op": "list_tools"},
                {"op": "call", "name": "echo", "arguments": {"message": "hello"}},
                {"op": "call", "name": "get-env"},
                {"op": "call", "name": "get-sum", "arguments": {"a": 500, "b": 1}},
                {"op": "call", "name": "get-sum", "arguments": {"a": 2, "b": 3}},
                {"op": "call", "name": "get-sum", "arguments": {"a": 2.5, "b": 3}},
                {"op": "list_prompts"},
                {"op": "get_prompt", "name": "args-prompt", "arguments": {"city": "Paris"}},
                {"op": "list_resources"},
                {"op": "call", "name": "trigger-long-running-operation",
                 "arguments": {"duration": 1, "steps": 2}, "progress": true},
                {"op": "list_resource_templates"},
                {"op": "complete", "ref": {"type": "ref/resource", "uri": "demo://resource/dynamic/text/{resourceId}"},
                 "argument": {"name": "resourceId", "value": "1"}},
                {"op": "complete", "ref": {"type": "ref/resource", "uri": "demo://resource/dynamic/blob/{resourceId}"},
                 "argument": {"name": "resourceId", "value": "1"}},
                {"op": "complete", "ref": {"type": "ref/prompt", "name": "completable-prompt"},
                 "argument": {"name": "department", "value": "E"}},
                {"op": "subscribe", "uri": "demo://resource/static/document/architecture.md"},
                // Tool names no record can hold, with arguments of the wrong
                // type (refused before any decision).
                {"op": "call", "name": "get-sum\u{0}x", "arguments": {"a": 2.5}},
                {"op": "call", "name": "g".repeat(600), "arguments": {"a": 2.5}},
                // A resource is decided in the spelling the upstream reads:
                // a permit for `text/*` allows `DEMO://.../text/1` and not
                // `.../text/../blob/1`, which the upstream reads as a blob.
                {"op": "read_resource", "uri": "DEMO://resource/dynamic/text/1"},
                {"op": "read_resource", "uri": "demo://resource/dynamic/text/../blob/1"},
                {"op": "read_resource", "uri": "demo://resource/dynamic/text/%2e%2E/blob/1"},
            ]),
            None,
        )
        .await;
    for (step, why) in [(15, "control character"), (16, "longer than")] {
        let message = steps[step]["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(why), "{}", steps[step]);
    }
    assert!(
        steps[17]["ok"].to_string().contains("Resource 1"),
        "{}",
        steps[17]
    );
    for step in [18, 19] {
        let message = steps[step]["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("denied") && message.contains("demo://resource/dynamic/blob/1"),
            "{}",
            steps[step]
        );
    }

    // The listing shrinks to what the agent may call.
    assert_eq!(
        names(&steps[0]),
        ["echo", "get-sum", "trigger-long-running-operation"]
    );
    // An allowed call returns the upstream's real result.
    assert!(!is_error(&steps[1]), "{}", steps[1]);
    assert_eq!(text(&steps[1]), "Echo: hello");
    // A forbidden tool: an error result saying why and how to get access.
    assert!(is_error(&steps[2]), "{}", steps[2]);
    let denied = text(&steps[2]);
    assert!(
        denied.contains("Steward denied this call of the tool 'get-env'"),
        "{denied}"
    );
    assert!(denied.contains("To get access"), "{denied}");
    // A forbidden argument value: the guardrail is named with its owner.
    assert!(is_error(&steps[3]), "{}", steps[3]);
    let guarded = text(&steps[3]);
    assert!(guarded.contains("'no-large-sums'"), "{guarded}");
    assert!(
        guarded.contains("Sums over 100 need a finance agent"),
        "{guarded}"
    );
    assert!(guarded.contains("security@example.com"), "{guarded}");
    // The same tool with a small value goes through.
    assert!(!is_error(&steps[4]), "{}", steps[4]);
    assert!(text(&steps[4]).contains('5'), "{}", steps[4]);
    // A value policies cannot compare is refused, not silently ignored.
    assert!(is_error(&steps[5]), "{}", steps[5]);
    assert!(
        text(&steps[5]).contains("'a' must be a whole number"),
        "{}",
        steps[5]
    );
    // Prompts and resources are filtered too.
    assert_eq!(names(&steps[6]), ["simple-prompt"]);
    let prompt_error = steps[7]["error"]["message"].as_str().unwrap_or_default();
    assert!(prompt_error.contains("denied"), "{}", steps[7]);
    assert_eq!(names(&steps[8]), Vec::<String>::new());
    // Progress passes through, with the client's token (the last step's
    // notification may race the result, which ends the request's stream).
    assert!(!is_error(&steps[9]), "{}", steps[9]);
    let progress = steps[9]["ok"]["progress"].as_array().unwrap();
    assert_eq!(progress.first(), Some(&json!(1)), "{}", steps[9]);
    // Resource templates, completions and subscriptions are decided like
    // reads: only the allowed template is listed and completed.
    assert_eq!(
        names(&steps[10]),
        ["demo://resource/dynamic/text/{resourceId}"]
    );
    assert!(steps[11]["ok"].is_array(), "{}", steps[11]);
    for refused in &steps[12..=14] {
        let message = refused["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("denied"), "{refused}");
    }

    // Every call is audited with agent, tool and outcome.
    let calls = gw.tool_calls(4).await;
    let by_tool = |tool: &str| -> Vec<&Value> {
        calls
            .iter()
            .filter_map(|e| e.after.as_ref())
            .filter(|a| a["tool"] == tool)
            .collect()
    };
    let echo = by_tool("echo");
    assert_eq!(echo.len(), 1, "{calls:?}");
    assert_eq!(echo[0]["agent"], "helper");
    assert_eq!(echo[0]["outcome"], "success");
    assert!(echo[0]["response_bytes"].as_u64().unwrap() > 0);
    assert!(echo[0]["decision_id"].as_str().unwrap().starts_with("dec_"));
    let sums = by_tool("get-sum");
    assert_eq!(sums.len(), 2, "one success, one refused argument: {sums:?}");
    assert!(sums.iter().any(|s| s["outcome"] == "refused"));
    assert!(
        calls
            .iter()
            .all(|e| !e.resource_id.contains('\0') && e.resource_id.len() < 600),
        "{calls:?}"
    );
    // Denied calls are decisions in the log, naming the tool.
    let denials = gw.audit("decision.deny").await;
    for tool in ["everything/get-env", "everything/get-sum"] {
        assert!(
            denials.iter().any(|e| e.resource_id == tool),
            "{tool} denial missing"
        );
    }
    // Each names the HTTP request it came with and where from, like any
    // entry of the REST API.
    for e in calls.iter().chain(&denials) {
        assert!(e.request_id.is_some() && e.source.is_some(), "{e:?}");
    }
    // Listings leave one summary entry each.
    let listed = gw.audit("mcp.list_tools").await;
    assert_eq!(
        listed[0].after.as_ref().unwrap()["shown"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_and_approvals_govern_tool_calls() {
    if !node_ready("quotas_and_approvals_govern_tool_calls") {
        return;
    }
    let gw = Gateway::start("everything", mcp::everything_stdio(), None).await;
    // Policies see `message` only; an approval still binds every argument.
    gw.declare_arguments("{ message?: String }?").await;
    gw.policy(
        "echo",
        "Agents may echo",
        r#"permit(principal is Agent, action == Action::"call_tool", resource is Tool) when { resource.name == "echo" };"#,
    )
    .await;
    gw.policy(
        "sums-need-a-person",
        "Sums wait for an approver",
        r#"@approval("approvers")
permit(principal is Agent, action == Action::"call_tool", resource is Tool) when { resource.name == "get-sum" };"#,
    )
    .await;
    gw.admin()
        .put_quota(&PutQuota {
            name: "two-echoes".into(),
            scope: Some(QuotaScope::Agent),
            subject: Some("helper".into()),
            metric: "tool_calls".into(),
            resource_id: Some("everything/echo".into()),
            window: "day".into(),
            limit: 2.0,
            ..Default::default()
        })
        .await
        .unwrap();
    gw.admin()
        .put_quota(&PutQuota {
            name: "echo-bytes".into(),
            scope: Some(QuotaScope::Agent),
            subject: Some("helper".into()),
            metric: "bytes".into(),
            window: "day".into(),
            limit: 1e9,
            ..Default::default()
        })
        .await
        .unwrap();
    let steps = gw
        .run(
            json!([
                {"op": "call", "name": "echo", "arguments": {"message": "one"}},
                {"op": "call", "name": "echo", "arguments": {"message": "two"}},
                {"op": "call", "name": "echo", "arguments": {"message": "three"}},
                {"op": "call", "name": "get-sum", "arguments": {"a": 2, "b": 3}},
            ]),
            None,
        )
        .await;
    assert_eq!(text(&steps[0]), "Echo: one");
    assert_eq!(text(&steps[1]), "Echo: two");
    // Over quota: refused, the quota named with its usage and limit.
    assert!(is_error(&steps[2]), "{}", steps[2]);
    let over = text(&steps[2]);
    assert!(
        over.contains("quota 'two-echoes' would be exceeded"),
        "{over}"
    );
    assert!(over.contains("2 of 2"), "{over}");
    // Whose counter, as people know it.
    assert!(over.contains("for agent 'helper'"), "{over}");
    // Approval-gated: held, with the approval to wait for.
    assert!(is_error(&steps[3]), "{}", steps[3]);
    let held = text(&steps[3]);
    assert!(held.contains("needs a person's approval"), "{held}");
    let pending = gw
        .admin()
        .list_approvals(&ApprovalFilter {
            status: Some("pending".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .items;
    assert_eq!(pending.len(), 1);
    assert!(held.contains(&pending[0].id), "{held}");
    // The approver sees the very arguments the call would send.
    assert_eq!(
        pending[0].request["arguments"],
        json!({"a": 2, "b": 3}),
        "{:?}",
        pending[0].request
    );
    let (_, approver) = person(gw.admin(), "lead@example.com", &["approvers"]).await;
    approver
        .approve(&pending[0].id, Some("fine"))
        .await
        .unwrap();
    // Other arguments are another request, held; the approved one is
    // allowed once with the upstream's real result, then held again.
    let steps = gw
        .run(
            json!([
                {"op": "call", "name": "get-sum", "arguments": {"a": 999999, "b": 1}},
                {"op": "call", "name": "get-sum", "arguments": {"a": 2, "b": 3}},
                {"op": "call", "name": "get-sum", "arguments": {"a": 2, "b": 3}},
            ]),
            None,
        )
        .await;
    assert!(is_error(&steps[0]), "{}", steps[0]);
    assert!(
        text(&steps[0]).contains("needs a person's approval"),
        "{}",
        steps[0]
    );
    assert!(!is_error(&steps[1]), "{}", steps[1]);
    assert!(text(&steps[1]).contains('5'), "{}", steps[1]);
    assert!(is_error(&steps[2]), "{}", steps[2]);
    // The outcomes settled the reservations: the response bytes are counted.
    gw.tool_calls(3).await;
    let mut used = 0.0;
    for _ in 0..200 {
        let usage = gw
            .admin()
            .usage(&UsageQuery {
                agent: Some("helper".into()),
                quota: Some("echo-bytes".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        used = usage[0].status.used;
        if used > 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        used > 0.0,
        "response bytes were settled against the bytes quota"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acting_for_a_person_narrows_to_what_they_may_do() {
    if !node_ready("acting_for_a_person_narrows_to_what_they_may_do") {
        return;
    }
    let gw = Gateway::start("everything", mcp::everything_stdio(), None).await;
    gw.allow_everything_tools().await;
    // Alice may only echo; the agent may do more, but for her it may not.
    gw.policy(
        "alice-echo",
        "People may echo",
        r#"permit(principal is Human, action == Action::"call_tool", resource is Tool) when { resource.name == "echo" };"#,
    )
    .await;
    let steps = gw
        .run(
            json!([
                {"op": "list_tools"},
                {"op": "call", "name": "echo", "arguments": {"message": "for alice"}},
                {"op": "call", "name": "get-sum", "arguments": {"a": 1, "b": 1}},
            ]),
            Some("alice@example.com"),
        )
        .await;
    assert_eq!(names(&steps[0]), ["echo"]);
    assert_eq!(text(&steps[1]), "Echo: for alice");
    assert!(is_error(&steps[2]));
    assert!(text(&steps[2]).contains("denied"), "{}", steps[2]);
    // An unknown person is a clean error, not a session.
    let out = mcp::run_client(&gw.url(), &gw.key, &json!([]), Some("nobody@example.com"))
        .await
        .unwrap();
    assert!(
        out.get("connect_error").is_some() || out["steps"] == json!([]),
        "{out}"
    );

    // Proven: a delegated token for Alice, with no header, narrows the same.
    let for_alice = gw.delegated_token("alice@example.com").await;
    let out = mcp::run_client(
        &gw.url(),
        &for_alice,
        &json!([
            {"op": "list_tools"},
            {"op": "call", "name": "echo", "arguments": {"message": "proven"}},
        ]),
        None,
    )
    .await
    .unwrap();
    assert_eq!(names(&out["steps"][0]), ["echo"], "{out}");
    assert_eq!(text(&out["steps"][1]), "Echo: proven");
    let calls = gw.audit("mcp.tool_call").await;
    let alice = gw.admin().get_human("alice@example.com").await.unwrap().id;
    assert!(
        calls
            .iter()
            .any(|e| e.actor.human_id.as_deref() == Some(alice.as_str())),
        "the call's record names the person: {calls:#?}"
    );
    // The token acts for Alice only; and once proof is required, the
    // agent's own key can no longer just say whom it acts for.
    let out = mcp::run_client(&gw.url(), &for_alice, &json!([]), Some("owner@example.com"))
        .await
        .unwrap();
    assert!(
        out["connect_error"]
            .to_string()
            .contains("delegation_required"),
        "{out}"
    );
    let admin = gw.admin().token().unwrap().to_string();
    let (status, _) = crate::delegation::call(
        &gw.server,
        &admin,
        reqwest::Method::PUT,
        "/v1/delegation/settings",
        Some(json!({"require_proof": true, "max_lifetime_secs": 3600})),
    )
    .await;
    assert_eq!(status, 200);
    let out = mcp::run_client(&gw.url(), &gw.key, &json!([]), Some("alice@example.com"))
        .await
        .unwrap();
    assert!(
        out["connect_error"]
            .to_string()
            .contains("delegation_required"),
        "{out}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamable_http_upstream_and_credentials() {
    if !node_ready("streamable_http_upstream_and_credentials") {
        return;
    }
    let upstream = HttpUpstream::start().await.unwrap();
    let transport = McpTransport::StreamableHttp {
        url: upstream.url.clone(),
    };
    let gw = Gateway::start("everything", transport, None).await;
    gw.allow_everything_tools().await;
    let steps = gw
        .run(
            json!([
                {"op": "list_tools"},
                {"op": "call", "name": "echo", "arguments": {"message": "over http"}},
            ]),
            None,
        )
        .await;
    assert_eq!(
        names(&steps[0]),
        ["echo", "get-sum", "trigger-long-running-operation"]
    );
    assert_eq!(text(&steps[1]), "Echo: over http");

    // Missing or bad credentials: 401 with a Bearer challenge, as MCP clients expect.
    let http = reqwest::Client::new();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "curl", "version": "1"}}});
    for auth in [None, Some("Bearer stw_not-a-real-key")] {
        let mut req = http
            .post(gw.url())
            .header("accept", "application/json, text/event-stream")
            .json(&init);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401);
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
    }
    // An admin token is not an agent.
    let res = http
        .post(gw.url())
        .bearer_auth(steward_testkit::ADMIN_TOKEN)
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    // An unknown upstream is 404.
    let res = http
        .post(format!("{}/mcp/nope", gw.server.server.url()))
        .bearer_auth(&gw.key)
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    // An `initialize` whose params do not fit: invalid params, answering
    // its id and saying what is wrong (no session opens).
    for (id, params, says) in [
        (
            json!(1),
            Some(
                json!({"protocolVersion": "2025-06-18", "capabilities": "nope",
                "clientInfo": {"name": "curl", "version": "1"}}),
            ),
            "params.capabilities: invalid type",
        ),
        (
            json!(2),
            Some(json!({"capabilities": "nope"})),
            "params.protocolVersion is required",
        ),
        (json!("init-3"), Some(json!({})), "protocolVersion"),
        (json!(4), None, "params are required"),
        (json!(5), Some(json!([1, 2])), "params must be an object"),
        (
            json!(6),
            Some(json!({"protocolVersion": "2025-06-18", "capabilities": {}})),
            "params.clientInfo is required",
        ),
    ] {
        let mut message = json!({"jsonrpc": "2.0", "id": id, "method": "initialize"});
        if let Some(params) = params {
            message["params"] = params;
        }
        let res = http
            .post(gw.url())
            .bearer_auth(&gw.key)
            .header("accept", "application/json, text/event-stream")
            .json(&message)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{message}");
        assert!(res.headers().get("mcp-session-id").is_none(), "{message}");
        let reply: Value = res.json().await.unwrap();
        assert_eq!(reply["jsonrpc"], "2.0", "{reply}");
        assert_eq!(reply["id"], id, "{reply}");
        assert_eq!(reply["error"]["code"], -32602, "{reply}");
        let text = reply["error"]["message"].as_str().unwrap();
        assert!(
            text.starts_with("initialize: ") && text.contains(says),
            "{reply}"
        );
    }

    // A client asking for a version nobody speaks is answered with the
    // one the upstream agreed to, not its own request echoed back.
    let res = http
        .post(gw.url())
        .bearer_auth(&gw.key)
        .header("accept", "application/json, text/event-stream")
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "1999-01-01", "capabilities": {},
            "clientInfo": {"name": "curl", "version": "1"}}}),
        )
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let answer = res.text().await.unwrap();
    let data = answer
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .find(|d| !d.trim().is_empty())
        .unwrap_or(&answer);
    let reply: Value = serde_json::from_str(data.trim()).expect(&answer);
    let version = reply["result"]["protocolVersion"]
        .as_str()
        .unwrap_or_default();
    assert!(
        version.starts_with("202") && version != "1999-01-01",
        "{answer}"
    );

    // A session belongs to the agent that opened it: another agent can
    // neither end it nor write into it.
    let res = gw.initialize(&gw.key).await;
    assert!(res.status().is_success(), "{}", res.status());
    let session = res.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    res.bytes().await.unwrap();
    low_risk_agent(gw.admin(), "other", "owner@example.com").await;
    let other = gw
        .admin()
        .create_key("other", &CreateKey::default())
        .await
        .unwrap()
        .secret;
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    // Another agent's session is not found whatever the message holds,
    // params that do not fit included.
    let misfit =
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"cursor": 5}});
    let res = http
        .post(gw.url())
        .bearer_auth(&other)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session)
        .json(&misfit)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    for (key, status) in [(&other, 404), (&gw.key, 202)] {
        let res = http
            .post(gw.url())
            .bearer_auth(key)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &session)
            .json(&initialized)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status);
    }
    // A known method whose params do not fit is invalid params, saying
    // what is wrong; a method the gateway does not relay is not found.
    for (body, code, says) in [
        (
            json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                "params": {"name": "echo", "arguments": ["not", "an", "object"]}}).to_string(),
            -32602,
            "tools/call",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 8, "method": "prompts/get", "params": {"arguments": {}}}).to_string(),
            -32602,
            "prompts/get",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 9, "method": "vendor/frobnicate", "params": {}}).to_string(),
            -32601,
            "vendor/frobnicate",
        ),
        // What rmcp would misread is refused before it: a cursor that is
        // no string (rmcp drops it and answers the first page), and params
        // or `_meta` that are no object (rmcp answers with no id).
        (
            json!({"jsonrpc": "2.0", "id": 10, "method": "tools/list", "params": {"cursor": 5}}).to_string(),
            -32602,
            "tools/list: params.cursor must be a string",
        ),
        (
            json!({"jsonrpc": "2.0", "id": "p-11", "method": "prompts/list", "params": {"cursor": {}}}).to_string(),
            -32602,
            "prompts/list: params.cursor must be a string",
        ),
        // A cursor whose name is written with a JSON escape is a cursor.
        (
            r#"{"jsonrpc": "2.0", "id": 14, "method": "tools/list", "params": {"\u0063ursor": 5}}"#
                .to_string(),
            -32602,
            "tools/list: params.cursor must be a string",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 12, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"message": "x"}, "_meta": 5}}).to_string(),
            -32602,
            "tools/call: params._meta must be an object",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 13, "method": "tools/call", "params": 5}).to_string(),
            -32602,
            "tools/call: params must be an object",
        ),
        // A name or URI no record could hold, as a tool's name.
        (
            json!({"jsonrpc": "2.0", "id": 15, "method": "resources/read",
                "params": {"uri": format!("demo://{}", "x".repeat(600))}}).to_string(),
            -32602,
            "resource URI: longer than 512 bytes",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 16, "method": "prompts/get",
                "params": {"name": "simple\u{1}prompt"}}).to_string(),
            -32602,
            "prompt name: contains a control character",
        ),
    ] {
        let message: Value = serde_json::from_str(&body).unwrap();
        let answer = http
            .post(gw.url())
            .bearer_auth(&gw.key)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-session-id", &session)
            .body(body)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let data = answer
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .find(|d| !d.trim().is_empty())
            .unwrap_or(&answer);
        let reply: Value = serde_json::from_str(data.trim()).expect(&answer);
        assert_eq!(reply["id"], message["id"], "{answer}");
        assert_eq!(reply["error"]["code"], code, "{answer}");
        let text = reply["error"]["message"].as_str().unwrap();
        assert!(text.contains(says), "{answer}");
    }
    // A batch, a body that is not JSON and JSON that is no JSON-RPC
    // message: 400 with a JSON-RPC error without an id, and the session
    // goes on.
    for (body, code, says) in [
        (
            format!("[{initialized}, {initialized}]"),
            -32600,
            "batches are not supported",
        ),
        (
            "{\"jsonrpc\": \"2.0\", \"id\": 1,".to_string(),
            -32700,
            "parse error",
        ),
        ("{\"hello\": 1}".to_string(), -32600, "not a JSON-RPC"),
    ] {
        let res = http
            .post(gw.url())
            .bearer_auth(&gw.key)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-session-id", &session)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{body}");
        let reply: Value = res.json().await.unwrap();
        assert_eq!(reply["id"], Value::Null, "{reply}");
        assert_eq!(reply["error"]["code"], code, "{reply}");
        let text = reply["error"]["message"].as_str().unwrap();
        assert!(text.contains(says), "{reply}");
    }
    for key in [&other, &gw.key] {
        let res = http
            .delete(gw.url())
            .bearer_auth(key)
            .header("mcp-session-id", &session)
            .send()
            .await
            .unwrap();
        let owner = std::ptr::eq(key, &gw.key);
        assert_eq!(res.status().is_success(), owner, "{}", res.status());
    }

    // An agent holds a bounded number of sessions (each may be a process).
    let mut sessions = Vec::new();
    loop {
        let res = gw.initialize(&other).await;
        if res.status() == 429 {
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["error"]["code"], "quota_exceeded", "{body}");
            break;
        }
        assert!(res.status().is_success(), "{}", res.status());
        sessions.push(
            res.headers()["mcp-session-id"]
                .to_str()
                .unwrap()
                .to_string(),
        );
        res.bytes().await.unwrap();
        assert!(sessions.len() <= 16, "no limit on sessions");
    }
    assert_eq!(sessions.len(), 16);
    let res = http
        .delete(gw.url())
        .bearer_auth(&other)
        .header("mcp-session-id", &sessions[0])
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    assert!(gw.initialize(&other).await.status().is_success());

    // Also when the sessions are opened at once: a slot is held while its
    // upstream starts, so no two openings see the same free slot.
    low_risk_agent(gw.admin(), "eager", "owner@example.com").await;
    let eager = gw
        .admin()
        .create_key("eager", &CreateKey::default())
        .await
        .unwrap()
        .secret;
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..24 {
        let (url, key) = (gw.url(), eager.clone());
        opening.spawn(async move {
            let res = initialize(url, &key).await;
            let status = res.status().as_u16();
            res.bytes().await.unwrap();
            status
        });
    }
    let mut statuses = Vec::new();
    while let Some(status) = opening.join_next().await {
        statuses.push(status.unwrap());
    }
    statuses.sort();
    let opened = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(opened, 16, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    gw.stop().await;
}

/// A bare `initialize` POST to `url` with `key`, as a client opening a
/// session sends it.
async fn initialize(url: String, key: &str) -> reqwest::Response {
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "curl", "version": "1"}}});
    reqwest::Client::new()
        .post(url)
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .json(&init)
        .send()
        .await
        .unwrap()
}

/// A TLS front on a free local port, with a certificate for `localhost`
/// issued by a fresh CA, relaying each connection's bytes to a plain local
/// port; it stops when dropped.
struct TlsFront {
    port: u16,
    ca_pem: String,
    task: tokio::task::JoinHandle<()>,
}

impl TlsFront {
    async fn start(to: u16) -> TlsFront {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose,
        };
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "Steward test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&key, &ca).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    if let Ok(mut plain) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
        TlsFront {
            port,
            ca_pem: ca.pem(),
            task,
        }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_are_verified_with_the_configured_ca() {
    if !node_ready("https_upstreams_are_verified_with_the_configured_ca") {
        return;
    }
    let upstream = HttpUpstream::start().await.unwrap();
    let front = TlsFront::start(upstream.port).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("internal-ca.pem");
    std::fs::write(&ca_file, &front.ca_pem).unwrap();
    let transport = McpTransport::StreamableHttp {
        url: format!("https://localhost:{}/mcp", front.port),
    };

    // Trusted through the configured CA file: the upstream's real answer.
    let gw = Gateway::start_with("everything", transport.clone(), Some(10), |config| {
        config.mcp_upstream_ca_file = Some(ca_file.clone());
    })
    .await;
    gw.allow_everything_tools().await;
    assert_eq!(gw.echo("over tls").await, "Echo: over tls");
    gw.stop().await;

    // Without it the certificate is not trusted: a clean error that says so.
    let gw = Gateway::start("everything", transport, Some(10)).await;
    let message = gw.connect_error(&gw.url()).await;
    assert!(
        message.contains("upstream MCP server 'everything' is unavailable")
            && message.contains("invalid peer certificate: UnknownIssuer"),
        "{message}"
    );
    gw.stop().await;

    // A CA file that is not PEM, or is not there, stops the server from
    // starting, saying why.
    std::fs::write(&ca_file, "not a certificate").unwrap();
    let missing = dir.path().join("no-such-ca.pem");
    for (file, why) in [
        (&ca_file, "holds no PEM certificate"),
        (&missing, "cannot read mcp_upstream_ca_file"),
    ] {
        let config = steward_server::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("data"),
            mcp_upstream_ca_file: Some(file.clone()),
            ..Default::default()
        };
        let error = steward_server::start(config)
            .await
            .err()
            .expect("must not start");
        assert!(error.to_string().contains(why), "{error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_changes_reach_the_gateway_at_once() {
    if !node_ready("registration_changes_reach_the_gateway_at_once") {
        return;
    }
    let upstream = HttpUpstream::start().await.unwrap();
    let transport = McpTransport::StreamableHttp {
        url: upstream.url.clone(),
    };
    let gw = Gateway::start("everything", transport.clone(), None).await;
    gw.policy(
        "not-high-risk",
        "Agents may call tools that are not high risk",
        r#"permit(principal is Agent, action == Action::"call_tool", resource is Tool)
when { resource.server == "everything" && resource.risk != "high" };"#,
    )
    .await;
    // Several calls on one upstream session, with progress in between.
    let steps = gw
        .run(
            json!([
                {"op": "call", "name": "echo", "arguments": {"message": "one"}},
                {"op": "call", "name": "trigger-long-running-operation",
                 "arguments": {"duration": 1, "steps": 2}, "progress": true},
                {"op": "call", "name": "echo", "arguments": {"message": "two"}},
                {"op": "call", "name": "get-sum", "arguments": {"a": 1, "b": 1}},
            ]),
            None,
        )
        .await;
    assert_eq!(text(&steps[0]), "Echo: one");
    assert!(!is_error(&steps[1]), "{}", steps[1]);
    let progress = steps[1]["ok"]["progress"].as_array().unwrap();
    assert_eq!(progress.first(), Some(&json!(1)), "{}", steps[1]);
    assert_eq!(text(&steps[2]), "Echo: two");
    assert!(text(&steps[3]).contains("denied"), "{}", steps[3]);

    // The registration now says echo is high risk: the next call is denied
    // (the gateway used the old registration a moment ago).
    let echo_at = |risk: &str| PutMcpServer {
        name: "everything".into(),
        description: "reference server".into(),
        transport: transport.clone(),
        tools: [(
            "echo".to_string(),
            McpToolMeta {
                classification: "public".into(),
                risk: risk.into(),
                cost_estimate: 1,
            },
        )]
        .into(),
        timeout_secs: None,
        decision_record: McpDecisionRecord::BeforeCall,
    };
    gw.admin().put_mcp_server(&echo_at("high")).await.unwrap();
    let echo = json!([{"op": "call", "name": "echo", "arguments": {"message": "three"}}]);
    let steps = gw.run(echo.clone(), None).await;
    assert!(is_error(&steps[0]), "{}", steps[0]);
    assert!(text(&steps[0]).contains("denied"), "{}", steps[0]);
    // A governance directory applied says low risk again: allowed again.
    let applied = gw
        .admin()
        .apply(&ApplyRequest {
            mcp_servers: vec![echo_at("low")],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(applied.applied, "{applied:?}");
    let steps = gw.run(echo, None).await;
    assert_eq!(text(&steps[0]), "Echo: three");

    // Removed: the endpoint is gone.
    gw.admin().delete_mcp_server("everything").await.unwrap();
    assert_eq!(gw.initialize(&gw.key).await.status(), 404);
    let out = mcp::run_client(&gw.url(), &gw.key, &json!([]), None)
        .await
        .unwrap();
    assert!(out.get("connect_error").is_some(), "{out}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filesystem_paths_are_governed() {
    if !node_ready("filesystem_paths_are_governed") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    std::fs::create_dir(root.join("public")).unwrap();
    std::fs::write(root.join("public/readme.txt"), "hello from the file").unwrap();
    std::fs::write(root.join("secret.txt"), "the secret").unwrap();
    let gw = Gateway::start("files", mcp::filesystem_stdio(&root), None).await;
    gw.declare_arguments("{ path?: String }?").await;
    gw.policy(
        "files-read",
        "Agents may read files",
        r#"permit(principal is Agent, action == Action::"call_tool", resource is Tool)
when { resource.server == "files" && ["read_text_file", "list_allowed_directories"].contains(resource.name) };"#,
    )
    .await;
    gw.policy(
        "no-secrets",
        "Secret files stay with people",
        r#"forbid(principal, action == Action::"call_tool", resource is Tool)
when { context has arguments && context.arguments has path && context.arguments.path like "*secret*" };"#,
    )
    .await;
    let public = root
        .join("public/readme.txt")
        .to_string_lossy()
        .into_owned();
    let secret = root.join("secret.txt").to_string_lossy().into_owned();
    let steps = gw
        .run(
            json!([
                {"op": "list_tools"},
                {"op": "call", "name": "read_text_file", "arguments": {"path": public}},
                {"op": "call", "name": "read_text_file", "arguments": {"path": secret}},
                {"op": "call", "name": "write_file", "arguments": {"path": public, "content": "x"}},
            ]),
            None,
        )
        .await;
    assert_eq!(
        names(&steps[0]),
        ["list_allowed_directories", "read_text_file"]
    );
    assert_eq!(text(&steps[1]), "hello from the file");
    assert!(is_error(&steps[2]));
    assert!(text(&steps[2]).contains("'no-secrets'"), "{}", steps[2]);
    assert!(!text(&steps[2]).contains("the secret"));
    assert!(is_error(&steps[3]));
    assert_eq!(
        std::fs::read_to_string(root.join("public/readme.txt")).unwrap(),
        "hello from the file"
    );

    // The sandbox is the registration's: a client that offers roots (a
    // filesystem server takes them as its allowed directories) cannot widen
    // it to their parent.
    let outside = tempfile::tempdir().unwrap();
    let outside_root = outside.path().canonicalize().unwrap();
    std::fs::write(outside_root.join("other.txt"), "outside the sandbox").unwrap();
    let other = outside_root
        .join("other.txt")
        .to_string_lossy()
        .into_owned();
    let steps = gw
        .run(
            json!([
                {"op": "roots", "uris": [format!("file://{}", outside_root.display())]},
                {"op": "call", "name": "list_allowed_directories", "arguments": {}},
                {"op": "call", "name": "read_text_file", "arguments": {"path": other}},
                {"op": "call", "name": "read_text_file", "arguments": {"path": public}},
            ]),
            None,
        )
        .await;
    assert!(
        !text(&steps[1]).contains(&*outside_root.to_string_lossy()),
        "{}",
        steps[1]
    );
    assert!(is_error(&steps[2]), "{}", steps[2]);
    assert!(!text(&steps[2]).contains("outside the sandbox"));
    assert_eq!(text(&steps[3]), "hello from the file");
    gw.stop().await;
}

/// A stdio upstream's answer over the 16 MiB a message may hold fails its
/// call at once with an error that says so (not at the timeout, as if
/// there had been no answer), the call is audited as an error, and the
/// session is closed; a new one works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_stdio_answer_fails_at_once() {
    if !node_ready("an_oversized_stdio_answer_fails_at_once") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    std::fs::write(root.join("large.txt"), "a".repeat(17 << 20)).unwrap();
    std::fs::write(root.join("small.txt"), "small enough").unwrap();
    let gw = Gateway::start("files", mcp::filesystem_stdio(&root), None).await;
    gw.policy(
        "files-read",
        "Agents may read files",
        r#"permit(principal is Agent, action == Action::"call_tool", resource is Tool)
when { resource.server == "files" && resource.name == "read_text_file" };"#,
    )
    .await;
    let path = |name: &str| root.join(name).to_string_lossy().into_owned();
    let steps = gw
        .run(
            json!([
                {"op": "call", "name": "read_text_file", "arguments": {"path": path("small.txt")}},
                {"op": "call", "name": "read_text_file", "arguments": {"path": path("large.txt")}},
                {"op": "ping_until_gone"},
            ]),
            None,
        )
        .await;
    assert_eq!(text(&steps[0]), "small enough");
    let message = steps[1]["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("upstream MCP server 'files' sent a message over 16 MiB"),
        "{}",
        steps[1]
    );
    assert!(
        steps[2]["ok"].is_array(),
        "the session was closed: {}",
        steps[2]
    );
    let calls = gw.tool_calls(2).await;
    assert!(
        calls.iter().any(|e| {
            let a = e.after.as_ref().unwrap();
            a["outcome"] == "error"
                && a["error"]
                    .as_str()
                    .is_some_and(|t| t.contains("over 16 MiB"))
        }),
        "{calls:?}"
    );
    let steps = gw
        .run(
            json!([{"op": "call", "name": "read_text_file", "arguments": {"path": path("small.txt")}}]),
            None,
        )
        .await;
    assert_eq!(text(&steps[0]), "small enough");
    gw.stop().await;
}

/// A session over `upstream` whose client calls `echo`, waits while
/// `change` does what it will to the upstream, takes the step `then` (by
/// default another `echo`) and then pings until the gateway has closed the
/// session: the steps' answers, with the gateway (still running) and what
/// `change` left.
async fn a_session_across<F, Fut>(
    upstream: HttpUpstream,
    timeout_secs: u32,
    then: Option<Value>,
    change: F,
) -> (Gateway, Option<HttpUpstream>, Value)
where
    F: FnOnce(HttpUpstream) -> Fut,
    Fut: std::future::Future<Output = Option<HttpUpstream>>,
{
    let transport = McpTransport::StreamableHttp {
        url: upstream.url.clone(),
    };
    let gw = Gateway::start("everything", transport, Some(timeout_secs)).await;
    gw.allow_everything_tools().await;
    let dir = tempfile::tempdir().unwrap();
    let changed = dir.path().join("changed");
    let (url, key, changed_path) = (
        gw.url(),
        gw.key.clone(),
        changed.to_string_lossy().into_owned(),
    );
    let then = then.unwrap_or_else(
        || json!({"op": "call", "name": "echo", "arguments": {"message": "after"}}),
    );
    let client = tokio::spawn(async move {
        mcp::run_client(
            &url,
            &key,
            &json!([
                {"op": "call", "name": "echo", "arguments": {"message": "before"}},
                {"op": "wait_file", "path": changed_path},
                then,
                {"op": "ping_until_gone"},
            ]),
            None,
        )
        .await
        .unwrap()
    });
    gw.tool_calls(1).await;
    let left = change(upstream).await;
    std::fs::write(&changed, "").unwrap();
    let out = client.await.unwrap();
    let steps = &out["steps"];
    assert_eq!(text(&steps[0]), "Echo: before", "{out}");
    assert!(steps[3]["ok"].is_array(), "the session was closed: {out}");
    (gw, left, out)
}

/// An HTTP upstream that goes away mid-session ends the session: the call
/// sent to it fails with an error that says so (naming no internal type),
/// and the session is closed, so the client's next request starts anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_upstream_that_goes_away_ends_the_session() {
    if !node_ready("an_http_upstream_that_goes_away_ends_the_session") {
        return;
    }
    let upstream = HttpUpstream::start().await.unwrap();
    let (gw, _, out) = a_session_across(upstream, 10, None, |upstream| async move {
        drop(upstream);
        None
    })
    .await;
    let message = out["steps"][2]["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("the upstream MCP server 'everything' has ended")
            && message.contains("this session is being closed")
            && !message.contains("steward_server::"),
        "{out}"
    );
    gw.stop().await;
}

/// An HTTP upstream that restarts knows none of its old sessions: it
/// refuses the gateway's session id. The call sent to it fails at once
/// (well inside the registration's timeout) with an error that says the
/// upstream session is gone, the gateway session is closed, and the
/// client's next session reaches the new upstream. (The upstream offers no
/// event stream, whose failure would tell the gateway first: see
/// `a_listening_session_ends_when_its_http_upstream_restarts`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_upstream_that_restarts_ends_the_session() {
    if !node_ready("an_http_upstream_that_restarts_ends_the_session") {
        return;
    }
    let upstream = HttpUpstream::without_stream().await.unwrap();
    // A timeout the test would notice: the call must not wait it out.
    let (gw, upstream, out) = a_session_across(upstream, 120, None, |upstream| async move {
        Some(upstream.restart().await.unwrap())
    })
    .await;
    let message = out["steps"][2]["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("the upstream MCP server 'everything' has ended")
            && message.contains("no longer takes this session")
            && message.contains("this session is being closed"),
        "{out}"
    );
    let steps = gw
        .run(
            json!([{"op": "call", "name": "echo", "arguments": {"message": "anew"}}]),
            None,
        )
        .await;
    assert_eq!(text(&steps[0]), "Echo: anew");
    drop(upstream);
    gw.stop().await;
}

/// A session whose client only listens learns that its HTTP upstream
/// restarted: the upstream refuses the gateway's event stream for the old
/// session, the gateway asks it with a ping and, refused again, closes the
/// session. The client's own event stream is then refused with 404 (MCP's
/// "start a new session") without the client sending anything, and its
/// next request finds the session gone rather than a session that can
/// only fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listening_session_ends_when_its_http_upstream_restarts() {
    if !node_ready("a_listening_session_ends_when_its_http_upstream_restarts") {
        return;
    }
    let upstream = HttpUpstream::start().await.unwrap();
    let (gw, upstream, out) = a_session_across(
        upstream,
        120,
        Some(json!({"op": "wait_stream_gone"})),
        |upstream| async move { Some(upstream.restart().await.unwrap()) },
    )
    .await;
    let steps = &out["steps"];
    assert!(
        steps[2]["ok"]
            .as_str()
            .is_some_and(|m| m.contains("Not Found")),
        "{out}"
    );
    // No request met the broken session before it was closed.
    assert_eq!(steps[3]["ok"], json!([]), "{out}");
    drop(upstream);
    gw.stop().await;
}

/// A client on `credential` calls `echo` and then only listens on its
/// session's event stream while `end` makes the credential stop
/// authenticating: the gateway closes the session, so the stream hears
/// nothing more and reconnecting is refused (401).
async fn a_listening_session_ends<F, Fut>(gw: &Gateway, credential: &str, end: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let ended = dir.path().join("ended");
    let (url, credential, ended_path) = (
        gw.url(),
        credential.to_string(),
        ended.to_string_lossy().into_owned(),
    );
    let before = gw.audit("mcp.tool_call").await.len();
    let client = tokio::spawn(async move {
        mcp::run_client(
            &url,
            &credential,
            &json!([
                {"op": "call", "name": "echo", "arguments": {"message": "before"}},
                {"op": "wait_file", "path": ended_path},
                {"op": "wait_stream_gone", "matching": "401|Unauthorized"},
            ]),
            None,
        )
        .await
        .unwrap()
    });
    gw.tool_calls(before + 1).await;
    end().await;
    std::fs::write(&ended, "").unwrap();
    let out = client.await.unwrap();
    assert_eq!(text(&out["steps"][0]), "Echo: before", "{out}");
    assert!(out["steps"][2]["ok"].is_string(), "{out}");
}

/// A session outlives no key: once the key it was opened with is revoked,
/// or the person a delegated token acts for leaves (which revokes the
/// token), the gateway closes it at once, event stream and all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_with_its_credential() {
    if !node_ready("a_session_ends_with_its_credential") {
        return;
    }
    let gw = Gateway::start("everything", mcp::everything_stdio(), None).await;
    gw.allow_everything_tools().await;
    gw.policy(
        "people-echo",
        "People may echo",
        r#"permit(principal is Human, action == Action::"call_tool", resource is Tool) when { resource.name == "echo" };"#,
    )
    .await;
    // A delegated token for Alice, exchanged with the agent's key.
    let for_alice = gw.delegated_token("alice@example.com").await;
    // A session is its credential's: neither the person's token nor
    // another key of the agent uses one the first key opened.
    let session = open_session(&gw.url(), &gw.key).await;
    let other_key = gw
        .admin()
        .create_key("helper", &CreateKey::default())
        .await
        .unwrap()
        .secret;
    assert_eq!(ping(&gw.url(), &other_key, &session).await, 404);
    assert_eq!(ping(&gw.url(), &for_alice, &session).await, 404);
    assert_eq!(ping(&gw.url(), &gw.key, &session).await, 200);
    a_listening_session_ends(&gw, &for_alice, || async {
        gw.admin()
            .deactivate_human("alice@example.com", &TransitionRequest::default())
            .await
            .unwrap();
    })
    .await;
    a_listening_session_ends(&gw, &gw.key, || async {
        let admin = gw.admin();
        let keys = admin
            .list_keys("helper", &PageQuery::default())
            .await
            .unwrap();
        let first = keys
            .items
            .iter()
            .find(|k| gw.key.starts_with(&k.prefix))
            .unwrap();
        admin.revoke_key("helper", &first.id).await.unwrap();
    })
    .await;
    gw.stop().await;
}

/// A live HTTP upstream that refuses one request with an HTTP error and no
/// JSON-RPC body (a rate limiter's `429`) has not lost the session: the
/// call fails with the upstream's refusal, the session goes on, and the
/// next call is answered in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_upstream_that_refuses_a_request_keeps_the_session() {
    if !node_ready("an_http_upstream_that_refuses_a_request_keeps_the_session") {
        return;
    }
    let upstream = HttpUpstream::refusing().await.unwrap();
    let transport = McpTransport::StreamableHttp {
        url: upstream.url.clone(),
    };
    let gw = Gateway::start("everything", transport, Some(30)).await;
    gw.allow_everything_tools().await;
    let steps = gw
        .run(
            json!([
                {"op": "call", "name": "echo", "arguments": {"message": "before"}},
                {"op": "call", "name": "echo", "arguments": {"message": "REFUSE"}},
                {"op": "call", "name": "echo", "arguments": {"message": "after"}},
            ]),
            None,
        )
        .await;
    assert_eq!(text(&steps[0]), "Echo: before");
    let message = steps[1]["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("refused the request")
            && message.contains("429")
            && message.contains("the session goes on"),
        "{}",
        steps[1]
    );
    assert_eq!(text(&steps[2]), "Echo: after", "{}", steps[2]);
    gw.stop().await;
}

/// A read answered with other resources' contents (a directory's files)
/// passes on only those the agent may read too, each decided in the
/// spelling the upstream reads; one audit entry says what was withheld.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_passes_on_only_the_contents_the_agent_may_read() {
    if !node_ready("a_read_passes_on_only_the_contents_the_agent_may_read") {
        return;
    }
    let upstream = HttpUpstream::refusing().await.unwrap();
    let transport = McpTransport::StreamableHttp {
        url: upstream.url.clone(),
    };
    let gw = Gateway::start("shelves", transport, Some(30)).await;
    gw.policy(
        "the-shelf-but-not-its-secrets",
        "The shelf and what is public on it",
        r#"permit(principal is Agent, action == Action::"read_resource", resource is McpResource)
when { resource.uri == "box://shelf" || resource.uri == "box://shelf/public" };"#,
    )
    .await;
    let steps = gw
        .run(json!([{"op": "read_resource", "uri": "box://shelf"}]), None)
        .await;
    let uris: Vec<&str> = steps[0]["ok"]["contents"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", steps[0]))
        .iter()
        .filter_map(|c| c["uri"].as_str())
        .collect();
    assert_eq!(
        uris,
        ["box://shelf", "BOX://shelf/./public"],
        "{}",
        steps[0]
    );
    assert!(
        !steps[0].to_string().contains("secret item"),
        "{}",
        steps[0]
    );
    let entries = gw.audit("mcp.resource_contents").await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    let after = entries[0].after.as_ref().unwrap();
    assert_eq!(after["method"], "resources/read");
    assert_eq!(after["requested"], "box://shelf");
    assert_eq!(after["shown"], json!(["box://shelf/public"]));
    assert_eq!(after["withheld"], json!(["box://shelf/secret"]));
    drop(upstream);
    gw.stop().await;
}

/// Resources a tool's result or a prompt's messages embed are read through
/// them: each is decided as a `read_resource`, and one the agent may not
/// read is replaced with a note saying so (the rest of the answer stands).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_resources_are_decided_as_reads() {
    if !node_ready("embedded_resources_are_decided_as_reads") {
        return;
    }
    let gw = Gateway::start("everything", mcp::everything_stdio(), None).await;
    gw.policy(
        "reference-tool",
        "The tool that embeds resources",
        r#"permit(principal is Agent, action == Action::"call_tool", resource is Tool)
when { resource.name == "get-resource-reference" };"#,
    )
    .await;
    gw.policy(
        "reference-prompt",
        "The prompt that embeds resources",
        r#"permit(principal is Agent, action == Action::"get_prompt", resource is Prompt)
when { resource.name == "resource-prompt" };"#,
    )
    .await;
    gw.policy(
        "text-resources",
        "Only the generated text resources",
        r#"permit(principal is Agent, action == Action::"read_resource", resource is McpResource) when { resource.uri like "demo://resource/dynamic/text/*" };"#,
    )
    .await;
    let steps = gw
        .run(
            json!([
                {"op": "call", "name": "get-resource-reference",
                 "arguments": {"resourceType": "Text", "resourceId": 1}},
                {"op": "call", "name": "get-resource-reference",
                 "arguments": {"resourceType": "Blob", "resourceId": 1}},
                {"op": "get_prompt", "name": "resource-prompt",
                 "arguments": {"resourceType": "Blob", "resourceId": "2"}},
            ]),
            None,
        )
        .await;
    let embedded = |step: &Value| -> Vec<String> {
        let blocks = step["ok"]["content"]
            .as_array()
            .or_else(|| step["ok"]["messages"].as_array())
            .unwrap_or_else(|| panic!("{step}"))
            .clone();
        blocks
            .iter()
            .map(|b| b.get("content").unwrap_or(b))
            .filter_map(|b| b["resource"]["uri"].as_str().map(String::from))
            .collect()
    };
    assert_eq!(
        embedded(&steps[0]),
        ["demo://resource/dynamic/text/1"],
        "{}",
        steps[0]
    );
    for (step, uri) in [
        (1, "demo://resource/dynamic/blob/1"),
        (2, "demo://resource/dynamic/blob/2"),
    ] {
        assert!(embedded(&steps[step]).is_empty(), "{}", steps[step]);
        let said = steps[step].to_string();
        assert!(
            said.contains(&format!("Steward withheld the resource '{uri}'")),
            "{said}"
        );
    }
    let entries = gw.audit("mcp.resource_contents").await;
    let methods: Vec<(&str, &Value)> = entries
        .iter()
        .filter_map(|e| e.after.as_ref())
        .map(|a| (a["method"].as_str().unwrap_or_default(), &a["withheld"]))
        .collect();
    assert!(
        methods.contains(&("tools/call", &json!(["demo://resource/dynamic/blob/1"])))
            && methods.contains(&("prompts/get", &json!(["demo://resource/dynamic/blob/2"]))),
        "{methods:?}"
    );
    gw.stop().await;
}

/// `decision_record = "with_call"`: an allowed call goes upstream while its
/// decision record commits, and the answer waits for the record. What that
/// trades away shows when the store stops taking writes: the call has run and
/// its answer is withheld. The default runs nothing before its record is on
/// disk, and neither does a `with_call` server for a tool registered as
/// high risk, one a stored entity makes high risk, or one a quota counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_recorded_with_the_call() {
    if !node_ready("decisions_recorded_with_the_call") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let gw = Gateway::start("files", mcp::filesystem_stdio(&root), None).await;
    let high = McpToolMeta {
        classification: "internal".into(),
        risk: "high".into(),
        cost_estimate: 0,
    };
    let with_call = gw
        .admin()
        .put_mcp_server(&PutMcpServer {
            name: "files-with-call".into(),
            description: "the same files, recorded with the call".into(),
            transport: mcp::filesystem_stdio(&root),
            tools: [("create_directory".to_string(), high)].into(),
            timeout_secs: None,
            decision_record: McpDecisionRecord::WithCall,
        })
        .await
        .unwrap();
    assert_eq!(with_call.decision_record, McpDecisionRecord::WithCall);
    gw.policy(
        "files-write",
        "Agents may write files",
        r#"permit(principal is Agent, action == Action::"call_tool", resource is Tool)
when { ["write_file", "create_directory", "move_file", "edit_file"].contains(resource.name) };"#,
    )
    .await;
    // Moving files is high risk by a stored entity; edits are counted.
    gw.admin()
        .put_entity(&ResourceEntity {
            resource_type: MCP_TOOL_TYPE.into(),
            id: "files-with-call/move_file".into(),
            attributes: [
                ("server", json!("files-with-call")),
                ("name", json!("move_file")),
                ("classification", json!("internal")),
                ("risk", json!("high")),
                ("cost_estimate", json!(0)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        })
        .await
        .unwrap();
    gw.admin()
        .put_quota(&PutQuota {
            name: "edits".into(),
            scope: Some(QuotaScope::Agent),
            subject: Some("helper".into()),
            metric: "tool_calls".into(),
            resource_id: Some("files-with-call/edit_file".into()),
            window: "day".into(),
            limit: 100.0,
            ..Default::default()
        })
        .await
        .unwrap();
    std::fs::write(root.join("two.txt"), "two").unwrap();
    std::fs::write(root.join("three.txt"), "three").unwrap();
    let with_call = format!("{}/mcp/files-with-call", gw.server.server.url());
    let path = |name: &str| root.join(name).to_string_lossy().into_owned();

    // A working store: the call runs, and its decision is in the log.
    let out = mcp::run_client(
        &with_call,
        &gw.key,
        &json!([{"op": "call", "name": "write_file",
                 "arguments": {"path": path("one.txt"), "content": "one"}}]),
        None,
    )
    .await
    .unwrap();
    assert!(!is_error(&out["steps"][0]), "{out}");
    assert_eq!(
        std::fs::read_to_string(root.join("one.txt")).unwrap(),
        "one"
    );
    let allowed = gw.audit("decision.allow").await;
    assert!(
        allowed
            .iter()
            .any(|e| e.resource_id == "files-with-call/write_file"),
        "{allowed:?}"
    );

    // Sessions open, each then waiting for the store to fail before its
    // call: the default, then four calls on the `with_call` server.
    let go = dir.path().join("go");
    let script = |tool: &str, arguments: Value| {
        json!([{"op": "list_tools"}, {"op": "wait_file", "path": go},
               {"op": "call", "name": tool, "arguments": arguments}])
    };
    let clients = [
        (
            gw.url(),
            script(
                "write_file",
                json!({"path": path("before.txt"), "content": "x"}),
            ),
        ),
        (
            with_call.clone(),
            script(
                "write_file",
                json!({"path": path("with.txt"), "content": "x"}),
            ),
        ),
        (
            with_call.clone(),
            script("create_directory", json!({"path": path("high")})),
        ),
        (
            with_call.clone(),
            script(
                "move_file",
                json!({"source": path("two.txt"), "destination": path("moved.txt")}),
            ),
        ),
        (
            with_call.clone(),
            script(
                "edit_file",
                json!({"path": path("three.txt"),
                "edits": [{"oldText": "three", "newText": "edited"}]}),
            ),
        ),
    ];
    let sessions = clients.len();
    let running: Vec<_> = clients
        .into_iter()
        .map(|(url, script)| {
            let key = gw.key.clone();
            tokio::spawn(async move { mcp::run_client(&url, &key, &script, None).await.unwrap() })
        })
        .collect();
    let mut listed = 0;
    for _ in 0..400 {
        listed = gw.audit("mcp.list_tools").await.len();
        if listed >= sessions {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(listed, sessions, "not every session opened");
    gw.server.fail_audit_appends(None).await.unwrap();
    std::fs::write(&go, "").unwrap();
    let mut answers = Vec::new();
    for r in running {
        let out = r.await.unwrap();
        assert!(out.get("connect_error").is_none(), "{out}");
        answers.push(out["steps"][2].clone());
    }
    let message = |step: &Value| {
        step["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    // The default: refused before the call, nothing written.
    assert!(
        message(&answers[0]).contains("could not decide"),
        "{}",
        answers[0]
    );
    assert!(!root.join("before.txt").exists());
    // With the call: the file was written, and the answer is withheld.
    assert!(message(&answers[1]).contains("withheld"), "{}", answers[1]);
    assert!(root.join("with.txt").exists());
    // A high-risk tool waits for its record even there, registered or
    // stored as such, and so does a counted one.
    for answer in &answers[2..] {
        assert!(message(answer).contains("could not decide"), "{answer}");
    }
    assert!(!root.join("high").exists());
    assert!(root.join("two.txt").exists() && !root.join("moved.txt").exists());
    assert_eq!(
        std::fs::read_to_string(root.join("three.txt")).unwrap(),
        "three"
    );
    gw.stop().await;
}

/// `decision_record = "with_call"` on a Streamable HTTP upstream: the
/// upstream's answer comes back once its decision is in the log; when the
/// store refuses decision records, a call that went upstream has its answer
/// withheld (its outcome says so), and a high-risk tool is refused without
/// running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_recorded_with_the_call_over_http() {
    if !node_ready("decisions_recorded_with_the_call_over_http") {
        return;
    }
    let upstream = HttpUpstream::start().await.unwrap();
    let transport = McpTransport::StreamableHttp {
        url: upstream.url.clone(),
    };
    let gw = Gateway::start("everything", transport.clone(), None).await;
    gw.allow_everything_tools().await;
    let meta = |risk: &str| McpToolMeta {
        classification: "public".into(),
        risk: risk.into(),
        cost_estimate: 0,
    };
    let registered = gw
        .admin()
        .put_mcp_server(&PutMcpServer {
            name: "everything".into(),
            description: "reference server, recorded with the call".into(),
            transport,
            tools: [
                ("echo".to_string(), meta("low")),
                ("trigger-long-running-operation".to_string(), meta("high")),
            ]
            .into(),
            timeout_secs: None,
            decision_record: McpDecisionRecord::WithCall,
        })
        .await
        .unwrap();
    assert_eq!(registered.decision_record, McpDecisionRecord::WithCall);
    let after = |e: &AuditEntry| e.after.clone().unwrap_or_default();

    // A working store: the upstream's answer, its decision and outcome logged.
    assert_eq!(gw.echo("with the call").await, "Echo: with the call");
    let allowed = gw.audit("decision.allow").await;
    let decision = allowed
        .iter()
        .find(|e| e.resource_id == "everything/echo")
        .unwrap_or_else(|| panic!("no decision on echo: {allowed:?}"));
    let outcome = after(&gw.tool_calls(1).await[0]);
    assert_eq!(outcome["outcome"], "success", "{outcome}");
    assert_eq!(outcome["decision_id"], after(decision)["decision_id"]);

    // A session opens; then the store refuses decision records (and takes
    // the rest) before its calls.
    let dir = tempfile::tempdir().unwrap();
    let (go, next) = (dir.path().join("go"), dir.path().join("next"));
    let script = json!([
        {"op": "list_tools"},
        {"op": "wait_file", "path": go},
        {"op": "call", "name": "echo", "arguments": {"message": "not for you"}},
        {"op": "wait_file", "path": next},
        {"op": "call", "name": "trigger-long-running-operation",
         "arguments": {"duration": 1, "steps": 2}, "progress": true},
    ]);
    let (url, key) = (gw.url(), gw.key.clone());
    let running =
        tokio::spawn(async move { mcp::run_client(&url, &key, &script, None).await.unwrap() });
    for _ in 0..400 {
        if !gw.audit("mcp.list_tools").await.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!gw.audit("mcp.list_tools").await.is_empty(), "no session");
    gw.server
        .fail_audit_appends(Some("decision.allow"))
        .await
        .unwrap();
    std::fs::write(&go, "").unwrap();
    // The echo ran upstream, but its answer is withheld: the outcome says
    // so, naming a decision the log does not hold.
    let calls = gw.tool_calls(2).await;
    let withheld = calls
        .iter()
        .map(after)
        .find(|a| a["outcome"] != "success")
        .unwrap_or_else(|| panic!("{calls:?}"));
    assert_eq!(withheld["tool"], "echo", "{withheld}");
    assert_eq!(withheld["outcome"], "withheld", "{withheld}");
    assert!(
        withheld["response_bytes"].as_u64().unwrap() > 0,
        "{withheld}"
    );
    let decisions = gw.audit("decision.allow").await;
    assert!(
        decisions
            .iter()
            .all(|e| after(e)["decision_id"] != withheld["decision_id"]),
        "{withheld}"
    );
    // The high-risk tool waits for its record, which fails: it never runs
    // (no progress from the upstream) and has no outcome.
    std::fs::write(&next, "").unwrap();
    let out = running.await.unwrap();
    assert!(out.get("connect_error").is_none(), "{out}");
    let (echo, high) = (&out["steps"][2], &out["steps"][4]);
    let message = |step: &Value| {
        step["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(message(echo).contains("answer is withheld"), "{echo}");
    assert!(echo.get("ok").is_none(), "{echo}");
    assert!(message(high).contains("could not decide"), "{high}");
    assert!(high.get("ok").is_none(), "{high}");
    assert_eq!(high["error"].get("progress"), Some(&json!([])), "{high}");

    // Appends work again: so do calls, and the log holds no outcome of the
    // high-risk tool.
    gw.server
        .server
        .store()
        .execute_raw("DROP TRIGGER test_fail_appends")
        .await
        .unwrap();
    assert_eq!(gw.echo("again").await, "Echo: again");
    let outcomes: Vec<Value> = gw.tool_calls(3).await.iter().map(after).collect();
    let of = |tool: &str, outcome: &str| {
        outcomes
            .iter()
            .filter(|a| a["tool"] == tool && a["outcome"] == outcome)
            .count()
    };
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    assert_eq!(of("echo", "success"), 2, "{outcomes:?}");
    gw.stop().await;
}

/// An upstream started through a wrapper (`sh -c`, as `npx` or `uvx` do)
/// ends with its session: the whole process group, not the wrapper alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrapped_stdio_upstream_ends_with_its_sessions() {
    if !node_ready("a_wrapped_stdio_upstream_ends_with_its_sessions") {
        return;
    }
    let McpTransport::Stdio { command, args, env } = mcp::everything_stdio() else {
        unreachable!()
    };
    let server = format!("{command} {}", args.join(" "));
    let lingering =
        |marker: &str| format!("{command} -e 'setTimeout(() => {{}}, 300000)' {marker}");
    // After the server, something that ignores the closed stdin; and a
    // background job beside a server the wrapper became, which exits.
    for script in [
        |server: &str, other: &str| format!("{server}; {other}"),
        |server: &str, other: &str| format!("{other} & exec {server}"),
    ] {
        let marker = format!("steward-wrapped-{}", uuid::Uuid::now_v7().simple());
        let transport = McpTransport::Stdio {
            command: "sh".into(),
            args: vec!["-c".into(), script(&server, &lingering(&marker))],
            env: env.clone(),
        };
        let gw = Gateway::start("everything", transport, None).await;
        gw.allow_everything_tools().await;
        assert_eq!(gw.echo("hi").await, "Echo: hi");
        gw.stop().await;
        process_ends(&marker, "what the wrapper started outlived its sessions").await;
    }
}

/// A session whose client went quiet is closed after the idle limit and its
/// upstream process ends, though the upstream keeps sending log messages
/// (which must not keep a session open); the session id is then unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_sessions_close_though_the_upstream_talks() {
    if !node_ready("quiet_sessions_close_though_the_upstream_talks") {
        return;
    }
    let marker = format!("steward-quiet-{}", uuid::Uuid::now_v7().simple());
    let McpTransport::Stdio {
        command,
        mut args,
        env,
    } = mcp::everything_stdio()
    else {
        unreachable!()
    };
    // An argument the server ignores, to find its process by.
    args.push(marker.clone());
    let transport = McpTransport::Stdio { command, args, env };
    let gw = Gateway::start_with("everything", transport, None, |c| {
        c.mcp_session_idle_secs = 2;
    })
    .await;
    gw.policy(
        "simulated-logging",
        "Agents may start the reference server's log messages",
        r#"permit(principal is Agent, action == Action::"call_tool", resource is Tool)
when { resource.name == "toggle-simulated-logging" };"#,
    )
    .await;
    let res = gw.initialize(&gw.key).await;
    assert!(res.status().is_success(), "{}", res.status());
    let session = res.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    res.bytes().await.unwrap();
    let http = reqwest::Client::new();
    let send = |message: Value| {
        http.post(gw.url())
            .bearer_auth(&gw.key)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &session)
            .json(&message)
            .send()
    };
    let res = send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let res = send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "toggle-simulated-logging", "arguments": {}}}))
    .await
    .unwrap();
    let answer = res.text().await.unwrap();
    assert!(answer.contains("Started simulated"), "{answer}");
    let running = || {
        std::process::Command::new("pgrep")
            .args(["-f", &marker])
            .output()
            .map(|o| !o.stdout.is_empty())
            .unwrap_or(false)
    };
    assert!(running(), "the upstream is not running");
    // The client says nothing more; the upstream logs every 5 s.
    let mut ended = false;
    for _ in 0..600 {
        if !running() {
            ended = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        ended,
        "a quiet session stayed open while its upstream talked"
    );
    let res = send(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}))
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    gw.stop().await;
}

/// An upstream's URL cannot make the gateway reach an address the operator
/// refused, or a cloud's metadata service: written as an address, it is
/// refused when registered; as a name, when it resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_addresses_are_not_upstreams() {
    if !node_ready("refused_addresses_are_not_upstreams") {
        return;
    }
    let by_name = McpTransport::StreamableHttp {
        url: "http://localhost:9/mcp".into(),
    };
    let gw = Gateway::start_with("local", by_name, Some(5), |c| {
        c.outbound.deny = vec!["127.0.0.0/8".into(), "::1".into()];
    })
    .await;
    let message = gw.connect_error(&gw.url()).await;
    assert!(
        message.contains("upstream MCP server 'local' is unavailable")
            && message.contains("resolves only to refused addresses"),
        "{message}"
    );
    for url in ["http://169.254.169.254/mcp", "http://127.0.0.1:9/mcp"] {
        let refused = gw
            .admin()
            .put_mcp_server(&registration(
                "meta",
                McpTransport::StreamableHttp { url: url.into() },
                "",
            ))
            .await;
        assert_eq!(code(refused), ErrorCode::InvalidRequest, "{url}");
    }
    assert_eq!(
        code(gw.admin().get_mcp_server("meta").await),
        ErrorCode::NotFound
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_or_hanging_gives_clean_errors() {
    if !node_ready("upstream_down_or_hanging_gives_clean_errors") {
        return;
    }
    // Nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = McpTransport::StreamableHttp {
        url: format!("http://127.0.0.1:{port}/mcp"),
    };
    let gw = Gateway::start("down", down, Some(5)).await;
    let message = gw.connect_error(&gw.url()).await;
    assert!(
        message.contains("upstream MCP server 'down' is unavailable")
            && message.contains("Connection refused"),
        "{message}"
    );
    // A program that does not exist.
    gw.admin()
        .put_mcp_server(&PutMcpServer {
            name: "missing".into(),
            description: String::new(),
            transport: McpTransport::Stdio {
                command: "/nonexistent/mcp-server".into(),
                args: vec![],
                env: Default::default(),
            },
            tools: Default::default(),
            timeout_secs: Some(5),
            decision_record: McpDecisionRecord::BeforeCall,
        })
        .await
        .unwrap();
    let url = format!("{}/mcp/missing", gw.server.server.url());
    let message = gw.connect_error(&url).await;
    assert!(
        message.contains("cannot start '/nonexistent/mcp-server'"),
        "{message}"
    );

    // An upstream that does not answer in time: an MCP error, the call
    // audited. The timeout lowered while the session is open applies to
    // it (the session opened under 30 s).
    let put_everything = |timeout_secs: u32| PutMcpServer {
        name: "everything".into(),
        description: String::new(),
        transport: mcp::everything_stdio(),
        tools: Default::default(),
        timeout_secs: Some(timeout_secs),
        decision_record: McpDecisionRecord::BeforeCall,
    };
    gw.admin()
        .put_mcp_server(&put_everything(30))
        .await
        .unwrap();
    gw.allow_everything_tools().await;
    let url = format!("{}/mcp/everything", gw.server.server.url());
    let dir = tempfile::tempdir().unwrap();
    let lowered = dir.path().join("lowered");
    let (key, lowered_path, client_url) = (
        gw.key.clone(),
        lowered.to_string_lossy().into_owned(),
        url.clone(),
    );
    let client = tokio::spawn(async move {
        mcp::run_client(
            &client_url,
            &key,
            &json!([
                {"op": "call", "name": "echo", "arguments": {"message": "opened"}},
                {"op": "wait_file", "path": lowered_path},
                {"op": "call", "name": "trigger-long-running-operation", "arguments": {"duration": 5, "steps": 5}},
                {"op": "call", "name": "echo", "arguments": {"message": "still here"}},
            ]),
            None,
        )
        .await
        .unwrap()
    });
    gw.tool_calls(1).await;
    gw.admin().put_mcp_server(&put_everything(1)).await.unwrap();
    std::fs::write(&lowered, "").unwrap();
    let out = client.await.unwrap();
    let steps = out["steps"].as_array().unwrap();
    assert_eq!(text(&steps[0]), "Echo: opened", "{out}");
    let message = steps[2]["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("did not answer within 1 s"), "{out}");
    assert_eq!(text(&steps[3]), "Echo: still here", "{out}");
    let calls = gw.tool_calls(3).await;
    assert!(calls.iter().any(|e| {
        let a = e.after.as_ref().unwrap();
        a["tool"] == "trigger-long-running-operation" && a["outcome"] == "error"
    }));

    // An upstream that ends mid-session: pings go to it, so a client's
    // health check fails rather than passing on a session that cannot work.
    let McpTransport::Stdio { args, .. } = mcp::everything_stdio() else {
        panic!("server-everything runs over stdio");
    };
    let dir = tempfile::tempdir().unwrap();
    let (kill, dead) = (dir.path().join("kill"), dir.path().join("dead"));
    // Ends the server once `kill` exists, then says so in `dead` (a
    // background job's stdin is /dev/null unless given explicitly).
    let mortal = format!(
        "exec 3<&0; node '{}' stdio <&3 & p=$!; while [ ! -e '{}' ]; do sleep 0.05; done; kill $p; wait $p; touch '{}'",
        args[0],
        kill.display(),
        dead.display()
    );
    gw.admin()
        .put_mcp_server(&PutMcpServer {
            name: "everything".into(),
            description: String::new(),
            transport: McpTransport::Stdio {
                command: "sh".into(),
                args: vec!["-c".into(), mortal],
                env: Default::default(),
            },
            tools: Default::default(),
            timeout_secs: Some(2),
            decision_record: McpDecisionRecord::BeforeCall,
        })
        .await
        .unwrap();
    let (key, dead_path) = (gw.key.clone(), dead.to_string_lossy().into_owned());
    let client = tokio::spawn(async move {
        mcp::run_client(
            &url,
            &key,
            &json!([
                {"op": "ping"},
                {"op": "call", "name": "echo", "arguments": {"message": "alive"}},
                {"op": "wait_file", "path": dead_path},
                {"op": "ping"},
                {"op": "ping_until_gone"},
            ]),
            None,
        )
        .await
        .unwrap()
    });
    // Once the echo is recorded, the upstream goes.
    gw.tool_calls(4).await;
    std::fs::write(&kill, "").unwrap();
    let out = client.await.unwrap();
    let steps = out["steps"].as_array().unwrap();
    assert_eq!(steps[0]["ok"], json!("pong"), "{out}");
    assert_eq!(text(&steps[1]), "Echo: alive");
    assert!(steps[3].get("error").is_some(), "{out}");
    // Then the session is closed (its slot free): the client's next
    // request gets 404, on which MCP clients start a new session.
    let before = steps[4]["ok"].as_array().expect("the session was closed");
    assert!(
        before
            .iter()
            .all(|m| m.as_str().unwrap().contains("has ended")),
        "{out}"
    );
    gw.stop().await;
}

/// A session opened with a bare `initialize` and its `initialized`
/// notification: its id.
async fn open_session(url: &str, key: &str) -> String {
    let res = initialize(url.to_string(), key).await;
    assert!(res.status().is_success(), "{}", res.status());
    let session = res.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    res.bytes().await.unwrap();
    initialized(url, key, &session).await;
    session
}

/// The `initialized` notification that follows `initialize`.
async fn initialized(url: &str, key: &str, session: &str) {
    let res = reqwest::Client::new()
        .post(url)
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", session)
        .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
}

/// A `ping` in `session`: the HTTP status.
async fn ping(url: &str, key: &str, session: &str) -> u16 {
    let res = reqwest::Client::new()
        .post(url)
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", session)
        .json(&json!({"jsonrpc": "2.0", "id": 99, "method": "ping"}))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    res.bytes().await.unwrap();
    status
}

/// The session's event stream (GET), held open: the task ends when the
/// gateway ends the stream.
async fn event_stream(url: &str, key: &str, session: &str) -> tokio::task::JoinHandle<()> {
    let mut res = reqwest::Client::new()
        .get(url)
        .bearer_auth(key)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", session)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    tokio::spawn(async move { while let Ok(Some(_)) = res.chunk().await {} })
}

/// Wait (boundedly) for an event stream to be ended by the gateway.
async fn stream_ends(stream: tokio::task::JoinHandle<()>, why: &str) {
    tokio::time::timeout(std::time::Duration::from_secs(60), stream)
        .await
        .unwrap_or_else(|_| panic!("the event stream stayed open: {why}"))
        .unwrap();
}

/// Whether a process whose command line holds `marker` runs.
fn running(marker: &str) -> bool {
    std::process::Command::new("pgrep")
        .args(["-f", marker])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false)
}

/// Wait (boundedly) for the process marked `marker` to end.
async fn process_ends(marker: &str, why: &str) {
    for _ in 0..300 {
        if !running(marker) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the upstream process outlived its session: {why}");
}

/// `server-everything` over stdio, its process marked by `marker` (an
/// argument it ignores).
fn marked_stdio(marker: &str) -> McpTransport {
    let McpTransport::Stdio {
        command,
        mut args,
        env,
    } = mcp::everything_stdio()
    else {
        unreachable!()
    };
    args.push(marker.to_string());
    McpTransport::Stdio { command, args, env }
}

fn registration(name: &str, transport: McpTransport, description: &str) -> PutMcpServer {
    PutMcpServer {
        name: name.into(),
        description: description.into(),
        transport,
        tools: Default::default(),
        timeout_secs: None,
        decision_record: McpDecisionRecord::BeforeCall,
    }
}

/// Removing a registration closes its open sessions at once: the event
/// stream ends, the stdio upstream ends, and the slots are free for other
/// upstreams. Replacing it with another transport closes them too (an
/// applied governance directory within a tick of the background loop);
/// other changes leave them open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_or_moving_a_server_closes_its_sessions() {
    if !node_ready("removing_or_moving_a_server_closes_its_sessions") {
        return;
    }
    let marker = format!("steward-removed-{}", uuid::Uuid::now_v7().simple());
    let gw = Gateway::start("everything", marked_stdio(&marker), None).await;
    let upstream = HttpUpstream::start().await.unwrap();
    let over_http = McpTransport::StreamableHttp {
        url: upstream.url.clone(),
    };
    gw.admin()
        .put_mcp_server(&registration("http", over_http.clone(), "over http"))
        .await
        .unwrap();
    let http_url = format!("{}/mcp/http", gw.server.server.url());

    let session = open_session(&gw.url(), &gw.key).await;
    let stream = event_stream(&gw.url(), &gw.key, &session).await;
    assert!(running(&marker), "the upstream is not running");
    // The agent's other 15 slots, on the other upstream.
    let mut others = Vec::new();
    for _ in 0..15 {
        others.push(open_session(&http_url, &gw.key).await);
    }
    assert_eq!(initialize(http_url.clone(), &gw.key).await.status(), 429);

    // A change that keeps the transport leaves the session open.
    gw.admin()
        .put_mcp_server(&registration(
            "everything",
            marked_stdio(&marker),
            "described anew",
        ))
        .await
        .unwrap();
    assert_eq!(ping(&gw.url(), &gw.key, &session).await, 200);
    assert!(running(&marker));

    // Removed: its session ends now, with its upstream, and its slot is free.
    gw.admin().delete_mcp_server("everything").await.unwrap();
    let opened = initialize(http_url.clone(), &gw.key).await;
    assert!(opened.status().is_success(), "{}", opened.status());
    opened.bytes().await.unwrap();
    stream_ends(stream, "its server was removed").await;
    process_ends(&marker, "its server was removed").await;
    assert_eq!(gw.initialize(&gw.key).await.status(), 404);

    // Another transport: the sessions on the old one end, slots freed.
    assert_eq!(initialize(http_url.clone(), &gw.key).await.status(), 429);
    let stdio_marker = format!("steward-moved-{}", uuid::Uuid::now_v7().simple());
    gw.admin()
        .put_mcp_server(&registration(
            "http",
            marked_stdio(&stdio_marker),
            "over stdio now",
        ))
        .await
        .unwrap();
    for session in &others {
        assert_eq!(ping(&http_url, &gw.key, session).await, 404);
    }
    let moved = open_session(&http_url, &gw.key).await;
    assert!(running(&stdio_marker), "the new transport is not used");

    // Moved back by an applied governance directory: the session on the
    // stdio transport is closed by the background loop.
    let applied = gw
        .admin()
        .apply(&ApplyRequest {
            mcp_servers: vec![registration("http", over_http, "over http")],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(applied.applied, "{applied:?}");
    process_ends(&stdio_marker, "its transport was replaced").await;
    assert_eq!(ping(&http_url, &gw.key, &moved).await, 404);
    gw.stop().await;
}

/// Suspending an agent closes its sessions at once, event streams included,
/// and their upstreams end; an agent that stops being active otherwise
/// (here, it expires) has them closed by the background loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_an_agent_closes_its_sessions() {
    if !node_ready("stopping_an_agent_closes_its_sessions") {
        return;
    }
    let marker = format!("steward-suspended-{}", uuid::Uuid::now_v7().simple());
    let gw = Gateway::start_with("everything", marked_stdio(&marker), None, |c| {
        c.expiry_sweep_secs = 1;
    })
    .await;
    let session = open_session(&gw.url(), &gw.key).await;
    let stream = event_stream(&gw.url(), &gw.key, &session).await;
    assert!(running(&marker), "the upstream is not running");
    gw.admin()
        .suspend_agent("helper", Some("investigating"))
        .await
        .unwrap();
    // Resumed at once: the session is gone all the same.
    gw.admin().resume_agent("helper", None).await.unwrap();
    assert_eq!(ping(&gw.url(), &gw.key, &session).await, 404);
    stream_ends(stream, "its agent was suspended").await;
    process_ends(&marker, "its agent was suspended").await;

    // It opens sessions again; then it expires.
    let session = open_session(&gw.url(), &gw.key).await;
    let stream = event_stream(&gw.url(), &gw.key, &session).await;
    assert!(running(&marker), "the upstream is not running");
    gw.admin()
        .update_agent(
            "helper",
            &UpdateAgent {
                expires_at: Some(chrono::Utc::now() + chrono::Duration::seconds(1)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    stream_ends(stream, "its agent expired").await;
    process_ends(&marker, "its agent expired").await;
    let agent = gw.admin().get_agent("helper").await.unwrap();
    assert_eq!(agent.state, AgentState::Expired);
    gw.stop().await;
}

/// On a cluster: what another node does (removing a registration,
/// suspending an agent) closes this node's sessions within a few seconds,
/// freeing their slots; the agent may end a session of a removed upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_on_another_node_close_sessions() {
    if !node_ready("changes_on_another_node_close_sessions") {
        return;
    }
    let upstream = HttpUpstream::start().await.unwrap();
    let over_http = McpTransport::StreamableHttp {
        url: upstream.url.clone(),
    };
    let gw = Gateway::start_on(
        Backend::Postgres,
        "everything",
        over_http.clone(),
        None,
        |_| {},
    )
    .await;
    gw.admin()
        .put_mcp_server(&registration("spare", over_http, "the same, elsewhere"))
        .await
        .unwrap();
    let spare_url = format!("{}/mcp/spare", gw.server.server.url());
    let (node, admin) = gw.server.second_node().await;

    let mut sessions = Vec::new();
    for _ in 0..16 {
        sessions.push(open_session(&gw.url(), &gw.key).await);
    }
    let stream = event_stream(&gw.url(), &gw.key, &sessions[0]).await;
    assert_eq!(initialize(spare_url.clone(), &gw.key).await.status(), 429);
    admin.delete_mcp_server("everything").await.unwrap();
    // The agent ends one itself: done (or done for it already).
    let res = reqwest::Client::new()
        .delete(gw.url())
        .bearer_auth(&gw.key)
        .header("mcp-session-id", &sessions[1])
        .send()
        .await
        .unwrap();
    assert!(
        [202, 404].contains(&res.status().as_u16()),
        "{}",
        res.status()
    );
    stream_ends(stream, "its server was removed on another node").await;
    let mut spare = None;
    for _ in 0..300 {
        let res = initialize(spare_url.clone(), &gw.key).await;
        if res.status().is_success() {
            spare = Some(
                res.headers()["mcp-session-id"]
                    .to_str()
                    .unwrap()
                    .to_string(),
            );
            res.bytes().await.unwrap();
            break;
        }
        assert_eq!(res.status(), 429);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let spare = spare.expect("the removed server's sessions kept their slots");
    initialized(&spare_url, &gw.key, &spare).await;

    let stream = event_stream(&spare_url, &gw.key, &spare).await;
    admin
        .suspend_agent("helper", Some("investigating"))
        .await
        .unwrap();
    stream_ends(stream, "its agent was suspended on another node").await;
    node.shutdown().await.unwrap();
    gw.stop().await;
}

/// `tests/mcp/shelf.mjs` over stdio: answers that carry
/// `demo://shelf/public` and `demo://shelf/secret` in every place MCP lets
/// a resource go, and completions that say what the server was sent.
fn shelf_stdio() -> McpTransport {
    McpTransport::Stdio {
        command: "node".into(),
        args: vec![
            mcp::material_dir()
                .join("shelf.mjs")
                .to_string_lossy()
                .into_owned(),
        ],
        env: Default::default(),
    }
}

/// What a withheld resource's text becomes.
fn withheld(uri: &str) -> String {
    format!("[Steward withheld the resource '{uri}' here: this agent may not read it]")
}

/// A tool's `structuredContent` is checked as its content is: resource
/// contents in it (an object with a `uri` and a `text` or `blob`, at any
/// depth, in an embedded resource too) are decided as reads, and one the
/// agent may not read is withheld, so that what a denial withholds from
/// the content cannot come through in the structured copy; a text block
/// that is the structured content serialized is passed on as the
/// structured content is. Links stay. Its bytes count in the outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_content_is_checked_as_content_is() {
    if !node_ready("structured_content_is_checked_as_content_is") {
        return;
    }
    let gw = Gateway::start("shelf", shelf_stdio(), None).await;
    gw.policy(
        "the-shelf-tool",
        "The tool that shows the shelf",
        r#"permit(principal is Agent, action == Action::"call_tool", resource is Tool)
when { resource.name == "shelf" };"#,
    )
    .await;
    gw.policy(
        "public-items",
        "Only what is public on the shelf",
        r#"permit(principal is Agent, action == Action::"read_resource", resource is McpResource)
when { resource.uri == "demo://shelf/public" };"#,
    )
    .await;
    let steps = gw.run(json!([{"op": "call", "name": "shelf"}]), None).await;
    let said = steps[0].to_string();
    assert!(steps[0]["ok"].is_object(), "{said}");
    assert!(!said.contains("secret item"), "{said}");
    let secret_blob = "c2VjcmV0IGJsb2I="; // "secret blob"
    assert!(!said.contains(secret_blob), "{said}");
    assert!(said.contains("public item"), "{said}");
    let structured = &steps[0]["ok"]["structuredContent"];
    assert_eq!(
        structured["items"],
        json!([
            {"uri": "demo://shelf/secret", "text": withheld("demo://shelf/secret")},
            {"uri": "DEMO://shelf/./public", "text": "public item"},
        ]),
        "{said}"
    );
    assert_eq!(
        structured["deeper"]["embedded"],
        json!({"type": "resource", "resource": {
            "uri": "demo://shelf/%73ecret", "text": withheld("demo://shelf/secret")}}),
        "{said}"
    );
    // Links are not contents: following one is a read of its own.
    assert_eq!(
        structured["link"],
        json!({"type": "resource_link", "uri": "demo://shelf/secret", "name": "secret"})
    );
    assert_eq!(structured["shelf"], "demo://shelf");
    let content = steps[0]["ok"]["content"].as_array().unwrap();
    assert_eq!(
        content[0]["text"],
        withheld("demo://shelf/secret"),
        "{said}"
    );
    assert_eq!(content[1]["resource"]["text"], "public item", "{said}");
    // The structured content's serialized copy says what it says.
    let copy: Value = serde_json::from_str(content[2]["text"].as_str().unwrap()).unwrap();
    assert_eq!(&copy, structured);
    assert_eq!(content[3]["type"], "resource_link");
    // One audit entry for the answer, wherever the resources were.
    let entries = gw.audit("mcp.resource_contents").await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    let after = entries[0].after.as_ref().unwrap();
    assert_eq!(after["method"], "tools/call");
    assert_eq!(after["requested"], "shelf");
    assert_eq!(after["shown"], json!(["demo://shelf/public"]));
    assert_eq!(after["withheld"], json!(["demo://shelf/secret"]));
    // The structured content's bytes are the answer's too.
    let calls = gw.tool_calls(1).await;
    let bytes = calls[0].after.as_ref().unwrap()["response_bytes"]
        .as_u64()
        .unwrap();
    assert!(
        bytes as usize > structured.to_string().len() + content[2].to_string().len(),
        "{bytes}"
    );
    gw.stop().await;
}

/// A read reserves what quotas count, and its answer settles the
/// reservation as a tool call's outcome does: its size counts against a
/// `bytes` quota, and the settlement is recorded (`decision.outcome`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_settle_their_reservations() {
    if !node_ready("reads_settle_their_reservations") {
        return;
    }
    let gw = Gateway::start("shelf", shelf_stdio(), None).await;
    gw.policy(
        "public-items",
        "Only what is public on the shelf",
        r#"permit(principal is Agent, action == Action::"read_resource", resource is McpResource)
when { resource.uri == "demo://shelf/public" };"#,
    )
    .await;
    gw.admin()
        .put_quota(&PutQuota {
            name: "read-bytes".into(),
            scope: Some(QuotaScope::Agent),
            subject: Some("helper".into()),
            metric: "bytes".into(),
            window: "day".into(),
            limit: 1e9,
            ..Default::default()
        })
        .await
        .unwrap();
    let steps = gw
        .run(
            json!([{"op": "read_resource", "uri": "demo://shelf/public"}]),
            None,
        )
        .await;
    assert_eq!(
        steps[0]["ok"]["contents"][0]["text"], "public item",
        "{}",
        steps[0]
    );
    let read = gw.audit("decision.allow").await;
    assert_eq!(read.len(), 1, "{read:?}");
    let mut settled = Vec::new();
    for _ in 0..100 {
        settled = gw.audit("decision.outcome").await;
        if !settled.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(settled.len(), 1, "the read's reservation was never settled");
    assert_eq!(
        json!(settled[0].resource_id),
        read[0].after.as_ref().unwrap()["decision_id"]
    );
    let outcome = &settled[0].after.as_ref().unwrap()["outcome"];
    assert_eq!(outcome["status"], "success", "{outcome}");
    assert!(outcome["bytes"].as_u64().unwrap() > 0, "{outcome}");
    let usage = gw
        .admin()
        .usage(&UsageQuery {
            agent: Some("helper".into()),
            quota: Some("read-bytes".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(usage[0].status.used > 0.0, "{usage:?}");
    gw.stop().await;
}

/// A completion of a resource template is decided as a read of the
/// template in the spelling a read would be decided in (its `{...}`
/// expressions kept as they are), and that spelling is the one sent up; a
/// listing of templates is decided the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_are_decided_and_sent_in_one_spelling() {
    if !node_ready("completions_are_decided_and_sent_in_one_spelling") {
        return;
    }
    let gw = Gateway::start("shelf", shelf_stdio(), None).await;
    gw.policy(
        "shelf-templates",
        "The shelf's templates",
        r#"permit(principal is Agent, action == Action::"read_resource", resource is McpResource)
when { resource.uri == "demo://shelf/{item}" || resource.uri == "file:///srv/shelf/{item}" };"#,
    )
    .await;
    let complete = |uri: &str| {
        json!({"op": "complete", "ref": {"type": "ref/resource", "uri": uri},
               "argument": {"name": "item", "value": "p"}})
    };
    let steps = gw
        .run(
            json!([
                {"op": "list_resource_templates"},
                complete("DEMO://shelf/./{item}"),
                complete("file:///srv/./shelf/{item}"),
                complete("demo://shelf/x/../../other/{item}"),
            ]),
            None,
        )
        .await;
    // The shelf answers with the template it was sent.
    assert_eq!(
        steps[1]["ok"],
        json!(["demo://shelf/{item}"]),
        "{}",
        steps[1]
    );
    assert_eq!(
        names(&steps[0]),
        ["demo://shelf/{item}", "file:///srv/shelf/{item}"]
    );
    assert_eq!(
        steps[2]["ok"],
        json!(["file:///srv/shelf/{item}"]),
        "{}",
        steps[2]
    );
    let message = steps[3]["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("denied") && message.contains("demo://shelf/other/{item}"),
        "{}",
        steps[3]
    );
    gw.stop().await;
}

/// The upstream's ids of its open sessions and of those it was told to end.
async fn upstream_sessions(upstream: &HttpUpstream) -> Option<Value> {
    let url = format!("http://127.0.0.1:{}/sessions", upstream.port);
    let res = reqwest::get(url).await.ok()?;
    res.json().await.ok()
}

/// A client that ends its session while the HTTP upstream is out of reach
/// is answered at once, and the upstream's session is ended (`DELETE` with
/// its `Mcp-Session-Id`) once the upstream can be reached again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_out_of_reach_is_told_the_session_ended_once_back() {
    if !node_ready("an_upstream_out_of_reach_is_told_the_session_ended_once_back") {
        return;
    }
    let upstream = HttpUpstream::refusing().await.unwrap();
    let transport = McpTransport::StreamableHttp {
        url: upstream.url.clone(),
    };
    let gw = Gateway::start("everything", transport, Some(10)).await;
    let session = open_session(&gw.url(), &gw.key).await;
    let open = upstream_sessions(&upstream).await.unwrap();
    let upstream_session = open["open"][0].as_str().unwrap().to_string();
    assert_eq!(open["deleted"], json!([]));
    let outage = format!("http://127.0.0.1:{}/outage?ms=5000", upstream.port);
    let res = reqwest::Client::new().post(outage).send().await.unwrap();
    assert!(res.status().is_success());
    res.bytes().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        upstream_sessions(&upstream).await.is_none(),
        "still in reach"
    );
    let started = std::time::Instant::now();
    let res = reqwest::Client::new()
        .delete(gw.url())
        .bearer_auth(&gw.key)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "the client waited for the upstream: {:?}",
        started.elapsed()
    );
    let mut seen = None;
    for _ in 0..300 {
        seen = upstream_sessions(&upstream).await;
        if seen
            .as_ref()
            .is_some_and(|s| s["deleted"] == json!([upstream_session]))
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        seen.as_ref().map(|s| &s["deleted"]),
        Some(&json!([upstream_session])),
        "{seen:?}"
    );
    gw.stop().await;
}

async fn servers_are_registered_listed_replaced_and_removed(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = &server.admin;
    let before = snapshot(admin).await;
    let mut req = PutMcpServer {
        name: "github".into(),
        description: "GitHub tools".into(),
        transport: McpTransport::Stdio {
            command: "npx".into(),
            args: vec!["github-mcp".into()],
            env: [("GITHUB_TOKEN".to_string(), "ghp_secret".to_string())].into(),
        },
        tools: [("create_issue".to_string(), McpToolMeta::default())].into(),
        timeout_secs: None,
        decision_record: McpDecisionRecord::BeforeCall,
    };
    let created = admin.put_mcp_server(&req).await.unwrap();
    assert_eq!(created.timeout_secs, MCP_DEFAULT_TIMEOUT_SECS);
    // Secrets in the environment never come back.
    let McpTransport::Stdio { env, .. } = &created.transport else {
        panic!("stdio expected");
    };
    assert_eq!(env["GITHUB_TOKEN"], "***");
    assert!(
        !serde_json::to_string(&all_audit(admin).await)
            .unwrap()
            .contains("ghp_secret")
    );
    // The declarations MCP policies use came with it.
    let types = admin.list_resource_types().await.unwrap();
    assert!(types.iter().any(|t| t.name == MCP_TOOL_TYPE));
    let actions = admin.list_actions().await.unwrap();
    assert!(actions.iter().any(|a| a.name == MCP_CALL_TOOL));
    // Replacing with the same content changes nothing; a change is audited.
    let audit_len = all_audit(admin).await.len();
    admin.put_mcp_server(&req).await.unwrap();
    assert_eq!(all_audit(admin).await.len(), audit_len);
    req.timeout_secs = Some(10);
    assert_eq!(admin.put_mcp_server(&req).await.unwrap().timeout_secs, 10);
    assert_eq!(all_audit(admin).await.len(), audit_len + 1);
    // When the decision is recorded is part of the registration.
    assert_eq!(created.decision_record, McpDecisionRecord::BeforeCall);
    req.decision_record = McpDecisionRecord::WithCall;
    admin.put_mcp_server(&req).await.unwrap();
    let stored = admin.get_mcp_server("github").await.unwrap();
    assert_eq!(stored.decision_record, McpDecisionRecord::WithCall);
    assert_eq!(all_audit(admin).await.len(), audit_len + 2);
    admin.put_mcp_server(&req).await.unwrap();
    assert_eq!(all_audit(admin).await.len(), audit_len + 2);
    let mut raw = serde_json::to_value(&req).unwrap();
    raw["decision_record"] = json!("after_call");
    let r = reqwest::Client::new()
        .post(format!("{}/v1/mcp-servers", server.server.url()))
        .bearer_auth(steward_testkit::ADMIN_TOKEN)
        .json(&raw)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "{:?}", r.text().await);
    assert_eq!(all_audit(admin).await.len(), audit_len + 2);
    assert_eq!(admin.list_mcp_servers().await.unwrap().len(), 1);
    assert_eq!(admin.get_mcp_server("github").await.unwrap().id, created.id);
    // Bad input is a clear 4xx and changes nothing.
    let bad = [
        PutMcpServer {
            name: "no spaces".into(),
            ..req.clone()
        },
        PutMcpServer {
            transport: McpTransport::StreamableHttp {
                url: "ftp://x".into(),
            },
            ..req.clone()
        },
        PutMcpServer {
            tools: [(
                "t".to_string(),
                McpToolMeta {
                    risk: "extreme".into(),
                    ..McpToolMeta::default()
                },
            )]
            .into(),
            ..req.clone()
        },
        PutMcpServer {
            timeout_secs: Some(0),
            ..req.clone()
        },
    ];
    let len = all_audit(admin).await.len();
    for b in &bad {
        assert_eq!(
            code(admin.put_mcp_server(b).await),
            ErrorCode::InvalidRequest
        );
    }
    assert_eq!(all_audit(admin).await.len(), len);
    assert_eq!(
        code(admin.get_mcp_server("nope").await),
        ErrorCode::NotFound
    );
    admin.delete_mcp_server("github").await.unwrap();
    assert_eq!(
        code(admin.get_mcp_server("github").await),
        ErrorCode::NotFound
    );
    assert!(admin.list_mcp_servers().await.unwrap().is_empty());
    let after = snapshot(admin).await;
    assert_eq!((before.0, before.1, before.2), (after.0, after.1, after.2));
    server.stop().await;
}
