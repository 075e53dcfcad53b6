//! One downstream MCP session relayed to one upstream session.
//!
//! The downstream `initialize` opens the upstream (a child process or a
//! Streamable HTTP client) with the downstream client's identity and
//! capabilities; the upstream's answer becomes ours. Afterwards requests go
//! up (tool calls decided first, listings filtered on the way back), and the
//! upstream's requests (sampling, roots, elicitation) and notifications
//! (progress, logging, list changes) come down. A cancelled downstream
//! request cancels the upstream one; an upstream that fails or does not
//! answer within the server's timeout gives an MCP error.

// Logging levels and resource subscriptions are deprecated in the newest
// protocol version, but the upstreams speak older ones; relay them as is.
#![allow(deprecated)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResponse, CallToolResult,
    CancelledNotification, CancelledNotificationParam, ClientNotification, ClientRequest,
    ClientResult, CompleteRequest, CompleteRequestParams, CompleteResult, ContentBlock,
    CustomRequest, CustomResult, ErrorCode as McpErrorCode, GetPromptRequest,
    GetPromptRequestParams, GetPromptResponse, InitializeRequest, InitializeRequestParams,
    InitializeResult, ListPromptsRequest, ListPromptsResult, ListResourceTemplatesRequest,
    ListResourceTemplatesResult, ListResourcesRequest, ListResourcesResult, ListToolsRequest,
    ListToolsResult, PaginatedRequestParams, PingRequest, ProgressNotification,
    ProgressNotificationParam, ProgressToken, ReadResourceRequest, ReadResourceRequestParams,
    ReadResourceResponse, Reference, ServerNotification, ServerRequest, ServerResult,
    SetLevelRequest, SetLevelRequestParams, SubscribeRequest, SubscribeRequestParams,
    UnsubscribeRequest, UnsubscribeRequestParams,
};
use rmcp::service::ClientInitializeError;
use rmcp::service::{
    NotificationContext, Peer, PeerRequestOptions, RequestContext, RoleClient, RoleServer,
    RunningService, ServiceError,
};
use rmcp::transport::streamable_http_client::{
    StreamableHttpClientTransportConfig, StreamableHttpError,
};
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ErrorData as McpError, ServerHandler, Service, ServiceExt};
use serde_json::Map;
use steward_types::{McpServer, McpTransport};

use super::GatewayCall;
use super::govern::{self, CallOutcome, Kind, Refusal};

/// Variables a stdio upstream inherits from the gateway's environment.
const INHERITED_ENV: &[&str] = &["PATH", "HOME", "LANG", "TMPDIR", "USER"];

/// Upstream progress tokens → the downstream's, for relaying progress. An
/// async lock: a request with a progress token holds it from before it is
/// sent until its token is mapped, so progress the upstream sends at once
/// waits for the mapping rather than being dropped as unknown.
type ProgressMap = Arc<tokio::sync::Mutex<HashMap<ProgressToken, ProgressToken>>>;

/// The upstream half of a session.
struct Session {
    server: Arc<McpServer>,
    agent_id: String,
    upstream: RunningService<RoleClient, Relay>,
    progress: ProgressMap,
    /// Says the upstream has gone when the session goes (the gateway
    /// stops watching it then).
    _ended: tokio_util::sync::DropGuard,
}

/// An upstream transport that says when it has ended: the upstream closed
/// it (a stdio server exited, an HTTP server dropped the session) or it
/// was dropped with its session. The gateway then closes the downstream
/// session, whose every request could only fail.
struct Watched<T> {
    inner: T,
    ended: tokio_util::sync::CancellationToken,
}

