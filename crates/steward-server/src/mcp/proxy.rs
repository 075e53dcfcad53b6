//! One downstream MCP session, relayed to one upstream session
//! ([`super::upstream`]).
//!
//! The downstream `initialize` opens the upstream with the downstream
//! client's identity and capabilities; the upstream's answer becomes ours.
//! Afterwards requests go up (tool calls decided first, listings filtered
//! on the way back), and the upstream's requests (sampling, elicitation)
//! and notifications (progress, logging, list changes) come down.

// Logging levels and resource subscriptions are deprecated in the newest
// protocol version, but the upstreams speak older ones; relay them as is.
#![allow(deprecated)]

use std::sync::Arc;
use std::time::Instant;

use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResponse, CallToolResult, ClientNotification,
    ClientRequest, CompleteRequest, CompleteRequestParams, CompleteResult, ContentBlock,
    CustomRequest, CustomResult, ErrorCode as McpErrorCode, GetPromptRequest,
    GetPromptRequestParams, GetPromptResponse, InitializeRequest, InitializeRequestParams,
    InitializeResult, ListPromptsRequest, ListPromptsResult, ListResourceTemplatesRequest,
    ListResourceTemplatesResult, ListResourcesRequest, ListResourcesResult, ListToolsRequest,
    ListToolsResult, PaginatedRequestParams, PingRequest, ProgressNotification,
    ProgressNotificationParam, ReadResourceRequest, ReadResourceRequestParams,
    ReadResourceResponse, Reference, ServerResult, SetLevelRequest, SetLevelRequestParams,
    SubscribeRequest, SubscribeRequestParams, UnsubscribeRequest, UnsubscribeRequestParams,
};
use rmcp::service::{NotificationContext, RequestContext, RoleServer};
use rmcp::{ErrorData as McpError, ServerHandler};
use serde_json::Map;

use super::GatewayCall;
use super::govern::{self, Allowed, CallOutcome, Kind, Refusal, canonical_template, canonical_uri};
use super::upstream::{Session, connect};
use super::withhold::{withhold_contents, withhold_embedded};

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

pub(super) fn agent_id(call: &GatewayCall) -> &str {
    match &call.caller {
        crate::auth::Caller::Agent { agent, .. } => &agent.id,
        crate::auth::Caller::Token { token, .. } => &token.id,
    }
}

