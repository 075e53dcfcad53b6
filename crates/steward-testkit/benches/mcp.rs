//! Tool-call latency through the MCP gateway against the same upstream
//! called directly, and through a bare relay (the floor: rmcp's server in
//! front and rmcp's client behind, as in the gateway, deciding and recording
//! nothing), in one run: `server-everything` over Streamable HTTP,
//! the official TypeScript SDK as the client (one session per path; `echo`
//! called sequentially for p50/p99, the paths taking turns 100 calls at a
//! time so that they are measured under the same conditions, then 8 calls
//! in flight on each path in turn for throughput). Through the gateway every call is
//! authenticated, decided by Cedar, audited durably before it is forwarded
//! (or, on the upstream registered with `decision_record = "with_call"`,
//! while it is forwarded, the answer waiting for the record), and its
//! outcome audited.
//!
//! cargo bench -p steward-testkit --bench mcp
//! (STEWARD_BENCH_CALLS sets the number of calls; needs `npm ci` in tests/mcp.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use steward_testkit::mcp::{self, HttpUpstream, NodeStatus};
use steward_testkit::{Backend, TestServer};
use steward_types::{
    CreateHuman, CreateKey, McpDecisionRecord, McpTransport, PutMcpServer, PutPolicy, RegisterAgent,
};

/// Each path's figures: `paths` are (URL, key) pairs.
async fn measure(paths: &[(&str, &str)], calls: u64) -> Vec<Value> {
    let paths: Vec<Value> = paths
        .iter()
        .map(|(url, key)| json!({"url": url, "key": key}))
        .collect();
    let script = json!([{"op": "bench_paths", "paths": paths, "name": "echo",
        "arguments": {"message": "benchmark"}, "warmup": 300, "calls": calls, "concurrency": 8}]);
    let (url, key) = (paths[0]["url"].as_str().unwrap(), "");
    let out = mcp::run_client(url, key, &script, None).await.unwrap();
    let results = out["steps"][0]["ok"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        results.len() == paths.len() && results.iter().all(Value::is_object),
        "benchmark failed: {out}"
    );
    results
}

/// A Steward server on SQLite (with `synchronous=normal` when `relaxed`)
/// with an agent allowed to call `echo` on the upstream, registered twice
/// (the default, and recording the decision with the call); its gateway URL
/// and the agent's key.
async fn gateway(upstream: &HttpUpstream, relaxed: bool) -> (TestServer, String, String) {
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        if let Some(url) = c.database_url.as_mut().filter(|_| relaxed) {
            url.push_str("?synchronous=normal");
        }
    })
    .await;
    let a = &server.admin;
    a.create_human(&CreateHuman {
        external_id: None,
        email: "owner@example.com".into(),
        display_name: "Owner".into(),
        teams: vec![],
        roles: vec![],
    })
    .await
    .unwrap();
    let agent = a
        .register_agent(&RegisterAgent {
            name: "bench".into(),
            owner: "owner@example.com".into(),
            classifications: Some(vec!["public".into()]),
            ..Default::default()
        })
        .await
        .unwrap();
    let key = a
        .create_key(
            &agent.id,
            &CreateKey {
                name: "bench".into(),
                expires_at: None,
            },
        )
        .await
        .unwrap()
        .secret;
    for (name, decision_record) in [
        ("everything", McpDecisionRecord::BeforeCall),
        ("everything-with-call", McpDecisionRecord::WithCall),
    ] {
        a.put_mcp_server(&PutMcpServer {
            name: name.into(),
            description: String::new(),
            transport: McpTransport::StreamableHttp {
                url: upstream.url.clone(),
            },
            tools: Default::default(),
            timeout_secs: None,
            decision_record,
        })
        .await
        .unwrap();
    }
    a.put_policy(&PutPolicy {
        id: "echo".into(),
        description: String::new(),
        owner: String::new(),
        text: r#"permit(principal is Agent, action == Action::"call_tool", resource is Tool) when { resource.name == "echo" };"#.into(),
    })
    .await
    .unwrap();

    let url = format!("{}/mcp/everything", server.server.url());
    (server, url, key)
}

/// The same gateway's upstream registered with `decision_record =
/// "with_call"`.
fn with_call(url: &str) -> String {
    format!("{url}-with-call")
}