impl<T: rmcp::transport::Transport<RoleClient>> rmcp::transport::Transport<RoleClient>
    for Watched<T>
{
    type Error = T::Error;

    fn send(
        &mut self,
        item: rmcp::service::TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<rmcp::service::RxJsonRpcMessage<RoleClient>> {
        let message = self.inner.receive().await;
        if message.is_none() {
            self.ended.cancel();
        }
        message
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.ended.cancel();
        self.inner.close().await
    }
}

impl<T> Drop for Watched<T> {
    fn drop(&mut self) {
        self.ended.cancel();
    }
}

/// A downstream session (rmcp makes one per `Mcp-Session-Id`).
#[derive(Default)]
pub(crate) struct Proxy {
    session: tokio::sync::OnceCell<Session>,
}

fn gateway_call(extensions: &rmcp::model::Extensions) -> Result<Arc<GatewayCall>, McpError> {
    extensions
        .get::<axum::http::request::Parts>()
        .and_then(|p| p.extensions.get::<Arc<GatewayCall>>())
        .cloned()
        .ok_or_else(|| {
            McpError::internal_error("request arrived without Steward's authentication", None)
        })
}

fn agent_id(call: &GatewayCall) -> &str {
    match &call.caller {
        crate::auth::Caller::Agent { agent, .. } => &agent.id,
        crate::auth::Caller::Token { token, .. } => &token.id,
    }
}

fn upstream_error(server: &McpServer, e: ServiceError) -> McpError {
    match e {
        ServiceError::McpError(e) => e,
        ServiceError::Timeout { timeout } => {
            // rmcp drops a stdio line over its cap without a word, so an
            // answer that large looks like no answer: say so.
            let too_large = match server.transport {
                McpTransport::Stdio { .. } => format!(
                    " (an answer over {} MiB is dropped, and ends the same way)",
                    rmcp::transport::async_rw::DEFAULT_MAX_LINE_LENGTH >> 20
                ),
                McpTransport::StreamableHttp { .. } => String::new(),
            };
            McpError::internal_error(
                format!(
                    "the upstream MCP server '{}' did not answer within {} s{too_large}",
                    server.name,
                    timeout.as_secs()
                ),
                None,
            )
        }
        ServiceError::Cancelled { .. } => {
            McpError::internal_error("the request was cancelled", None)
        }
        ServiceError::TransportClosed => McpError::internal_error(
            format!(
                "the upstream MCP server '{}' has ended: this session is being closed; start a new one",
                server.name
            ),
            None,
        ),
        other => McpError::internal_error(
            format!("the upstream MCP server '{}' failed: {other}", server.name),
            None,
        ),
    }
}

/// Why an upstream session did not start, in words a person can act on.
/// rmcp wraps the HTTP client's error (a refused connection, an untrusted
/// certificate) without naming it as a source, so it is unwrapped here.
fn start_error(e: &ClientInitializeError) -> String {
    let ClientInitializeError::TransportError { error, context } = e else {
        return e.to_string();
    };
    let cause = match error
        .error
        .downcast_ref::<StreamableHttpError<rmcp_reqwest::Error>>()
    {
        Some(StreamableHttpError::Client(http)) => with_causes(http),
        _ => with_causes(error.error.as_ref()),
    };
    format!("{cause} ({context})")
}

/// An error and each error that caused it, as one line.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

fn steward_error(e: steward_core::Error) -> McpError {
    McpError::internal_error(format!("Steward could not decide: {}", e.message), None)
}

/// Start the upstream session for `call.server`, introducing ourselves with
/// the downstream client's parameters.
async fn connect(
    call: &GatewayCall,
    params: InitializeRequestParams,
    downstream: Peer<RoleServer>,
) -> Result<Session, McpError> {
    let server = call.server.clone();
    let progress = ProgressMap::default();
    // The directories an upstream may touch are the registration's, never
    // the agent's: a filesystem server takes a client's roots as its
    // sandbox. So the upstream is not told the client has roots, and asks
    // for none ([`Relay`] refuses if it does).
    let mut params = params;
    params.capabilities.roots = None;
    let relay = Relay {
        downstream,
        client: params,
        progress: progress.clone(),
    };
    let timeout = Duration::from_secs(u64::from(server.timeout_secs));
    // Cancelled when the upstream ends, or (the guard) when this session
    // goes or never starts.
    let ended = call.upstream_ended.clone().unwrap_or_default();
    let ended_guard = ended.clone().drop_guard();
    let unreachable = |why: String| {
        McpError::internal_error(
            format!(
                "the upstream MCP server '{}' is unavailable: {why}",
                server.name
            ),
            None,
        )
    };
    let started = match &server.transport {
        McpTransport::Stdio { command, args, env } => {
            let mut cmd = tokio::process::Command::new(command);
            // Steward's own environment (its admin token, database URL)
            // is not the upstream's business: only what programs need to
            // run at all is passed on, then the registered variables.
            cmd.args(args).env_clear();
            for name in INHERITED_ENV {
                if let Some(value) = std::env::var_os(name) {
                    cmd.env(name, value);
                }
            }
            cmd.envs(env);
            // Its own process group, killed whole with the session: what
            // a wrapper command started dies with it.
            let mut cmd = process_wrap::tokio::CommandWrap::from(cmd);
            #[cfg(unix)]
            cmd.wrap(process_wrap::tokio::ProcessGroup::leader());
            cmd.wrap(process_wrap::tokio::KillOnDrop);
            let (transport, _stderr) = TokioChildProcess::builder(cmd)
                .stderr(std::process::Stdio::null())
                .spawn()
                .map_err(|e| unreachable(format!("cannot start '{command}': {e}")))?;
            let transport = Watched {
                inner: transport,
                ended,
            };
            tokio::time::timeout(timeout, relay.serve(transport)).await
        }
        McpTransport::StreamableHttp { url } => {
            let transport = StreamableHttpClientTransport::with_client(
                call.state.mcp.upstream_http.clone(),
                StreamableHttpClientTransportConfig::with_uri(url.as_str()),
            );
            let transport = Watched {
                inner: transport,
                ended,
            };
            tokio::time::timeout(timeout, relay.serve(transport)).await
        }
    };
    let upstream = match started {
        Ok(Ok(running)) => running,
        Ok(Err(e)) => return Err(unreachable(start_error(&e))),
        Err(_) => {
            return Err(unreachable(format!(
                "no answer to initialize within {} s",
                timeout.as_secs()
            )));
        }
    };
    Ok(Session {
        server,
        agent_id: agent_id(call).to_string(),
        upstream,
        progress,
        _ended: ended_guard,
    })
}

impl Session {
    /// Send `request` upstream, relaying progress and cancellation.
    async fn forward(
        &self,
        request: ClientRequest,
        context: &RequestContext<RoleServer>,
    ) -> Result<ServerResult, McpError> {
        let mut options = PeerRequestOptions::no_options();
        options.timeout = Some(Duration::from_secs(u64::from(self.server.timeout_secs)));
        let peer = self.upstream.peer().clone();
        let downstream_token = context.meta.get_progress_token();
        // rmcp picks the upstream token as it sends.
        let mut mapping = match downstream_token {
            Some(_) => Some(self.progress.lock().await),
            None => None,
        };
        let handle = peer
            .send_request_with_option(request, options)
            .await
            .map_err(|e| upstream_error(&self.server, e))?;
        let id = handle.id.clone();
        let upstream_token = handle.progress_token.clone();
        if let (Some(map), Some(token)) = (mapping.as_mut(), &downstream_token) {
            map.insert(upstream_token.clone(), token.clone());
        }
        drop(mapping);
        let result = tokio::select! {
            r = handle.await_response() => r.map_err(|e| upstream_error(&self.server, e)),
            _ = context.ct.cancelled() => {
                let cancel = CancelledNotification::new(CancelledNotificationParam::new(
                    Some(id),
                    Some("cancelled by the client".into()),
                ));
                let _ = peer.send_notification(ClientNotification::CancelledNotification(cancel)).await;
                Err(McpError::internal_error("the request was cancelled", None))
            }
        };
        if downstream_token.is_some() {
            self.progress.lock().await.remove(&upstream_token);
        }
        result
    }
}

/// Bytes of `value` as JSON, counted without building the text.
fn json_size(value: &impl serde::Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => 0,
    }
}