pub(super) fn steward_error(e: steward_core::Error) -> McpError {
    McpError::internal_error(format!("Steward could not decide: {}", e.message), None)
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

/// Run `report` (what an answered request came to: a tool call's outcome
/// record, a read's settlement) as part of `call`'s HTTP request, on a task
/// the shutdown waits for, without holding the answer back for its write.
fn after_answer<F>(call: &Arc<GatewayCall>, name: String, report: F)
where
    F: Future<Output = Result<(), steward_core::Error>> + Send + 'static,
{
    let scoped = call.clone();
    call.state.mcp.spawn_outcome(async move {
        if let Err(e) = scoped.within(report).await {
            tracing::error!(error = %e.message, %name, "could not record what an MCP request came to");
        }
    });
}

/// Settle the reservation of an answered read of `name` (a resource, a
/// prompt, a completion, a subscription), if a quota applied to it, with
/// the answer as it went to the client, as a tool call's outcome settles
/// its own.
fn settle_answered(
    call: &Arc<GatewayCall>,
    name: String,
    allowed: Allowed,
    result: &Result<ServerResult, McpError>,
) {
    if !allowed.reserved {
        return;
    }
    let (status, bytes, error) = match result {
        Ok(r) => ("success", json_size(r), None),
        Err(e) => ("error", 0, Some(e.message.to_string())),
    };
    let (settled, decision_id) = (call.clone(), allowed.decision_id);
    after_answer(call, name, async move {
        let (state, caller) = (&settled.state, &settled.caller);
        govern::settle(state, caller, &decision_id, status, bytes, error.as_deref()).await
    });
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
                govern::report_outcome(&call.state, &call.caller, None, false, &outcome, false)
                    .await
                    .map_err(steward_error)?;
                return Ok(ServerResult::CallToolResult(text_error(text)));
            }
        };
        // The upstream's own time, whether or not a record commits beside it.
        let forward = async {
            let started = Instant::now();
            let result = session
                .forward(call.server.timeout_secs, request, context)
                .await;
            (result, started.elapsed())
        };
        let ((mut result, took), recorded) = match allowed.recording {
            None => (forward.await, Ok(())),
            Some(recording) => {
                let (forwarded, recorded) = tokio::join!(forward, recording.wait());
                (forwarded, recorded.map(|_| ()))
            }
        };
        // Resources the result embeds are read through it: decided as reads,
        // in its content and in its structured content alike.
        if let Ok(ServerResult::CallToolResult(r)) = &mut result {
            let blocks = r.content.iter_mut().collect();
            let structured = r.structured_content.as_mut();
            if let Err(e) = withhold_embedded(call, "tools/call", &tool, blocks, structured).await {
                result = Err(e);
            }
        }
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
        let reported = call.clone();
        after_answer(call, tool, async move {
            let (state, caller) = (&reported.state, &reported.caller);
            let decision_id = Some(allowed.decision_id.as_str());
            govern::report_outcome(state, caller, decision_id, allowed.reserved, &outcome, true)
                .await
        });
        result
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
            // The version the upstream agreed to, not whatever the client
            // asked for: the client decides whether it can speak it.
            let mut result = InitializeResult::new(info.capabilities.clone())
                .with_protocol_version(info.protocol_version.clone());
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
        let mut request = request;
        let read = match &mut request {
            ClientRequest::GetPromptRequest(r) => Some((
                Kind::Prompt,
                r.params.name.clone(),
                r.params.arguments.clone().unwrap_or_default(),
            )),
            // Decided, and sent up, in one spelling: an upstream reads
            // `DEMO://a/./b` as `demo://a/b`, which a policy names.
            ClientRequest::ReadResourceRequest(r) => {
                let uri = canonical_uri(&r.params.uri);
                r.params.uri.clone_from(&uri);
                Some((Kind::Resource, uri, Map::new()))
            }
            ClientRequest::SubscribeRequest(r) => {
                let uri = canonical_uri(&r.params.uri);
                r.params.uri.clone_from(&uri);
                Some((Kind::Resource, uri, Map::new()))
            }
            ClientRequest::CompleteRequest(r) => match &mut r.params.r#ref {
                Reference::Prompt(p) => Some((Kind::Prompt, p.name.clone(), Map::new())),
                // A template, decided and sent up in one spelling as a
                // resource is, its expressions kept as they are.
                Reference::Resource(t) => {
                    let Some(template) = canonical_template(&t.uri) else {
                        return Err(McpError::invalid_params(
                            format!(
                                "Steward cannot decide on the resource template '{}': an \
                                 expression of it would not reach the upstream whole",
                                t.uri
                            ),
                            None,
                        ));
                    };
                    t.uri.clone_from(&template);
                    Some((Kind::Template, template, Map::new()))
                }
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
            // A name or URI no record could hold is bad input, as a tool's.
            let what = if kind == Kind::Prompt { "name" } else { "URI" };
            if let Err(e) = steward_core::validate::key(&format!("{} {what}", kind.noun()), &name) {
                return Err(McpError::invalid_params(e.message, None));
            }
            let reading = matches!(request, ClientRequest::ReadResourceRequest(_));
            let allowed = match govern::decide_call(&call, kind, &name, &arguments)
                .await
                .map_err(steward_error)?
            {
                Ok(allowed) => allowed,
                Err(Refusal::Decided(text) | Refusal::Arguments(text)) => {
                    return Err(McpError::new(McpErrorCode::INVALID_REQUEST, text, None));
                }
            };
            let result = match session
                .forward(call.server.timeout_secs, request, &context)
                .await
            {
                Ok(ServerResult::ReadResourceResult(r)) if reading => {
                    withhold_contents(&call, &name, r).await
                }
                Ok(ServerResult::GetPromptResult(mut r)) => {
                    let blocks = r.messages.iter_mut().map(|m| &mut m.content).collect();
                    withhold_embedded(&call, "prompts/get", &name, blocks, None)
                        .await
                        .map(|()| ServerResult::GetPromptResult(r))
                }
                other => other,
            };
            settle_answered(&call, name, allowed, &result);
            return result;
        }
        match &request {
            ClientRequest::CallToolRequest(_) => {
                self.call_tool(&call, session, request, &context).await
            }
            ClientRequest::ListToolsRequest(_)
            | ClientRequest::ListPromptsRequest(_)
            | ClientRequest::ListResourcesRequest(_)
            | ClientRequest::ListResourceTemplatesRequest(_) => {
                let result = session
                    .forward(call.server.timeout_secs, request, &context)
                    .await?;
                filter_listing(&call, result).await
            }
            // Ping, logging level, unsubscribing: nothing to decide.
            _ => {
                session
                    .forward(call.server.timeout_secs, request, &context)
                    .await
            }
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
            // Its result would come later, past every check: refused, as
            // the upstream was never told the client takes tasks.
            ServerResult::CreateTaskResult(_) => Err(McpError::internal_error(
                "the upstream answered with a task; Steward relays no tasks",
                None,
            )),
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
        // URIs are decided in the spelling a read would be (see
        // `canonical_uri`), so a listing shows what reads allow.
        ServerResult::ListResourcesResult(mut r) => {
            let names: Vec<String> = r.resources.iter().map(|x| canonical_uri(&x.uri)).collect();
            let keep = govern::visible(call, Kind::Resource, &names)
                .await
                .map_err(steward_error)?;
            let mut names = names.iter();
            r.resources
                .retain(|_| names.next().is_some_and(|n| keep.contains(n)));
            ServerResult::ListResourcesResult(r)
        }
        // Templates as a completion of each would be decided; one that
        // could not be is not shown.
        ServerResult::ListResourceTemplatesResult(mut r) => {
            let names: Vec<Option<String>> = r
                .resource_templates
                .iter()
                .map(|t| canonical_template(&t.uri_template))
                .collect();
            let decidable: Vec<String> = names.iter().flatten().cloned().collect();
            let keep = govern::visible(call, Kind::Template, &decidable)
                .await
                .map_err(steward_error)?;
            let mut names = names.iter();
            r.resource_templates.retain(|_| {
                names
                    .next()
                    .is_some_and(|n| n.as_ref().is_some_and(|n| keep.contains(n)))
            });
            ServerResult::ListResourceTemplatesResult(r)
        }
        other => other,
    })
}
