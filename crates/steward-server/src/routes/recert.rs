//! Recertification campaigns: owners re-attest the agents they own.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use steward_types::{
    Attest, Campaign, CampaignItem, CampaignItemQuery, Page, PageQuery, StartCampaign,
};

use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult};
use crate::state::AppState;

/// Start a campaign: every active or suspended agent in scope becomes an
/// item for its owner to attest by the due date.
#[utoipa::path(post, path = "/v1/recertifications", tag = "recertification", request_body = StartCampaign,
    responses((status = 201, body = Campaign), (status = 400, body = steward_types::ErrorBody),
        (status = 409, body = steward_types::ErrorBody)))]
pub async fn start_campaign(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<StartCampaign>,
) -> ApiResult<(StatusCode, Json<Campaign>)> {
    let ctx = caller.admin()?;
    let c = state.store.start_campaign(&ctx, &req).await?;
    Ok((StatusCode::CREATED, Json(c)))
}

/// The tenant's campaigns, oldest first, with where their agents stand.
#[utoipa::path(get, path = "/v1/recertifications", tag = "recertification", params(PageQuery),
    responses((status = 200, body = Page<Campaign>)))]
pub async fn list_campaigns(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<Campaign>>> {
    Ok(Json(state.store.list_campaigns(caller.reader()?, q).await?))
}

/// One campaign.
#[utoipa::path(get, path = "/v1/recertifications/{id}", tag = "recertification",
    params(("id" = String, Path, description = "Campaign id or name")),
    responses((status = 200, body = Campaign), (status = 404, body = steward_types::ErrorBody)))]
pub async fn get_campaign(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Campaign>> {
    Ok(Json(state.store.get_campaign(caller.reader()?, &id).await?))
}

/// A campaign's agents and their owners' answers.
#[utoipa::path(get, path = "/v1/recertifications/{id}/items", tag = "recertification",
    params(("id" = String, Path, description = "Campaign id or name"), CampaignItemQuery),
    responses((status = 200, body = Page<CampaignItem>), (status = 404, body = steward_types::ErrorBody)))]
pub async fn list_items(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<CampaignItemQuery>,
) -> ApiResult<Json<Page<CampaignItem>>> {
    Ok(Json(
        state
            .store
            .list_campaign_items(caller.reader()?, &id, q)
            .await?,
    ))
}

/// Attest one agent: `keep`, `suspend` or `decommission` (the last two
/// with a note). Its owner attests, with any token of theirs; an admin
/// attests only for an orphaned agent.
#[utoipa::path(post, path = "/v1/recertifications/{id}/items/{agent}", tag = "recertification", request_body = Attest,
    params(("id" = String, Path, description = "Campaign id or name"), ("agent" = String, Path, description = "Agent id or name")),
    responses((status = 200, body = CampaignItem), (status = 403, body = steward_types::ErrorBody),
        (status = 404, body = steward_types::ErrorBody), (status = 409, body = steward_types::ErrorBody)))]
pub async fn attest(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, agent)): Path<(String, String)>,
    ApiJson(req): ApiJson<Attest>,
) -> ApiResult<Json<CampaignItem>> {
    caller.reader()?;
    let Caller::Token { token, .. } = &caller else {
        return Err(ApiError::new(
            steward_types::ErrorCode::Forbidden,
            "agents do not attest for themselves; their owner does",
        ));
    };
    let admin = caller.admin().is_ok();
    let item = state
        .store
        .attest(
            &caller.context(),
            token.human_id.as_deref(),
            admin,
            &id,
            &agent,
            &req,
        )
        .await?;
    // Suspended or decommissioned: its gateway sessions end now.
    if req.decision != "keep" {
        let id = [item.agent_id.clone()];
        state.mcp.close_agent_sessions(&id).await;
    }
    Ok(Json(item))
}