/// Why `params` are not a `T`.
fn misfit<T: serde::de::DeserializeOwned>(params: serde_json::Value) -> String {
    match serde_json::from_value::<T>(params) {
        Err(e) => e.to_string(),
        Ok(_) => "they could not be read".into(),
    }
}

fn text_error(message: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message)])
}

impl Proxy {
    fn session(&self, call: &GatewayCall) -> Result<&Session, McpError> {
        let session = self
            .session
            .get()
            .ok_or_else(|| McpError::invalid_request("initialize the session first", None))?;
        if session.agent_id != agent_id(call) || session.server.id != call.server.id {
            return Err(McpError::invalid_request(
                "this session belongs to another agent or server",
                None,
            ));
        }
        Ok(session)
    }

    async fn call_tool(
        &self,
        call: &Arc<GatewayCall>,
        session: &Session,
        request: ClientRequest,
        context: &RequestContext<RoleServer>,
    ) -> Result<ServerResult, McpError> {
        let ClientRequest::CallToolRequest(req) = &request else {
            return Err(McpError::internal_error("not a tool call", None));
        };
        let tool = req.params.name.to_string();
        // A name no record could hold is bad input: refused before anything
        // is decided or written.
        if let Err(e) = steward_core::validate::key("name", &tool) {
            return Err(McpError::invalid_params(
                format!("tool name: {}", e.message),
                None,
            ));
        }
        let no_arguments = Map::new();
        let arguments = req.params.arguments.as_ref().unwrap_or(&no_arguments);
        let mut outcome = CallOutcome {
            server: session.server.name.clone(),
            tool: tool.clone(),
            outcome: "refused",
            response_bytes: 0,
            error: None,
            duration_ms: 0,
        };
        let decided = govern::decide_call(call, Kind::Tool, &tool, arguments)
            .await
            .map_err(steward_error)?;
        let allowed = match decided {
            Ok(allowed) => allowed,
            // The decision itself is in the audit log already.
            Err(Refusal::Decided(text)) => {
                return Ok(ServerResult::CallToolResult(text_error(text)));
            }
            Err(Refusal::Arguments(text)) => {
                outcome.error = Some(text.clone());
                govern::report_outcome(&call.state, &call.caller, None, false, &outcome)
                    .await
                    .map_err(steward_error)?;
                return Ok(ServerResult::CallToolResult(text_error(text)));
            }
        };
        // The upstream's own time, whether or not a record commits beside it.
        let forward = async {
            let started = Instant::now();
            let result = session.forward(request, context).await;
            (result, started.elapsed())
        };
        let ((mut result, took), recorded) = match allowed.recording {
            None => (forward.await, Ok(())),
            Some(recording) => {
                let (forwarded, recorded) = tokio::join!(forward, recording.wait());
                (forwarded, recorded.map(|_| ()))
            }
        };
        outcome.duration_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        match &result {
            Ok(r) => {
                outcome.response_bytes = json_size(r);
                let is_error =
                    matches!(r, ServerResult::CallToolResult(c) if c.is_error == Some(true));
                outcome.outcome = if is_error { "error" } else { "success" };
            }
            Err(e) => {
                outcome.outcome = "error";
                outcome.error = Some(e.message.to_string());
            }
        }
        // Recorded while the call ran, and the record failed: the call may
        // have run, but nothing is answered that the log does not hold.
        if let Err(e) = recorded {
            tracing::error!(error = %e.message, tool = %tool, "a call ran upstream, but its decision could not be recorded");
            let why = format!(
                "Steward could not record its decision on this call of '{tool}': \
                 the call may have run upstream, but its answer is withheld"
            );
            outcome.outcome = "withheld";
            outcome.error = Some(match outcome.error.take() {
                Some(upstream) => format!("{why} (the upstream answered an error: {upstream})"),
                None => why.clone(),
            });
            result = Err(McpError::internal_error(why, None));
        }
        // The decision was durable before the answer (and, unless the
        // server records with the call, before the call went upstream); the
        // outcome is queued for the same group-commit log without holding
        // the answer back for its fsync.
        let call = call.clone();
        tokio::spawn(async move {
            let (state, caller) = (&call.state, &call.caller);
            let decision_id = Some(allowed.decision_id.as_str());
            let report =
                govern::report_outcome(state, caller, decision_id, allowed.reserved, &outcome);
            if let Err(e) = call.within(report).await {
                tracing::error!(error = %e.message, tool = %outcome.tool, "could not record an MCP call's outcome");
            }
        });
        result
    }

