//! Upstream MCP servers for the gateway at `/mcp/{name}`. Registering the
//! first one declares what policies about MCP traffic talk about, unless the
//! tenant declared it already: resource types `Tool` (server, name,
//! classification, risk, cost_estimate), `Prompt` (server, name) and
//! `McpResource` (server, uri); actions `call_tool` (context: optional
//! `arguments` record), `get_prompt` and `read_resource`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use steward_store::mcp_servers::redacted;
use steward_store::policies::PolicyChange;
use steward_types::{
    MCP_CALL_TOOL, MCP_GET_PROMPT, MCP_PROMPT_TYPE, MCP_READ_RESOURCE, MCP_RESOURCE_TYPE,
    MCP_TOOL_TYPE, McpServer, PutAction, PutMcpServer, PutResourceType,
};

use crate::auth::Caller;
use crate::error::{ApiJson, ApiResult};
use crate::state::AppState;

fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The declarations the gateway's decisions use, those the tenant lacks.
pub fn missing_declarations(state: &steward_store::policies::PolicyState) -> Vec<PolicyChange> {
    let has_type = |n: &str| state.resource_types.iter().any(|r| r.name == n);
    let has_action = |n: &str| state.actions.iter().any(|a| a.name == n);
    let mut changes = Vec::new();
    let types = [
        (
            MCP_TOOL_TYPE,
            "A tool of an upstream MCP server, id 'server/tool'",
            attrs(&[
                ("server", "String"),
                ("name", "String"),
                ("classification", "String"),
                ("risk", "String"),
                ("cost_estimate", "Long"),
            ]),
        ),
        (
            MCP_PROMPT_TYPE,
            "A prompt of an upstream MCP server, id 'server/prompt'",
            attrs(&[("server", "String"), ("name", "String")]),
        ),
        (
            MCP_RESOURCE_TYPE,
            "A resource of an upstream MCP server, id 'server/uri'",
            attrs(&[("server", "String"), ("uri", "String")]),
        ),
    ];
    for (name, description, attributes) in types {
        if !has_type(name) {
            changes.push(PolicyChange::PutResourceType(PutResourceType {
                name: name.into(),
                description: description.into(),
                attributes,
            }));
        }
    }
    let actions = [
        (
            MCP_CALL_TOOL,
            MCP_TOOL_TYPE,
            "Call a tool through the MCP gateway (and see it listed)",
            attrs(&[("arguments", "{}?")]),
        ),
        (
            MCP_GET_PROMPT,
            MCP_PROMPT_TYPE,
            "Get a prompt through the MCP gateway (and see it listed)",
            BTreeMap::new(),
        ),
        (
            MCP_READ_RESOURCE,
            MCP_RESOURCE_TYPE,
            "Read a resource through the MCP gateway (and see it listed)",
            BTreeMap::new(),
        ),
    ];
    for (name, ty, description, context) in actions {
        if !has_action(name) {
            changes.push(PolicyChange::PutAction(PutAction {
                name: name.into(),
                description: description.into(),
                resource_types: vec![ty.into()],
                context,
            }));
        }
    }
    changes
}

/// Declare what MCP policies talk about, where missing.
pub async fn ensure_declarations(
    state: &AppState,
    ctx: &steward_core::ChangeContext,
) -> Result<(), steward_core::Error> {
    let current = state.store.policy_state(&ctx.tenant_id).await?;
    let changes = missing_declarations(&current);
    if !changes.is_empty() {
        state.engines.change(&state.store, ctx, changes).await?;
    }
    Ok(())
}

