//! Agents: registration, reading, changes and lifecycle transitions.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use steward_core::lifecycle::Transition;
use steward_types::{
    Agent, AgentFilter, AgentState, ErrorCode, Page, RegisterAgent, TransitionRequest,
    TransitionResult, UpdateAgent,
};

use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult, OptionalJson};
use crate::state::AppState;

/// The tenant's agents, filtered by owner, team, persona, state, risk tier, parent or orphaned.
#[utoipa::path(get, path = "/v1/agents", tag = "agents", params(AgentFilter), responses((status = 200, body = Page<Agent>)))]
pub async fn list_agents(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AgentFilter>,
) -> ApiResult<Json<Page<Agent>>> {
    Ok(Json(state.store.list_agents(caller.reader()?, q).await?))
}

/// Register an agent: active at once when low risk, else pending approval.
#[utoipa::path(post, path = "/v1/agents", tag = "agents", request_body = RegisterAgent,
    responses((status = 201, body = Agent), (status = 409, body = steward_types::ErrorBody), (status = 422, body = steward_types::ErrorBody)))]
pub async fn register_agent(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<RegisterAgent>,
) -> ApiResult<(StatusCode, Json<Agent>)> {
    let ctx = caller.admin()?;
    let (agent, approval) = state
        .store
        .register_agent_for_approval(&ctx, &state.rules, req)
        .await?;
    if let Some(a) = &approval {
        crate::approvals::announce(&state, "approval.requested", a);
    }
    Ok((StatusCode::CREATED, Json(agent)))
}

/// An agent by id or name.
#[utoipa::path(get, path = "/v1/agents/{id}", tag = "agents", params(("id" = String, Path, description = "Agent id or name")),
    responses((status = 200, body = Agent), (status = 404, body = steward_types::ErrorBody)))]
pub async fn get_agent(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Agent>> {
    Ok(Json(state.store.get_agent(caller.reader()?, &id).await?))
}

/// Change an agent's owner (clears `orphaned`), team, purpose, platform,
/// model, labels, expiry, roles or classifications. New roles or
/// classifications that raise an active agent's risk tier wait for that
/// tier's approval chain: the answer is then `202` with the agent as it is,
/// and a `Location` header naming the approval. Roles or classifications
/// taken away are taken from every live agent below it too.
#[utoipa::path(patch, path = "/v1/agents/{id}", tag = "agents", request_body = UpdateAgent,
    params(("id" = String, Path, description = "Agent id or name")),
    responses((status = 200, body = Agent), (status = 202, body = Agent, description = "The change waits for approval")))]
pub async fn update_agent(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateAgent>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let ctx = caller.admin()?;
    let change = state
        .store
        .change_agent(&ctx, &state.rules, &id, req)
        .await?;
    Ok(match change.approval {
        Some(a) => {
            crate::approvals::announce(&state, "approval.requested", &a);
            (
                StatusCode::ACCEPTED,
                [(
                    axum::http::header::LOCATION,
                    format!("/v1/approvals/{}", a.id),
                )],
                Json(change.agent),
            )
                .into_response()
        }
        None => Json(change.agent).into_response(),
    })
}

/// Move an agent through its lifecycle: `submit`, `activate`, `reject`,
/// `suspend` (a reason is required), `resume`, `decommission` (cascades to
/// descendants and revokes every key). An invalid transition is 409
/// `invalid_transition`. `activate` is refused (409 `approval_pending`) for
/// an agent whose tier has an approval chain: the chain's last approval
/// activates it; `submit` files that approval.
#[utoipa::path(post, path = "/v1/agents/{id}/{transition}", tag = "agents", request_body = TransitionRequest,
    params(("id" = String, Path, description = "Agent id or name"),
           ("transition" = String, Path, description = "submit | activate | reject | suspend | resume | decommission")),
    responses((status = 200, body = TransitionResult), (status = 409, body = steward_types::ErrorBody)))]
pub async fn transition_agent(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, transition)): Path<(String, String)>,
    OptionalJson(req): OptionalJson<TransitionRequest>,
) -> ApiResult<Json<TransitionResult>> {
    let transition = match transition.as_str() {
        "submit" => Transition::Submit,
        "activate" => Transition::Activate,
        "reject" => Transition::Reject,
        "suspend" => Transition::Suspend,
        "resume" => Transition::Resume,
        "decommission" => Transition::Decommission,
        _ => return Err(crate::error::route_not_found().await),
    };
    let ctx = caller.admin()?;
    let reason = req.reason.filter(|r| !r.trim().is_empty());
    if transition == Transition::Suspend && reason.is_none() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "reason: suspending an agent needs a reason (it is shown to its owner)",
        ));
    }
    let (result, approval) = state
        .store
        .transition_agent_gated(&ctx, &state.rules, &id, transition, reason)
        .await?;
    if let Some(a) = &approval {
        crate::approvals::announce(&state, "approval.requested", a);
    }
    if result.agent.state != AgentState::Active {
        // Its MCP sessions on this node end now (the gateway's periodic
        // check closes those on other nodes), event streams included.
        let mut stopped = vec![result.agent.id.clone()];
        stopped.extend(result.cascaded.iter().cloned());
        state.mcp.close_agent_sessions(&stopped).await;
    }
    Ok(Json(result))
}