    async fn read_checked(
        call: &GatewayCall,
        session: &Session,
        kind: Kind,
        name: &str,
        arguments: Map<String, serde_json::Value>,
        request: ClientRequest,
        context: &RequestContext<RoleServer>,
    ) -> Result<ServerResult, McpError> {
        match govern::decide_call(call, kind, name, &arguments)
            .await
            .map_err(steward_error)?
        {
            Ok(_) => session.forward(request, context).await,
            Err(Refusal::Decided(text) | Refusal::Arguments(text)) => {
                Err(McpError::new(McpErrorCode::INVALID_REQUEST, text, None))
            }
        }
    }
}

impl Proxy {
    /// Answer one downstream request: initialize opens the upstream; calls
    /// are decided; listings filtered; the rest relayed.
    async fn request(
        &self,
        request: ClientRequest,
        context: RequestContext<RoleServer>,
    ) -> Result<ServerResult, McpError> {
        let call = gateway_call(&context.extensions)?;
        call.within(self.serve(call.clone(), request, context))
            .await
    }

    async fn serve(
        &self,
        call: Arc<GatewayCall>,
        request: ClientRequest,
        context: RequestContext<RoleServer>,
    ) -> Result<ServerResult, McpError> {
        if let ClientRequest::InitializeRequest(init) = &request {
            let params = init.params.clone();
            context.peer.set_peer_info(params.clone());
            let session = self
                .session
                .get_or_try_init(|| connect(&call, params.clone(), context.peer.clone()))
                .await?;
            let info = session.upstream.peer_info().ok_or_else(|| {
                McpError::internal_error("the upstream did not introduce itself", None)
            })?;
            let mut result = InitializeResult::new(info.capabilities.clone())
                .with_protocol_version(params.protocol_version.clone());
            if let Some(server_info) = &info.server_info {
                result = result.with_server_info(server_info.clone());
            }
            if let Some(instructions) = &info.instructions {
                result = result.with_instructions(instructions.clone());
            }
            return Ok(ServerResult::InitializeResult(result));
        }
        let session = self.session(&call)?;
        // Reads are decided on what they read: a prompt (with its
        // arguments), a resource, a subscription to one (reading it as it
        // changes), a completion (what a prompt or template would accept).
        let read = match &request {
            ClientRequest::GetPromptRequest(r) => Some((
                Kind::Prompt,
                r.params.name.clone(),
                r.params.arguments.clone().unwrap_or_default(),
            )),
            ClientRequest::ReadResourceRequest(r) => {
                Some((Kind::Resource, r.params.uri.clone(), Map::new()))
            }
            ClientRequest::SubscribeRequest(r) => {
                Some((Kind::Resource, r.params.uri.clone(), Map::new()))
            }
            ClientRequest::CompleteRequest(r) => match &r.params.r#ref {
                Reference::Prompt(p) => Some((Kind::Prompt, p.name.clone(), Map::new())),
                Reference::Resource(t) => Some((Kind::Template, t.uri.clone(), Map::new())),
                // A kind of reference this gateway cannot decide on.
                _ => {
                    return Err(McpError::invalid_params(
                        "Steward cannot decide on this kind of completion reference",
                        None,
                    ));
                }
            },
            _ => None,
        };
        if let Some((kind, name, arguments)) = read {
            return Self::read_checked(&call, session, kind, &name, arguments, request, &context)
                .await;
        }
        match &request {
            ClientRequest::CallToolRequest(_) => {
                self.call_tool(&call, session, request, &context).await
            }
            ClientRequest::ListToolsRequest(_)
            | ClientRequest::ListPromptsRequest(_)
            | ClientRequest::ListResourcesRequest(_)
            | ClientRequest::ListResourceTemplatesRequest(_) => {
                let result = session.forward(request, &context).await?;
                filter_listing(&call, result).await
            }
            // Ping, logging level, unsubscribing: nothing to decide.
            _ => session.forward(request, &context).await,
        }
    }

    async fn notify(&self, notification: ClientNotification) {
        if let Some(session) = self.session.get() {
            // An upstream that went away answers the next request with an error.
            let _ = session
                .upstream
                .peer()
                .send_notification(notification)
                .await;
        }
    }
}