/// The floor: a relay built from the same rmcp pieces as the gateway (its
/// Streamable HTTP server in front, the gateway's own upstream HTTP client
/// behind) that forwards each tool call and does nothing else: no
/// authentication, decision, quota or audit record.
mod bare {
    use rmcp::model::{
        CallToolRequest, CallToolRequestParams, CallToolResponse, ClientRequest, InitializeResult,
        ServerCapabilities, ServerResult,
    };
    use rmcp::service::{Peer, RequestContext, RoleClient, RoleServer, RunningService};
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    use rmcp::{ErrorData as McpError, ServerHandler, ServiceExt};

    #[derive(Clone)]
    struct Relay(Peer<RoleClient>);

    impl ServerHandler for Relay {
        fn get_info(&self) -> InitializeResult {
            InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
        }

        async fn call_tool(
            &self,
            request: CallToolRequestParams,
            _context: RequestContext<RoleServer>,
        ) -> Result<CallToolResponse, McpError> {
            match self
                .0
                .send_request(ClientRequest::CallToolRequest(CallToolRequest::new(
                    request,
                )))
                .await
            {
                Ok(ServerResult::CallToolResult(r)) => Ok(CallToolResponse::Complete(r)),
                Ok(_) => Err(McpError::internal_error("not a tool result", None)),
                Err(e) => Err(McpError::internal_error(e.to_string(), None)),
            }
        }
    }

    /// Start a relay to `upstream`; its URL, and the upstream session to
    /// keep alive.
    pub async fn start(upstream: &str) -> (String, RunningService<RoleClient, ()>) {
        let http = steward_server::mcp::upstream_http_client(None, &Default::default()).unwrap();
        let client = ()
            .serve(StreamableHttpClientTransport::with_client(
                http,
                StreamableHttpClientTransportConfig::with_uri(upstream),
            ))
            .await
            .unwrap();
        let relay = Relay(client.peer().clone());
        let mut config = StreamableHttpServerConfig::default().disable_allowed_hosts();
        config.sse_keep_alive = Some(std::time::Duration::from_secs(15));
        let service = StreamableHttpService::new(
            move || Ok(relay.clone()),
            std::sync::Arc::new(LocalSessionManager::default()),
            config,
        );
        let app = axum::Router::new().route_service("/mcp", service);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, client)
    }
}

#[tokio::main]
async fn main() {
    if mcp::node_status() != NodeStatus::Ready {
        eprintln!(
            "the MCP benchmark needs node and `npm ci` in {}",
            mcp::material_dir().display()
        );
        std::process::exit(1);
    }
    let calls: u64 = std::env::var("STEWARD_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let upstream = HttpUpstream::start().await.unwrap();
    let (durable, durable_url, durable_key) = gateway(&upstream, false).await;
    let (relaxed, relaxed_url, relaxed_key) = gateway(&upstream, true).await;
    let (bare_url, _bare_upstream) = bare::start(&upstream.url).await;
    let (durable_with, relaxed_with) = (with_call(&durable_url), with_call(&relaxed_url));
    let paths = [
        (upstream.url.as_str(), ""),
        (bare_url.as_str(), ""),
        (durable_url.as_str(), durable_key.as_str()),
        (relaxed_url.as_str(), relaxed_key.as_str()),
        (durable_with.as_str(), durable_key.as_str()),
        (relaxed_with.as_str(), relaxed_key.as_str()),
    ];
    let results = measure(&paths, calls).await;
    let direct = &results[0];
    let names = [
        "direct to upstream",
        "through a bare rmcp relay (the floor)",
        "through the gateway (SQLite, synchronous=full: the default)",
        "through the gateway (SQLite, synchronous=normal)",
        "through the gateway, recording with the call (synchronous=full)",
        "through the gateway, recording with the call (synchronous=normal)",
    ];
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or_default();
    println!(
        "MCP tool call (echo), {calls} sequential calls per path after 300 warm-up, \
         one session per path, the paths taking turns:"
    );
    println!("| path | p50 | p99 | sequential calls/s | 8 in flight calls/s |");
    println!("|---|---:|---:|---:|---:|");
    for (name, r) in names.iter().zip(&results) {
        println!(
            "| {name} | {:.0} µs | {:.0} µs | {:.0} | {:.0} |",
            f(r, "p50_us"),
            f(r, "p99_us"),
            f(r, "sequential_per_sec"),
            f(r, "concurrent_per_sec")
        );
    }
    for (name, r) in names.iter().zip(&results).skip(1) {
        println!(
            "added {name}: p50 {:.0} µs, p99 {:.0} µs",
            f(r, "p50_us") - f(direct, "p50_us"),
            f(r, "p99_us") - f(direct, "p99_us")
        );
    }
    durable.stop().await;
    relaxed.stop().await;
}