/// Registered upstream MCP servers (environment values shown as `***`).
#[utoipa::path(get, path = "/v1/mcp-servers", tag = "mcp", responses((status = 200, body = Vec<McpServer>)))]
pub async fn list_mcp_servers(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<McpServer>>> {
    let servers = state.store.list_mcp_servers(caller.reader()?).await?;
    Ok(Json(servers.iter().map(redacted).collect()))
}

/// Whether `caller` may have Steward run a command of its choosing: the
/// platform administrator, and a tenant's admins only where the operator
/// allows it (`mcp_stdio_tenant_admins`).
pub(crate) fn may_run_commands(state: &AppState, caller: &Caller) -> bool {
    state.config.mcp_stdio_tenant_admins || caller.platform_admin().is_ok()
}

/// A stdio upstream's command runs on Steward's host, as Steward's user,
/// where it could read the store and the server's environment: who may not
/// run commands (see [`may_run_commands`]) may not register one, nor change
/// one's command, arguments or environment. Keeping a registered command as
/// it is, while changing the rest, is anyone's.
pub(crate) fn check_command(
    may_run: bool,
    req: &PutMcpServer,
    existing: Option<&McpServer>,
) -> Result<(), steward_core::Error> {
    let stdio = matches!(req.transport, steward_types::McpTransport::Stdio { .. });
    if may_run || !stdio || existing.is_some_and(|e| e.transport == req.transport) {
        return Ok(());
    }
    Err(steward_core::Error::new(
        steward_types::ErrorCode::Forbidden,
        format!(
            "mcp server '{}': only the platform administrator registers a stdio upstream or \
             changes its command, since the command runs on Steward's host as Steward's user; \
             a tenant's admin may register Streamable HTTP upstreams (the operator can allow \
             tenants' admins stdio with mcp_stdio_tenant_admins = true)",
            req.name
        ),
    ))
}

/// A Streamable HTTP upstream written as an address the operator refused
/// (`[outbound]`) is refused when it is registered; a name is checked at
/// every connection.
pub(crate) fn check_destination(
    outbound: &crate::outbound::Outbound,
    req: &PutMcpServer,
) -> Result<(), steward_core::Error> {
    match &req.transport {
        steward_types::McpTransport::StreamableHttp { url } => match outbound.check_url(url) {
            Some(why) => Err(steward_core::Error::invalid(
                "transport.url",
                format!("mcp server '{}': {why}", req.name),
            )),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Register an upstream MCP server, or replace the one with this name. A
/// replacement with another transport closes the sessions open on it. A
/// stdio upstream's command is the platform administrator's to set.
#[utoipa::path(post, path = "/v1/mcp-servers", tag = "mcp", request_body = PutMcpServer,
    responses((status = 200, body = McpServer), (status = 400, body = steward_types::ErrorBody)))]
pub async fn put_mcp_server(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<PutMcpServer>,
) -> ApiResult<Json<McpServer>> {
    let ctx = caller.admin()?;
    steward_store::mcp_servers::validate_mcp_server(&req)?;
    let existing = match state.store.get_mcp_server(&ctx.tenant_id, &req.name).await {
        Ok(existing) => Some(existing),
        Err(e) if e.code == steward_types::ErrorCode::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    check_command(may_run_commands(&state, &caller), &req, existing.as_ref())?;
    check_destination(&state.outbound, &req)?;
    ensure_declarations(&state, &ctx).await?;
    let (server, _) = state.store.put_mcp_server(&ctx, req).await?;
    // Sessions on it now on another transport end (this node's at once).
    state
        .mcp
        .registrations_replaced(&state.store, &ctx.tenant_id)
        .await;
    Ok(Json(redacted(&server)))
}

/// One registered server by id or name.
#[utoipa::path(get, path = "/v1/mcp-servers/{name}", tag = "mcp", params(("name" = String, Path, description = "Server id or name")),
    responses((status = 200, body = McpServer), (status = 404, body = steward_types::ErrorBody)))]
pub async fn get_mcp_server(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<McpServer>> {
    let server = state.store.get_mcp_server(caller.reader()?, &name).await?;
    Ok(Json(redacted(&server)))
}

/// Remove a registered server; its gateway endpoint answers 404 from then
/// on, and its open sessions are closed.
#[utoipa::path(delete, path = "/v1/mcp-servers/{name}", tag = "mcp", params(("name" = String, Path, description = "Server id or name")),
    responses((status = 204), (status = 404, body = steward_types::ErrorBody)))]
pub async fn delete_mcp_server(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let ctx = caller.admin()?;
    state.store.delete_mcp_server(&ctx, &name).await?;
    // Its sessions end (this node's at once, their slots freed).
    state
        .mcp
        .registrations_replaced(&state.store, &ctx.tenant_id)
        .await;
    Ok(StatusCode::NO_CONTENT)
}