fn unexpected(what: &str) -> McpError {
    McpError::internal_error(
        format!("the upstream answered {what} with something else"),
        None,
    )
}

impl ServerHandler for Proxy {
    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, McpError> {
        match self
            .request(
                ClientRequest::InitializeRequest(InitializeRequest::new(request)),
                context,
            )
            .await?
        {
            ServerResult::InitializeResult(r) => Ok(r),
            _ => Err(unexpected("initialize")),
        }
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, McpError> {
        match self
            .request(
                ClientRequest::CompleteRequest(CompleteRequest::new(request)),
                context,
            )
            .await?
        {
            ServerResult::CompleteResult(r) => Ok(r),
            _ => Err(unexpected("completion/complete")),
        }
    }

    /// Pinged through to the upstream (rmcp would answer here), so a
    /// client's health check fails once the upstream has gone.
    async fn ping(&self, context: RequestContext<RoleServer>) -> Result<(), McpError> {
        self.request(ClientRequest::PingRequest(PingRequest::default()), context)
            .await
            .map(|_| ())
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.request(
            ClientRequest::SetLevelRequest(SetLevelRequest::new(request)),
            context,
        )
        .await
        .map(|_| ())
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        match self
            .request(
                ClientRequest::GetPromptRequest(GetPromptRequest::new(request)),
                context,
            )
            .await?
        {
            ServerResult::GetPromptResult(r) => Ok(GetPromptResponse::Complete(r)),
            ServerResult::InputRequiredResult(r) => Ok(GetPromptResponse::InputRequired(r)),
            _ => Err(unexpected("prompts/get")),
        }
    }

    async fn list_prompts(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        let r = ListPromptsRequest {
            params: request,
            ..Default::default()
        };
        match self
            .request(ClientRequest::ListPromptsRequest(r), context)
            .await?
        {
            ServerResult::ListPromptsResult(r) => Ok(r),
            _ => Err(unexpected("prompts/list")),
        }
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let r = ListResourcesRequest {
            params: request,
            ..Default::default()
        };
        match self
            .request(ClientRequest::ListResourcesRequest(r), context)
            .await?
        {
            ServerResult::ListResourcesResult(r) => Ok(r),
            _ => Err(unexpected("resources/list")),
        }
    }

    async fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        let r = ListResourceTemplatesRequest {
            params: request,
            ..Default::default()
        };
        match self
            .request(ClientRequest::ListResourceTemplatesRequest(r), context)
            .await?
        {
            ServerResult::ListResourceTemplatesResult(r) => Ok(r),
            _ => Err(unexpected("resources/templates/list")),
        }
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        match self
            .request(
                ClientRequest::ReadResourceRequest(ReadResourceRequest::new(request)),
                context,
            )
            .await?
        {
            ServerResult::ReadResourceResult(r) => Ok(ReadResourceResponse::Complete(r)),
            ServerResult::InputRequiredResult(r) => Ok(ReadResourceResponse::InputRequired(r)),
            _ => Err(unexpected("resources/read")),
        }
    }

    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.request(
            ClientRequest::SubscribeRequest(SubscribeRequest::new(request)),
            context,
        )
        .await
        .map(|_| ())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.request(
            ClientRequest::UnsubscribeRequest(UnsubscribeRequest::new(request)),
            context,
        )
        .await
        .map(|_| ())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        match self
            .request(
                ClientRequest::CallToolRequest(CallToolRequest::new(request)),
                context,
            )
            .await?
        {
            ServerResult::CallToolResult(r) => Ok(CallToolResponse::Complete(r)),
            ServerResult::InputRequiredResult(r) => Ok(CallToolResponse::InputRequired(r)),
            ServerResult::CreateTaskResult(r) => Ok(CallToolResponse::Task(r)),
            _ => Err(unexpected("tools/call")),
        }
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let r = ListToolsRequest {
            params: request,
            ..Default::default()
        };
        match self
            .request(ClientRequest::ListToolsRequest(r), context)
            .await?
        {
            ServerResult::ListToolsResult(r) => Ok(r),
            _ => Err(unexpected("tools/list")),
        }
    }

    async fn on_progress(
        &self,
        notification: ProgressNotificationParam,
        _context: NotificationContext<RoleServer>,
    ) {
        self.notify(ClientNotification::ProgressNotification(
            ProgressNotification::new(notification),
        ))
        .await;
    }

    /// rmcp reads a request whose params do not fit its method's schema as
    /// a custom request: for a method the gateway relays, that is invalid
    /// params, saying what does not fit; no other method is relayed.
    async fn on_custom_request(
        &self,
        request: CustomRequest,
        _context: RequestContext<RoleServer>,
    ) -> Result<CustomResult, McpError> {
        let params = request.params.unwrap_or_default();
        let method = request.method;
        let why = match method.as_str() {
            "tools/call" => misfit::<CallToolRequestParams>(params),
            "prompts/get" => misfit::<GetPromptRequestParams>(params),
            "resources/read" => misfit::<ReadResourceRequestParams>(params),
            "resources/subscribe" | "resources/unsubscribe" => {
                misfit::<SubscribeRequestParams>(params)
            }
            "completion/complete" => misfit::<CompleteRequestParams>(params),
            "logging/setLevel" => misfit::<SetLevelRequestParams>(params),
            "initialize" => misfit::<InitializeRequestParams>(params),
            "tools/list" | "prompts/list" | "resources/list" | "resources/templates/list" => {
                misfit::<PaginatedRequestParams>(params)
            }
            _ => {
                return Err(McpError::new(
                    McpErrorCode::METHOD_NOT_FOUND,
                    format!("{method}: not a method Steward's MCP gateway relays"),
                    None,
                ));
            }
        };
        Err(McpError::invalid_params(
            format!("the params of {method} do not fit its schema: {why}"),
            None,
        ))
    }

    /// Not relayed: the upstream is never told the client has roots.
    async fn on_roots_list_changed(&self, _context: NotificationContext<RoleServer>) {}

    async fn on_initialized(&self, _context: NotificationContext<RoleServer>) {}

    fn get_info(&self) -> InitializeResult {
        match self.session.get().and_then(|s| s.upstream.peer_info()) {
            Some(info) => InitializeResult::new(info.capabilities.clone()),
            None => InitializeResult::default(),
        }
    }
}

/// Keep only the tools, prompts or resources the agent may use.
async fn filter_listing(
    call: &GatewayCall,
    result: ServerResult,
) -> Result<ServerResult, McpError> {
    Ok(match result {
        ServerResult::ListToolsResult(mut r) => {
            let names: Vec<String> = r.tools.iter().map(|t| t.name.to_string()).collect();
            let keep = govern::visible(call, Kind::Tool, &names)
                .await
                .map_err(steward_error)?;
            r.tools.retain(|t| keep.contains(t.name.as_ref()));
            ServerResult::ListToolsResult(r)
        }
        ServerResult::ListPromptsResult(mut r) => {
            let names: Vec<String> = r.prompts.iter().map(|p| p.name.clone()).collect();
            let keep = govern::visible(call, Kind::Prompt, &names)
                .await
                .map_err(steward_error)?;
            r.prompts.retain(|p| keep.contains(&p.name));
            ServerResult::ListPromptsResult(r)
        }
        ServerResult::ListResourcesResult(mut r) => {
            let names: Vec<String> = r.resources.iter().map(|x| x.uri.clone()).collect();
            let keep = govern::visible(call, Kind::Resource, &names)
                .await
                .map_err(steward_error)?;
            r.resources.retain(|x| keep.contains(&x.uri));
            ServerResult::ListResourcesResult(r)
        }
        ServerResult::ListResourceTemplatesResult(mut r) => {
            let names: Vec<String> = r
                .resource_templates
                .iter()
                .map(|t| t.uri_template.clone())
                .collect();
            let keep = govern::visible(call, Kind::Template, &names)
                .await
                .map_err(steward_error)?;
            r.resource_templates
                .retain(|t| keep.contains(&t.uri_template));
            ServerResult::ListResourceTemplatesResult(r)
        }
        other => other,
    })
}

/// The upstream client: relays what the upstream asks of and tells the
/// downstream client.
struct Relay {
    downstream: Peer<RoleServer>,
    client: InitializeRequestParams,
    progress: ProgressMap,
}

impl Service<RoleClient> for Relay {
    async fn handle_request(
        &self,
        request: ServerRequest,
        context: RequestContext<RoleClient>,
    ) -> Result<ClientResult, McpError> {
        let _ = context;
        if matches!(request, ServerRequest::ListRootsRequest(_)) {
            return Err(McpError::invalid_request(
                "roots are not relayed: the directories an upstream works in are set where it is registered in Steward",
                None,
            ));
        }
        self.downstream
            .send_request(request)
            .await
            .map_err(|e| match e {
                ServiceError::McpError(e) => e,
                other => {
                    McpError::internal_error(format!("the client did not answer: {other}"), None)
                }
            })
    }

    async fn handle_notification(
        &self,
        notification: ServerNotification,
        context: NotificationContext<RoleClient>,
    ) -> Result<(), McpError> {
        let _ = context;
        let notification = match notification {
            ServerNotification::ProgressNotification(mut n) => {
                let mapped = self
                    .progress
                    .lock()
                    .await
                    .get(&n.params.progress_token)
                    .cloned();
                let Some(token) = mapped else {
                    return Ok(());
                };
                n.params.progress_token = token;
                ServerNotification::ProgressNotification(n)
            }
            // Upstream request ids mean nothing downstream.
            ServerNotification::CancelledNotification(_) => return Ok(()),
            other => other,
        };
        // A client that went away is not the upstream's problem.
        let _ = self.downstream.send_notification(notification).await;
        Ok(())
    }

    fn get_info(&self) -> InitializeRequestParams {
        self.client.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::with_causes;

    /// An error that says what failed and keeps why as its source.
    #[derive(Debug)]
    struct Wrapped(&'static str, std::io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.1)
        }
    }

    #[test]
    fn an_error_reads_with_its_causes_each_said_once() {
        let refused = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(
            with_causes(&Wrapped("client error (Connect)", refused())),
            "client error (Connect): refused"
        );
        // A wrapper that already quotes its cause does not repeat it.
        assert_eq!(
            with_causes(&Wrapped("connect failed: refused", refused())),
            "connect failed: refused"
        );
        assert_eq!(with_causes(&refused()), "refused");
    }
}
